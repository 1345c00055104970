//! `hoard coordinator`: the coordinator daemon in the foreground.

use anyhow::Context;
use clap::Args;
use hoard_config::SiteConfig;

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// Serve on an already-listening socket inherited on this file descriptor instead of
    /// binding `hoard.coordinator.bind.host:hoard.coordinator.web.port` (used by `hoard local`
    /// and tests).
    #[arg(long, value_name = "FD")]
    listen_fd: Option<i32>,
}

pub async fn run(args: CoordinatorArgs, config: SiteConfig) -> anyhow::Result<()> {
    let listener = crate::worker::listener(args.listen_fd, &config.coordinator.bind_address(), "coordinator").await?;
    let port = listener.local_addr().context("cannot read the bound address")?.port();
    let advertised = hoard_config::WorkerAddress {
        host: config.coordinator.hostname.clone(),
        port,
    }
    .to_string();
    let state = hoard_coordinator::CoordinatorState::open(&config, advertised.clone())
        .await
        .context("coordinator cannot start")?;
    state.start_scheduler().await;
    tracing::info!(
        coordinator_id = %state.id,
        address = %advertised,
        membership = state.membership_kind(),
        metastore = state.metastore_kind(),
        job_store = state.job_store.kind(),
        "coordinator ready"
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let outcome = tokio::select! {
        served = hoard_coordinator::serve(listener, std::sync::Arc::clone(&state)) => {
            served.context("coordinator server failed")
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted, stopping");
            Ok(())
        }
        _ = terminate.recv() => {
            tracing::info!("terminated, stopping");
            Ok(())
        }
    };
    state.shutdown().await;
    outcome
}
