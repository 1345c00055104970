//! A `hoard local` cluster a benchmark starts, stopped (and its restarted processes killed)
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

pub struct LocalCluster {
    hoard: PathBuf,
    home: tempfile::TempDir,
    restarted: Vec<Child>,
}

#[derive(Debug, Clone)]
pub struct WorkerProcess {
    pub pid: u32,
    pub id: String,
    pub address: String,
    pub conf_dir: PathBuf,
}

impl LocalCluster {
    /// `hoard local start --workers 3` with extra arguments and site properties.
    pub fn start(hoard: &Path, extra: &[&str], properties: &[String]) -> anyhow::Result<LocalCluster> {
        let home = tempfile::Builder::new().prefix("hoard-bench").tempdir()?;
        let mut command = Command::new(hoard);
        command
            .args(["local", "start", "--workers", "3", "--home"])
            .arg(home.path())
            .args(extra);
        for property in properties {
            command.args(["--property", property]);
        }
        let output = command.output().context("hoard local start")?;
        if !output.status.success() {
            bail!("hoard local start failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(LocalCluster {
            hoard: hoard.to_path_buf(),
            home,
            restarted: Vec::new(),
        })
    }

    pub fn conf(&self) -> PathBuf {
        self.home.path().join("conf")
    }

    pub fn workers(&self) -> anyhow::Result<Vec<WorkerProcess>> {
        self.processes("worker")
    }

    /// The (first) coordinator's pid and address.
    pub fn coordinator(&self) -> anyhow::Result<WorkerProcess> {
        self.processes("coordinator")?
            .into_iter()
            .next()
            .context("no coordinator")
    }

    pub fn coordinators(&self) -> anyhow::Result<Vec<WorkerProcess>> {
        self.processes("coordinator")
    }

    /// Starts a process again by hand (`hoard --conf <its conf> <role>`); returns its pid.
    pub fn restart_process(&mut self, process: &WorkerProcess, role: &str) -> anyhow::Result<u32> {
        let child = Command::new(&self.hoard)
            .arg("--conf")
            .arg(&process.conf_dir)
            .arg(role)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("restart {role}"))?;
        let pid = child.id();
        self.restarted.push(child);
        Ok(pid)
    }

    fn processes(&self, role: &str) -> anyhow::Result<Vec<WorkerProcess>> {
        let state: serde_json::Value = serde_json::from_slice(&std::fs::read(self.home.path().join("local.json"))?)?;
        Ok(state["processes"]
            .as_array()
            .context("processes")?
            .iter()
            .filter(|p| p["role"] == role)
            .map(|p| WorkerProcess {
                pid: p["pid"].as_u64().unwrap_or_default() as u32,
                id: p["id"].as_str().unwrap_or_default().to_string(),
                address: p["address"].as_str().unwrap_or_default().to_string(),
                conf_dir: PathBuf::from(p["confDir"].as_str().unwrap_or_default()),
            })
            .collect())
    }

    pub fn restart(&mut self, worker: &WorkerProcess) -> anyhow::Result<u32> {
        let child = Command::new(&self.hoard)
            .arg("--conf")
            .arg(&worker.conf_dir)
            .arg("worker")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("restart worker")?;
        let pid = child.id();
        self.restarted.push(child);
        Ok(pid)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.restarted {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new(&self.hoard)
            .args(["local", "stop", "--home"])
            .arg(self.home.path())
            .stdout(Stdio::null())
            .status();
    }
}
