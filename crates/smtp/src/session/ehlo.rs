//! EHLO and HELO (RFC 5321 §4.1.1.1).

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session};
use crate::Submitter;
use crate::reply::Reply;

impl<S: Submitter, T: AsyncRead + AsyncWrite + Unpin + Send> Session<S, T> {
    /// Greets the client; like RSET, it also drops any transaction in progress.
    pub(super) fn ehlo(&mut self, name: String, esmtp: bool) -> Flow {
        self.helo = Some(name);
        self.esmtp = esmtp;
        self.tx = None;
        let host = self.ctx.hostname.clone();
        if !esmtp {
            return self.ok(Reply::new(250, "", host));
        }
        let size = format!("SIZE {}", self.ctx.config.max_message_size);
        self.ok(Reply {
            code: 250,
            enhanced: "",
            lines: vec![
                host,
                "PIPELINING".into(),
                size,
                "ETRN".into(),
                "8BITMIME".into(),
                "ENHANCEDSTATUSCODES".into(),
                "DSN".into(),
                "SMTPUTF8".into(),
            ],
        })
    }
}
