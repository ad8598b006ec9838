//! `mxraftctl`: the admin CLI of mxraft, over the `mxraft.v1.Admin` gRPC API.
//!
//! Every command prints a readable table by default and JSON with `-o json`. Queue reads are
//! linearizable unless `--local` is given, so any node shows the same queue.

mod cert;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::SecondsFormat;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use mxraft_proto::identity::{Bearer, read_token_file};
use mxraft_proto::tls::{Expect, TlsFiles, TlsSource};

use mxraft_proto::admin::admin_client::AdminClient;
use mxraft_proto::admin::{
    ClusterJoinRequest, ClusterRemoveRequest, ClusterStatusRequest, DestinationsListRequest,
    NodeInfoRequest, QueueFlushRequest, QueueIdRequest, QueueListRequest, QueueShowRequest,
    QueueStatsRequest, QueuedMessage, ReadConsistency, RecipientsChangeRequest,
    RecipientsListRequest, queue_flush_request,
};

/// Administer an mxraft cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
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
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Cluster membership and leadership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The replicated queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Where queued mail goes, and whether it gets there.
    #[command(subcommand)]
    Destinations(DestinationsCommand),
    /// The replicated recipient table of domains in `list` mode.
    #[command(subcommand)]
    Recipients(RecipientsCommand),
    /// The cluster CA, node and client certificates.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Admin bearer tokens.
    #[command(subcommand)]
    Token(cert::TokenCommand),
}

#[derive(Debug, Subcommand)]
enum RecipientsCommand {
    /// Add addresses (user@domain) or whole domains (@domain).
    Add {
        /// The entries.
        #[arg(required = true)]
        entries: Vec<String>,
    },
    /// Remove entries.
    Remove {
        /// The entries.
        #[arg(required = true)]
        entries: Vec<String>,
    },
    /// List the table (or one domain's part of it).
    List {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Read this node's copy without asking the leader.
        #[arg(long)]
        local: bool,
    },
    /// Add the entries of a file: one per line (the first word; `#` starts a comment), so a
    /// Postfix relay_recipients file works as is.
    Import {
        /// The file; `-` reads standard input.
        file: std::path::PathBuf,
        /// Also remove the entries that are not in the file.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DestinationsCommand {
    /// Destinations with their route, state, last probe and error, and queued mail.
    List {
        /// Read this node's copy without asking the leader.
        #[arg(long)]
        local: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Members, their roles and addresses, and the leader.
    Status,
    /// Add a node: give its admin endpoint, or its id and addresses.
    Join(JoinArgs),
    /// Remove a node from the cluster.
    Remove {
        /// The node id.
        id: u64,
    },
}

#[derive(Debug, Args)]
struct JoinArgs {
    /// Admin endpoint of the node to add; its id and addresses are asked from it.
    #[arg(conflicts_with_all = ["id", "cluster_addr"])]
    node_endpoint: Option<String>,
    /// Id of the node to add.
    #[arg(long, requires = "cluster_addr")]
    id: Option<u64>,
    /// Cluster address (host:port) of the node to add.
    #[arg(long)]
    cluster_addr: Option<String>,
    /// SMTP address (host:port) of the node to add.
    #[arg(long, default_value = "")]
    smtp_addr: String,
    /// Admin address (host:port) of the node to add.
    #[arg(long, default_value = "")]
    admin_addr: String,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Every queued message, oldest first.
    List {
        /// Show at most this many messages.
        #[arg(long)]
        limit: Option<u64>,
        /// Read this node's copy without asking the leader (works without a quorum).
        #[arg(long)]
        local: bool,
    },
    /// One message.
    Show {
        /// The queue id.
        id: String,
        /// Also print the message as it will be delivered.
        #[arg(long)]
        body: bool,
        /// Read this node's copy without asking the leader.
        #[arg(long)]
        local: bool,
    },
    /// Number of messages, bytes, and the oldest message.
    Stats {
        /// Read this node's copy without asking the leader.
        #[arg(long)]
        local: bool,
    },
    /// Deliver now: everything, one destination, or one message.
    Flush {
        /// Only mail for this domain.
        #[arg(long, conflicts_with = "id")]
        domain: Option<String>,
        /// Only this message.
        id: Option<String>,
    },
    /// Stop delivering a message until it is released.
    Hold {
        /// The queue id.
        id: String,
    },
    /// Release a held message; it is delivered at once.
    Release {
        /// The queue id.
        id: String,
    },
    /// Remove a message without telling its sender.
    Delete {
        /// The queue id.
        id: String,
    },
    /// Return a message to its sender now, with a DSN.
    Bounce {
        /// The queue id.
        id: String,
    },
}

fn consistency(local: bool) -> i32 {
    if local {
        ReadConsistency::Local as i32
    } else {
        ReadConsistency::Linearizable as i32
    }
}

type Client = AdminClient<InterceptedService<Channel, Bearer>>;

/// How to reach and authenticate to admin endpoints.
struct Access {
    token: Bearer,
    tls: Option<Arc<TlsSource>>,
}

impl Access {
    fn new(cli: &Cli) -> anyhow::Result<Access> {
        let token = match &cli.token_file {
            None => Bearer::default(),
            Some(path) => read_token_file(path)
                .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", path.display()))?
                .as_deref()
                .and_then(Bearer::new)
                .ok_or_else(|| {
                    anyhow::anyhow!("the token file {} holds no usable token", path.display())
                })?,
        };
        let tls = match &cli.ca_file {
            None => None,
            Some(ca) => Some(Arc::new(TlsSource::load(TlsFiles {
                ca_file: ca.clone(),
                cert_file: cli.cert.clone(),
                key_file: cli.key.clone(),
            })?)),
        };
        Ok(Access { token, tls })
    }

    /// A client for `endpoint`.
    fn connect(&self, endpoint: &str) -> anyhow::Result<Client> {
        let (tls, authority) = match endpoint.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            Some((scheme, _)) => anyhow::bail!("endpoint {endpoint:?}: unknown scheme {scheme}"),
            None => (self.tls.is_some(), endpoint),
        };
        let source = match (tls, &self.tls) {
            (true, Some(t)) => Some(t.clone()),
            (true, None) => anyhow::bail!(
                "endpoint {endpoint:?} is TLS: give the cluster CA with --ca-file (or MXRAFT_CA_FILE)"
            ),
            (false, _) => None,
        };
        let url = format!("http://{}", authority.trim_end_matches('/'));
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| anyhow::anyhow!("invalid endpoint {url:?}: {e}"))?
            .connect_timeout(std::time::Duration::from_secs(5));
        let channel = mxraft_proto::tls::channel(endpoint, source, Expect::Host);
        Ok(AdminClient::with_interceptor(channel, self.token.clone())
            .max_decoding_message_size(512 * 1024 * 1024))
    }
}

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn message_json(m: &QueuedMessage) -> Value {
    json!({
        "id": m.id,
        "sender": m.sender,
        "size": m.size,
        "received_at": rfc3339(m.received_at_ms),
        "received_by": m.received_by,
        "claim_node": m.claim_node,
        "held": m.held,
        "recipients": m.recipients.iter().map(|r| json!({
            "address": r.address,
            "state": r.state,
            "reply": r.reply,
            "attempts": r.attempts,
            "next_attempt_at": r.next_attempt_ms.map(rfc3339),
        })).collect::<Vec<_>>(),
    })
}

/// How long ago `ms` was, e.g. `3m12s`.
fn age(ms: u64) -> String {
    let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let secs = now.saturating_sub(ms) / 1000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Prints rows as left-aligned columns.
fn print_table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn action_result(
    out: &mut impl Write,
    output: Output,
    verb: &str,
    id: &str,
    changed: u32,
) -> anyhow::Result<()> {
    if output == Output::Json {
        writeln!(out, "{}", json!({"id": id, verb: changed > 0}))?;
    } else if changed > 0 {
        writeln!(out, "{id}: {verb}")?;
    } else {
        writeln!(
            out,
            "{id}: unchanged (already {verb}, or nothing left to do)"
        )?;
    }
    Ok(())
}

async fn list_recipients(
    client: &mut Client,
    domain: String,
    consistency: i32,
) -> anyhow::Result<Vec<String>> {
    let mut stream = client
        .recipients_list(RecipientsListRequest {
            domain,
            consistency,
        })
        .await?
        .into_inner();
    let mut entries = Vec::new();
    while let Some(e) = stream.message().await? {
        entries.push(e.entry);
    }
    Ok(entries)
}

fn report_count(
    out: &mut impl Write,
    output: Output,
    verb: &str,
    changed: u32,
) -> anyhow::Result<()> {
    if output == Output::Json {
        writeln!(out, "{}", json!({ verb: changed }))?;
    } else {
        writeln!(
            out,
            "{changed} entr{} {verb}",
            if changed == 1 { "y" } else { "ies" }
        )?;
    }
    Ok(())
}

fn sender_text(s: &str) -> String {
    if s.is_empty() {
        "<>".into()
    } else {
        s.to_owned()
    }
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
    match cli.command {
        Command::Cluster(ClusterCommand::Status) => {
            let s = client
                .cluster_status(ClusterStatusRequest {})
                .await?
                .into_inner();
            if cli.output == Output::Json {
                let v = json!({
                    "leader_id": s.leader_id,
                    "node_id": s.node_id,
                    "term": s.term,
                    "state": s.state,
                    "last_log_index": s.last_log_index,
                    "committed_index": s.committed_index,
                    "applied_index": s.applied_index,
                    "members": s.members.iter().map(|m| json!({
                        "id": m.id,
                        "role": m.role,
                        "smtp_addr": m.smtp_addr,
                        "admin_addr": m.admin_addr,
                        "cluster_addr": m.cluster_addr,
                        "matched_index": m.matched_index,
                    })).collect::<Vec<_>>(),
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                let leader = s
                    .leader_id
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "none".into());
                writeln!(
                    out,
                    "leader: {leader}   term: {}   answered by: node {} ({})",
                    s.term, s.node_id, s.state
                )?;
                writeln!(
                    out,
                    "log: last {}   committed {}   applied {}\n",
                    s.last_log_index, s.committed_index, s.applied_index
                )?;
                let mut rows = vec![
                    vec!["NODE", "ROLE", "SMTP", "ADMIN", "CLUSTER", "MATCHED"]
                        .into_iter()
                        .map(String::from)
                        .collect::<Vec<_>>(),
                ];
                for m in &s.members {
                    rows.push(vec![
                        m.id.to_string(),
                        m.role.clone(),
                        m.smtp_addr.clone(),
                        m.admin_addr.clone(),
                        m.cluster_addr.clone(),
                        m.matched_index
                            .map(|i| i.to_string())
                            .unwrap_or_else(|| "-".into()),
                    ]);
                }
                print_table(&mut out, &rows)?;
            }
        }
        Command::Cluster(ClusterCommand::Join(args)) => {
            let req = match (&args.node_endpoint, args.id, &args.cluster_addr) {
                (Some(ep), _, _) => {
                    let info = access
                        .connect(ep)?
                        .node_info(NodeInfoRequest {})
                        .await?
                        .into_inner();
                    ClusterJoinRequest {
                        node_id: info.node_id,
                        cluster_addr: info.cluster_addr,
                        smtp_addr: info.smtp_addr,
                        admin_addr: info.admin_addr,
                        pristine: !info.initialized,
                    }
                }
                (None, Some(id), Some(addr)) => ClusterJoinRequest {
                    node_id: id,
                    cluster_addr: addr.clone(),
                    smtp_addr: args.smtp_addr.clone(),
                    admin_addr: args.admin_addr.clone(),
                    pristine: false,
                },
                _ => {
                    anyhow::bail!("give the new node's admin endpoint, or --id and --cluster-addr")
                }
            };
            let id = req.node_id;
            client.cluster_join(req).await?;
            if cli.output == Output::Json {
                writeln!(out, "{}", json!({"joined": id}))?;
            } else {
                writeln!(out, "node {id} joined the cluster as a voter")?;
            }
        }
        Command::Cluster(ClusterCommand::Remove { id }) => {
            client
                .cluster_remove(ClusterRemoveRequest { node_id: id })
                .await?;
            if cli.output == Output::Json {
                writeln!(out, "{}", json!({"removed": id}))?;
            } else {
                writeln!(out, "node {id} removed from the cluster")?;
            }
        }
        Command::Queue(QueueCommand::List { limit, local }) => {
            let mut stream = client
                .queue_list(QueueListRequest {
                    limit: limit.unwrap_or(0),
                    consistency: consistency(local),
                })
                .await?
                .into_inner();
            // Streamed out as it arrives: a huge queue is never held in memory.
            if cli.output == Output::Json {
                write!(out, "[")?;
                let mut first = true;
                while let Some(m) = stream.message().await? {
                    let sep = if first { "\n  " } else { ",\n  " };
                    write!(out, "{sep}{}", message_json(&m))?;
                    first = false;
                }
                writeln!(out, "{}]", if first { "" } else { "\n" })?;
            } else {
                writeln!(
                    out,
                    "{:<26}  {:>9}  {:<24}  {:<30}  RECIPIENTS",
                    "ID", "SIZE", "RECEIVED", "SENDER"
                )?;
                let mut n = 0u64;
                while let Some(m) = stream.message().await? {
                    let mut rcpts: Vec<String> = m
                        .recipients
                        .iter()
                        .map(|r| format!("{} ({})", r.address, r.state))
                        .collect();
                    if m.held {
                        rcpts.push("[held]".into());
                    }
                    if let Some(node) = m.claim_node {
                        rcpts.push(format!("[delivering: node {node}]"));
                    }
                    writeln!(
                        out,
                        "{:<26}  {:>9}  {:<24}  {:<30}  {}",
                        m.id,
                        m.size,
                        rfc3339(m.received_at_ms),
                        sender_text(&m.sender),
                        rcpts.join(", ")
                    )?;
                    n += 1;
                }
                writeln!(out, "-- {n} message(s)")?;
            }
        }
        Command::Queue(QueueCommand::Show { id, body, local }) => {
            let r = client
                .queue_show(QueueShowRequest {
                    id,
                    include_body: body,
                    consistency: consistency(local),
                })
                .await?
                .into_inner();
            let m = r.message.ok_or_else(|| anyhow::anyhow!("empty reply"))?;
            if cli.output == Output::Json {
                let mut v = message_json(&m);
                v["body_type"] = json!(r.body_type);
                if let Some(b) = &r.body {
                    v["body"] = json!(String::from_utf8_lossy(b));
                }
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                let rows = vec![
                    vec!["id:".into(), m.id.clone()],
                    vec!["sender:".into(), sender_text(&m.sender)],
                    vec!["size:".into(), m.size.to_string()],
                    vec![
                        "received:".into(),
                        format!("{} by node {}", rfc3339(m.received_at_ms), m.received_by),
                    ],
                    vec!["body type:".into(), r.body_type.clone()],
                ];
                print_table(&mut out, &rows)?;
                if m.held {
                    writeln!(out, "held:       yes")?;
                }
                if let Some(n) = m.claim_node {
                    writeln!(out, "delivering: node {n}")?;
                }
                for rc in &m.recipients {
                    let mut line = format!("recipient:  {} ({}", rc.address, rc.state);
                    if rc.attempts > 0 {
                        line.push_str(&format!(", {} attempt(s)", rc.attempts));
                    }
                    if let Some(next) = rc.next_attempt_ms {
                        line.push_str(&format!(", next {}", rfc3339(next)));
                    }
                    line.push(')');
                    if let Some(reply) = &rc.reply {
                        line.push_str(&format!(": {reply}"));
                    }
                    writeln!(out, "{line}")?;
                }
                if let Some(b) = &r.body {
                    writeln!(out)?;
                    out.write_all(b)?;
                }
            }
        }
        Command::Queue(QueueCommand::Flush { domain, id }) => {
            let target = match (domain, id) {
                (Some(d), _) => queue_flush_request::Target::Domain(d),
                (None, Some(id)) => queue_flush_request::Target::Id(id),
                (None, None) => queue_flush_request::Target::All(true),
            };
            let r = client
                .queue_flush(QueueFlushRequest {
                    target: Some(target),
                })
                .await?
                .into_inner();
            if cli.output == Output::Json {
                writeln!(out, "{}", json!({"flushed": r.changed}))?;
            } else {
                writeln!(out, "{} message(s) due now", r.changed)?;
            }
        }
        Command::Queue(QueueCommand::Hold { id }) => {
            let r = client
                .queue_hold(QueueIdRequest { id: id.clone() })
                .await?
                .into_inner();
            action_result(&mut out, cli.output, "held", &id, r.changed)?;
        }
        Command::Queue(QueueCommand::Release { id }) => {
            let r = client
                .queue_release(QueueIdRequest { id: id.clone() })
                .await?
                .into_inner();
            action_result(&mut out, cli.output, "released", &id, r.changed)?;
        }
        Command::Queue(QueueCommand::Delete { id }) => {
            let r = client
                .queue_delete(QueueIdRequest { id: id.clone() })
                .await?
                .into_inner();
            action_result(&mut out, cli.output, "deleted", &id, r.changed)?;
        }
        Command::Queue(QueueCommand::Bounce { id }) => {
            let r = client
                .queue_bounce(QueueIdRequest { id: id.clone() })
                .await?
                .into_inner();
            action_result(&mut out, cli.output, "bounced", &id, r.changed)?;
        }
        Command::Destinations(DestinationsCommand::List { local }) => {
            let r = client
                .destinations_list(DestinationsListRequest {
                    consistency: consistency(local),
                })
                .await?
                .into_inner();
            if cli.output == Output::Json {
                let v: Vec<Value> = r
                    .destinations
                    .iter()
                    .map(|d| {
                        json!({
                            "name": d.name,
                            "route": d.route,
                            "state": d.state,
                            "since": d.since_ms.map(rfc3339),
                            "last_probe": d.last_probe_ms.map(rfc3339),
                            "last_error": d.last_error,
                            "queued": d.queued,
                            "oldest_received_at": d.oldest_received_at_ms.map(rfc3339),
                            "oldest_age_seconds": d.oldest_received_at_ms.map(|ms| {
                                (chrono::Utc::now().timestamp_millis().max(0) as u64).saturating_sub(ms) / 1000
                            }),
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                let mut rows = vec![
                    [
                        "DESTINATION",
                        "ROUTE",
                        "STATE",
                        "QUEUED",
                        "OLDEST",
                        "LAST PROBE",
                        "LAST ERROR",
                    ]
                    .map(String::from)
                    .to_vec(),
                ];
                for d in &r.destinations {
                    rows.push(vec![
                        d.name.clone(),
                        d.route.clone(),
                        d.state.clone(),
                        d.queued.to_string(),
                        d.oldest_received_at_ms
                            .map(age)
                            .unwrap_or_else(|| "-".into()),
                        d.last_probe_ms
                            .map(|p| format!("{} ago", age(p)))
                            .unwrap_or_else(|| "-".into()),
                        d.last_error.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
                print_table(&mut out, &rows)?;
            }
        }
        Command::Recipients(RecipientsCommand::Add { entries }) => {
            let r = client
                .recipients_add(RecipientsChangeRequest { entries })
                .await?
                .into_inner();
            report_count(&mut out, cli.output, "added", r.changed)?;
        }
        Command::Recipients(RecipientsCommand::Remove { entries }) => {
            let r = client
                .recipients_remove(RecipientsChangeRequest { entries })
                .await?
                .into_inner();
            report_count(&mut out, cli.output, "removed", r.changed)?;
        }
        Command::Recipients(RecipientsCommand::List { domain, local }) => {
            let entries =
                list_recipients(&mut client, domain.unwrap_or_default(), consistency(local))
                    .await?;
            if cli.output == Output::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
            } else {
                for e in &entries {
                    writeln!(out, "{e}")?;
                }
                writeln!(
                    out,
                    "-- {} entr{}",
                    entries.len(),
                    if entries.len() == 1 { "y" } else { "ies" }
                )?;
            }
        }
        Command::Recipients(RecipientsCommand::Import { file, replace }) => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
            };
            // Normalized as the server stores entries (A-label domains), so `--replace`
            // compares like with like.
            let mut wanted = std::collections::BTreeSet::new();
            for (n, line) in text.lines().enumerate() {
                let Some(entry) = line
                    .split('#')
                    .next()
                    .and_then(|l| l.split_whitespace().next())
                else {
                    continue;
                };
                let normalized =
                    mxraft_queue::recipients::normalize_entry(entry).ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}:{}: {entry:?} is neither user@domain nor @domain; nothing was changed",
                            file.display(),
                            n + 1
                        )
                    })?;
                wanted.insert(normalized);
            }
            let mut added = 0;
            let list: Vec<String> = wanted.iter().cloned().collect();
            for chunk in list.chunks(10_000) {
                added += client
                    .recipients_add(RecipientsChangeRequest {
                        entries: chunk.to_vec(),
                    })
                    .await?
                    .into_inner()
                    .changed;
            }
            let mut removed = 0;
            if replace {
                let current =
                    list_recipients(&mut client, String::new(), consistency(false)).await?;
                let stale: Vec<String> = current
                    .into_iter()
                    .filter(|e| !wanted.contains(e))
                    .collect();
                for chunk in stale.chunks(10_000) {
                    removed += client
                        .recipients_remove(RecipientsChangeRequest {
                            entries: chunk.to_vec(),
                        })
                        .await?
                        .into_inner()
                        .changed;
                }
            }
            if cli.output == Output::Json {
                writeln!(
                    out,
                    "{}",
                    json!({"entries": wanted.len(), "added": added, "removed": removed})
                )?;
            } else {
                writeln!(
                    out,
                    "{} entries in the file: {added} added, {removed} removed",
                    wanted.len()
                )?;
            }
        }
        Command::Queue(QueueCommand::Stats { local }) => {
            let s = client
                .queue_stats(QueueStatsRequest {
                    consistency: consistency(local),
                })
                .await?
                .into_inner();
            let oldest = s.oldest_received_at_ms.map(rfc3339);
            if cli.output == Output::Json {
                let v =
                    json!({"messages": s.messages, "bytes": s.bytes, "oldest_received_at": oldest});
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                let rows = vec![
                    vec!["messages:".into(), s.messages.to_string()],
                    vec!["bytes:".into(), s.bytes.to_string()],
                    vec!["oldest:".into(), oldest.unwrap_or_else(|| "-".into())],
                ];
                print_table(&mut out, &rows)?;
            }
        }
        // Handled before connecting.
        Command::Cert(_) | Command::Token(_) => {}
    }
    Ok(())
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
