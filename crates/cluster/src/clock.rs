//! A node's clock: the time base of the commands it builds.
//!
//! The queue's state machine never reads a clock: every time it uses arrives in a command
//! (`at_ms`), so all nodes apply the same log to the same state. Whoever builds a command
//! stamps it with its node's [`Clock`]; the leader restamps the commands whose time decides a
//! lease (see [`mxraft_queue::QueueCommand::stamp_by_leader`]), so leases are measured on one
//! clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A node's wall clock: the system clock, shifted by an offset that is zero in production.
/// In-process tests shift one node's clock to prove that leases do not depend on it. Cheap
/// to clone; clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// Milliseconds since the Unix epoch on this clock.
    pub fn now_ms(&self) -> u64 {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        now_ms().saturating_add_signed(offset)
    }

    /// Shifts this clock (and its clones) by `offset_ms` from the system clock.
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_shifts_every_clone() {
        let clock = Clock::system();
        let copy = clock.clone();
        clock.set_offset_ms(-45_000);
        let behind = now_ms() - copy.now_ms();
        assert!((44_000..=46_000).contains(&behind), "{behind}");
        clock.set_offset_ms(0);
        assert!(copy.now_ms().abs_diff(now_ms()) < 1_000);
    }
}
