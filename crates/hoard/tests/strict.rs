//! Strictness a client can rely on (docs/worker-http.md#strictness), on real processes: the
//! `Host` rule of RFC 9112 §3.2 on the worker (direct path and router) and the coordinator,
//! `Range` units and lists as RFC 9110 §14 says, and JSON errors for paths that do not decode.
//! Each refusal is followed by a read that must still return the file's bytes.

mod common;

use common::*;

const LEN: usize = 300_000;

/// The start of a body, for messages (file bodies are binary).
fn shown(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).to_string()
}

fn json_error(answer: &HttpAnswer) -> serde_json::Value {
    let (_, headers, body) = answer;
    assert_eq!(
        header(headers, "content-type"),
        Some("application/json"),
        "{headers:?} {:?}",
        shown(body)
    );
    serde_json::from_slice(body).expect("a JSON error body")
}

fn assert_bad_request(answer: HttpAnswer, codes: &[&str], what: &str) {
    assert_eq!(answer.0, 400, "{what}: {:?}", shown(&answer.2));
    let error = json_error(&answer);
    assert!(
        codes.iter().any(|code| error["code"] == *code),
        "{what}: {error}, expected a code of {codes:?}"
    );
    assert!(
        error["error"].as_str().is_some_and(|message| !message.is_empty()),
        "{what}: {error}"
    );
}

struct Setup {
    _ufs: tempfile::TempDir,
    cluster: Cluster,
    data: Vec<u8>,
    worker: String,
}

fn setup() -> Setup {
    let ufs = tempfile::Builder::new().prefix("hoard-ufs").tempdir().expect("ufs dir");
    let data = content(3, LEN);
    std::fs::write(ufs.path().join("f.bin"), &data).expect("write");
    let cluster = Cluster::start(1, ufs.path(), &[]);
    let worker = cluster.processes()[0].address.clone();
    Setup {
        _ufs: ufs,
        cluster,
        data,
        worker,
    }
}

impl Setup {
    /// Nothing was lost: the file still reads back whole.
    fn still_reads(&self) {
        let (status, _, body) = http_get(&self.worker, "/files/f.bin").expect("read");
        assert_eq!(status, 200);
        assert!(body == self.data, "the file read back differs");
    }
}

#[test]
fn host_is_required_once_on_every_listener() {
    let setup = setup();
    let coordinator = setup.cluster.coordinator().address;
    for (address, target) in [
        // The direct path, a route of the router, and a file request the router answers.
        (&setup.worker, "/files/f.bin"),
        (&setup.worker, "/health"),
        (&setup.worker, "/files/f%2Ebin"),
        (&coordinator, "/api/v1/nodes"),
        (&coordinator, "/health"),
    ] {
        let missing = http_request(address, &format!("GET {target} HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert_bad_request(
            missing.expect("answer"),
            &["BAD_REQUEST"],
            &format!("{address}{target} without Host"),
        );
        let twice = http_request(
            address,
            &format!("GET {target} HTTP/1.1\r\nHost: {address}\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
        );
        assert_bad_request(
            twice.expect("answer"),
            &["BAD_REQUEST"],
            &format!("{address}{target} with two Hosts"),
        );
        let invalid = http_request(
            address,
            &format!("GET {target} HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n"),
        );
        assert_bad_request(
            invalid.expect("answer"),
            &["BAD_REQUEST"],
            &format!("{address}{target} with a bad Host"),
        );
        // HTTP/1.0 needs no Host.
        let old = http_request(address, &format!("GET {target} HTTP/1.0\r\n\r\n")).expect("answer");
        assert_eq!(old.0, 200, "{address}{target} over HTTP/1.0");
    }
    // On a kept-alive connection, a request without Host after a good one is refused too.
    let pipelined = http_request(
        &setup.worker,
        "GET /files/f.bin HTTP/1.1\r\nHost: w\r\nRange: bytes=0-9\r\n\r\nGET /files/f.bin HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .expect("answer");
    assert_eq!(pipelined.0, 206);
    let raw_second = String::from_utf8_lossy(&pipelined.2);
    assert!(raw_second.contains("HTTP/1.1 400"), "{raw_second}");
    setup.still_reads();
}

#[test]
fn range_units_and_lists_follow_rfc_9110() {
    let setup = setup();
    for target in ["/files/f.bin", "/files/f%2Ebin"] {
        let get = |range: &str| {
            http_request(
                &setup.worker,
                &format!("GET {target} HTTP/1.1\r\nHost: w\r\nRange: {range}\r\nConnection: close\r\n\r\n"),
            )
            .expect("answer")
        };
        // An unknown unit is ignored: the whole file.
        let (status, headers, body) = get("items=0-5");
        assert_eq!(status, 200, "{target} items=0-5");
        assert!(header(&headers, "content-range").is_none());
        assert!(body == setup.data, "{target}: items=0-5 should return the whole file");
        // Several satisfiable ranges: the whole file (not 416).
        let (status, _, body) = get("bytes=0-9,20-29");
        assert_eq!(status, 200, "{target} bytes=0-9,20-29");
        assert!(
            body == setup.data,
            "{target}: several ranges should return the whole file"
        );
        let (status, _, body) = get("bytes=999999999-,5-6");
        assert_eq!(status, 200, "{target} one satisfiable range of two");
        assert!(body == setup.data);
        // None satisfiable: 416, as for one range.
        let (status, headers, _) = get(&format!("bytes={LEN}-,{}-", LEN + 10));
        assert_eq!(status, 416, "{target} no satisfiable range");
        assert_eq!(
            header(&headers, "content-range"),
            Some(format!("bytes */{LEN}").as_str())
        );
        // One range still answers 206 with that range.
        let (status, headers, body) = get("bytes=10-19");
        assert_eq!(status, 206);
        assert_eq!(
            header(&headers, "content-range"),
            Some(format!("bytes 10-19/{LEN}").as_str())
        );
        assert_eq!(body, setup.data[10..20]);
    }
    setup.still_reads();
}

#[test]
fn paths_that_do_not_decode_get_the_json_error() {
    let setup = setup();
    for target in ["/files/%ff.bin", "/files/a%C3%28b", "/files/%80"] {
        let answer = http_get(&setup.worker, target).expect("answer");
        assert_bad_request(answer, &["INVALID_PATH"], target);
    }
    // A query decodes lossily: the path that results is refused.
    for target in [
        "/api/v1/stat?path=%ff",
        "/api/v1/list?path=%C3%28",
        "/api/v1/stat?path=%",
    ] {
        let answer = http_get(&setup.worker, target).expect("answer");
        assert_bad_request(answer, &["INVALID_PATH", "BAD_REQUEST"], target);
    }
    setup.still_reads();
}
