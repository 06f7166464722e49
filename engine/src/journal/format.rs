//! The journal's bytes: file header, records and checkpoint (all little-endian, each with a
//! magic or a CRC32C). The byte diagrams are in `engine/FORMAT.md`; this module is the one
//! place that encodes and decodes them, and decoding arbitrary bytes never panics.

use thiserror::Error;

/// Bytes of the header block at the start of every journal file (one whole block, so the
/// records after it are written block-aligned like everything else).
pub const FILE_HEADER_BYTES: u64 = crate::buf::BLOCK_BYTES as u64;
const FILE_MAGIC: [u8; 4] = *b"TNJF";
const FILE_VERSION: u16 = 1;
/// Bytes of the file header that carry data (the rest of the block is zero).
const FILE_HEADER_USED: usize = 36;

/// Bytes of a record header; the partition name and the payload follow it.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Records start at multiples of this (their length is padded to it).
pub const RECORD_ALIGN: usize = 8;

const CHECKPOINT_MAGIC: [u8; 4] = *b"TNJC";
const CHECKPOINT_VERSION: u16 = 1;

/// A journal file's identity: which generation of its slot it is, and the journal position
/// (LSN) of its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Increases by one every time any file of the journal is started.
    pub generation: u64,
    /// LSN of the first record, stored at file position [`FILE_HEADER_BYTES`].
    pub start_lsn: u64,
    /// The file's size as created (a shorter file was truncated).
    pub file_bytes: u64,
}

/// Encodes a file header into the first bytes of `out` (a zeroed block).
pub fn encode_file_header(h: &FileHeader, out: &mut [u8]) {
    out[0..4].copy_from_slice(&FILE_MAGIC);
    out[4..6].copy_from_slice(&FILE_VERSION.to_le_bytes());
    out[6..8].copy_from_slice(&0u16.to_le_bytes());
    out[8..16].copy_from_slice(&h.generation.to_le_bytes());
    out[16..24].copy_from_slice(&h.start_lsn.to_le_bytes());
    out[24..32].copy_from_slice(&h.file_bytes.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..32]);
    out[32..36].copy_from_slice(&crc.to_le_bytes());
}

/// The file header block as a fresh buffer (for writing a new file).
pub fn file_header_block(h: &FileHeader) -> Vec<u8> {
    let mut b = vec![0u8; FILE_HEADER_BYTES as usize];
    encode_file_header(h, &mut b);
    b
}

/// Decodes a file header; `None` for anything but a valid version-1 header.
pub fn decode_file_header(b: &[u8]) -> Option<FileHeader> {
    if b.len() < FILE_HEADER_USED || b[0..4] != FILE_MAGIC || u16_at(b, 4) != FILE_VERSION {
        return None;
    }
    if crc32c::crc32c(&b[0..32]) != u32_at(b, 32) {
        return None;
    }
    Some(FileHeader {
        generation: u64_at(b, 8),
        start_lsn: u64_at(b, 16),
        file_bytes: u64_at(b, 24),
    })
}

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Record batches of one partition, base offsets assigned, exactly as in its segment.
    Batches = 1,
    /// The partition was truncated: every batch at or after the record's base offset (a
    /// batch containing it, whole) is gone. No payload.
    Truncate = 2,
}

/// A decoded record, borrowing the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub lsn: u64,
    pub kind: RecordKind,
    /// The partition's directory name (`<topic>-<partition>`).
    pub partition: &'a str,
    /// First offset the record is about.
    pub base_offset: i64,
    /// The batches.
    pub payload: &'a [u8],
}

/// Encoded length of a record (padded to [`RECORD_ALIGN`]).
pub fn record_len(partition: &str, payload_bytes: usize) -> usize {
    (RECORD_HEADER_BYTES + partition.len() + payload_bytes).next_multiple_of(RECORD_ALIGN)
}

/// Appends the encoded record to `out` via `push` (header, name, payload, zero padding);
/// returns its length.
pub fn encode_record(r: &Record<'_>, mut push: impl FnMut(&[u8])) -> usize {
    let len = record_len(r.partition, r.payload.len());
    let mut h = [0u8; RECORD_HEADER_BYTES];
    h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    h[8..16].copy_from_slice(&r.lsn.to_le_bytes());
    h[16] = r.kind as u8;
    h[17] = 0;
    h[18..20].copy_from_slice(&(r.partition.len() as u16).to_le_bytes());
    h[20..24].copy_from_slice(&(r.payload.len() as u32).to_le_bytes());
    h[24..32].copy_from_slice(&r.base_offset.to_le_bytes());
    let pad = len - RECORD_HEADER_BYTES - r.partition.len() - r.payload.len();
    let zeros = [0u8; RECORD_ALIGN];
    let mut crc = crc32c::crc32c(&h[4..]);
    crc = crc32c::crc32c_append(crc, r.partition.as_bytes());
    crc = crc32c::crc32c_append(crc, r.payload);
    crc = crc32c::crc32c_append(crc, &zeros[..pad]);
    h[0..4].copy_from_slice(&crc.to_le_bytes());
    push(&h);
    push(r.partition.as_bytes());
    push(r.payload);
    push(&zeros[..pad]);
    len
}

/// Why the bytes at a position are not the record that should be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecordError {
    /// Zeros, a stale record of an earlier use of the file, or too few bytes: the journal
    /// ends here.
    #[error("no record")]
    End,
    /// A record header for this position whose checksum fails: a torn write at the end of
    /// the journal, or corruption if valid records follow it.
    #[error("record checksum mismatch (declared length {len})")]
    BadCrc { len: usize },
    /// A record that checks out but cannot be a record of this format.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

/// Decodes the record at the start of `b`, which must carry `expected_lsn`.
pub fn decode_record(b: &[u8], expected_lsn: u64) -> Result<(Record<'_>, usize), RecordError> {
    if b.len() < RECORD_HEADER_BYTES {
        return Err(RecordError::End);
    }
    let len = u32_at(b, 4) as usize;
    if u64_at(b, 8) != expected_lsn
        || len < RECORD_HEADER_BYTES
        || !len.is_multiple_of(RECORD_ALIGN)
    {
        return Err(RecordError::End);
    }
    if len > b.len() {
        return Err(RecordError::BadCrc { len });
    }
    if crc32c::crc32c(&b[4..len]) != u32_at(b, 0) {
        return Err(RecordError::BadCrc { len });
    }
    let kind = match b[16] {
        1 => RecordKind::Batches,
        2 => RecordKind::Truncate,
        _ => return Err(RecordError::Malformed("unknown record kind")),
    };
    let name_len = u16_at(b, 18) as usize;
    let payload_len = u32_at(b, 20) as usize;
    if RECORD_HEADER_BYTES + name_len + payload_len > len {
        return Err(RecordError::Malformed(
            "name and payload overrun the record",
        ));
    }
    let name_end = RECORD_HEADER_BYTES + name_len;
    let partition = std::str::from_utf8(&b[RECORD_HEADER_BYTES..name_end])
        .map_err(|_| RecordError::Malformed("partition name is not UTF-8"))?;
    let r = Record {
        lsn: expected_lsn,
        kind,
        partition,
        base_offset: i64_at(b, 24),
        payload: &b[name_end..name_end + payload_len],
    };
    Ok((r, len))
}

/// The journal's checkpoint: where replay starts, and what each partition's segment held
/// durably when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Increases by one with every checkpoint written; the newer of the two copies wins.
    pub sequence: u64,
    /// Every record the journal still needs has an LSN at or after this.
    pub replay_start: u64,
    /// `(partition directory name, offset below which its segment was durable)`.
    pub durable: Vec<(String, i64)>,
}

/// Bytes before a checkpoint's partition entries.
const CHECKPOINT_HEADER_BYTES: usize = 32;

/// Encodes a checkpoint (it may be followed by stale bytes in its file: the length field
/// says where it ends).
pub fn encode_checkpoint(c: &Checkpoint) -> Vec<u8> {
    let mut b = Vec::with_capacity(CHECKPOINT_HEADER_BYTES + 4 + c.durable.len() * 32);
    b.extend_from_slice(&CHECKPOINT_MAGIC);
    b.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // total length, set below
    b.extend_from_slice(&(c.durable.len() as u32).to_le_bytes());
    b.extend_from_slice(&c.sequence.to_le_bytes());
    b.extend_from_slice(&c.replay_start.to_le_bytes());
    for (name, offset) in &c.durable {
        b.extend_from_slice(&(name.len() as u16).to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
    }
    let total = (b.len() + 4) as u32;
    b[8..12].copy_from_slice(&total.to_le_bytes());
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a checkpoint; `None` unless it is whole and its CRC matches.
pub fn decode_checkpoint(b: &[u8]) -> Option<Checkpoint> {
    if b.len() < CHECKPOINT_HEADER_BYTES + 4
        || b[0..4] != CHECKPOINT_MAGIC
        || u16_at(b, 4) != CHECKPOINT_VERSION
    {
        return None;
    }
    let total = u32_at(b, 8) as usize;
    if total < CHECKPOINT_HEADER_BYTES + 4 || total > b.len() {
        return None;
    }
    let body = total - 4;
    if crc32c::crc32c(&b[..body]) != u32_at(b, body) {
        return None;
    }
    let count = u32_at(b, 12) as usize;
    let mut at = CHECKPOINT_HEADER_BYTES;
    let mut durable = Vec::with_capacity(count.min(body / 10));
    for _ in 0..count {
        if at + 2 > body {
            return None;
        }
        let n = u16_at(b, at) as usize;
        at += 2;
        if at + n + 8 > body {
            return None;
        }
        let name = std::str::from_utf8(&b[at..at + n]).ok()?.to_string();
        at += n;
        durable.push((name, i64_at(b, at)));
        at += 8;
    }
    (at == body).then_some(Checkpoint {
        sequence: u64_at(b, 16),
        replay_start: u64_at(b, 24),
        durable,
    })
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    u64_at(b, at) as i64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn encode(r: &Record<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(r, |b| out.extend_from_slice(b));
        out
    }

    proptest! {
        /// Guards the record codec: what is encoded decodes to the same record.
        #[test]
        fn record_round_trips(
            lsn in any::<u64>(),
            base in any::<i64>(),
            name in "[a-z0-9._-]{1,40}",
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let kind = RecordKind::Batches;
            let r = Record { lsn, kind, partition: &name, base_offset: base, payload: &payload };
            let b = encode(&r);
            prop_assert_eq!(b.len(), record_len(&name, payload.len()));
            let (d, len) = decode_record(&b, lsn).unwrap();
            prop_assert_eq!(len, b.len());
            prop_assert_eq!(d, r);
        }

        /// Guards corruption detection: any single flipped bit is refused, never misread.
        #[test]
        fn a_flipped_bit_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..200),
            bit in any::<prop::sample::Index>(),
        ) {
            let r = Record {
                lsn: 4096, kind: RecordKind::Batches, partition: "t-0", base_offset: 7,
                payload: &payload,
            };
            let mut b = encode(&r);
            let i = bit.index(b.len() * 8);
            b[i / 8] ^= 1 << (i % 8);
            prop_assert!(decode_record(&b, 4096).is_err());
        }

        /// Guards the decoders against arbitrary bytes: they answer, never panic.
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_record(&b, 0);
            let _ = decode_checkpoint(&b);
            let _ = decode_file_header(&b);
        }
    }

    /// Guards the checkpoint codec, and that a truncated or altered one is refused.
    #[test]
    fn checkpoint_round_trips_and_refuses_damage() {
        let c = Checkpoint {
            sequence: 3,
            replay_start: 123_456,
            durable: vec![("orders-0".into(), 42), ("orders-11".into(), -1)],
        };
        let b = encode_checkpoint(&c);
        assert_eq!(decode_checkpoint(&b), Some(c.clone()));
        assert_eq!(decode_checkpoint(&b[..b.len() - 1]), None);
        let mut stale_after = b.clone();
        stale_after.extend_from_slice(&[7u8; 100]);
        assert_eq!(decode_checkpoint(&stale_after), Some(c));
        let mut bad = b.clone();
        bad[9] ^= 1;
        assert_eq!(decode_checkpoint(&bad), None);
    }

    /// Guards the file header, and that zeros or a stale version are not a header.
    #[test]
    fn file_header_round_trips() {
        let h = FileHeader {
            generation: 9,
            start_lsn: 1 << 40,
            file_bytes: 1 << 26,
        };
        let b = file_header_block(&h);
        assert_eq!(b.len(), FILE_HEADER_BYTES as usize);
        assert_eq!(decode_file_header(&b), Some(h));
        assert_eq!(decode_file_header(&vec![0u8; 4096]), None);
        let mut v2 = b.clone();
        v2[4] = 2;
        assert_eq!(decode_file_header(&v2), None);
    }

    /// Guards the end-of-journal rule: zeros and a record of another LSN read as the end.
    #[test]
    fn zeros_and_stale_records_end_the_journal() {
        assert_eq!(decode_record(&[0u8; 64], 0), Err(RecordError::End));
        let r = Record {
            lsn: 100,
            kind: RecordKind::Batches,
            partition: "a-1",
            base_offset: 5,
            payload: &[],
        };
        let b = encode(&r);
        assert_eq!(decode_record(&b, 200), Err(RecordError::End));
        assert!(decode_record(&b[..b.len() - 8], 100).is_err());
    }
}
