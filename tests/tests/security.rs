//! The cluster and admin ports against callers they must refuse: no certificate, another CA, a
//! client certificate on the cluster port, a node speaking for another id, a non-member, a
//! node of another cluster, a truncated snapshot; admin calls without a token or with too
//! little of a role; and a node cut off from its cluster that must not answer `550`.

use std::collections::BTreeSet;
use std::time::Duration;

use mxraft_proto::admin::{QueueIdRequest, QueueListRequest, ReadConsistency};
use mxraft_proto::cluster::cluster_client::ClusterClient;
use mxraft_proto::cluster::{
    IdentifyRequest, JoinNode, MembershipRequest, NodeAddresses, ProposeRequest, RaftPayload,
    SnapshotChunk, SnapshotFileChunk, SnapshotFileInfo, SnapshotHeader, membership_request,
    snapshot_chunk,
};
use mxraft_proto::identity::{CLUSTER_ID_HEADER, Role, TARGET_NODE_HEADER};
use mxraft_proto::tls::{self, Expect, TlsFiles, TlsSource};
use mxraft_queue::{Enqueue, MailParams, MessageId, QueueCommand};
use mxraft_store::{TypeConfig, Vote};
use mxraft_tests::smtp::Client;
use mxraft_tests::{
    ADMIN_TOKEN, ClusterOptions, READ_TOKEN, TestCerts, TestCluster, admin_with_token, phase,
    queue_ids,
};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use tonic::transport::{Channel, Endpoint};

/// A cluster-service client of `addr`, in plain text or over TLS with `files`.
fn cluster_client(
    addr: std::net::SocketAddr,
    files: Option<TlsFiles>,
) -> anyhow::Result<ClusterClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let source = match files {
        Some(f) => Some(std::sync::Arc::new(TlsSource::load(f)?)),
        None => None,
    };
    Ok(ClusterClient::new(tls::channel(
        endpoint,
        source,
        Expect::Node(None),
    )))
}

fn files(
    ca: std::path::PathBuf,
    cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> TlsFiles {
    TlsFiles {
        ca_file: ca,
        cert_file: cert.as_ref().map(|c| c.0.clone()),
        key_file: cert.map(|c| c.1),
    }
}

/// An `Enqueue` for a domain no node protects: an open relay if any node took it.
fn foreign_enqueue(node: u64) -> QueueCommand {
    QueueCommand::Enqueue(Enqueue {
        id: MessageId::new(1_700_000_000_000, node, 1),
        received_at_ms: 1_700_000_000_000,
        received_by: node,
        sender: "spammer@bad.test".into(),
        params: MailParams::default(),
        recipients: vec![("victim@elsewhere.test".into(), Default::default())],
        trace_header: String::new(),
        body: bytes::Bytes::from_static(b"Subject: relay?\r\n\r\nhello\r\n"),
    })
}

fn addressed<T>(msg: T, target: Option<u64>, cluster_id: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = target {
        r.metadata_mut()
            .insert(TARGET_NODE_HEADER, t.to_string().parse().expect("header"));
    }
    if let Some(c) = cluster_id {
        r.metadata_mut()
            .insert(CLUSTER_ID_HEADER, c.parse().expect("header"));
    }
    r
}

fn vote_payload(candidate: u64) -> RaftPayload {
    let rpc = VoteRequest::<TypeConfig>::new(Vote::new(1000, candidate), None);
    RaftPayload {
        payload: mxraft_queue::encode(&rpc).into(),
    }
}

fn append_payload(leader: u64) -> RaftPayload {
    let rpc = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1000, leader),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    RaftPayload {
        payload: mxraft_queue::encode(&rpc).into(),
    }
}

fn join(node_id: u64) -> MembershipRequest {
    MembershipRequest {
        change: Some(membership_request::Change::Join(JoinNode {
            node_id,
            addresses: Some(NodeAddresses {
                cluster_addr: "127.0.0.1:9".into(),
                smtp_addr: String::new(),
                admin_addr: String::new(),
            }),
            pristine: true,
        })),
    }
}

/// Tries every RPC that changes or reveals something; returns the ones that were not refused.
async fn accepted_calls(mut c: ClusterClient<Channel>, target: u64) -> Vec<&'static str> {
    let mut accepted = Vec::new();
    let propose = ProposeRequest {
        command: mxraft_queue::encode(&foreign_enqueue(9)).into(),
        ..Default::default()
    };
    if c.propose(addressed(propose, None, None)).await.is_ok() {
        accepted.push("Propose");
    }
    if c.vote(addressed(vote_payload(9), Some(target), None))
        .await
        .is_ok()
    {
        accepted.push("Vote");
    }
    if c.pre_vote(addressed(vote_payload(9), Some(target), None))
        .await
        .is_ok()
    {
        accepted.push("PreVote");
    }
    if c.append_entries(addressed(append_payload(9), Some(target), None))
        .await
        .is_ok()
    {
        accepted.push("AppendEntries");
    }
    let chunks = futures::stream::iter(vec![SnapshotChunk {
        item: Some(snapshot_chunk::Item::Header(SnapshotHeader::default())),
    }]);
    if c.install_snapshot(addressed(chunks, Some(target), None))
        .await
        .is_ok()
    {
        accepted.push("InstallSnapshot");
    }
    if c.change_membership(addressed(join(9), None, None))
        .await
        .is_ok()
    {
        accepted.push("ChangeMembership");
    }
    if c.identify(addressed(IdentifyRequest {}, None, None))
        .await
        .is_ok()
    {
        accepted.push("Identify");
    }
    accepted
}

fn voters(cluster: &TestCluster, id: u64) -> BTreeSet<u64> {
    cluster
        .node(id)
        .node()
        .metrics()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_port_refuses_callers_without_a_node_certificate() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3, ClusterOptions::default()).await?;
    let leader = cluster.wait_for_leader().await?;
    let addr = cluster.node(leader).addrs().cluster;
    let other = tempfile::tempdir()?;
    let other_ca = TestCerts::new(other.path())?;
    let ca = cluster.certs().ca_file();
    let callers = [
        ("plain text", None),
        (
            "TLS without a client certificate",
            Some(files(ca.clone(), None)),
        ),
        (
            "a node certificate from another CA",
            Some(files(other_ca.ca_file(), Some(other_ca.node(leader)?))),
        ),
        (
            "an admin client certificate from the cluster CA",
            Some(files(
                ca.clone(),
                Some(cluster.certs().client("op", Role::Admin)?),
            )),
        ),
    ];
    for (who, f) in callers {
        phase(&format!("{who}: every cluster RPC is refused"));
        let accepted = accepted_calls(cluster_client(addr, f)?, leader).await;
        assert!(accepted.is_empty(), "{who}: accepted {accepted:?}");
    }
    phase("nothing changed: the queue is empty, the voters are the same");
    assert!(
        queue_ids(cluster.admin_addr(1), ReadConsistency::Linearizable)
            .await?
            .is_empty()
    );
    assert_eq!(voters(&cluster, leader), BTreeSet::from([1, 2, 3]));
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_speaks_only_for_itself_and_its_cluster() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3, ClusterOptions::default()).await?;
    let leader = cluster.wait_for_leader().await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap_or(1);
    let addr = cluster.node(leader).addrs().cluster;
    let ca = cluster.certs().ca_file();
    let cluster_id = cluster.node(leader).node().cluster_id();
    let cluster_id = cluster_id.as_deref();
    assert!(
        cluster_id.is_some_and(|c| c.len() == 32),
        "a cluster id was made at bootstrap"
    );

    phase("a certificate for node 9, which is not a member");
    let mut c = cluster_client(
        addr,
        Some(files(ca.clone(), Some(cluster.certs().node(9)?))),
    )?;
    let denied = |r: Result<_, tonic::Status>| match r {
        Err(s) if s.code() == tonic::Code::PermissionDenied => s.message().to_owned(),
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    };
    let m = denied(
        c.vote(addressed(vote_payload(follower), Some(leader), cluster_id))
            .await
            .map(|_| ()),
    );
    assert!(m.contains("names node 9"), "{m}");
    let m = denied(
        c.append_entries(addressed(
            append_payload(follower),
            Some(leader),
            cluster_id,
        ))
        .await
        .map(|_| ()),
    );
    assert!(m.contains("names node 9"), "{m}");
    let m = denied(
        c.change_membership(addressed(join(8), None, cluster_id))
            .await
            .map(|_| ()),
    );
    assert!(m.contains("names node 9"), "{m}");
    let propose = ProposeRequest {
        command: mxraft_queue::encode(&foreign_enqueue(9)).into(),
        ..Default::default()
    };
    let m = denied(
        c.propose(addressed(propose, None, cluster_id))
            .await
            .map(|_| ()),
    );
    assert!(m.contains("not a member"), "{m}");
    let who = c
        .identify(addressed(IdentifyRequest {}, None, None))
        .await?
        .into_inner();
    assert_eq!((who.node_id, who.initialized), (leader, true));
    assert_eq!(Some(who.cluster_id.as_str()), cluster_id);

    phase("a member's certificate: the leader still refuses an Enqueue for a foreign domain");
    let mut c = cluster_client(
        addr,
        Some(files(ca.clone(), Some(cluster.certs().node(follower)?))),
    )?;
    let propose = ProposeRequest {
        command: mxraft_queue::encode(&foreign_enqueue(follower)).into(),
        ..Default::default()
    };
    let r = c.propose(addressed(propose, None, cluster_id)).await;
    let s = r.expect_err("refused");
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("not in a protected domain"), "{s:?}");

    phase("a member's certificate with another cluster's id is refused as such");
    let r = c
        .vote(addressed(
            vote_payload(follower),
            Some(leader),
            Some("0123456789abcdef0123456789abcdef"),
        ))
        .await;
    let s = r.expect_err("refused");
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("belongs to cluster"), "{s:?}");

    phase("a truncated snapshot stream is refused; the follower's Raft keeps running");
    let target = follower;
    let mut c = cluster_client(
        cluster.node(target).addrs().cluster,
        Some(files(ca.clone(), Some(cluster.certs().node(leader)?))),
    )?;
    let meta = mxraft_store::SnapshotMeta::default();
    let header = SnapshotHeader {
        vote: mxraft_queue::encode(&Vote::new_committed(1000, leader)).into(),
        meta: mxraft_queue::encode(&meta).into(),
        files: vec![SnapshotFileInfo {
            name: "000001.sst".into(),
            size: 10,
        }],
    };
    let chunks = futures::stream::iter(vec![
        SnapshotChunk {
            item: Some(snapshot_chunk::Item::Header(header)),
        },
        SnapshotChunk {
            item: Some(snapshot_chunk::Item::File(SnapshotFileChunk {
                name: "000001.sst".into(),
                offset: 0,
                data: vec![0u8; 5].into(),
            })),
        },
    ]);
    let s = c
        .install_snapshot(addressed(chunks, Some(target), cluster_id))
        .await
        .expect_err("a truncated snapshot is refused");
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("end marker"), "{s:?}");
    assert_eq!(cluster.node(target).node().fatal_error(), None);
    cluster.wait_for_convergence().await?;
    assert_eq!(voters(&cluster, leader), BTreeSet::from([1, 2, 3]));
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_need_a_token_with_the_right_role() -> anyhow::Result<()> {
    let cluster = TestCluster::start(1, ClusterOptions::default()).await?;
    let addr = cluster.admin_addr(1);
    let list = || QueueListRequest {
        limit: 0,
        consistency: ReadConsistency::Local as i32,
        filter: None,
    };
    let delete = || QueueIdRequest {
        id: MessageId::new(1_700_000_000_000, 1, 1).to_string(),
    };

    phase("no token: UNAUTHENTICATED");
    let mut none = admin_with_token(addr, None).await?;
    let s = none.queue_list(list()).await.expect_err("refused");
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("needs the read role"), "{s:?}");
    let mut wrong = admin_with_token(addr, Some("not-the-token-0123456789")).await?;
    let s = wrong.queue_list(list()).await.expect_err("refused");
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");

    phase("the read token lists but may not delete");
    let mut reader = admin_with_token(addr, Some(READ_TOKEN)).await?;
    reader.queue_list(list()).await?;
    let s = reader.queue_delete(delete()).await.expect_err("refused");
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("queue delete needs the admin role"),
        "{s:?}"
    );

    phase("the admin token may delete (here: a message that is not there)");
    let mut adminc = admin_with_token(addr, Some(ADMIN_TOKEN)).await?;
    let s = adminc
        .queue_delete(delete())
        .await
        .expect_err("no such message");
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");

    phase("gRPC health stays open, and says SERVING once the node is current");
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    mxraft_tests::wait_for("SERVING", Duration::from_secs(10), || {
        let mut health = health.clone();
        async move {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "mxraft.v1.Admin".into(),
                })
                .await
                .ok()?
                .into_inner();
            (status.status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
                .then_some(())
        }
    })
    .await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_out_of_contact_answers_451_never_550() -> anyhow::Result<()> {
    let opts = ClusterOptions {
        recipients: "list".into(),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start(3, opts).await?;
    let leader = cluster.wait_for_leader().await?;
    let alone = (1..=3).find(|id| *id != leader).unwrap_or(1);

    phase("in contact: an unknown recipient gets 550 5.1.1");
    let mut c = Client::connect(cluster.smtp_addr(alone)).await?;
    assert_eq!(c.command("EHLO client.test").await?.code, 250);
    assert_eq!(c.command("MAIL FROM:<s@client.test>").await?.code, 250);
    let r = c.command("RCPT TO:<nobody@example.test>").await?;
    assert_eq!((r.code, r.text().get(..5)), (550, Some("5.1.1")), "{r:?}");

    phase(&format!(
        "node {alone} loses the other two: after max_staleness it answers 451 4.3.0"
    ));
    for id in 1..=3 {
        if id != alone {
            cluster.kill(id).await?;
        }
    }
    let bound = cluster.config(alone).cluster.max_staleness;
    mxraft_tests::wait_for("the node to notice it is alone", bound * 3, || async {
        cluster.node(alone).node().current(0).is_err().then_some(())
    })
    .await?;
    let r = c.command("RCPT TO:<nobody@example.test>").await?;
    assert_eq!((r.code, r.text().get(..5)), (451, Some("4.3.0")), "{r:?}");
    c.command("QUIT").await?;

    phase("the others come back: 550 again");
    for id in 1..=3 {
        if id != alone {
            cluster.restart(id).await?;
        }
    }
    cluster.wait_for_convergence().await?;
    mxraft_tests::wait_for(
        "the node to be current again",
        Duration::from_secs(30),
        || async { cluster.node(alone).node().current(0).is_ok().then_some(()) },
    )
    .await?;
    let mut c = Client::connect(cluster.smtp_addr(alone)).await?;
    assert_eq!(c.command("EHLO client.test").await?.code, 250);
    assert_eq!(c.command("MAIL FROM:<s@client.test>").await?.code, 250);
    let r = c.command("RCPT TO:<nobody@example.test>").await?;
    assert_eq!(r.code, 550, "{r:?}");
    cluster.shutdown().await
}
