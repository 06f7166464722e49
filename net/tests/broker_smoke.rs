//! The broker started in-process on a free port, driven by the blocking client: the basic
//! produce → fetch round trip and the bad-input cases of the wire layer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use tern_net::client::Client;
use tern_net::Broker;
use tern_tuning::BrokerConfig;

fn start(cores: Vec<usize>) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut config = BrokerConfig::with_cores(cores);
    config.listener = "127.0.0.1:0".parse().unwrap();
    config.log_dir = dir.path().join("data");
    (Broker::start(config).unwrap(), dir)
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn produce(c: &mut Client, topic: &str, partition: i32, batch: &[u8]) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::copy_from_slice(batch)))])]);
    let v = c.version(ApiKey::Produce, 3, 9).unwrap();
    let resp: ProduceResponse = c.request(ApiKey::Produce, v, &req).unwrap();
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch(
    c: &mut Client,
    topic: &str,
    partition: i32,
    offset: i64,
    wait_ms: i32,
) -> (i16, i64, Bytes) {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let v = c.version(ApiKey::Fetch, 4, 12).unwrap();
    let resp: FetchResponse = c.request(ApiKey::Fetch, v, &req).unwrap();
    let p = &resp.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    )
}

/// Guards the produce → fetch round trip across versions, auto-creation and ListOffsets.
#[test]
fn produce_fetch_round_trip() {
    let (broker, _dir) = start(vec![0]);
    let addr = broker.local_addr().to_string();
    let mut c = Client::connect(&addr, Duration::from_secs(10)).unwrap();
    let md = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("orders")))
        ]))
        .with_allow_auto_topic_creation(true);
    let v = c.version(ApiKey::Metadata, 1, 12).unwrap();
    let resp: MetadataResponse = c.request(ApiKey::Metadata, v, &md).unwrap();
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].partitions.len(), 1);
    let batch = tern_engine::batch::build::filled(1_700_000_000_000, 3, 20, 1);
    assert_eq!(produce(&mut c, "orders", 0, &batch), (0, 0));
    assert_eq!(produce(&mut c, "orders", 0, &batch), (0, 3));
    let (err, hw, records) = fetch(&mut c, "orders", 0, 0, 100);
    assert_eq!((err, hw), (0, 6));
    assert_eq!(records.len(), 2 * batch.len());
    assert_eq!(&records[8..batch.len()], &batch[8..]);
    // Out of range, unknown topic, corrupt batch.
    assert_eq!(fetch(&mut c, "orders", 0, 99, 0).0, 1);
    assert_eq!(produce(&mut c, "nope", 0, &batch).0, 3);
    let mut bad = batch.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(produce(&mut c, "orders", 0, &bad).0, 2);
    let lo = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("orders"))
            .with_partitions(vec![
                ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1),
                ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-2),
                ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(1_700_000_000_001),
            ])]);
    let v = c.version(ApiKey::ListOffsets, 1, 6).unwrap();
    let resp: ListOffsetsResponse = c.request(ApiKey::ListOffsets, v, &lo).unwrap();
    let offsets: Vec<i64> = resp.topics[0].partitions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![6, 0, 1]);
    broker.shutdown();
}

/// Guards bad frames: each closes only its own connection and the broker keeps serving.
#[test]
fn bad_frames_close_the_connection_only() {
    let (broker, _dir) = start(vec![0]);
    let addr = broker.local_addr().to_string();
    let cases: Vec<Vec<u8>> = vec![
        (-5i32).to_be_bytes().to_vec(),
        (200_000_000i32).to_be_bytes().to_vec(),
        [&8i32.to_be_bytes()[..], &[0x7f, 0x7f, 0, 0, 0, 0, 0, 1]].concat(),
        [&8i32.to_be_bytes()[..], &[0, 0, 0x7f, 0, 0, 0, 0, 1]].concat(),
        [
            &10i32.to_be_bytes()[..],
            &[0, 3, 0, 9, 0, 0, 0, 1, 0xff, 0xff],
        ]
        .concat(),
    ];
    for bytes in cases {
        let mut c = Client::connect(&addr, Duration::from_secs(10)).unwrap();
        c.write_raw(&bytes).unwrap();
        assert!(c.receive().is_err(), "{bytes:?} was answered");
        let mut fresh = Client::connect(&addr, Duration::from_secs(10)).unwrap();
        let batch = tern_engine::batch::build::filled(0, 1, 5, 0);
        let md = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("t")))
            ]))
            .with_allow_auto_topic_creation(true);
        let _: MetadataResponse = fresh.request(ApiKey::Metadata, 9, &md).unwrap();
        assert_eq!(produce(&mut fresh, "t", 0, &batch).0, 0);
    }
    broker.shutdown();
}

/// Guards the frame reader and the response writer: many requests in one write are each
/// answered, in order; a frame that arrives in pieces is answered once it is whole.
#[test]
fn pipelined_and_split_frames_are_answered_in_order() {
    let (broker, _dir) = start(vec![0]);
    let addr = broker.local_addr().to_string();
    let mut c = Client::connect(&addr, Duration::from_secs(10)).unwrap();
    let md = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("pipe")))
        ]))
        .with_allow_auto_topic_creation(true);
    let _: MetadataResponse = c.request(ApiKey::Metadata, 9, &md).unwrap();
    let batch = tern_engine::batch::build::filled(1_700_000_000_000, 2, 30, 1);
    assert_eq!(produce(&mut c, "pipe", 0, &batch), (0, 0));
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("pipe"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::copy_from_slice(&batch)))])]);
    let v = c.version(ApiKey::Produce, 3, 9).unwrap();
    let mut all = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..50 {
        let (id, frame) = c.encode_request(ApiKey::Produce, v, &req).unwrap();
        ids.push(id);
        all.extend_from_slice(&frame);
    }
    c.write_raw(&all).unwrap();
    let (id, frame) = c.encode_request(ApiKey::Produce, v, &req).unwrap();
    ids.push(id);
    for piece in [&frame[..3], &frame[3..9], &frame[9..]] {
        c.write_raw(piece).unwrap();
    }
    for (k, id) in ids.iter().enumerate() {
        let mut body = c.receive().unwrap();
        let hv = ApiKey::Produce.response_header_version(v);
        let header = ResponseHeader::decode(&mut body, hv).unwrap();
        assert_eq!(header.correlation_id, *id, "response {k} out of order");
        let resp = ProduceResponse::decode(&mut body, v).unwrap();
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, 2 + 2 * k as i64));
    }
    broker.shutdown();
}

/// Guards the long poll: a fetch waiting at the end of the log returns when data arrives.
#[test]
fn long_poll_wakes_on_produce() {
    let (broker, _dir) = start(vec![0]);
    let addr = broker.local_addr().to_string();
    let mut c = Client::connect(&addr, Duration::from_secs(30)).unwrap();
    let md = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("w")))
        ]))
        .with_allow_auto_topic_creation(true);
    let _: MetadataResponse = c.request(ApiKey::Metadata, 9, &md).unwrap();
    let addr2 = addr.clone();
    let producer = std::thread::spawn(move || {
        let mut p = Client::connect(&addr2, Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        produce(
            &mut p,
            "w",
            0,
            &tern_engine::batch::build::filled(0, 1, 5, 0),
        )
    });
    // The fetch may wait 60 s but the client gives up after 30 s: only a wake-up on the
    // produce lets this succeed.
    let (err, hw, records) = fetch(&mut c, "w", 0, 0, 60_000);
    assert_eq!((err, hw), (0, 1));
    assert!(!records.is_empty());
    assert_eq!(producer.join().unwrap(), (0, 0));
    broker.shutdown();
}

/// Guards DescribeConfigs sources: a topic override is the topic's, a value from the
/// broker's configuration is the broker's, anything else is a default.
#[test]
fn describe_configs_marks_sources() {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut config = BrokerConfig::with_cores(vec![0]);
    config.listener = "127.0.0.1:0".parse().unwrap();
    config.log_dir = dir.path().join("data");
    config.log_retention_ms = 3_600_000;
    let broker = Broker::start(config).unwrap();
    let mut c = Client::connect(&broker.local_addr().to_string(), Duration::from_secs(10)).unwrap();
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("cfg"))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("segment.bytes"))
            .with_value(Some(StrBytes::from_static_str("1048576")))])]);
    let resp: CreateTopicsResponse = c.request(ApiKey::CreateTopics, 5, &create).unwrap();
    assert_eq!(resp.topics[0].error_code, 0);
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("cfg"))]);
    let resp: DescribeConfigsResponse = c.request(ApiKey::DescribeConfigs, 4, &req).unwrap();
    assert_eq!(
        resp.results[0].error_code, 0,
        "{:?}",
        resp.results[0].error_message
    );
    let source = |n: &str| {
        let e = resp.results[0]
            .configs
            .iter()
            .find(|e| e.name.as_str() == n)
            .unwrap();
        (e.value.as_ref().map(|v| v.to_string()), e.config_source)
    };
    assert_eq!(source("segment.bytes"), (Some("1048576".into()), 1));
    assert_eq!(source("retention.ms"), (Some("3600000".into()), 4));
    assert_eq!(source("retention.bytes"), (Some("-1".into()), 5));
    broker.shutdown();
}

/// A single node has no controller quorum: DescribeQuorum answers INVALID_REQUEST with a
/// message (not a closed connection), and the connection serves on.
#[test]
fn describe_quorum_on_a_single_node_is_refused_readably() {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let (broker, _dir) = start(vec![0]);
    let mut c = Client::connect(&broker.local_addr().to_string(), Duration::from_secs(10)).unwrap();
    let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(name("__cluster_metadata"))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let v = c.version(ApiKey::DescribeQuorum, 0, 2).unwrap();
    let resp: DescribeQuorumResponse = c.request(ApiKey::DescribeQuorum, v, &req).unwrap();
    assert_eq!(resp.error_code, 42, "{resp:?}");
    assert!(resp
        .error_message
        .as_deref()
        .is_some_and(|m| m.contains("single node")));
    let md = MetadataRequest::default();
    let _: MetadataResponse = c.request(ApiKey::Metadata, 9, &md).unwrap();
}

/// OffsetForLeaderEpoch v`v` for `topic` partition `partition`: (error, epoch, end offset).
fn end_of_epoch(
    c: &mut Client,
    v: i16,
    topic: &str,
    partition: i32,
    current: i32,
    epoch: i32,
) -> (i16, i32, i64) {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(current)
                .with_leader_epoch(epoch)])]);
    let resp: OffsetForLeaderEpochResponse =
        c.request(ApiKey::OffsetForLeaderEpoch, v, &req).unwrap();
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

/// Guards OffsetForLeaderEpoch on a single node (epoch 0, as Metadata says): at the oldest
/// and newest served versions the epoch ends at the log end, also before anything was
/// written (a consumer must never get an undefined answer, which would reset it); a newer
/// current epoch is UNKNOWN_LEADER_EPOCH, an unknown partition UNKNOWN_TOPIC_OR_PARTITION;
/// ListOffsets v4+ names the epoch of the offset it returns.
#[test]
fn offset_for_leader_epoch_on_a_single_node() {
    let (broker, _dir) = start(vec![0]);
    let mut c = Client::connect(&broker.local_addr().to_string(), Duration::from_secs(10)).unwrap();
    assert_eq!(c.version(ApiKey::OffsetForLeaderEpoch, 0, 10).unwrap(), 4);
    assert!(
        c.version(ApiKey::OffsetForLeaderEpoch, 0, 1).is_err(),
        "v0–1 not served"
    );
    let md = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("epochs")))
        ]))
        .with_allow_auto_topic_creation(true);
    let _: MetadataResponse = c.request(ApiKey::Metadata, 12, &md).unwrap();
    for v in [2, 4] {
        assert_eq!(
            end_of_epoch(&mut c, v, "epochs", 0, 0, 0),
            (0, 0, 0),
            "v{v}"
        );
    }
    let batch = tern_engine::batch::build::filled(1_700_000_000_000, 3, 20, 1);
    assert_eq!(produce(&mut c, "epochs", 0, &batch), (0, 0));
    for v in [2, 3, 4] {
        assert_eq!(
            end_of_epoch(&mut c, v, "epochs", 0, -1, 0),
            (0, 0, 3),
            "v{v}"
        );
        assert_eq!(
            end_of_epoch(&mut c, v, "epochs", 0, 0, 0),
            (0, 0, 3),
            "v{v}"
        );
    }
    // UNKNOWN_LEADER_EPOCH (75), UNKNOWN_TOPIC_OR_PARTITION (3).
    assert_eq!(end_of_epoch(&mut c, 4, "epochs", 0, 1, 0).0, 75);
    assert_eq!(end_of_epoch(&mut c, 4, "epochs", 7, 0, 0).0, 3);
    assert_eq!(end_of_epoch(&mut c, 4, "nope", 0, 0, 0).0, 3);
    for (v, want) in [(3, -1), (4, 0), (6, 0)] {
        let lo = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name("epochs"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        let resp: ListOffsetsResponse = c.request(ApiKey::ListOffsets, v, &lo).unwrap();
        let p = &resp.topics[0].partitions[0];
        assert_eq!((p.offset, p.leader_epoch), (3, want), "ListOffsets v{v}");
    }
    broker.shutdown();
}
