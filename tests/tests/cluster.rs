//! In-process three-node clusters on port 0: acceptance through every node, leader loss,
//! restart from disk, catch-up through a snapshot, and loss of quorum.

use std::collections::BTreeSet;
use std::time::Duration;

use mxraft_proto::admin::{QueueShowRequest, ReadConsistency};
use mxraft_queue::{CommandResult, Enqueue, MailParams, MessageId, QueueCommand};
use mxraft_tests::smtp::{queued_id, send_one};
use mxraft_tests::{ClusterOptions, TestCluster, admin, phase, queue_ids, wait_for};

fn body(n: usize) -> Vec<u8> {
    format!("Subject: message {n}\r\nMessage-Id: <{n}@client.test>\r\n\r\nline one\r\n.starts with a dot\r\n").into_bytes()
}

/// Sends `count` messages through node `id` and returns their queue ids.
async fn send_through(
    cluster: &TestCluster,
    id: u64,
    count: usize,
    offset: usize,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..count {
        let reply = send_one(
            cluster.smtp_addr(id),
            "sender@client.test",
            &["user@example.test"],
            &body(offset + i),
        )
        .await?;
        let qid = queued_id(&reply)
            .ok_or_else(|| anyhow::anyhow!("node {id} refused message: {reply:?}"))?;
        assert!(
            reply.text().starts_with("2.0.0 Ok: queued as "),
            "{reply:?}"
        );
        ids.push(qid);
    }
    Ok(ids)
}

async fn assert_queue_on(
    cluster: &TestCluster,
    id: u64,
    expected: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let listed = queue_ids(cluster.admin_addr(id), ReadConsistency::Linearizable).await?;
    let listed: BTreeSet<String> = listed.into_iter().collect();
    assert_eq!(&listed, expected, "queue on node {id}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_accepts_and_leader_loss_loses_nothing() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await?;

    phase("mail through every node");
    let mut all = BTreeSet::new();
    for id in 1..=3 {
        all.extend(send_through(&cluster, id, 5, id as usize * 100).await?);
    }
    assert_eq!(all.len(), 15, "queue ids are unique");
    for id in 1..=3 {
        assert_queue_on(&cluster, id, &all).await?;
    }

    phase("the stored message is the one sent, with our trace header in front");
    let first = all.iter().next().cloned().unwrap_or_default();
    let shown = admin(cluster.admin_addr(2))
        .await?
        .queue_show(QueueShowRequest {
            id: first.clone(),
            include_body: true,
            consistency: ReadConsistency::Linearizable as i32,
        })
        .await?
        .into_inner();
    let full = String::from_utf8(shown.body.unwrap_or_default().to_vec())?;
    assert!(
        full.starts_with("Received: from client.test ([127.0.0.1])\r\n\tby node"),
        "{full}"
    );
    assert!(full.contains(&format!("id {first}")), "{full}");
    assert!(
        full.ends_with("\r\nline one\r\n.starts with a dot\r\n"),
        "{full}"
    );

    phase("kill the leader");
    let old_leader = cluster.wait_for_leader().await?;
    cluster.kill(old_leader).await?;
    let new_leader = cluster.wait_for_leader().await?;
    assert_ne!(new_leader, old_leader);
    for id in cluster.running() {
        assert_queue_on(&cluster, id, &all).await?;
    }

    phase("new mail is accepted by both survivors");
    for id in cluster.running() {
        all.extend(send_through(&cluster, id, 3, 1000 + id as usize * 10).await?);
    }
    for id in cluster.running() {
        assert_queue_on(&cluster, id, &all).await?;
    }

    phase("the killed node restarts from its disk and catches up");
    cluster.restart(old_leader).await?;
    cluster.wait_for_convergence().await?;
    assert_queue_on(&cluster, old_leader, &all).await?;
    let local: BTreeSet<String> = queue_ids(cluster.admin_addr(old_leader), ReadConsistency::Local)
        .await?
        .into_iter()
        .collect();
    assert_eq!(local, all, "restarted node's own copy");

    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_missed_many_entries_catches_up_through_a_snapshot() -> anyhow::Result<()> {
    let opts = ClusterOptions {
        snapshot_after_entries: 20,
        log_entries_kept: 2,
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await?;
    let lagging = (1..=3).find(|id| *id != leader).unwrap_or(3);

    phase("stop a follower, then queue many messages without it");
    let mut all: BTreeSet<String> = send_through(&cluster, leader, 3, 0)
        .await?
        .into_iter()
        .collect();
    cluster.wait_for_convergence().await?;
    cluster.kill(lagging).await?;
    all.extend(send_through(&cluster, leader, 60, 100).await?);

    phase("the leader snapshots and purges the entries the follower lacks");
    let purged = wait_for(
        "the leader to purge its log",
        Duration::from_secs(30),
        || async {
            let m = cluster.node(leader).node().metrics();
            m.purged.as_ref().map(|p| p.index).filter(|i| *i > 10)
        },
    )
    .await?;

    phase("restart the follower: it can only catch up by installing a snapshot");
    cluster.restart(lagging).await?;
    let installed = wait_for(
        "the follower to install a snapshot",
        Duration::from_secs(60),
        || async {
            let m = cluster.node(lagging).node().metrics();
            m.snapshot
                .as_ref()
                .map(|s| s.index)
                .filter(|i| *i >= purged)
        },
    )
    .await?;
    assert!(installed >= purged);
    cluster.wait_for_convergence().await?;
    let local: BTreeSet<String> = queue_ids(cluster.admin_addr(lagging), ReadConsistency::Local)
        .await?
        .into_iter()
        .collect();
    assert_eq!(local, all, "the follower's queue after the snapshot");

    phase("the installed snapshot is what the follower restarts from");
    cluster.kill(lagging).await?;
    cluster.restart(lagging).await?;
    let local: BTreeSet<String> = queue_ids(cluster.admin_addr(lagging), ReadConsistency::Local)
        .await?
        .into_iter()
        .collect();
    assert_eq!(local, all, "the follower's queue after a restart");

    phase("after the install the follower keeps replicating normally");
    all.extend(send_through(&cluster, lagging, 3, 900).await?);
    cluster.wait_for_convergence().await?;
    for id in 1..=3 {
        assert_queue_on(&cluster, id, &all).await?;
    }
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_end_of_data_gets_451_and_nothing_is_half_queued() -> anyhow::Result<()> {
    let opts = ClusterOptions {
        commit_timeout: Duration::from_secs(3),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start(3, opts).await?;
    let mut before: BTreeSet<String> = send_through(&cluster, 1, 2, 0).await?.into_iter().collect();
    cluster.wait_for_convergence().await?;

    for survivor in [cluster.wait_for_leader().await?, 0] {
        // First with the leader surviving (it loses its quorum), then with a follower surviving
        // (no leader at all).
        let survivor = if survivor == 0 {
            let leader = cluster.wait_for_leader().await?;
            (1..=3).find(|id| *id != leader).unwrap_or(1)
        } else {
            survivor
        };
        phase(&format!("two nodes down, node {survivor} left alone"));
        for id in 1..=3 {
            if id != survivor {
                cluster.kill(id).await?;
            }
        }
        let mut c = mxraft_tests::smtp::Client::connect(cluster.smtp_addr(survivor)).await?;
        assert_eq!(c.command("EHLO client.test").await?.code, 250);
        let reply = c
            .send_mail("sender@client.test", &["user@example.test"], &body(77))
            .await?;
        assert_eq!(reply.code, 451, "{reply:?}");
        assert!(reply.text().starts_with("4.3.0 "), "{reply:?}");
        // The session goes on: the client may retry later on the same connection.
        assert_eq!(c.command("NOOP").await?.code, 250);

        let local: BTreeSet<String> =
            queue_ids(cluster.admin_addr(survivor), ReadConsistency::Local)
                .await?
                .into_iter()
                .collect();
        assert_eq!(local, before, "nothing new was applied without a quorum");
        let linearizable =
            queue_ids(cluster.admin_addr(survivor), ReadConsistency::Linearizable).await;
        assert!(linearizable.is_err(), "a linearizable read needs a quorum");

        phase("the nodes come back: the queue holds only whole messages");
        for id in 1..=3 {
            if id != survivor {
                cluster.restart(id).await?;
            }
        }
        cluster.wait_for_convergence().await?;
        let mut client = admin(cluster.admin_addr(survivor)).await?;
        let after = queue_ids(cluster.admin_addr(survivor), ReadConsistency::Linearizable).await?;
        for id in &after {
            let shown = client
                .queue_show(QueueShowRequest {
                    id: id.clone(),
                    include_body: true,
                    consistency: ReadConsistency::Linearizable as i32,
                })
                .await?
                .into_inner();
            let message = shown.message.unwrap_or_default();
            let full = shown.body.unwrap_or_default();
            assert_eq!(message.size, full.len() as u64, "message {id} is whole");
            assert!(
                full.ends_with(b"\r\nline one\r\n.starts with a dot\r\n"),
                "message {id} is whole"
            );
        }
        // The message answered 451 may still have committed once the quorum was back (its
        // entry was in the lone leader's log): the next round starts from what is queued now.
        before = after.into_iter().collect();
    }

    phase("with the quorum back, mail is accepted again");
    send_through(&cluster, 2, 1, 500).await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_enqueue_is_applied_once() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3, ClusterOptions::default()).await?;
    let leader = cluster.wait_for_leader().await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap_or(1);
    let id = MessageId::new(1_800_000_000_000, follower, 1);
    let cmd = QueueCommand::Enqueue(Enqueue {
        id,
        received_at_ms: 1_800_000_000_000,
        received_by: follower,
        sender: "a@client.test".into(),
        params: MailParams::default(),
        recipients: vec![(
            "user@example.test".into(),
            mxraft_queue::RcptParams::default(),
        )],
        trace_header: "Received: test\r\n".into(),
        body: bytes::Bytes::from_static(b"Subject: x\r\n\r\nx\r\n"),
    });
    phase("the same command proposed twice through a follower (forwarded) and once on the leader");
    let first = cluster.node(follower).node().propose(cmd.clone()).await?;
    let second = cluster.node(follower).node().propose(cmd.clone()).await?;
    let third = cluster.node(leader).node().propose(cmd).await?;
    assert_eq!(
        first,
        CommandResult::Enqueued {
            id,
            duplicate: false
        }
    );
    assert_eq!(
        second,
        CommandResult::Enqueued {
            id,
            duplicate: true
        }
    );
    assert_eq!(
        third,
        CommandResult::Enqueued {
            id,
            duplicate: true
        }
    );
    let listed = queue_ids(cluster.admin_addr(follower), ReadConsistency::Linearizable).await?;
    assert_eq!(listed, vec![id.to_string()]);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_through_the_admin_api() -> anyhow::Result<()> {
    use mxraft_proto::admin::{ClusterJoinRequest, ClusterRemoveRequest, ClusterStatusRequest};
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await?;
    let mut client = admin(cluster.admin_addr(1)).await?;

    phase("a node whose disk was wiped may not rejoin under its old id");
    let two = cluster.node(2).node().info().clone();
    let refused = client
        .cluster_join(ClusterJoinRequest {
            node_id: 2,
            cluster_addr: two.cluster_addr.clone(),
            smtp_addr: two.smtp_addr.clone(),
            admin_addr: two.admin_addr.clone(),
            pristine: true,
        })
        .await
        .expect_err("id reuse refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains("must not rejoin under its old id"),
        "{refused:?}"
    );

    phase("an id already taken at other addresses is refused");
    let taken = client
        .cluster_join(ClusterJoinRequest {
            node_id: 2,
            cluster_addr: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .expect_err("address conflict refused");
    assert_eq!(taken.code(), tonic::Code::FailedPrecondition);

    phase("removing a member through a follower");
    let leader = cluster.wait_for_leader().await?;
    let victim = (1..=3).find(|id| *id != leader).unwrap_or(3);
    let via = (1..=3)
        .find(|id| *id != leader && *id != victim)
        .unwrap_or(leader);
    admin(cluster.admin_addr(via))
        .await?
        .cluster_remove(ClusterRemoveRequest { node_id: victim })
        .await?;
    let remaining: BTreeSet<u64> = (1..=3).filter(|id| *id != victim).collect();
    cluster.wait_for_voters(&remaining).await?;
    let status = admin(cluster.admin_addr(leader))
        .await?
        .cluster_status(ClusterStatusRequest {})
        .await?
        .into_inner();
    let members: BTreeSet<u64> = status.members.iter().map(|m| m.id).collect();
    assert_eq!(members, remaining);
    let missing = client
        .cluster_remove(ClusterRemoveRequest { node_id: 42 })
        .await
        .expect_err("not a member");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let leader = cluster.wait_for_leader().await?;
    let follower = remaining
        .iter()
        .copied()
        .find(|id| *id != leader)
        .unwrap_or(via);
    let forwarded = admin(cluster.admin_addr(follower))
        .await?
        .cluster_remove(ClusterRemoveRequest { node_id: 42 })
        .await
        .expect_err("not a member, through a follower");
    assert_eq!(
        forwarded.code(),
        tonic::Code::NotFound,
        "a forwarded removal answers like a direct one: {forwarded:?}"
    );

    phase("the removed node is stopped; mail still flows with two voters");
    cluster.kill(victim).await?;
    send_through(&cluster, via, 2, 0).await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_hands_over_before_it_stops() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await?;
    let leader = cluster.wait_for_leader().await?;
    let mut all: BTreeSet<String> = send_through(&cluster, leader, 3, 5000)
        .await?
        .into_iter()
        .collect();

    phase("a follower has nothing to hand over");
    let follower = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap_or(1);
    let term = cluster.node(leader).node().metrics().current_term;
    assert_eq!(
        cluster
            .node(follower)
            .node()
            .hand_over_leadership(Duration::from_secs(3))
            .await,
        None
    );
    assert_eq!(cluster.node(leader).node().metrics().current_term, term);

    phase("the leader, still running and sending heartbeats, hands over to a voter");
    // No election timeout can pass while the leader heartbeats: a change now is the handover.
    let new = cluster
        .node(leader)
        .node()
        .hand_over_leadership(Duration::from_secs(3))
        .await
        .expect("the leadership moved");
    assert_ne!(new, leader);
    let old_view = cluster.node(leader).node().metrics();
    assert_eq!(old_view.current_leader, Some(new));
    assert_ne!(old_view.state, openraft::ServerState::Leader);
    assert!(
        old_view.current_term > term,
        "a new term: {}",
        old_view.current_term
    );
    assert_eq!(cluster.wait_for_leader().await?, new);

    phase("the old leader still takes mail, through the new one; then it stops in order");
    all.extend(send_through(&cluster, leader, 3, 6000).await?);
    let term = cluster.node(new).node().metrics().current_term;
    cluster.stop(new).await?;
    // The stop returned after the handover: a survivor already leads, in the next term.
    let leading: Vec<u64> = cluster
        .running()
        .into_iter()
        .filter(|id| cluster.node(*id).node().metrics().state == openraft::ServerState::Leader)
        .collect();
    assert_eq!(
        leading.len(),
        1,
        "a survivor leads as soon as the stop returns"
    );
    assert_eq!(
        cluster.node(leading[0]).node().metrics().current_term,
        term + 1
    );
    for id in cluster.running() {
        all.extend(send_through(&cluster, id, 1, 7000 + id as usize).await?);
    }
    for id in cluster.running() {
        assert_queue_on(&cluster, id, &all).await?;
    }
    cluster.shutdown().await
}
