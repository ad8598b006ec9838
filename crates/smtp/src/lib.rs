//! Inbound SMTP for mxraft: the front door every node runs.
//!
//! A connection becomes a [`session`]: greeting → EHLO/HELO → MAIL → RCPT… → DATA → end of data.
//! Each verb lives in its own file under `session/`. Policy is checked as early as it can be: the
//! recipient domain at RCPT ([`address::DomainPolicy`]), the declared size at MAIL. The DATA
//! bytes go through [`data::DataDecoder`], which ends the message only at `CRLF.CRLF` and flags
//! bare CR/LF, NUL and over-long lines.
//!
//! At the end of data the session builds an [`mxraft_queue::Enqueue`] (queue id and receive time
//! chosen here, once) and hands it to a [`Submitter`] — in the server, the Raft node. The client
//! gets `250 2.0.0 Ok: queued as <id>` only when the submitter reports the command committed;
//! otherwise `451 4.3.0`, so the sender keeps responsibility for the message.
//!
//! What it does not own: consensus and storage (behind [`Submitter`]), and delivery.

pub mod address;
pub mod command;
pub mod config;
pub mod data;
mod limits;
pub mod memory;
pub mod reply;
mod server;
mod session;
pub mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

pub use address::DomainPolicy;
pub use config::SmtpConfig;
pub use reply::Reply;
pub use server::{SmtpContext, serve};
pub use tls::{TlsError, TlsStore};

use mxraft_queue::{Enqueue, MessageId};

/// The queue could not take the message now.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SubmitError(pub String);

/// The answer to an ETRN request (RFC 1985).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtrnReply {
    /// Delivery of the domain's queued mail starts now (`250`).
    Started,
    /// Nothing is queued for the domain (`251`).
    NothingQueued,
    /// This client may not ask for this domain (`459`).
    NotAllowed,
    /// The request could not be recorded now (`458`).
    Unavailable,
}

/// Whether a recipient is known, as recipient validation decides it.
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
pub trait Submitter: Send + Sync + 'static {
    /// Why new connections are refused now (`421` at connect), e.g. the queue has stopped.
    fn refuse_connection(&self) -> Option<String> {
        None
    }

    /// Commits the message; `Ok` means it is durable on a majority of the cluster.
    fn submit(&self, message: Enqueue) -> impl Future<Output = Result<(), SubmitError>> + Send;

    /// Decides whether mail from `client` and `sender` to a recipient in a protected domain is
    /// accepted (called at RCPT, after the relay check): the domain's blocklists, recipient
    /// validation and greylisting. `address` is lower case.
    fn check_recipient(
        &self,
        client: std::net::IpAddr,
        helo: &str,
        sender: &str,
        address: &str,
    ) -> impl Future<Output = RcptCheck> + Send;

    /// Whether the queue can take more mail now: false when it is over its quota or the disk
    /// is nearly full (checked at MAIL: `452 4.3.1`).
    fn has_room(&self) -> bool;

    /// Handles `ETRN domain` from `client`.
    fn etrn(
        &self,
        client: std::net::IpAddr,
        domain: &str,
    ) -> impl Future<Output = EtrnReply> + Send;
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
