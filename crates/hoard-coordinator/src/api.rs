//! REST handlers. Errors are `{"error": "...", "code": "..."}` with a 4xx status for bad input
//! and 5xx when the metastore fails; every request that changes state needs the admin token
//! when one is configured, and membership changes always need the cluster secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use hoard_common::api::coordinator::{self as routes, CoordinatorHealth, Heartbeat, SubmitJob, SubmitResponse};
use hoard_common::api::{codes, ApiError};
use hoard_meta::jobs::{JobError, JobOptions, JobState, JobType};
use hoard_meta::{now_millis, MetaError, WorkerRegistration};
use serde::Deserialize;

use crate::{ApiFailure, CoordinatorState};

/// Registrations and heartbeats are small; nothing the API takes is larger.
const MAX_BODY_BYTES: usize = 64 << 10;

pub(crate) type SharedState = Arc<CoordinatorState>;

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route(routes::HEALTH_ROUTE, get(health))
        .route(routes::METRICS_ROUTE, get(metrics))
        .route(routes::OPENAPI_ROUTE, get(openapi))
        .route(routes::NODES_ROUTE, get(nodes))
        .route(routes::LEADER_ROUTE, get(leader))
        .route(routes::WORKERS_ROUTE, get(workers).post(register))
        .route(&format!("{}/{{id}}", routes::WORKERS_ROUTE), delete(remove))
        .route(&format!("{}/{{id}}/heartbeat", routes::WORKERS_ROUTE), put(heartbeat))
        .route(routes::JOBS_ROUTE, get(list_jobs).post(submit_job))
        .route(&format!("{}/{{id}}", routes::JOBS_ROUTE), get(get_job))
        .route(&format!("{}/{{id}}/stop", routes::JOBS_ROUTE), post(stop_job))
        .route(&format!("{}/{{id}}/rerun", routes::JOBS_ROUTE), post(rerun_job))
        .route(
            hoard_common::replica::REPLICA_RULES_ROUTE,
            get(crate::rules_api::list)
                .post(crate::rules_api::set)
                .delete(crate::rules_api::remove),
        )
        .route(hoard_common::replica::REPLICAS_ROUTE, get(crate::rules_api::replicas))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), require_token))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A UFS failure while the coordinator looked at `path` (`doing`: "check", "list"): 404 for a
/// path the UFS does not have, 502 otherwise.
pub(crate) fn ufs_error(err: hoard_ufs::UfsError, path: &hoard_common::HoardPath, doing: &str) -> ApiError {
    match err {
        hoard_ufs::UfsError::NotFound(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("no such file or directory in the UFS: {path}"),
        ),
        other => ApiError::new(
            StatusCode::BAD_GATEWAY,
            codes::UFS_ERROR,
            format!("cannot {doing} {path}: {other}"),
        ),
    }
}

pub(crate) fn meta_error(err: MetaError) -> ApiError {
    let (status, code) = match &err {
        MetaError::UnknownWorker(_) => (StatusCode::NOT_FOUND, codes::UNKNOWN_WORKER),
        MetaError::WorkerOnline { .. } => (StatusCode::CONFLICT, codes::WORKER_ONLINE),
        MetaError::IdInUse { .. } => (StatusCode::CONFLICT, codes::WORKER_ID_IN_USE),
        MetaError::Unavailable(_) | MetaError::Timeout { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, codes::METASTORE_UNAVAILABLE)
        }
        MetaError::Corrupt { .. } | MetaError::Embedded { .. } | MetaError::Config(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL)
        }
    };
    if status.is_server_error() {
        tracing::error!(error = %err, "metastore request failed");
    }
    ApiError::new(status, code, err.to_string())
}

impl From<ApiFailure> for ApiError {
    fn from(failure: ApiFailure) -> ApiError {
        match failure {
            ApiFailure::Meta(err) => meta_error(err),
            ApiFailure::WrongMembership(_) => {
                ApiError::new(StatusCode::CONFLICT, codes::WRONG_MEMBERSHIP, failure.to_string())
            }
        }
    }
}

/// A JSON request body, read strictly: a body that is not JSON, has a field its type does not
/// define, or lacks one it needs is a 400 with serde's own message (`unknown field `replica`,
/// expected one of ...`); one over [`MAX_BODY_BYTES`] is a 413. Both are the documented
/// `{"error", "code": "BAD_REQUEST"}`.
pub(crate) struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody<T>, ApiError> {
        read_json(request, state, true).await.map(JsonBody)
    }
}

/// [`JsonBody`] whatever the Content-Type says (the body must still be JSON): for routes the
/// documentation shows with a bare `curl -d`, which sends a form Content-Type.
pub(crate) struct AnyJsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for AnyJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<AnyJsonBody<T>, ApiError> {
        read_json(request, state, false).await.map(AnyJsonBody)
    }
}

async fn read_json<T: serde::de::DeserializeOwned, S: Send + Sync>(
    request: Request,
    state: &S,
    require_json_type: bool,
) -> Result<T, ApiError> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if require_json_type && !is_json {
        return Err(bad_request(
            "expected a JSON body with 'Content-Type: application/json'",
        ));
    }
    let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
        let status = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, codes::BAD_REQUEST, rejection.body_text())
    })?;
    serde_json::from_slice(&bytes).map_err(|err| bad_request(err.to_string()))
}

/// Proof that a request carries the cluster secret: a handler that takes it refuses anything
/// else with 401 before it reads the body. Membership changes take it.
struct ClusterMember;

impl FromRequestParts<SharedState> for ClusterMember {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<ClusterMember, ApiError> {
        match hoard_common::api::check_cluster_secret(&parts.headers, &state.cluster_secret) {
            None => Ok(ClusterMember),
            Some(refused) => {
                REFUSALS.fetch_add(1, Ordering::Relaxed);
                let now = now_millis();
                let last = LAST_REFUSAL_LOG_MS.load(Ordering::Relaxed);
                // At most one warning a second, however many requests are refused.
                if now.saturating_sub(last) >= 1000
                    && LAST_REFUSAL_LOG_MS
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        method = %parts.method,
                        path = %parts.uri.path(),
                        reason = %refused.message,
                        refused_so_far = REFUSALS.load(Ordering::Relaxed),
                        "refused a membership change without the cluster secret"
                    );
                }
                Err(refused)
            }
        }
    }
}

/// Membership changes refused for the cluster secret since start, and when the last warning
/// about them was logged.
static REFUSALS: AtomicU64 = AtomicU64::new(0);
static LAST_REFUSAL_LOG_MS: AtomicU64 = AtomicU64::new(0);

/// Rejects state-changing requests without the configured admin token.
async fn require_token(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.admin_token.as_deref() else {
        return next.run(request).await;
    };
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    match hoard_common::api::check_admin_token(request.headers(), expected) {
        None => next.run(request).await,
        Some(refused) => refused.into_response(),
    }
}

async fn health(State(state): State<SharedState>) -> Json<CoordinatorHealth> {
    Json(CoordinatorHealth {
        status: "ok".to_string(),
        coordinator_id: state.id.clone(),
        membership: state.membership_kind().to_string(),
        metastore: state.metastore_kind().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

async fn metrics(
    State(state): State<SharedState>,
    connections: Option<axum::Extension<hoard_http::Connections>>,
) -> Response {
    // Refresh the gauges; a store failure leaves the last values.
    if let Err(err) = state.nodes().await {
        tracing::warn!(error = %err, "cannot refresh membership gauges");
    }
    match state.job_store.list().await {
        Ok(jobs) => state.metrics.set_jobs(&crate::jobs::count_states(&jobs)),
        Err(err) => tracing::warn!(error = %err, "cannot refresh job gauges"),
    }
    let connections = connections.map(|axum::Extension(hoard_http::Connections(table))| table.stats());
    let mut response = state.metrics.render(connections.as_ref()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

async fn openapi() -> Response {
    let mut response = crate::openapi::DOCUMENT.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn nodes(State(state): State<SharedState>) -> Result<Response, ApiError> {
    Ok(Json(state.nodes().await.map_err(meta_error)?).into_response())
}

async fn leader(State(state): State<SharedState>) -> Result<Response, ApiError> {
    match state.singleton_holder().await {
        Some(holder) => Ok(Json(holder).into_response()),
        None => Err(meta_error(MetaError::Unavailable(
            "cannot tell which coordinator holds the singleton duties".into(),
        ))),
    }
}

async fn workers(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let nodes = state.nodes().await.map_err(meta_error)?;
    Ok(Json(serde_json::json!({ "workers": nodes.workers })).into_response())
}

fn check_registration(registration: &WorkerRegistration) -> Result<(), ApiError> {
    let bad = |message: String| Err(ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message));
    if uuid::Uuid::parse_str(&registration.worker_id).is_err() {
        return bad(format!("workerId {:?} is not a UUID", registration.worker_id));
    }
    if let Err(reason) = hoard_config::parse_host(&registration.host) {
        return bad(format!("host {:?}: {reason}", registration.host));
    }
    if let Err(reason) = hoard_config::parse_cluster_name(&registration.cluster_name) {
        return bad(format!("clusterName {:?}: {reason}", registration.cluster_name));
    }
    if registration.rpc_port == 0 {
        return bad("rpcPort must be between 1 and 65535".into());
    }
    if registration.instance.is_empty() || registration.instance.len() > 128 {
        return bad("instance must be 1 to 128 characters".into());
    }
    Ok(())
}

/// A registration as the API takes it: the record's fields and no others (the stored record
/// stays lenient, so a newer version's extra field does not make it unreadable).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegistrationBody {
    worker_id: String,
    #[serde(default = "hoard_common::replica::default_cluster_name")]
    cluster_name: String,
    host: String,
    rpc_port: u16,
    capacity_bytes: u64,
    version: String,
    start_time_ms: u64,
    instance: String,
}

impl From<RegistrationBody> for WorkerRegistration {
    fn from(body: RegistrationBody) -> WorkerRegistration {
        WorkerRegistration {
            worker_id: body.worker_id,
            cluster_name: body.cluster_name,
            host: body.host,
            rpc_port: body.rpc_port,
            capacity_bytes: body.capacity_bytes,
            version: body.version,
            start_time_ms: body.start_time_ms,
            instance: body.instance,
        }
    }
}

async fn register(
    _member: ClusterMember,
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<RegistrationBody>,
) -> Result<Response, ApiError> {
    let registration = WorkerRegistration::from(body);
    check_registration(&registration)?;
    let worker_id = registration.worker_id.clone();
    state.register_worker(registration).await?;
    Ok(Json(serde_json::json!({ "workerId": worker_id })).into_response())
}

async fn heartbeat(
    _member: ClusterMember,
    State(state): State<SharedState>,
    Path(worker_id): Path<String>,
    JsonBody(beat): JsonBody<Heartbeat>,
) -> Result<Response, ApiError> {
    state.heartbeat(&worker_id, &beat).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn remove(
    _member: ClusterMember,
    State(state): State<SharedState>,
    Path(worker_id): Path<String>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let removed = state.remove_worker(&worker_id, query.force).await?;
    Ok(Json(serde_json::json!({ "removed": removed })).into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::BAD_REQUEST,
        "method not allowed on this route (see /api/v1/openapi.json)",
    )
}

fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, rejection.body_text())
}

pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
}

fn job_error(err: JobError) -> ApiError {
    match err {
        JobError::QueueFull { .. } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, codes::QUEUE_FULL, err.to_string()),
        JobError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, codes::UNKNOWN_JOB, err.to_string()),
        JobError::InvalidState { .. } => ApiError::new(StatusCode::CONFLICT, codes::INVALID_STATE, err.to_string()),
        JobError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, err.to_string()),
        JobError::Meta(meta) => meta_error(meta),
    }
}

fn parse_job_type(value: &str) -> Result<JobType, ApiError> {
    // Exactly as the wire spells it (not any case, unlike the CLI).
    value
        .parse::<JobType>()
        .ok()
        .filter(|job_type| job_type.as_str() == value)
        .ok_or_else(|| bad_request(format!("unknown job type {value:?} (expected load, free or repair)")))
}

fn parse_job_state(value: &str) -> Result<JobState, ApiError> {
    match value.to_ascii_uppercase().as_str() {
        "WAITING" => Ok(JobState::Waiting),
        "RUNNING" => Ok(JobState::Running),
        "SUCCEEDED" => Ok(JobState::Succeeded),
        "FAILED" => Ok(JobState::Failed),
        "STOPPED" => Ok(JobState::Stopped),
        other => Err(bad_request(format!(
            "unknown job state {other:?} (expected WAITING, RUNNING, SUCCEEDED, FAILED or STOPPED)"
        ))),
    }
}

/// Checks a submission; nothing is stored unless it is valid and its path exists in the UFS.
async fn validate_submission(
    state: &CoordinatorState,
    submit: &SubmitJob,
) -> Result<(JobType, String, JobOptions), ApiError> {
    let job_type = parse_job_type(&submit.job_type)?;
    if submit.path.trim().is_empty() {
        return Err(bad_request("path must not be empty"));
    }
    let path = hoard_common::HoardPath::parse(&submit.path)?;
    let max_replicas = i64::from(hoard_common::replica::MAX_REPLICAS);
    let replicas = match submit.options.replicas {
        None => None,
        Some(replicas) if (1..=max_replicas).contains(&replicas) => u32::try_from(replicas).ok(),
        Some(replicas) => {
            return Err(bad_request(format!(
                "replicas must be between 1 and {max_replicas}, not {replicas}"
            )));
        }
    };
    let max_batch = i64::from(hoard_config::MAX_JOB_BATCH_SIZE);
    let batch_size = match submit.options.batch_size {
        None => None,
        Some(size) if (1..=max_batch).contains(&size) => u32::try_from(size).ok(),
        Some(size) => {
            return Err(bad_request(format!(
                "batchSize must be between 1 and {max_batch}, not {size}"
            )));
        }
    };
    if let Err(err) = state.mounts.status(&path).await {
        return Err(ufs_error(err, &path, "check"));
    }
    // Without --replicas each file's count comes from the rules, as they are now: the job keeps
    // them, so a rule changed while it runs does not change its counts.
    let replica_rules = match replicas {
        Some(_) => None,
        None => Some(state.replica_rules().await.map_err(meta_error)?.listed().rules),
    };
    let repair = job_type == JobType::Repair;
    let options = JobOptions {
        replicas,
        replica_rules,
        batch_size,
        metadata_only: submit.options.metadata_only && !repair,
        verify: submit.options.verify,
        // A repair loads only the copies that are missing.
        skip_if_exists: submit.options.skip_if_exists || repair,
    };
    Ok((job_type, path.as_str().to_string(), options))
}

async fn submit_job(
    State(state): State<SharedState>,
    JsonBody(submit): JsonBody<SubmitJob>,
) -> Result<Response, ApiError> {
    let (job_type, path, options) = validate_submission(&state, &submit).await?;
    let (record, created) = state
        .job_store
        .submit(job_type, &path, options, now_millis())
        .await
        .map_err(job_error)?;
    if created {
        tracing::info!(job_id = %record.job_id, job_type = record.job_type.as_str(), path = %record.path, "job submitted");
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let body = SubmitResponse {
        job: crate::jobs::job_view(&record, now_millis()),
        created,
    };
    Ok((status, Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
struct JobFilter {
    state: Option<String>,
    #[serde(rename = "type")]
    job_type: Option<String>,
    path: Option<String>,
}

async fn list_jobs(
    State(state): State<SharedState>,
    query: Result<Query<JobFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(filter) = query.map_err(bad_query)?;
    let wanted_state = filter.state.as_deref().map(parse_job_state).transpose()?;
    let wanted_type = filter.job_type.as_deref().map(parse_job_type).transpose()?;
    let wanted_path = match filter.path.as_deref() {
        Some(path) => Some(hoard_common::HoardPath::parse(path)?.as_str().to_string()),
        None => None,
    };
    let jobs = state.job_store.list().await.map_err(job_error)?;
    state.metrics.set_jobs(&crate::jobs::count_states(&jobs));
    let now = now_millis();
    let views: Vec<_> = jobs
        .iter()
        .filter(|job| wanted_state.is_none_or(|wanted| job.state == wanted))
        .filter(|job| wanted_type.is_none_or(|wanted| job.job_type == wanted))
        .filter(|job| wanted_path.as_deref().is_none_or(|wanted| job.path == wanted))
        .map(|job| crate::jobs::job_view(job, now))
        .collect();
    Ok(Json(serde_json::json!({ "jobs": views })).into_response())
}

async fn get_job(State(state): State<SharedState>, Path(job_id): Path<String>) -> Result<Response, ApiError> {
    match state.job_store.get(&job_id).await.map_err(job_error)? {
        Some(found) => Ok(Json(crate::jobs::job_view(&found.record, now_millis())).into_response()),
        None => Err(job_error(JobError::NotFound(job_id))),
    }
}

async fn stop_job(State(state): State<SharedState>, Path(job_id): Path<String>) -> Result<Response, ApiError> {
    let record = state
        .job_store
        .request_stop(&job_id, now_millis())
        .await
        .map_err(job_error)?;
    tracing::info!(job_id, state = record.state.as_str(), "stop requested");
    Ok(Json(crate::jobs::job_view(&record, now_millis())).into_response())
}

async fn rerun_job(State(state): State<SharedState>, Path(job_id): Path<String>) -> Result<Response, ApiError> {
    let record = state.job_store.rerun(&job_id, now_millis()).await.map_err(job_error)?;
    tracing::info!(job_id, "job set to run again");
    Ok(Json(crate::jobs::job_view(&record, now_millis())).into_response())
}
