//! The production resolver, on hickory (feature `hickory`, on by default).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::{BoxFuture, DnsError, Mx, Resolver, SetupError};

fn classify(name: &str, e: &NetError) -> DnsError {
    if e.is_nx_domain() {
        DnsError::NxDomain(name.to_owned())
    } else if e.is_no_records_found() {
        DnsError::NoRecords(name.to_owned())
    } else {
        DnsError::Temporary(name.to_owned(), e.to_string())
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// The production resolver (hickory).
pub struct HickoryResolver {
    inner: TokioResolver,
}

impl HickoryResolver {
    /// A resolver asking `name_servers` (UDP and TCP), or the system's (`/etc/resolv.conf`)
    /// when the list is empty.
    pub fn new(name_servers: &[SocketAddr]) -> Result<HickoryResolver, SetupError> {
        Self::build(name_servers, None)
    }

    /// A resolver for checking what DNS publishes: each query is tried once within
    /// `timeout`, both A and AAAA are asked for, and `/etc/hosts` is not read.
    pub fn checking(
        name_servers: &[SocketAddr],
        timeout: Duration,
    ) -> Result<HickoryResolver, SetupError> {
        Self::build(name_servers, Some(timeout))
    }

    fn build(
        name_servers: &[SocketAddr],
        checking: Option<Duration>,
    ) -> Result<HickoryResolver, SetupError> {
        let mut builder = if name_servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| SetupError(format!("cannot read the system DNS configuration: {e}")))?
        } else {
            let servers = name_servers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioRuntimeProvider::default(),
            )
        };
        if let Some(timeout) = checking {
            let options = builder.options_mut();
            options.timeout = timeout;
            options.attempts = 1;
            options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            options.use_hosts_file = ResolveHosts::Never;
        }
        let inner = builder
            .build()
            .map_err(|e| SetupError(format!("cannot build the DNS resolver: {e}")))?;
        Ok(HickoryResolver { inner })
    }
}

impl Resolver for HickoryResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<Mx>, DnsError>> {
        Box::pin(async move {
            let lookup = self
                .inner
                .mx_lookup(fqdn(domain))
                .await
                .map_err(|e| classify(domain, &e))?;
            let mut out = Vec::new();
            for record in lookup.answers() {
                if let RData::MX(mx) = &record.data {
                    let host = mx.exchange.to_ascii();
                    out.push(Mx {
                        preference: mx.preference,
                        host: host.trim_end_matches('.').to_ascii_lowercase(),
                    });
                }
            }
            if out.is_empty() {
                return Err(DnsError::NoRecords(domain.to_owned()));
            }
            Ok(out)
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(self.txt_records(name))
    }

    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(vec![ip]);
            }
            let lookup = self
                .inner
                .lookup_ip(fqdn(host))
                .await
                .map_err(|e| classify(host, &e))?;
            let ips: Vec<IpAddr> = lookup.iter().collect();
            if ips.is_empty() {
                return Err(DnsError::NoRecords(host.to_owned()));
            }
            Ok(ips)
        })
    }
}

impl HickoryResolver {
    async fn txt_records(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let lookup = self
            .inner
            .txt_lookup(fqdn(name))
            .await
            .map_err(|e| classify(name, &e))?;
        let mut out = Vec::new();
        for record in lookup.answers() {
            if let RData::TXT(txt) = &record.data {
                let joined: Vec<u8> = txt
                    .txt_data
                    .iter()
                    .flat_map(|part| part.iter().copied())
                    .collect();
                out.push(String::from_utf8_lossy(&joined).into_owned());
            }
        }
        if out.is_empty() {
            return Err(DnsError::NoRecords(name.to_owned()));
        }
        Ok(out)
    }
}

/// Lookups for checking a domain's DNS setup (`mxraftctl dns check`).
impl HickoryResolver {
    /// The target of `name`'s CNAME record; `None` when it has none.
    pub async fn cname(&self, name: &str) -> Result<Option<String>, DnsError> {
        match self.inner.lookup(fqdn(name), RecordType::CNAME).await {
            Ok(lookup) => Ok(lookup.answers().iter().find_map(|r| match &r.data {
                RData::CNAME(target) => Some(
                    target
                        .0
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                ),
                _ => None,
            })),
            Err(e) => match classify(name, &e) {
                DnsError::NoRecords(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// The serial of the SOA record of the zone `name` is in: `name`'s own, or else that of
    /// the nearest parent that has one.
    pub async fn soa_serial(&self, name: &str) -> Result<u32, DnsError> {
        let mut zone = name.trim_end_matches('.');
        loop {
            match self.inner.soa_lookup(fqdn(zone)).await {
                Ok(lookup) => {
                    if let Some(serial) = lookup.answers().iter().find_map(|r| match &r.data {
                        RData::SOA(soa) => Some(soa.serial),
                        _ => None,
                    }) {
                        return Ok(serial);
                    }
                }
                Err(e) => match classify(zone, &e) {
                    DnsError::NoRecords(_) => {}
                    other => return Err(other),
                },
            }
            match zone.split_once('.') {
                Some((_, parent)) if parent.contains('.') => zone = parent,
                _ => return Err(DnsError::NoRecords(name.to_owned())),
            }
        }
    }

    /// The name servers `name` is delegated to (its NS records), sorted.
    pub async fn name_servers(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let lookup = self
            .inner
            .ns_lookup(fqdn(name))
            .await
            .map_err(|e| classify(name, &e))?;
        let mut out: Vec<String> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(ns) => Some(ns.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err(DnsError::NoRecords(name.to_owned()));
        }
        Ok(out)
    }
}
