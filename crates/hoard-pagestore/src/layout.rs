//! The on-disk layout: directory and file names. See docs/pagestore.md.
//!
//! ```text
//! <dir>/pagestore.lock                      flock'ed while a store has the dir open
//! <dir>/tmp/<file>_<index>_<gen>.tmp        pages being written (deleted on open)
//! <dir>/pages-<page_size>/<ff>/<file>/<index>_<len>_<checksum>_<gen>
//! ```
//!
//! `<file>` is the file id as 32 lowercase hex digits and `<ff>` its first two. A page file
//! holds the page's bytes at offset 0 followed by its chunk table (see `page`), so a range of
//! the page is a range of the file; its name carries everything needed to verify it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::FileId;

pub(crate) const LOCK_FILE: &str = "pagestore.lock";
pub(crate) const TMP_DIR: &str = "tmp";
pub(crate) const PAGES_PREFIX: &str = "pages-";

pub(crate) fn pages_dir_name(page_size: u64) -> String {
    format!("{PAGES_PREFIX}{page_size}")
}

/// Everything the name of a page file records: the page index within its file, the page's
/// length and checksum (xxh3-64 of its chunk table), and a generation that makes every write's name unique (so a
/// page deleted and written again never has the new file deleted by the old deletion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageName {
    pub index: u64,
    pub len: u32,
    pub checksum: u64,
    pub gen: u32,
}

impl PageName {
    pub fn write_to(&self, out: &mut String) {
        let _ = write!(
            out,
            "{}_{}_{:016x}_{:08x}",
            self.index, self.len, self.checksum, self.gen
        );
    }

    #[cfg(test)]
    pub fn to_name(self) -> String {
        let mut s = String::new();
        self.write_to(&mut s);
        s
    }

    /// Parses a page file name; only the canonical form (as written by `write_to`) is accepted.
    pub fn parse(name: &str) -> Option<PageName> {
        let mut parts = name.split('_');
        let index = parse_dec(parts.next()?)?;
        let len = u32::try_from(parse_dec(parts.next()?)?).ok()?;
        let checksum = parse_hex(parts.next()?, 16)?;
        let gen = u32::try_from(parse_hex(parts.next()?, 8)?).ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(PageName {
            index,
            len,
            checksum,
            gen,
        })
    }
}

/// A decimal number without sign or leading zeros.
fn parse_dec(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// Exactly `width` lowercase hex digits.
fn parse_hex(s: &str, width: usize) -> Option<u64> {
    if s.len() != width || !s.bytes().all(is_lower_hex) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

pub(crate) fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// Parses a file id directory name (32 lowercase hex digits).
pub(crate) fn parse_file_id(s: &str) -> Option<FileId> {
    if s.len() != 32 || !s.bytes().all(is_lower_hex) {
        return None;
    }
    u128::from_str_radix(s, 16).ok().map(FileId)
}

/// Parses a shard directory name (2 lowercase hex digits).
pub(crate) fn is_shard_name(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(is_lower_hex)
}

fn push_file_dir(out: &mut String, file: FileId) {
    let _ = write!(out, "{:02x}/{:032x}", (file.0 >> 120) as u8, file.0);
}

/// `<pages>/<ff>/<file>`.
pub(crate) fn file_dir(pages: &Path, file: FileId) -> PathBuf {
    let mut rel = String::with_capacity(35);
    push_file_dir(&mut rel, file);
    pages.join(rel)
}

/// `<pages>/<ff>/<file>/<name>`.
pub(crate) fn page_path(pages: &Path, file: FileId, name: &PageName) -> PathBuf {
    let mut rel = String::with_capacity(80);
    push_file_dir(&mut rel, file);
    rel.push('/');
    name.write_to(&mut rel);
    pages.join(rel)
}

/// `<tmp>/<file>_<index>_<gen>.tmp`.
pub(crate) fn temp_path(tmp: &Path, file: FileId, index: u64, gen: u32) -> PathBuf {
    tmp.join(format!("{:032x}_{index}_{gen:08x}.tmp", file.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_names_roundtrip_and_reject_non_canonical() {
        let n = PageName {
            index: 12,
            len: 1 << 20,
            checksum: 0xdead_beef,
            gen: 7,
        };
        let s = n.to_name();
        assert_eq!(s, "12_1048576_00000000deadbeef_00000007");
        assert_eq!(PageName::parse(&s), Some(n));
        for bad in [
            "",
            "12",
            "012_1048576_00000000deadbeef_00000007",
            "12_1048576_00000000DEADBEEF_00000007",
            "12_1048576_deadbeef_00000007",
            "12_1048576_00000000deadbeef_7",
            "12_1048576_00000000deadbeef_00000007_",
            "12_1048576_00000000deadbeef_00000007.tmp",
            "+12_1048576_00000000deadbeef_00000007",
            "12_99999999999_00000000deadbeef_00000007",
        ] {
            assert_eq!(PageName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths() {
        let f = FileId(0xab00_0000_0000_0000_0000_0000_0000_0001);
        let n = PageName {
            index: 0,
            len: 3,
            checksum: 1,
            gen: 2,
        };
        assert_eq!(
            page_path(Path::new("/d/pages-4"), f, &n),
            PathBuf::from("/d/pages-4/ab/ab000000000000000000000000000001/0_3_0000000000000001_00000002")
        );
        assert_eq!(parse_file_id("ab000000000000000000000000000001"), Some(f));
        assert_eq!(parse_file_id("AB000000000000000000000000000001"), None);
        assert!(is_shard_name("ab"));
        assert!(!is_shard_name("a"));
    }
}
