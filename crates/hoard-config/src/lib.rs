//! Hoard's configuration: `hoard-site.properties` (Java properties) and `workers` in one conf
//! directory, parsed once into [`SiteConfig`]. No other crate reads files or the environment
//! for settings; they take the parts of `SiteConfig` they need by argument.
//!
//! CONTRACT (other crates code against these names; keep them stable):

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const SITE_FILE_NAME: &str = "hoard-site.properties";
pub const WORKERS_FILE_NAME: &str = "workers";
pub const CONF_DIR_ENV: &str = "HOARD_CONF_DIR";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot parse {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid value for {key}: {value:?}: {reason}")]
    InvalidValue { key: String, value: String, reason: String },
    #[error("{path} line {line}: invalid worker address {value:?}: {reason}")]
    InvalidWorker { path: PathBuf, line: usize, value: String, reason: String },
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
    Static,
}

/// A worker's `host:port` as listed in `conf/workers`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerAddress {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for WorkerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    pub name: String,
    /// Hoard path the mount appears at (e.g. `/data`).
    pub path: String,
    /// UFS URI: `s3://bucket/prefix`, `file:///dir` or a plain absolute directory.
    pub ufs: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UfsConfig {
    /// `hoard.underfs.root`: the UFS mounted at `/`.
    pub root: String,
    /// `hoard.mount.<name>.path` / `.ufs`.
    pub mounts: Vec<MountConfig>,
    pub s3: S3Config,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    pub hostname: String,
    pub bind_host: String,
    pub rpc_port: u16,
    pub page_size: u64,
    pub page_store_dirs: Vec<PathBuf>,
    pub page_store_sizes: Vec<u64>,
    pub identity_file: PathBuf,
    pub membership_type: MembershipType,
    pub max_request_header_bytes: u64,
    pub ufs_read_timeout: Duration,
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    pub conf_dir: PathBuf,
    pub work_dir: PathBuf,
    pub ufs: UfsConfig,
    pub worker: WorkerConfig,
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
    pub default: &'static str,
    pub description: &'static str,
}

/// `--conf DIR`, else `$HOARD_CONF_DIR`, else `./conf`. The caller passes the env value in.
pub fn resolve_conf_dir(cli: Option<&Path>, env_value: Option<&str>) -> PathBuf {
    let _ = (cli, env_value);
    todo!()
}

impl SiteConfig {
    /// Reads `<dir>/hoard-site.properties` (absent = all defaults) and `<dir>/workers`.
    pub fn load(conf_dir: &Path) -> Result<Loaded, ConfigError> {
        let _ = conf_dir;
        todo!()
    }

    /// Builds a config from already-read properties (tests, `hoard local`).
    pub fn from_properties(
        conf_dir: &Path,
        properties: &BTreeMap<String, String>,
        workers_file: Option<&str>,
    ) -> Result<Loaded, ConfigError> {
        let _ = (conf_dir, properties, workers_file);
        todo!()
    }
}

/// Every key Hoard knows, with its default and meaning (docs/configuration.md mirrors it).
pub fn known_keys() -> &'static [KeySpec] {
    todo!()
}

/// `1MiB`, `256MiB`, `1GB`, `4096`, `10 KiB` -> bytes.
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let _ = raw;
    todo!()
}

/// `500ms`, `2min`, `1h`, `7d`, `30s` -> duration.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let _ = raw;
    todo!()
}
