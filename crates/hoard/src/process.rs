//! `hoard process ...`: cluster membership changes.

use anyhow::{bail, Context};
use clap::Subcommand;
use hoard_config::{MembershipType, SiteConfig};

#[derive(Debug, Subcommand)]
pub enum ProcessCommand {
    /// Forget a worker that left the cluster for good (its paths move to the other workers).
    /// Stop the worker first: an ONLINE worker is refused unless --force.
    RemoveWorker {
        /// The worker id, as `hoard info nodes` shows it.
        #[arg(short = 'n', long = "name", value_name = "WORKER_ID")]
        worker_id: String,
        /// Remove it even while it is ONLINE. Under COORDINATOR membership a running worker
        /// registers again at its next heartbeat; under ETCD it stays removed until it restarts.
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(command: ProcessCommand, config: &SiteConfig) -> anyhow::Result<()> {
    match command {
        ProcessCommand::RemoveWorker { worker_id, force } => remove_worker(config, &worker_id, force).await,
    }
}

async fn remove_worker(config: &SiteConfig, worker_id: &str, force: bool) -> anyhow::Result<()> {
    let removed = match config.worker.membership_type {
        MembershipType::Static => bail!(
            "this cluster uses STATIC membership: remove the worker's line from {}",
            config.conf_dir.join(hoard_config::WORKERS_FILE_NAME).display()
        ),
        MembershipType::Coordinator => {
            // Removal is a membership change: the coordinator wants the cluster secret.
            let path = config.security.cluster_secret_file.clone();
            let secret = tokio::task::spawn_blocking(move || hoard_common::secret::ClusterSecret::load(&path))
                .await?
                .context("remove-worker needs the cluster secret")?;
            hoard_client::CoordinatorClient::new(config)?
                .with_cluster_secret(secret)
                .remove_worker(worker_id, force)
                .await?
        }
        MembershipType::Etcd => {
            let store = hoard_meta::etcd::EtcdStore::connect(&config.etcd).await?;
            hoard_meta::etcd::EtcdMembership::new(std::sync::Arc::new(store))
                .remove_worker(worker_id, force)
                .await?
        }
    };
    println!("removed worker {} ({})", removed.worker_id, removed.address());
    Ok(())
}
