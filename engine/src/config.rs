//! Per-partition log settings, named like Kafka's topic configs where the meaning is the same
//! (`segment.bytes` → `segment_bytes`, …).

use thiserror::Error;

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Durable (RWF_DSYNC write, or write + fdatasync) before the append completes. Default.
    Always,
    /// Written before the append completes; fdatasync every `flush_interval_ms` (driven by
    /// [`crate::Log::tick`]).
    Interval,
    /// Written before the append completes; synced only at roll and close.
    Never,
}

/// Which timestamp a batch carries (Kafka's `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Settings of one partition log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll to a new segment before one would exceed this size (`segment.bytes`).
    pub segment_bytes: u32,
    /// Roll a segment whose first append is older than this (`segment.ms`).
    pub segment_ms: i64,
    /// Bytes between offset index entries (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Delete closed segments whose newest record is older than this; -1: never
    /// (`retention.ms`).
    pub retention_ms: i64,
    /// Delete the oldest closed segments while the log is larger than this; -1: unlimited
    /// (`retention.bytes`).
    pub retention_bytes: i64,
    /// Durability of appends.
    pub flush: FlushPolicy,
    /// fdatasync period under [`FlushPolicy::Interval`] (`flush.ms`).
    pub flush_interval_ms: i64,
    /// CreateTime keeps the client's timestamps; LogAppendTime stamps each batch.
    pub timestamp_type: TimestampType,
    /// Most recently written bytes kept in memory for reads without disk IO.
    pub hot_bytes_max: usize,
    /// Largest single coalesced write (group commit bound).
    pub write_bytes_max: usize,
    /// Under `flush = always`, bytes of the active segment written with zeros (and synced)
    /// ahead of the data, so that durable writes land on allocated, already written blocks
    /// and need no file-size or extent change: each such write then costs one device flush
    /// and no journal commit. 0 disables.
    pub prepare_bytes: u64,
    /// Forget an idempotent producer's sequence state after this long without a batch
    /// (`producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    /// Under `flush = interval` or `never` (and behind the shard journal), blocks of the
    /// active segment are reserved (fallocate) ahead of the data, as much again as is
    /// reserved already (from 1 MiB) up to this many bytes at a time: writes then neither
    /// extend the file nor allocate blocks (a full disk shows before an append is accepted).
    /// Reserved blocks past the data are released at roll and on open. 0 disables.
    pub allocate_bytes: u64,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            index_interval_bytes: 4096,
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            flush: FlushPolicy::Always,
            flush_interval_ms: 1000,
            timestamp_type: TimestampType::CreateTime,
            hot_bytes_max: 4 << 20,
            write_bytes_max: 1 << 20,
            prepare_bytes: 1 << 20,
            producer_id_expiration_ms: DAY_MS,
            allocate_bytes: 64 << 20,
        }
    }
}

/// A setting out of its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{key} = {value}: {allowed}")]
pub struct ConfigError {
    pub key: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

impl LogConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, value: String, allowed| {
            Err(ConfigError {
                key,
                value,
                allowed,
            })
        };
        if self.segment_bytes < 4096 || self.segment_bytes > i32::MAX as u32 {
            return err(
                "segment_bytes",
                self.segment_bytes.to_string(),
                "4096 ..= 2147483647",
            );
        }
        if self.segment_ms < 1 {
            return err("segment_ms", self.segment_ms.to_string(), "at least 1");
        }
        if self.index_interval_bytes < 1 {
            return err(
                "index_interval_bytes",
                self.index_interval_bytes.to_string(),
                "at least 1",
            );
        }
        if self.retention_ms < -1 || self.retention_ms == 0 {
            return err(
                "retention_ms",
                self.retention_ms.to_string(),
                "-1 (unlimited) or > 0",
            );
        }
        if self.retention_bytes < -1 || self.retention_bytes == 0 {
            return err(
                "retention_bytes",
                self.retention_bytes.to_string(),
                "-1 (unlimited) or > 0",
            );
        }
        if self.flush_interval_ms < 1 {
            return err(
                "flush_interval_ms",
                self.flush_interval_ms.to_string(),
                "at least 1",
            );
        }
        if self.write_bytes_max < 4096 {
            return err(
                "write_bytes_max",
                self.write_bytes_max.to_string(),
                "at least 4096",
            );
        }
        Ok(())
    }
}
