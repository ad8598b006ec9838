//! Delivery results and what they lead to: recipients delivered, deferred or failed, expiry,
//! administrator bounces, delay notices, and the DSNs they queue.

use bytes::Bytes;

use crate::command::{AttemptOutcome, CommandResult, Enqueue, Report};
use crate::dsn::{self, DsnContext, DsnKind};
use crate::event::{Event, EventKind};
use crate::id::MessageId;
use crate::message::{MailParams, Message, RcptParams, Recipient, RecipientState};
use crate::policy;

use super::{DSN_NODE, Effects, QueueState};

impl QueueState {
    pub(super) fn report(&mut self, report: Report, effects: &mut Effects<'_>) -> CommandResult {
        let mut changed = 0;
        for mr in report.messages {
            let Some(m) = self.messages.get_mut(&mr.id) else {
                continue;
            };
            let Some(holder) = m
                .claim
                .as_ref()
                .filter(|c| c.token == report.token)
                .map(|c| c.node)
            else {
                // A stale report from a node whose claim expired and was granted again.
                continue;
            };
            for (index, outcome) in mr.recipients {
                let Some(r) = m.recipients.get_mut(index as usize) else {
                    continue;
                };
                if !r.is_pending() {
                    continue;
                }
                let kind = match &outcome {
                    AttemptOutcome::Delivered { .. } => EventKind::Delivered,
                    AttemptOutcome::Failed { .. } => EventKind::Failed,
                    AttemptOutcome::Deferred { .. } => EventKind::Deferred,
                };
                effects.event(Event {
                    kind,
                    id: mr.id,
                    node: Some(holder),
                    destination: Some(r.destination()),
                    recipient: Some(r.address.clone()),
                    detail: outcome.reply().to_owned(),
                });
                match outcome {
                    AttemptOutcome::Delivered { reply } => {
                        r.state = RecipientState::Delivered {
                            at_ms: report.at_ms,
                            reply,
                        }
                    }
                    AttemptOutcome::Failed { reply } => {
                        r.state = RecipientState::Failed {
                            at_ms: report.at_ms,
                            reply,
                        }
                    }
                    AttemptOutcome::Deferred { reply } => {
                        r.attempts = r.attempts.saturating_add(1);
                        r.next_attempt_ms =
                            report.at_ms.saturating_add(policy::backoff_ms(r.attempts));
                        r.last_error = Some(reply);
                    }
                }
            }
            m.claim = None;
            self.unlink_claim(report.token, mr.id);
            changed += 1;
            self.after_recipients_changed(mr.id, report.at_ms, &report.reporting_mta, effects);
        }
        CommandResult::Applied { changed }
    }

    /// Fails every pending recipient of `ids` with the reason `why` gives, then settles them.
    pub(super) fn fail_pending(
        &mut self,
        ids: &[MessageId],
        at_ms: u64,
        reporting_mta: &str,
        effects: &mut Effects<'_>,
        why: impl Fn(&Recipient) -> String,
    ) -> u32 {
        let mut changed = 0;
        for &id in ids {
            let Some(m) = self.messages.get_mut(&id) else {
                continue;
            };
            if !m.has_pending() {
                continue;
            }
            for r in m.recipients.iter_mut().filter(|r| r.is_pending()) {
                let reply = why(r);
                effects.event(Event {
                    destination: Some(r.destination()),
                    recipient: Some(r.address.clone()),
                    ..Event::message(EventKind::Failed, id, reply.clone())
                });
                r.state = RecipientState::Failed { at_ms, reply };
            }
            if let Some(c) = m.claim.take() {
                self.unlink_claim(c.token, id);
            }
            changed += 1;
            self.after_recipients_changed(id, at_ms, reporting_mta, effects);
        }
        changed
    }

    /// After recipients changed: sends the failure DSN for newly failed recipients, removes the
    /// message when nothing is pending, and refreshes the indexes.
    pub(super) fn after_recipients_changed(
        &mut self,
        id: MessageId,
        at_ms: u64,
        reporting_mta: &str,
        effects: &mut Effects<'_>,
    ) {
        let Some(m) = self.messages.get_mut(&id) else {
            return;
        };
        let newly_failed: Vec<usize> = m
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.state, RecipientState::Failed { .. }) && !r.notified)
            .map(|(i, _)| i)
            .collect();
        for &i in &newly_failed {
            m.recipients[i].notified = true;
        }
        let to_report: Vec<usize> = newly_failed
            .into_iter()
            .filter(|&i| m.recipients[i].params.wants_failure())
            .collect();
        if !to_report.is_empty() && !m.sender.is_empty() {
            let reasons = to_report
                .iter()
                .map(|&i| match &m.recipients[i].state {
                    RecipientState::Failed { reply, .. } => reply.clone(),
                    _ => String::new(),
                })
                .collect::<Vec<_>>();
            let message = m.clone();
            self.queue_dsn(
                DsnKind::Failure,
                &message,
                &to_report,
                &reasons,
                at_ms,
                reporting_mta,
                effects,
            );
        }
        let done = self.messages.get(&id).is_some_and(|m| !m.has_pending());
        if done {
            self.retire(id, at_ms, effects);
        } else {
            self.reindex(id);
            effects.updated(id);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue_dsn(
        &mut self,
        kind: DsnKind,
        original: &Message,
        indexes: &[usize],
        reasons: &[String],
        at_ms: u64,
        reporting_mta: &str,
        effects: &mut Effects<'_>,
    ) {
        let dsn_id = MessageId::new(at_ms, DSN_NODE, (effects.index << 16) | effects.dsns);
        effects.dsns += 1;
        let kind_of_event = match kind {
            DsnKind::Failure => EventKind::Bounced,
            DsnKind::Delay => EventKind::Delayed,
        };
        effects.event(Event {
            recipient: Some(original.sender.clone()),
            ..Event::message(kind_of_event, original.id, format!("dsn={dsn_id}"))
        });
        let body = match (effects.bodies)(original.id) {
            Ok(body) => body,
            Err(e) => {
                effects.error.get_or_insert(e);
                None
            }
        };
        let content = body.map(|stored| original.content(stored));
        let ctx = DsnContext {
            dsn_id,
            reporting_mta,
            at_ms,
        };
        let body = dsn::render(kind, original, indexes, reasons, content.as_deref(), &ctx);
        let date = chrono::DateTime::from_timestamp_millis(at_ms as i64)
            .unwrap_or_default()
            .to_rfc2822();
        let enqueue = Enqueue {
            id: dsn_id,
            received_at_ms: at_ms,
            received_by: 0,
            sender: String::new(),
            params: MailParams::default(),
            recipients: vec![(original.sender.clone(), RcptParams::default())],
            trace_header: format!(
                "Received: by {reporting_mta} (mxraft) id {dsn_id};\r\n\t{date}\r\n"
            ),
            body: Bytes::from(body),
        };
        self.enqueue(enqueue, effects);
    }

    pub(super) fn delay_notice(
        &mut self,
        ids: &[MessageId],
        at_ms: u64,
        reporting_mta: &str,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        let mut changed = 0;
        for &id in ids {
            let Some(m) = self.messages.get_mut(&id) else {
                continue;
            };
            if m.delay_notified {
                continue;
            }
            m.delay_notified = true;
            changed += 1;
            effects.updated(id);
            let delayed: Vec<usize> = m
                .recipients
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_pending() && r.params.wants_delay())
                .map(|(i, _)| i)
                .collect();
            if delayed.is_empty() || m.sender.is_empty() {
                continue;
            }
            let reasons = delayed
                .iter()
                .map(|&i| {
                    let why = m.recipients[i]
                        .last_error
                        .as_deref()
                        .unwrap_or("the primary is not reachable");
                    format!("4.4.1 Delivery delayed; last error: {why}")
                })
                .collect::<Vec<_>>();
            let message = m.clone();
            self.queue_dsn(
                DsnKind::Delay,
                &message,
                &delayed,
                &reasons,
                at_ms,
                reporting_mta,
                effects,
            );
        }
        CommandResult::Applied { changed }
    }

    /// Fails the pending recipients of `ids` whose lifetime ran out.
    pub(super) fn expire(
        &mut self,
        ids: &[MessageId],
        at_ms: u64,
        reporting_mta: &str,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        for &id in ids {
            if self.messages.get(&id).is_some_and(|m| m.has_pending()) {
                effects.event(Event::message(EventKind::Expired, id, ""));
            }
        }
        let changed = self.fail_pending(ids, at_ms, reporting_mta, effects, |r| {
            let why = r
                .last_error
                .as_deref()
                .unwrap_or("the primary was not reachable");
            format!("4.4.7 Delivery time expired; last error: {why}")
        });
        CommandResult::Applied { changed }
    }

    /// Returns a message to its sender on the administrator's request.
    pub(super) fn bounce(
        &mut self,
        id: MessageId,
        at_ms: u64,
        reporting_mta: &str,
        effects: &mut Effects<'_>,
    ) -> CommandResult {
        let changed = self.fail_pending(&[id], at_ms, reporting_mta, effects, |_| {
            "5.0.0 Returned to the sender by the administrator".to_owned()
        });
        CommandResult::Applied { changed }
    }
}
