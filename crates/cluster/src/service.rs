//! The server side of the transport: the `mxraft.cluster.v1.Cluster` gRPC service.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::storage::Snapshot;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use mxraft_proto::cluster::cluster_server::{Cluster, ClusterServer};
use mxraft_proto::cluster::{
    MembershipReply, MembershipRequest, ProposeReply, ProposeRequest, RaftPayload, ReadIndexReply,
    ReadIndexRequest, SnapshotChunk, snapshot_chunk,
};
use mxraft_queue::QueueCommand;
use mxraft_store::{SnapshotMeta, TypeConfig, Vote};

use crate::node::{RaftNode, WeakRaftNode};
use crate::{LEADER_HEADER, MAX_GRPC_MESSAGE, TARGET_NODE_HEADER};

/// The cluster service of one node.
pub struct ClusterService {
    node: WeakRaftNode,
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

    /// Refuses a request addressed to another node. `required` is false for the calls a joining
    /// node makes before it knows who it talks to.
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

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request, true)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&request.into_inner().payload)?;
        Ok(payload(&self.node()?.raft().append_entries(rpc).await))
    }

    type StreamAppendStream = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send>>;

    async fn stream_append(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        self.check_target(&request, true)?;
        // Requests are decoded as they arrive. A malformed one ends the input; the leader then
        // sees the stream end early and starts a new one.
        let requests = futures::stream::unfold(request.into_inner(), |mut incoming| async move {
            let payload = incoming.message().await.ok()??;
            match mxraft_queue::decode::<AppendEntriesRequest<TypeConfig>>(&payload.payload) {
                Ok(req) => Some((req, incoming)),
                Err(e) => {
                    warn!(error = %e, "malformed append request; closing the stream");
                    None
                }
            }
        });
        let results = self.node()?.raft().stream_append(requests).map(|result| {
            Ok(RaftPayload {
                payload: mxraft_queue::encode(&result).into(),
            })
        });
        Ok(Response::new(Box::pin(results)))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request, true)?;
        let rpc: VoteRequest<TypeConfig> = decode(&request.into_inner().payload)?;
        Ok(payload(&self.node()?.raft().vote(rpc).await))
    }

    async fn pre_vote(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request, true)?;
        let rpc: VoteRequest<TypeConfig> = decode(&request.into_inner().payload)?;
        Ok(payload(&self.node()?.raft().pre_vote(rpc).await))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request, true)?;
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
        let meta: SnapshotMeta = decode(&header.meta)?;
        let mut receiver = self
            .node()?
            .state_machine()
            .snapshot_receiver()
            .map_err(|e| Status::internal(format!("cannot receive snapshot: {e}")))?;
        let mut bytes = 0u64;
        while let Some(chunk) = stream.message().await? {
            let Some(snapshot_chunk::Item::File(file)) = chunk.item else {
                return Err(Status::invalid_argument("a snapshot stream has one header"));
            };
            bytes += file.data.len() as u64;
            receiver
                .write_chunk(&file.name, file.offset, &file.data)
                .map_err(|e| Status::invalid_argument(format!("snapshot chunk refused: {e}")))?;
        }
        let finish_meta = meta.clone();
        let data = tokio::task::spawn_blocking(move || receiver.finish(&finish_meta))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("cannot store snapshot: {e}")))?;
        info!(index = ?meta.last_log_id, bytes, "snapshot received");
        let result = self
            .node()?
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
        if let Err(e) = &result {
            warn!(error = %e, "snapshot install failed");
        }
        Ok(payload(&result))
    }

    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        self.check_target(&request, false)?;
        let node = self.node()?;
        if !Self::is_leader(&node) {
            return Err(self.not_leader(&node));
        }
        let cmd: QueueCommand = decode(&request.into_inner().command)?;
        let result = node.propose(cmd).await?;
        Ok(Response::new(ProposeReply {
            result: mxraft_queue::encode(&result).into(),
        }))
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        self.check_target(&request, false)?;
        let node = self.node()?;
        if !Self::is_leader(&node) {
            return Err(self.not_leader(&node));
        }
        let index = node.read_index().await.map_err(Status::unavailable)?;
        Ok(Response::new(ReadIndexReply { index }))
    }

    async fn change_membership(
        &self,
        request: Request<MembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        self.check_target(&request, false)?;
        let change = request
            .into_inner()
            .change
            .ok_or_else(|| Status::invalid_argument("membership request without a change"))?;
        self.node()?.membership_change(change).await?;
        Ok(Response::new(MembershipReply {}))
    }
}
