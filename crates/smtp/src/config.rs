//! The `[smtp]` section of the configuration.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mxraft_queue::InvalidConfig;
use serde::Deserialize;

/// The SMTP listener of one node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Address the SMTP listener binds.
    pub listen: SocketAddr,
    /// Address (`host:port`) clients reach this listener at, as shown by `mxraftctl cluster
    /// status`. Defaults to the bound address.
    pub advertise: Option<String>,
    /// Name used in the greeting, the EHLO reply and `Received:` headers. Defaults to the
    /// machine's host name.
    pub hostname: Option<String>,
    /// The addresses the world reaches this listener at (port 25 there), published as the A
    /// and AAAA records of `hostname`: what `mxraftctl dns records` prints and `dns check`
    /// expects. Defaults to the IP of `advertise` or `listen` when that is a specific address.
    pub public_addresses: Vec<IpAddr>,
    /// PEM file with the certificate chain for STARTTLS (and `tls_listen`). Without it, TLS is
    /// not offered.
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM file with the private key of `tls_cert_file`.
    pub tls_key_file: Option<std::path::PathBuf>,
    /// An additional listener where TLS starts at once (implicit TLS, RFC 8314), e.g. `0.0.0.0:465`.
    pub tls_listen: Option<SocketAddr>,
    /// Largest accepted message in bytes, advertised with SIZE.
    pub max_message_size: u64,
    /// Bytes of message data all sessions of this node may hold at once (each session keeps
    /// its message in memory until it is committed). Over it, `MAIL` with a `SIZE=` that does
    /// not fit gets `452 4.3.1` and a transfer that outgrows it `451 4.3.1`.
    pub max_message_memory: u64,
    /// Most recipients per message; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Longest text line in DATA, in bytes without CRLF (RFC 5321: 998).
    pub max_line_length: usize,
    /// Client errors after which the session is closed with `421`.
    pub max_errors: u32,
    /// Most concurrent sessions on this node; more are turned away with `421`.
    pub max_sessions: usize,
    /// Most concurrent sessions from one client address; more get `421 4.7.0`.
    pub max_sessions_per_client: usize,
    /// Most messages (MAIL commands) per minute from one client address; more get
    /// `450 4.7.1`. `0` turns the limit off.
    pub max_messages_per_client_per_minute: u32,
    /// Most recipients per minute from one client address; more get `450 4.7.1`. `0` turns
    /// the limit off.
    pub max_recipients_per_client_per_minute: u32,
    /// Slowest accepted DATA rate in bytes per second: each received byte extends the DATA
    /// deadline (`data_timeout`) by 1/rate seconds, so a client trickling data is cut off.
    /// `0` turns it off (then `data_timeout` applies to each read).
    pub min_data_rate: u64,
    /// Most `Received:` headers a message may carry once this node has added its own: one
    /// arriving with this many or more gets `554 5.4.6` (a mail loop).
    pub max_received_headers: usize,
    /// How long to wait for the next command (RFC 5321 §4.5.3.2: at least 5 minutes).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How long to wait for the next block of message data (RFC 5321: 3 minutes).
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// On shutdown, how long sessions in the middle of a transaction may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 25)),
            advertise: None,
            hostname: None,
            public_addresses: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_listen: None,
            max_message_size: 50 * 1024 * 1024,
            max_message_memory: 1024 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 998,
            max_errors: 20,
            max_sessions: 1000,
            max_sessions_per_client: 50,
            max_messages_per_client_per_minute: 0,
            max_recipients_per_client_per_minute: 0,
            min_data_rate: 500,
            max_received_headers: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl SmtpConfig {
    /// The addresses to publish for this node: `public_addresses`, or else the IP of
    /// `advertise` or of `listen` when it names one specific address.
    pub fn published_addresses(&self) -> Vec<IpAddr> {
        if !self.public_addresses.is_empty() {
            return self.public_addresses.clone();
        }
        let advertised = self.advertise.as_deref().map(|a| {
            a.rsplit_once(':')
                .map_or(a, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
        });
        match advertised {
            Some(Some(ip)) => vec![ip],
            // A name: its addresses are DNS's to tell.
            Some(None) => Vec::new(),
            None if self.listen.ip().is_unspecified() => Vec::new(),
            None => vec![self.listen.ip()],
        }
    }

    /// Checks the values serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_message_size < 64 * 1024 {
            return Err(InvalidConfig::new(
                "smtp.max_message_size must be at least 65536 (RFC 5321 §4.5.3.1.7)",
            ));
        }
        if self.max_message_memory < self.max_message_size {
            return Err(InvalidConfig::new(
                "smtp.max_message_memory must be at least smtp.max_message_size: one message of \
                 the largest size must fit",
            ));
        }
        if self.max_message_size > 200 * 1024 * 1024 {
            return Err(InvalidConfig::new(
                "smtp.max_message_size must be at most 209715200: every message travels in one Raft entry",
            ));
        }
        if self.max_recipients < 100 {
            return Err(InvalidConfig::new(
                "smtp.max_recipients must be at least 100 (RFC 5321 §4.5.3.1.8)",
            ));
        }
        if self.max_line_length < 998 {
            return Err(InvalidConfig::new(
                "smtp.max_line_length must be at least 998 (RFC 5321 §4.5.3.1.6)",
            ));
        }
        if self.max_errors == 0 {
            return Err(InvalidConfig::new(
                "smtp.max_errors must be greater than zero",
            ));
        }
        if self.max_sessions_per_client == 0 {
            return Err(InvalidConfig::new(
                "smtp.max_sessions_per_client must be greater than zero",
            ));
        }
        if self.max_received_headers == 0 {
            return Err(InvalidConfig::new(
                "smtp.max_received_headers must be greater than zero",
            ));
        }
        if self.max_sessions == 0 {
            return Err(InvalidConfig::new(
                "smtp.max_sessions must be greater than zero",
            ));
        }
        if self.command_timeout.is_zero() || self.data_timeout.is_zero() {
            return Err(InvalidConfig::new(
                "smtp.command_timeout and smtp.data_timeout must be greater than zero",
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(InvalidConfig::new(
                "smtp.tls_cert_file and smtp.tls_key_file go together",
            ));
        }
        if self.tls_listen.is_some() && self.tls_cert_file.is_none() {
            return Err(InvalidConfig::new(
                "smtp.tls_listen needs smtp.tls_cert_file and smtp.tls_key_file",
            ));
        }
        if let Some(ip) = self
            .public_addresses
            .iter()
            .find(|ip| ip.is_unspecified() || ip.is_multicast())
        {
            return Err(InvalidConfig::new(format!(
                "smtp.public_addresses: {ip} is not an address clients can reach"
            )));
        }
        if let Some(h) = &self.hostname
            && (h.is_empty() || h.contains(char::is_whitespace))
        {
            return Err(InvalidConfig::new(
                "smtp.hostname must be a host name without spaces",
            ));
        }
        Ok(())
    }
}
