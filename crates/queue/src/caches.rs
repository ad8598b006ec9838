//! The bounded caches of the queue state: greylisting triplets, verification results, and the
//! ids of messages that recently left the queue.
//!
//! The front door writes the first two from attacker-chosen input (one entry per new client,
//! sender and recipient), so each is bounded per group: per client network and per recipient
//! domain for triplets, per domain for verification results. A full group evicts its oldest
//! entry. The limits are constants of the state machine, so every node evicts the same
//! entries (G8).
//!
//! Recently removed ids make `Enqueue` idempotent beyond the message's life in the queue: a
//! forwarded proposal whose reply was lost is retried for up to the commit timeout, and the
//! retry must not queue a message again that was delivered meanwhile.

use std::collections::{BTreeMap, BTreeSet};

use crate::id::MessageId;

/// Greylisting triplets kept per client network (a /24 or a /64).
pub const GREYLIST_PER_NETWORK: usize = 5_000;
/// Greylisting triplets kept per recipient domain.
pub const GREYLIST_PER_DOMAIN: usize = 200_000;
/// Verification results kept per recipient domain.
pub const VERIFIED_PER_DOMAIN: usize = 100_000;
/// How long the id of a message that left the queue is remembered: far beyond the commit
/// timeout, the longest a forwarded `Enqueue` is retried.
pub const RECENT_ID_TTL_MS: u64 = 10 * 60 * 1000;
/// Ids of removed messages remembered at most (the oldest are forgotten first).
pub const RECENT_IDS_MAX: usize = 200_000;

/// How the entries of a cache are grouped for their bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupBy {
    /// The client network: the first `|`-separated field of a greylisting triplet.
    Network,
    /// The recipient's domain: of the last `|`-separated field (a triplet) or of the address.
    Domain,
}

impl GroupBy {
    fn group_of(self, key: &str) -> String {
        match self {
            GroupBy::Network => key.split('|').next().unwrap_or("").to_owned(),
            GroupBy::Domain => {
                let address = key.rsplit('|').next().unwrap_or(key);
                crate::destination_of(address)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    by: GroupBy,
    limit: usize,
    members: BTreeMap<String, BTreeSet<(u64, String)>>,
}

/// Entries with the time they were written, bounded per group; the oldest of a full group goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BoundedCache<V> {
    entries: BTreeMap<String, (u64, V)>,
    groups: Vec<Group>,
}

impl<V> BoundedCache<V> {
    pub(crate) fn new(bounds: &[(GroupBy, usize)]) -> Self {
        BoundedCache {
            entries: BTreeMap::new(),
            groups: bounds
                .iter()
                .map(|&(by, limit)| Group {
                    by,
                    limit,
                    members: BTreeMap::new(),
                })
                .collect(),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&(u64, V)> {
        self.entries.get(key)
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Writes `key`, then evicts the oldest entries of every group it made too big; returns the
    /// evicted keys.
    pub(crate) fn insert(&mut self, key: String, at_ms: u64, value: V) -> Vec<String> {
        self.remove(&key);
        for g in &mut self.groups {
            g.members
                .entry(g.by.group_of(&key))
                .or_default()
                .insert((at_ms, key.clone()));
        }
        self.entries.insert(key.clone(), (at_ms, value));
        let mut evicted = Vec::new();
        for i in 0..self.groups.len() {
            let group = self.groups[i].by.group_of(&key);
            loop {
                let g = &self.groups[i];
                let Some(members) = g.members.get(&group) else {
                    break;
                };
                if members.len() <= g.limit {
                    break;
                }
                let Some((_, oldest)) = members.first().cloned() else {
                    break;
                };
                self.remove(&oldest);
                evicted.push(oldest);
            }
        }
        evicted
    }

    pub(crate) fn remove(&mut self, key: &str) -> bool {
        let Some((at_ms, _)) = self.entries.remove(key) else {
            return false;
        };
        for g in &mut self.groups {
            let group = g.by.group_of(key);
            if let Some(members) = g.members.get_mut(&group) {
                members.remove(&(at_ms, key.to_owned()));
                if members.is_empty() {
                    g.members.remove(&group);
                }
            }
        }
        true
    }

    /// Keys written before `before_ms`.
    pub(crate) fn older_than(&self, before_ms: u64) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, (at, _))| *at < before_ms)
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Ids of messages that left the queue, with when they left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RecentIds {
    ids: BTreeMap<MessageId, u64>,
    by_time: BTreeSet<(u64, MessageId)>,
}

impl RecentIds {
    pub(crate) fn contains(&self, id: MessageId) -> bool {
        self.ids.contains_key(&id)
    }

    pub(crate) fn get(&self, id: MessageId) -> Option<u64> {
        self.ids.get(&id).copied()
    }

    /// Remembers `id` as removed at `at_ms` and forgets ids past their time or over the bound;
    /// returns the forgotten ones.
    pub(crate) fn insert(&mut self, id: MessageId, at_ms: u64) -> Vec<MessageId> {
        if let Some(old) = self.ids.insert(id, at_ms) {
            self.by_time.remove(&(old, id));
        }
        self.by_time.insert((at_ms, id));
        let mut forgotten = Vec::new();
        let horizon = at_ms.saturating_sub(RECENT_ID_TTL_MS);
        while let Some(&(t, old)) = self.by_time.first() {
            if t >= horizon && self.ids.len() <= RECENT_IDS_MAX {
                break;
            }
            self.by_time.pop_first();
            self.ids.remove(&old);
            forgotten.push(old);
        }
        forgotten
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_group_evicts_its_oldest_entry_and_leaves_other_groups_alone() {
        let mut c: BoundedCache<()> =
            BoundedCache::new(&[(GroupBy::Network, 3), (GroupBy::Domain, 100)]);
        for i in 0..3 {
            assert!(
                c.insert(format!("10.0.0|s{i}@x|r@a.test"), i, ())
                    .is_empty()
            );
        }
        assert!(c.insert("10.0.1|s@x|r@a.test".into(), 5, ()).is_empty());
        let evicted = c.insert("10.0.0|s9@x|r@a.test".into(), 9, ());
        assert_eq!(evicted, vec!["10.0.0|s0@x|r@a.test".to_owned()]);
        assert_eq!(c.len(), 4);
        assert!(c.contains("10.0.1|s@x|r@a.test"));
        // Writing a key again moves it to the young end.
        c.insert("10.0.0|s1@x|r@a.test".into(), 10, ());
        let evicted = c.insert("10.0.0|s10@x|r@a.test".into(), 11, ());
        assert_eq!(evicted, vec!["10.0.0|s2@x|r@a.test".to_owned()]);
    }

    #[test]
    fn the_domain_bound_groups_addresses_and_triplets_by_recipient_domain() {
        let mut c: BoundedCache<bool> = BoundedCache::new(&[(GroupBy::Domain, 2)]);
        c.insert("a@one.test".into(), 1, true);
        c.insert("b@ONE.test".into(), 2, true);
        c.insert("a@two.test".into(), 3, false);
        assert_eq!(
            c.insert("c@one.test".into(), 4, true),
            vec!["a@one.test".to_owned()]
        );
        assert_eq!(c.get("a@two.test"), Some(&(3, false)));
    }

    #[test]
    fn recent_ids_are_forgotten_after_their_time() {
        let mut r = RecentIds::default();
        let a = MessageId::new(1, 1, 1);
        let b = MessageId::new(2, 1, 2);
        assert!(r.insert(a, 1_000).is_empty());
        assert!(r.insert(b, 1_000 + RECENT_ID_TTL_MS - 1).is_empty());
        assert!(r.contains(a));
        let c = MessageId::new(3, 1, 3);
        assert_eq!(r.insert(c, 1_001 + RECENT_ID_TTL_MS), vec![a]);
        assert!(!r.contains(a) && r.contains(b) && r.contains(c));
    }
}
