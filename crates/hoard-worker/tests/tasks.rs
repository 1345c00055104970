//! The job task endpoints (`POST /api/v1/tasks/load|free|check`) against a real local-directory
//! UFS, a real page store and the worker's router (or its served listener).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use hoard_common::api::tasks::{
    CheckTask, FileResult, FreeTask, LoadTask, TaskFile, TaskResponse, CHECK_ROUTE, FREE_ROUTE, LOAD_ROUTE,
    MAX_TASK_FILES,
};
use hoard_common::api::ErrorBody;
use hoard_common::HoardPath;
use hoard_pagestore::{FileId, PageStore, PageStoreConfig};
use hoard_ufs::{LocalUfs, MountTable, UfsOptions};
use hoard_worker::WorkerState;
use tempfile::TempDir;
use tower::ServiceExt;

const PAGE: u64 = 64 * 1024;
/// Every test finishes well within this; a hang fails instead of blocking the suite.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

struct Fixture {
    _ufs_dir: TempDir,
    _store_dir: TempDir,
    ufs_root: PathBuf,
    state: Arc<WorkerState>,
    app: Router,
}

fn fixture_with(capacity: u64, metadata_max_age: Duration, load_readers: usize) -> Fixture {
    let ufs_dir = TempDir::new().unwrap();
    let store_dir = TempDir::new().unwrap();
    let ufs_root = ufs_dir.path().to_path_buf();
    let ufs = LocalUfs::new(&ufs_root, &UfsOptions::default()).unwrap();
    let mounts = MountTable::from_mounts(Arc::new(ufs), Vec::new()).unwrap();
    let store = PageStore::open(PageStoreConfig {
        dirs: vec![store_dir.path().to_path_buf()],
        capacities: vec![capacity],
        page_size: PAGE,
    })
    .unwrap();
    let state = Arc::new(
        WorkerState::new(
            "test-worker".to_string(),
            "127.0.0.1:0".to_string(),
            mounts,
            Arc::new(store),
            metadata_max_age,
        )
        .with_load_readers(load_readers),
    );
    let app = hoard_worker::router(Arc::clone(&state));
    Fixture {
        _ufs_dir: ufs_dir,
        _store_dir: store_dir,
        ufs_root,
        state,
        app,
    }
}

/// A store of 64 MiB; statuses cached for an hour, so only a refresh sees a rewrite.
fn fixture() -> Fixture {
    fixture_with(64 << 20, Duration::from_secs(3600), 2048)
}

/// Deterministic, position-dependent bytes (so a page served at the wrong offset shows).
fn content(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)).wrapping_add(u64::from(seed)) as u8)
        .collect()
}

fn write_file(root: &Path, name: &str, bytes: &[u8]) {
    let path = root.join(name.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn load_task(files: Vec<TaskFile>) -> LoadTask {
    LoadTask {
        job_id: "job-1".to_string(),
        task_id: 1,
        files,
        skip_if_exists: false,
        metadata_only: false,
    }
}

fn whole(path: &str) -> TaskFile {
    TaskFile {
        path: path.to_string(),
        offset: None,
        length: None,
    }
}

impl Fixture {
    async fn post_raw(&self, route: &str, body: Body, content_length: Option<u64>) -> (StatusCode, Vec<u8>) {
        let mut request = Request::post(route).header(header::CONTENT_TYPE, "application/json");
        if let Some(length) = content_length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        let response = self.app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, bytes.to_vec())
    }

    async fn post<T: serde::Serialize>(&self, route: &str, task: &T) -> TaskResponse {
        let body = serde_json::to_vec(task).unwrap();
        let length = body.len() as u64;
        let (status, bytes) = self.post_raw(route, Body::from(body), Some(length)).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn load(&self, task: &LoadTask) -> Vec<FileResult> {
        let response = self.post(LOAD_ROUTE, task).await;
        assert_eq!(response.results.len(), task.files.len());
        response.results
    }

    async fn load_one(&self, file: TaskFile) -> FileResult {
        self.load(&load_task(vec![file])).await.remove(0)
    }

    async fn free(&self, paths: &[&str]) -> Vec<FileResult> {
        let task = FreeTask {
            job_id: "job-1".to_string(),
            task_id: 2,
            paths: paths.iter().map(|p| p.to_string()).collect(),
        };
        let response = self.post(FREE_ROUTE, &task).await;
        assert_eq!(response.results.len(), paths.len());
        response.results
    }

    async fn check(&self, paths: &[&str]) -> Vec<FileResult> {
        let task = CheckTask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        };
        let response = self.post(CHECK_ROUTE, &task).await;
        assert_eq!(response.results.len(), paths.len());
        response.results
    }

    /// GET /files/<path> (whole file): status, body, ETag.
    async fn read(&self, path: &str) -> (StatusCode, Vec<u8>, String) {
        let request = Request::get(format!("/files{path}")).body(Body::empty()).unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let etag = response
            .headers()
            .get(header::ETAG)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, bytes.to_vec(), etag)
    }

    async fn file_id(&self, path: &str) -> FileId {
        self.state.status(&HoardPath::parse(path).unwrap()).await.unwrap().id
    }

    async fn cached_pages(&self, path: &str) -> Vec<u64> {
        let id = self.file_id(path).await;
        self.state.store().cached_pages(id)
    }

    fn ufs_bytes_read(&self) -> u64 {
        self.state.metrics.ufs_bytes_read.get()
    }

    fn used_bytes(&self) -> u64 {
        self.state.store().stats().used_bytes
    }

    fn metrics_text(&self) -> String {
        self.state.metrics.render(&self.state.store().stats(), None)
    }
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_caches_every_page_and_a_second_load_reads_nothing() {
    bounded(async {
        let fx = fixture();
        let len = 5 * PAGE + 1234;
        let data = content(len, 1);
        write_file(&fx.ufs_root, "data/big.bin", &data);

        let first = fx.load_one(whole("/data/big.bin")).await;
        assert!(first.ok, "{first:?}");
        assert_eq!(first.path, "/data/big.bin");
        assert_eq!(first.offset, None);
        assert_eq!(first.file_length, len);
        assert_eq!(first.range_length, len);
        assert_eq!(first.cached_bytes, len);
        assert_eq!(first.ufs_bytes_read, len);
        assert!(!first.skipped);
        assert_eq!(first.error, None);
        assert_eq!(fx.cached_pages("/data/big.bin").await, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(fx.state.cached_bytes(fx.file_id("/data/big.bin").await).await, len);
        assert_eq!(fx.used_bytes(), len);
        assert_eq!(fx.ufs_bytes_read(), len);

        // Idempotent: everything is cached, nothing is read again.
        let second = fx.load_one(whole("/data/big.bin")).await;
        assert!(second.ok, "{second:?}");
        assert_eq!(second.ufs_bytes_read, 0);
        assert_eq!(second.cached_bytes, len);
        assert!(!second.skipped);
        assert_eq!(fx.ufs_bytes_read(), len);

        // The bytes read back are the UFS file's, served from the store.
        let (status, body, _) = fx.read("/data/big.bin").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body == data, "bytes read back differ from the UFS file");
        assert_eq!(fx.ufs_bytes_read(), len);

        assert_eq!(fx.state.metrics.task_files_loaded.get(), 2);
        assert_eq!(fx.state.metrics.task_bytes_loaded.get(), len);
        let text = fx.metrics_text();
        assert!(text.contains("hoard_worker_tasks_total{kind=\"load\"} 2"), "{text}");
        assert!(text.contains("hoard_worker_task_files_loaded_total 2"), "{text}");
        assert!(
            text.contains(&format!("hoard_worker_task_bytes_loaded_total {len}")),
            "{text}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_worker_loads_then_serves_the_same_bytes() {
    bounded(async {
        let fx = fixture();
        let len = 3 * PAGE + 17;
        let data = content(len, 9);
        write_file(&fx.ufs_root, "served.bin", &data);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(hoard_worker::serve(listener, Arc::clone(&fx.state), 16 * 1024, 1));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();

        let response = client
            .post(format!("http://{address}{LOAD_ROUTE}"))
            .json(&load_task(vec![whole("/served.bin")]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let results = response.json::<TaskResponse>().await.unwrap().results;
        assert_eq!(results.len(), 1);
        assert!(results[0].ok, "{:?}", results[0]);
        assert_eq!(results[0].ufs_bytes_read, len);
        assert_eq!(results[0].cached_bytes, len);

        let again = client
            .post(format!("http://{address}{LOAD_ROUTE}"))
            .json(&load_task(vec![whole("/served.bin")]))
            .send()
            .await
            .unwrap()
            .json::<TaskResponse>()
            .await
            .unwrap();
        assert_eq!(again.results[0].ufs_bytes_read, 0);

        let body = client
            .get(format!("http://{address}/files/served.bin"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(body.as_ref() == data.as_slice(), "bytes read back differ");
        assert_eq!(fx.ufs_bytes_read(), len);

        // A body declaring a huge length is refused at once, before any of it is read.
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!(
            "POST {LOAD_ROUTE} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Content-Length: 1000000000000\r\n\r\n{{"
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
            .await
            .unwrap();
        let mut answer = vec![0u8; 12];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut answer)
            .await
            .unwrap();
        assert_eq!(&answer, b"HTTP/1.1 413");
        server.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_task_caches_only_the_pages_of_its_range() {
    bounded(async {
        let fx = fixture();
        let len = 6 * PAGE + 100;
        let data = content(len, 2);
        write_file(&fx.ufs_root, "ranged.bin", &data);

        // Bytes PAGE+10 .. 2*PAGE+10: pages 1 and 2.
        let result = fx
            .load_one(TaskFile {
                path: "/ranged.bin".to_string(),
                offset: Some(PAGE + 10),
                length: Some(PAGE),
            })
            .await;
        assert!(result.ok, "{result:?}");
        assert_eq!(result.offset, Some(PAGE + 10));
        assert_eq!(result.file_length, len);
        assert_eq!(result.range_length, PAGE);
        assert_eq!(result.cached_bytes, PAGE);
        assert_eq!(result.ufs_bytes_read, 2 * PAGE);
        assert_eq!(fx.cached_pages("/ranged.bin").await, vec![1, 2]);

        // The last partition, with a length past the end: clamped, only the last page.
        let tail = fx
            .load_one(TaskFile {
                path: "/ranged.bin".to_string(),
                offset: Some(6 * PAGE),
                length: Some(10 * PAGE),
            })
            .await;
        assert!(tail.ok, "{tail:?}");
        assert_eq!(tail.range_length, 100);
        assert_eq!(tail.cached_bytes, 100);
        assert_eq!(tail.ufs_bytes_read, 100);
        assert_eq!(fx.cached_pages("/ranged.bin").await, vec![1, 2, 6]);

        // A range starting past the end is empty: nothing to do.
        let past = fx
            .load_one(TaskFile {
                path: "/ranged.bin".to_string(),
                offset: Some(len + 5),
                length: Some(PAGE),
            })
            .await;
        assert!(past.ok, "{past:?}");
        assert_eq!((past.range_length, past.cached_bytes, past.ufs_bytes_read), (0, 0, 0));

        // The whole file now reads only the pages still missing.
        let rest = fx.load_one(whole("/ranged.bin")).await;
        assert_eq!(rest.ufs_bytes_read, 4 * PAGE);
        assert_eq!(rest.cached_bytes, len);
        assert_eq!(fx.ufs_bytes_read(), len);
        let (_, body, _) = fx.read("/ranged.bin").await;
        assert!(body == data);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_if_exists_skips_only_ranges_cached_whole() {
    bounded(async {
        let fx = fixture();
        let len = 3 * PAGE + 5;
        write_file(&fx.ufs_root, "cached.bin", &content(len, 3));
        write_file(&fx.ufs_root, "partial.bin", &content(len, 4));
        assert_eq!(fx.load_one(whole("/cached.bin")).await.ufs_bytes_read, len);
        let first_page = TaskFile {
            path: "/partial.bin".to_string(),
            offset: Some(0),
            length: Some(PAGE),
        };
        assert_eq!(fx.load_one(first_page).await.ufs_bytes_read, PAGE);
        let read_before = fx.ufs_bytes_read();

        let mut task = load_task(vec![whole("/cached.bin"), whole("/partial.bin")]);
        task.skip_if_exists = true;
        let results = fx.load(&task).await;
        let cached = &results[0];
        assert!(cached.ok && cached.skipped, "{cached:?}");
        assert_eq!(cached.ufs_bytes_read, 0);
        assert_eq!(cached.cached_bytes, len);
        assert_eq!(cached.range_length, len);
        let partial = &results[1];
        assert!(partial.ok && !partial.skipped, "{partial:?}");
        assert_eq!(partial.ufs_bytes_read, len - PAGE);
        assert_eq!(partial.cached_bytes, len);
        assert_eq!(fx.ufs_bytes_read(), read_before + len - PAGE);
        assert_eq!(fx.state.metrics.task_files_skipped.get(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_files_fail_alone_in_order() {
    bounded(async {
        let fx = fixture();
        write_file(&fx.ufs_root, "a.bin", &content(PAGE + 1, 5));
        write_file(&fx.ufs_root, "b.bin", &content(10, 6));
        std::fs::create_dir_all(fx.ufs_root.join("dir")).unwrap();
        let task = load_task(vec![
            whole("/a.bin"),
            whole("/missing.bin"),
            whole("/../etc/passwd"),
            whole("relative.bin"),
            whole("/dir"),
            whole("/b.bin"),
        ]);
        let results = fx.load(&task).await;
        let paths: Vec<&str> = results.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/a.bin",
                "/missing.bin",
                "/../etc/passwd",
                "relative.bin",
                "/dir",
                "/b.bin"
            ]
        );
        assert!(results[0].ok && results[0].cached_bytes == PAGE + 1, "{:?}", results[0]);
        assert!(results[5].ok && results[5].cached_bytes == 10, "{:?}", results[5]);
        let codes: Vec<Option<&str>> = results.iter().map(|r| r.code.as_deref()).collect();
        assert_eq!(
            codes,
            [
                None,
                Some("NOT_FOUND"),
                Some("INVALID_PATH"),
                Some("INVALID_PATH"),
                Some("IS_A_DIRECTORY"),
                None
            ]
        );
        for failed in &results[1..5] {
            assert!(!failed.ok);
            assert!(failed.error.as_deref().is_some_and(|e| !e.is_empty()), "{failed:?}");
            assert_eq!((failed.cached_bytes, failed.ufs_bytes_read), (0, 0));
        }
        assert_eq!(fx.ufs_bytes_read(), PAGE + 1 + 10);
        assert_eq!(fx.used_bytes(), PAGE + 1 + 10);
        let text = fx.metrics_text();
        assert!(
            text.contains("hoard_worker_task_files_failed_total{kind=\"load\"} 4"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_refresh_makes_the_next_read_serve_the_new_version() {
    bounded(async {
        let fx = fixture();
        let len = 2 * PAGE + 300;
        let old = content(len, 7);
        let new = content(len, 8);
        assert_ne!(old, new);
        write_file(&fx.ufs_root, "changing.bin", &old);
        assert_eq!(fx.load_one(whole("/changing.bin")).await.cached_bytes, len);
        let (_, body, old_etag) = fx.read("/changing.bin").await;
        assert!(body == old);

        // Rewrite in place with the same length and a different modification time.
        let path = fx.ufs_root.join("changing.bin");
        std::fs::write(&path, &new).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
            .unwrap();
        drop(file);

        // The status is cached for an hour: reads still serve the old version, whole.
        let (_, body, etag) = fx.read("/changing.bin").await;
        assert!(body == old, "served a mix or the new version before the refresh");
        assert_eq!(etag, old_etag);

        let read_before = fx.ufs_bytes_read();
        let mut task = load_task(vec![whole("/changing.bin")]);
        task.metadata_only = true;
        let result = fx.load(&task).await.remove(0);
        assert!(result.ok, "{result:?}");
        assert_eq!(result.file_length, len);
        assert_eq!(result.range_length, len);
        assert_eq!(result.ufs_bytes_read, 0);
        // Nothing of the new version is cached yet.
        assert_eq!(result.cached_bytes, 0);
        assert_eq!(fx.ufs_bytes_read(), read_before);
        assert_eq!(fx.state.metrics.task_files_loaded.get(), 1);

        let (status, body, etag) = fx.read("/changing.bin").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body == new, "after the refresh the read is not the new version whole");
        assert_ne!(etag, old_etag);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_deletes_the_current_version_and_is_idempotent() {
    bounded(async {
        let fx = fixture();
        let len = 4 * PAGE + 9;
        write_file(&fx.ufs_root, "f1.bin", &content(len, 10));
        write_file(&fx.ufs_root, "f2.bin", &content(PAGE, 11));
        fx.load(&load_task(vec![whole("/f1.bin"), whole("/f2.bin")])).await;
        assert_eq!(fx.used_bytes(), len + PAGE);

        let freed = fx.free(&["/f1.bin"]).await.remove(0);
        assert!(freed.ok, "{freed:?}");
        assert_eq!(freed.freed_bytes, len);
        assert_eq!(freed.cached_bytes, 0);
        assert_eq!(freed.file_length, len);
        assert_eq!(fx.used_bytes(), PAGE);
        assert!(fx.cached_pages("/f1.bin").await.is_empty());
        assert_eq!(fx.cached_pages("/f2.bin").await, vec![0]);

        // Again: nothing left to free.
        let again = fx.free(&["/f1.bin"]).await.remove(0);
        assert!(
            again.ok && again.freed_bytes == 0 && again.cached_bytes == 0,
            "{again:?}"
        );
        assert_eq!(fx.used_bytes(), PAGE);

        // Gone from the UFS: fine, nothing freed; a bad path fails alone.
        let results = fx.free(&["/missing.bin", "/../x", "/f2.bin"]).await;
        assert!(results[0].ok && results[0].freed_bytes == 0, "{:?}", results[0]);
        assert_eq!(results[1].code.as_deref(), Some("INVALID_PATH"));
        assert!(results[2].ok && results[2].freed_bytes == PAGE, "{:?}", results[2]);
        assert_eq!(fx.used_bytes(), 0);
        assert_eq!(fx.state.store().stats().pages, 0);

        let checked = fx.check(&["/f1.bin", "/f2.bin"]).await;
        assert_eq!((checked[0].cached_bytes, checked[1].cached_bytes), (0, 0));
        assert_eq!(fx.state.metrics.task_bytes_freed.get(), len + PAGE);
        let text = fx.metrics_text();
        assert!(text.contains("hoard_worker_tasks_total{kind=\"free\"} 3"), "{text}");
        assert!(
            text.contains(&format!("hoard_worker_task_bytes_freed_total {}", len + PAGE)),
            "{text}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_cached_bytes_and_reads_no_data() {
    bounded(async {
        let fx = fixture();
        let len = 3 * PAGE + 1;
        write_file(&fx.ufs_root, "c.bin", &content(len, 12));
        write_file(&fx.ufs_root, "d.bin", &content(7, 13));
        fx.load_one(TaskFile {
            path: "/c.bin".to_string(),
            offset: Some(PAGE),
            length: Some(PAGE),
        })
        .await;
        let read_before = fx.ufs_bytes_read();
        let results = fx.check(&["/c.bin", "/d.bin", "/nope.bin", "/../c.bin"]).await;
        assert!(results[0].ok, "{:?}", results[0]);
        assert_eq!(results[0].file_length, len);
        assert_eq!(results[0].cached_bytes, PAGE);
        assert!(results[1].ok && results[1].file_length == 7 && results[1].cached_bytes == 0);
        assert_eq!(results[2].code.as_deref(), Some("NOT_FOUND"));
        assert_eq!(results[3].code.as_deref(), Some("INVALID_PATH"));
        assert_eq!(fx.ufs_bytes_read(), read_before);
        assert_eq!(fx.state.store().stats().pages, 1);

        fx.load_one(whole("/c.bin")).await;
        assert_eq!(fx.check(&["/c.bin"]).await[0].cached_bytes, len);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_loads_and_reads_read_each_page_once() {
    bounded(async {
        // One load reader across the worker: loads still finish (no self-deadlock).
        let fx = fixture_with(64 << 20, Duration::from_secs(3600), 1);
        let len = 8 * PAGE + 3;
        let data = content(len, 14);
        write_file(&fx.ufs_root, "shared.bin", &data);
        // A page read in the first moments after a write is served but not cached (and so
        // read again later): let the file settle first.
        let status = fx
            .state
            .mounts()
            .status(&HoardPath::parse("/shared.bin").unwrap())
            .await
            .unwrap();
        if let Some(wait) = status
            .settled_at()
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
        {
            tokio::time::sleep(wait).await;
        }
        let files: Vec<TaskFile> = (0..20).map(|_| whole("/shared.bin")).collect();
        let (task_a, task_b) = (load_task(files.clone()), load_task(files));
        let (a, b, (_, body, _)) = tokio::join!(fx.load(&task_a), fx.load(&task_b), fx.read("/shared.bin"),);
        assert!(body == data);
        let task_reads: u64 = a.iter().chain(&b).map(|r| r.ufs_bytes_read).sum();
        assert!(a.iter().chain(&b).all(|r| r.ok && r.cached_bytes == len));
        assert!(task_reads <= len, "tasks read {task_reads} bytes of a {len}-byte file");
        assert_eq!(fx.ufs_bytes_read(), len, "a page was read from the UFS twice");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_malformed_tasks_are_refused_and_cache_nothing() {
    bounded(async {
        let fx = fixture();
        write_file(&fx.ufs_root, "x.bin", &content(PAGE, 15));
        let error_of = |bytes: &[u8]| -> ErrorBody { serde_json::from_slice(bytes).unwrap() };

        // Over the body limit, with and without a Content-Length.
        let padding = "a".repeat(hoard_worker::MAX_TASK_BODY_BYTES + 1);
        let big = serde_json::to_vec(&load_task(vec![whole(&format!("/x.bin{padding}"))])).unwrap();
        let big_len = big.len() as u64;
        let (status, bytes) = fx.post_raw(LOAD_ROUTE, Body::from(big.clone()), Some(big_len)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error_of(&bytes).code, "PAYLOAD_TOO_LARGE");
        let chunks = big
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>();
        let streamed = Body::from_stream(futures::stream::iter(chunks));
        let (status, bytes) = fx.post_raw(FREE_ROUTE, streamed, None).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error_of(&bytes).code, "PAYLOAD_TOO_LARGE");

        // Too many files.
        let many: Vec<TaskFile> = (0..=MAX_TASK_FILES).map(|_| whole("/x.bin")).collect();
        let body = serde_json::to_vec(&load_task(many)).unwrap();
        let (status, bytes) = fx.post_raw(LOAD_ROUTE, Body::from(body), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let error = error_of(&bytes);
        assert_eq!(error.code, "BAD_REQUEST");
        assert!(error.error.contains(&MAX_TASK_FILES.to_string()), "{}", error.error);

        // Malformed JSON, wrong field types, a missing field, a non-numeric Content-Length.
        let bad_bodies: [&[u8]; 4] = [
            b"{not json",
            br#"{"jobId":"j","taskId":1,"files":[{"path":"/x.bin","offset":"zero"}]}"#,
            br#"{"jobId":"j","taskId":1}"#,
            br#"{"paths":"/x.bin"}"#,
        ];
        for (route, body) in [LOAD_ROUTE, LOAD_ROUTE, LOAD_ROUTE, CHECK_ROUTE]
            .into_iter()
            .zip(bad_bodies)
        {
            let (status, bytes) = fx.post_raw(route, Body::from(body.to_vec()), None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
            assert_eq!(error_of(&bytes).code, "BAD_REQUEST");
        }
        let request = Request::post(LOAD_ROUTE)
            .header(header::CONTENT_LENGTH, "lots")
            .body(Body::from("{}"))
            .unwrap();
        let response = fx.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);

        assert_eq!(fx.state.store().stats().pages, 0);
        assert_eq!(fx.ufs_bytes_read(), 0);
        assert!(!fx.metrics_text().contains("hoard_worker_tasks_total{"));

        // An empty task is fine.
        assert!(fx.load(&load_task(Vec::new())).await.is_empty());
    })
    .await;
}
