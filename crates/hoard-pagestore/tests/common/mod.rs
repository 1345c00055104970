//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use hoard_pagestore::{FileId, PageKey, PageStore, PageStoreConfig};

pub fn key(file: FileId, index: u64) -> PageKey {
    PageKey { file, index }
}

pub fn fid(n: u32) -> FileId {
    FileId::new(&format!("/data/file-{n}"), "v1")
}

/// Deterministic bytes for a page: every put of a key writes the same bytes.
pub fn page_data(key: &PageKey, len: usize) -> Vec<u8> {
    let mut x = (key.file.0 as u64) ^ ((key.file.0 >> 64) as u64) ^ key.index.wrapping_mul(31);
    (0..len)
        .map(|_| {
            x = splitmix(x);
            x as u8
        })
        .collect()
}

pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic PRNG for tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = splitmix(self.0);
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn config(dirs: &[PathBuf], capacities: &[u64], page_size: u64) -> PageStoreConfig {
    PageStoreConfig {
        dirs: dirs.to_vec(),
        capacities: capacities.to_vec(),
        page_size,
    }
}

pub fn open1(dir: &Path, capacity: u64, page_size: u64) -> PageStore {
    PageStore::open(config(&[dir.to_path_buf()], &[capacity], page_size)).unwrap()
}

/// All regular files under `path`, recursively.
pub fn files_under(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(path) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Page files of a store dir (everything under `pages-*`).
pub fn page_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("pages-") {
            out.extend(files_under(&e.path()));
        }
    }
    out
}

/// The file of a page in one store dir, if any.
pub fn find_page_file(root: &Path, page_size: u64, key: &PageKey) -> Option<PathBuf> {
    let dir = root
        .join(format!("pages-{page_size}"))
        .join(format!("{:02x}", (key.file.0 >> 120) as u8))
        .join(key.file.to_string());
    let prefix = format!("{}_", key.index);
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(found.len() <= 1, "several files for {key:?}: {found:?}");
    found.pop()
}

/// Sum of the page lengths of the page files on disk (from their names), checking that each
/// file is its page plus an 8-byte checksum per 64 KiB chunk.
pub fn disk_bytes(roots: &[PathBuf]) -> u64 {
    roots
        .iter()
        .flat_map(|r| page_files(r))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let len: u64 = name.split('_').nth(1).unwrap().parse().unwrap();
            assert_eq!(fs::metadata(&p).unwrap().len(), file_len(len), "{p:?}");
            len
        })
        .sum()
}

/// Length of the file of a page of `len` bytes.
pub fn file_len(len: u64) -> u64 {
    len + 8 * len.div_ceil(64 * 1024)
}

/// A small file system mounted for a test (tmpfs, or ext4 on a loop device), unmounted when
/// dropped, pass or fail. Needs root; `None` (with the reason printed) where mounting is
/// impossible.
pub struct Mount {
    pub path: PathBuf,
    image: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Mount {
    /// `mount -t tmpfs -o size=<size> tmpfs <temp dir>`.
    pub fn tmpfs(size: &str) -> Option<Mount> {
        let dir = tempfile::Builder::new().prefix("hoard-tmpfs").tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let options = format!("size={size}");
        mount(&["-t", "tmpfs", "-o", &options, "tmpfs"], &path)?;
        Some(Mount {
            path,
            image: None,
            _dir: dir,
        })
    }

    /// An ext4 file system of `mib` MiB in an image file, mounted through a loop device: a
    /// disk file system that takes O_DIRECT writes.
    pub fn ext4(mib: u64) -> Option<Mount> {
        let dir = tempfile::Builder::new().prefix("hoard-ext4").tempdir().unwrap();
        let path = dir.path().join("mnt");
        fs::create_dir(&path).unwrap();
        let image = std::env::temp_dir().join(format!(
            "hoard-ext4-{}-{}.img",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        ));
        fs::File::create(&image).unwrap().set_len(mib << 20).unwrap();
        let mkfs = std::process::Command::new("mkfs.ext4")
            // No blocks reserved for root (the tests run as root): the disk holds what df says.
            .args(["-q", "-F", "-m", "0"])
            .arg(&image)
            .output();
        if !mkfs.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("skipping: mkfs.ext4 failed: {mkfs:?}");
            let _ = fs::remove_file(&image);
            return None;
        }
        let image_arg = image.to_string_lossy().to_string();
        if mount(&["-o", "loop", &image_arg], &path).is_none() {
            let _ = fs::remove_file(&image);
            return None;
        }
        Some(Mount {
            path,
            image: Some(image),
            _dir: dir,
        })
    }

    /// `mount -o remount,size=<size>` (tmpfs): more or less room, pages kept.
    pub fn resize(&self, size: &str) {
        let options = format!("remount,size={size}");
        let out = std::process::Command::new("mount")
            .args(["-o", &options])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount: {out:?}");
    }
}

fn mount(args: &[&str], at: &Path) -> Option<()> {
    let out = std::process::Command::new("mount").args(args).arg(at).output();
    match out {
        Ok(out) if out.status.success() => Some(()),
        other => {
            eprintln!("skipping: cannot mount a small file system (mount {args:?}; this test needs root): {other:?}");
            None
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let out = std::process::Command::new("umount").arg(&self.path).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            // Still busy (a process of a failed test): detach it now, gone when released.
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).output();
        }
        if let Some(image) = &self.image {
            let _ = fs::remove_file(image);
        }
    }
}
