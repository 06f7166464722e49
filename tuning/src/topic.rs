//! Topic-level configuration (CreateTopics, DescribeConfigs, AlterConfigs).
//!
//! A topic's settings are the broker's `log.*` defaults plus the keys set for that topic
//! (its overrides). The overrides are tracked by name, not by comparing values, as Kafka
//! does: a topic that set `retention.ms` keeps it when the broker's default later changes,
//! even if the two were once equal. Only the overrides are persisted
//! ([`TopicConfig::overrides`]); on startup they are applied again over the current defaults
//! ([`TopicConfig::with_overrides`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::broker::{BrokerConfig, ConfigEntry};
use crate::choice::{CleanupPolicy, FlushMode, TimestampType};
use crate::error::{unknown_key, ConfigError};
use crate::value::{self, Bounds, Raw, INT32_MAX};

/// Every topic-level key, in the order DescribeConfigs lists them.
pub const TOPIC_KEYS: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "index.interval.bytes",
    "flush",
    "flush.ms",
    "message.timestamp.type",
    "max.message.bytes",
    "min.insync.replicas",
];

/// The broker keys that may change while the broker runs (AlterConfigs of the broker, as
/// Kafka's cluster-wide dynamic defaults): each is the default of the topic key beside it,
/// for every topic that does not set that key itself.
pub const DYNAMIC_BROKER_KEYS: &[(&str, &str)] = &[
    ("log.retention.ms", "retention.ms"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.segment.bytes", "segment.bytes"),
    ("log.roll.ms", "segment.ms"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("flush", "flush"),
    ("log.flush.interval.ms", "flush.ms"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("message.max.bytes", "max.message.bytes"),
    ("min.insync.replicas", "min.insync.replicas"),
];

/// The topic key whose default the dynamic broker key `key` is.
pub fn dynamic_topic_key(key: &str) -> Option<&'static str> {
    DYNAMIC_BROKER_KEYS
        .iter()
        .find(|(b, _)| *b == key)
        .map(|(_, t)| *t)
}

/// One topic's effective settings, and which of them the topic overrides.
///
/// Change settings through [`TopicConfig::apply`] and [`TopicConfig::reset`], which keep
/// the record of overrides; the fields are public for reading. Ranges are the engine's
/// (`tern_engine::config::LogConfig::validate`), so an accepted value is one the log accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// `retention.ms`: -1 or ≥ 1.
    pub retention_ms: i64,
    /// `retention.bytes`: -1 or ≥ 1.
    pub retention_bytes: i64,
    /// `segment.bytes`: 4096 to 2147483647.
    pub segment_bytes: u32,
    /// `segment.ms`: ≥ 1.
    pub segment_ms: i64,
    /// `index.interval.bytes`: ≥ 1.
    pub index_interval_bytes: u32,
    /// `flush` (ours).
    pub flush: FlushMode,
    /// `flush.ms`: the fdatasync period under `flush = interval`, ≥ 1.
    pub flush_interval_ms: i64,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `max.message.bytes`: the largest record batch, 0 to 2147483647.
    pub max_message_bytes: u32,
    /// `cleanup.policy`: `delete` only (compaction is not built yet).
    pub cleanup_policy: CleanupPolicy,
    /// `min.insync.replicas`: the smallest ISR an acks=all produce is accepted with, ≥ 1.
    pub min_insync_replicas: i32,
    /// The keys (from [`TOPIC_KEYS`]) this topic sets itself.
    overridden: BTreeSet<&'static str>,
}

impl TopicConfig {
    /// A topic that overrides nothing: the broker's `log.*` defaults.
    pub fn defaults_from(broker: &BrokerConfig) -> Self {
        TopicConfig {
            retention_ms: broker.log_retention_ms,
            retention_bytes: broker.log_retention_bytes,
            segment_bytes: broker.log_segment_bytes,
            segment_ms: broker.log_roll_ms,
            index_interval_bytes: broker.log_index_interval_bytes,
            flush: broker.flush,
            flush_interval_ms: broker.log_flush_interval_ms,
            timestamp_type: broker.log_message_timestamp_type,
            max_message_bytes: broker.message_max_bytes,
            cleanup_policy: CleanupPolicy::Delete,
            min_insync_replicas: broker.min_insync_replicas,
            overridden: BTreeSet::new(),
        }
    }

    /// The broker's defaults with the dynamic broker values (`dynamic`, by broker key, see
    /// [`DYNAMIC_BROKER_KEYS`]) in place of the config file's; no key is overridden. The
    /// first key that may not change or bad value is the error, naming the broker key.
    pub fn defaults_with<K: AsRef<str>, V: AsRef<str>>(
        broker: &BrokerConfig,
        dynamic: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = Self::defaults_from(broker);
        for (key, value) in dynamic {
            let key = key.as_ref();
            let topic_key = dynamic_topic_key(key).ok_or_else(|| {
                ConfigError::from(crate::error::ConfigErrorKind::Unsupported {
                    key: key.to_string(),
                    what: "changing it while the broker runs".into(),
                    instead: "the config file and a restart".into(),
                })
            })?;
            cfg.apply(topic_key, value.as_ref())
                .map_err(|e| e.said_of(key))?;
        }
        cfg.overridden.clear();
        Ok(cfg)
    }

    /// `defaults` with `overrides` applied in order (CreateTopics' configs, or the persisted
    /// overrides on startup). The first bad key or value is the error.
    pub fn with_overrides<K: AsRef<str>, V: AsRef<str>>(
        defaults: &TopicConfig,
        overrides: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = defaults.clone();
        cfg.overridden.clear();
        for (key, value) in overrides {
            cfg.apply(key.as_ref(), value.as_ref())?;
        }
        Ok(cfg)
    }

    /// Sets `key` (a Kafka topic config name) to `value` (a string, as Kafka requests carry
    /// it) and records it as this topic's override. On error nothing changes.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let name = known(key)?;
        let raw = Raw::Text(value);
        let unlimited = Bounds::unlimited_or_at_least(1);
        let positive = Bounds::at_least(1);
        match name {
            "cleanup.policy" => self.cleanup_policy = value::choice(name, raw)?,
            "retention.ms" => self.retention_ms = value::int(name, raw, unlimited)?,
            "retention.bytes" => self.retention_bytes = value::int(name, raw, unlimited)?,
            "segment.bytes" => {
                self.segment_bytes = value::int(name, raw, Bounds::between(4096, INT32_MAX))?
            }
            "segment.ms" => self.segment_ms = value::int(name, raw, positive)?,
            "index.interval.bytes" => {
                self.index_interval_bytes = value::int(name, raw, Bounds::between(1, INT32_MAX))?
            }
            "flush" => self.flush = value::choice(name, raw)?,
            "flush.ms" => self.flush_interval_ms = value::int(name, raw, positive)?,
            "message.timestamp.type" => self.timestamp_type = value::choice(name, raw)?,
            "max.message.bytes" => {
                self.max_message_bytes = value::int(name, raw, Bounds::between(0, INT32_MAX))?
            }
            "min.insync.replicas" => {
                self.min_insync_replicas = value::int(name, raw, Bounds::between(1, INT32_MAX))?
            }
            _ => return Err(unknown_key(key, TOPIC_KEYS).into()),
        }
        self.overridden.insert(name);
        Ok(())
    }

    /// Removes this topic's override of `key`: it takes `defaults`' value again.
    pub fn reset(&mut self, key: &str, defaults: &TopicConfig) -> Result<(), ConfigError> {
        let name = known(key)?;
        let value = defaults.value(name);
        self.apply(name, &value)?;
        self.overridden.remove(name);
        Ok(())
    }

    /// Whether this topic sets `key` itself.
    pub fn is_overridden(&self, key: &str) -> bool {
        self.overridden.contains(key)
    }

    /// The keys this topic sets itself, with their values: what to persist.
    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.overridden
            .iter()
            .map(|k| ((*k).to_owned(), self.value(k)))
            .collect()
    }

    /// DescribeConfigs rows for this topic: every key, `is_default` when not overridden.
    pub fn entries(&self) -> Vec<ConfigEntry> {
        TOPIC_KEYS
            .iter()
            .map(|name| ConfigEntry {
                name,
                value: self.value(name),
                is_default: !self.is_overridden(name),
                read_only: false,
            })
            .collect()
    }

    /// `key`'s value as Kafka shows it; empty for an unknown key (callers pass known keys).
    fn value(&self, key: &str) -> String {
        match key {
            "cleanup.policy" => self.cleanup_policy.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "flush" => self.flush.to_string(),
            "flush.ms" => self.flush_interval_ms.to_string(),
            "message.timestamp.type" => self.timestamp_type.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            _ => String::new(),
        }
    }
}

/// The static name of a known topic key, or the unknown-key error.
fn known(key: &str) -> Result<&'static str, ConfigError> {
    TOPIC_KEYS
        .iter()
        .find(|k| **k == key)
        .copied()
        .ok_or_else(|| unknown_key(key, TOPIC_KEYS).into())
}
