//! Errors of the Raft node, and their one mapping to gRPC status for the cluster service.

use tonic::{Code, Status};

/// The node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Raft configuration is invalid.
    #[error("invalid raft configuration: {0}")]
    Config(String),
    /// Reading the node's stored state failed.
    #[error("cannot read the node's state: {0}")]
    Storage(std::io::Error),
    /// openraft refused to start.
    #[error("cannot start raft: {0}")]
    Raft(String),
}

/// A proposal was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// No commit within the commit timeout (no leader, no quorum, or too slow). The command may
    /// still commit later.
    #[error("not committed within {0:?}")]
    Timeout(std::time::Duration),
    /// This node's Raft has stopped (storage failure or shutdown).
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// The command was refused as malformed.
    #[error("invalid command: {0}")]
    Invalid(String),
    /// The leader refused the proposal: this node's clock is too far from the leader's.
    #[error("{0}")]
    ClockSkew(String),
}

/// Leadership could not be handed over.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// This node does not lead; only the leader can hand leadership over.
    #[error("node {node} is not the leader{}", leader.map(|l| format!("; node {l} is")).unwrap_or_default())]
    NotLeader {
        /// This node.
        node: u64,
        /// The leader it knows of.
        leader: Option<u64>,
    },
    /// The target is not a voter of the cluster (or is this node).
    #[error("node {0} is not a voter other than the leader")]
    NoSuchVoter(u64),
    /// The cluster has no other voter.
    #[error("the cluster has no other voter to hand leadership to")]
    Alone,
    /// The target did not take over in time.
    #[error("node {target} did not take over within {wait:?}")]
    Timeout {
        /// The node asked to take over.
        target: u64,
        /// How long was waited.
        wait: std::time::Duration,
    },
    /// This node's Raft has stopped.
    #[error("raft stopped: {0}")]
    Stopped(String),
}

/// A linearizable read could not be ordered.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No leader with a quorum answered in time.
    #[error("no leader with a quorum: {0}")]
    NoQuorum(String),
    /// This node's Raft has stopped.
    #[error("raft stopped: {0}")]
    Stopped(String),
}

/// A pristine node has not settled its membership yet (it retries), or cannot.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// This node's recorded cluster is another one.
    #[error("node {node} belongs to cluster {own}, not to cluster {other}")]
    OtherCluster {
        /// This node.
        node: u64,
        /// The cluster it belongs to.
        own: String,
        /// The cluster it was asked to take part in.
        other: String,
    },
    /// Recording the cluster id failed.
    #[error("cannot record the cluster id: {0}")]
    Storage(std::io::Error),
    /// openraft refused to initialize the cluster.
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    /// A peer answers with this node's own id.
    #[error("peer {peer} answers as node {id}, this node's own id: each node needs its own id")]
    DuplicateId {
        /// The peer's address.
        peer: String,
        /// The id it answers with.
        id: u64,
    },
    /// The cluster refuses this node.
    #[error("the cluster refuses this node: {0}")]
    Refused(String),
    /// This node is a voter but its data directory is empty: it lost its votes and log.
    #[error(
        "node {id} is a voter of cluster {cluster} but this data directory is empty: it lost its \
         votes and log, so it must not take part under id {id}; `mxraftctl cluster remove {id}` \
         through another node, then this node joins as a new member (or start the replacement \
         under a new node.id)"
    )]
    LostVoter {
        /// This node.
        id: u64,
        /// The cluster.
        cluster: String,
    },
    /// No member added this node (the last error).
    #[error("no member added this node: {0}")]
    NotAdded(String),
    /// Some peers did not answer, so whether a cluster exists is unknown.
    #[error("cannot tell whether a cluster exists: no answer from {0}")]
    NoAnswer(String),
    /// Every peer answered; none is a member of a cluster yet.
    #[error("no peer is a member of a cluster yet")]
    NoCluster,
}

/// A membership change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The request contradicts the current membership.
    #[error("{0}")]
    Refused(String),
    /// The node to remove is not a member.
    #[error("node {0} is not a member")]
    NotMember(u64),
    /// No leader could be reached, or it did not answer in time.
    #[error("no leader available: {0}")]
    Unavailable(String),
    /// Raft rejected the change.
    #[error("membership change failed: {0}")]
    Failed(String),
}

impl From<ProposeError> for Status {
    fn from(e: ProposeError) -> Status {
        let code = match e {
            ProposeError::Timeout(_) => Code::DeadlineExceeded,
            ProposeError::Stopped(_) => Code::Unavailable,
            ProposeError::Invalid(_) => Code::InvalidArgument,
            // A forwarded proposal refused for its clock: the proposer learns it by this code.
            ProposeError::ClockSkew(_) => Code::OutOfRange,
        };
        Status::new(code, e.to_string())
    }
}

impl From<TransferError> for Status {
    fn from(e: TransferError) -> Status {
        let code = match e {
            TransferError::NotLeader { .. } | TransferError::Alone => Code::FailedPrecondition,
            TransferError::NoSuchVoter(_) => Code::InvalidArgument,
            TransferError::Timeout { .. } => Code::DeadlineExceeded,
            TransferError::Stopped(_) => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}

impl From<ReadError> for Status {
    fn from(e: ReadError) -> Status {
        Status::unavailable(e.to_string())
    }
}

impl From<MembershipError> for Status {
    fn from(e: MembershipError) -> Status {
        let code = match e {
            MembershipError::Refused(_) => Code::FailedPrecondition,
            MembershipError::NotMember(_) => Code::NotFound,
            MembershipError::Unavailable(_) => Code::Unavailable,
            MembershipError::Failed(_) => Code::Aborted,
        };
        Status::new(code, e.to_string())
    }
}

/// Reads a [`MembershipError`] back from the status a remote node answered `change` with.
pub(crate) fn membership_error_from_status(
    status: &Status,
    change: &mxraft_proto::cluster::membership_request::Change,
) -> MembershipError {
    use mxraft_proto::cluster::membership_request::Change;
    let msg = status.message().to_owned();
    match (status.code(), change) {
        (Code::NotFound, Change::Remove(id)) => MembershipError::NotMember(*id),
        (Code::FailedPrecondition | Code::NotFound, _) => MembershipError::Refused(msg),
        (Code::Unavailable | Code::DeadlineExceeded, _) => MembershipError::Unavailable(msg),
        _ => MembershipError::Failed(msg),
    }
}
