//! The S3 backend against a real moto_server (started per test on a free loopback port), and
//! against endpoints that fail, for the retryable errors.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{content, hoard, names, Moto};
use futures::StreamExt;
use hoard_config::{MountConfig, S3Config, UfsConfig};
use hoard_ufs::{MountTable, S3Credentials, S3Settings, S3Ufs, Ufs, UfsError, UfsOptions};

fn settings(moto: &Moto) -> S3Settings {
    S3Settings {
        endpoint: Some(moto.endpoint.clone()),
        region: "us-east-1".to_string(),
        credentials: Some(S3Credentials {
            access_key_id: "testing".to_string(),
            secret_access_key: "testing".to_string(),
            session_token: None,
        }),
    }
}

fn s3(moto: &Moto, bucket: &str, prefix: &str) -> S3Ufs {
    S3Ufs::new(bucket, prefix, &settings(moto), &UfsOptions::default()).unwrap()
}

/// bucket `bkt`: top.bin, dir/a.bin, dir/b.bin, dir/sub/c.bin, marker/ (an empty "folder" object)
async fn populated(moto: &Moto) -> HashMap<&'static str, Vec<u8>> {
    moto.create_bucket("bkt").await;
    let objects = HashMap::from([
        ("top.bin", content(10_000, 1)),
        ("dir/a.bin", content(3, 2)),
        ("dir/b.bin", content(0, 3)),
        ("dir/sub/c.bin", content(5, 4)),
        ("marker/", Vec::new()),
    ]);
    for (key, body) in &objects {
        moto.put("bkt", key, body.clone()).await;
    }
    objects
}

#[tokio::test]
async fn status_has_length_mtime_and_etag() {
    let moto = Moto::start().await;
    let objects = populated(&moto).await;
    let ufs = s3(&moto, "bkt", "");

    let status = ufs.status("top.bin").await.unwrap();
    assert!(!status.is_dir);
    assert_eq!(status.length, objects["top.bin"].len() as u64);
    let etag = status.etag.clone().expect("S3 has etags");
    assert!(!etag.is_empty() && !etag.contains('"'), "{etag}");
    let mtime = status.modification_time_ms.expect("S3 has modification times");
    assert_eq!(mtime % 1000, 0, "whole seconds, as HEAD reports them");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now - mtime).abs() < 600_000, "{mtime} vs {now}");

    // A rewrite with other content changes the etag, hence the version.
    moto.put("bkt", "top.bin", content(10_000, 9)).await;
    let rewritten = ufs.status("top.bin").await.unwrap();
    assert_ne!(rewritten.etag, status.etag);

    assert_eq!(ufs.status("dir/b.bin").await.unwrap().length, 0);
}

#[tokio::test]
async fn prefixes_are_directories() {
    let moto = Moto::start().await;
    populated(&moto).await;
    let ufs = s3(&moto, "bkt", "");

    for dir in ["", "dir", "dir/sub", "marker"] {
        let status = ufs.status(dir).await.unwrap();
        assert!(status.is_dir, "{dir:?}");
        assert_eq!(status.length, 0);
        assert!(
            matches!(ufs.read(dir, 0..10).await, Err(UfsError::IsDirectory(_))),
            "{dir:?}"
        );
    }
    assert!(
        matches!(ufs.status("di").await, Err(UfsError::NotFound(_))),
        "prefixes are segment-wise"
    );
    assert!(matches!(
        ufs.list("top.bin").await.err(),
        Some(UfsError::NotDirectory(_))
    ));
    assert!(matches!(
        ufs.list("dir/a.bin").await.err(),
        Some(UfsError::NotDirectory(_))
    ));
    assert!(names(ufs.list("marker").await.unwrap(), |e| e.name.clone())
        .await
        .is_empty());
}

#[tokio::test]
async fn missing_keys_are_not_found() {
    let moto = Moto::start().await;
    populated(&moto).await;
    let ufs = s3(&moto, "bkt", "");
    assert!(matches!(ufs.status("nope").await, Err(UfsError::NotFound(p)) if p == "nope"));
    assert!(matches!(ufs.read("dir/nope", 0..1).await, Err(UfsError::NotFound(_))));
    assert!(matches!(ufs.list("nope").await.err(), Some(UfsError::NotFound(_))));
    assert!(matches!(ufs.status("top.bin/child").await, Err(UfsError::NotFound(_))));

    // A missing bucket is a configuration problem, not a missing file.
    let missing = s3(&moto, "no-such-bucket", "");
    let err = missing.status("x").await.unwrap_err();
    assert!(matches!(err, UfsError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn ranged_reads() {
    const PAGE: u64 = 4096;
    let moto = Moto::start().await;
    let objects = populated(&moto).await;
    let data = &objects["top.bin"];
    let len = data.len() as u64;
    let ufs = s3(&moto, "bkt", "");
    for range in [
        0..PAGE,
        PAGE..2 * PAGE,
        2 * PAGE..len,
        PAGE - 1..PAGE + 1,
        0..1,
        len - 1..len,
        0..len,
    ] {
        let got = ufs.read("top.bin", range.clone()).await.unwrap();
        assert_eq!(&got[..], &data[range.start as usize..range.end as usize], "{range:?}");
    }
    // Past the end: clamped; at or after the end: nothing; empty: nothing.
    assert_eq!(
        &ufs.read("top.bin", 2 * PAGE..3 * PAGE).await.unwrap()[..],
        &data[2 * PAGE as usize..]
    );
    assert!(ufs.read("top.bin", len..len + 10).await.unwrap().is_empty());
    assert!(ufs.read("top.bin", len + 100..len + 200).await.unwrap().is_empty());
    assert!(ufs.read("top.bin", 5..5).await.unwrap().is_empty());
    assert!(
        ufs.read("dir/b.bin", 0..PAGE).await.unwrap().is_empty(),
        "an empty object"
    );
}

#[tokio::test]
async fn listing_is_one_level_and_matches_status() {
    let moto = Moto::start().await;
    populated(&moto).await;
    let ufs = s3(&moto, "bkt", "");

    let root = names(ufs.list("").await.unwrap(), |e| {
        format!("{}{}", e.name, if e.status.is_dir { "/" } else { "" })
    })
    .await;
    assert_eq!(root, vec!["dir/", "marker/", "top.bin"]);
    let dir = names(ufs.list("dir").await.unwrap(), |e| {
        format!("{}{}", e.name, if e.status.is_dir { "/" } else { "" })
    })
    .await;
    assert_eq!(dir, vec!["a.bin", "b.bin", "sub/"]);

    // A listed file has the status (and so the version) a stat gives.
    let mut listing = ufs.list("dir").await.unwrap();
    while let Some(entry) = listing.next().await {
        let entry = entry.unwrap();
        let path = format!("dir/{}", entry.name);
        let status = ufs.status(&path).await.unwrap();
        if status.is_dir {
            assert!(entry.status.is_dir);
        } else {
            assert_eq!(entry.status, status, "{path}");
        }
    }
}

#[tokio::test]
async fn large_listings_stream_across_pages() {
    const OBJECTS: usize = 2_500; // S3 pages hold 1000 keys
    let moto = Moto::start().await;
    moto.create_bucket("many").await;
    futures::stream::iter(0..OBJECTS)
        .for_each_concurrent(32, |i| {
            let moto = &moto;
            async move { moto.put("many", &format!("d/f{i:05}"), vec![b'x'; i % 7]).await }
        })
        .await;
    let ufs = s3(&moto, "many", "");
    let mut stream = ufs.list("d").await.unwrap();
    let mut seen = vec![false; OBJECTS];
    while let Some(entry) = stream.next().await {
        let entry = entry.unwrap();
        let i: usize = entry.name[1..].parse().unwrap();
        assert!(!std::mem::replace(&mut seen[i], true), "listed twice: {}", entry.name);
        assert_eq!(entry.status.length, (i % 7) as u64);
        assert!(entry.status.modification_time_ms.is_some() && entry.status.etag.is_some());
    }
    assert!(seen.iter().all(|s| *s), "every object listed");
}

#[tokio::test]
async fn a_prefix_is_the_backend_root() {
    let moto = Moto::start().await;
    populated(&moto).await;
    let ufs = s3(&moto, "bkt", "dir");
    assert_eq!(ufs.status("a.bin").await.unwrap().length, 3);
    assert!(ufs.status("sub").await.unwrap().is_dir);
    assert!(matches!(ufs.status("top.bin").await, Err(UfsError::NotFound(_))));
    assert_eq!(
        names(ufs.list("").await.unwrap(), |e| e.name.clone()).await,
        vec!["a.bin", "b.bin", "sub"]
    );
}

#[tokio::test]
async fn a_mount_table_from_config_and_an_env_snapshot() {
    let moto = Moto::start().await;
    let objects = populated(&moto).await;
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("local.txt"), b"local").unwrap();
    let config = UfsConfig {
        root: format!("file://{}", local.path().display()),
        mounts: vec![MountConfig {
            name: "lake".into(),
            path: "/lake".into(),
            ufs: "s3://bkt/dir".into(),
        }],
        s3: S3Config {
            region: Some("us-east-1".into()),
            ..S3Config::default()
        },
    };
    // The endpoint and keys come from the snapshot, never from the process environment.
    let endpoint = moto.endpoint.clone();
    let env = move |name: &str| match name {
        "AWS_ENDPOINT_URL" => Some(endpoint.clone()),
        "AWS_REGION" => Some("eu-north-1".into()), // config wins
        "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("testing".into()),
        _ => None,
    };
    let table = MountTable::from_config_with_env(&config, &env).unwrap();

    assert_eq!(
        names(table.list(&hoard("/")).await.unwrap(), |s| s.path.to_string()).await,
        vec!["/lake", "/local.txt"]
    );
    let listed = names(table.list(&hoard("/lake")).await.unwrap(), |s| s.path.to_string()).await;
    assert_eq!(listed, vec!["/lake/a.bin", "/lake/b.bin", "/lake/sub"]);
    let status = table.status(&hoard("/lake/a.bin")).await.unwrap();
    assert_eq!(status.length, 3);
    assert!(status.version().ends_with(status.etag.as_deref().unwrap()));
    assert_eq!(
        &table.read(&hoard("/lake/a.bin"), 1..3).await.unwrap()[..],
        &objects["dir/a.bin"][1..3]
    );
    assert!(table.status(&hoard("/lake/sub")).await.unwrap().is_dir);

    let err = table.status(&hoard("/lake/missing")).await.unwrap_err();
    assert_eq!(err.to_string(), "no such file: /lake/missing");
    let err = table.read(&hoard("/lake/sub"), 0..1).await.unwrap_err();
    assert_eq!(err.to_string(), "is a directory: /lake/sub");
}

#[tokio::test]
async fn anonymous_requests_when_no_credentials_are_configured() {
    let moto = Moto::start().await;
    populated(&moto).await;
    let anonymous = S3Settings {
        credentials: None,
        ..settings(&moto)
    };
    let ufs = S3Ufs::new("bkt", "", &anonymous, &UfsOptions::default()).unwrap();
    assert_eq!(ufs.status("dir/a.bin").await.unwrap().length, 3);
}

fn failing_options() -> UfsOptions {
    UfsOptions {
        timeout: Duration::from_millis(300),
        max_retries: 1,
        retry_min_delay: Duration::from_millis(10),
        retry_max_delay: Duration::from_millis(20),
    }
}

fn unreachable_settings(endpoint: String) -> S3Settings {
    S3Settings {
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        credentials: None,
    }
}

#[tokio::test]
async fn connection_failures_are_retryable() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ufs = S3Ufs::new(
        "bkt",
        "",
        &unreachable_settings(format!("http://127.0.0.1:{port}")),
        &failing_options(),
    )
    .unwrap();
    let err = ufs.status("x").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let err = ufs.read("x", 0..10).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn timeouts_and_server_errors_are_retryable() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // One server that accepts and never answers, one that answers 503.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let busy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let busy_addr = busy.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = busy.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });

    let started = std::time::Instant::now();
    let ufs = S3Ufs::new(
        "bkt",
        "",
        &unreachable_settings(format!("http://{silent_addr}")),
        &failing_options(),
    )
    .unwrap();
    let err = ufs.status("x").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by timeout x attempts: {:?}",
        started.elapsed()
    );

    let ufs = S3Ufs::new(
        "bkt",
        "",
        &unreachable_settings(format!("http://{busy_addr}")),
        &failing_options(),
    )
    .unwrap();
    for err in [
        ufs.status("x").await.unwrap_err(),
        ufs.read("x", 0..1).await.unwrap_err(),
    ] {
        assert!(err.is_retryable(), "{err:?}");
        assert!(matches!(err, UfsError::Backend { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn unusual_key_names() {
    let moto = Moto::start().await;
    moto.create_bucket("odd").await;
    moto.put("odd", "d/with space ü.bin", b"spaced".to_vec()).await;
    moto.put("odd", "d/a//b", b"unreachable".to_vec()).await;
    let ufs = s3(&moto, "odd", "");
    assert_eq!(&ufs.read("d/with space ü.bin", 0..100).await.unwrap()[..], b"spaced");
    assert_eq!(ufs.status("d/with space ü.bin").await.unwrap().length, 6);
    assert_eq!(
        names(ufs.list("d").await.unwrap(), |e| e.name.clone()).await,
        vec!["a", "with space ü.bin"]
    );
    // `d/a//b` has no Hoard path: `d/a` is a directory with no listable children.
    assert!(ufs.status("d/a").await.unwrap().is_dir);
    assert!(names(ufs.list("d/a").await.unwrap(), |e| e.name.clone())
        .await
        .is_empty());
}

#[tokio::test]
async fn read_version_is_a_conditional_get() {
    let moto = Moto::start().await;
    moto.create_bucket("ver").await;
    moto.put("ver", "obj.bin", content(5000, 1)).await;
    let ufs = s3(&moto, "ver", "");
    let before = ufs.status("obj.bin").await.unwrap();
    assert_eq!(
        ufs.read_version("obj.bin", 100..200, &before).await.unwrap(),
        content(5000, 1)[100..200]
    );
    moto.put("ver", "obj.bin", content(5000, 2)).await;
    let err = ufs.read_version("obj.bin", 100..200, &before).await.unwrap_err();
    assert!(matches!(err, UfsError::Changed(_)), "{err:?}");
    let now = ufs.status("obj.bin").await.unwrap();
    assert_eq!(
        ufs.read_version("obj.bin", 0..5000, &now).await.unwrap(),
        content(5000, 2)
    );
}
