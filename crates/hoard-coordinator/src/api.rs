//! REST handlers. Errors are `{"error": "...", "code": "..."}` with a 4xx status for bad input
//! and 5xx when the metastore fails; every request that changes state needs the admin token
//! when one is configured.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use hoard_common::api::coordinator::{self as routes, CoordinatorHealth, Heartbeat};
use hoard_common::api::{codes, ApiError};
use hoard_meta::{MetaError, WorkerRegistration};
use serde::Deserialize;

use crate::{ApiFailure, CoordinatorState};

/// Registrations and heartbeats are small; nothing the API takes is larger.
const MAX_BODY_BYTES: usize = 64 << 10;

type SharedState = Arc<CoordinatorState>;

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route(routes::HEALTH_ROUTE, get(health))
        .route(routes::METRICS_ROUTE, get(metrics))
        .route(routes::OPENAPI_ROUTE, get(openapi))
        .route(routes::NODES_ROUTE, get(nodes))
        .route(routes::WORKERS_ROUTE, get(workers).post(register))
        .route(&format!("{}/{{id}}", routes::WORKERS_ROUTE), delete(remove))
        .route(&format!("{}/{{id}}/heartbeat", routes::WORKERS_ROUTE), put(heartbeat))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), require_token))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn meta_error(err: MetaError) -> ApiError {
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

fn bad_body(rejection: JsonRejection) -> ApiError {
    let status = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::new(status, codes::BAD_REQUEST, rejection.body_text())
}

/// Rejects state-changing requests without the configured admin token.
async fn require_token(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.admin_token.as_deref() else {
        return next.run(request).await;
    };
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, "wrong admin token").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "this request changes state and needs 'Authorization: Bearer <hoard.security.admin.token>'",
        )
        .into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

async fn metrics(State(state): State<SharedState>) -> Response {
    // Refresh the worker gauges; a metastore failure leaves the last values.
    if let Err(err) = state.nodes().await {
        tracing::warn!(error = %err, "cannot refresh membership gauges");
    }
    let mut response = state.metrics.render().into_response();
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
    if registration.rpc_port == 0 {
        return bad("rpcPort must be between 1 and 65535".into());
    }
    if registration.instance.is_empty() || registration.instance.len() > 128 {
        return bad("instance must be 1 to 128 characters".into());
    }
    Ok(())
}

async fn register(
    State(state): State<SharedState>,
    body: Result<Json<WorkerRegistration>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(registration) = body.map_err(bad_body)?;
    check_registration(&registration)?;
    let worker_id = registration.worker_id.clone();
    state.register_worker(registration).await?;
    Ok(Json(serde_json::json!({ "workerId": worker_id })).into_response())
}

async fn heartbeat(
    State(state): State<SharedState>,
    Path(worker_id): Path<String>,
    body: Result<Json<Heartbeat>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(beat) = body.map_err(bad_body)?;
    state.heartbeat(&worker_id, &beat).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn remove(
    State(state): State<SharedState>,
    Path(worker_id): Path<String>,
    Query(query): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    let removed = state.remove_worker(&worker_id, query.force).await?;
    Ok(Json(serde_json::json!({ "removed": removed })).into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such route")
}
