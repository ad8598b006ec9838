//! Every refusal the front door makes, with its reply, in one table.
//!
//! A [`Rule`] names why something was refused. Its label is what the log line (`rule=`) and
//! the `mxraft_smtp_rejections_total{rule}` metric carry, and what the table in
//! `docs/front-door.md` lists (a test keeps the two in step). Several rules share a label
//! when they are one policy with different replies (`protocol`, `command_line`, `memory`).
//! In a reply text, each `{}` is filled with an argument: the address, the client, the host.

use crate::wire::Reply;

macro_rules! rules {
    ($($(#[$doc:meta])* $rule:ident => $label:literal, $code:literal, $enhanced:literal, $text:literal;)*) => {
        /// Why the front door refused a command, a message or a connection.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Rule {
            $($(#[$doc])* $rule,)*
        }

        impl Rule {
            /// Every rule.
            pub const ALL: &'static [Rule] = &[$(Rule::$rule,)*];

            /// The label in logs and metrics.
            pub fn label(self) -> &'static str {
                match self { $(Rule::$rule => $label,)* }
            }

            /// The reply code; `0` for a rule that answers nothing.
            pub fn code(self) -> u16 {
                match self { $(Rule::$rule => $code,)* }
            }

            /// The enhanced status code (RFC 3463).
            pub fn enhanced(self) -> &'static str {
                match self { $(Rule::$rule => $enhanced,)* }
            }

            /// The reply text, with `{}` where an argument goes.
            pub fn template(self) -> &'static str {
                match self { $(Rule::$rule => $text,)* }
            }
        }
    };
}

rules! {
    /// HELO/EHLO has not been given.
    NoHello => "protocol", 503, "5.5.1", "Error: send HELO/EHLO first";
    /// MAIL inside a transaction.
    NestedMail => "protocol", 503, "5.5.1", "Error: nested MAIL command";
    /// RCPT, DATA or BDAT without MAIL.
    NeedMail => "protocol", 503, "5.5.1", "Error: need MAIL command";
    /// DATA or BDAT without an accepted recipient.
    NoRecipients => "protocol", 554, "5.5.1", "Error: no valid recipients";
    /// DATA after BDAT chunks of the same message.
    DataAfterBdat => "protocol", 503, "5.5.1", "Error: DATA after BDAT in the same transaction";
    /// ETRN inside a transaction.
    TransactionInProgress => "protocol", 503, "5.5.1", "Error: MAIL transaction in progress";
    /// A verb the server does not know.
    UnknownCommand => "protocol", 500, "5.5.2", "Error: command not recognized";
    /// A command with bad syntax (the argument says what).
    Syntax => "protocol", 501, "5.5.4", "{}";
    /// A path that is not `<...>`.
    BadPath => "protocol", 501, "5.1.3", "Bad address syntax";
    /// A recipient that is not a mailbox.
    BadRecipient => "protocol", 501, "5.1.3", "Bad recipient address syntax";
    /// A sender that is not a mailbox.
    BadSender => "protocol", 501, "5.1.7", "Bad sender address syntax";
    /// A parameter with a bad value (the argument names it).
    BadParameter => "protocol", 501, "5.5.4", "Bad {} parameter";
    /// A parameter that is not offered, or given twice.
    UnsupportedOption => "protocol", 555, "5.5.4", "Unsupported option: {}";
    /// A non-ASCII sender without SMTPUTF8.
    NonAsciiSender => "protocol", 553, "5.6.7", "Error: non-ASCII sender address requires SMTPUTF8";
    /// A non-ASCII recipient without SMTPUTF8.
    NonAsciiRecipient => "protocol", 553, "5.6.7", "Error: non-ASCII recipient address requires SMTPUTF8";
    /// VRFY (it would reveal the recipient table).
    Vrfy => "protocol", 502, "5.5.1", "VRFY command is disabled";
    /// A known verb that is not implemented (the argument).
    NotImplemented => "protocol", 502, "5.5.1", "Error: {} not implemented";
    /// STARTTLS without a certificate configured.
    NoStartTls => "protocol", 502, "5.5.1", "Error: STARTTLS not available";
    /// STARTTLS inside TLS.
    TlsActive => "protocol", 503, "5.5.1", "Error: TLS already active";
    /// ETRN for a domain this client may not ask for.
    EtrnNotAllowed => "protocol", 459, "4.7.1", "Node {} not allowed for this client";
    /// ETRN that could not be recorded now.
    EtrnUnavailable => "protocol", 458, "4.3.0", "Unable to queue messages for node {}";
    /// A command line over its length limit.
    LineTooLong => "command_line", 500, "5.5.2", "Error: line too long";
    /// A command line with a bare LF.
    CommandBareLf => "command_line", 500, "5.5.2", "Error: bare <LF> received";
    /// A command line with a bare CR.
    CommandBareCr => "command_line", 500, "5.5.2", "Error: bare <CR> received";
    /// A command line with a NUL byte.
    CommandNul => "command_line", 500, "5.5.2", "Error: NUL byte received";
    /// A command line that is not UTF-8.
    CommandNotUtf8 => "command_line", 500, "5.5.2", "Error: command is not valid UTF-8";
    /// No command within the command timeout (the argument is the host name).
    CommandTimeout => "command_timeout", 421, "4.4.2", "{} Error: timeout exceeded";
    /// DATA or BDAT slower than the minimum rate allows.
    MinDataRate => "min_data_rate", 421, "4.4.2", "{} Error: timeout exceeded";
    /// Too many errors in one session.
    TooManyErrors => "too_many_errors", 421, "4.7.0", "{} Error: too many errors";
    /// The node's queue has stopped (host, reason).
    Unavailable => "unavailable", 421, "4.3.0", "{} Service not available: {}";
    /// The node has as many sessions as it takes.
    Sessions => "sessions", 421, "4.7.0", "{} Error: too many connections, try again later";
    /// One client has as many sessions as it may (host, client).
    ClientSessions => "client_sessions", 421, "4.7.0", "{} Error: too many connections from {}";
    /// A recipient outside the protected domains.
    Relay => "relay", 554, "5.7.1", "<{}>: Relay access denied";
    /// A recipient address that would route onwards (same reply as [`Rule::Relay`]).
    RoutedAddress => "routed_address", 554, "5.7.1", "<{}>: Relay access denied";
    /// A recipient the table or the primary does not know.
    UnknownRecipient => "unknown_recipient", 550, "5.1.1", "<{}>: Recipient address rejected: user unknown";
    /// A recipient that cannot be verified now.
    UnverifiedRecipient => "unverified_recipient", 450, "4.1.1", "<{}>: Recipient address rejected: cannot be verified now, try again later";
    /// A recipient that would be unknown, on a node that is not current.
    NotCurrent => "not_current", 451, "4.3.0", "<{}>: Recipient address not checked: this node is not in contact with its cluster, try again later";
    /// The first attempt of a greylisting triplet.
    Greylist => "greylist", 450, "4.7.1", "<{}>: Recipient address rejected: greylisted, try again later";
    /// A client listed in a DNS blocklist (client, zone).
    Dnsbl => "dnsbl", 554, "5.7.1", "Service unavailable; client [{}] blocked using {}";
    /// SPF `fail` for the sender (the explanation).
    Spf => "spf", 550, "5.7.23", "{}";
    /// More recipients than `smtp.max_recipients`.
    TooManyRecipients => "too_many_recipients", 452, "4.5.3", "Error: too many recipients";
    /// A client over its recipients per minute.
    ClientRecipientRate => "client_recipient_rate", 450, "4.7.1", "Error: too many recipients from {}; slow down";
    /// A client over its messages per minute.
    ClientMessageRate => "client_message_rate", 450, "4.7.1", "Error: too many messages from {}; slow down";
    /// The queue is over its quota or the disk is nearly full.
    QueueQuota => "queue_quota", 452, "4.3.1", "Error: insufficient system storage";
    /// The message memory cannot cover the declared size now.
    MemoryAtMail => "memory", 452, "4.3.1", "Error: insufficient system resources for a message of this size now, try again later";
    /// The message outgrew the message memory while it arrived.
    MemoryAtEnd => "memory", 451, "4.3.1", "Error: insufficient system resources, try again later";
    /// `SIZE=` over the limit.
    DeclaredSize => "message_size", 552, "5.3.4", "Message size exceeds fixed limit";
    /// More data than the limit.
    MessageSize => "message_size", 552, "5.3.4", "Error: message file too big";
    /// A bare CR or LF in the message.
    BareNewline => "bare_newline", 550, "5.5.2", "Error: bare <CR> or <LF> received; lines must end in <CR><LF>";
    /// A NUL byte in the message.
    Nul => "nul", 550, "5.6.0", "Error: message contains NUL bytes";
    /// A message line over the limit.
    LineLength => "line_length", 500, "5.5.2", "Error: message line too long";
    /// Too many `Received:` fields: a mail loop.
    HopCount => "hop_count", 554, "5.4.6", "Error: too many hops (mail loop?)";
    /// The message could not be committed.
    NoCommit => "no_commit", 451, "4.3.0", "Error: queue unavailable, try again later";
    /// Message data sent before the 354.
    PipelinedData => "pipelined_data", 554, "5.5.0", "Error: SMTP protocol synchronization";
    /// Plain-text commands pipelined after STARTTLS: discarded, not answered.
    StartTlsInjection => "starttls_injection", 0, "", "";
}

impl Rule {
    /// The reply, with each `{}` of the text filled from `args` in order.
    pub fn reply(self, args: &[&str]) -> Reply {
        let mut text = String::with_capacity(self.template().len() + 32);
        let mut args = args.iter();
        let mut rest = self.template();
        while let Some(at) = rest.find("{}") {
            text.push_str(&rest[..at]);
            text.push_str(args.next().copied().unwrap_or(""));
            rest = &rest[at + 2..];
        }
        text.push_str(rest);
        Reply::new(self.code(), self.enhanced(), text)
    }

    /// Logs the refusal (with the session's span: the client) and counts it in
    /// `mxraft_smtp_rejections_total{rule}`.
    pub fn note(self, reply: &Reply) {
        tracing::info!(rule = self.label(), reply = %reply, "refused");
        metrics::counter!("mxraft_smtp_rejections_total", "rule" => self.label()).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_fill_the_text_in_order() {
        let r = Rule::Dnsbl.reply(&["192.0.2.7", "bl.test"]);
        assert_eq!(
            r.to_string(),
            "554 5.7.1 Service unavailable; client [192.0.2.7] blocked using bl.test"
        );
        assert_eq!(
            Rule::QueueQuota.reply(&[]).to_string(),
            "452 4.3.1 Error: insufficient system storage"
        );
    }

    #[test]
    fn every_code_has_an_enhanced_code_of_its_class() {
        for rule in Rule::ALL {
            if rule.code() == 0 {
                continue;
            }
            let class = char::from(b'0' + (rule.code() / 100) as u8);
            assert!(
                rule.enhanced().starts_with(class) && rule.enhanced().split('.').count() == 3,
                "{rule:?}: {} {}",
                rule.code(),
                rule.enhanced()
            );
        }
    }

    /// The table in `docs/front-door.md` lists every label with every reply code it has, and
    /// no label the code does not have.
    #[test]
    fn the_documented_table_matches_the_rules() {
        let doc = include_str!("../../../docs/front-door.md");
        let rows: Vec<(String, String)> = doc
            .lines()
            .filter(|l| l.starts_with("| ") && l.ends_with("` |"))
            .filter_map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
                let label = cells.last()?.trim().trim_matches('`').to_owned();
                Some((label, l.to_owned()))
            })
            .collect();
        assert!(!rows.is_empty(), "no table rows found");
        for rule in Rule::ALL {
            let documented: Vec<&String> = rows
                .iter()
                .filter(|(label, _)| label == rule.label())
                .map(|(_, row)| row)
                .collect();
            assert!(!documented.is_empty(), "{} is not documented", rule.label());
            if rule.code() != 0 {
                let reply = format!("{} {}", rule.code(), rule.enhanced());
                assert!(
                    documented.iter().any(|row| row.contains(&reply)),
                    "{rule:?}: no row for {} gives {reply}",
                    rule.label()
                );
            }
        }
        for (label, row) in &rows {
            assert!(
                Rule::ALL.iter().any(|r| r.label() == label),
                "documented rule {label} does not exist: {row}"
            );
        }
    }
}
