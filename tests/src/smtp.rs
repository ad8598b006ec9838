//! A minimal SMTP client for tests: it sends exactly what it is told and returns every reply.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// One reply: its code and its full text (all lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code.
    pub code: u16,
    /// The lines, without the code and separator.
    pub text: String,
}

/// An open SMTP connection.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects and reads the greeting, which must be 220.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        let (r, w) = stream.into_split();
        let mut c = Client {
            reader: BufReader::new(r),
            writer: w,
        };
        let greeting = c.read_reply().await?;
        if greeting.code != 220 {
            bail!("greeting {greeting:?}");
        }
        Ok(c)
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn read_reply(&mut self) -> anyhow::Result<Reply> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("connection closed while waiting for a reply");
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.len() < 3 {
                bail!("malformed reply line {line:?}");
            }
            let code: u16 = line[..3]
                .parse()
                .with_context(|| format!("reply {line:?}"))?;
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, text });
            }
        }
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(bytes).await?;
        Ok(())
    }

    /// Sends one command line and reads its reply.
    pub async fn command(&mut self, line: &str) -> anyhow::Result<Reply> {
        self.send_raw(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }

    /// Runs a whole transaction and returns the reply to the end of data. `body` lines must
    /// end in CRLF; it is dot-stuffed here.
    pub async fn send_mail(
        &mut self,
        from: &str,
        to: &[&str],
        body: &[u8],
    ) -> anyhow::Result<Reply> {
        let r = self.command(&format!("MAIL FROM:<{from}>")).await?;
        if r.code != 250 {
            return Ok(r);
        }
        for rcpt in to {
            let r = self.command(&format!("RCPT TO:<{rcpt}>")).await?;
            if r.code != 250 {
                return Ok(r);
            }
        }
        let r = self.command("DATA").await?;
        if r.code != 354 {
            return Ok(r);
        }
        self.send_raw(&mxraft_smtp::data::encode(body)).await?;
        self.read_reply().await
    }
}

/// Connects, greets with EHLO and sends one message; returns the end-of-data reply.
pub async fn send_one(
    addr: SocketAddr,
    from: &str,
    to: &[&str],
    body: &[u8],
) -> anyhow::Result<Reply> {
    let mut c = Client::connect(addr).await?;
    let r = c.command("EHLO client.test").await?;
    if r.code != 250 {
        bail!("EHLO refused: {r:?}");
    }
    let reply = c.send_mail(from, to, body).await?;
    let _ = c.command("QUIT").await;
    Ok(reply)
}

/// The queue id from a `250 2.0.0 Ok: queued as <id>` reply.
pub fn queued_id(reply: &Reply) -> Option<String> {
    if reply.code != 250 {
        return None;
    }
    reply.text.rsplit(' ').next().map(str::to_owned)
}
