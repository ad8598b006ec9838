//! One message's transaction: the envelope (pipelined when offered), the data, and a result
//! per recipient.

use mxraft_queue::BodyType;
use mxraft_smtp::wire::{Reply, encode_data, is_xtext};

use super::{ClientError, Connection, Outgoing, RcptResult};

/// The server's answers to the envelope.
struct Envelope {
    mail: Reply,
    rcpts: Vec<Reply>,
    /// The reply to DATA, when DATA was sent.
    data: Option<Reply>,
}

/// A refusal: permanent for 5xx, temporary otherwise.
fn failed_for(reply: &Reply) -> RcptResult {
    if reply.is_permanent() {
        RcptResult::Failed(reply.summary())
    } else {
        RcptResult::Deferred(reply.summary())
    }
}

impl Connection {
    /// Sends one message and returns the result of every recipient, in order.
    pub async fn send(&mut self, msg: &Outgoing<'_>) -> Result<Vec<RcptResult>, ClientError> {
        let n = msg.recipients.len();
        if let Some(refused) = self.refuse_before_sending(msg) {
            return Ok(vec![refused; n]);
        }
        let envelope = self.exchange_envelope(msg).await?;
        if !envelope.mail.is_positive() {
            if envelope.data.as_ref().is_some_and(|r| r.code == 354) {
                // A server that took DATA despite refusing MAIL gets an empty message.
                self.write(b".\r\n", self.timeouts.data_block, "data")
                    .await?;
                self.read_reply(self.timeouts.data_done, "end of data")
                    .await?;
            }
            self.rset().await?;
            return Ok(vec![failed_for(&envelope.mail); n]);
        }
        let mut results: Vec<Option<RcptResult>> = envelope
            .rcpts
            .iter()
            .map(|r| (!r.is_positive()).then(|| failed_for(r)))
            .collect();
        let accepted = results.iter().any(Option::is_none);
        let outcome = match envelope.data {
            Some(r) if r.code == 354 => Some(self.transfer(msg.content).await?),
            Some(r) => {
                self.rset().await?;
                Some(failed_for(&r))
            }
            None if accepted => return Err(ClientError::Protocol("no reply to DATA".into())),
            None => {
                self.rset().await?;
                None
            }
        };
        if let Some(outcome) = outcome {
            for slot in results.iter_mut().filter(|s| s.is_none()) {
                *slot = Some(outcome.clone());
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(RcptResult::Deferred("4.4.0 no result".into())))
            .collect())
    }

    /// What the primary's extensions rule out before anything is sent.
    fn refuse_before_sending(&self, msg: &Outgoing<'_>) -> Option<RcptResult> {
        let size = msg.content.len() as u64;
        if let Some(limit) = self.ext.size
            && limit > 0
            && size > limit
        {
            return Some(RcptResult::Failed(format!(
                "552 5.3.4 message size {size} exceeds the primary's limit of {limit}"
            )));
        }
        if msg.needs_smtputf8 && !self.ext.smtputf8 {
            return Some(RcptResult::Failed(
                "553 5.6.7 the message needs SMTPUTF8, which the primary does not offer".into(),
            ));
        }
        None
    }

    /// `MAIL FROM` with the parameters the primary offers.
    fn mail_line(&self, msg: &Outgoing<'_>) -> String {
        let mut mail = format!("MAIL FROM:<{}>", msg.sender);
        if self.ext.size.is_some() {
            mail.push_str(&format!(" SIZE={}", msg.content.len()));
        }
        if msg.params.body == BodyType::EightBitMime && self.ext.eight_bit {
            mail.push_str(" BODY=8BITMIME");
        }
        if msg.needs_smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        if self.ext.dsn {
            match msg.params.ret {
                Some(mxraft_queue::Ret::Full) => mail.push_str(" RET=FULL"),
                Some(mxraft_queue::Ret::Headers) => mail.push_str(" RET=HDRS"),
                None => {}
            }
            // DSN parameters are passed on as received (xtext); anything else is not sent.
            if let Some(envid) = msg.params.envid.as_deref().filter(|e| is_xtext(e)) {
                mail.push_str(&format!(" ENVID={envid}"));
            }
        }
        mail
    }

    /// One `RCPT TO` per recipient, with its DSN parameters when the primary offers DSN.
    fn rcpt_lines(&self, msg: &Outgoing<'_>) -> Vec<String> {
        msg.recipients
            .iter()
            .map(|(addr, params)| {
                let mut line = format!("RCPT TO:<{addr}>");
                if self.ext.dsn {
                    if let Some(notify) = params.notify {
                        line.push_str(&format!(" NOTIFY={}", notify.to_param()));
                    }
                    if let Some(orcpt) = params.orcpt.as_deref().filter(|o| is_xtext(o)) {
                        line.push_str(&format!(" ORCPT={orcpt}"));
                    }
                }
                line
            })
            .collect()
    }

    /// MAIL, every RCPT and DATA: in one write with PIPELINING, else one at a time (DATA only
    /// when MAIL and a recipient were accepted).
    async fn exchange_envelope(&mut self, msg: &Outgoing<'_>) -> Result<Envelope, ClientError> {
        let mail = self.mail_line(msg);
        let rcpts = self.rcpt_lines(msg);
        let command = self.timeouts.command;
        if self.ext.pipelining {
            let mut batch = format!("{mail}\r\n");
            for r in &rcpts {
                batch.push_str(r);
                batch.push_str("\r\n");
            }
            batch.push_str("DATA\r\n");
            self.write(batch.as_bytes(), command, "pipelined envelope")
                .await?;
            let mail = self.read_reply(command, "MAIL").await?;
            let mut replies = Vec::with_capacity(rcpts.len());
            for _ in &rcpts {
                replies.push(self.read_reply(command, "RCPT").await?);
            }
            let data = self.read_reply(self.timeouts.data_init, "DATA").await?;
            return Ok(Envelope {
                mail,
                rcpts: replies,
                data: Some(data),
            });
        }
        let mail = self.command(&mail, "MAIL").await?;
        let mut replies = Vec::with_capacity(rcpts.len());
        if mail.is_positive() {
            for r in &rcpts {
                replies.push(self.command(r, "RCPT").await?);
            }
        }
        let data = if replies.iter().any(Reply::is_positive) {
            self.write(b"DATA\r\n", command, "DATA").await?;
            Some(self.read_reply(self.timeouts.data_init, "DATA").await?)
        } else {
            None
        };
        Ok(Envelope {
            mail,
            rcpts: replies,
            data,
        })
    }

    /// After `354`: the message dot-stuffed, then the final dot and its reply. From the dot
    /// on the outcome is in doubt ([`Connection::in_doubt`]) until the reply is read.
    async fn transfer(&mut self, content: &[u8]) -> Result<RcptResult, ClientError> {
        let wire = encode_data(content);
        let (data, dot) = wire.split_at(wire.len() - 3);
        for chunk in data.chunks(64 * 1024) {
            self.write(chunk, self.timeouts.data_block, "message data")
                .await?;
        }
        // The last moment to give up without a possible duplicate: the message is not
        // complete until the dot.
        if let Some(why) = self.cutoff.reason() {
            return Err(ClientError::Cut(why));
        }
        self.write(dot, self.timeouts.data_block, "end of data")
            .await?;
        self.in_doubt = true;
        let done = self
            .read_reply(self.timeouts.data_done, "end of data")
            .await?;
        self.in_doubt = false;
        Ok(if done.is_positive() {
            RcptResult::Delivered(done.summary())
        } else {
            failed_for(&done)
        })
    }
}
