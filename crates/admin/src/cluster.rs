//! Cluster status, join, remove, and this node's identity.

use tonic::{Request, Response, Status};

use mxraft_proto::admin::{
    ClusterJoinReply, ClusterJoinRequest, ClusterRemoveReply, ClusterRemoveRequest,
    ClusterStatusReply, ClusterStatusRequest, Member, NodeInfoReply, NodeInfoRequest,
    StateDigestReply, StateDigestRequest, TransferLeaderReply, TransferLeaderRequest,
};
use mxraft_proto::identity::Role;
use mxraft_store::NodeInfo;

use crate::AdminService;

pub(crate) async fn status(
    svc: &AdminService,
    request: Request<ClusterStatusRequest>,
) -> Result<Response<ClusterStatusReply>, Status> {
    svc.auth.authorize(&request, Role::Read, "cluster status")?;
    let s = svc.node()?.status();
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
                last_contact_ms: m.last_contact_ms,
            })
            .collect(),
        last_log_index: s.last_log_index,
        committed_index: s.committed_index,
        applied_index: s.applied_index,
        state: s.state.to_owned(),
    }))
}

pub(crate) async fn join(
    svc: &AdminService,
    request: Request<ClusterJoinRequest>,
) -> Result<Response<ClusterJoinReply>, Status> {
    svc.auth.authorize(&request, Role::Admin, "cluster join")?;
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
    svc.node()?.join(r.node_id, info, r.pristine).await?;
    Ok(Response::new(ClusterJoinReply {}))
}

pub(crate) async fn remove(
    svc: &AdminService,
    request: Request<ClusterRemoveRequest>,
) -> Result<Response<ClusterRemoveReply>, Status> {
    svc.auth
        .authorize(&request, Role::Admin, "cluster remove")?;
    svc.node()?.remove(request.into_inner().node_id).await?;
    Ok(Response::new(ClusterRemoveReply {}))
}

pub(crate) async fn node_info(
    svc: &AdminService,
    request: Request<NodeInfoRequest>,
) -> Result<Response<NodeInfoReply>, Status> {
    svc.auth.authorize(&request, Role::Read, "node info")?;
    let node = svc.node()?;
    let info = node.info();
    let disk = rustix::fs::statvfs(&svc.options.data_dir).ok().map(|s| {
        (
            s.f_bavail.saturating_mul(s.f_frsize),
            s.f_blocks.saturating_mul(s.f_frsize),
        )
    });
    Ok(Response::new(NodeInfoReply {
        node_id: node.id(),
        cluster_addr: info.cluster_addr.clone(),
        smtp_addr: info.smtp_addr.clone(),
        admin_addr: info.admin_addr.clone(),
        initialized: node.is_initialized().await,
        data_free_bytes: disk.map(|(free, _)| free),
        data_total_bytes: disk.map(|(_, total)| total),
        mx_host: svc.options.dns.mx_host.clone(),
        public_addresses: svc
            .options
            .dns
            .public_addresses
            .iter()
            .map(ToString::to_string)
            .collect(),
        domains: svc.options.dns.domains.clone(),
    }))
}

/// Hands the leadership over, from the leader; any other node says which node leads.
pub(crate) async fn transfer_leader(
    svc: &AdminService,
    request: Request<TransferLeaderRequest>,
) -> Result<Response<TransferLeaderReply>, Status> {
    svc.auth
        .authorize(&request, Role::Admin, "cluster transfer-leader")?;
    let target = request.into_inner().node_id;
    let node = svc.node()?;
    let leader_id = node
        .transfer_leadership(target, svc.options.transfer_timeout)
        .await?;
    Ok(Response::new(TransferLeaderReply {
        previous_leader_id: node.id(),
        leader_id,
    }))
}

pub(crate) async fn state_digest(
    svc: &AdminService,
    request: Request<StateDigestRequest>,
) -> Result<Response<StateDigestReply>, Status> {
    svc.auth.authorize(&request, Role::Read, "state digest")?;
    let node = svc.node()?;
    let digest = node
        .state_machine()
        .digest_async()
        .await
        .map_err(|e| Status::internal(format!("cannot read the state machine: {e}")))?;
    Ok(Response::new(StateDigestReply {
        node_id: node.id(),
        applied_index: digest.applied_index,
        sha256: digest.sha256,
        records: digest.records,
    }))
}
