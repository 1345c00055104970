//! A real cluster for tests: `hoard local start` spawns worker processes on loopback ports
//! chosen by the kernel; the cluster is stopped (and its processes SIGKILLed) on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const HOARD: &str = env!("CARGO_BIN_EXE_hoard");

/// Longer than `hoard_ufs::RECENT_CHANGE_WINDOW`.
const SETTLE: Duration = Duration::from_millis(150);

pub struct Cluster {
    pub home: tempfile::TempDir,
    pub conf: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Process {
    pub role: String,
    pub name: String,
    pub id: String,
    pub pid: u32,
    pub address: String,
    pub conf_dir: PathBuf,
    pub log_file: PathBuf,
}

impl Cluster {
    /// Starts `workers` workers over the local directory `ufs`, with extra site properties.
    pub fn start(workers: usize, ufs: &Path, properties: &[&str]) -> Cluster {
        Cluster::start_on(workers, &ufs.display().to_string(), properties)
    }

    /// Starts workers over any UFS root (`s3://bucket/prefix` too).
    pub fn start_on(workers: usize, ufs: &str, properties: &[&str]) -> Cluster {
        Cluster::start_with(workers, ufs, properties, &[])
    }

    /// Starts a cluster with extra `hoard local start` arguments (`--etcd`, `--membership`).
    pub fn start_with(workers: usize, ufs: &str, properties: &[&str], extra: &[&str]) -> Cluster {
        Cluster::start_with_env(workers, ufs, properties, extra, &[])
    }

    /// [`Cluster::start_with`], with environment variables for every process it starts (e.g.
    /// `RUST_LOG`).
    pub fn start_with_env(
        workers: usize,
        ufs: &str,
        properties: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        let began = Instant::now();
        let home = tempfile::Builder::new()
            .prefix("hoard-test")
            .tempdir()
            .expect("temp home");
        let mut command = Command::new(HOARD);
        command
            .args(["local", "start", "--workers", &workers.to_string(), "--home"])
            .arg(home.path())
            .arg("--ufs")
            .arg(ufs)
            .args(["--timeout-secs", "60"])
            .args(extra)
            .envs(env.iter().copied());
        for property in properties {
            command.args(["--property", property]);
        }
        let output = command.output().expect("run hoard local start");
        assert!(output.status.success(), "local start failed: {}", describe(&output));
        // Pages of a local file changed less than hoard_ufs::RECENT_CHANGE_WINDOW (100ms) ago
        // are served but not cached: files written before the cluster started are settled
        // (and so cached by their first read) once this returns.
        if let Some(rest) = SETTLE.checked_sub(began.elapsed()) {
            std::thread::sleep(rest);
        }
        let conf = home.path().canonicalize().expect("home").join("conf");
        Cluster { home, conf }
    }

    /// Runs `hoard --conf <client conf> args...`.
    pub fn hoard(&self, args: &[&str]) -> Output {
        Command::new(HOARD)
            .arg("--conf")
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("run hoard")
    }

    pub fn hoard_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(HOARD)
            .arg("--conf")
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hoard");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait hoard")
    }

    /// The worker processes (what most tests look at).
    pub fn processes(&self) -> Vec<Process> {
        self.all_processes()
            .into_iter()
            .filter(|process| process.role == "worker")
            .collect()
    }

    /// Every process, the coordinator first.
    pub fn all_processes(&self) -> Vec<Process> {
        let output = Command::new(HOARD)
            .args(["local", "status", "--format", "json", "--home"])
            .arg(self.home.path())
            .output()
            .expect("run local status");
        assert!(output.status.success(), "local status failed: {}", describe(&output));
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status json");
        status["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .map(|p| Process {
                role: p["role"].as_str().unwrap_or_default().to_string(),
                name: p["name"].as_str().unwrap_or_default().to_string(),
                id: p["id"].as_str().unwrap_or_default().to_string(),
                pid: p["pid"].as_u64().unwrap_or_default() as u32,
                address: p["address"].as_str().unwrap_or_default().to_string(),
                conf_dir: PathBuf::from(p["confDir"].as_str().unwrap_or_default()),
                log_file: PathBuf::from(p["logFile"].as_str().unwrap_or_default()),
            })
            .collect()
    }

    pub fn process_named(&self, name: &str) -> Process {
        self.all_processes()
            .into_iter()
            .find(|p| p.name == name)
            .expect("process with that name")
    }

    /// `hoard info nodes --format json`.
    pub fn nodes(&self) -> serde_json::Value {
        let output = self.hoard(&["info", "nodes", "--format", "json"]);
        assert!(output.status.success(), "info nodes failed: {}", describe(&output));
        serde_json::from_slice(&output.stdout).expect("nodes json")
    }

    /// `(worker id, address, online)` of every registered worker, sorted by id.
    pub fn worker_states(&self) -> Vec<(String, String, bool)> {
        let nodes = self.nodes();
        let mut workers: Vec<(String, String, bool)> = nodes["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .map(|w| {
                (
                    w["workerId"].as_str().unwrap_or_default().to_string(),
                    w["address"].as_str().unwrap_or_default().to_string(),
                    w["online"].as_bool().unwrap_or_default(),
                )
            })
            .collect();
        workers.sort();
        workers
    }

    pub fn worker_by_address(&self, address: &str) -> Process {
        self.processes()
            .into_iter()
            .find(|p| p.address == address)
            .expect("worker with that address")
    }

    /// The worker `path` maps to first.
    pub fn primary_of(&self, path: &str) -> Process {
        let output = self.hoard(&["fs", "location", path, "--format", "json"]);
        assert!(output.status.success(), "location failed: {}", describe(&output));
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("location json");
        let address = json[0]["workers"][0]["address"].as_str().expect("address").to_string();
        self.worker_by_address(&address)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in self.processes_quiet() {
            kill9(process);
        }
    }
}

impl Cluster {
    fn processes_quiet(&self) -> Vec<u32> {
        let Ok(bytes) = std::fs::read(self.home.path().join("local.json")) else {
            return Vec::new();
        };
        let Ok(state) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Vec::new();
        };
        state["processes"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["pid"].as_u64())
                    .map(|pid| pid as u32)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs `hoard --conf <conf> args...`.
pub fn hoard_with_conf(conf: &Path, args: &[&str]) -> Output {
    Command::new(HOARD)
        .arg("--conf")
        .arg(conf)
        .args(args)
        .output()
        .expect("run hoard")
}

pub fn kill9(pid: u32) {
    let _ = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Starts a worker (or the coordinator) again by hand, as an operator would:
/// `hoard --conf <its conf dir> worker|coordinator`.
pub fn restart_worker(process: &Process) -> ChildGuard {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&process.log_file)
        .expect("log");
    let child = Command::new(HOARD)
        .arg("--conf")
        .arg(&process.conf_dir)
        .arg(&process.role)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("restart worker");
    wait_until("process answers after restart", Duration::from_secs(30), || {
        http_get(&process.address, "/health").is_ok_and(|(status, _, _)| status == 200)
    });
    ChildGuard(child)
}

/// A process the test started itself; SIGKILLed when the test ends, pass or fail.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Polls `check` until it is true, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

/// `count` files of `size` bytes under `dir/`, in subdirectories of 100; returns the bytes.
pub fn many_files(root: &Path, dir: &str, count: usize, size: usize) -> u64 {
    for i in 0..count {
        let path = root
            .join(dir)
            .join(format!("{:03}", i / 100))
            .join(format!("f{i:05}.bin"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content(i as u64, size)).expect("write");
    }
    (count * size) as u64
}

/// Deterministic pseudo-random content.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `GET /api/v1/jobs/{id}` on the coordinator, as JSON.
pub fn job_json(cluster: &Cluster, job_id: &str) -> serde_json::Value {
    let coordinator = cluster.process_named("coordinator").address;
    let (status, _, body) = http_get(&coordinator, &format!("/api/v1/jobs/{job_id}")).expect("get job");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("job json")
}

/// `hoard job <args> --submit --format json`: the new (or active) job's id.
pub fn submit(cluster: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["job"];
    all.extend_from_slice(args);
    all.extend(["--submit", "--format", "json"]);
    let output = cluster.hoard(&all);
    assert!(output.status.success(), "{}", describe(&output));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("submit json");
    answer["job"]["jobId"].as_str().expect("job id").to_string()
}

/// Waits (at most `limit`) for the job to end; its last JSON.
pub fn wait_job(cluster: &Cluster, job_id: &str, limit: Duration) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_until(&format!("job {job_id} ends"), limit, || {
        last = job_json(cluster, job_id);
        matches!(last["state"].as_str(), Some("SUCCEEDED" | "FAILED" | "STOPPED"))
    });
    last
}

/// Waits (at most `limit`) until the job has processed `at_least` files or is no longer
/// active; its last JSON.
pub fn wait_processed(cluster: &Cluster, job_id: &str, at_least: u64, limit: Duration) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_until("job makes progress", limit, || {
        last = job_json(cluster, job_id);
        last["filesProcessed"].as_u64().unwrap_or(0) >= at_least
            || last["state"] != "RUNNING" && last["state"] != "WAITING"
    });
    last
}

/// A UFS directory holding `files` (Hoard path, bytes), removed when dropped.
pub fn ufs_with(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("hoard-ufs").tempdir().expect("ufs dir");
    for (path, bytes) in files {
        let target = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::write(target, bytes).expect("write ufs file");
    }
    dir
}

/// A raw HTTP/1.1 GET (no URL normalization, so `..` reaches the server as sent).
/// Returns status, headers (lowercased names) and body.
/// Status, headers (lowercased names) and body of a raw HTTP exchange.
pub type HttpAnswer = (u16, Vec<(String, String)>, Vec<u8>);

pub fn http_get(address: &str, target: &str) -> std::io::Result<HttpAnswer> {
    http_request(
        address,
        &format!("GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
    )
}

pub fn http_request(address: &str, request: &str) -> std::io::Result<HttpAnswer> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok((status, headers, body))
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Sums one metric over a worker's `/metrics`.
pub fn metric(address: &str, name: &str) -> f64 {
    let (_, _, body) = http_get(address, "/metrics").expect("metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .sum()
}

impl Cluster {
    /// `hoard fs ls PATH --format json`: the entry names, sorted.
    pub fn ls_names(&self, path: &str) -> Vec<String> {
        let ls = self.hoard(&["fs", "ls", path, "--format", "json"]);
        assert!(ls.status.success(), "{}", describe(&ls));
        let entries: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("ls json");
        let mut names: Vec<String> = entries
            .as_array()
            .expect("array")
            .iter()
            .map(|entry| entry["name"].as_str().expect("name").to_string())
            .collect();
        names.sort();
        names
    }

    /// Waits until the owning worker has every byte of `path` in its page store (pages are
    /// written behind the read that fetched them).
    pub fn wait_cached(&self, path: &str, length: u64) {
        wait_until(&format!("{path} fully cached"), Duration::from_secs(30), || {
            let stat = self.hoard(&["fs", "stat", path, "--format", "json"]);
            serde_json::from_slice::<serde_json::Value>(&stat.stdout)
                .is_ok_and(|json| json["cachedBytes"].as_u64() == Some(length))
        });
    }
}

impl Cluster {
    /// The cluster secret `hoard local` created (what coordinators present with tasks).
    pub fn secret(&self) -> String {
        let path = self.home.path().join("cluster_secret");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .trim()
            .to_string()
    }

    /// The coordinator process.
    pub fn coordinator(&self) -> Process {
        self.all_processes()
            .into_iter()
            .find(|process| process.role == "coordinator")
            .expect("a coordinator")
    }
}

/// Open descriptors of process `pid` (`/proc/PID/fd`).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `RssAnon`, ...).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    hoard_testkit::proc_status_kib(pid, field).unwrap_or(0)
}

/// Splits a raw HTTP/1.1 response with a `Content-Length` body: status, headers (lowercased
/// names) and exactly that many body bytes; `None` when the head or body is incomplete.
pub fn parse_response(raw: &[u8]) -> Option<HttpAnswer> {
    let split = raw.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize = header(&headers, "content-length")?.parse().ok()?;
    let body = raw.get(split + 4..split + 4 + length)?.to_vec();
    Some((status, headers, body))
}
