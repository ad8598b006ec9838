//! What the queue keeps for each message.
//!
//! The body is not part of [`Message`]: it is stored once, by id, next to the metadata, and read
//! only when the message is shown or delivered. Everything here is small and lives in memory on
//! every node.

use serde::{Deserialize, Serialize};

use crate::NodeId;
use crate::id::MessageId;

/// The `BODY=` parameter of `MAIL FROM` (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyType {
    /// No `BODY=` parameter or `BODY=7BIT`.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// Envelope parameters of `MAIL FROM` that travel with the message to the primary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailParams {
    /// The declared body type.
    pub body: BodyType,
    /// The `SIZE=` the client declared, if any.
    pub declared_size: Option<u64>,
}

/// Delivery state of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecipientState {
    /// Waiting to be handed to the primary.
    Pending,
}

impl RecipientState {
    /// The lower-case name used by the admin API and `mxraftctl`.
    pub fn name(&self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
        }
    }
}

/// One envelope recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address from `RCPT TO`, without angle brackets.
    pub address: String,
    /// Where this recipient stands.
    pub state: RecipientState,
}

impl Recipient {
    /// A recipient that still waits for delivery.
    pub fn pending(address: impl Into<String>) -> Self {
        Recipient {
            address: address.into(),
            state: RecipientState::Pending,
        }
    }
}

/// The metadata of one queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The queue id.
    pub id: MessageId,
    /// When the receiving node accepted the end of data, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The node whose SMTP listener received the message.
    pub received_by: NodeId,
    /// The reverse path from `MAIL FROM`; empty for the null sender `<>`.
    pub sender: String,
    /// The envelope parameters of `MAIL FROM`.
    pub params: MailParams,
    /// The recipients, in `RCPT TO` order.
    pub recipients: Vec<Recipient>,
    /// The `Received:` header this cluster adds in front of the body when it delivers.
    pub trace_header: String,
    /// Size of the body in bytes, without the trace header.
    pub body_size: u64,
}

impl Message {
    /// Size of the message as delivered: trace header plus body.
    pub fn size(&self) -> u64 {
        self.trace_header.len() as u64 + self.body_size
    }
}
