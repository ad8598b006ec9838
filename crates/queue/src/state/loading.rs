//! Rebuilding the state from storage on start (nothing here is a change to write).

use crate::id::MessageId;
use crate::message::{Destination, Message};

use super::QueueState;

impl QueueState {
    /// Adds a message read back from storage (or a new one) to the state and its indexes.
    pub fn insert_loaded(&mut self, message: Message) {
        let id = message.id;
        self.remove(id);
        self.by_time.insert((message.received_at_ms, id));
        self.bytes += message.size();
        if let Some(c) = &message.claim {
            self.claims.entry(c.token).or_default().insert(id);
        }
        self.messages.insert(id, Box::new(message));
        self.reindex(id);
    }

    /// Sets a destination read back from storage.
    pub fn set_destination_loaded(&mut self, name: String, destination: Destination) {
        self.destinations.insert(name, destination);
    }

    /// Marks a destination as suspended since `at_ms`, as read back from storage.
    pub fn set_suspended_loaded(&mut self, name: String, at_ms: u64) {
        self.suspended.insert(name, at_ms);
    }

    /// Marks a node as stopping since `at_ms`, as read back from storage.
    pub fn set_stopping_loaded(&mut self, node: u64, at_ms: u64) {
        self.stopping.insert(node, at_ms);
    }

    /// Adds a recipient-table entry read back from storage.
    pub fn insert_recipient_loaded(&mut self, entry: String) {
        self.recipients.insert(entry);
    }

    /// Sets a verification result read back from storage.
    pub fn set_verified_loaded(&mut self, address: String, valid: bool, at_ms: u64) {
        self.verified.insert(address, at_ms, valid);
    }

    /// Remembers, as read back from storage, that message `id` left the queue at `at_ms`.
    pub fn set_recent_loaded(&mut self, id: MessageId, at_ms: u64) {
        self.recent.insert(id, at_ms);
    }

    /// Sets a greylisting triplet read back from storage.
    pub fn set_greylist_loaded(&mut self, key: String, at_ms: u64) {
        self.greylist.insert(key, at_ms, ());
    }
}
