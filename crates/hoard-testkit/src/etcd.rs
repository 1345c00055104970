//! A real single-member etcd (the `etcd` binary of Debian's etcd-server, installed by
//! scripts/setup-test-deps.sh) as a child process on free loopback ports, with its data dir in a
//! temp dir owned by the [`Etcd`] value. Tests can kill it (SIGKILL) and start it again on the
//! same ports and data, to exercise what clients do while etcd is down and after it returns.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SETUP_HINT: &str = "run scripts/setup-test-deps.sh, it installs etcd-server \
                          (or point HOARD_ETCD_BINARY at an etcd executable)";

/// How long a start may take before it counts as failed.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// `$HOARD_ETCD_BINARY`, else `etcd` on the `PATH`, else `/usr/bin/etcd`. Panics (never skips)
/// when none exists.
pub fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HOARD_ETCD_BINARY").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "HOARD_ETCD_BINARY={} does not exist: {SETUP_HINT}",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("etcd"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin/etcd")])
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("etcd not found on the PATH nor at /usr/bin/etcd: {SETUP_HINT}"))
}

/// A single-member etcd child process on free loopback ports, killed on drop.
pub struct Etcd {
    child: Option<Child>,
    binary: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Holds the data dir (`<dir>/data`) and the log (`<dir>/etcd.log`).
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Etcd {
    /// Starts etcd and waits until `/health` says it is healthy (it has a leader). Panics if it
    /// does not come up within 20s (after up to 3 tries on fresh ports).
    pub async fn start() -> Etcd {
        let binary = etcd_binary();
        let mut last_error = String::new();
        // The ports are free when we pick them but could be taken before etcd binds them.
        for _ in 0..3 {
            let (client_port, peer_port) = match free_ports() {
                Ok(ports) => ports,
                Err(err) => {
                    last_error = format!("cannot pick free ports: {err}");
                    continue;
                }
            };
            let dir = match tempfile::tempdir() {
                Ok(dir) => dir,
                Err(err) => panic!("cannot create a temp dir for etcd: {err}"),
            };
            let mut etcd = Etcd {
                child: None,
                binary: binary.clone(),
                client_port,
                peer_port,
                dir,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(2))
                    .build()
                    .unwrap_or_default(),
            };
            match etcd.spawn_and_wait().await {
                Ok(()) => return etcd,
                Err(err) => last_error = err,
            }
        }
        panic!("etcd ({}) did not start: {last_error}", binary.display());
    }

    /// `http://127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// What etcd wrote so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the process is running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id while it runs (for SIGSTOP/SIGCONT in outage tests).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then waits for the process to be gone. A no-op when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data dir (after [`Etcd::kill`]) and waits until
    /// it is healthy. Panics if it does not come back within 20s.
    pub async fn start_again(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_DEADLINE;
        let mut last_error;
        loop {
            // The ports were released by the killed process; another process could grab one in
            // between, which shows as an early exit: try a few times until the deadline.
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(err) => last_error = err,
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "etcd ({}) did not start again on ports {}/{}: {last_error}",
            self.binary.display(),
            self.client_port,
            self.peer_port
        );
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.kill();
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let data_dir = self.data_dir();
        let child = Command::new(&self.binary)
            .args(["--name", "hoard-test"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("hoard-test={peer_url}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &format!("hoard-test-{}", self.client_port)])
            // A single member elects itself after one election timeout: keep it short.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}: {SETUP_HINT}", self.binary.display()))?;
        self.child = Some(child);
        self.wait_healthy().await
    }

    /// Polls `GET /health` until it answers `"health":"true"` (etcd serves and has a leader).
    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        let url = format!("{}/health", self.endpoint());
        let mut last_answer;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("etcd exited with {status}; log:\n{}", tail(&self.log_text())));
                }
            }
            match self.http.get(&url).send().await {
                Ok(response) => {
                    let body = response.text().await.unwrap_or_default();
                    if body.replace(' ', "").contains("\"health\":\"true\"") {
                        return Ok(());
                    }
                    last_answer = body;
                }
                Err(err) => last_answer = err.to_string(),
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "not healthy after {READY_DEADLINE:?} (last answer: {last_answer}); log:\n{}",
                    tail(&self.log_text())
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoint", &self.endpoint())
            .field("peer_port", &self.peer_port)
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// Two distinct free loopback ports (both bound at once, then released).
fn free_ports() -> std::io::Result<(u16, u16)> {
    let client = TcpListener::bind("127.0.0.1:0")?;
    let peer = TcpListener::bind("127.0.0.1:0")?;
    Ok((client.local_addr()?.port(), peer.local_addr()?.port()))
}

/// The last lines of a log, enough to see why etcd failed.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
