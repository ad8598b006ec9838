//! One flusher per message under faults (G3): a delivering node cut off from the cluster but
//! not from the primary, clocks that disagree, a proposal repeated after its message was
//! delivered, and a shutdown while a delivery hangs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Instant as _;

use mxraft_proto::admin::ReadConsistency;
use mxraft_queue::{CommandResult, Enqueue, MailParams, MessageId, QueueCommand, RcptParams};
use mxraft_tests::fake_smtp::{FakeOptions, FakeSmtp};
use mxraft_tests::smtp::{queued_id, send_one};
use mxraft_tests::{ClusterOptions, TestCluster, phase, queue_ids, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn options(primary: SocketAddr, lease: &str, max_skew: &str) -> ClusterOptions {
    ClusterOptions {
        primary: primary.to_string(),
        cluster_extra: format!("clock_skew_warn = \"200ms\"\nmax_clock_skew = \"{max_skew}\""),
        extra: format!(
            r#"
            [delivery]
            probe_interval = "300ms"
            claim_lease = "{lease}"
            delay_notice_after = "0s"
            "#
        ),
        ..ClusterOptions::default()
    }
}

/// How many copies of each message the primary got, by the Message-ID header's number.
fn copies(primary: &FakeSmtp) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in primary.received() {
        let text = String::from_utf8_lossy(&r.data).into_owned();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap_or("?")
            .to_owned();
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

async fn send_numbered(cluster: &TestCluster, via: u64, n: usize) -> anyhow::Result<String> {
    let body = format!("Subject: {n}\r\nMessage-ID: <m{n}@sender.test>\r\n\r\nhello {n}\r\n");
    let r = send_one(
        cluster.smtp_addr(via),
        "alice@sender.test",
        &["user@example.test"],
        body.as_bytes(),
    )
    .await?;
    queued_id(&r).ok_or_else(|| anyhow::anyhow!("not queued through node {via}: {r:?}"))
}

/// The node holding a claim, as node `observer` sees the queue.
fn claim_holder(cluster: &TestCluster, observer: u64) -> Option<u64> {
    let sm = cluster.node(observer).node().state_machine();
    let live = sm.read();
    live.queue().claims().first().map(|c| c.node)
}

/// Asserts that the primary got each of the `sent` messages, and each once.
fn assert_one_copy_each(primary: &FakeSmtp, sent: usize) {
    let copies = copies(primary);
    assert_eq!(copies.len(), sent, "every message arrived: {copies:?}");
    assert!(
        copies.values().all(|&n| n == 1),
        "one copy of each: {copies:?}"
    );
}

/// A primary that accepts everything, taking 300 ms over the data of each of its first
/// `messages` messages, so that claims stay open for a while.
async fn slow_primary(messages: usize) -> anyhow::Result<FakeSmtp> {
    FakeSmtp::start_with(
        None,
        Arc::new(|_, _| 250),
        FakeOptions {
            data_delays: vec![Duration::from_millis(300); messages],
            ..FakeOptions::default()
        },
    )
    .await
}

/// A primary whose first DATA waits `stall` for its 354, a cluster with `lease` and
/// `max_skew`, and one message whose delivery hangs there; returns them and the holder.
async fn hanging_delivery(
    stall: Duration,
    lease: &str,
    max_skew: &str,
) -> anyhow::Result<(FakeSmtp, TestCluster, u64)> {
    let primary = FakeSmtp::start_with(
        None,
        Arc::new(|_, _| 250),
        FakeOptions {
            data_delays: vec![stall],
            ..FakeOptions::default()
        },
    )
    .await?;
    let cluster = TestCluster::start(3, options(primary.addr, lease, max_skew)).await?;
    phase("a message is claimed and its delivery hangs before the data");
    send_numbered(&cluster, 1, 1).await?;
    wait_for("the first DATA at the primary", WAIT, || async {
        primary
            .sessions()
            .first()
            .filter(|s| s.data_commands == 1)
            .map(|_| ())
    })
    .await?;
    let holder = wait_for("a claim holder", WAIT, || async {
        claim_holder(&cluster, 1)
    })
    .await?;
    Ok((primary, cluster, holder))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_from_the_cluster_stops_before_its_lease_ends() -> anyhow::Result<()> {
    // The first DATA waits 40 s for its 354: far longer than the 10 s lease. Without the lease
    // bound on every wait, the cut-off holder would get its 354 after 40 s, send the message
    // and get it accepted, while the next holder has already delivered it.
    let (primary, cluster, holder) = hanging_delivery(Duration::from_secs(40), "10s", "1s").await?;

    phase(&format!(
        "node {holder} loses the cluster but not the primary"
    ));
    let cut_at = Instant::now();
    cluster.node(holder).node().set_isolated(true);
    wait_for("the message delivered by another node", WAIT, || async {
        (primary.received().len() == 1).then_some(())
    })
    .await?;
    let sessions = primary.sessions();
    let first = &sessions[0];
    let closed = first
        .closed
        .ok_or_else(|| anyhow::anyhow!("the cut-off holder is still connected: {sessions:?}"))?;
    assert!(
        closed.duration_since(cut_at) < Duration::from_secs(10),
        "the holder hung up {:?} after losing the cluster: not within its 10 s lease",
        closed.duration_since(cut_at)
    );
    let second = sessions
        .iter()
        .skip(1)
        .find(|s| s.accepted == 1)
        .ok_or_else(|| anyhow::anyhow!("no session delivered it: {sessions:?}"))?;
    assert!(
        closed < second.opened,
        "the next holder connected before the cut-off one hung up"
    );
    assert_eq!(first.accepted, 0, "the cut-off holder delivered nothing");

    phase("the holder comes back; the message stays delivered once");
    cluster.node(holder).node().set_isolated(false);
    cluster.wait_until_empty(WAIT).await?;
    // The stalled session would have finished by now had it not been closed.
    wait_for("the stall of the first DATA to pass", WAIT, || async {
        (cut_at.elapsed() > Duration::from_secs(41)).then_some(())
    })
    .await?;
    assert_eq!(copies(&primary).into_values().collect::<Vec<_>>(), vec![1]);
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_is_off_by_45_seconds_never_delivers_twice() -> anyhow::Result<()> {
    // A slow primary keeps claims open for a while.
    let primary = slow_primary(40).await?;
    let cluster = TestCluster::start(3, options(primary.addr, "10s", "5s")).await?;
    let leader = cluster.wait_for_leader().await?;
    let skewed = (1..=3).find(|&n| n != leader).unwrap_or(2);
    let mut sent = 0;
    for offset in [-45_000i64, 45_000] {
        phase(&format!("node {skewed}'s clock is {offset} ms off"));
        cluster.node(skewed).node().clock().set_offset_ms(offset);
        let via = (1..=3).find(|&n| n != skewed).unwrap_or(1);
        for _ in 0..15 {
            sent += 1;
            send_numbered(&cluster, via, sent).await?;
        }
        // The skewed node's own front door cannot queue: the leader refuses its proposals.
        let body = b"Subject: skew\r\n\r\nx\r\n";
        let r = send_one(
            cluster.smtp_addr(skewed),
            "alice@sender.test",
            &["user@example.test"],
            body,
        )
        .await?;
        assert_eq!(
            r.code, 451,
            "a node with a wrong clock queues nothing: {r:?}"
        );
        cluster.wait_until_empty(WAIT).await?;
        let leader = cluster.wait_for_leader().await?;
        assert_eq!(
            cluster.node(leader).node().skewed_nodes(),
            vec![skewed],
            "the leader knows whose clock is off"
        );
    }
    assert_one_copy_each(&primary, sent);
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_clock_goes_off_still_reports_what_it_delivered() -> anyhow::Result<()> {
    // The leader refuses the proposals of a node whose clock is off, but not the results of
    // the claim it holds: refused, they would be delivered again once its lease ran out.
    let primary = slow_primary(60).await?;
    let cluster = TestCluster::start(3, options(primary.addr, "10s", "5s")).await?;
    let leader = cluster.wait_for_leader().await?;
    let sent = 30;
    for n in 1..=sent {
        send_numbered(&cluster, leader, n).await?;
    }
    let holder = wait_for("a follower holding a claim", WAIT, || async {
        let sm = cluster.node(leader).node().state_machine();
        let live = sm.read();
        live.queue()
            .claims()
            .iter()
            .map(|c| c.node)
            .find(|&n| n != leader)
    })
    .await?;
    phase(&format!(
        "node {holder}'s clock goes 45 s back while it delivers"
    ));
    cluster.node(holder).node().clock().set_offset_ms(-45_000);
    cluster.wait_until_empty(WAIT).await?;
    assert_eq!(
        cluster.node(leader).node().skewed_nodes(),
        vec![holder],
        "the leader saw the holder's clock off"
    );
    assert_one_copy_each(&primary, sent);
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_repeated_after_delivery_does_not_queue_the_message_again() -> anyhow::Result<()>
{
    let primary = FakeSmtp::accept_all().await?;
    let cluster = TestCluster::start(3, options(primary.addr, "10s", "5s")).await?;
    let leader = cluster.wait_for_leader().await?;
    let follower = (1..=3).find(|&n| n != leader).unwrap_or(2);
    let node = cluster.node(follower).node().clone();
    let now = mxraft_cluster::now_ms();
    let enqueue = QueueCommand::Enqueue(Enqueue {
        id: MessageId::new(now, follower, 1),
        received_at_ms: now,
        received_by: follower,
        sender: "alice@sender.test".into(),
        params: MailParams::default(),
        recipients: vec![("user@example.test".into(), RcptParams::default())],
        trace_header: "Received: test\r\n".into(),
        body: b"Subject: once\r\nMessage-ID: <once@sender.test>\r\n\r\nx\r\n"
            .to_vec()
            .into(),
    });

    phase("forwarded and committed; its reply is taken as lost");
    node.propose(enqueue.clone()).await?;
    wait_for("the delivery", WAIT, || async {
        (primary.received().len() == 1).then_some(())
    })
    .await?;
    cluster.wait_until_empty(WAIT).await?;

    phase("the forward's retry arrives after the message left the queue");
    let again = node.propose(enqueue).await?;
    assert!(
        matches!(
            again,
            CommandResult::Enqueued {
                duplicate: true,
                ..
            }
        ),
        "{again:?}"
    );
    assert!(
        queue_ids(cluster.admin_addr(leader), ReadConsistency::Linearizable)
            .await?
            .is_empty()
    );
    assert_eq!(primary.received().len(), 1);
    // This handle keeps the node's stores open.
    drop(node);
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_a_hanging_delivery_short_and_hands_the_claim_over() -> anyhow::Result<()> {
    // The first DATA hangs for two minutes; the lease is a minute.
    let (primary, mut cluster, holder) =
        hanging_delivery(Duration::from_secs(120), "60s", "5s").await?;

    // The holder follows a new leader that has heard from it: until the holder's Raft stops,
    // that leader counts it as healthy and could grant the released message straight back.
    let leader = cluster.wait_for_leader().await?;
    if leader == holder {
        let to = holder % 3 + 1;
        phase(&format!("leadership moves from the holder to node {to}"));
        let now = cluster
            .node(holder)
            .node()
            .transfer_leadership(Some(to), Duration::from_secs(10))
            .await?;
        assert_eq!(now, to);
    }
    wait_for("the holder heard from as a follower", WAIT, || async {
        let leader = cluster.wait_for_leader().await.ok()?;
        let m = cluster.node(leader).node().metrics();
        let heard = m.heartbeat.as_ref()?.get(&holder)?.as_ref()?;
        (heard.elapsed() < Duration::from_secs(1)).then_some(())
    })
    .await?;

    phase(&format!(
        "node {holder} is stopped in order while it delivers"
    ));
    let started = Instant::now();
    cluster.stop(holder).await?;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "stopping took {took:?} with a delivery hanging"
    );
    wait_for("the hanging session closed", WAIT, || async {
        primary.sessions()[0].closed.map(|_| ())
    })
    .await?;

    phase("another node delivers at once, not after the 60 s lease");
    wait_for(
        "the message delivered by another node",
        Duration::from_secs(20),
        || async { (primary.received().len() == 1).then_some(()) },
    )
    .await?;
    assert!(started.elapsed() < Duration::from_secs(30));
    cluster.restart(holder).await?;
    cluster.wait_until_empty(WAIT).await?;
    assert_eq!(copies(&primary).into_values().collect::<Vec<_>>(), vec![1]);
    cluster.shutdown().await?;
    Ok(())
}
