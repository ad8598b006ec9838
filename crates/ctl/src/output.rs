//! Tables, JSON and the formatting of times and results.

use std::io::Write;

use chrono::SecondsFormat;
use serde_json::{Value, json};

use mxraft_proto::admin::QueuedMessage;

use crate::Output;

pub(crate) fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub(crate) fn message_json(m: &QueuedMessage) -> Value {
    json!({
        "id": m.id,
        "sender": m.sender,
        "size": m.size,
        "received_at": rfc3339(m.received_at_ms),
        "received_by": m.received_by,
        "claim_node": m.claim_node,
        "held": m.held,
        "state": m.state,
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
pub(crate) fn age(ms: u64) -> String {
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
pub(crate) fn print_table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
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

pub(crate) fn action_result(
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

pub(crate) fn report_count(
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

pub(crate) fn sender_text(s: &str) -> String {
    if s.is_empty() {
        "<>".into()
    } else {
        s.to_owned()
    }
}
