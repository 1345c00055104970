//! Replicas: many clients reading one hot file through the client library, with 1 and with 3
//! copies, under each selection policy: aggregate throughput and each worker's share of the
//! bytes (docs/replicas.md#reading-replicas).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hoard_client::HoardClient;
use hoard_common::replica::ReplicaSelectionPolicy;
use hoard_common::HoardPath;

use crate::cluster::LocalCluster;

#[derive(Debug, Clone, clap::Args)]
pub struct ReplicasArgs {
    /// Concurrent clients, each a client of its own (its own CLIENT_FIXED order).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Size of the hot file.
    #[arg(long, default_value = "256MiB")]
    size: String,
    /// Seconds of reading per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Bytes per read (a range of the file, at a random page-aligned offset).
    #[arg(long, default_value = "4MiB")]
    read_size: String,
    /// Files of the repair measurement.
    #[arg(long, default_value_t = 1000)]
    repair_files: usize,
    /// Measurements to run: policies (and the probe's cost), repair.
    #[arg(long, value_delimiter = ',', default_value = "policies,repair")]
    only: Vec<String>,
}

/// The newest job of `job_type` for `path`, as `hoard job list` shows it.
fn newest_job(
    hoard_binary: &Path,
    cluster: &LocalCluster,
    job_type: &str,
    path: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let jobs: serde_json::Value =
        serde_json::from_str(&hoard(hoard_binary, cluster, &["job", "list", "--format", "json"])?)?;
    Ok(jobs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|job| job["type"] == job_type && job["path"] == path)
        .max_by_key(|job| job["createdMs"].as_u64().unwrap_or(0))
        .cloned())
}

/// Time to load `files` files with 2 copies, against the time from a worker's SIGKILL to the
/// end of the repair that restores its copies on the others (rule of 2, maintained).
async fn repair(hoard_binary: &Path, args: &ReplicasArgs) -> anyhow::Result<()> {
    let ufs = tempfile::Builder::new().prefix("hoard-bench-repair").tempdir()?;
    let size = 64 * 1024;
    for index in 0..args.repair_files {
        let dir = ufs.path().join(format!("r/{:03}", index / 100));
        std::fs::create_dir_all(&dir)?;
        let mut bytes = vec![0u8; size];
        for (offset, byte) in bytes.iter_mut().enumerate() {
            *byte = (offset as u64).wrapping_mul(index as u64 + 7).to_le_bytes()[0];
        }
        std::fs::write(dir.join(format!("f{index}")), bytes)?;
    }
    let detection = "3s";
    let cluster = LocalCluster::start(
        hoard_binary,
        &["--ufs", &ufs.path().display().to_string()],
        &[
            "hoard.coordinator.replica.repair.interval=1h".to_string(),
            format!("hoard.worker.failure.detection.timeout={detection}"),
        ],
    )?;
    let started = Instant::now();
    let job = hoard(
        hoard_binary,
        &cluster,
        &[
            "job",
            "load",
            "--path",
            "/r",
            "--replicas",
            "2",
            "--submit",
            "--wait",
            "--format",
            "json",
        ],
    )?;
    let load_seconds = started.elapsed().as_secs_f64();
    let job: serde_json::Value = serde_json::from_str(&job)?;
    if job["state"] != "SUCCEEDED" {
        bail!("the load did not succeed: {job}");
    }
    hoard(
        hoard_binary,
        &cluster,
        &["replica", "set", "--path", "/r", "--replicas", "2", "--maintain"],
    )?;
    // The first repair (at start of the rule: every copy in place) ends before the measurement.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let first = newest_job(hoard_binary, &cluster, "repair", "/r")?;
        if first.as_ref().is_some_and(|job| job["state"] == "SUCCEEDED") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the first repair did not end: {first:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = newest_job(hoard_binary, &cluster, "repair", "/r")?.context("a repair job")?;
    let victim = cluster.workers()?.into_iter().next().context("a worker")?;
    let killed = Instant::now();
    // SAFETY: kill has no memory preconditions; the pid is a worker this cluster started.
    unsafe {
        libc::kill(victim.pid as i32, libc::SIGKILL);
    }
    let repaired = loop {
        let newest = newest_job(hoard_binary, &cluster, "repair", "/r")?;
        if let Some(job) = newest.filter(|job| job["jobId"] != before["jobId"]) {
            if job["state"] == "SUCCEEDED" {
                break job;
            }
            if job["state"] == "FAILED" {
                bail!("the repair failed: {job}");
            }
        }
        if killed.elapsed() > Duration::from_secs(300) {
            bail!("no repair ended within 300s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let restored_seconds = killed.elapsed().as_secs_f64();
    let repair_ms = repaired["elapsedMs"].as_u64().unwrap_or(0) as f64 / 1000.0;
    println!(
        "\n| {} files x 64KiB, 2 copies on 3 workers | seconds |\n| --- | --- |\n| load with --replicas 2 | {load_seconds:.2} |\n| a worker SIGKILLed -> repair ended (failure detection {detection} included) | {restored_seconds:.2} |\n| the repair job itself | {repair_ms:.2} ({} files processed, {} skipped) |\n| restored / load | {:.2} |",
        args.repair_files,
        repaired["filesProcessed"],
        repaired["filesSkipped"],
        restored_seconds / load_seconds
    );
    drop(cluster);
    Ok(())
}

/// A worker's `/metrics` counter.
async fn metric(http: &reqwest::Client, address: &str, name: &str) -> anyhow::Result<f64> {
    crate::peers::metric_sum(http, &format!("http://{address}/metrics"), name).await
}

fn hoard(hoard: &Path, cluster: &LocalCluster, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new(hoard)
        .arg("--conf")
        .arg(cluster.conf())
        .args(args)
        .output()?;
    if !output.status.success() {
        bail!("hoard {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `clients` clients reading ranges of `path` for `seconds`; total bytes read.
async fn read_for(
    conf: &Path,
    policy: ReplicaSelectionPolicy,
    path: &HoardPath,
    args: &ReplicasArgs,
    length: u64,
    read_size: u64,
) -> anyhow::Result<u64> {
    let mut loaded = hoard_config::SiteConfig::load(conf)?;
    loaded.config.user.replica_selection_policy = policy;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for client_index in 0..args.clients {
        let config = loaded.config.clone();
        let path = path.clone();
        tasks.spawn(async move {
            let client = HoardClient::connect(&config).await?;
            let mut sink = tokio::io::sink();
            let pages = (length / read_size).max(1);
            let mut read = 0u64;
            let mut next = client_index as u64;
            while Instant::now() < deadline {
                // Spread the ranges over the file without a shared generator.
                next = next.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let start = (next >> 33) % pages * read_size;
                let end = (start + read_size).min(length);
                read += client.read_to(&path, Some(start..end), &mut sink).await?;
            }
            Ok::<u64, anyhow::Error>(read)
        });
    }
    let mut total = 0;
    while let Some(joined) = tasks.join_next().await {
        total += joined??;
    }
    Ok(total)
}

/// p50 and p99 (ms) of `reads` warm 64KiB reads by one client, prefer-cached on or off.
async fn probe_cost(
    conf: &Path,
    path: &HoardPath,
    prefer: bool,
    reads: usize,
    length: u64,
) -> anyhow::Result<(f64, f64)> {
    let mut loaded = hoard_config::SiteConfig::load(conf)?;
    loaded.config.user.prefer_cached_replicas = prefer;
    let client = HoardClient::connect(&loaded.config).await?;
    let mut sink = tokio::io::sink();
    let block = 64 * 1024;
    let blocks = (length / block).max(1);
    let mut latencies = Vec::with_capacity(reads);
    let mut next = 7u64;
    for _ in 0..reads {
        next = next.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let start = (next >> 33) % blocks * block;
        let began = Instant::now();
        client.read_to(path, Some(start..start + block), &mut sink).await?;
        latencies.push(began.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok((at(0.5), at(0.99)))
}

pub async fn run(args: ReplicasArgs) -> anyhow::Result<()> {
    let hoard_binary = crate::peers::hoard_binary()?;
    if args.only.iter().any(|only| only == "policies") {
        policies(&hoard_binary, &args).await?;
    }
    if args.only.iter().any(|only| only == "repair") {
        repair(&hoard_binary, &args).await?;
    }
    Ok(())
}

/// 64 clients on one hot file, 1 vs 3 copies, each policy; the prefer-cached probe's cost.
async fn policies(hoard_binary: &Path, args: &ReplicasArgs) -> anyhow::Result<()> {
    let hoard_binary = hoard_binary.to_path_buf();
    let args = args.clone();
    let length = hoard_config::parse_size(&args.size).map_err(|err| anyhow::anyhow!(err))?;
    let read_size = hoard_config::parse_size(&args.read_size).map_err(|err| anyhow::anyhow!(err))?;
    let ufs = tempfile::Builder::new().prefix("hoard-bench-replicas").tempdir()?;
    std::fs::create_dir_all(ufs.path().join("hot"))?;
    let mut data = vec![0u8; usize::try_from(length)?];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in data.chunks_mut(8) {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(ufs.path().join("hot/file"), &data)?;
    drop(data);
    let path = HoardPath::parse("/hot/file")?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    println!(
        "| copies | policy | MB/s ({} clients) | bytes per worker (share) |\n| --- | --- | --- | --- |",
        args.clients
    );
    for copies in [1u32, 3] {
        let capacity = format!("hoard.worker.page.store.sizes={}", length * 2 + (64 << 20));
        let cluster = LocalCluster::start(
            &hoard_binary,
            &["--ufs", &ufs.path().display().to_string()],
            &[capacity],
        )?;
        hoard(
            &hoard_binary,
            &cluster,
            &["replica", "set", "--path", "/hot", "--replicas", &copies.to_string()],
        )?;
        let job = hoard(
            &hoard_binary,
            &cluster,
            &[
                "job", "load", "--path", "/hot", "--submit", "--wait", "--format", "json",
            ],
        )?;
        let job: serde_json::Value = serde_json::from_str(&job).context("load answer")?;
        if job["state"] != "SUCCEEDED" {
            bail!("the load of {copies} copies did not succeed: {job}");
        }
        let workers = cluster.workers()?;
        for policy in ReplicaSelectionPolicy::ALL {
            let mut before = Vec::new();
            for worker in &workers {
                before.push(metric(&http, &worker.address, "hoard_worker_bytes_served_total").await?);
            }
            let started = Instant::now();
            let total = read_for(&cluster.conf(), policy, &path, &args, length, read_size).await?;
            let seconds = started.elapsed().as_secs_f64();
            let mut shares = Vec::new();
            for (worker, before) in workers.iter().zip(&before) {
                let served = metric(&http, &worker.address, "hoard_worker_bytes_served_total").await? - before;
                shares.push(served);
            }
            let served: f64 = shares.iter().sum();
            let described: Vec<String> = shares
                .iter()
                .map(|bytes| format!("{:.0}%", 100.0 * bytes / served.max(1.0)))
                .collect();
            println!(
                "| {copies} | {policy} | {:.0} | {} |",
                total as f64 / seconds / 1e6,
                described.join(" / ")
            );
        }
        if copies == 3 {
            // Alternate off and on, three times each: the probe's cost on warm 64KiB reads
            // (its answers are kept for the default 10s, as a client would).
            let mut off = Vec::new();
            let mut on = Vec::new();
            for round in 0..5 {
                // Which goes first alternates, so neither always follows the other.
                for prefer in if round % 2 == 0 { [false, true] } else { [true, false] } {
                    let figures = probe_cost(&cluster.conf(), &path, prefer, 4000, length).await?;
                    if prefer {
                        on.push(figures)
                    } else {
                        off.push(figures)
                    }
                }
            }
            let median = |values: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
                let mut picked: Vec<f64> = values.iter().map(pick).collect();
                crate::median(&mut picked)
            };
            let (off50, off99) = (median(&off, |v| v.0), median(&off, |v| v.1));
            let (on50, on99) = (median(&on, |v| v.0), median(&on, |v| v.1));
            println!(
                "\n| warm 64KiB reads, one client | p50 (ms) | p99 (ms) |\n| --- | --- | --- |\n| prefer-cached off | {off50:.3} | {off99:.3} |\n| prefer-cached on (probe ttl 10s) | {on50:.3} | {on99:.3} |\n| on / off | {:.2} | {:.2} |",
                on50 / off50,
                on99 / off99
            );
        }
        drop(cluster);
    }
    Ok(())
}
