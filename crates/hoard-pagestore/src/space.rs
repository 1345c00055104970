//! Room on a dir's file system.
//!
//! A dir's capacity is what the configuration says, but its file system may fill up first
//! (other files on the disk, a quota, a capacity set above the disk's size). Page writes then
//! fail with `ENOSPC` or `EDQUOT`, and since nothing is over capacity nothing would be evicted:
//! the store would keep its first pages for ever and fail every new one. Instead the dir gets
//! an *effective* capacity, lowered on such a failure to what the dir holds at that moment, so
//! that least recently used pages are evicted to make room as with any capacity; while it is
//! below the configured one, the file system is looked at (`statvfs`) every probe interval, on
//! the next page write, and the effective capacity set to what the dir holds plus the room
//! found, up to the configured capacity. See docs/pagestore.md, "When the disk is full".

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::{debug, info, warn};

use crate::index::{Index, Removed};
use crate::PageStore;

/// How often a dir below its configured capacity looks at its file system for room again.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// A dir that ran out of room warns at most once per this long; later times are logged at
/// info level (and every change of its effective capacity at debug level).
const WARNING_INTERVAL: Duration = Duration::from_secs(3600);

/// Whether a write failed because the file system (or the user's quota) is full.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// The room state of one dir. The effective capacity itself lives in the index (changed under
/// its lock, with the evictions it calls for); this keeps a copy readable without the lock,
/// for placement, and the timers.
pub(crate) struct DirSpace {
    pub configured: u64,
    effective: AtomicU64,
    /// While limited: when to look at the file system again.
    next_probe: Mutex<Option<Instant>>,
    last_warning: Mutex<Option<Instant>>,
}

impl DirSpace {
    pub fn new(configured: u64) -> DirSpace {
        DirSpace {
            configured,
            effective: AtomicU64::new(configured),
            next_probe: Mutex::new(None),
            last_warning: Mutex::new(None),
        }
    }

    pub fn effective(&self) -> u64 {
        self.effective.load(Ordering::Relaxed)
    }

    pub fn is_limited(&self) -> bool {
        self.effective() < self.configured
    }

    /// Records a new effective capacity (the index's, set under its lock); schedules the next
    /// probe when the dir is limited.
    pub fn set_effective(&self, capacity: u64, probe_interval: Duration) {
        debug_assert!(capacity <= self.configured);
        self.effective.store(capacity, Ordering::Relaxed);
        let mut next = self.next_probe.lock();
        if capacity < self.configured {
            next.get_or_insert_with(|| Instant::now() + probe_interval);
        } else {
            *next = None;
        }
    }

    /// True (and the next probe scheduled) when a limited dir is due to look for room.
    pub fn probe_due(&self, now: Instant, probe_interval: Duration) -> bool {
        let mut next = self.next_probe.lock();
        match *next {
            Some(at) if at <= now => {
                *next = Some(now + probe_interval);
                true
            }
            _ => false,
        }
    }

    /// True when running out of room now deserves a warning: the first time, and then at
    /// most once per [`WARNING_INTERVAL`].
    pub fn should_warn(&self) -> bool {
        let mut last = self.last_warning.lock();
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WARNING_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Page bytes that the file system at `path` has room for: the space (and, where the file
/// system counts them, the inodes: one per page) available to the process, less 1/32 for the
/// chunk tables, the rounding of files to blocks and the page directories. `None` when it
/// cannot be asked.
#[allow(clippy::useless_conversion)] // statvfs's field types vary by platform
pub(crate) fn room(path: &Path, page_size: u64) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct we pass; the path is a valid C string.
    let mut fs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut fs) } != 0 {
        return None;
    }
    let bytes = u64::from(fs.f_bavail).saturating_mul(u64::from(fs.f_frsize));
    let bytes = bytes - bytes / 32;
    // File systems that do not count inodes report 0 files.
    let by_inodes = if fs.f_files > 0 {
        u64::from(fs.f_favail).saturating_mul(page_size)
    } else {
        u64::MAX
    };
    Some(bytes.min(by_inodes))
}

impl PageStore {
    /// Sets `dir`'s effective capacity (at most the configured one) and evicts down to it.
    pub(crate) fn set_capacity(&self, idx: &mut Index, dir: u8, capacity: u64, evicted: &mut Vec<Removed>) {
        let space = &self.dirs[dir as usize].space;
        let capacity = capacity.min(space.configured);
        idx.dirs[dir as usize].capacity = capacity;
        idx.shrink_to_capacity(dir, evicted);
        space.set_effective(capacity, self.probe_interval);
        let limited = self.dirs.iter().any(|d| d.space.is_limited());
        self.limited.store(limited, Ordering::Relaxed);
    }

    /// Logs a dir's capacity lowered because its file system is full: a warning the first
    /// time (and at most once an hour), then at info and debug level.
    pub(crate) fn log_full(&self, dir: u8, before: u64, after: u64, error: &io::Error) {
        let d = &self.dirs[dir as usize];
        let configured = d.space.configured;
        if before == configured {
            if d.space.should_warn() {
                warn!(dir = %d.root.display(), configured_bytes = configured, effective_bytes = after, error = %error,
                    "page store disk is full before the configured capacity: capacity lowered to what the disk holds, least recently used pages are evicted to make room");
            } else {
                info!(dir = %d.root.display(), configured_bytes = configured, effective_bytes = after, error = %error,
                    "page store disk is full again: capacity lowered to what the disk holds");
            }
        } else {
            debug!(dir = %d.root.display(), effective_bytes = after, error = %error, "page store disk still full: capacity lowered");
        }
    }

    /// While some dir is below its configured capacity, looks at the file systems of the dirs
    /// due for it and sets their effective capacities to what they hold plus the room found.
    pub(crate) fn probe_space_if_due(&self) {
        if !self.limited.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        for (i, d) in self.dirs.iter().enumerate() {
            if !d.space.probe_due(now, self.probe_interval) {
                continue;
            }
            let Some(room) = room(&d.root, self.page_size) else {
                continue;
            };
            let mut evicted = Vec::new();
            let (before, after) = {
                let mut idx = self.index.lock();
                let state = &idx.dirs[i];
                let before = state.capacity;
                // Pages being written may not be on disk yet: count only complete ones.
                let after = (state.used - state.pending).saturating_add(room);
                self.set_capacity(&mut idx, i as u8, after, &mut evicted);
                (before, idx.dirs[i].capacity)
            };
            self.delete_removed(&evicted);
            if after == d.space.configured && before < after {
                info!(dir = %d.root.display(), capacity_bytes = after, "page store disk has room again: back to the configured capacity");
            } else if after != before {
                debug!(dir = %d.root.display(), before_bytes = before, effective_bytes = after, "page store capacity set to what the disk holds");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_schedule_probes_and_warnings_are_rate_limited() {
        let space = DirSpace::new(100);
        let interval = Duration::from_millis(1);
        assert!(!space.is_limited());
        assert!(!space.probe_due(Instant::now() + Duration::from_secs(1), interval));
        space.set_effective(40, interval);
        assert!(space.is_limited());
        assert_eq!(space.effective(), 40);
        let later = Instant::now() + Duration::from_secs(1);
        assert!(space.probe_due(later, interval));
        assert!(!space.probe_due(later, interval), "rescheduled");
        space.set_effective(100, interval);
        assert!(!space.is_limited());
        assert!(!space.probe_due(later + Duration::from_secs(1), interval));
        assert!(space.should_warn());
        assert!(!space.should_warn(), "once per interval");
    }

    #[test]
    fn room_reports_the_file_system_and_no_space_errors_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        assert!(room(dir.path(), 4096).is_some());
        assert_eq!(room(&dir.path().join("missing"), 4096), None);
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(libc::EIO)));
    }
}
