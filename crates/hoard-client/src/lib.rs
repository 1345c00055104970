//! Hoard's client: builds the consistent-hash ring from the membership list, finds the workers
//! a path maps to, and reads from the first candidate that answers, going on to the next on
//! connection failures, timeouts and server errors (resuming where the last one stopped, pinned
//! to the same file version).

mod nodes;
mod read;

use std::sync::Arc;
use std::time::Instant;

use hoard_common::HoardPath;
use hoard_config::{SiteConfig, UserConfig};
use hoard_meta::{Membership, StaticMembership};
use hoard_ring::Ring;
use parking_lot::Mutex;

pub use nodes::{ClusterView, NodeStatus};
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

pub struct HoardClient {
    http: reqwest::Client,
    membership: Arc<dyn Membership>,
    user: UserConfig,
    view: Mutex<Option<(Arc<ClusterView>, Instant)>>,
}

impl HoardClient {
    /// A client for the cluster `config` describes (membership from its manager type).
    pub fn new(config: &SiteConfig) -> Result<HoardClient, ClientError> {
        let membership: Arc<dyn Membership> = match config.worker.membership_type {
            hoard_config::MembershipType::Static => Arc::new(StaticMembership::new(config.workers.clone())),
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
            http,
            membership,
            user,
            view: Mutex::new(None),
        })
    }

    pub fn membership_kind(&self) -> &'static str {
        self.membership.kind()
    }

    /// The cluster as this client sees it: nodes (probed) and the ring built over them. Cached
    /// for `hoard.user.worker.list.refresh.interval`; `refresh` forces a new probe.
    pub async fn view(&self, refresh: bool) -> Result<Arc<ClusterView>, ClientError> {
        if !refresh {
            if let Some((view, built)) = self.view.lock().as_ref() {
                if built.elapsed() < self.user.worker_list_refresh_interval {
                    return Ok(Arc::clone(view));
                }
            }
        }
        let view = Arc::new(nodes::probe(&self.http, self.membership.as_ref(), &self.user).await?);
        *self.view.lock() = Some((Arc::clone(&view), Instant::now()));
        Ok(view)
    }

    /// The workers `path` maps to, best first (`count` at most).
    pub async fn locate(&self, path: &HoardPath, count: usize) -> Result<Vec<NodeStatus>, ClientError> {
        let view = self.view(false).await?;
        Ok(view.candidates(path, count))
    }
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
