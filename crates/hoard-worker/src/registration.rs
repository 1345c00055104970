//! Registration: how a worker joins the cluster and stays ONLINE.
//!
//! - `STATIC`: nothing to do (`conf/workers` lists it).
//! - `COORDINATOR`: `POST /api/v1/workers` to the coordinator, then a heartbeat every
//!   [`hoard_config::WorkerConfig::heartbeat_interval`]; a heartbeat answered "unknown worker"
//!   (the coordinator lost or removed the record) registers again. Every request carries the
//!   cluster secret; a worker without the secret file does not start, one whose secret the
//!   coordinator refuses keeps serving and retrying, logging an error.
//! - `ETCD`: a permanent registration plus a liveness key on a lease kept alive by
//!   [`hoard_meta::etcd::LeaseSession`], which re-registers after etcd restarts by itself.
//!
//! Another live process holding the same worker id is fatal: at start-up the worker refuses to
//! run, later it stops (the id, and so the cache's place on the ring, belong to the other one).

use std::sync::Arc;
use std::time::Duration;

use hoard_common::api::coordinator::{self as routes, Heartbeat};
use hoard_common::api::{codes, ErrorBody};
use hoard_common::secret::{ClusterSecret, CLUSTER_SECRET_HEADER};
use hoard_config::{MembershipType, SiteConfig};
use hoard_meta::etcd::{EtcdStore, LeaseSession, SessionState};
use hoard_meta::{now_millis, MetaError, WorkerRegistration};
use tokio::sync::watch;

use crate::{WorkerError, WorkerState};

/// Keeps the worker registered until dropped or closed. `lost()` resolves when another
/// process took the worker's id, with the reason.
pub struct Registration {
    lost: watch::Receiver<Option<String>>,
    task: Option<tokio::task::JoinHandle<()>>,
    session: Option<LeaseSession>,
    /// ETCD: the session, once the background task registered.
    pending_session: Option<tokio::sync::oneshot::Receiver<LeaseSession>>,
    /// COORDINATOR: how to say goodbye on a clean stop.
    coordinator: Option<(Arc<CoordinatorLink>, WorkerRegistration)>,
}

impl Registration {
    /// Resolves (with the reason) when the worker must stop because its id was taken; never
    /// resolves otherwise.
    pub async fn lost(&mut self) -> String {
        loop {
            if let Some(reason) = self.lost.borrow_and_update().clone() {
                return reason;
            }
            if self.lost.changed().await.is_err() {
                // The sender lives as long as the registration: wait forever.
                std::future::pending::<()>().await;
            }
        }
    }

    /// A clean stop: the worker is OFFLINE at once (on etcd its lease is revoked; the
    /// coordinator gets a last heartbeat saying it leaves), so `remove-worker` can follow.
    pub async fn close(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(mut pending) = self.pending_session.take() {
            if let Ok(session) = pending.try_recv() {
                self.session = Some(session);
            }
        }
        if let Some(session) = self.session.take() {
            session.close().await;
        }
        if let Some((link, record)) = self.coordinator.take() {
            let goodbye = tokio::time::timeout(Duration::from_secs(2), link.heartbeat_leaving(&record));
            if !matches!(goodbye.await, Ok(Ok(()))) {
                tracing::warn!(worker_id = %record.worker_id, "could not tell the coordinator this worker stops; it goes OFFLINE after the failure timeout");
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The record this worker registers.
pub fn registration_record(config: &SiteConfig, state: &WorkerState, port: u16) -> WorkerRegistration {
    WorkerRegistration {
        worker_id: state.worker_id.clone(),
        cluster_name: config.cluster_name.clone(),
        host: config.worker.hostname.clone(),
        rpc_port: port,
        capacity_bytes: config.worker.capacity_bytes(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        start_time_ms: now_millis(),
        instance: uuid::Uuid::new_v4().to_string(),
    }
}

/// The cluster secret this worker presents to the coordinator (COORDINATOR membership; `None`
/// otherwise). Blocking (reads a file). A missing or unreadable file is an error: without it
/// the worker could never join, so it does not start.
pub fn load_secret(config: &SiteConfig) -> Result<Option<ClusterSecret>, WorkerError> {
    if config.worker.membership_type != MembershipType::Coordinator {
        return Ok(None);
    }
    let path = &config.security.cluster_secret_file;
    let secret = ClusterSecret::load(path)?;
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if hoard_common::secret::is_shared(meta.permissions().mode()) {
            tracing::warn!(path = %path.display(), "the cluster secret file is readable by others; chmod 600 it");
        }
    }
    Ok(Some(secret))
}

/// Starts keeping this worker registered, in the background (the worker serves meanwhile:
/// a coordinator or etcd that is down must not stop reads). `None` for STATIC membership.
/// [`Registration::lost`] resolves when the worker must stop: another live process holds its id.
/// `secret` is [`load_secret`]'s: required for COORDINATOR membership.
pub fn start(
    config: &SiteConfig,
    state: Arc<WorkerState>,
    port: u16,
    secret: Option<ClusterSecret>,
) -> Result<Option<Registration>, WorkerError> {
    let record = registration_record(config, &state, port);
    let probe = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|err| WorkerError::Registration(format!("http client setup: {err}")))?;
    let (lost_tx, lost) = watch::channel(None);
    match config.worker.membership_type {
        MembershipType::Static => Ok(None),
        MembershipType::Coordinator => {
            let interval = config.worker.heartbeat_interval();
            let http = reqwest::Client::builder()
                .connect_timeout(interval.min(Duration::from_secs(2)))
                .timeout(interval.max(Duration::from_secs(1)))
                .pool_idle_timeout(config.coordinator.network.client_pool_idle_timeout())
                .no_proxy()
                .build()
                .map_err(|err| WorkerError::Registration(format!("http client setup: {err}")))?;
            let Some(secret) = secret else {
                return Err(WorkerError::Registration(
                    "COORDINATOR membership needs the cluster secret".into(),
                ));
            };
            let link = Arc::new(CoordinatorLink {
                http,
                base: format!("http://{}", config.coordinator.address()),
                token: config.security.admin_token.clone(),
                secret,
                secret_file: config.security.cluster_secret_file.clone(),
            });
            let goodbye = (Arc::clone(&link), record.clone());
            let task = tokio::spawn(coordinator_loop(link, record, state, interval, probe, lost_tx));
            Ok(Some(Registration {
                lost,
                task: Some(task),
                session: None,
                pending_session: None,
                coordinator: Some(goodbye),
            }))
        }
        MembershipType::Etcd => {
            let (session_tx, session_rx) = tokio::sync::oneshot::channel();
            let etcd = config.etcd.clone();
            let ttl = config.worker.failure_detection_timeout;
            let task = tokio::spawn(etcd_loop(etcd, record, ttl, probe, lost_tx, session_tx));
            Ok(Some(Registration {
                lost,
                task: Some(task),
                session: None,
                pending_session: Some(session_rx),
                coordinator: None,
            }))
        }
    }
}

/// Whether the process at `address` is a live worker with `worker_id` (its `/health` says so).
async fn holder_is_alive(probe: &reqwest::Client, address: &str, worker_id: &str) -> bool {
    let url = format!("http://{address}{}", hoard_common::api::HEALTH_ROUTE);
    let Ok(response) = probe.get(&url).send().await else {
        return false;
    };
    matches!(response.json::<hoard_common::api::WorkerHealth>().await, Ok(health) if health.id == worker_id)
}

/// Another process claims the id: fatal when it answers as this worker, else the claim is a
/// dead process's record that expires within the failure timeout; wait for that.
async fn id_conflict(
    probe: &reqwest::Client,
    record: &WorkerRegistration,
    address: &str,
    message: String,
) -> Option<String> {
    if holder_is_alive(probe, address, &record.worker_id).await {
        return Some(message);
    }
    tracing::warn!(
        worker_id = %record.worker_id,
        previous = address,
        "the id's previous holder does not answer; waiting for its registration to expire"
    );
    None
}

async fn coordinator_loop(
    link: Arc<CoordinatorLink>,
    record: WorkerRegistration,
    state: Arc<WorkerState>,
    interval: Duration,
    probe: reqwest::Client,
    lost_tx: watch::Sender<Option<String>>,
) {
    let mut registered = false;
    let mut failing = false;
    let mut backoff = Backoff::new();
    loop {
        let outcome = if registered {
            link.heartbeat(&record, &state).await
        } else {
            link.register(&record).await
        };
        match outcome {
            Ok(()) => {
                if !registered || failing {
                    tracing::info!(worker_id = %record.worker_id, coordinator = %link.base, "registered with the coordinator");
                }
                registered = true;
                failing = false;
                backoff = Backoff::new();
                tokio::time::sleep(interval).await;
            }
            Err(Refused::IdInUse { message, address }) => {
                registered = false;
                if let Some(fatal) = id_conflict(&probe, &record, &address, message).await {
                    tracing::error!(worker_id = %record.worker_id, reason = %fatal, "worker id held by another live process");
                    let _ = lost_tx.send(Some(fatal));
                    return;
                }
                backoff.wait().await;
            }
            Err(Refused::Unknown) => {
                tracing::warn!(worker_id = %record.worker_id, "coordinator does not know this worker; registering again");
                registered = false;
            }
            Err(Refused::Unauthorized(reason)) => {
                // Not fatal: the operator may fix the secret file (or the token) on either
                // side without restarting this worker; it keeps serving reads meanwhile.
                if !failing {
                    tracing::error!(
                        worker_id = %record.worker_id,
                        reason = %reason,
                        secret_file = %link.secret_file.display(),
                        "the coordinator refuses this worker: its cluster secret file (hoard.security.cluster.secret.file) must hold the coordinator's secret, and the admin token must match if one is set; retrying"
                    );
                    failing = true;
                }
                registered = false;
                backoff.wait().await;
            }
            Err(Refused::Retry(reason)) => {
                // Log the first failure of a streak, not every one.
                if !failing {
                    tracing::warn!(worker_id = %record.worker_id, reason = %reason, "cannot reach the coordinator; retrying (serving meanwhile)");
                    failing = true;
                }
                if registered {
                    tokio::time::sleep(interval).await;
                } else {
                    backoff.wait().await;
                }
            }
        }
    }
}

async fn etcd_loop(
    etcd: hoard_config::EtcdConfig,
    record: WorkerRegistration,
    ttl: Duration,
    probe: reqwest::Client,
    lost_tx: watch::Sender<Option<String>>,
    session_tx: tokio::sync::oneshot::Sender<LeaseSession>,
) {
    let mut backoff = Backoff::new();
    let mut warned = false;
    let session = loop {
        let attempt = match EtcdStore::connect(&etcd).await {
            Ok(store) => store.register_worker(&record, ttl).await,
            Err(err) => Err(err),
        };
        match attempt {
            Ok(session) => break session,
            Err(MetaError::IdInUse { address, .. }) => {
                let message = format!(
                    "worker id {} is already in use by a live worker at {address}; stop that worker, or give this one its own identity file",
                    record.worker_id
                );
                if let Some(fatal) = id_conflict(&probe, &record, &address, message).await {
                    let _ = lost_tx.send(Some(fatal));
                    return;
                }
            }
            Err(err) if err.is_retryable() => {
                if !warned {
                    tracing::warn!(error = %err, "cannot register in etcd yet; retrying (serving meanwhile)");
                    warned = true;
                }
            }
            Err(err) => {
                let _ = lost_tx.send(Some(err.to_string()));
                return;
            }
        }
        backoff.wait().await;
    };
    tracing::info!(worker_id = %record.worker_id, "registered in etcd");
    let mut states = session.state();
    if session_tx.send(session).is_err() {
        return;
    }
    loop {
        let current = states.borrow_and_update().clone();
        if let SessionState::Lost(reason) = current {
            let _ = lost_tx.send(Some(reason.to_string()));
            return;
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}

/// The REST conversation with the coordinator.
struct CoordinatorLink {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    secret: ClusterSecret,
    /// Where the secret came from, for error messages.
    secret_file: std::path::PathBuf,
}

enum Refused {
    /// Another process holds the id (at `address`).
    IdInUse { message: String, address: String },
    /// The coordinator does not know this worker: register again.
    Unknown,
    /// The coordinator refused the cluster secret or the admin token (401).
    Unauthorized(String),
    /// Try again later.
    Retry(String),
}

impl CoordinatorLink {
    fn request(&self, method: reqwest::Method, route: &str) -> reqwest::RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}{route}", self.base))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose());
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> Result<(), Refused> {
        let response = builder.send().await.map_err(|err| Refused::Retry(err.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body: Option<ErrorBody> = response.json().await.ok();
        let message = body
            .as_ref()
            .map_or_else(|| format!("coordinator answered {status}"), |body| body.error.clone());
        match body.as_ref().map(|body| body.code.as_str()) {
            Some(codes::WORKER_ID_IN_USE) => {
                let address = holder_address(&message).unwrap_or_default();
                Err(Refused::IdInUse { message, address })
            }
            Some(codes::UNKNOWN_WORKER) => Err(Refused::Unknown),
            _ if status == reqwest::StatusCode::UNAUTHORIZED => Err(Refused::Unauthorized(message)),
            _ => Err(Refused::Retry(message)),
        }
    }

    async fn register(&self, record: &WorkerRegistration) -> Result<(), Refused> {
        self.send(self.request(reqwest::Method::POST, routes::WORKERS_ROUTE).json(record))
            .await
    }

    async fn heartbeat(&self, record: &WorkerRegistration, state: &Arc<WorkerState>) -> Result<(), Refused> {
        let store = Arc::clone(state.store());
        let stats = tokio::task::spawn_blocking(move || store.stats())
            .await
            .unwrap_or_default();
        self.send_heartbeat(record, stats.used_bytes, stats.capacity_bytes, false)
            .await
    }

    async fn heartbeat_leaving(&self, record: &WorkerRegistration) -> Result<(), Refused> {
        self.send_heartbeat(record, 0, record.capacity_bytes, true).await
    }

    async fn send_heartbeat(
        &self,
        record: &WorkerRegistration,
        used_bytes: u64,
        capacity_bytes: u64,
        leaving: bool,
    ) -> Result<(), Refused> {
        let beat = Heartbeat {
            instance: record.instance.clone(),
            used_bytes,
            capacity_bytes,
            leaving,
        };
        let route = routes::heartbeat_route(&record.worker_id);
        self.send(self.request(reqwest::Method::PUT, &route).json(&beat)).await
    }
}

/// The other holder's address in the coordinator's "in use by a live worker at ADDR;" message.
fn holder_address(message: &str) -> Option<String> {
    let rest = message.split(" at ").nth(1)?;
    Some(rest.split(';').next()?.trim().to_string())
}

/// Exponential backoff from 100ms to 2s with jitter.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
        }
    }

    async fn wait(&mut self) {
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(Duration::from_secs(2));
    }
}

impl From<hoard_common::secret::SecretError> for WorkerError {
    fn from(err: hoard_common::secret::SecretError) -> WorkerError {
        WorkerError::Registration(err.to_string())
    }
}

impl From<MetaError> for WorkerError {
    fn from(err: MetaError) -> WorkerError {
        WorkerError::Registration(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_address_comes_from_the_conflict_message() {
        let message = MetaError::IdInUse {
            worker_id: "5b3f2a4e-8f6c-4c55-9d3e-6a1f0c2b7e91".into(),
            address: "[::1]:29999".into(),
        }
        .to_string();
        assert_eq!(holder_address(&message).as_deref(), Some("[::1]:29999"));
        assert_eq!(holder_address("something else"), None);
    }
}
