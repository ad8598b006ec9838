//! [`RaftNode`]: one openraft instance and what the server asks of it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver;
use openraft::{Config, RaftMetrics, ServerState, SnapshotPolicy};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use mxraft_proto::cluster::NodeAddresses;
use mxraft_proto::tls::TlsSource;
use mxraft_queue::QueueCommand;
use mxraft_store::{LogStore, NodeInfo, StateMachineStore, TypeConfig};

use crate::clock::Clock;
use crate::config::ClusterConfig;
use crate::error::{StartError, TransferError};
use crate::health::Contact;
use crate::network::{NetworkFactory, Peers};
use crate::skew::ClockSkewed;

/// The openraft instance type of mxraft.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;

/// Pause before retrying a call that failed.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A member's role as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The current leader.
    Leader,
    /// A voter that is not the leader.
    Follower,
    /// A non-voting member catching up.
    Learner,
}

impl Role {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Learner => "learner",
        }
    }
}

/// One member, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Node id.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// Its addresses.
    pub info: NodeInfo,
    /// Highest log index replicated to it (known only on the leader).
    pub matched_index: Option<u64>,
    /// How long ago the leader last heard from it, in milliseconds (known only on the leader;
    /// 0 for the leader itself). `None` there: never heard from since this node leads.
    pub last_contact_ms: Option<u64>,
}

/// This node's view of the cluster.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// This node.
    pub node_id: u64,
    /// The leader this node knows of.
    pub leader_id: Option<u64>,
    /// Current term.
    pub term: u64,
    /// This node's Raft state.
    pub state: &'static str,
    /// The members of the current membership (voters first, then learners), by id.
    pub members: Vec<MemberStatus>,
    /// Last log index on this node.
    pub last_log_index: u64,
    /// Committed index known to this node.
    pub committed_index: u64,
    /// Applied index of this node's state machine.
    pub applied_index: u64,
}

/// Checks a command a peer proposes before the leader appends it (defence in depth: peers are
/// authenticated, but a compromised or buggy one must not queue mail the front door would
/// refuse). The error says what is wrong.
pub type ProposalCheck = Arc<dyn Fn(&QueueCommand) -> Result<(), RefusedProposal> + Send + Sync>;

/// Why the leader refuses a proposed command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RefusedProposal(pub String);

/// What a node is started with.
pub struct NodeSetup {
    /// This node's id.
    pub id: u64,
    /// The addresses other nodes and operators reach this one at.
    pub info: NodeInfo,
    /// The `[cluster]` configuration.
    pub config: ClusterConfig,
    /// The Raft log (which also keeps the cluster id).
    pub log: LogStore,
    /// The queue state machine.
    pub state_machine: StateMachineStore,
    /// Mutual TLS with the cluster CA; `None` only with `cluster.insecure_plaintext`.
    pub tls: Option<Arc<TlsSource>>,
    /// The check of commands proposed by peers.
    pub check_proposal: ProposalCheck,
    /// This node's wall clock (the system clock outside tests).
    pub clock: Clock,
}

pub(crate) struct Core {
    pub(crate) id: u64,
    pub(crate) info: NodeInfo,
    pub(crate) raft: Raft,
    pub(crate) state_machine: StateMachineStore,
    pub(crate) log: LogStore,
    pub(crate) peers: Peers,
    pub(crate) config: ClusterConfig,
    pub(crate) check_proposal: ProposalCheck,
    pub(crate) contact: Contact,
    pub(crate) clock: Clock,
    pub(crate) skews: crate::skew::SkewTracker,
    pub(crate) secure: bool,
    /// Whether this node takes part in Raft (answers votes, appends, snapshots). False while a
    /// pristine node has not yet settled that it is new to the cluster: a node that lost its
    /// data must not be refilled by the leader under its old id, since it forgot its votes.
    pub(crate) admitted: std::sync::atomic::AtomicBool,
    pub(crate) membership_lock: tokio::sync::Mutex<()>,
    pub(crate) shutdown: CancellationToken,
}

/// A running Raft node. Cheap to clone.
#[derive(Clone)]
pub struct RaftNode {
    pub(crate) core: Arc<Core>,
}

/// A handle that does not keep the node alive: the gRPC services hold this, so connections
/// that peers keep open never keep a stopped node's databases open.
#[derive(Clone)]
pub struct WeakRaftNode {
    id: u64,
    core: std::sync::Weak<Core>,
}

impl WeakRaftNode {
    /// The node, unless it has been shut down and dropped.
    pub fn upgrade(&self) -> Option<RaftNode> {
        self.core.upgrade().map(|core| RaftNode { core })
    }

    /// The node's id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

fn raft_config(c: &ClusterConfig) -> Result<Arc<Config>, openraft::ConfigError> {
    let config = Config {
        cluster_name: "mxraft".into(),
        heartbeat_interval: c.heartbeat_interval.as_millis() as u64,
        election_timeout_min: c.election_timeout_min.as_millis() as u64,
        election_timeout_max: c.election_timeout_max.as_millis() as u64,
        install_snapshot_timeout: c.install_snapshot_timeout.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(c.snapshot_after_entries),
        max_in_snapshot_log_to_keep: c.log_entries_kept,
        replication_lag_threshold: c.snapshot_after_entries.max(c.log_entries_kept),
        enable_pre_vote: Some(true),
        broadcast_submitted_on_append: Some(true),
        ..Default::default()
    };
    config.validate().map(Arc::new)
}

impl RaftNode {
    /// Starts Raft on the given stores.
    pub async fn start(setup: NodeSetup) -> Result<RaftNode, StartError> {
        let NodeSetup {
            id,
            info,
            config,
            log,
            state_machine,
            tls,
            check_proposal,
            clock,
        } = setup;
        let cluster_id = log.cluster_id().map_err(StartError::Storage)?;
        let secure = tls.is_some();
        let peers = Peers::new(tls, cluster_id);
        let raft_config = raft_config(&config).map_err(|e| StartError::Config(e.to_string()))?;
        let network = NetworkFactory::new(id, peers.clone());
        let raft = Raft::new(id, raft_config, network, log.clone(), state_machine.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let initialized = raft.is_initialized().await.unwrap_or(false);
        Ok(RaftNode {
            core: Arc::new(Core {
                id,
                info,
                raft,
                state_machine,
                log,
                peers,
                config,
                check_proposal,
                contact: Contact::default(),
                clock,
                skews: crate::skew::SkewTracker::default(),
                secure,
                admitted: std::sync::atomic::AtomicBool::new(initialized),
                membership_lock: tokio::sync::Mutex::new(()),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// This node's wall clock; every timestamp it puts into a command comes from it.
    pub fn clock(&self) -> &Clock {
        &self.core.clock
    }

    /// The nodes whose clocks the leader found too far from its own in the last minute (on
    /// other nodes: none). They are given no delivery claims.
    pub fn skewed_nodes(&self) -> Vec<u64> {
        self.core.skews.skewed(self.core.config.max_clock_skew)
    }

    /// Fault injection for in-process tests: while `on`, every cluster RPC this node sends or
    /// receives fails, as if its links to the other nodes were down (its SMTP and admin ports,
    /// and its connections to primaries, are untouched). No configuration or RPC reaches it.
    pub fn set_isolated(&self, on: bool) {
        tracing::warn!(
            node_id = self.core.id,
            isolated = on,
            "cluster traffic cut for a test"
        );
        self.core.peers.set_isolated(on);
    }

    /// `cluster.max_clock_skew`: how far apart two nodes' clocks may be.
    pub fn max_clock_skew(&self) -> Duration {
        self.core.config.max_clock_skew
    }

    /// On the leader: checks the clock of `node` from the time it sent a proposal at.
    pub(crate) fn observe_clock(&self, node: u64, sent_at_ms: u64) -> Result<(), ClockSkewed> {
        self.core.skews.observe(
            node,
            sent_at_ms,
            self.core.clock.now_ms(),
            self.core.config.clock_skew_warn,
            self.core.config.max_clock_skew,
        )
    }

    /// The id of the cluster this node belongs to, once known.
    pub fn cluster_id(&self) -> Option<String> {
        self.core.peers.cluster_id()
    }

    /// Whether this node takes part in Raft yet (see [`settle_membership`](Self::settle_membership)).
    pub fn is_admitted(&self) -> bool {
        self.core
            .admitted
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn admit(&self) {
        self.core
            .admitted
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the cluster port checks certificates (false only with
    /// `cluster.insecure_plaintext`).
    pub fn is_secure(&self) -> bool {
        self.core.secure
    }

    /// A handle that does not keep the node alive.
    pub fn downgrade(&self) -> WeakRaftNode {
        WeakRaftNode {
            id: self.core.id,
            core: Arc::downgrade(&self.core),
        }
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.core.id
    }

    /// This node's addresses.
    pub fn info(&self) -> &NodeInfo {
        &self.core.info
    }

    /// The openraft instance (for metrics and tests).
    pub fn raft(&self) -> &Raft {
        &self.core.raft
    }

    /// The local state machine.
    pub fn state_machine(&self) -> &StateMachineStore {
        &self.core.state_machine
    }

    /// The local Raft log.
    pub fn log_store(&self) -> &LogStore {
        &self.core.log
    }

    /// The latest Raft metrics.
    pub fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.core.raft.metrics().borrow_watched().clone()
    }

    /// Whether this node holds Raft state (it bootstrapped or was joined).
    pub async fn is_initialized(&self) -> bool {
        self.core.raft.is_initialized().await.unwrap_or(false)
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> NodeStatus {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let matched = m.replication.clone().unwrap_or_default();
        let heartbeat = m.heartbeat.clone().unwrap_or_default();
        let leading = m.current_leader == Some(self.core.id);
        let mut members: Vec<MemberStatus> = membership
            .nodes()
            .map(|(id, info)| MemberStatus {
                id: *id,
                role: if Some(*id) == m.current_leader {
                    Role::Leader
                } else if voters.contains(id) {
                    Role::Follower
                } else {
                    Role::Learner
                },
                info: info.clone(),
                matched_index: match matched.get(id) {
                    Some(l) => Some(l.as_ref().map(|l| l.index).unwrap_or(0)),
                    // The leader holds its own log, whether or not openraft lists it.
                    None if leading && *id == self.core.id => m.last_log_index,
                    None => None,
                },
                last_contact_ms: if !leading {
                    None
                } else if *id == self.core.id {
                    Some(0)
                } else {
                    heartbeat
                        .get(id)
                        .cloned()
                        .flatten()
                        .map(|t| t.elapsed().as_millis() as u64)
                },
            })
            .collect();
        members.sort_by_key(|s| (s.role == Role::Learner, s.id));
        NodeStatus {
            node_id: self.core.id,
            leader_id: m.current_leader,
            term: m.current_term,
            state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            members,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: m.local_committed.as_ref().map(|l| l.index).unwrap_or(0),
            applied_index: m.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
        }
    }

    /// If this node leads, asks the most caught-up other voter to take over, and waits up to
    /// `wait` until the leadership has moved: a graceful stop then costs the cluster no
    /// election timeout. Returns the node that took over, if one did.
    pub async fn hand_over_leadership(&self, wait: Duration) -> Option<u64> {
        match self.transfer_leadership(None, wait).await {
            Ok(to) => Some(to),
            Err(TransferError::NotLeader { .. } | TransferError::Alone) => None,
            Err(e) => {
                warn!(error = %e, "leadership not handed over; stopping anyway");
                None
            }
        }
    }

    /// Asks `target` (or, when `None`, the most caught-up voter other than this node) to take
    /// over the leadership, and waits up to `wait` until a node other than this one leads.
    /// Only the leader can do this. Returns the new leader.
    pub async fn transfer_leadership(
        &self,
        target: Option<u64>,
        wait: Duration,
    ) -> Result<u64, TransferError> {
        let m = self.metrics();
        let me = self.core.id;
        if m.current_leader != Some(me) {
            return Err(TransferError::NotLeader {
                node: me,
                leader: m.current_leader,
            });
        }
        let matched = m.replication.clone().unwrap_or_default();
        let mut voters = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != me);
        let target = match target {
            Some(t) if voters.any(|v| v == t) => t,
            Some(t) => return Err(TransferError::NoSuchVoter(t)),
            None => voters
                .max_by_key(|id| matched.get(id).cloned().flatten().map(|l| l.index))
                .ok_or(TransferError::Alone)?,
        };
        self.core
            .raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| TransferError::Stopped(e.to_string()))?;
        let moved = self
            .core
            .raft
            .wait(Some(wait))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "leadership handed over",
            )
            .await;
        match moved {
            Ok(m) => {
                let to = m.current_leader.unwrap_or(target);
                info!(to, "leadership handed over");
                Ok(to)
            }
            Err(_) => Err(TransferError::Timeout { target, wait }),
        }
    }

    /// Stops background work and Raft. The stores close once the last handle is dropped.
    pub async fn shutdown(&self) {
        self.core.shutdown.cancel();
        if let Err(e) = self.core.raft.shutdown().await {
            warn!(error = %e, "raft did not stop cleanly");
        }
    }
}

pub(crate) fn addresses_of(info: &NodeInfo) -> NodeAddresses {
    NodeAddresses {
        cluster_addr: info.cluster_addr.clone(),
        smtp_addr: info.smtp_addr.clone(),
        admin_addr: info.admin_addr.clone(),
    }
}

pub(crate) fn info_of(a: NodeAddresses) -> NodeInfo {
    NodeInfo {
        cluster_addr: a.cluster_addr,
        smtp_addr: a.smtp_addr,
        admin_addr: a.admin_addr,
    }
}
