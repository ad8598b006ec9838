//! Recipient verification (`verify` mode): ask the primary, cache its answer cluster-wide.

use std::time::Duration;

use serde::Deserialize;

use super::{Primary, QueueView, Remember};
use crate::RcptCheck;

/// The `[verify]` section: recipient verification for domains in `verify` mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// How long an address the primary accepted counts as valid.
    #[serde(with = "humantime_serde")]
    pub positive_ttl: Duration,
    /// How long an address the primary refused counts as invalid.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Longest time a verification may take before the RCPT is answered without it.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// What to answer when the primary cannot be asked and nothing is cached: `tempfail`
    /// (`450 4.1.1`, the sender retries) or `accept` (a backscatter risk).
    pub when_unreachable: WhenUnreachable,
}

/// The answer for an address that cannot be verified now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenUnreachable {
    /// `450 4.1.1`.
    Tempfail,
    /// Accept it.
    Accept,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            positive_ttl: Duration::from_secs(31 * 86400),
            negative_ttl: Duration::from_secs(3 * 86400),
            timeout: Duration::from_secs(10),
            when_unreachable: WhenUnreachable::Tempfail,
        }
    }
}

fn answer(valid: bool) -> RcptCheck {
    if valid {
        RcptCheck::Accept
    } else {
        RcptCheck::Unknown
    }
}

/// Verification with the cluster-wide cache: a fresh cached answer is used as is; otherwise
/// the primary is asked and its answer committed for every node; a stale answer is better
/// than none when the primary cannot be asked.
pub async fn check(
    view: &impl QueueView,
    primary: &impl Primary,
    config: &VerifyConfig,
    address: &str,
) -> RcptCheck {
    let now = view.now_ms();
    let cached = view.verified(address);
    if let Some((valid, at)) = cached {
        let ttl = if valid {
            config.positive_ttl
        } else {
            config.negative_ttl
        };
        if now.saturating_sub(at) < ttl.as_millis() as u64 {
            return answer(valid);
        }
    }
    match primary.verify_recipient(address, config.timeout).await {
        Ok(valid) => {
            // The session does not wait for the cache entry to commit.
            view.remember(Remember::Verified {
                address: address.to_owned(),
                valid,
                at_ms: now,
            });
            answer(valid)
        }
        Err(e) => {
            tracing::info!(rcpt = address, error = %e, "recipient not verifiable now");
            match (cached, config.when_unreachable) {
                (Some((valid, _)), _) => answer(valid),
                (None, WhenUnreachable::Accept) => RcptCheck::Accept,
                (None, WhenUnreachable::Tempfail) => RcptCheck::TryLater,
            }
        }
    }
}
