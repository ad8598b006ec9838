//! The queue: listing with filters, details, bodies, statistics, its shape, and the actions:
//! flush, hold, release, delete and bounce, on one message or on every message a filter
//! matches.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use mxraft_proto::admin::{
    BodyChunk, QueueActionReply, QueueBodyRequest, QueueBulkReply, QueueBulkRequest, QueueFilter,
    QueueFlushRequest, QueueIdRequest, QueueListRequest, QueueShapeReply, QueueShapeRequest,
    QueueShowReply, QueueShowRequest, QueueStatsReply, QueueStatsRequest, QueuedMessage, Recipient,
    ShapeRow, queue_flush_request,
};
use mxraft_proto::identity::Role;
use mxraft_queue::filter::{SHAPE_BUCKETS_MINUTES, shape as queue_shape};
use mxraft_queue::{
    AddressPattern, BodyType, BulkAction, CommandResult, FlushTarget, Message, MessageFilter,
    MessageId, MessageState, QueueCommand, RecipientState, canonical_domain,
};
use mxraft_store::StateMachineStore;

use crate::{AdminService, BodyStream, LIST_PAGE, MessageStream};

/// Messages looked at per hold of the state lock while a filtered listing searches.
const SCAN_PAGE: usize = 4096;

/// Messages per `Bulk` command: one Raft entry stays small, and a large action commits as
/// it goes.
const BULK_BATCH: usize = 1000;

/// Bytes per chunk of a streamed body.
const BODY_CHUNK: usize = 64 * 1024;

/// A filter of the admin API as the queue's [`MessageFilter`] at `now_ms`, with the id to
/// start after.
fn filter_of(
    filter: Option<QueueFilter>,
    now_ms: u64,
) -> Result<(MessageFilter, Option<MessageId>), Status> {
    let Some(f) = filter else {
        return Ok((MessageFilter::default(), None));
    };
    let pattern = |field: &str, text: Option<String>| {
        text.map(|t| {
            AddressPattern::parse(&t)
                .map_err(|e| Status::invalid_argument(format!("filter.{field}: {e}")))
        })
        .transpose()
    };
    let destination = match f.domain {
        Some(d) if d.trim().trim_end_matches('.').is_empty() => {
            return Err(Status::invalid_argument("filter.domain: empty domain"));
        }
        Some(d) => Some(canonical_domain(d.trim())),
        None => None,
    };
    let state = f
        .state
        .map(|s| {
            MessageState::parse(&s)
                .map_err(|e| Status::invalid_argument(format!("filter.state: {e}")))
        })
        .transpose()?;
    let after = f
        .after
        .map(|t| {
            t.trim().parse::<MessageId>().map_err(|_| {
                Status::invalid_argument(format!("filter.after: {t:?} is not a queue id"))
            })
        })
        .transpose()?;
    Ok((
        MessageFilter {
            sender: pattern("sender", f.sender)?,
            recipient: pattern("recipient", f.recipient)?,
            destination,
            state,
            received_before_ms: f.older_than_ms.map(|age| now_ms.saturating_sub(age)),
        },
        after,
    ))
}

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
    let (filter, start) = filter_of(r.filter, clock.now_ms())?;
    let (tx, rx) = mpsc::channel(LIST_PAGE);
    tokio::spawn(async move {
        let mut after = start;
        let mut sent = 0usize;
        while sent < limit {
            // One page: up to LIST_PAGE matches among at most SCAN_PAGE messages, so a filter
            // that matches little never holds the state lock for long.
            let (page, scanned_to, exhausted) = {
                let live = sm.read();
                let now = clock.now_ms();
                let mut page: Vec<QueuedMessage> = Vec::new();
                let mut last = after;
                let mut scanned = 0usize;
                for m in live.queue().iter_from(after) {
                    if scanned == SCAN_PAGE || page.len() == LIST_PAGE.min(limit - sent) {
                        break;
                    }
                    scanned += 1;
                    last = Some(m.id);
                    if filter.matches(m, now) {
                        page.push(to_proto(m, now));
                    }
                }
                let exhausted = scanned < SCAN_PAGE && page.len() < LIST_PAGE.min(limit - sent);
                (page, last, exhausted)
            };
            after = scanned_to;
            sent += page.len();
            for m in page {
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
            if exhausted || after.is_none() {
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
    let (message, body_type, stored) = {
        let live = sm.read();
        let m = live.queue().get(id).ok_or_else(|| not_found(id))?;
        let body_type = match m.params.body {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
        };
        (to_proto(m, now), body_type, m.clone())
    };
    let body = if r.include_body {
        Some(content(&sm, &stored).await?)
    } else {
        None
    };
    Ok(Response::new(QueueShowReply {
        message: Some(message),
        body,
        body_type: body_type.to_owned(),
    }))
}

/// The message as it will be delivered: its trace header, then its body.
async fn content(sm: &StateMachineStore, message: &Message) -> Result<Bytes, Status> {
    let id = message.id;
    let stored = sm
        .body_async(id)
        .await
        .map_err(|e| Status::internal(format!("cannot read the body of {id}: {e}")))?
        .ok_or_else(|| not_found(id))?;
    Ok(message.content(stored))
}

/// The message as it will be delivered, streamed in chunks: bodies can be larger than one
/// gRPC message may be.
pub(crate) async fn body(
    svc: &AdminService,
    request: Request<QueueBodyRequest>,
) -> Result<Response<BodyStream>, Status> {
    svc.auth.authorize(&request, Role::Read, "queue body")?;
    let r = request.into_inner();
    let id: MessageId = r.id.trim().parse().map_err(|_| bad_id(&r.id))?;
    svc.barrier(r.consistency).await?;
    let node = svc.node()?;
    let sm = node.state_machine().clone();
    let message = {
        let live = sm.read();
        live.queue().get(id).ok_or_else(|| not_found(id))?.clone()
    };
    let body = content(&sm, &message).await?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut at = 0;
        while at < body.len() {
            let end = (at + BODY_CHUNK).min(body.len());
            if tx
                .send(Ok(BodyChunk {
                    data: body.slice(at..end),
                }))
                .await
                .is_err()
            {
                return;
            }
            at = end;
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// Messages with pending recipients per destination and age bucket.
pub(crate) async fn shape(
    svc: &AdminService,
    request: Request<QueueShapeRequest>,
) -> Result<Response<QueueShapeReply>, Status> {
    svc.auth.authorize(&request, Role::Read, "queue shape")?;
    let r = request.into_inner();
    svc.barrier(r.consistency).await?;
    let node = svc.node()?;
    let now = node.clock().now_ms();
    let (filter, _) = filter_of(r.filter, now)?;
    let rows = queue_shape(node.state_machine().read().queue(), &filter, now);
    Ok(Response::new(QueueShapeReply {
        bucket_minutes: SHAPE_BUCKETS_MINUTES.to_vec(),
        rows: rows
            .into_iter()
            .map(|r| ShapeRow {
                destination: r.destination,
                total: r.total,
                counts: r.counts.to_vec(),
            })
            .collect(),
    }))
}

/// An action on every message a filter matches, committed in `Bulk` commands of at most
/// [`BULK_BATCH`] messages; or, with `dry_run`, how many it matches. The messages are chosen
/// once, after a linearizable read: mail that arrives meanwhile is left alone.
pub(crate) async fn bulk(
    svc: &AdminService,
    request: Request<QueueBulkRequest>,
) -> Result<Response<QueueBulkReply>, Status> {
    let dry_run = request.get_ref().dry_run;
    let role = if dry_run { Role::Read } else { Role::Admin };
    svc.auth.authorize(&request, role, "queue bulk")?;
    let r = request.into_inner();
    let action = match r.action.as_str() {
        "flush" => BulkAction::Flush,
        "hold" => BulkAction::Hold,
        "release" => BulkAction::Release,
        "delete" => BulkAction::Delete,
        "bounce" => BulkAction::Bounce,
        other => {
            return Err(Status::invalid_argument(format!(
                "action: {other:?} is not one of flush, hold, release, delete, bounce"
            )));
        }
    };
    svc.barrier(mxraft_proto::admin::ReadConsistency::Linearizable as i32)
        .await?;
    let node = svc.node()?;
    let now = node.clock().now_ms();
    let (filter, after) = filter_of(r.filter, now)?;
    let limit = if r.limit == 0 {
        usize::MAX
    } else {
        r.limit as usize
    };
    let ids: Vec<MessageId> = {
        let live = node.state_machine().read();
        live.queue()
            .iter_from(after)
            .filter(|m| filter.matches(m, now))
            .take(limit)
            .map(|m| m.id)
            .collect()
    };
    let matched = ids.len() as u64;
    let mut changed = 0u64;
    if !dry_run {
        for batch in ids.chunks(BULK_BATCH) {
            let result = node
                .propose(QueueCommand::Bulk {
                    action,
                    ids: batch.to_vec(),
                    at_ms: node.clock().now_ms(),
                    reporting_mta: svc.options.hostname.clone(),
                })
                .await?;
            changed += u64::from(changed_of(&result));
        }
        tracing::info!(
            action = action.name(),
            matched,
            changed,
            "bulk action by an administrator"
        );
    }
    Ok(Response::new(QueueBulkReply { matched, changed }))
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
        state: MessageState::of(m, now).name().to_owned(),
    }
}
