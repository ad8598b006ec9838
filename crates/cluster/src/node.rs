//! [`RaftNode`]: one openraft instance and what the server asks of it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Config, RaftMetrics, ReadPolicy, ServerState, SnapshotPolicy};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use mxraft_proto::cluster::{
    IdentifyReply, IdentifyRequest, JoinNode, MembershipRequest, NodeAddresses, ProposeRequest,
    ReadIndexRequest, membership_request,
};
use mxraft_proto::tls::TlsSource;
use mxraft_queue::{Clock, CommandResult, QueueCommand};
use mxraft_store::{LogStore, NodeInfo, StateMachineStore, TypeConfig};

use crate::config::ClusterConfig;
use crate::error::{
    MembershipError, ProposeError, ReadError, StartError, membership_error_from_status,
};
use crate::health::Contact;
use crate::network::{NetworkFactory, Peers};
use crate::skew::ClockSkewed;

/// The openraft instance type of mxraft.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;

/// Pause before retrying a call that failed.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

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
pub type ProposalCheck = Arc<dyn Fn(&QueueCommand) -> Result<(), String> + Send + Sync>;

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
    membership_lock: tokio::sync::Mutex<()>,
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

fn raft_config(c: &ClusterConfig) -> Result<Arc<Config>, String> {
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
    config.validate().map(Arc::new).map_err(|e| e.to_string())
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
        let raft_config = raft_config(&config).map_err(StartError::Config)?;
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

    /// Records `cluster_id` as this node's cluster (on disk first). Refuses a different id than
    /// the one already recorded.
    pub(crate) fn adopt_cluster_id(&self, cluster_id: &str) -> Result<(), String> {
        match self.cluster_id() {
            Some(own) if own == cluster_id => Ok(()),
            Some(own) => Err(format!(
                "node {} belongs to cluster {own}, not to cluster {cluster_id}",
                self.core.id
            )),
            None => {
                self.core
                    .log
                    .save_cluster_id(cluster_id)
                    .map_err(|e| format!("cannot record the cluster id: {e}"))?;
                self.core.peers.set_cluster_id(cluster_id);
                info!(cluster_id, "cluster id recorded");
                Ok(())
            }
        }
    }

    /// Whether this node takes part in Raft yet (see [`settle_membership`](Self::settle_membership)).
    pub fn is_admitted(&self) -> bool {
        self.core
            .admitted
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn admit(&self) {
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

    /// The latest Raft metrics.
    pub fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.core.raft.metrics().borrow_watched().clone()
    }

    /// Whether this node holds Raft state (it bootstrapped or was joined).
    pub async fn is_initialized(&self) -> bool {
        self.core.raft.is_initialized().await.unwrap_or(false)
    }

    /// Creates a one-node cluster made of this node, with a new random cluster id, unless it
    /// already holds Raft state.
    pub async fn bootstrap(&self) -> Result<bool, String> {
        if self.is_initialized().await {
            return Ok(false);
        }
        let cluster_id = match self.cluster_id() {
            Some(id) => id,
            None => {
                let id = format!("{:032x}", rand::random::<u128>());
                self.adopt_cluster_id(&id)?;
                id
            }
        };
        let members = BTreeMap::from([(self.core.id, self.core.info.clone())]);
        self.admit();
        match self.core.raft.initialize(members).await {
            Ok(()) => {
                info!(
                    node_id = self.core.id,
                    cluster_id, "bootstrapped a new cluster"
                );
                Ok(true)
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(format!("bootstrap failed: {e}")),
        }
    }

    /// In the background, until this node holds Raft state: asks `peers` who they are; if one
    /// belongs to a cluster, joins it through them; if all answer and none does, and `bootstrap`
    /// is set, creates the cluster. A node that cannot tell (a peer does not answer) waits, so
    /// a node that lost its disk never starts a second cluster beside the one its peers form.
    pub fn settle_membership(&self, bootstrap: bool, peers: Vec<String>) {
        let node = self.clone();
        tokio::spawn(async move {
            let token = node.core.shutdown.clone();
            let mut attempt = 0u32;
            loop {
                if node.is_initialized().await {
                    return;
                }
                let step = tokio::select! {
                    _ = token.cancelled() => return,
                    step = node.settle_step(bootstrap, &peers) => step,
                };
                match step {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => {
                        if attempt.is_multiple_of(10) {
                            warn!(error = %e, "not a member of a cluster yet; retrying");
                        }
                    }
                }
                attempt += 1;
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }

    /// One round of [`settle_membership`](Self::settle_membership); `Ok(true)` once settled.
    async fn settle_step(&self, bootstrap: bool, peers: &[String]) -> Result<bool, String> {
        let mut silent = Vec::new();
        let mut members = Vec::new();
        for peer in peers {
            match self.identify(peer).await {
                Ok(reply) if reply.node_id == self.core.id => {
                    return Err(format!(
                        "peer {peer} answers as node {}, this node's own id: each node needs its own id",
                        reply.node_id
                    ));
                }
                Ok(reply) if reply.initialized && !reply.cluster_id.is_empty() => {
                    members.push((peer.clone(), reply));
                }
                Ok(_) => {}
                Err(e) => silent.push(format!("{peer} ({})", e.message())),
            }
        }
        if let Some((_, reply)) = members.first() {
            self.adopt_cluster_id(&reply.cluster_id)?;
            if members
                .iter()
                .any(|(_, r)| r.voters.contains(&self.core.id))
            {
                // Still a voter, but this disk holds nothing: the votes and log it had are
                // lost. Ask anyway, so the leader's answer (how to replace it) is logged, but
                // take no part in Raft under this id.
                return match self.ask_to_join(&members[0].0).await {
                    Err(MembershipError::Refused(m)) => {
                        Err(format!("the cluster refuses this node: {m}"))
                    }
                    _ => Err(format!(
                        "node {id} is a voter of cluster {cluster} but this data directory is empty: it \
                         lost its votes and log, so it must not take part under id {id}; stop it, \
                         `mxraftctl cluster remove {id}`, and start the replacement under a new node.id",
                        id = self.core.id,
                        cluster = reply.cluster_id
                    )),
                };
            }
            // New to the cluster: the leader starts replicating to it before the join returns.
            self.admit();
            let mut last = String::new();
            for (peer, _) in &members {
                match self.ask_to_join(peer).await {
                    Ok(()) => {
                        info!(seed = %peer, "joined the cluster");
                        return Ok(true);
                    }
                    Err(MembershipError::Refused(m)) => {
                        return Err(format!("the cluster refuses this node: {m}"));
                    }
                    Err(e) => last = format!("{peer}: {e}"),
                }
            }
            return Err(format!("no member added this node: {last}"));
        }
        if !silent.is_empty() {
            return Err(format!(
                "cannot tell whether a cluster exists: no answer from {}",
                silent.join(", ")
            ));
        }
        if bootstrap {
            return self.bootstrap().await.map(|_| true);
        }
        if peers.is_empty() {
            info!("pristine node waiting to be added with `mxraftctl cluster join`");
            self.admit();
            return Ok(true);
        }
        Err("no peer is a member of a cluster yet".into())
    }

    /// Asks the node at `addr` who it is.
    pub async fn identify(&self, addr: &str) -> Result<IdentifyReply, tonic::Status> {
        let mut client = self.core.peers.client(addr, None)?;
        let req = self
            .core
            .peers
            .request(IdentifyRequest {}, None, Some(Duration::from_secs(3)));
        Ok(client.identify(req).await?.into_inner())
    }

    /// This node's answer to [`identify`](Self::identify).
    pub(crate) async fn identity_reply(&self) -> IdentifyReply {
        let m = self.metrics();
        IdentifyReply {
            node_id: self.core.id,
            cluster_id: self.cluster_id().unwrap_or_default(),
            initialized: self.is_initialized().await,
            leader_id: m.current_leader,
            voters: m.membership_config.membership().voter_ids().collect(),
        }
    }

    async fn ask_to_join(&self, seed: &str) -> Result<(), MembershipError> {
        let pristine = !self.is_initialized().await;
        let change = membership_request::Change::Join(JoinNode {
            node_id: self.core.id,
            addresses: Some(addresses_of(&self.core.info)),
            pristine,
        });
        let req = MembershipRequest {
            change: Some(change.clone()),
        };
        let mut client = self
            .core
            .peers
            .client(seed, None)
            .map_err(|s| MembershipError::Unavailable(s.message().to_owned()))?;
        // The seed's id is unknown here, so this one request is not addressed.
        client
            .change_membership(
                self.core
                    .peers
                    .request(req, None, Some(Duration::from_secs(120))),
            )
            .await
            .map(|_| ())
            .map_err(|s| membership_error_from_status(&s, &change))
    }

    /// The leader this node currently knows of, with its addresses.
    fn leader(&self) -> Option<(u64, NodeInfo)> {
        let m = self.core.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        let info = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, info))
    }

    /// Waits until the metrics change or `until` passes.
    async fn wait_for_change(&self, until: Instant) {
        let mut rx = self.core.raft.metrics();
        drop(rx.borrow_and_update());
        let pause = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        let _ = tokio::time::timeout(pause, rx.changed()).await;
    }

    /// Commits `cmd` through the leader and returns its applied result.
    ///
    /// Gives up after the commit timeout. Retries (after a lost leader, a forwarded call that
    /// failed, or an entry discarded by a leader change) resend the same command, which is
    /// safe because commands are idempotent.
    pub async fn propose(&self, cmd: QueueCommand) -> Result<CommandResult, ProposeError> {
        let timeout = self.core.config.commit_timeout;
        let until = Instant::now() + timeout;
        // Encoded once for every forward attempt (a message body is megabytes).
        let mut encoded: Option<bytes::Bytes> = None;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ProposeError::Timeout(timeout));
            }
            match self.leader() {
                None => self.wait_for_change(until).await,
                Some((leader, _)) if leader == self.core.id => {
                    // Leases are measured on the leader's clock, stamped as it appends.
                    let mut stamped = cmd.clone();
                    stamped.stamp_by_leader(self.core.clock.now_ms());
                    match tokio::time::timeout(left, self.core.raft.client_write(stamped)).await {
                        Err(_) => return Err(ProposeError::Timeout(timeout)),
                        Ok(Ok(resp)) => return Ok(resp.data),
                        Ok(Err(RaftError::Fatal(f))) => {
                            return Err(ProposeError::Stopped(f.to_string()));
                        }
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))))
                        | Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                            self.wait_for_change(until).await;
                        }
                        Ok(Err(RaftError::APIError(e))) => {
                            return Err(ProposeError::Invalid(e.to_string()));
                        }
                    }
                }
                Some((leader, info)) => {
                    let command = encoded
                        .get_or_insert_with(|| mxraft_queue::encode(&cmd).into())
                        .clone();
                    match self.forward(leader, &info, command, left).await {
                        Ok(result) => return Ok(result),
                        Err(status) => {
                            if status.code() == tonic::Code::InvalidArgument {
                                return Err(ProposeError::Invalid(status.message().to_owned()));
                            }
                            if status.code() == tonic::Code::OutOfRange {
                                return Err(ProposeError::ClockSkew(status.message().to_owned()));
                            }
                            tracing::debug!(leader, error = %status, "forwarded proposal failed; retrying");
                            tokio::time::sleep(RETRY_PAUSE.min(left)).await;
                            self.wait_for_change(until).await;
                        }
                    }
                }
            }
        }
    }

    async fn forward(
        &self,
        leader: u64,
        info: &NodeInfo,
        command: bytes::Bytes,
        left: Duration,
    ) -> Result<CommandResult, tonic::Status> {
        let mut client = self.core.peers.client(&info.cluster_addr, Some(leader))?;
        let req = ProposeRequest {
            command,
            sent_at_ms: self.core.clock.now_ms(),
            from_node: self.core.id,
        };
        let reply = tokio::time::timeout(
            left,
            client.propose(self.core.peers.request(req, Some(leader), Some(left))),
        )
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("forwarded proposal timed out"))??;
        mxraft_queue::decode(&reply.into_inner().result)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }

    /// Makes a following read of the local state machine linearizable: the leader confirms its
    /// leadership with a quorum and names the log index the read must see; this node then
    /// waits until it has applied that index.
    pub async fn read_barrier(&self, timeout: Duration) -> Result<(), ReadError> {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::NoQuorum(format!(
                    "no confirmed leader within {timeout:?}"
                )));
            }
            let index = match self.leader() {
                None => {
                    self.wait_for_change(until).await;
                    continue;
                }
                Some((leader, _)) if leader == self.core.id => {
                    match tokio::time::timeout(left, self.read_index()).await {
                        Ok(Ok(index)) => index,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "read index failed; retrying");
                            self.wait_for_change(until).await;
                            continue;
                        }
                        Err(_) => continue,
                    }
                }
                Some((leader, info)) => {
                    let asked = async {
                        let mut client =
                            self.core.peers.client(&info.cluster_addr, Some(leader))?;
                        let reply = client
                            .read_index(self.core.peers.request(
                                ReadIndexRequest {},
                                Some(leader),
                                Some(left),
                            ))
                            .await?;
                        Ok::<u64, tonic::Status>(reply.into_inner().index)
                    };
                    match tokio::time::timeout(left, asked).await {
                        Ok(Ok(index)) => index,
                        _ => {
                            tokio::time::sleep(RETRY_PAUSE.min(left)).await;
                            continue;
                        }
                    }
                }
            };
            let left = until.saturating_duration_since(Instant::now());
            return match self
                .core
                .raft
                .wait(Some(left))
                .applied_index_at_least(Some(index), "linearizable read")
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => Err(ReadError::NoQuorum(format!(
                    "not caught up with the leader: {e}"
                ))),
            };
        }
    }

    /// On the leader: confirms leadership with a quorum and returns the index to read at.
    pub(crate) async fn read_index(&self) -> Result<u64, String> {
        let linearizer = self
            .core
            .raft
            .get_read_linearizer(ReadPolicy::ReadIndex)
            .await
            .map_err(|e| e.to_string())?;
        Ok(linearizer.read_log_id().index())
    }

    /// Adds node `id` at `info` to the cluster: as a learner, then, once caught up, as a voter.
    /// Runs on the leader; other nodes forward it there.
    pub async fn join(
        &self,
        id: u64,
        info: NodeInfo,
        pristine: bool,
    ) -> Result<(), MembershipError> {
        let change = membership_request::Change::Join(JoinNode {
            node_id: id,
            addresses: Some(addresses_of(&info)),
            pristine,
        });
        self.membership_change(change).await
    }

    /// Removes node `id` from the cluster. Runs on the leader; other nodes forward it there.
    pub async fn remove(&self, id: u64) -> Result<(), MembershipError> {
        self.membership_change(membership_request::Change::Remove(id))
            .await
    }

    pub(crate) async fn membership_change(
        &self,
        change: membership_request::Change,
    ) -> Result<(), MembershipError> {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            match self.leader() {
                Some((leader, _)) if leader == self.core.id => {
                    return self.change_on_leader(change).await;
                }
                Some((leader, info)) => {
                    let mut client = self
                        .core
                        .peers
                        .client(&info.cluster_addr, Some(leader))
                        .map_err(|s| MembershipError::Unavailable(s.to_string()))?;
                    let req = MembershipRequest {
                        change: Some(change.clone()),
                    };
                    let left = until.saturating_duration_since(Instant::now());
                    match client
                        .change_membership(self.core.peers.request(req, Some(leader), Some(left)))
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(s) => match membership_error_from_status(&s, &change) {
                            MembershipError::Unavailable(m) if Instant::now() >= until => {
                                return Err(MembershipError::Unavailable(m));
                            }
                            MembershipError::Unavailable(_) => {
                                tokio::time::sleep(RETRY_PAUSE * 4).await
                            }
                            other => return Err(other),
                        },
                    }
                }
                None if Instant::now() >= until => {
                    return Err(MembershipError::Unavailable("no leader".into()));
                }
                None => self.wait_for_change(until).await,
            }
        }
    }

    async fn change_on_leader(
        &self,
        change: membership_request::Change,
    ) -> Result<(), MembershipError> {
        // One change at a time: openraft refuses overlapping changes, and a join is two of them.
        let _guard = self.core.membership_lock.lock().await;
        let raft = &self.core.raft;
        let membership = raft.metrics().borrow_watched().membership_config.clone();
        let membership = membership.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let failed = |e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                MembershipError::Unavailable(
                    "leadership changed during the membership change".into(),
                )
            }
            other => MembershipError::Failed(other.to_string()),
        };
        match change {
            membership_request::Change::Join(join) => {
                let id = join.node_id;
                let info = info_of(join.addresses.unwrap_or_default());
                if info.cluster_addr.is_empty() {
                    return Err(MembershipError::Refused(
                        "a joining node needs a cluster address".into(),
                    ));
                }
                if let Some(existing) = membership.get_node(&id) {
                    if *existing != info {
                        return Err(MembershipError::Refused(format!(
                            "node id {id} is already a member at {} (cluster); node ids are never reused: \
                             remove it first and join the new node under a new id",
                            existing.cluster_addr
                        )));
                    }
                    if join.pristine && voters.contains(&id) {
                        return Err(MembershipError::Refused(format!(
                            "node {id} is already a member but now has an empty data directory; a node that \
                             lost its data must not rejoin under its old id: `mxraftctl cluster remove {id}`, \
                             then join it under a new id"
                        )));
                    }
                    if voters.contains(&id) {
                        return Ok(());
                    }
                } else {
                    info!(node_id = id, addr = %info.cluster_addr, "adding learner");
                    raft.add_learner(id, info, true).await.map_err(failed)?;
                }
                info!(node_id = id, "promoting to voter");
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(failed)?;
                info!(node_id = id, "node joined");
                Ok(())
            }
            membership_request::Change::Remove(id) => {
                if membership.get_node(&id).is_none() {
                    return Err(MembershipError::NotMember(id));
                }
                if voters.contains(&id) {
                    if voters.len() == 1 {
                        return Err(MembershipError::Refused(format!(
                            "node {id} is the last voter"
                        )));
                    }
                    raft.change_membership(
                        ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                        false,
                    )
                    .await
                    .map_err(failed)?;
                } else {
                    raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map_err(failed)?;
                }
                info!(node_id = id, "node removed");
                Ok(())
            }
        }
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> NodeStatus {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let matched = m.replication.clone().unwrap_or_default();
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
                matched_index: matched
                    .get(id)
                    .map(|l| l.as_ref().map(|l| l.index).unwrap_or(0)),
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
