//! Many threads reading, writing and deleting at once.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use common::*;
use hoard_pagestore::PageStore;

const PS: u64 = 4096;

/// Length of a key's page: varies by key, the same for every put of the key.
fn len_of(k: &hoard_pagestore::PageKey) -> usize {
    if matches!(k.index % 3, 0) {
        PS as usize
    } else {
        (splitmix(k.index ^ k.file.0 as u64) % PS) as usize + 1
    }
}

#[test]
fn concurrent_readers_and_writers_stay_within_capacity_and_never_see_wrong_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = vec![tmp.path().join("a"), tmp.path().join("b")];
    let caps = [6 * PS, 10 * PS];
    let store = Arc::new(PageStore::open(config(&dirs, &caps, PS)).unwrap());
    let threads = 8;
    let ops = 3000;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let done = Arc::new(AtomicBool::new(false));

    // A monitor checking the capacity invariant while the others work.
    let monitor = {
        let (store, done, barrier) = (store.clone(), done.clone(), barrier.clone());
        std::thread::spawn(move || {
            barrier.wait();
            let mut checks = 0u64;
            while !done.load(Ordering::Relaxed) {
                let s = store.stats();
                assert!(s.used_bytes <= s.capacity_bytes, "{s:?}");
                for (d, cap) in s.dirs.iter().zip(caps) {
                    assert!(d.used_bytes <= cap, "{s:?}");
                }
                checks += 1;
            }
            checks
        })
    };

    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(t as u64 + 1);
                let (mut hits, mut misses) = (0u64, 0u64);
                barrier.wait();
                for _ in 0..ops {
                    // 4 files x 16 pages: a working set about 4x the capacity.
                    let k = key(fid(rng.below(4) as u32), rng.below(16));
                    match rng.below(100) {
                        0..=9 => {
                            let a = rng.below(PS + 10);
                            let b = a + rng.below(PS);
                            if let Some(got) = store.get_range(&k, a..b).unwrap() {
                                let data = page_data(&k, len_of(&k));
                                let end = (b as usize).min(data.len());
                                let start = (a as usize).min(end);
                                assert_eq!(&got[..], &data[start..end], "{k:?} {a}..{b}");
                            }
                        }
                        10..=49 => match store.get(&k).unwrap() {
                            Some(b) => {
                                assert_eq!(&b[..], &page_data(&k, len_of(&k))[..], "{k:?}");
                                hits += 1;
                            }
                            None => misses += 1,
                        },
                        50..=94 => store.put(&k, &page_data(&k, len_of(&k))).unwrap(),
                        95..=97 => {
                            store.contains(&k);
                        }
                        _ => {
                            store.delete_file(k.file).unwrap();
                        }
                    }
                }
                (hits, misses)
            })
        })
        .collect();
    let mut hits = 0;
    for w in workers {
        let (h, _) = w.join().unwrap();
        hits += h;
    }
    done.store(true, Ordering::Relaxed);
    let checks = monitor.join().unwrap();
    assert!(checks > 0);
    assert!(hits > 0, "no get ever hit");

    let s = store.stats();
    assert!(s.used_bytes <= s.capacity_bytes);
    assert!(s.evictions > 0);
    // Eviction and deletion racing with reads are not failures.
    assert_eq!(s.checksum_failures, 0, "{s:?}");
    assert_eq!(s.missing_files, 0, "{s:?}");
    // The index and the disk agree.
    assert_eq!(disk_bytes(&dirs), s.used_bytes);
    assert_eq!(dirs.iter().map(|d| page_files(d).len()).sum::<usize>() as u64, s.pages);
    for d in &dirs {
        assert_eq!(std::fs::read_dir(d.join("tmp")).unwrap().count(), 0);
    }
    // Every page in the index is readable and right, and survives a restart.
    let mut present = Vec::new();
    for f in 0..4 {
        for i in store.cached_pages(fid(f)) {
            let k = key(fid(f), i);
            assert_eq!(&store.get(&k).unwrap().unwrap()[..], &page_data(&k, len_of(&k))[..]);
            present.push(k);
        }
    }
    assert_eq!(present.len() as u64, s.pages);
    drop(store);
    let store = PageStore::open(config(&dirs, &caps, PS)).unwrap();
    assert_eq!(store.stats().pages, present.len() as u64);
    assert_eq!(store.stats().recovery_discarded, 0);
    for k in &present {
        assert_eq!(&store.get(k).unwrap().unwrap()[..], &page_data(k, len_of(k))[..]);
    }
}

#[test]
fn concurrent_puts_of_the_same_key_store_one_page() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open1(tmp.path(), 64 * PS, PS));
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    let k = key(fid(1), i);
                    barrier.wait();
                    store.put(&k, &page_data(&k, PS as usize)).unwrap();
                    if let Some(b) = store.get(&k).unwrap() {
                        assert_eq!(&b[..], &page_data(&k, PS as usize)[..]);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = store.stats();
    assert_eq!(s.pages, 50);
    assert_eq!(s.puts, 50);
    assert_eq!(s.used_bytes, 50 * PS);
    assert_eq!(page_files(tmp.path()).len(), 50);
    assert_eq!(s.checksum_failures + s.missing_files, 0);
}

#[test]
fn puts_wait_for_space_held_by_pending_pages() {
    // Capacity of one page, many writers of distinct keys: each put has to wait for the
    // pending one before it can evict it.
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open1(tmp.path(), PS, PS));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    let k = key(fid(t), i);
                    store.put(&k, &page_data(&k, PS as usize)).unwrap();
                    let s = store.stats();
                    assert!(s.used_bytes <= PS);
                    if let Some(b) = store.get(&k).unwrap() {
                        assert_eq!(&b[..], &page_data(&k, PS as usize)[..]);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = store.stats();
    assert_eq!(s.pages, 1);
    assert_eq!(s.used_bytes, PS);
    assert_eq!(s.evictions, 799);
    assert_eq!(page_files(tmp.path()).len(), 1);
    assert_eq!(s.checksum_failures + s.missing_files, 0);
}
