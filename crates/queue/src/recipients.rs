//! Recipient validation data: the replicated recipient table and the verification cache.
//!
//! Entries are normalized once, when they enter a command, so that every node compares the
//! same strings: the whole address is lower-cased, the domain written as A-labels and a trailing
//! dot of the domain dropped.
//! A catch-all entry `@domain` accepts every address of the domain.

/// Normalizes a recipient-table entry or an address to look up. Returns `None` for text that
/// is neither `local@domain` nor `@domain`.
pub fn normalize_entry(text: &str) -> Option<String> {
    let text = text.trim();
    let (local, domain) = text.rsplit_once('@')?;
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let valid_domain = !domain.is_empty()
        && !domain.contains(['@', ' ', '<', '>', ','])
        && !domain.starts_with('.')
        && !domain.ends_with('.');
    let valid_local =
        !local.contains(['<', '>', ' ']) || (local.starts_with('"') && local.ends_with('"'));
    if !valid_domain || !valid_local || local.len() > 64 {
        return None;
    }
    Some(format!(
        "{}@{}",
        local.to_lowercase(),
        crate::canonical_domain(domain)
    ))
}

/// The catch-all entry of an address's domain.
pub fn catch_all_of(address: &str) -> Option<String> {
    address.rsplit_once('@').map(|(_, d)| format!("@{d}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_normalized_or_refused() {
        assert_eq!(
            normalize_entry(" User1@Example.TEST. "),
            Some("user1@example.test".into())
        );
        assert_eq!(
            normalize_entry("@Example.test"),
            Some("@example.test".into())
        );
        // An internationalized domain is stored as A-labels, however it was written.
        assert_eq!(
            normalize_entry("Jörg@Bücher.Example"),
            Some("jörg@xn--bcher-kva.example".into())
        );
        assert_eq!(
            normalize_entry("jörg@xn--bcher-kva.example"),
            Some("jörg@xn--bcher-kva.example".into())
        );
        assert_eq!(normalize_entry("no-at-sign"), None);
        assert_eq!(normalize_entry("a@"), None);
        assert_eq!(normalize_entry("a b@x.test"), None);
        assert_eq!(catch_all_of("u@example.test"), Some("@example.test".into()));
    }
}
