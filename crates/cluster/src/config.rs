//! The `[cluster]` section of the configuration.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// How this node takes part in the Raft cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Address the internal cluster gRPC service (Raft, forwarding) listens on.
    pub listen: SocketAddr,
    /// Address (`host:port`) other nodes use to reach `listen`. Defaults to the bound address.
    pub advertise: Option<String>,
    /// On a node whose data directory is pristine, create a new single-node cluster. Set it on
    /// exactly one node, once; other nodes join. Ignored once the node holds Raft state.
    pub bootstrap: bool,
    /// Cluster addresses (`host:port`) of existing members. A pristine node asks them, in
    /// turn and until one succeeds, to add it to the cluster.
    pub join: Vec<String>,
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
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7100)),
            advertise: None,
            bootstrap: false,
            join: Vec::new(),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            commit_timeout: Duration::from_secs(15),
            install_snapshot_timeout: Duration::from_secs(30),
            snapshot_after_entries: 5000,
            log_entries_kept: 1000,
        }
    }
}

impl ClusterConfig {
    /// Checks the values that serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval.is_zero() {
            return Err("cluster.heartbeat_interval must be greater than zero".into());
        }
        if self.election_timeout_min <= self.heartbeat_interval * 2 {
            return Err(
                "cluster.election_timeout_min must be more than twice cluster.heartbeat_interval"
                    .into(),
            );
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return Err(
                "cluster.election_timeout_max must be greater than cluster.election_timeout_min"
                    .into(),
            );
        }
        if self.commit_timeout < self.election_timeout_max {
            return Err(
                "cluster.commit_timeout must be at least cluster.election_timeout_max".into(),
            );
        }
        if self.snapshot_after_entries == 0 {
            return Err("cluster.snapshot_after_entries must be greater than zero".into());
        }
        if self.bootstrap && !self.join.is_empty() {
            return Err("cluster.bootstrap and cluster.join exclude each other: a node either starts a cluster or joins one".into());
        }
        Ok(())
    }
}
