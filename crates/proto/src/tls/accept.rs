//! The accepting side: TLS connections a tonic server serves, each with who called.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::either::Either;
use tonic::transport::server::Connected;
use tracing::warn;

use crate::identity::{CertIdentity, identity_of};

/// How long a TLS handshake may take before the connection is dropped.
use super::{ClientAuth, HANDSHAKE_TIMEOUT, TlsSource};

/// Who called, as a service sees it in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The caller's address.
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The identity of the caller's certificate, when it presented one.
    pub identity: Option<CertIdentity>,
}

/// The caller of a request served from [`incoming`] connections.
pub fn peer_of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

/// One accepted connection, plain or TLS.
pub struct Conn {
    io: Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>,
    info: PeerInfo,
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The connections of `listener`, for `serve_with_incoming`: TLS with `tls` (handshakes run
/// concurrently, each bounded in time; a failed one is logged and dropped), plain without.
/// The listener is closed once the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<TlsSource>>,
    auth: ClientAuth,
    port: &'static str,
) -> ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = mpsc::channel::<std::io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let (stream, addr) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(port, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let Some(tls) = tls.clone() else {
                let conn = Conn {
                    io: Either::Left(stream),
                    info: PeerInfo {
                        addr,
                        tls: false,
                        identity: None,
                    },
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                match handshake(stream, addr, &tls, auth).await {
                    Ok(conn) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(reason) => {
                        warn!(port, peer = %addr, reason = %reason, "connection refused");
                        metrics::counter!("mxraft_tls_refused_total", "port" => port).increment(1);
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Why an incoming TLS connection was refused.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("this node has no certificate to serve TLS with")]
    NoCertificate,
    #[error("TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
    #[error("the client certificate names no mxraft node")]
    NotANode,
}

async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    tls: &TlsSource,
    auth: ClientAuth,
) -> Result<Conn, HandshakeError> {
    let config = tls
        .server_config(auth)
        .ok_or(HandshakeError::NoCertificate)?;
    let accepted =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(stream))
            .await
            .map_err(|_| HandshakeError::Timeout)?
            .map_err(HandshakeError::Failed)?;
    let identity = accepted
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| identity_of(cert));
    if auth == ClientAuth::Node && !matches!(identity, Some(CertIdentity::Node(_))) {
        return Err(HandshakeError::NotANode);
    }
    Ok(Conn {
        io: Either::Right(accepted),
        info: PeerInfo {
            addr,
            tls: true,
            identity,
        },
    })
}
