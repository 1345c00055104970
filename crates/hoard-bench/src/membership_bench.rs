//! Membership on a real etcd: how long a SIGKILLed worker stays in a client's ring, how long a
//! restarted one takes to come back (with the watch, and with the refresh interval alone), and
//! the load membership puts on etcd at rest.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hoard_client::HoardClient;
use hoard_meta::{ChangeStream, CoordinatorRecord, MemberRecord, Membership, MetaError};
use hoard_testkit::Etcd;

use crate::cluster::LocalCluster;

#[derive(Debug, Clone, clap::Args)]
pub struct MembershipArgs {
    /// Kill/restart cycles per mode.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// `hoard.worker.failure.detection.timeout` for the kill/restart cycles.
    #[arg(long, default_value = "3s")]
    failure_timeout: String,
    /// Seconds of rest over which etcd's request rate is measured.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
}

/// Etcd membership with its watch hidden: the client then relies on the refresh interval alone.
#[derive(Debug)]
struct RefreshOnly(Arc<dyn Membership>);

#[async_trait::async_trait]
impl Membership for RefreshOnly {
    async fn members(&self) -> Result<Vec<MemberRecord>, MetaError> {
        self.0.members().await
    }
    async fn coordinators(&self) -> Result<Vec<CoordinatorRecord>, MetaError> {
        self.0.coordinators().await
    }
    async fn watch(&self) -> Result<Option<ChangeStream>, MetaError> {
        Ok(None)
    }
    fn kind(&self) -> &'static str {
        "ETCD (refresh only)"
    }
}

fn kill9(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) on a pid this benchmark started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

async fn wait_ring_size(client: &HoardClient, size: usize, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if client.view(false).await?.ring_size() == size {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("the client's ring did not reach {size} workers within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Cycle {
    excluded: Duration,
    rejoined: Duration,
}

async fn kill_restart_cycles(
    hoard: &Path,
    etcd: &Etcd,
    args: &MembershipArgs,
    watch: bool,
) -> anyhow::Result<Vec<Cycle>> {
    let failure = hoard_config::parse_duration(&args.failure_timeout).map_err(|err| anyhow::anyhow!(err))?;
    // With the watch the refresh never fires during the benchmark; without it, it is as long
    // as the failure timeout (the seed's defaults: both 2min).
    let refresh = if watch {
        "1h".to_string()
    } else {
        args.failure_timeout.clone()
    };
    let properties = vec![
        format!("hoard.worker.failure.detection.timeout={}", args.failure_timeout),
        format!("hoard.user.worker.list.refresh.interval={refresh}"),
    ];
    let mut cluster = LocalCluster::start(hoard, &["--etcd", &etcd.endpoint()], &properties)?;
    let config = hoard_config::SiteConfig::load(&cluster.conf())?.config;
    let client = if watch {
        HoardClient::connect(&config).await?
    } else {
        let store = hoard_meta::etcd::EtcdStore::connect(&config.etcd).await?;
        let membership: Arc<dyn Membership> = Arc::new(hoard_meta::etcd::EtcdMembership::new(Arc::new(store)));
        HoardClient::with_membership(config.user.clone(), Arc::new(RefreshOnly(membership)))?
    };
    wait_ring_size(&client, 3, Duration::from_secs(30)).await?;
    let limit = failure * 4 + Duration::from_secs(10);
    let mut workers = cluster.workers()?;
    let mut cycles = Vec::new();
    for run in 0..args.runs {
        let index = run % workers.len();
        kill9(workers[index].pid);
        let excluded = wait_ring_size(&client, 2, limit).await?;
        let restarted_pid = cluster.restart(&workers[index])?;
        let rejoined = wait_ring_size(&client, 3, limit).await?;
        workers[index].pid = restarted_pid;
        eprintln!(
            "{} run {run}: out of the ring {:.2}s after SIGKILL, back {:.2}s after restart",
            if watch { "watch" } else { "refresh" },
            excluded.as_secs_f64(),
            rejoined.as_secs_f64()
        );
        cycles.push(Cycle { excluded, rejoined });
    }
    Ok(cycles)
}

/// Sum of `grpc_server_msg_received_total` on etcd: every request message, streams included.
pub(crate) async fn etcd_messages(http: &reqwest::Client, etcd: &Etcd) -> anyhow::Result<f64> {
    crate::peers::metric_sum(
        http,
        &format!("{}/metrics", etcd.endpoint()),
        "grpc_server_msg_received_total",
    )
    .await
}

async fn etcd_rate_at_rest(hoard: &Path, failure_timeout: &str, idle: Duration) -> anyhow::Result<f64> {
    let etcd = Etcd::start().await;
    let _cluster = LocalCluster::start(
        hoard,
        &["--etcd", &etcd.endpoint()],
        &[format!("hoard.worker.failure.detection.timeout={failure_timeout}")],
    )?;
    let http = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = etcd_messages(&http, &etcd).await?;
    tokio::time::sleep(idle).await;
    let after = etcd_messages(&http, &etcd).await?;
    Ok((after - before) / idle.as_secs_f64())
}

fn stats(values: &[Duration]) -> (f64, f64) {
    let mut seconds: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    let max = seconds.iter().copied().fold(0.0, f64::max);
    (crate::median(&mut seconds), max)
}

pub async fn run(args: MembershipArgs) -> anyhow::Result<()> {
    let hoard = crate::peers::hoard_binary()?;
    let etcd = Etcd::start().await;
    let watch = kill_restart_cycles(&hoard, &etcd, &args, true).await?;
    let refresh = kill_restart_cycles(&hoard, &etcd, &args, false).await?;
    drop(etcd);
    let idle = Duration::from_secs(args.idle_seconds);
    let default_rate = etcd_rate_at_rest(&hoard, "2min", idle).await?;
    let short_rate = etcd_rate_at_rest(&hoard, &args.failure_timeout, idle).await?;

    println!(
        "failure timeout {}, {} kill/restart cycles per mode, 3 workers, medians (max):\n",
        args.failure_timeout, args.runs
    );
    println!("| client follows by | SIGKILL -> out of the client's ring | restart -> back in the ring |");
    println!("| --- | --- | --- |");
    for (name, cycles) in [("etcd watch", &watch), ("refresh interval alone", &refresh)] {
        let (excluded, excluded_max) = stats(&cycles.iter().map(|c| c.excluded).collect::<Vec<_>>());
        let (rejoined, rejoined_max) = stats(&cycles.iter().map(|c| c.rejoined).collect::<Vec<_>>());
        println!("| {name} | {excluded:.2}s ({excluded_max:.2}s) | {rejoined:.2}s ({rejoined_max:.2}s) |");
    }
    println!(
        "\netcd requests at rest (3 workers + 1 coordinator, {}s window):\n",
        args.idle_seconds
    );
    println!("| failure timeout | etcd messages/s | per worker (coordinator's share included) |");
    println!("| --- | --- | --- |");
    for (timeout, rate) in [("2min", default_rate), (args.failure_timeout.as_str(), short_rate)] {
        println!("| {timeout} | {rate:.2} | {:.2} |", rate / 3.0);
    }
    Ok(())
}
