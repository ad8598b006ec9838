//! File-system helpers with the fsyncs that crash safety needs.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::OpenError;

pub(crate) fn io_err(action: &'static str, path: &Path, source: std::io::Error) -> OpenError {
    OpenError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn create_dir_all(path: &Path) -> Result<(), OpenError> {
    fs::create_dir_all(path).map_err(|e| io_err("cannot create directory", path, e))
}

/// Whether files in `dir` (or, while it does not exist yet, its parent) open for direct I/O
/// (`O_DIRECT`). tmpfs, for one, refuses it.
pub(crate) fn supports_direct_io(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = if dir.is_dir() {
        dir
    } else {
        dir.parent().unwrap_or(dir)
    };
    let probe = dir.join(".direct-io-probe");
    let opened = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(&probe)
        .is_ok();
    let _ = fs::remove_file(&probe);
    opened
}

/// Lets RocksDB write the files of its flushes and compactions with direct I/O where the
/// file system allows it. Those files are the second copy of every body (the first is in the
/// WAL or the Raft log) and are never read back soon; through the page cache each byte would
/// be copied into it once more, and that copy, not the disk, was the bottleneck.
pub(crate) fn direct_flushes(options: &mut rocksdb::Options, dir: &Path) {
    if supports_direct_io(dir) {
        options.set_use_direct_io_for_flush_and_compaction(true);
    }
}

/// Makes a directory's entries (new, renamed or removed files) durable.
pub(crate) fn fsync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// Replaces `path` with `contents` so that a crash leaves either the old or the new file.
pub(crate) fn write_file_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Whether RocksDB never modifies a file of this name once written, so it can be hard-linked.
fn is_immutable(name: &str) -> bool {
    name.ends_with(".sst") || name.ends_with(".blob")
}

/// Copies the files of directory `from` into the new directory `to`: immutable table files are
/// hard-linked when possible, the others copied; everything is fsynced.
pub(crate) fn clone_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let src = entry.path();
        let dst = to.join(&name);
        if entry.file_type()?.is_dir() {
            clone_dir(&src, &dst)?;
            continue;
        }
        let linked = is_immutable(&name.to_string_lossy()) && fs::hard_link(&src, &dst).is_ok();
        if !linked {
            fs::copy(&src, &dst)?;
            File::open(&dst)?.sync_all()?;
        }
    }
    fsync_dir(to)
}

/// Removes a directory tree if it exists.
pub(crate) fn remove_dir_if_exists(path: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
