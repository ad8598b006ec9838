//! `mxraftd`: runs one mxraft node.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use mxraftd::Server;
use mxraftd::config::{Config, LogFormat};

/// A node of an mxraft backup MX cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Overrides `node.data_dir` from the configuration file.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// This node's id, in place of `node.id` (or `node.id_from_hostname`) in the file.
    #[arg(long, value_name = "ID")]
    node_id: Option<u64>,
    /// Check the configuration and exit.
    #[arg(long, alias = "check-config")]
    check: bool,
    /// Allow the `[testing]` modes, which lose acknowledged mail; only the fault-injection
    /// tests' negative controls use them.
    #[arg(long)]
    unsafe_testing: bool,
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stdout().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// jemalloc rather than glibc's allocator: message bodies are large, short-lived buffers, which
/// glibc hands back to the kernel and faults in again (zeroed) for the next message, and its
/// per-thread arenas keep freed memory long after a burst. jemalloc reuses them and returns
/// what stays unused after a few seconds.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match Config::load_with(&args.config, args.node_id) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mxraftd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = args.data_dir {
        config.node.data_dir = dir;
    }
    if let Err(e) = config.testing.check(args.unsafe_testing) {
        eprintln!("mxraftd: {}: {e}", args.config.display());
        return ExitCode::from(2);
    }
    if args.check {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mxraftd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut options = mxraftd::StartOptions {
            unsafe_testing: args.unsafe_testing,
            ..mxraftd::StartOptions::default()
        };
        if config.metrics.listen.is_some() {
            match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
                Ok(handle) => {
                    mxraftd::describe_metrics();
                    options.metrics = Some(handle);
                }
                Err(e) => {
                    error!(error = %e, "cannot record metrics");
                    return ExitCode::FAILURE;
                }
            }
        }
        let server = match Server::start_with(config, options).await {
            Ok(s) => s,
            Err(e) => {
                error!(error = format!("{e:#}"), "startup failed");
                return ExitCode::FAILURE;
            }
        };
        // A node whose Raft stopped on a fatal error exits non-zero, so its supervisor
        // (systemd, Kubernetes) restarts it; a signal is an orderly stop.
        let failure = tokio::select! {
            _ = wait_for_signal() => None,
            cause = server.failed() => Some(cause),
        };
        match &failure {
            None => info!("shutting down"),
            Some(cause) => error!(cause = %cause, "stopping after a fatal raft error"),
        }
        let stopped = server.shutdown().await;
        if let Err(e) = &stopped {
            error!(error = format!("{e:#}"), "shutdown failed");
        }
        match (failure, stopped) {
            (None, Ok(())) => ExitCode::SUCCESS,
            (Some(_), _) => ExitCode::from(3),
            (None, Err(_)) => ExitCode::FAILURE,
        }
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
