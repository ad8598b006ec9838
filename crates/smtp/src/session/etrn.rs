//! ETRN (RFC 1985): the primary, back online, asks for the mail queued for its domain.

use tracing::info;

use super::{Flow, Session};
use crate::address::normalize_domain;
use crate::reply::Reply;
use crate::{EtrnReply, Submitter};

impl<S: Submitter> Session<S> {
    /// Starts delivery of the mail queued for a domain, if the client may ask for it.
    pub(super) async fn etrn(&mut self, node: String) -> Flow {
        if self.helo.is_none() {
            return self.error(Reply::new(503, "5.5.1", "Error: send HELO/EHLO first"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "Error: MAIL transaction in progress",
            ));
        }
        // `@domain` (subdomains in RFC 1985) and `#queue` forms name the same thing here.
        let domain = normalize_domain(node.trim_start_matches(['@', '#']));
        let reply = self.ctx.submitter.etrn(self.peer.ip(), &domain).await;
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
            EtrnReply::NotAllowed => self.error(Reply::new(
                459,
                "4.7.1",
                format!("Node {domain} not allowed for this client"),
            )),
            EtrnReply::Unavailable => self.error(Reply::new(
                458,
                "4.3.0",
                format!("Unable to queue messages for node {domain}"),
            )),
        }
    }
}
