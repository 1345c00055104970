//! The page file format: writing a page and reading (part of) it back verified.
//!
//! A page file is the page's bytes followed by a chunk table: one little-endian xxh3-64 per
//! 4 KiB chunk of the page (the last chunk may be shorter). The page's checksum, recorded in
//! the file name and the index, is the xxh3-64 of the chunk table. So the page's bytes sit at
//! offset 0 of the file, whole and page-aligned, and a read of part of a page verifies the
//! table and only the chunks it covers.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::ops::Range;
use std::path::Path;

use bytes::Bytes;

use hoard_common::buffers::PooledBuffer;

/// XXH3-64 (seed 0). twox-hash picks AVX2 at run time when the CPU has it: hashing is most of
/// the cost of a verified read, and the binary must still run on CPUs without it.
fn xxh3_64(data: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(data)
}

/// Bytes covered by one entry of the chunk table.
pub(crate) const CHUNK: usize = 4 * 1024;

/// Chunks in a page of `len` bytes.
pub(crate) fn chunks(len: u32) -> usize {
    (len as usize).div_ceil(CHUNK)
}

/// Length of the file of a page of `len` bytes.
pub(crate) fn file_len(len: u32) -> u64 {
    u64::from(len) + 8 * chunks(len) as u64
}

/// The chunk table of `data` and the page checksum (the table's xxh3-64).
pub(crate) fn chunk_table(data: &[u8]) -> (u64, Vec<u8>) {
    let mut table = Vec::with_capacity(8 * data.len().div_ceil(CHUNK));
    for chunk in data.chunks(CHUNK) {
        table.extend_from_slice(&xxh3_64(chunk).to_le_bytes());
    }
    (xxh3_64(&table), table)
}

/// Writes a page file at `path` (a new file: fails if it exists) through the OS page cache.
pub(crate) fn write(path: &Path, data: &[u8], table: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(data)?;
    f.write_all(table)
}

/// Alignment of the offsets, lengths and buffer addresses of direct writes: the largest
/// logical block size in common use.
const DIRECT_ALIGN: usize = 4096;

pub(crate) enum DirectWriteError {
    /// The file system refuses O_DIRECT (tmpfs, some FUSE and network file systems).
    Unsupported(io::Error),
    Io(io::Error),
}

/// Writes a page file at `path` (a new file: fails if it exists) with the block-aligned part of
/// the page's bytes bypassing the OS page cache (O_DIRECT), and the rest (a short last page's
/// tail, the chunk table) through it.
///
/// Why: a page filled from the UFS is already in the reader's hands; copying it into the page
/// cache as well costs the fill a second copy of every byte (and, on a local UFS, holds it in
/// memory twice). Readers that come later read it from the disk once, then from the page cache.
pub(crate) fn write_direct(path: &Path, data: &[u8], table: &[u8]) -> Result<(), DirectWriteError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::os::unix::io::AsRawFd as _;
    let unsupported = |e: io::Error| {
        if e.raw_os_error() == Some(libc::EINVAL) {
            DirectWriteError::Unsupported(e)
        } else {
            DirectWriteError::Io(e)
        }
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(unsupported)?;
    let aligned = data.len() - data.len() % DIRECT_ALIGN;
    let (head, tail) = data.split_at(aligned);
    if !head.is_empty() {
        if head.as_ptr().align_offset(DIRECT_ALIGN) == 0 {
            f.write_all(head).map_err(unsupported)?;
        } else {
            BOUNCE.with(|bounce| -> Result<(), DirectWriteError> {
                let mut bounce = bounce.borrow_mut();
                let buffer = bounce.get(head.len()).map_err(DirectWriteError::Io)?;
                buffer.copy_from_slice(head);
                f.write_all(buffer).map_err(unsupported)
            })?;
        }
    }
    // The rest is not block-sized: through the page cache.
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns (open for the whole call).
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above; only O_DIRECT is cleared.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(DirectWriteError::Io(io::Error::last_os_error()));
    }
    f.write_all(tail).map_err(DirectWriteError::Io)?;
    f.write_all(table).map_err(DirectWriteError::Io)
}

/// A block-aligned buffer for pages whose bytes are not aligned in memory, one per thread
/// (page writes run on blocking threads), grown to the largest page written and then reused.
struct Bounce(Option<memmap2::MmapMut>);

impl Bounce {
    fn get(&mut self, len: usize) -> io::Result<&mut [u8]> {
        if self.0.as_ref().is_some_and(|map| map.len() < len) {
            self.0 = None;
        }
        let map = match self.0.take() {
            Some(map) => map,
            // Anonymous maps are page-aligned, which is block-aligned.
            None => memmap2::MmapMut::map_anon(len)?,
        };
        Ok(&mut self.0.insert(map)[..len])
    }
}

thread_local! {
    static BOUNCE: std::cell::RefCell<Bounce> = const { std::cell::RefCell::new(Bounce(None)) };
}

pub(crate) enum ReadFailure {
    /// Missing or unreadable file: drop the page.
    Missing(io::Error),
    /// Wrong length or checksum: drop the page.
    Corrupt(String),
    /// Out of file descriptors or memory: not the page's fault, report an error.
    Transient(io::Error),
    /// A no-wait read found the bytes not in the OS page cache: retry with a blocking read.
    WouldBlock,
}

impl From<io::Error> for ReadFailure {
    fn from(e: io::Error) -> ReadFailure {
        // Everything else (EIO, EISDIR, ELOOP, ESPIPE, EAGAIN from a file that is no longer a
        // regular file...) is the page's fault: it is dropped and refetched.
        let transient = matches!(e.kind(), io::ErrorKind::OutOfMemory | io::ErrorKind::Interrupted)
            || matches!(
                e.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
            );
        if transient {
            ReadFailure::Transient(e)
        } else {
            ReadFailure::Missing(e)
        }
    }
}

/// Opens a page file for reading. `O_NOFOLLOW`: a page file replaced by a symbolic link is
/// refused (and dropped), never followed; `O_NONBLOCK`: one replaced by a FIFO cannot block
/// the open (regular files ignore the flag).
fn open(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

thread_local! {
    /// The chunk table of the page being read, reused by every read of the thread.
    static TABLE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads `range` (within `0..len`) of the page at `path` into a pooled buffer, verifying the
/// chunk table against `checksum` and every chunk the range touches against the table.
///
/// Page files are read, never mapped: something outside the store may truncate or rewrite a
/// file at any moment, which makes a read short or its bytes wrong (the page is then dropped),
/// where a mapping would raise SIGBUS and kill the process.
///
/// With `nowait`, the reads fail with [`ReadFailure::WouldBlock`] instead of waiting for the
/// disk when the bytes are not in the OS page cache (`preadv2` with `RWF_NOWAIT`), so an async
/// caller can serve cached pages inline and hand only real disk reads to a blocking thread.
pub(crate) fn read(
    path: &Path,
    len: u32,
    checksum: u64,
    range: Range<usize>,
    nowait: bool,
) -> Result<Bytes, ReadFailure> {
    debug_assert!(range.start <= range.end && range.end <= len as usize);
    let file = open(path)?;
    let len = len as usize;
    let table_len = 8 * chunks(len as u32);
    let first = range.start / CHUNK;
    let end_chunk = range.end.div_ceil(CHUNK).max(first);
    // Bytes of the body to read and verify: whole chunks.
    let body = first * CHUNK..(end_chunk * CHUNK).min(len);
    let mut buffer = PooledBuffer::take(body.len()).map_err(ReadFailure::Transient)?;
    TABLE.with(|table| {
        let mut table = table.borrow_mut();
        if table.len() < table_len {
            table.resize(table_len, 0);
        }
        let table = &mut table[..table_len];
        if body.end == len {
            // The table follows the page's last byte: one read for the body and the table.
            read_exact_at(&file, &mut [buffer.as_mut_slice(), table], body.start as u64, nowait)?;
        } else {
            read_exact_at(&file, &mut [table], len as u64, nowait)?;
            read_exact_at(&file, &mut [buffer.as_mut_slice()], body.start as u64, nowait)?;
        }
        verify(table, checksum, buffer.as_mut_slice(), first)
    })?;
    Ok(buffer
        .freeze(body.len())
        .slice(range.start - body.start..range.end - body.start))
}

/// Checks `table` against the page checksum and `body` (whole chunks from chunk `first` on)
/// against the table.
fn verify(table: &[u8], checksum: u64, body: &[u8], first: usize) -> Result<(), ReadFailure> {
    prefetch(&body[..body.len().min(CHUNK)]);
    let actual = xxh3_64(table);
    if actual != checksum {
        return Err(ReadFailure::Corrupt(format!(
            "chunk table checksum {actual:016x}, expected {checksum:016x}"
        )));
    }
    let mut chunks = body.chunks(CHUNK).enumerate().peekable();
    while let Some((i, chunk)) = chunks.next() {
        if let Some((_, next)) = chunks.peek() {
            prefetch(next);
        }
        let at = 8 * (first + i);
        let expected = u64::from_le_bytes(table[at..at + 8].try_into().expect("8 bytes"));
        let actual = xxh3_64(chunk);
        if actual != expected {
            return Err(ReadFailure::Corrupt(format!(
                "chunk {} checksum {actual:016x}, expected {expected:016x}",
                first + i
            )));
        }
    }
    Ok(())
}

/// Asks the CPU to start loading `chunk` into its caches. Hashing a chunk that is in DRAM
/// but not in cache stalls on each cache line; loading the next chunk while the current one
/// is hashed cut verification time by about a tenth (docs/benchmarks.md).
#[inline(always)]
fn prefetch(chunk: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in chunk.chunks(64) {
        // SAFETY: a prefetch is a hint that never faults, even for an unmapped address, and
        // SSE (which has it) is part of the x86-64 baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = chunk;
}

/// Fills `parts`, in order, from the file's bytes at `offset` on (`preadv2`, one call in the
/// usual case). A file too short for that is corrupt.
fn read_exact_at(file: &File, parts: &mut [&mut [u8]], offset: u64, nowait: bool) -> Result<(), ReadFailure> {
    use std::os::fd::AsRawFd;
    const MAX_PARTS: usize = 2;
    debug_assert!(parts.len() <= MAX_PARTS);
    let total: usize = parts.iter().map(|part| part.len()).sum();
    let mut done = 0;
    while done < total {
        // The parts still to fill, the first one from where the last read stopped.
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_PARTS];
        let mut count = 0;
        let mut skip = done;
        for part in parts.iter_mut().take(MAX_PARTS) {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            let rest = &mut part[skip..];
            iov[count] = libc::iovec {
                iov_base: rest.as_mut_ptr().cast(),
                iov_len: rest.len(),
            };
            count += 1;
            skip = 0;
        }
        let flags = if nowait { libc::RWF_NOWAIT } else { 0 };
        // SAFETY: every iovec points into a distinct part borrowed mutably for this call, and
        // preadv2 writes at most `iov_len` bytes into each.
        let n = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
                iov.as_ptr(),
                count as libc::c_int,
                (offset + done as u64) as libc::off_t,
                flags,
            )
        };
        match n {
            n if n > 0 => done += n as usize,
            0 => {
                return Err(ReadFailure::Corrupt(format!(
                    "file shorter than {}",
                    offset + total as u64
                )))
            }
            _ => {
                let e = io::Error::last_os_error();
                // EAGAIN: not cached. EOPNOTSUPP: the file system has no no-wait reads.
                if nowait && matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EOPNOTSUPP)) {
                    return Err(ReadFailure::WouldBlock);
                }
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_standard_xxh3() {
        // Pages written by any build (and by other XXH3 implementations) must verify.
        for len in [0usize, 1, 17, 240, 241, 1024, 16 * 1024, 1 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            assert_eq!(xxh3_64(&data), xxhash_rust::xxh3::xxh3_64(&data), "len {len}");
        }
    }
    use std::fs;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn reads_verify_only_what_they_need_and_catch_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        for len in [0, 1, 1000, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
            let d = data(len);
            let (checksum, table) = chunk_table(&d);
            assert_eq!(table.len(), 8 * chunks(len as u32));
            let path = tmp.path().join(format!("p{len}"));
            write(&path, &d, &table).unwrap();
            assert_eq!(fs::metadata(&path).unwrap().len(), file_len(len as u32));
            let ranges = [0..len, 0..0, len / 2..len, len / 3..len / 2, len.saturating_sub(1)..len];
            for r in ranges.clone() {
                let got =
                    read(&path, len as u32, checksum, r.clone(), false).unwrap_or_else(|_| panic!("read {len} {r:?}"));
                assert_eq!(&got[..], &d[r]);
            }
            assert!(matches!(
                read(&path, len as u32, checksum ^ 1, 0..len, false),
                Err(ReadFailure::Corrupt(_))
            ));
            if len > CHUNK {
                // Corrupt the last chunk: reads of the first chunk still succeed (they never
                // return the bad bytes), reads touching it fail.
                let mut bytes = fs::read(&path).unwrap();
                bytes[len - 1] ^= 1;
                fs::write(&path, &bytes).unwrap();
                let got = read(&path, len as u32, checksum, 0..100, false).ok().unwrap();
                assert_eq!(&got[..], &d[..100]);
                assert!(matches!(
                    read(&path, len as u32, checksum, len - 1..len, false),
                    Err(ReadFailure::Corrupt(_))
                ));
                assert!(matches!(
                    read(&path, len as u32, checksum, 0..len, false),
                    Err(ReadFailure::Corrupt(_))
                ));
            }
        }
        assert!(matches!(
            read(&tmp.path().join("none"), 1, 0, 0..1, false),
            Err(ReadFailure::Missing(_))
        ));
    }
}
