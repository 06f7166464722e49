//! Kafka RecordBatch v2: validation and the fields the broker writes.
//!
//! The engine stores batches byte for byte as clients send them. Before an append it checks
//! what would make a stored batch unreadable or dangerous to serve (magic, length, CRC32C,
//! record count, offset delta); the broker then writes only the base offset (bytes 0..8, not
//! covered by the CRC) and, with LogAppendTime, the timestamp type and max timestamp (covered
//! by the CRC, which is therefore recomputed, as Kafka does).
//!
//! Layout of the 61-byte header (big-endian, as on the Kafka wire):
//!
//! ```text
//! 0  baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8
//! 17 crc u32 (CRC32C of bytes 21..end) | 21 attributes i16 | 23 lastOffsetDelta i32
//! 27 baseTimestamp i64 | 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16
//! 53 baseSequence i32 | 57 recordCount i32 | 61 records...
//! ```

use thiserror::Error;

/// Bytes of the v2 batch header.
pub const HEADER_BYTES: usize = 61;
/// Bytes before the `batchLength` field's coverage starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
/// The only message format we store.
pub const MAGIC_V2: i8 = 2;
const CRC_START: usize = 21;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_COMPRESSION_MASK: i16 = 0x07;

/// Why a batch was refused. Nothing of the append that carried it was written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("batch {index}: {len} bytes is shorter than the 61-byte RecordBatch v2 header")]
    TooShort { index: usize, len: usize },
    #[error("batch {index}: batchLength says {declared} bytes but {actual} bytes were given")]
    LengthMismatch {
        index: usize,
        declared: i64,
        actual: usize,
    },
    #[error(
        "batch {index}: message format v{magic} (magic {magic}) is not supported; \
         only RecordBatch v2 (Kafka 0.11+ clients) is stored"
    )]
    OldMagic { index: usize, magic: i8 },
    #[error("batch {index}: unknown magic byte {magic}")]
    BadMagic { index: usize, magic: i8 },
    #[error("batch {index}: CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadCrc {
        index: usize,
        stored: u32,
        computed: u32,
    },
    #[error("batch {index}: record count {count} must be at least 1")]
    NoRecords { index: usize, count: i32 },
    #[error("batch {index}: lastOffsetDelta {delta} does not match record count {count}")]
    BadOffsetDelta {
        index: usize,
        delta: i32,
        count: i32,
    },
    #[error("batch {index}: unknown compression codec {codec}")]
    BadCompression { index: usize, codec: i16 },
    #[error("append carries no batches")]
    Empty,
}

/// The header fields the engine needs, read from a validated batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total bytes of the batch, header included.
    pub total_bytes: u32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header from the first [`HEADER_BYTES`] of `b`; `None` if too short.
    /// Does not validate anything beyond the length.
    pub fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < HEADER_BYTES {
            return None;
        }
        let batch_length = be_i32(b, 8);
        Some(BatchHeader {
            base_offset: be_i64(b, 0),
            total_bytes: (LOG_OVERHEAD as i64 + batch_length as i64).clamp(0, u32::MAX as i64)
                as u32,
            partition_leader_epoch: be_i32(b, 12),
            magic: b[16] as i8,
            crc: be_i32(b, 17) as u32,
            attributes: be_i16(b, 21),
            last_offset_delta: be_i32(b, 23),
            base_timestamp: be_i64(b, 27),
            max_timestamp: be_i64(b, 35),
            producer_id: be_i64(b, 43),
            producer_epoch: be_i16(b, 51),
            base_sequence: be_i32(b, 53),
            record_count: be_i32(b, 57),
        })
    }

    /// The offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    /// True when the batch carries LogAppendTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }
}

/// Validates one batch as a client sent it; `index` names it in errors.
pub fn validate(b: &[u8], index: usize) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(b).ok_or(BatchError::TooShort {
        index,
        len: b.len(),
    })?;
    match h.magic {
        MAGIC_V2 => {}
        0 | 1 => {
            return Err(BatchError::OldMagic {
                index,
                magic: h.magic,
            })
        }
        m => return Err(BatchError::BadMagic { index, magic: m }),
    }
    let declared = LOG_OVERHEAD as i64 + be_i32(b, 8) as i64;
    if declared != b.len() as i64 {
        return Err(BatchError::LengthMismatch {
            index,
            declared,
            actual: b.len(),
        });
    }
    let computed = crc32c::crc32c(&b[CRC_START..]);
    if computed != h.crc {
        return Err(BatchError::BadCrc {
            index,
            stored: h.crc,
            computed,
        });
    }
    if h.record_count < 1 {
        return Err(BatchError::NoRecords {
            index,
            count: h.record_count,
        });
    }
    if h.last_offset_delta != h.record_count - 1 {
        return Err(BatchError::BadOffsetDelta {
            index,
            delta: h.last_offset_delta,
            count: h.record_count,
        });
    }
    if h.compression() > 4 {
        return Err(BatchError::BadCompression {
            index,
            codec: h.compression(),
        });
    }
    Ok(h)
}

/// Checks a stored batch read back from disk: magic, length field, CRC, offset delta.
/// Used by recovery and reads (checked on write and again on read).
pub fn check_stored(b: &[u8]) -> Option<BatchHeader> {
    let h = BatchHeader::parse(b)?;
    if h.magic != MAGIC_V2
        || h.total_bytes as usize != b.len()
        || h.record_count < 1
        || h.last_offset_delta < 0
        || crc32c::crc32c(&b[CRC_START..]) != h.crc
    {
        return None;
    }
    Some(h)
}

/// Writes the base offset (bytes 0..8; outside the CRC).
pub fn set_base_offset(b: &mut [u8], base_offset: i64) {
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch (bytes 12..16; outside the CRC).
pub fn set_leader_epoch(b: &mut [u8], epoch: i32) {
    b[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch LogAppendTime with `now_ms` as its max timestamp and recomputes the CRC.
pub fn set_log_append_time(b: &mut [u8], now_ms: i64) {
    let attributes = be_i16(b, 21) | ATTR_TIMESTAMP_TYPE;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// For an uncompressed batch, the offset and timestamp of the first record at or after
/// `min_offset` whose timestamp is at least `target_ms`; `None` if the batch is compressed,
/// malformed, or has no such record. (Compressed batches are answered at batch granularity
/// by the caller.)
pub fn first_record_at_or_after(b: &[u8], target_ms: i64, min_offset: i64) -> Option<(i64, i64)> {
    let h = BatchHeader::parse(b)?;
    if h.compression() != 0 {
        return None;
    }
    if h.is_log_append_time() {
        let ok = h.max_timestamp >= target_ms && h.last_offset() >= min_offset;
        return ok.then_some((h.base_offset.max(min_offset), h.max_timestamp));
    }
    let mut pos = HEADER_BYTES;
    for _ in 0..h.record_count {
        let (len, n) = varint(b.get(pos..)?)?;
        let body_start = pos + n;
        let body = b.get(body_start..body_start.checked_add(usize::try_from(len).ok()?)?)?;
        // record: attributes i8, timestampDelta varlong, offsetDelta varint, ...
        let (ts_delta, m) = varint(body.get(1..)?)?;
        let (off_delta, _) = varint(body.get(1 + m..)?)?;
        if h.base_timestamp + ts_delta >= target_ms && h.base_offset + off_delta >= min_offset {
            return Some((h.base_offset + off_delta, h.base_timestamp + ts_delta));
        }
        pos = body_start + body.len();
    }
    None
}

/// Zig-zag varint (up to 64 bits), returning value and bytes consumed.
fn varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        raw |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            let v = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Some((v, i + 1));
        }
    }
    None
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Builds valid uncompressed v2 batches; for tests, benchmarks and tools.
pub mod build {
    use super::*;

    /// One record as the builder writes it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Record<'a> {
        pub key: Option<&'a [u8]>,
        pub value: Option<&'a [u8]>,
        pub timestamp_delta_ms: i64,
    }

    /// An uncompressed batch (base offset 0) of `records` with `base_timestamp_ms`.
    pub fn batch(base_timestamp_ms: i64, records: &[Record<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut max_ts = base_timestamp_ms;
        for (i, r) in records.iter().enumerate() {
            let mut rec = vec![0u8]; // attributes
            put_varint(&mut rec, r.timestamp_delta_ms);
            put_varint(&mut rec, i as i64);
            put_bytes(&mut rec, r.key);
            put_bytes(&mut rec, r.value);
            put_varint(&mut rec, 0); // headers
            put_varint(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
            max_ts = max_ts.max(base_timestamp_ms + r.timestamp_delta_ms);
        }
        let mut b = vec![0u8; HEADER_BYTES];
        let batch_length = (HEADER_BYTES - LOG_OVERHEAD + body.len()) as i32;
        b[8..12].copy_from_slice(&batch_length.to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        b[16] = MAGIC_V2 as u8;
        let count = records.len() as i32;
        b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        b[27..35].copy_from_slice(&base_timestamp_ms.to_be_bytes());
        b[35..43].copy_from_slice(&max_ts.to_be_bytes());
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        b.extend_from_slice(&body);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// A batch of `count` records whose values are `value_bytes` long, so that the whole
    /// batch is close to `count * (value_bytes + 8)` bytes.
    pub fn filled(base_timestamp_ms: i64, count: usize, value_bytes: usize, seed: u8) -> Vec<u8> {
        let value: Vec<u8> = (0..value_bytes)
            .map(|i| (i as u8).wrapping_add(seed))
            .collect();
        let recs: Vec<Record<'_>> = (0..count)
            .map(|i| Record {
                key: None,
                value: Some(&value),
                timestamp_delta_ms: i as i64,
            })
            .collect();
        batch(base_timestamp_ms, &recs)
    }

    /// `b` stamped as an idempotent producer's batch (producer id, epoch, first sequence),
    /// CRC updated.
    pub fn with_producer(mut b: Vec<u8>, producer_id: i64, epoch: i16, sequence: i32) -> Vec<u8> {
        if b.len() >= super::HEADER_BYTES {
            b[43..51].copy_from_slice(&producer_id.to_be_bytes());
            b[51..53].copy_from_slice(&epoch.to_be_bytes());
            b[53..57].copy_from_slice(&sequence.to_be_bytes());
            let crc = crc32c::crc32c(&b[super::CRC_START..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        b
    }

    fn put_varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
        match b {
            None => put_varint(out, -1),
            Some(b) => {
                put_varint(out, b.len() as i64);
                out.extend_from_slice(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    /// Guards that a builder batch validates, and that the broker's edits keep it valid.
    #[test]
    fn valid_batch_and_broker_edits() {
        let mut b = filled(1000, 3, 10, 0);
        let h = validate(&b, 0).unwrap();
        assert_eq!(h.record_count, 3);
        assert_eq!(h.max_timestamp, 1002);
        set_base_offset(&mut b, 42);
        set_leader_epoch(&mut b, 7);
        assert_eq!(validate(&b, 0).unwrap().base_offset, 42);
        set_log_append_time(&mut b, 5555);
        let h = validate(&b, 0).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 5555);
        assert_eq!(check_stored(&b), Some(h));
    }

    /// Guards each refusal reason, with the field that explains it.
    #[test]
    fn bad_batches_are_refused() {
        let good = filled(0, 2, 5, 0);
        assert!(matches!(
            validate(&good[..30], 0),
            Err(BatchError::TooShort { .. })
        ));
        assert!(matches!(
            validate(&good[..good.len() - 1], 0),
            Err(BatchError::LengthMismatch { .. })
        ));
        let mut m = good.clone();
        m[16] = 1;
        assert!(matches!(
            validate(&m, 1),
            Err(BatchError::OldMagic { index: 1, magic: 1 })
        ));
        m[16] = 9;
        assert!(matches!(validate(&m, 0), Err(BatchError::BadMagic { .. })));
        let mut c = good.clone();
        let last = c.len() - 1;
        c[last] ^= 0xff;
        assert!(matches!(validate(&c, 0), Err(BatchError::BadCrc { .. })));
        let empty = batch(0, &[]);
        assert!(matches!(
            validate(&empty, 0),
            Err(BatchError::NoRecords { .. })
        ));
    }

    /// Guards record-level timestamp lookup inside an uncompressed batch.
    #[test]
    fn first_record_by_timestamp() {
        let mut b = filled(1000, 5, 3, 0); // timestamps 1000..=1004
        set_base_offset(&mut b, 100);
        assert_eq!(first_record_at_or_after(&b, 0, 0), Some((100, 1000)));
        assert_eq!(first_record_at_or_after(&b, 1003, 0), Some((103, 1003)));
        assert_eq!(first_record_at_or_after(&b, 1000, 102), Some((102, 1002)));
        assert_eq!(first_record_at_or_after(&b, 1005, 0), None);
    }
}
