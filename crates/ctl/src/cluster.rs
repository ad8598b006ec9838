//! `mxraftctl cluster`: status (with each member's lag, last contact and free disk), join,
//! remove, the state digest, and handing the leadership over.

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::json;

use std::time::Duration;

use mxraft_proto::admin::{
    ClusterJoinRequest, ClusterRemoveRequest, ClusterStatusReply, ClusterStatusRequest,
    NodeInfoReply, NodeInfoRequest, StateDigestRequest, TransferLeaderRequest,
};

use crate::Output;
use crate::access::{Access, Client};
use crate::output::print_table;

/// How long `cluster status` waits for each member's own answer.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Members, their roles and addresses, and the leader.
    Status,
    /// Add a node: give its admin endpoint, or its id and addresses.
    Join(JoinArgs),
    /// Remove a node from the cluster, or with --above every member whose id is above N.
    Remove {
        /// The node id.
        #[arg(required_unless_present = "above", conflicts_with = "above")]
        id: Option<u64>,
        /// Remove every member with an id above N, highest first: what scaling a StatefulSet
        /// down to N pods needs (pod N-1 is node N). Members at or below N are kept.
        #[arg(long, value_name = "N")]
        above: Option<u64>,
    },
    /// This node's digest of its replicated state on disk, with the log index it is of: two
    /// nodes at the same index must show the same digest.
    Digest,
    /// Hand the leadership to another voter (by default the most up-to-date one), e.g. before
    /// restarting the leader's host.
    TransferLeader {
        /// The node to take over.
        id: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct JoinArgs {
    /// Admin endpoint of the node to add; its id and addresses are asked from it.
    #[arg(conflicts_with_all = ["id", "cluster_addr"])]
    node_endpoint: Option<String>,
    /// Id of the node to add.
    #[arg(long, requires = "cluster_addr")]
    id: Option<u64>,
    /// Cluster address (host:port) of the node to add.
    #[arg(long)]
    cluster_addr: Option<String>,
    /// SMTP address (host:port) of the node to add.
    #[arg(long, default_value = "")]
    smtp_addr: String,
    /// Admin address (host:port) of the node to add.
    #[arg(long, default_value = "")]
    admin_addr: String,
}

/// Runs one `cluster` command.
pub(crate) async fn run(
    cmd: ClusterCommand,
    client: &mut Client,
    access: &Access,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status => {
            status(client, access, output, out).await?;
        }
        ClusterCommand::TransferLeader { id } => {
            let (mut leader, _) = leader_client(client, access).await?;
            let r = leader
                .cluster_transfer_leader(TransferLeaderRequest { node_id: id })
                .await?
                .into_inner();
            if output == Output::Json {
                writeln!(
                    out,
                    "{}",
                    json!({"previous_leader_id": r.previous_leader_id, "leader_id": r.leader_id})
                )?;
            } else {
                writeln!(
                    out,
                    "leadership moved from node {} to node {}",
                    r.previous_leader_id, r.leader_id
                )?;
            }
        }
        ClusterCommand::Join(args) => {
            join(client, access, output, out, args).await?;
        }
        ClusterCommand::Digest => {
            let d = client
                .state_digest(StateDigestRequest {})
                .await?
                .into_inner();
            if output == Output::Json {
                let v = json!({
                    "node_id": d.node_id,
                    "applied_index": d.applied_index,
                    "sha256": d.sha256,
                    "records": d.records,
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "node {} at index {}: sha256 {} ({} records)",
                    d.node_id, d.applied_index, d.sha256, d.records
                )?;
            }
        }
        ClusterCommand::Remove { id, above } => {
            let ids = match (id, above) {
                (Some(id), _) => vec![id],
                (None, Some(n)) => members_above(client, n).await?,
                (None, None) => unreachable!("clap requires an id or --above"),
            };
            for &id in &ids {
                client
                    .cluster_remove(ClusterRemoveRequest { node_id: id })
                    .await?;
                if output == Output::Table {
                    writeln!(out, "node {id} removed from the cluster")?;
                }
            }
            if output == Output::Json {
                if id.is_some() {
                    writeln!(out, "{}", json!({"removed": ids[0]}))?;
                } else {
                    writeln!(out, "{}", json!({"removed": ids}))?;
                }
            } else if ids.is_empty() {
                writeln!(
                    out,
                    "no member has an id above {}",
                    above.unwrap_or_default()
                )?;
            }
        }
    }
    Ok(())
}

/// The members with an id above `n`, highest first. Refuses to name every member.
async fn members_above(client: &mut Client, n: u64) -> anyhow::Result<Vec<u64>> {
    if n == 0 {
        anyhow::bail!("--above must be at least 1: a cluster keeps at least one member");
    }
    let s = client
        .cluster_status(ClusterStatusRequest {})
        .await?
        .into_inner();
    let mut ids: Vec<u64> = s
        .members
        .iter()
        .map(|m| m.id)
        .filter(|&id| id > n)
        .collect();
    if ids.len() == s.members.len() {
        anyhow::bail!("every member has an id above {n}; nothing would be left");
    }
    ids.sort_unstable_by(|a, b| b.cmp(a));
    Ok(ids)
}

/// A client for the leader, and its status: `client` itself when it leads, else the leader's
/// admin endpoint as the cluster knows it.
async fn leader_client(
    client: &mut Client,
    access: &Access,
) -> anyhow::Result<(Client, ClusterStatusReply)> {
    let s = client
        .cluster_status(ClusterStatusRequest {})
        .await?
        .into_inner();
    let Some(leader) = s.leader_id else {
        anyhow::bail!("node {} knows of no leader (no quorum?)", s.node_id);
    };
    if leader == s.node_id {
        return Ok((client.clone(), s));
    }
    let addr = s
        .members
        .iter()
        .find(|m| m.id == leader)
        .map(|m| m.admin_addr.clone())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| anyhow::anyhow!("the leader, node {leader}, has no admin address"))?;
    let mut c = access.connect(&addr)?;
    let ls = tokio::time::timeout(MEMBER_TIMEOUT, c.cluster_status(ClusterStatusRequest {}))
        .await
        .map_err(|_| anyhow::anyhow!("the leader, node {leader} at {addr}, does not answer"))??
        .into_inner();
    Ok((c, ls))
}

/// A member's own answer about itself, or why there is none.
pub(crate) async fn member_info(access: &Access, addr: &str) -> Result<NodeInfoReply, String> {
    if addr.is_empty() {
        return Err("no admin address".into());
    }
    let mut c = access.connect(addr).map_err(|e| e.to_string())?;
    match tokio::time::timeout(MEMBER_TIMEOUT, c.node_info(NodeInfoRequest {})).await {
        Err(_) => Err("no answer".into()),
        Ok(Err(e)) => Err(e.message().to_owned()),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

/// Bytes in a short human form: 1.2 GiB.
fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

async fn status(
    client: &mut Client,
    access: &Access,
    output: Output,
    mut out: &mut impl Write,
) -> anyhow::Result<()> {
    let s = client
        .cluster_status(ClusterStatusRequest {})
        .await?
        .into_inner();
    // Lag and last contact are known to the leader only: ask it when this node does not lead.
    let from_leader = if s.leader_id.is_some() && s.leader_id != Some(s.node_id) {
        leader_client(client, access).await.ok().map(|(_, ls)| ls)
    } else {
        None
    };
    let view = from_leader.as_ref().unwrap_or(&s);
    let mut disks = Vec::new();
    for m in &view.members {
        disks.push(member_info(access, &m.admin_addr).await);
    }
    let lag = |matched: Option<u64>| matched.map(|i| view.last_log_index.saturating_sub(i));
    if output == Output::Json {
        let v = json!({
            "leader_id": s.leader_id,
            "node_id": s.node_id,
            "term": s.term,
            "state": s.state,
            "last_log_index": s.last_log_index,
            "committed_index": s.committed_index,
            "applied_index": s.applied_index,
            "members": view.members.iter().zip(&disks).map(|(m, d)| json!({
                "id": m.id,
                "role": m.role,
                "smtp_addr": m.smtp_addr,
                "admin_addr": m.admin_addr,
                "cluster_addr": m.cluster_addr,
                "matched_index": m.matched_index,
                "lag": lag(m.matched_index),
                "last_contact_ms": m.last_contact_ms,
                "data_free_bytes": d.as_ref().ok().and_then(|i| i.data_free_bytes),
                "data_total_bytes": d.as_ref().ok().and_then(|i| i.data_total_bytes),
                "error": d.as_ref().err(),
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        let leader = s
            .leader_id
            .map(|l| l.to_string())
            .unwrap_or_else(|| "none".into());
        writeln!(
            out,
            "leader: {leader}   term: {}   answered by: node {} ({})",
            s.term, s.node_id, s.state
        )?;
        writeln!(
            out,
            "log: last {}   committed {}   applied {}\n",
            s.last_log_index, s.committed_index, s.applied_index
        )?;
        let mut rows = vec![
            [
                "NODE",
                "ROLE",
                "SMTP",
                "ADMIN",
                "CLUSTER",
                "MATCHED",
                "LAG",
                "LAST CONTACT",
                "DISK FREE",
            ]
            .map(String::from)
            .to_vec(),
        ];
        let dash = || "-".to_owned();
        for (m, d) in view.members.iter().zip(&disks) {
            rows.push(vec![
                m.id.to_string(),
                m.role.clone(),
                m.smtp_addr.clone(),
                m.admin_addr.clone(),
                m.cluster_addr.clone(),
                m.matched_index.map(|i| i.to_string()).unwrap_or_else(dash),
                lag(m.matched_index)
                    .map(|l| l.to_string())
                    .unwrap_or_else(dash),
                m.last_contact_ms
                    .map(|ms| format!("{ms} ms ago"))
                    .unwrap_or_else(dash),
                match d {
                    Ok(i) => match (i.data_free_bytes, i.data_total_bytes) {
                        (Some(free), Some(total)) if total > 0 => format!(
                            "{} ({}%)",
                            bytes_text(free),
                            free.saturating_mul(100) / total
                        ),
                        _ => dash(),
                    },
                    Err(e) => format!("({e})"),
                },
            ]);
        }
        print_table(&mut out, &rows)?;
    }
    Ok(())
}

async fn join(
    client: &mut Client,
    access: &Access,
    output: Output,
    out: &mut impl Write,
    args: JoinArgs,
) -> anyhow::Result<()> {
    let req = match (&args.node_endpoint, args.id, &args.cluster_addr) {
        (Some(ep), _, _) => {
            let info = access
                .connect(ep)?
                .node_info(NodeInfoRequest {})
                .await?
                .into_inner();
            ClusterJoinRequest {
                node_id: info.node_id,
                cluster_addr: info.cluster_addr,
                smtp_addr: info.smtp_addr,
                admin_addr: info.admin_addr,
                pristine: !info.initialized,
            }
        }
        (None, Some(id), Some(addr)) => ClusterJoinRequest {
            node_id: id,
            cluster_addr: addr.clone(),
            smtp_addr: args.smtp_addr.clone(),
            admin_addr: args.admin_addr.clone(),
            pristine: false,
        },
        _ => {
            anyhow::bail!("give the new node's admin endpoint, or --id and --cluster-addr")
        }
    };
    let id = req.node_id;
    client.cluster_join(req).await?;
    if output == Output::Json {
        writeln!(out, "{}", json!({"joined": id}))?;
    } else {
        writeln!(out, "node {id} joined the cluster as a voter")?;
    }
    Ok(())
}
