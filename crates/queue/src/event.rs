//! What applying a command did to the queue, message by message: the stream behind
//! `mxraftctl events watch`. Every node applies the same log and so tells the same events;
//! they are not stored, and cost nothing when nobody watches but the allocation.

use std::fmt;

use crate::id::MessageId;

/// One thing that happened to one message (or one of its recipients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The message.
    pub id: MessageId,
    /// The node concerned: the one that received the message (`queued`; none for a DSN), or
    /// the one granted or holding the claim (`claimed`, and the delivery results).
    pub node: Option<u64>,
    /// The destination concerned, when one is.
    pub destination: Option<String>,
    /// The recipient, for the results of one recipient; the sender a DSN goes to.
    pub recipient: Option<String>,
    /// Why, or what with: the primary's reply, the error, the DSN's id, the sender and size.
    pub detail: String,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// The message entered the queue.
    Queued,
    /// A node was granted the right to deliver it.
    Claimed,
    /// A recipient was delivered to the primary.
    Delivered,
    /// A recipient's attempt failed for now; it is retried after a backoff.
    Deferred,
    /// A recipient failed for good (the primary's 5xx, expiry, an administrator's bounce).
    Failed,
    /// A failure DSN was queued to the sender.
    Bounced,
    /// A delay DSN was queued to the sender.
    Delayed,
    /// The message outlived the queue lifetime.
    Expired,
    /// An administrator removed the message.
    Deleted,
    /// An administrator held the message.
    Held,
    /// An administrator released a held message.
    Released,
}

impl EventKind {
    /// Every kind, in the order of the enum.
    pub const ALL: [EventKind; 11] = [
        EventKind::Queued,
        EventKind::Claimed,
        EventKind::Delivered,
        EventKind::Deferred,
        EventKind::Failed,
        EventKind::Bounced,
        EventKind::Delayed,
        EventKind::Expired,
        EventKind::Deleted,
        EventKind::Held,
        EventKind::Released,
    ];

    /// The lower-case name used on the wire and in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Queued => "queued",
            EventKind::Claimed => "claimed",
            EventKind::Delivered => "delivered",
            EventKind::Deferred => "deferred",
            EventKind::Failed => "failed",
            EventKind::Bounced => "bounced",
            EventKind::Delayed => "delayed",
            EventKind::Expired => "expired",
            EventKind::Deleted => "deleted",
            EventKind::Held => "held",
            EventKind::Released => "released",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    /// An event about a message as a whole.
    pub(crate) fn message(kind: EventKind, id: MessageId, detail: impl Into<String>) -> Event {
        Event {
            kind,
            id,
            node: None,
            destination: None,
            recipient: None,
            detail: detail.into(),
        }
    }
}

/// An SMTP refusal at one node's front door: not replicated, only the node that refused
/// knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// When, on the refusing node's clock, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The client.
    pub client: std::net::IpAddr,
    /// The rule that refused (its metric label, e.g. `unknown_recipient`).
    pub rule: &'static str,
    /// The reply sent (for a refused `RCPT`, it names the recipient).
    pub reply: String,
}
