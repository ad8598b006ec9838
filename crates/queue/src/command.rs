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
use crate::message::MailParams;

/// A change to the replicated queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueCommand {
    /// Queue a message accepted over SMTP. Idempotent by `id`.
    Enqueue(Enqueue),
    /// Remove a message and its body from the queue, whatever its state.
    Delete {
        /// The message to remove.
        id: MessageId,
        /// When the removal was requested, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
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
    /// The accepted recipients, in `RCPT TO` order.
    pub recipients: Vec<String>,
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
}
