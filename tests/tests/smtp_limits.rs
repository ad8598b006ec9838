//! The SMTP session's limits and TLS against a recording queue: per-client limits, the queue
//! quota, timeouts and the minimum data rate (on paused time), the message memory budget,
//! STARTTLS and implicit TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use mxraft_smtp::SmtpConfig;
use mxraft_tests::front::{
    Recorder, context, default_front, ehlo, expect_code, front, front_with_tls,
};
use mxraft_tests::smtp::Client;

/// A certificate for `mx.test` written to PEM files, loaded as the server would.
fn test_tls(dir: &std::path::Path) -> Arc<mxraft_smtp::TlsStore> {
    let cert = rcgen::generate_simple_self_signed(vec!["mx.test".to_owned()]).expect("certificate");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).expect("write key");
    Arc::new(mxraft_smtp::TlsStore::load(&cert_file, &key_file).expect("TLS loads"))
}

#[tokio::test]
async fn starttls_discards_injected_plaintext_and_starts_the_session_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = front_with_tls(SmtpConfig::default(), false, Some(test_tls(dir.path()))).await;
    let mut c = Client::connect(f.addr).await.expect("connect");
    let ehlo = c.command("EHLO client.test").await.expect("ehlo");
    assert!(ehlo.text().lines().any(|l| l == "STARTTLS"), "{ehlo:?}");
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;

    // CVE-2011-0411: a command pipelined after STARTTLS in plain text must not run.
    c.send_raw(b"STARTTLS\r\nRSET\r\n").await.expect("write");
    let r = c.read_reply().await.expect("220");
    assert_eq!(
        (r.code, r.text().as_str()),
        (220, "2.0.0 Ready to start TLS")
    );
    let mut c = c.upgrade().await.expect("TLS handshake");

    // The first reply over TLS answers our command, not the injected RSET; the transaction and
    // EHLO of before TLS are forgotten.
    let r = c.command("MAIL FROM:<a@client.test>").await.expect("mail");
    assert_eq!(
        (r.code, r.text().as_str()),
        (503, "5.5.1 Error: send HELO/EHLO first")
    );
    let ehlo = c.command("EHLO client.test").await.expect("ehlo");
    assert!(
        !ehlo.text().lines().any(|l| l == "STARTTLS"),
        "not offered twice: {ehlo:?}"
    );
    let again = c.command("STARTTLS").await.expect("starttls");
    assert_eq!(
        (again.code, again.text().as_str()),
        (503, "5.5.1 Error: TLS already active")
    );
    let r = c
        .send_mail(
            "a@client.test",
            &["u@example.test"],
            b"Subject: tls\r\n\r\nx\r\n",
        )
        .await
        .expect("mail");
    assert_eq!(r.code, 250);
    let m = &f.recorder.messages()[0];
    assert!(
        m.trace_header.contains(" with ESMTPS id "),
        "{}",
        m.trace_header
    );
}

#[tokio::test]
async fn starttls_is_refused_when_no_certificate_is_configured() {
    let f = default_front().await;
    let mut c = ehlo(f.addr).await;
    let r = c.command("STARTTLS").await.expect("starttls");
    assert_eq!(r.code, 502);
}

#[tokio::test]
async fn implicit_tls_listener_handshakes_before_the_greeting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = test_tls(dir.path());
    let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let implicit = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = implicit.local_addr().expect("addr");
    let recorder = Recorder::default();
    let ctx = context(SmtpConfig::default(), &recorder, Some(tls));
    let stop = CancellationToken::new();
    tokio::spawn(mxraft_smtp::serve(plain, Some(implicit), ctx, stop.clone()));
    let mut c = Client::connect_tls(addr).await.expect("TLS from the start");
    assert_eq!(c.command("EHLO client.test").await.expect("ehlo").code, 250);
    let r = c
        .send_mail(
            "a@client.test",
            &["u@example.test"],
            b"Subject: 465\r\n\r\nx\r\n",
        )
        .await
        .expect("mail");
    assert_eq!(r.code, 250);
    assert!(
        recorder.messages()[0]
            .trace_header
            .contains(" with ESMTPS id ")
    );
    stop.cancel();
}

#[tokio::test]
async fn per_client_session_and_rate_limits() {
    let config = SmtpConfig {
        max_sessions_per_client: 2,
        max_messages_per_client_per_minute: 2,
        max_recipients_per_client_per_minute: 3,
        ..SmtpConfig::default()
    };
    let f = front(config, false).await;
    let mut a = ehlo(f.addr).await;
    let _b = ehlo(f.addr).await;
    let mut third = Client::connect_unchecked(f.addr).await.expect("connect");
    let greeting = third.read_reply().await.expect("greeting");
    assert_eq!(
        (greeting.code, greeting.text().as_str()),
        (
            421,
            "4.7.0 mx.test Error: too many connections from 127.0.0.1"
        ),
        "third session"
    );

    expect_code(&mut a, "MAIL FROM:<a@client.test>", 250).await;
    for n in 0..3 {
        expect_code(&mut a, &format!("RCPT TO:<u{n}@example.test>"), 250).await;
    }
    let r = a.command("RCPT TO:<u9@example.test>").await.expect("rcpt");
    assert_eq!((r.code, &r.text()[..5]), (450, "4.7.1"), "{r:?}");
    assert_eq!(a.command("RSET").await.expect("rset").code, 250);
    expect_code(&mut a, "MAIL FROM:<a@client.test>", 250).await;
    assert_eq!(a.command("RSET").await.expect("rset").code, 250);
    let r = a.command("MAIL FROM:<a@client.test>").await.expect("mail");
    assert_eq!(
        (r.code, &r.text()[..5]),
        (450, "4.7.1"),
        "third message this minute: {r:?}"
    );
}

#[tokio::test]
async fn a_full_queue_answers_452_at_mail() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let recorder = Recorder {
        full: true,
        ..Recorder::default()
    };
    let ctx = context(SmtpConfig::default(), &recorder, None);
    let stop = CancellationToken::new();
    tokio::spawn(mxraft_smtp::serve(listener, None, ctx, stop.clone()));
    let mut c = ehlo(addr).await;
    let r = c.command("MAIL FROM:<a@client.test>").await.expect("mail");
    assert_eq!(
        (r.code, r.text().as_str()),
        (452, "4.3.1 Error: insufficient system storage")
    );
    stop.cancel();
}

/// A session over an in-memory pipe (no socket), so that a test can run it on paused time:
/// every timeout then fires at its exact virtual instant, however loaded the machine is.
async fn piped(config: SmtpConfig) -> (Client, Recorder) {
    let recorder = Recorder::default();
    let ctx = context(config, &recorder, None);
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let peer: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
    tokio::spawn(mxraft_smtp::serve_connection(
        server_io,
        peer,
        ctx,
        CancellationToken::new(),
    ));
    let mut c = Client::over(client_io).await.expect("greeting");
    assert_eq!(c.command("EHLO client.test").await.expect("ehlo").code, 250);
    (c, recorder)
}

/// Sends `next(i)` every `pause`, up to `sends` times, until the server answers (or the
/// connection fails); returns the server's reply and the virtual time it came at.
async fn send_until_cut(
    c: &mut Client,
    sends: usize,
    pause: Duration,
    mut next: impl FnMut(usize) -> Vec<u8>,
) -> (mxraft_tests::smtp::Reply, tokio::time::Instant) {
    for i in 0..sends {
        if c.send_raw(&next(i)).await.is_err() {
            break;
        }
        if let Ok(r) = tokio::time::timeout(pause, c.read_reply()).await {
            return (
                r.expect("a reply before the close"),
                tokio::time::Instant::now(),
            );
        }
    }
    let r = c.read_reply().await.expect("a reply before the close");
    (r, tokio::time::Instant::now())
}

#[tokio::test(start_paused = true)]
async fn a_client_trickling_data_is_cut_off_by_the_minimum_rate() {
    let config = SmtpConfig {
        data_timeout: Duration::from_secs(1),
        min_data_rate: 1000,
        ..SmtpConfig::default()
    };
    // 20 kB/s for 2.5 s: longer than data_timeout, faster than the minimum rate: accepted.
    let (mut fast, recorder) = piped(config.clone()).await;
    expect_code(&mut fast, "MAIL FROM:<a@client.test>", 250).await;
    expect_code(&mut fast, "RCPT TO:<u@example.test>", 250).await;
    assert_eq!(fast.command("DATA").await.expect("data").code, 354);
    fast.send_raw(b"Subject: steady\r\n\r\n")
        .await
        .expect("write");
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..25 {
        fast.send_raw(line.repeat(2).as_bytes())
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fast.send_raw(b".\r\n").await.expect("write");
    assert_eq!(fast.read_reply().await.expect("reply").code, 250);
    assert_eq!(
        recorder.messages().len(),
        1,
        "the steady message was queued"
    );

    // One byte every 300 ms: the deadline is 1 s plus 1 ms per byte received, so the cut
    // comes at 1.004 s, while the fifth byte is due.
    let (mut slow, recorder) = piped(config).await;
    expect_code(&mut slow, "MAIL FROM:<a@client.test>", 250).await;
    expect_code(&mut slow, "RCPT TO:<u@example.test>", 250).await;
    assert_eq!(slow.command("DATA").await.expect("data").code, 354);
    let started = tokio::time::Instant::now();
    let pattern = b"Subject: slow\r\n\r\nbody";
    let (cut, at) = send_until_cut(&mut slow, 40, Duration::from_millis(300), |i| {
        vec![pattern[i % pattern.len()]]
    })
    .await;
    assert_eq!(
        (cut.code, cut.text().as_str()),
        (421, "4.4.2 mx.test Error: timeout exceeded")
    );
    let after = at - started;
    assert!(
        after >= Duration::from_secs(1) && after < Duration::from_millis(1200),
        "cut off after {after:?}"
    );
    assert!(recorder.messages().is_empty(), "nothing of it was queued");
}

#[tokio::test(start_paused = true)]
async fn data_past_the_size_limit_does_not_extend_the_deadline() {
    // 64 KiB may take data_timeout + 96 KiB / 100 kB/s ≈ 1.98 s in all. The client sends 20 kB
    // every 100 ms, far above the minimum rate, and never ends the message: once it is past
    // the limit, its bytes extend nothing and it is cut off.
    let config = SmtpConfig {
        data_timeout: Duration::from_secs(1),
        min_data_rate: 100_000,
        max_message_size: 64 * 1024,
        ..SmtpConfig::default()
    };
    let (mut c, recorder) = piped(config).await;
    expect_code(&mut c, "MAIL FROM:<a@client.test>", 250).await;
    expect_code(&mut c, "RCPT TO:<u@example.test>", 250).await;
    assert_eq!(c.command("DATA").await.expect("data").code, 354);
    let started = tokio::time::Instant::now();
    let block = format!("{}\r\n", "x".repeat(998)).repeat(20).into_bytes();
    // Without an overall deadline this would go on for as long as the client sends.
    let (cut, at) =
        send_until_cut(&mut c, 100, Duration::from_millis(100), |_| block.clone()).await;
    let after = at - started;
    assert_eq!(
        (cut.code, cut.text().as_str()),
        (421, "4.4.2 mx.test Error: timeout exceeded"),
        "after {after:?}"
    );
    assert!(
        after >= Duration::from_millis(1900) && after < Duration::from_millis(2100),
        "cut off after {after:?}"
    );
    assert!(recorder.messages().is_empty(), "nothing was queued");
}

#[tokio::test(start_paused = true)]
async fn a_command_trickled_byte_by_byte_times_out() {
    let config = SmtpConfig {
        command_timeout: Duration::from_secs(1),
        ..SmtpConfig::default()
    };
    let (mut c, _) = piped(config).await;
    let started = tokio::time::Instant::now();
    // One byte every 200 ms never completes a line within the 1 s command timeout, however
    // long the client keeps it up.
    let (r, at) = send_until_cut(&mut c, 30, Duration::from_millis(200), |i| {
        vec![b"NOOP and more and more and more"[i]]
    })
    .await;
    assert_eq!(
        (r.code, r.text().as_str()),
        (421, "4.4.2 mx.test Error: timeout exceeded")
    );
    assert_eq!(
        at - started,
        Duration::from_secs(1),
        "cut at the command timeout"
    );
}

/// Sends `body` in one transaction without `SIZE=`; returns the reply to the end of data.
async fn unsized_message(c: &mut Client, body: &str) -> mxraft_tests::smtp::Reply {
    expect_code(c, "MAIL FROM:<b@client.test>", 250).await;
    expect_code(c, "RCPT TO:<u@example.test>", 250).await;
    assert_eq!(c.command("DATA").await.expect("data").code, 354);
    c.send_raw(&mxraft_smtp::wire::encode_data(body.as_bytes()))
        .await
        .expect("write");
    c.read_reply().await.expect("reply")
}

#[tokio::test]
async fn the_message_memory_budget_defers_what_it_cannot_hold() {
    // Room for one message of the largest size and a bit.
    let config = SmtpConfig {
        max_message_size: 192 * 1024,
        max_message_memory: 256 * 1024,
        ..SmtpConfig::default()
    };
    let f = front(config, false).await;
    let mut a = ehlo(f.addr).await;
    let mut b = ehlo(f.addr).await;

    // A declared size is reserved at MAIL; what does not fit is refused for now.
    expect_code(&mut a, "MAIL FROM:<a@client.test> SIZE=196000", 250).await;
    let r = b
        .command("MAIL FROM:<b@client.test> SIZE=100000")
        .await
        .expect("mail");
    assert_eq!(
        (r.code, r.text().split(' ').next()),
        (452, Some("4.3.1")),
        "{r:?}"
    );

    // Without SIZE the reservation grows with the data: over the budget the message is
    // deferred, never cut short or queued in part.
    let body = ("y".repeat(900) + "\r\n").repeat(100);
    let r = unsized_message(&mut b, &body).await;
    assert_eq!(
        (r.code, r.text().split(' ').next()),
        (451, Some("4.3.1")),
        "{r:?}"
    );

    // The first transaction ends; its share comes back and the retry goes through.
    expect_code(&mut a, "RSET", 250).await;
    assert_eq!(unsized_message(&mut b, &body).await.code, 250);
    let queued = f.recorder.messages();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].body.len(), body.len());
}
