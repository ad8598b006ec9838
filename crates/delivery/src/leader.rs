//! The leader's share of delivery: granting claims, probing destinations that are down, and
//! expiring old mail. Running these on the leader alone means one decision per question, in
//! log order; every node still delivers the claims it is granted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Instant as _;
use tracing::{debug, info, warn};

use mxraft_queue::{MessageId, QueueCommand};

use crate::client::Connection;
use crate::{Delivery, now_ms};

/// Messages per `Expire` or `DelayNotice` command.
const EXPIRY_BATCH: usize = 500;

/// State the leader keeps between rounds (lost, harmlessly, on a leader change).
#[derive(Default)]
pub(crate) struct LeaderState {
    next_node: usize,
    probing: BTreeMap<String, Instant>,
    last_expiry_scan: Option<Instant>,
}

impl Delivery {
    /// The nodes that may receive claims: this one and every member heard from recently.
    fn healthy_nodes(&self) -> Vec<u64> {
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
        nodes.into_iter().collect()
    }

    /// One round of claim granting: for each destination that is up, as many claims as its
    /// connection budget allows, spread over the healthy nodes.
    pub(crate) async fn dispatch(&self, state: &mut LeaderState) {
        let now = now_ms();
        let per_claim = self.config.messages_per_connection;
        let plans: Vec<(String, Vec<MessageId>)> = {
            let sm = self.node.state_machine();
            let live = sm.read();
            let q = live.queue();
            let mut plans = Vec::new();
            for dest in q.due_destinations() {
                if !q.destination_up(dest) {
                    continue;
                }
                let free = self
                    .config
                    .connections_per_destination
                    .saturating_sub(q.live_claims_for(dest, now));
                if free == 0 {
                    continue;
                }
                let due = q.due_messages(dest, now, free * per_claim);
                // Spread the due messages over the free connections.
                let claims = free.min(due.len().div_ceil(per_claim.max(1)).max(1));
                let size = due.len().div_ceil(claims.max(1)).max(1);
                for chunk in due.chunks(size) {
                    plans.push((dest.clone(), chunk.to_vec()));
                }
            }
            plans
        };
        if plans.is_empty() {
            return;
        }
        let nodes = self.healthy_nodes();
        for (destination, ids) in plans {
            let node = nodes[state.next_node % nodes.len()];
            state.next_node = state.next_node.wrapping_add(1);
            let count = ids.len();
            let cmd = QueueCommand::Claim {
                ids,
                node,
                destination: destination.clone(),
                at_ms: now,
                lease_ms: self.config.claim_lease.as_millis() as u64,
            };
            match self.node.propose(cmd).await {
                Ok(r) => {
                    debug!(destination = %destination, node, count, result = ?r, "claim granted")
                }
                Err(e) => {
                    warn!(destination = %destination, error = %e, "claim not committed");
                    return;
                }
            }
        }
    }

    /// Probes, once per probe interval, each destination that is down and has mail waiting.
    pub(crate) fn probe_due(self: &Arc<Self>, state: &mut LeaderState) {
        let down: Vec<String> = {
            let sm = self.node.state_machine();
            let live = sm.read();
            let q = live.queue();
            q.due_destinations()
                .filter(|d| !q.destination_up(d))
                .cloned()
                .collect()
        };
        let interval = self.config.probe_interval;
        state.probing.retain(|d, _| down.contains(d));
        for dest in down {
            let due = state
                .probing
                .get(&dest)
                .is_none_or(|last| last.elapsed() >= interval);
            if !due {
                continue;
            }
            state.probing.insert(dest.clone(), Instant::now());
            let this = self.clone();
            tokio::spawn(async move { this.probe(&dest).await });
        }
    }

    /// Connect, banner, EHLO, QUIT; commits the destination's new state.
    pub(crate) async fn probe(&self, destination: &str) {
        let result = match self.resolve_route(destination).await {
            Err(e) => Err(e.reply()),
            Ok(addrs) => {
                let mut last = String::new();
                let mut ok = false;
                let timeouts = self.config.timeouts();
                for (host, addr) in addrs {
                    match Connection::open(addr, &host, &self.hostname, None, &timeouts).await {
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
        let at_ms = now_ms();
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
            error,
        };
        if let Err(e) = self.node.propose(cmd).await {
            warn!(destination, error = %e, "probe result not committed");
        }
    }

    /// Every few seconds: returns mail older than its lifetime and sends the one delay notice.
    pub(crate) async fn expire(&self, state: &mut LeaderState) {
        if state
            .last_expiry_scan
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        state.last_expiry_scan = Some(Instant::now());
        let now = now_ms();
        let delay_after = self.config.delay_notice_after.as_millis() as u64;
        let min_lifetime = self
            .lifetimes
            .values()
            .copied()
            .chain([self.config.max_queue_lifetime])
            .min()
            .unwrap_or(self.config.max_queue_lifetime)
            .as_millis() as u64;
        let horizon = if delay_after > 0 {
            min_lifetime.min(delay_after)
        } else {
            min_lifetime
        };
        let (expired, delayed) = {
            let sm = self.node.state_machine();
            let live = sm.read();
            let mut expired = Vec::new();
            let mut delayed = Vec::new();
            for m in live.queue().iter_by_age() {
                let age = now.saturating_sub(m.received_at_ms);
                if age < horizon || (expired.len() >= EXPIRY_BATCH && delayed.len() >= EXPIRY_BATCH)
                {
                    break;
                }
                if m.held || !m.has_pending() || m.live_claim(now).is_some() {
                    continue;
                }
                let lifetime = m
                    .recipients
                    .iter()
                    .filter(|r| r.is_pending())
                    .map(|r| {
                        self.lifetimes
                            .get(&r.destination())
                            .copied()
                            .unwrap_or(self.config.max_queue_lifetime)
                    })
                    .max()
                    .unwrap_or(self.config.max_queue_lifetime)
                    .as_millis() as u64;
                if age >= lifetime {
                    if expired.len() < EXPIRY_BATCH {
                        expired.push(m.id);
                    }
                } else if delay_after > 0
                    && age >= delay_after
                    && !m.delay_notified
                    && !m.sender.is_empty()
                    && delayed.len() < EXPIRY_BATCH
                {
                    delayed.push(m.id);
                }
            }
            (expired, delayed)
        };
        if !expired.is_empty() {
            info!(
                count = expired.len(),
                "returning expired messages to their senders"
            );
            let cmd = QueueCommand::Expire {
                ids: expired,
                at_ms: now,
                reporting_mta: self.hostname.clone(),
            };
            if let Err(e) = self.node.propose(cmd).await {
                warn!(error = %e, "expiry not committed");
            }
        }
        if !delayed.is_empty() {
            info!(count = delayed.len(), "sending delay notices");
            let cmd = QueueCommand::DelayNotice {
                ids: delayed,
                at_ms: now,
                reporting_mta: self.hostname.clone(),
            };
            if let Err(e) = self.node.propose(cmd).await {
                warn!(error = %e, "delay notices not committed");
            }
        }
    }
}
