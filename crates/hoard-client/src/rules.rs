//! How a client learns the replica rules (docs/replicas.md#how-clients-learn-the-rules): read
//! at start, then again every `hoard.user.replica.rules.refresh.interval` by a background task
//! that ends when the [`RuleSource`] is dropped.
//!
//! Where from: when the rules live in etcd (`hoard.coordinator.job.meta.store.type=ETCD`) and
//! the client has etcd endpoints, straight from etcd (watched, and polled at the interval), and
//! from the coordinators when etcd does not answer; otherwise from the coordinators
//! (`GET /api/v1/replica-rules`). When no source answers, the last rules read stay in use (one
//! warning per outage); before any were read, the default rule (`/` with
//! `hoard.user.file.replication.min` copies).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hoard_common::replica::ReplicaRuleSet;
use hoard_config::{EtcdConfig, JobStoreType, SiteConfig};
use hoard_meta::etcd::EtcdStore;
use hoard_meta::replica_rules::ReplicaRuleStore;
use parking_lot::RwLock;

use crate::{ClientError, CoordinatorClient};

/// The replica rules in effect for this client, kept current in the background.
pub struct RuleSource {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    /// Follows etcd's watch of the rules, when they live there.
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RuleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSource")
            .field("reads", &self.reads())
            .field("interval", &self.shared.interval)
            .finish_non_exhaustive()
    }
}

struct Shared {
    current: RwLock<Arc<ReplicaRuleSet>>,
    origin: Origin,
    default_count: u32,
    interval: Duration,
    /// Successful reads so far.
    reads: AtomicU64,
    /// The last read failed: warned once, quiet until a read succeeds again.
    degraded: AtomicBool,
}

struct Origin {
    coordinator: CoordinatorClient,
    /// The rules' etcd, when they live there and this client can reach it.
    etcd: Option<LazyRuleStore>,
}

struct LazyRuleStore {
    config: EtcdConfig,
    connect_timeout: Duration,
    store: tokio::sync::OnceCell<(Arc<EtcdStore>, ReplicaRuleStore)>,
}

impl LazyRuleStore {
    async fn connected(&self) -> Result<&(Arc<EtcdStore>, ReplicaRuleStore), hoard_meta::MetaError> {
        self.store
            .get_or_try_init(|| async {
                let etcd = Arc::new(EtcdStore::connect_within(&self.config, self.connect_timeout).await?);
                let rules = ReplicaRuleStore::new(Arc::clone(&etcd) as Arc<dyn hoard_meta::MetaStore>);
                Ok((etcd, rules))
            })
            .await
    }

    async fn get(&self) -> Result<&ReplicaRuleStore, hoard_meta::MetaError> {
        Ok(&self.connected().await?.1)
    }
}

impl RuleSource {
    /// Reads the rules once (within the client's timeouts; on failure it starts with the
    /// default rule) and starts following them. Needs a tokio runtime.
    pub async fn start(config: &SiteConfig) -> Result<RuleSource, ClientError> {
        let etcd = (config.jobs.store_type == JobStoreType::Etcd && !config.etcd.endpoints.is_empty()).then(|| {
            LazyRuleStore {
                config: config.etcd.clone(),
                connect_timeout: config.user.membership_connect_timeout,
                store: tokio::sync::OnceCell::new(),
            }
        });
        let default_count = config.user.replication_min_default;
        let shared = Arc::new(Shared {
            current: RwLock::new(Arc::new(ReplicaRuleSet::with_default(default_count))),
            origin: Origin {
                coordinator: CoordinatorClient::new(config)?,
                etcd,
            },
            default_count,
            interval: config.user.replica_rules_refresh_interval,
            reads: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
        });
        shared.refresh().await;
        let task = tokio::spawn(follow(Arc::downgrade(&shared)));
        let watcher = shared
            .origin
            .etcd
            .is_some()
            .then(|| tokio::spawn(watch(Arc::downgrade(&shared))));
        Ok(RuleSource { shared, task, watcher })
    }

    /// The rules in effect now.
    pub fn current(&self) -> Arc<ReplicaRuleSet> {
        Arc::clone(&self.shared.current.read())
    }

    /// Reads the rules now; on failure the rules in effect stay.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        self.shared.read().await.map(|set| self.shared.install(set))
    }

    /// Successful reads since start.
    pub fn reads(&self) -> u64 {
        self.shared.reads.load(Ordering::Relaxed)
    }
}

impl Drop for RuleSource {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(watcher) = &self.watcher {
            watcher.abort();
        }
    }
}

/// Reads the rules again at each change etcd reports, so a change reaches the client within
/// moments rather than an interval; a watch that breaks is opened again after an interval (the
/// polling goes on meanwhile).
async fn watch(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else { return };
        let interval = strong.interval;
        let changes = match strong.origin.etcd.as_ref().map(LazyRuleStore::connected) {
            Some(connected) => match connected.await {
                Ok((etcd, _)) => etcd
                    .watch_prefixes(&[hoard_meta::replica_rules::keys::RULES], "replica rules")
                    .await
                    .ok(),
                Err(_) => None,
            },
            None => return,
        };
        drop(strong);
        if let Some(mut changes) = changes {
            use futures::StreamExt;
            while let Some(change) = changes.next().await {
                let Some(strong) = shared.upgrade() else { return };
                if change.is_err() {
                    break;
                }
                strong.refresh().await;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Reads again every interval while the source lives.
async fn follow(shared: std::sync::Weak<Shared>) {
    let Some(interval) = shared.upgrade().map(|shared| shared.interval) else {
        return;
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        shared.refresh().await;
    }
}

impl Shared {
    async fn refresh(&self) {
        match self.read().await {
            Ok(set) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("replica rules readable again");
                }
                self.install(set);
            }
            Err(err) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %err, "cannot read the replica rules; keeping the rules in effect");
                } else {
                    tracing::debug!(error = %err, "cannot read the replica rules");
                }
            }
        }
    }

    fn install(&self, set: ReplicaRuleSet) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut current = self.current.write();
        if **current != set {
            tracing::debug!(rules = set.listed().rules.len(), "replica rules changed");
            *current = Arc::new(set);
        }
    }

    /// From etcd when the rules live there, else (or when etcd fails) from the coordinators.
    async fn read(&self) -> Result<ReplicaRuleSet, ClientError> {
        if let Some(etcd) = &self.origin.etcd {
            let read = async { etcd.get().await?.rule_set(self.default_count).await };
            match read.await {
                Ok(set) => return Ok(set),
                Err(err) => {
                    tracing::debug!(error = %err, "cannot read the replica rules from etcd; asking the coordinator")
                }
            }
        }
        let listed = self.origin.coordinator.replica_rules().await?;
        Ok(ReplicaRuleSet::new(listed.rules, self.default_count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_common::HoardPath;

    /// A config whose coordinator is a port nothing listens on.
    fn unreachable_config(properties: &[(&str, &str)]) -> SiteConfig {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or(9);
        let mut all: std::collections::BTreeMap<String, String> = properties
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        all.insert("hoard.coordinator.addresses".into(), format!("127.0.0.1:{port}"));
        all.insert("hoard.user.network.connect.timeout".into(), "200ms".into());
        all.insert("hoard.user.replica.rules.refresh.interval".into(), "50ms".into());
        SiteConfig::from_properties(std::path::Path::new("/nonexistent"), &all, None)
            .unwrap()
            .config
    }

    #[tokio::test]
    async fn without_a_coordinator_the_default_rule_applies() {
        let config = unreachable_config(&[("hoard.user.file.replication.min", "2")]);
        let source = RuleSource::start(&config).await.unwrap();
        let path = HoardPath::parse("/any/file").unwrap();
        assert_eq!(source.current().count_for(&path), 2);
        assert!(source.refresh().await.is_err());
        assert_eq!(source.reads(), 0);
        assert_eq!(source.current().count_for(&path), 2);
    }

    #[tokio::test]
    async fn the_background_task_ends_with_the_source() {
        let source = RuleSource::start(&unreachable_config(&[])).await.unwrap();
        let weak = Arc::downgrade(&source.shared);
        drop(source);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while weak.upgrade().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the refresh task outlived its source"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
