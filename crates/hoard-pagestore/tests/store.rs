//! Functional tests of the page store on real files in temp dirs.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;
use hoard_pagestore::{FileId, PageKey, PageStore, PageStoreError};

const PS: u64 = 4096;

#[test]
fn put_get_roundtrip_with_short_last_page() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 100 * PS, PS);
    assert_eq!(store.page_size(), PS);
    let f = fid(1);
    let sizes = [PS as usize, PS as usize, 1234];
    for (i, &len) in sizes.iter().enumerate() {
        let k = key(f, i as u64);
        assert_eq!(store.get(&k).unwrap(), None);
        assert!(!store.contains(&k));
        store.put(&k, &page_data(&k, len)).unwrap();
        assert!(store.contains(&k));
    }
    for (i, &len) in sizes.iter().enumerate() {
        let k = key(f, i as u64);
        let got = store.get(&k).unwrap().unwrap();
        assert_eq!(got.len(), len);
        assert_eq!(&got[..], &page_data(&k, len)[..]);
    }
    assert_eq!(store.cached_bytes(f), 2 * PS + 1234);
    assert_eq!(store.cached_pages(f), vec![0, 1, 2]);
    assert_eq!(store.cached_bytes(fid(2)), 0);
    let s = store.stats();
    assert_eq!(s.pages, 3);
    assert_eq!(s.used_bytes, 2 * PS + 1234);
    assert_eq!(s.capacity_bytes, 100 * PS);
    assert_eq!(s.hits, 3);
    assert_eq!(s.misses, 3);
    assert_eq!(s.puts, 3);
    assert_eq!(s.checksum_failures, 0);
    // Exactly one file per page, holding exactly the page's bytes.
    let files = page_files(tmp.path());
    assert_eq!(files.len(), 3);
    let k2 = key(f, 2);
    let p = find_page_file(tmp.path(), PS, &k2).unwrap();
    let on_disk = fs::read(p).unwrap();
    assert_eq!(on_disk.len(), 1234 + 8);
    assert_eq!(&on_disk[..1234], &page_data(&k2, 1234)[..]);
}

#[test]
fn direct_writes_store_exact_bytes_that_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let ps = 256 * 1024;
    let f = fid(1);
    // Whole pages, a short last page with a block-aligned head and a tail, one shorter than a
    // block; and bytes at an address that is not block-aligned (written through the bounce
    // buffer) as well as at one that is.
    let lens = [ps as usize, ps as usize, 3 * 4096 + 100, 100];
    let pages: Vec<(PageKey, Vec<u8>)> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let k = key(f, i as u64);
            (k, page_data(&k, len))
        })
        .collect();
    {
        let store = open1(tmp.path(), 10 * ps, ps);
        store.set_direct_writes(true);
        for (i, (k, data)) in pages.iter().enumerate() {
            if i == 1 {
                let mut shifted = vec![0u8; data.len() + 1];
                shifted[1..].copy_from_slice(data);
                store.put(k, &shifted[1..]).unwrap();
            } else {
                store.put(k, data).unwrap();
            }
        }
        for (k, data) in &pages {
            assert_eq!(&store.get(k).unwrap().unwrap()[..], &data[..]);
            let p = find_page_file(tmp.path(), ps, k).unwrap();
            let on_disk = fs::read(p).unwrap();
            assert_eq!(on_disk.len(), data.len() + 8 * data.len().div_ceil(4096));
            assert_eq!(&on_disk[..data.len()], &data[..]);
        }
        assert_eq!(store.stats().checksum_failures, 0);
        assert!(store.direct_writes(), "the temp dir's file system took O_DIRECT");
    }
    let store = open1(tmp.path(), 10 * ps, ps);
    for (k, data) in &pages {
        assert_eq!(&store.get(k).unwrap().unwrap()[..], &data[..]);
    }
    assert_eq!(store.stats().checksum_failures, 0);
    assert_eq!(store.stats().pages, pages.len() as u64);
}

#[test]
fn large_pages_stay_readable_after_their_file_is_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let ps = 1 << 20;
    let store = open1(tmp.path(), 8 * ps, ps);
    let k = key(fid(1), 0);
    let data = page_data(&k, ps as usize);
    store.put(&k, &data).unwrap();
    let got = store.get(&k).unwrap().unwrap();
    assert_eq!(&got[..], &data[..]);
    // The page stays readable through the returned bytes after the file is deleted.
    store.delete_file(k.file).unwrap();
    assert_eq!(&got[..], &data[..]);
    assert_eq!(&got.slice(100..200)[..], &data[100..200]);
}

#[test]
fn empty_page_and_too_large_page() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 10 * PS, PS);
    let k = key(fid(1), 0);
    store.put(&k, &[]).unwrap();
    assert_eq!(store.get(&k).unwrap().unwrap().len(), 0);
    let big = vec![0u8; PS as usize + 1];
    assert!(matches!(
        store.put(&key(fid(1), 1), &big),
        Err(PageStoreError::PageTooLarge { len, page_size: PS }) if len == PS as usize + 1
    ));
    assert!(!store.contains(&key(fid(1), 1)));
    drop(store);
    let store = open1(tmp.path(), 10 * PS, PS);
    assert_eq!(store.get(&k).unwrap().unwrap().len(), 0);
}

#[test]
fn put_of_present_key_is_a_noop() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 10 * PS, PS);
    let k = key(fid(1), 0);
    store.put(&k, b"first").unwrap();
    store.put(&k, b"second!").unwrap();
    assert_eq!(&store.get(&k).unwrap().unwrap()[..], b"first");
    assert_eq!(store.stats().used_bytes, 5);
    assert_eq!(page_files(tmp.path()).len(), 1);
}

#[test]
fn invalid_configs_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_path_buf();
    let e = tmp.path().join("e");
    for c in [
        config(&[], &[], PS),
        config(std::slice::from_ref(&d), &[PS, PS], PS),
        config(std::slice::from_ref(&d), &[PS], 0),
        config(std::slice::from_ref(&d), &[PS - 1], PS),
        config(&[d.clone(), e], &[PS, PS - 1], PS),
    ] {
        assert!(
            matches!(PageStore::open(c.clone()), Err(PageStoreError::Config(_))),
            "{c:?}"
        );
    }
}

#[test]
fn a_dir_cannot_be_opened_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 10 * PS, PS);
    let second = PageStore::open(config(&[tmp.path().to_path_buf()], &[10 * PS], PS));
    assert!(matches!(second, Err(PageStoreError::Config(_))));
    drop(store);
    open1(tmp.path(), 10 * PS, PS);
}

#[test]
fn restart_recovers_pages_in_all_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = vec![tmp.path().join("a"), tmp.path().join("b")];
    let caps = [50 * PS, 50 * PS];
    let keys: Vec<_> = (0..3).flat_map(|f| (0..10).map(move |i| key(fid(f), i))).collect();
    {
        let store = PageStore::open(config(&dirs, &caps, PS)).unwrap();
        for k in &keys {
            store.put(k, &page_data(k, 100 + k.index as usize)).unwrap();
        }
    }
    let store = PageStore::open(config(&dirs, &caps, PS)).unwrap();
    let s = store.stats();
    assert_eq!(s.pages, 30);
    assert_eq!(s.recovered_pages, 30);
    assert_eq!(s.recovery_discarded, 0);
    assert_eq!(s.dirs.len(), 2);
    assert!(s.dirs.iter().all(|d| d.pages > 0), "{s:?}");
    assert_eq!(s.dirs.iter().map(|d| d.pages).sum::<u64>(), 30);
    for k in &keys {
        assert_eq!(
            &store.get(k).unwrap().unwrap()[..],
            &page_data(k, 100 + k.index as usize)[..]
        );
    }
    assert_eq!(s.used_bytes, keys.iter().map(|k| 100 + k.index).sum::<u64>());
    assert_eq!(store.cached_bytes(fid(0)), (100..110).sum::<u64>());
}

#[test]
fn crash_leftovers_are_cleaned_on_open_and_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let good = key(fid(1), 0);
    let truncated = key(fid(1), 1);
    let renamed_garbage = key(fid(1), 2);
    {
        let store = open1(&root, 10 * PS, PS);
        store.put(&good, &page_data(&good, 1000)).unwrap();
        store.put(&truncated, &page_data(&truncated, 1000)).unwrap();
    }
    // A page file cut short (e.g. written without fsync before a power loss).
    let p = find_page_file(&root, PS, &truncated).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(500)
        .unwrap();
    // A crash between writing a temp file and renaming it.
    fs::write(root.join("tmp/whatever.tmp"), b"partial").unwrap();
    // Garbage at every level of the pages tree.
    let pages = root.join(format!("pages-{PS}"));
    let file_dir = p.parent().unwrap().to_path_buf();
    fs::write(file_dir.join("not-a-page"), b"x").unwrap();
    fs::write(file_dir.join("2_5_zzzz_00000000"), b"hello").unwrap();
    fs::write(file_dir.join("07_5_0000000000000000_00000000"), b"hello").unwrap();
    fs::create_dir(file_dir.join("3_5_0000000000000000_00000000")).unwrap();
    fs::write(pages.join("zz"), b"x").unwrap();
    fs::create_dir_all(pages.join("ab/not-a-file-id")).unwrap();
    fs::create_dir_all(pages.join("ab").join(fid(9).to_string())).unwrap(); // wrong shard
    fs::create_dir_all(pages.join("00").join(format!("{:032x}", 7u128))).unwrap(); // empty
    fs::write(pages.join("stray-file"), b"x").unwrap();
    // Pages of another page size are invalid for this one.
    fs::create_dir_all(root.join("pages-512/00")).unwrap();
    // Unrelated files next to the store's are left alone.
    fs::write(root.join("README"), b"keep me").unwrap();

    let store = open1(&root, 10 * PS, PS);
    assert_eq!(&store.get(&good).unwrap().unwrap()[..], &page_data(&good, 1000)[..]);
    assert_eq!(store.get(&truncated).unwrap(), None);
    assert_eq!(store.get(&renamed_garbage).unwrap(), None);
    let s = store.stats();
    assert_eq!(s.pages, 1);
    assert_eq!(s.used_bytes, 1000);
    assert_eq!(s.checksum_failures, 0);
    assert!(s.recovery_discarded >= 10, "{s:?}");
    assert_eq!(page_files(&root), vec![find_page_file(&root, PS, &good).unwrap()]);
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert!(!root.join("pages-512").exists());
    assert!(!pages.join("zz").exists());
    assert!(!pages.join("00").join(format!("{:032x}", 7u128)).exists());
    assert!(root.join("README").exists());
    // The truncated page can be stored again.
    store.put(&truncated, &page_data(&truncated, 1000)).unwrap();
    assert_eq!(
        &store.get(&truncated).unwrap().unwrap()[..],
        &page_data(&truncated, 1000)[..]
    );
}

#[test]
fn duplicate_pages_on_disk_keep_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let k = key(fid(1), 0);
    {
        let store = open1(&root, 10 * PS, PS);
        store.put(&k, b"abc").unwrap();
    }
    let p = find_page_file(&root, PS, &k).unwrap();
    // A second copy with another generation (as left by a crash in a delete + rewrite).
    let name = p.file_name().unwrap().to_string_lossy().to_string();
    let copy = p.with_file_name(format!("{}ffff", &name[..name.len() - 4]));
    fs::copy(&p, &copy).unwrap();
    let store = open1(&root, 10 * PS, PS);
    assert_eq!(page_files(&root).len(), 1);
    assert_eq!(&store.get(&k).unwrap().unwrap()[..], b"abc");
    assert_eq!(store.stats().used_bytes, 3);
}

#[test]
fn corrupt_page_is_dropped_counted_and_refetchable() {
    for len in [1000usize, 256 * 1024] {
        let tmp = tempfile::tempdir().unwrap();
        let ps = 256 * 1024;
        let store = open1(tmp.path(), 10 * ps, ps);
        let k = key(fid(1), 3);
        let data = page_data(&k, len);
        store.put(&k, &data).unwrap();
        let p = find_page_file(tmp.path(), ps, &k).unwrap();
        let mut bytes = fs::read(&p).unwrap();
        bytes[len / 2] ^= 0x01;
        fs::write(&p, &bytes).unwrap();

        assert_eq!(store.get(&k).unwrap(), None);
        let s = store.stats();
        assert_eq!(s.checksum_failures, 1);
        assert_eq!(s.missing_files, 0);
        assert_eq!(s.pages, 0);
        assert_eq!(s.used_bytes, 0);
        assert!(!p.exists());
        assert!(!store.contains(&k));
        assert_eq!(store.get(&k).unwrap(), None);
        assert_eq!(store.stats().checksum_failures, 1);

        store.put(&k, &data).unwrap();
        assert_eq!(&store.get(&k).unwrap().unwrap()[..], &data[..]);
        assert_eq!(store.stats().checksum_failures, 1);
    }
}

#[test]
fn page_with_wrong_length_or_missing_file_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 10 * PS, PS);
    let a = key(fid(1), 0);
    let b = key(fid(1), 1);
    store.put(&a, &page_data(&a, 100)).unwrap();
    store.put(&b, &page_data(&b, 100)).unwrap();
    // Appended to while open: wrong length.
    let pa = find_page_file(tmp.path(), PS, &a).unwrap();
    fs::write(&pa, page_data(&a, 101)).unwrap();
    assert_eq!(store.get(&a).unwrap(), None);
    assert!(!pa.exists());
    // Deleted behind the store's back.
    fs::remove_file(find_page_file(tmp.path(), PS, &b).unwrap()).unwrap();
    assert_eq!(store.get(&b).unwrap(), None);
    let s = store.stats();
    assert_eq!(s.checksum_failures, 1);
    assert_eq!(s.missing_files, 1);
    assert_eq!(s.pages, 0);
    store.put(&b, &page_data(&b, 100)).unwrap();
    assert!(store.get(&b).unwrap().is_some());
}

#[test]
fn eviction_is_lru_and_keeps_usage_within_capacity() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 4 * PS, PS);
    let f = fid(1);
    let k = |i| key(f, i);
    for i in 0..4 {
        store.put(&k(i), &page_data(&k(i), PS as usize)).unwrap();
    }
    assert_eq!(store.stats().used_bytes, 4 * PS);
    // Use 0 and then 1: 2 is now the least recently used, then 3.
    store.get(&k(0)).unwrap().unwrap();
    store.get(&k(1)).unwrap().unwrap();
    // contains does not count as a use.
    assert!(store.contains(&k(2)));
    store.put(&k(4), &page_data(&k(4), PS as usize)).unwrap();
    assert!(!store.contains(&k(2)));
    assert!(store.contains(&k(3)));
    store.put(&k(5), &page_data(&k(5), PS as usize)).unwrap();
    assert!(!store.contains(&k(3)));
    // Small pages: one full page evicts as many as needed.
    store.get(&k(4)).unwrap().unwrap();
    store.get(&k(5)).unwrap().unwrap();
    store.put(&k(6), &page_data(&k(6), 10)).unwrap(); // evicts 0 (LRU)
    assert!(!store.contains(&k(0)));
    assert_eq!(store.cached_pages(f), vec![1, 4, 5, 6]);
    let s = store.stats();
    assert_eq!(s.evictions, 3);
    assert_eq!(s.used_bytes, 3 * PS + 10);
    assert!(s.used_bytes <= s.capacity_bytes);
    assert_eq!(s.checksum_failures + s.missing_files, 0);
    // Evicted pages' files are gone.
    assert_eq!(page_files(tmp.path()).len(), 4);
    assert_eq!(disk_bytes(&[tmp.path().to_path_buf()]), s.used_bytes);
    for i in [0, 2, 3] {
        assert_eq!(store.get(&k(i)).unwrap(), None);
    }
}

#[test]
fn restart_recovers_lru_order_from_modification_times() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fid(1);
    let k = |i| key(f, i);
    {
        let store = open1(tmp.path(), 4 * PS, PS);
        for i in 0..4 {
            store.put(&k(i), &page_data(&k(i), PS as usize)).unwrap();
        }
    }
    // Make page 2 the oldest and page 0 the newest.
    let base = SystemTime::now() - Duration::from_secs(1000);
    for (i, age) in [(2, 0), (3, 10), (1, 20), (0, 30)] {
        let p = find_page_file(tmp.path(), PS, &k(i)).unwrap();
        let file = fs::OpenOptions::new().write(true).open(p).unwrap();
        file.set_modified(base + Duration::from_secs(age)).unwrap();
    }
    let store = open1(tmp.path(), 4 * PS, PS);
    store.put(&k(10), &page_data(&k(10), PS as usize)).unwrap();
    assert!(!store.contains(&k(2)));
    store.put(&k(11), &page_data(&k(11), PS as usize)).unwrap();
    assert!(!store.contains(&k(3)));
    assert_eq!(store.cached_pages(f), vec![0, 1, 10, 11]);
}

#[test]
fn restart_in_put_order_without_mtime_differences() {
    // Pages written in one burst share coarse mtimes: the generation breaks ties.
    let tmp = tempfile::tempdir().unwrap();
    let f = fid(1);
    let k = |i| key(f, i);
    {
        let store = open1(tmp.path(), 8 * PS, PS);
        for i in 0..8 {
            store.put(&k(i), &page_data(&k(i), PS as usize)).unwrap();
        }
    }
    let store = open1(tmp.path(), 8 * PS, PS);
    for i in 8..12 {
        store.put(&k(i), &page_data(&k(i), PS as usize)).unwrap();
    }
    assert_eq!(store.cached_pages(f), vec![4, 5, 6, 7, 8, 9, 10, 11]);
    drop(store);
    let store = open1(tmp.path(), 8 * PS, PS);
    store.put(&k(12), &page_data(&k(12), PS as usize)).unwrap();
    assert_eq!(store.cached_pages(f), vec![5, 6, 7, 8, 9, 10, 11, 12]);
}

#[test]
fn restart_with_smaller_capacity_evicts_the_oldest() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fid(1);
    let k = |i| key(f, i);
    {
        let store = open1(tmp.path(), 8 * PS, PS);
        for i in 0..8 {
            store.put(&k(i), &page_data(&k(i), PS as usize)).unwrap();
        }
    }
    let store = open1(tmp.path(), 3 * PS, PS);
    assert_eq!(store.cached_pages(f), vec![5, 6, 7]);
    assert_eq!(page_files(tmp.path()).len(), 3);
    assert_eq!(store.stats().used_bytes, 3 * PS);
}

#[test]
fn restart_with_another_page_size_drops_old_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let k = key(fid(1), 0);
    {
        let store = open1(tmp.path(), 8 * PS, PS);
        store.put(&k, b"abc").unwrap();
    }
    let store = open1(tmp.path(), 8 * PS, 2 * PS);
    assert!(!store.contains(&k));
    assert_eq!(page_files(tmp.path()).len(), 0);
    assert!(!tmp.path().join(format!("pages-{PS}")).exists());
}

#[test]
fn versions_of_a_path_never_collide() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 10 * PS, PS);
    let v1 = FileId::new("/data/x.parquet", "etag-1");
    let v2 = FileId::new("/data/x.parquet", "etag-2");
    assert_ne!(v1, v2);
    // Separator ambiguity: ("a/b", "c") vs ("a", "/bc") etc.
    assert_ne!(FileId::new("/a:b", "c"), FileId::new("/a", "b:c"));
    store.put(&key(v1, 0), b"old contents").unwrap();
    assert_eq!(store.get(&key(v2, 0)).unwrap(), None);
    store.put(&key(v2, 0), b"new contents").unwrap();
    assert_eq!(&store.get(&key(v1, 0)).unwrap().unwrap()[..], b"old contents");
    assert_eq!(&store.get(&key(v2, 0)).unwrap().unwrap()[..], b"new contents");
    assert_eq!(store.delete_file(v1).unwrap(), 12);
    assert_eq!(store.get(&key(v1, 0)).unwrap(), None);
    assert_eq!(&store.get(&key(v2, 0)).unwrap().unwrap()[..], b"new contents");
}

#[test]
fn delete_file_removes_pages_and_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = vec![tmp.path().join("a"), tmp.path().join("b")];
    let store = PageStore::open(config(&dirs, &[20 * PS, 20 * PS], PS)).unwrap();
    let (f, g) = (fid(1), fid(2));
    for i in 0..10 {
        store.put(&key(f, i), &page_data(&key(f, i), 100)).unwrap();
        store.put(&key(g, i), &page_data(&key(g, i), 200)).unwrap();
    }
    assert_eq!(store.cached_bytes(f), 1000);
    assert_eq!(store.delete_file(f).unwrap(), 1000);
    assert_eq!(store.cached_bytes(f), 0);
    assert_eq!(store.cached_pages(f), Vec::<u64>::new());
    assert_eq!(store.delete_file(f).unwrap(), 0);
    for i in 0..10 {
        assert!(!store.contains(&key(f, i)));
        assert!(store.contains(&key(g, i)));
    }
    for d in &dirs {
        let file_dir = d
            .join(format!("pages-{PS}"))
            .join(format!("{:02x}", (f.0 >> 120) as u8))
            .join(f.to_string());
        assert!(!file_dir.exists());
    }
    let s = store.stats();
    assert_eq!(s.pages, 10);
    assert_eq!(s.used_bytes, 2000);
    assert_eq!(s.evictions, 0);
    assert_eq!(disk_bytes(&dirs), 2000);
    // A deleted file can be cached again.
    store.put(&key(f, 0), &page_data(&key(f, 0), 100)).unwrap();
    assert!(store.get(&key(f, 0)).unwrap().is_some());
}

#[test]
fn multiple_dirs_each_stay_within_their_capacity() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("d{i}"))).collect();
    let caps = [2 * PS, 6 * PS, 12 * PS];
    let store = PageStore::open(config(&dirs, &caps, PS)).unwrap();
    let mut placed = [0u64; 3];
    for i in 0..2000 {
        let k = key(fid(i % 7), i as u64);
        store.put(&k, &page_data(&k, PS as usize)).unwrap();
        let s = store.stats();
        for (d, cap) in s.dirs.iter().zip(caps) {
            assert!(d.used_bytes <= cap);
        }
        for (n, d) in placed.iter_mut().zip(&s.dirs) {
            *n = d.pages;
        }
    }
    let s = store.stats();
    assert_eq!(s.capacity_bytes, 20 * PS);
    assert_eq!(s.used_bytes, 20 * PS);
    assert_eq!(placed, [2, 6, 12]);
    assert_eq!(disk_bytes(&dirs), 20 * PS);
    // Placement is in proportion to capacity: count where fresh keys would go by putting them
    // into a large store with the same weights.
    let tmp2 = tempfile::tempdir().unwrap();
    let dirs2: Vec<PathBuf> = (0..3).map(|i| tmp2.path().join(format!("d{i}"))).collect();
    let big = PageStore::open(config(&dirs2, &[1000, 3000, 6000], 10)).unwrap();
    for i in 0..600 {
        big.put(&key(fid(1), i), b"x").unwrap();
    }
    let per_dir: Vec<u64> = big.stats().dirs.iter().map(|d| d.pages).collect();
    assert!((30..=90).contains(&per_dir[0]), "{per_dir:?}");
    assert!((130..=230).contains(&per_dir[1]), "{per_dir:?}");
    assert!((300..=420).contains(&per_dir[2]), "{per_dir:?}");
}

#[test]
fn get_range_returns_verified_parts_clamped_to_the_page() {
    let tmp = tempfile::tempdir().unwrap();
    let ps = 256 * 1024;
    let store = open1(tmp.path(), 10 * ps, ps);
    let k = key(fid(1), 0);
    let len = 100_000usize;
    let data = page_data(&k, len);
    store.put(&k, &data).unwrap();
    for (a, b) in [
        (0u64, 10u64),
        (16383, 16385),
        (16384, 32768),
        (5, 99_999),
        (0, 100_000),
        (90_000, 200_000),
        (100_000, 100_001),
        (200_000, 300_000),
        (7, 7),
        (9, 3),
    ] {
        let got = store.get_range(&k, a..b).unwrap().unwrap();
        let end = (b as usize).min(len);
        let start = (a as usize).min(end);
        assert_eq!(&got[..], &data[start..end], "{a}..{b}");
    }
    assert_eq!(&store.get(&k).unwrap().unwrap()[..], &data[..]);
    assert_eq!(store.get_range(&key(fid(1), 1), 0..10).unwrap(), None);
}

#[test]
fn get_range_detects_corruption_in_the_chunks_it_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let ps = 256 * 1024;
    let store = open1(tmp.path(), 10 * ps, ps);
    let k = key(fid(1), 0);
    let data = page_data(&k, ps as usize);
    store.put(&k, &data).unwrap();
    let p = find_page_file(tmp.path(), ps, &k).unwrap();
    let mut bytes = fs::read(&p).unwrap();
    bytes[200_000] ^= 0x10;
    fs::write(&p, &bytes).unwrap();
    // The first chunks are intact: served, and the bad byte is never returned.
    assert_eq!(&store.get_range(&k, 0..1000).unwrap().unwrap()[..], &data[..1000]);
    assert_eq!(store.stats().checksum_failures, 0);
    // A read touching the bad chunk drops the page.
    assert_eq!(store.get_range(&k, 199_000..201_000).unwrap(), None);
    assert_eq!(store.stats().checksum_failures, 1);
    assert!(!p.exists());
    assert_eq!(store.get_range(&k, 0..1000).unwrap(), None);
    // A corrupt chunk table is caught by any read.
    store.put(&k, &data).unwrap();
    let p = find_page_file(tmp.path(), ps, &k).unwrap();
    let mut bytes = fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    fs::write(&p, &bytes).unwrap();
    assert_eq!(store.get_range(&k, 0..10).unwrap(), None);
    assert_eq!(store.stats().checksum_failures, 2);
}

#[test]
fn bytes_read_outlive_eviction_and_corruption_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let ps = 256 * 1024;
    let store = open1(tmp.path(), 4 * ps, ps);
    let keys: Vec<_> = (0..6).map(|i| key(fid(1), i)).collect();
    for k in &keys {
        store.put(k, &page_data(k, ps as usize - 3)).unwrap();
    }
    let held = store.get(&keys[5]).unwrap().unwrap();
    for k in &keys[2..5] {
        assert_eq!(&store.get(k).unwrap().unwrap()[..], &page_data(k, ps as usize - 3)[..]);
    }
    // Evicting a page whose bytes are still held does not disturb them.
    for i in 10..14 {
        let k = key(fid(1), i);
        store.put(&k, &page_data(&k, 10)).unwrap();
    }
    assert!(!store.contains(&keys[5]));
    assert_eq!(&held[..], &page_data(&keys[5], ps as usize - 3)[..]);
    // Corruption is caught.
    let k = key(fid(1), 10);
    let p = find_page_file(tmp.path(), ps, &k).unwrap();
    fs::write(&p, b"0123456789\0\0\0\0\0\0\0\0").unwrap();
    assert_eq!(store.get(&k).unwrap(), None);
    assert_eq!(store.stats().checksum_failures, 1);
    let s = store.stats();
    assert_eq!(s.missing_files, 0);
}

#[test]
fn nowait_reads_serve_cached_pages_and_defer_the_rest() {
    use hoard_pagestore::CachedRead;
    use std::os::fd::AsRawFd;
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 100 * PS, PS);
    let k = key(fid(7), 0);
    let data = page_data(&k, PS as usize);
    assert_eq!(store.get_range_nowait(&k, 0..10).unwrap(), CachedRead::Absent);
    store.put(&k, &data).unwrap();
    // Just written, so in the OS page cache: served without waiting.
    assert_eq!(
        store.get_range_nowait(&k, 100..200).unwrap(),
        CachedRead::Hit(bytes::Bytes::copy_from_slice(&data[100..200]).into())
    );
    // Evict the page file from the OS page cache: a no-wait read must not block on the disk.
    let files = page_files(tmp.path());
    assert_eq!(files.len(), 1);
    let file = fs::File::open(&files[0]).unwrap();
    file.sync_all().unwrap();
    // SAFETY: posix_fadvise only advises the kernel about this open descriptor's pages.
    let advised = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(advised, 0);
    match store.get_range_nowait(&k, 100..200).unwrap() {
        // Some file systems cannot drop the pages or have no no-wait reads; both answers
        // are fine as long as the bytes, when given, are right.
        CachedRead::NotInMemory => {}
        CachedRead::Hit(bytes) => assert_eq!(&bytes[..], &data[100..200]),
        CachedRead::Absent => panic!("a cached page was reported absent"),
    }
    // The blocking read always answers, with the right bytes.
    assert_eq!(&store.get_range(&k, 100..200).unwrap().unwrap()[..], &data[100..200]);
    assert_eq!(store.stats().checksum_failures, 0);
}

#[test]
fn nowait_reads_verify_and_drop_corrupt_pages() {
    use hoard_pagestore::CachedRead;
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 4 * PS, PS);
    let keys: Vec<_> = (0..4).map(|i| key(fid(9), i)).collect();
    for k in &keys {
        store.put(k, &page_data(k, PS as usize)).unwrap();
    }
    let last = &keys[3];
    for k in &keys {
        // Just written, so in the OS page cache: a hit (or, on file systems without no-wait
        // reads, a deferral), never wrong bytes.
        match store.get_range_nowait(k, 5..50).unwrap() {
            CachedRead::Hit(bytes) => assert_eq!(&bytes[..], &page_data(k, PS as usize)[5..50]),
            CachedRead::NotInMemory => {}
            CachedRead::Absent => panic!("a stored page reported absent"),
        }
    }
    // A page corrupted on disk is caught by a no-wait read too, dropped, and never served.
    corrupt_page_file(tmp.path(), PS, last);
    match store.get_range_nowait(last, 0..200).unwrap() {
        CachedRead::Absent => {}
        CachedRead::NotInMemory => assert_eq!(store.get_range(last, 0..200).unwrap(), None),
        CachedRead::Hit(_) => panic!("corrupt bytes served"),
    }
    assert_eq!(store.stats().checksum_failures, 1);
    assert!(!store.contains(last));
    assert!(store.stats().used_bytes <= 4 * PS);
}

/// Pages of 16 checksummed chunks, for the memory tier.
const MPS: u64 = 64 * 1024;

/// Corrupts one byte of the page's file on disk.
fn corrupt_page_file(root: &Path, page_size: u64, key: &PageKey) {
    let path = find_page_file(root, page_size, key).unwrap();
    let mut raw = fs::read(&path).unwrap();
    raw[100] ^= 0xff;
    fs::write(&path, raw).unwrap();
}

#[test]
fn memory_tier_copies_a_page_once_it_has_been_read_whole_and_serves_only_verified_bytes() {
    use hoard_pagestore::CachedRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut store = open1(tmp.path(), 8 * MPS, MPS);
    store.set_memory_capacity(2 * MPS);
    let chunk = 4096u64;
    let chunks_per_page = MPS / chunk;
    let keys: Vec<_> = (0..4).map(|i| key(fid(11), i)).collect();
    for k in &keys {
        store.put(k, &page_data(k, MPS as usize)).unwrap();
    }
    let hot = keys[0];
    let data = page_data(&hot, MPS as usize);

    // Reads of one chunk each: the page is copied by the read that brings the count to the
    // page's chunk count, and served from memory after that.
    for i in 0..chunks_per_page {
        let at = (i * 7919 * 64) % (MPS - 10);
        let got = store.get_range(&hot, at..at + 10).unwrap().unwrap();
        assert_eq!(&got[..], &data[at as usize..at as usize + 10]);
    }
    assert_eq!(store.stats().memory_hits, 0, "no copy before a page's worth of reads");
    assert_eq!(store.stats().memory_used_bytes, MPS);
    assert_eq!(
        store.get_range_nowait(&hot, 5..5000).unwrap(),
        CachedRead::Hit(bytes::Bytes::copy_from_slice(&data[5..5000]).into())
    );
    assert_eq!(store.stats().memory_hits, 1);
    // The copy lives in a sealed in-memory file a server can `sendfile` from: at the slice's
    // offset it holds exactly the slice's bytes.
    let from_memory = store.get_range(&hot, 5000..9000).unwrap().unwrap();
    let (fd, offset) = from_memory
        .sealed_file()
        .expect("a memory tier page names its sealed file");
    assert_eq!(offset, 5000);
    let mut in_file = vec![0u8; 4000];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::from(fd.try_clone_to_owned().unwrap()),
        &mut in_file,
        offset,
    )
    .unwrap();
    assert_eq!(&in_file[..], &data[5000..9000]);
    assert!(
        store
            .get_range(&keys[1], 0..10)
            .unwrap()
            .unwrap()
            .sealed_file()
            .is_none(),
        "pages outside the tier have no sealed file"
    );

    // The copy was verified when it was made: a later corruption of the file on disk is not
    // served (the verified bytes are), and is caught once the page leaves memory.
    corrupt_page_file(tmp.path(), MPS, &hot);
    assert_eq!(&store.get(&hot).unwrap().unwrap()[..], &data[..]);
    assert_eq!(store.stats().checksum_failures, 0);

    // A page corrupted on disk before it earns its copy is dropped, never copied or served.
    let bad = keys[1];
    corrupt_page_file(tmp.path(), MPS, &bad);
    assert_eq!(store.get_range(&bad, 0..MPS).unwrap(), None);
    assert_eq!(store.stats().checksum_failures, 1);
    assert!(!store.contains(&bad));
    assert_eq!(store.stats().memory_used_bytes, MPS);

    // A no-wait read that earns a copy leaves the copy to the blocking read that follows.
    let used = store.stats().memory_used_bytes;
    let due = keys[2];
    assert_eq!(store.get_range_nowait(&due, 0..MPS).unwrap(), CachedRead::NotInMemory);
    assert_eq!(store.stats().memory_used_bytes, used);
    assert_eq!(
        &store.get_range(&due, 0..MPS).unwrap().unwrap()[..],
        &page_data(&due, MPS as usize)[..]
    );
    assert_eq!(store.stats().memory_used_bytes, used + MPS);

    // The tier is full now (two pages): a page earns its copy only after four whole-page reads,
    // so a hot set just larger than the tier does not churn through it.
    let late = keys[3];
    let copies = store.stats().memory_copies;
    for _ in 0..3 {
        assert_eq!(
            &store.get(&late).unwrap().unwrap()[..],
            &page_data(&late, MPS as usize)[..]
        );
    }
    assert_eq!(
        store.stats().memory_copies,
        copies,
        "no copy into a full tier after 3 reads"
    );
    assert_eq!(
        &store.get(&late).unwrap().unwrap()[..],
        &page_data(&late, MPS as usize)[..]
    );
    assert_eq!(store.stats().memory_copies, copies + 1);
    assert!(store.stats().memory_used_bytes <= 2 * MPS);
    assert!(store.stats().memory_hits > 1);

    // A deleted file's pages leave memory; a new version of a page is never answered with the
    // old copy.
    store.delete_file(fid(11)).unwrap();
    assert_eq!(store.stats().memory_used_bytes, 0);
    assert_eq!(store.get(&hot).unwrap(), None);
    let new_data: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
    store.put(&hot, &new_data).unwrap();
    for _ in 0..3 {
        assert_eq!(&store.get(&hot).unwrap().unwrap()[..], &new_data[..]);
    }
}

#[test]
fn memory_tier_drops_evicted_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = open1(tmp.path(), 2 * MPS, MPS);
    store.set_memory_capacity(4 * MPS);
    let first = key(fid(12), 0);
    let data = page_data(&first, MPS as usize);
    store.put(&first, &data).unwrap();
    assert_eq!(&store.get(&first).unwrap().unwrap()[..], &data[..]);
    assert_eq!(store.stats().memory_used_bytes, MPS);
    // Two more pages push the first out of the (two-page) store and so out of memory too.
    for i in 1..3 {
        let k = key(fid(12), i);
        store.put(&k, &page_data(&k, MPS as usize)).unwrap();
    }
    assert!(!store.contains(&first));
    assert_eq!(store.stats().memory_used_bytes, 0);
    assert_eq!(store.get(&first).unwrap(), None);
    for i in 1..3 {
        let k = key(fid(12), i);
        assert_eq!(&store.get(&k).unwrap().unwrap()[..], &page_data(&k, MPS as usize)[..]);
    }
}
