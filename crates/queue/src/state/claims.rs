//! Delivery claims: granted by the leader under a fencing token (the log index), renewed,
//! released; which messages a delivery may claim; and the nodes that, stopping, take none.

use crate::command::CommandResult;
use crate::event::{Event, EventKind};
use crate::id::MessageId;
use crate::message::Claim;

use super::{Change, ClaimView, Effects, QueueState};

impl QueueState {
    pub(super) fn claim(
        &mut self,
        ids: Vec<MessageId>,
        node: u64,
        destination: String,
        at_ms: u64,
        lease_ms: u64,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        let token = effects.index;
        let mut granted = Vec::new();
        for id in ids {
            let Some(m) = self.messages.get_mut(&id) else {
                continue;
            };
            let eligible = !m.held
                && m.live_claim(at_ms).is_none()
                && m.recipients
                    .iter()
                    .any(|r| r.is_pending() && r.destination() == destination);
            if !eligible {
                continue;
            }
            let old = m.claim.replace(Claim {
                node,
                token,
                destination: destination.clone(),
                lease_until_ms: at_ms.saturating_add(lease_ms),
            });
            if let Some(old) = old {
                self.unlink_claim(old.token, id);
            }
            self.claims.entry(token).or_default().insert(id);
            effects.updated(id);
            effects.event(Event {
                node: Some(node),
                destination: Some(destination.clone()),
                ..Event::message(EventKind::Claimed, id, format!("token={token}"))
            });
            granted.push(id);
        }
        CommandResult::Claimed { token, granted }
    }

    pub(super) fn unlink_claim(&mut self, token: u64, id: MessageId) {
        if let Some(set) = self.claims.get_mut(&token) {
            set.remove(&id);
            if set.is_empty() {
                self.claims.remove(&token);
            }
        }
    }

    /// Open claims (live or expired but not yet replaced).
    pub fn claims(&self) -> Vec<ClaimView> {
        self.claims
            .iter()
            .filter_map(|(token, ids)| {
                let first = self.messages.get(ids.first()?)?.claim.as_ref()?;
                let lease_until_ms = ids
                    .iter()
                    .filter_map(|id| {
                        self.messages
                            .get(id)?
                            .claim
                            .as_ref()
                            .map(|c| c.lease_until_ms)
                    })
                    .min()
                    .unwrap_or(first.lease_until_ms);
                Some(ClaimView {
                    token: *token,
                    node: first.node,
                    destination: first.destination.clone(),
                    lease_until_ms,
                    ids: ids.iter().copied().collect(),
                })
            })
            .collect()
    }

    /// Claims whose lease is still running at `now_ms` for `destination`.
    pub fn live_claims_for(&self, destination: &str, now_ms: u64) -> usize {
        self.claims()
            .iter()
            .filter(|c| c.destination == destination && c.lease_until_ms > now_ms)
            .count()
    }

    /// Like [`QueueState::due_messages`], but a claim counts as live until `lease_grace_ms`
    /// after its lease ended: the leader leaves that much room for clocks that differ.
    pub fn claimable_messages(
        &self,
        destination: &str,
        now_ms: u64,
        lease_grace_ms: u64,
        limit: usize,
    ) -> Vec<MessageId> {
        let Some(set) = self.due.get(destination) else {
            return Vec::new();
        };
        let lease_horizon = now_ms.saturating_sub(lease_grace_ms);
        set.iter()
            .take_while(|(due, _)| *due <= now_ms)
            .filter(|(_, id)| {
                self.messages
                    .get(id)
                    .is_some_and(|m| m.live_claim(lease_horizon).is_none())
            })
            .map(|(_, id)| *id)
            .take(limit)
            .collect()
    }

    /// Up to `limit` messages with recipients for `destination` due at `now_ms`, not held and
    /// not under a live claim, most overdue first.
    pub fn due_messages(&self, destination: &str, now_ms: u64, limit: usize) -> Vec<MessageId> {
        self.claimable_messages(destination, now_ms, 0, limit)
    }

    /// The earliest due time of a pending recipient in `destination`, if any.
    pub fn next_due(&self, destination: &str) -> Option<u64> {
        self.due.get(destination)?.first().map(|(due, _)| *due)
    }

    /// Destinations with pending recipients (held messages aside).
    pub fn due_destinations(&self) -> impl Iterator<Item = &String> {
        self.due.keys()
    }

    /// Extends the leases of the messages of `ids` still under claim `token` to `until`.
    pub(super) fn renew(
        &mut self,
        token: u64,
        ids: &[MessageId],
        until: u64,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        let mut held = Vec::new();
        self.update_each(ids, effects, |m, _| match &mut m.claim {
            Some(c) if c.token == token => {
                held.push(m.id);
                // Never shortened: a renewal stamped by a leader whose clock is behind the
                // granting one's must not end a lease early.
                let longer = until > c.lease_until_ms;
                c.lease_until_ms = c.lease_until_ms.max(until);
                longer
            }
            _ => false,
        });
        CommandResult::Renewed { token, held }
    }

    /// Ends claim `token` on the messages of `ids` (a delivery that stopped early).
    pub(super) fn release(
        &mut self,
        token: u64,
        ids: &[MessageId],
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        let changed = self.update_each(ids, effects, |m, _| {
            if m.claim.as_ref().is_some_and(|c| c.token == token) {
                m.claim = None;
                true
            } else {
                false
            }
        });
        CommandResult::Applied { changed }
    }

    pub(super) fn node_stopping(
        &mut self,
        node: u64,
        stopping: bool,
        at_ms: u64,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        if self.stopping.contains_key(&node) == stopping {
            return CommandResult::Applied { changed: 0 };
        }
        if stopping {
            self.stopping.insert(node, at_ms);
        } else {
            self.stopping.remove(&node);
        }
        effects.changes.push(Change::NodeStopping(node));
        CommandResult::Applied { changed: 1 }
    }
}
