//! TLS for the cluster and admin ports: certificates from PEM files (reloaded when they
//! change), the accepting side that tells a service who called it, and the connecting side.
//!
//! - [`TlsSource`] holds the cluster CA, this end's certificate and key, and the rustls
//!   configurations made from them. A reload that fails keeps the previous ones in use, and a
//!   reload applies to new connections only.
//! - [`incoming`] turns a TCP listener into the connections a tonic server serves. Each one
//!   carries a [`PeerInfo`] (the caller's address and certificate identity) that handlers read
//!   with [`peer_of`]. On the cluster port ([`ClientAuth::Node`]) a caller without a node
//!   certificate signed by the cluster CA never gets past the handshake.
//! - [`channel`] makes a lazily connected tonic channel. Towards a node ([`Expect::Node`]) the
//!   server must present a node certificate signed by the cluster CA, with the node id the
//!   caller means to reach; host names are not used, so a node is known by its id wherever it
//!   runs. Towards an admin endpoint ([`Expect::Host`]) the usual host-name check applies.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::identity::{CertIdentity, identity_of};

mod accept;
mod connect;

pub use accept::{Conn, PeerInfo, incoming, peer_of};
use connect::NodeVerifier;
pub use connect::channel;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate files of one end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate (PEM): peers must present certificates it signed.
    pub ca_file: PathBuf,
    /// This end's certificate chain (PEM), if it has one.
    pub cert_file: Option<PathBuf>,
    /// The key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
}

/// The certificates could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The files do not hold usable certificates or a key.
    #[error("{0}")]
    Invalid(String),
}

/// Which callers an accepting port lets finish the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Only cluster nodes: a certificate signed by the cluster CA that names a node.
    Node,
    /// Anyone; a client certificate, when given, must be signed by the cluster CA (the admin
    /// port, where a bearer token may stand in for it).
    Optional,
}

/// What a connecting side requires of the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expect {
    /// A node certificate signed by the cluster CA; with an id, exactly that node.
    Node(Option<u64>),
    /// A certificate signed by the CA that is valid for the host name being connected to.
    Host,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn modified(path: Option<&Path>) -> Option<SystemTime> {
    std::fs::metadata(path?).and_then(|m| m.modified()).ok()
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid(format!("{}: {e}", path.display()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificates of a PEM file; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(path, e))?;
    if certs.is_empty() {
        return Err(invalid(path, "no certificate found"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| invalid(path, e))?
        .ok_or_else(|| invalid(path, "no private key found"))
}

/// What one load of the files gave.
struct Material {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: Option<PrivateKeyDer<'static>>,
    identity: Option<CertIdentity>,
    /// Server configurations for [`ClientAuth::Node`] and [`ClientAuth::Optional`], when this
    /// end has a certificate.
    servers: Option<(Arc<ServerConfig>, Arc<ServerConfig>)>,
}

fn load(files: &TlsFiles) -> Result<Material, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&files.ca_file)? {
        roots
            .add(ca)
            .map_err(|e| invalid(&files.ca_file, format!("not a usable CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);
    let (chain, key) = match (&files.cert_file, &files.key_file) {
        (Some(c), Some(k)) => (read_certs(c)?, Some(read_key(k)?)),
        (None, None) => (Vec::new(), None),
        _ => {
            return Err(TlsError::Invalid(
                "a certificate needs its key, and a key its certificate".into(),
            ));
        }
    };
    let identity = chain.first().and_then(|c| identity_of(c));
    let servers = match (&key, files.cert_file.as_deref()) {
        (Some(key), Some(cert_file)) => {
            let make = |optional: bool| -> Result<Arc<ServerConfig>, TlsError> {
                let builder =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
                let builder = if optional {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                let verifier = builder.build().map_err(|e| invalid(&files.ca_file, e))?;
                let mut config = ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TlsError::Invalid(e.to_string()))?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain.clone(), key.clone_key())
                    .map_err(|e| invalid(cert_file, e))?;
                config.alpn_protocols = vec![b"h2".to_vec()];
                Ok(Arc::new(config))
            };
            Some((make(false)?, make(true)?))
        }
        _ => None,
    };
    Ok(Material {
        roots,
        chain,
        key,
        identity,
        servers,
    })
}

/// The certificates in use at one end, and where they come from.
pub struct TlsSource {
    files: TlsFiles,
    current: RwLock<Arc<Material>>,
    stamps: Mutex<[Option<SystemTime>; 3]>,
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSource")
            .field("files", &self.files)
            .finish()
    }
}

impl TlsSource {
    /// Loads the files.
    pub fn load(files: TlsFiles) -> Result<TlsSource, TlsError> {
        let material = load(&files)?;
        let stamps = Self::stamps_of(&files);
        Ok(TlsSource {
            files,
            current: RwLock::new(Arc::new(material)),
            stamps: Mutex::new(stamps),
        })
    }

    fn stamps_of(files: &TlsFiles) -> [Option<SystemTime>; 3] {
        [
            modified(Some(&files.ca_file)),
            modified(files.cert_file.as_deref()),
            modified(files.key_file.as_deref()),
        ]
    }

    fn material(&self) -> Arc<Material> {
        self.current
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// The files.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The identity this end's certificate names.
    pub fn identity(&self) -> Option<CertIdentity> {
        self.material().identity.clone()
    }

    /// Reads the files again; on error the previous certificates stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let material = load(&self.files)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(material);
        }
        if let Ok(mut stamps) = self.stamps.lock() {
            *stamps = Self::stamps_of(&self.files);
        }
        Ok(())
    }

    /// Reloads if a file's modification time changed; returns whether it reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = Self::stamps_of(&self.files);
        let changed = self.stamps.lock().map(|s| *s != now).unwrap_or(true);
        if changed {
            self.reload()?;
        }
        Ok(changed)
    }

    fn server_config(&self, auth: ClientAuth) -> Option<Arc<ServerConfig>> {
        let m = self.material();
        let (node, optional) = m.servers.as_ref()?;
        Some(match auth {
            ClientAuth::Node => node.clone(),
            ClientAuth::Optional => optional.clone(),
        })
    }

    /// A client configuration with the current certificates.
    pub fn client_config(&self, expect: &Expect) -> Result<Arc<ClientConfig>, TlsError> {
        let m = self.material();
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        let builder = match expect {
            Expect::Host => builder.with_root_certificates(m.roots.clone()),
            Expect::Node(id) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NodeVerifier {
                    roots: m.roots.clone(),
                    algorithms: provider().signature_verification_algorithms,
                    expected: *id,
                })),
        };
        let mut config = match &m.key {
            Some(key) => builder
                .with_client_auth_cert(m.chain.clone(), key.clone_key())
                .map_err(|e| TlsError::Invalid(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::node_uri;
    use std::time::Duration;

    /// Writes a CA and a certificate for node `id` signed by it, with modification time `at`.
    fn write(dir: &Path, id: u64, at: SystemTime) -> TlsFiles {
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(node_uri(id).try_into().expect("uri")));
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("cert");
        let files = TlsFiles {
            ca_file: dir.join("ca.pem"),
            cert_file: Some(dir.join("node.pem")),
            key_file: Some(dir.join("node-key.pem")),
        };
        for (path, text) in [
            (&files.ca_file, ca_cert.pem()),
            (files.cert_file.as_ref().expect("cert"), cert.pem()),
            (files.key_file.as_ref().expect("key"), key.serialize_pem()),
        ] {
            std::fs::write(path, text).expect("write");
            let f = std::fs::File::options()
                .write(true)
                .open(path)
                .expect("open");
            f.set_modified(at).expect("mtime");
        }
        files
    }

    #[test]
    fn reloads_changed_files_and_keeps_the_old_certificates_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let files = write(dir.path(), 1, t0);
        let source = TlsSource::load(files.clone()).expect("load");
        assert_eq!(source.identity(), Some(CertIdentity::Node(1)));
        assert!(source.server_config(ClientAuth::Node).is_some());
        assert!(!source.reload_if_changed().expect("unchanged"));

        // New files with a new modification time are taken: here, node 2's certificate.
        write(dir.path(), 2, t0 + Duration::from_secs(60));
        assert!(source.reload_if_changed().expect("reload"));
        assert_eq!(source.identity(), Some(CertIdentity::Node(2)));

        // A broken key: an error, and the previous certificates stay in use.
        let key = files.key_file.as_ref().expect("key");
        std::fs::write(key, "not a key").expect("write");
        assert!(source.reload().is_err());
        assert_eq!(source.identity(), Some(CertIdentity::Node(2)));
        assert!(TlsSource::load(files).is_err());
    }

    #[test]
    fn identities_are_read_from_the_uri_name() {
        let make = |uris: &[&str]| {
            let mut params = rcgen::CertificateParams::default();
            for u in uris {
                params
                    .subject_alt_names
                    .push(rcgen::SanType::URI((*u).try_into().expect("uri")));
            }
            let key = rcgen::KeyPair::generate().expect("key");
            params.self_signed(&key).expect("cert").der().to_vec()
        };
        assert_eq!(
            identity_of(&make(&["urn:mxraft:node:7"])),
            Some(CertIdentity::Node(7))
        );
        assert!(matches!(
            identity_of(&make(&["urn:mxraft:role:read"])),
            Some(CertIdentity::Client {
                role: crate::identity::Role::Read,
                ..
            })
        ));
        assert_eq!(
            identity_of(&make(&["urn:mxraft:node:0"])),
            None,
            "no node 0"
        );
        assert_eq!(
            identity_of(&make(&["urn:mxraft:role:root"])),
            None,
            "no such role"
        );
        assert_eq!(
            identity_of(&make(&["urn:mxraft:node:1", "urn:mxraft:node:2"])),
            None,
            "one identity only"
        );
        assert_eq!(identity_of(&make(&["https://example.test/"])), None);
    }
}
