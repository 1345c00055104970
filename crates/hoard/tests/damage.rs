//! Page files damaged under a running worker (issue 12, item 4): truncated, overwritten with
//! garbage, deleted, replaced by directories, their directories deleted, while readers keep
//! reading them over HTTP. The worker must stay up, every answer must be the UFS's bytes (or a
//! clean error, then the right bytes on a retry), and the pages must be cached again after.
//! Before, the worker mapped page files and a truncation killed it with SIGBUS.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const PAGE: usize = 256 << 10;

type Files = Arc<Vec<(String, Vec<u8>)>>;

/// Deterministic numbers for the readers' ranges.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Reads `range` of `path` until the worker answers it right: a 2xx answer must hold exactly
/// the UFS's bytes, or (a connection cut mid-body) a prefix of them; errors and cut answers
/// are counted and retried.
fn read_checked(address: &str, path: &str, expected: &[u8], range: (usize, usize), errors: &AtomicU64) {
    let (a, b) = range;
    let want = &expected[a..b];
    let request = format!(
        "GET /files{path} HTTP/1.1\r\nHost: {address}\r\nRange: bytes={a}-{}\r\nConnection: close\r\n\r\n",
        b - 1
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http_request(address, &request) {
            Ok((status, _, body)) if (200..300).contains(&status) => {
                if body == want {
                    return;
                }
                assert!(
                    body.len() < want.len() && body == want[..body.len()],
                    "wrong bytes for {path} {a}..{b}: {} bytes, status {status}",
                    body.len()
                );
            }
            Ok((status, _, body)) => {
                assert!(
                    status >= 500,
                    "{path}: status {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Err(_) => {}
        }
        errors.fetch_add(1, Ordering::Relaxed);
        assert!(
            Instant::now() < deadline,
            "{path} {a}..{b}: no right answer for 30s (is the worker dead?)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads every file (whole, and a random range of it) again and again until told to stop,
/// counting passes.
fn reader(
    address: String,
    files: Files,
    stop: Arc<AtomicBool>,
    passes: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    seed: u64,
) {
    let mut rng = Rng(seed);
    while !stop.load(Ordering::Relaxed) {
        for (path, bytes) in files.iter() {
            read_checked(&address, path, bytes, (0, bytes.len()), &errors);
            let a = rng.below(bytes.len() as u64) as usize;
            let b = a + 1 + rng.below((bytes.len() - a) as u64) as usize;
            read_checked(&address, path, bytes, (a, b), &errors);
        }
        passes.fetch_add(1, Ordering::Relaxed);
    }
}

/// The directory of the worker's pages (`<page store>/pages-<page size>`).
fn pages_dir(home: &Path) -> PathBuf {
    let wanted = format!("pages-{PAGE}");
    let mut stack = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if entry.file_name().to_string_lossy() == wanted {
                    return entry.path();
                }
                stack.push(entry.path());
            }
        }
    }
    panic!("no {wanted} under {}", home.display());
}

/// Regular files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&entry.path())),
            Ok(t) if t.is_file() => out.push(entry.path()),
            _ => {}
        }
    }
    out.sort();
    out
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// What is done to the page store in one step.
#[derive(Debug, Clone, Copy)]
enum Damage {
    TruncateToZero,
    TruncateToHalf,
    GarbageSameLength,
    Delete,
    ReplaceWithDirectory,
    DeleteFileDirectories,
    DeleteEveryPage,
    DeleteTempDir,
}

fn apply(damage: Damage, pages: &Path) -> usize {
    let files = files_under(pages);
    let some = files.iter().step_by(3);
    let mut done = 0;
    for path in some {
        let result = match damage {
            Damage::TruncateToZero => std::fs::File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(0)),
            Damage::TruncateToHalf => std::fs::File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.metadata().and_then(|m| f.set_len(m.len() / 2))),
            Damage::GarbageSameLength => {
                std::fs::metadata(path).and_then(|m| std::fs::write(path, vec![0x5a; m.len() as usize]))
            }
            Damage::Delete => std::fs::remove_file(path),
            Damage::ReplaceWithDirectory => std::fs::remove_file(path).and_then(|()| std::fs::create_dir(path)),
            Damage::DeleteFileDirectories => path.parent().map_or(Ok(()), std::fs::remove_dir_all),
            Damage::DeleteEveryPage => std::fs::remove_dir_all(pages),
            Damage::DeleteTempDir => std::fs::remove_dir_all(pages.with_file_name("tmp")),
        };
        // Racing with the worker's own evictions and writes: a file may be gone already.
        done += usize::from(result.is_ok());
        if matches!(damage, Damage::DeleteEveryPage | Damage::DeleteTempDir) {
            break;
        }
    }
    done
}

fn damage_under_readers(memory_size: &str) {
    let sizes = [4 * PAGE + 123, 3 * PAGE, 2 * PAGE + 1, PAGE, 5 * PAGE - 7, 100_000];
    let ufs = tempfile::Builder::new().prefix("hoard-ufs").tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let name = format!("/d/file-{i}.bin");
            let bytes = content(40 + i as u64, size);
            std::fs::create_dir_all(ufs.path().join("d")).unwrap();
            std::fs::write(ufs.path().join(&name[1..]), &bytes).unwrap();
            (name, bytes)
        })
        .collect();
    let memory = format!("hoard.worker.page.store.memory.size={memory_size}");
    let cluster = Cluster::start(1, ufs.path(), &["hoard.worker.page.store.page.size=256KiB", &memory]);
    let worker = cluster.processes().remove(0);
    let errors = Arc::new(AtomicU64::new(0));
    for (path, bytes) in &files {
        read_checked(&worker.address, path, bytes, (0, bytes.len()), &errors);
        cluster.wait_cached(path, bytes.len() as u64);
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    let pages = pages_dir(cluster.home.path());
    let page_count: usize = sizes.iter().map(|s| s.div_ceil(PAGE)).sum();
    assert_eq!(files_under(&pages).len(), page_count);

    let files: Files = Arc::new(files);
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|seed| {
            let (address, files, stop, passes, errors) = (
                worker.address.clone(),
                files.clone(),
                stop.clone(),
                passes.clone(),
                errors.clone(),
            );
            std::thread::spawn(move || reader(address, files, stop, passes, errors, seed + 1))
        })
        .collect();

    let steps = [
        Damage::TruncateToZero,
        Damage::TruncateToHalf,
        Damage::GarbageSameLength,
        Damage::Delete,
        Damage::ReplaceWithDirectory,
        Damage::DeleteFileDirectories,
        Damage::DeleteTempDir,
        Damage::DeleteEveryPage,
    ];
    let mut damaged = 0;
    for round in 0..2 {
        for step in steps {
            // Wait for the readers to have the pages cached again, then damage them.
            let deadline = Instant::now() + Duration::from_secs(60);
            while files_under(&pages).len() < page_count / 2 {
                assert!(alive(worker.pid), "the worker died (round {round}, before {step:?})");
                assert!(Instant::now() < deadline, "pages never cached again before {step:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
            damaged += apply(step, &pages);
            // Two more passes of every reader over every file: the damaged pages are read.
            let seen = passes.load(Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(60);
            while passes.load(Ordering::Relaxed) < seen + 4 {
                assert!(alive(worker.pid), "the worker died after {step:?} (round {round})");
                assert!(Instant::now() < deadline, "readers stalled after {step:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader got wrong bytes or no answer");
    }
    assert!(damaged > 20, "damaged {damaged} page files");

    // The worker is the same process, up and answering.
    assert!(alive(worker.pid), "the worker died");
    assert_eq!(cluster.processes()[0].pid, worker.pid);
    let (status, _, _) = http_get(&worker.address, "/health").expect("health");
    assert_eq!(status, 200);
    let log = std::fs::read_to_string(&worker.log_file).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        metric(&worker.address, "hoard_worker_checksum_failures_total") > 0.0,
        "truncated and overwritten pages are counted as checksum failures"
    );

    // Afterwards every file reads right and is cached whole again.
    for (path, bytes) in files.iter() {
        read_checked(&worker.address, path, bytes, (0, bytes.len()), &errors);
        cluster.wait_cached(path, bytes.len() as u64);
    }
    // Without a memory tier every page is read from its file, so a damaged one was dropped and
    // written again. With one, a page whose file was deleted may still be served from its
    // verified copy in memory (the index keeps it; the file comes back once the copy is evicted
    // and the missing file found): on disk there are then fewer files, never more.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let on_disk = files_under(&pages).len();
        assert!(
            on_disk <= page_count,
            "{on_disk} page files on disk, {page_count} pages"
        );
        if on_disk == page_count || memory_size != "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{on_disk} page files on disk, {page_count} pages"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "damaged {damaged} page files; the readers saw {} clean errors",
        errors.load(Ordering::Relaxed)
    );
}

#[test]
fn a_worker_survives_its_page_files_damaged_under_readers() {
    // No memory tier: every read goes to the page files.
    damage_under_readers("0");
}

#[test]
fn a_worker_with_a_memory_tier_survives_its_page_files_damaged_under_readers() {
    // A tier of four pages: reads are served from verified copies and from the page files.
    damage_under_readers("1MiB");
}
