//! What the store's integration tests share.

use bytes::Bytes;
use openraft::entry::RaftEntry;

use mxraft_queue::{Enqueue, MailParams, MessageId, QueueCommand, RcptParams};
use mxraft_store::{Entry, TypeConfig};

/// The receive time of every test message.
pub const T0: u64 = 1_800_000_000_000;

/// The trace header of every test message.
pub const TRACE: &str = "Received: test\r\n";

/// The log entry at `index` (term 1) that queues one message with this body, for one recipient.
pub fn enqueue_entry(index: u64, body: Bytes) -> Entry {
    let cmd = QueueCommand::Enqueue(Enqueue {
        id: MessageId::new(T0, 1, index),
        received_at_ms: T0,
        received_by: 1,
        sender: "sender@elsewhere.test".into(),
        params: MailParams::default(),
        recipients: vec![("a@example.test".into(), RcptParams::default())],
        trace_header: TRACE.into(),
        body,
    });
    Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, index), cmd)
}
