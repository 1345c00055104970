//! Reads without the control plane (docs/client.md, "When the membership source is down").
//! A client that cannot reach its membership source within
//! `hoard.user.membership.connect.timeout` reads with the coordinators' last-known list (ETCD
//! membership), then with the list it cached on disk at its last success
//! (`<work dir>/client/membership.json`); neither may be older than
//! `hoard.user.membership.cache.max.age`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hoard_config::{keys, EtcdConfig, MembershipType, SiteConfig, WorkerAddress};
use hoard_meta::etcd::{EtcdMembership, EtcdStore};
use hoard_meta::{ChangeStream, CoordinatorRecord, Liveness, MemberRecord, Membership, MetaError};
use serde::{Deserialize, Serialize};

use crate::coordinator::{members_of, CoordinatorClient};

/// The cache file's name under `<work dir>/client/`.
pub const CACHE_FILE: &str = "membership.json";
/// Larger files are not read (a list of 100,000 workers is ~20MB).
const MAX_CACHE_BYTES: u64 = 64 << 20;
/// The file layout; a file of another layout is not used.
const CACHE_FORMAT: u32 = 1;

/// `ETCD` membership that connects on first use, within the client's membership connect
/// timeout, and again after a failed attempt: a client can be created (and read with a
/// fallback list) while etcd is down.
#[derive(Debug)]
pub(crate) struct LazyEtcdMembership {
    config: EtcdConfig,
    connect_timeout: Duration,
    connected: tokio::sync::OnceCell<EtcdMembership>,
}

impl LazyEtcdMembership {
    pub(crate) fn new(config: EtcdConfig, connect_timeout: Duration) -> LazyEtcdMembership {
        LazyEtcdMembership {
            config,
            connect_timeout,
            connected: tokio::sync::OnceCell::new(),
        }
    }

    async fn get(&self) -> Result<&EtcdMembership, MetaError> {
        self.connected
            .get_or_try_init(|| async {
                let store = EtcdStore::connect_within(&self.config, self.connect_timeout).await?;
                Ok(EtcdMembership::new(Arc::new(store)))
            })
            .await
    }
}

#[async_trait::async_trait]
impl Membership for LazyEtcdMembership {
    async fn members(&self) -> Result<Vec<MemberRecord>, MetaError> {
        self.get().await?.members().await
    }

    async fn coordinators(&self) -> Result<Vec<CoordinatorRecord>, MetaError> {
        self.get().await?.coordinators().await
    }

    async fn watch(&self) -> Result<Option<ChangeStream>, MetaError> {
        self.get().await?.watch().await
    }

    fn kind(&self) -> &'static str {
        "ETCD"
    }
}

/// Where a client goes when its membership source does not answer.
#[derive(Debug)]
pub(crate) struct Fallback {
    /// How long the membership source, and then the coordinators, get to answer.
    pub(crate) timeout: Duration,
    max_age: Duration,
    /// ETCD membership: the coordinators, asked for the list they last read from etcd.
    coordinators: Option<CoordinatorClient>,
    cache: Option<DiskCache>,
}

/// A fallback list and where it came from (for the warning).
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) members: Vec<MemberRecord>,
    pub(crate) from: String,
}

impl Fallback {
    /// No fallback: a client built over a membership of the caller's.
    pub(crate) fn none(timeout: Duration) -> Fallback {
        Fallback {
            timeout,
            max_age: Duration::ZERO,
            coordinators: None,
            cache: None,
        }
    }

    pub(crate) fn for_config(config: &SiteConfig, coordinators: Option<CoordinatorClient>) -> Fallback {
        let user = &config.user;
        let source = match config.worker.membership_type {
            MembershipType::Static => None,
            MembershipType::Coordinator => Some(format!(
                "COORDINATOR cluster={} coordinators={}",
                config.cluster_name,
                join(&config.coordinator.client_addresses())
            )),
            MembershipType::Etcd => Some(format!(
                "ETCD cluster={} endpoints={} root={}",
                config.cluster_name,
                config.etcd.endpoints.join(","),
                config.etcd.root
            )),
        };
        let cache = source
            .filter(|_| !user.membership_cache_max_age.is_zero())
            .map(|source| DiskCache {
                path: cache_path(&config.work_dir),
                source,
                max_age: user.membership_cache_max_age,
            });
        Fallback {
            timeout: user.membership_connect_timeout,
            max_age: user.membership_cache_max_age,
            coordinators,
            cache,
        }
    }

    /// Whether there is anywhere to fall back to.
    pub(crate) fn is_configured(&self) -> bool {
        self.coordinators.is_some() || self.cache.is_some()
    }

    pub(crate) fn cache(&self) -> Option<&DiskCache> {
        self.cache.as_ref()
    }

    /// The coordinators' last-known list, else the cached one; `Err` holds why each was not
    /// usable.
    pub(crate) async fn list(&self, kind: &str) -> Result<Found, Vec<String>> {
        let mut reasons = Vec::new();
        if let Some(coordinators) = &self.coordinators {
            match self.ask_coordinators(coordinators, kind).await {
                Ok(found) => return Ok(found),
                Err(reason) => reasons.push(reason),
            }
        }
        if let Some(cache) = &self.cache {
            let cache = cache.clone();
            let loaded = tokio::task::spawn_blocking(move || cache.load())
                .await
                .unwrap_or_else(|err| Err(format!("cannot read the cached worker list: {err}")));
            match loaded {
                Ok(found) => return Ok(found),
                Err(reason) => reasons.push(reason),
            }
        }
        Err(reasons)
    }

    async fn ask_coordinators(&self, coordinators: &CoordinatorClient, kind: &str) -> Result<Found, String> {
        let nodes = match tokio::time::timeout(self.timeout, coordinators.nodes()).await {
            Ok(Ok(nodes)) => nodes,
            Ok(Err(err)) => return Err(format!("no coordinator list ({err})")),
            Err(_) => {
                return Err(format!(
                    "no coordinator list (none of {} answered within {:?})",
                    coordinators.addresses(),
                    self.timeout
                ))
            }
        };
        let address = coordinators.address().to_string();
        if nodes.membership != kind {
            return Err(format!(
                "no coordinator list (coordinator {address} uses {} membership, this client {kind})",
                nodes.membership
            ));
        }
        let age = Duration::from_millis(nodes.age_ms);
        if !self.max_age.is_zero() && age > self.max_age {
            return Err(format!(
                "no coordinator list (coordinator {address}'s list is {} old, older than {}={})",
                human_duration(age),
                keys::USER_MEMBERSHIP_CACHE_MAX_AGE,
                hoard_config::format_duration(self.max_age)
            ));
        }
        let from = if nodes.stale {
            format!(
                "coordinator {address}'s last-known worker list ({} old)",
                human_duration(age)
            )
        } else {
            format!("coordinator {address}'s worker list")
        };
        Ok(Found {
            members: members_of(nodes.workers),
            from,
        })
    }
}

/// `<work dir>/client/membership.json`.
pub fn cache_path(work_dir: &Path) -> PathBuf {
    work_dir.join("client").join(CACHE_FILE)
}

/// The worker list a client saved at its last successful listing.
#[derive(Debug, Clone)]
pub(crate) struct DiskCache {
    path: PathBuf,
    /// Which cluster and membership source the list is from: a file written for another one
    /// (the same work dir with another conf) is not used.
    source: String,
    max_age: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheFile {
    format: u32,
    source: String,
    saved_at_ms: u64,
    workers: Vec<CachedWorker>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedWorker {
    ring_identity: String,
    worker_id: Option<String>,
    address: String,
    online: bool,
    capacity_bytes: Option<u64>,
    #[serde(default)]
    cluster: Option<String>,
}

impl DiskCache {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `members` atomically: a temp file in the same directory renamed over the old
    /// one, so a reader (another client process) never sees half a file. Not synced: a file
    /// a crash leaves unreadable is ignored, and the next success writes it again.
    pub(crate) fn save(&self, members: &[MemberRecord]) -> std::io::Result<()> {
        use std::io::Write as _;
        let file = CacheFile {
            format: CACHE_FORMAT,
            source: self.source.clone(),
            saved_at_ms: hoard_meta::now_millis(),
            workers: members
                .iter()
                .map(|member| CachedWorker {
                    ring_identity: member.ring_identity.clone(),
                    worker_id: member.worker_id.clone(),
                    address: member.address.to_string(),
                    online: member.liveness == Liveness::Online,
                    capacity_bytes: member.capacity_bytes,
                    cluster: member.cluster.clone(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        let dir = self
            .path
            .parent()
            .ok_or_else(|| std::io::Error::other("the cache path has no directory"))?;
        std::fs::create_dir_all(dir)?;
        // Created 0600 by tempfile: the list is not secret, but nobody else needs to write it.
        let mut temp = tempfile::Builder::new()
            .prefix(".membership.")
            .suffix(".tmp")
            .tempfile_in(dir)?;
        temp.write_all(&bytes)?;
        temp.persist(&self.path).map_err(|err| err.error)?;
        Ok(())
    }

    /// The cached list when it is usable; otherwise why not.
    pub(crate) fn load(&self) -> Result<Found, String> {
        let path = self.path.display();
        let unusable = |reason: String| format!("no cached list ({path}: {reason})");
        let file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(unusable("none saved yet".into()));
            }
            Err(err) => return Err(unusable(err.to_string())),
        };
        let length = file.metadata().map_err(|err| unusable(err.to_string()))?.len();
        if length > MAX_CACHE_BYTES {
            return Err(unusable(format!("{length} bytes, more than {MAX_CACHE_BYTES}")));
        }
        let cached: CacheFile = serde_json::from_reader(std::io::BufReader::new(file))
            .map_err(|err| unusable(format!("unreadable: {err}")))?;
        if cached.format != CACHE_FORMAT {
            return Err(unusable(format!("format {}, expected {CACHE_FORMAT}", cached.format)));
        }
        if cached.source != self.source {
            return Err(unusable(format!(
                "saved for another cluster ({}; this client: {})",
                cached.source, self.source
            )));
        }
        let age = Duration::from_millis(hoard_meta::now_millis().saturating_sub(cached.saved_at_ms));
        if age > self.max_age {
            return Err(unusable(format!(
                "{} old, older than {}={}",
                human_duration(age),
                keys::USER_MEMBERSHIP_CACHE_MAX_AGE,
                hoard_config::format_duration(self.max_age)
            )));
        }
        let mut members = Vec::with_capacity(cached.workers.len());
        for worker in cached.workers {
            let address: WorkerAddress = worker
                .address
                .parse()
                .map_err(|reason| unusable(format!("worker address {:?}: {reason}", worker.address)))?;
            members.push(MemberRecord {
                ring_identity: worker.ring_identity,
                worker_id: worker.worker_id,
                address,
                liveness: if worker.online {
                    Liveness::Online
                } else {
                    Liveness::Offline
                },
                capacity_bytes: worker.capacity_bytes,
                used_bytes: None,
                cluster: worker.cluster,
            });
        }
        Ok(Found {
            members,
            from: format!("the worker list cached at {path} ({} old)", human_duration(age)),
        })
    }
}

fn join(addresses: &[WorkerAddress]) -> String {
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// `850ms`, `12s`, `5min`, `3h`, `8d`: the unit a person reads an age in.
pub(crate) fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0 => format!("{}ms", duration.as_millis()),
        1..=119 => format!("{seconds}s"),
        120..=7199 => format!("{}min", seconds / 60),
        7200..=172_799 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, port: u16, online: bool) -> MemberRecord {
        MemberRecord {
            ring_identity: id.to_string(),
            worker_id: Some(id.to_string()),
            address: WorkerAddress {
                host: "127.0.0.1".into(),
                port,
            },
            liveness: if online { Liveness::Online } else { Liveness::Offline },
            capacity_bytes: Some(1 << 30),
            used_bytes: None,
            cluster: None,
        }
    }

    fn cache(dir: &Path, source: &str, max_age: Duration) -> DiskCache {
        DiskCache {
            path: cache_path(dir),
            source: source.into(),
            max_age,
        }
    }

    #[test]
    fn a_saved_list_reads_back_and_is_not_world_writable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path(), "ETCD x", Duration::from_secs(60));
        assert!(cache.load().unwrap_err().contains("none saved yet"));
        let members = vec![member("a", 1, true), member("b", 2, false)];
        cache.save(&members).unwrap();
        let found = cache.load().unwrap();
        assert_eq!(found.members, members);
        assert!(found.from.contains("membership.json"), "{}", found.from);
        let mode = std::fs::metadata(cache.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o002, 0, "world-writable: {mode:o}");
        // Saved again over the old file; no temp files are left behind.
        cache.save(&members[..1]).unwrap();
        assert_eq!(cache.load().unwrap().members.len(), 1);
        assert_eq!(std::fs::read_dir(dir.path().join("client")).unwrap().count(), 1);
    }

    #[test]
    fn another_clusters_old_or_damaged_list_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        cache(dir.path(), "ETCD x", Duration::from_secs(60))
            .save(&[member("a", 1, true)])
            .unwrap();
        let other = cache(dir.path(), "ETCD y", Duration::from_secs(60)).load().unwrap_err();
        assert!(other.contains("saved for another cluster"), "{other}");

        let text = std::fs::read_to_string(cache_path(dir.path())).unwrap();
        let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
        file["savedAtMs"] = serde_json::json!(hoard_meta::now_millis() - 8 * 86_400_000);
        std::fs::write(cache_path(dir.path()), file.to_string()).unwrap();
        let old = cache(dir.path(), "ETCD x", Duration::from_secs(7 * 86_400))
            .load()
            .unwrap_err();
        assert!(
            old.contains("8d old, older than hoard.user.membership.cache.max.age=7d"),
            "{old}"
        );

        std::fs::write(cache_path(dir.path()), &text[..text.len() / 2]).unwrap();
        let damaged = cache(dir.path(), "ETCD x", Duration::from_secs(60)).load().unwrap_err();
        assert!(damaged.contains("unreadable"), "{damaged}");
    }

    #[test]
    fn ages_read_in_one_unit() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_secs(12)), "12s");
        assert_eq!(human_duration(Duration::from_secs(300)), "5min");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3h");
        assert_eq!(human_duration(Duration::from_secs(8 * 86_400)), "8d");
    }
}
