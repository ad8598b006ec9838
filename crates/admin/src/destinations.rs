//! Destinations: every one queued for or configured, with its state; suspending and resuming
//! delivery to one; probing one's primary now.

use std::time::Instant;

use tonic::{Request, Response, Status};

use mxraft_proto::admin::{
    Destination, DestinationProbeReply, DestinationRequest, DestinationsListReply,
    DestinationsListRequest, QueueActionReply,
};
use mxraft_proto::identity::Role;
use mxraft_queue::{QueueCommand, canonical_domain};

use crate::AdminService;
use crate::queue::changed_of;

pub(crate) async fn list(
    svc: &AdminService,
    request: Request<DestinationsListRequest>,
) -> Result<Response<DestinationsListReply>, Status> {
    svc.auth
        .authorize(&request, Role::Read, "destinations list")?;
    svc.barrier(request.into_inner().consistency).await?;
    let node = svc.node()?;
    let live = node.state_machine().read();
    let q = live.queue();
    let queued = q.queued_destinations();
    let mut names: std::collections::BTreeSet<String> = queued.keys().cloned().collect();
    names.extend(q.destinations().keys().cloned());
    names.extend(q.suspensions().keys().cloned());
    names.extend(svc.options.configured.iter().cloned());
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
                route: (svc.options.describe_route)(&name),
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
                suspended_since_ms: q.suspended_since(&name),
                name,
            }
        })
        .collect();
    Ok(Response::new(DestinationsListReply { destinations }))
}

/// The destination a request names, canonical.
fn destination_of(request: &DestinationRequest) -> Result<String, Status> {
    let name = request.name.trim().trim_end_matches('.');
    if name.is_empty() || name.contains('@') || name.contains(char::is_whitespace) {
        return Err(Status::invalid_argument(format!(
            "{:?} is not a destination (a domain such as example.com)",
            request.name
        )));
    }
    Ok(canonical_domain(name))
}

/// Suspends (or resumes) delivery to a destination, through Raft: every node agrees. Changed
/// is 0 when it already was so.
pub(crate) async fn suspend(
    svc: &AdminService,
    request: Request<DestinationRequest>,
    suspended: bool,
) -> Result<Response<QueueActionReply>, Status> {
    let what = if suspended {
        "destinations suspend"
    } else {
        "destinations resume"
    };
    svc.auth.authorize(&request, Role::Admin, what)?;
    let destination = destination_of(request.get_ref())?;
    let node = svc.node()?;
    let result = node
        .propose(QueueCommand::Suspend {
            destination: destination.clone(),
            suspended,
            at_ms: node.clock().now_ms(),
        })
        .await?;
    tracing::info!(
        destination,
        suspended,
        "delivery {} by an administrator",
        if suspended { "suspended" } else { "resumed" }
    );
    Ok(Response::new(QueueActionReply {
        changed: changed_of(&result),
    }))
}

/// Probes a destination's primary from this node now (connect, banner, EHLO, QUIT) and
/// commits what it found, as the leader's periodic probe does.
pub(crate) async fn probe(
    svc: &AdminService,
    request: Request<DestinationRequest>,
) -> Result<Response<DestinationProbeReply>, Status> {
    svc.auth
        .authorize(&request, Role::Admin, "destinations probe")?;
    let destination = destination_of(request.get_ref())?;
    let prober = svc
        .options
        .prober
        .clone()
        .ok_or_else(|| Status::unimplemented("this node does not deliver mail"))?;
    let node_id = svc.node()?.id();
    let started = Instant::now();
    let outcome = prober(destination).await?;
    Ok(Response::new(DestinationProbeReply {
        node_id,
        up: outcome.up,
        error: outcome.error,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }))
}
