//! The UFS ("under file system"): where the data really lives. A narrow async trait with a local
//! directory backend and an S3 backend, and a [`MountTable`] that maps Hoard paths onto them.
//!
//! CONTRACT (other crates code against these names; keep them stable):

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use hoard_common::HoardPath;

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
    #[error("invalid ufs configuration: {0}")]
    Config(String),
    /// Anything else the backend reports; `retryable` says whether trying again may help.
    #[error("ufs error on {path}: {message}")]
    Backend { path: String, message: String, retryable: bool },
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
#[async_trait::async_trait]
pub trait Ufs: Send + Sync + std::fmt::Debug {
    async fn status(&self, relative: &str) -> Result<RawStatus, UfsError>;
    async fn read(&self, relative: &str, range: Range<u64>) -> Result<Bytes, UfsError>;
    /// Streams one directory level. Must not collect the whole listing in memory.
    async fn list(&self, relative: &str) -> Result<BoxStream<'static, Result<RawEntry, UfsError>>, UfsError>;
}

/// A backend's status of one path (relative to the backend root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStatus {
    pub is_dir: bool,
    pub length: u64,
    pub modification_time_ms: Option<i64>,
    pub etag: Option<String>,
}

/// One child from a backend listing: its name (single segment) and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: String,
    pub status: RawStatus,
}

/// Maps Hoard paths onto backends: `hoard.underfs.root` at `/`, plus `hoard.mount.*` mounts.
/// The longest mount point that is a segment-wise prefix of a path wins.
#[derive(Debug, Clone)]
pub struct MountTable {
    _mounts: Vec<(HoardPath, Arc<dyn Ufs>)>,
}

impl MountTable {
    pub fn from_config(config: &hoard_config::UfsConfig) -> Result<MountTable, UfsError> {
        let _ = config;
        todo!()
    }

    pub async fn status(&self, path: &HoardPath) -> Result<UfsStatus, UfsError> {
        let _ = path;
        todo!()
    }

    pub async fn read(&self, path: &HoardPath, range: Range<u64>) -> Result<Bytes, UfsError> {
        let _ = (path, range);
        todo!()
    }

    /// Streams the children of a directory as Hoard-path statuses.
    pub async fn list(&self, path: &HoardPath) -> Result<BoxStream<'static, Result<UfsStatus, UfsError>>, UfsError> {
        let _ = path;
        todo!()
    }
}
