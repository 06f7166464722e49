//! Kafka API handlers: decode a request body, do the work (locally or on the owning
//! shards), encode the response.
//!
//! [`supported`] is the single table of what we implement; ApiVersions advertises exactly it.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use tokio::sync::{oneshot, Notify};

use crate::admin::{AdminCommand, ConfigOp};
use crate::conn::frame;
use crate::error::{AdminError, PartitionError};
use crate::group::handlers as groups;
use crate::meta::TopicMeta;
use crate::shard::{FetchResult, ProduceResult, ShardMsg, ShardState};
use crate::wire::fetch::{
    encode_fetch_response, FetchPartitionParts, FetchResponseParts, FetchTopicParts,
    NodeEndpointParts, Piece, FETCH_VERSIONS,
};

/// What a handler hands back to the connection.
#[derive(Debug)]
pub enum Response {
    /// No response (Produce with acks=0).
    None,
    Bytes(Bytes),
    /// A Fetch response: memory and file pieces.
    Pieces(Vec<Piece>),
}

/// Why a request could not be handled (the connection is closed).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("decode: {0}")]
    Decode(String),
    #[error("encode: {0}")]
    Encode(String),
}

/// The versions we implement, per API; `None` for APIs we don't.
pub fn supported(api: ApiKey) -> Option<RangeInclusive<i16>> {
    Some(match api {
        ApiKey::Produce => 3..=13,
        ApiKey::Fetch => FETCH_VERSIONS,
        ApiKey::ListOffsets => 1..=10,
        ApiKey::Metadata => 0..=13,
        ApiKey::ApiVersions => 0..=4,
        ApiKey::CreateTopics => 2..=7,
        ApiKey::DeleteTopics => 1..=6,
        ApiKey::DeleteRecords => 0..=2,
        ApiKey::CreatePartitions => 0..=3,
        ApiKey::DescribeConfigs => 1..=4,
        ApiKey::AlterConfigs => 0..=2,
        ApiKey::IncrementalAlterConfigs => 0..=1,
        ApiKey::DescribeLogDirs => 1..=4,
        ApiKey::DescribeProducers => 0..=0,
        ApiKey::ElectLeaders => 0..=2,
        ApiKey::DescribeTopicPartitions => 0..=0,
        ApiKey::ConsumerGroupDescribe => 0..=1,
        ApiKey::ListConfigResources => 0..=1,
        // v5 (KIP-890) changes nothing without transactions. v6 (KIP-939, two-phase commit)
        // is not in the codec; its fields are refused anyway (no transactions).
        ApiKey::InitProducerId => 0..=5,
        // v5 adds TRANSACTION_ABORTABLE (never sent here), v6 the share-group key type
        // (refused as INVALID_REQUEST, like every unknown key type).
        ApiKey::FindCoordinator => 0..=6,
        ApiKey::JoinGroup => 0..=9,
        ApiKey::SyncGroup => 0..=5,
        ApiKey::Heartbeat => 0..=4,
        ApiKey::LeaveGroup => 0..=5,
        ApiKey::OffsetCommit => 2..=9,
        ApiKey::OffsetFetch => 1..=9,
        ApiKey::ListGroups => 0..=5,
        ApiKey::DescribeGroups => 0..=6,
        ApiKey::DeleteGroups => 0..=2,
        ApiKey::OffsetDelete => 0..=0,
        ApiKey::DescribeCluster => 0..=2,
        ApiKey::DescribeQuorum => 0..=2,
        // Kafka 4 serves 2–4 (KIP-896 removed 0–1); librdkafka sends 2.
        ApiKey::OffsetForLeaderEpoch => 2..=4,
        _ => return None,
    })
}

const ALL_APIS: [ApiKey; 33] = [
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::DeleteRecords,
    ApiKey::CreatePartitions,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeLogDirs,
    ApiKey::DescribeProducers,
    ApiKey::ElectLeaders,
    ApiKey::DescribeTopicPartitions,
    ApiKey::ConsumerGroupDescribe,
    ApiKey::ListConfigResources,
    ApiKey::InitProducerId,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
    ApiKey::DescribeCluster,
    ApiKey::DescribeQuorum,
    ApiKey::OffsetForLeaderEpoch,
];

fn decode<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, ApiError> {
    T::decode(body, version).map_err(|e| ApiError::Decode(e.to_string()))
}

fn respond<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Response, ApiError> {
    let mut err = None;
    let b = frame(
        api.response_header_version(version),
        correlation_id,
        |buf| {
            if let Err(e) = body.encode(buf, version) {
                err = Some(e.to_string());
            }
        },
    );
    match err {
        Some(e) => Err(ApiError::Encode(e)),
        None => Ok(Response::Bytes(b)),
    }
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn topic(v: impl Into<String>) -> TopicName {
    TopicName(s(v))
}

/// A request after its first phase.
#[derive(Debug)]
pub enum Started {
    /// Fully handled.
    Done(Response),
    /// A Produce whose appends are queued; the response comes when they complete.
    Produce {
        inflight: ProduceInFlight,
        version: i16,
        correlation_id: i32,
    },
    /// A Produce with acks=0: queued, and no response is sent.
    ProduceNoAck,
}

/// Decodes a Produce and queues its appends (the part that must follow request order).
pub async fn start_produce(
    shard: &Rc<ShardState>,
    header: &RequestHeader,
    mut body: Bytes,
) -> Result<Started, ApiError> {
    let v = header.request_api_version;
    let req: ProduceRequest = decode(&mut body, v)?;
    let acks = req.acks;
    let inflight = produce_dispatch(shard, req, v).await;
    if acks == 0 {
        return Ok(Started::ProduceNoAck);
    }
    Ok(Started::Produce {
        inflight,
        version: v,
        correlation_id: header.correlation_id,
    })
}

/// Encodes a finished Produce.
pub fn produce_response(
    resp: &ProduceResponse,
    version: i16,
    correlation_id: i32,
) -> Result<Response, ApiError> {
    respond(ApiKey::Produce, version, correlation_id, resp)
}

/// Runs the handler of `api` for a client at `peer` (as Kafka shows it: "/ip").
pub async fn handle(
    shard: &Rc<ShardState>,
    api: ApiKey,
    header: RequestHeader,
    mut body: Bytes,
    peer: &str,
) -> Result<Response, ApiError> {
    let v = header.request_api_version;
    let id = header.correlation_id;
    let b = &mut body;
    match api {
        ApiKey::ApiVersions => {
            let _req: ApiVersionsRequest = decode(b, v)?;
            respond(api, v, id, &api_versions_body())
        }
        ApiKey::Metadata => respond(api, v, id, &metadata(shard, decode(b, v)?, v).await),
        ApiKey::Produce => {
            let req: ProduceRequest = decode(b, v)?;
            let acks = req.acks;
            let resp = produce_dispatch(shard, req, v).await.finish().await;
            if acks == 0 {
                return Ok(Response::None);
            }
            respond(api, v, id, &resp)
        }
        ApiKey::Fetch => fetch(shard, decode(b, v)?, v, id).await,
        ApiKey::ListOffsets => respond(api, v, id, &list_offsets(shard, decode(b, v)?, v).await),
        ApiKey::OffsetForLeaderEpoch => respond(
            api,
            v,
            id,
            &offset_for_leader_epoch(shard, decode(b, v)?).await,
        ),
        ApiKey::CreateTopics => respond(api, v, id, &create_topics(shard, decode(b, v)?, v).await),
        ApiKey::DeleteTopics => respond(api, v, id, &delete_topics(shard, decode(b, v)?, v).await),
        ApiKey::DeleteRecords => respond(api, v, id, &delete_records(shard, decode(b, v)?).await),
        ApiKey::CreatePartitions => {
            respond(api, v, id, &create_partitions(shard, decode(b, v)?).await)
        }
        ApiKey::DescribeConfigs => {
            respond(api, v, id, &describe_configs(shard, decode(b, v)?, v).await)
        }
        ApiKey::AlterConfigs => respond(api, v, id, &alter_configs(shard, decode(b, v)?).await),
        ApiKey::IncrementalAlterConfigs => respond(
            api,
            v,
            id,
            &incremental_alter_configs(shard, decode(b, v)?).await,
        ),
        ApiKey::DescribeProducers => {
            respond(api, v, id, &describe_producers(shard, decode(b, v)?).await)
        }
        ApiKey::ElectLeaders => respond(api, v, id, &elect_leaders(shard, decode(b, v)?, v).await),
        ApiKey::DescribeTopicPartitions => respond(
            api,
            v,
            id,
            &describe_topic_partitions(shard, decode(b, v)?).await,
        ),
        ApiKey::ConsumerGroupDescribe => {
            respond(api, v, id, &consumer_group_describe(decode(b, v)?))
        }
        ApiKey::DescribeLogDirs => {
            respond(api, v, id, &describe_log_dirs(shard, decode(b, v)?).await)
        }
        ApiKey::ListConfigResources => {
            respond(api, v, id, &list_config_resources(shard, decode(b, v)?, v))
        }
        ApiKey::DescribeCluster => respond(api, v, id, &describe_cluster(shard, decode(b, v)?, v)),
        ApiKey::DescribeQuorum => {
            let resp = crate::cluster::describe_quorum(shard, decode(b, v)?, v).await;
            respond(api, v, id, &resp)
        }
        ApiKey::InitProducerId => {
            respond(api, v, id, &init_producer_id(shard, decode(b, v)?).await)
        }
        ApiKey::FindCoordinator => respond(
            api,
            v,
            id,
            &groups::find_coordinator(shard, decode(b, v)?, v).await,
        ),
        ApiKey::JoinGroup => {
            let client_id = header.client_id.as_ref().map_or("", |c| c.as_str());
            let resp = groups::join_group(shard, decode(b, v)?, v, client_id, peer).await;
            respond(api, v, id, &resp)
        }
        ApiKey::SyncGroup => respond(api, v, id, &groups::sync_group(shard, decode(b, v)?).await),
        ApiKey::Heartbeat => respond(api, v, id, &groups::heartbeat(shard, decode(b, v)?).await),
        ApiKey::LeaveGroup => respond(
            api,
            v,
            id,
            &groups::leave_group(shard, decode(b, v)?, v).await,
        ),
        ApiKey::OffsetCommit => respond(
            api,
            v,
            id,
            &groups::offset_commit(shard, decode(b, v)?, v).await,
        ),
        ApiKey::OffsetFetch => respond(
            api,
            v,
            id,
            &groups::offset_fetch(shard, decode(b, v)?, v).await,
        ),
        ApiKey::ListGroups => respond(
            api,
            v,
            id,
            &groups::list_groups(shard, decode(b, v)?, v).await,
        ),
        ApiKey::DescribeGroups => respond(
            api,
            v,
            id,
            &groups::describe_groups(shard, decode(b, v)?, v).await,
        ),
        ApiKey::DeleteGroups => respond(
            api,
            v,
            id,
            &groups::delete_groups(shard, decode(b, v)?).await,
        ),
        ApiKey::OffsetDelete => respond(
            api,
            v,
            id,
            &groups::offset_delete(shard, decode(b, v)?).await,
        ),
        _ => Err(ApiError::Decode(format!("{api:?} is not implemented"))),
    }
}

fn api_versions_body() -> ApiVersionsResponse {
    api_versions_of(&ALL_APIS)
}

/// An ApiVersions response listing `apis` with the versions Tern serves of each (the null
/// broker of `tern bench` advertises a subset the same way).
pub fn api_versions_of(apis: &[ApiKey]) -> ApiVersionsResponse {
    let keys = apis
        .iter()
        .filter_map(|api| {
            let r = supported(*api)?;
            Some(
                ApiVersion::default()
                    .with_api_key(*api as i16)
                    .with_min_version(*r.start())
                    .with_max_version(*r.end()),
            )
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(keys)
}

/// The v0 answer to an ApiVersions request of a version we don't know.
pub fn api_versions_unsupported(correlation_id: i32) -> Response {
    let body = api_versions_body().with_error_code(ResponseError::UnsupportedVersion.code());
    let b = frame(0, correlation_id, |buf| {
        let _ = body.encode(buf, 0);
    });
    Response::Bytes(b)
}

// ---------------------------------------------------------------------------------------
// Metadata

async fn metadata(shard: &Rc<ShardState>, req: MetadataRequest, v: i16) -> MetadataResponse {
    let router = &shard.router;
    if let Some(node) = &router.cluster {
        return crate::cluster::metadata(shard, node, &req, v).await;
    }
    let config = &router.config;
    let advertised = config.advertised(router.local_addr());
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(config.node_id))
        .with_host(s(advertised.host))
        .with_port(advertised.port as i32);
    let snap = router.meta.snapshot();
    let wanted: Vec<(Option<String>, uuid::Uuid)> = match &req.topics {
        None => snap
            .topics
            .keys()
            .map(|n| (Some(n.clone()), uuid::Uuid::nil()))
            .collect(),
        Some(t) if t.is_empty() && v == 0 => snap
            .topics
            .keys()
            .map(|n| (Some(n.clone()), uuid::Uuid::nil()))
            .collect(),
        Some(t) => t
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id))
            .collect(),
    };
    let auto = config.auto_create_topics && (v < 4 || req.allow_auto_topic_creation);
    let mut topics = Vec::new();
    for (name, id) in wanted {
        let snap = router.meta.snapshot();
        let found = match &name {
            Some(n) => snap.topics.get(n).cloned(),
            None => snap.topic_by_id(id).cloned(),
        };
        let meta = match (found, name) {
            (Some(m), _) => Ok(m),
            (None, Some(n)) if auto => auto_create(shard, &n)
                .await
                .map_err(|e| (n, e.kafka_code())),
            (None, Some(n)) => Err((n, ResponseError::UnknownTopicOrPartition.code())),
            (None, None) => Err((String::new(), ResponseError::UnknownTopicId.code())),
        };
        let mut t = match meta {
            Ok(m) => topic_metadata(&m, config.node_id),
            Err((n, code)) => MetadataResponseTopic::default()
                .with_name(Some(topic(n)))
                .with_topic_id(id)
                .with_error_code(code),
        };
        for_metadata_version(&mut t, v);
        topics.push(t);
    }
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(s(router.cluster_id())))
        .with_controller_id(BrokerId(config.node_id))
        .with_topics(topics)
}

pub(crate) async fn auto_create(
    shard: &Rc<ShardState>,
    name: &str,
) -> Result<Arc<TopicMeta>, AdminError> {
    let command = AdminCommand::Create {
        name: name.to_string(),
        partitions: -1,
        replication_factor: -1,
        configs: BTreeMap::new(),
    };
    match shard.router.admin(command, false).await {
        // Lost a race with another creator: the topic exists now.
        Err(e) if e.is_topic_exists() => shard
            .router
            .meta
            .snapshot()
            .topics
            .get(name)
            .cloned()
            .ok_or(e),
        r => r,
    }
}

/// Clears what Metadata version `v` does not carry (topic ids before v10, leader epochs
/// before v7).
pub(crate) fn for_metadata_version(t: &mut MetadataResponseTopic, v: i16) {
    if v < 10 {
        t.topic_id = uuid::Uuid::nil();
    }
    if v < 7 {
        for p in &mut t.partitions {
            p.leader_epoch = -1;
        }
    }
}

fn topic_metadata(m: &TopicMeta, node_id: i32) -> MetadataResponseTopic {
    let partitions = (0..m.partitions)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(node_id))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node_id)])
                .with_isr_nodes(vec![BrokerId(node_id)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic(m.name.clone())))
        .with_topic_id(m.id)
        .with_is_internal(m.name.starts_with("__"))
        .with_partitions(partitions)
        .with_topic_authorized_operations(i32::MIN)
}

// ---------------------------------------------------------------------------------------
// Produce

/// Splits a record set into its batches without copying; `None` if a batch is cut short.
pub(crate) fn split_batches(mut records: Bytes) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    while !records.is_empty() {
        if records.len() < 12 {
            return None;
        }
        let len = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
        let total = 12usize.checked_add(usize::try_from(len).ok()?)?;
        if total > records.len() {
            return None;
        }
        out.push(records.split_to(total));
    }
    Some(out)
}

/// A produce request whose appends are queued on their owners, waiting for their results.
#[derive(Debug)]
pub struct ProduceInFlight {
    shard: Rc<ShardState>,
    responses: Vec<TopicProduceResponse>,
    /// Per owner shard: the (topic, partition) indexes of its items, and its one reply.
    pending: Vec<OwnerReply>,
    version: i16,
}

/// Where one owner shard's results go in the response, and the channel they come on.
type OwnerReply = (Vec<(usize, usize)>, oneshot::Receiver<Vec<ProduceResult>>);

/// One owner shard's share of a Produce request.
struct OwnerItems {
    shard: usize,
    at: Vec<(usize, usize)>,
    items: Vec<(crate::shard::Tp, Vec<Bytes>)>,
}

/// The first half of a Produce: validates and queues every partition's batches on its owner,
/// in request order. Awaiting [`ProduceInFlight::finish`] gives the response.
pub async fn produce_dispatch(
    shard: &Rc<ShardState>,
    req: ProduceRequest,
    v: i16,
) -> ProduceInFlight {
    let router = &shard.router;
    let snap = router.meta.snapshot();
    let mut owners: Vec<OwnerItems> = Vec::new();
    let mut responses = Vec::new();
    for (ti, t) in req.topic_data.into_iter().enumerate() {
        // v13 names topics by id only: an unknown id refuses each of its partitions.
        let (name, known_id) = if v >= 13 {
            match snap.topic_by_id(t.topic_id) {
                Some(m) => (m.name.clone(), true),
                None => (String::new(), false),
            }
        } else {
            (t.name.to_string(), true)
        };
        let max = topic_max_message_bytes(shard, &snap, &name);
        let mut parts = Vec::new();
        for (pi, p) in t.partition_data.into_iter().enumerate() {
            let r = PartitionProduceResponse::default()
                .with_index(p.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let admitted = (|| {
                if !matches!(req.acks, -1..=1) {
                    return Err(PartitionError::InvalidAcks(req.acks));
                }
                if !known_id {
                    return Err(PartitionError::UnknownTopicId);
                }
                if snap.partition(&name, p.index).is_none() {
                    return Err(PartitionError::Unknown);
                }
                if !router.leads(&name, p.index) {
                    return Err(PartitionError::NotLeader);
                }
                let batches = p
                    .records
                    .and_then(split_batches)
                    .filter(|b| !b.is_empty())
                    .ok_or(PartitionError::Corrupt)?;
                match batches.iter().find(|b| b.len() > max) {
                    Some(b) => Err(PartitionError::TooLarge { len: b.len(), max }),
                    None => Ok(batches),
                }
            })();
            let batches = match admitted {
                Ok(b) => b,
                Err(e) => {
                    parts.push(r.with_error_code(e.kafka_code()));
                    continue;
                }
            };
            let owner = router.owner(&name, p.index);
            let at = match owners.iter().position(|o| o.shard == owner) {
                Some(k) => k,
                None => {
                    owners.push(OwnerItems {
                        shard: owner,
                        at: Vec::new(),
                        items: Vec::new(),
                    });
                    owners.len() - 1
                }
            };
            owners[at].at.push((ti, pi));
            owners[at].items.push(((name.clone(), p.index), batches));
            parts.push(r);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(t.name)
                .with_topic_id(t.topic_id)
                .with_partition_responses(parts),
        );
    }
    let mut pending = Vec::with_capacity(owners.len());
    for o in owners {
        let (tx, rx) = oneshot::channel();
        let msg = ShardMsg::Produce {
            items: o.items,
            acks: req.acks,
            timeout_ms: req.timeout_ms.max(0) as u64,
            reply: tx,
        };
        // A shard that is gone drops the reply: its items answer NOT_LEADER_OR_FOLLOWER.
        let _ = router.dispatch(shard, o.shard, msg).await;
        pending.push((o.at, rx));
    }
    ProduceInFlight {
        shard: shard.clone(),
        responses,
        pending,
        version: v,
    }
}

impl ProduceInFlight {
    /// Waits for every queued append and builds the response.
    pub async fn finish(self) -> ProduceResponse {
        let ProduceInFlight {
            shard,
            mut responses,
            pending,
            version: v,
        } = self;
        for (at, rx) in pending {
            let results = rx.await.unwrap_or_default();
            for (k, (ti, pi)) in at.into_iter().enumerate() {
                let r = &mut responses[ti].partition_responses[pi];
                // A shard that is gone answers nothing: NOT_LEADER_OR_FOLLOWER.
                match results.get(k).unwrap_or(&Err(PartitionError::NotLeader)) {
                    Ok(a) => {
                        r.base_offset = a.base_offset;
                        r.log_append_time_ms = a.log_append_time_ms.unwrap_or(-1);
                        r.log_start_offset = if v >= 5 { a.log_start_offset } else { -1 };
                    }
                    Err(e) => r.error_code = e.kafka_code(),
                }
            }
        }
        let mut resp = ProduceResponse::default().with_responses(responses);
        if v >= 10 {
            add_produce_leader_hints(&shard, &mut resp);
        }
        resp
    }
}

/// Whether a partition error is one KIP-951 answers with the current leader.
fn wants_leader_hint(code: i16) -> bool {
    code == ResponseError::NotLeaderOrFollower.code()
        || code == ResponseError::FencedLeaderEpoch.code()
}

/// KIP-951 (Produce v10+): each partition refused for leadership names the leader this
/// broker knows of, and the response carries those leaders' endpoints.
fn add_produce_leader_hints(shard: &Rc<ShardState>, resp: &mut ProduceResponse) {
    use kafka_protocol::messages::produce_response::{LeaderIdAndEpoch, NodeEndpoint};
    let Some(node) = &shard.router.cluster else {
        return;
    };
    let snap = shard.router.meta.snapshot();
    let mut endpoints: Vec<NodeEndpoint> = Vec::new();
    for t in &mut resp.responses {
        let name = if t.name.is_empty() {
            snap.topic_by_id(t.topic_id).map(|m| m.name.clone())
        } else {
            Some(t.name.to_string())
        };
        let Some(name) = name else { continue };
        for p in &mut t.partition_responses {
            if !wants_leader_hint(p.error_code) {
                continue;
            }
            let Some(h) = crate::cluster::leader_hint(node, &name, p.index) else {
                continue;
            };
            p.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(h.leader))
                .with_leader_epoch(h.leader_epoch);
            if !endpoints.iter().any(|e| e.node_id.0 == h.leader) {
                endpoints.push(
                    NodeEndpoint::default()
                        .with_node_id(BrokerId(h.leader))
                        .with_host(s(h.host))
                        .with_port(i32::from(h.port))
                        .with_rack(h.rack.map(s)),
                );
            }
        }
    }
    resp.node_endpoints = endpoints;
}

fn topic_max_message_bytes(
    shard: &Rc<ShardState>,
    snap: &crate::meta::Snapshot,
    name: &str,
) -> usize {
    let config = &shard.router.config;
    snap.topics
        .get(name)
        .and_then(|t| crate::config_map::topic_config(config, &snap.dynamic, &t.overrides).ok())
        .map_or(config.message_max_bytes as usize, |t| {
            t.max_message_bytes as usize
        })
}

// ---------------------------------------------------------------------------------------
// Fetch

/// Longest wait a client may ask of a long poll.
const FETCH_WAIT_MAX_MS: i32 = 60_000;

async fn fetch(
    shard: &Rc<ShardState>,
    mut req: FetchRequest,
    v: i16,
    correlation_id: i32,
) -> Result<Response, ApiError> {
    let router = &shard.router;
    let snap = router.meta.snapshot();
    // v13+ names topics by id: carry on with names, an unknown id keeps an empty name (no
    // topic has one) and its partitions answer UNKNOWN_TOPIC_ID.
    if v >= 13 {
        for t in &mut req.topics {
            if let Some(m) = snap.topic_by_id(t.topic_id) {
                t.topic = topic(m.name.clone());
            }
        }
    }
    let wait_ms = req.max_wait_ms.clamp(0, FETCH_WAIT_MAX_MS) as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let min_bytes = req.min_bytes.max(0) as u64;
    let max_bytes = if req.max_bytes <= 0 {
        i32::MAX as u64
    } else {
        req.max_bytes as u64
    };
    let signals: Vec<Arc<Notify>> = req
        .topics
        .iter()
        .flat_map(|t| {
            let meta = snap.topics.get(t.topic.as_str()).cloned();
            t.partitions.iter().filter_map(move |p| {
                meta.as_ref()
                    .and_then(|m| m.signals.get(p.partition as usize).cloned())
            })
        })
        .collect();
    loop {
        let mut notified: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
            signals.iter().map(|n| Box::pin(n.notified())).collect();
        for n in notified.iter_mut() {
            n.as_mut().enable();
        }
        let results = fetch_once(shard, &req, v).await;
        let total: u64 = results.iter().flatten().flatten().map(|r| r.bytes).sum();
        let errors = results.iter().flatten().any(|r| r.is_err());
        let now = tokio::time::Instant::now();
        let stopping = *shard.stop.borrow();
        if total >= min_bytes || errors || now >= deadline || signals.is_empty() || stopping {
            return encode_fetch(shard, &req, results, v, correlation_id, max_bytes);
        }
        shard.wait_any(&mut notified, deadline).await;
    }
}

async fn fetch_once(shard: &Rc<ShardState>, req: &FetchRequest, v: i16) -> Vec<Vec<FetchResult>> {
    let router = &shard.router;
    let mut pending = Vec::new();
    for t in &req.topics {
        let name = t.topic.to_string();
        let unknown_id = v >= 13 && name.is_empty();
        let mut parts = Vec::new();
        for p in &t.partitions {
            if unknown_id {
                parts.push(Err(PartitionError::UnknownTopicId));
                continue;
            }
            if !router.leads(&name, p.partition) {
                parts.push(Err(PartitionError::NotLeader));
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let owner = router.owner(&name, p.partition);
            let msg = ShardMsg::Fetch {
                tp: (name.clone(), p.partition),
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as u32,
                reply: tx,
            };
            let sent = router.dispatch(shard, owner, msg).await.is_ok();
            parts.push(if sent {
                Ok(rx)
            } else {
                Err(PartitionError::NotLeader)
            });
        }
        pending.push(parts);
    }
    let mut out = Vec::new();
    for parts in pending {
        let mut results = Vec::new();
        for rx in parts {
            let r = match rx {
                // A shard that is gone drops the reply.
                Ok(rx) => rx.await.unwrap_or(Err(PartitionError::NotLeader)),
                Err(e) => Err(e),
            };
            results.push(r);
        }
        out.push(results);
    }
    out
}

fn encode_fetch(
    shard: &Rc<ShardState>,
    req: &FetchRequest,
    results: Vec<Vec<FetchResult>>,
    v: i16,
    correlation_id: i32,
    max_bytes: u64,
) -> Result<Response, ApiError> {
    let mut budget = max_bytes;
    let mut first = true;
    let mut topics = Vec::new();
    let mut node_endpoints = Vec::new();
    for (t, results) in req.topics.iter().zip(results) {
        let mut partitions = Vec::new();
        for (p, r) in t.partitions.iter().zip(results) {
            let mut part = FetchPartitionParts {
                partition_index: p.partition,
                error_code: 0,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                preferred_read_replica: -1,
                current_leader: None,
                records: Vec::new(),
            };
            match r {
                Ok(r) => {
                    // The first partition with data is always served whole (at least one
                    // batch); later ones only while the response's max_bytes allows.
                    let fits = first || r.bytes <= budget;
                    if fits && r.bytes > 0 {
                        first = false;
                        budget = budget.saturating_sub(r.bytes);
                        part.records = r.records;
                    }
                    part.high_watermark = r.high_watermark;
                    part.last_stable_offset = r.high_watermark;
                    part.log_start_offset = r.log_start_offset;
                }
                Err(e) => {
                    part.error_code = e.kafka_code();
                    // KIP-951: name the leader this broker knows of (tagged, v12+).
                    let hint = shard
                        .router
                        .cluster
                        .as_ref()
                        .filter(|_| v >= 12 && wants_leader_hint(part.error_code))
                        .and_then(|node| {
                            crate::cluster::leader_hint(node, t.topic.as_str(), p.partition)
                        });
                    if let Some(h) = hint {
                        part.current_leader = Some((h.leader, h.leader_epoch));
                        if !node_endpoints
                            .iter()
                            .any(|e: &NodeEndpointParts| e.node_id == h.leader)
                        {
                            node_endpoints.push(NodeEndpointParts {
                                node_id: h.leader,
                                host: h.host,
                                port: i32::from(h.port),
                                rack: h.rack,
                            });
                        }
                    }
                }
            }
            partitions.push(part);
        }
        topics.push(FetchTopicParts {
            name: t.topic.clone(),
            topic_id: t.topic_id,
            partitions,
        });
    }
    let parts = FetchResponseParts {
        correlation_id,
        version: v,
        throttle_time_ms: 0,
        error_code: 0,
        session_id: 0,
        topics,
        node_endpoints,
    };
    encode_fetch_response(parts)
        .map(Response::Pieces)
        .map_err(|e| ApiError::Encode(e.to_string()))
}

// ---------------------------------------------------------------------------------------
// OffsetForLeaderEpoch

/// Where each asked epoch ends on this broker's led partitions (consumers validate their
/// position with it after a leader change, KIP-320); NOT_LEADER_OR_FOLLOWER elsewhere.
async fn offset_for_leader_epoch(
    shard: &Rc<ShardState>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let router = &shard.router;
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.topic.to_string();
        let mut parts = Vec::new();
        for p in t.partitions {
            let r = router
                .ask_leader(shard, &name, p.partition, |reply| {
                    ShardMsg::OffsetForLeaderEpoch {
                        tp: (name.clone(), p.partition),
                        current: p.current_leader_epoch,
                        epoch: p.leader_epoch,
                        reply,
                    }
                })
                .await;
            let mut part = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            match r.unwrap_or(Err(PartitionError::NotLeader)) {
                Ok((epoch, end)) => {
                    part.leader_epoch = epoch;
                    part.end_offset = end;
                }
                Err(e) => part.error_code = e.kafka_code(),
            }
            parts.push(part);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(parts),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

// ---------------------------------------------------------------------------------------
// ListOffsets

/// How many special timestamps below -1 ListOffsets `v` knows: -2 earliest (all), -3 max
/// timestamp (v7+, KIP-734), -4 earliest local (v8+, KIP-405), -5 latest tiered (v9+,
/// KIP-1005).
fn list_offsets_specials(v: i16) -> i64 {
    match v {
        ..=6 => 1,
        7 => 2,
        8 => 3,
        _ => 4,
    }
}

async fn list_offsets(
    shard: &Rc<ShardState>,
    req: ListOffsetsRequest,
    v: i16,
) -> ListOffsetsResponse {
    let router = &shard.router;
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.to_string();
        let mut parts = Vec::new();
        for p in t.partitions {
            let tp = (name.clone(), p.partition_index);
            let timestamp = p.timestamp;
            let r = if timestamp < -1 - list_offsets_specials(v) {
                Some(Err(PartitionError::InvalidTimestamp(timestamp)))
            } else {
                router
                    .ask_leader(shard, &name, p.partition_index, |reply| {
                        ShardMsg::ListOffsets {
                            tp,
                            timestamp,
                            reply,
                        }
                    })
                    .await
            };
            let mut part = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_offset(-1)
                .with_timestamp(-1)
                .with_leader_epoch(-1);
            match r.unwrap_or(Err(PartitionError::NotLeader)) {
                Ok(Some(found)) => {
                    part.offset = found.offset;
                    part.timestamp = found.timestamp.unwrap_or(-1);
                    if v >= 4 {
                        part.leader_epoch = found.leader_epoch;
                    }
                }
                Ok(None) => {}
                Err(e) => part.error_code = e.kafka_code(),
            }
            parts.push(part);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

// ---------------------------------------------------------------------------------------
// Admin: CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords, DescribeConfigs

/// An admin request's answer as the value, or Kafka's error code and message.
fn admin_answer<T>(r: Result<T, AdminError>) -> Result<T, (i16, Option<StrBytes>)> {
    r.map_err(|e| (e.kafka_code(), Some(s(e.to_string()))))
}

async fn create_topics(
    shard: &Rc<ShardState>,
    req: CreateTopicsRequest,
    v: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let name = t.name.to_string();
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        let (partitions, rf) = if t.assignments.is_empty() {
            (t.num_partitions, t.replication_factor)
        } else {
            let node = shard.router.config.node_id;
            let ok = t
                .assignments
                .iter()
                .all(|a| a.broker_ids == [BrokerId(node)]);
            if !ok {
                let e = AdminError::ReplicaAssignment { node };
                result.error_code = e.kafka_code();
                result.error_message = Some(s(e.to_string()));
                results.push(result);
                continue;
            }
            (t.assignments.len() as i32, 1)
        };
        let command = AdminCommand::Create {
            name,
            partitions,
            replication_factor: rf,
            configs,
        };
        let r = shard.router.admin(command, req.validate_only).await;
        match admin_answer(r) {
            Ok(m) => {
                if v >= 7 {
                    result.topic_id = m.id;
                }
                if v >= 5 {
                    result.num_partitions = m.partitions;
                    result.replication_factor = 1;
                }
            }
            Err((code, message)) => {
                result.error_code = code;
                result.error_message = message;
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

async fn delete_topics(
    shard: &Rc<ShardState>,
    req: DeleteTopicsRequest,
    v: i16,
) -> DeleteTopicsResponse {
    let snap = shard.router.meta.snapshot();
    let mut names: Vec<(Option<String>, uuid::Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.to_string()), uuid::Uuid::nil()))
        .collect();
    names.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id)),
    );
    let mut responses = Vec::new();
    for (name, id) in names {
        let name = name.or_else(|| snap.topic_by_id(id).map(|t| t.name.clone()));
        let mut r = DeletableTopicResult::default().with_topic_id(id);
        let Some(name) = name else {
            responses.push(r.with_error_code(ResponseError::UnknownTopicId.code()));
            continue;
        };
        r.name = Some(topic(name.clone()));
        let res = shard
            .router
            .admin(AdminCommand::Delete { name }, false)
            .await;
        match admin_answer(res) {
            Ok(deleted) => r.topic_id = deleted.id,
            Err((code, message)) => {
                r.error_code = code;
                r.error_message = message;
            }
        }
        if v < 6 {
            r.topic_id = uuid::Uuid::nil();
        }
        if v < 5 {
            r.error_message = None;
        }
        responses.push(r);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

async fn create_partitions(
    shard: &Rc<ShardState>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let name = t.name.to_string();
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
        let command = AdminCommand::CreatePartitions {
            name,
            count: t.count,
        };
        let res = shard.router.admin(command, req.validate_only).await;
        if let Err((code, message)) = admin_answer(res) {
            r.error_code = code;
            r.error_message = message;
        }
        results.push(r);
    }
    CreatePartitionsResponse::default().with_results(results)
}

async fn delete_records(
    shard: &Rc<ShardState>,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let router = &shard.router;
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.to_string();
        let mut parts = Vec::new();
        for p in t.partitions {
            let tp = (name.clone(), p.partition_index);
            let offset = p.offset;
            let r = router
                .ask(shard, &name, p.partition_index, |reply| {
                    ShardMsg::DeleteRecords { tp, offset, reply }
                })
                .await
                .unwrap_or(Err(PartitionError::NotLeader));
            let (low, code) = match r {
                Ok(low) => (low, 0),
                Err(e) => (-1, e.kafka_code()),
            };
            parts.push(
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(low)
                    .with_error_code(code),
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Read-only entry of a topic's DescribeConfigs listing which shard serves each partition
/// (`partition:shard,…`), as reported by the shards themselves.
pub const SHARDS_CONFIG: &str = "tern.partition.shards";

/// Read-only entry of a broker's DescribeConfigs in a cluster: the broker epoch the
/// controller gave this broker at its registration (absent until it registered).
pub const BROKER_EPOCH_CONFIG: &str = "tern.broker.epoch";

/// InitProducerId for idempotent producers: a new producer id, or (KIP-360) the same id
/// with the next epoch when the client asks for a bump. Transactional ids are refused:
/// transactions are not implemented.
async fn init_producer_id(
    shard: &Rc<ShardState>,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty())
        || req.enable_2_pc
        || req.keep_prepared_txn
    {
        return resp.with_error_code(ResponseError::InvalidRequest.code());
    }
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    tracing::debug!(producer_id = pid, epoch, "InitProducerId");
    if pid >= 0 && (0..i16::MAX - 1).contains(&epoch) {
        return resp
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch + 1);
    }
    if let Some(node) = &shard.router.cluster {
        return match crate::cluster::allocate_producer_id(&shard.router, node).await {
            Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
            Err(e) => resp.with_error_code(e.kafka_code()),
        };
    }
    match shard.router.producer_ids.allocate() {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "InitProducerId");
            resp.with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}

async fn partition_shards(shard: &Rc<ShardState>, topic: &str) -> String {
    let mut owned = Vec::new();
    for i in 0..shard.router.shard_count() {
        let (tx, rx) = oneshot::channel();
        if shard
            .router
            .dispatch(shard, i, ShardMsg::Owned { reply: tx })
            .await
            .is_ok()
        {
            for (t, p) in rx.await.unwrap_or_default() {
                if t == topic {
                    owned.push((p, i));
                }
            }
        }
    }
    owned.sort();
    let parts: Vec<String> = owned.iter().map(|(p, s)| format!("{p}:{s}")).collect();
    parts.join(",")
}

/// DescribeCluster: this broker alone, or in a cluster the live brokers of the image (and
/// the fenced ones too when asked, v2), the controller, the cluster id.
fn describe_cluster(
    shard: &Rc<ShardState>,
    req: DescribeClusterRequest,
    v: i16,
) -> DescribeClusterResponse {
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    let router = &shard.router;
    let config = &router.config;
    let resp = DescribeClusterResponse::default()
        .with_cluster_id(s(router.cluster_id()))
        .with_cluster_authorized_operations(i32::MIN)
        .with_endpoint_type(if v >= 1 { req.endpoint_type } else { 1 });
    if v >= 1 && req.endpoint_type != 1 {
        return resp
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(s("only broker endpoints (type 1) are served")))
            .with_controller_id(BrokerId(-1));
    }
    let Some(node) = &router.cluster else {
        let a = config.advertised(router.local_addr());
        let broker = DescribeClusterBroker::default()
            .with_broker_id(BrokerId(config.node_id))
            .with_host(s(a.host))
            .with_port(i32::from(a.port));
        return resp
            .with_controller_id(BrokerId(config.node_id))
            .with_brokers(vec![broker]);
    };
    let view = node.view();
    let with_fenced = v >= 2 && req.include_fenced_brokers;
    let brokers = view
        .image
        .brokers
        .values()
        .filter(|b| with_fenced || !b.fenced)
        .filter_map(|b| {
            let e = crate::cluster::client_endpoint(b)?;
            let mut d = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(s(e.host.clone()))
                .with_port(i32::from(e.port));
            d.rack = b.rack.clone().map(s);
            if v >= 2 {
                d.is_fenced = b.fenced;
            }
            Some(d)
        })
        .collect();
    resp.with_controller_id(BrokerId(view.controller_leader.unwrap_or(-1)))
        .with_brokers(brokers)
}

/// What an AlterConfigs resource changes.
enum AlterTarget {
    Topic(String),
    /// The dynamic broker defaults: the cluster-wide default resource (name ""), or this
    /// broker by its id on a single node (where the two are the same).
    BrokerDefaults,
}

/// The target of one AlterConfigs or IncrementalAlterConfigs resource, or why the resource
/// is refused (Kafka's error and message).
fn alter_target(
    shard: &Rc<ShardState>,
    resource_type: i8,
    name: &str,
) -> Result<AlterTarget, (i16, String)> {
    let config = &shard.router.config;
    let own = name == config.node_id.to_string();
    match resource_type {
        RESOURCE_TOPIC => Ok(AlterTarget::Topic(name.to_string())),
        RESOURCE_BROKER if name.is_empty() => Ok(AlterTarget::BrokerDefaults),
        RESOURCE_BROKER if own && shard.router.cluster.is_none() => Ok(AlterTarget::BrokerDefaults),
        RESOURCE_BROKER if own => Err((
            ResponseError::InvalidRequest.code(),
            "per-broker dynamic configs are not served: change the cluster-wide default \
             (broker resource \"\")"
                .to_string(),
        )),
        RESOURCE_BROKER => Err((
            ResponseError::InvalidRequest.code(),
            format!("broker '{name}' is not this broker ({})", config.node_id),
        )),
        other => Err((
            ResponseError::InvalidRequest.code(),
            format!("resource type {other} is not supported"),
        )),
    }
}

/// Carries out one resource's operations (or only checks them): Kafka's error code and
/// message, 0 and none when done.
async fn alter_resource(
    shard: &Rc<ShardState>,
    resource_type: i8,
    name: &str,
    ops: Result<Vec<(String, ConfigOp)>, String>,
    replace: bool,
    validate_only: bool,
) -> (i16, Option<StrBytes>) {
    let target = alter_target(shard, resource_type, name);
    let (target, ops) = match (target, ops) {
        (Err((code, m)), _) => return (code, Some(s(m))),
        (_, Err(m)) => return (ResponseError::InvalidRequest.code(), Some(s(m))),
        (Ok(t), Ok(ops)) => (t, ops),
    };
    let done = match target {
        AlterTarget::Topic(name) => {
            let command = AdminCommand::AlterConfigs { name, ops, replace };
            shard.router.admin(command, validate_only).await.map(|_| ())
        }
        AlterTarget::BrokerDefaults => shard.router.alter_broker(ops, replace, validate_only).await,
    };
    match admin_answer(done) {
        Ok(()) => (0, None),
        Err(e) => e,
    }
}

/// One resource of an AlterConfigs or IncrementalAlterConfigs: its type, its name, and its
/// operations or why they do not parse.
type AlterRequest = (i8, StrBytes, Result<Vec<(String, ConfigOp)>, String>);

/// Carries out each resource in order: its type, name, Kafka error code and message.
async fn alter_all(
    shard: &Rc<ShardState>,
    resources: Vec<AlterRequest>,
    replace: bool,
    validate_only: bool,
) -> Vec<(i8, StrBytes, i16, Option<StrBytes>)> {
    let mut out = Vec::with_capacity(resources.len());
    for (resource_type, name, ops) in resources {
        let (code, message) =
            alter_resource(shard, resource_type, &name, ops, replace, validate_only).await;
        out.push((resource_type, name, code, message));
    }
    out
}

/// AlterConfigs: each topic's overrides become exactly the request's keys.
async fn alter_configs(shard: &Rc<ShardState>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let resources = req
        .resources
        .into_iter()
        .map(|res| {
            let ops = res
                .configs
                .iter()
                .map(|c| match &c.value {
                    Some(v) => Ok((c.name.to_string(), ConfigOp::Set(v.to_string()))),
                    None => Err(format!("config {} has a null value", c.name.as_str())),
                })
                .collect();
            (res.resource_type, res.resource_name, ops)
        })
        .collect();
    let responses = alter_all(shard, resources, true, req.validate_only)
        .await
        .into_iter()
        .map(|(resource_type, name, code, message)| {
            AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource_type)
                .with_resource_name(name)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on each topic's overrides.
async fn incremental_alter_configs(
    shard: &Rc<ShardState>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let resources = req
        .resources
        .into_iter()
        .map(|res| {
            let ops = res
                .configs
                .iter()
                .map(|c| {
                    let key = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string());
                    let op = match (c.config_operation, value) {
                        (0, Some(v)) => ConfigOp::Set(v),
                        (1, _) => ConfigOp::Delete,
                        (2, Some(v)) => ConfigOp::Append(v),
                        (3, Some(v)) => ConfigOp::Subtract(v),
                        (0 | 2 | 3, None) => return Err(format!("config {key} has a null value")),
                        (op, _) => return Err(format!("config {key}: unknown operation {op}")),
                    };
                    Ok((key, op))
                })
                .collect();
            (res.resource_type, res.resource_name, ops)
        })
        .collect();
    let responses = alter_all(shard, resources, false, req.validate_only)
        .await
        .into_iter()
        .map(|(resource_type, name, code, message)| {
            AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource_type)
                .with_resource_name(name)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// DescribeProducers: the idempotent producers each asked partition's log remembers, from
/// its leader (NOT_LEADER_OR_FOLLOWER elsewhere). Tern has no transactions: the coordinator
/// epoch and the open transaction's start are always -1.
async fn describe_producers(
    shard: &Rc<ShardState>,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    use kafka_protocol::messages::describe_producers_response::{
        PartitionResponse, ProducerState, TopicResponse,
    };
    let router = &shard.router;
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.to_string();
        let mut partitions = Vec::new();
        for p in t.partition_indexes {
            let tp = (name.clone(), p);
            let answer = match router.meta.snapshot().partition(&name, p) {
                None => Err(PartitionError::Unknown),
                Some(_) => router
                    .ask_leader(shard, &name, p, |reply| ShardMsg::Producers { tp, reply })
                    .await
                    .unwrap_or(Err(PartitionError::NotLeader)),
            };
            let mut out = PartitionResponse::default().with_partition_index(p);
            match answer {
                Ok(states) => {
                    out.active_producers = states
                        .into_iter()
                        .map(|st| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(st.producer_id))
                                .with_producer_epoch(i32::from(st.epoch))
                                .with_last_sequence(st.last_sequence)
                                .with_last_timestamp(st.last_ms)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(-1)
                        })
                        .collect();
                }
                Err(e) => {
                    out.error_code = e.kafka_code();
                    out.error_message = Some(s(e.to_string()));
                }
            }
            partitions.push(out);
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}

/// The most partitions a DescribeTopicPartitions answer carries, whatever the request asks
/// (Kafka's `max.request.partition.size.limit` default).
const DESCRIBE_PARTITIONS_MAX: i32 = 2000;

/// DescribeTopicPartitions (KIP-966): Metadata's answer for the asked topics (every topic when
/// none is named), by name, from the cursor on, at most `response_partition_limit` partitions,
/// with the cursor to go on from. Tern keeps no eligible leader replicas (ELR): those fields
/// are null, as from a Kafka broker with ELR off.
async fn describe_topic_partitions(
    shard: &Rc<ShardState>,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    use kafka_protocol::messages::describe_topic_partitions_response::{
        Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
    };
    let named = !req.topics.is_empty();
    let md = MetadataRequest::default()
        .with_topics(named.then(|| {
            req.topics
                .iter()
                .map(|t| {
                    kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(t.name.clone()))
                })
                .collect()
        }))
        .with_allow_auto_topic_creation(false);
    let mut found = metadata(shard, md, 12).await.topics;
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found.dedup_by(|a, b| a.name == b.name);
    let limit = match req.response_partition_limit {
        l if l <= 0 => DESCRIBE_PARTITIONS_MAX,
        l => l.min(DESCRIBE_PARTITIONS_MAX),
    };
    let (from_topic, from_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.clone()), c.partition_index.max(0)),
        None => (None, 0),
    };
    let mut left = limit;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for t in found {
        let Some(name) = t.name.clone() else { continue };
        let first = match &from_topic {
            Some(c) if name < *c => continue,
            Some(c) if name == *c => from_partition,
            _ => 0,
        };
        let mut partitions: Vec<_> = t
            .partitions
            .into_iter()
            .filter(|p| p.partition_index >= first)
            .collect();
        partitions.sort_by_key(|p| p.partition_index);
        if left <= 0 && (t.error_code != 0 || !partitions.is_empty()) {
            let at = partitions.first().map_or(0, |p| p.partition_index);
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(name)
                    .with_partition_index(at),
            );
            break;
        }
        let take = partitions.len().min(left.max(0) as usize);
        if take < partitions.len() {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(name.clone())
                    .with_partition_index(partitions[take].partition_index),
            );
        }
        left -= take as i32;
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_error_code(t.error_code)
                .with_name(Some(name))
                .with_topic_id(t.topic_id)
                .with_is_internal(t.is_internal)
                .with_topic_authorized_operations(i32::MIN)
                .with_partitions(
                    partitions
                        .into_iter()
                        .take(take)
                        .map(|p| {
                            DescribeTopicPartitionsResponsePartition::default()
                                .with_error_code(p.error_code)
                                .with_partition_index(p.partition_index)
                                .with_leader_id(p.leader_id)
                                .with_leader_epoch(p.leader_epoch)
                                .with_replica_nodes(p.replica_nodes)
                                .with_isr_nodes(p.isr_nodes)
                                .with_eligible_leader_replicas(None)
                                .with_last_known_elr(None)
                                .with_offline_replicas(p.offline_replicas)
                        })
                        .collect(),
                ),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

/// ConsumerGroupDescribe (KIP-848): Tern's groups are all classic groups (JoinGroup and
/// SyncGroup), so every group is GROUP_ID_NOT_FOUND, as Kafka answers for a classic group or
/// none; DescribeGroups describes them.
fn consumer_group_describe(req: ConsumerGroupDescribeRequest) -> ConsumerGroupDescribeResponse {
    use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup;
    let groups = req
        .group_ids
        .into_iter()
        .map(|g| {
            let message = format!(
                "group {} is not a consumer group: this broker runs classic groups only \
                 (DescribeGroups describes them)",
                g.as_str()
            );
            DescribedGroup::default()
                .with_group_id(g)
                .with_error_code(ResponseError::GroupIdNotFound.code())
                .with_error_message(Some(s(message)))
                .with_authorized_operations(i32::MIN)
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

/// ElectLeaders (preferred or unclean), decided by the controller in a cluster; a single
/// node leads every partition with its only replica, so no election is needed. When every
/// partition is asked (null), partitions that need no election are left out of the answer,
/// as Kafka does.
async fn elect_leaders(
    shard: &Rc<ShardState>,
    req: ElectLeadersRequest,
    v: i16,
) -> ElectLeadersResponse {
    use kafka_protocol::messages::elect_leaders_response::{
        PartitionResult, ReplicaElectionResult,
    };
    use tern_replication::decide::ElectionType;
    let resp = ElectLeadersResponse::default();
    let election = match (v, req.election_type) {
        (0, _) | (_, 0) => ElectionType::Preferred,
        (_, 1) => ElectionType::Unclean,
        _ => return resp.with_error_code(ResponseError::InvalidRequest.code()),
    };
    let all = req.topic_partitions.is_none();
    let asked: Option<Vec<(String, i32)>> = req.topic_partitions.map(|ts| {
        ts.iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p)))
            .collect()
    });
    let not_needed = ResponseError::ElectionNotNeeded.code();
    let results: Vec<((String, i32), i16, Option<String>)> = match &shard.router.cluster {
        Some(node) => match crate::cluster::elect_leaders(node, election, asked).await {
            Ok(r) => r
                .into_iter()
                .map(|(tp, r)| match r {
                    Ok(()) => (tp, 0, None),
                    Err(e) => {
                        let message = e.to_string();
                        (tp, AdminError::Controller(e).kafka_code(), Some(message))
                    }
                })
                .collect(),
            Err(e) => return resp.with_error_code(e.kafka_code()),
        },
        None => {
            let snap = shard.router.meta.snapshot();
            let asked = asked.unwrap_or_else(|| {
                snap.topics
                    .values()
                    .flat_map(|t| (0..t.partitions).map(|p| (t.name.clone(), p)))
                    .collect()
            });
            asked
                .into_iter()
                .map(|(t, p)| {
                    if snap.partition(&t, p).is_none() {
                        let m = format!("unknown partition {t}-{p}");
                        return (
                            (t, p),
                            ResponseError::UnknownTopicOrPartition.code(),
                            Some(m),
                        );
                    }
                    let m = format!("{t}-{p}: its only replica leads it already");
                    ((t, p), not_needed, Some(m))
                })
                .collect()
        }
    };
    let mut by_topic: Vec<ReplicaElectionResult> = Vec::new();
    for ((t, p), code, message) in results {
        if all && code == not_needed {
            continue;
        }
        let r = PartitionResult::default()
            .with_partition_id(p)
            .with_error_code(code)
            .with_error_message(message.map(s));
        match by_topic.iter_mut().find(|e| e.topic.as_str() == t) {
            Some(e) => e.partition_result.push(r),
            None => by_topic.push(
                ReplicaElectionResult::default()
                    .with_topic(topic(t))
                    .with_partition_result(vec![r]),
            ),
        }
    }
    resp.with_replica_election_results(by_topic)
}

/// ListConfigResources (KIP-1142): the resources that have configs. v0 (once
/// ListClientMetricsResources) lists client-metrics resources only: none here (no client
/// telemetry). From v1, by type (none asked: every type): topics, the brokers; groups and
/// client metrics have no configs here. Another type is INVALID_REQUEST.
fn list_config_resources(
    shard: &Rc<ShardState>,
    req: ListConfigResourcesRequest,
    v: i16,
) -> ListConfigResourcesResponse {
    use kafka_protocol::messages::list_config_resources_response::ConfigResource;
    const GROUP: i8 = 32;
    const CLIENT_METRICS: i8 = 16;
    let resp = ListConfigResourcesResponse::default();
    let types: Vec<i8> = match (v, req.resource_types.is_empty()) {
        (0, _) => vec![CLIENT_METRICS],
        (_, true) => vec![RESOURCE_TOPIC, RESOURCE_BROKER, GROUP, CLIENT_METRICS],
        _ => req.resource_types.clone(),
    };
    let known = [RESOURCE_TOPIC, RESOURCE_BROKER, GROUP, CLIENT_METRICS];
    if types.iter().any(|t| !known.contains(t)) {
        return resp.with_error_code(ResponseError::InvalidRequest.code());
    }
    let router = &shard.router;
    let mut out = Vec::new();
    if types.contains(&RESOURCE_TOPIC) {
        for name in router.meta.snapshot().topics.keys() {
            out.push(
                ConfigResource::default()
                    .with_resource_name(s(name.clone()))
                    .with_resource_type(RESOURCE_TOPIC),
            );
        }
    }
    if types.contains(&RESOURCE_BROKER) {
        let ids: Vec<i32> = match &router.cluster {
            Some(node) => node.view().image.brokers.keys().copied().collect(),
            None => vec![router.config.node_id],
        };
        for id in ids {
            out.push(
                ConfigResource::default()
                    .with_resource_name(s(id.to_string()))
                    .with_resource_type(RESOURCE_BROKER),
            );
        }
    }
    resp.with_config_resources(out)
}

/// DescribeLogDirs: the one data directory (`log.dirs`) with the size of every partition
/// this broker has open (a follower's too); its filesystem's total and free bytes from v4.
async fn describe_log_dirs(
    shard: &Rc<ShardState>,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    use kafka_protocol::messages::describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    let router = &shard.router;
    let mut sizes: BTreeMap<String, Vec<(i32, u64)>> = BTreeMap::new();
    for k in 0..router.shard_count() {
        let (tx, rx) = oneshot::channel();
        if router
            .dispatch(shard, k, ShardMsg::Sizes { reply: tx })
            .await
            .is_ok()
        {
            for ((t, p), bytes) in rx.await.unwrap_or_default() {
                sizes.entry(t).or_default().push((p, bytes));
            }
        }
    }
    // Null topics: every partition; otherwise the partitions asked that are here.
    let wanted = |t: &str, p: i32| match &req.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|w| w.topic.as_str() == t && w.partitions.contains(&p)),
    };
    let topics = sizes
        .into_iter()
        .filter_map(|(t, mut parts)| {
            parts.retain(|(p, _)| wanted(&t, *p));
            parts.sort();
            (!parts.is_empty()).then(|| {
                DescribeLogDirsTopic::default()
                    .with_name(topic(t))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, bytes)| {
                                DescribeLogDirsPartition::default()
                                    .with_partition_index(p)
                                    .with_partition_size(bytes as i64)
                            })
                            .collect(),
                    )
            })
        })
        .collect();
    let dir = &router.config.log_dir;
    let (total, usable) = filesystem_bytes(dir).unwrap_or((-1, -1));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
        .with_log_dir(s(dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable)])
}

/// The total and available bytes of the filesystem holding `dir` (statvfs).
fn filesystem_bytes(dir: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `st` a valid, writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let block = st.f_frsize as i64;
    Some((
        (st.f_blocks as i64).saturating_mul(block),
        (st.f_bavail as i64).saturating_mul(block),
    ))
}

/// A DescribeConfigs row and its source.
type SourcedEntry = (tern_tuning::ConfigEntry, i8);

/// A topic's DescribeConfigs rows: its own keys (TOPIC), the dynamic broker defaults
/// (DYNAMIC_DEFAULT_BROKER), the config file's values where they differ from the built-in
/// defaults (STATIC_BROKER), and the built-in defaults (DEFAULT).
fn topic_entries(
    config: &tern_tuning::BrokerConfig,
    snap: &crate::meta::Snapshot,
    t: &TopicMeta,
) -> Result<Vec<SourcedEntry>, (ResponseError, String)> {
    let tc = crate::config_map::topic_config(config, &snap.dynamic, &t.overrides)
        .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
    let builtin = tern_tuning::BrokerConfig::with_cores(config.cores.clone());
    let builtin = tern_tuning::TopicConfig::defaults_from(&builtin).entries();
    let dynamic = |key: &str| {
        tern_tuning::DYNAMIC_BROKER_KEYS
            .iter()
            .any(|(b, t)| *t == key && snap.dynamic.contains_key(*b))
    };
    Ok(tc
        .entries()
        .into_iter()
        .map(|mut e| {
            if e.is_default && dynamic(e.name) {
                e.is_default = false;
                return (e, SOURCE_DYNAMIC_DEFAULT_BROKER);
            }
            let from_file = e.is_default
                && builtin
                    .iter()
                    .any(|b| b.name == e.name && b.value != e.value);
            if from_file {
                e.is_default = false;
                return (e, SOURCE_STATIC_BROKER);
            }
            (e, SOURCE_TOPIC)
        })
        .collect())
}

/// The broker's DescribeConfigs rows: the dynamic defaults where set (and their keys
/// writable), every other key from the config file, read-only.
fn broker_entries(
    config: &tern_tuning::BrokerConfig,
    snap: &crate::meta::Snapshot,
) -> Vec<SourcedEntry> {
    config
        .entries()
        .into_iter()
        .map(|mut e| {
            if tern_tuning::dynamic_topic_key(e.name).is_some() {
                e.read_only = false;
                if let Some(v) = snap.dynamic.get(e.name) {
                    e.value = v.clone();
                    e.is_default = false;
                    return (e, SOURCE_DYNAMIC_DEFAULT_BROKER);
                }
            }
            (e, SOURCE_STATIC_BROKER)
        })
        .collect()
}

async fn describe_configs(
    shard: &Rc<ShardState>,
    req: DescribeConfigsRequest,
    v: i16,
) -> DescribeConfigsResponse {
    let config = &shard.router.config;
    let snap = shard.router.meta.snapshot();
    let mut results = Vec::new();
    for res in req.resources {
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let entries = match res.resource_type {
            RESOURCE_TOPIC => match snap.topics.get(res.resource_name.as_str()) {
                Some(t) => topic_entries(config, &snap, t),
                None => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{}' does not exist", res.resource_name),
                )),
            },
            RESOURCE_BROKER
                if res.resource_name.is_empty()
                    || res.resource_name.as_str() == config.node_id.to_string() =>
            {
                Ok(broker_entries(config, &snap))
            }
            RESOURCE_BROKER => Err((
                ResponseError::InvalidRequest,
                format!(
                    "broker '{}' is not this broker ({})",
                    res.resource_name, config.node_id
                ),
            )),
            other => Err((
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported"),
            )),
        };
        match entries {
            Ok(entries) => {
                let keys = res.configuration_keys.as_ref();
                // No keys (null or an empty list) means every key, as in Kafka.
                let wanted = |name: &str| {
                    keys.is_none_or(|k| k.is_empty() || k.iter().any(|k| k.as_str() == name))
                };
                let shards = if res.resource_type == RESOURCE_TOPIC && wanted(SHARDS_CONFIG) {
                    let value = partition_shards(shard, res.resource_name.as_str()).await;
                    Some(
                        DescribeConfigsResourceResult::default()
                            .with_name(s(SHARDS_CONFIG))
                            .with_value(Some(s(value)))
                            .with_read_only(true)
                            .with_config_source(SOURCE_STATIC_BROKER),
                    )
                } else if res.resource_type == RESOURCE_BROKER && wanted(BROKER_EPOCH_CONFIG) {
                    let epoch = shard
                        .router
                        .cluster
                        .as_ref()
                        .and_then(|n| n.view().broker_epoch);
                    epoch.map(|epoch| {
                        DescribeConfigsResourceResult::default()
                            .with_name(s(BROKER_EPOCH_CONFIG))
                            .with_value(Some(s(epoch.to_string())))
                            .with_read_only(true)
                            .with_config_source(SOURCE_STATIC_BROKER)
                    })
                } else {
                    None
                };
                out.configs = entries
                    .into_iter()
                    .filter(|(e, _)| wanted(e.name))
                    .map(|(e, source)| {
                        let source = if e.is_default { SOURCE_DEFAULT } else { source };
                        DescribeConfigsResourceResult::default()
                            .with_name(s(e.name))
                            .with_value(Some(s(e.value.clone())))
                            .with_read_only(e.read_only)
                            .with_config_source(if v == 0 { -1 } else { source })
                    })
                    .chain(shards)
                    .collect();
            }
            Err((e, msg)) => {
                out.error_code = e.code();
                out.error_message = Some(s(msg));
            }
        }
        results.push(out);
    }
    DescribeConfigsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards that a record set splits into its batches and a cut-short one is refused.
    #[test]
    fn split_record_sets() {
        let a = tern_engine::batch::build::filled(0, 2, 10, 0);
        let b = tern_engine::batch::build::filled(0, 1, 30, 1);
        let mut both = a.clone();
        both.extend_from_slice(&b);
        let parts = split_batches(Bytes::from(both.clone())).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[0][..], &a[..]);
        assert!(split_batches(Bytes::from(both[..both.len() - 1].to_vec())).is_none());
        assert!(split_batches(Bytes::from(vec![0u8; 5])).is_none());
        let mut negative = a.clone();
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(split_batches(Bytes::from(negative)).is_none());
    }

    /// Guards that ApiVersions advertises exactly the supported table.
    #[test]
    fn api_versions_matches_table() {
        let body = api_versions_body();
        assert_eq!(body.api_keys.len(), ALL_APIS.len());
        for k in &body.api_keys {
            let api = ApiKey::try_from(k.api_key).unwrap();
            let r = supported(api).unwrap();
            assert_eq!((k.min_version, k.max_version), (*r.start(), *r.end()));
            // Every advertised version is one the codec can decode.
            let valid = api.valid_versions();
            assert!(
                valid.min <= k.min_version && k.max_version <= valid.max,
                "{api:?}"
            );
        }
    }
}
