//! The SMTP client that hands mail to the primary (RFC 5321), with opportunistic STARTTLS.
//!
//! One [`Connection`] carries several messages. Each message's envelope is pipelined (MAIL,
//! every RCPT and DATA in one write) when the server offers PIPELINING, and the result is per
//! recipient. The body goes out dot-stuffed with every line ending in CRLF: a bare CR or LF is
//! never put on the wire. The transaction of one message is in `send.rs`; the opportunistic
//! TLS configuration in `tls.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

use mxraft_queue::{MailParams, RcptParams};
use mxraft_smtp::wire::{Reply, ReplyReader};

mod send;
mod tls;

pub use tls::opportunistic_tls;

/// RFC 5321 §4.5.3.2 client timeouts.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Initial 220 greeting (5 min).
    pub greeting: Duration,
    /// Replies to EHLO, MAIL, RCPT, RSET, STARTTLS, QUIT (5 min).
    pub command: Duration,
    /// The 354 reply to DATA (2 min).
    pub data_init: Duration,
    /// Each write of message data (3 min).
    pub data_block: Duration,
    /// The reply to the final dot (10 min).
    pub data_done: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            greeting: Duration::from_secs(300),
            command: Duration::from_secs(300),
            data_init: Duration::from_secs(120),
            data_block: Duration::from_secs(180),
            data_done: Duration::from_secs(600),
        }
    }
}

/// How long `QUIT` waits for its reply.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// Why a session was cut short by its [`Cutoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// The claim's lease (less the margin) ran out: another node may deliver now.
    LeaseEnded,
    /// The node is shutting down.
    Shutdown,
}

/// Ends every wait of a session early: when the lease of the claim it delivers runs out (the
/// deadline moves on as renewals commit), or when the node shuts down. A command or reply wait
/// never outlives the lease, so a node cut off from the cluster stops sending before the
/// leader may grant its messages to another node.
#[derive(Clone)]
pub struct Cutoff {
    deadline: tokio::sync::watch::Receiver<tokio::time::Instant>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Cutoff {
    /// A cutoff at `deadline` (moved by the sender) or at `shutdown`.
    pub fn new(
        deadline: tokio::sync::watch::Receiver<tokio::time::Instant>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Cutoff {
        Cutoff { deadline, shutdown }
    }

    /// No cutoff (probes and verification callouts, which have their own timeouts).
    pub fn none() -> Cutoff {
        let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let (tx, rx) = tokio::sync::watch::channel(far);
        // The receiver keeps the last value once the sender is gone.
        drop(tx);
        Cutoff::new(rx, tokio_util::sync::CancellationToken::new())
    }

    /// Whether the cutoff has passed.
    pub fn reason(&self) -> Option<CutReason> {
        if self.shutdown.is_cancelled() {
            Some(CutReason::Shutdown)
        } else if *self.deadline.borrow() <= tokio::time::Instant::now() {
            Some(CutReason::LeaseEnded)
        } else {
            None
        }
    }

    /// Resolves when the cutoff passes; `shutdown` counts only when `on_shutdown` is true.
    async fn reached(&self, on_shutdown: bool) -> CutReason {
        let mut deadline = self.deadline.clone();
        loop {
            let at = *deadline.borrow_and_update();
            tokio::select! {
                _ = self.shutdown.cancelled(), if on_shutdown => return CutReason::Shutdown,
                _ = tokio::time::sleep_until(at) => {
                    if *deadline.borrow() <= tokio::time::Instant::now() {
                        return CutReason::LeaseEnded;
                    }
                }
                changed = deadline.changed() => {
                    if changed.is_err() {
                        // No more renewals: the last deadline stands.
                        let last = *deadline.borrow();
                        tokio::time::sleep_until(last).await;
                        return CutReason::LeaseEnded;
                    }
                }
            }
        }
    }

    /// Runs `op` unless the cutoff passes first.
    async fn bound<T>(
        &self,
        on_shutdown: bool,
        op: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::select! {
            biased;
            why = self.reached(on_shutdown) => Err(ClientError::Cut(why)),
            r = op => r,
        }
    }
}

/// The session failed; the connection is unusable afterwards.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(String),
    /// The server did not answer in time.
    #[error("timeout waiting for {0}")]
    Timeout(&'static str),
    /// The server answered something that is not SMTP.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused the session (greeting or EHLO).
    #[error("session refused: {0}")]
    Refused(String),
    /// The TLS handshake after STARTTLS failed or timed out; the same host may be tried in
    /// plain text (opportunistic TLS).
    #[error("TLS handshake: {0}")]
    Tls(String),
    /// The [`Cutoff`] passed: the session was closed without finishing the transaction.
    #[error("cut short: {0:?}")]
    Cut(CutReason),
}

/// What a message is, for sending.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The reverse path; empty for `<>`.
    pub sender: &'a str,
    /// The `MAIL FROM` parameters received with it.
    pub params: &'a MailParams,
    /// The recipients to send to now.
    pub recipients: Vec<(&'a str, &'a RcptParams)>,
    /// The message: trace header followed by the body.
    pub content: &'a [u8],
    /// Whether the envelope needs SMTPUTF8 (non-ASCII addresses or the client asked for it).
    pub needs_smtputf8: bool,
}

/// The result of sending one message, per recipient (same order as given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// Accepted by the server (2xx after the final dot).
    Delivered(String),
    /// Refused for good (5xx, or a condition that cannot change).
    Failed(String),
    /// Refused for now (4xx).
    Deferred(String),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What the server offered in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870), with the limit when given.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
}

fn parse_ehlo(reply: &Reply) -> Extensions {
    let mut ext = Extensions::default();
    for line in reply.lines.iter().skip(1) {
        let mut words = line.split_whitespace();
        let keyword = words.next().unwrap_or("").to_ascii_uppercase();
        match keyword.as_str() {
            "PIPELINING" => ext.pipelining = true,
            "SIZE" => ext.size = Some(words.next().and_then(|w| w.parse().ok()).unwrap_or(0)),
            "8BITMIME" => ext.eight_bit = true,
            "SMTPUTF8" => ext.smtputf8 = true,
            "DSN" => ext.dsn = true,
            "STARTTLS" => ext.starttls = true,
            _ => {}
        }
    }
    ext
}

/// An open session with a server.
pub struct Connection {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    ext: Extensions,
    tls: bool,
    timeouts: Timeouts,
    cutoff: Cutoff,
    /// The final dot of a message went out and its reply has not come yet: if the session
    /// ends now, the primary may or may not have taken the message.
    in_doubt: bool,
    /// The host name connected to (for logs and DSNs).
    pub host: String,
    /// The address connected to.
    pub addr: SocketAddr,
}

impl Connection {
    /// Connects, reads the greeting, says EHLO (HELO if EHLO is refused), and upgrades with
    /// STARTTLS when offered and `tls` is given. Every wait of the session, from the connect
    /// on, ends at `cutoff`.
    pub async fn open(
        addr: SocketAddr,
        host: &str,
        helo: &str,
        tls: Option<&Arc<rustls::ClientConfig>>,
        timeouts: &Timeouts,
        cutoff: &Cutoff,
    ) -> Result<Connection, ClientError> {
        let tcp = cutoff
            .bound(true, async {
                tokio::time::timeout(timeouts.connect, TcpStream::connect(addr))
                    .await
                    .map_err(|_| ClientError::Timeout("connect"))?
                    .map_err(|e| ClientError::Io(format!("connect to {addr}: {e}")))
            })
            .await?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            stream: Box::new(tcp),
            buf: Vec::with_capacity(4096),
            ext: Extensions::default(),
            tls: false,
            timeouts: timeouts.clone(),
            cutoff: cutoff.clone(),
            in_doubt: false,
            host: host.to_owned(),
            addr,
        };
        let greeting = conn.read_reply(timeouts.greeting, "greeting").await?;
        if greeting.code != 220 {
            return Err(ClientError::Refused(greeting.summary()));
        }
        conn.hello(helo).await?;
        if let Some(config) = tls
            && conn.ext.starttls
        {
            conn.starttls(helo, config).await?;
        }
        Ok(conn)
    }

    async fn hello(&mut self, helo: &str) -> Result<(), ClientError> {
        let reply = self.command(&format!("EHLO {helo}"), "EHLO").await?;
        if reply.code == 250 {
            self.ext = parse_ehlo(&reply);
            return Ok(());
        }
        let reply = self.command(&format!("HELO {helo}"), "HELO").await?;
        if reply.code != 250 {
            return Err(ClientError::Refused(reply.summary()));
        }
        self.ext = Extensions::default();
        Ok(())
    }

    async fn starttls(
        &mut self,
        helo: &str,
        config: &Arc<rustls::ClientConfig>,
    ) -> Result<(), ClientError> {
        let reply = self.command("STARTTLS", "STARTTLS").await?;
        if reply.code != 220 {
            // Opportunistic: go on in plain text.
            return Ok(());
        }
        if !self.buf.is_empty() {
            return Err(ClientError::Protocol(
                "data after the STARTTLS reply".into(),
            ));
        }
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .or_else(|_| rustls::pki_types::ServerName::try_from(self.addr.ip().to_string()))
            .map_err(|e| ClientError::Protocol(format!("server name: {e}")))?;
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::empty()));
        let connector = TlsConnector::from(config.clone());
        let tls = tokio::time::timeout(self.timeouts.command, connector.connect(name, plain))
            .await
            .map_err(|_| ClientError::Tls("timed out".into()))?
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        self.stream = Box::new(tls);
        self.tls = true;
        // RFC 3207: everything learnt before TLS is forgotten; greet again.
        self.hello(helo).await
    }

    /// What the server offers.
    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    /// Whether the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether the last message's final dot went out without its reply coming back.
    pub fn in_doubt(&self) -> bool {
        self.in_doubt
    }

    async fn write(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
        what: &'static str,
    ) -> Result<(), ClientError> {
        let cutoff = self.cutoff.clone();
        let stream = &mut self.stream;
        cutoff
            .bound(true, async {
                tokio::time::timeout(timeout, async {
                    stream.write_all(bytes).await?;
                    stream.flush().await
                })
                .await
                .map_err(|_| ClientError::Timeout(what))?
                .map_err(|e| ClientError::Io(format!("write: {e}")))
            })
            .await
    }

    async fn command(&mut self, line: &str, what: &'static str) -> Result<Reply, ClientError> {
        self.write(
            format!("{line}\r\n").as_bytes(),
            self.timeouts.command,
            what,
        )
        .await?;
        self.read_reply(self.timeouts.command, what).await
    }

    async fn read_reply(
        &mut self,
        timeout: Duration,
        what: &'static str,
    ) -> Result<Reply, ClientError> {
        // The reply to a final dot is awaited through a shutdown (the primary may already have
        // the message), but never past the lease.
        let on_shutdown = !self.in_doubt;
        let cutoff = self.cutoff.clone();
        cutoff
            .bound(on_shutdown, async {
                tokio::time::timeout(timeout, self.read_reply_inner())
                    .await
                    .map_err(|_| ClientError::Timeout(what))?
            })
            .await
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, ClientError> {
        let mut reader = ReplyReader::default();
        loop {
            let line = loop {
                if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = self.buf.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&raw)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    break text;
                }
                if self.buf.len() > 64 * 1024 {
                    return Err(ClientError::Protocol("reply line too long".into()));
                }
                let mut chunk = [0u8; 4096];
                let n = self
                    .stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| ClientError::Io(format!("read: {e}")))?;
                if n == 0 {
                    return Err(ClientError::Io("connection closed by the server".into()));
                }
                self.buf.extend_from_slice(&chunk[..n]);
            };
            match reader.push(&line) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
        }
    }

    /// Asks the server whether it would accept `rcpt` (an address verification, "SMTP
    /// callout"): `MAIL FROM:<>`, `RCPT TO`, `RSET`. `Some(true)` for 2xx, `Some(false)` for
    /// 5xx, `None` when the server cannot tell now (4xx).
    pub async fn probe_recipient(&mut self, rcpt: &str) -> Result<Option<bool>, ClientError> {
        let mail = self.command("MAIL FROM:<>", "MAIL").await?;
        if !mail.is_positive() {
            return Err(ClientError::Refused(mail.summary()));
        }
        let reply = self.command(&format!("RCPT TO:<{rcpt}>"), "RCPT").await?;
        self.rset().await?;
        Ok(match reply.code {
            200..=299 => Some(true),
            500..=599 => Some(false),
            _ => None,
        })
    }

    async fn rset(&mut self) -> Result<(), ClientError> {
        let reply = self.command("RSET", "RSET").await?;
        if reply.code != 250 {
            return Err(ClientError::Protocol(format!(
                "RSET refused: {}",
                reply.summary()
            )));
        }
        Ok(())
    }

    /// Ends the session politely: `QUIT`, waiting a few seconds at most for its reply (the
    /// cutoff no longer applies: there is nothing left to deliver).
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(QUIT_WAIT, async {
            self.stream.write_all(b"QUIT\r\n").await?;
            self.stream.flush().await?;
            let mut chunk = [0u8; 512];
            let _ = self.stream.read(&mut chunk).await?;
            self.stream.shutdown().await
        })
        .await;
    }

    /// Ends a session cut short in the middle of a command: the connection is closed, which
    /// makes the primary drop an unfinished transaction (a message without its final dot is
    /// never delivered).
    pub async fn abort(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ehlo_keywords_are_read() {
        let reply = Reply {
            code: 250,
            lines: vec![
                "mx.test".into(),
                "PIPELINING".into(),
                "SIZE 1000".into(),
                "8BITMIME".into(),
                "dsn".into(),
                "STARTTLS".into(),
            ],
        };
        let ext = parse_ehlo(&reply);
        assert_eq!(
            ext,
            Extensions {
                pipelining: true,
                size: Some(1000),
                eight_bit: true,
                smtputf8: false,
                dsn: true,
                starttls: true
            }
        );
    }
}
