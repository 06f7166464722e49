//! The controller's codecs: round trips, and garbage never panics.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default
)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use raft::eraftpb::{Entry, Message, MessageType};
use tern_replication::codec::*;
use tern_replication::controller::{BrokerRequest, BrokerResponse};
use tern_replication::decide::{ControllerError, CreateTopicRequest, HeartbeatReply};
use tern_replication::image::{MetadataImage, MetadataRecord};

fn raft_message(from: u64, to: u64, term: u64, data: Vec<u8>) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.from = from;
    m.to = to;
    m.term = term;
    let mut e = Entry::default();
    e.index = 7;
    e.term = term;
    e.data = data.into();
    m.entries = vec![e].into();
    m
}

proptest! {
    /// Guards the frame layout: every frame decodes to itself.
    #[test]
    fn frames_round_trip(from in 1u64..10, to in 1u64..10, term: u64, data in proptest::collection::vec(any::<u8>(), 0..512),
                         id: u64, name in "[a-z._-]{0,20}", partitions: i32) {
        let frames = vec![
            Frame::Raft(raft_message(from, to, term, data)),
            Frame::Request { request_id: id, request: BrokerRequest::CreateTopics(vec![CreateTopicRequest {
                name: name.clone(), num_partitions: partitions, replication_factor: 3, configs: BTreeMap::new() }]) },
            Frame::Reply { request_id: id, reply: Ok(BrokerResponse::BrokerHeartbeat(HeartbeatReply {
                is_caught_up: true, is_fenced: false, should_shut_down: false })) },
            Frame::Reply { request_id: id, reply: Err(ControllerError::UnknownTopic { name }) },
        ];
        for f in frames {
            let bytes = f.to_bytes().unwrap();
            prop_assert_eq!(Frame::decode(&bytes).unwrap(), f);
        }
    }

    /// Guards decoders against arbitrary bytes: errors, never panics.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Frame::decode(&bytes);
        let _ = decode_batch(&bytes);
        let _ = decode_image(&bytes);
        let _ = Frame::peek_body_len(&bytes);
    }

    /// Guards against flipped bytes in a valid frame: refused (CRC), never panics.
    #[test]
    fn corrupted_frames_refused(pos in 0usize..64, bit in 0u8..8) {
        let bytes = Frame::Raft(raft_message(1, 2, 3, vec![9; 40])).to_bytes().unwrap();
        let mut bad = bytes.to_vec();
        let pos = pos % bad.len();
        bad[pos] ^= 1 << bit;
        prop_assert!(Frame::decode(&bad).is_err());
    }
}

/// Oversized, truncated and mislabelled frames are refused with the matching error.
#[test]
fn frame_bounds() {
    let good = Frame::Raft(raft_message(1, 2, 3, vec![1, 2, 3]))
        .to_bytes()
        .unwrap();
    assert!(matches!(
        Frame::decode(&good[..5]),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        Frame::decode(&good[..good.len() - 1]),
        Err(DecodeError::LengthMismatch { .. })
    ));
    let mut huge = good.to_vec();
    huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Frame::decode(&huge),
        Err(DecodeError::TooLarge { .. })
    ));
    let mut kind = good.to_vec();
    kind[3] = 77;
    assert!(Frame::decode(&kind).is_err());
    let mut version = good.to_vec();
    version[2] = 9;
    assert!(matches!(
        Frame::decode(&version),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
}

/// Record batches and image snapshots round-trip and check their envelope.
#[test]
fn batch_and_image_round_trip() {
    let records = vec![
        MetadataRecord::FenceBroker {
            broker_id: 1,
            broker_epoch: 4,
        },
        MetadataRecord::RemoveTopic { topic_id: [3; 16] },
    ];
    let bytes = encode_batch(&records).unwrap();
    assert_eq!(&bytes[..4], b"TMRB");
    assert_eq!(decode_batch(&bytes).unwrap(), records);
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(decode_batch(&bad), Err(DecodeError::Crc { .. })));
    assert!(matches!(
        decode_image(&bytes),
        Err(DecodeError::BadMagic { .. })
    ));
    let image = MetadataImage {
        next_producer_id: 2000,
        last_applied_index: 9,
        ..Default::default()
    };
    assert_eq!(decode_image(&encode_image(&image).unwrap()).unwrap(), image);
}
