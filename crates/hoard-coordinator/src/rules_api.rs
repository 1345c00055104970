//! `/api/v1/replica-rules` (docs/replicas.md#rules): list, create or update, remove. Bodies are
//! read like every other route's (bounded, strict JSON, unknown fields refused) but without
//! requiring a JSON Content-Type, so the documented bare `curl -d` works. The admin token is
//! checked by the router's middleware for POST and DELETE.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hoard_common::api::{codes, ApiError};
use hoard_common::replica::{validate_rule_path, ReplicaRule, ReplicaRulePath, StoredReplicaRule};
use hoard_meta::replica_rules::RuleStoreError;

use crate::api::{bad_request, meta_error, ufs_error, AnyJsonBody, SharedState};

fn store_error(err: RuleStoreError) -> ApiError {
    match err {
        RuleStoreError::Invalid(invalid) => bad_request(invalid.to_string()),
        RuleStoreError::Meta(meta) => meta_error(meta),
    }
}

/// `GET`: every rule, the default on `/` included when no rule is set there.
pub(crate) async fn list(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let set = state.replica_rules().await.map_err(meta_error)?;
    Ok(Json(set.listed()).into_response())
}

/// `POST`: creates or updates the rule on its path; answers it as stored, with a warning when
/// it asks for more copies than there are registered workers (accepted all the same: workers
/// may join later).
pub(crate) async fn set(
    State(state): State<SharedState>,
    AnyJsonBody(rule): AnyJsonBody<ReplicaRule>,
) -> Result<Response, ApiError> {
    let stored = state.rules.put(&rule).await.map_err(store_error)?;
    tracing::info!(
        path = %stored.path,
        replicas = stored.num_replicas_per_cluster,
        maintain = stored.maintain,
        "replica rule set"
    );
    let warning = match state.members().await {
        Ok(members) if (stored.num_replicas_per_cluster as usize) > members.len() => Some(format!(
            "numReplicasPerCluster {} is more than the {} registered workers: files under {} cannot have that many copies until more workers join",
            stored.num_replicas_per_cluster,
            members.len(),
            stored.path
        )),
        Ok(_) => None,
        Err(err) => {
            tracing::warn!(error = %err, "cannot count workers to check a replica rule");
            None
        }
    };
    Ok(Json(StoredReplicaRule { rule: stored, warning }).into_response())
}

/// `DELETE` with `{"path"}`: removes the rule there; 404 naming the path when there is none.
pub(crate) async fn remove(
    State(state): State<SharedState>,
    AnyJsonBody(body): AnyJsonBody<ReplicaRulePath>,
) -> Result<Response, ApiError> {
    validate_rule_path(&body.path).map_err(|err| bad_request(err.to_string()))?;
    if !state.rules.delete(&body.path).await.map_err(meta_error)? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("path: no replica rule is set on {:?}", body.path),
        ));
    }
    tracing::info!(path = %body.path, "replica rule removed");
    Ok(Json(body).into_response())
}

/// Files `GET /api/v1/replicas` shows when no `limit` is given, and at most.
const DEFAULT_REPLICAS_LIMIT: usize = 100;
const MAX_REPLICAS_LIMIT: usize = 1000;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplicasQuery {
    path: String,
    limit: Option<usize>,
}

/// One file's copies, wanted and held.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct FileReplicas {
    path: String,
    #[serde(flatten)]
    state: hoard_client::placement::ReplicaState,
}

/// `GET ?path=P[&limit=N]`: for each file under P (listing order, at most `limit`), its rule,
/// where its copies are wanted in each cluster and which ONLINE workers hold it, from their
/// page indexes (docs/replicas.md#where-a-files-copies-are-hoard-fs-stat).
pub(crate) async fn replicas(
    State(state): State<SharedState>,
    query: Result<axum::extract::Query<ReplicasQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let axum::extract::Query(query) = query.map_err(|err| bad_request(err.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_REPLICAS_LIMIT);
    if !(1..=MAX_REPLICAS_LIMIT).contains(&limit) {
        return Err(bad_request(format!(
            "limit: must be between 1 and {MAX_REPLICAS_LIMIT}, not {limit}"
        )));
    }
    let root = hoard_common::HoardPath::parse(&query.path)?;
    let view = state.cluster_view().await.map_err(meta_error)?;
    let rules = state.replica_rules().await.map_err(meta_error)?;
    let timeout = state.user.connect_timeout.min(std::time::Duration::from_secs(1));
    let mut lister = crate::jobs::lister::FileLister::open(&state.mounts, &root)
        .await
        .map_err(|err| ufs_error(err, &root, "list"))?;
    let mut files = Vec::new();
    let mut truncated = false;
    while let Some(next) = lister.next().await {
        let status = next.map_err(|err| ufs_error(err, &root, "list"))?;
        if files.len() == limit {
            truncated = true;
            break;
        }
        let replica_state =
            hoard_client::placement::replica_state(&state.http, &view, &rules, &status.path, timeout).await;
        files.push(FileReplicas {
            path: status.path.to_string(),
            state: replica_state,
        });
    }
    Ok(Json(serde_json::json!({ "files": files, "truncated": truncated })).into_response())
}
