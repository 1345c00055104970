//! The listeners' limits on real processes (docs/worker-http.md#limits): idle connections,
//! half-sent request heads and clients that never read, ten times the connection cap of each,
//! against the worker and the coordinator, while a normal client keeps getting correct answers;
//! afterwards the process's descriptors and memory are back where they started. And
//! `Connection: close` with pipelined input (the lingering close).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;
/// `*.network.max.connections` in these tests; every attack uses ten times as many connections.
const CAP: usize = 16;
const FILE: &str = "/data/big.bin";
const FILE_LEN: usize = 64 * MIB;
/// Asked for by the first round of clients that never read (the second asks for `FILE`).
const WARM: &str = "/data/warm.bin";
const SMALL: &str = "/data/small.bin";
const SMALL_LEN: usize = 200_000;

fn limits() -> Vec<String> {
    let mut properties = Vec::new();
    for listener in ["worker", "coordinator"] {
        properties.push(format!("hoard.{listener}.network.max.connections={CAP}"));
        properties.push(format!("hoard.{listener}.network.header.timeout=1s"));
        properties.push(format!("hoard.{listener}.network.keepalive.timeout=1s"));
        properties.push(format!("hoard.{listener}.network.send.timeout=1s"));
    }
    // No memory tier (page files are never mapped): the worker's memory is then its
    // connections' and its buffers', not a cache that rightly keeps what it read.
    properties.push("hoard.worker.page.store.memory.size=0".to_string());
    properties
}

struct Setup {
    _ufs: tempfile::TempDir,
    cluster: Cluster,
    big: Vec<u8>,
    small: Vec<u8>,
}

fn setup() -> Setup {
    let ufs = tempfile::Builder::new().prefix("hoard-ufs").tempdir().expect("ufs dir");
    std::fs::create_dir_all(ufs.path().join("data")).expect("mkdir");
    let big = content(7, FILE_LEN);
    let small = content(8, SMALL_LEN);
    std::fs::write(ufs.path().join("data/big.bin"), &big).expect("write");
    std::fs::write(ufs.path().join("data/small.bin"), &small).expect("write");
    std::fs::write(ufs.path().join("data/warm.bin"), content(9, FILE_LEN)).expect("write");
    let properties = limits();
    let properties: Vec<&str> = properties.iter().map(String::as_str).collect();
    let cluster = Cluster::start(1, ufs.path(), &properties);
    Setup {
        _ufs: ufs,
        cluster,
        big,
        small,
    }
}

/// A listener under test and what a normal client asks it.
struct Target {
    name: &'static str,
    pid: u32,
    address: String,
    /// A normal request's target and the body it must get.
    normal_path: String,
    normal_body: Option<Vec<u8>>,
    /// Memory the process keeps for reuse once used, by design.
    kept_kib: u64,
    /// Sent by clients that never read (round, index): more answer than the socket buffers hold.
    non_reader_request: Box<dyn Fn(usize, usize) -> Vec<u8>>,
}

impl Target {
    /// One normal request on a new connection: `Ok` when the answer is complete and right.
    fn normal_once(&self) -> Result<(), String> {
        let (status, headers, body) = http_get(&self.address, &self.normal_path).map_err(|err| err.to_string())?;
        if status != 200 {
            return Err(format!("status {status}, body {:?}", String::from_utf8_lossy(&body)));
        }
        match &self.normal_body {
            Some(expected) if body != *expected => Err(format!("{} body bytes differ from the file's", body.len())),
            Some(_) => Ok(()),
            None if header(&headers, "content-type") == Some("application/json") => Ok(()),
            None => Err(format!("not JSON: {headers:?}")),
        }
    }

    /// A normal request, retried on a refused or reset connection (as every client does) until
    /// `limit`; a wrong answer fails at once.
    fn normal(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.normal_once() {
                Ok(()) => return attempts,
                Err(err) if err.contains("differ") => panic!("{}: wrong answer: {err}", self.name),
                Err(err) if Instant::now() > deadline => {
                    panic!("{}: no answer within {limit:?} ({attempts} attempts): {err}", self.name)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn fds(&self) -> usize {
        fd_count(self.pid)
    }

    fn rss_kib(&self) -> u64 {
        status_kib(self.pid, "VmRSS")
    }

    /// Waits until the process holds at most `fds` descriptors, though every attacking socket
    /// is still open on the client's side: the listener itself must close them.
    fn wait_fds_at_most(&self, fds: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.fds() > fds {
            assert!(
                Instant::now() < deadline,
                "{}: after {what}, {} descriptors are open, {fds} before",
                self.name,
                self.fds()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn connect(address: &str) -> Option<TcpStream> {
    let address = address.parse().ok()?;
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_nodelay(true).ok()?;
    Some(stream)
}

/// Ten times the cap each of: connections that send nothing, request heads sent in part, and
/// keep-alive connections left idle after a request. Returned open.
fn idle_and_half_sent(target: &Target) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for index in 0..3 * 10 * CAP {
        let Some(mut stream) = connect(&target.address) else {
            continue;
        };
        match index % 3 {
            0 => {}
            1 => {
                let _ =
                    stream.write_all(format!("GET {} HTTP/1.1\r\nHost: a\r\nX-Slow: ", target.normal_path).as_bytes());
            }
            _ => {
                let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n");
            }
        }
        held.push(stream);
    }
    held
}

/// Ten times the cap of clients that ask for a long answer and never read it.
fn non_readers(target: &Target, round: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for index in 0..10 * CAP {
        let Some(mut stream) = connect(&target.address) else {
            continue;
        };
        let _ = stream.write_all(&(target.non_reader_request)(round, index));
        held.push(stream);
    }
    held
}

fn attack(target: &Target) {
    for _ in 0..5 {
        target.normal(Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let fds = target.fds();
    let rss = target.rss_kib();

    let held = idle_and_half_sent(target);
    let mut attempts = 0;
    for _ in 0..20 {
        attempts += target.normal(Duration::from_secs(10));
    }
    // Every new connection closes the longest-waiting idle one, so the normal client is
    // answered at once (a retry only when its own connection lost such a race).
    assert!(attempts <= 25, "{}: {attempts} attempts for 20 answers", target.name);
    target.wait_fds_at_most(fds + 2, "idle and half-sent connections");
    drop(held);

    // Twice, so that anything a round leaves behind would add up.
    for round in 0..2 {
        let held = non_readers(target, round);
        std::thread::sleep(Duration::from_millis(300));
        eprintln!(
            "{} round {round} with non-readers: VmRSS {} KiB, {} descriptors",
            target.name,
            target.rss_kib(),
            target.fds()
        );
        // The cap is full of connections busy sending: new ones are refused (503) until the
        // send timeout closes them.
        for _ in 0..5 {
            target.normal(Duration::from_secs(15));
        }
        target.wait_fds_at_most(fds + 2, "connections that never read");
        drop(held);
        for _ in 0..5 {
            target.normal(Duration::from_secs(10));
        }
        // Memory freed goes back as blocking threads (holding per-thread buffers) go idle and
        // end; what the process keeps for reuse by design stays.
        let limit = rss + target.kept_kib + 16 * 1024;
        let deadline = Instant::now() + Duration::from_secs(30);
        while target.rss_kib() > limit {
            assert!(
                Instant::now() < deadline,
                "{}: VmRSS grew from {rss} KiB to {} KiB",
                target.name,
                target.rss_kib()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    eprintln!(
        "{}: descriptors {fds} -> {}, VmRSS {rss} KiB -> {} KiB",
        target.name,
        target.fds(),
        target.rss_kib()
    );
    // What the listener did is on /metrics for operators.
    let (status, _, body) = http_get(&target.address, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| -> f64 {
        let name = format!("hoard_{}_{name} ", target.name);
        text.lines()
            .find_map(|line| line.strip_prefix(&name))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name}missing from /metrics:\n{text}"))
    };
    assert!(
        value("connections_evicted_total") > 0.0,
        "idle connections were evicted"
    );
    assert!(value("connections_timed_out_total") > 0.0, "connections timed out");
    assert!(value("connections_open") >= 1.0, "this scrape's own connection is open");
    value("connections_refused_total");
}

#[test]
fn worker_listener_survives_idle_half_sent_and_non_reading_clients() {
    let setup = setup();
    let worker = &setup.cluster.processes()[0];
    let address = worker.address.clone();
    let target = Target {
        name: "worker",
        pid: worker.pid,
        address: address.clone(),
        normal_path: format!("/files{SMALL}"),
        normal_body: Some(setup.small.clone()),
        // The pool of read buffers (hoard-common `buffers`, shared by UFS fills and page reads) keeps up to 64MiB.
        kept_kib: 64 * 1024,
        // Long ranges of a file not cached yet, each from another page.
        non_reader_request: Box::new(move |round, index| {
            let file = if round == 0 { WARM } else { FILE };
            let start = (index * MIB) % FILE_LEN;
            format!("GET /files{file} HTTP/1.1\r\nHost: {address}\r\nRange: bytes={start}-\r\n\r\n").into_bytes()
        }),
    };
    attack(&target);
    // Nothing was lost or mixed: the big file reads back whole.
    let (status, _, body) = http_get(&target.address, &format!("/files{FILE}")).expect("read");
    assert_eq!(status, 200);
    assert!(body == setup.big, "the file read back differs");
}

#[test]
fn coordinator_listener_survives_idle_half_sent_and_non_reading_clients() {
    let setup = setup();
    let coordinator = setup.cluster.coordinator();
    let address = coordinator.address.clone();
    let target = Target {
        name: "coordinator",
        pid: coordinator.pid,
        address: address.clone(),
        normal_path: "/api/v1/nodes".to_string(),
        normal_body: None,
        kept_kib: 0,
        // Pipelined requests for the OpenAPI document (~20KiB each), never read.
        non_reader_request: Box::new(move |_, _| {
            format!("GET /api/v1/openapi.json HTTP/1.1\r\nHost: {address}\r\n\r\n")
                .repeat(400)
                .into_bytes()
        }),
    };
    attack(&target);
    // The cluster still works through the coordinator.
    let nodes = setup.cluster.nodes();
    assert_eq!(nodes["workers"].as_array().map(Vec::len), Some(1), "{nodes}");
}

/// Reads everything until EOF (or a reset, which is what truncates answers).
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 65536];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return raw,
            Ok(read) => raw.extend_from_slice(&buffer[..read]),
        }
    }
}

#[test]
fn connection_close_with_pipelined_input_delivers_whole_responses() {
    let ufs = tempfile::Builder::new().prefix("hoard-ufs").tempdir().expect("ufs dir");
    let data = content(11, MIB);
    std::fs::write(ufs.path().join("one.bin"), &data).expect("write");
    let cluster = Cluster::start(1, ufs.path(), &[]);
    let address = cluster.processes()[0].address.clone();
    // Cache it first: the answer then leaves at once, well before the client reads it.
    let (status, _, body) = http_get(&address, "/files/one.bin").expect("warm");
    assert_eq!((status, body.len()), (200, MIB));
    cluster.wait_cached("/one.bin", MIB as u64);

    // The direct path, and the router (a percent-encoded path goes to hyper).
    for path in ["/files/one.bin", "/files/one%2Ebin"] {
        let mut cut = 0;
        for _ in 0..40 {
            let mut stream = TcpStream::connect(&address).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
            let mut request =
                format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").into_bytes();
            // Pipelined input the server will never answer.
            request.extend(
                format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n")
                    .repeat(50)
                    .into_bytes(),
            );
            request.extend(vec![b'x'; 64 << 10]);
            stream.write_all(&request).expect("send");
            // A client that is a little slow to read: the answer waits in its buffers.
            std::thread::sleep(Duration::from_millis(20));
            let raw = read_to_close(&mut stream);
            match parse_response(&raw) {
                Some((200, _, body)) if body == data => {}
                _ => cut += 1,
            }
        }
        assert_eq!(cut, 0, "{path}: {cut} of 40 answers were cut short");
    }
}

/// CPU seconds process `pid` has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |both| {
        both.iter().filter_map(|field| field.parse::<f64>().ok()).sum()
    });
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / per_second
}

#[test]
fn worker_out_of_descriptors_neither_spins_nor_hangs() {
    let ufs = tempfile::Builder::new().prefix("hoard-ufs").tempdir().expect("ufs dir");
    let data = content(12, SMALL_LEN);
    std::fs::write(ufs.path().join("small.bin"), &data).expect("write");
    // A cap far above the descriptors the worker will have: accept fails with EMFILE first.
    let cluster = Cluster::start(1, ufs.path(), &["hoard.worker.network.max.connections=4000"]);
    let worker = cluster.processes()[0].clone();
    let target = Target {
        name: "worker",
        pid: worker.pid,
        address: worker.address.clone(),
        normal_path: "/files/small.bin".to_string(),
        normal_body: Some(data),
        kept_kib: 0,
        non_reader_request: Box::new(|_, _| Vec::new()),
    };
    for _ in 0..3 {
        target.normal(Duration::from_secs(10));
    }
    let limit = libc::rlimit {
        rlim_cur: (target.fds() + 24) as libc::rlim_t,
        rlim_max: (target.fds() + 24) as libc::rlim_t,
    };
    // SAFETY: prlimit on our own child process, with a valid struct and no old-limit output.
    let set = unsafe {
        libc::prlimit(
            worker.pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());

    // Far more idle connections than descriptors left. A worker that cannot accept leaves
    // them in the backlog until it is full, and connecting then times out.
    let mut held = Vec::new();
    for _ in 0..300 {
        match connect(&target.address) {
            Some(stream) => held.push(stream),
            None => break,
        }
    }
    assert_eq!(
        held.len(),
        300,
        "clients could not connect: the worker stopped accepting"
    );
    let cpu = cpu_seconds(worker.pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_seconds(worker.pid) - cpu;
    // Spinning on a failing accept would take a whole core.
    assert!(
        spent < 0.8,
        "the worker used {spent:.2}s of CPU in 2s while out of descriptors"
    );
    // Idle connections are closed to make room: a normal client is answered.
    for _ in 0..10 {
        target.normal(Duration::from_secs(10));
    }
    let log = std::fs::read_to_string(&worker.log_file).unwrap_or_default();
    assert!(log.contains("out of file descriptors"), "accept never failed: {log}");
    drop(held);
}
