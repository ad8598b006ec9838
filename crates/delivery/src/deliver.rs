//! Executing claims: every node delivers the claims the leader granted to it.
//!
//! A claim is a batch of messages for one destination, delivered over one connection. While it
//! works, the node renews the claim's lease; results go back through Raft in `Report`s as soon
//! as each message is done (batched while earlier reports commit), carrying the claim's
//! fencing token. Messages not attempted (shutdown, lost connection) are released.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use mxraft_queue::{AttemptOutcome, ClaimView, MessageId, MessageReport, QueueCommand, Report};

use crate::client::{ClientError, Connection, Outgoing, RcptResult};
use crate::route::RouteError;
use crate::{Delivery, now_ms};

/// Reports sent in one `Report` at most.
const REPORT_BATCH: usize = 256;

impl Delivery {
    /// Proposes `cmd`, retrying while `keep_trying` says so (the claim is still live).
    pub(crate) async fn propose_until(&self, cmd: QueueCommand, until_ms: u64) -> bool {
        loop {
            match self.node.propose(cmd.clone()).await {
                Ok(_) => return true,
                Err(e) => {
                    if now_ms() >= until_ms {
                        warn!(error = %e, command = %cmd, "giving up a proposal");
                        return false;
                    }
                    debug!(error = %e, "proposal failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Delivers one claim to its destination.
    pub(crate) async fn run_claim(self: Arc<Self>, claim: ClaimView, shutdown: CancellationToken) {
        let span = info_span!("delivery", token = claim.token, destination = %claim.destination, messages = claim.ids.len());
        async move {
            let remaining: Arc<Mutex<BTreeSet<MessageId>>> =
                Arc::new(Mutex::new(claim.ids.iter().copied().collect()));
            let lease_ms = self.config.claim_lease.as_millis() as u64;
            let lease_until = Arc::new(std::sync::atomic::AtomicU64::new(claim.lease_until_ms));

            // Renew the lease while delivering.
            let renewer = {
                let this = self.clone();
                let remaining = remaining.clone();
                let lease_until = lease_until.clone();
                let token = claim.token;
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(lease_ms / 3)).await;
                        let ids: Vec<MessageId> = remaining
                            .lock()
                            .map(|r| r.iter().copied().collect())
                            .unwrap_or_default();
                        if ids.is_empty() {
                            return;
                        }
                        let at_ms = now_ms();
                        let cmd = QueueCommand::Renew {
                            token,
                            ids,
                            at_ms,
                            lease_ms,
                        };
                        if this.node.propose(cmd).await.is_ok() {
                            lease_until
                                .store(at_ms + lease_ms, std::sync::atomic::Ordering::Release);
                        }
                    }
                })
            };

            // Reports are committed in the background while delivery goes on.
            let (report_tx, report_rx) = mpsc::unbounded_channel::<MessageReport>();
            let reporter = tokio::spawn(self.clone().report_loop(
                claim.token,
                report_rx,
                lease_until.clone(),
            ));

            self.deliver(&claim, &remaining, &report_tx, &lease_until, &shutdown)
                .await;

            drop(report_tx);
            let _ = reporter.await;
            renewer.abort();
            let left: Vec<MessageId> = remaining
                .lock()
                .map(|r| r.iter().copied().collect())
                .unwrap_or_default();
            if !left.is_empty() {
                debug!(count = left.len(), "releasing messages not attempted");
                let until = lease_until.load(std::sync::atomic::Ordering::Acquire);
                self.propose_until(
                    QueueCommand::Release {
                        token: claim.token,
                        ids: left,
                    },
                    until,
                )
                .await;
            }
        }
        .instrument(span)
        .await
    }

    async fn report_loop(
        self: Arc<Self>,
        token: u64,
        mut rx: mpsc::UnboundedReceiver<MessageReport>,
        lease_until: Arc<std::sync::atomic::AtomicU64>,
    ) {
        while let Some(first) = rx.recv().await {
            let mut messages = vec![first];
            while messages.len() < REPORT_BATCH {
                match rx.try_recv() {
                    Ok(m) => messages.push(m),
                    Err(_) => break,
                }
            }
            let report = QueueCommand::Report(Report {
                token,
                at_ms: now_ms(),
                reporting_mta: self.hostname.clone(),
                messages,
            });
            // Keep trying while the claim can still be ours; after that the report would be
            // ignored anyway (its token is stale).
            let until = lease_until.load(std::sync::atomic::Ordering::Acquire);
            self.propose_until(report, until.max(now_ms() + 5_000))
                .await;
        }
    }

    async fn deliver(
        &self,
        claim: &ClaimView,
        remaining: &Arc<Mutex<BTreeSet<MessageId>>>,
        reports: &mpsc::UnboundedSender<MessageReport>,
        lease_until: &Arc<std::sync::atomic::AtomicU64>,
        shutdown: &CancellationToken,
    ) {
        let dest = &claim.destination;
        let addrs = match self.resolve_route(dest).await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "no route");
                let outcome = match &e {
                    RouteError::Permanent(_) => AttemptOutcome::Failed { reply: e.reply() },
                    RouteError::Temporary(_) => AttemptOutcome::Deferred { reply: e.reply() },
                };
                self.report_all(claim, remaining, reports, &outcome);
                if matches!(e, RouteError::Temporary(_)) {
                    self.mark_down(dest, e.reply()).await;
                }
                return;
            }
        };

        let timeouts = self.config.timeouts();
        let mut last_error = String::new();
        let mut conn = None;
        for (host, addr) in &addrs {
            match Connection::open(*addr, host, &self.hostname, self.tls.as_ref(), &timeouts).await
            {
                Ok(c) => {
                    conn = Some(c);
                    break;
                }
                Err(ClientError::Io(e)) if e.starts_with("TLS handshake") => {
                    // Opportunistic TLS failed: try the same host in plain text.
                    warn!(host = %host, addr = %addr, error = %e, "TLS failed; retrying without TLS");
                    match Connection::open(*addr, host, &self.hostname, None, &timeouts).await {
                        Ok(c) => {
                            conn = Some(c);
                            break;
                        }
                        Err(e) => last_error = format!("{host}[{addr}]: {e}"),
                    }
                }
                Err(e) => last_error = format!("{host}[{addr}]: {e}"),
            }
        }
        let Some(mut conn) = conn else {
            info!(error = %last_error, "primary not reachable");
            let reply = format!("4.4.1 {last_error}");
            self.report_all(
                claim,
                remaining,
                reports,
                &AttemptOutcome::Deferred {
                    reply: reply.clone(),
                },
            );
            self.mark_down(dest, reply).await;
            return;
        };
        debug!(host = %conn.host, addr = %conn.addr, tls = conn.is_tls(), "connected");
        let known_up = {
            let sm = self.node.state_machine();
            let live = sm.read();
            live.queue().destination(dest).is_some_and(|d| d.up)
        };
        if !known_up {
            // Record that the primary answers (a new destination, or one believed down).
            let cmd = QueueCommand::SetDestination {
                destination: dest.clone(),
                up: true,
                at_ms: now_ms(),
                probed: false,
                error: None,
            };
            if let Err(e) = self.node.propose(cmd).await {
                debug!(error = %e, "destination state not recorded");
            }
        }

        for &id in &claim.ids {
            if shutdown.is_cancelled() {
                break;
            }
            // Never start a message the claim may not cover until it is done.
            let until = lease_until.load(std::sync::atomic::Ordering::Acquire);
            if until < now_ms() + crate::config::LEASE_MARGIN.as_millis() as u64 {
                warn!("claim lease running out; stopping");
                break;
            }
            let Some((message, body)) = self.load(id, claim.token) else {
                // Gone or claimed again elsewhere: nothing to do for it.
                if let Ok(mut r) = remaining.lock() {
                    r.remove(&id);
                }
                continue;
            };
            let indexes: Vec<usize> = message
                .recipients
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_pending() && &r.destination() == dest)
                .map(|(i, _)| i)
                .collect();
            let mut content = message.trace_header.clone().into_bytes();
            content.extend_from_slice(&body);
            let needs_smtputf8 = message.params.smtputf8
                || !message.sender.is_ascii()
                || indexes
                    .iter()
                    .any(|&i| !message.recipients[i].address.is_ascii());
            let outgoing = Outgoing {
                sender: &message.sender,
                params: &message.params,
                recipients: indexes
                    .iter()
                    .map(|&i| {
                        (
                            message.recipients[i].address.as_str(),
                            &message.recipients[i].params,
                        )
                    })
                    .collect(),
                content: &content,
                needs_smtputf8,
            };
            let result = conn.send(&outgoing).await;
            let (outcomes, broken) = match result {
                Ok(results) => (
                    results
                        .into_iter()
                        .map(|r| match r {
                            RcptResult::Delivered(reply) => AttemptOutcome::Delivered { reply },
                            RcptResult::Failed(reply) => AttemptOutcome::Failed { reply },
                            RcptResult::Deferred(reply) => AttemptOutcome::Deferred { reply },
                        })
                        .collect::<Vec<_>>(),
                    None,
                ),
                Err(e) => {
                    // The outcome is unknown: retry later (a duplicate is possible, loss is not).
                    let reply = format!("4.4.2 {}[{}]: {e}", conn.host, conn.addr);
                    (
                        vec![AttemptOutcome::Deferred { reply }; indexes.len()],
                        Some(e),
                    )
                }
            };
            outcomes.iter().for_each(count_outcome);
            let delivered = outcomes
                .iter()
                .filter(|o| matches!(o, AttemptOutcome::Delivered { .. }))
                .count();
            debug!(queue_id = %id, delivered, of = indexes.len(), "attempt done");
            let _ = reports.send(MessageReport {
                id,
                recipients: indexes.iter().map(|&i| i as u32).zip(outcomes).collect(),
            });
            if let Ok(mut r) = remaining.lock() {
                r.remove(&id);
            }
            if let Some(e) = broken {
                warn!(error = %e, "connection lost; releasing the rest");
                return;
            }
        }
        conn.quit().await;
    }

    /// The message and its body, if it is still claimed under `token` here.
    fn load(&self, id: MessageId, token: u64) -> Option<(mxraft_queue::Message, Vec<u8>)> {
        let sm = self.node.state_machine();
        let message = {
            let live = sm.read();
            let m = live.queue().get(id)?;
            if m.claim.as_ref().map(|c| c.token) != Some(token) {
                return None;
            }
            m.clone()
        };
        let body = sm.body(id).ok().flatten()?;
        Some((message, body))
    }

    /// Reports the same outcome for every pending recipient of every message of the claim.
    fn report_all(
        &self,
        claim: &ClaimView,
        remaining: &Arc<Mutex<BTreeSet<MessageId>>>,
        reports: &mpsc::UnboundedSender<MessageReport>,
        outcome: &AttemptOutcome,
    ) {
        let sm = self.node.state_machine();
        let live = sm.read();
        for &id in &claim.ids {
            let Some(m) = live.queue().get(id) else {
                continue;
            };
            let recipients = m
                .recipients
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_pending() && r.destination() == claim.destination)
                .map(|(i, _)| (i as u32, outcome.clone()))
                .collect::<Vec<_>>();
            recipients.iter().for_each(|(_, o)| count_outcome(o));
            let _ = reports.send(MessageReport { id, recipients });
            if let Ok(mut r) = remaining.lock() {
                r.remove(&id);
            }
        }
    }

    /// Records that a destination did not answer, so the leader starts probing it.
    pub(crate) async fn mark_down(&self, destination: &str, error: String) {
        let at_ms = now_ms();
        let cmd = QueueCommand::SetDestination {
            destination: destination.to_owned(),
            up: false,
            at_ms,
            probed: false,
            error: Some(error),
        };
        self.propose_until(cmd, at_ms + 10_000).await;
    }
}

/// Counts one recipient's delivery attempt in `mxraft_delivery_attempts_total{result}`.
fn count_outcome(outcome: &AttemptOutcome) {
    let result = match outcome {
        AttemptOutcome::Delivered { .. } => "delivered",
        AttemptOutcome::Failed { .. } => "failed",
        AttemptOutcome::Deferred { .. } => "deferred",
    };
    metrics::counter!("mxraft_delivery_attempts_total", "result" => result).increment(1);
}
