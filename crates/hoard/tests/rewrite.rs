//! A rewritten UFS file is read whole-old or whole-new, never a mix (docs/worker-http.md,
//! Consistency), with real worker processes: the file is rewritten in place each way a user
//! does it (same length with the modification time restored, as `cp -p`, `rsync -a` and
//! `touch -r` do; same length within the same millisecond; longer; shorter) while one page of
//! it is cached, then read whole many times over HTTP and with `hoard fs cat`. Every page of
//! every generation has its own bytes, so a mix names the pages it took from each.

mod common;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const PAGE: usize = 64 << 10;
/// `hoard.user.file.metadata.max.age` in these tests.
const MAX_AGE: Duration = Duration::from_secs(1);
const PROPERTIES: [&str; 2] = [
    "hoard.worker.page.store.page.size=64KiB",
    "hoard.user.file.metadata.max.age=1s",
];

/// `len` bytes of generation `generation`: every page distinct, within and across generations.
fn generation(generation: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut page = 0;
    while out.len() < len {
        let take = PAGE.min(len - out.len());
        out.extend_from_slice(&content(generation * 1000 + page, take));
        page += 1;
    }
    out
}

fn page_hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Every generation written to a file, recognisable page by page.
#[derive(Default)]
struct Generations {
    /// Hash of a page's bytes -> (generation, page index).
    pages: HashMap<u64, (u64, usize)>,
    lengths: HashMap<u64, usize>,
}

impl Generations {
    /// The bytes of generation `generation`, now known.
    fn add(&mut self, generation_: u64, len: usize) -> Vec<u8> {
        let bytes = generation(generation_, len);
        for (index, page) in bytes.chunks(PAGE).enumerate() {
            self.pages.insert(page_hash(page), (generation_, index));
        }
        self.lengths.insert(generation_, len);
        bytes
    }

    /// Page by page: the generation each (whole) page of `bytes` is, if any.
    fn pages_of(&self, bytes: &[u8]) -> Vec<Option<u64>> {
        bytes
            .chunks(PAGE)
            .enumerate()
            .map(|(index, page)| match self.pages.get(&page_hash(page)) {
                Some(&(generation, at)) if at == index => Some(generation),
                _ => None,
            })
            .collect()
    }

    /// The generation `bytes` is whole, or how they mix.
    fn identify(&self, bytes: &[u8]) -> Result<u64, String> {
        let pages = self.pages_of(bytes);
        if let Some(Some(first)) = pages.first() {
            if pages.iter().all(|page| *page == Some(*first)) && self.lengths.get(first) == Some(&bytes.len()) {
                return Ok(*first);
            }
        }
        Err(format!("{} bytes, generation of each page: {pages:?}", bytes.len()))
    }

    /// True when `bytes` (what a failed read delivered) are the start of one generation.
    fn is_start_of_one(&self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let whole = bytes.len() / PAGE;
        let pages = self.pages_of(&bytes[..whole * PAGE]);
        let candidates: Vec<u64> = match pages.first() {
            Some(Some(first)) if pages.iter().all(|page| *page == Some(*first)) => vec![*first],
            Some(_) => return false,
            None => self.lengths.keys().copied().collect(),
        };
        let tail = &bytes[whole * PAGE..];
        candidates
            .iter()
            .any(|&g| content(g * 1000 + whole as u64, tail.len()) == tail && self.lengths[&g] >= bytes.len())
    }
}

/// Whole reads of one file, checked: each is one generation, or fails as a read of a file that
/// changes under it may (and then delivered the start of one generation).
struct Reads<'a> {
    cluster: &'a Cluster,
    address: String,
    path: &'a str,
    generations: &'a Generations,
    /// Every ETag seen with the generation its bytes were: one ETag never names two.
    etags: HashMap<String, u64>,
    seen: HashMap<u64, usize>,
    failed: usize,
}

impl<'a> Reads<'a> {
    fn new(cluster: &'a Cluster, address: &str, path: &'a str, generations: &'a Generations) -> Reads<'a> {
        Reads {
            cluster,
            address: address.to_string(),
            path,
            generations,
            etags: HashMap::new(),
            seen: HashMap::new(),
            failed: 0,
        }
    }

    /// `GET /files/<path>`: the generation read, or `None` for a read that failed as a read may
    /// while the file changes (503 `FILE_CHANGED`, or a body cut short of its Content-Length).
    fn http(&mut self) -> Option<u64> {
        let (status, headers, body) = http_get(&self.address, &format!("/files{}", self.path)).expect("http get");
        if status == 503 && String::from_utf8_lossy(&body).contains("FILE_CHANGED") {
            self.failed += 1;
            return None;
        }
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let length: usize = header(&headers, "content-length")
            .and_then(|value| value.parse().ok())
            .expect("content-length");
        if body.len() < length {
            assert!(self.generations.is_start_of_one(&body), "an http body cut short mixed");
            self.failed += 1;
            return None;
        }
        let seen = self
            .generations
            .identify(&body)
            .unwrap_or_else(|mix| panic!("an http read mixed: {mix}"));
        let etag = header(&headers, "etag").expect("etag").to_string();
        let first = *self.etags.entry(etag.clone()).or_insert(seen);
        assert_eq!(first, seen, "ETag {etag} was sent with two generations' bytes");
        *self.seen.entry(seen).or_default() += 1;
        Some(seen)
    }

    /// `hoard fs cat <path>`, like [`Reads::http`].
    fn cat(&mut self) -> Option<u64> {
        let cat = self.cluster.hoard(&["fs", "cat", self.path]);
        if !cat.status.success() {
            let stderr = String::from_utf8_lossy(&cat.stderr);
            assert!(
                stderr.contains("changed") || stderr.contains("read stopped"),
                "cat failed for another reason: {}",
                describe(&cat)
            );
            assert!(
                self.generations.is_start_of_one(&cat.stdout),
                "what a failed cat wrote mixed"
            );
            self.failed += 1;
            return None;
        }
        let seen = self
            .generations
            .identify(&cat.stdout)
            .unwrap_or_else(|mix| panic!("hoard fs cat mixed: {mix}"));
        *self.seen.entry(seen).or_default() += 1;
        Some(seen)
    }

    fn count(&self, generation: u64) -> usize {
        self.seen.get(&generation).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rewrite {
    /// Same length, the modification time set back to the old one.
    MtimeRestored,
    /// Same length, written again at once.
    SameLength,
    Longer,
    Shorter,
}

fn set_mtime(file: &Path, mtime: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(file)
        .expect("open")
        .set_modified(mtime)
        .expect("set mtime");
}

/// Two five-page files, one with only page 0 cached and one cached whole, are rewritten `how`
/// and read whole until the worker's cached status has expired: every read is the old or the
/// new bytes, or fails as a read of a changing file may; after that every read is the new bytes.
fn rewrite_cached_files(how: Rewrite) {
    const OLD: u64 = 1;
    const NEW: u64 = 2;
    const FILES: [(&str, usize); 2] = [("/partly.bin", PAGE), ("/whole.bin", 5 * PAGE - 123)];
    let mut generations = Generations::default();
    let old = generations.add(OLD, 5 * PAGE - 123);
    let new = match how {
        Rewrite::MtimeRestored | Rewrite::SameLength => generations.add(NEW, old.len()),
        Rewrite::Longer => generations.add(NEW, 7 * PAGE + 321),
        Rewrite::Shorter => generations.add(NEW, 3 * PAGE - 5),
    };
    let ufs = tempfile::Builder::new().prefix("hoard-ufs").tempdir().expect("ufs dir");
    for (path, _) in FILES {
        std::fs::write(ufs.path().join(&path[1..]), &old).expect("write old");
    }
    let cluster = Cluster::start(1, ufs.path(), &PROPERTIES);
    let worker = cluster.processes()[0].clone();

    // A read in the first moments after a write is not cached (the file has not settled):
    // read until the pages are.
    for (path, cached) in FILES {
        wait_until(
            &format!("{path}: {cached} bytes cached"),
            Duration::from_secs(30),
            || {
                let request = format!(
                    "GET /files{path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-{}\r\nConnection: close\r\n\r\n",
                    cached - 1
                );
                let (status, _, body) = http_request(&worker.address, &request).expect("read");
                assert_eq!((status, body.as_slice()), (206, &old[..cached]));
                cached_bytes(&worker.address, path) == cached as u64
            },
        );
    }

    for (path, _) in FILES {
        let file = ufs.path().join(&path[1..]);
        let old_mtime = std::fs::metadata(&file).and_then(|m| m.modified()).expect("mtime");
        std::fs::write(&file, &new).expect("rewrite");
        if how == Rewrite::MtimeRestored {
            set_mtime(&file, old_mtime);
            let meta = std::fs::metadata(&file).expect("stat");
            assert_eq!(
                (meta.modified().expect("mtime"), meta.len()),
                (old_mtime, old.len() as u64)
            );
        }
    }
    // The worker's statuses of the old versions expire at the latest one max age from now.
    let expired = Instant::now() + MAX_AGE + Duration::from_millis(300);

    let mut reads: Vec<Reads> = FILES
        .iter()
        .map(|(path, _)| Reads::new(&cluster, &worker.address, path, &generations))
        .collect();
    let mut round = 0;
    while Instant::now() < expired || round < 40 {
        round += 1;
        let file = &mut reads[round % 2];
        if round % 10 < 2 {
            file.cat();
        } else {
            file.http();
        }
    }
    for file in &mut reads {
        for _ in 0..10 {
            assert_eq!(
                file.http(),
                Some(NEW),
                "{how:?} {}: new bytes after the max age",
                file.path
            );
        }
        assert_eq!(
            file.cat(),
            Some(NEW),
            "{how:?} {}: new bytes after the max age",
            file.path
        );
    }
    for file in &reads {
        eprintln!(
            "{how:?} {}: while the old status could be cached: {} old, {} new, {} failed",
            file.path,
            file.count(OLD),
            file.count(NEW),
            file.failed
        );
    }
}

#[test]
fn a_same_length_rewrite_with_the_mtime_restored_is_never_mixed() {
    rewrite_cached_files(Rewrite::MtimeRestored);
}

#[test]
fn a_same_length_rewrite_is_never_mixed() {
    rewrite_cached_files(Rewrite::SameLength);
}

#[test]
fn a_longer_rewrite_is_never_mixed() {
    rewrite_cached_files(Rewrite::Longer);
}

#[test]
fn a_shorter_rewrite_is_never_mixed() {
    rewrite_cached_files(Rewrite::Shorter);
}

/// Writes, reads page 0 and writes again as fast as a client can, round after round, so that
/// both writes often fall in the same millisecond (one version when versions were milliseconds)
/// or the same tick of the kernel's clock. The worker caches no status (max age 0), so it sees
/// every write. Every whole read is the second write, never pages of two generations, and one
/// ETag never names two generations.
#[test]
fn rewrites_in_the_same_millisecond_are_never_mixed() {
    const ROUNDS: u64 = 300;
    let ufs = tempfile::Builder::new().prefix("hoard-ufs").tempdir().expect("ufs dir");
    let file = ufs.path().join("m.bin");
    let mut generations = Generations::default();
    for generation in 0..=2 * ROUNDS + 1 {
        generations.add(generation, 5 * PAGE);
    }
    std::fs::write(&file, generation(0, 5 * PAGE)).expect("write");
    let cluster = Cluster::start(
        1,
        ufs.path(),
        &[
            "hoard.worker.page.store.page.size=64KiB",
            "hoard.user.file.metadata.max.age=0s",
        ],
    );
    let worker = cluster.processes()[0].clone();
    // One byte over a kept-alive connection: the worker still fills (and may cache) the whole
    // page, and the second write follows as soon as possible.
    let mut connection = KeptAlive::connect(&worker.address);
    let mtime_ms = |meta: &std::fs::Metadata| meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000;
    let mut reads = Reads::new(&cluster, &worker.address, "/m.bin", &generations);
    let mut same_millisecond = 0;
    for round in 1..=ROUNDS {
        let (first, second) = (2 * round, 2 * round + 1);
        let second_bytes = generation(second, 5 * PAGE);
        std::fs::write(&file, generation(first, 5 * PAGE)).expect("write first");
        let first_ms = mtime_ms(&std::fs::metadata(&file).expect("stat"));
        assert_eq!(
            connection.get("/files/m.bin", "bytes=0-0"),
            206,
            "round {round}: page 0"
        );
        std::fs::write(&file, &second_bytes).expect("write second");
        same_millisecond += usize::from(mtime_ms(&std::fs::metadata(&file).expect("stat")) == first_ms);
        assert_eq!(reads.http(), Some(second), "round {round}: the second write, whole");
        if round % 10 == 0 {
            assert_eq!(reads.cat(), Some(second), "round {round}: the second write, whole");
        }
    }
    eprintln!("{ROUNDS} rounds, {same_millisecond} with both writes in the same millisecond");
}

/// An HTTP/1.1 connection kept open across requests.
struct KeptAlive {
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl KeptAlive {
    fn connect(address: &str) -> KeptAlive {
        let stream = std::net::TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        KeptAlive {
            reader: std::io::BufReader::new(stream),
        }
    }

    /// `GET target` with `Range: range`; the status (the body is read and dropped).
    fn get(&mut self, target: &str, range: &str) -> u16 {
        use std::io::{BufRead, Read, Write};
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nRange: {range}\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes()).expect("send");
        let mut status = 0;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read head");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if status == 0 {
                status = line
                    .split(' ')
                    .nth(1)
                    .and_then(|code| code.parse().ok())
                    .expect("status");
            } else if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().expect("content-length");
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("body");
        status
    }
}

/// A page read from a file changed less than `hoard_ufs::RECENT_CHANGE_WINDOW` (100ms) ago is
/// served but not stored: another write in the same clock tick could keep the version.
#[test]
fn a_file_changed_moments_ago_is_served_but_not_cached() {
    let ufs = tempfile::Builder::new().prefix("hoard-ufs").tempdir().expect("ufs dir");
    let cluster = Cluster::start(1, ufs.path(), &PROPERTIES);
    let worker = cluster.processes()[0].clone();
    // Well inside the worker's window, so a read that ends before it surely began inside it.
    let inside = Duration::from_millis(50);
    let mut checked = 0;
    for round in 0..10u64 {
        let path = format!("/recent-{round}.bin");
        let bytes = generation(round, 2 * PAGE);
        let file = ufs.path().join(path.trim_start_matches('/'));
        std::fs::write(&file, &bytes).expect("write");
        let meta = std::fs::metadata(&file).expect("stat");
        let ctime = UNIX_EPOCH + Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32);
        let (status, _, body) = http_get(&worker.address, &format!("/files{path}")).expect("read");
        assert!(status == 200 && body == bytes, "{path}: {status}, {} bytes", body.len());
        if SystemTime::now() >= ctime + inside {
            continue; // a slow round: the read may have begun after the window
        }
        checked += 1;
        // Pages are stored behind the read: give a store the time to show up, and see none.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            let cached = cached_bytes(&worker.address, &path);
            assert_eq!(cached, 0, "{path}: a page read moments after a write was cached");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(checked > 0, "no round read within {inside:?} of the write");

    // Once the window has passed, reads cache the file as usual.
    let bytes = generation(0, 2 * PAGE);
    wait_until("the settled file is cached", Duration::from_secs(30), || {
        let (_, _, body) = http_get(&worker.address, "/files/recent-0.bin").expect("read");
        assert!(body == bytes);
        cached_bytes(&worker.address, "/recent-0.bin") == bytes.len() as u64
    });
}

/// A load of a file written a moment ago waits until its pages can be cached, and caches them.
#[test]
fn a_load_of_a_file_changed_moments_ago_caches_it_whole() {
    let ufs = tempfile::Builder::new().prefix("hoard-ufs").tempdir().expect("ufs dir");
    let cluster = Cluster::start(1, ufs.path(), &PROPERTIES);
    let worker = cluster.processes()[0].clone();
    let bytes = generation(7, 3 * PAGE + 10);
    std::fs::write(ufs.path().join("l.bin"), &bytes).expect("write");
    let body = r#"{"jobId":"j-1","taskId":1,"skipIfExists":false,"metadataOnly":false,"files":[{"path":"/l.bin"}]}"#;
    let request = format!(
        "POST /api/v1/tasks/load HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-Hoard-Cluster-Secret: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        cluster.secret(),
        body.len()
    );
    let (status, _, answer) = http_request(&worker.address, &request).expect("load");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("load json");
    let result = &answer["results"][0];
    assert_eq!(result["ok"], true, "{answer}");
    assert_eq!(result["cachedBytes"].as_u64(), Some(bytes.len() as u64), "{answer}");
    assert_eq!(cached_bytes(&worker.address, "/l.bin"), bytes.len() as u64);
    let (_, _, body) = http_get(&worker.address, "/files/l.bin").expect("read");
    assert!(body == bytes, "the loaded bytes");
}

/// `X-Hoard-Cached-Bytes` of a HEAD: bytes of the current version cached on the worker.
fn cached_bytes(address: &str, path: &str) -> u64 {
    let (status, headers, _) = http_request(
        address,
        &format!("HEAD /files{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .expect("head");
    assert_eq!(status, 200, "HEAD {path}");
    header(&headers, "x-hoard-cached-bytes")
        .and_then(|value| value.parse().ok())
        .expect("x-hoard-cached-bytes")
}
