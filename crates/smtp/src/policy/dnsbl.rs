//! DNS blocklists (RFC 5782): a client listed in one of the domain's zones gets `554 5.7.1`.

use std::net::IpAddr;

use mxraft_dns::Resolver;

/// The name looked up for `client` in blocklist `zone`.
pub fn query_name(client: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match client.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut nibbles = String::new();
            for byte in v6.octets().iter().rev() {
                nibbles.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            format!("{nibbles}{zone}")
        }
    }
}

/// Whether `client` is listed in `zone`: its name resolves to a 127.0.0.0/8 address.
/// Lookup failures count as not listed (mail is not refused because DNS is down).
pub async fn listed(dns: &dyn Resolver, client: IpAddr, zone: &str) -> bool {
    let name = query_name(client, zone);
    match dns.addresses(&name).await {
        Ok(ips) => ips
            .iter()
            .any(|ip| matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 127)),
        Err(e) => {
            if e.is_temporary() {
                tracing::info!(zone, error = %e, "DNSBL lookup failed; not refusing");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_reversed_per_rfc_5782() {
        assert_eq!(
            query_name("192.0.2.99".parse().expect("ip"), "bl.test."),
            "99.2.0.192.bl.test"
        );
        let v6 = query_name("2001:db8::1".parse().expect("ip"), "bl.test");
        assert!(v6.starts_with("1.0.0.0.0.0.0.0."), "{v6}");
        assert!(v6.ends_with(".8.b.d.0.1.0.0.2.bl.test"), "{v6}");
        assert_eq!(v6.split('.').count(), 32 + 2);
    }
}
