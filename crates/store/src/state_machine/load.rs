//! Opening a state-machine generation: its column families, and the queue loaded from them
//! into memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options};

use mxraft_queue::{Destination, Message, MessageId, QueueState, decode};

use super::persist::{STOPPING_PREFIX, SUSPENSION_PREFIX};
use super::{
    AppliedState, CF_BODIES, CF_DESTINATIONS, CF_GREYLIST, CF_MESSAGES, CF_META, CF_RECENT,
    CF_RECIPIENTS, CF_VERIFIED, KEY_APPLIED, KEY_MEMBERSHIP,
};
use crate::types::{LogId, StoredMembership, io_error};
use crate::{OpenError, fsutil};

/// The options of a state-machine database at `path`.
pub(super) fn db_options(path: &Path) -> Options {
    let mut o = Options::default();
    fsutil::direct_flushes(&mut o, path);
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_max_background_jobs(2);
    // Written without a WAL (see `apply::unlogged`): the column families must flush as one.
    o.set_atomic_flush(true);
    o.set_db_write_buffer_size(crate::log_store::MEMTABLE_BUDGET);
    o
}

pub(super) fn column_families() -> Vec<ColumnFamilyDescriptor> {
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

pub(super) fn cf<'a>(db: &'a DB, name: &str) -> std::io::Result<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| io_error(format!("column family {name} missing")))
}

pub(super) fn gen_dir(sm_dir: &Path, generation: u64) -> PathBuf {
    sm_dir.join(format!("gen-{generation}"))
}

/// Reads every record of column family `name`, handing each key and value to `load`.
fn for_each_record(
    db: &DB,
    path: &Path,
    name: &'static str,
    mut load: impl FnMut(&[u8], &[u8]) -> Result<(), OpenError>,
) -> Result<(), OpenError> {
    let handle = db
        .cf_handle(name)
        .ok_or_else(|| fsutil::io_err("missing column family in", path, io_error(name)))?;
    for item in db.iterator_cf(handle, IteratorMode::Start) {
        let (k, v) = item.map_err(|source| OpenError::Rocks {
            path: path.to_path_buf(),
            source,
        })?;
        load(&k, &v)?;
    }
    Ok(())
}

/// Opens a state-machine database and loads its queue into memory.
pub(super) fn load_generation(path: &Path, generation: u64) -> Result<AppliedState, OpenError> {
    let rocks = |source| OpenError::Rocks {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |source| OpenError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let db = DB::open_cf_descriptors(&db_options(path), path, column_families()).map_err(rocks)?;
    let meta = db
        .cf_handle(CF_META)
        .ok_or_else(|| fsutil::io_err("missing column family in", path, io_error(CF_META)))?;
    let last_applied = match db.get_pinned_cf(meta, KEY_APPLIED).map_err(rocks)? {
        Some(b) => decode::<Option<LogId>>(&b).map_err(corrupt)?,
        None => None,
    };
    let membership = match db.get_pinned_cf(meta, KEY_MEMBERSHIP).map_err(rocks)? {
        Some(b) => decode::<StoredMembership>(&b).map_err(corrupt)?,
        None => StoredMembership::default(),
    };
    let text = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    let mut state = QueueState::new();
    for_each_record(&db, path, CF_MESSAGES, |_, v| {
        state.insert_loaded(decode::<Message>(v).map_err(corrupt)?);
        Ok(())
    })?;
    for_each_record(&db, path, CF_DESTINATIONS, |k, v| {
        if let Some(name) = k.strip_prefix(SUSPENSION_PREFIX) {
            state.set_suspended_loaded(text(name), decode::<u64>(v).map_err(corrupt)?);
        } else if let Some(node) = k.strip_prefix(STOPPING_PREFIX) {
            let node = decode::<u64>(node).map_err(corrupt)?;
            state.set_stopping_loaded(node, decode::<u64>(v).map_err(corrupt)?);
        } else {
            state.set_destination_loaded(text(k), decode::<Destination>(v).map_err(corrupt)?);
        }
        Ok(())
    })?;
    for_each_record(&db, path, CF_RECIPIENTS, |k, _| {
        state.insert_recipient_loaded(text(k));
        Ok(())
    })?;
    for_each_record(&db, path, CF_VERIFIED, |k, v| {
        let (valid, at_ms) = decode::<(bool, u64)>(v).map_err(corrupt)?;
        state.set_verified_loaded(text(k), valid, at_ms);
        Ok(())
    })?;
    for_each_record(&db, path, CF_GREYLIST, |k, v| {
        state.set_greylist_loaded(text(k), decode::<u64>(v).map_err(corrupt)?);
        Ok(())
    })?;
    for_each_record(&db, path, CF_RECENT, |k, v| {
        let id = MessageId::from_key(k)
            .ok_or_else(|| fsutil::io_err("invalid key in", path, io_error(CF_RECENT)))?;
        state.set_recent_loaded(id, decode::<u64>(v).map_err(corrupt)?);
        Ok(())
    })?;
    Ok(AppliedState {
        db: Arc::new(db),
        generation,
        state,
        last_applied,
        membership,
    })
}
