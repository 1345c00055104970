//! `hoard local start|stop|status|demo`: a whole cluster on this machine, as background
//! processes with their config and logs under `--home`.
//!
//! Layout under HOME: `conf/` (the client conf to pass as `--conf`), `coordinator/conf/` and
//! `coordinator/` (the coordinator's conf and embedded metastore), `worker-N/conf/` and
//! `worker-N/` (each worker's conf, page store and identity), `logs/<name>.log`,
//! `sample-ufs/` (the sample dataset when no `--ufs` is given), `cluster_secret` (mode 0600)
//! and `local.json` (the processes). Files that may hold secrets are written with mode 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::output::{human_bytes, print_table};

mod demo;

use crate::Format;
pub use demo::create_sample_dataset;

const STATE_FILE: &str = "local.json";
/// The cluster secret every process of a local cluster shares (under HOME).
const SECRET_FILE: &str = "cluster_secret";
const SAMPLE_DIR: &str = "sample-ufs";

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start the coordinator and workers in the background; returns once every one answers.
    Start(StartArgs),
    /// Stop the processes started by `start` (by their recorded pids): SIGTERM, then SIGKILL
    /// for any still running after the grace period. Exits non-zero if one survives even that.
    Stop {
        #[arg(long)]
        home: PathBuf,
        /// How long a process may take to stop cleanly after SIGTERM before it is killed.
        #[arg(long, default_value = "10s", value_parser = parse_grace)]
        grace: Duration,
    },
    /// Every process: role, id, pid, address, conf dir, log file, and whether it answers.
    Status {
        #[arg(long)]
        home: PathBuf,
        #[arg(long, value_enum, ignore_case = true, default_value_t)]
        format: Format,
    },
    /// Start a cluster on the sample dataset, read it cold, warm and hot, print the figures, stop.
    Demo {
        #[arg(long, default_value = "/tmp/hoard-demo")]
        home: PathBuf,
        #[arg(long, default_value_t = 3)]
        workers: usize,
        /// Leave the cluster running afterwards.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Number of workers.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// The UFS root: a local directory, or a URI such as `s3://bucket/prefix` (S3 settings from
    /// `--property hoard.underfs.s3.*=...` or the AWS environment variables). Without it a small
    /// sample dataset is created.
    #[arg(long)]
    pub ufs: Option<String>,
    /// Where config, logs, page stores and the process list go.
    #[arg(long)]
    pub home: PathBuf,
    /// A site property for every process, as KEY=VALUE (repeatable).
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// How long to wait for every process to answer.
    #[arg(long, default_value = "60")]
    pub timeout_secs: u64,
    /// Run membership on this etcd (comma-separated endpoints) instead of the coordinator's
    /// embedded store: sets `hoard.worker.membership.manager.type=ETCD`.
    #[arg(long, value_name = "ENDPOINTS")]
    pub etcd: Option<String>,
    /// Membership type; defaults to COORDINATOR, or ETCD with --etcd. STATIC writes every
    /// worker into conf/workers (the coordinator still starts).
    #[arg(long, value_enum)]
    pub membership: Option<LocalMembership>,
    /// Coordinators to start (more than one needs --etcd: they share the job queue there).
    #[arg(long, default_value_t = 1)]
    pub coordinators: usize,
    /// Split the workers into this many clusters (zones `az-1`, `az-2`, ...; worker i in zone
    /// i mod K + 1), served by the same coordinators; the client configuration is in `az-1`.
    #[arg(long, default_value_t = 1)]
    pub clusters: usize,
}

/// The cluster (zone) name of worker `index` of a local cluster split into `clusters`.
fn zone_of(index: usize, clusters: usize) -> String {
    format!("az-{}", index % clusters.max(1) + 1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum LocalMembership {
    Static,
    Coordinator,
    Etcd,
}

impl LocalMembership {
    fn property(self) -> &'static str {
        match self {
            LocalMembership::Static => "STATIC",
            LocalMembership::Coordinator => "COORDINATOR",
            LocalMembership::Etcd => "ETCD",
        }
    }
}

/// `local.json`: what `start` launched, so `stop` and `status` (and operators) can find it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalState {
    pub home: PathBuf,
    pub client_conf_dir: PathBuf,
    pub ufs: String,
    pub processes: Vec<LocalProcess>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalProcess {
    pub role: String,
    pub name: String,
    pub id: Option<String>,
    pub pid: u32,
    pub address: String,
    pub conf_dir: PathBuf,
    pub log_file: PathBuf,
}

pub async fn run(command: LocalCommand) -> anyhow::Result<()> {
    match command {
        LocalCommand::Start(args) => {
            let state = start(&args).await?;
            print_started(&state);
            Ok(())
        }
        LocalCommand::Stop { home, grace } => stop(&home, grace).await,
        LocalCommand::Status { home, format } => status(&home, format).await,
        LocalCommand::Demo { home, workers, keep } => demo::demo(&home, workers, keep).await,
    }
}

fn read_state(home: &Path) -> anyhow::Result<Option<LocalState>> {
    let path = home.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).with_context(|| format!("cannot parse {}", path.display()))?,
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_state(state: &LocalState) -> anyhow::Result<()> {
    let path = state.home.join(STATE_FILE);
    write_atomically(&path, &serde_json::to_vec_pretty(state)?)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, bytes).with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// True when `pid` is alive and still a hoard process (not a recycled pid).
fn is_running(pid: u32) -> bool {
    let Ok(raw_pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    if unsafe { libc::kill(raw_pid, 0) } != 0 {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => String::from_utf8_lossy(&cmdline).contains("hoard"),
        Err(_) => false,
    }
}

fn parse_grace(value: &str) -> Result<Duration, String> {
    let grace = hoard_config::parse_duration(value)?;
    if grace > MAX_GRACE {
        return Err(format!("at most {}", hoard_config::format_duration(MAX_GRACE)));
    }
    Ok(grace)
}

/// `stop`'s default grace period.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Longest `--grace`: a stop that waits longer is not stopping.
const MAX_GRACE: Duration = Duration::from_secs(3600);
/// How long a SIGKILLed process may take to disappear (the kernel frees its memory first).
const KILL_WAIT: Duration = Duration::from_secs(5);

fn parse_properties(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut properties = BTreeMap::new();
    for entry in raw {
        let (key, value) = entry
            .split_once('=')
            .with_context(|| format!("--property {entry:?} is not KEY=VALUE"))?;
        if key.trim().is_empty() {
            bail!("--property {entry:?} has an empty key");
        }
        properties.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(properties)
}

fn properties_text(properties: &BTreeMap<String, String>) -> String {
    let mut text = String::from("# written by `hoard local start`\n");
    for (key, value) in properties {
        // Java properties escapes: backslashes and line breaks in values.
        let escaped = value.replace('\\', "\\\\").replace('\n', "\\n");
        text.push_str(&format!("{key}={escaped}\n"));
    }
    text
}

/// Starts the cluster and returns its recorded state once every process answers.
pub async fn start(args: &StartArgs) -> anyhow::Result<LocalState> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    if args.clusters == 0 || args.clusters > args.workers {
        bail!(
            "--clusters must be between 1 and the number of workers ({}), not {}",
            args.workers,
            args.clusters
        );
    }
    std::fs::create_dir_all(&args.home).with_context(|| format!("cannot create {}", args.home.display()))?;
    let home = std::fs::canonicalize(&args.home).with_context(|| format!("cannot resolve {}", args.home.display()))?;
    let previous = read_state(&home)?;
    if let Some(previous) = &previous {
        let running: Vec<String> = previous
            .processes
            .iter()
            .filter(|p| is_running(p.pid))
            .map(|p| p.pid.to_string())
            .collect();
        if !running.is_empty() {
            bail!(
                "a cluster is already running under {} (pids {}); stop it with `hoard local stop --home {}`",
                home.display(),
                running.join(", "),
                home.display()
            );
        }
    }
    let ufs = match &args.ufs {
        Some(uri) if uri.contains("://") => uri.clone(),
        Some(dir) => {
            let dir = std::fs::canonicalize(dir).with_context(|| format!("--ufs {dir} does not exist"))?;
            if !dir.is_dir() {
                bail!("--ufs {} is not a directory", dir.display());
            }
            dir.display().to_string()
        }
        None => {
            let dir = home.join(SAMPLE_DIR);
            create_sample_dataset(&dir)?;
            dir.display().to_string()
        }
    };
    let user_properties = parse_properties(&args.properties)?;
    let logs = home.join("logs");
    std::fs::create_dir_all(&logs)?;

    let membership = match (args.membership, &args.etcd) {
        (Some(LocalMembership::Etcd) | None, Some(_)) => LocalMembership::Etcd,
        (Some(LocalMembership::Etcd), None) => bail!("--membership ETCD needs --etcd ENDPOINTS"),
        (Some(other), Some(_)) => bail!("--etcd needs ETCD membership, not {}", other.property()),
        (Some(other), None) => other,
        (None, None) => LocalMembership::Coordinator,
    };

    // Ports: reuse the previous run's when free, so a restarted cluster keeps the same
    // addresses (and, with static membership, the same ring: it hashes host:port).
    let previous_port = |name: &str| -> Option<u16> {
        previous
            .as_ref()
            .and_then(|state| state.processes.iter().find(|p| p.name == name))
            .and_then(|process| process.address.rsplit(':').next()?.parse().ok())
    };
    let bind = |name: &str| -> anyhow::Result<std::net::TcpListener> {
        previous_port(name)
            .and_then(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
            .map_or_else(|| std::net::TcpListener::bind(("127.0.0.1", 0)), Ok)
            .with_context(|| format!("cannot bind a loopback port for {name}"))
    };
    if args.coordinators == 0 {
        bail!("--coordinators must be at least 1");
    }
    if args.coordinators > 1 && membership != LocalMembership::Etcd {
        bail!(
            "several coordinators share their jobs through etcd: --coordinators {} needs --etcd",
            args.coordinators
        );
    }
    let coordinator_names: Vec<String> = (0..args.coordinators)
        .map(|index| {
            if index == 0 {
                COORDINATOR_NAME.to_string()
            } else {
                format!("{COORDINATOR_NAME}-{index}")
            }
        })
        .collect();
    let mut coordinator_listeners = Vec::new();
    for name in &coordinator_names {
        coordinator_listeners.push(bind(name)?);
    }
    let mut coordinator_ports = Vec::new();
    for listener in &coordinator_listeners {
        coordinator_ports.push(listener.local_addr()?.port());
    }
    let coordinator_port = coordinator_ports[0];
    let mut listeners = Vec::with_capacity(args.workers);
    for index in 0..args.workers {
        listeners.push(bind(&format!("worker-{index}"))?);
    }
    let mut addresses = Vec::with_capacity(listeners.len());
    for listener in &listeners {
        addresses.push(format!("127.0.0.1:{}", listener.local_addr()?.port()));
    }
    let workers_file = if membership == LocalMembership::Static {
        format!("# written by `hoard local start`\n{}\n", addresses.join("\n"))
    } else {
        "# written by `hoard local start`: workers register themselves (dynamic membership)\n".to_string()
    };

    let mut shared = BTreeMap::new();
    shared.insert("hoard.underfs.root".to_string(), ufs.clone());
    shared.insert(
        "hoard.worker.membership.manager.type".to_string(),
        membership.property().to_string(),
    );
    // Everything explicit: the machine-dependent defaults (work dir, host names) must not
    // take a local cluster out of its home or off loopback.
    shared.insert("hoard.coordinator.hostname".to_string(), "127.0.0.1".to_string());
    shared.insert("hoard.worker.hostname".to_string(), "127.0.0.1".to_string());
    // One secret for every process of this cluster, created below before any starts.
    shared.insert(
        hoard_config::keys::SECURITY_CLUSTER_SECRET_FILE.to_string(),
        home.join(SECRET_FILE).display().to_string(),
    );
    shared.insert("hoard.coordinator.web.port".to_string(), coordinator_port.to_string());
    if let Some(endpoints) = &args.etcd {
        shared.insert("hoard.etcd.endpoints".to_string(), endpoints.clone());
    }
    if args.coordinators > 1 {
        // Jobs must be shared: every coordinator claims from the same queue in etcd.
        shared.insert("hoard.coordinator.job.meta.store.type".to_string(), "ETCD".to_string());
        let all: Vec<String> = coordinator_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        shared.insert("hoard.coordinator.addresses".to_string(), all.join(","));
    }
    let client_conf = home.join("conf");
    let mut client_properties = shared.clone();
    client_properties.insert("hoard.work.dir".to_string(), home.display().to_string());
    if args.clusters > 1 {
        client_properties.insert(hoard_config::keys::CLUSTER_NAME.to_string(), zone_of(0, args.clusters));
    }
    client_properties.extend(user_properties.clone());
    let client_config = write_conf(&client_conf, &client_properties, &workers_file)?;
    // Created before the processes start (workers refuse to start without it); a restart
    // under the same home keeps the secret it had.
    hoard_common::secret::ClusterSecret::load_or_create(&client_config.security.cluster_secret_file)?;

    let mut processes = Vec::new();
    let mut children = Vec::new();
    for ((name, listener), port) in coordinator_names
        .iter()
        .zip(&coordinator_listeners)
        .zip(&coordinator_ports)
    {
        let work_dir = home.join(name);
        let conf_dir = work_dir.join("conf");
        let mut properties = shared.clone();
        properties.insert("hoard.work.dir".to_string(), work_dir.display().to_string());
        properties.insert("hoard.coordinator.bind.host".to_string(), "127.0.0.1".to_string());
        properties.insert("hoard.coordinator.web.port".to_string(), port.to_string());
        properties.extend(user_properties.clone());
        write_conf(&conf_dir, &properties, &workers_file)?;
        let log_file = logs.join(format!("{name}.log"));
        let child = match spawn_daemon("coordinator", &conf_dir, &log_file, listener) {
            Ok(child) => child,
            Err(err) => {
                kill_all(&mut children);
                return Err(err);
            }
        };
        processes.push(LocalProcess {
            role: "coordinator".to_string(),
            name: name.clone(),
            id: None,
            pid: child.id(),
            address: format!("127.0.0.1:{port}"),
            conf_dir,
            log_file,
        });
        children.push(child);
    }
    drop(coordinator_listeners);
    // Workers register with the coordinator as they start: it must answer first.
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()?;
    for index in 0..args.coordinators {
        match wait_healthy(&http, &processes[index], &mut children[index], deadline).await {
            Ok(id) => processes[index].id = Some(id),
            Err(err) => {
                kill_all(&mut children);
                return Err(err);
            }
        }
    }

    for (index, listener) in listeners.iter().enumerate() {
        let name = format!("worker-{index}");
        let work_dir = home.join(&name);
        let conf_dir = work_dir.join("conf");
        let mut properties = shared.clone();
        properties.insert("hoard.work.dir".to_string(), work_dir.display().to_string());
        properties.insert("hoard.worker.hostname".to_string(), "127.0.0.1".to_string());
        properties.insert("hoard.worker.bind.host".to_string(), "127.0.0.1".to_string());
        properties.insert(
            "hoard.worker.rpc.port".to_string(),
            addresses[index].rsplit(':').next().unwrap_or("0").to_string(),
        );
        if args.clusters > 1 {
            properties.insert(
                hoard_config::keys::CLUSTER_NAME.to_string(),
                zone_of(index, args.clusters),
            );
        }
        properties.extend(user_properties.clone());
        write_conf(&conf_dir, &properties, &workers_file)?;
        let log_file = logs.join(format!("{name}.log"));
        let child = match spawn_daemon("worker", &conf_dir, &log_file, listener) {
            Ok(child) => child,
            Err(err) => {
                kill_all(&mut children);
                return Err(err);
            }
        };
        processes.push(LocalProcess {
            role: "worker".to_string(),
            name,
            id: None,
            pid: child.id(),
            address: addresses[index].clone(),
            conf_dir,
            log_file,
        });
        children.push(child);
    }
    drop(listeners);
    let mut state = LocalState {
        home: home.clone(),
        client_conf_dir: client_conf,
        ufs,
        processes,
    };
    write_state(&state)?;

    for (process, child) in state
        .processes
        .iter_mut()
        .zip(children.iter_mut())
        .skip(args.coordinators)
    {
        match wait_healthy(&http, process, child, deadline).await {
            Ok(id) => process.id = Some(id),
            Err(err) => {
                kill_all(&mut children);
                return Err(err);
            }
        }
    }
    write_state(&state)?;
    if membership != LocalMembership::Static {
        if let Err(err) = wait_registered(&http, &state, deadline).await {
            kill_all(&mut children);
            return Err(err);
        }
    }
    Ok(state)
}

/// Waits until the coordinator lists every worker ONLINE (workers register in the background).
async fn wait_registered(http: &reqwest::Client, state: &LocalState, deadline: Instant) -> anyhow::Result<()> {
    let coordinator = &state.processes[0];
    let url = format!(
        "http://{}{}",
        coordinator.address,
        hoard_common::api::coordinator::NODES_ROUTE
    );
    let wanted: Vec<&str> = state
        .processes
        .iter()
        .filter(|process| process.role == "worker")
        .filter_map(|process| process.id.as_deref())
        .collect();
    loop {
        if let Ok(response) = http.get(&url).send().await {
            if let Ok(nodes) = response.json::<hoard_common::api::coordinator::NodesResponse>().await {
                let online = |id: &str| {
                    nodes
                        .workers
                        .iter()
                        .any(|worker| worker.worker_id == id && worker.state == "ONLINE")
                };
                if wanted.iter().all(|id| online(id)) {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the workers did not all register with the coordinator in time; see the logs under {}",
                state.home.join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const COORDINATOR_NAME: &str = "coordinator";

fn kill_all(children: &mut [std::process::Child]) {
    for child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Writes a conf dir and returns the configuration its processes will read. The properties
/// file is private (mode 0600): it may hold the admin token or S3 keys.
fn write_conf(
    conf_dir: &Path,
    properties: &BTreeMap<String, String>,
    workers_file: &str,
) -> anyhow::Result<hoard_config::SiteConfig> {
    std::fs::create_dir_all(conf_dir).with_context(|| format!("cannot create {}", conf_dir.display()))?;
    hoard_common::secret::write_private(
        &conf_dir.join(hoard_config::SITE_FILE_NAME),
        properties_text(properties).as_bytes(),
    )?;
    write_atomically(&conf_dir.join(hoard_config::WORKERS_FILE_NAME), workers_file.as_bytes())?;
    // Refuse to start anything on a config the processes would reject.
    let loaded = hoard_config::SiteConfig::load(conf_dir)
        .with_context(|| format!("invalid configuration in {}", conf_dir.display()))?;
    Ok(loaded.config)
}

/// Starts `hoard <role>` in the background on an inherited, already-bound listener.
fn spawn_daemon(
    role: &str,
    conf_dir: &Path,
    log_file: &Path,
    listener: &std::net::TcpListener,
) -> anyhow::Result<std::process::Child> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    const CHILD_FD: i32 = 3;
    let exe = std::env::current_exe().context("cannot find the hoard executable")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .with_context(|| format!("cannot open {}", log_file.display()))?;
    let log_err = log.try_clone()?;
    let listener_fd = listener.as_raw_fd();
    let mut command = std::process::Command::new(exe);
    command
        .arg("--conf")
        .arg(conf_dir)
        .arg(role)
        .arg("--listen-fd")
        .arg(CHILD_FD.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a Ctrl-C in the terminal that ran `start` must not stop it.
        .process_group(0);
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if listener_fd == CHILD_FD {
                if libc::fcntl(CHILD_FD, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(listener_fd, CHILD_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("cannot start a {role} process"))
}

async fn wait_healthy(
    http: &reqwest::Client,
    process: &LocalProcess,
    child: &mut std::process::Child,
    deadline: Instant,
) -> anyhow::Result<String> {
    let url = format!("http://{}{}", process.address, hoard_common::api::HEALTH_ROUTE);
    loop {
        if let Some(exit) = child.try_wait()? {
            bail!(
                "{} exited during start-up ({exit}); last log lines of {}:\n{}",
                process.name,
                process.log_file.display(),
                log_tail(&process.log_file, 20)
            );
        }
        if let Ok(response) = http.get(&url).send().await {
            // A worker says `id`, a coordinator `coordinatorId`.
            if let Ok(health) = response.json::<serde_json::Value>().await {
                let id = health.get("id").or_else(|| health.get("coordinatorId"));
                if let Some(id) = id.and_then(|id| id.as_str()) {
                    return Ok(id.to_string());
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer at {} in time; see {}",
                process.name,
                process.address,
                process.log_file.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn print_started(state: &LocalState) {
    println!("hoard local cluster is ready under {}", state.home.display());
    println!("ufs:  {}", state.ufs);
    for process in &state.processes {
        println!(
            "{}:  http://{}  id {}  pid {}  log {}",
            process.name,
            process.address,
            process.id.as_deref().unwrap_or("-"),
            process.pid,
            process.log_file.display()
        );
    }
    println!("use:  hoard --conf {} fs ls /", state.client_conf_dir.display());
    println!("stop: hoard local stop --home {}", state.home.display());
}

/// Stops every recorded process: workers first (they deregister), coordinators last. Each
/// group gets SIGTERM and `grace` to exit; what is still running then is SIGKILLed and named.
/// An error (non-zero exit) if any process survives even that.
pub async fn stop(home: &Path, grace: Duration) -> anyhow::Result<()> {
    let Some(state) = read_state(home)? else {
        bail!(
            "no hoard local cluster recorded under {} (no {STATE_FILE})",
            home.display()
        );
    };
    let mut stopped = 0;
    let mut killed = Vec::new();
    let mut survivors = Vec::new();
    for role in ["worker", "coordinator"] {
        let group: Vec<&LocalProcess> = state
            .processes
            .iter()
            .rev()
            .filter(|process| process.role == role && is_running(process.pid))
            .collect();
        for process in &group {
            signal(process, libc::SIGTERM);
        }
        let remaining = wait_exited(&group, grace).await;
        for process in &remaining {
            tracing::warn!(pid = process.pid, name = %process.name, "did not stop on SIGTERM, killing");
            signal(process, libc::SIGKILL);
        }
        let alive = wait_exited(&remaining, KILL_WAIT).await;
        stopped += group.len() - remaining.len();
        for process in remaining {
            if alive.iter().any(|other| other.pid == process.pid) {
                survivors.push(process);
            } else {
                killed.push(process);
            }
        }
    }
    for process in &killed {
        println!(
            "killed {} (pid {}) with SIGKILL: it did not stop within {} of SIGTERM",
            process.name,
            process.pid,
            hoard_config::format_duration(grace)
        );
    }
    println!(
        "stopped {} process(es) under {}{}",
        stopped + killed.len(),
        home.display(),
        if killed.is_empty() {
            String::new()
        } else {
            format!(" ({} killed)", killed.len())
        }
    );
    if !survivors.is_empty() {
        let names: Vec<String> = survivors
            .iter()
            .map(|process| format!("{} (pid {})", process.name, process.pid))
            .collect();
        bail!("still running after SIGKILL: {}", names.join(", "));
    }
    Ok(())
}

fn signal(process: &LocalProcess, signal: libc::c_int) {
    let Ok(pid) = i32::try_from(process.pid) else {
        return;
    };
    // SAFETY: plain kill(2) on a pid checked to be a live hoard process.
    unsafe { libc::kill(pid, signal) };
}

/// Waits until none of `processes` runs, or `limit` passes; returns those still running.
async fn wait_exited<'a>(processes: &[&'a LocalProcess], limit: Duration) -> Vec<&'a LocalProcess> {
    let deadline = Instant::now() + limit;
    loop {
        let running: Vec<&LocalProcess> = processes.iter().copied().filter(|p| is_running(p.pid)).collect();
        if running.is_empty() || Instant::now() >= deadline {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ProcessStatus {
    #[serde(flatten)]
    process: LocalProcess,
    running: bool,
    answering: bool,
}

async fn status(home: &Path, format: Format) -> anyhow::Result<()> {
    let Some(state) = read_state(home)? else {
        bail!(
            "no hoard local cluster recorded under {} (no {STATE_FILE})",
            home.display()
        );
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()?;
    let mut statuses = Vec::new();
    for process in &state.processes {
        let url = format!("http://{}{}", process.address, hoard_common::api::HEALTH_ROUTE);
        let answering = matches!(http.get(&url).send().await, Ok(response) if response.status().is_success());
        statuses.push(ProcessStatus {
            process: process.clone(),
            running: is_running(process.pid),
            answering,
        });
    }
    if format == Format::Json {
        let body = serde_json::json!({
            "home": state.home,
            "clientConfDir": state.client_conf_dir,
            "ufs": state.ufs,
            "processes": statuses,
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|status| {
            vec![
                status.process.role.clone(),
                status.process.name.clone(),
                status.process.id.clone().unwrap_or_else(|| "-".into()),
                status.process.pid.to_string(),
                status.process.address.clone(),
                if status.answering {
                    "UP"
                } else if status.running {
                    "NOT ANSWERING"
                } else {
                    "DOWN"
                }
                .to_string(),
                status.process.log_file.display().to_string(),
            ]
        })
        .collect();
    print_table(&["ROLE", "NAME", "ID", "PID", "ADDRESS", "STATE", "LOG"], &rows);
    println!("client conf: {}", state.client_conf_dir.display());
    Ok(())
}
