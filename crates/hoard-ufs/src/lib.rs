//! The UFS ("under file system"): where the data really lives. A narrow async trait with a local
//! directory backend and an S3 backend, and a [`MountTable`] that maps Hoard paths onto them.
//!
//! Both backends go through [opendal](https://opendal.apache.org/) with a timeout layer (per
//! attempt) under a retry layer (temporary failures only); see [`UfsOptions`]. docs/ufs.md is the
//! user-facing description of URIs, credentials, mount semantics, listing and errors.
//!
//! Nothing here reads the environment or a config file on its own: the S3 credentials come from
//! `hoard_config::S3Config` and, for what that leaves unset, from an environment *snapshot* the
//! caller passes ([`MountTable::from_config_with_env`]); only [`MountTable::from_config`] reads
//! the process environment, and only because its caller asked for it.
//!
//! CONTRACT (other crates code against these names; keep them stable):

use std::ops::Range;
use std::time::Duration;

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

/// What the UFS says about one file or directory. `path` is the Hoard path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UfsStatus {
    pub path: HoardPath,
    pub is_dir: bool,
    pub length: u64,
    pub modification_time_ms: Option<i64>,
    pub etag: Option<String>,
}

impl UfsStatus {
    /// The version pages are keyed by: length, modification time and etag together, so a
    /// rewritten file gets a new version even when one of them is unavailable.
    pub fn version(&self) -> String {
        format!(
            "{}-{}-{}",
            self.length,
            self.modification_time_ms.map(|ms| ms.to_string()).unwrap_or_default(),
            self.etag.as_deref().unwrap_or("")
        )
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
    /// now another version (length, modification time or etag differ) the answer is
    /// [`UfsError::Changed`]. Caches use it so a rewrite never mixes old and new bytes. The
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
    pub etag: Option<String>,
}

impl RawStatus {
    /// A directory without a known modification time (S3 prefixes, mount points).
    pub fn directory() -> RawStatus {
        RawStatus {
            is_dir: true,
            length: 0,
            modification_time_ms: None,
            etag: None,
        }
    }

    /// True when both describe the same version of a file (see [`UfsStatus::version`]).
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
        }
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
