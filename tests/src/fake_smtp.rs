//! A scripted SMTP server standing in for a primary or a sender's mail server in tests: it
//! answers each recipient with the code a rule gives, can offer STARTTLS, and records every
//! accepted message with the envelope lines it came with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use mxraft_smtp::wire::DataDecoder;

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `MAIL FROM:` argument, parameters included.
    pub mail_from: String,
    /// The accepted recipients.
    pub rcpts: Vec<String>,
    /// The `RCPT TO:` arguments of the accepted recipients, parameters included.
    pub rcpt_lines: Vec<String>,
    /// The message content.
    pub data: Vec<u8>,
    /// Whether it came over TLS.
    pub tls: bool,
}

/// Decides the reply code for a recipient, given how many times it was offered before.
pub type Rule = Arc<dyn Fn(&str, u32) -> u16 + Send + Sync>;

/// What the server offers.
#[derive(Clone)]
pub struct FakeOptions {
    /// EHLO keywords (besides STARTTLS).
    pub extensions: Vec<String>,
    /// Offer STARTTLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Waits before the 354 reply of the first DATA commands, in order (none after the list).
    pub data_delays: Vec<std::time::Duration>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            extensions: [
                "PIPELINING",
                "8BITMIME",
                "DSN",
                "SMTPUTF8",
                "SIZE 100000000",
            ]
            .map(String::from)
            .to_vec(),
            tls: None,
            data_delays: Vec::new(),
        }
    }
}

/// A TLS configuration with a fresh self-signed certificate for `name`.
pub fn self_signed_tls(name: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()])?;
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)?;
    Ok(Arc::new(config))
}

/// One session, from the server's side.
#[derive(Debug, Clone)]
pub struct SessionLog {
    /// When the client connected.
    pub opened: std::time::Instant,
    /// When the session ended (QUIT or the client closing), if it has.
    pub closed: Option<std::time::Instant>,
    /// DATA commands the session got.
    pub data_commands: u32,
    /// Messages it accepted.
    pub accepted: u32,
}

/// A running fake server.
pub struct FakeSmtp {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    offered: Arc<Mutex<HashMap<String, u32>>>,
    sessions: Arc<Mutex<Vec<SessionLog>>>,
    stop: CancellationToken,
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    offered: Arc<Mutex<HashMap<String, u32>>>,
    sessions: Arc<Mutex<Vec<SessionLog>>>,
    data_commands: std::sync::atomic::AtomicUsize,
    rule: Rule,
    options: FakeOptions,
}

impl FakeSmtp {
    /// Starts a server on `127.0.0.1:0` (or on `addr`) answering RCPTs by `rule`.
    pub async fn start(addr: Option<SocketAddr>, rule: Rule) -> anyhow::Result<FakeSmtp> {
        Self::start_with(addr, rule, FakeOptions::default()).await
    }

    /// Like [`start`](Self::start), with other extensions or STARTTLS.
    pub async fn start_with(
        addr: Option<SocketAddr>,
        rule: Rule,
        options: FakeOptions,
    ) -> anyhow::Result<FakeSmtp> {
        let listener =
            TcpListener::bind(addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))))
                .await?;
        Self::serve(listener, rule, options)
    }

    /// Starts on a port taken earlier with [`down_port`]: until now connections to it were
    /// refused, as by a primary that is down.
    pub fn start_on(socket: tokio::net::TcpSocket, rule: Rule) -> anyhow::Result<FakeSmtp> {
        Self::serve(socket.listen(128)?, rule, FakeOptions::default())
    }

    fn serve(listener: TcpListener, rule: Rule, options: FakeOptions) -> anyhow::Result<FakeSmtp> {
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let offered = Arc::new(Mutex::new(HashMap::new()));
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            received: received.clone(),
            offered: offered.clone(),
            sessions: sessions.clone(),
            data_commands: std::sync::atomic::AtomicUsize::new(0),
            rule,
            options,
        });
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let shared = shared.clone();
                        let n = {
                            let Ok(mut s) = shared.sessions.lock() else { continue };
                            s.push(SessionLog {
                                opened: std::time::Instant::now(),
                                closed: None,
                                data_commands: 0,
                                accepted: 0,
                            });
                            s.len() - 1
                        };
                        tokio::spawn(async move {
                            let _ = session(Box::new(stream), shared.clone(), n).await;
                            if let Ok(mut s) = shared.sessions.lock() {
                                s[n].closed = Some(std::time::Instant::now());
                            }
                        });
                    }
                }
            }
        });
        Ok(FakeSmtp {
            addr,
            received,
            offered,
            sessions,
            stop,
        })
    }

    /// A server accepting everything.
    pub async fn accept_all() -> anyhow::Result<FakeSmtp> {
        Self::start(None, Arc::new(|_, _| 250)).await
    }

    /// What it accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Every session so far, in the order they connected.
    pub fn sessions(&self) -> Vec<SessionLog> {
        self.sessions.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// How many times `rcpt` was offered.
    pub fn offered(&self, rcpt: &str) -> u32 {
        self.offered
            .lock()
            .map(|o| o.get(rcpt).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// A loopback port that refuses connections (bound, not listening) and that no one else can
/// take, for a primary that is down; [`FakeSmtp::start_on`] brings it up.
pub fn down_port() -> anyhow::Result<(tokio::net::TcpSocket, SocketAddr)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = socket.local_addr()?;
    Ok((socket, addr))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

impl Conn {
    async fn line(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(String::from_utf8_lossy(&raw).trim_end().to_owned()));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    async fn fill(&mut self) -> anyhow::Result<bool> {
        let mut chunk = vec![0u8; 65536];
        let n = self.io.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        self.io.write_all(text.as_bytes()).await?;
        Ok(self.io.flush().await?)
    }
}

fn lock<T>(m: &Mutex<T>) -> anyhow::Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|e| anyhow::anyhow!("{e}"))
}

async fn session(io: Box<dyn Io>, shared: Arc<Shared>, n: usize) -> anyhow::Result<()> {
    let mut c = Conn {
        io,
        buf: Vec::new(),
    };
    let mut tls = false;
    c.say("220 fake.test ESMTP\r\n").await?;
    let mut mail_from = String::new();
    let mut rcpts = Vec::new();
    let mut rcpt_lines = Vec::new();
    while let Some(line) = c.line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            let mut ext = shared.options.extensions.clone();
            if shared.options.tls.is_some() && !tls {
                ext.push("STARTTLS".into());
            }
            let mut reply = String::from("250-fake.test\r\n");
            for (i, e) in ext.iter().enumerate() {
                let sep = if i + 1 == ext.len() { ' ' } else { '-' };
                reply.push_str(&format!("250{sep}{e}\r\n"));
            }
            if ext.is_empty() {
                reply = "250 fake.test\r\n".into();
            }
            c.say(&reply).await?;
        } else if upper == "STARTTLS" && !tls {
            let Some(config) = shared.options.tls.clone() else {
                c.say("502 5.5.1 no TLS here\r\n").await?;
                continue;
            };
            c.say("220 2.0.0 ready\r\n").await?;
            let plain = std::mem::replace(&mut c.io, Box::new(tokio::io::empty()));
            let stream = TlsAcceptor::from(config).accept(plain).await?;
            c = Conn {
                io: Box::new(stream),
                buf: Vec::new(),
            };
            tls = true;
        } else if upper.starts_with("HELO") {
            c.say("250 fake.test\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            mail_from = line[10..].to_owned();
            rcpts.clear();
            rcpt_lines.clear();
            c.say("250 2.1.0 ok\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            let args = line[8..].to_owned();
            let addr = args
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches(['<', '>'])
                .to_owned();
            let n = {
                let mut o = lock(&shared.offered)?;
                let n = o.entry(addr.clone()).or_insert(0);
                *n += 1;
                *n - 1
            };
            let code = (shared.rule)(&addr, n);
            let reply = match code {
                250 => "250 2.1.5 ok\r\n".to_string(),
                c if c >= 500 => format!("{c} 5.1.1 <{addr}>: user unknown\r\n"),
                c => format!("{c} 4.2.0 <{addr}>: try again later\r\n"),
            };
            if code == 250 {
                rcpts.push(addr);
                rcpt_lines.push(args);
            }
            c.say(&reply).await?;
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                c.say("554 5.5.1 no valid recipients\r\n").await?;
                continue;
            }
            lock(&shared.sessions)?[n].data_commands += 1;
            let k = shared
                .data_commands
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(delay) = shared.options.data_delays.get(k) {
                // Stall, but notice a client that gives up and closes meanwhile.
                let until = tokio::time::Instant::now() + *delay;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        more = c.fill() => {
                            if !more.unwrap_or(false) {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            c.say("354 go ahead\r\n").await?;
            let mut decoder = DataDecoder::new(200 * 1024 * 1024, 100_000);
            loop {
                if let Some(n) = decoder.feed(&c.buf) {
                    c.buf.drain(..n);
                    break;
                }
                c.buf.clear();
                if !c.fill().await? {
                    return Ok(());
                }
            }
            lock(&shared.received)?.push(Received {
                mail_from: mail_from.clone(),
                rcpts: std::mem::take(&mut rcpts),
                rcpt_lines: std::mem::take(&mut rcpt_lines),
                data: decoder.into_message(),
                tls,
            });
            lock(&shared.sessions)?[n].accepted += 1;
            c.say("250 2.0.0 accepted\r\n").await?;
        } else if upper == "RSET" || upper.starts_with("NOOP") {
            rcpts.clear();
            rcpt_lines.clear();
            c.say("250 2.0.0 ok\r\n").await?;
        } else if upper == "QUIT" {
            c.say("221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            c.say("502 5.5.1 not implemented\r\n").await?;
        }
    }
    Ok(())
}
