//! The queue state and the one function that changes it.
//!
//! [`QueueState::apply`] takes the log index and a [`QueueCommand`] and returns an [`Outcome`]:
//! the [`CommandResult`] for the proposer and the [`Change`]s the storage layer must write in
//! the same batch as the new `last_applied`. The state itself is the in-memory index of every
//! queued message; storage rebuilds it with [`QueueState::insert_loaded`] on start.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::command::{CommandResult, Enqueue, QueueCommand};
use crate::id::MessageId;
use crate::message::{Message, Recipient};

/// A storage write that applying a command requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new message: store its metadata (read it with [`QueueState::get`]) and this body.
    Inserted {
        /// The new message.
        id: MessageId,
        /// Its body.
        body: Bytes,
    },
    /// The metadata of an existing message changed; store it again.
    Updated(MessageId),
    /// The message and its body are gone.
    Removed(MessageId),
}

/// The result of applying one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What the proposer is told.
    pub result: CommandResult,
    /// What storage must write, in order.
    pub changes: Vec<Change>,
}

/// Totals over the whole queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Number of queued messages.
    pub messages: u64,
    /// Sum of the message sizes (trace header plus body).
    pub bytes: u64,
    /// Receive time of the oldest queued message, in milliseconds since the Unix epoch.
    pub oldest_received_at_ms: Option<u64>,
}

/// Every queued message, indexed by id and by receive time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueState {
    messages: BTreeMap<MessageId, Message>,
    by_time: BTreeSet<(u64, MessageId)>,
    bytes: u64,
}

impl QueueState {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the command at log index `index`.
    ///
    /// `index` is unused by today's commands; delivery claims will use it as their fencing token.
    pub fn apply(&mut self, index: u64, cmd: QueueCommand) -> Outcome {
        let _ = index;
        match cmd {
            QueueCommand::Enqueue(enqueue) => self.enqueue(enqueue),
            QueueCommand::Delete { id, at_ms: _ } => self.delete(id),
        }
    }

    fn enqueue(&mut self, e: Enqueue) -> Outcome {
        let id = e.id;
        if self.messages.contains_key(&id) {
            return Outcome {
                result: CommandResult::Enqueued {
                    id,
                    duplicate: true,
                },
                changes: vec![],
            };
        }
        let message = Message {
            id,
            received_at_ms: e.received_at_ms,
            received_by: e.received_by,
            sender: e.sender,
            params: e.params,
            recipients: e.recipients.into_iter().map(Recipient::pending).collect(),
            trace_header: e.trace_header,
            body_size: e.body.len() as u64,
        };
        self.insert_loaded(message);
        Outcome {
            result: CommandResult::Enqueued {
                id,
                duplicate: false,
            },
            changes: vec![Change::Inserted { id, body: e.body }],
        }
    }

    fn delete(&mut self, id: MessageId) -> Outcome {
        let existed = self.remove(id);
        Outcome {
            result: CommandResult::Deleted { id, existed },
            changes: if existed {
                vec![Change::Removed(id)]
            } else {
                vec![]
            },
        }
    }

    fn remove(&mut self, id: MessageId) -> bool {
        match self.messages.remove(&id) {
            Some(m) => {
                self.by_time.remove(&(m.received_at_ms, id));
                self.bytes -= m.size();
                true
            }
            None => false,
        }
    }

    /// Adds a message read back from storage (or a new one) to the indexes.
    pub fn insert_loaded(&mut self, message: Message) {
        self.remove(message.id);
        self.by_time.insert((message.received_at_ms, message.id));
        self.bytes += message.size();
        self.messages.insert(message.id, message);
    }

    /// The metadata of one message.
    pub fn get(&self, id: MessageId) -> Option<&Message> {
        self.messages.get(&id)
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
            .map(|(_, m)| m)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MailParams, RecipientState};

    fn enqueue(id: MessageId, at: u64, rcpts: &[&str], body: &'static [u8]) -> Enqueue {
        Enqueue {
            id,
            received_at_ms: at,
            received_by: 2,
            sender: "alice@sender.example".into(),
            params: MailParams::default(),
            recipients: rcpts.iter().map(|r| r.to_string()).collect(),
            trace_header: "Received: test\r\n".into(),
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn enqueue_inserts_message_with_pending_recipients() {
        let mut state = QueueState::new();
        let id = MessageId::new(1000, 2, 1);
        let out = state.apply(
            7,
            QueueCommand::Enqueue(enqueue(id, 1000, &["a@x.test", "b@x.test"], b"hello\r\n")),
        );
        assert_eq!(
            out,
            Outcome {
                result: CommandResult::Enqueued {
                    id,
                    duplicate: false
                },
                changes: vec![Change::Inserted {
                    id,
                    body: Bytes::from_static(b"hello\r\n")
                }],
            }
        );
        let m = state.get(id).expect("queued");
        assert_eq!(
            m,
            &Message {
                id,
                received_at_ms: 1000,
                received_by: 2,
                sender: "alice@sender.example".into(),
                params: MailParams::default(),
                recipients: vec![
                    Recipient {
                        address: "a@x.test".into(),
                        state: RecipientState::Pending
                    },
                    Recipient {
                        address: "b@x.test".into(),
                        state: RecipientState::Pending
                    },
                ],
                trace_header: "Received: test\r\n".into(),
                body_size: 7,
            }
        );
        assert_eq!(
            state.stats(),
            QueueStats {
                messages: 1,
                bytes: 16 + 7,
                oldest_received_at_ms: Some(1000)
            }
        );
    }

    #[test]
    fn enqueue_is_idempotent_by_id() {
        let mut state = QueueState::new();
        let id = MessageId::new(1000, 2, 1);
        state.apply(
            1,
            QueueCommand::Enqueue(enqueue(id, 1000, &["a@x.test"], b"one\r\n")),
        );
        let before = state.clone();
        // A retried proposal with the same id, even with other content, changes nothing.
        let out = state.apply(
            2,
            QueueCommand::Enqueue(enqueue(id, 2000, &["z@x.test"], b"two\r\n")),
        );
        assert_eq!(
            out,
            Outcome {
                result: CommandResult::Enqueued {
                    id,
                    duplicate: true
                },
                changes: vec![],
            }
        );
        assert_eq!(state, before);
    }

    #[test]
    fn delete_removes_message_and_updates_stats() {
        let mut state = QueueState::new();
        let old = MessageId::new(1000, 1, 1);
        let new = MessageId::new(2000, 1, 2);
        state.apply(
            1,
            QueueCommand::Enqueue(enqueue(old, 1000, &["a@x.test"], b"1234\r\n")),
        );
        state.apply(
            2,
            QueueCommand::Enqueue(enqueue(new, 2000, &["a@x.test"], b"12\r\n")),
        );

        let out = state.apply(
            3,
            QueueCommand::Delete {
                id: old,
                at_ms: 3000,
            },
        );
        assert_eq!(
            out,
            Outcome {
                result: CommandResult::Deleted {
                    id: old,
                    existed: true
                },
                changes: vec![Change::Removed(old)],
            }
        );
        assert_eq!(state.get(old), None);
        assert_eq!(
            state.stats(),
            QueueStats {
                messages: 1,
                bytes: 16 + 4,
                oldest_received_at_ms: Some(2000)
            }
        );
    }

    #[test]
    fn delete_of_unknown_id_changes_nothing() {
        let mut state = QueueState::new();
        let id = MessageId::new(1, 1, 1);
        let out = state.apply(1, QueueCommand::Delete { id, at_ms: 5 });
        assert_eq!(
            out,
            Outcome {
                result: CommandResult::Deleted { id, existed: false },
                changes: vec![],
            }
        );
        assert_eq!(state, QueueState::new());
        assert_eq!(state.stats(), QueueStats::default());
    }

    #[test]
    fn iteration_is_in_id_order_and_resumes_after_a_given_id() {
        let mut state = QueueState::new();
        let ids: Vec<MessageId> = (0..5).map(|i| MessageId::new(100 + i, 1, i)).collect();
        for id in ids.iter().rev() {
            state.apply(
                1,
                QueueCommand::Enqueue(enqueue(*id, id.millis(), &["a@x.test"], b"x\r\n")),
            );
        }
        let all: Vec<MessageId> = state.iter_from(None).map(|m| m.id).collect();
        assert_eq!(all, ids);
        let rest: Vec<MessageId> = state.iter_from(Some(ids[1])).map(|m| m.id).collect();
        assert_eq!(rest, ids[2..]);
    }
}
