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
