//! A job's bookkeeping, pure (no IO): which files are resolved, the checkpoint watermark, the
//! counters, and batching units of work into per-worker tasks.
//!
//! Files are numbered in listing order. The *watermark* is the first index not yet resolved:
//! every file below it is done, skipped or failed, and counted. Only those counts are
//! checkpointed, so a coordinator that resumes a job skips the first `watermark` files of the
//! listing and redoes the rest (at most what was in flight), and no file is counted twice.

use std::collections::{BTreeMap, HashMap, VecDeque};

use hoard_client::ClusterView;
use hoard_common::api::tasks::TaskFile;
use hoard_common::HoardPath;
use hoard_meta::jobs::{FailedFile, MAX_FAILED_FILES};

use super::counts::ReplicaCounts;

/// One piece of work on one worker: a file (or a range of it, or a path to free).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub file_index: u64,
    pub file: TaskFile,
    /// Workers this unit may still go to, in order (the ring's candidates not yet tried).
    pub fallbacks: VecDeque<String>,
    pub attempts: u32,
    /// Whether this unit's bytes count in the job's bytes (one replica of each file does).
    pub counts_bytes: bool,
}

/// What a worker said about one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitOutcome {
    Done { bytes: u64, skipped: bool },
    Failed { reason: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub processed: u64,
    pub skipped: u64,
    pub failed: u64,
    pub bytes: u64,
    pub retried: u64,
    /// Listed lengths of the failed files (what a final check takes out of `bytes`).
    pub failed_bytes: u64,
    /// Files that could not get every copy their count asks for, and the copies missing.
    pub short_files: u64,
    pub short_copies: u64,
}

#[derive(Debug)]
struct FileEntry {
    path: String,
    length: u64,
    pending: u32,
    bytes: u64,
    all_skipped: bool,
    failure: Option<String>,
    retries: u64,
    /// Copies the file's count asks for that no worker could take.
    missing_copies: u64,
}

/// Which files are resolved, and the counts of those below the watermark.
#[derive(Debug)]
pub struct Tracker {
    watermark: u64,
    next_index: u64,
    files: BTreeMap<u64, FileEntry>,
    counters: Counters,
    failed_files: Vec<FailedFile>,
}

impl Tracker {
    /// Resumes from a checkpoint: `watermark` files already resolved, with these counts.
    pub fn resume(watermark: u64, counters: Counters, failed_files: Vec<FailedFile>) -> Tracker {
        Tracker {
            watermark,
            next_index: watermark,
            files: BTreeMap::new(),
            counters,
            failed_files,
        }
    }

    /// The index the next listed file gets.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// A listed file of `length` bytes with `units` pieces of work in flight for it (0:
    /// resolved at once, e.g. an empty file).
    pub fn add_file(&mut self, path: String, length: u64, units: u32) -> u64 {
        let index = self.next_index;
        self.next_index += 1;
        self.files.insert(
            index,
            FileEntry {
                path,
                length,
                pending: units,
                bytes: 0,
                all_skipped: units > 0,
                failure: None,
                retries: 0,
                missing_copies: 0,
            },
        );
        self.fold();
        index
    }

    /// A file that failed before any work was sent for it.
    pub fn fail_file(&mut self, path: String, length: u64, reason: String) {
        let index = self.add_file(path, length, 1);
        self.unit_finished(index, UnitOutcome::Failed { reason });
    }

    /// File `file_index` lacks `copies` more of the copies its count asks for.
    pub fn note_shortfall(&mut self, file_index: u64, copies: usize) {
        if let Some(entry) = self.files.get_mut(&file_index) {
            entry.missing_copies += copies as u64;
        }
    }

    pub fn unit_retried(&mut self, file_index: u64) {
        if let Some(entry) = self.files.get_mut(&file_index) {
            entry.retries += 1;
        }
    }

    pub fn unit_finished(&mut self, file_index: u64, outcome: UnitOutcome) {
        let Some(entry) = self.files.get_mut(&file_index) else {
            debug_assert!(false, "unit of an unknown file {file_index}");
            return;
        };
        debug_assert!(entry.pending > 0);
        entry.pending = entry.pending.saturating_sub(1);
        match outcome {
            UnitOutcome::Done { bytes, skipped } => {
                entry.bytes += bytes;
                entry.all_skipped &= skipped;
            }
            UnitOutcome::Failed { reason } => {
                entry.all_skipped = false;
                entry.failure.get_or_insert(reason);
            }
        }
        self.fold();
    }

    fn fold(&mut self) {
        while let Some(entry) = self.files.get(&self.watermark) {
            if entry.pending > 0 {
                break;
            }
            let Some(entry) = self.files.remove(&self.watermark) else {
                break;
            };
            self.counters.retried += entry.retries;
            if entry.missing_copies > 0 {
                self.counters.short_files += 1;
                self.counters.short_copies += entry.missing_copies;
            }
            match entry.failure {
                Some(reason) => {
                    self.counters.failed += 1;
                    self.counters.failed_bytes += entry.length;
                    if self.failed_files.len() < MAX_FAILED_FILES {
                        self.failed_files.push(FailedFile {
                            path: entry.path,
                            reason,
                        });
                    }
                }
                None if entry.all_skipped => self.counters.skipped += 1,
                None => {
                    self.counters.processed += 1;
                    self.counters.bytes += entry.bytes;
                }
            }
            self.watermark += 1;
        }
    }

    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Counts of the files below the watermark (what a checkpoint stores).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn failed_files(&self) -> &[FailedFile] {
        &self.failed_files
    }

    /// Files listed but not resolved yet, or resolved above an unresolved one.
    pub fn unfolded(&self) -> usize {
        self.files.len()
    }

    pub fn all_resolved(&self) -> bool {
        self.files.is_empty()
    }

    /// Takes in what a later pass over the job's files (`recheck`, every file resolved: a final
    /// check's, a repair's trim) found: its failures (for a final check, files missing on an
    /// owner that could not be loaded again) are counted failed instead of processed (skipped,
    /// when fewer were processed), their bytes taken out, and named with `what` before the
    /// reason.
    pub fn take_pass(&mut self, recheck: &Tracker, what: &str) {
        debug_assert!(recheck.all_resolved());
        let found = recheck.counters();
        let from_processed = found.failed.min(self.counters.processed);
        self.counters.processed -= from_processed;
        self.counters.skipped = self.counters.skipped.saturating_sub(found.failed - from_processed);
        self.counters.bytes = self.counters.bytes.saturating_sub(found.failed_bytes);
        self.counters.failed += found.failed;
        self.counters.failed_bytes += found.failed_bytes;
        self.counters.retried += found.retried;
        for failed in recheck.failed_files() {
            if self.failed_files.len() >= MAX_FAILED_FILES {
                break;
            }
            self.failed_files.push(FailedFile {
                path: failed.path.clone(),
                reason: format!("{what}: {}", failed.reason),
            });
        }
    }
}

/// Largest encoded task a batch may make (well under the worker's 8MiB body limit, whatever
/// the path lengths).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Per-worker batching: units collect in a worker's open batch until it holds `batch_size`
/// units (or [`MAX_BATCH_BYTES`] of paths), then the batch is ready to send.
#[derive(Debug)]
pub struct Batcher {
    batch_size: usize,
    /// Open batches with their estimated encoded size.
    open: HashMap<String, (Vec<Unit>, usize)>,
    ready: VecDeque<(String, Vec<Unit>)>,
    queued_units: usize,
}

/// A unit's share of a task body: its path plus the JSON around it.
fn encoded_size(unit: &Unit) -> usize {
    unit.file.path.len() * 2 + 64
}

impl Batcher {
    pub fn new(batch_size: usize) -> Batcher {
        debug_assert!(batch_size > 0);
        Batcher {
            batch_size: batch_size.max(1),
            open: HashMap::new(),
            ready: VecDeque::new(),
            queued_units: 0,
        }
    }

    /// Adds a unit for `worker`; `alone` units (ranges of large files) make a task by
    /// themselves.
    pub fn push(&mut self, worker: &str, unit: Unit, alone: bool) {
        self.queued_units += 1;
        if alone {
            self.ready.push_back((worker.to_string(), vec![unit]));
            return;
        }
        let size = encoded_size(&unit);
        let (batch, bytes) = self.open.entry(worker.to_string()).or_default();
        batch.push(unit);
        *bytes += size;
        if batch.len() >= self.batch_size || *bytes >= MAX_BATCH_BYTES {
            let full = std::mem::take(batch);
            *bytes = 0;
            self.ready.push_back((worker.to_string(), full));
        }
    }

    /// Takes every queued unit of `worker` (open or ready), e.g. because it went OFFLINE.
    pub fn drain_worker(&mut self, worker: &str) -> Vec<Unit> {
        let mut units = self.open.remove(worker).map(|(batch, _)| batch).unwrap_or_default();
        let mut kept = VecDeque::new();
        for (owner, batch) in self.ready.drain(..) {
            if owner == worker {
                units.extend(batch);
            } else {
                kept.push_back((owner, batch));
            }
        }
        self.ready = kept;
        self.queued_units -= units.len();
        units
    }

    /// Workers with units queued.
    pub fn queued_workers(&self) -> Vec<String> {
        let mut workers: Vec<String> = self
            .open
            .iter()
            .filter(|(_, (batch, _))| !batch.is_empty())
            .map(|(worker, _)| worker.clone())
            .chain(self.ready.iter().map(|(worker, _)| worker.clone()))
            .collect();
        workers.sort();
        workers.dedup();
        workers
    }

    /// Drops everything queued (a stopped job sends nothing more).
    pub fn clear(&mut self) {
        self.open.clear();
        self.ready.clear();
        self.queued_units = 0;
    }

    /// Moves every open batch to ready (the listing ended, or work is waiting on them).
    pub fn flush(&mut self) {
        let mut workers: Vec<String> = self.open.keys().cloned().collect();
        workers.sort();
        for worker in workers {
            if let Some((batch, _)) = self.open.remove(&worker) {
                if !batch.is_empty() {
                    self.ready.push_back((worker, batch));
                }
            }
        }
    }

    /// The first ready batch whose worker `can_take` accepts.
    pub fn take_ready(&mut self, mut can_take: impl FnMut(&str) -> bool) -> Option<(String, Vec<Unit>)> {
        let position = self.ready.iter().position(|(worker, _)| can_take(worker))?;
        let (worker, units) = self.ready.remove(position)?;
        self.queued_units -= units.len();
        Some((worker, units))
    }

    /// Units not yet sent (open or ready).
    pub fn queued_units(&self) -> usize {
        self.queued_units
    }

    pub fn ready_batches(&self) -> usize {
        self.ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued_units == 0
    }
}

/// One copy of a file to make (or free): the worker, and where it goes next when that worker
/// fails it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub worker: String,
    pub fallbacks: VecDeque<String>,
}

/// What a job does to each file's copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Make the file's copies: its placement's replicas.
    Replicas,
    /// Act on every copy there may be (free; a metadata refresh): every ONLINE worker, since a
    /// copy may sit on a worker the placement no longer names.
    Everywhere,
    /// The copies that should not be there (a repair frees them): every ONLINE worker that is
    /// not among the file's replicas.
    Outside,
}

/// The copies of a file under `view`, and how many copies it cannot have (a cluster has fewer
/// ONLINE workers than its count). A load makes `counts`' copies in every cluster, on the
/// placement's replicas; each copy retries on its own share of its cluster's other workers
/// (at most `max_attempts - 1`), so two failed copies never land on one worker and a copy never
/// leaves its cluster. [`Reach::Everywhere`] goes to every ONLINE worker, each retrying on
/// itself (the only one that can free or refresh its copy).
pub fn targets(
    view: &ClusterView,
    path: &HoardPath,
    reach: Reach,
    counts: &ReplicaCounts,
    max_attempts: usize,
) -> (Vec<Target>, usize) {
    let retries = max_attempts.saturating_sub(1);
    if reach != Reach::Replicas {
        let replicas: Vec<String> = match reach {
            Reach::Outside => counts.placement(view, path).replicas().map(super::worker_key).collect(),
            _ => Vec::new(),
        };
        let online = view
            .nodes
            .iter()
            .filter(|node| node.online)
            .map(super::worker_key)
            .filter(|worker| !replicas.contains(worker));
        let targets = online
            .map(|worker| Target {
                fallbacks: std::iter::repeat_n(worker.clone(), retries).collect(),
                worker,
            })
            .collect();
        return (targets, 0);
    }
    let placement = counts.placement(view, path);
    let mut targets = Vec::new();
    for cluster in &placement.clusters {
        let copies = cluster.replicas.len();
        for (replica, node) in cluster.replicas.iter().enumerate() {
            let fallbacks = cluster
                .fallbacks
                .iter()
                .skip(replica)
                .step_by(copies.max(1))
                .take(retries)
                .map(super::worker_key)
                .collect();
            targets.push(Target {
                worker: super::worker_key(node),
                fallbacks,
            });
        }
    }
    (targets, placement.shortfall())
}

/// The units of file `index`: one per target and range. A load counts each file's bytes once
/// (first copy); a free counts what every worker freed.
pub fn file_units(
    index: u64,
    path: &str,
    targets: &[Target],
    ranges: &[(Option<u64>, Option<u64>)],
    free: bool,
) -> Vec<(String, Unit)> {
    let mut units = Vec::with_capacity(targets.len() * ranges.len());
    for (replica, target) in targets.iter().enumerate() {
        for (offset, length) in ranges {
            let unit = Unit {
                file_index: index,
                file: TaskFile {
                    path: path.to_string(),
                    offset: *offset,
                    length: *length,
                },
                fallbacks: target.fallbacks.clone(),
                attempts: 1,
                counts_bytes: replica == 0 || free,
            };
            units.push((target.worker.clone(), unit));
        }
    }
    units
}

/// The ranges a file of `length` bytes is loaded in: one unit when it fits a partition.
pub fn partitions(length: u64, partition_size: u64) -> Vec<(Option<u64>, Option<u64>)> {
    if length <= partition_size || partition_size == 0 {
        return vec![(None, None)];
    }
    let mut ranges = Vec::new();
    let mut offset = 0;
    while offset < length {
        let len = partition_size.min(length - offset);
        ranges.push((Some(offset), Some(len)));
        offset += len;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(index: u64, path: &str) -> Unit {
        Unit {
            file_index: index,
            file: TaskFile {
                path: path.into(),
                offset: None,
                length: None,
            },
            fallbacks: VecDeque::new(),
            attempts: 1,
            counts_bytes: true,
        }
    }

    #[test]
    fn watermark_moves_only_over_resolved_files() {
        let mut tracker = Tracker::resume(0, Counters::default(), Vec::new());
        let a = tracker.add_file("/a".into(), 10, 1);
        let b = tracker.add_file("/b".into(), 10, 2);
        let c = tracker.add_file("/c".into(), 10, 1);
        tracker.unit_finished(
            c,
            UnitOutcome::Done {
                bytes: 5,
                skipped: false,
            },
        );
        assert_eq!(tracker.watermark(), 0, "c is done but a is not");
        tracker.unit_finished(
            a,
            UnitOutcome::Done {
                bytes: 10,
                skipped: false,
            },
        );
        assert_eq!(tracker.watermark(), 1);
        tracker.unit_finished(
            b,
            UnitOutcome::Done {
                bytes: 3,
                skipped: false,
            },
        );
        assert_eq!(tracker.watermark(), 1, "b has a second unit");
        tracker.unit_retried(b);
        tracker.unit_finished(b, UnitOutcome::Failed { reason: "boom".into() });
        assert_eq!(tracker.watermark(), 3);
        assert_eq!(
            tracker.counters(),
            &Counters {
                processed: 2,
                skipped: 0,
                failed: 1,
                bytes: 15,
                retried: 1,
                failed_bytes: 10,
                short_files: 0,
                short_copies: 0,
            }
        );
        assert_eq!(tracker.failed_files()[0].path, "/b");
        assert!(tracker.all_resolved());
    }

    #[test]
    fn resume_counts_each_file_once() {
        // First run: 3 files resolved, the 4th in flight when the coordinator died.
        let mut first = Tracker::resume(0, Counters::default(), Vec::new());
        for name in ["/0", "/1", "/2", "/3"] {
            first.add_file(name.into(), 10, 1);
        }
        for index in 0..3 {
            first.unit_finished(
                index,
                UnitOutcome::Done {
                    bytes: 1,
                    skipped: false,
                },
            );
        }
        let checkpoint = (first.watermark(), first.counters().clone());
        assert_eq!(checkpoint.0, 3);
        // Resume: the listing skips 3 files, then lists /3 and /4 again.
        let mut second = Tracker::resume(checkpoint.0, checkpoint.1, Vec::new());
        let index = second.add_file("/3".into(), 10, 1);
        assert_eq!(index, 3);
        let last = second.add_file("/4".into(), 10, 1);
        second.unit_finished(
            index,
            UnitOutcome::Done {
                bytes: 1,
                skipped: false,
            },
        );
        second.unit_finished(
            last,
            UnitOutcome::Done {
                bytes: 0,
                skipped: true,
            },
        );
        assert_eq!(second.counters().processed, 4);
        assert_eq!(second.counters().skipped, 1);
        assert_eq!(second.watermark(), 5);
    }

    #[test]
    fn a_final_check_moves_its_failures_from_processed_to_failed() {
        let mut job = Tracker::resume(0, Counters::default(), Vec::new());
        for (name, length) in [("/a", 10), ("/b", 20), ("/c", 30)] {
            let index = job.add_file(name.into(), length, 1);
            job.unit_finished(
                index,
                UnitOutcome::Done {
                    bytes: length,
                    skipped: false,
                },
            );
        }
        // The check sends /b and /c again: /b was whole, /c cannot be loaded.
        let mut recheck = Tracker::resume(0, Counters::default(), Vec::new());
        let b = recheck.add_file("/b".into(), 20, 1);
        let c = recheck.add_file("/c".into(), 30, 1);
        recheck.unit_finished(
            b,
            UnitOutcome::Done {
                bytes: 0,
                skipped: true,
            },
        );
        recheck.unit_retried(c);
        recheck.unit_finished(
            c,
            UnitOutcome::Failed {
                reason: "w2: gone".into(),
            },
        );
        job.take_pass(&recheck, "final check");
        let counters = job.counters();
        assert_eq!((counters.processed, counters.failed, counters.bytes), (2, 1, 30));
        assert_eq!(counters.retried, 1);
        assert_eq!(job.failed_files()[0].path, "/c");
        assert_eq!(job.failed_files()[0].reason, "final check: w2: gone");
    }

    #[test]
    fn empty_files_and_failed_lists_are_bounded() {
        let mut tracker = Tracker::resume(0, Counters::default(), Vec::new());
        tracker.add_file("/empty".into(), 10, 0);
        assert_eq!(tracker.watermark(), 1);
        for i in 0..(MAX_FAILED_FILES + 20) {
            tracker.fail_file(format!("/f{i}"), 0, "gone".into());
        }
        assert_eq!(tracker.counters().failed, (MAX_FAILED_FILES + 20) as u64);
        assert_eq!(tracker.failed_files().len(), MAX_FAILED_FILES);
    }

    #[test]
    fn batches_per_worker_and_alone_units() {
        let mut batcher = Batcher::new(2);
        batcher.push("w1", unit(0, "/a"), false);
        batcher.push("w2", unit(1, "/b"), false);
        assert_eq!(batcher.ready_batches(), 0);
        batcher.push("w1", unit(2, "/c"), false);
        batcher.push("w2", unit(3, "/big"), true);
        assert_eq!(batcher.ready_batches(), 2);
        assert_eq!(batcher.queued_units(), 4);
        // w1 is at its task limit: w2's batch goes first.
        let (worker, units) = batcher.take_ready(|w| w != "w1").unwrap();
        assert_eq!((worker.as_str(), units.len()), ("w2", 1));
        let (worker, units) = batcher.take_ready(|_| true).unwrap();
        assert_eq!((worker.as_str(), units.len()), ("w1", 2));
        batcher.flush();
        let (worker, units) = batcher.take_ready(|_| true).unwrap();
        assert_eq!((worker.as_str(), units[0].file.path.as_str()), ("w2", "/b"));
        assert!(batcher.is_empty());
    }

    #[test]
    fn long_paths_close_a_batch_before_the_body_limit() {
        let mut batcher = Batcher::new(10_000);
        let long = format!("/{}", "x".repeat(4000));
        for i in 0..2000 {
            batcher.push("w1", unit(i, &long), false);
        }
        let (_, first) = batcher.take_ready(|_| true).expect("a batch closed on size");
        assert!(first.len() < 2000);
        let encoded: usize = first.iter().map(encoded_size).sum();
        assert!((MAX_BATCH_BYTES..MAX_BATCH_BYTES + 10_000).contains(&encoded));
    }

    #[test]
    fn draining_a_worker_takes_its_open_and_ready_units() {
        let mut batcher = Batcher::new(2);
        batcher.push("w1", unit(0, "/a"), false);
        batcher.push("w1", unit(1, "/b"), false);
        batcher.push("w1", unit(2, "/c"), false);
        batcher.push("w2", unit(3, "/d"), false);
        assert_eq!(batcher.queued_workers(), vec!["w1".to_string(), "w2".to_string()]);
        let drained = batcher.drain_worker("w1");
        assert_eq!(drained.len(), 3);
        assert_eq!(batcher.queued_units(), 1);
        batcher.clear();
        assert!(batcher.is_empty());
    }

    #[test]
    fn large_files_split_into_partitions() {
        assert_eq!(partitions(10, 10), vec![(None, None)]);
        assert_eq!(
            partitions(25, 10),
            vec![(Some(0), Some(10)), (Some(10), Some(10)), (Some(20), Some(5))]
        );
        assert_eq!(partitions(0, 10), vec![(None, None)]);
    }
}
