//! Delivery from an in-process cluster to scripted primaries: per-recipient results, retries,
//! DSNs to the sender's route, expiry, ETRN, and MX routing through a real dnsmasq.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mxraft_proto::admin::{
    DestinationsListRequest, QueueFlushRequest, QueueShowRequest, ReadConsistency,
    queue_flush_request,
};
use mxraft_tests::fake_smtp::{FakeSmtp, down_port};
use mxraft_tests::smtp::{Client, queued_id, send_one};
use mxraft_tests::{ClusterOptions, Dnsmasq, TestCluster, admin, phase, queue_ids, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn delivery_options(primary: SocketAddr, dsn_sink: SocketAddr) -> ClusterOptions {
    ClusterOptions {
        primary: primary.to_string(),
        extra: format!(
            r#"
            [[routes]]
            domain = "sender.test"
            next_hop = "{dsn_sink}"
            [delivery]
            probe_interval = "300ms"
            claim_lease = "10s"
            delay_notice_after = "0s"
            etrn_clients = ["127.0.0.0/8"]
            "#
        ),
        ..ClusterOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failures_retry_permanent_ones_return_a_dsn_and_the_null_sender_gets_none()
-> anyhow::Result<()> {
    // temp*: refused for now on the first offer; perm*: refused for good; others accepted.
    let primary = FakeSmtp::start(
        None,
        Arc::new(|rcpt: &str, offered: u32| match rcpt {
            r if r.starts_with("temp") && offered == 0 => 450,
            r if r.starts_with("perm") => 550,
            _ => 250,
        }),
    )
    .await?;
    let sender_mx = FakeSmtp::accept_all().await?;
    let cluster = TestCluster::start(3, delivery_options(primary.addr, sender_mx.addr)).await?;

    phase("one message with three fates, one from the null sender that fails");
    let body = b"Subject: fates\r\nMessage-ID: <fates@sender.test>\r\n\r\nhello\r\n";
    let r = send_one(
        cluster.smtp_addr(2),
        "alice@sender.test",
        &[
            "ok@example.test",
            "temp1@example.test",
            "perm1@example.test",
        ],
        body,
    )
    .await?;
    let id = queued_id(&r).ok_or_else(|| anyhow::anyhow!("not queued: {r:?}"))?;
    let r = send_one(
        cluster.smtp_addr(3),
        "",
        &["perm2@example.test"],
        b"Subject: bounce\r\n\r\nx\r\n",
    )
    .await?;
    assert_eq!(r.code, 250);

    phase("the accepted recipient is delivered, the refused one returned to the sender's MX");
    wait_for("delivery of ok@ and a DSN for perm1@", WAIT, || async {
        (primary
            .received()
            .iter()
            .any(|m| m.rcpts == ["ok@example.test"])
            && !sender_mx.received().is_empty())
        .then_some(())
    })
    .await?;
    let dsns = sender_mx.received();
    assert_eq!(dsns.len(), 1, "one DSN");
    assert!(
        dsns[0].mail_from.starts_with("<> "),
        "DSNs have the null sender: {}",
        dsns[0].mail_from
    );
    assert_eq!(dsns[0].rcpts, ["alice@sender.test"]);
    let dsn = String::from_utf8_lossy(&dsns[0].data).into_owned();
    assert!(
        dsn.contains(
            "Final-Recipient: rfc822; perm1@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ),
        "{dsn}"
    );
    assert!(
        dsn.contains("Diagnostic-Code: smtp; 550 5.1.1 <perm1@example.test>: user unknown"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Subject: fates\r\n"),
        "the DSN returns the original headers: {dsn}"
    );
    assert!(
        !dsn.contains("temp1@example.test"),
        "the deferred recipient is not in the DSN"
    );

    phase("the deferred recipient waits for its retry");
    let mut client = admin(cluster.admin_addr(1)).await?;
    let show = |client: &mut mxraft_tests::Admin| {
        let mut c = client.clone();
        let id = id.clone();
        async move {
            c.queue_show(QueueShowRequest {
                id,
                include_body: false,
                consistency: ReadConsistency::Linearizable as i32,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().message)
        }
    };
    let m = wait_for("temp1 to be deferred", WAIT, || {
        let f = show(&mut client);
        async move {
            f.await.filter(|m| {
                m.recipients
                    .iter()
                    .any(|r| r.address == "temp1@example.test" && r.attempts == 1)
            })
        }
    })
    .await?;
    let temp = m
        .recipients
        .iter()
        .find(|r| r.address == "temp1@example.test")
        .expect("temp1");
    assert_eq!(temp.state, "pending");
    assert!(
        temp.reply
            .as_deref()
            .is_some_and(|r| r.starts_with("450 4.2.0")),
        "{temp:?}"
    );
    assert!(temp.next_attempt_ms.is_some());
    let states: BTreeSet<(String, String)> = m
        .recipients
        .iter()
        .map(|r| (r.address.clone(), r.state.clone()))
        .collect();
    assert!(states.contains(&("ok@example.test".into(), "delivered".into())));
    assert!(states.contains(&("perm1@example.test".into(), "failed".into())));
    assert_eq!(primary.offered("temp1@example.test"), 1);

    phase("a flush retries it now, and it is accepted");
    client
        .queue_flush(QueueFlushRequest {
            target: Some(queue_flush_request::Target::Id(id.clone())),
        })
        .await?;
    wait_for("the retry to be delivered", WAIT, || async {
        primary
            .received()
            .iter()
            .any(|m| m.rcpts == ["temp1@example.test"])
            .then_some(())
    })
    .await?;
    cluster.wait_until_empty(WAIT).await?;
    assert_eq!(
        primary.offered("temp1@example.test"),
        2,
        "retried exactly once"
    );
    assert_eq!(
        primary.offered("ok@example.test"),
        1,
        "never delivered twice"
    );
    assert_eq!(primary.offered("perm2@example.test"), 1);
    assert_eq!(sender_mx.received().len(), 1, "no DSN for the null sender");
    let delivered: Vec<Vec<String>> = primary.received().into_iter().map(|m| m.rcpts).collect();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    let first = primary.received().into_iter().next().expect("one");
    let text = String::from_utf8_lossy(&first.data).into_owned();
    assert!(
        text.starts_with("Received: from client.test ([127.0.0.1])\r\n\tby node2.test (mxraft)"),
        "{text}"
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_older_than_its_lifetime_is_returned_with_a_dsn() -> anyhow::Result<()> {
    let sender_mx = FakeSmtp::accept_all().await?;
    let nothing: SocketAddr = "127.0.0.1:9".parse()?;
    let mut opts = delivery_options(nothing, sender_mx.addr);
    opts.domain_extra = "max_queue_lifetime = \"2s\"".into();
    let cluster = TestCluster::start(3, opts).await?;
    let r = send_one(
        cluster.smtp_addr(1),
        "bob@sender.test",
        &["user@example.test"],
        b"Subject: old\r\n\r\nx\r\n",
    )
    .await?;
    assert_eq!(r.code, 250);
    phase("the primary never answers; after 2 s the message expires");
    wait_for("the expiry DSN", WAIT, || async {
        (!sender_mx.received().is_empty()).then_some(())
    })
    .await?;
    cluster.wait_until_empty(WAIT).await?;
    let dsns = sender_mx.received();
    assert_eq!(dsns.len(), 1);
    assert_eq!(dsns[0].rcpts, ["bob@sender.test"]);
    let dsn = String::from_utf8_lossy(&dsns[0].data).into_owned();
    assert!(
        dsn.contains(
            "Final-Recipient: rfc822; user@example.test\r\nAction: failed\r\nStatus: 4.4.7\r\n"
        ),
        "{dsn}"
    );
    assert!(
        dsn.contains("Delivery time expired; last error: 4.4.1 127.0.0.1[127.0.0.1:9]"),
        "{dsn}"
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etrn_from_the_primary_starts_delivery_without_waiting_for_a_probe() -> anyhow::Result<()> {
    let sender_mx = FakeSmtp::accept_all().await?;
    // The primary's port, which refuses connections for now.
    let (primary_socket, primary_addr) = down_port()?;
    let mut opts = delivery_options(primary_addr, sender_mx.addr);
    opts.extra = opts
        .extra
        .replace("probe_interval = \"300ms\"", "probe_interval = \"1h\"");
    let cluster = TestCluster::start(3, opts).await?;
    let r = send_one(
        cluster.smtp_addr(1),
        "a@sender.test",
        &["user@example.test"],
        b"Subject: e\r\n\r\nx\r\n",
    )
    .await?;
    assert_eq!(r.code, 250);
    let mut client = admin(cluster.admin_addr(1)).await?;
    wait_for("the destination to be marked down", WAIT, || {
        let mut c = client.clone();
        async move {
            let list = c
                .destinations_list(DestinationsListRequest {
                    consistency: ReadConsistency::Linearizable as i32,
                })
                .await
                .ok()?
                .into_inner();
            list.destinations
                .into_iter()
                .find(|d| d.name == "example.test" && d.state == "down")
        }
    })
    .await?;
    let d = client
        .destinations_list(DestinationsListRequest {
            consistency: ReadConsistency::Linearizable as i32,
        })
        .await?
        .into_inner()
        .destinations
        .into_iter()
        .find(|d| d.name == "example.test")
        .expect("listed");
    assert_eq!(d.route, primary_addr.to_string());
    assert_eq!(d.queued, 1);
    assert!(
        d.last_error
            .as_deref()
            .is_some_and(|e| e.contains("Connection refused")),
        "{d:?}"
    );

    phase("the primary comes back and sends ETRN; the hour-long probe interval is not waited for");
    let primary = FakeSmtp::start_on(primary_socket, Arc::new(|_, _| 250))?;
    let mut c = Client::connect(cluster.smtp_addr(3)).await?;
    assert_eq!(c.command("EHLO primary.example.test").await?.code, 250);
    let r = c.command("ETRN example.test").await?;
    assert_eq!(
        (r.code, r.text().as_str()),
        (250, "2.0.0 Queuing for node example.test started")
    );
    wait_for("the delivery", WAIT, || async {
        (!primary.received().is_empty()).then_some(())
    })
    .await?;
    cluster.wait_until_empty(WAIT).await?;
    assert_eq!(
        c.command("ETRN example.test").await?.code,
        251,
        "nothing left"
    );
    assert_eq!(c.command("ETRN elsewhere.test").await?.code, 459);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_routing_through_a_real_dns_server_skips_our_own_preference() -> anyhow::Result<()> {
    let primary = FakeSmtp::accept_all().await?;
    let dns = Dnsmasq::start(&[
        "--mx-host=mx.test,primary.mx.test,10".into(),
        "--mx-host=mx.test,backup-a.mx.test,20".into(),
        "--mx-host=mx.test,backup-b.mx.test,30".into(),
        "--host-record=primary.mx.test,127.0.0.1".into(),
        "--host-record=backup-a.mx.test,127.0.0.2".into(),
        "--host-record=backup-b.mx.test,127.0.0.3".into(),
    ])?;
    // Our own preference is 20: only primary.mx.test (10) is a target. The hosts found by MX
    // are reached on the fake primary's port.
    let mut opts = delivery_options("127.0.0.1:9".parse()?, primary.addr);
    opts.extra = format!(
        r#"
        [[domains]]
        name = "mx.test"
        mx_preference = 20
        recipients = "any"
        [delivery]
        probe_interval = "300ms"
        name_servers = ["{dns}"]
        mx_port = {port}
        "#,
        dns = dns.addr,
        port = primary.addr.port()
    );
    let cluster = TestCluster::start(3, opts).await?;
    let r = send_one(
        cluster.smtp_addr(2),
        "a@sender.test",
        &["user@mx.test"],
        b"Subject: mx\r\n\r\nx\r\n",
    )
    .await?;
    assert_eq!(r.code, 250, "{r:?}");
    // The DNS server may take a moment to start; the probe retries until it answers.
    wait_for("delivery through the MX found in DNS", WAIT, || async {
        primary
            .received()
            .iter()
            .any(|m| m.rcpts == ["user@mx.test"])
            .then_some(())
    })
    .await?;
    cluster.wait_until_empty(WAIT).await?;
    let d = admin(cluster.admin_addr(1))
        .await?
        .destinations_list(DestinationsListRequest {
            consistency: ReadConsistency::Linearizable as i32,
        })
        .await?
        .into_inner()
        .destinations
        .into_iter()
        .find(|d| d.name == "mx.test")
        .expect("listed");
    assert_eq!(d.route, "MX (own preference 20)");
    assert_eq!(d.state, "up");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_uses_starttls_carries_dsn_parameters_and_respects_size_and_smtputf8()
-> anyhow::Result<()> {
    use mxraft_tests::fake_smtp::{FakeOptions, self_signed_tls};
    // A primary with STARTTLS and DSN, a 20 kB SIZE limit and no SMTPUTF8.
    let options = FakeOptions {
        extensions: ["PIPELINING", "8BITMIME", "DSN", "SIZE 20000"]
            .map(String::from)
            .to_vec(),
        tls: Some(self_signed_tls("primary.example.test")?),
        ..FakeOptions::default()
    };
    let primary = FakeSmtp::start_with(None, Arc::new(|_, _| 250), options).await?;
    let sender_mx = FakeSmtp::accept_all().await?;
    let cluster = TestCluster::start(3, delivery_options(primary.addr, sender_mx.addr)).await?;

    phase("a message with DSN parameters goes over TLS, parameters intact");
    let mut c = Client::connect(cluster.smtp_addr(1)).await?;
    assert_eq!(c.command("EHLO client.test").await?.code, 250);
    assert_eq!(
        c.command("MAIL FROM:<a@sender.test> RET=HDRS ENVID=QQ314159")
            .await?
            .code,
        250
    );
    assert_eq!(
        c.command("RCPT TO:<u@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@example.test")
            .await?
            .code,
        250
    );
    assert_eq!(c.command("DATA").await?.code, 354);
    c.send_raw(b"Subject: dsn params\r\n\r\nline\r\n.\r\n")
        .await?;
    assert_eq!(c.read_reply().await?.code, 250);

    phase("one too big for the primary, one needing SMTPUTF8: both come back with DSNs");
    let mut big_body = String::from("Subject: big\r\n\r\n");
    for _ in 0..400 {
        big_body.push_str(&"z".repeat(70));
        big_body.push_str("\r\n");
    }
    let r = send_one(
        cluster.smtp_addr(2),
        "b@sender.test",
        &["big@example.test"],
        big_body.as_bytes(),
    )
    .await?;
    assert_eq!(r.code, 250);
    assert_eq!(
        c.command("MAIL FROM:<c@sender.test> SMTPUTF8").await?.code,
        250
    );
    assert_eq!(c.command("RCPT TO:<üser@example.test>").await?.code, 250);
    assert_eq!(c.command("DATA").await?.code, 354);
    c.send_raw(b"Subject: utf8\r\n\r\nx\r\n.\r\n").await?;
    assert_eq!(c.read_reply().await?.code, 250);

    cluster.wait_until_empty(WAIT).await?;
    let got = primary.received();
    assert_eq!(got.len(), 1, "only the first message was deliverable");
    assert!(got[0].tls, "delivered over STARTTLS");
    assert_eq!(
        got[0].mail_from.split_whitespace().collect::<Vec<_>>(),
        [
            "<a@sender.test>",
            &format!("SIZE={}", got[0].data.len()),
            "RET=HDRS",
            "ENVID=QQ314159"
        ]
    );
    assert_eq!(
        got[0].rcpt_lines,
        ["<u@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@example.test"]
    );

    let dsns = sender_mx.received();
    let texts: Vec<String> = dsns
        .iter()
        .map(|d| String::from_utf8_lossy(&d.data).into_owned())
        .collect();
    assert_eq!(dsns.len(), 2, "{texts:?}");
    let to_b = dsns
        .iter()
        .position(|d| d.rcpts == ["b@sender.test"])
        .expect("DSN to b");
    assert!(texts[to_b].contains("Status: 5.3.4"), "{}", texts[to_b]);
    let to_c = dsns
        .iter()
        .position(|d| d.rcpts == ["c@sender.test"])
        .expect("DSN to c");
    assert!(texts[to_c].contains("Status: 5.6.7"), "{}", texts[to_c]);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_release_bounce_and_delete_through_the_admin_api() -> anyhow::Result<()> {
    use mxraft_proto::admin::QueueIdRequest;
    let sender_mx = FakeSmtp::accept_all().await?;
    let (primary_socket, primary_addr) = down_port()?;
    let cluster = TestCluster::start(3, delivery_options(primary_addr, sender_mx.addr)).await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = send_one(
            cluster.smtp_addr(1),
            "a@sender.test",
            &[&format!("u{i}@example.test")],
            b"Subject: admin\r\n\r\nx\r\n",
        )
        .await?;
        ids.push(queued_id(&r).ok_or_else(|| anyhow::anyhow!("not queued"))?);
    }
    let mut client = admin(cluster.admin_addr(2)).await?;

    phase("hold one message, bounce one, delete one while the primary is down");
    let held = client
        .queue_hold(QueueIdRequest { id: ids[0].clone() })
        .await?
        .into_inner();
    assert_eq!(held.changed, 1);
    client
        .queue_bounce(QueueIdRequest { id: ids[1].clone() })
        .await?;
    client
        .queue_delete(QueueIdRequest { id: ids[2].clone() })
        .await?;
    let missing = client
        .queue_hold(QueueIdRequest { id: ids[2].clone() })
        .await
        .expect_err("deleted");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let bad = client
        .queue_hold(QueueIdRequest {
            id: "nonsense".into(),
        })
        .await
        .expect_err("bad id");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    wait_for("the bounce DSN", WAIT, || async {
        (sender_mx.received().len() == 1).then_some(())
    })
    .await?;
    assert!(String::from_utf8_lossy(&sender_mx.received()[0].data).contains("Status: 5.0.0"));

    phase("the primary comes back: the held message stays until released");
    let primary = FakeSmtp::start_on(primary_socket, Arc::new(|_, _| 250))?;
    // A message sent now proves that delivery runs while the held one waits.
    let r = send_one(
        cluster.smtp_addr(1),
        "alice@sender.test",
        &["u9@example.test"],
        b"Subject: not held\r\n\r\nx\r\n",
    )
    .await?;
    assert_eq!(r.code, 250, "{r:?}");
    client
        .queue_flush(QueueFlushRequest {
            target: Some(queue_flush_request::Target::All(true)),
        })
        .await?;
    let admin3 = cluster.admin_addr(3);
    wait_for("only the held message left", WAIT, || async {
        queue_ids(admin3, ReadConsistency::Linearizable)
            .await
            .ok()
            .filter(|q| *q == vec![ids[0].clone()])
            .map(|_| ())
    })
    .await?;
    let delivered: Vec<Vec<String>> = primary.received().into_iter().map(|r| r.rcpts).collect();
    assert_eq!(
        delivered,
        vec![vec!["u9@example.test".to_owned()]],
        "the held message was not delivered"
    );
    let shown = client
        .queue_show(QueueShowRequest {
            id: ids[0].clone(),
            include_body: false,
            consistency: ReadConsistency::Linearizable as i32,
        })
        .await?
        .into_inner()
        .message
        .expect("message");
    assert!(shown.held);
    client
        .queue_release(QueueIdRequest { id: ids[0].clone() })
        .await?;
    cluster.wait_until_empty(WAIT).await?;
    assert_eq!(primary.received().len(), 2);
    assert_eq!(primary.received()[1].rcpts, ["u0@example.test"]);
    cluster.shutdown().await
}
