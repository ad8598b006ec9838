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
//! The transport ([`network`], [`service`]) is tonic gRPC: one lazily connected channel per peer,
//! Raft messages as versioned postcard payloads, snapshots streamed file by file, and the
//! target node id checked on every Raft RPC so a message never reaches the wrong node.
//!
//! What it does not own: SMTP, the admin API, and the meaning of commands.

pub mod config;
pub mod error;
pub mod network;
mod node;
pub mod service;

pub use config::ClusterConfig;
pub use error::{MembershipError, ProposeError, ReadError};
pub use node::{MemberStatus, NodeStatus, RaftNode, Role, WeakRaftNode};

/// gRPC metadata key naming the node a request is meant for.
pub const TARGET_NODE_HEADER: &str = "x-mxraft-target-node";
/// gRPC metadata key naming the current leader, sent back with "not leader" errors.
pub const LEADER_HEADER: &str = "x-mxraft-leader";
/// Largest gRPC message between nodes: a replication batch or one message of the maximum size.
pub const MAX_GRPC_MESSAGE: usize = 256 * 1024 * 1024;
