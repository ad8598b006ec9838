//! Durable storage for one mxraft node: the Raft log and the queue state machine, on RocksDB.
//!
//! A node's data directory holds two RocksDB databases and the snapshots:
//!
//! ```text
//! <data_dir>/raft/              Raft log (CF `logs`) and metadata (CF `meta`: vote, purged, committed, cluster id)
//! <data_dir>/sm/CURRENT         name of the live state-machine generation
//! <data_dir>/sm/gen-<n>/        the state machine (CFs `meta`, `messages`, `bodies`, `destinations`,
//!                               `recipients`, `verified`, `greylist`, `recent`)
//! <data_dir>/snapshots/snap-*/  the current snapshot: `meta` + `db/` (a RocksDB checkpoint)
//! ```
//!
//! - [`LogStore`] implements openraft's `RaftLogStorage` with group commit: `append` writes the
//!   entries without syncing (so they are readable at once) and hands the IO callback to a single
//!   flusher thread, which fsyncs the WAL once for everything queued behind it and then completes
//!   the callbacks in submission order. The vote is fsynced before `save_vote` returns.
//! - [`StateMachineStore`] implements `RaftStateMachine`: it applies [`mxraft_queue`] commands to
//!   the in-memory [`mxraft_queue::QueueState`] and writes the resulting changes, the bodies and
//!   `last_applied` in one RocksDB batch per applied batch of entries.
//! - Snapshots are RocksDB checkpoints of the state machine ([`SnapshotData`]), streamed file by
//!   file by the transport; installing one switches the state machine to a new generation
//!   directory through an atomic rename of `sm/CURRENT`.
//!
//! What it does not own: the network (`mxraft-cluster`) and the meaning of commands
//! (`mxraft-queue`).

mod fsutil;
mod log_store;
mod snapshot;
mod state_machine;
mod types;

pub use log_store::LogStore;
pub use snapshot::{SnapshotData, SnapshotFile, SnapshotReceiver};
pub use state_machine::{AppliedEvent, AppliedState, StateDigest, StateMachineStore};
pub use types::{
    Entry, LogId, NodeInfo, SnapshotMeta, StoredMembership, TypeConfig, Vote, io_error,
};

use std::path::{Path, PathBuf};

/// What RocksDB holds in memory for one database, in bytes (approximate, as RocksDB counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreMemory {
    /// Memtables, flushed and not yet released ones included.
    pub memtables: u64,
    /// Table readers: index and filter blocks outside the block cache.
    pub table_readers: u64,
    /// The block caches of the database's column families.
    pub block_cache: u64,
}

impl StoreMemory {
    fn of(db: &rocksdb::DB) -> std::io::Result<StoreMemory> {
        let stats = rocksdb::perf::get_memory_usage_stats(Some(&[db]), None).map_err(io_error)?;
        Ok(StoreMemory {
            memtables: stats.mem_table_total,
            table_readers: stats.mem_table_readers_total,
            block_cache: stats.cache_total,
        })
    }
}

impl std::ops::Add for StoreMemory {
    type Output = StoreMemory;

    fn add(self, o: StoreMemory) -> StoreMemory {
        StoreMemory {
            memtables: self.memtables + o.memtables,
            table_readers: self.table_readers + o.table_readers,
            block_cache: self.block_cache + o.block_cache,
        }
    }
}

/// Tunables of the storage layer.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Upper bound, in bytes, of the entries returned by one replication read; at least one entry
    /// is always returned. Keeps one AppendEntries request below the gRPC message limit.
    pub replication_read_budget: usize,
    /// Never fsync the log or the vote, and report appends durable at once. Loses
    /// acknowledged mail on a power cut: only for the negative control of the fault tests.
    pub skip_log_fsync: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            replication_read_budget: 16 * 1024 * 1024,
            skip_log_fsync: false,
        }
    }
}

/// Opening the stores failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// RocksDB refused to open a database.
    #[error("cannot open RocksDB at {path}: {source}")]
    Rocks {
        /// The database directory.
        path: PathBuf,
        /// The RocksDB error.
        source: rocksdb::Error,
    },
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A stored record does not decode.
    #[error("corrupt record in {path}: {source}")]
    Corrupt {
        /// The database directory.
        path: PathBuf,
        /// The decoding error.
        source: mxraft_queue::CodecError,
    },
}

/// Both stores of one node, opened from its data directory.
pub struct Stores {
    /// The Raft log.
    pub log: LogStore,
    /// The queue state machine.
    pub state_machine: StateMachineStore,
}

impl Stores {
    /// Opens (creating if needed) the stores under `data_dir`.
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<Stores, OpenError> {
        fsutil::create_dir_all(data_dir)?;
        let log = LogStore::open_with(&data_dir.join("raft"), &options)?;
        let state_machine = StateMachineStore::open(data_dir)?;
        Ok(Stores { log, state_machine })
    }
}

/// Tells whether a store has been closed (all its handles dropped, so its RocksDB databases are
/// closed), so a node can be reopened in the same process, as tests and orderly restarts do.
#[derive(Clone)]
pub struct CloseWatch(std::sync::Weak<dyn std::any::Any + Send + Sync>);

impl CloseWatch {
    pub(crate) fn new<T: Send + Sync + 'static>(owner: &std::sync::Arc<T>) -> Self {
        let owner: std::sync::Arc<dyn std::any::Any + Send + Sync> = owner.clone();
        CloseWatch(std::sync::Arc::downgrade(&owner))
    }

    /// Whether the store is closed.
    pub fn is_closed(&self) -> bool {
        self.0.strong_count() == 0
    }
}
