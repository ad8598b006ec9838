//! Snapshot data: a directory holding the snapshot metadata and a RocksDB checkpoint.
//!
//! ```text
//! <snapshot dir>/meta   versioned SnapshotMeta (last log id and membership)
//! <snapshot dir>/db/    RocksDB checkpoint of the state machine
//! ```
//!
//! A [`SnapshotData`] is shared (cheap clones) between openraft, a transfer in progress and the
//! store. A directory that is no longer the current snapshot is removed when its last user drops
//! it, so a follower that is still downloading an older snapshot never has it deleted under it.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::warn;

use crate::fsutil;
use crate::types::{SnapshotMeta, io_error};

pub(crate) const META_FILE: &str = "meta";
pub(crate) const DB_DIR: &str = "db";

/// The data of one snapshot, as handed to and from openraft.
#[derive(Clone)]
pub struct SnapshotData {
    dir: Arc<SnapshotDir>,
}

struct SnapshotDir {
    path: PathBuf,
    remove_when_unused: AtomicBool,
}

impl Drop for SnapshotDir {
    fn drop(&mut self) {
        if self.remove_when_unused.load(Ordering::Acquire)
            && let Err(e) = fsutil::remove_dir_if_exists(&self.path)
        {
            warn!(path = %self.path.display(), error = %e, "cannot remove an old snapshot");
        }
    }
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotData({})", self.dir.path.display())
    }
}

/// One file of a snapshot's checkpoint, as listed for transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// File name inside the checkpoint directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

impl SnapshotData {
    pub(crate) fn new(path: PathBuf, remove_when_unused: bool) -> Self {
        SnapshotData {
            dir: Arc::new(SnapshotDir {
                path,
                remove_when_unused: AtomicBool::new(remove_when_unused),
            }),
        }
    }

    /// The snapshot directory.
    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    /// The checkpoint directory inside it.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path.join(DB_DIR)
    }

    /// Marks the directory for removal once the last handle to it is dropped.
    pub(crate) fn retire(&self) {
        self.dir.remove_when_unused.store(true, Ordering::Release);
    }

    /// The checkpoint's files, in name order.
    pub fn files(&self) -> std::io::Result<Vec<SnapshotFile>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(self.db_path())? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                files.push(SnapshotFile {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    size: entry.metadata()?.len(),
                });
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Reads up to `buf.len()` bytes of checkpoint file `name` at `offset`; returns the count.
    pub fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        check_file_name(name)?;
        let mut f = File::open(self.db_path().join(name))?;
        f.seek(SeekFrom::Start(offset))?;
        let mut filled = 0;
        while filled < buf.len() {
            let n = f.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(filled)
    }
}

/// Snapshot files may only be plain names inside the checkpoint directory.
fn check_file_name(name: &str) -> std::io::Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid snapshot file name {name:?}"),
        ))
    }
}

pub(crate) fn write_meta(dir: &Path, meta: &SnapshotMeta) -> std::io::Result<()> {
    let path = dir.join(META_FILE);
    let mut f = File::create(&path)?;
    f.write_all(&mxraft_queue::encode(meta))?;
    f.sync_all()
}

pub(crate) fn read_meta(dir: &Path) -> std::io::Result<SnapshotMeta> {
    let bytes = fs::read(dir.join(META_FILE))?;
    mxraft_queue::decode(&bytes).map_err(io_error)
}

/// Writes a snapshot streamed from the leader into a fresh directory.
///
/// Files must arrive in order, each from offset 0 without gaps. Until [`finish`](Self::finish)
/// succeeds, dropping the receiver removes what was written.
pub struct SnapshotReceiver {
    dir: PathBuf,
    current: Option<(String, File, u64)>,
    finished: bool,
}

impl SnapshotReceiver {
    pub(crate) fn new(dir: PathBuf) -> std::io::Result<Self> {
        fs::create_dir_all(dir.join(DB_DIR))?;
        Ok(SnapshotReceiver {
            dir,
            current: None,
            finished: false,
        })
    }

    /// Appends `data` to file `name` at `offset`, which must be the bytes written so far.
    pub fn write_chunk(&mut self, name: &str, offset: u64, data: &[u8]) -> std::io::Result<()> {
        check_file_name(name)?;
        let switching = self.current.as_ref().is_none_or(|(n, _, _)| n != name);
        if switching {
            self.close_current()?;
            if offset != 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("snapshot file {name} starts at offset {offset}"),
                ));
            }
            let f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.dir.join(DB_DIR).join(name))?;
            self.current = Some((name.to_owned(), f, 0));
        }
        let Some((_, f, written)) = self.current.as_mut() else {
            return Err(io_error("no open snapshot file"));
        };
        if *written != offset {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("snapshot file {name}: chunk at {offset}, expected {written}"),
            ));
        }
        f.write_all(data)?;
        *written += data.len() as u64;
        Ok(())
    }

    fn close_current(&mut self) -> std::io::Result<()> {
        if let Some((_, f, _)) = self.current.take() {
            f.sync_all()?;
        }
        Ok(())
    }

    /// Makes the received files durable and returns them as snapshot data with `meta`.
    pub fn finish(mut self, meta: &SnapshotMeta) -> std::io::Result<SnapshotData> {
        self.close_current()?;
        fsutil::fsync_dir(&self.dir.join(DB_DIR))?;
        write_meta(&self.dir, meta)?;
        fsutil::fsync_dir(&self.dir)?;
        self.finished = true;
        Ok(SnapshotData::new(self.dir.clone(), true))
    }
}

impl Drop for SnapshotReceiver {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fsutil::remove_dir_if_exists(&self.dir);
        }
    }
}
