//! `Range` header parsing (RFC 9110 §14). Pure: tested without a server.
//!
//! One byte range is answered 206 with that range. A unit other than `bytes` is ignored, as
//! RFC 9110 §14.2 says (the whole file, 200). Several ranges are answered with the whole file
//! (200, which §14.2 allows) when any of them is satisfiable, not with a multipart body: the
//! work is what a plain GET costs, and the header's length (at most 256 bytes) bounds the
//! ranges looked at.

use std::ops::Range;

/// Longest `Range` header value accepted. A legitimate single range fits in ~50 bytes.
pub const MAX_RANGE_HEADER_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeError {
    /// Syntactically invalid or too long: 400.
    Malformed(String),
    /// Valid but no range can be served for this file length: 416.
    NotSatisfiable(String),
}

/// The byte range to serve for a file of `length` bytes, or `None` for the whole file (no
/// header, a unit other than bytes, several ranges). Ends past the file are clamped, as RFC
/// 9110 says; a start at or past the end is 416.
pub fn resolve(header: Option<&str>, length: u64) -> Result<Option<Range<u64>>, RangeError> {
    let Some(raw) = header else {
        return Ok(None);
    };
    if raw.len() > MAX_RANGE_HEADER_BYTES {
        return Err(RangeError::Malformed(format!(
            "range header longer than {MAX_RANGE_HEADER_BYTES} bytes"
        )));
    }
    let Some((unit, set)) = raw.trim().split_once('=') else {
        return Err(RangeError::Malformed(format!("invalid range {raw:?}")));
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ok(None);
    }
    // A list may hold empty elements (RFC 9110 §5.6.1).
    let mut specs = set.split(',').map(str::trim).filter(|spec| !spec.is_empty());
    let Some(first) = specs.next() else {
        return Err(RangeError::Malformed(format!("invalid range {raw:?}")));
    };
    let first = range_spec(first, raw, length)?;
    let mut several = false;
    let mut any_satisfiable = first.is_ok();
    for spec in specs {
        several = true;
        any_satisfiable |= range_spec(spec, raw, length)?.is_ok();
    }
    match first {
        Ok(range) if !several => Ok(Some(range)),
        Err(message) if !several => Err(RangeError::NotSatisfiable(message)),
        _ if any_satisfiable => Ok(None),
        _ => Err(RangeError::NotSatisfiable(format!(
            "no range of {raw:?} selects bytes of a {length}-byte file"
        ))),
    }
}

/// One `first-last`, `first-` or `-suffix`: the range, or why it selects no byte.
fn range_spec(spec: &str, raw: &str, length: u64) -> Result<Result<Range<u64>, String>, RangeError> {
    let (first, last) = spec
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
            return Ok(Err(format!("range {raw:?} selects no bytes of a {length}-byte file")));
        }
        return Ok(Ok(length.saturating_sub(suffix)..length));
    }
    let start = parse(first)?;
    let end_inclusive = if last.is_empty() { u64::MAX } else { parse(last)? };
    if end_inclusive < start {
        return Err(RangeError::Malformed(format!("range {raw:?} ends before it starts")));
    }
    if start >= length {
        return Ok(Err(format!(
            "range {raw:?} starts at or past the end of a {length}-byte file"
        )));
    }
    Ok(Ok(start..end_inclusive.saturating_add(1).min(length)))
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
        assert_eq!(resolve(Some("Bytes=1-2"), 10), Ok(Some(1..3)));
        assert_eq!(resolve(Some("bytes=1-2,"), 10), Ok(Some(1..3)));
    }

    #[test]
    fn unknown_units_and_several_ranges_mean_the_whole_file() {
        assert_eq!(resolve(Some("items=0-5"), 10), Ok(None));
        assert_eq!(resolve(Some("none=x"), 10), Ok(None));
        assert_eq!(resolve(Some("bytes=0-1,3-4"), 10), Ok(None));
        // One satisfiable range among unsatisfiable ones is enough.
        assert_eq!(resolve(Some("bytes=50-60, 2-3"), 10), Ok(None));
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
            resolve(Some("bytes=20-21,30-"), 10),
            Err(RangeError::NotSatisfiable(_))
        ));
        assert!(matches!(
            resolve(Some("bytes=0-1,x"), 10),
            Err(RangeError::Malformed(_))
        ));
        assert!(matches!(resolve(Some("bytes=,"), 10), Err(RangeError::Malformed(_))));
        assert!(matches!(
            resolve(Some("bytes=0-0"), 0),
            Err(RangeError::NotSatisfiable(_))
        ));
        assert!(matches!(resolve(Some("bytes=5-3"), 10), Err(RangeError::Malformed(_))));
        assert!(matches!(resolve(Some("0-3"), 10), Err(RangeError::Malformed(_))));
        assert!(matches!(resolve(Some("bytes=a-3"), 10), Err(RangeError::Malformed(_))));
        assert!(matches!(resolve(Some("bytes=+1-3"), 10), Err(RangeError::Malformed(_))));
        let long = format!("bytes=0-{}", "9".repeat(MAX_RANGE_HEADER_BYTES));
        assert!(matches!(resolve(Some(&long), 10), Err(RangeError::Malformed(_))));
    }
}
