//! The server side of the transport: the `mxraft.cluster.v1.Cluster` gRPC service.
//!
//! Before a handler runs, the request is checked in this order:
//! 1. the caller: over TLS, the node id its certificate names (the TLS layer already refused
//!    anyone without a node certificate from the cluster CA); a node speaks only for that id —
//!    a vote or append must come from the candidate or leader it names, a join from the node
//!    it adds, and proposals, reads and membership changes only from members;
//! 2. the cluster id: a caller from another cluster is refused with an error that says so;
//! 3. the target node id, so a message for a replaced node never reaches its successor.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft::storage::Snapshot;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use mxraft_proto::cluster::cluster_server::{Cluster, ClusterServer};
use mxraft_proto::cluster::{
    IdentifyReply, IdentifyRequest, MembershipReply, MembershipRequest, ProposeReply,
    ProposeRequest, RaftPayload, ReadIndexReply, ReadIndexRequest, SnapshotChunk,
    membership_request, snapshot_chunk,
};
use mxraft_proto::identity::{CLUSTER_ID_HEADER, CertIdentity, LEADER_HEADER, TARGET_NODE_HEADER};
use mxraft_proto::tls::peer_of;
use mxraft_queue::QueueCommand;
use mxraft_store::{SnapshotMeta, TypeConfig, Vote};

use crate::MAX_GRPC_MESSAGE;
use crate::node::{RaftNode, WeakRaftNode};
use crate::snapshot::receive_snapshot;

/// The cluster service of one node.
pub struct ClusterService {
    node: WeakRaftNode,
}

/// Who sent a request: a node id proven by its certificate, or nobody proven (plain text,
/// allowed only with `cluster.insecure_plaintext` on loopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Node(u64),
    Unproven,
}

impl Caller {
    /// Refuses a caller that speaks for node `claimed` but is another node.
    fn speaks_for(self, claimed: u64, what: &str) -> Result<(), Status> {
        match self {
            Caller::Node(id) if id != claimed => Err(Status::permission_denied(format!(
                "{what} for node {claimed} refused: the caller's certificate names node {id}"
            ))),
            _ => Ok(()),
        }
    }
}

impl ClusterService {
    /// The tonic server for `node`, with message limits large enough for replication batches.
    pub fn server(node: RaftNode) -> ClusterServer<ClusterService> {
        ClusterServer::new(ClusterService {
            node: node.downgrade(),
        })
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE)
    }

    /// The node, or UNAVAILABLE once it is shutting down.
    fn node(&self) -> Result<RaftNode, Status> {
        self.node
            .upgrade()
            .ok_or_else(|| Status::unavailable(format!("node {} is shutting down", self.node.id())))
    }

    /// Checks who calls, from which cluster, and for which node; returns the caller and the
    /// node. `target_required` is false for the calls a joining node makes before it knows who
    /// it talks to.
    fn admit<T>(
        &self,
        req: &Request<T>,
        target_required: bool,
    ) -> Result<(Caller, RaftNode), Status> {
        let node = self.node()?;
        if node.core.peers.is_isolated() {
            return Err(Status::unavailable("this node is cut off from the cluster"));
        }
        let caller = match peer_of(req).and_then(|p| p.identity.clone()) {
            Some(CertIdentity::Node(id)) => Caller::Node(id),
            Some(other) => {
                return Err(Status::permission_denied(format!(
                    "{other} may not call the cluster service"
                )));
            }
            None if node.is_secure() => {
                return Err(Status::unauthenticated(
                    "the cluster service takes only nodes with a certificate from the cluster CA",
                ));
            }
            None => Caller::Unproven,
        };
        self.check_cluster(req, &node)?;
        self.check_target(req, target_required)?;
        Ok((caller, node))
    }

    /// [`admit`](Self::admit) for Raft traffic (votes, appends, snapshots): also refused while
    /// this node is not admitted, and the first one teaches a hand-added node its cluster id.
    fn admit_raft<T>(&self, req: &Request<T>) -> Result<(Caller, RaftNode), Status> {
        let (caller, node) = self.admit(req, true)?;
        Self::require_admitted(&node)?;
        self.learn_cluster(req, &node)?;
        Ok((caller, node))
    }

    /// Refuses a request from another cluster.
    fn check_cluster<T>(&self, req: &Request<T>, node: &RaftNode) -> Result<(), Status> {
        let theirs = req
            .metadata()
            .get(CLUSTER_ID_HEADER)
            .and_then(|v| v.to_str().ok());
        match (node.cluster_id(), theirs) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                warn!(ours, theirs, "request from another cluster refused");
                Err(Status::failed_precondition(format!(
                    "node {} belongs to cluster {ours}; the caller belongs to cluster {theirs}",
                    node.id()
                )))
            }
            _ => Ok(()),
        }
    }

    /// On a node that was added by hand and never learned its cluster id, the first leader to
    /// reach it tells it.
    fn learn_cluster<T>(&self, req: &Request<T>, node: &RaftNode) -> Result<(), Status> {
        if node.cluster_id().is_some() {
            return Ok(());
        }
        if let Some(theirs) = req
            .metadata()
            .get(CLUSTER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            node.adopt_cluster_id(theirs)
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
        }
        Ok(())
    }

    /// Refuses a request addressed to another node.
    fn check_target<T>(&self, req: &Request<T>, required: bool) -> Result<(), Status> {
        let me = self.node.id();
        match req.metadata().get(TARGET_NODE_HEADER) {
            None if required => Err(Status::failed_precondition(format!(
                "request without {TARGET_NODE_HEADER} refused by node {me}"
            ))),
            None => Ok(()),
            Some(v) => match v.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
                Some(target) if target == me => Ok(()),
                Some(target) => Err(Status::failed_precondition(format!(
                    "request for node {target} reached node {me}"
                ))),
                None => Err(Status::invalid_argument(format!(
                    "malformed {TARGET_NODE_HEADER}"
                ))),
            },
        }
    }

    /// Refuses Raft traffic while this node is not admitted (a pristine node that may be a
    /// wiped member).
    fn require_admitted(node: &RaftNode) -> Result<(), Status> {
        if node.is_admitted() {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "node {} holds no Raft state and is not admitted to the cluster: a node that lost its \
             data takes no part under its old id",
            node.id()
        )))
    }

    /// Refuses a caller that is not in this node's membership.
    fn require_member(caller: Caller, node: &RaftNode, what: &str) -> Result<(), Status> {
        let Caller::Node(id) = caller else {
            return Ok(());
        };
        let m = node.metrics();
        if m.membership_config.membership().get_node(&id).is_none() {
            return Err(Status::permission_denied(format!(
                "{what} refused: node {id} is not a member of this cluster"
            )));
        }
        Ok(())
    }

    /// A "not leader" error naming the leader this node knows of.
    fn not_leader(&self, node: &RaftNode) -> Status {
        let mut status = Status::unavailable(format!("node {} is not the leader", node.id()));
        if let Some(leader) = node.metrics().current_leader
            && let Ok(v) = leader.to_string().parse()
        {
            status.metadata_mut().insert(LEADER_HEADER, v);
        }
        status
    }

    fn is_leader(node: &RaftNode) -> bool {
        node.metrics().current_leader == Some(node.id())
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    mxraft_queue::decode(bytes).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn payload<T: serde::Serialize>(value: &T) -> Response<RaftPayload> {
    Response::new(RaftPayload {
        payload: mxraft_queue::encode(value).into(),
    })
}

/// The node a vote names as candidate or leader.
fn voter_of(vote: &Vote) -> u64 {
    vote.leader_id().node_id
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let (caller, node) = self.admit_raft(&request)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&request.into_inner().payload)?;
        caller.speaks_for(voter_of(&rpc.vote), "append")?;
        let result = node.raft().append_entries(rpc).await;
        if matches!(&result, Ok(resp) if resp.is_success()) {
            node.note_leader_contact();
        }
        Ok(payload(&result))
    }

    type StreamAppendStream = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send>>;

    async fn stream_append(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let (caller, node) = self.admit_raft(&request)?;
        // Requests are decoded as they arrive. A malformed one, or one from another leader
        // than the caller, ends the input; the leader then sees the stream end early.
        let peers = node.core.peers.clone();
        let requests = futures::stream::unfold(request.into_inner(), move |mut incoming| {
            let peers = peers.clone();
            async move {
                let payload = incoming.message().await.ok()??;
                if peers.is_isolated() {
                    return None;
                }
                match mxraft_queue::decode::<AppendEntriesRequest<TypeConfig>>(&payload.payload) {
                    Ok(req) => match caller.speaks_for(voter_of(&req.vote), "append") {
                        Ok(()) => Some((req, incoming)),
                        Err(e) => {
                            warn!(error = %e.message(), "append refused; closing the stream");
                            None
                        }
                    },
                    Err(e) => {
                        warn!(error = %e, "malformed append request; closing the stream");
                        None
                    }
                }
            }
        });
        // A weak handle: an open stream must not keep a stopped node's stores open.
        let contact = node.downgrade();
        let results = node.raft().stream_append(requests).map(move |result| {
            if result.is_ok()
                && let Some(node) = contact.upgrade()
            {
                node.note_leader_contact();
            }
            Ok(RaftPayload {
                payload: mxraft_queue::encode(&result).into(),
            })
        });
        Ok(Response::new(Box::pin(results)))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let (caller, node) = self.admit_raft(&request)?;
        let rpc: VoteRequest<TypeConfig> = decode(&request.into_inner().payload)?;
        caller.speaks_for(voter_of(&rpc.vote), "vote request")?;
        Ok(payload(&node.raft().vote(rpc).await))
    }

    async fn pre_vote(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let (caller, node) = self.admit_raft(&request)?;
        let rpc: VoteRequest<TypeConfig> = decode(&request.into_inner().payload)?;
        caller.speaks_for(voter_of(&rpc.vote), "pre-vote request")?;
        Ok(payload(&node.raft().pre_vote(rpc).await))
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let (caller, node) = self.admit_raft(&request)?;
        let rpc: TransferLeaderRequest<TypeConfig> = decode(&request.into_inner().payload)?;
        caller.speaks_for(voter_of(rpc.from_leader()), "leadership transfer")?;
        let reply: Result<_, RaftError<TypeConfig>> = node
            .raft()
            .handle_transfer_leader(rpc)
            .await
            .map_err(RaftError::Fatal);
        Ok(payload(&reply))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        let (caller, node) = self.admit_raft(&request)?;
        let mut stream = request.into_inner();
        let Some(SnapshotChunk {
            item: Some(snapshot_chunk::Item::Header(header)),
        }) = stream.message().await?
        else {
            return Err(Status::invalid_argument(
                "a snapshot stream starts with its header",
            ));
        };
        let vote: Vote = decode(&header.vote)?;
        caller.speaks_for(voter_of(&vote), "snapshot")?;
        let meta: SnapshotMeta = decode(&header.meta)?;
        let (data, bytes) = receive_snapshot(&node, &header.files, &meta, &mut stream).await?;
        info!(index = ?meta.last_log_id, bytes, files = header.files.len(), "snapshot received");
        let result = node
            .raft()
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: data,
                },
            )
            .await
            .map_err(RaftError::<TypeConfig>::Fatal);
        match &result {
            Ok(_) => node.note_leader_contact(),
            Err(e) => warn!(error = %e, "snapshot install failed"),
        }
        Ok(payload(&result))
    }

    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        let (caller, node) = self.admit(&request, false)?;
        Self::require_member(caller, &node, "proposal")?;
        if !Self::is_leader(&node) {
            return Err(self.not_leader(&node));
        }
        let req = request.into_inner();
        let mut cmd: QueueCommand = decode(&req.command)?;
        if req.sent_at_ms != 0 {
            let from = match caller {
                Caller::Node(id) => id,
                Caller::Unproven => req.from_node,
            };
            if let Err(e) = node.observe_clock(from, req.sent_at_ms) {
                // Which clock is wrong, the proposer's or this leader's, is not known here.
                // What a claim did is taken all the same, on this clock: refusing it would
                // only get the same mail delivered again once the lease ran out.
                if !cmd.settles_a_claim() {
                    return Err(Status::out_of_range(e.to_string()));
                }
                cmd.stamp_report_by_leader(node.clock().now_ms());
            }
        }
        if let Err(why) = (node.core.check_proposal)(&cmd) {
            warn!(?caller, command = %cmd, reason = %why, "proposal refused");
            return Err(Status::invalid_argument(format!("proposal refused: {why}")));
        }
        let result = node.propose(cmd).await?;
        Ok(Response::new(ProposeReply {
            result: mxraft_queue::encode(&result).into(),
        }))
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        let (caller, node) = self.admit(&request, false)?;
        Self::require_member(caller, &node, "read")?;
        if !Self::is_leader(&node) {
            return Err(self.not_leader(&node));
        }
        let index = node.read_index().await.map_err(Status::from)?;
        Ok(Response::new(ReadIndexReply { index }))
    }

    async fn change_membership(
        &self,
        request: Request<MembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let (caller, node) = self.admit(&request, false)?;
        let change = request
            .into_inner()
            .change
            .ok_or_else(|| Status::invalid_argument("membership request without a change"))?;
        // A member may forward any change; a node that is not one may only ask to be added
        // under the id its certificate names.
        if Self::require_member(caller, &node, "membership change").is_err() {
            match &change {
                membership_request::Change::Join(join) => {
                    caller.speaks_for(join.node_id, "join")?;
                }
                membership_request::Change::Remove(_) => {
                    Self::require_member(caller, &node, "membership change")?;
                }
            }
        }
        node.membership_change(change).await?;
        Ok(Response::new(MembershipReply {}))
    }

    async fn identify(
        &self,
        request: Request<IdentifyRequest>,
    ) -> Result<Response<IdentifyReply>, Status> {
        let (_, node) = self.admit(&request, false)?;
        Ok(Response::new(node.identity_reply().await))
    }
}
