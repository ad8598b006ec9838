//! MAIL FROM (RFC 5321 §4.1.1.2) with the SIZE (RFC 1870) and BODY (RFC 6152) parameters.

use tokio::io::{AsyncRead, AsyncWrite};

use mxraft_queue::{BodyType, MailParams};

use super::{Flow, Session, Transaction};
use crate::Submitter;
use crate::address::{AddressError, parse_mailbox};
use crate::command::PathArgs;
use crate::reply::Reply;

impl<S: Submitter, T: AsyncRead + AsyncWrite + Unpin + Send> Session<S, T> {
    /// Starts a transaction.
    pub(super) fn mail(&mut self, args: PathArgs) -> Flow {
        if self.helo.is_none() {
            return self.error(Reply::new(503, "5.5.1", "Error: send HELO/EHLO first"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(503, "5.5.1", "Error: nested MAIL command"));
        }
        let sender = if args.address.is_empty() {
            String::new()
        } else {
            match parse_mailbox(&args.address) {
                Ok(m) => m.address(),
                Err(AddressError::NonAscii) => {
                    return self.error(Reply::new(
                        553,
                        "5.6.7",
                        "Error: non-ASCII sender address requires SMTPUTF8",
                    ));
                }
                Err(_) => return self.error(Reply::new(501, "5.1.7", "Bad sender address syntax")),
            }
        };
        let mut params = MailParams::default();
        for (key, value) in &args.params {
            match (key.as_str(), value.as_deref()) {
                ("SIZE", Some(v)) if self.esmtp => {
                    let Ok(size) = v.parse::<u64>() else {
                        return self.error(Reply::new(501, "5.5.4", "Bad SIZE parameter"));
                    };
                    if size > self.ctx.config.max_message_size {
                        return self.error(Reply::new(
                            552,
                            "5.3.4",
                            "Message size exceeds fixed limit",
                        ));
                    }
                    params.declared_size = Some(size);
                }
                ("BODY", Some(v)) if self.esmtp && v.eq_ignore_ascii_case("7BIT") => {
                    params.body = BodyType::SevenBit;
                }
                ("BODY", Some(v)) if self.esmtp && v.eq_ignore_ascii_case("8BITMIME") => {
                    params.body = BodyType::EightBitMime;
                }
                _ => {
                    return self.error(Reply::new(
                        555,
                        "5.5.4",
                        format!("Unsupported option: {key}"),
                    ));
                }
            }
        }
        self.tx = Some(Transaction {
            sender,
            params,
            recipients: Vec::new(),
        });
        self.ok(Reply::new(250, "2.1.0", "Ok"))
    }
}
