//! `tern produce TOPIC`: lines from stdin become records of a topic, on any Kafka-compatible
//! broker.
//!
//! Lines are read in groups of `--batch-records`; each group becomes one RecordBatch per
//! partition it touches, sent in one Produce request per partition leader, and the next group
//! is read once the leaders have answered. A record with a key goes to the partition the Java
//! client's default partitioner picks (murmur2 of the key, so both clients agree); records
//! without a key go to one partition per group, the next one for the next group.

use std::collections::BTreeMap;
use std::io::{self, BufRead};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::kafka::{
    check_partition, error_text, plural, request, send_only, topic_name, version, BootstrapArgs,
    Cluster, BROKER_TIMEOUT_MS,
};

/// Versions of Produce we speak (v13 names topics by id).
const PRODUCE_VERSIONS: (i16, i16) = (3, 12);

/// Options of `tern produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic to write to (the broker creates it if it auto-creates topics).
    topic: String,
    /// Write every record to this partition.
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Separates the key from the value on a line [default: TAB]; a line without it is a
    /// value without key. Without --partition, keyed records go to partition murmur2(key) mod
    /// partitions, as with the Java client's default partitioner; records without a key go
    /// to one partition per batch, the next partition for the next batch.
    #[arg(
        long,
        value_name = "SEP",
        default_value = "\t",
        hide_default_value = true
    )]
    key_separator: String,
    /// Acknowledgement to wait for: 0 (none, no response), 1 (the leader) or all (every
    /// in-sync replica).
    #[arg(long, value_name = "0|1|all", default_value = "all")]
    acks: String,
    /// Compression of the record batches: none, gzip, snappy, lz4 or zstd.
    #[arg(long, value_name = "CODEC", default_value = "none")]
    compression: String,
    /// Most records read from stdin before they are sent.
    #[arg(long, value_name = "N", default_value_t = 500)]
    batch_records: usize,
    #[command(flatten)]
    conn: BootstrapArgs,
}

/// What was sent, for the summary line.
#[derive(Debug, Default)]
struct Totals {
    records: u64,
    batches: u64,
    partitions: std::collections::BTreeSet<i32>,
}

/// Runs `tern produce`.
pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let acks = parse_acks(&args.acks)?;
    let compression = parse_compression(&args.compression)?;
    if args.key_separator.is_empty() {
        bail!("--key-separator must not be empty");
    }
    if args.batch_records == 0 {
        bail!("--batch-records must be at least 1");
    }
    let mut cluster = Cluster::connect(&args.conn)?;
    let topic = args.topic.as_str();
    let info = cluster.topic(topic, true)?;
    let count = info.partitions.len() as i32;
    if let Some(p) = args.partition {
        check_partition(topic, p, info.partitions.len())?;
    }
    let leaders: BTreeMap<i32, i32> = info
        .partitions
        .iter()
        .map(|p| (p.index, p.leader))
        .collect();
    let sender = Sender {
        topic,
        acks,
        compression,
        leaders,
    };
    let sep = args.key_separator.as_bytes();
    let mut stdin = io::stdin().lock();
    let mut totals = Totals::default();
    let mut round_robin: u32 = 0;
    loop {
        let lines = read_lines(&mut stdin, args.batch_records).context("reading stdin")?;
        if lines.is_empty() {
            break;
        }
        let mut by_partition: BTreeMap<i32, Vec<(Option<Bytes>, Bytes)>> = BTreeMap::new();
        for line in lines {
            let (key, value) = split_line(line, sep);
            let p = match (&key, args.partition) {
                (_, Some(p)) => p,
                (Some(k), None) => partition_for_key(k, count),
                (None, None) => (round_robin % count as u32) as i32,
            };
            by_partition.entry(p).or_default().push((key, value));
        }
        round_robin = round_robin.wrapping_add(1);
        sender
            .send(&mut cluster, by_partition, &mut totals)
            .with_context(|| match totals.records {
                0 => format!("produce to topic {topic:?}"),
                n => format!("produce to topic {topic:?} (after {n} records were written)"),
            })?;
    }
    eprintln!(
        "produced {} in {} to {} of topic {topic:?}{}",
        plural(totals.records, "record"),
        plural(totals.batches, "batch"),
        plural(totals.partitions.len() as u64, "partition"),
        if acks == 0 {
            " (acks=0: not confirmed)"
        } else {
            ""
        }
    );
    Ok(())
}

fn parse_acks(s: &str) -> anyhow::Result<i16> {
    Ok(match s {
        "0" => 0,
        "1" => 1,
        "all" | "-1" => -1,
        _ => bail!("--acks: {s:?} is not 0, 1 or all"),
    })
}

fn parse_compression(s: &str) -> anyhow::Result<Compression> {
    Ok(match s {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => bail!("--compression: {s:?} is not none, gzip, snappy, lz4 or zstd"),
    })
}

/// Up to `max` lines without their line ending (`\n` or `\r\n`).
fn read_lines(input: &mut impl BufRead, max: usize) -> io::Result<Vec<Vec<u8>>> {
    let mut lines = Vec::new();
    while lines.len() < max {
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        lines.push(line);
    }
    Ok(lines)
}

/// `key SEP value` → `(Some(key), value)`; a line without `sep` is a value without key.
fn split_line(line: Vec<u8>, sep: &[u8]) -> (Option<Bytes>, Bytes) {
    let at = line.windows(sep.len()).position(|w| w == sep);
    let mut line = Bytes::from(line);
    match at {
        Some(i) => {
            let key = line.split_to(i);
            line.advance(sep.len());
            (Some(key), line)
        }
        None => (None, line),
    }
}

/// The partition of a keyed record: the Java client's default (`murmur2(key) & 0x7fffffff`
/// modulo the partition count).
fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed 0x9747b28c.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[derive(Debug)]
struct Sender<'a> {
    topic: &'a str,
    acks: i16,
    compression: Compression,
    /// Partition → leader broker id.
    leaders: BTreeMap<i32, i32>,
}

impl Sender<'_> {
    /// Encodes one batch per partition and sends them, one request per leader.
    fn send(
        &self,
        cluster: &mut Cluster,
        by_partition: BTreeMap<i32, Vec<(Option<Bytes>, Bytes)>>,
        totals: &mut Totals,
    ) -> anyhow::Result<()> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut by_leader: BTreeMap<i32, Vec<(i32, usize, Bytes)>> = BTreeMap::new();
        for (p, records) in by_partition {
            let n = records.len();
            let options = RecordEncodeOptions {
                version: 2,
                compression: self.compression,
            };
            let batch = encode_batch(records, now_ms, &options)?;
            let leader = self.leaders.get(&p).copied().unwrap_or(-1);
            by_leader.entry(leader).or_default().push((p, n, batch));
        }
        for (leader, parts) in by_leader {
            let n: usize = parts.iter().map(|(_, n, _)| n).sum();
            let partitions: Vec<i32> = parts.iter().map(|(p, _, _)| *p).collect();
            self.send_to(cluster, leader, parts)?;
            totals.records += n as u64;
            totals.batches += partitions.len() as u64;
            totals.partitions.extend(partitions);
        }
        Ok(())
    }

    fn send_to(
        &self,
        cluster: &mut Cluster,
        leader: i32,
        parts: Vec<(i32, usize, Bytes)>,
    ) -> anyhow::Result<()> {
        let data = parts
            .into_iter()
            .map(|(p, _, batch)| {
                PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(batch))
            })
            .collect();
        let req = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(BROKER_TIMEOUT_MS)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(self.topic))
                .with_partition_data(data)]);
        let client = cluster.broker(leader)?;
        let (lo, hi) = PRODUCE_VERSIONS;
        let v = version(client, ApiKey::Produce, lo, hi)?;
        if self.acks == 0 {
            send_only(client, ApiKey::Produce, v, &req)?;
            return Ok(());
        }
        let resp: ProduceResponse = request(client, ApiKey::Produce, v, &req)?;
        let errors: Vec<String> = resp
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .filter(|p| p.error_code != 0)
            .map(|p| {
                format!(
                    "partition {}: {}",
                    p.index,
                    error_text(p.error_code, p.error_message.as_ref())
                )
            })
            .collect();
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(())
    }
}

/// One RecordBatch (v2) holding `records`, all stamped `now_ms`.
fn encode_batch(
    records: Vec<(Option<Bytes>, Bytes)>,
    now_ms: i64,
    options: &RecordEncodeOptions,
) -> anyhow::Result<Bytes> {
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever offset - sequence changes, and takes
            // the base sequence from the first record: offset - 1 keeps the records in one
            // batch and gives base sequence -1, as a producer without idempotence sends.
            sequence: (i as i32).wrapping_sub(1),
            timestamp: now_ms,
            key,
            value: Some(value),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, options)
        .map_err(|e| anyhow::anyhow!("cannot encode a record batch: {e}"))?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    /// Guards murmur2 against the values of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (data, want) in cases {
            assert_eq!(
                murmur2(data) as i32,
                want,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    /// Guards the line format: key, separator, value; no separator means no key.
    #[test]
    fn lines_and_keys() {
        let mut input = io::Cursor::new(b"k\tv\r\nplain\nk2::x::y\n\nlast".to_vec());
        let lines = read_lines(&mut input, 10).unwrap();
        assert_eq!(lines.len(), 5);
        let (k, v) = split_line(lines[0].clone(), b"\t");
        assert_eq!((k.as_deref(), &v[..]), (Some(&b"k"[..]), &b"v"[..]));
        assert_eq!(split_line(lines[1].clone(), b"\t").0, None);
        let (k, v) = split_line(lines[2].clone(), b"::");
        assert_eq!((k.as_deref(), &v[..]), (Some(&b"k2"[..]), &b"x::y"[..]));
        assert_eq!(&lines[3][..], b"");
        assert_eq!(&lines[4][..], b"last");
        let mut input = io::Cursor::new(b"a\nb\nc\n".to_vec());
        assert_eq!(read_lines(&mut input, 2).unwrap().len(), 2);
        assert_eq!(read_lines(&mut input, 2).unwrap().len(), 1);
    }

    /// Guards that a group of records becomes exactly one batch, for every codec.
    #[test]
    fn one_batch_per_group() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records: Vec<(Option<Bytes>, Bytes)> = (0..100)
                .map(|i| {
                    (
                        Some(Bytes::from(format!("k{i}"))),
                        Bytes::from(format!("v{i}")),
                    )
                })
                .collect();
            let options = RecordEncodeOptions {
                version: 2,
                compression,
            };
            let mut batch = encode_batch(records, 1_700_000_000_000, &options).unwrap();
            let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone()).unwrap();
            assert_eq!(info.len(), 1, "{compression:?}");
            assert_eq!(info[0].record_count, 100);
            assert_eq!(info[0].base_sequence, -1);
            let set = RecordBatchDecoder::decode(&mut batch).unwrap();
            assert_eq!(set.records[99].value.as_deref(), Some(&b"v99"[..]));
        }
    }

    /// Guards the partition choice: in range, and stable for a key.
    #[test]
    fn key_partitions() {
        for n in [1, 3, 7] {
            let p = partition_for_key(b"orders-17", n);
            assert!((0..n).contains(&p));
            assert_eq!(p, partition_for_key(b"orders-17", n));
        }
    }
}
