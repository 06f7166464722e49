//! What the run asks the cluster itself (over the Kafka protocol, with Tern's own small
//! client): the metadata (leaders, ISRs, the controller) and topic creation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tern_net::client::Client;

use crate::error::ChaosError;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Kafka's TOPIC_ALREADY_EXISTS.
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// The cluster as one node's metadata shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The node that answered.
    pub from: u32,
    /// The controller it names (-1: none).
    pub controller: i32,
    /// The brokers it lists.
    pub brokers: Vec<i32>,
    /// (topic, partition) → (leader, ISR).
    pub partitions: BTreeMap<(String, i32), (i32, Vec<i32>)>,
}

impl ClusterView {
    /// Whether every partition of `topics` has a leader and all `replicas` in its ISR.
    pub fn healthy(&self, topics: &[(&str, i32)], replicas: usize) -> bool {
        topics.iter().all(|(t, n)| {
            (0..*n).all(|p| {
                self.partitions
                    .get(&(t.to_string(), p))
                    .is_some_and(|(leader, isr)| *leader >= 0 && isr.len() >= replicas)
            })
        })
    }

    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.partitions
            .get(&(topic.to_string(), partition))
            .map(|(l, _)| *l)
            .filter(|l| *l >= 0)
    }
}

fn client_error(e: impl std::fmt::Display) -> ChaosError {
    ChaosError::Client(e.to_string())
}

fn metadata_of(addr: &str, topics: &[&str]) -> Result<MetadataResponse, ChaosError> {
    let mut c = Client::connect(addr, REQUEST_TIMEOUT).map_err(client_error)?;
    let v = c.version(ApiKey::Metadata, 1, 12).map_err(client_error)?;
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(
            topics
                .iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))
                })
                .collect(),
        ));
    c.request(ApiKey::Metadata, v, &req).map_err(client_error)
}

/// The metadata of `topics` from the first of `nodes` ((id, address)) that answers.
pub fn view(nodes: &[(u32, String)], topics: &[&str]) -> Result<ClusterView, ChaosError> {
    let mut last = ChaosError::Client("no node to ask".into());
    for (id, addr) in nodes {
        match metadata_of(addr, topics) {
            Ok(m) => {
                let mut v = ClusterView {
                    from: *id,
                    controller: m.controller_id.0,
                    brokers: m.brokers.iter().map(|b| b.node_id.0).collect(),
                    partitions: BTreeMap::new(),
                };
                for t in &m.topics {
                    let Some(name) = &t.name else { continue };
                    for p in &t.partitions {
                        v.partitions.insert(
                            (name.to_string(), p.partition_index),
                            (p.leader_id.0, p.isr_nodes.iter().map(|n| n.0).collect()),
                        );
                    }
                }
                return Ok(v);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Creates `topic` (or finds it already there), retrying through the controller until
/// `deadline`.
pub fn create_topic(
    nodes: &[(u32, String)],
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
    deadline: Duration,
) -> Result<(), ChaosError> {
    let end = Instant::now() + deadline;
    let mut last = String::new();
    while Instant::now() < end {
        let controller = view(nodes, &[]).map(|v| v.controller).unwrap_or(-1);
        let addr = nodes
            .iter()
            .find(|(id, _)| *id as i32 == controller)
            .map(|(_, a)| a.clone());
        if let Some(addr) = addr {
            match create_at(&addr, topic, partitions, replication_factor, configs) {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        } else {
            last = "no controller yet".into();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(ChaosError::Timeout {
        what: format!("topic {topic} to be created ({last})"),
        after_ms: deadline.as_millis() as u64,
    })
}

fn create_at(
    addr: &str,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) -> Result<(), ChaosError> {
    let mut c = Client::connect(addr, REQUEST_TIMEOUT).map_err(client_error)?;
    let v = c
        .version(ApiKey::CreateTopics, 2, 7)
        .map_err(client_error)?;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(tern_net::client::topic_configs(
                configs.iter().copied(),
            ))])
        .with_timeout_ms(REQUEST_TIMEOUT.as_millis() as i32);
    let resp: CreateTopicsResponse = c
        .request(ApiKey::CreateTopics, v, &req)
        .map_err(client_error)?;
    match resp.topics.first().map(|t| t.error_code) {
        Some(0) | Some(TOPIC_ALREADY_EXISTS) => Ok(()),
        Some(code) => Err(ChaosError::Client(format!(
            "CreateTopics {topic}: error {code}"
        ))),
        None => Err(ChaosError::Client(format!(
            "CreateTopics {topic}: no result"
        ))),
    }
}
