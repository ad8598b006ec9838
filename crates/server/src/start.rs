//! Starting a node, one function per phase (see the crate documentation for the order).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use mxraft_admin::{
    AdminOptions, AdminService, Authenticator, DnsSetup, ProbeOutcome, Prober, TokenFile,
};
use mxraft_cluster::service::ClusterService;
use mxraft_cluster::{NodeSetup, RaftNode};
use mxraft_delivery::{Delivery, RouteTable};
use mxraft_proto::admin::DnsDomain;
use mxraft_proto::identity::CertIdentity;
use mxraft_proto::tls::{self, ClientAuth, TlsSource};
use mxraft_smtp::address::normalize_domain;
use mxraft_smtp::policy::FrontDoorPolicy;
use mxraft_smtp::{DomainPolicy, IdGenerator, SmtpContext};
use mxraft_store::{CloseWatch, NodeInfo, StoreOptions, Stores};

use crate::front_door::{self, CacheWriter, NodeView, RaftQueue};
use crate::tasks::{self, FailedTx, Reloadable};
use crate::{BoundAddrs, Config, RunningServer, http, proposals};

/// Starting a node.
pub struct Server;

/// What a node gets from the process around it.
#[derive(Default)]
pub struct StartOptions {
    /// The Prometheus recorder installed in this process, rendered at `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The node's wall clock (the system clock; tests shift it).
    pub clock: mxraft_cluster::Clock,
    /// Allow the `[testing]` modes that lose acknowledged mail (`--unsafe-testing`).
    pub unsafe_testing: bool,
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

/// Certificates and tokens, loaded before anything listens.
struct Credentials {
    /// The node certificate and cluster CA (`[tls]`).
    node: Option<Arc<TlsSource>>,
    /// What the cluster port uses: the node's, unless `cluster.insecure_plaintext`.
    cluster: Option<Arc<TlsSource>>,
    /// The SMTP certificate (STARTTLS, implicit TLS).
    smtp: Option<Arc<mxraft_smtp::TlsStore>>,
    /// The admin bearer tokens.
    tokens: Arc<Authenticator>,
}

impl Credentials {
    fn load(config: &Config) -> anyhow::Result<Credentials> {
        let node = load_tls(config)?;
        // The cluster port goes without TLS only when explicitly allowed (on loopback).
        let cluster = if config.cluster.insecure_plaintext {
            None
        } else {
            node.clone()
        };
        let files = config
            .admin
            .token_files
            .iter()
            .map(|t| TokenFile {
                path: t.path.clone(),
                role: t.role.role(),
            })
            .collect();
        let tokens = Authenticator::new(files).context("cannot load admin.token_files")?;
        let smtp = match (&config.smtp.tls_cert_file, &config.smtp.tls_key_file) {
            (Some(cert), Some(key)) => Some(Arc::new(
                mxraft_smtp::TlsStore::load(cert, key)
                    .context("cannot load the TLS certificate")?,
            )),
            _ => None,
        };
        Ok(Credentials {
            node,
            cluster,
            smtp,
            tokens: Arc::new(tokens),
        })
    }
}

/// Every listener, bound before anything starts, so that a taken port fails at once.
struct Listeners {
    smtp: TcpListener,
    smtp_tls: Option<TcpListener>,
    admin: TcpListener,
    cluster: TcpListener,
    http: Option<TcpListener>,
}

impl Listeners {
    async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let smtp = bind("SMTP", config.smtp.listen).await?;
        let admin = bind("the admin API", config.admin.listen).await?;
        let cluster = bind("the cluster service", config.cluster.listen).await?;
        let smtp_tls = match config.smtp.tls_listen {
            Some(addr) => Some(bind("SMTP with implicit TLS", addr).await?),
            None => None,
        };
        let http = match config.metrics.listen {
            Some(addr) => Some(bind("metrics and health (metrics.listen)", addr).await?),
            None => None,
        };
        Ok(Listeners {
            smtp,
            smtp_tls,
            admin,
            cluster,
            http,
        })
    }

    fn addrs(&self) -> std::io::Result<BoundAddrs> {
        let local = |l: &Option<TcpListener>| l.as_ref().map(TcpListener::local_addr).transpose();
        Ok(BoundAddrs {
            smtp: self.smtp.local_addr()?,
            admin: self.admin.local_addr()?,
            cluster: self.cluster.local_addr()?,
            smtp_tls: local(&self.smtp_tls)?,
            http: local(&self.http)?,
        })
    }
}

/// The addresses other nodes and clients are told to use for this node.
fn node_info(config: &Config, addrs: &BoundAddrs, hostname: &str) -> NodeInfo {
    NodeInfo {
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
    }
}

/// Opens the stores and starts Raft; returns the node and the stores' close signals.
async fn start_raft(
    config: &Config,
    info: NodeInfo,
    tls: Option<Arc<TlsSource>>,
    clock: mxraft_cluster::Clock,
) -> anyhow::Result<(RaftNode, Vec<CloseWatch>)> {
    let data_dir = &config.node.data_dir;
    let store_options = StoreOptions {
        skip_log_fsync: config.testing.skip_log_fsync,
        ..StoreOptions::default()
    };
    let stores = Stores::open(data_dir, store_options)
        .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    let closed = vec![
        stores.log.closed_watch(),
        stores.state_machine.closed_watch(),
    ];
    info!(data_dir = %data_dir.display(), "stores opened");
    let node = RaftNode::start(NodeSetup {
        id: config.node.id,
        info,
        config: config.cluster.clone(),
        log: stores.log,
        state_machine: stores.state_machine,
        tls,
        check_proposal: proposals::proposal_check(config),
        clock,
    })
    .await?;
    info!(
        node_id = config.node.id,
        cluster_id = node.cluster_id().unwrap_or_default(),
        "raft started"
    );
    Ok((node, closed))
}

/// A pristine node bootstraps or joins; one with Raft state carries on.
async fn settle(node: &RaftNode, config: &Config) {
    let bootstrap = config.cluster.bootstraps(config.node.id);
    if node.is_initialized().await {
        if bootstrap {
            info!("data directory holds raft state; cluster.bootstrap ignored");
        }
    } else {
        let peers = config.cluster.known_peers();
        info!(bootstrap, peers = ?peers, "pristine node: settling its membership");
        node.settle_membership(bootstrap, peers);
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

/// The admin API and gRPC health on the admin listener.
fn serve_admin(
    config: &Config,
    node: &RaftNode,
    listener: TcpListener,
    credentials: &Credentials,
    (route_table, delivery, refusals): (
        &RouteTable,
        &Arc<Delivery>,
        &tokio::sync::broadcast::Sender<mxraft_queue::Refusal>,
    ),
    hostname: &str,
    stop: CancellationToken,
) -> (JoinHandle<()>, tonic_health::server::HealthReporter) {
    let (health, health_service) = tonic_health::server::health_reporter();
    let table = route_table.clone();
    let configured = config
        .domains
        .iter()
        .map(|d| normalize_domain(&d.name))
        .chain(config.routes.iter().map(|r| normalize_domain(&r.domain)))
        .collect();
    let options = AdminOptions {
        read_timeout: config.admin.read_timeout,
        hostname: hostname.to_owned(),
        describe_route: Arc::new(move |d: &str| table.route(d).describe()),
        configured,
        prober: Some(prober(delivery.clone())),
        data_dir: config.node.data_dir.clone(),
        transfer_timeout: config.admin.read_timeout.max(Duration::from_secs(10)),
        refusals: Some(refusals.clone()),
        dns: dns_setup(config, hostname),
    };
    let router = grpc_builder()
        .add_service(health_service)
        .add_service(AdminService::server(
            node.clone(),
            options,
            credentials.tokens.clone(),
        ));
    let tls = if config.admin_tls() {
        credentials.node.clone()
    } else {
        None
    };
    let incoming = tls::incoming(listener, tls, ClientAuth::Optional, "admin");
    (spawn_grpc("admin", incoming, router, stop), health)
}

/// What `mxraftctl dns` learns from this node: its MX host name and addresses, and each
/// protected domain's preferences.
fn dns_setup(config: &Config, hostname: &str) -> DnsSetup {
    DnsSetup {
        mx_host: hostname.to_owned(),
        public_addresses: config.smtp.published_addresses(),
        domains: config
            .domains
            .iter()
            .map(|d| DnsDomain {
                name: normalize_domain(&d.name),
                primary_mx: d.primary_mx.as_deref().map(normalize_domain),
                primary_preference: d.primary_preference().into(),
                backup_preference: d.backup_preference().into(),
                routes_by_mx: d.mx_preference.is_some(),
            })
            .collect(),
    }
}

/// `destinations probe`: probes from this node through its delivery, and commits the result.
fn prober(delivery: Arc<Delivery>) -> Prober {
    Arc::new(move |destination: String| {
        let delivery = delivery.clone();
        Box::pin(async move {
            let (up, error) = delivery
                .probe_now(&destination)
                .await
                .map_err(tonic::Status::from)?;
            Ok(ProbeOutcome { up, error })
        })
    })
}

/// Everything a node runs besides SMTP, delivery and gRPC, under one supervisor.
struct Background {
    tasks: JoinSet<()>,
    stop: CancellationToken,
    failed_tx: FailedTx,
    failed: tokio::sync::watch::Receiver<Option<String>>,
}

impl Background {
    fn start(
        config: &Config,
        node: &RaftNode,
        health: tonic_health::server::HealthReporter,
        http: Option<TcpListener>,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> (Background, CacheWriter) {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let horizon = config.greylist.max_age.max(config.verify.positive_ttl);
        tasks.spawn(tasks::prune_caches(node.clone(), horizon, stop.clone()));
        tasks.spawn(tasks::export_gauges(node.clone(), stop.clone()));
        tasks.spawn(tasks::report_health(node.clone(), health, stop.clone()));
        let (caches, cache_writes) = CacheWriter::new();
        tasks.spawn(front_door::write_caches(
            node.clone(),
            cache_writes,
            stop.clone(),
        ));
        let (failed_tx, failed) = tokio::sync::watch::channel(None);
        let failed_tx = Arc::new(failed_tx);
        tasks.spawn(tasks::watch_raft(
            node.clone(),
            failed_tx.clone(),
            stop.clone(),
        ));
        if let Some(listener) = http {
            let addr = listener.local_addr().ok();
            tasks.spawn(http::serve(listener, node.clone(), metrics, stop.clone()));
            info!(addr = ?addr, "metrics, /readyz and /livez serving");
        }
        let background = Background {
            tasks,
            stop,
            failed_tx,
            failed,
        };
        (background, caches)
    }

    /// Adds the credential reloader and hands the set to its supervisor.
    fn supervise(mut self, reloadable: Vec<Reloadable>) -> Vec<JoinHandle<()>> {
        self.tasks
            .spawn(tasks::reload_credentials(reloadable, self.stop.clone()));
        vec![tokio::spawn(tasks::supervise(self.tasks, self.failed_tx))]
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
        config.validate()?;
        config.testing.check(options.unsafe_testing)?;
        for key in config.testing.enabled() {
            warn!(
                key,
                "UNSAFE: {key} is set; this node loses acknowledged mail (fault-injection tests only)"
            );
        }
        let id = config.node.id;
        let credentials = Credentials::load(&config)?;
        let listeners = Listeners::bind(&config).await?;
        let addrs = listeners.addrs()?;
        let hostname = config.smtp.hostname.clone().unwrap_or_else(system_hostname);
        info!(node_id = id, smtp = %addrs.smtp, admin = %addrs.admin, cluster = %addrs.cluster,
              cluster_tls = credentials.cluster.is_some(), admin_tls = config.admin_tls(), "listeners bound");

        let info = node_info(&config, &addrs, &hostname);
        let cluster_tls = credentials.cluster.clone();
        let (node, closed) = start_raft(&config, info, cluster_tls.clone(), options.clock).await?;

        let grpc_stop = CancellationToken::new();
        let cluster_router = grpc_builder().add_service(ClusterService::server(node.clone()));
        let cluster_incoming =
            tls::incoming(listeners.cluster, cluster_tls, ClientAuth::Node, "cluster");
        let mut grpc_tasks = vec![spawn_grpc(
            "cluster",
            cluster_incoming,
            cluster_router,
            grpc_stop.clone(),
        )];
        settle(&node, &config).await;

        let (route_table, lifetimes) = front_door::routes(&config);
        let resolver = mxraft_dns::HickoryResolver::new(&config.delivery.name_servers)
            .map_err(anyhow::Error::msg)?;
        let resolver: Arc<dyn mxraft_dns::Resolver> = Arc::new(resolver);
        let delivery = Arc::new(Delivery::new(
            node.clone(),
            config.delivery.clone(),
            route_table.clone(),
            lifetimes,
            resolver.clone(),
            hostname.clone(),
        )?);
        // The front door's refusals, for `events watch`.
        let refusals = tokio::sync::broadcast::channel(1024).0;
        let (admin_task, health) = serve_admin(
            &config,
            &node,
            listeners.admin,
            &credentials,
            (&route_table, &delivery, &refusals),
            &hostname,
            grpc_stop.clone(),
        );
        grpc_tasks.push(admin_task);
        info!(addr = %addrs.admin, "admin API serving");

        let delivery_stop = CancellationToken::new();
        let delivery_task = tokio::spawn(delivery.clone().run(delivery_stop.clone()));
        info!(probe_interval = ?config.delivery.probe_interval, "delivery running");

        let (background, caches) =
            Background::start(&config, &node, health, listeners.http, options.metrics);
        let background_stop = background.stop.clone();
        let failed = background.failed.clone();

        let smtp_stop = CancellationToken::new();
        let front_door = FrontDoor {
            node: &node,
            caches,
            delivery,
            resolver,
            tls: credentials.smtp.clone(),
            refusals,
        };
        let smtp_task = front_door.serve(
            &config,
            hostname,
            listeners.smtp,
            listeners.smtp_tls,
            &smtp_stop,
        );
        let background = background.supervise(reloadable(&credentials));
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

/// What the SMTP front door is built from.
struct FrontDoor<'a> {
    node: &'a RaftNode,
    caches: CacheWriter,
    delivery: Arc<Delivery>,
    resolver: Arc<dyn mxraft_dns::Resolver>,
    tls: Option<Arc<mxraft_smtp::TlsStore>>,
    refusals: tokio::sync::broadcast::Sender<mxraft_queue::Refusal>,
}

impl FrontDoor<'_> {
    /// Starts serving SMTP (and SMTP with implicit TLS) until `stop`.
    fn serve(
        self,
        config: &Config,
        hostname: String,
        listener: TcpListener,
        tls_listener: Option<TcpListener>,
        stop: &CancellationToken,
    ) -> JoinHandle<()> {
        let node = self.node;
        let policy = FrontDoorPolicy::new(
            NodeView {
                node: node.clone(),
                caches: self.caches,
            },
            self.delivery,
            self.resolver,
            front_door::policy_config(config, &hostname),
        );
        let ctx = Arc::new(SmtpContext {
            hostname,
            config: config.smtp.clone(),
            domains: DomainPolicy::new(config.domains.iter().map(|d| d.name.as_str())),
            queue: RaftQueue {
                node: node.clone(),
                ack_before_commit: config.testing.ack_before_commit,
            },
            policy,
            ids: IdGenerator::new(config.node.id),
            node_id: config.node.id,
            tls: self.tls,
            memory: mxraft_smtp::memory::MessageMemory::new(config.smtp.max_message_memory),
            refusals: self.refusals,
        });
        tokio::spawn(mxraft_smtp::serve(
            listener,
            tls_listener,
            ctx,
            stop.clone(),
        ))
    }
}

/// What a running node reloads when its files change.
fn reloadable(credentials: &Credentials) -> Vec<Reloadable> {
    let mut items = vec![Reloadable::Tokens(credentials.tokens.clone())];
    if let Some(tls) = &credentials.smtp {
        items.push(Reloadable::Smtp(tls.clone()));
        info!("STARTTLS offered");
    }
    if let Some(t) = &credentials.node {
        items.push(Reloadable::Cluster(t.clone()));
    }
    items
}
