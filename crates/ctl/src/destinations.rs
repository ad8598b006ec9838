//! `mxraftctl destinations`: the state of every destination; suspending and resuming delivery
//! to one; probing one's primary now.

use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use mxraft_proto::admin::{DestinationRequest, DestinationsListRequest};

use crate::Output;
use crate::access::{Client, consistency};
use crate::output::{age, print_table, rfc3339};

#[derive(Debug, Subcommand)]
pub(crate) enum DestinationsCommand {
    /// Destinations with their route, state, last probe and error, and queued mail.
    List {
        /// Read this node's copy without asking the leader.
        #[arg(long)]
        local: bool,
    },
    /// Stop delivering to a destination, cluster-wide: its mail is kept (and does not expire)
    /// until it is resumed.
    Suspend {
        /// The destination (a domain).
        domain: String,
    },
    /// Resume delivery to a suspended destination; its mail is due at once.
    Resume {
        /// The destination (a domain).
        domain: String,
    },
    /// Probe a destination's primary now (connect, banner, EHLO, QUIT) from the node called,
    /// and record what it found: a primary that answers gets its mail at once.
    Probe {
        /// The destination (a domain).
        domain: String,
    },
}

/// Runs one `destinations` command.
pub(crate) async fn run(
    cmd: DestinationsCommand,
    client: &mut Client,
    output: Output,
    mut out: &mut impl Write,
) -> anyhow::Result<()> {
    match cmd {
        DestinationsCommand::Suspend { domain } => {
            suspend(client, &mut out, output, domain, true).await?;
        }
        DestinationsCommand::Resume { domain } => {
            suspend(client, &mut out, output, domain, false).await?;
        }
        DestinationsCommand::Probe { domain } => {
            let r = client
                .destinations_probe(DestinationRequest {
                    name: domain.clone(),
                })
                .await?
                .into_inner();
            if output == Output::Json {
                let v = json!({
                    "destination": domain,
                    "node_id": r.node_id,
                    "up": r.up,
                    "error": r.error,
                    "elapsed_ms": r.elapsed_ms,
                });
                writeln!(out, "{v}")?;
            } else if r.up {
                writeln!(
                    out,
                    "{domain}: up (probed from node {} in {} ms)",
                    r.node_id, r.elapsed_ms
                )?;
            } else {
                writeln!(
                    out,
                    "{domain}: down (probed from node {} in {} ms): {}",
                    r.node_id,
                    r.elapsed_ms,
                    r.error.as_deref().unwrap_or("no answer")
                )?;
            }
            if !r.up {
                anyhow::bail!("{domain} does not answer");
            }
        }
        DestinationsCommand::List { local } => {
            let r = client
                .destinations_list(DestinationsListRequest {
                    consistency: consistency(local),
                })
                .await?
                .into_inner();
            if output == Output::Json {
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
                        "suspended_since": d.suspended_since_ms.map(rfc3339),
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
                        if d.suspended_since_ms.is_some() {
                            format!("{} (suspended)", d.state)
                        } else {
                            d.state.clone()
                        },
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
    }
    Ok(())
}

/// Suspends or resumes delivery to `domain` and says what changed.
async fn suspend(
    client: &mut Client,
    out: &mut impl Write,
    output: Output,
    domain: String,
    suspend: bool,
) -> anyhow::Result<()> {
    let request = DestinationRequest {
        name: domain.clone(),
    };
    let changed = if suspend {
        client.destinations_suspend(request).await?
    } else {
        client.destinations_resume(request).await?
    }
    .into_inner()
    .changed;
    let verb = if suspend { "suspended" } else { "resumed" };
    if output == Output::Json {
        writeln!(
            out,
            "{}",
            json!({"destination": domain, "suspended": suspend, "changed": changed > 0})
        )?;
    } else if changed > 0 {
        writeln!(out, "delivery to {domain} {verb}")?;
    } else {
        writeln!(out, "delivery to {domain} was already {verb}")?;
    }
    Ok(())
}
