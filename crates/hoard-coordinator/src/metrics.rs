//! Coordinator metrics in Prometheus text format (`GET /metrics`): membership, and the job
//! scheduler under the seed's names with `hoard_` in front.

use std::sync::Arc;
use std::time::Instant;

use hoard_meta::jobs::JobState;
use hoard_meta::{Compare, Entry, MetaError, MetaStore, Op};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccessLabels {
    /// `list`, `get` or `txn` (puts and deletes are transactions).
    pub kind: &'static str,
    /// `EMBEDDED` or `ETCD`.
    pub store: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
    ])
}

#[derive(Debug, Clone)]
pub struct CoordinatorMetrics {
    pub registrations: Counter,
    pub heartbeats: Counter,
    pub removals: Counter,
    workers_registered: Gauge,
    workers_online: Gauge,
    /// Polls of the waiting queue.
    pub poll: Counter,
    /// Jobs claimed from the queue.
    pub claim: Counter,
    /// RUNNING jobs of dead coordinators moved back to WAITING.
    pub reclaim: Counter,
    latency_ms: Histogram,
    access: Family<AccessLabels, Counter>,
    tasks_in_flight: Family<WorkerLabels, Gauge>,
    files_loaded: Counter,
    bytes_loaded: Counter,
    jobs_finished: Family<StateLabels, Counter>,
    jobs: Family<StateLabels, Gauge>,
}

impl Default for CoordinatorMetrics {
    fn default() -> CoordinatorMetrics {
        CoordinatorMetrics {
            registrations: Counter::default(),
            heartbeats: Counter::default(),
            removals: Counter::default(),
            workers_registered: Gauge::default(),
            workers_online: Gauge::default(),
            poll: Counter::default(),
            claim: Counter::default(),
            reclaim: Counter::default(),
            latency_ms: latency_histogram(),
            access: Family::default(),
            tasks_in_flight: Family::default(),
            files_loaded: Counter::default(),
            bytes_loaded: Counter::default(),
            jobs_finished: Family::default(),
            jobs: Family::default(),
        }
    }
}

fn to_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Waiting => "WAITING",
        JobState::Running => "RUNNING",
        JobState::Succeeded => "SUCCEEDED",
        JobState::Failed => "FAILED",
        JobState::Stopped => "STOPPED",
    }
}

const STATES: [JobState; 5] = [
    JobState::Waiting,
    JobState::Running,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Stopped,
];

impl CoordinatorMetrics {
    pub fn set_workers(&self, registered: usize, online: usize) {
        self.workers_registered.set(to_i64(registered));
        self.workers_online.set(to_i64(online));
    }

    pub fn set_jobs(&self, counts: &[(JobState, usize)]) {
        for state in STATES {
            let count = counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&StateLabels {
                    state: state_name(state),
                })
                .set(to_i64(count));
        }
    }

    pub fn task_started(&self, worker: &str) {
        self.tasks_in_flight
            .get_or_create(&WorkerLabels {
                worker: worker.to_string(),
            })
            .inc();
    }

    pub fn task_finished(&self, worker: &str) {
        self.tasks_in_flight
            .get_or_create(&WorkerLabels {
                worker: worker.to_string(),
            })
            .dec();
    }

    /// One file (or range) loaded into a worker's cache.
    pub fn loaded(&self, bytes: u64) {
        self.files_loaded.inc();
        self.bytes_loaded.inc_by(bytes);
    }

    pub fn job_finished(&self, state: JobState) {
        self.jobs_finished
            .get_or_create(&StateLabels {
                state: state_name(state),
            })
            .inc();
    }

    /// Every metric, and the listener's connection figures when the handler runs behind it.
    pub fn render(&self, connections: Option<&hoard_http::TableStats>) -> String {
        let mut registry = Registry::default();
        {
            let coordinator = registry.sub_registry_with_prefix("hoard_coordinator");
            if let Some(connections) = connections {
                hoard_http::register_connections(coordinator, connections);
            }
            coordinator.register(
                "worker_registrations",
                "Worker registrations accepted",
                self.registrations.clone(),
            );
            coordinator.register(
                "worker_heartbeats",
                "Worker heartbeats received",
                self.heartbeats.clone(),
            );
            coordinator.register(
                "worker_removals",
                "Workers removed by remove-worker",
                self.removals.clone(),
            );
            coordinator.register(
                "workers_registered",
                "Registered workers, ONLINE or not",
                self.workers_registered.clone(),
            );
            coordinator.register(
                "workers_online",
                "Registered workers that are ONLINE",
                self.workers_online.clone(),
            );
            coordinator.register("jobs", "Jobs in the store by state", self.jobs.clone());
            coordinator.register(
                "jobs_finished",
                "Jobs this coordinator finished, by final state",
                self.jobs_finished.clone(),
            );
            coordinator.register(
                "worker_tasks_in_flight",
                "Tasks this coordinator has in flight on each worker",
                self.tasks_in_flight.clone(),
            );
            coordinator.register(
                "job_files_loaded",
                "Files (or ranges) loaded into workers' caches by this coordinator's jobs",
                self.files_loaded.clone(),
            );
            coordinator.register(
                "job_bytes_loaded",
                "Bytes loaded into workers' caches by this coordinator's jobs",
                self.bytes_loaded.clone(),
            );
        }
        {
            let scheduler = registry.sub_registry_with_prefix("hoard_scheduler");
            scheduler.register("etcd_poll", "Polls of the waiting-job queue", self.poll.clone());
            scheduler.register("etcd_claim", "Jobs claimed from the queue", self.claim.clone());
            scheduler.register(
                "etcd_reclaim",
                "RUNNING jobs of dead coordinators moved back to WAITING",
                self.reclaim.clone(),
            );
            scheduler.register(
                "etcd_latency_ms",
                "Latency of the scheduler's job store operations, in milliseconds",
                self.latency_ms.clone(),
            );
            scheduler.register(
                "job_access_etcd",
                "Job store accesses by kind (list, get, txn) and store (EMBEDDED, ETCD)",
                self.access.clone(),
            );
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            return String::new();
        }
        text
    }
}

/// A job store that counts and times every access (`hoard_scheduler_job_access_etcd`,
/// `hoard_scheduler_etcd_latency_ms`), whichever backend it wraps.
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: Arc<dyn MetaStore>,
    metrics: CoordinatorMetrics,
}

impl InstrumentedStore {
    pub fn new(inner: Arc<dyn MetaStore>, metrics: CoordinatorMetrics) -> InstrumentedStore {
        InstrumentedStore { inner, metrics }
    }

    fn record(&self, kind: &'static str, started: Instant) {
        self.metrics
            .access
            .get_or_create(&AccessLabels {
                kind,
                store: self.inner.kind(),
            })
            .inc();
        self.metrics
            .latency_ms
            .observe(started.elapsed().as_secs_f64() * 1000.0);
    }
}

#[async_trait::async_trait]
impl MetaStore for InstrumentedStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, MetaError> {
        let started = Instant::now();
        let result = self.inner.get(key).await;
        self.record("get", started);
        result
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, MetaError> {
        let started = Instant::now();
        let result = self.inner.list(prefix).await;
        self.record("list", started);
        result
    }

    async fn list_limited(&self, prefix: &str, limit: usize) -> Result<Vec<Entry>, MetaError> {
        let started = Instant::now();
        let result = self.inner.list_limited(prefix, limit).await;
        self.record("list", started);
        result
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), MetaError> {
        let started = Instant::now();
        let result = self.inner.put(key, value).await;
        self.record("txn", started);
        result
    }

    async fn delete(&self, key: &str) -> Result<bool, MetaError> {
        let started = Instant::now();
        let result = self.inner.delete(key).await;
        self.record("txn", started);
        result
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, MetaError> {
        let started = Instant::now();
        let result = self.inner.get_many(keys).await;
        self.record("get", started);
        result
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<Option<u64>, MetaError> {
        let started = Instant::now();
        let result = self.inner.txn(compares, ops).await;
        self.record("txn", started);
        result
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}
