//! ETCD membership as the coordinator serves it (`GET /api/v1/nodes`). The list read from etcd
//! is kept: while etcd cannot be reached the coordinator answers with the list it last saw,
//! marked stale with its age, and clients that cannot reach etcd themselves read with it
//! (docs/client.md). Once etcd has failed to answer, the kept list is served without waiting
//! until a listing succeeds again. It is read again in the background every
//! `hoard.user.worker.list.refresh.interval`, so the kept list is recent even when nobody asks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use hoard_common::api::coordinator::WorkerInfo;
use hoard_meta::etcd::{EtcdMembership, EtcdStore};
use hoard_meta::{keys, CoordinatorRecord, Liveness, Membership, MetaError, MetaStore, WorkerRegistration};
use parking_lot::Mutex;

/// The membership as read from etcd at `read_at`.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) workers: Vec<WorkerInfo>,
    pub(crate) coordinators: Vec<CoordinatorRecord>,
    pub(crate) read_at: Instant,
}

/// What a request gets: the snapshot, and whether it is the kept one because etcd did not
/// answer now.
pub(crate) struct Answer {
    pub(crate) snapshot: Snapshot,
    pub(crate) stale: bool,
}

type Listing = Shared<BoxFuture<'static, Result<Snapshot, MetaError>>>;

pub(crate) struct EtcdList {
    store: Arc<EtcdStore>,
    membership: EtcdMembership,
    /// How long a request waits for etcd before it is answered with the kept list.
    wait: Duration,
    last: Arc<Mutex<Option<Snapshot>>>,
    /// The listing in flight, shared by every request that waits for it: a request that gives
    /// up waiting does not cancel it, and a slow etcd is not asked once per request.
    in_flight: Mutex<Option<Listing>>,
    /// Serving the kept list: warned once, until a listing succeeds again (the listing task
    /// clears it, so requests that do not wait still end the outage).
    degraded: Arc<AtomicBool>,
    refresher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl EtcdList {
    /// Starts reading the list now and every `every` after.
    pub(crate) fn start(
        store: Arc<EtcdStore>,
        membership: EtcdMembership,
        wait: Duration,
        every: Duration,
    ) -> Arc<EtcdList> {
        let list = Arc::new(EtcdList {
            store,
            membership,
            wait: wait.max(Duration::from_millis(100)),
            last: Arc::new(Mutex::new(None)),
            in_flight: Mutex::new(None),
            degraded: Arc::new(AtomicBool::new(false)),
            refresher: Mutex::new(None),
        });
        let weak = Arc::downgrade(&list);
        *list.refresher.lock() = Some(tokio::spawn(refresh_every(weak, every)));
        list
    }

    /// The list from etcd when it answers within the wait; else the kept one, stale; else
    /// the error.
    pub(crate) async fn get(&self) -> Result<Answer, MetaError> {
        // While etcd is known not to answer, the kept list is served at once (the listing
        // goes on in the background and ends the outage when it succeeds).
        let wait = if self.degraded.load(Ordering::SeqCst) {
            Duration::ZERO
        } else {
            self.wait
        };
        let error = match tokio::time::timeout(wait, self.listing()).await {
            Ok(Ok(snapshot)) => return Ok(Answer { snapshot, stale: false }),
            Ok(Err(err)) => err,
            Err(_) => MetaError::Timeout {
                operation: "membership list",
                timeout: wait,
            },
        };
        self.mark_down(&error);
        let Some(snapshot) = self.last.lock().clone() else {
            return Err(error);
        };
        Ok(Answer { snapshot, stale: true })
    }

    /// etcd did not answer: warned once, until it answers again.
    fn mark_down(&self, error: &MetaError) {
        let age_ms = self
            .last
            .lock()
            .as_ref()
            .map(|snapshot| snapshot.read_at.elapsed().as_millis());
        if self.degraded.swap(true, Ordering::SeqCst) {
            tracing::debug!(error = %error, age_ms, "serving the last-known worker list");
        } else {
            tracing::warn!(error = %error, age_ms, "cannot read the worker list from etcd; serving the last-known one, marked stale");
        }
    }

    /// Stops the background refresh (a clean stop).
    pub(crate) fn stop(&self) {
        if let Some(refresher) = self.refresher.lock().take() {
            refresher.abort();
        }
    }

    fn listing(&self) -> Listing {
        let mut in_flight = self.in_flight.lock();
        if let Some(listing) = in_flight.as_ref() {
            if listing.peek().is_none() {
                return listing.clone();
            }
        }
        let store = Arc::clone(&self.store);
        let membership = self.membership.clone();
        let last = Arc::clone(&self.last);
        let degraded = Arc::clone(&self.degraded);
        let task = tokio::spawn(async move {
            let snapshot = read(&store, &membership).await?;
            *last.lock() = Some(snapshot.clone());
            if degraded.swap(false, Ordering::SeqCst) {
                tracing::info!("etcd answers again; serving the current worker list");
            }
            Ok(snapshot)
        });
        let listing = async move {
            task.await
                .unwrap_or_else(|err| Err(MetaError::Unavailable(format!("membership listing stopped: {err}"))))
        }
        .boxed()
        .shared();
        *in_flight = Some(listing.clone());
        listing
    }
}

impl Drop for EtcdList {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn refresh_every(list: Weak<EtcdList>, every: Duration) {
    loop {
        let Some(strong) = list.upgrade() else { return };
        let listing = strong.listing();
        drop(strong);
        if let Err(err) = listing.await {
            // Requests then get the kept list without waiting for etcd first.
            if let Some(strong) = list.upgrade() {
                strong.mark_down(&err);
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Registrations (for addresses, versions, start times) joined with liveness, and the live
/// coordinators.
async fn read(store: &EtcdStore, membership: &EtcdMembership) -> Result<Snapshot, MetaError> {
    let members = membership.members().await?;
    let mut registrations = Vec::new();
    for entry in store.list(keys::WORKERS).await? {
        registrations.push(WorkerRegistration::decode(&entry)?);
    }
    let workers = registrations
        .into_iter()
        .map(|registration| {
            let online = members.iter().any(|member| {
                member.worker_id.as_deref() == Some(registration.worker_id.as_str())
                    && member.liveness == Liveness::Online
            });
            worker_info(registration, online)
        })
        .collect();
    let coordinators = membership.coordinators().await?;
    Ok(Snapshot {
        workers,
        coordinators,
        read_at: Instant::now(),
    })
}

fn worker_info(registration: WorkerRegistration, online: bool) -> WorkerInfo {
    WorkerInfo {
        cluster_name: registration.cluster_name.clone(),
        address: registration.address().to_string(),
        worker_id: registration.worker_id,
        host: registration.host,
        rpc_port: registration.rpc_port,
        state: if online { "ONLINE" } else { "OFFLINE" }.to_string(),
        capacity_bytes: registration.capacity_bytes,
        used_bytes: None,
        version: registration.version,
        start_time_ms: registration.start_time_ms,
        last_heartbeat_age_ms: None,
    }
}
