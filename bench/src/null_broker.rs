//! The null broker: a Kafka-protocol server that keeps nothing on disk and does no work, the
//! floor of client + harness + loopback latency (`tern bench null-broker`, and `--baseline
//! null` of `tern bench run` / `suite`).
//!
//! A broker can never be faster than this one: a Produce is acknowledged as soon as it is
//! read, a Fetch answers as soon as data is there. A publish p99 measured against it is what
//! the client, the harness and the kernel cost on this machine at this rate; a real broker's
//! p99 over it is what the broker adds.
//!
//! What it speaks, with the same version ranges as `tern serve` (so clients take the same
//! code paths against both): ApiVersions, Metadata (itself as the only broker, node id 0;
//! every topic named in a Metadata request exists: an unknown one is created with
//! [`NullBrokerConfig::default_partitions`] partitions, 1 by default like Kafka's and Tern's
//! `num.partitions`), CreateTopics, DeleteTopics, InitProducerId (increasing ids), Produce
//! (acknowledged at once; no response with acks=0, as Kafka), Fetch (v4 to v12, by topic
//! name) and ListOffsets (earliest, latest, and by timestamp to the batch).
//!
//! Each partition keeps the batches as received (zero-copy slices of the request frame,
//! which is freed with the last of its batches), with base offsets assigned, in a bounded
//! in-memory ring: at most [`NullBrokerConfig::partition_bytes_max`] (64 MiB), and at most an
//! equal share of [`NullBrokerConfig::total_bytes_max`] (1 GiB) over the partitions that
//! exist once its topic is created; the newest batch is always kept. When a ring is full
//! the oldest batches are dropped and the log start moves; a Fetch below it gets
//! OFFSET_OUT_OF_RANGE, as from Kafka after retention. A Fetch answers at once if any
//! requested partition has data (or an error), else waits up to its `max_wait_ms` for a
//! Produce; `min_bytes` is not honoured beyond "some data". Base offsets (and the leader
//! epoch, 0) are written into the copy a Fetch returns, not into the stored bytes.
//!
//! [`baseline`] runs a fixed-rate workload against an in-process null broker (`--baseline
//! null`); at the maximum rate nothing would hold the producers back, so they would outrun
//! the consumers and the rings, and there is no rate to match: those workloads have none.
//!
//! What it does not do: durability of any kind, replication, consumer groups or offset
//! commits (FindCoordinator, JoinGroup, OffsetCommit, … are not advertised: consumers must
//! use manual assignment), transactions, idempotence checks (producer ids are handed out,
//! sequence numbers are not checked), CRC or record validation (only the batch framing:
//! length, magic 2, offset delta), compression (batches are stored and returned as they
//! came), topic configs (accepted and ignored), fetch sessions (a session id of 0 is
//! always answered: every Fetch is a full one), Fetch v13+ (topic ids) and quotas.
//!
//! Threads, not tasks: one thread accepts, one thread per connection reads a request,
//! answers it and reads the next (so responses are in request order, as Kafka's). An idle
//! connection sleeps in `read`, a waiting Fetch on a condition variable: no polling, no
//! per-request logging. A frame longer than [`FRAME_BYTES_MAX`] (or shorter than a request
//! header), an unknown API or version, or a body that does not decode closes the
//! connection with a debug log (`TERN_LOG=debug`); nothing a client sends can panic it.
//! (Like `tern serve`, it relies on the `tern` binary's allocator, `tern_net::alloc`, for
//! requests declaring absurd array lengths, which `kafka-protocol` allocates up front.)

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use serde::Serialize;

use crate::broker_report::BrokerReport;
use crate::run::RunOptions;
use crate::spec::Workload;

/// Largest request frame accepted (Kafka's `socket.request.max.bytes` default).
pub const FRAME_BYTES_MAX: usize = 100 << 20;
/// Smallest request frame: API key, version and correlation id.
const FRAME_BYTES_MIN: usize = 8;
/// Longest Fetch wait a client may ask for.
const FETCH_WAIT_MS_MAX: i32 = 60_000;
/// Most partitions a topic may have.
pub const PARTITIONS_MAX: i32 = 100_000;
/// The node id of the only broker.
const NODE_ID: i32 = 0;
/// The leader epoch of every partition (written into the batches it returns too).
const LEADER_EPOCH: i32 = 0;
const CLUSTER_ID: &str = "tern-null-broker";
/// RecordBatch v2: header length and field offsets.
const BATCH_HEADER_BYTES: usize = 61;
const BATCH_LEADER_EPOCH_AT: usize = 12;
const BATCH_MAGIC_AT: usize = 16;
const BATCH_LAST_OFFSET_DELTA_AT: usize = 23;
const BATCH_MAX_TIMESTAMP_AT: usize = 35;
/// The read buffer of a connection.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// What the null broker keeps and creates.
#[derive(Debug, Clone)]
pub struct NullBrokerConfig {
    /// Partitions of a topic created by Metadata (or by CreateTopics asking for -1).
    pub default_partitions: i32,
    /// Most batch bytes one partition keeps.
    pub partition_bytes_max: usize,
    /// Most batch bytes all partitions keep together (shared out when a topic is created).
    pub total_bytes_max: usize,
}

impl Default for NullBrokerConfig {
    fn default() -> NullBrokerConfig {
        NullBrokerConfig {
            default_partitions: 1,
            partition_bytes_max: 64 << 20,
            total_bytes_max: 1 << 30,
        }
    }
}

impl NullBrokerConfig {
    /// Room for `w`'s backlog (twice over, so that the consumers can start at offset 0
    /// while the producers go on), and at least the defaults.
    pub fn for_workload(w: &Workload, backlog_gb: f64) -> NullBrokerConfig {
        let d = NullBrokerConfig::default();
        let partitions = (w.topics.max(1) as usize) * (w.partitions_per_topic.max(1) as usize);
        let backlog = (backlog_gb.max(0.0) * 1e9) as usize;
        NullBrokerConfig {
            partition_bytes_max: d
                .partition_bytes_max
                .max(backlog.saturating_mul(2) / partitions),
            total_bytes_max: d.total_bytes_max.max(backlog.saturating_mul(2)),
            ..d
        }
    }
}

/// The versions the null broker decodes and answers: Tern's own ranges
/// (`tern_net::api::supported`), for the APIs in [`APIS`], so that clients take the same
/// code paths against both.
pub fn supported(api: ApiKey) -> Option<RangeInclusive<i16>> {
    APIS.contains(&api)
        .then(|| tern_net::api::supported(api))
        .flatten()
}

const APIS: [ApiKey; 8] = [
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::InitProducerId,
];

/// One stored batch: its assigned offsets and its bytes as received.
#[derive(Debug)]
struct Stored {
    base: i64,
    /// The offset after its last record.
    next: i64,
    max_timestamp: i64,
    bytes: Bytes,
}

/// One partition's ring of batches.
#[derive(Debug, Default)]
struct Ring {
    batches: VecDeque<Stored>,
    bytes: usize,
    log_start: i64,
    end: i64,
}

impl Ring {
    /// Appends `batches` (validated), drops the oldest beyond `cap` bytes (keeping the
    /// newest batch whatever its size); returns the first base offset.
    fn append(&mut self, batches: Vec<Checked>, cap: usize) -> i64 {
        let first = self.end;
        for b in batches {
            let next = self.end + b.records;
            self.bytes += b.bytes.len();
            self.batches.push_back(Stored {
                base: self.end,
                next,
                max_timestamp: b.max_timestamp,
                bytes: b.bytes,
            });
            self.end = next;
        }
        while self.bytes > cap && self.batches.len() > 1 {
            if let Some(old) = self.batches.pop_front() {
                self.bytes -= old.bytes.len();
            }
            self.log_start = self.batches.front().map_or(self.end, |b| b.base);
        }
        first
    }
}

/// A batch whose framing was checked.
#[derive(Debug)]
struct Checked {
    bytes: Bytes,
    records: i64,
    max_timestamp: i64,
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(i32::from_be_bytes)
}

fn be_i64(b: &[u8], at: usize) -> Option<i64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(i64::from_be_bytes)
}

/// Splits a Produce record set into batches without copying; `None` if one is cut short,
/// not RecordBatch v2, or claims no records.
fn split_batches(mut records: Bytes) -> Option<Vec<Checked>> {
    let mut out = Vec::new();
    while !records.is_empty() {
        let len = be_i32(&records, 8)?;
        let total = 12usize.checked_add(usize::try_from(len).ok()?)?;
        if total < BATCH_HEADER_BYTES || total > records.len() {
            return None;
        }
        let batch = records.split_to(total);
        let delta = be_i32(&batch, BATCH_LAST_OFFSET_DELTA_AT)?;
        if batch[BATCH_MAGIC_AT] != 2 || delta < 0 {
            return None;
        }
        out.push(Checked {
            records: i64::from(delta) + 1,
            max_timestamp: be_i64(&batch, BATCH_MAX_TIMESTAMP_AT)?,
            bytes: batch,
        });
    }
    (!out.is_empty()).then_some(out)
}

#[derive(Debug)]
struct Topic {
    id: uuid::Uuid,
    partitions: Vec<Mutex<Ring>>,
    /// Most batch bytes each partition keeps.
    cap: usize,
}

impl Topic {
    fn partition(&self, index: i32) -> Option<&Mutex<Ring>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }
}

/// The Fetch waiters' wake-up: a generation bumped by every Produce.
#[derive(Debug, Default)]
struct Wake {
    generation: u64,
    waiters: usize,
}

/// What every connection shares.
#[derive(Debug)]
struct Shared {
    config: NullBrokerConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    next_producer_id: AtomicI64,
    next_topic_id: AtomicU64,
    /// Random-ish high half of topic ids, so a restarted broker does not reuse ids.
    topic_id_high: u64,
    wake: Mutex<Wake>,
    wake_cv: Condvar,
    stop: AtomicBool,
    /// CPU time of the threads that have finished, in ns.
    cpu_ns: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The topic a request names: by id from `first_id_version` on (Produce and Fetch
    /// v13+), by name before; `Err` carries the error for an unknown id or name.
    fn named(
        &self,
        v: i16,
        first_id_version: i16,
        name: &str,
        id: uuid::Uuid,
    ) -> Result<Arc<Topic>, i16> {
        if v < first_id_version {
            return self
                .topic(name)
                .ok_or(ResponseError::UnknownTopicOrPartition.code());
        }
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find(|t| t.id == id)
            .cloned()
            .ok_or(ResponseError::UnknownTopicId.code())
    }

    /// Creates `name` with `partitions` partitions, or returns the existing topic. Each of
    /// its partitions keeps at most `partition_bytes_max`, and at most an equal share of
    /// `total_bytes_max` over all the partitions that exist once it is created.
    fn create(&self, name: &str, partitions: i32) -> Arc<Topic> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = topics.get(name) {
            return Arc::clone(t);
        }
        let n = partitions.clamp(1, PARTITIONS_MAX) as usize;
        let all = n + topics.values().map(|t| t.partitions.len()).sum::<usize>();
        let share = self.config.total_bytes_max / all;
        let low = self.next_topic_id.fetch_add(1, Ordering::Relaxed);
        let t = Arc::new(Topic {
            id: uuid::Uuid::from_u64_pair(self.topic_id_high, low),
            partitions: (0..n).map(|_| Mutex::new(Ring::default())).collect(),
            cap: share.min(self.config.partition_bytes_max).max(1),
        });
        topics.insert(name.to_string(), Arc::clone(&t));
        t
    }

    /// Wakes the Fetches waiting for data.
    fn produced(&self) {
        let waiters = {
            let mut w = lock(&self.wake);
            w.generation = w.generation.wrapping_add(1);
            w.waiters
        };
        if waiters > 0 {
            self.wake_cv.notify_all();
        }
    }

    fn generation(&self) -> u64 {
        lock(&self.wake).generation
    }

    /// Waits until a Produce after `generation`, the deadline, or the stop.
    fn wait_for_data(&self, generation: u64, deadline: Instant) {
        let mut w = lock(&self.wake);
        while w.generation == generation && !self.stop.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            w.waiters += 1;
            let (g, _) = self
                .wake_cv
                .wait_timeout(w, left)
                .unwrap_or_else(PoisonError::into_inner);
            w = g;
            w.waiters -= 1;
        }
    }
}

/// Kafka's rule for topic names.
fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn topic_metadata(name: &str, t: &Topic) -> MetadataResponseTopic {
    let node = || vec![BrokerId(NODE_ID)];
    let partitions = (0..t.partitions.len() as i32)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(NODE_ID))
                .with_leader_epoch(LEADER_EPOCH)
                .with_replica_nodes(node())
                .with_isr_nodes(node())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(s(name))))
        .with_topic_id(t.id)
        .with_partitions(partitions)
        .with_topic_authorized_operations(i32::MIN)
}

/// A running null broker; stops on [`NullBroker::stop`] or drop.
#[derive(Debug)]
pub struct NullBroker {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<Vec<Connection>>>,
    started: Instant,
}

/// What a stopped null broker cost.
#[derive(Debug, Clone, Copy)]
pub struct NullBrokerStats {
    /// User + system CPU time of all its threads.
    pub cpu: Duration,
    /// From start to stop.
    pub wall: Duration,
}

impl NullBroker {
    /// Listens on `addr` (port 0: a free port) and serves until stopped.
    pub fn start(addr: SocketAddr, config: NullBrokerConfig) -> io::Result<NullBroker> {
        let listener = Arc::new(TcpListener::bind(addr)?);
        let addr = listener.local_addr()?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        let shared = Arc::new(Shared {
            config,
            topics: RwLock::new(HashMap::new()),
            next_producer_id: AtomicI64::new(0),
            next_topic_id: AtomicU64::new(1),
            topic_id_high: seed,
            wake: Mutex::new(Wake::default()),
            wake_cv: Condvar::new(),
            stop: AtomicBool::new(false),
            cpu_ns: AtomicU64::new(0),
        });
        let (l, s) = (Arc::clone(&listener), Arc::clone(&shared));
        let accept = std::thread::Builder::new()
            .name("null-accept".into())
            .spawn(move || accept_loop(&l, &s))?;
        Ok(NullBroker {
            addr,
            listener,
            shared,
            accept: Some(accept),
            started: Instant::now(),
        })
    }

    /// Resolves `listen` (`HOST:PORT`) and starts on its first address.
    pub fn start_on(listen: &str, config: NullBrokerConfig) -> anyhow::Result<NullBroker> {
        let addr = listen
            .to_socket_addrs()
            .context("not a HOST:PORT address")?
            .next()
            .context("resolves to no address")?;
        NullBroker::start(addr, config).with_context(|| format!("cannot listen on {addr}"))
    }

    /// The address it listens on (with the port picked when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes every connection, waits for the threads.
    pub fn stop(mut self) -> NullBrokerStats {
        self.shutdown();
        NullBrokerStats {
            cpu: Duration::from_nanos(self.shared.cpu_ns.load(Ordering::Acquire)),
            wall: self.started.elapsed(),
        }
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::Release);
        // Wakes the accept loop: accept(2) on a shut-down socket fails at once.
        // SAFETY: shutdown(2) on a socket we own, still open (we hold an Arc of it).
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        let conns = accept.join().unwrap_or_default();
        for (stream, _) in &conns {
            let _ = stream.shutdown(Shutdown::Both);
        }
        {
            let _w = lock(&self.shared.wake);
            self.shared.wake_cv.notify_all();
        }
        for (_, handle) in conns {
            let _ = handle.join();
        }
    }
}

impl Drop for NullBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn add_thread_cpu(shared: &Shared) {
    let ns = crate::cpu::thread_cpu().as_nanos() as u64;
    shared.cpu_ns.fetch_add(ns, Ordering::AcqRel);
}

/// A connection: our copy of its socket (to shut it down on stop) and its thread.
type Connection = (TcpStream, JoinHandle<()>);

/// Accepts until stopped; returns the live connections.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) -> Vec<Connection> {
    let mut conns: Vec<Connection> = Vec::new();
    let mut failures = 0u32;
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(a) => {
                failures = 0;
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::debug!(error = %e, "null broker: accept failed");
                failures = failures.saturating_add(1);
                std::thread::sleep(Duration::from_millis(u64::from(failures.min(100))));
                continue;
            }
        };
        // Reaps the connections that ended.
        let (done, live): (Vec<_>, Vec<_>) = conns.into_iter().partition(|(_, h)| h.is_finished());
        for (_, h) in done {
            let _ = h.join();
        }
        conns = live;
        // Ours stays here so that a stop can shut the connection down.
        let Ok(theirs) = stream.try_clone() else {
            continue;
        };
        let s = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("null-conn".into())
            .spawn(move || {
                if let Err(reason) = serve(&theirs, &s) {
                    tracing::debug!(%peer, "null broker: connection closed: {reason}");
                }
                // The client sees the end now, not when the accept loop drops our copy.
                let _ = theirs.shutdown(Shutdown::Both);
                add_thread_cpu(&s);
            });
        match spawned {
            Ok(h) => conns.push((stream, h)),
            Err(e) => tracing::debug!(error = %e, "null broker: cannot start a thread"),
        }
    }
    add_thread_cpu(shared);
    conns
}

/// Why a connection was closed.
#[derive(Debug)]
enum Closed {
    /// The client hung up or the socket failed.
    Io(io::Error),
    /// A frame we refuse.
    Refused(String),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Io(e) => write!(f, "I/O: {e}"),
            Closed::Refused(r) => write!(f, "refused: {r}"),
        }
    }
}

/// Serves one connection until it closes; `Ok` on a clean hang-up between frames.
fn serve(stream: &TcpStream, shared: &Shared) -> Result<(), Closed> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().map_err(Closed::Io)?;
    let mut writer = stream;
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    let conn = Conn { shared, local };
    let mut out = BytesMut::with_capacity(64 << 10);
    loop {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(Closed::Io(e)),
        }
        if shared.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let len = i32::from_be_bytes(len);
        let size = usize::try_from(len).unwrap_or(usize::MAX);
        if !(FRAME_BYTES_MIN..=FRAME_BYTES_MAX).contains(&size) {
            return Err(Closed::Refused(format!("frame of {len} bytes")));
        }
        let mut frame = BytesMut::zeroed(size);
        reader.read_exact(&mut frame).map_err(Closed::Io)?;
        out.clear();
        if conn
            .handle(frame.freeze(), &mut out)
            .map_err(Closed::Refused)?
        {
            writer.write_all(&out).map_err(Closed::Io)?;
        }
    }
}

/// One connection's view: the shared state and the address the client reached.
struct Conn<'a> {
    shared: &'a Shared,
    local: SocketAddr,
}

fn decode<T: Decodable>(api: ApiKey, body: &mut Bytes, version: i16) -> Result<T, String> {
    T::decode(body, version).map_err(|e| format!("{api:?} v{version}: malformed: {e}"))
}

/// Writes a response frame (length, header, body) into `out`.
fn respond<T: Encodable>(
    out: &mut BytesMut,
    api: ApiKey,
    version: i16,
    header_version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<bool, String> {
    out.extend_from_slice(&[0; 4]);
    let encoded = ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(out, header_version)
        .and_then(|()| body.encode(out, version));
    if let Err(e) = encoded {
        return Err(format!(
            "{api:?} v{version}: cannot encode the response: {e}"
        ));
    }
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(true)
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn api_versions_body() -> ApiVersionsResponse {
    tern_net::api::api_versions_of(&APIS)
}

impl Conn<'_> {
    /// Handles one request frame; `Ok(true)` when `out` holds a response to send,
    /// `Err(reason)` to close the connection.
    fn handle(&self, mut frame: Bytes, out: &mut BytesMut) -> Result<bool, String> {
        if frame.len() < FRAME_BYTES_MIN {
            return Err(format!("frame of {} bytes", frame.len()));
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let api = ApiKey::try_from(key).map_err(|()| format!("unknown API key {key}"))?;
        let range = supported(api);
        if api == ApiKey::ApiVersions && !range.as_ref().is_some_and(|r| r.contains(&version)) {
            // As Kafka: our list in v0 with UNSUPPORTED_VERSION, so the client retries with
            // a version we know.
            let body =
                api_versions_body().with_error_code(ResponseError::UnsupportedVersion.code());
            return respond(out, api, 0, 0, correlation_id, &body);
        }
        if !range.is_some_and(|r| r.contains(&version)) {
            return Err(format!("{api:?} v{version} is not supported"));
        }
        let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
            .map_err(|e| format!("{api:?} v{version}: malformed header: {e}"))?;
        let hv = api.response_header_version(version);
        let (v, id, b) = (version, header.correlation_id, &mut frame);
        match api {
            ApiKey::ApiVersions => {
                let _: ApiVersionsRequest = decode(api, b, v)?;
                respond(out, api, v, hv, id, &api_versions_body())
            }
            ApiKey::Metadata => {
                let resp = self.metadata(decode(api, b, v)?, v);
                respond(out, api, v, hv, id, &resp)
            }
            ApiKey::Produce => {
                let req: ProduceRequest = decode(api, b, v)?;
                let acks = req.acks;
                let resp = self.produce(req, v);
                if acks == 0 {
                    return Ok(false);
                }
                respond(out, api, v, hv, id, &resp)
            }
            ApiKey::Fetch => {
                let resp = self.fetch(&decode(api, b, v)?, v);
                respond(out, api, v, hv, id, &resp)
            }
            ApiKey::ListOffsets => {
                let resp = self.list_offsets(decode(api, b, v)?, v);
                respond(out, api, v, hv, id, &resp)
            }
            ApiKey::CreateTopics => {
                let resp = self.create_topics(decode(api, b, v)?, v);
                respond(out, api, v, hv, id, &resp)
            }
            ApiKey::DeleteTopics => {
                let resp = self.delete_topics(decode(api, b, v)?, v);
                respond(out, api, v, hv, id, &resp)
            }
            ApiKey::InitProducerId => {
                let resp = self.init_producer_id(decode(api, b, v)?);
                respond(out, api, v, hv, id, &resp)
            }
            _ => Err(format!("{api:?} v{version} is not supported")),
        }
    }

    fn metadata(&self, req: MetadataRequest, v: i16) -> MetadataResponse {
        let shared = self.shared;
        let broker = MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(s(self.local.ip().to_string()))
            .with_port(i32::from(self.local.port()));
        let wanted: Vec<(Option<String>, uuid::Uuid)> = match &req.topics {
            None => {
                let topics = shared.topics.read().unwrap_or_else(PoisonError::into_inner);
                topics
                    .keys()
                    .map(|n| (Some(n.clone()), uuid::Uuid::nil()))
                    .collect()
            }
            Some(t) => t
                .iter()
                .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id))
                .collect(),
        };
        let mut topics = Vec::with_capacity(wanted.len());
        for (name, id) in wanted {
            let found = match &name {
                Some(n) if valid_topic_name(n) => {
                    let t = shared
                        .topic(n)
                        .unwrap_or_else(|| shared.create(n, shared.config.default_partitions));
                    Ok((n.clone(), t))
                }
                Some(n) => Err((n.clone(), ResponseError::InvalidTopicException)),
                None => {
                    let topics = shared.topics.read().unwrap_or_else(PoisonError::into_inner);
                    topics
                        .iter()
                        .find(|(_, t)| t.id == id)
                        .map(|(n, t)| (n.clone(), Arc::clone(t)))
                        .ok_or((String::new(), ResponseError::UnknownTopicId))
                }
            };
            let mut t = match found {
                Ok((n, t)) => topic_metadata(&n, &t),
                Err((n, e)) => MetadataResponseTopic::default()
                    .with_name(Some(TopicName(s(n))))
                    .with_topic_id(id)
                    .with_error_code(e.code()),
            };
            if v < 10 {
                t.topic_id = uuid::Uuid::nil();
            }
            if v < 7 {
                for p in &mut t.partitions {
                    p.leader_epoch = -1;
                }
            }
            topics.push(t);
        }
        MetadataResponse::default()
            .with_brokers(vec![broker])
            .with_cluster_id(Some(s(CLUSTER_ID)))
            .with_controller_id(BrokerId(NODE_ID))
            .with_topics(topics)
    }

    fn produce(&self, req: ProduceRequest, v: i16) -> ProduceResponse {
        let acks_ok = matches!(req.acks, -1..=1);
        let mut responses = Vec::with_capacity(req.topic_data.len());
        for t in req.topic_data {
            let topic = self.shared.named(v, 13, t.name.as_str(), t.topic_id);
            let mut parts = Vec::with_capacity(t.partition_data.len());
            for p in t.partition_data {
                let mut r = PartitionProduceResponse::default()
                    .with_index(p.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let ring = match &topic {
                    Ok(t) => t
                        .partition(p.index)
                        .map(|r| (r, t.cap))
                        .ok_or(ResponseError::UnknownTopicOrPartition.code()),
                    Err(code) => Err(*code),
                };
                let code = match (acks_ok, ring.ok(), p.records.and_then(split_batches)) {
                    (false, _, _) => ResponseError::InvalidRequiredAcks.code(),
                    (true, None, _) => match &topic {
                        Err(code) => *code,
                        Ok(_) => ResponseError::UnknownTopicOrPartition.code(),
                    },
                    (true, Some(_), None) => ResponseError::CorruptMessage.code(),
                    (true, Some((ring, cap)), Some(batches)) => {
                        let mut ring = lock(ring);
                        r.base_offset = ring.append(batches, cap);
                        if v >= 5 {
                            r.log_start_offset = ring.log_start;
                        }
                        0
                    }
                };
                parts.push(r.with_error_code(code));
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(t.name)
                    .with_topic_id(t.topic_id)
                    .with_partition_responses(parts),
            );
        }
        self.shared.produced();
        ProduceResponse::default().with_responses(responses)
    }

    /// A Fetch: at once if there is data (or an error), else when a Produce brings some,
    /// at the latest after `max_wait_ms`.
    fn fetch(&self, req: &FetchRequest, v: i16) -> FetchResponse {
        let wait = Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
        let mut deadline = None;
        loop {
            let generation = self.shared.generation();
            let (resp, ready) = self.fetch_once(req, v);
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + wait);
            if ready || Instant::now() >= deadline || self.shared.stop.load(Ordering::Acquire) {
                return resp;
            }
            self.shared.wait_for_data(generation, deadline);
        }
    }

    /// One pass over the requested partitions; `true` if any has data or an error.
    fn fetch_once(&self, req: &FetchRequest, v: i16) -> (FetchResponse, bool) {
        let max_bytes = if req.max_bytes > 0 {
            req.max_bytes as usize
        } else {
            usize::MAX
        };
        let mut total = 0usize;
        let mut ready = false;
        let mut responses = Vec::with_capacity(req.topics.len());
        for t in &req.topics {
            let topic = self.shared.named(v, 13, t.topic.as_str(), t.topic_id);
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let mut d = PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_high_watermark(-1)
                    .with_aborted_transactions(None)
                    .with_records(Some(Bytes::new()));
                let ring = match &topic {
                    Ok(t) => t
                        .partition(p.partition)
                        .ok_or(ResponseError::UnknownTopicOrPartition.code()),
                    Err(code) => Err(*code),
                };
                let ring = match ring {
                    Ok(r) => r,
                    Err(code) => {
                        ready = true;
                        parts.push(d.with_error_code(code));
                        continue;
                    }
                };
                let taken = {
                    let ring = lock(ring);
                    d.high_watermark = ring.end;
                    d.last_stable_offset = ring.end;
                    if v >= 5 {
                        d.log_start_offset = ring.log_start;
                    }
                    if !(ring.log_start..=ring.end).contains(&p.fetch_offset) {
                        d.error_code = ResponseError::OffsetOutOfRange.code();
                        Vec::new()
                    } else {
                        take(
                            &ring,
                            p.fetch_offset,
                            p.partition_max_bytes,
                            max_bytes,
                            total,
                        )
                    }
                };
                if d.error_code != 0 || !taken.is_empty() {
                    ready = true;
                }
                if !taken.is_empty() {
                    let len: usize = taken.iter().map(|(_, b)| b.len()).sum();
                    total += len;
                    let mut records = BytesMut::with_capacity(len);
                    for (base, b) in taken {
                        let at = records.len();
                        records.extend_from_slice(&b);
                        records[at..at + 8].copy_from_slice(&base.to_be_bytes());
                        let epoch = at + BATCH_LEADER_EPOCH_AT;
                        records[epoch..epoch + 4].copy_from_slice(&LEADER_EPOCH.to_be_bytes());
                    }
                    d.records = Some(records.freeze());
                }
                parts.push(d);
            }
            responses.push(
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(parts),
            );
        }
        (FetchResponse::default().with_responses(responses), ready)
    }

    fn list_offsets(&self, req: ListOffsetsRequest, v: i16) -> ListOffsetsResponse {
        let mut topics = Vec::with_capacity(req.topics.len());
        for t in req.topics {
            let topic = self.shared.topic(t.name.as_str());
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in t.partitions {
                let mut r = ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1)
                    .with_leader_epoch(if v >= 4 { LEADER_EPOCH } else { -1 });
                match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                    None => r.error_code = ResponseError::UnknownTopicOrPartition.code(),
                    Some(ring) => {
                        let ring = lock(ring);
                        match p.timestamp {
                            -2 => r.offset = ring.log_start,
                            -1 => r.offset = ring.end,
                            ts if ts >= 0 => {
                                if let Some(b) = ring.batches.iter().find(|b| b.max_timestamp >= ts)
                                {
                                    r.offset = b.base;
                                    r.timestamp = b.max_timestamp;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                parts.push(r);
            }
            topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(parts),
            );
        }
        ListOffsetsResponse::default().with_topics(topics)
    }

    fn create_topics(&self, req: CreateTopicsRequest, v: i16) -> CreateTopicsResponse {
        let shared = self.shared;
        let mut results = Vec::with_capacity(req.topics.len());
        for t in req.topics {
            let name = t.name.to_string();
            let mut r = CreatableTopicResult::default().with_name(t.name.clone());
            let (partitions, rf) = if t.assignments.is_empty() {
                let n = match t.num_partitions {
                    -1 => shared.config.default_partitions,
                    n => n,
                };
                (n, t.replication_factor)
            } else {
                (i32::try_from(t.assignments.len()).unwrap_or(i32::MAX), 1)
            };
            let elsewhere = t
                .assignments
                .iter()
                .any(|a| a.broker_ids != [BrokerId(NODE_ID)]);
            let error = if !valid_topic_name(&name) {
                Some((ResponseError::InvalidTopicException, "invalid topic name"))
            } else if !(1..=PARTITIONS_MAX).contains(&partitions) {
                Some((ResponseError::InvalidPartitions, "partitions out of range"))
            } else if elsewhere {
                Some((
                    ResponseError::InvalidReplicaAssignment,
                    "replicas may only be on broker 0",
                ))
            } else if !matches!(rf, -1 | 1) {
                Some((
                    ResponseError::InvalidReplicationFactor,
                    "this cluster has one broker",
                ))
            } else if shared.topic(&name).is_some() {
                Some((ResponseError::TopicAlreadyExists, "topic exists"))
            } else {
                None
            };
            match error {
                Some((e, message)) => {
                    r.error_code = e.code();
                    r.error_message = Some(s(message));
                }
                None => {
                    let id = if req.validate_only {
                        uuid::Uuid::nil()
                    } else {
                        shared.create(&name, partitions).id
                    };
                    if v >= 7 {
                        r.topic_id = id;
                    }
                    if v >= 5 {
                        r.num_partitions = partitions;
                        r.replication_factor = 1;
                    }
                }
            }
            results.push(r);
        }
        CreateTopicsResponse::default().with_topics(results)
    }

    fn delete_topics(&self, req: DeleteTopicsRequest, v: i16) -> DeleteTopicsResponse {
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
        let mut topics = self
            .shared
            .topics
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut responses = Vec::with_capacity(names.len());
        for (name, id) in names {
            let name = name.or_else(|| {
                topics
                    .iter()
                    .find(|(_, t)| t.id == id && !id.is_nil())
                    .map(|(n, _)| n.clone())
            });
            let mut r = DeletableTopicResult::default();
            match name {
                None => r.error_code = ResponseError::UnknownTopicId.code(),
                Some(n) => {
                    match topics.remove(&n) {
                        Some(t) => r.topic_id = t.id,
                        None => r.error_code = ResponseError::UnknownTopicOrPartition.code(),
                    }
                    r.name = Some(TopicName(s(n)));
                }
            }
            if v < 6 {
                r.topic_id = uuid::Uuid::nil();
            }
            responses.push(r);
        }
        DeleteTopicsResponse::default().with_responses(responses)
    }

    fn init_producer_id(&self, req: InitProducerIdRequest) -> InitProducerIdResponse {
        let resp = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
            // No transactions.
            return resp.with_error_code(ResponseError::InvalidRequest.code());
        }
        let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
        if pid >= 0 && (0..i16::MAX - 1).contains(&epoch) {
            return resp
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch + 1);
        }
        let id = self.shared.next_producer_id.fetch_add(1, Ordering::Relaxed);
        resp.with_producer_id(ProducerId(id)).with_producer_epoch(0)
    }
}

/// The batches a Fetch from `offset` returns: from the one holding `offset`, within
/// `partition_max` and the response's `max_bytes` (of which `total` is used), but always
/// the partition's first batch when it fits the response, and the response's first batch
/// whatever its size (KIP-74: a client can always make progress).
fn take(
    ring: &Ring,
    offset: i64,
    partition_max: i32,
    max_bytes: usize,
    total: usize,
) -> Vec<(i64, Bytes)> {
    let partition_max = usize::try_from(partition_max).unwrap_or(0);
    let from = ring.batches.partition_point(|b| b.next <= offset);
    let mut taken = Vec::new();
    let mut here = 0usize;
    for b in ring.batches.range(from..) {
        let len = b.bytes.len();
        let fits_response = total + here + len <= max_bytes;
        let ok = (total + here == 0)
            || (here == 0 && fits_response)
            || (here + len <= partition_max && fits_response);
        if !ok {
            break;
        }
        here += len;
        taken.push((b.base, b.bytes.clone()));
    }
    taken
}

// ---------------------------------------------------------------------------------------
// The null baseline of a broker run.

/// The same workload run against an in-process null broker (`--baseline null`).
#[derive(Debug, Clone, Serialize)]
pub struct NullBaseline {
    /// Where it listened (127.0.0.1, a free port).
    pub broker_address: String,
    pub test_duration_s: f64,
    pub publish_rate_records_per_s: f64,
    pub publish_rate_mb_per_s: f64,
    pub records_acked: u64,
    pub records_publish_errors: u64,
    pub records_unsent: u64,
    pub records_consumed: u64,
    pub records_consumed_expected: u64,
    pub publish_latency_p50_ms: f64,
    pub publish_latency_p99_ms: f64,
    pub publish_latency_p99_9_ms: f64,
    pub publish_latency_max_ms: f64,
    pub end_to_end_latency_p50_ms: f64,
    pub end_to_end_latency_p99_ms: f64,
    /// CPU time (user + system) of the null broker's threads over its whole life.
    pub broker_cpu_s: f64,
    /// From the null broker's start to its stop.
    pub broker_wall_s: f64,
}

impl NullBaseline {
    /// The figures of `r`, a run against the null broker that cost `stats`.
    pub fn of(r: &BrokerReport, stats: NullBrokerStats) -> NullBaseline {
        let l = |k: &str| r.latency_ms(k);
        NullBaseline {
            broker_address: r.broker_address.clone(),
            test_duration_s: r.test_duration_s,
            publish_rate_records_per_s: r.publish_rate_records_per_s,
            publish_rate_mb_per_s: r.publish_rate_mb_per_s,
            records_acked: r.records_acked,
            records_publish_errors: r.records_publish_errors,
            records_unsent: r.records_unsent,
            records_consumed: r.records_consumed,
            records_consumed_expected: r.records_consumed_expected,
            publish_latency_p50_ms: l("publish_latency_p50_ms"),
            publish_latency_p99_ms: l("publish_latency_p99_ms"),
            publish_latency_p99_9_ms: l("publish_latency_p99_9_ms"),
            publish_latency_max_ms: l("publish_latency_max_ms"),
            end_to_end_latency_p50_ms: l("end_to_end_latency_p50_ms"),
            end_to_end_latency_p99_ms: l("end_to_end_latency_p99_ms"),
            broker_cpu_s: stats.cpu.as_secs_f64(),
            broker_wall_s: stats.wall.as_secs_f64(),
        }
    }
}

/// Why a workload has no null baseline, if it has none: at the maximum rate
/// (`producerRate: 0`) nothing holds the producers back, so they outrun any consumer and the
/// bounded rings; there is no rate to match either.
pub fn baseline_refusal(w: &Workload) -> Option<&'static str> {
    (w.producer_rate <= 0.0).then_some(
        "the null baseline needs a fixed rate (producerRate > 0): at the maximum rate the \
         producers outrun any consumer of a broker that does nothing",
    )
}

/// Runs `w` with `opts` (its broker address replaced) against a null broker started in
/// this process on a free 127.0.0.1 port, sized for the workload's backlog.
pub fn baseline(w: &Workload, opts: &RunOptions) -> anyhow::Result<NullBaseline> {
    if let Some(why) = baseline_refusal(w) {
        anyhow::bail!("{why}");
    }
    let backlog_gb = opts.backlog_gb.unwrap_or(w.consumer_backlog_size_gb);
    let config = NullBrokerConfig::for_workload(w, backlog_gb);
    let broker = NullBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .context("starting the null broker")?;
    let opts = RunOptions {
        broker: broker.local_addr().to_string(),
        broker_software: Some(format!(
            "tern {} null broker (in-process)",
            env!("CARGO_PKG_VERSION")
        )),
        broker_pids: Vec::new(),
        ..opts.clone()
    };
    let report = crate::run::run(w, &opts);
    let stats = broker.stop();
    let report = report.context("the run against the null broker")?;
    Ok(NullBaseline::of(&report, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batcher::Batcher;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use tern_net::client::Client;

    fn start() -> NullBroker {
        NullBroker::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            NullBrokerConfig::default(),
        )
        .unwrap()
    }

    fn client(b: &NullBroker) -> Client {
        Client::connect(&b.local_addr().to_string(), Duration::from_secs(10)).unwrap()
    }

    fn topic(name: &str) -> TopicName {
        TopicName(StrBytes::from_string(name.to_string()))
    }

    /// A batch of `n` records (values: 16 bytes of `fill`).
    fn batch(n: usize, fill: u8) -> Vec<u8> {
        let mut b = Batcher::new(1, 1 << 20, 0, 0);
        for t in 0..n as u64 {
            b.append(0, t, t, None, &[fill; 16]);
        }
        b.seal_all();
        b.take_ready().remove(0).bytes
    }

    /// Metadata for `name` (which creates it).
    fn metadata(c: &mut Client, name: &str) -> MetadataResponse {
        let req = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic(name))),
        ]));
        c.request(ApiKey::Metadata, 12, &req).unwrap()
    }

    /// The id of topic `name` (for the versions that name topics by id).
    fn topic_id(c: &mut Client, name: &str) -> uuid::Uuid {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic(name)))
            ]))
            .with_allow_auto_topic_creation(false);
        let resp: MetadataResponse = c.request(ApiKey::Metadata, 12, &req).unwrap();
        resp.topics[0].topic_id
    }

    fn produce(c: &mut Client, v: i16, name: &str, part: i32, records: Vec<u8>) -> (i16, i64) {
        let id = if v >= 13 {
            topic_id(c, name)
        } else {
            uuid::Uuid::nil()
        };
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic(name))
                .with_topic_id(id)
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(part)
                    .with_records(Some(Bytes::from(records)))])]);
        let resp: ProduceResponse = c.request(ApiKey::Produce, v, &req).unwrap();
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    fn fetch(c: &mut Client, v: i16, name: &str, offset: i64, wait_ms: i32) -> PartitionData {
        let id = if v >= 13 {
            topic_id(c, name)
        } else {
            uuid::Uuid::nil()
        };
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic(name))
                .with_topic_id(id)
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let resp: FetchResponse = c.request(ApiKey::Fetch, v, &req).unwrap();
        resp.responses[0].partitions[0].clone()
    }

    /// Guards every advertised version of every API: the requests decode and the responses
    /// encode (kafka-protocol refuses fields a version lacks), with the offsets right.
    #[test]
    fn every_advertised_version_answers() {
        let b = start();
        let mut c = client(&b);
        for v in supported(ApiKey::Metadata).unwrap() {
            let req = MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic(&format!("m{v}"))))
                ]))
                .with_allow_auto_topic_creation(true);
            let resp: MetadataResponse = c.request(ApiKey::Metadata, v, &req).unwrap();
            assert_eq!(resp.brokers[0].port, i32::from(b.local_addr().port()));
            assert_eq!(resp.topics[0].error_code, 0, "v{v}");
            assert_eq!(resp.topics[0].partitions.len(), 1, "v{v}");
        }
        for v in supported(ApiKey::CreateTopics).unwrap() {
            let name = format!("c{v}");
            let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(topic(&name))
                .with_num_partitions(3)
                .with_replication_factor(1)]);
            let resp: CreateTopicsResponse = c.request(ApiKey::CreateTopics, v, &req).unwrap();
            assert_eq!(resp.topics[0].error_code, 0, "v{v}");
            let again: CreateTopicsResponse = c.request(ApiKey::CreateTopics, v, &req).unwrap();
            assert_eq!(
                again.topics[0].error_code,
                ResponseError::TopicAlreadyExists.code()
            );
        }
        for (i, v) in supported(ApiKey::Produce).unwrap().enumerate() {
            let (code, base) = produce(&mut c, v, "c2", 1, batch(3, i as u8));
            assert_eq!((code, base), (0, 3 * i as i64), "v{v}");
        }
        let (code, _) = produce(&mut c, 9, "c2", 3, batch(1, 0));
        assert_eq!(code, ResponseError::UnknownTopicOrPartition.code());
        let (code, _) = produce(&mut c, 9, "c2", 1, vec![0; 70]);
        assert_eq!(code, ResponseError::CorruptMessage.code());
        let end = 3 * supported(ApiKey::Produce).unwrap().count() as i64;
        let id = topic_id(&mut c, "c2");
        for v in supported(ApiKey::Fetch).unwrap() {
            let req = FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(topic("c2"))
                    .with_topic_id(if v >= 13 { id } else { uuid::Uuid::nil() })
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(1)
                        .with_fetch_offset(4)
                        .with_partition_max_bytes(1 << 20)])]);
            let resp: FetchResponse = c.request(ApiKey::Fetch, v, &req).unwrap();
            let p = &resp.responses[0].partitions[0];
            assert_eq!((p.error_code, p.high_watermark), (0, end), "v{v}");
            let mut times = Vec::new();
            let records = p.records.clone().unwrap();
            let w = crate::wire::walk_batches(&records, 4, &mut |t| times.push(t));
            assert_eq!((w.records, w.next_offset), (end as u64 - 4, end), "v{v}");
            // The first batch holds offsets 3..6: returned whole, with its base offset.
            assert_eq!(&records[..8], &3i64.to_be_bytes());
        }
        for v in supported(ApiKey::ListOffsets).unwrap() {
            let req = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic("c2"))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(1)
                        .with_timestamp(-2),
                    ListOffsetsPartition::default()
                        .with_partition_index(1)
                        .with_timestamp(-1),
                    ListOffsetsPartition::default()
                        .with_partition_index(1)
                        .with_timestamp(0),
                ])]);
            let resp: ListOffsetsResponse = c.request(ApiKey::ListOffsets, v, &req).unwrap();
            let offsets: Vec<i64> = resp.topics[0].partitions.iter().map(|p| p.offset).collect();
            assert_eq!(offsets, [0, end, 0], "v{v}");
        }
        for v in supported(ApiKey::InitProducerId).unwrap() {
            let req = InitProducerIdRequest::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            let resp: InitProducerIdResponse = c.request(ApiKey::InitProducerId, v, &req).unwrap();
            assert_eq!(
                (resp.error_code, resp.producer_id.0),
                (0, i64::from(v)),
                "v{v}"
            );
        }
        for v in supported(ApiKey::DeleteTopics).unwrap() {
            let name = topic(&format!("m{v}"));
            let mut req = DeleteTopicsRequest::default();
            if v >= 6 {
                req.topics = vec![DeleteTopicState::default().with_name(Some(name))];
            } else {
                req.topic_names = vec![name];
            }
            let resp: DeleteTopicsResponse = c.request(ApiKey::DeleteTopics, v, &req).unwrap();
            assert_eq!(resp.responses[0].error_code, 0, "v{v}");
        }
        for v in supported(ApiKey::ApiVersions).unwrap() {
            let resp: ApiVersionsResponse = c
                .request(ApiKey::ApiVersions, v, &ApiVersionsRequest::default())
                .unwrap();
            assert_eq!(resp.api_keys.len(), APIS.len(), "v{v}");
        }
        let stats = b.stop();
        assert!(stats.wall > Duration::ZERO);
    }

    /// Guards the long poll: an empty Fetch waits for a Produce and answers as soon as it
    /// comes, not at the end of its max_wait_ms; with no Produce it ends at max_wait_ms.
    #[test]
    fn fetch_waits_for_data_and_no_longer() {
        let b = start();
        let mut c = client(&b);
        metadata(&mut c, "w");
        let t0 = Instant::now();
        let p = fetch(&mut c, 12, "w", 0, 100);
        assert!(t0.elapsed() >= Duration::from_millis(100));
        assert_eq!((p.error_code, p.records.map(|r| r.len())), (0, Some(0)));
        // A long poll in flight: a Produce ends it at once.
        let addr = b.local_addr().to_string();
        let poll = std::thread::spawn(move || {
            let mut c = Client::connect(&addr, Duration::from_secs(10)).unwrap();
            let t0 = Instant::now();
            (fetch(&mut c, 12, "w", 0, 30_000), t0.elapsed())
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock(&b.shared.wake).waiters == 0 {
            assert!(Instant::now() < deadline, "the Fetch never waited");
            std::thread::yield_now();
        }
        assert_eq!(produce(&mut c, 9, "w", 0, batch(2, 1)), (0, 0));
        let (p, took) = poll.join().unwrap();
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert_eq!(p.high_watermark, 2);
        assert!(!p.records.unwrap().is_empty());
        let p = fetch(&mut c, 12, "w", 3, 0);
        assert_eq!(p.error_code, ResponseError::OffsetOutOfRange.code());
        drop(b);
    }

    /// Guards the bounded ring: the oldest batches go, the log start moves, a Fetch below it
    /// is out of range and one from it gets the data.
    #[test]
    fn ring_drops_the_oldest_batches() {
        let config = NullBrokerConfig {
            default_partitions: 1,
            partition_bytes_max: 1000,
            total_bytes_max: 1 << 20,
        };
        let b = NullBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), config).unwrap();
        let mut c = client(&b);
        let one = batch(10, 7);
        let per = one.len();
        assert!(per < 1000 && 2 * per > 500, "{per}");
        metadata(&mut c, "r");
        for i in 0..5 {
            assert_eq!(produce(&mut c, 9, "r", 0, one.clone()), (0, 10 * i));
        }
        let keep = (1000 / per) as i64;
        let start = 50 - 10 * keep;
        let p = fetch(&mut c, 12, "r", 0, 0);
        assert_eq!(p.error_code, ResponseError::OffsetOutOfRange.code());
        assert_eq!(p.log_start_offset, start);
        let p = fetch(&mut c, 12, "r", start, 0);
        assert_eq!(p.error_code, 0);
        let w = crate::wire::walk_batches(&p.records.unwrap(), start, &mut |_| {});
        assert_eq!((w.records, w.next_offset), (10 * keep as u64, 50));
    }

    /// Guards the refusals: a frame that is too short, too long, of an unknown API or
    /// version closes the connection and the broker serves the next one.
    #[test]
    fn bad_frames_close_the_connection_only() {
        let b = start();
        let frames: [&[u8]; 4] = [
            &[0, 0, 0, 2, 0, 0],
            &[0x7f, 0xff, 0xff, 0xff],
            &[0, 0, 0, 8, 0x7f, 0x00, 0, 0, 0, 0, 0, 1],
            &[0, 0, 0, 10, 0, 3, 0, 99, 0, 0, 0, 1, 0xff, 0xff],
        ];
        for f in frames {
            let mut s = TcpStream::connect(b.local_addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(f).unwrap();
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).unwrap_or(0);
            assert_eq!(n, 0, "{f:?} got an answer");
        }
        // ApiVersions v99: the v0 answer with UNSUPPORTED_VERSION.
        let mut s = TcpStream::connect(b.local_addr()).unwrap();
        s.write_all(&[0, 0, 0, 10, 0, 18, 0, 99, 0, 0, 0, 5, 0xff, 0xff])
            .unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        assert_eq!(&body[..6], &[0, 0, 0, 5, 0, 35]);
        let mut c = client(&b);
        let _: MetadataResponse = c
            .request(ApiKey::Metadata, 12, &MetadataRequest::default())
            .unwrap();
    }
}
