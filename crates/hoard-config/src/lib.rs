//! Hoard's configuration: `hoard-site.properties` (Java properties) and `workers` in one conf
//! directory, parsed once into [`SiteConfig`]. No other crate reads files or the environment
//! for settings; they take the parts of `SiteConfig` they need by argument.
//!
//! The user-facing reference (every key, the size and duration syntax, substitution, relative
//! paths, the workers file) is docs/configuration.md.
//!
//! CONTRACT (other crates code against these names; keep them stable):

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use hoard_common::replica::ReplicaSelectionPolicy;
use hoard_common::HoardPath;

pub mod keys;
mod machine;
mod network;
mod props;
mod subst;
mod units;
mod workers;
pub use workers::parse_host;

use machine::default_hostname;
#[cfg(test)]
use machine::resolve_work_dir;
pub use machine::{default_work_dir, Environment, SYSTEM_WORK_DIR};
pub use network::{NetworkConfig, MAX_CONNECTIONS};

pub use units::{format_duration, format_size, parse_duration, parse_size};

pub const SITE_FILE_NAME: &str = "hoard-site.properties";
pub const WORKERS_FILE_NAME: &str = "workers";
pub const CONF_DIR_ENV: &str = "HOARD_CONF_DIR";

/// The conf dir used when neither `--conf` nor `$HOARD_CONF_DIR` is given.
pub const DEFAULT_CONF_DIR: &str = "./conf";

/// Largest `hoard.worker.page.store.page.size`.
pub const MAX_PAGE_SIZE: u64 = 64 << 20;
/// Largest `hoard.user.worker.selection.policy.consistent.hash.virtual.node.count.per.worker`.
pub const MAX_VIRTUAL_NODES: u32 = 100_000;
/// Bounds of `hoard.worker.http.max.header.size`.
pub const MIN_HEADER_SIZE: u64 = 8 << 10;
pub const MAX_HEADER_SIZE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The cause is in the message, not a `source` too (error chains print each cause once).
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("cannot parse {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid value for {key}: {value:?}: {reason}")]
    InvalidValue { key: String, value: String, reason: String },
    #[error("{path} line {line}: invalid worker address {value:?}: {reason}")]
    InvalidWorker {
        path: PathBuf,
        line: usize,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashProvider {
    /// Every worker gets the configured number of virtual nodes.
    Default,
    /// Virtual nodes = capacity / 1GiB.
    Capacity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipType {
    /// The workers listed in `conf/workers`; liveness by probing.
    Static,
    /// Workers register and heartbeat to the coordinator, which keeps the records in its
    /// embedded metastore.
    Coordinator,
    /// Registrations and leased liveness keys in etcd.
    Etcd,
}

impl MembershipType {
    pub fn as_str(self) -> &'static str {
        match self {
            MembershipType::Static => "STATIC",
            MembershipType::Coordinator => "COORDINATOR",
            MembershipType::Etcd => "ETCD",
        }
    }
}

/// A worker's `host:port` as listed in `conf/workers`.
///
/// `host` is a host name or IPv4 address as written, or an IPv6 address in canonical form
/// inside brackets (`[::1]`), so `host:port` (the `Display` form) is unambiguous, valid in an
/// HTTP URL and accepted by `ToSocketAddrs`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerAddress {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for WorkerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tolerate an IPv6 host built by hand without brackets.
        if self.host.contains(':') && !self.host.starts_with('[') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for WorkerAddress {
    type Err = String;

    /// `host:port` or `[v6]:port` (the port is required here).
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let address = workers::parse_worker(raw.trim(), 0)?;
        if address.port == 0 {
            return Err(format!("{raw:?} has no port (expected host:port)"));
        }
        Ok(address)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    pub name: String,
    /// Hoard path the mount appears at (e.g. `/data`), normalized, never `/`.
    pub path: String,
    /// UFS URI: `s3://bucket/prefix`, `file:///dir` or a plain absolute directory.
    pub ufs: String,
}

#[derive(Clone, PartialEq, Eq, Default)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// Redacts the secret so configs can be logged with `{:?}`.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UfsConfig {
    /// `hoard.underfs.root`: the UFS mounted at `/`.
    pub root: String,
    /// `hoard.mount.<name>.path` / `.ufs`, sorted by name.
    pub mounts: Vec<MountConfig>,
    pub s3: S3Config,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// How others reach this worker; IPv6 addresses in brackets, like [`WorkerAddress::host`].
    pub hostname: String,
    /// What the HTTP server binds; IPv6 addresses without brackets (`::`). See
    /// [`WorkerConfig::bind_address`].
    pub bind_host: String,
    pub rpc_port: u16,
    pub page_size: u64,
    pub page_store_dirs: Vec<PathBuf>,
    /// One capacity per entry of `page_store_dirs` (same length).
    pub page_store_sizes: Vec<u64>,
    pub identity_file: PathBuf,
    pub membership_type: MembershipType,
    pub max_request_header_bytes: u64,
    pub ufs_read_timeout: Duration,
    /// Bytes of verified hot pages kept in process memory (0 = no memory tier).
    pub memory_size: u64,
    /// `hoard.worker.page.store.direct.write.enabled`.
    pub direct_writes: bool,
    /// HTTP event-loop threads (0 = one per core; see [`WorkerConfig::event_loops`]).
    pub io_threads: u32,
    /// `hoard.worker.network.sendfile.max.size` (0 = never sendfile).
    pub sendfile_max_size: u64,
    /// `hoard.worker.failure.detection.timeout`.
    pub failure_detection_timeout: Duration,
    /// `hoard.worker.network.*`: the HTTP listener's timeouts and connection cap.
    pub network: NetworkConfig,
    /// `hoard.worker.network.readahead.size`: bytes of pages a response fetches ahead.
    pub readahead_size: u64,
}

/// A worker's HTTP event loops when `hoard.worker.network.io.threads` is 0: one per core.
pub fn default_event_loops() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl WorkerConfig {
    /// HTTP event-loop threads to run: `io_threads`, or one per core when it is 0.
    pub fn event_loops(&self) -> usize {
        match self.io_threads {
            0 => default_event_loops(),
            threads => threads as usize,
        }
    }

    /// The address this worker advertises: `hostname:rpc_port`.
    pub fn address(&self) -> WorkerAddress {
        WorkerAddress {
            host: self.hostname.clone(),
            port: self.rpc_port,
        }
    }

    /// `bind_host:rpc_port`, IPv6 in brackets: ready for `TcpListener::bind`.
    pub fn bind_address(&self) -> String {
        WorkerAddress {
            host: self.bind_host.clone(),
            port: self.rpc_port,
        }
        .to_string()
    }

    /// How often a worker renews its registration: a quarter of the failure timeout, between
    /// 100ms and 10s, so several renewals can be lost before it is declared OFFLINE.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.failure_detection_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Sum of all page store capacities.
    pub fn capacity_bytes(&self) -> u64 {
        self.page_store_sizes
            .iter()
            .fold(0u64, |sum, size| sum.saturating_add(*size))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CoordinatorConfig {
    /// How others reach the coordinator; IPv6 addresses in brackets.
    pub hostname: String,
    /// What the REST server binds; IPv6 addresses without brackets.
    pub bind_host: String,
    pub web_port: u16,
    /// Holds the embedded metastore file.
    pub metastore_dir: PathBuf,
    /// `hoard.coordinator.lease.ttl`.
    pub lease_ttl: Duration,
    /// `hoard.coordinator.addresses`: every coordinator, tried in order (empty: `address()`).
    pub addresses: Vec<WorkerAddress>,
    /// `hoard.coordinator.network.*`: the REST listener's timeouts and connection cap.
    pub network: NetworkConfig,
}

impl CoordinatorConfig {
    /// `hostname:web_port`: where clients and workers send REST requests.
    pub fn address(&self) -> WorkerAddress {
        WorkerAddress {
            host: self.hostname.clone(),
            port: self.web_port,
        }
    }

    /// `bind_host:web_port`, ready for `TcpListener::bind`.
    pub fn bind_address(&self) -> String {
        WorkerAddress {
            host: self.bind_host.clone(),
            port: self.web_port,
        }
        .to_string()
    }

    /// Where clients send REST requests, in the order to try them.
    pub fn client_addresses(&self) -> Vec<WorkerAddress> {
        if self.addresses.is_empty() {
            return vec![self.address()];
        }
        self.addresses.clone()
    }

    /// The embedded metastore's file.
    pub fn metastore_file(&self) -> PathBuf {
        self.metastore_dir.join("meta.redb")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    /// `http://host:port` each (a bare `host:port` gets `http://`); empty when unset.
    pub endpoints: Vec<String>,
    /// Starts and ends with `/`.
    pub root: String,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub max_retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStoreType {
    /// The coordinator's embedded metastore file.
    Embedded,
    /// etcd, under [`JobConfig::etcd_path`].
    Etcd,
}

/// The job scheduler's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    pub store_type: JobStoreType,
    /// Full etcd prefix of the job store (starts and ends with `/`).
    pub etcd_path: String,
    pub poll_interval: Duration,
    pub scheduler_interval: Duration,
    pub max_tasks_per_worker: u32,
    pub waiting_capacity: u32,
    pub batch_size: u32,
    pub cleanup_interval: Duration,
    /// `hoard.coordinator.replica.repair.interval`; zero: no repair.
    pub repair_interval: Duration,
    pub retention: Duration,
    pub file_max_attempts: u32,
    /// Files larger than this are loaded in ranges of this size.
    pub partition_size: u64,
    /// Concurrent UFS reads of a worker's load tasks.
    pub worker_load_readers: u32,
    /// Which files a load checks on their owners at its end.
    pub final_check: FinalCheck,
}

/// `hoard.job.final.check`: which files a load sends to their owners again at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalCheck {
    /// The files whose placement is in doubt (a worker restarted, failed a task or left the
    /// ring during the job).
    Doubtful,
    /// Every file.
    All,
    /// None: a load's success says what the workers acknowledged.
    None,
}

#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecurityConfig {
    pub admin_token: Option<String>,
    /// `hoard.security.cluster.secret.file`: the secret membership changes must present.
    pub cluster_secret_file: PathBuf,
}

/// Redacts the token so configs can be logged with `{:?}`.
impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityConfig")
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .field("cluster_secret_file", &self.cluster_secret_file)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserConfig {
    pub metadata_max_age: Duration,
    pub virtual_nodes_per_worker: u32,
    pub hash_provider: HashProvider,
    pub dynamic_ring: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub worker_list_refresh_interval: Duration,
    /// How long a client waits for its membership source before it falls back.
    pub membership_connect_timeout: Duration,
    /// The oldest fallback list a client uses; zero: no list cached on disk.
    pub membership_cache_max_age: Duration,
    /// `hoard.cluster.name`: the cluster whose replicas this client reads first.
    pub cluster_name: String,
    /// `hoard.user.replica.selection.policy`.
    pub replica_selection_policy: ReplicaSelectionPolicy,
    /// `hoard.user.replica.prefer.cached.replicas`.
    pub prefer_cached_replicas: bool,
    /// `hoard.user.replica.cached.probe.ttl`.
    pub cached_probe_ttl: Duration,
    /// `hoard.user.file.passive.cache.enabled`.
    pub passive_cache: bool,
    /// How long an idle connection to a worker stays pooled: inside the workers' keep-alive
    /// timeout (`hoard.worker.network.keepalive.timeout`), see
    /// [`NetworkConfig::client_pool_idle_timeout`].
    pub worker_pool_idle_timeout: Duration,
    /// Copies per cluster of a file no replica rule covers (the default rule on `/`), from the
    /// deprecated `hoard.user.file.replication.min`.
    pub replication_min_default: u32,
    /// How often a client reads the replica rules again.
    pub replica_rules_refresh_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    pub conf_dir: PathBuf,
    /// `hoard.cluster.name`.
    pub cluster_name: String,
    pub work_dir: PathBuf,
    pub ufs: UfsConfig,
    pub worker: WorkerConfig,
    pub coordinator: CoordinatorConfig,
    pub etcd: EtcdConfig,
    pub security: SecurityConfig,
    pub jobs: JobConfig,
    pub user: UserConfig,
    /// From `conf/workers` (empty when the file is absent).
    pub workers: Vec<WorkerAddress>,
}

/// A parsed config plus the warnings (unknown keys) the caller should log.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: SiteConfig,
    pub warnings: Vec<String>,
}

/// One documented key.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub name: &'static str,
    /// The default as it would be written in the file; empty when the key is unset by default.
    pub default: &'static str,
    pub description: &'static str,
}

/// `--conf DIR`, else `$HOARD_CONF_DIR`, else `./conf`. The caller passes the env value in.
/// An empty value counts as not given.
pub fn resolve_conf_dir(cli: Option<&Path>, env_value: Option<&str>) -> PathBuf {
    if let Some(dir) = cli.filter(|dir| !dir.as_os_str().is_empty()) {
        return dir.to_path_buf();
    }
    if let Some(dir) = env_value.filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    PathBuf::from(DEFAULT_CONF_DIR)
}

impl SiteConfig {
    /// [`SiteConfig::load_with`] knowing nothing of the environment (host names default to
    /// `localhost`, the work dir to [`default_work_dir`] of an empty environment).
    pub fn load(conf_dir: &Path) -> Result<Loaded, ConfigError> {
        SiteConfig::load_with(conf_dir, &Environment::default())
    }

    /// Reads `<dir>/hoard-site.properties` (absent = all defaults) and `<dir>/workers`; `env`
    /// supplies the defaults that depend on the machine.
    ///
    /// A relative `conf_dir` is made absolute against the current directory first, so every
    /// path in the result is absolute.
    pub fn load_with(conf_dir: &Path, env: &Environment) -> Result<Loaded, ConfigError> {
        let absolute = std::path::absolute(conf_dir).unwrap_or_else(|_| conf_dir.to_path_buf());
        let conf_dir = absolute.as_path();
        let mut warnings = Vec::new();
        let site_path = conf_dir.join(SITE_FILE_NAME);
        let properties = match std::fs::read(&site_path) {
            Ok(bytes) => props::parse(&site_path, &bytes, &mut warnings)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if !conf_dir.exists() {
                    warnings.push(format!(
                        "configuration directory {} does not exist; using defaults",
                        conf_dir.display()
                    ));
                }
                BTreeMap::new()
            }
            Err(cause) => return Err(ConfigError::Read { path: site_path, cause }),
        };
        let workers_path = conf_dir.join(WORKERS_FILE_NAME);
        let workers_file = match std::fs::read_to_string(&workers_path) {
            Ok(text) => Some(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(cause) => {
                return Err(ConfigError::Read {
                    path: workers_path,
                    cause,
                })
            }
        };
        let mut loaded = SiteConfig::from_properties_with(conf_dir, &properties, workers_file.as_deref(), env)?;
        warnings.append(&mut loaded.warnings);
        loaded.warnings = warnings;
        Ok(loaded)
    }

    /// Builds a config from already-read properties (tests, `hoard local`). Does not consult the
    /// current directory: relative paths stay relative when `conf_dir` is relative.
    pub fn from_properties(
        conf_dir: &Path,
        properties: &BTreeMap<String, String>,
        workers_file: Option<&str>,
    ) -> Result<Loaded, ConfigError> {
        SiteConfig::from_properties_with(conf_dir, properties, workers_file, &Environment::default())
    }

    /// [`SiteConfig::from_properties`] with the machine's [`Environment`].
    pub fn from_properties_with(
        conf_dir: &Path,
        properties: &BTreeMap<String, String>,
        workers_file: Option<&str>,
        env: &Environment,
    ) -> Result<Loaded, ConfigError> {
        let mut warnings: Vec<String> = properties
            .keys()
            .filter(|key| keys::spec(key).is_none() && keys::split_mount_key(key).is_none())
            .map(|key| keys::unknown_key_warning(key))
            .collect();

        let mut raw: BTreeMap<String, String> = keys::KNOWN_KEYS
            .iter()
            .filter(|spec| !spec.default.is_empty())
            .map(|spec| (spec.name.to_string(), spec.default.to_string()))
            .collect();
        raw.extend(properties.iter().map(|(key, value)| (key.clone(), value.clone())));
        // Defaults that depend on the machine, resolved only when not set (or set empty).
        let unset =
            |raw: &BTreeMap<String, String>, key: &str| raw.get(key).is_none_or(|value| value.trim().is_empty());
        if unset(&raw, keys::WORK_DIR) {
            let dir = default_work_dir(env);
            raw.insert(keys::WORK_DIR.to_string(), dir.to_string_lossy().into_owned());
        }
        if unset(&raw, keys::WORKER_HOSTNAME) || unset(&raw, keys::COORDINATOR_HOSTNAME) {
            let host = default_hostname(env, &mut warnings);
            for key in [keys::WORKER_HOSTNAME, keys::COORDINATOR_HOSTNAME] {
                if unset(&raw, key) {
                    raw.insert(key.to_string(), host.clone());
                }
            }
        }
        let mut values = Values {
            resolver: subst::Resolver::new(&raw),
            base_dir: base_dir(conf_dir),
        };

        let cluster_name = values.parse(keys::CLUSTER_NAME, parse_cluster_name)?;
        let work_dir = values.path(keys::WORK_DIR)?;
        let ufs = UfsConfig {
            root: values.ufs_uri(keys::UNDERFS_ROOT)?,
            mounts: parse_mounts(&mut values, properties)?,
            s3: S3Config {
                endpoint: values.optional(keys::S3_ENDPOINT)?,
                region: values.optional(keys::S3_REGION)?,
                access_key_id: values.optional(keys::S3_ACCESS_KEY_ID)?,
                secret_access_key: values.optional(keys::S3_SECRET_ACCESS_KEY)?,
            },
        };
        let worker = parse_worker_config(&mut values)?;
        let coordinator = CoordinatorConfig {
            hostname: values.parse(keys::COORDINATOR_HOSTNAME, workers::parse_host)?,
            bind_host: values.parse(keys::COORDINATOR_BIND_HOST, |value| {
                workers::parse_host(value).map(|host| workers::unbracket(&host).to_string())
            })?,
            web_port: values.parse(keys::COORDINATOR_WEB_PORT, workers::parse_port)?,
            metastore_dir: values.path(keys::COORDINATOR_METASTORE_DIR)?,
            lease_ttl: values.parse(keys::COORDINATOR_LEASE_TTL, |value| {
                let ttl = parse_duration(value)?;
                if ttl < Duration::from_secs(2) {
                    return Err("must be at least 2s (etcd's shortest lease)".into());
                }
                Ok(ttl)
            })?,
            addresses: match values.optional(keys::COORDINATOR_ADDRESSES)? {
                None => Vec::new(),
                Some(raw) => {
                    let mut addresses = Vec::new();
                    let items =
                        split_list(&raw).map_err(|reason| values.invalid(keys::COORDINATOR_ADDRESSES, &raw, reason))?;
                    for item in items {
                        let address = item.parse::<WorkerAddress>().map_err(|reason| {
                            values.invalid(keys::COORDINATOR_ADDRESSES, &raw, format!("{item:?}: {reason}"))
                        })?;
                        addresses.push(address);
                    }
                    addresses
                }
            },
            network: network::parse(&mut values, &keys::COORDINATOR_NETWORK)?,
        };
        let etcd = parse_etcd_config(&mut values)?;
        if worker.membership_type == MembershipType::Etcd && etcd.endpoints.is_empty() {
            return Err(values.invalid(
                keys::ETCD_ENDPOINTS,
                "",
                format!("must be set when {}=ETCD", keys::WORKER_MEMBERSHIP_TYPE),
            ));
        }
        let security = SecurityConfig {
            admin_token: values.optional(keys::SECURITY_ADMIN_TOKEN)?,
            cluster_secret_file: values.path(keys::SECURITY_CLUSTER_SECRET_FILE)?,
        };
        let jobs = parse_job_config(&mut values, worker.page_size)?;
        if jobs.store_type == JobStoreType::Etcd && etcd.endpoints.is_empty() {
            return Err(values.invalid(
                keys::ETCD_ENDPOINTS,
                "",
                format!("must be set when {}=ETCD", keys::JOB_STORE_TYPE),
            ));
        }
        let user = parse_user_config(&mut values, &worker.network, &cluster_name)?;
        if properties.contains_key(keys::USER_FILE_REPLICATION_MIN) {
            warnings.push(deprecated_replication_min_warning());
        }
        let workers = match workers_file {
            Some(text) => workers::parse_workers_file(&conf_dir.join(WORKERS_FILE_NAME), text, worker.rpc_port)?,
            None => Vec::new(),
        };
        let config = SiteConfig {
            conf_dir: conf_dir.to_path_buf(),
            cluster_name,
            work_dir,
            ufs,
            worker,
            coordinator,
            etcd,
            security,
            jobs,
            user,
            workers,
        };
        Ok(Loaded { config, warnings })
    }

    /// The all-defaults config for `conf_dir` (no properties, no workers file).
    pub fn defaults(conf_dir: &Path) -> SiteConfig {
        match SiteConfig::from_properties(conf_dir, &BTreeMap::new(), None) {
            Ok(loaded) => loaded.config,
            Err(error) => panic!("the built-in defaults must be valid: {error}"),
        }
    }
}

/// Every key Hoard knows, with its default and meaning (docs/configuration.md mirrors it).
pub fn known_keys() -> &'static [KeySpec] {
    keys::KNOWN_KEYS
}

/// Relative paths in values are resolved against the conf dir's parent (`/opt/hoard/conf` ->
/// `/opt/hoard`), so a conf dir that travels with an install tree keeps working.
fn base_dir(conf_dir: &Path) -> PathBuf {
    match conf_dir.components().next_back() {
        Some(Component::Normal(_)) => match conf_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        },
        Some(Component::RootDir | Component::Prefix(_)) => conf_dir.to_path_buf(),
        Some(Component::CurDir | Component::ParentDir) => conf_dir.join(".."),
        None => PathBuf::from(".."),
    }
}

/// Lexical normalization: drops `.` segments and lets `..` remove the segment before it (`/..`
/// is `/`). Like Go's `filepath.Clean`, it does not look at symlinks.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Typed access to values: substitution, trimming, and errors that name key and value.
struct Values<'a> {
    resolver: subst::Resolver<'a>,
    base_dir: PathBuf,
}

impl Values<'_> {
    /// The error for `key` holding `value`. Notes the raw value when substitution changed it and
    /// never repeats a secret.
    fn invalid(&self, key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        let mut reason = reason.into();
        let mut value = value.to_string();
        if let Some(raw) = self.resolver.raw(key) {
            if raw.trim() != value {
                reason = format!("{reason} (after substituting {:?})", raw.trim());
            }
        }
        if key == keys::S3_SECRET_ACCESS_KEY || key == keys::SECURITY_ADMIN_TOKEN {
            value = "<redacted>".into();
            reason = "the value is malformed".into();
        }
        ConfigError::InvalidValue {
            key: key.to_string(),
            value,
            reason,
        }
    }

    /// The substituted, trimmed value, or `None` when the key is unset.
    fn get(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.resolver.get(key) {
            Ok(value) => Ok(value.map(|v| v.trim().to_string())),
            Err(error) => {
                let value = if error.key == keys::S3_SECRET_ACCESS_KEY || error.key == keys::SECURITY_ADMIN_TOKEN {
                    "<redacted>".into()
                } else {
                    error.raw
                };
                Err(ConfigError::InvalidValue {
                    key: error.key,
                    value,
                    reason: error.reason,
                })
            }
        }
    }

    /// A value that must be present and non-empty (every key with a default).
    fn required(&mut self, key: &str) -> Result<String, ConfigError> {
        match self.get(key)? {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(self.invalid(key, "", "must not be empty")),
        }
    }

    /// A value where empty means unset.
    fn optional(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.get(key)?.filter(|value| !value.is_empty()))
    }

    fn parse<T>(&mut self, key: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        let value = self.required(key)?;
        parse(&value).map_err(|reason| self.invalid(key, &value, reason))
    }

    fn size(&mut self, key: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        self.parse(key, |value| {
            let size = parse_size(value)?;
            check_range(size, min, max, format_size)?;
            Ok(size)
        })
    }

    fn duration(&mut self, key: &str, allow_zero: bool) -> Result<Duration, ConfigError> {
        self.parse(key, |value| {
            let duration = parse_duration(value)?;
            if duration.is_zero() && !allow_zero {
                return Err("must be more than 0".into());
            }
            Ok(duration)
        })
    }

    fn path(&mut self, key: &str) -> Result<PathBuf, ConfigError> {
        let value = self.required(key)?;
        self.local_path(&value)
            .map_err(|reason| self.invalid(key, &value, reason))
    }

    fn local_path(&self, value: &str) -> Result<PathBuf, String> {
        if value.contains("://") {
            return Err("must be a local path, not a URI".into());
        }
        if value.starts_with('~') {
            return Err("'~' is not expanded; use an absolute path".into());
        }
        if value.contains('\0') {
            return Err("contains a NUL byte".into());
        }
        let path = Path::new(value);
        Ok(normalize(&if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }))
    }

    /// `s3://bucket/prefix`, `file:///dir`, or a local directory (relative ones resolved).
    fn ufs_uri(&mut self, key: &str) -> Result<String, ConfigError> {
        let value = self.required(key)?;
        self.check_ufs_uri(&value)
            .map_err(|reason| self.invalid(key, &value, reason))
    }

    fn check_ufs_uri(&self, value: &str) -> Result<String, String> {
        let Some((scheme, rest)) = value.split_once("://") else {
            let path = self.local_path(value)?;
            return path
                .into_os_string()
                .into_string()
                .map_err(|_| "the resolved path is not valid UTF-8".into());
        };
        if value.contains(char::is_whitespace) {
            return Err("a UFS URI must not contain whitespace".into());
        }
        match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => {
                let bucket = rest.split('/').next().unwrap_or("");
                if bucket.is_empty() {
                    return Err("missing bucket (expected s3://bucket/prefix)".into());
                }
                Ok(value.to_string())
            }
            "file" => {
                let localhost = rest
                    .get(.."localhost/".len())
                    .is_some_and(|host| host.eq_ignore_ascii_case("localhost/"));
                if !rest.starts_with('/') && !localhost {
                    return Err("a file:// URI needs an absolute path (file:///dir)".into());
                }
                Ok(value.to_string())
            }
            other => Err(format!(
                "unsupported UFS scheme {other:?} (expected s3://bucket/prefix, file:///dir or a local directory)"
            )),
        }
    }
}

fn check_range(value: u64, min: u64, max: u64, show: impl Fn(u64) -> String) -> Result<(), String> {
    if value < min || value > max {
        if min == 1 {
            return Err(format!("must be more than 0 and at most {}", show(max)));
        }
        return Err(format!("must be between {} and {}", show(min), show(max)));
    }
    Ok(())
}

/// A cluster name: `hoard.cluster.name`, and the one a worker registers with.
pub fn parse_cluster_name(value: &str) -> Result<String, String> {
    if value.len() > 128 {
        return Err("must be at most 128 characters".into());
    }
    if value == "." || value == ".." {
        return Err("must not be '.' or '..'".into());
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!("contains {bad:?}; use letters, digits, '.', '-' and '_'"));
    }
    Ok(value.to_string())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err("expected true or false".into())
    }
}

fn parse_membership(value: &str) -> Result<MembershipType, String> {
    match value.to_ascii_uppercase().as_str() {
        "STATIC" => Ok(MembershipType::Static),
        "COORDINATOR" => Ok(MembershipType::Coordinator),
        "ETCD" => Ok(MembershipType::Etcd),
        _ => Err("unknown membership manager type (expected STATIC, COORDINATOR or ETCD)".into()),
    }
}

fn parse_hash_provider(value: &str) -> Result<HashProvider, String> {
    match value.to_ascii_uppercase().as_str() {
        "DEFAULT" => Ok(HashProvider::Default),
        "CAPACITY" => Ok(HashProvider::Capacity),
        _ => Err("expected DEFAULT or CAPACITY".into()),
    }
}

fn parse_virtual_nodes(value: &str) -> Result<u32, String> {
    parse_count(value, 1, MAX_VIRTUAL_NODES)
}

/// A whole number in `min..=max`.
fn parse_count(value: &str, min: u32, max: u32) -> Result<u32, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a whole number".into());
    }
    let count = value.parse::<u32>().map_err(|_| format!("must be at most {max}"))?;
    check_range(u64::from(count), u64::from(min), u64::from(max), |n| n.to_string())?;
    Ok(count)
}

/// Splits a comma-separated list; empty entries are an error.
fn split_list(value: &str) -> Result<Vec<&str>, String> {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if let Some(position) = items.iter().position(|item| item.is_empty()) {
        return Err(format!("entry {} of the comma-separated list is empty", position + 1));
    }
    Ok(items)
}

fn parse_worker_config(values: &mut Values<'_>) -> Result<WorkerConfig, ConfigError> {
    let hostname = values.parse(keys::WORKER_HOSTNAME, workers::parse_host)?;
    let bind_host = values.parse(keys::WORKER_BIND_HOST, |value| {
        workers::parse_host(value).map(|host| workers::unbracket(&host).to_string())
    })?;
    let rpc_port = values.parse(keys::WORKER_RPC_PORT, workers::parse_port)?;
    let page_size = values.size(keys::WORKER_PAGE_SIZE, 1, MAX_PAGE_SIZE)?;

    let dirs_value = values.required(keys::WORKER_PAGE_STORE_DIRS)?;
    let mut page_store_dirs: Vec<PathBuf> = Vec::new();
    for item in
        split_list(&dirs_value).map_err(|reason| values.invalid(keys::WORKER_PAGE_STORE_DIRS, &dirs_value, reason))?
    {
        let dir = values.local_path(item).map_err(|reason| {
            values.invalid(keys::WORKER_PAGE_STORE_DIRS, &dirs_value, format!("{item:?}: {reason}"))
        })?;
        if page_store_dirs.contains(&dir) {
            let reason = format!("{} is listed twice", dir.display());
            return Err(values.invalid(keys::WORKER_PAGE_STORE_DIRS, &dirs_value, reason));
        }
        page_store_dirs.push(dir);
    }

    let sizes_value = values.required(keys::WORKER_PAGE_STORE_SIZES)?;
    let sizes_error =
        |values: &Values<'_>, reason: String| values.invalid(keys::WORKER_PAGE_STORE_SIZES, &sizes_value, reason);
    let mut page_store_sizes = Vec::new();
    for item in split_list(&sizes_value).map_err(|reason| sizes_error(values, reason))? {
        let size = parse_size(item).map_err(|reason| sizes_error(values, format!("{item:?}: {reason}")))?;
        if size < page_size {
            let reason = format!("{item:?} is smaller than one page ({})", format_size(page_size));
            return Err(sizes_error(values, reason));
        }
        page_store_sizes.push(size);
    }
    if page_store_sizes.len() == 1 {
        page_store_sizes = vec![page_store_sizes[0]; page_store_dirs.len()];
    } else if page_store_sizes.len() != page_store_dirs.len() {
        let reason = format!(
            "{} sizes for {} directories in {}; give one size per directory, or one size for all",
            page_store_sizes.len(),
            page_store_dirs.len(),
            keys::WORKER_PAGE_STORE_DIRS
        );
        return Err(sizes_error(values, reason));
    }

    Ok(WorkerConfig {
        hostname,
        bind_host,
        rpc_port,
        page_size,
        page_store_dirs,
        page_store_sizes,
        identity_file: values.path(keys::WORKER_IDENTITY_FILE)?,
        membership_type: values.parse(keys::WORKER_MEMBERSHIP_TYPE, parse_membership)?,
        max_request_header_bytes: values.size(keys::WORKER_MAX_HEADER_SIZE, MIN_HEADER_SIZE, MAX_HEADER_SIZE)?,
        ufs_read_timeout: values.duration(keys::WORKER_UFS_READ_TIMEOUT, false)?,
        memory_size: values.size(keys::WORKER_MEMORY_SIZE, 0, u64::MAX)?,
        direct_writes: values.parse(keys::WORKER_DIRECT_WRITES, parse_bool)?,
        io_threads: values.parse(keys::WORKER_IO_THREADS, |value| parse_count(value, 0, 1024))?,
        sendfile_max_size: values.size(keys::WORKER_SENDFILE_MAX_SIZE, 0, u64::MAX)?,
        failure_detection_timeout: values.parse(keys::WORKER_FAILURE_DETECTION_TIMEOUT, |value| {
            let timeout = parse_duration(value)?;
            if timeout < Duration::from_secs(1) {
                return Err("must be at least 1s".into());
            }
            Ok(timeout)
        })?,
        network: network::parse(values, &keys::WORKER_NETWORK)?,
        readahead_size: values.size(keys::WORKER_READAHEAD_SIZE, 0, MAX_READAHEAD_SIZE)?,
    })
}

/// Largest `hoard.worker.network.readahead.size`.
pub const MAX_READAHEAD_SIZE: u64 = 1 << 30;

fn parse_job_config(values: &mut Values<'_>, page_size: u64) -> Result<JobConfig, ConfigError> {
    Ok(JobConfig {
        store_type: values.parse(keys::JOB_STORE_TYPE, |value| {
            match value.to_ascii_uppercase().as_str() {
                "EMBEDDED" => Ok(JobStoreType::Embedded),
                "ETCD" => Ok(JobStoreType::Etcd),
                "ROCKS" => Err("ROCKS is Alluxio's; Hoard's embedded store is EMBEDDED".into()),
                _ => Err("expected EMBEDDED or ETCD".into()),
            }
        })?,
        etcd_path: values.parse(keys::JOB_ETCD_PATH, parse_etcd_prefix)?,
        poll_interval: values.duration(keys::JOB_POLL_INTERVAL, false)?,
        scheduler_interval: values.duration(keys::SCHEDULER_INTERVAL, false)?,
        max_tasks_per_worker: values.parse(keys::MAX_TASKS_PER_WORKER, |value| parse_count(value, 1, 1000))?,
        waiting_capacity: values.parse(keys::WAITING_JOB_CAPACITY, |value| parse_count(value, 1, 1_000_000))?,
        batch_size: values.parse(keys::JOB_BATCH_SIZE, |value| parse_count(value, 1, MAX_JOB_BATCH_SIZE))?,
        cleanup_interval: values.duration(keys::JOB_CLEANUP_INTERVAL, false)?,
        repair_interval: values.duration(keys::REPLICA_REPAIR_INTERVAL, true)?,
        retention: values.duration(keys::JOB_RETENTION_TIME, true)?,
        file_max_attempts: values.parse(keys::JOB_FILE_MAX_ATTEMPTS, |value| parse_count(value, 1, 100))?,
        partition_size: values.size(keys::WORKER_LOAD_PARTITION_SIZE, page_size, u64::MAX)?,
        worker_load_readers: values.parse(keys::WORKER_LOAD_READERS_MAX, |value| parse_count(value, 1, 65_536))?,
        final_check: values.parse(keys::JOB_FINAL_CHECK, |value| {
            match value.to_ascii_uppercase().as_str() {
                "DOUBTFUL" => Ok(FinalCheck::Doubtful),
                "ALL" => Ok(FinalCheck::All),
                "NONE" => Ok(FinalCheck::None),
                _ => Err("expected DOUBTFUL, ALL or NONE".into()),
            }
        })?,
    })
}

/// Largest `hoard.job.batch.size` (and `--batch-size`).
pub const MAX_JOB_BATCH_SIZE: u32 = 10_000;

/// An etcd key prefix: starts and ends with `/`, no `//`, no control characters.
fn parse_etcd_prefix(value: &str) -> Result<String, String> {
    if !value.starts_with('/') || !value.ends_with('/') {
        return Err("must start and end with '/'".into());
    }
    if value.contains("//") || value.chars().any(char::is_control) {
        return Err("must not contain '//' or control characters".into());
    }
    Ok(value.to_string())
}

/// Most etcd retries: bounded so a dead etcd fails an operation in reasonable time.
pub const MAX_ETCD_RETRIES: u32 = 100;

fn parse_etcd_config(values: &mut Values<'_>) -> Result<EtcdConfig, ConfigError> {
    let endpoints = match values.optional(keys::ETCD_ENDPOINTS)? {
        None => Vec::new(),
        Some(raw) => {
            let items = split_list(&raw).map_err(|reason| values.invalid(keys::ETCD_ENDPOINTS, &raw, reason))?;
            let mut endpoints = Vec::new();
            for item in items {
                let endpoint = parse_etcd_endpoint(item)
                    .map_err(|reason| values.invalid(keys::ETCD_ENDPOINTS, &raw, format!("{item:?}: {reason}")))?;
                endpoints.push(endpoint);
            }
            endpoints
        }
    };
    let root = values.parse(keys::ETCD_ROOT, parse_etcd_prefix)?;
    Ok(EtcdConfig {
        endpoints,
        root,
        read_timeout: values.duration(keys::ETCD_READ_TIMEOUT, false)?,
        write_timeout: values.duration(keys::ETCD_WRITE_TIMEOUT, false)?,
        max_retries: values.parse(keys::ETCD_MAX_RETRIES, |value| parse_count(value, 0, MAX_ETCD_RETRIES))?,
    })
}

/// `host:port` or `http://host:port` -> the URL etcd clients take. TLS (`https://`) is not
/// supported in this version: it is refused here rather than failing at the first connection.
fn parse_etcd_endpoint(value: &str) -> Result<String, String> {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (scheme.to_ascii_lowercase(), rest),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err("https (TLS) etcd endpoints are not supported in this version; use http://".into())
        }
        Some((scheme, _)) => return Err(format!("unsupported scheme {scheme:?} (expected http)")),
        None => ("http".to_string(), value),
    };
    let address = workers::parse_worker(rest.trim_end_matches('/'), 0)?;
    if address.port == 0 {
        return Err("needs a port (host:port)".into());
    }
    Ok(format!("{scheme}://{address}"))
}

/// The start-up warning when the deprecated `hoard.user.file.replication.min` is set.
pub fn deprecated_replication_min_warning() -> String {
    format!(
        "{} is deprecated: set a replica rule on / instead (hoard replica set --path / --replicas N); docs/replicas.md",
        keys::USER_FILE_REPLICATION_MIN
    )
}

fn parse_user_config(
    values: &mut Values<'_>,
    workers: &NetworkConfig,
    cluster_name: &str,
) -> Result<UserConfig, ConfigError> {
    Ok(UserConfig {
        metadata_max_age: values.duration(keys::USER_METADATA_MAX_AGE, true)?,
        virtual_nodes_per_worker: values.parse(keys::USER_VIRTUAL_NODES, parse_virtual_nodes)?,
        hash_provider: values.parse(keys::USER_HASH_PROVIDER, parse_hash_provider)?,
        dynamic_ring: values.parse(keys::USER_DYNAMIC_RING, parse_bool)?,
        connect_timeout: values.duration(keys::USER_CONNECT_TIMEOUT, false)?,
        read_timeout: values.duration(keys::USER_READ_TIMEOUT, false)?,
        worker_list_refresh_interval: values.duration(keys::USER_WORKER_LIST_REFRESH, false)?,
        membership_connect_timeout: values.duration(keys::USER_MEMBERSHIP_CONNECT_TIMEOUT, false)?,
        membership_cache_max_age: values.duration(keys::USER_MEMBERSHIP_CACHE_MAX_AGE, true)?,
        worker_pool_idle_timeout: workers.client_pool_idle_timeout(),
        cluster_name: cluster_name.to_string(),
        replica_selection_policy: values.parse(keys::USER_REPLICA_SELECTION_POLICY, |value| {
            ReplicaSelectionPolicy::parse(value)
                .ok_or_else(|| "expected GLOBAL_FIXED, CLIENT_FIXED or RANDOM".to_string())
        })?,
        prefer_cached_replicas: values.parse(keys::USER_PREFER_CACHED_REPLICAS, parse_bool)?,
        cached_probe_ttl: values.duration(keys::USER_CACHED_PROBE_TTL, true)?,
        passive_cache: values.parse(keys::USER_PASSIVE_CACHE, parse_bool)?,
        replication_min_default: values.parse(keys::USER_FILE_REPLICATION_MIN, |value| {
            parse_count(value, 1, hoard_common::replica::MAX_REPLICAS)
        })?,
        replica_rules_refresh_interval: values.duration(keys::USER_REPLICA_RULES_REFRESH, false)?,
    })
}

fn parse_mounts(
    values: &mut Values<'_>,
    properties: &BTreeMap<String, String>,
) -> Result<Vec<MountConfig>, ConfigError> {
    // name -> (path key set, ufs key set)
    let mut names: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for key in properties.keys() {
        if let Some((name, is_path)) = keys::split_mount_key(key) {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                let value = values.get(key)?.unwrap_or_default();
                return Err(values.invalid(
                    key,
                    &value,
                    format!("mount name {name:?} must be letters, digits, '-' or '_'"),
                ));
            }
            let entry = names.entry(name).or_default();
            if is_path {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }

    let mut mounts: Vec<MountConfig> = Vec::new();
    // Normalized mount point -> the key that set it.
    let mut points: BTreeMap<String, String> = BTreeMap::new();
    for (name, (has_path, has_ufs)) in names {
        let path_key = format!("{}{name}{}", keys::MOUNT_PREFIX, keys::MOUNT_PATH_SUFFIX);
        let ufs_key = format!("{}{name}{}", keys::MOUNT_PREFIX, keys::MOUNT_UFS_SUFFIX);
        if !has_path || !has_ufs {
            let (missing, present) = if has_path {
                (&ufs_key, &path_key)
            } else {
                (&path_key, &ufs_key)
            };
            return Err(values.invalid(missing, "", format!("not set, but {present} is; a mount needs both")));
        }
        let raw_path = values.required(&path_key)?;
        let path =
            HoardPath::parse(&raw_path).map_err(|error| values.invalid(&path_key, &raw_path, error.to_string()))?;
        if path.is_root() {
            return Err(values.invalid(
                &path_key,
                &raw_path,
                format!("cannot mount at /; set {} instead", keys::UNDERFS_ROOT),
            ));
        }
        if let Some(other) = points.get(path.as_str()) {
            return Err(values.invalid(
                &path_key,
                &raw_path,
                format!("{path} is already the mount point of {other}"),
            ));
        }
        points.insert(path.as_str().to_string(), path_key.clone());
        let ufs = values.ufs_uri(&ufs_key)?;
        mounts.push(MountConfig {
            name: name.to_string(),
            path: path.as_str().to_string(),
            ufs,
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests;
