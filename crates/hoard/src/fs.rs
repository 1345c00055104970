//! `hoard fs ...`: the UFS seen through Hoard.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use hoard_client::HoardClient;
use hoard_common::api::ListEntry;
use hoard_common::HoardPath;
use hoard_config::SiteConfig;
use tokio::io::AsyncWriteExt;

use crate::output::{format_time_ms, human_bytes, print_table};
use crate::Format;

#[derive(Debug, Subcommand)]
pub enum FsCommand {
    /// List a directory.
    Ls {
        path: String,
        #[arg(long, value_enum, ignore_case = true, default_value_t)]
        format: Format,
        /// Print text entries as the UFS lists them instead of sorted by name (streams a huge
        /// directory without holding it in memory; JSON is always streamed in listing order).
        #[arg(short = 'U', long)]
        unsorted: bool,
    },
    /// Write a file's bytes to stdout.
    Cat {
        path: String,
        /// Afterwards print on stderr, as Prometheus text, the bytes read per serving cluster
        /// and hotness (`hoard_multi_replica_read_from_workers_bytes_total`; counted with
        /// `hoard.user.replica.prefer.cached.replicas=true`).
        #[arg(long)]
        stats: bool,
    },
    /// A file's length, version, cached bytes and the worker(s) it maps to.
    Stat {
        path: String,
        #[arg(long, value_enum, ignore_case = true, default_value_t)]
        format: Format,
    },
    /// Which worker(s) each path maps to. `-` reads paths from stdin, one per line.
    Location {
        #[arg(required = true)]
        paths: Vec<String>,
        /// How many candidate workers to show per path, best first.
        #[arg(long, short = 'n', default_value_t = 1)]
        candidates: usize,
        #[arg(long, value_enum, ignore_case = true, default_value_t)]
        format: Format,
    },
    /// Copy a file from Hoard to a local file.
    Cp { source: String, destination: PathBuf },
}

fn parse(raw: &str) -> anyhow::Result<HoardPath> {
    HoardPath::parse(raw).with_context(|| format!("invalid path {raw:?}"))
}

pub async fn run(command: FsCommand, config: &SiteConfig) -> anyhow::Result<()> {
    let client = HoardClient::connect_once(config).await?;
    match command {
        FsCommand::Ls { path, format, unsorted } => ls(&client, &parse(&path)?, format, unsorted).await,
        FsCommand::Cat { path, stats } => cat(&client, &parse(&path)?, stats).await,
        FsCommand::Stat { path, format } => stat(&client, &parse(&path)?, format).await,
        FsCommand::Location {
            paths,
            candidates,
            format,
        } => location(&client, paths, candidates, format).await,
        FsCommand::Cp { source, destination } => cp(&client, &parse(&source)?, &destination).await,
    }
}

async fn ls(client: &HoardClient, path: &HoardPath, format: Format, unsorted: bool) -> anyhow::Result<()> {
    let mut entries = client.list(path).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        Format::Json => {
            // Streamed as they arrive: a directory may hold millions of entries.
            write!(out, "[")?;
            let mut first = true;
            while let Some(entry) = entries.next().await {
                if !first {
                    write!(out, ",")?;
                }
                write!(out, "{}", serde_json::to_string(&entry?)?)?;
                first = false;
            }
            writeln!(out, "]")?;
        }
        Format::Text if unsorted => {
            while let Some(entry) = entries.next().await {
                write_ls_line(&mut out, &entry?)?;
            }
        }
        Format::Text => {
            // Sorted by name like ls(1), which means holding the listing; `-U` streams it.
            let mut all = Vec::new();
            while let Some(entry) = entries.next().await {
                all.push(entry?);
            }
            all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            for entry in &all {
                write_ls_line(&mut out, entry)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn write_ls_line(out: &mut impl Write, entry: &ListEntry) -> std::io::Result<()> {
    let kind = if entry.is_dir { "d" } else { "-" };
    let slash = if entry.is_dir { "/" } else { "" };
    writeln!(
        out,
        "{kind} {:>12} {} {}{slash}",
        entry.length,
        format_time_ms(entry.modification_time_ms),
        entry.name
    )
}

async fn cat(client: &HoardClient, path: &HoardPath, stats: bool) -> anyhow::Result<()> {
    let mut stdout = tokio::io::stdout();
    client.read_to(path, None, &mut stdout).await?;
    stdout.flush().await?;
    client.settle(std::time::Duration::from_secs(1)).await;
    if stats {
        eprint!("{}", client.replica_read_metrics());
    }
    Ok(())
}

async fn stat(client: &HoardClient, path: &HoardPath, format: Format) -> anyhow::Result<()> {
    let result = client.stat(path).await?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    let stat = &result.stat;
    println!("path:          {}", stat.path);
    println!("type:          {}", if stat.is_dir { "directory" } else { "file" });
    println!("length:        {} ({})", stat.length, human_bytes(stat.length));
    println!("modified:      {}", format_time_ms(stat.modification_time_ms));
    println!("version:       {}", stat.version);
    if !stat.is_dir {
        let percent = if stat.length == 0 {
            100.0
        } else {
            stat.cached_bytes as f64 * 100.0 / stat.length as f64
        };
        println!(
            "cached:        {} ({percent:.0}%) on {}",
            human_bytes(stat.cached_bytes),
            result.answered_by
        );
    }
    println!(
        "replica rule:  {} ({} per cluster{})",
        result.replicas.rule.path,
        result.replicas.rule.num_replicas_per_cluster,
        if result.replicas.rule.maintain {
            ", maintained"
        } else {
            ""
        }
    );
    for cluster in &result.replicas.replicas {
        let own = if cluster.local { " (this client's)" } else { "" };
        println!(
            "wanted on:     cluster {}{own}: {}",
            cluster.cluster,
            if cluster.workers.is_empty() {
                "-".to_string()
            } else {
                cluster.workers.join(", ")
            }
        );
    }
    if result.replicas.holders.is_empty() {
        println!("held by:       nobody");
    }
    for holder in &result.replicas.holders {
        println!(
            "held by:       {} (cluster {}): {}{}",
            holder.address,
            holder.cluster,
            human_bytes(holder.cached_bytes),
            if holder.whole { ", whole" } else { ", in part" }
        );
    }
    Ok(())
}

async fn location(
    client: &HoardClient,
    raw_paths: Vec<String>,
    candidates: usize,
    format: Format,
) -> anyhow::Result<()> {
    let mut paths = Vec::new();
    for raw in raw_paths {
        if raw != "-" {
            paths.push(raw);
            continue;
        }
        for line in std::io::stdin().lock().lines() {
            let line = line.context("cannot read paths from stdin")?;
            if !line.trim().is_empty() {
                paths.push(line.trim().to_string());
            }
        }
    }
    let view = client.view(false).await?;
    let mut results = Vec::with_capacity(paths.len());
    for raw in &paths {
        let path = parse(raw)?;
        let workers = view.candidates(&path, candidates.max(1));
        results.push(serde_json::json!({ "path": path.to_string(), "workers": workers }));
    }
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|result| {
            let workers = result["workers"].as_array().cloned().unwrap_or_default();
            let list = workers
                .iter()
                .map(|worker| worker["address"].as_str().unwrap_or("-").to_string())
                .collect::<Vec<_>>()
                .join(",");
            vec![
                result["path"].as_str().unwrap_or_default().to_string(),
                if list.is_empty() { "-".into() } else { list },
            ]
        })
        .collect();
    print_table(&["PATH", "WORKERS"], &rows);
    Ok(())
}

async fn cp(client: &HoardClient, source: &HoardPath, destination: &std::path::Path) -> anyhow::Result<()> {
    let destination = if destination.is_dir() {
        destination.join(source.file_name())
    } else {
        destination.to_path_buf()
    };
    let file_name = destination
        .file_name()
        .with_context(|| format!("destination {} has no file name", destination.display()))?
        .to_string_lossy()
        .to_string();
    // Written beside the destination and renamed: an interrupted copy never looks complete.
    let temp = destination.with_file_name(format!(".{file_name}.hoard-partial.{}", std::process::id()));
    let result = async {
        let mut file = tokio::fs::File::create(&temp)
            .await
            .with_context(|| format!("cannot create {}", temp.display()))?;
        let bytes = client.read_to(source, None, &mut file).await?;
        file.sync_all()
            .await
            .with_context(|| format!("cannot sync {}", temp.display()))?;
        tokio::fs::rename(&temp, &destination)
            .await
            .with_context(|| format!("cannot rename {} to {}", temp.display(), destination.display()))?;
        anyhow::Ok(bytes)
    }
    .await;
    match result {
        Ok(bytes) => {
            eprintln!("copied {source} to {} ({})", destination.display(), human_bytes(bytes));
            Ok(())
        }
        Err(err) => {
            let _ = tokio::fs::remove_file(&temp).await;
            Err(err)
        }
    }
}
