//! Mount-table resolution, nested mounts and how mount points show in listings.

mod common;

use std::fs;
use std::path::Path;

use common::{hoard, names};
use hoard_config::{MountConfig, S3Config, UfsConfig};
use hoard_ufs::{MountTable, UfsError};

fn mount(name: &str, path: &str, ufs: &str) -> MountConfig {
    MountConfig {
        name: name.to_string(),
        path: path.to_string(),
        ufs: ufs.to_string(),
    }
}

fn config(root: &str, mounts: Vec<MountConfig>) -> UfsConfig {
    UfsConfig {
        root: root.to_string(),
        mounts,
        s3: S3Config::default(),
    }
}

fn s(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// root: /file, /data (a file the mount hides), /dir/x
/// /data -> A: a.txt, nested (a dir the mount hides)
/// /data/nested -> B: b.txt
/// /deep/er/mount -> C: c.txt (no /deep in root)
struct Fixture {
    _dirs: Vec<tempfile::TempDir>,
    table: MountTable,
}

fn fixture() -> Fixture {
    let (root, a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    fs::write(root.path().join("file"), b"root file").unwrap();
    fs::write(root.path().join("data"), b"shadowed").unwrap();
    fs::write(root.path().join("datax"), b"not under /data").unwrap();
    fs::create_dir(root.path().join("dir")).unwrap();
    fs::write(root.path().join("dir/x"), b"x").unwrap();
    fs::write(a.path().join("a.txt"), b"from A").unwrap();
    fs::create_dir(a.path().join("nested")).unwrap();
    fs::write(a.path().join("nested/hidden"), b"hidden by the nested mount").unwrap();
    fs::write(b.path().join("b.txt"), b"from B").unwrap();
    fs::write(c.path().join("c.txt"), b"from C").unwrap();
    let cfg = config(
        &format!("file://{}", s(root.path())),
        vec![
            mount("a", "/data", &s(a.path())),
            mount("b", "/data/nested/", &format!("file://{}", s(b.path()))),
            mount("c", "/deep/er/mount", &s(c.path())),
        ],
    );
    let table = MountTable::from_config_with_env(&cfg, &|_| None).unwrap();
    Fixture {
        _dirs: vec![root, a, b, c],
        table,
    }
}

async fn read(table: &MountTable, path: &str) -> String {
    String::from_utf8(table.read(&hoard(path), 0..1000).await.unwrap().to_vec()).unwrap()
}

async fn list(table: &MountTable, path: &str) -> Vec<String> {
    names(table.list(&hoard(path)).await.unwrap(), |s| {
        format!("{}{}", s.path, if s.is_dir { "/" } else { "" })
    })
    .await
}

#[tokio::test]
async fn the_longest_segment_wise_prefix_wins() {
    let f = fixture();
    let t = &f.table;
    assert_eq!(read(t, "/file").await, "root file");
    assert_eq!(read(t, "/datax").await, "not under /data");
    assert_eq!(read(t, "/data/a.txt").await, "from A");
    assert_eq!(read(t, "/data/nested/b.txt").await, "from B");
    assert_eq!(read(t, "/deep/er/mount/c.txt").await, "from C");
    assert!(matches!(
        t.read(&hoard("/data/nested/hidden"), 0..10).await,
        Err(UfsError::NotFound(_))
    ));

    let path = hoard("/data/nested/b.txt");
    let (point, _, relative) = t.resolve(&path);
    assert_eq!((point.as_str(), relative), ("/data/nested", "b.txt"));
    let path = hoard("/datax");
    let (point, _, relative) = t.resolve(&path);
    assert_eq!((point.as_str(), relative), ("/", "datax"));
    let points: Vec<_> = t.mount_points().map(|p| p.to_string()).collect();
    assert_eq!(points, vec!["/deep/er/mount", "/data/nested", "/data", "/"]);
}

#[tokio::test]
async fn mount_points_show_in_listings_as_directories() {
    let f = fixture();
    let t = &f.table;
    // `/data` is the mount (a directory), not the root UFS's file of that name.
    assert_eq!(list(t, "/").await, vec!["/data/", "/datax", "/deep/", "/dir/", "/file"]);
    assert_eq!(list(t, "/data").await, vec!["/data/a.txt", "/data/nested/"]);
    assert_eq!(list(t, "/data/nested").await, vec!["/data/nested/b.txt"]);
    // Ancestors of a mount point exist even when no UFS has them.
    assert_eq!(list(t, "/deep").await, vec!["/deep/er/"]);
    assert_eq!(list(t, "/deep/er").await, vec!["/deep/er/mount/"]);
    assert_eq!(list(t, "/deep/er/mount").await, vec!["/deep/er/mount/c.txt"]);
}

#[tokio::test]
async fn status_and_errors_at_and_above_mount_points() {
    let f = fixture();
    let t = &f.table;
    for dir in ["/", "/data", "/data/nested", "/deep", "/deep/er", "/deep/er/mount"] {
        let status = t.status(&hoard(dir)).await.unwrap();
        assert!(status.is_dir, "{dir}");
        assert_eq!(status.path, hoard(dir));
        let err = t.read(&hoard(dir), 0..10).await.unwrap_err();
        assert!(matches!(err, UfsError::IsDirectory(_)), "{dir}: {err:?}");
        assert_eq!(err.to_string(), format!("is a directory: {dir}"));
    }
    let err = t.status(&hoard("/data/nested/missing")).await.unwrap_err();
    assert_eq!(err.to_string(), "no such file: /data/nested/missing");
    let err = t.status(&hoard("/deep/other")).await.unwrap_err();
    assert_eq!(err.to_string(), "no such file: /deep/other");
    let err = t.list(&hoard("/data/a.txt")).await.err().unwrap();
    assert_eq!(err.to_string(), "not a directory: /data/a.txt");
}

#[test]
fn bad_mount_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = s(dir.path());
    let bad = [
        config("", vec![]),
        config("relative/dir", vec![]),
        config(&s(&dir.path().join("missing")), vec![]),
        config("hdfs://namenode/x", vec![]),
        config(&root, vec![mount("r", "/", &root)]),
        config(&root, vec![mount("a", "/x", &root), mount("b", "/x/", &root)]),
        config(&root, vec![mount("a", "x", &root)]),
        config(&root, vec![mount("a", "/../x", &root)]),
        config(&root, vec![mount("a", "/x", "s3://")]),
    ];
    for cfg in bad {
        let err = MountTable::from_config_with_env(&cfg, &|_| None).unwrap_err();
        assert!(matches!(err, UfsError::Config(_)), "{cfg:?}: {err:?}");
    }
    let err = MountTable::from_config_with_env(&config(&root, vec![mount("a", "/x", "s3://")]), &|_| None).unwrap_err();
    assert!(err.to_string().contains("hoard.mount.a.ufs"), "{err}");
}

#[test]
fn s3_mounts_need_no_network_to_build() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&s(dir.path()), vec![mount("lake", "/lake", "s3://bucket/prefix")]);
    // No endpoint: AWS with virtual-host style; nothing is sent until the first call.
    let table = MountTable::from_config_with_env(&cfg, &|_| None).unwrap();
    assert_eq!(table.mount_points().count(), 2);
    // Half a key pair from the environment is an error, not a silent anonymous client.
    let env = |name: &str| (name == "AWS_ACCESS_KEY_ID").then(|| "AKIA".to_string());
    assert!(matches!(
        MountTable::from_config_with_env(&cfg, &env),
        Err(UfsError::Config(_))
    ));
}
