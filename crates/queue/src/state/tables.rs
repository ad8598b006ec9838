//! The replicated tables beside the queue: recipients, greylisting triplets, verification
//! results, and the ids that left the queue recently.

use crate::command::CommandResult;
use crate::id::MessageId;

use super::{Change, Effects, QueueState};

impl QueueState {
    /// When message `id` left the queue, if that was recent enough to be remembered.
    pub fn recently_removed(&self, id: MessageId) -> Option<u64> {
        self.recent.get(id)
    }

    /// Entries in the caches: `(greylisting triplets, verification results, recent ids)`.
    pub fn cache_sizes(&self) -> (usize, usize, usize) {
        (self.greylist.len(), self.verified.len(), self.recent.len())
    }

    /// Whether the recipient table holds exactly this entry.
    pub fn has_recipient_entry(&self, entry: &str) -> bool {
        self.recipients.contains(entry)
    }

    /// Whether a (normalized) address is in the recipient table, itself or by its domain's
    /// catch-all.
    pub fn recipient_listed(&self, address: &str) -> bool {
        self.recipients.contains(address)
            || crate::recipients::catch_all_of(address)
                .is_some_and(|c| self.recipients.contains(&c))
    }

    /// Recipient-table entries in order, starting after `after`.
    pub fn recipient_entries(&self, after: Option<&str>) -> impl Iterator<Item = &String> {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(a.to_owned()),
            None => Bound::Unbounded,
        };
        self.recipients
            .range::<String, _>((start, Bound::Unbounded))
    }

    /// When a greylisting triplet was first seen.
    pub fn greylisted(&self, key: &str) -> Option<u64> {
        self.greylist.get(key).map(|(at, ())| *at)
    }

    /// The cached verification of an address: whether it was valid, and when.
    pub fn verified(&self, address: &str) -> Option<(bool, u64)> {
        self.verified.get(address).map(|(at, valid)| (*valid, *at))
    }

    pub(super) fn add_recipients(
        &mut self,
        entries: Vec<String>,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        self.change_recipients(entries, effects, |table, e| table.insert(e.clone()))
    }

    pub(super) fn remove_recipients(
        &mut self,
        entries: Vec<String>,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        self.change_recipients(entries, effects, |table, e| table.remove(e))
    }

    /// Applies `change` to the recipient table for each entry; those it changed are written.
    fn change_recipients(
        &mut self,
        entries: Vec<String>,
        effects: &mut Effects<'_>,
        change: impl Fn(&mut std::collections::BTreeSet<String>, &String) -> bool,
    ) -> CommandResult {
        let mut changed = 0;
        for e in entries {
            if change(&mut self.recipients, &e) {
                effects.changes.push(Change::RecipientEntry(e));
                changed += 1;
            }
        }
        CommandResult::Applied { changed }
    }

    /// Remembers the first attempt of a greylisting triplet.
    pub(super) fn greylist_seen(
        &mut self,
        key: String,
        at_ms: u64,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        if self.greylist.contains(&key) {
            return CommandResult::Applied { changed: 0 };
        }
        let evicted = self.greylist.insert(key.clone(), at_ms, ());
        effects.changes.push(Change::Greylist(key));
        effects.evicted("greylist", evicted, Change::Greylist);
        CommandResult::Applied { changed: 1 }
    }

    /// Forgets triplets and verification results older than `before_ms`.
    pub(super) fn prune_caches(
        &mut self,
        before_ms: u64,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        let old_triplets = self.greylist.older_than(before_ms);
        let old_verified = self.verified.older_than(before_ms);
        let changed = (old_triplets.len() + old_verified.len()) as u32;
        for k in old_triplets {
            self.greylist.remove(&k);
            effects.changes.push(Change::Greylist(k));
        }
        for k in old_verified {
            self.verified.remove(&k);
            effects.changes.push(Change::Verified(k));
        }
        CommandResult::Applied { changed }
    }

    /// Records the primary's answer about a recipient.
    pub(super) fn remember_verified(
        &mut self,
        address: String,
        valid: bool,
        at_ms: u64,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        let evicted = self.verified.insert(address.clone(), at_ms, valid);
        effects.changes.push(Change::Verified(address));
        effects.evicted("verified", evicted, Change::Verified);
        CommandResult::Applied { changed: 1 }
    }
}
