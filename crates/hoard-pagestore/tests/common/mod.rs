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
