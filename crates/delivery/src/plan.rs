//! The leader's delivery decisions, as pure functions: the queue state, the leader's clock,
//! the configuration and the healthy nodes in; the commands to propose (and the destinations
//! to probe) out. [`crate::leader`] runs them and proposes what they return.
//!
//! One clock decides every lease: the leader's. A message under a claim is offered again only
//! once the claim's lease (stamped by a leader) ended `lease_grace_ms` ago, which leaves room
//! for a leader change between clocks up to `cluster.max_clock_skew` apart.

use std::collections::BTreeMap;
use std::time::Duration;

use mxraft_queue::{MessageId, QueueCommand, QueueState};

/// Messages per `Expire` or `DelayNotice` command.
pub const EXPIRY_BATCH: usize = 500;

/// What the planner needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// Cluster-wide limit of simultaneous claims per destination.
    pub connections_per_destination: usize,
    /// Messages per claim at most.
    pub messages_per_connection: usize,
    /// The lease a claim is granted with.
    pub claim_lease: Duration,
    /// How long after a lease's end its messages stay reserved (the clock-skew bound).
    pub lease_grace: Duration,
    /// How often a destination that is down is probed.
    pub probe_interval: Duration,
    /// How long mail may stay queued (per destination where `lifetimes` says).
    pub max_queue_lifetime: Duration,
    /// Per-destination queue lifetimes.
    pub lifetimes: BTreeMap<String, Duration>,
    /// When senders get a delay notice (zero: never).
    pub delay_notice_after: Duration,
}

/// What the planner remembers between rounds on one leader (lost, harmlessly, on a change).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PlanMemory {
    /// Where the round-robin over the healthy nodes goes on.
    pub next_node: usize,
    /// When (leader clock, ms) each destination that is down was last probed.
    pub probed_at: BTreeMap<String, u64>,
}

/// The claims to propose now: for each destination that is up and not suspended, as many as its connection
/// budget allows, each of up to `messages_per_connection` due messages, spread round-robin
/// over `nodes` (which must not be empty).
pub fn claims(
    q: &QueueState,
    now_ms: u64,
    config: &PlanConfig,
    nodes: &[u64],
    memory: &mut PlanMemory,
) -> Vec<QueueCommand> {
    if nodes.is_empty() {
        return Vec::new();
    }
    let per_claim = config.messages_per_connection.max(1);
    let grace = config.lease_grace.as_millis() as u64;
    let lease_horizon = now_ms.saturating_sub(grace);
    let mut out = Vec::new();
    for dest in q.due_destinations() {
        if !q.destination_up(dest) || q.suspended_since(dest).is_some() {
            continue;
        }
        let free = config
            .connections_per_destination
            .saturating_sub(q.live_claims_for(dest, lease_horizon));
        if free == 0 {
            continue;
        }
        let due = q.claimable_messages(dest, now_ms, grace, free * per_claim);
        if due.is_empty() {
            continue;
        }
        // Spread the due messages over the free connections.
        let claims = free.min(due.len().div_ceil(per_claim));
        let size = due.len().div_ceil(claims);
        for chunk in due.chunks(size) {
            let node = nodes[memory.next_node % nodes.len()];
            memory.next_node = memory.next_node.wrapping_add(1);
            out.push(QueueCommand::Claim {
                ids: chunk.to_vec(),
                node,
                destination: dest.clone(),
                at_ms: now_ms,
                lease_ms: config.claim_lease.as_millis() as u64,
            });
        }
    }
    out
}

/// The destinations that are down, not suspended, have mail waiting and are due for a probe;
/// records the probe time of each one returned.
pub fn probes(
    q: &QueueState,
    now_ms: u64,
    config: &PlanConfig,
    memory: &mut PlanMemory,
) -> Vec<String> {
    let down: Vec<String> = q
        .due_destinations()
        .filter(|d| !q.destination_up(d) && q.suspended_since(d).is_none())
        .cloned()
        .collect();
    memory.probed_at.retain(|d, _| down.contains(d));
    let interval = config.probe_interval.as_millis() as u64;
    let mut out = Vec::new();
    for dest in down {
        let due = memory
            .probed_at
            .get(&dest)
            .is_none_or(|&last| now_ms.saturating_sub(last) >= interval);
        if due {
            memory.probed_at.insert(dest.clone(), now_ms);
            out.push(dest);
        }
    }
    out
}

/// The `Expire` command for mail older than its lifetime and the `DelayNotice` for mail
/// older than `delay_notice_after`, each of at most [`EXPIRY_BATCH`] messages. Held mail, mail
/// whose every pending recipient is in a suspended destination, and mail under a claim that
/// may still be delivering, are left alone.
pub fn expiry(
    q: &QueueState,
    now_ms: u64,
    config: &PlanConfig,
    reporting_mta: &str,
) -> Vec<QueueCommand> {
    let delay_after = config.delay_notice_after.as_millis() as u64;
    let lifetime_of = |dest: &str| {
        config
            .lifetimes
            .get(dest)
            .copied()
            .unwrap_or(config.max_queue_lifetime)
            .as_millis() as u64
    };
    let min_lifetime = config
        .lifetimes
        .values()
        .copied()
        .chain([config.max_queue_lifetime])
        .min()
        .unwrap_or(config.max_queue_lifetime)
        .as_millis() as u64;
    let horizon = if delay_after > 0 {
        min_lifetime.min(delay_after)
    } else {
        min_lifetime
    };
    let lease_horizon = now_ms.saturating_sub(config.lease_grace.as_millis() as u64);
    let mut expired: Vec<MessageId> = Vec::new();
    let mut delayed: Vec<MessageId> = Vec::new();
    for m in q.iter_by_age() {
        let age = now_ms.saturating_sub(m.received_at_ms);
        if age < horizon || (expired.len() >= EXPIRY_BATCH && delayed.len() >= EXPIRY_BATCH) {
            break;
        }
        if m.held || !m.has_pending() || m.live_claim(lease_horizon).is_some() {
            continue;
        }
        let suspended = !q.suspensions().is_empty()
            && m.recipients
                .iter()
                .filter(|r| r.is_pending())
                .all(|r| q.suspended_since(&r.destination()).is_some());
        if suspended {
            continue;
        }
        let lifetime = m
            .recipients
            .iter()
            .filter(|r| r.is_pending())
            .map(|r| lifetime_of(&r.destination()))
            .max()
            .unwrap_or_else(|| lifetime_of(""));
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
    let mut out = Vec::new();
    if !expired.is_empty() {
        out.push(QueueCommand::Expire {
            ids: expired,
            at_ms: now_ms,
            reporting_mta: reporting_mta.to_owned(),
        });
    }
    if !delayed.is_empty() {
        out.push(QueueCommand::DelayNotice {
            ids: delayed,
            at_ms: now_ms,
            reporting_mta: reporting_mta.to_owned(),
        });
    }
    out
}
