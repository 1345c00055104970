//! Prefer cached replicas (`hoard.user.replica.prefer.cached.replicas`, docs/replicas.md): before
//! a read, the client asks the file's replicas which hold it whole (`GET /api/v1/cached`, a
//! page index lookup on the worker, never a UFS call), keeps the answers for
//! `hoard.user.replica.cached.probe.ttl`, and reads from the first replica that holds it whole.
//! A partly cached replica gets no priority. Also the bytes read per serving cluster and
//! hotness (`hoard_multi_replica_read_from_workers_bytes_total`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::future::join_all;
use hoard_common::api::{encode_path_for_url, CachedAnswer, CACHED_ROUTE};
use hoard_common::HoardPath;
use parking_lot::Mutex;

use crate::nodes::NodeStatus;

/// Files whose probe answers are kept at most (the map is emptied when full).
const MAX_REMEMBERED: usize = 16_384;

/// The probe answers: which replicas held a file whole, and when that was asked.
pub(crate) struct CachedProbe {
    answers: Mutex<HashMap<HoardPath, (Instant, Vec<String>)>>,
    ttl: Duration,
    timeout: Duration,
}

impl CachedProbe {
    /// How long one probe request may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn new(ttl: Duration, timeout: Duration) -> CachedProbe {
        CachedProbe {
            answers: Mutex::new(HashMap::new()),
            ttl,
            timeout,
        }
    }

    /// The addresses of `replicas` that hold `path` whole, asked in parallel (each bounded by
    /// the probe timeout; no answer counts as not whole) or remembered from an earlier probe.
    pub(crate) async fn whole_on(
        &self,
        http: &reqwest::Client,
        path: &HoardPath,
        replicas: &[NodeStatus],
    ) -> Vec<String> {
        if let Some((asked, whole)) = self.answers.lock().get(path) {
            if asked.elapsed() < self.ttl {
                return whole.clone();
            }
        }
        let whole: Vec<String> = probe(http, path, replicas, self.timeout)
            .await
            .into_iter()
            .zip(replicas)
            .filter_map(|(answer, node)| answer.filter(|answer| answer.whole).map(|_| node.address.clone()))
            .collect();
        if !self.ttl.is_zero() {
            let mut answers = self.answers.lock();
            if answers.len() >= MAX_REMEMBERED {
                answers.clear();
            }
            answers.insert(path.clone(), (Instant::now(), whole.clone()));
        }
        whole
    }

    /// Forgets what was learnt about `path` (a read from a replica said to be whole failed).
    pub(crate) fn forget(&self, path: &HoardPath) {
        self.answers.lock().remove(path);
    }
}

/// What each of `nodes` says it holds of `path` (`GET /api/v1/cached`, in parallel, each
/// bounded by `timeout`), in their order; `None` where no answer came.
pub(crate) async fn probe(
    http: &reqwest::Client,
    path: &HoardPath,
    nodes: &[NodeStatus],
    timeout: Duration,
) -> Vec<Option<CachedAnswer>> {
    let url_path = encode_path_for_url(path.as_str());
    let url_path = &url_path;
    let probes = nodes.iter().map(|node| async move {
        let url = format!("http://{}{CACHED_ROUTE}?path={url_path}", node.address);
        let answer = tokio::time::timeout(timeout, async {
            http.get(&url)
                .send()
                .await?
                .error_for_status()?
                .json::<CachedAnswer>()
                .await
        })
        .await;
        answer.ok().and_then(Result::ok)
    });
    join_all(probes).await
}

/// Asks `worker` to load `path` in the background (`POST /api/v1/passive-cache`), without
/// waiting: a read never waits for the passive cache, and a failed request is only logged.
pub(crate) fn request_passive_load(
    http: reqwest::Client,
    worker: String,
    path: &HoardPath,
) -> tokio::task::JoinHandle<()> {
    let url = format!(
        "http://{worker}{}?path={}",
        hoard_common::api::PASSIVE_CACHE_ROUTE,
        encode_path_for_url(path.as_str())
    );
    tokio::spawn(async move {
        match http
            .post(&url)
            .send()
            .await
            .and_then(|response| response.error_for_status())
        {
            Ok(_) => {}
            Err(err) => tracing::debug!(worker, error = %err, "passive cache request failed"),
        }
    })
}

/// Moves the first of the first `replicas` nodes of `order` that holds the file whole (by
/// `whole`) to the front; the rest keep their order. Whether one did.
pub(crate) fn prefer_whole(order: &mut Vec<NodeStatus>, replicas: usize, whole: &[String]) -> bool {
    let Some(position) = order
        .iter()
        .take(replicas)
        .position(|node| whole.contains(&node.address))
    else {
        return false;
    };
    let node = order.remove(position);
    order.insert(0, node);
    true
}

/// Bytes read from workers, by the serving worker's cluster, whether that is the client's own,
/// and whether the worker held the file whole (a hot read).
#[derive(Default)]
pub(crate) struct ReplicaReads {
    bytes: Mutex<BTreeMap<(String, bool, bool), u64>>,
}

impl ReplicaReads {
    pub(crate) fn add(&self, cluster: &str, local: bool, hot: bool, bytes: u64) {
        if bytes == 0 {
            return;
        }
        *self.bytes.lock().entry((cluster.to_string(), local, hot)).or_default() += bytes;
    }

    /// Prometheus text of `hoard_multi_replica_read_from_workers_bytes_total`.
    pub(crate) fn render(&self) -> String {
        let mut out = String::from(
            "# HELP hoard_multi_replica_read_from_workers_bytes_total Bytes this client read from workers, by the serving worker's cluster, whether it is the client's, and whether the worker held the file whole.\n# TYPE hoard_multi_replica_read_from_workers_bytes_total counter\n",
        );
        for ((cluster, local, hot), bytes) in self.bytes.lock().iter() {
            out.push_str(&format!(
                "hoard_multi_replica_read_from_workers_bytes_total{{cluster_name=\"{cluster}\",local_cluster=\"{local}\",hot_read=\"{hot}\"}} {bytes}\n"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(address: &str) -> NodeStatus {
        NodeStatus {
            ring_identity: address.to_string(),
            worker_id: None,
            address: address.to_string(),
            cluster: "default".to_string(),
            online: true,
            capacity_bytes: None,
            used_bytes: None,
            error: None,
        }
    }

    fn addresses(order: &[NodeStatus]) -> Vec<&str> {
        order.iter().map(|node| node.address.as_str()).collect()
    }

    #[test]
    fn the_first_whole_replica_goes_first_and_the_rest_keep_their_order() {
        let mut order = vec![node("a"), node("b"), node("c"), node("d")];
        assert!(prefer_whole(&mut order, 3, &["c".into(), "b".into()]));
        assert_eq!(addresses(&order), ["b", "a", "c", "d"]);
        let mut order = vec![node("a"), node("b"), node("c"), node("d")];
        // Only replicas count: d is not one.
        assert!(!prefer_whole(&mut order, 3, &["d".into()]));
        assert_eq!(addresses(&order), ["a", "b", "c", "d"]);
        assert!(!prefer_whole(&mut order, 3, &[]));
    }

    #[test]
    fn reads_render_as_prometheus_text() {
        let reads = ReplicaReads::default();
        reads.add("az-1", true, true, 10);
        reads.add("az-1", true, true, 5);
        reads.add("az-2", false, false, 7);
        reads.add("az-2", false, true, 0);
        let text = reads.render();
        assert!(text.contains(
            "hoard_multi_replica_read_from_workers_bytes_total{cluster_name=\"az-1\",local_cluster=\"true\",hot_read=\"true\"} 15\n"
        ));
        assert!(text.contains("cluster_name=\"az-2\",local_cluster=\"false\",hot_read=\"false\"} 7\n"));
        assert!(!text.contains("hot_read=\"true\"} 0"));
    }
}
