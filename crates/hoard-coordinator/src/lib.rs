//! The Hoard coordinator: a REST API (JSON, described by the OpenAPI document it serves) over
//! the metastore. In this version it owns membership for `COORDINATOR` mode (workers register
//! and heartbeat here; registrations live in the embedded store, so a restart keeps them) and
//! reports membership for `ETCD` mode (read from etcd, where the coordinator also keeps its own
//! liveness key). The job scheduler comes next (docs/coordinator-api.md).

mod api;
mod metrics;
mod openapi;
pub mod registry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hoard_common::api::coordinator::{CoordinatorInfo, NodesResponse, WorkerInfo};
use hoard_config::{MembershipType, SiteConfig};
use hoard_meta::embedded::EmbeddedStore;
use hoard_meta::etcd::{EtcdMembership, EtcdStore, LeaseSession};
use hoard_meta::{keys, now_millis, CoordinatorRecord, Liveness, Membership, MetaError, MetaStore, WorkerRegistration};
use tokio::sync::Mutex;

pub use api::router;
pub use metrics::CoordinatorMetrics;
use registry::{HeartbeatError, Registry};

/// How long a coordinator's own liveness key outlives it in etcd.
const COORDINATOR_LEASE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("coordinator start-up task failed: {0}")]
    Startup(String),
}

enum Backend {
    /// COORDINATOR (and STATIC) membership: the embedded store and the heartbeat registry.
    Embedded {
        store: EmbeddedStore,
        registry: Mutex<Registry>,
    },
    /// ETCD membership: registrations and liveness live in etcd.
    Etcd {
        store: Arc<EtcdStore>,
        membership: EtcdMembership,
        session: Mutex<Option<LeaseSession>>,
    },
}

pub struct CoordinatorState {
    pub id: String,
    pub address: String,
    start_time_ms: u64,
    membership_type: MembershipType,
    admin_token: Option<String>,
    static_workers: Vec<hoard_config::WorkerAddress>,
    backend: Backend,
    pub metrics: CoordinatorMetrics,
}

impl std::fmt::Debug for CoordinatorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorState")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("membership", &self.membership_type)
            .finish_non_exhaustive()
    }
}

impl CoordinatorState {
    /// Opens the metastore the configured membership type needs and, on etcd, registers this
    /// coordinator. `address` is what it advertises (`host:port`, the port actually bound).
    pub async fn open(config: &SiteConfig, address: String) -> Result<Arc<CoordinatorState>, CoordinatorError> {
        let id = uuid::Uuid::new_v4().to_string();
        let start_time_ms = now_millis();
        let backend = match config.worker.membership_type {
            MembershipType::Etcd => {
                let store = Arc::new(EtcdStore::connect(&config.etcd).await?);
                let record = CoordinatorRecord {
                    coordinator_id: id.clone(),
                    address: address.clone(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    start_time_ms,
                };
                let session = store.register_coordinator(&record, COORDINATOR_LEASE_TTL).await?;
                Backend::Etcd {
                    membership: EtcdMembership::new(Arc::clone(&store)),
                    store,
                    session: Mutex::new(Some(session)),
                }
            }
            MembershipType::Coordinator | MembershipType::Static => {
                let path = config.coordinator.metastore_file();
                let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&path))
                    .await
                    .map_err(|err| CoordinatorError::Startup(err.to_string()))??;
                let mut known = Vec::new();
                for entry in store.list(keys::WORKERS).await? {
                    known.push(WorkerRegistration::decode(&entry)?);
                }
                tracing::info!(
                    store = %store.path().display(),
                    registered_workers = known.len(),
                    "embedded metastore open"
                );
                Backend::Embedded {
                    store,
                    registry: Mutex::new(Registry::new(
                        config.worker.failure_detection_timeout,
                        known,
                        Instant::now(),
                    )),
                }
            }
        };
        Ok(Arc::new(CoordinatorState {
            id,
            address,
            start_time_ms,
            membership_type: config.worker.membership_type,
            admin_token: config.security.admin_token.clone(),
            static_workers: config.workers.clone(),
            backend,
            metrics: CoordinatorMetrics::default(),
        }))
    }

    pub fn membership_kind(&self) -> &'static str {
        self.membership_type.as_str()
    }

    pub fn metastore_kind(&self) -> &'static str {
        match &self.backend {
            Backend::Embedded { .. } => "EMBEDDED",
            Backend::Etcd { .. } => "ETCD",
        }
    }

    fn self_info(&self) -> CoordinatorInfo {
        CoordinatorInfo {
            coordinator_id: self.id.clone(),
            address: self.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            start_time_ms: self.start_time_ms,
        }
    }

    pub async fn nodes(&self) -> Result<NodesResponse, MetaError> {
        let (workers, coordinators) = match &self.backend {
            Backend::Embedded { registry, .. } => {
                let workers = if self.membership_type == MembershipType::Static {
                    self.static_workers.iter().map(static_worker_info).collect()
                } else {
                    registry.lock().await.workers(Instant::now())
                };
                (workers, vec![self.self_info()])
            }
            Backend::Etcd { store, membership, .. } => {
                let members = membership.members().await?;
                let mut registrations = Vec::new();
                for entry in store.list(keys::WORKERS).await? {
                    registrations.push(WorkerRegistration::decode(&entry)?);
                }
                let workers = registrations
                    .into_iter()
                    .map(|registration| {
                        let online = members.iter().any(|member| {
                            member.worker_id.as_deref() == Some(registration.worker_id.as_str())
                                && member.liveness == Liveness::Online
                        });
                        etcd_worker_info(registration, online)
                    })
                    .collect();
                let coordinators = membership
                    .coordinators()
                    .await?
                    .into_iter()
                    .map(|record| CoordinatorInfo {
                        coordinator_id: record.coordinator_id,
                        address: record.address,
                        version: record.version,
                        start_time_ms: record.start_time_ms,
                    })
                    .collect();
                (workers, coordinators)
            }
        };
        let online = workers.iter().filter(|worker| worker.state == "ONLINE").count();
        self.metrics.set_workers(workers.len(), online);
        Ok(NodesResponse {
            membership: self.membership_kind().to_string(),
            workers,
            coordinators,
        })
    }

    pub async fn register_worker(&self, registration: WorkerRegistration) -> Result<(), ApiFailure> {
        let Backend::Embedded { store, registry } = &self.backend else {
            return Err(ApiFailure::WrongMembership(self.membership_kind()));
        };
        if self.membership_type != MembershipType::Coordinator {
            return Err(ApiFailure::WrongMembership(self.membership_kind()));
        }
        let mut registry = registry.lock().await;
        registry.check_register(&registration, Instant::now())?;
        store
            .put(&keys::worker(&registration.worker_id), registration.encode())
            .await?;
        tracing::info!(
            worker_id = %registration.worker_id,
            address = %registration.address(),
            "worker registered"
        );
        registry.register(registration, Instant::now());
        self.metrics.registrations.inc();
        Ok(())
    }

    pub fn heartbeat_failure(&self) -> Option<ApiFailure> {
        match (&self.backend, self.membership_type) {
            (Backend::Embedded { .. }, MembershipType::Coordinator) => None,
            _ => Some(ApiFailure::WrongMembership(self.membership_kind())),
        }
    }

    pub async fn heartbeat(
        &self,
        worker_id: &str,
        heartbeat: &hoard_common::api::coordinator::Heartbeat,
    ) -> Result<(), ApiFailure> {
        if let Some(failure) = self.heartbeat_failure() {
            return Err(failure);
        }
        let Backend::Embedded { registry, .. } = &self.backend else {
            return Err(ApiFailure::WrongMembership(self.membership_kind()));
        };
        self.metrics.heartbeats.inc();
        registry
            .lock()
            .await
            .heartbeat(
                worker_id,
                &heartbeat.instance,
                heartbeat.used_bytes,
                heartbeat.capacity_bytes,
                Instant::now(),
            )
            .map_err(|err| match err {
                HeartbeatError::Unknown => ApiFailure::Meta(MetaError::UnknownWorker(worker_id.to_string())),
                HeartbeatError::OtherInstance { address } => ApiFailure::Meta(MetaError::IdInUse {
                    worker_id: worker_id.to_string(),
                    address,
                }),
            })
    }

    /// `remove-worker`: deletes a registration; refuses while the worker is ONLINE unless forced.
    pub async fn remove_worker(&self, worker_id: &str, force: bool) -> Result<WorkerRegistration, ApiFailure> {
        let removed = match &self.backend {
            Backend::Embedded { store, registry } => {
                if self.membership_type != MembershipType::Coordinator {
                    return Err(ApiFailure::WrongMembership(self.membership_kind()));
                }
                let mut registry = registry.lock().await;
                let registration = registry.check_remove(worker_id, force, Instant::now())?.clone();
                store.delete(&keys::worker(worker_id)).await?;
                registry.remove(worker_id);
                registration
            }
            Backend::Etcd { membership, .. } => membership.remove_worker(worker_id, force).await?,
        };
        tracing::info!(worker_id, address = %removed.address(), force, "worker removed");
        self.metrics.removals.inc();
        Ok(removed)
    }

    /// Ends this coordinator's etcd lease at once (a clean stop), so it leaves the list now.
    pub async fn shutdown(&self) {
        if let Backend::Etcd { session, .. } = &self.backend {
            if let Some(session) = session.lock().await.take() {
                session.close().await;
            }
        }
    }
}

/// Why a REST request failed: mapped to a status and an error code by the API layer.
#[derive(Debug, thiserror::Error)]
pub enum ApiFailure {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("this cluster uses {0} membership; the request only applies to COORDINATOR membership")]
    WrongMembership(&'static str),
}

fn static_worker_info(address: &hoard_config::WorkerAddress) -> WorkerInfo {
    WorkerInfo {
        worker_id: address.to_string(),
        address: address.to_string(),
        host: address.host.clone(),
        rpc_port: address.port,
        state: "UNKNOWN".to_string(),
        capacity_bytes: 0,
        used_bytes: None,
        version: String::new(),
        start_time_ms: 0,
        last_heartbeat_age_ms: None,
    }
}

fn etcd_worker_info(registration: WorkerRegistration, online: bool) -> WorkerInfo {
    WorkerInfo {
        address: registration.address().to_string(),
        worker_id: registration.worker_id,
        host: registration.host,
        rpc_port: registration.rpc_port,
        state: if online { "ONLINE" } else { "OFFLINE" }.to_string(),
        capacity_bytes: registration.capacity_bytes,
        used_bytes: None,
        version: registration.version,
        start_time_ms: registration.start_time_ms,
        last_heartbeat_age_ms: None,
    }
}

/// Serves the REST API on `listener` until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<CoordinatorState>) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}
