//! Worker metrics in Prometheus text format (`GET /metrics`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use hoard_pagestore::PageStoreStats;

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
    evictions: Counter,
    checksum_failures: Counter,
    page_store_used_bytes: Gauge,
    page_store_capacity_bytes: Gauge,
    page_store_pages: Gauge,
}

impl WorkerMetrics {
    /// Renders every metric, refreshing the page store's figures first.
    pub fn render(&self, store: &PageStoreStats) -> String {
        // The store counts evictions and checksum failures itself; mirror them as counters.
        let evictions_delta = store.evictions.saturating_sub(self.evictions.get());
        self.evictions.inc_by(evictions_delta);
        let failures_delta = store.checksum_failures.saturating_sub(self.checksum_failures.get());
        self.checksum_failures.inc_by(failures_delta);
        self.page_store_used_bytes.set(clamp_i64(store.used_bytes));
        self.page_store_capacity_bytes.set(clamp_i64(store.capacity_bytes));
        self.page_store_pages.set(clamp_i64(store.pages));

        let mut registry = Registry::with_prefix("hoard_worker");
        let counters: [(&str, &str, &Counter); 11] = [
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
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let gauges: [(&str, &str, &Gauge); 3] = [
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
            ("page_store_pages", "Pages stored", &self.page_store_pages),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %err, "cannot encode metrics");
        }
        out
    }
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
