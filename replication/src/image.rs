//! The metadata image: the cluster's replicated state, changed only by applying records in
//! Raft log order.
//!
//! # What it owns
//! Brokers (registration, epoch, fencing), topics and their partitions (replicas, ISR,
//! leader, epochs), producer-id blocks, and the Raft index/term of the last applied entry.
//! Every controller builds the same image from the same log; brokers read a published copy.
//!
//! # Invariants (checked by [`MetadataImage::apply`] before it changes anything, and by
//! [`MetadataImage::check_invariants`] over the whole image)
//! * A partition's replicas are distinct and non-empty; ISR ⊆ replicas, distinct, non-empty;
//!   the leader is -1 or a member of the ISR.
//! * A leader change bumps the leader epoch and the partition epoch; any other change bumps
//!   the partition epoch only. Epochs never go down.
//! * A newly elected leader is a registered, unfenced broker.
//! * Topic names and ids are unique; no topic has the all-zero id.
//! * A broker's epoch is the Raft index of its registration record, so it only grows.
//! * Producer-id blocks are handed out from one counter and never overlap.
//! * The applied index only grows.
//!
//! A record that would break an invariant is refused with an [`ImageError`] and changes
//! nothing. Every node refuses it alike, so images stay equal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A broker's `node.id`.
pub type BrokerId = i32;
/// A topic's 16-byte id (Kafka's `Uuid`).
pub type TopicId = [u8; 16];
/// Kafka's "no leader".
pub const NO_LEADER: BrokerId = -1;
/// Size of one producer-id block (Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub const PRODUCER_ID_BLOCK_SIZE: i32 = 1000;
/// The internal topic holding group offsets.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// One listener of a broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: BrokerId,
    pub incarnation_id: [u8; 16],
    /// The Raft index of the registration record.
    pub epoch: i64,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

impl BrokerRegistration {
    /// Unfenced and not shutting down: may lead and may receive new replicas.
    pub fn is_active(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }
}

/// One partition's replication state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Partition {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Topic {
    pub id: TopicId,
    pub name: String,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<Partition>,
}

/// A new partition's first state, as placed by the controller (epochs start at 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionAssignment {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
}

/// A block of producer ids owned by one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub broker_id: BrokerId,
    pub first_id: i64,
    pub size: i32,
}

/// One change to the image. Records in one Raft entry share its index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker (re)registers; its epoch becomes the entry's index and it starts fenced.
    RegisterBroker {
        broker_id: BrokerId,
        incarnation_id: [u8; 16],
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
    },
    UnregisterBroker {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    FenceBroker {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    UnfenceBroker {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    /// The broker entered controlled shutdown.
    BrokerShutdown {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    CreateTopic {
        topic_id: TopicId,
        name: String,
        configs: BTreeMap<String, String>,
        partitions: Vec<PartitionAssignment>,
    },
    RemoveTopic {
        topic_id: TopicId,
    },
    /// Appends partitions to a topic.
    CreatePartitions {
        topic_id: TopicId,
        partitions: Vec<PartitionAssignment>,
    },
    /// `None` fields are unchanged. Epochs are bumped by `apply`, never carried.
    PartitionChange {
        topic_id: TopicId,
        partition: i32,
        leader: Option<BrokerId>,
        isr: Option<Vec<BrokerId>>,
        replicas: Option<Vec<BrokerId>>,
    },
    /// Hands `[first_id, first_id + size)` to a broker; `first_id` must be the next free id.
    AllocateProducerIds {
        broker_id: BrokerId,
        broker_epoch: i64,
        first_id: i64,
        size: i32,
    },
    /// `value: None` removes the key.
    SetTopicConfig {
        topic_id: TopicId,
        key: String,
        value: Option<String>,
    },
    /// A dynamic broker default, cluster-wide; `value: None` removes the key.
    SetBrokerConfig {
        key: String,
        value: Option<String>,
    },
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ImageError {
    #[error("entry index {index} does not follow the applied index {applied}")]
    IndexNotAfter { index: u64, applied: u64 },
    #[error("broker {broker_id} is not registered")]
    UnknownBroker { broker_id: BrokerId },
    #[error("broker {broker_id} has epoch {current}, the record names {given}")]
    StaleBrokerEpoch {
        broker_id: BrokerId,
        current: i64,
        given: i64,
    },
    #[error("topic {name:?} already exists")]
    DuplicateTopicName { name: String },
    #[error("topic id {id:02x?} already exists or is zero")]
    BadTopicId { id: TopicId },
    #[error("unknown topic id {id:02x?}")]
    UnknownTopic { id: TopicId },
    #[error("topic {id:02x?} has no partition {partition}")]
    UnknownPartition { id: TopicId, partition: i32 },
    #[error("partition {partition} of topic {id:02x?}: {reason}")]
    BadPartition {
        id: TopicId,
        partition: i32,
        reason: String,
    },
    #[error("producer ids: block at {first_id} (size {size}) but next free id is {next}")]
    BadProducerIdBlock { first_id: i64, size: i32, next: i64 },
}

/// The replicated state. Build it with [`MetadataImage::apply`] only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MetadataImage {
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// Topics by name; ids are unique too (see [`MetadataImage::topic_by_id`]).
    pub topics: BTreeMap<String, Topic>,
    /// The next producer id never handed out.
    pub next_producer_id: i64,
    /// The latest block of each broker.
    pub producer_id_blocks: BTreeMap<BrokerId, ProducerIdBlock>,
    /// Dynamic broker defaults, cluster-wide, by broker key (AlterConfigs of the brokers).
    #[serde(default)]
    pub broker_configs: BTreeMap<String, String>,
    pub last_applied_index: u64,
    pub last_applied_term: u64,
}

impl MetadataImage {
    pub fn broker(&self, id: BrokerId) -> Option<&BrokerRegistration> {
        self.brokers.get(&id)
    }

    pub fn topic_by_id(&self, id: &TopicId) -> Option<&Topic> {
        self.topics.values().find(|t| &t.id == id)
    }

    fn topic_name_by_id(&self, id: &TopicId) -> Result<String, ImageError> {
        self.topic_by_id(id)
            .map(|t| t.name.clone())
            .ok_or(ImageError::UnknownTopic { id: *id })
    }

    /// Applies one Raft entry's records (an empty slice for Raft's own empty entries).
    /// Records are applied in order; the first refused record and those after it in the
    /// entry are skipped (deterministically on every node) and its error returned. The
    /// applied index moves to `index` either way.
    pub fn apply_entry(
        &mut self,
        index: u64,
        term: u64,
        records: &[MetadataRecord],
    ) -> Result<(), ImageError> {
        if index <= self.last_applied_index {
            return Err(ImageError::IndexNotAfter {
                index,
                applied: self.last_applied_index,
            });
        }
        let mut result = Ok(());
        for record in records {
            if let Err(e) = self.apply(index, record) {
                result = Err(e);
                break;
            }
        }
        self.last_applied_index = index;
        self.last_applied_term = term;
        result
    }

    /// Applies one record at Raft index `index` (the entry being applied); refuses a record
    /// that would break an invariant, changing nothing.
    pub fn apply(&mut self, index: u64, record: &MetadataRecord) -> Result<(), ImageError> {
        match record {
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id,
                endpoints,
                rack,
            } => {
                let epoch = i64::try_from(index).unwrap_or(i64::MAX);
                self.check_leads_nothing(*broker_id)?;
                if let Some(old) = self.brokers.get(broker_id) {
                    if old.epoch >= epoch {
                        return Err(ImageError::StaleBrokerEpoch {
                            broker_id: *broker_id,
                            current: old.epoch,
                            given: epoch,
                        });
                    }
                }
                self.brokers.insert(
                    *broker_id,
                    BrokerRegistration {
                        id: *broker_id,
                        incarnation_id: *incarnation_id,
                        epoch,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        fenced: true,
                        in_controlled_shutdown: false,
                    },
                );
            }
            MetadataRecord::UnregisterBroker {
                broker_id,
                broker_epoch,
            } => {
                self.check_epoch(*broker_id, *broker_epoch)?;
                self.check_leads_nothing(*broker_id)?;
                self.brokers.remove(broker_id);
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            } => {
                self.check_epoch(*broker_id, *broker_epoch)?;
                self.check_leads_nothing(*broker_id)?;
                self.broker_mut(*broker_id, *broker_epoch)?.fenced = true;
            }
            MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => {
                self.broker_mut(*broker_id, *broker_epoch)?.fenced = false;
            }
            MetadataRecord::BrokerShutdown {
                broker_id,
                broker_epoch,
            } => {
                self.broker_mut(*broker_id, *broker_epoch)?
                    .in_controlled_shutdown = true;
            }
            MetadataRecord::CreateTopic {
                topic_id,
                name,
                configs,
                partitions,
            } => self.create_topic(*topic_id, name, configs, partitions)?,
            MetadataRecord::RemoveTopic { topic_id } => {
                let name = self.topic_name_by_id(topic_id)?;
                self.topics.remove(&name);
            }
            MetadataRecord::CreatePartitions {
                topic_id,
                partitions,
            } => {
                let name = self.topic_name_by_id(topic_id)?;
                let first = self.topics.get(&name).map_or(0, |t| t.partitions.len());
                let new = self.new_partitions(topic_id, first, partitions)?;
                if let Some(t) = self.topics.get_mut(&name) {
                    t.partitions.extend(new);
                }
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas,
            } => self.change_partition(topic_id, *partition, *leader, isr, replicas)?,
            MetadataRecord::AllocateProducerIds {
                broker_id,
                broker_epoch,
                first_id,
                size,
            } => {
                self.check_epoch(*broker_id, *broker_epoch)?;
                let end = first_id.checked_add(i64::from(*size));
                if *first_id != self.next_producer_id || *size <= 0 || end.is_none() {
                    return Err(ImageError::BadProducerIdBlock {
                        first_id: *first_id,
                        size: *size,
                        next: self.next_producer_id,
                    });
                }
                self.next_producer_id = end.unwrap_or(i64::MAX);
                self.producer_id_blocks.insert(
                    *broker_id,
                    ProducerIdBlock {
                        broker_id: *broker_id,
                        first_id: *first_id,
                        size: *size,
                    },
                );
            }
            MetadataRecord::SetBrokerConfig { key, value } => {
                match value {
                    Some(v) => self.broker_configs.insert(key.clone(), v.clone()),
                    None => self.broker_configs.remove(key),
                };
            }
            MetadataRecord::SetTopicConfig {
                topic_id,
                key,
                value,
            } => {
                let name = self.topic_name_by_id(topic_id)?;
                if let Some(t) = self.topics.get_mut(&name) {
                    match value {
                        Some(v) => t.configs.insert(key.clone(), v.clone()),
                        None => t.configs.remove(key),
                    };
                }
            }
        }
        debug_assert_eq!(self.check_invariants(), Ok(()));
        Ok(())
    }

    fn check_epoch(&self, broker_id: BrokerId, epoch: i64) -> Result<(), ImageError> {
        match self.brokers.get(&broker_id) {
            None => Err(ImageError::UnknownBroker { broker_id }),
            Some(b) if b.epoch != epoch => Err(ImageError::StaleBrokerEpoch {
                broker_id,
                current: b.epoch,
                given: epoch,
            }),
            Some(_) => Ok(()),
        }
    }

    /// A broker is fenced, replaced or removed only once it leads nothing.
    fn check_leads_nothing(&self, broker_id: BrokerId) -> Result<(), ImageError> {
        match self.partitions().find(|(_, _, p)| p.leader == broker_id) {
            None => Ok(()),
            Some((t, partition, _)) => Err(ImageError::BadPartition {
                id: t.id,
                partition,
                reason: "still led by a broker being fenced, replaced or removed".into(),
            }),
        }
    }

    fn broker_mut(
        &mut self,
        broker_id: BrokerId,
        epoch: i64,
    ) -> Result<&mut BrokerRegistration, ImageError> {
        self.check_epoch(broker_id, epoch)?;
        self.brokers
            .get_mut(&broker_id)
            .ok_or(ImageError::UnknownBroker { broker_id })
    }

    fn create_topic(
        &mut self,
        id: TopicId,
        name: &str,
        configs: &BTreeMap<String, String>,
        partitions: &[PartitionAssignment],
    ) -> Result<(), ImageError> {
        if self.topics.contains_key(name) {
            return Err(ImageError::DuplicateTopicName { name: name.into() });
        }
        if id == [0; 16] || self.topic_by_id(&id).is_some() {
            return Err(ImageError::BadTopicId { id });
        }
        let partitions = self.new_partitions(&id, 0, partitions)?;
        self.topics.insert(
            name.to_owned(),
            Topic {
                id,
                name: name.to_owned(),
                configs: configs.clone(),
                partitions,
            },
        );
        Ok(())
    }

    fn new_partitions(
        &self,
        id: &TopicId,
        first: usize,
        assignments: &[PartitionAssignment],
    ) -> Result<Vec<Partition>, ImageError> {
        let mut out = Vec::with_capacity(assignments.len());
        for (i, a) in assignments.iter().enumerate() {
            let p = Partition {
                replicas: a.replicas.clone(),
                isr: a.isr.clone(),
                leader: a.leader,
                leader_epoch: 0,
                partition_epoch: 0,
            };
            let partition = i32::try_from(first + i).unwrap_or(i32::MAX);
            check_partition(&p).map_err(|reason| ImageError::BadPartition {
                id: *id,
                partition,
                reason: reason.into(),
            })?;
            self.check_new_leader(id, partition, a.leader)?;
            out.push(p);
        }
        Ok(out)
    }

    fn check_new_leader(
        &self,
        id: &TopicId,
        partition: i32,
        leader: BrokerId,
    ) -> Result<(), ImageError> {
        if leader == NO_LEADER || self.brokers.get(&leader).is_some_and(|b| !b.fenced) {
            return Ok(());
        }
        Err(ImageError::BadPartition {
            id: *id,
            partition,
            reason: "the new leader is not a registered unfenced broker".into(),
        })
    }

    fn change_partition(
        &mut self,
        id: &TopicId,
        partition: i32,
        leader: Option<BrokerId>,
        isr: &Option<Vec<BrokerId>>,
        replicas: &Option<Vec<BrokerId>>,
    ) -> Result<(), ImageError> {
        let name = self.topic_name_by_id(id)?;
        let unknown = ImageError::UnknownPartition { id: *id, partition };
        let old = usize::try_from(partition)
            .ok()
            .and_then(|p| self.topics.get(&name)?.partitions.get(p))
            .ok_or(unknown.clone())?;
        let mut new = old.clone();
        if let Some(r) = replicas {
            new.replicas = r.clone();
        }
        if let Some(i) = isr {
            new.isr = i.clone();
        }
        if let Some(l) = leader {
            new.leader = l;
        }
        let bad = |reason: &str| ImageError::BadPartition {
            id: *id,
            partition,
            reason: reason.into(),
        };
        check_partition(&new).map_err(bad)?;
        let leader_changed = new.leader != old.leader;
        if leader_changed {
            self.check_new_leader(id, partition, new.leader)?;
            new.leader_epoch = old
                .leader_epoch
                .checked_add(1)
                .ok_or(bad("epoch overflow"))?;
        }
        if leader_changed || new.isr != old.isr || new.replicas != old.replicas {
            new.partition_epoch = old
                .partition_epoch
                .checked_add(1)
                .ok_or(bad("epoch overflow"))?;
        }
        assert!(new.leader_epoch >= old.leader_epoch && new.partition_epoch >= old.partition_epoch);
        let slot = usize::try_from(partition)
            .ok()
            .and_then(|p| self.topics.get_mut(&name)?.partitions.get_mut(p))
            .ok_or(unknown)?;
        *slot = new;
        Ok(())
    }

    /// Checks every invariant of the module doc over the whole image.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut ids = std::collections::BTreeSet::new();
        for (name, t) in &self.topics {
            if name != &t.name || t.id == [0; 16] || !ids.insert(t.id) {
                return Err(format!("topic {name:?}: bad name or duplicate/zero id"));
            }
            for (i, p) in t.partitions.iter().enumerate() {
                check_partition(p).map_err(|r| format!("{name}-{i}: {r}"))?;
                if p.leader != NO_LEADER && self.brokers.get(&p.leader).is_some_and(|b| b.fenced) {
                    return Err(format!("{name}-{i}: led by fenced broker {}", p.leader));
                }
            }
        }
        let mut blocks: Vec<_> = self.producer_id_blocks.values().collect();
        blocks.sort_by_key(|b| b.first_id);
        for w in blocks.windows(2) {
            if w[0].first_id + i64::from(w[0].size) > w[1].first_id {
                return Err(format!("producer-id blocks overlap: {:?}", w));
            }
        }
        if blocks
            .last()
            .is_some_and(|b| b.first_id + i64::from(b.size) > self.next_producer_id)
        {
            return Err("a producer-id block passes the next free id".into());
        }
        Ok(())
    }

    /// Partitions (topic, index) whose replica list names `broker`.
    pub fn partitions_of(
        &self,
        broker: BrokerId,
    ) -> impl Iterator<Item = (&Topic, i32, &Partition)> {
        self.partitions()
            .filter(move |(_, _, p)| p.replicas.contains(&broker))
    }

    /// Every partition, in topic-name order.
    pub fn partitions(&self) -> impl Iterator<Item = (&Topic, i32, &Partition)> {
        self.topics.values().flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .map(move |(i, p)| (t, i32::try_from(i).unwrap_or(i32::MAX), p))
        })
    }

    /// The broker that coordinates `group_id`: the leader of its `__consumer_offsets`
    /// partition, or `None` while that topic is missing or the partition has no leader.
    pub fn group_coordinator(&self, group_id: &str) -> Option<BrokerId> {
        let topic = self.topics.get(CONSUMER_OFFSETS_TOPIC)?;
        let count = i32::try_from(topic.partitions.len()).ok()?;
        let p = group_partition(group_id, count);
        let leader = topic.partitions.get(usize::try_from(p).ok()?)?.leader;
        (leader != NO_LEADER).then_some(leader)
    }
}

/// Checks one partition's shape; the reason on failure.
fn check_partition(p: &Partition) -> Result<(), &'static str> {
    if p.replicas.is_empty() {
        return Err("no replicas");
    }
    if has_duplicates(&p.replicas) || has_duplicates(&p.isr) {
        return Err("duplicate broker in replicas or ISR");
    }
    if p.isr.is_empty() || !p.isr.iter().all(|b| p.replicas.contains(b)) {
        return Err("ISR empty or not a subset of the replicas");
    }
    if p.leader != NO_LEADER && !p.isr.contains(&p.leader) {
        return Err("leader outside the ISR");
    }
    Ok(())
}

fn has_duplicates(v: &[BrokerId]) -> bool {
    v.iter().enumerate().any(|(i, b)| v[..i].contains(b))
}

/// Java's `String.hashCode` over UTF-16 code units, as Kafka uses to place groups. The
/// broker's group coordinator (net's `group::store::partition_for`) uses the same function:
/// both must agree.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__consumer_offsets` partition of a group: `abs(hashCode) % partitions`, with
/// Kafka's `Utils.abs` (which maps `i32::MIN` to 0).
pub fn group_partition(group_id: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}
