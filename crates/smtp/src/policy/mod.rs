//! The front door's policy: what is checked at MAIL and RCPT before a message is taken.
//!
//! One file per check: [`relay`] (protected domains, routed addresses), [`recipients`] (the
//! replicated table), [`verify`] (asking the primary, with the cluster-wide cache),
//! [`greylist`], [`dnsbl`], [`spf`] and [`quota`] (queue and disk room at MAIL).
//! [`FrontDoorPolicy`] runs them in that order for a recipient of a protected domain. What it
//! needs from outside is behind two narrow traits: [`QueueView`] (the replicated state it
//! reads and the cache entries it writes) and [`Primary`] (the recipient callout and who may
//! ask for ETRN), with DNS through [`mxraft_dns::Resolver`].

pub mod dnsbl;
pub mod greylist;
pub mod quota;
pub mod recipients;
pub mod relay;
pub mod spf;
pub mod verify;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mxraft_dns::Resolver;

use crate::{RcptCheck, RecipientPolicy};

pub use greylist::GreylistConfig;
pub use quota::QuotaConfig;
pub use recipients::RecipientMode;
pub use relay::DomainPolicy;
pub use verify::{VerifyConfig, WhenUnreachable};

/// The checks configured for one protected domain.
#[derive(Debug, Clone, Default)]
pub struct DomainRules {
    /// How recipients are validated.
    pub recipients: RecipientMode,
    /// DNS blocklist zones the client is looked up in.
    pub dnsbl: Vec<String>,
    /// Whether the domain's mail is greylisted.
    pub greylist: bool,
    /// Whether the sender's SPF record is checked.
    pub spf: bool,
}

/// How much the queue holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueUsage {
    /// Messages queued.
    pub messages: u64,
    /// Bytes of queued messages.
    pub bytes: u64,
}

/// A cluster-wide memory the policy asks to be written (committed in the background: the
/// session does not wait for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remember {
    /// The first attempt of a greylisting triplet.
    GreylistSeen {
        /// The triplet ([`greylist::triplet`]).
        key: String,
        /// When it was seen.
        at_ms: u64,
    },
    /// The primary's answer about a recipient.
    Verified {
        /// The normalized address.
        address: String,
        /// Whether the primary accepted it.
        valid: bool,
        /// When it answered.
        at_ms: u64,
    },
}

/// This node cannot vouch that its replicated state is current.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotCurrent(pub String);

/// What the policy reads from the replicated queue, and writes to it.
pub trait QueueView: Send + Sync + 'static {
    /// The cluster clock, in milliseconds since the epoch.
    fn now_ms(&self) -> u64;
    /// Whether the recipient table lists `address` (or its domain's catch-all).
    fn recipient_listed(&self, address: &str) -> bool;
    /// When a greylisting triplet was first seen.
    fn greylisted(&self, triplet: &str) -> Option<u64>;
    /// The cached verification of `address`: valid or not, and when the primary said so.
    fn verified(&self, address: &str) -> Option<(bool, u64)>;
    /// What the queue holds.
    fn usage(&self) -> QueueUsage;
    /// Waits (at most `timeout`) until this node is in contact with its cluster and caught
    /// up, so that its recipient table is current.
    fn wait_current(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), NotCurrent>> + Send;
    /// Writes a memory cluster-wide, without waiting for it.
    fn remember(&self, entry: Remember);
}

/// The primary could not answer a verification now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct VerifyError(pub String);

/// What the policy asks of the domains' primaries.
pub trait Primary: Send + Sync + 'static {
    /// Asks the primary of `address`'s domain whether it accepts the address, within
    /// `timeout`.
    fn verify_recipient(
        &self,
        address: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool, VerifyError>> + Send;
    /// Whether `client` may ask for the delivery of `domain`'s mail (ETRN).
    fn may_etrn(&self, client: IpAddr, domain: &str) -> impl Future<Output = bool> + Send;
}

/// The settings of every check.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// The checks per protected domain (normalized domain name).
    pub domains: HashMap<String, DomainRules>,
    /// Greylisting.
    pub greylist: GreylistConfig,
    /// Verification.
    pub verify: VerifyConfig,
    /// Queue and disk room.
    pub quota: QuotaConfig,
    /// The name this node gives itself (in `Received-SPF:`).
    pub hostname: String,
    /// The directory whose disk the queue lives on.
    pub data_dir: std::path::PathBuf,
}

/// The policy every node's front door applies, over the replicated state.
pub struct FrontDoorPolicy<V, P> {
    view: V,
    primary: Arc<P>,
    dns: Arc<dyn Resolver>,
    config: PolicyConfig,
}

impl<V: QueueView, P: Primary> FrontDoorPolicy<V, P> {
    /// The policy of `config`, reading `view`, asking `primary` and `dns`.
    pub fn new(view: V, primary: Arc<P>, dns: Arc<dyn Resolver>, config: PolicyConfig) -> Self {
        FrontDoorPolicy {
            view,
            primary,
            dns,
            config,
        }
    }

    /// The recipient-validation verdict of the domain's mode.
    async fn validate(&self, rules: &DomainRules, address: &str) -> RcptCheck {
        match rules.recipients {
            RecipientMode::Any => RcptCheck::Accept,
            RecipientMode::List => recipients::check(&self.view, address),
            RecipientMode::Verify => {
                verify::check(
                    &self.view,
                    self.primary.as_ref(),
                    &self.config.verify,
                    address,
                )
                .await
            }
        }
    }
}

impl<V: QueueView, P: Primary> RecipientPolicy for FrontDoorPolicy<V, P> {
    fn has_room(&self) -> bool {
        quota::has_room(&self.config.quota, self.view.usage(), &self.config.data_dir)
    }

    async fn check_recipient(
        &self,
        client: IpAddr,
        helo: &str,
        sender: &str,
        address: &str,
    ) -> RcptCheck {
        // The table and the verification cache hold normalized addresses (A-label domains).
        let normalized = mxraft_queue::recipients::normalize_entry(address);
        let address = normalized.as_deref().unwrap_or(address);
        let domain = mxraft_queue::destination_of(address);
        let Some(rules) = self.config.domains.get(&domain) else {
            return RcptCheck::Unknown;
        };
        for zone in &rules.dnsbl {
            if dnsbl::listed(self.dns.as_ref(), client, zone).await {
                return RcptCheck::Blocked(zone.clone());
            }
        }
        let verdict = self.validate(rules, address).await;
        if verdict == RcptCheck::Unknown {
            // A stale table must never turn into a permanent refusal of valid mail.
            if let Err(e) = self.view.wait_current(Duration::from_millis(500)).await {
                return RcptCheck::NotCurrent(e.0);
            }
        }
        if verdict != RcptCheck::Accept {
            return verdict;
        }
        let tag = if rules.spf {
            match spf::check(
                self.dns.as_ref(),
                &self.config.hostname,
                client,
                helo,
                sender,
            )
            .await
            {
                Err(reject) => return reject,
                Ok(field) => Some(field),
            }
        } else {
            None
        };
        if rules.greylist {
            let grey = greylist::check(&self.view, &self.config.greylist, client, sender, address);
            if grey != RcptCheck::Accept {
                return grey;
            }
        }
        match tag {
            Some(field) => RcptCheck::AcceptTagged(field),
            None => RcptCheck::Accept,
        }
    }

    async fn may_etrn(&self, client: IpAddr, domain: &str) -> bool {
        self.primary.may_etrn(client, domain).await
    }
}
