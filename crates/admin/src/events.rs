//! `EventsWatch`: what happens, streamed as it happens. The queue's events come from this
//! node's apply (the same on every node); leader and membership changes from its Raft
//! metrics; refusals from its own front door.

use std::collections::BTreeSet;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use mxraft_proto::admin::{Event, EventsWatchRequest};
use mxraft_proto::identity::Role;
use mxraft_queue::{EventKind, Refusal};
use mxraft_store::AppliedEvent;

use crate::{AdminService, EventStream};

/// The kinds that are not the queue's.
const NODE_KINDS: [&str; 4] = ["leader", "membership", "refused", "lagged"];

/// Events buffered for a slow caller before the watch waits on it (and the broadcasts it
/// reads from start to lag, which it is then told).
const BUFFER: usize = 1024;

pub(crate) async fn watch(
    svc: &AdminService,
    request: Request<EventsWatchRequest>,
) -> Result<Response<EventStream>, Status> {
    svc.auth.authorize(&request, Role::Read, "events watch")?;
    let r = request.into_inner();
    let kinds = kinds_of(&r.kinds)?;
    let wants = move |kind: &str| kinds.is_empty() || kinds.contains(kind);
    let node = svc.node()?;
    let reporter = node.id();
    let clock = node.clock().clone();
    let mut applied = (!r.local_only).then(|| node.state_machine().subscribe_events());
    let mut metrics = (!r.local_only).then(|| node.raft().metrics());
    let mut refusals = svc.options.refusals.as_ref().map(|s| s.subscribe());
    // The task holds no handle on the node: it ends when the node's Raft and front door do.
    drop(node);
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let mut seen = metrics.as_ref().map(|m| Seen::of(&m.borrow_watched()));
        let at = |e: Event| Event {
            at_ms: clock.now_ms(),
            reporter,
            ..e
        };
        loop {
            let events: Vec<Event> = tokio::select! {
                _ = tx.closed() => return,
                piece = recv(&mut applied) => match piece {
                    Ok(piece) => piece.iter().map(|e| at(from_applied(e))).collect(),
                    Err(broadcast::error::RecvError::Lagged(n)) => vec![at(lagged(n, "pieces of queue events"))],
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                refusal = recv(&mut refusals) => match refusal {
                    Ok(refusal) => vec![Event { reporter, ..from_refusal(refusal) }],
                    Err(broadcast::error::RecvError::Lagged(n)) => vec![at(lagged(n, "refusals"))],
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                changed = async {
                    match &mut metrics {
                        Some(m) => m.changed().await.map_err(|_| ()),
                        None => std::future::pending().await,
                    }
                } => {
                    if changed.is_err() {
                        return;
                    }
                    let (Some(m), Some(seen)) = (&metrics, &mut seen) else { continue };
                    let now = Seen::of(&m.borrow_watched());
                    seen.changes_to(now).into_iter().map(at).collect()
                }
            };
            for e in events.into_iter().filter(|e| wants(&e.kind)) {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// The requested kinds, checked: an unknown one is `INVALID_ARGUMENT` naming the known ones.
fn kinds_of(asked: &[String]) -> Result<BTreeSet<String>, Status> {
    let known: Vec<&str> = EventKind::ALL
        .iter()
        .map(|k| k.as_str())
        .chain(NODE_KINDS)
        .collect();
    asked
        .iter()
        .map(|k| {
            let k = k.trim().to_ascii_lowercase();
            if known.contains(&k.as_str()) {
                Ok(k)
            } else {
                Err(Status::invalid_argument(format!(
                    "unknown event kind {k:?}; known: {}",
                    known.join(", ")
                )))
            }
        })
        .collect()
}

/// The next message of a broadcast that may be absent (then never).
async fn recv<T: Clone>(
    rx: &mut Option<broadcast::Receiver<T>>,
) -> Result<T, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn from_applied(e: &AppliedEvent) -> Event {
    let ev = &e.event;
    Event {
        kind: ev.kind.as_str().to_owned(),
        queue_id: ev.id.to_string(),
        node: ev.node,
        destination: ev.destination.clone().unwrap_or_default(),
        recipient: ev.recipient.clone().unwrap_or_default(),
        detail: ev.detail.clone(),
        log_index: e.index,
        ..Event::default()
    }
}

fn from_refusal(r: Refusal) -> Event {
    Event {
        at_ms: r.at_ms,
        kind: "refused".to_owned(),
        detail: format!("{}: {}", r.rule, r.reply),
        client: r.client.to_string(),
        ..Event::default()
    }
}

fn lagged(n: u64, what: &str) -> Event {
    Event {
        kind: "lagged".to_owned(),
        detail: format!("the watch fell behind and missed {n} {what}"),
        ..Event::default()
    }
}

/// The leadership and membership as last told.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    leader: Option<u64>,
    term: u64,
    voters: BTreeSet<u64>,
    learners: BTreeSet<u64>,
}

impl Seen {
    fn of(m: &openraft::RaftMetrics<mxraft_store::TypeConfig>) -> Seen {
        let membership = m.membership_config.membership();
        Seen {
            leader: m.current_leader,
            term: m.current_term,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// The events from `self` to `now`, which becomes what was last told.
    fn changes_to(&mut self, now: Seen) -> Vec<Event> {
        let mut events = Vec::new();
        if now.leader != self.leader {
            events.push(Event {
                kind: "leader".to_owned(),
                node: now.leader,
                detail: match now.leader {
                    Some(id) => format!("node {id} leads in term {}", now.term),
                    None => format!("no leader known in term {}", now.term),
                },
                ..Event::default()
            });
        }
        if now.voters != self.voters || now.learners != self.learners {
            let list =
                |s: &BTreeSet<u64>| s.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            events.push(Event {
                kind: "membership".to_owned(),
                detail: format!(
                    "voters {}; learners {}",
                    list(&now.voters),
                    if now.learners.is_empty() {
                        "none".to_owned()
                    } else {
                        list(&now.learners)
                    }
                ),
                ..Event::default()
            });
        }
        *self = now;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(leader: Option<u64>, term: u64, voters: &[u64], learners: &[u64]) -> Seen {
        Seen {
            leader,
            term,
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
        }
    }

    #[test]
    fn a_change_of_leader_or_members_is_told_once() {
        let mut s = seen(Some(1), 3, &[1, 2, 3], &[]);
        assert!(s.changes_to(seen(Some(1), 3, &[1, 2, 3], &[])).is_empty());
        let e = s.changes_to(seen(None, 4, &[1, 2, 3], &[]));
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].kind.as_str(), e[0].node), ("leader", None));
        let e = s.changes_to(seen(Some(2), 4, &[1, 2, 3], &[4]));
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].detail, "node 2 leads in term 4");
        assert_eq!(e[1].kind, "membership");
        assert_eq!(e[1].detail, "voters 1,2,3; learners 4");
        assert!(s.changes_to(seen(Some(2), 4, &[1, 2, 3], &[4])).is_empty());
    }

    #[test]
    fn unknown_kinds_are_refused_naming_the_known_ones() {
        let ok = kinds_of(&["Delivered".into(), " refused ".into()]).expect("known");
        assert_eq!(
            ok,
            BTreeSet::from(["delivered".to_owned(), "refused".to_owned()])
        );
        let err = kinds_of(&["deliverd".into()]).expect_err("unknown");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("deliverd") && err.message().contains("queued"));
    }
}
