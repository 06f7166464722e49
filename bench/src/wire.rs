//! The Kafka protocol side of the harness: admin calls, a pipelined Produce connection and
//! the Fetch record walker. Everything is encoded and decoded with `kafka-protocol`, so the
//! harness drives any Kafka-compatible broker, not only Tern.
//!
//! Admin calls (Metadata, CreateTopics, DeleteTopics) go through the blocking
//! [`tern_net::client::Client`], one at a time. Produce needs pipelining, which that client
//! does not do: a [`ProduceConn`] writes requests from the producer's thread and a reader
//! thread takes the responses, in order (Kafka answers a connection's requests in the order
//! they came), with at most `max_in_flight` requests outstanding.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use tern_net::client::{Client, ClientError};

use crate::batcher::{SealedBatch, SEND_TIME_BYTES};
use crate::producer::Sink;
use crate::stats::{record_ns, Recorder};
use tern_engine::batch::HEADER_BYTES;

/// How long connecting may take.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How long a response may take (a Produce waits for the broker's fsync).
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// How long a new topic may take to have a leader for every partition.
const TOPIC_READY_MS_MAX: u64 = 30_000;
/// The `timeout_ms` of Produce and admin requests, for the broker.
const BROKER_TIMEOUT_MS: i32 = 30_000;
/// Largest response frame accepted.
const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// Versions we speak: Produce v3 (RecordBatch v2) to v9 (v10+ are the same on the wire for
/// us but not offered by every broker), Fetch v4 to v12 (v13 names topics by id).
const PRODUCE_VERSIONS: (i16, i16) = (3, 9);
const FETCH_VERSIONS: (i16, i16) = (4, 12);
const METADATA_VERSIONS: (i16, i16) = (1, 12);
const CREATE_TOPICS_VERSIONS: (i16, i16) = (2, 7);
const DELETE_TOPICS_VERSIONS: (i16, i16) = (1, 6);

/// Why talking to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{addr}: {cause}")]
    Io { addr: String, cause: io::Error },
    #[error("{api:?}: cannot encode or decode: {reason}")]
    Codec { api: ApiKey, reason: String },
    #[error("{what}: {code}")]
    Kafka { what: String, code: String },
    #[error("topic {topic:?}: {reason}")]
    Topic { topic: String, reason: String },
}

/// A Kafka error code by name, with the broker's message.
pub fn error_text(code: i16, message: Option<&StrBytes>) -> String {
    let name = match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(e) => format!("{e:?}"),
    };
    match message.map(|m| m.as_str().trim()) {
        Some(m) if !m.is_empty() => format!("{name} ({code}): {m}"),
        _ => format!("{name} ({code})"),
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Connects a blocking admin client.
pub fn admin(addr: &str) -> Result<Client, WireError> {
    let mut c = Client::connect(addr, Duration::from_millis(CONNECT_TIMEOUT_MS))?;
    c.set_timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))?;
    Ok(c)
}

fn call<Req: Encodable, Resp: Decodable>(
    c: &mut Client,
    api: ApiKey,
    (lo, hi): (i16, i16),
    req: &Req,
) -> Result<Resp, WireError> {
    let v = c.version(api, lo, hi)?;
    Ok(c.request(api, v, req)?)
}

/// One topic's partition leaders, as addresses.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub name: String,
    /// Leader address of each partition, by index.
    pub leaders: Vec<String>,
}

/// Creates `name` and waits until every partition has a leader.
pub fn create_topic(
    c: &mut Client,
    name: &str,
    partitions: u32,
    replication_factor: u16,
    configs: &std::collections::BTreeMap<String, String>,
) -> Result<TopicLayout, WireError> {
    let configs = tern_net::client::topic_configs(configs);
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions as i32)
            .with_replication_factor(replication_factor as i16)
            .with_configs(configs)])
        .with_timeout_ms(BROKER_TIMEOUT_MS);
    let resp: CreateTopicsResponse = call(c, ApiKey::CreateTopics, CREATE_TOPICS_VERSIONS, &req)?;
    for t in &resp.topics {
        if t.error_code != 0 {
            return Err(WireError::Kafka {
                what: format!("CreateTopics {name:?}"),
                code: error_text(t.error_code, t.error_message.as_ref()),
            });
        }
    }
    let layout = wait_for_leaders(c, name, partitions)?;
    wait_until_served(&layout)?;
    Ok(layout)
}

/// `partitions` grouped by their leader's address (`leaders[p]`), leaders in order of
/// first appearance: one connection per leader serves each group.
pub fn by_leader(
    leaders: &[String],
    partitions: impl IntoIterator<Item = i32>,
) -> Vec<(&String, Vec<i32>)> {
    let mut groups: Vec<(&String, Vec<i32>)> = Vec::new();
    for p in partitions {
        let leader = &leaders[p as usize];
        match groups.iter_mut().find(|(l, _)| *l == leader) {
            Some((_, ps)) => ps.push(p),
            None => groups.push((leader, vec![p])),
        }
    }
    groups
}

/// Waits until every partition's leader serves it: a new topic's leader may still be
/// taking the leadership (NOT_LEADER_OR_FOLLOWER for a moment in a cluster), and the run
/// must not count that as its errors. Bounded like the wait for leaders.
pub fn wait_until_served(layout: &TopicLayout) -> Result<(), WireError> {
    let deadline = Instant::now() + Duration::from_millis(TOPIC_READY_MS_MAX);
    let all = (0..layout.leaders.len()).map(|p| p as i32);
    for (leader, partitions) in by_leader(&layout.leaders, all) {
        let mut conn = FetchConn::connect(leader, &layout.name, partitions, 0, 0)?;
        loop {
            match conn.probe()? {
                None => break,
                Some(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Some(code) => {
                    return Err(WireError::Topic {
                        topic: layout.name.clone(),
                        reason: format!(
                            "{leader} does not serve it after {TOPIC_READY_MS_MAX} ms: {}",
                            error_text(code, None)
                        ),
                    })
                }
            }
        }
    }
    Ok(())
}

/// Polls Metadata until every partition of `name` has a leader (bounded).
pub fn wait_for_leaders(
    c: &mut Client,
    name: &str,
    partitions: u32,
) -> Result<TopicLayout, WireError> {
    let deadline = Instant::now() + Duration::from_millis(TOPIC_READY_MS_MAX);
    loop {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(name)))
            ]))
            .with_allow_auto_topic_creation(false);
        let resp: MetadataResponse = call(c, ApiKey::Metadata, METADATA_VERSIONS, &req)?;
        let brokers: HashMap<i32, String> = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        let mut leaders = vec![String::new(); partitions as usize];
        let mut missing = partitions as usize;
        if let Some(t) = resp
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name))
        {
            for p in &t.partitions {
                let slot = usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| leaders.get_mut(i));
                if let (Some(slot), Some(addr)) = (slot, brokers.get(&p.leader_id.0)) {
                    if slot.is_empty() {
                        *slot = addr.clone();
                        missing -= 1;
                    }
                }
            }
        }
        if missing == 0 {
            return Ok(TopicLayout {
                name: name.to_string(),
                leaders,
            });
        }
        if Instant::now() >= deadline {
            return Err(WireError::Topic {
                topic: name.to_string(),
                reason: format!(
                    "{missing} of {partitions} partitions have no leader \
                     after {TOPIC_READY_MS_MAX} ms"
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes `name`.
pub fn delete_topic(c: &mut Client, name: &str) -> Result<(), WireError> {
    let v = c.version(
        ApiKey::DeleteTopics,
        DELETE_TOPICS_VERSIONS.0,
        DELETE_TOPICS_VERSIONS.1,
    )?;
    let mut req = DeleteTopicsRequest::default().with_timeout_ms(BROKER_TIMEOUT_MS);
    if v >= 6 {
        req.topics = vec![DeleteTopicState::default().with_name(Some(topic_name(name)))];
    } else {
        req.topic_names = vec![topic_name(name)];
    }
    let resp: DeleteTopicsResponse = c.request(ApiKey::DeleteTopics, v, &req)?;
    match resp.responses.iter().find(|r| r.error_code != 0) {
        Some(r) => Err(WireError::Kafka {
            what: format!("DeleteTopics {name:?}"),
            code: error_text(r.error_code, r.error_message.as_ref()),
        }),
        None => Ok(()),
    }
}

/// One request in flight: what its response acknowledges.
#[derive(Debug)]
struct InFlight {
    correlation_id: i32,
    version: i16,
    /// (intended send times, batch bytes) per batch.
    batches: Vec<(Vec<u64>, u64)>,
}

/// A pipelined Produce connection: the producer thread writes, a reader thread records the
/// acknowledgements into the recorder.
#[derive(Debug)]
pub struct ProduceConn {
    stream: TcpStream,
    addr: String,
    topic: TopicName,
    acks: i16,
    version: i16,
    next_correlation_id: i32,
    frame: BytesMut,
    /// `None` with acks=0 (no responses).
    window: Option<SyncSender<InFlight>>,
    reader: Option<JoinHandle<Result<(), WireError>>>,
    recorder: std::sync::Arc<Recorder>,
    clock: crate::run::RunClock,
}

impl ProduceConn {
    /// Connects to `addr` for producing to `topic`, with up to `max_in_flight` requests
    /// outstanding.
    pub fn connect(
        addr: &str,
        topic: &str,
        acks: i16,
        max_in_flight: u32,
        recorder: std::sync::Arc<Recorder>,
        clock: crate::run::RunClock,
    ) -> Result<ProduceConn, WireError> {
        // Version negotiation on its own connection, then a plain socket for pipelining.
        let version = {
            let c = admin(addr)?;
            c.version(ApiKey::Produce, PRODUCE_VERSIONS.0, PRODUCE_VERSIONS.1)?
        };
        let io = |cause| WireError::Io {
            addr: addr.to_string(),
            cause,
        };
        let sock = addr
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| io(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
        let stream = TcpStream::connect_timeout(&sock, Duration::from_millis(CONNECT_TIMEOUT_MS))
            .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
            .map_err(io)?;
        let (window, reader) = if acks == 0 {
            (None, None)
        } else {
            // The reader holds one request while waiting for its response: max_in_flight - 1
            // more may wait in the channel.
            let (tx, rx) = sync_channel((max_in_flight as usize).saturating_sub(1));
            let read_stream = stream.try_clone().map_err(io)?;
            let (addr2, rec, clk) = (addr.to_string(), std::sync::Arc::clone(&recorder), clock);
            let handle = std::thread::Builder::new()
                .name("bench-acks".into())
                .spawn(move || read_acks(read_stream, addr2, rx, &rec, &clk))
                .map_err(io)?;
            (Some(tx), Some(handle))
        };
        Ok(ProduceConn {
            stream,
            addr: addr.to_string(),
            topic: topic_name(topic),
            acks,
            version,
            next_correlation_id: 1,
            frame: BytesMut::with_capacity(1 << 20),
            window,
            reader,
            recorder,
            clock,
        })
    }

    /// Waits for every outstanding acknowledgement and stops the reader.
    pub fn finish(mut self) -> Result<(), WireError> {
        self.window = None;
        match self.reader.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(WireError::Io {
                addr: self.addr.clone(),
                cause: io::Error::other("the acknowledgement reader panicked"),
            }),
            None => Ok(()),
        }
    }

    fn encode(&mut self, batches: &[SealedBatch]) -> Result<i32, WireError> {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let codec = |e: anyhow::Error| WireError::Codec {
            api: ApiKey::Produce,
            reason: e.to_string(),
        };
        let data = batches
            .iter()
            .map(|b| {
                PartitionProduceData::default()
                    .with_index(b.partition as i32)
                    .with_records(Some(Bytes::copy_from_slice(&b.bytes)))
            })
            .collect();
        let req = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(BROKER_TIMEOUT_MS)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(self.topic.clone())
                .with_partition_data(data)]);
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(self.version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("tern-bench")));
        self.frame.clear();
        self.frame.extend_from_slice(&[0; 4]);
        header
            .encode(
                &mut self.frame,
                ApiKey::Produce.request_header_version(self.version),
            )
            .map_err(codec)?;
        req.encode(&mut self.frame, self.version).map_err(codec)?;
        let len = (self.frame.len() - 4) as u32;
        self.frame[..4].copy_from_slice(&len.to_be_bytes());
        Ok(id)
    }
}

impl Sink for ProduceConn {
    type Error = WireError;

    /// One Produce request for all `batches`; blocks while the window is full.
    fn send(&mut self, batches: Vec<SealedBatch>) -> Result<(), WireError> {
        let id = self.encode(&batches)?;
        let meta: Vec<(Vec<u64>, u64)> = batches
            .into_iter()
            .map(|b| (b.intended_ns, b.bytes.len() as u64))
            .collect();
        match &self.window {
            Some(tx) => {
                let inflight = InFlight {
                    correlation_id: id,
                    version: self.version,
                    batches: meta,
                };
                // The reader stopped (it failed): its error is reported by `finish`.
                if tx.send(inflight).is_err() {
                    return Err(WireError::Io {
                        addr: self.addr.clone(),
                        cause: io::Error::other("acknowledgement reader stopped"),
                    });
                }
                self.stream
                    .write_all(&self.frame)
                    .map_err(|cause| WireError::Io {
                        addr: self.addr.clone(),
                        cause,
                    })
            }
            None => {
                self.stream
                    .write_all(&self.frame)
                    .map_err(|cause| WireError::Io {
                        addr: self.addr.clone(),
                        cause,
                    })?;
                // acks=0: "acknowledged" when written.
                let now = self.clock.now_ns();
                self.recorder.with(|i| record_acked(i, &meta, now));
                Ok(())
            }
        }
    }
}

/// Producing to a topic whose partitions have several leaders: one [`ProduceConn`] per
/// leader, each batch sent to its partition's leader (a client's request per leader).
#[derive(Debug)]
pub struct RoutedProducer {
    conns: Vec<ProduceConn>,
    /// Index into `conns` of each partition's leader.
    route: Vec<usize>,
}

impl RoutedProducer {
    /// Connects to every distinct address of `leaders` (the leader of each partition, by
    /// index) for producing to `topic`.
    pub fn connect(
        leaders: &[String],
        topic: &str,
        acks: i16,
        max_in_flight: u32,
        recorder: &std::sync::Arc<Recorder>,
        clock: crate::run::RunClock,
    ) -> Result<RoutedProducer, WireError> {
        let mut addrs: Vec<&String> = Vec::new();
        let mut route = Vec::with_capacity(leaders.len());
        for l in leaders {
            let k = match addrs.iter().position(|a| *a == l) {
                Some(k) => k,
                None => {
                    addrs.push(l);
                    addrs.len() - 1
                }
            };
            route.push(k);
        }
        let conns = addrs
            .into_iter()
            .map(|a| {
                let rec = std::sync::Arc::clone(recorder);
                ProduceConn::connect(a, topic, acks, max_in_flight, rec, clock)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RoutedProducer { conns, route })
    }

    /// Waits for every connection's outstanding acknowledgements; the first error wins.
    pub fn finish(self) -> Result<(), WireError> {
        let mut first = Ok(());
        for c in self.conns {
            let r = c.finish();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Sink for RoutedProducer {
    type Error = WireError;

    /// One Produce request per leader that has batches among `batches`.
    fn send(&mut self, batches: Vec<SealedBatch>) -> Result<(), WireError> {
        if self.conns.len() == 1 {
            return self.conns[0].send(batches);
        }
        let mut per: Vec<Vec<SealedBatch>> = (0..self.conns.len()).map(|_| Vec::new()).collect();
        for b in batches {
            let k = self.route.get(b.partition as usize).copied().unwrap_or(0);
            per[k].push(b);
        }
        for (conn, batches) in self.conns.iter_mut().zip(per) {
            if !batches.is_empty() {
                conn.send(batches)?;
            }
        }
        Ok(())
    }
}

fn record_acked(i: &mut crate::stats::Interval, meta: &[(Vec<u64>, u64)], now_ns: u64) {
    for (times, bytes) in meta {
        for t in times {
            record_ns(&mut i.publish_us, now_ns.saturating_sub(*t));
        }
        i.published_records += times.len() as u64;
        i.published_bytes += bytes;
    }
}

/// The reader thread: one response per request, in order.
fn read_acks(
    mut stream: TcpStream,
    addr: String,
    rx: Receiver<InFlight>,
    recorder: &Recorder,
    clock: &crate::run::RunClock,
) -> Result<(), WireError> {
    let io = |cause| WireError::Io {
        addr: addr.clone(),
        cause,
    };
    while let Ok(req) = rx.recv() {
        let mut body = read_frame(&mut stream).map_err(io)?;
        let now = clock.now_ns();
        let codec = |e: anyhow::Error| WireError::Codec {
            api: ApiKey::Produce,
            reason: e.to_string(),
        };
        let header = ResponseHeader::decode(
            &mut body,
            ApiKey::Produce.response_header_version(req.version),
        )
        .map_err(codec)?;
        if header.correlation_id != req.correlation_id {
            return Err(WireError::Codec {
                api: ApiKey::Produce,
                reason: format!(
                    "correlation id {} where {} was expected",
                    header.correlation_id, req.correlation_id
                ),
            });
        }
        let resp = ProduceResponse::decode(&mut body, req.version).map_err(codec)?;
        let failed: usize = resp
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .filter(|p| p.error_code != 0)
            .count();
        recorder.with(|i| {
            if failed == 0 {
                record_acked(i, &req.batches, now);
            } else {
                // Which batch failed is in the response; a run with errors is reported as
                // such, so all records of the request count as failed.
                i.publish_error_records +=
                    req.batches.iter().map(|(t, _)| t.len() as u64).sum::<u64>();
            }
        });
    }
    Ok(())
}

fn read_frame(stream: &mut TcpStream) -> io::Result<Bytes> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > RESPONSE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("response of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

/// A consumer's Fetch loop over some partitions of one topic.
#[derive(Debug)]
pub struct FetchConn {
    client: Client,
    topic: TopicName,
    /// (partition, next offset).
    positions: Vec<(i32, i64)>,
    max_wait_ms: i32,
    partition_bytes_max: i32,
    version: i16,
}

/// Kafka errors a new topic's partitions answer for a short while (UNKNOWN_TOPIC_OR_PARTITION,
/// LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER).
const SETTLING_ERRORS: [i16; 3] = [3, 5, 6];

/// What one Fetch brought.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    pub records: u64,
    pub bytes: u64,
}

impl FetchConn {
    pub fn connect(
        addr: &str,
        topic: &str,
        partitions: Vec<i32>,
        max_wait_ms: u32,
        message_bytes: u64,
    ) -> Result<FetchConn, WireError> {
        let mut client = admin(addr)?;
        client.set_timeout(Duration::from_millis(
            REQUEST_TIMEOUT_MS + u64::from(max_wait_ms),
        ))?;
        let version = client.version(ApiKey::Fetch, FETCH_VERSIONS.0, FETCH_VERSIONS.1)?;
        Ok(FetchConn {
            client,
            topic: topic_name(topic),
            positions: partitions.into_iter().map(|p| (p, 0)).collect(),
            max_wait_ms: max_wait_ms as i32,
            // At least 1 MiB, and room for a few whole records.
            partition_bytes_max: (1u64 << 20)
                .max(4 * (message_bytes + 128))
                .min(i32::MAX as u64) as i32,
            version,
        })
    }

    /// One Fetch without waiting: the first error a new topic answers for a while
    /// ([`SETTLING_ERRORS`]), or `None` when every partition is served.
    fn probe(&mut self) -> Result<Option<i16>, WireError> {
        let req = self.fetch_request(|_| 0, 1, 0, 1);
        let resp: FetchResponse = self.client.request(ApiKey::Fetch, self.version, &req)?;
        Ok(resp
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.error_code)
            .find(|c| SETTLING_ERRORS.contains(c)))
    }

    /// A consumer's (sessionless) Fetch of every partition of the topic, each from
    /// `offset(its position)`.
    fn fetch_request(
        &self,
        offset: impl Fn(i64) -> i64,
        partition_max_bytes: i32,
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> FetchRequest {
        let partitions = self
            .positions
            .iter()
            .map(|(p, off)| {
                FetchPartition::default()
                    .with_partition(*p)
                    .with_fetch_offset(offset(*off))
                    .with_partition_max_bytes(partition_max_bytes)
            })
            .collect();
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(self.topic.clone())
                .with_partitions(partitions)])
    }

    /// One Fetch from every partition's position; `on_record(send_time_ns)` for each record
    /// (of batches that arrived whole; a cut one is fetched again).
    pub fn fetch(&mut self, mut on_record: impl FnMut(u64)) -> Result<Fetched, WireError> {
        let req = self.fetch_request(
            |off| off,
            self.partition_bytes_max,
            self.max_wait_ms,
            64 << 20,
        );
        let resp: FetchResponse = self.client.request(ApiKey::Fetch, self.version, &req)?;
        if resp.error_code != 0 {
            return Err(WireError::Kafka {
                what: "Fetch".into(),
                code: error_text(resp.error_code, None),
            });
        }
        let mut got = Fetched::default();
        for t in &resp.responses {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(WireError::Kafka {
                        what: format!("Fetch partition {}", p.partition_index),
                        code: error_text(p.error_code, None),
                    });
                }
                let Some(records) = &p.records else { continue };
                let Some(pos) = self
                    .positions
                    .iter_mut()
                    .find(|(i, _)| *i == p.partition_index)
                else {
                    continue;
                };
                let walked = walk_batches(records, pos.1, &mut on_record);
                pos.1 = walked.next_offset;
                got.records += walked.records;
                got.bytes += walked.bytes;
            }
        }
        Ok(got)
    }
}

/// What [`walk_batches`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    pub records: u64,
    /// Value bytes of the records counted.
    pub bytes: u64,
    pub next_offset: i64,
}

/// Walks the whole RecordBatch v2 batches of a Fetch record set, counting records at or
/// after `from_offset` and calling `on_record` with the send time in each value's first 8
/// bytes. Stops at a batch cut short or malformed (it is fetched again, or the count falls
/// short and the run says so).
pub fn walk_batches(records: &[u8], from_offset: i64, on_record: &mut impl FnMut(u64)) -> Walked {
    let mut w = Walked {
        records: 0,
        bytes: 0,
        next_offset: from_offset,
    };
    let mut rest = records;
    while rest.len() >= tern_engine::batch::HEADER_BYTES {
        let be_i64 = |b: &[u8], at: usize| {
            b.get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .map(i64::from_be_bytes)
        };
        let be_i32 = |b: &[u8], at: usize| {
            b.get(at..at + 4)
                .and_then(|s| s.try_into().ok())
                .map(i32::from_be_bytes)
        };
        let (Some(base), Some(len), Some(last_delta)) =
            (be_i64(rest, 0), be_i32(rest, 8), be_i32(rest, 23))
        else {
            break;
        };
        let total = 12 + len.max(0) as usize;
        if total > rest.len() || total < tern_engine::batch::HEADER_BYTES {
            break;
        }
        let attributes = i16::from_be_bytes([rest[21], rest[22]]);
        let batch = &rest[..total];
        rest = &rest[total..];
        let next = base + i64::from(last_delta) + 1;
        if next <= w.next_offset {
            continue;
        }
        if attributes & 0x20 != 0 {
            // A control batch: offsets only.
            w.next_offset = next;
            continue;
        }
        let inflated;
        let batch = if attributes & 0x07 != 0 {
            let Some(records) = decompress(attributes & 0x07, &batch[HEADER_BYTES..]) else {
                w.next_offset = next;
                continue;
            };
            inflated = [&batch[..HEADER_BYTES], &records[..]].concat();
            &inflated[..]
        } else {
            batch
        };
        for_each_record(batch, base, |offset, value| {
            if offset >= w.next_offset {
                w.records += 1;
                w.bytes += value.len() as u64;
                if let Some(t) = value.get(..SEND_TIME_BYTES).and_then(|s| s.try_into().ok()) {
                    on_record(u64::from_le_bytes(t));
                }
            }
        });
        w.next_offset = next;
    }
    w
}

/// The records section of a batch compressed with codec id `codec`; `None` if it does not
/// decompress.
fn decompress(codec: i16, records: &[u8]) -> Option<Vec<u8>> {
    use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
    let mut buf = bytes::Bytes::copy_from_slice(records);
    let take = |b: &mut bytes::Bytes| Ok(b.to_vec());
    match codec {
        1 => Gzip::decompress(&mut buf, take).ok(),
        2 => Snappy::decompress(&mut buf, take).ok(),
        3 => Lz4::decompress(&mut buf, take).ok(),
        4 => Zstd::decompress(&mut buf, take).ok(),
        _ => None,
    }
}

/// Calls `f(offset, value)` for each record of an uncompressed batch (stops at a malformed
/// record).
fn for_each_record(batch: &[u8], base_offset: i64, mut f: impl FnMut(i64, &[u8])) {
    let count = i32::from_be_bytes([batch[57], batch[58], batch[59], batch[60]]);
    let mut pos = tern_engine::batch::HEADER_BYTES;
    for _ in 0..count.max(0) {
        let Some((len, n)) = varint(&batch[pos..]) else {
            return;
        };
        let start = pos + n;
        let Some(end) = usize::try_from(len)
            .ok()
            .map(|l| start + l)
            .filter(|e| *e <= batch.len())
        else {
            return;
        };
        let rec = &batch[start..end];
        pos = end;
        // attributes i8, timestampDelta, offsetDelta, key, value
        let mut at = 1;
        let mut next = || -> Option<i64> {
            let (v, n) = varint(rec.get(at..)?)?;
            at += n;
            Some(v)
        };
        let (Some(_ts), Some(off_delta), Some(key_len)) = (next(), next(), next()) else {
            return;
        };
        at += key_len.max(0) as usize;
        let Some((value_len, n)) = rec.get(at..).and_then(varint) else {
            return;
        };
        at += n;
        let value = match usize::try_from(value_len) {
            Ok(l) => rec.get(at..at + l).unwrap_or(&[]),
            Err(_) => &[],
        };
        f(base_offset + off_delta, value);
    }
}

fn varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batcher::Batcher;

    /// Guards the Fetch walker: counts records from the position, reads send times, skips a
    /// cut batch and moves the position past whole batches only.
    #[test]
    fn walks_whole_batches_from_position() {
        let mut b = Batcher::new(1, 1 << 20, 0, 0);
        for t in [10u64, 20, 30] {
            b.append(0, t, t, Some(b"k"), &[0u8; 50]);
        }
        b.seal_all();
        for t in [40u64, 50] {
            b.append(0, t, t, None, &[0u8; 50]);
        }
        b.seal_all();
        let ready = b.take_ready();
        let mut set = ready[0].bytes.clone();
        let mut second = ready[1].bytes.clone();
        second[..8].copy_from_slice(&3i64.to_be_bytes());
        set.extend_from_slice(&second);
        let mut times = Vec::new();
        let w = walk_batches(&set, 1, &mut |t| times.push(t));
        assert_eq!(
            w,
            Walked {
                records: 4,
                bytes: 200,
                next_offset: 5
            }
        );
        assert_eq!(times, [20, 30, 40, 50]);
        // A cut second batch: only the first counts, the position stops after it.
        let cut = &set[..set.len() - 10];
        let w = walk_batches(cut, 0, &mut |_| {});
        assert_eq!(w.records, 3);
        assert_eq!(w.next_offset, 3);
    }

    /// Guards compressed batches: every codec's batch is valid (CRC, the broker's checks),
    /// decodes with the kafka-protocol crate, and the walker reads its send times.
    #[test]
    fn compressed_batches_walk_like_plain_ones() {
        use kafka_protocol::records::{Compression, RecordBatchDecoder};
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut b = Batcher::new(1, 1 << 20, 0, 0).with_codec(codec);
            for t in [10u64, 20, 30] {
                b.append(0, t, t, None, &[7u8; 500]);
            }
            b.seal_all();
            let bytes = b.take_ready().remove(0).bytes;
            assert!(bytes.len() < 3 * 500, "{codec:?} did not compress");
            tern_engine::batch::validate(&bytes, 0).unwrap();
            let set = RecordBatchDecoder::decode(&mut bytes::Bytes::from(bytes.clone())).unwrap();
            assert_eq!((set.compression, set.records.len()), (codec, 3));
            let mut times = Vec::new();
            let w = walk_batches(&bytes, 0, &mut |t| times.push(t));
            assert_eq!((w.records, w.next_offset), (3, 3), "{codec:?}");
            assert_eq!(times, [10, 20, 30]);
        }
    }
}
