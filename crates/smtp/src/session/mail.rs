//! MAIL FROM (RFC 5321 §4.1.1.2) with SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531)
//! and the DSN parameters RET and ENVID (RFC 3461).

use mxraft_queue::{BodyType, MailParams, Ret};

use super::{Flow, Session, Transaction};
use crate::Submitter;
use crate::address::{AddressError, parse_mailbox, parse_mailbox_utf8};
use crate::command::PathArgs;
use crate::reply::Reply;

/// Whether `s` is valid xtext (RFC 3461 §4): printable ASCII, `+` only as `+HH`, no `=`.
pub(super) fn is_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |c: Option<&u8>| {
                    c.is_some_and(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
                };
                if !(hex(b.get(i + 1)) && hex(b.get(i + 2))) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            33..=126 => i += 1,
            _ => return false,
        }
    }
    !b.is_empty()
}

impl<S: Submitter> Session<S> {
    /// Starts a transaction.
    pub(super) fn mail(&mut self, args: PathArgs) -> Flow {
        if self.helo.is_none() {
            return self.error(Reply::new(503, "5.5.1", "Error: send HELO/EHLO first"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(503, "5.5.1", "Error: nested MAIL command"));
        }
        if !self.ctx.submitter.has_room() {
            return self.refuse(
                "queue_quota",
                Reply::new(452, "4.3.1", "Error: insufficient system storage"),
            );
        }
        if !self.clients.message(
            self.peer.ip(),
            self.ctx.config.max_messages_per_client_per_minute,
        ) {
            return self.refuse(
                "client_message_rate",
                Reply::new(
                    450,
                    "4.7.1",
                    format!(
                        "Error: too many messages from {}; slow down",
                        self.peer.ip()
                    ),
                ),
            );
        }
        let mut params = MailParams::default();
        for (key, value) in &args.params {
            if !self.esmtp {
                return self.error(Reply::new(
                    555,
                    "5.5.4",
                    format!("Unsupported option: {key}"),
                ));
            }
            match (key.as_str(), value.as_deref()) {
                ("SIZE", Some(v)) => {
                    let Ok(size) = v.parse::<u64>() else {
                        return self.error(Reply::new(501, "5.5.4", "Bad SIZE parameter"));
                    };
                    if size > self.ctx.config.max_message_size {
                        return self.refuse(
                            "message_size",
                            Reply::new(552, "5.3.4", "Message size exceeds fixed limit"),
                        );
                    }
                    params.declared_size = Some(size);
                }
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => {
                    params.body = BodyType::SevenBit
                }
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                    params.body = BodyType::EightBitMime
                }
                ("SMTPUTF8", None) => params.smtputf8 = true,
                ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") && params.ret.is_none() => {
                    params.ret = Some(Ret::Full)
                }
                ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") && params.ret.is_none() => {
                    params.ret = Some(Ret::Headers)
                }
                ("ENVID", Some(v)) if params.envid.is_none() => {
                    if v.len() > 100 || !is_xtext(v) {
                        return self.error(Reply::new(501, "5.5.4", "Bad ENVID parameter"));
                    }
                    params.envid = Some(v.to_owned());
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
        let sender = if args.address.is_empty() {
            String::new()
        } else {
            let parsed = if params.smtputf8 {
                parse_mailbox_utf8(&args.address)
            } else {
                parse_mailbox(&args.address)
            };
            match parsed {
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
        let Some(memory) = self.ctx.memory.reserve(params.declared_size.unwrap_or(0)) else {
            return self.refuse(
                "memory",
                Reply::new(
                    452,
                    "4.3.1",
                    "Error: insufficient system resources for a message of this size now, try again later",
                ),
            );
        };
        self.tx = Some(Transaction {
            sender,
            params,
            recipients: Vec::new(),
            chunks: None,
            extra_header: None,
            memory,
            over_memory: false,
        });
        self.ok(Reply::new(250, "2.1.0", "Ok"))
    }
}

#[cfg(test)]
mod tests {
    use super::is_xtext;

    #[test]
    fn xtext() {
        assert!(is_xtext("QQ314159"));
        assert!(is_xtext("a+2Bb"));
        assert!(!is_xtext(""));
        assert!(!is_xtext("a b"));
        assert!(!is_xtext("a=b"));
        assert!(!is_xtext("a+2"));
        assert!(!is_xtext("a+zz"));
    }
}
