//! RCPT TO (RFC 5321 §4.1.1.3): only recipients in protected domains are accepted.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use super::{Flow, Session};
use crate::Submitter;
use crate::address::{AddressError, parse_mailbox};
use crate::command::PathArgs;
use crate::reply::Reply;

impl<S: Submitter, T: AsyncRead + AsyncWrite + Unpin + Send> Session<S, T> {
    /// Adds a recipient to the transaction.
    pub(super) fn rcpt(&mut self, args: PathArgs) -> Flow {
        let Some(tx) = &self.tx else {
            return self.error(Reply::new(503, "5.5.1", "Error: need MAIL command"));
        };
        if tx.recipients.len() >= self.ctx.config.max_recipients {
            return self.error(Reply::new(452, "4.5.3", "Error: too many recipients"));
        }
        if let Some((key, _)) = args.params.first() {
            return self.error(Reply::new(
                555,
                "5.5.4",
                format!("Unsupported option: {key}"),
            ));
        }
        let mailbox = match parse_mailbox(&args.address) {
            Ok(m) => m,
            Err(AddressError::SourceRoute) => {
                info!(rcpt = %args.address, rule = "source_route", "recipient refused");
                return self.error(Reply::new(
                    554,
                    "5.7.1",
                    format!("<{}>: Relay access denied", args.address),
                ));
            }
            Err(AddressError::NonAscii) => {
                return self.error(Reply::new(
                    553,
                    "5.6.7",
                    "Error: non-ASCII recipient address requires SMTPUTF8",
                ));
            }
            Err(_) => return self.error(Reply::new(501, "5.1.3", "Bad recipient address syntax")),
        };
        if !self.ctx.policy.accepts(&mailbox) {
            info!(rcpt = %args.address, rule = "relay", "recipient refused");
            return self.error(Reply::new(
                554,
                "5.7.1",
                format!("<{}>: Relay access denied", args.address),
            ));
        }
        if let Some(tx) = &mut self.tx {
            tx.recipients.push(mailbox.address());
        }
        self.ok(Reply::new(250, "2.1.5", "Ok"))
    }
}
