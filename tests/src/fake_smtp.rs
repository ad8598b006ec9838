//! A scripted SMTP server standing in for a primary or a sender's mail server in tests: it
//! answers each recipient with the code a rule gives and records every accepted message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use mxraft_smtp::data::DataDecoder;

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `MAIL FROM` line's argument.
    pub mail_from: String,
    /// The accepted recipients.
    pub rcpts: Vec<String>,
    /// The message content.
    pub data: Vec<u8>,
}

/// Decides the reply code for a recipient, given how many times it was offered before.
pub type Rule = Arc<dyn Fn(&str, u32) -> u16 + Send + Sync>;

/// A running fake server.
pub struct FakeSmtp {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    offered: Arc<Mutex<HashMap<String, u32>>>,
    stop: CancellationToken,
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeSmtp {
    /// Starts a server on `127.0.0.1:0` (or on `addr` when given) answering RCPTs by `rule`.
    pub async fn start(addr: Option<SocketAddr>, rule: Rule) -> anyhow::Result<FakeSmtp> {
        let listener =
            TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr"))).await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let offered = Arc::new(Mutex::new(HashMap::new()));
        let stop = CancellationToken::new();
        let (r, o, s) = (received.clone(), offered.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (r, o, rule) = (r.clone(), o.clone(), rule.clone());
                        tokio::spawn(async move {
                            let _ = session(stream, r, o, rule).await;
                        });
                    }
                }
            }
        });
        Ok(FakeSmtp {
            addr,
            received,
            offered,
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

    /// How many times `rcpt` was offered.
    pub fn offered(&self, rcpt: &str) -> u32 {
        self.offered
            .lock()
            .map(|o| o.get(rcpt).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    offered: Arc<Mutex<HashMap<String, u32>>>,
    rule: Rule,
) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 fake.test ESMTP\r\n").await?;
    let mut mail_from = String::new();
    let mut rcpts = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_owned();
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            w.write_all(b"250-fake.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-DSN\r\n250 SIZE 100000000\r\n").await?;
        } else if upper.starts_with("HELO") {
            w.write_all(b"250 fake.test\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            mail_from = line[10..].to_owned();
            rcpts.clear();
            w.write_all(b"250 2.1.0 ok\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            let addr = line[8..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches(['<', '>'])
                .to_owned();
            let n = {
                let mut o = offered.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
                let n = o.entry(addr.clone()).or_insert(0);
                *n += 1;
                *n - 1
            };
            let code = rule(&addr, n);
            let reply = match code {
                250 => "250 2.1.5 ok\r\n".to_string(),
                c if c >= 500 => format!("{c} 5.1.1 <{addr}>: user unknown\r\n"),
                c => format!("{c} 4.2.0 <{addr}>: try again later\r\n"),
            };
            if code == 250 {
                rcpts.push(addr);
            }
            w.write_all(reply.as_bytes()).await?;
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                w.write_all(b"554 5.5.1 no valid recipients\r\n").await?;
                continue;
            }
            w.write_all(b"354 go ahead\r\n").await?;
            let mut decoder = DataDecoder::new(200 * 1024 * 1024, 100_000);
            let mut buf = r.buffer().to_vec();
            let consumed_now = buf.len();
            r.consume(consumed_now);
            loop {
                if let Some(n) = decoder.feed(&buf) {
                    // Bytes after the end of data are the next commands: hand them back.
                    let rest = buf[n..].to_vec();
                    let data =
                        std::mem::replace(&mut decoder, DataDecoder::new(1, 1)).into_message();
                    received
                        .lock()
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .push(Received {
                            mail_from: mail_from.clone(),
                            rcpts: std::mem::take(&mut rcpts),
                            data,
                        });
                    w.write_all(b"250 2.0.0 accepted\r\n").await?;
                    if !rest.is_empty() {
                        // mxraft waits for the reply to the final dot; anything else is a bug.
                        w.write_all(b"421 4.3.0 fake server: commands pipelined after DATA\r\n")
                            .await?;
                        return Ok(());
                    }
                    break;
                }
                buf.clear();
                let mut chunk = vec![0u8; 65536];
                let n = r.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        } else if upper == "RSET" || upper.starts_with("NOOP") {
            rcpts.clear();
            w.write_all(b"250 2.0.0 ok\r\n").await?;
        } else if upper == "QUIT" {
            w.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"502 5.5.1 not implemented\r\n").await?;
        }
    }
}
