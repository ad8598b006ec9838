//! `mxraftctl recipients`: the replicated recipient table.

use std::io::Write;

use clap::Subcommand;
use serde_json::json;

use mxraft_proto::admin::{RecipientsChangeRequest, RecipientsListRequest};

use crate::Output;
use crate::access::{Client, consistency};
use crate::output::report_count;

#[derive(Debug, Subcommand)]
pub(crate) enum RecipientsCommand {
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

pub(crate) async fn list_recipients(
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

/// Runs one `recipients` command.
pub(crate) async fn run(
    cmd: RecipientsCommand,
    client: &mut Client,
    output: Output,
    mut out: &mut impl Write,
) -> anyhow::Result<()> {
    match cmd {
        RecipientsCommand::Add { entries } => {
            let r = client
                .recipients_add(RecipientsChangeRequest { entries })
                .await?
                .into_inner();
            report_count(&mut out, output, "added", r.changed)?;
        }
        RecipientsCommand::Remove { entries } => {
            let r = client
                .recipients_remove(RecipientsChangeRequest { entries })
                .await?
                .into_inner();
            report_count(&mut out, output, "removed", r.changed)?;
        }
        RecipientsCommand::List { domain, local } => {
            let entries =
                list_recipients(client, domain.unwrap_or_default(), consistency(local)).await?;
            if output == Output::Json {
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
        RecipientsCommand::Import { file, replace } => {
            import(client, output, out, file, replace).await?;
        }
    }
    Ok(())
}

async fn import(
    client: &mut Client,
    output: Output,
    out: &mut impl Write,
    file: std::path::PathBuf,
    replace: bool,
) -> anyhow::Result<()> {
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
        let normalized = mxraft_queue::recipients::normalize_entry(entry).ok_or_else(|| {
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
        let current = list_recipients(client, String::new(), consistency(false)).await?;
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
    if output == Output::Json {
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
    Ok(())
}
