//! Sizes (`256MiB`, `1GB`, `64m`) and durations (`500ms`, `2min`, `7d`).
//!
//! The exact grammar and unit table are documented in docs/configuration.md; keep the two in
//! step.

use std::time::Duration;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
const PIB: u64 = 1 << 50;

/// Size units (lowercased) and their multipliers. `KB`..`PB` are SI (powers of 1000),
/// `KiB`..`PiB` are IEC (powers of 1024), and the single letters `k`..`p` are powers of 1024,
/// as in Alluxio and the JVM's `-Xmx1g`.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("k", KIB),
    ("kb", 1_000),
    ("kib", KIB),
    ("m", MIB),
    ("mb", 1_000_000),
    ("mib", MIB),
    ("g", GIB),
    ("gb", 1_000_000_000),
    ("gib", GIB),
    ("t", TIB),
    ("tb", 1_000_000_000_000),
    ("tib", TIB),
    ("p", PIB),
    ("pb", 1_000_000_000_000_000),
    ("pib", PIB),
];

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;

/// Duration units (lowercased) and their length in milliseconds. A bare number is milliseconds.
const DURATION_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("ms", 1),
    ("msec", 1),
    ("msecs", 1),
    ("millis", 1),
    ("millisecond", 1),
    ("milliseconds", 1),
    ("s", MS_PER_SECOND),
    ("sec", MS_PER_SECOND),
    ("secs", MS_PER_SECOND),
    ("second", MS_PER_SECOND),
    ("seconds", MS_PER_SECOND),
    ("m", MS_PER_MINUTE),
    ("min", MS_PER_MINUTE),
    ("mins", MS_PER_MINUTE),
    ("minute", MS_PER_MINUTE),
    ("minutes", MS_PER_MINUTE),
    ("h", MS_PER_HOUR),
    ("hr", MS_PER_HOUR),
    ("hrs", MS_PER_HOUR),
    ("hour", MS_PER_HOUR),
    ("hours", MS_PER_HOUR),
    ("d", MS_PER_DAY),
    ("day", MS_PER_DAY),
    ("days", MS_PER_DAY),
];

/// A non-negative decimal number split into its digits: `12.50` is `digits = 1250`,
/// `scale = 2`.
struct Decimal {
    digits: u128,
    scale: u32,
}

/// Splits `raw` (already trimmed) into a decimal number and a unit, allowing spaces between them.
fn split_number(raw: &str, what: &str) -> Result<(Decimal, String), String> {
    if raw.is_empty() {
        return Err(format!("empty {what}"));
    }
    if raw.starts_with('-') {
        return Err(format!("negative {what}s are not allowed"));
    }
    let number_end = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (number, rest) = raw.split_at(number_end);
    if number.is_empty() {
        return Err(format!("a {what} must start with a number"));
    }
    let (int_part, frac_part) = match number.split_once('.') {
        None => (number, ""),
        Some((int_part, frac_part)) => {
            if int_part.is_empty() || frac_part.is_empty() || frac_part.contains('.') {
                return Err(format!("malformed number {number:?}"));
            }
            (int_part, frac_part)
        }
    };
    let mut digits: u128 = 0;
    for c in int_part.bytes().chain(frac_part.bytes()) {
        digits = digits
            .checked_mul(10)
            .and_then(|d| d.checked_add(u128::from(c - b'0')))
            .ok_or_else(|| format!("{what} is too large"))?;
    }
    let scale = u32::try_from(frac_part.len()).map_err(|_| format!("{what} has too many decimal places"))?;
    let unit = rest.trim_start().to_ascii_lowercase();
    Ok((Decimal { digits, scale }, unit))
}

/// `digits * multiplier / 10^scale`, which must be a whole number that fits in a u64.
fn scale_exact(number: &Decimal, multiplier: u64, what: &str, unit_name: &str) -> Result<u64, String> {
    let product = number
        .digits
        .checked_mul(u128::from(multiplier))
        .ok_or_else(|| format!("{what} is too large"))?;
    let divisor = 10u128
        .checked_pow(number.scale)
        .ok_or_else(|| format!("{what} has too many decimal places"))?;
    if product % divisor != 0 {
        return Err(format!("{what} is not a whole number of {unit_name}"));
    }
    u64::try_from(product / divisor).map_err(|_| format!("{what} is too large"))
}

/// `1MiB`, `256MiB`, `1GB`, `4096`, `10 KiB`, `1.5GiB`, `64m` -> bytes.
///
/// Units are case-insensitive: none or `B` = bytes; `KB`, `MB`, `GB`, `TB`, `PB` = powers of
/// 1000; `KiB`, `MiB`, `GiB`, `TiB`, `PiB` and the single letters `k`, `m`, `g`, `t`, `p` =
/// powers of 1024. A fraction is allowed when the result is a whole number of bytes.
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let (number, unit) = split_number(raw, "size")?;
    let multiplier = SIZE_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, multiplier)| *multiplier)
        .ok_or_else(|| {
            format!("unknown size unit {unit:?} (expected B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB, or k, m, g, t, p)")
        })?;
    scale_exact(&number, multiplier, "size", "bytes")
}

/// `500ms`, `30s`, `2min`, `2m`, `1h`, `7d`, `1.5h` -> duration. A bare number is milliseconds.
///
/// Units are case-insensitive: `ms`/`msec`/`millis`/`millisecond(s)`, `s`/`sec(s)`/`second(s)`,
/// `m`/`min(s)`/`minute(s)`, `h`/`hr(s)`/`hour(s)`, `d`/`day(s)`. A fraction is allowed when the
/// result is a whole number of milliseconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = split_number(raw, "duration")?;
    let multiplier = DURATION_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, multiplier)| *multiplier)
        .ok_or_else(|| format!("unknown duration unit {unit:?} (expected ms, s, sec, m, min, h, hour, d or day)"))?;
    scale_exact(&number, multiplier, "duration", "milliseconds").map(Duration::from_millis)
}

/// The shortest exact spelling of `bytes` that [`parse_size`] reads back: the largest IEC unit
/// that divides it (`1048576` -> `1MiB`, `1500` -> `1500B`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: &[(u64, &str)] = &[(PIB, "PiB"), (TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")];
    if bytes != 0 {
        for (multiplier, name) in UNITS {
            // Every unit is a power of two.
            if bytes.trailing_zeros() >= multiplier.trailing_zeros() {
                return format!("{}{name}", bytes / multiplier);
            }
        }
    }
    format!("{bytes}B")
}

/// The shortest exact spelling of `duration` (whole milliseconds; anything finer is dropped)
/// that [`parse_duration`] reads back: `120000ms` -> `2min`, `1500ms` -> `1500ms`.
pub fn format_duration(duration: Duration) -> String {
    const UNITS: &[(u64, &str)] = &[
        (MS_PER_DAY, "d"),
        (MS_PER_HOUR, "h"),
        (MS_PER_MINUTE, "min"),
        (MS_PER_SECOND, "s"),
    ];
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if ms != 0 {
        for (multiplier, name) in UNITS {
            if ms % multiplier == 0 {
                return format!("{}{name}", ms / multiplier);
            }
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("4096", 4096),
            ("4096B", 4096),
            ("4096 b", 4096),
            ("512KB", 512_000),
            ("512kb", 512_000),
            ("10 KiB", 10 * 1024),
            ("10kib", 10 * 1024),
            ("1MiB", 1 << 20),
            ("256MiB", 256 << 20),
            ("1MB", 1_000_000),
            ("1GB", 1_000_000_000),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("2TB", 2_000_000_000_000),
            ("1PiB", 1 << 50),
            ("1k", 1024),
            ("64m", 64 << 20),
            ("1g", 1 << 30),
            ("1G", 1 << 30),
            ("1t", 1 << 40),
            ("1.5KiB", 1536),
            ("0.5MiB", 512 << 10),
            ("1.50GB", 1_500_000_000),
            ("  16KiB  ", 16 << 10),
            ("16383PiB", 16383 << 50),
            ("18446744073709551615", u64::MAX),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_size(raw), Ok(*want), "{raw}");
        }
    }

    #[test]
    fn bad_sizes() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("   ", "empty"),
            ("-1", "negative"),
            ("-1MiB", "negative"),
            ("+1", "must start with a number"),
            ("MiB", "must start with a number"),
            ("1.5B", "whole number"),
            ("0.5", "whole number"),
            ("1.0000000001KiB", "whole number"),
            ("1.", "malformed"),
            (".5KiB", "malformed"),
            ("1.2.3", "malformed"),
            ("1XB", "unknown size unit"),
            ("1 MiB x", "unknown size unit"),
            ("1_000", "unknown size unit"),
            ("18446744073709551616", "too large"),
            ("16384PiB", "too large"),
            ("99999999999999999999999999999999999999999999", "too large"),
            ("1e6", "unknown size unit"),
        ];
        for (raw, want) in cases {
            let err = parse_size(raw).unwrap_err();
            assert!(err.contains(want), "{raw:?}: {err}");
        }
    }

    #[test]
    fn durations() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("1500", 1500),
            ("500ms", 500),
            ("500 MS", 500),
            ("30s", 30_000),
            ("30sec", 30_000),
            ("30 seconds", 30_000),
            ("2min", 120_000),
            ("2m", 120_000),
            ("2minutes", 120_000),
            ("1h", 3_600_000),
            ("1hour", 3_600_000),
            ("1.5h", 5_400_000),
            ("7d", 7 * 86_400_000),
            ("7day", 7 * 86_400_000),
            ("7DAYS", 7 * 86_400_000),
            ("0.25s", 250),
            ("18446744073709551615", u64::MAX),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_duration(raw), Ok(Duration::from_millis(*want)), "{raw}");
        }
    }

    #[test]
    fn bad_durations() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("-5s", "negative"),
            ("s", "must start with a number"),
            ("0.5ms", "whole number"),
            ("1.0001s", "whole number"),
            ("5 fortnights", "unknown duration unit"),
            ("5mo", "unknown duration unit"),
            ("5us", "unknown duration unit"),
            ("1h30m", "unknown duration unit"),
            ("18446744073709551616", "too large"),
            ("99999999999999999d", "too large"),
        ];
        for (raw, want) in cases {
            let err = parse_duration(raw).unwrap_err();
            assert!(err.contains(want), "{raw:?}: {err}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1500), "1500B");
        assert_eq!(format_size(16 << 10), "16KiB");
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(3 << 30), "3GiB");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2min");
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "7d");
    }

    fn size_unit() -> impl Strategy<Value = (&'static str, u64)> {
        proptest::sample::select(SIZE_UNITS.to_vec())
    }

    fn duration_unit() -> impl Strategy<Value = (&'static str, u64)> {
        proptest::sample::select(DURATION_UNITS.to_vec())
    }

    /// Spells a unit in a random mix of cases.
    fn mixed_case(unit: &str, mask: u32) -> String {
        unit.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask & (1 << (i % 32)) != 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn size_roundtrip((unit, multiplier) in size_unit(), n in any::<u64>(), space in any::<bool>(), mask in any::<u32>()) {
            let n = n / multiplier;
            let sep = if space && !unit.is_empty() { " " } else { "" };
            let raw = format!("{n}{sep}{}", mixed_case(unit, mask));
            prop_assert_eq!(parse_size(&raw), Ok(n * multiplier));
        }

        #[test]
        fn size_overflow_is_an_error((unit, multiplier) in size_unit(), n in any::<u64>()) {
            let n = u128::from(n) + 1;
            let too_big = u128::from(u64::MAX) / u128::from(multiplier) + n;
            let raw = format!("{too_big}{unit}");
            prop_assert!(parse_size(&raw).is_err(), "{}", raw);
        }

        #[test]
        fn format_size_roundtrip(n in any::<u64>()) {
            prop_assert_eq!(parse_size(&format_size(n)), Ok(n));
        }

        #[test]
        fn duration_roundtrip((unit, multiplier) in duration_unit(), n in any::<u64>(), space in any::<bool>(), mask in any::<u32>()) {
            let n = n / multiplier;
            let sep = if space && !unit.is_empty() { " " } else { "" };
            let raw = format!("{n}{sep}{}", mixed_case(unit, mask));
            prop_assert_eq!(parse_duration(&raw), Ok(Duration::from_millis(n * multiplier)));
        }

        #[test]
        fn format_duration_roundtrip(ms in any::<u64>()) {
            let duration = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }

        #[test]
        fn never_panics_on_arbitrary_input(raw in ".{0,64}") {
            let _ = parse_size(&raw);
            let _ = parse_duration(&raw);
        }

        #[test]
        fn never_panics_on_number_like_input(raw in "[-+ ]?[0-9]{0,45}(\\.[0-9]{0,45})?[ ]?[a-zA-Z]{0,12}") {
            let _ = parse_size(&raw);
            let _ = parse_duration(&raw);
        }
    }
}
