//! A cluster node's driver: the thread that connects the IO-free [`Controller`] to the QUIC
//! [`Transport`], the durable Raft log and a clock, and that plays this node's broker role
//! towards the controller (registration, heartbeats, requests).
//!
//! Every node of the cluster is a voter (`process.roles = "broker,controller"`), so every
//! node applies the committed metadata log itself and reads its own copy of the image: the
//! broker side publishes it in a [`NodeView`] (a `watch` channel any runtime can read).
//!
//! Requests (`CreateTopics`, `AllocateProducerIds`, …) go to the controller leader: handled
//! by the local controller when it leads, else sent over QUIC to the leader, and retried on
//! `NOT_CONTROLLER` or a lost frame until `request_timeout_ms` passes.
//!
//! Channels on the transport: [`CHANNEL_RAFT`] carries Raft messages between voters,
//! [`CHANNEL_CONTROL`] broker requests to the leader and its replies.
//!
//! # Invariants
//! * A Raft persist batch is written and synced before `handle_persisted` acknowledges it,
//!   and the controller holds back every message that depends on unsynced state.
//! * Each request gets exactly one answer: the controller's reply, or a timeout.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::codec::Frame;
use crate::controller::{BrokerRequest, BrokerResponse, Controller, ControllerConfig, RequestId};
use crate::decide::{ControllerError, HeartbeatRequest, RegisterBrokerRequest};
use crate::image::{BrokerId, Endpoint, MetadataImage};
use crate::quorum::QuorumLog;
use crate::tls::TlsMaterial;
use crate::transport::{Received, Transport, TransportConfig};

/// Raft messages between voters.
pub const CHANNEL_RAFT: u8 = 0;
/// The listener name of a node's QUIC endpoint in its broker registration.
pub const CONTROLLER_LISTENER: &str = "CONTROLLER";
/// The listener names of a node's shard endpoints in its broker registration: shard `k`
/// serves replica streams at `REPLICA-k` (see `replication/PROTOCOL.md`).
pub const REPLICA_LISTENER_PREFIX: &str = "REPLICA-";
/// The shortest wait for the answer to this broker's own registration or heartbeat before
/// it is sent again (at least the heartbeat interval).
const OWN_REQUEST_TIMEOUT_MS_MIN: u64 = 1000;
/// Broker requests to the controller leader, and its replies.
pub const CHANNEL_CONTROL: u8 = 1;

/// Most requests waiting for a leader before new ones are refused.
const WAITING_REQUESTS_MAX: usize = 4096;
/// How often the driver wakes when nothing else is due.
const IDLE_WAKE_MS: u64 = 100;
/// How often a broker-only node asks a voter for a newer image.
const METADATA_POLL_MS: u64 = 100;

/// What the driver needs.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub node_id: BrokerId,
    pub cluster_id: String,
    /// The CONTROLLER listener (UDP) to bind.
    pub listen: SocketAddr,
    /// Every voter's CONTROLLER address (this node's included when it is one).
    pub voters: BTreeMap<BrokerId, SocketAddr>,
    /// The controller settings when this node is a voter (`process.roles` has
    /// `controller`); `None` for a broker-only node, which fetches the committed image from
    /// the voters instead of replicating the Raft log.
    pub controller: Option<ControllerConfig>,
    /// This broker's Kafka listeners, registered with the controller.
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// `broker.heartbeat.interval.ms`
    pub heartbeat_interval_ms: u64,
    /// How long a request may wait for a leader and its reply.
    pub request_timeout_ms: u64,
}

/// What the node publishes: the committed image and this broker's standing.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub image: Arc<MetadataImage>,
    /// The controller leader this node knows of.
    pub controller_leader: Option<BrokerId>,
    /// This broker's epoch once registered.
    pub broker_epoch: Option<i64>,
}

/// Why a request got no reply from the controller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("no reply from the controller within {0} ms")]
    Timeout(u64),
    #[error("the cluster node is stopped")]
    Stopped,
    #[error("too many requests wait for a controller leader")]
    Busy,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("controller: {0}")]
    Controller(#[from] crate::controller::StartError),
    #[error("raft log: {0}")]
    Log(String),
    #[error(
        "node {0}: a voter needs controller settings and a Raft log, a broker-only node neither"
    )]
    NotVoter(BrokerId),
    #[error("the node thread: {0}")]
    Thread(String),
}

type Reply = oneshot::Sender<Result<BrokerResponse, RequestError>>;

enum Command {
    Request(BrokerRequest, Reply),
    Stop(oneshot::Sender<()>),
}

/// A running cluster node.
#[derive(Debug)]
pub struct ClusterNode {
    node_id: BrokerId,
    commands: mpsc::UnboundedSender<Command>,
    view: watch::Receiver<Arc<NodeView>>,
    local_addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
    dialer: crate::transport::ReplicaDialer,
    replica_streams: std::sync::Mutex<Option<mpsc::Receiver<crate::transport::ReplicaStream>>>,
    shard_endpoints: crate::transport::ShardEndpoints,
}

impl ClusterNode {
    /// Starts the driver thread (an io_uring runtime of its own), which opens the Raft log
    /// with `open_log` (a voter's: `None` on a broker-only node), recovers it and binds the
    /// transport; returns once that is done.
    pub fn start<L, F, Fut>(
        settings: NodeSettings,
        tls: TlsMaterial,
        open_log: Option<F>,
    ) -> Result<Self, NodeError>
    where
        L: QuorumLog + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<L, String>>,
    {
        let voter = settings.voters.contains_key(&settings.node_id);
        if voter != settings.controller.is_some() || voter != open_log.is_some() {
            return Err(NodeError::NotVoter(settings.node_id));
        }
        let node_id = settings.node_id;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (view_tx, view) = watch::channel(Arc::new(NodeView::default()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let name = format!("tern-cluster-{}", settings.node_id);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // quinn runs on tokio's reactor inside tokio-uring's runtime; the Raft log on
                // the ring.
                let rt = match tern_engine::storage::uring::new_runtime() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(NodeError::Thread(e.to_string())));
                        return;
                    }
                };
                rt.block_on(async move {
                    let log = match open_log {
                        Some(open) => match open().await {
                            Ok(log) => Some(log),
                            Err(e) => {
                                let _ = ready_tx.send(Err(NodeError::Log(e)));
                                return;
                            }
                        },
                        None => None,
                    };
                    let driver = match Driver::new(settings, &tls, log, view_tx).await {
                        Ok(d) => d,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let ready = driver
                        .transport
                        .local_addr()
                        .map(|addr| {
                            let t = &driver.transport;
                            (
                                addr,
                                t.replica_dialer(),
                                t.replica_streams(),
                                t.shard_endpoints(),
                            )
                        })
                        .map_err(|e| NodeError::Thread(e.to_string()));
                    let _ = ready_tx.send(ready);
                    driver.run(command_rx).await;
                });
            })
            .map_err(|e| NodeError::Thread(e.to_string()))?;
        let (local_addr, dialer, streams, shard_endpoints) = ready_rx
            .recv()
            .map_err(|_| NodeError::Thread("the node thread ended at start".into()))??;
        Ok(ClusterNode {
            node_id,
            commands,
            view,
            local_addr,
            thread: Some(thread),
            dialer,
            replica_streams: std::sync::Mutex::new(Some(streams)),
            shard_endpoints,
        })
    }

    /// Opens replica streams to other nodes (from any thread).
    pub fn replica_dialer(&self) -> crate::transport::ReplicaDialer {
        self.dialer.clone()
    }

    /// What a shard binds its own replica endpoint with.
    pub fn shard_endpoints(&self) -> crate::transport::ShardEndpoints {
        self.shard_endpoints.clone()
    }

    /// The replica streams followers open to this node; the first call takes them.
    pub fn take_replica_streams(&self) -> Option<mpsc::Receiver<crate::transport::ReplicaStream>> {
        match self.replica_streams.lock() {
            Ok(mut s) => s.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }

    /// The bound CONTROLLER address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The latest published view.
    pub fn view(&self) -> Arc<NodeView> {
        self.view.borrow().clone()
    }

    /// A receiver of every newly published view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<NodeView>> {
        self.view.clone()
    }

    /// Sends `request` to the controller leader; the answer arrives on the receiver.
    pub fn request(
        &self,
        request: BrokerRequest,
    ) -> oneshot::Receiver<Result<BrokerResponse, RequestError>> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Command::Request(_, tx))) =
            self.commands.send(Command::Request(request, tx))
        {
            let _ = tx.send(Err(RequestError::Stopped));
        }
        rx
    }

    /// Controlled shutdown: asks the controller to move this broker's leaderships away (a
    /// partition with no other in-sync replica is left without a leader) and waits for the
    /// answer, at most `timeout`. Call before [`ClusterNode::stop`] on SIGTERM.
    pub fn controlled_shutdown(&self, timeout: Duration) -> Result<(), RequestError> {
        let view = self.view();
        let Some(broker_epoch) = view.broker_epoch else {
            return Ok(()); // never registered: nothing to move
        };
        if view.controller_leader.is_none() {
            // No quorum to ask (the last voters stopping): nothing can move anyway.
            return Err(RequestError::Timeout(0));
        }
        let broker_id = self.node_id;
        let rx = self.request(BrokerRequest::ControlledShutdown {
            broker_id,
            broker_epoch,
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|_| RequestError::Stopped)?;
        let timeout_ms = timeout.as_millis() as u64;
        match rt.block_on(async { tokio::time::timeout(timeout, rx).await }) {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(RequestError::Stopped),
            Err(_) => Err(RequestError::Timeout(timeout_ms)),
        }
    }

    /// Stops the driver and waits for its thread.
    pub fn stop(mut self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let (tx, _rx) = oneshot::channel();
            let _ = self.commands.send(Command::Stop(tx));
            let _ = t.join();
        }
    }
}

/// Who is waiting for a request the local controller handles.
enum Origin {
    /// A request of this node: retried on NOT_CONTROLLER until its deadline.
    Local(Pending),
    /// A request another node sent: answered with its id.
    Remote { node: BrokerId, request_id: u64 },
}

struct Pending {
    request: BrokerRequest,
    reply: Reply,
    deadline: Instant,
}

/// The broker's own standing with the controller.
#[derive(Default)]
struct BrokerState {
    incarnation_id: [u8; 16],
    epoch: Option<i64>,
    registering: bool,
    heartbeat_in_flight: bool,
    next_heartbeat: Option<Instant>,
    next_register: Option<Instant>,
}

/// A voter's share of the driver.
struct Voter<L> {
    controller: Controller,
    log: L,
}

/// A broker-only node's share: the image fetched from the voters.
struct Observer {
    image: Arc<MetadataImage>,
    leader: Option<BrokerId>,
    next_poll: Instant,
    polling: bool,
    /// Which voter to ask while no leader is known (round robin).
    next_voter: usize,
    replies: Vec<oneshot::Receiver<Result<BrokerResponse, RequestError>>>,
}

struct Driver<L> {
    settings: NodeSettings,
    transport: Transport,
    received: Option<mpsc::Receiver<Received>>,
    voter: Option<Voter<L>>,
    observer: Observer,
    view_tx: watch::Sender<Arc<NodeView>>,
    published_index: u64,
    published_leader: Option<BrokerId>,
    published_epoch: Option<i64>,
    start: Instant,
    next_request_id: RequestId,
    /// Requests the local controller handles, by the id it was given.
    handled: BTreeMap<RequestId, Origin>,
    /// Requests sent to a remote leader, by the id in the frame.
    sent: BTreeMap<RequestId, (BrokerId, Pending)>,
    /// Requests waiting for a leader.
    waiting: VecDeque<Pending>,
    broker: BrokerState,
    /// Broker-side requests of this node (registration, heartbeat) in flight.
    own: Vec<(
        OwnRequest,
        oneshot::Receiver<Result<BrokerResponse, RequestError>>,
    )>,
}

#[derive(Clone, Copy)]
enum OwnRequest {
    Register,
    Heartbeat,
}

impl<L: QuorumLog> Driver<L> {
    async fn new(
        settings: NodeSettings,
        tls: &TlsMaterial,
        log: Option<L>,
        view_tx: watch::Sender<Arc<NodeView>>,
    ) -> Result<Self, NodeError> {
        let peers: BTreeMap<BrokerId, SocketAddr> = settings
            .voters
            .iter()
            .filter(|(id, _)| **id != settings.node_id)
            .map(|(id, a)| (*id, *a))
            .collect();
        let mut config = TransportConfig::new(
            settings.node_id,
            &settings.cluster_id,
            settings.listen,
            peers,
        );
        // A voter hears from brokers that are not voters.
        config.accept_unlisted = settings.controller.is_some();
        let (transport, received) = Transport::bind(config, tls)?;
        let voter = match (log, &settings.controller) {
            (Some(log), Some(config)) => {
                let recovered = log
                    .recover()
                    .await
                    .map_err(|e| NodeError::Log(e.to_string()))?;
                let logger = slog::Logger::root(slog::Discard, slog::o!());
                let controller = Controller::new(config.clone(), recovered, &logger)?;
                Some(Voter { controller, log })
            }
            _ => None,
        };
        Ok(Driver {
            transport,
            received: Some(received),
            voter,
            observer: Observer {
                image: Arc::new(MetadataImage::default()),
                leader: None,
                next_poll: Instant::now(),
                polling: false,
                next_voter: 0,
                replies: Vec::new(),
            },
            view_tx,
            published_index: u64::MAX,
            published_leader: None,
            published_epoch: None,
            start: Instant::now(),
            next_request_id: 1,
            handled: BTreeMap::new(),
            sent: BTreeMap::new(),
            waiting: VecDeque::new(),
            broker: BrokerState {
                incarnation_id: rand::random(),
                ..BrokerState::default()
            },
            own: Vec::new(),
            settings,
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let Some(mut received) = self.received.take() else {
            return;
        };
        loop {
            self.drain().await;
            let wake_ms = self
                .voter
                .as_ref()
                .and_then(|v| v.controller.poll_timeout())
                .map_or(IDLE_WAKE_MS, |t| t.saturating_sub(self.now_ms()))
                .min(IDLE_WAKE_MS);
            tokio::select! {
                frame = received.recv() => match frame {
                    Some(f) => self.on_frame(f),
                    None => return,
                },
                command = commands.recv() => match command {
                    Some(Command::Request(request, reply)) => {
                        let deadline = Instant::now()
                            + Duration::from_millis(self.settings.request_timeout_ms);
                        self.route(Pending { request, reply, deadline });
                    }
                    Some(Command::Stop(done)) => {
                        self.transport.close().await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                _ = tokio::time::sleep(Duration::from_millis(wake_ms)) => {}
            }
            let now = self.now_ms();
            if let Some(v) = self.voter.as_mut() {
                v.controller.handle_tick(now);
            }
            self.observe();
            self.own_replies();
            self.broker_duties();
            self.expire();
        }
    }

    /// Acts on everything the controller has ready, then publishes the view.
    async fn drain(&mut self) {
        while let Some(v) = self.voter.as_mut() {
            let mut progressed = false;
            while let Some(batch) = v.controller.poll_persist() {
                progressed = true;
                let written = v.log.write(&batch).await;
                let ok = match written {
                    Ok(()) => v.log.sync().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = ok {
                    // A Raft log that cannot be made durable cannot vote or lead safely.
                    tracing::error!(node = self.settings.node_id, error = %e,
                        "the controller's Raft log cannot be written; the process stops");
                    std::process::exit(70);
                }
                let now = self.start.elapsed().as_millis() as u64;
                v.controller.handle_persisted(batch.id, now);
            }
            while let Some((to, bytes)) = v.controller.poll_transmit() {
                progressed = true;
                // Raft retries what is lost; a full queue is a lost message.
                let _ = self.transport.send(to, CHANNEL_RAFT, bytes);
            }
            let mut replies = Vec::new();
            while let Some(r) = v.controller.poll_reply() {
                replies.push(r);
            }
            for (id, result) in replies {
                progressed = true;
                self.on_reply(id, result);
            }
            if !progressed {
                break;
            }
        }
        self.retry_waiting();
        self.publish();
    }

    /// The committed image this node knows.
    fn image(&self) -> &MetadataImage {
        match &self.voter {
            Some(v) => v.controller.image(),
            None => &self.observer.image,
        }
    }

    /// The controller leader this node knows.
    fn leader(&self) -> Option<BrokerId> {
        match &self.voter {
            Some(v) => v.controller.role().leader,
            None => self.observer.leader,
        }
    }

    fn publish(&mut self) {
        let index = self.image().last_applied_index;
        let leader = self.leader();
        if index == self.published_index
            && leader == self.published_leader
            && self.broker.epoch == self.published_epoch
        {
            return;
        }
        self.published_index = index;
        self.published_leader = leader;
        self.published_epoch = self.broker.epoch;
        let image = match &self.voter {
            Some(v) => Arc::new(v.controller.image().clone()),
            None => self.observer.image.clone(),
        };
        let view = NodeView {
            image,
            controller_leader: leader,
            broker_epoch: self.broker.epoch,
        };
        self.view_tx.send_replace(Arc::new(view));
    }

    fn on_frame(&mut self, f: Received) {
        let now = self.now_ms();
        match f.channel {
            CHANNEL_RAFT => match self.voter.as_mut() {
                Some(v) => {
                    if let Err(e) = v.controller.handle_raft_message(f.from, &f.payload, now) {
                        tracing::warn!(node = self.settings.node_id, error = %e,
                            "Raft frame refused");
                    }
                }
                None => tracing::warn!(
                    node = self.settings.node_id,
                    from = f.from,
                    "Raft frame to a broker-only node dropped"
                ),
            },
            CHANNEL_CONTROL => match Frame::decode(&f.payload) {
                Ok(Frame::Request {
                    request_id,
                    request,
                }) => {
                    self.learn_peer(f.from, &request);
                    let id = self.next_id();
                    self.handled.insert(
                        id,
                        Origin::Remote {
                            node: f.from,
                            request_id,
                        },
                    );
                    match self.voter.as_mut() {
                        Some(v) => v.controller.handle_request(id, request, now),
                        None => {
                            let leader_id = self.observer.leader;
                            self.on_reply(id, Err(ControllerError::NotController { leader_id }));
                        }
                    }
                }
                Ok(Frame::Reply { request_id, reply }) => {
                    if let Some((_, p)) = self.sent.remove(&request_id) {
                        self.finish(p, reply);
                    }
                }
                Ok(Frame::Raft(_)) | Err(_) => {
                    tracing::warn!(
                        node = self.settings.node_id,
                        from = f.from,
                        "control frame refused: not a request or reply"
                    );
                }
            },
            other => {
                tracing::warn!(
                    node = self.settings.node_id,
                    from = f.from,
                    channel = other,
                    "frame on an unknown channel dropped"
                );
            }
        }
    }

    fn next_id(&mut self) -> RequestId {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    /// Sends a request to the leader, or parks it until one is known.
    fn route(&mut self, p: Pending) {
        let now = self.now_ms();
        match self.leader() {
            Some(leader) if leader == self.settings.node_id && self.voter.is_some() => {
                let id = self.next_id();
                let request = p.request.clone();
                self.handled.insert(id, Origin::Local(p));
                if let Some(v) = self.voter.as_mut() {
                    v.controller.handle_request(id, request, now);
                }
            }
            Some(leader) => self.send_request(leader, p),
            None => {
                if self.waiting.len() >= WAITING_REQUESTS_MAX {
                    let _ = p.reply.send(Err(RequestError::Busy));
                } else {
                    self.waiting.push_back(p);
                }
            }
        }
    }

    /// Sends a request to `node` over the transport; its reply completes it.
    fn send_request(&mut self, node: BrokerId, p: Pending) {
        {
            let leader = node;
            let id = self.next_id();
            let frame = Frame::Request {
                request_id: id,
                request: p.request.clone(),
            };
            match frame.to_bytes() {
                Ok(bytes) => {
                    // A lost frame shows as no reply: retried at the deadline check.
                    let _ = self.transport.send(leader, CHANNEL_CONTROL, bytes);
                    self.sent.insert(id, (leader, p));
                }
                Err(e) => {
                    let reason = format!("cannot encode the request: {e}");
                    let _ = p.reply.send(Err(RequestError::Controller(
                        ControllerError::InvalidRequest { reason },
                    )));
                }
            }
        }
    }

    /// A voter replies to brokers it was not configured with: their CONTROLLER address
    /// comes with their registration, or from the image once they are registered.
    fn learn_peer(&mut self, node: BrokerId, request: &BrokerRequest) {
        if self.voter.is_none() || self.transport.has_peer(node) {
            return;
        }
        let from_request = match request {
            BrokerRequest::RegisterBroker(r) => Some(r.endpoints.clone()),
            BrokerRequest::FetchMetadata { endpoints, .. } => Some(endpoints.clone()),
            _ => None,
        };
        let endpoints = from_request
            .or_else(|| self.image().broker(node).map(|b| b.endpoints.clone()))
            .unwrap_or_default();
        let addr = endpoints
            .iter()
            .filter(|e| e.listener == CONTROLLER_LISTENER)
            .find_map(|e| {
                use std::net::ToSocketAddrs;
                (e.host.as_str(), e.port).to_socket_addrs().ok()?.next()
            });
        match addr {
            Some(addr) => self.transport.add_peer(node, addr),
            None => {
                tracing::warn!(node = self.settings.node_id, from = node,
                "a request from a broker whose CONTROLLER address is unknown: no reply possible")
            }
        }
    }

    /// A broker-only node keeps its image fresh: it asks the leader (or, while none is
    /// known, each voter in turn) for the committed image when newer than its own.
    fn observe(&mut self) {
        if self.voter.is_some() {
            return;
        }
        let replies = std::mem::take(&mut self.observer.replies);
        for mut rx in replies {
            match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => self.observer.replies.push(rx),
                Ok(Ok(BrokerResponse::Metadata { image, leader })) => {
                    self.observer.polling = false;
                    if leader.is_some() {
                        self.observer.leader = leader;
                    }
                    if let Some(image) = image {
                        if image.last_applied_index > self.observer.image.last_applied_index {
                            self.observer.image = Arc::from(image);
                        }
                    }
                }
                Ok(_) | Err(oneshot::error::TryRecvError::Closed) => {
                    self.observer.polling = false;
                    self.observer.leader = None; // ask another voter next
                }
            }
        }
        let now = Instant::now();
        if self.observer.polling || now < self.observer.next_poll {
            return;
        }
        let target = match self.observer.leader {
            Some(l) => l,
            None => {
                let voters: Vec<BrokerId> = self.settings.voters.keys().copied().collect();
                if voters.is_empty() {
                    return;
                }
                let v = voters[self.observer.next_voter % voters.len()];
                self.observer.next_voter += 1;
                v
            }
        };
        self.observer.polling = true;
        self.observer.next_poll = now + Duration::from_millis(METADATA_POLL_MS);
        let (tx, rx) = oneshot::channel();
        let since_index = self.observer.image.last_applied_index;
        let timeout = Duration::from_millis(self.settings.request_timeout_ms.min(1000));
        self.send_request(
            target,
            Pending {
                request: BrokerRequest::FetchMetadata {
                    since_index,
                    endpoints: self.settings.endpoints.clone(),
                },
                reply: tx,
                deadline: now + timeout,
            },
        );
        self.observer.replies.push(rx);
    }

    fn retry_waiting(&mut self) {
        let Some(leader) = self.leader() else {
            return;
        };
        // Requests sent to a node that is no longer the leader (it died, or lost an
        // election) are sent again; the controller's answers are idempotent or say what
        // happened (a topic created by the first try exists).
        let stale: Vec<RequestId> = self
            .sent
            .iter()
            .filter(|(_, (to, p))| {
                *to != leader && !matches!(p.request, BrokerRequest::FetchMetadata { .. })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some((_, p)) = self.sent.remove(&id) {
                self.waiting.push_back(p);
            }
        }
        let waiting = std::mem::take(&mut self.waiting);
        for p in waiting {
            self.route(p);
        }
    }

    fn on_reply(&mut self, id: RequestId, result: Result<BrokerResponse, ControllerError>) {
        match self.handled.remove(&id) {
            Some(Origin::Local(p)) => self.finish(p, result),
            Some(Origin::Remote { node, request_id }) => {
                let frame = Frame::Reply {
                    request_id,
                    reply: result,
                };
                if let Ok(bytes) = frame.to_bytes() {
                    let _ = self.transport.send(node, CHANNEL_CONTROL, bytes);
                }
            }
            None => {}
        }
    }

    /// Delivers a reply, or routes the request again when the controller moved.
    fn finish(&mut self, p: Pending, result: Result<BrokerResponse, ControllerError>) {
        match result {
            Err(ControllerError::NotController { leader_id }) if Instant::now() < p.deadline => {
                if self.voter.is_none() {
                    // A broker-only node learns the leader from the refusal.
                    self.observer.leader = leader_id;
                }
                self.waiting.push_back(p);
            }
            r => {
                let _ = p.reply.send(r.map_err(RequestError::from));
            }
        }
    }

    /// Times out requests past their deadline; resends those whose frame may be lost.
    fn expire(&mut self) {
        let now = Instant::now();
        let timeout_ms = self.settings.request_timeout_ms;
        let expired: Vec<RequestId> = self
            .sent
            .iter()
            .filter(|(_, (_, p))| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((_, p)) = self.sent.remove(&id) {
                let _ = p.reply.send(Err(RequestError::Timeout(timeout_ms)));
            }
        }
        while self.waiting.front().is_some_and(|p| p.deadline <= now) {
            if let Some(p) = self.waiting.pop_front() {
                let _ = p.reply.send(Err(RequestError::Timeout(timeout_ms)));
            }
        }
    }

    /// Registers this broker, then heartbeats.
    fn broker_duties(&mut self) {
        let now = Instant::now();
        let request = match self.broker.epoch {
            None if !self.broker.registering
                && self.broker.next_register.is_none_or(|t| t <= now) =>
            {
                self.broker.registering = true;
                BrokerRequest::RegisterBroker(RegisterBrokerRequest {
                    broker_id: self.settings.node_id,
                    incarnation_id: self.broker.incarnation_id,
                    endpoints: self.settings.endpoints.clone(),
                    rack: self.settings.rack.clone(),
                    previous_broker_epoch: None,
                })
            }
            Some(epoch)
                if !self.broker.heartbeat_in_flight
                    && self.broker.next_heartbeat.is_none_or(|t| t <= now) =>
            {
                self.broker.heartbeat_in_flight = true;
                self.broker.next_heartbeat =
                    Some(now + Duration::from_millis(self.settings.heartbeat_interval_ms));
                BrokerRequest::BrokerHeartbeat(HeartbeatRequest {
                    broker_id: self.settings.node_id,
                    broker_epoch: epoch,
                    current_metadata_offset: self.image().last_applied_index as i64,
                    want_fence: false,
                    want_shutdown: false,
                })
            }
            _ => return,
        };
        let kind = match request {
            BrokerRequest::RegisterBroker(_) => OwnRequest::Register,
            _ => OwnRequest::Heartbeat,
        };
        let (tx, rx) = oneshot::channel();
        // Its own requests are sent again soon rather than waited for long: a frame lost
        // while the connection to the controller is being made again (this node or the
        // controller restarted) would otherwise keep it unregistered for the whole
        // request timeout.
        let timeout_ms = self.settings.request_timeout_ms.min(
            self.settings
                .heartbeat_interval_ms
                .max(OWN_REQUEST_TIMEOUT_MS_MIN),
        );
        let deadline = now + Duration::from_millis(timeout_ms);
        self.route(Pending {
            request,
            reply: tx,
            deadline,
        });
        self.own.push((kind, rx));
    }

    /// Takes the answers to this broker's own requests.
    fn own_replies(&mut self) {
        let own = std::mem::take(&mut self.own);
        for (kind, mut rx) in own {
            let result = match rx.try_recv() {
                Ok(r) => r,
                Err(oneshot::error::TryRecvError::Empty) => {
                    self.own.push((kind, rx));
                    continue;
                }
                Err(oneshot::error::TryRecvError::Closed) => Err(RequestError::Stopped),
            };
            let now = Instant::now();
            match (kind, result) {
                (OwnRequest::Register, Ok(BrokerResponse::RegisterBroker(r))) => {
                    tracing::info!(
                        node = self.settings.node_id,
                        broker_epoch = r.broker_epoch,
                        "broker registered with the controller"
                    );
                    self.broker.registering = false;
                    self.broker.epoch = Some(r.broker_epoch);
                    self.broker.next_heartbeat = Some(now);
                }
                (OwnRequest::Register, other) => {
                    tracing::debug!(node = self.settings.node_id, result = ?other,
                        "broker registration failed; retrying");
                    self.broker.registering = false;
                    self.broker.next_register = Some(now + Duration::from_millis(200));
                }
                (OwnRequest::Heartbeat, result) => {
                    self.broker.heartbeat_in_flight = false;
                    if let Err(RequestError::Controller(
                        ControllerError::StaleBrokerEpoch { .. }
                        | ControllerError::BrokerNotRegistered { .. },
                    )) = result
                    {
                        tracing::warn!(
                            node = self.settings.node_id,
                            "the controller no longer knows this broker's epoch: registering again"
                        );
                        self.broker.epoch = None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::CreateTopicRequest;
    use crate::quorum::MemQuorumLog;
    use crate::tls::dev_certificates;

    const DEADLINE: Duration = Duration::from_secs(30);

    fn reserve() -> SocketAddr {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    }

    /// Starts node `id`: a voter when it is in `voters`, else a broker-only node on `listen`.
    fn start_at(
        id: BrokerId,
        voters: &BTreeMap<BrokerId, SocketAddr>,
        dev: &crate::tls::DevCertificates,
        listen: SocketAddr,
    ) -> ClusterNode {
        let voter = voters.contains_key(&id);
        let controller = voter.then(|| {
            let mut c = ControllerConfig::new(id, voters.keys().copied().collect(), rand::random());
            c.broker_session_timeout_ms = 3000;
            c
        });
        let settings = NodeSettings {
            node_id: id,
            cluster_id: "test-cluster".into(),
            listen,
            voters: voters.clone(),
            controller,
            endpoints: vec![
                Endpoint {
                    listener: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9000 + id as u16,
                },
                Endpoint {
                    listener: CONTROLLER_LISTENER.into(),
                    host: listen.ip().to_string(),
                    port: listen.port(),
                },
            ],
            rack: None,
            heartbeat_interval_ms: 500,
            request_timeout_ms: 10_000,
        };
        let tls = dev.material(id).unwrap().unwrap();
        let open = voter.then_some(|| async { Ok::<_, String>(MemQuorumLog::default()) });
        ClusterNode::start(settings, tls, open).unwrap()
    }

    fn start(
        id: BrokerId,
        voters: &BTreeMap<BrokerId, SocketAddr>,
        dev: &crate::tls::DevCertificates,
    ) -> ClusterNode {
        start_at(id, voters, dev, voters[&id])
    }

    /// Polls `nodes` until `cond` holds for every view, or panics at the deadline.
    fn wait_views(nodes: &[&ClusterNode], what: &str, cond: impl Fn(&NodeView) -> bool) {
        let start = Instant::now();
        while !nodes.iter().all(|n| cond(&n.view())) {
            assert!(
                start.elapsed() < DEADLINE,
                "{what}: {:?}",
                nodes.iter().map(|n| n.view()).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn create(
        node: &ClusterNode,
        name: &str,
        partitions: i32,
    ) -> Result<BrokerResponse, RequestError> {
        let rx = node.request(BrokerRequest::CreateTopics(vec![CreateTopicRequest {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: 1,
            configs: BTreeMap::new(),
        }]));
        rx.blocking_recv().unwrap_or(Err(RequestError::Stopped))
    }

    /// Guards the driver over real QUIC: three nodes elect a controller, every broker
    /// registers and is unfenced, a topic created through any node is in every node's
    /// image, and after the leader stops the other two elect a new one that still creates
    /// topics.
    #[test]
    fn three_nodes_elect_register_and_survive_the_leader() {
        let dev = dev_certificates(&[1, 2, 3, 4]).unwrap();
        let voters: BTreeMap<BrokerId, SocketAddr> =
            [1, 2, 3].into_iter().map(|id| (id, reserve())).collect();
        let mut nodes: BTreeMap<BrokerId, ClusterNode> = voters
            .keys()
            .map(|&id| (id, start(id, &voters, &dev)))
            .collect();
        let all: Vec<&ClusterNode> = nodes.values().collect();
        wait_views(&all, "leader and three unfenced brokers", |v| {
            v.controller_leader.is_some()
                && v.broker_epoch.is_some()
                && v.image.brokers.len() == 3
                && v.image.brokers.values().all(|b| !b.fenced)
        });
        let leader = nodes[&1].view().controller_leader.unwrap();
        let follower = *voters.keys().find(|id| **id != leader).unwrap();
        match create(&nodes[&follower], "t1", 6) {
            Ok(BrokerResponse::CreateTopics(r)) => assert!(r[0].is_ok(), "{r:?}"),
            other => panic!("create t1: {other:?}"),
        }
        wait_views(&all, "t1 everywhere", |v| {
            v.image
                .topics
                .get("t1")
                .is_some_and(|t| t.partitions.len() == 6)
        });
        // Leaders are spread over the three brokers.
        let t1 = &nodes[&1].view().image.topics["t1"];
        let leaders: std::collections::BTreeSet<BrokerId> =
            t1.partitions.iter().map(|p| p.leader).collect();
        assert_eq!(leaders.len(), 3, "{t1:?}");
        // A duplicate is refused with Kafka's error.
        match create(&nodes[&leader], "t1", 1) {
            Ok(BrokerResponse::CreateTopics(r)) => {
                assert!(
                    matches!(r[0], Err(ControllerError::TopicAlreadyExists { .. })),
                    "{r:?}"
                )
            }
            other => panic!("duplicate: {other:?}"),
        }

        // A broker-only node (4): it fetches the image from the voters, registers, is
        // unfenced, and creates topics through the leader like any broker.
        let observer = start_at(4, &voters, &dev, reserve());
        let all: Vec<&ClusterNode> = nodes.values().chain([&observer]).collect();
        wait_views(&all, "four unfenced brokers everywhere", |v| {
            v.image.brokers.len() == 4 && v.image.brokers.values().all(|b| !b.fenced)
        });
        assert!(observer.view().broker_epoch.is_some());
        match create(&observer, "t4", 4) {
            Ok(BrokerResponse::CreateTopics(r)) => assert!(r[0].is_ok(), "{r:?}"),
            other => panic!("create t4 through the broker-only node: {other:?}"),
        }
        wait_views(&all, "t4 everywhere", |v| v.image.topics.contains_key("t4"));
        observer.stop();

        nodes.remove(&leader).unwrap().stop();
        let rest: Vec<&ClusterNode> = nodes.values().collect();
        wait_views(&rest, "a new leader", |v| {
            v.controller_leader.is_some_and(|l| l != leader)
        });
        let survivor = nodes.values().next().unwrap();
        match create(survivor, "t2", 2) {
            Ok(BrokerResponse::CreateTopics(r)) => assert!(r[0].is_ok(), "{r:?}"),
            other => panic!("create t2: {other:?}"),
        }
        wait_views(&rest, "t2 on the survivors", |v| {
            v.image.topics.contains_key("t2")
        });
        // The stopped broker is fenced after its session times out, its partitions re-led
        // or left without a leader (RF = 1: no other replica).
        wait_views(&rest, "the old leader fenced", |v| {
            v.image.brokers.get(&leader).is_some_and(|b| b.fenced)
        });
        let t1 = &nodes.values().next().unwrap().view().image.topics["t1"];
        for p in &t1.partitions {
            assert_ne!(p.leader, leader, "{p:?}");
            if p.replicas == vec![leader] {
                assert_eq!(p.leader, -1, "{p:?}");
            }
        }
        // Controlled shutdown of a live broker: its leaderships go at once (RF = 1: to no
        // leader), not when its session would expire.
        let leaving = *nodes.keys().next().unwrap();
        nodes[&leaving]
            .controlled_shutdown(Duration::from_secs(20))
            .unwrap();
        let rest: Vec<&ClusterNode> = nodes.values().collect();
        wait_views(&rest, "the leaving broker's partitions released", |v| {
            let b = &v.image.brokers[&leaving];
            b.in_controlled_shutdown
                && v.image.topics["t1"]
                    .partitions
                    .iter()
                    .all(|p| p.leader != leaving)
        });
        for (_, n) in nodes {
            n.stop();
        }
    }
}
