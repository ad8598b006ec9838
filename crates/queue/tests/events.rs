//! The events applying tells: one per message or recipient that changed, with who and why,
//! and none for what changed nothing.

mod common;

use mxraft_queue::{AttemptOutcome, BulkAction, Event, EventKind, QueueCommand};

use common::*;

fn kinds(events: &[Event]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

#[test]
fn a_message_is_told_from_queued_through_claimed_to_each_recipients_result() {
    let mut q = Q::new();
    let out = q.apply(QueueCommand::Enqueue(enqueue(
        id(1),
        "s@sender.test",
        &[
            plain("a@example.test"),
            plain("b@example.test"),
            plain("c@example.test"),
        ],
    )));
    assert_eq!(kinds(&out.events), vec![EventKind::Queued]);
    let queued = &out.events[0];
    assert_eq!((queued.id, queued.node), (id(1), Some(1)));
    assert!(
        queued
            .detail
            .starts_with("from=<s@sender.test> rcpts=3 size=")
    );

    // A repeat of the same Enqueue changes nothing and tells nothing.
    let again = q.apply(QueueCommand::Enqueue(enqueue(id(1), "s@sender.test", &[])));
    assert!(again.events.is_empty());

    let (token, _) = q.claim(&[id(1)], 2, "example.test", T0);
    let claimed = &q.apply(QueueCommand::Renew {
        token,
        ids: vec![id(1)],
        at_ms: T0,
        lease_ms: MIN,
    });
    assert!(claimed.events.is_empty(), "a renewal is not an event");

    let out = q.apply(report(
        token,
        T0 + 1,
        vec![(
            id(1),
            vec![
                (0, delivered()),
                (
                    1,
                    AttemptOutcome::Deferred {
                        reply: "451 4.3.0 later".into(),
                    },
                ),
                (
                    2,
                    AttemptOutcome::Failed {
                        reply: "550 5.1.1 no such user".into(),
                    },
                ),
            ],
        )],
    ));
    assert_eq!(
        kinds(&out.events),
        vec![
            EventKind::Delivered,
            EventKind::Deferred,
            EventKind::Failed,
            EventKind::Bounced,
            EventKind::Queued
        ]
    );
    for (e, rcpt) in out.events[..3].iter().zip(["a", "b", "c"]) {
        assert_eq!(e.id, id(1));
        assert_eq!(e.node, Some(2), "the claim holder");
        assert_eq!(e.destination.as_deref(), Some("example.test"));
        assert_eq!(
            e.recipient.as_deref(),
            Some(format!("{rcpt}@example.test").as_str())
        );
    }
    assert_eq!(out.events[2].detail, "550 5.1.1 no such user");
    assert_eq!(out.events[3].recipient.as_deref(), Some("s@sender.test"));
    let dsn = out.events[3]
        .detail
        .strip_prefix("dsn=")
        .expect("the DSN's id");
    // The DSN enters the queue like any message, from no node.
    assert_eq!(out.events[4].id.to_string(), dsn);
    assert_eq!(out.events[4].node, None);
    assert!(out.events[4].detail.starts_with("from=<> rcpts=1 "));

    // The same report again carries a stale token: ignored, untold.
    let stale = q.apply(report(token, T0 + 2, vec![(id(1), vec![(1, delivered())])]));
    assert!(stale.events.is_empty());
}

#[test]
fn a_claim_tells_each_message_granted_and_its_holder() {
    let mut q = Q::new();
    q.enqueue(id(1), "s@sender.test", &[plain("a@example.test")]);
    q.enqueue(id(2), "s@sender.test", &[plain("b@other.test")]);
    let out = q.apply(QueueCommand::Claim {
        ids: vec![id(1), id(2)],
        node: 3,
        destination: "example.test".into(),
        at_ms: T0,
        lease_ms: MIN,
    });
    // id(2) has nothing for example.test: not granted, not told.
    assert_eq!(kinds(&out.events), vec![EventKind::Claimed]);
    let e = &out.events[0];
    assert_eq!((e.id, e.node), (id(1), Some(3)));
    assert_eq!(e.destination.as_deref(), Some("example.test"));
    assert_eq!(e.detail, format!("token={}", q.index));
}

#[test]
fn administrators_actions_and_expiry_are_told() {
    let mut q = Q::new();
    q.enqueue(id(1), "s@sender.test", &[plain("a@example.test")]);
    q.enqueue(id(2), "s@sender.test", &[plain("b@example.test")]);
    q.enqueue(id(3), "", &[plain("c@example.test")]);

    assert_eq!(
        kinds(&q.apply(QueueCommand::Hold { id: id(1) }).events),
        vec![EventKind::Held]
    );
    assert!(
        q.apply(QueueCommand::Hold { id: id(1) }).events.is_empty(),
        "already held"
    );
    let out = q.apply(QueueCommand::Resume {
        id: id(1),
        at_ms: T0,
    });
    assert_eq!(kinds(&out.events), vec![EventKind::Released]);

    let out = q.apply(QueueCommand::Expire {
        ids: vec![id(1)],
        at_ms: T0 + 5 * 24 * 60 * MIN,
        reporting_mta: "mx.backup.test".into(),
    });
    assert_eq!(
        kinds(&out.events),
        vec![
            EventKind::Expired,
            EventKind::Failed,
            EventKind::Bounced,
            EventKind::Queued
        ]
    );
    assert!(out.events[1].detail.starts_with("4.4.7 "));

    let out = q.apply(QueueCommand::Delete {
        id: id(2),
        at_ms: T0,
    });
    assert_eq!(kinds(&out.events), vec![EventKind::Deleted]);
    assert!(
        q.apply(QueueCommand::Delete {
            id: id(2),
            at_ms: T0
        })
        .events
        .is_empty()
    );

    // A bounce of a message with a null sender fails it without a DSN.
    let out = q.apply(QueueCommand::Bulk {
        action: BulkAction::Bounce,
        ids: vec![id(3)],
        at_ms: T0,
        reporting_mta: "mx.backup.test".into(),
    });
    assert_eq!(kinds(&out.events), vec![EventKind::Failed]);
}
