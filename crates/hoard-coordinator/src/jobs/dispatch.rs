//! Sending tasks to workers: the task bodies, the HTTP request, the ownership check every send
//! passes, and the retry rules (which failures are worth another worker, and the backoff).

use std::time::Duration;

use hoard_common::api::codes;
use hoard_common::api::tasks::{self, FileResult, FreeTask, LoadTask, TaskFile, TaskResponse};
use hoard_meta::jobs::JobOptions;
use hoard_meta::SharedDeadline;
use hoard_ufs::UfsError;

use super::JobContext;

/// How long one task may take on a worker before it counts as failed (and is retried).
pub const TASK_TIMEOUT: Duration = Duration::from_secs(600);

/// What became of one task.
pub struct Sent {
    pub task_id: u64,
    /// `None`: not sent, because ownership could no longer be confirmed when it was due.
    pub result: Option<Result<TaskResponse, String>>,
}

/// Whether a run may still send tasks: its last checkpoint (counted from when it was requested)
/// is within the ownership window and the coordinator's etcd lease has not lapsed, so no other
/// coordinator can have taken the job over. Every task send checks it again just before its
/// request, so a pause in the middle of a dispatch round is not followed by sends.
#[derive(Clone)]
pub struct Ownership {
    pub checkpointed: SharedDeadline,
    pub lease: Option<SharedDeadline>,
}

impl Ownership {
    pub fn confirmed(&self) -> bool {
        self.checkpointed.holds() && self.lease.as_ref().is_none_or(SharedDeadline::holds)
    }
}

/// Why a file cannot succeed on any worker (no point retrying).
pub fn is_permanent(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(codes::NOT_FOUND | codes::INVALID_PATH | codes::IS_A_DIRECTORY | codes::BAD_REQUEST)
    )
}

pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200) * 2u32.saturating_pow(attempt.saturating_sub(1).min(5));
    base.min(Duration::from_secs(5))
}

pub fn describe_ufs(err: &UfsError, path: &str) -> String {
    match err {
        UfsError::NotFound(_) => format!("no such file or directory in the UFS: {path}"),
        other => format!("cannot list {path}: {other}"),
    }
}

/// Whether a load result leaves its range cached whole. A worker that does not say so (older
/// ones answered `ok` with pages evicted meanwhile) has not loaded it.
pub fn load_kept(result: &FileResult, options: &JobOptions) -> bool {
    options.metadata_only || result.cached_bytes >= result.range_length
}

/// What a task does on a worker (a job's runs send one kind or, for a repair, one after the
/// other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    Load,
    Free,
}

pub async fn send_task(
    ctx: &JobContext,
    address: &str,
    kind: TaskKind,
    job_id: &str,
    task_id: u64,
    files: Vec<TaskFile>,
    options: &JobOptions,
) -> Result<TaskResponse, String> {
    let (route, body) = match kind {
        TaskKind::Load => (
            tasks::LOAD_ROUTE,
            serde_json::to_vec(&LoadTask {
                job_id: job_id.to_string(),
                task_id,
                files,
                skip_if_exists: options.skip_if_exists,
                metadata_only: options.metadata_only,
            }),
        ),
        TaskKind::Free => (
            tasks::FREE_ROUTE,
            serde_json::to_vec(&FreeTask {
                job_id: job_id.to_string(),
                task_id,
                paths: files.into_iter().map(|file| file.path).collect(),
            }),
        ),
    };
    post_task(ctx, address, route, body.map_err(|err| err.to_string())?, TASK_TIMEOUT).await
}

/// POSTs one task's JSON body to a worker (with the admin token when one is set) and returns
/// its answer; any failure to get it is the reason, naming the worker.
pub async fn post_task(
    ctx: &JobContext,
    address: &str,
    route: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<TaskResponse, String> {
    let mut request = ctx
        .http
        .post(format!("http://{address}{route}"))
        .header("content-type", "application/json")
        .timeout(timeout)
        .body(body);
    if let Some(token) = &ctx.admin_token {
        request = request.bearer_auth(token);
    }
    if let Some(secret) = &ctx.cluster_secret {
        request = request.header(hoard_common::secret::CLUSTER_SECRET_HEADER, secret.expose());
    }
    let response = request
        .send()
        .await
        .map_err(|err| format!("{address}: {}", hoard_client::describe_reqwest(&err)))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("{address} answered {status}: {}", text.trim()));
    }
    response
        .json()
        .await
        .map_err(|err| format!("{address}: unreadable task answer: {err}"))
}
