//! The sparse offset index and the time index of one segment, in memory and on disk.
//!
//! Both are derivable from the segment's data, so neither is synced on the append path:
//! recovery keeps the longest prefix of entries whose own CRC32C is right, that grow
//! monotonically and point inside the data, checks the last one against the batch it names,
//! and rebuilds the rest by scanning (see `engine/FORMAT.md`). Entries are appended to the
//! files in groups; a file whose header is wrong is rewritten from scratch.

use thiserror::Error;

/// Bytes of an index file header.
pub const HEADER_BYTES: usize = 16;
/// Bytes of one offset index entry.
pub const OFFSET_ENTRY_BYTES: usize = 12;
/// Bytes of one time index entry.
pub const TIME_ENTRY_BYTES: usize = 16;
const OFFSET_MAGIC: [u8; 4] = *b"TNIX";
const TIME_MAGIC: [u8; 4] = *b"TNTI";
const VERSION: u16 = 1;

/// Why an index file's header was not accepted (the file is then rebuilt).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IndexError {
    #[error("index file shorter than its {HEADER_BYTES}-byte header")]
    Short,
    #[error("index file has magic {found:?}, expected {expected:?}")]
    Magic { found: [u8; 4], expected: [u8; 4] },
    #[error("index file version {0} is not supported (this build reads version {VERSION})")]
    Version(u16),
    #[error("index file is for base offset {found}, segment is {expected}")]
    Base { found: i64, expected: i64 },
}

/// Which of the two index kinds a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Offset,
    Time,
}

impl IndexKind {
    fn magic(self) -> [u8; 4] {
        match self {
            IndexKind::Offset => OFFSET_MAGIC,
            IndexKind::Time => TIME_MAGIC,
        }
    }

    /// Bytes of one entry of this kind.
    pub fn entry_bytes(self) -> usize {
        match self {
            IndexKind::Offset => OFFSET_ENTRY_BYTES,
            IndexKind::Time => TIME_ENTRY_BYTES,
        }
    }
}

/// The 16-byte header: magic, version u16, entry size u16, base offset u64 (little-endian).
pub fn encode_header(kind: IndexKind, base_offset: i64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_BYTES);
    h.extend_from_slice(&kind.magic());
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&(kind.entry_bytes() as u16).to_le_bytes());
    h.extend_from_slice(&base_offset.to_le_bytes());
    h
}

fn check_header(kind: IndexKind, b: &[u8], base_offset: i64) -> Result<(), IndexError> {
    let h = b.get(..HEADER_BYTES).ok_or(IndexError::Short)?;
    let found = [h[0], h[1], h[2], h[3]];
    if found != kind.magic() {
        return Err(IndexError::Magic {
            found,
            expected: kind.magic(),
        });
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != VERSION || u16::from_le_bytes([h[6], h[7]]) as usize != kind.entry_bytes() {
        return Err(IndexError::Version(version));
    }
    let found = i64::from_le_bytes(le8(&h[8..16]));
    if found != base_offset {
        return Err(IndexError::Base {
            found,
            expected: base_offset,
        });
    }
    Ok(())
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

fn le4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}

/// One offset index entry: the batch starting at `rel_offset` (relative to the segment's base
/// offset) begins at byte `position` of the segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

/// One time index entry: every batch up to and including the one starting at `rel_offset`
/// has a max timestamp of at most `timestamp_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub rel_offset: u32,
}

/// The sparse offset index of a segment.
#[derive(Debug, Clone, Default)]
pub struct OffsetIndex {
    pub entries: Vec<OffsetEntry>,
    /// Entries already in the file.
    pub persisted: usize,
}

/// The time index of a segment.
#[derive(Debug, Clone, Default)]
pub struct TimeIndex {
    pub entries: Vec<TimeEntry>,
    /// Entries already in the file.
    pub persisted: usize,
}

impl OffsetIndex {
    /// The last entry at or before `rel_offset`, or the segment start.
    pub fn lookup(&self, rel_offset: u32) -> OffsetEntry {
        let i = self.entries.partition_point(|e| e.rel_offset <= rel_offset);
        match i {
            0 => OffsetEntry {
                rel_offset: 0,
                position: 0,
            },
            _ => self.entries[i - 1],
        }
    }

    /// Adds an entry; entries must grow in both fields.
    pub fn push(&mut self, e: OffsetEntry) {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|l| l.rel_offset < e.rel_offset && l.position < e.position));
        self.entries.push(e);
    }

    /// Drops entries at or after byte `position`.
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(keep);
    }

    /// Encodes entries `from..to` for appending to the file.
    pub fn encode_range(&self, from: usize, to: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(to.saturating_sub(from) * OFFSET_ENTRY_BYTES);
        for e in self.entries.get(from..to).unwrap_or_default() {
            let mut body = [0u8; 8];
            body[..4].copy_from_slice(&e.rel_offset.to_le_bytes());
            body[4..].copy_from_slice(&e.position.to_le_bytes());
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        }
        out
    }

    /// Decodes a file: the valid prefix of entries whose positions are below `data_len`.
    pub fn decode(b: &[u8], base_offset: i64, data_len: u64) -> Result<OffsetIndex, IndexError> {
        check_header(IndexKind::Offset, b, base_offset)?;
        let mut idx = OffsetIndex::default();
        for e in b[HEADER_BYTES..].chunks_exact(OFFSET_ENTRY_BYTES) {
            if crc32c::crc32c(&e[..8]) != u32::from_le_bytes(le4(&e[8..])) {
                break;
            }
            let entry = OffsetEntry {
                rel_offset: u32::from_le_bytes(le4(&e[..4])),
                position: u32::from_le_bytes(le4(&e[4..8])),
            };
            let grows = idx
                .entries
                .last()
                .is_none_or(|l| l.rel_offset < entry.rel_offset && l.position < entry.position);
            if !grows || entry.position as u64 >= data_len {
                break;
            }
            idx.entries.push(entry);
        }
        idx.persisted = idx.entries.len();
        Ok(idx)
    }
}

impl TimeIndex {
    /// The relative offset to start scanning from to find the first batch whose max
    /// timestamp is at least `timestamp_ms`: the last entry below it (every batch up to that
    /// entry is older), or the segment start.
    pub fn scan_start(&self, timestamp_ms: i64) -> u32 {
        let i = self
            .entries
            .partition_point(|e| e.timestamp_ms < timestamp_ms);
        match i {
            0 => 0,
            _ => self.entries[i - 1].rel_offset,
        }
    }

    /// The greatest timestamp recorded.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|e| e.timestamp_ms)
    }

    /// Adds an entry if it raises the max timestamp; entries grow in both fields.
    pub fn maybe_push(&mut self, e: TimeEntry) {
        let raises = self
            .entries
            .last()
            .is_none_or(|l| e.timestamp_ms > l.timestamp_ms && e.rel_offset > l.rel_offset);
        if raises {
            self.entries.push(e);
        }
    }

    /// Drops entries for batches at or after `rel_offset`.
    pub fn truncate_to_offset(&mut self, rel_offset: u32) {
        let keep = self.entries.partition_point(|e| e.rel_offset < rel_offset);
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(keep);
    }

    /// Encodes entries `from..` for appending to the file.
    pub fn encode_from(&self, from: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.entries.len() - from) * TIME_ENTRY_BYTES);
        for e in &self.entries[from..] {
            let mut body = [0u8; 12];
            body[..8].copy_from_slice(&e.timestamp_ms.to_le_bytes());
            body[8..].copy_from_slice(&e.rel_offset.to_le_bytes());
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        }
        out
    }

    /// Decodes a file: the valid prefix of entries below `rel_offset_end`.
    pub fn decode(
        b: &[u8],
        base_offset: i64,
        rel_offset_end: u32,
    ) -> Result<TimeIndex, IndexError> {
        check_header(IndexKind::Time, b, base_offset)?;
        let mut idx = TimeIndex::default();
        for e in b[HEADER_BYTES..].chunks_exact(TIME_ENTRY_BYTES) {
            if crc32c::crc32c(&e[..12]) != u32::from_le_bytes(le4(&e[12..])) {
                break;
            }
            let entry = TimeEntry {
                timestamp_ms: i64::from_le_bytes(le8(&e[..8])),
                rel_offset: u32::from_le_bytes(le4(&e[8..12])),
            };
            let grows = idx.entries.last().is_none_or(|l| {
                l.rel_offset < entry.rel_offset && l.timestamp_ms < entry.timestamp_ms
            });
            if !grows || entry.rel_offset >= rel_offset_end {
                break;
            }
            idx.entries.push(entry);
        }
        idx.persisted = idx.entries.len();
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Guards that an encoded index decodes to the same entries, and that lookups agree
        /// with a linear scan.
        #[test]
        fn offset_index_round_trip_and_lookup(
            steps in proptest::collection::vec((1u32..100, 1u32..10_000), 0..200),
            probe in 0u32..20_000,
        ) {
            let mut idx = OffsetIndex::default();
            let (mut rel, mut pos) = (0u32, 0u32);
            for (dr, dp) in steps {
                rel += dr;
                pos += dp;
                idx.push(OffsetEntry { rel_offset: rel, position: pos });
            }
            let mut file = encode_header(IndexKind::Offset, 77);
            file.extend(idx.encode_range(0, idx.entries.len()));
            let back = OffsetIndex::decode(&file, 77, u64::MAX).unwrap();
            prop_assert_eq!(&back.entries, &idx.entries);
            let linear = idx.entries.iter().rev().find(|e| e.rel_offset <= probe).copied()
                .unwrap_or(OffsetEntry { rel_offset: 0, position: 0 });
            prop_assert_eq!(idx.lookup(probe), linear);
        }
    }

    /// Guards that a torn or corrupt entry ends the valid prefix and a wrong header is refused.
    #[test]
    fn corrupt_entries_and_headers() {
        let mut idx = OffsetIndex::default();
        for i in 1..=5u32 {
            idx.push(OffsetEntry {
                rel_offset: i * 10,
                position: i * 4096,
            });
        }
        let mut file = encode_header(IndexKind::Offset, 0);
        file.extend(idx.encode_range(0, 5));
        file[HEADER_BYTES + 2 * OFFSET_ENTRY_BYTES] ^= 1;
        assert_eq!(
            OffsetIndex::decode(&file, 0, u64::MAX)
                .unwrap()
                .entries
                .len(),
            2
        );
        assert_eq!(
            OffsetIndex::decode(&file, 0, 8192).unwrap().entries.len(),
            1
        );
        assert!(matches!(
            OffsetIndex::decode(&file, 5, u64::MAX),
            Err(IndexError::Base { .. })
        ));
        assert!(matches!(
            TimeIndex::decode(&file, 0, u32::MAX),
            Err(IndexError::Magic { .. })
        ));
        assert!(matches!(
            OffsetIndex::decode(&file[..3], 0, 1),
            Err(IndexError::Short)
        ));
    }

    /// Guards the time index scan start: every batch before it is older than the target.
    #[test]
    fn time_scan_start() {
        let mut t = TimeIndex::default();
        t.maybe_push(TimeEntry {
            timestamp_ms: 100,
            rel_offset: 5,
        });
        t.maybe_push(TimeEntry {
            timestamp_ms: 90,
            rel_offset: 9,
        }); // not a raise: ignored
        t.maybe_push(TimeEntry {
            timestamp_ms: 200,
            rel_offset: 10,
        });
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.scan_start(50), 0);
        assert_eq!(t.scan_start(150), 5);
        assert_eq!(t.scan_start(201), 10);
        let mut file = encode_header(IndexKind::Time, 3);
        file.extend(t.encode_from(0));
        assert_eq!(TimeIndex::decode(&file, 3, 10).unwrap().entries.len(), 1);
    }
}
