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
mod front_door;
mod http;
mod proposals;
mod start;
mod tasks;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use mxraft_cluster::RaftNode;
use mxraft_store::CloseWatch;

pub use config::Config;
pub use start::{Server, StartOptions};
pub use tasks::describe_metrics;

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
    pub(crate) node: RaftNode,
    pub(crate) addrs: BoundAddrs,
    pub(crate) smtp_stop: CancellationToken,
    pub(crate) grpc_stop: CancellationToken,
    pub(crate) smtp_task: JoinHandle<()>,
    pub(crate) delivery_stop: CancellationToken,
    pub(crate) background_stop: CancellationToken,
    pub(crate) delivery_task: JoinHandle<()>,
    pub(crate) grpc_tasks: Vec<JoinHandle<()>>,
    pub(crate) background: Vec<JoinHandle<()>>,
    pub(crate) failed: tokio::sync::watch::Receiver<Option<String>>,
    pub(crate) closed: Vec<CloseWatch>,
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
        if !grace.is_zero() {
            // Sessions and deliveries are done with their commits (claims released): a leader
            // hands over now, so the others do not wait out an election timeout.
            self.node.hand_over_leadership(Duration::from_secs(3)).await;
        }
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
