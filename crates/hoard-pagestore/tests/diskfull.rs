//! A page store whose file system fills up before its configured capacity: the effective
//! capacity drops to what the disk holds and eviction goes on, then rises again when room is
//! made. Runs on small file systems mounted by the test (needs root; skipped otherwise).

mod common;

use std::time::{Duration, Instant};

use common::*;
use hoard_pagestore::{PageStore, PageStoreError};

const PS: u64 = 256 * 1024;
const GIB: u64 = 1 << 30;

/// Puts `count` distinct pages of file `file` in turn; every put succeeds, and the pages put
/// last are the ones kept.
fn fill_past_the_disk(store: &PageStore, file: u32, count: u64) {
    for i in 0..count {
        let k = key(fid(file), i);
        store
            .put(&k, &page_data(&k, PS as usize))
            .unwrap_or_else(|e| panic!("put {i} of a full disk: {e}"));
        let s = store.stats();
        assert!(s.used_bytes <= s.effective_capacity_bytes, "{s:?}");
    }
}

/// The pages of `file` put last are all there, with their bytes.
fn recent_pages_are_kept(store: &PageStore, file: u32, count: u64, recent: u64) {
    for i in count - recent..count {
        let k = key(fid(file), i);
        let got = store
            .get(&k)
            .unwrap()
            .unwrap_or_else(|| panic!("recent page {i} not kept"));
        assert_eq!(&got[..], &page_data(&k, PS as usize)[..], "page {i}");
    }
}

fn full_disk_keeps_caching(mount: &Mount, direct: bool, disk_bytes: u64) {
    let dir = mount.path.join("store");
    let store = open1(&dir, GIB, PS);
    store.set_direct_writes(direct);
    let count = 3 * disk_bytes / PS;
    fill_past_the_disk(&store, 1, count);
    let s = store.stats();
    assert_eq!(s.capacity_bytes, GIB);
    assert!(
        s.effective_capacity_bytes < disk_bytes && s.effective_capacity_bytes >= disk_bytes / 2,
        "effective capacity is about what the disk holds: {s:?}"
    );
    assert_eq!(s.puts, count, "every page was stored: {s:?}");
    assert!(s.evictions > 0, "{s:?}");
    recent_pages_are_kept(&store, 1, count, 8);
    assert_eq!(store.direct_writes(), direct, "written the way asked");
    assert_eq!(store.stats().checksum_failures, 0);
}

#[test]
fn a_full_tmpfs_lowers_the_capacity_and_eviction_goes_on() {
    let Some(mount) = Mount::tmpfs("8m") else { return };
    full_disk_keeps_caching(&mount, false, 8 << 20);
}

#[test]
fn a_full_ext4_disk_with_direct_writes_lowers_the_capacity_and_eviction_goes_on() {
    let Some(mount) = Mount::ext4(16) else { return };
    let free = fs_free(&mount.path);
    full_disk_keeps_caching(&mount, true, free);
}

/// Bytes available on the file system at `path`.
fn fs_free(path: &std::path::Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs into a zeroed struct, with a valid C string.
    let mut fs: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut fs) }, 0);
    fs.f_bavail * fs.f_frsize
}

#[test]
fn the_capacity_recovers_when_room_is_made() {
    let Some(mount) = Mount::tmpfs("4m") else { return };
    let mut store = open1(&mount.path.join("store"), GIB, PS);
    store.set_space_probe_interval(Duration::from_millis(50));
    fill_past_the_disk(&store, 1, 40);
    let low = store.stats().effective_capacity_bytes;
    assert!(low < 4 << 20, "{low}");

    mount.resize("12m");
    // The next puts after a probe interval find the room.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while store.stats().effective_capacity_bytes < 8 << 20 {
        assert!(Instant::now() < deadline, "capacity never rose: {:?}", store.stats());
        let k = key(fid(2), i);
        store.put(&k, &page_data(&k, PS as usize)).unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = store.stats();
    assert!(s.effective_capacity_bytes <= 12 << 20, "{s:?}");
    fill_past_the_disk(&store, 3, 60);
    recent_pages_are_kept(&store, 3, 60, 30);
}

#[test]
fn the_capacity_recovers_up_to_the_configured_one() {
    let Some(mount) = Mount::tmpfs("2m") else { return };
    let mut store = open1(&mount.path.join("store"), 10 * PS, PS);
    store.set_space_probe_interval(Duration::from_millis(50));
    fill_past_the_disk(&store, 4, 20);
    assert!(store.stats().effective_capacity_bytes < 2 << 20);
    mount.resize("64m");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while store.stats().effective_capacity_bytes < 10 * PS {
        assert!(Instant::now() < deadline, "capacity never rose: {:?}", store.stats());
        let k = key(fid(5), i);
        store.put(&k, &page_data(&k, PS as usize)).unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        store.stats().effective_capacity_bytes,
        10 * PS,
        "never above the configured"
    );
}

/// A disk filled by someone else, with nothing of the store's to evict: puts fail at once
/// (no hang, no retry storm), and work again once room is made.
#[test]
fn a_disk_full_of_other_files_fails_puts_until_room_is_made() {
    let Some(mount) = Mount::tmpfs("2m") else { return };
    let mut store = open1(&mount.path.join("store"), GIB, PS);
    store.set_space_probe_interval(Duration::from_millis(50));
    let filler = mount.path.join("filler");
    // As much as fits.
    let _ = std::fs::write(&filler, vec![1u8; 2 << 20]);
    let k = key(fid(6), 0);
    let data = page_data(&k, PS as usize);
    for _ in 0..3 {
        match store.put(&k, &data) {
            Err(PageStoreError::NoSpace { .. } | PageStoreError::Io { .. }) => {}
            other => panic!("a put on a full disk: {other:?}"),
        }
    }
    assert_eq!(store.stats().effective_capacity_bytes, 0);
    assert_eq!(store.get(&k).unwrap(), None);
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.put(&k, &data).is_err() {
        assert!(Instant::now() < deadline, "never recovered: {:?}", store.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(&store.get(&k).unwrap().unwrap()[..], &data[..]);
}

/// Two dirs, one on a small full disk: pages keep going to both, the full one within what
/// its disk holds.
#[test]
fn a_full_dir_among_others() {
    let Some(mount) = Mount::tmpfs("2m") else { return };
    let big = tempfile::tempdir().unwrap();
    let dirs = vec![mount.path.join("store"), big.path().join("store")];
    let store = PageStore::open(config(&dirs, &[GIB, GIB], PS)).unwrap();
    fill_past_the_disk(&store, 7, 64);
    let s = store.stats();
    assert!(s.dirs[0].effective_capacity_bytes < 2 << 20, "{s:?}");
    assert_eq!(s.dirs[1].effective_capacity_bytes, GIB, "{s:?}");
    assert!(s.dirs[0].pages > 0 && s.dirs[1].pages > 0, "{s:?}");
    assert_eq!(s.puts, 64);
    for i in 0..64 {
        let k = key(fid(7), i);
        if let Some(got) = store.get(&k).unwrap() {
            assert_eq!(&got[..], &page_data(&k, PS as usize)[..]);
        }
    }
    // Pages of the big dir were never evicted for the small one.
    assert_eq!(s.dirs[1].pages + s.dirs[0].pages, s.pages);
    assert!(s.pages > 64 - 2 * 8, "only the small disk's share was evicted: {s:?}");
}
