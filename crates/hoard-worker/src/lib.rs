//! The Hoard worker: resolves Hoard paths through the mount table, serves range reads from its
//! page store, fills misses from the UFS one page at a time (concurrent misses coalesce), and
//! exposes stat, list, health and metrics over HTTP (docs/worker-http.md). It also runs the
//! load, free and check tasks of jobs the coordinator sends it (`tasks`).

mod direct;
pub mod identity;
pub mod metrics;
mod passive;
pub mod range;
mod readahead;
mod reader;
pub mod registration;
mod server;
mod tasks;

use std::path::PathBuf;
use std::sync::Arc;

pub use reader::{ReadError, WorkerState, DEFAULT_LOAD_READERS, DEFAULT_SENDFILE_MAX_BYTES};
pub use server::{router, serve, serve_with, ServeOptions};
pub use tasks::{task_range, LoadOptions, LOAD_PAGES_PER_FILE, MAX_TASK_BODY_BYTES, TASK_FILE_CONCURRENCY};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The cause is in the message, not a `source` too (error chains print each cause once).
    #[error("cannot read or create worker identity file {path}: {cause}")]
    Identity { path: PathBuf, cause: std::io::Error },
    #[error("worker identity file {path} does not hold a UUID: {reason}")]
    InvalidIdentity { path: PathBuf, reason: String },
    #[error(transparent)]
    PageStore(#[from] hoard_pagestore::PageStoreError),
    #[error(transparent)]
    Ufs(#[from] hoard_ufs::UfsError),
    #[error("registration: {0}")]
    Registration(String),
}

/// Opens everything a worker needs (identity, page store with recovery, mount table).
/// Blocking: call before entering the server, or from a blocking thread.
/// `address` is what the worker advertises (`host:port`, the port it actually bound).
/// `secret`: the cluster secret tasks must present ([`registration::load_secret`]'s).
pub fn open_state(
    config: &hoard_config::SiteConfig,
    address: String,
    secret: Option<hoard_common::secret::ClusterSecret>,
) -> Result<Arc<WorkerState>, WorkerError> {
    // Before the memory tier sizes its descriptor budget from the limit.
    hoard_http::raise_open_file_limit();
    let worker_id = identity::load_or_create(&config.worker.identity_file)?;
    let mut store = hoard_pagestore::PageStore::open(hoard_pagestore::PageStoreConfig {
        dirs: config.worker.page_store_dirs.clone(),
        capacities: config.worker.page_store_sizes.clone(),
        page_size: config.worker.page_size,
    })?;
    store.set_memory_capacity(config.worker.memory_size);
    store.set_direct_writes(config.worker.direct_writes);
    let mounts = hoard_ufs::MountTable::from_config_with_options(
        &config.ufs,
        &hoard_ufs::UfsOptions::with_timeout(config.worker.ufs_read_timeout),
        &hoard_ufs::process_env,
    )?;
    let readers = usize::try_from(config.jobs.worker_load_readers).unwrap_or(DEFAULT_LOAD_READERS);
    Ok(Arc::new(
        WorkerState::new(
            worker_id,
            address,
            mounts,
            Arc::new(store),
            config.user.metadata_max_age,
        )
        .with_load_readers(readers)
        .with_admin_token(config.security.admin_token.clone())
        .with_cluster_name(config.cluster_name.clone())
        .with_cluster_secret(secret)
        .with_sendfile_max_bytes(config.worker.sendfile_max_size),
    ))
}
