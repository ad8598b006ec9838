//! Relay control: mail is accepted only for the protected domains, and never for an address
//! that would route it onwards.

use std::collections::HashSet;

use crate::address::{Mailbox, normalize_domain};

/// The domains this cluster accepts mail for.
#[derive(Debug, Clone, Default)]
pub struct DomainPolicy {
    domains: HashSet<String>,
}

impl DomainPolicy {
    /// A policy accepting mail for `domains` (compared case-insensitively, trailing dot ignored).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(domains: I) -> Self {
        DomainPolicy {
            domains: domains
                .into_iter()
                .map(|d| normalize_domain(d.as_ref()))
                .collect(),
        }
    }

    /// Whether `domain` is protected.
    pub fn is_protected(&self, domain: &str) -> bool {
        self.domains.contains(&normalize_domain(domain))
    }

    /// Whether mail to this mailbox may be accepted for relay to a protected domain.
    pub fn accepts(&self, mailbox: &Mailbox) -> bool {
        !mailbox.is_routed() && self.domains.contains(&normalize_domain(&mailbox.domain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{AddressError, parse_mailbox, parse_mailbox_utf8};

    #[test]
    fn policy_accepts_only_protected_unrouted_domains() {
        let p = DomainPolicy::new(["Example.TEST."]);
        let ok = |a: &str| p.accepts(&parse_mailbox(a).expect("valid"));
        assert!(ok("user@example.test"));
        assert!(ok("user@EXAMPLE.test."));
        assert!(!ok("user@other.test"));
        assert!(!ok("user@sub.example.test"));
        assert!(!ok("victim%evil.test@example.test"));
        assert!(!ok("evil.test!victim@example.test"));
        assert!(!ok("\"victim@evil.test\"@example.test"));
        assert!(!ok("user@[127.0.0.1]"));
        // Internationalized names match in either form.
        let idn = DomainPolicy::new(["Bücher.test"]);
        assert!(idn.accepts(&parse_mailbox("u@xn--bcher-kva.test").expect("valid")));
        assert!(idn.accepts(&parse_mailbox_utf8("u@BÜCHER.test.").expect("valid")));
        let ascii = DomainPolicy::new(["xn--bcher-kva.test"]);
        assert!(ascii.accepts(&parse_mailbox_utf8("u@bücher.test").expect("valid")));
        // user@example.test@evil.test routes onwards: refused like a source route.
        assert_eq!(
            parse_mailbox("user@example.test@evil.test"),
            Err(AddressError::SourceRoute)
        );
    }
}
