//! The front door's wiring: the SMTP crate's [`MessageQueue`] and [`QueueView`] over the Raft
//! node, and its policy and routes from the configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use mxraft_cluster::RaftNode;
use mxraft_delivery::{Route, RouteTable};
use mxraft_queue::{CommandResult, Enqueue, FlushTarget, QueueCommand};
use mxraft_smtp::address::normalize_domain;
use mxraft_smtp::policy::{DomainRules, NotCurrent, PolicyConfig, QueueUsage, QueueView, Remember};
use mxraft_smtp::{CommitError, EtrnReply, MessageQueue};

use crate::config::{self, Config};

/// Accepted messages go to Raft: committed on a majority before the `250`.
pub(crate) struct RaftQueue {
    pub(crate) node: RaftNode,
    /// `testing.ack_before_commit`: answer before the commit (loses mail; tests only).
    pub(crate) ack_before_commit: bool,
}

impl MessageQueue for RaftQueue {
    fn unavailable(&self) -> Option<String> {
        self.node
            .fatal_error()
            .map(|e| format!("this node's queue has stopped ({e})"))
    }

    fn now_ms(&self) -> u64 {
        self.node.clock().now_ms()
    }

    async fn commit(&self, message: Enqueue) -> Result<(), CommitError> {
        if self.ack_before_commit {
            let node = self.node.clone();
            tokio::spawn(async move {
                let _ = node.propose(QueueCommand::Enqueue(message)).await;
            });
            return Ok(());
        }
        match self.node.propose(QueueCommand::Enqueue(message)).await {
            Ok(CommandResult::Enqueued { .. }) => Ok(()),
            Ok(other) => Err(CommitError(format!("unexpected result {other:?}"))),
            Err(e) => Err(CommitError(e.to_string())),
        }
    }

    async fn flush_destination(&self, domain: &str) -> EtrnReply {
        let queued = self
            .node
            .state_machine()
            .read()
            .queue()
            .queued_destinations()
            .contains_key(domain);
        if !queued {
            return EtrnReply::NothingQueued;
        }
        let cmd = QueueCommand::Reschedule {
            target: FlushTarget::Destination(domain.to_owned()),
            at_ms: self.node.clock().now_ms(),
        };
        match self.node.propose(cmd).await {
            Ok(_) => EtrnReply::Started,
            Err(_) => EtrnReply::Unavailable,
        }
    }
}

/// The policy's view of this node's replicated state, and its cache writes.
pub(crate) struct NodeView {
    pub(crate) node: RaftNode,
    pub(crate) caches: CacheWriter,
}

impl QueueView for NodeView {
    fn now_ms(&self) -> u64 {
        self.node.clock().now_ms()
    }

    fn recipient_listed(&self, address: &str) -> bool {
        self.node
            .state_machine()
            .read()
            .queue()
            .recipient_listed(address)
    }

    fn greylisted(&self, triplet: &str) -> Option<u64> {
        self.node.state_machine().read().queue().greylisted(triplet)
    }

    fn verified(&self, address: &str) -> Option<(bool, u64)> {
        self.node.state_machine().read().queue().verified(address)
    }

    fn usage(&self) -> QueueUsage {
        let stats = self.node.state_machine().read().queue().stats();
        QueueUsage {
            messages: stats.messages,
            bytes: stats.bytes,
        }
    }

    async fn wait_current(&self, timeout: Duration) -> Result<(), NotCurrent> {
        self.node
            .wait_current(timeout)
            .await
            .map_err(|e| NotCurrent(e.to_string()))
    }

    fn remember(&self, entry: Remember) {
        self.caches.write(match entry {
            Remember::GreylistSeen { key, at_ms } => QueueCommand::GreylistSeen { key, at_ms },
            Remember::Verified {
                address,
                valid,
                at_ms,
            } => QueueCommand::Verified {
                address,
                valid,
                at_ms,
            },
        });
    }
}

/// Cache entries the front door writes (greylisting triplets, verification results), handed
/// to one task that commits them: the session never waits for them, and a burst of them is
/// bounded (beyond [`CACHE_WRITES_QUEUED`] waiting, new ones are dropped and counted).
#[derive(Clone)]
pub(crate) struct CacheWriter {
    tx: mpsc::Sender<QueueCommand>,
}

/// Cache writes waiting to be committed at most.
const CACHE_WRITES_QUEUED: usize = 1024;

impl CacheWriter {
    pub(crate) fn new() -> (CacheWriter, mpsc::Receiver<QueueCommand>) {
        let (tx, rx) = mpsc::channel(CACHE_WRITES_QUEUED);
        (CacheWriter { tx }, rx)
    }

    fn write(&self, cmd: QueueCommand) {
        if self.tx.try_send(cmd).is_err() {
            metrics::counter!("mxraft_cache_writes_dropped_total").increment(1);
            tracing::debug!("cache write dropped: too many waiting");
        }
    }
}

/// Commits the cache entries handed to a [`CacheWriter`], one at a time.
pub(crate) async fn write_caches(
    node: RaftNode,
    mut rx: mpsc::Receiver<QueueCommand>,
    stop: CancellationToken,
) {
    loop {
        let cmd = tokio::select! {
            _ = stop.cancelled() => return,
            cmd = rx.recv() => match cmd {
                Some(cmd) => cmd,
                None => return,
            },
        };
        if let Err(e) = node.propose(cmd).await {
            tracing::debug!(error = %e, "cache entry not committed");
        }
    }
}

/// The front door's policy settings from the configuration.
pub(crate) fn policy_config(config: &Config, hostname: &str) -> PolicyConfig {
    PolicyConfig {
        domains: config
            .domains
            .iter()
            .map(|d| {
                let rules = DomainRules {
                    recipients: d.recipients,
                    dnsbl: d.dnsbl.clone(),
                    greylist: d.greylist,
                    spf: d.spf,
                };
                (normalize_domain(&d.name), rules)
            })
            .collect(),
        greylist: config.greylist.clone(),
        verify: config.verify.clone(),
        quota: config.queue.clone(),
        hostname: hostname.to_owned(),
        data_dir: config.node.data_dir.clone(),
    }
}

/// The route table and per-domain lifetimes from the configuration.
pub(crate) fn routes(config: &Config) -> (RouteTable, BTreeMap<String, Duration>) {
    let mut table = RouteTable::new();
    let mut lifetimes = BTreeMap::new();
    for d in &config.domains {
        let name = normalize_domain(&d.name);
        let route = match (&d.primary, d.mx_preference) {
            (Some(p), _) => match config::split_host_port(p) {
                Some((host, port)) => Route::NextHop { host, port },
                None => continue,
            },
            (None, own) => Route::Mx {
                own_preference: own,
            },
        };
        table.insert(&name, route);
        if let Some(l) = d.max_queue_lifetime {
            lifetimes.insert(name, l);
        }
    }
    for r in &config.routes {
        if let Some((host, port)) = config::split_host_port(&r.next_hop) {
            table.insert(&r.domain, Route::NextHop { host, port });
        }
    }
    (table, lifetimes)
}
