//! The mxraft daemon: configuration, wiring, startup and shutdown of one node.
//!
//! Startup, one log line per phase ([`Server::start`]):
//! 1. bind the SMTP, admin and cluster listeners (so a taken port fails at once);
//! 2. open the stores in `node.data_dir` and start Raft;
//! 3. serve the internal cluster service, then bootstrap (pristine node with
//!    `cluster.bootstrap`) or ask `cluster.join` seeds to add this node;
//! 4. serve the admin API and gRPC health;
//! 5. accept SMTP.
//!
//! Shutdown runs the other way ([`RunningServer::shutdown`]): stop accepting SMTP and let
//! sessions finish, stop the gRPC services, stop Raft, and wait until RocksDB is closed.

pub mod config;
mod http;
mod proposals;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use mxraft_admin::{AdminOptions, AdminService, Authenticator, TokenFile};
use mxraft_cluster::service::ClusterService;
use mxraft_cluster::{NodeSetup, RaftNode};
use mxraft_delivery::{Delivery, Route, RouteTable};
use mxraft_proto::identity::CertIdentity;
use mxraft_proto::tls::{self, ClientAuth, TlsSource};
use mxraft_queue::FlushTarget;
use mxraft_queue::{CommandResult, Enqueue, QueueCommand};
use mxraft_smtp::{
    DomainPolicy, EtrnReply, IdGenerator, RcptCheck, SmtpContext, SubmitError, Submitter,
};
use mxraft_store::{CloseWatch, NodeInfo, StoreOptions, Stores};

pub use config::Config;

/// Hands accepted messages to Raft, and ETRN requests to delivery.
struct RaftSubmitter {
    node: RaftNode,
    caches: CacheWriter,
    delivery: Arc<Delivery>,
    policy: DomainPolicy,
    rules: std::collections::HashMap<String, config::DomainConfig>,
    greylist: config::GreylistConfig,
    verify: config::VerifyConfig,
    quota: config::QueueConfig,
    data_dir: std::path::PathBuf,
    hostname: String,
}

impl Submitter for RaftSubmitter {
    fn refuse_connection(&self) -> Option<String> {
        self.node
            .fatal_error()
            .map(|e| format!("this node's queue has stopped ({e})"))
    }

    async fn submit(&self, message: Enqueue) -> Result<(), SubmitError> {
        match self.node.propose(QueueCommand::Enqueue(message)).await {
            Ok(CommandResult::Enqueued { .. }) => Ok(()),
            Ok(other) => Err(SubmitError(format!("unexpected result {other:?}"))),
            Err(e) => Err(SubmitError(e.to_string())),
        }
    }

    fn has_room(&self) -> bool {
        let stats = self.node.state_machine().read().queue().stats();
        let over = (self.quota.max_messages > 0 && stats.messages >= self.quota.max_messages)
            || (self.quota.max_bytes > 0 && stats.bytes >= self.quota.max_bytes);
        if over {
            return false;
        }
        match rustix::fs::statvfs(&self.data_dir) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize) >= self.quota.min_free_disk,
            // Not knowing is not a reason to refuse mail.
            Err(_) => true,
        }
    }

    async fn check_recipient(
        &self,
        client: std::net::IpAddr,
        helo: &str,
        sender: &str,
        address: &str,
    ) -> RcptCheck {
        // The table and the verification cache hold normalized addresses (A-label domains).
        let normalized = mxraft_queue::recipients::normalize_entry(address);
        let address = normalized.as_deref().unwrap_or(address);
        let domain = mxraft_queue::destination_of(address);
        let Some(rules) = self.rules.get(&domain) else {
            return RcptCheck::Unknown;
        };
        for zone in &rules.dnsbl {
            if self.listed(client, zone).await {
                return RcptCheck::Blocked(zone.clone());
            }
        }
        let verdict = match rules.recipients {
            config::RecipientMode::Any => RcptCheck::Accept,
            config::RecipientMode::List => {
                if self
                    .node
                    .state_machine()
                    .read()
                    .queue()
                    .recipient_listed(address)
                {
                    RcptCheck::Accept
                } else {
                    RcptCheck::Unknown
                }
            }
            config::RecipientMode::Verify => self.verify_recipient(address).await,
        };
        if verdict == RcptCheck::Unknown {
            // A stale table must never turn into a permanent refusal of valid mail.
            if let Err(e) = self.node.wait_current(Duration::from_millis(500)).await {
                return RcptCheck::NotCurrent(e.to_string());
            }
        }
        if verdict != RcptCheck::Accept {
            return verdict;
        }
        let tag = if rules.spf {
            match self.spf(client, helo, sender).await {
                Err(reject) => return reject,
                Ok(field) => Some(field),
            }
        } else {
            None
        };
        if rules.greylist {
            let grey = self.greylist_check(client, sender, address);
            if grey != RcptCheck::Accept {
                return grey;
            }
        }
        match tag {
            Some(field) => RcptCheck::AcceptTagged(field),
            None => RcptCheck::Accept,
        }
    }

    async fn etrn(&self, client: std::net::IpAddr, domain: &str) -> EtrnReply {
        if !self.policy.is_protected(domain) || !self.delivery.etrn_allowed(client, domain).await {
            return EtrnReply::NotAllowed;
        }
        let queued = self
            .node
            .state_machine()
            .read()
            .queue()
            .queued_destinations()
            .contains_key(domain);
        if !queued {
            return EtrnReply::NothingQueued;
        }
        let cmd = QueueCommand::Reschedule {
            target: FlushTarget::Destination(domain.to_owned()),
            at_ms: self.node.clock().now_ms(),
        };
        match self.node.propose(cmd).await {
            Ok(_) => EtrnReply::Started,
            Err(_) => EtrnReply::Unavailable,
        }
    }
}

/// The greylisting triplet: the client's network (/24 for IPv4, /64 for IPv6), the sender and
/// the recipient.
fn triplet(client: std::net::IpAddr, sender: &str, rcpt: &str) -> String {
    let net = match client.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}", o[0], o[1], o[2])
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}", s[0], s[1], s[2], s[3])
        }
    };
    format!("{net}|{}|{rcpt}", sender.to_lowercase())
}

/// The name looked up for `client` in blocklist `zone` (RFC 5782).
fn dnsbl_name(client: std::net::IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match client.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}", o[3], o[2], o[1], o[0])
        }
        std::net::IpAddr::V6(v6) => {
            let mut nibbles = String::new();
            for byte in v6.octets().iter().rev() {
                nibbles.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            format!("{nibbles}{zone}")
        }
    }
}

impl RaftSubmitter {
    /// The SPF check of the sender (or of the HELO name for the null sender): a `fail` refuses
    /// the recipient, anything else becomes a `Received-SPF:` field.
    async fn spf(
        &self,
        client: std::net::IpAddr,
        helo: &str,
        sender: &str,
    ) -> Result<String, RcptCheck> {
        let identity = if sender.is_empty() {
            format!("postmaster@{helo}")
        } else {
            sender.to_owned()
        };
        let client = client.to_canonical();
        let result = mxraft_delivery::spf::check_host(
            self.delivery.resolver().as_ref(),
            client,
            &identity,
            helo,
        )
        .await;
        let domain = identity
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(&identity)
            .to_owned();
        if result == mxraft_delivery::spf::SpfResult::Fail {
            return Err(RcptCheck::SpfFail(format!(
                "SPF check failed: {client} is not allowed to send mail for {domain}"
            )));
        }
        Ok(format!(
            "Received-SPF: {} ({}: domain of {identity} and client {client}) client-ip={client}; envelope-from=<{sender}>; helo={helo};\r\n",
            result.name(),
            self.hostname,
        ))
    }

    /// Whether `client` is listed in `zone`: its name resolves to a 127.0.0.0/8 address.
    /// Lookup failures count as not listed (mail is not refused because DNS is down).
    async fn listed(&self, client: std::net::IpAddr, zone: &str) -> bool {
        let name = dnsbl_name(client, zone);
        match self.delivery.resolver().addresses(&name).await {
            Ok(ips) => ips
                .iter()
                .any(|ip| matches!(ip, std::net::IpAddr::V4(v4) if v4.octets()[0] == 127)),
            Err(e) => {
                if e.is_temporary() {
                    tracing::info!(zone, error = %e, "DNSBL lookup failed; not refusing");
                }
                false
            }
        }
    }

    /// Greylisting: the first attempt of a triplet is remembered cluster-wide and deferred;
    /// attempts after the delay pass.
    fn greylist_check(&self, client: std::net::IpAddr, sender: &str, rcpt: &str) -> RcptCheck {
        let key = triplet(client, sender, rcpt);
        let now = self.node.clock().now_ms();
        let first = self.node.state_machine().read().queue().greylisted(&key);
        match first {
            Some(first) if now.saturating_sub(first) >= self.greylist.delay.as_millis() as u64 => {
                RcptCheck::Accept
            }
            Some(_) => RcptCheck::Greylisted,
            None => {
                self.caches
                    .write(QueueCommand::GreylistSeen { key, at_ms: now });
                RcptCheck::Greylisted
            }
        }
    }

    /// Verification with the cluster-wide cache: a fresh cached answer is used as is; otherwise
    /// the primary is asked and its answer committed for every node; a stale answer is better
    /// than none when the primary cannot be asked.
    async fn verify_recipient(&self, address: &str) -> RcptCheck {
        let now = self.node.clock().now_ms();
        let cached = self.node.state_machine().read().queue().verified(address);
        let answer = |valid: bool| {
            if valid {
                RcptCheck::Accept
            } else {
                RcptCheck::Unknown
            }
        };
        if let Some((valid, at)) = cached {
            let ttl = if valid {
                self.verify.positive_ttl
            } else {
                self.verify.negative_ttl
            };
            if now.saturating_sub(at) < ttl.as_millis() as u64 {
                return answer(valid);
            }
        }
        match self
            .delivery
            .verify_recipient(address, self.verify.timeout)
            .await
        {
            Ok(valid) => {
                // The session does not wait for the cache entry to commit.
                self.caches.write(QueueCommand::Verified {
                    address: address.to_owned(),
                    valid,
                    at_ms: now,
                });
                answer(valid)
            }
            Err(e) => {
                tracing::info!(rcpt = address, error = %e, "recipient not verifiable now");
                match (cached, self.verify.when_unreachable) {
                    (Some((valid, _)), _) => answer(valid),
                    (None, config::WhenUnreachable::Accept) => RcptCheck::Accept,
                    (None, config::WhenUnreachable::Tempfail) => RcptCheck::TryLater,
                }
            }
        }
    }
}

/// The route table and per-domain lifetimes from the configuration.
fn routes(config: &Config) -> (RouteTable, BTreeMap<String, Duration>) {
    let mut table = RouteTable::new();
    let mut lifetimes = BTreeMap::new();
    for d in &config.domains {
        let name = mxraft_smtp::address::normalize_domain(&d.name);
        let route = match (&d.primary, d.mx_preference) {
            (Some(p), _) => match config::split_host_port(p) {
                Some((host, port)) => Route::NextHop { host, port },
                None => continue,
            },
            (None, own) => Route::Mx {
                own_preference: own,
            },
        };
        table.insert(&name, route);
        if let Some(l) = d.max_queue_lifetime {
            lifetimes.insert(name, l);
        }
    }
    for r in &config.routes {
        if let Some((host, port)) = config::split_host_port(&r.next_hop) {
            table.insert(&r.domain, Route::NextHop { host, port });
        }
    }
    (table, lifetimes)
}

/// The addresses a started node listens on.
#[derive(Debug, Clone)]
pub struct BoundAddrs {
    /// SMTP.
    pub smtp: SocketAddr,
    /// Admin gRPC.
    pub admin: SocketAddr,
    /// Internal cluster gRPC.
    pub cluster: SocketAddr,
    /// SMTP with implicit TLS, when configured.
    pub smtp_tls: Option<SocketAddr>,
    /// Metrics and health over HTTP, when configured.
    pub http: Option<SocketAddr>,
}

/// A running node.
pub struct RunningServer {
    node: RaftNode,
    addrs: BoundAddrs,
    smtp_stop: CancellationToken,
    grpc_stop: CancellationToken,
    smtp_task: JoinHandle<()>,
    delivery_stop: CancellationToken,
    background_stop: CancellationToken,
    delivery_task: JoinHandle<()>,
    grpc_tasks: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    failed: tokio::sync::watch::Receiver<Option<String>>,
    closed: Vec<CloseWatch>,
}

/// The name of this machine, for the SMTP greeting when `smtp.hostname` is not set.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Starting a node.
pub struct Server;

/// What a node gets from the process around it.
#[derive(Default)]
pub struct StartOptions {
    /// The Prometheus recorder installed in this process, rendered at `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The node's wall clock (the system clock; tests shift it).
    pub clock: mxraft_queue::Clock,
}

/// Loads `[tls]` and checks that the certificate names this node.
fn load_tls(config: &Config) -> anyhow::Result<Option<Arc<TlsSource>>> {
    let Some(files) = config.tls_files() else {
        return Ok(None);
    };
    let source = TlsSource::load(files).context("cannot load [tls]")?;
    match source.identity() {
        Some(CertIdentity::Node(id)) if id == config.node.id => Ok(Some(Arc::new(source))),
        Some(other) => bail!(
            "tls.cert_file names {other}, but this is node {}: each node needs its own certificate \
             (mxraftctl cert create-node --id {})",
            config.node.id,
            config.node.id
        ),
        None => bail!(
            "tls.cert_file names no mxraft node: make node certificates with `mxraftctl cert create-node`"
        ),
    }
}

impl Server {
    /// Starts a node from its configuration and returns once it serves SMTP.
    pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
        Self::start_with(config, StartOptions::default()).await
    }

    /// [`start`](Self::start), with what the process provides.
    pub async fn start_with(
        config: Config,
        options: StartOptions,
    ) -> anyhow::Result<RunningServer> {
        config.validate().map_err(anyhow::Error::msg)?;
        let id = config.node.id;

        let node_tls = load_tls(&config)?;
        // The cluster port goes without TLS only when explicitly allowed (on loopback).
        let cluster_tls = if config.cluster.insecure_plaintext {
            None
        } else {
            node_tls.clone()
        };
        let tokens = Authenticator::new(
            config
                .admin
                .token_files
                .iter()
                .map(|t| TokenFile {
                    path: t.path.clone(),
                    role: t.role.role(),
                })
                .collect(),
        )
        .context("cannot load admin.token_files")?;
        let tokens = Arc::new(tokens);

        let smtp_listener = bind("SMTP", config.smtp.listen).await?;
        let admin_listener = bind("the admin API", config.admin.listen).await?;
        let cluster_listener = bind("the cluster service", config.cluster.listen).await?;
        let tls_listener = match config.smtp.tls_listen {
            Some(addr) => Some(bind("SMTP with implicit TLS", addr).await?),
            None => None,
        };
        let http_listener = match config.metrics.listen {
            Some(addr) => Some(bind("metrics and health (metrics.listen)", addr).await?),
            None => None,
        };
        let tls = match (&config.smtp.tls_cert_file, &config.smtp.tls_key_file) {
            (Some(cert), Some(key)) => Some(Arc::new(
                mxraft_smtp::TlsStore::load(cert, key)
                    .context("cannot load the TLS certificate")?,
            )),
            _ => None,
        };
        let addrs = BoundAddrs {
            smtp: smtp_listener.local_addr()?,
            admin: admin_listener.local_addr()?,
            cluster: cluster_listener.local_addr()?,
            smtp_tls: match &tls_listener {
                Some(l) => Some(l.local_addr()?),
                None => None,
            },
            http: match &http_listener {
                Some(l) => Some(l.local_addr()?),
                None => None,
            },
        };
        let hostname = config.smtp.hostname.clone().unwrap_or_else(system_hostname);
        let info = NodeInfo {
            cluster_addr: config
                .cluster
                .advertise
                .clone()
                .unwrap_or_else(|| addrs.cluster.to_string()),
            smtp_addr: config.smtp.advertise.clone().unwrap_or_else(|| {
                if addrs.smtp.ip().is_unspecified() {
                    format!("{hostname}:{}", addrs.smtp.port())
                } else {
                    addrs.smtp.to_string()
                }
            }),
            admin_addr: config
                .admin
                .advertise
                .clone()
                .unwrap_or_else(|| addrs.admin.to_string()),
        };
        info!(node_id = id, smtp = %addrs.smtp, admin = %addrs.admin, cluster = %addrs.cluster,
              cluster_tls = cluster_tls.is_some(), admin_tls = config.admin_tls(), "listeners bound");

        let data_dir = &config.node.data_dir;
        let stores = Stores::open(data_dir, StoreOptions::default())
            .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
        let closed = vec![
            stores.log.closed_watch(),
            stores.state_machine.closed_watch(),
        ];
        info!(data_dir = %data_dir.display(), "stores opened");

        let node = RaftNode::start(NodeSetup {
            id,
            info: info.clone(),
            config: config.cluster.clone(),
            log: stores.log,
            state_machine: stores.state_machine,
            tls: cluster_tls.clone(),
            check_proposal: proposals::proposal_check(&config),
            clock: options.clock.clone(),
        })
        .await?;
        info!(
            node_id = id,
            cluster_id = node.cluster_id().unwrap_or_default(),
            "raft started"
        );

        let grpc_stop = CancellationToken::new();
        let mut grpc_tasks = Vec::new();
        let cluster_router = grpc_builder().add_service(ClusterService::server(node.clone()));
        grpc_tasks.push(spawn_grpc(
            "cluster",
            tls::incoming(
                cluster_listener,
                cluster_tls.clone(),
                ClientAuth::Node,
                "cluster",
            ),
            cluster_router,
            grpc_stop.clone(),
        ));

        if node.is_initialized().await {
            if config.cluster.bootstrap {
                info!("data directory holds raft state; cluster.bootstrap ignored");
            }
        } else {
            let peers = config.cluster.known_peers();
            info!(bootstrap = config.cluster.bootstrap, peers = ?peers, "pristine node: settling its membership");
            node.settle_membership(config.cluster.bootstrap, peers);
        }

        let policy = DomainPolicy::new(config.domains.iter().map(|d| d.name.as_str()));
        let resolver =
            mxraft_delivery::resolver::HickoryResolver::new(&config.delivery.name_servers)
                .map_err(anyhow::Error::msg)?;
        let (route_table, lifetimes) = routes(&config);
        let (health, health_service) = tonic_health::server::health_reporter();
        let admin_router =
            grpc_builder()
                .add_service(health_service)
                .add_service(AdminService::server(
                    node.clone(),
                    AdminOptions {
                        read_timeout: config.admin.read_timeout,
                        hostname: hostname.clone(),
                        describe_route: {
                            let table = route_table.clone();
                            Arc::new(move |d: &str| table.route(d).describe())
                        },
                        configured: config
                            .domains
                            .iter()
                            .map(|d| mxraft_smtp::address::normalize_domain(&d.name))
                            .chain(
                                config
                                    .routes
                                    .iter()
                                    .map(|r| mxraft_smtp::address::normalize_domain(&r.domain)),
                            )
                            .collect(),
                    },
                    tokens.clone(),
                ));
        let admin_tls = if config.admin_tls() {
            node_tls.clone()
        } else {
            None
        };
        grpc_tasks.push(spawn_grpc(
            "admin",
            tls::incoming(admin_listener, admin_tls, ClientAuth::Optional, "admin"),
            admin_router,
            grpc_stop.clone(),
        ));
        info!(addr = %addrs.admin, "admin API serving");

        let delivery = Arc::new(
            Delivery::new(
                node.clone(),
                config.delivery.clone(),
                route_table,
                lifetimes,
                Arc::new(resolver),
                hostname.clone(),
            )
            .map_err(anyhow::Error::msg)?,
        );
        let delivery_stop = CancellationToken::new();
        let delivery_task = tokio::spawn(delivery.clone().run(delivery_stop.clone()));
        let horizon = config.greylist.max_age.max(config.verify.positive_ttl);
        // Every background task is in this set; a supervisor awaits them (see `supervise`).
        let background_stop = CancellationToken::new();
        let mut background = JoinSet::new();
        background.spawn(prune_caches(node.clone(), horizon, background_stop.clone()));
        background.spawn(export_gauges(node.clone(), background_stop.clone()));
        background.spawn(report_health(node.clone(), health, background_stop.clone()));
        let (caches, cache_writes) = CacheWriter::new();
        background.spawn(write_caches(
            node.clone(),
            cache_writes,
            background_stop.clone(),
        ));
        let (failed_tx, failed) = tokio::sync::watch::channel(None);
        let failed_tx = Arc::new(failed_tx);
        background.spawn(watch_raft(
            node.clone(),
            failed_tx.clone(),
            background_stop.clone(),
        ));
        if let Some(listener) = http_listener {
            background.spawn(http::serve(
                listener,
                node.clone(),
                options.metrics,
                background_stop.clone(),
            ));
            info!(addr = ?addrs.http, "metrics, /readyz and /livez serving");
        }
        info!(probe_interval = ?config.delivery.probe_interval, "delivery running");

        let ctx = Arc::new(SmtpContext {
            hostname: hostname.clone(),
            config: config.smtp.clone(),
            policy: policy.clone(),
            submitter: RaftSubmitter {
                node: node.clone(),
                caches,
                delivery,
                policy,
                rules: config
                    .domains
                    .iter()
                    .map(|d| (mxraft_smtp::address::normalize_domain(&d.name), d.clone()))
                    .collect(),
                greylist: config.greylist.clone(),
                verify: config.verify.clone(),
                quota: config.queue.clone(),
                data_dir: config.node.data_dir.clone(),
                hostname: hostname.clone(),
            },
            ids: IdGenerator::new(id),
            node_id: id,
            tls: tls.clone(),
            memory: mxraft_smtp::memory::MessageMemory::new(config.smtp.max_message_memory),
        });
        let smtp_stop = CancellationToken::new();
        let smtp_task = tokio::spawn(mxraft_smtp::serve(
            smtp_listener,
            tls_listener,
            ctx,
            smtp_stop.clone(),
        ));
        let mut reloadable: Vec<Reloadable> = vec![Reloadable::Tokens(tokens)];
        if let Some(tls) = tls {
            reloadable.push(Reloadable::Smtp(tls));
            info!("STARTTLS offered");
        }
        if let Some(t) = node_tls {
            reloadable.push(Reloadable::Cluster(t));
        }
        background.spawn(reload_credentials(reloadable, background_stop.clone()));
        let background = vec![tokio::spawn(supervise(background, failed_tx))];
        info!(addr = %addrs.smtp, domains = config.domains.len(), "SMTP accepting");

        Ok(RunningServer {
            node,
            addrs,
            smtp_stop,
            grpc_stop,
            smtp_task,
            delivery_stop,
            background_stop,
            delivery_task,
            grpc_tasks,
            background,
            failed,
            closed,
        })
    }
}

/// Watches for Raft stopping on a fatal error: logs the cause and reports it, so the process
/// stops (SMTP already answers `421` and the node is not ready) and its supervisor restarts it.
/// Awaits the node's background tasks. One that panics is logged and stops the node (through
/// the same `failed` signal as a fatal Raft error). Aborting the supervisor aborts them all.
async fn supervise(
    mut tasks: JoinSet<()>,
    failed: Arc<tokio::sync::watch::Sender<Option<String>>>,
) {
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done
            && e.is_panic()
        {
            tracing::error!(error = %e, "a background task panicked; this node stops");
            failed.send_replace(Some(format!("a background task panicked: {e}")));
        }
    }
}

/// Cache entries the front door writes (greylisting triplets, verification results), handed
/// to one task that commits them: the session never waits for them, and a burst of them is
/// bounded (beyond [`CACHE_WRITES_QUEUED`] waiting, new ones are dropped and counted).
#[derive(Clone)]
struct CacheWriter {
    tx: tokio::sync::mpsc::Sender<QueueCommand>,
}

/// Cache writes waiting to be committed at most.
const CACHE_WRITES_QUEUED: usize = 1024;

impl CacheWriter {
    fn new() -> (CacheWriter, tokio::sync::mpsc::Receiver<QueueCommand>) {
        let (tx, rx) = tokio::sync::mpsc::channel(CACHE_WRITES_QUEUED);
        (CacheWriter { tx }, rx)
    }

    fn write(&self, cmd: QueueCommand) {
        if self.tx.try_send(cmd).is_err() {
            metrics::counter!("mxraft_cache_writes_dropped_total").increment(1);
            tracing::debug!("cache write dropped: too many waiting");
        }
    }
}

async fn write_caches(
    node: RaftNode,
    mut rx: tokio::sync::mpsc::Receiver<QueueCommand>,
    stop: CancellationToken,
) {
    loop {
        let cmd = tokio::select! {
            _ = stop.cancelled() => return,
            cmd = rx.recv() => match cmd {
                Some(cmd) => cmd,
                None => return,
            },
        };
        if let Err(e) = node.propose(cmd).await {
            tracing::debug!(error = %e, "cache entry not committed");
        }
    }
}

async fn watch_raft(
    node: RaftNode,
    failed: Arc<tokio::sync::watch::Sender<Option<String>>>,
    stop: CancellationToken,
) {
    use openraft::async_runtime::WatchReceiver;
    let mut metrics = node.raft().metrics();
    // Woken by every metrics change; the sender goes away only when Raft has ended.
    while node.fatal_error().is_none() {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { break },
        }
    }
    if let Some(e) = node.fatal_error() {
        tracing::error!(error = %e, "raft stopped on a fatal error; this node stops");
        failed.send_replace(Some(e));
    }
}

/// Every second: gRPC health says SERVING only while this node answers for the cluster.
async fn report_health(
    node: RaftNode,
    health: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    use tonic_health::ServingStatus;
    let mut last = None;
    loop {
        let status = match node.current(http::READY_SLACK) {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if last != Some(status) {
            health.set_service_status("", status).await;
            health.set_service_status("mxraft.v1.Admin", status).await;
            last = Some(status);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// On the leader, every ten minutes: forgets greylisting triplets and verification results
/// older than `horizon`.
async fn prune_caches(node: RaftNode, horizon: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
        if node.metrics().current_leader != Some(node.id()) {
            continue;
        }
        let before_ms = node
            .clock()
            .now_ms()
            .saturating_sub(horizon.as_millis() as u64);
        if let Err(e) = node.propose(QueueCommand::PruneCaches { before_ms }).await {
            warn!(error = %e, "cache pruning not committed");
        }
    }
}

/// Describes every metric mxraft records, for the `# HELP` lines of the Prometheus endpoint.
/// Call once, after installing a recorder.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "mxraft_smtp_sessions_total",
        "SMTP sessions opened (refused connections are not counted)"
    );
    describe_gauge!("mxraft_smtp_sessions_active", "SMTP sessions open now");
    describe_counter!(
        "mxraft_smtp_rejections_total",
        "SMTP commands, messages and connections refused, by the rule that refused them"
    );
    describe_counter!(
        "mxraft_smtp_messages_queued_total",
        "Messages this node accepted (answered 250 after the Raft commit)"
    );
    describe_counter!(
        "mxraft_smtp_bytes_queued_total",
        "Bytes of the messages this node accepted"
    );
    describe_counter!(
        "mxraft_delivery_attempts_total",
        "Delivery attempts made by this node, per recipient, by result (delivered, failed, deferred)"
    );
    describe_counter!(
        "mxraft_delivery_cut_total",
        "Deliveries cut short, by reason: lease_ended (the claim could not be renewed in time), shutdown"
    );
    describe_gauge!(
        "mxraft_clock_skew_seconds",
        "On the leader: how far each proposing node's clock is from the leader's"
    );
    describe_counter!(
        "mxraft_clock_skew_refusals_total",
        "On the leader: proposals refused because the proposer's clock was more than cluster.max_clock_skew off"
    );
    describe_counter!(
        "mxraft_cache_evictions_total",
        "Entries dropped to keep a bounded cache (greylist, verified) within its bound"
    );
    describe_counter!(
        "mxraft_cache_writes_dropped_total",
        "Greylisting or verification entries not written because too many were waiting"
    );
    describe_counter!(
        "mxraft_tls_refused_total",
        "Connections to the cluster or admin port refused at the TLS handshake, by port"
    );
    describe_gauge!("mxraft_queue_messages", "Messages in the replicated queue");
    describe_gauge!(
        "mxraft_queue_bytes",
        "Bytes of the messages in the replicated queue"
    );
    describe_gauge!(
        "mxraft_queue_oldest_age_seconds",
        "Age of the oldest queued message (0 when the queue is empty)"
    );
    describe_gauge!("mxraft_raft_is_leader", "1 on the Raft leader, 0 elsewhere");
    describe_gauge!("mxraft_raft_term", "The current Raft term");
    describe_gauge!(
        "mxraft_raft_last_applied_index",
        "Index of the last Raft log entry applied to this node's state machine"
    );
}

/// Every five seconds: sets the gauges that describe the queue and this node's Raft state
/// (they are read from the local state machine, so every node reports the same queue).
async fn export_gauges(node: RaftNode, stop: CancellationToken) {
    loop {
        let stats = node.state_machine().read().queue().stats();
        metrics::gauge!("mxraft_queue_messages").set(stats.messages as f64);
        metrics::gauge!("mxraft_queue_bytes").set(stats.bytes as f64);
        let age = stats
            .oldest_received_at_ms
            .map(|t| node.clock().now_ms().saturating_sub(t) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!("mxraft_queue_oldest_age_seconds").set(age);
        let raft = node.metrics();
        let leader = raft.current_leader == Some(node.id());
        metrics::gauge!("mxraft_raft_is_leader").set(if leader { 1.0 } else { 0.0 });
        metrics::gauge!("mxraft_raft_term").set(raft.current_term as f64);
        let applied = raft.last_applied.map(|l| l.index).unwrap_or(0);
        metrics::gauge!("mxraft_raft_last_applied_index").set(applied as f64);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Credentials read from files, which a running node takes again when they change.
enum Reloadable {
    /// The SMTP certificate (STARTTLS, implicit TLS).
    Smtp(Arc<mxraft_smtp::TlsStore>),
    /// The node certificate and the cluster CA (cluster and admin ports).
    Cluster(Arc<TlsSource>),
    /// The admin bearer tokens.
    Tokens(Arc<Authenticator>),
}

impl Reloadable {
    fn name(&self) -> &'static str {
        match self {
            Reloadable::Smtp(_) => "TLS certificate",
            Reloadable::Cluster(_) => "cluster certificates",
            Reloadable::Tokens(_) => "admin tokens",
        }
    }

    /// Reloads (always when `forced`, else if a file changed); returns whether it did.
    fn reload(&self, forced: bool) -> Result<bool, String> {
        match self {
            Reloadable::Smtp(t) if forced => t.reload().map(|_| true).map_err(|e| e.to_string()),
            Reloadable::Smtp(t) => t.reload_if_changed().map_err(|e| e.to_string()),
            Reloadable::Cluster(t) if forced => t.reload().map(|_| true).map_err(|e| e.to_string()),
            Reloadable::Cluster(t) => t.reload_if_changed().map_err(|e| e.to_string()),
            Reloadable::Tokens(t) => t.reload_if_changed().map_err(|e| e.to_string()),
        }
    }
}

/// Reloads certificates and tokens on SIGHUP and when their files change (checked every 10 s).
/// New connections use what was reloaded; a file that does not load keeps the previous one.
async fn reload_credentials(items: Vec<Reloadable>, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = hangup => true,
            _ = tokio::time::sleep(Duration::from_secs(10)) => false,
        };
        for item in &items {
            match item.reload(forced) {
                Ok(true) => info!(signal = forced, what = item.name(), "reloaded"),
                Ok(false) => {}
                Err(e) => {
                    warn!(what = item.name(), error = %e, "not reloaded; the previous one stays in use")
                }
            }
        }
    }
}

/// A gRPC server with windows large enough for replication batches and snapshot chunks.
fn grpc_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
}

fn spawn_grpc(
    name: &'static str,
    incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<tls::Conn>>,
    router: tonic::transport::server::Router,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
        {
            warn!(service = name, error = %e, "gRPC server failed");
        }
    })
}

impl RunningServer {
    /// The addresses the node listens on.
    pub fn addrs(&self) -> &BoundAddrs {
        &self.addrs
    }

    /// The Raft node.
    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    /// Resolves when the node has failed (Raft stopped on a fatal error), with the cause.
    pub async fn failed(&self) -> String {
        let mut rx = self.failed.clone();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Stops the node in order and returns once its databases are closed.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        // Deliveries stop at once, releasing their claims to the other nodes, while SMTP
        // sessions get their grace to finish their transactions.
        info!("stopping SMTP and delivery");
        self.smtp_stop.cancel();
        self.delivery_stop.cancel();
        let _ = (&mut self.smtp_task).await;
        self.stop_rest(Duration::from_secs(2)).await
    }

    /// Stops the node at once, as close to a crash as a process can do to itself: sessions are
    /// cut, gRPC servers dropped, Raft stopped. Returns once the databases are closed.
    pub async fn kill(self) -> anyhow::Result<()> {
        self.smtp_stop.cancel();
        self.smtp_task.abort();
        self.stop_rest(Duration::ZERO).await
    }

    async fn stop_rest(self, grace: Duration) -> anyhow::Result<()> {
        info!("stopping delivery");
        self.delivery_stop.cancel();
        if grace.is_zero() {
            self.delivery_task.abort();
        }
        let _ = self.delivery_task.await;
        self.background_stop.cancel();
        for task in self.background {
            task.abort();
            let _ = task.await;
        }
        info!("stopping gRPC services");
        self.grpc_stop.cancel();
        for task in self.grpc_tasks {
            // Peers keep HTTP/2 connections open; do not wait for them beyond the grace.
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
            }
        }
        info!("stopping raft");
        self.node.shutdown().await;
        drop(self.node);
        let until = Instant::now() + Duration::from_secs(30);
        while !self.closed.iter().all(CloseWatch::is_closed) {
            if Instant::now() > until {
                bail!("the databases were not closed within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!("stopped");
        Ok(())
    }
}
