//! Membership changes on the leader: join (learner, then voter once caught up) and remove;
//! other nodes forward them there.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use tracing::info;

use mxraft_proto::cluster::{JoinNode, MembershipRequest, membership_request};
use mxraft_store::{NodeInfo, TypeConfig};

use crate::error::{MembershipError, membership_error_from_status};
use crate::node::{RETRY_PAUSE, RaftNode, addresses_of, info_of};

impl RaftNode {
    /// Adds node `id` at `info` to the cluster: as a learner, then, once caught up, as a voter.
    /// Runs on the leader; other nodes forward it there.
    pub async fn join(
        &self,
        id: u64,
        info: NodeInfo,
        pristine: bool,
    ) -> Result<(), MembershipError> {
        let change = membership_request::Change::Join(JoinNode {
            node_id: id,
            addresses: Some(addresses_of(&info)),
            pristine,
        });
        self.membership_change(change).await
    }

    /// Removes node `id` from the cluster. Runs on the leader; other nodes forward it there.
    pub async fn remove(&self, id: u64) -> Result<(), MembershipError> {
        self.membership_change(membership_request::Change::Remove(id))
            .await
    }

    pub(crate) async fn membership_change(
        &self,
        change: membership_request::Change,
    ) -> Result<(), MembershipError> {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            match self.leader() {
                Some((leader, _)) if leader == self.core.id => {
                    return self.change_on_leader(change).await;
                }
                Some((leader, info)) => {
                    let mut client = self
                        .core
                        .peers
                        .client(&info.cluster_addr, Some(leader))
                        .map_err(|s| MembershipError::Unavailable(s.to_string()))?;
                    let req = MembershipRequest {
                        change: Some(change.clone()),
                    };
                    let left = until.saturating_duration_since(Instant::now());
                    match client
                        .change_membership(self.core.peers.request(req, Some(leader), Some(left)))
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(s) => match membership_error_from_status(&s, &change) {
                            MembershipError::Unavailable(m) if Instant::now() >= until => {
                                return Err(MembershipError::Unavailable(m));
                            }
                            MembershipError::Unavailable(_) => {
                                tokio::time::sleep(RETRY_PAUSE * 4).await
                            }
                            other => return Err(other),
                        },
                    }
                }
                None if Instant::now() >= until => {
                    return Err(MembershipError::Unavailable("no leader".into()));
                }
                None => self.wait_for_change(until).await,
            }
        }
    }

    async fn change_on_leader(
        &self,
        change: membership_request::Change,
    ) -> Result<(), MembershipError> {
        // One change at a time: openraft refuses overlapping changes, and a join is two of them.
        let _guard = self.core.membership_lock.lock().await;
        let raft = &self.core.raft;
        let membership = raft.metrics().borrow_watched().membership_config.clone();
        let membership = membership.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let failed = |e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                MembershipError::Unavailable(
                    "leadership changed during the membership change".into(),
                )
            }
            other => MembershipError::Failed(other.to_string()),
        };
        match change {
            membership_request::Change::Join(join) => {
                let id = join.node_id;
                let info = info_of(join.addresses.unwrap_or_default());
                if info.cluster_addr.is_empty() {
                    return Err(MembershipError::Refused(
                        "a joining node needs a cluster address".into(),
                    ));
                }
                if let Some(existing) = membership.get_node(&id) {
                    if *existing != info {
                        return Err(MembershipError::Refused(format!(
                            "node id {id} is already a member at {} (cluster); node ids are never reused: \
                             remove it first and join the new node under a new id",
                            existing.cluster_addr
                        )));
                    }
                    if join.pristine && voters.contains(&id) {
                        return Err(MembershipError::Refused(format!(
                            "node {id} is already a member but now has an empty data directory; a node that \
                             lost its data must not rejoin under its old id: `mxraftctl cluster remove {id}`, \
                             then it joins as a new member (or join the replacement under a new id)"
                        )));
                    }
                    if voters.contains(&id) {
                        return Ok(());
                    }
                } else {
                    info!(node_id = id, addr = %info.cluster_addr, "adding learner");
                    raft.add_learner(id, info, true).await.map_err(failed)?;
                }
                info!(node_id = id, "promoting to voter");
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(failed)?;
                info!(node_id = id, "node joined");
                Ok(())
            }
            membership_request::Change::Remove(id) => {
                if membership.get_node(&id).is_none() {
                    return Err(MembershipError::NotMember(id));
                }
                if voters.contains(&id) {
                    if voters.len() == 1 {
                        return Err(MembershipError::Refused(format!(
                            "node {id} is the last voter"
                        )));
                    }
                    raft.change_membership(
                        ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                        false,
                    )
                    .await
                    .map_err(failed)?;
                } else {
                    raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map_err(failed)?;
                }
                info!(node_id = id, "node removed");
                Ok(())
            }
        }
    }
}
