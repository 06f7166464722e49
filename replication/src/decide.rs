//! The controller's decisions as pure functions of the image: each returns the records to
//! commit (in the order they must be applied) and the answer to give once they commit, or a
//! [`ControllerError`].
//!
//! Nothing here keeps state, reads a clock or knows about Raft; the controller calls these on
//! its *speculative* image (the committed image plus its own proposals not yet committed), so
//! two requests in flight never decide from the same stale state.
//!
//! # Rules (Kafka KRaft's)
//! * Leaders are elected from the ISR only, in replica order, among unfenced brokers not in
//!   controlled shutdown. No eligible replica: leader -1, the ISR keeps its last member, and
//!   that member is elected when it comes back unfenced. Never unclean.
//! * A broker leaving (fenced, shutting down, re-registering) leaves every ISR except where
//!   it is the last member; its leaderships move first, then the broker record changes, so
//!   every prefix of a decision's records keeps the image's invariants.
//! * Placement: active brokers interleaved by rack, partition `i` starts at
//!   `(existing partitions + i) mod brokers` and takes `replication_factor` consecutive
//!   brokers, so leaders and replicas spread evenly and replicas of a partition fall in
//!   distinct racks when racks are balanced.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::image::{
    BrokerId, BrokerRegistration, Endpoint, ImageError, MetadataImage, MetadataRecord, Partition,
    PartitionAssignment, TopicId, NO_LEADER, PRODUCER_ID_BLOCK_SIZE,
};

/// Longest topic name Kafka accepts.
pub const TOPIC_NAME_CHARS_MAX: usize = 249;
/// Most partitions one topic may have here (Kafka has no fixed bound).
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 100_000;

/// Why a request was refused. [`ControllerError::kafka_code`] is the one mapping to Kafka's
/// error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ControllerError {
    #[error("not the controller; the leader is {leader_id:?}")]
    NotController { leader_id: Option<BrokerId> },
    #[error("broker {broker_id} is not registered")]
    BrokerNotRegistered { broker_id: BrokerId },
    #[error("broker {broker_id}: epoch {given} is stale (current {current})")]
    StaleBrokerEpoch {
        broker_id: BrokerId,
        given: i64,
        current: i64,
    },
    #[error("broker {broker_id} is registered by another live incarnation")]
    DuplicateBrokerRegistration { broker_id: BrokerId },
    #[error("replication factor {requested} is invalid with {available} usable brokers")]
    InvalidReplicationFactor { requested: i16, available: usize },
    #[error("topic {name:?} already exists")]
    TopicAlreadyExists { name: String },
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic { name: String, reason: String },
    #[error("unknown topic {name:?}")]
    UnknownTopic { name: String },
    #[error("invalid partition count: {reason}")]
    InvalidPartitions { reason: String },
    #[error("invalid config {key:?}")]
    InvalidConfig { key: String },
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error("stale partition state: {reason}")]
    InvalidUpdateVersion { reason: String },
    #[error("the committed records were refused: {0}")]
    Refused(ImageError),
    #[error("too many requests in flight (at most {max})")]
    Busy { max: usize },
    #[error("unknown partition {topic}-{partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("{topic}-{partition}: {reason}")]
    ElectionNotNeeded {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error(
        "{topic}-{partition}: the preferred replica {preferred} is not in the ISR or not live"
    )]
    PreferredLeaderNotAvailable {
        topic: String,
        partition: i32,
        preferred: BrokerId,
    },
    #[error("{topic}-{partition}: no live replica can lead")]
    EligibleLeadersNotAvailable { topic: String, partition: i32 },
}

impl ControllerError {
    /// Kafka's error code for this error: the only table of them in the controller.
    pub fn kafka_code(&self) -> i16 {
        match self {
            Self::NotController { .. } => 41,                // NOT_CONTROLLER
            Self::BrokerNotRegistered { .. } => 102,         // BROKER_ID_NOT_REGISTERED
            Self::StaleBrokerEpoch { .. } => 77,             // STALE_BROKER_EPOCH
            Self::DuplicateBrokerRegistration { .. } => 101, // DUPLICATE_BROKER_REGISTRATION
            Self::InvalidReplicationFactor { .. } => 38,     // INVALID_REPLICATION_FACTOR
            Self::TopicAlreadyExists { .. } => 36,           // TOPIC_ALREADY_EXISTS
            Self::InvalidTopic { .. } => 17,                 // INVALID_TOPIC_EXCEPTION
            Self::UnknownTopic { .. } => 3,                  // UNKNOWN_TOPIC_OR_PARTITION
            Self::InvalidPartitions { .. } => 37,            // INVALID_PARTITIONS
            Self::InvalidConfig { .. } => 40,                // INVALID_CONFIG
            Self::InvalidRequest { .. } => 42,               // INVALID_REQUEST
            Self::InvalidUpdateVersion { .. } => 95,         // INVALID_UPDATE_VERSION
            Self::Refused(_) => -1,                          // UNKNOWN_SERVER_ERROR
            Self::Busy { .. } => 7,                          // REQUEST_TIMED_OUT
            Self::UnknownPartition { .. } => 3,              // UNKNOWN_TOPIC_OR_PARTITION
            Self::ElectionNotNeeded { .. } => 84,            // ELECTION_NOT_NEEDED
            Self::PreferredLeaderNotAvailable { .. } => 80,  // PREFERRED_LEADER_NOT_AVAILABLE
            Self::EligibleLeadersNotAvailable { .. } => 83,  // ELIGIBLE_LEADERS_NOT_AVAILABLE
        }
    }
}

/// A decision: records to commit, then the answer.
pub type Decision<R> = Result<(Vec<MetadataRecord>, R), ControllerError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBrokerRequest {
    pub broker_id: BrokerId,
    pub incarnation_id: [u8; 16],
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// The epoch this broker held before it restarted, if it remembers one (KIP-966).
    pub previous_broker_epoch: Option<i64>,
}

/// `broker_epoch` is filled in by the controller: the index of the registration entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBrokerReply {
    pub broker_epoch: i64,
}

/// Registers a broker. `session_live` says whether the controller still holds a live
/// session for the broker's current registration.
pub fn register_broker(
    image: &MetadataImage,
    req: &RegisterBrokerRequest,
    session_live: bool,
) -> Decision<RegisterBrokerReply> {
    if req.broker_id < 0 {
        return Err(invalid_request("negative broker id"));
    }
    let mut records = Vec::new();
    let previous = image.broker(req.broker_id);
    if let Some(prev) = req.previous_broker_epoch {
        let current = previous.map_or(-1, |b| b.epoch);
        if prev > current {
            return Err(ControllerError::StaleBrokerEpoch {
                broker_id: req.broker_id,
                given: prev,
                current,
            });
        }
    }
    if let Some(old) = previous {
        if old.incarnation_id != req.incarnation_id && session_live && !old.fenced {
            return Err(ControllerError::DuplicateBrokerRegistration {
                broker_id: req.broker_id,
            });
        }
        evict_broker(image, req.broker_id, &mut records);
    }
    records.push(MetadataRecord::RegisterBroker {
        broker_id: req.broker_id,
        incarnation_id: req.incarnation_id,
        endpoints: req.endpoints.clone(),
        rack: req.rack.clone(),
    });
    Ok((records, RegisterBrokerReply { broker_epoch: -1 }))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    /// The last metadata (Raft) index the broker has applied.
    pub current_metadata_offset: i64,
    pub want_fence: bool,
    pub want_shutdown: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub is_caught_up: bool,
    pub is_fenced: bool,
    pub should_shut_down: bool,
}

/// Finds the broker and checks its epoch.
pub fn check_broker(
    image: &MetadataImage,
    broker_id: BrokerId,
    epoch: i64,
) -> Result<&BrokerRegistration, ControllerError> {
    let b = image
        .broker(broker_id)
        .ok_or(ControllerError::BrokerNotRegistered { broker_id })?;
    if b.epoch != epoch {
        return Err(ControllerError::StaleBrokerEpoch {
            broker_id,
            given: epoch,
            current: b.epoch,
        });
    }
    Ok(b)
}

/// A broker's heartbeat: unfences it once it has replayed the metadata up to its own
/// registration, fences it on request, starts its controlled shutdown on request.
pub fn heartbeat(image: &MetadataImage, req: &HeartbeatRequest) -> Decision<HeartbeatReply> {
    let b = check_broker(image, req.broker_id, req.broker_epoch)?;
    let caught_up = req.current_metadata_offset >= b.epoch;
    let mut records = Vec::new();
    let mut fenced = b.fenced;
    let mut shutting_down = b.in_controlled_shutdown;
    if req.want_shutdown && !shutting_down {
        shutting_down = true;
        records = controlled_shutdown(image, req.broker_id, req.broker_epoch)?.0;
    } else if req.want_fence && !fenced {
        fenced = true;
        records = fence_broker(image, req.broker_id);
    } else if fenced && !req.want_fence && !req.want_shutdown && !shutting_down && caught_up {
        fenced = false;
        records = unfence_broker(image, req.broker_id);
    }
    let reply = HeartbeatReply {
        is_caught_up: caught_up,
        is_fenced: fenced,
        should_shut_down: shutting_down,
    };
    Ok((records, reply))
}

/// Records that fence `broker` (its session expired): leaderships move to other ISR
/// members, the broker leaves ISRs, then the fence record. Empty if unknown or fenced.
pub fn fence_broker(image: &MetadataImage, broker: BrokerId) -> Vec<MetadataRecord> {
    let Some(b) = image.broker(broker).filter(|b| !b.fenced) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    evict_broker(image, broker, &mut records);
    records.push(MetadataRecord::FenceBroker {
        broker_id: broker,
        broker_epoch: b.epoch,
    });
    records
}

/// Records that unfence `broker` and elect it where it is the only eligible ISR member of a
/// leaderless partition.
pub fn unfence_broker(image: &MetadataImage, broker: BrokerId) -> Vec<MetadataRecord> {
    let Some(b) = image.broker(broker).filter(|b| b.fenced) else {
        return Vec::new();
    };
    let mut records = vec![MetadataRecord::UnfenceBroker {
        broker_id: broker,
        broker_epoch: b.epoch,
    }];
    let shutting_down = b.in_controlled_shutdown;
    let eligible = |x: BrokerId| (x == broker && !shutting_down) || is_active(image, x);
    for (t, i, p) in image.partitions() {
        if p.leader == NO_LEADER && p.isr.contains(&broker) {
            if let Some(leader) = elect(p, &eligible) {
                records.push(change(t.id, i, Some(leader), None));
            }
        }
    }
    records
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlledShutdownReply {
    /// Partitions the broker still leads after the records commit (0 when all moved).
    pub partitions_remaining: usize,
}

/// Moves leaderships away from a broker that asked to shut down, then marks it.
pub fn controlled_shutdown(
    image: &MetadataImage,
    broker: BrokerId,
    epoch: i64,
) -> Decision<ControlledShutdownReply> {
    let b = check_broker(image, broker, epoch)?;
    let mut records = Vec::new();
    if !b.in_controlled_shutdown {
        evict_broker(image, broker, &mut records);
        records.push(MetadataRecord::BrokerShutdown {
            broker_id: broker,
            broker_epoch: epoch,
        });
    }
    let reply = ControlledShutdownReply {
        partitions_remaining: 0,
    };
    Ok((records, reply))
}

/// Leadership and ISR changes that take `broker` out of every partition it leads or is in
/// sync for (it stays the last ISR member of a partition nobody else can lead).
fn evict_broker(image: &MetadataImage, broker: BrokerId, out: &mut Vec<MetadataRecord>) {
    let eligible = |x: BrokerId| x != broker && is_active(image, x);
    for (t, i, p) in image.partitions() {
        if !p.isr.contains(&broker) {
            continue;
        }
        let mut isr: Vec<BrokerId> = p.isr.iter().copied().filter(|&x| x != broker).collect();
        if isr.is_empty() {
            isr.push(broker);
        }
        let leader = if p.leader == broker || p.leader == NO_LEADER {
            let shrunk = Partition {
                isr: isr.clone(),
                ..p.clone()
            };
            elect(&shrunk, &eligible).unwrap_or(NO_LEADER)
        } else {
            p.leader
        };
        let new_leader = (leader != p.leader).then_some(leader);
        let new_isr = (isr != p.isr).then_some(isr);
        if new_leader.is_some() || new_isr.is_some() {
            out.push(change(t.id, i, new_leader, new_isr));
        }
    }
}

/// The first ISR member, in replica order, that `eligible` accepts.
pub fn elect(p: &Partition, eligible: &dyn Fn(BrokerId) -> bool) -> Option<BrokerId> {
    p.replicas
        .iter()
        .copied()
        .find(|&r| p.isr.contains(&r) && eligible(r))
}

fn is_active(image: &MetadataImage, b: BrokerId) -> bool {
    image.broker(b).is_some_and(BrokerRegistration::is_active)
}

fn change(
    topic_id: TopicId,
    partition: i32,
    leader: Option<BrokerId>,
    isr: Option<Vec<BrokerId>>,
) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic_id,
        partition,
        leader,
        isr,
        replicas: None,
    }
}

/// Moves leadership back to each partition's preferred (first) replica where it is in the
/// ISR and active (`auto.leader.rebalance.enable`).
pub fn preferred_leader_elections(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for (t, i, p) in image.partitions() {
        let Some(&preferred) = p.replicas.first() else {
            continue;
        };
        if p.leader != preferred && p.isr.contains(&preferred) && is_active(image, preferred) {
            records.push(change(t.id, i, Some(preferred), None));
        }
    }
    records
}

/// ElectLeaders' election types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// Leadership to the first replica, if it is in the ISR and live.
    Preferred,
    /// A partition without a leader takes any live replica, in the ISR or not: it may lose
    /// records the ISR had acknowledged (`unclean.leader.election`).
    Unclean,
}

/// One partition's ElectLeaders outcome: elected, or why not.
pub type ElectionResult = ((String, i32), Result<(), ControllerError>);

/// ElectLeaders: for each partition (every partition when `None`), the records that elect
/// its leader, or why none is elected; one result per partition, in request order (by topic
/// and partition when all are asked).
pub fn elect_leaders(
    image: &MetadataImage,
    election: ElectionType,
    partitions: Option<&[(String, i32)]>,
) -> (Vec<MetadataRecord>, Vec<ElectionResult>) {
    let asked: Vec<(String, i32)> = match partitions {
        Some(p) => p.to_vec(),
        None => image
            .partitions()
            .map(|(t, i, _)| (t.name.clone(), i))
            .collect(),
    };
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(asked.len());
    for (topic, partition) in asked {
        let found = image.topics.get(&topic).and_then(|t| {
            let p = t.partitions.get(usize::try_from(partition).ok()?)?;
            Some((t.id, p))
        });
        let result = match found {
            None => Err(ControllerError::UnknownPartition {
                topic: topic.clone(),
                partition,
            }),
            Some((id, p)) => elect_one(image, election, &topic, partition, p).map(|change| {
                records.push(MetadataRecord::PartitionChange {
                    topic_id: id,
                    partition,
                    leader: Some(change.0),
                    isr: change.1,
                    replicas: None,
                });
            }),
        };
        results.push(((topic, partition), result));
    }
    (records, results)
}

/// The new leader (and ISR, for an unclean election) of one partition.
fn elect_one(
    image: &MetadataImage,
    election: ElectionType,
    topic: &str,
    partition: i32,
    p: &Partition,
) -> Result<(BrokerId, Option<Vec<BrokerId>>), ControllerError> {
    let not_needed = |reason: &str| ControllerError::ElectionNotNeeded {
        topic: topic.to_string(),
        partition,
        reason: reason.to_string(),
    };
    let has_leader = p.leader >= 0 && is_active(image, p.leader);
    match election {
        ElectionType::Preferred => {
            let preferred = p.replicas.first().copied().unwrap_or(-1);
            if p.leader == preferred {
                return Err(not_needed("the preferred replica leads already"));
            }
            if p.isr.contains(&preferred) && is_active(image, preferred) {
                Ok((preferred, None))
            } else {
                Err(ControllerError::PreferredLeaderNotAvailable {
                    topic: topic.to_string(),
                    partition,
                    preferred,
                })
            }
        }
        ElectionType::Unclean if has_leader => Err(not_needed("the partition has a leader")),
        ElectionType::Unclean => {
            if let Some(l) = elect(p, &|b| is_active(image, b)) {
                return Ok((l, None));
            }
            p.replicas
                .iter()
                .copied()
                .find(|&b| is_active(image, b))
                .map(|l| (l, Some(vec![l])))
                .ok_or(ControllerError::EligibleLeadersNotAvailable {
                    topic: topic.to_string(),
                    partition,
                })
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicRequest {
    pub name: String,
    /// -1: `num.partitions`.
    pub num_partitions: i32,
    /// -1: `default.replication.factor`.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedTopic {
    pub topic_id: TopicId,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// Topic defaults from the broker config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicDefaults {
    /// `num.partitions`
    pub num_partitions: i32,
    /// `default.replication.factor`
    pub replication_factor: i16,
}

/// Kafka's topic-name rules.
pub fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    let bad = |reason: &str| {
        Err(ControllerError::InvalidTopic {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.len() > TOPIC_NAME_CHARS_MAX {
        return bad("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-')
    {
        return bad("only ASCII alphanumerics, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Creates topics; one result per request, in order. `ids` supplies fresh topic ids (the
/// controller's seeded generator); an id already in use is skipped. Topics refused do not
/// stop the others, like Kafka's CreateTopics.
pub fn create_topics(
    image: &MetadataImage,
    reqs: &[CreateTopicRequest],
    defaults: TopicDefaults,
    ids: &mut dyn FnMut() -> TopicId,
) -> (
    Vec<MetadataRecord>,
    Vec<Result<CreatedTopic, ControllerError>>,
) {
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(reqs.len());
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut used_ids: BTreeSet<TopicId> = image.topics.values().map(|t| t.id).collect();
    let mut start = image.partitions().count();
    for req in reqs {
        let duplicate = reqs.iter().filter(|r| r.name == req.name).count() > 1;
        let result = if duplicate {
            Err(invalid_request("the topic is named twice in the request"))
        } else {
            create_topic(image, req, defaults, &names, start)
        };
        match result {
            Ok((assignments, rf)) => {
                let topic_id = fresh_id(ids, &mut used_ids);
                start += assignments.len();
                names.insert(req.name.clone());
                results.push(Ok(CreatedTopic {
                    topic_id,
                    num_partitions: i32::try_from(assignments.len()).unwrap_or(i32::MAX),
                    replication_factor: rf,
                }));
                records.push(MetadataRecord::CreateTopic {
                    topic_id,
                    name: req.name.clone(),
                    configs: req.configs.clone(),
                    partitions: assignments,
                });
            }
            Err(e) => results.push(Err(e)),
        }
    }
    (records, results)
}

fn fresh_id(ids: &mut dyn FnMut() -> TopicId, used: &mut BTreeSet<TopicId>) -> TopicId {
    loop {
        let id = ids();
        if id != [0; 16] && used.insert(id) {
            return id;
        }
    }
}

fn create_topic(
    image: &MetadataImage,
    req: &CreateTopicRequest,
    defaults: TopicDefaults,
    created: &BTreeSet<String>,
    start: usize,
) -> Result<(Vec<PartitionAssignment>, i16), ControllerError> {
    validate_topic_name(&req.name)?;
    if image.topics.contains_key(&req.name) || created.contains(&req.name) {
        return Err(ControllerError::TopicAlreadyExists {
            name: req.name.clone(),
        });
    }
    let folded = req.name.replace('.', "_");
    let collides = image.topics.keys().chain(created.iter());
    if let Some(other) = collides.into_iter().find(|n| n.replace('.', "_") == folded) {
        return Err(ControllerError::InvalidTopic {
            name: req.name.clone(),
            reason: format!("collides with existing topic {other:?} ('.' and '_' collide)"),
        });
    }
    if let Some(key) = req.configs.keys().find(|k| k.is_empty()) {
        return Err(ControllerError::InvalidConfig { key: key.clone() });
    }
    let partitions = match req.num_partitions {
        -1 => defaults.num_partitions,
        n => n,
    };
    let rf = match req.replication_factor {
        -1 => defaults.replication_factor,
        n => n,
    };
    if partitions <= 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
        return Err(ControllerError::InvalidPartitions {
            reason: format!("{partitions} partitions (1..={PARTITIONS_PER_TOPIC_MAX})"),
        });
    }
    Ok((place(image, partitions, rf, start)?, rf))
}

/// Places `count` new partitions with `rf` replicas each (see the module doc).
pub fn place(
    image: &MetadataImage,
    count: i32,
    rf: i16,
    start: usize,
) -> Result<Vec<PartitionAssignment>, ControllerError> {
    let order = rack_interleaved(image);
    let rf_usize = usize::try_from(rf).unwrap_or(0);
    if rf_usize == 0 || rf_usize > order.len() {
        return Err(ControllerError::InvalidReplicationFactor {
            requested: rf,
            available: order.len(),
        });
    }
    let n = order.len();
    let count = usize::try_from(count).unwrap_or(0);
    let out = (0..count)
        .map(|i| {
            let first = (start + i) % n;
            let replicas: Vec<BrokerId> = (0..rf_usize).map(|j| order[(first + j) % n]).collect();
            PartitionAssignment {
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
            }
        })
        .collect();
    Ok(out)
}

/// Active brokers, taking one from each rack in turn (racks and brokers in id order).
fn rack_interleaved(image: &MetadataImage) -> Vec<BrokerId> {
    let mut racks: BTreeMap<Option<&str>, Vec<BrokerId>> = BTreeMap::new();
    for b in image.brokers.values().filter(|b| b.is_active()) {
        racks.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    let longest = racks.values().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::new();
    for i in 0..longest {
        order.extend(racks.values().filter_map(|r| r.get(i)));
    }
    order
}

/// Deletes topics by name; one result per name.
pub fn delete_topics(
    image: &MetadataImage,
    names: &[String],
) -> (Vec<MetadataRecord>, Vec<Result<TopicId, ControllerError>>) {
    let mut records = Vec::new();
    let mut seen = BTreeSet::new();
    let results = names
        .iter()
        .map(|name| match image.topics.get(name) {
            None => Err(ControllerError::UnknownTopic { name: name.clone() }),
            Some(_) if !seen.insert(name) => {
                Err(invalid_request("the topic is named twice in the request"))
            }
            Some(t) => {
                records.push(MetadataRecord::RemoveTopic { topic_id: t.id });
                Ok(t.id)
            }
        })
        .collect();
    (records, results)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePartitionsRequest {
    pub name: String,
    /// The new total number of partitions.
    pub count: i32,
}

/// Grows topics to the requested partition counts; one result per request.
pub fn create_partitions(
    image: &MetadataImage,
    reqs: &[CreatePartitionsRequest],
) -> (Vec<MetadataRecord>, Vec<Result<(), ControllerError>>) {
    let mut records = Vec::new();
    let mut start = image.partitions().count();
    let mut results = Vec::with_capacity(reqs.len());
    for req in reqs {
        let result = grow_topic(image, req, start).map(|(id, assignments)| {
            start += assignments.len();
            records.push(MetadataRecord::CreatePartitions {
                topic_id: id,
                partitions: assignments,
            });
        });
        results.push(result);
    }
    (records, results)
}

fn grow_topic(
    image: &MetadataImage,
    req: &CreatePartitionsRequest,
    start: usize,
) -> Result<(TopicId, Vec<PartitionAssignment>), ControllerError> {
    let t = image
        .topics
        .get(&req.name)
        .ok_or(ControllerError::UnknownTopic {
            name: req.name.clone(),
        })?;
    let current = i32::try_from(t.partitions.len()).unwrap_or(i32::MAX);
    if req.count <= current || req.count > PARTITIONS_PER_TOPIC_MAX {
        return Err(ControllerError::InvalidPartitions {
            reason: format!(
                "topic {:?} has {current} partitions; asked for {}",
                req.name, req.count
            ),
        });
    }
    let rf = t
        .partitions
        .first()
        .map_or(1, |p| i16::try_from(p.replicas.len()).unwrap_or(i16::MAX));
    Ok((t.id, place(image, req.count - current, rf, start)?))
}

/// A topic's configuration overrides to become exactly `configs` (AlterConfigs and
/// IncrementalAlterConfigs): the asking broker has applied the operations and validated the
/// result against its own defaults; the last change committed wins, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTopicConfigsRequest {
    pub name: String,
    pub configs: BTreeMap<String, String>,
}

/// The records that turn each topic's overrides into the requested ones (a key set, changed
/// or removed); one result per request.
pub fn set_topic_configs(
    image: &MetadataImage,
    reqs: &[SetTopicConfigsRequest],
) -> (Vec<MetadataRecord>, Vec<Result<(), ControllerError>>) {
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(reqs.len());
    for req in reqs {
        let Some(t) = image.topics.get(&req.name) else {
            results.push(Err(ControllerError::UnknownTopic {
                name: req.name.clone(),
            }));
            continue;
        };
        for (key, value) in &req.configs {
            if t.configs.get(key) != Some(value) {
                records.push(MetadataRecord::SetTopicConfig {
                    topic_id: t.id,
                    key: key.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        for key in t.configs.keys().filter(|k| !req.configs.contains_key(*k)) {
            records.push(MetadataRecord::SetTopicConfig {
                topic_id: t.id,
                key: key.clone(),
                value: None,
            });
        }
        results.push(Ok(()));
    }
    (records, results)
}

/// The records that make the cluster's dynamic broker defaults exactly `configs` (validated
/// by the asking broker).
pub fn set_broker_configs(
    image: &MetadataImage,
    configs: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let mut records: Vec<MetadataRecord> = configs
        .iter()
        .filter(|(k, v)| image.broker_configs.get(*k) != Some(*v))
        .map(|(k, v)| MetadataRecord::SetBrokerConfig {
            key: k.clone(),
            value: Some(v.clone()),
        })
        .collect();
    records.extend(
        image
            .broker_configs
            .keys()
            .filter(|k| !configs.contains_key(*k))
            .map(|k| MetadataRecord::SetBrokerConfig {
                key: k.clone(),
                value: None,
            }),
    );
    records
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdsReply {
    pub first_id: i64,
    pub size: i32,
}

/// The next block of producer ids for a broker.
pub fn allocate_producer_ids(
    image: &MetadataImage,
    broker: BrokerId,
    epoch: i64,
) -> Decision<ProducerIdsReply> {
    check_broker(image, broker, epoch)?;
    let first_id = image.next_producer_id;
    if first_id
        .checked_add(i64::from(PRODUCER_ID_BLOCK_SIZE))
        .is_none()
    {
        return Err(invalid_request("producer ids exhausted"));
    }
    let record = MetadataRecord::AllocateProducerIds {
        broker_id: broker,
        broker_epoch: epoch,
        first_id,
        size: PRODUCER_ID_BLOCK_SIZE,
    };
    let reply = ProducerIdsReply {
        first_id,
        size: PRODUCER_ID_BLOCK_SIZE,
    };
    Ok((vec![record], reply))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionRequest {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    pub topic: String,
    pub partition: i32,
    /// The leader's view: compare-and-set on both epochs.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
}

/// An ISR change from the partition leader (Kafka's AlterPartition), compare-and-set on the
/// leader and partition epochs. A fenced or shutting-down broker never joins the ISR.
pub fn alter_partition(image: &MetadataImage, req: &AlterPartitionRequest) -> Decision<()> {
    check_broker(image, req.broker_id, req.broker_epoch)?;
    let t = image
        .topics
        .get(&req.topic)
        .ok_or(ControllerError::UnknownTopic {
            name: req.topic.clone(),
        })?;
    let p = usize::try_from(req.partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
        .ok_or(ControllerError::UnknownTopic {
            name: req.topic.clone(),
        })?;
    if p.leader != req.broker_id
        || p.leader_epoch != req.leader_epoch
        || p.partition_epoch != req.partition_epoch
    {
        return Err(ControllerError::InvalidUpdateVersion {
            reason: format!(
                "leader {} epochs {}/{}, request from {} with {}/{}",
                p.leader,
                p.leader_epoch,
                p.partition_epoch,
                req.broker_id,
                req.leader_epoch,
                req.partition_epoch
            ),
        });
    }
    let joining = req.new_isr.iter().filter(|b| !p.isr.contains(b));
    if let Some(b) = joining.into_iter().find(|&&b| !is_active(image, b)) {
        return Err(invalid_request(&format!(
            "broker {b} is not eligible for the ISR"
        )));
    }
    let shaped = Partition {
        isr: req.new_isr.clone(),
        ..p.clone()
    };
    if !req.new_isr.contains(&p.leader)
        || !req.new_isr.iter().all(|b| p.replicas.contains(b))
        || req
            .new_isr
            .iter()
            .enumerate()
            .any(|(i, b)| shaped.isr[..i].contains(b))
    {
        return Err(invalid_request(
            "the new ISR must hold the leader, replicas only, once",
        ));
    }
    let records = if req.new_isr == p.isr {
        Vec::new()
    } else {
        vec![change(t.id, req.partition, None, Some(req.new_isr.clone()))]
    };
    Ok((records, ()))
}

fn invalid_request(reason: &str) -> ControllerError {
    ControllerError::InvalidRequest {
        reason: reason.to_owned(),
    }
}
