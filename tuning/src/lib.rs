//! # tern-tuning: configuration and core placement
//!
//! This crate owns what the operator decides: the broker's configuration file, every topic's
//! settings, which CPUs run shards, and which shard owns each partition. It does no IO beyond
//! reading the configuration file and the process's CPU affinity, and depends on neither the
//! engine nor the network layer: its enums are its own, and the broker maps them.
//!
//! ## The tour
//!
//! * [`BrokerConfig`] is `tern serve --config tern.toml`: Kafka's key names where the meaning
//!   is the same (`node.id`, `listeners`, `log.dirs`, `log.retention.ms`, …) plus ours
//!   (`cores`, `placement`, `[pins]`, `shard.nice`, `flush`, `io.direct`, `log.hot.bytes`).
//!   [`BrokerConfig::to_toml_string`] is `tern serve --print-config`. `tern.example.toml`
//!   beside this crate lists every key with its default.
//! * [`TopicConfig`] is a topic's settings under Kafka's topic-level names (`retention.ms`,
//!   `segment.bytes`, …): the broker's defaults plus the topic's overrides, for CreateTopics,
//!   DescribeConfigs and AlterConfigs.
//! * [`place`] maps a partition to a shard: explicit pins first, then the policy, with a
//!   hash that is the same in every process and release.
//! * [`available_cores`] is the set of CPUs this process may run on (its affinity mask).
//! * [`validate_topic_name`] applies Kafka's topic name rules.
//!
//! ## Invariants
//!
//! * A wrong key, type or value is an error, never ignored or silently corrected; every
//!   [`ConfigError`] displays as one line naming the key and what it allows.
//! * A parsed [`BrokerConfig`] is complete and valid: `cores` is non-empty, without
//!   duplicates, and within the process's affinity; every pin names an existing shard;
//!   every `log.*` value is in the range the engine accepts.
//! * [`BrokerConfig::to_toml_string`] parses back to an equal configuration.
//! * Placement depends only on configuration and names, never on what is on disk, so changing
//!   `cores` and restarting re-places every partition.

mod broker;
mod choice;
mod cluster;
mod cores;
mod error;
mod listener;
mod placement;
mod topic;
mod topic_name;
mod value;

pub use broker::{
    BrokerConfig, ConfigEntry, GroupSettings, BROKER_KEYS, DEFAULT_LISTENER, DEFAULT_LOG_DIR,
};
pub use choice::{CleanupPolicy, DirectIo, FlushMode, PlacementPolicy, TimestampType};
pub use cluster::{ClusterConfig, ProcessRoles, QuicTls, Voter};
pub use cores::{available_cores, format_cpu_list, parse_cpu_list};
pub use error::{ConfigError, ConfigErrorKind};
pub use listener::HostPort;
pub use placement::{place, stable_hash, Pins};
pub use topic::{dynamic_topic_key, TopicConfig, DYNAMIC_BROKER_KEYS, TOPIC_KEYS};
pub use topic_name::{validate_topic_name, TopicNameError, TOPIC_NAME_LEN_MAX};
