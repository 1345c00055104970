//! End-to-end: real worker processes started by `hoard local`, driven through the CLI and raw
//! HTTP. Every fault test also checks the bytes that come back.

mod common;

use std::time::Duration;

use common::*;

const MIB: usize = 1 << 20;

#[test]
fn cli_reads_the_ufs_through_workers() {
    let big = content(1, 5 * MIB + 123);
    let small = b"hello hoard\n".to_vec();
    let ufs = ufs_with(&[
        ("/a/b.bin", big.clone()),
        ("/c.txt", small.clone()),
        ("/a/empty", Vec::new()),
    ]);
    // Enough names that the file system's directory order is not already sorted.
    let mut many: Vec<String> = (0..64).map(|i| format!("f{:03}", (i * 37) % 64)).collect();
    for name in &many {
        std::fs::create_dir_all(ufs.path().join("many")).expect("mkdir many");
        std::fs::write(ufs.path().join("many").join(name), name.as_bytes()).expect("write many");
    }
    let cluster = Cluster::start(3, ufs.path(), &[]);

    let names = cluster.ls_names("/");
    assert_eq!(names, ["a", "c.txt", "many"]);
    let text_ls = cluster.hoard(&["fs", "ls", "/a"]);
    assert!(
        String::from_utf8_lossy(&text_ls.stdout).contains("b.bin"),
        "{}",
        describe(&text_ls)
    );
    // Text output is sorted by name, like ls(1); `-U` keeps the listing order, same entries.
    let text_names = |args: &[&str]| -> Vec<String> {
        let ls = cluster.hoard(args);
        assert!(ls.status.success(), "{}", describe(&ls));
        String::from_utf8_lossy(&ls.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().last().map(str::to_string))
            .collect()
    };
    many.sort();
    assert_eq!(text_names(&["fs", "ls", "/many"]), many);
    let mut unsorted = text_names(&["fs", "ls", "-U", "/many"]);
    unsorted.sort();
    assert_eq!(unsorted, many);

    // Cold, then warm: the same bytes both times.
    for _ in 0..2 {
        let cat = cluster.hoard(&["fs", "cat", "/a/b.bin"]);
        assert!(cat.status.success(), "{}", describe(&cat));
        assert!(cat.stdout == big, "cat returned different bytes");
    }
    let cat_small = cluster.hoard(&["fs", "cat", "/c.txt"]);
    assert_eq!(cat_small.stdout, small);
    let cat_empty = cluster.hoard(&["fs", "cat", "/a/empty"]);
    assert!(
        cat_empty.status.success() && cat_empty.stdout.is_empty(),
        "{}",
        describe(&cat_empty)
    );

    cluster.wait_cached("/a/b.bin", big.len() as u64);
    let stat = cluster.hoard(&["fs", "stat", "/a/b.bin", "--format", "json"]);
    assert!(stat.status.success(), "{}", describe(&stat));
    let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).expect("stat json");
    assert_eq!(stat["length"].as_u64(), Some(big.len() as u64));
    assert_eq!(
        stat["cachedBytes"].as_u64(),
        Some(big.len() as u64),
        "after a full read every page is cached: {stat}"
    );
    let owner = stat["workers"][0]["address"].as_str().expect("owner").to_string();
    assert_eq!(stat["answeredBy"].as_str(), Some(owner.as_str()));

    // location agrees with stat, reads paths from stdin with `-`, and is deterministic.
    let primary = cluster.primary_of("/a/b.bin");
    assert_eq!(primary.address, owner);
    let from_stdin = cluster.hoard_with_stdin(&["fs", "location", "-", "--format", "json"], "/a/b.bin\n/c.txt\n");
    let located: serde_json::Value = serde_json::from_slice(&from_stdin.stdout).expect("location json");
    assert_eq!(located.as_array().map(Vec::len), Some(2));
    assert_eq!(located[0]["workers"][0]["address"].as_str(), Some(owner.as_str()));
    let three = cluster.hoard(&["fs", "location", "/c.txt", "-n", "3", "--format", "json"]);
    let three: serde_json::Value = serde_json::from_slice(&three.stdout).expect("location json");
    let addresses: std::collections::BTreeSet<&str> = three[0]["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["address"].as_str())
        .collect();
    assert_eq!(addresses.len(), 3, "three distinct candidates: {three}");

    let nodes = cluster.hoard(&["info", "nodes", "--format", "json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&nodes.stdout).expect("nodes json");
    let workers = nodes["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 3);
    assert!(
        workers.iter().all(|w| w["online"] == true && w["workerId"].is_string()),
        "{nodes}"
    );

    let dest = tempfile::tempdir().expect("dest");
    let out = dest.path().join("copy.bin");
    let cp = cluster.hoard(&["fs", "cp", "/a/b.bin", out.to_str().expect("utf8")]);
    assert!(cp.status.success(), "{}", describe(&cp));
    assert!(std::fs::read(&out).expect("copied") == big);

    // Any HTTP client can read a range from the owning worker.
    let (status, headers, body) = http_request(
        &owner,
        "GET /files/a/b.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\nConnection: close\r\n\r\n",
    )
    .expect("range read");
    assert_eq!(status, 206);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes 0-99/{}", big.len()).as_str())
    );
    assert_eq!(body, big[..100]);
    let (status, _, body) = http_request(
        &owner,
        &format!(
            "GET /files/a/b.bin HTTP/1.1\r\nHost: x\r\nRange: bytes={}-\r\nConnection: close\r\n\r\n",
            MIB - 10
        ),
    )
    .expect("cross-page range");
    assert_eq!(status, 206);
    assert!(body == big[MIB - 10..]);
}

#[test]
fn bad_input_is_refused_and_nothing_is_corrupted() {
    let data = content(2, 2 * MIB + 7);
    let ufs = ufs_with(&[("/d/file.bin", data.clone())]);
    let cluster = Cluster::start(1, ufs.path(), &[]);
    let worker = cluster.processes()[0].clone();

    // Nonexistent path: 404 from the worker, `no such file` and exit 1 from the CLI.
    let (status, _, body) = http_get(&worker.address, "/files/x").expect("get");
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("NOT_FOUND"));
    let cat = cluster.hoard(&["fs", "cat", "/x"]);
    assert_eq!(cat.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&cat.stderr).contains("no such file: /x"),
        "{}",
        describe(&cat)
    );
    let stat = cluster.hoard(&["fs", "stat", "/x"]);
    assert_eq!(stat.status.code(), Some(1));

    // A range past the end: 416 with the length.
    let (status, headers, _) = http_request(
        &worker.address,
        "GET /files/d/file.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=99999999-\r\nConnection: close\r\n\r\n",
    )
    .expect("get");
    assert_eq!(status, 416);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes */{}", data.len()).as_str())
    );

    // `..` escaping the root: 400, on every route.
    for target in [
        "/files/../../etc/passwd",
        "/files/d/../../x",
        "/files/%2e%2e/etc/passwd",
        "/api/v1/stat?path=/../etc/passwd",
    ] {
        let (status, _, body) = http_get(&worker.address, target).expect("get");
        assert_eq!(status, 400, "{target}: {}", String::from_utf8_lossy(&body));
    }
    let escape = cluster.hoard(&["fs", "cat", "/../etc/passwd"]);
    assert_eq!(escape.status.code(), Some(1));

    // Oversized header and range: refused with a 4xx, and the worker keeps serving.
    let huge = "a".repeat(256 * 1024);
    let result = http_request(
        &worker.address,
        &format!("GET /files/d/file.bin HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n"),
    );
    if let Ok((status, _, _)) = result {
        assert!((400..500).contains(&status), "huge header got {status}");
    }
    let long_range = format!("bytes=0-{}", "9".repeat(1000));
    let (status, _, _) = http_request(
        &worker.address,
        &format!("GET /files/d/file.bin HTTP/1.1\r\nHost: x\r\nRange: {long_range}\r\nConnection: close\r\n\r\n"),
    )
    .expect("get");
    assert_eq!(status, 400);
    // Several ranges: the whole file (RFC 9110 lets a server ignore Range; docs/worker-http.md).
    let (status, _, body) = http_request(
        &worker.address,
        "GET /files/d/file.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,5-6\r\nConnection: close\r\n\r\n",
    )
    .expect("get");
    assert_eq!(status, 200);
    assert!(body == data, "several ranges should return the whole file");

    // Nothing lost or corrupted: the file still reads back exactly.
    let cat = cluster.hoard(&["fs", "cat", "/d/file.bin"]);
    assert!(cat.status.success() && cat.stdout == data, "{}", describe(&cat));
    assert_eq!(metric(&worker.address, "hoard_worker_checksum_failures_total"), 0.0);
}

#[test]
fn corrupt_page_is_detected_and_refetched() {
    let data = content(3, 3 * MIB);
    let ufs = ufs_with(&[("/f.bin", data.clone())]);
    let cluster = Cluster::start(1, ufs.path(), &[]);
    let worker = cluster.processes()[0].clone();
    assert!(cluster.hoard(&["fs", "cat", "/f.bin"]).stdout == data);
    cluster.wait_cached("/f.bin", data.len() as u64);

    // Flip one byte in every cached page file on disk.
    let store = worker.conf_dir.parent().expect("work dir").join("page_store");
    let mut corrupted = 0;
    for entry in walk(&store) {
        let mut bytes = std::fs::read(&entry).expect("page");
        if bytes.len() < 1024 {
            continue;
        }
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&entry, bytes).expect("corrupt");
        corrupted += 1;
    }
    assert_eq!(corrupted, 3, "expected three 1MiB page files under {}", store.display());

    let cat = cluster.hoard(&["fs", "cat", "/f.bin"]);
    assert!(
        cat.status.success() && cat.stdout == data,
        "corrupt pages must never be served"
    );
    assert_eq!(metric(&worker.address, "hoard_worker_checksum_failures_total"), 3.0);
    // Refetched and cached again: the next read is all hits with the right bytes.
    cluster.wait_cached("/f.bin", data.len() as u64);
    let misses = metric(&worker.address, "hoard_worker_page_misses_total");
    assert!(cluster.hoard(&["fs", "cat", "/f.bin"]).stdout == data);
    assert_eq!(metric(&worker.address, "hoard_worker_page_misses_total"), misses);
    // That read earned each page a verified copy in memory: the next one is served from there.
    assert_eq!(metric(&worker.address, "hoard_worker_page_memory_hits_total"), 0.0);
    assert_eq!(
        metric(&worker.address, "hoard_worker_page_memory_used_bytes"),
        data.len() as f64
    );
    assert!(cluster.hoard(&["fs", "cat", "/f.bin"]).stdout == data);
    assert!(metric(&worker.address, "hoard_worker_page_memory_hits_total") >= 3.0);
    assert_eq!(metric(&worker.address, "hoard_worker_checksum_failures_total"), 3.0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn rewritten_ufs_file_is_served_new_after_max_age_never_mixed() {
    let old = content(4, 3 * MIB);
    let new = content(5, 3 * MIB);
    let ufs = ufs_with(&[("/r.bin", old.clone())]);
    let cluster = Cluster::start(1, ufs.path(), &["hoard.user.file.metadata.max.age=2s"]);
    // Cache only the first page, so a later read would need both cached and fetched pages.
    let worker = cluster.processes()[0].clone();
    let (status, _, _) = http_request(
        &worker.address,
        "GET /files/r.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1000\r\nConnection: close\r\n\r\n",
    )
    .expect("warm first page");
    assert_eq!(status, 206);

    std::fs::write(ufs.path().join("r.bin"), &new).expect("rewrite");
    let mut saw_new = false;
    wait_until("new bytes served", Duration::from_secs(30), || {
        let cat = cluster.hoard(&["fs", "cat", "/r.bin"]);
        if !cat.status.success() {
            // A read that raced the rewrite may fail; it must never succeed with a mix.
            return false;
        }
        assert!(cat.stdout == old || cat.stdout == new, "a read mixed old and new bytes");
        saw_new = cat.stdout == new;
        saw_new
    });
    assert!(saw_new);
}

#[test]
fn full_cache_evicts_without_errors() {
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("/e/{i}.bin"), content(10 + i, 2 * MIB)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let ufs = ufs_with(&refs);
    let cluster = Cluster::start(1, ufs.path(), &["hoard.worker.page.store.sizes=4MiB"]);
    let worker = cluster.processes()[0].clone();
    for _ in 0..2 {
        for (path, bytes) in &files {
            let cat = cluster.hoard(&["fs", "cat", path]);
            assert!(
                cat.status.success() && &cat.stdout == bytes,
                "{path}: {}",
                describe(&cat)
            );
        }
    }
    assert!(metric(&worker.address, "hoard_worker_page_evictions_total") > 0.0);
    assert!(metric(&worker.address, "hoard_worker_page_store_used_bytes") <= (4 * MIB) as f64);
}

#[test]
fn restarted_worker_serves_its_cache_without_the_ufs() {
    let data = content(6, 4 * MIB + 5);
    let ufs = ufs_with(&[("/k.bin", data.clone())]);
    let cluster = Cluster::start(2, ufs.path(), &[]);
    assert!(cluster.hoard(&["fs", "cat", "/k.bin"]).stdout == data);
    cluster.wait_cached("/k.bin", data.len() as u64);
    let owner = cluster.primary_of("/k.bin");
    kill9(owner.pid);
    wait_until("worker is gone", Duration::from_secs(10), || {
        http_get(&owner.address, "/health").is_err()
    });

    let _restarted = restart_worker(&owner);
    let (_, _, health) = http_get(&owner.address, "/health").expect("health");
    let health: serde_json::Value = serde_json::from_slice(&health).expect("health json");
    assert_eq!(
        health["id"].as_str(),
        Some(owner.id.as_str()),
        "identity survives restarts"
    );
    assert!(cluster.hoard(&["fs", "cat", "/k.bin"]).stdout == data);
    assert_eq!(
        metric(&owner.address, "hoard_worker_ufs_bytes_read_total"),
        0.0,
        "served from the recovered page store"
    );
    assert_eq!(metric(&owner.address, "hoard_worker_page_hits_total"), 5.0);
}

#[test]
fn concurrent_misses_read_each_page_once_and_only_the_pages_needed() {
    let data = content(8, 5 * MIB);
    let ufs = ufs_with(&[("/s.bin", data.clone())]);
    let cluster = Cluster::start(1, ufs.path(), &[]);
    let worker = cluster.processes()[0].clone();

    // A 100-byte range of a cold 5MiB file reads one page from the UFS, not the file.
    let (status, _, body) = http_request(
        &worker.address,
        "GET /files/s.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\nConnection: close\r\n\r\n",
    )
    .expect("range read");
    assert_eq!(status, 206);
    assert_eq!(body, data[..100]);
    assert_eq!(metric(&worker.address, "hoard_worker_ufs_bytes_read_total"), MIB as f64);

    // Sixteen readers of the same cold page at once: one UFS read between them.
    let start = 3 * MIB + 17;
    let request = format!(
        "GET /files/s.bin HTTP/1.1\r\nHost: x\r\nRange: bytes={start}-{}\r\nConnection: close\r\n\r\n",
        start + 999
    );
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let barrier = std::sync::Arc::clone(&barrier);
            let address = worker.address.clone();
            let request = request.clone();
            std::thread::spawn(move || {
                barrier.wait();
                http_request(&address, &request).expect("concurrent read")
            })
        })
        .collect();
    for reader in readers {
        let (status, _, body) = reader.join().expect("reader thread");
        assert_eq!(status, 206);
        assert!(body == data[start..start + 1000], "a concurrent reader got wrong bytes");
    }
    assert_eq!(
        metric(&worker.address, "hoard_worker_ufs_reads_total"),
        2.0,
        "one UFS read per page"
    );
    assert_eq!(metric(&worker.address, "hoard_worker_page_misses_total"), 2.0);
}

#[test]
fn bad_configuration_is_an_error_naming_key_and_value() {
    let conf = tempfile::tempdir().expect("conf dir");
    std::fs::write(
        conf.path().join("hoard-site.properties"),
        "hoard.worker.page.store.page.size=lots\nhoard.wroker.rpc.port=1\n",
    )
    .expect("write conf");
    let output = hoard_with_conf(conf.path(), &["info", "nodes"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("hoard.worker.page.store.page.size") && stderr.contains("lots"),
        "{stderr}"
    );

    // An unknown key alone is a warning that names it; the command still runs.
    std::fs::write(conf.path().join("hoard-site.properties"), "hoard.wroker.rpc.port=1\n").expect("write conf");
    let output = hoard_with_conf(conf.path(), &["info", "nodes", "--format", "json"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("hoard.wroker.rpc.port"),
        "{}",
        describe(&output)
    );
}

/// Reads `count` HTTP/1.1 responses (with `Content-Length` bodies) from one connection.
fn read_responses(stream: &mut std::net::TcpStream, count: usize) -> Vec<HttpAnswer> {
    use std::io::{BufRead, Read};
    let mut reader = std::io::BufReader::new(stream);
    let mut answers = Vec::new();
    for _ in 0..count {
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let length: usize = header(&headers, "content-length")
            .expect("content-length")
            .parse()
            .expect("length");
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).expect("body");
        answers.push((status, headers, body));
    }
    answers
}

#[test]
fn direct_file_reads_pipeline_send_from_the_memory_tier_and_hand_over_to_the_router() {
    use std::io::{Read, Write};
    let data = content(9, 3 * MIB + 11);
    let ufs = ufs_with(&[("/dir/f.bin", data.clone())]);
    let cluster = Cluster::start(1, ufs.path(), &[]);
    let worker = cluster.processes()[0].clone();
    let address = &worker.address;
    let get = |range: &str| format!("GET /files/dir/f.bin HTTP/1.1\r\nHost: x\r\nRange: bytes={range}\r\n\r\n");

    // Cold, then read whole twice more so each page earns its memory tier copy.
    for _ in 0..3 {
        assert!(cluster.hoard(&["fs", "cat", "/dir/f.bin"]).stdout == data);
    }
    let tier_hits_before = metric(address, "hoard_worker_page_memory_hits_total");
    assert!(metric(address, "hoard_worker_page_memory_used_bytes") >= (3 * MIB) as f64);

    // One connection: pipelined file reads (the direct path, from the tier's sealed files:
    // one page, across pages, the short last page, whole file), then a route the direct path
    // does not take, then file reads again, now answered by the router.
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let ranges: [(usize, usize); 4] = [
        (5, 99),
        (MIB - 10, 2 * MIB + 9),
        (3 * MIB, 3 * MIB + 10),
        (0, data.len() - 1),
    ];
    let mut requests = String::new();
    for (start, end) in ranges {
        requests.push_str(&get(&format!("{start}-{end}")));
    }
    requests.push_str("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    requests.push_str(&get("7-70000"));
    requests.push_str("GET /files/dir/f.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=4000000-\r\n\r\n");
    stream.write_all(requests.as_bytes()).expect("send");
    let answers = read_responses(&mut stream, 7);
    for (answer, (start, end)) in answers.iter().zip(ranges) {
        assert_eq!(answer.0, 206);
        assert_eq!(
            header(&answer.1, "content-range"),
            Some(format!("bytes {start}-{end}/{}", data.len()).as_str())
        );
        assert_eq!(header(&answer.1, "x-hoard-worker-id"), Some(worker.id.as_str()));
        assert!(
            header(&answer.1, "date").is_some_and(|date| date.ends_with(" GMT")),
            "{:?}",
            answer.1
        );
        assert!(answer.2 == data[start..=end], "bytes {start}-{end}");
    }
    assert_eq!(answers[4].0, 200, "health, from the router");
    assert!(String::from_utf8_lossy(&answers[4].2).contains(&worker.id));
    assert_eq!(answers[5].0, 206);
    assert!(answers[5].2 == data[7..=70000]);
    assert_eq!(answers[6].0, 416, "past the end, from the router");
    assert!(
        metric(address, "hoard_worker_page_memory_hits_total") >= tier_hits_before + 7.0,
        "the direct reads came from the memory tier"
    );

    // A failure before the first byte hands the request itself to the router: its 404, then
    // the connection goes on; `Connection: close` ends it after the answer.
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let requests = format!(
        "GET /files/dir/missing HTTP/1.1\r\nHost: x\r\n\r\n{}GET /files/dir/f.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        get("0-0")
    );
    stream.write_all(requests.as_bytes()).expect("send");
    let answers = read_responses(&mut stream, 3);
    assert_eq!(answers[0].0, 404);
    assert!(String::from_utf8_lossy(&answers[0].2).contains("NOT_FOUND"));
    assert_eq!((answers[1].0, &answers[1].2[..]), (206, &data[..1]));
    assert_eq!(answers[2].0, 200);
    assert!(answers[2].2 == data);
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("closed");
    assert!(rest.is_empty(), "closed after the answer to `Connection: close`");

    // A connection on the direct path alone: keep-alive until closed, close after `close`.
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream
        .write_all(
            format!(
                "{}GET /files/dir/f.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\nConnection: close\r\n\r\n",
                get("3-4")
            )
            .as_bytes(),
        )
        .expect("send");
    let answers = read_responses(&mut stream, 2);
    assert_eq!(&answers[0].2[..], &data[3..=4]);
    assert_eq!(&answers[1].2[..], &data[1..=2]);
    assert_eq!(header(&answers[1].1, "connection"), Some("close"));
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("closed");
    assert!(rest.is_empty());

    assert!(
        cluster.hoard(&["fs", "cat", "/dir/f.bin"]).stdout == data,
        "nothing corrupted"
    );
    assert_eq!(metric(address, "hoard_worker_checksum_failures_total"), 0.0);
}
