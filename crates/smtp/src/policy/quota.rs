//! Room in the queue, checked at MAIL: `452 4.3.1` when the queue is over its quota or the
//! disk is nearly full.

use std::path::Path;

use serde::Deserialize;

use super::QueueUsage;

/// The `[queue]` section: when the front door stops taking mail (`452 4.3.1` at MAIL).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Most messages in the queue; `0` for no limit.
    pub max_messages: u64,
    /// Most bytes of queued messages; `0` for no limit.
    pub max_bytes: u64,
    /// Least free space (bytes) on the disk of `node.data_dir`.
    pub min_free_disk: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            max_messages: 0,
            max_bytes: 0,
            min_free_disk: 128 * 1024 * 1024,
        }
    }
}

/// Whether the queue can take more mail now.
pub fn has_room(quota: &QuotaConfig, usage: QueueUsage, data_dir: &Path) -> bool {
    let over = (quota.max_messages > 0 && usage.messages >= quota.max_messages)
        || (quota.max_bytes > 0 && usage.bytes >= quota.max_bytes);
    if over {
        return false;
    }
    match rustix::fs::statvfs(data_dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize) >= quota.min_free_disk,
        // Not knowing is not a reason to refuse mail.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_refuses_at_its_value() {
        let dir = std::env::temp_dir();
        let quota = QuotaConfig {
            max_messages: 10,
            max_bytes: 1000,
            min_free_disk: 0,
        };
        let usage = |messages, bytes| QueueUsage { messages, bytes };
        assert!(has_room(&quota, usage(9, 999), &dir));
        assert!(!has_room(&quota, usage(10, 0), &dir));
        assert!(!has_room(&quota, usage(0, 1000), &dir));
        let unlimited = QuotaConfig {
            max_messages: 0,
            max_bytes: 0,
            min_free_disk: 0,
        };
        assert!(has_room(&unlimited, usage(u64::MAX, u64::MAX), &dir));
        let whole_disk = QuotaConfig {
            min_free_disk: u64::MAX,
            ..unlimited
        };
        assert!(!has_room(&whole_disk, usage(0, 0), &dir));
    }
}
