//! Page files damaged from outside the store (truncated, overwritten, deleted, replaced): a
//! read loses at most that page, never returns wrong bytes, and never crashes the process.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hoard_pagestore::{CachedRead, PageKey};

const PS: u64 = 64 * 1024;

/// The ways a page file can be damaged from outside.
#[derive(Debug, Clone, Copy)]
enum Damage {
    TruncateToZero,
    TruncateToHalf,
    /// Cuts the chunk table short.
    TruncateByOne,
    GarbageSameLength,
    Delete,
    ReplaceWithDirectory,
    ReplaceWithSymlinkToAnotherPage,
    ReplaceWithFifo,
}

const ALL: [Damage; 8] = [
    Damage::TruncateToZero,
    Damage::TruncateToHalf,
    Damage::TruncateByOne,
    Damage::GarbageSameLength,
    Damage::Delete,
    Damage::ReplaceWithDirectory,
    Damage::ReplaceWithSymlinkToAnotherPage,
    Damage::ReplaceWithFifo,
];

fn damage(path: &Path, how: Damage, other: &Path) -> std::io::Result<()> {
    let len = fs::metadata(path)?.len();
    let truncate = |to: u64| fs::File::options().write(true).open(path)?.set_len(to);
    match how {
        Damage::TruncateToZero => truncate(0),
        Damage::TruncateToHalf => truncate(len / 2),
        Damage::TruncateByOne => truncate(len.saturating_sub(1)),
        Damage::GarbageSameLength => fs::write(path, vec![0xa5u8; len as usize]),
        Damage::Delete => fs::remove_file(path),
        Damage::ReplaceWithDirectory => {
            fs::remove_file(path)?;
            fs::create_dir(path)?;
            fs::write(path.join("inside"), b"x")
        }
        Damage::ReplaceWithSymlinkToAnotherPage => {
            fs::remove_file(path)?;
            symlink(other, path)
        }
        Damage::ReplaceWithFifo => {
            fs::remove_file(path)?;
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
            // SAFETY: mkfifo with a valid C string.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            assert!(fs::symlink_metadata(path)?.file_type().is_fifo());
            Ok(())
        }
    }
}

/// Every kind of damage, read every way: the page is dropped (counted), its bytes are never
/// served, and a put of the page afterwards stores and serves it again.
#[test]
fn damaged_page_files_are_dropped_and_never_served() {
    for how in ALL {
        for read in ["get", "range", "range to the end", "nowait"] {
            let tmp = tempfile::tempdir().unwrap();
            let store = open1(tmp.path(), 16 * PS, PS);
            let k = key(fid(1), 0);
            let other = key(fid(1), 1);
            let data = page_data(&k, PS as usize);
            store.put(&k, &data).unwrap();
            store.put(&other, &page_data(&other, PS as usize)).unwrap();
            // A first read, as a reader would have made before the damage.
            assert_eq!(&store.get(&k).unwrap().unwrap()[..], &data[..]);
            let path = find_page_file(tmp.path(), PS, &k).unwrap();
            let other_path = find_page_file(tmp.path(), PS, &other).unwrap();
            damage(&path, how, &other_path).unwrap();

            let got = match read {
                "get" => store.get(&k).unwrap(),
                "range" => store.get_range(&k, 100..5000).unwrap(),
                "range to the end" => store.get_range(&k, PS - 5000..PS).unwrap(),
                _ => match store.get_range_nowait(&k, 100..5000).unwrap() {
                    CachedRead::Hit(bytes) => Some(bytes),
                    CachedRead::Absent => None,
                    CachedRead::NotInMemory => store.get_range(&k, 100..5000).unwrap(),
                },
            };
            let what = format!("{how:?} read by {read}");
            assert_eq!(got, None, "{what}: a damaged page is never served");
            assert!(!store.contains(&k), "{what}: dropped");
            let s = store.stats();
            assert_eq!(s.checksum_failures + s.missing_files, 1, "{what}: counted once: {s:?}");
            assert!(
                fs::symlink_metadata(&path).is_err(),
                "{what}: whatever was in its place is deleted"
            );
            // Refetched: stored and served again.
            store.put(&k, &data).unwrap();
            assert_eq!(&store.get(&k).unwrap().unwrap()[..], &data[..], "{what}");
            assert_eq!(
                &store.get(&other).unwrap().unwrap()[..],
                &page_data(&other, PS as usize)[..],
                "{what}: the other page is untouched"
            );
        }
    }
}

/// Bytes a read returned are the reader's own: truncating or rewriting the page file
/// afterwards changes nothing in them (with a mapping, touching them would raise SIGBUS).
#[test]
fn bytes_already_returned_survive_their_file_being_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 16 * PS, PS);
    let k = key(fid(2), 0);
    let data = page_data(&k, PS as usize);
    store.put(&k, &data).unwrap();
    let whole = store.get(&k).unwrap().unwrap();
    let part = store.get_range(&k, 1000..30_000).unwrap().unwrap();
    let path = find_page_file(tmp.path(), PS, &k).unwrap();
    fs::File::options().write(true).open(&path).unwrap().set_len(0).unwrap();
    assert_eq!(&whole[..], &data[..]);
    assert_eq!(&part[..], &data[1000..30_000]);
    assert_eq!(store.get(&k).unwrap(), None);
    assert_eq!(&whole[..], &data[..], "still intact after the page was dropped");
}

/// Directories of the store deleted or replaced from outside: reads drop what is gone, and
/// new pages are stored again (the store makes its directories again).
#[test]
fn the_store_makes_its_directories_again() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 64 * PS, PS);
    let pages = tmp.path().join(format!("pages-{PS}"));
    let put_all = |file: u32| {
        for i in 0..4 {
            let k = key(fid(file), i);
            store.put(&k, &page_data(&k, PS as usize)).unwrap();
        }
    };
    let check_all = |file: u32| {
        for i in 0..4 {
            let k = key(fid(file), i);
            assert_eq!(
                &store.get(&k).unwrap().unwrap()[..],
                &page_data(&k, PS as usize)[..],
                "file {file} page {i}"
            );
        }
    };
    let file_dir = |file: u32| {
        find_page_file(tmp.path(), PS, &key(fid(file), 0))
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf()
    };

    // The temp dir deleted, then replaced by a file.
    fs::remove_dir_all(tmp.path().join("tmp")).unwrap();
    put_all(1);
    check_all(1);
    fs::remove_dir_all(tmp.path().join("tmp")).unwrap();
    fs::write(tmp.path().join("tmp"), b"not a directory").unwrap();
    put_all(2);
    check_all(2);

    // A file's directory replaced by a file: its pages are dropped, then stored again.
    let dir = file_dir(2);
    fs::remove_dir_all(&dir).unwrap();
    fs::write(&dir, b"not a directory").unwrap();
    for i in 0..4 {
        assert_eq!(store.get(&key(fid(2), i)).unwrap(), None);
    }
    put_all(2);
    check_all(2);

    // A shard directory replaced by a symbolic link to elsewhere.
    let shard = file_dir(1).parent().unwrap().to_path_buf();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::remove_dir_all(&shard).unwrap();
    symlink(elsewhere.path(), &shard).unwrap();
    for i in 0..4 {
        assert_eq!(store.get(&key(fid(1), i)).unwrap(), None);
    }
    put_all(1);
    check_all(1);
    assert!(fs::symlink_metadata(&shard).unwrap().is_dir(), "a real directory again");

    // Every page deleted at once.
    fs::remove_dir_all(&pages).unwrap();
    for file in [1, 2] {
        for i in 0..4 {
            assert_eq!(store.get(&key(fid(file), i)).unwrap(), None);
        }
    }
    assert_eq!(store.stats().pages, 0);
    put_all(3);
    check_all(3);
    let s = store.stats();
    assert_eq!(s.pages, 4);
    assert_eq!(s.checksum_failures, 0, "{s:?}");
}

/// Readers on several threads while another thread keeps damaging the files under them:
/// every read answers the right bytes or nothing.
#[test]
fn concurrent_reads_while_files_are_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = open1(tmp.path(), 64 * PS, PS);
    // A tier smaller than the pages read: reads are served from the tier and from the files.
    store.set_memory_capacity(4 * PS);
    let store = Arc::new(store);
    let keys: Vec<PageKey> = (0..16).map(|i| key(fid(3), i)).collect();
    for k in &keys {
        store.put(k, &page_data(k, PS as usize)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let (store, stop, reads, keys) = (store.clone(), stop.clone(), reads.clone(), keys.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(t + 1);
                let mut held = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let k = keys[rng.below(keys.len() as u64) as usize];
                    let data = page_data(&k, PS as usize);
                    let a = rng.below(PS);
                    let b = a + rng.below(PS - a) + 1;
                    let got = match rng.below(3) {
                        0 => store.get(&k).unwrap().map(|bytes| (0, bytes)),
                        1 => store.get_range(&k, a..b).unwrap().map(|bytes| (a, bytes)),
                        _ => match store.get_range_nowait(&k, a..b).unwrap() {
                            CachedRead::Hit(bytes) => Some((a, bytes)),
                            _ => None,
                        },
                    };
                    match got {
                        Some((at, bytes)) => {
                            let at = at as usize;
                            assert_eq!(&bytes[..], &data[at..at + bytes.len()], "wrong bytes for {k:?}");
                            // Keep some answers a while, as a socket would.
                            held.push((at, bytes, data));
                            if held.len() > 8 {
                                held.remove(0);
                            }
                        }
                        // Absent: the reader refetches.
                        None => store.put(&k, &data).unwrap(),
                    }
                    for (at, bytes, data) in &held {
                        assert_eq!(&bytes[..], &data[*at..*at + bytes.len()], "held bytes changed");
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut damaged = 0;
    let mut rng = Rng(99);
    while damaged < 200 {
        assert!(Instant::now() < deadline, "readers stalled");
        let files = page_files(tmp.path());
        let regular: Vec<_> = files
            .iter()
            .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
            .collect();
        if regular.len() < 2 {
            std::thread::yield_now();
            continue;
        }
        let target = regular[rng.below(regular.len() as u64) as usize];
        let other = regular.iter().find(|p| **p != target).unwrap();
        let how = ALL[rng.below(ALL.len() as u64) as usize];
        // Racing with readers and writers: the file may be gone already.
        let _ = damage(target, how, other);
        damaged += 1;
        // Let the readers read between two damages.
        let seen = reads.load(Ordering::Relaxed);
        while reads.load(Ordering::Relaxed) < seen + 20 {
            assert!(Instant::now() < deadline, "readers stalled");
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader saw wrong bytes");
    }
    let s = store.stats();
    assert!(s.checksum_failures + s.missing_files > 0, "{s:?}");
    // Afterwards every page is stored and served again. A page damaged after its last read is
    // still indexed (a put of an indexed page is a no-op): the read finds the damage and drops
    // it, so a read comes first, and it is either the right bytes or nothing.
    for k in &keys {
        let expected = page_data(k, PS as usize);
        if let Some(bytes) = store.get(k).unwrap() {
            assert_eq!(&bytes[..], &expected[..]);
        }
        store.put(k, &expected).unwrap();
        assert_eq!(&store.get(k).unwrap().unwrap()[..], &page_data(k, PS as usize)[..]);
    }
}
