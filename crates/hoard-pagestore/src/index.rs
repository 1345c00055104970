//! The in-memory index: which pages exist, where, and in which LRU order.
//!
//! Pure data structure, no IO; `PageStore` keeps it behind one mutex. Memory per page is one
//! 40-byte `Slot` plus one 16-byte entry (+1 control byte) in its file's page map; a file costs
//! one `FileEntry` plus an entry in `files`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::layout::PageName;
use crate::{FileId, PageKey};

pub(crate) const NIL: u32 = u32::MAX;

/// State of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    /// On the free list.
    Free,
    /// A put is writing the page; its bytes are reserved in the dir's usage, it is not in the
    /// LRU list and `get` does not see it.
    Pending,
    /// Pending, and `delete_file` was called meanwhile: the writer deletes the page when done.
    Doomed,
    /// On disk and visible; in its dir's LRU list.
    Complete,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub index: u64,
    pub checksum: u64,
    /// Index into `Index::file_slab`.
    pub file: u32,
    pub len: u32,
    pub gen: u32,
    /// LRU neighbours (towards MRU / towards LRU); on the free list `next` chains free slots.
    pub prev: u32,
    pub next: u32,
    pub dir: u8,
    pub state: State,
    /// 4KiB chunks read from the page since it was last copied into the memory tier
    /// (saturating): it earns a copy once readers have verified a page's worth of it.
    pub chunks_read: u16,
}

impl Slot {
    pub fn name(&self) -> PageName {
        PageName {
            index: self.index,
            len: self.len,
            checksum: self.checksum,
            gen: self.gen,
        }
    }
}

/// Hasher for keys that are already well distributed (file ids are xxh3 hashes) or small
/// integers (page indexes): a multiply-fold, far cheaper than SipHash.
#[derive(Default)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Multiplying by an odd constant is a bijection on the low bits (good bucket spread
        // for sequential indexes) and mixes into the high bits (hashbrown's control bytes).
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64((n as u64) ^ ((n >> 64) as u64));
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A vector grown in fixed segments of `SEGMENT` elements instead of by doubling, so that it
/// never holds more than one segment of unused capacity (a doubling `Vec` averages a third).
#[derive(Debug)]
pub(crate) struct Segmented<T> {
    segments: Vec<Vec<T>>,
    len: usize,
}

const SEGMENT: usize = 1024;

impl<T> Default for Segmented<T> {
    fn default() -> Self {
        Segmented {
            segments: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Segmented<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, value: T) {
        if self.len % SEGMENT == 0 {
            self.segments.push(Vec::with_capacity(SEGMENT));
        }
        self.segments.last_mut().expect("a segment").push(value);
        self.len += 1;
    }
}

impl<T> std::ops::Index<usize> for Segmented<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.segments[i / SEGMENT][i % SEGMENT]
    }
}

impl<T> std::ops::IndexMut<usize> for Segmented<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.segments[i / SEGMENT][i % SEGMENT]
    }
}

/// A file id as two words: 8-byte aligned (a `u128` is 16-byte aligned), which makes the
/// per-file entries smaller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey(u64, u64);

impl From<FileId> for FileKey {
    fn from(f: FileId) -> FileKey {
        FileKey(f.0 as u64, (f.0 >> 64) as u64)
    }
}

impl From<FileKey> for FileId {
    fn from(k: FileKey) -> FileId {
        FileId(u128::from(k.0) | (u128::from(k.1) << 64))
    }
}

/// A file's pages: page index -> slot. Most files cached with 1 MiB pages are either large or
/// a single page (small files), so one page is kept inline and a map is allocated only for the
/// second.
#[derive(Debug, Default)]
pub(crate) enum PageMap {
    #[default]
    Empty,
    One {
        index: u64,
        slot: u32,
    },
    /// Boxed: keeps `FileEntry` (one per cached file) small.
    Many(Box<FastMap<u64, u32>>),
}

impl PageMap {
    pub fn get(&self, index: u64) -> Option<u32> {
        match self {
            PageMap::Empty => None,
            PageMap::One { index: i, slot } => (*i == index).then_some(*slot),
            PageMap::Many(m) => m.get(&index).copied(),
        }
    }

    /// Inserts a page that is not in the map.
    fn insert(&mut self, index: u64, slot: u32) {
        match self {
            PageMap::Empty => *self = PageMap::One { index, slot },
            PageMap::One { index: i, slot: s } => {
                debug_assert_ne!(*i, index);
                let mut m = FastMap::default();
                m.insert(*i, *s);
                m.insert(index, slot);
                *self = PageMap::Many(Box::new(m));
            }
            PageMap::Many(m) => {
                let prev = m.insert(index, slot);
                debug_assert!(prev.is_none(), "insert of a page already indexed");
            }
        }
    }

    fn remove(&mut self, index: u64) {
        match self {
            PageMap::Empty => {}
            PageMap::One { index: i, .. } => {
                if *i == index {
                    *self = PageMap::Empty;
                }
            }
            PageMap::Many(m) => {
                m.remove(&index);
                if m.is_empty() {
                    *self = PageMap::Empty;
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, PageMap::Empty)
    }

    fn entries(&self) -> Vec<(u64, u32)> {
        match self {
            PageMap::Empty => Vec::new(),
            PageMap::One { index, slot } => vec![(*index, *slot)],
            PageMap::Many(m) => m.iter().map(|(&i, &s)| (i, s)).collect(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct FileEntry {
    pub id: FileKey,
    /// page index -> slot, for pending and complete pages.
    pub pages: PageMap,
    /// Bytes of complete pages.
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct DirState {
    /// The dir's effective capacity (see `space.rs`): the configured one, or less while its
    /// file system is full.
    pub capacity: u64,
    /// Bytes of complete pages plus reservations of pending ones.
    pub used: u64,
    /// Of `used`, the reservations of pending pages.
    pub pending: u64,
    pub pages: u64,
    /// Most and least recently used complete pages.
    pub head: u32,
    pub tail: u32,
}

impl Default for FileEntry {
    fn default() -> FileEntry {
        FileEntry {
            id: FileKey(0, 0),
            pages: PageMap::Empty,
            bytes: 0,
        }
    }
}

/// A page removed from the index whose file must now be deleted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Removed {
    pub dir: u8,
    pub file: FileId,
    pub name: PageName,
    /// The page's file (directory) has no more pages in the index.
    pub file_now_empty: bool,
}

#[derive(Debug)]
pub(crate) struct Index {
    slots: Segmented<Slot>,
    free_slot: u32,
    files: FastMap<FileKey, u32>,
    file_slab: Segmented<FileEntry>,
    free_files: Vec<u32>,
    pub dirs: Vec<DirState>,
    /// Complete pages in all dirs.
    pub pages: u64,
    pub evictions: u64,
    next_gen: u32,
}

impl Index {
    pub fn new(capacities: &[u64], first_gen: u32) -> Index {
        Index {
            slots: Segmented::default(),
            free_slot: NIL,
            files: FastMap::default(),
            file_slab: Segmented::default(),
            free_files: Vec::new(),
            dirs: capacities
                .iter()
                .map(|&capacity| DirState {
                    capacity,
                    used: 0,
                    pending: 0,
                    pages: 0,
                    head: NIL,
                    tail: NIL,
                })
                .collect(),
            pages: 0,
            evictions: 0,
            next_gen: first_gen,
        }
    }

    pub fn next_gen(&mut self) -> u32 {
        let g = self.next_gen;
        self.next_gen = g.wrapping_add(1);
        g
    }

    pub fn slot(&self, s: u32) -> &Slot {
        &self.slots[s as usize]
    }

    pub fn lookup(&self, key: &PageKey) -> Option<u32> {
        let f = *self.files.get(&FileKey::from(key.file))?;
        self.file_slab[f as usize].pages.get(key.index)
    }

    /// Marks `s` (complete) most recently used.
    pub fn touch(&mut self, s: u32) {
        let dir = self.slots[s as usize].dir as usize;
        if self.dirs[dir].head != s {
            self.lru_unlink(s);
            self.lru_push_front(s);
        }
    }

    /// Counts `chunks` read from slot `s`; true once they add up to `pages` times the page's
    /// own chunk count: with `pages` = 1 a copy of the whole page into the memory tier costs no
    /// more hashing than the reads have already done. With `restart`, the count then starts
    /// again (the caller makes the copy); without, it stays due for the next read.
    pub fn note_read(&mut self, s: u32, chunks: usize, pages: usize, restart: bool) -> bool {
        let slot = &mut self.slots[s as usize];
        let read = usize::from(slot.chunks_read).saturating_add(chunks);
        let page_chunks = crate::page::chunks(slot.len)
            .saturating_mul(pages)
            .clamp(1, usize::from(u16::MAX));
        let due = read >= page_chunks;
        slot.chunks_read = if due && restart {
            0
        } else {
            read.min(usize::from(u16::MAX)) as u16
        };
        due
    }

    fn lru_unlink(&mut self, s: u32) {
        let Slot { prev, next, dir, .. } = self.slots[s as usize];
        let d = &mut self.dirs[dir as usize];
        if prev == NIL {
            d.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            d.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
        let slot = &mut self.slots[s as usize];
        slot.prev = NIL;
        slot.next = NIL;
    }

    fn lru_push_front(&mut self, s: u32) {
        let dir = self.slots[s as usize].dir as usize;
        let old = self.dirs[dir].head;
        {
            let slot = &mut self.slots[s as usize];
            slot.prev = NIL;
            slot.next = old;
        }
        if old == NIL {
            self.dirs[dir].tail = s;
        } else {
            self.slots[old as usize].prev = s;
        }
        self.dirs[dir].head = s;
    }

    /// Inserts a page that is not in the index yet, reserving its bytes in `dir`. A pending page
    /// becomes visible with `complete`; a complete one is inserted as most recently used.
    pub fn insert(&mut self, key: &PageKey, name: PageName, dir: u8, state: State) -> u32 {
        debug_assert!(matches!(state, State::Pending | State::Complete));
        let file = match self.files.get(&FileKey::from(key.file)) {
            Some(&f) => f,
            None => {
                let entry = FileEntry {
                    id: FileKey::from(key.file),
                    pages: PageMap::Empty,
                    bytes: 0,
                };
                let f = match self.free_files.pop() {
                    Some(f) => {
                        self.file_slab[f as usize] = entry;
                        f
                    }
                    None => {
                        self.file_slab.push(entry);
                        (self.file_slab.len() - 1) as u32
                    }
                };
                self.files.insert(FileKey::from(key.file), f);
                f
            }
        };
        let slot = Slot {
            index: key.index,
            checksum: name.checksum,
            file,
            len: name.len,
            gen: name.gen,
            prev: NIL,
            next: NIL,
            dir,
            state: State::Pending,
            chunks_read: 0,
        };
        let s = if self.free_slot != NIL {
            let s = self.free_slot;
            self.free_slot = self.slots[s as usize].next;
            self.slots[s as usize] = slot;
            s
        } else {
            assert!(self.slots.len() < NIL as usize, "too many pages");
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        };
        self.file_slab[file as usize].pages.insert(key.index, s);
        self.dirs[dir as usize].used += u64::from(name.len);
        self.dirs[dir as usize].pending += u64::from(name.len);
        if state == State::Complete {
            self.complete(s);
        }
        s
    }

    /// A pending page is now on disk: make it visible as the most recently used.
    pub fn complete(&mut self, s: u32) {
        let slot = &mut self.slots[s as usize];
        debug_assert_eq!(slot.state, State::Pending);
        slot.state = State::Complete;
        let (len, dir, file) = (u64::from(slot.len), slot.dir as usize, slot.file as usize);
        self.file_slab[file].bytes += len;
        self.dirs[dir].pending -= len;
        self.dirs[dir].pages += 1;
        self.pages += 1;
        self.lru_push_front(s);
    }

    pub fn mark_doomed(&mut self, s: u32) {
        let slot = &mut self.slots[s as usize];
        debug_assert_eq!(slot.state, State::Pending);
        slot.state = State::Doomed;
    }

    /// Removes a pending, doomed or complete page, releasing its bytes.
    pub fn remove(&mut self, s: u32) -> Removed {
        let slot = self.slots[s as usize];
        debug_assert_ne!(slot.state, State::Free);
        let len = u64::from(slot.len);
        if slot.state == State::Complete {
            self.lru_unlink(s);
            self.file_slab[slot.file as usize].bytes -= len;
            self.dirs[slot.dir as usize].pages -= 1;
            self.pages -= 1;
        } else {
            self.dirs[slot.dir as usize].pending -= len;
        }
        self.dirs[slot.dir as usize].used -= len;
        let entry = &mut self.file_slab[slot.file as usize];
        let id = entry.id;
        let file_id = FileId::from(id);
        entry.pages.remove(slot.index);
        let file_now_empty = entry.pages.is_empty();
        if file_now_empty {
            // Drop the map's allocation with the entry.
            self.file_slab[slot.file as usize] = FileEntry::default();
            self.files.remove(&id);
            self.free_files.push(slot.file);
        }
        let freed = &mut self.slots[s as usize];
        freed.state = State::Free;
        freed.next = self.free_slot;
        self.free_slot = s;
        Removed {
            dir: slot.dir,
            file: file_id,
            name: slot.name(),
            file_now_empty,
        }
    }

    /// Evicts least recently used complete pages of `dir` until `len` more bytes fit. Returns
    /// whether they fit now (they may not while pending pages hold the rest of the space).
    pub fn make_room(&mut self, dir: u8, len: u64, evicted: &mut Vec<Removed>) -> bool {
        loop {
            let d = &self.dirs[dir as usize];
            if d.capacity.saturating_sub(d.used) >= len {
                return true;
            }
            if d.tail == NIL {
                return false;
            }
            let victim = d.tail;
            evicted.push(self.remove(victim));
            self.evictions += 1;
        }
    }

    /// Evicts least recently used complete pages of `dir` until its usage is within capacity
    /// (used on open, when the capacity was lowered).
    pub fn shrink_to_capacity(&mut self, dir: u8, evicted: &mut Vec<Removed>) {
        while self.dirs[dir as usize].used > self.dirs[dir as usize].capacity {
            let victim = self.dirs[dir as usize].tail;
            if victim == NIL {
                return;
            }
            evicted.push(self.remove(victim));
            self.evictions += 1;
        }
    }

    /// Bytes of complete pages of `file`.
    pub fn file_bytes(&self, file: FileId) -> u64 {
        self.files
            .get(&FileKey::from(file))
            .map_or(0, |&f| self.file_slab[f as usize].bytes)
    }

    /// Sorted indexes of the complete pages of `file`.
    pub fn complete_indexes(&self, file: FileId) -> Vec<u64> {
        let Some(&f) = self.files.get(&FileKey::from(file)) else {
            return Vec::new();
        };
        let mut v: Vec<u64> = self.file_slab[f as usize]
            .pages
            .entries()
            .into_iter()
            .filter(|&(_, s)| self.slots[s as usize].state == State::Complete)
            .map(|(i, _)| i)
            .collect();
        v.sort_unstable();
        v
    }

    /// Slots (pending or complete) of `file`.
    pub fn file_slots(&self, file: FileId) -> Vec<u32> {
        self.files.get(&FileKey::from(file)).map_or_else(Vec::new, |&f| {
            self.file_slab[f as usize]
                .pages
                .entries()
                .into_iter()
                .map(|(_, s)| s)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(f: u128, i: u64) -> PageKey {
        PageKey {
            file: FileId(f),
            index: i,
        }
    }

    fn name(i: u64, len: u32) -> PageName {
        PageName {
            index: i,
            len,
            checksum: 0,
            gen: 0,
        }
    }

    #[test]
    fn entries_are_small() {
        assert_eq!(std::mem::size_of::<Slot>(), 40);
        assert_eq!(std::mem::size_of::<FileEntry>(), 40);
        let f = FileId(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(FileId::from(FileKey::from(f)), f);
    }

    #[test]
    fn lru_order_and_eviction() {
        let mut idx = Index::new(&[30], 0);
        for i in 0..3 {
            idx.insert(&key(1, i), name(i, 10), 0, State::Complete);
        }
        assert_eq!(idx.dirs[0].used, 30);
        // Touch page 0: page 1 becomes the LRU.
        let s0 = idx.lookup(&key(1, 0)).unwrap();
        idx.touch(s0);
        let mut evicted = Vec::new();
        assert!(idx.make_room(0, 10, &mut evicted));
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].name.index, 1);
        assert!(!evicted[0].file_now_empty);
        assert_eq!(idx.dirs[0].used, 20);
        assert_eq!(idx.pages, 2);
        assert_eq!(idx.evictions, 1);
        // Pending pages are not evictable.
        let p = idx.insert(&key(2, 0), name(0, 10), 0, State::Pending);
        assert!(idx.make_room(0, 20, &mut evicted));
        assert_eq!(evicted.len(), 3);
        assert!(evicted[2].file_now_empty);
        assert_eq!(idx.dirs[0].used, 10);
        assert!(!idx.make_room(0, 25, &mut evicted));
        idx.complete(p);
        assert_eq!(idx.file_bytes(FileId(2)), 10);
        assert_eq!(idx.file_bytes(FileId(1)), 0);
        let r = idx.remove(p);
        assert!(r.file_now_empty);
        assert_eq!(idx.dirs[0].used, 0);
        assert_eq!(idx.pages, 0);
        assert_eq!(idx.dirs[0].head, NIL);
        assert_eq!(idx.dirs[0].tail, NIL);
    }
}
