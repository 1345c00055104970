//! Keeping replica counts at target (docs/replicas.md#repair): the coordinator holding the
//! singleton duties submits a `repair` job for the path of every rule marked `maintain`, every
//! `hoard.coordinator.replica.repair.interval`, and as soon as the set of ONLINE workers or the
//! maintained rules change.
//! A repair is an ordinary job (in `hoard job list`, resumable, one active per path, so repairs
//! never pile up): it loads the copies each file's replicas lack, then frees the copies on
//! workers that are not among its replicas. Rate: at most one active repair per rule, each
//! with the scheduler's usual batching and per-worker task limit.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hoard_common::replica::ReplicaRule;
use hoard_meta::jobs::{JobOptions, JobType};
use hoard_meta::now_millis;

use super::{worker_key, JobContext, OwnerLiveness};

/// How often the ONLINE workers are compared with the last repair's.
const MEMBERSHIP_CHECK: Duration = Duration::from_secs(2);

pub(super) async fn repair_loop(ctx: &JobContext, liveness: &dyn OwnerLiveness) {
    let interval = ctx.config.repair_interval;
    if interval.is_zero() {
        return;
    }
    let mut last_repair: Option<Instant> = None;
    let mut last_workers: Option<BTreeSet<String>> = None;
    let mut last_maintained: Option<Vec<ReplicaRule>> = None;
    loop {
        tokio::time::sleep(MEMBERSHIP_CHECK.min(interval)).await;
        if !liveness.holds_singleton().await {
            last_workers = None;
            last_maintained = None;
            continue;
        }
        let rules = match ctx.cluster.replica_rules().await {
            Ok(rules) => rules.listed().rules,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the replica rules to repair");
                continue;
            }
        };
        let maintained: Vec<ReplicaRule> = rules.iter().filter(|rule| rule.maintain).cloned().collect();
        if maintained.is_empty() {
            // Nothing to keep: no membership read (on STATIC membership it asks every worker),
            // and the first rule marked maintain is a change.
            last_workers = None;
            last_maintained = Some(maintained);
            continue;
        }
        let Ok(view) = ctx.cluster.view().await else { continue };
        let workers: BTreeSet<String> = view.nodes.iter().filter(|node| node.online).map(worker_key).collect();
        // Due by the interval, or at once when the ONLINE workers or the maintained rules
        // (a rule marked maintain, or its count changed) are not what the last repair saw.
        let due = last_repair.is_none_or(|at| at.elapsed() >= interval);
        let workers_changed = last_workers.as_ref().is_some_and(|last| *last != workers);
        let rules_changed = last_maintained.as_ref().is_some_and(|last| *last != maintained);
        if !due && !workers_changed && !rules_changed {
            continue;
        }
        for rule in &maintained {
            let options = JobOptions {
                replica_rules: Some(rules.clone()),
                skip_if_exists: true,
                ..JobOptions::default()
            };
            match ctx
                .store
                .submit(JobType::Repair, &rule.path, options, now_millis())
                .await
            {
                Ok((job, true)) => tracing::info!(
                    job_id = %job.job_id,
                    path = %rule.path,
                    workers_changed,
                    rules_changed,
                    "repair job submitted"
                ),
                Ok((_, false)) => {}
                Err(err) => tracing::warn!(path = %rule.path, error = %err, "cannot submit a repair job"),
            }
        }
        last_repair = Some(Instant::now());
        last_workers = Some(workers);
        last_maintained = Some(maintained);
    }
}
