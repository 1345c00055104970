//! Reusable, page-aligned buffers for reads of a local UFS.
//!
//! A worker filling a cold file reads it a page (1MiB by default) at a time. A fresh heap buffer
//! per page costs page faults and zeroing of new memory on every read; these buffers are kept
//! and reused instead. They are page-aligned, so the page store can write them with O_DIRECT
//! without copying them into an aligned buffer first.

use std::ops::Range;

use bytes::Bytes;
use parking_lot::Mutex;

/// Buffers kept for reuse, in bytes of capacity; more are freed when their bytes are dropped.
const POOLED_BYTES: usize = 64 << 20;
/// Smallest buffer size (reads are rounded up to a power of two, at least this).
const MIN_CAPACITY: usize = 64 << 10;

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

struct Pool {
    free: Vec<memmap2::MmapMut>,
    bytes: usize,
}

/// A buffer of at least `len` bytes, zero-filled the first time it is used and holding
/// earlier reads' bytes after that (callers overwrite `0..len`).
pub(crate) struct PooledBuffer {
    map: Option<memmap2::MmapMut>,
    len: usize,
}

impl PooledBuffer {
    /// A buffer for `len` bytes: a reused one when the pool has one of the right size.
    pub fn take(len: usize) -> std::io::Result<PooledBuffer> {
        let capacity = len.max(MIN_CAPACITY).next_power_of_two();
        let reused = {
            let mut pool = POOL.lock();
            let found = pool.free.iter().rposition(|map| map.len() == capacity);
            found.map(|index| {
                let map = pool.free.swap_remove(index);
                pool.bytes -= map.len();
                map
            })
        };
        let map = match reused {
            Some(map) => map,
            // Anonymous maps are page-aligned.
            None => memmap2::MmapMut::map_anon(capacity)?,
        };
        Ok(PooledBuffer { map: Some(map), len })
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self.map.as_mut() {
            Some(map) => &mut map[..self.len],
            None => &mut [],
        }
    }

    /// The first `len` bytes as `Bytes`; the buffer goes back to the pool when they are dropped.
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
        let mut pool = POOL.lock();
        if pool.bytes + map.len() <= POOLED_BYTES {
            pool.bytes += map.len();
            pool.free.push(map);
            return;
        }
        // The pool is full: unmap, after releasing the lock.
        drop(pool);
        drop(map);
    }
}

/// Reads `range` of `file` into a pooled buffer; fewer bytes than asked when the file ends.
pub(crate) fn read_range(file: &std::fs::File, range: Range<u64>) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt as _;
    let len = usize::try_from(range.end - range.start).map_err(std::io::Error::other)?;
    let mut buffer = PooledBuffer::take(len)?;
    let slice = buffer.as_mut_slice();
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut slice[filled..], range.start + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(buffer.freeze(filled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn reads_are_exact_aligned_and_reuse_buffers() {
        let mut file = tempfile::tempfile().expect("temp file");
        // Sizes in the 4MiB class, which no other test of this crate reads.
        let data: Vec<u8> = (0..3_500_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).expect("write");
        let first = read_range(&file, 1000..3_001_000).expect("read");
        assert_eq!(&first[..], &data[1000..3_001_000]);
        assert_eq!(first.as_ptr().align_offset(4096), 0);
        let address = first.as_ptr();
        drop(first);
        // The same size class again: the buffer just returned, its old bytes overwritten.
        let second = read_range(&file, 0..2_500_000).expect("read");
        assert_eq!(&second[..], &data[..2_500_000]);
        assert_eq!(second.as_ptr(), address);
        // Past the end: only what the file has.
        let tail = read_range(&file, 3_000_000..4_000_000).expect("read");
        assert_eq!(&tail[..], &data[3_000_000..]);
    }
}
