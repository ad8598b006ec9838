//! The client side of the transport: a pool of gRPC channels to the peers, and openraft's
//! network factory over it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::StreamAppendResult;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tracing::debug;

use mxraft_proto::cluster::cluster_client::ClusterClient;
use mxraft_proto::cluster::{RaftPayload, SnapshotChunk};
use mxraft_store::{NodeInfo, SnapshotData, TypeConfig, Vote};

use mxraft_proto::identity::{CLUSTER_ID_HEADER, TARGET_NODE_HEADER};
use mxraft_proto::tls::{self, Expect, TlsSource};

use crate::MAX_GRPC_MESSAGE;

type SnapshotOf = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// One lazily connected gRPC channel per peer, shared by Raft replication and forwarding, with
/// the TLS configuration and the cluster id every request carries.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<PeersInner>,
}

struct PeersInner {
    channels: Mutex<HashMap<(String, Option<u64>), Channel>>,
    tls: Option<Arc<TlsSource>>,
    cluster_id: RwLock<Option<String>>,
    /// Fault injection: all cluster traffic of this node fails, both ways.
    isolated: std::sync::atomic::AtomicBool,
}

impl Peers {
    /// A pool that connects with `tls` (mutual TLS with the cluster CA), or in plain text
    /// without it, and sends `cluster_id` with every request once it is known.
    pub fn new(tls: Option<Arc<TlsSource>>, cluster_id: Option<String>) -> Peers {
        Peers {
            inner: Arc::new(PeersInner {
                channels: Mutex::new(HashMap::new()),
                tls,
                cluster_id: RwLock::new(cluster_id),
                isolated: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The cluster id requests carry.
    pub fn cluster_id(&self) -> Option<String> {
        self.inner
            .cluster_id
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Whether this node's cluster traffic is cut (see [`crate::RaftNode::set_isolated`]).
    pub fn is_isolated(&self) -> bool {
        self.inner
            .isolated
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_isolated(&self, on: bool) {
        self.inner
            .isolated
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn reachable(&self) -> Result<(), Status> {
        if self.is_isolated() {
            return Err(Status::unavailable("this node is cut off from the cluster"));
        }
        Ok(())
    }

    pub(crate) fn set_cluster_id(&self, id: &str) {
        if let Ok(mut c) = self.inner.cluster_id.write() {
            *c = Some(id.to_owned());
        }
    }

    /// The channel to `addr` (`host:port`) for node `target` (any node when `None`), created on
    /// first use. Connecting happens on the first request, and again after a failure; over TLS
    /// the server must present the certificate of `target`.
    pub fn channel(&self, addr: &str, target: Option<u64>) -> Result<Channel, Status> {
        self.reachable()?;
        let mut channels = self
            .inner
            .channels
            .lock()
            .map_err(|_| Status::internal("peer pool poisoned"))?;
        let key = (addr.to_owned(), target);
        if let Some(c) = channels.get(&key) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("bad peer address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(4 * 1024 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024);
        let channel = tls::channel(endpoint, self.inner.tls.clone(), Expect::Node(target));
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    /// A cluster-service client for node `target` (any node when `None`) at `addr`.
    pub fn client(
        &self,
        addr: &str,
        target: Option<u64>,
    ) -> Result<ClusterClient<Channel>, Status> {
        Ok(ClusterClient::new(self.channel(addr, target)?)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE))
    }

    /// Wraps `msg` in a request addressed to node `target`, with this cluster's id.
    pub fn request<T>(&self, msg: T, target: Option<u64>, timeout: Option<Duration>) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(target) = target
            && let Ok(v) = target.to_string().parse()
        {
            req.metadata_mut().insert(TARGET_NODE_HEADER, v);
        }
        if let Some(id) = self.cluster_id()
            && let Ok(v) = id.parse()
        {
            req.metadata_mut().insert(CLUSTER_ID_HEADER, v);
        }
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        req
    }
}

/// openraft's network factory: hands out one [`PeerClient`] per target.
pub struct NetworkFactory {
    local: u64,
    peers: Peers,
}

impl NetworkFactory {
    /// A factory for node `local` over the shared pool.
    pub fn new(local: u64, peers: Peers) -> Self {
        NetworkFactory { local, peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> PeerClient {
        PeerClient {
            local: self.local,
            target,
            client: self.peers.client(&node.cluster_addr, Some(target)),
            peers: self.peers.clone(),
        }
    }
}

/// The Raft RPCs to one peer.
pub struct PeerClient {
    local: u64,
    target: u64,
    client: Result<ClusterClient<Channel>, Status>,
    peers: Peers,
}

fn to_rpc_error(status: Status) -> RPCError<TypeConfig> {
    match status.code() {
        Code::Unavailable | Code::FailedPrecondition | Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&status))
        }
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

fn decode_reply<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, RPCError<TypeConfig>> {
    let result: Result<T, RaftError<TypeConfig>> =
        mxraft_queue::decode(payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    // The only error a Raft RPC returns is the peer's fatal stop: treat the peer as down.
    result.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
}

impl PeerClient {
    fn timeout(&self, action: RPCTypes, after: Duration) -> RPCError<TypeConfig> {
        RPCError::Timeout(Timeout {
            action,
            id: self.local,
            target: self.target,
            timeout: after,
        })
    }

    async fn unary<F, Fut>(
        &mut self,
        action: RPCTypes,
        payload: Vec<u8>,
        option: &RPCOption,
        call: F,
    ) -> Result<Bytes, RPCError<TypeConfig>>
    where
        F: FnOnce(ClusterClient<Channel>, Request<RaftPayload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftPayload>, Status>>,
    {
        self.peers.reachable().map_err(to_rpc_error)?;
        let client = self.client.clone().map_err(to_rpc_error)?;
        let ttl = option.soft_ttl();
        let req = self.peers.request(
            RaftPayload {
                payload: payload.into(),
            },
            Some(self.target),
            Some(ttl),
        );
        match tokio::time::timeout(ttl, call(client, req)).await {
            Err(_) => Err(self.timeout(action, ttl)),
            Ok(Err(status)) if status.code() == Code::DeadlineExceeded => {
                Err(self.timeout(action, ttl))
            }
            Ok(Err(status)) => Err(to_rpc_error(status)),
            Ok(Ok(resp)) => Ok(resp.into_inner().payload),
        }
    }

    async fn send_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf,
        option: &RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        self.peers
            .reachable()
            .map_err(|s| StreamingError::Unreachable(Unreachable::new(&s)))?;
        let mut client = self
            .client
            .clone()
            .map_err(|s| StreamingError::Unreachable(Unreachable::new(&s)))?;
        let idle = option.soft_ttl();
        let (tx, rx) = mpsc::channel::<SnapshotChunk>(2);
        // The producer reads the checkpoint files and feeds the request stream. A consumer that
        // stops reading for longer than the idle timeout ends the transfer.
        let producer = tokio::spawn(async move {
            crate::snapshot::produce(&vote, &snapshot.meta, snapshot.snapshot, tx, idle).await
        });
        let req = self
            .peers
            .request(ReceiverStream::new(rx), Some(self.target), None);
        let result = client.install_snapshot(req).await;
        producer.abort();
        let payload = result
            .map_err(|s| StreamingError::Unreachable(Unreachable::new(&s)))?
            .into_inner()
            .payload;
        let reply: Result<SnapshotResponse<TypeConfig>, RaftError<TypeConfig>> =
            mxraft_queue::decode(&payload)
                .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        reply.map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let payload = mxraft_queue::encode(&rpc);
        let reply = self
            .unary(
                RPCTypes::AppendEntries,
                payload,
                &option,
                |mut c, r| async move { c.append_entries(r).await },
            )
            .await?;
        decode_reply(&reply)
    }

    fn stream_append<'s, St>(
        &'s mut self,
        input: St,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        St: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            // openraft waits out its replication backoff while it produces a request, so take
            // the first one before connecting: a peer that refuses connections at once (down,
            // or no route to it) is then tried at the backoff's pace instead of in a busy loop.
            let mut input = input;
            let Some(first) = input.next().await else {
                return Ok(Box::pin(futures::stream::empty()) as BoxStream<'s, _>);
            };
            self.peers.reachable().map_err(to_rpc_error)?;
            let mut client = self.client.clone().map_err(to_rpc_error)?;
            let requests = futures::stream::iter([first])
                .chain(input)
                .map(|req| RaftPayload {
                    payload: mxraft_queue::encode(&req).into(),
                });
            let request = self.peers.request(requests, Some(self.target), None);
            let ttl = option.soft_ttl();
            let response = match tokio::time::timeout(ttl, client.stream_append(request)).await {
                Err(_) => return Err(self.timeout(RPCTypes::AppendEntries, ttl)),
                Ok(r) => r.map_err(to_rpc_error)?,
            };
            let peers = self.peers.clone();
            let results = response.into_inner().map(move |item| {
                peers.reachable().map_err(to_rpc_error)?;
                let payload = item.map_err(to_rpc_error)?.payload;
                let result: Result<
                    StreamAppendResult<TypeConfig>,
                    openraft::error::Fatal<TypeConfig>,
                > = mxraft_queue::decode(&payload)
                    .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
                // A fatal error means the peer stopped: treat it as unreachable.
                result.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
            });
            Ok(Box::pin(results) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let payload = mxraft_queue::encode(&rpc);
        let reply = self
            .unary(RPCTypes::Vote, payload, &option, |mut c, r| async move {
                c.vote(r).await
            })
            .await?;
        decode_reply(&reply)
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let payload = mxraft_queue::encode(&rpc);
        let reply = self
            .unary(
                RPCTypes::TransferLeader,
                payload,
                &option,
                |mut c, r| async move { c.transfer_leader(r).await },
            )
            .await?;
        decode_reply(&reply)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let payload = mxraft_queue::encode(&rpc);
        let reply = self
            .unary(RPCTypes::Vote, payload, &option, |mut c, r| async move {
                c.pre_vote(r).await
            })
            .await?;
        decode_reply(&reply)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        debug!(target_node = self.target, index = ?snapshot.meta.last_log_id, "sending snapshot");
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = self.send_snapshot(vote, snapshot, &option) => result,
        }
    }
}
