//! UFS URIs: `s3://bucket/prefix`, `file:///dir`, or a plain absolute directory.

use std::fmt;
use std::path::PathBuf;

use crate::UfsError;

/// A parsed UFS URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UfsUri {
    /// A local (or locally mounted) directory: `/dir` or `file:///dir`.
    Local(PathBuf),
    /// `s3://bucket/prefix` (`s3a://` is accepted too). `prefix` has no leading or trailing `/`
    /// and is `""` for the whole bucket.
    S3 { bucket: String, prefix: String },
}

impl UfsUri {
    pub fn parse(raw: &str) -> Result<UfsUri, UfsError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(UfsError::Config("the UFS URI is empty".to_string()));
        }
        let lower = trimmed.to_ascii_lowercase();
        if let Some(scheme_len) = ["s3://", "s3a://"]
            .iter()
            .find(|s| lower.starts_with(**s))
            .map(|s| s.len())
        {
            return parse_s3(raw, &trimmed[scheme_len..]);
        }
        if lower.starts_with("file://") {
            let rest = &trimmed["file://".len()..];
            // file:///dir (empty authority) or file://localhost/dir; never another host.
            let path = if rest.starts_with('/') {
                rest
            } else if rest
                .get(.."localhost/".len())
                .is_some_and(|host| host.eq_ignore_ascii_case("localhost/"))
            {
                &rest["localhost".len()..]
            } else {
                return Err(UfsError::Config(format!(
                    "{raw:?}: a file URI must be file:///absolute/dir (no host)"
                )));
            };
            return parse_local(raw, path);
        }
        if trimmed.starts_with('/') {
            return parse_local(raw, trimmed);
        }
        Err(UfsError::Config(format!(
            "{raw:?}: unsupported UFS URI (use s3://bucket/prefix, file:///dir or an absolute directory)"
        )))
    }
}

fn parse_local(raw: &str, path: &str) -> Result<UfsUri, UfsError> {
    if path.contains('\0') {
        return Err(UfsError::Config(format!("{raw:?}: the path contains a NUL byte")));
    }
    if path.split('/').any(|segment| segment == "..") {
        return Err(UfsError::Config(format!(
            "{raw:?}: the directory must not contain '..'"
        )));
    }
    Ok(UfsUri::Local(PathBuf::from(path)))
}

fn parse_s3(raw: &str, rest: &str) -> Result<UfsUri, UfsError> {
    let (bucket, prefix) = match rest.split_once('/') {
        Some((bucket, prefix)) => (bucket, prefix),
        None => (rest, ""),
    };
    // Bucket naming rules (loosely: legacy buckets may have upper case and underscores).
    let valid_bucket = (3..=255).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-']);
    if !valid_bucket {
        return Err(UfsError::Config(format!(
            "{raw:?}: {bucket:?} is not a valid S3 bucket name"
        )));
    }
    let segments: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") || prefix.contains('\0') {
        return Err(UfsError::Config(format!(
            "{raw:?}: the prefix must not contain '.' or '..' segments"
        )));
    }
    Ok(UfsUri::S3 {
        bucket: bucket.to_string(),
        prefix: segments.join("/"),
    })
}

impl fmt::Display for UfsUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UfsUri::Local(dir) => write!(f, "file://{}", dir.display()),
            UfsUri::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}/"),
            UfsUri::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}/"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> UfsUri {
        UfsUri::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }
    }

    #[test]
    fn parses_uris() {
        assert_eq!(UfsUri::parse("/data/ufs").unwrap(), UfsUri::Local("/data/ufs".into()));
        assert_eq!(
            UfsUri::parse("file:///data/ufs").unwrap(),
            UfsUri::Local("/data/ufs".into())
        );
        assert_eq!(
            UfsUri::parse("file://localhost/data").unwrap(),
            UfsUri::Local("/data".into())
        );
        assert_eq!(UfsUri::parse("s3://bucket").unwrap(), s3("bucket", ""));
        assert_eq!(UfsUri::parse("s3://bucket/").unwrap(), s3("bucket", ""));
        assert_eq!(UfsUri::parse("s3://bucket/a/b/").unwrap(), s3("bucket", "a/b"));
        assert_eq!(UfsUri::parse("S3A://my.bucket//a//b").unwrap(), s3("my.bucket", "a/b"));
        assert_eq!(
            UfsUri::parse("s3://bucket/a/b").unwrap().to_string(),
            "s3://bucket/a/b/"
        );
    }

    #[test]
    fn refuses_bad_uris() {
        for bad in [
            "",
            "relative/dir",
            "file://otherhost/dir",
            "/data/../etc",
            "s3://",
            "s3:///prefix",
            "s3://b/x",
            "s3://bad bucket/x",
            "s3://bucket/a/../b",
            "hdfs://nn/x",
        ] {
            assert!(matches!(UfsUri::parse(bad), Err(UfsError::Config(_))), "{bad:?}");
        }
    }
}
