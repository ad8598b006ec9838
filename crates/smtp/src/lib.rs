//! Inbound SMTP for mxraft: the front door every node runs.
//!
//! A connection becomes a [`session`]: greeting → EHLO/HELO → MAIL → RCPT… → DATA → end of data.
//! Each verb lives in its own file under `session/`. Policy is checked as early as it can be:
//! the recipient domain at RCPT ([`policy::relay`]), then the domain's checks
//! ([`policy::FrontDoorPolicy`]: DNSBL, recipient validation, SPF, greylisting), the declared
//! size and the queue's room at MAIL. The DATA bytes go through [`wire::DataDecoder`], which
//! ends the message only at `CRLF.CRLF` and flags bare CR/LF, NUL and over-long lines. Every
//! refusal is a [`Rule`], whose reply, log label and metric label come from one table.
//!
//! At the end of data the session builds an [`mxraft_queue::Enqueue`] (queue id and receive time
//! chosen here, once) and hands it to a [`MessageQueue`] — in the server, the Raft node. The
//! client gets `250 2.0.0 Ok: queued as <id>` only when the queue reports the command
//! committed; otherwise `451 4.3.0`, so the sender keeps responsibility for the message.
//!
//! The [`wire`] format (replies, dot-stuffing, xtext) is shared with the delivery client.
//! What it does not own: consensus and storage (behind [`MessageQueue`]), and delivery.

pub mod address;
pub mod command;
pub mod config;
mod limits;
pub mod memory;
pub mod policy;
pub mod rule;
mod server;
mod session;
pub mod tls;
pub mod wire;

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

pub use config::SmtpConfig;
pub use policy::DomainPolicy;
pub use rule::Rule;
pub use server::{SmtpContext, serve, serve_connection};
pub use tls::{TlsError, TlsStore};
pub use wire::Reply;

use mxraft_queue::{Enqueue, MessageId};

/// The queue could not take the message now.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CommitError(pub String);

/// The answer to an ETRN request (RFC 1985), once the client is allowed to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtrnReply {
    /// Delivery of the domain's queued mail starts now (`250`).
    Started,
    /// Nothing is queued for the domain (`251`).
    NothingQueued,
    /// The request could not be recorded now (`458`).
    Unavailable,
}

/// Whether a recipient is accepted, as the front door's policy decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptCheck {
    /// The recipient exists (or the domain accepts everything).
    Accept,
    /// The recipient does not exist: `550 5.1.1`.
    Unknown,
    /// It cannot be decided now (primary down, nothing cached): `450 4.1.1`.
    TryLater,
    /// Greylisted: a first attempt for this client, sender and recipient; `450 4.7.1`.
    Greylisted,
    /// The client is listed in a DNS blocklist (the zone is given): `554 5.7.1`.
    Blocked(String),
    /// The sender's domain does not allow this client to send for it (SPF `fail`): `550 5.7.23`
    /// with the explanation given.
    SpfFail(String),
    /// Accepted, with a header field to add to the message (e.g. `Received-SPF:`).
    AcceptTagged(String),
    /// The recipient would be refused, but this node is not in contact with its cluster or
    /// not caught up, so its table may be stale: `451 4.3.0`, never a `550`. The reason is
    /// logged.
    NotCurrent(String),
}

/// Where accepted messages go: the replicated queue.
pub trait MessageQueue: Send + Sync + 'static {
    /// Why new connections are refused now (`421` at connect), e.g. the queue has stopped.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// The node's clock, in milliseconds since the epoch: the receive time of messages.
    fn now_ms(&self) -> u64;

    /// Commits the message; `Ok` means it is durable on a majority of the cluster.
    fn commit(&self, message: Enqueue) -> impl Future<Output = Result<(), CommitError>> + Send;

    /// Makes the mail queued for `domain` due now (ETRN from an allowed client).
    fn flush_destination(&self, domain: &str) -> impl Future<Output = EtrnReply> + Send;
}

/// What the front door checks before it takes mail: [`policy::FrontDoorPolicy`] in the
/// server.
pub trait RecipientPolicy: Send + Sync + 'static {
    /// Whether the queue can take more mail now: false when it is over its quota or the disk
    /// is nearly full (checked at MAIL: `452 4.3.1`).
    fn has_room(&self) -> bool;

    /// Decides whether mail from `client` and `sender` to a recipient in a protected domain is
    /// accepted (called at RCPT, after the relay check). `address` is lower case.
    fn check_recipient(
        &self,
        client: IpAddr,
        helo: &str,
        sender: &str,
        address: &str,
    ) -> impl Future<Output = RcptCheck> + Send;

    /// Whether `client` may ask for the delivery of `domain`'s mail (ETRN).
    fn may_etrn(&self, client: IpAddr, domain: &str) -> impl Future<Output = bool> + Send;
}

/// Hands out queue ids for one node: receive time, node id and a sequence number.
#[derive(Debug)]
pub struct IdGenerator {
    node: u64,
    seq: AtomicU64,
}

impl IdGenerator {
    /// A generator for `node`. The sequence starts at a random point so that ids stay unique
    /// even if the clock steps back across a restart.
    pub fn new(node: u64) -> Self {
        IdGenerator {
            node,
            seq: AtomicU64::new(rand::random::<u32>() as u64),
        }
    }

    /// The next id, for a message received at `millis`.
    pub fn next(&self, millis: u64) -> MessageId {
        MessageId::new(millis, self.node, self.seq.fetch_add(1, Ordering::Relaxed))
    }
}
