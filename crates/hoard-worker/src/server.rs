//! The worker's HTTP API (docs/worker-http.md): file bytes with `Range`, stat, list, health,
//! metrics, and the job task endpoints (`crate::tasks`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use hoard_common::api::{self, codes, ApiError, FileStat, ListEntry, WorkerHealth};
use hoard_common::HoardPath;
use hoard_config::{NetworkConfig, WorkerConfig};
use hoard_http::{Claim, Conn, ConnectionRef, ConnectionTable};
use hoard_pagestore::PageBytes;
use hoard_ufs::UfsError;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::direct;
use crate::range::{self, RangeError};
use crate::readahead::{ReadAhead, ReadAheadPages};
use crate::reader::{OpenFile, ReadError};
use crate::WorkerState;

type SharedState = Arc<WorkerState>;

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/files", get(get_root_file).head(get_root_file))
        .route("/files/", get(get_root_file).head(get_root_file))
        .route("/files/{*path}", get(get_file).head(get_file))
        .route(api::STAT_ROUTE, get(stat))
        .route(api::LIST_ROUTE, get(list))
        .route(api::CACHED_ROUTE, get(cached))
        .route(api::PASSIVE_CACHE_ROUTE, axum::routing::post(passive_cache))
        .route(api::HEALTH_ROUTE, get(health))
        .route(api::METRICS_ROUTE, get(metrics))
        .merge(crate::tasks::routes())
        .fallback(not_found_route)
        .with_state(state)
}

/// How a worker serves: from `hoard.worker.*` (`ServeOptions::from_config`).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `hoard.worker.http.max.header.size`.
    pub max_header_bytes: usize,
    /// Event-loop threads; 0 serves on the caller's runtime.
    pub event_loops: usize,
    /// `hoard.worker.network.*`: timeouts and the connection cap.
    pub network: NetworkConfig,
    /// `hoard.worker.network.readahead.size`.
    pub readahead_bytes: u64,
}

impl ServeOptions {
    pub fn from_config(worker: &WorkerConfig) -> ServeOptions {
        ServeOptions {
            max_header_bytes: usize::try_from(worker.max_request_header_bytes).unwrap_or(usize::MAX),
            event_loops: worker.event_loops(),
            network: worker.network.clone(),
            readahead_bytes: worker.readahead_size,
        }
    }
}

/// [`serve_with`] with the default limits and read-ahead.
pub async fn serve(listener: TcpListener, state: SharedState, max_header_bytes: usize, event_loops: usize) {
    let defaults = hoard_config::SiteConfig::defaults(std::path::Path::new("."));
    let options = ServeOptions {
        max_header_bytes,
        event_loops,
        ..ServeOptions::from_config(&defaults.worker)
    };
    serve_with(listener, state, options).await;
}

/// Serves the router on `listener` until the task is dropped (it never returns on its own:
/// accept errors such as running out of descriptors are handled and serving goes on).
///
/// Connections are dealt round-robin to `event_loops` single-threaded event loops, each on its
/// own thread, like nginx's worker processes: a connection stays on one thread, so a request
/// costs no work-stealing hand-off or cross-thread wake-up, and connections spread evenly
/// (sharing the listening socket between loops lets the kernel pile them onto one). Blocking
/// work still goes to each loop's blocking pool. `0` serves on the caller's runtime instead.
///
/// Each connection starts on the direct path for file reads (`direct.rs`) and moves to hyper
/// and the router at its first other request. It is HTTP/1.1 with a bounded header buffer, so
/// an oversized request head is refused before it is buffered. Every connection holds a slot
/// of the listener's table (hoard-http): the connection cap and the timeouts of
/// docs/worker-http.md#limits apply on both paths.
pub async fn serve_with(listener: TcpListener, state: SharedState, options: ServeOptions) {
    let readahead = ReadAheadPages::of(options.readahead_bytes, state.page_size());
    // A quarter of the open-file limit: the memory tier may take half for its sealed files.
    let cap = hoard_http::connection_cap("worker", options.network.max_connections, 4);
    let table = ConnectionTable::new("worker", &options.network, cap);
    let server = Arc::new(direct::Server {
        app: router(Arc::clone(&state))
            .layer(axum::Extension(readahead))
            .layer(axum::Extension(Arc::new(crate::passive::PassiveCache::start(
                Arc::downgrade(&state),
            ))))
            .layer(axum::Extension(hoard_http::Connections(Arc::clone(&table)))),
        state,
        // hyper refuses buffer limits below 8KiB.
        max_buf: options.max_header_bytes.max(8192),
        readahead,
    });
    let loops = match start_event_loops(options.event_loops, &server) {
        Ok(loops) => loops,
        Err(err) => {
            tracing::warn!(error = %err, "cannot start event loop threads; serving on the main runtime");
            Vec::new()
        }
    };
    let mut next = 0usize;
    hoard_http::accept_loop(listener, table, move |stream, claim| {
        if loops.is_empty() {
            tokio::spawn(direct::serve_connection(Conn::new(stream, claim), Arc::clone(&server)));
            return;
        }
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "cannot hand a connection to an event loop");
                return;
            }
        };
        next = (next + 1) % loops.len();
        if loops[next].send((stream, claim)).is_err() {
            tracing::error!(event_loop = next, "an event loop has stopped");
        }
    })
    .await;
}

/// A connection on its way to an event loop, with its slot.
type Handoff = (std::net::TcpStream, Claim);

/// Starts `count` event-loop threads; each serves the connections sent to its channel.
fn start_event_loops(
    count: usize,
    server: &Arc<direct::Server>,
) -> std::io::Result<Vec<tokio::sync::mpsc::UnboundedSender<Handoff>>> {
    let mut senders = Vec::with_capacity(count);
    for index in 0..count {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Handoff>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let server = Arc::clone(server);
        std::thread::Builder::new()
            .name(format!("hoard-io-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some((stream, claim)) = receiver.recv().await {
                        match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => {
                                tokio::spawn(direct::serve_connection(Conn::new(stream, claim), Arc::clone(&server)));
                            }
                            Err(err) => tracing::warn!(error = %err, "cannot register a connection"),
                        }
                    }
                });
            })?;
        senders.push(sender);
    }
    Ok(senders)
}

impl From<ReadError> for ApiError {
    fn from(err: ReadError) -> ApiError {
        match err {
            ReadError::Ufs(ufs) => ufs_error(ufs),
            ReadError::FileChanged(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "FILE_CHANGED", err.to_string())
            }
            ReadError::Store { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "PAGE_STORE_ERROR", err.to_string())
            }
        }
    }
}

fn ufs_error(err: UfsError) -> ApiError {
    let message = err.to_string();
    match err {
        UfsError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message),
        UfsError::InvalidPath(_) => ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_PATH, message),
        UfsError::IsDirectory(_) => ApiError::new(StatusCode::BAD_REQUEST, codes::IS_A_DIRECTORY, message),
        UfsError::NotDirectory(_) => ApiError::new(StatusCode::BAD_REQUEST, codes::NOT_A_DIRECTORY, message),
        UfsError::PermissionDenied(_) => ApiError::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message),
        UfsError::Changed(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "FILE_CHANGED", message),
        UfsError::Config(_) | UfsError::Backend { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, codes::UFS_ERROR, message)
        }
    }
}

fn parse_path(raw: &str) -> Result<HoardPath, ApiError> {
    if raw.starts_with('/') {
        return Ok(HoardPath::parse(raw)?);
    }
    Ok(HoardPath::parse(&format!("/{raw}"))?)
}

async fn not_found_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such route")
}

async fn get_root_file() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, codes::IS_A_DIRECTORY, "is a directory: /")
}

async fn get_file(
    State(state): State<SharedState>,
    method: Method,
    raw_path: Result<Path<String>, PathRejection>,
    readahead: Option<axum::Extension<ReadAheadPages>>,
    connection: Option<axum::Extension<ConnectionRef>>,
    headers: HeaderMap,
) -> Response {
    state.metrics.requests.inc();
    let raw_path = match raw_path {
        Ok(Path(raw_path)) => raw_path,
        // A percent-encoding that does not decode (to UTF-8): the documented JSON error.
        Err(rejection) => {
            state.metrics.request_errors.inc();
            return ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_PATH, rejection.body_text()).into_response();
        }
    };
    // Both are the server's (absent when the router is served by other means).
    let readahead = readahead.map_or(DEFAULT_READAHEAD, |axum::Extension(pages)| pages);
    let connection = connection.as_ref().map(|axum::Extension(connection)| connection);
    match serve_file(&state, method, &raw_path, &headers, readahead, connection).await {
        Ok(response) => response,
        Err(err) => {
            state.metrics.request_errors.inc();
            err.into_response()
        }
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, ApiError> {
    match headers.get(&name) {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_REQUEST,
                format!("{name} header is not ASCII"),
            )
        }),
    }
}

/// The headers of a file request that shape its answer.
pub(crate) struct FileRequest<'a> {
    pub range: Option<&'a str>,
    pub if_match: Option<&'a str>,
}

/// A file answer with its status and headers decided: the body is `range` of `file`.
pub(crate) struct FileReply {
    pub status: StatusCode,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    pub file: Arc<OpenFile>,
    pub range: std::ops::Range<u64>,
}

/// Why a file request gets no body.
pub(crate) enum Refusal {
    Error(ApiError),
    /// 416, with the file's length for `Content-Range`.
    NotSatisfiable {
        length: u64,
        message: String,
    },
}

impl From<ApiError> for Refusal {
    fn from(err: ApiError) -> Refusal {
        Refusal::Error(err)
    }
}

impl From<ReadError> for Refusal {
    fn from(err: ReadError) -> Refusal {
        Refusal::Error(err.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Error(err) => err.into_response(),
            Refusal::NotSatisfiable { length, message } => {
                let mut response =
                    ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, codes::RANGE_NOT_SATISFIABLE, message)
                        .into_response();
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                response
            }
        }
    }
}

/// Resolves the file, checks `If-Match` and the range, and decides status and headers. Shared
/// by the hyper routes and the direct path (`direct.rs`), so both answer alike.
pub(crate) async fn prepare_file_reply(
    state: &SharedState,
    raw_path: &str,
    request: &FileRequest<'_>,
) -> Result<FileReply, Refusal> {
    let path = parse_path(raw_path)?;
    let file = state.open(&path).await?;
    let etag = file.etag.as_str();
    // A client resuming a read elsewhere pins the version it started with: never mix versions.
    if let Some(expected) = request.if_match {
        let matches = expected.split(',').any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag == etag
        });
        if !matches {
            return Err(Refusal::Error(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "VERSION_MISMATCH",
                format!("file {path} is now version {} (asked for {expected})", file.version),
            )));
        }
    }
    let length = file.status.length;
    let range = match range::resolve(request.range, length) {
        Ok(range) => range,
        Err(RangeError::Malformed(message)) => {
            return Err(Refusal::Error(ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_REQUEST,
                message,
            )))
        }
        Err(RangeError::NotSatisfiable(message)) => return Err(Refusal::NotSatisfiable { length, message }),
    };
    let (status, byte_range) = match range {
        Some(range) => (StatusCode::PARTIAL_CONTENT, range),
        None => (StatusCode::OK, 0..length),
    };
    let text = |value: &str| {
        HeaderValue::from_str(value)
            .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, err.to_string()))
    };
    let mut headers = vec![
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
        (header::ETAG, text(etag)?),
        (
            header::CONTENT_LENGTH,
            HeaderValue::from(byte_range.end - byte_range.start),
        ),
        (
            header::HeaderName::from_static(api::WORKER_ID_HEADER),
            text(&state.worker_id)?,
        ),
        (
            header::HeaderName::from_static(api::VERSION_HEADER),
            text(&file.version)?,
        ),
    ];
    if status == StatusCode::PARTIAL_CONTENT {
        let content_range = format!("bytes {}-{}/{length}", byte_range.start, byte_range.end - 1);
        headers.push((header::CONTENT_RANGE, text(&content_range)?));
    }
    Ok(FileReply {
        status,
        headers,
        file,
        range: byte_range,
    })
}

/// Pages fetched ahead when nothing says otherwise (`hoard.worker.network.readahead.size`'s
/// default with 1MiB pages).
const DEFAULT_READAHEAD: ReadAheadPages = ReadAheadPages(4);

async fn serve_file(
    state: &SharedState,
    method: Method,
    raw_path: &str,
    headers: &HeaderMap,
    readahead: ReadAheadPages,
    connection: Option<&ConnectionRef>,
) -> Result<Response, ApiError> {
    let request = FileRequest {
        range: header_str(headers, header::RANGE)?,
        if_match: header_str(headers, header::IF_MATCH)?,
    };
    let reply = match prepare_file_reply(state, raw_path, &request).await {
        Ok(reply) => reply,
        Err(Refusal::Error(err)) => return Err(err),
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let mut builder = Response::builder().status(reply.status);
    for (name, value) in reply.headers {
        builder = builder.header(name, value);
    }
    let body = if method == Method::HEAD {
        builder = builder.header(api::CACHED_BYTES_HEADER, state.cached_bytes(reply.file.id).await);
        Body::empty()
    } else {
        match file_body(Arc::clone(state), reply.file, reply.range, readahead, connection).await? {
            None => Body::empty(),
            // A whole body: hyper sends it with the headers in one write.
            Some(FileBody { first, rest: None }) => Body::from(first.into_bytes()),
            Some(FileBody {
                first,
                rest: Some(rest),
            }) => {
                let stream = futures::stream::once(async move { Ok::<PageBytes, ReadError>(first) })
                    .chain(rest)
                    .map(|part| part.map(PageBytes::into_bytes));
                Body::from_stream(stream)
            }
        }
    };
    builder
        .body(body)
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, err.to_string()))
}

/// A response body in page-sized parts.
pub(crate) struct FileBody {
    pub first: PageBytes,
    /// The parts after the first, when the range spans more than one page.
    pub rest: Option<futures::stream::BoxStream<'static, Result<PageBytes, ReadError>>>,
}

/// The body for `range` of `file` (`None` when the range is empty): the first page is fetched
/// before answering, so a missing or changed file is an error status rather than a cut-off
/// body; the rest stream with pages fetched ahead while the client keeps up (`readahead.rs`;
/// `connection` tells whether it does).
pub(crate) async fn file_body(
    state: SharedState,
    file: Arc<OpenFile>,
    range: std::ops::Range<u64>,
    readahead: ReadAheadPages,
    connection: Option<&ConnectionRef>,
) -> Result<Option<FileBody>, ApiError> {
    if range.is_empty() {
        return Ok(None);
    }
    let page_size = state.page_size();
    let first_page = range.start / page_size;
    let last_page = (range.end - 1) / page_size;
    // The part of page `index` that lies inside the requested range, as offsets in the page.
    let within = move |index: u64| -> std::ops::Range<u64> {
        let page_start = index * page_size;
        range.start.saturating_sub(page_start)..(range.end - page_start).min(page_size)
    };
    let first = state.page_slice(&file, first_page, within(first_page)).await?;
    state.metrics.bytes_served.inc_by(first.len() as u64);
    if first_page == last_page {
        return Ok(Some(FileBody { first, rest: None }));
    }
    let fetch = move |index: u64| {
        let state = Arc::clone(&state);
        let file = Arc::clone(&file);
        async move {
            let slice = state.page_slice(&file, index, within(index)).await.inspect_err(|err| {
                tracing::warn!(error = %err, path = %file.status.path, page = index, "read failed mid-response");
            })?;
            state.metrics.bytes_served.inc_by(slice.len() as u64);
            Ok::<PageBytes, ReadError>(slice)
        }
    };
    let rest = ReadAhead::new(first_page + 1..=last_page, fetch, readahead, connection.cloned()).boxed();
    Ok(Some(FileBody {
        first,
        rest: Some(rest),
    }))
}

#[derive(Debug, Deserialize)]
struct PathQuery {
    path: Option<String>,
}

fn query_path(query: &PathQuery) -> Result<HoardPath, ApiError> {
    let raw = query.path.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            "missing query parameter: path",
        )
    })?;
    Ok(HoardPath::parse(raw)?)
}

/// A query string that does not decode: the documented JSON error rather than axum's text.
fn query_error(rejection: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, rejection.body_text())
}

async fn stat(
    State(state): State<SharedState>,
    query: Result<Query<PathQuery>, QueryRejection>,
) -> Result<axum::Json<FileStat>, ApiError> {
    state.metrics.requests.inc();
    let Query(query) = query.map_err(query_error)?;
    let path = query_path(&query)?;
    let file = state.status(&path).await?;
    let status = &file.status;
    let version = file.version.clone();
    let cached_bytes = if status.is_dir {
        0
    } else {
        state.cached_bytes(file.id).await
    };
    Ok(axum::Json(FileStat {
        path: path.to_string(),
        is_dir: status.is_dir,
        length: status.length,
        modification_time_ms: status.modification_time_ms,
        etag: status.etag.clone(),
        version,
        cached_bytes,
        page_size: state.page_size(),
    }))
}

/// Whether the file is cached whole here (a client's prefer-cached probe; no UFS call).
async fn cached(
    State(state): State<SharedState>,
    query: Result<Query<PathQuery>, QueryRejection>,
) -> Result<axum::Json<api::CachedAnswer>, ApiError> {
    state.metrics.requests.inc();
    let Query(query) = query.map_err(query_error)?;
    let path = query_path(&query)?;
    let (whole, cached_bytes) = state.cached_whole(&path).await;
    Ok(axum::Json(api::CachedAnswer { whole, cached_bytes }))
}

/// Queues a background load of the file (the passive cache); answers at once.
async fn passive_cache(
    State(state): State<SharedState>,
    passive: Option<axum::Extension<Arc<crate::passive::PassiveCache>>>,
    query: Result<Query<PathQuery>, QueryRejection>,
) -> Result<(StatusCode, axum::Json<api::PassiveCacheAnswer>), ApiError> {
    state.metrics.requests.inc();
    let Query(query) = query.map_err(query_error)?;
    let path = query_path(&query)?;
    let Some(axum::Extension(passive)) = passive else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::INTERNAL,
            "the passive cache is not running on this listener",
        ));
    };
    let result = match passive.submit(path) {
        crate::passive::Submitted::Queued => {
            state.metrics.passive_loaded("submitted");
            "queued"
        }
        crate::passive::Submitted::AlreadyPending => "pending",
        crate::passive::Submitted::Dropped => {
            state.metrics.passive_dropped();
            "dropped"
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(api::PassiveCacheAnswer {
            result: result.to_string(),
        }),
    ))
}

/// Streams one directory level as newline-delimited JSON `ListEntry` objects.
async fn list(
    State(state): State<SharedState>,
    query: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.metrics.requests.inc();
    let Query(query) = query.map_err(query_error)?;
    let path = query_path(&query)?;
    let entries = state.mounts().list(&path).await.map_err(ufs_error)?;
    let lines = entries.map(|entry| {
        let status = entry?;
        let line = ListEntry {
            name: status.path.file_name().to_string(),
            path: status.path.to_string(),
            is_dir: status.is_dir,
            length: status.length,
            modification_time_ms: status.modification_time_ms,
        };
        let mut json = serde_json::to_vec(&line).map_err(|err| UfsError::Backend {
            path: status.path.to_string(),
            message: err.to_string(),
            retryable: false,
        })?;
        json.push(b'\n');
        Ok::<Bytes, UfsError>(Bytes::from(json))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, err.to_string()))
}

async fn health(State(state): State<SharedState>) -> axum::Json<WorkerHealth> {
    let store = Arc::clone(state.store());
    let stats = tokio::task::spawn_blocking(move || store.stats())
        .await
        .unwrap_or_default();
    axum::Json(WorkerHealth {
        id: state.worker_id.clone(),
        cluster_name: state.cluster_name.clone(),
        address: state.address.clone(),
        status: "ok".to_string(),
        capacity_bytes: stats.capacity_bytes,
        used_bytes: stats.used_bytes,
        cached_pages: stats.pages,
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

async fn metrics(
    State(state): State<SharedState>,
    connections: Option<axum::Extension<hoard_http::Connections>>,
) -> Response {
    let store = Arc::clone(state.store());
    let stats = tokio::task::spawn_blocking(move || store.stats())
        .await
        .unwrap_or_default();
    let connections = connections.map(|axum::Extension(hoard_http::Connections(table))| table.stats());
    let text = state.metrics.render(&stats, connections.as_ref());
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
