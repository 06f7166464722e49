//! What the client commands (`topic`, `produce`, `consume`) share: the `--bootstrap-server`
//! option, a view of the cluster with one connection per broker, topic metadata, and Kafka
//! error codes turned into readable text.
//!
//! The commands speak only the Kafka protocol (through [`tern_net::client::Client`]), so they
//! work against any Kafka-compatible broker. Like the Java client they send Produce, Fetch and
//! ListOffsets to each partition's leader and admin requests to the controller named in the
//! metadata; with one broker all of these are the bootstrap broker.

use std::collections::{BTreeMap, HashMap};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use tern_net::client::Client;

/// How long connecting to a broker may take.
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How long a request may wait for its response (admin requests wait for the broker's work).
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// The `timeout_ms` the admin requests and Produce carry for the broker.
pub const BROKER_TIMEOUT_MS: i32 = 30_000;
/// How long to wait for a topic's metadata to settle (just created, leader being elected).
const METADATA_WAIT_MS_MAX: u64 = 10_000;
/// Pause between two tries of a retriable request.
pub const RETRY_BACKOFF_MS: u64 = 100;

/// Versions of Metadata we speak (v0 would read an empty topic list as "all topics").
const METADATA_VERSIONS: (i16, i16) = (1, 12);

/// The broker to start from.
#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    /// Broker to connect to first, HOST:PORT (a comma-separated list is tried in order); the
    /// other brokers are found through its metadata.
    #[arg(
        long = "bootstrap-server",
        short = 'b',
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap_server: String,
}

/// One partition as the metadata describes it.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub index: i32,
    /// Broker id of the leader, -1 if there is none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

/// One topic as the metadata describes it.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    /// The topic id, when the broker's Metadata version carries one.
    pub id: Option<String>,
    pub internal: bool,
    /// Sorted by index.
    pub partitions: Vec<PartitionInfo>,
}

/// The cluster seen from the bootstrap broker: its brokers and a connection to each one used.
#[derive(Debug)]
pub struct Cluster {
    bootstrap: Client,
    brokers: BTreeMap<i32, String>,
    controller_id: i32,
    conns: HashMap<i32, Client>,
}

impl Cluster {
    /// Connects to the first reachable bootstrap broker and reads the cluster's brokers.
    pub fn connect(args: &BootstrapArgs) -> anyhow::Result<Cluster> {
        let mut last = None;
        for addr in args.bootstrap_server.split(',').map(str::trim) {
            if addr.is_empty() {
                continue;
            }
            match connect(addr) {
                Ok(c) => {
                    let mut cluster = Cluster {
                        bootstrap: c,
                        brokers: BTreeMap::new(),
                        controller_id: -1,
                        conns: HashMap::new(),
                    };
                    cluster.metadata(Some(&[]), false)?;
                    return Ok(cluster);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("--bootstrap-server: no address given")))
    }

    /// The connection to the bootstrap broker.
    pub fn bootstrap(&mut self) -> &mut Client {
        &mut self.bootstrap
    }

    /// Asks the bootstrap broker for metadata of `topics` (`None`: all topics) and refreshes
    /// the broker list from the answer.
    pub fn metadata(
        &mut self,
        topics: Option<&[&str]>,
        auto_create: bool,
    ) -> anyhow::Result<MetadataResponse> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(auto_create);
        let (lo, hi) = METADATA_VERSIONS;
        let resp: MetadataResponse = call(&mut self.bootstrap, ApiKey::Metadata, lo, hi, &req)?;
        self.brokers = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        self.controller_id = resp.controller_id.0;
        Ok(resp)
    }

    /// The connection to broker `node`, opened on first use.
    pub fn broker(&mut self, node: i32) -> anyhow::Result<&mut Client> {
        use std::collections::hash_map::Entry;
        match self.conns.entry(node) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let Some(addr) = self.brokers.get(&node) else {
                    bail!("broker {node} is not in the cluster's metadata");
                };
                Ok(e.insert(connect(addr)?))
            }
        }
    }

    /// The connection for admin requests: the controller the metadata names, or the
    /// bootstrap broker when none is named or it cannot be reached (a broker that is not the
    /// controller then answers NOT_CONTROLLER, which is reported).
    pub fn controller(&mut self) -> &mut Client {
        let id = self.controller_id;
        if id >= 0 && self.brokers.contains_key(&id) && self.broker(id).is_ok() {
            if let Some(c) = self.conns.get_mut(&id) {
                return c;
            }
        }
        &mut self.bootstrap
    }

    /// Metadata of one topic. With `auto_create`, asks the broker to create it if it is
    /// missing. Waits (bounded) until the topic has partitions that all have a leader, as
    /// brokers answer LEADER_NOT_AVAILABLE for a moment after creating a topic.
    pub fn topic(&mut self, name: &str, auto_create: bool) -> anyhow::Result<TopicInfo> {
        let deadline = Instant::now() + Duration::from_millis(METADATA_WAIT_MS_MAX);
        loop {
            let resp = self.metadata(Some(&[name]), auto_create)?;
            let t = resp
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name))
                .ok_or_else(|| anyhow!("the broker's metadata has no entry for topic {name:?}"))?;
            let code = t.error_code;
            let pending = match ResponseError::try_from_code(code) {
                None => t.partitions.is_empty() || t.partitions.iter().any(|p| p.leader_id.0 < 0),
                Some(ResponseError::UnknownTopicOrPartition) if auto_create => {
                    bail!("topic {name:?} does not exist and the broker did not create it")
                }
                Some(ResponseError::UnknownTopicOrPartition) => {
                    bail!("topic {name:?} does not exist")
                }
                Some(ResponseError::InvalidTopicException) => {
                    bail!("{name:?} is not a valid topic name")
                }
                Some(e) if e.is_retriable() => true,
                Some(_) => bail!("topic {name:?}: {}", error_text(code, None)),
            };
            if !pending {
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions
                    .iter()
                    .map(|p| PartitionInfo {
                        index: p.partition_index,
                        leader: p.leader_id.0,
                        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        error_code: p.error_code,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.index);
                return Ok(TopicInfo {
                    name: name.to_string(),
                    id: (!t.topic_id.is_nil()).then(|| t.topic_id.to_string()),
                    internal: t.is_internal,
                    partitions,
                });
            }
            if Instant::now() >= deadline {
                let why = if code != 0 {
                    error_text(code, None)
                } else {
                    "some partitions have no leader".to_string()
                };
                bail!("topic {name:?} is not ready after {METADATA_WAIT_MS_MAX} ms: {why}");
            }
            thread::sleep(Duration::from_millis(RETRY_BACKOFF_MS));
        }
    }
}

fn connect(addr: &str) -> anyhow::Result<Client> {
    let mut c = Client::connect(addr, Duration::from_millis(CONNECT_TIMEOUT_MS))
        .map_err(anyhow::Error::from)?;
    c.set_timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .map_err(anyhow::Error::from)?;
    Ok(c)
}

/// The highest version of `api` in `min..=max` that the broker supports.
pub fn version(client: &Client, api: ApiKey, min: i16, max: i16) -> anyhow::Result<i16> {
    client.version(api, min, max).map_err(anyhow::Error::from)
}

/// Sends `req` as `api` version `v` and waits for the response.
pub fn request<Req: Encodable, Resp: Decodable>(
    client: &mut Client,
    api: ApiKey,
    v: i16,
    req: &Req,
) -> anyhow::Result<Resp> {
    client
        .request(api, v, req)
        .map_err(|e| anyhow::Error::from(e).context(format!("{api:?}")))
}

/// Sends a request that gets no response (Produce with acks=0).
pub fn send_only<Req: Encodable>(
    client: &mut Client,
    api: ApiKey,
    v: i16,
    req: &Req,
) -> anyhow::Result<()> {
    client
        .send_only(api, v, req)
        .map_err(|e| anyhow::Error::from(e).context(format!("{api:?}")))
}

/// Sends `req` as the highest version of `api` in `min..=max` the broker supports.
pub fn call<Req: Encodable, Resp: Decodable>(
    client: &mut Client,
    api: ApiKey,
    min: i16,
    max: i16,
    req: &Req,
) -> anyhow::Result<Resp> {
    let v = version(client, api, min, max)?;
    request(client, api, v, req)
}

/// A topic name for a request.
pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A Kafka error code by its protocol name (`UNKNOWN_TOPIC_OR_PARTITION`), with the broker's
/// message when it sent one.
pub fn error_text(code: i16, message: Option<&StrBytes>) -> String {
    let name = match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("error code {c}"),
        Some(e) => screaming_snake(&format!("{e:?}")),
    };
    match message.map(|m| m.as_str().trim()) {
        Some(m) if !m.is_empty() => format!("{name}: {m}"),
        _ => name,
    }
}

/// `UnknownTopicOrPartition` → `UNKNOWN_TOPIC_OR_PARTITION`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Refuses a `--partition` that `topic`, with `count` partitions, does not have.
pub fn check_partition(topic: &str, partition: i32, count: usize) -> anyhow::Result<()> {
    if partition < 0 || partition as usize >= count {
        let range = if count > 1 {
            format!(" (0 to {})", count - 1)
        } else {
            String::new()
        };
        bail!(
            "--partition {partition}: topic {topic:?} has {}{range}",
            plural(count as u64, "partition")
        );
    }
    Ok(())
}

/// `1 record`, `2 records`, `2 batches`.
pub fn plural(n: u64, noun: &str) -> String {
    match (n, noun.ends_with('h')) {
        (1, _) => format!("{n} {noun}"),
        (_, true) => format!("{n} {noun}es"),
        (_, false) => format!("{n} {noun}s"),
    }
}

/// Rows as text columns separated by two spaces; the last column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the error names the commands print: Kafka's own spelling.
    #[test]
    fn error_names() {
        assert_eq!(error_text(3, None), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_text(17, None), "INVALID_TOPIC_EXCEPTION");
        let msg = StrBytes::from_static_str("topic 'x' already exists");
        assert_eq!(
            error_text(36, Some(&msg)),
            "TOPIC_ALREADY_EXISTS: topic 'x' already exists"
        );
        assert_eq!(error_text(-1, None), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_text(9999, None), "error code 9999");
    }

    /// Guards the column layout of the describe output.
    #[test]
    fn table_columns() {
        let rows = vec![
            vec!["A".to_string(), "BB".to_string(), "C".to_string()],
            vec!["long".to_string(), "x".to_string(), "".to_string()],
        ];
        assert_eq!(table(&rows), "A     BB  C\nlong  x\n");
    }
}
