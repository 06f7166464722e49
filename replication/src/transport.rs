//! The QUIC transport between nodes: framed messages on mutual-TLS connections.
//!
//! Each node binds one UDP endpoint (its CONTROLLER listener). To send to a peer it dials
//! that peer once and keeps one unidirectional stream open; what it receives comes on the
//! streams its peers dialled. So a pair of nodes has two connections, one per direction,
//! and neither side ever waits on the other to send.
//!
//! On a new stream the dialler first sends a hello, then frames (all integers big-endian,
//! the wire format is stated in `replication/PROTOCOL.md`):
//!
//! ```text
//! hello:  "TERN" | version u8 (1) | node id i32 | cluster id length u8 | cluster id
//! frame:  length u32 (channel + payload, 1 ..= 1 + frame_bytes_max) | channel u8 | payload
//! ```
//!
//! The accepting side refuses (closes the connection, logs one line and counts it in
//! [`Transport::refused`]) a peer whose certificate the CA did not sign (the TLS handshake
//! fails), a hello from a node id that is not one of its peers (unless
//! [`TransportConfig::accept_unlisted`]: a controller hears from any broker of its
//! cluster), from a node whose certificate
//! does not carry that node's name, or from another cluster, a bad hello, and a frame longer
//! than `frame_bytes_max`. Other connections are not disturbed.
//!
//! Frames to a peer queue in a bounded per-peer queue ([`TransportConfig::queue_frames_max`]):
//! when it is full, or while the peer is unreachable, [`Transport::send`] reports it and the
//! frame is dropped. The transport is for protocols that tolerate loss and retry (Raft, the
//! replica fetch loop); it orders the frames of one (sender, receiver) pair.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use crate::tls::{certificate_names_node, node_name, TlsMaterial};

/// The QUIC implementation, for the owners of replica streams.
pub use quinn;

/// The hello's first bytes.
const MAGIC: &[u8; 4] = b"TERN";
/// The transport version in the hello.
const VERSION: u8 = 1;
/// The longest cluster id a hello carries.
const CLUSTER_ID_BYTES_MAX: usize = 64;
/// Reconnection backoff bounds.
const BACKOFF_MIN_MS: u64 = 20;
const BACKOFF_MAX_MS: u64 = 1000;
/// Frames received and not yet taken by the owner.
const RECEIVED_QUEUE_MAX: usize = 4096;
/// Reasons of the latest refusals kept for [`Transport::recent_refusals`].
const REFUSALS_KEPT_MAX: usize = 32;

/// QUIC application error codes we close connections with.
const CLOSE_REFUSED: u32 = 1;
const CLOSE_SHUTDOWN: u32 = 0;

/// What the transport needs to know.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id.
    pub node_id: i32,
    /// The cluster it belongs to: peers of another cluster are refused.
    pub cluster_id: String,
    /// The UDP address to bind (port 0: any).
    pub listen: SocketAddr,
    /// Every other node it exchanges frames with, and where it listens.
    pub peers: BTreeMap<i32, SocketAddr>,
    /// The largest payload of one frame.
    pub frame_bytes_max: u32,
    /// Frames queued per peer before [`Transport::send`] refuses more.
    pub queue_frames_max: usize,
    /// Accept nodes that are not in `peers` (a controller voter hears from brokers it was
    /// not configured with); their certificate must still name them, their cluster id
    /// match. Replies to them need [`Transport::add_peer`].
    pub accept_unlisted: bool,
}

impl TransportConfig {
    /// Defaults: 16 MiB frames, 1024 queued frames per peer.
    pub fn new(
        node_id: i32,
        cluster_id: &str,
        listen: SocketAddr,
        peers: BTreeMap<i32, SocketAddr>,
    ) -> Self {
        TransportConfig {
            node_id,
            cluster_id: cluster_id.to_owned(),
            listen,
            peers,
            frame_bytes_max: 16 << 20,
            queue_frames_max: 1024,
            accept_unlisted: false,
        }
    }
}

/// A frame from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub from: i32,
    pub channel: u8,
    pub payload: Bytes,
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind the QUIC endpoint on {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("node {0} is listed as its own peer")]
    SelfPeer(i32),
    #[error("cluster id of {0} bytes: at most {CLUSTER_ID_BYTES_MAX}")]
    ClusterId(usize),
}

/// Why a frame was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("node {0} is not a peer")]
    UnknownPeer(i32),
    #[error("the queue to node {0} is full")]
    QueueFull(i32),
    #[error("a frame of {len} bytes is larger than the {max} allowed")]
    TooLarge { len: usize, max: u32 },
    #[error("the transport is closed")]
    Closed,
}

/// What every task of a transport shares.
#[derive(Debug)]
struct Shared {
    node_id: i32,
    cluster_id: String,
    peers: BTreeMap<i32, SocketAddr>,
    accept_unlisted: bool,
    frame_bytes_max: u32,
    queue_frames_max: usize,
    refused: AtomicU64,
    recent_refusals: std::sync::Mutex<std::collections::VecDeque<String>>,
    received_frames: AtomicU64,
    received_bytes: AtomicU64,
    /// Where accepted replica streams go, once the owner asked for them.
    replica_streams: std::sync::Mutex<Option<mpsc::Sender<ReplicaStream>>>,
}

/// A replica stream (a bidirectional stream on a connection of its own) that a follower
/// shard of `peer` opened to this node; the peer's certificate and hello were checked.
#[derive(Debug)]
pub struct ReplicaStream {
    pub peer: i32,
    /// The follower's shard: the leader serves the stream on its shard of the same index
    /// (modulo its shard count).
    pub shard: u16,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    /// Held so the connection lives as long as the stream's owner keeps it.
    pub connection: quinn::Connection,
}

/// Opens replica streams to other nodes; cheap to clone and usable from any thread (the
/// connection's driver runs on the runtime of the thread that dials).
#[derive(Debug, Clone)]
pub struct ReplicaDialer {
    endpoint: quinn::Endpoint,
    hello: Bytes,
}

impl ReplicaDialer {
    /// Dials `peer` at `addr` on a new connection and opens the replica stream of `shard`:
    /// the hello, then the shard index, then the fetch frames.
    pub async fn open(
        &self,
        peer: i32,
        addr: SocketAddr,
        shard: u16,
    ) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), String> {
        let conn = self
            .endpoint
            .connect(addr, &node_name(peer))
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let mut head = BytesMut::with_capacity(self.hello.len() + 2);
        head.extend_from_slice(&self.hello);
        head.extend_from_slice(&shard.to_be_bytes());
        send.write_all(&head).await.map_err(|e| e.to_string())?;
        Ok((conn, send, recv))
    }
}

/// A node's QUIC endpoint: send frames to peers by id, receive theirs.
#[derive(Debug)]
pub struct Transport {
    endpoint: quinn::Endpoint,
    queues: std::sync::Mutex<BTreeMap<i32, mpsc::Sender<(u8, Bytes)>>>,
    shared: Arc<Shared>,
    /// What shard endpoints are made of (see [`ShardEndpoints`]).
    shard_endpoints: ShardEndpoints,
}

impl Transport {
    /// Binds the endpoint and starts its tasks on the current tokio runtime. Frames from
    /// peers arrive on the returned receiver.
    pub fn bind(
        config: TransportConfig,
        tls: &TlsMaterial,
    ) -> Result<(Transport, mpsc::Receiver<Received>), TransportError> {
        if config.peers.contains_key(&config.node_id) {
            return Err(TransportError::SelfPeer(config.node_id));
        }
        if config.cluster_id.len() > CLUSTER_ID_BYTES_MAX {
            return Err(TransportError::ClusterId(config.cluster_id.len()));
        }
        let (server, client) = (tls.server_config()?, tls.client_config()?);
        let endpoint_config = tls.endpoint_config();
        let bind = |cause| TransportError::Bind {
            addr: config.listen,
            cause,
        };
        let socket = std::net::UdpSocket::bind(config.listen).map_err(bind)?;
        let mut endpoint = quinn::Endpoint::new(
            endpoint_config.clone(),
            Some(server.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind)?;
        endpoint.set_default_client_config(client.clone());
        let shared = Arc::new(Shared {
            node_id: config.node_id,
            cluster_id: config.cluster_id.clone(),
            peers: config.peers.clone(),
            accept_unlisted: config.accept_unlisted,
            frame_bytes_max: config.frame_bytes_max,
            queue_frames_max: config.queue_frames_max.max(1),
            refused: AtomicU64::new(0),
            recent_refusals: std::sync::Mutex::new(std::collections::VecDeque::new()),
            received_frames: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            replica_streams: std::sync::Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel(RECEIVED_QUEUE_MAX);
        tokio::spawn(accept_loop(endpoint.clone(), shared.clone(), tx));
        let mut queues = BTreeMap::new();
        for (&peer, &addr) in &config.peers {
            let (qtx, qrx) = mpsc::channel(config.queue_frames_max.max(1));
            queues.insert(peer, qtx);
            tokio::spawn(peer_sender(
                endpoint.clone(),
                shared.clone(),
                peer,
                addr,
                qrx,
            ));
        }
        Ok((
            Transport {
                endpoint,
                queues: std::sync::Mutex::new(queues),
                shard_endpoints: ShardEndpoints {
                    shared: shared.clone(),
                    endpoint_config,
                    server,
                    client,
                },
                shared,
            },
            rx,
        ))
    }

    fn queue(&self, to: i32) -> Option<mpsc::Sender<(u8, Bytes)>> {
        let queues = match self.queues.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        queues.get(&to).cloned()
    }

    /// Whether frames can be sent to `node`.
    pub fn has_peer(&self, node: i32) -> bool {
        self.queue(node).is_some()
    }

    /// Adds a peer learnt at run time (a broker that registered); a known one is kept.
    /// Must be called on the transport's runtime.
    pub fn add_peer(&self, node: i32, addr: SocketAddr) {
        let mut queues = match self.queues.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        if node == self.shared.node_id || queues.contains_key(&node) {
            return;
        }
        let (tx, rx) = mpsc::channel(self.shared.queue_frames_max);
        queues.insert(node, tx);
        tokio::spawn(peer_sender(
            self.endpoint.clone(),
            self.shared.clone(),
            node,
            addr,
            rx,
        ));
    }

    /// Replica streams that followers open to this node arrive on the returned receiver
    /// from now on (before, they are refused). A second call replaces the first receiver.
    pub fn replica_streams(&self) -> mpsc::Receiver<ReplicaStream> {
        let (tx, rx) = mpsc::channel(64);
        let mut slot = match self.shared.replica_streams.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Some(tx);
        rx
    }

    /// What each shard binds its own replica endpoint with (usable from any thread).
    pub fn shard_endpoints(&self) -> ShardEndpoints {
        self.shard_endpoints.clone()
    }

    /// A dialer of replica streams from this node.
    pub fn replica_dialer(&self) -> ReplicaDialer {
        ReplicaDialer {
            endpoint: self.endpoint.clone(),
            hello: encode_hello(self.shared.node_id, &self.shared.cluster_id),
        }
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Queues a frame to `to` on `channel`.
    pub fn send(&self, to: i32, channel: u8, payload: Bytes) -> Result<(), SendError> {
        if payload.len() > self.shared.frame_bytes_max as usize {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: self.shared.frame_bytes_max,
            });
        }
        let queue = self.queue(to).ok_or(SendError::UnknownPeer(to))?;
        queue.try_send((channel, payload)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull(to),
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// Queues a frame to `to`, waiting for room in its queue (backpressure for bulk
    /// senders); frames are still dropped while the peer is unreachable.
    pub async fn send_wait(&self, to: i32, channel: u8, payload: Bytes) -> Result<(), SendError> {
        if payload.len() > self.shared.frame_bytes_max as usize {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: self.shared.frame_bytes_max,
            });
        }
        let queue = self.queue(to).ok_or(SendError::UnknownPeer(to))?;
        queue
            .send((channel, payload))
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Connections and frames refused so far.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Why the latest connections or frames were refused, oldest first (at most
    /// 32).
    pub fn recent_refusals(&self) -> Vec<String> {
        match self.shared.recent_refusals.lock() {
            Ok(r) => r.iter().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
        }
    }

    /// Frames and payload bytes received so far.
    pub fn received(&self) -> (u64, u64) {
        (
            self.shared.received_frames.load(Ordering::Relaxed),
            self.shared.received_bytes.load(Ordering::Relaxed),
        )
    }

    /// Closes every connection and waits until the peers were told.
    pub async fn close(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"shutdown");
        self.endpoint.wait_idle().await;
    }
}

/// The hello a dialler sends first.
pub(crate) fn encode_hello(node_id: i32, cluster_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(10 + cluster_id.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&[VERSION]);
    b.extend_from_slice(&node_id.to_be_bytes());
    // The caller checked the length (≤ CLUSTER_ID_BYTES_MAX).
    b.extend_from_slice(&[cluster_id.len() as u8]);
    b.extend_from_slice(cluster_id.as_bytes());
    b.freeze()
}

/// A frame's header: length of channel + payload, and the channel.
fn frame_header(channel: u8, payload_len: usize) -> [u8; 5] {
    let len = (payload_len + 1) as u32;
    let l = len.to_be_bytes();
    [l[0], l[1], l[2], l[3], channel]
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, tx: mpsc::Sender<Received>) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(serve_incoming(incoming, shared.clone(), tx.clone()));
    }
}

fn refuse(shared: &Shared, conn: Option<&quinn::Connection>, from: SocketAddr, why: &str) {
    shared.refused.fetch_add(1, Ordering::Relaxed);
    let mut recent = match shared.recent_refusals.lock() {
        Ok(r) => r,
        Err(poisoned) => poisoned.into_inner(),
    };
    if recent.len() == REFUSALS_KEPT_MAX {
        recent.pop_front();
    }
    recent.push_back(why.to_owned());
    drop(recent);
    tracing::warn!(node = shared.node_id, peer = %from, reason = why, "QUIC peer refused");
    if let Some(c) = conn {
        c.close(quinn::VarInt::from_u32(CLOSE_REFUSED), why.as_bytes());
    }
}

/// Reads and checks the hello; returns the peer's node id. `any_node` accepts a node that
/// is not a peer (replica streams: any broker of the cluster may follow).
async fn read_hello(
    shared: &Shared,
    conn: &quinn::Connection,
    stream: &mut quinn::RecvStream,
    any_node: bool,
) -> Result<i32, String> {
    let mut head = [0u8; 10];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| format!("no hello: {e}"))?;
    if &head[..4] != MAGIC || head[4] != VERSION {
        return Err("not a Tern hello (magic or version)".to_owned());
    }
    let node_id = i32::from_be_bytes([head[5], head[6], head[7], head[8]]);
    let id_len = head[9] as usize;
    if id_len > CLUSTER_ID_BYTES_MAX {
        return Err(format!("cluster id of {id_len} bytes"));
    }
    let mut cluster = vec![0u8; id_len];
    stream
        .read_exact(&mut cluster)
        .await
        .map_err(|e| format!("truncated hello: {e}"))?;
    if cluster != shared.cluster_id.as_bytes() {
        return Err(format!(
            "node {node_id} is in cluster {:?}, not {:?}",
            String::from_utf8_lossy(&cluster),
            shared.cluster_id
        ));
    }
    if !shared.peers.contains_key(&node_id) && !shared.accept_unlisted && !any_node {
        return Err(format!("node {node_id} is not one of this node's peers"));
    }
    let chain = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok());
    if !chain.is_some_and(|c| certificate_names_node(&c, node_id)) {
        return Err(format!(
            "the certificate does not name node {node_id} ({})",
            node_name(node_id)
        ));
    }
    Ok(node_id)
}

async fn serve_incoming(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Received>,
) {
    let from = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => return refuse(&shared, None, from, &format!("handshake failed: {e}")),
    };
    // A connection carries either frames (one unidirectional stream) or one replica stream
    // (bidirectional): whichever the peer opens first.
    let mut stream = tokio::select! {
        s = conn.accept_uni() => match s {
            Ok(s) => s,
            Err(_) => return, // closed before it sent anything
        },
        s = conn.accept_bi() => {
            if let Ok((send, recv)) = s {
                accept_replica_stream(&shared, conn, from, send, recv).await;
            }
            return;
        }
    };
    let peer = match read_hello(&shared, &conn, &mut stream, false).await {
        Ok(p) => p,
        Err(why) => return refuse(&shared, Some(&conn), from, &why),
    };
    loop {
        let mut head = [0u8; 5];
        if stream.read_exact(&mut head).await.is_err() {
            return; // the peer closed or went away
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if len == 0 || len - 1 > shared.frame_bytes_max {
            let why = format!(
                "frame of {len} bytes from node {peer} (at most {})",
                shared.frame_bytes_max + 1
            );
            return refuse(&shared, Some(&conn), from, &why);
        }
        let mut payload = vec![0u8; (len - 1) as usize];
        if stream.read_exact(&mut payload).await.is_err() {
            return;
        }
        shared.received_frames.fetch_add(1, Ordering::Relaxed);
        shared
            .received_bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        let frame = Received {
            from: peer,
            channel: head[4],
            payload: Bytes::from(payload),
        };
        if tx.send(frame).await.is_err() {
            return; // the owner is gone
        }
    }
}

/// Checks a replica stream's hello and shard and hands it to the owner.
async fn accept_replica_stream(
    shared: &Arc<Shared>,
    conn: quinn::Connection,
    from: SocketAddr,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let Some(stream) = check_replica_stream(shared, conn, from, send, recv).await else {
        return;
    };
    let owner = match shared.replica_streams.lock() {
        Ok(s) => s.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let Some(owner) = owner else {
        return refuse(
            shared,
            Some(&stream.connection),
            from,
            "this node serves no replica streams",
        );
    };
    if let Err(mpsc::error::SendError(s)) = owner.send(stream).await {
        refuse(
            shared,
            Some(&s.connection),
            from,
            "the replica stream owner is gone",
        );
    }
}

/// Reads a replica stream's hello and shard index; `None` once it was refused.
async fn check_replica_stream(
    shared: &Arc<Shared>,
    conn: quinn::Connection,
    from: SocketAddr,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Option<ReplicaStream> {
    let peer = match read_hello(shared, &conn, &mut recv, true).await {
        Ok(p) => p,
        Err(why) => {
            refuse(shared, Some(&conn), from, &why);
            return None;
        }
    };
    let mut shard = [0u8; 2];
    if recv.read_exact(&mut shard).await.is_err() {
        refuse(shared, Some(&conn), from, "replica stream without a shard");
        return None;
    }
    Some(ReplicaStream {
        peer,
        shard: u16::from_be_bytes(shard),
        send,
        recv,
        connection: conn,
    })
}

/// What a shard's own QUIC endpoint is made of: the node's TLS configurations and
/// identity. Cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct ShardEndpoints {
    shared: Arc<Shared>,
    endpoint_config: quinn::EndpointConfig,
    server: quinn::ServerConfig,
    client: quinn::ClientConfig,
}

impl ShardEndpoints {
    /// Makes `socket` a QUIC endpoint that serves replica streams and dials them, driven
    /// on the current thread's tokio runtime: a shard calls it on its own thread, so the
    /// endpoint's UDP socket, its connections and the streams they carry are all handled
    /// there, with no other thread in the way. Replica streams that followers open to it
    /// arrive on the returned receiver, checked as the node's endpoint checks them.
    pub fn bind(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<(ShardEndpoint, mpsc::Receiver<ReplicaStream>)> {
        let mut endpoint = quinn::Endpoint::new(
            self.endpoint_config.clone(),
            Some(self.server.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        endpoint.set_default_client_config(self.client.clone());
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept_shard_streams(
            endpoint.clone(),
            self.shared.clone(),
            tx,
        ));
        let dialer = ReplicaDialer {
            endpoint: endpoint.clone(),
            hello: encode_hello(self.shared.node_id, &self.shared.cluster_id),
        };
        Ok((ShardEndpoint { endpoint, dialer }, rx))
    }
}

/// A shard's own QUIC endpoint (see [`ShardEndpoints::bind`]); closed when dropped.
#[derive(Debug)]
pub struct ShardEndpoint {
    endpoint: quinn::Endpoint,
    dialer: ReplicaDialer,
}

impl ShardEndpoint {
    /// Dials replica streams from this endpoint (their connections run on its thread).
    pub fn dialer(&self) -> ReplicaDialer {
        self.dialer.clone()
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

impl Drop for ShardEndpoint {
    fn drop(&mut self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"shard stopped");
    }
}

/// A shard endpoint's accept loop: every connection must open one replica stream.
async fn accept_shard_streams(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    tx: mpsc::Sender<ReplicaStream>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let (shared, tx) = (shared.clone(), tx.clone());
        tokio::spawn(async move {
            let from = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => return refuse(&shared, None, from, &format!("handshake failed: {e}")),
            };
            let Ok((send, recv)) = conn.accept_bi().await else {
                return; // closed before it opened its stream
            };
            let Some(stream) = check_replica_stream(&shared, conn, from, send, recv).await else {
                return;
            };
            if let Err(mpsc::error::SendError(s)) = tx.send(stream).await {
                refuse(&shared, Some(&s.connection), from, "the shard is stopping");
            }
        });
    }
}

/// Keeps a stream to `peer` and writes its queued frames; reconnects with backoff.
async fn peer_sender(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    peer: i32,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<(u8, Bytes)>,
) {
    let hello = encode_hello(shared.node_id, &shared.cluster_id);
    let mut backoff_ms = BACKOFF_MIN_MS;
    // Dial on the first frame, not before: a peer that is never written to is never dialled.
    let Some(mut pending) = rx.recv().await else {
        return;
    };
    loop {
        let stream = async {
            let conn = endpoint
                .connect(addr, &node_name(peer))
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
            s.write_all(&hello).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((conn, s))
        }
        .await;
        let (_conn, mut stream) = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(node = shared.node_id, peer, %addr, error = %e, "QUIC dial failed");
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
                // What queued meanwhile is stale for a lossy protocol: keep only the newest.
                while let Ok(f) = rx.try_recv() {
                    pending = f;
                }
                continue;
            }
        };
        backoff_ms = BACKOFF_MIN_MS;
        loop {
            let (channel, payload) = &pending;
            let head = frame_header(*channel, payload.len());
            if stream.write_all(&head).await.is_err() || stream.write_all(payload).await.is_err() {
                break; // reconnect, then send this frame again
            }
            pending = match rx.recv().await {
                Some(f) => f,
                None => {
                    let _ = stream.finish();
                    return;
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{dev_certificates, DevCertificates};
    use std::time::Instant;

    const DEADLINE: Duration = Duration::from_secs(20);

    /// Guards the byte layout stated in the module doc.
    #[test]
    fn hello_and_frame_layout() {
        let h = encode_hello(258, "c1");
        assert_eq!(&h[..], b"TERN\x01\x00\x00\x01\x02\x02c1");
        assert_eq!(frame_header(7, 3), [0, 0, 0, 4, 7]);
    }

    fn any_port() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// A transport for `id` whose peers are `peers`, with `cert_of`'s certificate.
    fn node(
        dev: &DevCertificates,
        id: i32,
        cert_of: i32,
        cluster: &str,
        peers: &[(i32, SocketAddr)],
    ) -> (Transport, mpsc::Receiver<Received>) {
        let tls = dev.material(cert_of).unwrap().unwrap();
        let config = TransportConfig::new(id, cluster, any_port(), peers.iter().copied().collect());
        Transport::bind(config, &tls).unwrap()
    }

    async fn recv(rx: &mut mpsc::Receiver<Received>) -> Received {
        tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("a frame within the deadline")
            .expect("the transport is running")
    }

    /// Waits until a refusal whose reason contains `why` is recorded.
    async fn wait_refused(t: &Transport, why: &str) {
        let start = Instant::now();
        while !t.recent_refusals().iter().any(|r| r.contains(why)) {
            assert!(
                start.elapsed() < DEADLINE,
                "no refusal with {why:?}: {:?}",
                t.recent_refusals()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Guards delivery: frames between three nodes arrive from the right sender, on their
    /// channel, in order; a frame to an unknown node or too large is refused at once.
    #[tokio::test]
    async fn three_nodes_exchange_ordered_frames() {
        let dev = dev_certificates(&[1, 2, 3]).unwrap();
        // Bind first (peers unknown), then rebind with the ports learnt: simplest is to
        // reserve ports by binding UDP sockets and releasing them.
        let ports: Vec<SocketAddr> = (0..3)
            .map(|_| {
                let s = std::net::UdpSocket::bind(any_port()).unwrap();
                s.local_addr().unwrap()
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, id) in [1, 2, 3].into_iter().enumerate() {
            let peers: BTreeMap<i32, SocketAddr> = [1, 2, 3]
                .into_iter()
                .zip(ports.iter().copied())
                .filter(|(p, _)| *p != id)
                .collect();
            let tls = dev.material(id).unwrap().unwrap();
            let mut config = TransportConfig::new(id, "c1", ports[i], peers);
            config.frame_bytes_max = 1 << 20;
            nodes.push(Transport::bind(config, &tls).unwrap());
        }
        for n in 0..100u32 {
            nodes[0]
                .0
                .send(2, 5, Bytes::from(n.to_be_bytes().to_vec()))
                .unwrap();
            nodes[2]
                .0
                .send(2, 6, Bytes::from(n.to_be_bytes().to_vec()))
                .unwrap();
        }
        nodes[1].0.send(1, 0, Bytes::from_static(b"back")).unwrap();
        let (mut from1, mut from3) = (0u32, 0u32);
        while from1 < 100 || from3 < 100 {
            let f = recv(&mut nodes[1].1).await;
            let n = u32::from_be_bytes(f.payload[..].try_into().unwrap());
            match (f.from, f.channel) {
                (1, 5) => {
                    assert_eq!(n, from1);
                    from1 += 1;
                }
                (3, 6) => {
                    assert_eq!(n, from3);
                    from3 += 1;
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
        let back = recv(&mut nodes[0].1).await;
        assert_eq!(
            (back.from, back.channel, &back.payload[..]),
            (2, 0, &b"back"[..])
        );
        assert_eq!(
            nodes[0].0.send(9, 0, Bytes::new()),
            Err(SendError::UnknownPeer(9))
        );
        let big = Bytes::from(vec![0u8; (1 << 20) + 1]);
        assert!(matches!(
            nodes[0].0.send(2, 0, big),
            Err(SendError::TooLarge { .. })
        ));
        assert_eq!(nodes[1].0.received().0, 200);
        assert!(nodes.iter().all(|n| n.0.refused() == 0));
        for n in &nodes {
            n.0.close().await;
        }
    }

    /// Guards the refusals: a certificate from another CA, a node speaking for another, a
    /// node that is not a peer, another cluster, a garbage hello and an oversized frame are
    /// each refused and counted, and the good peer keeps being served.
    #[tokio::test]
    async fn bad_peers_are_refused_and_the_good_one_still_served() {
        let dev = dev_certificates(&[1, 2, 3, 9]).unwrap();
        let other_ca = dev_certificates(&[2]).unwrap();
        let server_port = {
            let s = std::net::UdpSocket::bind(any_port()).unwrap();
            s.local_addr().unwrap()
        };
        let tls = dev.material(1).unwrap().unwrap();
        let mut config = TransportConfig::new(
            1,
            "c1",
            server_port,
            [(2, any_port()), (3, any_port())].into_iter().collect(),
        );
        config.frame_bytes_max = 1024;
        let (server, mut rx) = Transport::bind(config, &tls).unwrap();
        let to_server = [(1, server_port)];
        let (good, _good_rx) = node(&dev, 2, 2, "c1", &to_server);
        let check_good = |n: u8| {
            good.send(1, 0, Bytes::from(vec![n])).unwrap();
        };
        check_good(0);
        assert_eq!(recv(&mut rx).await.payload[..], [0]);

        // Another CA: the handshake fails.
        let stranger = {
            let m = other_ca.material(2).unwrap().unwrap();
            let c = TransportConfig::new(2, "c1", any_port(), to_server.into_iter().collect());
            Transport::bind(c, &m).unwrap().0
        };
        stranger.send(1, 0, Bytes::from_static(b"x")).unwrap();
        wait_refused(&server, "handshake failed").await;
        // Node 3 with node 2's certificate.
        let (liar, _) = node(&dev, 3, 2, "c1", &to_server);
        liar.send(1, 0, Bytes::from_static(b"x")).unwrap();
        wait_refused(&server, "does not name node 3").await;
        // Node 9: a valid certificate, not a peer.
        let (outsider, _) = node(&dev, 9, 9, "c1", &to_server);
        outsider.send(1, 0, Bytes::from_static(b"x")).unwrap();
        wait_refused(&server, "node 9 is not one of this node's peers").await;
        // Another cluster.
        let (other_cluster, _) = node(&dev, 3, 3, "c2", &to_server);
        other_cluster.send(1, 0, Bytes::from_static(b"x")).unwrap();
        wait_refused(&server, "in cluster \"c2\"").await;
        // An oversized frame from a known peer.
        let (big, _) = node(&dev, 3, 3, "c1", &to_server);
        big.send(1, 0, Bytes::from(vec![7u8; 4096])).unwrap();
        wait_refused(&server, "frame of 4097 bytes from node 3").await;
        // A garbage hello, written by hand over a valid connection.
        let raw = {
            let m = dev.material(3).unwrap().unwrap();
            let mut e = quinn::Endpoint::client(any_port()).unwrap();
            e.set_default_client_config(m.client_config().unwrap());
            e
        };
        let conn = raw
            .connect(server_port, &node_name(1))
            .unwrap()
            .await
            .unwrap();
        let mut s = conn.open_uni().await.unwrap();
        s.write_all(b"GARBAGE-GARBAGE").await.unwrap();
        wait_refused(&server, "not a Tern hello").await;

        check_good(1);
        assert_eq!(recv(&mut rx).await.payload[..], [1]);
        assert!(server.refused() >= 6);
        assert!(
            rx.try_recv().is_err(),
            "nothing from a refused peer was delivered"
        );
    }
}
