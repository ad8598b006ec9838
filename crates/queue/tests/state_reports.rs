//! The queue state machine on delivery results: per-recipient reports, retries, expiry,
//! delay notices and the DSNs they send.

mod common;

use bytes::Bytes;
use mxraft_queue::{
    AttemptOutcome, BodyError, Change, CommandResult, DSN_NODE, MessageId, Notify, QueueCommand,
    QueueState, RcptParams, RecipientState, Ret,
};

use common::*;

#[test]
fn results_per_recipient_retry_deferred_ones_and_return_failures_to_the_sender() {
    let mut q = Q::new();
    q.enqueue(
        id(1),
        "alice@sender.test",
        &[
            plain("ok@example.test"),
            plain("later@example.test"),
            plain("gone@example.test"),
        ],
    );
    let (token, _) = q.claim(&[id(1)], 1, "example.test", T0);
    let at = T0 + 1000;
    let out = q.apply(report(
        token,
        at,
        vec![(
            id(1),
            vec![
                (0, delivered()),
                (
                    1,
                    AttemptOutcome::Deferred {
                        reply: "451 4.3.0 try later".into(),
                    },
                ),
                (
                    2,
                    AttemptOutcome::Failed {
                        reply: "550 5.1.1 <gone@example.test>: user unknown".into(),
                    },
                ),
            ],
        )],
    ));
    assert_eq!(out.result, CommandResult::Applied { changed: 1 });
    // DSN ids are derived from the log index of the entry that produced them.
    let dsn_id = MessageId::new(at, DSN_NODE, q.index << 16);
    assert_eq!(out.changes.len(), 2, "{:?}", out.changes);
    assert!(matches!(&out.changes[0], Change::Inserted { id, .. } if *id == dsn_id));
    assert_eq!(out.changes[1], Change::Updated(id(1)));

    let m = q.state.get(id(1)).expect("one recipient still pending");
    assert!(
        matches!(&m.recipients[0].state, RecipientState::Delivered { at_ms, reply } if *at_ms == at && reply == "250 2.0.0 ok")
    );
    assert!(m.recipients[1].is_pending());
    assert_eq!(m.recipients[1].attempts, 1);
    assert_eq!(
        m.recipients[1].next_attempt_ms,
        at + MIN,
        "first retry after one minute"
    );
    assert_eq!(
        m.recipients[1].last_error.as_deref(),
        Some("451 4.3.0 try later")
    );
    assert!(matches!(
        m.recipients[2].state,
        RecipientState::Failed { .. }
    ));
    assert!(m.claim.is_none());

    let dsn = q.state.get(dsn_id).expect("the DSN is queued");
    assert_eq!(dsn.sender, "", "DSNs have the null sender");
    assert_eq!(dsn.recipients.len(), 1);
    assert_eq!(dsn.recipients[0].address, "alice@sender.test");
    let body = String::from_utf8(q.bodies[&dsn_id].to_vec()).expect("utf-8");
    assert!(
        body.contains("Content-Type: multipart/report; report-type=delivery-status;"),
        "{body}"
    );
    assert!(
        body.contains("Reporting-MTA: dns; mx.backup.test\r\n"),
        "{body}"
    );
    assert!(
        body.contains(
            "Final-Recipient: rfc822; gone@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ),
        "{body}"
    );
    assert!(
        body.contains("Diagnostic-Code: smtp; 550 5.1.1 <gone@example.test>: user unknown\r\n"),
        "{body}"
    );
    assert!(
        !body.contains("Final-Recipient: rfc822; ok@example.test"),
        "only failures are reported"
    );
    assert!(
        body.contains(
            "Content-Type: text/rfc822-headers\r\n\r\nReceived: test\r\nSubject: hello\r\n"
        ),
        "{body}"
    );
    assert!(
        !body.contains("\r\nbody\r\n"),
        "without RET=FULL only the headers come back"
    );

    // Second attempt: the deferred recipient now fails; the DSN covers only it.
    let (token, granted) = q.claim(&[id(1)], 2, "example.test", at + MIN);
    assert_eq!(granted, vec![id(1)]);
    let out = q.apply(report(
        token,
        at + MIN + 5,
        vec![(
            id(1),
            vec![(
                1,
                AttemptOutcome::Failed {
                    reply: "554 5.7.1 no".into(),
                },
            )],
        )],
    ));
    assert!(q.state.get(id(1)).is_none(), "nothing pending: removed");
    let new_dsn = out
        .changes
        .iter()
        .find_map(|c| match c {
            Change::Inserted { id, body, .. } => Some((*id, body.clone())),
            _ => None,
        })
        .expect("second DSN");
    let text = String::from_utf8(new_dsn.1.to_vec()).expect("utf-8");
    assert!(text.contains("Final-Recipient: rfc822; later@example.test"));
    assert!(
        !text.contains("Final-Recipient: rfc822; gone@example.test"),
        "already reported"
    );
    assert_eq!(
        out.changes[out.changes.len() - 2..],
        [Change::Removed(id(1)), Change::RecentId(id(1))]
    );
}

#[test]
fn no_dsn_for_the_null_sender_or_notify_never() {
    let mut q = Q::new();
    q.enqueue(id(1), "", &[plain("gone@example.test")]);
    let never = RcptParams {
        notify: Some(Notify::NEVER),
        orcpt: None,
    };
    q.enqueue(id(2), "a@sender.test", &[("gone@example.test", never)]);
    let (token, granted) = q.claim(&[id(1), id(2)], 1, "example.test", T0);
    assert_eq!(granted.len(), 2);
    let fail = || AttemptOutcome::Failed {
        reply: "550 5.1.1 unknown".into(),
    };
    let out = q.apply(report(
        token,
        T0 + 1,
        vec![(id(1), vec![(0, fail())]), (id(2), vec![(0, fail())])],
    ));
    assert_eq!(
        out.changes,
        vec![
            Change::Removed(id(1)),
            Change::RecentId(id(1)),
            Change::Removed(id(2)),
            Change::RecentId(id(2))
        ]
    );
    assert!(q.state.is_empty());
}

#[test]
fn full_return_and_envelope_id_appear_in_the_dsn() {
    let mut q = Q::new();
    let mut e = enqueue(
        id(1),
        "a@sender.test",
        &[(
            "gone@example.test",
            RcptParams {
                notify: Some(Notify {
                    success: false,
                    failure: true,
                    delay: false,
                }),
                orcpt: Some("rfc822;orig@example.test".into()),
            },
        )],
    );
    e.params.ret = Some(Ret::Full);
    e.params.envid = Some("ENV123".into());
    q.apply(QueueCommand::Enqueue(e));
    let out = q.apply(QueueCommand::Bounce {
        id: id(1),
        at_ms: T0 + 5,
        reporting_mta: "mx.backup.test".into(),
    });
    assert_eq!(out.result, CommandResult::Applied { changed: 1 });
    let body = out
        .changes
        .iter()
        .find_map(|c| match c {
            Change::Inserted { body, .. } => Some(String::from_utf8(body.to_vec()).expect("utf-8")),
            _ => None,
        })
        .expect("DSN");
    assert!(body.contains("Original-Envelope-Id: ENV123\r\n"), "{body}");
    assert!(
        body.contains("Original-Recipient: rfc822;orig@example.test\r\n"),
        "{body}"
    );
    assert!(body.contains("Status: 5.0.0\r\n"), "{body}");
    assert!(
        body.contains("Content-Type: message/rfc822\r\n\r\nReceived: test\r\nSubject: hello\r\n"),
        "{body}"
    );
    assert!(body.contains("\r\nbody\r\n"), "RET=FULL returns the body");
    assert!(q.state.get(id(1)).is_none());
}

#[test]
fn expiry_fails_pending_recipients_and_a_delay_notice_is_sent_once() {
    let mut q = Q::new();
    q.enqueue(id(1), "a@sender.test", &[plain("u@example.test")]);
    let mta = "mx.backup.test".to_string();
    let first = q.apply(QueueCommand::DelayNotice {
        ids: vec![id(1)],
        at_ms: T0 + 1,
        reporting_mta: mta.clone(),
    });
    assert_eq!(first.result, CommandResult::Applied { changed: 1 });
    let delay_dsn = first.changes.iter().find_map(|c| match c {
        Change::Inserted { body, .. } => Some(String::from_utf8(body.to_vec()).expect("utf-8")),
        _ => None,
    });
    let delay_dsn = delay_dsn.expect("a delay DSN");
    assert!(
        delay_dsn.contains("Action: delayed\r\nStatus: 4.4.1\r\n"),
        "{delay_dsn}"
    );
    let second = q.apply(QueueCommand::DelayNotice {
        ids: vec![id(1)],
        at_ms: T0 + 2,
        reporting_mta: mta.clone(),
    });
    assert_eq!(second.result, CommandResult::Applied { changed: 0 });
    assert!(second.changes.is_empty(), "only one delay notice");

    let expired = q.apply(QueueCommand::Expire {
        ids: vec![id(1)],
        at_ms: T0 + 3,
        reporting_mta: mta,
    });
    assert_eq!(expired.result, CommandResult::Applied { changed: 1 });
    assert_eq!(expired.changes.last(), Some(&Change::RecentId(id(1))));
    let body = expired
        .changes
        .iter()
        .find_map(|c| match c {
            Change::Inserted { body, .. } => Some(String::from_utf8(body.to_vec()).expect("utf-8")),
            _ => None,
        })
        .expect("expiry DSN");
    assert!(
        body.contains("Action: failed\r\nStatus: 4.4.7\r\n"),
        "{body}"
    );
}

#[test]
fn an_unreadable_body_fails_the_apply_instead_of_rendering_another_dsn() {
    let mut state = QueueState::new();
    let ok = |_: MessageId| -> Result<Option<Bytes>, BodyError> { Ok(None) };
    state
        .apply(
            1,
            QueueCommand::Enqueue(enqueue(id(1), "a@sender.test", &[plain("u@example.test")])),
            &ok,
        )
        .expect("no body needed");
    let broken = |id: MessageId| -> Result<Option<Bytes>, BodyError> {
        Err(BodyError {
            id,
            reason: "I/O error".into(),
        })
    };
    let err = state
        .apply(
            2,
            QueueCommand::Bounce {
                id: id(1),
                at_ms: T0 + 1,
                reporting_mta: "mx.backup.test".into(),
            },
            &broken,
        )
        .expect_err("the DSN needs the body");
    assert_eq!(err.id, id(1));
}
