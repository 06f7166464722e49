//! The API edge: the one table from `net/`'s typed errors ([`crate::error`]) to Kafka's
//! error codes. Only the code that encodes responses (`api`, `cluster`'s Metadata, the group
//! handlers) calls it; everything behind it passes typed errors.

use kafka_protocol::ResponseError;
use tern_engine::producer::SequenceError;
use tern_engine::{AppendError, LogError};
use tern_replication::node::RequestError;
use tern_replication::replica::AckError;

use crate::error::{AdminError, PartitionError};

impl PartitionError {
    /// Kafka's error code for this refusal.
    pub fn kafka_code(&self) -> i16 {
        let e = match self {
            PartitionError::Unknown => ResponseError::UnknownTopicOrPartition,
            PartitionError::UnknownTopicId => ResponseError::UnknownTopicId,
            PartitionError::NotLeader => ResponseError::NotLeaderOrFollower,
            PartitionError::Corrupt => ResponseError::CorruptMessage,
            PartitionError::TooLarge { .. } => ResponseError::MessageTooLarge,
            PartitionError::InvalidAcks(_) => ResponseError::InvalidRequiredAcks,
            PartitionError::InvalidTimestamp(_) => ResponseError::InvalidRequest,
            PartitionError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            PartitionError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
            PartitionError::Append(a) => append(a),
            PartitionError::Read(r) => read(r),
            PartitionError::Ack(a) => match a {
                AckError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
                AckError::NotEnoughReplicasAfterAppend => {
                    ResponseError::NotEnoughReplicasAfterAppend
                }
                AckError::Timeout => ResponseError::RequestTimedOut,
                AckError::NotLeader => ResponseError::NotLeaderOrFollower,
            },
        };
        e.code()
    }
}

fn append(e: &AppendError) -> ResponseError {
    match e {
        AppendError::Batch(_) => ResponseError::CorruptMessage,
        AppendError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        AppendError::DiskFull { .. } | AppendError::Poisoned { .. } => {
            ResponseError::KafkaStorageError
        }
        AppendError::Truncating | AppendError::Closed => ResponseError::NotLeaderOrFollower,
        AppendError::Sequence(SequenceError::StaleEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        AppendError::Sequence(_) => ResponseError::OutOfOrderSequenceNumber,
        // Only replicated appends (from a leader, never a client) are refused so.
        AppendError::NotContiguous { .. } | AppendError::Epoch { .. } => {
            ResponseError::UnknownServerError
        }
    }
}

fn read(e: &LogError) -> ResponseError {
    match e {
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Closed => ResponseError::NotLeaderOrFollower,
        LogError::Io { .. } | LogError::Poisoned { .. } => ResponseError::KafkaStorageError,
        LogError::Epoch(_) => ResponseError::FencedLeaderEpoch,
    }
}

impl AdminError {
    /// Kafka's error code for this refusal.
    pub fn kafka_code(&self) -> i16 {
        let e = match self {
            AdminError::InvalidTopic(_) => ResponseError::InvalidTopicException,
            AdminError::TopicExists(_) => ResponseError::TopicAlreadyExists,
            AdminError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
            AdminError::TooFewPartitions(_) | AdminError::PartitionsNotIncreased { .. } => {
                ResponseError::InvalidPartitions
            }
            AdminError::ReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
            AdminError::ReplicaAssignment { .. } => ResponseError::InvalidReplicaAssignment,
            AdminError::Config(_) | AdminError::NotAList(_) => ResponseError::InvalidConfig,
            AdminError::DuplicateConfig(_) | AdminError::ReadOnlyConfig(_) => {
                ResponseError::InvalidRequest
            }
            AdminError::UnknownBrokerConfig(_) => ResponseError::InvalidConfig,
            AdminError::Persist(_)
            | AdminError::Open { .. }
            | AdminError::ShardGone(_)
            | AdminError::ProducerIds(_) => ResponseError::KafkaStorageError,
            AdminError::Controller(RequestError::Controller(c)) => return c.kafka_code(),
            AdminError::Controller(RequestError::Timeout(_)) | AdminError::NotYetApplied(_) => {
                ResponseError::RequestTimedOut
            }
            AdminError::Controller(RequestError::Stopped | RequestError::Busy) => {
                ResponseError::NotController
            }
            AdminError::Unexpected(_) => ResponseError::UnknownServerError,
            AdminError::NotRegistered | AdminError::WriterStopped => {
                ResponseError::CoordinatorNotAvailable
            }
        };
        e.code()
    }

    /// Whether the topic this request named exists already (a lost creation race).
    pub fn is_topic_exists(&self) -> bool {
        self.kafka_code() == ResponseError::TopicAlreadyExists.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_error_has_a_code_other_than_none() {
        let all = [
            PartitionError::Unknown,
            PartitionError::UnknownTopicId,
            PartitionError::NotLeader,
            PartitionError::Corrupt,
            PartitionError::TooLarge { len: 2, max: 1 },
            PartitionError::InvalidAcks(7),
            PartitionError::InvalidTimestamp(-5),
            PartitionError::Append(AppendError::Closed),
            PartitionError::Read(LogError::Closed),
        ];
        for e in &all {
            assert_ne!(e.kafka_code(), 0, "{e}");
        }
        assert_eq!(
            PartitionError::Unknown.kafka_code(),
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(
            PartitionError::Append(AppendError::Truncating).kafka_code(),
            ResponseError::NotLeaderOrFollower.code()
        );
    }

    #[test]
    fn admin_errors_keep_kafka_meanings() {
        assert!(AdminError::TopicExists("t".into()).is_topic_exists());
        let controller =
            tern_replication::decide::ControllerError::TopicAlreadyExists { name: "t".into() };
        assert!(AdminError::Controller(RequestError::Controller(controller)).is_topic_exists());
        assert_eq!(
            AdminError::Controller(RequestError::Timeout(5)).kafka_code(),
            ResponseError::RequestTimedOut.code()
        );
        assert_eq!(
            AdminError::TooFewPartitions(0).kafka_code(),
            ResponseError::InvalidPartitions.code()
        );
        assert_eq!(
            AdminError::ReplicationFactor {
                requested: 3,
                brokers: 1
            }
            .kafka_code(),
            ResponseError::InvalidReplicationFactor.code()
        );
    }
}
