//! The Raft log on RocksDB, with group commit.
//!
//! Keys of the `logs` column family are big-endian log indexes, so RocksDB's order is log
//! order; values are versioned entry records. The `meta` column family holds the vote, the last
//! purged log id and the committed log id.
//!
//! Durability follows openraft's contract: an appended entry is readable as soon as `append`
//! returns, and its `IOFlushed` callback runs only after the WAL holding it is fsynced. All
//! writes go through the one WAL of this database, so vote and log writes are never reordered.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};
use tracing::{error, info};

use crate::types::{Entry, LogId, TypeConfig, Vote, io_error};
use crate::{OpenError, fsutil};

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
/// Memtable memory of one RocksDB database (the log, or the state machine), all column
/// families together; RocksDB flushes the largest memtable when it is reached.
pub(crate) const MEMTABLE_BUDGET: usize = 32 * 1024 * 1024;

/// The Raft log store of one node. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<DB>,
    flusher: Mutex<Option<mpsc::Sender<IOFlushed<TypeConfig>>>>,
    flusher_thread: Mutex<Option<JoinHandle<()>>>,
    read_budget: usize,
    /// Whether writes are fsynced (always, but for the fault tests' negative control).
    sync: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel stops the flusher after it has completed every queued callback;
        // joining it means the database is closed once the last handle is gone.
        if let Ok(mut tx) = self.flusher.lock() {
            tx.take();
        }
        if let Ok(mut thread) = self.flusher_thread.lock()
            && let Some(t) = thread.take()
        {
            let _ = t.join();
        }
    }
}

fn be_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> std::io::Result<u64> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| io_error(format!("log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn sync_write(sync: bool) -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(sync);
    w
}

impl LogStore {
    /// Opens or creates the log database at `path`. `read_budget` bounds the bytes returned by
    /// one replication read.
    pub fn open(path: &Path, read_budget: usize) -> Result<LogStore, OpenError> {
        let options = crate::StoreOptions {
            replication_read_budget: read_budget,
            ..crate::StoreOptions::default()
        };
        Self::open_with(path, &options)
    }

    /// Opens or creates the log database at `path` with these options.
    pub fn open_with(path: &Path, options: &crate::StoreOptions) -> Result<LogStore, OpenError> {
        let read_budget = options.replication_read_budget;
        let sync = !options.skip_log_fsync;
        fsutil::create_dir_all(path)?;
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        fsutil::direct_flushes(&mut db_opts, path);
        // Purged entries are deleted soon after they are applied; cap the WAL so that its files
        // are recycled instead of accumulating between memtable flushes.
        db_opts.set_max_total_wal_size(256 * 1024 * 1024);
        // Memtables hold whole entries (message bodies) until they are flushed: cap them
        // together so a node's memory does not grow with the write rate.
        db_opts.set_db_write_buffer_size(MEMTABLE_BUDGET);

        let mut logs_opts = Options::default();
        logs_opts.set_write_buffer_size(MEMTABLE_BUDGET / 2);
        logs_opts.set_compression_type(rocksdb::DBCompressionType::None);
        logs_opts.set_enable_blob_files(true);
        logs_opts.set_min_blob_size(64 * 1024);
        logs_opts.set_enable_blob_gc(true);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_LOGS, logs_opts),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        let db =
            DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|source| OpenError::Rocks {
                path: path.to_path_buf(),
                source,
            })?;
        let db = Arc::new(db);

        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        let flusher_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flush_loop(&flusher_db, &rx, sync))
            .map_err(|e| fsutil::io_err("cannot start the log flusher for", path, e))?;
        info!(path = %path.display(), "raft log opened");
        Ok(LogStore {
            inner: Arc::new(Inner {
                db,
                flusher: Mutex::new(Some(tx)),
                flusher_thread: Mutex::new(Some(thread)),
                read_budget,
                sync,
            }),
        })
    }

    /// What the log's database holds in memory.
    pub fn memory(&self) -> std::io::Result<crate::StoreMemory> {
        crate::StoreMemory::of(&self.inner.db)
    }

    /// A handle that tells whether the database is still open, for orderly restarts.
    pub fn closed_watch(&self) -> crate::CloseWatch {
        crate::CloseWatch::new(&self.inner.db)
    }

    fn cf(&self, name: &str) -> std::io::Result<&rocksdb::ColumnFamily> {
        self.inner
            .db
            .cf_handle(name)
            .ok_or_else(|| io_error(format!("column family {name} missing")))
    }

    /// The id of the cluster this node belongs to, once it bootstrapped one or learned it from
    /// the cluster it joins.
    pub fn cluster_id(&self) -> std::io::Result<Option<String>> {
        self.get_meta::<String>(KEY_CLUSTER_ID)
    }

    /// Records the cluster id, synced to disk before it returns.
    pub fn save_cluster_id(&self, id: &str) -> std::io::Result<()> {
        let cf = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, KEY_CLUSTER_ID, mxraft_queue::encode(&id.to_owned()));
        self.inner
            .db
            .write_opt(batch, &sync_write(self.inner.sync))
            .map_err(io_error)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> std::io::Result<Option<T>> {
        let cf = self.cf(CF_META)?;
        match self.inner.db.get_pinned_cf(cf, key).map_err(io_error)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(mxraft_queue::decode(&bytes).map_err(io_error)?)),
        }
    }

    /// Reads the entries with index in `[start, end)`, stopping once `budget` bytes were read
    /// (but never before the first entry).
    fn read_range(&self, start: u64, end: u64, budget: usize) -> std::io::Result<Vec<Entry>> {
        let cf = self.cf(CF_LOGS)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let start_key = be_key(start);
        let iter = self
            .inner
            .db
            .iterator_cf(cf, IteratorMode::From(&start_key, Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(io_error)?;
            let index = index_of(&key)?;
            if index >= end {
                break;
            }
            let entry: Entry = mxraft_queue::decode(&value).map_err(io_error)?;
            bytes += value.len();
            out.push(entry);
            if bytes >= budget {
                break;
            }
        }
        Ok(out)
    }

    fn last_entry_id(&self) -> std::io::Result<Option<LogId>> {
        let cf = self.cf(CF_LOGS)?;
        let mut iter = self.inner.db.iterator_cf(cf, IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_key, value) = item.map_err(io_error)?;
                let entry: Entry = mxraft_queue::decode(&value).map_err(io_error)?;
                Ok(Some(entry.log_id))
            }
        }
    }

    /// Reads `[start, end)` off the async threads, in pieces of at most `read_budget` bytes.
    async fn read_range_blocking(&self, start: u64, end: u64) -> std::io::Result<Vec<Entry>> {
        let this = self.clone();
        let budget = self.inner.read_budget;
        tokio::task::spawn_blocking(move || this.read_range(start, end, budget))
            .await
            .map_err(io_error)?
    }

    async fn write_synced(&self, batch: WriteBatch) -> std::io::Result<()> {
        let db = self.inner.db.clone();
        let options = sync_write(self.inner.sync);
        tokio::task::spawn_blocking(move || db.write_opt(batch, &options))
            .await
            .map_err(io_error)?
            .map_err(io_error)
    }
}

/// The flusher: waits for callbacks, fsyncs the WAL once for all that are queued, then
/// completes them in the order they were submitted. Without `sync` (the fault tests' negative
/// control) it completes them without any fsync.
fn flush_loop(db: &DB, rx: &mpsc::Receiver<IOFlushed<TypeConfig>>, sync: bool) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let result = if sync { db.flush_wal(true) } else { Ok(()) };
        if let Err(e) = &result {
            error!(error = %e, "fsync of the raft log failed; this node stops writing");
        }
        for callback in batch {
            callback.io_completed(result.clone().map_err(io_error));
        }
    }
}

fn range_to_bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        let (start, end) = range_to_bounds(&range);
        self.read_range(start, end, usize::MAX)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        self.get_meta(KEY_VOTE)
    }

    /// The entries to apply, read lazily in pieces bounded in bytes: a follower catching up on
    /// a long range of large messages never holds more than one piece (and what `apply` has
    /// not written yet) in memory.
    async fn entries_stream<RB>(
        &mut self,
        range: RB,
    ) -> impl futures::Stream<Item = Result<Entry, std::io::Error>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (start, end) = range_to_bounds(&range);
        let this = self.clone();
        let pieces = futures::stream::try_unfold(start, move |next| {
            let this = this.clone();
            async move {
                if next >= end {
                    return Ok::<_, std::io::Error>(None);
                }
                let entries = this.read_range_blocking(next, end).await?;
                let Some(last) = entries.last() else {
                    return Ok(None);
                };
                let after = last.log_id.index + 1;
                Ok(Some((
                    futures::stream::iter(entries.into_iter().map(Ok)),
                    after,
                )))
            }
        });
        futures::TryStreamExt::try_flatten(pieces)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, std::io::Error> {
        self.read_range(start, end, self.inner.read_budget)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, std::io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, KEY_VOTE, mxraft_queue::encode(vote));
        self.write_synced(batch).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        // Not synced: after a crash an older committed id only means re-learning it from the
        // leader; the state machine never runs ahead of what is durable in the log.
        let cf = self.cf(CF_META)?;
        self.inner
            .db
            .put_cf(cf, KEY_COMMITTED, mxraft_queue::encode(&committed))
            .map_err(io_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, std::io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), std::io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.cf(CF_LOGS)?;
        let encoded: Vec<_> = entries
            .into_iter()
            .map(|entry| (be_key(entry.log_id.index), mxraft_queue::encode(&entry)))
            .collect();
        // Sized up front: a batch that grows copies every body it holds each time it doubles.
        let size = encoded.iter().map(|(_, v)| v.len() + 32).sum::<usize>();
        let mut batch = WriteBatch::with_capacity_bytes(size + 16);
        for (key, value) in encoded {
            batch.put_cf(cf, key, value);
        }
        // Written without sync: readable now, durable once the flusher's fsync covers it. The
        // write copies the entries into the memtable: off the async threads, so that large
        // messages do not hold up heartbeats.
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || db.write(batch))
            .await
            .map_err(io_error)?
            .map_err(io_error)?;
        let sender = self
            .inner
            .flusher
            .lock()
            .map_err(io_error)?
            .as_ref()
            .cloned()
            .ok_or_else(|| io_error("log store is closing"))?;
        sender
            .send(callback)
            .map_err(|_| io_error("log flusher stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), std::io::Error> {
        let from = last_log_id.map(|id| id.index + 1).unwrap_or(0);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOGS)?, be_key(from), be_key(u64::MAX));
        // Synced so that conflicting entries never come back after a crash.
        self.write_synced(batch).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), std::io::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, KEY_PURGED, mxraft_queue::encode(&log_id));
        batch.delete_range_cf(self.cf(CF_LOGS)?, be_key(0), be_key(log_id.index + 1));
        self.inner.db.write(batch).map_err(io_error)
    }
}
