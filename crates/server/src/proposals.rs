//! The leader's check of commands proposed by other nodes, before they are appended.
//!
//! Peers are authenticated, so this is defence in depth: a compromised or broken node must
//! not use the leader to queue mail the front door would have refused, nor freeze messages
//! with leases no delivery needs. Commands this node proposes itself are not checked here.

use std::sync::Arc;

use mxraft_cluster::{ProposalCheck, RefusedProposal};
use mxraft_queue::{DSN_NODE, QueueCommand};
use mxraft_smtp::DomainPolicy;

use crate::config::Config;

/// Room for the trace header and SMTP's own lines on top of the message size limit.
const HEADER_ROOM: u64 = 64 * 1024;

/// The check for a node configured by `config`.
pub fn proposal_check(config: &Config) -> ProposalCheck {
    let policy = DomainPolicy::new(config.domains.iter().map(|d| d.name.as_str()));
    let max_size = config.smtp.max_message_size + HEADER_ROOM;
    let max_recipients = config.smtp.max_recipients;
    // A lease never needs to be longer than a few of the configured ones (the leader grants
    // and renews with `delivery.claim_lease`).
    let max_lease_ms = config.delivery.claim_lease.as_millis() as u64 * 4;
    Arc::new(move |cmd: &QueueCommand| match cmd {
        QueueCommand::Enqueue(e) => {
            if e.id.node() == DSN_NODE || e.id.node() != e.received_by {
                return Err(RefusedProposal(format!(
                    "queue id {} does not name node {} that received it",
                    e.id, e.received_by
                )));
            }
            if e.recipients.is_empty() || e.recipients.len() > max_recipients {
                return Err(RefusedProposal(format!(
                    "{} recipients (1 to {max_recipients} allowed)",
                    e.recipients.len()
                )));
            }
            let size = (e.body.len() + e.trace_header.len()) as u64;
            if size > max_size {
                return Err(RefusedProposal(format!(
                    "{size} bytes, over the {max_size} allowed"
                )));
            }
            for (rcpt, _) in &e.recipients {
                let domain = mxraft_queue::destination_of(rcpt);
                if !policy.is_protected(&domain) {
                    return Err(RefusedProposal(format!(
                        "recipient {rcpt:?} is not in a protected domain"
                    )));
                }
            }
            Ok(())
        }
        QueueCommand::Claim { lease_ms, .. } | QueueCommand::Renew { lease_ms, .. }
            if *lease_ms > max_lease_ms =>
        {
            Err(RefusedProposal(format!(
                "a lease of {lease_ms} ms, over the {max_lease_ms} ms allowed"
            )))
        }
        _ => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxraft_queue::{Enqueue, MailParams, MessageId, RcptParams};

    fn check() -> ProposalCheck {
        let config = Config::parse(
            r#"
            [node]
            id = 1
            data_dir = "x"
            [smtp]
            max_message_size = 1000000
            [delivery]
            claim_lease = "60s"
            [[domains]]
            name = "example.test"
            primary = "127.0.0.1:25"
            "#,
        )
        .expect("parses");
        proposal_check(&config)
    }

    fn enqueue(node: u64, received_by: u64, rcpt: &str, body: usize) -> QueueCommand {
        QueueCommand::Enqueue(Enqueue {
            id: MessageId::new(1_800_000_000_000, node, 7),
            received_at_ms: 1_800_000_000_000,
            received_by,
            sender: "a@client.test".into(),
            params: MailParams::default(),
            recipients: vec![(rcpt.into(), RcptParams::default())],
            trace_header: "Received: x\r\n".into(),
            body: vec![b'x'; body].into(),
        })
    }

    #[test]
    fn enqueues_are_held_to_what_the_front_door_accepts() {
        let check = check();
        check(&enqueue(2, 2, "user@example.test", 100)).expect("a good one passes");
        check(&enqueue(2, 2, "User@EXAMPLE.test", 100)).expect("case does not matter");
        let e = check(&enqueue(2, 2, "victim@elsewhere.test", 100)).expect_err("relay");
        assert!(e.0.contains("not in a protected domain"), "{e}");
        let e = check(&enqueue(3, 2, "user@example.test", 100)).expect_err("foreign id");
        assert!(e.0.contains("does not name node 2"), "{e}");
        let e = check(&enqueue(DSN_NODE, DSN_NODE, "user@example.test", 100)).expect_err("DSN id");
        assert!(e.0.contains("does not name node"), "{e}");
        let e = check(&enqueue(2, 2, "user@example.test", 2_000_000)).expect_err("too big");
        assert!(e.0.contains("bytes, over"), "{e}");
    }

    #[test]
    fn leases_are_bounded() {
        let check = check();
        let renew = |lease_ms| QueueCommand::Renew {
            token: 5,
            ids: vec![],
            at_ms: 1,
            lease_ms,
        };
        check(&renew(60_000)).expect("the configured lease");
        let e = check(&renew(86_400_000)).expect_err("a day");
        assert!(e.0.contains("a lease of 86400000 ms"), "{e}");
    }
}
