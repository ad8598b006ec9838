//! EHLO and HELO (RFC 5321 §4.1.1.1).

use super::{Flow, Session};
use crate::wire::Reply;
use crate::{MessageQueue, RecipientPolicy};

impl<Q: MessageQueue, P: RecipientPolicy> Session<Q, P> {
    /// Greets the client; like RSET, it also drops any transaction in progress.
    pub(super) fn ehlo(&mut self, name: String, esmtp: bool) -> Flow {
        self.helo = Some(name);
        self.esmtp = esmtp;
        self.tx = None;
        let host = self.ctx.hostname.clone();
        if !esmtp {
            return self.ok(Reply::new(250, "", host));
        }
        let mut lines = vec![
            host,
            "PIPELINING".into(),
            format!("SIZE {}", self.ctx.config.max_message_size),
            "ETRN".into(),
        ];
        if self.ctx.tls.is_some() && !self.tls {
            lines.push("STARTTLS".into());
        }
        lines.extend(
            [
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
                "DSN",
                "SMTPUTF8",
                "CHUNKING",
            ]
            .map(String::from),
        );
        self.ok(Reply { code: 250, lines })
    }
}
