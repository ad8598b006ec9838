//! Sender Policy Framework (RFC 7208): is the client allowed to send for the sender's domain?
//! A `fail` gets `550 5.7.23` at RCPT; other results are recorded in `Received-SPF:`.
//!
//! `check_host` evaluates the domain's `v=spf1` record over the [`Resolver`]: the mechanisms
//! `all`, `include`, `a`, `mx`, `ip4`, `ip6`, `exists` (and `ptr`, which is deprecated and
//! never matches here), the `redirect` modifier, macros in domain specs, and the limit of 10
//! DNS-querying terms.

use std::net::IpAddr;

use mxraft_dns::{DnsError, Resolver};

use crate::RcptCheck;

/// The result of an SPF check (RFC 7208 §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpfResult {
    /// The client is authorized.
    Pass,
    /// The client is not authorized: the domain asks for rejection.
    Fail,
    /// Probably not authorized.
    SoftFail,
    /// The domain makes no assertion.
    Neutral,
    /// No SPF record.
    None,
    /// A DNS error prevented a result.
    TempError,
    /// The record is broken.
    PermError,
}

impl SpfResult {
    /// The lower-case name used in `Received-SPF:`.
    pub fn name(self) -> &'static str {
        match self {
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::Neutral => "neutral",
            SpfResult::None => "none",
            SpfResult::TempError => "temperror",
            SpfResult::PermError => "permerror",
        }
    }
}

/// Most terms that query DNS in one evaluation (RFC 7208 §4.6.4).
const MAX_LOOKUPS: u32 = 10;

struct Eval<'a> {
    resolver: &'a dyn Resolver,
    ip: IpAddr,
    sender: String,
    helo: String,
    lookups: u32,
}

fn qualifier_result(q: char) -> SpfResult {
    match q {
        '-' => SpfResult::Fail,
        '~' => SpfResult::SoftFail,
        '?' => SpfResult::Neutral,
        _ => SpfResult::Pass,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let bits = u32::from(bits.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            (u32::from(a) & mask) == (u32::from(b) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let bits = u32::from(bits.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            (u128::from(a) & mask) == (u128::from(b) & mask)
        }
        _ => false,
    }
}

/// Splits `domain/cidr4//cidr6` (RFC 7208 §5.6).
fn split_cidr(spec: &str) -> Result<(&str, u8, u8), ()> {
    let (rest, v6) = match spec.find("//") {
        Some(i) => (&spec[..i], spec[i + 2..].parse::<u8>().map_err(|_| ())?),
        None => (spec, 128),
    };
    let (domain, v4) = match rest.rfind('/') {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<u8>().map_err(|_| ())?),
        None => (rest, 32),
    };
    if v4 > 32 || v6 > 128 {
        return Err(());
    }
    Ok((domain, v4, v6))
}

impl Eval<'_> {
    /// Expands the macros of a domain spec (RFC 7208 §7).
    fn expand(&self, spec: &str, domain: &str) -> Result<String, ()> {
        let (local, sender_domain) = self
            .sender
            .rsplit_once('@')
            .unwrap_or(("postmaster", &self.sender));
        let mut out = String::new();
        let mut chars = spec.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some('_') => out.push(' '),
                Some('-') => out.push_str("%20"),
                Some('{') => {
                    let mut body = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => body.push(ch),
                            None => return Err(()),
                        }
                    }
                    let mut it = body.chars();
                    let letter = it.next().ok_or(())?.to_ascii_lowercase();
                    let rest: String = it.collect();
                    let value = match letter {
                        's' => self.sender.clone(),
                        'l' => local.to_owned(),
                        'o' => sender_domain.to_owned(),
                        'd' => domain.to_owned(),
                        'h' => self.helo.clone(),
                        'i' => match self.ip {
                            IpAddr::V4(v4) => v4.to_string(),
                            IpAddr::V6(v6) => v6
                                .octets()
                                .iter()
                                .flat_map(|b| [b >> 4, b & 0x0f])
                                .map(|n| format!("{n:x}"))
                                .collect::<Vec<_>>()
                                .join("."),
                        },
                        'v' => if self.ip.is_ipv4() { "in-addr" } else { "ip6" }.to_owned(),
                        _ => return Err(()),
                    };
                    // Transformers: a digit count (rightmost parts), `r` (reverse), delimiters.
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let after: String = rest.chars().skip(digits.len()).collect();
                    let reverse = after.starts_with(['r', 'R']);
                    let delims: Vec<char> = after.chars().skip(usize::from(reverse)).collect();
                    let delims = if delims.is_empty() { vec!['.'] } else { delims };
                    let mut parts: Vec<&str> = value.split(|c| delims.contains(&c)).collect();
                    if reverse {
                        parts.reverse();
                    }
                    if let Ok(n) = digits.parse::<usize>() {
                        if n == 0 {
                            return Err(());
                        }
                        let skip = parts.len().saturating_sub(n);
                        parts = parts[skip..].to_vec();
                    }
                    out.push_str(&parts.join("."));
                }
                _ => return Err(()),
            }
        }
        Ok(out)
    }

    fn count_lookup(&mut self) -> Result<(), SpfResult> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS {
            Err(SpfResult::PermError)
        } else {
            Ok(())
        }
    }

    async fn addresses_of(&self, name: &str) -> Result<Vec<IpAddr>, SpfResult> {
        match self.resolver.addresses(name).await {
            Ok(ips) => Ok(ips),
            Err(DnsError::NxDomain(_)) | Err(DnsError::NoRecords(_)) => Ok(Vec::new()),
            Err(DnsError::Temporary(..)) => Err(SpfResult::TempError),
        }
    }

    async fn check_host(&mut self, domain: &str, depth: u32) -> SpfResult {
        if depth > MAX_LOOKUPS {
            return SpfResult::PermError;
        }
        let records = match self.resolver.txt(domain).await {
            Ok(r) => r,
            Err(DnsError::NxDomain(_)) | Err(DnsError::NoRecords(_)) => return SpfResult::None,
            Err(DnsError::Temporary(..)) => return SpfResult::TempError,
        };
        let spf: Vec<&String> = records
            .iter()
            .filter(|r| {
                let lower = r.to_ascii_lowercase();
                lower == "v=spf1" || lower.starts_with("v=spf1 ")
            })
            .collect();
        let record = match spf.as_slice() {
            [] => return SpfResult::None,
            [one] => one.as_str(),
            _ => return SpfResult::PermError,
        };
        let mut redirect = None;
        for term in record.split_whitespace().skip(1) {
            if let Some((name, value)) = term.split_once('=') {
                if name.eq_ignore_ascii_case("redirect") {
                    redirect = Some(value.to_owned());
                }
                continue; // exp= and unknown modifiers
            }
            let (qualifier, mechanism) = match term.chars().next() {
                Some(q @ ('+' | '-' | '~' | '?')) => (q, &term[1..]),
                _ => ('+', term),
            };
            let (name, arg) = match mechanism.find([':', '/']) {
                Some(i) if mechanism.as_bytes()[i] == b':' => {
                    (&mechanism[..i], Some(&mechanism[i + 1..]))
                }
                Some(i) => (&mechanism[..i], Some(&mechanism[i..])),
                None => (mechanism, None),
            };
            let matched = match self
                .mechanism(&name.to_ascii_lowercase(), arg, domain, depth)
                .await
            {
                Ok(m) => m,
                Err(result) => return result,
            };
            if matched {
                return qualifier_result(qualifier);
            }
        }
        if let Some(target) = redirect {
            if let Err(r) = self.count_lookup() {
                return r;
            }
            let Ok(target) = self.expand(&target, domain) else {
                return SpfResult::PermError;
            };
            return match Box::pin(self.check_host(&target, depth + 1)).await {
                SpfResult::None => SpfResult::PermError,
                other => other,
            };
        }
        SpfResult::Neutral
    }

    async fn mechanism(
        &mut self,
        name: &str,
        arg: Option<&str>,
        domain: &str,
        depth: u32,
    ) -> Result<bool, SpfResult> {
        let target = |this: &Self, spec: Option<&str>| -> Result<String, SpfResult> {
            match spec {
                None | Some("") => Ok(domain.to_owned()),
                Some(s) => this.expand(s, domain).map_err(|_| SpfResult::PermError),
            }
        };
        match name {
            "all" => Ok(true),
            "include" => {
                self.count_lookup()?;
                let t = target(self, arg)?;
                match Box::pin(self.check_host(&t, depth + 1)).await {
                    SpfResult::Pass => Ok(true),
                    SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral => Ok(false),
                    SpfResult::TempError => Err(SpfResult::TempError),
                    SpfResult::None | SpfResult::PermError => Err(SpfResult::PermError),
                }
            }
            "a" | "mx" => {
                self.count_lookup()?;
                let spec = arg.map(|a| a.strip_prefix(':').unwrap_or(a));
                let (dom, v4, v6) = match spec {
                    Some(s) if s.starts_with('/') => {
                        let (_, v4, v6) = split_cidr(s).map_err(|_| SpfResult::PermError)?;
                        (domain.to_owned(), v4, v6)
                    }
                    Some(s) => {
                        let (d, v4, v6) = split_cidr(s).map_err(|_| SpfResult::PermError)?;
                        (target(self, Some(d))?, v4, v6)
                    }
                    None => (domain.to_owned(), 32, 128),
                };
                let hosts = if name == "a" {
                    vec![dom]
                } else {
                    match self.resolver.mx(&dom).await {
                        Ok(mx) => mx.into_iter().map(|m| m.host).take(10).collect(),
                        Err(DnsError::Temporary(..)) => return Err(SpfResult::TempError),
                        Err(_) => Vec::new(),
                    }
                };
                for host in hosts {
                    for ip in self.addresses_of(&host).await? {
                        let bits = if ip.is_ipv4() { v4 } else { v6 };
                        if in_cidr(self.ip, ip, bits) {
                            return Ok(true);
                        }
                    }
                }
                Ok(false)
            }
            "ip4" | "ip6" => {
                let spec = arg.ok_or(SpfResult::PermError)?;
                let (addr, bits) = match spec.split_once('/') {
                    Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| SpfResult::PermError)?)),
                    None => (spec, None),
                };
                let net: IpAddr = addr.parse().map_err(|_| SpfResult::PermError)?;
                if (name == "ip4") != net.is_ipv4() {
                    return Err(SpfResult::PermError);
                }
                let bits = bits.unwrap_or(if net.is_ipv4() { 32 } else { 128 });
                Ok(in_cidr(self.ip, net, bits))
            }
            "exists" => {
                self.count_lookup()?;
                let t = target(self, arg)?;
                let ips = self.addresses_of(&t).await?;
                Ok(ips.iter().any(IpAddr::is_ipv4))
            }
            "ptr" => {
                self.count_lookup()?;
                Ok(false)
            }
            _ => Err(SpfResult::PermError),
        }
    }
}

/// Checks whether `ip` may send mail from `sender` (the MAIL FROM address, or
/// `postmaster@<helo>` for the null sender) given HELO name `helo`.
pub async fn check_host(
    resolver: &dyn Resolver,
    ip: IpAddr,
    sender: &str,
    helo: &str,
) -> SpfResult {
    let domain = sender
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or(sender)
        .to_ascii_lowercase();
    let mut eval = Eval {
        resolver,
        ip,
        sender: sender.to_owned(),
        helo: helo.to_owned(),
        lookups: 0,
    };
    eval.check_host(&domain, 0).await
}

/// The front door's SPF check of the sender (or of the HELO name for the null sender): a
/// `fail` refuses the recipient; any other result becomes a `Received-SPF:` field (ending in
/// CRLF) written by `hostname`.
pub async fn check(
    resolver: &dyn Resolver,
    hostname: &str,
    client: IpAddr,
    helo: &str,
    sender: &str,
) -> Result<String, RcptCheck> {
    let identity = if sender.is_empty() {
        format!("postmaster@{helo}")
    } else {
        sender.to_owned()
    };
    let client = client.to_canonical();
    let result = check_host(resolver, client, &identity, helo).await;
    if result == SpfResult::Fail {
        let domain = identity
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(&identity);
        return Err(RcptCheck::SpfFail(format!(
            "SPF check failed: {client} is not allowed to send mail for {domain}"
        )));
    }
    Ok(format!(
        "Received-SPF: {} ({hostname}: domain of {identity} and client {client}) client-ip={client}; envelope-from=<{sender}>; helo={helo};\r\n",
        result.name(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxraft_dns::ZoneResolver;

    const ZONE: &str = r#"
        strict.test. TXT "v=spf1 ip4:192.0.2.0/24 -all"
        soft.test. TXT "v=spf1 a ~all"
        soft.test. A 198.51.100.7
        inc.test. TXT "v=spf1 include:strict.test ?all"
        mxd.test. TXT "v=spf1 mx/24 -all"
        mxd.test. MX 10 mail.mxd.test.
        mail.mxd.test. A 203.0.113.9
        redir.test. TXT "v=spf1 redirect=strict.test"
        ex.test. TXT "v=spf1 exists:%{ir}.allow.ex.test -all"
        5.2.0.192.allow.ex.test. A 127.0.0.2
        two.test. TXT "v=spf1 -all"
        two.test. TXT "v=spf1 +all"
        loop.test. TXT "v=spf1 include:loop.test -all"
        broken.test. TXT "v=spf1 ip4:not-an-ip -all"
        v6.test. TXT "v=spf1 ip6:2001:db8::/32 -all"
        nospf.test. TXT "some other record"
        dnsfail.test. SERVFAIL
    "#;

    async fn spf(ip: &str, sender: &str) -> SpfResult {
        let z = ZoneResolver::parse(ZONE).expect("zone");
        check_host(&z, ip.parse().expect("ip"), sender, "helo.test").await
    }

    #[tokio::test]
    async fn evaluates_the_common_mechanisms() {
        assert_eq!(spf("192.0.2.5", "a@strict.test").await, SpfResult::Pass);
        assert_eq!(spf("203.0.113.1", "a@strict.test").await, SpfResult::Fail);
        assert_eq!(spf("198.51.100.7", "a@soft.test").await, SpfResult::Pass);
        assert_eq!(
            spf("198.51.100.8", "a@soft.test").await,
            SpfResult::SoftFail
        );
        assert_eq!(spf("192.0.2.9", "a@inc.test").await, SpfResult::Pass);
        assert_eq!(spf("203.0.113.1", "a@inc.test").await, SpfResult::Neutral);
        assert_eq!(
            spf("203.0.113.200", "a@mxd.test").await,
            SpfResult::Pass,
            "mx/24"
        );
        assert_eq!(spf("203.0.114.1", "a@mxd.test").await, SpfResult::Fail);
        assert_eq!(spf("192.0.2.1", "a@redir.test").await, SpfResult::Pass);
        assert_eq!(
            spf("192.0.2.5", "a@ex.test").await,
            SpfResult::Pass,
            "exists with a reversed-IP macro"
        );
        assert_eq!(spf("192.0.2.6", "a@ex.test").await, SpfResult::Fail);
        assert_eq!(spf("2001:db8::1", "a@v6.test").await, SpfResult::Pass);
        assert_eq!(spf("2001:db9::1", "a@v6.test").await, SpfResult::Fail);
    }

    #[tokio::test]
    async fn tells_apart_none_temperror_and_permerror() {
        assert_eq!(spf("192.0.2.1", "a@nospf.test").await, SpfResult::None);
        assert_eq!(spf("192.0.2.1", "a@nowhere.test").await, SpfResult::None);
        assert_eq!(
            spf("192.0.2.1", "a@dnsfail.test").await,
            SpfResult::TempError
        );
        assert_eq!(
            spf("192.0.2.1", "a@two.test").await,
            SpfResult::PermError,
            "two records"
        );
        assert_eq!(
            spf("192.0.2.1", "a@broken.test").await,
            SpfResult::PermError
        );
        assert_eq!(
            spf("192.0.2.1", "a@loop.test").await,
            SpfResult::PermError,
            "lookup limit"
        );
    }
}
