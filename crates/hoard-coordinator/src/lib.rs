//! The Hoard coordinator: a REST API (JSON, described by the OpenAPI document it serves) over
//! the metastore. In this version it owns membership for `COORDINATOR` mode (workers register
//! and heartbeat here; registrations live in the embedded store, so a restart keeps them) and
//! reports membership for `ETCD` mode (read from etcd, where the coordinator also keeps its own
//! liveness key). The job scheduler comes next (docs/coordinator-api.md).

mod api;
mod etcd_list;
pub mod jobs;
mod metrics;
mod openapi;
pub mod registry;
mod rules_api;

use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use hoard_client::ClusterView;
use hoard_common::api::coordinator::{CoordinatorInfo, NodesResponse, WorkerInfo};
use hoard_config::{JobStoreType, MembershipType, SiteConfig, UserConfig};
use hoard_meta::embedded::EmbeddedStore;
use hoard_meta::etcd::{EtcdMembership, EtcdStore, LeaseSession};
use hoard_meta::jobs::JobStore;
use hoard_meta::replica_rules::ReplicaRuleStore;
use hoard_meta::{
    keys, now_millis, CoordinatorRecord, MemberRecord, Membership, MetaError, MetaStore, StaticMembership,
    WorkerRegistration,
};
use tokio::sync::Mutex;

pub use api::router;
pub use metrics::{CoordinatorMetrics, InstrumentedStore};
use registry::{HeartbeatError, Registry};

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("coordinator start-up task failed: {0}")]
    Startup(String),
    #[error(transparent)]
    Ufs(#[from] hoard_ufs::UfsError),
    #[error("http client setup: {0}")]
    Http(String),
    #[error(transparent)]
    Secret(#[from] hoard_common::secret::SecretError),
}

enum Backend {
    /// COORDINATOR (and STATIC) membership: the embedded store and the heartbeat registry.
    Embedded {
        store: EmbeddedStore,
        registry: Mutex<Registry>,
    },
    /// ETCD membership: registrations and liveness live in etcd.
    Etcd {
        membership: EtcdMembership,
        /// The list served to clients, kept while etcd cannot be reached.
        list: Arc<etcd_list::EtcdList>,
    },
}

pub struct CoordinatorState {
    pub id: String,
    pub address: String,
    start_time_ms: u64,
    membership_type: MembershipType,
    admin_token: Option<String>,
    /// What membership changes (registration, heartbeats, removal) must present.
    cluster_secret: hoard_common::secret::ClusterSecret,
    static_workers: Vec<hoard_config::WorkerAddress>,
    backend: Backend,
    pub metrics: CoordinatorMetrics,
    pub(crate) user: UserConfig,
    pub(crate) http: reqwest::Client,
    /// The cluster's etcd (membership and coordinator liveness) when one is configured.
    etcd_membership: Option<EtcdMembership>,
    /// This coordinator's liveness key in etcd, when it uses etcd for anything.
    etcd_session: Mutex<Option<LeaseSession>>,
    pub mounts: Arc<hoard_ufs::MountTable>,
    pub job_store: Arc<JobStore>,
    /// Replica rules, in the store jobs use (the embedded file, or etcd under the cluster root).
    pub rules: ReplicaRuleStore,
    /// The default rule's count (`hoard.user.file.replication.min`, deprecated).
    pub default_replicas: u32,
    scheduler: OnceLock<Arc<jobs::Scheduler>>,
    scheduler_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The ring jobs use, shared by every job for a moment (many short jobs would otherwise
    /// each read membership).
    view_cache: parking_lot::Mutex<Option<(Arc<ClusterView>, Instant)>>,
}

/// How long jobs share one view of the ring.
const VIEW_CACHE_AGE: std::time::Duration = std::time::Duration::from_millis(500);

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
        let cluster_secret = load_cluster_secret(config.security.cluster_secret_file.clone()).await?;
        let metrics = CoordinatorMetrics::default();
        let uses_etcd =
            config.worker.membership_type == MembershipType::Etcd || config.jobs.store_type == JobStoreType::Etcd;
        let mut etcd_membership = None;
        let mut etcd_session = None;
        if uses_etcd {
            let store = Arc::new(EtcdStore::connect(&config.etcd).await?);
            let record = CoordinatorRecord {
                coordinator_id: id.clone(),
                address: address.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                start_time_ms,
            };
            etcd_session = Some(
                store
                    .register_coordinator(&record, config.coordinator.lease_ttl)
                    .await?,
            );
            etcd_membership = Some(EtcdMembership::new(store));
        }
        let needs_embedded =
            config.worker.membership_type != MembershipType::Etcd || config.jobs.store_type == JobStoreType::Embedded;
        let embedded = if needs_embedded {
            let path = config.coordinator.metastore_file();
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&path))
                .await
                .map_err(|err| CoordinatorError::Startup(err.to_string()))??;
            tracing::info!(store = %store.path().display(), "embedded metastore open");
            Some(store)
        } else {
            None
        };
        let backend = match (&etcd_membership, config.worker.membership_type) {
            (Some(membership), MembershipType::Etcd) => Backend::Etcd {
                membership: membership.clone(),
                // Half the clients' membership wait: a client asking this coordinator because
                // etcd does not answer it gets the kept list in time.
                list: etcd_list::EtcdList::start(
                    Arc::clone(membership.store()),
                    membership.clone(),
                    config.user.membership_connect_timeout / 2,
                    config.user.worker_list_refresh_interval,
                ),
            },
            _ => {
                let Some(store) = embedded.clone() else {
                    return Err(CoordinatorError::Startup("no embedded store for membership".into()));
                };
                let mut known = Vec::new();
                for entry in store.list(keys::WORKERS).await? {
                    known.push(WorkerRegistration::decode(&entry)?);
                }
                tracing::info!(registered_workers = known.len(), "membership loaded");
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
        // Rules live where jobs do; on etcd under the cluster root (`hoard.etcd.root`), where
        // clients with etcd endpoints can read them too.
        let rules_backend: Arc<dyn MetaStore> = match (config.jobs.store_type, &embedded, &etcd_membership) {
            (JobStoreType::Embedded, Some(store), _) => Arc::new(store.clone()),
            (JobStoreType::Etcd, _, Some(membership)) => membership.store().clone(),
            _ => return Err(CoordinatorError::Startup("no store for replica rules".into())),
        };
        let rules = ReplicaRuleStore::new(Arc::new(InstrumentedStore::new(rules_backend, metrics.clone())));
        let job_backend: Arc<dyn MetaStore> = match config.jobs.store_type {
            JobStoreType::Embedded => match embedded {
                Some(store) => Arc::new(store),
                None => return Err(CoordinatorError::Startup("no embedded store for jobs".into())),
            },
            JobStoreType::Etcd => {
                let mut job_etcd = config.etcd.clone();
                job_etcd.root = config.jobs.etcd_path.clone();
                Arc::new(EtcdStore::connect(&job_etcd).await?)
            }
        };
        let job_prefix = match config.jobs.store_type {
            JobStoreType::Embedded => "jobs/",
            JobStoreType::Etcd => "",
        };
        let job_store = Arc::new(JobStore::new(
            Arc::new(InstrumentedStore::new(job_backend, metrics.clone())),
            job_prefix,
            config.jobs.waiting_capacity,
        ));
        let mounts = hoard_ufs::MountTable::from_config_with_options(
            &config.ufs,
            &hoard_ufs::UfsOptions::with_timeout(config.worker.ufs_read_timeout),
            &hoard_ufs::process_env,
        )?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.user.connect_timeout)
            .pool_idle_timeout(config.worker.network.client_pool_idle_timeout())
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(|err| CoordinatorError::Http(err.to_string()))?;
        // Only etcd-held jobs can be reclaimed by another coordinator when the lease lapses.
        let job_lease = match (&etcd_session, config.jobs.store_type) {
            (Some(session), JobStoreType::Etcd) => Some(session.deadline()),
            _ => None,
        };
        let state = Arc::new(CoordinatorState {
            id,
            address,
            start_time_ms,
            membership_type: config.worker.membership_type,
            admin_token: config.security.admin_token.clone(),
            cluster_secret,
            static_workers: config.workers.clone(),
            backend,
            metrics,
            user: config.user.clone(),
            http,
            etcd_membership,
            etcd_session: Mutex::new(etcd_session),
            mounts: Arc::new(mounts),
            job_store,
            rules,
            default_replicas: config.user.replication_min_default,
            scheduler: OnceLock::new(),
            scheduler_tasks: Mutex::new(Vec::new()),
            view_cache: parking_lot::Mutex::new(None),
        });
        let source = Arc::new(StateSource(Arc::downgrade(&state)));
        let context = Arc::new(jobs::JobContext {
            store: Arc::clone(&state.job_store),
            mounts: Arc::clone(&state.mounts),
            http: state.http.clone(),
            config: config.jobs.clone(),
            user: config.user.clone(),
            coordinator_id: state.id.clone(),
            admin_token: config.security.admin_token.clone(),
            cluster_secret: Some(state.cluster_secret.clone()),
            cluster: source.clone(),
            metrics: state.metrics.clone(),
            slots: jobs::WorkerSlots::new(config.jobs.max_tasks_per_worker, state.metrics.clone()),
            reclaim_interval: config.coordinator.lease_ttl / 4,
            ownership_window: (config.coordinator.lease_ttl / 2)
                .max(config.jobs.scheduler_interval + std::time::Duration::from_millis(500)),
            lease: job_lease,
        });
        let _ = state.scheduler.set(jobs::Scheduler::new(context, source));
        Ok(state)
    }

    /// Starts polling for jobs (and reclaiming and cleaning up). `hoard coordinator` calls it;
    /// tests that only exercise the API may not.
    pub async fn start_scheduler(&self) {
        if let Some(scheduler) = self.scheduler.get() {
            let mut tasks = self.scheduler_tasks.lock().await;
            if tasks.is_empty() {
                *tasks = scheduler.start();
            }
        }
    }

    pub fn scheduler(&self) -> Option<&Arc<jobs::Scheduler>> {
        self.scheduler.get()
    }

    /// Every registered worker as a member record (liveness as this coordinator knows it).
    pub async fn members(&self) -> Result<Vec<MemberRecord>, MetaError> {
        match &self.backend {
            Backend::Etcd { membership, .. } => membership.members().await,
            Backend::Embedded { .. } if self.membership_type == MembershipType::Static => {
                StaticMembership::new(self.static_workers.clone()).members().await
            }
            Backend::Embedded { registry, .. } => {
                let workers = registry.lock().await.workers(Instant::now());
                Ok(hoard_client::members_of(workers))
            }
        }
    }

    /// Makes the next [`CoordinatorState::cluster_view`] read membership again.
    pub fn forget_view(&self) {
        *self.view_cache.lock() = None;
    }

    /// The ring jobs place files with (the client's, over this coordinator's membership).
    pub async fn cluster_view(&self) -> Result<Arc<ClusterView>, MetaError> {
        if let Some((view, built)) = self.view_cache.lock().as_ref() {
            if built.elapsed() < VIEW_CACHE_AGE {
                return Ok(Arc::clone(view));
            }
        }
        let members = self.members().await?;
        let nodes = hoard_client::probe_members(&self.http, members, &self.user, false).await;
        let view = Arc::new(ClusterView::new(nodes, &self.user));
        *self.view_cache.lock() = Some((Arc::clone(&view), Instant::now()));
        Ok(view)
    }

    /// The coordinator holding the singleton duties: this one without etcd (one coordinator
    /// per embedded store); the longest-running live one on etcd. `None` when etcd cannot say.
    pub async fn singleton_holder(&self) -> Option<CoordinatorInfo> {
        let Some(membership) = &self.etcd_membership else {
            return Some(self.self_info());
        };
        let records = match membership.coordinators().await {
            Ok(records) => records,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list live coordinators");
                return None;
            }
        };
        hoard_meta::singleton_holder(&records).map(|record| CoordinatorInfo {
            coordinator_id: record.coordinator_id.clone(),
            address: record.address.clone(),
            version: record.version.clone(),
            start_time_ms: record.start_time_ms,
        })
    }

    /// The coordinators alive now; `None` when etcd cannot say.
    async fn live_coordinators(&self) -> Option<Vec<String>> {
        let Some(membership) = &self.etcd_membership else {
            // Embedded job store: one coordinator owns the file, and it is this one.
            return Some(vec![self.id.clone()]);
        };
        match membership.coordinators().await {
            Ok(records) => {
                let mut ids: Vec<String> = records.into_iter().map(|record| record.coordinator_id).collect();
                ids.push(self.id.clone());
                Some(ids)
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot list live coordinators");
                None
            }
        }
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

    /// The workers and coordinators. On etcd, when etcd does not answer within half of
    /// `hoard.user.membership.connect.timeout`, the list last read from it, marked stale with
    /// its age.
    /// The replica rules in effect, over the default rule (`hoard.user.file.replication.min`).
    pub async fn replica_rules(&self) -> Result<hoard_common::replica::ReplicaRuleSet, MetaError> {
        self.rules.rule_set(self.default_replicas).await
    }

    pub async fn nodes(&self) -> Result<NodesResponse, MetaError> {
        let (workers, coordinators, singleton, stale, age_ms) = match &self.backend {
            Backend::Embedded { registry, .. } => {
                let workers = if self.membership_type == MembershipType::Static {
                    self.static_workers.iter().map(static_worker_info).collect()
                } else {
                    registry.lock().await.workers(Instant::now())
                };
                let singleton = self.singleton_holder().await.map(|holder| holder.coordinator_id);
                (workers, vec![self.self_info()], singleton, false, 0)
            }
            Backend::Etcd { list, .. } => {
                let answer = list.get().await?;
                let snapshot = answer.snapshot;
                // Which coordinator holds the singleton now cannot be told from a stale list.
                let singleton = (!answer.stale)
                    .then(|| hoard_meta::singleton_holder(&snapshot.coordinators).map(|r| r.coordinator_id.clone()))
                    .flatten();
                let coordinators = snapshot
                    .coordinators
                    .into_iter()
                    .map(|record| CoordinatorInfo {
                        coordinator_id: record.coordinator_id,
                        address: record.address,
                        version: record.version,
                        start_time_ms: record.start_time_ms,
                    })
                    .collect();
                let age_ms = u64::try_from(snapshot.read_at.elapsed().as_millis()).unwrap_or(u64::MAX);
                (snapshot.workers, coordinators, singleton, answer.stale, age_ms)
            }
        };
        let online = workers.iter().filter(|worker| worker.state == "ONLINE").count();
        self.metrics.set_workers(workers.len(), online);
        Ok(NodesResponse {
            membership: self.membership_kind().to_string(),
            workers,
            coordinators,
            singleton,
            stale,
            age_ms,
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
        let mut registry = registry.lock().await;
        let outcome = if heartbeat.leaving {
            tracing::info!(worker_id, "worker stopping: OFFLINE");
            registry.leave(worker_id, &heartbeat.instance)
        } else {
            registry.heartbeat(
                worker_id,
                &heartbeat.instance,
                heartbeat.used_bytes,
                heartbeat.capacity_bytes,
                Instant::now(),
            )
        };
        outcome.map_err(|err| match err {
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

    /// A clean stop: job runners end (their jobs stay RUNNING and are reclaimed and resumed by
    /// the next coordinator), and the etcd lease is revoked so this coordinator leaves the list
    /// at once.
    pub async fn shutdown(&self) {
        for task in self.scheduler_tasks.lock().await.drain(..) {
            task.abort();
        }
        if let Some(scheduler) = self.scheduler.get() {
            scheduler.shutdown().await;
        }
        if let Backend::Etcd { list, .. } = &self.backend {
            list.stop();
        }
        if let Some(session) = self.etcd_session.lock().await.take() {
            session.close().await;
        }
    }
}

/// The cluster secret from `path`, created there on the first start (docs/membership.md).
async fn load_cluster_secret(
    path: std::path::PathBuf,
) -> Result<hoard_common::secret::ClusterSecret, CoordinatorError> {
    use std::os::unix::fs::PermissionsExt;
    let file = path.clone();
    let (secret, created, mode) = tokio::task::spawn_blocking(move || {
        let (secret, created) = hoard_common::secret::ClusterSecret::load_or_create(&file)?;
        let mode = std::fs::metadata(&file).map_or(0, |meta| meta.permissions().mode());
        Ok::<_, hoard_common::secret::SecretError>((secret, created, mode))
    })
    .await
    .map_err(|err| CoordinatorError::Startup(err.to_string()))??;
    if created {
        tracing::info!(path = %path.display(), "created the cluster secret; copy this file to every worker machine");
    } else if hoard_common::secret::is_shared(mode) {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the cluster secret file is readable by others; chmod 600 it");
    }
    Ok(secret)
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
        // Not known until the worker answers; clients learn it from its health answer.
        cluster_name: hoard_common::replica::default_cluster_name(),
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

/// The scheduler's view of this coordinator, without keeping it alive.
struct StateSource(Weak<CoordinatorState>);

#[async_trait::async_trait]
impl jobs::ClusterSource for StateSource {
    async fn view(&self) -> Result<Arc<ClusterView>, String> {
        self.state()?.cluster_view().await.map_err(|err| err.to_string())
    }

    async fn fresh_view(&self) -> Result<Arc<ClusterView>, String> {
        let state = self.state()?;
        state.forget_view();
        state.cluster_view().await.map_err(|err| err.to_string())
    }

    async fn replica_rules(&self) -> Result<hoard_common::replica::ReplicaRuleSet, String> {
        self.state()?.replica_rules().await.map_err(|err| err.to_string())
    }
}

impl StateSource {
    /// The coordinator, unless it is stopping.
    fn state(&self) -> Result<Arc<CoordinatorState>, String> {
        self.0
            .upgrade()
            .ok_or_else(|| "the coordinator is stopping".to_string())
    }
}

#[async_trait::async_trait]
impl jobs::OwnerLiveness for StateSource {
    async fn live_owners(&self) -> Option<Vec<String>> {
        self.0.upgrade()?.live_coordinators().await
    }

    async fn holds_singleton(&self) -> bool {
        let Some(state) = self.0.upgrade() else { return false };
        state
            .singleton_holder()
            .await
            .is_some_and(|holder| holder.coordinator_id == state.id)
    }
}

/// Largest request head the coordinator buffers (a larger one is answered 431); bodies are
/// bounded apart (64KiB).
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// Serves the REST API on `listener` with the limits of `network` (docs/coordinator-api.md#limits)
/// until the future is dropped. The listener code is the worker's (hoard-http); connections
/// may use up to half the open-file limit.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<CoordinatorState>,
    network: &hoard_config::NetworkConfig,
) -> std::io::Result<()> {
    hoard_http::serve(listener, "coordinator", network, 2, router(state), MAX_HEADER_BYTES).await;
    Ok(())
}
