//! Runs one claimed job: lists its files as a stream, batches them into per-worker tasks (the
//! first `replicas` ring candidates of each file), keeps at most `max.tasks.per.worker` tasks
//! in flight per worker, retries failed files on the ring's next candidates with backoff,
//! checkpoints progress every scheduler interval, checks at the end of a load that the files
//! in doubt are whole on their owners ([`super::reconcile`]), and finishes the job in the store.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoard_client::ClusterView;
use hoard_common::api::tasks::{TaskFile, NOT_CACHED};
use hoard_common::HoardPath;
use hoard_config::FinalCheck;
use hoard_meta::jobs::{JobError, JobProgress, JobRecord, JobState, JobType, Versioned};
use hoard_meta::{now_millis, SharedDeadline};
use tokio::task::JoinSet;

use super::counts::ReplicaCounts;
use super::dispatch::{backoff, describe_ufs, is_permanent, load_kept, send_task, Ownership, Sent, TaskKind};
use super::lister::FileLister;
use super::plan::{self, partitions, Batcher, Counters, Tracker, Unit, UnitOutcome};
use super::reconcile::{self, Audit, Doubt};
use super::JobContext;

/// Files listed ahead of what is sent, per worker and task slot, so listing never runs away
/// from dispatching (memory stays flat in the number of files).
const LIST_AHEAD_TASKS: usize = 2;
/// Files resolved above an unresolved one are kept until the watermark passes them: at most
/// this many times the list-ahead window (then listing waits for the slow task).
const UNFOLDED_WINDOWS: usize = 4;
/// A job with no ONLINE worker waits this long for one before it fails.
const NO_WORKERS_LIMIT: Duration = Duration::from_secs(60);
/// A coordinator that cannot write its checkpoint for this long gives the job up: another
/// coordinator may have reclaimed it (an etcd lease is 10s).
const STORE_LOSS_LIMIT: Duration = Duration::from_secs(30);
/// Attempts to record a job's end before leaving it to the orphan reclaim.
const FINISH_ATTEMPTS: u32 = 5;

struct Run {
    ctx: Arc<JobContext>,
    record: JobRecord,
    version: u64,
    tracker: Tracker,
    batcher: Batcher,
    view: Arc<ClusterView>,
    /// ONLINE workers' addresses.
    addresses: HashMap<String, String>,
    retries: VecDeque<(Instant, String, Unit)>,
    sent: JoinSet<Sent>,
    /// The units of each task in flight (a task that panics or is cancelled gives them back).
    in_flight: HashMap<u64, (String, Vec<Unit>)>,
    task_ids: HashMap<tokio::task::Id, u64>,
    next_task_id: u64,
    stopping: bool,
    taken_away: bool,
    ownership: Ownership,
    no_workers_since: Option<Instant>,
    /// Loads: what puts files in doubt, for the final check.
    audit: Audit,
    /// During a final check pass: which files it sends again; `tracker` is then the pass's,
    /// and the job's own is kept here.
    doubt: Option<Arc<Doubt>>,
    job_tracker: Option<Tracker>,
    /// Files rechecked and repaired by completed final check passes (all runs).
    rechecked: (u64, u64),
    /// Copies per file per cluster.
    counts: Arc<ReplicaCounts>,
    /// A repair's second pass: freeing the copies outside each file's replicas.
    trimming: bool,
}

/// `claim_requested_at`: when the claim was sent, the start of this run's ownership window.
pub async fn run(ctx: Arc<JobContext>, claimed: Versioned<JobRecord>, claim_requested_at: Instant) {
    let job_id = claimed.record.job_id.clone();
    let progress = &claimed.record.progress;
    let counters = Counters {
        processed: progress.files_processed,
        skipped: progress.files_skipped,
        failed: progress.files_failed,
        bytes: progress.bytes_processed,
        retried: progress.retried,
        failed_bytes: 0,
        short_files: progress.replica_shortfall_files,
        short_copies: progress.replica_shortfall_copies,
    };
    let counts = Arc::new(ReplicaCounts::of(&claimed.record.options));
    let rechecked = (progress.rechecked, progress.repaired);
    let tracker = Tracker::resume(progress.watermark, counters, claimed.record.failed_files.clone());
    let batch_size = claimed
        .record
        .options
        .batch_size
        .unwrap_or(ctx.config.batch_size)
        .max(1) as usize;
    let view = match ctx.cluster.view().await {
        Ok(view) => view,
        Err(reason) => {
            tracing::warn!(job_id, reason, "no cluster view yet");
            Arc::new(ClusterView::new(Vec::new(), &ctx.user))
        }
    };
    let audit = Audit::resume(&claimed.record.audit, &view);
    let mut run = Run {
        ctx: Arc::clone(&ctx),
        record: claimed.record,
        version: claimed.version,
        tracker,
        batcher: Batcher::new(batch_size),
        addresses: HashMap::new(),
        view,
        retries: VecDeque::new(),
        sent: JoinSet::new(),
        in_flight: HashMap::new(),
        task_ids: HashMap::new(),
        next_task_id: 0,
        stopping: false,
        taken_away: false,
        ownership: Ownership {
            checkpointed: SharedDeadline::new(claim_requested_at, ctx.ownership_window),
            lease: ctx.lease.clone(),
        },
        no_workers_since: None,
        audit,
        doubt: None,
        job_tracker: None,
        rechecked,
        counts,
        trimming: false,
    };
    run.refresh_addresses();
    tracing::info!(job_id, path = %run.record.path, resume_at = run.tracker.watermark(), "job running");
    let outcome = run.execute().await;
    if run.taken_away {
        tracing::warn!(
            job_id,
            "job was taken over (reclaimed or rerun); this coordinator stops working on it"
        );
        return;
    }
    run.finish(outcome).await;
}

impl Run {
    fn refresh_addresses(&mut self) {
        self.addresses = super::worker_addresses(&self.view);
    }

    /// Loads every file, checks what is in doubt, verifies when asked. `Err` is the job's
    /// failure.
    async fn execute(&mut self) -> Result<(), String> {
        // Resume: the files below the watermark were resolved by an earlier run.
        let listed = self.pass(self.tracker.watermark()).await;
        self.record.progress.listing_done = matches!(listed, Ok(true));
        listed?;
        if self.stopping || self.taken_away {
            return Ok(());
        }
        if self.audited() && self.ctx.config.final_check != FinalCheck::None {
            if self.ctx.config.final_check == FinalCheck::All {
                self.audit.doubt_everything();
            }
            self.final_check().await?;
            if self.stopping || self.taken_away {
                return Ok(());
            }
        }
        if self.record.job_type != JobType::Free && self.record.options.verify && self.tracker.counters().failed == 0 {
            let verified = super::verify::verify(&self.ctx, &self.record, &self.view).await;
            self.record.progress.verified = Some(verified.is_ok());
            verified?;
        }
        if self.record.job_type == JobType::Repair && !self.stopping && !self.taken_away {
            self.trim().await?;
        }
        Ok(())
    }

    /// What this job's tasks do now: a repair loads, then (its second pass) frees.
    fn task(&self) -> TaskKind {
        match self.record.job_type {
            JobType::Load => TaskKind::Load,
            JobType::Free => TaskKind::Free,
            JobType::Repair if self.trimming => TaskKind::Free,
            JobType::Repair => TaskKind::Load,
        }
    }

    /// A repair's second pass: frees the copies on ONLINE workers that are not among each
    /// file's replicas (after the load pass made the replicas whole). It lists the path again
    /// with a tracker of its own; a copy it could not free fails the job, named in
    /// `failedFiles`. A resumed run does it again whole (freeing twice frees nothing more).
    async fn trim(&mut self) -> Result<(), String> {
        self.refresh_view().await;
        self.trimming = true;
        let (outcome, _) = self.extra_pass("freeing the copy outside its replicas").await;
        self.trimming = false;
        outcome.map(|_| ())
    }

    /// A pass over the job's files after its own (a final check's, a repair's trim), with a
    /// tracker of its own meanwhile: its failures go into the job's counts and failed files,
    /// named with `what`, when it completes. Returns the pass's outcome and its tracker.
    async fn extra_pass(&mut self, what: &str) -> (Result<bool, String>, Tracker) {
        let fresh = Tracker::resume(0, Counters::default(), Vec::new());
        let job_tracker = std::mem::replace(&mut self.tracker, fresh);
        self.job_tracker = Some(job_tracker);
        let outcome = self.pass(0).await;
        let job_tracker = self.job_tracker.take();
        debug_assert!(job_tracker.is_some(), "the job's tracker is kept during an extra pass");
        let pass = match job_tracker {
            Some(job_tracker) => std::mem::replace(&mut self.tracker, job_tracker),
            None => Tracker::resume(0, Counters::default(), Vec::new()),
        };
        if outcome.is_ok() && !self.stopping && !self.taken_away {
            self.tracker.take_pass(&pass, what);
        }
        (outcome, pass)
    }

    /// Whether the job keeps an [`Audit`] and checks its files at the end: loads of data.
    fn audited(&self) -> bool {
        self.record.job_type != JobType::Free && !self.record.options.metadata_only
    }

    /// The final check, timed in the log (what it costs a load: `hoard-bench jobs --only check`).
    async fn final_check(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let before = self.rechecked;
        let outcome = self.final_check_passes().await;
        tracing::info!(
            job_id = %self.record.job_id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            rechecked = self.rechecked.0 - before.0,
            repaired = self.rechecked.1 - before.1,
            settled = outcome.is_ok(),
            "final check done"
        );
        outcome
    }

    /// Until nothing is in doubt (at most [`reconcile::MAX_PASSES`] passes): asks the workers
    /// which process they are, then sends the files in doubt to their owners again.
    async fn final_check_passes(&mut self) -> Result<(), String> {
        for pass in 1..=reconcile::MAX_PASSES {
            self.refresh_view().await;
            let unreachable = reconcile::probe(&self.ctx, &self.view, &mut self.audit, pass == 1).await;
            if pass > 1 {
                self.audit.end_check(&self.view, &unreachable);
            }
            if !self.audit.in_doubt() {
                return Ok(());
            }
            // Every failed file must be named to be left out of the check (it is counted
            // already); with more, the job fails anyway.
            if self.tracker.counters().failed > self.tracker.failed_files().len() as u64 {
                return Ok(());
            }
            let skip: HashSet<String> = self.tracker.failed_files().iter().map(|f| f.path.clone()).collect();
            let doubt = self.audit.begin_check(&self.view, Arc::clone(&self.counts), skip);
            tracing::info!(job_id = %self.record.job_id, pass, workers = ?self.audit.doubtful_workers(), "final check: sending the files in doubt to their owners again");
            self.doubt = Some(Arc::new(doubt));
            let (outcome, recheck) = self.extra_pass("final check").await;
            self.doubt = None;
            self.rechecked.0 += recheck.next_index();
            self.rechecked.1 += recheck.counters().processed;
            outcome?;
            if self.stopping || self.taken_away {
                return Ok(());
            }
        }
        self.refresh_view().await;
        let unreachable = reconcile::probe(&self.ctx, &self.view, &mut self.audit, false).await;
        self.audit.end_check(&self.view, &unreachable);
        if !self.audit.in_doubt() {
            return Ok(());
        }
        Err(format!(
            "the final check did not settle after {} passes: worker(s) {} restarted or failed during it, files they own may not be cached",
            reconcile::MAX_PASSES,
            self.audit.doubtful_workers().join(", ")
        ))
    }

    /// Lists, dispatches and collects until every file listed after the first `skip` (in a
    /// final check pass: every file in doubt) is resolved, or the job stops. `Ok(true)`: the
    /// listing reached its end; `Err` is the job's failure.
    async fn pass(&mut self, mut skip: u64) -> Result<bool, String> {
        let root = HoardPath::parse(&self.record.path).map_err(|err| err.to_string())?;
        let mounts = Arc::clone(&self.ctx.mounts);
        let mut lister = FileLister::open(&mounts, &root)
            .await
            .map_err(|err| describe_ufs(&err, &self.record.path))?;
        while skip > 0 {
            match lister.next().await {
                Some(Ok(_)) => skip -= 1,
                Some(Err(err)) => return Err(describe_ufs(&err, &self.record.path)),
                None => break,
            }
        }
        let interval = self.ctx.config.scheduler_interval;
        let mut next_checkpoint = Instant::now() + interval;
        let mut listing_done = false;
        let mut failure: Option<String> = None;
        let mut waiting_file: Option<hoard_ufs::UfsStatus> = None;
        loop {
            // A coordinator that was paused (SIGSTOP, a long GC-like stall, a frozen VM) may
            // have lost the job meanwhile: confirm it still owns it before sending anything.
            if !self.ownership_confirmed() {
                next_checkpoint = Instant::now() + interval;
                self.checkpoint(listing_done).await;
                if self.taken_away {
                    self.sent.abort_all();
                    return Ok(false);
                }
                if !self.ownership_confirmed() {
                    // The store cannot be reached: send nothing until it can.
                    tokio::time::sleep(interval.min(Duration::from_millis(500))).await;
                    continue;
                }
            }
            self.dispatch();
            let has_workers = self.has_workers();
            // A listed file waits here while no worker is ONLINE (an empty tree needs none).
            let list_ahead = !listing_done
                && !self.stopping
                && failure.is_none()
                && (has_workers || waiting_file.is_none())
                && self.batcher.queued_units() < self.batcher_capacity()
                && self.tracker.unfolded() < self.batcher_capacity() * UNFOLDED_WINDOWS;
            if list_ahead {
                let next = match waiting_file.take() {
                    Some(file) => Some(Ok(file)),
                    None => lister.next().await,
                };
                match next {
                    Some(Ok(status)) if self.doubt.as_ref().is_some_and(|doubt| !doubt.covers(&status.path)) => {}
                    Some(Ok(status)) if !has_workers => waiting_file = Some(status),
                    Some(Ok(status)) => self.plan_file(status.path.as_str(), status.length),
                    Some(Err(err)) => {
                        failure = Some(describe_ufs(&err, &self.record.path));
                        listing_done = true;
                    }
                    None => {
                        listing_done = true;
                        self.batcher.flush();
                    }
                }
                if Instant::now() < next_checkpoint {
                    continue;
                }
            }
            if waiting_file.is_some() && !has_workers && !self.stopping && failure.is_none() {
                let since = *self.no_workers_since.get_or_insert_with(Instant::now);
                if since.elapsed() > NO_WORKERS_LIMIT {
                    failure = Some(format!("no worker was ONLINE for {}s", NO_WORKERS_LIMIT.as_secs()));
                }
            } else {
                self.no_workers_since = None;
            }
            if self.stopping || failure.is_some() {
                // Nothing more is sent: what was queued is above the watermark and is redone by
                // a rerun.
                self.batcher.clear();
                self.retries.clear();
                waiting_file = None;
            } else if listing_done || (self.sent.is_empty() && self.batcher.ready_batches() == 0) {
                // The listing ended, or nothing is in flight and nothing is full: send partial
                // batches rather than wait.
                self.batcher.flush();
            }
            self.dispatch();
            let idle =
                self.sent.is_empty() && self.retries.is_empty() && self.batcher.is_empty() && waiting_file.is_none();
            if idle && (listing_done || self.stopping || failure.is_some()) {
                break;
            }
            let wake = self
                .retries
                .iter()
                .map(|(due, _, _)| *due)
                .min()
                .map_or(next_checkpoint, |due| due.min(next_checkpoint));
            tokio::select! {
                joined = self.sent.join_next_with_id(), if !self.sent.is_empty() => {
                    match joined {
                        Some(Ok((_, sent))) => self.collect(sent).await,
                        Some(Err(err)) => self.lost_task(err.id(), err.to_string()),
                        None => {}
                    }
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
            self.requeue_due_retries();
            if Instant::now() >= next_checkpoint {
                next_checkpoint = Instant::now() + interval;
                self.checkpoint(listing_done).await;
                if self.taken_away {
                    self.sent.abort_all();
                    return Ok(false);
                }
            }
        }
        if failure.is_none() && !self.stopping && !self.tracker.all_resolved() {
            failure = Some(format!(
                "internal error: {} listed file(s) were never resolved",
                self.tracker.unfolded()
            ));
        }
        match failure {
            Some(reason) => Err(reason),
            None => Ok(listing_done),
        }
    }

    fn batcher_capacity(&self) -> usize {
        let workers = self.addresses.len().max(1);
        let per_task = self
            .record
            .options
            .batch_size
            .unwrap_or(self.ctx.config.batch_size)
            .max(1) as usize;
        workers * self.ctx.config.max_tasks_per_worker as usize * per_task * LIST_AHEAD_TASKS
    }

    /// Turns one listed file into units on its workers.
    fn plan_file(&mut self, path: &str, length: u64) {
        let Ok(hoard_path) = HoardPath::parse(path) else {
            self.tracker.fail_file(path.to_string(), length, "invalid path".into());
            return;
        };
        let load = self.task() == TaskKind::Load;
        let max_attempts = self.ctx.config.file_max_attempts as usize;
        // A metadata refresh must reach every copy, also one on a worker that is no longer among
        // the file's replicas (after a membership change): no copy may serve the old version.
        let reach = if self.trimming {
            plan::Reach::Outside
        } else if load && !self.record.options.metadata_only {
            plan::Reach::Replicas
        } else {
            plan::Reach::Everywhere
        };
        let (targets, shortfall) = plan::targets(&self.view, &hoard_path, reach, &self.counts, max_attempts);
        if targets.is_empty() && reach == plan::Reach::Outside {
            // Every ONLINE worker is one of its replicas: no copy to free.
            self.tracker.add_file(path.to_string(), length, 0);
            return;
        }
        if targets.is_empty() {
            self.tracker
                .fail_file(path.to_string(), length, "no workers are ONLINE".into());
            return;
        }
        let ranges = if load && !self.record.options.metadata_only {
            partitions(length, self.ctx.config.partition_size)
        } else {
            vec![(None, None)]
        };
        let units = u32::try_from(targets.len() * ranges.len()).unwrap_or(u32::MAX);
        let index = self.tracker.add_file(path.to_string(), length, units);
        if shortfall > 0 {
            self.tracker.note_shortfall(index, shortfall);
        }
        for (worker, unit) in plan::file_units(index, path, &targets, &ranges, !load) {
            let alone = unit.file.offset.is_some();
            self.batcher.push(&worker, unit, alone);
        }
    }

    fn ownership_confirmed(&self) -> bool {
        self.ownership.confirmed()
    }

    /// When the last successful checkpoint (or the claim) was sent: where the ownership
    /// window it opened starts.
    fn last_checkpoint(&self) -> Instant {
        let until = self.ownership.checkpointed.until();
        until.checked_sub(self.ctx.ownership_window).unwrap_or(until)
    }

    fn has_workers(&self) -> bool {
        match self.task() {
            TaskKind::Load => self.view.ring_size() > 0 && !self.addresses.is_empty(),
            TaskKind::Free => !self.addresses.is_empty(),
        }
    }

    /// Sends ready batches to workers with a free slot (slots are per coordinator, shared by
    /// every job it runs). Batches for a worker that is no longer ONLINE go to their units'
    /// next candidates.
    fn dispatch(&mut self) {
        // Checked here, with no await before the tasks are spawned, as well as at the top of
        // the loop: a pause during an await between the two (listing, say) must not be
        // followed by a send before the next checkpoint.
        if !self.ownership_confirmed() {
            return;
        }
        for worker in self.batcher.queued_workers() {
            if !self.addresses.contains_key(&worker) {
                let units = self.batcher.drain_worker(&worker);
                for unit in units {
                    self.reroute(unit, &worker);
                }
            }
        }
        loop {
            let slots = Arc::clone(&self.ctx.slots);
            let mut slot = None;
            let Some((worker, units)) = self.batcher.take_ready(|worker| {
                slot = slots.try_take(worker);
                slot.is_some()
            }) else {
                return;
            };
            let Some(slot) = slot else { return };
            self.next_task_id += 1;
            let task_id = self.next_task_id;
            let Some(address) = self.addresses.get(&worker).cloned() else {
                drop(slot);
                for unit in units {
                    self.reroute(unit, &worker);
                }
                continue;
            };
            let ctx = Arc::clone(&self.ctx);
            let job_id = self.record.job_id.clone();
            let kind = self.task();
            let mut options = self.record.options.clone();
            // A final check pass loads only what is missing, and says which files were whole.
            options.skip_if_exists |= self.doubt.is_some();
            let files: Vec<TaskFile> = units.iter().map(|unit| unit.file.clone()).collect();
            let run = self.record.runs;
            let ownership = self.ownership.clone();
            self.in_flight.insert(task_id, (worker.clone(), units));
            let handle = self.sent.spawn(async move {
                let _slot = slot;
                if !ownership.confirmed() {
                    return Sent { task_id, result: None };
                }
                // `confirmed_ms`: when ownership was last confirmed, which a stalled process
                // may log long after.
                tracing::debug!(job_id = %job_id, run, task_id, worker = %worker, files = files.len(), confirmed_ms = now_millis(), "task sent");
                let result = send_task(&ctx, &address, kind, &job_id, task_id, files, &options).await;
                Sent {
                    task_id,
                    result: Some(result),
                }
            });
            self.task_ids.insert(handle.id(), task_id);
        }
    }

    /// A unit whose worker left the ring goes to its next candidate, without using an attempt.
    fn reroute(&mut self, mut unit: Unit, from: &str) {
        self.audit.failed(from);
        match unit.fallbacks.pop_front() {
            Some(next) => self.requeue(&next, unit),
            // A copy of a load with no worker left in its cluster: one the cluster cannot hold
            // (counted in `replicaShortfall`, which fails the job), not a failure of the file.
            None if self.task() == TaskKind::Load && self.doubt.is_none() && unit.file.offset.is_none() => {
                self.tracker.note_shortfall(unit.file_index, 1);
                self.tracker.unit_finished(
                    unit.file_index,
                    UnitOutcome::Done {
                        bytes: 0,
                        skipped: false,
                    },
                );
            }
            None => {
                let reason = format!("worker {from} went OFFLINE and no other candidate is left");
                self.tracker
                    .unit_finished(unit.file_index, UnitOutcome::Failed { reason });
            }
        }
    }

    fn requeue(&mut self, worker: &str, unit: Unit) {
        let alone = unit.file.offset.is_some();
        self.batcher.push(worker, unit, alone);
    }

    /// A task that panicked or was cancelled: its units are retried.
    fn lost_task(&mut self, id: tokio::task::Id, reason: String) {
        let Some(task_id) = self.task_ids.remove(&id) else {
            return;
        };
        let Some((worker, units)) = self.in_flight.remove(&task_id) else {
            return;
        };
        self.audit.failed(&worker);
        for unit in units {
            self.retry(unit, format!("{worker}: task failed: {reason}"));
        }
    }

    async fn collect(&mut self, sent: Sent) {
        self.task_ids.retain(|_, task_id| *task_id != sent.task_id);
        let Some((worker, units)) = self.in_flight.remove(&sent.task_id) else {
            return;
        };
        let sent_units = units;
        let Some(result) = sent.result else {
            // Withheld (ownership lapsed): queued again; the next checkpoint tells whether this
            // run still owns the job.
            for unit in sent_units {
                self.requeue(&worker, unit);
            }
            return;
        };
        match result {
            Ok(answer) => {
                self.audit.answered(&worker, answer.instance.as_deref());
                let answered = answer.results.len();
                let expected = sent_units.len();
                let mut results = answer.results.into_iter();
                let load = self.task() == TaskKind::Load;
                for unit in sent_units {
                    match results.next() {
                        Some(result) if result.ok && load && !load_kept(&result, &self.record.options) => {
                            let reason = format!(
                                "{worker}: {NOT_CACHED}: only {} of {} bytes stayed cached",
                                result.cached_bytes, result.range_length
                            );
                            self.file_failed(unit, &worker, reason);
                        }
                        Some(result) if result.ok => {
                            let bytes = if !unit.counts_bytes || self.record.options.metadata_only {
                                0
                            } else if !load {
                                result.freed_bytes
                            } else {
                                result.range_length
                            };
                            if load && !result.skipped {
                                self.ctx.metrics.loaded(bytes);
                            }
                            self.tracker.unit_finished(
                                unit.file_index,
                                UnitOutcome::Done {
                                    bytes,
                                    skipped: result.skipped,
                                },
                            );
                        }
                        Some(result) => {
                            let reason = result.error.unwrap_or_else(|| "failed".to_string());
                            if is_permanent(result.code.as_deref()) {
                                self.tracker
                                    .unit_finished(unit.file_index, UnitOutcome::Failed { reason });
                            } else {
                                self.file_failed(unit, &worker, format!("{worker}: {reason}"));
                            }
                        }
                        None => {
                            let reason = format!("worker {worker} answered {answered} results for {expected} files");
                            self.audit.failed(&worker);
                            self.retry(unit, reason);
                        }
                    }
                }
            }
            Err(reason) => {
                // A worker that cannot be reached may have left the ring meanwhile (the view
                // the units were planned with is up to a moment old): then its units go to
                // their next candidates, or count as copies the cluster cannot hold.
                if let Ok(view) = self.ctx.cluster.fresh_view().await {
                    self.use_view(view);
                }
                let online = self.addresses.contains_key(&worker);
                self.audit.failed(&worker);
                for unit in sent_units {
                    if online {
                        self.retry(unit, reason.clone());
                    } else {
                        self.reroute(unit, &worker);
                    }
                }
            }
        }
    }

    /// One file failed on a worker that answered. The load retries it on the next candidate
    /// (the worker's files are then in doubt); a final check pass retries it on the same
    /// worker, its owner (a copy elsewhere would not be where clients read), and records it
    /// failed after the last attempt.
    fn file_failed(&mut self, mut unit: Unit, worker: &str, reason: String) {
        if self.doubt.is_some() {
            unit.fallbacks.push_front(worker.to_string());
        } else {
            self.audit.failed(worker);
        }
        self.retry(unit, reason);
    }

    fn retry(&mut self, mut unit: Unit, reason: String) {
        if unit.attempts >= self.ctx.config.file_max_attempts {
            let reason = format!("{reason} (after {} attempts)", unit.attempts);
            self.tracker
                .unit_finished(unit.file_index, UnitOutcome::Failed { reason });
            return;
        }
        let Some(next) = unit.fallbacks.pop_front() else {
            let reason = format!("{reason} (no other worker to try)");
            self.tracker
                .unit_finished(unit.file_index, UnitOutcome::Failed { reason });
            return;
        };
        tracing::debug!(job_id = %self.record.job_id, path = %unit.file.path, next = %next, reason, "retrying");
        unit.attempts += 1;
        self.tracker.unit_retried(unit.file_index);
        let due = Instant::now() + backoff(unit.attempts);
        self.retries.push_back((due, next, unit));
    }

    fn requeue_due_retries(&mut self) {
        let now = Instant::now();
        let mut still_waiting = VecDeque::new();
        let mut requeued = false;
        while let Some((due, worker, unit)) = self.retries.pop_front() {
            if due <= now {
                let alone = unit.file.offset.is_some();
                self.batcher.push(&worker, unit, alone);
                requeued = true;
            } else {
                still_waiting.push_back((due, worker, unit));
            }
        }
        self.retries = still_waiting;
        // Retries go out now rather than wait for their batch to fill.
        if requeued {
            self.batcher.flush();
        }
    }

    /// The job's own tracker (during a final check pass, `tracker` is the pass's).
    fn job_tracker(&self) -> &Tracker {
        self.job_tracker.as_ref().unwrap_or(&self.tracker)
    }

    fn progress(&self, listing_done: bool) -> JobProgress {
        let tracker = self.job_tracker();
        let counters = tracker.counters();
        // A final check pass in progress counts what it has sent so far.
        let (mut rechecked, mut repaired) = self.rechecked;
        if self.job_tracker.is_some() && !self.trimming {
            rechecked += self.tracker.next_index();
            repaired += self.tracker.counters().processed;
        }
        JobProgress {
            files_listed: tracker.next_index(),
            watermark: tracker.watermark(),
            files_processed: counters.processed,
            files_skipped: counters.skipped,
            files_failed: counters.failed,
            bytes_processed: counters.bytes,
            retried: counters.retried,
            listing_done: listing_done || self.job_tracker.is_some(),
            verified: self.record.progress.verified,
            rechecked,
            repaired,
            replica_shortfall_files: counters.short_files,
            replica_shortfall_copies: counters.short_copies,
        }
    }

    /// Writes progress (and the owner's heartbeat), and picks up a stop request. The write
    /// compares the version this run last wrote, so it also proves the job is still this run's.
    async fn checkpoint(&mut self, listing_done: bool) {
        self.record.progress = self.progress(listing_done);
        self.record.failed_files = self.job_tracker().failed_files().to_vec();
        if self.audited() {
            self.record.audit = self.audit.to_record();
        }
        self.record.owner_heartbeat_ms = Some(now_millis());
        // The window runs from the request, not the answer: etcd may commit the write, then
        // this process stall past its lease before it reads the answer.
        let requested_at = Instant::now();
        match self.ctx.store.checkpoint_record(&self.record, self.version).await {
            Ok(stored) => {
                if stored.record.stop_requested && !self.stopping {
                    tracing::info!(job_id = %self.record.job_id, "stop requested: no new tasks");
                    self.stopping = true;
                }
                self.record.stop_requested = stored.record.stop_requested;
                self.version = stored.version;
                self.ownership
                    .checkpointed
                    .extend(requested_at, self.ctx.ownership_window);
            }
            // Another run of the job (reclaimed, or rerun, even back to this coordinator).
            Err(JobError::Conflict(reason)) => {
                tracing::warn!(job_id = %self.record.job_id, reason, "checkpoint refused");
                self.taken_away = true;
            }
            Err(err) => {
                tracing::warn!(job_id = %self.record.job_id, error = %err, "checkpoint failed; retrying next interval");
                if self.last_checkpoint().elapsed() > STORE_LOSS_LIMIT {
                    tracing::error!(
                        job_id = %self.record.job_id,
                        "no checkpoint for {}s: another coordinator may own the job now; giving it up",
                        STORE_LOSS_LIMIT.as_secs()
                    );
                    self.taken_away = true;
                }
            }
        }
        self.refresh_view().await;
    }

    /// The current ring (the cluster source caches it briefly).
    async fn refresh_view(&mut self) {
        if let Ok(view) = self.ctx.cluster.view().await {
            self.use_view(view);
        }
    }

    fn use_view(&mut self, view: Arc<ClusterView>) {
        self.view = view;
        self.refresh_addresses();
        self.audit.saw_ring(&self.view);
    }

    async fn finish(mut self, outcome: Result<(), String>) {
        self.record.progress = self.progress(self.record.progress.listing_done);
        self.record.failed_files = self.job_tracker().failed_files().to_vec();
        if self.audited() {
            self.record.audit = self.audit.to_record();
        }
        let failed = self.tracker.counters().failed;
        let (short_files, short_copies) = (
            self.tracker.counters().short_files,
            self.tracker.counters().short_copies,
        );
        let (state, error) = match outcome {
            Err(reason) => (JobState::Failed, Some(reason)),
            Ok(()) if self.stopping => (JobState::Stopped, None),
            Ok(()) if failed > 0 => (
                JobState::Failed,
                Some(format!("{failed} file(s) failed (see failedFiles)")),
            ),
            // Fewer copies than the count asks for is not a success (Alluxio #14274 reported
            // this one as SUCCEEDED).
            Ok(()) if short_files > 0 => (
                JobState::Failed,
                Some(format!(
                    "replica shortfall: {short_files} file(s) lack {short_copies} cop(ies) in all: a cluster has fewer ONLINE workers than the replica count (see replicaShortfall)"
                )),
            ),
            Ok(()) => (JobState::Succeeded, None),
        };
        let job_id = self.record.job_id.clone();
        let mut attempt = 1;
        let outcome = loop {
            let outcome = self
                .ctx
                .store
                .finish(&self.record, self.version, state, error.clone(), now_millis())
                .await;
            match outcome {
                Err(err) if err.is_retryable() && attempt < FINISH_ATTEMPTS => {
                    tracing::warn!(job_id, error = %err, "cannot record the end of the job yet; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        match outcome {
            Ok(record) => {
                self.ctx.metrics.job_finished(state);
                tracing::info!(
                    job_id,
                    state = ?record.state,
                    files = record.progress.files_processed,
                    failed = record.progress.files_failed,
                    error = error.as_deref().unwrap_or(""),
                    "job finished"
                );
            }
            Err(err) => tracing::error!(job_id, error = %err, "cannot record the end of the job"),
        }
    }
}
