//! Who may change membership, what secrets look like on disk, and how strictly REST bodies
//! are read, on real processes: a `hoard local` cluster, impostor requests from outside it, and
//! workers started by hand. Every test also checks the cluster's bytes and members afterwards.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;
const IMPOSTOR_ID: &str = "0badc0de-0000-4000-8000-000000000001";

fn files() -> Vec<(String, Vec<u8>)> {
    (0..6u64)
        .map(|i| (format!("/s/f{i}.bin"), content(700 + i, MIB + 1000 * i as usize + 7)))
        .collect()
}

fn start(files: &[(String, Vec<u8>)], workers: usize, properties: &[&str]) -> (tempfile::TempDir, Cluster) {
    let owned: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let ufs = ufs_with(&owned);
    let cluster = Cluster::start(workers, ufs.path(), properties);
    (ufs, cluster)
}

fn secret_of(cluster: &Cluster) -> String {
    let path = cluster.home.path().join("cluster_secret");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .trim()
        .to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A raw request with a JSON body and extra header lines (each ending in `\r\n`).
fn send_json(address: &str, method: &str, target: &str, headers: &str, body: &str) -> HttpAnswer {
    http_request(
        address,
        &format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .expect("request")
}

fn error_of(answer: &HttpAnswer) -> serde_json::Value {
    serde_json::from_slice(&answer.2)
        .unwrap_or_else(|err| panic!("not a JSON error ({err}): {}", String::from_utf8_lossy(&answer.2)))
}

/// A process that would serve wrong bytes if it ever joined: answers every request with
/// `IMPOSTOR`. Runs until the test ends.
fn impostor_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in listener.incoming().flatten() {
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nIMPOSTOR");
        }
    });
    address
}

fn assert_bytes_and_members(cluster: &Cluster, files: &[(String, Vec<u8>)], members: &[(String, String, bool)]) {
    assert_eq!(&cluster.worker_states(), members, "the members did not change");
    for (path, data) in files {
        let cat = cluster.hoard(&["fs", "cat", path]);
        assert!(cat.status.success(), "{}", describe(&cat));
        assert!(cat.stdout == *data, "{path}: bytes read through hoard are the UFS's");
    }
}

#[test]
fn impostors_without_the_cluster_secret_are_refused() {
    let files = files();
    let (_ufs, cluster) = start(&files, 2, &[]);
    let coordinator = cluster.process_named("coordinator").address;
    let members = cluster.worker_states();
    assert_eq!(members.len(), 2);
    assert!(
        members.iter().all(|(_, _, online)| *online),
        "real workers register: {members:?}"
    );
    let impostor = impostor_server();
    let (host, port) = impostor.rsplit_once(':').expect("host:port");
    let registration = format!(
        r#"{{"workerId":"{IMPOSTOR_ID}","host":"{host}","rpcPort":{port},"capacityBytes":1073741824,"version":"0.1.0","startTimeMs":1,"instance":"evil"}}"#
    );
    let real = &members[0].0;
    let heartbeat = format!("/api/v1/workers/{real}/heartbeat");
    let removal = format!("/api/v1/workers/{real}?force=true");
    let attempt = |headers: &str| {
        for _ in 0..3 {
            let answer = send_json(&coordinator, "POST", "/api/v1/workers", headers, &registration);
            assert_eq!(
                answer.0,
                401,
                "registration with {headers:?}: {}",
                String::from_utf8_lossy(&answer.2)
            );
            assert_eq!(error_of(&answer)["code"], "UNAUTHORIZED");
            let beat = r#"{"instance":"evil","usedBytes":0,"capacityBytes":1}"#;
            let answer = send_json(&coordinator, "PUT", &heartbeat, headers, beat);
            assert_eq!(answer.0, 401, "heartbeat with {headers:?}");
            assert_eq!(error_of(&answer)["code"], "UNAUTHORIZED");
            let answer = send_json(&coordinator, "DELETE", &removal, headers, "");
            assert_eq!(answer.0, 401, "removal with {headers:?}");
        }
    };
    // No secret at all (what registered an impostor before), and a made-up one.
    attempt("");
    attempt("X-Hoard-Cluster-Secret: not-the-secret-not-the-secret\r\n");
    // Close to the real one, or the real one in the admin token's header: refused too.
    let secret = secret_of(&cluster);
    attempt(&format!(
        "X-Hoard-Cluster-Secret: {}\r\n",
        secret.replace(|c: char| c != '0', "0")
    ));
    attempt(&format!("X-Hoard-Cluster-Secret: {}\r\n", &secret[..secret.len() - 1]));
    attempt(&format!("X-Hoard-Cluster-Secret: {secret}x\r\n"));
    attempt(&format!("Authorization: Bearer {secret}\r\n"));
    // Never listed, nothing removed, and every read is the UFS's bytes.
    let nodes = cluster.nodes();
    assert!(!nodes.to_string().contains(IMPOSTOR_ID), "{nodes}");
    assert!(!nodes.to_string().contains(&impostor), "{nodes}");
    assert_bytes_and_members(&cluster, &files, &members);
    let log = std::fs::read_to_string(cluster.home.path().join("logs/coordinator.log")).expect("log");
    assert!(
        log.contains("refused a membership change without the cluster secret"),
        "{log}"
    );
    assert!(!log.contains(&secret), "the secret is never logged");
}

/// A conf dir for a worker started by hand next to the cluster's: `worker-0`'s settings with
/// its own work dir (so its own identity), port and secret file.
fn extra_worker_conf(cluster: &Cluster, dir: &Path, secret_file: &Path) -> (std::path::PathBuf, String) {
    let template = cluster.process_named("worker-0").conf_dir.join("hoard-site.properties");
    let text = std::fs::read_to_string(template).expect("worker conf");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| {
            ![
                "hoard.work.dir=",
                "hoard.worker.rpc.port=",
                "hoard.security.cluster.secret.file=",
            ]
            .iter()
            .any(|key| line.starts_with(key))
        })
        .map(String::from)
        .collect();
    lines.push(format!("hoard.work.dir={}", dir.join("work").display()));
    lines.push(format!("hoard.worker.rpc.port={port}"));
    lines.push(format!("hoard.security.cluster.secret.file={}", secret_file.display()));
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).expect("conf dir");
    std::fs::write(conf.join("hoard-site.properties"), lines.join("\n")).expect("conf");
    (conf, format!("127.0.0.1:{port}"))
}

#[test]
fn workers_without_the_right_secret_never_join() {
    let files = files();
    let (_ufs, cluster) = start(&files, 1, &[]);
    let members = cluster.worker_states();
    let dir = tempfile::tempdir().expect("dir");

    // No secret file: the worker does not start, and says which file it needs.
    let missing = dir.path().join("missing/cluster_secret");
    let (conf, _) = extra_worker_conf(&cluster, &dir.path().join("a"), &missing);
    let mut child = Command::new(HOARD)
        .arg("--conf")
        .arg(&conf)
        .arg("worker")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a worker without the cluster secret kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    assert!(!status.success());
    assert!(
        stderr.contains("cluster secret file") && stderr.contains(&missing.display().to_string()),
        "{stderr}"
    );
    assert!(
        !dir.path().join("a/work/page_store").exists(),
        "it stopped before opening a cache"
    );

    // A wrong secret: the worker serves but the coordinator never lists it; its log says why.
    let wrong = dir.path().join("wrong_secret");
    write_secret_file(&wrong, "not-the-cluster-secret-at-all-0000");
    let (conf, address) = extra_worker_conf(&cluster, &dir.path().join("b"), &wrong);
    let log_path = dir.path().join("b.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let _worker = ChildGuard(
        Command::new(HOARD)
            .arg("--conf")
            .arg(&conf)
            .arg("worker")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn worker"),
    );
    wait_until("the refused worker logs why", Duration::from_secs(30), || {
        std::fs::read_to_string(&log_path).is_ok_and(|text| text.contains("the coordinator refuses this worker"))
    });
    assert!(http_get(&address, "/health").is_ok_and(|answer| answer.0 == 200));
    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        text.contains(&wrong.display().to_string()),
        "the log names the secret file: {text}"
    );
    assert!(!text.contains("not-the-cluster-secret"), "the secret is never logged");
    assert_bytes_and_members(&cluster, &files, &members);
}

/// Writes a secret file the way an operator would (tests have no hoard-common dependency).
fn write_secret_file(path: &Path, secret: &str) {
    std::fs::write(path, format!("{secret}\n")).expect("secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn files_holding_secrets_are_private() {
    let files = files();
    let (_ufs, cluster) = start(&files, 2, &["hoard.security.admin.token=let-me-in"]);
    let home = cluster.home.path().canonicalize().expect("home");
    let mut checked = Vec::new();
    let mut conf_dirs = vec![home.join("conf")];
    conf_dirs.extend(cluster.all_processes().into_iter().map(|process| process.conf_dir));
    assert_eq!(
        conf_dirs.len(),
        4,
        "the client's, the coordinator's and two workers' conf dirs"
    );
    for conf in conf_dirs {
        let site = conf.join("hoard-site.properties");
        assert!(std::fs::read_to_string(&site).expect("conf").contains("let-me-in"));
        checked.push(site);
    }
    checked.push(home.join("cluster_secret"));
    for process in cluster.processes() {
        checked.push(
            process
                .conf_dir
                .parent()
                .expect("work dir")
                .join("system-info/worker_identity"),
        );
    }
    for path in &checked {
        assert_eq!(
            mode(path),
            0o600,
            "{} must be readable by its owner only",
            path.display()
        );
    }
    // The cluster still works with its private files.
    let members = cluster.worker_states();
    assert!(members.iter().all(|(_, _, online)| *online), "{members:?}");
    assert_bytes_and_members(&cluster, &files, &members);
}

#[test]
fn unknown_fields_in_rest_bodies_get_400_naming_them() {
    let files = files();
    let (_ufs, cluster) = start(&files, 1, &[]);
    let coordinator = cluster.process_named("coordinator").address;
    let worker = cluster.processes().remove(0);
    let members = cluster.worker_states();
    let cases = [
        (r#"{"type":"load","path":"/s","replica":50}"#, "unknown field `replica`"),
        (
            r#"{"type":"load","path":"/s","options":{"replica":2}}"#,
            "unknown field `replica`",
        ),
    ];
    for (body, expected) in cases {
        let answer = send_json(&coordinator, "POST", "/api/v1/jobs", "", body);
        assert_eq!(answer.0, 400, "{body}: {}", String::from_utf8_lossy(&answer.2));
        let error = error_of(&answer);
        assert_eq!(error["code"], "BAD_REQUEST");
        assert!(
            error["error"].as_str().unwrap_or_default().contains(expected),
            "{body}: {error}"
        );
        assert_eq!(
            common::header(&answer.1, "content-type"),
            Some("application/json"),
            "{body}"
        );
    }
    // Top-level: serde's message as is.
    let answer = send_json(&coordinator, "POST", "/api/v1/jobs", "", cases[0].0);
    let error = error_of(&answer);
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("unknown field `replica`"),
        "{error}"
    );
    // A heartbeat with a stray field, from a real member (with the secret).
    let secret = format!("X-Hoard-Cluster-Secret: {}\r\n", secret_of(&cluster));
    let beat = r#"{"instance":"x","usedBytes":0,"capacityBytes":1,"leavng":true}"#;
    let answer = send_json(
        &coordinator,
        "PUT",
        &format!("/api/v1/workers/{}/heartbeat", worker.id),
        &secret,
        beat,
    );
    assert_eq!(answer.0, 400);
    assert!(error_of(&answer)["error"]
        .as_str()
        .unwrap_or_default()
        .contains("unknown field `leavng`"));
    // A worker's task with a stray field changes nothing.
    cluster.hoard(&["fs", "cat", &files[0].0]);
    let length = files[0].1.len() as u64;
    cluster.wait_cached(&files[0].0, length);
    // Without the cluster secret no task is taken: nobody but the coordinators can make a
    // worker load or free.
    let valid_free = format!(r#"{{"jobId":"j","taskId":1,"paths":["{}"]}}"#, files[0].0);
    let answer = send_json(&worker.address, "POST", "/api/v1/tasks/free", "", &valid_free);
    assert_eq!(answer.0, 401, "{}", String::from_utf8_lossy(&answer.2));
    let wrong = "X-Hoard-Cluster-Secret: not-the-secret\r\n";
    let answer = send_json(&worker.address, "POST", "/api/v1/tasks/free", wrong, &valid_free);
    assert_eq!(answer.0, 401, "{}", String::from_utf8_lossy(&answer.2));
    cluster.wait_cached(&files[0].0, length);
    let free = format!(r#"{{"jobId":"j","taskId":1,"paths":["{}"],"force":true}}"#, files[0].0);
    let answer = send_json(&worker.address, "POST", "/api/v1/tasks/free", &secret, &free);
    assert_eq!(answer.0, 400, "{}", String::from_utf8_lossy(&answer.2));
    assert!(error_of(&answer)["error"]
        .as_str()
        .unwrap_or_default()
        .contains("unknown field `force`"));
    cluster.wait_cached(&files[0].0, length);

    // Nothing was submitted; the cluster is as it was.
    let jobs = cluster.hoard(&["job", "list", "--format", "json"]);
    assert!(jobs.status.success(), "{}", describe(&jobs));
    let listed: serde_json::Value = serde_json::from_slice(&jobs.stdout).expect("jobs json");
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    assert_bytes_and_members(&cluster, &files, &members);
}
