//! Delivery status notifications (RFC 3464), rendered from the queue state.
//!
//! A DSN is itself a queued message: null sender, one recipient (the original sender), and a
//! `multipart/report; report-type=delivery-status` body with a human-readable part, the
//! `message/delivery-status` part and the original message or its header section.

use crate::id::MessageId;
use crate::message::{Message, Ret};

/// Which kind of notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnKind {
    /// Recipients failed for good.
    Failure,
    /// Recipients are still being retried after a long time.
    Delay,
}

/// Everything a DSN needs besides the message.
pub struct DsnContext<'a> {
    /// The id the DSN gets in the queue.
    pub dsn_id: MessageId,
    /// The host name the DSN is signed with.
    pub reporting_mta: &'a str,
    /// When it is issued, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

fn rfc2822(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc2822()
}

/// The enhanced status code in a reply such as `550 5.1.1 user unknown`, if it has one.
pub fn enhanced_status(reply: &str) -> Option<&str> {
    let rest = reply.trim_start();
    let rest = match rest.get(..3) {
        Some(code) if code.bytes().all(|b| b.is_ascii_digit()) => {
            rest[3..].trim_start_matches([' ', '-'])
        }
        _ => rest,
    };
    let word = rest.split_whitespace().next()?;
    let parts: Vec<&str> = word.split('.').collect();
    let valid = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    valid.then_some(word)
}

/// Renders the body of a DSN about the recipients of `message` at `indexes`. `reasons[i]` is
/// the diagnostic of `indexes[i]`; `content` is the original message (trace header and body)
/// when it could be read.
pub fn render(
    kind: DsnKind,
    message: &Message,
    indexes: &[usize],
    reasons: &[String],
    content: Option<&[u8]>,
    ctx: &DsnContext<'_>,
) -> Vec<u8> {
    let boundary = format!("{}/{}", ctx.dsn_id, ctx.reporting_mta);
    let parts = Parts {
        kind,
        message,
        indexes,
        reasons,
        ctx,
        boundary: &boundary,
    };
    let mut out = header_part(kind, message, ctx, &boundary);
    parts.human(&mut out);
    parts.status(&mut out);
    let mut body = out.into_bytes();
    returned_part(&mut body, message, content, &boundary);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// The header section of the DSN message.
fn header_part(kind: DsnKind, message: &Message, ctx: &DsnContext<'_>, boundary: &str) -> String {
    let mta = ctx.reporting_mta;
    let subject = match kind {
        DsnKind::Failure => "Undelivered Mail Returned to Sender",
        DsnKind::Delay => "Delayed Mail (still being retried)",
    };
    let mut out = String::with_capacity(2048);
    out.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{mta}>\r\n"
    ));
    out.push_str(&format!("To: <{}>\r\n", message.sender));
    out.push_str(&format!("Subject: {subject}\r\n"));
    out.push_str(&format!("Date: {}\r\n", rfc2822(ctx.at_ms)));
    out.push_str(&format!("Message-ID: <{}@{mta}>\r\n", ctx.dsn_id));
    out.push_str("Auto-Submitted: auto-replied\r\n");
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n"
    ));
    out.push_str("\r\nThis is a MIME-encapsulated delivery status notification.\r\n\r\n");
    out
}

/// What the parts of one DSN are made from.
struct Parts<'a> {
    kind: DsnKind,
    message: &'a Message,
    indexes: &'a [usize],
    reasons: &'a [String],
    ctx: &'a DsnContext<'a>,
    boundary: &'a str,
}

impl Parts<'_> {
    /// The part for people: what happened, and each recipient's reason.
    fn human(&self, out: &mut String) {
        let boundary = self.boundary;
        let human = match self.kind {
            DsnKind::Failure => {
                "Your message could not be delivered to one or more recipients.\r\n\
             The reasons are below; the delivery report and your message are attached."
            }
            DsnKind::Delay => {
                "Your message has not been delivered yet to the recipients below.\r\n\
             Delivery is still being retried; you do not need to send it again."
            }
        };
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        ));
        out.push_str(&format!(
            "This is the mail system at host {}.\r\n\r\n{human}\r\n\r\n",
            self.ctx.reporting_mta
        ));
        for (i, &index) in self.indexes.iter().enumerate() {
            let rcpt = &self.message.recipients[index];
            out.push_str(&format!("<{}>: {}\r\n", rcpt.address, self.reasons[i]));
        }
        out.push_str("\r\n");
    }

    /// The `message/delivery-status` part (RFC 3464): per message, then per recipient.
    fn status(&self, out: &mut String) {
        let boundary = self.boundary;
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        ));
        out.push_str(&format!(
            "Reporting-MTA: dns; {}\r\n",
            self.ctx.reporting_mta
        ));
        if let Some(envid) = &self.message.params.envid {
            out.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
        }
        out.push_str(&format!(
            "Arrival-Date: {}\r\n",
            rfc2822(self.message.received_at_ms)
        ));
        let (action, default_status) = match self.kind {
            DsnKind::Failure => ("failed", "5.0.0"),
            DsnKind::Delay => ("delayed", "4.0.0"),
        };
        for (i, &index) in self.indexes.iter().enumerate() {
            let rcpt = &self.message.recipients[index];
            let reason = &self.reasons[i];
            let status = enhanced_status(reason).unwrap_or(default_status);
            out.push_str("\r\n");
            out.push_str(&format!("Final-Recipient: rfc822; {}\r\n", rcpt.address));
            if let Some(orcpt) = &rcpt.params.orcpt {
                out.push_str(&format!("Original-Recipient: {orcpt}\r\n"));
            }
            out.push_str(&format!("Action: {action}\r\nStatus: {status}\r\n"));
            let is_smtp = reason
                .get(..3)
                .is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit()));
            let diag_type = if is_smtp { "smtp" } else { "x-mxraft" };
            // A diagnostic is one header field: fold any line breaks away.
            let diag = reason.replace(['\r', '\n'], " ");
            out.push_str(&format!("Diagnostic-Code: {diag_type}; {diag}\r\n"));
            out.push_str(&format!(
                "Last-Attempt-Date: {}\r\n",
                rfc2822(self.ctx.at_ms)
            ));
        }
        out.push_str("\r\n");
    }
}

/// The returned message: whole with `RET=FULL`, else its header section.
fn returned_part(body: &mut Vec<u8>, message: &Message, content: Option<&[u8]>, boundary: &str) {
    let Some(content) = content else {
        return;
    };
    let (kind, returned) = if message.params.ret == Some(Ret::Full) {
        ("message/rfc822", content)
    } else {
        let end = content
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 2)
            .unwrap_or(content.len());
        ("text/rfc822-headers", &content[..end])
    };
    body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {kind}\r\n\r\n").as_bytes());
    body.extend_from_slice(returned);
    if !returned.ends_with(b"\r\n") {
        body.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_enhanced_status_codes() {
        assert_eq!(
            enhanced_status("550 5.1.1 <u@x>: user unknown"),
            Some("5.1.1")
        );
        assert_eq!(enhanced_status("451-4.3.0 try later"), Some("4.3.0"));
        assert_eq!(enhanced_status("4.4.7 message expired"), Some("4.4.7"));
        assert_eq!(enhanced_status("550 user unknown"), None);
        assert_eq!(enhanced_status("connection refused"), None);
    }
}
