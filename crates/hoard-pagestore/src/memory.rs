//! The memory tier: whole pages, verified against their checksums when they were copied in,
//! kept in process memory and served without hashing them again. Each page lives in a sealed
//! in-memory file (`sealed.rs`), so a server can send it with `sendfile`; if one cannot be
//! created (out of descriptors), the page is kept on the heap instead.
//!
//! Verifying a 64KiB read costs more CPU than sending it (docs/benchmarks.md), and the OS page
//! cache cannot be trusted to keep verified bytes: the kernel may drop a clean page and read
//! it again from a disk that has since gone bad. Bytes copied into process memory after their
//! check stay what was checked. Entries are keyed by page and generation, so a replaced page
//! never answers with its predecessor's bytes; the page store removes evicted and deleted
//! pages from here. The cache is quick_cache's scan-resistant policy, so one pass over a large
//! dataset does not flush the hot pages.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use crate::sealed::{SealedBudget, SealedPage};
use crate::{PageBytes, PageKey};

#[derive(Clone)]
struct PageWeighter;

impl quick_cache::Weighter<PageKey, (u32, PageBytes)> for PageWeighter {
    fn weight(&self, _key: &PageKey, (_, bytes): &(u32, PageBytes)) -> u64 {
        // Empty pages still take an entry; weight 0 would make them unevictable.
        (bytes.len() as u64).max(1)
    }
}

type Cache = quick_cache::sync::Cache<PageKey, (u32, PageBytes), PageWeighter>;

const PAGES_PER_SHARD: usize = 4096;
const MAX_SHARDS: usize = 64;

pub(crate) struct MemoryPages {
    /// `None` when the tier is off (capacity 0).
    cache: Option<Cache>,
    page_size: u64,
    /// True when one more page would push another out (kept up to date on inserts and
    /// removals, which are rare, so reads need not add up the cache's shards).
    full: AtomicBool,
    sealed_budget: SealedBudget,
    warned_unsealed: AtomicBool,
}

impl MemoryPages {
    /// A tier of at most `capacity` bytes of pages of up to `page_size` bytes.
    pub fn new(capacity: u64, page_size: u64) -> MemoryPages {
        let cache = (capacity > 0).then(|| {
            let estimated_pages = usize::try_from(capacity / page_size.max(1))
                .unwrap_or(usize::MAX)
                .max(1);
            // Each shard gets an equal part of the capacity, and pages hash unevenly over
            // shards: with quick_cache's default (4 per core) a 1GiB tier of 1MiB pages held
            // only ~97% of its capacity, the rest churning. Thousands of pages per shard keep
            // the imbalance to a few percent; reads take a shard's lock shared, so few shards
            // cost little contention.
            let shards = (estimated_pages / PAGES_PER_SHARD).clamp(1, MAX_SHARDS);
            let options = quick_cache::OptionsBuilder::new()
                .estimated_items_capacity(estimated_pages)
                .weight_capacity(capacity)
                .shards(shards)
                .build();
            match options {
                Ok(options) => Cache::with_options(options, PageWeighter, Default::default(), Default::default()),
                // Only unset fields fail the builder; both are set above.
                Err(_) => Cache::with_weighter(estimated_pages, capacity, PageWeighter),
            }
        });
        MemoryPages {
            cache,
            page_size,
            full: AtomicBool::new(false),
            sealed_budget: SealedBudget::from_open_file_limit(),
            warned_unsealed: AtomicBool::new(false),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// The page's bytes, if this generation of it is held.
    pub fn get(&self, key: &PageKey, gen: u32) -> Option<PageBytes> {
        let (held_gen, bytes) = self.cache.as_ref()?.get(key)?;
        (held_gen == gen).then_some(bytes)
    }

    /// A tier copy of a verified page: a sealed in-memory file, or the heap bytes themselves
    /// when no such file can be made (with a warning, once).
    pub fn hold(&self, bytes: Bytes) -> PageBytes {
        if bytes.is_empty() {
            return PageBytes::from(bytes);
        }
        match SealedPage::new(&bytes, &self.sealed_budget) {
            Ok(page) => PageBytes::from_sealed(page),
            Err(err) => {
                if !self.warned_unsealed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %err, "cannot create a sealed memory file; keeping memory tier pages on the heap (served by copy)");
                }
                PageBytes::from(bytes)
            }
        }
    }

    /// Holds `bytes`, which the caller has just verified, as generation `gen` of the page.
    pub fn insert(&self, key: PageKey, gen: u32, bytes: PageBytes) {
        if let Some(cache) = &self.cache {
            cache.insert(key, (gen, bytes));
            self.update_full(cache);
        }
    }

    pub fn remove(&self, key: &PageKey) {
        if let Some(cache) = &self.cache {
            if cache.remove(key).is_some() {
                self.update_full(cache);
            }
        }
    }

    /// Whether a copy of one more page would push another one out.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    fn update_full(&self, cache: &Cache) {
        let full = cache.weight().saturating_add(self.page_size) > cache.capacity();
        self.full.store(full, Ordering::Relaxed);
    }

    /// Bytes of pages held.
    pub fn used_bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, Cache::weight)
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, Cache::capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileId;

    #[test]
    fn a_tier_holds_its_whole_capacity() {
        let page_size = 4096;
        let pages = 2048u64;
        let tier = MemoryPages::new(pages * page_size, page_size);
        let file = FileId::new("/data/a", "v1");
        for index in 0..pages {
            let bytes = PageBytes::from(Bytes::from(vec![index as u8; page_size as usize]));
            tier.insert(PageKey { file, index }, 1, bytes);
        }
        let held = (0..pages)
            .filter(|&index| tier.get(&PageKey { file, index }, 1).is_some())
            .count() as u64;
        assert_eq!(held, pages, "every page fits: none pushed out by an uneven shard");
        assert_eq!(tier.used_bytes(), pages * page_size);
        assert!(tier.is_full());
        assert_eq!(tier.get(&PageKey { file, index: 7 }, 2), None, "another generation");
    }

    #[test]
    fn copies_are_sealed_files_until_the_budget_runs_out_then_heap_bytes() {
        let mut tier = MemoryPages::new(1 << 20, 4096);
        tier.sealed_budget = SealedBudget::new(1);
        let first = tier.hold(Bytes::from(vec![1u8; 4096]));
        assert!(first.sealed_file().is_some());
        let second = tier.hold(Bytes::from(vec![2u8; 4096]));
        assert!(second.sealed_file().is_none(), "over the budget: kept on the heap");
        assert_eq!(&second[..], &[2u8; 4096][..]);
        assert!(
            tier.hold(Bytes::new()).sealed_file().is_none(),
            "an empty page needs no file"
        );
        drop(first);
        assert!(tier.hold(Bytes::from(vec![3u8; 4096])).sealed_file().is_some());
    }
}
