//! Retry policy: how long a recipient waits after a temporary failure.

/// First retry delay after a temporary failure: one minute.
pub const FIRST_RETRY_MS: u64 = 60_000;
/// Longest retry delay: one hour.
pub const MAX_RETRY_MS: u64 = 3_600_000;

/// The delay before the next attempt after `attempts` temporary failures (at least one):
/// 1 min, 2 min, 4 min, … doubling up to 1 h.
pub fn backoff_ms(attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(16);
    (FIRST_RETRY_MS << doublings).min(MAX_RETRY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_minute_to_one_hour() {
        let minutes: Vec<u64> = (1..=9).map(|a| backoff_ms(a) / 60_000).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff_ms(0), FIRST_RETRY_MS);
        assert_eq!(backoff_ms(u32::MAX), MAX_RETRY_MS);
    }
}
