//! Probing workers and building the ring over them.

use std::time::Duration;

use futures::future::join_all;
use hoard_common::api::{WorkerHealth, HEALTH_ROUTE};
use hoard_common::HoardPath;
use hoard_config::UserConfig;
use hoard_meta::{Liveness, MemberRecord};
use hoard_ring::Ring;
use serde::Serialize;

use crate::build_ring;
use crate::placement::{ClusterPlacement, Placement};

/// One registered worker and whether it answers now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The identity hashed onto the ring.
    pub ring_identity: String,
    /// The worker's persistent UUID, when known (from membership or its health answer).
    pub worker_id: Option<String>,
    pub address: String,
    /// Its cluster (availability zone): from its registration, else its health answer, else
    /// (not known yet) the client's own.
    pub cluster: String,
    pub online: bool,
    pub capacity_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    /// Why the worker is considered offline.
    pub error: Option<String>,
}

/// Nodes plus one ring per cluster, built over the nodes that count (online only for a
/// dynamic ring).
#[derive(Debug)]
pub struct ClusterView {
    pub nodes: Vec<NodeStatus>,
    /// The local cluster first, then the others by name.
    rings: Vec<ClusterRing>,
}

#[derive(Debug)]
struct ClusterRing {
    name: String,
    local: bool,
    nodes: Vec<NodeStatus>,
    ring: Ring,
}

impl ClusterRing {
    /// Up to `count` of this cluster's nodes for `path`, best first.
    fn candidates(&self, path: &HoardPath, count: usize) -> Vec<NodeStatus> {
        self.ring
            .candidates(path.as_str(), count)
            .into_iter()
            .filter_map(|index| self.nodes.get(index).cloned())
            .collect()
    }
}

impl ClusterView {
    /// `user.cluster_name` is the local cluster, whose replicas come first.
    pub fn new(nodes: Vec<NodeStatus>, user: &UserConfig) -> ClusterView {
        // The clusters with registered workers (a coordinator's own cluster name, when no
        // worker is in it, is not one more cluster to place copies in).
        let rings = clusters_local_first(&nodes, &user.cluster_name)
            .into_iter()
            .map(|name| {
                let ring_nodes: Vec<NodeStatus> = nodes
                    .iter()
                    .filter(|node| node.cluster == name && (node.online || !user.dynamic_ring))
                    .cloned()
                    .collect();
                ClusterRing {
                    name: name.to_string(),
                    local: name == user.cluster_name,
                    ring: build_ring(&ring_nodes, user),
                    nodes: ring_nodes,
                }
            })
            .collect();
        ClusterView { nodes, rings }
    }

    /// Where `path`'s replicas belong, `count` per cluster (see [`crate::placement`]).
    pub fn placement(&self, path: &HoardPath, count: usize) -> Placement {
        let clusters = self
            .rings
            .iter()
            .map(|cluster| {
                let mut order = cluster.candidates(path, cluster.nodes.len());
                let fallbacks = order.split_off(count.min(order.len()));
                ClusterPlacement {
                    cluster: cluster.name.clone(),
                    local: cluster.local,
                    wanted: count,
                    replicas: order,
                    fallbacks,
                }
            })
            .collect();
        Placement { clusters }
    }

    /// Up to `count` of the local cluster's nodes for `path`, best first (the first `count`
    /// replicas when the rule asks that many).
    pub fn candidates(&self, path: &HoardPath, count: usize) -> Vec<NodeStatus> {
        self.rings
            .first()
            .map(|cluster| cluster.candidates(path, count))
            .unwrap_or_default()
    }

    /// Every ring node in ring order for `path`: the local cluster's, then the others'.
    pub fn failover_order(&self, path: &HoardPath) -> Vec<NodeStatus> {
        self.placement(path, 1)
            .read_order(hoard_common::replica::ReplicaSelectionPolicy::GlobalFixed, 0)
    }

    /// Nodes in the rings, all clusters together.
    pub fn ring_size(&self) -> usize {
        self.rings.iter().map(|cluster| cluster.nodes.len()).sum()
    }

    /// Cluster names, the local one first.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.rings.iter().map(|cluster| cluster.name.as_str())
    }
}

/// The clusters `nodes` belong to, once each: `local` first (when a node is in it), then the
/// others by name.
pub fn clusters_local_first<'a>(nodes: &'a [NodeStatus], local: &str) -> Vec<&'a str> {
    let mut names: Vec<&str> = nodes.iter().map(|node| node.cluster.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.sort_by_key(|name| *name != local);
    names
}

/// Turns member records into node statuses. Members whose liveness the backend does not know
/// (STATIC) are asked for their health, in parallel, each bounded by the connect and read
/// timeouts; with `probe_known` every member not known to be OFFLINE is asked too (for its
/// usage, in `info nodes`), but the backend's word on liveness stands.
pub async fn probe_members(
    http: &reqwest::Client,
    members: Vec<MemberRecord>,
    user: &UserConfig,
    probe_known: bool,
) -> Vec<NodeStatus> {
    let deadline = user.connect_timeout + user.read_timeout.min(Duration::from_secs(5));
    let probes = members.into_iter().map(|member| async move {
        let address = member.address.to_string();
        let must_probe = member.liveness == Liveness::Unknown;
        let wants_usage = probe_known && member.liveness == Liveness::Online;
        if !must_probe && !wants_usage {
            let online = member.liveness == Liveness::Online;
            return NodeStatus {
                ring_identity: member.ring_identity,
                worker_id: member.worker_id,
                address,
                cluster: member.cluster.unwrap_or_else(|| user.cluster_name.clone()),
                online,
                capacity_bytes: member.capacity_bytes,
                used_bytes: member.used_bytes,
                error: (!online).then(|| "no heartbeat within the failure detection timeout".to_string()),
            };
        }
        let url = format!("http://{address}{HEALTH_ROUTE}");
        let answer = tokio::time::timeout(deadline, async {
            let response = http.get(&url).send().await.map_err(|err| describe_reqwest(&err))?;
            if !response.status().is_success() {
                return Err(format!("health answered {}", response.status()));
            }
            response
                .json::<WorkerHealth>()
                .await
                .map_err(|err| describe_reqwest(&err))
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {deadline:?}")));
        match answer {
            Ok(health) => NodeStatus {
                ring_identity: member.ring_identity,
                worker_id: member.worker_id.or(Some(health.id)),
                address,
                cluster: member.cluster.unwrap_or(health.cluster_name),
                online: true,
                capacity_bytes: member.capacity_bytes.or(Some(health.capacity_bytes)),
                used_bytes: Some(health.used_bytes),
                error: None,
            },
            // The backend says ONLINE: a failed probe is worth showing but does not overrule it.
            Err(reason) => NodeStatus {
                ring_identity: member.ring_identity,
                worker_id: member.worker_id,
                address,
                cluster: member.cluster.unwrap_or_else(|| user.cluster_name.clone()),
                online: !must_probe,
                capacity_bytes: member.capacity_bytes,
                used_bytes: member.used_bytes,
                error: Some(reason),
            },
        }
    });
    join_all(probes).await
}

/// A short reason for a failed request, including its cause chain (reqwest hides the useful
/// part, e.g. "connection refused", in the source).
pub fn describe_reqwest(err: &reqwest::Error) -> String {
    let mut message = if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(err);
    let mut last = String::new();
    while let Some(cause) = source {
        last = cause.to_string();
        source = cause.source();
    }
    if !last.is_empty() {
        message.push_str(": ");
        message.push_str(&last);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(address: &str, online: bool) -> NodeStatus {
        NodeStatus {
            ring_identity: address.to_string(),
            worker_id: None,
            address: address.to_string(),
            cluster: "default".to_string(),
            online,
            capacity_bytes: Some(1 << 30),
            used_bytes: None,
            error: (!online).then(|| "cannot connect".to_string()),
        }
    }

    fn user(dynamic_ring: bool) -> UserConfig {
        let mut user = hoard_config::SiteConfig::defaults(std::path::Path::new("/conf")).user;
        user.dynamic_ring = dynamic_ring;
        user.virtual_nodes_per_worker = 200;
        user
    }

    #[test]
    fn dynamic_ring_holds_online_workers_static_ring_all() {
        let nodes = vec![node("h1:1", true), node("h2:1", false), node("h3:1", true)];
        let dynamic = ClusterView::new(nodes.clone(), &user(true));
        assert_eq!(dynamic.ring_size(), 2);
        let fixed = ClusterView::new(nodes, &user(false));
        assert_eq!(fixed.ring_size(), 3);
        let mut offline_first = 0;
        for i in 0..200 {
            let path = HoardPath::parse(&format!("/data/{i}")).unwrap();
            let order = dynamic.failover_order(&path);
            assert_eq!(order.len(), 2);
            assert!(
                order.iter().all(|n| n.online),
                "a dynamic ring never offers an offline worker"
            );
            // A static ring keeps the offline worker's place: its paths still list it first,
            // and failover then goes on to the others.
            let all = fixed.failover_order(&path);
            assert_eq!(all.len(), 3);
            if all[0].address == "h2:1" {
                offline_first += 1;
                assert!(all[1].online && all[2].online);
            }
        }
        assert!(offline_first > 0, "the offline worker keeps its share of a static ring");
    }

    #[test]
    fn placement_depends_on_identity_not_list_order() {
        let forward = ClusterView::new(
            vec![node("a:1", true), node("b:1", true), node("c:1", true)],
            &user(true),
        );
        let backward = ClusterView::new(
            vec![node("c:1", true), node("b:1", true), node("a:1", true)],
            &user(true),
        );
        for i in 0..500 {
            let path = HoardPath::parse(&format!("/f/{i}.bin")).unwrap();
            assert_eq!(
                forward.candidates(&path, 1)[0].address,
                backward.candidates(&path, 1)[0].address
            );
        }
    }
}
