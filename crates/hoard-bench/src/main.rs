//! `hoard-bench`: Hoard against its peers, side by side, in one run, through the same load
//! generator (wrk) on loopback. Prints markdown tables for docs/benchmarks.md.
//!
//! Needs `target/release/hoard` (build it with `cargo build --release` first), `wrk` and
//! `nginx` (scripts/setup-test-deps.sh installs both).

mod bare_http;
mod cluster;
mod ha_bench;
mod jobs_bench;
mod membership_bench;
mod peers;
mod replicas_bench;
mod ring_bench;
mod wrk;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "hoard-bench", about = "Benchmarks comparing Hoard with its peers")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, clap::Args)]
struct DataArgs {
    /// Size of the benchmark file.
    #[arg(long, default_value = "1GiB")]
    size: String,
    /// Seconds per wrk measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Measurements per peer (medians are reported); peers alternate run by run.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Working directory (data, page store, nginx config). A temp dir when absent.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Another `hoard` binary (e.g. an earlier commit's release build) to measure as a third
    /// warm peer in the same runs, so a change's cost is a ratio from one run, not two.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Warm sequential 4MiB reads and warm random 64KiB reads: a worker vs nginx; cold read
    /// through a worker vs the UFS directory; worker RSS.
    Read(DataArgs),
    /// Membership on a real etcd: SIGKILL -> out of a client's ring and restart -> back, with
    /// the watch and with the refresh interval alone; etcd's request rate at rest.
    Membership(membership_bench::MembershipArgs),
    /// Jobs: a load onto 3 workers vs `cp -r` of the same data; the coordinator's CPU and
    /// memory per files scheduled; job store operations per second, embedded vs etcd.
    Jobs(jobs_bench::JobsArgs),
    /// Replicas: 64 clients reading one hot file, 1 vs 3 copies, under each selection policy:
    /// throughput and each worker's share of the bytes.
    Replicas(replicas_bench::ReplicasArgs),
    /// High availability on a real etcd: failover time and claim throughput with 1-3 coordinators.
    Ha(ha_bench::HaArgs),
    /// Ring lookup, build time, memory, balance and movement at 10/100/1000 workers.
    Ring {
        /// Paths used for balance and movement figures.
        #[arg(long, default_value_t = 1_000_000)]
        paths: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Ring { paths } => {
            let rows = ring_bench::run(paths);
            println!("{}", ring_bench::to_markdown(&rows));
            Ok(())
        }
        Scenario::Ha(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(ha_bench::run(args))
        }
        Scenario::Jobs(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(jobs_bench::run(args))
        }
        Scenario::Replicas(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(replicas_bench::run(args))
        }
        Scenario::Membership(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(membership_bench::run(args))
        }
        Scenario::Read(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(read_benchmarks(args))
        }
    }
}

/// The median of `ours[i] / theirs[i]` over the runs.
fn paired_ratio(ours: &[f64], theirs: &[f64]) -> f64 {
    let mut ratios: Vec<f64> = ours.iter().zip(theirs).map(|(a, b)| a / b).collect();
    median(&mut ratios)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() {
        return f64::NAN;
    }
    values[values.len() / 2]
}

async fn read_benchmarks(args: DataArgs) -> anyhow::Result<()> {
    let size = hoard_config::parse_size(&args.size).map_err(|err| anyhow::anyhow!("--size: {err}"))?;
    let temp = tempfile::Builder::new().prefix("hoard-bench").tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let data_root = dir.join("ufs");
    let file_name = "bench/data.bin";
    let data_file = data_root.join(file_name);
    peers::write_data_file(&data_file, size)?;
    let hoard_bin = peers::hoard_binary()?;
    let duration = Duration::from_secs(args.seconds);

    let nginx = peers::Nginx::start(&dir.join("nginx"), &data_root)?;
    let worker = peers::Worker::start(&hoard_bin, &dir.join("worker"), &data_root, size)?;
    let nginx_url = format!("http://{}/{file_name}", nginx.address);
    let worker_url = format!("http://{}/files/{file_name}", worker.address);
    let baseline = match &args.baseline {
        Some(binary) => Some(peers::Worker::start(binary, &dir.join("baseline"), &data_root, size)?),
        None => None,
    };
    let baseline_url = baseline
        .as_ref()
        .map(|worker| format!("http://{}/files/{file_name}", worker.address));
    // As many event loops as the worker runs by default.
    let event_loops = hoard_config::default_event_loops();
    let bare = bare_http::start(bytes::Bytes::from(std::fs::read(&data_file)?), event_loops)?;
    let bare_url = format!("http://{}/{file_name}", bare.address);

    // Warm both: the whole file through the worker into its page store, and into the OS cache.
    peers::read_all(&worker_url, size).await.context("warming the worker")?;
    peers::read_all(&nginx_url, size).await.context("warming nginx")?;
    if let Some(url) = &baseline_url {
        peers::read_all(url, size)
            .await
            .context("warming the baseline worker")?;
    }
    // Peer 0 is this build's worker, 1 nginx, 2 the baseline worker (when given).
    let mut peers_urls = vec![(0, "hoard", worker_url.clone()), (1, "nginx", nginx_url.clone())];
    if let Some(url) = &baseline_url {
        peers_urls.push((2, "baseline", url.clone()));
    }

    let chunk = 4u64 << 20;
    let mut sequential = [Vec::new(), Vec::new(), Vec::new()];
    let mut random_rps = [Vec::new(), Vec::new(), Vec::new()];
    let mut random_p50 = [Vec::new(), Vec::new(), Vec::new()];
    let mut random_p99 = [Vec::new(), Vec::new(), Vec::new()];
    let mut bare_rps = Vec::new();
    let mut bare_p99 = Vec::new();
    for run in 0..args.runs {
        for (peer, name, url) in &peers_urls {
            let (peer, url) = (*peer, url);
            let seq = wrk::run(url, &wrk::Pattern::Sequential { size, chunk }, 1, 1, duration)?;
            sequential[peer].push(seq.requests_per_sec * chunk as f64 / 1e6);
            let random = wrk::run(url, &wrk::Pattern::Random { size, len: 64 << 10 }, 2, 16, duration)?;
            random_rps[peer].push(random.requests_per_sec);
            random_p50[peer].push(random.p50_ms);
            random_p99[peer].push(random.p99_ms);
            eprintln!(
                "run {run} {name}: sequential {:.0} MB/s, random {:.0} req/s p50 {:.3}ms p99 {:.3}ms",
                sequential[peer].last().copied().unwrap_or_default(),
                random.requests_per_sec,
                random.p50_ms,
                random.p99_ms
            );
        }
        let random = wrk::run(
            &bare_url,
            &wrk::Pattern::Random { size, len: 64 << 10 },
            2,
            16,
            duration,
        )?;
        bare_rps.push(random.requests_per_sec);
        bare_p99.push(random.p99_ms);
        eprintln!(
            "run {run} bare hyper: random {:.0} req/s p50 {:.3}ms p99 {:.3}ms",
            random.requests_per_sec, random.p50_ms, random.p99_ms
        );
    }
    let worker_peak = worker.memory_kib("VmHWM")?;
    let worker_anon = worker.memory_kib("RssAnon")?;
    let worker_file = worker.memory_kib("RssFile")?;
    let worker_shmem = worker.memory_kib("RssShmem")?;
    let worker_pages = worker.cached_pages().await?;
    drop(worker);
    drop(baseline);

    // Cold: a fresh worker (empty page store) per run vs the UFS directory read straight,
    // both through the same HTTP reader (nginx serving the UFS dir), and vs an in-process read.
    let mut cold_hoard = Vec::new();
    let mut cold_ufs = Vec::new();
    let mut cold_direct = Vec::new();
    for run in 0..args.runs {
        peers::settle_disk();
        let started = Instant::now();
        peers::read_file_directly(&data_file, chunk)?;
        cold_direct.push(size as f64 / 1e6 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        peers::read_all(&nginx_url, size).await?;
        cold_ufs.push(size as f64 / 1e6 / started.elapsed().as_secs_f64());
        let cold_dir = dir.join(format!("cold-{run}"));
        let fresh = peers::Worker::start(&hoard_bin, &cold_dir, &data_root, size)?;
        let url = format!("http://{}/files/{file_name}", fresh.address);
        let started = Instant::now();
        let bytes = peers::read_all(&url, size).await?;
        cold_hoard.push(bytes as f64 / 1e6 / started.elapsed().as_secs_f64());
        if bytes != size {
            bail!("cold read returned {bytes} bytes, expected {size}");
        }
        drop(fresh);
        let _ = std::fs::remove_dir_all(&cold_dir);
        eprintln!(
            "run {run} cold: hoard {:.0} MB/s, ufs via nginx {:.0} MB/s, ufs in-process {:.0} MB/s",
            cold_hoard[run], cold_ufs[run], cold_direct[run]
        );
    }
    drop(nginx);

    // Ratios are taken run by run (the two peers measured in the same minute) and their
    // median reported: on a shared machine the load moves between runs more than between peers.
    let seq_ratio = paired_ratio(&sequential[0], &sequential[1]);
    let rps_ratio = paired_ratio(&random_rps[0], &random_rps[1]);
    let p50_ratio = paired_ratio(&random_p50[0], &random_p50[1]);
    let p99_ratio = paired_ratio(&random_p99[0], &random_p99[1]);
    let bare_rps_ratio = paired_ratio(&bare_rps, &random_rps[1]);
    let bare_p99_ratio = paired_ratio(&bare_p99, &random_p99[1]);
    let hoard_vs_bare_p99 = paired_ratio(&random_p99[0], &bare_p99);
    let baseline_rows = (!sequential[2].is_empty()).then(|| {
        [
            ("warm sequential 4MiB reads, 1 connection (MB/s)", &sequential),
            ("warm random 64KiB reads, 16 connections (req/s)", &random_rps),
            ("... p50 latency (ms)", &random_p50),
            ("... p99 latency (ms)", &random_p99),
        ]
        .map(|(name, values)| {
            let ratio = paired_ratio(&values[0], &values[2]);
            let ours = median(&mut values[0].clone());
            let theirs = median(&mut values[2].clone());
            format!("| {name} vs the baseline build | {ours:.3} | {theirs:.3} | {ratio:.3} | |")
        })
    });
    let cold_ratio = paired_ratio(&cold_hoard, &cold_ufs);
    let direct_ratio = paired_ratio(&cold_hoard, &cold_direct);
    let seq_h = median(&mut sequential[0]);
    let seq_n = median(&mut sequential[1]);
    let rps_h = median(&mut random_rps[0]);
    let rps_n = median(&mut random_rps[1]);
    let p50_h = median(&mut random_p50[0]);
    let p50_n = median(&mut random_p50[1]);
    let p99_h = median(&mut random_p99[0]);
    let p99_n = median(&mut random_p99[1]);
    let bare_rps_m = median(&mut bare_rps);
    let bare_p99_m = median(&mut bare_p99);
    let cold_h = median(&mut cold_hoard);
    let cold_u = median(&mut cold_ufs);
    let cold_d = median(&mut cold_direct);
    println!(
        "File: {} ({size} bytes); {} runs of {}s per peer; medians.\n",
        args.size, args.runs, args.seconds
    );
    println!("| scenario | hoard (median) | peer (median) | ratio (median of per-run ratios) | goal |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| warm sequential 4MiB reads, 1 connection (MB/s) vs nginx | {seq_h:.0} | {seq_n:.0} | {seq_ratio:.2} | >= 0.8 |"
    );
    println!(
        "| warm random 64KiB reads, 16 connections (req/s) vs nginx | {rps_h:.0} | {rps_n:.0} | {rps_ratio:.2} | >= 0.8 |"
    );
    println!("| ... p50 latency (ms) | {p50_h:.3} | {p50_n:.3} | {p50_ratio:.2} | |");
    println!("| ... p99 latency (ms) | {p99_h:.3} | {p99_n:.3} | {p99_ratio:.2} | <= 2.0 |");
    println!(
        "| (reference) a bare hyper server answering the same ranges from memory (req/s) vs nginx | {bare_rps_m:.0} | {rps_n:.0} | {bare_rps_ratio:.2} | |"
    );
    println!("| ... its p99 latency (ms) vs nginx | {bare_p99_m:.3} | {p99_n:.3} | {bare_p99_ratio:.2} | |");
    println!(
        "| hoard's p99 vs the bare hyper server's (ms) | {p99_h:.3} | {bare_p99_m:.3} | {hoard_vs_bare_p99:.2} | |"
    );
    println!(
        "| cold sequential read, one GET (MB/s) vs the UFS dir served by nginx | {cold_h:.0} | {cold_u:.0} | {cold_ratio:.2} | >= 0.7 |"
    );
    println!(
        "| cold sequential read, one GET (MB/s) vs an in-process read of the UFS file | {cold_h:.0} | {cold_d:.0} | {direct_ratio:.2} | (for reference) |"
    );
    for row in baseline_rows.iter().flatten() {
        println!("{row}");
    }
    println!();
    println!(
        "Worker memory after serving, {worker_pages} pages cached: peak RSS (VmHWM) {:.1} MiB. Now: \
         the memory tier's sealed page files (RssShmem) {:.1} MiB, bounded by \
         hoard.worker.page.store.memory.size; the rest of the worker's own (RssAnon) {:.1} MiB; \
         page-cache memory of mapped page files (RssFile) {:.1} MiB, shared with the OS cache.",
        worker_peak as f64 / 1024.0,
        worker_shmem as f64 / 1024.0,
        worker_anon as f64 / 1024.0,
        worker_file as f64 / 1024.0
    );
    Ok(())
}
