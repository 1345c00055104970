//! Glue shared by the backends: opendal errors and metadata into Hoard's types, the layers every
//! operator gets, listing-entry names.

use std::time::{SystemTime, UNIX_EPOCH};

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{EntryMode, ErrorKind, Metadata, Operator};

use crate::{RawStatus, UfsError, UfsOptions};

/// Timeout under retry: each attempt is timed out on its own, and a timed-out attempt is a
/// temporary error the retry layer tries again (the order opendal's docs require).
pub(crate) fn layered(op: Operator, options: &UfsOptions) -> Operator {
    op.layer(
        TimeoutLayer::new()
            .with_timeout(options.timeout)
            .with_io_timeout(options.timeout),
    )
    .layer(
        RetryLayer::new()
            .with_max_times(options.max_retries)
            .with_min_delay(options.retry_min_delay)
            .with_max_delay(options.retry_max_delay.max(options.retry_min_delay))
            .with_factor(2.0)
            .with_jitter(),
    )
}

/// An opendal error on `relative` as a [`UfsError`] naming `relative`.
pub(crate) fn from_opendal(err: opendal::Error, relative: &str) -> UfsError {
    let path = relative.to_string();
    match err.kind() {
        ErrorKind::NotFound if err.to_string().contains("NoSuchBucket") => {
            UfsError::Config(format!("the S3 bucket does not exist: {err}"))
        }
        ErrorKind::NotFound => UfsError::NotFound(path),
        ErrorKind::PermissionDenied => UfsError::PermissionDenied(path),
        ErrorKind::IsADirectory => UfsError::IsDirectory(path),
        ErrorKind::NotADirectory => UfsError::NotDirectory(path),
        ErrorKind::ConfigInvalid => UfsError::Config(err.to_string()),
        kind => {
            // Temporary: not retried yet (or retries disabled). Persistent: temporary, but the
            // retry layer gave up; a later attempt may still succeed.
            let retryable = err.is_temporary() || err.is_persistent() || kind == ErrorKind::RateLimited;
            UfsError::Backend {
                path,
                message: err.to_string(),
                retryable,
            }
        }
    }
}

/// A std IO error on `relative` (the local backend's own checks).
pub(crate) fn from_io(err: std::io::Error, relative: &str) -> UfsError {
    use std::io::ErrorKind as Io;
    let path = relative.to_string();
    match err.kind() {
        // A missing component, or a component that is a file (`file/child`): nothing there.
        Io::NotFound | Io::NotADirectory => UfsError::NotFound(path),
        Io::PermissionDenied => UfsError::PermissionDenied(path),
        Io::InvalidFilename | Io::InvalidInput => UfsError::InvalidPath(format!("{path} ({err})")),
        Io::Unsupported => UfsError::Backend {
            path,
            message: err.to_string(),
            retryable: false,
        },
        _ => UfsError::Backend {
            path,
            message: err.to_string(),
            retryable: true,
        },
    }
}

/// Milliseconds since the Unix epoch, rounded down (also before 1970).
pub(crate) fn system_time_ms(time: SystemTime) -> Option<i64> {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).ok(),
        Err(before) => {
            let before = before.duration();
            let ms = i64::try_from(before.as_millis()).ok()?;
            Some(if before.subsec_nanos() % 1_000_000 == 0 {
                -ms
            } else {
                -ms - 1
            })
        }
    }
}

pub(crate) fn metadata_mtime_ms(meta: &Metadata) -> Option<i64> {
    meta.last_modified().and_then(|ts| system_time_ms(SystemTime::from(ts)))
}

/// S3 etags arrive quoted (`"9b2cf5..."`), in HEAD headers and in listings alike.
pub(crate) fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

/// How a listing entry's metadata reads, when the lister provided it.
pub(crate) enum EntryKind {
    Known(RawStatus),
    /// The lister could not tell (local symlinks, special files): the caller must stat it.
    Unknown,
}

/// `mtime` post-processes the modification time (S3 rounds to whole seconds).
pub(crate) fn entry_status(meta: &Metadata, mtime: impl Fn(Option<i64>) -> Option<i64>) -> EntryKind {
    match meta.mode() {
        EntryMode::DIR => EntryKind::Known(RawStatus {
            modification_time_ms: mtime(metadata_mtime_ms(meta)),
            ..RawStatus::directory()
        }),
        EntryMode::FILE => EntryKind::Known(RawStatus {
            is_dir: false,
            length: meta.content_length(),
            modification_time_ms: mtime(metadata_mtime_ms(meta)),
            etag: meta.etag().map(normalize_etag),
            // Listings carry no change time: S3 needs none (the ETag is the version), and a
            // local lister does not report it (see docs/ufs.md, Listing).
            changed_at: None,
        }),
        EntryMode::Unknown => EntryKind::Unknown,
    }
}

/// The child name of a listing entry `entry_path` in the directory whose listing prefix is
/// `dir_prefix` (`""` for the root, else `"dir/"`). `None` for the directory itself and for
/// names a Hoard path cannot carry (empty, `.`, `..`, containing `/` or NUL): S3 keys such as
/// `a//b` or `a/../b` exist but have no Hoard path.
pub(crate) fn child_name<'a>(dir_prefix: &str, entry_path: &'a str) -> Option<&'a str> {
    let rest = entry_path.strip_prefix(dir_prefix).or_else(|| {
        // opendal yields the root itself as "/".
        if dir_prefix.is_empty() {
            entry_path.strip_prefix('/')
        } else {
            None
        }
    })?;
    let name = rest.strip_suffix('/').unwrap_or(rest);
    if name.is_empty() {
        return None; // the directory itself
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        tracing::warn!(
            entry = entry_path,
            "skipping a listing entry that has no valid Hoard path"
        );
        return None;
    }
    Some(name)
}

/// `relative` joined with a child name.
pub(crate) fn join_relative(relative: &str, name: &str) -> String {
    if relative.is_empty() {
        name.to_string()
    } else {
        format!("{relative}/{name}")
    }
}

/// Refuses relative paths a [`hoard_common::HoardPath`] could not have produced; the backends
/// are public, so they do not rely on their callers for this.
pub(crate) fn check_relative(relative: &str) -> Result<(), UfsError> {
    if relative.is_empty() {
        return Ok(());
    }
    let bad = relative.starts_with('/')
        || relative.contains('\0')
        || relative
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..");
    if bad {
        return Err(UfsError::InvalidPath(relative.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_round_down_to_milliseconds() {
        assert_eq!(system_time_ms(UNIX_EPOCH), Some(0));
        assert_eq!(system_time_ms(UNIX_EPOCH + Duration::from_micros(1_999)), Some(1));
        assert_eq!(system_time_ms(UNIX_EPOCH - Duration::from_micros(1)), Some(-1));
        assert_eq!(system_time_ms(UNIX_EPOCH - Duration::from_millis(2)), Some(-2));
    }

    #[test]
    fn child_names() {
        assert_eq!(child_name("", "/"), None);
        assert_eq!(child_name("", "a"), Some("a"));
        assert_eq!(child_name("", "sub/"), Some("sub"));
        assert_eq!(child_name("d/", "d/"), None);
        assert_eq!(child_name("d/", "d/x.bin"), Some("x.bin"));
        assert_eq!(child_name("d/", "d/sub/"), Some("sub"));
        assert_eq!(child_name("d/", "d//"), None);
        assert_eq!(child_name("d/", "d/../"), None);
        assert_eq!(child_name("d/", "d/a/b"), None);
        assert_eq!(child_name("d/", "e/x"), None);
    }

    #[test]
    fn relative_paths_are_checked() {
        for ok in ["", "a", "a/b.bin", "a/.hidden"] {
            assert!(check_relative(ok).is_ok(), "{ok}");
        }
        for bad in ["/a", "a/", "a//b", "a/./b", "../x", "a/..", "a\0b"] {
            assert!(matches!(check_relative(bad), Err(UfsError::InvalidPath(_))), "{bad}");
        }
    }

    #[test]
    fn etags_lose_their_quotes() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("abc-3"), "abc-3");
    }

    #[test]
    fn opendal_errors_map_to_hoard_errors() {
        let e = |kind| opendal::Error::new(kind, "boom");
        assert!(matches!(from_opendal(e(ErrorKind::NotFound), "a/b"), UfsError::NotFound(p) if p == "a/b"));
        assert!(matches!(
            from_opendal(e(ErrorKind::PermissionDenied), "a"),
            UfsError::PermissionDenied(_)
        ));
        assert!(matches!(
            from_opendal(e(ErrorKind::IsADirectory), "a"),
            UfsError::IsDirectory(_)
        ));
        assert!(matches!(
            from_opendal(e(ErrorKind::ConfigInvalid), "a"),
            UfsError::Config(_)
        ));
        // A timeout or a 5xx is temporary; after the retry layer gives up it is persistent.
        assert!(from_opendal(e(ErrorKind::Unexpected).set_temporary(), "a").is_retryable());
        assert!(from_opendal(e(ErrorKind::Unexpected).set_persistent(), "a").is_retryable());
        assert!(from_opendal(e(ErrorKind::RateLimited), "a").is_retryable());
        // A 400 and friends are permanent.
        assert!(!from_opendal(e(ErrorKind::Unexpected), "a").is_retryable());
        let bucket = opendal::Error::new(ErrorKind::NotFound, "<Code>NoSuchBucket</Code>");
        assert!(matches!(from_opendal(bucket, "a"), UfsError::Config(_)));
    }

    #[test]
    fn io_errors_map_to_hoard_errors() {
        use std::io::{Error, ErrorKind as Io};
        assert!(matches!(from_io(Error::from(Io::NotFound), "x"), UfsError::NotFound(_)));
        assert!(matches!(
            from_io(Error::from(Io::NotADirectory), "x"),
            UfsError::NotFound(_)
        ));
        assert!(matches!(
            from_io(Error::from(Io::PermissionDenied), "x"),
            UfsError::PermissionDenied(_)
        ));
        assert!(from_io(Error::other("EIO"), "x").is_retryable());
    }
}
