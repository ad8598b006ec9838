//! Who is at the other end of a connection: the identities mxraft certificates carry, and the
//! gRPC metadata keys that every internal and admin request may carry.
//!
//! A certificate made by `mxraftctl cert` names its holder in a URI subject alternative name:
//!
//! - `urn:mxraft:node:<id>` — node `<id>` of the cluster (server and client authentication);
//! - `urn:mxraft:role:<read|admin>` — an operator or tool with that admin role (client only).
//!
//! The cluster port accepts only node certificates, and a node may speak only for the id its
//! certificate names; the admin port maps a client certificate's role to what it may do.

use x509_parser::extensions::GeneralName;

/// Prefix of the URI that names a node.
pub const NODE_URI_PREFIX: &str = "urn:mxraft:node:";
/// Prefix of the URI that names an admin role.
pub const ROLE_URI_PREFIX: &str = "urn:mxraft:role:";

/// gRPC metadata key naming the node a cluster request is meant for.
pub const TARGET_NODE_HEADER: &str = "x-mxraft-target-node";
/// gRPC metadata key naming the current leader, sent back with "not leader" errors.
pub const LEADER_HEADER: &str = "x-mxraft-leader";
/// gRPC metadata key carrying the id of the cluster the caller belongs to.
pub const CLUSTER_ID_HEADER: &str = "x-mxraft-cluster-id";
/// gRPC metadata key of the admin bearer token (`authorization: Bearer <token>`).
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// What an admin caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Status, listings, message details, statistics, destinations.
    Read,
    /// Everything, including changes to the queue, the recipient table and the membership.
    Admin,
}

impl Role {
    /// The role's name in configuration, certificates and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    /// Parses `read` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The identity a certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertIdentity {
    /// A cluster node.
    Node(u64),
    /// An admin client with a role; `name` is the certificate's common name (for logs).
    Client {
        /// The role granted.
        role: Role,
        /// The subject's common name, or empty.
        name: String,
    },
}

impl std::fmt::Display for CertIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertIdentity::Node(id) => write!(f, "node {id}"),
            CertIdentity::Client { role, name } => write!(f, "client {name:?} (role {role})"),
        }
    }
}

/// The node id of a host named `<name>-<ordinal>`, as a StatefulSet names its pods: the
/// ordinal plus one (pod `mxraft-0` is node 1). `None` without such a suffix.
pub fn node_id_of_hostname(hostname: &str) -> Option<u64> {
    hostname
        .rsplit_once('-')
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .and_then(|n| n.checked_add(1))
}

/// This machine's (or pod's) host name.
pub fn own_hostname() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_owned())
}

/// The URI naming node `id`.
pub fn node_uri(id: u64) -> String {
    format!("{NODE_URI_PREFIX}{id}")
}

/// The URI naming `role`.
pub fn role_uri(role: Role) -> String {
    format!("{ROLE_URI_PREFIX}{}", role.name())
}

/// The identity in a DER certificate: its one mxraft URI name. `None` when it has none, has
/// more than one, or does not parse.
pub fn identity_of(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut found = None;
    for name in &san.value.general_names {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        let identity = if let Some(id) = uri.strip_prefix(NODE_URI_PREFIX) {
            let id: u64 = id.parse().ok().filter(|id| *id > 0)?;
            CertIdentity::Node(id)
        } else if let Some(role) = uri.strip_prefix(ROLE_URI_PREFIX) {
            let name = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .unwrap_or_default()
                .to_owned();
            CertIdentity::Client {
                role: Role::parse(role)?,
                name,
            }
        } else {
            continue;
        };
        if found.is_some() {
            return None;
        }
        found = Some(identity);
    }
    found
}

/// Reads a bearer token file: its first line, trimmed. `None` when that line is shorter than
/// 16 characters (no token worth the name).
pub fn read_token_file(path: &std::path::Path) -> std::io::Result<Option<String>> {
    let text = std::fs::read_to_string(path)?;
    let token = text.lines().next().unwrap_or_default().trim();
    Ok((token.len() >= 16).then(|| token.to_owned()))
}

/// Adds `authorization: Bearer <token>` to every request of a client (a tonic interceptor);
/// without a token it adds nothing.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// An interceptor sending `token`; `None` if the token cannot be a header value.
    pub fn new(token: &str) -> Option<Bearer> {
        format!("Bearer {token}")
            .parse()
            .ok()
            .map(|v| Bearer(Some(v)))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(AUTHORIZATION_HEADER, v.clone());
        }
        Ok(req)
    }
}
