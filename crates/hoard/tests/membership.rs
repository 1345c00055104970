//! Membership with real processes: COORDINATOR (the default of `hoard local`) and ETCD (a real
//! etcd from the testkit). Workers are SIGKILLed and restarted by hand; every test also checks
//! that the bytes read are the UFS's.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hoard_testkit::Etcd;

const MIB: usize = 1 << 20;
/// Short enough for tests, long enough for a loaded 2-core CI machine not to miss heartbeats.
const FAILURE_TIMEOUT: &str = "hoard.worker.failure.detection.timeout=3s";
/// Killed -> OFFLINE must happen within the timeout (3s, counted from the last renewal) plus
/// slack for etcd's expiry check, polling and a loaded 2-core machine.
const OFFLINE_LIMIT: Duration = Duration::from_secs(8);

/// The membership a test runs on: `None` is COORDINATOR, `Some` an etcd.
fn start_cluster(workers: usize, ufs: &Path, etcd: Option<&Etcd>, properties: &[&str]) -> Cluster {
    let mut props = vec![FAILURE_TIMEOUT];
    props.extend_from_slice(properties);
    let endpoint = etcd.map(Etcd::endpoint);
    let extra: Vec<&str> = match &endpoint {
        Some(endpoint) => vec!["--etcd", endpoint.as_str()],
        None => Vec::new(),
    };
    Cluster::start_with(workers, &ufs.display().to_string(), &props, &extra)
}

/// The secret every process of the cluster shares (`hoard local` puts it under its home).
fn cluster_secret(cluster: &Cluster) -> String {
    std::fs::read_to_string(cluster.home.path().join("cluster_secret"))
        .expect("cluster secret")
        .trim()
        .to_string()
}

fn state_of(cluster: &Cluster, worker_id: &str) -> Option<bool> {
    cluster
        .worker_states()
        .into_iter()
        .find(|(id, _, _)| id == worker_id)
        .map(|(_, _, online)| online)
}

/// The worker ids `paths` map to first.
fn owners(cluster: &Cluster, paths: &[String]) -> Vec<String> {
    let mut args = vec!["fs", "location", "--format", "json"];
    args.extend(paths.iter().map(String::as_str));
    let output = cluster.hoard(&args);
    assert!(output.status.success(), "{}", describe(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    json.as_array()
        .expect("array")
        .iter()
        .map(|entry| entry["workers"][0]["workerId"].as_str().expect("id").to_string())
        .collect()
}

fn killed_worker_goes_offline_and_rejoins_with_its_cache(etcd: Option<&Etcd>) {
    let data = content(31, 3 * MIB + 17);
    let other = content(32, MIB + 3);
    let ufs = ufs_with(&[("/d/a.bin", data.clone()), ("/d/b.bin", other.clone())]);
    let cluster = start_cluster(3, ufs.path(), etcd, &[]);
    let expected_kind = if etcd.is_some() { "ETCD" } else { "COORDINATOR" };
    let nodes = cluster.nodes();
    assert_eq!(nodes["membership"], expected_kind);
    assert_eq!(nodes["coordinators"].as_array().map(Vec::len), Some(1), "{nodes}");
    let before = cluster.worker_states();
    assert_eq!(before.len(), 3);
    assert!(before.iter().all(|(_, _, online)| *online), "{before:?}");

    assert!(cluster.hoard(&["fs", "cat", "/d/a.bin"]).stdout == data);
    cluster.wait_cached("/d/a.bin", data.len() as u64);
    let owner = cluster.primary_of("/d/a.bin");
    let probe_paths: Vec<String> = (0..60).map(|i| format!("/p/{i}.bin")).collect();
    let placement = owners(&cluster, &probe_paths);

    kill9(owner.pid);
    let killed = Instant::now();
    wait_until("killed worker OFFLINE", OFFLINE_LIMIT, || {
        state_of(&cluster, &owner.id) == Some(false)
    });
    eprintln!("OFFLINE {:?} after SIGKILL", killed.elapsed());
    // Out of the dynamic ring: no path maps to it; reads still succeed, with the right bytes.
    assert!(!owners(&cluster, &probe_paths).contains(&owner.id));
    assert!(cluster.hoard(&["fs", "cat", "/d/a.bin"]).stdout == data);
    assert!(cluster.hoard(&["fs", "cat", "/d/b.bin"]).stdout == other);
    assert_eq!(cluster.worker_states().len(), 3, "an OFFLINE worker stays registered");

    let _restarted = restart_worker(&owner);
    wait_until("restarted worker ONLINE", OFFLINE_LIMIT, || {
        state_of(&cluster, &owner.id) == Some(true)
    });
    let after = cluster.worker_states();
    assert_eq!(after, before, "same ids, same addresses, no duplicate");
    assert_eq!(owners(&cluster, &probe_paths), placement, "same ring positions");
    // Its cache hits: the restarted process reads nothing from the UFS for the file it owns.
    assert!(cluster.hoard(&["fs", "cat", "/d/a.bin"]).stdout == data);
    assert_eq!(metric(&owner.address, "hoard_worker_ufs_bytes_read_total"), 0.0);
    assert_eq!(metric(&owner.address, "hoard_worker_page_hits_total"), 4.0);
}

#[test]
fn coordinator_killed_worker_goes_offline_and_rejoins_with_its_cache() {
    killed_worker_goes_offline_and_rejoins_with_its_cache(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_killed_worker_goes_offline_and_rejoins_with_its_cache() {
    let etcd = Etcd::start().await;
    tokio::task::block_in_place(|| killed_worker_goes_offline_and_rejoins_with_its_cache(Some(&etcd)));
}

/// A copy of `worker`'s conf that shares its identity file but not its page store or port.
fn impostor_conf(worker: &Process, dir: &Path) -> std::path::PathBuf {
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).expect("conf dir");
    let original = std::fs::read_to_string(worker.conf_dir.join("hoard-site.properties")).expect("site file");
    let work_dir = original
        .lines()
        .find_map(|line| line.strip_prefix("hoard.work.dir="))
        .expect("work dir")
        .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let mut text: String = original
        .lines()
        .filter(|line| !line.starts_with("hoard.worker.rpc.port=") && !line.starts_with("hoard.work.dir="))
        .map(|line| format!("{line}\n"))
        .collect();
    text.push_str(&format!("hoard.work.dir={}\n", dir.display()));
    text.push_str(&format!("hoard.worker.rpc.port={port}\n"));
    text.push_str(&format!(
        "hoard.worker.identity.uuid.file.path={work_dir}/system-info/worker_identity\n"
    ));
    std::fs::write(conf.join("hoard-site.properties"), text).expect("write conf");
    std::fs::copy(worker.conf_dir.join("workers"), conf.join("workers")).expect("workers file");
    conf
}

fn second_process_with_the_same_id_refuses_to_start(etcd: Option<&Etcd>) {
    let data = content(41, 2 * MIB + 1);
    let ufs = ufs_with(&[("/x.bin", data.clone())]);
    let cluster = start_cluster(2, ufs.path(), etcd, &[]);
    let worker = cluster.processes().remove(0);
    let before = cluster.worker_states();
    let dir = tempfile::tempdir().expect("impostor dir");
    let conf = impostor_conf(&worker, dir.path());
    let output = Command::new(HOARD)
        .arg("--conf")
        .arg(&conf)
        .arg("worker")
        .output()
        .expect("run second worker");
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&worker.id), "names the id: {stderr}");
    assert!(stderr.contains(&worker.address), "names the other address: {stderr}");
    // Nothing changed for the worker that holds the id.
    assert_eq!(cluster.worker_states(), before);
    assert!(cluster.hoard(&["fs", "cat", "/x.bin"]).stdout == data);
}

#[test]
fn coordinator_second_process_with_the_same_id_refuses_to_start() {
    second_process_with_the_same_id_refuses_to_start(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_second_process_with_the_same_id_refuses_to_start() {
    let etcd = Etcd::start().await;
    tokio::task::block_in_place(|| second_process_with_the_same_id_refuses_to_start(Some(&etcd)));
}

fn remove_worker_refuses_unknown_and_online_then_forgets_a_stopped_one(etcd: Option<&Etcd>) {
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("/r/{i}.bin"), content(50 + i, MIB / 2 + i as usize)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    let ufs = ufs_with(&refs);
    let cluster = start_cluster(3, ufs.path(), etcd, &[]);

    let unknown = cluster.hoard(&["process", "remove-worker", "-n", "no-such-worker"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", describe(&unknown));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no worker with id no-such-worker is registered"),
        "{}",
        describe(&unknown)
    );

    let victim = cluster.processes().remove(1);
    let online = cluster.hoard(&["process", "remove-worker", "-n", &victim.id]);
    assert_eq!(online.status.code(), Some(1), "{}", describe(&online));
    let message = String::from_utf8_lossy(&online.stderr);
    assert!(
        message.contains("is ONLINE") && message.contains("stop it first"),
        "{message}"
    );
    assert_eq!(cluster.worker_states().len(), 3, "a refused removal deletes nothing");

    kill9(victim.pid);
    wait_until("stopped worker OFFLINE", OFFLINE_LIMIT, || {
        state_of(&cluster, &victim.id) == Some(false)
    });
    let removed = cluster.hoard(&["process", "remove-worker", "-n", &victim.id]);
    assert!(removed.status.success(), "{}", describe(&removed));
    assert!(String::from_utf8_lossy(&removed.stdout).contains(&victim.id));
    let states = cluster.worker_states();
    assert_eq!(states.len(), 2);
    assert!(states.iter().all(|(id, _, online)| id != &victim.id && *online));
    for (path, data) in &files {
        assert!(&cluster.hoard(&["fs", "cat", path]).stdout == data, "{path}");
    }

    // --force removes an ONLINE worker.
    let forced_victim = cluster.processes().remove(0);
    let forced = cluster.hoard(&["process", "remove-worker", "-n", &forced_victim.id, "--force"]);
    assert!(forced.status.success(), "{}", describe(&forced));
    if etcd.is_some() {
        // On etcd both keys are gone and the running worker does not put them back.
        assert!(state_of(&cluster, &forced_victim.id).is_none());
    } else {
        // A running worker's next heartbeat is answered "unknown worker": it registers again.
        wait_until("forced-out worker registers again", OFFLINE_LIMIT, || {
            state_of(&cluster, &forced_victim.id) == Some(true)
        });
    }
}

#[test]
fn coordinator_remove_worker() {
    remove_worker_refuses_unknown_and_online_then_forgets_a_stopped_one(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_remove_worker() {
    let etcd = Etcd::start().await;
    tokio::task::block_in_place(|| remove_worker_refuses_unknown_and_online_then_forgets_a_stopped_one(Some(&etcd)));
}

#[test]
fn restarted_coordinator_keeps_the_membership_it_knew() {
    let data = content(61, 2 * MIB + 9);
    let ufs = ufs_with(&[("/c.bin", data.clone())]);
    let cluster = start_cluster(3, ufs.path(), None, &[]);
    let before = cluster.worker_states();
    let coordinator = cluster.process_named("coordinator");
    kill9(coordinator.pid);
    wait_until("coordinator gone", Duration::from_secs(10), || {
        http_get(&coordinator.address, "/health").is_err()
    });
    let _restarted = restart_worker(&coordinator);
    assert_eq!(
        cluster.worker_states(),
        before,
        "registrations survive in the embedded store"
    );
    // The workers keep heartbeating to the new process: still ONLINE well past the timeout.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(cluster.worker_states(), before);
    assert!(cluster.hoard(&["fs", "cat", "/c.bin"]).stdout == data);
}

fn identity_file_of(worker: &Process) -> std::path::PathBuf {
    let site = std::fs::read_to_string(worker.conf_dir.join("hoard-site.properties")).expect("site");
    let work_dir = site
        .lines()
        .find_map(|line| line.strip_prefix("hoard.work.dir="))
        .expect("work dir")
        .to_string();
    Path::new(&work_dir).join("system-info/worker_identity")
}

fn bad_identity_file_refuses_to_start(etcd: Option<&Etcd>) {
    let data = content(71, 1000);
    let ufs = ufs_with(&[("/i.bin", data.clone())]);
    let cluster = start_cluster(2, ufs.path(), etcd, &[]);
    let worker = cluster.processes().remove(0);
    let before = cluster.worker_states();
    kill9(worker.pid);
    let identity = identity_file_of(&worker);

    // Corrupt: not a UUID.
    std::fs::write(&identity, "not-a-uuid\n").expect("corrupt identity");
    let output = hoard_with_conf(&worker.conf_dir, &["worker"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&identity.display().to_string()) && stderr.contains("does not hold a UUID"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&identity).expect("identity"),
        "not-a-uuid\n",
        "never replaced"
    );

    // Unreadable: a directory where the file should be.
    std::fs::remove_file(&identity).expect("remove identity");
    std::fs::create_dir(&identity).expect("directory in its place");
    let output = hoard_with_conf(&worker.conf_dir, &["worker"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&identity.display().to_string())
            && stderr.contains("cannot read or create worker identity file"),
        "{stderr}"
    );

    // No second record appeared; the other worker still serves.
    let after: Vec<String> = cluster.worker_states().into_iter().map(|(id, _, _)| id).collect();
    let ids: Vec<String> = before.into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(after, ids);
    assert!(cluster.hoard(&["fs", "cat", "/i.bin"]).stdout == data);
}

#[test]
fn coordinator_bad_identity_file_refuses_to_start() {
    bad_identity_file_refuses_to_start(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_bad_identity_file_refuses_to_start() {
    let etcd = Etcd::start().await;
    tokio::task::block_in_place(|| bad_identity_file_refuses_to_start(Some(&etcd)));
}

#[test]
fn static_ring_keeps_an_offline_worker_and_reads_go_to_the_next_candidate() {
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("/s/{i}.bin"), content(200 + i, 3000 + i as usize)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    let ufs = ufs_with(&refs);
    let cluster = start_cluster(
        3,
        ufs.path(),
        None,
        &["hoard.user.dynamic.consistent.hash.ring.enabled=false"],
    );
    let paths: Vec<String> = files.iter().map(|(path, _)| path.clone()).collect();
    let placement = owners(&cluster, &paths);
    // The owner of the first path (a fixed worker might by chance own none of 12 paths).
    let victim = cluster
        .processes()
        .into_iter()
        .find(|process| process.id == placement[0])
        .expect("the first path's owner is a worker");
    kill9(victim.pid);
    wait_until("killed worker OFFLINE", OFFLINE_LIMIT, || {
        state_of(&cluster, &victim.id) == Some(false)
    });
    assert_eq!(
        owners(&cluster, &paths),
        placement,
        "a static ring keeps the OFFLINE worker's place"
    );
    assert!(placement.contains(&victim.id), "the victim owns some of the paths");
    for (path, data) in &files {
        assert!(
            &cluster.hoard(&["fs", "cat", path]).stdout == data,
            "{path} read from the next candidate"
        );
    }
}

#[test]
fn admin_token_guards_state_changes() {
    let ufs = ufs_with(&[("/t.bin", content(81, 5000))]);
    let cluster = start_cluster(1, ufs.path(), None, &["hoard.security.admin.token=let-me-in"]);
    let coordinator = cluster.process_named("coordinator");
    let worker = cluster.processes().remove(0);
    // Workers registered with the token; reads work.
    assert_eq!(cluster.worker_states().len(), 1);
    assert!(cluster.hoard(&["fs", "cat", "/t.bin"]).stdout == content(81, 5000));
    // With the cluster secret but without the admin token: still refused.
    let secret = cluster_secret(&cluster);
    let request = format!(
        "DELETE /api/v1/workers/{}?force=true HTTP/1.1\r\nHost: x\r\nX-Hoard-Cluster-Secret: {secret}\r\nConnection: close\r\n\r\n",
        worker.id
    );
    let (status, _, body) = http_request(&coordinator.address, &request).expect("delete");
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let wrong = format!(
        "DELETE /api/v1/workers/{}?force=true HTTP/1.1\r\nHost: x\r\nX-Hoard-Cluster-Secret: {secret}\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n",
        worker.id
    );
    assert_eq!(http_request(&coordinator.address, &wrong).expect("delete").0, 401);
    assert_eq!(cluster.worker_states().len(), 1, "nothing removed without the token");
    // Tasks that change a worker's cache need it too (with the cluster secret, which a worker
    // of COORDINATOR membership also asks for).
    let body = r#"{"jobId":"j","taskId":1,"paths":["/t.bin"]}"#;
    let free = format!(
        "POST /api/v1/tasks/free HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Hoard-Cluster-Secret: {secret}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(http_request(&worker.address, &free).expect("free").0, 401);
    // The CLI sends the token from the conf.
    let forced = cluster.hoard(&["process", "remove-worker", "-n", &worker.id, "--force"]);
    assert!(forced.status.success(), "{}", describe(&forced));
}

#[test]
fn coordinator_api_rejects_bad_input() {
    let ufs = ufs_with(&[("/b.bin", content(91, 100))]);
    let cluster = start_cluster(1, ufs.path(), None, &[]);
    let coordinator = cluster.process_named("coordinator");
    // A member's requests (with the cluster secret) that are malformed.
    let secret = cluster_secret(&cluster);
    let post = |body: &str| {
        http_request(
            &coordinator.address,
            &format!(
                "POST /api/v1/workers HTTP/1.1\r\nHost: x\r\nX-Hoard-Cluster-Secret: {secret}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .expect("post")
    };
    let (status, _, body) = post("{not json");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let json: serde_json::Value = serde_json::from_slice(&body).expect("error json");
    assert_eq!(json["code"], "BAD_REQUEST");
    let bad_id =
        r#"{"workerId":"x","host":"h","rpcPort":1,"capacityBytes":1,"version":"v","startTimeMs":1,"instance":"i"}"#;
    let (status, _, body) = post(bad_id);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not a UUID"));
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(200_000));
    assert_eq!(post(&huge).0, 413);
    let (status, _, body) = http_get(&coordinator.address, "/api/v1/openapi.json").expect("openapi");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("openapi json");
    assert!(doc["paths"]["/api/v1/workers/{id}"]["delete"].is_object());
    // Nothing was registered by the bad requests.
    assert_eq!(cluster.worker_states().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_outage_workers_keep_serving_and_registrations_come_back() {
    let mut etcd = Etcd::start().await;
    let data = content(101, 2 * MIB + 5);
    let ufs = ufs_with(&[("/e.bin", data.clone())]);
    // Only the watch can tell the long-lived client about changes.
    let refresh = "hoard.user.worker.list.refresh.interval=1h";
    let cluster = tokio::task::block_in_place(|| start_cluster(3, ufs.path(), Some(&etcd), &[refresh]));
    let before = tokio::task::block_in_place(|| cluster.worker_states());
    assert_eq!(before.len(), 3);
    let workers = cluster.processes();
    let config = hoard_config::SiteConfig::load(&cluster.conf).expect("conf").config;
    let client = hoard_client::HoardClient::connect(&config).await.expect("client");
    assert_eq!(client.view(false).await.expect("view").ring_size(), 3);
    let path = hoard_common::HoardPath::parse("/e.bin").expect("path");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.membership_watches() == 0 {
        assert!(Instant::now() < deadline, "the client never watched membership");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    etcd.kill();
    let down_until = Instant::now() + Duration::from_secs(10);
    // Every worker keeps serving reads throughout the outage, and so does a client that already
    // had its ring.
    while Instant::now() < down_until {
        for worker in &workers {
            let (status, _, body) = http_get(&worker.address, "/files/e.bin").expect("read during outage");
            assert_eq!(status, 200);
            assert!(body == data, "bytes served during the outage are the UFS's");
        }
        let mut out = Vec::new();
        client
            .read_to(&path, None, &mut out)
            .await
            .expect("client read during outage");
        assert!(out == data);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    etcd.start_again().await;
    tokio::task::block_in_place(|| {
        wait_until("every worker ONLINE again, once", Duration::from_secs(30), || {
            cluster.worker_states() == before
        });
        assert!(cluster.hoard(&["fs", "cat", "/e.bin"]).stdout == data);
        assert_eq!(cluster.nodes()["coordinators"].as_array().map(Vec::len), Some(1));
    });
    // The client's watch broke with etcd; it must have watched again, and a loss reaches it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.membership_watches() < 2 {
        assert!(
            Instant::now() < deadline,
            "the client did not watch again after etcd came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let victim = workers[0].clone();
    kill9(victim.pid);
    let deadline = Instant::now() + OFFLINE_LIMIT;
    while client.view(false).await.expect("view").ring_size() != 2 {
        assert!(
            Instant::now() < deadline,
            "the client's ring is stale after the etcd restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut out = Vec::new();
    client
        .read_to(&path, None, &mut out)
        .await
        .expect("read after the loss");
    assert!(out == data);
}

/// A long-lived client follows membership: on etcd through its watch (the refresh interval
/// is set far beyond the test), on the coordinator through the refresh interval.
async fn client_follows_membership(etcd: Option<&Etcd>, refresh: &str) {
    let data = content(111, MIB + 1);
    let ufs = ufs_with(&[("/f.bin", data.clone())]);
    let refresh_property = format!("hoard.user.worker.list.refresh.interval={refresh}");
    let cluster = tokio::task::block_in_place(|| start_cluster(3, ufs.path(), etcd, &[&refresh_property]));
    let config = hoard_config::SiteConfig::load(&cluster.conf).expect("conf").config;
    let client = hoard_client::HoardClient::connect(&config).await.expect("client");
    assert_eq!(client.view(false).await.expect("view").ring_size(), 3);
    let victim = cluster.processes().remove(2);
    kill9(victim.pid);
    let deadline = Instant::now() + OFFLINE_LIMIT;
    while client.view(false).await.expect("view").ring_size() != 2 {
        assert!(
            Instant::now() < deadline,
            "the client's ring still holds the killed worker"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = hoard_common::HoardPath::parse("/f.bin").expect("path");
    let mut out = Vec::new();
    client.read_to(&path, None, &mut out).await.expect("read");
    assert!(out == data);
    let _restarted = tokio::task::block_in_place(|| restart_worker(&victim));
    let deadline = Instant::now() + OFFLINE_LIMIT;
    while client.view(false).await.expect("view").ring_size() != 3 {
        assert!(Instant::now() < deadline, "the client never saw the worker rejoin");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_client_follows_membership_by_watch() {
    let etcd = Etcd::start().await;
    client_follows_membership(Some(&etcd), "1h").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_client_follows_membership_by_refresh() {
    client_follows_membership(None, "1s").await;
}
