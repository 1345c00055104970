//! Hostile input against real processes: malformed heads, request smuggling, path traversal and
//! symbolic links out of the UFS, sent raw to a worker and to the coordinator. Nothing may
//! crash, nothing outside the UFS may be served, and normal reads stay byte-exact afterwards.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

/// In a file beside the UFS (never inside it): no answer may ever contain it.
const SECRET: &str = "hoard-test-secret-outside-the-ufs-7f3a";

/// Sends `request` raw and returns every byte the server sent until it closed or went quiet.
fn exchange(address: &str, request: &[u8]) -> Vec<u8> {
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return Vec::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(3)));
    if stream.write_all(request).is_err() {
        return Vec::new();
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 16384];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return answer,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
}

/// The status codes of every response in `answer` (several when the server pipelines).
fn statuses(answer: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(answer);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

fn hostile_requests(file: &str) -> Vec<Vec<u8>> {
    let mut requests: Vec<String> = Vec::new();
    let traversals = [
        "/files/../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/%2E%2E%2Fsecret.txt",
        "/files/..%2fsecret.txt",
        "/files/data/../../secret.txt",
        "/files//../secret.txt",
        "/files/./../secret.txt",
        "/files/escape",
        "/files/escape/",
        "/files/data/%00",
        "/files/data%00.bin",
        "/files/%c0%ae%c0%ae/secret.txt",
        "/files/..\\secret.txt",
        "/api/v1/stat?path=/../secret.txt",
        "/api/v1/stat?path=/escape",
        "/api/v1/list?path=/..",
        "/api/v1/list?path=%2e%2e",
        "/files/../../../../../../etc/passwd",
    ];
    for target in traversals {
        requests.push(format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
    }
    let malformed = [
        "\r\n\r\n".to_string(),
        "GET\r\n\r\n".to_string(),
        "GET / HTTP/9.9\r\nHost: h\r\n\r\n".to_string(),
        "GET /files/x HTTP/1.1\r\nHost h\r\n\r\n".to_string(),
        "GET /files/x HTTP/1.1\r\n Host: h\r\n\r\n".to_string(),
        format!("GET {file} HTTP/1.1\r\nHost: h\r\nRange: bytes=99999999999999999999-\r\nConnection: close\r\n\r\n"),
        format!("GET {file} HTTP/1.1\r\nHost: h\r\nRange: bytes=-0\r\nConnection: close\r\n\r\n"),
        format!("GET {file} HTTP/1.1\r\nHost: h\r\nRange: bytes=5-1\r\nConnection: close\r\n\r\n"),
        format!(
            "GET {file} HTTP/1.1\r\nHost: h\r\nRange: bytes={}\r\nConnection: close\r\n\r\n",
            "0-1,".repeat(2000)
        ),
        format!(
            "GET {file} HTTP/1.1\r\nHost: h\r\n{}\r\n\r\n",
            "X-Big: y\r\n".repeat(5000)
        ),
        format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(100_000)),
        format!("GET {file} HTTP/1.1\r\nHost: h\r\nIf-Match: \"\u{1}\"\r\nConnection: close\r\n\r\n"),
        "GET /files/\u{ff}\u{fe} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".to_string(),
        "POST /api/v1/tasks/load HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999\r\n\r\n{".to_string(),
        "POST /api/v1/tasks/load HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n0123456789"
            .to_string(),
        "POST /api/v1/tasks/load HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_string(),
        "POST /api/v1/tasks/load HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"
            .to_string(),
    ];
    requests.extend(malformed);
    for body in [
        r#"{"type":"load","path":"/../secret.txt"}"#,
        r#"{"type":"load","path":"/escape","replicas":1e308}"#,
        r#"{"type":"load","path":"#,
        "\u{0}",
    ] {
        requests.push(format!(
            "POST /api/v1/jobs HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
    }
    // Smuggling: a second request hidden in the body of the first must not be answered as if
    // it came from a trusted front end, and must never reach outside the UFS.
    let smuggled = "GET /files/../secret.txt HTTP/1.1\r\nHost: h\r\n\r\n";
    requests.push(format!(
        "POST {file} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        smuggled.len() + 5
    ));
    requests.push(format!(
        "GET {file} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{smuggled}"
    ));
    requests.push(format!(
        "GET {file} HTTP/1.1\r\nHost: h\r\nContent-Length : 4\r\n\r\nabcd{smuggled}"
    ));
    requests.push(format!(
        "GET {file} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n{smuggled}"
    ));
    requests.push(format!("GET {file} HTTP/1.1\nHost: h\n\n{smuggled}"));
    requests.push(format!(
        "GET {file} HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
    ));
    requests.push(format!(
        "GET {file} HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    ));
    requests.push(format!(
        "GET {file} HTTP/1.1\r\nHost: h\r\n\r\n{}",
        "GET / HTTP/1.1\r\n".repeat(500)
    ));
    requests.into_iter().map(String::into_bytes).collect()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn hostile_requests_crash_nothing_and_reach_nothing_outside_the_ufs() {
    let base = tempfile::Builder::new()
        .prefix("hoard-hostile")
        .tempdir()
        .expect("temp dir");
    let ufs = base.path().join("ufs");
    std::fs::create_dir_all(&ufs).expect("ufs dir");
    std::fs::write(base.path().join("secret.txt"), SECRET).expect("secret");
    std::os::unix::fs::symlink(base.path().join("secret.txt"), ufs.join("escape")).expect("symlink");
    let data = content(42, 3 * (1 << 20) + 17);
    std::fs::write(ufs.join("data.bin"), &data).expect("data");
    let cluster = Cluster::start(1, &ufs, &[]);
    let processes = cluster.all_processes();
    let worker = processes.iter().find(|p| p.role == "worker").expect("a worker").clone();
    let coordinator = processes
        .iter()
        .find(|p| p.role == "coordinator")
        .expect("a coordinator")
        .clone();

    // A symbolic link out of the UFS is refused, not followed.
    let (status, _, body) = http_get(&worker.address, "/files/escape").expect("escape");
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));

    let requests = hostile_requests("/files/data.bin");
    let count = requests.len();
    for target in [&worker, &coordinator] {
        let answers: Vec<(usize, Vec<u8>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = requests
                .iter()
                .enumerate()
                .map(|(index, request)| {
                    let address = target.address.clone();
                    scope.spawn(move || (index, exchange(&address, request)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("exchange thread"))
                .collect()
        });
        for (index, answer) in &answers {
            let text = String::from_utf8_lossy(answer);
            assert!(
                !text.contains(SECRET),
                "{} served bytes from outside the ufs for request {index}: {:?}",
                target.role,
                String::from_utf8_lossy(&requests[*index])
            );
            for status in statuses(answer) {
                assert!(
                    status < 500 || status == 502 || status == 503,
                    "{} answered {status} to request {index}: {:?}",
                    target.role,
                    String::from_utf8_lossy(&requests[*index])
                );
            }
        }
        // The corpus is answered, not just dropped: all but a few requests (an empty head, a
        // chunk size that never ends) get a status line back.
        let answered = answers
            .iter()
            .filter(|(_, answer)| !statuses(answer).is_empty())
            .count();
        assert!(
            answered + 3 >= count,
            "{} answered only {answered} of {count} requests",
            target.role
        );
        assert!(alive(target.pid), "{} died after {count} hostile requests", target.role);
    }

    // Both still serve, and the worker's bytes are still the file's.
    let cat = cluster.hoard(&["fs", "cat", "/data.bin"]);
    assert!(cat.status.success(), "{}", describe(&cat));
    assert!(cat.stdout == data, "bytes changed after hostile requests");
    let (status, _, body) = http_get(&worker.address, "/files/data.bin").expect("direct read");
    assert_eq!(status, 200);
    assert!(body == data, "direct read returned different bytes");
    let nodes = cluster.hoard(&["info", "nodes", "--format", "json"]);
    assert!(nodes.status.success(), "{}", describe(&nodes));
}
