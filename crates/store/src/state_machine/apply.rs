//! Applying committed entries: in pieces bounded in bytes, each on a blocking thread, the
//! queue state changed under the write lock and the piece's write batch written after it is
//! released.

use std::sync::Arc;

use bytes::Bytes;
use openraft::EntryPayload;
use openraft::storage::{ApplyResponder, EntryResponder};
use rocksdb::{DB, WriteBatch, WriteOptions};

use mxraft_queue::{BodyError, Change, CommandResult, MessageId, QueueCommand};

use super::persist::{Cfs, persist, read_body};
use super::{AppliedEvent, AppliedState, KEY_APPLIED, KEY_MEMBERSHIP, StateMachineStore};
use crate::types::{Entry, StoredMembership, TypeConfig, io_error};

/// Bytes of entries applied in one write batch at most (a single larger entry is one batch).
pub(super) const APPLY_PIECE_BYTES: usize = 16 * 1024 * 1024;

/// What an entry counts for against [`APPLY_PIECE_BYTES`].
pub(super) fn entry_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(QueueCommand::Enqueue(e)) => e.trace_header.len() + e.body.len() + 512,
        _ => 256,
    }
}

/// Write options of every state-machine write: no RocksDB WAL. The Raft log is this
/// database's write-ahead log: what a crash takes from the memtables is applied again from it,
/// and the log is purged only below a snapshot, whose checkpoint flushed the memtables. This
/// spares each body one full write and checksum. The column families flush together
/// (`atomic_flush`), so what survives a crash is the state after one batch, never a mix.
fn unlogged() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.disable_wal(true);
    w
}

/// The proposer's answer for each applied entry that has one.
type Replies = Vec<(ApplyResponder<TypeConfig>, CommandResult)>;

/// One piece being applied: its write batch, and the bodies it inserts (DSNs may need them
/// before they are in RocksDB).
struct Piece<'a> {
    db: &'a DB,
    cfs: Cfs<'a>,
    batch: WriteBatch,
    inserted: Vec<(MessageId, Bytes)>,
    membership_changed: bool,
    /// The events to tell once the batch is written; `None` when nobody listens.
    events: Option<Vec<AppliedEvent>>,
}

impl Piece<'_> {
    /// Applies one entry to `live` and adds what it changed to the batch.
    fn apply_entry(
        &mut self,
        live: &mut AppliedState,
        entry: Entry,
    ) -> std::io::Result<CommandResult> {
        let log_id = entry.log_id;
        let result = match entry.payload {
            EntryPayload::Blank => CommandResult::Nothing,
            EntryPayload::Membership(m) => {
                live.membership = StoredMembership::new(Some(log_id), m);
                self.membership_changed = true;
                CommandResult::Nothing
            }
            EntryPayload::Normal(cmd) => {
                // DSNs return (part of) the original message: read it from this piece or from
                // the database. A failed read fails the apply: the node stops rather than
                // render a DSN the others do not.
                let applied = {
                    let inserted = &self.inserted;
                    let db = self.db;
                    let lookup = |id: MessageId| -> Result<Option<Bytes>, BodyError> {
                        if let Some((_, b)) = inserted.iter().find(|(i, _)| *i == id) {
                            return Ok(Some(Bytes::clone(b)));
                        }
                        read_body(db, id).map_err(|e| BodyError {
                            id,
                            reason: e.to_string(),
                        })
                    };
                    live.state
                        .apply(log_id.index, cmd, &lookup)
                        .map_err(io_error)?
                };
                if let Some(events) = &mut self.events {
                    events.extend(applied.events.into_iter().map(|event| AppliedEvent {
                        index: log_id.index,
                        event,
                    }));
                }
                for change in applied.changes {
                    let inserted = match &change {
                        Change::Inserted { id, .. } => Some(*id),
                        _ => None,
                    };
                    let stored = persist(&live.state, &self.cfs, &mut self.batch, change);
                    if let (Some(id), Some(stored)) = (inserted, stored) {
                        self.inserted.push((id, stored));
                    }
                }
                applied.result
            }
        };
        live.last_applied = Some(log_id);
        Ok(result)
    }

    /// Adds `last_applied` (and the membership, when it changed) to the batch.
    fn finish(&mut self, live: &AppliedState) {
        let meta = self.cfs.meta;
        self.batch
            .put_cf(meta, KEY_APPLIED, mxraft_queue::encode(&live.last_applied));
        if self.membership_changed {
            self.batch
                .put_cf(meta, KEY_MEMBERSHIP, mxraft_queue::encode(&live.membership));
        }
    }
}

impl StateMachineStore {
    /// Applies one piece on a blocking thread, then answers the proposers.
    pub(super) async fn apply_piece(
        &self,
        piece: Vec<EntryResponder<TypeConfig>>,
    ) -> std::io::Result<()> {
        let this = self.clone();
        let replies = tokio::task::spawn_blocking(move || this.apply_blocking(piece))
            .await
            .map_err(io_error)??;
        for (responder, result) in replies {
            responder.send(result);
        }
        Ok(())
    }

    /// Applies a piece of entries: the queue state changes under the write lock, which is then
    /// released; the write batch goes to RocksDB after, so RCPT lookups and the deliverer
    /// never wait for the write. Bodies not yet written are served from `unwritten` meanwhile.
    fn apply_blocking(&self, entries: Vec<EntryResponder<TypeConfig>>) -> std::io::Result<Replies> {
        let mut replies = Vec::with_capacity(entries.len());
        // Room for the bodies up front: a batch that grows copies them each time it doubles.
        let size = entries.iter().map(|(e, _)| entry_bytes(e)).sum::<usize>();
        let (db, batch, inserted, events) = self.write_live(|live| -> std::io::Result<_> {
            let db = live.db.clone();
            let mut piece = Piece {
                db: &db,
                cfs: Cfs::of(&db)?,
                batch: WriteBatch::with_capacity_bytes(size),
                inserted: Vec::new(),
                membership_changed: false,
                events: (self.shared.events.receiver_count() > 0).then(Vec::new),
            };
            for (entry, responder) in entries {
                let result = piece.apply_entry(live, entry)?;
                if let Some(r) = responder {
                    replies.push((r, result));
                }
            }
            piece.finish(live);
            if !piece.inserted.is_empty()
                && let Ok(mut unwritten) = self.shared.unwritten.lock()
            {
                unwritten.extend(piece.inserted.iter().cloned());
            }
            let Piece {
                batch,
                inserted,
                events,
                ..
            } = piece;
            Ok((db.clone(), batch, inserted, events))
        })?;
        let written = db.write_opt(batch, &unlogged()).map_err(io_error);
        if !inserted.is_empty()
            && let Ok(mut unwritten) = self.shared.unwritten.lock()
        {
            for (id, _) in &inserted {
                unwritten.remove(id);
            }
        }
        written?;
        if let Some(events) = events.filter(|e| !e.is_empty()) {
            // Nobody listening any more is not an error.
            let _ = self.shared.events.send(Arc::new(events));
        }
        Ok(replies)
    }
}
