//! The memory a node reports for its databases (the `mxraft_rocksdb_memory_bytes` gauges)
//! follows what is written: applied bodies sit in the state machine's memtables until they
//! are flushed.

mod common;

use bytes::Bytes;
use futures::stream;
use openraft::storage::RaftStateMachine;

use mxraft_store::{Entry, StoreOptions, Stores};

const BODY: usize = 64 * 1024;
const MESSAGES: u64 = 40;

fn entry(index: u64) -> Entry {
    common::enqueue_entry(index, Bytes::from(vec![b'x'; BODY]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_bodies_show_in_the_state_machines_memtables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stores = Stores::open(dir.path(), StoreOptions::default()).expect("open");
    let before = stores.state_machine.memory().expect("memory");
    let log = stores.log.memory().expect("log memory");
    assert!(log.memtables < BODY as u64, "an empty log holds {log:?}");
    for index in 1..=MESSAGES {
        stores
            .state_machine
            .apply(stream::iter([Ok((entry(index), None))]))
            .await
            .expect("applied");
    }
    let after = stores.state_machine.memory().expect("memory");
    let written = MESSAGES * BODY as u64;
    assert!(
        after.memtables >= before.memtables + written,
        "{written} bytes of bodies applied, memtables went from {} to {}",
        before.memtables,
        after.memtables
    );
}
