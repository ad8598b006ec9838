//! Recipient validation across the cluster: the replicated table (`list`) and verification
//! with the primary and a replicated cache (`verify`).

use std::sync::Arc;
use std::time::Duration;

use mxraft_proto::admin::{ReadConsistency, RecipientsChangeRequest, RecipientsListRequest};
use mxraft_tests::fake_smtp::FakeSmtp;
use mxraft_tests::smtp::Client;
use mxraft_tests::{ClusterOptions, Dnsmasq, TestCluster, admin, phase, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// The reply code to `RCPT TO:<rcpt>` on node `id`.
async fn rcpt_code(cluster: &TestCluster, id: u64, rcpt: &str) -> anyhow::Result<u16> {
    let mut c = Client::connect(cluster.smtp_addr(id)).await?;
    c.command("EHLO client.test").await?;
    c.command("MAIL FROM:<a@client.test>").await?;
    let code = c.command(&format!("RCPT TO:<{rcpt}>")).await?.code;
    let _ = c.command("QUIT").await;
    Ok(code)
}

async fn wait_code(cluster: &TestCluster, id: u64, rcpt: &str, want: u16) -> anyhow::Result<()> {
    wait_for(
        &format!("{rcpt} -> {want} on node {id}"),
        WAIT,
        || async move { (rcpt_code(cluster, id, rcpt).await.ok()? == want).then_some(()) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipient_table_is_replicated_and_enforced_on_every_node() -> anyhow::Result<()> {
    let opts = ClusterOptions {
        recipients: "list".into(),
        // An internationalized domain, configured in its U-label form.
        extra: "[[domains]]\nname = \"Bücher.example\"\nprimary = \"127.0.0.1:9\"\nrecipients = \"list\"\n"
            .into(),
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start(3, opts).await?;
    let mut client = admin(cluster.admin_addr(2)).await?;

    phase("an empty table refuses everyone");
    assert_eq!(rcpt_code(&cluster, 1, "alice@example.test").await?, 550);

    phase("entries added through a follower apply on every node");
    let added = client
        .recipients_add(RecipientsChangeRequest {
            entries: vec![
                "Alice@Example.TEST".into(),
                "postmaster@example.test".into(),
            ],
        })
        .await?
        .into_inner();
    assert_eq!(added.changed, 2);
    for id in 1..=3 {
        wait_code(&cluster, id, "alice@example.test", 250).await?;
        assert_eq!(
            rcpt_code(&cluster, id, "ALICE@example.test").await?,
            250,
            "case-insensitive"
        );
        assert_eq!(rcpt_code(&cluster, id, "bob@example.test").await?, 550);
    }

    phase("a catch-all accepts the whole domain until removed");
    client
        .recipients_add(RecipientsChangeRequest {
            entries: vec!["@example.test".into()],
        })
        .await?;
    for id in 1..=3 {
        wait_code(&cluster, id, "bob@example.test", 250).await?;
    }
    client
        .recipients_remove(RecipientsChangeRequest {
            entries: vec!["@example.test".into()],
        })
        .await?;
    for id in 1..=3 {
        wait_code(&cluster, id, "bob@example.test", 550).await?;
    }

    phase("the table lists in order; bad entries are refused with their text");
    let mut stream = client
        .recipients_list(RecipientsListRequest {
            domain: "example.test".into(),
            consistency: ReadConsistency::Linearizable as i32,
        })
        .await?
        .into_inner();
    let mut listed = Vec::new();
    while let Some(e) = stream.message().await? {
        listed.push(e.entry);
    }
    assert_eq!(listed, ["alice@example.test", "postmaster@example.test"]);
    let bad = client
        .recipients_add(RecipientsChangeRequest {
            entries: vec!["no-at-sign".into()],
        })
        .await
        .expect_err("refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("no-at-sign"), "{bad:?}");

    phase("an internationalized domain matches in U-label and A-label form");
    client
        .recipients_add(RecipientsChangeRequest {
            entries: vec!["info@BÜCHER.example".into()],
        })
        .await?;
    for id in 1..=3 {
        wait_code(&cluster, id, "info@xn--bcher-kva.example", 250).await?;
        let mut c = Client::connect(cluster.smtp_addr(id)).await?;
        c.command("EHLO client.test").await?;
        c.command("MAIL FROM:<a@client.test> SMTPUTF8").await?;
        let ok = c.command("RCPT TO:<info@bücher.example>").await?;
        assert_eq!(ok.code, 250, "U-label recipient on node {id}: {ok:?}");
        let unknown = c.command("RCPT TO:<other@bücher.example>").await?;
        assert_eq!(unknown.code, 550, "unknown U-label recipient on node {id}");
        let _ = c.command("QUIT").await;
    }
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_asks_the_primary_once_and_the_cluster_remembers() -> anyhow::Result<()> {
    let primary = FakeSmtp::start(
        None,
        Arc::new(|rcpt: &str, _| if rcpt.starts_with("valid") { 250 } else { 550 }),
    )
    .await?;
    let opts = ClusterOptions {
        primary: primary.addr.to_string(),
        recipients: "verify".into(),
        extra: "[verify]\ntimeout = \"5s\"\n".into(),
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start(3, opts).await?;

    phase("the first RCPT asks the primary");
    assert_eq!(rcpt_code(&cluster, 1, "valid1@example.test").await?, 250);
    assert_eq!(rcpt_code(&cluster, 1, "nobody@example.test").await?, 550);
    assert_eq!(primary.offered("valid1@example.test"), 1);
    assert_eq!(primary.offered("nobody@example.test"), 1);

    phase("the answers are committed for every node: no second callout");
    for id in 1..=3 {
        let sm = cluster.node(id).node().state_machine().clone();
        wait_for("the cached answers", WAIT, || {
            let sm = sm.clone();
            async move {
                let live = sm.read();
                (live.queue().verified("valid1@example.test").is_some()
                    && live.queue().verified("nobody@example.test").is_some())
                .then_some(())
            }
        })
        .await?;
        assert_eq!(rcpt_code(&cluster, id, "valid1@example.test").await?, 250);
        assert_eq!(rcpt_code(&cluster, id, "nobody@example.test").await?, 550);
    }
    assert_eq!(primary.offered("valid1@example.test"), 1);
    assert_eq!(primary.offered("nobody@example.test"), 1);

    phase("with the primary down: cached answers stand, unknown addresses get 450 4.1.1");
    drop(primary);
    assert_eq!(rcpt_code(&cluster, 2, "valid1@example.test").await?, 250);
    assert_eq!(rcpt_code(&cluster, 3, "nobody@example.test").await?, 550);
    assert_eq!(rcpt_code(&cluster, 3, "valid2@example.test").await?, 450);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greylisting_is_shared_by_the_cluster() -> anyhow::Result<()> {
    let opts = ClusterOptions {
        domain_extra: "greylist = true".into(),
        extra: "[greylist]\ndelay = \"1s\"\n".into(),
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start(3, opts).await?;
    phase("the first attempt is deferred, on any node, until the delay has passed");
    // Taken before the first attempt: the node stamps the triplet while answering it, so this
    // is no later than the stamp, and "a second after it" is no earlier than the node's delay.
    let first_seen = std::time::Instant::now();
    assert_eq!(rcpt_code(&cluster, 1, "grey@example.test").await?, 450);
    // Wait until every node knows the triplet (it is committed through Raft).
    for id in 1..=3 {
        let sm = cluster.node(id).node().state_machine().clone();
        wait_for("the triplet on every node", WAIT, || {
            let sm = sm.clone();
            async move {
                (sm.read()
                    .queue()
                    .greylisted("127.0.0|a@client.test|grey@example.test"))
                .map(|_| ())
            }
        })
        .await?;
    }
    if first_seen.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            rcpt_code(&cluster, 2, "grey@example.test").await?,
            450,
            "too early, on another node"
        );
    }
    phase("after the delay, a retry on another node is accepted");
    wait_code(&cluster, 3, "grey@example.test", 250).await?;
    assert!(first_seen.elapsed() >= Duration::from_secs(1));
    assert_eq!(rcpt_code(&cluster, 2, "grey@example.test").await?, 250);
    assert_eq!(
        rcpt_code(&cluster, 2, "other@example.test").await?,
        450,
        "another triplet starts over"
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_listed_in_a_dns_blocklist_are_refused() -> anyhow::Result<()> {
    // 127.0.0.1 is listed in bl.test (RFC 5782: the reversed address under the zone).
    let dns = Dnsmasq::start(&[
        "--host-record=1.0.0.127.bl.test,127.0.0.2".into(),
        "--host-record=ok.test,192.0.2.1".into(),
    ])?;
    let opts = ClusterOptions {
        domain_extra: "dnsbl = [\"ok.test\", \"bl.test\"]".into(),
        extra: format!("[delivery]\nname_servers = [\"{}\"]\n", dns.addr),
        ..ClusterOptions::default()
    };
    {
        let cluster = TestCluster::start(3, opts).await?;
        // dnsmasq may take a moment to answer; once it does, the client is refused.
        wait_code(&cluster, 2, "user@example.test", 554).await?;
        let mut c = Client::connect(cluster.smtp_addr(1)).await?;
        c.command("EHLO client.test").await?;
        c.command("MAIL FROM:<a@client.test>").await?;
        let r = c.command("RCPT TO:<user@example.test>").await?;
        assert_eq!(
            (r.code, r.text().as_str()),
            (
                554,
                "5.7.1 Service unavailable; client [127.0.0.1] blocked using bl.test"
            )
        );
        cluster.shutdown().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_fail_is_refused_and_other_results_are_recorded() -> anyhow::Result<()> {
    let dns = Dnsmasq::start(&[
        "--txt-record=strict.test,v=spf1 ip4:192.0.2.0/24 -all".into(),
        "--txt-record=loopback.test,v=spf1 ip4:127.0.0.0/8 -all".into(),
    ])?;
    let opts = ClusterOptions {
        domain_extra: "spf = true".into(),
        extra: format!("[delivery]\nname_servers = [\"{}\"]\n", dns.addr),
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start(3, opts).await?;
    phase("a sender whose domain does not allow 127.0.0.1 is refused at RCPT");
    let addr = cluster.smtp_addr(1);
    let refused = wait_for("the SPF fail", WAIT, || async move {
        let mut c = Client::connect(addr).await.ok()?;
        c.command("EHLO client.test").await.ok()?;
        c.command("MAIL FROM:<a@strict.test>").await.ok()?;
        let r = c.command("RCPT TO:<user@example.test>").await.ok()?;
        (r.code == 550).then_some(r)
    })
    .await?;
    assert!(
        refused.text().starts_with(
            "5.7.23 SPF check failed: 127.0.0.1 is not allowed to send mail for strict.test"
        ),
        "{refused:?}"
    );
    phase("a passing sender is accepted and the result recorded in the message");
    let r = mxraft_tests::smtp::send_one(
        addr,
        "b@loopback.test",
        &["user@example.test"],
        b"Subject: spf\r\n\r\nx\r\n",
    )
    .await?;
    let id =
        mxraft_tests::smtp::queued_id(&r).ok_or_else(|| anyhow::anyhow!("not queued: {r:?}"))?;
    let shown = admin(cluster.admin_addr(2))
        .await?
        .queue_show(mxraft_proto::admin::QueueShowRequest {
            id,
            include_body: true,
            consistency: ReadConsistency::Linearizable as i32,
        })
        .await?
        .into_inner();
    let text = String::from_utf8_lossy(&shown.body.unwrap_or_default()).into_owned();
    assert!(text.contains("\r\nReceived-SPF: pass ("), "{text}");
    cluster.shutdown().await
}
