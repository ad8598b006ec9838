//! The queue state machine: feed one command, assert the whole outcome (enqueue, claims,
//! schedule, holds, caches, determinism; reports and DSNs are in `state_reports.rs`).

mod common;

use bytes::Bytes;
use mxraft_queue::caches::{GREYLIST_PER_NETWORK, RECENT_ID_TTL_MS};
use mxraft_queue::{
    AttemptOutcome, Change, CommandResult, FlushTarget, Message, MessageId, QueueCommand,
    QueueState,
};

use common::*;

#[test]
fn the_trace_header_is_stored_in_front_of_the_body_not_kept_in_memory() {
    let mut q = Q::new();
    let e = enqueue(id(1), "a@sender.test", &[plain("u@example.test")]);
    let (trace, body) = (e.trace_header.clone(), e.body.clone());
    let out = q.apply(QueueCommand::Enqueue(e));
    match &out.changes[..] {
        [
            Change::Inserted {
                id: i,
                trace_header,
                body: b,
            },
        ] => {
            assert_eq!(*i, id(1));
            assert_eq!(trace_header, &trace);
            assert_eq!(b, &body);
        }
        other => panic!("unexpected changes {other:?}"),
    }
    let m = q.state.get(id(1)).expect("queued").clone();
    assert_eq!(m.trace_header, "");
    assert_eq!(m.size(), (trace.len() + body.len()) as u64);
    assert_eq!(q.state.stats().bytes, m.size());
    // What the body store holds is already the message as delivered.
    let stored = Bytes::from([trace.as_bytes(), &body[..]].concat());
    assert_eq!(m.content(stored.clone()), stored);

    // A message stored by an earlier release keeps its trace header in its metadata and only
    // the body in the body store; its content is the same.
    let earlier = Message {
        trace_header: trace.clone(),
        body_size: body.len() as u64,
        ..m.clone()
    };
    assert_eq!(earlier.size(), m.size());
    assert_eq!(earlier.content(body.clone()), stored);
    let mut loaded = QueueState::new();
    loaded.insert_loaded(earlier);
    assert_eq!(loaded.stats().bytes, m.size());
}

#[test]
fn enqueue_makes_every_recipient_pending_and_due_at_once() {
    let mut q = Q::new();
    let out = q.apply(QueueCommand::Enqueue(enqueue(
        id(1),
        "a@sender.test",
        &[plain("u@example.test"), plain("v@example.org")],
    )));
    assert_eq!(
        out.result,
        CommandResult::Enqueued {
            id: id(1),
            duplicate: false
        }
    );
    assert_eq!(out.changes.len(), 1);
    assert!(matches!(&out.changes[0], Change::Inserted { id: i, .. } if *i == id(1)));
    let m = q.state.get(id(1)).expect("queued");
    assert!(
        m.recipients
            .iter()
            .all(|r| r.is_pending() && r.next_attempt_ms == T0 && r.attempts == 0)
    );
    assert_eq!(q.state.due_messages("example.test", T0, 10), vec![id(1)]);
    assert_eq!(q.state.due_messages("example.org", T0, 10), vec![id(1)]);
    assert_eq!(
        q.state.due_messages("example.test", T0 - 1, 10),
        Vec::<MessageId>::new()
    );

    let again = q.apply(QueueCommand::Enqueue(enqueue(
        id(1),
        "z@other.test",
        &[plain("z@example.test")],
    )));
    assert_eq!(
        again.result,
        CommandResult::Enqueued {
            id: id(1),
            duplicate: true
        }
    );
    assert!(again.changes.is_empty());
    assert_eq!(
        q.state.get(id(1)).expect("still queued").sender,
        "a@sender.test"
    );
}

#[test]
fn a_claim_is_exclusive_until_its_lease_expires_and_carries_the_log_index() {
    let mut q = Q::new();
    q.enqueue(id(1), "a@sender.test", &[plain("u@example.test")]);
    q.enqueue(id(2), "a@sender.test", &[plain("u@example.org")]);

    let (token, granted) = q.claim(&[id(1), id(2)], 2, "example.test", T0);
    assert_eq!(token, 3, "the token is the claim's log index");
    assert_eq!(
        granted,
        vec![id(1)],
        "message 2 has nothing for example.test"
    );
    let c = q
        .state
        .get(id(1))
        .and_then(|m| m.claim.clone())
        .expect("claimed");
    assert_eq!((c.node, c.token, c.lease_until_ms), (2, 3, T0 + MIN));
    assert!(
        q.state.due_messages("example.test", T0 + 1, 10).is_empty(),
        "claimed messages are not offered"
    );

    let (_, again) = q.claim(&[id(1)], 3, "example.test", T0 + MIN - 1);
    assert!(again.is_empty(), "no second claim while the lease runs");

    let renewed = q.apply(QueueCommand::Renew {
        token: 3,
        ids: vec![id(1)],
        at_ms: T0 + 30_000,
        lease_ms: MIN,
    });
    assert_eq!(
        renewed.result,
        CommandResult::Renewed {
            token: 3,
            held: vec![id(1)]
        }
    );
    let stale_renew = q.apply(QueueCommand::Renew {
        token: 99,
        ids: vec![id(1)],
        at_ms: T0 + 30_000,
        lease_ms: 10 * MIN,
    });
    assert_eq!(
        stale_renew.result,
        CommandResult::Renewed {
            token: 99,
            held: vec![]
        }
    );
    let (_, blocked) = q.claim(&[id(1)], 3, "example.test", T0 + MIN + 1);
    assert!(blocked.is_empty(), "the renewal moved the lease");

    let (token2, taken_over) = q.claim(&[id(1)], 3, "example.test", T0 + 30_000 + MIN + 1);
    assert_eq!(taken_over, vec![id(1)], "an expired claim is taken over");
    assert_eq!(q.state.claims().len(), 1);
    assert_eq!(q.state.claims()[0].token, token2);
    assert_eq!(q.state.claims()[0].node, 3);

    let stale = q.apply(report(
        token,
        T0 + 2 * MIN,
        vec![(id(1), vec![(0, delivered())])],
    ));
    assert_eq!(
        stale.result,
        CommandResult::Applied { changed: 0 },
        "a report under the old token is ignored"
    );
    assert!(stale.changes.is_empty());
    assert!(q.state.get(id(1)).expect("still queued").recipients[0].is_pending());

    let current = q.apply(report(
        token2,
        T0 + 2 * MIN,
        vec![(id(1), vec![(0, delivered())])],
    ));
    assert_eq!(current.result, CommandResult::Applied { changed: 1 });
    assert_eq!(
        current.changes,
        vec![Change::Removed(id(1)), Change::RecentId(id(1))],
        "all delivered: gone, no DSN, its id remembered"
    );
    assert!(q.state.get(id(1)).is_none());
    assert!(q.state.claims().is_empty());
}

#[test]
fn a_destination_coming_back_makes_its_mail_due_at_once() {
    let mut q = Q::new();
    q.enqueue(id(1), "a@sender.test", &[plain("u@example.test")]);
    let (token, _) = q.claim(&[id(1)], 1, "example.test", T0);
    q.apply(report(
        token,
        T0 + 10,
        vec![(
            id(1),
            vec![(
                0,
                AttemptOutcome::Deferred {
                    reply: "connection refused".into(),
                },
            )],
        )],
    ));
    let down = q.apply(QueueCommand::SetDestination {
        destination: "example.test".into(),
        up: false,
        at_ms: T0 + 11,
        probed: false,
        error: Some("connection refused".into()),
    });
    assert_eq!(
        down.changes,
        vec![Change::Destination("example.test".into())]
    );
    assert!(!q.state.destination_up("example.test"));
    assert_eq!(q.state.next_due("example.test"), Some(T0 + 10 + MIN));

    let up = q.apply(QueueCommand::SetDestination {
        destination: "example.test".into(),
        up: true,
        at_ms: T0 + 20,
        probed: true,
        error: None,
    });
    assert_eq!(up.result, CommandResult::Applied { changed: 1 });
    assert_eq!(
        up.changes,
        vec![
            Change::Destination("example.test".into()),
            Change::Updated(id(1))
        ]
    );
    let d = q.state.destination("example.test").expect("known");
    assert!(d.up);
    assert_eq!((d.since_ms, d.last_probe_ms), (T0 + 20, Some(T0 + 20)));
    assert_eq!(d.last_error.as_deref(), Some("connection refused"));
    assert_eq!(
        q.state.due_messages("example.test", T0 + 20, 10),
        vec![id(1)]
    );
}

#[test]
fn hold_release_and_flush() {
    let mut q = Q::new();
    q.enqueue(id(1), "a@sender.test", &[plain("u@example.test")]);
    q.apply(QueueCommand::Hold { id: id(1) });
    assert!(q.state.due_messages("example.test", T0, 10).is_empty());
    let (_, none) = q.claim(&[id(1)], 1, "example.test", T0);
    assert!(none.is_empty(), "held messages are not claimed");
    q.apply(QueueCommand::Resume {
        id: id(1),
        at_ms: T0 + 1,
    });
    assert_eq!(
        q.state.due_messages("example.test", T0 + 1, 10),
        vec![id(1)]
    );

    let (token, _) = q.claim(&[id(1)], 1, "example.test", T0 + 1);
    q.apply(report(
        token,
        T0 + 2,
        vec![(
            id(1),
            vec![(
                0,
                AttemptOutcome::Deferred {
                    reply: "451 later".into(),
                },
            )],
        )],
    ));
    q.apply(QueueCommand::SetDestination {
        destination: "example.test".into(),
        up: false,
        at_ms: T0 + 3,
        probed: false,
        error: None,
    });
    assert!(q.state.due_messages("example.test", T0 + 3, 10).is_empty());
    let out = q.apply(QueueCommand::Reschedule {
        target: FlushTarget::Destination("example.test".into()),
        at_ms: T0 + 4,
    });
    assert_eq!(out.result, CommandResult::Applied { changed: 1 });
    assert!(
        q.state.destination_up("example.test"),
        "a flush tries a down destination again"
    );
    assert_eq!(
        q.state.due_messages("example.test", T0 + 4, 10),
        vec![id(1)]
    );
}

#[test]
fn applying_the_same_log_gives_the_same_state() {
    let cmds = [
        QueueCommand::Enqueue(enqueue(
            id(1),
            "a@sender.test",
            &[plain("u@example.test"), plain("v@example.test")],
        )),
        QueueCommand::Enqueue(enqueue(id(2), "", &[plain("w@example.test")])),
        QueueCommand::Claim {
            ids: vec![id(1), id(2)],
            node: 2,
            destination: "example.test".into(),
            at_ms: T0,
            lease_ms: MIN,
        },
        report(
            3,
            T0 + 1,
            vec![(
                id(1),
                vec![
                    (0, delivered()),
                    (
                        1,
                        AttemptOutcome::Failed {
                            reply: "550 5.1.1 x".into(),
                        },
                    ),
                ],
            )],
        ),
        QueueCommand::Expire {
            ids: vec![id(2)],
            at_ms: T0 + 2,
            reporting_mta: "m".into(),
        },
    ];
    let run = || {
        let mut state = QueueState::new();
        let outcomes: Vec<_> = cmds
            .iter()
            .enumerate()
            .map(|(i, c)| state.apply(i as u64 + 1, c.clone(), &no_bodies))
            .collect();
        (state, outcomes)
    };
    let (a, oa) = run();
    let (b, ob) = run();
    assert_eq!(a, b);
    assert_eq!(oa, ob);
    assert_eq!(a.len(), 1, "only the DSN for message 1 remains");
}

#[test]
fn a_renewal_never_shortens_a_lease() {
    let mut q = Q::new();
    q.enqueue(id(1), "a@sender.test", &[plain("u@example.test")]);
    let (token, _) = q.claim(&[id(1)], 2, "example.test", T0 + 40_000);
    // A leader whose clock is 40 s behind the granting one renews.
    let out = q.apply(QueueCommand::Renew {
        token,
        ids: vec![id(1)],
        at_ms: T0,
        lease_ms: MIN,
    });
    assert_eq!(
        out.result,
        CommandResult::Renewed {
            token,
            held: vec![id(1)]
        }
    );
    assert!(out.changes.is_empty(), "nothing changed: {:?}", out.changes);
    let lease = q
        .state
        .get(id(1))
        .and_then(|m| m.claim.clone())
        .expect("claimed");
    assert_eq!(lease.lease_until_ms, T0 + 40_000 + MIN);
}

#[test]
fn a_repeated_enqueue_after_delivery_does_not_queue_the_message_again() {
    let mut q = Q::new();
    let e = enqueue(id(1), "a@sender.test", &[plain("u@example.test")]);
    q.enqueue(id(1), "a@sender.test", &[plain("u@example.test")]);
    let (token, _) = q.claim(&[id(1)], 2, "example.test", T0);
    q.apply(report(
        token,
        T0 + 1_000,
        vec![(id(1), vec![(0, delivered())])],
    ));
    assert!(q.state.get(id(1)).is_none(), "delivered and gone");
    assert_eq!(q.state.recently_removed(id(1)), Some(T0 + 1_000));

    // The retry of a forwarded proposal whose reply was lost.
    let retry = q.apply(QueueCommand::Enqueue(e.clone()));
    assert_eq!(
        retry.result,
        CommandResult::Enqueued {
            id: id(1),
            duplicate: true
        }
    );
    assert!(retry.changes.is_empty());
    assert!(q.state.is_empty());

    // Long after, the id is forgotten (another removal moves the clock of the cache).
    q.enqueue(id(2), "a@sender.test", &[plain("u@example.test")]);
    q.apply(QueueCommand::Delete {
        id: id(2),
        at_ms: T0 + 2_000 + RECENT_ID_TTL_MS,
    });
    assert_eq!(q.state.recently_removed(id(1)), None);
    assert_eq!(
        q.state.recently_removed(id(2)),
        Some(T0 + 2_000 + RECENT_ID_TTL_MS)
    );
}

#[test]
fn greylisting_triplets_are_bounded_per_client_network() {
    let mut q = Q::new();
    for i in 0..GREYLIST_PER_NETWORK {
        q.apply(QueueCommand::GreylistSeen {
            key: format!("198.51.100|s{i}@spam.test|u@example.test"),
            at_ms: T0 + i as u64,
        });
    }
    let other = "203.0.113|a@sender.test|u@example.test";
    q.apply(QueueCommand::GreylistSeen {
        key: other.into(),
        at_ms: T0,
    });
    let out = q.apply(QueueCommand::GreylistSeen {
        key: "198.51.100|new@spam.test|u@example.test".into(),
        at_ms: T0 + 1_000_000,
    });
    let oldest = "198.51.100|s0@spam.test|u@example.test".to_owned();
    assert_eq!(
        out.changes,
        vec![
            Change::Greylist("198.51.100|new@spam.test|u@example.test".into()),
            Change::Evicted {
                cache: "greylist",
                count: 1
            },
            Change::Greylist(oldest.clone()),
        ]
    );
    assert_eq!(q.state.greylisted(&oldest), None);
    assert_eq!(
        q.state.greylisted(other),
        Some(T0),
        "another network keeps its entry"
    );
    assert_eq!(q.state.cache_sizes().0, GREYLIST_PER_NETWORK + 1);
}

#[test]
fn hold_release_and_bounce_of_a_message_not_queued_say_so() {
    let mut q = Q::new();
    let missing = id(9);
    for cmd in [
        QueueCommand::Hold { id: missing },
        QueueCommand::Resume {
            id: missing,
            at_ms: T0,
        },
        QueueCommand::Bounce {
            id: missing,
            at_ms: T0,
            reporting_mta: "mx.backup.test".into(),
        },
    ] {
        let out = q.apply(cmd);
        assert_eq!(out.result, CommandResult::NotQueued { id: missing });
        assert!(out.changes.is_empty());
    }
    q.enqueue(id(1), "a@sender.test", &[plain("u@example.test")]);
    assert_eq!(
        q.apply(QueueCommand::Hold { id: id(1) }).result,
        CommandResult::Applied { changed: 1 }
    );
    assert_eq!(
        q.apply(QueueCommand::Hold { id: id(1) }).result,
        CommandResult::Applied { changed: 0 },
        "held already: queued, nothing changed"
    );
}
