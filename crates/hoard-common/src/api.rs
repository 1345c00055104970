//! JSON bodies of the worker's HTTP API (see docs/worker-http.md). Field names are camelCase on
//! the wire; both the worker and the client use these types so they cannot drift apart. Request
//! bodies refuse fields they do not know (a typo such as `replica` is a 400, not ignored).

use serde::{Deserialize, Serialize};

/// URL prefix under which a worker serves file bytes: `GET /files/a/b.bin` reads `/a/b.bin`.
pub const FILES_PREFIX: &str = "/files";
pub const STAT_ROUTE: &str = "/api/v1/stat";
pub const LIST_ROUTE: &str = "/api/v1/list";
/// `GET ?path=`: whether the worker holds the file whole ([`CachedAnswer`]), from its page index
/// and the file status it already knows: never a UFS call.
pub const CACHED_ROUTE: &str = "/api/v1/cached";

/// `POST ?path=`: asks the worker to load the file in the background (the passive cache);
/// answered at once with [`PassiveCacheAnswer`].
pub const PASSIVE_CACHE_ROUTE: &str = "/api/v1/passive-cache";

/// The answer of [`PASSIVE_CACHE_ROUTE`]: `queued`, `pending` (already queued or loading) or
/// `dropped` (the queue is full).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassiveCacheAnswer {
    pub result: String,
}

/// The answer of [`CACHED_ROUTE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedAnswer {
    /// Every byte of the version the worker knows is in its page store.
    pub whole: bool,
    /// Bytes of that version cached (0 when the worker knows no version of the file).
    pub cached_bytes: u64,
}
pub const HEALTH_ROUTE: &str = "/health";
pub const METRICS_ROUTE: &str = "/metrics";

/// Response header carrying the answering worker's identity.
pub const WORKER_ID_HEADER: &str = "x-hoard-worker-id";
/// Response header carrying the file version the bytes belong to.
pub const VERSION_HEADER: &str = "x-hoard-file-version";
/// Response header carrying how many bytes of the file the worker has cached.
pub const CACHED_BYTES_HEADER: &str = "x-hoard-cached-bytes";

/// Status of one file or directory, as a worker sees it through the UFS and its page store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStat {
    pub path: String,
    pub is_dir: bool,
    pub length: u64,
    /// Milliseconds since the Unix epoch, when the UFS reports it.
    pub modification_time_ms: Option<i64>,
    pub etag: Option<String>,
    /// The version pages are keyed by: changes whenever the UFS file does.
    pub version: String,
    pub cached_bytes: u64,
    pub page_size: u64,
}

/// One entry of a directory listing (streamed as newline-delimited JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListEntry {
    pub path: String,
    pub name: String,
    pub is_dir: bool,
    pub length: u64,
    pub modification_time_ms: Option<i64>,
}

/// A worker's answer to `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerHealth {
    pub id: String,
    /// `hoard.cluster.name` of the worker (absent from workers that predate clusters).
    #[serde(default = "crate::replica::default_cluster_name")]
    pub cluster_name: String,
    pub address: String,
    pub status: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub cached_pages: u64,
    pub version: String,
}

/// Every error body: `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

/// An error answered as `{"error": ..., "code": ...}` with a 4xx/5xx status.
#[cfg(feature = "server")]
#[derive(Debug)]
pub struct ApiError {
    pub status: axum::http::StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[cfg(feature = "server")]
impl ApiError {
    pub fn new(status: axum::http::StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

#[cfg(feature = "server")]
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_string(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, json).into_response();
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// `None` when the request carries `Authorization: Bearer <expected>`; otherwise the 401 to
/// answer. Requests that change state need it when `hoard.security.admin.token` is set.
#[cfg(feature = "server")]
pub fn check_admin_token(headers: &axum::http::HeaderMap, expected: &str) -> Option<ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let unauthorized = |message: &str| {
        Some(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            message,
        ))
    };
    match presented {
        Some(token) if crate::secret::constant_time_eq(expected.as_bytes(), token.as_bytes()) => None,
        Some(_) => unauthorized("wrong admin token"),
        None => {
            unauthorized("this request changes state and needs 'Authorization: Bearer <hoard.security.admin.token>'")
        }
    }
}

/// `None` when the request carries the cluster secret in [`crate::secret::CLUSTER_SECRET_HEADER`];
/// otherwise the 401 to answer. Membership changes (a worker's registration, heartbeats,
/// removal) always need it.
#[cfg(feature = "server")]
pub fn check_cluster_secret(
    headers: &axum::http::HeaderMap,
    expected: &crate::secret::ClusterSecret,
) -> Option<ApiError> {
    let unauthorized = |message: &str| {
        Some(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            message,
        ))
    };
    match headers.get(crate::secret::CLUSTER_SECRET_HEADER) {
        Some(presented) if expected.matches(presented.as_bytes()) => None,
        Some(_) => unauthorized("wrong cluster secret"),
        None => unauthorized(
            "membership changes need the cluster secret in the X-Hoard-Cluster-Secret header (the contents of hoard.security.cluster.secret.file)",
        ),
    }
}

#[cfg(feature = "server")]
impl From<crate::PathError> for ApiError {
    fn from(err: crate::PathError) -> ApiError {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            codes::INVALID_PATH,
            err.to_string(),
        )
    }
}

/// Stable, machine-readable error codes.
pub mod codes {
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const INVALID_PATH: &str = "INVALID_PATH";
    pub const RANGE_NOT_SATISFIABLE: &str = "RANGE_NOT_SATISFIABLE";
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    pub const IS_A_DIRECTORY: &str = "IS_A_DIRECTORY";
    pub const NOT_A_DIRECTORY: &str = "NOT_A_DIRECTORY";
    pub const UFS_ERROR: &str = "UFS_ERROR";
    pub const INTERNAL: &str = "INTERNAL";
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    pub const UNKNOWN_WORKER: &str = "UNKNOWN_WORKER";
    pub const WORKER_ID_IN_USE: &str = "WORKER_ID_IN_USE";
    pub const WORKER_ONLINE: &str = "WORKER_ONLINE";
    pub const METASTORE_UNAVAILABLE: &str = "METASTORE_UNAVAILABLE";
    pub const WRONG_MEMBERSHIP: &str = "WRONG_MEMBERSHIP";
    pub const QUEUE_FULL: &str = "QUEUE_FULL";
    pub const UNKNOWN_JOB: &str = "UNKNOWN_JOB";
    pub const INVALID_STATE: &str = "INVALID_STATE";
    pub const CONFLICT: &str = "CONFLICT";
}

/// Worker task endpoints the coordinator calls for jobs (docs/worker-http.md#tasks). Every task
/// is safe to receive twice: loading a cached range costs no UFS read, freeing a freed file
/// frees nothing.
pub mod tasks {
    use serde::{Deserialize, Serialize};

    /// `POST` a [`LoadTask`]; the answer is a [`TaskResponse`].
    pub const LOAD_ROUTE: &str = "/api/v1/tasks/load";
    /// `POST` a [`FreeTask`]; the answer is a [`TaskResponse`].
    pub const FREE_ROUTE: &str = "/api/v1/tasks/free";
    /// `POST` a [`CheckTask`]; the answer is a [`TaskResponse`] (nothing is read or changed).
    pub const CHECK_ROUTE: &str = "/api/v1/tasks/check";
    /// Most files (or ranges) one task may carry.
    pub const MAX_TASK_FILES: usize = 10_000;

    /// One file of a task, or one range of it (a partition of a large file).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct TaskFile {
        pub path: String,
        /// With `length`: only this range (clamped to the file) is loaded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub offset: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub length: Option<u64>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct LoadTask {
        pub job_id: String,
        pub task_id: u64,
        pub files: Vec<TaskFile>,
        /// Files (ranges) already cached whole are reported `skipped`, nothing is read.
        #[serde(default)]
        pub skip_if_exists: bool,
        /// Only refresh the UFS status (a changed file gets a new version, so its old pages are
        /// never served again); read no data.
        #[serde(default)]
        pub metadata_only: bool,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct FreeTask {
        pub job_id: String,
        pub task_id: u64,
        pub paths: Vec<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct CheckTask {
        pub paths: Vec<String>,
    }

    /// The outcome for one [`TaskFile`] (or path), in the task's order.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct FileResult {
        pub path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub offset: Option<u64>,
        pub ok: bool,
        /// The file's length (0 when it could not be read).
        pub file_length: u64,
        /// Bytes of the requested range (the whole file without one).
        pub range_length: u64,
        /// Bytes of the range cached after the task (for free: left cached, normally 0).
        pub cached_bytes: u64,
        /// Bytes this task read from the UFS (0 when everything was cached already).
        pub ufs_bytes_read: u64,
        /// Bytes this task evicted (free).
        #[serde(default)]
        pub freed_bytes: u64,
        /// Nothing done because it was cached whole (`skipIfExists`).
        #[serde(default)]
        pub skipped: bool,
        /// Why it failed, when `ok` is false.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub error: Option<String>,
        /// The error's code (`NOT_FOUND`, `UFS_ERROR`, `INVALID_PATH`, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub code: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TaskResponse {
        pub results: Vec<FileResult>,
        /// The worker process that answered: random per process, so a different value from the
        /// same worker means it restarted in between (what it acknowledged before may be gone).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub instance: Option<String>,
    }

    /// The code of a load result whose range was read but did not stay cached whole (pages
    /// were evicted before the task answered).
    pub const NOT_CACHED: &str = "NOT_CACHED";
}

/// The coordinator's REST API (docs/coordinator-api.md; OpenAPI at [`coordinator::OPENAPI_ROUTE`]).
pub mod coordinator {
    use serde::{Deserialize, Serialize};

    pub const HEALTH_ROUTE: &str = "/health";
    pub const METRICS_ROUTE: &str = "/metrics";
    pub const OPENAPI_ROUTE: &str = "/api/v1/openapi.json";
    /// `GET`: every worker and coordinator ([`NodesResponse`]).
    pub const NODES_ROUTE: &str = "/api/v1/nodes";
    /// `POST` a worker registration; `GET` the workers.
    pub const WORKERS_ROUTE: &str = "/api/v1/workers";

    /// `PUT` a [`Heartbeat`] for one worker.
    pub fn heartbeat_route(worker_id: &str) -> String {
        format!("{WORKERS_ROUTE}/{}/heartbeat", super::encode_path_for_url(worker_id))
    }

    /// `DELETE` (with `?force=true` to remove an ONLINE worker).
    pub fn worker_route(worker_id: &str) -> String {
        format!("{WORKERS_ROUTE}/{}", super::encode_path_for_url(worker_id))
    }

    /// What a worker sends every heartbeat interval (COORDINATOR membership).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct Heartbeat {
        /// The process instance that registered; another one is refused.
        pub instance: String,
        pub used_bytes: u64,
        pub capacity_bytes: u64,
        /// The worker is stopping cleanly: report it OFFLINE now instead of after the failure
        /// timeout.
        #[serde(default)]
        pub leaving: bool,
    }

    /// One registered worker as the coordinator reports it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct WorkerInfo {
        pub worker_id: String,
        /// The cluster (availability zone) it belongs to: `hoard.cluster.name`.
        #[serde(default = "crate::replica::default_cluster_name")]
        pub cluster_name: String,
        /// `host:port` of its HTTP server.
        pub address: String,
        pub host: String,
        pub rpc_port: u16,
        /// `ONLINE` or `OFFLINE`.
        pub state: String,
        pub capacity_bytes: u64,
        /// From its last heartbeat (COORDINATOR membership); absent when not known.
        pub used_bytes: Option<u64>,
        pub version: String,
        pub start_time_ms: u64,
        /// Milliseconds since its last heartbeat, when one was received by this coordinator.
        pub last_heartbeat_age_ms: Option<u64>,
    }

    /// A live coordinator.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CoordinatorInfo {
        pub coordinator_id: String,
        pub address: String,
        pub version: String,
        pub start_time_ms: u64,
    }

    /// `GET /api/v1/nodes`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct NodesResponse {
        /// `COORDINATOR` or `ETCD`.
        pub membership: String,
        pub workers: Vec<WorkerInfo>,
        pub coordinators: Vec<CoordinatorInfo>,
        /// The coordinator holding the singleton duties (job cleanup), when known.
        #[serde(default)]
        pub singleton: Option<String>,
        /// True when the coordinator cannot reach its metastore (etcd) and answers with the
        /// list it last read; `age_ms` says how long ago that was (0 for a list read now).
        #[serde(default)]
        pub stale: bool,
        #[serde(default)]
        pub age_ms: u64,
    }

    /// `GET`: the coordinator holding the singleton duties ([`CoordinatorInfo`]).
    pub const LEADER_ROUTE: &str = "/api/v1/leader";

    /// `POST` a [`SubmitJob`]; `GET` the jobs (`?state=&type=&path=`).
    pub const JOBS_ROUTE: &str = "/api/v1/jobs";

    /// `GET` one job.
    pub fn job_route(job_id: &str) -> String {
        format!("{JOBS_ROUTE}/{}", super::encode_path_for_url(job_id))
    }

    /// `POST`: stop dispatching; the job ends STOPPED.
    pub fn job_stop_route(job_id: &str) -> String {
        format!("{}/stop", job_route(job_id))
    }

    /// `POST`: FAILED, STOPPED or stuck RUNNING back to WAITING.
    pub fn job_rerun_route(job_id: &str) -> String {
        format!("{}/rerun", job_route(job_id))
    }

    /// A job's options as submitted. Numbers are signed so a negative one gets a clear 400.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub struct JobOptionsView {
        /// Workers per file (the first N ring candidates); default 1.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub replicas: Option<i64>,
        /// Files per task; default `hoard.job.batch.size`.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub batch_size: Option<i64>,
        pub metadata_only: bool,
        pub verify: bool,
        pub skip_if_exists: bool,
    }

    /// `POST /api/v1/jobs`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct SubmitJob {
        /// `load`, `free` or `repair`.
        #[serde(rename = "type")]
        pub job_type: String,
        pub path: String,
        #[serde(default)]
        pub options: JobOptionsView,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct FailedFileView {
        pub path: String,
        pub reason: String,
    }

    /// Copies a load could not make.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ReplicaShortfall {
        pub files: u64,
        pub missing_copies: u64,
    }

    /// A job as the REST API and `hoard job ... --format json` show it (stable field names).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct JobView {
        pub job_id: String,
        #[serde(rename = "type")]
        pub job_type: String,
        pub path: String,
        /// WAITING, RUNNING, SUCCEEDED, FAILED or STOPPED.
        pub state: String,
        /// The coordinator running it.
        pub owner: Option<String>,
        pub owner_heartbeat_ms: Option<u64>,
        pub options: JobOptionsView,
        pub created_ms: u64,
        pub started_ms: Option<u64>,
        pub ended_ms: Option<u64>,
        pub runs: u32,
        pub stop_requested: bool,
        pub error: Option<String>,
        pub files_listed: u64,
        pub files_processed: u64,
        pub files_skipped: u64,
        pub files_failed: u64,
        pub bytes_processed: u64,
        pub retried: u64,
        pub listing_done: bool,
        pub verified: Option<bool>,
        /// Files the final check of a load sent to their owners again (their placement was in
        /// doubt: a worker restarted, failed a task or left the ring during the job).
        #[serde(default)]
        pub files_rechecked: u64,
        /// Of those, files that were missing (or partly) on an owner and were loaded again.
        #[serde(default)]
        pub files_repaired: u64,
        /// Files that could not get every copy their replica count asks for (a cluster had
        /// fewer ONLINE workers): such a load ends FAILED.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub replica_shortfall: Option<ReplicaShortfall>,
        /// The first failures (at most 100), with reasons.
        pub failed_files: Vec<FailedFileView>,
        pub throughput_bytes_per_sec: f64,
        pub elapsed_ms: u64,
    }

    impl JobView {
        pub fn is_finished(&self) -> bool {
            matches!(self.state.as_str(), "SUCCEEDED" | "FAILED" | "STOPPED")
        }
    }

    /// The answer to a submission: the job, and whether this request created it (`false`: the
    /// same (type, path) was already active and this is that job).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct SubmitResponse {
        pub job: JobView,
        pub created: bool,
    }

    /// `GET /health`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CoordinatorHealth {
        pub status: String,
        pub coordinator_id: String,
        pub membership: String,
        pub metastore: String,
        pub version: String,
    }
}

/// Percent-encodes a Hoard path for a URL: after [`FILES_PREFIX`], or as the `path` query
/// value of [`STAT_ROUTE`] and [`LIST_ROUTE`]. Only unreserved characters and `/` are kept, which
/// is safe in both places.
pub fn encode_path_for_url(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        let keep = byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'_' | b'.' | b'~');
        if keep {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_paths() {
        assert_eq!(encode_path_for_url("/a b/c%d.bin"), "/a%20b/c%25d.bin");
        assert_eq!(encode_path_for_url("/a&b=c"), "/a%26b%3Dc");
    }

    #[test]
    fn request_bodies_name_unknown_fields() {
        let error = serde_json::from_str::<coordinator::SubmitJob>(r#"{"type":"load","path":"/a","replica":50}"#)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("unknown field `replica`"), "{error}");
        let nested = r#"{"type":"load","path":"/a","options":{"replica":2}}"#;
        assert!(serde_json::from_str::<coordinator::SubmitJob>(nested).is_err());
        let beat = r#"{"instance":"i","usedBytes":0,"capacityBytes":0,"leavng":true}"#;
        assert!(serde_json::from_str::<coordinator::Heartbeat>(beat).is_err());
        let free = r#"{"jobId":"j","taskId":1,"paths":[],"force":true}"#;
        assert!(serde_json::from_str::<tasks::FreeTask>(free).is_err());
        // What the senders write is still read.
        let submit = coordinator::SubmitJob {
            job_type: "load".into(),
            path: "/a".into(),
            options: coordinator::JobOptionsView::default(),
        };
        let json = serde_json::to_string(&submit).unwrap();
        assert_eq!(serde_json::from_str::<coordinator::SubmitJob>(&json).unwrap(), submit);
    }

    #[test]
    fn stat_is_camel_case() {
        let stat = FileStat {
            path: "/a".into(),
            is_dir: false,
            length: 1,
            modification_time_ms: Some(2),
            etag: None,
            version: "v".into(),
            cached_bytes: 0,
            page_size: 1,
        };
        let json = serde_json::to_string(&stat).unwrap();
        assert!(
            json.contains("\"cachedBytes\":0") && json.contains("\"modificationTimeMs\":2"),
            "{json}"
        );
    }
}
