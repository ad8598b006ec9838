//! Shared helpers for mxraft's cross-crate tests.
//!
//! - [`TestCluster`]: real `mxraftd` nodes in this process, every listener on port 0, each with
//!   its own data directory; nodes can be killed and restarted from their disk.
//! - [`smtp`]: a small SMTP client that reports every reply, for driving the front door.
//! - [`admin`]: a connection to a node's admin API, with the test cluster's admin token.
//! - [`TestCerts`]: a cluster CA and node certificates, as `mxraftctl cert` makes them.
//! - [`fake_smtp`]: a scripted SMTP server standing in for a primary or a sender's server.

pub mod fake_smtp;
pub mod front;
pub mod smtp;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tonic::transport::Channel;

use mxraft_proto::admin::admin_client::AdminClient;
use mxraft_proto::admin::{QueueListRequest, ReadConsistency};
use mxraft_proto::identity::{Bearer, Role, node_uri, role_uri};
use mxraftd::config::Config;
use mxraftd::{RunningServer, Server};
use tonic::service::interceptor::InterceptedService;

/// Starts logging for tests once (`RUST_LOG` sets the filter; off by default).
pub fn init_tracing() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Announces a test phase in the test output.
pub fn phase(text: &str) {
    eprintln!("--- {text}");
}

/// Polls `check` every 50 ms until it returns `Some`, failing after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > until {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The admin token of every test cluster (in the file `admin.token` of its directory).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// The token with the read role of every test cluster.
pub const READ_TOKEN: &str = "test-read-token-0123456789abcdef";

/// An admin client of a test node.
pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// Connects to a node's admin API with the test cluster's admin token.
pub async fn admin(addr: SocketAddr) -> anyhow::Result<Admin> {
    admin_with_token(addr, Some(ADMIN_TOKEN)).await
}

/// Connects to a node's admin API with `token` (or none).
pub async fn admin_with_token(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<Admin> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("admin API at {addr}"))?;
    let bearer = match token {
        Some(t) => Bearer::new(t).context("a token that is no header value")?,
        None => Bearer::default(),
    };
    Ok(AdminClient::with_interceptor(channel, bearer))
}

/// A cluster CA and certificates signed by it, written as PEM files into a directory.
pub struct TestCerts {
    dir: PathBuf,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCerts {
    /// Makes a CA (`ca.pem`) in `dir`.
    pub fn new(dir: &std::path::Path) -> anyhow::Result<TestCerts> {
        std::fs::create_dir_all(dir)?;
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mxraft test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        std::fs::write(dir.join("ca.pem"), cert.pem())?;
        Ok(TestCerts {
            dir: dir.to_path_buf(),
            ca: rcgen::Issuer::new(params, key),
        })
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn leaf(&self, stem: &str, uri: String, server: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(uri.try_into()?));
        params.extended_key_usages = if server {
            vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]
        };
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let (c, k) = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}-key.pem")),
        );
        std::fs::write(&c, cert.pem())?;
        std::fs::write(&k, key.serialize_pem())?;
        Ok((c, k))
    }

    /// A certificate for node `id`: (certificate file, key file).
    pub fn node(&self, id: u64) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.leaf(&format!("node{id}"), node_uri(id), true)
    }

    /// A client certificate with `role`.
    pub fn client(&self, name: &str, role: Role) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.leaf(name, role_uri(role), false)
    }
}

/// The queue ids a node lists, in order.
pub async fn queue_ids(
    addr: SocketAddr,
    consistency: ReadConsistency,
) -> anyhow::Result<Vec<String>> {
    let mut client = admin(addr).await?;
    let mut stream = client
        .queue_list(QueueListRequest {
            limit: 0,
            consistency: consistency as i32,
            filter: None,
        })
        .await?
        .into_inner();
    let mut ids = Vec::new();
    while let Some(m) = stream.message().await? {
        ids.push(m.id);
    }
    Ok(ids)
}

/// Tunables of a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Build a snapshot after this many entries.
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot.
    pub log_entries_kept: u64,
    /// How long an SMTP end of data waits for a commit.
    pub commit_timeout: Duration,
    /// The next hop of `example.test` (nothing listens on the default, port 9 of loopback).
    pub primary: String,
    /// Recipient validation of `example.test`: `any` (the default here), `list` or `verify`.
    pub recipients: String,
    /// More keys for the `example.test` `[[domains]]` entry (e.g. `max_queue_lifetime`).
    pub domain_extra: String,
    /// More TOML appended to every node's configuration (e.g. a `[delivery]` section).
    pub extra: String,
    /// More keys for every node's `[cluster]` section.
    pub cluster_extra: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            snapshot_after_entries: 5000,
            log_entries_kept: 1000,
            commit_timeout: Duration::from_secs(5),
            primary: "127.0.0.1:9".into(),
            recipients: "any".into(),
            domain_extra: String::new(),
            extra: String::new(),
            cluster_extra: String::new(),
        }
    }
}

/// Nodes of one cluster running in this process, with mutual TLS between them and an admin
/// token ([`ADMIN_TOKEN`]).
pub struct TestCluster {
    dir: TempDir,
    certs: TestCerts,
    configs: Vec<Config>,
    nodes: Vec<Option<RunningServer>>,
}

fn node_config(
    id: u64,
    data_dir: PathBuf,
    certs: &TestCerts,
    opts: &ClusterOptions,
) -> anyhow::Result<Config> {
    let (cert, key) = certs.node(id)?;
    let token = certs.dir.join("admin.token");
    std::fs::write(&token, format!("{ADMIN_TOKEN}\n"))?;
    let read_token = certs.dir.join("read.token");
    std::fs::write(&read_token, format!("{READ_TOKEN}\n"))?;
    let text = format!(
        r#"
        [node]
        id = {id}
        data_dir = "{dir}"
        [smtp]
        listen = "127.0.0.1:0"
        hostname = "node{id}.test"
        [tls]
        ca_file = "{ca}"
        cert_file = "{cert}"
        key_file = "{key}"
        [admin]
        listen = "127.0.0.1:0"
        read_timeout = "10s"
        insecure_plaintext = true
        token_files = [{{ path = "{token}", role = "admin" }}, {{ path = "{read_token}", role = "read" }}]
        [cluster]
        listen = "127.0.0.1:0"
        heartbeat_interval = "100ms"
        election_timeout_min = "500ms"
        election_timeout_max = "1000ms"
        commit_timeout = "{commit}"
        snapshot_after_entries = {snap}
        log_entries_kept = {kept}
        {cluster_extra}
        [[domains]]
        name = "example.test"
        primary = "{primary}"
        recipients = "{recipients}"
        {domain_extra}
        {extra}
        "#,
        primary = opts.primary,
        domain_extra = opts.domain_extra,
        recipients = opts.recipients,
        extra = opts.extra,
        cluster_extra = opts.cluster_extra,
        dir = data_dir.display(),
        ca = certs.ca_file().display(),
        cert = cert.display(),
        key = key.display(),
        token = token.display(),
        read_token = read_token.display(),
        commit = humantime::format_duration(opts.commit_timeout),
        snap = opts.snapshot_after_entries,
        kept = opts.log_entries_kept,
    );
    Ok(Config::parse(&text)?)
}

impl TestCluster {
    /// Starts `n` nodes: node 1 bootstraps, the others join through it, and this returns once
    /// all `n` are voters.
    pub async fn start(n: u64, opts: ClusterOptions) -> anyhow::Result<TestCluster> {
        init_tracing();
        let dir = tempfile::tempdir()?;
        let certs = TestCerts::new(&dir.path().join("tls"))?;
        let mut cluster = TestCluster {
            dir,
            certs,
            configs: Vec::new(),
            nodes: Vec::new(),
        };
        for id in 1..=n {
            let mut config = node_config(
                id,
                cluster.dir.path().join(format!("node{id}")),
                &cluster.certs,
                &opts,
            )?;
            if id == 1 {
                config.cluster.bootstrap = true;
            } else {
                config.cluster.join = vec![cluster.node(1).addrs().cluster.to_string()];
            }
            let server = Server::start(config.clone()).await?;
            // Restarts must come back on the same addresses, which the membership records.
            config.smtp.listen = server.addrs().smtp;
            config.admin.listen = server.addrs().admin;
            config.cluster.listen = server.addrs().cluster;
            config.cluster.bootstrap = false;
            config.cluster.join.clear();
            cluster.configs.push(config);
            cluster.nodes.push(Some(server));
        }
        let want: BTreeSet<u64> = (1..=n).collect();
        cluster.wait_for_voters(&want).await?;
        Ok(cluster)
    }

    /// The running node `id` (1-based). Panics if it is stopped.
    pub fn node(&self, id: u64) -> &RunningServer {
        self.nodes[(id - 1) as usize]
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// Whether node `id` runs.
    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[(id - 1) as usize].is_some()
    }

    /// Ids of the running nodes.
    pub fn running(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64)
            .filter(|id| self.is_running(*id))
            .collect()
    }

    /// SMTP address of node `id`.
    pub fn smtp_addr(&self, id: u64) -> SocketAddr {
        self.configs[(id - 1) as usize].smtp.listen
    }

    /// Admin address of node `id`.
    pub fn admin_addr(&self, id: u64) -> SocketAddr {
        self.configs[(id - 1) as usize].admin.listen
    }

    /// Waits until a running node reports `voters` as the voter set, and a leader among them.
    pub async fn wait_for_voters(&self, voters: &BTreeSet<u64>) -> anyhow::Result<u64> {
        wait_for(
            "the voters and a leader",
            Duration::from_secs(30),
            || async {
                for id in self.running() {
                    let m = self.node(id).node().metrics();
                    let have: BTreeSet<u64> =
                        m.membership_config.membership().voter_ids().collect();
                    let in_joint = m.membership_config.membership().get_joint_config().len() > 1;
                    if let Some(leader) = m.current_leader
                        && &have == voters
                        && !in_joint
                        && self.is_running(leader)
                    {
                        return Some(leader);
                    }
                }
                None
            },
        )
        .await
    }

    /// Waits for a leader among the running nodes that all running nodes agree on.
    pub async fn wait_for_leader(&self) -> anyhow::Result<u64> {
        wait_for("an agreed leader", Duration::from_secs(30), || async {
            let running = self.running();
            let leaders: BTreeSet<Option<u64>> = running
                .iter()
                .map(|id| self.node(*id).node().metrics().current_leader)
                .collect();
            match leaders.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(l)]
                    if self.is_running(*l)
                        && self.node(*l).node().metrics().state
                            == openraft::ServerState::Leader =>
                {
                    Some(*l)
                }
                _ => None,
            }
        })
        .await
    }

    /// Waits until every running node has applied at least what the leader has committed.
    pub async fn wait_for_convergence(&self) -> anyhow::Result<()> {
        let leader = self.wait_for_leader().await?;
        let committed = self.node(leader).node().status().committed_index;
        wait_for(
            "all running nodes to apply the leader's commits",
            Duration::from_secs(30),
            || async {
                self.running()
                    .iter()
                    .all(|id| self.node(*id).node().status().applied_index >= committed)
                    .then_some(())
            },
        )
        .await
    }

    /// Stops node `id` at once, keeping its data directory.
    pub async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let server = self.nodes[(id - 1) as usize]
            .take()
            .with_context(|| format!("node {id} is not running"))?;
        server.kill().await
    }

    /// Waits until every running node's own copy of the queue is empty.
    pub async fn wait_until_empty(&self, timeout: Duration) -> anyhow::Result<()> {
        for id in self.running() {
            let addr = self.admin_addr(id);
            wait_for(
                &format!("an empty queue on node {id}"),
                timeout,
                || async move {
                    queue_ids(addr, mxraft_proto::admin::ReadConsistency::Local)
                        .await
                        .ok()
                        .filter(|q| q.is_empty())
                        .map(|_| ())
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Stops node `id` in order (as on `SIGTERM`), keeping its data directory.
    pub async fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        let server = self.nodes[(id - 1) as usize]
            .take()
            .with_context(|| format!("node {id} is not running"))?;
        server.shutdown().await
    }

    /// Starts node `id` again from its data directory, on its old addresses.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if self.is_running(id) {
            bail!("node {id} is running");
        }
        let config = self.configs[(id - 1) as usize].clone();
        let server = Server::start(config).await?;
        self.nodes[(id - 1) as usize] = Some(server);
        Ok(())
    }

    /// Stops every node in order.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for slot in &mut self.nodes {
            if let Some(server) = slot.take() {
                server.shutdown().await?;
            }
        }
        Ok(())
    }

    /// The configuration node `id` runs with.
    pub fn config(&self, id: u64) -> &Config {
        &self.configs[(id - 1) as usize]
    }

    /// The cluster's CA and certificates.
    pub fn certs(&self) -> &TestCerts {
        &self.certs
    }
}

/// dnsmasq serving test records on a free loopback port, stopped when dropped.
pub struct Dnsmasq {
    child: std::process::Child,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dnsmasq {
    /// Starts dnsmasq with only the given record options (`--mx-host=…`, `--host-record=…`,
    /// `--txt-record=…`): no upstream servers, no /etc/hosts. Returns once it answers queries;
    /// if the port it was given turns out to be taken (for TCP, or by another process in the
    /// meantime), it is started again on another one.
    pub fn start(args: &[String]) -> anyhow::Result<Dnsmasq> {
        let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or_else(|| {
                anyhow::anyhow!("dnsmasq is not installed (tests/run.sh installs it)")
            })?;
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut child = std::process::Command::new(bin)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                ])
                .args([
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--pid-file=",
                    "--user=root",
                ])
                .arg(format!("--port={port}"))
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
            if answers(addr, &mut child) {
                // Its stderr is not read again; dnsmasq writes little after startup.
                return Ok(Dnsmasq { child, addr });
            }
            let _ = child.kill();
            let output = child.wait_with_output()?;
            last_error = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        }
        anyhow::bail!("dnsmasq did not start: {last_error}")
    }
}

/// Whether the DNS server at `addr` answers a query within a few seconds (any answer will
/// do), giving up early if `child` exits.
fn answers(addr: SocketAddr, child: &mut std::process::Child) -> bool {
    let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    // A query for `ready.invalid`, type A, class IN, id 0x4d58.
    let mut query = vec![0x4d, 0x58, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ready", "invalid"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut buf = [0u8; 512];
    for _ in 0..50 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        let _ = socket.send_to(&query, addr);
        if let Ok((n, from)) = socket.recv_from(&mut buf)
            && from == addr
            && n >= 2
            && buf[..2] == query[..2]
        {
            return true;
        }
    }
    false
}
