//! Settling a node's membership: bootstrap, joining through seeds, and the cluster id a
//! node belongs to.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use tracing::{info, warn};

use mxraft_proto::cluster::{
    IdentifyReply, IdentifyRequest, JoinNode, MembershipRequest, membership_request,
};

use crate::error::{MembershipError, SettleError, membership_error_from_status};
use crate::node::{RaftNode, addresses_of};

impl RaftNode {
    /// Records `cluster_id` as this node's cluster (on disk first). Refuses a different id than
    /// the one already recorded.
    pub(crate) fn adopt_cluster_id(&self, cluster_id: &str) -> Result<(), SettleError> {
        match self.cluster_id() {
            Some(own) if own == cluster_id => Ok(()),
            Some(own) => Err(SettleError::OtherCluster {
                node: self.core.id,
                own,
                other: cluster_id.to_owned(),
            }),
            None => {
                self.core
                    .log
                    .save_cluster_id(cluster_id)
                    .map_err(SettleError::Storage)?;
                self.core.peers.set_cluster_id(cluster_id);
                info!(cluster_id, "cluster id recorded");
                Ok(())
            }
        }
    }

    /// Creates a one-node cluster made of this node, with a new random cluster id, unless it
    /// already holds Raft state.
    pub async fn bootstrap(&self) -> Result<bool, SettleError> {
        if self.is_initialized().await {
            return Ok(false);
        }
        let cluster_id = match self.cluster_id() {
            Some(id) => id,
            None => {
                let id = format!("{:032x}", rand::random::<u128>());
                self.adopt_cluster_id(&id)?;
                id
            }
        };
        let members = BTreeMap::from([(self.core.id, self.core.info.clone())]);
        self.admit();
        match self.core.raft.initialize(members).await {
            Ok(()) => {
                info!(
                    node_id = self.core.id,
                    cluster_id, "bootstrapped a new cluster"
                );
                Ok(true)
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(SettleError::Bootstrap(e.to_string())),
        }
    }

    /// In the background, until this node holds Raft state: asks `peers` who they are; if one
    /// belongs to a cluster, joins it through them; if all answer and none does, and `bootstrap`
    /// is set, creates the cluster. A node that cannot tell (a peer does not answer) waits, so
    /// a node that lost its disk never starts a second cluster beside the one its peers form.
    pub fn settle_membership(&self, bootstrap: bool, peers: Vec<String>) {
        let node = self.clone();
        tokio::spawn(async move {
            let token = node.core.shutdown.clone();
            let mut attempt = 0u32;
            loop {
                if node.is_initialized().await {
                    return;
                }
                let step = tokio::select! {
                    _ = token.cancelled() => return,
                    step = node.membership_round(bootstrap, &peers) => step,
                };
                match step {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => {
                        if attempt.is_multiple_of(10) {
                            warn!(error = %e, "not a member of a cluster yet; retrying");
                        }
                    }
                }
                attempt += 1;
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }

    /// One round of [`settle_membership`](Self::settle_membership); `Ok(true)` once settled.
    async fn membership_round(
        &self,
        bootstrap: bool,
        peers: &[String],
    ) -> Result<bool, SettleError> {
        let mut silent = Vec::new();
        let mut members = Vec::new();
        for peer in peers {
            match self.identify(peer).await {
                Ok(reply) if reply.node_id == self.core.id => {
                    return Err(SettleError::DuplicateId {
                        peer: peer.clone(),
                        id: reply.node_id,
                    });
                }
                Ok(reply) if reply.initialized && !reply.cluster_id.is_empty() => {
                    members.push((peer.clone(), reply));
                }
                Ok(_) => {}
                Err(e) => silent.push(format!("{peer} ({})", e.message())),
            }
        }
        if let Some((_, reply)) = members.first() {
            self.adopt_cluster_id(&reply.cluster_id)?;
            if members
                .iter()
                .any(|(_, r)| r.voters.contains(&self.core.id))
            {
                // Still a voter, but this disk holds nothing: the votes and log it had are
                // lost. Ask anyway, so the leader's answer (how to replace it) is logged, but
                // take no part in Raft under this id.
                return match self.ask_to_join(&members[0].0).await {
                    Err(MembershipError::Refused(m)) => Err(SettleError::Refused(m)),
                    _ => Err(SettleError::LostVoter {
                        id: self.core.id,
                        cluster: reply.cluster_id.clone(),
                    }),
                };
            }
            // New to the cluster: the leader starts replicating to it before the join returns.
            self.admit();
            let mut last = String::new();
            for (peer, _) in &members {
                match self.ask_to_join(peer).await {
                    Ok(()) => {
                        info!(seed = %peer, "joined the cluster");
                        return Ok(true);
                    }
                    Err(MembershipError::Refused(m)) => {
                        return Err(SettleError::Refused(m));
                    }
                    Err(e) => last = format!("{peer}: {e}"),
                }
            }
            return Err(SettleError::NotAdded(last));
        }
        if !silent.is_empty() {
            return Err(SettleError::NoAnswer(silent.join(", ")));
        }
        if bootstrap {
            return self.bootstrap().await.map(|_| true);
        }
        if peers.is_empty() {
            info!("pristine node waiting to be added with `mxraftctl cluster join`");
            self.admit();
            return Ok(true);
        }
        Err(SettleError::NoCluster)
    }

    /// Asks the node at `addr` who it is.
    pub async fn identify(&self, addr: &str) -> Result<IdentifyReply, tonic::Status> {
        let mut client = self.core.peers.client(addr, None)?;
        let req = self
            .core
            .peers
            .request(IdentifyRequest {}, None, Some(Duration::from_secs(3)));
        Ok(client.identify(req).await?.into_inner())
    }

    /// This node's answer to [`identify`](Self::identify).
    pub(crate) async fn identity_reply(&self) -> IdentifyReply {
        let m = self.metrics();
        IdentifyReply {
            node_id: self.core.id,
            cluster_id: self.cluster_id().unwrap_or_default(),
            initialized: self.is_initialized().await,
            leader_id: m.current_leader,
            voters: m.membership_config.membership().voter_ids().collect(),
        }
    }

    async fn ask_to_join(&self, seed: &str) -> Result<(), MembershipError> {
        let pristine = !self.is_initialized().await;
        let change = membership_request::Change::Join(JoinNode {
            node_id: self.core.id,
            addresses: Some(addresses_of(&self.core.info)),
            pristine,
        });
        let req = MembershipRequest {
            change: Some(change.clone()),
        };
        let mut client = self
            .core
            .peers
            .client(seed, None)
            .map_err(|s| MembershipError::Unavailable(s.message().to_owned()))?;
        // The seed's id is unknown here, so this one request is not addressed.
        client
            .change_membership(
                self.core
                    .peers
                    .request(req, None, Some(Duration::from_secs(120))),
            )
            .await
            .map(|_| ())
            .map_err(|s| membership_error_from_status(&s, &change))
    }
}
