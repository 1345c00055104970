//! A listener's connection figures in Prometheus text format, the same names under each
//! process's prefix (`hoard_worker_connections_open`, `hoard_coordinator_connections_refused_total`...).

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::table::{ConnectionTable, TableStats};

/// The listener's table, as a router extension: what a `/metrics` handler reads the figures
/// from. Absent when a router is served by something else (tests driving it directly).
#[derive(Clone)]
pub struct Connections(pub Arc<ConnectionTable>);

/// Registers the figures of `stats` in `registry` (which carries the process's prefix).
pub fn register_connections(registry: &mut Registry, stats: &TableStats) {
    let open = Gauge::<i64>::default();
    open.set(i64::try_from(stats.open).unwrap_or(i64::MAX));
    registry.register("connections_open", "Open HTTP connections", open);
    let counters = [
        (
            "connections_refused",
            "Connections refused with 503 because the connection cap was reached and none was idle",
            stats.refused,
        ),
        (
            "connections_evicted",
            "Idle keep-alive connections closed to make room under the connection cap",
            stats.evicted,
        ),
        (
            "connections_timed_out",
            "Connections closed by the header, keep-alive or send timeout",
            stats.timed_out,
        ),
    ];
    for (name, help, total) in counters {
        let counter = Counter::<u64>::default();
        counter.inc_by(total);
        registry.register(name, help, counter);
    }
}
