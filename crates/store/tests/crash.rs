//! The state machine is written without RocksDB's WAL: what a crash leaves of it must be the
//! state after one applied index, never a mix, and never earlier than its last snapshot (the
//! point below which the log may be purged).
//!
//! The crash is real: the test runs itself as a child process that applies entries and aborts
//! without closing the databases, and the parent reopens what it left.

mod common;

use std::process::Command;

use bytes::Bytes;
use futures::stream;
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;

use common::T0;
use mxraft_queue::MessageId;
use mxraft_store::{Entry, StoreOptions, Stores};

const CHILD_DIR: &str = "MXRAFT_CRASH_TEST_DIR";
/// Entries applied before the snapshot, and in all.
const BEFORE_SNAPSHOT: u64 = 40;
const ALL: u64 = 100;

fn body(seq: u64) -> Bytes {
    // Blob-sized before the snapshot; after it, large enough (60 × 512 KiB) that the bodies'
    // memtable fills and flushes on its own, which without an atomic flush would leave bodies
    // on disk ahead of the messages and the applied index.
    let len = if seq <= BEFORE_SNAPSHOT {
        8000
    } else {
        512 * 1024
    } + seq as usize;
    Bytes::from(format!("Subject: {seq}\r\n\r\n{}\r\n", "x".repeat(len)))
}

fn entry(index: u64) -> Entry {
    common::enqueue_entry(index, body(index))
}

async fn apply(stores: &mut Stores, indexes: std::ops::RangeInclusive<u64>) {
    for index in indexes {
        stores
            .state_machine
            .apply(stream::iter([Ok((entry(index), None))]))
            .await
            .expect("applied");
    }
}

/// In the child: apply, snapshot, apply more, then die without closing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // Only meaningful as the parent's child.
    };
    let mut stores = Stores::open(dir.as_ref(), StoreOptions::default()).expect("open");
    apply(&mut stores, 1..=BEFORE_SNAPSHOT).await;
    let mut builder = stores.state_machine.get_snapshot_builder().await;
    builder.build_snapshot().await.expect("snapshot");
    apply(&mut stores, BEFORE_SNAPSHOT + 1..=ALL).await;
    std::process::abort();
}

#[test]
fn a_crash_leaves_the_state_after_one_index_at_or_after_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .status()
        .expect("child ran");
    assert!(!status.success(), "the child was meant to abort");

    let stores = Stores::open(dir.path(), StoreOptions::default()).expect("reopen");
    let sm = stores.state_machine.read();
    let applied = sm.applied_index();
    assert!(
        (BEFORE_SNAPSHOT..=ALL).contains(&applied),
        "applied index {applied} is before the snapshot at {BEFORE_SNAPSHOT}"
    );
    // Exactly the messages of entries 1..=applied, each with its whole body.
    let ids: Vec<MessageId> = sm.queue().iter_from(None).map(|m| m.id).collect();
    let expected: Vec<MessageId> = (1..=applied).map(|i| MessageId::new(T0, 1, i)).collect();
    assert_eq!(
        ids, expected,
        "the state is not the one after index {applied}"
    );
    drop(sm);
    for index in 1..=applied {
        let got = stores
            .state_machine
            .body(MessageId::new(T0, 1, index))
            .expect("read body");
        // The body store holds the trace header in front of the body.
        let stored = Bytes::from([common::TRACE.as_bytes(), &body(index)].concat());
        assert_eq!(got, Some(stored), "body of message {index}");
    }
    for index in applied + 1..=ALL {
        let got = stores
            .state_machine
            .body(MessageId::new(T0, 1, index))
            .expect("read body");
        assert_eq!(
            got, None,
            "body of message {index}, after the applied index {applied}"
        );
    }
}
