//! The REST API in process, over the embedded store: registration, heartbeats, liveness,
//! removal, the cluster secret, the admin token, and a restart on the same store file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use hoard_coordinator::CoordinatorState;
use hoard_meta::WorkerRegistration;
use tower::ServiceExt;

/// The cluster secret [`config`] puts in place (the coordinator reads an existing file).
const TEST_SECRET: &str = "test-cluster-secret-0123456789";

fn config(dir: &std::path::Path, token: Option<&str>) -> hoard_config::SiteConfig {
    let secret = dir.join("system-info/cluster_secret");
    if !secret.exists() {
        hoard_common::secret::write_private(&secret, TEST_SECRET.as_bytes()).expect("secret");
    }
    bare_config(dir, token)
}

/// A config whose secret file the coordinator creates.
fn bare_config(dir: &std::path::Path, token: Option<&str>) -> hoard_config::SiteConfig {
    let mut properties = BTreeMap::new();
    properties.insert("hoard.work.dir".to_string(), dir.display().to_string());
    std::fs::create_dir_all(dir.join("underfs")).expect("ufs root");
    properties.insert(
        "hoard.worker.membership.manager.type".to_string(),
        "COORDINATOR".to_string(),
    );
    properties.insert("hoard.worker.failure.detection.timeout".to_string(), "1s".to_string());
    if let Some(token) = token {
        properties.insert("hoard.security.admin.token".to_string(), token.to_string());
    }
    hoard_config::SiteConfig::from_properties(&dir.join("conf"), &properties, None)
        .expect("config")
        .config
}

fn registration(id: &str, port: u16, instance: &str) -> WorkerRegistration {
    WorkerRegistration {
        worker_id: id.to_string(),
        cluster_name: hoard_common::replica::default_cluster_name(),
        host: "127.0.0.1".to_string(),
        rpc_port: port,
        capacity_bytes: 1 << 30,
        version: "test".to_string(),
        start_time_ms: 1,
        instance: instance.to_string(),
    }
}

async fn call(
    state: &Arc<CoordinatorState>,
    method: Method,
    uri: &str,
    body: Option<serde_json::Value>,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    call_with_secret(state, method, uri, body, token, Some(TEST_SECRET)).await
}

async fn call_with_secret(
    state: &Arc<CoordinatorState>,
    method: Method,
    uri: &str,
    body: Option<serde_json::Value>,
    token: Option<&str>,
    secret: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(secret) = secret {
        request = request.header("x-hoard-cluster-secret", secret);
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .expect("request");
    let response = hoard_coordinator::router(Arc::clone(state))
        .oneshot(request)
        .await
        .expect("response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

const W1: &str = "5b3f2a4e-8f6c-4c55-9d3e-6a1f0c2b7e91";
const W2: &str = "0d9e7c1a-3b2f-4e8d-a6c5-1f2e3d4c5b6a";

fn states(nodes: &serde_json::Value) -> Vec<(String, String)> {
    nodes["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| {
            (
                w["workerId"].as_str().unwrap_or_default().to_string(),
                w["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn register_heartbeat_offline_remove_and_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let state = CoordinatorState::open(&config(dir.path(), None), "127.0.0.1:1".into())
        .await
        .expect("open");
    let body = serde_json::to_value(registration(W1, 7001, "i1")).expect("json");
    let (status, _) = call(&state, Method::POST, "/api/v1/workers", Some(body), None).await;
    assert_eq!(status, StatusCode::OK);
    let body = serde_json::to_value(registration(W2, 7002, "i2")).expect("json");
    assert_eq!(
        call(&state, Method::POST, "/api/v1/workers", Some(body), None).await.0,
        StatusCode::OK
    );

    // A second process claiming W1 from another address is refused; W1 is untouched.
    let impostor = serde_json::to_value(registration(W1, 7999, "i9")).expect("json");
    let (status, error) = call(&state, Method::POST, "/api/v1/workers", Some(impostor), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["code"], "WORKER_ID_IN_USE");
    assert!(error["error"].as_str().unwrap_or_default().contains("127.0.0.1:7001"));

    let (_, nodes) = call(&state, Method::GET, "/api/v1/nodes", None, None).await;
    assert_eq!(nodes["membership"], "COORDINATOR");
    assert_eq!(nodes["coordinators"].as_array().map(Vec::len), Some(1));
    let mut found = states(&nodes);
    found.sort();
    assert_eq!(
        found,
        vec![
            (W2.to_string(), "ONLINE".to_string()),
            (W1.to_string(), "ONLINE".to_string())
        ]
    );

    // W1 keeps heartbeating, W2 falls silent: OFFLINE after the 1s timeout.
    let beat = serde_json::json!({"instance": "i1", "usedBytes": 42, "capacityBytes": 1 << 30});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let uri = format!("/api/v1/workers/{W1}/heartbeat");
        assert_eq!(
            call(&state, Method::PUT, &uri, Some(beat.clone()), None).await.0,
            StatusCode::NO_CONTENT
        );
        let (_, nodes) = call(&state, Method::GET, "/api/v1/nodes", None, None).await;
        let now = states(&nodes);
        if now.contains(&(W2.to_string(), "OFFLINE".to_string())) {
            assert!(now.contains(&(W1.to_string(), "ONLINE".to_string())));
            let w1 = nodes["workers"]
                .as_array()
                .and_then(|ws| ws.iter().find(|w| w["workerId"] == W1))
                .expect("w1");
            assert_eq!(w1["usedBytes"], 42);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "W2 never went OFFLINE");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A heartbeat from another instance is refused; one for an unknown id asks to register.
    let stale = serde_json::json!({"instance": "old", "usedBytes": 0, "capacityBytes": 0});
    let (status, error) = call(
        &state,
        Method::PUT,
        &format!("/api/v1/workers/{W1}/heartbeat"),
        Some(stale.clone()),
        None,
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::CONFLICT, Some("WORKER_ID_IN_USE"))
    );
    let (status, error) = call(
        &state,
        Method::PUT,
        "/api/v1/workers/nobody/heartbeat",
        Some(stale),
        None,
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("UNKNOWN_WORKER"))
    );

    // remove-worker: ONLINE refused, OFFLINE removed, unknown 404.
    let (status, error) = call(&state, Method::DELETE, &format!("/api/v1/workers/{W1}"), None, None).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::CONFLICT, Some("WORKER_ONLINE"))
    );
    let (status, removed) = call(&state, Method::DELETE, &format!("/api/v1/workers/{W2}"), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(removed["removed"]["workerId"], W2);
    let (status, _) = call(&state, Method::DELETE, &format!("/api/v1/workers/{W2}"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A restarted coordinator (same store file) knows W1 and not W2.
    drop(state);
    let reopened = CoordinatorState::open(&config(dir.path(), None), "127.0.0.1:1".into())
        .await
        .expect("reopen");
    let (_, nodes) = call(&reopened, Method::GET, "/api/v1/nodes", None, None).await;
    assert_eq!(states(&nodes), vec![(W1.to_string(), "ONLINE".to_string())]);
}

#[tokio::test]
async fn a_second_coordinator_on_the_same_store_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let _first = CoordinatorState::open(&config(dir.path(), None), "127.0.0.1:1".into())
        .await
        .expect("open");
    let second = CoordinatorState::open(&config(dir.path(), None), "127.0.0.1:2".into()).await;
    let message = second.expect_err("refused").to_string();
    assert!(message.contains("use etcd"), "{message}");
}

#[tokio::test]
async fn admin_token_is_required_for_changes_only() {
    let dir = tempfile::tempdir().expect("dir");
    let state = CoordinatorState::open(&config(dir.path(), Some("s3cret")), "127.0.0.1:1".into())
        .await
        .expect("open");
    let body = serde_json::to_value(registration(W1, 7001, "i1")).expect("json");
    let (status, error) = call(&state, Method::POST, "/api/v1/workers", Some(body.clone()), None).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED"))
    );
    assert_eq!(
        call(
            &state,
            Method::POST,
            "/api/v1/workers",
            Some(body.clone()),
            Some("wrong")
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let (_, nodes) = call(&state, Method::GET, "/api/v1/nodes", None, None).await;
    assert!(states(&nodes).is_empty(), "nothing registered without the token");
    assert_eq!(
        call(&state, Method::POST, "/api/v1/workers", Some(body), Some("s3cret"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(call(&state, Method::GET, "/health", None, None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn membership_changes_need_the_cluster_secret() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let config = bare_config(dir.path(), None);
    let state = CoordinatorState::open(&config, "127.0.0.1:1".into())
        .await
        .expect("open");
    // Created on the first start, private.
    let path = &config.security.cluster_secret_file;
    let mode = std::fs::metadata(path).expect("secret file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let secret = std::fs::read_to_string(path).expect("secret").trim().to_string();
    assert_eq!(secret.len(), 64);

    let body = serde_json::to_value(registration(W1, 7001, "i1")).expect("json");
    let beat = serde_json::json!({"instance": "i1", "usedBytes": 0, "capacityBytes": 1});
    let heartbeat = format!("/api/v1/workers/{W1}/heartbeat");
    let removal = format!("/api/v1/workers/{W1}?force=true");
    for presented in [None, Some("wrong-secret-wrong-secret"), Some(&secret[1..])] {
        for (method, uri, body) in [
            (Method::POST, "/api/v1/workers", Some(body.clone())),
            (Method::PUT, heartbeat.as_str(), Some(beat.clone())),
            (Method::DELETE, removal.as_str(), None),
        ] {
            let (status, error) = call_with_secret(&state, method.clone(), uri, body, None, presented).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {presented:?}: {error}"
            );
            assert_eq!(error["code"], "UNAUTHORIZED");
            assert!(
                !error["error"].as_str().unwrap_or_default().contains(&secret),
                "the secret is never repeated"
            );
        }
        // Even a malformed body is refused for the missing secret first.
        let (status, _) = call_with_secret(
            &state,
            Method::POST,
            "/api/v1/workers",
            Some(serde_json::json!({"bogus": 1})),
            None,
            presented,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (_, nodes) = call_with_secret(&state, Method::GET, "/api/v1/nodes", None, None, None).await;
    assert!(states(&nodes).is_empty(), "nothing registered without the secret");

    let (status, _) = call_with_secret(&state, Method::POST, "/api/v1/workers", Some(body), None, Some(&secret)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call_with_secret(&state, Method::PUT, &heartbeat, Some(beat), None, Some(&secret)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, nodes) = call_with_secret(&state, Method::GET, "/api/v1/nodes", None, None, None).await;
    assert_eq!(states(&nodes), vec![(W1.to_string(), "ONLINE".to_string())]);

    // A restart reads the same secret back.
    drop(state);
    let reopened = CoordinatorState::open(&config, "127.0.0.1:1".into())
        .await
        .expect("reopen");
    let (status, _) = call_with_secret(&reopened, Method::DELETE, &removal, None, None, Some(&secret)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_fields_in_bodies_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let state = CoordinatorState::open(&config(dir.path(), None), "127.0.0.1:1".into())
        .await
        .expect("open");
    let mut body = serde_json::to_value(registration(W1, 7001, "i1")).expect("json");
    body["rpcPrt"] = serde_json::json!(7002);
    let (status, error) = call(&state, Method::POST, "/api/v1/workers", Some(body), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["code"], "BAD_REQUEST");
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("unknown field `rpcPrt`"),
        "{error}"
    );
    let (_, nodes) = call(&state, Method::GET, "/api/v1/nodes", None, None).await;
    assert!(states(&nodes).is_empty(), "nothing registered from a bad body");
}
