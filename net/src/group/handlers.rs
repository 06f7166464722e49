//! The Kafka group APIs: decode into [`GroupOp`]s, send each to the shard that coordinates
//! the group, encode the answers. FindCoordinator always names this node (single node); it
//! creates `__consumer_offsets` on first use, as Kafka does.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as FoundCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::coordinator::{
    CommittedOffset, HeartbeatRequest, JoinRequest, LeaveRequest, Reply, SyncRequest,
    TopicPartition,
};
use super::driver::{GroupAnswer, GroupOp};
use super::store::{self, OFFSETS_TOPIC};
use crate::admin::AdminCommand;
use crate::shard::{ShardMsg, ShardState};

/// Largest metadata string of a commit (Kafka's `offset.metadata.max.bytes` default).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

const COORDINATOR_NOT_AVAILABLE: i16 = ResponseError::CoordinatorNotAvailable.code();

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The partition count of `__consumer_offsets`, creating the topic if needed.
async fn offsets_topic(shard: &Rc<ShardState>) -> Result<i32, i16> {
    let router = &shard.router;
    if let Some(t) = router.meta.snapshot().topics.get(OFFSETS_TOPIC) {
        return Ok(t.partitions);
    }
    let settings = &router.config.groups;
    let configs = BTreeMap::from([
        (
            "segment.bytes".to_string(),
            settings.offsets_topic_segment_bytes.to_string(),
        ),
        // Commits leave this log only by cleaning (store.rs), never by age.
        ("retention.ms".to_string(), "-1".to_string()),
    ]);
    // In a cluster: replicated, on at most the brokers alive now (Kafka refuses instead).
    let replication_factor = match &router.cluster {
        Some(node) => {
            let alive = node
                .view()
                .image
                .brokers
                .values()
                .filter(|b| b.is_active())
                .count();
            settings
                .offsets_topic_replication_factor
                .min(i16::try_from(alive).unwrap_or(i16::MAX))
                .max(1)
        }
        None => 1,
    };
    let command = AdminCommand::Create {
        name: OFFSETS_TOPIC.to_string(),
        partitions: settings.offsets_topic_partitions,
        replication_factor,
        configs,
    };
    let created = router.admin(command, false).await;
    match created {
        Ok(t) => Ok(t.partitions),
        _ => match router.meta.snapshot().topics.get(OFFSETS_TOPIC) {
            // Lost a race with another shard creating it.
            Some(t) => Ok(t.partitions),
            None => {
                tracing::warn!("cannot create {OFFSETS_TOPIC}: {created:?}");
                Err(COORDINATOR_NOT_AVAILABLE)
            }
        },
    }
}

/// Runs `op` on the shard coordinating `group_id`.
async fn ask(shard: &Rc<ShardState>, group_id: &str, op: GroupOp) -> GroupAnswer {
    let partitions = match offsets_topic(shard).await {
        Ok(n) => n,
        Err(code) => return GroupAnswer::Unavailable(code),
    };
    let p = store::partition_for(group_id, partitions);
    if !shard.router.leads(OFFSETS_TOPIC, p) {
        // In a cluster: another broker coordinates this group (FindCoordinator names it).
        return GroupAnswer::Unavailable(ResponseError::NotCoordinator.code());
    }
    shard
        .router
        .ask(shard, OFFSETS_TOPIC, p, |reply| ShardMsg::Group {
            op,
            partition: Some(p),
            reply,
        })
        .await
        .unwrap_or(GroupAnswer::Unavailable(COORDINATOR_NOT_AVAILABLE))
}

/// The error code of an answer that is not the expected kind.
fn unexpected(a: &GroupAnswer) -> i16 {
    match a {
        GroupAnswer::Unavailable(code) => *code,
        _ => ResponseError::UnknownServerError.code(),
    }
}

// ---------------------------------------------------------------------------------------
// FindCoordinator

pub async fn find_coordinator(
    shard: &Rc<ShardState>,
    req: FindCoordinatorRequest,
    v: i16,
) -> FindCoordinatorResponse {
    let config = &shard.router.config;
    let advertised = config.advertised(shard.router.local_addr());
    let error = match req.key_type {
        0 => offsets_topic(shard).await.err().unwrap_or(0),
        1 => 0,
        _ => ResponseError::InvalidRequest.code(),
    };
    let here = (
        BrokerId(config.node_id),
        s(advertised.host),
        advertised.port as i32,
    );
    let coordinator = |key: &str| -> (BrokerId, StrBytes, i32, i16) {
        if error != 0 {
            return (BrokerId(-1), s(""), -1, error);
        }
        let Some(node) = &shard.router.cluster else {
            return (here.0, here.1.clone(), here.2, 0);
        };
        // In a cluster: the leader of the group's `__consumer_offsets` partition.
        let view = node.view();
        let found = view.image.topics.get(OFFSETS_TOPIC).and_then(|t| {
            let p = store::partition_for(key, t.partitions.len() as i32);
            let leader = t.partitions.get(usize::try_from(p).ok()?)?.leader;
            let b = view.image.broker(leader).filter(|b| !b.fenced)?;
            let e = crate::cluster::client_endpoint(b)?;
            Some((BrokerId(leader), s(e.host.clone()), i32::from(e.port)))
        });
        match found {
            Some((n, h, p)) if req.key_type == 0 => (n, h, p, 0),
            Some(_) => (here.0, here.1.clone(), here.2, 0),
            None => (BrokerId(-1), s(""), -1, COORDINATOR_NOT_AVAILABLE),
        }
    };
    if v >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (node, host, port, error) = coordinator(key.as_str());
                FoundCoordinator::default()
                    .with_key(key)
                    .with_node_id(node)
                    .with_host(host)
                    .with_port(port)
                    .with_error_code(error)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (node, host, port, error) = coordinator(req.key.as_str());
    FindCoordinatorResponse::default()
        .with_error_code(error)
        .with_node_id(node)
        .with_host(host)
        .with_port(port)
}

// ---------------------------------------------------------------------------------------
// Membership

pub async fn join_group(
    shard: &Rc<ShardState>,
    req: JoinGroupRequest,
    v: i16,
    client_id: &str,
    client_host: &str,
) -> JoinGroupResponse {
    let group_id = req.group_id.to_string();
    let op = GroupOp::Join(JoinRequest {
        group_id: group_id.clone(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if v == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|i| i.to_string()),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: v >= 4,
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
    });
    let r = match ask(shard, &group_id, op).await {
        GroupAnswer::Membership(Reply::Join(r)) => r,
        other => super::coordinator::JoinResponse {
            error_code: unexpected(&other),
            generation_id: -1,
            ..Default::default()
        },
    };
    let members = r
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(s(m.member_id))
                .with_group_instance_id(m.group_instance_id.filter(|_| v >= 5).map(s))
                .with_metadata(m.metadata)
        })
        .collect();
    let protocol_name = match r.protocol_name {
        Some(n) => Some(s(n)),
        None if v < 7 => Some(s("")),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(r.error_code)
        .with_generation_id(r.generation_id)
        .with_protocol_type(r.protocol_type.map(s))
        .with_protocol_name(protocol_name)
        .with_leader(s(r.leader))
        .with_member_id(s(r.member_id))
        .with_members(members)
}

pub async fn sync_group(shard: &Rc<ShardState>, req: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = req.group_id.to_string();
    let op = GroupOp::Sync(SyncRequest {
        group_id: group_id.clone(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|i| i.to_string()),
        protocol_type: req.protocol_type.map(|p| p.to_string()),
        protocol_name: req.protocol_name.map(|p| p.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    });
    match ask(shard, &group_id, op).await {
        GroupAnswer::Membership(Reply::Sync(r)) => SyncGroupResponse::default()
            .with_error_code(r.error_code)
            .with_protocol_type(r.protocol_type.map(s))
            .with_protocol_name(r.protocol_name.map(s))
            .with_assignment(r.assignment),
        other => SyncGroupResponse::default().with_error_code(unexpected(&other)),
    }
}

pub async fn heartbeat(shard: &Rc<ShardState>, req: HeartbeatRequest_) -> HeartbeatResponse {
    let group_id = req.group_id.to_string();
    let op = GroupOp::Heartbeat(HeartbeatRequest {
        group_id: group_id.clone(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|i| i.to_string()),
    });
    let code = match ask(shard, &group_id, op).await {
        GroupAnswer::Membership(Reply::Heartbeat(code)) => code,
        other => unexpected(&other),
    };
    HeartbeatResponse::default().with_error_code(code)
}

/// The Kafka request type, renamed: the coordinator has its own `HeartbeatRequest`.
pub type HeartbeatRequest_ = kafka_protocol::messages::HeartbeatRequest;

pub async fn leave_group(
    shard: &Rc<ShardState>,
    req: LeaveGroupRequest,
    v: i16,
) -> LeaveGroupResponse {
    let group_id = req.group_id.to_string();
    let members = if v < 3 {
        vec![(req.member_id.to_string(), None)]
    } else {
        req.members
            .into_iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.map(|i| i.to_string()),
                )
            })
            .collect()
    };
    let op = GroupOp::Leave(LeaveRequest {
        group_id: group_id.clone(),
        members,
    });
    let r = match ask(shard, &group_id, op).await {
        GroupAnswer::Membership(Reply::Leave(r)) => r,
        other => {
            return LeaveGroupResponse::default().with_error_code(unexpected(&other));
        }
    };
    if v < 3 {
        // One member: its error is the request's.
        let member_error = r.members.iter().map(|m| m.2).find(|c| *c != 0);
        let code = if r.error_code != 0 {
            r.error_code
        } else {
            member_error.unwrap_or(0)
        };
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = r
        .members
        .into_iter()
        .map(|(member_id, instance, code)| {
            MemberResponse::default()
                .with_member_id(s(member_id))
                .with_group_instance_id(instance.map(s))
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default()
        .with_error_code(r.error_code)
        .with_members(members)
}

// ---------------------------------------------------------------------------------------
// Offsets

/// Whether `topic`/`partition` exists.
fn known_partition(shard: &ShardState, topic: &str, partition: i32) -> bool {
    shard
        .router
        .meta
        .snapshot()
        .topics
        .get(topic)
        .is_some_and(|t| (0..t.partitions).contains(&partition))
}

pub async fn offset_commit(
    shard: &Rc<ShardState>,
    req: OffsetCommitRequest,
    v: i16,
) -> OffsetCommitResponse {
    let group_id = req.group_id.to_string();
    let now = now_ms();
    let expire = (v <= 4 && req.retention_time_ms >= 0).then(|| now + req.retention_time_ms);
    // Per (topic index, partition index): the refusal, or the commit to make.
    let mut codes: Vec<Vec<i16>> = Vec::with_capacity(req.topics.len());
    let mut commits = Vec::new();
    for t in &req.topics {
        let mut row = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_ref().map_or("", |m| m.as_str());
            let code = if group_id.is_empty() {
                ResponseError::InvalidGroupId.code()
            } else if metadata.len() > OFFSET_METADATA_BYTES_MAX {
                ResponseError::OffsetMetadataTooLarge.code()
            } else if !known_partition(shard, &t.name, p.partition_index) {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                commits.push((
                    TopicPartition {
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                    },
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: metadata.to_string(),
                        commit_timestamp_ms: now,
                        expire_timestamp_ms: expire,
                    },
                ));
                0
            };
            row.push(code);
        }
        codes.push(row);
    }
    let result = if commits.is_empty() {
        0
    } else {
        let op = GroupOp::Commit {
            group_id: group_id.clone(),
            generation_id: req.generation_id_or_member_epoch,
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.map(|i| i.to_string()),
            commits,
        };
        match ask(shard, &group_id, op).await {
            GroupAnswer::Commit(r) => r.err().unwrap_or(0),
            other => unexpected(&other),
        }
    };
    let topics = req
        .topics
        .into_iter()
        .zip(codes)
        .map(|(t, row)| {
            let partitions = t
                .partitions
                .iter()
                .zip(row)
                .map(|(p, code)| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(if code == 0 { result } else { code })
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One partition's committed offset as OffsetFetch reports it.
struct Fetched {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
}

/// The committed offsets of `group_id` for `topics` (`None`: all), grouped by topic in
/// request order, or the group-level error.
async fn fetch_group(
    shard: &Rc<ShardState>,
    group_id: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Result<Vec<(TopicName, Vec<Fetched>)>, i16> {
    let tps = topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|(name, parts)| {
                parts.iter().map(|p| TopicPartition {
                    topic: name.to_string(),
                    partition: *p,
                })
            })
            .collect()
    });
    let op = GroupOp::Fetch {
        group_id: group_id.to_string(),
        tps,
    };
    let found = match ask(shard, group_id, op).await {
        GroupAnswer::Fetch(f) => f,
        other => return Err(unexpected(&other)),
    };
    let mut out: Vec<(TopicName, Vec<Fetched>)> = Vec::new();
    for (tp, v) in found {
        let f = Fetched {
            partition: tp.partition,
            offset: v.as_ref().map_or(-1, |v| v.offset),
            leader_epoch: v.as_ref().map_or(-1, |v| v.leader_epoch),
            metadata: v.map(|v| v.metadata).unwrap_or_default(),
        };
        match out.last_mut() {
            Some((name, parts)) if name.as_str() == tp.topic => parts.push(f),
            _ => out.push((TopicName(s(tp.topic)), vec![f])),
        }
    }
    Ok(out)
}

pub async fn offset_fetch(
    shard: &Rc<ShardState>,
    req: OffsetFetchRequest,
    v: i16,
) -> OffsetFetchResponse {
    if v >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let resp = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            groups.push(match fetch_group(shard, &g.group_id, topics).await {
                Err(code) => resp.with_error_code(code),
                Ok(found) => resp.with_topics(
                    found
                        .into_iter()
                        .map(|(name, parts)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(name)
                                .with_partitions(
                                    parts
                                        .into_iter()
                                        .map(|f| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(f.partition)
                                                .with_committed_offset(f.offset)
                                                .with_committed_leader_epoch(f.leader_epoch)
                                                .with_metadata(Some(s(f.metadata)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    match fetch_group(shard, &req.group_id, topics).await {
        Err(code) => OffsetFetchResponse::default().with_error_code(if v >= 2 { code } else { 0 }),
        Ok(found) => OffsetFetchResponse::default().with_topics(
            found
                .into_iter()
                .map(|(name, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|f| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(f.partition)
                                        .with_committed_offset(f.offset)
                                        .with_committed_leader_epoch(if v >= 5 {
                                            f.leader_epoch
                                        } else {
                                            -1
                                        })
                                        .with_metadata(Some(s(f.metadata)))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Administration

pub async fn list_groups(
    shard: &Rc<ShardState>,
    req: ListGroupsRequest,
    v: i16,
) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|x| x.to_string()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|x| x.to_string()).collect();
    let mut groups = Vec::new();
    for index in 0..shard.router.shard_count() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let op = GroupOp::List {
            states: states.clone(),
            types: types.clone(),
        };
        let sent = shard
            .router
            .dispatch(
                shard,
                index,
                ShardMsg::Group {
                    op,
                    partition: None,
                    reply: tx,
                },
            )
            .await;
        let answer = match sent {
            Ok(()) => rx.await.ok(),
            Err(_) => None,
        };
        match answer {
            Some(GroupAnswer::List(l)) => groups.extend(l),
            _ => return ListGroupsResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE),
        }
    }
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    let groups = groups
        .into_iter()
        .map(|g| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(s(g.group_id)))
                .with_protocol_type(s(g.protocol_type));
            let listed = if v >= 4 {
                listed.with_group_state(s(g.state))
            } else {
                listed
            };
            if v >= 5 {
                listed.with_group_type(s("classic"))
            } else {
                listed
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn describe_groups(
    shard: &Rc<ShardState>,
    req: DescribeGroupsRequest,
    v: i16,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for group_id in req.groups {
        let d = match ask(shard, &group_id, GroupOp::Describe(group_id.to_string())).await {
            GroupAnswer::Describe(d) => d,
            other => super::coordinator::GroupDescription {
                error_code: unexpected(&other),
                state: "Dead",
                ..Default::default()
            },
        };
        let members = d
            .members
            .into_iter()
            .map(|m| {
                DescribedGroupMember::default()
                    .with_member_id(s(m.member_id))
                    .with_group_instance_id(m.group_instance_id.filter(|_| v >= 4).map(s))
                    .with_client_id(s(m.client_id))
                    .with_client_host(s(m.client_host))
                    .with_member_metadata(m.metadata)
                    .with_member_assignment(m.assignment)
            })
            .collect::<Vec<_>>();
        // v6 (KIP-1043): a group that does not exist is GROUP_ID_NOT_FOUND with a message,
        // where older versions describe it as Dead.
        let missing = v >= 6 && d.error_code == 0 && d.state == "Dead" && members.is_empty();
        let (error_code, error_message) = if missing {
            let m = format!("group {} not found", group_id.as_str());
            (ResponseError::GroupIdNotFound.code(), Some(s(m)))
        } else {
            (d.error_code, None)
        };
        groups.push(
            DescribedGroup::default()
                .with_error_code(error_code)
                .with_error_message(error_message)
                .with_group_id(group_id)
                .with_group_state(s(d.state))
                .with_protocol_type(s(d.protocol_type))
                .with_protocol_data(s(d.protocol_name))
                .with_members(members),
        );
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(
    shard: &Rc<ShardState>,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for group_id in req.groups_names {
        let code = match ask(shard, &group_id, GroupOp::Delete(group_id.to_string())).await {
            GroupAnswer::Delete(code) => code,
            other => unexpected(&other),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

pub async fn offset_delete(
    shard: &Rc<ShardState>,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group_id = req.group_id.to_string();
    let tps: Vec<TopicPartition> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| TopicPartition {
                topic: t.name.to_string(),
                partition: p.partition_index,
            })
        })
        .collect();
    let op = GroupOp::DeleteOffsets {
        group_id: group_id.clone(),
        tps,
    };
    let results = match ask(shard, &group_id, op).await {
        GroupAnswer::DeleteOffsets(Ok(r)) => r,
        GroupAnswer::DeleteOffsets(Err(code)) => {
            return OffsetDeleteResponse::default().with_error_code(code)
        }
        other => return OffsetDeleteResponse::default().with_error_code(unexpected(&other)),
    };
    let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
    for (tp, code) in results {
        let part = OffsetDeleteResponsePartition::default()
            .with_partition_index(tp.partition)
            .with_error_code(code);
        match topics.last_mut() {
            Some(t) if t.name.as_str() == tp.topic => t.partitions.push(part),
            _ => topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(TopicName(s(tp.topic)))
                    .with_partitions(vec![part]),
            ),
        }
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
