//! `mxraftctl events watch`: what happens in the cluster, one line per event, as it happens.
//!
//! The node called streams the queue's events (every node applies the same log, so one node
//! tells them all) and its view of leadership and membership; every other member is asked for
//! its own SMTP refusals only, which no other node knows. Filters by kind go to the nodes;
//! filters by message and domain are applied here.

use std::io::Write;
use std::pin::Pin;

use clap::Subcommand;
use futures::{Stream, StreamExt};
use serde_json::json;

use mxraft_proto::admin::{ClusterStatusRequest, Event, EventsWatchRequest};

use crate::Output;
use crate::access::{Access, Client};
use crate::output::rfc3339;

#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// Stream events until interrupted (or until --count have been printed): queued, claimed,
    /// delivered, deferred, failed, bounced, delayed, expired, deleted, held, released,
    /// leader, membership, refused, lagged.
    Watch {
        /// Only these kinds (repeat it, or separate with commas).
        #[arg(long = "kind", value_delimiter = ',', value_name = "KIND")]
        kinds: Vec<String>,
        /// Only events of this message.
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Only events whose destination or recipient is in this domain.
        #[arg(long, value_name = "DOMAIN")]
        domain: Option<String>,
        /// Only the node called: not the other members' refusals.
        #[arg(long)]
        this_node: bool,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

/// Events, each with the other member it came from (`None`: the node called).
type Events = Pin<Box<dyn Stream<Item = (Option<String>, Result<Event, tonic::Status>)>>>;

/// Runs one `events` command.
pub(crate) async fn run(
    cmd: EventsCommand,
    client: &mut Client,
    access: &Access,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let EventsCommand::Watch {
        kinds,
        id,
        domain,
        this_node,
        count,
    } = cmd;
    let request = |local_only| EventsWatchRequest {
        kinds: kinds.clone(),
        local_only,
    };
    let main = client.events_watch(request(false)).await?.into_inner();
    let mut streams: Vec<Events> = vec![Box::pin(main.map(|e| (None, e)))];
    if !this_node {
        let status = client
            .cluster_status(ClusterStatusRequest {})
            .await?
            .into_inner();
        for m in status.members.iter().filter(|m| m.id != status.node_id) {
            let name = format!("node {} ({})", m.id, m.admin_addr);
            let stream = match access.connect(&m.admin_addr) {
                Ok(mut c) => c.events_watch(request(true)).await.map(|r| r.into_inner()),
                Err(e) => Err(tonic::Status::unavailable(e.to_string())),
            };
            match stream {
                Ok(s) => streams.push(Box::pin(s.map(move |e| (Some(name.clone()), e)))),
                Err(e) => eprintln!("mxraftctl: {name}: not watched: {}", e.message()),
            }
        }
    }
    let domain = domain.map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase());
    let wanted = |e: &Event| {
        id.as_ref().is_none_or(|id| e.queue_id == id.trim())
            && domain.as_ref().is_none_or(|d| {
                e.destination == *d
                    || e.recipient
                        .rsplit_once('@')
                        .is_some_and(|(_, rd)| rd.eq_ignore_ascii_case(d))
            })
    };
    let mut all = futures::stream::select_all(streams);
    let mut printed = 0u64;
    while count.is_none_or(|n| printed < n) {
        let Some((from, item)) = all.next().await else {
            anyhow::bail!("every watched node ended the stream");
        };
        let event = match (item, from) {
            (Ok(e), _) => e,
            (Err(e), None) => return Err(e.into()),
            (Err(e), Some(member)) => {
                eprintln!("mxraftctl: {member}: watch ended: {}", e.message());
                continue;
            }
        };
        if !wanted(&event) {
            continue;
        }
        match output {
            Output::Json => writeln!(out, "{}", event_json(&event))?,
            Output::Table => writeln!(out, "{}", event_line(&event))?,
        }
        out.flush()?;
        printed += 1;
    }
    Ok(())
}

fn event_json(e: &Event) -> serde_json::Value {
    json!({
        "at": rfc3339(e.at_ms),
        "reporter": e.reporter,
        "kind": e.kind,
        "queue_id": (!e.queue_id.is_empty()).then_some(&e.queue_id),
        "node": e.node,
        "destination": (!e.destination.is_empty()).then_some(&e.destination),
        "recipient": (!e.recipient.is_empty()).then_some(&e.recipient),
        "client": (!e.client.is_empty()).then_some(&e.client),
        "detail": e.detail,
        "log_index": (e.log_index != 0).then_some(e.log_index),
    })
}

/// One readable line: time, reporter, kind, message, then `key=value` for what is known.
fn event_line(e: &Event) -> String {
    let mut line = format!(
        "{} node{} {:<10} {}",
        rfc3339(e.at_ms),
        e.reporter,
        e.kind,
        if e.queue_id.is_empty() {
            "-"
        } else {
            &e.queue_id
        }
    );
    if let Some(n) = e.node {
        line.push_str(&format!(" node={n}"));
    }
    for (key, value) in [
        ("dest", &e.destination),
        ("rcpt", &e.recipient),
        ("client", &e.client),
    ] {
        if !value.is_empty() {
            line.push_str(&format!(" {key}={value}"));
        }
    }
    if !e.detail.is_empty() {
        line.push_str(&format!(" {}", e.detail));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_only_what_is_known() {
        let e = Event {
            at_ms: 1_790_000_000_000,
            reporter: 2,
            kind: "delivered".into(),
            queue_id: "0ABC".into(),
            node: Some(3),
            destination: "example.test".into(),
            recipient: "a@example.test".into(),
            detail: "250 2.0.0 Ok".into(),
            log_index: 17,
            client: String::new(),
        };
        let line = event_line(&e);
        assert!(line.ends_with(
            " node2 delivered  0ABC node=3 dest=example.test rcpt=a@example.test 250 2.0.0 Ok"
        ));
        let j = event_json(&e);
        assert_eq!(j["log_index"], 17);
        assert!(j["client"].is_null());
        let leader = Event {
            kind: "leader".into(),
            node: Some(1),
            detail: "node 1 leads in term 3".into(),
            ..Event::default()
        };
        assert!(event_line(&leader).contains(" leader     - node=1 node 1 leads in term 3"));
    }
}
