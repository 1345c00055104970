//! The local-directory backend, directly and through a mount table.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{content, hoard, names};
use futures::StreamExt;
use hoard_ufs::{LocalUfs, MountTable, RawStatus, Ufs, UfsError, UfsOptions};

fn local(root: &Path) -> LocalUfs {
    LocalUfs::new(root, &UfsOptions::default()).unwrap()
}

fn table(root: &Path) -> MountTable {
    let config = hoard_config::UfsConfig {
        root: root.to_str().unwrap().to_string(),
        mounts: vec![],
        s3: hoard_config::S3Config::default(),
    };
    MountTable::from_config_with_env(&config, &|_| None).unwrap()
}

#[tokio::test]
async fn status_reports_length_mtime_and_a_change_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.bin");
    fs::write(&file, content(12_345, 1)).unwrap();
    let mtime = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123) + Duration::from_micros(456);
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    let meta = fs::metadata(&file).unwrap();
    let ctime_ns = i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
    let token = format!("i{}-c{ctime_ns}-m1700000000123456000", meta.ino());

    let ufs = local(dir.path());
    let status = ufs.status("a.bin").await.unwrap();
    assert_eq!(
        status,
        RawStatus {
            is_dir: false,
            length: 12_345,
            modification_time_ms: Some(1_700_000_000_123),
            etag: Some(token.clone()),
            changed_at: Some(UNIX_EPOCH + Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32)),
        }
    );
    let sub = ufs.status("sub").await.unwrap();
    assert!(sub.is_dir);
    assert_eq!(sub.length, 0);
    assert!(sub.modification_time_ms.is_some());
    assert_eq!((sub.etag, sub.changed_at), (None, None), "directories have no version");
    assert!(ufs.status("").await.unwrap().is_dir, "the root is a directory");

    let mounts = table(dir.path());
    let status = mounts.status(&hoard("/a.bin")).await.unwrap();
    assert_eq!(status.path, hoard("/a.bin"));
    assert_eq!(status.version(), format!("12345-1700000000123-{token}"));
    assert!(mounts.status(&hoard("/")).await.unwrap().is_dir);
}

#[tokio::test]
async fn a_rewrite_changes_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    fs::write(&file, b"one").unwrap();
    let mounts = table(dir.path());
    let before = mounts.status(&hoard("/f")).await.unwrap().version();
    fs::write(&file, b"two").unwrap(); // same length
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_millis(5))
        .unwrap();
    let after = mounts.status(&hoard("/f")).await.unwrap().version();
    assert_ne!(before, after);
}

/// Sets the modification time of `file` to `mtime` (what `touch -r`, `cp -p`, `rsync -a` do).
fn restore_mtime(file: &Path, mtime: SystemTime) {
    fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

#[tokio::test]
async fn a_same_length_rewrite_with_the_mtime_restored_changes_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    fs::write(&file, content(8192, 1)).unwrap();
    let old_mtime = fs::metadata(&file).unwrap().modified().unwrap();
    let ufs = local(dir.path());
    let before = ufs.status("f.bin").await.unwrap();

    fs::write(&file, content(8192, 2)).unwrap();
    restore_mtime(&file, old_mtime);
    assert_eq!(fs::metadata(&file).unwrap().modified().unwrap(), old_mtime);
    let after = ufs.status("f.bin").await.unwrap();
    assert_eq!(
        (after.length, after.modification_time_ms),
        (before.length, before.modification_time_ms),
        "length and mtime are what they were"
    );
    assert!(!after.same_version(&before), "{before:?} vs {after:?}");
    let err = ufs.read_version("f.bin", 0..8192, &before).await.unwrap_err();
    assert!(matches!(err, UfsError::Changed(_)), "{err:?}");
    assert_eq!(
        ufs.read_version("f.bin", 0..8192, &after).await.unwrap(),
        content(8192, 2)
    );
}

#[tokio::test]
async fn the_version_includes_the_ctime_and_the_inode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    fs::write(&file, content(100, 1)).unwrap();
    let ufs = local(dir.path());
    let first = ufs.status("f.bin").await.unwrap();

    // chmod moves only the ctime.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let chmodded = ufs.status("f.bin").await.unwrap();
    assert_eq!(chmodded.modification_time_ms, first.modification_time_ms);
    assert!(!chmodded.same_version(&first), "a new ctime is a new version");
    assert!(chmodded.changed_at >= first.changed_at);

    // The same bytes, renamed over the file with the mtime restored: another inode.
    let mtime = fs::metadata(&file).unwrap().modified().unwrap();
    let replacement = dir.path().join("f.tmp");
    fs::write(&replacement, content(100, 1)).unwrap();
    restore_mtime(&replacement, mtime);
    let old_inode = fs::metadata(&file).unwrap().ino();
    fs::rename(&replacement, &file).unwrap();
    let new_inode = fs::metadata(&file).unwrap().ino();
    assert_ne!(old_inode, new_inode);
    let renamed = ufs.status("f.bin").await.unwrap();
    assert!(!renamed.same_version(&chmodded));
    let token = renamed.etag.clone().unwrap();
    assert!(token.starts_with(&format!("i{new_inode}-")), "{token}");
}

#[tokio::test]
async fn a_file_just_written_is_not_settled() {
    let dir = tempfile::tempdir().unwrap();
    let before_write = SystemTime::now();
    fs::write(dir.path().join("f"), b"x").unwrap();
    let ufs = local(dir.path());
    let status = ufs.status("f").await.unwrap();
    let changed = status.changed_at.expect("local files have a change time");
    assert!(!status.is_settled(before_write), "a read that began before the write");
    assert!(!status.is_settled(changed));
    assert!(status.is_settled(changed + hoard_ufs::RECENT_CHANGE_WINDOW_WHOLE_SECONDS));
    let settled = table(dir.path()).status(&hoard("/f")).await.unwrap().settled_at();
    let settled = settled.expect("a local file settles");
    assert!(settled > changed && settled <= changed + hoard_ufs::RECENT_CHANGE_WINDOW_WHOLE_SECONDS);
}

#[tokio::test]
async fn ranged_reads_at_page_boundaries() {
    const PAGE: u64 = 4096;
    let dir = tempfile::tempdir().unwrap();
    let len = 3 * PAGE + 1000;
    let data = content(len as usize, 7);
    fs::write(dir.path().join("f.bin"), &data).unwrap();
    let ufs = local(dir.path());

    let cases = [
        0..PAGE,
        PAGE..2 * PAGE,
        2 * PAGE..3 * PAGE,
        3 * PAGE..len,
        PAGE - 1..PAGE + 1,
        0..1,
        len - 1..len,
        0..len,
        123..3 * PAGE + 7,
    ];
    for range in cases {
        let got = ufs.read("f.bin", range.clone()).await.unwrap();
        assert_eq!(&got[..], &data[range.start as usize..range.end as usize], "{range:?}");
    }
    // Past the end: clamped; at or after the end: nothing; empty: nothing.
    assert_eq!(
        &ufs.read("f.bin", 3 * PAGE..4 * PAGE).await.unwrap()[..],
        &data[3 * PAGE as usize..]
    );
    assert!(ufs.read("f.bin", len..len + 10).await.unwrap().is_empty());
    assert!(ufs.read("f.bin", len + 100..len + 200).await.unwrap().is_empty());
    assert!(ufs.read("f.bin", 10..10).await.unwrap().is_empty());

    let empty = dir.path().join("empty");
    fs::write(&empty, b"").unwrap();
    assert!(ufs.read("empty", 0..PAGE).await.unwrap().is_empty());
    assert_eq!(ufs.status("empty").await.unwrap().length, 0);

    let mounts = table(dir.path());
    assert_eq!(
        &mounts.read(&hoard("/f.bin"), PAGE..2 * PAGE).await.unwrap()[..],
        &data[PAGE as usize..2 * PAGE as usize]
    );
}

#[tokio::test]
async fn missing_paths_are_not_found_with_the_hoard_path() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("file"), b"x").unwrap();
    let mounts = table(dir.path());

    let err = mounts.status(&hoard("/x")).await.unwrap_err();
    assert!(matches!(err, UfsError::NotFound(_)), "{err:?}");
    assert_eq!(err.to_string(), "no such file: /x");
    assert!(!err.is_retryable());
    let err = mounts.read(&hoard("/no/such/file"), 0..10).await.unwrap_err();
    assert_eq!(err.to_string(), "no such file: /no/such/file");
    let err = mounts.list(&hoard("/nodir")).await.err().unwrap();
    assert_eq!(err.to_string(), "no such file: /nodir");
    // Below a file: nothing there either.
    let err = mounts.status(&hoard("/file/child")).await.unwrap_err();
    assert_eq!(err.to_string(), "no such file: /file/child");
}

#[tokio::test]
async fn directories_and_files_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("d/e")).unwrap();
    fs::write(dir.path().join("d/f"), b"data").unwrap();
    let mounts = table(dir.path());

    let err = mounts.read(&hoard("/d"), 0..10).await.unwrap_err();
    assert!(matches!(err, UfsError::IsDirectory(_)), "{err:?}");
    assert_eq!(err.to_string(), "is a directory: /d");
    let err = mounts.read(&hoard("/"), 0..10).await.unwrap_err();
    assert!(matches!(err, UfsError::IsDirectory(_)), "{err:?}");
    let err = mounts.list(&hoard("/d/f")).await.err().unwrap();
    assert!(matches!(err, UfsError::NotDirectory(_)), "{err:?}");
    assert_eq!(err.to_string(), "not a directory: /d/f");

    assert!(mounts.status(&hoard("/d/e")).await.unwrap().is_dir);
    assert!(!mounts.status(&hoard("/d/f")).await.unwrap().is_dir);
}

#[tokio::test]
async fn listing_is_one_level_of_child_names() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("d/sub/deeper")).unwrap();
    fs::write(dir.path().join("d/a.txt"), b"aaa").unwrap();
    fs::write(dir.path().join("d/sub/inner"), b"i").unwrap();
    fs::write(dir.path().join("d/.hidden"), b"h").unwrap();
    let mounts = table(dir.path());

    let listed: Vec<_> = mounts
        .list(&hoard("/d"))
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    let mut paths: Vec<_> = listed.iter().map(|s| (s.path.as_str().to_string(), s.is_dir)).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            ("/d/.hidden".to_string(), false),
            ("/d/a.txt".to_string(), false),
            ("/d/sub".to_string(), true)
        ]
    );
    // Each entry carries the same status a stat gives (so the same page version).
    for entry in &listed {
        assert_eq!(entry, &mounts.status(&entry.path).await.unwrap(), "{}", entry.path);
    }

    let root = names(mounts.list(&hoard("/")).await.unwrap(), |s| s.path.to_string()).await;
    assert_eq!(root, vec!["/d"]);

    let ufs = local(dir.path());
    let raw = names(ufs.list("d").await.unwrap(), |e| e.name.clone()).await;
    assert_eq!(raw, vec![".hidden", "a.txt", "sub"]);

    fs::create_dir(dir.path().join("empty")).unwrap();
    assert!(names(ufs.list("empty").await.unwrap(), |e| e.name.clone())
        .await
        .is_empty());
}

#[tokio::test]
async fn a_large_directory_streams() {
    const FILES: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..FILES {
        fs::write(big.join(format!("f{i:05}")), vec![b'x'; i % 17]).unwrap();
    }
    let mounts = table(dir.path());

    let mut stream = mounts.list(&hoard("/big")).await.unwrap();
    let mut seen = vec![false; FILES];
    let mut count = 0;
    while let Some(entry) = stream.next().await {
        let entry = entry.unwrap();
        let i: usize = entry.path.file_name()[1..].parse().unwrap();
        assert!(!seen[i], "listed twice: {}", entry.path);
        seen[i] = true;
        assert!(!entry.is_dir);
        assert_eq!(entry.length, (i % 17) as u64);
        assert!(entry.modification_time_ms.is_some());
        count += 1;
    }
    assert_eq!(count, FILES);
}

#[tokio::test]
async fn symlinks_are_followed_only_inside_the_root() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("real")).unwrap();
    fs::write(root.join("real/data"), b"inside").unwrap();
    std::os::unix::fs::symlink("real/data", root.join("link")).unwrap();
    std::os::unix::fs::symlink("real", root.join("dirlink")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), root.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("escape_dir")).unwrap();
    std::os::unix::fs::symlink("../..", root.join("real/up")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    let mounts = table(&root);

    // Inside the root: followed.
    assert_eq!(&mounts.read(&hoard("/link"), 0..100).await.unwrap()[..], b"inside");
    assert_eq!(mounts.status(&hoard("/link")).await.unwrap().length, 6);
    assert_eq!(
        &mounts.read(&hoard("/dirlink/data"), 0..100).await.unwrap()[..],
        b"inside"
    );
    let via_link = names(mounts.list(&hoard("/dirlink")).await.unwrap(), |s| s.path.to_string()).await;
    assert_eq!(via_link, vec!["/dirlink/data"], "`up` leads outside and is left out");

    // Outside the root: refused, and left out of listings.
    for path in ["/escape", "/escape_dir/secret", "/real/up"] {
        let err = mounts.read(&hoard(path), 0..100).await.unwrap_err();
        assert!(matches!(err, UfsError::PermissionDenied(_)), "{path}: {err:?}");
        assert!(
            err.to_string().starts_with(&format!("permission denied: {path}")),
            "{err}"
        );
        let err = mounts.status(&hoard(path)).await.unwrap_err();
        assert!(matches!(err, UfsError::PermissionDenied(_)), "{path}: {err:?}");
    }
    assert!(matches!(
        mounts.list(&hoard("/escape_dir")).await.err().unwrap(),
        UfsError::PermissionDenied(_)
    ));
    // What counts is where a path ends up: out through one link and back in is inside.
    assert_eq!(
        &mounts.read(&hoard("/real/up/root/real/data"), 0..100).await.unwrap()[..],
        b"inside"
    );
    assert!(matches!(
        mounts.status(&hoard("/dangling")).await.unwrap_err(),
        UfsError::NotFound(_)
    ));

    let mut root_listing = Vec::new();
    let mut stream = mounts.list(&hoard("/")).await.unwrap();
    while let Some(entry) = stream.next().await {
        let entry = entry.unwrap();
        root_listing.push((entry.path.to_string(), entry.is_dir, entry.length));
    }
    root_listing.sort();
    assert_eq!(
        root_listing,
        vec![
            ("/dirlink".to_string(), true, 0),
            ("/link".to_string(), false, 6),
            ("/real".to_string(), true, 0)
        ]
    );
}

#[tokio::test]
async fn special_files_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("plain"), b"p").unwrap();
    let socket = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
    let mounts = table(dir.path());
    assert!(matches!(
        mounts.status(&hoard("/sock")).await.unwrap_err(),
        UfsError::NotFound(_)
    ));
    assert!(matches!(
        mounts.read(&hoard("/sock"), 0..1).await.unwrap_err(),
        UfsError::NotFound(_)
    ));
    assert_eq!(
        names(mounts.list(&hoard("/")).await.unwrap(), |s| s.path.to_string()).await,
        vec!["/plain"]
    );
    drop(socket);
}

#[tokio::test]
async fn unreadable_files_are_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("f"), b"x").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read_dir(&locked).is_ok() {
        // Running as root: permission bits do not apply; nothing to test.
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
        return;
    }
    let mounts = table(dir.path());
    let err = mounts.read(&hoard("/locked/f"), 0..1).await.unwrap_err();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(err, UfsError::PermissionDenied(_)), "{err:?}");
}

#[test]
fn the_root_must_be_an_existing_absolute_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("file"), b"x").unwrap();
    let options = UfsOptions::default();
    assert!(matches!(
        LocalUfs::new(&dir.path().join("missing"), &options),
        Err(UfsError::Config(_))
    ));
    assert!(matches!(
        LocalUfs::new(&dir.path().join("file"), &options),
        Err(UfsError::Config(_))
    ));
    assert!(matches!(
        LocalUfs::new(Path::new("relative"), &options),
        Err(UfsError::Config(_))
    ));
    assert!(!dir.path().join("missing").exists(), "a missing root is not created");
}

#[tokio::test]
async fn the_backend_refuses_paths_a_hoard_path_cannot_produce() {
    let dir = tempfile::tempdir().unwrap();
    let ufs: Arc<dyn Ufs> = Arc::new(local(dir.path()));
    for bad in ["../etc/passwd", "/etc/passwd", "a/../../x", "a//b", "./a"] {
        assert!(matches!(ufs.status(bad).await, Err(UfsError::InvalidPath(_))), "{bad}");
        assert!(
            matches!(ufs.read(bad, 0..1).await, Err(UfsError::InvalidPath(_))),
            "{bad}"
        );
        assert!(
            matches!(ufs.list(bad).await.err(), Some(UfsError::InvalidPath(_))),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn read_version_refuses_a_rewritten_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v.bin");
    let old = content(4096, 1);
    fs::write(&file, &old).unwrap();
    let ufs = local(dir.path());
    let before = ufs.status("v.bin").await.unwrap();
    assert_eq!(ufs.read_version("v.bin", 10..20, &before).await.unwrap(), old[10..20]);
    // Same length, new content and modification time: a different version.
    let later = SystemTime::now() + Duration::from_secs(5);
    fs::write(&file, content(4096, 2)).unwrap();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let err = ufs.read_version("v.bin", 10..20, &before).await.unwrap_err();
    assert!(matches!(err, UfsError::Changed(_)), "{err:?}");
    let now = ufs.status("v.bin").await.unwrap();
    assert_eq!(
        ufs.read_version("v.bin", 0..4096, &now).await.unwrap(),
        content(4096, 2)
    );
}
