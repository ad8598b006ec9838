//! Greylisting: the first attempt of a client network, sender and recipient is remembered
//! cluster-wide and deferred with `450 4.7.1`; a retry after the delay, on any node, passes.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{QueueView, Remember};
use crate::RcptCheck;

/// The `[greylist]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GreylistConfig {
    /// How long after the first attempt a retry is accepted.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// How long a triplet is remembered.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for GreylistConfig {
    fn default() -> Self {
        GreylistConfig {
            delay: Duration::from_secs(300),
            max_age: Duration::from_secs(35 * 86400),
        }
    }
}

/// The greylisting triplet: the client's network (/24 for IPv4, /64 for IPv6), the sender and
/// the recipient.
pub fn triplet(client: IpAddr, sender: &str, rcpt: &str) -> String {
    let net = match client.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}", s[0], s[1], s[2], s[3])
        }
    };
    format!("{net}|{}|{rcpt}", sender.to_lowercase())
}

/// The greylisting verdict for one recipient; a first attempt is remembered.
pub fn check(
    view: &impl QueueView,
    config: &GreylistConfig,
    client: IpAddr,
    sender: &str,
    rcpt: &str,
) -> RcptCheck {
    let key = triplet(client, sender, rcpt);
    let now = view.now_ms();
    match view.greylisted(&key) {
        Some(first) if now.saturating_sub(first) >= config.delay.as_millis() as u64 => {
            RcptCheck::Accept
        }
        Some(_) => RcptCheck::Greylisted,
        None => {
            view.remember(Remember::GreylistSeen { key, at_ms: now });
            RcptCheck::Greylisted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_of_one_network_share_a_triplet() {
        let a = triplet("192.0.2.7".parse().expect("ip"), "S@x.test", "r@y.test");
        let b = triplet("192.0.2.200".parse().expect("ip"), "s@x.test", "r@y.test");
        let c = triplet("192.0.3.7".parse().expect("ip"), "s@x.test", "r@y.test");
        assert_eq!(a, "192.0.2|s@x.test|r@y.test");
        assert_eq!(a, b);
        assert_ne!(a, c);
        let v6 = triplet("2001:db8:1:2:3::9".parse().expect("ip"), "", "r@y.test");
        assert_eq!(v6, "2001:db8:1:2||r@y.test");
        let mapped = triplet(
            "::ffff:192.0.2.9".parse().expect("ip"),
            "s@x.test",
            "r@y.test",
        );
        assert_eq!(mapped, a);
    }
}
