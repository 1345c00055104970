//! `hoard job load|free|repair|list|rerun`: jobs through the coordinator's REST API (and, for `rerun`
//! with the coordinator down, the job store itself, as the seed's `job rerun` does).

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, Subcommand};
use hoard_client::{ClientError, CoordinatorClient};
use hoard_common::api::coordinator::{JobOptionsView, JobView, SubmitJob};
use hoard_config::{JobStoreType, SiteConfig};

use crate::output::{human_bytes, print_table};
use crate::Format;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Load files under a path into the workers' caches.
    Load(LoadArgs),
    /// Evict every cached page of the files under a path from every worker.
    Free(JobArgs),
    /// Bring the files under a path to their replica count: load the copies their replicas
    /// lack, free the copies on other workers (what the coordinator runs for rules marked
    /// maintain).
    Repair(JobArgs),
    /// Jobs, newest first.
    List {
        /// Only jobs in this state (WAITING, RUNNING, SUCCEEDED, FAILED, STOPPED).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, value_enum, ignore_case = true, default_value_t)]
        format: Format,
    },
    /// Put a FAILED, STOPPED or stuck RUNNING job back in the queue (it resumes from its
    /// checkpoint). Works on the job store directly when the coordinator is down.
    Rerun {
        /// The job's id.
        job_id: String,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("action").required(true).multiple(true).args(["submit", "progress", "stop", "wait"])))]
pub struct JobArgs {
    /// The Hoard path (a directory: everything under it; or one file).
    #[arg(long)]
    path: String,
    /// Submit the job (returns the active job if the same one is already queued or running).
    #[arg(long)]
    submit: bool,
    /// Show the latest job for this path.
    #[arg(long, conflicts_with_all = ["submit", "stop"])]
    progress: bool,
    /// Stop the active job for this path (it ends STOPPED once its tasks in flight return).
    #[arg(long, conflicts_with = "submit")]
    stop: bool,
    /// Wait for the job to end, with a progress bar; exit 0 only if it SUCCEEDED.
    #[arg(long)]
    wait: bool,
    /// Files per task (default hoard.job.batch.size).
    #[arg(long)]
    batch_size: Option<i64>,
    #[arg(long, value_enum, ignore_case = true, default_value_t)]
    format: Format,
    /// With --progress: list the failed files and their reasons.
    #[arg(long)]
    verbose: bool,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    common: JobArgs,
    /// Copies of every file per cluster (on the first N candidates of each cluster's ring);
    /// without it each file gets the count of its replica rule (`hoard replica list`).
    #[arg(long)]
    replicas: Option<i64>,
    /// Only refresh the UFS status of each file (a changed file's old pages are never served).
    #[arg(long)]
    metadata_only: bool,
    /// Afterwards, check that every file is cached whole on its workers.
    #[arg(long)]
    verify: bool,
    /// Skip files a worker already holds whole.
    #[arg(long)]
    skip_if_exists: bool,
}

pub async fn run(command: JobCommand, config: &SiteConfig) -> anyhow::Result<()> {
    let client = CoordinatorClient::new(config)?;
    match command {
        JobCommand::Load(args) => {
            let options = JobOptionsView {
                replicas: args.replicas,
                batch_size: args.common.batch_size,
                metadata_only: args.metadata_only,
                verify: args.verify,
                skip_if_exists: args.skip_if_exists,
            };
            job(&client, "load", &args.common, options).await
        }
        JobCommand::Free(args) => {
            let options = JobOptionsView {
                batch_size: args.batch_size,
                ..JobOptionsView::default()
            };
            job(&client, "free", &args, options).await
        }
        JobCommand::Repair(args) => {
            let options = JobOptionsView {
                batch_size: args.batch_size,
                ..JobOptionsView::default()
            };
            job(&client, "repair", &args, options).await
        }
        JobCommand::List { state, format } => list(&client, state.as_deref(), format).await,
        JobCommand::Rerun { job_id } => rerun(&client, config, &job_id).await,
    }
}

async fn latest(client: &CoordinatorClient, job_type: &str, path: &str) -> anyhow::Result<JobView> {
    let jobs = client.list_jobs(None, Some(job_type), Some(path)).await?;
    match jobs.into_iter().next() {
        Some(job) => Ok(job),
        None => bail!("no {job_type} job for {path}"),
    }
}

async fn job(
    client: &CoordinatorClient,
    job_type: &str,
    args: &JobArgs,
    options: JobOptionsView,
) -> anyhow::Result<()> {
    let mut current: Option<JobView> = None;
    if args.submit {
        let submit = SubmitJob {
            job_type: job_type.to_string(),
            path: args.path.clone(),
            options,
        };
        let answer = client.submit_job(&submit).await?;
        if args.format == Format::Json && !args.wait {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            return Ok(());
        }
        if answer.created {
            eprintln!("submitted {job_type} job {} for {}", answer.job.job_id, answer.job.path);
        } else {
            eprintln!(
                "a {job_type} job for {} is already {}: {}",
                answer.job.path, answer.job.state, answer.job.job_id
            );
        }
        current = Some(answer.job);
    }
    if args.stop {
        let jobs = client.list_jobs(None, Some(job_type), Some(&args.path)).await?;
        let Some(active) = jobs.into_iter().find(|job| !job.is_finished()) else {
            bail!("no active {job_type} job for {}", args.path);
        };
        let stopped = client.stop_job(&active.job_id).await?;
        eprintln!("stop requested for job {} ({})", stopped.job_id, stopped.state);
        current = Some(stopped);
    }
    if args.wait {
        let job = match current {
            Some(job) => job,
            None => latest(client, job_type, &args.path).await?,
        };
        let done = wait(client, &job.job_id).await?;
        print_job(&done, args.format, args.verbose)?;
        if done.state != "SUCCEEDED" {
            bail!(
                "job {} ended {}{}",
                done.job_id,
                done.state,
                done.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            );
        }
        return Ok(());
    }
    if args.progress {
        let job = latest(client, job_type, &args.path).await?;
        return print_job(&job, args.format, args.verbose);
    }
    if let Some(job) = current {
        if args.format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&job)?);
        } else {
            println!("{}", job.job_id);
        }
    }
    Ok(())
}

/// Polls the job until it ends, drawing a progress bar on a terminal.
async fn wait(client: &CoordinatorClient, job_id: &str) -> anyhow::Result<JobView> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} files {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        match client.job(job_id).await {
            Ok(job) => {
                unreachable_since = None;
                let done = job.files_processed + job.files_skipped + job.files_failed;
                bar.set_length(job.files_listed.max(done));
                bar.set_position(done);
                bar.set_message(format!(
                    "{} {} {}/s",
                    job.state,
                    human_bytes(job.bytes_processed),
                    human_bytes(job.throughput_bytes_per_sec as u64)
                ));
                if job.is_finished() {
                    bar.finish_and_clear();
                    return Ok(job);
                }
            }
            // A coordinator restarting (or failing over) must not end the wait.
            Err(ClientError::Coordinator { address, reason }) => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(120) {
                    bar.abandon();
                    bail!("coordinator {address} unreachable for 2 minutes: {reason}");
                }
                bar.set_message(format!("coordinator unreachable ({reason}); retrying"));
            }
            Err(err) => {
                bar.abandon();
                return Err(err.into());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_job(job: &JobView, format: Format, verbose: bool) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(job)?);
        return Ok(());
    }
    println!(
        "job {} ({} {}): {}{}",
        job.job_id,
        job.job_type,
        job.path,
        job.state,
        job.owner
            .as_deref()
            .map(|o| format!(" on coordinator {o}"))
            .unwrap_or_default()
    );
    println!(
        "  files: {} processed, {} skipped, {} failed, {} listed{}",
        job.files_processed,
        job.files_skipped,
        job.files_failed,
        job.files_listed,
        if job.listing_done { " (listing done)" } else { "" }
    );
    println!(
        "  bytes: {}, {}/s, elapsed {:.1}s, {} retried",
        human_bytes(job.bytes_processed),
        human_bytes(job.throughput_bytes_per_sec as u64),
        job.elapsed_ms as f64 / 1000.0,
        job.retried
    );
    if let Some(verified) = job.verified {
        println!(
            "  verified: {}",
            if verified { "every file cached whole" } else { "no" }
        );
    }
    if job.files_rechecked > 0 {
        println!(
            "  final check: {} files in doubt sent to their owners again, {} of them repaired",
            job.files_rechecked, job.files_repaired
        );
    }
    if let Some(shortfall) = &job.replica_shortfall {
        println!(
            "  replica shortfall: {} files lack {} copies (a cluster has fewer ONLINE workers than the replica count)",
            shortfall.files, shortfall.missing_copies
        );
    }
    if let Some(error) = &job.error {
        println!("  error: {error}");
    }
    if !job.failed_files.is_empty() {
        if verbose {
            println!("  failed files:");
            for failed in &job.failed_files {
                println!("    {}: {}", failed.path, failed.reason);
            }
        } else {
            println!("  failed files: {} (--verbose lists them)", job.failed_files.len());
        }
    }
    Ok(())
}

async fn list(client: &CoordinatorClient, state: Option<&str>, format: Format) -> anyhow::Result<()> {
    let jobs = client.list_jobs(state, None, None).await?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            vec![
                job.job_id.clone(),
                job.job_type.clone(),
                job.path.clone(),
                job.state.clone(),
                format!("{}/{}", job.files_processed + job.files_skipped, job.files_listed),
                job.files_failed.to_string(),
                human_bytes(job.bytes_processed),
            ]
        })
        .collect();
    print_table(&["JOB ID", "TYPE", "PATH", "STATE", "FILES", "FAILED", "BYTES"], &rows);
    Ok(())
}

async fn rerun(client: &CoordinatorClient, config: &SiteConfig, job_id: &str) -> anyhow::Result<()> {
    let job = match client.rerun_job(job_id).await {
        Ok(job) => job,
        Err(ClientError::Coordinator { address, reason }) => {
            eprintln!("coordinator {address} unreachable ({reason}); editing the job store directly");
            let store = open_job_store(config).await?;
            let record = store.rerun(job_id, hoard_meta::now_millis()).await?;
            hoard_coordinator::jobs::job_view(&record, hoard_meta::now_millis())
        }
        Err(err) => return Err(err.into()),
    };
    println!(
        "job {} is {} again (it resumes from its checkpoint)",
        job.job_id, job.state
    );
    Ok(())
}

/// The job store the coordinator uses, opened by this process (the coordinator must be down
/// for the embedded one: it holds the file).
async fn open_job_store(config: &SiteConfig) -> anyhow::Result<hoard_meta::jobs::JobStore> {
    let (store, prefix): (std::sync::Arc<dyn hoard_meta::MetaStore>, &str) = match config.jobs.store_type {
        JobStoreType::Embedded => {
            let path = config.coordinator.metastore_file();
            let store = tokio::task::spawn_blocking(move || hoard_meta::embedded::EmbeddedStore::open(&path))
                .await
                .context("store task failed")??;
            (std::sync::Arc::new(store), "jobs/")
        }
        JobStoreType::Etcd => {
            let mut etcd = config.etcd.clone();
            etcd.root = config.jobs.etcd_path.clone();
            (
                std::sync::Arc::new(hoard_meta::etcd::EtcdStore::connect(&etcd).await?),
                "",
            )
        }
    };
    Ok(hoard_meta::jobs::JobStore::new(
        store,
        prefix,
        config.jobs.waiting_capacity,
    ))
}
