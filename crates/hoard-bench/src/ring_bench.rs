//! Ring benchmark: build time, lookup time, memory, balance and movement of the consistent-hash
//! ring (docs/ring.md) at 10, 100 and 1000 workers with 2000 virtual nodes each.
//!
//! Depends only on `hoard-ring` and std. Worker identities are UUID-shaped strings and paths are
//! file-like strings, both generated deterministically, so runs are comparable.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use hoard_ring::{Member, Provider, Ring};

/// Worker counts the benchmark measures.
pub const WORKER_COUNTS: [usize; 3] = [10, 100, 1000];
/// Virtual nodes per worker (the configuration default).
pub const VNODES_PER_WORKER: u32 = 2000;
/// Timed repetitions of each lookup loop; the median is reported.
const LOOKUP_RUNS: usize = 5;
/// Timed repetitions of the build; the median is reported.
const BUILD_RUNS: usize = 3;
/// At most this many paths time `candidates(path, 3)`.
const CANDIDATE_PATHS: usize = 200_000;

/// One configuration's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct RingBenchRow {
    pub workers: usize,
    /// Virtual nodes per worker.
    pub vnodes: u32,
    /// Virtual nodes on the ring in total.
    pub total_vnodes: usize,
    /// Median wall time of `Ring::build`, in milliseconds.
    pub build_ms: f64,
    /// Median (over runs) of the mean time of `Ring::primary` over all paths, in nanoseconds.
    pub lookup_ns: f64,
    /// Median (over runs) of the mean time of `Ring::candidates(path, 3)`, in nanoseconds.
    pub candidates3_ns: f64,
    /// Heap bytes of the ring's lookup structures.
    pub memory_bytes: usize,
    pub bytes_per_vnode: f64,
    /// Paths on the busiest worker divided by the mean per worker.
    pub max_over_mean_share: f64,
    /// Paths on the idlest worker divided by the mean per worker.
    pub min_over_mean_share: f64,
    /// The largest worker's share of the hash space times the number of workers: the balance an
    /// unbounded number of paths would see (no sampling noise).
    pub max_over_mean_hash_space: f64,
    /// Fraction of paths whose primary changes when one worker joins.
    pub moved_on_add_fraction: f64,
    /// 1 / (workers + 1).
    pub expected_add_fraction: f64,
    /// Paths that moved from one old worker to another when a worker joined (must be 0).
    pub moved_between_old_workers: usize,
    /// Fraction of paths whose primary changes when one worker leaves.
    pub moved_on_remove_fraction: f64,
    /// 1 / workers.
    pub expected_remove_fraction: f64,
    /// Paths whose primary changed on removal although their worker stayed (must be 0).
    pub moved_from_surviving_workers: usize,
    /// Number of paths measured.
    pub paths: usize,
}

/// Runs the benchmark over `paths` paths (1,000,000 is the reference figure).
pub fn run(paths: usize) -> Vec<RingBenchRow> {
    let paths = make_paths(paths.max(1));
    WORKER_COUNTS
        .iter()
        .map(|&workers| run_one(workers, VNODES_PER_WORKER, &paths))
        .collect()
}

fn run_one(workers: usize, vnodes: u32, paths: &[String]) -> RingBenchRow {
    let members: Vec<Member> = (0..workers as u64).map(member).collect();

    let mut build_times = Vec::with_capacity(BUILD_RUNS);
    let mut built = None;
    for _ in 0..BUILD_RUNS {
        let input = members.clone();
        let start = Instant::now();
        let ring = black_box(Ring::build(input, vnodes, Provider::Default));
        build_times.push(start.elapsed().as_secs_f64() * 1e3);
        built = Some(ring);
    }
    let ring = built.expect("at least one build");

    let mut lookup_times = Vec::with_capacity(LOOKUP_RUNS);
    for _ in 0..LOOKUP_RUNS {
        let start = Instant::now();
        for path in paths {
            black_box(ring.primary(black_box(path)));
        }
        lookup_times.push(start.elapsed().as_nanos() as f64 / paths.len() as f64);
    }
    let candidate_paths = &paths[..paths.len().min(CANDIDATE_PATHS)];
    let mut candidate_times = Vec::with_capacity(LOOKUP_RUNS);
    for _ in 0..LOOKUP_RUNS {
        let start = Instant::now();
        for path in candidate_paths {
            black_box(ring.candidates(black_box(path), 3));
        }
        candidate_times.push(start.elapsed().as_nanos() as f64 / candidate_paths.len() as f64);
    }

    let primaries: Vec<usize> = paths.iter().map(|p| ring.primary(p).expect("non-empty ring")).collect();
    let mut counts = vec![0usize; workers];
    for &p in &primaries {
        counts[p] += 1;
    }
    let mean = paths.len() as f64 / workers as f64;
    let max_share = *counts.iter().max().unwrap_or(&0) as f64 / mean;
    let min_share = *counts.iter().min().unwrap_or(&0) as f64 / mean;
    let max_space = ring.hash_space_shares().into_iter().fold(0.0, f64::max) * workers as f64;

    // One worker joins (it takes the next identity in the sequence, index `workers`).
    let mut grown = members.clone();
    grown.push(member(workers as u64));
    let grown = Ring::build(grown, vnodes, Provider::Default);
    let (mut moved_add, mut between_old) = (0usize, 0usize);
    for (path, &old) in paths.iter().zip(&primaries) {
        let new = grown.primary(path).expect("non-empty ring");
        if new != old {
            moved_add += 1;
            if new != workers {
                between_old += 1;
            }
        }
    }

    // One worker leaves (the one in the middle of the list).
    let removed = workers / 2;
    let mut shrunk = members;
    shrunk.remove(removed);
    let shrunk = Ring::build(shrunk, vnodes, Provider::Default);
    let (mut moved_remove, mut from_surviving) = (0usize, 0usize);
    for (path, &old) in paths.iter().zip(&primaries) {
        let new = shrunk.primary(path).expect("non-empty ring");
        let new = if new >= removed { new + 1 } else { new };
        if new != old {
            moved_remove += 1;
            if old != removed {
                from_surviving += 1;
            }
        }
    }

    RingBenchRow {
        workers,
        vnodes,
        total_vnodes: ring.virtual_node_count(),
        build_ms: median(build_times),
        lookup_ns: median(lookup_times),
        candidates3_ns: median(candidate_times),
        memory_bytes: ring.memory_bytes(),
        bytes_per_vnode: ring.memory_bytes() as f64 / ring.virtual_node_count() as f64,
        max_over_mean_share: max_share,
        min_over_mean_share: min_share,
        max_over_mean_hash_space: max_space,
        moved_on_add_fraction: moved_add as f64 / paths.len() as f64,
        expected_add_fraction: 1.0 / (workers + 1) as f64,
        moved_between_old_workers: between_old,
        moved_on_remove_fraction: moved_remove as f64 / paths.len() as f64,
        expected_remove_fraction: 1.0 / workers as f64,
        moved_from_surviving_workers: from_surviving,
        paths: paths.len(),
    }
}

/// The benchmark rows as a Markdown table.
pub fn to_markdown(rows: &[RingBenchRow]) -> String {
    let mut out = String::new();
    out.push_str(
        "| workers | vnodes/worker | total vnodes | build (ms) | primary (ns) | candidates(3) (ns) | memory (MiB) \
         | bytes/vnode | max/mean share | min/mean share | max/mean hash space | moved on add (expected) \
         | moved between old | moved on remove (expected) | moved from survivors | paths |\n",
    );
    out.push('|');
    for _ in 0..16 {
        out.push_str(" ---: |");
    }
    out.push('\n');
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.4} | {:.4} | {:.4} | {:.4} ({:.4}) | {} \
             | {:.4} ({:.4}) | {} | {} |",
            r.workers,
            r.vnodes,
            r.total_vnodes,
            r.build_ms,
            r.lookup_ns,
            r.candidates3_ns,
            r.memory_bytes as f64 / (1024.0 * 1024.0),
            r.bytes_per_vnode,
            r.max_over_mean_share,
            r.min_over_mean_share,
            r.max_over_mean_hash_space,
            r.moved_on_add_fraction,
            r.expected_add_fraction,
            r.moved_between_old_workers,
            r.moved_on_remove_fraction,
            r.expected_remove_fraction,
            r.moved_from_surviving_workers,
            r.paths,
        );
    }
    out
}

/// A deterministic, UUID-shaped worker identity for worker `i`.
fn member(i: u64) -> Member {
    let hi = splitmix64(i.wrapping_mul(2).wrapping_add(1));
    let lo = splitmix64(i.wrapping_mul(2).wrapping_add(2));
    let identity = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xfff,
        0x8000 | ((lo >> 48) & 0x3fff),
        lo & 0xffff_ffff_ffff,
    );
    Member {
        identity,
        capacity_bytes: 0,
    }
}

fn make_paths(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut path = String::with_capacity(64);
            let _ = write!(
                path,
                "/warehouse/t{}/dt=2024-{:02}/part-{i:07}.parquet",
                i % 37,
                i % 12 + 1
            );
            path
        })
        .collect()
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}
