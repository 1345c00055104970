//! Cluster metadata. For now: membership, i.e. which workers belong to the cluster.
//!
//! The [`Membership`] trait is what clients and the coordinator build rings from. Backends differ
//! in where the list lives and who knows liveness: `STATIC` reads `conf/workers` and knows
//! nothing about liveness (the client probes); the coordinator-hosted and etcd backends (next
//! issue) keep registrations with heartbeats and report liveness themselves.

use hoard_config::WorkerAddress;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("membership store unavailable: {0}")]
    Unavailable(String),
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
    /// The identity hashed onto the ring. For STATIC membership it is `host:port` as listed in
    /// `conf/workers`, so every client derives the same ring without asking anyone.
    pub ring_identity: String,
    /// The worker's own persistent id (its UUID) when the backend knows it.
    pub worker_id: Option<String>,
    pub address: WorkerAddress,
    pub liveness: Liveness,
    pub capacity_bytes: Option<u64>,
}

#[async_trait::async_trait]
pub trait Membership: Send + Sync + std::fmt::Debug {
    /// Every registered worker, in a stable order.
    async fn members(&self) -> Result<Vec<MemberRecord>, MetaError>;
    /// `STATIC`, `EMBEDDED`, `ETCD`: for `info nodes` and logs.
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
            })
            .collect())
    }

    fn kind(&self) -> &'static str {
        "STATIC"
    }
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
