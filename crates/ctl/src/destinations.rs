//! `mxraftctl destinations`: the state of every destination.

use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use mxraft_proto::admin::DestinationsListRequest;

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
}

/// Runs one `destinations` command.
pub(crate) async fn run(
    cmd: DestinationsCommand,
    client: &mut Client,
    output: Output,
    mut out: &mut impl Write,
) -> anyhow::Result<()> {
    match cmd {
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
    }
    Ok(())
}
