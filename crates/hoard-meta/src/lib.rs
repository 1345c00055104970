//! Cluster metadata: the metastore (one trait, an embedded and an etcd backend), the records
//! kept in it (worker registrations, coordinators), and membership as clients see it.
//!
//! Key layout (relative to the store's root; docs/etcd.md):
//!
//! | key | value | lifetime |
//! | --- | --- | --- |
//! | `workers/<worker-id>` | [`WorkerRegistration`] JSON | permanent, until `remove-worker` |
//! | `live/workers/<worker-id>` | [`LiveWorker`] JSON | on the worker's lease (etcd) |
//! | `live/coordinators/<coordinator-id>` | [`CoordinatorRecord`] JSON | on the coordinator's lease (etcd) |
//! | `replica-rules/<encoded path>` | [`hoard_common::replica::ReplicaRule`] JSON | permanent, until deleted ([`replica_rules`]) |

mod deadline;
pub mod embedded;
pub mod etcd;
pub mod jobs;
mod records;
pub mod replica_rules;

use std::time::Duration;

use hoard_config::WorkerAddress;

pub use deadline::SharedDeadline;
pub use records::{keys, now_millis, singleton_holder, CoordinatorRecord, LiveWorker, WorkerRegistration};

#[derive(Debug, Clone, thiserror::Error)]
pub enum MetaError {
    /// The store cannot be reached now; the operation may succeed if retried.
    #[error("metastore unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer in time; the operation may succeed if retried.
    #[error("metastore {operation} timed out after {timeout:?}")]
    Timeout { operation: &'static str, timeout: Duration },
    /// A record that does not parse: never silently replaced.
    #[error("metastore record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    /// The embedded store's file cannot be opened or written.
    #[error("embedded metastore {path}: {reason}")]
    Embedded { path: String, reason: String },
    /// Another live process holds this worker id.
    #[error("worker id {worker_id} is already in use by a live worker at {address}; stop that worker, or give this one its own identity file")]
    IdInUse { worker_id: String, address: String },
    #[error("no worker with id {0} is registered")]
    UnknownWorker(String),
    #[error("worker {worker_id} is ONLINE at {address}: stop it first (or pass --force)")]
    WorkerOnline { worker_id: String, address: String },
    #[error("invalid metastore configuration: {0}")]
    Config(String),
}

impl MetaError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, MetaError::Unavailable(_) | MetaError::Timeout { .. })
    }
}

/// One key with its value and version. The version changes on every write of the key (etcd's
/// `mod_revision`; the embedded store's commit counter), so it serves compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub version: u64,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's version is this (`None`: the key does not exist).
    Version { key: String, version: Option<u64> },
    /// The key exists and holds exactly this value.
    Value { key: String, value: Vec<u8> },
}

impl Compare {
    pub fn key(&self) -> &str {
        match self {
            Compare::Version { key, .. } | Compare::Value { key, .. } => key,
        }
    }
}

/// A write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// The durable store behind the coordinator (jobs, membership in COORDINATOR mode) and, on
/// etcd, behind workers' registrations. Keys are relative to the store's root.
#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug {
    async fn get(&self, key: &str) -> Result<Option<Entry>, MetaError>;
    /// Every key starting with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, MetaError>;
    /// The first `limit` keys starting with `prefix`, in key order (a queue's head without
    /// reading the whole queue).
    async fn list_limited(&self, prefix: &str, limit: usize) -> Result<Vec<Entry>, MetaError> {
        let mut entries = self.list(prefix).await?;
        entries.truncate(limit);
        Ok(entries)
    }
    /// Each key's entry (`None` where absent), in the order asked: one read transaction on
    /// the embedded store, one request per 64 keys to etcd.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, MetaError> {
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            entries.push(self.get(key).await?);
        }
        Ok(entries)
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), MetaError>;
    /// Whether the key existed.
    async fn delete(&self, key: &str) -> Result<bool, MetaError>;
    /// Applies every op, atomically, only if every compare holds. `Some(version)` when it did:
    /// every key the txn put now has this version (so a compare-and-set loop needs no read
    /// back); `None` when a compare failed and nothing changed.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<Option<u64>, MetaError>;
    /// `EMBEDDED` or `ETCD`.
    fn kind(&self) -> &'static str;
}

/// Whether a registered worker is alive, as far as the membership backend knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Online,
    Offline,
    /// The backend does not track liveness (STATIC): the caller must probe.
    Unknown,
}

/// One registered worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The identity hashed onto the ring: the worker id for COORDINATOR and ETCD membership
    /// (so a worker keeps its ring positions across restarts and address changes), `host:port`
    /// as listed in `conf/workers` for STATIC (every client derives the same ring without
    /// asking anyone).
    pub ring_identity: String,
    /// The worker's own persistent id (its UUID) when the backend knows it.
    pub worker_id: Option<String>,
    pub address: WorkerAddress,
    pub liveness: Liveness,
    pub capacity_bytes: Option<u64>,
    /// Page store bytes in use, when the backend hears it (COORDINATOR heartbeats).
    pub used_bytes: Option<u64>,
    /// Its cluster, when the backend knows it (STATIC: learnt from the worker's health answer).
    pub cluster: Option<String>,
}

/// A change notification stream: each item says "the member list may have changed, list
/// again"; an error or the end of the stream means the watch broke and must be re-created.
pub type ChangeStream = futures::stream::BoxStream<'static, Result<(), MetaError>>;

#[async_trait::async_trait]
pub trait Membership: Send + Sync + std::fmt::Debug {
    /// Every registered worker, in a stable order.
    async fn members(&self) -> Result<Vec<MemberRecord>, MetaError>;
    /// Every live coordinator (empty when the backend has none).
    async fn coordinators(&self) -> Result<Vec<CoordinatorRecord>, MetaError> {
        Ok(Vec::new())
    }
    /// Changes pushed by the backend, when it can push them (etcd's watch); `None` when the
    /// caller must poll.
    async fn watch(&self) -> Result<Option<ChangeStream>, MetaError> {
        Ok(None)
    }
    /// `STATIC`, `COORDINATOR`, `ETCD`: for `info nodes` and logs.
    fn kind(&self) -> &'static str;
}

/// `hoard.worker.membership.manager.type=STATIC`: the workers listed in `conf/workers`.
#[derive(Debug, Clone)]
pub struct StaticMembership {
    workers: Vec<WorkerAddress>,
}

impl StaticMembership {
    pub fn new(workers: Vec<WorkerAddress>) -> StaticMembership {
        StaticMembership { workers }
    }
}

#[async_trait::async_trait]
impl Membership for StaticMembership {
    async fn members(&self) -> Result<Vec<MemberRecord>, MetaError> {
        Ok(self
            .workers
            .iter()
            .map(|address| MemberRecord {
                ring_identity: address.to_string(),
                worker_id: None,
                address: address.clone(),
                liveness: Liveness::Unknown,
                capacity_bytes: None,
                used_bytes: None,
                cluster: None,
            })
            .collect())
    }

    fn kind(&self) -> &'static str {
        "STATIC"
    }
}

/// The member list from registrations plus the ids known to be live right now.
pub fn members_from_records(
    registrations: Vec<WorkerRegistration>,
    is_live: impl Fn(&str) -> bool,
) -> Vec<MemberRecord> {
    registrations
        .into_iter()
        .map(|registration| {
            let liveness = if is_live(&registration.worker_id) {
                Liveness::Online
            } else {
                Liveness::Offline
            };
            MemberRecord {
                ring_identity: registration.worker_id.clone(),
                address: registration.address(),
                worker_id: Some(registration.worker_id),
                liveness,
                capacity_bytes: Some(registration.capacity_bytes),
                used_bytes: None,
                cluster: Some(registration.cluster_name),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_members_use_address_as_ring_identity() {
        let membership = StaticMembership::new(vec![
            WorkerAddress {
                host: "10.0.0.1".into(),
                port: 29999,
            },
            WorkerAddress {
                host: "[::1]".into(),
                port: 30000,
            },
        ]);
        let members = membership.members().await.unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].ring_identity, "10.0.0.1:29999");
        assert_eq!(members[1].ring_identity, "[::1]:30000");
        assert!(members.iter().all(|m| m.liveness == Liveness::Unknown));
    }
}
