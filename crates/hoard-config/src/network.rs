//! The limits of one HTTP listener (the worker's, the coordinator's): one struct, parsed by the
//! same code from each listener's key set (`keys::WORKER_NETWORK`, `keys::COORDINATOR_NETWORK`).

use std::time::Duration;

use crate::keys::NetworkKeys;
use crate::{parse_count, parse_duration, ConfigError, Values};

/// Most `*.network.max.connections`.
pub const MAX_CONNECTIONS: u32 = 1_000_000;

/// Timeouts and the connection cap of one listener (docs/worker-http.md#limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// A request head must arrive whole within this (from the connection's start, or from the
    /// first byte of a later head); a request body may stall no longer.
    pub header_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub keepalive_timeout: Duration,
    /// A response that cannot write (the client takes no bytes) for this long is closed.
    pub send_timeout: Duration,
    /// Open connections at most.
    pub max_connections: u32,
}

impl NetworkConfig {
    /// How long a client of this listener keeps an idle pooled connection: well inside the
    /// listener's keep-alive timeout, so a client never sends on a connection the server is
    /// closing (a POST sent into that race fails, and cannot be retried blindly).
    pub fn client_pool_idle_timeout(&self) -> Duration {
        self.keepalive_timeout.mul_f64(0.8)
    }
}

fn timeout(value: &str) -> Result<Duration, String> {
    let timeout = parse_duration(value)?;
    if timeout < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(timeout)
}

pub(crate) fn parse(values: &mut Values<'_>, keys: &NetworkKeys) -> Result<NetworkConfig, ConfigError> {
    Ok(NetworkConfig {
        header_timeout: values.parse(keys.header_timeout, timeout)?,
        keepalive_timeout: values.parse(keys.keepalive_timeout, timeout)?,
        send_timeout: values.parse(keys.send_timeout, timeout)?,
        max_connections: values.parse(keys.max_connections, |value| parse_count(value, 1, MAX_CONNECTIONS))?,
    })
}
