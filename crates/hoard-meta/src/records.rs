//! The records kept in the metastore, stored as JSON with camelCase fields (docs/etcd.md).

use hoard_config::WorkerAddress;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{Entry, MetaError};

/// Key names, relative to the store's root.
pub mod keys {
    pub const WORKERS: &str = "workers/";
    pub const LIVE_WORKERS: &str = "live/workers/";
    pub const LIVE_COORDINATORS: &str = "live/coordinators/";

    pub fn worker(worker_id: &str) -> String {
        format!("{WORKERS}{worker_id}")
    }

    pub fn live_worker(worker_id: &str) -> String {
        format!("{LIVE_WORKERS}{worker_id}")
    }

    pub fn live_coordinator(coordinator_id: &str) -> String {
        format!("{LIVE_COORDINATORS}{coordinator_id}")
    }
}

/// A worker's permanent registration: written when it starts, kept while it is down, deleted
/// only by `remove-worker`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRegistration {
    pub worker_id: String,
    /// Its cluster (`hoard.cluster.name`); records written before clusters are `default`.
    #[serde(default = "hoard_common::replica::default_cluster_name")]
    pub cluster_name: String,
    /// How clients reach it (`hoard.worker.hostname`).
    pub host: String,
    /// The port of its HTTP server (reads, stat, health, metrics).
    pub rpc_port: u16,
    pub capacity_bytes: u64,
    /// The Hoard version it runs.
    pub version: String,
    /// When this process started, in milliseconds since the Unix epoch.
    pub start_time_ms: u64,
    /// Random per process: tells a restart of the same worker from a second process that
    /// claims the same id.
    pub instance: String,
}

impl WorkerRegistration {
    pub fn address(&self) -> WorkerAddress {
        WorkerAddress {
            host: self.host.clone(),
            port: self.rpc_port,
        }
    }
}

/// What a worker's liveness key holds (on its lease, etcd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveWorker {
    pub worker_id: String,
    pub address: String,
    pub instance: String,
    pub start_time_ms: u64,
}

/// A live coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorRecord {
    pub coordinator_id: String,
    /// `host:port` of its REST API.
    pub address: String,
    pub version: String,
    pub start_time_ms: u64,
}

/// The coordinator that holds the singleton duties (cleanup of expired jobs, later recurring
/// work): the longest-running live one (earliest start, then smallest id). Every coordinator
/// computes the same answer from the same liveness keys in etcd; when the holder dies its lease
/// expires and the next oldest takes over.
pub fn singleton_holder(coordinators: &[CoordinatorRecord]) -> Option<&CoordinatorRecord> {
    coordinators
        .iter()
        .min_by(|a, b| (a.start_time_ms, &a.coordinator_id).cmp(&(b.start_time_ms, &b.coordinator_id)))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(entry: &Entry) -> Result<T, MetaError> {
    serde_json::from_slice(&entry.value).map_err(|err| MetaError::Corrupt {
        key: entry.key.clone(),
        reason: err.to_string(),
    })
}

impl WorkerRegistration {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(entry: &Entry) -> Result<WorkerRegistration, MetaError> {
        decode(entry)
    }
}

impl LiveWorker {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(entry: &Entry) -> Result<LiveWorker, MetaError> {
        decode(entry)
    }
}

impl CoordinatorRecord {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(entry: &Entry) -> Result<CoordinatorRecord, MetaError> {
        decode(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, start: u64) -> CoordinatorRecord {
        CoordinatorRecord {
            coordinator_id: id.into(),
            address: format!("{id}:1"),
            version: "v".into(),
            start_time_ms: start,
        }
    }

    #[test]
    fn the_oldest_live_coordinator_holds_the_singleton_duties() {
        assert_eq!(singleton_holder(&[]), None);
        let all = [record("c", 5), record("b", 3), record("a", 3)];
        assert_eq!(singleton_holder(&all).map(|r| r.coordinator_id.as_str()), Some("a"));
        assert_eq!(
            singleton_holder(&all[..1]).map(|r| r.coordinator_id.as_str()),
            Some("c")
        );
    }
}
