//! DNS for mxraft: the [`Resolver`] trait that delivery (MX routes) and the front door
//! (DNSBL, SPF) ask, hickory in production, zone text in tests.
//!
//! Temporary and permanent DNS failures are told apart here, once: NXDOMAIN is permanent, "no
//! such record" means "no MX, use the domain itself" (RFC 5321 §5.1), everything else (SERVFAIL,
//! timeouts, refused connections) is temporary.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

#[cfg(feature = "hickory")]
mod hickory;
#[cfg(feature = "hickory")]
pub use hickory::HickoryResolver;

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mx {
    /// The preference; lower is preferred.
    pub preference: u16,
    /// The exchange host, without a trailing dot; empty for a null MX (RFC 7505).
    pub host: String,
}

/// A failed lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN): permanent.
    #[error("{0}: domain does not exist")]
    NxDomain(String),
    /// The name exists but has no record of the asked type.
    #[error("{0}: no such record")]
    NoRecords(String),
    /// The lookup failed for now (SERVFAIL, timeout, unreachable server): temporary.
    #[error("{0}: DNS lookup failed: {1}")]
    Temporary(String, String),
}

impl DnsError {
    /// Whether retrying later can help.
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsError::Temporary(..))
    }
}

/// The resolver could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// A line of zone text that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("zone line {line}: cannot read {text:?}")]
pub struct ZoneError {
    /// The line number, from 1.
    pub line: usize,
    /// The line.
    pub text: String,
}

/// A boxed future, for the object-safe resolver trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What delivery asks of DNS.
pub trait Resolver: Send + Sync + 'static {
    /// The MX records of `domain`.
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<Mx>, DnsError>>;
    /// The IPv4 and IPv6 addresses of `host`.
    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;
    /// The TXT records of `name`, each as one string (its character-strings joined).
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>>;
}

/// A resolver answering from zone text, for tests and fixed setups. Lines look like
/// `example.test. MX 10 mx.example.test.`, `mx.example.test. A 127.0.0.1`,
/// `example.test. TXT "v=spf1 -all"`, `broken.test. SERVFAIL` or `gone.test. NXDOMAIN`;
/// `;` starts a comment outside TXT data.
#[derive(Debug, Clone, Default)]
pub struct ZoneResolver {
    mx: BTreeMap<String, Vec<Mx>>,
    addrs: BTreeMap<String, Vec<IpAddr>>,
    txt: BTreeMap<String, Vec<String>>,
    servfail: Vec<String>,
    nxdomain: Vec<String>,
}

fn zone_name(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

impl ZoneResolver {
    /// Parses zone text; errors name the line.
    pub fn parse(text: &str) -> Result<ZoneResolver, ZoneError> {
        let mut z = ZoneResolver::default();
        for (n, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if let Some((head, data)) = trimmed.split_once(" TXT ") {
                let data = data.trim();
                let text = data
                    .strip_prefix('"')
                    .and_then(|d| d.strip_suffix('"'))
                    .unwrap_or(data);
                z.txt
                    .entry(zone_name(head.trim()))
                    .or_default()
                    .push(text.to_owned());
                continue;
            }
            let line = raw.split(';').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let bad = || ZoneError {
                line: n + 1,
                text: raw.to_owned(),
            };
            let name = zone_name(f.first().ok_or_else(bad)?);
            match f.get(1).map(|t| t.to_ascii_uppercase()).as_deref() {
                Some("MX") if f.len() == 4 => z.mx.entry(name).or_default().push(Mx {
                    preference: f[2].parse().map_err(|_| bad())?,
                    host: zone_name(f[3]),
                }),
                Some("A") | Some("AAAA") if f.len() == 3 => z
                    .addrs
                    .entry(name)
                    .or_default()
                    .push(f[2].parse().map_err(|_| bad())?),
                Some("SERVFAIL") if f.len() == 2 => z.servfail.push(name),
                Some("NXDOMAIN") if f.len() == 2 => z.nxdomain.push(name),
                _ => return Err(bad()),
            }
        }
        Ok(z)
    }

    fn check(&self, name: &str) -> Result<String, DnsError> {
        let name = zone_name(name);
        if self.servfail.contains(&name) {
            return Err(DnsError::Temporary(name, "SERVFAIL".into()));
        }
        if self.nxdomain.contains(&name) {
            return Err(DnsError::NxDomain(name));
        }
        Ok(name)
    }
}

impl Resolver for ZoneResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<Mx>, DnsError>> {
        Box::pin(async move {
            let name = self.check(domain)?;
            match self.mx.get(&name) {
                Some(records) => Ok(records.clone()),
                None if self.addrs.contains_key(&name) => Err(DnsError::NoRecords(name)),
                None => Err(DnsError::NxDomain(name)),
            }
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(async move {
            let name = self.check(name)?;
            match self.txt.get(&name) {
                Some(records) => Ok(records.clone()),
                None if self.addrs.contains_key(&name) || self.mx.contains_key(&name) => {
                    Err(DnsError::NoRecords(name))
                }
                None => Err(DnsError::NxDomain(name)),
            }
        })
    }

    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(vec![ip]);
            }
            let name = self.check(host)?;
            self.addrs
                .get(&name)
                .cloned()
                .ok_or(DnsError::NxDomain(name))
        })
    }
}
