//! The UFS ("under file system"): where the data really lives. A narrow async trait with a local
//! directory backend and an S3 backend, and a [`MountTable`] that maps Hoard paths onto them.
//!
//! S3 calls and plain local reads go through [opendal](https://opendal.apache.org/) with a
//! timeout layer (per attempt) under a retry layer (temporary failures only); local status,
//! versioned reads and listings use std's file calls under the same timeout; see [`UfsOptions`]. docs/ufs.md is the
//! user-facing description of URIs, credentials, mount semantics, listing and errors.
//!
//! Nothing here reads the environment or a config file on its own: the S3 credentials come from
//! `hoard_config::S3Config` and, for what that leaves unset, from an environment *snapshot* the
//! caller passes ([`MountTable::from_config_with_env`]); only [`MountTable::from_config`] reads
//! the process environment, and only because its caller asked for it.
//!
//! CONTRACT (other crates code against these names; keep them stable):

use std::ops::Range;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::BoxStream;
use hoard_common::HoardPath;

mod buffers;
mod convert;
mod local;
mod mount;
mod s3;
mod uri;

pub use local::LocalUfs;
pub use mount::MountTable;
pub use s3::{S3Credentials, S3Settings, S3Ufs};
pub use uri::UfsUri;

#[derive(Debug, thiserror::Error)]
pub enum UfsError {
    #[error("no such file: {0}")]
    NotFound(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("is a directory: {0}")]
    IsDirectory(String),
    #[error("not a directory: {0}")]
    NotDirectory(String),
    /// The file is no longer the version the caller read its status as.
    #[error("file changed in the ufs: {0}")]
    Changed(String),
    #[error("invalid ufs configuration: {0}")]
    Config(String),
    /// Anything else the backend reports; `retryable` says whether trying again may help.
    #[error("ufs error on {path}: {message}")]
    Backend {
        path: String,
        message: String,
        retryable: bool,
    },
}

impl UfsError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, UfsError::Backend { retryable: true, .. })
    }
}

/// How long after a file's last status change (its ctime) pages read from it are served but not
/// cached, on a file system with sub-second timestamps.
///
/// The kernel stamps a change with its *coarse* clock, which lags real time by up to a few
/// ticks: two writes close together can get the same ctime and mtime, so the second one keeps the
/// version (see [`UfsStatus::version`]). Any change made after `ctime + lag` gets a later ctime,
/// so a read that starts later than that sees the bytes that version keeps for good. The lag
/// measured on Linux 6.18 with HZ=250 (4ms ticks) in a VM with both cores busy: 3-8ms
/// typically, 9.5ms at most over 3.3 million samples; 100ms leaves ten times that for ticks
/// delayed by a busier host, and costs a cache nothing (such a page is simply read again).
/// It also assumes the clock of whoever stamps the file (an NFS server) is within this of ours.
pub const RECENT_CHANGE_WINDOW: Duration = Duration::from_millis(100);

/// [`RECENT_CHANGE_WINDOW`] for file systems that stamp whole seconds (ext4 with 128-byte
/// inodes, some NFS servers) or two (FAT): a ctime without a sub-second part is taken to come
/// from one of them.
pub const RECENT_CHANGE_WINDOW_WHOLE_SECONDS: Duration = Duration::from_millis(2100);

/// What the UFS says about one file or directory. `path` is the Hoard path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UfsStatus {
    pub path: HoardPath,
    pub is_dir: bool,
    pub length: u64,
    pub modification_time_ms: Option<i64>,
    /// S3: the object's ETag. Local files: a token of what no rewrite keeps (inode, ctime and
    /// mtime in nanoseconds), so the version changes even when the mtime is restored.
    pub etag: Option<String>,
    /// When the file's status last changed, by the clock of whoever stamps it (local: ctime).
    /// `None` where the version does not hang on timestamps (S3: the ETag) and for directories.
    pub changed_at: Option<SystemTime>,
}

impl UfsStatus {
    /// The version pages are keyed by: length, modification time and etag together, so a
    /// rewritten file gets a new version even when one of them is unavailable. Locally the etag
    /// is the change token (inode, ctime and mtime in nanoseconds): a rewrite keeps none of them
    /// except within one tick of the kernel's clock, which [`UfsStatus::is_settled`] covers.
    pub fn version(&self) -> String {
        format!(
            "{}-{}-{}",
            self.length,
            self.modification_time_ms.map(|ms| ms.to_string()).unwrap_or_default(),
            self.etag.as_deref().unwrap_or("")
        )
    }

    /// True when bytes of this version read from the UFS starting at `started` may be cached:
    /// no later change can keep this version. False while the file changed less than
    /// [`RECENT_CHANGE_WINDOW`] before `started` (like git's "racily clean" entries): another
    /// write in the same clock tick would keep its timestamps, so those bytes may be served but
    /// must not be stored.
    pub fn is_settled(&self, started: SystemTime) -> bool {
        settled(self.changed_at, started)
    }

    /// When bytes read from this version become cacheable (see [`UfsStatus::is_settled`]);
    /// `None`: always.
    pub fn settled_at(&self) -> Option<SystemTime> {
        self.changed_at
            .map(|changed| changed.checked_add(recent_change_window(changed)).unwrap_or(changed))
    }

    /// This status as its backend reported it, without the Hoard path.
    pub fn raw(&self) -> RawStatus {
        RawStatus {
            is_dir: self.is_dir,
            length: self.length,
            modification_time_ms: self.modification_time_ms,
            etag: self.etag.clone(),
            changed_at: self.changed_at,
        }
    }
}

/// The window for a change stamped `changed` (see [`RECENT_CHANGE_WINDOW_WHOLE_SECONDS`]).
fn recent_change_window(changed: SystemTime) -> Duration {
    let whole_seconds = match changed.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => since.subsec_nanos() == 0,
        Err(before) => before.duration().subsec_nanos() == 0,
    };
    if whole_seconds {
        RECENT_CHANGE_WINDOW_WHOLE_SECONDS
    } else {
        RECENT_CHANGE_WINDOW
    }
}

fn settled(changed_at: Option<SystemTime>, started: SystemTime) -> bool {
    match changed_at {
        None => true,
        // A change stamped in the future (clock skew) is not settled until our clock passes it.
        Some(changed) => changed
            .checked_add(recent_change_window(changed))
            .is_some_and(|settled| started >= settled),
    }
}

/// One backend. Paths given to it are relative to its root, `/`-separated, no leading `/`,
/// already normalized (`""` is the root).
///
/// Errors name the *relative* path (e.g. `NotFound("a/b")`); the [`MountTable`] rewrites them to
/// the Hoard path before its callers see them.
#[async_trait::async_trait]
pub trait Ufs: Send + Sync + std::fmt::Debug {
    /// Status of a file or directory. `""` is always a directory.
    async fn status(&self, relative: &str) -> Result<RawStatus, UfsError>;
    /// The bytes `range.start..min(range.end, length)`: a range that runs past the end of the
    /// file is clamped to it, one that starts at or past the end (or is empty) gives no bytes.
    /// A directory is [`UfsError::IsDirectory`].
    async fn read(&self, relative: &str, range: Range<u64>) -> Result<Bytes, UfsError>;
    /// Streams one directory level. Must not collect the whole listing in memory.
    async fn list(&self, relative: &str) -> Result<BoxStream<'static, Result<RawEntry, UfsError>>, UfsError>;

    /// Like [`Ufs::read`], but only bytes of the version `expected` describes: when the file is
    /// now another version (length, modification time or etag differ: see
    /// [`RawStatus::same_version`]) the answer is [`UfsError::Changed`]. Caches use it so a rewrite never mixes old and new bytes. The
    /// default reads and then checks the status; backends override it to check atomically.
    async fn read_version(&self, relative: &str, range: Range<u64>, expected: &RawStatus) -> Result<Bytes, UfsError> {
        read_then_check_version(self, relative, range, expected).await
    }
}

/// [`Ufs::read_version`] for backends that cannot check atomically: read, then compare the
/// status afterwards (a change between the two is caught; one that is undone is not).
pub(crate) async fn read_then_check_version<U: Ufs + ?Sized>(
    ufs: &U,
    relative: &str,
    range: Range<u64>,
    expected: &RawStatus,
) -> Result<Bytes, UfsError> {
    let bytes = ufs.read(relative, range).await?;
    let current = ufs.status(relative).await?;
    if !current.same_version(expected) {
        return Err(UfsError::Changed(relative.to_string()));
    }
    Ok(bytes)
}

/// A backend's status of one path (relative to the backend root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStatus {
    pub is_dir: bool,
    pub length: u64,
    pub modification_time_ms: Option<i64>,
    /// See [`UfsStatus::etag`].
    pub etag: Option<String>,
    /// See [`UfsStatus::changed_at`].
    pub changed_at: Option<SystemTime>,
}

impl RawStatus {
    /// A directory without a known modification time (S3 prefixes, mount points).
    pub fn directory() -> RawStatus {
        RawStatus {
            is_dir: true,
            length: 0,
            modification_time_ms: None,
            etag: None,
            changed_at: None,
        }
    }

    /// True when both describe the same version of a file (see [`UfsStatus::version`]; the
    /// change time is part of the local etag already).
    pub fn same_version(&self, other: &RawStatus) -> bool {
        self.is_dir == other.is_dir
            && self.length == other.length
            && self.modification_time_ms == other.modification_time_ms
            && self.etag == other.etag
    }

    /// This status at a Hoard path.
    pub fn at(self, path: HoardPath) -> UfsStatus {
        UfsStatus {
            path,
            is_dir: self.is_dir,
            length: self.length,
            modification_time_ms: self.modification_time_ms,
            etag: self.etag,
            changed_at: self.changed_at,
        }
    }

    /// See [`UfsStatus::is_settled`].
    pub fn is_settled(&self, started: SystemTime) -> bool {
        settled(self.changed_at, started)
    }
}

/// One child from a backend listing: its name (single segment) and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: String,
    pub status: RawStatus,
}

/// How the backends talk to their storage: a timeout per attempt and bounded retries of
/// temporary failures (timeouts, HTTP 5xx, 429, connection errors).
///
/// Worst case for one call: `(max_retries + 1) * timeout` plus the back-off delays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UfsOptions {
    /// Bounds one attempt of a status or list call, the opening of a read, and every chunk of
    /// a read or page of a listing after that. The worker passes `hoard.worker.ufs.read.timeout`
    /// (`WorkerConfig::ufs_read_timeout`).
    pub timeout: Duration,
    /// Retries after the first attempt, for temporary failures only.
    pub max_retries: usize,
    /// First back-off delay; it doubles (with jitter) up to `retry_max_delay`.
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
}

impl Default for UfsOptions {
    fn default() -> Self {
        UfsOptions {
            timeout: Duration::from_secs(30),
            max_retries: 3,
            retry_min_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(2),
        }
    }
}

impl UfsOptions {
    /// The defaults with another per-attempt timeout.
    pub fn with_timeout(timeout: Duration) -> UfsOptions {
        UfsOptions {
            timeout,
            ..UfsOptions::default()
        }
    }
}

/// Looks up one environment variable: `&|name| std::env::var(name).ok()` for the process
/// environment, or a closure over a map in tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as an [`EnvLookup`]. Only [`MountTable::from_config`] uses it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(at: Option<SystemTime>) -> RawStatus {
        RawStatus {
            is_dir: false,
            length: 1,
            modification_time_ms: Some(0),
            etag: Some("t".to_string()),
            changed_at: at,
        }
    }

    #[test]
    fn a_recent_change_is_not_settled_until_the_window_has_passed() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let status = changed(Some(at));
        assert!(
            !status.is_settled(at - Duration::from_secs(1)),
            "a change in the future"
        );
        assert!(!status.is_settled(at));
        assert!(!status.is_settled(at + RECENT_CHANGE_WINDOW - Duration::from_nanos(1)));
        assert!(status.is_settled(at + RECENT_CHANGE_WINDOW));
        let hoard = status.at(HoardPath::parse("/f").unwrap());
        assert_eq!(hoard.settled_at(), Some(at + RECENT_CHANGE_WINDOW));
        assert_eq!(hoard.raw(), changed(Some(at)));
    }

    #[test]
    fn whole_second_timestamps_get_the_wider_window() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let status = changed(Some(at));
        assert!(!status.is_settled(at + Duration::from_secs(2)));
        assert!(status.is_settled(at + RECENT_CHANGE_WINDOW_WHOLE_SECONDS));
        let before_epoch = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert!(!changed(Some(before_epoch)).is_settled(before_epoch + Duration::from_secs(2)));
    }

    #[test]
    fn without_a_change_time_everything_is_settled() {
        assert!(changed(None).is_settled(SystemTime::UNIX_EPOCH));
        assert_eq!(changed(None).at(HoardPath::root()).settled_at(), None);
    }
}
