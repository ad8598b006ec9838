//! DATA (RFC 5321 §4.1.1.4): receive the message, then commit it before answering.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tracing::{info, warn};

use mxraft_queue::{Enqueue, MessageId};

use super::{Flow, Read, Session};
use crate::rule::Rule;
use crate::wire::DataDecoder;
use crate::wire::Reply;
use crate::{MessageQueue, RecipientPolicy};

impl<Q: MessageQueue, P: RecipientPolicy> Session<Q, P> {
    /// Receives the message and answers only once it is committed (or cannot be).
    pub(super) async fn data(&mut self) -> Flow {
        let Some(tx) = &self.tx else {
            return self.refuse(Rule::NeedMail, &[]);
        };
        if tx.recipients.is_empty() {
            return self.refuse(Rule::NoRecipients, &[]);
        }
        if tx.chunks.is_some() {
            return self.refuse(Rule::DataAfterBdat, &[]);
        }
        if !self.inbuf.is_empty() {
            // The message may only follow our 354 (RFC 2920 §3.1): a client that sent it
            // already is not speaking SMTP, or is trying to smuggle.
            let r = Rule::PipelinedData.reply(&[]);
            self.note(Rule::PipelinedData, &r);
            self.reply(r);
            return Flow::Close;
        }
        self.reply(Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"));

        let max_size = usize::try_from(self.ctx.config.max_message_size).unwrap_or(usize::MAX);
        let mut decoder = DataDecoder::new(max_size, self.ctx.config.max_line_length);
        // Each byte received extends the deadline by 1/min_data_rate seconds: a client that
        // trickles data is cut off at the rate the configuration allows. Bytes past what a
        // message of the largest size can take on the wire extend nothing, so the whole
        // transfer has an overall deadline.
        let start = tokio::time::Instant::now();
        let countable = super::wire_bytes_countable(self.ctx.config.max_message_size);
        let min_rate = self.ctx.config.min_data_rate;
        let mut received: u64 = 0;
        loop {
            if !self.inbuf.is_empty() {
                let end = decoder.feed(&self.inbuf);
                if let Some(tx) = self.tx.as_mut() {
                    tx.account(&mut decoder);
                }
                match end {
                    Some(n) => {
                        self.inbuf.advance(n);
                        break;
                    }
                    None => self.inbuf.clear(),
                }
            }
            let timeout = if min_rate == 0 {
                self.ctx.config.data_timeout
            } else {
                let allowance = self.ctx.config.data_timeout
                    + Duration::from_secs_f64(received.min(countable) as f64 / min_rate as f64);
                (start + allowance).saturating_duration_since(tokio::time::Instant::now())
            };
            let before = self.inbuf.len();
            let filled = if timeout.is_zero() {
                Read::TimedOut
            } else {
                self.fill(timeout).await
            };
            received += self.inbuf.len().saturating_sub(before) as u64;
            match filled {
                Read::More => {}
                Read::Closed => {
                    warn!("connection lost during DATA; nothing queued");
                    return Flow::Close;
                }
                Read::TimedOut => {
                    warn!(received, "DATA too slow or stalled; nothing queued");
                    self.time_out(Rule::MinDataRate);
                    return Flow::Close;
                }
            }
        }

        // The transaction ends here whatever the outcome (RFC 5321 §4.1.1.4).
        let Some(tx) = self.tx.take() else {
            return Flow::Continue;
        };
        self.finish_message(tx, decoder).await
    }

    /// Checks a received message and commits it: the end of DATA, or the last BDAT chunk.
    pub(super) async fn finish_message(
        &mut self,
        tx: super::Transaction,
        decoder: DataDecoder,
    ) -> Flow {
        if tx.over_memory {
            return self.refuse(Rule::MemoryAtEnd, &[]);
        }
        let flaws = decoder.flaws();
        if flaws.too_big {
            return self.refuse(Rule::MessageSize, &[]);
        }
        if flaws.bare_cr_or_lf {
            return self.refuse(Rule::BareNewline, &[]);
        }
        if flaws.nul {
            return self.refuse(Rule::Nul, &[]);
        }
        if flaws.long_line {
            return self.refuse(Rule::LineLength, &[]);
        }

        let message = decoder.into_message();
        let hops = count_received(&message);
        if hops >= self.ctx.config.max_received_headers {
            return self.refuse(Rule::HopCount, &[]);
        }

        let now = self.ctx.queue.now_ms();
        let id = self.ctx.ids.next(now);
        let body = Bytes::from(message);
        let enqueue = Enqueue {
            id,
            received_at_ms: now,
            received_by: self.ctx.node_id,
            trace_header: self.trace_header(id, &tx.recipients, tx.params.smtputf8, now)
                + tx.extra_header.as_deref().unwrap_or(""),
            sender: tx.sender,
            params: tx.params,
            recipients: tx.recipients,
            body,
        };
        let (sender, rcpts, size) = (
            enqueue.sender.clone(),
            enqueue.recipients.len(),
            enqueue.body.len(),
        );
        let to = enqueue
            .recipients
            .iter()
            .map(|(r, _)| r.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let started = std::time::Instant::now();
        match self.ctx.queue.commit(enqueue).await {
            Ok(()) => {
                // The transaction's one line (the session's span adds the client).
                info!(
                    queue_id = %id,
                    from = %sender,
                    to = %to,
                    rcpts,
                    size,
                    helo = self.helo.as_deref().unwrap_or(""),
                    tls = self.tls,
                    commit_ms = started.elapsed().as_millis() as u64,
                    "queued"
                );
                metrics::counter!("mxraft_smtp_messages_queued_total").increment(1);
                metrics::counter!("mxraft_smtp_bytes_queued_total").increment(size as u64);
                self.ok(Reply::new(250, "2.0.0", format!("Ok: queued as {id}")))
            }
            Err(e) => {
                warn!(queue_id = %id, error = %e, "not queued: no commit");
                let r = Rule::NoCommit.reply(&[]);
                self.note(Rule::NoCommit, &r);
                self.reply(r);
                Flow::Continue
            }
        }
    }

    /// The `Received:` header (RFC 5321 §4.4) for a message accepted now.
    fn trace_header(
        &self,
        id: MessageId,
        recipients: &[(String, mxraft_queue::RcptParams)],
        utf8: bool,
        now_ms: u64,
    ) -> String {
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let ip = match self.peer.ip().to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        // RFC 3848 / RFC 6531 protocol names.
        let with = match (self.esmtp, utf8, self.tls) {
            (true, true, true) => "UTF8SMTPS",
            (true, true, false) => "UTF8SMTP",
            (true, false, true) => "ESMTPS",
            (true, false, false) => "ESMTP",
            (false, _, _) => "SMTP",
        };
        let date = chrono::DateTime::from_timestamp_millis(now_ms as i64)
            .unwrap_or_default()
            .to_rfc2822();
        let for_clause = match recipients {
            [(one, _)] => format!("\r\n\tfor <{one}>"),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ([{ip}])\r\n\tby {host} (mxraft) with {with} id {id}{for_clause};\r\n\t{date}\r\n",
            host = self.ctx.hostname
        )
    }
}

/// The number of `Received:` fields in the header section of a message.
fn count_received(message: &[u8]) -> usize {
    message
        .split(|&b| b == b'\n')
        .take_while(|line| !line.is_empty() && *line != b"\r")
        .filter(|line| line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:"))
        .count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_received_headers_in_the_header_section_only() {
        let m = b"Received: a\r\nRECEIVED: b\r\n\tfolded\r\nSubject: x\r\n\r\nReceived: in the body\r\n";
        assert_eq!(super::count_received(m), 2);
        assert_eq!(super::count_received(b"\r\nReceived: x\r\n"), 0);
    }
}
