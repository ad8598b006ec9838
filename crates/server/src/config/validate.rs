//! [`Config::validate`]: what the types cannot check, with errors that name the key.

use std::net::SocketAddr;

use mxraft_queue::InvalidConfig;

use super::{Config, is_loopback_host, split_host_port};

impl Config {
    /// Checks what the types cannot; the error names the key.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.validate_node()?;
        self.validate_addresses()?;
        self.validate_security()?;
        self.validate_domains()?;
        self.validate_routes()?;
        self.validate_policy()
    }

    /// The node section and the per-subsystem checks of `[smtp]` and `[cluster]`.
    fn validate_node(&self) -> Result<(), InvalidConfig> {
        if self.node.id == 0 {
            return Err(InvalidConfig::new(
                "node.id must be a positive integer (or set node.id_from_hostname = true)",
            ));
        }
        if self.node.id >= mxraft_queue::DSN_NODE {
            return Err(InvalidConfig::new(format!(
                "node.id must be at most {} (it is part of every queue id)",
                mxraft_queue::DSN_NODE - 1
            )));
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(InvalidConfig::new("node.data_dir must not be empty"));
        }
        self.smtp.validate()?;
        self.cluster.validate()?;
        if self.admin.read_timeout.is_zero() {
            return Err(InvalidConfig::new(
                "admin.read_timeout must be greater than zero",
            ));
        }
        Ok(())
    }

    /// Advertised addresses, listeners and seeds.
    fn validate_addresses(&self) -> Result<(), InvalidConfig> {
        for (key, value) in [
            ("smtp.advertise", &self.smtp.advertise),
            ("admin.advertise", &self.admin.advertise),
            ("cluster.advertise", &self.cluster.advertise),
        ] {
            if let Some(v) = value {
                match split_host_port(v) {
                    None => {
                        return Err(InvalidConfig::new(format!(
                            "{key} must be host:port, not {v:?}"
                        )));
                    }
                    Some((host, _))
                        if host
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_unspecified()) =>
                    {
                        return Err(InvalidConfig::new(format!(
                            "{key} is {v:?}: other nodes cannot reach an unspecified address; give this node's own address"
                        )));
                    }
                    Some(_) => {}
                }
            }
        }
        for (key, listen, advertise) in [
            ("cluster", self.cluster.listen, &self.cluster.advertise),
            ("admin", self.admin.listen, &self.admin.advertise),
        ] {
            if listen.ip().is_unspecified() && advertise.is_none() {
                return Err(InvalidConfig::new(format!(
                    "{key}.advertise is required when {key}.listen is {listen}: other nodes and \
                     mxraftctl need an address that reaches this node"
                )));
            }
        }
        for (key, list) in [
            ("cluster.join", &self.cluster.join),
            ("cluster.peers", &self.cluster.peers),
        ] {
            for seed in list.iter() {
                if split_host_port(seed).is_none() {
                    return Err(InvalidConfig::new(format!(
                        "{key} entries must be host:port, not {seed:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The rules that keep the cluster and admin ports closed to callers that are not
    /// authenticated.
    fn validate_security(&self) -> Result<(), InvalidConfig> {
        let t = &self.tls;
        let set = [&t.ca_file, &t.cert_file, &t.key_file]
            .iter()
            .filter(|f| f.is_some())
            .count();
        if set != 0 && set != 3 {
            return Err(InvalidConfig::new(
                "tls.ca_file, tls.cert_file and tls.key_file go together: set all three",
            ));
        }
        let advertised_host = |advertise: &Option<String>, listen: SocketAddr| {
            advertise
                .as_deref()
                .and_then(split_host_port)
                .map(|(h, _)| h)
                .unwrap_or_else(|| listen.ip().to_string())
        };
        if self.cluster.insecure_plaintext {
            let host = advertised_host(&self.cluster.advertise, self.cluster.listen);
            if !self.cluster.listen.ip().is_loopback() || !is_loopback_host(&host) {
                return Err(InvalidConfig::new(format!(
                    "cluster.insecure_plaintext is only allowed on loopback (cluster.listen is {}, \
                     the advertised host {host}): the cluster port carries every message; use [tls]",
                    self.cluster.listen
                )));
            }
            for peer in self.cluster.known_peers() {
                if let Some((host, _)) = split_host_port(&peer)
                    && !is_loopback_host(&host)
                {
                    return Err(InvalidConfig::new(format!(
                        "cluster.insecure_plaintext is only allowed on loopback, but peer {peer} is not"
                    )));
                }
            }
        } else if set == 0 {
            return Err(InvalidConfig::new(
                "[tls] ca_file, cert_file and key_file are required: the cluster port carries \
                every message, so nodes authenticate each other with certificates from the cluster CA \
                (make them with `mxraftctl cert`, see docs/operations.md); a cluster on one machine may \
                set cluster.insecure_plaintext = true instead",
            ));
        }
        if !self.admin_tls() {
            let host = advertised_host(&self.admin.advertise, self.admin.listen);
            if !self.admin.listen.ip().is_loopback() || !is_loopback_host(&host) {
                return Err(InvalidConfig::new(format!(
                    "the admin API is served without TLS ({}), which is only allowed on loopback \
                     (admin.listen is {}): set [tls] and leave admin.insecure_plaintext unset",
                    if set == 0 {
                        "no [tls]"
                    } else {
                        "admin.insecure_plaintext"
                    },
                    self.admin.listen
                )));
            }
            if self.admin.token_files.is_empty() {
                return Err(InvalidConfig::new(
                    "admin.token_files is empty: without TLS client certificates, the admin \
                    API can only authenticate callers by bearer token (make one with `mxraftctl token create`)",
                ));
            }
        }
        Ok(())
    }

    /// The protected domains: names, routes to their primaries, lifetimes, blocklist zones.
    fn validate_domains(&self) -> Result<(), InvalidConfig> {
        if self.domains.is_empty() {
            return Err(InvalidConfig::new(
                "at least one [[domains]] entry is required: mxraft accepts mail only for its protected domains",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.domains {
            let name = mxraft_smtp::address::normalize_domain(&d.name);
            let probe = mxraft_smtp::address::parse_mailbox(&format!("postmaster@{name}"));
            if probe.is_err() || name.starts_with('[') {
                return Err(InvalidConfig::new(format!(
                    "domains.name {:?} is not a domain name",
                    d.name
                )));
            }
            if !seen.insert(name) {
                return Err(InvalidConfig::new(format!(
                    "domains.name {:?} is listed twice",
                    d.name
                )));
            }
            match (&d.primary, d.mx_preference) {
                (Some(p), None) if split_host_port(p).is_none() => {
                    return Err(InvalidConfig::new(format!(
                        "domains.primary of {:?} must be host:port, not {p:?}",
                        d.name
                    )));
                }
                (Some(_), Some(_)) => {
                    return Err(InvalidConfig::new(format!(
                        "domains {:?}: set either primary (a fixed next hop) or mx_preference (MX lookup), not both",
                        d.name
                    )));
                }
                (None, None) => {
                    return Err(InvalidConfig::new(format!(
                        "domains {:?}: set primary (host:port) or mx_preference (our own MX preference), \
                         so that queued mail reaches the primary without looping back to this cluster",
                        d.name
                    )));
                }
                _ => {}
            }
            if let Some(mx) = &d.primary_mx
                && (mx.parse::<std::net::IpAddr>().is_ok()
                    || mxraft_smtp::address::parse_mailbox(&format!(
                        "postmaster@{}",
                        mxraft_smtp::address::normalize_domain(mx)
                    ))
                    .is_err())
            {
                return Err(InvalidConfig::new(format!(
                    "domains.primary_mx of {:?} must be a host name (an MX names a host, not \
                     an address or host:port), not {mx:?}",
                    d.name
                )));
            }
            if d.backup_preference() <= d.primary_preference() {
                return Err(InvalidConfig::new(format!(
                    "domains {:?}: primary_preference {} must be below the nodes' preference {} \
                     (mx_preference, or primary_preference + 10): senders try the lowest first",
                    d.name,
                    d.primary_preference(),
                    d.backup_preference()
                )));
            }
            if d.max_queue_lifetime.is_some_and(|l| l.is_zero()) {
                return Err(InvalidConfig::new(format!(
                    "domains.max_queue_lifetime of {:?} must be greater than zero",
                    d.name
                )));
            }
        }
        for d in &self.domains {
            for zone in &d.dnsbl {
                if mxraft_smtp::address::parse_mailbox(&format!("postmaster@{zone}")).is_err() {
                    return Err(InvalidConfig::new(format!(
                        "domains.dnsbl of {:?}: {zone:?} is not a DNS zone",
                        d.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Fixed next hops for other destinations.
    fn validate_routes(&self) -> Result<(), InvalidConfig> {
        for r in &self.routes {
            if split_host_port(&r.next_hop).is_none() {
                return Err(InvalidConfig::new(format!(
                    "routes.next_hop of {:?} must be host:port, not {:?}",
                    r.domain, r.next_hop
                )));
            }
            if mxraft_smtp::address::parse_mailbox(&format!("postmaster@{}", r.domain)).is_err() {
                return Err(InvalidConfig::new(format!(
                    "routes.domain {:?} is not a domain name",
                    r.domain
                )));
            }
        }
        Ok(())
    }

    /// Delivery, greylisting, verification and logging.
    fn validate_policy(&self) -> Result<(), InvalidConfig> {
        self.delivery.validate()?;
        if self.greylist.max_age <= self.greylist.delay {
            return Err(InvalidConfig::new(
                "greylist.max_age must be longer than greylist.delay",
            ));
        }
        if self.verify.timeout.is_zero() {
            return Err(InvalidConfig::new(
                "verify.timeout must be greater than zero",
            ));
        }
        if self.log.level.trim().is_empty() {
            return Err(InvalidConfig::new("log.level must not be empty"));
        }
        Ok(())
    }
}
