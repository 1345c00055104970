//! `--verify`: after a load, check that every file is cached whole on each of its replicas in
//! every cluster (a second listing; `POST /api/v1/tasks/check` per worker batch).

use std::collections::HashMap;
use std::sync::Arc;

use hoard_client::ClusterView;
use hoard_common::api::tasks::{self, CheckTask};
use hoard_common::HoardPath;
use hoard_meta::jobs::JobRecord;

use super::counts::ReplicaCounts;
use super::lister::FileLister;
use super::JobContext;

/// `Ok` when every file is whole where it belongs; otherwise how many are not, with an example.
pub async fn verify(ctx: &Arc<JobContext>, record: &JobRecord, view: &ClusterView) -> Result<(), String> {
    let root = HoardPath::parse(&record.path).map_err(|err| err.to_string())?;
    let mut lister = FileLister::open(&ctx.mounts, &root)
        .await
        .map_err(|err| format!("verify: cannot list {}: {err}", record.path))?;
    let batch_size = record.options.batch_size.unwrap_or(ctx.config.batch_size).max(1) as usize;
    let addresses = super::worker_addresses(view);
    let counts = ReplicaCounts::of(&record.options);
    let mut batches: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    let mut missing = 0u64;
    let mut example: Option<String> = None;
    let mut note = |path: &str, why: String, missing: &mut u64| {
        *missing += 1;
        example.get_or_insert_with(|| format!("{path}: {why}"));
    };
    loop {
        let next = lister.next().await;
        let done = next.is_none();
        match next {
            Some(Ok(status)) => {
                let placement = counts.placement(view, &status.path);
                if placement.shortfall() > 0 {
                    note(
                        status.path.as_str(),
                        "fewer ONLINE workers than replicas".into(),
                        &mut missing,
                    );
                }
                for node in placement.replicas() {
                    let key = super::worker_key(node);
                    batches
                        .entry(key)
                        .or_default()
                        .push((status.path.as_str().to_string(), status.length));
                }
            }
            Some(Err(err)) => return Err(format!("verify: cannot list {}: {err}", record.path)),
            None => {}
        }
        let full: Vec<String> = batches
            .iter()
            .filter(|(_, batch)| done || batch.len() >= batch_size)
            .map(|(worker, _)| worker.clone())
            .collect();
        for worker in full {
            let Some(batch) = batches.remove(&worker) else { continue };
            if batch.is_empty() {
                continue;
            }
            let Some(address) = addresses.get(&worker) else {
                for (path, _) in &batch {
                    note(path, format!("worker {worker} is gone"), &mut missing);
                }
                continue;
            };
            match check(ctx, address, &batch).await {
                Ok(results) => {
                    for ((path, length), result) in batch.iter().zip(results) {
                        if !result.ok || result.cached_bytes < *length {
                            let why = result.error.clone().unwrap_or_else(|| {
                                format!("{} of {length} bytes cached on {worker}", result.cached_bytes)
                            });
                            note(path, why, &mut missing);
                        }
                    }
                }
                Err(reason) => {
                    for (path, _) in &batch {
                        note(path, reason.clone(), &mut missing);
                    }
                }
            }
        }
        if done {
            break;
        }
    }
    match example {
        None => Ok(()),
        Some(example) => Err(format!(
            "verify: {missing} file replica(s) are not cached whole (first: {example})"
        )),
    }
}

async fn check(
    ctx: &JobContext,
    address: &str,
    batch: &[(String, u64)],
) -> Result<Vec<hoard_common::api::tasks::FileResult>, String> {
    let task = CheckTask {
        paths: batch.iter().map(|(path, _)| path.clone()).collect(),
    };
    let body = serde_json::to_vec(&task).map_err(|err| err.to_string())?;
    let results = super::dispatch::post_task(ctx, address, tasks::CHECK_ROUTE, body, super::dispatch::TASK_TIMEOUT)
        .await?
        .results;
    if results.len() != batch.len() {
        return Err(format!(
            "{address} answered {} results for {} files",
            results.len(),
            batch.len()
        ));
    }
    Ok(results)
}
