//! `tern group …`: list, describe (with consumer lag), delete consumer groups and reset their
//! committed offsets, on any Kafka-compatible broker, like Kafka's `kafka-consumer-groups.sh`.
//!
//! Only the Kafka protocol is spoken. ListGroups is asked of every broker, since each one
//! coordinates its own share of the groups. Everything about one group goes to its
//! coordinator (FindCoordinator, key type 0): DescribeGroups, OffsetFetch, DeleteGroups and
//! OffsetCommit; a coordinator that moved or is still loading is looked up again, within a
//! bound. Log offsets come from ListOffsets at each partition's leader.
//!
//! `reset-offsets` is a dry run unless `--execute` is given. It commits as a "simple"
//! consumer (generation -1, no member id), which a broker accepts only while the group has no
//! members: the broker, not this command, decides, so there is no race with a consumer that
//! joins in between. A refusal is reported as "the group must be inactive", Kafka's rule.

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerProtocolAssignment, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;
use tern_net::client::Client;

use super::kafka::{
    call, error_text, plural, request, table, topic_name, version, BootstrapArgs, Cluster,
    RETRY_BACKOFF_MS,
};

/// Versions we speak. FindCoordinator v4 batches keys; OffsetFetch v2 is the first that
/// reads "all topics" from a null list, v8 batches groups; ListGroups v4 filters by state.
const FIND_COORDINATOR_VERSIONS: (i16, i16) = (1, 4);
const LIST_GROUPS_VERSIONS: (i16, i16) = (0, 5);
const LIST_GROUPS_STATES_MIN: i16 = 4;
const DESCRIBE_GROUPS_VERSIONS: (i16, i16) = (0, 5);
const DELETE_GROUPS_VERSIONS: (i16, i16) = (0, 2);
const OFFSET_FETCH_VERSIONS: (i16, i16) = (2, 7);
const OFFSET_COMMIT_VERSIONS: (i16, i16) = (2, 9);
const LIST_OFFSETS_VERSIONS: (i16, i16) = (1, 9);

/// How long to keep looking for a group's coordinator while it moves or loads.
const COORDINATOR_WAIT_MS_MAX: u64 = 10_000;
/// FindCoordinator key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;
/// The protocol type whose assignments are `ConsumerProtocolAssignment`s.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// Newest `ConsumerProtocolAssignment` version the crate decodes; newer ones only add fields.
const ASSIGNMENT_VERSION_MAX: i16 = 3;

/// ListOffsets timestamps with a special meaning.
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

/// Group states as brokers name them (classic groups, and KIP-848 consumer groups).
const GROUP_STATES: [&str; 7] = [
    "PreparingRebalance",
    "CompletingRebalance",
    "Stable",
    "Dead",
    "Empty",
    "Assigning",
    "Reconciling",
];

/// A topic partition.
type Tp = (String, i32);

/// Options of `tern group`.
#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
    #[command(flatten)]
    conn: BootstrapArgs,
}

#[derive(Debug, clap::Subcommand)]
enum GroupCommand {
    /// List the groups: id, state and protocol type.
    List {
        /// Only groups in these states (comma-separated, e.g. Stable,Empty).
        #[arg(long, value_name = "STATE[,STATE…]")]
        state: Option<String>,
    },
    /// Show a group's state, members and assignments, and per partition the committed
    /// offset, the log end offset and the lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Delete groups that have no members, with their committed offsets.
    Delete {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Compute new committed offsets for a group and print them; commit them with
    /// --execute (only while the group has no members).
    ResetOffsets(ResetArgs),
}

/// Options of `tern group reset-offsets`.
#[derive(Debug, clap::Args)]
struct ResetArgs {
    /// Group id.
    group: String,
    /// A topic, or some of its partitions (orders:0,2); repeat as needed.
    #[arg(long = "topic", value_name = "TOPIC[:P1,P2…]")]
    topics: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    /// To the earliest offset of each partition.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end offset of each partition.
    #[arg(long)]
    to_latest: bool,
    /// To this offset, moved into [earliest, log end] where it falls outside.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    to_offset: Option<String>,
    /// To the first record at or after this time, YYYY-MM-DDTHH:MM:SS[.sss][Z|±HH:MM]
    /// (UTC when no zone is given); the log end when there is none.
    #[arg(long, value_name = "DATETIME")]
    to_datetime: Option<String>,
    /// To the first record at or after this time in milliseconds since the Unix epoch; the
    /// log end when there is none.
    #[arg(long, value_name = "MS", allow_hyphen_values = true)]
    to_timestamp: Option<String>,
    /// Commit the new offsets (without it nothing is changed).
    #[arg(long)]
    execute: bool,
}

/// Where `reset-offsets` moves each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
}

/// Runs `tern group …`.
pub fn run(args: GroupArgs) -> anyhow::Result<()> {
    match args.command {
        GroupCommand::List { state } => {
            let states = state.as_deref().map(parse_states).transpose()?;
            list(&mut Cluster::connect(&args.conn)?, states.as_deref())
        }
        GroupCommand::Describe { group } => describe(&mut Cluster::connect(&args.conn)?, &group),
        GroupCommand::Delete { groups } => delete(&mut Cluster::connect(&args.conn)?, &groups),
        GroupCommand::ResetOffsets(reset_args) => {
            let target = parse_target(&reset_args)?;
            let specs = reset_args
                .topics
                .iter()
                .map(|t| parse_topic_spec(t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            match (specs.is_empty(), reset_args.all_topics) {
                (true, false) => {
                    bail!("name the topics: --topic TOPIC[:PARTITIONS] or --all-topics")
                }
                (false, true) => bail!("--topic and --all-topics cannot be used together"),
                _ => {}
            }
            let mut cluster = Cluster::connect(&args.conn)?;
            reset(&mut cluster, &reset_args, target, &specs)
        }
    }
}

// --- list -------------------------------------------------------------------------------

/// `stable,empty` → `["Stable", "Empty"]`; an unknown state is an error naming the known ones.
fn parse_states(raw: &str) -> anyhow::Result<Vec<String>> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            GROUP_STATES
                .iter()
                .find(|known| known.eq_ignore_ascii_case(s))
                .map(|known| known.to_string())
                .ok_or_else(|| {
                    anyhow!(
                        "--state {s:?}: not a group state ({})",
                        GROUP_STATES.join(", ")
                    )
                })
        })
        .collect()
}

fn list(cluster: &mut Cluster, states: Option<&[String]>) -> anyhow::Result<()> {
    let brokers: Vec<i32> = cluster
        .metadata(Some(&[]), false)?
        .brokers
        .iter()
        .map(|b| b.node_id.0)
        .collect();
    let filter: Vec<StrBytes> = states
        .unwrap_or_default()
        .iter()
        .map(|s| StrBytes::from_string(s.clone()))
        .collect();
    // Group id → (state, protocol type); a group is listed by its coordinator only.
    let mut groups: BTreeMap<String, (String, String)> = BTreeMap::new();
    for node in brokers {
        let client = cluster.broker(node)?;
        let (lo, hi) = LIST_GROUPS_VERSIONS;
        let v = version(client, ApiKey::ListGroups, lo, hi)?;
        if !filter.is_empty() && v < LIST_GROUPS_STATES_MIN {
            bail!(
                "--state: broker {node} speaks ListGroups up to v{v}, which cannot filter by state"
            );
        }
        let req = ListGroupsRequest::default().with_states_filter(filter.clone());
        let resp: ListGroupsResponse = request(client, ApiKey::ListGroups, v, &req)?;
        if resp.error_code != 0 {
            bail!(
                "cannot list the groups of broker {node}: {}",
                error_text(resp.error_code, None)
            );
        }
        for g in resp.groups {
            let state = if v >= LIST_GROUPS_STATES_MIN {
                g.group_state.to_string()
            } else {
                "-".to_string()
            };
            groups.insert(
                g.group_id.to_string(),
                (state, dash(g.protocol_type.as_str())),
            );
        }
    }
    if groups.is_empty() {
        eprintln!("no groups");
        return Ok(());
    }
    let mut rows = vec![vec!["GROUP".into(), "STATE".into(), "PROTOCOL-TYPE".into()]];
    rows.extend(
        groups
            .into_iter()
            .map(|(id, (state, ty))| vec![id, state, ty]),
    );
    print!("{}", table(&rows));
    Ok(())
}

/// `s`, or `-` when it is empty.
fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

// --- coordinator ------------------------------------------------------------------------

/// The broker id of `group`'s coordinator, asked again (bounded) while none is available.
fn find_coordinator(cluster: &mut Cluster, group: &str) -> anyhow::Result<i32> {
    let deadline = Instant::now() + Duration::from_millis(COORDINATOR_WAIT_MS_MAX);
    loop {
        let client = cluster.bootstrap();
        let (lo, hi) = FIND_COORDINATOR_VERSIONS;
        let v = version(client, ApiKey::FindCoordinator, lo, hi)?;
        let key = StrBytes::from_string(group.to_string());
        let mut req = FindCoordinatorRequest::default().with_key_type(KEY_TYPE_GROUP);
        if v >= 4 {
            req.coordinator_keys = vec![key];
        } else {
            req.key = key;
        }
        let resp: FindCoordinatorResponse = request(client, ApiKey::FindCoordinator, v, &req)?;
        let (code, message, node) = if v >= 4 {
            let c = resp.coordinators.into_iter().next().ok_or_else(|| {
                anyhow!("the broker's FindCoordinator response has no coordinator for {group:?}")
            })?;
            (c.error_code, c.error_message, c.node_id.0)
        } else {
            (resp.error_code, resp.error_message, resp.node_id.0)
        };
        match ResponseError::try_from_code(code) {
            None => return Ok(node),
            Some(e) if e.is_retriable() && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(RETRY_BACKOFF_MS));
            }
            Some(_) => bail!(
                "cannot find the coordinator of group {group:?}: {}",
                error_text(code, message.as_ref())
            ),
        }
    }
}

/// Runs `op` against `group`'s coordinator. `op` returns the error code of its answer with
/// the answer; while that code says the coordinator moved or is loading, the coordinator is
/// looked up again and `op` retried (bounded). Returns the last code and answer.
fn on_coordinator<T>(
    cluster: &mut Cluster,
    group: &str,
    mut op: impl FnMut(&mut Client) -> anyhow::Result<(i16, T)>,
) -> anyhow::Result<(i16, T)> {
    let deadline = Instant::now() + Duration::from_millis(COORDINATOR_WAIT_MS_MAX);
    loop {
        let node = find_coordinator(cluster, group)?;
        let (code, answer) = op(cluster.broker(node)?)?;
        let moved = matches!(
            ResponseError::try_from_code(code),
            Some(
                ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::CoordinatorLoadInProgress
            )
        );
        if !moved || Instant::now() >= deadline {
            return Ok((code, answer));
        }
        thread::sleep(Duration::from_millis(RETRY_BACKOFF_MS));
    }
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

/// DescribeGroups of one group. An unknown group comes back in state Dead.
fn describe_group(cluster: &mut Cluster, group: &str) -> anyhow::Result<DescribedGroup> {
    let (code, described) = on_coordinator(cluster, group, |client| {
        let req = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
        let (lo, hi) = DESCRIBE_GROUPS_VERSIONS;
        let resp: DescribeGroupsResponse = call(client, ApiKey::DescribeGroups, lo, hi, &req)?;
        let g = resp
            .groups
            .into_iter()
            .find(|g| g.group_id.as_str() == group)
            .ok_or_else(|| anyhow!("the broker's DescribeGroups response has no {group:?}"))?;
        Ok((g.error_code, g))
    })?;
    match ResponseError::try_from_code(code) {
        None => Ok(described),
        // Newer brokers (KIP-1043) say so instead of answering Dead.
        Some(ResponseError::GroupIdNotFound) => Ok(DescribedGroup::default()
            .with_group_id(group_id(group))
            .with_group_state(StrBytes::from_static_str("Dead"))),
        Some(_) => bail!(
            "cannot describe group {group:?}: {}",
            error_text(code, described.error_message.as_ref())
        ),
    }
}

/// The group's committed offsets (OffsetFetch for all topics); partitions without a commit
/// are left out.
fn committed_offsets(cluster: &mut Cluster, group: &str) -> anyhow::Result<BTreeMap<Tp, i64>> {
    let (code, resp) = on_coordinator(cluster, group, |client| {
        let req = OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(None);
        let (lo, hi) = OFFSET_FETCH_VERSIONS;
        let resp: OffsetFetchResponse = call(client, ApiKey::OffsetFetch, lo, hi, &req)?;
        Ok((resp.error_code, resp))
    })?;
    match ResponseError::try_from_code(code) {
        None | Some(ResponseError::GroupIdNotFound) => {}
        Some(_) => bail!(
            "cannot read the committed offsets of group {group:?}: {}",
            error_text(code, None)
        ),
    }
    let mut offsets = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                bail!(
                    "group {group:?}: cannot read the committed offset of {}:{}: {}",
                    t.name.as_str(),
                    p.partition_index,
                    error_text(p.error_code, None)
                );
            }
            if p.committed_offset >= 0 {
                offsets.insert((t.name.to_string(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(offsets)
}

// --- describe ---------------------------------------------------------------------------

/// A member's partitions from its `member_assignment`: an i16 version, then a
/// `ConsumerProtocolAssignment`. None when there is none or it cannot be read.
fn decode_assignment(raw: &Bytes) -> Option<Vec<Tp>> {
    let mut buf = raw.clone();
    if buf.remaining() < 2 {
        return None;
    }
    let v = buf.get_i16().clamp(0, ASSIGNMENT_VERSION_MAX);
    let a = ConsumerProtocolAssignment::decode(&mut buf, v).ok()?;
    Some(
        a.assigned_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p)))
            .collect(),
    )
}

/// `[(a,0), (a,1), (b,2)]` → `a:0,1 b:2`.
fn assignment_text(tps: &[Tp]) -> String {
    let mut by_topic: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (t, p) in tps {
        by_topic.entry(t).or_default().push(p.to_string());
    }
    let parts: Vec<String> = by_topic
        .into_iter()
        .map(|(t, ps)| format!("{t}:{}", ps.join(",")))
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(" ")
    }
}

fn describe(cluster: &mut Cluster, group: &str) -> anyhow::Result<()> {
    let g = describe_group(cluster, group)?;
    let committed = committed_offsets(cluster, group)?;
    let state = g.group_state.as_str();
    if state == "Dead" && committed.is_empty() {
        bail!("group {group:?} does not exist (state Dead, no committed offsets)");
    }
    let mut protocol = dash(g.protocol_type.as_str());
    if !g.protocol_data.is_empty() {
        protocol.push_str(&format!(" ({})", g.protocol_data.as_str()));
    }
    println!(
        "group: {group}  state: {state}  protocol: {protocol}  members: {}",
        g.members.len()
    );
    let (members, owner) = members_table(&g);
    if members.len() > 1 {
        println!();
        print!("{}", table(&members));
    }
    let tps: BTreeSet<Tp> = committed.keys().chain(owner.keys()).cloned().collect();
    if tps.is_empty() {
        println!("\nno committed offsets and no assigned partitions");
        return Ok(());
    }
    let topics: BTreeSet<&str> = tps.iter().map(|(t, _)| t.as_str()).collect();
    let leaders = leaders(cluster, &topics)?;
    let wanted: BTreeMap<Tp, i32> = tps
        .iter()
        .map(|tp| (tp.clone(), leaders.get(tp).copied().unwrap_or(-1)))
        .collect();
    let ends = list_offsets(cluster, &wanted, LATEST)?;
    println!();
    print!("{}", lag_table(&tps, &committed, &ends, &owner));
    Ok(())
}

/// The members as rows (with a header), and the member id owning each assigned partition.
fn members_table(g: &DescribedGroup) -> (Vec<Vec<String>>, BTreeMap<Tp, String>) {
    let consumer = g.protocol_type.as_str() == CONSUMER_PROTOCOL_TYPE;
    let mut owner = BTreeMap::new();
    let mut rows = vec![["CONSUMER-ID", "HOST", "CLIENT-ID", "ASSIGNMENT"]
        .map(String::from)
        .to_vec()];
    for m in &g.members {
        let assigned = if consumer {
            decode_assignment(&m.member_assignment)
        } else {
            None
        };
        let text = assigned
            .as_deref()
            .map_or_else(|| "-".to_string(), assignment_text);
        for tp in assigned.unwrap_or_default() {
            owner.insert(tp, m.member_id.to_string());
        }
        rows.push(vec![
            m.member_id.to_string(),
            m.client_host.to_string(),
            m.client_id.to_string(),
            text,
        ]);
    }
    (rows, owner)
}

/// Per partition: committed offset, log end offset, lag and owner; `-` where unknown.
fn lag_table(
    tps: &BTreeSet<Tp>,
    committed: &BTreeMap<Tp, i64>,
    ends: &BTreeMap<Tp, Result<i64, i16>>,
    owner: &BTreeMap<Tp, String>,
) -> String {
    let head = [
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
    ];
    let mut rows = vec![head.map(String::from).to_vec()];
    let or_dash = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    for tp in tps {
        let current = committed.get(tp).copied();
        let end = ends.get(tp).and_then(|r| r.ok());
        let lag = current.zip(end).map(|(c, e)| (e - c).max(0));
        rows.push(vec![
            tp.0.clone(),
            tp.1.to_string(),
            or_dash(current),
            or_dash(end),
            or_dash(lag),
            owner.get(tp).cloned().unwrap_or_else(|| "-".to_string()),
        ]);
    }
    table(&rows)
}

/// The leader of every partition of `topics`; topics the broker does not know are left out
/// (a group may keep offsets of a deleted topic).
fn leaders(cluster: &mut Cluster, topics: &BTreeSet<&str>) -> anyhow::Result<BTreeMap<Tp, i32>> {
    let names: Vec<&str> = topics.iter().copied().collect();
    let resp = cluster.metadata(Some(&names), false)?;
    let mut out = BTreeMap::new();
    for t in resp.topics.iter().filter(|t| t.error_code == 0) {
        let Some(name) = &t.name else { continue };
        for p in &t.partitions {
            out.insert((name.to_string(), p.partition_index), p.leader_id.0);
        }
    }
    Ok(out)
}

/// The offsets at `timestamp` (EARLIEST, LATEST or a time in ms) of the partitions in
/// `leaders` (partition → leader), asked of each leader at once. A partition without a leader
/// or refused by the broker gets its error code; at a time after every record, -1.
fn list_offsets(
    cluster: &mut Cluster,
    leaders: &BTreeMap<Tp, i32>,
    timestamp: i64,
) -> anyhow::Result<BTreeMap<Tp, Result<i64, i16>>> {
    let mut out = BTreeMap::new();
    let mut by_leader: BTreeMap<i32, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
    for ((t, p), leader) in leaders {
        if *leader < 0 {
            out.insert(
                (t.clone(), *p),
                Err(ResponseError::LeaderNotAvailable.code()),
            );
        } else {
            let topics = by_leader.entry(*leader).or_default();
            topics.entry(t.as_str()).or_default().push(*p);
        }
    }
    for (leader, topics) in by_leader {
        let topics = topics
            .into_iter()
            .map(|(t, parts)| {
                let parts = parts.into_iter().map(|p| {
                    ListOffsetsPartition::default()
                        .with_partition_index(p)
                        .with_timestamp(timestamp)
                });
                ListOffsetsTopic::default()
                    .with_name(topic_name(t))
                    .with_partitions(parts.collect())
            })
            .collect();
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(topics);
        let (lo, hi) = LIST_OFFSETS_VERSIONS;
        let client = cluster.broker(leader)?;
        let resp: ListOffsetsResponse = call(client, ApiKey::ListOffsets, lo, hi, &req)?;
        for t in resp.topics {
            for p in t.partitions {
                let r = if p.error_code == 0 {
                    Ok(p.offset)
                } else {
                    Err(p.error_code)
                };
                out.insert((t.name.to_string(), p.partition_index), r);
            }
        }
    }
    Ok(out)
}

// --- delete -----------------------------------------------------------------------------

fn delete(cluster: &mut Cluster, groups: &[String]) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for group in groups {
        let (code, _) = on_coordinator(cluster, group, |client| {
            let req = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
            let (lo, hi) = DELETE_GROUPS_VERSIONS;
            let resp: DeleteGroupsResponse = call(client, ApiKey::DeleteGroups, lo, hi, &req)?;
            let r = resp
                .results
                .iter()
                .find(|r| r.group_id.as_str() == group)
                .ok_or_else(|| anyhow!("the broker's DeleteGroups response has no {group:?}"))?;
            Ok((r.error_code, ()))
        })?;
        let why = match ResponseError::try_from_code(code) {
            None => {
                println!("deleted group {group:?}");
                continue;
            }
            Some(ResponseError::NonEmptyGroup) => "it still has members",
            Some(ResponseError::GroupIdNotFound) => "it does not exist",
            Some(_) => "the broker refused",
        };
        failures.push(format!(
            "cannot delete group {group:?}: {why} ({})",
            error_text(code, None)
        ));
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

// --- reset-offsets ----------------------------------------------------------------------

/// The one `--to-…` option given, checked.
fn parse_target(args: &ResetArgs) -> anyhow::Result<Target> {
    let mut given = Vec::new();
    if args.to_earliest {
        given.push(Target::Earliest);
    }
    if args.to_latest {
        given.push(Target::Latest);
    }
    if let Some(s) = &args.to_offset {
        match s.parse::<i64>() {
            Ok(o) if o >= 0 => given.push(Target::Offset(o)),
            _ => bail!("--to-offset {s:?}: not an offset (a number, 0 or more)"),
        }
    }
    if let Some(s) = &args.to_timestamp {
        match s.parse::<i64>() {
            Ok(ms) if ms >= 0 => given.push(Target::Timestamp(ms)),
            _ => bail!("--to-timestamp {s:?}: not a time in milliseconds since the Unix epoch"),
        }
    }
    if let Some(s) = &args.to_datetime {
        given.push(Target::Timestamp(parse_datetime(s)?));
    }
    match given[..] {
        [one] => Ok(one),
        [] => bail!(
            "say where to reset to: --to-earliest, --to-latest, --to-offset N, \
             --to-datetime DATETIME or --to-timestamp MS"
        ),
        _ => bail!(
            "give only one of --to-earliest, --to-latest, --to-offset, --to-datetime, \
             --to-timestamp"
        ),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.sss][Z|±HH:MM]` → milliseconds since the Unix epoch (UTC when no
/// zone is given).
fn parse_datetime(s: &str) -> anyhow::Result<i64> {
    let bad = || anyhow!("--to-datetime {s:?}: expected YYYY-MM-DDTHH:MM:SS[.sss][Z|±HH:MM]");
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let num = |t: &str, len: usize| -> anyhow::Result<i64> {
        if t.len() != len || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, day] = d[..] else {
        return Err(bad());
    };
    let (y, mo, day) = (num(y, 4)?, num(mo, 2)?, num(day, 2)?);
    // The zone: Z, +HH:MM or -HH:MM after the seconds.
    let (clock, offset_min) = match time.find(['Z', '+', '-']) {
        None => (time, 0),
        Some(at) => {
            let (clock, zone) = time.split_at(at);
            let offset = match zone {
                "Z" => 0,
                _ => {
                    let (h, m) = zone[1..].split_once(':').ok_or_else(bad)?;
                    let sign = if zone.starts_with('-') { -1 } else { 1 };
                    sign * (num(h, 2)? * 60 + num(m, 2)?)
                }
            };
            (clock, offset)
        }
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, "000"));
    let c: Vec<&str> = hms.split(':').collect();
    let [h, mi, sec] = c[..] else {
        return Err(bad());
    };
    let (h, mi, sec, ms) = (num(h, 2)?, num(mi, 2)?, num(sec, 2)?, num(frac, 3)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 59 {
        return Err(bad());
    }
    let days = days_from_civil(y, mo, day);
    let secs = days * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60;
    Ok(secs * 1_000 + ms)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `orders` → all partitions (None); `orders:0,2` → those partitions.
fn parse_topic_spec(spec: &str) -> anyhow::Result<(String, Option<Vec<i32>>)> {
    let Some((topic, parts)) = spec.split_once(':') else {
        if spec.is_empty() {
            bail!("--topic: empty topic name");
        }
        return Ok((spec.to_string(), None));
    };
    if topic.is_empty() {
        bail!("--topic {spec:?}: empty topic name");
    }
    let parts = parts
        .split(',')
        .map(|p| match p.trim().parse::<i32>() {
            Ok(n) if n >= 0 => Ok(n),
            _ => bail!("--topic {spec:?}: {p:?} is not a partition number"),
        })
        .collect::<anyhow::Result<Vec<i32>>>()?;
    Ok((topic.to_string(), Some(parts)))
}

/// The partitions to reset with their leaders: those named by `--topic`, checked against
/// the metadata, or with `--all-topics` those the group has committed offsets for.
fn reset_scope(
    cluster: &mut Cluster,
    specs: &[(String, Option<Vec<i32>>)],
    committed: &BTreeMap<Tp, i64>,
) -> anyhow::Result<BTreeMap<Tp, i32>> {
    if specs.is_empty() {
        let topics: BTreeSet<&str> = committed.keys().map(|(t, _)| t.as_str()).collect();
        let leaders = leaders(cluster, &topics)?;
        return Ok(committed
            .keys()
            .filter_map(|tp| Some((tp.clone(), *leaders.get(tp)?)))
            .collect());
    }
    let mut scope = BTreeMap::new();
    for (topic, parts) in specs {
        let info = cluster.topic(topic, false)?;
        let count = info.partitions.len();
        for p in parts
            .clone()
            .unwrap_or_else(|| info.partitions.iter().map(|p| p.index).collect())
        {
            let Some(found) = info.partitions.iter().find(|i| i.index == p) else {
                bail!(
                    "--topic {topic}:{p}: topic {topic:?} has no partition {p} (it has {})",
                    plural(count as u64, "partition")
                );
            };
            scope.insert((topic.clone(), p), found.leader);
        }
    }
    Ok(scope)
}

/// Offsets from ListOffsets, every partition answered, or the first refusal as an error.
fn offsets_at(
    cluster: &mut Cluster,
    scope: &BTreeMap<Tp, i32>,
    timestamp: i64,
) -> anyhow::Result<BTreeMap<Tp, i64>> {
    let answers = list_offsets(cluster, scope, timestamp)?;
    scope
        .keys()
        .map(|tp| match answers.get(tp) {
            Some(Ok(o)) => Ok((tp.clone(), *o)),
            Some(Err(code)) => bail!(
                "topic {:?} partition {}: cannot read its offsets: {}",
                tp.0,
                tp.1,
                error_text(*code, None)
            ),
            None => bail!("the broker's ListOffsets response has no {}:{}", tp.0, tp.1),
        })
        .collect()
}

/// The offset `target` means for each partition of `scope`; an offset outside
/// [earliest, log end] is moved to the nearer end, like Kafka's tool.
fn new_offsets(
    cluster: &mut Cluster,
    scope: &BTreeMap<Tp, i32>,
    target: Target,
) -> anyhow::Result<BTreeMap<Tp, i64>> {
    let earliest = offsets_at(cluster, scope, EARLIEST)?;
    let latest = offsets_at(cluster, scope, LATEST)?;
    let by_time = match target {
        Target::Timestamp(ms) => Some(offsets_at(cluster, scope, ms)?),
        _ => None,
    };
    let mut new = BTreeMap::new();
    for tp in scope.keys() {
        let (Some(&lo), Some(&hi)) = (earliest.get(tp), latest.get(tp)) else {
            bail!("the broker's ListOffsets response has no {}:{}", tp.0, tp.1);
        };
        let offset = match target {
            Target::Earliest => lo,
            Target::Latest => hi,
            Target::Offset(o) => o.clamp(lo, hi.max(lo)),
            // No record at or after the time: the log end, like Kafka's tool.
            Target::Timestamp(_) => match by_time.as_ref().and_then(|m| m.get(tp)) {
                Some(o) if *o >= 0 => *o,
                _ => hi,
            },
        };
        if let Target::Offset(o) = target {
            if o != offset {
                eprintln!(
                    "note: {}:{}: offset {o} is outside [{lo}, {hi}]; using {offset}",
                    tp.0, tp.1
                );
            }
        }
        new.insert(tp.clone(), offset);
    }
    Ok(new)
}

fn reset(
    cluster: &mut Cluster,
    args: &ResetArgs,
    target: Target,
    specs: &[(String, Option<Vec<i32>>)],
) -> anyhow::Result<()> {
    let group = args.group.as_str();
    let committed = committed_offsets(cluster, group)?;
    let scope = reset_scope(cluster, specs, &committed)?;
    if scope.is_empty() {
        bail!("group {group:?} has no committed offsets to reset (--all-topics)");
    }
    let new = new_offsets(cluster, &scope, target)?;
    let mut rows = vec![["TOPIC", "PARTITION", "OLD", "NEW"]
        .map(String::from)
        .to_vec()];
    for (tp, offset) in &new {
        let old = committed
            .get(tp)
            .map_or_else(|| "-".to_string(), |o| o.to_string());
        rows.push(vec![
            tp.0.clone(),
            tp.1.to_string(),
            old,
            offset.to_string(),
        ]);
    }
    if !args.execute {
        print!("{}", table(&rows));
        let g = describe_group(cluster, group)?;
        if !g.members.is_empty() {
            eprintln!(
                "note: group {group:?} is {} with {}; --execute will be refused until it \
                 is inactive",
                g.group_state.as_str(),
                plural(g.members.len() as u64, "member")
            );
        }
        eprintln!("dry run: nothing was changed; add --execute to commit these offsets");
        return Ok(());
    }
    commit(cluster, group, &new)?;
    print!("{}", table(&rows));
    eprintln!(
        "committed {} for group {group:?}",
        plural(new.len() as u64, "offset")
    );
    Ok(())
}

/// Commits `offsets` as a "simple" consumer (generation -1, no member id). A broker refuses
/// that while the group has members; the refusal becomes Kafka's "must be inactive".
fn commit(cluster: &mut Cluster, group: &str, offsets: &BTreeMap<Tp, i64>) -> anyhow::Result<()> {
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((t, p), o) in offsets {
        by_topic.entry(t.as_str()).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o),
        );
    }
    let topics: Vec<OffsetCommitRequestTopic> = by_topic
        .into_iter()
        .map(|(t, parts)| {
            OffsetCommitRequestTopic::default()
                .with_name(topic_name(t))
                .with_partitions(parts)
        })
        .collect();
    let req = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::default())
        .with_topics(topics);
    let (code, failed) = on_coordinator(cluster, group, |client| {
        let (lo, hi) = OFFSET_COMMIT_VERSIONS;
        let resp: OffsetCommitResponse = call(client, ApiKey::OffsetCommit, lo, hi, &req)?;
        let failed = resp.topics.iter().find_map(|t| {
            let p = t.partitions.iter().find(|p| p.error_code != 0)?;
            Some((t.name.to_string(), p.partition_index, p.error_code))
        });
        Ok((failed.as_ref().map_or(0, |f| f.2), failed))
    })?;
    let Some((topic, partition, _)) = failed else {
        return Ok(());
    };
    match ResponseError::try_from_code(code) {
        Some(
            ResponseError::UnknownMemberId
            | ResponseError::IllegalGeneration
            | ResponseError::RebalanceInProgress,
        ) => {
            let state = describe_group(cluster, group)
                .map(|g| format!(" (state {})", g.group_state.as_str()))
                .unwrap_or_default();
            bail!(
                "cannot reset the offsets of group {group:?}: it has active members{state}; \
                 offsets can be reset only while the group is inactive (stop its consumers \
                 first) ({})",
                error_text(code, None)
            )
        }
        _ => bail!(
            "cannot commit the offset of {topic}:{partition} for group {group:?}: {}",
            error_text(code, None)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;

    /// Guards the reading of `--to-datetime` against known instants, zones included.
    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00").unwrap(), 0);
        assert_eq!(
            parse_datetime("2024-02-29T12:34:56.789Z").unwrap(),
            1_709_210_096_789
        );
        assert_eq!(
            parse_datetime("2024-02-29T14:34:56.789+02:00").unwrap(),
            1_709_210_096_789
        );
        assert_eq!(
            parse_datetime("2024-02-29T07:34:56.789-05:00").unwrap(),
            1_709_210_096_789
        );
        for bad in [
            "2024-02-29",
            "2024-13-01T00:00:00",
            "24-02-29T00:00:00",
            "x",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }

    /// Guards `--topic` parsing and the one-line errors of bad partitions.
    #[test]
    fn topic_specs() {
        assert_eq!(parse_topic_spec("t").unwrap(), ("t".to_string(), None));
        assert_eq!(
            parse_topic_spec("t:0,2").unwrap(),
            ("t".to_string(), Some(vec![0, 2]))
        );
        let e = parse_topic_spec("t:-1").unwrap_err().to_string();
        assert_eq!(e, "--topic \"t:-1\": \"-1\" is not a partition number");
        assert!(parse_topic_spec(":1").is_err());
        assert_eq!(parse_states("stable,EMPTY").unwrap(), ["Stable", "Empty"]);
        assert!(parse_states("running").is_err());
    }

    /// Guards the decoding of a member's assignment: version prefix, then the body.
    #[test]
    fn member_assignment() {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(topic_name("a"))
                .with_partitions(vec![0, 1]),
            TopicPartition::default()
                .with_topic(topic_name("b"))
                .with_partitions(vec![2]),
        ]);
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        a.encode(&mut buf, 1).unwrap();
        let tps = decode_assignment(&buf.freeze()).unwrap();
        assert_eq!(assignment_text(&tps), "a:0,1 b:2");
        assert_eq!(decode_assignment(&Bytes::new()), None);
        assert_eq!(decode_assignment(&Bytes::from_static(&[0, 1, 0xff])), None);
    }
}
