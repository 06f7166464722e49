//! Kafka 4.1's API surface on a single in-process broker: every served API answers its oldest
//! and newest version, an unserved version is refused as Kafka 4 refuses it, the newer
//! versions' semantics (Metadata v0 and v13, topic ids in Produce and Fetch v13+, ListOffsets'
//! special timestamps v7–v10), and AlterConfigs / IncrementalAlterConfigs with their bad
//! inputs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tern_net::client::Client;
use tern_net::Broker;
use tern_tuning::BrokerConfig;
use uuid::Uuid;

fn config(dir: &Path) -> BrokerConfig {
    let mut config = BrokerConfig::with_cores(vec![0]);
    config.listener = "127.0.0.1:0".parse().unwrap();
    config.log_dir = dir.join("data");
    config
}

/// A broker on a fresh data directory and a client of it.
fn started() -> (Broker, tempfile::TempDir, Client) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let broker = Broker::start(config(dir.path())).unwrap();
    let c = connect(&broker);
    (broker, dir, c)
}

/// Wall-clock milliseconds (for records retention must keep).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn connect(broker: &Broker) -> Client {
    Client::connect(&broker.local_addr().to_string(), Duration::from_secs(10)).unwrap()
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn st(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn create(c: &mut Client, topic: &str, partitions: i32) -> Uuid {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = c.request(ApiKey::CreateTopics, 7, &req).unwrap();
    assert_eq!(resp.topics[0].error_code, 0, "{:?}", resp.topics[0]);
    resp.topics[0].topic_id
}

/// Sends a request of `api` at `version` whose body is the type's default and decodes the
/// answer at the same version: the broker must answer (an error code is fine), not close.
fn default_round_trip<Req: Encodable + Default, Resp: Decodable>(
    c: &mut Client,
    api: ApiKey,
    version: i16,
) {
    let _: Resp = c
        .request(api, version, &Req::default())
        .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
}

/// One call of [`default_round_trip`] per served API, with its request and response types.
fn round_trip_any(c: &mut Client, api: ApiKey, v: i16) {
    macro_rules! rt {
        ($($key:ident => $req:ty, $resp:ty;)*) => {
            match api {
                $(ApiKey::$key => default_round_trip::<$req, $resp>(c, api, v),)*
                other => panic!("{other:?} is served but not in this test's table"),
            }
        };
    }
    rt! {
        Fetch => FetchRequest, FetchResponse;
        ListOffsets => ListOffsetsRequest, ListOffsetsResponse;
        Metadata => MetadataRequest, MetadataResponse;
        ApiVersions => ApiVersionsRequest, ApiVersionsResponse;
        CreateTopics => CreateTopicsRequest, CreateTopicsResponse;
        DeleteTopics => DeleteTopicsRequest, DeleteTopicsResponse;
        DeleteRecords => DeleteRecordsRequest, DeleteRecordsResponse;
        CreatePartitions => CreatePartitionsRequest, CreatePartitionsResponse;
        DescribeConfigs => DescribeConfigsRequest, DescribeConfigsResponse;
        AlterConfigs => AlterConfigsRequest, AlterConfigsResponse;
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse;
        InitProducerId => InitProducerIdRequest, InitProducerIdResponse;
        FindCoordinator => FindCoordinatorRequest, FindCoordinatorResponse;
        JoinGroup => JoinGroupRequest, JoinGroupResponse;
        SyncGroup => SyncGroupRequest, SyncGroupResponse;
        Heartbeat => HeartbeatRequest, HeartbeatResponse;
        LeaveGroup => LeaveGroupRequest, LeaveGroupResponse;
        OffsetCommit => OffsetCommitRequest, OffsetCommitResponse;
        OffsetFetch => OffsetFetchRequest, OffsetFetchResponse;
        ListGroups => ListGroupsRequest, ListGroupsResponse;
        DescribeGroups => DescribeGroupsRequest, DescribeGroupsResponse;
        DeleteGroups => DeleteGroupsRequest, DeleteGroupsResponse;
        OffsetDelete => OffsetDeleteRequest, OffsetDeleteResponse;
        DescribeCluster => DescribeClusterRequest, DescribeClusterResponse;
        DescribeQuorum => DescribeQuorumRequest, DescribeQuorumResponse;
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse;
        DescribeLogDirs => DescribeLogDirsRequest, DescribeLogDirsResponse;
        DescribeProducers => DescribeProducersRequest, DescribeProducersResponse;
        ElectLeaders => ElectLeadersRequest, ElectLeadersResponse;
        DescribeTopicPartitions => DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse;
        ConsumerGroupDescribe => ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse;
        ListConfigResources => ListConfigResourcesRequest, ListConfigResourcesResponse;
    }
}

/// A request frame with an empty body: header v1 (api, version, correlation id, client id).
fn bare_frame(api: ApiKey, version: i16, correlation_id: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(api as i16).to_be_bytes());
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Guards ApiVersions against the table and every advertised version against the handlers:
/// each served API answers its oldest and newest version (Produce with acks=1, as a default
/// Produce has acks=0 and no answer); a version past the newest closes the connection, as
/// Kafka 4 does for every API but ApiVersions, which answers UNSUPPORTED_VERSION in v0 with
/// its list.
#[test]
fn every_served_version_answers_and_others_are_refused_as_kafka_does() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let broker = Broker::start(config(dir.path())).unwrap();
    let addr = broker.local_addr().to_string();
    let mut c = connect(&broker);
    let resp: ApiVersionsResponse = c
        .request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .unwrap();
    assert_eq!(resp.error_code, 0);
    let served: Vec<(ApiKey, i16, i16)> = resp
        .api_keys
        .iter()
        .map(|k| {
            (
                ApiKey::try_from(k.api_key).unwrap(),
                k.min_version,
                k.max_version,
            )
        })
        .collect();
    for (api, min, max) in &served {
        assert_eq!(tern_net::api::supported(*api), Some(*min..=*max), "{api:?}");
    }
    for &(api, min, max) in &served {
        for v in [min, max] {
            let mut c = connect(&broker);
            if api == ApiKey::Produce {
                let req = ProduceRequest::default().with_acks(1).with_timeout_ms(1000);
                let _: ProduceResponse = c.request(api, v, &req).unwrap();
            } else {
                round_trip_any(&mut c, api, v);
            }
        }
        // One past the newest: ApiVersions answers with its list, others close.
        let mut c = Client::connect(&addr, Duration::from_secs(10)).unwrap();
        c.write_raw(&bare_frame(api, max + 1, 77)).unwrap();
        let answer = c.receive();
        if api == ApiKey::ApiVersions {
            let mut body = answer.unwrap();
            let header = ResponseHeader::decode(&mut body, 0).unwrap();
            assert_eq!(header.correlation_id, 77);
            let r = ApiVersionsResponse::decode(&mut body, 0).unwrap();
            assert_eq!(r.error_code, 35, "UNSUPPORTED_VERSION");
            assert_eq!(r.api_keys.len(), served.len());
        } else {
            assert!(answer.is_err(), "{api:?} v{} was answered", max + 1);
        }
    }
    broker.shutdown();
}

/// Guards Metadata v0 (aiokafka and kafka-python bootstrap with it: an empty list means every
/// topic) and v13 (the top-level error code).
#[test]
fn metadata_v0_lists_every_topic_and_v13_answers() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut config = config(dir.path());
    // Metadata v0–v3 ask for auto-creation by their version: off here, so that an unknown
    // topic stays unknown.
    config.auto_create_topics = false;
    let broker = Broker::start(config).unwrap();
    let mut c = connect(&broker);
    create(&mut c, "a", 2);
    create(&mut c, "b", 1);
    let all = MetadataRequest::default().with_topics(Some(vec![]));
    let resp: MetadataResponse = c.request(ApiKey::Metadata, 0, &all).unwrap();
    let mut names: Vec<String> = resp
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(resp.brokers.len(), 1);
    let one = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name("a"))),
        MetadataRequestTopic::default().with_name(Some(name("missing"))),
    ]));
    let resp: MetadataResponse = c.request(ApiKey::Metadata, 0, &one).unwrap();
    assert_eq!(resp.topics[0].partitions.len(), 2);
    assert_eq!(resp.topics[1].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let resp: MetadataResponse = c.request(ApiKey::Metadata, 13, &one).unwrap();
    assert_eq!(resp.error_code, 0);
    assert_ne!(resp.topics[0].topic_id, Uuid::nil());
    assert_eq!(resp.topics[1].error_code, 3);
    broker.shutdown();
}

fn produce_v13(c: &mut Client, id: Uuid, partition: i32, batch: &[u8]) -> (i16, i64, Uuid) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_topic_id(id)
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::copy_from_slice(batch)))])]);
    let resp: ProduceResponse = c.request(ApiKey::Produce, 13, &req).unwrap();
    let t = &resp.responses[0];
    let p = &t.partition_responses[0];
    (p.error_code, p.base_offset, t.topic_id)
}

fn fetch_by_id(c: &mut Client, v: i16, id: Uuid, offset: i64) -> (i16, i64, usize, Uuid) {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = c.request(ApiKey::Fetch, v, &req).unwrap();
    let t = &resp.responses[0];
    let p = &t.partitions[0];
    let len = p.records.as_ref().map_or(0, |r| r.len());
    (p.error_code, p.high_watermark, len, t.topic_id)
}

/// Guards topic ids in Produce v13 and Fetch v13–v18: a topic named by its id is written and
/// read, the answer names it by id; an unknown id is UNKNOWN_TOPIC_ID and writes nothing.
#[test]
fn produce_and_fetch_by_topic_id() {
    let (broker, _dir, mut c) = started();
    let id = create(&mut c, "ids", 1);
    let batch = tern_engine::batch::build::filled(1_700_000_000_000, 4, 30, 1);
    assert_eq!(produce_v13(&mut c, id, 0, &batch), (0, 0, id));
    assert_eq!(produce_v13(&mut c, id, 0, &batch), (0, 4, id));
    let stranger = Uuid::from_u128(42);
    assert_eq!(
        produce_v13(&mut c, stranger, 0, &batch).0,
        100,
        "UNKNOWN_TOPIC_ID"
    );
    assert_eq!(produce_v13(&mut c, id, 7, &batch).0, 3, "no partition 7");
    for v in 13..=18 {
        assert_eq!(
            fetch_by_id(&mut c, v, id, 0),
            (0, 8, 2 * batch.len(), id),
            "Fetch v{v}"
        );
        let (err, _, len, answered) = fetch_by_id(&mut c, v, stranger, 0);
        assert_eq!((err, len, answered), (100, 0, stranger), "Fetch v{v}");
    }
    // Older versions name the same topic by name.
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name("ids"))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = c.request(ApiKey::Fetch, 12, &req).unwrap();
    assert_eq!(resp.responses[0].topic.as_str(), "ids");
    assert_eq!(resp.responses[0].partitions[0].high_watermark, 8);
    broker.shutdown();
}

fn list_offset(c: &mut Client, v: i16, topic: &str, timestamp: i64) -> (i16, i64, i64) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let resp: ListOffsetsResponse = c.request(ApiKey::ListOffsets, v, &req).unwrap();
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset, p.timestamp)
}

/// Guards ListOffsets' special timestamps: max timestamp (v7+) finds the first record with
/// the greatest timestamp even when later records are older; earliest local (v8+) is the log
/// start; latest tiered (v9+) is -1 (no tiered storage); each refused (INVALID_REQUEST)
/// below the version that brought it.
#[test]
fn list_offsets_special_timestamps_by_version() {
    let (broker, _dir, mut c) = started();
    create(&mut c, "times", 1);
    // Three batches of 2 records: timestamps 1000.., 9000.., 5000.. (the newest is in the
    // middle).
    for (i, base_ts) in [1_000, 9_000, 5_000].into_iter().enumerate() {
        let batch = tern_engine::batch::build::filled(base_ts, 2, 10, i as u8);
        assert_eq!(produce_to(&mut c, "times", 0, batch), 0);
    }
    let (err, offset, ts) = list_offset(&mut c, 10, "times", -3);
    assert_eq!(err, 0);
    assert!((2..4).contains(&offset), "max timestamp at {offset}");
    assert!(ts >= 9_000, "{ts}");
    assert_eq!(list_offset(&mut c, 7, "times", -3).1, offset);
    assert_eq!(list_offset(&mut c, 8, "times", -4), (0, 0, -1));
    assert_eq!(list_offset(&mut c, 9, "times", -5), (0, -1, -1));
    assert_eq!(list_offset(&mut c, 10, "times", -1).1, 6);
    assert_eq!(list_offset(&mut c, 10, "times", -2).1, 0);
    // Below the version that brought each: refused.
    assert_eq!(list_offset(&mut c, 6, "times", -3).0, 42);
    assert_eq!(list_offset(&mut c, 7, "times", -4).0, 42);
    assert_eq!(list_offset(&mut c, 8, "times", -5).0, 42);
    assert_eq!(list_offset(&mut c, 10, "times", -6).0, 42);
    broker.shutdown();
}

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

fn incremental(
    c: &mut Client,
    resource_type: i8,
    resource: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> (i16, String) {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let req = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(st(resource))
            .with_configs(
                ops.iter()
                    .map(|(k, op, v)| {
                        AlterableConfig::default()
                            .with_name(st(k))
                            .with_config_operation(*op)
                            .with_value(v.map(st))
                    })
                    .collect(),
            )]);
    let resp: IncrementalAlterConfigsResponse =
        c.request(ApiKey::IncrementalAlterConfigs, 1, &req).unwrap();
    let r = &resp.responses[0];
    assert_eq!(r.resource_name.as_str(), resource);
    let message = r
        .error_message
        .as_ref()
        .map_or(String::new(), |m| m.to_string());
    (r.error_code, message)
}

fn alter(c: &mut Client, topic: &str, configs: &[(&str, &str)]) -> (i16, String) {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let req = AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(TOPIC)
        .with_resource_name(st(topic))
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    AlterableConfig::default()
                        .with_name(st(k))
                        .with_value(Some(st(v)))
                })
                .collect(),
        )]);
    let resp: AlterConfigsResponse = c.request(ApiKey::AlterConfigs, 2, &req).unwrap();
    let r = &resp.responses[0];
    let message = r
        .error_message
        .as_ref()
        .map_or(String::new(), |m| m.to_string());
    (r.error_code, message)
}

/// The topic's configs as DescribeConfigs shows them: key → (value, source).
fn describe(c: &mut Client, topic: &str) -> std::collections::BTreeMap<String, (String, i8)> {
    describe_resource(c, TOPIC, topic)
        .into_iter()
        .map(|(k, (v, source, _))| (k, (v, source)))
        .collect()
}

/// A resource's configs as DescribeConfigs v4 shows them: key → (value, source, read-only).
fn describe_resource(
    c: &mut Client,
    resource_type: i8,
    name: &str,
) -> std::collections::BTreeMap<String, (String, i8, bool)> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(st(name))]);
    let resp: DescribeConfigsResponse = c.request(ApiKey::DescribeConfigs, 4, &req).unwrap();
    assert_eq!(resp.results[0].error_code, 0);
    resp.results[0]
        .configs
        .iter()
        .map(|e| {
            let v = e.value.as_ref().map_or(String::new(), |v| v.to_string());
            (e.name.to_string(), (v, e.config_source, e.read_only))
        })
        .collect()
}

fn segment_files(dir: &Path, topic: &str) -> usize {
    std::fs::read_dir(dir.join("data").join(format!("{topic}-0")))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count()
}

/// Guards AlterConfigs and IncrementalAlterConfigs on topics: SET, DELETE, APPEND and
/// SUBTRACT change the overrides DescribeConfigs shows (source TOPIC, or DEFAULT again);
/// validate_only changes nothing; the change is applied to the open partitions at once (a
/// smaller segment.bytes rolls segments under the next appends, a smaller max.message.bytes
/// refuses a batch it allowed) and persisted (the same after a restart). AlterConfigs replaces
/// all overrides.
#[test]
fn alter_configs_apply_live_and_persist() {
    let (broker, dir, mut c) = started();
    create(&mut c, "live", 1);
    let ok = (0, String::new());
    assert_eq!(
        incremental(
            &mut c,
            TOPIC,
            "live",
            &[("retention.ms", 0, Some("3600000"))],
            true
        ),
        ok
    );
    assert_eq!(
        describe(&mut c, "live")["retention.ms"].1,
        5,
        "validate_only"
    );
    let set = [
        ("retention.ms", 0, Some("3600000")),
        ("segment.bytes", 0, Some("16384")),
        ("cleanup.policy", 3, Some("compact")),
        ("cleanup.policy", 2, Some("delete")),
    ];
    // A key twice in one resource: INVALID_REQUEST.
    assert_eq!(incremental(&mut c, TOPIC, "live", &set, false).0, 42);
    assert_eq!(incremental(&mut c, TOPIC, "live", &set[..3], false), ok);
    let d = describe(&mut c, "live");
    assert_eq!(d["retention.ms"], ("3600000".into(), 1));
    assert_eq!(d["segment.bytes"], ("16384".into(), 1));
    assert_eq!(
        d["cleanup.policy"],
        ("delete".into(), 1),
        "nothing to subtract"
    );
    assert_eq!(
        incremental(
            &mut c,
            TOPIC,
            "live",
            &[("cleanup.policy", 2, Some("delete"))],
            false
        ),
        ok
    );
    assert_eq!(
        describe(&mut c, "live")["cleanup.policy"],
        ("delete".into(), 1),
        "appended once"
    );

    // Live: 1 KiB batches into 16 KiB segments roll several times (stamped now: retention
    // is an hour).
    let now_ms = now_ms();
    let before = segment_files(dir.path(), "live");
    for i in 0..40 {
        let batch = tern_engine::batch::build::filled(now_ms, 1, 1000, i);
        assert_eq!(produce_to(&mut c, "live", 0, batch), 0);
    }
    assert!(
        segment_files(dir.path(), "live") > before + 1,
        "segments rolled"
    );
    // retention.bytes lowered: the next retention pass (every shard tick) removes the oldest
    // segments.
    assert_eq!(
        incremental(
            &mut c,
            TOPIC,
            "live",
            &[("retention.bytes", 0, Some("20000"))],
            false
        ),
        ok
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while list_offset(&mut c, 10, "live", -2).1 == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not apply"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // max.message.bytes below the batch size refuses it (MESSAGE_TOO_LARGE) at once.
    assert_eq!(
        incremental(
            &mut c,
            TOPIC,
            "live",
            &[("max.message.bytes", 0, Some("100"))],
            false
        ),
        ok
    );
    let batch = tern_engine::batch::build::filled(now_ms, 1, 1000, 9);
    assert_eq!(produce_to(&mut c, "live", 0, batch.clone()), 10);
    // DELETE: back to the default.
    assert_eq!(
        incremental(
            &mut c,
            TOPIC,
            "live",
            &[("max.message.bytes", 1, None)],
            false
        ),
        ok
    );
    assert_eq!(describe(&mut c, "live")["max.message.bytes"].1, 5);
    assert_eq!(produce_to(&mut c, "live", 0, batch), 0);
    // flush: to interval and back to always (what was written is synced on the way back).
    for flush in ["interval", "always"] {
        assert_eq!(
            alter(
                &mut c,
                "live",
                &[("flush", flush), ("retention.ms", "3600000")]
            ),
            ok
        );
    }
    let d = describe(&mut c, "live");
    assert_eq!(d["flush"], ("always".into(), 1));
    assert_eq!(
        d["segment.bytes"].1, 5,
        "AlterConfigs replaced the overrides"
    );
    broker.shutdown();

    let broker = Broker::start(config(dir.path())).unwrap();
    let mut c = connect(&broker);
    let d = describe(&mut c, "live");
    assert_eq!(d["retention.ms"], ("3600000".into(), 1), "persisted");
    assert_eq!(d["flush"], ("always".into(), 1));
    assert_eq!(d["segment.bytes"].1, 5);
    assert_eq!(list_offset(&mut c, 10, "live", -1).1, 41);
    broker.shutdown();
}

/// Guards the bad inputs: each resource gets Kafka's error and a message naming the cause,
/// and changes nothing.
#[test]
fn alter_configs_refuse_bad_input_and_change_nothing() {
    let (broker, _dir, mut c) = started();
    create(&mut c, "bad", 1);
    assert_eq!(
        incremental(
            &mut c,
            TOPIC,
            "bad",
            &[("retention.ms", 0, Some("7200000"))],
            false
        )
        .0,
        0
    );
    let before = describe(&mut c, "bad");
    // (resource type, resource, operations, the error expected, a word its message names)
    type Case<'a> = (
        i8,
        &'a str,
        &'a [(&'a str, i8, Option<&'a str>)],
        i16,
        &'a str,
    );
    let cases: &[Case] = &[
        // Wrong type, out of range, unknown key: INVALID_CONFIG.
        (
            TOPIC,
            "bad",
            &[("retention.ms", 0, Some("soon"))],
            40,
            "retention.ms",
        ),
        (
            TOPIC,
            "bad",
            &[("segment.bytes", 0, Some("12"))],
            40,
            "segment.bytes",
        ),
        (
            TOPIC,
            "bad",
            &[("retention.mss", 0, Some("1"))],
            40,
            "retention.mss",
        ),
        (
            TOPIC,
            "bad",
            &[("flush", 0, Some("sometimes"))],
            40,
            "flush",
        ),
        (
            TOPIC,
            "bad",
            &[("cleanup.policy", 2, Some("compact"))],
            40,
            "cleanup.policy",
        ),
        (
            TOPIC,
            "bad",
            &[("cleanup.policy", 3, Some("delete"))],
            40,
            "cleanup.policy",
        ),
        // APPEND on a key that is not a list: INVALID_CONFIG.
        (
            TOPIC,
            "bad",
            &[("retention.ms", 2, Some("5"))],
            40,
            "not a list",
        ),
        // A null value to SET, an unknown operation: INVALID_REQUEST.
        (TOPIC, "bad", &[("retention.ms", 0, None)], 42, "null"),
        (
            TOPIC,
            "bad",
            &[("retention.ms", 9, Some("5"))],
            42,
            "operation 9",
        ),
        // The first bad key refuses the whole resource, good keys before it included.
        (
            TOPIC,
            "bad",
            &[
                ("retention.bytes", 0, Some("100000")),
                ("segment.ms", 0, Some("-4")),
            ],
            40,
            "segment.ms",
        ),
        // No such topic.
        (TOPIC, "nope", &[("retention.ms", 0, Some("1"))], 3, "nope"),
        // Broker keys are read at startup: read-only; an unknown one is INVALID_CONFIG.
        (
            BROKER,
            "",
            &[("log.dirs", 0, Some("/elsewhere"))],
            42,
            "restart",
        ),
        (
            BROKER,
            "",
            &[("log.retention.ms", 0, Some("soon"))],
            40,
            "log.retention.ms",
        ),
        (
            BROKER,
            "",
            &[("log.retention.ms", 2, Some("5"))],
            40,
            "not a list",
        ),
        (
            BROKER,
            "0",
            &[("no.such.key", 0, Some("1"))],
            40,
            "no.such.key",
        ),
        (
            BROKER,
            "7",
            &[("log.retention.ms", 0, Some("1"))],
            42,
            "not this broker",
        ),
        // Other resource types.
        (
            8,
            "1",
            &[("kafka.server", 0, Some("DEBUG"))],
            42,
            "resource type 8",
        ),
    ];
    for (kind, resource, ops, code, needle) in cases {
        let (got, message) = incremental(&mut c, *kind, resource, ops, false);
        assert_eq!(got, *code, "{ops:?}: {message}");
        assert!(
            message.contains(needle),
            "{ops:?}: {message:?} lacks {needle:?}"
        );
        assert_eq!(describe(&mut c, "bad"), before, "{ops:?} changed something");
        let dynamic = describe_broker(&mut c)
            .into_values()
            .filter(|(_, src, _)| *src == 3);
        assert_eq!(dynamic.count(), 0, "{ops:?} changed a broker default");
    }
    // AlterConfigs: a bad value refuses and keeps the overrides it would have replaced.
    let (code, message) = alter(&mut c, "bad", &[("retention.bytes", "-7")]);
    assert_eq!(code, 40, "{message}");
    assert_eq!(describe(&mut c, "bad"), before);
    broker.shutdown();
}

fn produce_to(c: &mut Client, topic: &str, partition: i32, batch: Vec<u8>) -> i16 {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(batch)))])]);
    let resp: ProduceResponse = c.request(ApiKey::Produce, 9, &req).unwrap();
    resp.responses[0].partition_responses[0].error_code
}

/// Guards DescribeLogDirs (each partition's bytes on disk, the filesystem's sizes from v4,
/// only the asked partitions) and DescribeProducers (an idempotent producer's id, epoch and
/// last sequence; unknown partitions refused per partition).
#[test]
fn describe_log_dirs_and_producers() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    let (broker, _dir, mut c) = started();
    create(&mut c, "sizes", 2);
    let plain = tern_engine::batch::build::filled(1_700_000_000_000, 3, 100, 1);
    let idem = tern_engine::batch::build::with_producer(
        tern_engine::batch::build::filled(1_700_000_000_000, 4, 100, 2),
        7_000,
        3,
        0,
    );
    let (plain_len, idem_len) = (plain.len() as i64, idem.len() as i64);
    assert_eq!(produce_to(&mut c, "sizes", 0, plain), 0);
    assert_eq!(produce_to(&mut c, "sizes", 1, idem), 0);

    // Null topics: every partition.
    let all = DescribeLogDirsRequest::default().with_topics(None);
    let resp: DescribeLogDirsResponse = c.request(ApiKey::DescribeLogDirs, 4, &all).unwrap();
    assert_eq!(resp.results.len(), 1);
    let r = &resp.results[0];
    assert_eq!(r.error_code, 0);
    assert!(r.total_bytes > 0 && r.usable_bytes > 0 && r.usable_bytes <= r.total_bytes);
    let t = r
        .topics
        .iter()
        .find(|t| t.name.as_str() == "sizes")
        .unwrap_or_else(|| panic!("{resp:?}"));
    let sizes: Vec<(i32, i64)> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.partition_size))
        .collect();
    assert_eq!(sizes, [(0, plain_len), (1, idem_len)]);
    let only =
        DescribeLogDirsRequest::default()
            .with_topics(Some(vec![DescribableLogDirTopic::default()
                .with_topic(name("sizes"))
                .with_partitions(vec![1, 5])]));
    let resp: DescribeLogDirsResponse = c.request(ApiKey::DescribeLogDirs, 1, &only).unwrap();
    let topics = &resp.results[0].topics;
    assert_eq!(topics.len(), 1);
    let none = DescribeLogDirsRequest::default().with_topics(Some(vec![]));
    let resp2: DescribeLogDirsResponse = c.request(ApiKey::DescribeLogDirs, 2, &none).unwrap();
    assert!(
        resp2.results[0].topics.is_empty(),
        "an empty list asks for none"
    );
    assert_eq!(topics[0].partitions.len(), 1, "partition 5 does not exist");
    assert_eq!(topics[0].partitions[0].partition_index, 1);

    let req = DescribeProducersRequest::default().with_topics(vec![
        TopicRequest::default()
            .with_name(name("sizes"))
            .with_partition_indexes(vec![0, 1, 9]),
        TopicRequest::default()
            .with_name(name("nope"))
            .with_partition_indexes(vec![0]),
    ]);
    let resp: DescribeProducersResponse = c.request(ApiKey::DescribeProducers, 0, &req).unwrap();
    let parts = &resp.topics[0].partitions;
    assert_eq!(parts[0].error_code, 0);
    assert!(
        parts[0].active_producers.is_empty(),
        "no idempotent batch in 0"
    );
    assert_eq!(parts[1].error_code, 0);
    let p = &parts[1].active_producers;
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].producer_id.0, p[0].producer_epoch, p[0].last_sequence),
        (7_000, 3, 3)
    );
    assert_eq!(
        (p[0].coordinator_epoch, p[0].current_txn_start_offset),
        (-1, -1)
    );
    assert_eq!(parts[2].error_code, 3, "no partition 9");
    assert_eq!(resp.topics[1].partitions[0].error_code, 3, "no topic");
    broker.shutdown();
}

/// Guards DescribeTopicPartitions: every topic by name when none is asked, at most
/// `response_partition_limit` partitions with a cursor to go on from that walks all of them
/// once; an unknown topic is refused per topic; ConsumerGroupDescribe answers
/// GROUP_ID_NOT_FOUND (classic groups only).
#[test]
fn describe_topic_partitions_pages_with_a_cursor() {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    let (broker, _dir, mut c) = started();
    create(&mut c, "pa", 3);
    create(&mut c, "pb", 4);
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let req = DescribeTopicPartitionsRequest::default()
            .with_response_partition_limit(2)
            .with_cursor(cursor.take());
        let resp: DescribeTopicPartitionsResponse =
            c.request(ApiKey::DescribeTopicPartitions, 0, &req).unwrap();
        let n: usize = resp.topics.iter().map(|t| t.partitions.len()).sum();
        assert!(n <= 2, "{n} partitions over the limit");
        for t in &resp.topics {
            assert_eq!(t.error_code, 0);
            assert_ne!(t.topic_id, Uuid::nil());
            for p in &t.partitions {
                assert_eq!(p.leader_id.0, 0);
                assert_eq!(p.eligible_leader_replicas, None);
                seen.push((t.name.as_ref().unwrap().to_string(), p.partition_index));
            }
        }
        match resp.next_cursor {
            Some(next) => {
                cursor = Some(
                    Cursor::default()
                        .with_topic_name(next.topic_name)
                        .with_partition_index(next.partition_index),
                )
            }
            None => break,
        }
    }
    let want: Vec<(String, i32)> = (0..3)
        .map(|p| ("pa".to_string(), p))
        .chain((0..4).map(|p| ("pb".to_string(), p)))
        .collect();
    assert_eq!(seen, want);
    let req = DescribeTopicPartitionsRequest::default().with_topics(vec![
        TopicRequest::default().with_name(name("pb")),
        TopicRequest::default().with_name(name("zz-missing")),
    ]);
    let resp: DescribeTopicPartitionsResponse =
        c.request(ApiKey::DescribeTopicPartitions, 0, &req).unwrap();
    assert_eq!(resp.topics.len(), 2);
    assert_eq!(resp.topics[0].partitions.len(), 4);
    assert_eq!(resp.topics[1].error_code, 3);
    assert_eq!(resp.next_cursor, None);

    let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(st("g1"))]);
    let resp: ConsumerGroupDescribeResponse =
        c.request(ApiKey::ConsumerGroupDescribe, 1, &req).unwrap();
    assert_eq!(resp.groups[0].error_code, 69, "GROUP_ID_NOT_FOUND");
    assert!(resp.groups[0]
        .error_message
        .as_ref()
        .unwrap()
        .contains("classic"));
    broker.shutdown();
}

/// Guards ElectLeaders on a single node: every partition is led by its only replica
/// (ELECTION_NOT_NEEDED), unknown ones are named, null asks every partition and answers only
/// those that needed an election (none), an unknown election type is INVALID_REQUEST.
#[test]
fn elect_leaders_on_a_single_node() {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let (broker, _dir, mut c) = started();
    create(&mut c, "el", 2);
    let asked = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(name("el"))
            .with_partitions(vec![0, 1, 7])]));
    for v in [0, 2] {
        let resp: ElectLeadersResponse = c.request(ApiKey::ElectLeaders, v, &asked).unwrap();
        assert_eq!(resp.error_code, 0);
        let codes: Vec<i16> = resp.replica_election_results[0]
            .partition_result
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(codes, [84, 84, 3], "v{v}");
    }
    let all = ElectLeadersRequest::default()
        .with_election_type(1)
        .with_topic_partitions(None);
    let resp: ElectLeadersResponse = c.request(ApiKey::ElectLeaders, 2, &all).unwrap();
    assert_eq!(resp.error_code, 0);
    assert!(resp.replica_election_results.is_empty(), "{resp:?}");
    let bad = ElectLeadersRequest::default()
        .with_election_type(5)
        .with_topic_partitions(None);
    let resp: ElectLeadersResponse = c.request(ApiKey::ElectLeaders, 2, &bad).unwrap();
    assert_eq!(resp.error_code, 42);
    broker.shutdown();
}

/// The broker's configs as DescribeConfigs shows them: key → (value, source, read-only).
fn describe_broker(c: &mut Client) -> std::collections::BTreeMap<String, (String, i8, bool)> {
    describe_resource(c, BROKER, "")
}

/// Guards the dynamic broker defaults (AlterConfigs of the broker resource): a topic that
/// does not set a key takes the new default at once (source DYNAMIC_DEFAULT_BROKER, its open
/// partitions reconfigured: a smaller log.segment.bytes rolls segments), one that sets it
/// keeps its own; the broker shows the dynamic value and which keys are writable; DELETE
/// goes back to the config file's value; the defaults are persisted across a restart;
/// validate_only changes nothing.
#[test]
fn broker_dynamic_defaults_apply_live_and_persist() {
    let (broker, dir, mut c) = started();
    create(&mut c, "plain", 1);
    create(&mut c, "own", 1);
    let ok = (0, String::new());
    assert_eq!(
        incremental(
            &mut c,
            TOPIC,
            "own",
            &[("retention.ms", 0, Some("1000000"))],
            false
        ),
        ok
    );
    let set = [
        ("log.retention.ms", 0, Some("3600000")),
        ("log.segment.bytes", 0, Some("16384")),
    ];
    assert_eq!(incremental(&mut c, BROKER, "", &set, true), ok);
    assert_eq!(
        describe(&mut c, "plain")["retention.ms"].1,
        5,
        "validate_only"
    );
    assert_eq!(incremental(&mut c, BROKER, "", &set, false), ok);
    let plain = describe(&mut c, "plain");
    assert_eq!(plain["retention.ms"], ("3600000".into(), 3));
    assert_eq!(plain["segment.bytes"], ("16384".into(), 3));
    let own = describe(&mut c, "own");
    assert_eq!(
        own["retention.ms"],
        ("1000000".into(), 1),
        "the topic's own value stays"
    );
    assert_eq!(own["segment.bytes"], ("16384".into(), 3));
    let b = describe_broker(&mut c);
    assert_eq!(b["log.retention.ms"], ("3600000".into(), 3, false));
    assert!(!b["message.max.bytes"].2, "a dynamic key is writable");
    assert!(b["log.dirs"].2, "log.dirs is read-only");

    let now_ms = now_ms();
    let before = segment_files(dir.path(), "plain");
    for i in 0..40 {
        let batch = tern_engine::batch::build::filled(now_ms, 1, 1000, i);
        assert_eq!(produce_to(&mut c, "plain", 0, batch), 0);
    }
    assert!(
        segment_files(dir.path(), "plain") > before + 1,
        "segments rolled"
    );

    // By this broker's id (a single node: the same defaults); DELETE goes back to the file.
    let delete = [("log.segment.bytes", 1, None)];
    assert_eq!(incremental(&mut c, BROKER, "0", &delete, false), ok);
    assert_eq!(describe(&mut c, "plain")["segment.bytes"].1, 5);
    broker.shutdown();

    let broker = Broker::start(config(dir.path())).unwrap();
    let mut c = connect(&broker);
    assert_eq!(
        describe(&mut c, "plain")["retention.ms"],
        ("3600000".into(), 3)
    );
    assert_eq!(describe_broker(&mut c)["log.retention.ms"].1, 3);
    broker.shutdown();
}

/// Guards DescribeGroups v6 (KIP-1043): a group that does not exist is GROUP_ID_NOT_FOUND with
/// a message naming it, where v5 describes it as Dead without an error.
#[test]
fn describe_groups_v6_names_a_missing_group() {
    let (broker, _dir, mut c) = started();
    let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(st("nobody"))]);
    let old: DescribeGroupsResponse = c.request(ApiKey::DescribeGroups, 5, &req).unwrap();
    assert_eq!(old.groups[0].error_code, 0);
    assert_eq!(old.groups[0].group_state.as_str(), "Dead");
    let new: DescribeGroupsResponse = c.request(ApiKey::DescribeGroups, 6, &req).unwrap();
    assert_eq!(new.groups[0].error_code, 69, "GROUP_ID_NOT_FOUND");
    let message = new.groups[0].error_message.as_ref().unwrap();
    assert!(message.contains("nobody"), "{message}");
    broker.shutdown();
}

/// Guards ListConfigResources: v1 lists topics and brokers (every type when none is asked,
/// or the asked ones), v0 lists client-metrics resources (none), an unknown type is
/// INVALID_REQUEST.
#[test]
fn list_config_resources_by_type() {
    let (broker, _dir, mut c) = started();
    create(&mut c, "cr", 1);
    let list = |c: &mut Client, v: i16, types: Vec<i8>| {
        let req = ListConfigResourcesRequest::default().with_resource_types(types);
        let resp: ListConfigResourcesResponse =
            c.request(ApiKey::ListConfigResources, v, &req).unwrap();
        let found: Vec<(String, i8)> = resp
            .config_resources
            .iter()
            .map(|r| (r.resource_name.to_string(), r.resource_type))
            .collect();
        (resp.error_code, found)
    };
    assert_eq!(
        list(&mut c, 1, vec![]),
        (0, vec![("cr".into(), TOPIC), ("0".into(), BROKER)])
    );
    assert_eq!(
        list(&mut c, 1, vec![BROKER]),
        (0, vec![("0".into(), BROKER)])
    );
    assert_eq!(list(&mut c, 1, vec![32]), (0, vec![]));
    assert_eq!(list(&mut c, 0, vec![]), (0, vec![]));
    assert_eq!(list(&mut c, 1, vec![99]).0, 42);
    broker.shutdown();
}
