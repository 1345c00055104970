//! Hoard's client: builds the consistent-hash ring from the membership list, finds the workers
//! a path maps to, and reads from the first candidate that answers, going on to the next on
//! connection failures, timeouts and server errors (resuming where the last one stopped, pinned
//! to the same file version).

mod cached;
mod coordinator;
mod fallback;
mod nodes;
pub mod placement;
mod read;
mod rules;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hoard_common::replica::ReplicaRuleSet;
use hoard_common::HoardPath;
use hoard_config::{MembershipType, SiteConfig, UserConfig};
use hoard_meta::{MemberRecord, Membership, MetaError, StaticMembership};
use hoard_ring::Ring;
use parking_lot::Mutex;

pub use coordinator::{members_of, CoordinatorClient, CoordinatorMembership};
pub use fallback::cache_path as membership_cache_path;
pub use nodes::{clusters_local_first, describe_reqwest, probe_members, ClusterView, NodeStatus};
pub use read::StatResult;
pub use rules::RuleSource;

use fallback::Fallback;

/// Why one worker could not serve a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub worker: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no such file: {0}")]
    NotFound(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("range not satisfiable: {0}")]
    RangeNotSatisfiable(String),
    #[error("file {path} changed during the read (started at version {version})")]
    FileChanged { path: String, version: String },
    #[error("no workers available{}", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    NoWorkers(String),
    #[error("all workers failed for {path}: {}", describe_attempts(.attempts))]
    AllWorkersFailed { path: String, attempts: Vec<Attempt> },
    /// The message names the cause; it is not repeated as a source.
    #[error(transparent)]
    Membership(#[from] hoard_meta::MetaError),
    /// Neither the membership source nor any fallback list could be used: each reason.
    #[error("cannot get the worker list: {0}")]
    NoWorkerList(String),
    #[error("coordinator {address}: {reason}")]
    Coordinator { address: String, reason: String },
    /// The coordinator refused the request (`code` is the API's error code).
    #[error("{message}")]
    Rejected { code: String, message: String },
    #[error("http client setup: {0}")]
    Setup(String),
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
}

fn describe_attempts(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|attempt| format!("{} ({})", attempt.worker, attempt.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A Hoard client. Cheap to share (`Arc` inside); a long-lived client follows membership:
/// it lists workers again every `hoard.user.worker.list.refresh.interval` and, on etcd, as soon
/// as its watch reports a change.
pub struct HoardClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// This `Inner`, for tasks that outlive a call (a background refresh, a slow listing).
    me: Weak<Inner>,
    http: reqwest::Client,
    membership: Arc<dyn Membership>,
    user: UserConfig,
    fallback: Fallback,
    view: Mutex<Option<(Arc<ClusterView>, Instant)>>,
    /// Bumped before every listing.
    generation: AtomicU64,
    /// The rank of the stored view: `2 * generation`, plus 1 when it came from the membership
    /// source. A view only replaces one of a lower rank, so a slow list never overwrites a
    /// newer ring, and a fallback list gives way to the source's answer of the same round.
    stored_rank: Mutex<u64>,
    /// Follows the membership's change stream, when it has one; started with the first view.
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// How many times a membership watch was established (re-watches after breaks included).
    watches: AtomicU64,
    /// Whether to watch membership (a long-lived client); a client for one command does not.
    follow: bool,
    /// A background refresh is running (at most one at a time).
    refreshing: AtomicBool,
    /// The membership source failed at the last attempt: one warning per outage, the rest
    /// is logged at debug until it answers again.
    degraded: AtomicBool,
    /// Where the replica rules (how many replicas a file has per cluster) are followed from,
    /// for clients built from a config; started on the first read whose order depends on them.
    rule_source: tokio::sync::OnceCell<Option<RuleSource>>,
    rules_config: Option<Box<SiteConfig>>,
    /// Seeds this client's CLIENT_FIXED order: random per client, so clients spread over a
    /// file's replicas, and fixed for its life, so each keeps hitting the same one.
    client_seed: u32,
    /// Prefer-cached probe answers (used when `hoard.user.replica.prefer.cached.replicas`).
    probe: cached::CachedProbe,
    /// Bytes read per serving cluster and hotness (with the prefer-cached probe on).
    replica_reads: cached::ReplicaReads,
    /// Requests sent in the background (passive cache), for [`HoardClient::settle`].
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.lock().take() {
            watcher.abort();
        }
    }
}

/// How the membership source's listing went within the connect timeout.
enum Primary {
    Listed(Arc<ClusterView>),
    Failed(MetaError),
    /// Still running: it may yet answer.
    Slow(tokio::task::JoinHandle<Result<Vec<MemberRecord>, MetaError>>),
}

impl HoardClient {
    /// A client for the cluster `config` describes (membership from its manager type). It
    /// does not contact the membership source yet: a client created while etcd or the
    /// coordinator is down reads with a fallback list (docs/client.md).
    pub async fn connect(config: &SiteConfig) -> Result<HoardClient, ClientError> {
        HoardClient::connect_with(config, true)
    }

    /// [`HoardClient::connect`] for one command (the CLI): it lists the workers when first
    /// asked and never watches membership (a watch per command would only load etcd).
    pub async fn connect_once(config: &SiteConfig) -> Result<HoardClient, ClientError> {
        HoardClient::connect_with(config, false)
    }

    fn connect_with(config: &SiteConfig, follow: bool) -> Result<HoardClient, ClientError> {
        let timeout = config.user.membership_connect_timeout;
        let (membership, coordinators): (Arc<dyn Membership>, _) = match config.worker.membership_type {
            MembershipType::Static => (Arc::new(StaticMembership::new(config.workers.clone())), None),
            MembershipType::Coordinator => (
                Arc::new(CoordinatorMembership::new(CoordinatorClient::new(config)?)),
                None,
            ),
            MembershipType::Etcd => (
                Arc::new(fallback::LazyEtcdMembership::new(config.etcd.clone(), timeout)),
                Some(CoordinatorClient::new(config)?),
            ),
        };
        HoardClient::build(
            config.user.clone(),
            membership,
            Fallback::for_config(config, coordinators),
            follow,
            Some(Box::new(config.clone())),
        )
    }

    /// A client over `membership`, without fallback lists.
    pub fn with_membership(user: UserConfig, membership: Arc<dyn Membership>) -> Result<HoardClient, ClientError> {
        let fallback = Fallback::none(user.membership_connect_timeout);
        HoardClient::build(user, membership, fallback, true, None)
    }

    fn build(
        user: UserConfig,
        membership: Arc<dyn Membership>,
        fallback: Fallback,
        follow: bool,
        rules_config: Option<Box<SiteConfig>>,
    ) -> Result<HoardClient, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(user.connect_timeout)
            .read_timeout(user.read_timeout)
            .pool_idle_timeout(user.worker_pool_idle_timeout)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(|err| ClientError::Setup(err.to_string()))?;
        let probe = cached::CachedProbe::new(user.cached_probe_ttl, user.connect_timeout.min(Duration::from_secs(1)));
        Ok(HoardClient {
            inner: Arc::new_cyclic(|me| Inner {
                me: me.clone(),
                http,
                membership,
                user,
                fallback,
                view: Mutex::new(None),
                generation: AtomicU64::new(0),
                stored_rank: Mutex::new(0),
                watcher: Mutex::new(None),
                watches: AtomicU64::new(0),
                follow,
                refreshing: AtomicBool::new(false),
                degraded: AtomicBool::new(false),
                rule_source: tokio::sync::OnceCell::new(),
                rules_config,
                client_seed: next_client_seed(),
                probe,
                replica_reads: cached::ReplicaReads::default(),
                background: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn membership(&self) -> &Arc<dyn Membership> {
        &self.inner.membership
    }

    pub fn membership_kind(&self) -> &'static str {
        self.inner.membership.kind()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The cluster as this client sees it: nodes and the ring built over them. Kept for
    /// `hoard.user.worker.list.refresh.interval` (or until a watch reports a change); after
    /// that the next call lists again in the background and returns the current view
    /// meanwhile, so reads never wait for a refresh. `refresh` lists again now.
    ///
    /// Without a view yet, the membership source gets `hoard.user.membership.connect.timeout`
    /// to answer; then the coordinators' last-known list and the list cached on disk are
    /// used (one warning), while a slow source that answers later still replaces them.
    pub async fn view(&self, refresh: bool) -> Result<Arc<ClusterView>, ClientError> {
        let current = self.inner.view.lock().clone();
        let view = match current {
            Some((view, built)) if !refresh => {
                if built.elapsed() >= self.inner.user.worker_list_refresh_interval {
                    self.inner.refresh_in_background();
                }
                view
            }
            current => self.inner.refresh(current.map(|(view, _)| view)).await?,
        };
        self.ensure_watcher();
        Ok(view)
    }

    fn ensure_watcher(&self) {
        if !self.inner.follow {
            return;
        }
        let mut watcher = self.inner.watcher.lock();
        if watcher.is_some() {
            return;
        }
        *watcher = Some(tokio::spawn(follow_membership(self.inner.me.clone())));
    }

    /// How many times this client established a watch on membership (0 when the membership
    /// cannot push changes); grows by one each time a broken watch is replaced.
    pub fn membership_watches(&self) -> u64 {
        self.inner.watches.load(Ordering::Relaxed)
    }

    /// The replica rules reads follow now: the cluster's (read from the coordinators or etcd
    /// on first use and followed from then on, see [`RuleSource`]), else the default rule.
    pub async fn rules(&self) -> Arc<ReplicaRuleSet> {
        let source = self
            .inner
            .rule_source
            .get_or_init(|| async {
                let config = self.inner.rules_config.as_deref()?;
                match RuleSource::start(config).await {
                    Ok(source) => Some(source),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot follow the replica rules; reading with the default rule");
                        None
                    }
                }
            })
            .await;
        match source {
            Some(source) => source.current(),
            None => Arc::new(ReplicaRuleSet::with_default(self.inner.user.replication_min_default)),
        }
    }

    /// Waits (at most `limit`) for the requests this client sent in the background (passive
    /// cache loads): a process that exits right after a read calls it so they are not cut.
    pub async fn settle(&self, limit: Duration) {
        let tasks: Vec<_> = std::mem::take(&mut *self.inner.background.lock());
        let _ = tokio::time::timeout(limit, futures::future::join_all(tasks)).await;
    }

    /// `hoard_multi_replica_read_from_workers_bytes_total` of this client, as Prometheus text
    /// (counted while `hoard.user.replica.prefer.cached.replicas` is on).
    pub fn replica_read_metrics(&self) -> String {
        self.inner.replica_reads.render()
    }

    /// Copies of `path` per cluster as far as its read order goes: with one cluster and
    /// GLOBAL_FIXED the order does not depend on the count (replicas then the rest of the
    /// ring, in ring order), so the rules need not be read at all.
    async fn read_count(&self, view: &ClusterView, path: &HoardPath) -> usize {
        let policy = self.inner.user.replica_selection_policy;
        let order_only = !self.inner.user.prefer_cached_replicas;
        if order_only
            && policy == hoard_common::replica::ReplicaSelectionPolicy::GlobalFixed
            && view.clusters().count() <= 1
        {
            return 1;
        }
        self.rules().await.count_for(path) as usize
    }

    /// The workers `path` maps to, best first (`count` at most).
    pub async fn locate(&self, path: &HoardPath, count: usize) -> Result<Vec<NodeStatus>, ClientError> {
        let view = self.view(false).await?;
        Ok(view.candidates(path, count))
    }

    /// Every registered worker with its state, plus the live coordinators: for `info nodes`.
    /// Unlike [`HoardClient::view`] it asks every worker that may be up for its usage.
    pub async fn nodes_report(&self) -> Result<NodesReport, ClientError> {
        let members = self.inner.membership.members().await?;
        let workers = nodes::probe_members(&self.inner.http, members, &self.inner.user, true).await;
        let coordinators = self.inner.membership.coordinators().await?;
        let singleton = hoard_meta::singleton_holder(&coordinators).map(|holder| holder.coordinator_id.clone());
        Ok(NodesReport {
            membership: self.membership_kind().to_string(),
            dynamic_ring: self.inner.user.dynamic_ring,
            workers,
            coordinators,
            singleton,
        })
    }
}

impl Inner {
    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Lists again in a task of its own, unless one is running.
    fn refresh_in_background(&self) {
        if self.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(inner) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let current = inner.view.lock().clone().map(|(view, _)| view);
            if let Err(err) = inner.refresh(current).await {
                tracing::debug!(error = %err, "background refresh of the worker list failed");
            }
            inner.refreshing.store(false, Ordering::SeqCst);
        });
    }

    /// Lists the members, falling back as [`HoardClient::view`] says. `current` is the view
    /// this client has, kept when the source cannot be reached.
    async fn refresh(&self, current: Option<Arc<ClusterView>>) -> Result<Arc<ClusterView>, ClientError> {
        let generation = self.next_generation();
        let bounded = current.is_some() || self.fallback.is_configured();
        let (error, slow) = match self.list_primary(generation, bounded).await {
            Primary::Listed(view) => return Ok(view),
            // A configuration error (not an outage) is not hidden behind a fallback list.
            Primary::Failed(err) if !err.is_retryable() && current.is_none() => return Err(err.into()),
            Primary::Failed(err) => (err, None),
            Primary::Slow(listing) => (
                MetaError::Unavailable(format!(
                    "{} membership did not answer within {:?}",
                    self.membership.kind(),
                    self.fallback.timeout
                )),
                Some(listing),
            ),
        };
        if let Some(view) = current {
            self.finish_in_background(generation, slow);
            self.degrade(&format!(
                "cannot refresh the worker list ({error}); reading with the last one this client had"
            ));
            // Try again after one refresh interval, not on every read meanwhile.
            let mut stored = self.view.lock();
            if let Some((stored_view, built)) = stored.as_mut() {
                if Arc::ptr_eq(stored_view, &view) {
                    *built = Instant::now();
                }
            }
            return Ok(view);
        }
        match self.fallback.list(self.membership.kind()).await {
            Ok(found) => {
                self.finish_in_background(generation, slow);
                let view = self.install(generation, found.members, false).await;
                self.degrade(&format!(
                    "cannot reach the membership source ({error}); reading with {}",
                    found.from
                ));
                Ok(view)
            }
            Err(reasons) => {
                // Nothing else to read with: wait for a slow source after all.
                let error = match slow {
                    Some(listing) => match listing.await {
                        Ok(Ok(members)) => {
                            self.reachable_again();
                            return Ok(self.install(generation, members, true).await);
                        }
                        Ok(Err(err)) => err,
                        Err(err) => MetaError::Unavailable(format!("membership listing failed: {err}")),
                    },
                    None => error,
                };
                if reasons.is_empty() {
                    return Err(error.into());
                }
                Err(ClientError::NoWorkerList(format!("{error}; {}", reasons.join("; "))))
            }
        }
    }

    /// Asks the membership source, waiting at most the membership connect timeout when
    /// `bounded` (there is something else to read with).
    async fn list_primary(&self, generation: u64, bounded: bool) -> Primary {
        let membership = Arc::clone(&self.membership);
        let mut listing = tokio::spawn(async move { membership.members().await });
        let answer = if bounded {
            match tokio::time::timeout(self.fallback.timeout, &mut listing).await {
                Ok(answer) => answer,
                Err(_) => return Primary::Slow(listing),
            }
        } else {
            (&mut listing).await
        };
        match answer {
            Ok(Ok(members)) => {
                self.reachable_again();
                Primary::Listed(self.install(generation, members, true).await)
            }
            Ok(Err(err)) => Primary::Failed(err),
            Err(err) => Primary::Failed(MetaError::Unavailable(format!("membership listing failed: {err}"))),
        }
    }

    /// Lets a slow listing finish in the background; its answer replaces a fallback view.
    fn finish_in_background(
        &self,
        generation: u64,
        slow: Option<tokio::task::JoinHandle<Result<Vec<MemberRecord>, MetaError>>>,
    ) {
        let Some(listing) = slow else { return };
        let me = self.me.clone();
        tokio::spawn(async move {
            let Ok(Ok(members)) = listing.await else { return };
            if let Some(inner) = me.upgrade() {
                inner.reachable_again();
                inner.install(generation, members, true).await;
            }
        });
    }

    /// Builds the view over `members` and stores it unless a newer one is stored. A list from
    /// the membership source is also saved to the disk cache.
    async fn install(&self, generation: u64, members: Vec<MemberRecord>, from_source: bool) -> Arc<ClusterView> {
        if from_source {
            self.save_cache(&members).await;
        }
        let nodes = nodes::probe_members(&self.http, members, &self.user, false).await;
        let view = Arc::new(ClusterView::new(nodes, &self.user));
        let rank = generation.saturating_mul(2) + u64::from(from_source);
        let mut stored = self.stored_rank.lock();
        if rank > *stored {
            *stored = rank;
            *self.view.lock() = Some((Arc::clone(&view), Instant::now()));
        }
        view
    }

    async fn save_cache(&self, members: &[MemberRecord]) {
        let Some(cache) = self.fallback.cache().cloned() else {
            return;
        };
        let members = members.to_vec();
        let path = cache.path().display().to_string();
        match tokio::task::spawn_blocking(move || cache.save(&members)).await {
            Ok(Ok(())) => {}
            // Not worth a warning on every command: reads work without it.
            Ok(Err(err)) => tracing::info!(path = %path, error = %err, "cannot save the worker list"),
            Err(err) => tracing::info!(path = %path, error = %err, "cannot save the worker list"),
        }
    }

    /// Logs a membership failure: a warning the first time, debug until the source answers.
    fn degrade(&self, message: &str) {
        if self.degraded.swap(true, Ordering::SeqCst) {
            tracing::debug!("{message}");
        } else {
            tracing::warn!("{message}");
        }
    }

    fn reachable_again(&self) {
        if self.degraded.swap(false, Ordering::SeqCst) {
            tracing::info!(
                membership = self.membership.kind(),
                "the membership source answers again"
            );
        }
    }

    /// Lists the members after a watch event (no fallback: the view in place stays).
    async fn relist(&self, after: &str) {
        let generation = self.next_generation();
        match self.membership.members().await {
            Ok(members) => {
                self.reachable_again();
                self.install(generation, members, true).await;
            }
            Err(err) => self.degrade(&format!("cannot list members {after}: {err}")),
        }
    }
}

/// Follows a membership that pushes changes (etcd): every event lists again; a broken watch
/// (compaction, etcd restart) lists again and watches anew, with backoff, so the ring is never
/// stale for longer than the outage.
async fn follow_membership(inner: Weak<Inner>) {
    use futures::StreamExt;
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let membership = Arc::clone(&strong.membership);
        drop(strong);
        let mut stream = match membership.watch().await {
            Ok(Some(stream)) => stream,
            Ok(None) => return,
            Err(err) => {
                if let Some(strong) = inner.upgrade() {
                    strong.degrade(&format!("cannot watch membership ({err}); retrying"));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        // Changes made between the last list and the new watch are picked up here.
        if let Some(strong) = inner.upgrade() {
            strong.watches.fetch_add(1, Ordering::Relaxed);
            strong.relist("after (re)watching").await;
        }
        while let Some(event) = stream.next().await {
            let Some(strong) = inner.upgrade() else { return };
            match event {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    strong.relist("after a change").await;
                }
                Err(err) => {
                    strong.degrade(&format!(
                        "membership watch broke ({err}); listing again and re-watching"
                    ));
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// What `hoard info nodes` prints.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodesReport {
    pub membership: String,
    pub dynamic_ring: bool,
    pub workers: Vec<NodeStatus>,
    pub coordinators: Vec<hoard_meta::CoordinatorRecord>,
    /// The coordinator holding the singleton duties (job cleanup).
    pub singleton: Option<String>,
}

/// A seed for a new client's CLIENT_FIXED order: random per process, then consecutive for the
/// clients one process makes, so they spread evenly over a file's replicas (clients of
/// different processes spread at random).
fn next_client_seed() -> u32 {
    static BASE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    BASE.get_or_init(rand::random)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Builds a ring from nodes with the configured provider and virtual node count.
pub fn build_ring(nodes: &[NodeStatus], user: &UserConfig) -> Ring {
    let provider = match user.hash_provider {
        hoard_config::HashProvider::Default => hoard_ring::Provider::Default,
        hoard_config::HashProvider::Capacity => hoard_ring::Provider::Capacity,
    };
    let members = nodes
        .iter()
        .map(|node| hoard_ring::Member {
            identity: node.ring_identity.clone(),
            capacity_bytes: node.capacity_bytes.unwrap_or(0),
        })
        .collect();
    Ring::build(members, user.virtual_nodes_per_worker, provider)
}
