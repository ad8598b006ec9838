//! The time base of the queue's commands.
//!
//! The state machine never reads a clock: every time it uses arrives in a command (`at_ms`),
//! so all nodes apply the same log to the same state. Whoever builds a command stamps it with
//! [`now_ms`].

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
