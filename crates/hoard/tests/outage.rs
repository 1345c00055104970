//! Reads without the control plane, on real processes: with etcd paused (SIGSTOP) or the
//! coordinator SIGKILLed, `hoard fs cat` still returns the file's bytes, reading with the
//! coordinator's last-known list or the list the client cached on disk, with one warning; a
//! cached list older than `hoard.user.membership.cache.max.age` is not used and the error says
//! why, each cause once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use hoard_testkit::Etcd;

const MIB: usize = 1 << 20;
/// A hang guard only (the fallback takes about two membership connect timeouts, 2s each by
/// default); how fast it is belongs to benchmarks.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn ufs_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("ufs dir");
    for (path, bytes) in files {
        let target = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::write(target, bytes).expect("write");
    }
    dir
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Resumes a paused etcd when the test ends, pass or fail (so it can be killed and cleaned).
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

/// `hoard --conf <conf> fs cat <path>`, timed.
fn cat(conf: &Path, path: &str) -> (Output, Duration) {
    let started = Instant::now();
    let output = hoard_with_conf(conf, &["fs", "cat", path]);
    (output, started.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The stderr lines that are warnings (tracing's ` WARN ` level, or the CLI's `warning:`).
fn warnings(output: &Output) -> Vec<String> {
    stderr(output)
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains("warning:"))
        .map(str::to_string)
        .collect()
}

/// Asserts `fs cat` returned `expected` within the hang guard, with exactly one warning that
/// contains `says`.
fn assert_read_with_one_warning(output: &Output, took: Duration, expected: &[u8], says: &str) {
    assert!(output.status.success(), "{}", describe(output));
    assert!(output.stdout == expected, "the bytes read are the file's");
    assert!(took < HANG_GUARD, "fs cat took {took:?}");
    eprintln!("{}", stderr(output).trim_end());
    let warnings = warnings(output);
    assert_eq!(warnings.len(), 1, "exactly one warning: {}", stderr(output));
    assert!(
        warnings[0].contains(says),
        "warning {:?} should say {says:?}",
        warnings[0]
    );
}

/// A copy of the client conf with its own, empty work dir: a client that never ran before.
fn new_client_conf(conf: &Path, dir: &Path) -> PathBuf {
    let target = dir.join("conf");
    std::fs::create_dir_all(&target).expect("conf dir");
    let site = std::fs::read_to_string(conf.join("hoard-site.properties")).expect("site file");
    let mut text: String = site
        .lines()
        .filter(|line| !line.starts_with("hoard.work.dir="))
        .map(|line| format!("{line}\n"))
        .collect();
    text.push_str(&format!("hoard.work.dir={}\n", dir.join("work").display()));
    std::fs::write(target.join("hoard-site.properties"), text).expect("write site file");
    if let Ok(workers) = std::fs::read_to_string(conf.join("workers")) {
        std::fs::write(target.join("workers"), workers).expect("write workers file");
    }
    target
}

fn cache_file(cluster: &Cluster) -> PathBuf {
    cluster
        .home
        .path()
        .canonicalize()
        .expect("home")
        .join("client")
        .join("membership.json")
}

fn coordinator(cluster: &Cluster) -> Process {
    cluster
        .all_processes()
        .into_iter()
        .find(|process| process.role == "coordinator")
        .expect("a coordinator")
}

/// Rewrites the cache file's save time to `age` ago.
fn age_cache(path: &Path, age: Duration) {
    let text = std::fs::read_to_string(path).expect("cache file");
    let mut file: serde_json::Value = serde_json::from_str(&text).expect("cache json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    file["savedAtMs"] = serde_json::json!(now - age.as_millis() as u64);
    std::fs::write(path, file.to_string()).expect("rewrite cache file");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_paused_reads_go_on_with_the_coordinators_list_then_the_disk_cache() {
    let etcd = Etcd::start().await;
    let data = content(71, 2 * MIB + 9);
    let ufs = ufs_with(&[("/d/a.bin", &data)]);
    let endpoint = etcd.endpoint();
    tokio::task::block_in_place(|| {
        let cluster = Cluster::start_with(
            3,
            &ufs.path().display().to_string(),
            &["hoard.worker.failure.detection.timeout=3s"],
            &["--etcd", &endpoint],
        );
        // One successful run leaves the list on disk.
        let (output, _) = cat(&cluster.conf, "/d/a.bin");
        assert!(output.status.success(), "{}", describe(&output));
        assert!(output.stdout == data);
        assert!(warnings(&output).is_empty(), "{}", stderr(&output));
        assert!(cache_file(&cluster).is_file(), "the client saved its worker list");

        let pid = etcd.pid().expect("etcd runs");
        signal(pid, "-STOP");
        let _resume = Resume(pid);

        // The coordinator keeps serving the list it last read from etcd, marked stale.
        let coordinator = coordinator(&cluster);
        let (status, _, body) = http_get(&coordinator.address, "/api/v1/nodes").expect("nodes");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let nodes: serde_json::Value = serde_json::from_slice(&body).expect("nodes json");
        assert_eq!(nodes["stale"], true, "{nodes}");
        assert!(nodes["ageMs"].as_u64().is_some(), "{nodes}");
        assert_eq!(nodes["workers"].as_array().map(Vec::len), Some(3), "{nodes}");

        // A client that ran before: the coordinator's list comes first.
        let (output, took) = cat(&cluster.conf, "/d/a.bin");
        assert_read_with_one_warning(&output, took, &data, "last-known worker list");
        eprintln!("etcd paused, coordinator's list: {took:?}");

        // A brand-new client with no disk cache reads with the coordinator's list too.
        let fresh = tempfile::tempdir().expect("new client dir");
        let fresh_conf = new_client_conf(&cluster.conf, fresh.path());
        let (output, took) = cat(&fresh_conf, "/d/a.bin");
        assert_read_with_one_warning(&output, took, &data, "last-known worker list");

        // The coordinator dies too: the client that ran before reads with its disk cache.
        kill9(coordinator.pid);
        let (output, took) = cat(&cluster.conf, "/d/a.bin");
        assert_read_with_one_warning(&output, took, &data, "cached at");
        eprintln!("etcd paused, coordinator dead, disk cache: {took:?}");

        // The brand-new client has nothing to read with (its disk cache was never written:
        // etcd never answered it) and says why, each cause once.
        assert!(!fresh.path().join("work/client/membership.json").exists());
        let (output, took) = cat(&fresh_conf, "/d/a.bin");
        assert!(!output.status.success(), "{}", describe(&output));
        assert!(took < HANG_GUARD, "fs cat took {took:?}");
        let text = stderr(&output);
        eprintln!("{}", text.trim_end());
        let cause = format!("etcd at {endpoint} did not answer within 2s");
        assert_eq!(text.matches(&cause).count(), 1, "the cause once: {text}");
        assert!(text.contains("cannot get the worker list"), "{text}");
        assert!(text.contains("none saved yet"), "{text}");
        // Nothing lost: the first client still reads the file whole.
        let (output, _) = cat(&cluster.conf, "/d/a.bin");
        assert!(
            output.status.success() && output.stdout == data,
            "{}",
            describe(&output)
        );

        // etcd back: clients list from it again, without a warning (the workers' leases may
        // need a moment to be renewed after the pause).
        signal(pid, "-CONT");
        wait_until("reads from etcd's list again", Duration::from_secs(30), || {
            let (output, _) = cat(&fresh_conf, "/d/a.bin");
            output.status.success() && output.stdout == data && warnings(&output).is_empty()
        });
        assert!(fresh.path().join("work/client/membership.json").is_file());
    });
}

#[test]
fn coordinator_killed_reads_go_on_with_the_disk_cache() {
    let data = content(72, MIB + 5);
    let ufs = ufs_with(&[("/c.bin", &data)]);
    let cluster = Cluster::start(2, ufs.path(), &["hoard.worker.failure.detection.timeout=3s"]);
    let (output, _) = cat(&cluster.conf, "/c.bin");
    assert!(
        output.status.success() && output.stdout == data,
        "{}",
        describe(&output)
    );
    assert!(cache_file(&cluster).is_file(), "the client saved its worker list");

    kill9(coordinator(&cluster).pid);
    let (output, took) = cat(&cluster.conf, "/c.bin");
    assert_read_with_one_warning(&output, took, &data, "cached at");
    eprintln!("coordinator dead, disk cache: {took:?}");
    // Every worker it read from is still up and the read is repeatable.
    let (output, _) = cat(&cluster.conf, "/c.bin");
    assert!(
        output.status.success() && output.stdout == data,
        "{}",
        describe(&output)
    );
}

#[test]
fn a_disk_cache_older_than_its_max_age_is_not_used() {
    let data = content(73, MIB + 7);
    let ufs = ufs_with(&[("/o.bin", &data)]);
    let cluster = Cluster::start(2, ufs.path(), &["hoard.worker.failure.detection.timeout=3s"]);
    let (output, _) = cat(&cluster.conf, "/o.bin");
    assert!(
        output.status.success() && output.stdout == data,
        "{}",
        describe(&output)
    );
    let cache = cache_file(&cluster);
    kill9(coordinator(&cluster).pid);

    age_cache(&cache, Duration::from_secs(8 * 86_400));
    let (output, took) = cat(&cluster.conf, "/o.bin");
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(output.stdout.is_empty(), "no bytes from an unusable list");
    assert!(took < HANG_GUARD, "fs cat took {took:?}");
    let text = stderr(&output);
    eprintln!("{}", text.trim_end());
    assert!(text.contains("cannot get the worker list"), "{text}");
    assert!(
        text.contains("8d old, older than hoard.user.membership.cache.max.age=7d"),
        "{text}"
    );
    assert_eq!(text.matches("Connection refused").count(), 1, "the cause once: {text}");

    // Within its max age the same list is used again: nothing in it was lost.
    age_cache(&cache, Duration::from_secs(6 * 86_400));
    let (output, took) = cat(&cluster.conf, "/o.bin");
    assert_read_with_one_warning(&output, took, &data, "cached at");
}
