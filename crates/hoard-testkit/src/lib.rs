//! Test support shared by Hoard's crates. `Moto` runs a real moto_server (an S3-compatible
//! server from PyPI, installed by scripts/setup-test-deps.sh) as a child process on a free
//! loopback port, killed on drop.

mod etcd;

pub use etcd::{etcd_binary, Etcd};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`, `RssAnon`, ...); `None` when the
/// process or the field is not there.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

const SETUP_HINT: &str = "run scripts/setup-test-deps.sh (it installs moto into <repo>/.venv), \
                          or point HOARD_MOTO_SERVER at a moto_server executable";

/// `$HOARD_MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server`. Panics (never skips) when
/// neither exists.
pub fn moto_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HOARD_MOTO_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "HOARD_MOTO_SERVER={} does not exist: {SETUP_HINT}",
            path.display()
        );
        return path;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = workspace.join(".venv/bin/moto_server");
    assert!(
        path.is_file(),
        "moto_server not found at {}: {SETUP_HINT}",
        path.display()
    );
    path
}

/// A moto_server child process on a free loopback port, killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Moto {
    pub async fn start() -> Moto {
        let binary = moto_server_binary();
        let mut last_error = String::new();
        // The port is free when we pick it but could be taken before moto binds it: try again.
        for _ in 0..3 {
            match Moto::try_start(&binary).await {
                Ok(moto) => return moto,
                Err(err) => last_error = err,
            }
        }
        panic!("moto_server ({}) did not start: {last_error}", binary.display());
    }

    async fn try_start(binary: &Path) -> Result<Moto, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = dir.path().join("moto.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut moto = Moto {
            child,
            endpoint,
            log,
            _dir: dir,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Err(format!("exited with {status}: {}", moto.log_text()));
            }
            if let Ok(response) = moto.http.get(format!("{}/", moto.endpoint)).send().await {
                if response.status().is_success() {
                    return Ok(moto);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 60s: {}", moto.log_text()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Public read-write, so the unsigned requests of these helpers (and the anonymous-access
    /// test) may overwrite and read objects.
    pub async fn create_bucket(&self, bucket: &str) {
        let response = self
            .http
            .put(format!("{}/{bucket}", self.endpoint))
            .header("x-amz-acl", "public-read-write")
            .send()
            .await
            .expect("create bucket");
        assert!(
            response.status().is_success(),
            "create bucket {bucket}: {}",
            response.status()
        );
    }

    /// An unsigned PUT (moto accepts it), independent of the code under test.
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) {
        let response = self
            .http
            .put(format!("{}/{bucket}/{key}", self.endpoint))
            .header("x-amz-acl", "public-read")
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .expect("put object");
        assert!(
            response.status().is_success(),
            "put {bucket}/{key}: {}",
            response.status()
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
