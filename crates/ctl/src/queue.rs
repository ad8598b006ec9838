//! `mxraftctl queue`: list (with filters and paging), show, body, stats, shape, and flush,
//! hold, release, delete and bounce of one message or of every message a filter matches.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use mxraft_proto::admin::{
    QueueBodyRequest, QueueBulkRequest, QueueFilter, QueueFlushRequest, QueueIdRequest,
    QueueListRequest, QueueShapeRequest, QueueShowRequest, QueueStatsRequest, queue_flush_request,
};

use crate::Output;
use crate::access::{Client, consistency};
use crate::output::{action_result, message_json, print_table, rfc3339, sender_text};

/// Which messages: every condition given must hold.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct FilterArgs {
    /// The sender: user@domain, @domain, or '<>' for the null sender.
    #[arg(long, value_name = "ADDRESS")]
    sender: Option<String>,
    /// Some recipient: user@domain or @domain.
    #[arg(long, value_name = "ADDRESS")]
    recipient: Option<String>,
    /// Some recipient still waiting for this destination.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// queued (not tried yet), deferred (a temporary failure), active (being delivered) or
    /// held.
    #[arg(long, value_parser = ["queued", "deferred", "active", "held"], conflicts_with = "held")]
    state: Option<String>,
    /// Received longer ago than this: 30m, 2h, 1d ...
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    older_than: Option<Duration>,
    /// Only held messages (the same as --state held).
    #[arg(long)]
    held: bool,
    /// Only messages after this id (the last id of the previous page).
    #[arg(long, value_name = "ID")]
    after: Option<String>,
}

fn parse_age(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (e.g. 30m, 2h, 1d)"))
}

impl FilterArgs {
    fn is_empty(&self) -> bool {
        self.sender.is_none()
            && self.recipient.is_none()
            && self.domain.is_none()
            && self.state.is_none()
            && self.older_than.is_none()
            && !self.held
            && self.after.is_none()
    }

    /// The domain, when it is the only condition.
    fn only_domain(&self) -> Option<&str> {
        let rest = FilterArgs {
            domain: None,
            ..self.clone()
        };
        if rest.is_empty() {
            self.domain.as_deref()
        } else {
            None
        }
    }

    fn to_proto(&self) -> Option<QueueFilter> {
        if self.is_empty() {
            return None;
        }
        Some(QueueFilter {
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            domain: self.domain.clone(),
            state: if self.held {
                Some("held".into())
            } else {
                self.state.clone()
            },
            older_than_ms: self.older_than.map(|d| d.as_millis() as u64),
            after: self.after.clone(),
        })
    }
}

/// An action on one message (by id) or on every message a filter matches.
#[derive(Debug, Args)]
pub(crate) struct ActionArgs {
    /// The queue id; or give filters (or --all) to act on every message they match.
    id: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Every message in the queue.
    #[arg(long, conflicts_with = "id")]
    all: bool,
    /// Only print how many messages would be affected.
    #[arg(long, conflicts_with = "id")]
    dry_run: bool,
    /// Act on at most this many messages, oldest first.
    #[arg(long, conflicts_with = "id")]
    limit: Option<u64>,
    /// Do not ask before deleting or bouncing more than one message.
    #[arg(long, short = 'y')]
    yes: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// Queued messages, oldest first, optionally filtered.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Show at most this many messages (with --after, one page at a time).
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
    /// The stored message as it will be delivered (trace header and body), to stdout or a file.
    Body {
        /// The queue id.
        id: String,
        /// Write it to this file instead of stdout.
        #[arg(long = "to", value_name = "FILE")]
        file: Option<PathBuf>,
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
    /// Messages waiting per destination and age, like Postfix's qshape.
    Shape {
        #[command(flatten)]
        filter: FilterArgs,
        /// Read this node's copy without asking the leader.
        #[arg(long)]
        local: bool,
    },
    /// Deliver now: one message, what filters match, or (with neither) everything.
    Flush(ActionArgs),
    /// Stop delivering messages until they are released.
    Hold(ActionArgs),
    /// Release held messages; they are delivered at once.
    Release(ActionArgs),
    /// Remove messages without telling their senders.
    Delete(ActionArgs),
    /// Return messages to their senders now, with a DSN.
    Bounce(ActionArgs),
}

/// Runs one `queue` command.
pub(crate) async fn run(
    cmd: QueueCommand,
    client: &mut Client,
    output: Output,
    mut out: &mut impl Write,
) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::List {
            filter,
            limit,
            local,
        } => list(client, output, out, &filter, limit, local).await,
        QueueCommand::Show { id, body, local } => show(client, output, out, id, body, local).await,
        QueueCommand::Body { id, file, local } => body(client, out, id, file, local).await,
        QueueCommand::Stats { local } => stats(client, output, out, local).await,
        QueueCommand::Shape { filter, local } => shape(client, output, out, &filter, local).await,
        QueueCommand::Flush(args) => match (&args.id, args.filter.is_empty()) {
            (Some(id), _) => {
                let r = client
                    .queue_flush(QueueFlushRequest {
                        target: Some(queue_flush_request::Target::Id(id.clone())),
                    })
                    .await?
                    .into_inner();
                action_result(&mut out, output, "flushed", id, r.changed)
            }
            (None, true) if !args.dry_run && args.limit.is_none() => {
                flush(client, output, out, queue_flush_request::Target::All(true)).await
            }
            (None, _)
                if !args.dry_run && args.limit.is_none() && args.filter.only_domain().is_some() =>
            {
                let domain = args.filter.only_domain().unwrap_or_default().to_owned();
                flush(
                    client,
                    output,
                    out,
                    queue_flush_request::Target::Domain(domain),
                )
                .await
            }
            (None, _) => bulk(client, output, out, "flush", args).await,
        },
        QueueCommand::Hold(args) => one_or_many(client, output, out, "hold", args).await,
        QueueCommand::Release(args) => one_or_many(client, output, out, "release", args).await,
        QueueCommand::Delete(args) => one_or_many(client, output, out, "delete", args).await,
        QueueCommand::Bounce(args) => one_or_many(client, output, out, "bounce", args).await,
    }
}

/// A flush of everything or of one destination, as one command.
async fn flush(
    client: &mut Client,
    output: Output,
    out: &mut impl Write,
    target: queue_flush_request::Target,
) -> anyhow::Result<()> {
    let r = client
        .queue_flush(QueueFlushRequest {
            target: Some(target),
        })
        .await?
        .into_inner();
    if output == Output::Json {
        writeln!(out, "{}", json!({"flushed": r.changed}))?;
    } else {
        writeln!(out, "{} message(s) due now", r.changed)?;
    }
    Ok(())
}

/// The past participle shown for an action.
fn done(action: &str) -> &'static str {
    match action {
        "flush" => "flushed",
        "hold" => "held",
        "release" => "released",
        "delete" => "deleted",
        _ => "bounced",
    }
}

/// `hold`, `release`, `delete`, `bounce`: of one message by id, else by filter.
async fn one_or_many(
    client: &mut Client,
    output: Output,
    mut out: &mut impl Write,
    action: &str,
    args: ActionArgs,
) -> anyhow::Result<()> {
    let Some(id) = args.id.clone() else {
        if args.filter.is_empty() && !args.all {
            anyhow::bail!(
                "queue {action} needs a queue id, filters (see --help), or --all for every message"
            );
        }
        return bulk(client, output, out, action, args).await;
    };
    let request = QueueIdRequest { id: id.clone() };
    let changed = match action {
        "hold" => client.queue_hold(request).await?,
        "release" => client.queue_release(request).await?,
        "delete" => client.queue_delete(request).await?,
        _ => client.queue_bounce(request).await?,
    }
    .into_inner()
    .changed;
    action_result(&mut out, output, done(action), &id, changed)
}

/// An action on every message the filter matches: counted first, confirmed for `delete` and
/// `bounce` of more than one message, then committed by the node.
async fn bulk(
    client: &mut Client,
    output: Output,
    out: &mut impl Write,
    action: &str,
    args: ActionArgs,
) -> anyhow::Result<()> {
    let request = |dry_run: bool| QueueBulkRequest {
        filter: args.filter.to_proto(),
        action: action.to_owned(),
        dry_run,
        limit: args.limit.unwrap_or(0),
    };
    let destructive = matches!(action, "delete" | "bounce");
    if args.dry_run || (destructive && !args.yes) {
        let counted = client.queue_bulk(request(true)).await?.into_inner();
        if args.dry_run {
            if output == Output::Json {
                writeln!(
                    out,
                    "{}",
                    json!({"action": action, "matched": counted.matched, "dry_run": true})
                )?;
            } else {
                writeln!(
                    out,
                    "{} message(s) would be {}",
                    counted.matched,
                    done(action)
                )?;
            }
            return Ok(());
        }
        if counted.matched > 1 && !confirm(action, counted.matched)? {
            anyhow::bail!("nothing {}: not confirmed", done(action));
        }
    }
    let r = client.queue_bulk(request(false)).await?.into_inner();
    if output == Output::Json {
        writeln!(
            out,
            "{}",
            json!({"action": action, "matched": r.matched, "changed": r.changed})
        )?;
    } else {
        writeln!(
            out,
            "{} message(s) matched, {} {}",
            r.matched,
            r.changed,
            done(action)
        )?;
    }
    Ok(())
}

/// Asks on the terminal whether to `action` `count` messages; refuses without a terminal.
fn confirm(action: &str, count: u64) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!(
            "this would {action} {count} messages; add --yes to do it without asking, or \
             --dry-run to count them"
        );
    }
    eprint!("{action} {count} messages? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

async fn list(
    client: &mut Client,
    output: Output,
    out: &mut impl Write,
    filter: &FilterArgs,
    limit: Option<u64>,
    local: bool,
) -> anyhow::Result<()> {
    let mut stream = client
        .queue_list(QueueListRequest {
            limit: limit.unwrap_or(0),
            consistency: consistency(local),
            filter: filter.to_proto(),
        })
        .await?
        .into_inner();
    // Streamed out as it arrives: a huge queue is never held in memory.
    if output == Output::Json {
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
        let mut last = None;
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
            last = Some(m.id);
        }
        writeln!(out, "-- {n} message(s)")?;
        if limit.is_some_and(|l| n == l)
            && let Some(last) = &last
        {
            writeln!(out, "-- more may follow: add --after {last}")?;
        }
    }
    Ok(())
}

async fn body(
    client: &mut Client,
    out: &mut impl Write,
    id: String,
    file: Option<PathBuf>,
    local: bool,
) -> anyhow::Result<()> {
    let mut stream = client
        .queue_body(QueueBodyRequest {
            id,
            consistency: consistency(local),
        })
        .await?
        .into_inner();
    match file {
        None => {
            while let Some(chunk) = stream.message().await? {
                out.write_all(&chunk.data)?;
            }
            out.flush()?;
        }
        Some(path) => {
            // Written next to the target and renamed: a failed read leaves no partial file.
            let tmp = path.with_extension("part");
            let write = async {
                let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
                while let Some(chunk) = stream.message().await? {
                    f.write_all(&chunk.data)?;
                }
                f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                anyhow::Ok(())
            };
            if let Err(e) = write.await {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.context(format!("cannot write {}", path.display())));
            }
        }
    }
    Ok(())
}

async fn shape(
    client: &mut Client,
    output: Output,
    mut out: &mut impl Write,
    filter: &FilterArgs,
    local: bool,
) -> anyhow::Result<()> {
    let r = client
        .queue_shape(QueueShapeRequest {
            filter: filter.to_proto(),
            consistency: consistency(local),
        })
        .await?
        .into_inner();
    let mut labels: Vec<String> = r.bucket_minutes.iter().map(u64::to_string).collect();
    labels.push(format!(
        "{}+",
        r.bucket_minutes.last().copied().unwrap_or_default()
    ));
    if output == Output::Json {
        let rows: Vec<_> = r
            .rows
            .iter()
            .map(|row| {
                json!({
                    "destination": row.destination,
                    "total": row.total,
                    "counts": row.counts,
                })
            })
            .collect();
        let v = json!({"bucket_minutes": r.bucket_minutes, "rows": rows});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let mut header = vec!["DESTINATION".to_owned(), "T".to_owned()];
    header.extend(labels);
    let mut rows = vec![header];
    let mut totals = vec![0u64; r.bucket_minutes.len() + 2];
    for row in &r.rows {
        let mut line = vec![row.destination.clone(), row.total.to_string()];
        totals[0] += row.total;
        for (i, c) in row.counts.iter().enumerate() {
            line.push(c.to_string());
            if let Some(t) = totals.get_mut(i + 1) {
                *t += c;
            }
        }
        rows.push(line);
    }
    let mut total_line = vec!["TOTAL".to_owned()];
    total_line.extend(totals.iter().map(u64::to_string));
    rows.insert(1, total_line);
    print_table(&mut out, &rows)?;
    writeln!(out, "-- messages waiting, by minutes since they arrived")?;
    Ok(())
}

async fn show(
    client: &mut Client,
    output: Output,
    mut out: &mut impl Write,
    id: String,
    body: bool,
    local: bool,
) -> anyhow::Result<()> {
    let r = client
        .queue_show(QueueShowRequest {
            id,
            include_body: body,
            consistency: consistency(local),
        })
        .await?
        .into_inner();
    let m = r.message.ok_or_else(|| anyhow::anyhow!("empty reply"))?;
    if output == Output::Json {
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
    Ok(())
}

async fn stats(
    client: &mut Client,
    output: Output,
    mut out: &mut impl Write,
    local: bool,
) -> anyhow::Result<()> {
    let s = client
        .queue_stats(QueueStatsRequest {
            consistency: consistency(local),
        })
        .await?
        .into_inner();
    let oldest = s.oldest_received_at_ms.map(rfc3339);
    if output == Output::Json {
        let v = json!({"messages": s.messages, "bytes": s.bytes, "oldest_received_at": oldest});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        let rows = vec![
            vec!["messages:".into(), s.messages.to_string()],
            vec!["bytes:".into(), s.bytes.to_string()],
            vec!["oldest:".into(), oldest.unwrap_or_else(|| "-".into())],
        ];
        print_table(&mut out, &rows)?;
    }
    Ok(())
}
