//! `mxraftctl dns`: the MX and address records to publish for the protected domains, and a
//! check of what DNS really publishes against the cluster.
//!
//! The cluster's side comes from the nodes (each one's `smtp.hostname`, public addresses and
//! `[[domains]]` preferences, through `NodeInfo`); the DNS side is resolved from where
//! `mxraftctl` runs, through the system resolver or the name servers given.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};

use mxraft_dns::{DnsError, HickoryResolver, Mx, Resolver};
use mxraft_proto::admin::{ClusterStatusRequest, DnsDomain, NodeInfoRequest};

use crate::Output;
use crate::access::{Access, Client};
use crate::cluster::member_info;
use crate::output::print_table;

/// How long one DNS query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Subcommand)]
pub(crate) enum DnsCommand {
    /// The MX records to publish for each protected domain (the primary at its preference,
    /// every node one step above it, at one preference), and the nodes' A/AAAA records.
    Records {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Print zone-file lines to paste into the zone instead of a table.
        #[arg(long)]
        zone: bool,
    },
    /// Resolve a protected domain's MX set and addresses and check them against the cluster,
    /// each with a verdict; exits non-zero on any problem, for monitoring.
    Check {
        /// The domain.
        domain: String,
        /// Ask this name server (`IP` or `IP:PORT`; repeat to compare several) instead of the
        /// system resolver and the domain's own NS records. The first one answers the checks;
        /// all of them are compared.
        #[arg(long = "nameserver", value_name = "IP[:PORT]", value_parser = parse_server)]
        nameservers: Vec<SocketAddr>,
    },
}

fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not IP or IP:PORT"))
}

/// Runs one `dns` command.
pub(crate) async fn run(
    cmd: DnsCommand,
    client: &mut Client,
    access: &Access,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let plan = Plan::gather(client, access).await?;
    match cmd {
        DnsCommand::Records { domain, zone } => {
            let domains = plan.domains(domain.as_deref())?;
            print_records(&plan, &domains, zone, output, out)?;
            for p in plan.warnings.iter().chain(&plan.problems) {
                eprintln!("mxraftctl: {p}");
            }
            if !plan.problems.is_empty() {
                anyhow::bail!(
                    "the records above are incomplete or wrong: {} problem(s) in the cluster's setup",
                    plan.problems.len()
                );
            }
            Ok(())
        }
        DnsCommand::Check {
            domain,
            nameservers,
        } => {
            let d = plan
                .domains(Some(&domain))?
                .pop()
                .expect("domains() returns the asked domain or an error");
            let observed = Observed::resolve(&d.name, &nameservers).await?;
            let mut findings: Vec<Finding> = plan
                .problems
                .iter()
                .map(|p| Finding::problem("cluster", p.clone()))
                .collect();
            // The addresses the nodes do not know are DNS's to tell: the check shows them.
            findings.extend(evaluate(&d, &plan.nodes, &observed));
            print_findings(&d.name, &observed, &findings, output, out)?;
            let problems = findings
                .iter()
                .filter(|f| f.verdict == Verdict::Problem)
                .count();
            if problems > 0 {
                anyhow::bail!("{}: {problems} problem(s) in its DNS setup", d.name);
            }
            Ok(())
        }
    }
}

/// A node as the DNS setup sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) id: u64,
    /// Its MX host name (`smtp.hostname`).
    pub(crate) mx_host: String,
    /// The addresses it is reached at; empty when it does not know.
    pub(crate) addresses: Vec<IpAddr>,
}

/// The cluster's side of the DNS setup.
struct Plan {
    domains: Vec<DnsDomain>,
    nodes: Vec<Node>,
    /// What keeps the records from being complete and right.
    problems: Vec<String>,
    /// What the records leave out.
    warnings: Vec<String>,
}

impl Plan {
    /// Asks the endpoint's node for the domains and every member for its host name and
    /// addresses.
    async fn gather(client: &mut Client, access: &Access) -> anyhow::Result<Plan> {
        let own = client.node_info(NodeInfoRequest {}).await?.into_inner();
        let status = client
            .cluster_status(ClusterStatusRequest {})
            .await?
            .into_inner();
        let mut infos = Vec::new();
        for m in &status.members {
            let info = if m.id == own.node_id {
                Ok(own.clone())
            } else {
                member_info(access, &m.admin_addr).await
            };
            infos.push((m.id, info));
        }
        let mut problems = Vec::new();
        let mut nodes = Vec::new();
        for (id, info) in infos {
            match info {
                Err(e) => problems.push(format!(
                    "node {id} does not answer ({e}): its MX host name and addresses are unknown"
                )),
                Ok(i) => {
                    if i.domains != own.domains {
                        problems.push(format!(
                            "node {id} protects other domains or preferences than node {}: give \
                             every node the same [[domains]]",
                            own.node_id
                        ));
                    }
                    nodes.push(Node {
                        id,
                        mx_host: i.mx_host.trim_end_matches('.').to_ascii_lowercase(),
                        addresses: i
                            .public_addresses
                            .iter()
                            .filter_map(|a| a.parse().ok())
                            .collect(),
                    });
                }
            }
        }
        let (node_problems, warnings) = node_problems(&nodes);
        problems.extend(node_problems);
        Ok(Plan {
            domains: own.domains,
            nodes,
            problems,
            warnings,
        })
    }

    /// The protected domains, or only `name`; an unknown name is an error listing them.
    fn domains(&self, name: Option<&str>) -> anyhow::Result<Vec<DnsDomain>> {
        let Some(name) = name else {
            return Ok(self.domains.clone());
        };
        let wanted = name.trim_end_matches('.').to_ascii_lowercase();
        match self.domains.iter().find(|d| d.name == wanted) {
            Some(d) => Ok(vec![d.clone()]),
            None => anyhow::bail!(
                "{name} is not a protected domain of this cluster (it protects: {})",
                self.domains
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The MX hosts the nodes are published under: one per node, or one for several nodes
/// behind a load balancer or sharing an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    pub(crate) name: String,
    pub(crate) nodes: Vec<u64>,
    /// The union of the nodes' addresses.
    pub(crate) addresses: BTreeSet<IpAddr>,
}

impl Host {
    /// `node 2 (mx2.example.net)` or `nodes 1, 2 (mx.example.net)`.
    fn who(&self) -> String {
        let ids: Vec<String> = self.nodes.iter().map(u64::to_string).collect();
        let plural = if ids.len() == 1 { "" } else { "s" };
        format!("node{plural} {} ({})", ids.join(", "), self.name)
    }
}

/// The nodes grouped by MX host name, in the order the hosts first appear.
pub(crate) fn hosts(nodes: &[Node]) -> Vec<Host> {
    let mut out: Vec<Host> = Vec::new();
    for n in nodes {
        let host = match out.iter_mut().position(|h| h.name == n.mx_host) {
            Some(i) => &mut out[i],
            None => {
                out.push(Host {
                    name: n.mx_host.clone(),
                    nodes: Vec::new(),
                    addresses: BTreeSet::new(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        host.nodes.push(n.id);
        host.addresses.extend(n.addresses.iter().copied());
    }
    out
}

/// What keeps the nodes from being published as they are (problems), and what is left for
/// DNS to tell (warnings).
pub(crate) fn node_problems(nodes: &[Node]) -> (Vec<String>, Vec<String>) {
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    for h in hosts(nodes) {
        if !h.name.contains('.') || h.name.parse::<IpAddr>().is_ok() {
            problems.push(format!(
                "{}: {:?} is not a fully qualified name to publish as an MX host: set \
                 smtp.hostname",
                h.who(),
                h.name
            ));
        }
        if h.addresses.is_empty() {
            warnings.push(format!(
                "{}: no public address is known, so no A/AAAA record is printed (publish the \
                 address clients reach it at, or set smtp.public_addresses)",
                h.who()
            ));
        }
    }
    (problems, warnings)
}

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) name: String,
    /// `MX`, `A` or `AAAA`.
    pub(crate) kind: &'static str,
    pub(crate) preference: Option<u16>,
    /// The MX host or the address; `None` for a primary whose MX host is not configured.
    pub(crate) value: Option<String>,
    /// The nodes it is for; empty for the primary.
    pub(crate) nodes: Vec<u64>,
}

fn preference(p: u32) -> u16 {
    u16::try_from(p).unwrap_or(u16::MAX)
}

/// The records to publish for `domains`: per domain the primary and every node's host,
/// then each host's addresses once.
pub(crate) fn records(domains: &[DnsDomain], nodes: &[Node]) -> Vec<Record> {
    let hosts = hosts(nodes);
    let mut out = Vec::new();
    for d in domains {
        out.push(Record {
            name: d.name.clone(),
            kind: "MX",
            preference: Some(preference(d.primary_preference)),
            value: d.primary_mx.clone(),
            nodes: Vec::new(),
        });
        for h in &hosts {
            out.push(Record {
                name: d.name.clone(),
                kind: "MX",
                preference: Some(preference(d.backup_preference)),
                value: Some(h.name.clone()),
                nodes: h.nodes.clone(),
            });
        }
    }
    for h in &hosts {
        for ip in &h.addresses {
            out.push(Record {
                name: h.name.clone(),
                kind: if ip.is_ipv4() { "A" } else { "AAAA" },
                preference: None,
                value: Some(ip.to_string()),
                nodes: h.nodes.clone(),
            });
        }
    }
    out
}

fn nodes_text(nodes: &[u64]) -> String {
    match nodes {
        [] => "primary".to_owned(),
        [one] => format!("node {one}"),
        many => format!(
            "nodes {}",
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Zone-file lines for `records`; a primary without a configured MX host is a comment.
pub(crate) fn zone_lines(records: &[Record]) -> Vec<String> {
    let mut lines = vec![
        "; MX records: the primary first, every mxraft node at one higher preference".to_owned(),
    ];
    let mut addresses_started = false;
    for r in records {
        let data = match (r.preference, &r.value) {
            (Some(p), Some(host)) => format!("{p} {host}."),
            (Some(p), None) => {
                lines.push(format!(
                    "; {}.\tIN\tMX\t{p} <the primary's MX host: set domains.primary_mx>",
                    r.name
                ));
                continue;
            }
            (None, Some(ip)) => {
                if !addresses_started {
                    lines.push(
                        "; The nodes' addresses: plain records (not proxied), so that senders \
                         reach the nodes themselves"
                            .to_owned(),
                    );
                    addresses_started = true;
                }
                ip.clone()
            }
            (None, None) => continue,
        };
        lines.push(format!("{}.\tIN\t{}\t{data}", r.name, r.kind));
    }
    lines
}

fn print_records(
    plan: &Plan,
    domains: &[DnsDomain],
    zone: bool,
    output: Output,
    mut out: &mut impl Write,
) -> anyhow::Result<()> {
    let records = records(domains, &plan.nodes);
    if zone {
        for line in zone_lines(&records) {
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    if output == Output::Json {
        let rows: Vec<Value> = records
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "type": r.kind,
                    "preference": r.preference,
                    "value": r.value,
                    "role": if r.nodes.is_empty() { "primary" } else { "node" },
                    "node_ids": r.nodes,
                })
            })
            .collect();
        let v = json!({"records": rows, "problems": plan.problems, "warnings": plan.warnings});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let mut rows = vec![
        ["NAME", "TYPE", "PREF", "VALUE", "FOR"]
            .map(String::from)
            .to_vec(),
    ];
    for r in &records {
        rows.push(vec![
            r.name.clone(),
            r.kind.to_owned(),
            r.preference.map(|p| p.to_string()).unwrap_or_default(),
            r.value
                .clone()
                .unwrap_or_else(|| "(the primary's MX host: set domains.primary_mx)".into()),
            nodes_text(&r.nodes),
        ]);
    }
    print_table(&mut out, &rows)?;
    Ok(())
}

/// What one name server says about the domain.
#[derive(Debug, Clone)]
pub(crate) struct ServerView {
    pub(crate) server: String,
    pub(crate) serial: Result<u32, DnsError>,
    pub(crate) mx: Result<Vec<Mx>, DnsError>,
}

/// What DNS says about an MX host.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) cname: Result<Option<String>, DnsError>,
    pub(crate) addresses: Result<Vec<IpAddr>, DnsError>,
}

/// The DNS side: what was resolved for the domain.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    /// Who answered the checks.
    pub(crate) through: String,
    pub(crate) mx: Result<Vec<Mx>, DnsError>,
    /// Per MX host name (not for addresses written as MX hosts, nor a null MX).
    pub(crate) targets: BTreeMap<String, Target>,
    pub(crate) servers: Vec<ServerView>,
    /// Why there are no servers to compare.
    pub(crate) servers_error: Option<String>,
}

fn sorted(mut mx: Vec<Mx>) -> Vec<Mx> {
    mx.sort_by(|a, b| (a.preference, &a.host).cmp(&(b.preference, &b.host)));
    mx.dedup();
    mx
}

impl Observed {
    async fn resolve(domain: &str, nameservers: &[SocketAddr]) -> anyhow::Result<Observed> {
        let checking = |servers: &[SocketAddr]| HickoryResolver::checking(servers, QUERY_TIMEOUT);
        let main = checking(&nameservers[..nameservers.len().min(1)])?;
        let through = match nameservers.first() {
            Some(s) => s.to_string(),
            None => "the system resolver".to_owned(),
        };
        let mx = main.mx(domain).await.map(sorted);
        let mut targets = BTreeMap::new();
        for m in mx.as_deref().unwrap_or_default() {
            if m.host.is_empty() || m.host.parse::<IpAddr>().is_ok() {
                continue;
            }
            if targets.contains_key(&m.host) {
                continue;
            }
            let target = Target {
                cname: main.cname(&m.host).await,
                addresses: main.addresses(&m.host).await.map(|mut a| {
                    a.sort();
                    a.dedup();
                    a
                }),
            };
            targets.insert(m.host.clone(), target);
        }
        let mut servers_error = None;
        let mut asked: Vec<(String, Result<SocketAddr, DnsError>)> = nameservers
            .iter()
            .map(|s| (s.to_string(), Ok(*s)))
            .collect();
        if nameservers.is_empty() {
            match main.name_servers(domain).await {
                Err(e) => servers_error = Some(format!("the domain's NS records: {e}")),
                Ok(names) => {
                    for name in names {
                        match main.addresses(&name).await {
                            Ok(ips) => {
                                asked.extend(ips.into_iter().map(|ip| {
                                    (format!("{name} ({ip})"), Ok(SocketAddr::new(ip, 53)))
                                }))
                            }
                            Err(e) => asked.push((name, Err(e))),
                        }
                    }
                }
            }
        }
        let mut servers = Vec::new();
        for (label, addr) in asked {
            let view = match addr {
                Err(e) => ServerView {
                    server: label,
                    serial: Err(e.clone()),
                    mx: Err(e),
                },
                Ok(addr) => {
                    let r = checking(&[addr])?;
                    ServerView {
                        server: label,
                        serial: r.soa_serial(domain).await,
                        mx: r.mx(domain).await.map(sorted),
                    }
                }
            };
            servers.push(view);
        }
        Ok(Observed {
            through,
            mx,
            targets,
            servers,
            servers_error,
        })
    }
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok,
    Warning,
    Problem,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warning => "warning",
            Verdict::Problem => "problem",
        }
    }
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) check: &'static str,
    pub(crate) verdict: Verdict,
    pub(crate) detail: String,
}

impl Finding {
    fn new(check: &'static str, verdict: Verdict, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            verdict,
            detail: detail.into(),
        }
    }
    fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding::new(check, Verdict::Ok, detail)
    }
    fn warning(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding::new(check, Verdict::Warning, detail)
    }
    fn problem(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding::new(check, Verdict::Problem, detail)
    }
}

fn mx_text(mx: &[Mx]) -> String {
    mx.iter()
        .map(|m| {
            if m.host.is_empty() {
                format!("{} .", m.preference)
            } else {
                format!("{} {}", m.preference, m.host)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ips_text(ips: &BTreeSet<IpAddr>) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The verdicts on what DNS publishes for `d`, given the cluster's `nodes`.
pub(crate) fn evaluate(d: &DnsDomain, nodes: &[Node], obs: &Observed) -> Vec<Finding> {
    let mut f = Vec::new();
    let mx = match &obs.mx {
        Ok(mx) => {
            f.push(Finding::ok(
                "mx records",
                format!("{} published: {}", mx.len(), mx_text(mx)),
            ));
            mx.as_slice()
        }
        Err(e) => {
            f.push(Finding::problem(
                "mx records",
                match e {
                    DnsError::NxDomain(_) => "the domain does not exist (NXDOMAIN)".to_owned(),
                    DnsError::NoRecords(_) => "no MX records: senders use the domain's own \
                                               address (RFC 5321 §5.1) and never try the backups"
                        .to_owned(),
                    DnsError::Temporary(_, why) => format!("the lookup failed: {why}"),
                },
            ));
            f.extend(name_server_findings(obs));
            return f;
        }
    };
    if mx.iter().any(|m| m.host.is_empty()) {
        f.push(Finding::problem(
            "null mx",
            "a null MX (\"MX 0 .\", RFC 7505) says the domain takes no mail: senders bounce it \
             at once instead of trying the backups",
        ));
    } else {
        f.push(Finding::ok("null mx", "none"));
    }
    let published: BTreeSet<&str> = mx
        .iter()
        .map(|m| m.host.as_str())
        .filter(|h| !h.is_empty())
        .collect();
    for host in &published {
        f.push(host_finding(host, obs.targets.get(*host)));
    }

    let node_hosts = hosts(nodes);
    let roles = Roles::of(d, &node_hosts, mx);
    f.extend(primary_findings(d, &roles));
    f.extend(backup_findings(d, &node_hosts, &published, &roles));
    f.extend(address_findings(&node_hosts, obs));
    f.extend(name_server_findings(obs));
    f
}

/// The published MX records by role.
struct Roles<'a> {
    primaries: Vec<&'a Mx>,
    backups: Vec<&'a Mx>,
    /// Neither the primary nor a node (only when `primary_mx` names the primary).
    others: Vec<&'a Mx>,
}

impl<'a> Roles<'a> {
    fn of(d: &DnsDomain, node_hosts: &[Host], mx: &'a [Mx]) -> Roles<'a> {
        let is_node = |h: &str| node_hosts.iter().any(|n| n.name == h);
        let is_primary = |h: &str| match &d.primary_mx {
            Some(p) => h == p,
            None => !is_node(h),
        };
        let mut roles = Roles {
            primaries: Vec::new(),
            backups: Vec::new(),
            others: Vec::new(),
        };
        for m in mx.iter().filter(|m| !m.host.is_empty()) {
            if is_primary(&m.host) {
                roles.primaries.push(m);
            } else if is_node(&m.host) {
                roles.backups.push(m);
            } else {
                roles.others.push(m);
            }
        }
        roles
    }
}

/// The primary is published, at the lowest preference.
fn primary_findings(d: &DnsDomain, roles: &Roles) -> Vec<Finding> {
    let mut f = Vec::new();
    let primary_preference = preference(d.primary_preference);

    match roles.primaries.iter().min_by_key(|m| m.preference) {
        None => f.push(Finding::problem(
            "primary",
            match &d.primary_mx {
                Some(p) => {
                    format!("the primary {p} is not published: add MX {primary_preference} {p}")
                }
                None => "only the cluster's nodes are published: publish the primary's MX host \
                         at a lower preference (and set domains.primary_mx)"
                    .to_owned(),
            },
        )),
        Some(lowest) => {
            let rival = roles
                .backups
                .iter()
                .chain(&roles.others)
                .filter(|m| m.preference <= lowest.preference)
                .min_by_key(|m| m.preference);
            match rival {
                Some(r) => f.push(Finding::problem(
                    "primary",
                    format!(
                        "the primary {} at {} is not the lowest preference: {} is at {}, so \
                         senders do not try the primary first",
                        lowest.host, lowest.preference, r.host, r.preference
                    ),
                )),
                None => f.push(Finding::ok(
                    "primary",
                    format!(
                        "{} at {}, the lowest preference",
                        lowest.host, lowest.preference
                    ),
                )),
            }
            if d.primary_mx.is_some() && lowest.preference != primary_preference {
                f.push(Finding::warning(
                    "primary",
                    format!(
                        "published at {}, configured at {primary_preference} \
                         (domains.primary_preference)",
                        lowest.preference
                    ),
                ));
            }
        }
    }

    f
}

/// Every node is published, all at the one configured preference.
fn backup_findings(
    d: &DnsDomain,
    node_hosts: &[Host],
    published: &BTreeSet<&str>,
    roles: &Roles,
) -> Vec<Finding> {
    let mut f = Vec::new();
    let backup_preference = preference(d.backup_preference);
    let mut missing = 0;
    for h in node_hosts {
        if !published.contains(h.name.as_str()) {
            missing += 1;
            f.push(Finding::problem(
                "backups",
                format!(
                    "{} is not published: add MX {backup_preference} {}",
                    h.who(),
                    h.name
                ),
            ));
        }
    }
    let preferences: BTreeSet<u16> = roles.backups.iter().map(|m| m.preference).collect();
    match preferences.iter().collect::<Vec<_>>()[..] {
        [] => {}
        [p] if *p != backup_preference => {
            let detail = format!(
                "the nodes are published at {p}, but configured at {backup_preference}"
            );
            if d.routes_by_mx {
                f.push(Finding::problem(
                    "backups",
                    format!(
                        "{detail} (mx_preference): the cluster delivers to the MX hosts below its \
                         own preference, so a mismatch can send mail in a loop or past the primary"
                    ),
                ));
            } else {
                f.push(Finding::warning(
                    "backups",
                    format!("{detail} (primary_preference + 10)"),
                ));
            }
        }
        [p] if missing == 0 => f.push(Finding::ok(
            "backups",
            format!(
                "every node ({}) at {p}, above the primary",
                node_hosts
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        [_] => {}
        _ => f.push(Finding::problem(
            "backups",
            format!(
                "the nodes are published at different preferences ({}): publish them all at \
                 {backup_preference}, so that senders spread over them and none waits behind another",
                preferences
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
    for o in &roles.others {
        f.push(Finding::warning(
            "other hosts",
            format!(
                "{} at {} is neither the primary nor a node of this cluster",
                o.host, o.preference
            ),
        ));
    }

    f
}

/// Each node's name resolves to the node's addresses, and only to them.
fn address_findings(node_hosts: &[Host], obs: &Observed) -> Vec<Finding> {
    let mut f = Vec::new();
    for h in node_hosts {
        let Some(Target {
            addresses: Ok(got), ..
        }) = obs.targets.get(&h.name)
        else {
            continue;
        };
        let got: BTreeSet<IpAddr> = got.iter().copied().collect();
        let want = &h.addresses;
        if want.is_empty() {
            f.push(Finding::warning(
                "node addresses",
                format!(
                    "{} resolves to {}; no public address is configured to compare \
                     (smtp.public_addresses)",
                    h.who(),
                    ips_text(&got)
                ),
            ));
        } else if got == *want {
            f.push(Finding::ok(
                "node addresses",
                format!("{} resolves to {}", h.who(), ips_text(&got)),
            ));
        } else {
            let extra: BTreeSet<IpAddr> = got.difference(want).copied().collect();
            let mut detail = format!(
                "{} resolves to {}, but is at {}",
                h.who(),
                ips_text(&got),
                ips_text(want)
            );
            if !extra.is_empty() {
                detail.push_str(&format!(
                    "; mail sent to {} does not reach it (a proxied record?)",
                    ips_text(&extra)
                ));
            }
            f.push(Finding::problem("node addresses", detail));
        }
    }
    f
}

fn host_finding(host: &str, target: Option<&Target>) -> Finding {
    if host.parse::<IpAddr>().is_ok() {
        return Finding::problem(
            "mx host",
            format!(
                "{host} is an address: an MX names a host with A/AAAA records (RFC 5321 §5.1), \
                 and senders look {host} up as a name and fail"
            ),
        );
    }
    let Some(t) = target else {
        return Finding::problem("mx host", format!("{host} was not resolved"));
    };
    if let Ok(Some(alias_of)) = &t.cname {
        return Finding::problem(
            "mx host",
            format!(
                "{host} is a CNAME (to {alias_of}): an MX must name a host with its own A/AAAA \
                 records (RFC 2181 §10.3), and many senders refuse an alias"
            ),
        );
    }
    match &t.addresses {
        Ok(ips) => {
            let ips: BTreeSet<IpAddr> = ips.iter().copied().collect();
            match &t.cname {
                Err(e) => Finding::warning(
                    "mx host",
                    format!(
                        "{host}: {}; whether it is a CNAME is unknown: {e}",
                        ips_text(&ips)
                    ),
                ),
                Ok(_) => Finding::ok("mx host", format!("{host}: {}", ips_text(&ips))),
            }
        }
        Err(DnsError::NxDomain(_)) => {
            Finding::problem("mx host", format!("{host} does not exist (NXDOMAIN)"))
        }
        Err(DnsError::NoRecords(_)) => Finding::problem(
            "mx host",
            format!("{host} has no A or AAAA records: senders cannot reach it"),
        ),
        Err(DnsError::Temporary(_, why)) => {
            Finding::problem("mx host", format!("{host}: the lookup failed: {why}"))
        }
    }
}

/// Whether the name servers agree: the same SOA serial and the same MX set from each.
fn name_server_findings(obs: &Observed) -> Vec<Finding> {
    let mut f = Vec::new();
    if obs.servers.is_empty() {
        f.push(Finding::warning(
            "name servers",
            obs.servers_error
                .clone()
                .unwrap_or_else(|| "no name server to compare".to_owned()),
        ));
        return f;
    }
    for s in &obs.servers {
        if let Err(e) = &s.serial {
            f.push(Finding::problem(
                "name servers",
                format!("{}: no SOA serial: {e}", s.server),
            ));
        }
        if let (Ok(_), Err(e)) = (&s.serial, &s.mx)
            && !matches!(
                obs.mx,
                Err(DnsError::NoRecords(_)) | Err(DnsError::NxDomain(_))
            )
        {
            f.push(Finding::problem(
                "name servers",
                format!("{}: no MX answer: {e}", s.server),
            ));
        }
    }
    let serials: BTreeSet<u32> = obs
        .servers
        .iter()
        .filter_map(|s| s.serial.as_ref().ok().copied())
        .collect();
    let answers: BTreeSet<String> = obs
        .servers
        .iter()
        .filter_map(|s| s.mx.as_ref().ok().map(|mx| mx_text(mx)))
        .collect();
    if serials.len() > 1 {
        f.push(Finding::problem(
            "name servers",
            format!(
                "the SOA serials differ ({}): a server has not caught up with the zone",
                obs.servers
                    .iter()
                    .filter_map(|s| s.serial.as_ref().ok().map(|n| format!("{} {n}", s.server)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if answers.len() > 1 {
        f.push(Finding::problem(
            "name servers",
            format!(
                "the MX answers differ: {}",
                obs.servers
                    .iter()
                    .filter_map(|s| s.mx.as_ref().ok().map(|mx| format!(
                        "{} says {}",
                        s.server,
                        mx_text(mx)
                    )))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
    }
    if f.is_empty() {
        f.push(Finding::ok(
            "name servers",
            format!(
                "{} server(s) agree: serial {}, the same MX set",
                obs.servers.len(),
                serials
                    .iter()
                    .next()
                    .map(u32::to_string)
                    .unwrap_or_default()
            ),
        ));
    }
    f
}

fn print_findings(
    domain: &str,
    obs: &Observed,
    findings: &[Finding],
    output: Output,
    mut out: &mut impl Write,
) -> anyhow::Result<()> {
    let count = |v: Verdict| findings.iter().filter(|f| f.verdict == v).count();
    let (problems, warnings) = (count(Verdict::Problem), count(Verdict::Warning));
    if output == Output::Json {
        let error = |e: &DnsError| e.to_string();
        let v = json!({
            "domain": domain,
            "through": obs.through,
            "ok": problems == 0,
            "problems": problems,
            "warnings": warnings,
            "checks": findings.iter().map(|f| json!({
                "check": f.check,
                "verdict": f.verdict.as_str(),
                "detail": f.detail,
            })).collect::<Vec<_>>(),
            "mx": obs.mx.as_ref().ok().map(|mx| mx.iter().map(|m| json!({
                "preference": m.preference,
                "host": m.host,
            })).collect::<Vec<_>>()),
            "servers": obs.servers.iter().map(|s| json!({
                "server": s.server,
                "serial": s.serial.as_ref().ok(),
                "mx": s.mx.as_ref().ok().map(|mx| mx_text(mx)),
                "error": s.serial.as_ref().err().or(s.mx.as_ref().err()).map(error),
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "{domain}, asked {}\n", obs.through)?;
    let mut rows = vec![["CHECK", "VERDICT", "DETAIL"].map(String::from).to_vec()];
    for f in findings {
        rows.push(vec![
            f.check.to_owned(),
            f.verdict.as_str().to_owned(),
            f.detail.clone(),
        ]);
    }
    print_table(&mut out, &rows)?;
    writeln!(
        out,
        "\n{}: {problems} problem(s), {warnings} warning(s)",
        if problems == 0 { "ok" } else { "NOT OK" }
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(primary_mx: Option<&str>, routes_by_mx: bool) -> DnsDomain {
        DnsDomain {
            name: "example.test".into(),
            primary_mx: primary_mx.map(String::from),
            primary_preference: 10,
            backup_preference: 20,
            routes_by_mx,
        }
    }

    fn nodes() -> Vec<Node> {
        (1..=3)
            .map(|id| Node {
                id,
                mx_host: format!("node{id}.mxraft.test"),
                addresses: vec![format!("192.0.2.{id}").parse().expect("address")],
            })
            .collect()
    }

    fn mx(records: &[(u16, &str)]) -> Vec<Mx> {
        sorted(
            records
                .iter()
                .map(|(p, h)| Mx {
                    preference: *p,
                    host: (*h).into(),
                })
                .collect(),
        )
    }

    /// What a zone with `records` (and the hosts' `addresses`) resolves to, from one server
    /// with `serial`.
    fn observed(records: &[(u16, &str)], addresses: &[(&str, &str)]) -> Observed {
        let mx = mx(records);
        let mut targets = BTreeMap::new();
        for m in &mx {
            if m.host.is_empty() || m.host.parse::<IpAddr>().is_ok() {
                continue;
            }
            let ips: Vec<IpAddr> = addresses
                .iter()
                .filter(|(h, _)| *h == m.host)
                .map(|(_, ip)| ip.parse().expect("address"))
                .collect();
            targets.insert(
                m.host.clone(),
                Target {
                    cname: Ok(None),
                    addresses: if ips.is_empty() {
                        Err(DnsError::NoRecords(m.host.clone()))
                    } else {
                        Ok(ips)
                    },
                },
            );
        }
        Observed {
            through: "192.0.2.53:53".into(),
            mx: Ok(mx.clone()),
            targets,
            servers: vec![ServerView {
                server: "192.0.2.53:53".into(),
                serial: Ok(7),
                mx: Ok(mx),
            }],
            servers_error: None,
        }
    }

    fn good() -> Observed {
        observed(
            &[
                (10, "mx.example.test"),
                (20, "node1.mxraft.test"),
                (20, "node2.mxraft.test"),
                (20, "node3.mxraft.test"),
            ],
            &[
                ("mx.example.test", "192.0.2.10"),
                ("node1.mxraft.test", "192.0.2.1"),
                ("node2.mxraft.test", "192.0.2.2"),
                ("node3.mxraft.test", "192.0.2.3"),
            ],
        )
    }

    fn problems_of(findings: &[Finding]) -> Vec<(&'static str, String)> {
        findings
            .iter()
            .filter(|f| f.verdict == Verdict::Problem)
            .map(|f| (f.check, f.detail.clone()))
            .collect()
    }

    #[test]
    fn a_good_setup_passes_every_check() {
        for primary in [Some("mx.example.test"), None] {
            let f = evaluate(&domain(primary, false), &nodes(), &good());
            assert_eq!(problems_of(&f), vec![], "{f:#?}");
            assert!(f.iter().all(|f| f.verdict == Verdict::Ok), "{f:#?}");
            for check in [
                "mx records",
                "null mx",
                "primary",
                "backups",
                "name servers",
            ] {
                assert!(
                    f.iter().any(|f| f.check == check),
                    "{check} missing: {f:#?}"
                );
            }
            assert_eq!(f.iter().filter(|f| f.check == "node addresses").count(), 3);
        }
    }

    #[test]
    fn a_backup_below_the_primary_is_a_problem() {
        let mut obs = good();
        let records = [
            (10, "mx.example.test"),
            (5, "node1.mxraft.test"),
            (20, "node2.mxraft.test"),
            (20, "node3.mxraft.test"),
        ];
        obs.mx = Ok(mx(&records));
        obs.servers[0].mx = Ok(mx(&records));
        let p = problems_of(&evaluate(
            &domain(Some("mx.example.test"), false),
            &nodes(),
            &obs,
        ));
        assert!(
            p.iter()
                .any(|(c, d)| *c == "primary" && d.contains("node1.mxraft.test is at 5")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|(c, d)| *c == "backups" && d.contains("different preferences (5, 20)")),
            "{p:?}"
        );
    }

    #[test]
    fn a_missing_node_and_a_missing_primary_are_named() {
        let obs = observed(
            &[(20, "node1.mxraft.test"), (20, "node2.mxraft.test")],
            &[
                ("node1.mxraft.test", "192.0.2.1"),
                ("node2.mxraft.test", "192.0.2.2"),
            ],
        );
        let p = problems_of(&evaluate(
            &domain(Some("mx.example.test"), false),
            &nodes(),
            &obs,
        ));
        assert_eq!(
            p,
            vec![
                (
                    "primary",
                    "the primary mx.example.test is not published: add MX 10 mx.example.test"
                        .to_owned()
                ),
                (
                    "backups",
                    "node 3 (node3.mxraft.test) is not published: add MX 20 node3.mxraft.test"
                        .to_owned()
                ),
            ]
        );
        // Without primary_mx, the nodes alone leave no primary either.
        let p = problems_of(&evaluate(&domain(None, false), &nodes(), &obs));
        assert!(p.iter().any(|(c, _)| *c == "primary"), "{p:?}");
    }

    #[test]
    fn a_preference_other_than_mx_preference_is_a_problem_only_when_routing_by_mx() {
        let obs = observed(
            &[
                (10, "mx.example.test"),
                (30, "node1.mxraft.test"),
                (30, "node2.mxraft.test"),
                (30, "node3.mxraft.test"),
            ],
            &[
                ("mx.example.test", "192.0.2.10"),
                ("node1.mxraft.test", "192.0.2.1"),
                ("node2.mxraft.test", "192.0.2.2"),
                ("node3.mxraft.test", "192.0.2.3"),
            ],
        );
        let by_mx = evaluate(&domain(None, true), &nodes(), &obs);
        assert!(
            problems_of(&by_mx)
                .iter()
                .any(|(c, d)| *c == "backups" && d.contains("published at 30")),
            "{by_mx:#?}"
        );
        let fixed = evaluate(&domain(None, false), &nodes(), &obs);
        assert_eq!(problems_of(&fixed), vec![]);
        assert!(
            fixed
                .iter()
                .any(|f| f.check == "backups" && f.verdict == Verdict::Warning)
        );
    }

    #[test]
    fn bad_mx_hosts_are_each_named() {
        let mut obs = observed(
            &[
                (0, ""),
                (10, "192.0.2.10"),
                (20, "alias.example.test"),
                (20, "bare.example.test"),
            ],
            &[("alias.example.test", "192.0.2.1")],
        );
        obs.targets
            .get_mut("alias.example.test")
            .expect("resolved")
            .cname = Ok(Some("node1.mxraft.test".into()));
        let p = problems_of(&evaluate(&domain(None, false), &nodes(), &obs));
        let has = |check: &str, text: &str| p.iter().any(|(c, d)| c == &check && d.contains(text));
        assert!(has("null mx", "RFC 7505"), "{p:?}");
        assert!(has("mx host", "192.0.2.10 is an address"), "{p:?}");
        assert!(has("mx host", "alias.example.test is a CNAME"), "{p:?}");
        assert!(
            has("mx host", "bare.example.test has no A or AAAA"),
            "{p:?}"
        );
        assert!(has(
            "backups",
            "node 1 (node1.mxraft.test) is not published"
        ));
    }

    #[test]
    fn a_node_name_resolving_elsewhere_is_a_problem() {
        let obs = observed(
            &[
                (10, "mx.example.test"),
                (20, "node1.mxraft.test"),
                (20, "node2.mxraft.test"),
                (20, "node3.mxraft.test"),
            ],
            &[
                ("mx.example.test", "192.0.2.10"),
                ("node1.mxraft.test", "198.51.100.7"),
                ("node2.mxraft.test", "192.0.2.2"),
                ("node2.mxraft.test", "198.51.100.8"),
                ("node3.mxraft.test", "192.0.2.3"),
            ],
        );
        let p = problems_of(&evaluate(&domain(None, false), &nodes(), &obs));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].1.starts_with(
            "node 1 (node1.mxraft.test) resolves to 198.51.100.7, but is at 192.0.2.1"
        ));
        assert!(
            p[1].1
                .ends_with("mail sent to 198.51.100.8 does not reach it (a proxied record?)"),
            "{p:?}"
        );
    }

    #[test]
    fn name_servers_that_disagree_are_a_problem() {
        let mut obs = good();
        let mut second = obs.servers[0].clone();
        second.server = "192.0.2.54:53".into();
        second.serial = Ok(6);
        second.mx = Ok(mx(&[(10, "mx.example.test"), (20, "node1.mxraft.test")]));
        obs.servers.push(second);
        let p = problems_of(&evaluate(&domain(None, false), &nodes(), &obs));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].1.contains("192.0.2.53:53 7, 192.0.2.54:53 6"), "{p:?}");
        assert!(
            p[1].1
                .contains("192.0.2.54:53 says 10 mx.example.test, 20 node1.mxraft.test"),
            "{p:?}"
        );
        let mut silent = good();
        silent.servers[0].serial = Err(DnsError::Temporary("x".into(), "timed out".into()));
        let p = problems_of(&evaluate(&domain(None, false), &nodes(), &silent));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].1.contains("no SOA serial"), "{p:?}");
    }

    #[test]
    fn no_mx_records_is_a_problem_and_stops_the_mx_checks() {
        let mut obs = good();
        obs.mx = Err(DnsError::NoRecords("example.test".into()));
        let f = evaluate(&domain(None, false), &nodes(), &obs);
        assert_eq!(f[0].verdict, Verdict::Problem);
        assert!(f[0].detail.contains("no MX records"));
        assert!(!f.iter().any(|f| f.check == "backups"));
        assert!(f.iter().any(|f| f.check == "name servers"));
    }

    #[test]
    fn records_put_the_primary_first_and_every_node_at_one_preference() {
        let r = records(&[domain(Some("mx.example.test"), false)], &nodes());
        let lines = zone_lines(&r);
        let body: Vec<&str> = lines
            .iter()
            .filter(|l| !l.starts_with(';'))
            .map(String::as_str)
            .collect();
        assert_eq!(
            body,
            vec![
                "example.test.\tIN\tMX\t10 mx.example.test.",
                "example.test.\tIN\tMX\t20 node1.mxraft.test.",
                "example.test.\tIN\tMX\t20 node2.mxraft.test.",
                "example.test.\tIN\tMX\t20 node3.mxraft.test.",
                "node1.mxraft.test.\tIN\tA\t192.0.2.1",
                "node2.mxraft.test.\tIN\tA\t192.0.2.2",
                "node3.mxraft.test.\tIN\tA\t192.0.2.3",
            ]
        );
        let unset = zone_lines(&records(&[domain(None, false)], &nodes()));
        assert!(
            unset
                .iter()
                .any(|l| l.starts_with("; example.test.") && l.contains("set domains.primary_mx"))
        );
        assert!(
            !unset
                .iter()
                .any(|l| l.starts_with("example.test.\tIN\tMX\t10"))
        );
    }

    #[test]
    fn nodes_sharing_a_name_are_one_mx_host_and_bad_names_are_problems() {
        let mut n = nodes();
        n[1].mx_host = "node1.mxraft.test".into();
        let r = records(&[domain(None, false)], &n);
        let mx: Vec<(Option<&str>, &[u64])> = r
            .iter()
            .filter(|r| r.kind == "MX")
            .map(|r| (r.value.as_deref(), r.nodes.as_slice()))
            .collect();
        assert_eq!(
            mx,
            vec![
                (None, &[][..]),
                (Some("node1.mxraft.test"), &[1, 2][..]),
                (Some("node3.mxraft.test"), &[3][..]),
            ]
        );
        assert_eq!(r.iter().filter(|r| r.kind == "A").count(), 3);
        assert_eq!(node_problems(&n), (vec![], vec![]));

        n[2].mx_host = "localhost".into();
        n[2].addresses.clear();
        let (problems, warnings) = node_problems(&n);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("node 3 (localhost): \"localhost\" is not a fully qualified")
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("node 3 (localhost): no public address is known"));

        // Both nodes behind one name are expected where it is published.
        let obs = observed(
            &[
                (10, "mx.example.test"),
                (20, "node1.mxraft.test"),
                (20, "node3.mxraft.test"),
            ],
            &[
                ("mx.example.test", "192.0.2.10"),
                ("node1.mxraft.test", "192.0.2.1"),
                ("node3.mxraft.test", "192.0.2.3"),
            ],
        );
        let p = problems_of(&evaluate(&domain(None, false), &nodes_sharing(), &obs));
        assert_eq!(
            p,
            vec![(
                "node addresses",
                "nodes 1, 2 (node1.mxraft.test) resolves to 192.0.2.1, but is at 192.0.2.1, \
                 192.0.2.2"
                    .to_owned()
            )]
        );
    }

    fn nodes_sharing() -> Vec<Node> {
        let mut n = nodes();
        n[1].mx_host = "node1.mxraft.test".into();
        n
    }

    #[test]
    fn name_servers_parse_with_and_without_a_port() {
        assert_eq!(
            parse_server("192.0.2.1").expect("parses").to_string(),
            "192.0.2.1:53"
        );
        assert_eq!(parse_server("127.0.0.1:5391").expect("parses").port(), 5391);
        assert_eq!(parse_server("::1").expect("parses").to_string(), "[::1]:53");
        assert!(parse_server("ns1.example.test").is_err());
    }
}
