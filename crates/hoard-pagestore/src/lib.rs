//! The page store: fixed-size pages of cached files on local directories.
//!
//! CONTRACT (other crates code against these names; keep them stable). All methods are
//! blocking (file IO); async callers run them on a blocking thread. A `PageStore` is
//! `Send + Sync` and meant to be shared (in an `Arc`) by many threads.
//!
//! Design (details in docs/pagestore.md):
//! - every page is one file, `<dir>/pages-<page_size>/<ff>/<file id>/<index>_<len>_<checksum>_<gen>`:
//!   the page's bytes at offset 0, then a table of one xxh3-64 per 4 KiB chunk; the checksum
//!   in the name (and in the index) is the xxh3-64 of that table;
//! - pages are written to `<dir>/tmp/` and renamed into place, so a page is visible only once
//!   complete; `open` rebuilds the index by scanning the dirs (no separate database);
//! - an in-memory index (one mutex, no IO under it) maps keys to pages and keeps one LRU list
//!   per dir; a page's dir is chosen by weighted rendezvous hashing of its key;
//! - `get` / `get_range` read the page (or the chunks a range touches) with `pread` into a
//!   pooled buffer, verify them against the table and the table against the checksum, and
//!   return the bytes; a bad page is deleted and reported as absent. Page files are never
//!   mapped, so nothing done to them from outside can crash the process (only the memory
//!   tier's sealed in-memory copies are mapped);
//! - a dir whose file system fills up before its capacity gets a lower effective capacity
//!   (`space`), so eviction goes on.

mod files;
mod index;
mod layout;
mod memory;
mod page;
mod recover;
mod sealed;
mod space;

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tracing::{info, warn};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64_with_seed};

use index::{Index, Removed, State};
use layout::PageName;
use page::ReadFailure;
pub use sealed::PageBytes;
pub use space::DEFAULT_PROBE_INTERVAL;

#[derive(Debug, thiserror::Error)]
pub enum PageStoreError {
    #[error("invalid page store configuration: {0}")]
    Config(String),
    /// The cause is in the message, not a `source` too (error chains print each cause once).
    #[error("page store io error at {path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("page of {len} bytes is larger than the page size {page_size}")]
    PageTooLarge { len: usize, page_size: u64 },
    #[error("page of {len} bytes does not fit in any directory (largest capacity {capacity})")]
    NoSpace { len: usize, capacity: u64 },
}

/// Why one attempt of a put failed.
enum PutError {
    /// The dir had no room for the page after all (its effective capacity has been lowered):
    /// choose a dir and try again.
    Full(PageStoreError),
    Other(PageStoreError),
}

/// What a no-wait read ([`PageStore::get_range_nowait`]) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedRead {
    /// The bytes, verified.
    Hit(PageBytes),
    /// No such page (or it was corrupt and has been dropped).
    Absent,
    /// The page exists but its bytes are not in the OS page cache, or the read is due to copy
    /// the whole page into the memory tier: read it where blocking is fine.
    NotInMemory,
}

#[derive(Debug, Clone)]
pub struct PageStoreConfig {
    pub dirs: Vec<PathBuf>,
    /// Capacity in bytes of each dir (same length as `dirs`).
    pub capacities: Vec<u64>,
    pub page_size: u64,
}

/// The largest page size accepted (page lengths are kept as `u32` in the index).
pub const MAX_PAGE_SIZE: u64 = u32::MAX as u64;
/// The most directories a store can have.
pub const MAX_DIRS: usize = 255;

impl PageStoreConfig {
    /// Checks the configuration: as many capacities as dirs, at least one dir, a page size in
    /// `1..=MAX_PAGE_SIZE`, every capacity at least one page.
    pub fn validate(&self) -> Result<(), PageStoreError> {
        let err = |m: String| Err(PageStoreError::Config(m));
        if self.dirs.is_empty() {
            return err("no directories".into());
        }
        if self.dirs.len() > MAX_DIRS {
            return err(format!("{} directories, at most {MAX_DIRS}", self.dirs.len()));
        }
        if self.dirs.len() != self.capacities.len() {
            return err(format!(
                "{} directories but {} capacities",
                self.dirs.len(),
                self.capacities.len()
            ));
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            return err(format!("page size {} must be in 1..={MAX_PAGE_SIZE}", self.page_size));
        }
        for (dir, &cap) in self.dirs.iter().zip(&self.capacities) {
            if cap < self.page_size {
                return err(format!(
                    "capacity {cap} of {} is smaller than the page size {}",
                    dir.display(),
                    self.page_size
                ));
            }
        }
        for (i, a) in self.dirs.iter().enumerate() {
            if self.dirs[..i].contains(a) {
                return err(format!("directory {} is listed twice", a.display()));
            }
        }
        Ok(())
    }
}

/// Identifies one version of one file: a hash of the Hoard path and the UFS version, so a
/// rewritten file never shares pages with its old self.
///
/// `FileId::new(path, version)` is xxh3-128 (seed 0) of
/// `len(path) as u64 LE ‖ path ‖ len(version) as u64 LE ‖ version` (UTF-8 bytes): the length
/// prefixes make the encoding unambiguous whatever bytes the strings contain.
/// `Display` prints it as 32 lowercase hex digits (as in page directory names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u128);

impl FileId {
    pub fn new(path: &str, version: &str) -> FileId {
        let mut buf = Vec::with_capacity(16 + path.len() + version.len());
        buf.extend_from_slice(&(path.len() as u64).to_le_bytes());
        buf.extend_from_slice(path.as_bytes());
        buf.extend_from_slice(&(version.len() as u64).to_le_bytes());
        buf.extend_from_slice(version.as_bytes());
        FileId(xxh3_128(&buf))
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageKey {
    pub file: FileId,
    pub index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageStoreStats {
    /// Bytes of complete pages plus bytes reserved by puts in progress (never above
    /// `capacity_bytes`).
    pub used_bytes: u64,
    /// The configured capacity.
    pub capacity_bytes: u64,
    /// What the dirs may hold now: the configured capacity, less where a file system filled up
    /// first (see docs/pagestore.md, "When the disk is full").
    pub effective_capacity_bytes: u64,
    /// Complete pages.
    pub pages: u64,
    /// Pages evicted to make room (not counting `delete_file` or corrupt pages).
    pub evictions: u64,
    /// Pages dropped on read because their length or checksum did not match.
    pub checksum_failures: u64,
    /// Pages dropped on read because their file was missing or unreadable.
    pub missing_files: u64,
    /// `get`s that returned a page.
    pub hits: u64,
    /// Of `hits`, those served from the memory tier.
    pub memory_hits: u64,
    /// Pages copied into the memory tier.
    pub memory_copies: u64,
    /// Bytes of pages held in the memory tier, and its capacity (0 when off).
    pub memory_used_bytes: u64,
    pub memory_capacity_bytes: u64,
    /// `get`s that returned `None` (absent, being written, or dropped as corrupt).
    pub misses: u64,
    /// Pages written by `put` (puts of a key already present or being written excluded).
    pub puts: u64,
    /// Pages found on disk by `open`.
    pub recovered_pages: u64,
    /// Entries deleted by `open`: temp files, unparseable names, truncated pages, duplicates.
    pub recovery_discarded: u64,
    /// One entry per configured dir, in configuration order.
    pub dirs: Vec<DirStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirStats {
    pub path: PathBuf,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    pub effective_capacity_bytes: u64,
    pub pages: u64,
}

struct Dir {
    root: PathBuf,
    pages: PathBuf,
    tmp: PathBuf,
    /// The configured and the effective capacity.
    space: space::DirSpace,
    /// Page bytes are written with O_DIRECT (turned off for good when the file system
    /// refuses it).
    direct_writes: AtomicBool,
}

#[derive(Default)]
struct Counters {
    checksum_failures: AtomicU64,
    missing_files: AtomicU64,
    hits: AtomicU64,
    memory_hits: AtomicU64,
    memory_copies: AtomicU64,
    misses: AtomicU64,
    puts: AtomicU64,
}

pub struct PageStore {
    page_size: u64,
    dirs: Vec<Dir>,
    index: Mutex<Index>,
    /// Signalled when a put finishes, so puts waiting for space held by pending pages retry.
    put_done: Condvar,
    counters: Counters,
    recovered_pages: u64,
    recovery_discarded: u64,
    /// Some dir is below its configured capacity (its file system filled up first).
    limited: AtomicBool,
    /// How often a limited dir looks for room again.
    probe_interval: Duration,
    /// Verified copies of hot pages in process memory (see `set_memory_capacity`).
    memory: memory::MemoryPages,
    /// flock'ed lock files, released on drop.
    _locks: Vec<File>,
}

impl fmt::Debug for PageStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageStore")
            .field("page_size", &self.page_size)
            .field(
                "dirs",
                &self
                    .dirs
                    .iter()
                    .map(|d| (&d.root, d.space.configured))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// While the memory tier is full, a page earns a copy only after this many pages' worth of
/// reads (1 while there is room).
const FULL_TIER_READS_PER_COPY: usize = 4;

/// How many times a put writes its page again after the file system ran out of room (each
/// time with the dir's effective capacity lowered by at least the page's length, and pages
/// evicted accordingly).
const NO_SPACE_ATTEMPTS: usize = 32;

fn io_err(path: &Path, cause: io::Error) -> PageStoreError {
    PageStoreError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

impl PageStore {
    /// Opens (creating dirs as needed) and recovers the index of pages already on disk.
    ///
    /// Each dir is locked (`flock` on `<dir>/pagestore.lock`) for the store's lifetime, so a
    /// second store on the same dir fails with `Config`. Leftover temp files, unparseable
    /// entries, pages whose length does not match their name and pages of another page size
    /// are deleted; duplicates keep the newest; the LRU order is recovered from modification
    /// times (oldest evicted first); dirs over capacity are evicted down to it.
    pub fn open(config: PageStoreConfig) -> Result<PageStore, PageStoreError> {
        config.validate()?;
        let page_size = config.page_size;
        let mut prepared = Vec::with_capacity(config.dirs.len());
        let mut discarded = 0;
        for root in &config.dirs {
            let p = recover::prepare(root, page_size)?;
            discarded += p.discarded;
            prepared.push(p);
        }
        // Scan the dirs in parallel (they are usually separate disks).
        let scans: Vec<recover::Scan> = std::thread::scope(|s| {
            let handles: Vec<_> = prepared
                .iter()
                .enumerate()
                .map(|(i, p)| s.spawn(move || recover::scan(&p.pages, page_size, i as u8)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("page store scan panicked"))
                .collect()
        });
        let mut found = Vec::new();
        for scan in scans {
            discarded += scan.discarded;
            found.extend(scan.found);
        }

        let dirs: Vec<Dir> = config
            .dirs
            .iter()
            .zip(&config.capacities)
            .zip(&prepared)
            .map(|((root, &capacity), p)| Dir {
                root: root.clone(),
                pages: p.pages.clone(),
                tmp: p.tmp.clone(),
                space: space::DirSpace::new(capacity),
                direct_writes: AtomicBool::new(false),
            })
            .collect();

        // Oldest first, so that inserting each as most recently used recreates the LRU order.
        found.sort_by_key(|a| (a.key, a.mtime, a.name.gen, a.dir));
        let mut unique: Vec<recover::Found> = Vec::with_capacity(found.len());
        for f in found {
            if let Some(last) = unique.last_mut().filter(|l| l.key == f.key) {
                // Same page twice (a crash between writing a page and deleting its old copy,
                // or dirs reconfigured): keep the newest.
                let old = std::mem::replace(last, f);
                let path = layout::page_path(&dirs[old.dir as usize].pages, old.key.file, &old.name);
                warn!(path = %path.display(), "deleting duplicate page");
                recover::discard(&path);
                discarded += 1;
            } else {
                unique.push(f);
            }
        }
        unique.sort_by_key(|a| (a.mtime, a.name.gen));
        let first_gen = unique.iter().map(|f| f.name.gen).max().map_or(0, |g| g.wrapping_add(1));
        let mut index = Index::new(&config.capacities, first_gen);
        for f in &unique {
            index.insert(&f.key, f.name, f.dir, State::Complete);
        }
        let recovered_pages = unique.len() as u64;
        let mut evicted = Vec::new();
        for d in 0..dirs.len() {
            index.shrink_to_capacity(d as u8, &mut evicted);
        }
        index.evictions = 0;

        let store = PageStore {
            page_size,
            dirs,
            index: Mutex::new(index),
            put_done: Condvar::new(),
            counters: Counters::default(),
            recovered_pages,
            recovery_discarded: discarded,
            limited: AtomicBool::new(false),
            probe_interval: space::DEFAULT_PROBE_INTERVAL,
            memory: memory::MemoryPages::new(0, page_size),
            _locks: prepared.into_iter().map(|p| p.lock).collect(),
        };
        if !evicted.is_empty() {
            info!(pages = evicted.len(), "evicting recovered pages over capacity");
        }
        store.delete_removed(&evicted);
        let stats = store.stats();
        info!(
            pages = stats.pages,
            used_bytes = stats.used_bytes,
            capacity_bytes = stats.capacity_bytes,
            discarded,
            "page store opened"
        );
        Ok(store)
    }

    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// The page's bytes, verified against its checksum. A corrupt page is deleted, counted in
    /// `checksum_failures` (wrong length or checksum) or `missing_files` (missing or
    /// unreadable file), and reported as absent so the caller refetches it.
    ///
    /// Marks the page most recently used. Errors only on resource exhaustion (file
    /// descriptors, memory); every other failure drops the page and returns `None`.
    pub fn get(&self, key: &PageKey) -> Result<Option<PageBytes>, PageStoreError> {
        self.get_range(key, 0..u64::MAX)
    }

    /// Part of a page: the bytes at `range` within the page, with `range.end` clamped to the
    /// page's length (so fewer bytes, or none, come back if the page is shorter). Verifies
    /// only the page's chunk table and the 4 KiB chunks the range touches, so a small read
    /// of a large page costs a small read. Otherwise like `get`.
    pub fn get_range(&self, key: &PageKey, range: Range<u64>) -> Result<Option<PageBytes>, PageStoreError> {
        match self.read(key, range, false)? {
            CachedRead::Hit(bytes) => Ok(Some(bytes)),
            CachedRead::Absent | CachedRead::NotInMemory => Ok(None),
        }
    }

    /// Like `get_range`, but never waits for the disk: when the page's bytes are not in the
    /// OS page cache the answer is [`CachedRead::NotInMemory`] and the caller retries with
    /// `get_range` on a thread that may block. Lets an async server answer hot reads inline,
    /// without a hand-off to a blocking thread, which costs more than the read itself.
    pub fn get_range_nowait(&self, key: &PageKey, range: Range<u64>) -> Result<CachedRead, PageStoreError> {
        self.read(key, range, true)
    }

    fn read(&self, key: &PageKey, range: Range<u64>, nowait: bool) -> Result<CachedRead, PageStoreError> {
        // A full tier makes room for each copy by dropping another page; asking for more
        // reads first keeps a hot set just larger than the tier from churning through it.
        let reads_per_copy = if self.memory.is_full() {
            FULL_TIER_READS_PER_COPY
        } else {
            1
        };
        let found = {
            let mut idx = self.index.lock();
            match idx.lookup(key) {
                Some(s) if idx.slot(s).state == State::Complete => {
                    idx.touch(s);
                    let slot = *idx.slot(s);
                    // The range clamped to the page's length, as offsets in the page.
                    let end = range.end.min(u64::from(slot.len));
                    let within = range.start.min(end) as usize..end as usize;
                    let chunks = within.end.div_ceil(page::CHUNK) - within.start / page::CHUNK;
                    let promote = self.memory.enabled() && idx.note_read(s, chunks, reads_per_copy, !nowait);
                    Some((slot.dir, slot.name(), within, promote))
                }
                _ => None,
            }
        };
        let Some((dir, name, within, promote)) = found else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(CachedRead::Absent);
        };
        if let Some(page) = self.memory.get(key, name.gen) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(CachedRead::Hit(page.slice(within)));
        }
        let path = layout::page_path(&self.dirs[dir as usize].pages, key.file, &name);
        if promote && nowait {
            // Copying a whole page takes a few hundred microseconds: not on an async thread,
            // where it would hold up every other connection it serves.
            return Ok(CachedRead::NotInMemory);
        }
        if promote {
            return self.read_into_memory(key, &name, &path, within);
        }
        match page::read(&path, name.len, name.checksum, within, nowait) {
            Ok(bytes) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Ok(CachedRead::Hit(bytes.into()))
            }
            Err(failure) => self.read_failed(key, name.gen, &path, failure),
        }
    }

    /// Reads and verifies the whole page into process memory, keeps it in the memory tier,
    /// and serves `range` of it. Blocking.
    fn read_into_memory(
        &self,
        key: &PageKey,
        name: &PageName,
        path: &Path,
        range: Range<usize>,
    ) -> Result<CachedRead, PageStoreError> {
        match page::read(path, name.len, name.checksum, 0..name.len as usize, false) {
            Ok(bytes) => {
                self.counters.memory_copies.fetch_add(1, Ordering::Relaxed);
                let page = self.memory.hold(bytes);
                self.memory.insert(*key, name.gen, page.clone());
                // Evicted or deleted meanwhile: don't hold its bytes.
                if !self.holds(key, name.gen) {
                    self.memory.remove(key);
                }
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Ok(CachedRead::Hit(page.slice(range)))
            }
            Err(failure) => self.read_failed(key, name.gen, path, failure),
        }
    }

    /// True when the index holds this very page (same generation), complete.
    fn holds(&self, key: &PageKey, gen: u32) -> bool {
        let idx = self.index.lock();
        idx.lookup(key)
            .is_some_and(|s| idx.slot(s).state == State::Complete && idx.slot(s).gen == gen)
    }

    fn read_failed(
        &self,
        key: &PageKey,
        gen: u32,
        path: &Path,
        failure: ReadFailure,
    ) -> Result<CachedRead, PageStoreError> {
        match failure {
            ReadFailure::WouldBlock => Ok(CachedRead::NotInMemory),
            ReadFailure::Transient(e) => Err(io_err(path, e)),
            failure => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                self.drop_bad_page(key, gen, path, failure);
                Ok(CachedRead::Absent)
            }
        }
    }

    /// Keeps verified copies of hot pages, up to `bytes` in all, in process memory and serves
    /// them without verifying them again. A page earns its copy once readers have read as
    /// many of its 4KiB chunks as it has (so copying costs at most as much hashing as reading
    /// did). `0` (the default) turns the tier off. Call before sharing the store.
    pub fn set_memory_capacity(&mut self, bytes: u64) {
        self.memory = memory::MemoryPages::new(bytes, self.page_size);
    }

    /// Writes new pages' bytes with O_DIRECT, past the OS page cache, where the file system
    /// allows it (off by default; the worker turns it on, see docs/pagestore.md). A dir whose
    /// file system refuses it falls back to buffered writes, with a warning.
    pub fn set_direct_writes(&self, enabled: bool) {
        for dir in &self.dirs {
            dir.direct_writes.store(enabled, Ordering::Relaxed);
        }
    }

    /// True when every dir writes with O_DIRECT (none fell back to buffered writes).
    pub fn direct_writes(&self) -> bool {
        self.dirs.iter().all(|dir| dir.direct_writes.load(Ordering::Relaxed))
    }

    /// How often a dir whose file system filled up before its configured capacity looks for
    /// room again ([`DEFAULT_PROBE_INTERVAL`] unless set). Call before sharing the store.
    pub fn set_space_probe_interval(&mut self, interval: Duration) {
        self.probe_interval = interval;
    }

    /// Removes a page whose file turned out missing or corrupt, if the index still holds that
    /// very page (same generation); otherwise it was evicted, deleted or replaced since we
    /// looked it up, and a missing file is simply that, not a failure.
    fn drop_bad_page(&self, key: &PageKey, gen: u32, path: &Path, failure: ReadFailure) {
        let removed = {
            let mut idx = self.index.lock();
            match idx.lookup(key) {
                Some(s) if idx.slot(s).state == State::Complete && idx.slot(s).gen == gen => Some(idx.remove(s)),
                _ => None,
            }
        };
        match failure {
            ReadFailure::Missing(e) => {
                if removed.is_some() {
                    self.counters.missing_files.fetch_add(1, Ordering::Relaxed);
                    warn!(path = %path.display(), error = %e, "page file missing or unreadable; dropped");
                }
            }
            ReadFailure::Corrupt(why) => {
                // The bytes were wrong whoever owns the file now: count it either way.
                self.counters.checksum_failures.fetch_add(1, Ordering::Relaxed);
                warn!(path = %path.display(), reason = %why, "corrupt page; dropped");
            }
            ReadFailure::Transient(_) | ReadFailure::WouldBlock => {
                debug_assert!(false, "transient failures are returned, not dropped");
            }
        }
        if let Some(r) = removed {
            self.delete_removed(&[r]);
        }
    }

    /// Stores a complete page, evicting least recently used pages to stay within capacity.
    /// The page becomes visible to `get` only once fully written.
    ///
    /// A put of a key that is present or being written by another put is a no-op. The page's
    /// dir is chosen by weighted rendezvous hashing of the key over the dirs whose capacity
    /// can hold it. If the rest of that dir is reserved by puts in progress, waits for one of
    /// them to finish.
    ///
    /// When the file system is full (`ENOSPC`, `EDQUOT`) the dir's effective capacity is
    /// lowered to what it holds, pages are evicted accordingly and the page written again (see
    /// docs/pagestore.md, "When the disk is full"); `NoSpace` or `Io` only when even that finds
    /// no room.
    pub fn put(&self, key: &PageKey, data: &[u8]) -> Result<(), PageStoreError> {
        if data.len() as u64 > self.page_size {
            return Err(PageStoreError::PageTooLarge {
                len: data.len(),
                page_size: self.page_size,
            });
        }
        self.probe_space_if_due();
        let len = data.len() as u32;
        let (checksum, table) = page::chunk_table(data);
        let mut attempts = 0;
        loop {
            let dir = self.place(key, len)?;
            match self.put_in(dir, key, len, checksum, data, &table) {
                Err(PutError::Full(_)) if attempts < NO_SPACE_ATTEMPTS => attempts += 1,
                Err(PutError::Full(e) | PutError::Other(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
    }

    /// One attempt of `put` in `dir`. `PutError::Full` when the dir turned out to have no room
    /// for the page (its effective capacity has been lowered since): try again.
    fn put_in(
        &self,
        dir: u8,
        key: &PageKey,
        len: u32,
        checksum: u64,
        data: &[u8],
        table: &[u8],
    ) -> Result<(), PutError> {
        let mut evicted = Vec::new();
        let reserved = {
            let mut idx = self.index.lock();
            loop {
                if idx.lookup(key).is_some() {
                    break Ok(None);
                }
                let capacity = idx.dirs[dir as usize].capacity;
                if capacity < u64::from(len) {
                    // Lowered since the dir was chosen: choose again.
                    break Err(PutError::Full(PageStoreError::NoSpace {
                        len: len as usize,
                        capacity,
                    }));
                }
                if idx.make_room(dir, u64::from(len), &mut evicted) {
                    let name = PageName {
                        index: key.index,
                        len,
                        checksum,
                        gen: idx.next_gen(),
                    };
                    let slot = idx.insert(key, name, dir, State::Pending);
                    break Ok(Some((slot, name)));
                }
                // Everything left in the dir is being written: wait for a put to finish.
                self.put_done.wait(&mut idx);
            }
        };
        // Free the space before using it, so the disk never holds more than the capacity.
        self.delete_removed(&evicted);
        evicted.clear();
        let Some((slot, name)) = reserved? else {
            return Ok(());
        };

        let d = &self.dirs[dir as usize];
        let written = files::write_page(d, key, &name, data, table);
        let mut lowered = None;
        let doomed = {
            let mut idx = self.index.lock();
            let doomed = match &written {
                Ok(_) if idx.slot(slot).state == State::Pending => {
                    idx.complete(slot);
                    None
                }
                Ok(_) => Some(idx.remove(slot)), // delete_file ran meanwhile
                Err(PageStoreError::Io { cause, .. }) if space::is_no_space(cause) => {
                    // The dir holds what it has now (puts in progress included), without
                    // this page: make that its capacity, which evicts the least recently used
                    // pages the next attempt needs. (At least this page's length less than
                    // before, so that attempts make progress whatever happened meanwhile.)
                    let state = &idx.dirs[dir as usize];
                    let before = state.capacity;
                    let after = state.used.min(before).saturating_sub(u64::from(len));
                    idx.remove(slot);
                    self.set_capacity(&mut idx, dir, after, &mut evicted);
                    lowered = Some((before, after));
                    None
                }
                Err(_) => {
                    idx.remove(slot);
                    None
                }
            };
            self.put_done.notify_all();
            doomed
        };
        if let Some((before, after)) = lowered {
            self.delete_removed(&evicted);
            if let Err(PageStoreError::Io { cause, .. }) = &written {
                self.log_full(dir, before, after, cause);
            }
        }
        match (written, doomed) {
            (Err(e), _) if lowered.is_some() => Err(PutError::Full(e)),
            (Err(e), _) => Err(PutError::Other(e)),
            (Ok(()), Some(r)) => {
                self.delete_removed(&[r]);
                Ok(())
            }
            (Ok(()), None) => {
                self.counters.puts.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// The dir for a page: weighted rendezvous (highest random weight) hashing of the key over
    /// the dirs whose (effective) capacity can hold it, weights = capacities. Deterministic
    /// while capacities stay the same, spreads a file's pages over all dirs in proportion to
    /// their capacities, and moves few pages when dirs are added.
    fn place(&self, key: &PageKey, len: u32) -> Result<u8, PageStoreError> {
        let len64 = u64::from(len);
        if self.dirs.len() == 1 && self.dirs[0].space.effective() >= len64 {
            return Ok(0);
        }
        let mut buf = [0u8; 24];
        buf[..16].copy_from_slice(&key.file.0.to_le_bytes());
        buf[16..].copy_from_slice(&key.index.to_le_bytes());
        let mut best: Option<(f64, u8)> = None;
        for (i, d) in self.dirs.iter().enumerate() {
            let capacity = d.space.effective();
            if capacity < len64 {
                continue;
            }
            let h = xxh3_64_with_seed(&buf, i as u64);
            // Uniform in (0, 1); score = w / -ln(u).
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = capacity as f64 / -u.ln();
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, i as u8));
            }
        }
        best.map(|(_, i)| i).ok_or(PageStoreError::NoSpace {
            len: len as usize,
            capacity: self.dirs.iter().map(|d| d.space.effective()).max().unwrap_or(0),
        })
    }

    /// Whether the page is stored (complete). Does not count as a use for the LRU order.
    pub fn contains(&self, key: &PageKey) -> bool {
        let idx = self.index.lock();
        idx.lookup(key).is_some_and(|s| idx.slot(s).state == State::Complete)
    }

    /// Bytes of `file` currently cached.
    pub fn cached_bytes(&self, file: FileId) -> u64 {
        self.index.lock().file_bytes(file)
    }

    /// Sorted indexes of the cached pages of `file`.
    pub fn cached_pages(&self, file: FileId) -> Vec<u64> {
        self.index.lock().complete_indexes(file)
    }

    /// Removes every page of `file`; returns the bytes freed. Pages being written when this
    /// is called are deleted by their writer once written (and not visible meanwhile).
    pub fn delete_file(&self, file: FileId) -> Result<u64, PageStoreError> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        {
            let mut idx = self.index.lock();
            for s in idx.file_slots(file) {
                match idx.slot(s).state {
                    State::Complete => {
                        bytes += u64::from(idx.slot(s).len);
                        removed.push(idx.remove(s));
                    }
                    State::Pending => idx.mark_doomed(s),
                    State::Doomed | State::Free => {}
                }
            }
        }
        let mut first_err = None;
        for r in &removed {
            self.forget_copies(r);
            let path = layout::page_path(&self.dirs[r.dir as usize].pages, r.file, &r.name);
            if let Err(e) = files::remove_page_file(&path) {
                if e.kind() != io::ErrorKind::NotFound && first_err.is_none() {
                    first_err = Some(io_err(&path, e));
                }
            }
        }
        for d in &self.dirs {
            let _ = fs::remove_dir(layout::file_dir(&d.pages, file));
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(bytes),
        }
    }

    pub fn stats(&self) -> PageStoreStats {
        let (dirs, pages, evictions) = {
            let idx = self.index.lock();
            (idx.dirs.clone(), idx.pages, idx.evictions)
        };
        let c = &self.counters;
        PageStoreStats {
            used_bytes: dirs.iter().map(|d| d.used).sum(),
            capacity_bytes: self.dirs.iter().map(|d| d.space.configured).sum(),
            effective_capacity_bytes: dirs.iter().map(|d| d.capacity).sum(),
            pages,
            evictions,
            checksum_failures: c.checksum_failures.load(Ordering::Relaxed),
            missing_files: c.missing_files.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            memory_hits: c.memory_hits.load(Ordering::Relaxed),
            memory_copies: c.memory_copies.load(Ordering::Relaxed),
            memory_used_bytes: self.memory.used_bytes(),
            memory_capacity_bytes: self.memory.capacity_bytes(),
            misses: c.misses.load(Ordering::Relaxed),
            puts: c.puts.load(Ordering::Relaxed),
            recovered_pages: self.recovered_pages,
            recovery_discarded: self.recovery_discarded,
            dirs: dirs
                .iter()
                .zip(&self.dirs)
                .map(|(s, d)| DirStats {
                    path: d.root.clone(),
                    used_bytes: s.used,
                    capacity_bytes: d.space.configured,
                    effective_capacity_bytes: s.capacity,
                    pages: s.pages,
                })
                .collect(),
        }
    }

    /// Drops the memory copy of a page removed from the index.
    fn forget_copies(&self, removed: &Removed) {
        let key = PageKey {
            file: removed.file,
            index: removed.name.index,
        };
        self.memory.remove(&key);
    }

    /// Deletes the files of pages removed from the index (best effort), and the directory of
    /// a file that has no pages left.
    fn delete_removed(&self, removed: &[Removed]) {
        for r in removed {
            self.forget_copies(r);
            let pages = &self.dirs[r.dir as usize].pages;
            files::delete_page_file(&layout::page_path(pages, r.file, &r.name));
            if r.file_now_empty {
                // Fails harmlessly if a new page of the file arrived meanwhile.
                let _ = fs::remove_dir(layout::file_dir(pages, r.file));
            }
        }
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<PageStore>();
}

/// Internals exposed for the crate's benchmarks; not part of the API.
#[doc(hidden)]
pub mod bench_internals {
    use std::fs::File;
    use std::io::{self, Read as _};
    use std::path::Path;

    use bytes::Bytes;
    use xxhash_rust::xxh3::xxh3_64;

    /// Reads a whole file into a buffer and hashes it.
    pub fn read_copied_verified(path: &Path) -> io::Result<Bytes> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len() as usize;
        let mut buf = Vec::with_capacity(len);
        file.read_to_end(&mut buf)?;
        std::hint::black_box(xxh3_64(&buf));
        Ok(Bytes::from(buf))
    }

    pub fn checksum(data: &[u8]) -> u64 {
        xxh3_64(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_id_is_stable_and_unambiguous() {
        let a = FileId::new("/a/b", "v1");
        assert_eq!(a, FileId::new("/a/b", "v1"));
        assert_ne!(a, FileId::new("/a/b", "v2"));
        assert_ne!(a, FileId::new("/a/bv", "1"));
        assert_ne!(FileId::new("ab", ""), FileId::new("a", "b"));
        assert_ne!(FileId::new("a\0", "b"), FileId::new("a", "\0b"));
        assert_eq!(a.to_string().len(), 32);
    }

    #[test]
    fn file_id_test_vectors() {
        // Also in docs/pagestore.md: other implementations must agree.
        for (path, version, hex) in [
            ("/data/x.parquet", "etag-1", "eca5b5bc2cfe19d81eeaa1d19cc9e094"),
            ("", "", "e5189a9599e3f86205ea23ef06e28b2d"),
            ("/a", "b", "eb76bc9e8b318a9e8bde6835bb2938ae"),
        ] {
            assert_eq!(FileId::new(path, version).to_string(), hex);
        }
    }

    #[test]
    fn config_validation() {
        let ok = PageStoreConfig {
            dirs: vec!["/x".into(), "/y".into()],
            capacities: vec![10, 10],
            page_size: 10,
        };
        assert!(ok.validate().is_ok());
        let bad = |f: &dyn Fn(&mut PageStoreConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            assert!(matches!(c.validate(), Err(PageStoreError::Config(_))));
        };
        bad(&|c| c.dirs.clear());
        bad(&|c| {
            c.capacities.pop();
        });
        bad(&|c| c.page_size = 0);
        bad(&|c| c.page_size = MAX_PAGE_SIZE + 1);
        bad(&|c| c.capacities[1] = 9);
        bad(&|c| c.dirs[1] = "/x".into());
    }
}
