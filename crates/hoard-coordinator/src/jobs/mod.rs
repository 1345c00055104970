//! The job scheduler: polls the store for waiting jobs (with jitter), claims them with a
//! compare-and-set, runs each claimed job ([`runner`]), moves RUNNING jobs of dead owners back
//! to WAITING, and deletes finished jobs past their retention.

mod counts;
mod dispatch;
pub(crate) mod lister;
pub mod plan;
mod reconcile;
mod repair;
mod runner;
mod verify;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hoard_client::ClusterView;
use hoard_common::api::coordinator::{FailedFileView, JobOptionsView, JobView, ReplicaShortfall};
use hoard_config::{JobConfig, UserConfig};
use hoard_meta::jobs::{JobRecord, JobState, JobStore};
use hoard_meta::now_millis;
use hoard_ufs::MountTable;
use tokio::sync::Mutex;

use crate::metrics::{state_name, CoordinatorMetrics};

/// Jobs one coordinator runs at once; more wait in the queue (or go to other coordinators).
pub const MAX_RUNNING_JOBS: usize = 64;

/// Claim transactions one poll has in flight at once.
const CLAIM_CONCURRENCY: usize = 16;

/// Which waiting jobs to try to claim, in order, at most `room`: first this coordinator's
/// share of the queue's head (a job id hashed onto the sorted live coordinators), oldest
/// first, then the others' share from the back (stealing where the others' owners are
/// least likely to be). Several coordinators reading the same head thus mostly claim
/// different jobs instead of racing for the same ones; every job is still anyone's to claim.
pub fn claim_order(waiting: &[String], me: &str, live: &[String], room: usize) -> Vec<String> {
    let mut peers: Vec<&str> = live.iter().map(String::as_str).chain([me]).collect();
    peers.sort_unstable();
    peers.dedup();
    let share = peers.len() as u64;
    let mine_index = peers.iter().position(|peer| *peer == me).unwrap_or(0) as u64;
    let is_mine = |job_id: &str| xxhash_rust::xxh3::xxh3_64(job_id.as_bytes()) % share == mine_index;
    let (mine, others): (Vec<&String>, Vec<&String>) = waiting.iter().partition(|job_id| is_mine(job_id));
    mine.into_iter()
        .chain(others.into_iter().rev())
        .take(room)
        .cloned()
        .collect()
}

/// What one poll did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollOutcome {
    pub claimed: usize,
    /// No room for another job: the next poll waits for one to end.
    pub full: bool,
}

/// Where a job gets the current ring from.
#[async_trait::async_trait]
pub trait ClusterSource: Send + Sync {
    /// The ring, possibly shared with other jobs for a moment.
    async fn view(&self) -> Result<Arc<ClusterView>, String>;
    /// The ring as membership says now (after a worker could not be reached).
    async fn fresh_view(&self) -> Result<Arc<ClusterView>, String>;
    /// The replica rules in effect.
    async fn replica_rules(&self) -> Result<hoard_common::replica::ReplicaRuleSet, String>;
}

/// Who else may own jobs: the scheduler reclaims RUNNING jobs of owners that are not alive.
#[async_trait::async_trait]
pub trait OwnerLiveness: Send + Sync {
    /// The ids of the coordinators alive now (this one included), or `None` when unknown (a
    /// reclaim then waits).
    async fn live_owners(&self) -> Option<Vec<String>>;
    /// Whether this coordinator holds the singleton duties (cleanup) now.
    async fn holds_singleton(&self) -> bool;
}

/// Task slots per worker, shared by every job this coordinator runs:
/// `hoard.coordinator.scheduler.max.tasks.per.worker` is per coordinator, not per job.
pub struct WorkerSlots {
    limit: u32,
    in_flight: parking_lot::Mutex<HashMap<String, u32>>,
    metrics: CoordinatorMetrics,
}

impl WorkerSlots {
    pub fn new(limit: u32, metrics: CoordinatorMetrics) -> Arc<WorkerSlots> {
        Arc::new(WorkerSlots {
            limit: limit.max(1),
            in_flight: parking_lot::Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// A slot on `worker` if it has one free; released when the guard drops (a task that ends,
    /// fails or is aborted gives its slot back).
    pub fn try_take(self: &Arc<Self>, worker: &str) -> Option<SlotGuard> {
        let mut in_flight = self.in_flight.lock();
        let count = in_flight.entry(worker.to_string()).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        self.metrics.task_started(worker);
        Some(SlotGuard {
            slots: Arc::clone(self),
            worker: worker.to_string(),
        })
    }

    pub fn in_flight(&self, worker: &str) -> u32 {
        self.in_flight.lock().get(worker).copied().unwrap_or(0)
    }
}

pub struct SlotGuard {
    slots: Arc<WorkerSlots>,
    worker: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut in_flight = self.slots.in_flight.lock();
        if let Some(count) = in_flight.get_mut(&self.worker) {
            *count = count.saturating_sub(1);
        }
        self.slots.metrics.task_finished(&self.worker);
    }
}

/// What every running job shares.
pub struct JobContext {
    pub store: Arc<JobStore>,
    pub mounts: Arc<MountTable>,
    pub http: reqwest::Client,
    pub config: JobConfig,
    pub user: UserConfig,
    pub coordinator_id: String,
    pub admin_token: Option<String>,
    /// Presented with every task: workers of COORDINATOR membership require it.
    pub cluster_secret: Option<hoard_common::secret::ClusterSecret>,
    pub cluster: Arc<dyn ClusterSource>,
    pub metrics: CoordinatorMetrics,
    pub slots: Arc<WorkerSlots>,
    /// How often RUNNING jobs of dead coordinators are looked for (a quarter of the lease TTL).
    pub reclaim_interval: Duration,
    /// How long a job runs without confirming in the store that it still owns the job before
    /// it must confirm again (half the coordinator's lease TTL, at least one scheduler interval).
    pub ownership_window: Duration,
    /// The coordinator's etcd lease (none with the embedded store, where it is the only one):
    /// another coordinator can reclaim this one's jobs only once the lease has lapsed.
    pub lease: Option<hoard_meta::SharedDeadline>,
}

pub struct Scheduler {
    ctx: Arc<JobContext>,
    liveness: Arc<dyn OwnerLiveness>,
    running: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Signalled whenever a job this coordinator ran ends (a full scheduler polls again).
    job_ended: Arc<tokio::sync::Notify>,
    /// The live coordinators as last seen (by the reclaim check), to share the queue's head.
    peers: parking_lot::Mutex<Vec<String>>,
    /// The live coordinators at the last full reclaim check, and when it was.
    reclaim_state: Mutex<Option<(std::collections::BTreeSet<String>, std::time::Instant)>>,
}

/// A full reclaim check (listing every job) runs at least this many reclaim intervals apart
/// when no coordinator died meanwhile.
const FULL_RECLAIM_EVERY: u32 = 20;

impl Scheduler {
    pub fn new(ctx: Arc<JobContext>, liveness: Arc<dyn OwnerLiveness>) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            ctx,
            liveness,
            running: Mutex::new(HashMap::new()),
            job_ended: Arc::new(tokio::sync::Notify::new()),
            peers: parking_lot::Mutex::new(Vec::new()),
            reclaim_state: Mutex::new(None),
        })
    }

    pub fn store(&self) -> &Arc<JobStore> {
        &self.ctx.store
    }

    pub fn context(&self) -> &Arc<JobContext> {
        &self.ctx
    }

    /// Starts the polling and cleanup loops; they end when the returned handles are aborted.
    pub fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let poller = Arc::clone(self);
        let cleaner = Arc::clone(self);
        let repairer = Arc::clone(self);
        vec![
            tokio::spawn(async move { poller.poll_loop().await }),
            tokio::spawn(async move { cleaner.cleanup_loop().await }),
            tokio::spawn(async move { repair::repair_loop(&repairer.ctx, repairer.liveness.as_ref()).await }),
        ]
    }

    async fn poll_loop(&self) {
        // Reclaim checks at a quarter of the lease TTL (a dead owner's jobs are back in the
        // queue within TTL + TTL/4), not on every poll. An idle queue is polled every interval,
        // with up to 20% jitter; a poll that claimed jobs is followed by another at once (the
        // queue may hold more), and a full scheduler polls when one of its jobs ends.
        let mut next_reclaim = tokio::time::Instant::now();
        let mut next_poll = tokio::time::Instant::now();
        let mut full = false;
        loop {
            let now = tokio::time::Instant::now();
            if now >= next_reclaim {
                next_reclaim = now + self.ctx.reclaim_interval;
                if self.reclaim_stale().await > 0 {
                    // Claim what was just reclaimed now rather than at the next poll.
                    next_poll = now;
                }
            }
            if tokio::time::Instant::now() >= next_poll {
                let outcome = self.poll_once().await;
                full = outcome.full;
                let interval = self.ctx.config.poll_interval;
                next_poll = if outcome.claimed > 0 && !full {
                    tokio::time::Instant::now()
                } else {
                    tokio::time::Instant::now() + interval + interval.mul_f64(rand::random::<f64>() * 0.2)
                };
            }
            tokio::select! {
                () = tokio::time::sleep_until(next_poll.min(next_reclaim)) => {}
                () = self.job_ended.notified(), if full => next_poll = tokio::time::Instant::now(),
            }
        }
    }

    /// Claims waiting jobs while there is room and starts them: reads the queue's head, picks
    /// this coordinator's share first ([`claim_order`]), reads those records in one request and
    /// claims them with concurrent compare-and-set transactions.
    pub async fn poll_once(&self) -> PollOutcome {
        self.ctx.metrics.poll.inc();
        let room = {
            let mut running = self.running.lock().await;
            running.retain(|_, handle| !handle.is_finished());
            MAX_RUNNING_JOBS.saturating_sub(running.len())
        };
        if room == 0 {
            return PollOutcome { claimed: 0, full: true };
        }
        let peers = self.peers.lock().clone();
        let head = room.saturating_mul(peers.len().max(1));
        let waiting = match self.ctx.store.waiting(head).await {
            Ok(waiting) => waiting,
            Err(err) => {
                tracing::warn!(error = %err, "cannot poll the job queue");
                return PollOutcome {
                    claimed: 0,
                    full: false,
                };
            }
        };
        if waiting.is_empty() {
            return PollOutcome {
                claimed: 0,
                full: false,
            };
        }
        let chosen = claim_order(&waiting, &self.ctx.coordinator_id, &peers, room);
        let records = match self.ctx.store.records(&chosen).await {
            Ok(records) => records,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the waiting jobs");
                return PollOutcome {
                    claimed: 0,
                    full: false,
                };
            }
        };
        let store = &self.ctx.store;
        let owner = self.ctx.coordinator_id.as_str();
        let mut claims = futures::stream::iter(records)
            .map(|job| async move {
                // Ownership is counted from before the request: the process may stall (SIGSTOP)
                // after etcd committed the claim and before the answer is read.
                let requested_at = std::time::Instant::now();
                let outcome = store.claim_read(&job, owner, now_millis()).await;
                (job.record.job_id, requested_at, outcome)
            })
            .buffer_unordered(CLAIM_CONCURRENCY);
        let mut claimed = 0;
        while let Some((job_id, requested_at, outcome)) = claims.next().await {
            match outcome {
                Ok(Some(job)) => {
                    claimed += 1;
                    self.run_claimed(job_id, job, requested_at).await;
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(job_id, error = %err, "cannot claim a job"),
            }
        }
        PollOutcome {
            claimed,
            full: claimed >= room,
        }
    }

    async fn run_claimed(
        &self,
        job_id: String,
        claimed: hoard_meta::jobs::Versioned<JobRecord>,
        requested_at: std::time::Instant,
    ) {
        self.ctx.metrics.claim.inc();
        let ctx = Arc::clone(&self.ctx);
        let ended = Arc::clone(&self.job_ended);
        let handle = tokio::spawn(async move {
            runner::run(ctx, claimed, requested_at).await;
            ended.notify_one();
        });
        // A job rerun while this coordinator still ran it: the old run must stop.
        if let Some(previous) = self.running.lock().await.insert(job_id, handle) {
            previous.abort();
        }
    }

    /// RUNNING jobs whose owner is not alive go back to WAITING (one transaction each, which
    /// also checks the owner is unchanged); the next claim resumes them from their checkpoint.
    /// Returns how many were reclaimed.
    pub async fn reclaim_stale(&self) -> usize {
        let Some(live) = self.liveness.live_owners().await else {
            return 0;
        };
        *self.peers.lock() = live.clone();
        // Listing every job is the expensive part: do it at start, when a coordinator that was
        // alive at the last check is gone, and otherwise only now and then (a safety net).
        let live_set: std::collections::BTreeSet<String> = live.iter().cloned().collect();
        {
            let mut state = self.reclaim_state.lock().await;
            let full_due = match state.as_ref() {
                None => true,
                Some((previous, at)) => {
                    previous.iter().any(|owner| !live_set.contains(owner))
                        || at.elapsed() >= self.ctx.reclaim_interval * FULL_RECLAIM_EVERY
                }
            };
            if !full_due {
                *state = state
                    .take()
                    .map(|(previous, at)| (previous.union(&live_set).cloned().collect(), at));
                return 0;
            }
            *state = Some((live_set, std::time::Instant::now()));
        }
        let jobs = match self.ctx.store.list().await {
            Ok(jobs) => jobs,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list jobs to reclaim");
                return 0;
            }
        };
        let mut reclaimed = 0;
        let mine: Vec<String> = self.running.lock().await.keys().cloned().collect();
        for job in jobs.into_iter().filter(|job| job.state == JobState::Running) {
            let Some(owner) = job.owner.clone() else { continue };
            let orphan_of_mine = owner == self.ctx.coordinator_id && !mine.contains(&job.job_id);
            if live.contains(&owner) && !orphan_of_mine {
                continue;
            }
            match self.ctx.store.reclaim(&job.job_id, &owner, now_millis()).await {
                Ok(true) => {
                    reclaimed += 1;
                    self.ctx.metrics.reclaim.inc();
                    tracing::info!(job_id = %job.job_id, dead_owner = %owner, "reclaimed a job of a coordinator that is gone");
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(job_id = %job.job_id, error = %err, "cannot reclaim"),
            }
        }
        reclaimed
    }

    async fn cleanup_loop(&self) {
        loop {
            tokio::time::sleep(self.ctx.config.cleanup_interval).await;
            // One coordinator at a time (the singleton holder) deletes expired jobs.
            if !self.liveness.holds_singleton().await {
                continue;
            }
            match self.ctx.store.cleanup(self.ctx.config.retention, now_millis()).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "deleted finished jobs past their retention"),
                Err(err) => tracing::warn!(error = %err, "job cleanup failed"),
            }
        }
    }

    /// Stops every job this coordinator runs (the process is stopping); they stay RUNNING in
    /// the store and are reclaimed and resumed by the next coordinator.
    pub async fn shutdown(&self) {
        for (_, handle) in self.running.lock().await.drain() {
            handle.abort();
        }
    }
}

/// The wire form of a job.
pub fn job_view(record: &JobRecord, now_ms: u64) -> JobView {
    let progress = &record.progress;
    JobView {
        job_id: record.job_id.clone(),
        job_type: record.job_type.as_str().to_string(),
        path: record.path.clone(),
        state: state_name(record.state).to_string(),
        owner: record.owner.clone(),
        owner_heartbeat_ms: record.owner_heartbeat_ms,
        options: JobOptionsView {
            replicas: record.options.replicas.map(i64::from),
            batch_size: record.options.batch_size.map(i64::from),
            metadata_only: record.options.metadata_only,
            verify: record.options.verify,
            skip_if_exists: record.options.skip_if_exists,
        },
        created_ms: record.created_ms,
        started_ms: record.started_ms,
        ended_ms: record.ended_ms,
        runs: record.runs,
        stop_requested: record.stop_requested,
        error: record.error.clone(),
        files_listed: progress.files_listed,
        files_processed: progress.files_processed,
        files_skipped: progress.files_skipped,
        files_failed: progress.files_failed,
        bytes_processed: progress.bytes_processed,
        retried: progress.retried,
        listing_done: progress.listing_done,
        verified: progress.verified,
        files_rechecked: progress.rechecked,
        files_repaired: progress.repaired,
        replica_shortfall: (progress.replica_shortfall_files > 0).then_some(ReplicaShortfall {
            files: progress.replica_shortfall_files,
            missing_copies: progress.replica_shortfall_copies,
        }),
        failed_files: record
            .failed_files
            .iter()
            .map(|failed| FailedFileView {
                path: failed.path.clone(),
                reason: failed.reason.clone(),
            })
            .collect(),
        throughput_bytes_per_sec: record.throughput_bytes_per_sec(now_ms) as f64,
        elapsed_ms: record.elapsed_ms(now_ms),
    }
}

/// Jobs per state, for the `hoard_coordinator_jobs` gauge.
pub fn count_states(jobs: &[JobRecord]) -> Vec<(JobState, usize)> {
    let mut counts: Vec<(JobState, usize)> = Vec::new();
    for job in jobs {
        match counts.iter_mut().find(|(state, _)| *state == job.state) {
            Some((_, count)) => *count += 1,
            None => counts.push((job.state, 1)),
        }
    }
    counts
}

/// How a job names a worker: its id (its `host:port` under STATIC membership).
pub fn worker_key(node: &hoard_client::NodeStatus) -> String {
    node.worker_id.clone().unwrap_or_else(|| node.ring_identity.clone())
}

/// Worker key -> `host:port`, for the ONLINE nodes of the view (an OFFLINE worker gets no
/// tasks).
pub fn worker_addresses(view: &ClusterView) -> HashMap<String, String> {
    view.nodes
        .iter()
        .filter(|node| node.online)
        .map(|node| (worker_key(node), node.address.clone()))
        .collect()
}

/// Idle time between checks for a job's end when waiting on it.
pub const WAIT_POLL: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("job-{i:04}")).collect()
    }

    #[test]
    fn coordinators_take_disjoint_shares_of_the_head_first() {
        let waiting = ids(300);
        let live: Vec<String> = ["c-b", "c-a", "c-c"].iter().map(|id| id.to_string()).collect();
        let mut covered = Vec::new();
        for me in &live {
            let order = claim_order(&waiting, me, &live, waiting.len());
            // Every waiting job is in every coordinator's order exactly once.
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, waiting);
            // Its share (sorted peers c-a, c-b, c-c) comes first, oldest first.
            let index = ["c-a", "c-b", "c-c"].iter().position(|peer| peer == me).unwrap() as u64;
            let share: Vec<String> = waiting
                .iter()
                .filter(|id| xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % 3 == index)
                .cloned()
                .collect();
            assert!(
                share.len() > 60 && share.len() < 140,
                "share of {} out of 300",
                share.len()
            );
            assert_eq!(order[..share.len()], share[..]);
            covered.extend(share);
        }
        covered.sort();
        assert_eq!(covered, waiting, "the shares partition the head");
    }

    #[test]
    fn room_bounds_the_order_and_others_are_stolen_from_the_back() {
        let waiting = ids(10);
        let live = vec!["c-a".to_string(), "c-b".to_string()];
        let order = claim_order(&waiting, "c-a", &live, 4);
        assert_eq!(order.len(), 4);
        let full = claim_order(&waiting, "c-a", &live, 10);
        let mine = full
            .iter()
            .take_while(|id| xxhash_rust::xxh3::xxh3_64(id.as_bytes()).is_multiple_of(2))
            .count();
        let stolen = &full[mine..];
        assert!(stolen.windows(2).all(|pair| pair[0] > pair[1]), "{stolen:?}");
        // Alone (or not yet knowing the others), a coordinator takes the queue in order.
        assert_eq!(claim_order(&waiting, "c-a", &[], 10), waiting);
        assert_eq!(claim_order(&waiting, "c-a", &["c-a".to_string()], 3), waiting[..3]);
    }
}
