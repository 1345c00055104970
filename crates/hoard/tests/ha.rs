//! Several coordinators on one etcd: every job runs exactly once, a dead or paused
//! coordinator's job is taken over, and one coordinator holds the singleton duties.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use hoard_testkit::Etcd;

const KIB: usize = 1 << 10;

fn start(etcd: &Etcd, coordinators: usize, workers: usize, ufs: &Path, properties: &[&str]) -> Cluster {
    start_logging(etcd, coordinators, workers, ufs, properties, "info")
}

/// [`start`] with `RUST_LOG` set for every process.
fn start_logging(
    etcd: &Etcd,
    coordinators: usize,
    workers: usize,
    ufs: &Path,
    properties: &[&str],
    rust_log: &str,
) -> Cluster {
    let mut props = vec![
        "hoard.worker.failure.detection.timeout=3s",
        "hoard.coordinator.scheduler.job.etcd.poll.interval=100ms",
        "hoard.coordinator.scheduler.interval.time=200ms",
    ];
    props.extend_from_slice(properties);
    let endpoint = etcd.endpoint();
    let count = coordinators.to_string();
    Cluster::start_with_env(
        workers,
        &ufs.display().to_string(),
        &props,
        &["--etcd", &endpoint, "--coordinators", &count],
        &[("RUST_LOG", rust_log)],
    )
}

fn unix_millis() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since_epoch.as_millis()).expect("millis fit u64")
}

/// The `confirmed_ms=` field of a "task sent" log line.
fn confirmed_ms(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("confirmed_ms="))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no confirmed_ms in {line}"))
}

fn coordinators(cluster: &Cluster) -> Vec<Process> {
    cluster
        .all_processes()
        .into_iter()
        .filter(|process| process.role == "coordinator")
        .collect()
}

fn get_json(address: &str, target: &str) -> serde_json::Value {
    let (status, _, body) = http_get(address, target).expect("get");
    assert_eq!(status, 200, "{target}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("json")
}

fn post_job(address: &str, path: &str) -> String {
    let body = format!(r#"{{"type":"load","path":"{path}","options":{{"batchSize":2}}}}"#);
    let request = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, answer) = http_request(address, &request).expect("post");
    assert!(status == 201 || status == 200, "{}", String::from_utf8_lossy(&answer));
    let json: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    json["job"]["jobId"].as_str().expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_coordinators_run_300_jobs_exactly_once() {
    let etcd = Etcd::start().await;
    let ufs = tempfile::tempdir().expect("ufs");
    for i in 0..300 {
        std::fs::write(ufs.path().join(format!("j{i:03}")), content(i, 100)).expect("file");
    }
    tokio::task::block_in_place(|| {
        let cluster = start(&etcd, 3, 2, ufs.path(), &[]);
        let all = coordinators(&cluster);
        assert_eq!(all.len(), 3);
        let nodes = cluster.nodes();
        assert_eq!(nodes["coordinators"].as_array().map(Vec::len), Some(3), "{nodes}");
        let ids: Vec<String> = (0..300)
            .map(|i| post_job(&all[i % 3].address, &format!("/j{i:03}")))
            .collect();
        let mut jobs = Vec::new();
        wait_until("300 jobs SUCCEEDED", Duration::from_secs(180), || {
            let listed = get_json(&all[0].address, "/api/v1/jobs");
            jobs = listed["jobs"].as_array().cloned().unwrap_or_default();
            jobs.len() == 300 && jobs.iter().all(|job| job["state"] == "SUCCEEDED")
        });
        for job in &jobs {
            assert_eq!(job["runs"], 1, "claimed exactly once: {job}");
            assert_eq!(job["filesProcessed"], 1);
            assert!(ids.contains(&job["jobId"].as_str().unwrap_or_default().to_string()));
        }
        let owners: std::collections::BTreeSet<String> = jobs
            .iter()
            .filter_map(|job| job["owner"].as_str().map(String::from))
            .collect();
        assert!(owners.len() >= 2, "jobs spread over the coordinators: {owners:?}");
        // Each file was read from the UFS once, across both workers.
        let read: f64 = cluster
            .processes()
            .iter()
            .map(|worker| metric(&worker.address, "hoard_worker_ufs_bytes_read_total"))
            .sum();
        assert_eq!(read, 300.0 * 100.0);
    });
}

const FILES: usize = 3000;
const FILE_SIZE: usize = 16 * KIB;

fn owner_process(cluster: &Cluster, owner: &str) -> Process {
    coordinators(cluster)
        .into_iter()
        .find(|process| process.id == owner)
        .expect("owner is one of the coordinators")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_coordinators_job_is_taken_over_within_10s() {
    let etcd = Etcd::start().await;
    let ufs = tempfile::tempdir().expect("ufs");
    let total = many_files(ufs.path(), "k", FILES, FILE_SIZE);
    tokio::task::block_in_place(|| {
        let cluster = start(
            &etcd,
            2,
            3,
            ufs.path(),
            &["hoard.coordinator.scheduler.max.tasks.per.worker=1"],
        );
        let all = coordinators(&cluster);
        let job_id = post_job(&all[0].address, "/k");
        let mut job = serde_json::Value::Null;
        wait_until("job running with progress", Duration::from_secs(60), || {
            job = get_json(&all[0].address, &format!("/api/v1/jobs/{job_id}"));
            job["state"] == "RUNNING" && job["filesProcessed"].as_u64().unwrap_or(0) >= 200
        });
        let owner = job["owner"].as_str().expect("owner").to_string();
        let victim = owner_process(&cluster, &owner);
        let survivor = all
            .iter()
            .find(|process| process.id != owner)
            .expect("survivor")
            .clone();
        kill9(victim.pid);
        let killed = Instant::now();
        wait_until("taken over", Duration::from_secs(30), || {
            job = get_json(&survivor.address, &format!("/api/v1/jobs/{job_id}"));
            job["state"] == "RUNNING" && job["owner"] == survivor.id.as_str()
        });
        let failover = killed.elapsed();
        eprintln!("failover in {failover:?}");
        assert!(failover < Duration::from_secs(10), "failover took {failover:?}");
        wait_until("job ends", Duration::from_secs(120), || {
            job = get_json(&survivor.address, &format!("/api/v1/jobs/{job_id}"));
            job["state"] != "RUNNING" && job["state"] != "WAITING"
        });
        assert_eq!(job["state"], "SUCCEEDED", "{job}");
        assert_eq!(job["runs"], 2);
        assert_eq!(job["filesProcessed"].as_u64(), Some(FILES as u64));
        assert_eq!(job["bytesProcessed"].as_u64(), Some(total));
        let read: f64 = cluster
            .processes()
            .iter()
            .map(|worker| metric(&worker.address, "hoard_worker_ufs_bytes_read_total"))
            .sum();
        assert_eq!(read, total as f64, "every file cached once");
        let reclaimed = metric(&survivor.address, "hoard_scheduler_etcd_reclaim_total");
        assert_eq!(reclaimed, 1.0);
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_coordinator_stops_working_on_the_job_it_lost() {
    let etcd = Etcd::start().await;
    let ufs = tempfile::tempdir().expect("ufs");
    let total = many_files(ufs.path(), "p", FILES, FILE_SIZE);
    tokio::task::block_in_place(|| {
        // Every task a coordinator creates is logged ("task sent"), so the paused one's log
        // tells what it sent after it ran again.
        let cluster = start_logging(
            &etcd,
            2,
            3,
            ufs.path(),
            &[
                "hoard.coordinator.scheduler.max.tasks.per.worker=1",
                "hoard.coordinator.lease.ttl=2s",
            ],
            "info,hoard_coordinator::jobs::runner=debug",
        );
        let all = coordinators(&cluster);
        let job_id = post_job(&all[0].address, "/p");
        let mut job = serde_json::Value::Null;
        wait_until("job running with progress", Duration::from_secs(60), || {
            job = get_json(&all[0].address, &format!("/api/v1/jobs/{job_id}"));
            job["state"] == "RUNNING" && job["filesProcessed"].as_u64().unwrap_or(0) >= 200
        });
        let owner = job["owner"].as_str().expect("owner").to_string();
        let paused = owner_process(&cluster, &owner);
        let survivor = all
            .iter()
            .find(|process| process.id != owner)
            .expect("survivor")
            .clone();
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &paused.pid.to_string()])
            .status();
        wait_until("taken over while paused", Duration::from_secs(30), || {
            job = get_json(&survivor.address, &format!("/api/v1/jobs/{job_id}"));
            job["owner"] == survivor.id.as_str() && job["state"] == "RUNNING"
        });
        // A stopped process writes nothing: everything after this offset is from after SIGCONT.
        let log_before = std::fs::read_to_string(&paused.log_file).expect("paused coordinator's log");
        let sent_line = format!("job_id={job_id}");
        let sent_before = log_before
            .lines()
            .filter(|line| line.contains("task sent") && line.contains(&sent_line))
            .count();
        assert!(
            sent_before > 0,
            "the paused coordinator logged no task before the pause"
        );
        let resumed_ms = unix_millis();
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &paused.pid.to_string()])
            .status();
        // Once it runs again it must notice and send nothing more for the job.
        wait_until("the paused coordinator drops the job", Duration::from_secs(10), || {
            metric(&paused.address, "hoard_coordinator_worker_tasks_in_flight") == 0.0
        });
        let loaded_then = metric(&paused.address, "hoard_coordinator_job_files_loaded_total");
        let mut still_running = false;
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(
                metric(&paused.address, "hoard_coordinator_worker_tasks_in_flight"),
                0.0,
                "two coordinators dispatching for one job"
            );
            job = get_json(&survivor.address, &format!("/api/v1/jobs/{job_id}"));
            still_running |= job["state"] == "RUNNING";
        }
        assert_eq!(
            metric(&paused.address, "hoard_coordinator_job_files_loaded_total"),
            loaded_then,
            "the paused coordinator loaded nothing more"
        );
        let _ = still_running;
        let log_after = std::fs::read(&paused.log_file).expect("paused coordinator's log");
        let after_pause = String::from_utf8_lossy(&log_after[log_before.len()..]).to_string();
        // A send confirmed before the pause may be logged after it (the process stopped between
        // the two): that one was in flight. None may have been confirmed after SIGCONT.
        let sent_after: Vec<&str> = after_pause
            .lines()
            .filter(|line| line.contains("task sent") && line.contains(&sent_line))
            .filter(|line| confirmed_ms(line) >= resumed_ms)
            .collect();
        assert!(
            sent_after.is_empty(),
            "the paused coordinator sent tasks for the job it lost after it ran again: {sent_after:?}"
        );
        wait_until("job ends", Duration::from_secs(120), || {
            job = get_json(&survivor.address, &format!("/api/v1/jobs/{job_id}"));
            job["state"] != "RUNNING" && job["state"] != "WAITING"
        });
        assert_eq!(job["state"], "SUCCEEDED", "{job}");
        assert_eq!(job["owner"], survivor.id.as_str());
        assert_eq!(job["filesProcessed"].as_u64(), Some(FILES as u64));
        assert_eq!(job["bytesProcessed"].as_u64(), Some(total));
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn one_coordinator_holds_the_singleton_duties() {
    let etcd = Etcd::start().await;
    let ufs = tempfile::tempdir().expect("ufs");
    std::fs::write(ufs.path().join("x"), b"x").expect("file");
    tokio::task::block_in_place(|| {
        let cluster = start(&etcd, 2, 1, ufs.path(), &[]);
        let leader = cluster.hoard(&["coordinator", "leader", "--format", "json"]);
        assert!(leader.status.success(), "{}", describe(&leader));
        let leader: serde_json::Value = serde_json::from_slice(&leader.stdout).expect("json");
        let nodes = cluster.nodes();
        assert_eq!(nodes["singleton"], leader["coordinatorId"], "{nodes}");
        assert_eq!(nodes["coordinators"].as_array().map(Vec::len), Some(2));
        // Every coordinator names the same one.
        for coordinator in coordinators(&cluster) {
            assert_eq!(
                get_json(&coordinator.address, "/api/v1/leader")["coordinatorId"],
                leader["coordinatorId"]
            );
        }
        // It dies: the other takes the duties over once its lease expires.
        let holder = owner_process(&cluster, leader["coordinatorId"].as_str().expect("id"));
        let other = coordinators(&cluster)
            .into_iter()
            .find(|p| p.id != holder.id)
            .expect("other");
        kill9(holder.pid);
        wait_until(
            "the other coordinator holds the duties",
            Duration::from_secs(20),
            || get_json(&other.address, "/api/v1/leader")["coordinatorId"] == other.id.as_str(),
        );
        // The CLI finds the live coordinator through hoard.coordinator.addresses.
        let leader = cluster.hoard(&["coordinator", "leader"]);
        assert!(leader.status.success(), "{}", describe(&leader));
        assert!(String::from_utf8_lossy(&leader.stdout).contains(&other.id));
    });
}

fn wait_state(
    address: &str,
    job_id: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut job = serde_json::Value::Null;
    wait_until(&format!("job {job_id}"), limit, || {
        job = get_json(address, &format!("/api/v1/jobs/{job_id}"));
        done(&job)
    });
    job
}

fn ended(job: &serde_json::Value) -> bool {
    matches!(job["state"].as_str(), Some("SUCCEEDED" | "FAILED" | "STOPPED"))
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_restarted_mid_job_the_job_still_succeeds() {
    let mut etcd = Etcd::start().await;
    let ufs = tempfile::tempdir().expect("ufs");
    let total = many_files(ufs.path(), "e", FILES, FILE_SIZE);
    let cluster = tokio::task::block_in_place(|| {
        start(
            &etcd,
            2,
            3,
            ufs.path(),
            &["hoard.coordinator.scheduler.max.tasks.per.worker=1"],
        )
    });
    let all = coordinators(&cluster);
    let job_id = post_job(&all[0].address, "/e");
    let before = tokio::task::block_in_place(|| {
        wait_state(&all[0].address, &job_id, Duration::from_secs(60), |job| {
            job["filesProcessed"].as_u64().unwrap_or(0) >= 200 || ended(job)
        })
    });
    assert_eq!(before["state"], "RUNNING", "{before}");
    etcd.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    etcd.start_again().await;
    let job = tokio::task::block_in_place(|| wait_state(&all[0].address, &job_id, Duration::from_secs(120), ended));
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    assert_eq!(job["filesProcessed"].as_u64(), Some(FILES as u64));
    assert_eq!(job["bytesProcessed"].as_u64(), Some(total));
}

#[tokio::test(flavor = "multi_thread")]
async fn all_coordinators_killed_then_one_started_every_job_finishes() {
    let etcd = Etcd::start().await;
    let ufs = tempfile::tempdir().expect("ufs");
    for dir in ["a", "b", "c"] {
        many_files(ufs.path(), dir, 1000, FILE_SIZE);
    }
    tokio::task::block_in_place(|| {
        let cluster = start(
            &etcd,
            2,
            2,
            ufs.path(),
            &[
                "hoard.coordinator.scheduler.max.tasks.per.worker=1",
                "hoard.coordinator.lease.ttl=2s",
            ],
        );
        let all = coordinators(&cluster);
        let ids: Vec<String> = ["/a", "/b", "/c"]
            .iter()
            .map(|path| post_job(&all[0].address, path))
            .collect();
        for id in &ids {
            let job = wait_state(&all[0].address, id, Duration::from_secs(60), |job| {
                job["state"] != "WAITING"
            });
            assert_eq!(job["state"], "RUNNING", "{job}");
        }
        for coordinator in &all {
            kill9(coordinator.pid);
        }
        let _restarted = restart_worker(&all[1]);
        for id in &ids {
            let job = wait_state(&all[1].address, id, Duration::from_secs(120), ended);
            assert_eq!(job["state"], "SUCCEEDED", "{job}");
            assert_eq!(job["filesProcessed"], 1000);
            assert!(job["runs"].as_u64().unwrap_or(0) >= 2, "reclaimed and run again: {job}");
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn rerun_of_a_job_stuck_running_with_a_dead_owner() {
    let etcd = Etcd::start().await;
    let ufs = tempfile::tempdir().expect("ufs");
    many_files(ufs.path(), "s", 1000, FILE_SIZE);
    tokio::task::block_in_place(|| {
        let cluster = start(
            &etcd,
            1,
            2,
            ufs.path(),
            &[
                "hoard.coordinator.scheduler.max.tasks.per.worker=1",
                "hoard.coordinator.job.meta.store.type=ETCD",
            ],
        );
        let coordinator = coordinators(&cluster).remove(0);
        let job_id = post_job(&coordinator.address, "/s");
        let job = wait_state(&coordinator.address, &job_id, Duration::from_secs(60), |job| {
            job["filesProcessed"].as_u64().unwrap_or(0) >= 100 || ended(job)
        });
        assert_eq!(job["state"], "RUNNING", "{job}");
        kill9(coordinator.pid);
        // No coordinator: the CLI edits the job store in etcd itself.
        let output = hoard_with_conf(&coordinator.conf_dir, &["job", "rerun", &job_id]);
        assert!(output.status.success(), "{}", describe(&output));
        assert!(String::from_utf8_lossy(&output.stderr).contains("editing the job store directly"));
        let _restarted = restart_worker(&coordinator);
        let job = wait_state(&coordinator.address, &job_id, Duration::from_secs(120), ended);
        assert_eq!(job["state"], "SUCCEEDED", "{job}");
        assert_eq!(job["filesProcessed"], 1000);
    });
}
