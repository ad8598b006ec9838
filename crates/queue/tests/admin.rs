//! What an administrator does to many messages at once: filters, the queue's shape, bulk
//! actions committed as one command, and suspended destinations.

mod common;

use mxraft_queue::filter::{SHAPE_BUCKETS_MINUTES, shape};
use mxraft_queue::{
    AddressPattern, AttemptOutcome, BulkAction, Change, CommandResult, MessageFilter, MessageState,
    QueueCommand,
};

use common::*;

/// Five messages: 1 from a@sender.test to u@example.test, 2 from <> to v@example.test,
/// 3 from B@Sender.test to w@other.test and x@example.test, 4 (deferred) from c@else.test to
/// y@other.test, 5 (held) from a@sender.test to z@third.test.
fn five() -> Q {
    let mut q = Q::new();
    q.enqueue(id(1), "a@sender.test", &[plain("u@example.test")]);
    q.enqueue(id(2), "", &[plain("v@example.test")]);
    q.enqueue(
        id(3),
        "B@Sender.test",
        &[plain("w@other.test"), plain("x@example.test")],
    );
    q.enqueue(id(4), "c@else.test", &[plain("y@other.test")]);
    q.enqueue(id(5), "a@sender.test", &[plain("z@third.test")]);
    let (token, _) = q.claim(&[id(4)], 1, "other.test", T0);
    q.apply(report(
        token,
        T0 + 1,
        vec![(
            id(4),
            vec![(
                0,
                AttemptOutcome::Deferred {
                    reply: "451 later".into(),
                },
            )],
        )],
    ));
    q.apply(QueueCommand::Hold { id: id(5) });
    q
}

fn matching(q: &Q, filter: &MessageFilter, now: u64) -> Vec<u64> {
    q.state
        .iter_from(None)
        .filter(|m| filter.matches(m, now))
        .map(|m| seq(m.id))
        .collect()
}

/// The sequence number of an id made by [`id`].
fn seq(id: mxraft_queue::MessageId) -> u64 {
    let key = id.to_key();
    u64::from_be_bytes(key[8..].try_into().expect("8 bytes"))
}

#[test]
fn address_patterns_parse_and_refuse_what_is_not_one() {
    assert_eq!(AddressPattern::parse("<>"), Ok(AddressPattern::Null));
    assert_eq!(
        AddressPattern::parse("@Example.TEST."),
        Ok(AddressPattern::Domain("example.test".into()))
    );
    assert_eq!(
        AddressPattern::parse("example.test"),
        Ok(AddressPattern::Domain("example.test".into()))
    );
    assert_eq!(
        AddressPattern::parse("<Bob@Example.test>"),
        Ok(AddressPattern::Address("bob@example.test".into()))
    );
    for bad in ["", "@", "bob@", "<>x@"] {
        assert!(AddressPattern::parse(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(MessageState::parse("Deferred"), Ok(MessageState::Deferred));
    assert!(MessageState::parse("frozen").is_err());
}

#[test]
fn filters_match_sender_recipient_destination_state_and_age() {
    let q = five();
    let now = T0 + 10;
    let all = MessageFilter::default();
    assert_eq!(matching(&q, &all, now), vec![1, 2, 3, 4, 5]);
    let f = |f: MessageFilter| matching(&q, &f, now);
    let pattern = |t: &str| Some(AddressPattern::parse(t).expect("a pattern"));
    assert_eq!(
        f(MessageFilter {
            sender: pattern("@sender.test"),
            ..all.clone()
        }),
        vec![1, 3, 5]
    );
    assert_eq!(
        f(MessageFilter {
            sender: pattern("b@sender.TEST"),
            ..all.clone()
        }),
        vec![3],
        "addresses compare without case"
    );
    assert_eq!(
        f(MessageFilter {
            sender: pattern("<>"),
            ..all.clone()
        }),
        vec![2]
    );
    assert_eq!(
        f(MessageFilter {
            recipient: pattern("@example.test"),
            ..all.clone()
        }),
        vec![1, 2, 3]
    );
    assert_eq!(
        f(MessageFilter {
            destination: Some("other.test".into()),
            ..all.clone()
        }),
        vec![3, 4]
    );
    assert_eq!(
        f(MessageFilter {
            state: Some(MessageState::Deferred),
            ..all.clone()
        }),
        vec![4]
    );
    assert_eq!(
        f(MessageFilter {
            state: Some(MessageState::Held),
            ..all.clone()
        }),
        vec![5]
    );
    assert_eq!(
        f(MessageFilter {
            sender: pattern("@sender.test"),
            state: Some(MessageState::Queued),
            ..all.clone()
        }),
        vec![1, 3],
        "conditions combine"
    );
    assert_eq!(
        f(MessageFilter {
            received_before_ms: Some(T0),
            ..all.clone()
        }),
        Vec::<u64>::new()
    );
    assert_eq!(
        f(MessageFilter {
            received_before_ms: Some(T0 + 1),
            ..all
        }),
        vec![1, 2, 3, 4, 5]
    );
    // A live claim makes a message active.
    let mut q = five();
    q.claim(&[id(1)], 2, "example.test", T0 + 5);
    let active = MessageFilter {
        state: Some(MessageState::Active),
        ..MessageFilter::default()
    };
    assert_eq!(matching(&q, &active, T0 + 6), vec![1]);
    assert_eq!(
        matching(&q, &active, T0 + 5 + MIN),
        Vec::<u64>::new(),
        "not once the lease is over"
    );
}

#[test]
fn the_shape_counts_messages_per_destination_and_age_bucket() {
    let mut q = Q::new();
    let ages_min = [0u64, 4, 5, 30, 2000];
    for (n, age) in ages_min.iter().enumerate() {
        let mut e = enqueue(
            id(n as u64 + 1),
            "a@sender.test",
            &[plain("u@example.test")],
        );
        e.received_at_ms = T0 - age * MIN;
        q.apply(QueueCommand::Enqueue(e));
    }
    q.enqueue(
        id(10),
        "a@sender.test",
        &[
            plain("a@other.test"),
            plain("b@other.test"),
            plain("c@example.test"),
        ],
    );
    let rows = shape(&q.state, &MessageFilter::default(), T0);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].destination.as_str(), rows[0].total),
        ("example.test", 6)
    );
    // < 5 min: ages 0, 4 and message 10; 5–10: age 5; 20–40: age 30; over 1280: age 2000.
    let mut want = [0u64; SHAPE_BUCKETS_MINUTES.len() + 1];
    want[0] = 3;
    want[1] = 1;
    want[3] = 1;
    want[SHAPE_BUCKETS_MINUTES.len()] = 1;
    assert_eq!(rows[0].counts, want);
    assert_eq!(
        (rows[1].destination.as_str(), rows[1].total),
        ("other.test", 1),
        "one message, counted once per destination"
    );
}

#[test]
fn bulk_actions_apply_to_every_named_message_and_skip_the_missing() {
    let mut q = five();
    let bulk = |action, ids: Vec<u64>| QueueCommand::Bulk {
        action,
        ids: ids.into_iter().map(id).collect(),
        at_ms: T0 + 100,
        reporting_mta: "mx.backup.test".into(),
    };
    let out = q.apply(bulk(BulkAction::Hold, vec![1, 2, 5, 99]));
    assert_eq!(
        out.result,
        CommandResult::Applied { changed: 2 },
        "5 was held already, 99 does not exist"
    );
    assert!(q.state.get(id(1)).expect("queued").held);
    assert!(q.state.due_messages("example.test", T0 + 100, 10).len() == 1);

    let out = q.apply(bulk(BulkAction::Release, vec![1, 2, 5]));
    assert_eq!(out.result, CommandResult::Applied { changed: 3 });
    assert!(!q.state.get(id(5)).expect("queued").held);

    let out = q.apply(bulk(BulkAction::Flush, vec![4]));
    assert_eq!(out.result, CommandResult::Applied { changed: 1 });
    assert_eq!(
        q.state.due_messages("other.test", T0 + 100, 10),
        vec![id(3), id(4)],
        "the deferred message is due now"
    );

    let out = q.apply(bulk(BulkAction::Delete, vec![2, 99]));
    assert_eq!(out.result, CommandResult::Applied { changed: 1 });
    assert!(out.changes.contains(&Change::Removed(id(2))));
    assert!(q.state.get(id(2)).is_none());

    let before = q.state.len();
    let out = q.apply(bulk(BulkAction::Bounce, vec![1, 3]));
    assert_eq!(out.result, CommandResult::Applied { changed: 2 });
    assert!(q.state.get(id(1)).is_none() && q.state.get(id(3)).is_none());
    // Both senders get a DSN: two messages out, two in.
    assert_eq!(q.state.len(), before);
}

#[test]
fn a_suspension_is_stored_and_survives_a_reload() {
    let mut q = five();
    let out = q.apply(QueueCommand::Suspend {
        destination: "example.test".into(),
        suspended: true,
        at_ms: T0 + 7,
    });
    assert_eq!(out.changes, vec![Change::Suspension("example.test".into())]);
    let mut reloaded = mxraft_queue::QueueState::new();
    for m in q.state.iter_from(None) {
        reloaded.insert_loaded(m.clone());
    }
    for (name, d) in q.state.destinations() {
        reloaded.set_destination_loaded(name.clone(), d.clone());
    }
    for (name, at) in q.state.suspensions() {
        reloaded.set_suspended_loaded(name.clone(), *at);
    }
    assert_eq!(reloaded.suspended_since("example.test"), Some(T0 + 7));
    assert_eq!(reloaded.suspensions(), q.state.suspensions());
    let out = q.apply(QueueCommand::Suspend {
        destination: "example.test".into(),
        suspended: false,
        at_ms: T0 + 8,
    });
    assert_eq!(out.result, CommandResult::Applied { changed: 1 });
    assert!(q.state.suspensions().is_empty());
}

#[test]
fn a_stopping_node_is_recorded_once_and_withdrawn() {
    let mut q = five();
    let stop = |stopping, at_ms| QueueCommand::NodeStopping {
        node: 2,
        stopping,
        at_ms,
    };
    let out = q.apply(stop(true, T0 + 1));
    assert_eq!(out.result, CommandResult::Applied { changed: 1 });
    assert_eq!(out.changes, vec![Change::NodeStopping(2)]);
    assert_eq!(q.state.stopping_since(2), Some(T0 + 1));

    // Announced twice (a retry after a timeout): nothing changes, the first time stays.
    let out = q.apply(stop(true, T0 + 2));
    assert_eq!(out.result, CommandResult::Applied { changed: 0 });
    assert!(out.changes.is_empty());
    assert_eq!(q.state.stopping_since(2), Some(T0 + 1));
    assert_eq!(
        q.state.stopping_nodes().keys().copied().collect::<Vec<_>>(),
        vec![2]
    );

    let out = q.apply(stop(false, T0 + 3));
    assert_eq!(out.changes, vec![Change::NodeStopping(2)]);
    assert_eq!(q.state.stopping_since(2), None);
    let out = q.apply(stop(false, T0 + 4));
    assert_eq!(out.result, CommandResult::Applied { changed: 0 });
    assert!(q.state.stopping_nodes().is_empty());
}
