//! STARTTLS (RFC 3207).

use tracing::{info, warn};

use super::{Flow, Session};
use crate::rule::Rule;
use crate::wire::Reply;
use crate::{MessageQueue, RecipientPolicy};

impl<Q: MessageQueue, P: RecipientPolicy> Session<Q, P> {
    /// Upgrades the session to TLS. Whatever the client sent after the command in plain text
    /// is discarded (CVE-2011-0411), and the session starts over: a new EHLO is required.
    pub(super) async fn starttls(&mut self) -> Flow {
        let Some(tls) = self.ctx.tls.clone() else {
            return self.refuse(Rule::NoStartTls, &[]);
        };
        if self.tls {
            return self.refuse(Rule::TlsActive, &[]);
        }
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        if self.flush().await.is_err() {
            return Flow::Close;
        }
        if !self.inbuf.is_empty() {
            let rule = Rule::StartTlsInjection;
            info!(
                bytes = self.inbuf.len(),
                rule = rule.label(),
                "plaintext after STARTTLS discarded"
            );
            metrics::counter!("mxraft_smtp_rejections_total", "rule" => rule.label()).increment(1);
            self.inbuf.clear();
        }
        let plain = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
        let handshake = tls.acceptor().accept(plain);
        match tokio::time::timeout(self.ctx.config.command_timeout, handshake).await {
            Ok(Ok(stream)) => {
                self.io = Box::new(stream);
                self.tls = true;
                self.helo = None;
                self.esmtp = false;
                self.tx = None;
                Flow::Continue
            }
            Ok(Err(e)) => {
                warn!(error = %e, "TLS handshake failed");
                Flow::Close
            }
            Err(_) => {
                warn!("TLS handshake timed out");
                Flow::Close
            }
        }
    }
}
