//! `hoard coordinator`: the coordinator daemon in the foreground.

use anyhow::Context;
use clap::{Args, Subcommand};
use hoard_config::SiteConfig;

use crate::Format;

#[derive(Debug, Subcommand)]
pub enum CoordinatorAction {
    /// Which coordinator holds the singleton duties (the seed's `fs leader`).
    Leader {
        #[arg(long, value_enum, ignore_case = true, default_value_t)]
        format: Format,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CoordinatorArgs {
    #[command(subcommand)]
    action: Option<CoordinatorAction>,
    /// Serve on an already-listening socket inherited on this file descriptor instead of
    /// binding `hoard.coordinator.bind.host:hoard.coordinator.web.port` (used by `hoard local`
    /// and tests).
    #[arg(long, value_name = "FD")]
    listen_fd: Option<i32>,
}

impl CoordinatorArgs {
    pub fn is_daemon(&self) -> bool {
        self.action.is_none()
    }
}

pub async fn run(args: CoordinatorArgs, config: SiteConfig) -> anyhow::Result<()> {
    if let Some(CoordinatorAction::Leader { format }) = args.action {
        let leader = hoard_client::CoordinatorClient::new(&config)?.leader().await?;
        if format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&leader)?);
        } else {
            println!("{} {}", leader.coordinator_id, leader.address);
        }
        return Ok(());
    }
    let listener = crate::worker::listener(args.listen_fd, &config.coordinator.bind_address(), "coordinator").await?;
    let port = listener.local_addr().context("cannot read the bound address")?.port();
    let advertised = hoard_config::WorkerAddress {
        host: config.coordinator.hostname.clone(),
        port,
    }
    .to_string();
    crate::startup::warn_loopback_advertised(
        &config.coordinator.hostname,
        "coordinator",
        &crate::startup::coordinator_peers(&config),
    )
    .await;
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
        served = hoard_coordinator::serve(listener, std::sync::Arc::clone(&state), &config.coordinator.network) => {
            served.context("coordinator server failed")
        }
        () = crate::worker::stop_requested(&mut terminate) => Ok(()),
    };
    state.shutdown().await;
    outcome
}
