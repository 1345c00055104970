//! Workers over a real S3-compatible server (moto_server): cold and warm reads through the
//! CLI return the object's bytes, listings and errors come through.

mod common;

use common::*;
use hoard_testkit::Moto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_cache_s3_objects() {
    let moto = Moto::start().await;
    moto.create_bucket("lake").await;
    let object = content(21, (3 << 20) + 4321);
    moto.put("lake", "datasets/train/shard-0.bin", object.clone()).await;
    moto.put("lake", "datasets/train/shard-1.bin", content(22, 1000)).await;
    moto.put("lake", "elsewhere/secret.bin", content(23, 10)).await;

    let properties = [
        format!("hoard.underfs.s3.endpoint={}", moto.endpoint),
        "hoard.underfs.s3.region=us-east-1".to_string(),
        "hoard.underfs.s3.access.key.id=testing".to_string(),
        "hoard.underfs.s3.secret.access.key=testing".to_string(),
    ];
    let cluster = tokio::task::spawn_blocking(move || {
        let properties: Vec<&str> = properties.iter().map(String::as_str).collect();
        Cluster::start_on(2, "s3://lake/datasets", &properties)
    })
    .await
    .expect("start cluster");

    let names = cluster.ls_names("/train");
    assert_eq!(names, ["shard-0.bin", "shard-1.bin"]);

    for _ in 0..2 {
        let cat = cluster.hoard(&["fs", "cat", "/train/shard-0.bin"]);
        assert!(cat.status.success(), "{}", describe(&cat));
        assert!(cat.stdout == object, "bytes through hoard differ from the object");
        cluster.wait_cached("/train/shard-0.bin", object.len() as u64);
    }
    let owner = cluster.primary_of("/train/shard-0.bin");
    assert_eq!(
        metric(&owner.address, "hoard_worker_page_misses_total"),
        4.0,
        "each page fetched once"
    );
    assert_eq!(
        metric(&owner.address, "hoard_worker_page_hits_total"),
        4.0,
        "the warm read is all hits"
    );

    let stat = cluster.hoard(&["fs", "stat", "/train/shard-0.bin", "--format", "json"]);
    let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).expect("stat json");
    assert!(stat["etag"].is_string(), "s3 status carries the etag: {stat}");
    assert_eq!(stat["cachedBytes"].as_u64(), Some(object.len() as u64));

    // The mount cannot be escaped to read objects outside the prefix.
    let escape = cluster.hoard(&["fs", "cat", "/../elsewhere/secret.bin"]);
    assert_eq!(escape.status.code(), Some(1));
    let missing = cluster.hoard(&["fs", "cat", "/train/nope.bin"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no such file: /train/nope.bin"),
        "{}",
        describe(&missing)
    );
}
