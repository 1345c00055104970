//! Quick performance figures. Not a CI test (timing is noisy); run with
//! `cargo test --release -p hoard-ring --test perf -- --ignored --nocapture`.
//! The full benchmark lives in hoard-bench (ring_bench.rs).

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use hoard_ring::{key_hash, Member, Provider, Ring, DEFAULT_VIRTUAL_NODES_PER_WORKER};

fn paths(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut p = String::new();
            write!(p, "/warehouse/t{}/dt=2024-{:02}/part-{i:07}.parquet", i % 37, i % 12).unwrap();
            p
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn perf_figures() {
    let paths = paths(1_000_000);
    for n in [10usize, 100, 1000] {
        let members: Vec<Member> = (0..n)
            .map(|i| Member::new(format!("{:08x}-0000-4000-8000-{:012x}", i * 7919, i)))
            .collect();
        let mut builds = Vec::new();
        let mut ring = None;
        for _ in 0..3 {
            let t = Instant::now();
            let r = Ring::build(members.clone(), DEFAULT_VIRTUAL_NODES_PER_WORKER, Provider::Default);
            builds.push(t.elapsed().as_secs_f64() * 1e3);
            ring = Some(r);
        }
        let ring = ring.unwrap();
        let mut primary = Vec::new();
        let mut hash_only = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            for p in &paths {
                black_box(ring.primary(black_box(p)));
            }
            primary.push(t.elapsed().as_nanos() as f64 / paths.len() as f64);
            let t = Instant::now();
            for p in &paths {
                black_box(key_hash(black_box(p), 0));
            }
            hash_only.push(t.elapsed().as_nanos() as f64 / paths.len() as f64);
        }
        let t = Instant::now();
        for p in &paths[..200_000] {
            black_box(ring.candidates(black_box(p), 3));
        }
        let cand3 = t.elapsed().as_nanos() as f64 / 200_000.0;
        let t = Instant::now();
        for p in &paths[..1000] {
            black_box(ring.candidates(black_box(p), n));
        }
        let cand_all = t.elapsed().as_nanos() as f64 / 1000.0;
        // Share by arc length (exact) vs by sampled paths.
        let mut counts = vec![0usize; n];
        for p in &paths {
            counts[ring.primary(p).unwrap()] += 1;
        }
        let mean = paths.len() as f64 / n as f64;
        let max = *counts.iter().max().unwrap() as f64 / mean;
        println!(
            "{n:>5} workers x 2000: build {:.1} ms, primary {:.1} ns (hash alone {:.1} ns), \
             candidates(3) {cand3:.1} ns, candidates(all) {:.1} us, {:.2} B/vnode, max/mean {max:.4}",
            median(builds),
            median(primary),
            median(hash_only),
            cand_all / 1e3,
            ring.memory_bytes() as f64 / ring.virtual_node_count() as f64,
        );
    }
}
