//! The queue state machine on RocksDB.
//!
//! Every node keeps the metadata of every queued message in memory ([`QueueState`]) and on disk
//! (CF `messages`); bodies live only on disk (CF `bodies`, with RocksDB blob files so large
//! values stay out of compaction). One applied batch of log entries becomes one RocksDB write
//! batch holding the changes and the new `last_applied`, so what is on disk is always the state
//! after some log index, never half of an entry.
//!
//! Applying runs on a blocking thread: the queue state changes under the state lock, and the
//! batch is written after the lock is released, so readers (RCPT lookups, the deliverer) never
//! wait for RocksDB. Committed entries arrive in pieces bounded in bytes
//! ([`crate::LogStore`] streams them), so a follower catching up never loads the whole range.
//!
//! The write is not fsynced: after a crash the state machine may restart at an earlier
//! `last_applied`, and openraft applies the remaining committed entries again from the log.
//! Snapshots flush the memtables (a checkpoint does), so the log is only purged below state
//! that is durable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use bytes::Bytes;
use futures::TryStreamExt;
use openraft::alias::SnapshotOf;
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch};
use tracing::{info, warn};

use mxraft_queue::codec::FORMAT_VERSION;
use mxraft_queue::{
    BodyError, Change, CommandResult, Destination, Message, MessageId, QueueCommand, QueueState,
};

use crate::snapshot::{self, DB_DIR, SnapshotData, SnapshotReceiver};
use crate::types::{LogId, SnapshotMeta, StoredMembership, TypeConfig, io_error};
use crate::{OpenError, fsutil};

const CF_META: &str = "meta";
const CF_MESSAGES: &str = "messages";
const CF_BODIES: &str = "bodies";
const CF_DESTINATIONS: &str = "destinations";
const CF_RECIPIENTS: &str = "recipients";
const CF_VERIFIED: &str = "verified";
const CF_GREYLIST: &str = "greylist";
const CF_RECENT: &str = "recent";
const KEY_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const CURRENT_FILE: &str = "CURRENT";

/// The replicated queue of one node. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

struct Shared {
    sm_dir: PathBuf,
    snapshots_dir: PathBuf,
    live: RwLock<Live>,
    current_snapshot: Mutex<Option<(SnapshotMeta, SnapshotData)>>,
    /// Databases replaced by a snapshot install, removed once nobody reads them any more.
    retired: Mutex<Vec<(Arc<DB>, PathBuf)>>,
    seq: AtomicU64,
    /// Bodies of the piece being applied, from when the state shows them until the write
    /// batch holding them is in RocksDB.
    unwritten: Mutex<std::collections::HashMap<MessageId, Bytes>>,
}

/// The state the node serves from.
pub struct Live {
    db: Arc<DB>,
    generation: u64,
    state: QueueState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl Live {
    /// The queue.
    pub fn queue(&self) -> &QueueState {
        &self.state
    }

    /// The index of the last applied log entry (0 when none).
    pub fn applied_index(&self) -> u64 {
        self.last_applied.as_ref().map(|l| l.index).unwrap_or(0)
    }
}

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_max_background_jobs(2);
    o.set_max_total_wal_size(256 * 1024 * 1024);
    o.set_db_write_buffer_size(crate::log_store::MEMTABLE_BUDGET);
    o
}

fn column_families() -> Vec<ColumnFamilyDescriptor> {
    let mut bodies = Options::default();
    bodies.set_compression_type(rocksdb::DBCompressionType::None);
    bodies.set_enable_blob_files(true);
    bodies.set_min_blob_size(4096);
    bodies.set_blob_compression_type(rocksdb::DBCompressionType::Lz4);
    bodies.set_enable_blob_gc(true);
    bodies.set_write_buffer_size(crate::log_store::MEMTABLE_BUDGET / 2);
    let mut messages = Options::default();
    messages.set_compression_type(rocksdb::DBCompressionType::Lz4);
    vec![
        ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ColumnFamilyDescriptor::new(CF_MESSAGES, messages),
        ColumnFamilyDescriptor::new(CF_BODIES, bodies),
        ColumnFamilyDescriptor::new(CF_DESTINATIONS, Options::default()),
        ColumnFamilyDescriptor::new(CF_RECIPIENTS, Options::default()),
        ColumnFamilyDescriptor::new(CF_VERIFIED, Options::default()),
        ColumnFamilyDescriptor::new(CF_GREYLIST, Options::default()),
        ColumnFamilyDescriptor::new(CF_RECENT, Options::default()),
    ]
}

fn cf<'a>(db: &'a DB, name: &str) -> std::io::Result<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| io_error(format!("column family {name} missing")))
}

fn gen_dir(sm_dir: &Path, generation: u64) -> PathBuf {
    sm_dir.join(format!("gen-{generation}"))
}

/// Opens a state-machine database and loads its queue into memory.
fn open_live(path: &Path, generation: u64) -> Result<Live, OpenError> {
    let rocks = |source| OpenError::Rocks {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |source| OpenError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let db = DB::open_cf_descriptors(&db_options(), path, column_families()).map_err(rocks)?;
    let (last_applied, membership) = {
        let meta = db
            .cf_handle(CF_META)
            .ok_or_else(|| fsutil::io_err("missing column family in", path, io_error(CF_META)))?;
        let last_applied = match db.get_pinned_cf(meta, KEY_APPLIED).map_err(rocks)? {
            Some(b) => mxraft_queue::decode::<Option<LogId>>(&b).map_err(corrupt)?,
            None => None,
        };
        let membership = match db.get_pinned_cf(meta, KEY_MEMBERSHIP).map_err(rocks)? {
            Some(b) => mxraft_queue::decode::<StoredMembership>(&b).map_err(corrupt)?,
            None => StoredMembership::default(),
        };
        (last_applied, membership)
    };
    let mut state = QueueState::new();
    {
        let messages = db.cf_handle(CF_MESSAGES).ok_or_else(|| {
            fsutil::io_err("missing column family in", path, io_error(CF_MESSAGES))
        })?;
        for item in db.iterator_cf(messages, IteratorMode::Start) {
            let (_k, v) = item.map_err(rocks)?;
            state.insert_loaded(mxraft_queue::decode::<Message>(&v).map_err(corrupt)?);
        }
        let destinations = db.cf_handle(CF_DESTINATIONS).ok_or_else(|| {
            fsutil::io_err("missing column family in", path, io_error(CF_DESTINATIONS))
        })?;
        for item in db.iterator_cf(destinations, IteratorMode::Start) {
            let (k, v) = item.map_err(rocks)?;
            let name = String::from_utf8_lossy(&k).into_owned();
            state.set_destination_loaded(
                name,
                mxraft_queue::decode::<Destination>(&v).map_err(corrupt)?,
            );
        }
        let recipients = db.cf_handle(CF_RECIPIENTS).ok_or_else(|| {
            fsutil::io_err("missing column family in", path, io_error(CF_RECIPIENTS))
        })?;
        for item in db.iterator_cf(recipients, IteratorMode::Start) {
            let (k, _v) = item.map_err(rocks)?;
            state.insert_recipient_loaded(String::from_utf8_lossy(&k).into_owned());
        }
        let verified = db.cf_handle(CF_VERIFIED).ok_or_else(|| {
            fsutil::io_err("missing column family in", path, io_error(CF_VERIFIED))
        })?;
        for item in db.iterator_cf(verified, IteratorMode::Start) {
            let (k, v) = item.map_err(rocks)?;
            let (valid, at_ms) = mxraft_queue::decode::<(bool, u64)>(&v).map_err(corrupt)?;
            state.set_verified_loaded(String::from_utf8_lossy(&k).into_owned(), valid, at_ms);
        }
        let greylist = db.cf_handle(CF_GREYLIST).ok_or_else(|| {
            fsutil::io_err("missing column family in", path, io_error(CF_GREYLIST))
        })?;
        for item in db.iterator_cf(greylist, IteratorMode::Start) {
            let (k, v) = item.map_err(rocks)?;
            let at_ms = mxraft_queue::decode::<u64>(&v).map_err(corrupt)?;
            state.set_greylist_loaded(String::from_utf8_lossy(&k).into_owned(), at_ms);
        }
        let recent = db
            .cf_handle(CF_RECENT)
            .ok_or_else(|| fsutil::io_err("missing column family in", path, io_error(CF_RECENT)))?;
        for item in db.iterator_cf(recent, IteratorMode::Start) {
            let (k, v) = item.map_err(rocks)?;
            let at_ms = mxraft_queue::decode::<u64>(&v).map_err(corrupt)?;
            let id = MessageId::from_key(&k)
                .ok_or_else(|| fsutil::io_err("invalid key in", path, io_error(CF_RECENT)))?;
            state.set_recent_loaded(id, at_ms);
        }
    }
    Ok(Live {
        db: Arc::new(db),
        generation,
        state,
        last_applied,
        membership,
    })
}

/// Reads the metadata a checkpoint holds, by opening it read-only.
fn checkpoint_meta(db_path: &Path) -> std::io::Result<SnapshotMeta> {
    let db = DB::open_cf_for_read_only(
        &Options::default(),
        db_path,
        [
            CF_META,
            CF_MESSAGES,
            CF_BODIES,
            CF_DESTINATIONS,
            CF_RECIPIENTS,
            CF_VERIFIED,
            CF_GREYLIST,
            CF_RECENT,
        ],
        false,
    )
    .map_err(io_error)?;
    let meta = cf(&db, CF_META)?;
    let last_log_id = match db.get_pinned_cf(meta, KEY_APPLIED).map_err(io_error)? {
        Some(b) => mxraft_queue::decode::<Option<LogId>>(&b).map_err(io_error)?,
        None => None,
    };
    let last_membership = match db.get_pinned_cf(meta, KEY_MEMBERSHIP).map_err(io_error)? {
        Some(b) => mxraft_queue::decode::<StoredMembership>(&b).map_err(io_error)?,
        None => StoredMembership::default(),
    };
    Ok(SnapshotMeta {
        last_log_id,
        last_membership,
    })
}

fn snapshot_index(meta: &SnapshotMeta) -> u64 {
    meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0)
}

impl StateMachineStore {
    /// Opens the state machine under `data_dir` (`sm/` and `snapshots/`), creating it if needed.
    pub fn open(data_dir: &Path) -> Result<StateMachineStore, OpenError> {
        let sm_dir = data_dir.join("sm");
        let snapshots_dir = data_dir.join("snapshots");
        fsutil::create_dir_all(&sm_dir)?;
        fsutil::create_dir_all(&snapshots_dir)?;

        let current_path = sm_dir.join(CURRENT_FILE);
        let generation = match std::fs::read_to_string(&current_path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|e| fsutil::io_err("invalid generation in", &current_path, io_error(e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fsutil::write_file_atomic(&current_path, b"0\n")
                    .map_err(|e| fsutil::io_err("cannot write", &current_path, e))?;
                0
            }
            Err(e) => return Err(fsutil::io_err("cannot read", &current_path, e)),
        };
        // Generations other than the live one are left over from an interrupted install.
        for entry in
            std::fs::read_dir(&sm_dir).map_err(|e| fsutil::io_err("cannot list", &sm_dir, e))?
        {
            let entry = entry.map_err(|e| fsutil::io_err("cannot list", &sm_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("gen-") && name != format!("gen-{generation}") {
                fsutil::remove_dir_if_exists(&entry.path())
                    .map_err(|e| fsutil::io_err("cannot remove", &entry.path(), e))?;
            }
        }
        let live = open_live(&gen_dir(&sm_dir, generation), generation)?;
        let current_snapshot = Self::find_current_snapshot(&snapshots_dir)?;
        info!(
            generation,
            messages = live.state.len(),
            applied = live.applied_index(),
            snapshot = current_snapshot.as_ref().map(|(m, _)| snapshot_index(m)),
            "state machine opened"
        );
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                sm_dir,
                snapshots_dir,
                live: RwLock::new(live),
                current_snapshot: Mutex::new(current_snapshot),
                retired: Mutex::new(Vec::new()),
                seq: AtomicU64::new(0),
                unwritten: Mutex::new(std::collections::HashMap::new()),
            }),
        })
    }

    /// Keeps the newest complete snapshot and removes everything else in `snapshots/`.
    fn find_current_snapshot(
        dir: &Path,
    ) -> Result<Option<(SnapshotMeta, SnapshotData)>, OpenError> {
        let mut best: Option<(SnapshotMeta, PathBuf)> = None;
        let mut stale = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| fsutil::io_err("cannot list", dir, e))? {
            let entry = entry.map_err(|e| fsutil::io_err("cannot list", dir, e))?;
            let path = entry.path();
            let complete = entry.file_name().to_string_lossy().starts_with("snap-");
            match snapshot::read_meta(&path) {
                Ok(meta) if complete => {
                    let better = best
                        .as_ref()
                        .is_none_or(|(b, _)| snapshot_index(&meta) > snapshot_index(b));
                    if better {
                        if let Some((_, old)) = best.take() {
                            stale.push(old);
                        }
                        best = Some((meta, path));
                    } else {
                        stale.push(path);
                    }
                }
                _ => stale.push(path),
            }
        }
        for path in stale {
            fsutil::remove_dir_if_exists(&path)
                .map_err(|e| fsutil::io_err("cannot remove", &path, e))?;
        }
        Ok(best.map(|(meta, path)| (meta, SnapshotData::new(path, false))))
    }

    /// Read access to the live state; hold it briefly, it blocks `apply`.
    pub fn read(&self) -> RwLockReadGuard<'_, Live> {
        // A poisoned lock means an apply panicked; the data it guards was not half-written
        // to disk, so serving reads from it is still correct.
        self.shared
            .live
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The body of a queued message (a blocking read: call it off the async threads, or use
    /// [`StateMachineStore::body_async`]).
    pub fn body(&self, id: MessageId) -> std::io::Result<Option<Bytes>> {
        if let Ok(unwritten) = self.shared.unwritten.lock()
            && let Some(body) = unwritten.get(&id)
        {
            return Ok(Some(body.clone()));
        }
        let db = self.read().db.clone();
        Ok(read_body(&db, id)?.map(Bytes::from))
    }

    /// [`StateMachineStore::body`] on a blocking thread.
    pub async fn body_async(&self, id: MessageId) -> std::io::Result<Option<Bytes>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.body(id))
            .await
            .map_err(io_error)?
    }

    /// Starts receiving a snapshot from the leader into a fresh directory.
    pub fn snapshot_receiver(&self) -> std::io::Result<SnapshotReceiver> {
        let n = self.shared.seq.fetch_add(1, Ordering::Relaxed);
        SnapshotReceiver::new(
            self.shared
                .snapshots_dir
                .join(format!("recv-{}-{n}", std::process::id())),
        )
    }

    /// Handles that tell whether the databases are closed, for orderly restarts.
    pub fn closed_watch(&self) -> crate::CloseWatch {
        // The shared state owns the live database and every retired one.
        crate::CloseWatch::new(&self.shared)
    }

    fn write_live<R>(&self, f: impl FnOnce(&mut Live) -> R) -> R {
        let mut live = self
            .shared
            .live
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut live)
    }

    /// Removes databases replaced by an install once their last reader is gone.
    fn reap_retired(&self) {
        let Ok(mut retired) = self.shared.retired.lock() else {
            return;
        };
        retired.retain(|(db, path)| {
            if Arc::strong_count(db) > 1 {
                return true;
            }
            // This is the last handle; the database closes when `retain` drops it.
            let _ = path;
            false
        });
    }

    fn set_current_snapshot(&self, meta: SnapshotMeta, data: SnapshotData) {
        let Ok(mut current) = self.shared.current_snapshot.lock() else {
            return;
        };
        let newer = current
            .as_ref()
            .is_none_or(|(m, _)| snapshot_index(&meta) >= snapshot_index(m));
        if newer {
            if let Some((_, old)) = current.replace((meta, data)) {
                old.retire();
            }
        } else {
            data.retire();
        }
    }

    /// Builds a snapshot: a checkpoint of the live database and the metadata it holds.
    fn build(&self) -> std::io::Result<(SnapshotMeta, SnapshotData)> {
        let db = self.read().db.clone();
        let n = self.shared.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .shared
            .snapshots_dir
            .join(format!("tmp-{}-{n}", std::process::id()));
        fsutil::remove_dir_if_exists(&tmp)?;
        std::fs::create_dir_all(&tmp)?;
        let result = (|| {
            rocksdb::checkpoint::Checkpoint::new(&db)
                .and_then(|c| c.create_checkpoint(tmp.join(DB_DIR)))
                .map_err(io_error)?;
            drop(db);
            let meta = checkpoint_meta(&tmp.join(DB_DIR))?;
            snapshot::write_meta(&tmp, &meta)?;
            fsutil::fsync_dir(&tmp)?;
            let index = snapshot_index(&meta);
            let dir = self
                .shared
                .snapshots_dir
                .join(format!("snap-{index:020}-{n}"));
            std::fs::rename(&tmp, &dir)?;
            fsutil::fsync_dir(&self.shared.snapshots_dir)?;
            Ok((meta, SnapshotData::new(dir, false)))
        })();
        if result.is_err() {
            let _ = fsutil::remove_dir_if_exists(&tmp);
        }
        result
    }

    /// Replaces the live state with the snapshot: copy into a new generation, open it, switch
    /// `sm/CURRENT` atomically, then retire the old generation.
    fn install(&self, meta: &SnapshotMeta, data: &SnapshotData) -> std::io::Result<()> {
        let generation = self.read().generation + 1;
        let target = gen_dir(&self.shared.sm_dir, generation);
        fsutil::remove_dir_if_exists(&target)?;
        fsutil::clone_dir(&data.db_path(), &target)?;
        fsutil::fsync_dir(&self.shared.sm_dir)?;
        let live = open_live(&target, generation).map_err(io_error)?;
        if live.last_applied != meta.last_log_id {
            let _ = fsutil::remove_dir_if_exists(&target);
            return Err(io_error(format!(
                "snapshot data is at {:?} but its metadata says {:?}",
                live.last_applied, meta.last_log_id
            )));
        }
        fsutil::write_file_atomic(
            &self.shared.sm_dir.join(CURRENT_FILE),
            format!("{generation}\n").as_bytes(),
        )?;
        let old = self.write_live(|current| std::mem::replace(current, live));
        let old_dir = gen_dir(&self.shared.sm_dir, old.generation);
        if let Ok(mut retired) = self.shared.retired.lock() {
            retired.push((old.db, old_dir.clone()));
        }
        self.reap_retired();
        // Open handles keep the old files readable; the directory itself goes now, or at the
        // next start if removal fails.
        if let Err(e) = fsutil::remove_dir_if_exists(&old_dir) {
            warn!(path = %old_dir.display(), error = %e, "cannot remove the replaced state machine");
        }

        // The installed snapshot becomes this node's current snapshot.
        let n = self.shared.seq.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .shared
            .snapshots_dir
            .join(format!("snap-{:020}-{n}", snapshot_index(meta)));
        fsutil::clone_dir(data.path(), &dir)?;
        fsutil::fsync_dir(&self.shared.snapshots_dir)?;
        self.set_current_snapshot(meta.clone(), SnapshotData::new(dir, false));
        info!(
            generation,
            index = snapshot_index(meta),
            messages = self.read().state.len(),
            "snapshot installed"
        );
        Ok(())
    }
}

fn read_body(db: &DB, id: MessageId) -> std::io::Result<Option<Vec<u8>>> {
    let bodies = cf(db, CF_BODIES)?;
    match db.get_cf(bodies, id.to_key()).map_err(io_error)? {
        None => Ok(None),
        Some(mut value) => match value.first() {
            Some(&FORMAT_VERSION) => {
                value.remove(0);
                Ok(Some(value))
            }
            other => Err(io_error(format!(
                "body record of unknown version {other:?}"
            ))),
        },
    }
}

fn encode_body(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 1);
    v.push(FORMAT_VERSION);
    v.extend_from_slice(body);
    v
}

/// Bytes of entries applied in one write batch at most (a single larger entry is one batch).
const APPLY_PIECE_BYTES: usize = 16 * 1024 * 1024;

fn entry_bytes(entry: &crate::types::Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(QueueCommand::Enqueue(e)) => e.body.len() + 512,
        _ => 256,
    }
}

impl StateMachineStore {
    async fn apply_piece(&self, piece: Vec<EntryResponder<TypeConfig>>) -> std::io::Result<()> {
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
    #[allow(clippy::type_complexity)]
    fn apply_blocking(
        &self,
        piece: Vec<EntryResponder<TypeConfig>>,
    ) -> std::io::Result<Vec<(openraft::storage::ApplyResponder<TypeConfig>, CommandResult)>> {
        let mut replies = Vec::with_capacity(piece.len());
        let mut inserted = Vec::new();
        let (db, batch) = self.write_live(|live| -> std::io::Result<_> {
            let db = live.db.clone();
            let cfs = Cfs::of(&db)?;
            let mut batch = WriteBatch::default();
            let mut membership_changed = false;
            for (entry, responder) in piece {
                let log_id = entry.log_id;
                let result = match entry.payload {
                    EntryPayload::Blank => CommandResult::Nothing,
                    EntryPayload::Membership(m) => {
                        live.membership = StoredMembership::new(Some(log_id), m);
                        membership_changed = true;
                        CommandResult::Nothing
                    }
                    EntryPayload::Normal(cmd) => {
                        // DSNs return (part of) the original message: read it from this piece
                        // or from the database. A failed read fails the apply: the node stops
                        // rather than render a DSN the others do not.
                        let outcome = {
                            let lookup = |id: MessageId| -> Result<Option<Bytes>, BodyError> {
                                if let Some((_, b)) = inserted.iter().find(|(i, _)| *i == id) {
                                    return Ok(Some(Bytes::clone(b)));
                                }
                                read_body(&db, id).map(|b| b.map(Bytes::from)).map_err(|e| {
                                    BodyError {
                                        id,
                                        reason: e.to_string(),
                                    }
                                })
                            };
                            live.state
                                .apply(log_id.index, cmd, &lookup)
                                .map_err(io_error)?
                        };
                        for change in outcome.changes {
                            if let Change::Inserted { id, body } = &change {
                                inserted.push((*id, body.clone()));
                            }
                            write_change(&live.state, &cfs, &mut batch, change);
                        }
                        outcome.result
                    }
                };
                live.last_applied = Some(log_id);
                if let Some(r) = responder {
                    replies.push((r, result));
                }
            }
            batch.put_cf(
                cfs.meta,
                KEY_APPLIED,
                mxraft_queue::encode(&live.last_applied),
            );
            if membership_changed {
                batch.put_cf(
                    cfs.meta,
                    KEY_MEMBERSHIP,
                    mxraft_queue::encode(&live.membership),
                );
            }
            if !inserted.is_empty()
                && let Ok(mut unwritten) = self.shared.unwritten.lock()
            {
                unwritten.extend(inserted.iter().cloned());
            }
            Ok((db.clone(), batch))
        })?;
        let written = db.write(batch).map_err(io_error);
        if !inserted.is_empty()
            && let Ok(mut unwritten) = self.shared.unwritten.lock()
        {
            for (id, _) in &inserted {
                unwritten.remove(id);
            }
        }
        written?;
        Ok(replies)
    }
}

/// The column families an apply writes to.
struct Cfs<'a> {
    meta: &'a rocksdb::ColumnFamily,
    messages: &'a rocksdb::ColumnFamily,
    bodies: &'a rocksdb::ColumnFamily,
    destinations: &'a rocksdb::ColumnFamily,
    recipients: &'a rocksdb::ColumnFamily,
    verified: &'a rocksdb::ColumnFamily,
    greylist: &'a rocksdb::ColumnFamily,
    recent: &'a rocksdb::ColumnFamily,
}

impl<'a> Cfs<'a> {
    fn of(db: &'a DB) -> std::io::Result<Cfs<'a>> {
        Ok(Cfs {
            meta: cf(db, CF_META)?,
            messages: cf(db, CF_MESSAGES)?,
            bodies: cf(db, CF_BODIES)?,
            destinations: cf(db, CF_DESTINATIONS)?,
            recipients: cf(db, CF_RECIPIENTS)?,
            verified: cf(db, CF_VERIFIED)?,
            greylist: cf(db, CF_GREYLIST)?,
            recent: cf(db, CF_RECENT)?,
        })
    }
}

/// Adds the write one change needs to `batch`, reading the new value from `state`.
fn write_change(state: &QueueState, cfs: &Cfs<'_>, batch: &mut WriteBatch, change: Change) {
    match change {
        Change::Inserted { id, body } => {
            batch.put_cf(cfs.bodies, id.to_key(), encode_body(&body));
            if let Some(m) = state.get(id) {
                batch.put_cf(cfs.messages, id.to_key(), mxraft_queue::encode(m));
            }
        }
        Change::Updated(id) => {
            if let Some(m) = state.get(id) {
                batch.put_cf(cfs.messages, id.to_key(), mxraft_queue::encode(m));
            }
        }
        Change::Removed(id) => {
            batch.delete_cf(cfs.messages, id.to_key());
            batch.delete_cf(cfs.bodies, id.to_key());
        }
        Change::RecipientEntry(entry) => {
            if state.has_recipient_entry(&entry) {
                batch.put_cf(cfs.recipients, entry.as_bytes(), [FORMAT_VERSION]);
            } else {
                batch.delete_cf(cfs.recipients, entry.as_bytes());
            }
        }
        Change::Verified(address) => match state.verified(&address) {
            Some(v) => batch.put_cf(cfs.verified, address.as_bytes(), mxraft_queue::encode(&v)),
            None => batch.delete_cf(cfs.verified, address.as_bytes()),
        },
        Change::Greylist(key) => match state.greylisted(&key) {
            Some(at) => batch.put_cf(cfs.greylist, key.as_bytes(), mxraft_queue::encode(&at)),
            None => batch.delete_cf(cfs.greylist, key.as_bytes()),
        },
        Change::RecentId(id) => match state.recently_removed(id) {
            Some(at) => batch.put_cf(cfs.recent, id.to_key(), mxraft_queue::encode(&at)),
            None => batch.delete_cf(cfs.recent, id.to_key()),
        },
        Change::Destination(name) => {
            if let Some(d) = state.destination(&name) {
                batch.put_cf(cfs.destinations, name.as_bytes(), mxraft_queue::encode(d));
            }
        }
        Change::Evicted { cache, count } => {
            metrics::counter!("mxraft_cache_evictions_total", "cache" => cache)
                .increment(u64::from(count));
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), std::io::Error> {
        let live = self.read();
        Ok((live.last_applied, live.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), std::io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, std::io::Error>>
            + Unpin
            + OptionalSend,
    {
        // Entries come in pieces bounded in bytes; each piece is applied and written as one
        // batch off the async threads before the next is taken.
        let mut piece = Vec::new();
        let mut bytes = 0usize;
        while let Some(item) = entries.try_next().await? {
            bytes += entry_bytes(&item.0);
            piece.push(item);
            if bytes >= APPLY_PIECE_BYTES {
                self.apply_piece(std::mem::take(&mut piece)).await?;
                bytes = 0;
            }
        }
        if !piece.is_empty() {
            self.apply_piece(piece).await?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), std::io::Error> {
        let this = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || this.install(&meta, &snapshot))
            .await
            .map_err(io_error)?
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, SnapshotData>>, std::io::Error> {
        let current = self.shared.current_snapshot.lock().map_err(io_error)?;
        Ok(current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: data.clone(),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(
        &mut self,
    ) -> Result<SnapshotOf<TypeConfig, SnapshotData>, std::io::Error> {
        let this = self.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || this.build())
            .await
            .map_err(io_error)??;
        info!(index = snapshot_index(&meta), path = %data.path().display(), "snapshot built");
        self.set_current_snapshot(meta.clone(), data.clone());
        self.reap_retired();
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}
