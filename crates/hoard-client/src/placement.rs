//! Where a file's replicas belong: the one placement rule every process uses (the scheduler's
//! loads, the client's reads, `fs stat`, the repair loop). Rules give a count per cluster; each
//! cluster's ring gives the order; replica i of a file in a cluster is candidate i of that
//! cluster's ring (the attempt sequence of docs/ring.md), so:
//!
//! - a file's replicas in a cluster are distinct workers, and a prefix of the cluster's
//!   candidate order (raising the count keeps the replicas there and adds the next ones);
//! - adding a worker changes a file's replicas only where the newcomer becomes one of them
//!   (removing one, only where it was one: the ring's own property), and a change in one
//!   cluster never moves another cluster's replicas.

use std::time::Duration;

use hoard_common::replica::{ReplicaRule, ReplicaRuleSet, ReplicaSelectionPolicy};
use hoard_common::HoardPath;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::nodes::NodeStatus;
use crate::ClusterView;

/// One cluster's part of a file's placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlacement {
    pub cluster: String,
    /// The client's (or coordinator's) own cluster.
    pub local: bool,
    /// Copies the rule asks of this cluster.
    pub wanted: usize,
    /// The workers that should hold them, best first: the cluster ring's first `wanted`
    /// candidates (fewer when the ring is smaller).
    pub replicas: Vec<NodeStatus>,
    /// The rest of the cluster's ring in candidate order: where reads fail over, and where a
    /// load goes when a replica's worker fails.
    pub fallbacks: Vec<NodeStatus>,
}

impl ClusterPlacement {
    /// Copies this cluster cannot hold: `wanted` less its ONLINE ring workers.
    pub fn shortfall(&self) -> usize {
        let online = self
            .replicas
            .iter()
            .chain(&self.fallbacks)
            .filter(|node| node.online)
            .count();
        self.wanted.saturating_sub(online)
    }
}

/// A file's placement in every cluster: the local cluster first, then the others by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    pub clusters: Vec<ClusterPlacement>,
}

impl Placement {
    /// Every replica worker, cluster by cluster.
    pub fn replicas(&self) -> impl Iterator<Item = &NodeStatus> {
        self.clusters.iter().flat_map(|cluster| cluster.replicas.iter())
    }

    /// Copies missing in all clusters together (see [`ClusterPlacement::shortfall`]).
    pub fn shortfall(&self) -> usize {
        self.clusters.iter().map(ClusterPlacement::shortfall).sum()
    }

    /// The order a client tries workers in: the local cluster's replicas ordered by `policy`,
    /// then the other clusters' replicas (each ordered by `policy`), then the remaining
    /// workers of the local cluster and of the others in ring order (any worker can serve a
    /// file, reading it from the UFS). `client_seed` makes CLIENT_FIXED's order this client's.
    pub fn read_order(&self, policy: ReplicaSelectionPolicy, client_seed: u32) -> Vec<NodeStatus> {
        let mut order = Vec::new();
        for cluster in &self.clusters {
            let mut replicas = cluster.replicas.clone();
            order_replicas(&mut replicas, policy, client_seed);
            order.extend(replicas);
        }
        for cluster in &self.clusters {
            order.extend(cluster.fallbacks.iter().cloned());
        }
        debug_assert!(
            {
                let mut seen = std::collections::HashSet::new();
                order.iter().all(|node| seen.insert(node.ring_identity.clone()))
            },
            "a worker appears once in a read order"
        );
        order
    }
}

/// A file's replicas as the rules want them and as the workers hold them: what `hoard fs stat`
/// and the coordinator's `GET /api/v1/replicas` show.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaState {
    /// The workers the path maps to, best first: its replicas in every cluster.
    pub workers: Vec<NodeStatus>,
    /// The replica rule that decides its count.
    pub rule: ReplicaRule,
    /// Where the rules and rings want its copies (the ideal state), per cluster.
    pub replicas: Vec<ClusterReplicas>,
    /// Which ONLINE workers hold any of it now (the current state), from their page indexes;
    /// a worker that does not know the file's status counts as holding none of it.
    pub holders: Vec<Holder>,
}

/// One cluster's wanted copies of a file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReplicas {
    pub cluster: String,
    pub local: bool,
    pub wanted: usize,
    pub workers: Vec<String>,
}

/// A worker holding (part of) a file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub address: String,
    pub cluster: String,
    pub cached_bytes: u64,
    pub whole: bool,
}

/// `path`'s [`ReplicaState`] under `view` and `rules`: the ideal from the placement, the
/// current by asking every ONLINE worker's page index (`GET /api/v1/cached`, in parallel, each
/// bounded by `timeout`; never the UFS).
pub async fn replica_state(
    http: &reqwest::Client,
    view: &ClusterView,
    rules: &ReplicaRuleSet,
    path: &HoardPath,
    timeout: Duration,
) -> ReplicaState {
    let rule = rules.rule_for(path).clone();
    let placement = view.placement(path, rule.num_replicas_per_cluster as usize);
    let replicas = placement
        .clusters
        .iter()
        .map(|cluster| ClusterReplicas {
            cluster: cluster.cluster.clone(),
            local: cluster.local,
            wanted: cluster.wanted,
            workers: cluster.replicas.iter().map(|node| node.address.clone()).collect(),
        })
        .collect();
    let online: Vec<NodeStatus> = view.nodes.iter().filter(|node| node.online).cloned().collect();
    let answers = crate::cached::probe(http, path, &online, timeout).await;
    let holders = online
        .iter()
        .zip(answers)
        .filter_map(|(node, answer)| {
            let answer = answer.filter(|answer| answer.cached_bytes > 0)?;
            Some(Holder {
                address: node.address.clone(),
                cluster: node.cluster.clone(),
                cached_bytes: answer.cached_bytes,
                whole: answer.whole,
            })
        })
        .collect();
    ReplicaState {
        workers: placement.replicas().cloned().collect(),
        rule,
        replicas,
        holders,
    }
}

/// Reorders one cluster's replicas as `policy` says.
fn order_replicas(replicas: &mut [NodeStatus], policy: ReplicaSelectionPolicy, client_seed: u32) {
    match policy {
        ReplicaSelectionPolicy::GlobalFixed => {}
        // A stable permutation per client: the replicas in ring order, rotated by the client's
        // seed, so the same replicas always come in the same order for this client, and
        // clients with consecutive seeds (those of one process) start on each replica in turn.
        ReplicaSelectionPolicy::ClientFixed if !replicas.is_empty() => {
            let shift = client_seed as usize % replicas.len();
            replicas.rotate_left(shift);
        }
        ReplicaSelectionPolicy::ClientFixed => {}
        ReplicaSelectionPolicy::Random => replicas.shuffle(&mut rand::rng()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterView;
    use hoard_common::HoardPath;
    use hoard_config::UserConfig;
    use std::collections::{HashMap, HashSet};

    fn node(id: &str, cluster: &str, online: bool) -> NodeStatus {
        NodeStatus {
            ring_identity: id.to_string(),
            worker_id: Some(id.to_string()),
            address: format!("{id}:1"),
            cluster: cluster.to_string(),
            online,
            capacity_bytes: Some(1 << 30),
            used_bytes: None,
            error: None,
        }
    }

    fn user(cluster: &str) -> UserConfig {
        let mut user = hoard_config::SiteConfig::defaults(std::path::Path::new("/conf")).user;
        user.cluster_name = cluster.to_string();
        user.virtual_nodes_per_worker = 100;
        user
    }

    fn ids(nodes: &[NodeStatus]) -> Vec<String> {
        nodes.iter().map(|node| node.ring_identity.clone()).collect()
    }

    fn path(i: usize) -> HoardPath {
        HoardPath::parse(&format!("/data/part-{i}")).unwrap()
    }

    fn two_clusters() -> Vec<NodeStatus> {
        let mut nodes: Vec<NodeStatus> = (0..4).map(|i| node(&format!("a{i}"), "az1", true)).collect();
        nodes.extend((0..3).map(|i| node(&format!("b{i}"), "az2", true)));
        nodes
    }

    #[test]
    fn replicas_are_distinct_and_a_prefix_of_the_candidate_order() {
        let view = ClusterView::new(two_clusters(), &user("az1"));
        for i in 0..300 {
            let full = view.placement(&path(i), 64);
            for count in 1..=4 {
                let placement = view.placement(&path(i), count);
                assert_eq!(placement.clusters.len(), 2);
                assert_eq!(placement.clusters[0].cluster, "az1", "the local cluster first");
                assert!(placement.clusters[0].local && !placement.clusters[1].local);
                for (cluster, everything) in placement.clusters.iter().zip(&full.clusters) {
                    let replicas = ids(&cluster.replicas);
                    let unique: HashSet<&String> = replicas.iter().collect();
                    assert_eq!(unique.len(), replicas.len(), "distinct workers");
                    assert_eq!(replicas.len(), count.min(everything.replicas.len()));
                    assert_eq!(replicas[..], ids(&everything.replicas)[..replicas.len()], "a prefix");
                    let mut whole = replicas.clone();
                    whole.extend(ids(&cluster.fallbacks));
                    assert_eq!(
                        whole,
                        ids(&everything.replicas),
                        "replicas then fallbacks = the ring order"
                    );
                    assert!(cluster.replicas.iter().all(|node| node.cluster == cluster.cluster));
                }
            }
        }
    }

    #[test]
    fn a_membership_change_in_one_cluster_leaves_the_others_alone() {
        let before = ClusterView::new(two_clusters(), &user("az1"));
        let mut nodes = two_clusters();
        nodes.push(node("a9", "az1", true));
        let after = ClusterView::new(nodes, &user("az1"));
        let mut moved = 0;
        for i in 0..500 {
            let (old, new) = (before.placement(&path(i), 2), after.placement(&path(i), 2));
            assert_eq!(old.clusters[1], new.clusters[1], "az2 does not move");
            let (old_az1, new_az1) = (ids(&old.clusters[0].replicas), ids(&new.clusters[0].replicas));
            if old_az1 != new_az1 {
                moved += 1;
                // A file's replicas change only where the newcomer becomes one of them.
                assert!(new_az1.contains(&"a9".to_string()), "{old_az1:?} -> {new_az1:?}");
            }
        }
        assert!(moved > 0 && moved < 300, "{moved} of 500 files moved");
    }

    #[test]
    fn shortfall_counts_missing_online_workers_per_cluster() {
        let mut nodes = two_clusters();
        nodes[4].online = false; // b0
        let view = ClusterView::new(nodes, &user("az1"));
        let placement = view.placement(&path(1), 3);
        assert_eq!(placement.clusters[0].shortfall(), 0);
        // Dynamic ring: az2 has two ONLINE workers for three copies.
        assert_eq!(placement.clusters[1].replicas.len(), 2);
        assert_eq!(placement.shortfall(), 1);
        assert_eq!(view.placement(&path(1), 5).shortfall(), 1 + 3);
    }

    #[test]
    fn read_orders_per_policy() {
        let view = ClusterView::new(two_clusters(), &user("az1"));
        let mut first_by_client: HashMap<String, usize> = HashMap::new();
        let mut first_random: HashMap<String, usize> = HashMap::new();
        let file = path(7);
        let placement = view.placement(&file, 3);
        let local: HashSet<String> = ids(&placement.clusters[0].replicas).into_iter().collect();
        let global = placement.read_order(ReplicaSelectionPolicy::GlobalFixed, 1);
        assert_eq!(global.len(), 7, "every worker, once");
        assert_eq!(ids(&global[..3]), ids(&placement.clusters[0].replicas));
        assert_eq!(ids(&global[3..6]), ids(&placement.clusters[1].replicas));
        for seed in 0..600u32 {
            let order = placement.read_order(ReplicaSelectionPolicy::ClientFixed, seed);
            assert_eq!(
                order,
                placement.read_order(ReplicaSelectionPolicy::ClientFixed, seed),
                "stable"
            );
            let firsts: HashSet<String> = ids(&order[..3]).into_iter().collect();
            assert_eq!(firsts, local, "the local replicas come first, in some order");
            *first_by_client.entry(order[0].ring_identity.clone()).or_default() += 1;
            let random = placement.read_order(ReplicaSelectionPolicy::Random, 0);
            assert_eq!(ids(&random[..3]).into_iter().collect::<HashSet<_>>(), local);
            *first_random.entry(random[0].ring_identity.clone()).or_default() += 1;
        }
        // Consecutive seeds (one process's clients) start on each replica in turn.
        assert!(
            first_by_client.values().all(|n| *n == 200),
            "a third each: {first_by_client:?}"
        );
        assert_eq!(first_random.len(), 3, "{first_random:?}");
        assert!(
            first_random.values().all(|n| *n > 120),
            "roughly a third each: {first_random:?}"
        );
    }

    #[test]
    fn a_cluster_without_workers_is_not_a_place_for_copies() {
        // A coordinator (or client) in a cluster no worker registered in.
        let view = ClusterView::new(two_clusters(), &user("default"));
        let placement = view.placement(&path(2), 2);
        assert_eq!(placement.clusters.len(), 2);
        assert!(placement.clusters.iter().all(|cluster| !cluster.local));
        assert_eq!(placement.shortfall(), 0);
        assert_eq!(placement.replicas().count(), 4);
    }

    #[test]
    fn a_cluster_with_no_workers_left_sends_reads_to_the_others() {
        let mut nodes = two_clusters();
        for node in nodes.iter_mut().filter(|node| node.cluster == "az1") {
            node.online = false;
        }
        let view = ClusterView::new(nodes, &user("az1"));
        let order = view
            .placement(&path(3), 2)
            .read_order(ReplicaSelectionPolicy::GlobalFixed, 0);
        assert_eq!(order.len(), 3);
        assert!(order.iter().all(|node| node.cluster == "az2"));
    }
}
