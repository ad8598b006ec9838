//! The Raft node of mxraft: consensus over the replicated queue, and the network between nodes.
//!
//! A [`RaftNode`] owns one openraft instance over the stores of `mxraft-store`. It offers what
//! the rest of the server needs, whichever node is leader:
//!
//! - [`RaftNode::propose`]: commit a queue command and return its applied result. On a follower
//!   the command is forwarded to the leader over the internal gRPC service; the caller (an SMTP
//!   session) stays where it is. Retries after an unknown outcome are safe because commands are
//!   idempotent (an `Enqueue` carries its id).
//! - [`RaftNode::read_barrier`]: make a following read of the local state machine linearizable
//!   (the leader confirms its quorum and names the index to wait for).
//! - [`RaftNode::join`] / [`RaftNode::remove`]: membership changes, one at a time, on the leader.
//! - [`RaftNode::status`]: the node's view of the cluster.
//!
//! The transport ([`network`], [`service`]) is tonic gRPC over mutual TLS with the cluster CA:
//! one lazily connected channel per peer, Raft messages as versioned postcard payloads,
//! snapshots streamed file by file with a manifest and digests. Every RPC carries the target
//! node id and the cluster id, both checked, and a caller speaks only for the node id its
//! certificate names.
//!
//! A pristine node settles its membership before it takes part ([`RaftNode::settle_membership`]):
//! it bootstraps only when every peer it knows answers and none belongs to a cluster, so a node
//! that lost its disk joins (or is refused) instead of starting a second cluster.
//!
//! What it does not own: SMTP, the admin API, and the meaning of commands.

mod clock;
pub mod config;
pub mod error;
mod health;
mod membership;
pub mod network;
mod node;
mod propose;
pub mod service;
mod settle;
mod skew;
mod snapshot;

pub use clock::{Clock, now_ms};
pub use config::ClusterConfig;
pub use error::{MembershipError, ProposeError, ReadError, SettleError, StartError, TransferError};
pub use health::NotCurrent;
pub use node::{
    MemberStatus, NodeSetup, NodeStatus, ProposalCheck, RaftNode, RefusedProposal, Role,
    WeakRaftNode,
};
pub use skew::ClockSkewed;
/// Largest gRPC message between nodes: a replication batch or one message of the maximum size.
pub const MAX_GRPC_MESSAGE: usize = 256 * 1024 * 1024;
