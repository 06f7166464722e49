//! The replica fetch wire format: what a follower shard and its leader's node exchange on a
//! replica stream (a bidirectional QUIC stream, see [`crate::transport`]). Layouts are in
//! `replication/PROTOCOL.md` ("Replica streams"); all integers big-endian.
//!
//! A follower sends a [`FetchRequest`] and reads one [`FetchResponse`], then sends the next
//! request: one outstanding fetch per stream. Records travel as the leader stored them
//! (RecordBatch v2, offsets and leader epochs assigned); the response's metadata comes
//! first, the records of all partitions after it, so the leader can write them straight from
//! its log's slices.
//!
//! Every decoder takes untrusted bytes: lengths are checked before use and bounded, and a
//! bad frame is a [`FetchDecodeError`], never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::epoch::{Epoch, Offset};
use crate::image::BrokerId;

/// Largest frame on a replica stream (a response carries at most `max_bytes` of records).
pub const FRAME_BYTES_MAX: usize = 64 << 20;
/// Most partitions one fetch may name.
pub const PARTITIONS_MAX: usize = 100_000;
const KIND_REQUEST: u8 = 1;
const KIND_RESPONSE: u8 = 2;

/// One partition of a follower's fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFetch {
    pub topic: String,
    pub partition: i32,
    /// The leader epoch the follower knows (fencing).
    pub current_leader_epoch: Epoch,
    /// The follower's durable log end: where it wants records from, and its acknowledgement.
    pub fetch_offset: Offset,
    /// The epoch of the last batch in its log; -1 for an empty log.
    pub last_fetched_epoch: Epoch,
    /// Most record bytes wanted for this partition.
    pub max_bytes: u32,
}

/// A follower's fetch of every partition it follows from one leader node, on one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub replica_id: BrokerId,
    /// The follower's broker epoch (a fenced or restarted broker's old fetches are refused).
    pub broker_epoch: i64,
    /// How long the leader may hold the fetch when no partition has new records.
    pub max_wait_ms: u32,
    /// Most record bytes in the whole response.
    pub max_bytes: u32,
    pub partitions: Vec<PartitionFetch>,
}

/// Why the leader refused one partition of a fetch (Kafka's names; code in the frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FetchRefusal {
    #[error("the broker does not lead this partition")]
    NotLeader,
    #[error("the follower's leader epoch is older than the leader's")]
    FencedLeaderEpoch,
    #[error("the follower's leader epoch is newer than the leader's")]
    UnknownLeaderEpoch,
    #[error("the follower is not a replica of the partition")]
    NotReplica,
    #[error("the fetch offset is outside the leader's log")]
    OffsetOutOfRange,
    #[error("the leader could not read its log")]
    Storage,
}

impl FetchRefusal {
    fn code(self) -> u16 {
        match self {
            FetchRefusal::NotLeader => 1,
            FetchRefusal::FencedLeaderEpoch => 2,
            FetchRefusal::UnknownLeaderEpoch => 3,
            FetchRefusal::NotReplica => 4,
            FetchRefusal::OffsetOutOfRange => 5,
            FetchRefusal::Storage => 6,
        }
    }

    fn from_code(code: u16) -> Option<Result<(), FetchRefusal>> {
        Some(match code {
            0 => Ok(()),
            1 => Err(FetchRefusal::NotLeader),
            2 => Err(FetchRefusal::FencedLeaderEpoch),
            3 => Err(FetchRefusal::UnknownLeaderEpoch),
            4 => Err(FetchRefusal::NotReplica),
            5 => Err(FetchRefusal::OffsetOutOfRange),
            6 => Err(FetchRefusal::Storage),
            _ => return None,
        })
    }
}

/// The leader's answer for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionData {
    pub topic: String,
    pub partition: i32,
    pub result: Result<(), FetchRefusal>,
    pub high_watermark: Offset,
    pub log_start: Offset,
    /// The follower's log diverged: truncate to at most this end of that epoch, no records.
    pub diverging: Option<(Epoch, Offset)>,
    /// Record batches from the fetch offset, whole.
    pub records: Bytes,
}

/// The leader's answer to a [`FetchRequest`]: one entry per partition asked, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchResponse {
    pub partitions: Vec<PartitionData>,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchDecodeError {
    #[error("frame ends early (needed {need} more bytes)")]
    Truncated { need: usize },
    #[error("frame kind {0} is not the one expected")]
    Kind(u8),
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("{0}")]
    Bad(&'static str),
}

fn need(b: &Bytes, n: usize) -> Result<(), FetchDecodeError> {
    if b.remaining() < n {
        return Err(FetchDecodeError::Truncated {
            need: n - b.remaining(),
        });
    }
    Ok(())
}

fn get_string(b: &mut Bytes) -> Result<String, FetchDecodeError> {
    need(b, 2)?;
    let len = b.get_u16() as usize;
    need(b, len)?;
    let s = b.split_to(len);
    String::from_utf8(s.to_vec()).map_err(|_| FetchDecodeError::Bad("a topic name is not UTF-8"))
}

fn put_string(out: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}

fn get_count(b: &mut Bytes) -> Result<usize, FetchDecodeError> {
    need(b, 4)?;
    let n = b.get_u32() as usize;
    if n > PARTITIONS_MAX {
        return Err(FetchDecodeError::Bad("too many partitions"));
    }
    Ok(n)
}

impl FetchRequest {
    /// The frame body (without the stream's length prefix).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(32 + self.partitions.len() * 48);
        out.put_u8(KIND_REQUEST);
        out.put_i32(self.replica_id);
        out.put_i64(self.broker_epoch);
        out.put_u32(self.max_wait_ms);
        out.put_u32(self.max_bytes);
        out.put_u32(self.partitions.len() as u32);
        for p in &self.partitions {
            put_string(&mut out, &p.topic);
            out.put_i32(p.partition);
            out.put_i32(p.current_leader_epoch);
            out.put_i64(p.fetch_offset);
            out.put_i32(p.last_fetched_epoch);
            out.put_u32(p.max_bytes);
        }
        out.freeze()
    }

    pub fn decode(mut b: Bytes) -> Result<Self, FetchDecodeError> {
        need(&b, 25)?;
        let kind = b.get_u8();
        if kind != KIND_REQUEST {
            return Err(FetchDecodeError::Kind(kind));
        }
        let replica_id = b.get_i32();
        let broker_epoch = b.get_i64();
        let max_wait_ms = b.get_u32();
        let max_bytes = b.get_u32();
        let n = get_count(&mut b)?;
        let mut partitions = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let topic = get_string(&mut b)?;
            need(&b, 24)?;
            partitions.push(PartitionFetch {
                topic,
                partition: b.get_i32(),
                current_leader_epoch: b.get_i32(),
                fetch_offset: b.get_i64(),
                last_fetched_epoch: b.get_i32(),
                max_bytes: b.get_u32(),
            });
        }
        if b.has_remaining() {
            return Err(FetchDecodeError::Bad("bytes after the last partition"));
        }
        Ok(FetchRequest {
            replica_id,
            broker_epoch,
            max_wait_ms,
            max_bytes,
            partitions,
        })
    }
}

impl FetchResponse {
    /// The frame body's head: everything but the records, which follow it in partition
    /// order (their lengths are in the head). Write the head, then each partition's records.
    pub fn encode_head(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(8 + self.partitions.len() * 56);
        out.put_u8(KIND_RESPONSE);
        out.put_u32(self.partitions.len() as u32);
        for p in &self.partitions {
            put_string(&mut out, &p.topic);
            out.put_i32(p.partition);
            out.put_u16(p.result.err().map_or(0, FetchRefusal::code));
            out.put_i64(p.high_watermark);
            out.put_i64(p.log_start);
            let (epoch, end) = p.diverging.unwrap_or((-1, -1));
            out.put_i32(epoch);
            out.put_i64(end);
            out.put_u32(p.records.len() as u32);
        }
        out.freeze()
    }

    /// Head and records in one buffer (tests, small responses).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::from(&self.encode_head()[..]);
        for p in &self.partitions {
            out.put_slice(&p.records);
        }
        out.freeze()
    }

    pub fn decode(mut b: Bytes) -> Result<Self, FetchDecodeError> {
        need(&b, 5)?;
        let kind = b.get_u8();
        if kind != KIND_RESPONSE {
            return Err(FetchDecodeError::Kind(kind));
        }
        let n = get_count(&mut b)?;
        let mut heads = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let topic = get_string(&mut b)?;
            need(&b, 38)?;
            let partition = b.get_i32();
            let result = FetchRefusal::from_code(b.get_u16())
                .ok_or(FetchDecodeError::Bad("unknown error code"))?;
            let high_watermark = b.get_i64();
            let log_start = b.get_i64();
            let (epoch, end) = (b.get_i32(), b.get_i64());
            let records_len = b.get_u32() as usize;
            heads.push((
                topic,
                partition,
                result,
                high_watermark,
                log_start,
                (epoch >= 0).then_some((epoch, end)),
                records_len,
            ));
        }
        let mut partitions = Vec::with_capacity(heads.len());
        for (topic, partition, result, high_watermark, log_start, diverging, len) in heads {
            need(&b, len)?;
            partitions.push(PartitionData {
                topic,
                partition,
                result,
                high_watermark,
                log_start,
                diverging,
                records: b.split_to(len),
            });
        }
        if b.has_remaining() {
            return Err(FetchDecodeError::Bad("bytes after the last records"));
        }
        Ok(FetchResponse { partitions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> FetchRequest {
        FetchRequest {
            replica_id: 2,
            broker_epoch: 17,
            max_wait_ms: 500,
            max_bytes: 1 << 20,
            partitions: vec![
                PartitionFetch {
                    topic: "orders".into(),
                    partition: 3,
                    current_leader_epoch: 4,
                    fetch_offset: 1234,
                    last_fetched_epoch: 3,
                    max_bytes: 65536,
                },
                PartitionFetch {
                    topic: "t".into(),
                    partition: 0,
                    current_leader_epoch: 0,
                    fetch_offset: 0,
                    last_fetched_epoch: -1,
                    max_bytes: 1,
                },
            ],
        }
    }

    fn response() -> FetchResponse {
        FetchResponse {
            partitions: vec![
                PartitionData {
                    topic: "orders".into(),
                    partition: 3,
                    result: Ok(()),
                    high_watermark: 1200,
                    log_start: 0,
                    diverging: None,
                    records: Bytes::from_static(b"batch bytes"),
                },
                PartitionData {
                    topic: "t".into(),
                    partition: 0,
                    result: Err(FetchRefusal::FencedLeaderEpoch),
                    high_watermark: -1,
                    log_start: -1,
                    diverging: None,
                    records: Bytes::new(),
                },
                PartitionData {
                    topic: "u".into(),
                    partition: 1,
                    result: Ok(()),
                    high_watermark: 10,
                    log_start: 0,
                    diverging: Some((2, 7)),
                    records: Bytes::new(),
                },
            ],
        }
    }

    #[test]
    fn frames_round_trip() {
        let r = request();
        assert_eq!(FetchRequest::decode(r.encode()), Ok(r));
        let s = response();
        assert_eq!(FetchResponse::decode(s.encode()), Ok(s));
        assert_eq!(
            FetchResponse::decode(FetchResponse::default().encode()),
            Ok(FetchResponse::default())
        );
    }

    #[test]
    fn bad_frames_are_refused() {
        let r = request().encode();
        for cut in 0..r.len() {
            assert!(
                FetchRequest::decode(r.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let s = response().encode();
        for cut in 0..s.len() {
            assert!(
                FetchResponse::decode(s.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        assert_eq!(
            FetchRequest::decode(s.clone()),
            Err(FetchDecodeError::Kind(KIND_RESPONSE))
        );
        let mut long = BytesMut::from(&r[..]);
        long.put_u8(0);
        assert!(FetchRequest::decode(long.freeze()).is_err());
        let mut huge = BytesMut::new();
        huge.put_u8(KIND_REQUEST);
        huge.put_slice(&[0; 20]);
        huge.put_u32(u32::MAX);
        assert_eq!(
            FetchRequest::decode(huge.freeze()),
            Err(FetchDecodeError::Bad("too many partitions"))
        );
    }

    proptest! {
        /// Guards the decoders against untrusted bytes: never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = FetchRequest::decode(Bytes::from(b.clone()));
            let _ = FetchResponse::decode(Bytes::from(b));
        }
    }
}
