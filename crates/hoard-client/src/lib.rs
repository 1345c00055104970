//! Hoard's client: builds the consistent-hash ring from the membership list, finds the workers
//! a path maps to, and reads from the first candidate that answers, going on to the next on
//! connection failures, timeouts and server errors (resuming where the last one stopped, pinned
//! to the same file version).

mod coordinator;
mod nodes;
mod read;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hoard_common::HoardPath;
use hoard_config::{MembershipType, SiteConfig, UserConfig};
use hoard_meta::{Membership, StaticMembership};
use hoard_ring::Ring;
use parking_lot::Mutex;

pub use coordinator::{CoordinatorClient, CoordinatorMembership};
pub use nodes::{describe_reqwest, probe_members, ClusterView, NodeStatus};
pub use read::StatResult;

/// Why one worker could not serve a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub worker: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no such file: {0}")]
    NotFound(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("range not satisfiable: {0}")]
    RangeNotSatisfiable(String),
    #[error("file {path} changed during the read (started at version {version})")]
    FileChanged { path: String, version: String },
    #[error("no workers available{}", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    NoWorkers(String),
    #[error("all workers failed for {path}: {}", describe_attempts(.attempts))]
    AllWorkersFailed { path: String, attempts: Vec<Attempt> },
    #[error("membership: {0}")]
    Membership(#[from] hoard_meta::MetaError),
    #[error("coordinator {address}: {reason}")]
    Coordinator { address: String, reason: String },
    /// The coordinator refused the request (`code` is the API's error code).
    #[error("{message}")]
    Rejected { code: String, message: String },
    #[error("http client setup: {0}")]
    Setup(String),
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

fn describe_attempts(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|attempt| format!("{} ({})", attempt.worker, attempt.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A Hoard client. Cheap to share (`Arc` inside); a long-lived client follows membership:
/// it lists workers again every `hoard.user.worker.list.refresh.interval` and, on etcd, as soon
/// as its watch reports a change.
pub struct HoardClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    membership: Arc<dyn Membership>,
    user: UserConfig,
    view: Mutex<Option<(Arc<ClusterView>, Instant)>>,
    /// Bumped before every listing; a listing only replaces a view built from an older one, so
    /// a slow list never overwrites a newer ring.
    generation: std::sync::atomic::AtomicU64,
    /// The generation of the stored view.
    stored_generation: Mutex<u64>,
    /// Follows the membership's change stream, when it has one; started with the first view.
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// How many times a membership watch was established (re-watches after breaks included).
    watches: std::sync::atomic::AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.lock().take() {
            watcher.abort();
        }
    }
}

impl HoardClient {
    /// A client for the cluster `config` describes (membership from its manager type).
    pub async fn connect(config: &SiteConfig) -> Result<HoardClient, ClientError> {
        let membership: Arc<dyn Membership> = match config.worker.membership_type {
            MembershipType::Static => Arc::new(StaticMembership::new(config.workers.clone())),
            MembershipType::Coordinator => Arc::new(CoordinatorMembership::new(CoordinatorClient::new(config)?)),
            MembershipType::Etcd => {
                let store = hoard_meta::etcd::EtcdStore::connect(&config.etcd).await?;
                Arc::new(hoard_meta::etcd::EtcdMembership::new(Arc::new(store)))
            }
        };
        HoardClient::with_membership(config.user.clone(), membership)
    }

    pub fn with_membership(user: UserConfig, membership: Arc<dyn Membership>) -> Result<HoardClient, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(user.connect_timeout)
            .read_timeout(user.read_timeout)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(|err| ClientError::Setup(err.to_string()))?;
        Ok(HoardClient {
            inner: Arc::new(Inner {
                http,
                membership,
                user,
                view: Mutex::new(None),
                generation: std::sync::atomic::AtomicU64::new(0),
                stored_generation: Mutex::new(0),
                watcher: Mutex::new(None),
                watches: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    pub fn membership(&self) -> &Arc<dyn Membership> {
        &self.inner.membership
    }

    pub fn membership_kind(&self) -> &'static str {
        self.inner.membership.kind()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The cluster as this client sees it: nodes and the ring built over them. Cached for
    /// `hoard.user.worker.list.refresh.interval` (or until a watch reports a change); `refresh`
    /// lists again now. When the membership store cannot be reached, the last view is kept
    /// (workers keep serving while etcd or the coordinator is down) and the error is logged.
    pub async fn view(&self, refresh: bool) -> Result<Arc<ClusterView>, ClientError> {
        if !refresh {
            if let Some((view, built)) = self.inner.view.lock().as_ref() {
                if built.elapsed() < self.inner.user.worker_list_refresh_interval {
                    return Ok(Arc::clone(view));
                }
            }
        }
        let view = match self.inner.rebuild().await {
            Ok(view) => view,
            Err(err) => {
                let mut cached = self.inner.view.lock();
                let Some((stale, _)) = cached.clone() else {
                    return Err(err);
                };
                tracing::warn!(error = %err, "cannot refresh the worker list; using the last one until the next refresh");
                // Try again after one refresh interval, not on every read meanwhile.
                *cached = Some((Arc::clone(&stale), Instant::now()));
                stale
            }
        };
        self.ensure_watcher();
        Ok(view)
    }

    fn ensure_watcher(&self) {
        let mut watcher = self.inner.watcher.lock();
        if watcher.is_some() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        *watcher = Some(tokio::spawn(follow_membership(weak)));
    }

    /// How many times this client established a watch on membership (0 when the membership
    /// cannot push changes); grows by one each time a broken watch is replaced.
    pub fn membership_watches(&self) -> u64 {
        self.inner.watches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The workers `path` maps to, best first (`count` at most).
    pub async fn locate(&self, path: &HoardPath, count: usize) -> Result<Vec<NodeStatus>, ClientError> {
        let view = self.view(false).await?;
        Ok(view.candidates(path, count))
    }

    /// Every registered worker with its state, plus the live coordinators: for `info nodes`.
    /// Unlike [`HoardClient::view`] it asks every worker that may be up for its usage.
    pub async fn nodes_report(&self) -> Result<NodesReport, ClientError> {
        let members = self.inner.membership.members().await?;
        let workers = nodes::probe_members(&self.inner.http, members, &self.inner.user, true).await;
        let coordinators = self.inner.membership.coordinators().await?;
        let singleton = hoard_meta::singleton_holder(&coordinators).map(|holder| holder.coordinator_id.clone());
        Ok(NodesReport {
            membership: self.membership_kind().to_string(),
            dynamic_ring: self.inner.user.dynamic_ring,
            workers,
            coordinators,
            singleton,
        })
    }
}

impl Inner {
    /// Lists the members and stores the new view.
    async fn rebuild(&self) -> Result<Arc<ClusterView>, ClientError> {
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let members = self.membership.members().await?;
        let nodes = nodes::probe_members(&self.http, members, &self.user, false).await;
        let view = Arc::new(ClusterView::new(nodes, &self.user));
        let mut stored = self.stored_generation.lock();
        if generation > *stored {
            *stored = generation;
            *self.view.lock() = Some((Arc::clone(&view), Instant::now()));
        }
        Ok(view)
    }
}

/// Follows a membership that pushes changes (etcd): every event lists again; a broken watch
/// (compaction, etcd restart) lists again and watches anew, with backoff, so the ring is never
/// stale for longer than the outage.
async fn follow_membership(inner: std::sync::Weak<Inner>) {
    use futures::StreamExt;
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let membership = Arc::clone(&strong.membership);
        drop(strong);
        let mut stream = match membership.watch().await {
            Ok(Some(stream)) => stream,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch membership; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        // Changes made between the last list and the new watch are picked up here.
        if let Some(strong) = inner.upgrade() {
            strong.watches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(err) = strong.rebuild().await {
                tracing::warn!(error = %err, "cannot list members after (re)watching");
            }
        }
        while let Some(event) = stream.next().await {
            let Some(strong) = inner.upgrade() else { return };
            match event {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    if let Err(err) = strong.rebuild().await {
                        tracing::warn!(error = %err, "cannot list members after a change");
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "membership watch broke; listing again and re-watching");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// What `hoard info nodes` prints.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodesReport {
    pub membership: String,
    pub dynamic_ring: bool,
    pub workers: Vec<NodeStatus>,
    pub coordinators: Vec<hoard_meta::CoordinatorRecord>,
    /// The coordinator holding the singleton duties (job cleanup).
    pub singleton: Option<String>,
}

/// Builds a ring from nodes with the configured provider and virtual node count.
pub fn build_ring(nodes: &[NodeStatus], user: &UserConfig) -> Ring {
    let provider = match user.hash_provider {
        hoard_config::HashProvider::Default => hoard_ring::Provider::Default,
        hoard_config::HashProvider::Capacity => hoard_ring::Provider::Capacity,
    };
    let members = nodes
        .iter()
        .map(|node| hoard_ring::Member {
            identity: node.ring_identity.clone(),
            capacity_bytes: node.capacity_bytes.unwrap_or(0),
        })
        .collect();
    Ring::build(members, user.virtual_nodes_per_worker, provider)
}
