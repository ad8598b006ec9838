//! RCPT TO (RFC 5321 §4.1.1.3) with the DSN parameters NOTIFY and ORCPT (RFC 3461): only
//! recipients in protected domains are accepted.

use mxraft_queue::{Notify, RcptParams};

use super::{Flow, Session};
use crate::address::{AddressError, parse_mailbox, parse_mailbox_utf8};
use crate::command::PathArgs;
use crate::rule::Rule;
use crate::wire::Reply;
use crate::{MessageQueue, RcptCheck, RecipientPolicy};

fn parse_notify(v: &str) -> Option<Notify> {
    if v.eq_ignore_ascii_case("NEVER") {
        return Some(Notify::NEVER);
    }
    let mut n = Notify::default();
    for word in v.split(',') {
        match word.to_ascii_uppercase().as_str() {
            "SUCCESS" => n.success = true,
            "FAILURE" => n.failure = true,
            "DELAY" => n.delay = true,
            _ => return None,
        }
    }
    Some(n)
}

/// `ORCPT=addr-type;xtext` (RFC 3461 §4.2).
fn valid_orcpt(v: &str) -> bool {
    match v.split_once(';') {
        Some((kind, addr)) => {
            !kind.is_empty()
                && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && crate::wire::is_xtext(addr)
        }
        None => false,
    }
}

impl<Q: MessageQueue, P: RecipientPolicy> Session<Q, P> {
    /// Adds a recipient to the transaction.
    pub(super) async fn rcpt(&mut self, args: PathArgs) -> Flow {
        let Some(tx) = &self.tx else {
            return self.refuse(Rule::NeedMail, &[]);
        };
        if tx.recipients.len() >= self.ctx.config.max_recipients {
            return self.refuse(Rule::TooManyRecipients, &[]);
        }
        let utf8 = tx.params.smtputf8;
        let params = match rcpt_params(&args, self.esmtp) {
            Ok(p) => p,
            Err((rule, arg)) => return self.refuse(rule, &[&arg]),
        };
        let parsed = if utf8 {
            parse_mailbox_utf8(&args.address)
        } else {
            parse_mailbox(&args.address)
        };
        let mailbox = match parsed {
            Ok(m) => m,
            Err(AddressError::SourceRoute) => {
                return self.refuse(Rule::RoutedAddress, &[&args.address]);
            }
            Err(AddressError::NonAscii) => {
                return self.refuse(Rule::NonAsciiRecipient, &[]);
            }
            Err(_) => return self.refuse(Rule::BadRecipient, &[]),
        };
        if mailbox.is_routed() {
            // Percent hack, bang path, quoted `@` or address literal: would route onwards.
            return self.refuse(Rule::RoutedAddress, &[&args.address]);
        }
        if !self.ctx.domains.accepts(&mailbox) {
            return self.refuse(Rule::Relay, &[&args.address]);
        }
        let address = mailbox.address();
        let sender = self
            .tx
            .as_ref()
            .map(|t| t.sender.clone())
            .unwrap_or_default();
        let helo = self.helo.clone().unwrap_or_default();
        let verdict = self
            .ctx
            .policy
            .check_recipient(self.peer.ip(), &helo, &sender, &address.to_lowercase())
            .await;
        if let Some(flow) = self.apply_verdict(verdict, &args.address) {
            return flow;
        }
        // The same recipient twice in one transaction is accepted once: queued twice, the
        // primary would get the message twice.
        if self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.recipients.iter().any(|(a, _)| *a == address))
        {
            tracing::debug!(rcpt = %address, "duplicate recipient accepted once");
            return self.ok(Reply::new(250, "2.1.5", "Ok"));
        }
        if !self.clients.recipient(
            self.peer.ip(),
            self.ctx.config.max_recipients_per_client_per_minute,
        ) {
            return self.refuse(Rule::ClientRecipientRate, &[&self.peer.ip().to_string()]);
        }
        if let Some(tx) = &mut self.tx {
            tx.recipients.push((address, params));
        }
        self.ok(Reply::new(250, "2.1.5", "Ok"))
    }

    /// Acts on the policy's verdict: `None` when the recipient is accepted (a header field it
    /// asks for is kept for the message), else the refusal.
    fn apply_verdict(&mut self, verdict: RcptCheck, address: &str) -> Option<Flow> {
        let (rule, arg) = match verdict {
            RcptCheck::Accept => return None,
            RcptCheck::AcceptTagged(field) => {
                if let Some(tx) = self.tx.as_mut()
                    && tx.extra_header.is_none()
                {
                    tx.extra_header = Some(field);
                }
                return None;
            }
            RcptCheck::Blocked(zone) => {
                let client = self.peer.ip().to_string();
                return Some(self.refuse(Rule::Dnsbl, &[&client, &zone]));
            }
            RcptCheck::NotCurrent(why) => {
                tracing::info!(rcpt = %address, reason = %why, "recipient not checked: this node is not current");
                (Rule::NotCurrent, address.to_owned())
            }
            RcptCheck::SpfFail(why) => (Rule::Spf, why),
            RcptCheck::Unknown => (Rule::UnknownRecipient, address.to_owned()),
            RcptCheck::Greylisted => (Rule::Greylist, address.to_owned()),
            RcptCheck::TryLater => (Rule::UnverifiedRecipient, address.to_owned()),
        };
        Some(self.refuse(rule, &[&arg]))
    }
}

/// The RCPT parameters (NOTIFY and ORCPT, with EHLO only), or the rule that refuses them and
/// its argument.
fn rcpt_params(args: &PathArgs, esmtp: bool) -> Result<RcptParams, (Rule, String)> {
    let mut params = RcptParams::default();
    for (key, value) in &args.params {
        match (key.as_str(), value.as_deref()) {
            ("NOTIFY", Some(v)) if esmtp && params.notify.is_none() => match parse_notify(v) {
                Some(n) => params.notify = Some(n),
                None => return Err((Rule::BadParameter, "NOTIFY".into())),
            },
            ("ORCPT", Some(v)) if esmtp && params.orcpt.is_none() => {
                if v.len() > 500 || !valid_orcpt(v) {
                    return Err((Rule::BadParameter, "ORCPT".into()));
                }
                params.orcpt = Some(v.to_owned());
            }
            _ => return Err((Rule::UnsupportedOption, key.clone())),
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_and_orcpt() {
        assert_eq!(parse_notify("never"), Some(Notify::NEVER));
        assert_eq!(
            parse_notify("SUCCESS,DELAY"),
            Some(Notify {
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(parse_notify("NEVER,SUCCESS"), None);
        assert_eq!(parse_notify("SOMETIMES"), None);
        assert!(valid_orcpt("rfc822;user+40example.test@x"));
        assert!(!valid_orcpt("user@x"));
    }
}
