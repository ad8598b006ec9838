//! Who may call the admin API: bearer tokens read from files, and client certificates from the
//! cluster CA, each with a role (`read` or `admin`).
//!
//! Every admin call names the role it needs. A caller with no credential gets
//! `UNAUTHENTICATED`, one whose role is too small `PERMISSION_DENIED`; both messages say what
//! is missing. Token files are read again when they change, so a token is rotated by writing
//! a new file (or a new entry) and removing the old one.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use ring::digest::{SHA256, digest};
use tonic::{Request, Status};

use mxraft_proto::identity::{AUTHORIZATION_HEADER, CertIdentity, Role, read_token_file};
use mxraft_proto::tls::peer_of;

/// One file holding a bearer token, and the role it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFile {
    /// The file: its first line is the token.
    pub path: PathBuf,
    /// The role the token grants.
    pub role: Role,
}

/// A token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file holds no usable token.
    #[error("the token file {0} holds no token of at least 16 characters")]
    Short(PathBuf),
}

struct Token {
    digest: Vec<u8>,
    role: Role,
    file: PathBuf,
}

fn read_token(file: &TokenFile) -> Result<Token, TokenError> {
    let token = read_token_file(&file.path)
        .map_err(|source| TokenError::Read {
            path: file.path.clone(),
            source,
        })?
        .ok_or_else(|| TokenError::Short(file.path.clone()))?;
    Ok(Token {
        digest: digest(&SHA256, token.as_bytes()).as_ref().to_vec(),
        role: file.role,
        file: file.path.clone(),
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Who called, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The role granted.
    pub role: Role,
    /// What granted it, for logs: `token <file>` or `certificate <name>`.
    pub by: String,
}

/// Checks the credentials of admin calls.
pub struct Authenticator {
    files: Vec<TokenFile>,
    tokens: RwLock<Vec<Token>>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl Authenticator {
    /// Reads the token files; every one must hold a token.
    pub fn new(files: Vec<TokenFile>) -> Result<Authenticator, TokenError> {
        let tokens = files.iter().map(read_token).collect::<Result<_, _>>()?;
        let stamps = files.iter().map(|f| modified(&f.path)).collect();
        Ok(Authenticator {
            files,
            tokens: RwLock::new(tokens),
            stamps: Mutex::new(stamps),
        })
    }

    /// Reads the token files again if one changed; returns whether it did. On error the
    /// previous tokens stay in use.
    pub fn reload_if_changed(&self) -> Result<bool, TokenError> {
        let now: Vec<_> = self.files.iter().map(|f| modified(&f.path)).collect();
        if self.stamps.lock().map(|s| *s == now).unwrap_or(false) {
            return Ok(false);
        }
        let tokens = self
            .files
            .iter()
            .map(read_token)
            .collect::<Result<Vec<_>, _>>()?;
        if let Ok(mut current) = self.tokens.write() {
            *current = tokens;
        }
        if let Ok(mut stamps) = self.stamps.lock() {
            *stamps = now;
        }
        Ok(true)
    }

    /// The caller of `request`, if it may do `what`, which needs `needed`.
    pub fn authorize<T>(
        &self,
        request: &Request<T>,
        needed: Role,
        what: &str,
    ) -> Result<Caller, Status> {
        let caller = self.authenticate(request, needed, what)?;
        if caller.role < needed {
            return Err(Status::permission_denied(format!(
                "{what} needs the {needed} role; the {} grants only {}",
                caller.by, caller.role
            )));
        }
        Ok(caller)
    }

    fn authenticate<T>(
        &self,
        request: &Request<T>,
        needed: Role,
        what: &str,
    ) -> Result<Caller, Status> {
        if let Some(value) = request.metadata().get(AUTHORIZATION_HEADER) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    Status::unauthenticated("the authorization header is not `Bearer <token>`")
                })?;
            let given = digest(&SHA256, token.as_bytes());
            let tokens = self
                .tokens
                .read()
                .map_err(|_| Status::internal("token table poisoned"))?;
            // The best role among the matching tokens (the same token may be in two files).
            return tokens
                .iter()
                .filter(|t| t.digest == given.as_ref())
                .max_by_key(|t| t.role)
                .map(|t| Caller {
                    role: t.role,
                    by: format!("token from {}", t.file.display()),
                })
                .ok_or_else(|| Status::unauthenticated("the bearer token is not valid"));
        }
        match peer_of(request).and_then(|p| p.identity.clone()) {
            Some(CertIdentity::Client { role, name }) => Ok(Caller {
                role,
                by: format!("client certificate {name:?}"),
            }),
            _ => Err(Status::unauthenticated(format!(
                "{what} needs the {needed} role: give a bearer token (mxraftctl --token-file) or a \
                 client certificate from the cluster CA (mxraftctl --cert/--key)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = token {
            r.metadata_mut().insert(
                AUTHORIZATION_HEADER,
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        r
    }

    #[test]
    fn roles_and_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = dir.path().join("admin.token");
        let read = dir.path().join("read.token");
        std::fs::write(&admin, "admin-token-0123456789\n").expect("write");
        std::fs::write(&read, "read-token-0123456789").expect("write");
        let auth = Authenticator::new(vec![
            TokenFile {
                path: admin.clone(),
                role: Role::Admin,
            },
            TokenFile {
                path: read.clone(),
                role: Role::Read,
            },
        ])
        .expect("tokens");

        let none = auth
            .authorize(&request(None), Role::Read, "queue list")
            .expect_err("no credential");
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        assert!(
            none.message().contains("queue list needs the read role"),
            "{none:?}"
        );

        let wrong = auth
            .authorize(&request(Some("guess-0123456789")), Role::Read, "queue list")
            .expect_err("wrong token");
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);

        let reader = auth
            .authorize(
                &request(Some("read-token-0123456789")),
                Role::Read,
                "queue list",
            )
            .expect("read may list");
        assert_eq!(reader.role, Role::Read);
        let denied = auth
            .authorize(
                &request(Some("read-token-0123456789")),
                Role::Admin,
                "queue delete",
            )
            .expect_err("read may not delete");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(
            denied
                .message()
                .contains("queue delete needs the admin role"),
            "{denied:?}"
        );
        auth.authorize(
            &request(Some("admin-token-0123456789")),
            Role::Admin,
            "queue delete",
        )
        .expect("admin may delete");

        // Rotation: a new token in the file replaces the old one.
        std::fs::write(&admin, "rotated-token-0123456789\n").expect("write");
        let f = std::fs::File::options()
            .write(true)
            .open(&admin)
            .expect("open");
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .expect("mtime");
        assert!(auth.reload_if_changed().expect("reload"));
        assert!(
            auth.authorize(&request(Some("admin-token-0123456789")), Role::Admin, "x")
                .is_err()
        );
        auth.authorize(&request(Some("rotated-token-0123456789")), Role::Admin, "x")
            .expect("rotated token works");

        // A file that no longer holds a token keeps the previous tokens in use.
        std::fs::write(&read, "short").expect("write");
        let f = std::fs::File::options()
            .write(true)
            .open(&read)
            .expect("open");
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(10))
            .expect("mtime");
        assert!(auth.reload_if_changed().is_err());
        auth.authorize(&request(Some("read-token-0123456789")), Role::Read, "x")
            .expect("previous tokens kept");
    }
}
