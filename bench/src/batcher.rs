//! Per-partition batching like a real producer: records accumulate in an open RecordBatch v2
//! per partition, which is sealed when the next record would not fit `batch_bytes_max` or
//! when it has waited `linger_ns` since its first record.
//!
//! Records are encoded into the batch as they arrive, in a buffer the batch keeps, instead of
//! being collected and built at the end with [`tern_engine::batch::build`]: that builder
//! allocates per record, and the load generator shares two cores with the broker it
//! measures. A test checks that both produce the same bytes.
//!
//! Every value carries its record's intended send time in its first 8 bytes (nanoseconds on
//! the run's monotonic clock, little-endian), which the consumers read back for end-to-end
//! latency at nanosecond precision; the record timestamp carries the same instant in Unix
//! milliseconds, as OMB's Kafka driver does.

use kafka_protocol::records::Compression;
use std::collections::VecDeque;

use tern_engine::batch::{HEADER_BYTES, LOG_OVERHEAD, MAGIC_V2};

/// Bytes at the start of a value that hold the intended send time.
pub const SEND_TIME_BYTES: usize = 8;
const CRC_START: usize = 21;

/// A batch ready to be sent.
#[derive(Debug)]
pub struct SealedBatch {
    pub partition: u32,
    /// A complete RecordBatch v2 (base offset 0).
    pub bytes: Vec<u8>,
    /// The intended send time of each record, in order.
    pub intended_ns: Vec<u64>,
}

#[derive(Debug)]
struct Open {
    buf: Vec<u8>,
    intended_ns: Vec<u64>,
    created_ns: u64,
    base_ts_ms: i64,
    max_ts_ms: i64,
}

/// The open batches of one producer, one per partition.
#[derive(Debug)]
pub struct Batcher {
    open: Vec<Option<Open>>,
    /// (created_ns, partition) in creation order; entries of batches sealed early are stale
    /// and skipped.
    lingering: VecDeque<(u64, u32)>,
    ready: Vec<SealedBatch>,
    scratch: Vec<u8>,
    batch_bytes_max: usize,
    linger_ns: u64,
    /// Unix milliseconds at run-clock 0, to turn intended times into record timestamps.
    unix_ms_at_zero: i64,
    /// How sealed batches' records are compressed.
    codec: Compression,
}

impl Batcher {
    pub fn new(
        partitions: u32,
        batch_bytes_max: usize,
        linger_ns: u64,
        unix_ms_at_zero: i64,
    ) -> Batcher {
        Batcher {
            open: (0..partitions).map(|_| None).collect(),
            lingering: VecDeque::new(),
            ready: Vec::new(),
            scratch: Vec::new(),
            batch_bytes_max,
            linger_ns,
            unix_ms_at_zero,
            codec: Compression::None,
        }
    }

    /// Compresses every sealed batch's records with `codec`, as a client's
    /// `compression.type` does.
    pub fn with_codec(mut self, codec: Compression) -> Batcher {
        self.codec = codec;
        self
    }

    /// Adds one record to `partition`'s batch; `value`'s first 8 bytes are replaced by
    /// `intended_ns`. Returns true if a batch of that partition was sealed.
    pub fn append(
        &mut self,
        partition: u32,
        intended_ns: u64,
        now_ns: u64,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> bool {
        let ts_ms = self.unix_ms_at_zero + (intended_ns / 1_000_000) as i64;
        let p = partition as usize;
        let mut sealed = false;
        let (base_ts, offset_delta) = match &self.open[p] {
            Some(o) => (o.base_ts_ms, o.intended_ns.len() as i64),
            None => (ts_ms, 0),
        };
        encode_record(
            &mut self.scratch,
            ts_ms - base_ts,
            offset_delta,
            key,
            value,
            intended_ns,
        );
        if let Some(o) = &self.open[p] {
            if o.buf.len() + self.scratch.len() > self.batch_bytes_max {
                self.seal(partition);
                sealed = true;
                // Offsets and timestamps restart in the new batch.
                encode_record(&mut self.scratch, 0, 0, key, value, intended_ns);
            }
        }
        let o = self.open[p].get_or_insert_with(|| {
            self.lingering.push_back((now_ns, partition));
            let mut buf = Vec::with_capacity(self.batch_bytes_max.min(1 << 20));
            buf.resize(HEADER_BYTES, 0);
            Open {
                buf,
                intended_ns: Vec::new(),
                created_ns: now_ns,
                base_ts_ms: ts_ms,
                max_ts_ms: ts_ms,
            }
        });
        o.buf.extend_from_slice(&self.scratch);
        o.intended_ns.push(intended_ns);
        o.max_ts_ms = o.max_ts_ms.max(ts_ms);
        if o.buf.len() + self.scratch.len() > self.batch_bytes_max {
            self.seal(partition);
            sealed = true;
        }
        sealed
    }

    /// Seals the batches that have lingered long enough.
    pub fn seal_expired(&mut self, now_ns: u64) {
        while let Some(&(created, p)) = self.lingering.front() {
            let live = self.open[p as usize]
                .as_ref()
                .is_some_and(|o| o.created_ns == created);
            if live && created + self.linger_ns > now_ns {
                break;
            }
            self.lingering.pop_front();
            if live {
                self.seal(p);
            }
        }
    }

    /// Seals every open batch (end of the run).
    pub fn seal_all(&mut self) {
        for p in 0..self.open.len() {
            self.seal(p as u32);
        }
        self.lingering.clear();
    }

    /// When the oldest open batch's linger ends.
    pub fn next_linger_deadline_ns(&mut self) -> Option<u64> {
        while let Some(&(created, p)) = self.lingering.front() {
            if self.open[p as usize]
                .as_ref()
                .is_some_and(|o| o.created_ns == created)
            {
                return Some(created + self.linger_ns);
            }
            self.lingering.pop_front();
        }
        None
    }

    /// The sealed batches, in sealing order.
    pub fn take_ready(&mut self) -> Vec<SealedBatch> {
        std::mem::take(&mut self.ready)
    }

    /// Whether any batch is open.
    pub fn is_empty(&self) -> bool {
        self.open.iter().all(Option::is_none)
    }

    fn seal(&mut self, partition: u32) {
        let Some(o) = self.open[partition as usize].take() else {
            return;
        };
        let mut b = o.buf;
        if self.codec != Compression::None {
            let records = compress(self.codec, &b[HEADER_BYTES..]);
            b.truncate(HEADER_BYTES);
            b.extend_from_slice(&records);
            b[21..23].copy_from_slice(&codec_id(self.codec).to_be_bytes());
        }
        let count = o.intended_ns.len() as i32;
        let batch_length = (b.len() - LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&batch_length.to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        b[16] = MAGIC_V2 as u8;
        b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        b[27..35].copy_from_slice(&o.base_ts_ms.to_be_bytes());
        b[35..43].copy_from_slice(&o.max_ts_ms.to_be_bytes());
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        self.ready.push(SealedBatch {
            partition,
            bytes: b,
            intended_ns: o.intended_ns,
        });
    }
}

/// The attribute bits of `codec` (Kafka's codec ids).
fn codec_id(codec: Compression) -> i16 {
    match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    }
}

/// `records` compressed with `codec` (the kafka-protocol crate's codecs). Compressing a
/// byte slice in memory cannot fail; should a codec report an error anyway, the records go
/// uncompressed under the codec's flag and the broker refuses the batch, which the run
/// counts as a publish error.
fn compress(codec: Compression, records: &[u8]) -> Vec<u8> {
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let mut out = bytes::BytesMut::new();
    let put = |b: &mut bytes::BytesMut| {
        b.extend_from_slice(records);
        Ok(())
    };
    let r = match codec {
        Compression::None => put(&mut out),
        Compression::Gzip => Gzip::compress(&mut out, put),
        Compression::Snappy => Snappy::compress(&mut out, put),
        Compression::Lz4 => Lz4::compress(&mut out, put),
        Compression::Zstd => Zstd::compress(&mut out, put),
    };
    match r {
        Ok(()) => out.to_vec(),
        Err(_) => records.to_vec(),
    }
}

/// One record (length prefix included) into `out`, replacing what was there.
fn encode_record(
    out: &mut Vec<u8>,
    ts_delta_ms: i64,
    offset_delta: i64,
    key: Option<&[u8]>,
    value: &[u8],
    intended_ns: u64,
) {
    let value_len = value.len().max(SEND_TIME_BYTES);
    let key_len = key.map_or(0, <[u8]>::len);
    let mut body = [0u8; 40];
    let mut n = 1; // attributes
    n += put_varint(&mut body[n..], ts_delta_ms);
    n += put_varint(&mut body[n..], offset_delta);
    n += put_varint(&mut body[n..], key.map_or(-1, |k| k.len() as i64));
    let body_len = n + key_len + varint_len(value_len as i64) + value_len + 1;
    out.clear();
    let mut len = [0u8; 10];
    let l = put_varint(&mut len, body_len as i64);
    out.extend_from_slice(&len[..l]);
    out.extend_from_slice(&body[..n]);
    if let Some(k) = key {
        out.extend_from_slice(k);
    }
    let l = put_varint(&mut len, value_len as i64);
    out.extend_from_slice(&len[..l]);
    out.extend_from_slice(&intended_ns.to_le_bytes());
    out.extend_from_slice(value.get(SEND_TIME_BYTES..).unwrap_or(&[]));
    out.push(0); // headers
}

/// Zig-zag varint into `out`, returning the bytes written (`out` holds at least 10).
fn put_varint(out: &mut [u8], v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut i = 0;
    while z >= 0x80 {
        out[i] = (z as u8) | 0x80;
        z >>= 7;
        i += 1;
    }
    out[i] = z as u8;
    i + 1
}

fn varint_len(v: i64) -> usize {
    let mut tmp = [0u8; 10];
    put_varint(&mut tmp, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_engine::batch::build;

    fn value_with_time(value: &[u8], ns: u64) -> Vec<u8> {
        let mut v = value.to_vec();
        v[..8].copy_from_slice(&ns.to_le_bytes());
        v
    }

    /// Guards the incremental encoder against the engine's reference builder, byte for byte.
    #[test]
    fn same_bytes_as_the_reference_builder() {
        let value = vec![7u8; 100];
        let mut b = Batcher::new(2, 1 << 20, 1_000_000, 1_700_000_000_000);
        let times = [5_000_000u64, 6_500_000, 9_000_000];
        let keys: [Option<&[u8]>; 3] = [None, Some(b"k1"), Some(b"")];
        for (t, k) in times.iter().zip(keys) {
            assert!(!b.append(1, *t, *t, k, &value));
        }
        b.seal_all();
        let ready = b.take_ready();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].partition, 1);
        assert_eq!(ready[0].intended_ns, times);
        let vals: Vec<Vec<u8>> = times.iter().map(|t| value_with_time(&value, *t)).collect();
        let base = 1_700_000_000_000 + 5;
        let recs: Vec<build::Record<'_>> = times
            .iter()
            .zip(keys)
            .zip(&vals)
            .map(|((t, k), v)| build::Record {
                key: k,
                value: Some(v),
                timestamp_delta_ms: 1_700_000_000_000 + (*t / 1_000_000) as i64 - base,
            })
            .collect();
        assert_eq!(ready[0].bytes, build::batch(base, &recs));
        let h = tern_engine::batch::validate(&ready[0].bytes, 0).unwrap();
        assert_eq!(h.record_count, 3);
    }

    /// Guards the size bound: batches never exceed batch_bytes_max and no record is lost.
    #[test]
    fn seals_full_batches() {
        let value = vec![1u8; 1000];
        let mut b = Batcher::new(1, 4096, u64::MAX / 2, 0);
        let mut sealed = 0;
        for i in 0..20u64 {
            sealed += usize::from(b.append(0, i, i, None, &value));
        }
        b.seal_all();
        let ready = b.take_ready();
        assert_eq!(ready.len(), sealed + 1);
        assert!(ready.iter().all(|r| r.bytes.len() <= 4096));
        assert_eq!(ready.iter().map(|r| r.intended_ns.len()).sum::<usize>(), 20);
        for r in &ready {
            assert!(tern_engine::batch::validate(&r.bytes, 0).is_ok());
        }
    }

    /// Guards linger: a batch is sealed once its first record has waited linger_ns.
    #[test]
    fn seals_after_linger() {
        let mut b = Batcher::new(3, 1 << 20, 1000, 0);
        b.append(2, 0, 100, None, &[0u8; 16]);
        b.append(0, 0, 600, None, &[0u8; 16]);
        assert_eq!(b.next_linger_deadline_ns(), Some(1100));
        b.seal_expired(1099);
        assert!(b.take_ready().is_empty());
        b.seal_expired(1100);
        let r = b.take_ready();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].partition, 2);
        assert_eq!(b.next_linger_deadline_ns(), Some(1600));
    }
}
