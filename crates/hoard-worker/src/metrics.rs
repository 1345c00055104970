//! Worker metrics in Prometheus text format (`GET /metrics`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use hoard_pagestore::PageStoreStats;

/// The `kind` label of the task metrics.
pub type KindLabel = [(&'static str, &'static str); 1];

/// Label of a task metric for tasks of `kind`.
pub fn kind(kind: &'static str) -> KindLabel {
    [("kind", kind)]
}

#[derive(Debug, Default, Clone)]
pub struct WorkerMetrics {
    pub page_hits: Counter,
    pub page_misses: Counter,
    pub bytes_served: Counter,
    pub ufs_bytes_read: Counter,
    pub ufs_reads: Counter,
    pub metadata_hits: Counter,
    pub metadata_misses: Counter,
    pub requests: Counter,
    pub request_errors: Counter,
    /// Task requests accepted, by `kind` (`load`, `free`, `check`).
    pub tasks: Family<KindLabel, Counter>,
    /// File (range) results with `ok: false`, by task `kind`.
    pub task_files_failed: Family<KindLabel, Counter>,
    /// Files (ranges) a load task made present in the page store (not skipped, not metadata-only).
    pub task_files_loaded: Counter,
    /// Files (ranges) a load task skipped because they were cached whole (`skipIfExists`).
    pub task_files_skipped: Counter,
    /// Bytes load tasks read from the UFS.
    pub task_bytes_loaded: Counter,
    /// Files a free task freed (whether or not anything was cached).
    pub task_files_freed: Counter,
    /// Bytes of pages free tasks deleted.
    pub task_bytes_freed: Counter,
    /// Passive cache loads by `result` (`submitted`, `success`, `failure`).
    passive_loads: Family<ResultLabel, Counter>,
    passive_dropped: Counter,
    evictions: Counter,
    checksum_failures: Counter,
    memory_hits: Counter,
    memory_copies: Counter,
    memory_used_bytes: Gauge,
    memory_capacity_bytes: Gauge,
    page_store_used_bytes: Gauge,
    page_store_capacity_bytes: Gauge,
    page_store_effective_capacity_bytes: Gauge,
    page_store_pages: Gauge,
}

/// The `result` label of the passive cache metric.
pub type ResultLabel = [(&'static str, &'static str); 1];

impl WorkerMetrics {
    /// A passive cache request (`submitted`) or its outcome (`success`, `failure`).
    pub fn passive_loaded(&self, result: &'static str) {
        self.passive_loads.get_or_create(&[("result", result)]).inc();
    }

    /// A passive cache request dropped (queue full).
    pub fn passive_dropped(&self) {
        self.passive_dropped.inc();
    }

    /// Renders every metric, refreshing the page store's figures first; the listener's
    /// connection figures when the handler runs behind it.
    pub fn render(&self, store: &PageStoreStats, connections: Option<&hoard_http::TableStats>) -> String {
        // The store counts these itself; mirror them as counters.
        mirror(&self.evictions, store.evictions);
        mirror(&self.checksum_failures, store.checksum_failures);
        mirror(&self.memory_hits, store.memory_hits);
        mirror(&self.memory_copies, store.memory_copies);
        self.memory_used_bytes.set(clamp_i64(store.memory_used_bytes));
        self.memory_capacity_bytes.set(clamp_i64(store.memory_capacity_bytes));
        self.page_store_used_bytes.set(clamp_i64(store.used_bytes));
        self.page_store_capacity_bytes.set(clamp_i64(store.capacity_bytes));
        self.page_store_effective_capacity_bytes
            .set(clamp_i64(store.effective_capacity_bytes));
        self.page_store_pages.set(clamp_i64(store.pages));

        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("hoard_worker");
        let counters: [(&str, &str, &Counter); 18] = [
            ("page_hits", "Pages served from the page store", &self.page_hits),
            (
                "page_misses",
                "Pages that had to be read from the UFS",
                &self.page_misses,
            ),
            ("bytes_served", "File bytes sent to readers", &self.bytes_served),
            (
                "ufs_bytes_read",
                "Bytes read from the UFS to fill pages",
                &self.ufs_bytes_read,
            ),
            ("ufs_reads", "Page reads issued to the UFS", &self.ufs_reads),
            (
                "metadata_hits",
                "UFS status lookups answered from the metadata cache",
                &self.metadata_hits,
            ),
            (
                "metadata_misses",
                "UFS status lookups that went to the UFS",
                &self.metadata_misses,
            ),
            ("requests", "HTTP requests handled", &self.requests),
            (
                "request_errors",
                "HTTP requests answered with an error status",
                &self.request_errors,
            ),
            (
                "page_evictions",
                "Pages evicted to stay within capacity",
                &self.evictions,
            ),
            (
                "checksum_failures",
                "Pages dropped because their checksum did not match",
                &self.checksum_failures,
            ),
            (
                "page_memory_hits",
                "Page reads served from the memory tier, without verifying them again",
                &self.memory_hits,
            ),
            (
                "page_memory_copies",
                "Pages copied into the memory tier (a high rate means the tier is too small for the hot set)",
                &self.memory_copies,
            ),
            (
                "task_files_loaded",
                "Files (ranges) load tasks made present in the page store",
                &self.task_files_loaded,
            ),
            (
                "task_files_skipped",
                "Files (ranges) load tasks skipped because they were cached whole",
                &self.task_files_skipped,
            ),
            (
                "task_bytes_loaded",
                "Bytes load tasks read from the UFS",
                &self.task_bytes_loaded,
            ),
            ("task_files_freed", "Files free tasks freed", &self.task_files_freed),
            (
                "task_bytes_freed",
                "Bytes of pages free tasks deleted",
                &self.task_bytes_freed,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register("tasks", "Task requests accepted, by kind", self.tasks.clone());
        registry.register(
            "task_files_failed",
            "File (range) results of tasks that failed, by task kind",
            self.task_files_failed.clone(),
        );
        let gauges: [(&str, &str, &Gauge); 6] = [
            (
                "page_store_used_bytes",
                "Bytes of pages stored",
                &self.page_store_used_bytes,
            ),
            (
                "page_store_capacity_bytes",
                "Configured page store capacity",
                &self.page_store_capacity_bytes,
            ),
            (
                "page_store_effective_capacity_bytes",
                "Page store capacity in effect: the configured one, less while a disk is full before it",
                &self.page_store_effective_capacity_bytes,
            ),
            ("page_store_pages", "Pages stored", &self.page_store_pages),
            (
                "page_memory_used_bytes",
                "Bytes of verified pages held in the memory tier",
                &self.memory_used_bytes,
            ),
            (
                "page_memory_capacity_bytes",
                "Configured memory tier capacity",
                &self.memory_capacity_bytes,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        if let Some(connections) = connections {
            hoard_http::register_connections(registry, connections);
        }
        let mut out = String::new();
        // The passive cache's names are the seed's, without the worker prefix.
        let passive = root.sub_registry_with_prefix("hoard_passive_cache");
        passive.register(
            "async_loaded_files",
            "Files the passive cache loaded in the background: submitted, then success or failure",
            self.passive_loads.clone(),
        );
        passive.register(
            "dropped_files",
            "Passive cache requests dropped because the queue was full",
            self.passive_dropped.clone(),
        );
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &root) {
            tracing::warn!(error = %err, "cannot encode metrics");
        }
        out
    }
}

/// Brings `counter` up to `total`, a count kept elsewhere that only grows.
fn mirror(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
