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
