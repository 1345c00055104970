//! Load and free jobs with real processes, on both job stores: EMBEDDED (the coordinator's
//! redb file, COORDINATOR membership) and ETCD (a real etcd, ETCD membership). Faults: a worker
//! or the coordinator SIGKILLed mid-job, the UFS path removed during a load, bad input, a full
//! queue. Every test checks the counts and what the workers hold.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use hoard_testkit::Etcd;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const JOB_LIMIT: Duration = Duration::from_secs(120);

fn fast_scheduler() -> Vec<&'static str> {
    vec![
        "hoard.worker.failure.detection.timeout=3s",
        "hoard.coordinator.scheduler.job.etcd.poll.interval=100ms",
        "hoard.coordinator.scheduler.interval.time=200ms",
    ]
}

fn start_cluster(workers: usize, ufs: &Path, etcd: Option<&Etcd>, properties: &[&str]) -> Cluster {
    let mut props = fast_scheduler();
    props.extend_from_slice(properties);
    let endpoint = etcd.map(Etcd::endpoint);
    let mut extra: Vec<&str> = Vec::new();
    if let Some(endpoint) = &endpoint {
        extra.extend(["--etcd", endpoint.as_str()]);
        props.push("hoard.coordinator.job.meta.store.type=ETCD");
    }
    Cluster::start_with(workers, &ufs.display().to_string(), &props, &extra)
}

fn coordinator_address(cluster: &Cluster) -> String {
    cluster.process_named("coordinator").address
}

fn worker_sum(cluster: &Cluster, metric_name: &str) -> f64 {
    cluster
        .processes()
        .iter()
        .map(|worker| metric(&worker.address, metric_name))
        .sum()
}

fn cached_bytes(cluster: &Cluster, path: &str) -> u64 {
    let stat = cluster.hoard(&["fs", "stat", path, "--format", "json"]);
    assert!(stat.status.success(), "{}", describe(&stat));
    let json: serde_json::Value = serde_json::from_slice(&stat.stdout).expect("stat json");
    json["cachedBytes"].as_u64().expect("cachedBytes")
}

fn load_then_free(etcd: Option<&Etcd>) {
    let ufs = tempfile::tempdir().expect("ufs");
    let mut total = many_files(ufs.path(), "d/small", 40, 100 * KIB + 7);
    let big = content(999, 5 * MIB + 11);
    std::fs::write(ufs.path().join("d/big.bin"), &big).expect("big");
    std::fs::write(ufs.path().join("d/empty.bin"), b"").expect("empty");
    total += big.len() as u64;
    let cluster = start_cluster(3, ufs.path(), etcd, &["hoard.worker.load.file.partition.size=2MiB"]);

    let output = cluster.hoard(&[
        "job",
        "load",
        "--path",
        "/d",
        "--submit",
        "--wait",
        "--batch-size",
        "7",
        "--verify",
        "--format",
        "json",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let job: serde_json::Value = serde_json::from_slice(&output.stdout).expect("job json");
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    assert_eq!(job["filesProcessed"], 42);
    assert_eq!(job["filesFailed"], 0);
    assert_eq!(job["bytesProcessed"].as_u64(), Some(total));
    assert_eq!(job["verified"], true);
    assert_eq!(job["filesListed"], 42);
    assert!(job["owner"].as_str().is_some_and(|owner| !owner.is_empty()));
    // Every file cached whole, each byte read from the UFS once.
    assert_eq!(cached_bytes(&cluster, "/d/big.bin"), big.len() as u64);
    assert_eq!(
        cached_bytes(&cluster, "/d/small/000/f00013.bin"),
        (100 * KIB + 7) as u64
    );
    assert_eq!(worker_sum(&cluster, "hoard_worker_ufs_bytes_read_total"), total as f64);
    assert!(cluster.hoard(&["fs", "cat", "/d/big.bin"]).stdout == big);

    // Loading again starts a new run (the first is finished) that reads nothing new.
    let again = submit(&cluster, &["load", "--path", "/d", "--skip-if-exists"]);
    assert_ne!(again, job["jobId"].as_str().unwrap_or_default());
    let rerun = wait_job(&cluster, &again, JOB_LIMIT);
    assert_eq!(rerun["state"], "SUCCEEDED", "{rerun}");
    assert_eq!(
        rerun["filesSkipped"], 42,
        "every file is cached whole already (the empty one trivially)"
    );
    assert_eq!(worker_sum(&cluster, "hoard_worker_ufs_bytes_read_total"), total as f64);

    // Free evicts every page from every worker.
    let output = cluster.hoard(&["job", "free", "--path", "/d", "--submit", "--wait", "--format", "json"]);
    assert!(output.status.success(), "{}", describe(&output));
    let freed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("free json");
    assert_eq!(freed["state"], "SUCCEEDED", "{freed}");
    assert_eq!(
        freed["filesProcessed"].as_u64().unwrap_or(0) + freed["filesSkipped"].as_u64().unwrap_or(0),
        42
    );
    assert_eq!(cached_bytes(&cluster, "/d/big.bin"), 0);
    assert_eq!(worker_sum(&cluster, "hoard_worker_page_store_used_bytes"), 0.0);
    let list = cluster.hoard(&["job", "list", "--format", "json"]);
    let jobs: serde_json::Value = serde_json::from_slice(&list.stdout).expect("list json");
    assert_eq!(jobs.as_array().map(Vec::len), Some(3));
}

#[test]
fn embedded_load_then_free() {
    load_then_free(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_load_then_free() {
    let etcd = Etcd::start().await;
    tokio::task::block_in_place(|| load_then_free(Some(&etcd)));
}

fn post_job(cluster: &Cluster, body: &str) -> (u16, serde_json::Value) {
    let request = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, answer) = http_request(&coordinator_address(cluster), &request).expect("post job");
    (
        status,
        serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null),
    )
}

fn list_jobs(cluster: &Cluster) -> Vec<serde_json::Value> {
    let (status, _, body) = http_get(&coordinator_address(cluster), "/api/v1/jobs").expect("list");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("list json");
    json["jobs"].as_array().cloned().unwrap_or_default()
}

fn bad_input_and_a_full_queue(etcd: Option<&Etcd>) {
    let ufs = tempfile::tempdir().expect("ufs");
    for i in 0..2001 {
        std::fs::write(ufs.path().join(format!("q{i:04}")), b"x").expect("file");
    }
    // Nothing is claimed while the queue fills: the poll interval is an hour.
    let cluster = start_cluster(
        2,
        ufs.path(),
        etcd,
        &["hoard.coordinator.scheduler.job.etcd.poll.interval=1h"],
    );
    for (body, status, reason) in [
        ("{not json", 400, ""),
        (r#"{"type":"zap","path":"/q0000"}"#, 400, "unknown job type"),
        (
            r#"{"type":"load","path":"/q0000","options":{"batchSize":-1}}"#,
            400,
            "batchSize must be between",
        ),
        (r#"{"type":"load","path":""}"#, 400, "path must not be empty"),
        (r#"{"type":"load","path":"/../etc"}"#, 400, ""),
        (
            r#"{"type":"load","path":"/missing"}"#,
            404,
            "no such file or directory in the UFS",
        ),
        (
            r#"{"type":"load","path":"/q0000","options":{"replicas":0}}"#,
            400,
            "replicas must be between",
        ),
    ] {
        let (got, answer) = post_job(&cluster, body);
        assert_eq!(got, status, "{body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|error| error.contains(reason)),
            "{body}: {answer}"
        );
    }
    assert!(list_jobs(&cluster).is_empty(), "bad input stores nothing");

    // The same (type, path) while active is the same job.
    let (status, first) = post_job(&cluster, r#"{"type":"load","path":"/q0000"}"#);
    assert_eq!(status, 201, "{first}");
    let (status, same) = post_job(&cluster, r#"{"type":"load","path":"/q0000"}"#);
    assert_eq!(status, 200);
    assert_eq!(same["job"]["jobId"], first["job"]["jobId"]);
    assert_eq!(same["created"], false);

    for i in 1..2000 {
        let (status, answer) = post_job(&cluster, &format!(r#"{{"type":"load","path":"/q{i:04}"}}"#));
        assert_eq!(status, 201, "job {i}: {answer}");
    }
    let (status, refused) = post_job(&cluster, r#"{"type":"load","path":"/q2000"}"#);
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["code"], "QUEUE_FULL");
    assert_eq!(list_jobs(&cluster).len(), 2000, "the refused job is not stored");

    // A coordinator that polls: the 2000 waiting jobs all run.
    let coordinator = cluster.process_named("coordinator");
    kill9(coordinator.pid);
    let site = coordinator.conf_dir.join("hoard-site.properties");
    let text = std::fs::read_to_string(&site)
        .expect("site")
        .replace("poll.interval=1h", "poll.interval=100ms");
    std::fs::write(&site, text).expect("rewrite site");
    wait_until("old coordinator gone", Duration::from_secs(10), || {
        http_get(&coordinator.address, "/health").is_err()
    });
    let _restarted = restart_worker(&coordinator);
    wait_until("2000 jobs SUCCEEDED", Duration::from_secs(300), || {
        let jobs = list_jobs(&cluster);
        jobs.len() == 2000 && jobs.iter().all(|job| job["state"] == "SUCCEEDED")
    });
    let jobs = list_jobs(&cluster);
    assert!(
        jobs.iter().all(|job| job["runs"] == 1 && job["filesProcessed"] == 1),
        "each ran once"
    );
}

#[test]
fn embedded_bad_input_and_a_full_queue() {
    bad_input_and_a_full_queue(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_bad_input_and_a_full_queue() {
    let etcd = Etcd::start().await;
    tokio::task::block_in_place(|| bad_input_and_a_full_queue(Some(&etcd)));
}

/// Enough small files, in small batches, one task per worker at a time, that a test can act
/// while the job runs.
const SLOW_JOB: [&str; 1] = ["hoard.coordinator.scheduler.max.tasks.per.worker=1"];
const FILES: usize = 3000;
const FILE_SIZE: usize = 16 * KIB;

fn coordinator_killed_mid_job_resumes(etcd: Option<&Etcd>) {
    let ufs = tempfile::tempdir().expect("ufs");
    let total = many_files(ufs.path(), "m", FILES, FILE_SIZE);
    let cluster = start_cluster(3, ufs.path(), etcd, &SLOW_JOB);
    let job_id = submit(&cluster, &["load", "--path", "/m", "--batch-size", "2"]);
    let before = wait_processed(&cluster, &job_id, 300, JOB_LIMIT);
    assert_eq!(
        before["state"], "RUNNING",
        "the job must still run when the coordinator dies: {before}"
    );
    let coordinator = cluster.process_named("coordinator");
    kill9(coordinator.pid);
    wait_until("coordinator gone", Duration::from_secs(10), || {
        http_get(&coordinator.address, "/health").is_err()
    });
    let _restarted = restart_worker(&coordinator);
    let done = wait_job(&cluster, &job_id, JOB_LIMIT);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["runs"], 2, "resumed by a second run: {done}");
    assert_eq!(done["filesProcessed"].as_u64(), Some(FILES as u64), "{done}");
    assert_eq!(done["filesFailed"], 0);
    assert_eq!(done["bytesProcessed"].as_u64(), Some(total));
    assert_ne!(done["owner"], before["owner"], "a new coordinator finished it");
    // Every file cached once: a re-sent batch reads nothing the first run cached.
    assert_eq!(worker_sum(&cluster, "hoard_worker_ufs_bytes_read_total"), total as f64);
    assert_eq!(worker_sum(&cluster, "hoard_worker_page_store_used_bytes"), total as f64);
}

#[test]
fn embedded_coordinator_killed_mid_job_resumes() {
    coordinator_killed_mid_job_resumes(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_coordinator_killed_mid_job_resumes() {
    let etcd = Etcd::start().await;
    tokio::task::block_in_place(|| coordinator_killed_mid_job_resumes(Some(&etcd)));
}

fn worker_killed_mid_job(etcd: Option<&Etcd>) {
    let ufs = tempfile::tempdir().expect("ufs");
    many_files(ufs.path(), "w", FILES, FILE_SIZE);
    let cluster = start_cluster(3, ufs.path(), etcd, &SLOW_JOB);
    let job_id = submit(&cluster, &["load", "--path", "/w", "--batch-size", "2"]);
    let before = wait_processed(&cluster, &job_id, 300, JOB_LIMIT);
    assert_eq!(
        before["state"], "RUNNING",
        "the job must still run when the worker dies: {before}"
    );
    let victim = cluster.processes().remove(1);
    kill9(victim.pid);
    let done = wait_job(&cluster, &job_id, JOB_LIMIT);
    let processed = done["filesProcessed"].as_u64().unwrap_or(0);
    let failed = done["filesFailed"].as_u64().unwrap_or(0);
    assert_eq!(processed + failed, FILES as u64, "the counts add up: {done}");
    if failed > 0 {
        assert_eq!(done["state"], "FAILED");
        assert!(done["failedFiles"][0]["reason"].as_str().is_some_and(|r| !r.is_empty()));
    } else {
        assert_eq!(done["state"], "SUCCEEDED", "{done}");
    }
    assert!(
        done["retried"].as_u64().unwrap_or(0) > 0 || failed > 0,
        "the dead worker's files were retried: {done}"
    );
    // The survivors serve every file right.
    for i in [0usize, 777, 1500, 2999] {
        let path = format!("/w/{:03}/f{i:05}.bin", i / 100);
        assert!(
            cluster.hoard(&["fs", "cat", &path]).stdout == content(i as u64, FILE_SIZE),
            "{path}"
        );
    }
}

#[test]
fn embedded_worker_killed_mid_job() {
    worker_killed_mid_job(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_worker_killed_mid_job() {
    let etcd = Etcd::start().await;
    tokio::task::block_in_place(|| worker_killed_mid_job(Some(&etcd)));
}

fn ufs_removed_stop_and_rerun(etcd: Option<&Etcd>) {
    let ufs = tempfile::tempdir().expect("ufs");
    many_files(ufs.path(), "gone", FILES, FILE_SIZE);
    let total = many_files(ufs.path(), "kept", FILES, FILE_SIZE);
    std::fs::write(ufs.path().join("other.bin"), content(5, 1234)).expect("other");
    let cluster = start_cluster(3, ufs.path(), etcd, &SLOW_JOB);

    // The path removed during a load: the job fails with that reason; nothing else breaks.
    let doomed = submit(&cluster, &["load", "--path", "/gone", "--batch-size", "2"]);
    let before = wait_processed(&cluster, &doomed, 100, JOB_LIMIT);
    assert_eq!(before["state"], "RUNNING", "{before}");
    std::fs::remove_dir_all(ufs.path().join("gone")).expect("remove the UFS dir");
    let failed = wait_job(&cluster, &doomed, JOB_LIMIT);
    assert_eq!(failed["state"], "FAILED", "{failed}");
    let reason = format!("{} {}", failed["error"], failed["failedFiles"]);
    assert!(
        reason.contains("no such file") || reason.contains("not found") || reason.contains("NotFound"),
        "{failed}"
    );
    assert!(cluster.hoard(&["fs", "cat", "/other.bin"]).stdout == content(5, 1234));

    // Stop, then rerun: it resumes from its checkpoint and the counts stay right.
    let job_id = submit(&cluster, &["load", "--path", "/kept", "--batch-size", "2"]);
    wait_processed(&cluster, &job_id, 100, JOB_LIMIT);
    let output = cluster.hoard(&["job", "load", "--path", "/kept", "--stop"]);
    assert!(output.status.success(), "{}", describe(&output));
    let stopped = wait_job(&cluster, &job_id, JOB_LIMIT);
    assert_eq!(stopped["state"], "STOPPED", "{stopped}");
    assert!(stopped["filesProcessed"].as_u64().unwrap_or(0) < FILES as u64);
    let output = cluster.hoard(&["job", "rerun", &job_id]);
    assert!(output.status.success(), "{}", describe(&output));
    let done = wait_job(&cluster, &job_id, JOB_LIMIT);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["filesProcessed"].as_u64(), Some(FILES as u64));
    assert_eq!(done["bytesProcessed"].as_u64(), Some(total));
    // A finished job cannot be rerun.
    let again = cluster.hoard(&["job", "rerun", &job_id]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("SUCCEEDED"),
        "{}",
        describe(&again)
    );
}

#[test]
fn embedded_ufs_removed_stop_and_rerun() {
    ufs_removed_stop_and_rerun(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_ufs_removed_stop_and_rerun() {
    let etcd = Etcd::start().await;
    tokio::task::block_in_place(|| ufs_removed_stop_and_rerun(Some(&etcd)));
}

#[test]
fn rerun_edits_the_store_when_the_coordinator_is_down() {
    let ufs = tempfile::tempdir().expect("ufs");
    many_files(ufs.path(), "r", 300, KIB);
    let cluster = start_cluster(2, ufs.path(), None, &SLOW_JOB);
    let job_id = submit(&cluster, &["load", "--path", "/r", "--batch-size", "1"]);
    let output = cluster.hoard(&["job", "load", "--path", "/r", "--stop"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(wait_job(&cluster, &job_id, JOB_LIMIT)["state"], "STOPPED");
    let coordinator = cluster.process_named("coordinator");
    kill9(coordinator.pid);
    wait_until("coordinator gone", Duration::from_secs(10), || {
        http_get(&coordinator.address, "/health").is_err()
    });
    // The CLI reads the coordinator's conf for the store's location.
    let output = hoard_with_conf(&coordinator.conf_dir, &["job", "rerun", &job_id]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("editing the job store directly"));
    let _restarted = restart_worker(&coordinator);
    let done = wait_job(&cluster, &job_id, JOB_LIMIT);
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["filesProcessed"], 300);
}

#[test]
fn metrics_parse_with_a_real_prometheus_parser() {
    let ufs = tempfile::tempdir().expect("ufs");
    many_files(ufs.path(), "p", 20, KIB);
    let cluster = start_cluster(2, ufs.path(), None, &[]);
    let output = cluster.hoard(&["job", "load", "--path", "/p", "--submit", "--wait"]);
    assert!(output.status.success(), "{}", describe(&output));
    let (_, _, body) = http_get(&coordinator_address(&cluster), "/metrics").expect("metrics");
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
names = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        names.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
def one(name, **labels):
    for got, value in names.get(name, []):
        if all(got.get(k) == v for k, v in labels.items()):
            return value
    sys.exit(f"missing {name} {labels}; have {sorted(names)}")
assert one("hoard_scheduler_etcd_poll_total") >= 1
assert one("hoard_scheduler_etcd_claim_total") == 1
one("hoard_scheduler_etcd_reclaim_total")
assert one("hoard_scheduler_etcd_latency_ms_count") > 0
assert one("hoard_scheduler_job_access_etcd_total", kind="txn", store="EMBEDDED") > 0
assert one("hoard_scheduler_job_access_etcd_total", kind="list", store="EMBEDDED") > 0
assert one("hoard_scheduler_job_access_etcd_total", kind="get", store="EMBEDDED") > 0
assert one("hoard_coordinator_jobs", state="SUCCEEDED") == 1
assert one("hoard_coordinator_job_files_loaded_total") == 20
assert one("hoard_coordinator_job_bytes_loaded_total") == 20 * 1024
assert sum(v for _, v in names.get("hoard_coordinator_worker_tasks_in_flight", [])) == 0
print("ok")
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python from the test venv (scripts/setup-test-deps.sh)");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&body)
            .expect("write metrics");
    }
    let output = child.wait_with_output().expect("python");
    assert!(
        output.status.success(),
        "{}\n{}",
        describe(&output),
        String::from_utf8_lossy(&body)
    );
    let started = Instant::now();
    assert!(started.elapsed() < JOB_LIMIT);
}
