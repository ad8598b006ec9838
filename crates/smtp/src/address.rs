//! Mailbox syntax (RFC 5321 §4.1.2).

/// A syntactically valid mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part as written (quotes kept).
    pub local: String,
    /// The domain, lower-cased, without a trailing dot; `[...]` for an address literal.
    pub domain: String,
    /// Whether the local part is a quoted string.
    pub quoted: bool,
}

impl Mailbox {
    /// The address in canonical form: local part as written, domain normalized.
    pub fn address(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    /// Whether the address is routed or quoted in a way that could hide another destination:
    /// `%` or `!` in the local part, an `@` inside a quoted local part, or an address literal.
    pub fn is_routed(&self) -> bool {
        self.local.contains('%')
            || self.local.contains('!')
            || (self.quoted && self.local.contains('@'))
            || self.domain.starts_with('[')
    }
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// Not a mailbox at all.
    Syntax,
    /// A source route (`@relay:user@domain`) or another address with more than one `@`
    /// (`user@domain@other`): forms that route mail onwards.
    SourceRoute,
    /// Contains non-ASCII characters, which need SMTPUTF8.
    NonAscii,
    /// Longer than RFC 5321 §4.5.3.1 allows.
    TooLong,
}

fn is_atext(b: u8, utf8: bool) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || (utf8 && b >= 0x80)
}

fn valid_dot_string(s: &str, utf8: bool) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(|b| is_atext(b, utf8)))
}

fn valid_quoted_string(s: &str, utf8: bool) -> bool {
    let b = s.as_bytes();
    if b.len() < 2 || b[0] != b'"' || b[b.len() - 1] != b'"' {
        return false;
    }
    let mut i = 1;
    while i < b.len() - 1 {
        match b[i] {
            b'\\' => {
                if i + 1 >= b.len() - 1 || !(32..=126).contains(&b[i + 1]) {
                    return false;
                }
                i += 2;
            }
            b'"' => return false,
            32..=126 => i += 1,
            0x80.. if utf8 => i += 1,
            _ => return false,
        }
    }
    true
}

fn valid_domain(s: &str, utf8: bool) -> bool {
    let letter = |c: u8| c.is_ascii_alphanumeric() || (utf8 && c >= 0x80);
    !s.is_empty()
        && s.len() <= 255
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && letter(b[0])
                && letter(b[b.len() - 1])
                && b.iter().all(|c| letter(*c) || *c == b'-')
        })
}

fn valid_address_literal(s: &str) -> bool {
    s.len() > 2
        && s.starts_with('[')
        && s.ends_with(']')
        && s[1..s.len() - 1]
            .bytes()
            .all(|b| (33..=126).contains(&b) && b != b'[' && b != b']' && b != b'\\')
}

/// Normalizes a domain for comparison: A-labels, lower case, one trailing dot removed (see
/// [`mxraft_queue::canonical_domain`]).
pub fn normalize_domain(domain: &str) -> String {
    mxraft_queue::canonical_domain(domain)
}

/// Parses the address inside the angle brackets of a path (ASCII only).
pub fn parse_mailbox(addr: &str) -> Result<Mailbox, AddressError> {
    parse(addr, false)
}

/// Parses an address of a transaction that announced SMTPUTF8 (RFC 6531): UTF-8 is allowed in
/// the local part and the domain.
pub fn parse_mailbox_utf8(addr: &str) -> Result<Mailbox, AddressError> {
    parse(addr, true)
}

fn parse(addr: &str, utf8: bool) -> Result<Mailbox, AddressError> {
    if !utf8 && !addr.is_ascii() {
        return Err(AddressError::NonAscii);
    }
    if addr.len() > 254 {
        return Err(AddressError::TooLong);
    }
    if addr.starts_with('@') {
        return Err(AddressError::SourceRoute);
    }
    let at = if addr.starts_with('"') {
        // The local part ends at the closing quote.
        let b = addr.as_bytes();
        let mut i = 1;
        let mut end = None;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => {
                    end = Some(i);
                    break;
                }
                _ => i += 1,
            }
        }
        let end = end.ok_or(AddressError::Syntax)?;
        if b.get(end + 1) != Some(&b'@') {
            return Err(AddressError::Syntax);
        }
        end + 1
    } else {
        let at = addr.rfind('@').ok_or(AddressError::Syntax)?;
        if addr[..at].contains('@') {
            return Err(AddressError::SourceRoute);
        }
        at
    };
    let (local, domain) = (&addr[..at], &addr[at + 1..]);
    let quoted = local.starts_with('"');
    if local.len() > 64 {
        return Err(AddressError::TooLong);
    }
    let local_ok = if quoted {
        valid_quoted_string(local, utf8)
    } else {
        valid_dot_string(local, utf8)
    };
    if !local_ok {
        return Err(AddressError::Syntax);
    }
    let domain = if domain.starts_with('[') {
        if !valid_address_literal(domain) {
            return Err(AddressError::Syntax);
        }
        domain.to_owned()
    } else {
        // Kept as written (lower-cased); compared in canonical form (A-labels).
        let d = domain.strip_suffix('.').unwrap_or(domain).to_lowercase();
        if !valid_domain(&d, utf8) {
            return Err(AddressError::Syntax);
        }
        d
    };
    Ok(Mailbox {
        local: local.to_owned(),
        domain,
        quoted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes_mailboxes() {
        assert_eq!(
            parse_mailbox("User.Name+tag@Example.TEST."),
            Ok(Mailbox {
                local: "User.Name+tag".into(),
                domain: "example.test".into(),
                quoted: false
            })
        );
        let q = parse_mailbox("\"a b@c\"@example.test").expect("quoted local part");
        assert!(q.quoted);
        assert!(q.is_routed());
        assert_eq!(
            parse_mailbox("x@[127.0.0.1]").map(|m| m.is_routed()),
            Ok(true)
        );
    }

    #[test]
    fn refuses_malformed_and_routed_forms() {
        assert_eq!(
            parse_mailbox("@a.test:u@b.test"),
            Err(AddressError::SourceRoute)
        );
        assert_eq!(
            parse_mailbox("u@b.test@c.test"),
            Err(AddressError::SourceRoute)
        );
        assert_eq!(parse_mailbox("no-at-sign"), Err(AddressError::Syntax));
        assert_eq!(parse_mailbox("a..b@x.test"), Err(AddressError::Syntax));
        assert_eq!(parse_mailbox("a@-x.test"), Err(AddressError::Syntax));
        assert_eq!(parse_mailbox("a@x..test"), Err(AddressError::Syntax));
        assert_eq!(parse_mailbox("üser@x.test"), Err(AddressError::NonAscii));
        assert_eq!(
            parse_mailbox_utf8("üser@Bücher.TEST").map(|m| m.domain),
            Ok("bücher.test".into())
        );
        assert_eq!(
            parse_mailbox(&format!("{}@x.test", "a".repeat(65))),
            Err(AddressError::TooLong)
        );
    }
}
