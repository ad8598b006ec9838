//! What the queue state tests share: a queue fed one command at a time, and builders of
//! commands. Each test binary uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;

use bytes::Bytes;
use mxraft_queue::{
    AttemptOutcome, BodyError, Change, CommandResult, Enqueue, MailParams, MessageId,
    MessageReport, QueueCommand, QueueState, RcptParams, Report,
};

pub const T0: u64 = 1_800_000_000_000;
pub const MIN: u64 = 60_000;

pub fn no_bodies(_: MessageId) -> Result<Option<Bytes>, BodyError> {
    Ok(None)
}

pub struct Q {
    pub state: QueueState,
    pub index: u64,
    pub bodies: HashMap<MessageId, Bytes>,
}

impl Q {
    pub fn new() -> Q {
        Q {
            state: QueueState::new(),
            index: 0,
            bodies: HashMap::new(),
        }
    }

    pub fn apply(&mut self, cmd: QueueCommand) -> mxraft_queue::Applied {
        self.index += 1;
        let bodies = self.bodies.clone();
        let lookup = move |id: MessageId| Ok(bodies.get(&id).cloned());
        let out = self
            .state
            .apply(self.index, cmd, &lookup)
            .expect("every body is readable");
        for c in &out.changes {
            if let Change::Inserted {
                id,
                trace_header,
                body,
            } = c
            {
                self.bodies
                    .insert(*id, [trace_header.as_bytes(), body].concat().into());
            }
        }
        out
    }

    pub fn enqueue(&mut self, id: MessageId, sender: &str, rcpts: &[(&str, RcptParams)]) {
        let out = self.apply(QueueCommand::Enqueue(enqueue(id, sender, rcpts)));
        assert_eq!(
            out.result,
            CommandResult::Enqueued {
                id,
                duplicate: false
            }
        );
    }

    pub fn claim(
        &mut self,
        ids: &[MessageId],
        node: u64,
        dest: &str,
        at: u64,
    ) -> (u64, Vec<MessageId>) {
        match self
            .apply(QueueCommand::Claim {
                ids: ids.to_vec(),
                node,
                destination: dest.into(),
                at_ms: at,
                lease_ms: MIN,
            })
            .result
        {
            CommandResult::Claimed { token, granted } => (token, granted),
            other => panic!("unexpected {other:?}"),
        }
    }
}

pub fn id(n: u64) -> MessageId {
    MessageId::new(T0, 1, n)
}

pub fn plain(addr: &str) -> (&str, RcptParams) {
    (addr, RcptParams::default())
}

pub fn enqueue(id: MessageId, sender: &str, rcpts: &[(&str, RcptParams)]) -> Enqueue {
    Enqueue {
        id,
        received_at_ms: T0,
        received_by: 1,
        sender: sender.into(),
        params: MailParams::default(),
        recipients: rcpts
            .iter()
            .map(|(a, p)| (a.to_string(), p.clone()))
            .collect(),
        trace_header: "Received: test\r\n".into(),
        body: Bytes::from_static(b"Subject: hello\r\nMessage-ID: <m1@sender.test>\r\n\r\nbody\r\n"),
    }
}

pub fn report(
    token: u64,
    at: u64,
    results: Vec<(MessageId, Vec<(u32, AttemptOutcome)>)>,
) -> QueueCommand {
    QueueCommand::Report(Report {
        token,
        at_ms: at,
        reporting_mta: "mx.backup.test".into(),
        messages: results
            .into_iter()
            .map(|(id, recipients)| MessageReport { id, recipients })
            .collect(),
    })
}

pub fn delivered() -> AttemptOutcome {
    AttemptOutcome::Delivered {
        reply: "250 2.0.0 ok".into(),
    }
}
