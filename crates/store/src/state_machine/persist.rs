//! Persisting what applying changed: one step per [`Change`], into the write batch of the
//! applied piece; and the body records.

use bytes::Bytes;
use rocksdb::{DB, WriteBatch};

use mxraft_queue::codec::FORMAT_VERSION;
use mxraft_queue::{Change, MessageId, QueueState};

use super::load::cf;
use super::{
    CF_BODIES, CF_DESTINATIONS, CF_GREYLIST, CF_MESSAGES, CF_META, CF_RECENT, CF_RECIPIENTS,
    CF_VERIFIED,
};
use crate::types::io_error;

/// The column families an apply writes to.
pub(super) struct Cfs<'a> {
    pub(super) meta: &'a rocksdb::ColumnFamily,
    messages: &'a rocksdb::ColumnFamily,
    bodies: &'a rocksdb::ColumnFamily,
    destinations: &'a rocksdb::ColumnFamily,
    recipients: &'a rocksdb::ColumnFamily,
    verified: &'a rocksdb::ColumnFamily,
    greylist: &'a rocksdb::ColumnFamily,
    recent: &'a rocksdb::ColumnFamily,
}

impl<'a> Cfs<'a> {
    pub(super) fn of(db: &'a DB) -> std::io::Result<Cfs<'a>> {
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

/// The persist step of one change: adds the write it needs to `batch`, reading the new value
/// from `state`. For an inserted message, returns what the body store now holds for it (trace
/// header and body), which readers get until the batch is written.
pub(super) fn persist(
    state: &QueueState,
    cfs: &Cfs<'_>,
    batch: &mut WriteBatch,
    change: Change,
) -> Option<Bytes> {
    match change {
        Change::Inserted {
            id,
            trace_header,
            body,
        } => {
            let record = encode_body(trace_header.as_bytes(), &body);
            batch.put_cf(cfs.bodies, id.to_key(), &record);
            if let Some(m) = state.get(id) {
                batch.put_cf(cfs.messages, id.to_key(), mxraft_queue::encode(m));
            }
            return Some(record.slice(1..));
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
        Change::Suspension(name) => {
            let key = suspension_key(&name);
            match state.suspended_since(&name) {
                Some(at) => batch.put_cf(cfs.destinations, key, mxraft_queue::encode(&at)),
                None => batch.delete_cf(cfs.destinations, key),
            }
        }
        Change::NodeStopping(node) => {
            let key = stopping_key(node);
            match state.stopping_since(node) {
                Some(at) => batch.put_cf(cfs.destinations, key, mxraft_queue::encode(&at)),
                None => batch.delete_cf(cfs.destinations, key),
            }
        }
        Change::Evicted { cache, count } => {
            metrics::counter!("mxraft_cache_evictions_total", "cache" => cache)
                .increment(u64::from(count));
        }
    }
    None
}

/// Suspensions live next to the destinations' states, under keys no domain name can have.
pub(super) const SUSPENSION_PREFIX: &[u8] = b"\0suspended\0";

fn suspension_key(name: &str) -> Vec<u8> {
    [SUSPENSION_PREFIX, name.as_bytes()].concat()
}

/// Nodes that announced they are stopping, likewise: the node id follows, encoded.
pub(super) const STOPPING_PREFIX: &[u8] = b"\0stopping\0";

fn stopping_key(node: u64) -> Vec<u8> {
    [STOPPING_PREFIX, &mxraft_queue::encode(&node)].concat()
}

/// What the body store holds for message `id`: its body, with the trace header in front for
/// messages whose metadata does not keep it (see [`mxraft_queue::Message::content`]).
pub(super) fn read_body(db: &DB, id: MessageId) -> std::io::Result<Option<Bytes>> {
    let bodies = cf(db, CF_BODIES)?;
    match db.get_cf(bodies, id.to_key()).map_err(io_error)? {
        None => Ok(None),
        Some(value) => match value.first() {
            // The version byte is sliced off, not removed: that would move the whole body.
            Some(&FORMAT_VERSION) => Ok(Some(Bytes::from(value).slice(1..))),
            other => Err(io_error(format!(
                "body record of unknown version {other:?}"
            ))),
        },
    }
}

/// A body record: the version byte, then the trace header and the body as one run of bytes.
fn encode_body(trace_header: &[u8], body: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(1 + trace_header.len() + body.len());
    v.push(FORMAT_VERSION);
    v.extend_from_slice(trace_header);
    v.extend_from_slice(body);
    Bytes::from(v)
}
