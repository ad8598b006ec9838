//! The admin API of an mxraft node: the gRPC service `mxraft.v1.Admin`.
//!
//! Reads of the queue are linearizable by default: the node asks the leader for the commit
//! index a read must observe and waits until it has applied it, so `mxraftctl` shows the same
//! queue whichever node it talks to. A read with `READ_CONSISTENCY_LOCAL` skips that step and
//! answers from this node's state, which works without a quorum.
//!
//! Every call needs a role ([`auth`]): `read` for status, listings, message details, statistics
//! and destinations, `admin` for everything that changes something. gRPC health is a separate
//! service and stays open for probes.
//!
//! Cluster changes (join, remove) go to the leader through `mxraft-cluster`. Errors become
//! gRPC status codes in one place per error type (the `From` impls in `mxraft-cluster`, and
//! `queue::not_found`/`queue::bad_id` here). One file per service area: `cluster`, `queue`,
//! `destinations`, `recipients`.
//!
//! `EventsWatch` streams what happens: the queue's events as this node applies them, its view
//! of leadership and membership, and its own SMTP refusals (`events`).
//!
//! Actions on many messages (`QueueBulk`) choose their messages once, after a linearizable
//! read, and commit them in batches; a dry run only counts them and needs the `read` role.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use tonic::{Request, Response, Status};

use mxraft_cluster::{RaftNode, WeakRaftNode};
use mxraft_proto::admin::admin_server::{Admin, AdminServer};
use mxraft_proto::admin::{
    BodyChunk, ClusterJoinReply, ClusterJoinRequest, ClusterRemoveReply, ClusterRemoveRequest,
    ClusterStatusReply, ClusterStatusRequest, DestinationProbeReply, DestinationRequest,
    DestinationsListReply, DestinationsListRequest, Event, EventsWatchRequest, NodeInfoReply,
    NodeInfoRequest, QueueActionReply, QueueBodyRequest, QueueBulkReply, QueueBulkRequest,
    QueueFlushRequest, QueueIdRequest, QueueListRequest, QueueShapeReply, QueueShapeRequest,
    QueueShowReply, QueueShowRequest, QueueStatsReply, QueueStatsRequest, QueuedMessage,
    ReadConsistency, RecipientEntry, RecipientsChangeRequest, RecipientsListRequest,
    StateDigestReply, StateDigestRequest, TransferLeaderReply, TransferLeaderRequest,
};
use mxraft_queue::{CommandResult, MessageId, QueueCommand};

pub mod auth;
mod cluster;
mod destinations;
mod events;
mod queue;
mod recipients;

pub use auth::{Authenticator, TokenError, TokenFile};

use queue::{bad_id, changed_of, not_found};

/// Messages sent per page of a queue listing; the state lock is released between pages.
const LIST_PAGE: usize = 256;

/// Describes a destination's route for the admin API (e.g. `127.0.0.1:2500` or `MX`).
pub type RouteDescriber = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// What a probe of a destination's primary found, once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// Whether the primary answered.
    pub up: bool,
    /// Why not.
    pub error: Option<String>,
}

/// Probes a destination's primary now and commits the result (`destinations probe`); the
/// error is why the result could not be committed.
pub type Prober =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<ProbeOutcome, Status>> + Send + Sync>;

/// Settings of the admin service.
#[derive(Clone)]
pub struct AdminOptions {
    /// How long a linearizable read waits at most.
    pub read_timeout: Duration,
    /// The host name DSNs from `queue bounce` are signed with.
    pub hostname: String,
    /// Route descriptions for `destinations list`.
    pub describe_route: RouteDescriber,
    /// Destinations listed even when nothing is queued for them (the protected domains and
    /// the configured routes).
    pub configured: Vec<String>,
    /// Probes destinations on request; `None` where the node does not deliver.
    pub prober: Option<Prober>,
    /// The data directory, whose file system's free space `NodeInfo` reports.
    pub data_dir: PathBuf,
    /// How long `cluster transfer-leader` waits for the new leader.
    pub transfer_timeout: Duration,
    /// This node's SMTP refusals, for `events watch`; `None` where it serves no SMTP.
    pub refusals: Option<tokio::sync::broadcast::Sender<mxraft_queue::Refusal>>,
    /// What `NodeInfo` tells `mxraftctl dns` about this node and its domains.
    pub dns: DnsSetup,
}

/// This node's part of the DNS setup: its MX host name and public addresses, and the MX
/// preferences of its protected domains.
#[derive(Debug, Clone, Default)]
pub struct DnsSetup {
    /// The name this node is published under (its SMTP host name).
    pub mx_host: String,
    /// The addresses the world reaches this node's SMTP at; empty when unknown.
    pub public_addresses: Vec<std::net::IpAddr>,
    /// The protected domains.
    pub domains: Vec<mxraft_proto::admin::DnsDomain>,
}

/// The admin service of one node.
pub struct AdminService {
    node: WeakRaftNode,
    options: AdminOptions,
    auth: Arc<Authenticator>,
}

impl AdminService {
    /// The tonic server for `node`; every call is checked by `auth`.
    pub fn server(
        node: RaftNode,
        options: AdminOptions,
        auth: Arc<Authenticator>,
    ) -> AdminServer<AdminService> {
        AdminServer::new(AdminService {
            node: node.downgrade(),
            options,
            auth,
        })
    }

    /// Commits an admin command on message `id` and returns how many messages it changed. A
    /// message not in the queue is `NOT_FOUND`, as the committed command found it: no check
    /// before the proposal that another node's command could make wrong meanwhile.
    async fn commit_on_message(
        &self,
        id_text: &str,
        make: impl FnOnce(MessageId, u64) -> QueueCommand,
    ) -> Result<Response<QueueActionReply>, Status> {
        let id: MessageId = id_text.trim().parse().map_err(|_| bad_id(id_text))?;
        let node = self.node()?;
        let at_ms = node.clock().now_ms();
        match node.propose(make(id, at_ms)).await? {
            CommandResult::NotQueued { id } | CommandResult::Deleted { id, existed: false } => {
                Err(not_found(id))
            }
            result => Ok(Response::new(QueueActionReply {
                changed: changed_of(&result),
            })),
        }
    }

    /// The node, or UNAVAILABLE once it is shutting down.
    fn node(&self) -> Result<RaftNode, Status> {
        self.node
            .upgrade()
            .ok_or_else(|| Status::unavailable(format!("node {} is shutting down", self.node.id())))
    }

    async fn barrier(&self, consistency: i32) -> Result<(), Status> {
        match ReadConsistency::try_from(consistency) {
            Ok(ReadConsistency::Local) => Ok(()),
            Ok(ReadConsistency::Linearizable) => {
                Ok(self.node()?.read_barrier(self.options.read_timeout).await?)
            }
            Err(_) => Err(Status::invalid_argument(format!(
                "unknown read consistency {consistency}"
            ))),
        }
    }
}

/// A stream of recipient-table entries (`recipients list`).
type EntryStream = Pin<Box<dyn Stream<Item = Result<RecipientEntry, Status>> + Send>>;

/// A stream of body chunks (`queue body`).
type BodyStream = Pin<Box<dyn Stream<Item = Result<BodyChunk, Status>> + Send>>;

/// A stream of events (`events watch`).
type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

/// A stream of queued messages (`queue list`).
type MessageStream = Pin<Box<dyn Stream<Item = Result<QueuedMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        cluster::status(self, request).await
    }

    async fn cluster_join(
        &self,
        request: Request<ClusterJoinRequest>,
    ) -> Result<Response<ClusterJoinReply>, Status> {
        cluster::join(self, request).await
    }

    async fn cluster_remove(
        &self,
        request: Request<ClusterRemoveRequest>,
    ) -> Result<Response<ClusterRemoveReply>, Status> {
        cluster::remove(self, request).await
    }

    async fn node_info(
        &self,
        request: Request<NodeInfoRequest>,
    ) -> Result<Response<NodeInfoReply>, Status> {
        cluster::node_info(self, request).await
    }

    async fn state_digest(
        &self,
        request: Request<StateDigestRequest>,
    ) -> Result<Response<StateDigestReply>, Status> {
        cluster::state_digest(self, request).await
    }

    type QueueListStream = MessageStream;

    async fn queue_list(
        &self,
        request: Request<QueueListRequest>,
    ) -> Result<Response<Self::QueueListStream>, Status> {
        queue::list(self, request).await
    }

    async fn queue_show(
        &self,
        request: Request<QueueShowRequest>,
    ) -> Result<Response<QueueShowReply>, Status> {
        queue::show(self, request).await
    }

    async fn queue_stats(
        &self,
        request: Request<QueueStatsRequest>,
    ) -> Result<Response<QueueStatsReply>, Status> {
        queue::stats(self, request).await
    }

    async fn queue_flush(
        &self,
        request: Request<QueueFlushRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        queue::flush(self, request).await
    }

    async fn queue_hold(
        &self,
        request: Request<QueueIdRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        queue::hold(self, request).await
    }

    async fn queue_release(
        &self,
        request: Request<QueueIdRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        queue::release(self, request).await
    }

    async fn queue_delete(
        &self,
        request: Request<QueueIdRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        queue::delete(self, request).await
    }

    async fn queue_bounce(
        &self,
        request: Request<QueueIdRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        queue::bounce(self, request).await
    }

    async fn destinations_list(
        &self,
        request: Request<DestinationsListRequest>,
    ) -> Result<Response<DestinationsListReply>, Status> {
        destinations::list(self, request).await
    }

    async fn recipients_add(
        &self,
        request: Request<RecipientsChangeRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        recipients::add(self, request).await
    }

    async fn recipients_remove(
        &self,
        request: Request<RecipientsChangeRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        recipients::remove(self, request).await
    }

    type RecipientsListStream = EntryStream;

    async fn recipients_list(
        &self,
        request: Request<RecipientsListRequest>,
    ) -> Result<Response<Self::RecipientsListStream>, Status> {
        recipients::list(self, request).await
    }

    async fn queue_bulk(
        &self,
        request: Request<QueueBulkRequest>,
    ) -> Result<Response<QueueBulkReply>, Status> {
        queue::bulk(self, request).await
    }

    async fn queue_shape(
        &self,
        request: Request<QueueShapeRequest>,
    ) -> Result<Response<QueueShapeReply>, Status> {
        queue::shape(self, request).await
    }

    type QueueBodyStream = BodyStream;

    async fn queue_body(
        &self,
        request: Request<QueueBodyRequest>,
    ) -> Result<Response<Self::QueueBodyStream>, Status> {
        queue::body(self, request).await
    }

    async fn destinations_suspend(
        &self,
        request: Request<DestinationRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        destinations::suspend(self, request, true).await
    }

    async fn destinations_resume(
        &self,
        request: Request<DestinationRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        destinations::suspend(self, request, false).await
    }

    async fn destinations_probe(
        &self,
        request: Request<DestinationRequest>,
    ) -> Result<Response<DestinationProbeReply>, Status> {
        destinations::probe(self, request).await
    }

    async fn cluster_transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderReply>, Status> {
        cluster::transfer_leader(self, request).await
    }

    type EventsWatchStream = EventStream;

    async fn events_watch(
        &self,
        request: Request<EventsWatchRequest>,
    ) -> Result<Response<Self::EventsWatchStream>, Status> {
        events::watch(self, request).await
    }
}
