//! The etcd backend (docs/etcd.md): [`EtcdStore`] implements [`MetaStore`] on an etcd v3
//! cluster under one root prefix (`hoard.etcd.root`), with bounded, retried requests;
//! [`LeaseSession`] keeps a worker's or coordinator's liveness key on a lease alive in the
//! background and registers again when the lease was lost; [`EtcdMembership`] implements
//! [`Membership`] (registrations joined with live keys, and etcd watches).
//!
//! Every request is bounded by `read_timeout` (get, list, watch set-up) or `write_timeout` (put,
//! delete, txn, leases) and tried up to `1 + max_retries` times with a short exponential backoff
//! when the failure is retryable (connection refused or broken, `Unavailable`, deadline
//! exceeded, leader changed, our own timeout). Other failures (permission denied, request too
//! large, ...) are returned at once as [`MetaError::Config`]. The gRPC channel reconnects by
//! itself when etcd comes back (tests/etcd.rs kills and restarts etcd under a live store), so
//! an `EtcdStore` outlives an etcd restart without being recreated.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, GetOptions, KeyValue, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use futures::StreamExt;
use hoard_config::EtcdConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::deadline::SharedDeadline;
use crate::{
    keys, members_from_records, ChangeStream, Compare, CoordinatorRecord, Entry, LiveWorker, MemberRecord, Membership,
    MetaError, MetaStore, Op, WorkerRegistration,
};

/// The shortest lease etcd is asked for: shorter ones expire between two keep-alives.
pub const MIN_LEASE_TTL_SECONDS: i64 = 2;
/// Keys per page when listing a prefix.
const LIST_PAGE: i64 = 1000;
/// Compare-and-set rounds of a registration or removal before giving up (the records kept
/// changing under us).
const CAS_ROUNDS: usize = 5;

// ---------------------------------------------------------------------------------------------
// Pure pieces.

/// `root` + `key` (the root starts and ends with `/`; keys are relative, without a leading `/`).
pub fn full_key(root: &str, key: &str) -> String {
    format!("{root}{key}")
}

/// The key relative to `root`, or `None` when `full` is not under it.
pub fn relative_key(root: &str, full: &[u8]) -> Option<String> {
    full.strip_prefix(root.as_bytes())
        .map(|rest| String::from_utf8_lossy(rest).into_owned())
}

/// The lease TTL etcd is asked for: `ttl` rounded up to whole seconds, at least
/// [`MIN_LEASE_TTL_SECONDS`].
pub fn lease_ttl_seconds(ttl: Duration) -> i64 {
    let mut seconds = ttl.as_secs();
    if ttl.subsec_nanos() > 0 {
        seconds = seconds.saturating_add(1);
    }
    i64::try_from(seconds).unwrap_or(i64::MAX).max(MIN_LEASE_TTL_SECONDS)
}

/// How often a session renews a lease of `ttl_seconds`: a third of the TTL (so two renewals
/// may be lost before the lease expires), at most once a second (so the shortest leases, 2s,
/// renew every second).
pub fn keep_alive_interval(ttl_seconds: i64) -> Duration {
    let millis = u64::try_from(ttl_seconds.max(1)).unwrap_or(1).saturating_mul(1000) / 3;
    Duration::from_millis(millis.max(1000))
}

fn ttl_duration(ttl_seconds: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl_seconds.max(0)).unwrap_or(0))
}

/// The end of the key range holding every key that starts with `prefix` (etcd's rule).
fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    for (i, byte) in prefix.iter().enumerate().rev() {
        if *byte < 0xff {
            let mut end = prefix[..=i].to_vec();
            end[i] = byte + 1;
            return end;
        }
    }
    vec![0]
}

/// A count of the keys under a prefix: the cheapest read that proves etcd answers.
fn count_only() -> GetOptions {
    GetOptions::new().with_prefix().with_count_only()
}

/// The delay before retry number `attempt` (0-based) of a request: 50ms, 100ms, 200ms, ...
/// capped at 1s.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(5)).min(1000))
}

/// Whether an existing live key of a worker id blocks a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimRule {
    /// A process starting: a live key of another instance at another address is a second
    /// process claiming the id; the same address is this worker restarted (its old lease has
    /// not expired yet), and it takes the key over.
    Start,
    /// A running session registering again after its lease was lost: any other instance now
    /// holds the id, and this session must stop.
    Renew,
}

fn claim_conflicts(rule: ClaimRule, holder: &LiveWorker, registration: &WorkerRegistration) -> bool {
    if holder.instance == registration.instance {
        return false;
    }
    match rule {
        ClaimRule::Start => holder.address != registration.address().to_string(),
        ClaimRule::Renew => true,
    }
}

/// What went wrong with one etcd request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// Worth retrying. `maybe_applied` is false only when the request surely never reached
    /// etcd (the connection could not be made).
    Retryable { reason: String, maybe_applied: bool },
    /// Retrying would fail the same way.
    Fatal(String),
    /// Our own deadline passed (the request may have been applied).
    TimedOut,
}

/// gRPC status codes (tonic::Code discriminants) that say "try again".
const CODE_CANCELLED: i32 = 1;
const CODE_UNKNOWN: i32 = 2;
const CODE_DEADLINE_EXCEEDED: i32 = 4;
const CODE_NOT_FOUND: i32 = 5;
const CODE_ABORTED: i32 = 10;
const CODE_INTERNAL: i32 = 13;
const CODE_UNAVAILABLE: i32 = 14;

fn looks_like_connection_failure(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "transport",
        "connect",
        "connection",
        "h2 protocol",
        "broken pipe",
        "reset",
        "closed",
        "leader",
        "timed out",
        "timeout",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

fn never_sent(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("connection refused") || message.contains("tcp connect error")
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A gRPC status (its code and message, plus the transport error under it if any).
fn classify_status(code: i32, reason: String) -> Failure {
    let retryable = match code {
        CODE_CANCELLED | CODE_DEADLINE_EXCEEDED | CODE_ABORTED | CODE_UNAVAILABLE => true,
        CODE_UNKNOWN | CODE_INTERNAL => looks_like_connection_failure(&reason),
        _ => false,
    };
    if retryable {
        let maybe_applied = !never_sent(&reason);
        Failure::Retryable { reason, maybe_applied }
    } else {
        Failure::Fatal(reason)
    }
}

fn classify(err: &etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match err {
        E::TransportError(_) | E::IoError(_) => {
            let reason = error_chain(err);
            let maybe_applied = !never_sent(&reason);
            Failure::Retryable { reason, maybe_applied }
        }
        E::GRpcStatus(status) => {
            let mut reason = status.message().to_lowercase();
            if reason.is_empty() {
                reason = status.code().description().to_lowercase();
            }
            if let Some(source) = std::error::Error::source(status) {
                reason = format!("{reason}: {}", error_chain(source));
            }
            classify_status(status.code() as i32, reason)
        }
        // A stream (watch, keep-alive) that broke.
        E::WatchError(_) | E::LeaseKeepAliveError(_) => Failure::Retryable {
            reason: err.to_string(),
            maybe_applied: true,
        },
        _ => Failure::Fatal(err.to_string()),
    }
}

fn is_lease_not_found(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
        etcd_client::Error::GRpcStatus(status) => {
            status.code() as i32 == CODE_NOT_FOUND || status.message().contains("lease not found")
        }
        _ => false,
    }
}

fn lease_hex(id: i64) -> String {
    format!("{id:x}")
}

// ---------------------------------------------------------------------------------------------
// The store.

/// A [`MetaStore`] on etcd. Cheap to clone (the clones share one client).
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    root: String,
    read_timeout: Duration,
    write_timeout: Duration,
    max_retries: u32,
    /// tonic's channel under it reconnects by itself after etcd restarts or a connection breaks.
    client: Client,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .field("root", &self.inner.root)
            .field("read_timeout", &self.inner.read_timeout)
            .field("write_timeout", &self.inner.write_timeout)
            .field("max_retries", &self.inner.max_retries)
            .finish()
    }
}

impl EtcdStore {
    /// Connects to `config.endpoints` and checks that etcd answers (a read under the root).
    /// [`MetaError::Config`] when there are no endpoints or the root or an endpoint is malformed;
    /// [`MetaError::Unavailable`] / [`MetaError::Timeout`] (retryable) when etcd does not answer.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore, MetaError> {
        let connect_timeout = config
            .read_timeout
            .min(config.write_timeout)
            .max(Duration::from_millis(100));
        let store = EtcdStore::open(config, connect_timeout).await?;
        // The client connects lazily: make sure etcd is there.
        let root = store.inner.root.clone();
        let target = format!("to {}", store.endpoints_text());
        store
            .call("connect", &target, store.inner.read_timeout, move |mut client| {
                let root = root.clone();
                async move { client.get(root, Some(count_only())).await }
            })
            .await?;
        tracing::info!(endpoints = ?store.inner.endpoints, root = %store.inner.root, "connected to etcd");
        Ok(store)
    }

    /// [`EtcdStore::connect`] for a caller that has somewhere else to go (a client with a
    /// fallback worker list): the whole connect, retries included, takes at most `within`, and
    /// a failure is only returned, not logged as a warning (the caller says what it does
    /// instead). Later requests on the store keep the configured timeouts and retries.
    pub async fn connect_within(config: &EtcdConfig, within: Duration) -> Result<EtcdStore, MetaError> {
        let started = Instant::now();
        let connect_timeout = config
            .read_timeout
            .min(config.write_timeout)
            .min(within)
            .max(Duration::from_millis(100));
        let no_answer = || {
            MetaError::Unavailable(format!(
                "etcd at {} did not answer within {within:?}",
                config.endpoints.join(",")
            ))
        };
        let store = match tokio::time::timeout(within, EtcdStore::open(config, connect_timeout)).await {
            Ok(store) => store?,
            Err(_) => return Err(no_answer()),
        };
        let deadline = started + within;
        let mut last_reason = None;
        for attempt in 0..store.inner.max_retries.saturating_add(1) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut client = store.client();
            let root = store.inner.root.clone();
            match tokio::time::timeout(left, client.get(root, Some(count_only()))).await {
                Ok(Ok(_)) => {
                    tracing::debug!(endpoints = ?store.inner.endpoints, root = %store.inner.root, "connected to etcd");
                    return Ok(store);
                }
                Ok(Err(err)) => match classify(&err) {
                    Failure::Fatal(reason) => {
                        return Err(MetaError::Config(format!(
                            "etcd at {} rejected the connection: {reason}",
                            store.endpoints_text()
                        )))
                    }
                    Failure::Retryable { reason, .. } => last_reason = Some(reason),
                    Failure::TimedOut => {}
                },
                Err(_) => break,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(retry_delay(attempt).min(left)).await;
        }
        Err(match last_reason {
            Some(reason) => MetaError::Unavailable(format!(
                "cannot connect to etcd at {}: {reason}",
                store.endpoints_text()
            )),
            None => no_answer(),
        })
    }

    /// Checks the configuration and sets up the (lazily connecting) client.
    async fn open(config: &EtcdConfig, connect_timeout: Duration) -> Result<EtcdStore, MetaError> {
        if config.endpoints.is_empty() {
            return Err(MetaError::Config(
                "no etcd endpoints configured (hoard.etcd.endpoints)".into(),
            ));
        }
        if !config.root.starts_with('/') || !config.root.ends_with('/') {
            return Err(MetaError::Config(format!(
                "etcd root {:?} must start and end with '/' (hoard.etcd.root)",
                config.root
            )));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(connect_timeout)
            // Finds a dead peer on an idle connection (a watch) without waiting for TCP; etcd
            // refuses pings more often than every 5s.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let endpoints = config.endpoints.join(",");
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|err| match classify(&err) {
                Failure::Retryable { reason, .. } => {
                    MetaError::Unavailable(format!("cannot connect to etcd at {endpoints}: {reason}"))
                }
                Failure::Fatal(reason) => MetaError::Config(format!("etcd endpoints {endpoints}: {reason}")),
                Failure::TimedOut => MetaError::Unavailable(format!("cannot connect to etcd at {endpoints}")),
            })?;
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                endpoints: config.endpoints.clone(),
                root: config.root.clone(),
                read_timeout: config.read_timeout,
                write_timeout: config.write_timeout,
                max_retries: config.max_retries,
                client,
            }),
        })
    }

    fn endpoints_text(&self) -> String {
        self.inner.endpoints.join(",")
    }

    /// The root every key is under (`hoard.etcd.root`).
    pub fn root(&self) -> &str {
        &self.inner.root
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    fn client(&self) -> Client {
        self.inner.client.clone()
    }

    fn full(&self, key: &str) -> String {
        full_key(&self.inner.root, key)
    }

    fn entry(&self, kv: &KeyValue) -> Entry {
        Entry {
            key: relative_key(&self.inner.root, kv.key())
                .unwrap_or_else(|| String::from_utf8_lossy(kv.key()).into_owned()),
            value: kv.value().to_vec(),
            version: u64::try_from(kv.mod_revision()).unwrap_or(0),
        }
    }

    /// Runs `request` up to `1 + max_retries` times, each bounded by `timeout`.
    async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        key: &str,
        timeout: Duration,
        request: F,
    ) -> Result<T, MetaError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut maybe_applied = false;
        self.call_tracked(operation, key, timeout, &mut maybe_applied, request)
            .await
    }

    /// [`EtcdStore::call`], also telling whether a failed attempt may have been applied.
    async fn call_tracked<T, F, Fut>(
        &self,
        operation: &'static str,
        key: &str,
        timeout: Duration,
        maybe_applied: &mut bool,
        mut request: F,
    ) -> Result<T, MetaError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempts = self.inner.max_retries.saturating_add(1);
        let mut last = MetaError::Unavailable(format!("etcd {operation} {key}: not attempted"));
        for attempt in 0..attempts {
            let failure = match tokio::time::timeout(timeout, request(self.client())).await {
                Ok(Ok(value)) => {
                    return Ok(value);
                }
                Ok(Err(err)) => classify(&err),
                Err(_) => Failure::TimedOut,
            };
            match failure {
                Failure::Fatal(reason) => {
                    tracing::warn!(operation, key, error = %reason, "etcd rejected the request");
                    return Err(MetaError::Config(format!("etcd rejected {operation} {key}: {reason}")));
                }
                Failure::Retryable {
                    reason,
                    maybe_applied: applied,
                } => {
                    *maybe_applied |= applied;
                    last = MetaError::Unavailable(format!(
                        "etcd {operation} {key} failed after {} attempt(s): {reason}",
                        attempt + 1
                    ));
                }
                Failure::TimedOut => {
                    *maybe_applied = true;
                    last = MetaError::Timeout { operation, timeout };
                }
            }
            if attempt + 1 < attempts {
                tracing::debug!(operation, key, attempt = attempt + 1, error = %last, "etcd request failed, retrying");
                tokio::time::sleep(retry_delay(attempt)).await;
            }
        }
        tracing::warn!(operation, key, attempts, error = %last, "etcd request failed");
        Err(last)
    }

    /// Every key under `prefix` (relative), in key order, at `revision` (0: the latest); returns
    /// the entries and the revision they were read at. Pages through big prefixes at one
    /// revision.
    async fn range(
        &self,
        operation: &'static str,
        prefix: &str,
        revision: i64,
    ) -> Result<(Vec<Entry>, i64), MetaError> {
        self.range_limited(operation, prefix, revision, usize::MAX).await
    }

    /// Like `range`, stopping after `limit` entries.
    async fn range_limited(
        &self,
        operation: &'static str,
        prefix: &str,
        revision: i64,
        limit: usize,
    ) -> Result<(Vec<Entry>, i64), MetaError> {
        let full = self.full(prefix);
        let end = prefix_range_end(full.as_bytes());
        let mut start = full.clone().into_bytes();
        let mut revision = revision;
        let mut entries = Vec::new();
        loop {
            let left = limit.saturating_sub(entries.len());
            let page = i64::try_from(left).map_or(LIST_PAGE, |left| left.min(LIST_PAGE));
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(page)
                .with_revision(revision);
            let from = start.clone();
            let response = self
                .call(operation, &full, self.inner.read_timeout, move |mut client| {
                    let from = from.clone();
                    let options = options.clone();
                    async move { client.get(from, Some(options)).await }
                })
                .await?;
            if revision == 0 {
                revision = response.header().map_or(0, |header| header.revision());
            }
            let kvs = response.kvs();
            entries.extend(kvs.iter().map(|kv| self.entry(kv)));
            match kvs.last() {
                Some(last) if response.more() && entries.len() < limit => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok((entries, revision))
    }

    /// A txn of raw etcd compares and ops. When an attempt that may have been applied failed and
    /// a retry then finds the compares false, the outcome is unknown: that is an error, not
    /// `false`, so a caller reads the keys again instead of concluding it lost.
    async fn txn_raw(
        &self,
        operation: &'static str,
        key: &str,
        compares: Vec<EtcdCompare>,
        ops: Vec<TxnOp>,
    ) -> Result<Option<u64>, MetaError> {
        let txn = Txn::new().when(compares).and_then(ops);
        let mut maybe_applied = false;
        let mut attempts_made = 0u32;
        let response = self
            .call_tracked(
                operation,
                key,
                self.inner.write_timeout,
                &mut maybe_applied,
                |mut client| {
                    attempts_made += 1;
                    let txn = txn.clone();
                    async move { client.txn(txn).await }
                },
            )
            .await?;
        if !response.succeeded() && maybe_applied && attempts_made > 1 {
            return Err(MetaError::Unavailable(format!(
                "etcd {operation} {key}: outcome unknown (an attempt that failed may have been applied, \
                 and the retry found the compares false); read the keys again"
            )));
        }
        if !response.succeeded() {
            return Ok(None);
        }
        // The revision of the txn's own commit: what every key it put now has as mod_revision.
        match response.header().map(|header| header.revision()) {
            Some(revision) => Ok(Some(u64::try_from(revision).unwrap_or_default())),
            None => Err(MetaError::Unavailable(format!(
                "etcd {operation} {key}: applied, but the answer has no header to tell the new revision; read the keys again"
            ))),
        }
    }

    async fn grant(&self, ttl_seconds: i64, key: &str) -> Result<i64, MetaError> {
        let response = self
            .call(
                "lease grant",
                key,
                self.inner.write_timeout,
                move |mut client| async move { client.lease_grant(ttl_seconds, None).await },
            )
            .await?;
        if !response.error().is_empty() {
            return Err(MetaError::Unavailable(format!(
                "etcd lease grant for {key}: {}",
                response.error().to_lowercase()
            )));
        }
        Ok(response.id())
    }

    /// Revokes a lease (its keys disappear at once); a lease that is already gone is fine.
    async fn revoke(&self, lease_id: i64, key: &str) -> Result<(), MetaError> {
        self.call(
            "lease revoke",
            key,
            self.inner.write_timeout,
            move |mut client| async move {
                match client.lease_revoke(lease_id).await {
                    Ok(_) => Ok(()),
                    Err(err) if is_lease_not_found(&err) => Ok(()),
                    Err(err) => Err(err),
                }
            },
        )
        .await
    }

    async fn revoke_quietly(&self, lease_id: i64, key: &str) {
        if let Err(err) = self.revoke(lease_id, key).await {
            tracing::warn!(lease = %lease_hex(lease_id), key, error = %err, "cannot revoke an unused etcd lease; it expires by itself");
        }
    }

    /// Puts a worker's registration (permanent) and live key (on a fresh lease) in one txn,
    /// unless another instance holds the live key (per `rule`). Returns the lease.
    async fn claim_worker(
        &self,
        registration: &WorkerRegistration,
        ttl_seconds: i64,
        rule: ClaimRule,
        granted: Option<&AtomicI64>,
    ) -> Result<i64, MetaError> {
        let worker_id = &registration.worker_id;
        let live_key = keys::live_worker(worker_id);
        let live = LiveWorker {
            worker_id: worker_id.clone(),
            address: registration.address().to_string(),
            instance: registration.instance.clone(),
            start_time_ms: registration.start_time_ms,
        };
        for _ in 0..CAS_ROUNDS {
            let compare = match self.get(&live_key).await? {
                None => EtcdCompare::version(self.full(&live_key), CompareOp::Equal, 0),
                Some(entry) => {
                    let holder = LiveWorker::decode(&entry)?;
                    if claim_conflicts(rule, &holder, registration) {
                        return Err(MetaError::IdInUse {
                            worker_id: worker_id.clone(),
                            address: holder.address,
                        });
                    }
                    EtcdCompare::mod_revision(
                        self.full(&live_key),
                        CompareOp::Equal,
                        i64::try_from(entry.version).unwrap_or(i64::MAX),
                    )
                }
            };
            let lease_id = self.grant(ttl_seconds, &live_key).await?;
            if let Some(granted) = granted {
                granted.store(lease_id, Ordering::SeqCst);
            }
            let ops = vec![
                TxnOp::put(self.full(&keys::worker(worker_id)), registration.encode(), None),
                TxnOp::put(
                    self.full(&live_key),
                    live.encode(),
                    Some(PutOptions::new().with_lease(lease_id)),
                ),
            ];
            match self
                .txn_raw("register worker", &live_key, vec![compare], ops)
                .await
                .map(|applied| applied.is_some())
            {
                Ok(true) => return Ok(lease_id),
                Ok(false) => {
                    tracing::debug!(worker_id = %worker_id, "live key changed while registering, trying again");
                    self.revoke_quietly(lease_id, &live_key).await;
                }
                Err(err) => {
                    self.revoke_quietly(lease_id, &live_key).await;
                    return Err(err);
                }
            }
        }
        Err(MetaError::Unavailable(format!(
            "register worker {worker_id}: {live_key} kept changing during {CAS_ROUNDS} attempts"
        )))
    }

    /// Puts a coordinator's live key on a fresh lease. Returns the lease.
    async fn claim_coordinator(
        &self,
        record: &CoordinatorRecord,
        ttl_seconds: i64,
        granted: Option<&AtomicI64>,
    ) -> Result<i64, MetaError> {
        let key = keys::live_coordinator(&record.coordinator_id);
        let lease_id = self.grant(ttl_seconds, &key).await?;
        if let Some(granted) = granted {
            granted.store(lease_id, Ordering::SeqCst);
        }
        let full = self.full(&key);
        let value = record.encode();
        let result = self
            .call("put", &key, self.inner.write_timeout, move |mut client| {
                let full = full.clone();
                let value = value.clone();
                async move {
                    client
                        .put(full, value, Some(PutOptions::new().with_lease(lease_id)))
                        .await
                }
            })
            .await;
        match result {
            Ok(_) => Ok(lease_id),
            Err(err) => {
                self.revoke_quietly(lease_id, &key).await;
                Err(err)
            }
        }
    }

    /// Registers a worker: `workers/<id>` (the registration, permanent) and `live/workers/<id>`
    /// (a [`LiveWorker`] on a lease of `ttl`, rounded up to whole seconds, at least 2s) in one
    /// transaction, then keeps the lease alive in the background (see [`LeaseSession`]).
    ///
    /// [`MetaError::IdInUse`] (naming the other address) when another instance at another
    /// address holds the live key: a second live process claiming the id. The same address is
    /// taken as a restart of this worker, and it takes the live key over.
    pub async fn register_worker(
        &self,
        registration: &WorkerRegistration,
        ttl: Duration,
    ) -> Result<LeaseSession, MetaError> {
        let ttl_seconds = lease_ttl_seconds(ttl);
        let requested_at = Instant::now();
        let lease_id = self
            .claim_worker(registration, ttl_seconds, ClaimRule::Start, None)
            .await?;
        tracing::info!(
            worker_id = %registration.worker_id,
            address = %registration.address(),
            lease = %lease_hex(lease_id),
            ttl_seconds,
            "registered worker in etcd"
        );
        Ok(LeaseSession::spawn(
            self.clone(),
            Holder::Worker(registration.clone()),
            ttl_seconds,
            lease_id,
            requested_at,
        ))
    }

    /// Puts `live/coordinators/<id>` on a lease of `ttl` and keeps it alive (see
    /// [`LeaseSession`]).
    pub async fn register_coordinator(
        &self,
        record: &CoordinatorRecord,
        ttl: Duration,
    ) -> Result<LeaseSession, MetaError> {
        let ttl_seconds = lease_ttl_seconds(ttl);
        let requested_at = Instant::now();
        let lease_id = self.claim_coordinator(record, ttl_seconds, None).await?;
        tracing::info!(
            coordinator_id = %record.coordinator_id,
            address = %record.address,
            lease = %lease_hex(lease_id),
            ttl_seconds,
            "registered coordinator in etcd"
        );
        Ok(LeaseSession::spawn(
            self.clone(),
            Holder::Coordinator(record.clone()),
            ttl_seconds,
            lease_id,
            requested_at,
        ))
    }
}

/// Gets per txn of [`MetaStore::get_many`], under etcd's default `--max-txn-ops` (128).
const GETS_PER_TXN: usize = 64;

impl EtcdStore {
    /// Watches every key under the `relative` prefixes (relative to the root) on one stream.
    /// The watch is in place when this returns, so a caller that reads after calling it misses
    /// no change. Each batch of events yields `Ok(())`; a canceled (e.g. compacted) watch or a
    /// broken stream yields one `Err` and ends. `what` names it in logs and errors.
    pub async fn watch_prefixes(&self, relative: &[&str], what: &'static str) -> Result<ChangeStream, MetaError> {
        let prefixes: Vec<String> = relative.iter().map(|prefix| self.full(prefix)).collect();
        let root = self.root().to_string();
        let (stream, pending) = self
            .call("watch", &root, self.inner.read_timeout, move |client| {
                let prefixes = prefixes.clone();
                open_watch(client, prefixes)
            })
            .await?;
        tracing::debug!(root = %root, what, "watching etcd");
        let state = WatchState {
            stream,
            pending,
            done: false,
            root,
            what,
        };
        let changes = futures::stream::unfold(state, |mut state| async move {
            if state.done {
                return None;
            }
            if state.pending {
                state.pending = false;
                return Some((Ok(()), state));
            }
            loop {
                match state.stream.message().await {
                    Ok(Some(response)) => {
                        if response.canceled() {
                            state.done = true;
                            let reason = if response.compact_revision() > 0 {
                                format!("compacted at revision {}", response.compact_revision())
                            } else {
                                response.cancel_reason().to_lowercase()
                            };
                            tracing::warn!(root = %state.root, what = state.what, reason = %reason, "etcd watch canceled");
                            return Some((
                                Err(MetaError::Unavailable(format!(
                                    "etcd watch of {} under {} canceled: {reason}",
                                    state.what, state.root
                                ))),
                                state,
                            ));
                        }
                        if !response.events().is_empty() {
                            return Some((Ok(()), state));
                        }
                    }
                    Ok(None) => {
                        tracing::debug!(root = %state.root, what = state.what, "etcd watch ended");
                        return None;
                    }
                    Err(err) => {
                        state.done = true;
                        let reason = describe(&err);
                        tracing::warn!(root = %state.root, what = state.what, error = %reason, "etcd watch broke");
                        return Some((
                            Err(MetaError::Unavailable(format!(
                                "etcd watch of {} under {} broke: {reason}",
                                state.what, state.root
                            ))),
                            state,
                        ));
                    }
                }
            }
        });
        Ok(changes.boxed())
    }
}

#[async_trait::async_trait]
impl MetaStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, MetaError> {
        let full = self.full(key);
        let response = self
            .call("get", key, self.inner.read_timeout, move |mut client| {
                let full = full.clone();
                async move { client.get(full, None).await }
            })
            .await?;
        Ok(response.kvs().first().map(|kv| self.entry(kv)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, MetaError> {
        Ok(self.range("list", prefix, 0).await?.0)
    }

    async fn list_limited(&self, prefix: &str, limit: usize) -> Result<Vec<Entry>, MetaError> {
        Ok(self.range_limited("list", prefix, 0, limit).await?.0)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), MetaError> {
        let full = self.full(key);
        self.call("put", key, self.inner.write_timeout, move |mut client| {
            let full = full.clone();
            let value = value.clone();
            async move { client.put(full, value, None).await }
        })
        .await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, MetaError> {
        let full = self.full(key);
        let response = self
            .call("delete", key, self.inner.write_timeout, move |mut client| {
                let full = full.clone();
                async move { client.delete(full, None).await }
            })
            .await?;
        Ok(response.deleted() > 0)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, MetaError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut entries = Vec::with_capacity(keys.len());
        // One txn of gets per chunk: one round trip each (etcd allows 128 ops per txn).
        for chunk in keys.chunks(GETS_PER_TXN) {
            let gets: Vec<TxnOp> = chunk.iter().map(|key| TxnOp::get(self.full(key), None)).collect();
            let txn = Txn::new().and_then(gets);
            let response = self
                .call("get many", &chunk[0], self.inner.read_timeout, move |mut client| {
                    let txn = txn.clone();
                    async move { client.txn(txn).await }
                })
                .await?;
            for answer in response.op_responses() {
                match answer {
                    TxnOpResponse::Get(get) => entries.push(get.kvs().first().map(|kv| self.entry(kv))),
                    _ => {
                        return Err(MetaError::Unavailable(
                            "etcd answered a txn of gets with something else".into(),
                        ))
                    }
                }
            }
        }
        if entries.len() != keys.len() {
            return Err(MetaError::Unavailable(format!(
                "etcd answered {} of {} gets",
                entries.len(),
                keys.len()
            )));
        }
        Ok(entries)
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<Option<u64>, MetaError> {
        let first_key = compares
            .iter()
            .map(Compare::key)
            .chain(ops.iter().map(|op| match op {
                Op::Put { key, .. } | Op::Delete { key } => key.as_str(),
            }))
            .next()
            .unwrap_or("")
            .to_string();
        let compares = compares
            .into_iter()
            .map(|compare| match compare {
                Compare::Version { key, version: None } => EtcdCompare::version(self.full(&key), CompareOp::Equal, 0),
                Compare::Version {
                    key,
                    version: Some(version),
                } => EtcdCompare::mod_revision(
                    self.full(&key),
                    CompareOp::Equal,
                    i64::try_from(version).unwrap_or(i64::MAX),
                ),
                // etcd fails a value compare on an absent key, as the trait says.
                Compare::Value { key, value } => EtcdCompare::value(self.full(&key), CompareOp::Equal, value),
            })
            .collect();
        let ops = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(self.full(&key), value, None),
                Op::Delete { key } => TxnOp::delete(self.full(&key), None),
            })
            .collect();
        self.txn_raw("txn", &first_key, compares, ops).await
    }

    fn kind(&self) -> &'static str {
        "ETCD"
    }
}

// ---------------------------------------------------------------------------------------------
// Lease sessions.

/// Where a [`LeaseSession`] stands, as its owner sees it through [`LeaseSession::state`].
#[derive(Debug, Clone)]
pub enum SessionState {
    /// The keys are in etcd, on this lease, and the last keep-alive succeeded.
    Registered { lease_id: i64 },
    /// Keep-alives fail (etcd unreachable, stream broken) or the lease expired and the session
    /// is registering again; it retries with backoff (200ms..2s) until it succeeds or is closed.
    /// The keys may be gone meanwhile (others then see the worker OFFLINE).
    Reconnecting(String),
    /// The session gave up for good and its task stopped: another instance now holds the worker
    /// id ([`MetaError::IdInUse`]), or etcd rejected the registration. The owner decides (a
    /// worker exits).
    Lost(Arc<MetaError>),
    /// Closed or abandoned by its owner.
    Closed,
}

impl SessionState {
    pub fn is_registered(&self) -> bool {
        matches!(self, SessionState::Registered { .. })
    }
}

/// What a session keeps in etcd.
#[derive(Debug, Clone)]
enum Holder {
    Worker(WorkerRegistration),
    Coordinator(CoordinatorRecord),
}

impl Holder {
    fn live_key(&self) -> String {
        match self {
            Holder::Worker(registration) => keys::live_worker(&registration.worker_id),
            Holder::Coordinator(record) => keys::live_coordinator(&record.coordinator_id),
        }
    }
}

/// A lease kept alive by a background tokio task, with the keys put on it (a worker's or
/// coordinator's liveness key).
///
/// The task renews the lease every third of its TTL, at most once a second (at rest: one etcd
/// request per interval, on one long-lived keep-alive stream). When a renewal fails it reports [`SessionState::Reconnecting`]
/// and retries with backoff (200ms doubling to 2s) forever; when etcd answers that the lease
/// expired it grants a new lease and puts its keys again (a worker first checks that no other
/// instance took its id meanwhile, else [`SessionState::Lost`]).
///
/// [`LeaseSession::close`] revokes the lease (the keys disappear at once);
/// [`LeaseSession::abandon`] and dropping the session stop the renewals without revoking (the
/// keys disappear when the TTL runs out, as after a crash).
pub struct LeaseSession {
    store: EtcdStore,
    key: String,
    task: Option<JoinHandle<()>>,
    state: watch::Receiver<SessionState>,
    state_tx: Arc<watch::Sender<SessionState>>,
    lease_id: Arc<AtomicI64>,
    ttl_seconds: i64,
    /// Until when the lease is certain to be alive: etcd restarts a lease's TTL when it
    /// receives a grant or renewal, so one sent at `t` and acknowledged keeps the lease (and its
    /// keys) until at least `t + ttl`.
    deadline: SharedDeadline,
}

impl std::fmt::Debug for LeaseSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseSession")
            .field("key", &self.key)
            .field("lease_id", &self.lease_id())
            .field("ttl_seconds", &self.ttl_seconds)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl LeaseSession {
    fn spawn(store: EtcdStore, holder: Holder, ttl_seconds: i64, lease_id: i64, requested_at: Instant) -> LeaseSession {
        let (state_tx, state) = watch::channel(SessionState::Registered { lease_id });
        let deadline = SharedDeadline::new(requested_at, ttl_duration(ttl_seconds));
        let state_tx = Arc::new(state_tx);
        let lease = Arc::new(AtomicI64::new(lease_id));
        let key = holder.live_key();
        let task = KeepAliveTask {
            store: store.clone(),
            holder,
            ttl_seconds,
            lease: lease.clone(),
            state: state_tx.clone(),
            key: key.clone(),
            deadline: deadline.clone(),
        };
        LeaseSession {
            store,
            key,
            task: Some(tokio::spawn(task.run())),
            state,
            state_tx,
            lease_id: lease,
            ttl_seconds,
            deadline,
        }
    }

    /// Until when the lease is certain to be alive; a clone follows the renewals.
    pub fn deadline(&self) -> SharedDeadline {
        self.deadline.clone()
    }

    /// A receiver of the session's state (starts [`SessionState::Registered`]).
    pub fn state(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// The lease the keys are on now (it changes when the session registers again).
    pub fn lease_id(&self) -> i64 {
        self.lease_id.load(Ordering::SeqCst)
    }

    /// The lease TTL in seconds, as granted.
    pub fn ttl_seconds(&self) -> i64 {
        self.ttl_seconds
    }

    /// The liveness key this session keeps (relative to the root).
    pub fn key(&self) -> &str {
        &self.key
    }

    async fn stop_task(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Stops the renewals and revokes the lease: the liveness key disappears at once (a clean
    /// shutdown). A failure to revoke is logged (the key then expires with the TTL).
    pub async fn close(mut self) {
        self.stop_task().await;
        let lease_id = self.lease_id();
        match self.store.revoke(lease_id, &self.key).await {
            Ok(()) => tracing::info!(key = %self.key, lease = %lease_hex(lease_id), "revoked etcd lease"),
            Err(err) => tracing::warn!(
                key = %self.key,
                lease = %lease_hex(lease_id),
                error = %err,
                "cannot revoke etcd lease; the key expires with its ttl"
            ),
        }
        self.state_tx.send_replace(SessionState::Closed);
    }

    /// Stops the renewals without revoking (what a crash looks like to others): the liveness key
    /// disappears when the TTL runs out.
    pub fn abandon(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        tracing::info!(key = %self.key, lease = %lease_hex(self.lease_id()), "abandoned etcd lease");
        self.state_tx.send_replace(SessionState::Closed);
    }
}

impl Drop for LeaseSession {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            self.state_tx.send_replace(SessionState::Closed);
        }
    }
}

enum Phase {
    /// Renewing this lease.
    Alive(i64),
    /// The lease is gone: grant a new one and put the keys again.
    Register,
}

struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(2);

    fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The next delay, with ±20% jitter so many clients do not retry in step.
    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay.mul_f64(0.8 + 0.4 * rand::random::<f64>())
    }
}

struct KeepAliveTask {
    store: EtcdStore,
    holder: Holder,
    ttl_seconds: i64,
    lease: Arc<AtomicI64>,
    state: Arc<watch::Sender<SessionState>>,
    key: String,
    deadline: SharedDeadline,
}

impl KeepAliveTask {
    async fn run(self) {
        let interval = keep_alive_interval(self.ttl_seconds);
        let mut phase = Phase::Alive(self.lease.load(Ordering::SeqCst));
        let mut keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
        let mut backoff = Backoff::new();
        // The first renewal is due one interval after the grant.
        tokio::time::sleep(interval).await;
        loop {
            let requested_at = Instant::now();
            match phase {
                Phase::Alive(lease_id) => match self.keep_alive_once(&mut keeper, lease_id).await {
                    Ok(true) => {
                        self.deadline.extend(requested_at, ttl_duration(self.ttl_seconds));
                        backoff.reset();
                        self.set_registered(lease_id);
                        tokio::time::sleep(interval).await;
                    }
                    Ok(false) => {
                        keeper = None;
                        tracing::warn!(key = %self.key, lease = %lease_hex(lease_id), "etcd lease expired, registering again");
                        self.set_reconnecting(format!("lease {} expired", lease_hex(lease_id)));
                        phase = Phase::Register;
                    }
                    Err(reason) => {
                        keeper = None;
                        self.set_reconnecting(reason);
                        tokio::time::sleep(backoff.next()).await;
                    }
                },
                Phase::Register => match self.register_again().await {
                    Ok(lease_id) => {
                        self.deadline.extend(requested_at, ttl_duration(self.ttl_seconds));
                        tracing::info!(key = %self.key, lease = %lease_hex(lease_id), "registered again in etcd on a new lease");
                        backoff.reset();
                        phase = Phase::Alive(lease_id);
                        self.set_registered(lease_id);
                        tokio::time::sleep(interval).await;
                    }
                    Err(err) if err.is_retryable() => {
                        self.set_reconnecting(format!("registering again: {err}"));
                        tokio::time::sleep(backoff.next()).await;
                    }
                    Err(err) => {
                        tracing::error!(key = %self.key, error = %err, "etcd session lost, not registering again");
                        self.state.send_replace(SessionState::Lost(Arc::new(err)));
                        return;
                    }
                },
            }
        }
    }

    fn set_registered(&self, lease_id: i64) {
        let was_registered = self.state.borrow().is_registered();
        if !was_registered {
            tracing::info!(key = %self.key, lease = %lease_hex(lease_id), "etcd session registered again");
        }
        self.state.send_if_modified(|state| match state {
            SessionState::Registered { lease_id: current } if *current == lease_id => false,
            _ => {
                *state = SessionState::Registered { lease_id };
                true
            }
        });
    }

    fn set_reconnecting(&self, reason: String) {
        let was_registered = self.state.borrow().is_registered();
        if was_registered {
            tracing::warn!(key = %self.key, reason = %reason, "etcd session lost contact, reconnecting");
        } else {
            tracing::debug!(key = %self.key, reason = %reason, "etcd session still reconnecting");
        }
        self.state.send_replace(SessionState::Reconnecting(reason));
    }

    /// One renewal: `Ok(true)` renewed, `Ok(false)` the lease is gone, `Err` etcd did not
    /// answer (or the stream broke).
    async fn keep_alive_once(
        &self,
        keeper: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
        lease_id: i64,
    ) -> Result<bool, String> {
        // A renewal must not hang past the lease: at most one interval.
        let timeout = self
            .store
            .inner
            .write_timeout
            .min(keep_alive_interval(self.ttl_seconds));
        let client = self.store.client();
        let renew = async {
            match keeper {
                None => {
                    // Opening the stream sends a first keep-alive and checks its answer.
                    let mut client = client;
                    match client.lease_keep_alive(lease_id).await {
                        Ok(pair) => {
                            *keeper = Some(pair);
                            Ok(true)
                        }
                        Err(err) if is_lease_not_found(&err) => Ok(false),
                        Err(err) => Err(describe(&err)),
                    }
                }
                Some((lease_keeper, stream)) => {
                    lease_keeper.keep_alive().await.map_err(|err| describe(&err))?;
                    match stream.message().await {
                        Ok(Some(response)) => Ok(response.ttl() > 0),
                        Ok(None) => Err("keep-alive stream ended".to_string()),
                        Err(err) => Err(describe(&err)),
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, renew).await {
            Ok(result) => result,
            Err(_) => Err(format!("keep-alive timed out after {timeout:?}")),
        }
    }

    async fn register_again(&self) -> Result<i64, MetaError> {
        match &self.holder {
            Holder::Worker(registration) => {
                self.store
                    .claim_worker(registration, self.ttl_seconds, ClaimRule::Renew, Some(&self.lease))
                    .await
            }
            Holder::Coordinator(record) => {
                self.store
                    .claim_coordinator(record, self.ttl_seconds, Some(&self.lease))
                    .await
            }
        }
    }
}

fn describe(err: &etcd_client::Error) -> String {
    match classify(err) {
        Failure::Retryable { reason, .. } | Failure::Fatal(reason) => reason,
        Failure::TimedOut => "timed out".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Membership.

/// `hoard.worker.membership.manager.type=ETCD`: registrations under `workers/` joined with the
/// live keys under `live/workers/`, both read at one etcd revision.
#[derive(Debug, Clone)]
pub struct EtcdMembership {
    store: Arc<EtcdStore>,
}

impl EtcdMembership {
    pub fn new(store: Arc<EtcdStore>) -> EtcdMembership {
        EtcdMembership { store }
    }

    pub fn store(&self) -> &Arc<EtcdStore> {
        &self.store
    }

    /// `hoard process remove-worker`: deletes `workers/<id>` (and, with `force`, its live key)
    /// in one transaction and returns the removed registration. [`MetaError::UnknownWorker`]
    /// when it is not registered; [`MetaError::WorkerOnline`] when its live key exists and not
    /// `force` (nothing is deleted then).
    pub async fn remove_worker(&self, worker_id: &str, force: bool) -> Result<WorkerRegistration, MetaError> {
        let store = &self.store;
        let key = keys::worker(worker_id);
        let live_key = keys::live_worker(worker_id);
        for _ in 0..CAS_ROUNDS {
            let Some(entry) = store.get(&key).await? else {
                return Err(MetaError::UnknownWorker(worker_id.to_string()));
            };
            let registration = WorkerRegistration::decode(&entry)?;
            let live = store.get(&live_key).await?;
            let mut compares = vec![EtcdCompare::mod_revision(
                store.full(&key),
                CompareOp::Equal,
                i64::try_from(entry.version).unwrap_or(i64::MAX),
            )];
            let mut ops = vec![TxnOp::delete(store.full(&key), None)];
            match &live {
                Some(live) if !force => {
                    let address = LiveWorker::decode(live)
                        .map(|holder| holder.address)
                        .unwrap_or_else(|_| registration.address().to_string());
                    return Err(MetaError::WorkerOnline {
                        worker_id: worker_id.to_string(),
                        address,
                    });
                }
                Some(live) => {
                    compares.push(EtcdCompare::mod_revision(
                        store.full(&live_key),
                        CompareOp::Equal,
                        i64::try_from(live.version).unwrap_or(i64::MAX),
                    ));
                    ops.push(TxnOp::delete(store.full(&live_key), None));
                }
                None => compares.push(EtcdCompare::version(store.full(&live_key), CompareOp::Equal, 0)),
            }
            if store.txn_raw("remove worker", &key, compares, ops).await?.is_some() {
                tracing::info!(worker_id, address = %registration.address(), force, "removed worker registration");
                return Ok(registration);
            }
            tracing::debug!(worker_id, "worker records changed while removing, trying again");
        }
        Err(MetaError::Unavailable(format!(
            "remove worker {worker_id}: its records kept changing during {CAS_ROUNDS} attempts"
        )))
    }
}

#[async_trait::async_trait]
impl Membership for EtcdMembership {
    async fn members(&self) -> Result<Vec<MemberRecord>, MetaError> {
        let (registrations, revision) = self.store.range("members", keys::WORKERS, 0).await?;
        let (live, _) = self.store.range("members", keys::LIVE_WORKERS, revision).await?;
        let live: HashSet<String> = live
            .iter()
            .filter_map(|entry| entry.key.strip_prefix(keys::LIVE_WORKERS).map(str::to_string))
            .collect();
        let registrations = registrations
            .iter()
            .filter_map(|entry| match WorkerRegistration::decode(entry) {
                Ok(registration) => Some(registration),
                Err(err) => {
                    tracing::warn!(key = %entry.key, error = %err, "skipping unreadable worker registration");
                    None
                }
            })
            .collect();
        Ok(members_from_records(registrations, |id| live.contains(id)))
    }

    async fn coordinators(&self) -> Result<Vec<CoordinatorRecord>, MetaError> {
        let (entries, _) = self.store.range("coordinators", keys::LIVE_COORDINATORS, 0).await?;
        Ok(entries
            .iter()
            .filter_map(|entry| match CoordinatorRecord::decode(entry) {
                Ok(record) => Some(record),
                Err(err) => {
                    tracing::warn!(key = %entry.key, error = %err, "skipping unreadable coordinator record");
                    None
                }
            })
            .collect())
    }

    /// Watches `workers/` and `live/workers/`. The watch is in place when this returns, so a
    /// caller that lists after calling `watch()` misses no change. Each batch of events yields
    /// `Ok(())`; a canceled (e.g. compacted) watch or a broken stream yields one `Err` and ends.
    async fn watch(&self) -> Result<Option<ChangeStream>, MetaError> {
        let changes = self
            .store
            .watch_prefixes(&[keys::WORKERS, keys::LIVE_WORKERS], "worker membership")
            .await?;
        Ok(Some(changes))
    }

    fn kind(&self) -> &'static str {
        "ETCD"
    }
}

struct WatchState {
    stream: WatchStream,
    /// Events arrived while the watches were being created: report them first.
    pending: bool,
    done: bool,
    root: String,
    what: &'static str,
}

/// Opens one watch stream with a watch per prefix and waits until etcd confirmed each.
async fn open_watch(mut client: Client, prefixes: Vec<String>) -> Result<(WatchStream, bool), etcd_client::Error> {
    let mut prefixes = prefixes.into_iter();
    let Some(first) = prefixes.next() else {
        return Err(etcd_client::Error::WatchError("nothing to watch".into()));
    };
    let mut stream = client.watch(first, Some(WatchOptions::new().with_prefix())).await?;
    let mut wanted = 1;
    for prefix in prefixes {
        stream.watch(prefix, Some(WatchOptions::new().with_prefix())).await?;
        wanted += 1;
    }
    let mut created = 0;
    let mut pending = false;
    while created < wanted {
        match stream.message().await? {
            Some(response) => {
                if response.canceled() {
                    return Err(etcd_client::Error::WatchError(format!(
                        "watch canceled at creation: {}",
                        response.cancel_reason()
                    )));
                }
                if response.created() {
                    created += 1;
                }
                pending |= !response.events().is_empty();
            }
            None => return Err(etcd_client::Error::WatchError("watch stream ended at creation".into())),
        }
    }
    Ok((stream, pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_stripped() {
        assert_eq!(full_key("/hoard/c1/", "workers/w1"), "/hoard/c1/workers/w1");
        assert_eq!(
            relative_key("/hoard/c1/", b"/hoard/c1/workers/w1").as_deref(),
            Some("workers/w1")
        );
        assert_eq!(relative_key("/hoard/c1/", b"/hoard/c2/workers/w1"), None);
        assert_eq!(relative_key("/hoard/c1/", b"/hoard/c1/").as_deref(), Some(""));
    }

    #[test]
    fn prefix_range_end_follows_etcd() {
        assert_eq!(prefix_range_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn lease_ttl_rounds_up_to_whole_seconds_at_least_two() {
        assert_eq!(lease_ttl_seconds(Duration::from_millis(0)), 2);
        assert_eq!(lease_ttl_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(lease_ttl_seconds(Duration::from_secs(2)), 2);
        assert_eq!(lease_ttl_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(lease_ttl_seconds(Duration::from_secs(30)), 30);
        assert_eq!(lease_ttl_seconds(Duration::from_secs(u64::MAX)), i64::MAX);
    }

    #[test]
    fn keep_alive_interval_is_a_third_of_the_ttl() {
        assert_eq!(keep_alive_interval(30), Duration::from_secs(10));
        assert_eq!(keep_alive_interval(3), Duration::from_secs(1));
        assert_eq!(keep_alive_interval(4), Duration::from_millis(1333));
        assert_eq!(keep_alive_interval(2), Duration::from_secs(1));
        assert_eq!(keep_alive_interval(i64::MAX), Duration::from_millis(u64::MAX / 3));
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        assert_eq!(retry_delay(0), Duration::from_millis(50));
        assert_eq!(retry_delay(1), Duration::from_millis(100));
        assert_eq!(retry_delay(4), Duration::from_millis(800));
        assert_eq!(retry_delay(5), Duration::from_secs(1));
        assert_eq!(retry_delay(40), Duration::from_secs(1));
    }

    #[test]
    fn backoff_doubles_to_two_seconds() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..6).map(|_| backoff.next()).collect();
        for (delay, nominal) in delays.iter().zip([200u64, 400, 800, 1600, 2000, 2000]) {
            let nominal = Duration::from_millis(nominal);
            assert!(
                *delay >= nominal.mul_f64(0.8) && *delay <= nominal.mul_f64(1.2),
                "{delay:?} vs {nominal:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next() <= Duration::from_millis(240));
    }

    fn registration(instance: &str, port: u16) -> WorkerRegistration {
        WorkerRegistration {
            worker_id: "w1".into(),
            cluster_name: hoard_common::replica::default_cluster_name(),
            host: "10.0.0.1".into(),
            rpc_port: port,
            capacity_bytes: 1,
            version: "0.1.0".into(),
            start_time_ms: 1,
            instance: instance.into(),
        }
    }

    fn holder(instance: &str, address: &str) -> LiveWorker {
        LiveWorker {
            worker_id: "w1".into(),
            address: address.into(),
            instance: instance.into(),
            start_time_ms: 1,
        }
    }

    #[test]
    fn claim_rules() {
        let mine = registration("i1", 29999);
        // Same instance: never a conflict.
        assert!(!claim_conflicts(ClaimRule::Start, &holder("i1", "10.0.0.9:1"), &mine));
        assert!(!claim_conflicts(ClaimRule::Renew, &holder("i1", "10.0.0.9:1"), &mine));
        // Another instance at the same address: a restart when starting, a takeover when renewing.
        assert!(!claim_conflicts(
            ClaimRule::Start,
            &holder("i2", "10.0.0.1:29999"),
            &mine
        ));
        assert!(claim_conflicts(
            ClaimRule::Renew,
            &holder("i2", "10.0.0.1:29999"),
            &mine
        ));
        // Another instance elsewhere: a second process claiming the id.
        assert!(claim_conflicts(
            ClaimRule::Start,
            &holder("i2", "10.0.0.2:29999"),
            &mine
        ));
        assert!(claim_conflicts(
            ClaimRule::Renew,
            &holder("i2", "10.0.0.2:29999"),
            &mine
        ));
    }

    #[test]
    fn classification_of_statuses() {
        let leader = classify_status(CODE_UNAVAILABLE, "etcdserver: leader changed".into());
        assert!(matches!(
            leader,
            Failure::Retryable {
                maybe_applied: true,
                ..
            }
        ));
        let refused = classify_status(CODE_UNAVAILABLE, "tcp connect error: connection refused".into());
        assert!(matches!(
            refused,
            Failure::Retryable {
                maybe_applied: false,
                ..
            }
        ));
        let broken = classify_status(CODE_UNKNOWN, "h2 protocol error: connection reset".into());
        assert!(matches!(broken, Failure::Retryable { .. }));
        let denied = classify_status(7, "etcdserver: permission denied".into());
        assert!(matches!(denied, Failure::Fatal(reason) if reason.contains("permission denied")));
        let too_large = classify_status(3, "etcdserver: request is too large".into());
        assert!(matches!(too_large, Failure::Fatal(_)));
        let compacted = classify_status(11, "etcdserver: mvcc: required revision has been compacted".into());
        assert!(matches!(compacted, Failure::Fatal(_)));
        assert!(is_lease_not_found(&etcd_client::Error::LeaseKeepAliveError(
            "lease not found".into()
        )));
        assert!(!is_lease_not_found(&etcd_client::Error::LeaseKeepAliveError(
            "channel closed".into()
        )));
    }
}
