//! Reusable page-aligned buffers that file reads land in: the local UFS's page fills and the
//! page store's page reads (which use `pread`, never a mapping a truncation could turn into
//! SIGBUS). A fresh heap buffer per read would cost an allocation and the page faults of new
//! memory on every read; these buffers are kept and reused instead, one pool per process. They
//! are page-aligned (anonymous mappings), so the page store can write a filled page with
//! O_DIRECT without copying it into an aligned buffer first.
//!
//! Buffers come in power-of-two capacities from 64KiB; the pool keeps at most
//! [`POOLED_BYTES`] of them in all, per capacity class so that taking one is O(1). A buffer is
//! given back when the last `Bytes` made from it is dropped, on whatever thread that happens.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

/// Capacity of free buffers kept for reuse, in all; more are unmapped when dropped.
const POOLED_BYTES: usize = 64 << 20;
/// The smallest capacity (2^16 = 64KiB): fewer, larger mappings than one per 4KiB read, and
/// only the pages a read touches take memory.
const MIN_SHIFT: u32 = 16;
/// Capacity classes 2^16 ..= 2^32 (the largest page is `u32::MAX` bytes).
const CLASSES: usize = 17;

struct Pool {
    free: [Mutex<Vec<memmap2::MmapMut>>; CLASSES],
    /// Capacity of the buffers in `free`.
    bytes: AtomicUsize,
}

static POOL: Pool = Pool {
    free: [const { Mutex::new(Vec::new()) }; CLASSES],
    bytes: AtomicUsize::new(0),
};

/// The class of a buffer for `len` bytes.
fn class_of(len: usize) -> usize {
    let shift = len.max(1 << MIN_SHIFT).next_power_of_two().trailing_zeros();
    (shift - MIN_SHIFT) as usize
}

/// A buffer of at least `len` bytes; zero-filled the first time it is used, holding an
/// earlier read's bytes after that (callers overwrite `0..len` before freezing).
pub struct PooledBuffer {
    map: Option<memmap2::MmapMut>,
    len: usize,
}

impl PooledBuffer {
    /// A buffer for `len` bytes: a reused one when the pool has one of its class.
    pub fn take(len: usize) -> std::io::Result<PooledBuffer> {
        if len == 0 {
            return Ok(PooledBuffer { map: None, len });
        }
        let class = class_of(len);
        let reused = POOL.free.get(class).and_then(|free| free.lock().pop());
        let map = match reused {
            Some(map) => {
                POOL.bytes.fetch_sub(map.len(), Ordering::Relaxed);
                map
            }
            // Anonymous mappings are page-aligned.
            None => memmap2::MmapMut::map_anon(1usize << (class as u32 + MIN_SHIFT))?,
        };
        debug_assert!(map.len() >= len);
        Ok(PooledBuffer { map: Some(map), len })
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self.map.as_mut() {
            Some(map) => &mut map[..self.len],
            None => &mut [],
        }
    }

    /// The first `len` bytes as `Bytes`; the buffer goes back to the pool when the last of them
    /// (and of their slices) is dropped.
    pub fn freeze(mut self, len: usize) -> Bytes {
        debug_assert!(len <= self.len);
        self.len = len.min(self.len);
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        match self.map.as_ref() {
            Some(map) => &map[..self.len],
            None => &[],
        }
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let Some(map) = self.map.take() else { return };
        let capacity = map.len();
        let class = class_of(capacity);
        // Reserve room in the pool's budget first, so concurrent drops cannot overshoot it.
        let kept = POOL
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bytes| {
                (bytes + capacity <= POOLED_BYTES).then_some(bytes + capacity)
            })
            .is_ok();
        match POOL.free.get(class) {
            Some(free) if kept => free.lock().push(map),
            // Over the budget: unmap (outside any lock).
            _ => {
                if kept {
                    POOL.bytes.fetch_sub(capacity, Ordering::Relaxed);
                }
                drop(map);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_sized_by_class_and_reused() {
        assert_eq!(class_of(0), 0);
        assert_eq!(class_of(64 << 10), 0);
        assert_eq!(class_of((64 << 10) + 1), 1);
        assert_eq!(class_of(1 << 20), 4);
        assert_eq!(class_of(u32::MAX as usize), CLASSES - 1);
        // A class no other test of this crate uses (8MiB), so the pool's state is ours.
        let len = (4 << 20) + 5;
        let mut first = PooledBuffer::take(len).unwrap();
        first.as_mut_slice().fill(7);
        let bytes = first.freeze(len);
        assert_eq!(bytes.len(), len);
        assert_eq!(bytes.as_ptr().align_offset(4096), 0);
        let address = bytes.as_ptr();
        let part = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(&part[..], &[7u8; 10]);
        drop(part);
        // Given back when the last slice went: the same buffer again, earlier bytes and all.
        let mut second = PooledBuffer::take(6 << 20).unwrap();
        assert_eq!(second.as_mut_slice().as_ptr(), address.cast_mut());
        assert_eq!(second.as_mut_slice()[0], 7);
    }
}
