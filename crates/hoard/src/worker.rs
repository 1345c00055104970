//! `hoard worker`: the worker daemon in the foreground.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use hoard_config::SiteConfig;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Serve on an already-listening socket inherited on this file descriptor instead of
    /// binding `hoard.worker.bind.host:hoard.worker.rpc.port` (used by `hoard local` and tests,
    /// so the port is chosen race-free by whoever starts the worker).
    #[arg(long, value_name = "FD")]
    listen_fd: Option<i32>,
}

pub async fn run(args: WorkerArgs, config: SiteConfig) -> anyhow::Result<()> {
    let listener = listener(args.listen_fd, &config.worker.bind_address(), "worker").await?;
    let port = listener.local_addr().context("cannot read the bound address")?.port();
    let advertised = hoard_config::WorkerAddress {
        host: config.worker.hostname.clone(),
        port,
    }
    .to_string();
    let state_config = config.clone();
    let state_address = advertised.clone();
    let (secret, state) = tokio::task::spawn_blocking(move || {
        // Checked first: a worker that could never join stops before opening its cache.
        let secret = hoard_worker::registration::load_secret(&state_config)?;
        crate::startup::warn_volatile_worker_paths(&state_config);
        let state = hoard_worker::open_state(&state_config, state_address, secret.clone())?;
        Ok::<_, hoard_worker::WorkerError>((secret, state))
    })
    .await
    .context("worker start-up task failed")??;
    crate::startup::warn_loopback_advertised(
        &config.worker.hostname,
        "worker",
        &crate::startup::worker_peers(&config),
    )
    .await;
    let stats = state.store().stats();
    tracing::info!(
        worker_id = %state.worker_id,
        address = %advertised,
        cached_pages = stats.pages,
        used_bytes = stats.used_bytes,
        capacity_bytes = stats.capacity_bytes,
        "worker ready"
    );
    let registration = hoard_worker::registration::start(&config, Arc::clone(&state), port, secret)
        .with_context(|| format!("worker {} cannot join the cluster", state.worker_id))?;
    let options = hoard_worker::ServeOptions::from_config(&config.worker);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let worker_id = state.worker_id.clone();
    let mut registration = registration;
    let lost = async {
        match registration.as_mut() {
            Some(registration) => registration.lost().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = hoard_worker::serve_with(listener, state, options) => Ok(()),
        reason = lost => Err(anyhow::anyhow!("worker {worker_id} stops: {reason}")),
        () = stop_requested(&mut terminate) => Ok(()),
    };
    if let Some(registration) = registration {
        registration.close().await;
    }
    outcome
}

/// Resolves on Ctrl-C or SIGTERM: a daemon then stops cleanly (deregisters, revokes leases).
pub(crate) async fn stop_requested(terminate: &mut tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
        _ = terminate.recv() => tracing::info!("terminated, stopping"),
    }
}

/// The socket a daemon serves on: inherited on `listen_fd` (from `hoard local`, tests), or
/// bound to `bind_address`.
pub(crate) async fn listener(
    listen_fd: Option<i32>,
    bind_address: &str,
    role: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    match listen_fd {
        Some(fd) => inherited_listener(fd),
        None => tokio::net::TcpListener::bind(bind_address)
            .await
            .with_context(|| format!("cannot bind {role} port {bind_address}")),
    }
}

fn inherited_listener(fd: i32) -> anyhow::Result<tokio::net::TcpListener> {
    use std::os::fd::FromRawFd;
    // SAFETY: fstat only reads the descriptor's metadata into `stat`.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 || (stat.st_mode & libc::S_IFMT) != libc::S_IFSOCK {
        anyhow::bail!("--listen-fd {fd} is not an open socket");
    }
    // SAFETY: the descriptor was checked to be an open socket and is owned by nothing else in
    // this process: it was inherited from the parent solely to be served here.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    listener
        .set_nonblocking(true)
        .context("cannot make the inherited socket non-blocking")?;
    tokio::net::TcpListener::from_std(listener).context("cannot use the inherited socket")
}
