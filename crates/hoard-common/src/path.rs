//! Hoard paths: absolute, `/`-separated, normalized before anything hashes or resolves them.
//!
//! Clients hash the normalized form onto the ring and workers resolve it through the mount
//! table, so both sides must agree byte for byte on what a path is.

use std::fmt;

/// Longest path accepted, in bytes. Bounds what a request can make us allocate and hash.
pub const MAX_PATH_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must be absolute (start with '/'): {0:?}")]
    NotAbsolute(String),
    #[error("path escapes the root with '..': {0:?}")]
    EscapesRoot(String),
    #[error("path contains a NUL byte")]
    ContainsNul,
    #[error("path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
}

/// A normalized absolute path: starts with `/`, no empty, `.` or `..` segments, no trailing `/`
/// (except the root itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoardPath(String);

impl HoardPath {
    pub fn root() -> HoardPath {
        HoardPath("/".to_string())
    }

    /// Normalizes `raw` lexically. `..` pops a segment; popping above `/` is refused rather than
    /// clamped, so a request can never name something outside the namespace it was given.
    pub fn parse(raw: &str) -> Result<HoardPath, PathError> {
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        if raw.contains('\0') {
            return Err(PathError::ContainsNul);
        }
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute(raw.to_string()));
        }
        let mut segments: Vec<&str> = Vec::new();
        for segment in raw.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    if segments.pop().is_none() {
                        return Err(PathError::EscapesRoot(raw.to_string()));
                    }
                }
                other => segments.push(other),
            }
        }
        if segments.is_empty() {
            return Ok(HoardPath::root());
        }
        let mut normalized = String::with_capacity(raw.len());
        for segment in &segments {
            normalized.push('/');
            normalized.push_str(segment);
        }
        Ok(HoardPath(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// Segments without the leading root, e.g. `["a", "b.bin"]` for `/a/b.bin`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|segment| !segment.is_empty())
    }

    /// The last segment, or `""` for the root.
    pub fn file_name(&self) -> &str {
        self.segments().last().unwrap_or("")
    }

    /// `self` joined with one child name. The name must be a single segment.
    pub fn join(&self, name: &str) -> Result<HoardPath, PathError> {
        if self.is_root() {
            return HoardPath::parse(&format!("/{name}"));
        }
        HoardPath::parse(&format!("{}/{name}", self.0))
    }

    /// True when `self` is `prefix` or lies under it (segment-wise, so `/ab` is not under `/a`).
    pub fn starts_with(&self, prefix: &HoardPath) -> bool {
        if prefix.is_root() {
            return true;
        }
        self.0 == prefix.0 || (self.0.starts_with(&prefix.0) && self.0.as_bytes().get(prefix.0.len()) == Some(&b'/'))
    }

    /// The part of `self` below `prefix`, without a leading `/` (`""` when equal).
    pub fn strip_prefix(&self, prefix: &HoardPath) -> Option<&str> {
        if !self.starts_with(prefix) {
            return None;
        }
        if prefix.is_root() {
            return Some(self.0.trim_start_matches('/'));
        }
        Some(self.0[prefix.0.len()..].trim_start_matches('/'))
    }
}

impl fmt::Display for HoardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for HoardPath {
    type Err = PathError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        HoardPath::parse(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalizes() {
        let cases = [
            ("/", "/"),
            ("//", "/"),
            ("/a//b/", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a"),
        ];
        for (raw, want) in cases {
            assert_eq!(HoardPath::parse(raw).unwrap().as_str(), want, "{raw}");
        }
    }

    #[test]
    fn refuses_escape_and_garbage() {
        assert!(matches!(HoardPath::parse("/.."), Err(PathError::EscapesRoot(_))));
        assert!(matches!(
            HoardPath::parse("/a/../../etc/passwd"),
            Err(PathError::EscapesRoot(_))
        ));
        assert!(matches!(HoardPath::parse("a/b"), Err(PathError::NotAbsolute(_))));
        assert!(matches!(HoardPath::parse(""), Err(PathError::NotAbsolute(_))));
        assert_eq!(HoardPath::parse("/a\0b"), Err(PathError::ContainsNul));
        assert_eq!(
            HoardPath::parse(&format!("/{}", "x".repeat(MAX_PATH_BYTES))),
            Err(PathError::TooLong)
        );
    }

    #[test]
    fn prefix_is_segment_wise() {
        let a = HoardPath::parse("/a").unwrap();
        assert!(HoardPath::parse("/a/b").unwrap().starts_with(&a));
        assert!(!HoardPath::parse("/ab").unwrap().starts_with(&a));
        assert_eq!(HoardPath::parse("/a/b/c").unwrap().strip_prefix(&a), Some("b/c"));
        assert_eq!(a.strip_prefix(&a), Some(""));
        assert_eq!(a.strip_prefix(&HoardPath::root()), Some("a"));
    }

    proptest! {
        #[test]
        fn normalized_is_fixed_point_and_never_dotdot(raw in "(/[a-z.]{0,3}){0,6}") {
            if let Ok(path) = HoardPath::parse(&raw) {
                prop_assert_eq!(HoardPath::parse(path.as_str()).unwrap(), path.clone());
                prop_assert!(path.segments().all(|s| s != ".." && s != "." && !s.is_empty()));
            }
        }
    }
}
