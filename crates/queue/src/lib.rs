//! The replicated mail queue of mxraft, as a pure state machine.
//!
//! This crate owns the *meaning* of the queue: what a queued message is, which commands change
//! the queue, and exactly how each command changes it. It does no IO and reads no clock or
//! random source: message ids and timestamps arrive inside the commands, stamped once by the node
//! that proposed them, so every node that applies the same log reaches the same state (G8).
//!
//! Layout:
//! - [`id`]: [`MessageId`], the cluster-wide queue id (`250 2.0.0 Ok: queued as <id>`).
//! - [`message`]: [`Message`] and its [`Recipient`]s — the metadata kept for each queued message.
//! - [`command`]: [`QueueCommand`], the entries of the Raft log, and [`CommandResult`], the
//!   answer to the proposer.
//! - [`state`]: [`QueueState::apply`], which turns one command into what was [`Applied`]: the result
//!   and the list of [`Change`]s that the storage layer must persist. Claims carry a fencing
//!   token (the log index of the `Claim` entry); reports under another token are ignored.
//! - [`filter`]: choosing messages by sender, recipient, destination, state and age, and the
//!   queue's shape per destination and age.
//! - [`caches`]: the bounded greylisting and verification caches and the recently removed ids.
//! - [`policy`]: the retry backoff; [`dsn`]: rendering of delivery status notifications.
//! - [`codec`]: the versioned binary encoding of every record that is stored or replicated.
//!
//! What it does not own: storage (`mxraft-store` persists the [`Change`]s and the bodies),
//! consensus (`mxraft-cluster`), and the SMTP conversation (`mxraft-smtp`).

pub mod caches;
pub mod codec;
pub mod command;
pub mod dsn;
pub mod event;
pub mod filter;
pub mod id;
pub mod message;
pub mod policy;
pub mod recipients;
pub mod state;

pub use codec::{CodecError, decode, encode};
pub use command::{
    AttemptOutcome, BulkAction, CommandResult, Enqueue, FlushTarget, MessageReport, QueueCommand,
    Report,
};
pub use event::{Event, EventKind, Refusal};
pub use filter::{AddressPattern, MessageFilter, MessageState, ShapeRow};
pub use id::{MessageId, ParseIdError};
pub use message::{
    BodyType, Claim, Destination, MailParams, Message, Notify, RcptParams, Recipient,
    RecipientState, Ret, canonical_domain, destination_of,
};
pub use state::{
    Applied, BodyError, BodyLookup, Change, ClaimView, DSN_NODE, QueueState, QueueStats,
};

/// Identifier of a cluster node, as used by Raft membership.
pub type NodeId = u64;

/// A configuration value that is out of range or inconsistent; the message names the key
/// (`smtp.max_message_size must be at least …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

impl InvalidConfig {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> InvalidConfig {
        InvalidConfig(message.into())
    }
}
