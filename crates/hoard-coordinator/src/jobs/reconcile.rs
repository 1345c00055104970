//! The final check of a load (docs/jobs.md, "The final check"): a load that SUCCEEDS has every
//! file cached whole on its owners (the first `replicas` ring candidates) at the end.
//!
//! While the job runs, [`Audit`] notes what puts a worker's files in doubt: a task to it failed
//! or was turned away (its files went to other candidates), or another process of it answered
//! (it restarted: what the old one acknowledged may be gone); and which rings the job used (a
//! file whose owners differ between them was loaded where it no longer belongs). At the end
//! the job asks every ONLINE worker which process it is ([`probe`]: one empty check task each),
//! and only when something is in doubt lists the path again and sends the files in doubt
//! ([`Doubt::covers`]) to their owners once more as a load that skips what is whole: a file
//! cached whole costs a status check, a missing page is loaded. Nothing in doubt, nothing sent.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hoard_client::ClusterView;
use hoard_common::api::tasks::{CheckTask, CHECK_ROUTE};
use hoard_common::HoardPath;
use hoard_meta::jobs::JobAudit;

use super::counts::ReplicaCounts;
use super::{worker_key, JobContext};

/// Check passes one run makes at most: a worker that restarts during one puts its files in
/// doubt again.
pub const MAX_PASSES: u32 = 3;

/// Distinct rings remembered between two checks; past it every file is in doubt.
const MAX_RINGS: usize = 16;

/// Probes in flight at once.
const PROBE_CONCURRENCY: usize = 64;

/// A probe (an empty check task) gets at most this long per worker.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A hash of what decides a file's owners in `view`: every node's key, ring identity,
/// capacity and state.
pub fn ring_signature(view: &ClusterView) -> u64 {
    let mut nodes: Vec<String> = view
        .nodes
        .iter()
        .map(|node| {
            format!(
                "{}\u{0}{}\u{0}{}\u{0}{}",
                worker_key(node),
                node.ring_identity,
                node.capacity_bytes.unwrap_or(0),
                node.online
            )
        })
        .collect();
    nodes.sort_unstable();
    xxhash_rust::xxh3::xxh3_64(nodes.join("\u{1}").as_bytes())
}

/// The worker keys a load sends `path` to under `view` (as the runner plans it).
fn owners(view: &ClusterView, path: &HoardPath, counts: &ReplicaCounts) -> Vec<String> {
    counts.placement(view, path).replicas().map(worker_key).collect()
}

/// What a check pass is looking at, kept in the record until the pass completes.
#[derive(Debug, Default)]
struct Checking {
    doubtful: BTreeSet<String>,
    ring_changed: bool,
}

/// What puts files in doubt, since the last completed check.
#[derive(Debug)]
pub struct Audit {
    /// Worker key -> the process that answered its tasks (the latest).
    instances: BTreeMap<String, String>,
    doubtful: BTreeSet<String>,
    /// Distinct rings in the order seen, the current one last.
    rings: Vec<(u64, Arc<ClusterView>)>,
    /// Every file is in doubt: more rings than kept, or a resumed run that cannot know the
    /// rings before it.
    all: bool,
    /// The pass in progress (what a resumed run must check again).
    checking: Option<Checking>,
}

impl Audit {
    /// Picks up what earlier runs stored; `view` is this run's first ring.
    pub fn resume(stored: &JobAudit, view: &Arc<ClusterView>) -> Audit {
        let signature = ring_signature(view);
        let ring_moved = stored
            .ring
            .as_deref()
            .is_some_and(|ring| ring != format!("{signature:016x}"));
        Audit {
            instances: stored.instances.clone(),
            doubtful: stored.doubtful.clone(),
            rings: vec![(signature, Arc::clone(view))],
            all: stored.ring_changed || ring_moved,
            checking: None,
        }
    }

    /// The ring the job uses now (every refresh).
    pub fn saw_ring(&mut self, view: &Arc<ClusterView>) {
        let signature = ring_signature(view);
        if self.rings.last().is_some_and(|(last, _)| *last == signature) {
            return;
        }
        if self.rings.len() >= MAX_RINGS {
            self.all = true;
            self.rings.clear();
        }
        self.rings.push((signature, Arc::clone(view)));
    }

    /// `worker` answered a task from `instance` (none: a worker too old to say).
    pub fn answered(&mut self, worker: &str, instance: Option<&str>) {
        let Some(instance) = instance else { return };
        match self.instances.get(worker) {
            Some(known) if known == instance => {}
            Some(_) => {
                tracing::info!(
                    worker,
                    instance,
                    "worker answered from another process: it restarted; its files are checked at the end"
                );
                self.doubtful.insert(worker.to_string());
                self.instances.insert(worker.to_string(), instance.to_string());
            }
            None => {
                self.instances.insert(worker.to_string(), instance.to_string());
            }
        }
    }

    /// A task to `worker` failed or was turned away: some of its files went elsewhere.
    pub fn failed(&mut self, worker: &str) {
        self.doubtful.insert(worker.to_string());
    }

    /// `hoard.job.final.check=ALL`: every file is checked.
    pub fn doubt_everything(&mut self) {
        self.all = true;
    }

    /// Whether any file is in doubt.
    pub fn in_doubt(&self) -> bool {
        self.all || !self.doubtful.is_empty() || self.rings.len() > 1
    }

    pub fn doubtful_workers(&self) -> Vec<String> {
        self.doubtful.iter().cloned().collect()
    }

    /// Starts a check pass over what is in doubt now, with `end` as the ring the files belong
    /// to; what happens during the pass is noted afresh.
    pub fn begin_check(&mut self, end: &Arc<ClusterView>, counts: Arc<ReplicaCounts>, skip: HashSet<String>) -> Doubt {
        let doubt = Doubt {
            all: self.all,
            workers: std::mem::take(&mut self.doubtful),
            rings: self.rings.iter().map(|(_, view)| Arc::clone(view)).collect(),
            end: Arc::clone(end),
            counts,
            skip,
        };
        self.checking = Some(Checking {
            doubtful: doubt.workers.clone(),
            ring_changed: self.all || self.rings.len() > 1,
        });
        self.all = false;
        self.rings = vec![(ring_signature(end), Arc::clone(end))];
        doubt
    }

    /// The pass completed. A worker that was in doubt and now does not answer (or is not
    /// ONLINE in `view`) had its files sent to the next candidates during the pass, where
    /// clients read while it is down: its failures during the pass put nothing new in doubt.
    pub fn end_check(&mut self, view: &ClusterView, unreachable: &BTreeSet<String>) {
        let Some(checking) = self.checking.take() else { return };
        for worker in &checking.doubtful {
            let online = view.nodes.iter().any(|node| node.online && worker_key(node) == *worker);
            if !online || unreachable.contains(worker) {
                self.doubtful.remove(worker);
            }
        }
    }

    /// What the record keeps (a resumed run checks at least this).
    pub fn to_record(&self) -> JobAudit {
        let mut doubtful = self.doubtful.clone();
        let mut ring_changed = self.all || self.rings.len() > 1;
        if let Some(checking) = &self.checking {
            doubtful.extend(checking.doubtful.iter().cloned());
            ring_changed |= checking.ring_changed;
        }
        JobAudit {
            instances: self.instances.clone(),
            doubtful,
            ring: self.rings.last().map(|(signature, _)| format!("{signature:016x}")),
            ring_changed,
        }
    }
}

/// Which files a check pass sends to their owners again.
pub struct Doubt {
    all: bool,
    workers: BTreeSet<String>,
    /// Every ring the job used since the last check (the end's included).
    rings: Vec<Arc<ClusterView>>,
    end: Arc<ClusterView>,
    counts: Arc<ReplicaCounts>,
    /// Files already counted failed (named in the record): not counted again.
    skip: HashSet<String>,
}

impl Doubt {
    /// Whether `path` may be missing from an owner: one of its owners is in doubt, or its
    /// owners were not the same in every ring the job used.
    pub fn covers(&self, path: &HoardPath) -> bool {
        if self.skip.contains(path.as_str()) {
            return false;
        }
        if self.all {
            return true;
        }
        let now = owners(&self.end, path, &self.counts);
        now.iter().any(|owner| self.workers.contains(owner))
            || self.rings.iter().any(|ring| owners(ring, path, &self.counts) != now)
    }
}

/// Asks every ONLINE worker of `view` which process it is (an empty check task, which reads
/// nothing): a worker whose process changed since it answered the job's tasks restarted, and
/// its files are in doubt. Returns the workers that did not answer; on the first probe of a
/// run (`first`) they are in doubt too (their files are sent to the next candidates, where
/// clients read while they are down).
pub async fn probe(ctx: &JobContext, view: &ClusterView, audit: &mut Audit, first: bool) -> BTreeSet<String> {
    let body = match serde_json::to_vec(&CheckTask { paths: Vec::new() }) {
        Ok(body) => body,
        Err(_) => return BTreeSet::new(),
    };
    let timeout = PROBE_TIMEOUT.min(ctx.user.connect_timeout + ctx.user.read_timeout);
    let targets: Vec<(String, String)> = view
        .nodes
        .iter()
        .filter(|node| node.online)
        .map(|node| (worker_key(node), node.address.clone()))
        .collect();
    let probes = targets.into_iter().map(|(worker, address)| {
        let body = body.clone();
        async move {
            let answer = super::dispatch::post_task(ctx, &address, CHECK_ROUTE, body, timeout).await;
            (worker, answer.map(|answer| answer.instance))
        }
    });
    let answers: Vec<(String, Result<Option<String>, String>)> = futures::stream::iter(probes)
        .buffer_unordered(PROBE_CONCURRENCY)
        .collect()
        .await;
    let mut unreachable = BTreeSet::new();
    for (worker, answer) in answers {
        match answer {
            Ok(instance) => audit.answered(&worker, instance.as_deref()),
            Err(reason) => {
                tracing::info!(worker, reason, "worker did not answer the final check's probe");
                if first {
                    audit.failed(&worker);
                }
                unreachable.insert(worker);
            }
        }
    }
    unreachable
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_client::NodeStatus;

    fn one() -> Arc<ReplicaCounts> {
        Arc::new(ReplicaCounts::of(&hoard_meta::jobs::JobOptions::default()))
    }

    fn node(id: &str, online: bool) -> NodeStatus {
        NodeStatus {
            ring_identity: id.to_string(),
            worker_id: Some(id.to_string()),
            address: format!("{id}:1"),
            cluster: "default".to_string(),
            online,
            capacity_bytes: None,
            used_bytes: None,
            error: None,
        }
    }

    fn view(nodes: &[(&str, bool)]) -> Arc<ClusterView> {
        let mut user = hoard_config::SiteConfig::defaults(std::path::Path::new("/conf")).user;
        user.dynamic_ring = true;
        user.virtual_nodes_per_worker = 200;
        Arc::new(ClusterView::new(
            nodes.iter().map(|(id, online)| node(id, *online)).collect(),
            &user,
        ))
    }

    fn paths(count: usize) -> Vec<HoardPath> {
        (0..count)
            .map(|i| HoardPath::parse(&format!("/d/f{i}")).expect("path"))
            .collect()
    }

    #[test]
    fn nothing_in_doubt_without_events() {
        let ring = view(&[("a", true), ("b", true), ("c", true)]);
        let mut audit = Audit::resume(&JobAudit::default(), &ring);
        audit.answered("a", Some("1"));
        audit.answered("a", Some("1"));
        audit.saw_ring(&view(&[("a", true), ("b", true), ("c", true)]));
        assert!(!audit.in_doubt());
    }

    #[test]
    fn a_restarted_worker_puts_only_its_files_in_doubt() {
        let ring = view(&[("a", true), ("b", true), ("c", true)]);
        let mut audit = Audit::resume(&JobAudit::default(), &ring);
        audit.answered("b", Some("1"));
        audit.answered("b", Some("2"));
        assert!(audit.in_doubt());
        let doubt = audit.begin_check(&ring, one(), HashSet::new());
        let all = paths(600);
        let covered: Vec<&HoardPath> = all.iter().filter(|path| doubt.covers(path)).collect();
        assert!(!covered.is_empty());
        for path in &all {
            assert_eq!(doubt.covers(path), owners(&ring, path, &one()) == ["b"], "{path}");
        }
        assert!(covered.len() < 400, "{} of 600", covered.len());
        // Until the pass completes, the record still names b.
        assert!(audit.to_record().doubtful.contains("b"));
        audit.end_check(&ring, &BTreeSet::new());
        assert!(!audit.in_doubt());
        assert!(audit.to_record().doubtful.is_empty());
    }

    #[test]
    fn a_ring_change_puts_files_that_moved_in_doubt() {
        let before = view(&[("a", true), ("b", true), ("c", true)]);
        let after = view(&[("a", true), ("b", false), ("c", true)]);
        let mut audit = Audit::resume(&JobAudit::default(), &before);
        audit.saw_ring(&after);
        assert!(audit.in_doubt());
        let doubt = audit.begin_check(&after, one(), HashSet::new());
        for path in paths(300) {
            let moved = owners(&before, &path, &one()) != owners(&after, &path, &one());
            assert_eq!(doubt.covers(&path), moved, "{path}");
        }
        assert!(audit.to_record().ring_changed, "kept until the pass completes");
        audit.end_check(&after, &BTreeSet::new());
        assert!(!audit.to_record().ring_changed);
    }

    #[test]
    fn a_resumed_run_on_another_ring_checks_everything_and_failed_files_are_skipped() {
        let before = view(&[("a", true), ("b", true)]);
        let mut first = Audit::resume(&JobAudit::default(), &before);
        first.answered("a", Some("1"));
        let stored = first.to_record();
        assert_eq!(stored.instances.get("a").map(String::as_str), Some("1"));
        let now = view(&[("a", true), ("b", true), ("c", true)]);
        let mut resumed = Audit::resume(&stored, &now);
        assert!(resumed.in_doubt());
        let skip: HashSet<String> = ["/d/f1".to_string()].into();
        let doubt = resumed.begin_check(&now, one(), skip);
        let all = paths(10);
        assert!(!doubt.covers(&all[1]));
        assert!(all.iter().filter(|path| doubt.covers(path)).count() == 9);
        // The same ring on resume: only what was stored in doubt.
        let calm = Audit::resume(&stored, &before);
        assert!(!calm.in_doubt());
    }

    #[test]
    fn unreachable_workers_already_checked_settle() {
        let ring = view(&[("a", true), ("b", true)]);
        let mut audit = Audit::resume(&JobAudit::default(), &ring);
        audit.failed("b");
        let _doubt = audit.begin_check(&ring, one(), HashSet::new());
        // During the pass b fails again (its files go to a), and it still does not answer.
        audit.failed("b");
        audit.end_check(&ring, &["b".to_string()].into());
        assert!(!audit.in_doubt());
        // A worker that was not in doubt and fails during a pass is.
        let _doubt = audit.begin_check(&ring, one(), HashSet::new());
        audit.failed("a");
        audit.end_check(&ring, &BTreeSet::new());
        assert!(audit.in_doubt());
    }
}
