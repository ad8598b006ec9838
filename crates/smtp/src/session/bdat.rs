//! BDAT (RFC 3030, CHUNKING): the message in counted chunks instead of DATA.
//!
//! Every chunk's octets are read, whatever the answer, so the session never loses its place in
//! the byte stream: a refused chunk is read and thrown away. The chunks go through the same
//! line checks as DATA (bare CR, bare LF, NUL, line length), without dot-stuffing.

use tracing::{info, warn};

use super::{Flow, Read, Session};
use crate::rule::Rule;
use crate::wire::DataDecoder;
use crate::wire::Reply;
use crate::{MessageQueue, RecipientPolicy};

impl<Q: MessageQueue, P: RecipientPolicy> Session<Q, P> {
    /// Reads one chunk and answers it; the last chunk ends the transaction.
    pub(super) async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        let max = self.ctx.config.max_message_size;
        // What the chunk is for, decided before reading it (its octets follow regardless).
        let refusal = match &self.tx {
            None => Some(Rule::NeedMail),
            Some(tx) if tx.recipients.is_empty() => Some(Rule::NoRecipients),
            Some(_) => None,
        };
        let mut sink = match (&refusal, self.tx.as_mut()) {
            (None, Some(tx)) => tx.chunks.take().unwrap_or_else(|| {
                DataDecoder::new_chunked(
                    usize::try_from(max).unwrap_or(usize::MAX),
                    self.ctx.config.max_line_length,
                )
            }),
            _ => DataDecoder::new_chunked(0, usize::MAX),
        };
        if !self.read_chunk(size, &mut sink).await {
            return Flow::Close;
        }

        if let Some(rule) = refusal {
            // The whole transaction is over for a client that sends chunks out of turn.
            self.tx = None;
            return self.refuse(rule, &[]);
        }
        if self.tx.as_ref().is_some_and(|tx| tx.over_memory) {
            self.tx = None;
            return self.refuse(Rule::MemoryAtEnd, &[]);
        }
        if sink.flaws().too_big {
            self.tx = None;
            return self.refuse(Rule::MessageSize, &[]);
        }
        if !last {
            if let Some(tx) = self.tx.as_mut() {
                tx.chunks = Some(sink);
            }
            return self.ok(Reply::new(250, "2.0.0", format!("{size} octets received")));
        }
        sink.finish_chunked();
        let Some(tx) = self.tx.take() else {
            return Flow::Continue;
        };
        self.finish_message(tx, sink).await
    }

    /// Reads exactly `size` octets into `sink`, within the data deadline. False when the
    /// connection failed or timed out (the session is then over).
    async fn read_chunk(&mut self, size: u64, sink: &mut DataDecoder) -> bool {
        let start = tokio::time::Instant::now();
        let min_rate = self.ctx.config.min_data_rate;
        let mut left = size;
        let mut received: u64 = 0;
        loop {
            let take = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.inbuf.len());
            if take > 0 {
                let chunk = self.inbuf.split_to(take);
                sink.feed(&chunk);
                if let Some(tx) = self.tx.as_mut() {
                    tx.account(sink);
                }
                left -= take as u64;
                received += take as u64;
            }
            if left == 0 {
                return true;
            }
            let timeout = if min_rate == 0 {
                self.ctx.config.data_timeout
            } else {
                let countable = super::wire_bytes_countable(self.ctx.config.max_message_size);
                let allowance = self.ctx.config.data_timeout
                    + std::time::Duration::from_secs_f64(
                        received.min(countable) as f64 / min_rate as f64,
                    );
                (start + allowance).saturating_duration_since(tokio::time::Instant::now())
            };
            let filled = if timeout.is_zero() {
                Read::TimedOut
            } else {
                self.fill(timeout).await
            };
            match filled {
                Read::More => {}
                Read::Closed => {
                    warn!("connection lost during BDAT; nothing queued");
                    return false;
                }
                Read::TimedOut => {
                    info!(received, "BDAT too slow or stalled; nothing queued");
                    self.time_out(Rule::MinDataRate);
                    return false;
                }
            }
        }
    }
}
