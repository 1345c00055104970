//! Coordinator metrics in Prometheus text format (`GET /metrics`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Default, Clone)]
pub struct CoordinatorMetrics {
    pub registrations: Counter,
    pub heartbeats: Counter,
    pub removals: Counter,
    workers_registered: Gauge,
    workers_online: Gauge,
}

impl CoordinatorMetrics {
    pub fn set_workers(&self, registered: usize, online: usize) {
        self.workers_registered
            .set(i64::try_from(registered).unwrap_or(i64::MAX));
        self.workers_online.set(i64::try_from(online).unwrap_or(i64::MAX));
    }

    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("hoard_coordinator");
        registry.register(
            "worker_registrations",
            "Worker registrations accepted",
            self.registrations.clone(),
        );
        registry.register(
            "worker_heartbeats",
            "Worker heartbeats received",
            self.heartbeats.clone(),
        );
        registry.register(
            "worker_removals",
            "Workers removed by remove-worker",
            self.removals.clone(),
        );
        registry.register(
            "workers_registered",
            "Registered workers, ONLINE or not",
            self.workers_registered.clone(),
        );
        registry.register(
            "workers_online",
            "Registered workers that are ONLINE",
            self.workers_online.clone(),
        );
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            return String::new();
        }
        text
    }
}
