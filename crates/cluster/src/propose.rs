//! Proposals and linearizable reads: commit a command through the leader (forwarding it
//! when this node is a follower), and order a read after everything committed.

use std::time::{Duration, Instant};

use openraft::ReadPolicy;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};

use mxraft_proto::cluster::{ProposeRequest, ReadIndexRequest};
use mxraft_queue::{CommandResult, QueueCommand};
use mxraft_store::NodeInfo;

use crate::error::{ProposeError, ReadError};
use crate::node::{RETRY_PAUSE, RaftNode};

impl RaftNode {
    /// The leader this node currently knows of, with its addresses.
    pub(crate) fn leader(&self) -> Option<(u64, NodeInfo)> {
        let m = self.core.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        let info = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, info))
    }

    /// Waits until the metrics change or `until` passes.
    pub(crate) async fn wait_for_change(&self, until: Instant) {
        let mut rx = self.core.raft.metrics();
        drop(rx.borrow_and_update());
        let pause = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        let _ = tokio::time::timeout(pause, rx.changed()).await;
    }

    /// Commits `cmd` through the leader and returns its applied result.
    ///
    /// Gives up after the commit timeout. Retries (after a lost leader, a forwarded call that
    /// failed, or an entry discarded by a leader change) resend the same command, which is
    /// safe because commands are idempotent.
    pub async fn propose(&self, cmd: QueueCommand) -> Result<CommandResult, ProposeError> {
        let timeout = self.core.config.commit_timeout;
        let until = Instant::now() + timeout;
        // Encoded once for every forward attempt (a message body is megabytes).
        let mut encoded: Option<bytes::Bytes> = None;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ProposeError::Timeout(timeout));
            }
            match self.leader() {
                None => self.wait_for_change(until).await,
                Some((leader, _)) if leader == self.core.id => {
                    // Leases are measured on the leader's clock, stamped as it appends.
                    let mut stamped = cmd.clone();
                    stamped.stamp_by_leader(self.core.clock.now_ms());
                    match tokio::time::timeout(left, self.core.raft.client_write(stamped)).await {
                        Err(_) => return Err(ProposeError::Timeout(timeout)),
                        Ok(Ok(resp)) => return Ok(resp.data),
                        Ok(Err(RaftError::Fatal(f))) => {
                            return Err(ProposeError::Stopped(f.to_string()));
                        }
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))))
                        | Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                            self.wait_for_change(until).await;
                        }
                        Ok(Err(RaftError::APIError(e))) => {
                            return Err(ProposeError::Invalid(e.to_string()));
                        }
                    }
                }
                Some((leader, info)) => {
                    let command = encoded
                        .get_or_insert_with(|| mxraft_queue::encode(&cmd).into())
                        .clone();
                    match self.forward(leader, &info, command, left).await {
                        Ok(result) => return Ok(result),
                        Err(status) => {
                            if status.code() == tonic::Code::InvalidArgument {
                                return Err(ProposeError::Invalid(status.message().to_owned()));
                            }
                            if status.code() == tonic::Code::OutOfRange {
                                return Err(ProposeError::ClockSkew(status.message().to_owned()));
                            }
                            tracing::debug!(leader, error = %status, "forwarded proposal failed; retrying");
                            tokio::time::sleep(RETRY_PAUSE.min(left)).await;
                            self.wait_for_change(until).await;
                        }
                    }
                }
            }
        }
    }

    async fn forward(
        &self,
        leader: u64,
        info: &NodeInfo,
        command: bytes::Bytes,
        left: Duration,
    ) -> Result<CommandResult, tonic::Status> {
        let mut client = self.core.peers.client(&info.cluster_addr, Some(leader))?;
        let req = ProposeRequest {
            command,
            sent_at_ms: self.core.clock.now_ms(),
            from_node: self.core.id,
        };
        let reply = tokio::time::timeout(
            left,
            client.propose(self.core.peers.request(req, Some(leader), Some(left))),
        )
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("forwarded proposal timed out"))??;
        mxraft_queue::decode(&reply.into_inner().result)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }

    /// Makes a following read of the local state machine linearizable: the leader confirms its
    /// leadership with a quorum and names the log index the read must see; this node then
    /// waits until it has applied that index.
    pub async fn read_barrier(&self, timeout: Duration) -> Result<(), ReadError> {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::NoQuorum(format!(
                    "no confirmed leader within {timeout:?}"
                )));
            }
            let index = match self.leader() {
                None => {
                    self.wait_for_change(until).await;
                    continue;
                }
                Some((leader, _)) if leader == self.core.id => {
                    match tokio::time::timeout(left, self.read_index()).await {
                        Ok(Ok(index)) => index,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "read index failed; retrying");
                            self.wait_for_change(until).await;
                            continue;
                        }
                        Err(_) => continue,
                    }
                }
                Some((leader, info)) => {
                    let asked = async {
                        let mut client =
                            self.core.peers.client(&info.cluster_addr, Some(leader))?;
                        let reply = client
                            .read_index(self.core.peers.request(
                                ReadIndexRequest {},
                                Some(leader),
                                Some(left),
                            ))
                            .await?;
                        Ok::<u64, tonic::Status>(reply.into_inner().index)
                    };
                    match tokio::time::timeout(left, asked).await {
                        Ok(Ok(index)) => index,
                        _ => {
                            tokio::time::sleep(RETRY_PAUSE.min(left)).await;
                            continue;
                        }
                    }
                }
            };
            let left = until.saturating_duration_since(Instant::now());
            return match self
                .core
                .raft
                .wait(Some(left))
                .applied_index_at_least(Some(index), "linearizable read")
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => Err(ReadError::NoQuorum(format!(
                    "not caught up with the leader: {e}"
                ))),
            };
        }
    }

    /// On the leader: confirms leadership with a quorum and returns the index to read at.
    pub(crate) async fn read_index(&self) -> Result<u64, ReadError> {
        let linearizer = self
            .core
            .raft
            .get_read_linearizer(ReadPolicy::ReadIndex)
            .await
            .map_err(|e| ReadError::NoQuorum(e.to_string()))?;
        Ok(linearizer.read_log_id().index())
    }
}
