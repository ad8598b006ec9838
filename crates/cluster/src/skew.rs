//! The leader's view of the other nodes' clocks.
//!
//! Every forwarded proposal carries the proposer's wall clock. The leader compares it with its
//! own: above `cluster.clock_skew_warn` it warns and exports the offset, above
//! `cluster.max_clock_skew` it refuses the proposal, and the delivery planner gives the node no
//! claims. Leases never depend on a delivering node's wall clock (the leader stamps them), so
//! this protects the timestamps a node puts into the queue (receive times, retry times) and
//! bounds how far apart two successive leaders' clocks can be.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::warn;

/// How long a measurement counts: a node not heard from since is presumed fine again.
const MEASUREMENT_TTL: Duration = Duration::from_secs(60);

/// Offsets of the proposers' clocks from this node's, as last measured.
#[derive(Debug, Default)]
pub(crate) struct SkewTracker {
    offsets: Mutex<BTreeMap<u64, (i64, Instant)>>,
}

/// A proposer's clock is too far from the leader's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the clock of node {node} is {offset_ms} ms off the leader's (at most {max_ms} ms allowed): \
     fix its time synchronization (NTP)"
)]
pub struct ClockSkewed {
    /// The proposer.
    pub node: u64,
    /// Its clock minus the leader's, in milliseconds.
    pub offset_ms: i64,
    /// The bound.
    pub max_ms: u64,
}

impl SkewTracker {
    /// Records the offset of `node`'s clock (`sent_at_ms`) from the leader's (`now_ms`).
    pub(crate) fn observe(
        &self,
        node: u64,
        sent_at_ms: u64,
        now_ms: u64,
        warn_after: Duration,
        max: Duration,
    ) -> Result<(), ClockSkewed> {
        let offset_ms = sent_at_ms as i64 - now_ms as i64;
        if let Ok(mut offsets) = self.offsets.lock() {
            offsets.insert(node, (offset_ms, Instant::now()));
        }
        metrics::gauge!("mxraft_clock_skew_seconds", "node" => node.to_string())
            .set(offset_ms as f64 / 1000.0);
        let off = offset_ms.unsigned_abs();
        if off > max.as_millis() as u64 {
            let e = ClockSkewed {
                node,
                offset_ms,
                max_ms: max.as_millis() as u64,
            };
            warn!(node, offset_ms, "proposal refused: {e}");
            metrics::counter!("mxraft_clock_skew_refusals_total").increment(1);
            return Err(e);
        }
        if off > warn_after.as_millis() as u64 {
            warn!(
                node,
                offset_ms,
                "the clock of a node is off the leader's; check its time synchronization"
            );
        }
        Ok(())
    }

    /// The nodes last measured more than `max` off, within the last minute.
    pub(crate) fn skewed(&self, max: Duration) -> Vec<u64> {
        let Ok(offsets) = self.offsets.lock() else {
            return Vec::new();
        };
        offsets
            .iter()
            .filter(|(_, (off, at))| {
                at.elapsed() < MEASUREMENT_TTL && off.unsigned_abs() > max.as_millis() as u64
            })
            .map(|(node, _)| *node)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_above_the_bound_are_refused_and_remembered() {
        let t = SkewTracker::default();
        let (warn, max) = (Duration::from_millis(500), Duration::from_secs(5));
        t.observe(2, 1_000_900, 1_000_000, warn, max)
            .expect("900 ms is tolerated");
        let e = t
            .observe(3, 1_000_000 - 45_000, 1_000_000, warn, max)
            .expect_err("45 s behind");
        assert_eq!(e.offset_ms, -45_000);
        assert_eq!(t.skewed(max), vec![3]);
        t.observe(3, 1_000_000, 1_000_000, warn, max)
            .expect("fixed");
        assert!(t.skewed(max).is_empty());
    }
}
