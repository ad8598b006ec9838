//! What only an administrator does: actions on many messages at once, and suspending delivery
//! to a destination.

use crate::command::{BulkAction, CommandResult, FlushTarget};
use crate::id::MessageId;

use super::{Change, Effects, QueueState};

impl QueueState {
    pub(super) fn bulk(
        &mut self,
        action: BulkAction,
        ids: &[MessageId],
        at_ms: u64,
        reporting_mta: &str,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        let queued: Vec<MessageId> = ids
            .iter()
            .copied()
            .filter(|id| self.messages.contains_key(id))
            .collect();
        let changed = match action {
            BulkAction::Bounce => self.fail_pending(&queued, at_ms, reporting_mta, effects, |_| {
                "5.0.0 Returned to the sender by the administrator".to_owned()
            }),
            BulkAction::Delete => queued
                .iter()
                .map(|&id| u32::from(self.delete(id, at_ms, effects)))
                .sum(),
            BulkAction::Flush | BulkAction::Hold | BulkAction::Release => queued
                .iter()
                .map(|&id| {
                    let result = match action {
                        BulkAction::Hold => self.hold(id, effects),
                        BulkAction::Release => self.resume(id, at_ms, effects),
                        _ => self.reschedule(FlushTarget::Message(id), at_ms, effects),
                    };
                    match result {
                        CommandResult::Applied { changed } => changed,
                        _ => 0,
                    }
                })
                .sum(),
        };
        CommandResult::Applied { changed }
    }

    pub(super) fn suspend(
        &mut self,
        destination: String,
        suspended: bool,
        at_ms: u64,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        let was = self.suspended.contains_key(&destination);
        if was == suspended {
            return CommandResult::Applied { changed: 0 };
        }
        if suspended {
            self.suspended.insert(destination.clone(), at_ms);
        } else {
            self.suspended.remove(&destination);
        }
        effects
            .changes
            .push(Change::Suspension(destination.clone()));
        if !suspended {
            // Resumed: what waited is due now, as when a primary comes back.
            self.due_now(&destination, at_ms, effects);
        }
        CommandResult::Applied { changed: 1 }
    }
}
