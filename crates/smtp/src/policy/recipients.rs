//! Recipient validation against the replicated recipient table (`list` mode).

use serde::Deserialize;

use super::QueueView;
use crate::RcptCheck;

/// Recipient validation of a protected domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientMode {
    /// Only addresses in the recipient table (or its `@domain` catch-all); others get `550 5.1.1`.
    #[default]
    List,
    /// Addresses the primary accepts when asked (an SMTP callout), with the answer cached
    /// cluster-wide; `450 4.1.1` when the primary cannot be asked and nothing is cached.
    Verify,
    /// Every address. Mail for non-existent users is then accepted and bounced later: only for
    /// domains whose primary is known to accept everything.
    Any,
}

/// `list` mode: the table decides. `address` is normalized.
pub fn check(view: &impl QueueView, address: &str) -> RcptCheck {
    if view.recipient_listed(address) {
        RcptCheck::Accept
    } else {
        RcptCheck::Unknown
    }
}
