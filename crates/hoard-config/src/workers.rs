//! `conf/workers`: one `host[:port]` per line, and the host syntax shared with
//! `hoard.worker.hostname` and `hoard.worker.bind.host`.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::path::Path;

use crate::{ConfigError, WorkerAddress};

const MAX_HOST_LEN: usize = 253;

/// Validates a host name, an IPv4 address, or an IPv6 address (with or without brackets).
/// Returns the form a [`WorkerAddress`] holds: names as written, IPv6 in canonical form inside
/// brackets (`[::1]`), so that `host:port` is unambiguous and valid in a URL.
pub fn parse_host(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty host".into());
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| "unbalanced '[' (write IPv6 addresses as [::1])".to_string())?;
        return parse_ipv6(inner);
    }
    if raw.contains(':') {
        return parse_ipv6(raw);
    }
    if raw.len() > MAX_HOST_LEN {
        return Err(format!("host name is longer than {MAX_HOST_LEN} characters"));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!("host name contains {bad:?}"));
    }
    if raw
        .split('.')
        .any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-'))
    {
        return Err("malformed host name (empty label, or a label starting or ending with '-')".into());
    }
    Ok(raw.to_string())
}

fn parse_ipv6(raw: &str) -> Result<String, String> {
    let addr: Ipv6Addr = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a valid IPv6 address"))?;
    Ok(format!("[{addr}]"))
}

/// The host without the brackets IPv6 addresses carry in a [`WorkerAddress`] (`[::1]` -> `::1`).
pub fn unbracket(host: &str) -> &str {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

pub fn parse_port(raw: &str) -> Result<u16, String> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {raw:?} is not a number"));
    }
    match raw.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {raw} is not in 1..=65535")),
        Ok(port) => Ok(port),
    }
}

/// One `host`, `host:port`, `[v6]` or `[v6]:port`; `default_port` fills in a missing port.
pub fn parse_worker(raw: &str, default_port: u16) -> Result<WorkerAddress, String> {
    if raw.contains(char::is_whitespace) {
        return Err("expected one host[:port] per line".into());
    }
    let (host, port) = if raw.starts_with('[') {
        let close = raw
            .find(']')
            .ok_or_else(|| "unbalanced '[' (write IPv6 addresses as [::1]:29999)".to_string())?;
        let (host, rest) = raw.split_at(close + 1);
        match rest {
            "" => (host, None),
            _ => match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected {rest:?} after {host}")),
            },
        }
    } else {
        match raw.matches(':').count() {
            0 => (raw, None),
            1 => {
                let (host, port) = raw.split_once(':').unwrap_or((raw, ""));
                (host, Some(port))
            }
            _ if looks_like_ipv6(raw) => {
                return Err("IPv6 addresses must be in brackets, e.g. [::1]:29999".into());
            }
            _ => return Err("expected host:port".into()),
        }
    };
    let host = parse_host(host)?;
    let port = match port {
        Some(port) => parse_port(port)?,
        None => default_port,
    };
    Ok(WorkerAddress { host, port })
}

/// An IPv6 address, or one with a port glued on without brackets (`fe80::1:29999`).
fn looks_like_ipv6(raw: &str) -> bool {
    raw.parse::<Ipv6Addr>().is_ok()
        || raw
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.parse::<Ipv6Addr>().is_ok())
}

/// Parses the workers file. Errors name `path` (for the message only), the line and the value.
pub fn parse_workers_file(path: &Path, text: &str, default_port: u16) -> Result<Vec<WorkerAddress>, ConfigError> {
    let mut workers = Vec::new();
    // Lowercased `host:port` -> line it first appeared on (host names are case-insensitive).
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let value = line.split('#').next().unwrap_or("").trim();
        if value.is_empty() {
            continue;
        }
        let error = |reason: String| ConfigError::InvalidWorker {
            path: path.to_path_buf(),
            line: line_number,
            value: value.to_string(),
            reason,
        };
        let address = parse_worker(value, default_port).map_err(error)?;
        let identity = address.to_string().to_ascii_lowercase();
        if let Some(first) = seen.get(&identity) {
            return Err(error(format!("duplicate of line {first} ({address})")));
        }
        seen.insert(identity, line_number);
        workers.push(address);
    }
    Ok(workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(host: &str, port: u16) -> WorkerAddress {
        WorkerAddress {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(parse_host("localhost").unwrap(), "localhost");
        assert_eq!(parse_host("worker-1.example.com").unwrap(), "worker-1.example.com");
        assert_eq!(parse_host("10.0.0.1").unwrap(), "10.0.0.1");
        assert_eq!(parse_host("::1").unwrap(), "[::1]");
        assert_eq!(parse_host("[0:0::1]").unwrap(), "[::1]");
        assert_eq!(parse_host("[FE80::1]").unwrap(), "[fe80::1]");
        for bad in [
            "", "a..b", ".a", "a.", "-a", "a b", "a/b", "[::1", "[nope]", "1:2:3", "h\u{e9}",
        ] {
            assert!(parse_host(bad).is_err(), "{bad:?}");
        }
        assert!(parse_host(&"a".repeat(254)).is_err());
        assert_eq!(unbracket("[::1]"), "::1");
        assert_eq!(unbracket("0.0.0.0"), "0.0.0.0");
    }

    #[test]
    fn worker_lines() {
        assert_eq!(parse_worker("host1:30000", 29999).unwrap(), addr("host1", 30000));
        assert_eq!(parse_worker("host1", 29999).unwrap(), addr("host1", 29999));
        assert_eq!(parse_worker("[::1]:29998", 29999).unwrap(), addr("[::1]", 29998));
        assert_eq!(parse_worker("[::1]", 29999).unwrap(), addr("[::1]", 29999));
        let cases: &[(&str, &str)] = &[
            ("::1", "must be in brackets"),
            ("fe80::1:29999", "must be in brackets"),
            ("a:b:c", "expected host:port"),
            ("host:", "not a number"),
            ("host:0", "not in 1..=65535"),
            ("host:65536", "not in 1..=65535"),
            ("host:-1", "not a number"),
            ("host:12ab", "not a number"),
            (":29999", "empty host"),
            ("[::1]x", "unexpected"),
            ("[::1:29999", "unbalanced"),
            ("host1 host2", "one host[:port] per line"),
        ];
        for (raw, want) in cases {
            let err = parse_worker(raw, 29999).unwrap_err();
            assert!(err.contains(want), "{raw:?}: {err}");
        }
    }

    #[test]
    fn workers_file() {
        let text = "# workers\n\nhost1\r\n  host2:30000  # second\nhost3:29999\n[::1]\n\t\n";
        let workers = parse_workers_file(Path::new("conf/workers"), text, 29999).unwrap();
        assert_eq!(
            workers,
            vec![
                addr("host1", 29999),
                addr("host2", 30000),
                addr("host3", 29999),
                addr("[::1]", 29999)
            ]
        );
        assert!(parse_workers_file(Path::new("w"), "", 29999).unwrap().is_empty());
    }

    #[test]
    fn workers_file_errors_name_file_line_and_value() {
        let err = parse_workers_file(Path::new("conf/workers"), "host1\n\nhost2:nope\n", 29999).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ConfigError::InvalidWorker { line: 3, .. }), "{message}");
        assert!(message.contains("conf/workers line 3"), "{message}");
        assert!(message.contains("\"host2:nope\""), "{message}");

        let err = parse_workers_file(Path::new("w"), "host1\nHOST1:29999\n", 29999).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ConfigError::InvalidWorker { line: 2, .. }), "{message}");
        assert!(message.contains("duplicate of line 1"), "{message}");

        let err = parse_workers_file(Path::new("w"), "[::1]:29999\n[0::1]\n", 29999).unwrap_err();
        assert!(err.to_string().contains("duplicate of line 1"), "{err}");
    }
}
