//! Three `tern serve` processes as one cluster on 127.0.0.1: a Raft controller quorum over
//! QUIC with mutual TLS, every partition led by one broker, real librdkafka clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Broker;
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const DEADLINE: Duration = Duration::from_secs(60);

/// A cluster of `n` nodes (ids 1..=n) with development certificates.
struct Cluster {
    nodes: BTreeMap<i32, Broker>,
    /// Each node's CONTROLLER (QUIC) address.
    controllers: BTreeMap<i32, String>,
    certs: tempfile::TempDir,
}

/// A node id with a certificate from the cluster's CA that no node runs as (an impostor
/// follower in bad-input tests).
const OUTSIDER: i32 = 99;

fn reserve_udp() -> String {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().to_string()
}

impl Cluster {
    /// Nodes 1..=voters are controller voters (and brokers); the next `brokers_only` nodes
    /// are brokers only (`process.roles = "broker"`).
    fn start(voters_n: i32, brokers_only: i32) -> Cluster {
        Self::start_with(voters_n, brokers_only, "")
    }

    /// [`Cluster::start`] with `more` TOML lines in every node's configuration.
    fn start_with(voters_n: i32, brokers_only: i32, more: &str) -> Cluster {
        let certs = tempfile::tempdir().unwrap();
        let ids: Vec<i32> = (1..=voters_n + brokers_only).collect();
        let mut cert_ids = ids.clone();
        cert_ids.push(OUTSIDER);
        let dev = tern_replication::tls::dev_certificates(&cert_ids).unwrap();
        std::fs::write(certs.path().join("ca.crt"), &dev.ca_cert_pem).unwrap();
        for (id, cert, key) in &dev.nodes {
            std::fs::write(certs.path().join(format!("node-{id}.crt")), cert).unwrap();
            std::fs::write(certs.path().join(format!("node-{id}.key")), key).unwrap();
        }
        let controllers: BTreeMap<i32, String> =
            ids.iter().map(|id| (*id, reserve_udp())).collect();
        let voters: Vec<String> = controllers
            .iter()
            .filter(|(id, _)| **id <= voters_n)
            .map(|(id, a)| format!("{id}@{a}"))
            .collect();
        let mut nodes = BTreeMap::new();
        for id in &ids {
            let role = if *id > voters_n {
                "process.roles = \"broker\"\n"
            } else {
                ""
            };
            let extra = format!(
                "{role}node.id = {id}\ncluster.id = \"test-cluster\"\ncontroller.quorum.voters = \"{}\"\n\
                 broker.session.timeout.ms = 3000\nbroker.heartbeat.interval.ms = 500\n\
                 quic.tls.cert = \"{}\"\nquic.tls.key = \"{}\"\nquic.tls.ca = \"{}\"\n{more}",
                voters.join(","),
                certs.path().join(format!("node-{id}.crt")).display(),
                certs.path().join(format!("node-{id}.key")).display(),
                certs.path().join("ca.crt").display(),
            );
            nodes.insert(*id, Broker::start_node(&extra, &controllers[id]));
        }
        Cluster {
            nodes,
            controllers,
            certs,
        }
    }

    /// Waits until every node is a live broker and a controller leads.
    fn wait_ready(&self) {
        let first = &self.nodes[&1];
        wait_for("every node live and a controller", || {
            let m = metadata(first, Some(&[]));
            m.brokers.len() == self.nodes.len() && controller(first) > 0
        });
    }

    /// Whether node `at` shows every partition of `topic` with all nodes in sync.
    fn isr_full(&self, at: i32, topic: &str) -> bool {
        let m = metadata(&self.nodes[&at], Some(&[topic]));
        let i = isrs(&m, topic);
        !i.is_empty() && i.iter().all(|r| r.len() == self.nodes.len())
    }

    /// Three nodes (voters, `replica.lag.time.max.ms = 2000`) and a topic with a replica on
    /// each and `min.insync.replicas = min_isr`, every replica in sync.
    fn replicated(topic: &str, partitions: i32, min_isr: i32) -> Cluster {
        let cluster = Cluster::start_with(3, 0, "replica.lag.time.max.ms = 2000\n");
        cluster.wait_ready();
        let min_isr = min_isr.to_string();
        create_replicated(
            &cluster.bootstrap(),
            topic,
            partitions,
            3,
            &[("min.insync.replicas", min_isr.as_str())],
        );
        wait_for("every replica in sync", || cluster.isr_full(1, topic));
        cluster
    }

    fn bootstrap(&self) -> String {
        self.nodes
            .values()
            .map(Broker::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `bootstrap.servers` of every node but `down`.
    fn bootstrap_without(&self, down: i32) -> String {
        self.nodes
            .iter()
            .filter(|(id, _)| **id != down)
            .map(|(_, b)| b.addr())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One request over a raw socket; returns the response body.
fn round_trip<T: Encodable>(b: &Broker, api: ApiKey, v: i16, req: &T) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(v)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("cluster-test")));
    let mut buf = vec![0u8; 4];
    header
        .encode(&mut buf, api.request_header_version(v))
        .unwrap();
    req.encode(&mut buf, v).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    let mut s = TcpStream::connect(b.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&buf).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let mut body = Bytes::from(body);
    ResponseHeader::decode(&mut body, api.response_header_version(v)).unwrap();
    body
}

/// The error of a Fetch of `topic`/`partition` sent to `b`.
fn fetch_error(b: &Broker, topic: &str, partition: i32) -> i16 {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_partition_max_bytes(1 << 20)])]);
    let mut body = round_trip(b, ApiKey::Fetch, 12, &req);
    let resp = FetchResponse::decode(&mut body, 12).unwrap();
    resp.responses[0].partitions[0].error_code
}

/// KIP-951's hints from a broker that does not lead `topic`/`partition`: Fetch v16's and
/// Produce v11's error, the leader they name, and the port of that leader's endpoint.
fn leader_hints(b: &Broker, topic: &str, partition: i32) -> [(i16, i32, i32); 2] {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
    };
    let name = TopicName(StrBytes::from_string(topic.to_string()));
    let id = metadata(b, Some(&[topic])).topics[0].topic_id;
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_partition_max_bytes(1 << 20)])]);
    let mut body = round_trip(b, ApiKey::Fetch, 16, &req);
    let resp = FetchResponse::decode(&mut body, 16).unwrap();
    let p = &resp.responses[0].partitions[0];
    let port = |id: i32, ports: Vec<(i32, i32)>| {
        ports.iter().find(|(n, _)| *n == id).map_or(-1, |(_, p)| *p)
    };
    let ports = resp
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, e.port))
        .collect();
    let fetch = (
        p.error_code,
        p.current_leader.leader_id.0,
        port(p.current_leader.leader_id.0, ports),
    );
    let batch = tern_engine::batch::build::filled(0, 1, 10, 0);
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name)
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(batch)))])]);
    let mut body = round_trip(b, ApiKey::Produce, 11, &req);
    let resp = ProduceResponse::decode(&mut body, 11).unwrap();
    let p = &resp.responses[0].partition_responses[0];
    let ports = resp
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, e.port))
        .collect();
    let produce = (
        p.error_code,
        p.current_leader.leader_id.0,
        port(p.current_leader.leader_id.0, ports),
    );
    [fetch, produce]
}

/// The active controller, from DescribeCluster (Metadata names the broker asked, as KRaft
/// brokers do).
fn controller(b: &Broker) -> i32 {
    use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};
    let req = DescribeClusterRequest::default().with_endpoint_type(1);
    let mut body = round_trip(b, ApiKey::DescribeCluster, 1, &req);
    DescribeClusterResponse::decode(&mut body, 1)
        .unwrap()
        .controller_id
        .0
}

/// DescribeQuorum v2 for `topic` partition 0: the top-level error and the voters.
fn describe_quorum(b: &Broker, topic: &str) -> (i16, Vec<i32>) {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    use kafka_protocol::messages::{DescribeQuorumRequest, DescribeQuorumResponse, TopicName};
    let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let mut body = round_trip(b, ApiKey::DescribeQuorum, 2, &req);
    let resp = DescribeQuorumResponse::decode(&mut body, 2).unwrap();
    let voters = resp
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .flat_map(|p| &p.current_voters)
        .map(|v| v.replica_id.0)
        .collect();
    (resp.error_code, voters)
}

/// Metadata v12 over a raw socket (brokers, controller id, partition leaders).
fn metadata(b: &Broker, topics: Option<&[&str]>) -> MetadataResponse {
    let mut req = MetadataRequest::default();
    req.topics = topics.map(|t| {
        t.iter()
            .map(|n| {
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(kafka_protocol::messages::TopicName(
                        StrBytes::from_string(n.to_string()),
                    )))
            })
            .collect()
    });
    let v = 12;
    let mut body = round_trip(b, ApiKey::Metadata, v, &req);
    MetadataResponse::decode(&mut body, v).unwrap()
}

/// A topic config's value and source (DescribeConfigs v4) as broker `b` shows it.
fn topic_config(b: &Broker, topic: &str, key: &str) -> Option<(String, i8)> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))]);
    let mut body = round_trip(b, ApiKey::DescribeConfigs, 4, &req);
    let resp = DescribeConfigsResponse::decode(&mut body, 4).unwrap();
    resp.results.first()?.configs.iter().find_map(|e| {
        (e.name.as_str() == key).then(|| {
            let v = e.value.as_ref().map_or(String::new(), |v| v.to_string());
            (v, e.config_source)
        })
    })
}

/// IncrementalAlterConfigs SET of one broker key on broker resource `resource` ("" is the
/// cluster-wide default), through `b`: the error code.
fn set_broker_config(b: &Broker, resource: &str, key: &str, value: &str) -> i16 {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_string(resource.to_string()))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_string(key.to_string()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(value.to_string())))]),
    ]);
    let mut body = round_trip(b, ApiKey::IncrementalAlterConfigs, 1, &req);
    let resp = IncrementalAlterConfigsResponse::decode(&mut body, 1).unwrap();
    resp.responses[0].error_code
}

/// `tern topic alter TOPIC ARGS…` against `bootstrap`: success and the output, or the error.
fn tern_topic_alter(bootstrap: &str, topic: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["topic", "alter", topic, "-b", bootstrap])
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn leaders(m: &MetadataResponse, topic: &str) -> Vec<i32> {
    let t = m
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
        .unwrap_or_else(|| panic!("no {topic} in {m:?}"));
    t.partitions.iter().map(|p| p.leader_id.0).collect()
}

fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    create_replicated(bootstrap, name, partitions, 1, &[]);
}

fn create_replicated(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replicas: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let r = rt.block_on(admin.create_topics(&[topic], &opts));
    assert!(
        r.as_ref().is_ok_and(|r| r[0].is_ok()),
        "create {name}: {r:?}"
    );
}

fn produce(bootstrap: &str, topic: &str, partitions: i32, per_partition: usize) {
    produce_range(bootstrap, topic, partitions, 0..per_partition);
}

/// Produces `{partition}-{i}` for every `i` of `range` to every partition, acks=all and
/// idempotent, and waits until every record is acknowledged.
fn produce_range(bootstrap: &str, topic: &str, partitions: i32, range: std::ops::Range<usize>) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    for i in range {
        for part in 0..partitions {
            let value = format!("{part}-{i}");
            p.send(
                BaseRecord::<(), String>::to(topic)
                    .partition(part)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(p.in_flight_count(), 0);
}

/// Reads every partition of `topic` from the beginning until `expected` records arrived.
fn consume_all(bootstrap: &str, topic: &str, partitions: i32, expected: usize) -> BTreeSet<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut seen = BTreeSet::new();
    let start = Instant::now();
    while seen.len() < expected {
        assert!(
            start.elapsed() < DEADLINE,
            "read {} of {expected}",
            seen.len()
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            assert!(value.starts_with(&format!("{}-", m.partition())), "{value}");
            seen.insert(value);
        }
    }
    seen
}

/// Guards the cluster end to end: three voters and a broker-only node agree on a controller
/// and on four live brokers; a topic created through one node has its partitions led by
/// all four; a
/// librdkafka producer bootstrapped from one node writes to every leader and a consumer
/// bootstrapped from another reads everything back; a node that does not lead a partition
/// refuses to serve it; after SIGKILL of the controller leader a new one is elected and
/// topics can still be created; the killed broker's partitions report no leader.
#[test]
fn three_nodes_serve_one_cluster() {
    let mut cluster = Cluster::start(3, 1);
    let first = &cluster.nodes[&1];
    wait_for("four live brokers and a controller", || {
        let m = metadata(first, Some(&[]));
        m.brokers.len() == 4 && controller(first) > 0
    });
    // Created through the broker-only node, like any client would.
    create_topic(&cluster.nodes[&4].addr(), "orders", 6);
    let m = metadata(&cluster.nodes[&2], Some(&["orders"]));
    let led: BTreeSet<i32> = leaders(&m, "orders").into_iter().collect();
    assert_eq!(led, BTreeSet::from([1, 2, 3, 4]), "{m:?}");
    assert!(!m.cluster_id.as_ref().unwrap().is_empty());

    // A node that does not lead a partition refuses to serve it; its leader serves it.
    let orders = leaders(&m, "orders");
    for (p, leader) in orders.iter().enumerate() {
        let other = if *leader == 1 { 2 } else { 1 };
        assert_eq!(
            fetch_error(&cluster.nodes[&other], "orders", p as i32),
            6,
            "p{p}"
        );
        // The leader takes its role once its epoch is durable: shortly after the image.
        wait_for("the leader to serve", || {
            fetch_error(&cluster.nodes[leader], "orders", p as i32) == 0
        });
        // KIP-951: the other node names the leader and its endpoint.
        let port = cluster.nodes[leader]
            .addr()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let hint = (6, *leader, port);
        assert_eq!(
            leader_hints(&cluster.nodes[&other], "orders", p as i32),
            [hint, hint],
            "p{p}"
        );
    }

    // Idempotent: InitProducerId takes its id from a controller-allocated block.
    produce(&cluster.nodes[&1].addr(), "orders", 6, 50);
    let seen = consume_all(&cluster.nodes[&2].addr(), "orders", 6, 300);
    assert_eq!(seen.len(), 300);

    // A topic config changed through the broker-only node: committed by the controller,
    // every broker shows it (and applies it to its replicas); a bad value changes nothing.
    let via = cluster.nodes[&4].addr();
    tern_topic_alter(&via, "orders", &["--config", "retention.ms=7200000"]).unwrap();
    wait_for("every broker showing the new retention", || {
        cluster
            .nodes
            .values()
            .all(|b| topic_config(b, "orders", "retention.ms") == Some(("7200000".into(), 1)))
    });
    let err = tern_topic_alter(&via, "orders", &["--config", "retention.ms=soon"]).unwrap_err();
    assert!(
        err.contains("INVALID_CONFIG") && err.contains("retention.ms"),
        "{err}"
    );
    let err = tern_topic_alter(&via, "nope", &["--config", "retention.ms=1"]).unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(
        topic_config(&cluster.nodes[&2], "orders", "retention.ms"),
        Some(("7200000".into(), 1))
    );
    // A cluster-wide dynamic broker default, committed by the controller: every broker
    // applies it to the topics that do not set the key; a per-broker one is refused.
    assert_eq!(
        set_broker_config(&cluster.nodes[&4], "", "log.segment.bytes", "1048576"),
        0
    );
    wait_for("every broker applying the new default", || {
        cluster
            .nodes
            .values()
            .all(|b| topic_config(b, "orders", "segment.bytes") == Some(("1048576".into(), 3)))
    });
    assert_eq!(
        set_broker_config(&cluster.nodes[&1], "1", "log.segment.bytes", "65536"),
        42
    );
    assert_eq!(
        set_broker_config(&cluster.nodes[&1], "", "log.segment.bytes", "12"),
        40
    );

    // The controller leader dies; the other two elect one and still create topics.
    assert_eq!(
        metadata(first, Some(&[])).controller_id.0,
        1,
        "Metadata names the broker asked"
    );
    let old = controller(first);
    assert!((1..=3).contains(&old), "the controller is a voter: {old}");
    cluster.nodes.get_mut(&old).unwrap().kill9();
    let survivor = cluster.nodes.keys().copied().find(|id| *id != old).unwrap();
    let before = Instant::now();
    wait_for("a new controller", || {
        let c = controller(&cluster.nodes[&survivor]);
        c > 0 && c != old
    });
    eprintln!("new controller visible after {:?}", before.elapsed());
    // Every live broker, the broker-only one too, names the new controller.
    wait_for("every live broker naming the new controller", || {
        let ids: BTreeSet<i32> = cluster
            .nodes
            .iter()
            .filter(|(id, _)| **id != old)
            .map(|(_, b)| controller(b))
            .collect();
        ids.len() == 1 && ids.iter().all(|c| *c > 0 && *c != old)
    });
    let live = cluster.bootstrap_without(old);
    let created = std::panic::catch_unwind(|| create_topic(&live, "after", 2));
    if created.is_err() {
        for (id, b) in &cluster.nodes {
            eprintln!("---- node {id}\n{}", b.log());
        }
        panic!("creating a topic after the controller's death failed");
    }
    // The dead broker is fenced after its session: its partitions (RF = 1) have no leader.
    wait_for("the dead broker's partitions without a leader", || {
        let m = metadata(&cluster.nodes[&survivor], Some(&["orders"]));
        m.brokers.len() == 3 && leaders(&m, "orders").iter().all(|l| *l != old)
    });
    let m = metadata(&cluster.nodes[&survivor], Some(&["orders"]));
    assert!(leaders(&m, "orders").contains(&-1), "{m:?}");
    // The operator's view: the dead broker fenced, its partitions listed.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["cluster", "status", "-b", &cluster.nodes[&survivor].addr()])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{status}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.contains("cluster id   test-cluster"), "{status}");
    assert!(status.contains("brokers      4"), "{status}");
    assert!(status.contains("fenced"), "{status}");
    assert!(status.contains("orders/"), "{status}");
    // The quorum from DescribeQuorum (one voter is dead but still a voter), each live
    // broker's epoch from the broker itself.
    assert!(status.contains("quorum       leader "), "{status}");
    assert_eq!(status.matches("  voter ").count(), 3, "{status}");
    assert!(status.contains("live  epoch "), "{status}");
    // DescribeQuorum from any broker (forwarded to the leader); a topic other than the
    // metadata log is refused.
    let (error, mut voters) = describe_quorum(&cluster.nodes[&survivor], "__cluster_metadata");
    voters.sort();
    assert_eq!((error, voters), (0, vec![1, 2, 3]));
    assert_eq!(describe_quorum(&cluster.nodes[&survivor], "orders").0, 3);

    // It returns (its Raft log and its partitions' data on disk): every partition has a
    // leader again and every record is served.
    cluster.nodes.get_mut(&old).unwrap().restart();
    wait_for("every partition led again", || {
        let m = metadata(&cluster.nodes[&survivor], Some(&["orders"]));
        m.brokers.len() == 4 && leaders(&m, "orders").iter().all(|l| *l > 0)
    });
    let seen = consume_all(&cluster.bootstrap(), "orders", 6, 300);
    assert_eq!(seen.len(), 300);

    // A consumer group: its coordinator is the leader of its `__consumer_offsets`
    // partition, wherever the client bootstrapped.
    group_round_trip(&cluster.nodes[&survivor].addr(), "orders", 300);

    // SIGTERM: a controlled shutdown moves the broker's leaderships before it exits.
    let leaving = survivor;
    let status = cluster.nodes.get_mut(&leaving).unwrap().stop();
    assert!(status.success(), "{status}");
    let log = cluster.nodes[&leaving].log();
    assert!(
        log.contains("controlled shutdown: leaderships moved"),
        "{log}"
    );
    let other = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leaving)
        .unwrap();
    let m = metadata(&cluster.nodes[&other], Some(&["orders"]));
    assert!(!leaders(&m, "orders").contains(&leaving), "{m:?}");

    // The whole cluster stops and starts again: the controllers recover their Raft logs,
    // the topics and every record are still there.
    for b in cluster.nodes.values_mut() {
        if b.is_running() {
            assert!(b.stop().success());
        }
    }
    for b in cluster.nodes.values_mut() {
        b.restart();
    }
    wait_for("the restarted cluster leading every partition", || {
        let m = metadata(&cluster.nodes[&1], Some(&["orders", "after"]));
        m.brokers.len() == 4
            && leaders(&m, "orders").iter().all(|l| *l > 0)
            && leaders(&m, "after").len() == 2
    });
    let seen = consume_all(&cluster.bootstrap(), "orders", 6, 300);
    assert_eq!(seen.len(), 300);
    assert_eq!(
        topic_config(&cluster.nodes[&3], "orders", "retention.ms"),
        Some(("7200000".into(), 1)),
        "the override survives a restart of the whole cluster"
    );
    assert_eq!(
        topic_config(&cluster.nodes[&2], "orders", "segment.bytes"),
        Some(("1048576".into(), 3)),
        "the broker default survives a restart of the whole cluster"
    );
}

/// Subscribes a group, reads `expected` records, commits, and reads the commit back.
fn group_round_trip(bootstrap: &str, topic: &str, expected: usize) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cluster-group")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut read = 0;
    let start = Instant::now();
    while read < expected {
        assert!(
            start.elapsed() < DEADLINE,
            "group read {read} of {expected}"
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            m.unwrap();
            read += 1;
        }
    }
    c.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    let committed = c.committed(Duration::from_secs(30)).unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    assert_eq!(total, expected as i64, "{committed:?}");
}

fn isrs(m: &MetadataResponse, topic: &str) -> Vec<Vec<i32>> {
    m.topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| p.isr_nodes.iter().map(|b| b.0).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// Guards replication end to end (RF 3, min ISR 2): every record acknowledged with acks=all
/// survives the SIGKILL of its partition's leader, the new leader serves them all and takes
/// new ones once the ISR has shrunk, and the old leader, restarted, catches up and rejoins
/// the ISR.
#[test]
fn acknowledged_records_survive_the_loss_of_a_leader() {
    let mut cluster = Cluster::replicated("replicated", 2, 2);
    produce_range(&cluster.bootstrap(), "replicated", 2, 0..100);
    assert_eq!(
        consume_all(&cluster.bootstrap(), "replicated", 2, 200).len(),
        200
    );

    let m = metadata(&cluster.nodes[&1], Some(&["replicated"]));
    let old = leaders(&m, "replicated")[0];
    cluster.nodes.get_mut(&old).unwrap().kill9();
    let live: Vec<i32> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != old)
        .collect();
    let bootstrap = cluster.bootstrap_without(old);
    wait_for("a new leader for every partition", || {
        let m = metadata(&cluster.nodes[&live[0]], Some(&["replicated"]));
        leaders(&m, "replicated")
            .iter()
            .all(|l| *l > 0 && *l != old)
    });
    // Nothing acknowledged is lost, and the new leaders take more once the dead replica
    // has left the ISR (2 in sync: min.insync.replicas is met).
    assert_eq!(consume_all(&bootstrap, "replicated", 2, 200).len(), 200);
    produce_range(&bootstrap, "replicated", 2, 100..150);
    assert_eq!(consume_all(&bootstrap, "replicated", 2, 300).len(), 300);

    cluster.nodes.get_mut(&old).unwrap().restart();
    wait_for("the restarted replica back in every ISR", || {
        cluster.isr_full(live[0], "replicated")
    });
    assert_eq!(
        consume_all(&cluster.bootstrap(), "replicated", 2, 300).len(),
        300
    );

    // Committed offsets are replicated too: they survive the loss of their coordinator.
    group_round_trip(&cluster.bootstrap(), "replicated", 300);
    let coordinator = find_coordinator(&cluster.nodes[&1], "cluster-group");
    assert!(coordinator > 0);
    cluster.nodes.get_mut(&coordinator).unwrap().kill9();
    let other = *cluster.nodes.keys().find(|id| **id != coordinator).unwrap();
    wait_for("another coordinator", || {
        let c = find_coordinator(&cluster.nodes[&other], "cluster-group");
        c > 0 && c != coordinator
    });
    let bootstrap = cluster.bootstrap_without(coordinator);
    assert_eq!(
        committed_total(&bootstrap, "replicated", "cluster-group"),
        300
    );
}

/// The coordinator FindCoordinator names for `group`, as `b` answers (-1: none).
fn find_coordinator(b: &Broker, group: &str) -> i32 {
    use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
    let req = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_string()))
        .with_key_type(0);
    let mut body = round_trip(b, ApiKey::FindCoordinator, 3, &req);
    let resp = FindCoordinatorResponse::decode(&mut body, 3).unwrap();
    if resp.error_code != 0 {
        return -1;
    }
    resp.node_id.0
}

/// The sum of `group`'s committed offsets on `topic`, as a new member of it reads them.
fn committed_total(bootstrap: &str, topic: &str, group: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition(topic, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(30)).unwrap();
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

/// One record to partition 0 with `acks` and no retries: the broker's answer.
fn produce_once(
    bootstrap: &str,
    topic: &str,
    acks: &str,
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("retries", "0")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "20000")
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    static SENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let value = format!(
        "0-once-{}",
        SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    rt.block_on(
        p.send(
            FutureRecord::<(), str>::to(topic)
                .partition(0)
                .payload(&value),
            Duration::from_secs(20),
        ),
    )
    .map(|_| ())
    .map_err(|(e, _)| e)
}

/// Guards min.insync.replicas: with 3 required and a follower down, acks=all is refused with
/// NOT_ENOUGH_REPLICAS once the ISR has shrunk, while acks=1 is still taken; the topic's
/// minimum changed live applies to the running leader; when the follower returns and catches
/// up, acks=all works again.
#[test]
fn acks_all_needs_min_insync_replicas() {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let mut cluster = Cluster::replicated("strict", 1, 3);
    produce_once(&cluster.bootstrap(), "strict", "all").unwrap();

    let m = metadata(&cluster.nodes[&1], Some(&["strict"]));
    let leader = leaders(&m, "strict")[0];
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    cluster.nodes.get_mut(&follower).unwrap().kill9();
    let bootstrap = cluster.nodes[&leader].addr();
    wait_for("the ISR without the dead follower", || {
        let m = metadata(&cluster.nodes[&leader], Some(&["strict"]));
        isrs(&m, "strict").first().is_some_and(|r| r.len() == 2)
    });
    // The leader applies the shrunk ISR a moment after the image has it: an append it took
    // just before fails after the append; then acks=all is refused before any append.
    wait_for("NOT_ENOUGH_REPLICAS", || {
        match produce_once(&bootstrap, "strict", "all") {
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas)) => true,
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicasAfterAppend)) => {
                false
            }
            other => panic!("acks=all with the ISR below the minimum: {other:?}"),
        }
    });
    produce_once(&bootstrap, "strict", "1").unwrap();
    // min.insync.replicas lowered to 2 while the leader runs (AlterConfigs): acks=all is
    // taken with the two in the ISR; raised back to 3, it is refused again.
    tern_topic_alter(&bootstrap, "strict", &["--config", "min.insync.replicas=2"]).unwrap();
    wait_for("acks=all taken with min ISR 2", || {
        produce_once(&bootstrap, "strict", "all").is_ok()
    });
    tern_topic_alter(&bootstrap, "strict", &["--config", "min.insync.replicas=3"]).unwrap();
    wait_for("NOT_ENOUGH_REPLICAS again", || {
        matches!(
            produce_once(&bootstrap, "strict", "all"),
            Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::NotEnoughReplicas
            ))
        )
    });

    cluster.nodes.get_mut(&follower).unwrap().restart();
    wait_for("the follower back in the ISR", || {
        cluster.isr_full(leader, "strict")
    });
    // ElectLeaders (preferred) through the controller: the first replica leads afterwards
    // (elected now, or already: ELECTION_NOT_NEEDED); an unknown partition is named.
    {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
        let req = ElectLeadersRequest::default()
            .with_election_type(0)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(TopicName(StrBytes::from_static_str("strict")))
                .with_partitions(vec![0, 4])]));
        let mut body = round_trip(&cluster.nodes[&follower], ApiKey::ElectLeaders, 2, &req);
        let resp = ElectLeadersResponse::decode(&mut body, 2).unwrap();
        let codes: Vec<i16> = resp.replica_election_results[0]
            .partition_result
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert!(matches!(codes[..], [0 | 84, 3]), "{resp:?}");
        wait_for("the preferred replica leading", || {
            let m = metadata(&cluster.nodes[&leader], Some(&["strict"]));
            let p = &m.topics[0].partitions[0];
            p.leader_id == p.replica_nodes[0]
        });
    }
    produce_once(&cluster.bootstrap(), "strict", "all").unwrap();
    // The three acknowledged records (and any written before a refusal after the append).
    assert!(consume_all(&cluster.bootstrap(), "strict", 1, 3).len() >= 3);
}

/// Guards the ISR against a paused follower (SIGSTOP longer than `replica.lag.time.max.ms`):
/// it leaves the ISR, acks=all goes on with the other two (min ISR 2), and after SIGCONT it
/// catches up and rejoins.
#[test]
fn a_paused_follower_leaves_the_isr_and_rejoins() {
    let cluster = Cluster::replicated("paused", 1, 2);
    let isr_len = |at: i32| {
        let m = metadata(&cluster.nodes[&at], Some(&["paused"]));
        isrs(&m, "paused").first().map_or(0, Vec::len)
    };
    let m = metadata(&cluster.nodes[&1], Some(&["paused"]));
    let leader = leaders(&m, "paused")[0];
    // A follower that is not the controller leader, so the quorum keeps its leader.
    let ctrl = controller(&cluster.nodes[&leader]);
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader && **id != ctrl)
        .unwrap_or_else(|| cluster.nodes.keys().find(|id| **id != leader).unwrap());
    produce_range(&cluster.nodes[&leader].addr(), "paused", 1, 0..50);
    cluster.nodes[&follower].pause();
    wait_for("the paused follower out of the ISR", || {
        isr_len(leader) == 2
    });
    produce_range(&cluster.nodes[&leader].addr(), "paused", 1, 50..100);
    cluster.nodes[&follower].resume();
    wait_for("the resumed follower back in the ISR", || {
        isr_len(leader) == 3
    });
    produce_range(&cluster.nodes[&leader].addr(), "paused", 1, 100..120);
    assert_eq!(
        consume_all(&cluster.bootstrap(), "paused", 1, 120).len(),
        120
    );
}

/// Guards against a lost quorum: with two of three nodes down the ISR cannot shrink (no
/// controller), so acks=all fails at its deadline instead of being acknowledged by one
/// replica; once the nodes return, every record acknowledged before is still there.
#[test]
fn acks_all_fails_without_a_quorum_and_loses_nothing() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut cluster = Cluster::replicated("quorum", 1, 2);
    produce_range(&cluster.bootstrap(), "quorum", 1, 0..100);
    let m = metadata(&cluster.nodes[&1], Some(&["quorum"]));
    let leader = leaders(&m, "quorum")[0];
    let others: Vec<i32> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    for id in &others {
        cluster.nodes.get_mut(id).unwrap().kill9();
    }
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.nodes[&leader].addr())
        .set("acks", "all")
        .set("retries", "0")
        .set("enable.idempotence", "false")
        .set("request.timeout.ms", "5000")
        .set("message.timeout.ms", "8000")
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sent = rt.block_on(
        p.send(
            FutureRecord::<(), str>::to("quorum")
                .partition(0)
                .payload("0-lonely"),
            Duration::from_secs(20),
        ),
    );
    assert!(
        sent.is_err(),
        "acks=all acknowledged by one replica: {sent:?}"
    );
    for id in &others {
        cluster.nodes.get_mut(id).unwrap().restart();
    }
    wait_for("three in-sync replicas again", || {
        cluster.isr_full(leader, "quorum")
    });
    // Every acknowledged record, and maybe the unacknowledged one (written, never committed
    // while alone; it may be committed once the others return).
    let seen = consume_all(&cluster.bootstrap(), "quorum", 1, 100);
    assert!(
        (0..100).all(|i| seen.contains(&format!("0-{i}"))),
        "{seen:?}"
    );
}

/// Guards the leader's side of a replica stream against bad input from a node with a valid
/// certificate: a fetch by a node that is no replica, with a future leader epoch, with a
/// negative offset, get their errors; a request naming another replica, a malformed body
/// and a truncated frame close the stream; the broker goes on replicating.
#[test]
fn replica_streams_refuse_bad_input() {
    use tern_replication::fetch::{FetchRefusal, FetchRequest, FetchResponse, PartitionFetch};
    use tern_replication::transport::{Transport, TransportConfig};
    let cluster = Cluster::start(3, 0);
    cluster.wait_ready();
    create_replicated(&cluster.bootstrap(), "guarded", 1, 3, &[]);
    let m = metadata(&cluster.nodes[&1], Some(&["guarded"]));
    let leader = leaders(&m, "guarded")[0];
    let epoch = m.topics[0].partitions[0].leader_epoch;
    produce_range(&cluster.bootstrap(), "guarded", 1, 0..10);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = cluster.certs.path();
    let tls = tern_replication::tls::TlsMaterial::from_files(
        &dir.join(format!("node-{OUTSIDER}.crt")),
        &dir.join(format!("node-{OUTSIDER}.key")),
        &dir.join("ca.crt"),
    )
    .unwrap();
    // The leader's node endpoint, and its shard 0's own endpoint (from its log).
    let node_addr: std::net::SocketAddr = cluster.controllers[&leader].parse().unwrap();
    let log = cluster.nodes[&leader].log();
    let shard_addr: std::net::SocketAddr = log
        .lines()
        .filter(|l| l.contains("replica endpoint bound") && l.contains("shard=0"))
        .find_map(|l| {
            l.split("addr=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no shard endpoint in the log:\n{log}"));
    let fetch = |replica_id: i32, current_leader_epoch: i32, fetch_offset: i64| FetchRequest {
        replica_id,
        broker_epoch: 1,
        max_wait_ms: 0,
        max_bytes: 1 << 20,
        partitions: vec![PartitionFetch {
            topic: "guarded".into(),
            partition: 0,
            current_leader_epoch,
            fetch_offset,
            last_fetched_epoch: -1,
            max_bytes: 1 << 20,
        }],
    };
    rt.block_on(async {
        let config = TransportConfig::new(
            OUTSIDER,
            "test-cluster",
            "127.0.0.1:0".parse().unwrap(),
            BTreeMap::new(),
        );
        let (transport, _rx) = Transport::bind(config, &tls).unwrap();
        let dialer = transport.replica_dialer();
        for addr in [node_addr, shard_addr] {
            let (_conn, mut send, mut recv) = dialer.open(leader, addr, 0).await.unwrap();
            let mut ask = async |body: Bytes| -> Result<FetchResponse, String> {
                send.write_all(&(body.len() as u32).to_be_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                send.write_all(&body).await.map_err(|e| e.to_string())?;
                let mut len = [0u8; 4];
                recv.read_exact(&mut len).await.map_err(|e| e.to_string())?;
                let mut b = vec![0u8; u32::from_be_bytes(len) as usize];
                recv.read_exact(&mut b).await.map_err(|e| e.to_string())?;
                FetchResponse::decode(Bytes::from(b)).map_err(|e| e.to_string())
            };
            let refusal = |r: Result<FetchResponse, String>| r.unwrap().partitions[0].result;
            assert_eq!(
                refusal(ask(fetch(OUTSIDER, epoch, 0).encode()).await),
                Err(FetchRefusal::NotReplica)
            );
            assert_eq!(
                refusal(ask(fetch(OUTSIDER, epoch + 5, 0).encode()).await),
                Err(FetchRefusal::UnknownLeaderEpoch)
            );
            assert_eq!(
                refusal(ask(fetch(OUTSIDER, epoch - 1, 0).encode()).await),
                Err(FetchRefusal::FencedLeaderEpoch)
            );
            assert_eq!(
                refusal(ask(fetch(OUTSIDER, epoch, -7).encode()).await),
                Err(FetchRefusal::NotReplica)
            );
            // Posing as replica 2 on a stream whose hello said 99: the stream is closed.
            assert!(ask(fetch(2, epoch, 0).encode()).await.is_err());

            // A malformed body, then a truncated frame, each on a stream of its own.
            let (_c2, mut send2, mut recv2) = dialer.open(leader, addr, 0).await.unwrap();
            send2.write_all(&5u32.to_be_bytes()).await.unwrap();
            send2.write_all(b"\x01junk").await.unwrap();
            let mut b = [0u8; 4];
            assert!(recv2.read_exact(&mut b).await.is_err());
            let (_c3, mut send3, mut recv3) = dialer.open(leader, addr, 0).await.unwrap();
            send3.write_all(&1000u32.to_be_bytes()).await.unwrap();
            send3.write_all(&[1, 2, 3]).await.unwrap();
            let _ = send3.finish();
            assert!(recv3.read_exact(&mut b).await.is_err());
        }
    });
    // The leader is alive and still replicates: acks=all with every replica in sync.
    produce_range(&cluster.bootstrap(), "guarded", 1, 10..20);
    assert_eq!(
        consume_all(&cluster.bootstrap(), "guarded", 1, 20).len(),
        20
    );
}

const BENCH_RF3: &str = "
name: cluster short fixed rate
topics: 1
partitionsPerTopic: 8
messageSize: 512
keyDistributor: NO_KEY
subscriptionsPerTopic: 1
producersPerTopic: 1
consumerPerSubscription: 2
producerRate: 2000
warmupDurationMinutes: 0
testDurationMinutes: 1
driver:
  acks: all
  lingerMs: 1
  batchSizeBytes: 16384
  replicationFactor: 1
  topicConfig:
    min.insync.replicas: \"2\"
";

/// `tern bench run --rf 3` against three nodes: the topic's partitions are led by several
/// nodes, each produced to and fetched from through its leader; every acknowledged record
/// is consumed; each node's CPU is reported. Wrong inputs are refused with their reason.
#[test]
fn bench_runs_against_a_cluster() {
    let cluster = Cluster::start(3, 0);
    cluster.wait_ready();
    let dir = tempfile::tempdir().unwrap();
    let workload = dir.path().join("w.yaml");
    std::fs::write(&workload, BENCH_RF3).unwrap();
    let json = dir.path().join("r.json");
    let pids = cluster
        .nodes
        .values()
        .map(|b| b.pid().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let bench = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["bench", "run", "--workload"])
            .arg(&workload)
            .args(["--broker", &cluster.nodes[&1].addr(), "--duration-s", "3"])
            .args(["--window-s", "1", "--keep-topics", "--json"])
            .arg(&json)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = bench(&["--rf", "3", "--broker-pid", &pids]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tern bench run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let n = |k: &str| {
        r[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {r:#}"))
    };
    assert!(n("records_acked") > 0.0);
    assert_eq!(n("records_publish_errors"), 0.0, "{stdout}");
    assert_eq!(n("records_acked"), n("records_created"), "{stdout}");
    assert_eq!(n("records_consumed"), n("records_consumed_expected"));
    assert_eq!(n("records_consumed"), n("records_acked"));
    assert_eq!(
        r["workload"]["driver"]["replicationFactor"].as_u64(),
        Some(3)
    );
    // The run's topic: three replicas each, leaders on more than one node.
    let m = metadata(&cluster.nodes[&1], None);
    let topic = m
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.as_str().to_owned()))
        .find(|n| n.starts_with("tern-bench-"))
        .expect("the run's topic was kept");
    let leaders: BTreeSet<i32> = leaders(&m, &topic).into_iter().collect();
    assert!(leaders.len() > 1, "leaders {leaders:?}");
    assert!(isrs(&m, &topic).iter().all(|r| r.len() == 3), "{m:?}");
    // Each node's CPU, and their sum.
    let nodes = r["node_cpu"].as_array().expect("node_cpu");
    assert_eq!(nodes.len(), 3, "{r:#}");
    let sum: f64 = nodes.iter().map(|c| c["cores"].as_f64().unwrap()).sum();
    let total = r["broker_cpu"]["cores"].as_f64().unwrap();
    assert!(total > 0.0 && (total - sum).abs() < 1e-9, "{r:#}");
    assert!(stdout.contains("node pid"), "{stdout}");

    // The suite against the same cluster: one standard workload, RF 3, each node's CPU.
    let out_dir = dir.path().join("suite");
    // The disk baseline writes with O_DIRECT: on the real disk, under target/.
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data_dir = disk.path().join("suite-data");
    let suite = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["bench", "suite", "--quick", "--duration-s", "2"])
            .args(["--only", "latency-20mb-1kb-8p"])
            .arg("--out")
            .arg(&out_dir)
            .arg("--dir")
            .arg(&data_dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let broker = cluster.nodes[&1].addr();
    let out = suite(&["--broker", &broker, "--broker-pid", &pids, "--rf", "3"]);
    assert!(
        out.status.success(),
        "tern bench suite failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out_dir.join("summary.md").exists());
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("latency-20mb-1kb-8p.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(r["records_publish_errors"].as_f64(), Some(0.0), "{r:#}");
    assert_eq!(r["records_acked"], r["records_created"], "{r:#}");
    assert_eq!(r["records_consumed"], r["records_acked"], "{r:#}");
    assert_eq!(
        r["workload"]["driver"]["replicationFactor"].as_u64(),
        Some(3)
    );
    assert_eq!(r["node_cpu"].as_array().map(Vec::len), Some(3), "{r:#}");
    let err = suite(&["--broker-pid", &pids]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("--broker"));

    // Wrong inputs: more replicas than brokers, a replication factor of 0, a pid that is
    // not there.
    let out = bench(&["--rf", "4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.to_lowercase().contains("replication"), "{err}");
    let out = bench(&["--rf", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rf"));
    let out = bench(&["--broker-pid", &format!("{pids},999999999")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--broker-pid 999999999"));
}

/// Guards a follower whose log ends below its leader's log start (records were deleted on
/// the leader while it was down): it starts its log again at the leader's start (at the
/// base of the leader's batch holding it), catches up and rejoins the ISR; the records from
/// the start on are served after the leader's loss.
#[test]
fn a_follower_behind_the_leaders_log_start_starts_again_there() {
    use rdkafka::admin::AdminOptions;
    let mut cluster = Cluster::replicated("behind", 1, 1);
    let m = metadata(&cluster.nodes[&1], Some(&["behind"]));
    let leader = leaders(&m, "behind")[0];
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    produce_range(&cluster.bootstrap(), "behind", 1, 0..10);
    wait_for("every replica in sync", || {
        cluster.isr_full(leader, "behind")
    });
    cluster.nodes.get_mut(&follower).unwrap().kill9();
    let others = cluster.bootstrap_without(follower);
    // acks=all is answered once the dead follower has left the ISR (min ISR 1).
    produce_range(&others, "behind", 1, 10..100);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &others)
        .create()
        .unwrap();
    let mut upto = TopicPartitionList::new();
    upto.add_partition_offset("behind", 0, Offset::Offset(80))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let deleted = rt.block_on(admin.delete_records(&upto, &opts)).unwrap();
    assert!(
        deleted.elements().iter().all(|e| e.error().is_ok()),
        "{deleted:?}"
    );

    cluster.nodes.get_mut(&follower).unwrap().restart();
    let deadline = Instant::now() + DEADLINE;
    while !cluster.isr_full(leader, "behind") {
        assert!(
            Instant::now() < deadline,
            "the follower is not back in the ISR; its log:\n{}",
            cluster.nodes[&follower].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = cluster.nodes[&follower].data_dir().join("behind-0");
    // Its old log (from offset 0) is gone: it starts at the leader's batch holding 80.
    let first_base: i64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".log")?.parse().ok())
        .min()
        .unwrap();
    assert!(
        (10..=80).contains(&first_base),
        "first segment {first_base} in {}",
        dir.display()
    );

    // The leader goes; whoever leads next serves offsets 80..100.
    cluster.nodes.get_mut(&leader).unwrap().kill9();
    let live = cluster.bootstrap_without(leader);
    wait_for("a new leader", || {
        let m = metadata(&cluster.nodes[&follower], Some(&["behind"]));
        leaders(&m, "behind").iter().all(|l| *l > 0 && *l != leader)
    });
    let got = consume_all(&live, "behind", 1, 20);
    let want: BTreeSet<String> = (80..100).map(|i| format!("0-{i}")).collect();
    assert_eq!(got, want);
}

/// Delivery reports of the churn test's producer: (partition, offset, value) of each
/// acknowledged record, and the failures.
#[derive(Default, Clone)]
struct Acks {
    acked: std::sync::Arc<std::sync::Mutex<Vec<(i32, i64, String)>>>,
    failed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl rdkafka::ClientContext for Acks {}

impl rdkafka::producer::ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                self.acked
                    .lock()
                    .unwrap()
                    .push((m.partition(), m.offset(), value));
            }
            Err((e, _)) => self.failed.lock().unwrap().push(e.to_string()),
        }
    }
}

/// Every record of `topic`'s partitions from the start to their high watermark, as
/// (partition, offset, value).
fn read_to_end(bootstrap: &str, topic: &str, partitions: i32) -> Vec<(i32, i64, String)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut high = BTreeMap::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        let (_, h) = c
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .unwrap();
        high.insert(p, h);
    }
    c.assign(&tpl).unwrap();
    let mut next: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    let mut out = Vec::new();
    let start = Instant::now();
    while next.iter().any(|(p, n)| *n < high[p]) {
        assert!(
            start.elapsed() < DEADLINE,
            "read up to {next:?} of {high:?}"
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            next.insert(m.partition(), m.offset() + 1);
            out.push((m.partition(), m.offset(), value));
        }
    }
    out
}

/// Guards exactly-once per partition across leader changes: an idempotent acks=all
/// producer writes numbered records at a fixed rate while a partition's leader is
/// SIGKILLed and restarted, `TERN_CHURN_ROUNDS` times (10 by default); afterwards every
/// acknowledged record is in the log at its acknowledged offset, once; no record is there
/// twice or out of its partition's order; nothing is there that was not sent.
#[test]
fn leader_kills_under_load_lose_and_duplicate_nothing() {
    let rounds: usize = std::env::var("TERN_CHURN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut cluster = Cluster::replicated("churn", 2, 2);
    let bootstrap = cluster.bootstrap();
    let acks = Acks::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let producer = {
        let (acks, stop, sent) = (acks.clone(), stop.clone(), sent.clone());
        let bootstrap = bootstrap.clone();
        std::thread::spawn(move || {
            let p: ThreadedProducer<Acks> = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("acks", "all")
                .set("enable.idempotence", "true")
                .set("linger.ms", "2")
                .set("message.timeout.ms", "120000")
                .create_with_context(acks)
                .unwrap();
            // 200 records/s, alternating partitions, each numbered in its partition.
            let mut i = 0usize;
            let begin = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let due = begin + Duration::from_millis(5 * i as u64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let part = (i % 2) as i32;
                let value = format!("{part}-{}", i / 2);
                p.send(
                    BaseRecord::<(), String>::to("churn")
                        .partition(part)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .unwrap();
                i += 1;
                sent.store(i, std::sync::atomic::Ordering::Release);
            }
            p.flush(Duration::from_secs(120)).unwrap();
        })
    };
    let acked_now = || acks.acked.lock().unwrap().len();
    for round in 0..rounds {
        let part = round % 2;
        let m = metadata(&cluster.nodes[&1], Some(&["churn"]));
        let old = leaders(&m, "churn")[part];
        assert!(old > 0, "round {round}: no leader in {m:?}");
        let before = acked_now();
        cluster.nodes.get_mut(&old).unwrap().kill9();
        let other = *cluster.nodes.keys().find(|id| **id != old).unwrap();
        wait_for("a new leader", || {
            let m = metadata(&cluster.nodes[&other], Some(&["churn"]));
            leaders(&m, "churn").iter().all(|l| *l > 0 && *l != old)
        });
        wait_for("acknowledgements from the new leaders", || {
            acked_now() > before + 100
        });
        cluster.nodes.get_mut(&old).unwrap().restart();
        let deadline = Instant::now() + DEADLINE;
        while !cluster.isr_full(other, "churn") {
            if Instant::now() > deadline {
                let m = metadata(&cluster.nodes[&other], Some(&["churn"]));
                let logs: Vec<String> = cluster
                    .nodes
                    .iter()
                    .map(|(id, b)| {
                        let epochs: Vec<String> = (0..2)
                            .map(|p| {
                                let f = b
                                    .data_dir()
                                    .join(format!("churn-{p}/leader-epoch.checkpoint"));
                                let c = std::fs::read(&f)
                                    .ok()
                                    .and_then(|d| tern_engine::epoch::decode(&d).ok());
                                format!("churn-{p} epochs {:?}", c.map(|c| c.entries().to_vec()))
                            })
                            .collect();
                        format!("--- node {id}: {epochs:?}\n{}", b.log())
                    })
                    .collect();
                panic!(
                    "round {round}: node {old} not back in sync: {:?}\n{}",
                    isrs(&m, "churn"),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    producer.join().unwrap();
    let failed = acks.failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "deliveries failed: {failed:?}");
    let acked = acks.acked.lock().unwrap().clone();
    let sent = sent.load(std::sync::atomic::Ordering::Acquire);
    assert_eq!(acked.len(), sent, "every record sent was acknowledged");

    let log = read_to_end(&bootstrap, "churn", 2);
    let at: BTreeMap<(i32, i64), &str> =
        log.iter().map(|(p, o, v)| ((*p, *o), v.as_str())).collect();
    for (p, o, v) in &acked {
        assert_eq!(
            at.get(&(*p, *o)),
            Some(&v.as_str()),
            "acknowledged {v} at {p}/{o}"
        );
    }
    let mut seen = BTreeSet::new();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o, v) in &log {
        assert!(seen.insert(v.clone()), "{v} twice (again at {p}/{o})");
        let (vp, n) = v.split_once('-').unwrap();
        let n: i64 = n.parse().unwrap();
        assert_eq!(vp, p.to_string(), "{v} in partition {p}");
        assert!(n * 2 + i64::from(*p) < sent as i64, "{v} was never sent");
        let prev = last.insert(*p, n);
        assert!(
            prev.is_none_or(|x| x < n),
            "{v} at {p}/{o} after {prev:?}: out of order"
        );
    }
    assert_eq!(log.len(), sent, "the log holds exactly what was sent");
}
