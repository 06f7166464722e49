//! From the broker's configuration and a topic's overrides to the engine's [`LogConfig`].

use std::collections::BTreeMap;

use tern_engine::{FlushPolicy, JournalConfig, LogConfig, TimestampType};
use tern_tuning::{BrokerConfig, ConfigError, FlushMode, TopicConfig};

/// The effective topic configuration: the broker's defaults (the config file's, or the
/// dynamic ones of `dynamic`, by broker key) plus the topic's overrides.
pub fn topic_config(
    broker: &BrokerConfig,
    dynamic: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> Result<TopicConfig, ConfigError> {
    let mut t = TopicConfig::defaults_with(broker, dynamic)?;
    for (k, v) in overrides {
        t.apply(k, v)?;
    }
    Ok(t)
}

/// The engine settings of a partition of a topic with `overrides`.
pub fn log_config(
    broker: &BrokerConfig,
    dynamic: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> Result<LogConfig, ConfigError> {
    let t = topic_config(broker, dynamic, overrides)?;
    Ok(LogConfig {
        segment_bytes: t.segment_bytes,
        segment_ms: t.segment_ms,
        index_interval_bytes: t.index_interval_bytes,
        retention_ms: t.retention_ms,
        retention_bytes: t.retention_bytes,
        flush: match t.flush {
            FlushMode::Always => FlushPolicy::Always,
            FlushMode::Interval => FlushPolicy::Interval,
            FlushMode::Never => FlushPolicy::Never,
        },
        flush_interval_ms: t.flush_interval_ms,
        timestamp_type: match t.timestamp_type {
            tern_tuning::TimestampType::CreateTime => TimestampType::CreateTime,
            tern_tuning::TimestampType::LogAppendTime => TimestampType::LogAppendTime,
        },
        hot_bytes_max: broker.log_hot_bytes,
        producer_id_expiration_ms: broker.producer_id_expiration_ms,
        ..LogConfig::default()
    })
}

/// The shard journals' settings, or `None` when `journal.enable = false`.
pub fn journal_config(broker: &BrokerConfig) -> Option<JournalConfig> {
    broker.journal_enable.then_some(JournalConfig {
        file_bytes: broker.journal_file_bytes,
        files: broker.journal_files,
        inplace_bytes: broker.journal_inplace_bytes,
    })
}

/// Directory of all shard journals: `<log.dirs>/journal/<shard>`.
pub fn journal_root(broker: &BrokerConfig) -> std::path::PathBuf {
    broker.log_dir.join("journal")
}
