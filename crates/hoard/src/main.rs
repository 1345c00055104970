//! `hoard`: the command line. Argument parsing and printing only; the work is in the library
//! crates (client, worker) and in `local` (processes of a one-machine cluster).

mod coordinator;
mod fs;
mod info;
mod job;
mod local;
mod output;
mod process;
mod replica;
mod startup;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use hoard_config::SiteConfig;

#[derive(Debug, Parser)]
#[command(
    name = "hoard",
    version,
    about = "Hoard: a distributed data cache in front of S3 and shared file systems"
)]
struct Cli {
    /// Configuration directory (holds hoard-site.properties and workers). Defaults to
    /// $HOARD_CONF_DIR, then ./conf.
    #[arg(long, global = true, value_name = "DIR")]
    conf: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read the UFS through Hoard: ls, cat, stat, location, cp.
    #[command(subcommand)]
    Fs(fs::FsCommand),
    /// Cluster information.
    #[command(subcommand)]
    Info(info::InfoCommand),
    /// Load and free jobs through the coordinator: load, free, list, rerun.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Replica rules (how many copies by path prefix): list, set, remove.
    #[command(subcommand)]
    Replica(replica::ReplicaCommand),
    /// Manage cluster processes: remove-worker.
    #[command(subcommand)]
    Process(process::ProcessCommand),
    /// Run a worker in the foreground.
    Worker(worker::WorkerArgs),
    /// Run the coordinator in the foreground; `coordinator leader` prints which one holds the
    /// singleton duties.
    Coordinator(coordinator::CoordinatorArgs),
    /// Run a whole cluster on this machine as background processes.
    #[command(subcommand)]
    Local(local::LocalCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_daemon = matches!(cli.command, Command::Worker(_))
        || matches!(&cli.command, Command::Coordinator(args) if args.is_daemon());
    init_tracing(is_daemon);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("hoard: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("hoard: {}", describe_error(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated like anyhow's `{:#}`, but a cause whose text the
/// line already holds (an error that prints its source in its own message) is not repeated.
fn describe_error(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn init_tracing(is_daemon: bool) {
    let default = if is_daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Fs(command) => fs::run(command, &load_config(cli.conf.as_deref())?).await,
        Command::Info(command) => info::run(command, &load_config(cli.conf.as_deref())?).await,
        Command::Job(command) => job::run(command, &load_config(cli.conf.as_deref())?).await,
        Command::Replica(command) => replica::run(command, &load_config(cli.conf.as_deref())?).await,
        Command::Process(command) => process::run(command, &load_config(cli.conf.as_deref())?).await,
        Command::Worker(args) => worker::run(args, load_config(cli.conf.as_deref())?).await,
        Command::Coordinator(args) => coordinator::run(args, load_config(cli.conf.as_deref())?).await,
        Command::Local(command) => local::run(command).await,
    }
}

/// Reads the conf dir once; unknown keys are logged as warnings, bad values are errors.
pub fn load_config(cli_conf: Option<&std::path::Path>) -> anyhow::Result<SiteConfig> {
    let env_value = std::env::var(hoard_config::CONF_DIR_ENV).ok();
    let conf_dir = hoard_config::resolve_conf_dir(cli_conf, env_value.as_deref());
    let loaded = SiteConfig::load_with(&conf_dir, &environment())
        .with_context(|| format!("cannot load configuration from {}", conf_dir.display()))?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
        if !tracing::enabled!(tracing::Level::WARN) {
            eprintln!("hoard: warning: {warning}");
        }
    }
    Ok(loaded.config)
}

/// What hoard-config's machine-dependent defaults need, read once here: hoard-config never
/// reads the environment itself.
fn environment() -> hoard_config::Environment {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    hoard_config::Environment {
        hostname: machine_name(),
        xdg_data_home: var("XDG_DATA_HOME"),
        home: var("HOME"),
    }
}

/// gethostname(2), when it answers with UTF-8.
fn machine_name() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `buffer.len()` bytes into the buffer we own.
    if unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } != 0 {
        return None;
    }
    let end = buffer.iter().position(|byte| *byte == 0)?;
    std::str::from_utf8(&buffer[..end]).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its source in its own message and returns it as `source` too.
    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "outer: {}", self.0)
        }
    }

    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn every_cause_is_printed_once() {
        let io = || std::io::Error::other("connection refused");
        let repeated = anyhow::Error::new(Repeats(io())).context("cannot list");
        assert_eq!(describe_error(&repeated), "cannot list: outer: connection refused");
        let chained = anyhow::Error::new(io())
            .context("cannot connect")
            .context("cannot list");
        assert_eq!(
            describe_error(&chained),
            "cannot list: cannot connect: connection refused"
        );
    }
}
