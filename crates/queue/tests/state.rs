//! The queue state machine: feed one command, assert the whole outcome.

use std::collections::HashMap;

use bytes::Bytes;
use mxraft_queue::caches::{GREYLIST_PER_NETWORK, RECENT_ID_TTL_MS};
use mxraft_queue::{
    AttemptOutcome, BodyError, Change, CommandResult, DSN_NODE, Enqueue, FlushTarget, MailParams,
    MessageId, MessageReport, Notify, QueueCommand, QueueState, RcptParams, RecipientState, Report,
    Ret,
};

const T0: u64 = 1_800_000_000_000;
const MIN: u64 = 60_000;

fn no_bodies(_: MessageId) -> Result<Option<Bytes>, BodyError> {
    Ok(None)
}

struct Q {
    state: QueueState,
    index: u64,
    bodies: HashMap<MessageId, Bytes>,
}

impl Q {
    fn new() -> Q {
        Q {
            state: QueueState::new(),
            index: 0,
            bodies: HashMap::new(),
        }
    }

    fn apply(&mut self, cmd: QueueCommand) -> mxraft_queue::Applied {
        self.index += 1;
        let bodies = self.bodies.clone();
        let lookup = move |id: MessageId| Ok(bodies.get(&id).cloned());
        let out = self
            .state
            .apply(self.index, cmd, &lookup)
            .expect("every body is readable");
        for c in &out.changes {
            if let Change::Inserted { id, body } = c {
                self.bodies.insert(*id, body.clone());
            }
        }
        out
    }

    fn enqueue(&mut self, id: MessageId, sender: &str, rcpts: &[(&str, RcptParams)]) {
        let out = self.apply(QueueCommand::Enqueue(enqueue(id, sender, rcpts)));
        assert_eq!(
            out.result,
            CommandResult::Enqueued {
                id,
                duplicate: false
            }
        );
    }

    fn claim(
        &mut self,
        ids: &[MessageId],
        node: u64,
        dest: &str,
        at: u64,
    ) -> (u64, Vec<MessageId>) {
        match self
            .apply(QueueCommand::Claim {
                ids: ids.to_vec(),
                node,
                destination: dest.into(),
                at_ms: at,
                lease_ms: MIN,
            })
            .result
        {
            CommandResult::Claimed { token, granted } => (token, granted),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn id(n: u64) -> MessageId {
    MessageId::new(T0, 1, n)
}

fn plain(addr: &str) -> (&str, RcptParams) {
    (addr, RcptParams::default())
}

fn enqueue(id: MessageId, sender: &str, rcpts: &[(&str, RcptParams)]) -> Enqueue {
    Enqueue {
        id,
        received_at_ms: T0,
        received_by: 1,
        sender: sender.into(),
        params: MailParams::default(),
        recipients: rcpts
            .iter()
            .map(|(a, p)| (a.to_string(), p.clone()))
            .collect(),
        trace_header: "Received: test\r\n".into(),
        body: Bytes::from_static(b"Subject: hello\r\nMessage-ID: <m1@sender.test>\r\n\r\nbody\r\n"),
    }
}

fn report(
    token: u64,
    at: u64,
    results: Vec<(MessageId, Vec<(u32, AttemptOutcome)>)>,
) -> QueueCommand {
    QueueCommand::Report(Report {
        token,
        at_ms: at,
        reporting_mta: "mx.backup.test".into(),
        messages: results
            .into_iter()
            .map(|(id, recipients)| MessageReport { id, recipients })
            .collect(),
    })
}

fn delivered() -> AttemptOutcome {
    AttemptOutcome::Delivered {
        reply: "250 2.0.0 ok".into(),
    }
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
            Change::Inserted { id, body } => Some((*id, body.clone())),
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
