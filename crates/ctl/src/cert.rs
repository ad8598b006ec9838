//! `mxraftctl cert` and `mxraftctl token`: the cluster CA, node and client certificates, and
//! admin bearer tokens, written as files with private parts readable by their owner only.
//!
//! A node certificate names its node (`urn:mxraft:node:<id>`) and the host names and
//! addresses it is reached at, and serves for both ends of TLS; a client certificate names an
//! admin role (`urn:mxraft:role:<role>`). Both are signed by the cluster CA, whose key stays
//! with the operator, never on the nodes.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use mxraft_proto::identity::{Role, node_id_of_hostname, node_uri, own_hostname, role_uri};

/// The certificate commands.
// The variants are the command names (`cert create-ca`, `cert create-node`, ...).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make the cluster CA: `ca.pem` (give it to every node and to mxraftctl) and `ca-key.pem`
    /// (keep it off the nodes).
    CreateCa {
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "mxraft cluster CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Make a node certificate: `node<ID>.pem` and `node<ID>-key.pem` (or `<NAME>.pem` and
    /// `<NAME>-key.pem` with --file-name).
    CreateNode {
        /// The node id the certificate binds.
        #[arg(long, required_unless_present = "id_from_hostname")]
        id: Option<u64>,
        /// Take the id from this host's name, as mxraftd's `node.id_from_hostname` does: the
        /// ordinal suffix plus one (pod `mxraft-0` is node 1). For a Kubernetes init container.
        #[arg(long, conflicts_with = "id")]
        id_from_hostname: bool,
        /// The files' name without `.pem`, instead of `node<ID>`.
        #[arg(long, value_name = "NAME")]
        file_name: Option<String>,
        /// Host names the node is reached at (for mxraftctl's host-name check).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Addresses the node is reached at.
        #[arg(long = "ip")]
        ip: Vec<IpAddr>,
        #[command(flatten)]
        leaf: LeafArgs,
    },
    /// Make an admin client certificate: `<NAME>.pem` and `<NAME>-key.pem`.
    CreateClient {
        /// The role it grants: `read` or `admin`.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Its common name, shown in the nodes' logs.
        #[arg(long, default_value = "operator")]
        name: String,
        #[command(flatten)]
        leaf: LeafArgs,
    },
}

/// Where a certificate signed by the CA comes from and goes, and how long it lasts.
#[derive(Debug, clap::Args)]
pub struct LeafArgs {
    /// The directory holding `ca.pem` and `ca-key.pem`.
    #[arg(long, default_value = ".")]
    ca_dir: PathBuf,
    /// Where to write the files.
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 825)]
    days: u32,
    /// Replace existing files instead of refusing to (e.g. an init container that runs again).
    #[arg(long)]
    replace: bool,
}

/// The token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Write a new random bearer token to FILE (mode 0600). Name it in a node's
    /// `admin.token_files` with a role, and give it to mxraftctl with --token-file.
    Create {
        /// The file to write; an existing one is not overwritten.
        file: PathBuf,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role; use read or admin"))
}

/// Writes `contents` to a new file; `secret` files get mode 0600.
fn write_new(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    write_file(path, contents, secret, false)
}

/// Writes `contents` to `path`, a new file unless `replace`; `secret` files get mode 0600.
fn write_file(path: &Path, contents: &str, secret: bool, replace: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if replace {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn load_ca(ca_dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let cert = ca_dir.join("ca.pem");
    let key = ca_dir.join("ca-key.pem");
    let cert_pem = std::fs::read_to_string(&cert)
        .with_context(|| format!("cannot read the CA certificate {}", cert.display()))?;
    let key_pem = std::fs::read_to_string(&key)
        .with_context(|| format!("cannot read the CA key {}", key.display()))?;
    let key = KeyPair::from_pem(&key_pem).with_context(|| {
        format!(
            "the CA key {} does not parse: it must be an unencrypted PKCS#8 key \
             (-----BEGIN PRIVATE KEY-----; convert with `openssl pkcs8 -topk8 -nocrypt`)",
            key.display()
        )
    })?;
    Issuer::from_ca_cert_pem(&cert_pem, key).context("the CA certificate does not parse")
}

/// Makes a certificate signed by the CA in `leaf.ca_dir` and writes `<stem>.pem` and
/// `<stem>-key.pem` into `leaf.out_dir`.
fn create_leaf(
    mut params: CertificateParams,
    leaf: &LeafArgs,
    stem: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    validity(&mut params, leaf.days);
    let out_dir = &leaf.out_dir;
    let issuer = load_ca(&leaf.ca_dir)?;
    let key = KeyPair::generate()?;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::create_dir_all(out_dir)?;
    let cert_path = out_dir.join(format!("{stem}.pem"));
    let key_path = out_dir.join(format!("{stem}-key.pem"));
    write_file(&key_path, &key.serialize_pem(), true, leaf.replace)?;
    write_file(&cert_path, &cert.pem(), false, leaf.replace)?;
    Ok((cert_path, key_path))
}

/// Runs a `cert` command.
pub fn run_cert(command: CertCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        CertCommand::CreateCa {
            out_dir,
            name,
            days,
        } => {
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, name);
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            validity(&mut params, days);
            let key = KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            std::fs::create_dir_all(&out_dir)?;
            let key_path = out_dir.join("ca-key.pem");
            let cert_path = out_dir.join("ca.pem");
            write_new(&key_path, &key.serialize_pem(), true)?;
            write_new(&cert_path, &cert.pem(), false)?;
            writeln!(
                out,
                "wrote {} and {} (keep the key off the nodes)",
                cert_path.display(),
                key_path.display()
            )?;
        }
        CertCommand::CreateNode {
            id,
            id_from_hostname,
            file_name,
            dns,
            ip,
            leaf,
        } => {
            let id = match id {
                Some(id) => id,
                None => {
                    debug_assert!(id_from_hostname);
                    let hostname = own_hostname().context("cannot read the host name")?;
                    node_id_of_hostname(&hostname).with_context(|| {
                        format!(
                            "the host name {hostname:?} does not end in -<ordinal>; give --id instead"
                        )
                    })?
                }
            };
            if id == 0 {
                bail!("--id must be a positive node id");
            }
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, format!("mxraft node {id}"));
            params.distinguished_name = dn;
            params.subject_alt_names = vec![SanType::URI(node_uri(id).try_into()?)];
            for name in dns {
                params.subject_alt_names.push(SanType::DnsName(
                    name.clone()
                        .try_into()
                        .with_context(|| format!("{name:?} is not a DNS name"))?,
                ));
            }
            for addr in ip {
                params.subject_alt_names.push(SanType::IpAddress(addr));
            }
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let stem = file_name.unwrap_or_else(|| format!("node{id}"));
            let (cert, key) = create_leaf(params, &leaf, &stem)?;
            writeln!(
                out,
                "wrote {} and {} for node {id}",
                cert.display(),
                key.display()
            )?;
        }
        CertCommand::CreateClient { role, name, leaf } => {
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, name.clone());
            params.distinguished_name = dn;
            params.subject_alt_names = vec![SanType::URI(role_uri(role).try_into()?)];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let (cert, key) = create_leaf(params, &leaf, &name)?;
            writeln!(
                out,
                "wrote {} and {} with role {role}",
                cert.display(),
                key.display()
            )?;
        }
    }
    Ok(())
}

/// Runs a `token` command.
pub fn run_token(command: TokenCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { file } => {
            let bytes: [u8; 32] = rand::random();
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_new(&file, &format!("{token}\n"), true)?;
            writeln!(out, "wrote a new token to {}", file.display())?;
        }
    }
    Ok(())
}
