//! A worker whose page store disk fills up before the configured capacity (issue 12, item 6):
//! the cache must keep turning over (recent pages cached, old ones evicted) with one warning,
//! instead of freezing on its first pages with a warning per page. Runs on a small tmpfs and
//! on a small ext4 image (O_DIRECT writes) mounted by the test: needs root, skipped with a
//! message otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;

/// A small file system mounted for the test, unmounted when dropped, pass or fail.
struct Mount {
    path: PathBuf,
    image: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(size: &str) -> Option<Mount> {
        let dir = tempfile::Builder::new().prefix("hoard-tmpfs").tempdir().unwrap();
        let path = dir.path().to_path_buf();
        mount(&["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"], &path)?;
        Some(Mount {
            path,
            image: None,
            _dir: dir,
        })
    }

    /// ext4 in an image file on a loop device: a disk file system that takes O_DIRECT.
    fn ext4(mib: u64) -> Option<Mount> {
        let dir = tempfile::Builder::new().prefix("hoard-ext4").tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let image = dir.path().with_extension("img");
        std::fs::File::create(&image).unwrap().set_len(mib << 20).unwrap();
        // No blocks reserved for root (tests run as root): the disk holds what df says.
        let mkfs = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image)
            .output();
        let image_arg = image.to_string_lossy().to_string();
        if !mkfs.as_ref().is_ok_and(|o| o.status.success()) || mount(&["-o", "loop", &image_arg], &path).is_none() {
            eprintln!("skipping: cannot make an ext4 image: {mkfs:?}");
            let _ = std::fs::remove_file(&image);
            return None;
        }
        Some(Mount {
            path,
            image: Some(image),
            _dir: dir,
        })
    }
}

fn mount(args: &[&str], at: &Path) -> Option<()> {
    match std::process::Command::new("mount").args(args).arg(at).output() {
        Ok(out) if out.status.success() => Some(()),
        other => {
            eprintln!("skipping: cannot mount a small file system (mount {args:?}; needs root): {other:?}");
            None
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.path)
            .output()
            .is_ok_and(|o| o.status.success());
        if !unmounted {
            // Still busy (a worker of a failed test): detach it now, gone once released.
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).output();
        }
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
    }
}

/// Bytes the file system at `path` has available.
fn available(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs into a zeroed struct, with a valid C string.
    let mut fs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut fs) }, 0);
    fs.f_bavail * fs.f_frsize
}

fn read_whole(address: &str, path: &str, expected: &[u8]) {
    let (status, _, body) = http_get(address, &format!("/files{path}")).expect("read");
    assert_eq!(status, 200, "{path}");
    assert!(
        body == expected,
        "{path}: wrong bytes ({} of {})",
        body.len(),
        expected.len()
    );
}

/// Reads three times the disk's size of distinct files through a worker whose page store
/// sits on `mount` with a configured capacity of 1GiB, then the last few files again.
fn the_cache_keeps_turning_over(mount: &Mount, direct_writes: bool) {
    let disk = available(&mount.path) as usize;
    let count = 3 * disk / MIB;
    let ufs = tempfile::Builder::new().prefix("hoard-ufs").tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            let name = format!("/d/f{i:03}.bin");
            let bytes = content(500 + i as u64, MIB);
            std::fs::create_dir_all(ufs.path().join("d")).unwrap();
            std::fs::write(ufs.path().join(&name[1..]), &bytes).unwrap();
            (name, bytes)
        })
        .collect();
    let store = mount.path.join("store");
    let cluster = Cluster::start(
        1,
        ufs.path(),
        &[
            &format!("hoard.worker.page.store.dirs={}", store.display()),
            "hoard.worker.page.store.sizes=1GiB",
            "hoard.worker.page.store.page.size=256KiB",
            "hoard.worker.page.store.memory.size=0",
            &format!("hoard.worker.page.store.direct.write.enabled={direct_writes}"),
        ],
    );
    let worker = cluster.processes().remove(0);
    for (path, bytes) in &files {
        read_whole(&worker.address, path, bytes);
    }
    // The working set: the last files read, a quarter of the disk. Their pages are written
    // behind the reads; wait for them (a frozen cache never caches them).
    let recent = &files[count - disk / MIB / 4..];
    let deadline = Instant::now() + Duration::from_secs(30);
    let cached = |path: &str| {
        let stat = cluster.hoard(&["fs", "stat", path, "--format", "json"]);
        serde_json::from_slice::<serde_json::Value>(&stat.stdout)
            .ok()
            .and_then(|json| json["cachedBytes"].as_u64())
            .unwrap_or(0)
    };
    while recent.iter().any(|(path, bytes)| cached(path) != bytes.len() as u64) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let hits = metric(&worker.address, "hoard_worker_page_hits_total");
    let misses = metric(&worker.address, "hoard_worker_page_misses_total");
    for (path, bytes) in recent {
        read_whole(&worker.address, path, bytes);
    }
    let hits = metric(&worker.address, "hoard_worker_page_hits_total") - hits;
    let misses = metric(&worker.address, "hoard_worker_page_misses_total") - misses;
    let ratio = hits / (hits + misses);
    assert!(
        ratio >= 0.9,
        "page hit ratio {ratio:.2} ({hits} hits, {misses} misses) re-reading the last {} files: the cache froze",
        recent.len()
    );

    let effective = metric(&worker.address, "hoard_worker_page_store_effective_capacity_bytes");
    assert!(
        effective > 0.0 && effective < disk as f64,
        "effective capacity {effective}, disk {disk}"
    );
    assert_eq!(metric(&worker.address, "hoard_worker_page_store_capacity_bytes"), GIB);
    assert!(metric(&worker.address, "hoard_worker_page_evictions_total") > 0.0);
    assert!(metric(&worker.address, "hoard_worker_page_store_used_bytes") <= effective);

    let log = std::fs::read_to_string(&worker.log_file).unwrap_or_default();
    let full = log.lines().filter(|l| l.contains("page store disk is full")).count();
    assert_eq!(full, 1, "one warning about the full disk:\n{log}");
    assert!(
        log.lines()
            .filter(|l| l.contains("WARN"))
            .all(|l| !l.contains("cannot cache page")),
        "no warning per page:\n{log}"
    );
    // Every byte still right, old files (refetched) included.
    for (path, bytes) in files.iter().step_by(5) {
        read_whole(&worker.address, path, bytes);
    }
    drop(cluster);
}

#[test]
fn a_full_tmpfs_page_store_keeps_caching_with_buffered_writes() {
    let Some(mount) = Mount::tmpfs("8m") else { return };
    the_cache_keeps_turning_over(&mount, false);
}

#[test]
fn a_full_ext4_page_store_keeps_caching_with_direct_writes() {
    let Some(mount) = Mount::ext4(16) else { return };
    the_cache_keeps_turning_over(&mount, true);
}
