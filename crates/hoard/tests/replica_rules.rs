//! Replica rules (docs/replicas.md#rules) on real processes: `/api/v1/replica-rules` create,
//! update, list and remove on the embedded store and on etcd; every bad body refused with a 4xx
//! naming the field or path and the rule set unchanged; rules kept across a coordinator
//! SIGKILL and restart; the admin token; `hoard replica`; a client's `RuleSource` following a
//! change.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hoard_common::HoardPath;
use hoard_testkit::Etcd;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(30);

/// `METHOD /api/v1/replica-rules` with `body` and extra header lines; status and JSON answer.
fn rules_request(address: &str, method: &str, body: &str, headers: &str) -> (u16, Value) {
    let request = format!(
        "{method} /api/v1/replica-rules HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, answer) = http_request(address, &request).expect("replica-rules request");
    (status, serde_json::from_slice(&answer).unwrap_or(Value::Null))
}

const JSON: &str = "Content-Type: application/json\r\n";

fn rules(address: &str) -> Value {
    let (status, answer) = rules_request(address, "GET", "", "");
    assert_eq!(status, 200, "{answer}");
    answer
}

fn post(address: &str, body: &str) -> (u16, Value) {
    rules_request(address, "POST", body, JSON)
}

fn delete(address: &str, body: &str) -> (u16, Value) {
    rules_request(address, "DELETE", body, JSON)
}

fn rule(path: &str, count: u32) -> Value {
    json!({"path": path, "numReplicasPerCluster": count})
}

/// Every bad body gets its 4xx naming the field (or the path), and nothing changes.
fn bad_bodies_change_nothing(address: &str) {
    let before = rules(address);
    let huge = format!(
        r#"{{"path":"/big","numReplicasPerCluster":1,"pad":"{}"}}"#,
        "x".repeat(100_000)
    );
    for (method, body, status, named) in [
        (
            "POST",
            r#"{"path":"s3/vip","numReplicasPerCluster":2}"#,
            400,
            "path: \"s3/vip\" is not absolute",
        ),
        (
            "POST",
            r#"{"path":"/s3/../vip","numReplicasPerCluster":2}"#,
            400,
            "path: \"/s3/../vip\" is not normalized",
        ),
        (
            "POST",
            r#"{"path":"/s3/vip/","numReplicasPerCluster":2}"#,
            400,
            "is not normalized",
        ),
        (
            "POST",
            r#"{"path":"/s3//vip","numReplicasPerCluster":2}"#,
            400,
            "is not normalized",
        ),
        (
            "POST",
            r#"{"path":"/s3/vip","numReplicasPerCluster":0}"#,
            400,
            "numReplicasPerCluster: must be between 1 and 64, not 0",
        ),
        (
            "POST",
            r#"{"path":"/s3/vip","numReplicasPerCluster":65}"#,
            400,
            "numReplicasPerCluster: must be between 1 and 64, not 65",
        ),
        (
            "POST",
            r#"{"path":"/s3/vip","numReplicasPerCluster":-1}"#,
            400,
            "integer `-1`",
        ),
        ("POST", r#"{"path":"/s3/vip","numReplicasPerCluster":2"#, 400, "EOF"),
        ("POST", "path=/s3/vip", 400, "expected"),
        (
            "POST",
            r#"{"path":"/s3/vip","numReplicasPerCluster":2,"replica":3}"#,
            400,
            "unknown field `replica`",
        ),
        ("POST", r#"{"numReplicasPerCluster":2}"#, 400, "missing field `path`"),
        ("POST", &huge, 413, "length limit"),
        (
            "DELETE",
            r#"{"path":"/never/set"}"#,
            404,
            "path: no replica rule is set on \"/never/set\"",
        ),
        ("DELETE", r#"{"path":"/"}"#, 404, "no replica rule is set on \"/\""),
        (
            "DELETE",
            r#"{"path":"never/set"}"#,
            400,
            "path: \"never/set\" is not absolute",
        ),
        ("DELETE", r#"{"path":"/a","extra":1}"#, 400, "unknown field `extra`"),
        ("DELETE", "{", 400, "EOF"),
    ] {
        let (got, answer) = rules_request(address, method, body, JSON);
        let shown = &body[..body.len().min(80)];
        assert_eq!(got, status, "{method} {shown}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(named),
            "{method} {shown}: {message:?} should name {named:?}"
        );
        assert_eq!(rules(address), before, "{method} {shown} changed the rules");
    }
}

/// Create, update, nested rules, remove; the default rule shown while `/` has none.
fn crud(address: &str, workers: usize) {
    assert_eq!(rules(address), json!({"rules": [rule("/", 1)]}));

    let (status, stored) = post(address, r#"{"path":"/s3/vip_data","numReplicasPerCluster":3}"#);
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["path"], "/s3/vip_data");
    assert_eq!(stored["numReplicasPerCluster"], 3);
    // 3 copies with fewer workers: accepted, and said so.
    let warning = stored["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains(&format!("the {workers} registered workers")),
        "{stored}"
    );
    assert_eq!(
        rules(address),
        json!({"rules": [rule("/", 1), rule("/s3/vip_data", 3)]})
    );

    // The same path again updates; a nested rule is its own rule.
    let (status, stored) = post(
        address,
        r#"{"path":"/s3/vip_data","numReplicasPerCluster":1,"maintain":true}"#,
    );
    assert_eq!(status, 200, "{stored}");
    assert!(stored.get("warning").is_none(), "{stored}");
    assert_eq!(
        post(address, r#"{"path":"/s3/vip_data/tmp","numReplicasPerCluster":1}"#).0,
        200
    );
    // A bare `curl -d` (a form Content-Type) works too.
    let (status, stored) = rules_request(
        address,
        "POST",
        r#"{"path":"/","numReplicasPerCluster":1}"#,
        "Content-Type: application/x-www-form-urlencoded\r\n",
    );
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        rules(address),
        json!({"rules": [
            rule("/", 1),
            {"path": "/s3/vip_data", "numReplicasPerCluster": 1, "maintain": true},
            rule("/s3/vip_data/tmp", 1),
        ]})
    );

    for path in ["/s3/vip_data/tmp", "/"] {
        let (status, answer) = delete(address, &format!(r#"{{"path":"{path}"}}"#));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer, json!({ "path": path }));
    }
    let (status, answer) = delete(address, r#"{"path":"/s3/vip_data/tmp"}"#);
    assert_eq!(status, 404, "deleted twice: {answer}");
    assert_eq!(
        rules(address),
        json!({"rules": [rule("/", 1), {"path": "/s3/vip_data", "numReplicasPerCluster": 1, "maintain": true}]})
    );
}

/// SIGKILLs the coordinator, starts it again by hand, and checks it serves `expected`.
fn restart_coordinator_keeps(cluster: &Cluster, expected: &Value) -> ChildGuard {
    let coordinator = cluster.process_named("coordinator");
    kill9(coordinator.pid);
    wait_until("the coordinator is gone", LIMIT, || {
        http_get(&coordinator.address, "/health").is_err()
    });
    let restarted = restart_worker(&coordinator);
    assert_eq!(&rules(&coordinator.address), expected, "rules after a restart");
    restarted
}

#[test]
fn embedded_rules_crud_bad_bodies_and_restart() {
    let ufs = ufs_with(&[("/s3/vip_data/f", content(1, 100))]);
    let cluster = Cluster::start(1, ufs.path(), &[]);
    let address = cluster.process_named("coordinator").address;
    crud(&address, 1);
    bad_bodies_change_nothing(&address);
    let kept = rules(&address);
    let _restarted = restart_coordinator_keeps(&cluster, &kept);
    // Still writable after the restart.
    assert_eq!(post(&address, r#"{"path":"/after","numReplicasPerCluster":2}"#).0, 200);
    assert_eq!(rules(&address)["rules"].as_array().map(Vec::len), Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_rules_crud_restart_and_clients_read_etcd() {
    let etcd = Etcd::start().await;
    let ufs = ufs_with(&[("/s3/vip_data/f", content(2, 100))]);
    let endpoint = etcd.endpoint();
    let cluster = Cluster::start_with(
        1,
        &ufs.path().display().to_string(),
        &["hoard.coordinator.job.meta.store.type=ETCD"],
        &["--etcd", &endpoint],
    );
    let address = cluster.process_named("coordinator").address;
    let health: Value = serde_json::from_slice(&http_get(&address, "/health").expect("health").2).expect("json");
    assert_eq!(health["metastore"], "ETCD", "{health}");
    crud(&address, 1);
    bad_bodies_change_nothing(&address);
    let kept = rules(&address);
    let restarted = restart_coordinator_keeps(&cluster, &kept);

    // A client with etcd endpoints reads the rules from etcd: with every coordinator down it
    // still learns them.
    drop(restarted);
    wait_until("the coordinator is gone", LIMIT, || {
        http_get(&address, "/health").is_err()
    });
    let config = hoard_config::SiteConfig::load(&cluster.conf)
        .expect("client conf")
        .config;
    let mut config = config;
    // Polled once an hour: only etcd's watch can bring the change below in time.
    config.user.replica_rules_refresh_interval = std::time::Duration::from_secs(3600);
    let source = hoard_client::RuleSource::start(&config).await.expect("rule source");
    assert_eq!(source.reads(), 1, "read from etcd without a coordinator");
    let path = HoardPath::parse("/s3/vip_data/f").expect("path");
    let found = source.current().rule_for(&path).clone();
    assert_eq!(found.path, "/s3/vip_data");
    assert!(found.maintain);

    // A rule written to etcd (as another coordinator would) reaches the client by the watch.
    let etcd_store = hoard_meta::etcd::EtcdStore::connect_within(&config.etcd, std::time::Duration::from_secs(5))
        .await
        .expect("etcd");
    let store = hoard_meta::replica_rules::ReplicaRuleStore::new(std::sync::Arc::new(etcd_store));
    store
        .put(&hoard_common::replica::ReplicaRule {
            path: "/s3/vip_data/f".into(),
            num_replicas_per_cluster: 5,
            maintain: false,
        })
        .await
        .expect("put rule");
    let deadline = std::time::Instant::now() + LIMIT;
    while source.current().count_for(&path) != 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch did not bring the new rule"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_token_cli_and_a_client_following_rules() {
    let ufs = ufs_with(&[("/hot/f", content(3, 100))]);
    let cluster = Cluster::start(
        2,
        ufs.path(),
        &[
            "hoard.security.admin.token=let-me-in",
            "hoard.user.replica.rules.refresh.interval=200ms",
        ],
    );
    let address = cluster.process_named("coordinator").address;

    // Without the token (or with a wrong one): 401, and nothing changes.
    let before = rules(&address);
    for auth in ["", "Authorization: Bearer wrong\r\n"] {
        let headers = format!("{JSON}{auth}");
        let (status, answer) = rules_request(
            &address,
            "POST",
            r#"{"path":"/hot","numReplicasPerCluster":2}"#,
            &headers,
        );
        assert_eq!(status, 401, "{answer}");
        let (status, answer) = rules_request(&address, "DELETE", r#"{"path":"/"}"#, &headers);
        assert_eq!(status, 401, "{answer}");
        assert_eq!(rules(&address), before);
    }
    let token = format!("{JSON}Authorization: Bearer let-me-in\r\n");
    let (status, answer) = rules_request(
        &address,
        "POST",
        r#"{"path":"/keep","numReplicasPerCluster":2}"#,
        &token,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        rules_request(&address, "DELETE", r#"{"path":"/"}"#, "Authorization: Bearer wrong\r\n").0,
        401
    );
    assert_eq!(
        rules(&address)["rules"][1],
        rule("/keep", 2),
        "the token's POST was stored"
    );

    // A client's rules follow a change within its refresh interval.
    let config = hoard_config::SiteConfig::load(&cluster.conf)
        .expect("client conf")
        .config;
    let source = hoard_client::RuleSource::start(&config).await.expect("rule source");
    let hot = HoardPath::parse("/hot/f").expect("path");
    assert_eq!(source.current().count_for(&hot), 1);
    assert_eq!(
        source.current().count_for(&HoardPath::parse("/keep/x").expect("path")),
        2
    );

    // The CLI (which sends the token from the conf) round-trips.
    let set = cluster.hoard(&["replica", "set", "--path", "/hot", "--replicas", "4", "--maintain"]);
    assert!(set.status.success(), "{}", describe(&set));
    assert!(
        String::from_utf8_lossy(&set.stderr).contains("more than the 2 registered workers"),
        "{}",
        describe(&set)
    );
    let listed = cluster.hoard(&["replica", "list", "--format", "json"]);
    assert!(listed.status.success(), "{}", describe(&listed));
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("list json");
    assert_eq!(
        listed,
        json!({"rules": [rule("/", 1), {"path": "/hot", "numReplicasPerCluster": 4, "maintain": true}, rule("/keep", 2)]})
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while source.current().count_for(&hot) != 4 {
        assert!(Instant::now() < deadline, "the client never saw the rule on /hot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = cluster.hoard(&["replica", "list"]);
    assert!(text.status.success(), "{}", describe(&text));
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    let hot_line = text.lines().find(|line| line.starts_with("/hot")).unwrap_or_default();
    assert_eq!(
        hot_line.split_whitespace().collect::<Vec<_>>(),
        ["/hot", "4", "yes"],
        "{text}"
    );

    // Bad input through the CLI: a non-zero exit naming the field or path, nothing changed.
    let before = rules(&address);
    for (args, named) in [
        (
            vec!["replica", "set", "--path", "/hot", "--replicas", "0"],
            "numReplicasPerCluster",
        ),
        (
            vec!["replica", "set", "--path", "hot", "--replicas", "2"],
            "is not absolute",
        ),
        (
            vec!["replica", "remove", "--path", "/nothing/here"],
            "no replica rule is set on \"/nothing/here\"",
        ),
    ] {
        let output = cluster.hoard(&args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(stderr.contains("cannot "), "{args:?} has context: {stderr}");
        assert_eq!(rules(&address), before);
    }

    let removed = cluster.hoard(&["replica", "remove", "--path", "/hot"]);
    assert!(removed.status.success(), "{}", describe(&removed));
    assert_eq!(rules(&address), json!({"rules": [rule("/", 1), rule("/keep", 2)]}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while source.current().count_for(&hot) != 1 {
        assert!(Instant::now() < deadline, "the client never saw the rule on /hot go");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
