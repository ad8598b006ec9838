//! `mxraftctl queue`: list, show, stats, flush, hold, release, delete and bounce.

use std::io::Write;

use clap::Subcommand;
use serde_json::json;

use mxraft_proto::admin::{
    QueueFlushRequest, QueueIdRequest, QueueListRequest, QueueShowRequest, QueueStatsRequest,
    queue_flush_request,
};

use crate::Output;
use crate::access::{Client, consistency};
use crate::output::{action_result, message_json, print_table, rfc3339, sender_text};

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
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

/// Runs one `queue` command.
pub(crate) async fn run(
    cmd: QueueCommand,
    client: &mut Client,
    output: Output,
    mut out: &mut impl Write,
) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::List { limit, local } => {
            list(client, output, out, limit, local).await?;
        }
        QueueCommand::Show { id, body, local } => {
            show(client, output, out, id, body, local).await?;
        }
        QueueCommand::Flush { domain, id } => {
            flush(client, output, out, domain, id).await?;
        }
        QueueCommand::Hold { id } => {
            let r = client
                .queue_hold(QueueIdRequest { id: id.clone() })
                .await?
                .into_inner();
            action_result(&mut out, output, "held", &id, r.changed)?;
        }
        QueueCommand::Release { id } => {
            let r = client
                .queue_release(QueueIdRequest { id: id.clone() })
                .await?
                .into_inner();
            action_result(&mut out, output, "released", &id, r.changed)?;
        }
        QueueCommand::Delete { id } => {
            let r = client
                .queue_delete(QueueIdRequest { id: id.clone() })
                .await?
                .into_inner();
            action_result(&mut out, output, "deleted", &id, r.changed)?;
        }
        QueueCommand::Bounce { id } => {
            let r = client
                .queue_bounce(QueueIdRequest { id: id.clone() })
                .await?
                .into_inner();
            action_result(&mut out, output, "bounced", &id, r.changed)?;
        }
        QueueCommand::Stats { local } => {
            stats(client, output, out, local).await?;
        }
    }
    Ok(())
}

async fn list(
    client: &mut Client,
    output: Output,
    out: &mut impl Write,
    limit: Option<u64>,
    local: bool,
) -> anyhow::Result<()> {
    let mut stream = client
        .queue_list(QueueListRequest {
            limit: limit.unwrap_or(0),
            consistency: consistency(local),
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

async fn flush(
    client: &mut Client,
    output: Output,
    out: &mut impl Write,
    domain: Option<String>,
    id: Option<String>,
) -> anyhow::Result<()> {
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
    if output == Output::Json {
        writeln!(out, "{}", json!({"flushed": r.changed}))?;
    } else {
        writeln!(out, "{} message(s) due now", r.changed)?;
    }
    Ok(())
}
