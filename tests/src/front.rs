//! A front door for SMTP session tests: the real session and server over a recording queue
//! and a policy that answers by the recipient's local part.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use mxraft_queue::Enqueue;
use mxraft_smtp::{
    CommitError, DomainPolicy, EtrnReply, IdGenerator, MessageQueue, RcptCheck, RecipientPolicy,
    SmtpConfig, SmtpContext,
};

use crate::smtp::Client;

/// Records what it is given; fails every submission when `fail` is set.
#[derive(Clone, Default)]
pub struct Recorder {
    /// What was committed.
    pub queued: Arc<Mutex<Vec<Enqueue>>>,
    /// Fail every commit.
    pub fail: bool,
    /// Answer that the queue has no room.
    pub full: bool,
}

impl MessageQueue for Recorder {
    fn now_ms(&self) -> u64 {
        mxraft_cluster::now_ms()
    }

    async fn commit(&self, message: Enqueue) -> Result<(), CommitError> {
        if self.fail {
            return Err(CommitError("no quorum".into()));
        }
        self.queued
            .lock()
            .map_err(|e| CommitError(e.to_string()))?
            .push(message);
        Ok(())
    }

    async fn flush_destination(&self, domain: &str) -> EtrnReply {
        match domain {
            "example.test" => EtrnReply::Started,
            _ => EtrnReply::NothingQueued,
        }
    }
}

/// Answers by the recipient's local part: `unknown…` is unknown, `later…` cannot be decided
/// now; everyone else is accepted. ETRN is allowed from loopback only.
impl RecipientPolicy for Recorder {
    fn has_room(&self) -> bool {
        !self.full
    }

    async fn check_recipient(
        &self,
        _client: std::net::IpAddr,
        _helo: &str,
        _sender: &str,
        address: &str,
    ) -> RcptCheck {
        if address.starts_with("unknown") {
            RcptCheck::Unknown
        } else if address.starts_with("later") {
            RcptCheck::TryLater
        } else {
            RcptCheck::Accept
        }
    }

    async fn may_etrn(&self, client: std::net::IpAddr, _domain: &str) -> bool {
        client.is_loopback()
    }
}

impl Recorder {
    /// The messages committed so far.
    pub fn messages(&self) -> Vec<Enqueue> {
        self.queued.lock().map(|q| q.clone()).unwrap_or_default()
    }
}

/// A front door serving on a port of its own; stopped when dropped.
pub struct Front {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it was given.
    pub recorder: Recorder,
    stop: CancellationToken,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A front door with `config`; every commit fails when `fail` is set.
pub async fn front(config: SmtpConfig, fail: bool) -> Front {
    front_with_tls(config, fail, None).await
}

/// The context of a test front door: domains `example.test` and `Other.Example.`, node 7.
pub fn context(
    config: SmtpConfig,
    recorder: &Recorder,
    tls: Option<Arc<mxraft_smtp::TlsStore>>,
) -> Arc<SmtpContext<Recorder, Recorder>> {
    let memory = config.max_message_memory;
    Arc::new(SmtpContext {
        config,
        hostname: "mx.test".into(),
        domains: DomainPolicy::new(["example.test", "Other.Example."]),
        queue: recorder.clone(),
        policy: recorder.clone(),
        ids: IdGenerator::new(7),
        node_id: 7,
        tls,
        memory: mxraft_smtp::memory::MessageMemory::new(memory),
        refusals: tokio::sync::broadcast::channel(64).0,
    })
}

/// [`front`], offering STARTTLS with `tls`.
pub async fn front_with_tls(
    config: SmtpConfig,
    fail: bool,
    tls: Option<Arc<mxraft_smtp::TlsStore>>,
) -> Front {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let recorder = Recorder {
        fail,
        ..Recorder::default()
    };
    let ctx = context(config, &recorder, tls);
    let stop = CancellationToken::new();
    tokio::spawn(mxraft_smtp::serve(listener, None, ctx, stop.clone()));
    Front {
        addr,
        recorder,
        stop,
    }
}

/// A front door with the default configuration.
pub async fn default_front() -> Front {
    front(SmtpConfig::default(), false).await
}

/// Sends `line` and checks the reply code.
pub async fn expect_code(c: &mut Client, line: &str, code: u16) {
    let r = c
        .command(line)
        .await
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(r.code, code, "{line}: {r:?}");
}

/// Connects and says EHLO, which must get 250.
pub async fn ehlo(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr).await.expect("connect");
    assert_eq!(c.command("EHLO client.test").await.expect("ehlo").code, 250);
    c
}
