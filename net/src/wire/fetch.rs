//! Fetch responses as pieces, with the records left where they are.
//!
//! A Fetch response is mostly records: whole RecordBatches that the engine returns as
//! [`Slice`]s, either bytes still in the write buffers ([`Slice::Memory`]) or byte ranges of
//! segment files ([`Slice::File`]). Copying them into one response buffer would cost a memory
//! copy (and, for cold data, a read into user space) per byte served. Instead
//! [`encode_fetch_response`] returns the frame as a list of [`Piece`]s that concatenate to the
//! exact bytes of the frame:
//!
//! ```text
//! [envelope: frame length | response header | body up to partition 0's records length]
//! [partition 0's slices, as given: memory pieces and file ranges]
//! [envelope: partition 0's tagged fields | partition 1's fields .. records length]
//! [partition 1's slices]
//! ...
//! [envelope: the last partition's tagged fields, topic and response tagged fields]
//! ```
//!
//! This works because in every Fetch version the records field is the last regular field of a
//! partition's entry (only tagged fields follow it in flexible versions), and the length of
//! every slice is known before anything is sent, so the frame length and every records length
//! prefix can be written up front.
//!
//! * The frame length (4 bytes, big-endian) is the sum of the lengths of all pieces after it.
//! * The response header is the correlation id; flexible versions (Fetch v12+) use response
//!   header v1, which adds an empty tagged-field section (one 0 byte).
//! * Records are nullable BYTES (i32 length) in v4–v11 and COMPACT_RECORDS (unsigned varint
//!   of length + 1) from v12. A partition without records gets an empty records field (length
//!   0), as Kafka sends, never null.
//! * Topics are named by name up to v12 and by their 16-byte id from v13.
//! * Aborted transactions are always null (no transactional reads yet); fields a version does
//!   not have (error code and session id before v7, log start offset before v5, preferred read
//!   replica before v11) are left out.
//! * Tagged fields (v12+): a partition's current leader (tag 1, KIP-951) when the parts carry
//!   one, and from v16 the leaders' endpoints (tag 0 of the response); the diverging epoch and
//!   snapshot id (follower fetches) are never written.
//!
//! All envelope fragments are written into one buffer and handed out as [`bytes::Bytes`] views of
//! it, so a response costs one allocation for its envelope plus the vector of pieces. Empty
//! slices are dropped. Versions 4 to 18 ([`FETCH_VERSIONS`]) are written; v13–v18 differ from
//! v12 in the response only by the topic id (v13) and tagged fields.

use std::ops::RangeInclusive;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::TopicName;
use tern_engine::Slice;
use uuid::Uuid;

/// One piece of an encoded response: bytes in memory, or a range of a segment file to splice.
pub type Piece = Slice;

/// The Fetch versions [`encode_fetch_response`] can write.
pub const FETCH_VERSIONS: RangeInclusive<i16> = 4..=18;

/// The first Fetch version that names topics by id.
const FIRST_TOPIC_ID: i16 = 13;

/// The first Fetch version with the leaders' endpoints (KIP-951).
const FIRST_NODE_ENDPOINTS: i16 = 16;

/// The first flexible Fetch version (compact types, tagged fields, response header v1).
const FIRST_FLEXIBLE: i16 = 12;

/// Envelope bytes per partition entry at most (fields, records length, tagged fields).
const PARTITION_ENVELOPE: usize = 4 + 2 + 8 + 8 + 8 + 5 + 4 + 5 + 1;

/// A Fetch response to encode: the response's fields, with records as engine slices.
#[derive(Debug, Clone)]
pub struct FetchResponseParts {
    pub correlation_id: i32,
    /// The request's API version; one of [`FETCH_VERSIONS`].
    pub version: i16,
    pub throttle_time_ms: i32,
    /// Top-level error (v7+).
    pub error_code: i16,
    /// Fetch session id (v7+); 0 for sessionless fetches.
    pub session_id: i32,
    pub topics: Vec<FetchTopicParts>,
    /// The endpoints of the leaders named in partitions' `current_leader` (v16+, KIP-951).
    pub node_endpoints: Vec<NodeEndpointParts>,
}

/// A broker's client endpoint in a Fetch response (KIP-951).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEndpointParts {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// One topic of a Fetch response.
#[derive(Debug, Clone)]
pub struct FetchTopicParts {
    /// Written up to v12.
    pub name: TopicName,
    /// Written from v13 on.
    pub topic_id: Uuid,
    pub partitions: Vec<FetchPartitionParts>,
}

/// One partition of a Fetch response.
#[derive(Debug, Clone)]
pub struct FetchPartitionParts {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// Written from v5 on.
    pub log_start_offset: i64,
    /// Written from v11 on; -1 for none.
    pub preferred_read_replica: i32,
    /// The partition's leader and leader epoch as this broker knows them, for a client that
    /// asked the wrong broker (tagged, v12+; KIP-951).
    pub current_leader: Option<(i32, i32)>,
    /// Whole record batches, in order; sent as they are.
    pub records: Vec<Slice>,
}

/// Why a Fetch response could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum FetchEncodeError {
    #[error("Fetch v{0} is not supported (supported: v4 to v18)")]
    UnsupportedVersion(i16),
    #[error("topic name of {0} bytes is longer than the protocol allows")]
    TopicNameTooLong(usize),
    #[error("{0} entries are more than a protocol array can hold")]
    TooManyEntries(usize),
    #[error("records of {topic}/{partition} total {len} bytes, more than a BYTES field holds")]
    RecordsTooLarge {
        topic: String,
        partition: i32,
        len: u64,
    },
    #[error("a response of {0} bytes is larger than a frame can be")]
    FrameTooLarge(u64),
}

/// Total bytes of `pieces`.
pub fn pieces_len(pieces: &[Piece]) -> u64 {
    pieces.iter().map(|p| p.len() as u64).sum()
}

/// Encodes `parts` as the pieces of one response frame, beginning with the frame length.
/// Record slices are moved into the result, never copied; see the module documentation for
/// the layout.
pub fn encode_fetch_response(parts: FetchResponseParts) -> Result<Vec<Piece>, FetchEncodeError> {
    let FetchResponseParts {
        correlation_id,
        version,
        throttle_time_ms,
        error_code,
        session_id,
        topics,
        node_endpoints,
    } = parts;
    if !FETCH_VERSIONS.contains(&version) {
        return Err(FetchEncodeError::UnsupportedVersion(version));
    }
    let flexible = version >= FIRST_FLEXIBLE;

    let envelope_estimate = 32
        + topics
            .iter()
            .map(|t| 16 + t.name.len() + t.partitions.len() * PARTITION_ENVELOPE)
            .sum::<usize>();
    let mut env = BytesMut::with_capacity(envelope_estimate);
    // Where each partition's records go in the envelope, and the records themselves.
    let mut inserts: Vec<(usize, Vec<Slice>)> = Vec::new();
    let mut records_total = 0u64;

    env.put_i32(0); // the frame length, patched below
    env.put_i32(correlation_id);
    if flexible {
        put_empty_tags(&mut env);
    }
    env.put_i32(throttle_time_ms);
    if version >= 7 {
        env.put_i16(error_code);
        env.put_i32(session_id);
    }
    put_array_len(&mut env, topics.len(), flexible)?;
    for topic in topics {
        if version >= FIRST_TOPIC_ID {
            env.put_slice(topic.topic_id.as_bytes());
        } else {
            put_string(&mut env, topic.name.as_bytes(), flexible)?;
        }
        put_array_len(&mut env, topic.partitions.len(), flexible)?;
        for p in topic.partitions {
            env.put_i32(p.partition_index);
            env.put_i16(p.error_code);
            env.put_i64(p.high_watermark);
            env.put_i64(p.last_stable_offset);
            if version >= 5 {
                env.put_i64(p.log_start_offset);
            }
            // Aborted transactions: null.
            if flexible {
                put_uvarint(&mut env, 0);
            } else {
                env.put_i32(-1);
            }
            if version >= 11 {
                env.put_i32(p.preferred_read_replica);
            }
            let len: u64 = p.records.iter().map(|s| s.len() as u64).sum();
            let Ok(len32) = i32::try_from(len) else {
                return Err(FetchEncodeError::RecordsTooLarge {
                    topic: topic.name.to_string(),
                    partition: p.partition_index,
                    len,
                });
            };
            if flexible {
                // COMPACT_RECORDS: length + 1 (0 would be null); len32 < 2^31, so no overflow.
                put_uvarint(&mut env, len32.unsigned_abs() + 1);
            } else {
                env.put_i32(len32);
            }
            if len > 0 {
                records_total += len;
                inserts.push((env.len(), p.records));
            }
            if flexible {
                // The partition's tagged fields: CurrentLeader (tag 1) = leader id, leader
                // epoch and its own empty tags: 9 bytes.
                match p.current_leader {
                    Some((leader, epoch)) => {
                        put_uvarint(&mut env, 1);
                        put_uvarint(&mut env, 1);
                        put_uvarint(&mut env, 9);
                        env.put_i32(leader);
                        env.put_i32(epoch);
                        put_empty_tags(&mut env);
                    }
                    None => put_empty_tags(&mut env),
                }
            }
        }
        if flexible {
            put_empty_tags(&mut env); // the topic's tagged fields
        }
    }
    if flexible {
        // The response's tagged fields: NodeEndpoints (tag 0, v16+).
        if version >= FIRST_NODE_ENDPOINTS && !node_endpoints.is_empty() {
            let mut field = BytesMut::new();
            put_array_len(&mut field, node_endpoints.len(), true)?;
            for e in &node_endpoints {
                field.put_i32(e.node_id);
                put_string(&mut field, e.host.as_bytes(), true)?;
                field.put_i32(e.port);
                match &e.rack {
                    Some(r) => put_string(&mut field, r.as_bytes(), true)?,
                    None => put_uvarint(&mut field, 0),
                }
                put_empty_tags(&mut field);
            }
            put_uvarint(&mut env, 1);
            put_uvarint(&mut env, 0);
            let len = u32::try_from(field.len())
                .map_err(|_| FetchEncodeError::TooManyEntries(field.len()))?;
            put_uvarint(&mut env, len);
            env.put_slice(&field);
        } else {
            put_empty_tags(&mut env);
        }
    }

    let frame = (env.len() as u64 - 4) + records_total;
    let frame32 = i32::try_from(frame).map_err(|_| FetchEncodeError::FrameTooLarge(frame))?;
    env[..4].copy_from_slice(&frame32.to_be_bytes());

    let env = env.freeze();
    let slice_count: usize = inserts.iter().map(|(_, s)| s.len()).sum();
    let mut pieces = Vec::with_capacity(1 + inserts.len() + slice_count);
    let mut from = 0;
    for (at, slices) in inserts {
        if at > from {
            pieces.push(Slice::Memory(env.slice(from..at)));
        }
        pieces.extend(slices.into_iter().filter(|s| !s.is_empty()));
        from = at;
    }
    if env.len() > from {
        pieces.push(Slice::Memory(env.slice(from..)));
    }
    Ok(pieces)
}

/// An unsigned varint (LEB128, 7 bits a byte, low bits first).
fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// An empty tagged-field section.
fn put_empty_tags(buf: &mut BytesMut) {
    buf.put_u8(0);
}

/// An array's length: COMPACT_ARRAY (varint of n + 1) or ARRAY (i32).
fn put_array_len(buf: &mut BytesMut, n: usize, flexible: bool) -> Result<(), FetchEncodeError> {
    let n32 = i32::try_from(n).map_err(|_| FetchEncodeError::TooManyEntries(n))?;
    if flexible {
        put_uvarint(buf, n32.unsigned_abs() + 1);
    } else {
        buf.put_i32(n32);
    }
    Ok(())
}

/// A non-null string: COMPACT_STRING (varint of length + 1) or STRING (i16 length).
fn put_string(buf: &mut BytesMut, s: &[u8], flexible: bool) -> Result<(), FetchEncodeError> {
    let len = i16::try_from(s.len()).map_err(|_| FetchEncodeError::TopicNameTooLong(s.len()))?;
    if flexible {
        put_uvarint(buf, u32::from(len.unsigned_abs()) + 1);
    } else {
        buf.put_i16(len);
    }
    buf.put_slice(s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, HeaderVersion, StrBytes};
    use proptest::prelude::*;
    use tern_engine::storage::SegmentHandle;

    use super::*;

    use tern_engine::storage::memory::VecHandle;

    fn materialize(pieces: &[Piece]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            out.extend_from_slice(&p.to_bytes().unwrap());
        }
        out
    }

    /// The shape of one partition: record slices as (memory?, position, len).
    type PartitionShape = Vec<(bool, u64, u32)>;

    fn build(
        version: i16,
        shape: &[(String, Vec<PartitionShape>)],
        file: &Arc<VecHandle>,
    ) -> FetchResponseParts {
        let dyn_file: Arc<dyn SegmentHandle> = file.clone();
        let mut seed = 0u8;
        let topics = shape
            .iter()
            .enumerate()
            .map(|(t, (name, parts))| FetchTopicParts {
                name: TopicName(StrBytes::from_string(name.clone())),
                topic_id: Uuid::from_u128(0x0123_4567_89ab_cdef ^ (t as u128) << 64 | t as u128),
                partitions: parts
                    .iter()
                    .enumerate()
                    .map(|(i, slices)| FetchPartitionParts {
                        partition_index: i as i32 * 3 + t as i32,
                        error_code: (i % 3) as i16,
                        high_watermark: 1000 + i as i64,
                        last_stable_offset: 900 + i as i64,
                        log_start_offset: 10 + i as i64,
                        preferred_read_replica: if version >= 11 { i as i32 - 1 } else { -1 },
                        current_leader: (i % 2 == 1).then_some((i as i32 + 5, 7)),
                        records: slices
                            .iter()
                            .map(|&(memory, position, len)| {
                                if memory {
                                    seed = seed.wrapping_add(1);
                                    let s = seed;
                                    Slice::Memory(Bytes::from(
                                        (0..len).map(|j| s ^ j as u8).collect::<Vec<u8>>(),
                                    ))
                                } else {
                                    Slice::File {
                                        handle: dyn_file.clone(),
                                        position,
                                        len,
                                    }
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        FetchResponseParts {
            correlation_id: 0x1234_5678 ^ version as i32,
            version,
            throttle_time_ms: 17,
            error_code: if version >= 7 { 3 } else { 0 },
            session_id: if version >= 7 { 99 } else { 0 },
            topics,
            node_endpoints: vec![
                NodeEndpointParts {
                    node_id: 6,
                    host: "h1.example".into(),
                    port: 9092,
                    rack: Some("rack-a".into()),
                },
                NodeEndpointParts {
                    node_id: 8,
                    host: "h2".into(),
                    port: 1,
                    rack: None,
                },
            ],
        }
    }

    /// Encodes `parts`, decodes the result with kafka-protocol and compares every field.
    fn check(parts: FetchResponseParts) {
        let version = parts.version;
        let expected = parts.clone();
        let pieces = encode_fetch_response(parts).unwrap();
        assert!(pieces.iter().all(|p| !p.is_empty()), "no empty pieces");
        let nonempty_slices = expected
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .flat_map(|p| &p.records)
            .filter(|s| !s.is_empty())
            .count();
        assert!(
            pieces.len() <= 1 + 2 * nonempty_slices,
            "envelope fragments are merged"
        );

        let wire = materialize(&pieces);
        assert_eq!(pieces_len(&pieces), wire.len() as u64);
        let frame = i32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]);
        assert_eq!(frame as usize, wire.len() - 4, "frame length");

        let mut buf = Bytes::from(wire).slice(4..);
        let header =
            ResponseHeader::decode(&mut buf, FetchResponse::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, expected.correlation_id);
        let resp = FetchResponse::decode(&mut buf, version).unwrap();
        assert!(buf.is_empty(), "v{version}: {} bytes left over", buf.len());

        assert_eq!(resp.throttle_time_ms, expected.throttle_time_ms);
        assert_eq!(resp.error_code, expected.error_code);
        assert_eq!(resp.session_id, expected.session_id);
        assert_eq!(resp.responses.len(), expected.topics.len());
        let endpoints: Vec<(i32, String, i32, Option<String>)> = resp
            .node_endpoints
            .iter()
            .map(|e| {
                let rack = e.rack.as_ref().map(|r| r.to_string());
                (e.node_id.0, e.host.to_string(), e.port, rack)
            })
            .collect();
        let want: Vec<(i32, String, i32, Option<String>)> = if version >= 16 {
            expected
                .node_endpoints
                .iter()
                .map(|e| (e.node_id, e.host.clone(), e.port, e.rack.clone()))
                .collect()
        } else {
            Vec::new()
        };
        assert_eq!(endpoints, want, "v{version} node endpoints");
        for (got, want) in resp.responses.iter().zip(&expected.topics) {
            if version >= FIRST_TOPIC_ID {
                assert_eq!(got.topic_id, want.topic_id);
                assert_eq!(got.topic.as_str(), "", "v{version} names topics by id only");
            } else {
                assert_eq!(got.topic, want.name);
                assert_eq!(got.topic_id, Uuid::nil());
            }
            assert_eq!(got.partitions.len(), want.partitions.len());
            for (gp, wp) in got.partitions.iter().zip(&want.partitions) {
                assert_eq!(gp.partition_index, wp.partition_index);
                assert_eq!(gp.error_code, wp.error_code);
                assert_eq!(gp.high_watermark, wp.high_watermark);
                assert_eq!(gp.last_stable_offset, wp.last_stable_offset);
                let log_start = if version >= 5 {
                    wp.log_start_offset
                } else {
                    -1
                };
                assert_eq!(gp.log_start_offset, log_start);
                let replica = if version >= 11 {
                    wp.preferred_read_replica
                } else {
                    -1
                };
                assert_eq!(gp.preferred_read_replica, replica);
                let leader = if version >= 12 {
                    wp.current_leader
                } else {
                    None
                };
                let got = (
                    gp.current_leader.leader_id.0,
                    gp.current_leader.leader_epoch,
                );
                assert_eq!(got, leader.unwrap_or((-1, -1)), "v{version} current leader");
                assert_eq!(gp.aborted_transactions, None);
                let records: Vec<u8> = wp
                    .records
                    .iter()
                    .flat_map(|s| s.to_bytes().unwrap().to_vec())
                    .collect();
                assert_eq!(gp.records.as_deref(), Some(&records[..]));
            }
        }
    }

    fn backing_file() -> Arc<VecHandle> {
        Arc::new(VecHandle((0..1 << 16).map(|i| (i * 7 + 3) as u8).collect()))
    }

    #[test]
    fn every_version_round_trips() {
        let file = backing_file();
        let shape = vec![
            (
                "orders".to_string(),
                vec![
                    vec![(true, 0, 100), (false, 5, 300), (true, 0, 7)],
                    vec![],
                    vec![(false, 4000, 1), (false, 0, 0), (false, 9000, 2048)],
                ],
            ),
            ("".to_string(), vec![]),
            (
                "t".repeat(249),
                vec![vec![(true, 0, 0)], vec![(true, 0, 5000)]],
            ),
        ];
        for version in FETCH_VERSIONS {
            check(build(version, &shape, &file));
        }
    }

    #[test]
    fn empty_response() {
        for version in FETCH_VERSIONS {
            check(build(version, &[], &backing_file()));
        }
    }

    #[test]
    fn records_are_not_copied() {
        let mem = Bytes::from(vec![1u8; 4096]);
        let parts = FetchResponseParts {
            correlation_id: 1,
            version: 12,
            throttle_time_ms: 0,
            error_code: 0,
            session_id: 0,
            topics: vec![FetchTopicParts {
                name: TopicName(StrBytes::from_static_str("a")),
                topic_id: Uuid::nil(),
                partitions: vec![FetchPartitionParts {
                    partition_index: 0,
                    error_code: 0,
                    high_watermark: 1,
                    last_stable_offset: 1,
                    log_start_offset: 0,
                    preferred_read_replica: -1,
                    current_leader: None,
                    records: vec![Slice::Memory(mem.clone())],
                }],
            }],
            node_endpoints: Vec::new(),
        };
        let pieces = encode_fetch_response(parts).unwrap();
        assert_eq!(pieces.len(), 3);
        match &pieces[1] {
            Slice::Memory(b) => assert_eq!(b.as_ptr(), mem.as_ptr()),
            other => panic!("unexpected piece {other:?}"),
        }
        // Tagged fields of the partition, the topic and the response.
        match &pieces[2] {
            Slice::Memory(b) => assert_eq!(&b[..], &[0, 0, 0]),
            other => panic!("unexpected piece {other:?}"),
        }
    }

    #[test]
    fn rejects_unsupported_versions_and_long_names() {
        for version in [-1, 0, 3, 19, 20] {
            let parts = build(version, &[], &backing_file());
            assert!(matches!(
                encode_fetch_response(parts),
                Err(FetchEncodeError::UnsupportedVersion(v)) if v == version
            ));
        }
        let shape = vec![("x".repeat(40_000), vec![])];
        assert!(matches!(
            encode_fetch_response(build(12, &shape, &backing_file())),
            Err(FetchEncodeError::TopicNameTooLong(40_000))
        ));
    }

    #[test]
    fn rejects_records_larger_than_a_frame() {
        let file = backing_file();
        let big = (false, 0, u32::MAX);
        let shape = vec![("big".to_string(), vec![vec![big]])];
        assert!(matches!(
            encode_fetch_response(build(12, &shape, &file)),
            Err(FetchEncodeError::RecordsTooLarge { partition: 0, .. })
        ));
        let half = (false, 0, 1 << 30);
        let shape = vec![("big".to_string(), vec![vec![half], vec![half]])];
        assert!(matches!(
            encode_fetch_response(build(12, &shape, &file)),
            Err(FetchEncodeError::FrameTooLarge(_))
        ));
    }

    fn slice_shape() -> impl Strategy<Value = (bool, u64, u32)> {
        (any::<bool>(), 0u64..60_000, 0u32..3_000).prop_map(|(memory, position, len)| {
            (memory, position, len.min(65_536 - position as u32))
        })
    }

    fn shape() -> impl Strategy<Value = Vec<(String, Vec<PartitionShape>)>> {
        prop::collection::vec(
            (
                "[a-zA-Z0-9._-]{0,40}",
                prop::collection::vec(prop::collection::vec(slice_shape(), 0..5), 0..5),
            ),
            0..5,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn random_shapes_round_trip(version in FETCH_VERSIONS, shape in shape()) {
            check(build(version, &shape, &backing_file()));
        }
    }
}
