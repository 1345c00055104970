//! Drives `wrk` with a Lua script for the access pattern and parses its report.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};

pub enum Pattern {
    /// Front to back in `chunk`-byte ranges, wrapping at the end (one stream per connection).
    Sequential { size: u64, chunk: u64 },
    /// `len`-byte ranges at random 4KiB-aligned offsets.
    Random { size: u64, len: u64 },
}

pub struct WrkResult {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn script(pattern: &Pattern) -> String {
    match pattern {
        Pattern::Sequential { size, chunk } => format!(
            "local size, chunk, offset = {size}, {chunk}, 0\n\
             request = function()\n\
               local last = math.min(offset + chunk, size) - 1\n\
               local req = wrk.format('GET', nil, {{['Range'] = 'bytes=' .. offset .. '-' .. last}})\n\
               offset = offset + chunk\n\
               if offset >= size then offset = 0 end\n\
               return req\n\
             end\n"
        ),
        Pattern::Random { size, len } => format!(
            "local size, len = {size}, {len}\n\
             local slots = math.floor((size - len) / 4096)\n\
             math.randomseed(os.time() + math.floor(os.clock() * 1e6))\n\
             request = function()\n\
               local offset = math.random(0, slots) * 4096\n\
               return wrk.format('GET', nil, {{['Range'] = 'bytes=' .. offset .. '-' .. (offset + len - 1)}})\n\
             end\n"
        ),
    }
}

pub fn run(
    url: &str,
    pattern: &Pattern,
    threads: usize,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<WrkResult> {
    let mut lua = tempfile::Builder::new().suffix(".lua").tempfile()?;
    lua.write_all(script(pattern).as_bytes())?;
    let output = std::process::Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg("-s")
        .arg(lua.path())
        .arg(url)
        .output()
        .context("cannot run wrk (install it with scripts/setup-test-deps.sh)")?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        bail!("wrk failed: {}\n{text}", String::from_utf8_lossy(&output.stderr));
    }
    // No Lua `response` hook (it would make wrk parse every body and distort latency): a
    // non-206 answer shows up in wrk's own "Non-2xx" count, which fails the run.
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors against {url}:\n{text}");
    }
    let requests_per_sec = field(&text, "Requests/sec:").context("no Requests/sec in wrk output")?;
    Ok(WrkResult {
        requests_per_sec,
        p50_ms: percentile(&text, "50%")?,
        p99_ms: percentile(&text, "99%")?,
    })
}

fn field(text: &str, label: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(label)?.trim().parse().ok())
}

/// wrk prints `50%  123.45us` (or ms, s) under "Latency Distribution".
fn percentile(text: &str, label: &str) -> anyhow::Result<f64> {
    let raw = text
        .lines()
        .find_map(|line| line.trim().strip_prefix(label).map(str::trim))
        .with_context(|| format!("no {label} latency in wrk output:\n{text}"))?;
    let (number, factor) = if let Some(value) = raw.strip_suffix("us") {
        (value, 0.001)
    } else if let Some(value) = raw.strip_suffix("ms") {
        (value, 1.0)
    } else if let Some(value) = raw.strip_suffix('s') {
        (value, 1000.0)
    } else {
        bail!("cannot parse wrk latency {raw:?}");
    };
    Ok(number
        .trim()
        .parse::<f64>()
        .with_context(|| format!("bad latency {raw:?}"))?
        * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_report() {
        let text = "  Latency Distribution\n     50%  412.00us\n     75%    1.20ms\n     90%    2.00ms\n     99%    3.50ms\n  1000 requests in 10.00s\nRequests/sec:   1234.56\nTransfer/sec:     77.16MB\n";
        assert_eq!(field(text, "Requests/sec:"), Some(1234.56));
        assert!((percentile(text, "50%").unwrap() - 0.412).abs() < 1e-9);
        assert!((percentile(text, "99%").unwrap() - 3.5).abs() < 1e-9);
    }
}
