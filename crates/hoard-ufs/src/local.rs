//! The local-directory backend, confined to its root: plain reads through opendal
//! (`services-fs`); status, versioned reads and listings on std's file system calls, which give
//! what a version needs (inode, ctime and mtime in nanoseconds) and opendal does not carry.
//!
//! Symlink policy: a path is resolved (`realpath`) before it is used, and it must still lie under
//! the (resolved) root. A symlink whose target is inside the root is followed; one that leads
//! outside is refused with `PermissionDenied` by status and read, and left out of listings, as are
//! dangling symlinks and special files (FIFOs, sockets, devices: reading them could block or
//! never end). opendal is then handed the resolved path, so it never follows a link we did not
//! check. `..` cannot occur: Hoard paths refuse it, and this backend refuses it again.
//!
//! This guards against links that point out of the tree (a misconfiguration, a careless
//! `ln -s /`); it is not a defence against someone who can rewrite the tree while we read it
//! (they could swap a checked component for a link between the check and the open).

use std::fmt;
use std::fs::Metadata;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use opendal::{ErrorKind, Operator};

use crate::buffers;
use crate::convert;
use crate::{RawEntry, RawStatus, Ufs, UfsError, UfsOptions};

/// A local (or locally mounted: NFS, Lustre, ...) directory.
#[derive(Clone)]
pub struct LocalUfs {
    inner: Arc<Inner>,
}

struct Inner {
    /// Canonical (symlink-free, absolute) root.
    root: PathBuf,
    /// Reads: opendal's full stack.
    op: Operator,
    /// Bounds our own metadata calls and listings (a hung NFS server must not hang the caller forever).
    timeout: Duration,
}

impl fmt::Debug for LocalUfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalUfs").field("root", &self.inner.root).finish()
    }
}

/// A relative path resolved inside the root.
struct Resolved {
    /// Relative to the canonical root, symlinks resolved; `""` for the root.
    canonical: String,
    meta: Metadata,
}

impl LocalUfs {
    /// `root` must be an absolute path to an existing directory (it may itself be a symlink).
    pub fn new(root: &Path, options: &UfsOptions) -> Result<LocalUfs, UfsError> {
        if !root.is_absolute() {
            return Err(UfsError::Config(format!(
                "the local UFS root {} is not an absolute path",
                root.display()
            )));
        }
        let canonical = std::fs::canonicalize(root)
            .map_err(|err| UfsError::Config(format!("the local UFS root {} is not usable: {err}", root.display())))?;
        if !canonical.is_dir() {
            return Err(UfsError::Config(format!(
                "the local UFS root {} is not a directory",
                root.display()
            )));
        }
        let root_str = canonical
            .to_str()
            .ok_or_else(|| UfsError::Config(format!("the local UFS root {} is not UTF-8", root.display())))?;
        let config_error =
            |err: opendal::Error| UfsError::Config(format!("the local UFS root {}: {err}", root.display()));
        let op = Operator::new(opendal::services::Fs::default().root(root_str)).map_err(config_error)?;
        Ok(LocalUfs {
            inner: Arc::new(Inner {
                root: canonical,
                op: convert::layered(op, options),
                timeout: options.timeout,
            }),
        })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }
}

impl Inner {
    async fn resolve(self: &Arc<Self>, relative: &str) -> Result<Resolved, UfsError> {
        convert::check_relative(relative)?;
        let owned = relative.to_string();
        self.blocking(relative, "stat", move |inner| inner.resolve_blocking(&owned))
            .await
    }

    /// Runs file system calls on the blocking pool, bounded by the UFS timeout.
    async fn blocking<T, F>(self: &Arc<Self>, relative: &str, what: &str, work: F) -> Result<T, UfsError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, UfsError> + Send + 'static,
    {
        let inner = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || work(&inner));
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => Err(UfsError::Backend {
                path: relative.to_string(),
                message: format!("{what} task failed: {err}"),
                retryable: true,
            }),
            Err(_) => Err(UfsError::Backend {
                path: relative.to_string(),
                message: format!("{what} timed out after {:?}", self.timeout),
                retryable: true,
            }),
        }
    }

    /// An async file system call bounded by the UFS timeout.
    async fn timed<T>(
        &self,
        relative: &str,
        what: &str,
        call: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> Result<T, UfsError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|err| convert::from_io(err, relative)),
            Err(_) => Err(UfsError::Backend {
                path: relative.to_string(),
                message: format!("{what} timed out after {:?}", self.timeout),
                retryable: true,
            }),
        }
    }

    /// One open file: check its version, read the range, check the version again. The file's
    /// own descriptor is stat'ed, so a rename over the path in between cannot slip through.
    fn read_version_blocking(
        &self,
        relative: &str,
        range: Range<u64>,
        expected: &RawStatus,
    ) -> Result<Bytes, UfsError> {
        let resolved = self.resolve_blocking(relative)?;
        if resolved.meta.is_dir() {
            return Err(UfsError::IsDirectory(relative.to_string()));
        }
        let io_error = |err: std::io::Error| convert::from_io(err, relative);
        let file = std::fs::File::open(self.root.join(&resolved.canonical)).map_err(io_error)?;
        let before = file.metadata().map_err(io_error)?;
        if !raw_status(&before).same_version(expected) {
            return Err(UfsError::Changed(relative.to_string()));
        }
        let end = range.end.min(before.len());
        if range.start >= end {
            return Ok(Bytes::new());
        }
        let len = end - range.start;
        let buffer = buffers::read_range(&file, range.start..end).map_err(io_error)?;
        let after = file.metadata().map_err(io_error)?;
        if !raw_status(&after).same_version(expected) || buffer.len() as u64 != len {
            return Err(UfsError::Changed(relative.to_string()));
        }
        Ok(buffer)
    }

    fn resolve_blocking(&self, relative: &str) -> Result<Resolved, UfsError> {
        let joined = if relative.is_empty() {
            self.root.clone()
        } else {
            self.root.join(relative)
        };
        let canonical = std::fs::canonicalize(&joined).map_err(|err| convert::from_io(err, relative))?;
        let Ok(inside) = canonical.strip_prefix(&self.root) else {
            return Err(UfsError::PermissionDenied(format!(
                "{relative} (a symbolic link leads outside the UFS root)"
            )));
        };
        let canonical_relative = inside
            .to_str()
            .ok_or_else(|| UfsError::InvalidPath(format!("{relative} (resolves to a name that is not UTF-8)")))?
            .to_string();
        let meta = std::fs::metadata(&canonical).map_err(|err| convert::from_io(err, relative))?;
        if !meta.is_file() && !meta.is_dir() {
            // FIFOs, sockets, devices: not data Hoard can cache.
            return Err(UfsError::NotFound(relative.to_string()));
        }
        Ok(Resolved {
            canonical: canonical_relative,
            meta,
        })
    }
}

fn raw_status(meta: &Metadata) -> RawStatus {
    if meta.is_dir() {
        return RawStatus {
            modification_time_ms: meta.modified().ok().and_then(convert::system_time_ms),
            ..RawStatus::directory()
        };
    }
    RawStatus {
        is_dir: false,
        length: meta.len(),
        modification_time_ms: meta.modified().ok().and_then(convert::system_time_ms),
        etag: Some(change_token(meta)),
        changed_at: timestamp(meta.ctime(), meta.ctime_nsec()),
    }
}

/// What a rewrite of the file cannot keep, as the local etag: the inode (a file replaced by a
/// rename is another inode), the ctime (stamped by the kernel on every write, truncation and
/// `utimensat`: restoring the mtime as `cp -p`, `rsync -a` or `touch -r` do still moves it) and
/// the mtime, both in nanoseconds. The device is left out on purpose: it is the same for every
/// file under one root, and it is renumbered when a network or overlay file system is mounted
/// again, which would orphan a whole page store that survives restarts.
fn change_token(meta: &Metadata) -> String {
    format!(
        "i{}-c{}-m{}",
        meta.ino(),
        nanos(meta.ctime(), meta.ctime_nsec()),
        nanos(meta.mtime(), meta.mtime_nsec())
    )
}

/// Nanoseconds since the epoch (negative before it).
fn nanos(seconds: i64, nanoseconds: i64) -> i128 {
    i128::from(seconds) * 1_000_000_000 + i128::from(nanoseconds)
}

/// A `stat` timestamp as a `SystemTime`.
fn timestamp(seconds: i64, nanoseconds: i64) -> Option<SystemTime> {
    let nanoseconds = u32::try_from(nanoseconds).ok()?;
    if seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(seconds.unsigned_abs(), nanoseconds))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(seconds.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(nanoseconds)))
    }
}

#[async_trait::async_trait]
impl Ufs for LocalUfs {
    /// Uses the metadata the confinement check already fetched (no second stat through opendal).
    async fn status(&self, relative: &str) -> Result<RawStatus, UfsError> {
        let resolved = self.inner.resolve(relative).await?;
        Ok(raw_status(&resolved.meta))
    }

    async fn read(&self, relative: &str, range: Range<u64>) -> Result<Bytes, UfsError> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let resolved = self.inner.resolve(relative).await?;
        if resolved.meta.is_dir() {
            return Err(UfsError::IsDirectory(relative.to_string()));
        }
        let length = resolved.meta.len();
        if range.start >= length {
            return Ok(Bytes::new());
        }
        let range = range.start..range.end.min(length);
        match self.inner.op.read_with(&resolved.canonical).range(range).await {
            Ok(buffer) => Ok(buffer.to_bytes()),
            // The file shrank between the stat and the read.
            Err(err) if err.kind() == ErrorKind::RangeNotSatisfied => Ok(Bytes::new()),
            Err(err) => Err(convert::from_opendal(err, relative)),
        }
    }

    async fn read_version(&self, relative: &str, range: Range<u64>, expected: &RawStatus) -> Result<Bytes, UfsError> {
        convert::check_relative(relative)?;
        let owned = relative.to_string();
        let expected = expected.clone();
        self.inner
            .blocking(relative, "read", move |inner| {
                inner.read_version_blocking(&owned, range, &expected)
            })
            .await
    }

    /// `readdir` and one `lstat` per entry (on the blocking pool, each bounded by the UFS
    /// timeout), so every entry carries the status a `status` of it gives, change token
    /// included.
    async fn list(&self, relative: &str) -> Result<BoxStream<'static, Result<RawEntry, UfsError>>, UfsError> {
        let resolved = self.inner.resolve(relative).await?;
        if !resolved.meta.is_dir() {
            return Err(UfsError::NotDirectory(relative.to_string()));
        }
        let dir = self.inner.root.join(&resolved.canonical);
        let read_dir = self.inner.timed(relative, "list", tokio::fs::read_dir(dir)).await?;
        let lister = Lister {
            read_dir,
            inner: Arc::clone(&self.inner),
            relative: relative.to_string(),
        };
        let stream = futures::stream::unfold(Some(lister), |lister| async move {
            let mut lister = lister?;
            match lister.next().await {
                Ok(Some(entry)) => Some((Ok(entry), Some(lister))),
                Ok(None) => None,
                // A failure ends the listing.
                Err(err) => Some((Err(err), None)),
            }
        });
        Ok(stream.boxed())
    }
}

/// One directory being listed.
struct Lister {
    read_dir: tokio::fs::ReadDir,
    inner: Arc<Inner>,
    relative: String,
}

impl Lister {
    /// The next entry that lists: files and directories, and symlinks that resolve inside the
    /// root to one of them. Entries removed while the listing runs are skipped.
    async fn next(&mut self) -> Result<Option<RawEntry>, UfsError> {
        loop {
            let next = self.read_dir.next_entry();
            let Some(entry) = self.inner.timed(&self.relative, "list", next).await? else {
                return Ok(None);
            };
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                tracing::debug!(
                    dir = self.relative,
                    "leaving a name that is not UTF-8 out of the listing"
                );
                continue;
            };
            let child = convert::join_relative(&self.relative, &name);
            // `DirEntry::metadata` does not follow symlinks.
            let meta = match self.inner.timed(&child, "stat", entry.metadata()).await {
                Ok(meta) => meta,
                Err(UfsError::NotFound(_)) => continue,
                Err(err) => return Err(err),
            };
            if meta.is_file() || meta.is_dir() {
                return Ok(Some(RawEntry {
                    name,
                    status: raw_status(&meta),
                }));
            }
            // A symlink or a special file: only what resolves inside the root to a file or
            // directory is listed.
            match self.inner.resolve(&child).await {
                Ok(resolved) => {
                    return Ok(Some(RawEntry {
                        name,
                        status: raw_status(&resolved.meta),
                    }))
                }
                Err(err) => {
                    tracing::debug!(path = child, error = %err, "leaving an entry out of the listing");
                }
            }
        }
    }
}
