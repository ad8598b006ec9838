//! TLS for inbound SMTP: the certificate and key from PEM files, reloadable while running.
//!
//! Sessions take the current configuration when they start TLS, so a reload (on SIGHUP, or
//! when the files change) applies to new handshakes without touching sessions in progress.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// The certificate or key could not be used.
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
    /// The files do not hold a usable certificate chain and key.
    #[error("{0}")]
    Invalid(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Builds a server configuration from PEM files.
pub fn load_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_pem = read(cert_file)?;
    let key_pem = read(key_file)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: no certificate found",
            cert_file.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", key_file.display())))?
        .ok_or_else(|| {
            TlsError::Invalid(format!("{}: no private key found", key_file.display()))
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError::Invalid(format!(
                "{} and {}: {e}",
                cert_file.display(),
                key_file.display()
            ))
        })?;
    Ok(Arc::new(config))
}

/// The TLS configuration in use, and where it comes from.
pub struct TlsStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
    stamps: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl TlsStore {
    /// Loads the certificate chain and key.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<TlsStore, TlsError> {
        let config = load_config(cert_file, key_file)?;
        Ok(TlsStore {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(config),
            stamps: Mutex::new((modified(cert_file), modified(key_file))),
        })
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        TlsAcceptor::from(config)
    }

    /// Reads the files again; on error the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = load_config(&self.cert_file, &self.key_file)?;
        if let Ok(mut current) = self.current.write() {
            *current = config;
        }
        if let Ok(mut stamps) = self.stamps.lock() {
            *stamps = (modified(&self.cert_file), modified(&self.key_file));
        }
        Ok(())
    }

    /// Reloads if either file's modification time changed; returns whether it reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = (modified(&self.cert_file), modified(&self.key_file));
        let changed = self.stamps.lock().map(|s| *s != now).unwrap_or(true);
        if changed {
            self.reload()?;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write_cert(dir: &Path, name: &str, mtime: SystemTime) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("certificate");
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        for (path, text) in [
            (&c, cert.cert.pem()),
            (&k, cert.signing_key.serialize_pem()),
        ] {
            std::fs::write(path, text).expect("write");
            let file = std::fs::File::options()
                .write(true)
                .open(path)
                .expect("open");
            file.set_modified(mtime).expect("set mtime");
        }
        (c, k)
    }

    fn config(store: &TlsStore) -> Arc<rustls::ServerConfig> {
        store.current.read().expect("lock").clone()
    }

    #[test]
    fn reloads_changed_files_and_keeps_the_old_certificate_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (cert, key) = write_cert(dir.path(), "a.test", t0);
        let store = TlsStore::load(&cert, &key).expect("load");
        let first = config(&store);

        // Untouched files: nothing to do.
        assert!(!store.reload_if_changed().expect("check"));
        assert!(Arc::ptr_eq(&first, &config(&store)));

        // New files with a new modification time: taken.
        write_cert(dir.path(), "b.test", t0 + Duration::from_secs(60));
        assert!(store.reload_if_changed().expect("reload"));
        let second = config(&store);
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(!store.reload_if_changed().expect("check"));

        // A broken key: an error, and the previous configuration stays in use.
        std::fs::write(&key, "not a key").expect("write");
        assert!(store.reload().is_err());
        assert!(store.reload_if_changed().is_err());
        assert!(Arc::ptr_eq(&second, &config(&store)));
        assert!(TlsStore::load(&cert, &key).is_err());
    }
}
