//! Byte formats of the controller: record batches (the data of a Raft entry), image
//! snapshots (the data of a Raft snapshot) and the frames nodes exchange. Layouts are in
//! `replication/FORMAT.md`; change them only with a new version number.
//!
//! Every decoder takes untrusted bytes: it checks magic, version, length and CRC before
//! parsing, bounds the input size, and returns a [`DecodeError`], never panics.

use bytes::{BufMut, Bytes, BytesMut};
use protobuf::Message as _;
use raft::eraftpb::Message as RaftMessage;
use serde::{de::DeserializeOwned, Serialize};

use crate::controller::{BrokerRequest, BrokerResponse};
use crate::decide::ControllerError;
use crate::image::{MetadataImage, MetadataRecord};

/// Magic of a record batch (a Raft entry's data).
pub const BATCH_MAGIC: [u8; 4] = *b"TMRB";
/// Magic of an image snapshot (a Raft snapshot's data).
pub const IMAGE_MAGIC: [u8; 4] = *b"TMIS";
/// Version of both envelopes written by this code.
pub const ENVELOPE_VERSION: u16 = 1;
const ENVELOPE_HEADER_BYTES: usize = 14;

/// Magic of a frame between nodes.
pub const FRAME_MAGIC: [u8; 2] = *b"TC";
/// Version of the frame layout written by this code.
pub const FRAME_VERSION: u8 = 1;
/// Bytes before a frame's body.
pub const FRAME_HEADER_BYTES: usize = 12;
/// Largest frame body accepted (a Raft message carrying a snapshot of the image is the
/// largest frame).
pub const FRAME_BODY_BYTES_MAX: usize = 64 << 20;
/// Largest record batch or snapshot payload accepted.
pub const PAYLOAD_BYTES_MAX: usize = 64 << 20;

const KIND_RAFT: u8 = 1;
const KIND_REQUEST: u8 = 2;
const KIND_REPLY: u8 = 3;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{len} bytes is shorter than the {need}-byte header")]
    Truncated { len: usize, need: usize },
    #[error("bad magic {found:02x?}")]
    BadMagic { found: Vec<u8> },
    #[error("unsupported version {version}")]
    UnsupportedVersion { version: u16 },
    #[error("unknown frame kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("length field {declared} but {actual} bytes follow the header")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("{len} bytes exceeds the bound of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("bad body: {reason}")]
    Body { reason: String },
}

/// Why a value could not be encoded (a bug or an oversized value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{len} bytes exceeds the bound of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("serialization failed: {reason}")]
    Serialize { reason: String },
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn envelope(magic: [u8; 4], payload: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= PAYLOAD_BYTES_MAX)
        .ok_or(EncodeError::TooLarge {
            len: payload.len(),
            max: PAYLOAD_BYTES_MAX,
        })?;
    let mut out = Vec::with_capacity(ENVELOPE_HEADER_BYTES + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&ENVELOPE_VERSION.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

fn open_envelope(magic: [u8; 4], bytes: &[u8]) -> Result<&[u8], DecodeError> {
    if bytes.len() < ENVELOPE_HEADER_BYTES {
        return Err(DecodeError::Truncated {
            len: bytes.len(),
            need: ENVELOPE_HEADER_BYTES,
        });
    }
    if bytes[..4] != magic {
        return Err(DecodeError::BadMagic {
            found: bytes[..4].to_vec(),
        });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != ENVELOPE_VERSION {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let declared = le_u32(bytes, 6) as usize;
    let payload = &bytes[ENVELOPE_HEADER_BYTES..];
    if declared > PAYLOAD_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            len: declared,
            max: PAYLOAD_BYTES_MAX,
        });
    }
    if declared != payload.len() {
        return Err(DecodeError::LengthMismatch {
            declared,
            actual: payload.len(),
        });
    }
    let stored = le_u32(bytes, 10);
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(DecodeError::Crc { stored, computed });
    }
    Ok(payload)
}

fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, EncodeError> {
    serde_json::to_vec(v).map_err(|e| EncodeError::Serialize {
        reason: e.to_string(),
    })
}

fn from_json<T: DeserializeOwned>(b: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(b).map_err(|e| DecodeError::Body {
        reason: e.to_string(),
    })
}

/// The data of one Raft entry: the records it commits together.
pub fn encode_batch(records: &[MetadataRecord]) -> Result<Vec<u8>, EncodeError> {
    envelope(BATCH_MAGIC, &to_json(records)?)
}

pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, DecodeError> {
    from_json(open_envelope(BATCH_MAGIC, bytes)?)
}

/// The data of a Raft snapshot: the whole image.
pub fn encode_image(image: &MetadataImage) -> Result<Vec<u8>, EncodeError> {
    envelope(IMAGE_MAGIC, &to_json(image)?)
}

pub fn decode_image(bytes: &[u8]) -> Result<MetadataImage, DecodeError> {
    let image: MetadataImage = from_json(open_envelope(IMAGE_MAGIC, bytes)?)?;
    image
        .check_invariants()
        .map_err(|reason| DecodeError::Body { reason })?;
    Ok(image)
}

/// What nodes send each other: Raft traffic between controllers, requests from brokers to
/// the controller and its replies.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Raft(RaftMessage),
    Request {
        request_id: u64,
        request: BrokerRequest,
    },
    Reply {
        request_id: u64,
        reply: Result<BrokerResponse, ControllerError>,
    },
}

impl Frame {
    /// Encodes into `out` (appending); returns the bytes written.
    pub fn encode(&self, out: &mut BytesMut) -> Result<usize, EncodeError> {
        let (kind, body) = match self {
            Frame::Raft(m) => {
                let body = m.write_to_bytes().map_err(|e| EncodeError::Serialize {
                    reason: e.to_string(),
                })?;
                (KIND_RAFT, body)
            }
            Frame::Request {
                request_id,
                request,
            } => (KIND_REQUEST, with_id(*request_id, &to_json(request)?)),
            Frame::Reply { request_id, reply } => {
                (KIND_REPLY, with_id(*request_id, &to_json(reply)?))
            }
        };
        let len = u32::try_from(body.len())
            .ok()
            .filter(|_| body.len() <= FRAME_BODY_BYTES_MAX)
            .ok_or(EncodeError::TooLarge {
                len: body.len(),
                max: FRAME_BODY_BYTES_MAX,
            })?;
        out.reserve(FRAME_HEADER_BYTES + body.len());
        out.put_slice(&FRAME_MAGIC);
        out.put_u8(FRAME_VERSION);
        out.put_u8(kind);
        out.put_u32_le(len);
        out.put_u32_le(crc32c::crc32c(&body));
        out.put_slice(&body);
        Ok(FRAME_HEADER_BYTES + body.len())
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }

    /// The body length a frame header announces, to size a read; errors as [`decode`].
    ///
    /// [`decode`]: Frame::decode
    pub fn peek_body_len(header: &[u8]) -> Result<usize, DecodeError> {
        if header.len() < FRAME_HEADER_BYTES {
            return Err(DecodeError::Truncated {
                len: header.len(),
                need: FRAME_HEADER_BYTES,
            });
        }
        if header[..2] != FRAME_MAGIC {
            return Err(DecodeError::BadMagic {
                found: header[..2].to_vec(),
            });
        }
        if header[2] != FRAME_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                version: u16::from(header[2]),
            });
        }
        let len = le_u32(header, 4) as usize;
        if len > FRAME_BODY_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                len,
                max: FRAME_BODY_BYTES_MAX,
            });
        }
        Ok(len)
    }

    /// Decodes exactly one frame occupying all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        let declared = Self::peek_body_len(bytes)?;
        let body = &bytes[FRAME_HEADER_BYTES..];
        if declared != body.len() {
            return Err(DecodeError::LengthMismatch {
                declared,
                actual: body.len(),
            });
        }
        let stored = le_u32(bytes, 8);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(DecodeError::Crc { stored, computed });
        }
        match bytes[3] {
            KIND_RAFT => RaftMessage::parse_from_bytes(body)
                .map(Frame::Raft)
                .map_err(|e| DecodeError::Body {
                    reason: e.to_string(),
                }),
            KIND_REQUEST => {
                let (request_id, json) = split_id(body)?;
                Ok(Frame::Request {
                    request_id,
                    request: from_json(json)?,
                })
            }
            KIND_REPLY => {
                let (request_id, json) = split_id(body)?;
                Ok(Frame::Reply {
                    request_id,
                    reply: from_json(json)?,
                })
            }
            kind => Err(DecodeError::UnknownKind { kind }),
        }
    }
}

fn with_id(id: u64, json: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + json.len());
    body.extend_from_slice(&id.to_le_bytes());
    body.extend_from_slice(json);
    body
}

fn split_id(body: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    if body.len() < 8 {
        return Err(DecodeError::Body {
            reason: "request id missing".into(),
        });
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&body[..8]);
    Ok((u64::from_le_bytes(id), &body[8..]))
}
