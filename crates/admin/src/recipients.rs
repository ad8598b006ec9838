//! The replicated recipient table.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use mxraft_proto::admin::{
    QueueActionReply, RecipientEntry, RecipientsChangeRequest, RecipientsListRequest,
};
use mxraft_proto::identity::Role;
use mxraft_queue::QueueCommand;

use crate::queue::changed_of;
use crate::{AdminService, EntryStream, LIST_PAGE};

pub(crate) async fn add(
    svc: &AdminService,
    request: Request<RecipientsChangeRequest>,
) -> Result<Response<QueueActionReply>, Status> {
    svc.auth
        .authorize(&request, Role::Admin, "recipients add")?;
    let entries = normalize_entries(request.into_inner().entries)?;
    let result = svc
        .node()?
        .propose(QueueCommand::RecipientsAdd { entries })
        .await?;
    Ok(Response::new(QueueActionReply {
        changed: changed_of(&result),
    }))
}

pub(crate) async fn remove(
    svc: &AdminService,
    request: Request<RecipientsChangeRequest>,
) -> Result<Response<QueueActionReply>, Status> {
    svc.auth
        .authorize(&request, Role::Admin, "recipients remove")?;
    let entries = normalize_entries(request.into_inner().entries)?;
    let result = svc
        .node()?
        .propose(QueueCommand::RecipientsRemove { entries })
        .await?;
    Ok(Response::new(QueueActionReply {
        changed: changed_of(&result),
    }))
}

pub(crate) async fn list(
    svc: &AdminService,
    request: Request<RecipientsListRequest>,
) -> Result<Response<EntryStream>, Status> {
    svc.auth
        .authorize(&request, Role::Read, "recipients list")?;
    let r = request.into_inner();
    svc.barrier(r.consistency).await?;
    let domain = r.domain.trim().trim_end_matches('.').to_lowercase();
    let sm = svc.node()?.state_machine().clone();
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
                let in_domain = domain.is_empty() || mxraft_queue::destination_of(&entry) == domain;
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
