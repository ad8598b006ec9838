//! Choosing messages by what an administrator knows of them: sender, recipient, destination,
//! state and age. The admin API lists, counts and acts on the messages a [`MessageFilter`]
//! matches, and [`shape`] counts them per destination and age, like Postfix's `qshape`.

use std::collections::BTreeMap;

use crate::message::{Message, canonical_domain, destination_of};
use crate::state::QueueState;

/// An address as a filter gives it: `user@domain` (that address), `@domain` or `domain` (any
/// address there), or `<>` (the null sender).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressPattern {
    /// The null reverse path.
    Null,
    /// One address, compared without regard to case.
    Address(String),
    /// Every address of a domain.
    Domain(String),
}

impl AddressPattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<AddressPattern, String> {
        let t = text.trim();
        if t == "<>" {
            return Ok(AddressPattern::Null);
        }
        let t = t.trim_start_matches('<').trim_end_matches('>');
        match t.rsplit_once('@') {
            None if !t.is_empty() => Ok(AddressPattern::Domain(canonical_domain(t))),
            Some(("", d)) if !d.is_empty() => Ok(AddressPattern::Domain(canonical_domain(d))),
            Some((local, d)) if !local.is_empty() && !d.is_empty() => Ok(AddressPattern::Address(
                format!("{}@{}", local.to_lowercase(), canonical_domain(d)),
            )),
            _ => Err(format!(
                "{text:?} is not an address pattern (use user@domain, @domain or <>)"
            )),
        }
    }

    /// Whether `address` (empty for the null sender) matches.
    pub fn matches(&self, address: &str) -> bool {
        match self {
            AddressPattern::Null => address.is_empty(),
            _ if address.is_empty() => false,
            AddressPattern::Domain(d) => destination_of(address) == *d,
            AddressPattern::Address(a) => match address.rsplit_once('@') {
                Some((local, domain)) => {
                    format!("{}@{}", local.to_lowercase(), canonical_domain(domain)) == *a
                }
                None => false,
            },
        }
    }
}

/// Where a message stands, as `mxraftctl queue list --state` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MessageState {
    /// Waiting for its first attempt.
    Queued,
    /// An attempt failed temporarily; it waits for the next.
    Deferred,
    /// A node holds a live claim and is delivering it.
    Active,
    /// On hold.
    Held,
}

impl MessageState {
    /// Every state, in the order they are shown.
    pub const ALL: [MessageState; 4] = [
        MessageState::Queued,
        MessageState::Deferred,
        MessageState::Active,
        MessageState::Held,
    ];

    /// The state of `m` at `now_ms`.
    pub fn of(m: &Message, now_ms: u64) -> MessageState {
        if m.held {
            MessageState::Held
        } else if m.live_claim(now_ms).is_some() {
            MessageState::Active
        } else if m
            .recipients
            .iter()
            .any(|r| r.is_pending() && r.attempts > 0)
        {
            MessageState::Deferred
        } else {
            MessageState::Queued
        }
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Deferred => "deferred",
            MessageState::Active => "active",
            MessageState::Held => "held",
        }
    }

    /// The state of this name.
    pub fn parse(name: &str) -> Result<MessageState, String> {
        MessageState::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                format!("{name:?} is not a message state (queued, deferred, active or held)")
            })
    }
}

/// Which messages an administrator means. Every condition given must hold; an empty filter
/// matches every message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    /// The sender matches.
    pub sender: Option<AddressPattern>,
    /// Some recipient matches.
    pub recipient: Option<AddressPattern>,
    /// Some pending recipient is in this destination (canonical).
    pub destination: Option<String>,
    /// The message is in this state.
    pub state: Option<MessageState>,
    /// The message was received before this time (milliseconds since the Unix epoch).
    pub received_before_ms: Option<u64>,
}

impl MessageFilter {
    /// Whether the filter has no condition.
    pub fn is_empty(&self) -> bool {
        *self == MessageFilter::default()
    }

    /// Whether `m` matches at `now_ms`.
    pub fn matches(&self, m: &Message, now_ms: u64) -> bool {
        self.sender.as_ref().is_none_or(|p| p.matches(&m.sender))
            && self
                .recipient
                .as_ref()
                .is_none_or(|p| m.recipients.iter().any(|r| p.matches(&r.address)))
            && self.destination.as_ref().is_none_or(|d| {
                m.recipients
                    .iter()
                    .any(|r| r.is_pending() && r.destination() == *d)
            })
            && self.state.is_none_or(|s| MessageState::of(m, now_ms) == s)
            && self.received_before_ms.is_none_or(|t| m.received_at_ms < t)
    }
}

/// The upper bounds of the age buckets of [`shape`], in minutes; a last bucket holds what is
/// older. Postfix's `qshape` uses the same.
pub const SHAPE_BUCKETS_MINUTES: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/// One destination's row of [`shape`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeRow {
    /// The destination.
    pub destination: String,
    /// Messages with pending recipients there.
    pub total: u64,
    /// Of those, how many per age bucket: up to each bound of [`SHAPE_BUCKETS_MINUTES`], then
    /// older.
    pub counts: [u64; SHAPE_BUCKETS_MINUTES.len() + 1],
}

/// Messages matching `filter` with pending recipients, per destination and age at `now_ms`,
/// the largest destination first. A message waiting for two destinations counts in both.
pub fn shape(q: &QueueState, filter: &MessageFilter, now_ms: u64) -> Vec<ShapeRow> {
    let mut rows: BTreeMap<String, ShapeRow> = BTreeMap::new();
    for m in q.iter_from(None).filter(|m| filter.matches(m, now_ms)) {
        let minutes = now_ms.saturating_sub(m.received_at_ms) / 60_000;
        let bucket = SHAPE_BUCKETS_MINUTES
            .iter()
            .position(|&bound| minutes < bound)
            .unwrap_or(SHAPE_BUCKETS_MINUTES.len());
        let mut seen: Vec<String> = Vec::new();
        for r in m.recipients.iter().filter(|r| r.is_pending()) {
            let d = r.destination();
            if seen.contains(&d) {
                continue;
            }
            let row = rows.entry(d.clone()).or_insert_with(|| ShapeRow {
                destination: d.clone(),
                total: 0,
                counts: [0; SHAPE_BUCKETS_MINUTES.len() + 1],
            });
            row.total += 1;
            row.counts[bucket] += 1;
            seen.push(d);
        }
    }
    let mut out: Vec<ShapeRow> = rows.into_values().collect();
    out.sort_by(|a, b| {
        b.total
            .cmp(&a.total)
            .then_with(|| a.destination.cmp(&b.destination))
    });
    out
}
