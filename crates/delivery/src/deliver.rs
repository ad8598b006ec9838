//! Executing claims: every node delivers the claims the leader granted to it.
//!
//! A claim is a batch of messages for one destination, delivered over one connection. The
//! lease is kept on this node's monotonic clock: before sending anything the node renews the
//! claim (the leader stamps the renewal with its own clock), and from the moment it sent a
//! renewal that commits, it may deliver for `claim_lease − margin`. Renewals go on every third
//! of the lease while it works; every command and reply wait of the SMTP session is cut off at
//! that deadline ([`Cutoff`]), so a node that cannot reach the cluster stops before the leader
//! may grant its messages to another node. Results go back through Raft in `Report`s under the
//! claim's fencing token; messages not attempted (shutdown, lost connection, lease ended) are
//! released so another node can take them at once.
//!
//! The renewals, the delivery and the reports are three futures of one task: none outlives the
//! claim.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use mxraft_cluster::ProposeError;
use mxraft_queue::{
    AttemptOutcome, ClaimView, CommandResult, MessageId, MessageReport, QueueCommand, Report,
};

use crate::Delivery;
use crate::client::{ClientError, Connection, CutReason, Cutoff, Outgoing, RcptResult};
use crate::config::LEASE_MARGIN;
use crate::route::RouteError;

/// Reports sent in one `Report` at most.
const REPORT_BATCH: usize = 256;
/// How long a claim cut short by shutdown may take to release its messages.
const RELEASE_ON_SHUTDOWN: Duration = Duration::from_secs(3);

type Remaining = Arc<Mutex<BTreeSet<MessageId>>>;

fn ids_of(remaining: &Remaining) -> Vec<MessageId> {
    remaining
        .lock()
        .map(|r| r.iter().copied().collect())
        .unwrap_or_default()
}

fn forget(remaining: &Remaining, id: MessageId) {
    if let Ok(mut r) = remaining.lock() {
        r.remove(&id);
    }
}

impl Delivery {
    /// Proposes `cmd`, retrying until `until`.
    pub(crate) async fn propose_until(&self, cmd: QueueCommand, until: Instant) -> bool {
        loop {
            match self.node.propose(cmd.clone()).await {
                Ok(_) => return true,
                Err(e) => {
                    if Instant::now() >= until {
                        warn!(error = %e, command = %cmd, "giving up a proposal");
                        return false;
                    }
                    debug!(error = %e, "proposal failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Renews the claim on `ids`. On success returns the messages still held, and moves the
    /// deadline to `claim_lease − margin` after the renewal was sent.
    async fn renew(
        &self,
        token: u64,
        ids: Vec<MessageId>,
        deadline: &watch::Sender<Instant>,
    ) -> Result<Vec<MessageId>, ProposeError> {
        let lease = self.config.claim_lease;
        let sent = Instant::now();
        let cmd = QueueCommand::Renew {
            token,
            ids,
            // Replaced by the leader's clock as it appends the renewal.
            at_ms: self.node.clock().now_ms(),
            lease_ms: lease.as_millis() as u64,
        };
        match self.node.propose(cmd).await? {
            CommandResult::Renewed { held, .. } => {
                if !held.is_empty() {
                    let until = sent + lease.saturating_sub(LEASE_MARGIN);
                    deadline.send_if_modified(|d| {
                        let later = until > *d;
                        *d = (*d).max(until);
                        later
                    });
                }
                Ok(held)
            }
            other => Err(ProposeError::Invalid(format!(
                "unexpected answer to a renewal: {other:?}"
            ))),
        }
    }

    /// Renews the lease every third of it while messages remain; stops on a clock refusal
    /// (the deadline then stands and the delivery is cut off at it).
    async fn renew_loop(
        &self,
        token: u64,
        remaining: &Remaining,
        deadline: &watch::Sender<Instant>,
    ) {
        let every = self.config.claim_lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let ids = ids_of(remaining);
            if ids.is_empty() {
                return;
            }
            match self.renew(token, ids, deadline).await {
                Ok(held) => {
                    if let Ok(mut r) = remaining.lock() {
                        r.retain(|id| held.contains(id));
                    }
                }
                Err(ProposeError::ClockSkew(e)) => {
                    error!(error = %e, "the leader refuses this node's renewals; delivery stops");
                    return;
                }
                Err(e) => warn!(error = %e, "lease renewal failed; the deadline stands"),
            }
        }
    }

    /// Delivers one claim to its destination.
    pub(crate) async fn run_claim(self: Arc<Self>, claim: ClaimView, shutdown: CancellationToken) {
        let span = info_span!("delivery", token = claim.token, destination = %claim.destination, messages = claim.ids.len());
        async move {
            // Nothing may be sent before a renewal has anchored the lease on this node's clock:
            // the claim may be old news (a node catching up applies old Claim entries) and
            // this node's wall clock says nothing about the leader's.
            let (deadline_tx, deadline_rx) = watch::channel(Instant::now());
            let held = match self
                .renew(claim.token, claim.ids.clone(), &deadline_tx)
                .await
            {
                Ok(held) if !held.is_empty() => held,
                Ok(_) => {
                    debug!("the claim is no longer ours");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "the claim could not be renewed; not delivering it");
                    return;
                }
            };
            let remaining: Remaining = Arc::new(Mutex::new(held.iter().copied().collect()));
            let cutoff = Cutoff::new(deadline_rx.clone(), shutdown.clone());

            // Reports are committed in the background while delivery goes on.
            let (report_tx, report_rx) = mpsc::unbounded_channel::<MessageReport>();
            let work = async {
                self.deliver(&claim, &remaining, &report_tx, &cutoff).await;
                drop(report_tx);
            };
            let reports = self.report_loop(claim.token, report_rx, deadline_rx.clone());
            let renewals = async {
                self.renew_loop(claim.token, &remaining, &deadline_tx).await;
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = async { tokio::join!(work, reports) } => {}
                _ = renewals => {}
            }

            let left = ids_of(&remaining);
            if !left.is_empty() {
                debug!(count = left.len(), "releasing messages not delivered");
                let until = if shutdown.is_cancelled() {
                    Instant::now() + RELEASE_ON_SHUTDOWN
                } else {
                    (*deadline_rx.borrow()).max(Instant::now() + LEASE_MARGIN)
                };
                let release = QueueCommand::Release {
                    token: claim.token,
                    ids: left,
                };
                let _ = tokio::time::timeout_at(until, self.propose_until(release, until)).await;
            }
        }
        .instrument(span)
        .await
    }

    async fn report_loop(
        &self,
        token: u64,
        mut rx: mpsc::UnboundedReceiver<MessageReport>,
        deadline: watch::Receiver<Instant>,
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
                at_ms: self.node.clock().now_ms(),
                reporting_mta: self.hostname.clone(),
                messages,
            });
            // Keep trying while the claim can still be ours (until its lease ends: the
            // deadline plus the margin); after that the report would be ignored anyway (its
            // token is stale).
            let until = (*deadline.borrow() + LEASE_MARGIN).max(Instant::now() + LEASE_MARGIN);
            self.propose_until(report, until).await;
        }
    }

    async fn deliver(
        &self,
        claim: &ClaimView,
        remaining: &Remaining,
        reports: &mpsc::UnboundedSender<MessageReport>,
        cutoff: &Cutoff,
    ) {
        let Some(mut conn) = self.connect(claim, remaining, reports, cutoff).await else {
            return;
        };
        for &id in &claim.ids {
            if let Some(why) = cutoff.reason() {
                count_cut(why);
                conn.quit().await;
                return;
            }
            if !ids_of(remaining).contains(&id) {
                continue;
            }
            let Some((message, content)) = self.load(id, claim.token).await else {
                // Gone or claimed again elsewhere: nothing to do for it.
                forget(remaining, id);
                continue;
            };
            match send_message(&mut conn, &claim.destination, &message, &content).await {
                Sent::Reported(report, broken) => {
                    let _ = reports.send(report);
                    forget(remaining, id);
                    if let Some(e) = broken {
                        warn!(error = %e, "connection lost; releasing the rest");
                        return;
                    }
                }
                Sent::Cut(report) => {
                    if let Some(report) = report {
                        let _ = reports.send(report);
                        forget(remaining, id);
                    }
                    conn.abort().await;
                    return;
                }
            }
        }
        conn.quit().await;
    }

    /// Resolves the claim's destination and connects to the first host that answers (with
    /// STARTTLS when offered, in plain text when that fails). When none does, every message
    /// of the claim is deferred and the destination marked down; when one does, it is marked
    /// up.
    async fn connect(
        &self,
        claim: &ClaimView,
        remaining: &Remaining,
        reports: &mpsc::UnboundedSender<MessageReport>,
        cutoff: &Cutoff,
    ) -> Option<Connection> {
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
                return None;
            }
        };
        let timeouts = self.config.timeouts();
        let mut last_error = String::new();
        for (host, addr) in &addrs {
            if cutoff.reason().is_some() {
                return None;
            }
            let tls = self.tls.as_ref();
            let mut opened =
                Connection::open(*addr, host, &self.hostname, tls, &timeouts, cutoff).await;
            if let Err(ClientError::Tls(e)) = &opened {
                // Opportunistic TLS failed: try the same host in plain text.
                warn!(host = %host, addr = %addr, error = %e, "TLS failed; retrying without TLS");
                opened =
                    Connection::open(*addr, host, &self.hostname, None, &timeouts, cutoff).await;
            }
            match opened {
                Ok(conn) => {
                    debug!(host = %conn.host, addr = %conn.addr, tls = conn.is_tls(), "connected");
                    self.mark_up(dest).await;
                    return Some(conn);
                }
                Err(ClientError::Cut(why)) => {
                    count_cut(why);
                    return None;
                }
                Err(e) => last_error = format!("{host}[{addr}]: {e}"),
            }
        }
        info!(error = %last_error, "primary not reachable");
        let reply = format!("4.4.1 {last_error}");
        let outcome = AttemptOutcome::Deferred {
            reply: reply.clone(),
        };
        self.report_all(claim, remaining, reports, &outcome);
        self.mark_down(dest, reply).await;
        None
    }

    /// Records that the primary answers, unless it is already known to (a new destination,
    /// or one believed down).
    async fn mark_up(&self, dest: &str) {
        let known_up = {
            let sm = self.node.state_machine();
            let live = sm.read();
            live.queue().destination(dest).is_some_and(|d| d.up)
        };
        if known_up {
            return;
        }
        let cmd = QueueCommand::SetDestination {
            destination: dest.to_owned(),
            up: true,
            at_ms: self.node.clock().now_ms(),
            probed: false,
            error: None,
        };
        if let Err(e) = self.node.propose(cmd).await {
            debug!(error = %e, "destination state not recorded");
        }
    }

    /// The message and its content as delivered (trace header and body), if it is still
    /// claimed under `token` here.
    async fn load(
        &self,
        id: MessageId,
        token: u64,
    ) -> Option<(mxraft_queue::Message, bytes::Bytes)> {
        let sm = self.node.state_machine();
        let message = {
            let live = sm.read();
            let m = live.queue().get(id)?;
            if m.claim.as_ref().map(|c| c.token) != Some(token) {
                return None;
            }
            m.clone()
        };
        match sm.body_async(id).await {
            Ok(Some(stored)) => {
                let content = message.content(stored);
                Some((message, content))
            }
            Ok(None) => None,
            Err(e) => {
                error!(queue_id = %id, error = %e, "cannot read the body; not delivering it");
                None
            }
        }
    }

    /// Reports the same outcome for every pending recipient of every message of the claim.
    fn report_all(
        &self,
        claim: &ClaimView,
        remaining: &Remaining,
        reports: &mpsc::UnboundedSender<MessageReport>,
        outcome: &AttemptOutcome,
    ) {
        let sm = self.node.state_machine();
        let live = sm.read();
        for &id in &claim.ids {
            let Some(m) = live.queue().get(id) else {
                continue;
            };
            let started = Instant::now();
            let pending: Vec<(usize, &str)> = m
                .recipients
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_pending() && r.destination() == claim.destination)
                .map(|(i, r)| (i, r.address.as_str()))
                .collect();
            let outcomes = vec![outcome.clone(); pending.len()];
            outcomes.iter().for_each(count_outcome);
            let addresses: Vec<&str> = pending.iter().map(|(_, a)| *a).collect();
            log_attempt(id, &m.sender, &addresses, "", &outcomes, started);
            let recipients = pending
                .iter()
                .map(|(i, _)| *i as u32)
                .zip(outcomes)
                .collect::<Vec<_>>();
            let _ = reports.send(MessageReport { id, recipients });
            forget(remaining, id);
        }
    }

    /// Records that a destination did not answer, so the leader starts probing it.
    pub(crate) async fn mark_down(&self, destination: &str, error: String) {
        let at_ms = self.node.clock().now_ms();
        let cmd = QueueCommand::SetDestination {
            destination: destination.to_owned(),
            up: false,
            at_ms,
            probed: false,
            error: Some(error),
        };
        self.propose_until(cmd, Instant::now() + Duration::from_secs(10))
            .await;
    }
}

/// Counts a delivery cut short in `mxraft_delivery_cut_total{reason}`.
fn count_cut(why: CutReason) {
    let reason = match why {
        CutReason::LeaseEnded => "lease_ended",
        CutReason::Shutdown => "shutdown",
    };
    metrics::counter!("mxraft_delivery_cut_total", "reason" => reason).increment(1);
}

/// Counts one recipient's delivery attempt in `mxraft_delivery_attempts_total{result}`.
/// The one line of a delivery attempt of message `id` to `recipients` (addresses), through
/// `via` (`host[addr]`, empty when no host answered): what each recipient got, and the last
/// reply, so a message can be followed across nodes by its id.
fn log_attempt(
    id: MessageId,
    sender: &str,
    recipients: &[&str],
    via: &str,
    outcomes: &[AttemptOutcome],
    started: Instant,
) {
    let (mut delivered, mut deferred, mut failed) = (0usize, 0usize, 0usize);
    for o in outcomes {
        match o {
            AttemptOutcome::Delivered { .. } => delivered += 1,
            AttemptOutcome::Deferred { .. } => deferred += 1,
            AttemptOutcome::Failed { .. } => failed += 1,
        }
    }
    let reply = outcomes.last().map_or("", AttemptOutcome::reply);
    info!(
        queue_id = %id,
        from = %sender,
        to = %recipients.join(","),
        via,
        delivered,
        deferred,
        failed,
        reply,
        ms = started.elapsed().as_millis() as u64,
        "delivery attempt"
    );
}

fn count_outcome(outcome: &AttemptOutcome) {
    let result = match outcome {
        AttemptOutcome::Delivered { .. } => "delivered",
        AttemptOutcome::Failed { .. } => "failed",
        AttemptOutcome::Deferred { .. } => "deferred",
    };
    metrics::counter!("mxraft_delivery_attempts_total", "result" => result).increment(1);
}

/// What one message's transaction came to.
enum Sent {
    /// Every recipient attempted has a result; the error, if the connection broke after it.
    Reported(MessageReport, Option<ClientError>),
    /// The cutoff passed during the transaction; a report when the outcome is in doubt (the
    /// final dot went out), none when the transaction was aborted before its end.
    Cut(Option<MessageReport>),
}

/// Sends `message` (its `content`: trace header and body) to its pending recipients at `dest`
/// over `conn`.
async fn send_message(
    conn: &mut Connection,
    dest: &str,
    message: &mxraft_queue::Message,
    content: &[u8],
) -> Sent {
    let id = message.id;
    let indexes: Vec<usize> = message
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_pending() && r.destination() == dest)
        .map(|(i, _)| i)
        .collect();
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
                let r = &message.recipients[i];
                (r.address.as_str(), &r.params)
            })
            .collect(),
        content,
        needs_smtputf8,
    };
    let report = |outcomes: Vec<AttemptOutcome>| MessageReport {
        id,
        recipients: indexes.iter().map(|&i| i as u32).zip(outcomes).collect(),
    };
    let deferred = |reply: String| vec![AttemptOutcome::Deferred { reply }; indexes.len()];
    let started = Instant::now();
    let via = format!("{}[{}]", conn.host, conn.addr);
    let log = |outcomes: &[AttemptOutcome]| {
        log_attempt(
            id,
            &message.sender,
            &outgoing
                .recipients
                .iter()
                .map(|(a, _)| *a)
                .collect::<Vec<_>>(),
            &via,
            outcomes,
            started,
        )
    };
    match conn.send(&outgoing).await {
        Err(ClientError::Cut(why)) => {
            count_cut(why);
            if !conn.in_doubt() {
                info!(queue_id = %id, reason = ?why, "transaction aborted before its end; the message stays queued");
                return Sent::Cut(None);
            }
            // The final dot went out: the primary may have the message. It is retried later,
            // so a duplicate is possible; loss is not.
            warn!(queue_id = %id, reason = ?why, "cut off waiting for the reply to the final dot");
            let reply = format!(
                "4.4.2 {}[{}]: no reply to the end of data before the claim ended",
                conn.host, conn.addr
            );
            let outcomes = deferred(reply);
            log(&outcomes);
            Sent::Cut(Some(report(outcomes)))
        }
        Err(e) => {
            // The outcome is unknown: retry later (a duplicate is possible, loss is not).
            let reply = format!("4.4.2 {}[{}]: {e}", conn.host, conn.addr);
            let outcomes = deferred(reply);
            outcomes.iter().for_each(count_outcome);
            log(&outcomes);
            Sent::Reported(report(outcomes), Some(e))
        }
        Ok(results) => {
            let outcomes: Vec<AttemptOutcome> = results
                .into_iter()
                .map(|r| match r {
                    RcptResult::Delivered(reply) => AttemptOutcome::Delivered { reply },
                    RcptResult::Failed(reply) => AttemptOutcome::Failed { reply },
                    RcptResult::Deferred(reply) => AttemptOutcome::Deferred { reply },
                })
                .collect();
            outcomes.iter().for_each(count_outcome);
            log(&outcomes);
            Sent::Reported(report(outcomes), None)
        }
    }
}
