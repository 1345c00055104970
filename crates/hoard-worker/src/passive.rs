//! The passive cache (docs/replicas.md#passive-cache): a client that read a file from a
//! lower-priority replica because its preferred worker did not hold it whole asks that worker
//! to load the file in the background (`POST /api/v1/passive-cache`), so the next read hits.
//! Requests are deduplicated per file, queued in a bounded queue (dropped and counted when it is
//! full) and loaded one after another by one background task, skipping what is already whole.
//!
//! No admin token: a passive load caches what any reader could make the worker cache by
//! reading the file, and nothing else.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use hoard_common::api::tasks::TaskFile;
use hoard_common::HoardPath;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::tasks::LoadOptions;
use crate::WorkerState;

/// Files waiting to be loaded at most; more requests are dropped (and counted).
pub const PASSIVE_QUEUE_FILES: usize = 1024;

/// The queue of files to load in the background, deduplicated.
pub struct PassiveCache {
    queue: mpsc::Sender<HoardPath>,
    /// Queued or loading: a second request for one of them is a no-op.
    pending: Arc<Mutex<HashSet<HoardPath>>>,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    Queued,
    /// Already queued or loading.
    AlreadyPending,
    /// The queue is full.
    Dropped,
}

impl PassiveCache {
    /// Starts the background loader of `state` (it ends when the state is dropped).
    pub fn start(state: Weak<WorkerState>) -> PassiveCache {
        let (queue, mut files) = mpsc::channel::<HoardPath>(PASSIVE_QUEUE_FILES);
        let pending = Arc::new(Mutex::new(HashSet::new()));
        let loading = Arc::clone(&pending);
        tokio::spawn(async move {
            while let Some(path) = files.recv().await {
                let Some(state) = state.upgrade() else { return };
                let spec = TaskFile {
                    path: path.as_str().to_string(),
                    offset: None,
                    length: None,
                };
                let options = LoadOptions {
                    skip_if_exists: true,
                    metadata_only: false,
                };
                let result = state.load_file(&spec, options).await;
                let outcome = if result.ok { "success" } else { "failure" };
                if !result.ok {
                    tracing::debug!(path = %path, error = ?result.error, "passive cache load failed");
                }
                state.metrics.passive_loaded(outcome);
                loading.lock().remove(&path);
            }
        });
        PassiveCache { queue, pending }
    }

    /// Queues `path` for a background load, once.
    pub fn submit(&self, path: HoardPath) -> Submitted {
        let mut pending = self.pending.lock();
        if pending.contains(&path) {
            return Submitted::AlreadyPending;
        }
        match self.queue.try_send(path.clone()) {
            Ok(()) => {
                pending.insert(path);
                Submitted::Queued
            }
            Err(_) => Submitted::Dropped,
        }
    }
}
