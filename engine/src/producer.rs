//! Idempotent producers: per partition, the sequence ranges of each producer's last batches.
//!
//! A Kafka producer with `enable.idempotence` stamps every batch with its producer id,
//! epoch and the sequence number of its first record. The log keeps, per producer, the
//! last [`BATCHES_PER_PRODUCER`] batches' sequence ranges and offsets, and checks each new
//! batch against them before it is queued:
//!
//! * the same range as a kept batch: a **duplicate** (a retry); nothing is written and the
//!   append answers with the original offsets;
//! * the next sequence after the last kept batch: appended;
//! * anything else: refused with [`SequenceError::OutOfOrder`];
//! * an epoch below the producer's current one: refused with [`SequenceError::StaleEpoch`]
//!   (a newer instance of the producer fenced this one); a higher epoch starts over at
//!   sequence 0.
//!
//! A producer the table does not know may start at any sequence (as in Kafka: its state may
//! have expired with the data that carried it).
//!
//! The table is checked and updated synchronously when batches are queued, so pipelined
//! appends of one producer see each other. A write failure that drops queued batches
//! removes their ranges again ([`ProducerTable::truncate_from`]).
//!
//! ## Persistence
//!
//! The table survives restarts as *snapshot + replay*: a snapshot file
//! (`<offset>.producers`, format in `FORMAT.md`) holds the ranges of batches below its
//! offset; on open the log loads the newest snapshot not past its end and replays the batch
//! headers from there. Snapshots are written when the log closes, after each segment roll
//! and (journaled logs) at each journal checkpoint, so an unclean restart replays at most
//! the active segment, and with the journal only what came after the last checkpoint.

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchHeader;

/// Batches remembered per producer (Kafka keeps 5: the most a client pipelines).
pub const BATCHES_PER_PRODUCER: usize = 5;

/// Producers remembered per partition; the least recently active are forgotten first.
pub const PRODUCERS_MAX: usize = 1 << 16;

const SNAPSHOT_MAGIC: [u8; 4] = *b"TNPS";
const SNAPSHOT_VERSION: u16 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 20;
const PRODUCER_BYTES: usize = 19;
const RANGE_BYTES: usize = 24;

/// Why a batch of an idempotent producer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error(
        "producer {producer_id}: out of order sequence {got} (expected {expected}); \
         batches were lost or reordered"
    )]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id}: one append mixes retried and new batches")]
    MixedRetry { producer_id: i64 },
    #[error("producer {producer_id}: epoch {got} is older than the current epoch {current}")]
    StaleEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
}

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    /// Oldest first; at most [`BATCHES_PER_PRODUCER`].
    ranges: VecDeque<SeqRange>,
    /// Wall-clock ms of its last batch (append time, or the batch timestamp on replay).
    last_ms: i64,
}

/// One producer as the table knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence of its newest batch; -1 when no batch is remembered.
    pub last_sequence: i32,
    /// Wall-clock ms of its last batch (append time, or the batch timestamp on replay).
    pub last_ms: i64,
}

/// What the table says of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not an idempotent batch, or the next one in sequence: append it.
    Append,
    /// A retry of a batch already in the log.
    Duplicate(SeqRange),
}

/// The last sequence of a batch, wrapping like Kafka's sequences do after `i32::MAX`.
fn last_seq(h: &BatchHeader) -> i32 {
    let delta = h.last_offset_delta.max(0);
    if h.base_sequence > i32::MAX - delta {
        delta - (i32::MAX - h.base_sequence) - 1
    } else {
        h.base_sequence + delta
    }
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Whether the batch carries a producer id and sequence (idempotent or transactional).
pub fn is_idempotent(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && h.base_sequence >= 0
}

/// The sequence state of one partition's producers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerTable {
    producers: HashMap<i64, Producer>,
}

impl ProducerTable {
    /// Checks one batch against the table without changing it.
    pub fn check(&self, h: &BatchHeader) -> Result<Check, SequenceError> {
        if !is_idempotent(h) {
            return Ok(Check::Append);
        }
        let Some(p) = self.producers.get(&h.producer_id) else {
            return Ok(Check::Append);
        };
        if h.producer_epoch < p.epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id: h.producer_id,
                current: p.epoch,
                got: h.producer_epoch,
            });
        }
        if h.producer_epoch > p.epoch {
            if h.base_sequence != 0 {
                return Err(SequenceError::OutOfOrder {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                });
            }
            return Ok(Check::Append);
        }
        let last = last_seq(h);
        if let Some(r) = p
            .ranges
            .iter()
            .find(|r| r.first_seq == h.base_sequence && r.last_seq == last)
        {
            return Ok(Check::Duplicate(*r));
        }
        match p.ranges.back() {
            Some(r) if next_seq(r.last_seq) != h.base_sequence => Err(SequenceError::OutOfOrder {
                producer_id: h.producer_id,
                expected: next_seq(r.last_seq),
                got: h.base_sequence,
            }),
            _ => Ok(Check::Append),
        }
    }

    /// Records a batch stored at `first_offset` (call after [`check`](Self::check) said
    /// `Append`). A batch of an older epoch is ignored.
    pub fn record(&mut self, h: &BatchHeader, first_offset: i64, now_ms: i64) {
        self.record_inner(h, first_offset, now_ms, false);
    }

    /// Records a batch that is in the log whatever this table thought of it: replicated
    /// from the leader, replayed from the journal, read back from a segment. The table
    /// follows the log, to an older epoch too: after a follower cut a diverged tail (where
    /// a newer epoch of the producer may have been), the leader's log goes on with what it
    /// holds, and a table stuck at the cut epoch would refuse those batches on replay.
    pub fn record_stored(&mut self, h: &BatchHeader, first_offset: i64, now_ms: i64) {
        self.record_inner(h, first_offset, now_ms, true);
    }

    fn record_inner(&mut self, h: &BatchHeader, first_offset: i64, now_ms: i64, stored: bool) {
        if !is_idempotent(h) {
            return;
        }
        if !self.producers.contains_key(&h.producer_id) && self.producers.len() >= PRODUCERS_MAX {
            self.forget_least_recent();
        }
        let p = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| Producer {
                epoch: h.producer_epoch,
                ranges: VecDeque::new(),
                last_ms: now_ms,
            });
        if h.producer_epoch < p.epoch && !stored {
            return;
        }
        if h.producer_epoch != p.epoch {
            p.epoch = h.producer_epoch;
            p.ranges.clear();
        }
        if p.ranges.len() == BATCHES_PER_PRODUCER {
            p.ranges.pop_front();
        }
        p.ranges.push_back(SeqRange {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            first_offset,
            last_offset: first_offset + h.last_offset_delta.max(0) as i64,
        });
        p.last_ms = p.last_ms.max(now_ms);
    }

    fn forget_least_recent(&mut self) {
        if let Some(pid) = self
            .producers
            .iter()
            .min_by_key(|(_, p)| p.last_ms)
            .map(|(pid, _)| *pid)
        {
            self.producers.remove(&pid);
        }
    }

    /// Forgets the ranges of batches at or after `offset` (they were dropped or truncated).
    pub fn truncate_from(&mut self, offset: i64) {
        for p in self.producers.values_mut() {
            while p.ranges.back().is_some_and(|r| r.last_offset >= offset) {
                p.ranges.pop_back();
            }
        }
    }

    /// Forgets producers idle for `idle_ms` or more whose batches are all below `log_start`
    /// or who have been idle that long (Kafka's `producer.id.expiration.ms`).
    pub fn expire(&mut self, now_ms: i64, idle_ms: i64, log_start: i64) {
        self.producers.retain(|_, p| {
            let gone = p.ranges.back().is_some_and(|r| r.last_offset < log_start);
            !gone && now_ms - p.last_ms < idle_ms
        });
    }

    /// Number of producers known.
    /// Every producer this table knows, by id (DescribeProducers).
    pub fn states(&self) -> Vec<ProducerState> {
        let mut out: Vec<ProducerState> = self
            .producers
            .iter()
            .map(|(id, p)| ProducerState {
                producer_id: *id,
                epoch: p.epoch,
                last_sequence: p.ranges.back().map_or(-1, |r| r.last_seq),
                last_ms: p.last_ms,
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The snapshot of the ranges of batches below `offset` (see `FORMAT.md`).
    pub fn encode_snapshot(&self, offset: i64) -> Vec<u8> {
        let mut pids: Vec<&i64> = self.producers.keys().collect();
        pids.sort_unstable();
        let mut body = Vec::new();
        let mut count = 0u32;
        for pid in pids {
            let p = &self.producers[pid];
            let kept: Vec<&SeqRange> = p.ranges.iter().filter(|r| r.last_offset < offset).collect();
            if kept.is_empty() {
                continue;
            }
            count += 1;
            body.extend_from_slice(&pid.to_le_bytes());
            body.extend_from_slice(&p.epoch.to_le_bytes());
            body.extend_from_slice(&p.last_ms.to_le_bytes());
            body.push(kept.len() as u8);
            for r in kept {
                body.extend_from_slice(&r.first_seq.to_le_bytes());
                body.extend_from_slice(&r.last_seq.to_le_bytes());
                body.extend_from_slice(&r.first_offset.to_le_bytes());
                body.extend_from_slice(&r.last_offset.to_le_bytes());
            }
        }
        let mut b = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + body.len() + 4);
        b.extend_from_slice(&SNAPSHOT_MAGIC);
        b.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&body);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a snapshot: `(offset, table)`, or `None` if it is not a valid one.
    pub fn decode_snapshot(b: &[u8]) -> Option<(i64, ProducerTable)> {
        if b.len() < SNAPSHOT_HEADER_BYTES + 4 || b[..4] != SNAPSHOT_MAGIC {
            return None;
        }
        let (data, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(data) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader { b: data, at: 4 };
        if r.u16()? != SNAPSHOT_VERSION {
            return None;
        }
        r.u16()?;
        let offset = r.i64()?;
        let count = r.u32()? as usize;
        let mut producers = HashMap::new();
        for _ in 0..count {
            let pid = r.i64()?;
            let epoch = r.u16()? as i16;
            let last_ms = r.i64()?;
            let n = r.u8()? as usize;
            if n == 0 || n > BATCHES_PER_PRODUCER {
                return None;
            }
            let mut ranges = VecDeque::with_capacity(n);
            for _ in 0..n {
                ranges.push_back(SeqRange {
                    first_seq: r.u32()? as i32,
                    last_seq: r.u32()? as i32,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            producers.insert(
                pid,
                Producer {
                    epoch,
                    ranges,
                    last_ms,
                },
            );
        }
        if r.at != data.len() {
            return None;
        }
        Some((offset, ProducerTable { producers }))
    }
}

// The per-producer record is `PRODUCER_BYTES` + n × `RANGE_BYTES` bytes.
const _: () = assert!(PRODUCER_BYTES == 8 + 2 + 8 + 1 && RANGE_BYTES == 4 + 4 + 8 + 8);

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.b.get(self.at..self.at + N)?;
        self.at += N;
        s.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            total_bytes: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: records,
        }
    }

    /// Guards the sequence rules: in order appends, retries are duplicates, gaps refused.
    #[test]
    fn sequences() {
        let mut t = ProducerTable::default();
        let a = header(7, 0, 0, 3);
        assert_eq!(t.check(&a), Ok(Check::Append));
        t.record(&a, 10, 1);
        let b = header(7, 0, 3, 2);
        assert_eq!(t.check(&b), Ok(Check::Append));
        t.record(&b, 13, 2);
        match t.check(&a) {
            Ok(Check::Duplicate(r)) => assert_eq!((r.first_offset, r.last_offset), (10, 12)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.check(&header(7, 0, 6, 1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                expected: 5,
                got: 6
            })
        );
        assert!(matches!(
            t.check(&header(7, 1, 4, 1)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        t.record(&header(7, 1, 0, 1), 15, 3);
        assert!(matches!(
            t.check(&header(7, 0, 5, 1)),
            Err(SequenceError::StaleEpoch { current: 1, .. })
        ));
        // Unknown producers and non-idempotent batches start anywhere.
        assert_eq!(t.check(&header(8, 0, 42, 1)), Ok(Check::Append));
        assert_eq!(t.check(&header(-1, -1, -1, 1)), Ok(Check::Append));
    }

    /// Guards the memory bound and wraparound of sequences.
    #[test]
    fn keeps_five_and_wraps() {
        let mut t = ProducerTable::default();
        let mut seq = i32::MAX - 3;
        for k in 0..8 {
            let h = header(1, 0, seq, 2);
            assert_eq!(t.check(&h), Ok(Check::Append), "batch {k}");
            t.record(&h, k * 2, 0);
            seq = next_seq(last_seq(&h));
        }
        assert_eq!(t.producers[&1].ranges.len(), BATCHES_PER_PRODUCER);
        // The oldest kept batch is still recognised, an evicted one is not.
        assert!(matches!(
            t.check(&header(1, 0, 2, 2)),
            Ok(Check::Duplicate(_))
        ));
    }

    /// Guards that dropped batches can be retried.
    #[test]
    fn truncate_then_retry() {
        let mut t = ProducerTable::default();
        t.record(&header(1, 0, 0, 1), 0, 0);
        t.record(&header(1, 0, 1, 1), 1, 0);
        t.truncate_from(1);
        assert_eq!(t.check(&header(1, 0, 1, 1)), Ok(Check::Append));
    }

    /// Guards the snapshot codec: round trip, the offset filter, corruption detected.
    #[test]
    fn snapshot_round_trip() {
        let mut t = ProducerTable::default();
        for pid in 0..4 {
            for s in 0..7 {
                t.record(&header(pid, 2, s, 1), pid * 100 + s as i64, 5);
            }
        }
        let b = t.encode_snapshot(i64::MAX);
        let (offset, back) = ProducerTable::decode_snapshot(&b).unwrap();
        assert_eq!((offset, &back), (i64::MAX, &t));
        let (_, partial) = ProducerTable::decode_snapshot(&t.encode_snapshot(105)).unwrap();
        assert_eq!(partial.producers.len(), 2);
        assert_eq!(
            partial.producers[&1].ranges.back().unwrap().last_offset,
            104
        );
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(ProducerTable::decode_snapshot(&c).is_none(), "flip at {i}");
        }
        assert!(ProducerTable::decode_snapshot(&b[..b.len() - 1]).is_none());
    }

    /// Guards expiry by idleness and by retention.
    #[test]
    fn expiry() {
        let mut t = ProducerTable::default();
        t.record(&header(1, 0, 0, 1), 0, 1_000);
        t.record(&header(2, 0, 0, 1), 50, 9_000);
        t.expire(10_000, 5_000, 0);
        assert_eq!(t.len(), 1);
        t.expire(10_000, 5_000, 51);
        assert!(t.is_empty());
    }
}
