//! Outbound delivery for mxraft: handing the queue back to the recovered primaries.
//!
//! Every node runs [`Delivery`]. Its two loops:
//!
//! - **Leader loop** ([`leader`]), active on the Raft leader only: grants delivery claims
//!   (`Claim` entries) for destinations that are up, at most `connections_per_destination` at
//!   a time per destination, spread over the healthy nodes; probes destinations that are down
//!   every `probe_interval` and commits their state (`SetDestination`), which makes their mail
//!   due at once when they answer again; returns expired mail and sends delay notices.
//! - **Deliverer** ([`deliver`]), on every node: watches the applied state for claims granted to
//!   this node and delivers each over one SMTP connection ([`client`]), renewing the lease and
//!   committing per-recipient results in `Report`s under the claim's fencing token.
//!
//! Routes ([`route`]) are explicit next hops or MX lookups through the [`mxraft_dns::Resolver`]
//! trait (hickory in production). What is temporary and what is permanent is decided in
//! [`route::RouteError`] for routing and in [`client::RcptResult`] for SMTP replies.
//!
//! What it does not own: the queue's rules (`mxraft-queue`), consensus (`mxraft-cluster`).

mod callout;
pub mod client;
pub mod config;
mod deliver;
mod leader;
pub mod plan;
pub mod route;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use mxraft_cluster::RaftNode;
use mxraft_queue::QueueCommand;

pub use config::DeliveryConfig;
pub use route::{Route, RouteTable};

/// How long shutdown waits for deliveries in progress to stop and release their claims.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(5);

/// How long announcing that this node stops (or runs again) may take.
const ANNOUNCE_BOUND: Duration = Duration::from_secs(1);

/// Delivery on one node.
pub struct Delivery {
    node: RaftNode,
    config: DeliveryConfig,
    routes: RouteTable,
    resolver: Arc<dyn mxraft_dns::Resolver>,
    hostname: String,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    plan: plan::PlanConfig,
}

impl Delivery {
    /// Sets up delivery. `lifetimes` overrides `max_queue_lifetime` per destination;
    /// `hostname` is used in EHLO and DSNs unless `helo_name` is configured.
    pub fn new(
        node: RaftNode,
        config: DeliveryConfig,
        routes: RouteTable,
        lifetimes: BTreeMap<String, Duration>,
        resolver: Arc<dyn mxraft_dns::Resolver>,
        hostname: String,
    ) -> Result<Delivery, tokio_rustls::rustls::Error> {
        let tls = if config.starttls {
            Some(client::opportunistic_tls()?)
        } else {
            None
        };
        let hostname = config.helo_name.clone().unwrap_or(hostname);
        let plan = plan::PlanConfig {
            connections_per_destination: config.connections_per_destination,
            messages_per_connection: config.messages_per_connection,
            claim_lease: config.claim_lease,
            lease_grace: node.max_clock_skew(),
            probe_interval: config.probe_interval,
            max_queue_lifetime: config.max_queue_lifetime,
            lifetimes,
            delay_notice_after: config.delay_notice_after,
        };
        Ok(Delivery {
            plan,
            node,
            config,
            routes,
            resolver,
            hostname,
            tls,
        })
    }

    /// The routes (for the admin API).
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The addresses to try for `destination`, in order.
    pub(crate) async fn resolve_route(
        &self,
        destination: &str,
    ) -> Result<Vec<(String, std::net::SocketAddr)>, route::RouteError> {
        let route = self.routes.route(destination);
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        route::resolve(
            self.resolver.as_ref(),
            destination,
            &route,
            self.config.mx_port,
            &mut rng,
        )
        .await
    }

    /// Runs both loops until `shutdown` is cancelled. Every task it starts (claims, probes)
    /// belongs to a set owned by this loop: on shutdown, deliveries in progress are cut short
    /// (the primary is told `RSET`/`QUIT`, or the connection closed inside a message's data)
    /// and release their claims through Raft, so another node takes over at once; whatever
    /// has not stopped after a few seconds is aborted.
    ///
    /// Before its deliveries release their claims, the node commits that it is stopping, so
    /// the leader grants the released mail to another node; running, it withdraws such an
    /// announcement left from an earlier stop.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        info!(node_id = self.node.id(), "delivery started");
        let mut metrics = self.node.raft().metrics();
        let mut claims = ClaimTasks::default();
        // Cut only after the stop is announced: the claim tasks see this token, not `shutdown`.
        let cut = CancellationToken::new();
        let mut probes: JoinSet<()> = JoinSet::new();
        let mut leader_state = leader::LeaderState::default();
        let mut announced_running: Option<Instant> = None;
        let tick = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = metrics.changed() => {
                    if changed.is_err() {
                        // Raft stopped: nothing more to deliver from this node.
                        break;
                    }
                }
                _ = tokio::time::sleep(tick) => {}
                Some(done) = claims.set.join_next(), if !claims.set.is_empty() => {
                    match done {
                        Ok(token) => claims.ended(token),
                        Err(e) if e.is_panic() => {
                            error!(error = %e, "a delivery task panicked; delivery stops on this node");
                            shutdown.cancel();
                        }
                        Err(_) => {}
                    }
                }
                Some(done) = probes.join_next(), if !probes.is_empty() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        error!(error = %e, "a probe panicked; delivery stops on this node");
                        shutdown.cancel();
                    }
                }
            }
            claims.start_new(&self, &cut);
            self.withdraw_stopping(&mut announced_running).await;
            let is_leader = self.node.metrics().current_leader == Some(self.node.id());
            if is_leader {
                self.dispatch(&mut leader_state).await;
                self.probe_due(&mut leader_state, &mut probes);
                self.expire(&mut leader_state).await;
            } else {
                leader_state = leader::LeaderState::default();
            }
        }
        shutdown.cancel();
        probes.abort_all();
        self.announce_stopping().await;
        cut.cancel();
        claims.stop().await;
        while probes.join_next().await.is_some() {}
        info!("delivery stopped");
    }
}

impl Delivery {
    /// Commits that this node is stopping (bounded by [`ANNOUNCE_BOUND`]; without it the
    /// leader may grant the claims about to be released straight back to this node).
    async fn announce_stopping(&self) {
        let cmd = self.stopping_command(true);
        if let Err(e) = tokio::time::timeout(ANNOUNCE_BOUND, self.node.propose(cmd)).await {
            warn!(error = %e, "the stop was not announced; claims are released anyway");
        }
    }

    fn stopping_command(&self, stopping: bool) -> QueueCommand {
        QueueCommand::NodeStopping {
            node: self.node.id(),
            stopping,
            at_ms: self.node.clock().now_ms(),
        }
    }

    /// While this node runs, withdraws an announcement that it is stopping (left from its last
    /// stop, or committed late), at most once per [`ANNOUNCE_BOUND`].
    async fn withdraw_stopping(&self, last: &mut Option<Instant>) {
        let id = self.node.id();
        let stopping = {
            let sm = self.node.state_machine();
            let live = sm.read();
            live.queue().stopping_since(id).is_some()
        };
        if !stopping || last.is_some_and(|t| t.elapsed() < ANNOUNCE_BOUND) {
            return;
        }
        *last = Some(Instant::now());
        let cmd = self.stopping_command(false);
        match tokio::time::timeout(ANNOUNCE_BOUND, self.node.propose(cmd)).await {
            Ok(Ok(_)) => info!("running again: claims may be granted to this node"),
            Ok(Err(e)) => debug!(error = %e, "not yet announced as running; retrying"),
            Err(_) => debug!("not yet announced as running; retrying"),
        }
    }
}

/// The delivery tasks of the claims granted to this node, one per claim.
#[derive(Default)]
struct ClaimTasks {
    set: JoinSet<u64>,
    /// Claims with a running task.
    active: BTreeSet<u64>,
    /// Claims whose task has ended. A finished claim is never run again, even while this node
    /// has not yet applied the Report or Release that ends it: running it again would deliver
    /// its messages twice. Messages it left undelivered get a new claim (a new token) from the
    /// leader once it expires.
    finished: BTreeSet<u64>,
}

impl ClaimTasks {
    fn ended(&mut self, token: u64) {
        self.active.remove(&token);
        self.finished.insert(token);
    }

    /// Starts a task for each claim granted to this node that is not being worked on yet.
    /// Whether a lease still runs is not judged here (this node's wall clock is not the
    /// leader's): the claim task renews first and learns it from the leader.
    fn start_new(&mut self, delivery: &Arc<Delivery>, shutdown: &CancellationToken) {
        let mine: Vec<_> = {
            let sm = delivery.node.state_machine();
            let live = sm.read();
            let all = live.queue().claims();
            self.finished.retain(|t| all.iter().any(|c| c.token == *t));
            all.into_iter()
                .filter(|c| {
                    c.node == delivery.node.id()
                        && !self.active.contains(&c.token)
                        && !self.finished.contains(&c.token)
                })
                .collect()
        };
        for claim in mine {
            self.active.insert(claim.token);
            let this = delivery.clone();
            let stop = shutdown.clone();
            let token = claim.token;
            self.set.spawn(async move {
                this.run_claim(claim, stop).await;
                token
            });
        }
    }

    /// Waits (at most [`SHUTDOWN_BOUND`]) for the tasks, cut short by the shutdown, to
    /// release their claims; aborts what is left.
    async fn stop(mut self) {
        if self.set.is_empty() {
            return;
        }
        info!(claims = self.set.len(), "stopping deliveries in progress");
        let drained = tokio::time::timeout(SHUTDOWN_BOUND, async {
            while self.set.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                claims = self.set.len(),
                "deliveries did not stop in time; aborting them"
            );
            self.set.shutdown().await;
        }
    }
}
