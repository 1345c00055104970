//! Jobs: a load through the coordinator onto 3 workers vs `cp -r` of the same data on the same
//! disk; the coordinator's CPU time and peak memory per files scheduled; job store operations
//! per second, embedded vs etcd; what a load's final check costs (`hoard.job.final.check`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hoard_meta::jobs::{JobOptions, JobStore, JobType};
use hoard_testkit::Etcd;

use crate::cluster::LocalCluster;

#[derive(Debug, Clone, clap::Args)]
pub struct JobsArgs {
    /// Measurements per peer (medians are reported); peers alternate run by run.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 4)]
    large_files: usize,
    #[arg(long, default_value = "1GiB")]
    large_size: String,
    #[arg(long, default_value_t = 20_000)]
    small_files: usize,
    #[arg(long, default_value = "64KiB")]
    small_size: String,
    /// Files of the scheduling-cost runs (empty files: the coordinator's work, not the data's).
    #[arg(long, default_values_t = [100_000usize, 1_000_000])]
    schedule_files: Vec<usize>,
    /// Jobs per job store measurement.
    #[arg(long, default_value_t = 500)]
    store_jobs: usize,
    /// Working directory (datasets). A temp dir when absent.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// File size of the final check runs (`small_files` files).
    #[arg(long, default_value = "16KiB")]
    check_size: String,
    /// Scenarios to run: load, schedule, store, check.
    #[arg(long, value_delimiter = ',', default_value = "load,schedule,store,check")]
    only: Vec<String>,
}

fn write_files(dir: &Path, count: usize, size: u64, per_dir: usize) -> anyhow::Result<u64> {
    // Beside the dataset, not in it: the benchmark loads the whole directory.
    let marker = dir.with_extension("complete");
    if marker.exists() {
        return Ok(count as u64 * size);
    }
    let _ = std::fs::remove_dir_all(dir);
    let chunk = crate::peers::pseudo_random(size.min(1 << 20) as usize);
    for i in 0..count {
        let sub = dir.join(format!("{:04}", i / per_dir.max(1)));
        if i % per_dir.max(1) == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let path = sub.join(format!("f{i:07}.bin"));
        let mut file = std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        let mut left = size;
        while left > 0 {
            let take = left.min(chunk.len() as u64) as usize;
            // Vary the first bytes per file so no two files are alike.
            let mut block = chunk[..take].to_vec();
            for (slot, byte) in block.iter_mut().zip((i as u64 ^ left).to_le_bytes()) {
                *slot ^= byte;
            }
            std::io::Write::write_all(&mut file, &block)?;
            left -= take as u64;
        }
    }
    std::fs::write(&marker, b"")?;
    Ok(count as u64 * size)
}

/// Empties the OS page cache so every peer reads from the disk (root only; reported if not).
fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", b"3").is_ok()
}

fn cp_seconds(source: &Path, scratch: &Path) -> anyhow::Result<f64> {
    let target = scratch.join("cp-target");
    let _ = std::fs::remove_dir_all(&target);
    let started = Instant::now();
    let status = Command::new("cp").arg("-r").arg(source).arg(&target).status()?;
    // cp's data is only in the page cache until written back: count the write-back too, as
    // the page store's writes are counted (they are synced by nobody either, but a fair bound
    // on the disk's work is both sides flushed).
    let _ = Command::new("sync").status();
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("cp -r failed: {status}");
    }
    std::fs::remove_dir_all(&target)?;
    Ok(seconds)
}

/// Submits a load of `/` and waits; returns the seconds from submit to SUCCEEDED (synced).
fn hoard_load_seconds(hoard: &Path, cluster: &LocalCluster, path: &str) -> anyhow::Result<(f64, serde_json::Value)> {
    let started = Instant::now();
    let output = Command::new(hoard)
        .arg("--conf")
        .arg(cluster.conf())
        .args(["job", "load", "--path", path, "--submit", "--wait", "--format", "json"])
        .output()?;
    let _ = Command::new("sync").status();
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!("load failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok((seconds, serde_json::from_slice(&output.stdout)?))
}

async fn load_vs_cp(hoard: &Path, dir: &Path, args: &JobsArgs) -> anyhow::Result<Vec<String>> {
    let large_size = hoard_config::parse_size(&args.large_size).map_err(|err| anyhow::anyhow!(err))?;
    let small_size = hoard_config::parse_size(&args.small_size).map_err(|err| anyhow::anyhow!(err))?;
    let sets = [
        (
            format!("{} x {}", args.large_files, args.large_size),
            dir.join("large"),
            write_files(&dir.join("large"), args.large_files, large_size, 1)?,
        ),
        (
            format!("{} x {}", args.small_files, args.small_size),
            dir.join("small"),
            write_files(&dir.join("small"), args.small_files, small_size, 1000)?,
        ),
    ];
    let mut rows = Vec::new();
    let dropped = drop_caches();
    for (name, source, bytes) in &sets {
        // Room for everything on every worker (the ring may send most files to one).
        let capacity = format!("hoard.worker.page.store.sizes={}", bytes + bytes / 5 + (64 << 20));
        let mut hoard_rates = Vec::new();
        let mut cp_rates = Vec::new();
        for run in 0..args.runs {
            drop_caches();
            let cp = cp_seconds(source, dir)?;
            cp_rates.push(*bytes as f64 / cp / 1e6);
            drop_caches();
            let cluster = LocalCluster::start(
                hoard,
                &["--ufs", &source.display().to_string()],
                std::slice::from_ref(&capacity),
            )?;
            let (seconds, job) = hoard_load_seconds(hoard, &cluster, "/")?;
            if job["bytesProcessed"].as_u64() != Some(*bytes) {
                bail!("the load did not process every byte: {job}");
            }
            hoard_rates.push(*bytes as f64 / seconds / 1e6);
            eprintln!(
                "{name} run {run}: hoard {:.0} MB/s, cp -r {:.0} MB/s",
                hoard_rates.last().copied().unwrap_or_default(),
                cp_rates.last().copied().unwrap_or_default()
            );
            drop(cluster);
        }
        let hoard_median = crate::median(&mut hoard_rates);
        let cp_median = crate::median(&mut cp_rates);
        rows.push(format!(
            "| load {name} (MB/s) vs cp -r | {hoard_median:.0} | {cp_median:.0} | {:.2} |",
            hoard_median / cp_median
        ));
    }
    if !dropped {
        rows.push("(could not drop the page cache: not root; sources may be cached)".to_string());
    }
    Ok(rows)
}

fn proc_stat_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): utime is the 14th, stime 15th.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / ticks)
}

fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("{field} not in /proc/{pid}/status"))
}

async fn schedule_cost(hoard: &Path, dir: &Path, args: &JobsArgs) -> anyhow::Result<Vec<String>> {
    let mut rows = Vec::new();
    for &files in &args.schedule_files {
        let source = dir.join(format!("empty-{files}"));
        eprintln!("creating {files} empty files (once)...");
        write_files(&source, files, 0, 1000)?;
        let cluster = LocalCluster::start(hoard, &["--ufs", &source.display().to_string()], &[])?;
        let coordinator = cluster.coordinator()?;
        let cpu_before = proc_stat_cpu_seconds(coordinator.pid)?;
        let rss_before = proc_status_kib(coordinator.pid, "VmRSS")?;
        let (seconds, job) = hoard_load_seconds(hoard, &cluster, "/")?;
        if job["filesProcessed"].as_u64().unwrap_or(0) + job["filesSkipped"].as_u64().unwrap_or(0) != files as u64 {
            bail!("the job did not resolve every file: {job}");
        }
        let cpu = proc_stat_cpu_seconds(coordinator.pid)? - cpu_before;
        let peak = proc_status_kib(coordinator.pid, "VmHWM")?;
        eprintln!(
            "{files} files: {seconds:.1}s, coordinator CPU {cpu:.2}s, RSS {rss_before} KiB at rest, peak {peak} KiB"
        );
        rows.push(format!(
            "| {files} | {seconds:.1} | {:.0} | {:.2} | {:.1} | {:.1} |",
            files as f64 / seconds,
            cpu * 100_000.0 / files as f64,
            rss_before as f64 / 1024.0,
            peak as f64 / 1024.0
        ));
    }
    Ok(rows)
}

async fn store_ops(name: &str, store: JobStore, jobs: usize) -> anyhow::Result<String> {
    let now = hoard_meta::now_millis();
    let started = Instant::now();
    for i in 0..jobs {
        store
            .submit(JobType::Load, &format!("/bench/{name}/{i}"), JobOptions::default(), now)
            .await?;
    }
    let submit = jobs as f64 / started.elapsed().as_secs_f64();
    let ids = store.waiting(jobs).await?;
    let started = Instant::now();
    let mut claimed = Vec::new();
    for id in &ids {
        if let Some(job) = store.claim(id, "bench", now).await? {
            claimed.push(job);
        }
    }
    let claim = claimed.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for job in &mut claimed {
        job.record.progress.files_processed += 1;
        job.version = store.checkpoint(&job.record, job.version).await?;
    }
    let checkpoint = claimed.len() as f64 / started.elapsed().as_secs_f64();
    Ok(format!("| {name} | {submit:.0} | {claim:.0} | {checkpoint:.0} |"))
}

async fn store_throughput(dir: &Path, args: &JobsArgs) -> anyhow::Result<Vec<String>> {
    let path = dir.join("bench-store/meta.redb");
    let _ = std::fs::remove_file(&path);
    let embedded = tokio::task::spawn_blocking(move || hoard_meta::embedded::EmbeddedStore::open(&path)).await??;
    let embedded_row = store_ops(
        "EMBEDDED",
        JobStore::new(Arc::new(embedded), "jobs/", u32::MAX),
        args.store_jobs,
    )
    .await?;
    let etcd = Etcd::start().await;
    let config = hoard_config::EtcdConfig {
        endpoints: vec![etcd.endpoint()],
        root: "/hoard/bench/jobs/".to_string(),
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        max_retries: 3,
    };
    let etcd_store = hoard_meta::etcd::EtcdStore::connect(&config).await?;
    let etcd_row = store_ops(
        "ETCD",
        JobStore::new(Arc::new(etcd_store), "", u32::MAX),
        args.store_jobs,
    )
    .await?;
    Ok(vec![embedded_row, etcd_row])
}

/// How a final check run goes: the check mode, and whether a worker is SIGKILLed and restarted
/// at a third of the load.
const CHECK_MODES: [(&str, bool); 4] = [("NONE", false), ("DOUBTFUL", false), ("ALL", false), ("DOUBTFUL", true)];

/// The job as `hoard job load --path PATH --progress --format json` shows it.
fn job_progress(hoard: &Path, cluster: &LocalCluster, path: &str) -> anyhow::Result<serde_json::Value> {
    let output = Command::new(hoard)
        .arg("--conf")
        .arg(cluster.conf())
        .args(["job", "load", "--path", path, "--progress", "--format", "json"])
        .output()?;
    if !output.status.success() {
        bail!("progress failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// A load with the worker at index 1 SIGKILLed once a third of the files are processed and
/// restarted at once; returns the seconds from submit to the end, and the job.
fn disturbed_load_seconds(
    hoard: &Path,
    cluster: &mut LocalCluster,
    path: &str,
    files: usize,
) -> anyhow::Result<(f64, serde_json::Value)> {
    let started = Instant::now();
    let mut waiter = Command::new(hoard)
        .arg("--conf")
        .arg(cluster.conf())
        .args(["job", "load", "--path", path, "--submit", "--wait", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let victim = cluster.workers()?.into_iter().nth(1).context("no second worker")?;
    loop {
        if started.elapsed() > Duration::from_secs(600) {
            let _ = waiter.kill();
            bail!("the load made no progress");
        }
        let progress = job_progress(hoard, cluster, path).ok();
        let processed = progress
            .as_ref()
            .and_then(|job| job["filesProcessed"].as_u64())
            .unwrap_or(0);
        if processed >= files as u64 / 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill has no memory preconditions; the pid is the worker this cluster started.
    unsafe {
        libc::kill(victim.pid as i32, libc::SIGKILL);
    }
    let gone = Instant::now();
    while std::net::TcpStream::connect(&victim.address).is_ok() && gone.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    cluster.restart(&victim)?;
    let output = waiter.wait_with_output()?;
    let _ = Command::new("sync").status();
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!("load failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok((seconds, serde_json::from_slice(&output.stdout)?))
}

/// How long the final check of job `job_id` took, from the coordinator's "final check done"
/// log line (0 when it did not run).
fn final_check_ms(cluster: &LocalCluster, job_id: &str) -> anyhow::Result<f64> {
    let log = cluster.conf().with_file_name("logs").join("coordinator.log");
    let text = std::fs::read_to_string(&log).with_context(|| format!("read {}", log.display()))?;
    let elapsed = text
        .lines()
        .filter(|line| line.contains("final check done") && line.contains(job_id))
        .find_map(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("elapsed_ms="))
                .and_then(|value| value.parse::<f64>().ok())
        });
    Ok(elapsed.unwrap_or(0.0))
}

/// A load of `small_files` files with the final check off, on files in doubt (nothing
/// disturbed), on every file, and on files in doubt after a worker restart mid-load; modes
/// alternate run by run, each on a fresh cluster.
async fn final_check_cost(hoard: &Path, dir: &Path, args: &JobsArgs) -> anyhow::Result<Vec<String>> {
    let size = hoard_config::parse_size(&args.check_size).map_err(|err| anyhow::anyhow!(err))?;
    let source = dir.join(format!("check-{}x{}", args.small_files, args.check_size));
    let bytes = write_files(&source, args.small_files, size, 1000)?;
    let capacity = format!("hoard.worker.page.store.sizes={}", bytes + bytes / 5 + (64 << 20));
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); CHECK_MODES.len()];
    let mut rechecked: Vec<Vec<f64>> = vec![Vec::new(); CHECK_MODES.len()];
    let mut check_ms: Vec<Vec<f64>> = vec![Vec::new(); CHECK_MODES.len()];
    for run in 0..args.runs {
        // Alternate the order run by run so no mode always goes first.
        let mut order: Vec<usize> = (0..CHECK_MODES.len()).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let (mode, disturbed) = CHECK_MODES[index];
            // The page cache is left alone (the dataset stays in it for every mode alike): the
            // figures are the coordinator's and workers' work, and other processes on the
            // machine keep their caches.
            let mut cluster = LocalCluster::start(
                hoard,
                &["--ufs", &source.display().to_string()],
                &[capacity.clone(), format!("hoard.job.final.check={mode}")],
            )?;
            let (took, job) = if disturbed {
                disturbed_load_seconds(hoard, &mut cluster, "/", args.small_files)?
            } else {
                hoard_load_seconds(hoard, &cluster, "/")?
            };
            if job["state"] != "SUCCEEDED" || job["bytesProcessed"].as_u64() != Some(bytes) {
                bail!("the load did not succeed with every byte: {job}");
            }
            let checked = job["filesRechecked"].as_f64().unwrap_or(0.0);
            let check = final_check_ms(&cluster, job["jobId"].as_str().unwrap_or_default())?;
            let what = if disturbed { " (worker restarted)" } else { "" };
            eprintln!(
                "final check {mode}{what}: run {run}: {took:.2}s, check {check:.0}ms, {checked} files rechecked, {} repaired",
                job["filesRepaired"]
            );
            seconds[index].push(took);
            rechecked[index].push(checked);
            check_ms[index].push(check);
            drop(cluster);
        }
    }
    let mut rows = Vec::new();
    for (index, (mode, disturbed)) in CHECK_MODES.iter().enumerate() {
        let took = crate::median(&mut seconds[index]);
        let checked = crate::median(&mut rechecked[index]);
        let check = crate::median(&mut check_ms[index]);
        let what = if *disturbed {
            ", a worker SIGKILLed and restarted at 1/3"
        } else {
            ""
        };
        rows.push(format!("| {mode}{what} | {took:.2} | {check:.0} | {checked:.0} |"));
    }
    Ok(rows)
}

pub async fn run(args: JobsArgs) -> anyhow::Result<()> {
    let hoard = crate::peers::hoard_binary()?;
    let temp = tempfile::Builder::new().prefix("hoard-bench-jobs").tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let wants = |name: &str| args.only.iter().any(|only| only == name);
    if wants("load") {
        let rows = load_vs_cp(&hoard, &dir, &args).await?;
        println!("| scenario | hoard | cp -r | ratio |\n| --- | --- | --- | --- |");
        for row in rows {
            println!("{row}");
        }
        println!();
    }
    if wants("schedule") {
        let rows = schedule_cost(&hoard, &dir, &args).await?;
        println!("| empty files | seconds | files/s | coordinator CPU s per 100k files | RSS at rest (MiB) | peak RSS (MiB) |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for row in rows {
            println!("{row}");
        }
        println!();
    }
    if wants("store") {
        let rows = store_throughput(&dir, &args).await?;
        println!("| job store | submit/s | claim/s | checkpoint/s |\n| --- | --- | --- | --- |");
        for row in rows {
            println!("{row}");
        }
        println!();
    }
    if wants("check") {
        let rows = final_check_cost(&hoard, &dir, &args).await?;
        println!(
            "| final check ({} x {}) | load seconds | final check ms | files rechecked |\n| --- | --- | --- | --- |",
            args.small_files, args.check_size
        );
        for row in rows {
            println!("{row}");
        }
    }
    Ok(())
}
