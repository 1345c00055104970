//! Hoard's HTTP/1.1 listeners, one implementation for every listening process (the worker,
//! the coordinator, and any added later): the accept loop with the connection cap, the
//! request-head, keep-alive and send timeouts, the lingering close, the `Host` rule, and hyper
//! serving for an axum router. The limits are `NetworkConfig` (hoard-config); what they do
//! for clients is in docs/worker-http.md#limits.
//!
//! A crate of its own rather than a module of hoard-common: hoard-common (and hoard-config,
//! which depends on it) are used by clients too, and should not pull in hyper and the socket
//! code a server needs.

mod accept;
mod conn;
mod host;
mod metrics;
mod serve;
mod table;

use std::sync::Arc;

use axum::Router;
use hoard_config::NetworkConfig;
use tokio::net::TcpListener;

pub use accept::{accept_loop, connection_cap, raise_open_file_limit};
pub use conn::{Conn, LINGER_MAX_BYTES, LINGER_TIME};
pub use host::{host_problem, valid_host};
pub use metrics::{register_connections, Connections};
pub use serve::{serve_router, TrackedBody};
pub use table::{Claim, ConnectionRef, ConnectionTable, Phase, TableStats};

/// Serves `router` on `listener` with the limits of `config` until the future is dropped: the
/// coordinator's server. `fd_share`: the cap is at most this fraction (1/`fd_share`) of the
/// open-file limit. `max_buf` bounds a request head (see [`serve_router`]).
pub async fn serve(
    listener: TcpListener,
    name: &'static str,
    config: &NetworkConfig,
    fd_share: u64,
    router: Router,
    max_buf: usize,
) {
    let table = ConnectionTable::new(name, config, connection_cap(name, config.max_connections, fd_share));
    let router = router.layer(axum::Extension(Connections(Arc::clone(&table))));
    accept_loop(listener, Arc::clone(&table), move |stream, claim| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        tokio::spawn(serve_router(Conn::new(stream, claim), router.clone(), max_buf));
    })
    .await;
}
