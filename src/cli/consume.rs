//! `tern consume TOPIC`: print a topic's records, from any Kafka-compatible broker.
//!
//! Start offsets come from ListOffsets (`beginning`, `end`) or the command line; then each
//! partition leader is long-polled with Fetch (500 ms) for all its partitions at once. Record
//! batches are decoded with the kafka-protocol crate, compressed ones included. A broker may
//! return a whole batch that starts before the asked offset and may cut the last batch
//! short: records below the position are skipped and a cut batch is fetched again next time.
//! Without a consumer group nothing is committed; every run starts where `--from` says.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use kafka_protocol::records::{Record, RecordBatchDecoder};
use kafka_protocol::ResponseError;

use super::kafka::{
    call, check_partition, error_text, plural, topic_name, BootstrapArgs, Cluster, RETRY_BACKOFF_MS,
};

/// Versions of Fetch we speak (v13 names topics by id).
const FETCH_VERSIONS: (i16, i16) = (4, 12);
/// Versions of ListOffsets we speak.
const LIST_OFFSETS_VERSIONS: (i16, i16) = (1, 9);
/// How long the broker may hold a Fetch when there is nothing new.
const FETCH_WAIT_MS: i32 = 500;
/// Bytes a Fetch response may carry in all.
const FETCH_BYTES_MAX: i32 = 50 << 20;
/// Bytes asked per partition at first; doubled while a batch does not fit.
const PARTITION_BYTES: i32 = 1 << 20;
/// Largest per-partition size asked, so one batch larger than this is an error.
const PARTITION_BYTES_MAX: i32 = 64 << 20;
/// Fetch rounds in a row that may end in a retriable error before giving up.
const FETCH_RETRIES_MAX: u32 = 50;

/// ListOffsets timestamps with a special meaning.
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

/// RecordBatch v2 header: size and the positions of the fields read here.
const BATCH_HEADER_BYTES: usize = 61;
const BATCH_LENGTH_AT: usize = 8;
const BATCH_MAGIC_AT: usize = 16;
const BATCH_LAST_OFFSET_DELTA_AT: usize = 23;

/// Options of `tern consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Where to start in every partition read: beginning, end or an offset.
    #[arg(long, value_name = "beginning|end|OFFSET", default_value = "end")]
    from: String,
    /// Stop after this many records.
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
    /// Stop when every partition read is at its end, instead of waiting for new records.
    #[arg(long)]
    exit_at_end: bool,
    /// Output: value (the value), kv (key TAB value; the value alone when there is no key),
    /// json (one object per record: partition, offset, timestamp, key, value, headers; keys,
    /// values and headers as text, invalid UTF-8 replaced).
    #[arg(long, value_name = "value|kv|json", default_value = "value")]
    format: String,
    #[command(flatten)]
    conn: BootstrapArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    Beginning,
    End,
    Offset(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Value,
    Kv,
    Json,
}

/// Where the reading of one partition is.
#[derive(Debug, Clone)]
struct Position {
    leader: i32,
    /// Next offset to fetch.
    offset: i64,
    /// From the last Fetch response; -1 until there is one.
    high_watermark: i64,
    partition_bytes: i32,
}

/// Runs `tern consume`.
pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let from = parse_from(&args.from)?;
    let format = parse_format(&args.format)?;
    let mut cluster = Cluster::connect(&args.conn)?;
    let topic = args.topic.as_str();
    let info = cluster.topic(topic, false)?;
    let count = info.partitions.len() as i32;
    let chosen: Vec<i32> = match args.partition {
        Some(p) => {
            check_partition(topic, p, info.partitions.len())?;
            vec![p]
        }
        None => info.partitions.iter().map(|p| p.index).collect(),
    };
    let leaders: BTreeMap<i32, i32> = info
        .partitions
        .iter()
        .map(|p| (p.index, p.leader))
        .collect();
    let start = match from {
        From::Offset(o) => chosen.iter().map(|p| (*p, o)).collect(),
        From::Beginning => list_offsets(&mut cluster, topic, &leaders, &chosen, EARLIEST)?,
        From::End => list_offsets(&mut cluster, topic, &leaders, &chosen, LATEST)?,
    };
    let mut positions: BTreeMap<i32, Position> = start
        .into_iter()
        .map(|(p, offset)| {
            let pos = Position {
                leader: leaders.get(&p).copied().unwrap_or(-1),
                offset,
                high_watermark: -1,
                partition_bytes: PARTITION_BYTES,
            };
            (p, pos)
        })
        .collect();
    eprintln!(
        "consuming topic {topic:?}: {} from {}",
        match args.partition {
            Some(p) => format!("partition {p}"),
            None => plural(count as u64, "partition"),
        },
        args.from
    );
    let mut consumer = Consumer {
        topic,
        format,
        limit: args.count,
        seen: 0,
        out: BufWriter::new(io::stdout().lock()),
    };
    match consumer.poll(&mut cluster, &mut positions, args.exit_at_end) {
        Err(e) if is_broken_pipe(&e) => {}
        r => r?,
    }
    eprintln!("consumed {}", plural(consumer.seen, "record"));
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

fn parse_from(s: &str) -> anyhow::Result<From> {
    Ok(match s {
        "beginning" => From::Beginning,
        "end" => From::End,
        _ => match s.parse::<i64>() {
            Ok(o) if o >= 0 => From::Offset(o),
            _ => bail!("--from: {s:?} is not beginning, end or an offset"),
        },
    })
}

fn parse_format(s: &str) -> anyhow::Result<Format> {
    Ok(match s {
        "value" => Format::Value,
        "kv" => Format::Kv,
        "json" => Format::Json,
        _ => bail!("--format: {s:?} is not value, kv or json"),
    })
}

/// The offsets at `timestamp` (EARLIEST or LATEST) of `partitions`, asked of their leaders.
fn list_offsets(
    cluster: &mut Cluster,
    topic: &str,
    leaders: &BTreeMap<i32, i32>,
    partitions: &[i32],
    timestamp: i64,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in partitions {
        let leader = leaders.get(p).copied().unwrap_or(-1);
        by_leader.entry(leader).or_default().push(*p);
    }
    let mut offsets = BTreeMap::new();
    for (leader, parts) in by_leader {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    parts
                        .iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let (lo, hi) = LIST_OFFSETS_VERSIONS;
        let client = cluster.broker(leader)?;
        let resp: ListOffsetsResponse = call(client, ApiKey::ListOffsets, lo, hi, &req)?;
        for p in resp.topics.iter().flat_map(|t| &t.partitions) {
            if p.error_code != 0 {
                bail!(
                    "topic {topic:?} partition {}: cannot read its offsets: {}",
                    p.partition_index,
                    error_text(p.error_code, None)
                );
            }
            offsets.insert(p.partition_index, p.offset);
        }
    }
    for p in partitions {
        if !offsets.contains_key(p) {
            bail!("the broker's ListOffsets response has no offset for partition {p}");
        }
    }
    Ok(offsets)
}

#[derive(Debug)]
struct Consumer<'a, W: Write> {
    topic: &'a str,
    format: Format,
    limit: Option<u64>,
    seen: u64,
    out: W,
}

/// What one partition's Fetch result asks of the loop.
enum Outcome {
    Continue,
    /// Leadership moved or the broker is busy: refresh metadata and try again.
    Retry,
    /// `--count` records were printed.
    Done,
}

impl<W: Write> Consumer<'_, W> {
    fn done(&self) -> bool {
        self.limit.is_some_and(|n| self.seen >= n)
    }

    /// Fetches and prints until `--count` records, the end (with `exit_at_end`) or forever.
    fn poll(
        &mut self,
        cluster: &mut Cluster,
        positions: &mut BTreeMap<i32, Position>,
        exit_at_end: bool,
    ) -> anyhow::Result<()> {
        let mut retries = 0;
        while !self.done() {
            let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
            for (p, pos) in positions.iter() {
                by_leader.entry(pos.leader).or_default().push(*p);
            }
            let mut retry = false;
            for (leader, parts) in by_leader {
                let resp = self.fetch(cluster, leader, &parts, positions)?;
                let topic = self.topic;
                for t in resp.responses.iter().filter(|t| t.topic.as_str() == topic) {
                    for data in &t.partitions {
                        let Some(pos) = positions.get_mut(&data.partition_index) else {
                            continue;
                        };
                        match self.take(data, pos)? {
                            Outcome::Continue => {}
                            Outcome::Retry => retry = true,
                            Outcome::Done => return Ok(self.out.flush()?),
                        }
                    }
                }
                self.out.flush()?;
            }
            if retry {
                retries += 1;
                if retries > FETCH_RETRIES_MAX {
                    bail!(
                        "topic {:?}: fetching failed {retries} times in a row",
                        self.topic
                    );
                }
                thread::sleep(Duration::from_millis(RETRY_BACKOFF_MS));
                let info = cluster.topic(self.topic, false)?;
                for p in &info.partitions {
                    if let Some(pos) = positions.get_mut(&p.index) {
                        pos.leader = p.leader;
                    }
                }
                continue;
            }
            retries = 0;
            let at_end = positions
                .values()
                .all(|p| p.high_watermark >= 0 && p.offset >= p.high_watermark);
            if exit_at_end && at_end {
                break;
            }
        }
        Ok(self.out.flush()?)
    }

    fn fetch(
        &self,
        cluster: &mut Cluster,
        leader: i32,
        parts: &[i32],
        positions: &BTreeMap<i32, Position>,
    ) -> anyhow::Result<FetchResponse> {
        let partitions = parts
            .iter()
            .filter_map(|p| {
                let pos = positions.get(p)?;
                Some(
                    FetchPartition::default()
                        .with_partition(*p)
                        .with_fetch_offset(pos.offset)
                        .with_partition_max_bytes(pos.partition_bytes),
                )
            })
            .collect();
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(FETCH_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_BYTES_MAX)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(self.topic))
                .with_partitions(partitions)]);
        let (lo, hi) = FETCH_VERSIONS;
        let resp: FetchResponse = call(cluster.broker(leader)?, ApiKey::Fetch, lo, hi, &req)?;
        if resp.error_code != 0 {
            bail!("Fetch: {}", error_text(resp.error_code, None));
        }
        Ok(resp)
    }

    /// Prints the records of one partition's Fetch result and moves its position.
    fn take(
        &mut self,
        data: &kafka_protocol::messages::fetch_response::PartitionData,
        pos: &mut Position,
    ) -> anyhow::Result<Outcome> {
        let p = data.partition_index;
        match ResponseError::try_from_code(data.error_code) {
            None => {}
            Some(ResponseError::OffsetOutOfRange) => bail!(
                "topic {:?} partition {p}: offset {} is out of range (OFFSET_OUT_OF_RANGE)",
                self.topic,
                pos.offset
            ),
            Some(e) if e.is_retriable() => return Ok(Outcome::Retry),
            Some(_) => bail!(
                "topic {:?} partition {p}: {}",
                self.topic,
                error_text(data.error_code, None)
            ),
        }
        pos.high_watermark = data.high_watermark;
        let records = data.records.clone().unwrap_or_default();
        if records.is_empty() {
            return Ok(Outcome::Continue);
        }
        let batches = complete_batches(records);
        if batches.is_empty() {
            // Not even one whole batch fit: ask for more next time.
            if pos.partition_bytes >= PARTITION_BYTES_MAX {
                bail!(
                    "topic {:?} partition {p}: the batch at offset {} is larger than {} bytes",
                    self.topic,
                    pos.offset,
                    PARTITION_BYTES_MAX
                );
            }
            pos.partition_bytes = pos
                .partition_bytes
                .saturating_mul(2)
                .min(PARTITION_BYTES_MAX);
            return Ok(Outcome::Continue);
        }
        for batch in batches {
            let (base, next) = batch_offsets(&batch);
            let magic = batch[BATCH_MAGIC_AT];
            if magic != 2 {
                bail!(
                    "topic {:?} partition {p}: the batch at offset {base} is in message format \
                     v{magic}, which is not supported",
                    self.topic
                );
            }
            let set = RecordBatchDecoder::decode(&mut batch.clone()).map_err(|e| {
                anyhow::anyhow!(
                    "topic {:?} partition {p}: cannot decode the batch at offset {base}: {e}",
                    self.topic
                )
            })?;
            for r in set
                .records
                .iter()
                .filter(|r| !r.control && r.offset >= pos.offset)
            {
                self.print(p, r).context("writing to stdout")?;
                self.seen += 1;
                if self.done() {
                    return Ok(Outcome::Done);
                }
            }
            pos.offset = pos.offset.max(next);
        }
        Ok(Outcome::Continue)
    }

    fn print(&mut self, partition: i32, r: &Record) -> io::Result<()> {
        let empty = Bytes::new();
        let value = r.value.as_ref().unwrap_or(&empty);
        match self.format {
            Format::Value => {
                self.out.write_all(value)?;
            }
            Format::Kv => {
                if let Some(k) = &r.key {
                    self.out.write_all(k)?;
                    self.out.write_all(b"\t")?;
                }
                self.out.write_all(value)?;
            }
            Format::Json => {
                let line = JsonRecord {
                    partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: text(&r.key),
                    value: text(&r.value),
                    headers: r
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), text(v)))
                        .collect(),
                };
                serde_json::to_writer(&mut self.out, &line)?;
            }
        }
        self.out.write_all(b"\n")
    }
}

/// Bytes as text for JSON, invalid UTF-8 replaced.
fn text(b: &Option<Bytes>) -> Option<Cow<'_, str>> {
    b.as_deref().map(String::from_utf8_lossy)
}

/// One record of `--format json`, fields in this order.
#[derive(Debug, serde::Serialize)]
struct JsonRecord<'a> {
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<Cow<'a, str>>,
    value: Option<Cow<'a, str>>,
    headers: BTreeMap<&'a str, Option<Cow<'a, str>>>,
}

/// The whole batches at the start of `records`; a batch cut short at the end is dropped.
fn complete_batches(mut records: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    while records.len() >= BATCH_HEADER_BYTES {
        let at = BATCH_LENGTH_AT;
        let len = i32::from_be_bytes([
            records[at],
            records[at + 1],
            records[at + 2],
            records[at + 3],
        ]);
        let Some(total) = usize::try_from(len).ok().and_then(|l| l.checked_add(12)) else {
            break;
        };
        if total < BATCH_HEADER_BYTES || total > records.len() {
            break;
        }
        out.push(records.split_to(total));
    }
    out
}

/// A whole batch's base offset and the offset after its last record.
fn batch_offsets(batch: &[u8]) -> (i64, i64) {
    let mut base = [0u8; 8];
    base.copy_from_slice(&batch[..8]);
    let base = i64::from_be_bytes(base);
    let at = BATCH_LAST_OFFSET_DELTA_AT;
    let delta = i32::from_be_bytes([batch[at], batch[at + 1], batch[at + 2], batch[at + 3]]);
    (base, base + i64::from(delta) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(base: i64, n: i64) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i,
                sequence: i as i32,
                timestamp: 1,
                key: None,
                value: Some(Bytes::from(format!("v{i}"))),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::Lz4,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        buf.freeze()
    }

    /// Guards the splitting of a Fetch record set: whole batches kept, a cut one dropped, and
    /// the offsets read from the header.
    #[test]
    fn batches_of_a_fetch() {
        let a = batch(10, 3);
        let b = batch(13, 5);
        let mut both = BytesMut::from(&a[..]);
        both.extend_from_slice(&b);
        let both = both.freeze();
        assert_eq!(complete_batches(both.clone()).len(), 2);
        let cut = complete_batches(both.slice(..both.len() - 1));
        assert_eq!(cut.len(), 1);
        assert_eq!(batch_offsets(&cut[0]), (10, 13));
        assert!(complete_batches(both.slice(..30)).is_empty());
    }

    /// Guards the one-line errors of bad `--from` and `--format` values.
    #[test]
    fn option_values() {
        assert_eq!(parse_from("beginning").unwrap(), From::Beginning);
        assert_eq!(parse_from("42").unwrap(), From::Offset(42));
        let e = parse_from("foo").unwrap_err().to_string();
        assert_eq!(e, "--from: \"foo\" is not beginning, end or an offset");
        assert!(parse_from("-3").is_err());
        assert!(parse_format("xml").is_err());
    }

    /// Guards the three output formats.
    #[test]
    fn formats() {
        let mut r = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 7,
            sequence: -1,
            timestamp: 1000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: IndexMap::new(),
        };
        let print = |format, r: &Record| {
            let mut c = Consumer {
                topic: "t",
                format,
                limit: None,
                seen: 0,
                out: Vec::new(),
            };
            c.print(2, r).unwrap();
            String::from_utf8(c.out).unwrap()
        };
        assert_eq!(print(Format::Value, &r), "v\n");
        assert_eq!(print(Format::Kv, &r), "k\tv\n");
        r.headers.insert("h".into(), Some(Bytes::from_static(b"x")));
        let line = print(Format::Json, &r);
        assert!(line.starts_with(r#"{"partition":2,"offset":7,"timestamp":1000,"key":"k""#));
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"partition": 2, "offset": 7, "timestamp": 1000, "key": "k",
                "value": "v", "headers": {"h": "x"}})
        );
        r.key = None;
        assert_eq!(print(Format::Kv, &r), "v\n");
    }
}
