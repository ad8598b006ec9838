//! The queue state and the one function that changes it.
//!
//! [`QueueState::apply`] takes the log index and a [`QueueCommand`] and returns what was [`Applied`]:
//! the [`CommandResult`] for the proposer and the [`Change`]s the storage layer must write in
//! the same batch as the new `last_applied`. The state is the in-memory index of every queued
//! message and destination; storage rebuilds it with [`QueueState::insert_loaded`] and
//! [`QueueState::set_destination_loaded`] on start.
//!
//! Besides the messages, the state keeps indexes that the delivery scheduler reads: per
//! destination, the messages with pending recipients ordered by due time, and the open claims
//! by fencing token. They are derived from the messages and never stored.
//!
//! The code is split by concern: `claims` (grant, renew, release, and what is claimable),
//! `reports` (delivery results, expiry, bounces and the DSNs they cause), `messages`
//! (enqueue, removal, holds, the schedule and the indexes), `tables` (the recipient table and
//! the greylisting and verification caches), `admin` (bulk actions and suspended
//! destinations), `loading` (rebuilding from storage) and `queries`.

mod admin;
mod claims;
mod loading;
mod messages;
mod queries;
mod reports;
mod tables;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::caches::{
    BoundedCache, GREYLIST_PER_DOMAIN, GREYLIST_PER_NETWORK, GroupBy, RecentIds,
    VERIFIED_PER_DOMAIN,
};
use crate::command::{CommandResult, QueueCommand};
use crate::event::Event;
use crate::id::MessageId;
use crate::message::{Destination, Message};

/// Node id used in the queue ids of DSNs this cluster generates (no real node may use it).
pub const DSN_NODE: u64 = 0xFFFF;

/// Reads what the body store holds for a message (its body, with the trace header in front
/// unless the metadata keeps it: see [`Message::content`]): `Ok(None)` when there is none,
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
    /// A new message: store its metadata (read it with [`QueueState::get`]) and, as what the
    /// body store holds for it, its trace header followed by its body.
    Inserted {
        /// The new message.
        id: MessageId,
        /// Its `Received:` header.
        trace_header: String,
        /// Its body.
        body: Bytes,
    },
    /// The metadata of an existing message changed; store it again.
    Updated(MessageId),
    /// The message and its body are gone.
    Removed(MessageId),
    /// A destination's state changed; store it again.
    Destination(String),
    /// A destination was suspended or resumed (look it up with
    /// [`QueueState::suspended_since`]).
    Suspension(String),
    /// A node announced that it stops or runs again (look it up with
    /// [`QueueState::stopping_since`]).
    NodeStopping(u64),
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
pub struct Applied {
    /// What the proposer is told.
    pub result: CommandResult,
    /// What storage must write, in order.
    pub changes: Vec<Change>,
    /// What happened to which message, in order (see [`crate::event`]).
    pub events: Vec<Event>,
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
    /// Boxed: a B-tree node holds eleven entries and is often half full, so the messages
    /// themselves are kept out of it (about 230 bytes per queued message).
    messages: BTreeMap<MessageId, Box<Message>>,
    by_time: BTreeSet<(u64, MessageId)>,
    bytes: u64,
    /// Per destination: `(due time, id)` of messages with pending recipients there, not held.
    due: BTreeMap<String, BTreeSet<(u64, MessageId)>>,
    due_entries: BTreeMap<MessageId, Vec<(String, u64)>>,
    /// Messages under each claim token.
    claims: BTreeMap<u64, BTreeSet<MessageId>>,
    destinations: BTreeMap<String, Destination>,
    /// Destinations an administrator suspended, with when.
    suspended: BTreeMap<String, u64>,
    /// Nodes that announced they are stopping, with when: they get no claims.
    stopping: BTreeMap<u64, u64>,
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
            suspended: BTreeMap::new(),
            stopping: BTreeMap::new(),
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

/// What one `apply` accumulates: the storage changes, the DSNs queued, and the first body
/// that could not be read.
struct Effects<'a> {
    index: u64,
    changes: Vec<Change>,
    events: Vec<Event>,
    dsns: u64,
    bodies: BodyLookup<'a>,
    /// The first body that could not be read; the whole apply fails with it.
    error: Option<BodyError>,
}

impl Effects<'_> {
    fn event(&mut self, event: Event) {
        self.events.push(event);
    }

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
    ) -> Result<Applied, BodyError> {
        let mut effects = Effects {
            index,
            changes: Vec::new(),
            events: Vec::new(),
            dsns: 0,
            bodies,
            error: None,
        };
        let result = match cmd {
            QueueCommand::Enqueue(e) => self.enqueue(e, &mut effects),
            QueueCommand::Delete { id, at_ms } => {
                let existed = self.delete(id, at_ms, &mut effects);
                CommandResult::Deleted { id, existed }
            }
            QueueCommand::Claim {
                ids,
                node,
                destination,
                at_ms,
                lease_ms,
            } => self.claim(ids, node, destination, at_ms, lease_ms, &mut effects),
            QueueCommand::Renew {
                token,
                ids,
                at_ms,
                lease_ms,
            } => self.renew(token, &ids, at_ms.saturating_add(lease_ms), &mut effects),
            QueueCommand::Report(report) => self.report(report, &mut effects),
            QueueCommand::Release { token, ids } => self.release(token, &ids, &mut effects),
            QueueCommand::Expire {
                ids,
                at_ms,
                reporting_mta,
            } => self.expire(&ids, at_ms, &reporting_mta, &mut effects),
            QueueCommand::DelayNotice {
                ids,
                at_ms,
                reporting_mta,
            } => self.delay_notice(&ids, at_ms, &reporting_mta, &mut effects),
            QueueCommand::Hold { id }
            | QueueCommand::Resume { id, .. }
            | QueueCommand::Bounce { id, .. }
                if !self.messages.contains_key(&id) =>
            {
                CommandResult::NotQueued { id }
            }
            QueueCommand::Hold { id } => self.hold(id, &mut effects),
            QueueCommand::Resume { id, at_ms } => self.resume(id, at_ms, &mut effects),
            QueueCommand::Bounce {
                id,
                at_ms,
                reporting_mta,
            } => self.bounce(id, at_ms, &reporting_mta, &mut effects),
            QueueCommand::Reschedule { target, at_ms } => {
                self.reschedule(target, at_ms, &mut effects)
            }
            QueueCommand::SetDestination {
                destination,
                up,
                at_ms,
                probed,
                error,
            } => self.set_destination(destination, up, at_ms, probed, error, &mut effects),
            QueueCommand::RecipientsAdd { entries } => self.add_recipients(entries, &mut effects),
            QueueCommand::RecipientsRemove { entries } => {
                self.remove_recipients(entries, &mut effects)
            }
            QueueCommand::GreylistSeen { key, at_ms } => {
                self.greylist_seen(key, at_ms, &mut effects)
            }
            QueueCommand::PruneCaches { before_ms } => self.prune_caches(before_ms, &mut effects),
            QueueCommand::Verified {
                address,
                valid,
                at_ms,
            } => self.remember_verified(address, valid, at_ms, &mut effects),
            QueueCommand::Bulk {
                action,
                ids,
                at_ms,
                reporting_mta,
            } => self.bulk(action, &ids, at_ms, &reporting_mta, &mut effects),
            QueueCommand::Suspend {
                destination,
                suspended,
                at_ms,
            } => self.suspend(destination, suspended, at_ms, &mut effects),
            QueueCommand::NodeStopping {
                node,
                stopping,
                at_ms,
            } => self.node_stopping(node, stopping, at_ms, &mut effects),
        };
        match effects.error {
            Some(e) => Err(e),
            None => Ok(Applied {
                result,
                changes: effects.changes,
                events: effects.events,
            }),
        }
    }
}
