//! `mxraftctl`: the admin CLI of mxraft, over the `mxraft.v1.Admin` gRPC API.
//!
//! Every command prints a readable table by default and JSON with `-o json`. Queue reads are
//! linearizable unless `--local` is given, so any node shows the same queue.

mod access;
mod cert;
mod cluster;
mod destinations;
mod dns;
mod events;
mod output;
mod queue;
mod recipients;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::access::Access;

/// Administer an mxraft cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    /// Admin endpoint of any node: `host:port` (TLS when a CA file is given), `https://host:port`
    /// or `http://host:port`.
    #[arg(
        long,
        global = true,
        env = "MXRAFT_ENDPOINT",
        default_value = "127.0.0.1:7001"
    )]
    endpoint: String,
    /// A file holding a bearer token for the admin API.
    #[arg(long, global = true, env = "MXRAFT_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The cluster CA certificate the admin endpoint's certificate must be signed by.
    #[arg(long, global = true, env = "MXRAFT_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// A client certificate (from `cert create-client`) to authenticate with instead of a token.
    #[arg(
        long,
        global = true,
        env = "MXRAFT_CERT_FILE",
        value_name = "FILE",
        requires = "key"
    )]
    cert: Option<PathBuf>,
    /// The key of --cert.
    #[arg(
        long,
        global = true,
        env = "MXRAFT_KEY_FILE",
        value_name = "FILE",
        requires = "cert"
    )]
    key: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Cluster membership and leadership.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// The replicated queue.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Where queued mail goes, and whether it gets there.
    #[command(subcommand)]
    Destinations(destinations::DestinationsCommand),
    /// The DNS records to publish for the protected domains, and a check of what DNS says.
    #[command(subcommand)]
    Dns(dns::DnsCommand),
    /// What happens in the cluster, as it happens.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// The replicated recipient table of domains in `list` mode.
    #[command(subcommand)]
    Recipients(recipients::RecipientsCommand),
    /// The cluster CA, node and client certificates.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Admin bearer tokens.
    #[command(subcommand)]
    Token(cert::TokenCommand),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let cli = match cli.command {
        Command::Cert(c) => return cert::run_cert(c, &mut out),
        Command::Token(c) => return cert::run_token(c, &mut out),
        _ => cli,
    };
    let access = Access::new(&cli)?;
    let mut client = access.connect(&cli.endpoint)?;
    let output = cli.output;
    match cli.command {
        Command::Cluster(c) => cluster::run(c, &mut client, &access, output, &mut out).await,
        Command::Queue(c) => queue::run(c, &mut client, output, &mut out).await,
        Command::Destinations(c) => destinations::run(c, &mut client, output, &mut out).await,
        Command::Recipients(c) => recipients::run(c, &mut client, output, &mut out).await,
        Command::Dns(c) => dns::run(c, &mut client, &access, output, &mut out).await,
        Command::Events(c) => events::run(c, &mut client, &access, output, &mut out).await,
        // Handled before connecting.
        Command::Cert(_) | Command::Token(_) => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mxraftctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!("mxraftctl: {} ({:?})", status.message(), status.code()),
                None => eprintln!("mxraftctl: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
