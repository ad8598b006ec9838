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
//! [`not_found`]/[`bad_id`] here).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use mxraft_cluster::{RaftNode, WeakRaftNode};
use mxraft_proto::admin::admin_server::{Admin, AdminServer};
use mxraft_proto::admin::{
    ClusterJoinReply, ClusterJoinRequest, ClusterRemoveReply, ClusterRemoveRequest,
    ClusterStatusReply, ClusterStatusRequest, Destination, DestinationsListReply,
    DestinationsListRequest, Member, NodeInfoReply, NodeInfoRequest, QueueActionReply,
    QueueFlushRequest, QueueIdRequest, QueueListRequest, QueueShowReply, QueueShowRequest,
    QueueStatsReply, QueueStatsRequest, QueuedMessage, ReadConsistency, Recipient, RecipientEntry,
    RecipientsChangeRequest, RecipientsListRequest, queue_flush_request,
};
use mxraft_proto::identity::Role;
use mxraft_queue::{
    BodyType, CommandResult, FlushTarget, Message, MessageId, QueueCommand, RecipientState,
};
use mxraft_store::NodeInfo;

pub mod auth;

pub use auth::{Authenticator, TokenError, TokenFile};

/// Messages sent per page of a queue listing; the state lock is released between pages.
const LIST_PAGE: usize = 256;

/// Describes a destination's route for the admin API (e.g. `127.0.0.1:2500` or `MX`).
pub type RouteDescriber = Arc<dyn Fn(&str) -> String + Send + Sync>;

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
    async fn act(
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

/// Most entries in one recipient-table change.
const MAX_ENTRIES: usize = 10_000;

fn normalize_entries(entries: Vec<String>) -> Result<Vec<String>, Status> {
    if entries.len() > MAX_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "{} entries in one request; send at most {MAX_ENTRIES}",
            entries.len()
        )));
    }
    entries
        .iter()
        .map(|e| {
            mxraft_queue::recipients::normalize_entry(e).ok_or_else(|| {
                Status::invalid_argument(format!("{e:?} is neither user@domain nor @domain"))
            })
        })
        .collect()
}

fn bad_id(text: &str) -> Status {
    Status::invalid_argument(format!("{text:?} is not a queue id"))
}

fn not_found(id: MessageId) -> Status {
    Status::not_found(format!("message {id} is not in the queue"))
}

use mxraft_queue::now_ms;

fn changed_of(result: &CommandResult) -> u32 {
    match result {
        CommandResult::Applied { changed } => *changed,
        CommandResult::Deleted { existed, .. } => u32::from(*existed),
        _ => 0,
    }
}

fn to_proto(m: &Message, now: u64) -> QueuedMessage {
    QueuedMessage {
        id: m.id.to_string(),
        sender: m.sender.clone(),
        recipients: m
            .recipients
            .iter()
            .map(|r| Recipient {
                address: r.address.clone(),
                state: r.state.name().to_owned(),
                reply: match &r.state {
                    RecipientState::Pending => r.last_error.clone(),
                    RecipientState::Delivered { reply, .. }
                    | RecipientState::Failed { reply, .. } => Some(reply.clone()),
                },
                attempts: r.attempts,
                next_attempt_ms: r.is_pending().then_some(r.next_attempt_ms),
            })
            .collect(),
        size: m.size(),
        received_at_ms: m.received_at_ms,
        received_by: m.received_by,
        claim_node: m.live_claim(now).map(|c| c.node),
        held: m.held,
    }
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<QueuedMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        self.auth
            .authorize(&request, Role::Read, "cluster status")?;
        let s = self.node()?.status();
        Ok(Response::new(ClusterStatusReply {
            node_id: s.node_id,
            leader_id: s.leader_id,
            term: s.term,
            members: s
                .members
                .into_iter()
                .map(|m| Member {
                    id: m.id,
                    role: m.role.name().to_owned(),
                    smtp_addr: m.info.smtp_addr,
                    admin_addr: m.info.admin_addr,
                    cluster_addr: m.info.cluster_addr,
                    matched_index: m.matched_index,
                })
                .collect(),
            last_log_index: s.last_log_index,
            committed_index: s.committed_index,
            applied_index: s.applied_index,
            state: s.state.to_owned(),
        }))
    }

    async fn cluster_join(
        &self,
        request: Request<ClusterJoinRequest>,
    ) -> Result<Response<ClusterJoinReply>, Status> {
        self.auth.authorize(&request, Role::Admin, "cluster join")?;
        let r = request.into_inner();
        if r.node_id == 0 {
            return Err(Status::invalid_argument(
                "node_id must be greater than zero",
            ));
        }
        if r.cluster_addr.is_empty() {
            return Err(Status::invalid_argument("cluster_addr is required"));
        }
        let info = NodeInfo {
            cluster_addr: r.cluster_addr,
            smtp_addr: r.smtp_addr,
            admin_addr: r.admin_addr,
        };
        self.node()?.join(r.node_id, info, r.pristine).await?;
        Ok(Response::new(ClusterJoinReply {}))
    }

    async fn cluster_remove(
        &self,
        request: Request<ClusterRemoveRequest>,
    ) -> Result<Response<ClusterRemoveReply>, Status> {
        self.auth
            .authorize(&request, Role::Admin, "cluster remove")?;
        self.node()?.remove(request.into_inner().node_id).await?;
        Ok(Response::new(ClusterRemoveReply {}))
    }

    async fn node_info(
        &self,
        request: Request<NodeInfoRequest>,
    ) -> Result<Response<NodeInfoReply>, Status> {
        self.auth.authorize(&request, Role::Read, "node info")?;
        let node = self.node()?;
        let info = node.info();
        Ok(Response::new(NodeInfoReply {
            node_id: node.id(),
            cluster_addr: info.cluster_addr.clone(),
            smtp_addr: info.smtp_addr.clone(),
            admin_addr: info.admin_addr.clone(),
            initialized: node.is_initialized().await,
        }))
    }

    type QueueListStream = MessageStream;

    async fn queue_list(
        &self,
        request: Request<QueueListRequest>,
    ) -> Result<Response<Self::QueueListStream>, Status> {
        self.auth.authorize(&request, Role::Read, "queue list")?;
        let r = request.into_inner();
        self.barrier(r.consistency).await?;
        let limit = if r.limit == 0 {
            usize::MAX
        } else {
            r.limit as usize
        };
        let sm = self.node()?.state_machine().clone();
        let (tx, rx) = mpsc::channel(LIST_PAGE);
        tokio::spawn(async move {
            let mut after = None;
            let mut sent = 0usize;
            while sent < limit {
                let page: Vec<QueuedMessage> = {
                    let live = sm.read();
                    live.queue()
                        .iter_from(after)
                        .take(LIST_PAGE.min(limit - sent))
                        .map(|m| to_proto(m, now_ms()))
                        .collect()
                };
                let Some(last) = page.last() else { break };
                after = last.id.parse().ok();
                sent += page.len();
                let full = page.len() == LIST_PAGE;
                for m in page {
                    if tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
                if !full || after.is_none() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn queue_show(
        &self,
        request: Request<QueueShowRequest>,
    ) -> Result<Response<QueueShowReply>, Status> {
        self.auth.authorize(&request, Role::Read, "queue show")?;
        let r = request.into_inner();
        let id: MessageId = r.id.trim().parse().map_err(|_| bad_id(&r.id))?;
        self.barrier(r.consistency).await?;
        let sm = self.node()?.state_machine().clone();
        let (message, body_type, trace) = {
            let live = sm.read();
            let m = live.queue().get(id).ok_or_else(|| not_found(id))?;
            let body_type = match m.params.body {
                BodyType::SevenBit => "7BIT",
                BodyType::EightBitMime => "8BITMIME",
            };
            (to_proto(m, now_ms()), body_type, m.trace_header.clone())
        };
        let body = if r.include_body {
            let body = sm
                .body_async(id)
                .await
                .map_err(|e| Status::internal(format!("cannot read the body of {id}: {e}")))?
                .ok_or_else(|| not_found(id))?;
            let mut full = trace.into_bytes();
            full.extend_from_slice(&body);
            Some(full.into())
        } else {
            None
        };
        Ok(Response::new(QueueShowReply {
            message: Some(message),
            body,
            body_type: body_type.to_owned(),
        }))
    }

    async fn queue_stats(
        &self,
        request: Request<QueueStatsRequest>,
    ) -> Result<Response<QueueStatsReply>, Status> {
        self.auth.authorize(&request, Role::Read, "queue stats")?;
        self.barrier(request.into_inner().consistency).await?;
        let stats = self.node()?.state_machine().read().queue().stats();
        Ok(Response::new(QueueStatsReply {
            messages: stats.messages,
            bytes: stats.bytes,
            oldest_received_at_ms: stats.oldest_received_at_ms,
        }))
    }

    async fn queue_flush(
        &self,
        request: Request<QueueFlushRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        self.auth.authorize(&request, Role::Admin, "queue flush")?;
        let target = match request.into_inner().target {
            None | Some(queue_flush_request::Target::All(_)) => FlushTarget::All,
            Some(queue_flush_request::Target::Domain(d)) => {
                let d = d.trim().trim_end_matches('.').to_lowercase();
                if d.is_empty() {
                    return Err(Status::invalid_argument("empty domain"));
                }
                FlushTarget::Destination(d)
            }
            Some(queue_flush_request::Target::Id(text)) => {
                let id: MessageId = text.trim().parse().map_err(|_| bad_id(&text))?;
                if self
                    .node()?
                    .state_machine()
                    .read()
                    .queue()
                    .get(id)
                    .is_none()
                {
                    return Err(not_found(id));
                }
                FlushTarget::Message(id)
            }
        };
        let result = self
            .node()?
            .propose(QueueCommand::Reschedule {
                target,
                at_ms: now_ms(),
            })
            .await?;
        Ok(Response::new(QueueActionReply {
            changed: changed_of(&result),
        }))
    }

    async fn queue_hold(
        &self,
        request: Request<QueueIdRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        self.auth.authorize(&request, Role::Admin, "queue hold")?;
        self.act(&request.into_inner().id, |id, _| QueueCommand::Hold { id })
            .await
    }

    async fn queue_release(
        &self,
        request: Request<QueueIdRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        self.auth
            .authorize(&request, Role::Admin, "queue release")?;
        self.act(&request.into_inner().id, |id, at_ms| QueueCommand::Resume {
            id,
            at_ms,
        })
        .await
    }

    async fn queue_delete(
        &self,
        request: Request<QueueIdRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        self.auth.authorize(&request, Role::Admin, "queue delete")?;
        self.act(&request.into_inner().id, |id, at_ms| QueueCommand::Delete {
            id,
            at_ms,
        })
        .await
    }

    async fn queue_bounce(
        &self,
        request: Request<QueueIdRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        self.auth.authorize(&request, Role::Admin, "queue bounce")?;
        let reporting_mta = self.options.hostname.clone();
        self.act(&request.into_inner().id, move |id, at_ms| {
            QueueCommand::Bounce {
                id,
                at_ms,
                reporting_mta,
            }
        })
        .await
    }

    async fn destinations_list(
        &self,
        request: Request<DestinationsListRequest>,
    ) -> Result<Response<DestinationsListReply>, Status> {
        self.auth
            .authorize(&request, Role::Read, "destinations list")?;
        self.barrier(request.into_inner().consistency).await?;
        let node = self.node()?;
        let live = node.state_machine().read();
        let q = live.queue();
        let queued = q.queued_destinations();
        let mut names: std::collections::BTreeSet<String> = queued.keys().cloned().collect();
        names.extend(q.destinations().keys().cloned());
        names.extend(self.options.configured.iter().cloned());
        let destinations = names
            .into_iter()
            .map(|name| {
                let known = q.destination(&name);
                let (count, oldest) = queued
                    .get(&name)
                    .copied()
                    .map(|(c, o)| (c, Some(o)))
                    .unwrap_or((0, None));
                Destination {
                    route: (self.options.describe_route)(&name),
                    state: match known {
                        Some(d) if d.up => "up",
                        Some(_) => "down",
                        None => "unknown",
                    }
                    .to_owned(),
                    since_ms: known.map(|d| d.since_ms),
                    last_probe_ms: known.and_then(|d| d.last_probe_ms),
                    last_error: known.and_then(|d| d.last_error.clone()),
                    queued: count,
                    oldest_received_at_ms: oldest,
                    name,
                }
            })
            .collect();
        Ok(Response::new(DestinationsListReply { destinations }))
    }

    async fn recipients_add(
        &self,
        request: Request<RecipientsChangeRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        self.auth
            .authorize(&request, Role::Admin, "recipients add")?;
        let entries = normalize_entries(request.into_inner().entries)?;
        let result = self
            .node()?
            .propose(QueueCommand::RecipientsAdd { entries })
            .await?;
        Ok(Response::new(QueueActionReply {
            changed: changed_of(&result),
        }))
    }

    async fn recipients_remove(
        &self,
        request: Request<RecipientsChangeRequest>,
    ) -> Result<Response<QueueActionReply>, Status> {
        self.auth
            .authorize(&request, Role::Admin, "recipients remove")?;
        let entries = normalize_entries(request.into_inner().entries)?;
        let result = self
            .node()?
            .propose(QueueCommand::RecipientsRemove { entries })
            .await?;
        Ok(Response::new(QueueActionReply {
            changed: changed_of(&result),
        }))
    }

    type RecipientsListStream = Pin<Box<dyn Stream<Item = Result<RecipientEntry, Status>> + Send>>;

    async fn recipients_list(
        &self,
        request: Request<RecipientsListRequest>,
    ) -> Result<Response<Self::RecipientsListStream>, Status> {
        self.auth
            .authorize(&request, Role::Read, "recipients list")?;
        let r = request.into_inner();
        self.barrier(r.consistency).await?;
        let domain = r.domain.trim().trim_end_matches('.').to_lowercase();
        let sm = self.node()?.state_machine().clone();
        let (tx, rx) = mpsc::channel(LIST_PAGE);
        tokio::spawn(async move {
            let mut after: Option<String> = None;
            loop {
                let page: Vec<String> = {
                    let live = sm.read();
                    live.queue()
                        .recipient_entries(after.as_deref())
                        .take(LIST_PAGE)
                        .cloned()
                        .collect()
                };
                let Some(last) = page.last().cloned() else {
                    break;
                };
                let full = page.len() == LIST_PAGE;
                for entry in page {
                    let in_domain =
                        domain.is_empty() || mxraft_queue::destination_of(&entry) == domain;
                    if in_domain && tx.send(Ok(RecipientEntry { entry })).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break;
                }
                after = Some(last);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
