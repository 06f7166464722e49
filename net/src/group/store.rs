//! Committed offsets as records of `__consumer_offsets`.
//!
//! Each commit is one record in an ordinary RecordBatch v2, appended through the engine
//! like any produce. Key and value use the layout of Kafka's own offset commit records
//! (big-endian, strings as i16 length + UTF-8), so Kafka's tools could read them:
//!
//! ```text
//! key (version 1)                    value (version 3)            value (version 1)
//!   i16    version = 1                 i16    version = 3           i16    version = 1
//!   string group id                    i64    offset                i64    offset
//!   string topic                       i32    leader epoch          string metadata
//!   i32    partition                   string metadata              i64    commit timestamp ms
//!                                      i64    commit timestamp ms   i64    expire timestamp ms
//! ```
//!
//! Value version 1 is written only for commits with an explicit retention (OffsetCommit
//! v2-v4's `retention_time_ms`). A record without a value (a *tombstone*) deletes the
//! commit of its key. Records of other key versions (Kafka's group metadata, version 2) are
//! skipped on load.
//!
//! ## Replay and cleaning: "snapshot plus log"
//!
//! On start, every `__consumer_offsets` partition a shard owns is read from its log start
//! to its end and replayed in order; the last record per key wins. To keep that log short,
//! the shard's driver rewrites a partition's live commits (the snapshot) as new records at
//! its end once the records since the log start exceed four times the live ones, and then
//! moves the log start offset to the first rewritten record (DeleteRecords); whole segments
//! below it are deleted. The rewrite is durable before the log start moves, so a crash at
//! any point leaves a log whose replay gives the same state.
//!
//! A group lives on the partition `abs(java_hash(group id)) % partitions`, Kafka's rule.

use bytes::{Buf, Bytes};
use kafka_protocol::records::RecordBatchDecoder;

use super::coordinator::{CommittedOffset, TopicPartition};

/// The internal topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

const KEY_VERSION_COMMIT: i16 = 1;
const VALUE_VERSION_EXPIRE: i16 = 1;
const VALUE_VERSION_EPOCH: i16 = 3;

/// Java's `String.hashCode` and the group's `__consumer_offsets` partition: one
/// implementation, shared with the controller (which places coordinators in a cluster).
pub use tern_replication::image::{
    group_partition as partition_for, java_string_hash as java_hash,
};

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetRecord {
    Commit {
        group_id: String,
        tp: TopicPartition,
        value: CommittedOffset,
    },
    Tombstone {
        group_id: String,
        tp: TopicPartition,
    },
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    b.extend_from_slice(&(len as i16).to_be_bytes());
    b.extend_from_slice(&s.as_bytes()[..len]);
}

/// The key of a commit record.
pub fn encode_key(group_id: &str, tp: &TopicPartition) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + group_id.len() + tp.topic.len());
    b.extend_from_slice(&KEY_VERSION_COMMIT.to_be_bytes());
    put_str(&mut b, group_id);
    put_str(&mut b, &tp.topic);
    b.extend_from_slice(&tp.partition.to_be_bytes());
    b
}

/// The value of a commit record.
pub fn encode_value(v: &CommittedOffset) -> Vec<u8> {
    let mut b = Vec::with_capacity(32 + v.metadata.len());
    match v.expire_timestamp_ms {
        Some(expire) => {
            b.extend_from_slice(&VALUE_VERSION_EXPIRE.to_be_bytes());
            b.extend_from_slice(&v.offset.to_be_bytes());
            put_str(&mut b, &v.metadata);
            b.extend_from_slice(&v.commit_timestamp_ms.to_be_bytes());
            b.extend_from_slice(&expire.to_be_bytes());
        }
        None => {
            b.extend_from_slice(&VALUE_VERSION_EPOCH.to_be_bytes());
            b.extend_from_slice(&v.offset.to_be_bytes());
            b.extend_from_slice(&v.leader_epoch.to_be_bytes());
            put_str(&mut b, &v.metadata);
            b.extend_from_slice(&v.commit_timestamp_ms.to_be_bytes());
        }
    }
    b
}

struct Reader(Bytes);

impl Reader {
    fn i16(&mut self) -> Option<i16> {
        (self.0.remaining() >= 2).then(|| self.0.get_i16())
    }
    fn i32(&mut self) -> Option<i32> {
        (self.0.remaining() >= 4).then(|| self.0.get_i32())
    }
    fn i64(&mut self) -> Option<i64> {
        (self.0.remaining() >= 8).then(|| self.0.get_i64())
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        if self.0.remaining() < len {
            return None;
        }
        String::from_utf8(self.0.split_to(len).to_vec()).ok()
    }
}

/// Decodes one record; `None` for records that are not offset commits or are malformed.
pub fn decode(key: Option<Bytes>, value: Option<Bytes>) -> Option<OffsetRecord> {
    let mut k = Reader(key?);
    if k.i16()? != KEY_VERSION_COMMIT {
        return None;
    }
    let group_id = k.string()?;
    let tp = TopicPartition {
        topic: k.string()?,
        partition: k.i32()?,
    };
    let Some(value) = value else {
        return Some(OffsetRecord::Tombstone { group_id, tp });
    };
    let mut v = Reader(value);
    let value = match v.i16()? {
        VALUE_VERSION_EXPIRE => CommittedOffset {
            offset: v.i64()?,
            leader_epoch: -1,
            metadata: v.string()?,
            commit_timestamp_ms: v.i64()?,
            expire_timestamp_ms: Some(v.i64()?),
        },
        VALUE_VERSION_EPOCH => CommittedOffset {
            offset: v.i64()?,
            leader_epoch: v.i32()?,
            metadata: v.string()?,
            commit_timestamp_ms: v.i64()?,
            expire_timestamp_ms: None,
        },
        _ => return None,
    };
    Some(OffsetRecord::Commit {
        group_id,
        tp,
        value,
    })
}

/// The offset records of stored batches (the bytes a read of the log returns). Batches
/// that do not decode are skipped with a warning: the engine checked their CRC, so only a
/// foreign writer could have put them there.
pub fn decode_batches(mut bytes: Bytes) -> Vec<OffsetRecord> {
    let mut out = Vec::new();
    while bytes.has_remaining() {
        match RecordBatchDecoder::decode(&mut bytes) {
            Ok(set) => out.extend(
                set.records
                    .into_iter()
                    .filter_map(|r| decode(r.key, r.value)),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "undecodable batch in {OFFSETS_TOPIC}: skipped");
                break;
            }
        }
    }
    out
}

/// An encoded record: key, and value (`None`: a tombstone).
pub type RawRecord = (Vec<u8>, Option<Vec<u8>>);

/// A RecordBatch of commit records, timestamped `now_ms`.
pub fn encode_batch(records: &[RawRecord], now_ms: i64) -> Vec<u8> {
    let recs: Vec<tern_engine::batch::build::Record<'_>> = records
        .iter()
        .map(|(k, v)| tern_engine::batch::build::Record {
            key: Some(k),
            value: v.as_deref(),
            timestamp_delta_ms: 0,
        })
        .collect();
    tern_engine::batch::build::batch(now_ms, &recs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// Guards Kafka's placement of groups (values computed with Java's String.hashCode).
    #[test]
    fn partition_like_kafka() {
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        // The famous string whose hash is i32::MIN: Kafka's abs() maps it to 0.
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert!(partition_for("\u{1F600}-group", 7) >= 0);
    }

    /// Guards the record codec through a real batch: commits of both value versions and a
    /// tombstone come back in order.
    #[test]
    fn records_round_trip_through_a_batch() {
        let tp = TopicPartition {
            topic: "orders".into(),
            partition: 3,
        };
        let a = CommittedOffset {
            offset: 42,
            leader_epoch: 7,
            metadata: "m".into(),
            commit_timestamp_ms: 1_000,
            expire_timestamp_ms: None,
        };
        let b = CommittedOffset {
            expire_timestamp_ms: Some(9_000),
            leader_epoch: -1,
            ..a.clone()
        };
        let key = encode_key("g", &tp);
        let batch = encode_batch(
            &[
                (key.clone(), Some(encode_value(&a))),
                (key.clone(), Some(encode_value(&b))),
                (key, None),
            ],
            5,
        );
        let got = decode_batches(Bytes::from(batch));
        let commit = |value| OffsetRecord::Commit {
            group_id: "g".into(),
            tp: tp.clone(),
            value,
        };
        assert_eq!(
            got,
            vec![
                commit(a),
                commit(b),
                OffsetRecord::Tombstone {
                    group_id: "g".into(),
                    tp: tp.clone()
                }
            ]
        );
    }

    proptest! {
        /// Guards the decoder against arbitrary bytes.
        #[test]
        fn decode_never_panics(k in proptest::collection::vec(any::<u8>(), 0..64),
                               v in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
            let _ = decode(Some(Bytes::from(k)), v.map(Bytes::from));
        }
    }
}
