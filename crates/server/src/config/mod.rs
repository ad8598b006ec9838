//! The configuration file of `mxraftd`: one TOML document, one section per subsystem.
//!
//! Every section rejects unknown keys, every field has a default in one place (the `Default`
//! impl of its section), and [`Config::validate`] checks what types cannot, with errors that
//! name the key. See `docs/configuration.md` for every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mxraft_queue::InvalidConfig;
use serde::Deserialize;

use mxraft_cluster::ClusterConfig;
use mxraft_delivery::DeliveryConfig;

mod validate;
use mxraft_smtp::SmtpConfig;
pub use mxraft_smtp::policy::{
    GreylistConfig, QuotaConfig, RecipientMode, VerifyConfig, WhenUnreachable,
};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node.
    pub node: NodeConfig,
    /// The SMTP listener.
    #[serde(default)]
    pub smtp: SmtpConfig,
    /// The admin gRPC service.
    #[serde(default)]
    pub admin: AdminConfig,
    /// This node's certificate from the cluster CA (cluster and admin ports).
    #[serde(default)]
    pub tls: TlsConfig,
    /// Raft and the internal cluster service.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Delivery to the primaries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The protected domains.
    #[serde(default)]
    pub domains: Vec<DomainConfig>,
    /// Fixed next hops for other destinations (e.g. where DSNs to senders go).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Recipient verification for domains in `verify` mode.
    #[serde(default)]
    pub verify: VerifyConfig,
    /// Limits of the replicated queue and of the disk under it.
    #[serde(default)]
    pub queue: QuotaConfig,
    /// Greylisting, for domains with `greylist = true`.
    #[serde(default)]
    pub greylist: GreylistConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The Prometheus metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Unsafe modes for the fault-injection tests' negative controls.
    #[serde(default)]
    pub testing: TestingConfig,
}

/// The `[testing]` section: modes that lose acknowledged mail on purpose, so that the
/// fault-injection harness can show that it notices. `mxraftd` refuses to start with any of
/// them unless it is given `--unsafe-testing`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestingConfig {
    /// Answer `250` at the end of data before the message is committed.
    pub ack_before_commit: bool,
    /// Never fsync the Raft log (or the vote): an entry counts as durable once written.
    pub skip_log_fsync: bool,
}

impl TestingConfig {
    /// The keys set, as `testing.<key>`.
    pub fn enabled(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.ack_before_commit {
            keys.push("testing.ack_before_commit");
        }
        if self.skip_log_fsync {
            keys.push("testing.skip_log_fsync");
        }
        keys
    }

    /// Refuses the unsafe modes unless `allowed` (the `--unsafe-testing` flag).
    pub fn check(&self, allowed: bool) -> Result<(), InvalidConfig> {
        match self.enabled().first() {
            Some(key) if !allowed => Err(InvalidConfig(format!(
                "{key} = true loses acknowledged mail: it exists only for the fault-injection \
                 tests, and mxraftd refuses it unless started with --unsafe-testing"
            ))),
            _ => Ok(()),
        }
    }
}

/// The `[metrics]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of an HTTP listener that serves the metrics in the Prometheus text format
    /// (any path, e.g. `/metrics`). Unset: no listener.
    pub listen: Option<std::net::SocketAddr>,
}

/// The `[node]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id: a positive integer, unique in the cluster and never reused by a node
    /// that lost its data. Required unless `id_from_hostname` is set.
    #[serde(default)]
    pub id: u64,
    /// Take the id from the host name's ordinal suffix, plus one: on Kubernetes the pod
    /// `mxraft-0` of a StatefulSet is node 1, `mxraft-2` node 3. Instead of `id`.
    #[serde(default)]
    pub id_from_hostname: bool,
    /// Where the Raft log, the queue and the snapshots are kept.
    pub data_dir: PathBuf,
}

/// The `[tls]` section: this node's identity in the cluster, made with `mxraftctl cert`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The cluster CA certificate (PEM): peers and admin client certificates must be signed
    /// by it.
    pub ca_file: Option<PathBuf>,
    /// This node's certificate (PEM), naming its `node.id`.
    pub cert_file: Option<PathBuf>,
    /// The key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
}

/// The `[admin]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address the admin gRPC service (and gRPC health) listens on.
    pub listen: SocketAddr,
    /// Address (`host:port`) operators reach `listen` at. Defaults to the bound address.
    pub advertise: Option<String>,
    /// How long a linearizable read may wait for the leader and for this node to catch up.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Files holding bearer tokens, each with the role it grants (`read` or `admin`).
    pub token_files: Vec<TokenFileConfig>,
    /// Serve the admin API without TLS (tokens then cross the network in clear). Refused
    /// unless `listen` is a loopback address. Without `[tls]` the admin API is always plain.
    pub insecure_plaintext: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
            advertise: None,
            read_timeout: Duration::from_secs(10),
            token_files: Vec::new(),
            insecure_plaintext: false,
        }
    }
}

/// One `admin.token_files` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFileConfig {
    /// The file; its first line is the token (make one with `mxraftctl token create`).
    pub path: PathBuf,
    /// `read` (status, listings, details, statistics, destinations) or `admin` (everything).
    pub role: RoleName,
}

/// An admin role, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    /// Read only.
    Read,
    /// Everything.
    Admin,
}

impl RoleName {
    /// The role.
    pub fn role(self) -> mxraft_proto::identity::Role {
        match self {
            RoleName::Read => mxraft_proto::identity::Role::Read,
            RoleName::Admin => mxraft_proto::identity::Role::Admin,
        }
    }
}

/// Replaces each `${NAME}` in `text` with `lookup(NAME)`; `$${` stands for a literal `${`.
/// An unset variable is an error with its line (from 1) and name.
pub fn expand_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(body) = tail.strip_prefix("${") else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let name_len = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        let name = &body[..name_len];
        let line = text[..text.len() - tail.len()].matches('\n').count() + 1;
        if name.is_empty()
            || !body[name_len..].starts_with('}')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            // Not a variable reference: kept as written.
            out.push('$');
            rest = &tail[1..];
            continue;
        }
        let value = lookup(name).ok_or_else(|| (line, name.to_owned()))?;
        out.push_str(&value);
        rest = &body[name_len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The node id of `hostname`: its ordinal suffix plus one, or an error naming the key.
pub fn id_from_hostname(hostname: &str) -> Result<u64, String> {
    mxraft_proto::identity::node_id_of_hostname(hostname).ok_or_else(|| {
        format!(
            "node.id_from_hostname: the host name {hostname:?} does not end in -<ordinal> \
             (as a StatefulSet's pods do); set node.id instead"
        )
    })
}

/// Whether `host` (an address or `localhost`) is on this machine only.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One `[[domains]]` entry: a domain this cluster is backup MX for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// The domain, e.g. `example.com`.
    pub name: String,
    /// The primary's next hop (`host:port`): queued mail goes there, without an MX lookup.
    pub primary: Option<String>,
    /// Our own MX preference for the domain: mail goes to the domain's MX hosts with a better
    /// (lower) preference. Use instead of `primary`.
    pub mx_preference: Option<u16>,
    /// The primary's MX host as the domain publishes it (e.g. `mx1.example.com`), for
    /// `mxraftctl dns records` and `dns check`. Unset: every MX host that is not a node of
    /// this cluster counts as a primary.
    pub primary_mx: Option<String>,
    /// The primary's MX preference: 10 by default, or 10 below `mx_preference` (at least 0).
    /// The nodes are published at `mx_preference`, or 10 above this when that is not set.
    pub primary_preference: Option<u16>,
    /// How recipients are validated at RCPT: `list` (the replicated recipient table, the
    /// default), `verify` (ask the primary, cache the answer) or `any` (accept every address:
    /// a backscatter risk).
    #[serde(default)]
    pub recipients: RecipientMode,
    /// DNS blocklist zones the client address is looked up in (e.g. `zen.spamhaus.org`); a
    /// listed client gets `554 5.7.1` at RCPT. Empty: no lookups.
    #[serde(default)]
    pub dnsbl: Vec<String>,
    /// Greylist this domain's mail: the first attempt of a client, sender and recipient gets
    /// `450 4.7.1`; a retry after `greylist.delay`, on any node, is accepted.
    #[serde(default)]
    pub greylist: bool,
    /// Check the sender's SPF record (RFC 7208): `fail` gets `550 5.7.23` at RCPT; any other
    /// result is recorded in a `Received-SPF:` header field.
    #[serde(default)]
    pub spf: bool,
    /// Overrides `delivery.max_queue_lifetime` for this domain.
    #[serde(default, with = "humantime_serde")]
    pub max_queue_lifetime: Option<Duration>,
}

impl DomainConfig {
    /// The primary's MX preference: `primary_preference`, else 10, or 10 below
    /// `mx_preference`.
    pub fn primary_preference(&self) -> u16 {
        self.primary_preference.unwrap_or(match self.mx_preference {
            Some(ours) => ours.saturating_sub(10),
            None => 10,
        })
    }

    /// The one MX preference every node is published at for this domain: `mx_preference`,
    /// or 10 above the primary's.
    pub fn backup_preference(&self) -> u16 {
        self.mx_preference
            .unwrap_or(self.primary_preference().saturating_add(10))
    }
}

/// One `[[routes]]` entry: a fixed next hop for a destination that is not protected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The destination domain.
    pub domain: String,
    /// Where its mail goes (`host:port`).
    pub next_hop: String,
}

/// Splits `host:port` (with `[v6]:port` for IPv6 literals).
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    (!host.is_empty() && !host.contains(' ')).then(|| (host.to_owned(), port))
}

/// The `[log]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `info,mxraft_smtp=debug`; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the key and position.
        message: String,
    },
    /// `${NAME}` names an environment variable that is not set.
    #[error(
        "{path}: line {line}: environment variable {name} is not set (write a literal `${{` as `$${{`)"
    )]
    Unset {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The variable.
        name: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

impl Config {
    /// Reads, parses and validates a configuration file, with `${NAME}` replaced by the
    /// environment variable `NAME` and the node id taken from the host name when
    /// `node.id_from_hostname` is set.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, None)
    }

    /// [`load`](Self::load), with `node_id` (when given) in place of the file's node id.
    pub fn load_with(path: &Path, node_id: Option<u64>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = expand_env(&text, |name| std::env::var(name).ok()).map_err(|(line, name)| {
            ConfigError::Unset {
                path: path.to_path_buf(),
                line,
                name,
            }
        })?;
        let mut config = Self::parse(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        match node_id {
            Some(id) => {
                config.node.id = id;
                config.node.id_from_hostname = false;
            }
            None if config.node.id_from_hostname => {
                if config.node.id != 0 {
                    return Err(invalid(
                        "node.id and node.id_from_hostname are exclusive: set one".into(),
                    ));
                }
                let hostname = mxraft_proto::identity::own_hostname().map_err(|e| {
                    invalid(format!(
                        "node.id_from_hostname: cannot read the host name: {e}"
                    ))
                })?;
                config.node.id = id_from_hostname(&hostname).map_err(invalid)?;
            }
            None => {}
        }
        config.validate().map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.0,
        })?;
        Ok(config)
    }

    /// Parses configuration text (without validating it).
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The node's TLS files, when `[tls]` is set.
    pub fn tls_files(&self) -> Option<mxraft_proto::tls::TlsFiles> {
        let t = &self.tls;
        Some(mxraft_proto::tls::TlsFiles {
            ca_file: t.ca_file.clone()?,
            cert_file: Some(t.cert_file.clone()?),
            key_file: Some(t.key_file.clone()?),
        })
    }

    /// Whether the admin API is served over TLS.
    pub fn admin_tls(&self) -> bool {
        self.tls_files().is_some() && !self.admin.insecure_plaintext
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [node]
        id = 1
        data_dir = "/var/lib/mxraft"

        [tls]
        ca_file = "/etc/mxraft/ca.pem"
        cert_file = "/etc/mxraft/node1.pem"
        key_file = "/etc/mxraft/node1-key.pem"

        [cluster]
        advertise = "10.0.0.11:7100"

        [[domains]]
        name = "example.com"
        primary = "mail.example.com:25"
    "#;

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = Config::parse(MINIMAL).expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.smtp.listen, "0.0.0.0:25".parse().expect("addr"));
        assert_eq!(c.smtp.max_message_size, 50 * 1024 * 1024);
        assert_eq!(c.smtp.max_recipients, 1000);
        assert_eq!(c.admin.listen, "127.0.0.1:7001".parse().expect("addr"));
        assert_eq!(c.cluster.listen, "0.0.0.0:7100".parse().expect("addr"));
        assert_eq!(c.cluster.commit_timeout, Duration::from_secs(15));
        assert!(!c.cluster.bootstrap);
        assert_eq!(c.delivery.probe_interval, Duration::from_secs(10));
        assert_eq!(c.delivery.connections_per_destination, 10);
        assert_eq!(
            c.delivery.max_queue_lifetime,
            Duration::from_secs(14 * 86400)
        );
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn mx_preferences_and_public_addresses_default_from_what_is_set() {
        let c = Config::parse(MINIMAL).expect("parses");
        assert_eq!(c.domains[0].primary_preference(), 10);
        assert_eq!(c.domains[0].backup_preference(), 20);
        // Listening on 0.0.0.0 without an advertised address: DNS must tell.
        assert!(c.smtp.published_addresses().is_empty());
        let text = MINIMAL.replace(
            "primary = \"mail.example.com:25\"",
            "mx_preference = 30\nprimary_mx = \"MX1.example.com.\"",
        ) + "\n[smtp]\nadvertise = \"203.0.113.5:25\"\n";
        let c = Config::parse(&text).expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.domains[0].primary_preference(), 20);
        assert_eq!(c.domains[0].backup_preference(), 30);
        assert_eq!(
            c.smtp.published_addresses(),
            vec!["203.0.113.5".parse::<std::net::IpAddr>().expect("address")]
        );
        let c = Config::parse(&format!(
            "{MINIMAL}\n[smtp]\nlisten = \"10.0.0.5:25\"\npublic_addresses = [\"2001:db8::5\", \"203.0.113.5\"]\n"
        ))
        .expect("parses");
        assert_eq!(c.smtp.published_addresses().len(), 2);
        let c = Config::parse(&format!("{MINIMAL}\n[smtp]\nlisten = \"10.0.0.5:25\"\n"))
            .expect("parses");
        assert_eq!(
            c.smtp.published_addresses(),
            vec!["10.0.0.5".parse::<std::net::IpAddr>().expect("address")]
        );
    }

    #[test]
    fn the_unsafe_testing_modes_need_the_flag() {
        let c = Config::parse(MINIMAL).expect("parses");
        assert!(c.testing.enabled().is_empty());
        c.testing.check(false).expect("nothing unsafe");
        for key in ["ack_before_commit", "skip_log_fsync"] {
            let c =
                Config::parse(&format!("{MINIMAL}\n[testing]\n{key} = true\n")).expect("parses");
            let err = c
                .testing
                .check(false)
                .expect_err("refused without the flag");
            assert!(err.to_string().contains(&format!("testing.{key}")), "{err}");
            assert!(err.to_string().contains("--unsafe-testing"), "{err}");
            c.testing.check(true).expect("allowed with the flag");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let text = format!("{MINIMAL}\n[smtp]\nmax_mesage_size = 10\n");
        let err = Config::parse(&text).expect_err("typo refused");
        assert!(err.to_string().contains("max_mesage_size"), "{err}");
        let err =
            Config::parse("[node]\nid = 1\ndata_dir = \"x\"\ncolour = 1\n").expect_err("refused");
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        // Ends in the [cluster] table, so a case can add cluster keys right after it.
        let secure = "[tls]\nca_file = \"ca.pem\"\ncert_file = \"n.pem\"\nkey_file = \"k.pem\"\n\
                      [cluster]\nadvertise = \"10.0.0.1:7100\"\n";
        let base = format!("[node]\nid = 1\ndata_dir = \"x\"\n{secure}");
        let domain = "[[domains]]\nname = \"a.test\"\nprimary = \"p.test:25\"\n";
        let cases = [
            (
                format!("[node]\nid = 0\ndata_dir = \"x\"\n{secure}{domain}"),
                "node.id",
            ),
            (
                format!("[node]\nid = 65535\ndata_dir = \"x\"\n{secure}{domain}"),
                "node.id",
            ),
            (base.to_string(), "[[domains]]"),
            (
                format!("{base}[[domains]]\nname = \"not a domain\"\nprimary = \"p:25\"\n"),
                "domains.name",
            ),
            (
                format!("{base}[[domains]]\nname = \"a.test\"\nprimary = \"nohost\"\n"),
                "domains.primary",
            ),
            (
                format!("{base}[[domains]]\nname = \"a.test\"\n"),
                "set primary",
            ),
            (
                format!(
                    "{base}[[domains]]\nname = \"a.test\"\nprimary = \"p:25\"\nmx_preference = 20\n"
                ),
                "not both",
            ),
            (
                format!("{base}{domain}primary_mx = \"192.0.2.1\"\n"),
                "domains.primary_mx",
            ),
            (
                format!("{base}{domain}primary_mx = \"mx.p.test:25\"\n"),
                "domains.primary_mx",
            ),
            (
                format!(
                    "{base}[[domains]]\nname = \"a.test\"\nmx_preference = 20\nprimary_preference = 20\n"
                ),
                "primary_preference 20 must be below the nodes' preference 20",
            ),
            (
                format!("{base}[[domains]]\nname = \"a.test\"\nmx_preference = 0\n"),
                "primary_preference 0 must be below",
            ),
            (
                format!("{base}[smtp]\npublic_addresses = [\"0.0.0.0\"]\n{domain}"),
                "smtp.public_addresses",
            ),
            (
                format!("{base}[smtp]\nmax_recipients = 5\n{domain}"),
                "smtp.max_recipients",
            ),
            (
                format!("{base}max_staleness = \"1s\"\n{domain}"),
                "cluster.max_staleness",
            ),
            (
                format!("{base}peers = [\"nohost\"]\n{domain}"),
                "cluster.peers",
            ),
            (
                format!(
                    "[node]\nid = 1\ndata_dir = \"x\"\n[cluster]\nadvertise = \"0.0.0.0:7100\"\n{domain}"
                ),
                "cluster.advertise",
            ),
            (
                format!(
                    "[node]\nid = 1\ndata_dir = \"x\"\n[tls]\nca_file = \"c\"\ncert_file = \"n\"\nkey_file = \"k\"\n{domain}"
                ),
                "cluster.advertise is required",
            ),
            (
                format!(
                    "[node]\nid = 1\ndata_dir = \"x\"\n[cluster]\nadvertise = \"10.0.0.1:7100\"\n{domain}"
                ),
                "[tls]",
            ),
            (
                format!(
                    "[node]\nid = 1\ndata_dir = \"x\"\n[tls]\nca_file = \"c\"\n[cluster]\nadvertise = \"10.0.0.1:7100\"\n{domain}"
                ),
                "go together",
            ),
            (
                format!(
                    "[node]\nid = 1\ndata_dir = \"x\"\n[cluster]\nlisten = \"10.0.0.1:7100\"\ninsecure_plaintext = true\n{domain}"
                ),
                "cluster.insecure_plaintext",
            ),
            (
                format!(
                    "[node]\nid = 1\ndata_dir = \"x\"\n[cluster]\nlisten = \"127.0.0.1:7100\"\ninsecure_plaintext = true\n{domain}"
                ),
                "admin.token_files",
            ),
            (
                format!(
                    "[node]\nid = 1\ndata_dir = \"x\"\n[admin]\nlisten = \"10.0.0.1:7001\"\ninsecure_plaintext = true\n{secure}{domain}"
                ),
                "only allowed on loopback",
            ),
            (
                format!("{base}{domain}[[routes]]\ndomain = \"s.test\"\nnext_hop = \"nope\"\n"),
                "routes.next_hop",
            ),
            (
                format!("{base}{domain}[delivery]\nconnections_per_destination = 0\n"),
                "delivery.connections_per_destination",
            ),
            (
                format!("{base}{domain}[delivery]\nclaim_lease = \"5s\"\n"),
                "delivery.claim_lease must be at least 10s",
            ),
        ];
        for (text, key) in cases {
            let c = Config::parse(&text).expect("parses");
            let err = c.validate().expect_err("invalid");
            assert!(err.0.contains(key), "{key}: {err}");
        }
        let err = Config::parse(
            "[node]\nid = 1\ndata_dir = \"x\"\n[cluster]\ncommit_timeout = \"soon\"\n",
        )
        .expect_err("bad duration");
        assert!(err.to_string().contains("commit_timeout"), "{err}");
    }

    /// Every configuration shipped in the repository parses and validates.
    #[test]
    fn environment_variables_are_expanded_and_an_unset_one_is_named() {
        let env = |name: &str| match name {
            "POD_NAME" => Some("mxraft-2".to_owned()),
            "NS" => Some("mail".to_owned()),
            _ => None,
        };
        assert_eq!(
            expand_env("a = \"${POD_NAME}.h.${NS}.svc:7100\"", env).expect("expands"),
            "a = \"mxraft-2.h.mail.svc:7100\""
        );
        // `$${` is a literal `${`; a `$` that starts no reference is kept.
        assert_eq!(
            expand_env("x = \"$${NS} $5 ${} $NS ${1A}\"", env).expect("expands"),
            "x = \"${NS} $5 ${} $NS ${1A}\""
        );
        assert_eq!(
            expand_env("a = 1\n\nb = \"${MISSING}\"", env),
            Err((3, "MISSING".to_owned()))
        );
    }

    #[test]
    fn the_node_id_comes_from_the_ordinal_suffix() {
        assert_eq!(id_from_hostname("mxraft-0"), Ok(1));
        assert_eq!(id_from_hostname("my-mx-backup-12"), Ok(13));
        for bad in [
            "mxraft",
            "mxraft-",
            "mxraft-x1",
            "node3",
            "mxraft-99999999999999999999",
        ] {
            let err = id_from_hostname(bad).expect_err(bad);
            assert!(err.contains("node.id_from_hostname"), "{err}");
        }
    }

    #[test]
    fn a_shared_file_bootstraps_one_node_and_skips_its_own_peer_entry() {
        let text = r#"
            [node]
            id_from_hostname = true
            data_dir = "/var/lib/mxraft"
            [tls]
            ca_file = "/etc/mxraft/ca.pem"
            cert_file = "/etc/mxraft/node.pem"
            key_file = "/etc/mxraft/node-key.pem"
            [cluster]
            listen = "0.0.0.0:7100"
            advertise = "${MXRAFT_TEST_POD}.peers:7100"
            bootstrap_id = 1
            peers = ["m-0.peers:7100", "m-1.peers:7100", "m-2.peers:7100"]
            [[domains]]
            name = "example.com"
            primary = "mail.example.com:25"
        "#;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mxraftd.toml");
        let pod1 = expand_env(text, |_| Some("m-1".into())).expect("expands");
        std::fs::write(&path, &pod1).expect("write");
        // The file's id_from_hostname gives way to an explicit id.
        let c = Config::load_with(&path, Some(2)).expect("valid");
        assert_eq!(c.node.id, 2);
        assert!(!c.cluster.bootstraps(2));
        assert!(c.cluster.bootstraps(1));
        assert_eq!(
            c.cluster.known_peers(),
            ["m-0.peers:7100", "m-2.peers:7100"]
        );
        // Without an id, the host name must provide one; this one's may not.
        std::fs::write(
            &path,
            pod1.replace("bootstrap_id = 1", "bootstrap_id = 1\nbootstrap = true"),
        )
        .expect("write");
        let err = Config::load_with(&path, Some(1)).expect_err("both bootstrap keys");
        assert!(err.to_string().contains("cluster.bootstrap_id"), "{err}");
        std::fs::write(
            &path,
            pod1.replace("id_from_hostname = true", "id = 1\nid_from_hostname = true"),
        )
        .expect("write");
        let err = Config::load(&path).expect_err("both id keys");
        assert!(err.to_string().contains("node.id_from_hostname"), "{err}");
        std::fs::write(&path, text).expect("write");
        let err = Config::load(&path).expect_err("MXRAFT_TEST_POD unset");
        assert!(
            err.to_string()
                .contains("environment variable MXRAFT_TEST_POD is not set"),
            "{err}"
        );
    }

    #[test]
    fn shipped_configs_are_valid() {
        // At run time, so a test binary reused from another clone reads this clone's files.
        let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo");
        let root = Path::new(&manifest_dir).join("../..");
        let mut checked = 0;
        for dir in ["deploy/local", "deploy/examples"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                    checked += 1;
                }
            }
        }
        assert!(
            checked >= 4,
            "expected the shipped configs, found {checked}"
        );
    }
}
