//! The queue state and the one function that changes it.
//!
//! [`QueueState::apply`] takes the log index and a [`QueueCommand`] and returns an [`Outcome`]:
//! the [`CommandResult`] for the proposer and the [`Change`]s the storage layer must write in
//! the same batch as the new `last_applied`. The state is the in-memory index of every queued
//! message and destination; storage rebuilds it with [`QueueState::insert_loaded`] and
//! [`QueueState::set_destination_loaded`] on start.
//!
//! Besides the messages, the state keeps indexes that the delivery scheduler reads: per
//! destination, the messages with pending recipients ordered by due time, and the open claims
//! by fencing token. They are derived from the messages and never stored.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::caches::{
    BoundedCache, GREYLIST_PER_DOMAIN, GREYLIST_PER_NETWORK, GroupBy, RecentIds,
    VERIFIED_PER_DOMAIN,
};
use crate::command::{
    CommandResult, Enqueue, FlushTarget, Outcome as AttemptOutcome, QueueCommand, Report,
};
use crate::dsn::{self, DsnContext, DsnKind};
use crate::id::MessageId;
use crate::message::{
    Claim, Destination, MailParams, Message, RcptParams, Recipient, RecipientState,
};
use crate::policy;

/// Node id used in the queue ids of DSNs this cluster generates (no real node may use it).
pub const DSN_NODE: u64 = 0xFFFF;

/// Reads a message's stored body (without the trace header): `Ok(None)` when there is none,
/// `Err` when storage could not read it.
pub type BodyLookup<'a> = &'a dyn Fn(MessageId) -> Result<Option<Bytes>, BodyError>;

/// A stored body could not be read while applying a command. Applying must then fail as a
/// whole: rendering a DSN without the body would make this node's state differ from the
/// others'.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the body of {id}: {reason}")]
pub struct BodyError {
    /// The message.
    pub id: MessageId,
    /// What storage said.
    pub reason: String,
}

/// A storage write that applying a command requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new message: store its metadata (read it with [`QueueState::get`]) and this body.
    Inserted {
        /// The new message.
        id: MessageId,
        /// Its body.
        body: Bytes,
    },
    /// The metadata of an existing message changed; store it again.
    Updated(MessageId),
    /// The message and its body are gone.
    Removed(MessageId),
    /// A destination's state changed; store it again.
    Destination(String),
    /// A recipient-table entry was added or removed (look it up with
    /// [`QueueState::has_recipient_entry`]).
    RecipientEntry(String),
    /// A verification result changed or was dropped (look it up with [`QueueState::verified`]).
    Verified(String),
    /// A greylisting triplet was added or dropped (look it up with [`QueueState::greylisted`]).
    Greylist(String),
    /// The id of a message that left the queue was remembered or forgotten (look it up with
    /// [`QueueState::recently_removed`]).
    RecentId(MessageId),
    /// Entries a bounded cache dropped to stay within its bound (nothing more to write: the
    /// dropped entries come as their own changes); counted in a metric.
    Evicted {
        /// `greylist` or `verified`.
        cache: &'static str,
        /// How many.
        count: u32,
    },
}

/// The result of applying one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What the proposer is told.
    pub result: CommandResult,
    /// What storage must write, in order.
    pub changes: Vec<Change>,
}

/// Totals over the whole queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Number of queued messages.
    pub messages: u64,
    /// Sum of the message sizes (trace header plus body).
    pub bytes: u64,
    /// Receive time of the oldest queued message, in milliseconds since the Unix epoch.
    pub oldest_received_at_ms: Option<u64>,
}

/// An open claim, as the delivery side sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimView {
    /// The fencing token.
    pub token: u64,
    /// The delivering node.
    pub node: u64,
    /// The destination.
    pub destination: String,
    /// The lease end of the claim (earliest over its messages).
    pub lease_until_ms: u64,
    /// The messages still held under it.
    pub ids: Vec<MessageId>,
}

/// Every queued message and destination, with the scheduler's indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueState {
    messages: BTreeMap<MessageId, Message>,
    by_time: BTreeSet<(u64, MessageId)>,
    bytes: u64,
    /// Per destination: `(due time, id)` of messages with pending recipients there, not held.
    due: BTreeMap<String, BTreeSet<(u64, MessageId)>>,
    due_entries: BTreeMap<MessageId, Vec<(String, u64)>>,
    /// Messages under each claim token.
    claims: BTreeMap<u64, BTreeSet<MessageId>>,
    destinations: BTreeMap<String, Destination>,
    /// The recipient table: normalized addresses and `@domain` catch-alls.
    recipients: BTreeSet<String>,
    /// Verification results: address → (when verified, valid).
    verified: BoundedCache<bool>,
    /// Greylisting: triplet → when it was first seen.
    greylist: BoundedCache<()>,
    /// Messages that left the queue recently, so a repeated `Enqueue` does not queue them again.
    recent: RecentIds,
}

impl Default for QueueState {
    fn default() -> Self {
        QueueState {
            messages: BTreeMap::new(),
            by_time: BTreeSet::new(),
            bytes: 0,
            due: BTreeMap::new(),
            due_entries: BTreeMap::new(),
            claims: BTreeMap::new(),
            destinations: BTreeMap::new(),
            recipients: BTreeSet::new(),
            verified: BoundedCache::new(&[(GroupBy::Domain, VERIFIED_PER_DOMAIN)]),
            greylist: BoundedCache::new(&[
                (GroupBy::Network, GREYLIST_PER_NETWORK),
                (GroupBy::Domain, GREYLIST_PER_DOMAIN),
            ]),
            recent: RecentIds::default(),
        }
    }
}

/// What one `apply` accumulates.
struct Step<'a> {
    index: u64,
    changes: Vec<Change>,
    dsns: u64,
    bodies: BodyLookup<'a>,
    /// The first body that could not be read; the whole apply fails with it.
    error: Option<BodyError>,
}

impl Step<'_> {
    fn evicted(&mut self, cache: &'static str, keys: Vec<String>, change: fn(String) -> Change) {
        if keys.is_empty() {
            return;
        }
        self.changes.push(Change::Evicted {
            cache,
            count: keys.len() as u32,
        });
        self.changes.extend(keys.into_iter().map(change));
    }

    fn updated(&mut self, id: MessageId) {
        if self.changes.last() != Some(&Change::Updated(id)) {
            self.changes.push(Change::Updated(id));
        }
    }
}

impl QueueState {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the command at log index `index`. `bodies` reads stored bodies, for the DSNs
    /// that return the original message. A body that cannot be read fails the command: the
    /// caller must then stop applying (this state is no longer the others'), never go on.
    pub fn apply(
        &mut self,
        index: u64,
        cmd: QueueCommand,
        bodies: BodyLookup<'_>,
    ) -> Result<Outcome, BodyError> {
        let mut step = Step {
            index,
            changes: Vec::new(),
            dsns: 0,
            bodies,
            error: None,
        };
        let result = match cmd {
            QueueCommand::Enqueue(e) => self.enqueue(e, &mut step),
            QueueCommand::Delete { id, at_ms } => {
                let existed = self.retire(id, at_ms, &mut step);
                CommandResult::Deleted { id, existed }
            }
            QueueCommand::Claim {
                ids,
                node,
                destination,
                at_ms,
                lease_ms,
            } => self.claim(ids, node, destination, at_ms, lease_ms, &mut step),
            QueueCommand::Renew {
                token,
                ids,
                at_ms,
                lease_ms,
            } => {
                let until = at_ms.saturating_add(lease_ms);
                let mut held = Vec::new();
                self.each(&ids, &mut step, |m, _| match &mut m.claim {
                    Some(c) if c.token == token => {
                        held.push(m.id);
                        // Never shortened: a renewal stamped by a leader whose clock is
                        // behind the granting one's must not end a lease early.
                        let longer = until > c.lease_until_ms;
                        c.lease_until_ms = c.lease_until_ms.max(until);
                        longer
                    }
                    _ => false,
                });
                CommandResult::Renewed { token, held }
            }
            QueueCommand::Report(report) => self.report(report, &mut step),
            QueueCommand::Release { token, ids } => {
                let changed = self.each(&ids, &mut step, |m, _| {
                    if m.claim.as_ref().is_some_and(|c| c.token == token) {
                        m.claim = None;
                        true
                    } else {
                        false
                    }
                });
                CommandResult::Applied { changed }
            }
            QueueCommand::Expire {
                ids,
                at_ms,
                reporting_mta,
            } => {
                let changed = self.fail_pending(&ids, at_ms, &reporting_mta, &mut step, |r| {
                    let why = r
                        .last_error
                        .as_deref()
                        .unwrap_or("the primary was not reachable");
                    format!("4.4.7 Delivery time expired; last error: {why}")
                });
                CommandResult::Applied { changed }
            }
            QueueCommand::DelayNotice {
                ids,
                at_ms,
                reporting_mta,
            } => self.delay_notice(&ids, at_ms, &reporting_mta, &mut step),
            QueueCommand::Hold { id }
            | QueueCommand::Resume { id, .. }
            | QueueCommand::Bounce { id, .. }
                if !self.messages.contains_key(&id) =>
            {
                CommandResult::NotQueued { id }
            }
            QueueCommand::Hold { id } => {
                let changed = self.each(&[id], &mut step, |m, _| {
                    !std::mem::replace(&mut m.held, true)
                });
                CommandResult::Applied { changed }
            }
            QueueCommand::Resume { id, at_ms } => {
                let changed = self.each(&[id], &mut step, |m, _| {
                    let was_held = std::mem::replace(&mut m.held, false);
                    for r in m.recipients.iter_mut().filter(|r| r.is_pending()) {
                        r.next_attempt_ms = at_ms;
                    }
                    was_held
                });
                CommandResult::Applied { changed }
            }
            QueueCommand::Bounce {
                id,
                at_ms,
                reporting_mta,
            } => {
                let changed = self.fail_pending(&[id], at_ms, &reporting_mta, &mut step, |_| {
                    "5.0.0 Returned to the sender by the administrator".to_owned()
                });
                CommandResult::Applied { changed }
            }
            QueueCommand::Reschedule { target, at_ms } => self.reschedule(target, at_ms, &mut step),
            QueueCommand::SetDestination {
                destination,
                up,
                at_ms,
                probed,
                error,
            } => self.set_destination(destination, up, at_ms, probed, error, &mut step),
            QueueCommand::RecipientsAdd { entries } => {
                let mut changed = 0;
                for e in entries {
                    if self.recipients.insert(e.clone()) {
                        step.changes.push(Change::RecipientEntry(e));
                        changed += 1;
                    }
                }
                CommandResult::Applied { changed }
            }
            QueueCommand::RecipientsRemove { entries } => {
                let mut changed = 0;
                for e in entries {
                    if self.recipients.remove(&e) {
                        step.changes.push(Change::RecipientEntry(e));
                        changed += 1;
                    }
                }
                CommandResult::Applied { changed }
            }
            QueueCommand::GreylistSeen { key, at_ms } => {
                if self.greylist.contains(&key) {
                    CommandResult::Applied { changed: 0 }
                } else {
                    let evicted = self.greylist.insert(key.clone(), at_ms, ());
                    step.changes.push(Change::Greylist(key));
                    step.evicted("greylist", evicted, Change::Greylist);
                    CommandResult::Applied { changed: 1 }
                }
            }
            QueueCommand::PruneCaches { before_ms } => {
                let old_triplets = self.greylist.older_than(before_ms);
                let old_verified = self.verified.older_than(before_ms);
                let changed = (old_triplets.len() + old_verified.len()) as u32;
                for k in old_triplets {
                    self.greylist.remove(&k);
                    step.changes.push(Change::Greylist(k));
                }
                for k in old_verified {
                    self.verified.remove(&k);
                    step.changes.push(Change::Verified(k));
                }
                CommandResult::Applied { changed }
            }
            QueueCommand::Verified {
                address,
                valid,
                at_ms,
            } => {
                let evicted = self.verified.insert(address.clone(), at_ms, valid);
                step.changes.push(Change::Verified(address));
                step.evicted("verified", evicted, Change::Verified);
                CommandResult::Applied { changed: 1 }
            }
        };
        match step.error {
            Some(e) => Err(e),
            None => Ok(Outcome {
                result,
                changes: step.changes,
            }),
        }
    }

    fn enqueue(&mut self, e: Enqueue, step: &mut Step<'_>) -> CommandResult {
        let id = e.id;
        if self.messages.contains_key(&id) || self.recent.contains(id) {
            return CommandResult::Enqueued {
                id,
                duplicate: true,
            };
        }
        let message = Message {
            id,
            received_at_ms: e.received_at_ms,
            received_by: e.received_by,
            sender: e.sender,
            params: e.params,
            recipients: e
                .recipients
                .into_iter()
                .map(|(address, params)| Recipient::pending(address, params, e.received_at_ms))
                .collect(),
            trace_header: e.trace_header,
            body_size: e.body.len() as u64,
            held: false,
            claim: None,
            delay_notified: false,
        };
        self.insert_loaded(message);
        step.changes.push(Change::Inserted { id, body: e.body });
        CommandResult::Enqueued {
            id,
            duplicate: false,
        }
    }

    fn claim(
        &mut self,
        ids: Vec<MessageId>,
        node: u64,
        destination: String,
        at_ms: u64,
        lease_ms: u64,
        step: &mut Step<'_>,
    ) -> CommandResult {
        let token = step.index;
        let mut granted = Vec::new();
        for id in ids {
            let Some(m) = self.messages.get_mut(&id) else {
                continue;
            };
            let eligible = !m.held
                && m.live_claim(at_ms).is_none()
                && m.recipients
                    .iter()
                    .any(|r| r.is_pending() && r.destination() == destination);
            if !eligible {
                continue;
            }
            let old = m.claim.replace(Claim {
                node,
                token,
                destination: destination.clone(),
                lease_until_ms: at_ms.saturating_add(lease_ms),
            });
            if let Some(old) = old {
                self.unlink_claim(old.token, id);
            }
            self.claims.entry(token).or_default().insert(id);
            step.updated(id);
            granted.push(id);
        }
        CommandResult::Claimed { token, granted }
    }

    fn report(&mut self, report: Report, step: &mut Step<'_>) -> CommandResult {
        let mut changed = 0;
        for mr in report.messages {
            let Some(m) = self.messages.get_mut(&mr.id) else {
                continue;
            };
            if m.claim.as_ref().map(|c| c.token) != Some(report.token) {
                // A stale report from a node whose claim expired and was granted again.
                continue;
            }
            for (index, outcome) in mr.recipients {
                let Some(r) = m.recipients.get_mut(index as usize) else {
                    continue;
                };
                if !r.is_pending() {
                    continue;
                }
                match outcome {
                    AttemptOutcome::Delivered { reply } => {
                        r.state = RecipientState::Delivered {
                            at_ms: report.at_ms,
                            reply,
                        }
                    }
                    AttemptOutcome::Failed { reply } => {
                        r.state = RecipientState::Failed {
                            at_ms: report.at_ms,
                            reply,
                        }
                    }
                    AttemptOutcome::Deferred { reply } => {
                        r.attempts = r.attempts.saturating_add(1);
                        r.next_attempt_ms =
                            report.at_ms.saturating_add(policy::backoff_ms(r.attempts));
                        r.last_error = Some(reply);
                    }
                }
            }
            m.claim = None;
            self.unlink_claim(report.token, mr.id);
            changed += 1;
            self.settle(mr.id, report.at_ms, &report.reporting_mta, step);
        }
        CommandResult::Applied { changed }
    }

    /// Fails every pending recipient of `ids` with the reason `why` gives, then settles them.
    fn fail_pending(
        &mut self,
        ids: &[MessageId],
        at_ms: u64,
        reporting_mta: &str,
        step: &mut Step<'_>,
        why: impl Fn(&Recipient) -> String,
    ) -> u32 {
        let mut changed = 0;
        for &id in ids {
            let Some(m) = self.messages.get_mut(&id) else {
                continue;
            };
            if !m.has_pending() {
                continue;
            }
            for r in m.recipients.iter_mut().filter(|r| r.is_pending()) {
                r.state = RecipientState::Failed {
                    at_ms,
                    reply: why(r),
                };
            }
            if let Some(c) = m.claim.take() {
                self.unlink_claim(c.token, id);
            }
            changed += 1;
            self.settle(id, at_ms, reporting_mta, step);
        }
        changed
    }

    /// After recipients changed: sends the failure DSN for newly failed recipients, removes the
    /// message when nothing is pending, and refreshes the indexes.
    fn settle(&mut self, id: MessageId, at_ms: u64, reporting_mta: &str, step: &mut Step<'_>) {
        let Some(m) = self.messages.get_mut(&id) else {
            return;
        };
        let newly_failed: Vec<usize> = m
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.state, RecipientState::Failed { .. }) && !r.notified)
            .map(|(i, _)| i)
            .collect();
        for &i in &newly_failed {
            m.recipients[i].notified = true;
        }
        let to_report: Vec<usize> = newly_failed
            .into_iter()
            .filter(|&i| m.recipients[i].params.wants_failure())
            .collect();
        if !to_report.is_empty() && !m.sender.is_empty() {
            let reasons = to_report
                .iter()
                .map(|&i| match &m.recipients[i].state {
                    RecipientState::Failed { reply, .. } => reply.clone(),
                    _ => String::new(),
                })
                .collect::<Vec<_>>();
            let message = m.clone();
            self.queue_dsn(
                DsnKind::Failure,
                &message,
                &to_report,
                &reasons,
                at_ms,
                reporting_mta,
                step,
            );
        }
        let done = self.messages.get(&id).is_some_and(|m| !m.has_pending());
        if done {
            self.retire(id, at_ms, step);
        } else {
            self.reindex(id);
            step.updated(id);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn queue_dsn(
        &mut self,
        kind: DsnKind,
        original: &Message,
        indexes: &[usize],
        reasons: &[String],
        at_ms: u64,
        reporting_mta: &str,
        step: &mut Step<'_>,
    ) {
        let dsn_id = MessageId::new(at_ms, DSN_NODE, (step.index << 16) | step.dsns);
        step.dsns += 1;
        let body = match (step.bodies)(original.id) {
            Ok(body) => body,
            Err(e) => {
                step.error.get_or_insert(e);
                None
            }
        };
        let content = body.map(|body| {
            let mut full = original.trace_header.clone().into_bytes();
            full.extend_from_slice(&body);
            full
        });
        let ctx = DsnContext {
            dsn_id,
            reporting_mta,
            at_ms,
        };
        let body = dsn::render(kind, original, indexes, reasons, content.as_deref(), &ctx);
        let date = chrono::DateTime::from_timestamp_millis(at_ms as i64)
            .unwrap_or_default()
            .to_rfc2822();
        let enqueue = Enqueue {
            id: dsn_id,
            received_at_ms: at_ms,
            received_by: 0,
            sender: String::new(),
            params: MailParams::default(),
            recipients: vec![(original.sender.clone(), RcptParams::default())],
            trace_header: format!(
                "Received: by {reporting_mta} (mxraft) id {dsn_id};\r\n\t{date}\r\n"
            ),
            body: Bytes::from(body),
        };
        self.enqueue(enqueue, step);
    }

    fn delay_notice(
        &mut self,
        ids: &[MessageId],
        at_ms: u64,
        reporting_mta: &str,
        step: &mut Step<'_>,
    ) -> CommandResult {
        let mut changed = 0;
        for &id in ids {
            let Some(m) = self.messages.get_mut(&id) else {
                continue;
            };
            if m.delay_notified {
                continue;
            }
            m.delay_notified = true;
            changed += 1;
            step.updated(id);
            let delayed: Vec<usize> = m
                .recipients
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_pending() && r.params.wants_delay())
                .map(|(i, _)| i)
                .collect();
            if delayed.is_empty() || m.sender.is_empty() {
                continue;
            }
            let reasons = delayed
                .iter()
                .map(|&i| {
                    let why = m.recipients[i]
                        .last_error
                        .as_deref()
                        .unwrap_or("the primary is not reachable");
                    format!("4.4.1 Delivery delayed; last error: {why}")
                })
                .collect::<Vec<_>>();
            let message = m.clone();
            self.queue_dsn(
                DsnKind::Delay,
                &message,
                &delayed,
                &reasons,
                at_ms,
                reporting_mta,
                step,
            );
        }
        CommandResult::Applied { changed }
    }

    fn reschedule(
        &mut self,
        target: FlushTarget,
        at_ms: u64,
        step: &mut Step<'_>,
    ) -> CommandResult {
        let ids: Vec<MessageId> = match &target {
            FlushTarget::All => self.messages.keys().copied().collect(),
            FlushTarget::Message(id) => vec![*id],
            FlushTarget::Destination(d) => self
                .due
                .get(d)
                .map(|set| set.iter().map(|(_, id)| *id).collect())
                .unwrap_or_default(),
        };
        let mut destinations = BTreeSet::new();
        let changed = self.each(&ids, step, |m, _| {
            let mut touched = false;
            for r in m.recipients.iter_mut().filter(|r| r.is_pending()) {
                let d = r.destination();
                if let FlushTarget::Destination(want) = &target
                    && &d != want
                {
                    continue;
                }
                r.next_attempt_ms = r.next_attempt_ms.min(at_ms);
                destinations.insert(d);
                touched = true;
            }
            touched
        });
        if let FlushTarget::Destination(d) = &target {
            destinations.insert(d.clone());
        }
        // A flush means "try now": a destination believed down is tried again.
        for d in destinations {
            if self.destinations.get(&d).is_some_and(|s| !s.up) {
                self.set_destination(d, true, at_ms, false, None, step);
            }
        }
        CommandResult::Applied { changed }
    }

    fn set_destination(
        &mut self,
        destination: String,
        up: bool,
        at_ms: u64,
        probed: bool,
        error: Option<String>,
        step: &mut Step<'_>,
    ) -> CommandResult {
        let was_up = self.destination_up(&destination);
        let entry = self
            .destinations
            .entry(destination.clone())
            .or_insert(Destination {
                up,
                since_ms: at_ms,
                last_probe_ms: None,
                last_error: None,
            });
        if entry.up != up {
            entry.since_ms = at_ms;
        }
        entry.up = up;
        if probed {
            entry.last_probe_ms = Some(at_ms);
        }
        if error.is_some() {
            entry.last_error = error;
        }
        step.changes.push(Change::Destination(destination.clone()));
        let mut changed = 0;
        if up && !was_up {
            // The primary is back: everything waiting for it is due now.
            let ids: Vec<MessageId> = self
                .due
                .get(&destination)
                .map(|set| set.iter().map(|(_, id)| *id).collect())
                .unwrap_or_default();
            changed = self.each(&ids, step, |m, _| {
                let mut touched = false;
                for r in m.recipients.iter_mut() {
                    if r.is_pending() && r.destination() == destination && r.next_attempt_ms > at_ms
                    {
                        r.next_attempt_ms = at_ms;
                        touched = true;
                    }
                }
                touched
            });
        }
        CommandResult::Applied { changed }
    }

    /// Runs `f` on each existing message of `ids`; messages for which it returns true are
    /// re-indexed and written back. Returns how many changed.
    fn each(
        &mut self,
        ids: &[MessageId],
        step: &mut Step<'_>,
        mut f: impl FnMut(&mut Message, &Step<'_>) -> bool,
    ) -> u32 {
        let mut changed = 0;
        for &id in ids {
            let Some(m) = self.messages.get_mut(&id) else {
                continue;
            };
            let claim_before = m.claim.as_ref().map(|c| c.token);
            if f(m, step) {
                let claim_after = m.claim.as_ref().map(|c| c.token);
                if claim_before != claim_after
                    && let Some(t) = claim_before
                {
                    self.unlink_claim(t, id);
                }
                self.reindex(id);
                step.updated(id);
                changed += 1;
            }
        }
        changed
    }

    fn unlink_claim(&mut self, token: u64, id: MessageId) {
        if let Some(set) = self.claims.get_mut(&token) {
            set.remove(&id);
            if set.is_empty() {
                self.claims.remove(&token);
            }
        }
    }

    fn unindex(&mut self, id: MessageId) {
        if let Some(entries) = self.due_entries.remove(&id) {
            for (dest, due) in entries {
                if let Some(set) = self.due.get_mut(&dest) {
                    set.remove(&(due, id));
                    if set.is_empty() {
                        self.due.remove(&dest);
                    }
                }
            }
        }
    }

    fn reindex(&mut self, id: MessageId) {
        self.unindex(id);
        let Some(m) = self.messages.get(&id) else {
            return;
        };
        if m.held {
            return;
        }
        let mut per_dest: BTreeMap<String, u64> = BTreeMap::new();
        for r in m.recipients.iter().filter(|r| r.is_pending()) {
            let due = per_dest.entry(r.destination()).or_insert(u64::MAX);
            *due = (*due).min(r.next_attempt_ms);
        }
        let entries: Vec<(String, u64)> = per_dest.into_iter().collect();
        for (dest, due) in &entries {
            self.due.entry(dest.clone()).or_default().insert((*due, id));
        }
        if !entries.is_empty() {
            self.due_entries.insert(id, entries);
        }
    }

    /// Removes a message from the queue for good at `at_ms`, remembering its id for a while.
    fn retire(&mut self, id: MessageId, at_ms: u64, step: &mut Step<'_>) -> bool {
        if !self.remove(id) {
            return false;
        }
        step.changes.push(Change::Removed(id));
        step.changes.push(Change::RecentId(id));
        for old in self.recent.insert(id, at_ms) {
            step.changes.push(Change::RecentId(old));
        }
        true
    }

    fn remove(&mut self, id: MessageId) -> bool {
        self.unindex(id);
        match self.messages.remove(&id) {
            Some(m) => {
                self.by_time.remove(&(m.received_at_ms, id));
                self.bytes -= m.size();
                if let Some(c) = m.claim {
                    self.unlink_claim(c.token, id);
                }
                true
            }
            None => false,
        }
    }

    /// Adds a message read back from storage (or a new one) to the state and its indexes.
    pub fn insert_loaded(&mut self, message: Message) {
        let id = message.id;
        self.remove(id);
        self.by_time.insert((message.received_at_ms, id));
        self.bytes += message.size();
        if let Some(c) = &message.claim {
            self.claims.entry(c.token).or_default().insert(id);
        }
        self.messages.insert(id, message);
        self.reindex(id);
    }

    /// Sets a destination read back from storage.
    pub fn set_destination_loaded(&mut self, name: String, destination: Destination) {
        self.destinations.insert(name, destination);
    }

    /// Adds a recipient-table entry read back from storage.
    pub fn insert_recipient_loaded(&mut self, entry: String) {
        self.recipients.insert(entry);
    }

    /// Sets a verification result read back from storage.
    pub fn set_verified_loaded(&mut self, address: String, valid: bool, at_ms: u64) {
        self.verified.insert(address, at_ms, valid);
    }

    /// Remembers, as read back from storage, that message `id` left the queue at `at_ms`.
    pub fn set_recent_loaded(&mut self, id: MessageId, at_ms: u64) {
        self.recent.insert(id, at_ms);
    }

    /// When message `id` left the queue, if that was recent enough to be remembered.
    pub fn recently_removed(&self, id: MessageId) -> Option<u64> {
        self.recent.get(id)
    }

    /// Entries in the caches: `(greylisting triplets, verification results, recent ids)`.
    pub fn cache_sizes(&self) -> (usize, usize, usize) {
        (self.greylist.len(), self.verified.len(), self.recent.len())
    }

    /// Whether the recipient table holds exactly this entry.
    pub fn has_recipient_entry(&self, entry: &str) -> bool {
        self.recipients.contains(entry)
    }

    /// Whether a (normalized) address is in the recipient table, itself or by its domain's
    /// catch-all.
    pub fn recipient_listed(&self, address: &str) -> bool {
        self.recipients.contains(address)
            || crate::recipients::catch_all_of(address)
                .is_some_and(|c| self.recipients.contains(&c))
    }

    /// Recipient-table entries in order, starting after `after`.
    pub fn recipient_entries(&self, after: Option<&str>) -> impl Iterator<Item = &String> {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(a.to_owned()),
            None => Bound::Unbounded,
        };
        self.recipients
            .range::<String, _>((start, Bound::Unbounded))
    }

    /// When a greylisting triplet was first seen.
    pub fn greylisted(&self, key: &str) -> Option<u64> {
        self.greylist.get(key).map(|(at, ())| *at)
    }

    /// Sets a greylisting triplet read back from storage.
    pub fn set_greylist_loaded(&mut self, key: String, at_ms: u64) {
        self.greylist.insert(key, at_ms, ());
    }

    /// The cached verification of an address: whether it was valid, and when.
    pub fn verified(&self, address: &str) -> Option<(bool, u64)> {
        self.verified.get(address).map(|(at, valid)| (*valid, *at))
    }

    /// The metadata of one message.
    pub fn get(&self, id: MessageId) -> Option<&Message> {
        self.messages.get(&id)
    }

    /// Messages in id order (which is arrival order), starting after `after` when given.
    pub fn iter_from(&self, after: Option<MessageId>) -> impl Iterator<Item = &Message> {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded(id),
            None => Bound::Unbounded,
        };
        self.messages
            .range((start, Bound::Unbounded))
            .map(|(_, m)| m)
    }

    /// Messages from the oldest receive time on.
    pub fn iter_by_age(&self) -> impl Iterator<Item = &Message> {
        self.by_time
            .iter()
            .filter_map(|(_, id)| self.messages.get(id))
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Totals over the whole queue.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            messages: self.messages.len() as u64,
            bytes: self.bytes,
            oldest_received_at_ms: self.by_time.first().map(|(t, _)| *t),
        }
    }

    /// The known destinations and their state.
    pub fn destinations(&self) -> &BTreeMap<String, Destination> {
        &self.destinations
    }

    /// A destination's state; unknown destinations count as up.
    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.get(name)
    }

    /// Whether mail for this destination should be attempted (unknown counts as up).
    pub fn destination_up(&self, name: &str) -> bool {
        self.destinations.get(name).is_none_or(|d| d.up)
    }

    /// Destinations that have messages with pending recipients, with how many messages and the
    /// oldest receive time.
    pub fn queued_destinations(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out = BTreeMap::new();
        for (dest, set) in &self.due {
            let oldest = set
                .iter()
                .filter_map(|(_, id)| self.messages.get(id))
                .map(|m| m.received_at_ms)
                .min()
                .unwrap_or(0);
            out.insert(dest.clone(), (set.len() as u64, oldest));
        }
        // Held messages are not in the due index but still count as queued there.
        for m in self.messages.values().filter(|m| m.held) {
            for r in m.recipients.iter().filter(|r| r.is_pending()) {
                let e = out.entry(r.destination()).or_insert((0, m.received_at_ms));
                e.0 += 1;
                e.1 = e.1.min(m.received_at_ms);
            }
        }
        out
    }

    /// Up to `limit` messages with recipients for `destination` due at `now_ms`, not held and
    /// not under a live claim, most overdue first.
    pub fn due_messages(&self, destination: &str, now_ms: u64, limit: usize) -> Vec<MessageId> {
        self.claimable_messages(destination, now_ms, 0, limit)
    }

    /// Like [`QueueState::due_messages`], but a claim counts as live until `lease_grace_ms`
    /// after its lease ended: the leader leaves that much room for clocks that differ.
    pub fn claimable_messages(
        &self,
        destination: &str,
        now_ms: u64,
        lease_grace_ms: u64,
        limit: usize,
    ) -> Vec<MessageId> {
        let Some(set) = self.due.get(destination) else {
            return Vec::new();
        };
        let lease_horizon = now_ms.saturating_sub(lease_grace_ms);
        set.iter()
            .take_while(|(due, _)| *due <= now_ms)
            .filter(|(_, id)| {
                self.messages
                    .get(id)
                    .is_some_and(|m| m.live_claim(lease_horizon).is_none())
            })
            .map(|(_, id)| *id)
            .take(limit)
            .collect()
    }

    /// The earliest due time of a pending recipient in `destination`, if any.
    pub fn next_due(&self, destination: &str) -> Option<u64> {
        self.due.get(destination)?.first().map(|(due, _)| *due)
    }

    /// Destinations with pending recipients (held messages aside).
    pub fn due_destinations(&self) -> impl Iterator<Item = &String> {
        self.due.keys()
    }

    /// Open claims (live or expired but not yet replaced).
    pub fn claims(&self) -> Vec<ClaimView> {
        self.claims
            .iter()
            .filter_map(|(token, ids)| {
                let first = self.messages.get(ids.first()?)?.claim.as_ref()?;
                let lease_until_ms = ids
                    .iter()
                    .filter_map(|id| {
                        self.messages
                            .get(id)?
                            .claim
                            .as_ref()
                            .map(|c| c.lease_until_ms)
                    })
                    .min()
                    .unwrap_or(first.lease_until_ms);
                Some(ClaimView {
                    token: *token,
                    node: first.node,
                    destination: first.destination.clone(),
                    lease_until_ms,
                    ids: ids.iter().copied().collect(),
                })
            })
            .collect()
    }

    /// Claims whose lease is still running at `now_ms` for `destination`.
    pub fn live_claims_for(&self, destination: &str, now_ms: u64) -> usize {
        self.claims()
            .iter()
            .filter(|c| c.destination == destination && c.lease_until_ms > now_ms)
            .count()
    }
}
