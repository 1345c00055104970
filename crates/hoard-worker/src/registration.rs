//! Registration: how a worker joins the cluster and stays ONLINE.
//!
//! - `STATIC`: nothing to do (`conf/workers` lists it).
//! - `COORDINATOR`: `POST /api/v1/workers` to the coordinator, then a heartbeat every
//!   [`hoard_config::WorkerConfig::heartbeat_interval`]; a heartbeat answered "unknown worker"
//!   (the coordinator lost or removed the record) registers again.
//! - `ETCD`: a permanent registration plus a liveness key on a lease kept alive by
//!   [`hoard_meta::etcd::LeaseSession`], which re-registers after etcd restarts by itself.
//!
//! Another live process holding the same worker id is fatal: at start-up the worker refuses to
//! run, later it stops (the id, and so the cache's place on the ring, belong to the other one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hoard_common::api::coordinator::{self as routes, Heartbeat};
use hoard_common::api::{codes, ErrorBody};
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

    /// A clean stop: on etcd the liveness lease is revoked, so the worker is OFFLINE at once.
    pub async fn close(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(session) = self.session.take() {
            session.close().await;
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
        host: config.worker.hostname.clone(),
        rpc_port: port,
        capacity_bytes: config.worker.capacity_bytes(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        start_time_ms: now_millis(),
        instance: uuid::Uuid::new_v4().to_string(),
    }
}

/// How long start-up waits for the membership store before serving anyway (and registering in
/// the background): long enough for a coordinator started alongside, short enough that reads
/// are not held up by a coordinator that is down.
fn startup_deadline(config: &SiteConfig) -> Duration {
    config.worker.failure_detection_timeout.min(Duration::from_secs(30))
}

/// Registers with the configured membership. Returns an error only when this worker must not
/// run: its id is held by another live process, or the configuration is unusable.
pub async fn register(
    config: &SiteConfig,
    state: Arc<WorkerState>,
    port: u16,
) -> Result<Option<Registration>, WorkerError> {
    let record = registration_record(config, &state, port);
    match config.worker.membership_type {
        MembershipType::Static => Ok(None),
        MembershipType::Coordinator => register_with_coordinator(config, state, record).await.map(Some),
        MembershipType::Etcd => register_in_etcd(config, record).await.map(Some),
    }
}

async fn register_in_etcd(config: &SiteConfig, record: WorkerRegistration) -> Result<Registration, WorkerError> {
    let store = EtcdStore::connect(&config.etcd).await?;
    let ttl = config.worker.failure_detection_timeout;
    let deadline = Instant::now() + startup_deadline(config);
    let mut backoff = Backoff::new();
    let session = loop {
        match store.register_worker(&record, ttl).await {
            Ok(session) => break session,
            Err(err) if err.is_retryable() && Instant::now() < deadline => {
                tracing::warn!(error = %err, "cannot register in etcd yet, retrying");
                backoff.wait().await;
            }
            Err(err) => return Err(err.into()),
        }
    };
    tracing::info!(worker_id = %record.worker_id, "registered in etcd");
    let (lost_tx, lost) = watch::channel(None);
    let mut states = session.state();
    let task = tokio::spawn(async move {
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
    });
    Ok(Registration {
        lost,
        task: Some(task),
        session: Some(session),
    })
}

/// The REST conversation with the coordinator.
struct CoordinatorLink {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

enum Refused {
    /// Fatal: another process holds the id.
    IdInUse(String),
    /// The coordinator does not know this worker: register again.
    Unknown,
    /// Try again later.
    Retry(String),
}

impl CoordinatorLink {
    fn request(&self, method: reqwest::Method, route: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{route}", self.base));
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
            Some(codes::WORKER_ID_IN_USE) => Err(Refused::IdInUse(message)),
            Some(codes::UNKNOWN_WORKER) => Err(Refused::Unknown),
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
        let beat = Heartbeat {
            instance: record.instance.clone(),
            used_bytes: stats.used_bytes,
            capacity_bytes: stats.capacity_bytes,
        };
        let route = routes::heartbeat_route(&record.worker_id);
        self.send(self.request(reqwest::Method::PUT, &route).json(&beat)).await
    }
}

async fn register_with_coordinator(
    config: &SiteConfig,
    state: Arc<WorkerState>,
    record: WorkerRegistration,
) -> Result<Registration, WorkerError> {
    let interval = config.worker.heartbeat_interval();
    let http = reqwest::Client::builder()
        .connect_timeout(interval.min(Duration::from_secs(2)))
        .timeout(interval.max(Duration::from_secs(1)))
        .no_proxy()
        .build()
        .map_err(|err| WorkerError::Registration(format!("http client setup: {err}")))?;
    let link = CoordinatorLink {
        http,
        base: format!("http://{}", config.coordinator.address()),
        token: config.security.admin_token.clone(),
    };
    let deadline = Instant::now() + startup_deadline(config);
    let mut backoff = Backoff::new();
    let mut registered = false;
    loop {
        match link.register(&record).await {
            Ok(()) => {
                registered = true;
                break;
            }
            Err(Refused::IdInUse(message)) => return Err(WorkerError::Registration(message)),
            Err(Refused::Unknown) | Err(Refused::Retry(_)) if Instant::now() < deadline => backoff.wait().await,
            Err(Refused::Unknown) | Err(Refused::Retry(_)) => break,
        }
    }
    if registered {
        tracing::info!(worker_id = %record.worker_id, coordinator = %link.base, "registered with the coordinator");
    } else {
        tracing::warn!(
            worker_id = %record.worker_id,
            coordinator = %link.base,
            "coordinator not reachable; serving anyway and registering in the background"
        );
    }
    let (lost_tx, lost) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut need_register = !registered;
        let mut failing_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(interval).await;
            let outcome = if need_register {
                link.register(&record).await
            } else {
                link.heartbeat(&record, &state).await
            };
            match outcome {
                Ok(()) => {
                    if need_register || failing_since.is_some() {
                        tracing::info!(worker_id = %record.worker_id, "registration renewed");
                    }
                    need_register = false;
                    failing_since = None;
                }
                Err(Refused::IdInUse(message)) => {
                    tracing::error!(worker_id = %record.worker_id, reason = %message, "worker id taken by another process");
                    let _ = lost_tx.send(Some(message));
                    return;
                }
                Err(Refused::Unknown) => {
                    tracing::warn!(worker_id = %record.worker_id, "coordinator does not know this worker; registering again");
                    need_register = true;
                    // Register right away rather than one interval later.
                    if let Err(Refused::IdInUse(message)) = link.register(&record).await {
                        let _ = lost_tx.send(Some(message));
                        return;
                    }
                }
                Err(Refused::Retry(reason)) => {
                    // Log the first failure of a streak, not every one.
                    if failing_since.is_none() {
                        tracing::warn!(worker_id = %record.worker_id, reason = %reason, "heartbeat failed; retrying");
                        failing_since = Some(Instant::now());
                    }
                }
            }
        }
    });
    Ok(Registration {
        lost,
        task: Some(task),
        session: None,
    })
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

impl From<MetaError> for WorkerError {
    fn from(err: MetaError) -> WorkerError {
        WorkerError::Registration(err.to_string())
    }
}
