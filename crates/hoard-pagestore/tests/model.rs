//! Random operation sequences checked against a simple model of a one-dir LRU cache.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use hoard_pagestore::{PageKey, PageStore};
use proptest::prelude::*;

const PS: u64 = 16;
const CAPACITY: u64 = 64;

#[derive(Debug, Clone)]
enum Op {
    Put { file: u32, index: u64, len: usize },
    Get { file: u32, index: u64 },
    Contains { file: u32, index: u64 },
    Delete { file: u32 },
    Corrupt { file: u32, index: u64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let f = 0u32..3;
    let i = 0u64..5;
    prop_oneof![
        6 => (f.clone(), i.clone(), 0usize..=PS as usize)
            .prop_map(|(file, index, len)| Op::Put { file, index, len }),
        6 => (f.clone(), i.clone()).prop_map(|(file, index)| Op::Get { file, index }),
        1 => (f.clone(), i.clone()).prop_map(|(file, index)| Op::Contains { file, index }),
        1 => f.clone().prop_map(|file| Op::Delete { file }),
        1 => (f, i).prop_map(|(file, index)| Op::Corrupt { file, index }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct Entry {
    key: PageKey,
    data: Vec<u8>,
    /// When it was put: after a restart the LRU order is the put order.
    seq: u64,
    corrupt: bool,
}

/// Least recently used first.
#[derive(Default)]
struct Model {
    entries: Vec<Entry>,
    seq: u64,
    checksum_failures: u64,
}

impl Model {
    fn pos(&self, k: &PageKey) -> Option<usize> {
        self.entries.iter().position(|e| e.key == *k)
    }
    fn used(&self) -> u64 {
        self.entries.iter().map(|e| e.data.len() as u64).sum()
    }
}

fn open(dir: &Path) -> PageStore {
    open1(dir, CAPACITY, PS)
}

fn data_for(k: &PageKey, len: usize, salt: u64) -> Vec<u8> {
    let mut d = page_data(k, len);
    for (i, b) in d.iter_mut().enumerate() {
        *b ^= (salt as u8).wrapping_add(i as u8);
    }
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = open(tmp.path());
        let mut model = Model::default();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Put { file, index, len } => {
                    let k = key(fid(file), index);
                    // Different bytes on every put: a no-op put must not replace the page.
                    let data = data_for(&k, len, n as u64);
                    store.put(&k, &data).unwrap();
                    if model.pos(&k).is_none() {
                        while model.used() + len as u64 > CAPACITY {
                            model.entries.remove(0);
                        }
                        model.seq += 1;
                        model.entries.push(Entry { key: k, data, seq: model.seq, corrupt: false });
                    }
                }
                Op::Get { file, index } => {
                    let k = key(fid(file), index);
                    let got = store.get(&k).unwrap();
                    match model.pos(&k) {
                        Some(p) if model.entries[p].corrupt => {
                            prop_assert_eq!(got, None);
                            model.entries.remove(p);
                            model.checksum_failures += 1;
                        }
                        Some(p) => {
                            let e = model.entries.remove(p);
                            prop_assert_eq!(got.as_deref(), Some(&e.data[..]));
                            model.entries.push(e);
                        }
                        None => prop_assert_eq!(got, None),
                    }
                }
                Op::Contains { file, index } => {
                    let k = key(fid(file), index);
                    prop_assert_eq!(store.contains(&k), model.pos(&k).is_some());
                }
                Op::Delete { file } => {
                    let expected: u64 = model.entries.iter()
                        .filter(|e| e.key.file == fid(file))
                        .map(|e| e.data.len() as u64)
                        .sum();
                    prop_assert_eq!(store.delete_file(fid(file)).unwrap(), expected);
                    model.entries.retain(|e| e.key.file != fid(file));
                }
                Op::Corrupt { file, index } => {
                    let k = key(fid(file), index);
                    if let Some(p) = model.pos(&k) {
                        // (Flipping the same bit twice would repair it.)
                        if !model.entries[p].data.is_empty() && !model.entries[p].corrupt {
                            let path = find_page_file(tmp.path(), PS, &k).unwrap();
                            let mtime = fs::metadata(&path).unwrap().modified().unwrap();
                            let mut bytes = fs::read(&path).unwrap();
                            bytes[0] ^= 0x80;
                            fs::write(&path, bytes).unwrap();
                            // Keep the LRU position a restart would recover.
                            fs::OpenOptions::new().write(true).open(&path).unwrap()
                                .set_modified(mtime).unwrap();
                            model.entries[p].corrupt = true;
                        }
                    }
                }
                Op::Reopen => {
                    let failures = store.stats().checksum_failures;
                    prop_assert_eq!(failures, model.checksum_failures);
                    drop(store);
                    store = open(tmp.path());
                    model.checksum_failures = 0;
                    model.entries.sort_by_key(|e| e.seq);
                }
            }
            let s = store.stats();
            prop_assert!(s.used_bytes <= CAPACITY);
            prop_assert_eq!(s.used_bytes, model.used());
            prop_assert_eq!(s.pages, model.entries.len() as u64);
            prop_assert_eq!(s.checksum_failures, model.checksum_failures);
            prop_assert_eq!(s.missing_files, 0);
        }
        // Disk and index agree at the end.
        prop_assert_eq!(disk_bytes(&[tmp.path().to_path_buf()]), model.used());
        for f in 0..3 {
            let mut expected: Vec<u64> = model.entries.iter()
                .filter(|e| e.key.file == fid(f))
                .map(|e| e.key.index)
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(store.cached_pages(fid(f)), expected);
        }
    }
}
