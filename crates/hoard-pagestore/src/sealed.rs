//! Page bytes that may live in a sealed in-memory file, so that a server can hand them to the
//! kernel with `sendfile` instead of copying them through user space.
//!
//! The memory tier keeps each verified page in its own `memfd`, sealed against writes, growth
//! and shrinking: the kernel itself guarantees the bytes stay the ones that were checked, and
//! pages the socket still references after the tier drops a page stay valid (the file's pages
//! are reference-counted), so an eviction never changes bytes in flight.

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::{Deref, Range};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// How many sealed files (one descriptor each) a memory tier may keep open.
#[derive(Clone)]
pub(crate) struct SealedBudget {
    limit: usize,
    live: Arc<AtomicUsize>,
}

impl SealedBudget {
    pub(crate) fn new(limit: usize) -> SealedBudget {
        SealedBudget {
            limit,
            live: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Half the soft open-file limit, so pages never take the descriptors that sockets and
    /// page files need.
    pub(crate) fn from_open_file_limit() -> SealedBudget {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur
        } else {
            0
        };
        SealedBudget::new(usize::try_from(soft / 2).unwrap_or(usize::MAX))
    }

    fn take(&self) -> io::Result<Slot> {
        if self.live.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::other(format!(
                "{} sealed page files are open already (half the open-file limit)",
                self.limit
            )));
        }
        Ok(Slot(Arc::clone(&self.live)))
    }
}

/// One place in a budget, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A sealed in-memory file holding one page, and a read-only mapping of it.
pub(crate) struct SealedPage {
    file: File,
    map: memmap2::Mmap,
    _slot: Slot,
}

impl SealedPage {
    /// Copies `data` (non-empty) into a new sealed in-memory file, within `budget`.
    pub(crate) fn new(data: &[u8], budget: &SealedBudget) -> io::Result<SealedPage> {
        debug_assert!(!data.is_empty(), "an empty page needs no file");
        let slot = budget.take()?;
        // SAFETY: the name is a valid C string; the returned descriptor is checked below.
        let fd = unsafe { libc::memfd_create(c"hoard-page".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.write_all_at(data, 0)?;
        let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: plain fcntl on a descriptor we own.
        if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the file is sealed against writes and size changes, so the mapping's bytes
        // cannot change or disappear under it.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
        Ok(SealedPage { file, map, _slot: slot })
    }
}

/// Lets `Bytes` share the mapping without a copy.
struct SealedOwner(Arc<SealedPage>);

impl AsRef<[u8]> for SealedOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0.map
    }
}

/// Verified bytes of a page (or of part of one). When they come from the memory tier they
/// also name the sealed file holding them ([`PageBytes::sealed_file`]).
#[derive(Clone)]
pub struct PageBytes {
    bytes: Bytes,
    /// The sealed file and the offset of `bytes` in it.
    sealed: Option<(Arc<SealedPage>, u64)>,
}

impl PageBytes {
    pub(crate) fn from_sealed(page: SealedPage) -> PageBytes {
        let page = Arc::new(page);
        PageBytes {
            bytes: Bytes::from_owner(SealedOwner(Arc::clone(&page))),
            sealed: Some((page, 0)),
        }
    }

    /// The bytes at `range` of these.
    pub fn slice(&self, range: Range<usize>) -> PageBytes {
        let sealed = self
            .sealed
            .as_ref()
            .map(|(page, offset)| (Arc::clone(page), offset + range.start as u64));
        PageBytes {
            bytes: self.bytes.slice(range),
            sealed,
        }
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The sealed in-memory file holding these bytes and their offset in it, when they come
    /// from the memory tier. The file never changes, so sending `len()` bytes from that offset
    /// (with `sendfile`) sends exactly these bytes; keep `self` alive until the call returns.
    pub fn sealed_file(&self) -> Option<(BorrowedFd<'_>, u64)> {
        self.sealed.as_ref().map(|(page, offset)| (page.file.as_fd(), *offset))
    }
}

impl From<Bytes> for PageBytes {
    fn from(bytes: Bytes) -> PageBytes {
        PageBytes { bytes, sealed: None }
    }
}

impl Deref for PageBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl PartialEq for PageBytes {
    fn eq(&self, other: &PageBytes) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for PageBytes {}

impl fmt::Debug for PageBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageBytes")
            .field("len", &self.bytes.len())
            .field("sealed", &self.sealed.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_page_cannot_change_and_slices_name_their_offsets() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let page = PageBytes::from_sealed(SealedPage::new(&data, &SealedBudget::new(1)).unwrap());
        assert_eq!(&page[..], &data[..]);
        let part = page.slice(4096..9000);
        assert_eq!(&part[..], &data[4096..9000]);
        let (fd, offset) = part.sealed_file().expect("a tier page names its file");
        assert_eq!(offset, 4096);
        let file = File::from(fd.try_clone_to_owned().unwrap());
        let mut read = vec![0u8; part.len()];
        file.read_exact_at(&mut read, offset).unwrap();
        assert_eq!(read, &data[4096..9000], "the file holds the bytes at the named offset");
        let err = file
            .write_all_at(b"changed", 0)
            .expect_err("the file is sealed against writes");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        assert_eq!(file.set_len(1).unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert_eq!(&page[..], &data[..], "nothing changed");
        assert!(PageBytes::from(Bytes::from_static(b"x")).sealed_file().is_none());
    }

    #[test]
    fn sealed_files_stay_within_their_budget() {
        let budget = SealedBudget::new(2);
        let first = SealedPage::new(b"one", &budget).unwrap();
        let second = SealedPage::new(b"two", &budget).unwrap();
        let refused = SealedPage::new(b"three", &budget).err().expect("over the budget");
        assert!(refused.to_string().contains("sealed page files"), "{refused}");
        drop(first);
        let third = SealedPage::new(b"three", &budget).expect("a closed file gives its slot back");
        assert_eq!(&third.map[..], b"three");
        assert_eq!(&second.map[..], b"two");
        assert!(SealedBudget::from_open_file_limit().limit > 0);
    }
}
