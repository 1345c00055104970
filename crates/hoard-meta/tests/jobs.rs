//! The job store on both backends: each scenario is an async fn taking the metastore, run once
//! on an embedded store in a temp dir and once on a real etcd (hoard-testkit starts one per test).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hoard_config::EtcdConfig;
use hoard_meta::embedded::EmbeddedStore;
use hoard_meta::etcd::EtcdStore;
use hoard_meta::jobs::{
    keys, JobError, JobOptions, JobProgress, JobRecord, JobState, JobStore, JobType, MAX_FAILED_FILES,
};
use hoard_meta::{Compare, Entry, MetaError, MetaStore, Op};
use hoard_testkit::Etcd;

const CAPACITY: u32 = 100;

/// The prefix the coordinator uses on each backend: `jobs/` in the embedded file, nothing on an
/// etcd store rooted at the job path.
fn prefix(store: &Arc<dyn MetaStore>) -> &'static str {
    if store.kind() == "EMBEDDED" {
        "jobs/"
    } else {
        ""
    }
}

fn jobs(store: &Arc<dyn MetaStore>, capacity: u32) -> JobStore {
    JobStore::new(store.clone(), prefix(store), capacity)
}

fn embedded() -> (tempfile::TempDir, Arc<dyn MetaStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("meta/meta.redb")).expect("embedded store");
    (dir, Arc::new(store))
}

async fn etcd_store(etcd: &Etcd) -> Arc<dyn MetaStore> {
    let config = EtcdConfig {
        endpoints: vec![etcd.endpoint()],
        root: "/hoard/test/jobs/".to_string(),
        // Generous: the concurrency test runs many requests at once on a small machine.
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        max_retries: 2,
    };
    Arc::new(EtcdStore::connect(&config).await.expect("connect to etcd"))
}

/// Two tests per scenario: `embedded::<name>` and `etcd::<name>`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_dir, store) = super::embedded();
                    super::$name(store).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let etcd = hoard_testkit::Etcd::start().await;
                    let store = super::etcd_store(&etcd).await;
                    assert_eq!(store.kind(), "ETCD");
                    super::$name(store).await;
                }
            )*
        }
    };
}

on_both_backends!(
    submit_returns_the_active_job_until_it_finishes,
    capacity_refuses_new_jobs_when_the_queue_is_full,
    concurrent_claims_win_each_job_exactly_once,
    checkpoint_by_a_non_owner_or_after_reclaim_conflicts,
    stop_request_survives_a_checkpoint,
    request_stop_of_waiting_and_finished_jobs,
    finish_releases_the_path,
    rerun_requeues_with_progress_kept,
    rerun_is_refused_for_succeeded_and_busy_paths,
    reclaim_only_from_the_dead_owner,
    cleanup_deletes_only_old_finished_jobs,
    list_latest_and_waiting_order,
    corrupt_record_is_surfaced,
);

async fn submit(store: &JobStore, path: &str, now_ms: u64) -> JobRecord {
    let (record, created) = store
        .submit(JobType::Load, path, JobOptions::default(), now_ms)
        .await
        .expect("submit");
    assert!(created, "expected a new job for {path}");
    record
}

async fn claim(store: &JobStore, job_id: &str, owner: &str, now_ms: u64) -> (JobRecord, u64) {
    let claimed = store
        .claim(job_id, owner, now_ms)
        .await
        .expect("claim")
        .unwrap_or_else(|| panic!("{owner} could not claim {job_id}"));
    (claimed.record, claimed.version)
}

async fn stored(store: &JobStore, job_id: &str) -> JobRecord {
    store.get(job_id).await.expect("get").expect("job exists").record
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, JobError>, what: &str) {
    match result {
        Err(JobError::Conflict(_)) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

fn assert_invalid_state<T: std::fmt::Debug>(result: Result<T, JobError>, expected: JobState, what: &str) {
    match result {
        Err(JobError::InvalidState { state, .. }) if state == expected => {}
        other => panic!("{what}: expected InvalidState({expected}), got {other:?}"),
    }
}

async fn submit_returns_the_active_job_until_it_finishes(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, CAPACITY);
    let options = JobOptions {
        replicas: Some(2),
        verify: true,
        ..JobOptions::default()
    };
    let (first, created) = store
        .submit(JobType::Load, "/data/a", options.clone(), 1_000)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first.state, JobState::Waiting);
    assert_eq!(first.options, options);
    assert_eq!(first.created_ms, 1_000);
    assert_eq!(stored(&store, &first.job_id).await, first);

    // While WAITING: the same job, whatever the options.
    let (again, created) = store
        .submit(JobType::Load, "/data/a", JobOptions::default(), 2_000)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.job_id, first.job_id);
    assert_eq!(again.options, options);
    // Another type on the same path is another job.
    let (free, created) = store
        .submit(JobType::Free, "/data/a", JobOptions::default(), 2_600)
        .await
        .unwrap();
    assert!(created, "a free job is not the load job");
    assert_ne!(free.job_id, first.job_id);

    // While RUNNING: still the same job.
    let (running, version) = claim(&store, &first.job_id, "c1", 3_000).await;
    let (again, created) = store
        .submit(JobType::Load, "/data/a", JobOptions::default(), 3_500)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.job_id, first.job_id);
    assert_eq!(again.state, JobState::Running);

    // Finished: a new job.
    store
        .finish(&running, version, JobState::Succeeded, None, 4_000)
        .await
        .unwrap();
    let (second, created) = store
        .submit(JobType::Load, "/data/a", JobOptions::default(), 5_000)
        .await
        .unwrap();
    assert!(created);
    assert_ne!(second.job_id, first.job_id);
    assert_eq!(
        store.active(JobType::Load, "/data/a").await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(stored(&store, &first.job_id).await.state, JobState::Succeeded);
    assert_eq!(store.list().await.unwrap().len(), 3);
}

async fn capacity_refuses_new_jobs_when_the_queue_is_full(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, 3);
    let mut ids = Vec::new();
    for (i, path) in ["/a", "/b", "/c"].iter().enumerate() {
        ids.push(submit(&store, path, 1_000 + i as u64).await.job_id);
    }
    match store.submit(JobType::Load, "/d", JobOptions::default(), 2_000).await {
        Err(JobError::QueueFull { capacity: 3 }) => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
    // Nothing stored for it.
    assert_eq!(store.list().await.unwrap().len(), 3);
    assert_eq!(store.waiting_count().await.unwrap(), 3);
    assert_eq!(store.active(JobType::Load, "/d").await.unwrap(), None);
    assert_eq!(
        meta.get(&format!("{}{}", prefix(&meta), keys::active(JobType::Load, "/d")))
            .await
            .unwrap(),
        None
    );
    // A job already in the queue is still found.
    let (again, created) = store
        .submit(JobType::Load, "/b", JobOptions::default(), 2_100)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.job_id, ids[1]);
    // A claimed job leaves the queue and makes room.
    claim(&store, &ids[0], "c1", 2_200).await;
    let d = submit(&store, "/d", 2_300).await;
    assert_eq!(
        store.waiting(10).await.unwrap(),
        vec![ids[1].clone(), ids[2].clone(), d.job_id]
    );
}

async fn concurrent_claims_win_each_job_exactly_once(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, CAPACITY);
    let mut ids = Vec::new();
    for i in 0..10u64 {
        ids.push(submit(&store, &format!("/data/{i}"), 1_000 + i).await.job_id);
    }
    let ids = Arc::new(ids);
    let claimer_count = 20usize;
    let start = Arc::new(tokio::sync::Barrier::new(claimer_count));
    let mut claimers = Vec::new();
    for c in 0..claimer_count {
        let store = store.clone();
        let ids = ids.clone();
        let start = start.clone();
        claimers.push(tokio::spawn(async move {
            let owner = format!("coordinator-{c}");
            let mut won = Vec::new();
            start.wait().await;
            // Every claimer tries every job, starting at a different one. Half of them claim
            // by id; the others read every record first, in one request, and claim what they
            // read (as the scheduler does), so their reads are often stale.
            let order: Vec<String> = (0..ids.len()).map(|k| ids[(c + k) % ids.len()].clone()).collect();
            if c % 2 == 0 {
                for job_id in &order {
                    if let Some(claimed) = store.claim(job_id, &owner, 5_000).await.expect("claim") {
                        assert_eq!(claimed.record.owner.as_deref(), Some(owner.as_str()));
                        won.push((job_id.clone(), claimed.version));
                    }
                }
            } else {
                let read = store.records(&order).await.expect("records");
                assert_eq!(read.len(), order.len());
                for job in &read {
                    if let Some(claimed) = store.claim_read(job, &owner, 5_000).await.expect("claim") {
                        assert_eq!(claimed.record.owner.as_deref(), Some(owner.as_str()));
                        won.push((job.record.job_id.clone(), claimed.version));
                    }
                }
            }
            (owner, won)
        }));
    }
    let mut winners: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for claimer in claimers {
        let (owner, won) = claimer.await.expect("claimer task");
        for (job_id, version) in won {
            winners.entry(job_id).or_default().push((owner.clone(), version));
        }
    }
    for job_id in ids.iter() {
        let owners = winners.get(job_id).cloned().unwrap_or_default();
        assert_eq!(owners.len(), 1, "job {job_id} claimed by {owners:?}");
        let (winner, version) = &owners[0];
        // Nobody wrote the job after the winner's claim.
        let now = store.get(job_id).await.unwrap().expect("job exists");
        assert_eq!(now.version, *version);
        let record = now.record;
        assert_eq!(record.state, JobState::Running);
        assert_eq!(record.owner.as_ref(), Some(winner));
        assert_eq!(record.runs, 1);
        assert_eq!(record.started_ms, Some(5_000));
    }
    assert_eq!(store.waiting_count().await.unwrap(), 0);
    // A claim of a RUNNING job loses.
    assert_eq!(store.claim(&ids[0], "late", 6_000).await.unwrap(), None);
    assert_eq!(store.claim("no-such-job", "late", 6_000).await.unwrap(), None);
}

async fn checkpoint_by_a_non_owner_or_after_reclaim_conflicts(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, CAPACITY);
    let job = submit(&store, "/data/a", 1_000).await;
    let (mut mine, version) = claim(&store, &job.job_id, "c1", 2_000).await;

    // The owner checkpoints: progress and heartbeat stored, the version moves.
    mine.progress.files_listed = 10;
    mine.progress.watermark = 4;
    mine.progress.files_processed = 4;
    mine.progress.bytes_processed = 4096;
    mine.owner_heartbeat_ms = Some(3_000);
    let v2 = store.checkpoint(&mine, version).await.unwrap();
    assert!(v2 > version);
    let now = store.get(&job.job_id).await.unwrap().unwrap();
    assert_eq!(now.version, v2);
    assert_eq!(now.record, mine);

    // Someone else writing as if it owned the job, with a version it saw earlier (a version
    // is only current for the owner whose write returned it: see `JobStore::checkpoint`).
    let mut impostor = mine.clone();
    impostor.owner = Some("c2".into());
    assert_conflict(store.checkpoint(&impostor, version).await, "checkpoint by a non-owner");
    assert_conflict(
        store.finish(&impostor, version, JobState::Succeeded, None, 3_500).await,
        "finish by a non-owner",
    );
    assert_eq!(
        store.get(&job.job_id).await.unwrap().unwrap().record,
        mine,
        "nothing written"
    );
    // A record that is not RUNNING cannot be written by an owner.
    let mut waiting = mine.clone();
    waiting.state = JobState::Waiting;
    assert_invalid_state(
        store.checkpoint(&waiting, v2).await,
        JobState::Waiting,
        "checkpoint of WAITING",
    );

    // c1 is declared dead and its job reclaimed: its next write conflicts.
    assert!(store.reclaim(&job.job_id, "c1", 4_000).await.unwrap());
    mine.progress.watermark = 8;
    assert_conflict(store.checkpoint(&mine, v2).await, "checkpoint after reclaim");
    // Claimed again (even by the same coordinator id): the old run still conflicts.
    let (again, v3) = claim(&store, &job.job_id, "c1", 5_000).await;
    assert_eq!(again.runs, 2);
    assert_conflict(store.checkpoint(&mine, v2).await, "checkpoint of an old run");
    assert_conflict(
        store.finish(&mine, v2, JobState::Failed, Some("x".into()), 5_500).await,
        "finish of an old run",
    );
    // The new run's progress was resumed from the checkpoint, not from the stale writer.
    assert_eq!(again.progress.watermark, 4);
    store.checkpoint(&again, v3).await.unwrap();
}

async fn stop_request_survives_a_checkpoint(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, CAPACITY);
    let job = submit(&store, "/data/a", 1_000).await;
    let (mut mine, version) = claim(&store, &job.job_id, "c1", 2_000).await;
    assert!(!mine.stop_requested);

    let stopping = store.request_stop(&job.job_id, 2_500).await.unwrap();
    assert_eq!(stopping.state, JobState::Running);
    assert!(stopping.stop_requested);
    // Asking again changes nothing.
    let before = store.get(&job.job_id).await.unwrap().unwrap();
    assert_eq!(store.request_stop(&job.job_id, 2_600).await.unwrap(), before.record);
    assert_eq!(store.get(&job.job_id).await.unwrap().unwrap().version, before.version);

    // The owner checkpoints with its stale record and version: merged, the stop is kept.
    mine.progress.files_processed = 7;
    mine.progress.watermark = 7;
    mine.owner_heartbeat_ms = Some(3_000);
    let written = store.checkpoint_record(&mine, version).await.unwrap();
    assert!(written.record.stop_requested);
    assert_eq!(written.record.progress.files_processed, 7);
    let now = store.get(&job.job_id).await.unwrap().unwrap();
    assert_eq!(now, written);
    // A second stale write (still without the flag) keeps it too.
    let v = store.checkpoint(&mine, version).await.unwrap();
    let now = store.get(&job.job_id).await.unwrap().unwrap();
    assert_eq!(now.version, v);
    assert!(now.record.stop_requested);

    // The owner finishes it STOPPED (from the record as stored at its version): the path is
    // free.
    let finished = store
        .finish(&now.record, v, JobState::Stopped, None, 4_000)
        .await
        .unwrap();
    assert_eq!(finished.state, JobState::Stopped);
    assert!(finished.stop_requested);
    assert_eq!(finished.ended_ms, Some(4_000));
    assert_eq!(finished.progress.files_processed, 7);
    assert_eq!(stored(&store, &job.job_id).await, finished);
    assert_eq!(store.active(JobType::Load, "/data/a").await.unwrap(), None);
}

async fn request_stop_of_waiting_and_finished_jobs(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, CAPACITY);
    let job = submit(&store, "/data/a", 1_000).await;
    let other = submit(&store, "/data/b", 1_001).await;
    let stopped = store.request_stop(&job.job_id, 2_000).await.unwrap();
    assert_eq!(stopped.state, JobState::Stopped);
    assert_eq!(stopped.ended_ms, Some(2_000));
    assert_eq!(stored(&store, &job.job_id).await, stopped);
    // Its indexes are gone at once, the other job's kept.
    assert_eq!(store.waiting(10).await.unwrap(), vec![other.job_id.clone()]);
    assert_eq!(store.active(JobType::Load, "/data/a").await.unwrap(), None);
    assert_eq!(
        meta.get(&format!("{}{}", prefix(&meta), keys::active(JobType::Load, "/data/a")))
            .await
            .unwrap(),
        None
    );
    // A claim of it loses.
    assert_eq!(store.claim(&job.job_id, "c1", 2_100).await.unwrap(), None);
    // Finished jobs cannot be stopped; unknown ones are not found.
    assert_invalid_state(
        store.request_stop(&job.job_id, 2_200).await,
        JobState::Stopped,
        "stop STOPPED",
    );
    match store.request_stop("no-such-job", 2_300).await {
        Err(JobError::NotFound(id)) => assert_eq!(id, "no-such-job"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

async fn finish_releases_the_path(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, CAPACITY);
    let job = submit(&store, "/data/a", 1_000).await;
    let (mut mine, version) = claim(&store, &job.job_id, "c1", 2_000).await;
    mine.push_failed("/data/a/f1", "UFS read failed");
    let failed = store
        .finish(&mine, version, JobState::Failed, Some("1 file failed".into()), 5_000)
        .await
        .unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.error.as_deref(), Some("1 file failed"));
    assert_eq!(failed.ended_ms, Some(5_000));
    assert_eq!(failed.progress.files_failed, 1);
    assert_eq!(failed.elapsed_ms(99_000), 3_000);
    assert_eq!(stored(&store, &job.job_id).await, failed);
    assert_eq!(store.active(JobType::Load, "/data/a").await.unwrap(), None);
    assert_eq!(
        meta.get(&format!("{}{}", prefix(&meta), keys::active(JobType::Load, "/data/a")))
            .await
            .unwrap(),
        None
    );
    // Finishing twice: the job is no longer RUNNING.
    assert_conflict(
        store.finish(&mine, version, JobState::Succeeded, None, 6_000).await,
        "finish of a finished job",
    );
    // Not a final state.
    assert!(matches!(
        store.finish(&mine, version, JobState::Waiting, None, 6_000).await,
        Err(JobError::InvalidState { .. })
    ));
    let next = submit(&store, "/data/a", 7_000).await;
    assert_ne!(next.job_id, job.job_id);
    assert_eq!(store.latest(JobType::Load, "/data/a").await.unwrap(), Some(next));
}

async fn rerun_requeues_with_progress_kept(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, CAPACITY);
    let job = submit(&store, "/data/a", 1_000).await;
    let queued_later = submit(&store, "/data/b", 1_500).await;

    // Run 1 gets to file 5 and fails.
    let (mut mine, version) = claim(&store, &job.job_id, "c1", 2_000).await;
    mine.progress = JobProgress {
        files_listed: 20,
        watermark: 5,
        files_processed: 4,
        files_failed: 0,
        bytes_processed: 5_000,
        ..JobProgress::default()
    };
    mine.push_failed("/data/a/3", "boom");
    mine.owner_heartbeat_ms = Some(3_000);
    let version = store.checkpoint(&mine, version).await.unwrap();
    store
        .finish(&mine, version, JobState::Failed, Some("worker lost".into()), 4_000)
        .await
        .unwrap();

    // Rerun of FAILED: back of the queue, progress kept.
    let rerun = store.rerun(&job.job_id, 10_000).await.unwrap();
    assert_eq!(rerun.state, JobState::Waiting);
    assert_eq!(rerun.owner, None);
    assert_eq!(rerun.owner_heartbeat_ms, None);
    assert_eq!(rerun.error, None);
    assert_eq!(rerun.ended_ms, None);
    assert!(!rerun.stop_requested);
    assert_eq!(rerun.progress, mine.progress);
    assert_eq!(rerun.failed_files, mine.failed_files);
    assert_eq!(rerun.previous_runs_ms, 2_000);
    assert_eq!(rerun.runs, 1);
    assert_eq!(rerun.started_ms, Some(2_000));
    assert_eq!(stored(&store, &job.job_id).await, rerun);
    assert_eq!(
        store.active(JobType::Load, "/data/a").await.unwrap(),
        Some(rerun.clone())
    );
    assert_eq!(
        store.waiting(10).await.unwrap(),
        vec![queued_later.job_id.clone(), job.job_id.clone()]
    );
    // Resubmitting the path finds the rerun job.
    let (again, created) = store
        .submit(JobType::Load, "/data/a", JobOptions::default(), 10_500)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.job_id, job.job_id);

    // Run 2 resumes at the watermark, then gets stuck (its owner keeps living but stops
    // writing): rerun of RUNNING.
    let (stuck, stuck_version) = claim(&store, &job.job_id, "c2", 11_000).await;
    assert_eq!(stuck.runs, 2);
    assert_eq!(stuck.progress.watermark, 5);
    assert_eq!(stuck.started_ms, Some(2_000));
    assert_eq!(stuck.elapsed_ms(12_000), 3_000);
    let rerun = store.rerun(&job.job_id, 20_000).await.unwrap();
    assert_eq!(rerun.state, JobState::Waiting);
    // The stuck run counted until its last heartbeat (its claim at 11s).
    assert_eq!(rerun.previous_runs_ms, 2_000);
    assert_eq!(store.waiting(10).await.unwrap().last(), Some(&job.job_id));
    // The stuck owner is refused when it wakes up.
    assert_conflict(
        store.checkpoint(&stuck, stuck_version).await,
        "checkpoint of a rerun job",
    );

    // Rerun of STOPPED.
    store.request_stop(&job.job_id, 21_000).await.unwrap();
    assert_eq!(stored(&store, &job.job_id).await.state, JobState::Stopped);
    let rerun = store.rerun(&job.job_id, 22_000).await.unwrap();
    assert_eq!(rerun.state, JobState::Waiting);
    assert!(!rerun.stop_requested);
    assert_eq!(rerun.progress.watermark, 5);
    assert_eq!(store.active(JobType::Load, "/data/a").await.unwrap(), Some(rerun));
    // Rerun of WAITING: nothing to do.
    assert_invalid_state(
        store.rerun(&job.job_id, 23_000).await,
        JobState::Waiting,
        "rerun WAITING",
    );
}

async fn rerun_is_refused_for_succeeded_and_busy_paths(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, CAPACITY);
    // SUCCEEDED: refused.
    let done = submit(&store, "/data/done", 1_000).await;
    let (mine, version) = claim(&store, &done.job_id, "c1", 1_100).await;
    store
        .finish(&mine, version, JobState::Succeeded, None, 1_200)
        .await
        .unwrap();
    assert_invalid_state(
        store.rerun(&done.job_id, 1_300).await,
        JobState::Succeeded,
        "rerun SUCCEEDED",
    );
    assert_eq!(stored(&store, &done.job_id).await.state, JobState::Succeeded);

    // FAILED while another job holds the path: refused, nothing changed.
    let failed = submit(&store, "/data/a", 2_000).await;
    let (mine, version) = claim(&store, &failed.job_id, "c1", 2_100).await;
    let failed = store
        .finish(&mine, version, JobState::Failed, Some("boom".into()), 2_200)
        .await
        .unwrap();
    let newer = submit(&store, "/data/a", 3_000).await;
    assert_conflict(store.rerun(&failed.job_id, 3_100).await, "rerun of a busy path");
    assert_eq!(stored(&store, &failed.job_id).await, failed);
    assert_eq!(
        store.active(JobType::Load, "/data/a").await.unwrap(),
        Some(newer.clone())
    );
    assert_eq!(store.waiting(10).await.unwrap(), vec![newer.job_id.clone()]);
    // Once the newer job is over, the rerun goes through.
    store.request_stop(&newer.job_id, 3_200).await.unwrap();
    assert_eq!(
        store.rerun(&failed.job_id, 3_300).await.unwrap().state,
        JobState::Waiting
    );
    match store.rerun("no-such-job", 3_400).await {
        Err(JobError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

async fn reclaim_only_from_the_dead_owner(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, CAPACITY);
    let first = submit(&store, "/data/a", 1_000).await;
    let second = submit(&store, "/data/b", 1_100).await;
    let (mut mine, version) = claim(&store, &first.job_id, "c1", 2_000).await;
    mine.progress.watermark = 3;
    mine.owner_heartbeat_ms = Some(2_500);
    store.checkpoint(&mine, version).await.unwrap();

    // Not the owner: nothing happens.
    assert!(!store.reclaim(&first.job_id, "c2", 9_000).await.unwrap());
    assert_eq!(stored(&store, &first.job_id).await.owner.as_deref(), Some("c1"));
    // Not RUNNING, or unknown: nothing happens.
    assert!(!store.reclaim(&second.job_id, "c1", 9_000).await.unwrap());
    assert!(!store.reclaim("no-such-job", "c1", 9_000).await.unwrap());

    // The owner: back to WAITING, at its former place (ahead of the later job).
    assert!(store.reclaim(&first.job_id, "c1", 9_000).await.unwrap());
    let back = stored(&store, &first.job_id).await;
    assert_eq!(back.state, JobState::Waiting);
    assert_eq!(back.owner, None);
    assert_eq!(back.owner_heartbeat_ms, None);
    assert_eq!(back.progress.watermark, 3);
    assert_eq!(back.previous_runs_ms, 500);
    assert_eq!(back.runs, 1);
    assert_eq!(
        store.waiting(10).await.unwrap(),
        vec![first.job_id.clone(), second.job_id.clone()]
    );
    assert_eq!(store.active(JobType::Load, "/data/a").await.unwrap(), Some(back));
    // Twice: no longer RUNNING.
    assert!(!store.reclaim(&first.job_id, "c1", 9_100).await.unwrap());
    let (again, _) = claim(&store, &first.job_id, "c2", 10_000).await;
    assert_eq!(again.runs, 2);

    // A dead owner's job whose stop was requested is stopped, not requeued.
    store.request_stop(&first.job_id, 10_500).await.unwrap();
    assert!(store.reclaim(&first.job_id, "c2", 11_000).await.unwrap());
    let stopped = stored(&store, &first.job_id).await;
    assert_eq!(stopped.state, JobState::Stopped);
    assert_eq!(stopped.ended_ms, Some(11_000));
    assert_eq!(store.active(JobType::Load, "/data/a").await.unwrap(), None);
    assert_eq!(store.waiting(10).await.unwrap(), vec![second.job_id.clone()]);
}

async fn cleanup_deletes_only_old_finished_jobs(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, CAPACITY);
    let finish = |path: &'static str, ended: u64, state: JobState| {
        let store = store.clone();
        async move {
            let job = submit(&store, path, ended - 100).await;
            let (mine, version) = claim(&store, &job.job_id, "c1", ended - 50).await;
            store.finish(&mine, version, state, None, ended).await.unwrap();
            job.job_id
        }
    };
    let old_succeeded = finish("/old/ok", 1_000, JobState::Succeeded).await;
    let old_failed = finish("/old/failed", 2_000, JobState::Failed).await;
    let recent = finish("/recent", 8_000, JobState::Succeeded).await;
    let old_stopped = submit(&store, "/old/stopped", 1_500).await.job_id;
    store.request_stop(&old_stopped, 1_600).await.unwrap();
    let waiting = submit(&store, "/old/waiting", 500).await.job_id;
    let running = submit(&store, "/old/running", 600).await.job_id;
    claim(&store, &running, "c1", 700).await;

    // Retention 5s at 10s: ended before 5s goes.
    assert_eq!(store.cleanup(Duration::from_secs(5), 10_000).await.unwrap(), 3);
    for gone in [&old_succeeded, &old_failed, &old_stopped] {
        assert_eq!(store.get(gone).await.unwrap(), None, "{gone} should be deleted");
    }
    for kept in [&recent, &waiting, &running] {
        assert!(store.get(kept).await.unwrap().is_some(), "{kept} should be kept");
    }
    // Exactly at the boundary (8s + 2s = 10s, not < 10s): kept.
    assert_eq!(store.cleanup(Duration::from_secs(2), 10_000).await.unwrap(), 0);
    assert_eq!(store.cleanup(Duration::from_secs(2), 10_001).await.unwrap(), 1);
    assert_eq!(store.list().await.unwrap().len(), 2);
    // The indexes of the live jobs are untouched.
    assert_eq!(store.waiting(10).await.unwrap(), vec![waiting.clone()]);
    assert_eq!(
        store
            .active(JobType::Load, "/old/running")
            .await
            .unwrap()
            .map(|j| j.job_id),
        Some(running)
    );
}

async fn list_latest_and_waiting_order(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, CAPACITY);
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(store.latest(JobType::Load, "/a").await.unwrap(), None);
    assert!(store.waiting(10).await.unwrap().is_empty());

    // Submitted out of path order, in time order 100 < 200 < 300 < 400.
    let c = submit(&store, "/c", 100).await;
    let a = submit(&store, "/a", 200).await;
    let b = submit(&store, "/b", 300).await;
    let (d, _) = store
        .submit(JobType::Free, "/a", JobOptions::default(), 400)
        .await
        .unwrap();
    let ids = |records: Vec<JobRecord>| records.into_iter().map(|r| r.job_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list().await.unwrap()),
        [
            d.job_id.as_str(),
            b.job_id.as_str(),
            a.job_id.as_str(),
            c.job_id.as_str()
        ]
    );
    assert_eq!(
        store.waiting(10).await.unwrap(),
        [
            c.job_id.as_str(),
            a.job_id.as_str(),
            b.job_id.as_str(),
            d.job_id.as_str()
        ]
    );
    assert_eq!(store.waiting(2).await.unwrap(), [c.job_id.as_str(), a.job_id.as_str()]);
    assert_eq!(store.waiting_count().await.unwrap(), 4);

    // latest: the active job, else the most recent of that type and path.
    assert_eq!(store.latest(JobType::Load, "/a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.latest(JobType::Free, "/a").await.unwrap(), Some(d.clone()));
    assert_eq!(store.latest(JobType::Load, "/nothing").await.unwrap(), None);
    store.request_stop(&a.job_id, 500).await.unwrap();
    let a2 = submit(&store, "/a", 600).await;
    let (mine, version) = claim(&store, &a2.job_id, "c1", 700).await;
    store
        .finish(&mine, version, JobState::Succeeded, None, 800)
        .await
        .unwrap();
    let latest = store.latest(JobType::Load, "/a").await.unwrap().unwrap();
    assert_eq!(latest.job_id, a2.job_id);
    assert_eq!(latest.state, JobState::Succeeded);
    assert_eq!(store.active(JobType::Load, "/a").await.unwrap(), None);
    // The active one wins over a more recent finished one.
    let rerun = store.rerun(&a.job_id, 900).await.unwrap();
    assert_eq!(store.latest(JobType::Load, "/a").await.unwrap(), Some(rerun));
    // Claims take jobs out of the queue in order; the rerun job is at the back.
    claim(&store, &c.job_id, "c1", 1_000).await;
    assert_eq!(
        store.waiting(10).await.unwrap(),
        [b.job_id.as_str(), d.job_id.as_str(), a.job_id.as_str()]
    );
    let (listed, errors) = store.list_readable().await.unwrap();
    assert!(errors.is_empty());
    assert_eq!(listed, store.list().await.unwrap());
}

async fn corrupt_record_is_surfaced(meta: Arc<dyn MetaStore>) {
    let store = jobs(&meta, CAPACITY);
    let good = submit(&store, "/data/a", 1_000).await;
    let key = format!("{}{}", prefix(&meta), keys::record("bad"));
    meta.put(&key, b"{not json".to_vec()).await.unwrap();

    match store.get("bad").await {
        Err(JobError::Meta(MetaError::Corrupt { key: corrupt, .. })) => assert_eq!(corrupt, key),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    match store.list().await {
        Err(JobError::Meta(MetaError::Corrupt { key: corrupt, .. })) => assert_eq!(corrupt, key),
        other => panic!("expected Corrupt from list, got {other:?}"),
    }
    let (readable, errors) = store.list_readable().await.unwrap();
    assert_eq!(readable, vec![good.clone()]);
    assert!(matches!(&errors[..], [MetaError::Corrupt { .. }]), "{errors:?}");
    // A record under another job's key is corrupt too.
    let misplaced = format!("{}{}", prefix(&meta), keys::record("other"));
    meta.put(&misplaced, good.encode()).await.unwrap();
    assert!(matches!(
        store.get("other").await,
        Err(JobError::Meta(MetaError::Corrupt { .. }))
    ));
    // Operations on it fail loudly instead of overwriting it.
    assert!(matches!(
        store.request_stop("bad", 2_000).await,
        Err(JobError::Meta(MetaError::Corrupt { .. }))
    ));
    assert!(matches!(
        store.rerun("bad", 2_000).await,
        Err(JobError::Meta(MetaError::Corrupt { .. }))
    ));
    // Cleanup keeps it (and works on the rest); the good job is untouched.
    assert_eq!(store.cleanup(Duration::ZERO, u64::MAX).await.unwrap(), 0);
    assert_eq!(meta.get(&key).await.unwrap().unwrap().value, b"{not json");
    assert_eq!(stored(&store, &good.job_id).await, good);
}

// ---------------------------------------------------------------------------------------------
// Unknown outcomes (embedded store wrapped to fail like etcd after a timeout).

/// Fails the next `fail_txns` txns with a retryable error, after applying them when `applied`.
#[derive(Debug)]
struct Flaky {
    inner: EmbeddedStore,
    fail_txns: AtomicUsize,
    applied: bool,
}

#[async_trait::async_trait]
impl MetaStore for Flaky {
    async fn get(&self, key: &str) -> Result<Option<Entry>, MetaError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, MetaError> {
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), MetaError> {
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &str) -> Result<bool, MetaError> {
        self.inner.delete(key).await
    }
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<Option<u64>, MetaError> {
        let fail = self
            .fail_txns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !fail {
            return self.inner.txn(compares, ops).await;
        }
        if self.applied {
            self.inner.txn(compares, ops).await?;
        }
        Err(MetaError::Unavailable("txn: outcome unknown (test)".into()))
    }
    fn kind(&self) -> &'static str {
        "EMBEDDED"
    }
}

fn flaky(applied: bool) -> (tempfile::TempDir, Arc<Flaky>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let inner = EmbeddedStore::open(&dir.path().join("meta.redb")).expect("embedded store");
    (
        dir,
        Arc::new(Flaky {
            inner,
            fail_txns: AtomicUsize::new(0),
            applied,
        }),
    )
}

#[tokio::test]
async fn applied_txns_with_an_unknown_outcome_succeed_once() {
    let (_dir, flaky) = flaky(true);
    let meta: Arc<dyn MetaStore> = flaky.clone();
    let store = jobs(&meta, CAPACITY);

    flaky.fail_txns.store(1, Ordering::SeqCst);
    let (job, created) = store
        .submit(JobType::Load, "/data/a", JobOptions::default(), 1_000)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(store.list().await.unwrap(), vec![job.clone()]);
    assert_eq!(store.waiting(10).await.unwrap(), vec![job.job_id.clone()]);

    flaky.fail_txns.store(1, Ordering::SeqCst);
    let claimed = store.claim(&job.job_id, "c1", 2_000).await.unwrap().expect("claimed");
    assert_eq!(claimed.record.owner.as_deref(), Some("c1"));
    assert_eq!(store.waiting_count().await.unwrap(), 0);

    flaky.fail_txns.store(1, Ordering::SeqCst);
    let finished = store
        .finish(&claimed.record, claimed.version, JobState::Succeeded, None, 3_000)
        .await
        .unwrap();
    assert_eq!(stored(&store, &job.job_id).await, finished);

    flaky.fail_txns.store(1, Ordering::SeqCst);
    assert_eq!(store.cleanup(Duration::ZERO, 4_000).await.unwrap(), 1);
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn txns_not_applied_are_retryable_errors_and_leave_nothing() {
    let (_dir, flaky) = flaky(false);
    let meta: Arc<dyn MetaStore> = flaky.clone();
    let store = jobs(&meta, CAPACITY);

    flaky.fail_txns.store(1, Ordering::SeqCst);
    let err = store
        .submit(JobType::Load, "/data/a", JobOptions::default(), 1_000)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(store.waiting_count().await.unwrap(), 0);
    assert_eq!(store.active(JobType::Load, "/data/a").await.unwrap(), None);

    // The retry creates exactly one job.
    let job = submit(&store, "/data/a", 1_100).await;
    flaky.fail_txns.store(1, Ordering::SeqCst);
    assert!(store.claim(&job.job_id, "c1", 2_000).await.unwrap_err().is_retryable());
    assert_eq!(stored(&store, &job.job_id).await, job);
    assert_eq!(store.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn failed_files_stay_bounded_through_the_store() {
    let (_dir, meta) = embedded();
    let store = jobs(&meta, CAPACITY);
    let job = submit(&store, "/data/a", 1_000).await;
    let (mut mine, version) = claim(&store, &job.job_id, "c1", 2_000).await;
    for i in 0..(MAX_FAILED_FILES + 50) {
        mine.push_failed(format!("/data/a/{i}"), "unreadable");
    }
    store.checkpoint(&mine, version).await.unwrap();
    let back = stored(&store, &job.job_id).await;
    assert_eq!(back.failed_files.len(), MAX_FAILED_FILES);
    assert_eq!(back.progress.files_failed, (MAX_FAILED_FILES + 50) as u64);
    let set: HashSet<&str> = back.failed_files.iter().map(|f| f.path.as_str()).collect();
    assert!(set.contains("/data/a/0") && !set.contains(format!("/data/a/{MAX_FAILED_FILES}").as_str()));
}
