//! The commands of the replicated queue: one Raft log entry carries one [`QueueCommand`].
//!
//! Every field a command needs to be applied deterministically is inside it: ids and timestamps
//! are chosen by the proposing node, never in `apply`. New commands are added at the end of the
//! enum so that older log entries keep decoding (see [`crate::codec`]).

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::NodeId;
use crate::id::MessageId;
use crate::message::{MailParams, RcptParams};

/// A change to the replicated queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueCommand {
    /// Queue a message accepted over SMTP. Idempotent by `id`.
    Enqueue(Enqueue),
    /// Remove a message and its body from the queue, whatever its state, without a DSN.
    Delete {
        /// The message to remove.
        id: MessageId,
        /// When the removal was requested, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// Grant `node` the right to deliver these messages to `destination`. The fencing token is
    /// the log index of this entry. A message is granted only if it is not held, has pending
    /// recipients and no claim valid at `at_ms`.
    Claim {
        /// Candidate messages.
        ids: Vec<MessageId>,
        /// The node that will deliver.
        node: NodeId,
        /// The destination it delivers to.
        destination: String,
        /// The leader's clock when it appended the claim.
        at_ms: u64,
        /// How long the claim lasts unless renewed.
        lease_ms: u64,
    },
    /// Extend the lease of the messages still held under `token`. A lease is never shortened:
    /// the new end is the later of the old one and `at_ms + lease_ms`.
    Renew {
        /// The claim's fencing token.
        token: u64,
        /// The messages to keep.
        ids: Vec<MessageId>,
        /// The leader's clock when it appended the renewal (see
        /// [`QueueCommand::stamp_by_leader`]).
        at_ms: u64,
        /// New lease length from `at_ms`.
        lease_ms: u64,
    },
    /// Delivery results under `token`. Results for a message whose claim has another token are
    /// ignored: they come from a node whose claim expired.
    Report(Report),
    /// Give up the claim on these messages without results.
    Release {
        /// The claim's fencing token.
        token: u64,
        /// The messages released.
        ids: Vec<MessageId>,
    },
    /// These messages outlived the queue lifetime: fail their pending recipients and send DSNs.
    Expire {
        /// The expired messages.
        ids: Vec<MessageId>,
        /// When.
        at_ms: u64,
        /// The host name DSNs are signed with.
        reporting_mta: String,
    },
    /// Send the one delay DSN these messages get, where NOTIFY allows.
    DelayNotice {
        /// The delayed messages.
        ids: Vec<MessageId>,
        /// When.
        at_ms: u64,
        /// The host name DSNs are signed with.
        reporting_mta: String,
    },
    /// Stop delivering a message until it is released.
    Hold {
        /// The message.
        id: MessageId,
    },
    /// Release a held message; it is due at once.
    Resume {
        /// The message.
        id: MessageId,
        /// When.
        at_ms: u64,
    },
    /// Fail every pending recipient of a message now and send the DSN.
    Bounce {
        /// The message.
        id: MessageId,
        /// When.
        at_ms: u64,
        /// The host name the DSN is signed with.
        reporting_mta: String,
    },
    /// Make pending recipients due now (`queue flush`, ETRN).
    Reschedule {
        /// Which messages.
        target: FlushTarget,
        /// When.
        at_ms: u64,
    },
    /// Record whether a destination's primary answers. Going up makes its mail due at once.
    SetDestination {
        /// The destination (a domain).
        destination: String,
        /// Whether it answered.
        up: bool,
        /// When.
        at_ms: u64,
        /// Whether this comes from a probe (rather than a delivery attempt).
        probed: bool,
        /// The error, when it did not answer.
        error: Option<String>,
    },
    /// Add entries to the recipient table: addresses (`user@domain`) or catch-alls (`@domain`).
    RecipientsAdd {
        /// The entries, normalized (see [`crate::recipients::normalize_entry`]).
        entries: Vec<String>,
    },
    /// Remove entries from the recipient table.
    RecipientsRemove {
        /// The entries, normalized.
        entries: Vec<String>,
    },
    /// Greylisting: remember the first time a (client, sender, recipient) triplet was seen.
    GreylistSeen {
        /// The triplet, as built by the front door.
        key: String,
        /// When it was first seen.
        at_ms: u64,
    },
    /// Forget greylisting triplets and verification results older than `before_ms`.
    PruneCaches {
        /// The cut-off time.
        before_ms: u64,
    },
    /// Record the result of a recipient verification (an SMTP callout to the primary).
    Verified {
        /// The address, normalized.
        address: String,
        /// Whether the primary accepted it.
        valid: bool,
        /// When it was verified.
        at_ms: u64,
    },
    /// An administrator's action on many messages at once (`mxraftctl queue hold --domain …`).
    /// Messages not in the queue any more are skipped.
    Bulk {
        /// What is done to each message.
        action: BulkAction,
        /// The messages, chosen by the proposer from a filter.
        ids: Vec<MessageId>,
        /// When.
        at_ms: u64,
        /// The host name DSNs are signed with (for [`BulkAction::Bounce`]).
        reporting_mta: String,
    },
    /// Suspend or resume delivery to a destination: while suspended, no claim is granted for
    /// it, its primary is not probed, and its mail neither expires nor gets delay notices.
    /// Resuming makes its mail due at once.
    Suspend {
        /// The destination (a domain, canonical).
        destination: String,
        /// Whether delivery is suspended from now on.
        suspended: bool,
        /// When.
        at_ms: u64,
    },
    /// A node announces that it is stopping (and takes no new claims until it announces
    /// otherwise), or that it runs again. A node stopping in order commits this before it
    /// releases its claims, so the leader does not grant the released mail straight back to it
    /// in the seconds it still answers heartbeats.
    NodeStopping {
        /// The node.
        node: u64,
        /// Whether it is stopping.
        stopping: bool,
        /// When.
        at_ms: u64,
    },
}

/// What a [`QueueCommand::Bulk`] does to each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BulkAction {
    /// Make its pending recipients due now.
    Flush,
    /// Put it on hold.
    Hold,
    /// Release it from hold; it is due at once.
    Release,
    /// Remove it without a DSN.
    Delete,
    /// Fail its pending recipients and send the DSN.
    Bounce,
}

impl BulkAction {
    /// The lower-case name, as in `mxraftctl queue <name>`.
    pub fn name(self) -> &'static str {
        match self {
            BulkAction::Flush => "flush",
            BulkAction::Hold => "hold",
            BulkAction::Release => "release",
            BulkAction::Delete => "delete",
            BulkAction::Bounce => "bounce",
        }
    }
}

/// Which messages a flush concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlushTarget {
    /// Every message.
    All,
    /// Messages with pending recipients in this destination.
    Destination(String),
    /// One message.
    Message(MessageId),
}

/// A message accepted by an SMTP session, with everything needed to queue it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueue {
    /// The queue id, chosen once by the receiving node.
    pub id: MessageId,
    /// When the receiving node saw the end of data, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The node that received the message.
    pub received_by: NodeId,
    /// The reverse path; empty for `<>`.
    pub sender: String,
    /// The envelope parameters of `MAIL FROM`.
    pub params: MailParams,
    /// The accepted recipients with their parameters, in `RCPT TO` order.
    pub recipients: Vec<(String, RcptParams)>,
    /// The `Received:` header to put in front of the body, ending in CRLF.
    pub trace_header: String,
    /// The message as received after the end of DATA was removed and dots were unstuffed.
    pub body: Bytes,
}

impl fmt::Debug for Enqueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body can be megabytes; its size is what a log line needs.
        f.debug_struct("Enqueue")
            .field("id", &self.id)
            .field("received_at_ms", &self.received_at_ms)
            .field("received_by", &self.received_by)
            .field("sender", &self.sender)
            .field("params", &self.params)
            .field("recipients", &self.recipients)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Results of one delivery attempt, for the messages of one claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The claim's fencing token.
    pub token: u64,
    /// When the results were known.
    pub at_ms: u64,
    /// The host name DSNs are signed with.
    pub reporting_mta: String,
    /// Per message, per recipient.
    pub messages: Vec<MessageReport>,
}

/// The results for one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageReport {
    /// The message.
    pub id: MessageId,
    /// `(recipient index, outcome)` for the recipients attempted.
    pub recipients: Vec<(u32, AttemptOutcome)>,
}

/// What became of one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    /// 2xx: the primary took responsibility.
    Delivered {
        /// The reply.
        reply: String,
    },
    /// 5xx or a permanent condition: fail it and send a DSN.
    Failed {
        /// The reply or diagnostic.
        reply: String,
    },
    /// 4xx or a network error: try again after the backoff.
    Deferred {
        /// The reply or error.
        reply: String,
    },
}

impl AttemptOutcome {
    /// The reply or error the outcome carries.
    pub fn reply(&self) -> &str {
        match self {
            AttemptOutcome::Delivered { reply }
            | AttemptOutcome::Failed { reply }
            | AttemptOutcome::Deferred { reply } => reply,
        }
    }
}

impl QueueCommand {
    /// Puts the leader's clock into the commands whose time decides a lease (`Claim`, `Renew`),
    /// just before the leader appends them. Every lease in the queue is then measured on the
    /// clock of the leader that granted or renewed it, never on a delivering node's clock, and
    /// a node whose clock is behind cannot renew a lease that has already run out.
    pub fn stamp_by_leader(&mut self, leader_now_ms: u64) {
        match self {
            QueueCommand::Claim { at_ms, .. } | QueueCommand::Renew { at_ms, .. } => {
                *at_ms = leader_now_ms;
            }
            _ => {}
        }
    }

    /// Whether this command tells what a claim did (`Report`, `Release`). The leader takes such
    /// a command even from a node whose clock it finds too far from its own: the claim's token
    /// fences it, and refusing it would only get mail that was delivered delivered again once
    /// the lease ran out.
    pub fn settles_a_claim(&self) -> bool {
        matches!(self, QueueCommand::Report(_) | QueueCommand::Release { .. })
    }

    /// Puts the leader's clock into a `Report` (the time its retries are counted from), for a
    /// report from a node whose clock the leader does not trust.
    pub fn stamp_report_by_leader(&mut self, leader_now_ms: u64) {
        if let QueueCommand::Report(r) = self {
            r.at_ms = leader_now_ms;
        }
    }
}

impl fmt::Display for QueueCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueCommand::Enqueue(e) => write!(
                f,
                "enqueue {} from <{}> to {} recipient(s), {} bytes",
                e.id,
                e.sender,
                e.recipients.len(),
                e.body.len()
            ),
            QueueCommand::Delete { id, .. } => write!(f, "delete {id}"),
            QueueCommand::Claim {
                ids,
                node,
                destination,
                ..
            } => {
                write!(
                    f,
                    "claim {} message(s) for {destination} by node {node}",
                    ids.len()
                )
            }
            QueueCommand::Renew { token, ids, .. } => {
                write!(f, "renew claim {token} on {} message(s)", ids.len())
            }
            QueueCommand::Report(r) => write!(
                f,
                "report {} message(s) under claim {}",
                r.messages.len(),
                r.token
            ),
            QueueCommand::Release { token, ids } => {
                write!(f, "release {} message(s) of claim {token}", ids.len())
            }
            QueueCommand::Expire { ids, .. } => write!(f, "expire {} message(s)", ids.len()),
            QueueCommand::DelayNotice { ids, .. } => {
                write!(f, "delay notice for {} message(s)", ids.len())
            }
            QueueCommand::Hold { id } => write!(f, "hold {id}"),
            QueueCommand::Resume { id, .. } => write!(f, "resume held {id}"),
            QueueCommand::Bounce { id, .. } => write!(f, "bounce {id}"),
            QueueCommand::Reschedule { target, .. } => write!(f, "flush {target:?}"),
            QueueCommand::RecipientsAdd { entries } => {
                write!(f, "add {} recipient(s)", entries.len())
            }
            QueueCommand::RecipientsRemove { entries } => {
                write!(f, "remove {} recipient(s)", entries.len())
            }
            QueueCommand::Verified { address, valid, .. } => {
                write!(f, "verified {address}: {valid}")
            }
            QueueCommand::GreylistSeen { key, .. } => write!(f, "greylist {key}"),
            QueueCommand::PruneCaches { before_ms } => write!(f, "prune caches before {before_ms}"),
            QueueCommand::SetDestination {
                destination, up, ..
            } => {
                write!(
                    f,
                    "destination {destination} {}",
                    if *up { "up" } else { "down" }
                )
            }
            QueueCommand::Bulk { action, ids, .. } => {
                write!(f, "{} {} message(s)", action.name(), ids.len())
            }
            QueueCommand::Suspend {
                destination,
                suspended,
                ..
            } => write!(
                f,
                "{} delivery to {destination}",
                if *suspended { "suspend" } else { "resume" }
            ),
            QueueCommand::NodeStopping { node, stopping, .. } => write!(
                f,
                "node {node} {}",
                if *stopping { "stopping" } else { "running" }
            ),
        }
    }
}

/// The answer to the proposer of a command, once it is committed and applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// The entry carried no queue command (a blank or membership entry).
    Nothing,
    /// The message is in the queue. `duplicate` is true when an earlier entry with the same id
    /// had already queued it, e.g. after a forwarded proposal was retried.
    Enqueued {
        /// The queue id.
        id: MessageId,
        /// Whether this entry was a repeat of one already applied.
        duplicate: bool,
    },
    /// The message was removed, or was not in the queue.
    Deleted {
        /// The queue id.
        id: MessageId,
        /// Whether the message was in the queue.
        existed: bool,
    },
    /// A claim: the messages granted under `token` (possibly none).
    Claimed {
        /// The fencing token.
        token: u64,
        /// The messages granted.
        granted: Vec<MessageId>,
    },
    /// How many of the named messages the command changed; the others were unknown, in another
    /// state, or (for claims) held under another token.
    Applied {
        /// Messages changed.
        changed: u32,
    },
    /// The message a `Hold`, `Resume` or `Bounce` names is not in the queue.
    NotQueued {
        /// The queue id.
        id: MessageId,
    },
    /// A renewal: the messages still held under `token`, whose lease now runs `lease_ms` from
    /// the leader's `at_ms` at least. The others are no longer this claim's to deliver.
    Renewed {
        /// The fencing token.
        token: u64,
        /// The messages still held.
        held: Vec<MessageId>,
    },
}
