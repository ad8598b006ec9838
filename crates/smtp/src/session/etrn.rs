//! ETRN (RFC 1985): the primary, back online, asks for the mail queued for its domain.

use tracing::info;

use super::{Flow, Session};
use crate::address::normalize_domain;
use crate::rule::Rule;
use crate::wire::Reply;
use crate::{EtrnReply, MessageQueue, RecipientPolicy};

impl<Q: MessageQueue, P: RecipientPolicy> Session<Q, P> {
    /// Starts delivery of the mail queued for a domain, if the client may ask for it.
    pub(super) async fn etrn(&mut self, node: String) -> Flow {
        if self.helo.is_none() {
            return self.refuse(Rule::NoHello, &[]);
        }
        if self.tx.is_some() {
            return self.refuse(Rule::TransactionInProgress, &[]);
        }
        // `@domain` (subdomains in RFC 1985) and `#queue` forms name the same thing here.
        let domain = normalize_domain(node.trim_start_matches(['@', '#']));
        let allowed = self.ctx.domains.is_protected(&domain)
            && self.ctx.policy.may_etrn(self.peer.ip(), &domain).await;
        if !allowed {
            info!(domain = %domain, "ETRN not allowed");
            return self.refuse(Rule::EtrnNotAllowed, &[&domain]);
        }
        let reply = self.ctx.queue.flush_destination(&domain).await;
        info!(domain = %domain, result = ?reply, "ETRN");
        match reply {
            EtrnReply::Started => self.ok(Reply::new(
                250,
                "2.0.0",
                format!("Queuing for node {domain} started"),
            )),
            EtrnReply::NothingQueued => self.ok(Reply::new(
                251,
                "2.0.0",
                format!("OK no messages waiting for node {domain}"),
            )),
            EtrnReply::Unavailable => self.refuse(Rule::EtrnUnavailable, &[&domain]),
        }
    }
}
