//! What a node rebuilds from RocksDB when it restarts is the state it had in memory: every
//! kind of change is persisted, none is lost or invented on reload.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;

use mxraft_queue::{
    AttemptOutcome, Enqueue, MailParams, MessageId, MessageReport, QueueCommand, QueueState,
    RcptParams, Report,
};
use mxraft_store::{Entry, StoreOptions, Stores, TypeConfig};

const T0: u64 = 1_800_000_000_000;

fn enqueue(seq: u64, rcpts: &[&str]) -> QueueCommand {
    QueueCommand::Enqueue(Enqueue {
        id: MessageId::new(T0, 1, seq),
        received_at_ms: T0,
        received_by: 1,
        sender: "sender@elsewhere.test".into(),
        params: MailParams::default(),
        recipients: rcpts
            .iter()
            .map(|a| (a.to_string(), RcptParams::default()))
            .collect(),
        trace_header: "Received: test\r\n".into(),
        body: Bytes::from(format!("Subject: {seq}\r\n\r\nbody {seq}\r\n")),
    })
}

/// Applies `commands` as committed entries from index `first` on.
async fn apply(stores: &mut Stores, first: u64, commands: Vec<QueueCommand>) {
    let entries: Vec<_> = commands
        .into_iter()
        .enumerate()
        .map(|(i, cmd)| {
            let log_id = openraft::testing::log_id::<TypeConfig>(1, 1, first + i as u64);
            Ok((Entry::new_normal(log_id, cmd), None))
        })
        .collect();
    stores
        .state_machine
        .apply(stream::iter(entries))
        .await
        .expect("applied");
}

fn reopen(dir: &std::path::Path, stores: Stores) -> Stores {
    let closed = [
        stores.log.closed_watch(),
        stores.state_machine.closed_watch(),
    ];
    drop(stores);
    let until = Instant::now() + Duration::from_secs(30);
    while !closed.iter().all(|c| c.is_closed()) {
        assert!(Instant::now() < until, "the databases did not close");
        std::thread::sleep(Duration::from_millis(10));
    }
    Stores::open(dir, StoreOptions::default()).expect("reopen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_state_machine_equals_the_one_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stores = Stores::open(dir.path(), StoreOptions::default()).expect("open");
    let id = |seq| MessageId::new(T0, 1, seq);
    apply(
        &mut stores,
        1,
        vec![
            enqueue(1, &["a@example.test", "b@example.test"]),
            enqueue(2, &["c@example.test"]),
            enqueue(3, &["d@other.test"]),
            enqueue(4, &["e@example.test"]),
            QueueCommand::Claim {
                ids: vec![id(1), id(2)],
                node: 2,
                destination: "example.test".into(),
                at_ms: T0 + 1000,
                lease_ms: 60_000,
            },
        ],
    )
    .await;
    // The claim's fencing token is its log index.
    let token = 5;
    let claimed: Vec<_> = stores.state_machine.read().queue().claims();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].token, token);
    apply(
        &mut stores,
        6,
        vec![
            // One recipient delivered, one failed (a DSN is queued with the body), one deferred.
            QueueCommand::Report(Report {
                token,
                at_ms: T0 + 2000,
                reporting_mta: "mx.backup.test".into(),
                messages: vec![
                    MessageReport {
                        id: id(1),
                        recipients: vec![
                            (
                                0,
                                AttemptOutcome::Delivered {
                                    reply: "250 ok".into(),
                                },
                            ),
                            (
                                1,
                                AttemptOutcome::Failed {
                                    reply: "550 no".into(),
                                },
                            ),
                        ],
                    },
                    MessageReport {
                        id: id(2),
                        recipients: vec![(
                            0,
                            AttemptOutcome::Deferred {
                                reply: "451 later".into(),
                            },
                        )],
                    },
                ],
            }),
            QueueCommand::Hold { id: id(3) },
            QueueCommand::Delete {
                id: id(4),
                at_ms: T0 + 3000,
            },
            QueueCommand::SetDestination {
                destination: "other.test".into(),
                up: false,
                at_ms: T0 + 3000,
                probed: true,
                error: Some("connection refused".into()),
            },
            QueueCommand::RecipientsAdd {
                entries: vec![
                    "a@example.test".into(),
                    "@other.test".into(),
                    "x@example.test".into(),
                ],
            },
            QueueCommand::RecipientsRemove {
                entries: vec!["x@example.test".into()],
            },
            QueueCommand::GreylistSeen {
                key: "192.0.2|s@x.test|a@example.test".into(),
                at_ms: T0 + 4000,
            },
            QueueCommand::Verified {
                address: "v@example.test".into(),
                valid: true,
                at_ms: T0 + 4000,
            },
            QueueCommand::Verified {
                address: "w@example.test".into(),
                valid: false,
                at_ms: T0 + 4000,
            },
            // Stored next to other.test's state, which must still load as a destination.
            QueueCommand::Suspend {
                destination: "other.test".into(),
                suspended: true,
                at_ms: T0 + 5000,
            },
            QueueCommand::Suspend {
                destination: "example.test".into(),
                suspended: true,
                at_ms: T0 + 5000,
            },
            QueueCommand::Suspend {
                destination: "example.test".into(),
                suspended: false,
                at_ms: T0 + 6000,
            },
            // Stored in the same column family: node 2 stays stopping, node 3 runs again.
            QueueCommand::NodeStopping {
                node: 2,
                stopping: true,
                at_ms: T0 + 7000,
            },
            QueueCommand::NodeStopping {
                node: 3,
                stopping: true,
                at_ms: T0 + 7000,
            },
            QueueCommand::NodeStopping {
                node: 3,
                stopping: false,
                at_ms: T0 + 8000,
            },
        ],
    )
    .await;

    let (before, applied, dsns): (QueueState, u64, usize) = {
        let live = stores.state_machine.read();
        let q = live.queue();
        let dsns = q.iter_from(None).filter(|m| m.sender.is_empty()).count();
        (q.clone(), live.applied_index(), dsns)
    };
    assert_eq!(applied, 20);
    assert_eq!(before.suspended_since("other.test"), Some(T0 + 5000));
    assert_eq!(before.suspended_since("example.test"), None);
    assert_eq!(before.stopping_since(2), Some(T0 + 7000));
    assert_eq!(before.stopping_since(3), None);
    assert_eq!(dsns, 1, "the failed recipient made one DSN");
    assert_eq!(
        before.len(),
        3,
        "2 (deferred), 3 (held) and the DSN stay; 1 is done and 4 deleted"
    );
    assert!(before.recently_removed(id(4)).is_some());
    assert!(!before.destination_up("other.test"));
    assert!(
        before.recipient_listed("a@example.test") && !before.recipient_listed("x@example.test")
    );

    let stores = reopen(dir.path(), stores);
    let live = stores.state_machine.read();
    assert_eq!(live.applied_index(), applied);
    assert!(
        *live.queue() == before,
        "the reloaded state differs from the one in memory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_is_equal_for_equal_histories_and_names_the_index_it_is_of() {
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut one = Stores::open(a.path(), StoreOptions::default()).expect("open");
    let mut two = Stores::open(b.path(), StoreOptions::default()).expect("open");
    let empty = one.state_machine.digest().expect("digest");
    assert_eq!(empty.applied_index, 0);
    for stores in [&mut one, &mut two] {
        apply(
            stores,
            1,
            vec![enqueue(1, &["a@example.test"]), enqueue(2, &["b@x.test"])],
        )
        .await;
    }
    let d1 = one.state_machine.digest().expect("digest");
    assert_eq!(d1.applied_index, 2);
    assert_eq!(d1, two.state_machine.digest().expect("digest"));
    assert_ne!(d1.sha256, empty.sha256);
    assert!(d1.records > empty.records);
    // The digest survives a restart, and one more entry on one side tells the two apart.
    let one = reopen(a.path(), one);
    assert_eq!(one.state_machine.digest().expect("digest"), d1);
    apply(&mut two, 3, vec![enqueue(3, &["c@example.test"])]).await;
    let d2 = two.state_machine.digest().expect("digest");
    assert_eq!(d2.applied_index, 3);
    assert_ne!(d2.sha256, d1.sha256);
}
