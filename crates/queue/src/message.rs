//! What the queue keeps for each message.
//!
//! The body is not part of [`Message`]: it is stored once, by id, next to the metadata, and read
//! only when the message is shown, delivered or returned in a DSN. Everything here is small and
//! lives in memory on every node.

use bytes::Bytes;
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

/// The `RET=` parameter of `MAIL FROM` (RFC 3461): what a DSN returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: the header section only.
    Headers,
}

/// Envelope parameters of `MAIL FROM` that travel with the message to the primary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailParams {
    /// The declared body type.
    pub body: BodyType,
    /// The `SIZE=` the client declared, if any.
    pub declared_size: Option<u64>,
    /// The client asked for SMTPUTF8 (RFC 6531): the envelope or headers may be UTF-8.
    pub smtputf8: bool,
    /// `RET=` (RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461), as received (xtext).
    pub envid: Option<String>,
}

/// The `NOTIFY=` parameter of `RCPT TO` (RFC 3461).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

impl Notify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: Notify = Notify {
        success: false,
        failure: false,
        delay: false,
    };

    /// The parameter value, e.g. `FAILURE,DELAY` or `NEVER`.
    pub fn to_param(self) -> String {
        let mut parts = Vec::new();
        if self.success {
            parts.push("SUCCESS");
        }
        if self.failure {
            parts.push("FAILURE");
        }
        if self.delay {
            parts.push("DELAY");
        }
        if parts.is_empty() {
            "NEVER".into()
        } else {
            parts.join(",")
        }
    }
}

/// DSN parameters of one `RCPT TO`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptParams {
    /// `NOTIFY=`; `None` means the default (failures and delays are reported).
    pub notify: Option<Notify>,
    /// `ORCPT=`, as received (`addr-type;xtext`).
    pub orcpt: Option<String>,
}

impl RcptParams {
    /// Whether a failure of this recipient is reported to the sender.
    pub fn wants_failure(&self) -> bool {
        self.notify.is_none_or(|n| n.failure)
    }

    /// Whether a delay of this recipient is reported to the sender.
    pub fn wants_delay(&self) -> bool {
        self.notify.is_none_or(|n| n.delay)
    }
}

/// Delivery state of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecipientState {
    /// Waiting to be handed to the primary.
    Pending,
    /// The primary accepted it.
    Delivered {
        /// When, in milliseconds since the Unix epoch.
        at_ms: u64,
        /// The primary's reply.
        reply: String,
    },
    /// It failed for good: a 5xx reply, expiry, or an administrator's bounce.
    Failed {
        /// When, in milliseconds since the Unix epoch.
        at_ms: u64,
        /// Why: the remote reply or our own diagnostic, starting with an enhanced status code.
        reply: String,
    },
}

impl RecipientState {
    /// The lower-case name used by the admin API and `mxraftctl`.
    pub fn name(&self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
            RecipientState::Delivered { .. } => "delivered",
            RecipientState::Failed { .. } => "failed",
        }
    }
}

/// One envelope recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address from `RCPT TO`, without angle brackets.
    pub address: String,
    /// Its DSN parameters.
    pub params: RcptParams,
    /// Where it stands.
    pub state: RecipientState,
    /// Delivery attempts that ended in a temporary failure.
    pub attempts: u32,
    /// Earliest time of the next attempt, in milliseconds since the Unix epoch.
    pub next_attempt_ms: u64,
    /// The last temporary failure.
    pub last_error: Option<String>,
    /// A failure DSN covering this recipient has been issued (or was not wanted).
    pub notified: bool,
}

impl Recipient {
    /// A recipient that still waits for delivery, due at `due_ms`.
    pub fn pending(address: impl Into<String>, params: RcptParams, due_ms: u64) -> Self {
        Recipient {
            address: address.into(),
            params,
            state: RecipientState::Pending,
            attempts: 0,
            next_attempt_ms: due_ms,
            last_error: None,
            notified: false,
        }
    }

    /// Whether it still waits for delivery.
    pub fn is_pending(&self) -> bool {
        self.state == RecipientState::Pending
    }

    /// The destination it is delivered to: its domain, lower-cased.
    pub fn destination(&self) -> String {
        destination_of(&self.address)
    }
}

/// The destination of an address: its domain in canonical form (see [`canonical_domain`]).
pub fn destination_of(address: &str) -> String {
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or(address);
    canonical_domain(domain)
}

/// The form in which domains are compared everywhere: internationalized names as A-labels
/// (`bücher.test` and `xn--bcher-kva.test` are the same domain), lower case, without a trailing
/// dot. Text that is not a valid domain name is only lower-cased.
pub fn canonical_domain(domain: &str) -> String {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    match idna::domain_to_ascii(domain) {
        Ok(ascii) if !ascii.is_empty() => ascii,
        _ => domain.to_lowercase(),
    }
}

/// A node's right to deliver a message, committed through Raft before any delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The node that delivers.
    pub node: NodeId,
    /// The fencing token: the log index of the `Claim` entry that granted it.
    pub token: u64,
    /// The destination the claim delivers to.
    pub destination: String,
    /// The claim is void after this time (milliseconds since the Unix epoch) unless renewed.
    pub lease_until_ms: u64,
}

/// The metadata of one queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The queue id.
    pub id: MessageId,
    /// When the receiving node accepted the end of data, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The node whose SMTP listener received the message (0 for DSNs this cluster made).
    pub received_by: NodeId,
    /// The reverse path from `MAIL FROM`; empty for the null sender `<>`.
    pub sender: String,
    /// The envelope parameters of `MAIL FROM`.
    pub params: MailParams,
    /// The recipients, in `RCPT TO` order.
    pub recipients: Vec<Recipient>,
    /// The `Received:` header this cluster adds in front of the body when it delivers, when it
    /// is kept here. Empty for a message whose trace header is stored in front of its body,
    /// which is every message queued since: the header then costs no memory (see
    /// [`Message::content`]).
    pub trace_header: String,
    /// Size of what the body store holds for the message: the body, with the trace header in
    /// front when that is stored there.
    pub body_size: u64,
    /// An administrator put the message on hold: no delivery until released.
    pub held: bool,
    /// The delivery claim, while a node holds one.
    pub claim: Option<Claim>,
    /// A delay DSN was already sent for this message.
    pub delay_notified: bool,
}

impl Message {
    /// Size of the message as delivered: trace header plus body.
    pub fn size(&self) -> u64 {
        self.trace_header.len() as u64 + self.body_size
    }

    /// The message as delivered (trace header, then body), from what the body store holds
    /// for it. Copies only for a message whose trace header is kept in its metadata.
    pub fn content(&self, stored: Bytes) -> Bytes {
        if self.trace_header.is_empty() {
            return stored;
        }
        let mut full = Vec::with_capacity(self.trace_header.len() + stored.len());
        full.extend_from_slice(self.trace_header.as_bytes());
        full.extend_from_slice(&stored);
        Bytes::from(full)
    }

    /// Whether any recipient still waits for delivery.
    pub fn has_pending(&self) -> bool {
        self.recipients.iter().any(Recipient::is_pending)
    }

    /// The claim, if it is still valid at `now_ms`.
    pub fn live_claim(&self, now_ms: u64) -> Option<&Claim> {
        self.claim.as_ref().filter(|c| c.lease_until_ms > now_ms)
    }
}

/// What the cluster knows of a destination's primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// Whether the primary answered the last delivery or probe.
    pub up: bool,
    /// Since when it is in this state, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// When it was last probed.
    pub last_probe_ms: Option<u64>,
    /// The last error seen delivering to or probing it.
    pub last_error: Option<String>,
}
