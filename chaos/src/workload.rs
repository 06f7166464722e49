//! The clients of a run, each recording what it saw into the shared [`Recorder`]:
//! fixed-rate librdkafka producers (idempotent acks=all on one topic, acks=1 on another),
//! one group consumer that reads and commits, and the final read of every partition.
//!
//! Producers number their records per partition (see [`RecordId`]); a producer whose
//! idempotence state turns fatal is replaced by a new one with a new producer number, so
//! that numbering restarts cleanly and the checker can still judge order per producer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::error::ChaosError;
use crate::history::{Acks, Event, PartitionLog, RecordId};

/// The shared event log of a run; times are milliseconds since it was made.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
    /// (topic, partition) → the time of its latest acknowledgement.
    last_ack_ms: Mutex<BTreeMap<(String, i32), u64>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
            last_ack_ms: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Appends `event` (events are appended in the order they are recorded, which is their
    /// time order up to a millisecond).
    pub fn record(&self, event: Event) {
        if let Event::Ack {
            t_ms, topic, id, ..
        } = &event
        {
            if let Ok(mut last) = self.last_ack_ms.lock() {
                last.insert((topic.clone(), id.partition), *t_ms);
            }
        }
        if let Ok(mut e) = self.events.lock() {
            e.push(event);
        }
    }

    /// Whether every partition `0..partitions` of `topic` had a record acknowledged after
    /// `t_ms` (producers make progress everywhere).
    pub fn acked_everywhere_since(&self, topic: &str, partitions: i32, t_ms: u64) -> bool {
        let Ok(last) = self.last_ack_ms.lock() else {
            return false;
        };
        (0..partitions).all(|p| last.get(&(topic.to_string(), p)).is_some_and(|t| *t > t_ms))
    }

    /// Every event so far, in time order.
    pub fn events(&self) -> Vec<Event> {
        let mut e = self.events.lock().map(|e| e.clone()).unwrap_or_default();
        e.sort_by_key(Event::t_ms);
        e
    }
}

struct Deliveries {
    rec: Arc<Recorder>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let t_ms = self.rec.now_ms();
        let (msg, error) = match result {
            Ok(m) => (m, None),
            Err((e, m)) => (m, Some(e.to_string())),
        };
        let topic = msg.topic().to_string();
        let Some(id) = msg
            .payload()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(RecordId::parse)
        else {
            return;
        };
        self.rec.record(match error {
            None => Event::Ack {
                t_ms,
                topic,
                id,
                offset: msg.offset(),
            },
            Some(error) => Event::Fail {
                t_ms,
                topic,
                id,
                error,
            },
        });
    }
}

/// One producer's settings.
#[derive(Debug, Clone)]
pub struct ProducerSpec {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub acks: Acks,
    /// Records per second over all partitions.
    pub rate: u32,
    /// How long librdkafka keeps retrying a record before it fails it.
    pub message_timeout_ms: u32,
    /// Bytes of each record (its key is padding up to this size; the value is the record's
    /// id), so that the disk fills and segments roll as they would under real traffic.
    pub record_bytes: usize,
}

fn producer(
    spec: &ProducerSpec,
    rec: &Arc<Recorder>,
) -> Result<ThreadedProducer<Deliveries>, ChaosError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &spec.bootstrap)
        .set("linger.ms", "5")
        // Batches below the chaos topics' 256 KiB segments (a batch larger than a segment
        // is refused: after a stall librdkafka's default 1 MB batches would be).
        .set("batch.size", "131072")
        .set("message.timeout.ms", spec.message_timeout_ms.to_string())
        .set("retry.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "2000");
    match spec.acks {
        Acks::All => c.set("acks", "all").set("enable.idempotence", "true"),
        // No retries: a retried acks=1 record may be written twice, which is the point
        // of the weaker guarantee but would blur the loss count.
        Acks::One => c
            .set("acks", "1")
            .set("enable.idempotence", "false")
            .set("retries", "0"),
    };
    c.create_with_context(Deliveries { rec: rec.clone() })
        .map_err(|e| ChaosError::Client(format!("producer: {e}")))
}

/// Starts a producer thread writing `spec.rate` records/s (round-robin over the
/// partitions) until `stop`, then flushing what is in flight. Producer numbers come from
/// `numbers`.
pub fn spawn_producer(
    spec: ProducerSpec,
    numbers: Arc<AtomicU32>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, ChaosError> {
    let mut p = producer(&spec, &rec)?;
    Ok(std::thread::spawn(move || {
        let mut number = numbers.fetch_add(1, Ordering::Relaxed);
        let mut seqs: BTreeMap<i32, u64> = BTreeMap::new();
        let begin = Instant::now();
        let period = Duration::from_secs(1) / spec.rate.max(1);
        let mut i: u64 = 0;
        let padding = "k".repeat(spec.record_bytes.saturating_sub(24));
        while !stop.load(Ordering::Acquire) {
            let due = begin + period * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if p.client().fatal_error().is_some() {
                // Idempotence state lost (e.g. a sequence the broker cannot accept): start
                // over as a new producer, as an application would.
                p.flush(Duration::from_secs(1)).ok();
                match producer(&spec, &rec) {
                    Ok(new) => p = new,
                    Err(_) => break,
                }
                number = numbers.fetch_add(1, Ordering::Relaxed);
                seqs.clear();
            }
            let partition = (i % spec.partitions as u64) as i32;
            let seq = seqs.entry(partition).or_insert(0);
            let id = RecordId {
                producer: number,
                partition,
                seq: *seq,
            };
            *seq += 1;
            i += 1;
            let value = id.value();
            rec.record(Event::Send {
                t_ms: rec.now_ms(),
                topic: spec.topic.clone(),
                id,
            });
            if let Err((e, _)) = p.send(
                BaseRecord::to(&spec.topic)
                    .partition(partition)
                    .key(&padding)
                    .payload(&value),
            ) {
                rec.record(Event::Fail {
                    t_ms: rec.now_ms(),
                    topic: spec.topic.clone(),
                    id,
                    error: e.to_string(),
                });
            }
        }
        let wait = Duration::from_millis(u64::from(spec.message_timeout_ms) + 5000);
        let _ = p.flush(wait);
    }))
}

/// Starts the group consumer: reads `topics`, records every record read, commits what it
/// has read every `commit_every` (synchronously) and records each successful commit.
pub fn spawn_consumer(
    bootstrap: &str,
    group: &str,
    topics: &[String],
    commit_every: Duration,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, ChaosError> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("reconnect.backoff.max.ms", "1000")
        .create()
        .map_err(|e| ChaosError::Client(format!("consumer: {e}")))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    c.subscribe(&names)
        .map_err(|e| ChaosError::Client(format!("subscribe: {e}")))?;
    let group = group.to_string();
    Ok(std::thread::spawn(move || {
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut last_commit = Instant::now();
        while !stop.load(Ordering::Acquire) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                let value = m
                    .payload()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                rec.record(Event::Read {
                    t_ms: rec.now_ms(),
                    consumer: 1,
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    value,
                });
                next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
            }
            if last_commit.elapsed() >= commit_every {
                last_commit = Instant::now();
                commit(&c, &group, &mut next, &rec);
            }
        }
        commit(&c, &group, &mut next, &rec);
        c.unsubscribe();
    }))
}

/// Commits the next offsets of the partitions still assigned; records those committed.
fn commit(c: &BaseConsumer, group: &str, next: &mut BTreeMap<(String, i32), i64>, rec: &Recorder) {
    let Ok(assigned) = c.assignment() else { return };
    let mut tpl = TopicPartitionList::new();
    let mut committing = Vec::new();
    for e in assigned.elements() {
        let key = (e.topic().to_string(), e.partition());
        if let Some(off) = next.get(&key) {
            if tpl
                .add_partition_offset(e.topic(), e.partition(), Offset::Offset(*off))
                .is_ok()
            {
                committing.push((key, *off));
            }
        }
    }
    // What was read from a partition no longer assigned is another member's to commit.
    next.retain(|k, _| committing.iter().any(|(c, _)| c == k));
    if committing.is_empty() || c.commit(&tpl, CommitMode::Sync).is_err() {
        return;
    }
    let t_ms = rec.now_ms();
    for ((topic, partition), offset) in committing {
        rec.record(Event::Commit {
            t_ms,
            group: group.to_string(),
            topic,
            partition,
            offset,
        });
    }
}

/// Reads every partition of `topic` from its log start to its high watermark.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    deadline: Duration,
) -> Result<Vec<PartitionLog>, ChaosError> {
    let reader = || -> Result<BaseConsumer, ChaosError> {
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "tern-chaos-final-read")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| ChaosError::Client(format!("consumer: {e}")))
    };
    let mut c = reader()?;
    let end = Instant::now() + deadline;
    let mut tpl = TopicPartitionList::new();
    let mut logs = Vec::new();
    let mut high = Vec::new();
    for p in 0..partitions {
        // Right after leaders change, a broker may answer "not leader" for a moment.
        let (low, h) = loop {
            match c.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                Ok(w) => break w,
                Err(e) if Instant::now() > end => {
                    return Err(ChaosError::Client(format!(
                        "watermarks of {topic}/{p}: {e}"
                    )))
                }
                Err(_) => {
                    // Right after every node restarted, librdkafka may cache a view that
                    // says the partition does not exist, and keep it: start afresh.
                    std::thread::sleep(Duration::from_millis(500));
                    c = reader()?;
                }
            }
        };
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .map_err(|e| ChaosError::Client(e.to_string()))?;
        logs.push(PartitionLog {
            topic: topic.to_string(),
            partition: p,
            log_start: low,
            records: Vec::new(),
        });
        high.push(h);
    }
    c.assign(&tpl)
        .map_err(|e| ChaosError::Client(format!("assign: {e}")))?;
    let behind = |logs: &[PartitionLog]| {
        logs.iter()
            .zip(&high)
            .any(|(l, h)| l.records.last().map_or(l.log_start, |(o, _)| o + 1) < *h)
    };
    while behind(&logs) {
        if Instant::now() > end {
            return Err(ChaosError::Timeout {
                what: format!("the final read of {topic}"),
                after_ms: deadline.as_millis() as u64,
            });
        }
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let value = m
                .payload()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default();
            if let Some(l) = logs.get_mut(m.partition() as usize) {
                l.records.push((m.offset(), value));
            }
        }
    }
    Ok(logs)
}
