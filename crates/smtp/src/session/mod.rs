//! One SMTP session: reading lines, dispatching verbs, writing replies.
//!
//! Replies are collected and written when the session is about to wait for more input, so a
//! pipelining client (RFC 2920) gets all replies to a group at once, in order. Each verb with
//! state lives in its own file; the trivial ones are answered here.

mod bdat;
mod data;
mod ehlo;
mod etrn;
mod mail;
mod rcpt;
mod starttls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use mxraft_queue::{MailParams, RcptParams};

use crate::command::{self, Command, CommandError};
use crate::rule::Rule;
use crate::server::SmtpContext;
use crate::wire::Reply;
use crate::{MessageQueue, RecipientPolicy};

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
const MAX_COMMAND_LINE: usize = 512;

/// The longest line allowed for a command starting with `start`: 512 octets, plus what the
/// offered extensions add (RFC 1869 §4.1.2): 500 for RCPT (DSN's NOTIFY and ORCPT, RFC 3461
/// §5). MAIL with every parameter we offer fits in 512.
fn command_line_limit(start: &[u8]) -> usize {
    if start
        .get(..4)
        .is_some_and(|verb| verb.eq_ignore_ascii_case(b"RCPT"))
    {
        MAX_COMMAND_LINE + 500
    } else {
        MAX_COMMAND_LINE
    }
}

/// The envelope being built between MAIL and the end of data.
#[derive(Debug)]
pub(crate) struct Transaction {
    pub(crate) sender: String,
    pub(crate) params: MailParams,
    pub(crate) recipients: Vec<(String, RcptParams)>,
    /// The message so far, when it arrives in BDAT chunks.
    pub(crate) chunks: Option<crate::wire::DataDecoder>,
    /// A header field the checks asked to add (e.g. `Received-SPF:`), ending in CRLF.
    pub(crate) extra_header: Option<String>,
    /// The share of the node's message memory this transaction holds.
    pub(crate) memory: crate::memory::Reservation,
    /// The message outgrew what the memory budget could give it; the end of data gets
    /// `451 4.3.1`.
    pub(crate) over_memory: bool,
}

impl Transaction {
    /// Grows the memory reservation to what `decoder` holds. When the budget cannot cover it,
    /// the transaction is marked over its budget and gives back at once what it held (the
    /// decoder drops the message and keeps nothing of the rest), so that the sessions still
    /// within the budget can finish.
    pub(crate) fn account(&mut self, decoder: &mut crate::wire::DataDecoder) {
        if !self.over_memory && !self.memory.grow_to(decoder.held_bytes() as u64) {
            self.over_memory = true;
            decoder.stop_keeping();
            self.memory.release();
        }
    }
}

/// Whether the session goes on after a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

/// How many received DATA/BDAT bytes extend the transfer's deadline: what a message of the
/// largest size can take on the wire (dot-stuffing adds up to one octet per line, so half as
/// much again). Past it the deadline stays put: the transfer has an overall deadline of
/// `data_timeout` plus this many bytes at `min_data_rate`.
fn wire_bytes_countable(max_message_size: u64) -> u64 {
    max_message_size.saturating_add(max_message_size / 2)
}

/// What waiting for the client's bytes gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// More bytes are in the input buffer.
    More,
    /// The connection was closed or failed.
    Closed,
    /// Nothing arrived in time.
    TimedOut,
}

/// What the line reader produced.
enum Input {
    Line(String),
    /// A line the reader refused, by this rule.
    Refused(Rule),
    /// The client closed the connection.
    Closed,
    /// The client was silent for too long.
    TimedOut,
    /// The node is shutting down.
    Shutdown,
}

/// A connection, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) struct Session<Q, P> {
    ctx: Arc<SmtpContext<Q, P>>,
    io: Box<dyn Io>,
    /// The session runs over TLS (after STARTTLS, or on the implicit-TLS port).
    tls: bool,
    /// The session arrived on the implicit-TLS port and has not done its handshake yet.
    tls_pending: bool,
    /// Per-client counters shared by the node's sessions.
    clients: Arc<crate::limits::ClientTracker>,
    peer: SocketAddr,
    inbuf: BytesMut,
    out: Vec<u8>,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: u32,
    shutdown: CancellationToken,
}

impl<Q: MessageQueue, P: RecipientPolicy> Session<Q, P> {
    pub(crate) fn new(
        ctx: Arc<SmtpContext<Q, P>>,
        io: Box<dyn Io>,
        implicit_tls: bool,
        peer: SocketAddr,
        shutdown: CancellationToken,
        clients: Arc<crate::limits::ClientTracker>,
    ) -> Self {
        Session {
            ctx,
            io,
            tls: false,
            tls_pending: implicit_tls,
            clients,
            peer,
            inbuf: BytesMut::with_capacity(8 * 1024),
            out: Vec::with_capacity(1024),
            helo: None,
            esmtp: false,
            tx: None,
            errors: 0,
            shutdown,
        }
    }

    pub(crate) async fn run(mut self) {
        debug!("session opened");
        if self.tls_pending {
            // Implicit TLS (RFC 8314): the handshake comes before the greeting.
            let Some(tls) = self.ctx.tls.clone() else {
                return;
            };
            let plain = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
            match tokio::time::timeout(
                self.ctx.config.command_timeout,
                tls.acceptor().accept(plain),
            )
            .await
            {
                Ok(Ok(stream)) => {
                    self.io = Box::new(stream);
                    self.tls = true;
                }
                _ => {
                    debug!("implicit TLS handshake failed");
                    return;
                }
            }
        }
        let greeting = Reply::new(220, "", format!("{} ESMTP mxraft", self.ctx.hostname));
        self.reply(greeting);
        loop {
            let flow = match self.read_line().await {
                Input::Line(line) => self.dispatch(&line).await,
                Input::Refused(rule) => self.refuse(rule, &[]),
                Input::Closed => Flow::Close,
                Input::TimedOut => {
                    self.time_out(Rule::CommandTimeout);
                    Flow::Close
                }
                Input::Shutdown => {
                    let r = Reply::new(
                        421,
                        "4.3.2",
                        format!("{} Service shutting down", self.ctx.hostname),
                    );
                    self.reply(r);
                    Flow::Close
                }
            };
            if flow == Flow::Close {
                break;
            }
        }
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
        debug!("session closed");
    }

    async fn dispatch(&mut self, line: &str) -> Flow {
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(CommandError::Unknown) => {
                return self.refuse(Rule::UnknownCommand, &[]);
            }
            Err(CommandError::Syntax(syntax)) => {
                return self.refuse(Rule::Syntax, &[syntax]);
            }
            Err(CommandError::BadPath) => {
                return self.refuse(Rule::BadPath, &[]);
            }
        };
        match cmd {
            Command::Ehlo(name) => self.ehlo(name, true),
            Command::Helo(name) => self.ehlo(name, false),
            Command::Mail(args) => self.mail(args),
            Command::Rcpt(args) => self.rcpt(args).await,
            Command::Data => self.data().await,
            Command::Rset => {
                self.tx = None;
                self.ok(Reply::new(250, "2.0.0", "Ok"))
            }
            Command::Noop => self.ok(Reply::new(250, "2.0.0", "Ok")),
            Command::Quit => {
                self.reply(Reply::new(221, "2.0.0", "Bye"));
                Flow::Close
            }
            Command::Vrfy => self.refuse(Rule::Vrfy, &[]),
            Command::Help => self.ok(Reply::new(214, "2.0.0", "See RFC 5321")),
            Command::Etrn(node) => self.etrn(node).await,
            Command::StartTls => self.starttls().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::NotImplemented(verb) => self.refuse(Rule::NotImplemented, &[&verb]),
        }
    }

    /// Logs, counts and tells a refusal of this session's client ([`SmtpContext::note`]).
    pub(crate) fn note(&self, rule: Rule, reply: &Reply) {
        self.ctx.note(rule, reply, self.peer.ip());
    }

    /// Queues a reply for the client.
    pub(crate) fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.out);
    }

    /// Queues a success reply.
    pub(crate) fn ok(&mut self, reply: Reply) -> Flow {
        self.reply(reply);
        Flow::Continue
    }

    /// Tells a client that was too slow (by `rule`) that the session ends; the caller closes.
    pub(crate) fn time_out(&mut self, rule: Rule) {
        let r = rule.reply(&[&self.ctx.hostname]);
        self.note(rule, &r);
        self.reply(r);
    }

    /// Refuses something by `rule`, its reply filled from `args`: logged with the client (the
    /// session's span), the rule and the reply, counted in
    /// `mxraft_smtp_rejections_total{rule}`. Too many errors end the session.
    pub(crate) fn refuse(&mut self, rule: Rule, args: &[&str]) -> Flow {
        let reply = rule.reply(args);
        self.note(rule, &reply);
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.ctx.config.max_errors {
            let r = Rule::TooManyErrors.reply(&[&self.ctx.hostname]);
            self.note(Rule::TooManyErrors, &r);
            self.reply(r);
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.io.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Writes pending replies, then waits (at most `timeout`) for more bytes.
    async fn fill(&mut self, timeout: Duration) -> Read {
        if self.flush().await.is_err() {
            return Read::Closed;
        }
        self.inbuf.reserve(16 * 1024);
        match tokio::time::timeout(timeout, self.io.read_buf(&mut self.inbuf)).await {
            Err(_) => Read::TimedOut,
            Ok(Ok(0)) | Ok(Err(_)) => Read::Closed,
            Ok(Ok(_)) => Read::More,
        }
    }

    /// Reads one command line. Bare CR, bare LF, NUL, bytes that are not UTF-8 and over-long
    /// lines (see [`command_line_limit`]) are refused here, before parsing.
    async fn read_line(&mut self) -> Input {
        let mut discarding = false;
        // The whole line must arrive within the command timeout: trickling one byte at a time
        // does not keep a session alive.
        let deadline = tokio::time::Instant::now() + self.ctx.config.command_timeout;
        loop {
            if let Some(lf) = self.inbuf.iter().position(|&b| b == b'\n') {
                let line = self.inbuf.split_to(lf + 1);
                if discarding || line.len() > command_line_limit(&line) {
                    return Input::Refused(Rule::LineTooLong);
                }
                let Some(content) = line.strip_suffix(b"\r\n") else {
                    return Input::Refused(Rule::CommandBareLf);
                };
                if content.contains(&b'\r') {
                    return Input::Refused(Rule::CommandBareCr);
                }
                if content.contains(&0) {
                    return Input::Refused(Rule::CommandNul);
                }
                return match std::str::from_utf8(content) {
                    Ok(s) => Input::Line(s.to_owned()),
                    Err(_) => Input::Refused(Rule::CommandNotUtf8),
                };
            }
            if discarding || self.inbuf.len() > command_line_limit(&self.inbuf) {
                // Drop what we have of the over-long line and keep reading until its end.
                discarding = true;
                let keep = usize::from(self.inbuf.last() == Some(&b'\r'));
                self.inbuf.advance(self.inbuf.len() - keep);
            }
            let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
            if timeout.is_zero() {
                return Input::TimedOut;
            }
            let shutdown = self.shutdown.clone();
            let filled = tokio::select! {
                _ = shutdown.cancelled() => return Input::Shutdown,
                r = self.fill(timeout) => r,
            };
            match filled {
                Read::More => {}
                Read::Closed => return Input::Closed,
                Read::TimedOut => return Input::TimedOut,
            }
        }
    }
}
