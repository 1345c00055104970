//! Job tasks the coordinator sends (docs/worker-http.md#tasks): load files (or ranges) into the
//! page store, free them, check how much of them is cached. Every task is idempotent: loading a
//! cached range reads nothing from the UFS, freeing a freed file frees nothing.

use std::ops::Range;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use hoard_common::api::tasks::{
    CheckTask, FileResult, FreeTask, LoadTask, TaskFile, TaskResponse, CHECK_ROUTE, FREE_ROUTE, LOAD_ROUTE,
    MAX_TASK_FILES, NOT_CACHED,
};
use hoard_common::api::{codes, ApiError};
use hoard_common::HoardPath;
use hoard_ufs::UfsError;
use serde::de::DeserializeOwned;

use crate::metrics;
use crate::reader::{OpenFile, ReadError};
use crate::WorkerState;

/// Largest task body accepted (413 beyond): 10,000 files of paths up to ~800 bytes.
pub const MAX_TASK_BODY_BYTES: usize = 8 << 20;

/// Files (ranges) of one task worked on at once.
pub const TASK_FILE_CONCURRENCY: usize = 16;

/// Pages of one file (range) of a load task filled at once.
pub const LOAD_PAGES_PER_FILE: usize = 4;

/// Times a load starts a file over with a fresh status when the file changed under it.
const LOAD_ATTEMPTS: usize = 2;

const FILE_CHANGED: &str = "FILE_CHANGED";
const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
const PAGE_STORE_ERROR: &str = "PAGE_STORE_ERROR";

type SharedState = Arc<WorkerState>;

/// This process's instance, in every task answer: random per process, so the coordinator
/// tells a restarted worker (whose acknowledgements before may be gone) from the same one.
pub fn instance() -> &'static str {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

fn answer(results: Vec<FileResult>) -> TaskResponse {
    TaskResponse {
        results,
        instance: Some(instance().to_string()),
    }
}

/// The task routes, with their own body limit.
pub(crate) fn routes() -> Router<SharedState> {
    Router::new()
        .route(LOAD_ROUTE, post(load_handler))
        .route(FREE_ROUTE, post(free_handler))
        .route(CHECK_ROUTE, post(check_handler))
        .layer(DefaultBodyLimit::max(MAX_TASK_BODY_BYTES))
}

/// A task's body, at most [`MAX_TASK_BODY_BYTES`]: a larger `Content-Length` is refused before
/// any of the body is read, and a body without one stops being read once past the limit.
/// Never allocates by a length the client gives.
struct TaskBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for TaskBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<TaskBody, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                PAYLOAD_TOO_LARGE,
                format!("task body larger than {MAX_TASK_BODY_BYTES} bytes"),
            )
        };
        if let Some(declared) = request.headers().get(header::CONTENT_LENGTH) {
            let declared = declared
                .to_str()
                .ok()
                .and_then(|value| value.trim().parse::<u64>().ok());
            match declared {
                Some(length) if length > MAX_TASK_BODY_BYTES as u64 => return Err(too_large()),
                Some(_) => {}
                None => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        codes::BAD_REQUEST,
                        "invalid Content-Length header",
                    ))
                }
            }
        }
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(TaskBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                codes::BAD_REQUEST,
                rejection.body_text(),
            )),
        }
    }
}

/// Every task needs the cluster secret when the worker has one (only the cluster's
/// coordinators send tasks) and the admin token when one is set: load and free change what the
/// worker holds, and check refreshes cached UFS status (which version is served) and can ask
/// the UFS about thousands of files.
struct Authorized;

impl axum::extract::FromRequestParts<SharedState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &SharedState,
    ) -> Result<Authorized, ApiError> {
        let refused = state
            .cluster_secret()
            .and_then(|secret| hoard_common::api::check_cluster_secret(&parts.headers, secret))
            .or_else(|| {
                state
                    .admin_token()
                    .and_then(|token| hoard_common::api::check_admin_token(&parts.headers, token))
            });
        match refused {
            Some(refused) => Err(refused),
            None => Ok(Authorized),
        }
    }
}

async fn load_handler(
    State(state): State<SharedState>,
    _authorized: Authorized,
    body: Result<TaskBody, ApiError>,
) -> Response {
    handle(&state, "load", body, |task: &LoadTask| task.files.len(), run_load).await
}

async fn free_handler(
    State(state): State<SharedState>,
    _authorized: Authorized,
    body: Result<TaskBody, ApiError>,
) -> Response {
    handle(&state, "free", body, |task: &FreeTask| task.paths.len(), run_free).await
}

async fn check_handler(
    State(state): State<SharedState>,
    _authorized: Authorized,
    body: Result<TaskBody, ApiError>,
) -> Response {
    handle(&state, "check", body, |task: &CheckTask| task.paths.len(), run_check).await
}

/// Parses and bounds a task body, runs it, answers its results (or a JSON error).
async fn handle<T, C, F, Fut>(
    state: &SharedState,
    kind: &'static str,
    body: Result<TaskBody, ApiError>,
    count: C,
    run: F,
) -> Response
where
    T: DeserializeOwned,
    C: FnOnce(&T) -> usize,
    F: FnOnce(SharedState, T) -> Fut,
    Fut: std::future::Future<Output = TaskResponse>,
{
    state.metrics.requests.inc();
    let task = match parse_task(body).and_then(|task: T| {
        let files = count(&task);
        if files > MAX_TASK_FILES {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_REQUEST,
                format!("a task carries at most {MAX_TASK_FILES} files, this one {files}"),
            ));
        }
        Ok(task)
    }) {
        Ok(task) => task,
        Err(err) => {
            state.metrics.request_errors.inc();
            return err.into_response();
        }
    };
    state.metrics.tasks.get_or_create(&metrics::kind(kind)).inc();
    let response = run(Arc::clone(state), task).await;
    let failed = response.results.iter().filter(|result| !result.ok).count();
    state
        .metrics
        .task_files_failed
        .get_or_create(&metrics::kind(kind))
        .inc_by(failed as u64);
    Json(response).into_response()
}

fn parse_task<T: DeserializeOwned>(body: Result<TaskBody, ApiError>) -> Result<T, ApiError> {
    let TaskBody(body) = body?;
    serde_json::from_slice(&body).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            format!("invalid task body: {err}"),
        )
    })
}

async fn run_load(state: SharedState, task: LoadTask) -> TaskResponse {
    let LoadTask {
        files,
        skip_if_exists,
        metadata_only,
        ..
    } = task;
    let options = LoadOptions {
        skip_if_exists,
        metadata_only,
    };
    let results = futures::stream::iter(files)
        .map(|spec| {
            let state = Arc::clone(&state);
            async move { state.load_file(&spec, options).await }
        })
        .buffered(TASK_FILE_CONCURRENCY)
        .collect()
        .await;
    answer(results)
}

async fn run_free(state: SharedState, task: FreeTask) -> TaskResponse {
    let results = futures::stream::iter(task.paths)
        .map(|path| {
            let state = Arc::clone(&state);
            async move { state.free_file(&path).await }
        })
        .buffered(TASK_FILE_CONCURRENCY)
        .collect()
        .await;
    answer(results)
}

async fn run_check(state: SharedState, task: CheckTask) -> TaskResponse {
    let results = futures::stream::iter(task.paths)
        .map(|path| {
            let state = Arc::clone(&state);
            async move { state.check_file(&path).await }
        })
        .buffered(TASK_FILE_CONCURRENCY)
        .collect()
        .await;
    answer(results)
}

/// The flags of a [`LoadTask`] that apply to each of its files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub skip_if_exists: bool,
    pub metadata_only: bool,
}

/// Why one file of a task failed: a code and a message.
struct Failure {
    code: &'static str,
    message: String,
}

impl From<ReadError> for Failure {
    fn from(err: ReadError) -> Failure {
        let message = err.to_string();
        let code = match err {
            ReadError::Ufs(ufs) => ufs_code(&ufs),
            ReadError::FileChanged(_) => FILE_CHANGED,
            ReadError::Store { .. } => PAGE_STORE_ERROR,
        };
        Failure { code, message }
    }
}

fn ufs_code(err: &UfsError) -> &'static str {
    match err {
        UfsError::NotFound(_) => codes::NOT_FOUND,
        UfsError::InvalidPath(_) => codes::INVALID_PATH,
        UfsError::IsDirectory(_) => codes::IS_A_DIRECTORY,
        UfsError::NotDirectory(_) => codes::NOT_A_DIRECTORY,
        UfsError::PermissionDenied(_) => "PERMISSION_DENIED",
        UfsError::Changed(_) => FILE_CHANGED,
        UfsError::Config(_) | UfsError::Backend { .. } => codes::UFS_ERROR,
    }
}

/// A result with every figure 0, to fill in.
fn empty_result(path: &str, offset: Option<u64>) -> FileResult {
    FileResult {
        path: path.to_string(),
        offset,
        ok: false,
        file_length: 0,
        range_length: 0,
        cached_bytes: 0,
        ufs_bytes_read: 0,
        freed_bytes: 0,
        skipped: false,
        error: None,
        code: None,
    }
}

fn fail(mut result: FileResult, failure: Failure) -> FileResult {
    result.ok = false;
    result.code = Some(failure.code.to_string());
    result.error = Some(failure.message);
    result
}

fn parse(raw: &str) -> Result<HoardPath, Failure> {
    HoardPath::parse(raw).map_err(|err| Failure {
        code: codes::INVALID_PATH,
        message: err.to_string(),
    })
}

/// The current version of the file at `path` (a directory is a failure).
async fn current_file(state: &WorkerState, path: &HoardPath) -> Result<Arc<OpenFile>, Failure> {
    let file = state.refresh_status(path).await?;
    if file.status.is_dir {
        return Err(Failure {
            code: codes::IS_A_DIRECTORY,
            message: format!("is a directory: {path}"),
        });
    }
    Ok(file)
}

/// The byte range a task file asks for, clamped to a file of `length` bytes: the whole file
/// without offset and length, `offset..` without length, `..length` without offset.
pub fn task_range(offset: Option<u64>, length: Option<u64>, file_length: u64) -> Range<u64> {
    let start = offset.unwrap_or(0).min(file_length);
    let end = match length {
        Some(length) => start.saturating_add(length).min(file_length),
        None => file_length,
    };
    start..end
}

impl WorkerState {
    /// Loads one file (range) of a load task; never fails as a whole (a failure is a result with
    /// `ok: false`).
    pub async fn load_file(&self, spec: &TaskFile, options: LoadOptions) -> FileResult {
        let mut result = empty_result(&spec.path, spec.offset);
        let path = match parse(&spec.path) {
            Ok(path) => path,
            Err(failure) => return fail(result, failure),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.load_once(&path, spec, options, &mut result).await {
                Ok(()) => break,
                Err(failure) if failure.code == FILE_CHANGED && attempt < LOAD_ATTEMPTS => {
                    tracing::info!(path = %path, "file changed during a load; loading the new version");
                }
                Err(failure) => {
                    result = fail(result, failure);
                    break;
                }
            }
        }
        self.metrics.task_bytes_loaded.inc_by(result.ufs_bytes_read);
        if result.ok && result.skipped {
            self.metrics.task_files_skipped.inc();
        } else if result.ok && !options.metadata_only {
            self.metrics.task_files_loaded.inc();
        }
        result
    }

    /// One attempt at a load; `result.ufs_bytes_read` adds up over attempts.
    async fn load_once(
        &self,
        path: &HoardPath,
        spec: &TaskFile,
        options: LoadOptions,
        result: &mut FileResult,
    ) -> Result<(), Failure> {
        let file = current_file(self, path).await?;
        let range = task_range(spec.offset, spec.length, file.status.length);
        result.file_length = file.status.length;
        result.range_length = range.end - range.start;
        let cached = self.range_cached_bytes(&file, range.clone()).await;
        result.cached_bytes = cached;
        if options.metadata_only {
            result.ok = true;
            return Ok(());
        }
        if options.skip_if_exists && cached == result.range_length {
            result.ok = true;
            result.skipped = true;
            return Ok(());
        }
        if cached < result.range_length {
            let pages = self.pages_of(range.clone());
            let mut loads = futures::stream::iter(pages)
                .map(|index| {
                    let file = &file;
                    async move { self.load_page(file, index).await }
                })
                .buffer_unordered(LOAD_PAGES_PER_FILE);
            loop {
                match loads.try_next().await {
                    Ok(Some(read)) => result.ufs_bytes_read += read,
                    Ok(None) => break,
                    Err(err) => {
                        drop(loads);
                        result.cached_bytes = self.range_cached_bytes(&file, range).await;
                        return Err(err.into());
                    }
                }
            }
        }
        // Every page was written (not just queued) before `load_page` returned; a range that
        // is not whole now lost pages to eviction meanwhile, and is not reported loaded.
        result.cached_bytes = self.range_cached_bytes(&file, range).await;
        if result.cached_bytes < result.range_length {
            return Err(Failure {
                code: NOT_CACHED,
                message: format!(
                    "only {} of {} bytes stayed cached (evicted to make room)",
                    result.cached_bytes, result.range_length
                ),
            });
        }
        result.ok = true;
        Ok(())
    }

    /// Indexes of the pages `range` touches.
    fn pages_of(&self, range: Range<u64>) -> Range<u64> {
        if range.is_empty() {
            return 0..0;
        }
        let page_size = self.page_size();
        range.start / page_size..(range.end - 1) / page_size + 1
    }

    /// Frees the pages of the current version of one file (a file gone from the UFS frees
    /// nothing and is fine: its pages can no longer be reached and age out by LRU).
    pub async fn free_file(&self, raw: &str) -> FileResult {
        let result = empty_result(raw, None);
        let path = match parse(raw) {
            Ok(path) => path,
            Err(failure) => return fail(result, failure),
        };
        let file = match current_file(self, &path).await {
            Ok(file) => file,
            Err(failure) if failure.code == codes::NOT_FOUND => {
                self.metrics.task_files_freed.inc();
                return FileResult { ok: true, ..result };
            }
            Err(failure) => return fail(result, failure),
        };
        let store = Arc::clone(self.store());
        let id = file.id;
        let deleted = tokio::task::spawn_blocking(move || {
            let freed = store.delete_file(id);
            (freed, store.cached_bytes(id))
        })
        .await;
        let mut result = FileResult {
            file_length: file.status.length,
            range_length: file.status.length,
            ..result
        };
        match deleted {
            Ok((Ok(freed), left)) => {
                self.metrics.task_files_freed.inc();
                self.metrics.task_bytes_freed.inc_by(freed);
                result.ok = true;
                result.freed_bytes = freed;
                result.cached_bytes = left;
                result
            }
            Ok((Err(err), left)) => {
                result.cached_bytes = left;
                fail(
                    result,
                    Failure {
                        code: PAGE_STORE_ERROR,
                        message: err.to_string(),
                    },
                )
            }
            Err(err) => fail(
                result,
                Failure {
                    code: codes::INTERNAL,
                    message: err.to_string(),
                },
            ),
        }
    }

    /// The current length of one file and the bytes of that version cached; reads no data.
    pub async fn check_file(&self, raw: &str) -> FileResult {
        let result = empty_result(raw, None);
        let path = match parse(raw) {
            Ok(path) => path,
            Err(failure) => return fail(result, failure),
        };
        match current_file(self, &path).await {
            Ok(file) => FileResult {
                ok: true,
                file_length: file.status.length,
                range_length: file.status.length,
                cached_bytes: self.cached_bytes(file.id).await,
                ..result
            },
            Err(failure) => fail(result, failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_clamped() {
        assert_eq!(task_range(None, None, 10), 0..10);
        assert_eq!(task_range(Some(3), None, 10), 3..10);
        assert_eq!(task_range(None, Some(4), 10), 0..4);
        assert_eq!(task_range(Some(8), Some(4), 10), 8..10);
        assert_eq!(task_range(Some(12), Some(4), 10), 10..10);
        assert_eq!(task_range(Some(u64::MAX), Some(u64::MAX), 10), 10..10);
        assert_eq!(task_range(Some(2), Some(u64::MAX), 10), 2..10);
        assert_eq!(task_range(None, None, 0), 0..0);
    }
}
