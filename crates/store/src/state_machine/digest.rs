//! A digest of the state machine as written to disk, to compare nodes: at the same applied
//! index every node must hold exactly the same records.

use ring::digest::{Context, SHA256};
use rocksdb::{DB, IteratorMode};

use super::load::cf;
use super::{CF_META, COLUMN_FAMILIES, KEY_APPLIED};
use crate::types::{LogId, io_error};

/// What [`crate::StateMachineStore::digest`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDigest {
    /// The last log index the digested records include (0 before any).
    pub applied_index: u64,
    /// SHA-256, in hex, over every record of every column family, in order.
    pub sha256: String,
    /// Records digested.
    pub records: u64,
}

/// Digests one consistent RocksDB snapshot of `db`.
pub(super) fn digest(db: &DB) -> std::io::Result<StateDigest> {
    let snapshot = db.snapshot();
    let mut ctx = Context::new(&SHA256);
    let mut records = 0u64;
    let mut applied_index = 0;
    for name in COLUMN_FAMILIES {
        let family = cf(db, name)?;
        ctx.update(&(name.len() as u64).to_be_bytes());
        ctx.update(name.as_bytes());
        for item in snapshot.iterator_cf(family, IteratorMode::Start) {
            let (key, value) = item.map_err(io_error)?;
            if name == CF_META && &*key == KEY_APPLIED {
                applied_index = mxraft_queue::decode::<Option<LogId>>(&value)
                    .map_err(io_error)?
                    .map_or(0, |l| l.index);
            }
            ctx.update(&(key.len() as u64).to_be_bytes());
            ctx.update(&key);
            ctx.update(&(value.len() as u64).to_be_bytes());
            ctx.update(&value);
            records += 1;
        }
    }
    Ok(StateDigest {
        applied_index,
        sha256: hex(ctx.finish().as_ref()),
        records,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
