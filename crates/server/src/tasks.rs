//! The node's background tasks: the supervisor, Raft's fatal errors, gRPC health, cache
//! pruning, the gauges, and reloading credentials.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use mxraft_admin::Authenticator;
use mxraft_cluster::RaftNode;
use mxraft_proto::tls::TlsSource;
use mxraft_queue::QueueCommand;

/// Where a node's failure is reported: the cause, once.
pub(crate) type FailedTx = Arc<tokio::sync::watch::Sender<Option<String>>>;

/// Awaits the node's background tasks. One that panics is logged and stops the node (through
/// the same `failed` signal as a fatal Raft error). Aborting the supervisor aborts them all.
pub(crate) async fn supervise(mut tasks: JoinSet<()>, failed: FailedTx) {
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done
            && e.is_panic()
        {
            tracing::error!(error = %e, "a background task panicked; this node stops");
            failed.send_replace(Some(format!("a background task panicked: {e}")));
        }
    }
}

/// Watches for Raft stopping on a fatal error: logs the cause and reports it, so the process
/// stops (SMTP already answers `421` and the node is not ready) and its supervisor restarts it.
pub(crate) async fn watch_raft(node: RaftNode, failed: FailedTx, stop: CancellationToken) {
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
pub(crate) async fn report_health(
    node: RaftNode,
    health: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    use tonic_health::ServingStatus;
    let mut last = None;
    loop {
        let status = match node.current(crate::http::READY_SLACK) {
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
pub(crate) async fn prune_caches(node: RaftNode, horizon: Duration, stop: CancellationToken) {
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
    describe_gauge!(
        "mxraft_rocksdb_memory_bytes",
        "What RocksDB holds in memory, by database (log, state) and kind (memtables, table_readers, block_cache)"
    );
    describe_gauge!(
        "mxraft_heap_bytes",
        "The daemon's own heap (RocksDB's is apart): allocated (in use) and resident (held from the system)"
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
pub(crate) async fn export_gauges(node: RaftNode, stop: CancellationToken) {
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
        export_memory(&node);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Sets the memory gauges: RocksDB's per database, and the heap from jemalloc's statistics.
fn export_memory(node: &RaftNode) {
    let dbs = [
        ("log", node.log_store().memory()),
        ("state", node.state_machine().memory()),
    ];
    for (db, usage) in dbs {
        let Ok(m) = usage else { continue };
        for (kind, bytes) in [
            ("memtables", m.memtables),
            ("table_readers", m.table_readers),
            ("block_cache", m.block_cache),
        ] {
            metrics::gauge!("mxraft_rocksdb_memory_bytes", "db" => db, "kind" => kind)
                .set(bytes as f64);
        }
    }
    // The statistics are a snapshot taken when the epoch advances.
    if tikv_jemalloc_ctl::epoch::advance().is_ok() {
        for (kind, bytes) in [
            ("allocated", tikv_jemalloc_ctl::stats::allocated::read()),
            ("resident", tikv_jemalloc_ctl::stats::resident::read()),
        ] {
            if let Ok(bytes) = bytes {
                metrics::gauge!("mxraft_heap_bytes", "kind" => kind).set(bytes as f64);
            }
        }
    }
}

/// Credentials read from files, which a running node takes again when they change.
pub(crate) enum Reloadable {
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
    fn reload(&self, forced: bool) -> Result<bool, ReloadError> {
        match self {
            Reloadable::Smtp(t) if forced => t.reload().map(|_| true).map_err(ReloadError::Smtp),
            Reloadable::Smtp(t) => t.reload_if_changed().map_err(ReloadError::Smtp),
            Reloadable::Cluster(t) if forced => {
                t.reload().map(|_| true).map_err(ReloadError::Cluster)
            }
            Reloadable::Cluster(t) => t.reload_if_changed().map_err(ReloadError::Cluster),
            Reloadable::Tokens(t) => t.reload_if_changed().map_err(ReloadError::Tokens),
        }
    }
}

/// A credential file that did not load; the previous credentials stay in use.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error(transparent)]
    Smtp(mxraft_smtp::TlsError),
    #[error(transparent)]
    Cluster(mxraft_proto::tls::TlsError),
    #[error(transparent)]
    Tokens(mxraft_admin::auth::TokenError),
}

/// Reloads certificates and tokens on SIGHUP and when their files change (checked every 10 s).
/// New connections use what was reloaded; a file that does not load keeps the previous one.
pub(crate) async fn reload_credentials(items: Vec<Reloadable>, stop: CancellationToken) {
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
