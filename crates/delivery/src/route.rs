//! Where a destination's mail goes: an explicit next hop, or the MX hosts better than us.
//!
//! [`choose_mx`] is the pure part of RFC 5321 §5.1: sort by preference, shuffle equal
//! preferences, drop the records at our own preference and worse, and classify what is left.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use rand::Rng;
use rand::seq::SliceRandom;

use mxraft_dns::{DnsError, Mx, Resolver};

/// How a destination is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A fixed next hop (`host:port`), like a Postfix transport map: no MX lookup.
    NextHop {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// MX lookup of the domain; records at `own_preference` and worse are ours (or worse).
    Mx {
        /// Our own MX preference for this domain, if we are one of its MX hosts.
        own_preference: Option<u16>,
    },
}

impl Route {
    /// A readable form for the admin API: `127.0.0.1:2500` or `MX (own preference 20)`.
    pub fn describe(&self) -> String {
        match self {
            Route::NextHop { host, port } => format!("{host}:{port}"),
            Route::Mx {
                own_preference: Some(p),
            } => format!("MX (own preference {p})"),
            Route::Mx {
                own_preference: None,
            } => "MX".into(),
        }
    }
}

/// The routes of every destination: explicit next hops and our MX preferences.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: BTreeMap<String, Route>,
}

impl RouteTable {
    /// An empty table: every destination by plain MX lookup.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the route of `domain`.
    pub fn insert(&mut self, domain: &str, route: Route) {
        self.routes
            .insert(mxraft_queue::canonical_domain(domain), route);
    }

    /// The route of `destination`.
    pub fn route(&self, destination: &str) -> Route {
        self.routes.get(destination).cloned().unwrap_or(Route::Mx {
            own_preference: None,
        })
    }
}

/// Why no host could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Retrying later can help (DNS trouble, better MX hosts that do not resolve now).
    #[error("{0}")]
    Temporary(String),
    /// It cannot work: no such domain, null MX, or we are the best MX.
    #[error("{0}")]
    Permanent(String),
}

impl RouteError {
    /// The reply text a recipient gets, with an enhanced status code.
    pub fn reply(&self) -> String {
        match self {
            RouteError::Temporary(m) => format!("4.4.3 {m}"),
            RouteError::Permanent(m) => format!("5.1.2 {m}"),
        }
    }
}

/// Orders the MX hosts to try (RFC 5321 §5.1). `answer` is the MX lookup of `domain`.
pub fn choose_mx(
    domain: &str,
    answer: Result<Vec<Mx>, DnsError>,
    own_preference: Option<u16>,
    rng: &mut impl Rng,
) -> Result<Vec<String>, RouteError> {
    let mut records = match answer {
        Ok(records) => records,
        // No MX: the domain itself is the implicit MX (preference 0).
        Err(DnsError::NoRecords(_)) => vec![Mx {
            preference: 0,
            host: domain.to_owned(),
        }],
        Err(DnsError::NxDomain(_)) => {
            return Err(RouteError::Permanent(format!(
                "{domain}: domain does not exist"
            )));
        }
        Err(e @ DnsError::Temporary(..)) => return Err(RouteError::Temporary(e.to_string())),
    };
    if records.len() == 1 && records[0].host.is_empty() {
        return Err(RouteError::Permanent(format!(
            "{domain}: domain does not accept mail (null MX)"
        )));
    }
    records.retain(|r| !r.host.is_empty());
    let had_records = !records.is_empty();
    if let Some(own) = own_preference {
        records.retain(|r| r.preference < own);
    }
    if records.is_empty() {
        return Err(if had_records && own_preference.is_some() {
            RouteError::Permanent(format!(
                "{domain}: mail loops back to myself (no MX better than ours)"
            ))
        } else {
            RouteError::Permanent(format!("{domain}: no usable MX"))
        });
    }
    // Shuffle, then a stable sort by preference: equal preferences end up in random order.
    records.shuffle(rng);
    records.sort_by_key(|r| r.preference);
    let mut hosts: Vec<String> = Vec::new();
    for r in records {
        if !hosts.contains(&r.host) {
            hosts.push(r.host);
        }
    }
    Ok(hosts)
}

/// Resolves a route to the socket addresses to try, in order (each host's IPv4 and IPv6
/// addresses). Hosts that do not resolve are skipped; if none resolves, the failure is
/// temporary unless every lookup was permanent.
pub async fn resolve(
    resolver: &dyn Resolver,
    destination: &str,
    route: &Route,
    mx_port: u16,
    rng: &mut (impl Rng + Send),
) -> Result<Vec<(String, SocketAddr)>, RouteError> {
    let (hosts, port) = match route {
        Route::NextHop { host, port } => (vec![host.clone()], *port),
        Route::Mx { own_preference } => {
            let answer = resolver.mx(destination).await;
            (
                choose_mx(destination, answer, *own_preference, rng)?,
                mx_port,
            )
        }
    };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut all_permanent = true;
    for host in hosts {
        match resolver.addresses(&host).await {
            Ok(ips) => {
                let (mut v4, mut v6): (Vec<IpAddr>, Vec<IpAddr>) =
                    ips.into_iter().partition(IpAddr::is_ipv4);
                v4.shuffle(rng);
                v6.shuffle(rng);
                // IPv4 first, then IPv6: both are tried.
                out.extend(
                    v4.into_iter()
                        .chain(v6)
                        .map(|ip| (host.clone(), SocketAddr::new(ip, port))),
                );
            }
            Err(e) => {
                all_permanent &= !e.is_temporary();
                errors.push(e.to_string());
            }
        }
    }
    if out.is_empty() {
        let msg = format!("{destination}: no MX host resolves ({})", errors.join("; "));
        return Err(if all_permanent && matches!(route, Route::NextHop { .. }) {
            RouteError::Permanent(msg)
        } else {
            RouteError::Temporary(msg)
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use mxraft_dns::ZoneResolver;

    const ZONE: &str = "
        ; the protected domain: primary at 10, the backup cluster at 20, a worse one at 30
        example.test.        MX 10 primary.example.test.
        example.test.        MX 20 mx-a.backup.test.
        example.test.        MX 20 mx-b.backup.test.
        example.test.        MX 30 last.example.test.
        primary.example.test. A 127.0.0.10
        primary.example.test. AAAA ::1
        ; two primaries at the same preference
        twin.test.           MX 5 one.twin.test.
        twin.test.           MX 5 two.twin.test.
        twin.test.           MX 50 three.twin.test.
        one.twin.test.       A 127.0.0.11
        two.twin.test.       A 127.0.0.12
        three.twin.test.     A 127.0.0.13
        nomx.test.           A 127.0.0.14
        nullmx.test.         MX 0 .
        broken.test.         SERVFAIL
        gone.test.           NXDOMAIN
        dangling.test.       MX 10 nowhere.dangling.test.
        dangling.test.       MX 20 us.dangling.test.
        nowhere.dangling.test. SERVFAIL
    ";

    fn zone() -> ZoneResolver {
        ZoneResolver::parse(ZONE).expect("zone parses")
    }

    async fn hosts(domain: &str, own: Option<u16>, seed: u64) -> Result<Vec<String>, RouteError> {
        let z = zone();
        choose_mx(
            domain,
            z.mx(domain).await,
            own,
            &mut StdRng::seed_from_u64(seed),
        )
    }

    #[tokio::test]
    async fn drops_our_own_preference_and_worse() {
        assert_eq!(
            hosts("example.test", Some(20), 1).await,
            Ok(vec!["primary.example.test".into()])
        );
        let all = hosts("example.test", None, 1).await.expect("hosts");
        assert_eq!(all[0], "primary.example.test");
        assert_eq!(all[3], "last.example.test");
        assert_eq!(all.len(), 4);
    }

    #[tokio::test]
    async fn shuffles_equal_preferences_and_keeps_the_order_of_preferences() {
        let mut firsts = std::collections::BTreeSet::new();
        for seed in 0..32 {
            let h = hosts("twin.test", None, seed).await.expect("hosts");
            assert_eq!(h.len(), 3);
            assert_eq!(h[2], "three.twin.test", "worse preference stays last");
            firsts.insert(h[0].clone());
        }
        assert_eq!(
            firsts.len(),
            2,
            "both equal-preference hosts come first sometimes"
        );
    }

    #[tokio::test]
    async fn classifies_dns_answers() {
        assert_eq!(
            hosts("nomx.test", Some(20), 1).await,
            Ok(vec!["nomx.test".into()]),
            "implicit MX"
        );
        assert!(
            matches!(hosts("nullmx.test", None, 1).await, Err(RouteError::Permanent(m)) if m.contains("null MX"))
        );
        assert!(matches!(
            hosts("gone.test", None, 1).await,
            Err(RouteError::Permanent(_))
        ));
        assert!(matches!(
            hosts("broken.test", None, 1).await,
            Err(RouteError::Temporary(_))
        ));
        assert!(
            matches!(hosts("example.test", Some(10), 1).await, Err(RouteError::Permanent(m)) if m.contains("loops back"))
        );
    }

    #[tokio::test]
    async fn resolves_hosts_to_ipv4_then_ipv6_addresses() {
        let z = zone();
        let route = Route::Mx {
            own_preference: Some(20),
        };
        let addrs = resolve(
            &z,
            "example.test",
            &route,
            25,
            &mut StdRng::seed_from_u64(3),
        )
        .await
        .expect("resolves");
        let want: Vec<(String, SocketAddr)> = vec![
            (
                "primary.example.test".into(),
                "127.0.0.10:25".parse().expect("addr"),
            ),
            (
                "primary.example.test".into(),
                "[::1]:25".parse().expect("addr"),
            ),
        ];
        assert_eq!(addrs, want);
        let hop = Route::NextHop {
            host: "127.0.0.1".into(),
            port: 2500,
        };
        let addrs = resolve(&z, "example.test", &hop, 25, &mut StdRng::seed_from_u64(3))
            .await
            .expect("resolves");
        assert_eq!(
            addrs,
            vec![(
                "127.0.0.1".to_string(),
                "127.0.0.1:2500".parse().expect("addr")
            )]
        );
        // A better MX that does not resolve now: temporary, never "loops back".
        let dangling = Route::Mx {
            own_preference: Some(20),
        };
        let err = resolve(
            &z,
            "dangling.test",
            &dangling,
            25,
            &mut StdRng::seed_from_u64(3),
        )
        .await
        .expect_err("no host");
        assert!(matches!(err, RouteError::Temporary(_)), "{err:?}");
    }
}
