//! High availability on a real etcd: failover time (SIGKILL of the coordinator running a job
//! until the job is RUNNING on another) and claim throughput with 1, 2 and 3 coordinators.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hoard_meta::jobs::{JobOptions, JobStore, JobType};
use hoard_testkit::Etcd;

use crate::cluster::LocalCluster;

#[derive(Debug, Clone, clap::Args)]
pub struct HaArgs {
    /// Failovers measured per lease TTL.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Empty jobs per claim-throughput measurement.
    #[arg(long, default_value_t = 600)]
    jobs: usize,
    /// Parts to run: failover, claims, idle.
    #[arg(long, value_delimiter = ',', default_value = "failover,claims,idle")]
    only: Vec<String>,
    /// Seconds over which etcd requests of idle coordinators are counted.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()?)
}

async fn get(http: &reqwest::Client, address: &str, route: &str) -> anyhow::Result<serde_json::Value> {
    Ok(http
        .get(format!("http://{address}{route}"))
        .send()
        .await?
        .json()
        .await?)
}

async fn post(
    http: &reqwest::Client,
    address: &str,
    route: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    Ok(http
        .post(format!("http://{address}{route}"))
        .json(&body)
        .send()
        .await?
        .json()
        .await?)
}

fn kill9(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) on a pid this benchmark started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

async fn failovers(hoard: &Path, ufs: &Path, lease: &str, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let etcd = Etcd::start().await;
    let mut cluster = LocalCluster::start(
        hoard,
        &[
            "--ufs",
            &ufs.display().to_string(),
            "--etcd",
            &etcd.endpoint(),
            "--coordinators",
            "2",
        ],
        &[
            format!("hoard.coordinator.lease.ttl={lease}"),
            "hoard.coordinator.scheduler.max.tasks.per.worker=1".to_string(),
            "hoard.job.batch.size=1".to_string(),
        ],
    )?;
    let http = http()?;
    let mut coordinators = cluster.coordinators()?;
    let mut times = Vec::new();
    for run in 0..runs {
        let address = coordinators[0].address.clone();
        let submitted = post(
            &http,
            &address,
            "/api/v1/jobs",
            serde_json::json!({"type": "load", "path": "/"}),
        )
        .await?;
        let job_id = submitted["job"]["jobId"].as_str().context("job id")?.to_string();
        let route = format!("/api/v1/jobs/{job_id}");
        let owner = loop {
            let job = get(&http, &address, &route).await?;
            if job["state"] == "RUNNING" {
                break job["owner"].as_str().context("owner")?.to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let victim_index = coordinators
            .iter()
            .position(|c| c.id == owner)
            .context("owner process")?;
        let survivor = coordinators[1 - victim_index].clone();
        kill9(coordinators[victim_index].pid);
        let killed = Instant::now();
        loop {
            let job = get(&http, &survivor.address, &route).await?;
            if job["state"] == "RUNNING" && job["owner"] == survivor.id.as_str() {
                break;
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("no failover within 60s: {job}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = killed.elapsed();
        eprintln!("lease {lease} run {run}: failover {:.2}s", took.as_secs_f64());
        times.push(took);
        // Stop the job, bring the dead coordinator back, go again.
        post(
            &http,
            &survivor.address,
            &format!("{route}/stop"),
            serde_json::json!({}),
        )
        .await?;
        loop {
            let job = get(&http, &survivor.address, &route).await?;
            if job["state"] == "STOPPED" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let restarted = cluster.restart_process(&coordinators[victim_index], "coordinator")?;
        coordinators[victim_index].pid = restarted;
        let health = format!("http://{}/health", coordinators[victim_index].address);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(answer) = http.get(&health).send().await {
                if let Ok(body) = answer.json::<serde_json::Value>().await {
                    coordinators[victim_index].id = body["coordinatorId"].as_str().unwrap_or_default().to_string();
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("restarted coordinator did not answer");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(times)
}

/// What one claim-throughput run measured.
struct ClaimRun {
    jobs_per_second: f64,
    /// Jobs each coordinator ran, most first.
    per_coordinator: Vec<usize>,
}

/// Empty jobs put in the etcd job store first, then K coordinators started: jobs finished per
/// second between the first start and the last end, from the jobs' own times.
async fn claim_throughput(hoard: &Path, ufs: &Path, coordinators: usize, jobs: usize) -> anyhow::Result<ClaimRun> {
    let etcd = Etcd::start().await;
    let config = hoard_config::EtcdConfig {
        endpoints: vec![etcd.endpoint()],
        root: "/hoard/default/jobs/".to_string(),
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        max_retries: 3,
    };
    let store = JobStore::new(
        Arc::new(hoard_meta::etcd::EtcdStore::connect(&config).await?),
        "",
        u32::MAX,
    );
    for i in 0..jobs {
        store
            .submit(
                JobType::Load,
                &format!("/e{i:05}"),
                JobOptions::default(),
                hoard_meta::now_millis(),
            )
            .await?;
    }
    let count = coordinators.to_string();
    let _cluster = LocalCluster::start(
        hoard,
        &[
            "--ufs",
            &ufs.display().to_string(),
            "--etcd",
            &etcd.endpoint(),
            "--coordinators",
            &count,
        ],
        &[
            "hoard.coordinator.job.meta.store.type=ETCD".to_string(),
            "hoard.coordinator.scheduler.job.etcd.poll.interval=100ms".to_string(),
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let all = store.list().await?;
        if all.iter().all(|job| job.state.is_finished()) {
            let first = all.iter().filter_map(|job| job.started_ms).min().unwrap_or(0);
            let last = all.iter().filter_map(|job| job.ended_ms).max().unwrap_or(0);
            if all.iter().any(|job| job.runs != 1) {
                bail!("a job ran more than once");
            }
            let mut by_owner = std::collections::HashMap::<String, usize>::new();
            for job in &all {
                *by_owner.entry(job.owner.clone().unwrap_or_default()).or_default() += 1;
            }
            let mut per_coordinator: Vec<usize> = by_owner.into_values().collect();
            per_coordinator.sort_unstable_by(|a, b| b.cmp(a));
            return Ok(ClaimRun {
                jobs_per_second: jobs as f64 / ((last.saturating_sub(first)).max(1) as f64 / 1000.0),
                per_coordinator,
            });
        }
        if Instant::now() > deadline {
            bail!("jobs did not finish in 300s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// etcd requests per second (every gRPC message etcd received, lease keep-alives included)
/// with 3 workers and `coordinators` idle coordinators on the etcd job store, defaults
/// otherwise, over `idle`.
async fn idle_rate(hoard: &Path, coordinators: usize, idle: Duration) -> anyhow::Result<f64> {
    let etcd = Etcd::start().await;
    let count = coordinators.to_string();
    let _cluster = LocalCluster::start(
        hoard,
        &["--etcd", &etcd.endpoint(), "--coordinators", &count],
        &["hoard.coordinator.job.meta.store.type=ETCD".to_string()],
    )?;
    let http = http()?;
    // Start-up (registrations, first full reclaim checks) is not idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = crate::membership_bench::etcd_messages(&http, &etcd).await?;
    tokio::time::sleep(idle).await;
    let after = crate::membership_bench::etcd_messages(&http, &etcd).await?;
    Ok((after - before) / idle.as_secs_f64())
}

pub async fn run(args: HaArgs) -> anyhow::Result<()> {
    let hoard = crate::peers::hoard_binary()?;
    let temp = tempfile::Builder::new().prefix("hoard-bench-ha").tempdir()?;
    let wants = |name: &str| args.only.iter().any(|only| only == name);
    if wants("failover") {
        // A long job for the failovers: many small files, one per task, one task per worker.
        let files = temp.path().join("files");
        for i in 0..20_000 {
            let dir = files.join(format!("{:03}", i / 1000));
            if i % 1000 == 0 {
                std::fs::create_dir_all(&dir)?;
            }
            std::fs::write(dir.join(format!("f{i:05}")), [i as u8; 64])?;
        }
        println!("| lease TTL | failover median | max | goal |\n| --- | --- | --- | --- |");
        for (lease, goal) in [("2s", "< 3s"), ("5s", "< 10s (default)")] {
            let mut times: Vec<f64> = failovers(&hoard, &files, lease, args.runs)
                .await?
                .iter()
                .map(Duration::as_secs_f64)
                .collect();
            let max = times.iter().copied().fold(0.0, f64::max);
            println!("| {lease} | {:.2}s | {max:.2}s | {goal} |", crate::median(&mut times));
        }
    }
    if wants("claims") {
        let empty = temp.path().join("empty");
        for i in 0..args.jobs {
            std::fs::create_dir_all(empty.join(format!("e{i:05}")))?;
        }
        println!("\n| coordinators | empty jobs claimed and finished per second | jobs per coordinator |\n| --- | --- | --- |");
        for coordinators in 1..=3 {
            let run = claim_throughput(&hoard, &empty, coordinators, args.jobs).await?;
            eprintln!(
                "{coordinators} coordinator(s): {:.0} jobs/s, per coordinator {:?}",
                run.jobs_per_second, run.per_coordinator
            );
            println!(
                "| {coordinators} | {:.0} | {:?} |",
                run.jobs_per_second, run.per_coordinator
            );
        }
    }
    if wants("idle") {
        let idle = Duration::from_secs(args.idle_seconds);
        let one = idle_rate(&hoard, 1, idle).await?;
        let three = idle_rate(&hoard, 3, idle).await?;
        println!(
            "\netcd requests/s at rest, 3 workers, defaults, {}s window:\n\n| coordinators | etcd requests/s, total | per idle coordinator (the 2nd and 3rd's cost) |\n| --- | --- | --- |",
            args.idle_seconds
        );
        println!("| 1 | {one:.2} | |");
        println!("| 3 | {three:.2} | {:.2} |", (three - one) / 2.0);
    }
    Ok(())
}
