//! Key names as constants, and the table behind [`crate::known_keys`]. docs/configuration.md lists the same
//! table (a test checks it), and conf/hoard-site.properties.template shows every default.

use crate::KeySpec;

pub const CLUSTER_NAME: &str = "hoard.cluster.name";
pub const WORK_DIR: &str = "hoard.work.dir";
pub const UNDERFS_ROOT: &str = "hoard.underfs.root";
pub const S3_ENDPOINT: &str = "hoard.underfs.s3.endpoint";
pub const S3_REGION: &str = "hoard.underfs.s3.region";
pub const S3_ACCESS_KEY_ID: &str = "hoard.underfs.s3.access.key.id";
pub const S3_SECRET_ACCESS_KEY: &str = "hoard.underfs.s3.secret.access.key";
pub const WORKER_HOSTNAME: &str = "hoard.worker.hostname";
pub const WORKER_BIND_HOST: &str = "hoard.worker.bind.host";
pub const WORKER_RPC_PORT: &str = "hoard.worker.rpc.port";
pub const WORKER_PAGE_SIZE: &str = "hoard.worker.page.store.page.size";
pub const WORKER_PAGE_STORE_DIRS: &str = "hoard.worker.page.store.dirs";
pub const WORKER_PAGE_STORE_SIZES: &str = "hoard.worker.page.store.sizes";
pub const WORKER_IDENTITY_FILE: &str = "hoard.worker.identity.uuid.file.path";
pub const WORKER_MEMBERSHIP_TYPE: &str = "hoard.worker.membership.manager.type";
pub const WORKER_MAX_HEADER_SIZE: &str = "hoard.worker.http.max.header.size";
pub const WORKER_UFS_READ_TIMEOUT: &str = "hoard.worker.ufs.read.timeout";
pub const WORKER_MEMORY_SIZE: &str = "hoard.worker.page.store.memory.size";
pub const WORKER_DIRECT_WRITES: &str = "hoard.worker.page.store.direct.write.enabled";
pub const WORKER_IO_THREADS: &str = "hoard.worker.network.io.threads";
pub const WORKER_SENDFILE_MAX_SIZE: &str = "hoard.worker.network.sendfile.max.size";
pub const WORKER_FAILURE_DETECTION_TIMEOUT: &str = "hoard.worker.failure.detection.timeout";
pub const COORDINATOR_HOSTNAME: &str = "hoard.coordinator.hostname";
pub const COORDINATOR_BIND_HOST: &str = "hoard.coordinator.bind.host";
pub const COORDINATOR_WEB_PORT: &str = "hoard.coordinator.web.port";
pub const COORDINATOR_METASTORE_DIR: &str = "hoard.coordinator.metastore.dir";
pub const COORDINATOR_LEASE_TTL: &str = "hoard.coordinator.lease.ttl";
pub const COORDINATOR_ADDRESSES: &str = "hoard.coordinator.addresses";
pub const ETCD_ENDPOINTS: &str = "hoard.etcd.endpoints";
pub const ETCD_ROOT: &str = "hoard.etcd.root";
pub const ETCD_READ_TIMEOUT: &str = "hoard.coordinator.scheduler.etcd.read.timeout";
pub const ETCD_WRITE_TIMEOUT: &str = "hoard.coordinator.scheduler.etcd.write.timeout";
pub const ETCD_MAX_RETRIES: &str = "hoard.coordinator.scheduler.etcd.max.retries";
pub const SECURITY_ADMIN_TOKEN: &str = "hoard.security.admin.token";
pub const SECURITY_CLUSTER_SECRET_FILE: &str = "hoard.security.cluster.secret.file";
pub const JOB_STORE_TYPE: &str = "hoard.coordinator.job.meta.store.type";
pub const JOB_ETCD_PATH: &str = "hoard.coordinator.scheduler.job.etcd.path";
pub const JOB_POLL_INTERVAL: &str = "hoard.coordinator.scheduler.job.etcd.poll.interval";
pub const SCHEDULER_INTERVAL: &str = "hoard.coordinator.scheduler.interval.time";
pub const MAX_TASKS_PER_WORKER: &str = "hoard.coordinator.scheduler.max.tasks.per.worker";
pub const WAITING_JOB_CAPACITY: &str = "hoard.coordinator.scheduler.waiting.job.capacity";
pub const JOB_BATCH_SIZE: &str = "hoard.job.batch.size";
pub const JOB_CLEANUP_INTERVAL: &str = "hoard.job.cleanup.interval";
pub const REPLICA_REPAIR_INTERVAL: &str = "hoard.coordinator.replica.repair.interval";
pub const JOB_RETENTION_TIME: &str = "hoard.job.retention.time";
pub const JOB_FILE_MAX_ATTEMPTS: &str = "hoard.job.file.max.attempts";
pub const JOB_FINAL_CHECK: &str = "hoard.job.final.check";
pub const WORKER_LOAD_PARTITION_SIZE: &str = "hoard.worker.load.file.partition.size";
pub const WORKER_LOAD_READERS_MAX: &str = "hoard.worker.network.grpc.reader.threads.max";
pub const USER_METADATA_MAX_AGE: &str = "hoard.user.file.metadata.max.age";
pub const USER_VIRTUAL_NODES: &str = "hoard.user.worker.selection.policy.consistent.hash.virtual.node.count.per.worker";
pub const USER_HASH_PROVIDER: &str = "hoard.user.worker.selection.policy.consistent.hash.provider.impl";
pub const USER_DYNAMIC_RING: &str = "hoard.user.dynamic.consistent.hash.ring.enabled";
pub const USER_CONNECT_TIMEOUT: &str = "hoard.user.network.connect.timeout";
pub const USER_READ_TIMEOUT: &str = "hoard.user.network.read.timeout";
pub const USER_WORKER_LIST_REFRESH: &str = "hoard.user.worker.list.refresh.interval";
// Reads without the control plane (docs/client.md#when-the-membership-source-is-down).
pub const USER_MEMBERSHIP_CONNECT_TIMEOUT: &str = "hoard.user.membership.connect.timeout";
pub const USER_MEMBERSHIP_CACHE_MAX_AGE: &str = "hoard.user.membership.cache.max.age";
pub const USER_REPLICA_SELECTION_POLICY: &str = "hoard.user.replica.selection.policy";
pub const USER_PREFER_CACHED_REPLICAS: &str = "hoard.user.replica.prefer.cached.replicas";
pub const USER_CACHED_PROBE_TTL: &str = "hoard.user.replica.cached.probe.ttl";
pub const USER_PASSIVE_CACHE: &str = "hoard.user.file.passive.cache.enabled";
// Replica rules (docs/replicas.md#rules).
/// Deprecated: the count of the default rule; a rule on `/` says the same.
pub const USER_FILE_REPLICATION_MIN: &str = "hoard.user.file.replication.min";
pub const USER_REPLICA_RULES_REFRESH: &str = "hoard.user.replica.rules.refresh.interval";

// Listener limits (docs/worker-http.md#limits, docs/coordinator-api.md#limits): one key set per
// listener, parsed into one `NetworkConfig` by the same code.
pub const WORKER_HEADER_TIMEOUT: &str = "hoard.worker.network.header.timeout";
pub const WORKER_KEEPALIVE_TIMEOUT: &str = "hoard.worker.network.keepalive.timeout";
pub const WORKER_SEND_TIMEOUT: &str = "hoard.worker.network.send.timeout";
pub const WORKER_MAX_CONNECTIONS: &str = "hoard.worker.network.max.connections";
pub const WORKER_READAHEAD_SIZE: &str = "hoard.worker.network.readahead.size";
pub const COORDINATOR_HEADER_TIMEOUT: &str = "hoard.coordinator.network.header.timeout";
pub const COORDINATOR_KEEPALIVE_TIMEOUT: &str = "hoard.coordinator.network.keepalive.timeout";
pub const COORDINATOR_SEND_TIMEOUT: &str = "hoard.coordinator.network.send.timeout";
pub const COORDINATOR_MAX_CONNECTIONS: &str = "hoard.coordinator.network.max.connections";

/// The keys of one listener's [`crate::NetworkConfig`].
pub struct NetworkKeys {
    pub header_timeout: &'static str,
    pub keepalive_timeout: &'static str,
    pub send_timeout: &'static str,
    pub max_connections: &'static str,
}

pub const WORKER_NETWORK: NetworkKeys = NetworkKeys {
    header_timeout: WORKER_HEADER_TIMEOUT,
    keepalive_timeout: WORKER_KEEPALIVE_TIMEOUT,
    send_timeout: WORKER_SEND_TIMEOUT,
    max_connections: WORKER_MAX_CONNECTIONS,
};

pub const COORDINATOR_NETWORK: NetworkKeys = NetworkKeys {
    header_timeout: COORDINATOR_HEADER_TIMEOUT,
    keepalive_timeout: COORDINATOR_KEEPALIVE_TIMEOUT,
    send_timeout: COORDINATOR_SEND_TIMEOUT,
    max_connections: COORDINATOR_MAX_CONNECTIONS,
};

/// Mount keys are `hoard.mount.<name>.path` and `hoard.mount.<name>.ufs`.
pub const MOUNT_PREFIX: &str = "hoard.mount.";
pub const MOUNT_PATH_SUFFIX: &str = ".path";
pub const MOUNT_UFS_SUFFIX: &str = ".ufs";

const fn key(name: &'static str, default: &'static str, description: &'static str) -> KeySpec {
    KeySpec {
        name,
        default,
        description,
    }
}

/// An empty default means "unset".
pub(crate) static KNOWN_KEYS: &[KeySpec] = &[
    key(
        CLUSTER_NAME,
        "default",
        "The cluster (availability zone) this worker or client belongs to: each cluster has its own ring, replica counts are per cluster, and clients read their own cluster's replicas first (docs/replicas.md). Letters, digits, '.', '-' and '_'.",
    ),
    key(
        WORK_DIR,
        "",
        "Directory for Hoard's own files; other defaults are placed under it. Unset: /var/lib/hoard when it can be created or written, else $XDG_DATA_HOME/hoard, else ~/.local/share/hoard.",
    ),
    key(
        UNDERFS_ROOT,
        "${hoard.work.dir}/underfs",
        "The UFS mounted at '/': a local directory, file:///dir or s3://bucket/prefix.",
    ),
    key(
        S3_ENDPOINT,
        "",
        "S3 endpoint URL for S3-compatible stores; unset uses AWS's endpoint for the region.",
    ),
    key(
        S3_REGION,
        "",
        "S3 region; unset falls back to the AWS environment (AWS_REGION).",
    ),
    key(
        S3_ACCESS_KEY_ID,
        "",
        "S3 access key id; unset falls back to the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment variables.",
    ),
    key(
        S3_SECRET_ACCESS_KEY,
        "",
        "S3 secret access key; unset falls back to the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment variables.",
    ),
    key(
        WORKER_HOSTNAME,
        "",
        "Host name or address clients and coordinators use to reach this worker. Unset: the machine's name (gethostname), else localhost.",
    ),
    key(
        WORKER_BIND_HOST,
        "0.0.0.0",
        "Address the worker's HTTP server listens on.",
    ),
    key(
        WORKER_RPC_PORT,
        "29999",
        "Port of the worker's HTTP server; also the port of conf/workers lines that give none.",
    ),
    key(
        WORKER_PAGE_SIZE,
        "1MiB",
        "Size of one cached page; more than 0 and at most 64MiB.",
    ),
    key(
        WORKER_PAGE_STORE_DIRS,
        "${hoard.work.dir}/page_store",
        "Comma-separated directories that hold cached pages.",
    ),
    key(
        WORKER_PAGE_STORE_SIZES,
        "1GiB",
        "Comma-separated capacity of each page store directory, or one size used for every directory.",
    ),
    key(
        WORKER_IDENTITY_FILE,
        "${hoard.work.dir}/system-info/worker_identity",
        "File holding the worker's persistent UUID, created on first start.",
    ),
    key(
        WORKER_MEMBERSHIP_TYPE,
        "STATIC",
        "How workers find each other: STATIC (the conf/workers list), COORDINATOR (workers register and heartbeat to the coordinator) or ETCD (registrations and leases in etcd).",
    ),
    key(
        WORKER_FAILURE_DETECTION_TIMEOUT,
        "2min",
        "A worker that has not renewed its registration for this long is OFFLINE (COORDINATOR and ETCD membership); at least 1s.",
    ),
    key(
        COORDINATOR_HOSTNAME,
        "",
        "Host name or address workers, clients and the CLI use to reach the coordinator. Unset: the machine's name (gethostname), else localhost.",
    ),
    key(
        COORDINATOR_BIND_HOST,
        "0.0.0.0",
        "Address the coordinator's REST server listens on.",
    ),
    key(
        COORDINATOR_WEB_PORT,
        "19999",
        "Port of the coordinator's REST API (JSON, OpenAPI at /api/v1/openapi.json), health and metrics.",
    ),
    key(
        COORDINATOR_METASTORE_DIR,
        "${hoard.work.dir}/coordinator",
        "Directory of the coordinator's embedded metastore (one redb file, meta.redb).",
    ),
    key(
        COORDINATOR_LEASE_TTL,
        "5s",
        "TTL of a coordinator's liveness key in etcd: a coordinator silent this long is dead and its RUNNING jobs are reclaimed; at least 2s.",
    ),
    key(
        COORDINATOR_ADDRESSES,
        "",
        "Comma-separated host:port of every coordinator, for the CLI and workers to try in order (HA); unset: hoard.coordinator.hostname:hoard.coordinator.web.port.",
    ),
    key(
        ETCD_ENDPOINTS,
        "",
        "Comma-separated etcd endpoints (host:port or http://host:port; no TLS yet); required for ETCD membership or the ETCD job store.",
    ),
    key(
        ETCD_ROOT,
        "/hoard/default/",
        "Prefix of every key Hoard writes in etcd (docs/etcd.md); starts and ends with '/'. Every cluster (zone) served by one coordinator set shares it; separate deployments sharing an etcd need different roots.",
    ),
    key(
        ETCD_READ_TIMEOUT,
        "5s",
        "How long one etcd read may take before it is retried.",
    ),
    key(
        ETCD_WRITE_TIMEOUT,
        "5s",
        "How long one etcd write or transaction may take before it is retried.",
    ),
    key(
        ETCD_MAX_RETRIES,
        "3",
        "How often an etcd operation that failed or timed out is retried (with backoff) before the error is returned; 0 to 100.",
    ),
    key(
        SECURITY_ADMIN_TOKEN,
        "",
        "When set, every request that changes state (worker registration, remove-worker, jobs) must carry 'Authorization: Bearer <token>'.",
    ),
    key(
        SECURITY_CLUSTER_SECRET_FILE,
        "${hoard.work.dir}/system-info/cluster_secret",
        "File holding the cluster secret that workers' registrations, heartbeats and remove-worker must present to the coordinator; created (mode 0600) by the coordinator on first start when absent. Copy it to every worker machine.",
    ),
    key(
        WORKER_MAX_HEADER_SIZE,
        "16KiB",
        "Largest HTTP request header block the worker accepts; 8KiB to 1MiB.",
    ),
    key(
        WORKER_MEMORY_SIZE,
        "1GiB",
        "Memory a worker uses to keep verified copies of hot pages, served without checksumming them again; 0 turns the memory tier off.",
    ),
    key(
        WORKER_DIRECT_WRITES,
        "true",
        "Write new pages' bytes with O_DIRECT, past the OS page cache (a file system that refuses it gets buffered writes, with a warning).",
    ),
    key(
        WORKER_IO_THREADS,
        "0",
        "Event-loop threads serving the worker's HTTP connections; 0 picks one per CPU core.",
    ),
    key(
        WORKER_SENDFILE_MAX_SIZE,
        "256KiB",
        "Largest part of a response (one page's share of a range) sent from the memory tier with sendfile; larger parts, and all when 0, are copied into the socket.",
    ),
    key(
        WORKER_UFS_READ_TIMEOUT,
        "30s",
        "How long a worker waits for one UFS read before failing it.",
    ),
    key(
        JOB_STORE_TYPE,
        "EMBEDDED",
        "Where the coordinator keeps jobs: EMBEDDED (its metastore file) or ETCD (under hoard.coordinator.scheduler.job.etcd.path).",
    ),
    key(
        JOB_ETCD_PATH,
        "${hoard.etcd.root}jobs/",
        "etcd prefix of the job store when hoard.coordinator.job.meta.store.type=ETCD; starts and ends with '/'.",
    ),
    key(
        JOB_POLL_INTERVAL,
        "1s",
        "How often a coordinator looks for waiting jobs (with up to 20% random jitter).",
    ),
    key(
        SCHEDULER_INTERVAL,
        "2s",
        "How often a running job's scheduling loop checkpoints progress and re-checks workers and stop requests.",
    ),
    key(
        MAX_TASKS_PER_WORKER,
        "3",
        "Tasks one coordinator keeps in flight on one worker at most; 1 to 1000.",
    ),
    key(
        WAITING_JOB_CAPACITY,
        "2000",
        "Waiting jobs at most; a submission past it is refused (HTTP 429); 1 to 1000000.",
    ),
    key(
        JOB_BATCH_SIZE,
        "200",
        "Files per load or free task (jobs may override it with --batch-size); 1 to 10000.",
    ),
    key(
        JOB_CLEANUP_INTERVAL,
        "1h",
        "How often finished jobs older than hoard.job.retention.time are deleted.",
    ),
    key(
        REPLICA_REPAIR_INTERVAL,
        "5min",
        "How often the coordinator holding the singleton duties repairs the paths of replica rules marked maintain (and at once when the ONLINE workers change); 0 turns repair off.",
    ),
    key(
        JOB_RETENTION_TIME,
        "7d",
        "How long a finished (SUCCEEDED, FAILED, STOPPED) job is kept.",
    ),
    key(
        JOB_FILE_MAX_ATTEMPTS,
        "3",
        "Attempts per file (on the ring's next candidates, with backoff) before a load records it as failed; 1 to 100.",
    ),
    key(
        JOB_FINAL_CHECK,
        "DOUBTFUL",
        "Which files a load sends to their owners again at its end, loading what is missing: DOUBTFUL (those whose placement is in doubt: a worker restarted, failed a task or left the ring during the job), ALL or NONE.",
    ),
    key(
        WORKER_LOAD_PARTITION_SIZE,
        "256MiB",
        "Files larger than this are loaded in ranges of this size, each by its own task; at least one page.",
    ),
    key(
        WORKER_LOAD_READERS_MAX,
        "2048",
        "UFS reads a worker runs at once for load tasks, across all tasks; 1 to 65536.",
    ),
    key(
        USER_METADATA_MAX_AGE,
        "1min",
        "How long cached UFS file status may be used before it is checked again (0 = always check).",
    ),
    key(
        USER_VIRTUAL_NODES,
        "2000",
        "Virtual nodes per worker on the consistent-hash ring (DEFAULT provider); 1 to 100000.",
    ),
    key(
        USER_HASH_PROVIDER,
        "DEFAULT",
        "Ring provider: DEFAULT (same virtual node count per worker) or CAPACITY (capacity / 1GiB virtual nodes).",
    ),
    key(
        USER_DYNAMIC_RING,
        "true",
        "true: the ring holds only live workers; false: it holds every registered worker.",
    ),
    key(
        USER_CONNECT_TIMEOUT,
        "2s",
        "How long a client waits to connect to a worker before trying the next candidate.",
    ),
    key(
        USER_READ_TIMEOUT,
        "30s",
        "How long a client waits for a worker's response before trying the next candidate.",
    ),
    key(
        USER_WORKER_LIST_REFRESH,
        "2min",
        "How often a client refreshes its snapshot of the worker list.",
    ),
    // Listener limits.
    key(
        WORKER_HEADER_TIMEOUT,
        "60s",
        "How long a client may take to send a request head (from the connection's start or the head's first byte); then the connection is closed.",
    ),
    key(
        WORKER_KEEPALIVE_TIMEOUT,
        "75s",
        "How long an idle keep-alive connection is kept open waiting for the next request.",
    ),
    key(
        WORKER_SEND_TIMEOUT,
        "60s",
        "How long a response may wait for a client that takes no bytes before the connection is closed.",
    ),
    key(
        WORKER_MAX_CONNECTIONS,
        "8192",
        "Open connections at most; past it the longest-waiting idle connection is closed, or the new one refused (503) when none is idle.",
    ),
    key(
        WORKER_READAHEAD_SIZE,
        "4MiB",
        "Bytes of pages a response fetches ahead of the one being sent (whole pages; 0 = none): with one page in hand, what a connection holds at most.",
    ),
    key(
        COORDINATOR_HEADER_TIMEOUT,
        "60s",
        "How long a client may take to send a request head (or stall a request body); then the connection is closed.",
    ),
    key(
        COORDINATOR_KEEPALIVE_TIMEOUT,
        "75s",
        "How long an idle keep-alive connection is kept open waiting for the next request.",
    ),
    key(
        COORDINATOR_SEND_TIMEOUT,
        "60s",
        "How long a response may wait for a client that takes no bytes before the connection is closed.",
    ),
    key(
        COORDINATOR_MAX_CONNECTIONS,
        "4096",
        "Open connections at most; past it the longest-waiting idle connection is closed, or the new one refused (503) when none is idle.",
    ),
    // Reads without the control plane.
    key(
        USER_MEMBERSHIP_CONNECT_TIMEOUT,
        "2s",
        "How long a client waits for its membership source (etcd or the coordinator) before it reads with a fallback list.",
    ),
    key(
        USER_MEMBERSHIP_CACHE_MAX_AGE,
        "7d",
        "The oldest fallback worker list a client uses (a coordinator's last-known list, or its own cached at <work dir>/client/membership.json); 0 disables the file.",
    ),
    key(
        USER_REPLICA_SELECTION_POLICY,
        "GLOBAL_FIXED",
        "Which of a file's replicas a client reads first: GLOBAL_FIXED (ring order, the same for every client), CLIENT_FIXED (a stable order per client), RANDOM (a new order per read).",
    ),
    key(
        USER_PREFER_CACHED_REPLICAS,
        "false",
        "Before a read, ask the file's replicas which hold it whole (a page index lookup each, no UFS call) and read from the first that does; otherwise the policy's order.",
    ),
    key(
        USER_CACHED_PROBE_TTL,
        "10s",
        "How long a client reuses the answers of one file's prefer-cached probe; 0: probe before every read.",
    ),
    key(
        USER_PASSIVE_CACHE,
        "false",
        "With prefer.cached.replicas: when a lower-priority replica served a file the preferred worker did not hold whole, ask the preferred worker to load it in the background.",
    ),
    // Replica rules.
    key(
        USER_FILE_REPLICATION_MIN,
        "1",
        "Deprecated (use a replica rule on /): copies per cluster of files no rule covers; 1 to 64.",
    ),
    key(
        USER_REPLICA_RULES_REFRESH,
        "10s",
        "How often a client reads the replica rules again.",
    ),
];

pub(crate) fn spec(name: &str) -> Option<&'static KeySpec> {
    KNOWN_KEYS.iter().find(|spec| spec.name == name)
}

/// For `hoard.mount.<name>.path|ufs`: `(name, is_path)`. `None` when `key` is not shaped like
/// a mount key (the name is not validated here).
pub(crate) fn split_mount_key(key: &str) -> Option<(&str, bool)> {
    let rest = key.strip_prefix(MOUNT_PREFIX)?;
    if let Some(name) = rest.strip_suffix(MOUNT_PATH_SUFFIX) {
        Some((name, true))
    } else {
        rest.strip_suffix(MOUNT_UFS_SUFFIX).map(|name| (name, false))
    }
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The warning for a key Hoard does not know, with a suggestion when one is close.
pub(crate) fn unknown_key_warning(key: &str) -> String {
    let suggestion = suggest(key);
    match suggestion {
        Some(known) => format!("unknown configuration key {key:?} is ignored (did you mean {known:?}?)"),
        None if key.starts_with(MOUNT_PREFIX) => format!(
            "unknown configuration key {key:?} is ignored (mounts are set with hoard.mount.<name>.path and hoard.mount.<name>.ufs)"
        ),
        None => format!("unknown configuration key {key:?} is ignored"),
    }
}

fn suggest(key: &str) -> Option<String> {
    if let Some(rest) = key.strip_prefix("alluxio.") {
        let renamed = format!("hoard.{rest}");
        if spec(&renamed).is_some() {
            return Some(renamed);
        }
    }
    // Long garbage keys are not worth a quadratic comparison.
    if key.len() > 200 {
        return None;
    }
    let allowed = (key.len() / 10).clamp(2, 4);
    KNOWN_KEYS
        .iter()
        .map(|spec| (edit_distance(key, spec.name), spec.name))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("hoard.worker.rpc.prot", WORKER_RPC_PORT), 2);
    }

    #[test]
    fn suggestions() {
        assert!(unknown_key_warning("hoard.worker.rpc.prot").contains("did you mean \"hoard.worker.rpc.port\""));
        assert!(unknown_key_warning("alluxio.user.worker.list.refresh.interval")
            .contains("did you mean \"hoard.user.worker.list.refresh.interval\""));
        assert!(!unknown_key_warning("something.else.entirely").contains("did you mean"));
        assert!(unknown_key_warning("hoard.mount.data.pth").contains("hoard.mount.<name>.path"));
        assert!(!unknown_key_warning(&"x".repeat(10_000)).contains("did you mean"));
    }

    #[test]
    fn mount_keys() {
        assert_eq!(split_mount_key("hoard.mount.data.path"), Some(("data", true)));
        assert_eq!(split_mount_key("hoard.mount.data.ufs"), Some(("data", false)));
        assert_eq!(split_mount_key("hoard.mount..ufs"), Some(("", false)));
        assert_eq!(split_mount_key("hoard.mount.data.other"), None);
        assert_eq!(split_mount_key("hoard.worker.rpc.port"), None);
    }

    #[test]
    fn keys_are_unique_and_documented() {
        let mut names: Vec<&str> = KNOWN_KEYS.iter().map(|spec| spec.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KNOWN_KEYS.len());
        for spec in KNOWN_KEYS {
            assert!(spec.name.starts_with("hoard."), "{}", spec.name);
            assert!(!spec.description.is_empty(), "{}", spec.name);
            assert!(!spec.description.contains('\n'), "{}", spec.name);
        }
    }
}
