//! One controller node as an IO-free state machine: the Raft [`Quorum`], the committed
//! [`MetadataImage`], and, while it leads, the broker sessions and requests in flight.
//!
//! # Driving it
//! Inputs: [`Controller::handle_raft_message`] (bytes from a voter),
//! [`Controller::handle_request`] (a broker's request), [`Controller::handle_persisted`] (a
//! batch is durable) and [`Controller::handle_tick`] (the clock reached
//! [`Controller::poll_timeout`]). After any input, drain, in this order:
//! [`Controller::poll_persist`] (write and sync, then `handle_persisted`),
//! [`Controller::poll_transmit`] (frames to nodes), [`Controller::poll_reply`]. Time is
//! passed in as milliseconds of a monotonic clock; nothing here reads a clock.
//!
//! # What it owns
//! * The committed image: changed only by committed entries, in log order.
//! * While leader: a *speculative* image (the committed one plus every entry of its own log
//!   not yet applied), which decisions read so that requests in flight see each other; the
//!   broker sessions (soft state: a new leader gives every broker a full session timeout);
//!   the requests waiting for their entry to commit.
//!
//! # Invariants
//! * A request is answered once: after its entry commits (or, for a request that writes
//!   nothing, once everything proposed before it has committed), or with NOT_CONTROLLER when
//!   leadership is lost first.
//! * With nothing in flight the speculative image equals the committed one (checked).
//! * A broker is fenced by the leader only once its session is older than
//!   `broker_session_timeout_ms`.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, Frame};
use crate::decide::{self, ControllerError, TopicDefaults};
use crate::image::{BrokerId, ImageError, MetadataImage, MetadataRecord, TopicId};
use crate::quorum::{
    self, Committed, LogState, PersistBatch, Quorum, QuorumConfig, QuorumError, RoleState,
};

/// The driver's handle for one request; its reply carries the same id.
pub type RequestId = u64;

/// Most ticks replayed by one `handle_tick` after the driver fell behind.
const TICKS_PER_CALL_MAX: u32 = 100;

/// Controller settings, named after Kafka's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// `node.id`
    pub node_id: BrokerId,
    /// The ids of `controller.quorum.voters`.
    pub voters: Vec<BrokerId>,
    /// The Raft clock's period.
    pub tick_interval_ms: u64,
    /// `controller.quorum.election.timeout.ms`
    pub election_timeout_ms: u64,
    /// The leader's Raft heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`
    pub broker_session_timeout_ms: u64,
    /// Entries applied between two snapshots of the image (then the log is compacted).
    pub snapshot_interval_entries: u64,
    /// `auto.leader.rebalance.enable`
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds` × 1000
    pub leader_imbalance_check_interval_ms: u64,
    /// `num.partitions`
    pub num_partitions: i32,
    /// `default.replication.factor`
    pub default_replication_factor: i16,
    /// Requests waiting for a commit; more are refused (REQUEST_TIMED_OUT).
    pub requests_in_flight_max: usize,
    /// Bytes of entries per Raft append message.
    pub append_bytes_max: u64,
    /// Seeds topic ids and the election-timeout spread (random in production).
    pub seed: u64,
    /// Report every applied entry through [`Controller::poll_applied`] (for the simulator).
    pub trace_applied: bool,
}

impl ControllerConfig {
    pub fn new(node_id: BrokerId, voters: Vec<BrokerId>, seed: u64) -> Self {
        Self {
            node_id,
            voters,
            tick_interval_ms: 100,
            election_timeout_ms: 1000,
            heartbeat_interval_ms: 200,
            broker_session_timeout_ms: 9000,
            snapshot_interval_entries: 1000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
            num_partitions: 1,
            default_replication_factor: 1,
            requests_in_flight_max: 10_000,
            append_bytes_max: 1 << 20,
            seed,
            trace_applied: false,
        }
    }
}

/// A broker's request to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerRequest {
    RegisterBroker(decide::RegisterBrokerRequest),
    BrokerHeartbeat(decide::HeartbeatRequest),
    ControlledShutdown {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    CreateTopics(Vec<decide::CreateTopicRequest>),
    DeleteTopics(Vec<String>),
    CreatePartitions(Vec<decide::CreatePartitionsRequest>),
    SetTopicConfigs(Vec<decide::SetTopicConfigsRequest>),
    /// The dynamic broker defaults to become exactly these.
    SetBrokerConfigs(BTreeMap<String, String>),
    /// ElectLeaders; `None`: every partition.
    ElectLeaders {
        election: decide::ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    },
    AllocateProducerIds {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    AlterPartition(decide::AlterPartitionRequest),
    /// A broker that is not a voter asks for the committed image when it is newer than
    /// `since_index`; any voter answers (to the CONTROLLER address in `endpoints`).
    FetchMetadata {
        since_index: u64,
        endpoints: Vec<crate::image::Endpoint>,
    },
    /// The quorum's state as the leader sees it (DescribeQuorum); only the leader answers.
    DescribeQuorum,
}

/// The controller's answer to a [`BrokerRequest`] of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerResponse {
    RegisterBroker(decide::RegisterBrokerReply),
    BrokerHeartbeat(decide::HeartbeatReply),
    ControlledShutdown(decide::ControlledShutdownReply),
    CreateTopics(Vec<Result<decide::CreatedTopic, ControllerError>>),
    DeleteTopics(Vec<Result<TopicId, ControllerError>>),
    CreatePartitions(Vec<Result<(), ControllerError>>),
    SetTopicConfigs(Vec<Result<(), ControllerError>>),
    SetBrokerConfigs,
    ElectLeaders(Vec<decide::ElectionResult>),
    AllocateProducerIds(decide::ProducerIdsReply),
    AlterPartition,
    /// The committed image when newer than asked (else `None`), and the leader known.
    Metadata {
        image: Option<Box<MetadataImage>>,
        leader: Option<BrokerId>,
    },
    Quorum(QuorumState),
}

/// The controller quorum as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumState {
    pub leader_id: BrokerId,
    /// The Raft term (Kafka's leader epoch of `__cluster_metadata`).
    pub term: u64,
    /// The highest committed index (Kafka's high watermark of the metadata log).
    pub committed_index: u64,
    pub voters: Vec<VoterState>,
    /// The controller's clock when it answered (the clock of `last_heard_ms`).
    pub now_ms: u64,
}

/// One voter's replication state on the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterState {
    pub id: BrokerId,
    /// The highest index known to match the leader's log.
    pub matched_index: u64,
    /// When the leader last heard from this voter (the leader itself: now), if it has.
    pub last_heard_ms: Option<u64>,
}

/// Why an inbound Raft frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("frame from node {from}: {source}")]
    Decode { from: BrokerId, source: DecodeError },
    #[error("node {from} is not a voter of this quorum")]
    NotVoter { from: BrokerId },
    #[error("frame from node {from} is not a Raft message")]
    NotRaft { from: BrokerId },
    #[error("message from node {from} claims sender raft id {claimed} and recipient {to}")]
    Misaddressed {
        from: BrokerId,
        claimed: u64,
        to: u64,
    },
    #[error("raft refused the message from node {from}: {source}")]
    Raft { from: BrokerId, source: QuorumError },
}

/// Why a controller could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Quorum(#[from] QuorumError),
    #[error("the snapshot's image is unreadable: {0}")]
    Snapshot(#[from] DecodeError),
    #[error("the snapshot's image is at index {image} but the snapshot at {snapshot}")]
    SnapshotIndex { image: u64, snapshot: u64 },
    #[error("bad configuration: {0}")]
    Config(String),
}

/// One applied entry, reported with `trace_applied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedEntry {
    pub index: u64,
    pub term: u64,
    /// CRC32C of the entry's data.
    pub data_crc: u32,
    /// The applied image came from a snapshot, not an entry.
    pub from_snapshot: bool,
}

#[derive(Debug, Clone)]
struct Session {
    epoch: i64,
    deadline_ms: u64,
}

#[derive(Debug)]
struct Waiting {
    request_id: RequestId,
    /// The term of our own entry at this index, or `None` for a request that only waits.
    own_term: Option<u64>,
    reply: BrokerResponse,
}

#[derive(Debug)]
struct Leadership {
    term: u64,
    spec: MetadataImage,
    sessions: BTreeMap<BrokerId, Session>,
    waiting: BTreeMap<u64, Vec<Waiting>>,
    waiting_count: usize,
    next_rebalance_ms: u64,
}

/// One controller node; see the module doc.
#[derive(Debug)]
pub struct Controller {
    config: ControllerConfig,
    quorum: Quorum,
    image: MetadataImage,
    role: RoleState,
    leadership: Option<Leadership>,
    transmit: VecDeque<(BrokerId, Bytes)>,
    replies: VecDeque<(RequestId, Result<BrokerResponse, ControllerError>)>,
    applied: VecDeque<AppliedEntry>,
    now_ms: u64,
    next_tick_ms: Option<u64>,
    /// When each voter last sent this node a Raft message (for DescribeQuorum).
    last_heard_ms: BTreeMap<BrokerId, u64>,
    rng: StdRng,
    failure: Option<String>,
}

impl Controller {
    /// Starts from the durable Raft state (`LogState::default()` for a new node).
    pub fn new(
        config: ControllerConfig,
        recovered: LogState,
        logger: &slog::Logger,
    ) -> Result<Self, StartError> {
        let tick = config.tick_interval_ms.max(1);
        let election_ticks = (config.election_timeout_ms / tick) as usize;
        let heartbeat_ticks = ((config.heartbeat_interval_ms / tick) as usize).max(1);
        if election_ticks <= heartbeat_ticks {
            return Err(StartError::Config(
                "election timeout must exceed the heartbeat interval by a tick".into(),
            ));
        }
        let image = if recovered.snapshot.data.is_empty() {
            MetadataImage::default()
        } else {
            let image = codec::decode_image(&recovered.snapshot.data)?;
            let snapshot = recovered.snapshot_index();
            if image.last_applied_index != snapshot {
                return Err(StartError::SnapshotIndex {
                    image: image.last_applied_index,
                    snapshot,
                });
            }
            image
        };
        let quorum_config = QuorumConfig {
            node_id: config.node_id,
            voters: config.voters.clone(),
            election_ticks,
            heartbeat_ticks,
            append_bytes_max: config.append_bytes_max,
            appends_in_flight_max: 256,
            seed: config.seed,
        };
        let quorum = Quorum::new(quorum_config, recovered, logger)?;
        let mut c = Controller {
            rng: StdRng::seed_from_u64(config.seed ^ 0x7465_726e),
            config,
            role: quorum.role(),
            quorum,
            image,
            leadership: None,
            transmit: VecDeque::new(),
            replies: VecDeque::new(),
            applied: VecDeque::new(),
            now_ms: 0,
            next_tick_ms: None,
            last_heard_ms: BTreeMap::new(),
            failure: None,
        };
        c.drive();
        Ok(c)
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The committed image.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    pub fn role(&self) -> RoleState {
        self.role
    }

    /// The Raft glue, for status and diagnostics.
    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    pub fn is_leader(&self) -> bool {
        self.leadership.is_some()
    }

    /// Set when a committed snapshot could not be read: the node stops applying and must be
    /// restarted from a healthy peer's snapshot.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// A frame from node `from` (the transport has authenticated it).
    pub fn handle_raft_message(
        &mut self,
        from: BrokerId,
        frame: &[u8],
        now_ms: u64,
    ) -> Result<(), InboundError> {
        self.now_ms = self.now_ms.max(now_ms);
        if !self.config.voters.contains(&from) {
            return Err(InboundError::NotVoter { from });
        }
        let msg = match Frame::decode(frame) {
            Ok(Frame::Raft(m)) => m,
            Ok(_) => return Err(InboundError::NotRaft { from }),
            Err(source) => return Err(InboundError::Decode { from, source }),
        };
        if msg.from != quorum::raft_id(from) || msg.to != quorum::raft_id(self.config.node_id) {
            return Err(InboundError::Misaddressed {
                from,
                claimed: msg.from,
                to: msg.to,
            });
        }
        self.last_heard_ms.insert(from, self.now_ms);
        let r = self.quorum.step(msg);
        self.drive();
        r.map_err(|source| InboundError::Raft { from, source })
    }

    /// The driver made every batch up to `batch_id` durable.
    pub fn handle_persisted(&mut self, batch_id: u64, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.quorum.handle_persisted(batch_id);
        self.drive();
    }

    /// The clock moved; call at [`Controller::poll_timeout`] at the latest.
    pub fn handle_tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let interval = self.config.tick_interval_ms.max(1);
        let mut next = self.next_tick_ms.unwrap_or(self.now_ms + interval);
        let mut ticks = 0;
        while next <= self.now_ms && ticks < TICKS_PER_CALL_MAX {
            self.quorum.tick();
            self.drive();
            next += interval;
            ticks += 1;
        }
        if next <= self.now_ms {
            next = self.now_ms + interval;
        }
        self.next_tick_ms = Some(next);
        self.expire_sessions();
        self.maybe_rebalance();
        self.drive();
    }

    /// When to call [`Controller::handle_tick`] next.
    pub fn poll_timeout(&self) -> Option<u64> {
        Some(
            self.next_tick_ms
                .unwrap_or(self.now_ms + self.config.tick_interval_ms.max(1)),
        )
    }

    pub fn poll_persist(&mut self) -> Option<PersistBatch> {
        self.quorum.poll_persist()
    }

    /// A frame for node `.0`, to send after every batch polled before it is durable (the
    /// controller only releases frames whose batches were acknowledged).
    pub fn poll_transmit(&mut self) -> Option<(BrokerId, Bytes)> {
        self.transmit.pop_front()
    }

    pub fn poll_reply(&mut self) -> Option<(RequestId, Result<BrokerResponse, ControllerError>)> {
        self.replies.pop_front()
    }

    /// Applied entries (with `trace_applied` only).
    pub fn poll_applied(&mut self) -> Option<AppliedEntry> {
        self.applied.pop_front()
    }

    /// A broker's request; answered through [`Controller::poll_reply`].
    pub fn handle_request(&mut self, request_id: RequestId, request: BrokerRequest, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if let Err(e) = self.try_request(request_id, request) {
            self.replies.push_back((request_id, Err(e)));
        }
        self.drive();
    }

    fn not_controller(&self) -> ControllerError {
        ControllerError::NotController {
            leader_id: self.role.leader.filter(|_| !self.is_leader()),
        }
    }

    fn try_request(
        &mut self,
        request_id: RequestId,
        request: BrokerRequest,
    ) -> Result<(), ControllerError> {
        if self.failure.is_some() {
            return Err(self.not_controller());
        }
        if let BrokerRequest::FetchMetadata { since_index, .. } = request {
            // Committed state: every voter may answer, leader or not.
            let image =
                (self.image.last_applied_index > since_index).then(|| Box::new(self.image.clone()));
            let leader = self.role.leader;
            self.replies
                .push_back((request_id, Ok(BrokerResponse::Metadata { image, leader })));
            return Ok(());
        }
        if let BrokerRequest::DescribeQuorum = request {
            if !self.is_leader() {
                return Err(self.not_controller());
            }
            let me = self.config.node_id;
            let voters = self
                .quorum
                .voter_progress()
                .into_iter()
                .map(|(id, matched_index)| VoterState {
                    id,
                    matched_index,
                    last_heard_ms: if id == me {
                        Some(self.now_ms)
                    } else {
                        self.last_heard_ms.get(&id).copied()
                    },
                })
                .collect();
            let state = QuorumState {
                leader_id: me,
                term: self.quorum.role().term,
                committed_index: self.quorum.committed_index(),
                voters,
                now_ms: self.now_ms,
            };
            self.replies
                .push_back((request_id, Ok(BrokerResponse::Quorum(state))));
            return Ok(());
        }
        let now = self.now_ms;
        let timeout = self.config.broker_session_timeout_ms;
        let defaults = TopicDefaults {
            num_partitions: self.config.num_partitions,
            replication_factor: self.config.default_replication_factor,
        };
        let not_controller = self.not_controller();
        let Some(lead) = self.leadership.as_mut() else {
            return Err(not_controller);
        };
        if lead.waiting_count >= self.config.requests_in_flight_max {
            return Err(ControllerError::Busy {
                max: self.config.requests_in_flight_max,
            });
        }
        let spec = &lead.spec;
        let (records, reply) = match request {
            BrokerRequest::RegisterBroker(r) => {
                let live = spec.broker(r.broker_id).is_some_and(|b| {
                    lead.sessions
                        .get(&r.broker_id)
                        .is_some_and(|s| s.epoch == b.epoch && s.deadline_ms > now)
                });
                let (records, reply) = decide::register_broker(spec, &r, live)?;
                (records, BrokerResponse::RegisterBroker(reply))
            }
            BrokerRequest::BrokerHeartbeat(h) => {
                decide::check_broker(spec, h.broker_id, h.broker_epoch)?;
                lead.sessions.insert(
                    h.broker_id,
                    Session {
                        epoch: h.broker_epoch,
                        deadline_ms: now + timeout,
                    },
                );
                let (records, reply) = decide::heartbeat(spec, &h)?;
                (records, BrokerResponse::BrokerHeartbeat(reply))
            }
            BrokerRequest::ControlledShutdown {
                broker_id,
                broker_epoch,
            } => {
                let (records, reply) = decide::controlled_shutdown(spec, broker_id, broker_epoch)?;
                (records, BrokerResponse::ControlledShutdown(reply))
            }
            BrokerRequest::CreateTopics(reqs) => {
                let rng = &mut self.rng;
                let mut ids = || rng.gen::<[u8; 16]>();
                let (records, results) = decide::create_topics(spec, &reqs, defaults, &mut ids);
                (records, BrokerResponse::CreateTopics(results))
            }
            BrokerRequest::DeleteTopics(names) => {
                let (records, results) = decide::delete_topics(spec, &names);
                (records, BrokerResponse::DeleteTopics(results))
            }
            BrokerRequest::CreatePartitions(reqs) => {
                let (records, results) = decide::create_partitions(spec, &reqs);
                (records, BrokerResponse::CreatePartitions(results))
            }
            BrokerRequest::SetTopicConfigs(reqs) => {
                let (records, results) = decide::set_topic_configs(spec, &reqs);
                (records, BrokerResponse::SetTopicConfigs(results))
            }
            BrokerRequest::SetBrokerConfigs(configs) => (
                decide::set_broker_configs(spec, &configs),
                BrokerResponse::SetBrokerConfigs,
            ),
            BrokerRequest::ElectLeaders {
                election,
                partitions,
            } => {
                let (records, results) =
                    decide::elect_leaders(spec, election, partitions.as_deref());
                (records, BrokerResponse::ElectLeaders(results))
            }
            BrokerRequest::AllocateProducerIds {
                broker_id,
                broker_epoch,
            } => {
                let (records, reply) =
                    decide::allocate_producer_ids(spec, broker_id, broker_epoch)?;
                (records, BrokerResponse::AllocateProducerIds(reply))
            }
            BrokerRequest::AlterPartition(r) => {
                let (records, ()) = decide::alter_partition(spec, &r)?;
                (records, BrokerResponse::AlterPartition)
            }
            // Answered above, before the leadership check.
            BrokerRequest::FetchMetadata { .. } | BrokerRequest::DescribeQuorum => return Ok(()),
        };
        self.commit(Some(request_id), records, reply)
    }

    /// Proposes `records` (if any) and parks the reply until they commit.
    fn commit(
        &mut self,
        request_id: Option<RequestId>,
        records: Vec<MetadataRecord>,
        mut reply: BrokerResponse,
    ) -> Result<(), ControllerError> {
        let not_controller = self.not_controller();
        let Some(lead) = self.leadership.as_mut() else {
            return Err(not_controller);
        };
        let (index, own_term) = if records.is_empty() {
            (self.quorum.last_index(), None)
        } else {
            let data =
                codec::encode_batch(&records).map_err(|e| ControllerError::InvalidRequest {
                    reason: e.to_string(),
                })?;
            let (index, term) = self.quorum.propose(data).map_err(|_| not_controller)?;
            if let Some((id, epoch)) = registration(&records, index) {
                if let BrokerResponse::RegisterBroker(r) = &mut reply {
                    r.broker_epoch = epoch;
                }
                let deadline_ms = self.now_ms + self.config.broker_session_timeout_ms;
                lead.sessions.insert(id, Session { epoch, deadline_ms });
            }
            // A refusal here is a refusal at commit on every node too; the reply says so.
            let _ = lead.spec.apply_entry(index, term, &records);
            (index, Some(term))
        };
        let Some(request_id) = request_id else {
            return Ok(());
        };
        if index <= self.image.last_applied_index {
            self.replies.push_back((request_id, Ok(reply)));
            return Ok(());
        }
        lead.waiting.entry(index).or_default().push(Waiting {
            request_id,
            own_term,
            reply,
        });
        lead.waiting_count += 1;
        Ok(())
    }

    fn expire_sessions(&mut self) {
        let now = self.now_ms;
        let Some(lead) = self.leadership.as_ref() else {
            return;
        };
        let expired: Vec<BrokerId> = lead
            .spec
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .filter(|b| {
                lead.sessions
                    .get(&b.id)
                    .is_none_or(|s| s.epoch != b.epoch || s.deadline_ms <= now)
            })
            .map(|b| b.id)
            .collect();
        for b in expired {
            let records = self
                .leadership
                .as_ref()
                .map(|l| decide::fence_broker(&l.spec, b))
                .unwrap_or_default();
            if !records.is_empty() {
                tracing::info!(broker = b, "broker session expired: fencing");
                let reply = BrokerResponse::AlterPartition;
                if self.commit(None, records, reply).is_err() {
                    return;
                }
            }
        }
    }

    fn maybe_rebalance(&mut self) {
        if !self.config.auto_leader_rebalance_enable {
            return;
        }
        let now = self.now_ms;
        let interval = self.config.leader_imbalance_check_interval_ms;
        let Some(lead) = self.leadership.as_mut() else {
            return;
        };
        if now < lead.next_rebalance_ms {
            return;
        }
        lead.next_rebalance_ms = now + interval;
        let records = decide::preferred_leader_elections(&lead.spec);
        if !records.is_empty() {
            let _ = self.commit(None, records, BrokerResponse::AlterPartition);
        }
    }

    /// Moves committed entries into the image, messages into the transmit queue, and follows
    /// role changes; repeats until Raft has nothing more to say.
    fn drive(&mut self) {
        loop {
            let mut progressed = false;
            let mut last_applied = None;
            while let Some(c) = self.quorum.poll_committed() {
                progressed = true;
                match c {
                    Committed::Entry(e) => {
                        last_applied = Some(e.index);
                        self.apply_entry(e.index, e.term, &e.data);
                    }
                    Committed::Snapshot(s) => self.apply_snapshot(&s.data, s.get_metadata().index),
                }
            }
            if let Some(index) = last_applied {
                self.quorum.advance_applied(index);
            }
            let role = self.quorum.role();
            if role != self.role {
                progressed = true;
                self.role = role;
                self.follow_role(role);
            }
            while let Some(m) = self.quorum.poll_message() {
                let Some(to) = quorum::node_id(m.to) else {
                    continue;
                };
                match Frame::Raft(m).to_bytes() {
                    Ok(b) => self.transmit.push_back((to, b)),
                    Err(e) => tracing::warn!(to, "raft message dropped: {e}"),
                }
            }
            if !progressed {
                break;
            }
        }
        self.check_spec();
        self.maybe_compact();
    }

    fn follow_role(&mut self, role: RoleState) {
        let keep = self
            .leadership
            .as_ref()
            .is_some_and(|l| role.is_leader && l.term == role.term);
        if !keep {
            if let Some(lead) = self.leadership.take() {
                let e = ControllerError::NotController {
                    leader_id: role.leader,
                };
                for w in lead.waiting.into_values().flatten() {
                    self.replies.push_back((w.request_id, Err(e.clone())));
                }
            }
        }
        if role.is_leader && self.leadership.is_none() {
            self.leadership = Some(self.new_leadership(role.term));
        }
    }

    fn new_leadership(&self, term: u64) -> Leadership {
        let mut spec = self.image.clone();
        let tail = self
            .quorum
            .entries_after(self.image.last_applied_index)
            .unwrap_or_default();
        for e in tail {
            let records = if e.data.is_empty() {
                Ok(Vec::new())
            } else {
                codec::decode_batch(&e.data)
            };
            let _ = spec.apply_entry(e.index, e.term, &records.unwrap_or_default());
        }
        let deadline_ms = self.now_ms + self.config.broker_session_timeout_ms;
        let sessions = spec
            .brokers
            .values()
            .map(|b| {
                let s = Session {
                    epoch: b.epoch,
                    deadline_ms,
                };
                (b.id, s)
            })
            .collect();
        tracing::info!(
            node = self.config.node_id,
            term,
            "controller leadership won"
        );
        Leadership {
            term,
            spec,
            sessions,
            waiting: BTreeMap::new(),
            waiting_count: 0,
            next_rebalance_ms: self.now_ms + self.config.leader_imbalance_check_interval_ms,
        }
    }

    fn apply_entry(&mut self, index: u64, term: u64, data: &[u8]) {
        if self.failure.is_some() {
            return;
        }
        let result = if data.is_empty() {
            self.image.apply_entry(index, term, &[])
        } else {
            match codec::decode_batch(data) {
                Ok(records) => self.image.apply_entry(index, term, &records),
                Err(e) => {
                    tracing::error!(index, "committed entry unreadable, skipped: {e}");
                    self.image.apply_entry(index, term, &[])
                }
            }
        };
        if let Err(e) = &result {
            tracing::warn!(index, "committed records refused: {e}");
        }
        if self.config.trace_applied {
            self.applied.push_back(AppliedEntry {
                index,
                term,
                data_crc: crc32c::crc32c(data),
                from_snapshot: false,
            });
        }
        self.answer_up_to(index, term, result);
    }

    fn answer_up_to(&mut self, index: u64, term: u64, result: Result<(), ImageError>) {
        let Some(lead) = self.leadership.as_mut() else {
            return;
        };
        while let Some(entry) = lead.waiting.first_entry() {
            if *entry.key() > index {
                break;
            }
            let at = *entry.key();
            for w in entry.remove() {
                lead.waiting_count -= 1;
                let answer = match w.own_term {
                    Some(t) if at == index && t != term => {
                        Err(ControllerError::NotController { leader_id: None })
                    }
                    Some(_) if at == index => match &result {
                        Ok(()) => Ok(w.reply),
                        Err(e) => Err(ControllerError::Refused(e.clone())),
                    },
                    _ => Ok(w.reply),
                };
                self.replies.push_back((w.request_id, answer));
            }
        }
    }

    fn apply_snapshot(&mut self, data: &[u8], index: u64) {
        match codec::decode_image(data) {
            Ok(image) if image.last_applied_index == index => {
                self.image = image;
                if self.config.trace_applied {
                    self.applied.push_back(AppliedEntry {
                        index,
                        term: self.image.last_applied_term,
                        data_crc: 0,
                        from_snapshot: true,
                    });
                }
            }
            Ok(image) => {
                self.failure = Some(format!(
                    "snapshot at {index} holds an image at {}",
                    image.last_applied_index
                ));
            }
            Err(e) => self.failure = Some(format!("snapshot at {index} unreadable: {e}")),
        }
        if let Some(f) = &self.failure {
            tracing::error!(node = self.config.node_id, "controller stopped: {f}");
        }
    }

    /// With nothing in flight, the speculative image is the committed one.
    fn check_spec(&self) {
        if let Some(lead) = &self.leadership {
            if self.quorum.last_index() == self.image.last_applied_index {
                assert_eq!(
                    lead.spec, self.image,
                    "speculative image diverged from the committed one"
                );
            }
        }
    }

    fn maybe_compact(&mut self) {
        let applied = self.image.last_applied_index;
        let since = applied.saturating_sub(self.quorum.snapshot_index());
        if self.failure.is_some() || since < self.config.snapshot_interval_entries.max(1) {
            return;
        }
        match codec::encode_image(&self.image) {
            Ok(data) => {
                if let Err(e) = self.quorum.compact(applied, data) {
                    tracing::warn!(applied, "log compaction skipped: {e}");
                }
            }
            Err(e) => tracing::warn!(applied, "image snapshot failed: {e}"),
        }
    }
}

/// The (broker, epoch) a batch registers, if it holds a registration.
fn registration(records: &[MetadataRecord], index: u64) -> Option<(BrokerId, i64)> {
    records.iter().find_map(|r| match r {
        MetadataRecord::RegisterBroker { broker_id, .. } => {
            Some((*broker_id, i64::try_from(index).unwrap_or(i64::MAX)))
        }
        _ => None,
    })
}
