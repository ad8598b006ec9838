//! The accept loop: one task per connection, a session limit, and an orderly shutdown.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::config::SmtpConfig;
use crate::policy::DomainPolicy;
use crate::rule::Rule;
use crate::session::{Io, Session};
use crate::{IdGenerator, MessageQueue, RecipientPolicy};

/// Everything a session needs, shared by all sessions of a node.
pub struct SmtpContext<Q, P> {
    /// The `[smtp]` configuration.
    pub config: SmtpConfig,
    /// The name this node gives itself.
    pub hostname: String,
    /// The protected domains (relay control).
    pub domains: DomainPolicy,
    /// Where accepted messages go.
    pub queue: Q,
    /// What is checked before mail is taken.
    pub policy: P,
    /// Queue ids.
    pub ids: IdGenerator,
    /// This node's id, recorded with each message.
    pub node_id: u64,
    /// The TLS configuration, when STARTTLS is offered.
    pub tls: Option<Arc<crate::tls::TlsStore>>,
    /// The node-wide budget of message bytes held by sessions.
    pub memory: crate::memory::MessageMemory,
    /// Every refusal is told here too, for `mxraftctl events watch` (nobody listening costs
    /// nothing).
    pub refusals: tokio::sync::broadcast::Sender<mxraft_queue::Refusal>,
}

impl<Q: MessageQueue, P> SmtpContext<Q, P> {
    /// Logs and counts a refusal by `rule` of `client` ([`Rule::note`]) and tells it to the
    /// watchers of [`SmtpContext::refusals`].
    pub(crate) fn note(&self, rule: Rule, reply: &crate::wire::Reply, client: std::net::IpAddr) {
        rule.note(reply);
        if self.refusals.receiver_count() > 0 {
            let _ = self.refusals.send(mxraft_queue::Refusal {
                at_ms: self.queue.now_ms(),
                client,
                rule: rule.label(),
                reply: reply.to_string(),
            });
        }
    }
}

/// Serves SMTP on `listener` until `shutdown` is cancelled, then lets sessions finish their
/// current transaction for up to `shutdown_grace` and closes the rest.
pub async fn serve<Q: MessageQueue, P: RecipientPolicy>(
    listener: TcpListener,
    tls_listener: Option<TcpListener>,
    ctx: Arc<SmtpContext<Q, P>>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ctx.config.max_sessions));
    let clients = Arc::new(crate::limits::ClientTracker::default());
    let mut sessions = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            accepted = accept(&listener, tls_listener.as_ref()) => accepted,
        };
        let ((mut stream, peer), implicit_tls) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let host = ctx.hostname.as_str();
        if let Some(why) = ctx.queue.unavailable() {
            refuse_connection(&ctx, &mut stream, peer, Rule::Unavailable, &[host, &why]).await;
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse_connection(&ctx, &mut stream, peer, Rule::Sessions, &[host]).await;
            continue;
        };
        if !clients.open(peer.ip(), ctx.config.max_sessions_per_client) {
            let client = peer.ip().to_string();
            refuse_connection(
                &ctx,
                &mut stream,
                peer,
                Rule::ClientSessions,
                &[host, &client],
            )
            .await;
            continue;
        }
        metrics::counter!("mxraft_smtp_sessions_total").increment(1);
        metrics::gauge!("mxraft_smtp_sessions_active").increment(1.0);
        let session = Session::new(
            ctx.clone(),
            Box::new(stream),
            implicit_tls,
            peer,
            shutdown.clone(),
            clients.clone(),
        );
        let held = SessionSlot {
            _slot: slot,
            clients: clients.clone(),
            client: peer.ip(),
        };
        sessions.spawn(
            async move {
                // The slot is given back when the task ends, however it ends.
                let _held = held;
                session.run().await;
            }
            .instrument(info_span!("smtp", client = %peer)),
        );
    }
    drop(listener);
    drop(tls_listener);
    if !sessions.is_empty() {
        info!(
            sessions = sessions.len(),
            "waiting for SMTP sessions to finish"
        );
        let drained = tokio::time::timeout(ctx.config.shutdown_grace, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                sessions = sessions.len(),
                "closing SMTP sessions that did not finish"
            );
            sessions.shutdown().await;
        }
    }
}

/// Serves one SMTP session over `io`, a connection from `peer` already accepted (plain text;
/// STARTTLS is offered when `ctx` has TLS), until the client quits or `shutdown` is
/// cancelled. The node-wide session limits are [`serve`]'s: this entry does not count them.
pub async fn serve_connection<Q, P, S>(
    io: S,
    peer: std::net::SocketAddr,
    ctx: Arc<SmtpContext<Q, P>>,
    shutdown: CancellationToken,
) where
    Q: MessageQueue,
    P: RecipientPolicy,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let clients = Arc::new(crate::limits::ClientTracker::default());
    let io: Box<dyn Io> = Box::new(io);
    Session::new(ctx, io, false, peer, shutdown, clients)
        .run()
        .instrument(info_span!("smtp", client = %peer))
        .await;
}

/// Answers a connection that is not taken with `rule`'s reply, logged and counted.
async fn refuse_connection<Q: MessageQueue, P>(
    ctx: &SmtpContext<Q, P>,
    stream: &mut tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    rule: Rule,
    args: &[&str],
) {
    let reply = rule.reply(args);
    info_span!("smtp", client = %peer).in_scope(|| ctx.note(rule, &reply, peer.ip()));
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let _ = stream.write_all(&out).await;
}

/// A session's share of the limits (`max_sessions`, `max_sessions_per_client`), given back on
/// drop: a session that panics or is aborted at shutdown frees its slot too.
struct SessionSlot {
    _slot: tokio::sync::OwnedSemaphorePermit,
    clients: Arc<crate::limits::ClientTracker>,
    client: IpAddr,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.clients.close(self.client);
        metrics::gauge!("mxraft_smtp_sessions_active").decrement(1.0);
    }
}

/// The next connection on either listener, and whether it came to the implicit-TLS one.
async fn accept(
    plain: &TcpListener,
    tls: Option<&TcpListener>,
) -> std::io::Result<((tokio::net::TcpStream, std::net::SocketAddr), bool)> {
    match tls {
        None => plain.accept().await.map(|a| (a, false)),
        Some(tls) => tokio::select! {
            a = plain.accept() => a.map(|a| (a, false)),
            a = tls.accept() => a.map(|a| (a, true)),
        },
    }
}
