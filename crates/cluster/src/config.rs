//! The `[cluster]` section of the configuration.

use std::net::SocketAddr;
use std::time::Duration;

use mxraft_queue::InvalidConfig;
use serde::Deserialize;

/// How this node takes part in the Raft cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Address the internal cluster gRPC service (Raft, forwarding) listens on.
    pub listen: SocketAddr,
    /// Address (`host:port`) other nodes use to reach `listen`. Defaults to the bound address.
    pub advertise: Option<String>,
    /// Serve and call the cluster port without TLS. Only for a cluster on one machine: refused
    /// unless `listen` and `advertise` are loopback addresses.
    pub insecure_plaintext: bool,
    /// On a pristine node, create a new cluster — but only once every node in `peers` and
    /// `join` has answered and none belongs to a cluster; if one does, join it instead. Set it
    /// on one node (the same one on every start, as Kubernetes does with pod 0). Ignored once
    /// the node holds Raft state.
    pub bootstrap: bool,
    /// The id of the node that bootstraps, as `bootstrap = true` on that node only: lets every
    /// node share one file (Kubernetes sets it to 1, pod 0).
    pub bootstrap_id: Option<u64>,
    /// Cluster addresses (`host:port`) of the other nodes. A pristine node asks them whether a
    /// cluster exists, and joins it through them.
    pub peers: Vec<String>,
    /// Cluster addresses (`host:port`) of existing members to join through; added to `peers`.
    pub join: Vec<String>,
    /// How old the last contact with the leader (on the leader: with a quorum) may be before
    /// this node stops answering for the cluster: RCPT gets `451` instead of a `550` from a
    /// possibly stale recipient table, and `/readyz` says not ready.
    #[serde(with = "humantime_serde")]
    pub max_staleness: Duration,
    /// Interval between leader heartbeats.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout.
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout.
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Duration,
    /// How long a proposal (an SMTP end of data) may wait for its commit before it is answered
    /// with a temporary failure.
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    /// Idle timeout while streaming a snapshot to a follower.
    #[serde(with = "humantime_serde")]
    pub install_snapshot_timeout: Duration,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_after_entries: u64,
    /// Log entries kept before the snapshot, so a briefly lagging follower needs no snapshot.
    pub log_entries_kept: u64,
    /// A proposer whose clock differs from the leader's by more than this is logged and
    /// counted (`mxraft_clock_skew_seconds`).
    #[serde(with = "humantime_serde")]
    pub clock_skew_warn: Duration,
    /// A proposer whose clock differs from the leader's by more than this is refused, and
    /// gets no delivery claims; leases are also given this much extra time before the leader
    /// grants their messages again, for a leader change between clocks that differ.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7100)),
            advertise: None,
            insecure_plaintext: false,
            bootstrap: false,
            bootstrap_id: None,
            peers: Vec::new(),
            join: Vec::new(),
            max_staleness: Duration::from_secs(6),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            commit_timeout: Duration::from_secs(15),
            install_snapshot_timeout: Duration::from_secs(30),
            snapshot_after_entries: 5000,
            log_entries_kept: 1000,
            clock_skew_warn: Duration::from_millis(500),
            max_clock_skew: Duration::from_secs(5),
        }
    }
}

impl ClusterConfig {
    /// Whether node `id` bootstraps: `bootstrap`, or `bootstrap_id` names it.
    pub fn bootstraps(&self, id: u64) -> bool {
        self.bootstrap || self.bootstrap_id == Some(id)
    }

    /// Every other node this one knows of: `peers`, then `join`, without repeats and without
    /// this node's own address (a list shared by all nodes names each of them).
    pub fn known_peers(&self) -> Vec<String> {
        let own = self
            .advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string());
        let mut all: Vec<String> = Vec::new();
        for p in self.peers.iter().chain(&self.join) {
            if *p != own && !all.contains(p) {
                all.push(p.clone());
            }
        }
        all
    }

    /// Checks the values that serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.bootstrap && self.bootstrap_id.is_some() {
            return Err(InvalidConfig::new(
                "cluster.bootstrap and cluster.bootstrap_id are exclusive: set one",
            ));
        }
        if self.bootstrap_id == Some(0) {
            return Err(InvalidConfig::new(
                "cluster.bootstrap_id must be a positive node id",
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(InvalidConfig::new(
                "cluster.heartbeat_interval must be greater than zero",
            ));
        }
        if self.election_timeout_min <= self.heartbeat_interval * 2 {
            return Err(InvalidConfig::new(
                "cluster.election_timeout_min must be more than twice cluster.heartbeat_interval",
            ));
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return Err(InvalidConfig::new(
                "cluster.election_timeout_max must be greater than cluster.election_timeout_min",
            ));
        }
        if self.commit_timeout < self.election_timeout_max {
            return Err(InvalidConfig::new(
                "cluster.commit_timeout must be at least cluster.election_timeout_max",
            ));
        }
        if self.clock_skew_warn >= self.max_clock_skew {
            return Err(InvalidConfig::new(
                "cluster.clock_skew_warn must be less than cluster.max_clock_skew",
            ));
        }
        if self.max_clock_skew < Duration::from_millis(100) {
            return Err(InvalidConfig::new(
                "cluster.max_clock_skew must be at least 100ms",
            ));
        }
        if self.snapshot_after_entries == 0 {
            return Err(InvalidConfig::new(
                "cluster.snapshot_after_entries must be greater than zero",
            ));
        }
        if self.max_staleness <= self.election_timeout_max {
            return Err(InvalidConfig::new(
                "cluster.max_staleness must be longer than cluster.election_timeout_max",
            ));
        }
        Ok(())
    }
}
