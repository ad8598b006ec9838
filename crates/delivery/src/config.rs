//! The `[delivery]` section of the configuration.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::client::Timeouts;
use mxraft_queue::InvalidConfig;

/// How much of a claim's lease must be left to start delivering a message under it.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How queued mail is handed to the primaries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// While a destination is down, how often its primary is probed (connect, banner, EHLO,
    /// QUIT). Delivery starts within one interval of the primary answering again.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// How long a delivery claim lasts unless renewed; the holder renews it while it works.
    #[serde(with = "humantime_serde")]
    pub claim_lease: Duration,
    /// Cluster-wide limit of simultaneous connections to one destination.
    pub connections_per_destination: usize,
    /// Messages sent over one connection (one claim) before it is closed.
    pub messages_per_connection: usize,
    /// How long a message may stay queued before it is returned to its sender.
    #[serde(with = "humantime_serde")]
    pub max_queue_lifetime: Duration,
    /// After this long, senders get one delay notice (where NOTIFY allows); `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub delay_notice_after: Duration,
    /// Name used in EHLO and as the reporting MTA of DSNs. Defaults to `smtp.hostname`.
    pub helo_name: Option<String>,
    /// Use STARTTLS when the primary offers it (opportunistic: certificates are not checked).
    pub starttls: bool,
    /// DNS servers for MX lookups (`ip:port`); empty uses the system's `/etc/resolv.conf`.
    pub name_servers: Vec<SocketAddr>,
    /// TCP port of the hosts found by MX lookup (25; another value only for test setups).
    pub mx_port: u16,
    /// Clients (CIDR networks) allowed to send ETRN for any protected domain, besides each
    /// domain's own primary (whose addresses are always allowed).
    pub etrn_clients: Vec<ipnet::IpNet>,
    /// TCP connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Timeout for the greeting and the replies to EHLO, MAIL, RCPT and QUIT (RFC 5321: 5 min).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Timeout for the 354 reply to DATA (RFC 5321: 2 min).
    #[serde(with = "humantime_serde")]
    pub data_init_timeout: Duration,
    /// Timeout for each write of message data (RFC 5321: 3 min).
    #[serde(with = "humantime_serde")]
    pub data_block_timeout: Duration,
    /// Timeout for the reply to the final dot (RFC 5321: 10 min).
    #[serde(with = "humantime_serde")]
    pub data_done_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let t = Timeouts::default();
        DeliveryConfig {
            probe_interval: Duration::from_secs(10),
            claim_lease: Duration::from_secs(60),
            connections_per_destination: 10,
            messages_per_connection: 100,
            max_queue_lifetime: Duration::from_secs(14 * 24 * 3600),
            delay_notice_after: Duration::from_secs(24 * 3600),
            helo_name: None,
            starttls: true,
            name_servers: Vec::new(),
            mx_port: 25,
            etrn_clients: Vec::new(),
            connect_timeout: t.connect,
            command_timeout: t.command,
            data_init_timeout: t.data_init,
            data_block_timeout: t.data_block,
            data_done_timeout: t.data_done,
        }
    }
}

impl DeliveryConfig {
    /// Checks the values serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.probe_interval < Duration::from_millis(100) {
            return Err(InvalidConfig::new(
                "delivery.probe_interval must be at least 100ms",
            ));
        }
        if self.claim_lease < LEASE_MARGIN * 2 {
            return Err(InvalidConfig::new(format!(
                "delivery.claim_lease must be at least {:?}: a message is started only while the \
                 claim has {LEASE_MARGIN:?} left, and the lease is renewed every third, so a shorter \
                 lease leaves no time to deliver",
                LEASE_MARGIN * 2
            )));
        }
        if self.connections_per_destination == 0 {
            return Err(InvalidConfig::new(
                "delivery.connections_per_destination must be at least 1",
            ));
        }
        if self.mx_port == 0 {
            return Err(InvalidConfig::new("delivery.mx_port must not be 0"));
        }
        if self.messages_per_connection == 0 {
            return Err(InvalidConfig::new(
                "delivery.messages_per_connection must be at least 1",
            ));
        }
        if self.max_queue_lifetime < Duration::from_secs(1) {
            return Err(InvalidConfig::new(
                "delivery.max_queue_lifetime must be at least 1s",
            ));
        }
        for (key, d) in [
            ("delivery.connect_timeout", self.connect_timeout),
            ("delivery.command_timeout", self.command_timeout),
            ("delivery.data_init_timeout", self.data_init_timeout),
            ("delivery.data_block_timeout", self.data_block_timeout),
            ("delivery.data_done_timeout", self.data_done_timeout),
        ] {
            if d.is_zero() {
                return Err(InvalidConfig::new(format!(
                    "{key} must be greater than zero"
                )));
            }
        }
        Ok(())
    }

    /// The SMTP client timeouts.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.connect_timeout,
            greeting: self.command_timeout,
            command: self.command_timeout,
            data_init: self.data_init_timeout,
            data_block: self.data_block_timeout,
            data_done: self.data_done_timeout,
        }
    }
}
