//! The processes a benchmark compares: a Hoard worker and nginx, each started on a free
//! loopback port and stopped (SIGKILL) when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(address: &str, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited during start-up: {status}");
        }
        if std::net::TcpStream::connect(address).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on {address} within 30s")
}

/// `target/release/hoard`, beside this benchmark's own executable.
pub fn hoard_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let candidate = exe.with_file_name("hoard");
    if !candidate.exists() {
        bail!("{} not found: run `cargo build --release` first", candidate.display());
    }
    Ok(candidate)
}

const SEED: u64 = 0x1234_5678_9abc_def1;

/// xorshift64 words: incompressible enough that no layer can shortcut the bytes.
fn fill_pseudo_random(state: &mut u64, block: &mut [u8]) {
    for word in block.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let bytes = state.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
}

/// `len` pseudo-random bytes.
pub fn pseudo_random(len: usize) -> Vec<u8> {
    let mut block = vec![0u8; len];
    fill_pseudo_random(&mut SEED.clone(), &mut block);
    block
}

/// A file of pseudo-random bytes (rewritten only when its size differs).
pub fn write_data_file(path: &Path, size: u64) -> anyhow::Result<()> {
    if std::fs::metadata(path).is_ok_and(|meta| meta.len() == size) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state = SEED;
    let mut block = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < size {
        fill_pseudo_random(&mut state, &mut block);
        let take = (size - written).min(block.len() as u64) as usize;
        file.write_all(&block[..take])?;
        written += take as u64;
    }
    file.flush()?;
    Ok(())
}

/// Reads the whole file with `chunk`-sized reads (the UFS side of the cold comparison).
pub fn read_file_directly(path: &Path, chunk: u64) -> anyhow::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; chunk as usize];
    let mut total = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(total);
        }
        total += read as u64;
    }
}

/// GETs `url` in one request and counts the body bytes.
pub async fn read_all(url: &str, expected: u64) -> anyhow::Result<u64> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut response = client.get(url).send().await?.error_for_status()?;
    let mut total = 0u64;
    while let Some(chunk) = response.chunk().await? {
        total += chunk.len() as u64;
    }
    if total != expected {
        bail!("{url}: read {total} bytes, expected {expected}");
    }
    Ok(total)
}

pub struct Nginx {
    pub address: String,
    child: Child,
}

impl Nginx {
    pub fn start(dir: &Path, root: &Path) -> anyhow::Result<Nginx> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        let port = free_port()?;
        let address = format!("127.0.0.1:{port}");
        let conf = dir.join("nginx.conf");
        // Tuned the way one would serve static files: sendfile, a worker per core with
        // SO_REUSEPORT so connections spread evenly over them, no logs.
        std::fs::write(
            &conf,
            format!(
                "worker_processes auto;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n  keepalive_requests 1000000;\n\
                 client_body_temp_path {dir}/tmp;\n\
                 server {{ listen {address} reuseport; root {root}; location / {{ }} }}\n}}\n",
                dir = dir.display(),
                root = root.display(),
            ),
        )?;
        let mut child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot run nginx (install it with scripts/setup-test-deps.sh)")?;
        wait_for_port(&address, &mut child, "nginx")?;
        Ok(Nginx { address, child })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker processes before it exits (SIGKILL would leave
        // them running, still bound to the port). SIGKILL only if it does not exit in time.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; it has not been waited for, so the pid
            // cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Worker {
    pub address: String,
    child: Child,
}

impl Worker {
    pub fn start(hoard: &Path, dir: &Path, ufs_root: &Path, file_size: u64) -> anyhow::Result<Worker> {
        let conf = dir.join("conf");
        std::fs::create_dir_all(&conf)?;
        let port = free_port()?;
        let address = format!("127.0.0.1:{port}");
        // Capacity with headroom over the file so the warm runs are all hits.
        let capacity = file_size + (file_size / 4) + (64 << 20);
        std::fs::write(
            conf.join("hoard-site.properties"),
            format!(
                "hoard.work.dir={dir}\nhoard.underfs.root={root}\nhoard.worker.hostname=127.0.0.1\n\
                 hoard.worker.bind.host=127.0.0.1\nhoard.worker.rpc.port={port}\nhoard.worker.page.store.sizes={capacity}\n",
                dir = dir.display(),
                root = ufs_root.display(),
            ),
        )?;
        std::fs::write(conf.join("workers"), format!("{address}\n"))?;
        let log = std::fs::File::create(dir.join("worker.log"))?;
        let mut child = Command::new(hoard)
            .arg("--conf")
            .arg(&conf)
            .arg("worker")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start the hoard worker")?;
        wait_for_port(&address, &mut child, "hoard worker")?;
        Ok(Worker { address, child })
    }

    /// A `/proc/<pid>/status` field of the worker (VmHWM, RssAnon, RssFile...), in KiB.
    pub fn memory_kib(&self, field: &str) -> anyhow::Result<u64> {
        hoard_testkit::proc_status_kib(self.child.id(), field).with_context(|| format!("no {field} in /proc status"))
    }

    pub async fn cached_pages(&self) -> anyhow::Result<u64> {
        let health: hoard_common::api::WorkerHealth = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .get(format!("http://{}/health", self.address))
            .send()
            .await?
            .json()
            .await?;
        Ok(health.cached_pages)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Flushes dirty pages to disk, so a run does not pay for the previous run's writeback.
pub fn settle_disk() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// The sum of metric `name` (every label set) in the Prometheus text served at `url`.
pub(crate) async fn metric_sum(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<f64> {
    let text = http.get(url).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}
