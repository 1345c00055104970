//! `hoard local demo` and the sample dataset `hoard local start` creates without `--ufs`.

// The rest of `hoard local`: starting, stopping, the state file.
use super::*;

/// Deterministic pseudo-random bytes (xorshift64*), so the sample is the same everywhere.
fn sample_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The sample dataset: 8 training shards of 8MiB (plus one odd-sized) and a README.
pub fn create_sample_dataset(dir: &Path) -> anyhow::Result<()> {
    // README.txt is written last: its presence means the dataset is complete.
    let readme_path = dir.join("README.txt");
    if readme_path.exists() {
        return Ok(());
    }
    let train = dir.join("train");
    std::fs::create_dir_all(&train).with_context(|| format!("cannot create {}", train.display()))?;
    for shard in 0..8u64 {
        let path = train.join(format!("part-{shard:05}.bin"));
        std::fs::write(&path, sample_bytes(shard + 1, 8 << 20))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    std::fs::write(train.join("part-00008.bin"), sample_bytes(9, (3 << 20) + 12_345))?;
    let mut readme = Vec::new();
    writeln!(
        readme,
        "Sample dataset created by `hoard local start` (deterministic pseudo-random shards)."
    )?;
    write_atomically(&readme_path, &readme)
}

/// Counts and hashes what a read produces, so the demo can check it against the UFS.
struct HashingSink {
    hasher: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl tokio::io::AsyncWrite for HashingSink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Sums a counter over every worker's `/metrics`.
async fn sum_counter(http: &reqwest::Client, state: &LocalState, name: &str) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for process in state.processes.iter().filter(|process| process.role == "worker") {
        let url = format!("http://{}{}", process.address, hoard_common::api::METRICS_ROUTE);
        let text = http.get(&url).send().await?.text().await?;
        for line in text.lines() {
            if let Some(value) = line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')) {
                total += value.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    Ok(total)
}

pub(super) async fn demo(home: &Path, workers: usize, keep: bool) -> anyhow::Result<()> {
    if home.exists() && std::fs::read_dir(home)?.next().is_some() {
        if !home.join(STATE_FILE).exists() {
            bail!(
                "{} is not empty and not a hoard local home; choose another --home",
                home.display()
            );
        }
        if read_state(home)?.is_some_and(|state| state.processes.iter().any(|p| is_running(p.pid))) {
            bail!("a cluster is running under {}; stop it first", home.display());
        }
        // A previous demo's home: start from an empty cache so the cold pass is cold.
        std::fs::remove_dir_all(home).with_context(|| format!("cannot clear {}", home.display()))?;
    }
    let args = StartArgs {
        workers,
        ufs: None,
        home: home.to_path_buf(),
        properties: Vec::new(),
        timeout_secs: 60,
        etcd: None,
        membership: None,
        coordinators: 1,
        clusters: 1,
    };
    let state = start(&args).await?;
    print_started(&state);
    let result = demo_reads(&state).await;
    if !keep {
        stop(&state.home, DEFAULT_GRACE).await?;
    }
    result
}

async fn demo_reads(state: &LocalState) -> anyhow::Result<()> {
    let config = crate::load_config(Some(&state.client_conf_dir))?;
    let client = hoard_client::HoardClient::connect_once(&config).await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let train = hoard_common::HoardPath::parse("/train")?;
    let mut files = Vec::new();
    let mut listing = client.list(&train).await?;
    while let Some(entry) = futures::StreamExt::next(&mut listing).await {
        let entry = entry?;
        if !entry.is_dir {
            files.push(entry.path);
        }
    }
    files.sort();
    let ufs_root = PathBuf::from(&state.ufs);
    let mut rows = Vec::new();
    // cold: from the UFS; warm: from the workers' page files on disk (written past the OS page
    // cache); hot: from their memory tiers, which the warm pass filled.
    for pass in ["cold", "warm", "hot"] {
        let hits_before = sum_counter(&http, state, "hoard_worker_page_hits_total").await?;
        let misses_before = sum_counter(&http, state, "hoard_worker_page_misses_total").await?;
        let started = Instant::now();
        let mut total = 0u64;
        for file in &files {
            let path = hoard_common::HoardPath::parse(file)?;
            let mut sink = HashingSink {
                hasher: xxhash_rust::xxh3::Xxh3::new(),
                bytes: 0,
            };
            client.read_to(&path, None, &mut sink).await?;
            let expected = std::fs::read(ufs_root.join(file.trim_start_matches('/')))?;
            if sink.hasher.digest() != xxhash_rust::xxh3::xxh3_64(&expected) || sink.bytes != expected.len() as u64 {
                bail!("{file}: bytes read through hoard differ from the ufs");
            }
            total += sink.bytes;
        }
        let seconds = started.elapsed().as_secs_f64();
        let hits = sum_counter(&http, state, "hoard_worker_page_hits_total").await? - hits_before;
        let misses = sum_counter(&http, state, "hoard_worker_page_misses_total").await? - misses_before;
        let ratio = if hits + misses > 0.0 {
            hits / (hits + misses)
        } else {
            0.0
        };
        rows.push(vec![
            pass.to_string(),
            files.len().to_string(),
            human_bytes(total),
            format!("{seconds:.3}"),
            format!("{:.1}", total as f64 / 1e6 / seconds.max(1e-9)),
            format!("{ratio:.2}"),
        ]);
    }
    println!();
    print_table(&["PASS", "FILES", "BYTES", "SECONDS", "MB/S", "PAGE HIT RATIO"], &rows);
    println!("every byte read matched the ufs");
    Ok(())
}
