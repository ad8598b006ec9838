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
//! The write goes to the memtables only, without RocksDB's WAL and without an fsync: the Raft
//! log already holds every applied entry durably. After a crash the state machine restarts at
//! the `last_applied` of its last memtable flush (all column families flush together), and
//! openraft applies the remaining committed entries again from the log. Snapshots flush the
//! memtables (a checkpoint does), so the log is only purged below state that is durable; an
//! orderly close flushes them too.
//!
//! `load` opens a generation and rebuilds the queue from it, `apply` applies committed pieces,
//! `persist` turns each change into its write.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use bytes::Bytes;
use futures::TryStreamExt;
use openraft::alias::SnapshotOf;
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use openraft::{OptionalSend, RaftSnapshotBuilder};
use rocksdb::{DB, Options};
use tracing::{info, warn};

use mxraft_queue::{MessageId, QueueState};

mod apply;
mod digest;
mod load;
mod persist;

pub use digest::StateDigest;

use apply::{APPLY_PIECE_BYTES, entry_bytes};
use load::{cf, gen_dir};
use persist::read_body;

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
/// Every column family of the state machine, in the order digests read them.
const COLUMN_FAMILIES: [&str; 8] = [
    CF_META,
    CF_MESSAGES,
    CF_BODIES,
    CF_DESTINATIONS,
    CF_RECIPIENTS,
    CF_VERIFIED,
    CF_GREYLIST,
    CF_RECENT,
];
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
    live: RwLock<AppliedState>,
    current_snapshot: Mutex<Option<(SnapshotMeta, SnapshotData)>>,
    /// Databases replaced by a snapshot install, removed once nobody reads them any more.
    retired: Mutex<Vec<(Arc<DB>, PathBuf)>>,
    seq: AtomicU64,
    /// Bodies of the piece being applied, from when the state shows them until the write
    /// batch holding them is in RocksDB.
    unwritten: Mutex<std::collections::HashMap<MessageId, Bytes>>,
    /// What applying tells, piece by piece, once the piece is written (see
    /// [`StateMachineStore::subscribe_events`]).
    events: tokio::sync::broadcast::Sender<Arc<Vec<AppliedEvent>>>,
}

/// An event of the queue with the log index of the entry whose apply told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEvent {
    /// The entry's log index.
    pub index: u64,
    /// The event.
    pub event: mxraft_queue::Event,
}

/// Pieces of events kept for a watcher that falls behind before it misses some.
const EVENT_PIECES: usize = 1024;

/// The state as applied so far, which the node serves from: the current generation's
/// database and the queue in memory.
pub struct AppliedState {
    db: Arc<DB>,
    generation: u64,
    state: QueueState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl AppliedState {
    /// The queue.
    pub fn queue(&self) -> &QueueState {
        &self.state
    }

    /// The index of the last applied log entry (0 when none).
    pub fn applied_index(&self) -> u64 {
        self.last_applied.as_ref().map(|l| l.index).unwrap_or(0)
    }
}

/// Reads the metadata a checkpoint holds, by opening it read-only.
fn checkpoint_meta(db_path: &Path) -> std::io::Result<SnapshotMeta> {
    let db = DB::open_cf_for_read_only(&Options::default(), db_path, COLUMN_FAMILIES, false)
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
        let live = load::load_generation(&gen_dir(&sm_dir, generation), generation)?;
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
                events: tokio::sync::broadcast::channel(EVENT_PIECES).0,
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
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        // A poisoned lock means an apply panicked; the data it guards was not half-written
        // to disk, so serving reads from it is still correct.
        self.shared
            .live
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the body store holds for a queued message: its body, with the trace header in
    /// front unless the metadata keeps it; [`mxraft_queue::Message::content`] turns it into the
    /// message as delivered. A blocking read: call it off the async threads, or use
    /// [`StateMachineStore::body_async`].
    pub fn body(&self, id: MessageId) -> std::io::Result<Option<Bytes>> {
        if let Ok(unwritten) = self.shared.unwritten.lock()
            && let Some(body) = unwritten.get(&id)
        {
            return Ok(Some(body.clone()));
        }
        let db = self.read().db.clone();
        read_body(&db, id)
    }

    /// What the live generation's database holds in memory.
    pub fn memory(&self) -> std::io::Result<crate::StoreMemory> {
        let db = self.read().db.clone();
        crate::StoreMemory::of(&db)
    }

    /// A digest of every record of the state machine on disk, with the applied index it is
    /// of, to compare nodes (a blocking read).
    pub fn digest(&self) -> std::io::Result<StateDigest> {
        let db = self.read().db.clone();
        digest::digest(&db)
    }

    /// [`StateMachineStore::digest`] on a blocking thread.
    pub async fn digest_async(&self) -> std::io::Result<StateDigest> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.digest())
            .await
            .map_err(io_error)?
    }

    /// [`StateMachineStore::body`] on a blocking thread.
    pub async fn body_async(&self, id: MessageId) -> std::io::Result<Option<Bytes>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.body(id))
            .await
            .map_err(io_error)?
    }

    /// The events of every piece applied from now on, once its write batch is in RocksDB, in
    /// log order. A receiver that falls more than 1024 pieces behind is told how many it
    /// missed. A snapshot install tells nothing: what it replaced was never applied here.
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<Arc<Vec<AppliedEvent>>> {
        self.shared.events.subscribe()
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

    fn write_live<R>(&self, f: impl FnOnce(&mut AppliedState) -> R) -> R {
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
        let live = load::load_generation(&target, generation).map_err(io_error)?;
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
