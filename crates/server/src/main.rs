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
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
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

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mxraftd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = args.data_dir {
        config.node.data_dir = dir;
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
        if let Some(addr) = config.metrics.listen {
            let exporter = metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(addr)
                .install();
            if let Err(e) = exporter {
                error!(error = %e, addr = %addr, "cannot serve metrics (metrics.listen)");
                return ExitCode::FAILURE;
            }
            mxraftd::describe_metrics();
            info!(addr = %addr, "metrics serving");
        }
        let server = match Server::start(config).await {
            Ok(s) => s,
            Err(e) => {
                error!(error = format!("{e:#}"), "startup failed");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signal().await;
        info!("shutting down");
        match server.shutdown().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = format!("{e:#}"), "shutdown failed");
                ExitCode::FAILURE
            }
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
