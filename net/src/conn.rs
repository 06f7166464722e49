//! One client connection: read a frame, decode, answer, in order.
//!
//! Requests on a connection are handled one at a time, as Kafka does (it mutes a channel
//! until its response is sent), so responses are in request order. A frame is bounded by
//! `socket.request.max.bytes`; a negative or oversized length, an unknown API key, an
//! unsupported version (other than ApiVersions') or a body that does not decode closes the
//! connection. Nothing that arrives on the socket can panic the shard.

use std::io;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot, watch};

use crate::api::{self, ApiError, Response, Started};
use crate::shard::ShardState;
use crate::wire::send::{send_pieces, SplicePipe};

/// Why a connection was closed by the broker.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("frame of {0} bytes is negative or over socket.request.max.bytes")]
    FrameSize(i64),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} v{version} is not supported")]
    Unsupported { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Responses a connection may have queued (produce requests in flight) before the broker
/// stops reading further requests from it.
pub const PIPELINE_MAX: usize = 1024;

/// What the connection's writer sends next, in request order.
enum Outgoing {
    Ready(Response),
    /// A produce waiting for its appends.
    Produce(Pin<Box<dyn Future<Output = Result<Response, ApiError>>>>),
    /// Signals the reader once everything before it has been written.
    Barrier(oneshot::Sender<()>),
}

/// Serves one connection until the peer closes it, an error closes it, or the shard stops.
///
/// Produce requests are pipelined: the reader queues each one's appends (in request order)
/// and goes on reading while a writer task sends the responses in order as the appends
/// complete, so a client with several requests in flight is not held to one fsync per
/// request. Every other request waits until all earlier responses are written and is then
/// handled alone, exactly as Kafka handles requests on a connection one at a time.
///
/// When `stop` turns true the connection stops reading: the request being handled finishes,
/// queued responses are written, then the connection closes (graceful shutdown).
pub async fn serve(
    shard: Rc<ShardState>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    stop: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    // Kafka shows a client's host as "/<ip>" (DescribeGroups).
    let peer = format!("/{}", peer.ip());
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let (tx, rx) = mpsc::channel::<Outgoing>(PIPELINE_MAX);
    let writer = tokio_uring::spawn(write_responses(stream.clone(), rx, shard.clone()));
    let r = read_requests(&shard, &stream, &peer, &tx, stop).await;
    drop(tx);
    if r.is_err() {
        // A refused frame closes the connection at once; queued responses are dropped.
        writer.abort();
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return r;
    }
    match writer.await {
        Ok(w) => w.map_err(ConnError::from),
        Err(_) => Ok(()),
    }
}

async fn read_requests(
    shard: &Rc<ShardState>,
    stream: &TcpStream,
    peer: &str,
    tx: &mpsc::Sender<Outgoing>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let max = shard.router.config.socket_request_max_bytes as i64;
    let mut reader = FrameReader::default();
    loop {
        let next = tokio::select! {
            r = reader.next(stream, max) => r?,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let Some(frame) = next else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let frame_bytes = frame.len() + 4;
        let parsed = parse_frame(frame)?;
        let counted = match &parsed {
            Parsed::Request { api, .. } => *api,
            Parsed::ApiVersionsUnsupported { .. } => ApiKey::ApiVersions,
        };
        let out = match parsed {
            Parsed::Request { api, header, body } if api == ApiKey::Produce => {
                let version = header.request_api_version;
                let malformed = |e: ApiError| ConnError::Malformed {
                    api,
                    version,
                    reason: e.to_string(),
                };
                match api::start_produce(shard, &header, body)
                    .await
                    .map_err(malformed)?
                {
                    Started::Produce {
                        inflight,
                        version,
                        correlation_id,
                    } => {
                        let me = shard.clone();
                        Outgoing::Produce(Box::pin(async move {
                            let resp = inflight.finish().await;
                            me.metrics().request(api, frame_bytes, started.elapsed());
                            api::produce_response(&resp, version, correlation_id)
                        }))
                    }
                    Started::ProduceNoAck => {
                        shard.metrics().request(api, frame_bytes, started.elapsed());
                        continue;
                    }
                    Started::Done(r) => Outgoing::Ready(r),
                }
            }
            parsed => {
                let (done_tx, done_rx) = oneshot::channel();
                if tx.send(Outgoing::Barrier(done_tx)).await.is_err() || done_rx.await.is_err() {
                    return Ok(());
                }
                let r = handle_parsed(shard, parsed, peer).await?;
                shard
                    .metrics()
                    .request(counted, frame_bytes, started.elapsed());
                Outgoing::Ready(r)
            }
        };
        if tx.send(out).await.is_err() {
            return Ok(());
        }
    }
}

/// Most bytes of responses gathered into one write.
const GATHER_BYTES_MAX: usize = 256 << 10;

/// What to do with the next outgoing item once it is resolved.
enum Next {
    Send(Response),
    Skip,
    /// Close the connection (after writing what was gathered), with this result.
    Close(io::Result<()>),
}

/// Resolves a produce's result: the response, or the test-only fault, or its error.
fn produce_outcome(r: Result<Response, ApiError>) -> Next {
    match r {
        Ok(_) if fault::drop_produce_response() => {
            // Test-only fault: the append happened, the client never hears of it.
            tracing::warn!("test fault: produce response dropped, connection closed");
            Next::Close(Ok(()))
        }
        Ok(r) => Next::Send(r),
        Err(e) => Next::Close(Err(io::Error::other(e.to_string()))),
    }
}

/// Polls a future once, without a waker to call back (it is awaited later if not ready).
fn poll_now<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Writes responses in request order. Responses that are ready together (pipelined
/// requests whose appends completed in the same journal write) go out in one write.
async fn write_responses(
    stream: Rc<TcpStream>,
    mut rx: mpsc::Receiver<Outgoing>,
    shard: Rc<ShardState>,
) -> io::Result<()> {
    let mut pipe = None;
    let mut held: Option<Outgoing> = None;
    let mut gathered: Vec<u8> = Vec::new();
    loop {
        let out = match held.take() {
            Some(o) => o,
            None => match rx.recv().await {
                Some(o) => o,
                None => return Ok(()),
            },
        };
        let next = match out {
            Outgoing::Ready(r) => Next::Send(r),
            Outgoing::Produce(f) => produce_outcome(f.await),
            Outgoing::Barrier(done) => {
                let _ = done.send(());
                Next::Skip
            }
        };
        let response = match next {
            Next::Send(r) => r,
            Next::Skip => continue,
            Next::Close(r) => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return r;
            }
        };
        match response {
            Response::None => {}
            Response::Bytes(b) => {
                gathered.clear();
                gathered.extend_from_slice(&b);
                let close = gather_ready(&mut rx, &mut held, &mut gathered);
                shard.metrics().bytes_out(gathered.len() as u64);
                let (r, back) = stream.write_all(std::mem::take(&mut gathered)).await;
                gathered = back;
                r?;
                if let Some(r) = close {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    return r;
                }
            }
            Response::Pieces(pieces) => {
                if pipe.is_none() {
                    pipe = Some(SplicePipe::new()?);
                }
                if let Some(p) = pipe.as_mut() {
                    shard.metrics().bytes_out(crate::wire::pieces_len(&pieces));
                    send_pieces(&stream, pieces, p).await?;
                }
            }
        }
    }
}

/// Appends to `gathered` the byte responses that are ready now, in order; the first item
/// that is not (or is not plain bytes) is kept in `held`. Returns `Some` when the
/// connection must close after the write.
fn gather_ready(
    rx: &mut mpsc::Receiver<Outgoing>,
    held: &mut Option<Outgoing>,
    gathered: &mut Vec<u8>,
) -> Option<io::Result<()>> {
    while gathered.len() < GATHER_BYTES_MAX {
        let Ok(next) = rx.try_recv() else {
            return None;
        };
        let ready = match next {
            Outgoing::Ready(Response::Bytes(b)) => b,
            Outgoing::Produce(mut f) => match poll_now(&mut f) {
                None => {
                    *held = Some(Outgoing::Produce(f));
                    return None;
                }
                Some(r) => match produce_outcome(r) {
                    Next::Send(Response::Bytes(b)) => b,
                    Next::Send(r) => {
                        *held = Some(Outgoing::Ready(r));
                        return None;
                    }
                    Next::Skip => continue,
                    Next::Close(r) => return Some(r),
                },
            },
            other => {
                *held = Some(other);
                return None;
            }
        };
        gathered.extend_from_slice(&ready);
    }
    None
}

/// Test-only fault injection, set from the environment at first use.
mod fault {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// `TERN_TEST_DROP_PRODUCE_RESPONSE_EVERY=N`: every Nth Produce response (counted over
    /// the process) is not sent and its connection is closed, after the append completed.
    /// Tests use it to make clients retry; nothing else should set it.
    pub const DROP_PRODUCE_RESPONSE_ENV: &str = "TERN_TEST_DROP_PRODUCE_RESPONSE_EVERY";

    static EVERY: OnceLock<u64> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);

    pub fn drop_produce_response() -> bool {
        let every = *EVERY.get_or_init(|| {
            std::env::var(DROP_PRODUCE_RESPONSE_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        });
        every > 0 && (COUNT.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(every)
    }
}

/// A request frame after its header was checked.
#[derive(Debug)]
pub enum Parsed {
    /// ApiVersions in a version we don't know: answer with our list (v0).
    ApiVersionsUnsupported { correlation_id: i32 },
    /// A request of a supported API and version; `body` follows the header.
    Request {
        api: ApiKey,
        header: RequestHeader,
        body: Bytes,
    },
}

/// Decodes a frame's header and checks its API and version. Pure: the fuzz target drives it
/// with arbitrary bytes.
pub fn parse_frame(mut frame: Bytes) -> Result<Parsed, ConnError> {
    if frame.len() < 4 {
        return Err(ConnError::FrameSize(frame.len() as i64));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| ConnError::UnknownApi(key))?;
    let supported = api::supported(api);
    let malformed = |reason: String| ConnError::Malformed {
        api,
        version,
        reason,
    };
    if api == ApiKey::ApiVersions && !supported.clone().is_some_and(|r| r.contains(&version)) {
        // Kafka answers an unknown ApiVersions version with a v0 error response, so that a
        // newer client can retry with a version we know.
        let header = RequestHeader::decode(&mut frame, 1).map_err(|e| malformed(e.to_string()))?;
        return Ok(Parsed::ApiVersionsUnsupported {
            correlation_id: header.correlation_id,
        });
    }
    let Some(range) = supported else {
        return Err(ConnError::UnknownApi(key));
    };
    if !range.contains(&version) {
        return Err(ConnError::Unsupported { api, version });
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| malformed(e.to_string()))?;
    Ok(Parsed::Request {
        api,
        header,
        body: frame,
    })
}

/// Decodes the header, checks the API and version, and runs the handler.
pub async fn handle_frame(shard: &Rc<ShardState>, frame: Bytes) -> Result<Response, ConnError> {
    handle_parsed(shard, parse_frame(frame)?, "").await
}

async fn handle_parsed(
    shard: &Rc<ShardState>,
    parsed: Parsed,
    peer: &str,
) -> Result<Response, ConnError> {
    match parsed {
        Parsed::ApiVersionsUnsupported { correlation_id } => {
            Ok(api::api_versions_unsupported(correlation_id))
        }
        Parsed::Request { api, header, body } => {
            let version = header.request_api_version;
            api::handle(shard, api, header, body, peer)
                .await
                .map_err(|e| ConnError::Malformed {
                    api,
                    version,
                    reason: e.to_string(),
                })
        }
    }
}

/// Reads exactly `len` bytes; `None` if the peer closed the connection first.
/// Bytes asked of each read of a connection: several pipelined requests come in one read.
const READ_BYTES: usize = 64 << 10;

/// Request frames read from a connection, as many per read as have arrived.
#[derive(Default)]
struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// The next frame (after its length prefix), `None` at end of stream. A length that is
    /// negative or over `max` is refused before anything is allocated for it.
    async fn next(&mut self, stream: &TcpStream, max: i64) -> Result<Option<Bytes>, ConnError> {
        loop {
            if self.buf.len() >= 4 {
                let b = &self.buf;
                let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                if len < 0 || len as i64 > max {
                    return Err(ConnError::FrameSize(len as i64));
                }
                let whole = 4 + len as usize;
                if self.buf.len() >= whole {
                    let mut frame = self.buf.split_to(whole);
                    return Ok(Some(frame.split_off(4).freeze()));
                }
                self.buf.reserve(whole - self.buf.len());
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(READ_BYTES);
            }
            let buf = std::mem::take(&mut self.buf);
            let filled = buf.len();
            let total = buf.capacity();
            let (r, slice) = stream.read(buf.slice(filled..total)).await;
            self.buf = slice.into_inner();
            if r? == 0 {
                return Ok(None);
            }
        }
    }
}

/// Encodes a response frame: length, header, body.
pub fn frame(header_version: i16, correlation_id: i32, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::Encodable;
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // Encoding a header into a BytesMut cannot fail: it has no length-limited fields.
    let _ = header.encode(&mut buf, header_version);
    body(&mut buf);
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::RequestKind;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Guards that no byte string panics the frame parser or the body decoders of the
        /// APIs we serve (the same property the cargo-fuzz target explores further).
        #[test]
        fn arbitrary_frames_never_panic(
            key in prop_oneof![0i16..80, any::<i16>()],
            version in prop_oneof![0i16..20, any::<i16>()],
            rest in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut frame = Vec::with_capacity(rest.len() + 4);
            frame.extend_from_slice(&key.to_be_bytes());
            frame.extend_from_slice(&version.to_be_bytes());
            frame.extend_from_slice(&rest);
            if let Ok(Parsed::Request { api, header, mut body }) = parse_frame(Bytes::from(frame)) {
                let _ = RequestKind::decode(api, &mut body, header.request_api_version);
            }
        }
    }

    /// Guards the refusals: short, unknown API, unsupported version, and the ApiVersions
    /// exception.
    #[test]
    fn frame_refusals() {
        assert!(matches!(
            parse_frame(Bytes::from_static(&[0, 1])),
            Err(ConnError::FrameSize(2))
        ));
        let unknown = Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1]);
        assert!(matches!(
            parse_frame(unknown),
            Err(ConnError::UnknownApi(0x7f00))
        ));
        let metadata_v99 = Bytes::from_static(&[0, 3, 0, 99, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(matches!(
            parse_frame(metadata_v99),
            Err(ConnError::Unsupported { .. })
        ));
        let api_versions_v9 = Bytes::from_static(&[0, 18, 0, 9, 0, 0, 0, 7, 0xff, 0xff]);
        assert!(matches!(
            parse_frame(api_versions_v9),
            Ok(Parsed::ApiVersionsUnsupported { correlation_id: 7 })
        ));
    }
}
