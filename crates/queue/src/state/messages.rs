//! Messages entering and leaving the queue, holds, the schedule, destinations, and the
//! indexes derived from the messages.

use std::collections::{BTreeMap, BTreeSet};

use crate::command::{CommandResult, Enqueue, FlushTarget};
use crate::id::MessageId;
use crate::message::{Destination, Message, Recipient};

use crate::event::{Event, EventKind};

use super::{Change, Effects, QueueState};

impl QueueState {
    pub(super) fn enqueue(&mut self, e: Enqueue, effects: &mut Effects<'_>) -> CommandResult {
        let id = e.id;
        if self.messages.contains_key(&id) || self.recent.contains(id) {
            return CommandResult::Enqueued {
                id,
                duplicate: true,
            };
        }
        let message = Message {
            id,
            received_at_ms: e.received_at_ms,
            received_by: e.received_by,
            sender: e.sender,
            params: e.params,
            recipients: e
                .recipients
                .into_iter()
                .map(|(address, params)| Recipient::pending(address, params, e.received_at_ms))
                .collect(),
            // The trace header is stored in front of the body, not kept in memory.
            trace_header: String::new(),
            body_size: (e.trace_header.len() + e.body.len()) as u64,
            held: false,
            claim: None,
            delay_notified: false,
        };
        let detail = format!(
            "from=<{}> rcpts={} size={}",
            message.sender,
            message.recipients.len(),
            message.size()
        );
        effects.event(Event {
            node: (message.received_by != 0).then_some(message.received_by),
            ..Event::message(EventKind::Queued, id, detail)
        });
        self.insert_loaded(message);
        effects.changes.push(Change::Inserted {
            id,
            trace_header: e.trace_header,
            body: e.body,
        });
        CommandResult::Enqueued {
            id,
            duplicate: false,
        }
    }

    pub(super) fn reschedule(
        &mut self,
        target: FlushTarget,
        at_ms: u64,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        let ids: Vec<MessageId> = match &target {
            FlushTarget::All => self.messages.keys().copied().collect(),
            FlushTarget::Message(id) => vec![*id],
            FlushTarget::Destination(d) => self
                .due
                .get(d)
                .map(|set| set.iter().map(|(_, id)| *id).collect())
                .unwrap_or_default(),
        };
        let mut destinations = BTreeSet::new();
        let changed = self.update_each(&ids, effects, |m, _| {
            let mut touched = false;
            for r in m.recipients.iter_mut().filter(|r| r.is_pending()) {
                let d = r.destination();
                if let FlushTarget::Destination(want) = &target
                    && &d != want
                {
                    continue;
                }
                r.next_attempt_ms = r.next_attempt_ms.min(at_ms);
                destinations.insert(d);
                touched = true;
            }
            touched
        });
        if let FlushTarget::Destination(d) = &target {
            destinations.insert(d.clone());
        }
        // A flush means "try now": a destination believed down is tried again.
        for d in destinations {
            if self.destinations.get(&d).is_some_and(|s| !s.up) {
                self.set_destination(d, true, at_ms, false, None, effects);
            }
        }
        CommandResult::Applied { changed }
    }

    pub(super) fn set_destination(
        &mut self,
        destination: String,
        up: bool,
        at_ms: u64,
        probed: bool,
        error: Option<String>,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        let was_up = self.destination_up(&destination);
        let entry = self
            .destinations
            .entry(destination.clone())
            .or_insert(Destination {
                up,
                since_ms: at_ms,
                last_probe_ms: None,
                last_error: None,
            });
        if entry.up != up {
            entry.since_ms = at_ms;
        }
        entry.up = up;
        if probed {
            entry.last_probe_ms = Some(at_ms);
        }
        if error.is_some() {
            entry.last_error = error;
        }
        effects
            .changes
            .push(Change::Destination(destination.clone()));
        let mut changed = 0;
        if up && !was_up {
            // The primary is back: everything waiting for it is due now.
            changed = self.due_now(&destination, at_ms, effects);
        }
        CommandResult::Applied { changed }
    }

    /// Makes every pending recipient in `destination` due at `at_ms`; returns how many
    /// messages changed.
    pub(super) fn due_now(
        &mut self,
        destination: &str,
        at_ms: u64,
        effects: &mut Effects<'_>,
    ) -> u32 {
        let ids: Vec<MessageId> = self
            .due
            .get(destination)
            .map(|set| set.iter().map(|(_, id)| *id).collect())
            .unwrap_or_default();
        self.update_each(&ids, effects, |m, _| {
            let mut touched = false;
            for r in m.recipients.iter_mut() {
                if r.is_pending() && r.destination() == destination && r.next_attempt_ms > at_ms {
                    r.next_attempt_ms = at_ms;
                    touched = true;
                }
            }
            touched
        })
    }

    /// Runs `f` on each existing message of `ids`; messages for which it returns true are
    /// re-indexed and written back. Returns how many changed.
    pub(super) fn update_each(
        &mut self,
        ids: &[MessageId],
        effects: &mut Effects<'_>,
        mut f: impl FnMut(&mut Message, &Effects<'_>) -> bool,
    ) -> u32 {
        let mut changed = 0;
        for &id in ids {
            let Some(m) = self.messages.get_mut(&id) else {
                continue;
            };
            let claim_before = m.claim.as_ref().map(|c| c.token);
            if f(m, effects) {
                let claim_after = m.claim.as_ref().map(|c| c.token);
                if claim_before != claim_after
                    && let Some(t) = claim_before
                {
                    self.unlink_claim(t, id);
                }
                self.reindex(id);
                effects.updated(id);
                changed += 1;
            }
        }
        changed
    }

    pub(super) fn unindex(&mut self, id: MessageId) {
        if let Some(entries) = self.due_entries.remove(&id) {
            for (dest, due) in entries {
                if let Some(set) = self.due.get_mut(&dest) {
                    set.remove(&(due, id));
                    if set.is_empty() {
                        self.due.remove(&dest);
                    }
                }
            }
        }
    }

    pub(super) fn reindex(&mut self, id: MessageId) {
        self.unindex(id);
        let Some(m) = self.messages.get(&id) else {
            return;
        };
        if m.held {
            return;
        }
        let mut per_dest: BTreeMap<String, u64> = BTreeMap::new();
        for r in m.recipients.iter().filter(|r| r.is_pending()) {
            let due = per_dest.entry(r.destination()).or_insert(u64::MAX);
            *due = (*due).min(r.next_attempt_ms);
        }
        let entries: Vec<(String, u64)> = per_dest.into_iter().collect();
        for (dest, due) in &entries {
            self.due.entry(dest.clone()).or_default().insert((*due, id));
        }
        if !entries.is_empty() {
            self.due_entries.insert(id, entries);
        }
    }

    /// Removes a message from the queue for good at `at_ms`, remembering its id for a while.
    /// Removes a message on an administrator's request (no DSN), and tells it.
    pub(super) fn delete(&mut self, id: MessageId, at_ms: u64, effects: &mut Effects<'_>) -> bool {
        let existed = self.retire(id, at_ms, effects);
        if existed {
            effects.event(Event::message(EventKind::Deleted, id, ""));
        }
        existed
    }

    pub(super) fn retire(&mut self, id: MessageId, at_ms: u64, effects: &mut Effects<'_>) -> bool {
        if !self.remove(id) {
            return false;
        }
        effects.changes.push(Change::Removed(id));
        effects.changes.push(Change::RecentId(id));
        for old in self.recent.insert(id, at_ms) {
            effects.changes.push(Change::RecentId(old));
        }
        true
    }

    pub(super) fn remove(&mut self, id: MessageId) -> bool {
        self.unindex(id);
        match self.messages.remove(&id) {
            Some(m) => {
                self.by_time.remove(&(m.received_at_ms, id));
                self.bytes -= m.size();
                if let Some(c) = m.claim {
                    self.unlink_claim(c.token, id);
                }
                true
            }
            None => false,
        }
    }

    /// Holds a message: no delivery until it is resumed.
    pub(super) fn hold(&mut self, id: MessageId, effects: &mut Effects<'_>) -> CommandResult {
        let changed =
            self.update_each(&[id], effects, |m, _| !std::mem::replace(&mut m.held, true));
        if changed > 0 {
            effects.event(Event::message(EventKind::Held, id, ""));
        }
        CommandResult::Applied { changed }
    }

    /// Resumes a held message, due at once.
    pub(super) fn resume(
        &mut self,
        id: MessageId,
        at_ms: u64,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        let changed = self.update_each(&[id], effects, |m, _| {
            // A message that is not held is left exactly as it is: what `update_each` is told
            // did not change is neither re-indexed nor written.
            if !m.held {
                return false;
            }
            m.held = false;
            for r in m.recipients.iter_mut().filter(|r| r.is_pending()) {
                r.next_attempt_ms = at_ms;
            }
            true
        });
        if changed > 0 {
            effects.event(Event::message(EventKind::Released, id, ""));
        }
        CommandResult::Applied { changed }
    }
}
