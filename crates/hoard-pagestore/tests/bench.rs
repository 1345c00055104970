//! Micro benchmarks, ignored by default. Run with
//! `cargo test -p hoard-pagestore --release --test bench -- --ignored --nocapture --test-threads 1`.

mod common;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hoard_pagestore::bench_internals::*;
use hoard_pagestore::PageStore;

const MIB: usize = 1 << 20;

/// Runs `f` for about `budget`, returns (iterations, elapsed).
fn run(budget: Duration, mut f: impl FnMut()) -> (u64, Duration) {
    for _ in 0..10 {
        f();
    }
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < budget {
        for _ in 0..16 {
            f();
        }
        n += 16;
    }
    (n, start.elapsed())
}

fn report(what: &str, bytes_per_op: usize, (n, t): (u64, Duration)) {
    let us = t.as_secs_f64() * 1e6 / n as f64;
    let gbs = bytes_per_op as f64 * n as f64 / t.as_secs_f64() / 1e9;
    println!("{what:<58} {us:>9.2} us/op {gbs:>7.2} GB/s");
}

#[test]
#[ignore]
fn bench_read_strategies() {
    let budget = Duration::from_millis(1500);
    let tmp = tempfile::tempdir().unwrap();
    let lens: Vec<usize> = match std::env::var("BENCH_LENS") {
        Ok(v) => v.split(',').map(|x| x.parse::<usize>().unwrap() * 1024).collect(),
        Err(_) => vec![MIB, 256 * 1024, 64 * 1024, 16 * 1024, 4096],
    };
    for len in lens {
        // 256 MiB of files, read in turn: the bytes come from DRAM (page cache), not from the
        // CPU caches, as on a server.
        let count = (256 * MIB / len).min(4096);
        let paths: Vec<_> = (0..count)
            .map(|i| {
                let path = tmp.path().join(format!("page-{len}-{i}"));
                std::fs::write(&path, page_data(&key(fid(1), i as u64), len)).unwrap();
                path
            })
            .collect();
        let buffers: Vec<Vec<u8>> = (0..(256 * MIB / len).min(4096))
            .map(|i| page_data(&key(fid(2), i as u64), len))
            .collect();
        let mut sink = vec![0u8; len];
        println!("-- page of {} KiB, {count} files (warm page cache)", len / 1024);
        let mut i = 0;
        let mut next = || {
            i = (i + 1) % count;
            i
        };
        report(
            "xxh3_64 over an in-memory buffer",
            len,
            run(budget, || {
                black_box(checksum(black_box(&buffers[next()])));
            }),
        );
        report(
            "pread into Vec + xxh3",
            len,
            run(budget, || {
                black_box(read_copied_verified(&paths[next()]).unwrap());
            }),
        );
        // The same, followed by one copy out of the bytes (standing in for the kernel's copy
        // into the socket), where the copy's source may still be in the CPU caches.
        report(
            "pread into Vec + xxh3 + copy out",
            len,
            run(budget, || {
                let b = read_copied_verified(&paths[next()]).unwrap();
                sink.copy_from_slice(&b);
                black_box(&sink);
            }),
        );
    }
}

fn fill(dir: &Path, pages: u64, page_size: usize) -> PageStore {
    let store = open1(dir, pages * page_size as u64, page_size as u64);
    for i in 0..pages {
        let k = key(fid(1), i);
        store.put(&k, &page_data(&k, page_size)).unwrap();
    }
    store
}

/// Runs `op` on `threads` threads for `budget`, returns total ops and the longest elapsed.
fn run_threads(threads: usize, budget: Duration, op: impl Fn(&mut Rng) + Send + Sync + 'static) -> (u64, Duration) {
    let op = Arc::new(op);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let op = op.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(t as u64 * 1000 + 7);
                run(budget, || op(&mut rng))
            })
        })
        .collect();
    let (mut n, mut t) = (0, Duration::ZERO);
    for h in handles {
        let (hn, ht) = h.join().unwrap();
        n += hn;
        t = t.max(ht);
    }
    (n, t)
}

#[test]
#[ignore]
fn bench_get() {
    let budget = Duration::from_millis(2000);
    let tmp = tempfile::tempdir().unwrap();
    let pages = 256u64; // 256 MiB: in the page cache, not in the CPU caches
    let store = Arc::new(fill(tmp.path(), pages, MIB));
    const K64: u64 = 64 * 1024;
    {
        let mode = "pread";
        for threads in [1usize, 2] {
            let s = store.clone();
            report(
                &format!("[{mode}] get: 4 MiB sequential (4 x 1 MiB), {threads} thr"),
                4 * MIB,
                run_threads(threads, budget, move |rng| {
                    let first = rng.below(pages - 4);
                    for p in first..first + 4 {
                        black_box(s.get(&key(fid(1), p)).unwrap().unwrap());
                    }
                }),
            );
            let s = store.clone();
            report(
                &format!("[{mode}] get + slice: 64 KiB random, {threads} thr"),
                64 * 1024,
                run_threads(threads, budget, move |rng| {
                    let off = rng.below(16) as usize * 64 * 1024;
                    let b = s.get(&key(fid(1), rng.below(pages))).unwrap().unwrap();
                    black_box(b.slice(off..off + 64 * 1024));
                }),
            );
            let s = store.clone();
            report(
                &format!("[{mode}] get_range: 64 KiB random (aligned), {threads} thr"),
                64 * 1024,
                run_threads(threads, budget, move |rng| {
                    let off = rng.below(16) * K64;
                    let k = key(fid(1), rng.below(pages));
                    black_box(s.get_range(&k, off..off + K64).unwrap().unwrap());
                }),
            );
            let s = store.clone();
            report(
                &format!("[{mode}] get_range_nowait: 64 KiB random (aligned), {threads} thr"),
                64 * 1024,
                run_threads(threads, budget, move |rng| {
                    let off = rng.below(16) * K64;
                    let k = key(fid(1), rng.below(pages));
                    black_box(s.get_range_nowait(&k, off..off + K64).unwrap());
                }),
            );
            let s = store.clone();
            report(
                &format!("[{mode}] get_range: 64 KiB random (unaligned), {threads} thr"),
                64 * 1024,
                run_threads(threads, budget, move |rng| {
                    let off = rng.below(MIB as u64 - K64);
                    let k = key(fid(1), rng.below(pages));
                    black_box(s.get_range(&k, off..off + K64).unwrap().unwrap());
                }),
            );
        }
    }
    // Baselines without a store: one copy out of the page cache, no checksum (what a server
    // using read(2) pays; sendfile avoids even this copy into user space).
    let paths: Vec<_> = (0..64)
        .map(|i| {
            let path = tmp.path().join(format!("plain-{i}"));
            std::fs::write(&path, page_data(&key(fid(2), i), 4 * MIB)).unwrap();
            path
        })
        .collect();
    let paths = Arc::new(paths);
    for threads in [1usize, 2] {
        let p = paths.clone();
        report(
            &format!("baseline: open + pread 4 MiB, {threads} thr"),
            4 * MIB,
            run_threads(threads, budget, move |rng| {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; 4 * MIB];
                let f = std::fs::File::open(&p[rng.below(64) as usize]).unwrap();
                f.read_exact_at(&mut buf, 0).unwrap();
                black_box(&buf);
            }),
        );
        let p = paths.clone();
        report(
            &format!("baseline: open + pread 64 KiB at random, {threads} thr"),
            64 * 1024,
            run_threads(threads, budget, move |rng| {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; 64 * 1024];
                let f = std::fs::File::open(&p[rng.below(64) as usize]).unwrap();
                f.read_exact_at(&mut buf, rng.below(4 * MIB as u64 - K64)).unwrap();
                black_box(&buf);
            }),
        );
    }

    // Small pages: the cost of the index and the syscalls.
    let tmp2 = tempfile::tempdir().unwrap();
    let small = Arc::new(fill(tmp2.path(), 1024, 4096));
    let s = small.clone();
    report(
        "get: random 4 KiB pages, 1 thr",
        4096,
        run_threads(1, budget, move |rng| {
            black_box(s.get(&key(fid(1), rng.below(1024))).unwrap().unwrap());
        }),
    );
    for threads in [1, 2] {
        let s = small.clone();
        report(
            &format!("contains (index lookup only), {threads} thr"),
            0,
            run_threads(threads, budget, move |rng| {
                black_box(s.contains(&key(fid(1), rng.below(1024))));
            }),
        );
    }
}

#[test]
#[ignore]
fn bench_put() {
    let budget = Duration::from_millis(2000);
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 128 * MIB as u64, MIB as u64);
    let data = page_data(&key(fid(1), 0), MIB);
    let mut i = 0;
    report(
        "put 1 MiB pages (steady state: each evicts one)",
        MIB,
        run(budget, || {
            store.put(&key(fid(1), i), &data).unwrap();
            i += 1;
        }),
    );
    println!("{:?}", store.stats());
}
