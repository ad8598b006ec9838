//! The queue: listing, details, statistics, flush, hold, release, delete and bounce.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use mxraft_proto::admin::{
    QueueActionReply, QueueFlushRequest, QueueIdRequest, QueueListRequest, QueueShowReply,
    QueueShowRequest, QueueStatsReply, QueueStatsRequest, QueuedMessage, Recipient,
    queue_flush_request,
};
use mxraft_proto::identity::Role;
use mxraft_queue::{
    BodyType, CommandResult, FlushTarget, Message, MessageId, QueueCommand, RecipientState,
};

use crate::{AdminService, LIST_PAGE, MessageStream};

pub(crate) async fn list(
    svc: &AdminService,
    request: Request<QueueListRequest>,
) -> Result<Response<MessageStream>, Status> {
    svc.auth.authorize(&request, Role::Read, "queue list")?;
    let r = request.into_inner();
    svc.barrier(r.consistency).await?;
    let limit = if r.limit == 0 {
        usize::MAX
    } else {
        r.limit as usize
    };
    let node = svc.node()?;
    let sm = node.state_machine().clone();
    let clock = node.clock().clone();
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
                    .map(|m| to_proto(m, clock.now_ms()))
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

pub(crate) async fn show(
    svc: &AdminService,
    request: Request<QueueShowRequest>,
) -> Result<Response<QueueShowReply>, Status> {
    svc.auth.authorize(&request, Role::Read, "queue show")?;
    let r = request.into_inner();
    let id: MessageId = r.id.trim().parse().map_err(|_| bad_id(&r.id))?;
    svc.barrier(r.consistency).await?;
    let node = svc.node()?;
    let sm = node.state_machine().clone();
    let now = node.clock().now_ms();
    let (message, body_type, trace) = {
        let live = sm.read();
        let m = live.queue().get(id).ok_or_else(|| not_found(id))?;
        let body_type = match m.params.body {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
        };
        (to_proto(m, now), body_type, m.trace_header.clone())
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

pub(crate) async fn stats(
    svc: &AdminService,
    request: Request<QueueStatsRequest>,
) -> Result<Response<QueueStatsReply>, Status> {
    svc.auth.authorize(&request, Role::Read, "queue stats")?;
    svc.barrier(request.into_inner().consistency).await?;
    let stats = svc.node()?.state_machine().read().queue().stats();
    Ok(Response::new(QueueStatsReply {
        messages: stats.messages,
        bytes: stats.bytes,
        oldest_received_at_ms: stats.oldest_received_at_ms,
    }))
}

pub(crate) async fn flush(
    svc: &AdminService,
    request: Request<QueueFlushRequest>,
) -> Result<Response<QueueActionReply>, Status> {
    svc.auth.authorize(&request, Role::Admin, "queue flush")?;
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
            if svc.node()?.state_machine().read().queue().get(id).is_none() {
                return Err(not_found(id));
            }
            FlushTarget::Message(id)
        }
    };
    let node = svc.node()?;
    let result = node
        .propose(QueueCommand::Reschedule {
            target,
            at_ms: node.clock().now_ms(),
        })
        .await?;
    Ok(Response::new(QueueActionReply {
        changed: changed_of(&result),
    }))
}

pub(crate) async fn hold(
    svc: &AdminService,
    request: Request<QueueIdRequest>,
) -> Result<Response<QueueActionReply>, Status> {
    svc.auth.authorize(&request, Role::Admin, "queue hold")?;
    svc.commit_on_message(&request.into_inner().id, |id, _| QueueCommand::Hold { id })
        .await
}

pub(crate) async fn release(
    svc: &AdminService,
    request: Request<QueueIdRequest>,
) -> Result<Response<QueueActionReply>, Status> {
    svc.auth.authorize(&request, Role::Admin, "queue release")?;
    svc.commit_on_message(&request.into_inner().id, |id, at_ms| QueueCommand::Resume {
        id,
        at_ms,
    })
    .await
}

pub(crate) async fn delete(
    svc: &AdminService,
    request: Request<QueueIdRequest>,
) -> Result<Response<QueueActionReply>, Status> {
    svc.auth.authorize(&request, Role::Admin, "queue delete")?;
    svc.commit_on_message(&request.into_inner().id, |id, at_ms| QueueCommand::Delete {
        id,
        at_ms,
    })
    .await
}

pub(crate) async fn bounce(
    svc: &AdminService,
    request: Request<QueueIdRequest>,
) -> Result<Response<QueueActionReply>, Status> {
    svc.auth.authorize(&request, Role::Admin, "queue bounce")?;
    let reporting_mta = svc.options.hostname.clone();
    svc.commit_on_message(&request.into_inner().id, move |id, at_ms| {
        QueueCommand::Bounce {
            id,
            at_ms,
            reporting_mta,
        }
    })
    .await
}

pub(crate) fn bad_id(text: &str) -> Status {
    Status::invalid_argument(format!("{text:?} is not a queue id"))
}

pub(crate) fn not_found(id: MessageId) -> Status {
    Status::not_found(format!("message {id} is not in the queue"))
}

pub(crate) fn changed_of(result: &CommandResult) -> u32 {
    match result {
        CommandResult::Applied { changed } => *changed,
        CommandResult::Deleted { existed, .. } => u32::from(*existed),
        _ => 0,
    }
}

pub(crate) fn to_proto(m: &Message, now: u64) -> QueuedMessage {
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
