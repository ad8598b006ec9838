//! Reading the state: messages, totals and destinations.

use std::collections::BTreeMap;

use crate::id::MessageId;
use crate::message::{Destination, Message};

use super::{QueueState, QueueStats};

impl QueueState {
    /// The metadata of one message.
    pub fn get(&self, id: MessageId) -> Option<&Message> {
        self.messages.get(&id).map(|m| &**m)
    }

    /// Messages in id order (which is arrival order), starting after `after` when given.
    pub fn iter_from(&self, after: Option<MessageId>) -> impl Iterator<Item = &Message> {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded(id),
            None => Bound::Unbounded,
        };
        self.messages
            .range((start, Bound::Unbounded))
            .map(|(_, m)| &**m)
    }

    /// Messages from the oldest receive time on.
    pub fn iter_by_age(&self) -> impl Iterator<Item = &Message> {
        self.by_time
            .iter()
            .filter_map(|(_, id)| self.messages.get(id).map(|m| &**m))
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Totals over the whole queue.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            messages: self.messages.len() as u64,
            bytes: self.bytes,
            oldest_received_at_ms: self.by_time.first().map(|(t, _)| *t),
        }
    }

    /// The known destinations and their state.
    pub fn destinations(&self) -> &BTreeMap<String, Destination> {
        &self.destinations
    }

    /// A destination's state; unknown destinations count as up.
    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.get(name)
    }

    /// Since when delivery to this destination is suspended, if it is.
    pub fn suspended_since(&self, name: &str) -> Option<u64> {
        self.suspended.get(name).copied()
    }

    /// The suspended destinations, with since when.
    pub fn suspensions(&self) -> &BTreeMap<String, u64> {
        &self.suspended
    }

    /// Since when a node has announced that it is stopping, if it has (and not since that it
    /// runs again).
    pub fn stopping_since(&self, node: u64) -> Option<u64> {
        self.stopping.get(&node).copied()
    }

    /// The nodes that announced they are stopping, with since when.
    pub fn stopping_nodes(&self) -> &BTreeMap<u64, u64> {
        &self.stopping
    }

    /// Whether mail for this destination should be attempted (unknown counts as up).
    pub fn destination_up(&self, name: &str) -> bool {
        self.destinations.get(name).is_none_or(|d| d.up)
    }

    /// Destinations that have messages with pending recipients, with how many messages and the
    /// oldest receive time.
    pub fn queued_destinations(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out = BTreeMap::new();
        for (dest, set) in &self.due {
            let oldest = set
                .iter()
                .filter_map(|(_, id)| self.messages.get(id))
                .map(|m| m.received_at_ms)
                .min()
                .unwrap_or(0);
            out.insert(dest.clone(), (set.len() as u64, oldest));
        }
        // Held messages are not in the due index but still count as queued there.
        for m in self.messages.values().filter(|m| m.held) {
            for r in m.recipients.iter().filter(|r| r.is_pending()) {
                let e = out.entry(r.destination()).or_insert((0, m.received_at_ms));
                e.0 += 1;
                e.1 = e.1.min(m.received_at_ms);
            }
        }
        out
    }
}
