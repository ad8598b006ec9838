//! The openraft type configuration of mxraft.

use serde::{Deserialize, Serialize};

use mxraft_queue::{CommandResult, QueueCommand};

openraft::declare_raft_types!(
    /// openraft types for the replicated mail queue: log entries carry a [`QueueCommand`] and
    /// applying one answers a [`CommandResult`].
    pub TypeConfig:
        D = QueueCommand,
        R = CommandResult,
        NodeId = u64,
        Node = NodeInfo,
);

/// How to reach a cluster member; stored in the Raft membership so every node knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Address (`host:port`) of the internal cluster gRPC service (Raft and forwarding).
    pub cluster_addr: String,
    /// Address (`host:port`) of the SMTP listener.
    pub smtp_addr: String,
    /// Address (`host:port`) of the admin gRPC service.
    pub admin_addr: String,
}

/// A Raft log id of this configuration.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A Raft log entry of this configuration.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A vote of this configuration.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A membership with the log id that introduced it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata of this configuration.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// Wraps any error as the `io::Error` that openraft's storage traits return.
pub fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
