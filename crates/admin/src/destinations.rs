//! Destinations: every one queued for or configured, with its state.

use tonic::{Request, Response, Status};

use mxraft_proto::admin::{Destination, DestinationsListReply, DestinationsListRequest};
use mxraft_proto::identity::Role;

use crate::AdminService;

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
                name,
            }
        })
        .collect();
    Ok(Response::new(DestinationsListReply { destinations }))
}
