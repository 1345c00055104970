//! Jobs: the job model (load = warm the cache, free = evict) and [`JobStore`], the job records
//! and their queue kept in a [`MetaStore`] (the embedded store under `jobs/`, or etcd rooted at
//! `hoard.coordinator.scheduler.job.etcd.path`).
//!
//! Key layout, relative to the store's prefix (`jobs/` on the embedded store, empty on an etcd
//! store rooted at the job path):
//!
//! | key | value | exists while |
//! | --- | --- | --- |
//! | `job/<job-id>` | [`JobRecord`] JSON | until [`JobStore::cleanup`] deletes the finished job |
//! | `waiting/<queued_ms, 13 digits>-<job-id>` | the job id | the job is WAITING (key order = FIFO order) |
//! | `active/<type>/<path>` | the job id | the job is WAITING or RUNNING (one active job per type and path) |
//!
//! `queued_ms` is when the job entered the queue: its creation time, or the time of a
//! [`JobStore::rerun`]; a job a dead coordinator left RUNNING goes back to its former place
//! ([`JobStore::reclaim`]). The path in `active/` is the job's path verbatim (the caller
//! normalizes paths before submitting).
//!
//! Every state change is ONE [`MetaStore::txn`]: the record and its index changes together,
//! guarded by compares on the versions read (compare-and-set), so the store never shows half a
//! change and two coordinators never both win. A lost race is read again and retried (bounded)
//! where retrying is right (submit, stop, rerun), or reported (claim: `None`; an owner's write
//! to a job taken away from it: [`JobError::Conflict`]).
//!
//! etcd may answer a txn with a retryable error after it applied it (a timeout, "outcome
//! unknown"). Every txn here writes (or deletes) the job record, so on such an error the record
//! is read back: if it is exactly what the txn wrote, the txn was applied and the operation
//! succeeded; otherwise the error is returned (the caller may retry: a submit is idempotent per
//! type and path through the active index, so a retry never creates a second job).
//!
//! Lifecycle: `submit` -> WAITING -> `claim` -> RUNNING (owner, heartbeat) -> `checkpoint`* ->
//! `finish` -> SUCCEEDED | FAILED | STOPPED. `request_stop` stops a WAITING job at once and asks
//! the owner of a RUNNING one to stop. `reclaim` moves a RUNNING job of a dead owner back to
//! WAITING; `rerun` (also from the CLI, without a coordinator) moves a FAILED, STOPPED or stuck
//! RUNNING job back to WAITING, keeping its progress so the next run resumes at the watermark.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::records::{decode, encode};
use crate::{Compare, Entry, MetaError, MetaStore, Op};

/// At most this many failed files are kept in [`JobRecord::failed_files`] (the first ones);
/// [`JobProgress::files_failed`] counts them all.
pub const MAX_FAILED_FILES: usize = 100;

/// Compare-and-set rounds of one operation before giving up ([`JobError::Conflict`]).
const CAS_ROUNDS: usize = 16;

/// Key names of the job store, relative to its prefix (see the module docs).
pub mod keys {
    use super::JobType;

    pub const RECORDS: &str = "job/";
    pub const WAITING: &str = "waiting/";
    pub const ACTIVE: &str = "active/";

    /// `job/<job-id>`.
    pub fn record(job_id: &str) -> String {
        format!("{RECORDS}{job_id}")
    }

    /// `waiting/<queued_ms zero-padded to 13 digits>-<job-id>`: keys sort in queue order.
    pub fn waiting(queued_ms: u64, job_id: &str) -> String {
        format!("{WAITING}{queued_ms:013}-{job_id}")
    }

    /// `active/<type>/<path>`.
    pub fn active(job_type: JobType, path: &str) -> String {
        format!("{ACTIVE}{}/{path}", job_type.as_str())
    }

    /// The job id of a `waiting/` key.
    pub fn waiting_job_id(key: &str) -> Option<&str> {
        let rest = key.strip_prefix(WAITING)?;
        let (queued, job_id) = rest.split_once('-')?;
        (queued.len() >= 13 && queued.bytes().all(|b| b.is_ascii_digit()) && !job_id.is_empty()).then_some(job_id)
    }
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// Warm the cache with the files under the path.
    Load,
    /// Evict the files under the path from the cache.
    Free,
    /// Bring the files under the path to their replica count: load the copies their replicas
    /// lack, then free the copies on workers that are not among their replicas.
    Repair,
}

impl JobType {
    /// `load` | `free` | `repair` (as in JSON and keys).
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Load => "load",
            JobType::Free => "free",
            JobType::Repair => "repair",
        }
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobType {
    type Err = String;

    /// `load`, `free` or `repair`, any case.
    fn from_str(text: &str) -> Result<JobType, String> {
        match text.to_ascii_lowercase().as_str() {
            "load" => Ok(JobType::Load),
            "free" => Ok(JobType::Free),
            "repair" => Ok(JobType::Repair),
            _ => Err(format!("unknown job type {text:?} (load, free or repair)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Waiting,
    Running,
    Succeeded,
    Failed,
    Stopped,
}

impl JobState {
    /// SUCCEEDED, FAILED or STOPPED.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Stopped)
    }

    /// WAITING or RUNNING (holds the active index of its type and path).
    pub fn is_active(self) -> bool {
        !self.is_finished()
    }

    /// `WAITING`, `RUNNING`, ... (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "WAITING",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Stopped => "STOPPED",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobOptions {
    /// Copies of each file per cluster, for every file of the job (`--replicas`); `None`: each
    /// file's count comes from `replica_rules`.
    pub replicas: Option<u32>,
    /// The replica rules in effect when the job was submitted: a load keeps the counts it
    /// started with whatever happens to the rules meanwhile (and after a failover).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica_rules: Option<Vec<hoard_common::replica::ReplicaRule>>,
    /// Files per task; `None`: the coordinator's `hoard.job.batch.size`.
    pub batch_size: Option<u32>,
    /// Load only the files' metadata.
    pub metadata_only: bool,
    /// Check after loading that every file is cached.
    pub verify: bool,
    /// Skip files already fully cached.
    pub skip_if_exists: bool,
}

impl JobOptions {
    /// A `replicas` of 0 and a batch size of 0 mean "the default" (`None`).
    pub fn normalized(mut self) -> JobOptions {
        self.replicas = self.replicas.filter(|replicas| *replicas > 0);
        self.batch_size = self.batch_size.filter(|size| *size > 0);
        self
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobProgress {
    /// Files enumerated so far (in listing order).
    pub files_listed: u64,
    /// Every file with listing index < watermark is resolved (done, skipped or failed) and
    /// counted below; a resumed run skips them.
    pub watermark: u64,
    pub files_processed: u64,
    pub files_skipped: u64,
    pub files_failed: u64,
    pub bytes_processed: u64,
    /// File attempts retried.
    pub retried: u64,
    /// The listing reached its end.
    pub listing_done: bool,
    /// The verify pass's outcome (`None`: not verified, or not yet).
    pub verified: Option<bool>,
    /// Files the final check of a load sent to their owners again (all its passes and runs).
    pub rechecked: u64,
    /// Of those, files an owner was missing (whole or in part) and loaded again.
    pub repaired: u64,
    /// Files that could not get every copy their count asks for (a cluster had fewer ONLINE
    /// workers), and the copies missing in all.
    pub replica_shortfall_files: u64,
    pub replica_shortfall_copies: u64,
}

/// What the final check of a load needs from the runs so far: which workers' files are in
/// doubt (docs/jobs.md, "The final check"). Kept in the record so a resumed run knows it too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobAudit {
    /// Worker key -> the process instance that answered its tasks (the first one seen).
    pub instances: BTreeMap<String, String>,
    /// Workers whose files are in doubt: a task to one failed or was turned away, or another
    /// process of it answered.
    pub doubtful: BTreeSet<String>,
    /// A hash of the ring (the members, their identities and states) last seen, hex.
    pub ring: Option<String>,
    /// The ring changed since the last completed check: a resumed run, which cannot know the
    /// rings before it, then checks every file.
    pub ring_changed: bool,
}

impl JobAudit {
    pub fn is_empty(&self) -> bool {
        self == &JobAudit::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedFile {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub job_id: String,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub path: String,
    #[serde(default)]
    pub options: JobOptions,
    pub state: JobState,
    /// The coordinator running it (RUNNING); the last one once finished.
    #[serde(default)]
    pub owner: Option<String>,
    /// The owner's last checkpoint (or claim), in ms since the epoch.
    #[serde(default)]
    pub owner_heartbeat_ms: Option<u64>,
    pub created_ms: u64,
    /// When its first run started.
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// Times claimed.
    #[serde(default)]
    pub runs: u32,
    #[serde(default)]
    pub stop_requested: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub progress: JobProgress,
    /// At most [`MAX_FAILED_FILES`] (the first ones); `progress.files_failed` counts all.
    #[serde(default)]
    pub failed_files: Vec<FailedFile>,
    /// Milliseconds spent RUNNING over all runs before the current one (for throughput/elapsed).
    #[serde(default)]
    pub previous_runs_ms: u64,
    /// When the job last entered the waiting queue (orders the queue: its `waiting/` key).
    #[serde(default)]
    pub queued_ms: u64,
    /// When the current run (once finished: the last run) started; `None` while WAITING.
    #[serde(default)]
    pub run_started_ms: Option<u64>,
    /// Loads: what the final check needs to know about the runs so far.
    #[serde(default, skip_serializing_if = "JobAudit::is_empty")]
    pub audit: JobAudit,
}

impl JobRecord {
    /// A new WAITING job created (and queued) at `now_ms`.
    pub fn new(job_id: String, job_type: JobType, path: &str, options: JobOptions, now_ms: u64) -> JobRecord {
        JobRecord {
            job_id,
            job_type,
            path: path.to_string(),
            options,
            state: JobState::Waiting,
            owner: None,
            owner_heartbeat_ms: None,
            created_ms: now_ms,
            started_ms: None,
            ended_ms: None,
            runs: 0,
            stop_requested: false,
            error: None,
            progress: JobProgress::default(),
            failed_files: Vec::new(),
            previous_runs_ms: 0,
            queued_ms: now_ms,
            run_started_ms: None,
            audit: JobAudit::default(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.state.is_active()
    }

    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }

    /// Milliseconds of the current run (RUNNING: until `now_ms`; finished: until `ended_ms`).
    pub fn current_run_ms(&self, now_ms: u64) -> u64 {
        let Some(started) = self.run_started_ms else {
            return 0;
        };
        match self.state {
            JobState::Running => now_ms.saturating_sub(started),
            JobState::Waiting => 0,
            _ => self.ended_ms.map_or(0, |ended| ended.saturating_sub(started)),
        }
    }

    /// Milliseconds spent RUNNING over all runs, the current one until `now_ms`.
    pub fn elapsed_ms(&self, now_ms: u64) -> u64 {
        self.previous_runs_ms.saturating_add(self.current_run_ms(now_ms))
    }

    /// `bytes_processed` over [`JobRecord::elapsed_ms`] (0 before any time has passed).
    pub fn throughput_bytes_per_sec(&self, now_ms: u64) -> u64 {
        let elapsed = self.elapsed_ms(now_ms);
        if elapsed == 0 {
            return 0;
        }
        let rate = u128::from(self.progress.bytes_processed) * 1000 / u128::from(elapsed);
        u64::try_from(rate).unwrap_or(u64::MAX)
    }

    /// Counts one failed file in `progress.files_failed` (so the caller does NOT count it
    /// again) and keeps it in `failed_files` while that holds fewer than [`MAX_FAILED_FILES`].
    /// Returns whether it was kept in the list.
    pub fn push_failed(&mut self, path: impl Into<String>, reason: impl Into<String>) -> bool {
        self.progress.files_failed = self.progress.files_failed.saturating_add(1);
        if self.failed_files.len() >= MAX_FAILED_FILES {
            return false;
        }
        self.failed_files.push(FailedFile {
            path: path.into(),
            reason: reason.into(),
        });
        true
    }

    /// The run time of a run that ended without `finish` (its owner died or it was stuck): until
    /// its last heartbeat, the last sign of life.
    fn abandoned_run_ms(&self, now_ms: u64) -> u64 {
        let Some(started) = self.run_started_ms else {
            return 0;
        };
        let last_seen = self.owner_heartbeat_ms.unwrap_or(started).min(now_ms);
        last_seen.saturating_sub(started)
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// The record in `entry`; [`MetaError::Corrupt`] when it does not parse.
    pub fn decode(entry: &Entry) -> Result<JobRecord, MetaError> {
        decode(entry)
    }
}

/// A record with the version it was read at (for compare-and-set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub record: T,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the waiting queue is full ({capacity} jobs); try again later")]
    QueueFull { capacity: u32 },
    #[error("no job with id {0}")]
    NotFound(String),
    #[error("cannot {action} job {job_id}: it is {state}")]
    InvalidState {
        job_id: String,
        state: JobState,
        action: &'static str,
    },
    /// Lost a compare-and-set race the caller should not retry blindly (e.g. the job was taken
    /// away from its owner, or another active job holds the path).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl JobError {
    /// Whether retrying the same operation later may succeed (the metastore was unavailable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, JobError::Meta(err) if err.is_retryable())
    }
}

// ---------------------------------------------------------------------------------------------
// The store.

/// What the active index of a (type, path) holds.
enum ActiveSlot {
    Empty,
    /// An active job, and the index's version.
    Held(Box<Versioned<JobRecord>>, u64),
    /// An index left behind (its job is gone, finished, or another type/path): replaceable; the
    /// index's version and the job id it names.
    Stale(u64, String),
}

/// Job records and their indexes in a [`MetaStore`] under a key prefix. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JobStore {
    store: Arc<dyn MetaStore>,
    prefix: String,
    waiting_capacity: u32,
}

impl JobStore {
    /// `prefix`: `jobs/` on the embedded store, empty on an etcd store rooted at the job path (a
    /// non-empty prefix without a trailing `/` gets one). `waiting_capacity`: how many WAITING
    /// jobs [`JobStore::submit`] accepts.
    pub fn new(store: Arc<dyn MetaStore>, prefix: &str, waiting_capacity: u32) -> JobStore {
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        JobStore {
            store,
            prefix,
            waiting_capacity,
        }
    }

    /// The metastore's kind (`EMBEDDED`, `ETCD`).
    pub fn kind(&self) -> &'static str {
        self.store.kind()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn waiting_capacity(&self) -> u32 {
        self.waiting_capacity
    }

    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    fn key(&self, relative: &str) -> String {
        format!("{}{relative}", self.prefix)
    }

    fn record_key(&self, job_id: &str) -> String {
        self.key(&keys::record(job_id))
    }

    fn waiting_key(&self, record: &JobRecord) -> String {
        self.key(&keys::waiting(record.queued_ms, &record.job_id))
    }

    fn active_key(&self, job_type: JobType, path: &str) -> String {
        self.key(&keys::active(job_type, path))
    }

    /// The record of `job/<job_id>`, checked to be that job's.
    fn decode_record(entry: &Entry, job_id: &str) -> Result<JobRecord, MetaError> {
        let record = JobRecord::decode(entry)?;
        if record.job_id != job_id {
            return Err(MetaError::Corrupt {
                key: entry.key.clone(),
                reason: format!("holds the record of job {}", record.job_id),
            });
        }
        Ok(record)
    }

    fn index_value(entry: &Entry) -> Result<String, MetaError> {
        String::from_utf8(entry.value.clone()).map_err(|_| MetaError::Corrupt {
            key: entry.key.clone(),
            reason: "the job id it holds is not UTF-8".into(),
        })
    }

    /// Every record with its version, in key order; the first unreadable one is an error.
    async fn scan(&self) -> Result<Vec<Versioned<JobRecord>>, JobError> {
        let prefix = self.key(keys::RECORDS);
        let entries = self.store.list(&prefix).await?;
        let mut records = Vec::with_capacity(entries.len());
        for entry in &entries {
            let job_id = entry.key.strip_prefix(&prefix).unwrap_or(&entry.key);
            records.push(Versioned {
                record: Self::decode_record(entry, job_id)?,
                version: entry.version,
            });
        }
        Ok(records)
    }

    /// Runs one txn that writes `intended` as the job's record (or, with `None`, deletes it):
    /// `Some(version)` of the record written when it was applied, `None` when a compare failed.
    /// When the store fails in a way that may have applied it anyway (etcd: a timeout, "outcome
    /// unknown"), reads the record back: exactly `intended` means it was applied; otherwise the
    /// store's error is returned.
    async fn commit(
        &self,
        job_id: &str,
        compares: Vec<Compare>,
        ops: Vec<Op>,
        intended: Option<&[u8]>,
    ) -> Result<Option<u64>, JobError> {
        let err = match self.store.txn(compares, ops).await {
            Ok(applied) => return Ok(applied),
            Err(err) if err.is_retryable() => err,
            Err(err) => return Err(err.into()),
        };
        match self.store.get(&self.record_key(job_id)).await {
            Ok(current) => {
                let applied = match (current, intended) {
                    (Some(entry), Some(value)) if entry.value == value => Some(entry.version),
                    // Deleted: no version to tell.
                    (None, None) => Some(0),
                    _ => None,
                };
                if applied.is_some() {
                    tracing::debug!(job_id, error = %err, "job store txn failed but was applied");
                    Ok(applied)
                } else {
                    Err(err.into())
                }
            }
            Err(read_err) => {
                tracing::warn!(job_id, error = %err, read_error = %read_err, "cannot tell whether a failed job store txn was applied");
                Err(err.into())
            }
        }
    }

    async fn read_active(&self, job_type: JobType, path: &str) -> Result<ActiveSlot, JobError> {
        let Some(entry) = self.store.get(&self.active_key(job_type, path)).await? else {
            return Ok(ActiveSlot::Empty);
        };
        let job_id = Self::index_value(&entry)?;
        match self.get(&job_id).await? {
            Some(job) if job.record.is_active() && job.record.job_type == job_type && job.record.path == path => {
                Ok(ActiveSlot::Held(Box::new(job), entry.version))
            }
            // Also what a reader sees when the job finished between the two reads: the txn
            // replacing the index then fails its compare and the caller reads again.
            _ => Ok(ActiveSlot::Stale(entry.version, job_id)),
        }
    }

    /// The compare and delete of the active index of `record`, if the index names this job.
    async fn release_active(&self, record: &JobRecord) -> Result<Option<(Compare, Op)>, JobError> {
        let key = self.active_key(record.job_type, &record.path);
        let Some(entry) = self.store.get(&key).await? else {
            return Ok(None);
        };
        if Self::index_value(&entry).ok().as_deref() != Some(record.job_id.as_str()) {
            return Ok(None);
        }
        Ok(Some((
            Compare::Version {
                key: key.clone(),
                version: Some(entry.version),
            },
            Op::Delete { key },
        )))
    }

    fn put_record(&self, record: &JobRecord, value: &[u8]) -> Op {
        Op::Put {
            key: self.record_key(&record.job_id),
            value: value.to_vec(),
        }
    }

    fn record_at(&self, job: &Versioned<JobRecord>) -> Compare {
        self.record_key_at(&job.record.job_id, job.version)
    }

    fn record_key_at(&self, job_id: &str, version: u64) -> Compare {
        Compare::Version {
            key: self.record_key(job_id),
            version: Some(version),
        }
    }

    /// One active (WAITING or RUNNING) job per (type, path): when there is one it is returned
    /// with `false` (its options are kept; `options` are ignored). Otherwise
    /// [`JobError::QueueFull`] when the waiting queue holds `waiting_capacity` jobs, else a new
    /// WAITING job (a new UUID) is created in one txn (record, waiting index, active index,
    /// guarded by "the active index is absent") and returned with `true`. `options` are
    /// normalized ([`JobOptions::normalized`]). The capacity is checked before the txn, so
    /// concurrent submits of different paths may overshoot it by a few.
    pub async fn submit(
        &self,
        job_type: JobType,
        path: &str,
        options: JobOptions,
        now_ms: u64,
    ) -> Result<(JobRecord, bool), JobError> {
        let options = options.normalized();
        let active_key = self.active_key(job_type, path);
        for _ in 0..CAS_ROUNDS {
            let active_version = match self.read_active(job_type, path).await? {
                ActiveSlot::Held(job, _) => return Ok((job.record, false)),
                ActiveSlot::Stale(version, holder) => {
                    tracing::debug!(key = %active_key, holder, "replacing a stale active job index");
                    Some(version)
                }
                ActiveSlot::Empty => None,
            };
            if self.waiting_count().await? >= self.waiting_capacity as usize {
                return Err(JobError::QueueFull {
                    capacity: self.waiting_capacity,
                });
            }
            let job_id = uuid::Uuid::new_v4().to_string();
            let record = JobRecord::new(job_id.clone(), job_type, path, options.clone(), now_ms);
            let value = record.encode();
            let compares = vec![
                Compare::Version {
                    key: active_key.clone(),
                    version: active_version,
                },
                Compare::Version {
                    key: self.record_key(&job_id),
                    version: None,
                },
            ];
            let ops = vec![
                self.put_record(&record, &value),
                Op::Put {
                    key: self.waiting_key(&record),
                    value: job_id.clone().into_bytes(),
                },
                Op::Put {
                    key: active_key.clone(),
                    value: job_id.clone().into_bytes(),
                },
            ];
            if self.commit(&job_id, compares, ops, Some(&value)).await?.is_some() {
                tracing::info!(job_id, job_type = %job_type, path, "job submitted");
                return Ok((record, true));
            }
            tracing::debug!(job_type = %job_type, path, "lost a race submitting a job, reading again");
        }
        Err(JobError::Conflict(format!(
            "submit {job_type} {path}: the active job index kept changing during {CAS_ROUNDS} attempts"
        )))
    }

    /// The job with its version; `None` when there is none. An unreadable record is
    /// [`MetaError::Corrupt`].
    pub async fn get(&self, job_id: &str) -> Result<Option<Versioned<JobRecord>>, JobError> {
        let Some(entry) = self.store.get(&self.record_key(job_id)).await? else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            record: Self::decode_record(&entry, job_id)?,
            version: entry.version,
        }))
    }

    /// Every job, newest first (by creation time, then job id). An unreadable record is an
    /// error ([`MetaError::Corrupt`] naming its key); see [`JobStore::list_readable`].
    pub async fn list(&self) -> Result<Vec<JobRecord>, JobError> {
        let mut records: Vec<JobRecord> = self.scan().await?.into_iter().map(|job| job.record).collect();
        sort_newest_first(&mut records);
        Ok(records)
    }

    /// Like [`JobStore::list`], but unreadable records are returned as errors beside the
    /// readable ones instead of failing the whole listing.
    pub async fn list_readable(&self) -> Result<(Vec<JobRecord>, Vec<MetaError>), JobError> {
        let prefix = self.key(keys::RECORDS);
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for entry in self.store.list(&prefix).await? {
            let job_id = entry.key.strip_prefix(&prefix).unwrap_or(&entry.key);
            match Self::decode_record(&entry, job_id) {
                Ok(record) => records.push(record),
                Err(err) => errors.push(err),
            }
        }
        sort_newest_first(&mut records);
        Ok((records, errors))
    }

    /// The active (WAITING or RUNNING) job of (type, path).
    pub async fn active(&self, job_type: JobType, path: &str) -> Result<Option<JobRecord>, JobError> {
        Ok(match self.read_active(job_type, path).await? {
            ActiveSlot::Held(job, _) => Some(job.record),
            _ => None,
        })
    }

    /// The active job of (type, path), else the most recently created one of that (type, path).
    pub async fn latest(&self, job_type: JobType, path: &str) -> Result<Option<JobRecord>, JobError> {
        if let Some(active) = self.active(job_type, path).await? {
            return Ok(Some(active));
        }
        Ok(self
            .scan()
            .await?
            .into_iter()
            .map(|job| job.record)
            .filter(|record| record.job_type == job_type && record.path == path)
            .max_by(|a, b| (a.created_ms, &a.job_id).cmp(&(b.created_ms, &b.job_id))))
    }

    /// The ids of up to `limit` WAITING jobs, oldest (first queued) first.
    pub async fn waiting(&self, limit: usize) -> Result<Vec<String>, JobError> {
        let entries = self.store.list_limited(&self.key(keys::WAITING), limit).await?;
        let mut ids = Vec::with_capacity(entries.len().min(limit));
        for entry in entries.iter().take(limit) {
            ids.push(Self::index_value(entry)?);
        }
        Ok(ids)
    }

    /// How many jobs are WAITING.
    pub async fn waiting_count(&self) -> Result<usize, JobError> {
        Ok(self.store.list(&self.key(keys::WAITING)).await?.len())
    }

    /// The records of `job_ids` (read in one request where the store can), in that order; a
    /// job that is gone is left out, and so is an unreadable record (logged: it can never be
    /// claimed, and `hoard job list` names it).
    pub async fn records(&self, job_ids: &[String]) -> Result<Vec<Versioned<JobRecord>>, JobError> {
        let keys: Vec<String> = job_ids.iter().map(|job_id| self.record_key(job_id)).collect();
        let entries = self.store.get_many(&keys).await?;
        let mut records = Vec::with_capacity(entries.len());
        for (job_id, entry) in job_ids.iter().zip(entries) {
            let Some(entry) = entry else { continue };
            match Self::decode_record(&entry, job_id) {
                Ok(record) => records.push(Versioned {
                    record,
                    version: entry.version,
                }),
                Err(err) => tracing::warn!(job_id, error = %err, "skipping an unreadable job record"),
            }
        }
        Ok(records)
    }

    /// WAITING -> RUNNING by `owner`: heartbeat and run start `now_ms`, `started_ms` on the first
    /// run, `runs` + 1, the waiting index deleted, in one txn comparing the record's version.
    /// `Ok(None)` when the job is gone, no longer WAITING, or another claimer won. Returns the
    /// record as stored with its version (for [`JobStore::checkpoint`]).
    ///
    /// A claim whose txn failed with an unknown outcome may have been applied without the
    /// caller knowing: a scheduler should look for RUNNING jobs it owns but does not run (at
    /// start and now and then) and [`JobStore::reclaim`] them with its own id.
    pub async fn claim(
        &self,
        job_id: &str,
        owner: &str,
        now_ms: u64,
    ) -> Result<Option<Versioned<JobRecord>>, JobError> {
        for _ in 0..CAS_ROUNDS {
            let Some(current) = self.get(job_id).await? else {
                return Ok(None);
            };
            if current.record.state != JobState::Waiting {
                return Ok(None);
            }
            if let Some(claimed) = self.claim_read(&current, owner, now_ms).await? {
                return Ok(Some(claimed));
            }
        }
        Ok(None)
    }

    /// [`JobStore::claim`] of a record already read (e.g. by [`JobStore::records`]): one txn,
    /// `Ok(None)` when the job is not WAITING or its record changed since it was read (another
    /// claimer won).
    pub async fn claim_read(
        &self,
        current: &Versioned<JobRecord>,
        owner: &str,
        now_ms: u64,
    ) -> Result<Option<Versioned<JobRecord>>, JobError> {
        if current.record.state != JobState::Waiting {
            return Ok(None);
        }
        let job_id = current.record.job_id.as_str();
        let mut record = current.record.clone();
        record.state = JobState::Running;
        record.owner = Some(owner.to_string());
        record.owner_heartbeat_ms = Some(now_ms);
        record.started_ms.get_or_insert(now_ms);
        record.run_started_ms = Some(now_ms);
        record.runs = record.runs.saturating_add(1);
        record.ended_ms = None;
        let value = record.encode();
        let ops = vec![
            self.put_record(&record, &value),
            Op::Delete {
                key: self.waiting_key(&current.record),
            },
        ];
        let Some(version) = self
            .commit(job_id, vec![self.record_at(current)], ops, Some(&value))
            .await?
        else {
            return Ok(None);
        };
        tracing::info!(job_id, owner, run = record.runs, "job claimed");
        Ok(Some(Versioned { record, version }))
    }

    /// The owner writes `record` (progress, heartbeat) over the version it last read or wrote.
    /// When the stored record changed meanwhile but is still RUNNING, by the same owner, in the
    /// same run (only a stop request can do that), the change is merged (`stop_requested` is
    /// kept) and the write retried; when it is no longer RUNNING by this owner in this run (the
    /// job was reclaimed, rerun or deleted) -> [`JobError::Conflict`]. Returns the new version.
    /// The owner must not write one job concurrently with itself.
    ///
    /// `expected_version` must be the version the owner's own claim or last write returned,
    /// and `record` the record as stored then plus the owner's changes: while the stored
    /// version is still that one, the write goes through without reading the record (one txn).
    /// A coordinator that lost the job holds an older version, so its write fails the compare
    /// and is refused once the record is read.
    pub async fn checkpoint(&self, record: &JobRecord, expected_version: u64) -> Result<u64, JobError> {
        Ok(self.checkpoint_record(record, expected_version).await?.version)
    }

    /// [`JobStore::checkpoint`], returning the record as stored after the write (with a stop
    /// request merged in) and its version. When nothing changed the record since
    /// `expected_version` (the common case) this is one txn and no read.
    pub async fn checkpoint_record(
        &self,
        record: &JobRecord,
        expected_version: u64,
    ) -> Result<Versioned<JobRecord>, JobError> {
        check_owned_write(record, "checkpoint")?;
        let job_id = record.job_id.as_str();
        let mut next = record.clone();
        let mut expected = expected_version;
        for _ in 0..CAS_ROUNDS {
            let value = next.encode();
            let compares = vec![self.record_key_at(job_id, expected)];
            let ops = vec![self.put_record(&next, &value)];
            if let Some(version) = self.commit(job_id, compares, ops, Some(&value)).await? {
                return Ok(Versioned { record: next, version });
            }
            let current = self.owned_current(record, expected).await?;
            next.stop_requested |= current.record.stop_requested;
            expected = current.version;
        }
        Err(JobError::Conflict(format!(
            "checkpoint of job {job_id}: its record kept changing during {CAS_ROUNDS} attempts"
        )))
    }

    /// The owner ends its RUNNING job: SUCCEEDED, FAILED or STOPPED, with `ended_ms` and `error`
    /// (the rest of `record` is written as it is, e.g. the final progress); the active index is
    /// deleted in the same txn. Same compare-and-set and merge rules as
    /// [`JobStore::checkpoint`]; one txn and no read when nothing changed the record since
    /// `expected_version`. Returns the record as written.
    pub async fn finish(
        &self,
        record: &JobRecord,
        expected_version: u64,
        state: JobState,
        error: Option<String>,
        now_ms: u64,
    ) -> Result<JobRecord, JobError> {
        if !state.is_finished() {
            return Err(JobError::InvalidState {
                job_id: record.job_id.clone(),
                state,
                action: "finish (into a state that is not final)",
            });
        }
        check_owned_write(record, "finish")?;
        let job_id = record.job_id.as_str();
        let finished = |stop_requested: bool| {
            let mut next = record.clone();
            next.stop_requested |= stop_requested;
            next.state = state;
            next.error = error.clone();
            next.ended_ms = Some(now_ms);
            next
        };
        // The common case first: the record is as this owner last wrote it, and the active index
        // names the job (it does while the job is active).
        let next = finished(false);
        let value = next.encode();
        let active_key = self.active_key(next.job_type, &next.path);
        let compares = vec![
            self.record_key_at(job_id, expected_version),
            Compare::Value {
                key: active_key.clone(),
                value: job_id.as_bytes().to_vec(),
            },
        ];
        let ops = vec![self.put_record(&next, &value), Op::Delete { key: active_key }];
        if self.commit(job_id, compares, ops, Some(&value)).await?.is_some() {
            tracing::info!(job_id, state = %state, error = ?next.error, "job finished");
            return Ok(next);
        }
        for _ in 0..CAS_ROUNDS {
            let current = self.owned_current(record, expected_version).await?;
            let next = finished(current.record.stop_requested);
            let value = next.encode();
            let mut compares = vec![self.record_at(&current)];
            let mut ops = vec![self.put_record(&next, &value)];
            if let Some((compare, op)) = self.release_active(&next).await? {
                compares.push(compare);
                ops.push(op);
            }
            if self.commit(job_id, compares, ops, Some(&value)).await?.is_some() {
                tracing::info!(job_id, state = %state, error = ?next.error, "job finished");
                return Ok(next);
            }
        }
        Err(JobError::Conflict(format!(
            "finish of job {job_id}: its record kept changing during {CAS_ROUNDS} attempts"
        )))
    }

    /// The stored record when it is still RUNNING by `record`'s owner in the same run, else
    /// [`JobError::Conflict`].
    async fn owned_current(&self, record: &JobRecord, expected_version: u64) -> Result<Versioned<JobRecord>, JobError> {
        let current = self.get(&record.job_id).await?;
        match current {
            Some(current) if owns(&current.record, record) => {
                if current.version != expected_version {
                    tracing::debug!(
                        job_id = %record.job_id,
                        expected_version,
                        version = current.version,
                        stop_requested = current.record.stop_requested,
                        "job record changed under its owner, merging"
                    );
                }
                Ok(current)
            }
            other => Err(taken_away(record, other.as_ref().map(|job| &job.record))),
        }
    }

    /// WAITING -> STOPPED at once (indexes removed); RUNNING -> `stop_requested` (the owner
    /// stops dispatching and finishes it STOPPED; already requested: returned as is); finished
    /// -> [`JobError::InvalidState`]; unknown -> [`JobError::NotFound`].
    pub async fn request_stop(&self, job_id: &str, now_ms: u64) -> Result<JobRecord, JobError> {
        for _ in 0..CAS_ROUNDS {
            let current = self
                .get(job_id)
                .await?
                .ok_or_else(|| JobError::NotFound(job_id.to_string()))?;
            let mut next = current.record.clone();
            let mut compares = vec![self.record_at(&current)];
            let mut ops = Vec::new();
            match current.record.state {
                JobState::Waiting => {
                    next.state = JobState::Stopped;
                    next.stop_requested = true;
                    next.ended_ms = Some(now_ms);
                    ops.push(Op::Delete {
                        key: self.waiting_key(&current.record),
                    });
                    if let Some((compare, op)) = self.release_active(&next).await? {
                        compares.push(compare);
                        ops.push(op);
                    }
                }
                JobState::Running if current.record.stop_requested => return Ok(current.record),
                JobState::Running => next.stop_requested = true,
                state => {
                    return Err(JobError::InvalidState {
                        job_id: job_id.to_string(),
                        state,
                        action: "stop",
                    })
                }
            }
            let value = next.encode();
            ops.insert(0, self.put_record(&next, &value));
            if self.commit(job_id, compares, ops, Some(&value)).await?.is_some() {
                tracing::info!(job_id, state = %next.state, "job stop requested");
                return Ok(next);
            }
        }
        Err(JobError::Conflict(format!(
            "stop of job {job_id}: its record kept changing during {CAS_ROUNDS} attempts"
        )))
    }

    /// FAILED, STOPPED or RUNNING (stuck) -> WAITING, at the back of the queue: owner and
    /// heartbeat cleared, `stop_requested` false, error cleared, `ended_ms` `None`, progress
    /// kept (the next run resumes at the watermark), the last run's time added to
    /// `previous_runs_ms` (a stuck run counts until its last heartbeat), waiting and active
    /// indexes created, in one txn. [`JobError::Conflict`] when another active job holds the
    /// same (type, path); SUCCEEDED or WAITING -> [`JobError::InvalidState`]; unknown ->
    /// [`JobError::NotFound`]. Ignores the waiting capacity. Needs no coordinator (the CLI uses
    /// it on the store directly); the owner of a stuck job gets a Conflict on its next write.
    pub async fn rerun(&self, job_id: &str, now_ms: u64) -> Result<JobRecord, JobError> {
        for _ in 0..CAS_ROUNDS {
            let current = self
                .get(job_id)
                .await?
                .ok_or_else(|| JobError::NotFound(job_id.to_string()))?;
            let state = current.record.state;
            if matches!(state, JobState::Succeeded | JobState::Waiting) {
                return Err(JobError::InvalidState {
                    job_id: job_id.to_string(),
                    state,
                    action: "rerun",
                });
            }
            let (job_type, path) = (current.record.job_type, current.record.path.clone());
            let active_version = match self.read_active(job_type, &path).await? {
                ActiveSlot::Empty => None,
                ActiveSlot::Held(job, version) if job.record.job_id == job_id => Some(version),
                ActiveSlot::Held(job, _) => {
                    return Err(JobError::Conflict(format!(
                        "cannot rerun job {job_id}: job {} ({}) is already active for {job_type} {path}",
                        job.record.job_id, job.record.state
                    )))
                }
                ActiveSlot::Stale(version, _) => Some(version),
            };
            let mut next = current.record.clone();
            let last_run_ms = if state == JobState::Running {
                current.record.abandoned_run_ms(now_ms)
            } else {
                current.record.current_run_ms(now_ms)
            };
            next.previous_runs_ms = next.previous_runs_ms.saturating_add(last_run_ms);
            next.state = JobState::Waiting;
            next.owner = None;
            next.owner_heartbeat_ms = None;
            next.stop_requested = false;
            next.error = None;
            next.ended_ms = None;
            next.run_started_ms = None;
            next.queued_ms = now_ms;
            let value = next.encode();
            let active_key = self.active_key(job_type, &path);
            let compares = vec![
                self.record_at(&current),
                Compare::Version {
                    key: active_key.clone(),
                    version: active_version,
                },
            ];
            let ops = vec![
                self.put_record(&next, &value),
                Op::Put {
                    key: self.waiting_key(&next),
                    value: job_id.as_bytes().to_vec(),
                },
                Op::Put {
                    key: active_key,
                    value: job_id.as_bytes().to_vec(),
                },
            ];
            if self.commit(job_id, compares, ops, Some(&value)).await?.is_some() {
                tracing::info!(job_id, previous_state = %state, "job rerun: back to WAITING");
                return Ok(next);
            }
        }
        Err(JobError::Conflict(format!(
            "rerun of job {job_id}: its records kept changing during {CAS_ROUNDS} attempts"
        )))
    }

    /// RUNNING by `dead_owner` -> WAITING, back at its former place in the queue (owner and
    /// heartbeat cleared, progress kept, the run's time until its last heartbeat added to
    /// `previous_runs_ms`), in one txn. A job whose stop was requested goes to STOPPED instead
    /// (`ended_ms` = `now_ms`, active index deleted): nobody needs to run it to stop it.
    /// `Ok(false)` when the job is gone, not RUNNING, or owned by someone else (it changed
    /// meanwhile).
    pub async fn reclaim(&self, job_id: &str, dead_owner: &str, now_ms: u64) -> Result<bool, JobError> {
        for _ in 0..CAS_ROUNDS {
            let Some(current) = self.get(job_id).await? else {
                return Ok(false);
            };
            if current.record.state != JobState::Running || current.record.owner.as_deref() != Some(dead_owner) {
                return Ok(false);
            }
            let mut next = current.record.clone();
            next.previous_runs_ms = next
                .previous_runs_ms
                .saturating_add(current.record.abandoned_run_ms(now_ms));
            next.run_started_ms = None;
            next.owner = None;
            next.owner_heartbeat_ms = None;
            let mut compares = vec![self.record_at(&current)];
            let mut index_ops = Vec::new();
            if current.record.stop_requested {
                next.state = JobState::Stopped;
                next.ended_ms = Some(now_ms);
                if let Some((compare, op)) = self.release_active(&next).await? {
                    compares.push(compare);
                    index_ops.push(op);
                }
            } else {
                next.state = JobState::Waiting;
                index_ops.push(Op::Put {
                    key: self.waiting_key(&next),
                    value: job_id.as_bytes().to_vec(),
                });
            }
            let value = next.encode();
            let mut ops = vec![self.put_record(&next, &value)];
            ops.extend(index_ops);
            if self.commit(job_id, compares, ops, Some(&value)).await?.is_some() {
                tracing::info!(job_id, dead_owner, state = %next.state, "job reclaimed from a dead owner");
                return Ok(true);
            }
        }
        Err(JobError::Conflict(format!(
            "reclaim of job {job_id}: its record kept changing during {CAS_ROUNDS} attempts"
        )))
    }

    /// Deletes finished jobs whose `ended_ms` + `retention` < `now_ms` (one txn each, comparing
    /// the version read, so a job rerun meanwhile is kept); returns how many. Unreadable
    /// records are kept (for an operator to look at) and logged.
    pub async fn cleanup(&self, retention: Duration, now_ms: u64) -> Result<usize, JobError> {
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        let prefix = self.key(keys::RECORDS);
        let mut deleted = 0;
        for entry in self.store.list(&prefix).await? {
            let job_id = entry.key.strip_prefix(&prefix).unwrap_or(&entry.key).to_string();
            let record = match Self::decode_record(&entry, &job_id) {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!(key = %entry.key, error = %err, "job cleanup skips an unreadable job record");
                    continue;
                }
            };
            if !record.is_finished() {
                continue;
            }
            let ended = record.ended_ms.unwrap_or(record.created_ms);
            if ended.saturating_add(retention_ms) >= now_ms {
                continue;
            }
            let key = self.record_key(&job_id);
            let compares = vec![Compare::Version {
                key: key.clone(),
                version: Some(entry.version),
            }];
            if self
                .commit(&job_id, compares, vec![Op::Delete { key }], None)
                .await?
                .is_some()
            {
                tracing::debug!(job_id, state = %record.state, ended, "deleted an expired job");
                deleted += 1;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "job cleanup deleted expired jobs");
        }
        Ok(deleted)
    }
}

fn sort_newest_first(records: &mut [JobRecord]) {
    records.sort_by(|a, b| (b.created_ms, &b.job_id).cmp(&(a.created_ms, &a.job_id)));
}

/// Whether `stored` is still the run `mine` belongs to: RUNNING, same owner, same run.
fn owns(stored: &JobRecord, mine: &JobRecord) -> bool {
    stored.state == JobState::Running && stored.owner == mine.owner && stored.runs == mine.runs
}

fn check_owned_write(record: &JobRecord, action: &'static str) -> Result<(), JobError> {
    if record.state != JobState::Running || record.owner.is_none() {
        return Err(JobError::InvalidState {
            job_id: record.job_id.clone(),
            state: record.state,
            action,
        });
    }
    Ok(())
}

fn taken_away(mine: &JobRecord, stored: Option<&JobRecord>) -> JobError {
    let owner = mine.owner.as_deref().unwrap_or("?");
    let now = match stored {
        None => "it no longer exists".to_string(),
        Some(stored) => format!(
            "it is now {} (run {}, owner {})",
            stored.state,
            stored.runs,
            stored.owner.as_deref().unwrap_or("none")
        ),
    };
    JobError::Conflict(format!(
        "job {} was taken away from {owner} (run {}): {now}",
        mine.job_id, mine.runs
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> JobRecord {
        JobRecord::new("j1".into(), JobType::Load, "/data/a", JobOptions::default(), 1_000)
    }

    #[test]
    fn keys_are_laid_out_as_documented() {
        assert_eq!(keys::record("j1"), "job/j1");
        assert_eq!(keys::waiting(1_700_000_000_123, "j1"), "waiting/1700000000123-j1");
        assert_eq!(keys::waiting(42, "j1"), "waiting/0000000000042-j1");
        assert_eq!(keys::active(JobType::Load, "/data/a"), "active/load//data/a");
        assert_eq!(keys::active(JobType::Free, "s3://b/x"), "active/free/s3://b/x");
        assert_eq!(keys::waiting_job_id("waiting/0000000000042-j-1-2"), Some("j-1-2"));
        assert_eq!(keys::waiting_job_id("waiting/42-j1"), None);
        assert_eq!(keys::waiting_job_id("job/j1"), None);
        // Zero padding keeps key order = time order.
        let mut waiting = [
            keys::waiting(1000, "b"),
            keys::waiting(999, "c"),
            keys::waiting(1000, "a"),
        ];
        waiting.sort();
        assert_eq!(
            waiting,
            [
                keys::waiting(999, "c"),
                keys::waiting(1000, "a"),
                keys::waiting(1000, "b")
            ]
        );
    }

    #[test]
    fn prefix_gets_a_trailing_slash() {
        #[derive(Debug)]
        struct NoStore;
        #[async_trait::async_trait]
        impl MetaStore for NoStore {
            async fn get(&self, _: &str) -> Result<Option<Entry>, MetaError> {
                Ok(None)
            }
            async fn list(&self, _: &str) -> Result<Vec<Entry>, MetaError> {
                Ok(Vec::new())
            }
            async fn put(&self, _: &str, _: Vec<u8>) -> Result<(), MetaError> {
                Ok(())
            }
            async fn delete(&self, _: &str) -> Result<bool, MetaError> {
                Ok(false)
            }
            async fn txn(&self, _: Vec<Compare>, _: Vec<Op>) -> Result<Option<u64>, MetaError> {
                Ok(None)
            }
            fn kind(&self) -> &'static str {
                "NONE"
            }
        }
        let store: Arc<dyn MetaStore> = Arc::new(NoStore);
        assert_eq!(JobStore::new(store.clone(), "jobs", 1).prefix(), "jobs/");
        assert_eq!(JobStore::new(store.clone(), "jobs/", 1).prefix(), "jobs/");
        let bare = JobStore::new(store, "", 1);
        assert_eq!(bare.prefix(), "");
        assert_eq!(bare.record_key("j1"), "job/j1");
        assert_eq!(bare.kind(), "NONE");
    }

    #[test]
    fn failed_files_are_bounded_but_all_counted() {
        let mut job = record();
        for i in 0..MAX_FAILED_FILES {
            assert!(job.push_failed(format!("/data/a/{i}"), "unreadable"));
        }
        assert!(!job.push_failed("/data/a/last", "unreadable"));
        assert!(!job.push_failed(String::from("/data/a/later"), String::from("timeout")));
        assert_eq!(job.failed_files.len(), MAX_FAILED_FILES);
        assert_eq!(job.progress.files_failed, MAX_FAILED_FILES as u64 + 2);
        assert_eq!(job.failed_files[0].path, "/data/a/0");
        assert_eq!(
            job.failed_files[MAX_FAILED_FILES - 1].path,
            format!("/data/a/{}", MAX_FAILED_FILES - 1)
        );
    }

    #[test]
    fn elapsed_and_throughput_count_every_run() {
        let mut job = record();
        assert_eq!(job.elapsed_ms(5_000), 0);
        assert_eq!(job.throughput_bytes_per_sec(5_000), 0);
        // Running since 2s, 1s earlier runs.
        job.state = JobState::Running;
        job.run_started_ms = Some(2_000);
        job.previous_runs_ms = 1_000;
        job.progress.bytes_processed = 8_000;
        assert_eq!(job.elapsed_ms(5_000), 4_000);
        assert_eq!(job.throughput_bytes_per_sec(5_000), 2_000);
        // A clock behind the run start does not underflow.
        assert_eq!(job.elapsed_ms(1_000), 1_000);
        // Finished: counts until ended_ms, whatever `now` is.
        job.state = JobState::Succeeded;
        job.ended_ms = Some(3_000);
        assert_eq!(job.elapsed_ms(99_000), 2_000);
        assert_eq!(job.throughput_bytes_per_sec(99_000), 4_000);
        // Huge numbers saturate instead of overflowing.
        job.progress.bytes_processed = u64::MAX;
        job.previous_runs_ms = 0;
        job.ended_ms = Some(2_001);
        assert_eq!(job.throughput_bytes_per_sec(0), u64::MAX);
    }

    #[test]
    fn abandoned_runs_count_until_the_last_heartbeat() {
        let mut job = record();
        assert_eq!(job.abandoned_run_ms(10_000), 0);
        job.state = JobState::Running;
        job.run_started_ms = Some(2_000);
        assert_eq!(job.abandoned_run_ms(10_000), 0);
        job.owner_heartbeat_ms = Some(6_000);
        assert_eq!(job.abandoned_run_ms(10_000), 4_000);
        assert_eq!(job.abandoned_run_ms(3_000), 1_000);
    }

    #[test]
    fn json_shape() {
        let mut job = record();
        job.state = JobState::Running;
        job.options.batch_size = Some(50);
        job.push_failed("/data/a/x", "boom");
        let value: serde_json::Value = serde_json::from_slice(&job.encode()).unwrap();
        assert_eq!(value["jobId"], "j1");
        assert_eq!(value["type"], "load");
        assert_eq!(value["state"], "RUNNING");
        assert_eq!(value["createdMs"], 1_000);
        assert_eq!(
            value["options"]["replicas"],
            serde_json::Value::Null,
            "none given: the rules decide"
        );
        assert_eq!(value["options"]["batchSize"], 50);
        assert_eq!(value["options"]["skipIfExists"], false);
        assert_eq!(value["progress"]["filesFailed"], 1);
        assert_eq!(value["progress"]["listingDone"], false);
        assert_eq!(value["failedFiles"][0]["path"], "/data/a/x");
        assert_eq!(value["previousRunsMs"], 0);
        // Round trip.
        let entry = Entry {
            key: "jobs/job/j1".into(),
            value: job.encode(),
            version: 1,
        };
        assert_eq!(JobRecord::decode(&entry).unwrap(), job);
        // Options default field by field; a minimal record parses.
        let options: JobOptions = serde_json::from_str(r#"{"verify":true}"#).unwrap();
        assert_eq!(
            options,
            JobOptions {
                verify: true,
                ..JobOptions::default()
            }
        );
        let minimal: JobRecord =
            serde_json::from_str(r#"{"jobId":"j2","type":"free","path":"/p","state":"STOPPED","createdMs":5}"#)
                .unwrap();
        assert_eq!(minimal.job_type, JobType::Free);
        assert_eq!(minimal.options.replicas, None);
        let old: JobRecord = serde_json::from_str(
            r#"{"jobId":"j3","type":"load","path":"/p","state":"WAITING","createdMs":5,"options":{"replicas":2}}"#,
        )
        .unwrap();
        assert_eq!(
            old.options.replicas,
            Some(2),
            "records from before rules keep their count"
        );
        assert_eq!(minimal.progress, JobProgress::default());
    }

    #[test]
    fn states_types_and_options() {
        assert!(JobState::Succeeded.is_finished());
        assert!(JobState::Failed.is_finished());
        assert!(JobState::Stopped.is_finished());
        assert!(!JobState::Waiting.is_finished());
        assert!(!JobState::Running.is_finished());
        assert_eq!(JobState::Waiting.to_string(), "WAITING");
        assert_eq!("LOAD".parse::<JobType>(), Ok(JobType::Load));
        assert_eq!("free".parse::<JobType>(), Ok(JobType::Free));
        assert!("copy".parse::<JobType>().is_err());
        let options = JobOptions {
            replicas: Some(0),
            batch_size: Some(0),
            ..JobOptions::default()
        }
        .normalized();
        assert_eq!(options.replicas, None);
        assert_eq!(options.batch_size, None);
        assert_eq!(
            JobError::QueueFull { capacity: 3 }.to_string(),
            "the waiting queue is full (3 jobs); try again later"
        );
    }
}
