//! The leader's share of delivery: granting claims, probing destinations that are down, and
//! expiring old mail. Running these on the leader alone means one decision per question, in
//! log order; every node still delivers the claims it is granted. The decisions themselves are
//! the pure functions of [`crate::plan`]; this module feeds them and proposes their commands.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::Instant as _;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use mxraft_queue::QueueCommand;

use crate::Delivery;
use crate::client::{Connection, Cutoff};
use crate::plan::{self, PlanMemory};

/// State the leader keeps between rounds (lost, harmlessly, on a leader change).
#[derive(Default)]
pub(crate) struct LeaderState {
    memory: PlanMemory,
    last_expiry_scan_ms: Option<u64>,
}

impl Delivery {
    /// The nodes that may receive claims: this one and every member heard from recently,
    /// except those whose clocks are too far from this node's and those that announced they
    /// are stopping (they still answer heartbeats for a moment after releasing their claims).
    pub(crate) fn healthy_nodes(&self) -> Vec<u64> {
        let m = self.node.metrics();
        let mut nodes: BTreeSet<u64> = BTreeSet::from([self.node.id()]);
        let recent = self.config.claim_lease.min(Duration::from_secs(5));
        if let Some(heartbeat) = &m.heartbeat {
            for (id, acked) in heartbeat {
                if acked.as_ref().is_some_and(|t| t.elapsed() < recent) {
                    nodes.insert(*id);
                }
            }
        }
        for skewed in self.node.skewed_nodes() {
            nodes.remove(&skewed);
        }
        let sm = self.node.state_machine();
        let live = sm.read();
        for stopping in live.queue().stopping_nodes().keys() {
            nodes.remove(stopping);
        }
        nodes.into_iter().collect()
    }

    /// One round of claim granting.
    pub(crate) async fn dispatch(&self, state: &mut LeaderState) {
        let now = self.node.clock().now_ms();
        let nodes = self.healthy_nodes();
        let claims = {
            let sm = self.node.state_machine();
            let live = sm.read();
            plan::claims(live.queue(), now, &self.plan, &nodes, &mut state.memory)
        };
        for cmd in claims {
            let summary = cmd.to_string();
            match self.node.propose(cmd).await {
                Ok(r) => debug!(claim = %summary, result = ?r, "claim granted"),
                Err(e) => {
                    warn!(claim = %summary, error = %e, "claim not committed");
                    return;
                }
            }
        }
    }

    /// Probes, once per probe interval, each destination that is down and has mail waiting.
    pub(crate) fn probe_due(self: &Arc<Self>, state: &mut LeaderState, tasks: &mut JoinSet<()>) {
        let now = self.node.clock().now_ms();
        let due = {
            let sm = self.node.state_machine();
            let live = sm.read();
            plan::probes(live.queue(), now, &self.plan, &mut state.memory)
        };
        for dest in due {
            let this = self.clone();
            tasks.spawn(async move { this.probe(&dest).await });
        }
    }

    /// The leader's periodic probe: see [`Delivery::probe_now`].
    pub(crate) async fn probe(&self, destination: &str) {
        if let Err(e) = self.probe_now(destination).await {
            warn!(destination, error = %e, "probe result not committed");
        }
    }

    /// Connect, banner, EHLO, QUIT to the destination's primary; commits its new state
    /// (`SetDestination`) and returns whether it answered, with the error when not.
    pub async fn probe_now(
        &self,
        destination: &str,
    ) -> Result<(bool, Option<String>), mxraft_cluster::ProposeError> {
        let result = match self.resolve_route(destination).await {
            Err(e) => Err(e.reply()),
            Ok(addrs) => {
                let mut last = String::new();
                let mut ok = false;
                let timeouts = self.config.timeouts();
                for (host, addr) in addrs {
                    match Connection::open(
                        addr,
                        &host,
                        &self.hostname,
                        None,
                        &timeouts,
                        &Cutoff::none(),
                    )
                    .await
                    {
                        Ok(conn) => {
                            conn.quit().await;
                            ok = true;
                            break;
                        }
                        Err(e) => last = format!("4.4.1 {host}[{addr}]: {e}"),
                    }
                }
                if ok { Ok(()) } else { Err(last) }
            }
        };
        let at_ms = self.node.clock().now_ms();
        let (up, error) = match result {
            Ok(()) => {
                info!(destination, "primary answers again; delivering");
                (true, None)
            }
            Err(e) => {
                debug!(destination, error = %e, "primary still down");
                (false, Some(e))
            }
        };
        let cmd = QueueCommand::SetDestination {
            destination: destination.to_owned(),
            up,
            at_ms,
            probed: true,
            error: error.clone(),
        };
        self.node.propose(cmd).await?;
        Ok((up, error))
    }

    /// Every two seconds: returns mail older than its lifetime and sends the one delay notice.
    pub(crate) async fn expire(&self, state: &mut LeaderState) {
        let now = self.node.clock().now_ms();
        if state
            .last_expiry_scan_ms
            .is_some_and(|t| now.saturating_sub(t) < 2_000)
        {
            return;
        }
        state.last_expiry_scan_ms = Some(now);
        let commands = {
            let sm = self.node.state_machine();
            let live = sm.read();
            plan::expiry(live.queue(), now, &self.plan, &self.hostname)
        };
        for cmd in commands {
            info!(command = %cmd, "returning expired mail / sending delay notices");
            if let Err(e) = self.node.propose(cmd).await {
                warn!(error = %e, "expiry not committed");
            }
        }
    }
}
