//! MAIL FROM (RFC 5321 §4.1.1.2) with SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531)
//! and the DSN parameters RET and ENVID (RFC 3461).

use mxraft_queue::{BodyType, MailParams, Ret};

use super::{Flow, Session, Transaction};
use crate::address::{AddressError, parse_mailbox, parse_mailbox_utf8};
use crate::command::PathArgs;
use crate::rule::Rule;
use crate::wire::Reply;
use crate::{MessageQueue, RecipientPolicy};

impl<Q: MessageQueue, P: RecipientPolicy> Session<Q, P> {
    /// Starts a transaction.
    pub(super) fn mail(&mut self, args: PathArgs) -> Flow {
        if self.helo.is_none() {
            return self.refuse(Rule::NoHello, &[]);
        }
        if self.tx.is_some() {
            return self.refuse(Rule::NestedMail, &[]);
        }
        if !self.ctx.policy.has_room() {
            return self.refuse(Rule::QueueQuota, &[]);
        }
        if !self.clients.message(
            self.peer.ip(),
            self.ctx.config.max_messages_per_client_per_minute,
        ) {
            return self.refuse(Rule::ClientMessageRate, &[&self.peer.ip().to_string()]);
        }
        let mut params = MailParams::default();
        for (key, value) in &args.params {
            if !self.esmtp {
                return self.refuse(Rule::UnsupportedOption, &[key]);
            }
            match (key.as_str(), value.as_deref()) {
                ("SIZE", Some(v)) => {
                    let Ok(size) = v.parse::<u64>() else {
                        return self.refuse(Rule::BadParameter, &["SIZE"]);
                    };
                    if size > self.ctx.config.max_message_size {
                        return self.refuse(Rule::DeclaredSize, &[]);
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
                    if v.len() > 100 || !crate::wire::is_xtext(v) {
                        return self.refuse(Rule::BadParameter, &["ENVID"]);
                    }
                    params.envid = Some(v.to_owned());
                }
                _ => {
                    return self.refuse(Rule::UnsupportedOption, &[key]);
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
                    return self.refuse(Rule::NonAsciiSender, &[]);
                }
                Err(_) => return self.refuse(Rule::BadSender, &[]),
            }
        };
        let Some(memory) = self.ctx.memory.reserve(params.declared_size.unwrap_or(0)) else {
            return self.refuse(Rule::MemoryAtMail, &[]);
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
