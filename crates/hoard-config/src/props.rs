//! Reading `hoard-site.properties` with the `java-properties` crate.
//!
//! The file is read as UTF-8 (what editors write today, and what Java 9+ resource bundles
//! read); a file that is not valid UTF-8 is read as ISO-8859-1 (windows-1252), the historic Java
//! encoding, with a warning. `java-properties` decodes windows-1252 only, so UTF-8 text is
//! handed to it with every non-ASCII character spelled as a `\uXXXX` escape, which it decodes
//! back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use java_properties::{LineContent, PropertiesIter};

use crate::ConfigError;

/// Parses properties text; duplicate keys keep the last value and add a warning.
pub fn parse(path: &Path, bytes: &[u8], warnings: &mut Vec<String>) -> Result<BTreeMap<String, String>, ConfigError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let escaped = escape_non_ascii(text).map_err(|(line, c)| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: format!(
                    "line {line}: character {c:?} (U+{:X}) is outside the Basic Multilingual Plane, which properties files cannot hold",
                    u32::from(c)
                ),
            })?;
            read_pairs(path, escaped.as_bytes(), warnings)
        }
        Err(_) => {
            warnings.push(format!(
                "{} is not valid UTF-8; it was read as ISO-8859-1 (windows-1252)",
                path.display()
            ));
            read_pairs(path, bytes, warnings)
        }
    }
}

fn read_pairs(path: &Path, bytes: &[u8], warnings: &mut Vec<String>) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut properties = BTreeMap::new();
    let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
    for line in PropertiesIter::new(bytes) {
        let line = line.map_err(|error| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: match error.line_number() {
                Some(n) => format!("line {n}: {}", describe(&error)),
                None => describe(&error),
            },
        })?;
        let number = line.line_number();
        if let LineContent::KVPair(key, value) = line.consume_content() {
            if let Some(first) = first_line.get(&key) {
                warnings.push(format!(
                    "{} sets {key:?} more than once (lines {first} and {number}); the last value is used",
                    path.display()
                ));
            } else {
                first_line.insert(key.clone(), number);
            }
            properties.insert(key, value);
        }
    }
    Ok(properties)
}

/// The error's description without the crate's own " (line_number = N)" suffix.
fn describe(error: &java_properties::PropertiesError) -> String {
    let text = error.to_string();
    match text.rfind(" (line_number = ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Spells every non-ASCII character as `\uXXXX`. A character escaped with a backslash (`\é`,
/// which Java reads as `é`) loses that backslash so the escape is not itself escaped. Comment
/// lines are kept with their non-ASCII characters replaced by `?` (they are thrown away anyway).
/// Line breaks and line structure follow `java-properties`: CR, LF or CRLF end a line; a line
/// ending in an odd number of backslashes continues on the next, which is then never a comment.
/// Returns the 1-based line and the character when one does not fit in a single `\uXXXX`.
fn escape_non_ascii(text: &str) -> Result<String, (usize, char)> {
    if text.is_ascii() {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let mut continues = false;
    let mut rest = text;
    let mut line_number = 0usize;
    while !rest.is_empty() {
        line_number += 1;
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let (line, tail) = rest.split_at(end);
        let break_len = if tail.starts_with("\r\n") { 2 } else { tail.len().min(1) };
        let (line_break, next) = tail.split_at(break_len);
        rest = next;

        let is_comment = !continues && line.trim_start_matches([' ', '\t', '\x0c']).starts_with(['#', '!']);
        if is_comment {
            out.extend(line.chars().map(|c| if c.is_ascii() { c } else { '?' }));
            continues = false;
        } else {
            let mut backslashes = 0usize;
            for c in line.chars() {
                if c == '\\' {
                    backslashes += 1;
                    out.push(c);
                    continue;
                }
                if c.is_ascii() {
                    out.push(c);
                } else {
                    let code = u32::from(c);
                    if code > 0xFFFF {
                        return Err((line_number, c));
                    }
                    if backslashes % 2 == 1 {
                        out.pop();
                    }
                    let _ = write!(out, "\\u{code:04x}");
                }
                backslashes = 0;
            }
            continues = backslashes % 2 == 1;
        }
        out.push_str(line_break);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> (BTreeMap<String, String>, Vec<String>) {
        let mut warnings = Vec::new();
        let map = parse(Path::new("site"), text.as_bytes(), &mut warnings).unwrap();
        (map, warnings)
    }

    #[test]
    fn java_syntax() {
        let text = "# comment\n! also a comment\na=1\nb : 2\nc 3\n  d=x\\\n    y\ne=trailing  \nf=\\u00e9\\t\n";
        let (map, warnings) = parse_str(text);
        assert!(warnings.is_empty());
        assert_eq!(map["a"], "1");
        assert_eq!(map["b"], "2");
        assert_eq!(map["c"], "3");
        assert_eq!(map["d"], "xy");
        assert_eq!(map["e"], "trailing  ");
        assert_eq!(map["f"], "\u{e9}\t");
    }

    #[test]
    fn utf8_values() {
        let (map, _) = parse_str("\u{feff}dir=/data/\u{7f13}\u{5b58}\nk\u{e9}y=\\\u{e9}t\u{e9}\nlit=\\\\\u{e9}\n# \u{1f600} in a comment\n  ! \u{1f600}\nx=a\\\r\n#\u{e9}\n");
        assert_eq!(map["dir"], "/data/\u{7f13}\u{5b58}");
        assert_eq!(map["k\u{e9}y"], "\u{e9}t\u{e9}");
        assert_eq!(map["lit"], "\\\u{e9}");
        assert_eq!(map["x"], "a#\u{e9}");
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn rejects_astral_characters_with_line() {
        let mut warnings = Vec::new();
        let err = parse(Path::new("site"), "a=1\nb=\u{1f600}\n".as_bytes(), &mut warnings).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn latin1_fallback() {
        let mut warnings = Vec::new();
        let map = parse(Path::new("site"), b"a=caf\xe9\n", &mut warnings).unwrap();
        assert_eq!(map["a"], "caf\u{e9}");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("not valid UTF-8"));
    }

    #[test]
    fn duplicates_warn_and_last_wins() {
        let (map, warnings) = parse_str("a=1\nb=2\na=3\n");
        assert_eq!(map["a"], "3");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("lines 1 and 3"), "{warnings:?}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let mut warnings = Vec::new();
        let err = parse(Path::new("conf/site"), b"a=1\nb=\\uZZZZ\n", &mut warnings).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("conf/site"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }
}
