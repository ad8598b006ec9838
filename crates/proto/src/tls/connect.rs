//! The connecting side: tonic channels that check the node certificate they expect.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::identity::{CertIdentity, identity_of};

/// How long a TLS handshake may take before the connection is dropped.
use super::{Expect, TlsSource};

/// Verifies a node's server certificate: signed by the cluster CA, naming a node, and the
/// expected one when the caller knows which.
#[derive(Debug)]
pub(super) struct NodeVerifier {
    pub(super) roots: Arc<RootCertStore>,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
    pub(super) expected: Option<u64>,
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        match (identity_of(end_entity), self.expected) {
            (Some(CertIdentity::Node(id)), Some(want)) if id != want => {
                Err(rustls::Error::General(format!(
                    "the peer's certificate names node {id}, not node {want}"
                )))
            }
            (Some(CertIdentity::Node(_)), _) => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::General(
                "the peer's certificate names no mxraft node".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Connects tonic channels: TCP with no delay, then TLS when a source is given.
#[derive(Clone)]
struct Connector {
    tls: Option<Arc<TlsSource>>,
    expect: Expect,
}

type ClientIo = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<ClientIo>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<ClientIo>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            let _ = stream.set_nodelay(true);
            let Some(tls) = this.tls else {
                return Ok(TokioIo::new(Either::Left(stream)));
            };
            let config = tls
                .client_config(&this.expect)
                .map_err(std::io::Error::other)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| std::io::Error::other(format!("{host}: {e}")))?;
            let stream = TlsConnector::from(config).connect(name, stream).await?;
            Ok(TokioIo::new(Either::Right(stream)))
        })
    }
}

/// A lazily connected channel for `endpoint` (whose URI uses `http://`), over TLS when `tls`
/// is given.
pub fn channel(endpoint: Endpoint, tls: Option<Arc<TlsSource>>, expect: Expect) -> Channel {
    endpoint.connect_with_connector_lazy(Connector { tls, expect })
}
