//! Whether this node may answer for the cluster: Raft running, a member, in recent contact
//! with a leader that holds a quorum, and caught up with what that leader committed.
//!
//! The front door asks before it refuses a recipient (a stale recipient table must never turn
//! into a `550`), and the readiness checks (`/readyz`, gRPC health) report the same answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::{Instant as _, ServerState};

use crate::node::RaftNode;

/// When this node last heard from its leader (a follower or learner) — kept by the cluster
/// service, which sees the leader's appends.
#[derive(Debug)]
pub(crate) struct Contact {
    base: Instant,
    /// Milliseconds after `base` plus one; 0 = never.
    last: AtomicU64,
}

impl Default for Contact {
    fn default() -> Self {
        Contact {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Contact {
    /// Records contact now.
    pub(crate) fn note(&self) {
        let ms = self.base.elapsed().as_millis() as u64 + 1;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long ago the last contact was.
    pub(crate) fn since(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.base
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms - 1)),
            ),
        }
    }
}

/// Why this node cannot answer for the cluster now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotCurrent {
    /// Raft stopped on a fatal error.
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// This node is not in the cluster's membership (pristine, refused, or removed).
    #[error("this node is not a member of a cluster")]
    NotMember,
    /// No leader is known.
    #[error("no leader is known")]
    NoLeader,
    /// The last contact with a leader (or, on the leader, with a quorum) is too old.
    #[error("no contact with the {0} for {1:?}")]
    OutOfContact(&'static str, Duration),
    /// Committed entries are not applied here yet.
    #[error("applied up to {applied}, committed up to {committed}")]
    Behind {
        /// Last applied index.
        applied: u64,
        /// Last committed index known here.
        committed: u64,
    },
}

impl RaftNode {
    /// The fatal error Raft stopped with, if it did.
    pub fn fatal_error(&self) -> Option<String> {
        self.metrics().running_state.err().map(|e| e.to_string())
    }

    /// Whether this node answers for the cluster now, with up to `slack` committed entries not
    /// yet applied.
    pub fn current(&self, slack: u64) -> Result<(), NotCurrent> {
        let m = self.metrics();
        if let Err(e) = &m.running_state {
            return Err(NotCurrent::Stopped(e.to_string()));
        }
        if m.state == ServerState::Shutdown {
            return Err(NotCurrent::Stopped("shut down".into()));
        }
        if m.membership_config
            .membership()
            .get_node(&self.id())
            .is_none()
        {
            return Err(NotCurrent::NotMember);
        }
        let bound = self.core.config.max_staleness;
        let leader = m.current_leader.ok_or(NotCurrent::NoLeader)?;
        let alone = m
            .membership_config
            .membership()
            .voter_ids()
            .all(|v| v == self.id());
        let since = if leader == self.id() && alone {
            // A single voter is its own quorum.
            Some(("quorum", Duration::ZERO))
        } else if leader == self.id() {
            m.last_quorum_acked
                .as_ref()
                .map(|at| (**at).elapsed())
                .map(|d| ("quorum", d))
        } else {
            self.core.contact.since().map(|d| ("leader", d))
        };
        match since {
            None => return Err(NotCurrent::OutOfContact("leader", bound)),
            Some((who, d)) if d > bound => return Err(NotCurrent::OutOfContact(who, d)),
            Some(_) => {}
        }
        let applied = m.last_applied.as_ref().map(|l| l.index).unwrap_or(0);
        let committed = m.local_committed.as_ref().map(|l| l.index).unwrap_or(0);
        if applied + slack < committed {
            return Err(NotCurrent::Behind { applied, committed });
        }
        Ok(())
    }

    /// Like [`current`](Self::current) with no slack, but waits up to `wait` for the committed
    /// entries to be applied: what a node checks before it answers that something does not
    /// exist.
    pub async fn wait_current(&self, wait: Duration) -> Result<(), NotCurrent> {
        match self.current(0) {
            Err(NotCurrent::Behind { committed, .. }) => {
                self.core
                    .raft
                    .wait(Some(wait))
                    .applied_index_at_least(Some(committed), "caught up")
                    .await
                    .map_err(|_| {
                        let applied = self.metrics().last_applied.map(|l| l.index).unwrap_or(0);
                        NotCurrent::Behind { applied, committed }
                    })?;
                self.current(0)
            }
            other => other,
        }
    }

    /// Records that the leader reached this node (called by the cluster service).
    pub(crate) fn note_leader_contact(&self) {
        self.core.contact.note();
    }
}
