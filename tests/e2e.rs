//! End-to-end tests: a real `tern serve` process driven by librdkafka (the `rdkafka` crate)
//! and, for bad input, by raw sockets. Data-path tests use manual assignment (`assign`);
//! the group tests at the end `subscribe` and commit through the group coordinator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Broker;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::{Offset, TopicPartitionList};

/// How long any single wait on the broker may take before the test fails. Generous: the
/// machines are shared and slow at times; no test asserts on elapsed time.
const DEADLINE: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------------------ records

/// A record as produced, compared with what is consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: Option<i64>,
}

impl Rec {
    fn value(v: impl Into<Vec<u8>>) -> Rec {
        Rec {
            key: None,
            value: Some(v.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    fn keyed(k: impl Into<Vec<u8>>, v: impl Into<Vec<u8>>) -> Rec {
        Rec {
            key: Some(k.into()),
            ..Rec::value(v)
        }
    }
}

/// A consumed record with its position.
#[derive(Debug, Clone)]
struct Got {
    partition: i32,
    offset: i64,
    rec: Rec,
}

// ------------------------------------------------------------------------------ producer

/// Outcome of one send: (partition, offset) or the delivery error.
type Outcome = Result<(i32, i64), KafkaError>;

/// Delivery reports in arrival order: (send id, outcome).
type Reports = Arc<Mutex<Vec<(usize, Outcome)>>>;

/// Collects every delivery report, keyed by the id given at send time.
#[derive(Default)]
struct Recorder {
    outcomes: Reports,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let outcome = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        self.outcomes.lock().unwrap().push((id, outcome));
    }
}

type Prod = BaseProducer<Recorder>;

fn client_config(b: &Broker, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.addr());
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

/// A producer with acks=all (unless `extra` says otherwise).
fn producer(b: &Broker, extra: &[(&str, &str)]) -> Prod {
    let mut c = client_config(b, &[("acks", "all"), ("linger.ms", "5")]);
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create_with_context(Recorder::default())
        .expect("producer")
}

/// Enqueues one record, waiting (serving delivery reports) while the local queue is full.
fn send(p: &Prod, topic: &str, partition: Option<i32>, rec: &Rec, id: usize) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut r = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, id);
        if let Some(k) = &rec.key {
            r = r.key(k.as_slice());
        }
        if let Some(v) = &rec.value {
            r = r.payload(v.as_slice());
        }
        if let Some(ts) = rec.timestamp {
            r = r.timestamp(ts);
        }
        if let Some(part) = partition {
            r = r.partition(part);
        }
        if !rec.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(rec.headers.len());
            for (key, value) in &rec.headers {
                h = h.insert(Header {
                    key: key.as_str(),
                    value: value.as_deref(),
                });
            }
            r = r.headers(h);
        }
        match p.send(r) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if Instant::now() < deadline =>
            {
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("send to {topic}: {e}"),
        }
    }
}

/// Waits until every enqueued record has a delivery report.
fn flush(p: &Prod) {
    p.flush(DEADLINE).expect("flush");
}

/// Delivery reports so far, by send id.
fn outcomes(p: &Prod) -> BTreeMap<usize, Outcome> {
    p.context()
        .outcomes
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .collect()
}

/// Produces `recs` (ids 0..n), waits for all deliveries and returns (partition, offset) per
/// record; every delivery must have succeeded.
fn produce_all(p: &Prod, topic: &str, partition: Option<i32>, recs: &[Rec]) -> Vec<(i32, i64)> {
    let base = p.context().outcomes.lock().unwrap().len();
    for (i, r) in recs.iter().enumerate() {
        send(p, topic, partition, r, base + i);
    }
    flush(p);
    let all = outcomes(p);
    assert_eq!(
        all.len(),
        base + recs.len(),
        "a record has no delivery report"
    );
    (0..recs.len())
        .map(|i| match &all[&(base + i)] {
            Ok(pos) => *pos,
            Err(e) => panic!("record {i} to {topic} not delivered: {e}"),
        })
        .collect()
}

// ------------------------------------------------------------------------------ consumer

/// A consumer for manual assignment: a group.id is set (librdkafka wants one) but unused,
/// no offsets are committed.
fn consumer(b: &Broker, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = client_config(
        b,
        &[
            ("group.id", "tern-e2e-unused"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "error"),
        ],
    );
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("consumer")
}

fn assign(c: &BaseConsumer, topic: &str, parts: &[(i32, Offset)]) {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in parts {
        tpl.add_partition_offset(topic, *p, *o).unwrap();
    }
    c.assign(&tpl).expect("assign");
}

/// Polls until `n` records arrived (failing at the deadline or on any consumer error).
fn consume(c: &BaseConsumer, n: usize) -> Vec<Got> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "consumed only {} of {n} records",
            got.len()
        );
        match c.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(e)) => panic!("consumer error after {} records: {e}", got.len()),
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                got.push(Got {
                    partition: m.partition(),
                    offset: m.offset(),
                    rec: Rec {
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers,
                        timestamp: m.timestamp().to_millis(),
                    },
                });
            }
        }
    }
    got
}

/// A fresh consumer reading `topic`/`partition` from `from` until `n` records arrived.
fn read_partition(b: &Broker, topic: &str, partition: i32, from: i64, n: usize) -> Vec<Got> {
    let c = consumer(b, &[]);
    assign(&c, topic, &[(partition, Offset::Offset(from))]);
    consume(&c, n)
}

/// (low, high) watermarks through a fresh client.
fn watermarks(b: &Broker, topic: &str, partition: i32) -> (i64, i64) {
    consumer(b, &[])
        .fetch_watermarks(topic, partition, DEADLINE)
        .expect("watermarks")
}

fn assert_contiguous(got: &[Got], from: i64) {
    for (i, g) in got.iter().enumerate() {
        assert_eq!(
            g.offset,
            from + i as i64,
            "offsets not contiguous at index {i}"
        );
    }
}

// ------------------------------------------------------------------------------ admin

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

fn admin(b: &Broker) -> AdminClient<DefaultClientContext> {
    client_config(b, &[]).create().expect("admin client")
}

fn create_topic(b: &Broker, name: &str, partitions: i32) {
    let opts = AdminOptions::new().operation_timeout(Some(DEADLINE));
    let results = block_on(admin(b).create_topics(
        &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
        &opts,
    ))
    .expect("CreateTopics");
    assert_eq!(results.len(), 1);
    results[0]
        .as_ref()
        .unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
}

// ------------------------------------------------------------------------------ tests

/// Guards the full produce → consume path through librdkafka: keys, values, headers and
/// explicit timestamps come back identical, at contiguous offsets.
#[test]
fn round_trip_10k_records_with_keys_headers_timestamps() {
    let b = Broker::start("");
    let topic = "roundtrip";
    let n = 10_000;
    let t0 = 1_700_000_000_000i64;
    let recs: Vec<Rec> = (0..n)
        .map(|i| Rec {
            key: (i % 10 != 0).then(|| format!("key-{}", i % 97).into_bytes()),
            value: (i % 50 != 7).then(|| format!("value-{i}-{}", "x".repeat(i % 300)).into()),
            headers: (0..i % 4)
                .map(|h| {
                    let value = (h != 2).then(|| format!("hv-{i}-{h}").into_bytes());
                    (format!("h{h}"), value)
                })
                .collect(),
            timestamp: Some(t0 + i as i64 * 3),
        })
        .collect();
    let p = producer(&b, &[]);
    let positions = produce_all(&p, topic, None, &recs);
    // One partition: every record has its own offset, all of 0..n.
    assert!(positions.iter().all(|&(part, _)| part == 0));
    let offsets: HashSet<i64> = positions.iter().map(|&(_, o)| o).collect();
    assert_eq!(offsets, (0..n as i64).collect());
    let got = read_partition(&b, topic, 0, 0, n);
    assert_contiguous(&got, 0);
    let by_offset: HashMap<i64, &Rec> = positions.iter().map(|(_, o)| *o).zip(&recs).collect();
    for g in &got {
        assert_eq!(
            &g.rec, by_offset[&g.offset],
            "record at offset {}",
            g.offset
        );
    }
    assert_eq!(watermarks(&b, topic, 0), (0, n as i64));
    b.assert_no_refused_frames();
}

/// Guards compressed batches: each codec librdkafka offers is stored and served so that
/// the consumer decompresses exactly what was produced.
#[test]
fn all_compression_codecs_round_trip() {
    let b = Broker::start("");
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        let recs: Vec<Rec> = (0..2_000)
            .map(|i| Rec {
                headers: vec![("codec".into(), Some(codec.as_bytes().to_vec()))],
                timestamp: Some(1_600_000_000_000 + i),
                ..Rec::keyed(
                    format!("k{}", i % 13),
                    format!("{codec} record {i} {}", "compressible ".repeat(20)),
                )
            })
            .collect();
        let p = producer(&b, &[("compression.type", codec), ("linger.ms", "20")]);
        let positions = produce_all(&p, &topic, None, &recs);
        assert!(positions.iter().all(|&(part, _)| part == 0));
        let got = read_partition(&b, &topic, 0, 0, recs.len());
        assert_contiguous(&got, 0);
        let by_offset: HashMap<i64, &Rec> = positions.iter().map(|(_, o)| *o).zip(&recs).collect();
        for g in &got {
            assert_eq!(&g.rec, by_offset[&g.offset], "{codec}: offset {}", g.offset);
        }
    }
    b.assert_no_refused_frames();
}

/// Guards per-key ordering: with librdkafka's default partitioner every record of a key lands
/// in one partition of a 4-partition topic (made by CreateTopics) and is read in produce order.
#[test]
fn keyed_records_keep_partition_and_order() {
    let b = Broker::start("");
    let topic = "keyed";
    create_topic(&b, topic, 4);
    let keys: Vec<String> = (0..8).map(|k| format!("customer-{k}")).collect();
    let per_key = 250;
    let recs: Vec<Rec> = (0..per_key)
        .flat_map(|seq| {
            keys.iter()
                .map(move |k| Rec::keyed(k.clone(), format!("{k}#{seq}")))
        })
        .collect();
    let p = producer(&b, &[]);
    let positions = produce_all(&p, topic, None, &recs);
    let mut key_partition: HashMap<&[u8], i32> = HashMap::new();
    for (r, (part, _)) in recs.iter().zip(&positions) {
        let prev = key_partition.insert(r.key.as_deref().unwrap(), *part);
        assert!(
            prev.is_none_or(|p| p == *part),
            "key split across partitions"
        );
    }
    let used: HashSet<i32> = key_partition.values().copied().collect();
    assert!(used.len() > 1, "all keys hashed to one partition: {used:?}");

    let c = consumer(&b, &[]);
    assign(
        &c,
        topic,
        &(0..4).map(|p| (p, Offset::Beginning)).collect::<Vec<_>>(),
    );
    let got = consume(&c, recs.len());
    let mut seqs: HashMap<Vec<u8>, Vec<(i32, usize)>> = HashMap::new();
    let mut per_partition: HashMap<i32, Vec<i64>> = HashMap::new();
    for g in &got {
        let value = String::from_utf8(g.rec.value.clone().unwrap()).unwrap();
        let (k, seq) = value.split_once('#').unwrap();
        assert_eq!(g.rec.key.as_deref(), Some(k.as_bytes()));
        seqs.entry(k.as_bytes().to_vec())
            .or_default()
            .push((g.partition, seq.parse().unwrap()));
        per_partition.entry(g.partition).or_default().push(g.offset);
    }
    for (key, list) in &seqs {
        let part = key_partition[key.as_slice()];
        assert!(
            list.iter().all(|(p, _)| *p == part),
            "key consumed from two partitions"
        );
        let order: Vec<usize> = list.iter().map(|(_, s)| *s).collect();
        assert_eq!(order, (0..per_key).collect::<Vec<_>>(), "key order");
    }
    assert_eq!(seqs.len(), keys.len());
    for (part, offsets) in &per_partition {
        assert_eq!(
            offsets,
            &(0..offsets.len() as i64).collect::<Vec<_>>(),
            "partition {part}"
        );
    }
    b.assert_no_refused_frames();
}

/// Guards ListOffsets: by time it gives the first offset whose timestamp is ≥ T (inside a
/// batch too, and "end" after the last), and the earliest/latest offsets are the watermarks.
#[test]
fn list_offsets_by_time_and_watermarks() {
    let b = Broker::start("");
    let topic = "times";
    let t0 = 1_650_000_000_000i64;
    let p = producer(&b, &[]);
    // Ten batches of ten records (a flush between them), timestamps t0, t0+10, ...
    for batch in 0..10 {
        let recs: Vec<Rec> = (0..10)
            .map(|i| {
                let n = batch * 10 + i;
                Rec {
                    timestamp: Some(t0 + 10 * n),
                    ..Rec::value(format!("r{n}"))
                }
            })
            .collect();
        produce_all(&p, topic, Some(0), &recs);
    }
    let c = consumer(&b, &[]);
    assert_eq!(c.fetch_watermarks(topic, 0, DEADLINE).unwrap(), (0, 100));
    let cases: [(i64, Offset); 7] = [
        (t0 - 1_000, Offset::Offset(0)),
        (t0, Offset::Offset(0)),
        (t0 + 1, Offset::Offset(1)),
        (t0 + 10 * 30, Offset::Offset(30)),
        (t0 + 10 * 37 + 5, Offset::Offset(38)),
        (t0 + 10 * 99, Offset::Offset(99)),
        (t0 + 10 * 99 + 1, Offset::End),
    ];
    for (ts, expected) in cases {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(ts))
            .unwrap();
        let found = c
            .offsets_for_times(tpl, DEADLINE)
            .expect("offsets_for_times");
        let e = found.find_partition(topic, 0).unwrap();
        e.error().expect("partition error");
        assert_eq!(e.offset(), expected, "first offset with timestamp >= {ts}");
    }
    // The offset found by time is where a consumer starts reading.
    let c2 = consumer(&b, &[]);
    assign(&c2, topic, &[(0, Offset::Offset(38))]);
    let got = consume(&c2, 1);
    assert_eq!((got[0].offset, got[0].rec.timestamp), (38, Some(t0 + 380)));
    b.assert_no_refused_frames();
}

/// Guards the long-poll wake-up: a fetch parked at the end of the log returns the record
/// produced after it. The fetch may wait longer (60 s) than the consumer polls (30 s), so
/// only a wake-up on the produce lets the record arrive.
#[test]
fn long_poll_fetch_wakes_on_produce() {
    let b = Broker::start("");
    let topic = "longpoll";
    let p = producer(&b, &[]);
    produce_all(&p, topic, Some(0), &[Rec::value("first")]);
    let c = consumer(
        &b,
        &[
            ("fetch.wait.max.ms", "60000"),
            ("socket.timeout.ms", "120000"),
        ],
    );
    assign(&c, topic, &[(0, Offset::Offset(0))]);
    // Receiving the first record means the fetcher runs; its next fetch, at offset 1, waits.
    assert_eq!(consume(&c, 1)[0].rec.value.as_deref(), Some(&b"first"[..]));
    produce_all(&p, topic, Some(0), &[Rec::value("second")]);
    match c.poll(Duration::from_secs(30)) {
        Some(Ok(m)) => {
            assert_eq!((m.offset(), m.payload()), (1, Some(&b"second"[..])));
        }
        Some(Err(e)) => panic!("consumer error: {e}"),
        None => panic!("the parked fetch did not return the new record within 30 s"),
    }
    b.assert_no_refused_frames();
}

/// A producer thread sending numbered records to `topic`/0 until `stop` is set; it then
/// drops what is still queued or in flight and returns every delivery outcome by record
/// number (records not reported as delivered may or may not have been written). The reports
/// are shared so the test can watch them arrive.
fn spawn_stream_producer(
    b: &Broker,
    topic: &'static str,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<BTreeMap<usize, Outcome>>, Reports) {
    let p = producer(
        b,
        &[
            // Many small batches, so that several produce requests are in flight at the kill.
            ("linger.ms", "1"),
            ("batch.num.messages", "50"),
            // Every dropped response closes the connection: reconnect at once.
            ("reconnect.backoff.ms", "10"),
            ("reconnect.backoff.max.ms", "50"),
            ("message.timeout.ms", "10000"),
            ("queue.buffering.max.messages", "5000"),
        ],
    );
    let reports = p.context().outcomes.clone();
    let handle = std::thread::spawn(move || {
        let mut id = 0;
        while !stop.load(Ordering::SeqCst) {
            let key = format!("k{id}");
            let value = stream_value(id);
            let record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, id)
                .partition(0)
                .key(key.as_bytes())
                .payload(value.as_bytes());
            match p.send(record) {
                Ok(()) => id += 1,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    p.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("send: {e}"),
            }
            p.poll(Duration::ZERO);
        }
        p.purge(PurgeConfig::default().queue());
        let _ = p.flush(DEADLINE);
        let all = outcomes(&p);
        assert_eq!(all.len(), id, "a record has no delivery report");
        all
    });
    (handle, reports)
}

fn stream_value(id: usize) -> String {
    format!("record {id} {}", "payload ".repeat(id % 16))
}

/// Waits until `n` records were reported delivered.
fn wait_delivered(reports: &Reports, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let ok = reports
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, o)| o.is_ok())
            .count();
        if ok >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {ok} deliveries");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// After a crash or a stop: the log is 0..hw without holes or damage, every delivered
/// record is at the offset its delivery reported, and every record present is one that was
/// sent (in send order). Returns hw.
fn check_after_restart(b: &Broker, topic: &str, outcomes: &BTreeMap<usize, Outcome>) -> i64 {
    let delivered: BTreeMap<i64, usize> = outcomes
        .iter()
        .filter_map(|(id, o)| o.as_ref().ok().map(|(_, off)| (*off, *id)))
        .collect();
    let ok = outcomes.values().filter(|o| o.is_ok()).count();
    assert!(ok > 0, "nothing was delivered");
    assert_eq!(
        delivered.len(),
        ok,
        "two deliveries reported the same offset"
    );
    let (low, hw) = watermarks(b, topic, 0);
    assert_eq!(low, 0);
    let last_delivered = *delivered.keys().next_back().unwrap();
    assert!(
        hw > last_delivered,
        "hw {hw} but offset {last_delivered} was acknowledged"
    );
    eprintln!(
        "{topic}: {} records sent, {ok} acknowledged, {hw} in the log after restart",
        outcomes.len()
    );
    let got = read_partition(b, topic, 0, 0, hw as usize);
    assert_contiguous(&got, 0);
    let mut prev_id = None;
    for g in &got {
        let value = String::from_utf8(g.rec.value.clone().unwrap()).unwrap();
        let id: usize = value.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(
            value,
            stream_value(id),
            "damaged record at offset {}",
            g.offset
        );
        assert_eq!(g.rec.key.as_deref(), Some(format!("k{id}").as_bytes()));
        if let Some(&want) = delivered.get(&g.offset) {
            assert_eq!(
                id, want,
                "offset {} holds another record than acknowledged",
                g.offset
            );
        }
        assert!(prev_id.is_none_or(|p| p < id), "records out of send order");
        prev_id = Some(id);
    }
    hw
}

/// Guards durability under `flush = "always"`: after SIGKILL in the middle of a stream of
/// acks=all produces, a restarted broker serves every acknowledged record, undamaged, at
/// contiguous offsets, and appends after them.
#[test]
fn crash_keeps_every_acknowledged_record() {
    let mut b = Broker::start("flush = \"always\"");
    let topic = "crash";
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, reports) = spawn_stream_producer(&b, topic, stop.clone());
    // Kill once a good number of acknowledgements came back, while sends continue.
    wait_delivered(&reports, 3_000);
    b.kill9();
    stop.store(true, Ordering::SeqCst);
    let outcomes = handle.join().expect("producer thread");
    b.restart();
    let hw = check_after_restart(&b, topic, &outcomes);
    // The log goes on where it stopped.
    let p = producer(&b, &[]);
    let pos = produce_all(&p, topic, Some(0), &[Rec::value("after restart")]);
    assert_eq!(pos, vec![(0, hw)]);
    b.assert_no_refused_frames();
}

/// Guards the shard journals across a crash and a new placement: SIGKILL under an acks=all
/// load over 200 partitions on two shards; the restart, on one shard, replays both journals
/// and serves every acknowledged record at its offset, each partition in send order, once.
#[test]
fn sigkill_over_200_partitions_then_restart_with_other_cores() {
    const PARTITIONS: i32 = 200;
    let mut b = Broker::start("cores = [0, 1]");
    let topic = "wide";
    create_topic(&b, topic, PARTITIONS);
    let p = producer(&b, &[("linger.ms", "1"), ("message.timeout.ms", "10000")]);
    let reports = p.context().outcomes.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut id = 0usize;
        while !stopped.load(Ordering::SeqCst) {
            let value = stream_value(id);
            let record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, id)
                .partition((id % PARTITIONS as usize) as i32)
                .payload(value.as_bytes());
            match p.send(record) {
                Ok(()) => id += 1,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    p.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("send: {e}"),
            }
            p.poll(Duration::ZERO);
        }
        p.purge(PurgeConfig::default().queue());
        let _ = p.flush(DEADLINE);
        outcomes(&p)
    });
    wait_delivered(&reports, 6_000);
    b.kill9();
    stop.store(true, Ordering::SeqCst);
    let sent = handle.join().expect("producer thread");
    b.set_extra("cores = [0]");
    b.restart();
    assert!(b.log().contains("journal replayed"), "{}", b.log());
    // What each acknowledged (partition, offset) must hold.
    let acked: BTreeMap<(i32, i64), usize> = sent
        .iter()
        .filter_map(|(id, o)| o.as_ref().ok().map(|po| (*po, *id)))
        .collect();
    assert!(acked.len() >= 6_000);
    let c = consumer(&b, &[]);
    let mut total = 0usize;
    let mut parts = Vec::new();
    for part in 0..PARTITIONS {
        let (low, hw) = c
            .fetch_watermarks(topic, part, DEADLINE)
            .expect("watermarks");
        assert_eq!(low, 0);
        total += hw as usize;
        parts.push((part, Offset::Offset(0)));
    }
    assign(&c, topic, &parts);
    let got = consume(&c, total);
    let mut last_id: BTreeMap<i32, usize> = BTreeMap::new();
    let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
    for g in &got {
        let value = String::from_utf8(g.rec.value.clone().unwrap()).unwrap();
        let id: usize = value.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(value, stream_value(id), "damaged record");
        assert_eq!(
            id % PARTITIONS as usize,
            g.partition as usize,
            "record in another partition"
        );
        let want = next_offset.entry(g.partition).or_insert(0);
        assert_eq!(
            g.offset, *want,
            "partition {} has a gap or a duplicate",
            g.partition
        );
        *want += 1;
        if let Some(prev) = last_id.insert(g.partition, id) {
            assert!(
                prev < id,
                "partition {}: records out of send order",
                g.partition
            );
        }
        if let Some(&acked_id) = acked.get(&(g.partition, g.offset)) {
            assert_eq!(
                acked_id, id,
                "offset holds another record than acknowledged"
            );
        }
    }
    for (part, offset) in acked.keys() {
        assert!(
            next_offset.get(part).is_some_and(|end| offset < end),
            "acknowledged record at {part}/{offset} lost"
        );
    }
    b.assert_no_refused_frames();
}

/// Guards the graceful stop: SIGTERM while acks=all produces are in flight; the broker exits
/// with status 0 and after a restart every acknowledged record is there.
#[test]
fn sigterm_during_produce_keeps_acknowledged_records() {
    let mut b = Broker::start("");
    let topic = "graceful";
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, reports) = spawn_stream_producer(&b, topic, stop.clone());
    wait_delivered(&reports, 2_000);
    let status = b.stop();
    stop.store(true, Ordering::SeqCst);
    assert!(
        status.success(),
        "broker exited with {status}:\n{}",
        b.log()
    );
    let outcomes = handle.join().expect("producer thread");
    // Every log closed cleanly: the marker lets the next start skip crash-only work, and
    // that start takes it, so that a crash of its own is never taken for a clean stop.
    let marker = b.data_dir().join(".tern-clean-shutdown");
    assert!(marker.exists(), "no clean-shutdown marker:\n{}", b.log());
    b.restart();
    assert!(!marker.exists(), "the marker outlived the start");
    assert_eq!(last_recovery(&b), "AfterCleanShutdown");
    check_after_restart(&b, topic, &outcomes);
    b.kill9();
    assert!(!marker.exists());
    b.restart();
    assert_eq!(last_recovery(&b), "Full");
    check_after_restart(&b, topic, &outcomes);
    b.assert_no_refused_frames();
}

/// How the last start opened its partitions, from its "partitions opened" log line.
fn last_recovery(b: &Broker) -> String {
    let log = b.log();
    let line = log
        .lines()
        .rfind(|l| l.contains("partitions opened"))
        .unwrap_or_else(|| panic!("no \"partitions opened\" line:\n{log}"));
    // The log may be coloured: drop escape sequences before reading the field.
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let value = plain
        .split("recovery=")
        .nth(1)
        .unwrap_or_else(|| panic!("no recovery field: {plain}"));
    value
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

// ------------------------------------------------------------------------------ raw socket

fn raw_connect(b: &Broker) -> TcpStream {
    let s = TcpStream::connect(b.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// A request frame: length, header (in the header version of `api`/`version`), body bytes.
fn frame_with_body(api_key: i16, version: i16, header_version: i16, body: &[u8]) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("e2e-raw")));
    let mut buf = vec![0u8; 4];
    header.encode(&mut buf, header_version).unwrap();
    buf.extend_from_slice(body);
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf
}

fn request_frame<T: Encodable>(api: ApiKey, version: i16, body: &T) -> Vec<u8> {
    let mut b = Vec::new();
    body.encode(&mut b, version).unwrap();
    frame_with_body(api as i16, version, api.request_header_version(version), &b)
}

/// Asserts the broker closes the socket without answering.
fn expect_closed(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: the broker answered ({n} bytes) instead of closing"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("{what}: the connection is still open after 30 s")
        }
        Err(_) => {} // reset: closed too
    }
}

/// Sends one request and reads its response body (after the response header).
fn round_trip(s: &mut TcpStream, api: ApiKey, version: i16, frame: &[u8]) -> Bytes {
    s.write_all(frame).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, api.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 42);
    body
}

fn batch(values: &[&str]) -> Vec<u8> {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = Vec::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf
}

/// ProduceRequest v3 of one batch to `topic`/0; returns (error code, base offset).
fn raw_produce(b: &Broker, topic: &str, batch: Vec<u8>) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch)))])]);
    let mut s = raw_connect(b);
    let mut body = round_trip(
        &mut s,
        ApiKey::Produce,
        3,
        &request_frame(ApiKey::Produce, 3, &req),
    );
    let resp = ProduceResponse::decode(&mut body, 3).unwrap();
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A produce and a consume through new librdkafka clients (new connections) work.
fn assert_still_serving(b: &Broker, topic: &str, what: &str) {
    let p = producer(b, &[]);
    let value = format!("after {what}");
    let pos = produce_all(&p, topic, Some(0), &[Rec::value(value.clone())]);
    let got = read_partition(b, topic, 0, pos[0].1, 1);
    assert_eq!(
        got[0].rec.value.as_deref(),
        Some(value.as_bytes()),
        "after {what}"
    );
}

/// Guards bad input: each bad frame closes only its own connection and the broker keeps
/// serving new clients; an unknown topic (auto-create off) is refused with
/// UNKNOWN_TOPIC_OR_PARTITION; a batch with a wrong CRC gets CORRUPT_MESSAGE and writes nothing.
#[test]
fn bad_input_is_refused_and_the_broker_keeps_serving() {
    let mut b =
        Broker::start("auto.create.topics.enable = false\nsocket.request.max.bytes = 1048576");
    let topic = "sane";
    create_topic(&b, topic, 1);
    assert_still_serving(&b, topic, "start");

    let metadata = MetadataRequest::default();
    let mut metadata_v99 = request_frame(ApiKey::Metadata, 9, &metadata);
    metadata_v99[6..8].copy_from_slice(&99i16.to_be_bytes());
    // Topics: a compact array announcing 4 entries, then the frame ends.
    let garbage_metadata = frame_with_body(ApiKey::Metadata as i16, 9, 2, &[0x05, 0xff]);
    let truncated_produce = {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch(&["x"]))))])]);
        let mut body = Vec::new();
        req.encode(&mut body, 3).unwrap();
        body.truncate(body.len() - 20);
        frame_with_body(ApiKey::Produce as i16, 3, 1, &body)
    };
    let oversized = {
        let mut f = (1_048_577i32).to_be_bytes().to_vec();
        f.extend_from_slice(&frame_with_body(ApiKey::Metadata as i16, 9, 2, &[0; 64])[4..]);
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a frame over socket.request.max.bytes", oversized),
        ("a negative frame size", (-1i32).to_be_bytes().to_vec()),
        ("an unknown API key", frame_with_body(999, 0, 1, &[])),
        ("Metadata v99", metadata_v99),
        ("a Metadata body cut short", garbage_metadata),
        ("a truncated Produce body", truncated_produce),
    ];
    for (what, bytes) in cases {
        let mut s = raw_connect(&b);
        s.write_all(&bytes).unwrap();
        expect_closed(&mut s, what);
        b.assert_alive();
        assert_still_serving(&b, topic, what);
    }

    // Unknown topic with auto-creation off: librdkafka learns it from Metadata (it fails the
    // record once the topic stays unknown for topic.metadata.propagation.max.ms); a Produce
    // sent anyway gets UNKNOWN_TOPIC_OR_PARTITION (3). Neither creates the topic.
    let p = producer(
        &b,
        &[
            ("message.timeout.ms", "50000"),
            ("topic.metadata.propagation.max.ms", "100"),
        ],
    );
    send(&p, "no-such-topic", Some(0), &Rec::value("lost"), 0);
    flush(&p);
    match &outcomes(&p)[&0] {
        Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
        )) => {}
        other => panic!("produce to an unknown topic: {other:?}"),
    }
    assert_eq!(raw_produce(&b, "no-such-topic", batch(&["x"])).0, 3);
    let md = consumer(&b, &[])
        .fetch_metadata(Some("no-such-topic"), DEADLINE)
        .expect("metadata");
    assert_eq!(
        md.topics()[0].error(),
        Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART),
        "the unknown topic was created"
    );
    assert_still_serving(&b, topic, "an unknown topic");

    // A batch with a wrong CRC is refused and nothing is written; the same batch intact is
    // accepted (so the refusal is for the CRC, not for the request).
    let (_, hw) = watermarks(&b, topic, 0);
    let good = batch(&["raw one", "raw two"]);
    let mut corrupt = good.clone();
    *corrupt.last_mut().unwrap() ^= 0x20;
    assert_eq!(
        raw_produce(&b, topic, corrupt),
        (2, -1),
        "CORRUPT_MESSAGE expected"
    );
    assert_eq!(
        watermarks(&b, topic, 0).1,
        hw,
        "a corrupt batch moved the high watermark"
    );
    assert_eq!(raw_produce(&b, topic, good), (0, hw));
    let got = read_partition(&b, topic, 0, hw, 2);
    assert_eq!(got[1].rec.value.as_deref(), Some(&b"raw two"[..]));
    assert_eq!(watermarks(&b, topic, 0).1, hw + 2);
}

/// The niceness of each thread of process `pid`, by thread name.
fn thread_nices(pid: libc::pid_t) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = entry.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // The fields after the ")" closing the name start at field 3; nice is field 19.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let nice: i32 = rest.split(' ').nth(16).unwrap().parse().unwrap();
        out.push((comm.trim().to_owned(), nice));
    }
    out
}

/// Guards `shard.nice`: every shard thread runs at the configured niceness, the other
/// threads keep the one the broker was started with, and the broker serves.
#[test]
fn shard_nice_applies_to_the_shard_threads() {
    let b = Broker::start("cores = [0, 1]\nshard.nice = 7");
    // SAFETY: getpriority on this process reads our own niceness.
    let ours = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let threads = thread_nices(b.pid());
    let shards: Vec<i32> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("tern-shard-"))
        .map(|(_, nice)| *nice)
        .collect();
    assert_eq!(shards, [7, 7], "{threads:?}");
    let main = threads.iter().find(|(name, _)| name == "tern").unwrap();
    assert_eq!(main.1, ours, "{threads:?}");
    create_topic(&b, "niced", 2);
    assert_still_serving(&b, "niced", "with shard.nice = 7");
}

/// Guards placement: pins and `balanced` decide which shard owns each partition, the
/// broker reports it in DescribeConfigs, and one connection reaches partitions on both shards.
#[test]
fn placement_pins_and_cross_shard_traffic() {
    let b = Broker::start(
        "cores = [0, 1]\nplacement = \"balanced\"\n[pins]\n\"pinned/0\" = 1\n\"pinned/1\" = 1",
    );
    let topic = "pinned";
    create_topic(&b, topic, 4);
    let a = admin(&b);
    let opts = AdminOptions::new().request_timeout(Some(DEADLINE));
    // The shards report what they own; wait until all four partitions are open.
    let deadline = Instant::now() + DEADLINE;
    let owners: Vec<(i32, usize)> = loop {
        let results =
            block_on(a.describe_configs(&[ResourceSpecifier::Topic(topic)], &opts)).unwrap();
        let res = results[0].as_ref().expect("DescribeConfigs");
        assert_eq!(res.specifier, OwnedResourceSpecifier::Topic(topic.into()));
        let entry = res
            .get("tern.partition.shards")
            .expect("tern.partition.shards entry");
        assert!(entry.is_read_only);
        let value = entry.value.clone().unwrap_or_default();
        let owners: Vec<(i32, usize)> = value
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (p, shard) = s.split_once(':').expect("partition:shard");
                (p.parse().unwrap(), shard.parse().unwrap())
            })
            .collect();
        if owners.len() >= 4 || Instant::now() >= deadline {
            break owners;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut partitions: Vec<i32> = owners.iter().map(|(p, _)| *p).collect();
    partitions.sort();
    assert_eq!(
        partitions,
        vec![0, 1, 2, 3],
        "each partition exactly once: {owners:?}"
    );
    let shard_of: HashMap<i32, usize> = owners.iter().copied().collect();
    assert_eq!((shard_of[&0], shard_of[&1]), (1, 1), "pins: {owners:?}");
    assert!(shard_of.values().all(|s| *s < 2), "{owners:?}");
    assert!(
        shard_of.values().any(|s| *s == 0),
        "balanced placement put no partition on shard 0: {owners:?}"
    );

    let p = producer(&b, &[]);
    let mut expected: HashMap<i32, Vec<Rec>> = HashMap::new();
    for i in 0..400 {
        let part = i % 4;
        let r = Rec::keyed(format!("k{i}"), format!("p{part} r{i}"));
        send(&p, topic, Some(part), &r, i as usize);
        expected.entry(part).or_default().push(r);
    }
    flush(&p);
    for (id, o) in outcomes(&p) {
        let (part, _) = o.unwrap_or_else(|e| panic!("record {id}: {e}"));
        assert_eq!(part, id as i32 % 4);
    }
    let c = consumer(&b, &[]);
    assign(
        &c,
        topic,
        &(0..4).map(|p| (p, Offset::Beginning)).collect::<Vec<_>>(),
    );
    let got = consume(&c, 400);
    let mut by_part: HashMap<i32, Vec<Rec>> = HashMap::new();
    for g in got {
        by_part.entry(g.partition).or_default().push(g.rec);
    }
    for part in 0..4 {
        let mut want = expected[&part].clone();
        let mut have = by_part.remove(&part).unwrap_or_default();
        want.iter_mut()
            .chain(have.iter_mut())
            .for_each(|r| r.timestamp = None);
        assert_eq!(have, want, "partition {part} (shard {})", shard_of[&part]);
    }
    b.assert_no_refused_frames();
}

/// Guards bodies whose array lengths are absurd (a 12-byte Metadata v1 announcing 2^31 - 1
/// topics, a Metadata v9 of 0xff bytes): the connection is closed, the broker survives.
#[test]
fn absurd_array_lengths_do_not_kill_the_broker() {
    let mut b = Broker::start("");
    let topic = "survivor";
    create_topic(&b, topic, 1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Metadata v1 with 2^31 - 1 topics",
            frame_with_body(ApiKey::Metadata as i16, 1, 1, &[0x7f, 0xff, 0xff, 0xff]),
        ),
        (
            "Metadata v9 body of 0xff bytes",
            frame_with_body(ApiKey::Metadata as i16, 9, 2, &[0xff; 16]),
        ),
    ];
    for (what, bytes) in cases {
        let mut s = raw_connect(&b);
        s.write_all(&bytes).unwrap();
        expect_closed(&mut s, what);
        b.assert_alive();
        assert_still_serving(&b, topic, what);
    }
}

/// Guards idempotent produce: the broker drops every 5th Produce response after the append
/// (a test-only fault), librdkafka retries with the same sequences, and the log holds every
/// record exactly once and in order; the same after a SIGKILL and restart of the broker
/// (the sequence state is rebuilt from the log), with the same producer instance.
#[test]
fn idempotent_producer_retries_write_no_duplicates() {
    let mut b = Broker::start_with_env("", &[("TERN_TEST_DROP_PRODUCE_RESPONSE_EVERY", "5")]);
    create_topic(&b, "idem", 1);
    let p = producer(
        &b,
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "1"),
            ("batch.num.messages", "50"),
            // Every dropped response closes the connection: reconnect at once.
            ("reconnect.backoff.ms", "10"),
            ("reconnect.backoff.max.ms", "50"),
            ("retry.backoff.ms", "10"),
        ],
    );
    let recs = |from: usize, n: usize| -> Vec<Rec> {
        (from..from + n)
            .map(|i| Rec::value(format!("idem-{i}")))
            .collect()
    };
    let first = produce_all(&p, "idem", Some(0), &recs(0, 1500));
    b.kill9();
    b.restart();
    let second = produce_all(&p, "idem", Some(0), &recs(1500, 1500));
    let offsets: Vec<i64> = first.iter().chain(&second).map(|(_, o)| *o).collect();
    assert_eq!(offsets, (0..3000).collect::<Vec<i64>>(), "delivery offsets");
    let got = read_partition(&b, "idem", 0, 0, 3000);
    assert_contiguous(&got, 0);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.rec.value.as_deref(), Some(format!("idem-{i}").as_bytes()));
    }
    assert_eq!(
        watermarks(&b, "idem", 0).1,
        3000,
        "no duplicate was appended"
    );
    let drops = b.log().matches("produce response dropped").count();
    assert!(
        drops >= 2,
        "the fault fired {drops} times: no retry was exercised"
    );
}

// ------------------------------------------------------------------------------ groups

/// Broker settings for group tests: a short first-rebalance delay, short sessions allowed.
const GROUPS: &str = "group.initial.rebalance.delay.ms = 300\ngroup.min.session.timeout.ms = 1000";

/// A subscribing consumer of `group` (earliest reset, manual commits).
fn group_consumer(b: &Broker, group: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = client_config(
        b,
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "300"),
        ],
    );
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("group consumer")
}

fn assigned(c: &BaseConsumer) -> Vec<i32> {
    let mut parts: Vec<i32> = c
        .assignment()
        .expect("assignment")
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect();
    parts.sort_unstable();
    parts
}

/// Polls every consumer (serving rebalances) until `done` holds for their assignments.
fn poll_until(
    cs: &[&BaseConsumer],
    what: &str,
    done: impl Fn(&[Vec<i32>]) -> bool,
) -> Vec<Vec<i32>> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for c in cs {
            if let Some(Err(e)) = c.poll(Duration::from_millis(50)) {
                panic!("consumer error while waiting for {what}: {e}");
            }
        }
        let now: Vec<Vec<i32>> = cs.iter().map(|c| assigned(c)).collect();
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: assignments stuck at {now:?}"
        );
    }
}

/// Polls `c` until `n` records arrived (rebalances served on the way).
fn consume_group(c: &BaseConsumer, n: usize) -> Vec<(i32, i64, Vec<u8>)> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(Instant::now() < deadline, "consumed {} of {n}", got.len());
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => got.push((
                m.partition(),
                m.offset(),
                m.payload().unwrap_or(&[]).to_vec(),
            )),
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    got
}

/// Guards group sharing with both eager (range) and cooperative-sticky assignors: two
/// members of one group on a 4-partition topic get two partitions each; when one leaves,
/// the other gets all four.
#[test]
fn consumer_group_shares_partitions_and_rebalances_on_leave() {
    let b = Broker::start(GROUPS);
    create_topic(&b, "shared", 4);
    for (group, strategy) in [("g-range", "range"), ("g-coop", "cooperative-sticky")] {
        let cfg = [("partition.assignment.strategy", strategy)];
        let a = group_consumer(&b, group, &cfg);
        let c = group_consumer(&b, group, &cfg);
        a.subscribe(&["shared"]).unwrap();
        c.subscribe(&["shared"]).unwrap();
        let got = poll_until(&[&a, &c], "two partitions each", |asg| {
            asg.iter().all(|x| x.len() == 2)
        });
        let mut all = got.concat();
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2, 3], "{strategy}");
        drop(c);
        poll_until(&[&a], "all four after the other left", |asg| {
            asg[0].len() == 4
        });
    }
}

/// Guards session expiry: a member that joined (raw protocol) and then never heartbeats is
/// expelled after its session timeout, and the remaining librdkafka member gets every
/// partition back.
#[test]
fn silent_member_is_expelled_after_session_timeout() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::{
        ConsumerProtocolSubscription, GroupId, JoinGroupRequest, JoinGroupResponse,
        SyncGroupRequest, SyncGroupResponse,
    };
    let b = Broker::start(GROUPS);
    create_topic(&b, "expel", 4);
    let a = group_consumer(&b, "g-expel", &[]);
    a.subscribe(&["expel"]).unwrap();
    poll_until(&[&a], "the first member owns all", |asg| asg[0].len() == 4);
    let addr = b.addr();
    let silent = std::thread::spawn(move || {
        let mut c = tern_net::client::Client::connect(&addr, DEADLINE).unwrap();
        let mut sub = bytes::BytesMut::new();
        sub.extend_from_slice(&0i16.to_be_bytes());
        ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("expel")])
            .encode(&mut sub, 0)
            .unwrap();
        let join = |member: &str| {
            JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g-expel")))
                .with_session_timeout_ms(2000)
                .with_rebalance_timeout_ms(30_000)
                .with_member_id(StrBytes::from_string(member.to_string()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(sub.clone().freeze())])
        };
        let first: JoinGroupResponse = c.request(ApiKey::JoinGroup, 5, &join("")).unwrap();
        assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
        let joined: JoinGroupResponse = c
            .request(ApiKey::JoinGroup, 5, &join(&first.member_id))
            .unwrap();
        assert_eq!(joined.error_code, 0);
        let sync: SyncGroupResponse = c
            .request(
                ApiKey::SyncGroup,
                3,
                &SyncGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("g-expel")))
                    .with_generation_id(joined.generation_id)
                    .with_member_id(joined.member_id.clone()),
            )
            .unwrap();
        assert_eq!(sync.error_code, 0);
        // And now silence: no heartbeat ever.
        c
    });
    poll_until(&[&a], "the silent member got its share", |asg| {
        asg[0].len() == 2
    });
    let _keep_connection_open = silent.join().unwrap();
    poll_until(
        &[&a],
        "all partitions back after the session expired",
        |asg| asg[0].len() == 4,
    );
}

/// Guards committed offsets: they survive a SIGKILL and restart of the broker, and a new
/// member of the group resumes from them.
#[test]
fn commits_survive_restart_and_a_new_member_resumes() {
    use rdkafka::consumer::CommitMode;
    let mut b = Broker::start(GROUPS);
    create_topic(&b, "resume", 2);
    let p = producer(&b, &[]);
    for part in 0..2 {
        let recs: Vec<Rec> = (0..10)
            .map(|i| Rec::value(format!("p{part}-{i}")))
            .collect();
        produce_all(&p, "resume", Some(part), &recs);
    }
    let c = group_consumer(&b, "g-resume", &[]);
    c.subscribe(&["resume"]).unwrap();
    consume_group(&c, 20);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("resume", 0, Offset::Offset(4))
        .unwrap();
    tpl.add_partition_offset("resume", 1, Offset::Offset(7))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).expect("commit");
    drop(c);
    b.kill9();
    b.restart();
    let d = group_consumer(&b, "g-resume", &[]);
    d.subscribe(&["resume"]).unwrap();
    let mut got = consume_group(&d, 9);
    got.sort();
    let expected: Vec<(i32, i64, Vec<u8>)> = (4..10)
        .map(|i| (0, i, format!("p0-{i}").into_bytes()))
        .chain((7..10).map(|i| (1, i, format!("p1-{i}").into_bytes())))
        .collect();
    assert_eq!(got, expected);
    let committed = d.committed(DEADLINE).expect("committed");
    let mut offsets: Vec<(i32, Offset)> = committed
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    offsets.sort_by_key(|(p, _)| *p);
    assert_eq!(
        offsets,
        vec![(0, Offset::Offset(4)), (1, Offset::Offset(7))]
    );
}

/// Guards `auto.offset.reset` for a group without commits: earliest reads what exists,
/// latest reads only what comes after it joined.
#[test]
fn auto_offset_reset_earliest_and_latest() {
    let b = Broker::start(GROUPS);
    create_topic(&b, "reset", 1);
    let p = producer(&b, &[]);
    let old: Vec<Rec> = (0..5).map(|i| Rec::value(format!("old-{i}"))).collect();
    produce_all(&p, "reset", Some(0), &old);
    let early = group_consumer(&b, "g-early", &[]);
    early.subscribe(&["reset"]).unwrap();
    let got = consume_group(&early, 5);
    assert_eq!(got[0].2, b"old-0");
    let late = group_consumer(&b, "g-late", &[("auto.offset.reset", "latest")]);
    late.subscribe(&["reset"]).unwrap();
    poll_until(&[&late], "latest consumer assigned", |asg| {
        asg[0].len() == 1
    });
    // The reset to latest happens when its fetch starts: keep producing until it reads one.
    let deadline = Instant::now() + DEADLINE;
    let first = loop {
        assert!(Instant::now() < deadline, "latest consumer read nothing");
        produce_all(&p, "reset", Some(0), &[Rec::value("new")]);
        if let Some(m) = late.poll(Duration::from_millis(200)) {
            let m = m.expect("consumer error");
            break (m.offset(), m.payload().unwrap_or(&[]).to_vec());
        }
    };
    assert!(
        first.0 >= 5,
        "latest started at {} (an old record)",
        first.0
    );
    assert_eq!(first.1, b"new");
}

/// Guards static membership: a static member that restarts within its session timeout gets
/// its partitions back, and the other member keeps its own, without a rebalance.
#[test]
fn static_member_restart_keeps_its_partitions() {
    let b = Broker::start(GROUPS);
    create_topic(&b, "static", 4);
    let cfg = |id: &'static str| [("group.instance.id", id), ("session.timeout.ms", "30000")];
    let a = group_consumer(&b, "g-static", &cfg("s1"));
    let c = group_consumer(&b, "g-static", &cfg("s2"));
    a.subscribe(&["static"]).unwrap();
    c.subscribe(&["static"]).unwrap();
    let before = poll_until(&[&a, &c], "two each", |asg| {
        asg.iter().all(|x| x.len() == 2)
    });
    drop(a);
    let a2 = group_consumer(&b, "g-static", &cfg("s1"));
    a2.subscribe(&["static"]).unwrap();
    let after = poll_until(&[&a2, &c], "the restarted member is back", |asg| {
        asg[0].len() == 2 && asg[1].len() == 2
    });
    assert_eq!(
        after, before,
        "a restarted static member keeps its partitions"
    );
}

/// Guards bad group input: Kafka's errors, and the broker keeps serving.
#[test]
fn bad_group_requests_get_kafka_errors() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::{
        GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
        OffsetCommitRequest, OffsetCommitResponse, SyncGroupRequest, SyncGroupResponse,
    };
    let b = Broker::start(GROUPS);
    create_topic(&b, "bad-groups", 1);
    let mut c = tern_net::client::Client::connect(&b.addr(), DEADLINE).unwrap();
    let gid = |g: &str| GroupId(StrBytes::from_string(g.to_string()));
    let commit = |group: &str, generation: i32, member: &str, metadata: String| {
        OffsetCommitRequest::default()
            .with_group_id(gid(group))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(StrBytes::from_string(member.to_string()))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("bad-groups")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(1)
                    .with_committed_metadata(Some(StrBytes::from_string(
                        metadata,
                    )))])])
    };
    let code = |r: &OffsetCommitResponse| r.topics[0].partitions[0].error_code;
    let r: OffsetCommitResponse = c
        .request(
            ApiKey::OffsetCommit,
            8,
            &commit("nobody-home", 5, "ghost", String::new()),
        )
        .unwrap();
    assert!(
        [22, 25].contains(&code(&r)),
        "unknown group, wrong generation: {}",
        code(&r)
    );
    let r: OffsetCommitResponse = c
        .request(
            ApiKey::OffsetCommit,
            8,
            &commit("g-bad", -1, "", "m".repeat(5000)),
        )
        .unwrap();
    assert_eq!(code(&r), 12, "OFFSET_METADATA_TOO_LARGE");
    let r: HeartbeatResponse = c
        .request(
            ApiKey::Heartbeat,
            4,
            &HeartbeatRequest::default()
                .with_group_id(gid("nobody-home"))
                .with_generation_id(1)
                .with_member_id(StrBytes::from_static_str("ghost")),
        )
        .unwrap();
    assert_ne!(r.error_code, 0, "heartbeat of a stranger");
    // A member id of 1 MB and a 4 MB protocol metadata blob.
    let join = |member: String, metadata: Vec<u8>| {
        JoinGroupRequest::default()
            .with_group_id(gid("g-bad"))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(StrBytes::from_string(member))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from(metadata))])
    };
    // The client refuses to encode a 1 MB string: write JoinGroup v6 (flexible) by hand.
    let compact = |b: &mut Vec<u8>, v: &[u8]| {
        let mut n = v.len() as u64 + 1;
        while n >= 0x80 {
            b.push((n as u8) | 0x80);
            n >>= 7;
        }
        b.push(n as u8);
        b.extend_from_slice(v);
    };
    let mut body = Vec::new();
    compact(&mut body, b"g-bad");
    body.extend_from_slice(&10_000i32.to_be_bytes());
    body.extend_from_slice(&10_000i32.to_be_bytes());
    compact(&mut body, &vec![b'x'; 1 << 20]);
    body.push(0); // group_instance_id: null
    compact(&mut body, b"consumer");
    body.push(2); // one protocol
    compact(&mut body, b"range");
    compact(&mut body, &[1]);
    body.extend_from_slice(&[0, 0]); // tagged fields of the protocol and of the request
    let frame = frame_with_body(ApiKey::JoinGroup as i16, 6, 2, &body);
    let mut raw = raw_connect(&b);
    let mut resp = round_trip(&mut raw, ApiKey::JoinGroup, 6, &frame);
    let r = JoinGroupResponse::decode(&mut resp, 6).unwrap();
    assert_eq!(r.error_code, 25, "UNKNOWN_MEMBER_ID for a 1 MB member id");
    let r: JoinGroupResponse = c
        .request(ApiKey::JoinGroup, 5, &join(String::new(), vec![7; 4 << 20]))
        .unwrap();
    assert_eq!(r.error_code, 79, "MEMBER_ID_REQUIRED");
    let joined: JoinGroupResponse = c
        .request(
            ApiKey::JoinGroup,
            5,
            &join(r.member_id.to_string(), vec![7; 4 << 20]),
        )
        .unwrap();
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.leader, joined.member_id);
    // The leader assigns to a member that does not exist: ignored, its own assignment works.
    let sync: SyncGroupResponse = c
        .request(
            ApiKey::SyncGroup,
            3,
            &SyncGroupRequest::default()
                .with_group_id(gid("g-bad"))
                .with_generation_id(joined.generation_id)
                .with_member_id(joined.member_id.clone())
                .with_assignments(vec![
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_static_str("ghost"))
                        .with_assignment(Bytes::from_static(b"nope")),
                    SyncGroupRequestAssignment::default()
                        .with_member_id(joined.member_id.clone())
                        .with_assignment(Bytes::from_static(b"mine")),
                ]),
        )
        .unwrap();
    assert_eq!((sync.error_code, &sync.assignment[..]), (0, &b"mine"[..]));
    let r: OffsetCommitResponse = c
        .request(
            ApiKey::OffsetCommit,
            8,
            &commit(
                "g-bad",
                joined.generation_id + 1,
                &joined.member_id,
                String::new(),
            ),
        )
        .unwrap();
    assert_eq!(code(&r), 22, "ILLEGAL_GENERATION for a stale generation");
    assert_still_serving(&b, "bad-groups", "bad group requests");
}

/// Guards the cleaning of `__consumer_offsets`: after 12,000 commits of one partition the
/// group's offsets partition starts at a rewrite of its one live commit (its log start
/// moved), and after a SIGKILL and restart the replayed commit is the last one made.
#[test]
fn offsets_log_is_cleaned_and_replays_the_same() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    };
    let mut b = Broker::start(GROUPS);
    create_topic(&b, "clean", 1);
    let mut c = tern_net::client::Client::connect(&b.addr(), DEADLINE).unwrap();
    let group = GroupId(StrBytes::from_static_str("g-clean"));
    let partitions = (0..12_000)
        .map(|i| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(i)
        })
        .collect();
    let commit = OffsetCommitRequest::default()
        .with_group_id(group.clone())
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("clean")))
            .with_partitions(partitions)]);
    let r: OffsetCommitResponse = c.request(ApiKey::OffsetCommit, 8, &commit).unwrap();
    assert!(r.topics[0].partitions.iter().all(|p| p.error_code == 0));
    let p = tern_net::group::store::partition_for("g-clean", 50);
    let deadline = Instant::now() + DEADLINE;
    while watermarks(&b, "__consumer_offsets", p).0 == 0 {
        assert!(
            Instant::now() < deadline,
            "the offsets log was never cleaned"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (low, high) = watermarks(&b, "__consumer_offsets", p);
    assert_eq!(high - low, 1, "one live commit rewritten at the end");
    b.kill9();
    b.restart();
    let mut c = tern_net::client::Client::connect(&b.addr(), DEADLINE).unwrap();
    let r: OffsetFetchResponse = c
        .request(
            ApiKey::OffsetFetch,
            7,
            // No topics (null): every committed offset of the group.
            &OffsetFetchRequest::default()
                .with_group_id(group)
                .with_topics(None),
        )
        .unwrap();
    assert_eq!(r.topics.len(), 1);
    assert_eq!(r.topics[0].partitions[0].committed_offset, 11_999);
}

/// Guards `meta.properties`: the first start writes a generated cluster id, Metadata
/// answers it, and a restart keeps it.
#[test]
fn cluster_id_is_generated_once_and_answered_in_metadata() {
    let mut b = Broker::start("");
    let metadata_cluster_id = |b: &Broker| {
        let mut s = raw_connect(b);
        let frame = request_frame(ApiKey::Metadata, 12, &MetadataRequest::default());
        let mut body = round_trip(&mut s, ApiKey::Metadata, 12, &frame);
        let resp = kafka_protocol::messages::MetadataResponse::decode(&mut body, 12).unwrap();
        resp.cluster_id.map(|c| c.to_string()).unwrap_or_default()
    };
    let props = std::fs::read_to_string(b.data_dir().join("meta.properties")).unwrap();
    let stored = props
        .lines()
        .find_map(|l| l.strip_prefix("cluster.id="))
        .unwrap_or_else(|| panic!("no cluster.id in {props}"))
        .to_string();
    assert_eq!(stored.len(), 22, "{props}");
    assert!(props.contains("node.id=0"), "{props}");
    assert_eq!(metadata_cluster_id(&b), stored);
    assert!(b.stop().success());
    b.restart();
    assert_eq!(metadata_cluster_id(&b), stored);
    assert!(b.stop().success());
}
