//! Heap memory of the index per cached page, measured with a counting allocator.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;

/// Counts the bytes allocated minus freed by the current thread, so that tests running in
/// parallel do not disturb each other's measurements.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    // `try_with`: the thread-local may be gone while a thread shuts down.
    let _ = LIVE.try_with(|l| l.set(l.get() + n));
}

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes per page after putting `pages` one-byte pages, `per_file` pages per file.
fn measure(pages: u64, per_file: u64) -> f64 {
    let tmp = tempfile::tempdir().unwrap();
    let store = open1(tmp.path(), 1 << 40, 1 << 20);
    let before = LIVE.with(Cell::get);
    for i in 0..pages {
        store.put(&key(fid((i / per_file) as u32), i % per_file), b"x").unwrap();
    }
    let after = LIVE.with(Cell::get);
    assert_eq!(store.stats().pages, pages);
    let per_page = (after - before) as f64 / pages as f64;
    println!("{pages} pages, {per_file} per file: {per_page:.1} heap bytes per page");
    per_page
}

#[test]
fn index_memory_per_page_of_large_files() {
    assert!(measure(2000, 100) < 150.0);
}

#[test]
fn index_memory_per_page_of_single_page_files() {
    assert!(measure(2000, 1) < 250.0);
}

/// The figures in docs/pagestore.md: `cargo test -p hoard-pagestore --release --test memory
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn index_memory_sweep() {
    for per_file in [1000, 100, 1] {
        for pages in [10_000, 16_000, 16_500, 40_000, 66_000] {
            measure(pages, per_file);
        }
    }
}
