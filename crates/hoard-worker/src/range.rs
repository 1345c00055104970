//! `Range` header parsing (RFC 9110 §14), one range per request. Pure: tested without a server.

use std::ops::Range;

/// Longest `Range` header value accepted. A legitimate single range fits in ~50 bytes.
pub const MAX_RANGE_HEADER_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeError {
    /// Syntactically invalid or too long: 400.
    Malformed(String),
    /// Valid but cannot be served for this file length (or several ranges asked): 416.
    NotSatisfiable(String),
}

/// The byte range to serve for a file of `length` bytes, or `None` for the whole file (no header).
/// Ends past the file are clamped, as RFC 9110 says; a start at or past the end is 416.
pub fn resolve(header: Option<&str>, length: u64) -> Result<Option<Range<u64>>, RangeError> {
    let Some(raw) = header else {
        return Ok(None);
    };
    if raw.len() > MAX_RANGE_HEADER_BYTES {
        return Err(RangeError::Malformed(format!(
            "range header longer than {MAX_RANGE_HEADER_BYTES} bytes"
        )));
    }
    let spec = raw
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(|| RangeError::Malformed(format!("unsupported range unit in {raw:?}")))?;
    if spec.contains(',') {
        return Err(RangeError::NotSatisfiable(
            "multiple ranges are not supported".to_string(),
        ));
    }
    let (first, last) = spec
        .trim()
        .split_once('-')
        .ok_or_else(|| RangeError::Malformed(format!("invalid range {raw:?}")))?;
    let parse = |digits: &str| -> Result<u64, RangeError> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RangeError::Malformed(format!("invalid range {raw:?}")));
        }
        // Over-long numbers are past any file end: treat as u64::MAX rather than failing.
        Ok(digits.parse::<u64>().unwrap_or(u64::MAX))
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let suffix = parse(last)?;
        if suffix == 0 || length == 0 {
            return Err(RangeError::NotSatisfiable(format!(
                "range {raw:?} selects no bytes of a {length}-byte file"
            )));
        }
        return Ok(Some(length.saturating_sub(suffix)..length));
    }
    let start = parse(first)?;
    let end_inclusive = if last.is_empty() { u64::MAX } else { parse(last)? };
    if end_inclusive < start {
        return Err(RangeError::Malformed(format!("range {raw:?} ends before it starts")));
    }
    if start >= length {
        return Err(RangeError::NotSatisfiable(format!(
            "range {raw:?} starts at or past the end of a {length}-byte file"
        )));
    }
    let end = end_inclusive.saturating_add(1).min(length);
    Ok(Some(start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_forms() {
        assert_eq!(resolve(None, 10), Ok(None));
        assert_eq!(resolve(Some("bytes=0-99"), 1000), Ok(Some(0..100)));
        assert_eq!(resolve(Some("bytes=0-99"), 50), Ok(Some(0..50)));
        assert_eq!(resolve(Some("bytes=5-"), 10), Ok(Some(5..10)));
        assert_eq!(resolve(Some("bytes=-3"), 10), Ok(Some(7..10)));
        assert_eq!(resolve(Some("bytes=-30"), 10), Ok(Some(0..10)));
        assert_eq!(resolve(Some("bytes=9-9"), 10), Ok(Some(9..10)));
        assert_eq!(resolve(Some("bytes=0-99999999999999999999999"), 10), Ok(Some(0..10)));
    }

    #[test]
    fn refuses_bad_ranges() {
        assert!(matches!(
            resolve(Some("bytes=10-"), 10),
            Err(RangeError::NotSatisfiable(_))
        ));
        assert!(matches!(
            resolve(Some("bytes=99999999999999999999-"), 10),
            Err(RangeError::NotSatisfiable(_))
        ));
        assert!(matches!(
            resolve(Some("bytes=-0"), 10),
            Err(RangeError::NotSatisfiable(_))
        ));
        assert!(matches!(
            resolve(Some("bytes=0-1,3-4"), 10),
            Err(RangeError::NotSatisfiable(_))
        ));
        assert!(matches!(
            resolve(Some("bytes=0-0"), 0),
            Err(RangeError::NotSatisfiable(_))
        ));
        assert!(matches!(resolve(Some("bytes=5-3"), 10), Err(RangeError::Malformed(_))));
        assert!(matches!(resolve(Some("items=0-3"), 10), Err(RangeError::Malformed(_))));
        assert!(matches!(resolve(Some("bytes=a-3"), 10), Err(RangeError::Malformed(_))));
        assert!(matches!(resolve(Some("bytes=+1-3"), 10), Err(RangeError::Malformed(_))));
        let long = format!("bytes=0-{}", "9".repeat(MAX_RANGE_HEADER_BYTES));
        assert!(matches!(resolve(Some(&long), 10), Err(RangeError::Malformed(_))));
    }
}
