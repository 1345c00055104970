//! A bounded cache of read-only mappings of page files, so hot pages are verified and served
//! straight from the OS page cache: no `pread` copy, and no map/unmap (with its TLB
//! shoot-downs) per read. Entries are keyed by page and generation, so a replaced page never
//! answers with its predecessor's mapping; evicted and deleted pages are dropped from here.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::PageKey;

/// A mapping shared by the cache and every `Bytes` handed out from it.
pub(crate) struct SharedMap(pub Arc<memmap2::Mmap>);

impl AsRef<[u8]> for SharedMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Default)]
struct Inner {
    maps: HashMap<PageKey, (u32, Arc<memmap2::Mmap>)>,
    /// Insertion order, for first-in-first-out eviction (may hold keys already removed).
    order: VecDeque<PageKey>,
}

pub(crate) struct MappedPages {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl MappedPages {
    pub fn new(capacity: usize) -> MappedPages {
        MappedPages {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub fn get(&self, key: &PageKey, gen: u32) -> Option<Arc<memmap2::Mmap>> {
        let inner = self.inner.lock();
        match inner.maps.get(key) {
            Some((mapped_gen, map)) if *mapped_gen == gen => Some(Arc::clone(map)),
            _ => None,
        }
    }

    pub fn insert(&self, key: PageKey, gen: u32, map: Arc<memmap2::Mmap>) {
        if !self.enabled() {
            return;
        }
        // Mappings dropped here are unmapped outside the lock.
        let mut dropped = Vec::new();
        {
            let mut inner = self.inner.lock();
            if inner.maps.insert(key, (gen, map)).is_none() {
                inner.order.push_back(key);
            }
            while inner.maps.len() > self.capacity {
                let Some(oldest) = inner.order.pop_front() else {
                    break;
                };
                if let Some(entry) = inner.maps.remove(&oldest) {
                    dropped.push(entry);
                }
            }
            // Keep the order queue from growing without bound with removed keys.
            if inner.order.len() > 2 * self.capacity.max(16) {
                let Inner { maps, order } = &mut *inner;
                order.retain(|key| maps.contains_key(key));
            }
        }
        drop(dropped);
    }

    pub fn remove(&self, key: &PageKey) {
        let removed = self.inner.lock().maps.remove(key);
        drop(removed);
    }

    pub fn len(&self) -> usize {
        self.inner.lock().maps.len()
    }
}
