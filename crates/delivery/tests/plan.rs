//! The leader's delivery planner: feed a queue and the leader's clock, assert the exact
//! commands it proposes.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use mxraft_delivery::plan::{self, PlanConfig, PlanMemory};
use mxraft_queue::{
    CommandResult, Enqueue, MailParams, MessageId, QueueCommand, QueueState, RcptParams,
};

const T0: u64 = 1_800_000_000_000;
const LEASE: u64 = 60_000;
const GRACE: u64 = 5_000;

fn config() -> PlanConfig {
    PlanConfig {
        connections_per_destination: 2,
        messages_per_connection: 3,
        claim_lease: Duration::from_millis(LEASE),
        lease_grace: Duration::from_millis(GRACE),
        probe_interval: Duration::from_secs(10),
        max_queue_lifetime: Duration::from_secs(3600),
        lifetimes: BTreeMap::from([("short.test".to_owned(), Duration::from_secs(600))]),
        delay_notice_after: Duration::from_secs(1800),
    }
}

struct Q {
    state: QueueState,
    index: u64,
}

impl Q {
    fn new() -> Q {
        Q {
            state: QueueState::new(),
            index: 0,
        }
    }

    fn apply(&mut self, cmd: QueueCommand) -> CommandResult {
        self.index += 1;
        self.state
            .apply(self.index, cmd, &|_| Ok(None))
            .expect("no body needed")
            .result
    }

    fn enqueue(&mut self, n: u64, rcpt: &str, at: u64) -> MessageId {
        let id = MessageId::new(at, 1, n);
        self.apply(QueueCommand::Enqueue(Enqueue {
            id,
            received_at_ms: at,
            received_by: 1,
            sender: "a@sender.test".into(),
            params: MailParams::default(),
            recipients: vec![(rcpt.into(), RcptParams::default())],
            trace_header: "Received: test\r\n".into(),
            body: Bytes::from_static(b"x\r\n"),
        }));
        id
    }

    fn up(&mut self, dest: &str, up: bool) {
        self.apply(QueueCommand::SetDestination {
            destination: dest.into(),
            up,
            at_ms: T0,
            probed: false,
            error: None,
        });
    }

    /// Applies the commands.
    fn grant(&mut self, cmds: Vec<QueueCommand>) {
        for c in cmds {
            self.apply(c);
        }
    }
}

fn claim(ids: &[MessageId], node: u64, dest: &str, at: u64) -> QueueCommand {
    QueueCommand::Claim {
        ids: ids.to_vec(),
        node,
        destination: dest.into(),
        at_ms: at,
        lease_ms: LEASE,
    }
}

#[test]
fn due_mail_is_granted_within_the_budget_and_spread_over_the_healthy_nodes() {
    let mut q = Q::new();
    let ids: Vec<MessageId> = (1..=8)
        .map(|n| q.enqueue(n, "u@example.test", T0))
        .collect();
    q.enqueue(20, "u@down.test", T0);
    q.up("example.test", true);
    q.up("down.test", false);
    let mut memory = PlanMemory::default();
    let now = T0 + 1;

    let cmds = plan::claims(&q.state, now, &config(), &[1, 3], &mut memory);
    // Budget: 2 connections of at most 3 messages; 8 due, so 6 now, oldest first, split evenly.
    assert_eq!(
        cmds,
        vec![
            claim(&ids[0..3], 1, "example.test", now),
            claim(&ids[3..6], 3, "example.test", now),
        ]
    );
    q.grant(cmds);

    // Both connections are in use: nothing more, though two messages are due.
    assert!(plan::claims(&q.state, now + 1, &config(), &[1, 3], &mut memory).is_empty());
}

#[test]
fn a_claimed_message_is_offered_again_only_after_its_lease_and_the_grace_in_the_leader_clock() {
    let mut q = Q::new();
    let id = q.enqueue(1, "u@example.test", T0);
    q.up("example.test", true);
    q.grant(vec![claim(&[id], 2, "example.test", T0)]);
    let mut memory = PlanMemory::default();

    for now in [T0 + 1, T0 + LEASE - 1, T0 + LEASE, T0 + LEASE + GRACE - 1] {
        assert!(
            plan::claims(&q.state, now, &config(), &[1, 2, 3], &mut memory).is_empty(),
            "re-granted at lease + {} ms",
            now as i64 - (T0 + LEASE) as i64
        );
    }
    // A renewal stamped by the leader at T0 + 30 s moves the lease on.
    q.apply(QueueCommand::Renew {
        token: 3,
        ids: vec![id],
        at_ms: T0 + 30_000,
        lease_ms: LEASE,
    });
    let lease_end = T0 + 30_000 + LEASE;
    assert!(
        plan::claims(
            &q.state,
            lease_end + GRACE - 1,
            &config(),
            &[1, 2, 3],
            &mut memory
        )
        .is_empty()
    );
    let now = lease_end + GRACE;
    let cmds = plan::claims(&q.state, now, &config(), &[1, 2, 3], &mut memory);
    assert_eq!(cmds, vec![claim(&[id], 1, "example.test", now)]);
}

#[test]
fn an_expired_claim_still_counts_against_the_budget_during_the_grace() {
    let mut q = Q::new();
    let a = q.enqueue(1, "u@example.test", T0);
    let b = q.enqueue(2, "u@example.test", T0);
    let c = q.enqueue(3, "u@example.test", T0);
    q.up("example.test", true);
    let one = PlanConfig {
        connections_per_destination: 1,
        ..config()
    };
    q.grant(vec![claim(&[a], 2, "example.test", T0)]);
    let mut memory = PlanMemory::default();
    // The lease ended but its holder may still be talking to the primary.
    assert!(plan::claims(&q.state, T0 + LEASE + 1, &one, &[1, 2], &mut memory).is_empty());
    let now = T0 + LEASE + GRACE;
    assert_eq!(
        plan::claims(&q.state, now, &one, &[1, 2], &mut memory),
        vec![claim(&[a, b, c], 1, "example.test", now)]
    );
}

#[test]
fn no_node_no_claim() {
    let mut q = Q::new();
    q.enqueue(1, "u@example.test", T0);
    q.up("example.test", true);
    assert!(plan::claims(&q.state, T0, &config(), &[], &mut PlanMemory::default()).is_empty());
}

#[test]
fn destinations_that_are_down_are_probed_once_per_interval() {
    let mut q = Q::new();
    q.enqueue(1, "u@down.test", T0);
    q.enqueue(2, "u@example.test", T0);
    q.up("down.test", false);
    q.up("example.test", true);
    let mut memory = PlanMemory::default();
    assert_eq!(
        plan::probes(&q.state, T0, &config(), &mut memory),
        vec!["down.test".to_owned()]
    );
    assert!(plan::probes(&q.state, T0 + 9_999, &config(), &mut memory).is_empty());
    assert_eq!(
        plan::probes(&q.state, T0 + 10_000, &config(), &mut memory),
        vec!["down.test".to_owned()]
    );
    q.up("down.test", true);
    assert!(plan::probes(&q.state, T0 + 30_000, &config(), &mut memory).is_empty());
    assert!(memory.probed_at.is_empty(), "forgotten once up");
}

#[test]
fn old_mail_expires_by_its_destination_lifetime_and_gets_one_delay_notice() {
    let mut q = Q::new();
    let short = q.enqueue(1, "u@short.test", T0);
    let long = q.enqueue(2, "u@example.test", T0);
    let claimed = q.enqueue(3, "u@example.test", T0);
    q.grant(vec![claim(&[claimed], 2, "example.test", T0 + 3_000_000)]);
    let mta = "mx.backup.test";

    // 20 min: the short-lived destination's mail expires; nothing is delayed yet.
    let now = T0 + 1_200_000;
    assert_eq!(
        plan::expiry(&q.state, now, &config(), mta),
        vec![QueueCommand::Expire {
            ids: vec![short],
            at_ms: now,
            reporting_mta: mta.into()
        }]
    );
    q.grant(plan::expiry(&q.state, now, &config(), mta));

    // 40 min: a delay notice for the unclaimed one; the claimed one is left to its holder.
    let now = T0 + 2_400_000;
    assert_eq!(
        plan::expiry(&q.state, now, &config(), mta),
        vec![QueueCommand::DelayNotice {
            ids: vec![long],
            at_ms: now,
            reporting_mta: mta.into()
        }]
    );
    q.grant(plan::expiry(&q.state, now, &config(), mta));
    assert!(
        plan::expiry(&q.state, now + 1, &config(), mta).is_empty(),
        "one notice only"
    );

    // An hour on, the claim's lease and grace long over: both expire.
    let now = T0 + 3_600_000;
    assert_eq!(
        plan::expiry(&q.state, now, &config(), mta),
        vec![QueueCommand::Expire {
            ids: vec![long, claimed],
            at_ms: now,
            reporting_mta: mta.into()
        }]
    );
}

#[test]
fn a_suspended_destination_gets_no_claim_no_probe_and_no_expiry_until_resumed() {
    let mut q = Q::new();
    let a = q.enqueue(1, "u@example.test", T0);
    let b = q.enqueue(2, "u@down.test", T0);
    let both = {
        let id = MessageId::new(T0, 1, 3);
        q.apply(QueueCommand::Enqueue(Enqueue {
            id,
            received_at_ms: T0,
            received_by: 1,
            sender: "a@sender.test".into(),
            params: MailParams::default(),
            recipients: vec![
                ("v@example.test".into(), RcptParams::default()),
                ("v@other.test".into(), RcptParams::default()),
            ],
            trace_header: "Received: test\r\n".into(),
            body: Bytes::from_static(b"x\r\n"),
        }));
        id
    };
    q.up("example.test", true);
    q.up("other.test", true);
    q.up("down.test", false);
    let suspend = |dest: &str, suspended: bool, at_ms: u64| QueueCommand::Suspend {
        destination: dest.into(),
        suspended,
        at_ms,
    };
    assert_eq!(
        q.apply(suspend("example.test", true, T0)),
        CommandResult::Applied { changed: 1 }
    );
    assert_eq!(
        q.apply(suspend("example.test", true, T0 + 1)),
        CommandResult::Applied { changed: 0 },
        "suspending twice changes nothing"
    );
    assert_eq!(q.state.suspended_since("example.test"), Some(T0));
    q.apply(suspend("down.test", true, T0));
    let mut memory = PlanMemory::default();

    // Only the destination that is not suspended is delivered to.
    let cmds = plan::claims(&q.state, T0 + 1, &config(), &[1], &mut memory);
    assert_eq!(cmds, vec![claim(&[both], 1, "other.test", T0 + 1)]);
    assert!(plan::probes(&q.state, T0 + 1, &config(), &mut memory).is_empty());

    // Past every lifetime: the suspended destinations' mail is kept; the message that also
    // waits for a destination that is not suspended expires as usual.
    let late = T0 + 7_200_000;
    assert_eq!(
        plan::expiry(&q.state, late, &config(), "mx.test"),
        vec![QueueCommand::Expire {
            ids: vec![both],
            at_ms: late,
            reporting_mta: "mx.test".into()
        }]
    );

    q.grant(plan::expiry(&q.state, late, &config(), "mx.test"));

    // Resumed: its mail is due at once and granted again.
    q.apply(suspend("example.test", false, late));
    assert_eq!(q.state.suspended_since("example.test"), None);
    let cmds = plan::claims(&q.state, late, &config(), &[1], &mut memory);
    assert!(
        cmds.contains(&claim(&[a], 1, "example.test", late)),
        "{cmds:?}"
    );
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, QueueCommand::Claim { ids, .. } if ids.contains(&b)))
    );
}
