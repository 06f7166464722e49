//! The typed errors that cross `net/`'s module boundaries: what a shard answers about a
//! partition ([`PartitionError`]), why a shard could not open a topic's partitions
//! ([`OpenError`]) and why the metadata writer or the controller refused an admin request
//! ([`AdminError`]).
//!
//! None of them carries a Kafka error code: the one table from these errors to Kafka's
//! codes is [`crate::edge`], used only where a response is encoded.

use tern_engine::{AppendError, LogError};
use tern_replication::node::RequestError;
use tern_tuning::ConfigError;

use crate::meta::MetaError;

/// Why a shard could not serve a request for one partition.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The partition is not open on this broker (no such topic or partition here).
    #[error("unknown topic or partition")]
    Unknown,
    /// A request named a topic by an id no topic has (Produce v13+, Fetch v13+).
    #[error("unknown topic id")]
    UnknownTopicId,
    /// Another broker leads the partition, or its shard is gone (the broker is stopping).
    #[error("this broker is not the partition's leader")]
    NotLeader,
    /// The Produce carried no readable batch.
    #[error("the records are not a sequence of record batches")]
    Corrupt,
    /// A batch is larger than the topic's `max.message.bytes`.
    #[error("a batch of {len} bytes exceeds max.message.bytes = {max}")]
    TooLarge { len: usize, max: usize },
    /// `acks` other than -1, 0 or 1.
    #[error("acks must be -1, 0 or 1; got {0}")]
    InvalidAcks(i16),
    /// A ListOffsets timestamp that is neither a time nor a special value the request's
    /// version has (-1 latest, -2 earliest, -3 max timestamp from v7, -4 earliest local from
    /// v8, -5 latest tiered from v9).
    #[error("timestamp {0} is neither a time nor a special value of this ListOffsets version")]
    InvalidTimestamp(i64),
    /// The log refused the append.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The log could not be read (or its records deleted).
    #[error(transparent)]
    Read(#[from] LogError),
    /// The client's current leader epoch is older than the partition's: its metadata is
    /// stale.
    #[error("leader epoch {request} is older than the partition's {current}")]
    FencedLeaderEpoch { request: i32, current: i32 },
    /// The client's current leader epoch is newer than this broker knows of.
    #[error("leader epoch {request} is newer than the partition's {current}")]
    UnknownLeaderEpoch { request: i32, current: i32 },
    /// An acks=all produce was refused or its replication wait failed.
    #[error(transparent)]
    Ack(#[from] tern_replication::replica::AckError),
}

/// Why a shard could not open the partitions of a topic.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The topic's configuration overrides do not make a log configuration.
    #[error("topic '{topic}': {source}")]
    Config { topic: String, source: ConfigError },
    /// The partition's log could not be opened (or recovered).
    #[error("partition {topic}-{partition}: {source}")]
    Log {
        topic: String,
        partition: i32,
        source: tern_engine::OpenError,
    },
    /// The task that opened the partition panicked or was cancelled.
    #[error("partition {topic}-{partition}: the opening task failed: {reason}")]
    Task {
        topic: String,
        partition: i32,
        reason: String,
    },
    /// An open partition could not take its topic's new configuration.
    #[error("partition {topic}-{partition}: the new configuration: {reason}")]
    Reconfigure {
        topic: String,
        partition: i32,
        reason: String,
    },
    /// The shard's journal could not be opened.
    #[error("journal: {0}")]
    Journal(#[from] tern_engine::JournalError),
}

/// Why an admin request (CreateTopics, DeleteTopics, CreatePartitions, a producer id) was
/// refused or not answered.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("number of partitions must be at least 1, got {0}")]
    TooFewPartitions(i32),
    #[error("topic '{name}' has {current} partitions; the new count {requested} must be larger")]
    PartitionsNotIncreased {
        name: String,
        current: i32,
        requested: i32,
    },
    #[error(
        "replication factor {requested} is not possible: this cluster has {brokers} broker(s)"
    )]
    ReplicationFactor { requested: i16, brokers: usize },
    #[error("replicas may only be on broker {node} in this cluster")]
    ReplicaAssignment { node: i32 },
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A broker key that is read at startup only.
    #[error("broker config {0} cannot be changed while the broker runs: set it in the config file and restart")]
    ReadOnlyConfig(String),
    /// A broker key Tern does not know.
    #[error("unknown broker config {0}")]
    UnknownBrokerConfig(String),
    /// A key named twice in one resource of an AlterConfigs request.
    #[error("config key {0} is named more than once")]
    DuplicateConfig(String),
    /// APPEND or SUBTRACT on a key whose value is not a list.
    #[error("{0} is not a list: APPEND and SUBTRACT apply to list-valued keys (cleanup.policy)")]
    NotAList(String),
    /// The new topic table could not be persisted.
    #[error("persisting the topics: {0}")]
    Persist(#[from] MetaError),
    /// A shard could not open the new partitions.
    #[error("shard {shard}: {source}")]
    Open {
        shard: usize,
        source: Box<OpenError>,
    },
    /// A shard is no longer running (the broker is stopping).
    #[error(transparent)]
    ShardGone(#[from] crate::router::ShardGone),
    /// The controller refused or did not answer.
    #[error(transparent)]
    Controller(#[from] RequestError),
    /// The controller committed the change, but this broker has not applied it yet.
    #[error("{0}: committed, but not yet applied on this broker")]
    NotYetApplied(String),
    /// The controller answered with another request's reply (a bug, reported as such).
    #[error("the controller answered {0} with another request's reply")]
    Unexpected(&'static str),
    /// This broker has not registered with the controller yet.
    #[error("this broker is not registered with the controller yet")]
    NotRegistered,
    /// The local producer-id allocator failed.
    #[error("producer ids: {0}")]
    ProducerIds(#[from] crate::producer_ids::ProducerIdError),
    /// The metadata writer is gone (the broker is stopping).
    #[error("the metadata writer stopped")]
    WriterStopped,
}
