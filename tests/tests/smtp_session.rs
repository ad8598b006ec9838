//! The SMTP session against a recording queue: protocol order, policy, sizes, pipelining,
//! BDAT and hostile input (limits, timeouts and TLS are in `smtp_limits.rs`). The replies asserted are the ones DESIGN §5 and RFC 5321 prescribe.

use std::time::Duration;

use mxraft_smtp::SmtpConfig;
use mxraft_tests::front::{default_front, ehlo, expect_code, front};
use mxraft_tests::smtp::{Client, queued_id};

#[tokio::test]
async fn ehlo_advertises_the_extensions() {
    let f = default_front().await;
    let mut c = Client::connect(f.addr).await.expect("connect");
    let r = c.command("EHLO client.test").await.expect("ehlo");
    assert_eq!(r.code, 250);
    let lines: Vec<&str> = r.lines.iter().map(String::as_str).collect();
    assert_eq!(
        lines,
        [
            "mx.test",
            "PIPELINING",
            "SIZE 52428800",
            "ETRN",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "DSN",
            "SMTPUTF8",
            "CHUNKING"
        ]
    );
    let r = c.command("HELO client.test").await.expect("helo");
    assert_eq!((r.code, r.text().as_str()), (250, "mx.test"));
    assert_eq!(c.command("QUIT").await.expect("quit").code, 221);
}

#[tokio::test]
async fn commands_out_of_order_are_refused() {
    let f = default_front().await;
    let mut c = Client::connect(f.addr).await.expect("connect");
    let r = c.command("MAIL FROM:<a@client.test>").await.expect("mail");
    assert_eq!(
        (r.code, r.text().as_str()),
        (503, "5.5.1 Error: send HELO/EHLO first")
    );
    assert_eq!(c.command("EHLO client.test").await.expect("ehlo").code, 250);
    let r = c.command("RCPT TO:<u@example.test>").await.expect("rcpt");
    assert_eq!(
        (r.code, r.text().as_str()),
        (503, "5.5.1 Error: need MAIL command")
    );
    let r = c.command("DATA").await.expect("data");
    assert_eq!(r.code, 503);
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
    let r = c.command("MAIL FROM:<a@client.test>").await.expect("mail");
    assert_eq!(
        (r.code, r.text().as_str()),
        (503, "5.5.1 Error: nested MAIL command")
    );
    let r = c.command("DATA").await.expect("data");
    assert_eq!(
        (r.code, r.text().as_str()),
        (554, "5.5.1 Error: no valid recipients")
    );
    assert_eq!(c.command("RSET").await.expect("rset").code, 250);
    assert_eq!(
        c.command("MAIL FROM:<>").await.expect("null sender").code,
        250
    );
    let r = c.command("XYZZY").await.expect("unknown");
    assert_eq!(
        (r.code, r.text().as_str()),
        (500, "5.5.2 Error: command not recognized")
    );
    let r = c.command("VRFY postmaster").await.expect("vrfy");
    assert_eq!(r.code, 502);
    assert!(f.recorder.messages().is_empty());
}

#[tokio::test]
async fn only_protected_domains_are_relayed() {
    let f = default_front().await;
    let mut c = ehlo(f.addr).await;
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
    for ok in [
        "user@example.test",
        "User@EXAMPLE.TEST",
        "user@example.test.",
        "x@other.example",
    ] {
        let r = c.command(&format!("RCPT TO:<{ok}>")).await.expect("rcpt");
        assert_eq!((r.code, r.text().as_str()), (250, "2.1.5 Ok"), "{ok}");
    }
    for relay in [
        "user@elsewhere.test",
        "user@sub.example.test",
        "victim%elsewhere.test@example.test",
        "elsewhere.test!victim@example.test",
        "\"victim@elsewhere.test\"@example.test",
        "@example.test:victim@elsewhere.test",
        "user@[127.0.0.1]",
    ] {
        let r = c
            .command(&format!("RCPT TO:<{relay}>"))
            .await
            .expect("rcpt");
        assert_eq!(r.code, 554, "{relay}: {r:?}");
        assert!(r.text().starts_with("5.7.1 "), "{relay}: {r:?}");
        assert!(r.text().ends_with("Relay access denied"), "{relay}: {r:?}");
    }
    // A second unquoted '@' routes onwards, whichever domain comes last.
    for routed in [
        "user@example.test@elsewhere.test",
        "user@elsewhere.test@example.test",
    ] {
        let r = c
            .command(&format!("RCPT TO:<{routed}>"))
            .await
            .expect("rcpt");
        assert_eq!(r.code, 554, "{routed}: {r:?}");
        assert!(r.text().starts_with("5.7.1 "), "{routed}: {r:?}");
    }
}

#[tokio::test]
async fn accepted_message_is_handed_over_whole() {
    let f = default_front().await;
    let mut c = ehlo(f.addr).await;
    let body = b"Subject: hi\r\n\r\n.dot line\r\n..two dots\r\nend\r\n";
    // The same recipient twice (its domain in another case) is queued once.
    let r = c
        .send_mail(
            "a@client.test",
            &["u1@example.test", "u2@Example.Test", "u1@EXAMPLE.test"],
            body,
        )
        .await
        .expect("send");
    let id = queued_id(&r).expect("queued");
    assert_eq!(r.text(), format!("2.0.0 Ok: queued as {id}"));
    let queued = f.recorder.messages();
    assert_eq!(queued.len(), 1);
    let m = &queued[0];
    assert_eq!(m.id.to_string(), id);
    assert_eq!(m.sender, "a@client.test");
    let rcpts: Vec<&str> = m.recipients.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(rcpts, ["u1@example.test", "u2@example.test"]);
    assert_eq!(&m.body[..], &body[..]);
    assert_eq!(m.received_by, 7);
    assert!(m.trace_header.starts_with(
        "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (mxraft) with ESMTP id "
    ));
    assert!(m.trace_header.ends_with("\r\n"));
    // The session continues with a new transaction.
    let r = c
        .send_mail("", &["u1@example.test"], b"Subject: 2\r\n\r\n")
        .await
        .expect("second");
    assert_eq!(r.code, 250);
    assert_eq!(f.recorder.messages()[1].sender, "");
}

#[tokio::test]
async fn pipelined_commands_get_their_replies_in_order() {
    let f = default_front().await;
    let mut c = ehlo(f.addr).await;
    c.send_raw(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<u@example.test>\r\nRCPT TO:<x@elsewhere.test>\r\nRCPT TO:<v@example.test>\r\nDATA\r\n")
        .await
        .expect("write");
    let codes = [250, 250, 554, 250, 354];
    for want in codes {
        assert_eq!(c.read_reply().await.expect("reply").code, want);
    }
    // The end of the message and the next envelope in one write; the next message only
    // after its 354 (DATA ends a pipelined group, RFC 2920 §3.1).
    c.send_raw(b"Subject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n")
        .await
        .expect("write");
    for want in [250, 250, 250, 354] {
        assert_eq!(c.read_reply().await.expect("reply").code, want);
    }
    c.send_raw(b"Subject: q\r\n\r\n.\r\nQUIT\r\n")
        .await
        .expect("write");
    for want in [250, 221] {
        assert_eq!(c.read_reply().await.expect("reply").code, want);
    }
    let queued = f.recorder.messages();
    assert_eq!(queued.len(), 2);
    let rcpts: Vec<&str> = queued[0]
        .recipients
        .iter()
        .map(|(a, _)| a.as_str())
        .collect();
    assert_eq!(rcpts, ["u@example.test", "v@example.test"]);
    assert_eq!(&queued[0].body[..], b"Subject: p\r\n\r\nbody\r\n");
    assert_eq!(&queued[1].body[..], b"Subject: q\r\n\r\n");
}

#[tokio::test]
async fn smuggled_end_of_data_never_queues_a_second_message() {
    let sequences: [&[u8]; 9] = [
        b"\n.\n",
        b"\r.\r",
        b"\r.\n",
        b"\n.\r",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n\x00.\r\n",
    ];
    let f = default_front().await;
    for seq in sequences {
        let mut c = ehlo(f.addr).await;
        expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
        expect_code(&mut c, "RCPT TO:<u@example.test>", 250).await;
        assert_eq!(c.command("DATA").await.expect("data").code, 354);
        let mut wire = b"Subject: first\r\n\r\nhello".to_vec();
        wire.extend_from_slice(seq);
        wire.extend_from_slice(b"MAIL FROM:<evil@client.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n");
        c.send_raw(&wire).await.expect("write");
        let r = c.read_reply().await.expect("reply");
        assert_eq!(r.code, 550, "{seq:?}: {r:?}");
        // Nothing after the real end of data is taken as a command.
        assert_eq!(c.command("NOOP").await.expect("noop").code, 250, "{seq:?}");
    }
    assert!(f.recorder.messages().is_empty(), "no message may be queued");
}

#[tokio::test]
async fn size_limits_apply_at_mail_and_during_data() {
    let config = SmtpConfig {
        max_message_size: 64 * 1024,
        ..SmtpConfig::default()
    };
    let f = front(config, false).await;
    let mut c = ehlo(f.addr).await;
    let r = c
        .command("MAIL FROM:<a@client.test> SIZE=70000")
        .await
        .expect("mail");
    assert_eq!(
        (r.code, r.text().as_str()),
        (552, "5.3.4 Message size exceeds fixed limit")
    );
    let r = c
        .command("MAIL FROM:<a@client.test> SIZE=100 BODY=8BITMIME")
        .await
        .expect("mail");
    assert_eq!(r.code, 250);
    expect_code(&mut c, "RCPT TO:<u@example.test>", 250).await;
    assert_eq!(c.command("DATA").await.expect("data").code, 354);
    let big = "x".repeat(900) + "\r\n";
    c.send_raw(&mxraft_smtp::wire::encode_data(big.repeat(80).as_bytes()))
        .await
        .expect("write");
    let r = c.read_reply().await.expect("reply");
    assert_eq!(
        (r.code, r.text().as_str()),
        (552, "5.3.4 Error: message file too big")
    );
    let r = c
        .command("MAIL FROM:<a@client.test> FOO=BAR")
        .await
        .expect("mail");
    assert_eq!(r.code, 555);
    assert!(f.recorder.messages().is_empty());
}

#[tokio::test]
async fn too_many_recipients_get_452() {
    let config = SmtpConfig {
        max_recipients: 2,
        ..SmtpConfig::default()
    };
    let f = front(config, false).await;
    let mut c = ehlo(f.addr).await;
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
    expect_code(&mut c, "RCPT TO:<a@example.test>", 250).await;
    expect_code(&mut c, "RCPT TO:<b@example.test>", 250).await;
    let r = c.command("RCPT TO:<c@example.test>").await.expect("rcpt");
    assert_eq!(
        (r.code, r.text().as_str()),
        (452, "4.5.3 Error: too many recipients")
    );
}

#[tokio::test]
async fn a_failed_commit_answers_451_and_the_session_goes_on() {
    let f = front(SmtpConfig::default(), true).await;
    let mut c = ehlo(f.addr).await;
    let r = c
        .send_mail("a@client.test", &["u@example.test"], b"Subject: x\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(
        (r.code, r.text().as_str()),
        (451, "4.3.0 Error: queue unavailable, try again later")
    );
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
}

#[tokio::test]
async fn malformed_command_lines_are_refused() {
    let f = default_front().await;
    let mut c = ehlo(f.addr).await;
    c.send_raw(b"NOOP\n").await.expect("write");
    let r = c.read_reply().await.expect("reply");
    assert_eq!(
        (r.code, r.text().as_str()),
        (500, "5.5.2 Error: bare <LF> received")
    );
    c.send_raw(b"NO\rOP\r\n").await.expect("write");
    assert_eq!(c.read_reply().await.expect("reply").code, 500);
    c.send_raw(format!("NOOP {}\r\n", "x".repeat(600)).as_bytes())
        .await
        .expect("write");
    let r = c.read_reply().await.expect("reply");
    assert_eq!(
        (r.code, r.text().as_str()),
        (500, "5.5.2 Error: line too long")
    );
    // The over-long line is discarded whole; the next command works.
    assert_eq!(c.command("NOOP").await.expect("noop").code, 250);
}

#[tokio::test]
async fn mail_and_rcpt_lines_get_the_room_their_extensions_need() {
    let f = default_front().await;
    let mut c = ehlo(f.addr).await;
    expect_code(&mut c, "MAIL FROM:<s@client.test> RET=HDRS ENVID=e1", 250).await;
    // RCPT with NOTIFY and a long ORCPT: over 512 octets, within the 500 DSN adds.
    let orcpt = format!("rfc822;{}@example.test", "o".repeat(470));
    let rcpt = format!("RCPT TO:<u@example.test> NOTIFY=SUCCESS,FAILURE ORCPT={orcpt}");
    assert!(rcpt.len() > 512 && rcpt.len() <= 1010, "{}", rcpt.len());
    assert_eq!(c.command(&rcpt).await.expect("rcpt").code, 250, "{rcpt}");
    // Past the allowance the line is refused, and the session goes on.
    let long = format!("RCPT TO:<u@example.test> ORCPT=rfc822;{}", "o".repeat(1000));
    let r = c.command(&long).await.expect("long rcpt");
    assert_eq!(
        (r.code, r.text().as_str()),
        (500, "5.5.2 Error: line too long")
    );
    let r = c
        .command(&format!("NOOP {}", "x".repeat(600)))
        .await
        .expect("noop");
    assert_eq!(r.code, 500, "other commands keep the 512-octet limit");
    assert_eq!(c.command("RSET").await.expect("rset").code, 250);
}

#[tokio::test]
async fn too_many_errors_close_the_session() {
    let config = SmtpConfig {
        max_errors: 3,
        ..SmtpConfig::default()
    };
    let f = front(config, false).await;
    let mut c = ehlo(f.addr).await;
    assert_eq!(c.command("BOGUS").await.expect("1").code, 500);
    assert_eq!(c.command("BOGUS").await.expect("2").code, 500);
    c.send_raw(b"BOGUS\r\n").await.expect("write");
    assert_eq!(c.read_reply().await.expect("3").code, 500);
    let r = c.read_reply().await.expect("421");
    assert_eq!(r.code, 421);
    assert!(c.read_reply().await.is_err(), "connection closed");
}

#[tokio::test]
async fn an_idle_client_is_disconnected() {
    let config = SmtpConfig {
        command_timeout: Duration::from_millis(300),
        ..SmtpConfig::default()
    };
    let f = front(config, false).await;
    let mut c = ehlo(f.addr).await;
    // Waiting for a reply the client never asked for: the server speaks first, on timeout.
    let r = c.read_reply().await.expect("timeout reply");
    assert_eq!(
        (r.code, r.text().as_str()),
        (421, "4.4.2 mx.test Error: timeout exceeded")
    );
    assert!(c.read_reply().await.is_err(), "connection closed");
}

#[tokio::test]
async fn dsn_and_smtputf8_parameters_are_parsed_and_kept() {
    use mxraft_queue::{Notify, Ret};
    let f = default_front().await;
    let mut c = ehlo(f.addr).await;
    let r = c
        .command("MAIL FROM:<a@client.test> RET=HDRS ENVID=QQ314159 SMTPUTF8")
        .await
        .expect("mail");
    assert_eq!(r.code, 250, "{r:?}");
    let r = c
        .command(
            "RCPT TO:<üser@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;user+40example.test",
        )
        .await
        .expect("rcpt");
    assert_eq!(r.code, 250, "{r:?}");
    let r = c
        .command("RCPT TO:<v@example.test> NOTIFY=NEVER")
        .await
        .expect("rcpt");
    assert_eq!(r.code, 250, "{r:?}");
    c.send_raw(b"DATA\r\n").await.expect("write");
    assert_eq!(c.read_reply().await.expect("354").code, 354);
    c.send_raw(b"Subject: x\r\n\r\n.\r\n").await.expect("write");
    assert_eq!(c.read_reply().await.expect("250").code, 250);
    let m = &f.recorder.messages()[0];
    assert_eq!(m.params.ret, Some(Ret::Headers));
    assert_eq!(m.params.envid.as_deref(), Some("QQ314159"));
    assert!(m.params.smtputf8);
    assert_eq!(m.recipients[0].0, "üser@example.test");
    assert_eq!(
        m.recipients[0].1.notify,
        Some(Notify {
            success: true,
            failure: true,
            delay: false
        })
    );
    assert_eq!(
        m.recipients[0].1.orcpt.as_deref(),
        Some("rfc822;user+40example.test")
    );
    assert_eq!(m.recipients[1].1.notify, Some(Notify::NEVER));
    assert!(m.trace_header.contains("with UTF8SMTP id"));

    let r = c
        .command("MAIL FROM:<a@client.test> RET=MAYBE")
        .await
        .expect("mail");
    assert_eq!(r.code, 555);
    expect_code(&mut c, "MAIL FROM:<a@client.test> ENVID=a=b", 501).await;
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
    assert_eq!(
        c.command("RCPT TO:<üser@example.test>")
            .await
            .expect("rcpt")
            .code,
        553,
        "UTF-8 needs SMTPUTF8"
    );
    expect_code(&mut c, "RCPT TO:<u@example.test> NOTIFY=NEVER,DELAY", 501).await;
}

#[tokio::test]
async fn etrn_is_answered_per_rfc_1985() {
    let f = default_front().await;
    let mut c = Client::connect(f.addr).await.expect("connect");
    assert_eq!(
        c.command("ETRN example.test").await.expect("etrn").code,
        503,
        "HELO first"
    );
    assert_eq!(c.command("EHLO client.test").await.expect("ehlo").code, 250);
    let r = c.command("ETRN example.test").await.expect("etrn");
    assert_eq!(
        (r.code, r.text().as_str()),
        (250, "2.0.0 Queuing for node example.test started")
    );
    assert_eq!(
        c.command("ETRN @Other.Example").await.expect("etrn").code,
        251
    );
    assert_eq!(
        c.command("ETRN elsewhere.test").await.expect("etrn").code,
        459
    );
    assert_eq!(c.command("ETRN").await.expect("etrn").code, 501);
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
    assert_eq!(
        c.command("ETRN example.test").await.expect("etrn").code,
        503,
        "not inside a transaction"
    );
}

#[tokio::test]
async fn recipient_validation_answers_550_or_450_at_rcpt() {
    let f = default_front().await;
    let mut c = ehlo(f.addr).await;
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
    let r = c
        .command("RCPT TO:<Unknown1@Example.test>")
        .await
        .expect("rcpt");
    assert_eq!(r.code, 550, "{r:?}");
    assert!(
        r.text()
            .starts_with("5.1.1 <Unknown1@Example.test>: Recipient address rejected"),
        "{r:?}"
    );
    let r = c
        .command("RCPT TO:<later@example.test>")
        .await
        .expect("rcpt");
    assert_eq!(r.code, 450, "{r:?}");
    assert!(r.text().starts_with("4.1.1 "), "{r:?}");
    expect_code(&mut c, "RCPT TO:<known@example.test>", 250).await;
}

#[tokio::test]
async fn too_many_received_headers_and_data_before_354_are_refused() {
    let config = SmtpConfig {
        max_received_headers: 3,
        ..SmtpConfig::default()
    };
    let f = front(config, false).await;
    let mut c = ehlo(f.addr).await;
    let looped = b"Received: a\r\nReceived: b\r\nReceived: c\r\nSubject: loop\r\n\r\nx\r\n";
    let r = c
        .send_mail("a@client.test", &["u@example.test"], looped)
        .await
        .expect("send");
    assert_eq!(
        (r.code, r.text().as_str()),
        (554, "5.4.6 Error: too many hops (mail loop?)")
    );
    let fine = b"Received: a\r\nReceived: b\r\nSubject: ok\r\n\r\nx\r\n";
    assert_eq!(
        c.send_mail("a@client.test", &["u@example.test"], fine)
            .await
            .expect("send")
            .code,
        250
    );

    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
    expect_code(&mut c, "RCPT TO:<u@example.test>", 250).await;
    c.send_raw(b"DATA\r\nSubject: too early\r\n\r\nx\r\n.\r\n")
        .await
        .expect("write");
    let r = c.read_reply().await.expect("reply");
    assert_eq!(
        (r.code, r.text().as_str()),
        (554, "5.5.0 Error: SMTP protocol synchronization")
    );
    assert!(c.read_reply().await.is_err(), "the session is closed");
    assert_eq!(f.recorder.messages().len(), 1);
}

#[tokio::test]
async fn bdat_chunks_are_counted_exactly_and_checked_like_data() {
    let config = SmtpConfig {
        max_message_size: 64 * 1024,
        ..SmtpConfig::default()
    };
    let f = front(config, false).await;
    let mut c = ehlo(f.addr).await;

    // Chunks pipelined back to back; a dot at a line start is content, not an end.
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
    expect_code(&mut c, "RCPT TO:<u@example.test>", 250).await;
    let part1 = b"Subject: chunks\r\n\r\n.line\r\n";
    let part2 = b"MAIL FROM:<x@y>\r\n";
    let mut wire = format!("BDAT {}\r\n", part1.len()).into_bytes();
    wire.extend_from_slice(part1);
    wire.extend_from_slice(format!("BDAT {} LAST\r\n", part2.len()).as_bytes());
    wire.extend_from_slice(part2);
    c.send_raw(&wire).await.expect("write");
    let r = c.read_reply().await.expect("chunk 1");
    assert_eq!(
        (r.code, r.text().as_str()),
        (
            250,
            format!("2.0.0 {} octets received", part1.len()).as_str()
        )
    );
    let r = c.read_reply().await.expect("last chunk");
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.text().starts_with("2.0.0 Ok: queued as "));
    let m = &f.recorder.messages()[0];
    assert_eq!(
        &m.body[..],
        b"Subject: chunks\r\n\r\n.line\r\nMAIL FROM:<x@y>\r\n"
    );

    // Out of turn: the octets are read and dropped; the session keeps its place.
    c.send_raw(b"BDAT 9 LAST\r\nRSET\r\nXX\n")
        .await
        .expect("write");
    assert_eq!(c.read_reply().await.expect("503").code, 503);
    assert_eq!(c.command("NOOP").await.expect("noop").code, 250);

    // A bare LF inside a chunk refuses the message.
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
    expect_code(&mut c, "RCPT TO:<u@example.test>", 250).await;
    c.send_raw(b"BDAT 8 LAST\r\nbad\nline")
        .await
        .expect("write");
    assert_eq!(c.read_reply().await.expect("550").code, 550);

    // Too big: 552, the octets still consumed.
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
    expect_code(&mut c, "RCPT TO:<u@example.test>", 250).await;
    let big = vec![b'x'; 70 * 1024];
    c.send_raw(format!("BDAT {}\r\n", big.len()).as_bytes())
        .await
        .expect("write");
    c.send_raw(&big).await.expect("write");
    let r = c.read_reply().await.expect("552");
    assert_eq!(
        (r.code, r.text().as_str()),
        (552, "5.3.4 Error: message file too big")
    );
    assert_eq!(c.command("NOOP").await.expect("noop").code, 250);

    // DATA cannot follow BDAT in one transaction.
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
    expect_code(&mut c, "RCPT TO:<u@example.test>", 250).await;
    c.send_raw(b"BDAT 4\r\nab\r\n").await.expect("write");
    assert_eq!(c.read_reply().await.expect("250").code, 250);
    assert_eq!(c.command("DATA").await.expect("data").code, 503);
    assert_eq!(f.recorder.messages().len(), 1);
}
