//! A minimal SMTP client for tests: it sends exactly what it is told and returns every reply.
//! It can switch to TLS (STARTTLS) or start with it (implicit TLS).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

pub use mxraft_smtp::wire::Reply;
use mxraft_smtp::wire::ReplyReader;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open SMTP connection.
pub struct Client {
    reader: BufReader<ReadHalf<Box<dyn Io>>>,
    writer: WriteHalf<Box<dyn Io>>,
}

/// A TLS client configuration that accepts any certificate (the test servers' are self-signed).
pub fn tls_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    Ok(mxraft_delivery::client::opportunistic_tls()?)
}

async fn handshake(stream: Box<dyn Io>) -> anyhow::Result<Box<dyn Io>> {
    let name = rustls::pki_types::ServerName::try_from("mx.test")?;
    let tls = TlsConnector::from(tls_config()?)
        .connect(name, stream)
        .await?;
    Ok(Box::new(tls))
}

impl Client {
    fn from_stream(stream: Box<dyn Io>) -> Client {
        let (r, w) = tokio::io::split(stream);
        Client {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    /// Connects and reads the greeting, which must be 220.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        let mut c = Client::connect_unchecked(addr).await?;
        c.expect_greeting().await?;
        Ok(c)
    }

    /// Connects without reading the greeting, for a test that checks it itself.
    pub async fn connect_unchecked(addr: SocketAddr) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        Ok(Client::from_stream(Box::new(stream)))
    }

    /// Speaks SMTP over `io` (e.g. one end of `tokio::io::duplex`) and reads the greeting.
    pub async fn over(
        io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    ) -> anyhow::Result<Client> {
        let mut c = Client::from_stream(Box::new(io));
        c.expect_greeting().await?;
        Ok(c)
    }

    /// Connects with TLS from the first byte (implicit TLS) and reads the greeting.
    pub async fn connect_tls(addr: SocketAddr) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        let mut c = Client::from_stream(handshake(Box::new(stream)).await?);
        c.expect_greeting().await?;
        Ok(c)
    }

    async fn expect_greeting(&mut self) -> anyhow::Result<()> {
        let greeting = self.read_reply().await?;
        if greeting.code != 220 {
            bail!("greeting {greeting:?}");
        }
        Ok(())
    }

    /// After a `220` to STARTTLS: the TLS handshake. Bytes the server sent in plain text after
    /// its reply are an error.
    pub async fn upgrade(self) -> anyhow::Result<Client> {
        if !self.reader.buffer().is_empty() {
            bail!("the server sent data after its STARTTLS reply");
        }
        let stream = self.reader.into_inner().unsplit(self.writer);
        Ok(Client::from_stream(handshake(stream).await?))
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn read_reply(&mut self) -> anyhow::Result<Reply> {
        let mut reader = ReplyReader::default();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("connection closed while waiting for a reply");
            }
            if let Some(reply) = reader.push(line.trim_end_matches(['\r', '\n']))? {
                return Ok(reply);
            }
        }
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await?;
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
        self.send_raw(&mxraft_smtp::wire::encode_data(body)).await?;
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
    reply.text().rsplit(' ').next().map(str::to_owned)
}
