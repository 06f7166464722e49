//! Workload files: the OpenMessaging Benchmark's YAML shape, plus a `driver` section.
//!
//! Results only line up with what Kafka and Redpanda publish if the workloads mean the same
//! thing, so the field names and meanings are OMB's (`topics`, `partitionsPerTopic`,
//! `producerRate` in records per second over all producers, 0 = as fast as possible, …).
//! OMB keeps the client settings in a separate driver file; here they are the `driver`
//! section of the same file, so one file is one reproducible run.
//!
//! Reading is strict: an unknown field is refused (a typo would silently fall back to a
//! default and measure something else), a missing required one is named, and
//! [`Workload::validate`] names the field whose value is out of range.

use kafka_protocol::records::Compression;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Smallest message: the first 8 bytes of every value carry the intended send time (ns).
pub const MESSAGE_BYTES_MIN: u64 = 8;
/// Largest message the harness sends (a record must fit a batch and a Fetch).
pub const MESSAGE_BYTES_MAX: u64 = 16 << 20;
/// Upper bound on pipelined Produce requests per connection.
pub const IN_FLIGHT_REQUESTS_MAX: u32 = 64;

/// Why a workload file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Syntax, a missing or unknown field, or a value of the wrong type; serde_yaml's message
    /// names the field (and its path, e.g. `driver.lingerMs`).
    #[error("{path}: {cause}")]
    Parse {
        path: String,
        cause: serde_yaml::Error,
    },
    #[error("{path}: field `{field}`: {reason}")]
    Invalid {
        path: String,
        field: &'static str,
        reason: String,
    },
}

/// How records get keys (OMB's `keyDistributor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyDistributor {
    /// No key; partitions are filled one batch at a time (the sticky partitioner of Kafka
    /// clients since 2.4).
    #[default]
    NoKey,
    /// Keys cycle through the partitions, one record each.
    KeyRoundRobin,
    /// The key is the send time in nanoseconds; the partition is a hash of it.
    RandomNano,
}

/// One workload file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    /// Bytes of each record's value.
    pub message_size: u64,
    /// A file whose bytes are every record's value (relative to the workload file);
    /// otherwise values are pseudo-random bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_file: Option<PathBuf>,
    #[serde(default)]
    pub key_distributor: KeyDistributor,
    /// Consumer groups per topic; each one reads every record.
    pub subscriptions_per_topic: u32,
    pub producers_per_topic: u32,
    pub consumer_per_subscription: u32,
    /// Records per second over all producers; 0 = as fast as the broker acknowledges.
    pub producer_rate: f64,
    /// Bytes written before the consumers start (a catch-up read), in GB (10^9 bytes).
    #[serde(default, rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: f64,
    /// Before the measured period; its figures are not reported (OMB default: 1 minute).
    #[serde(default = "default_warmup_minutes")]
    pub warmup_duration_minutes: f64,
    pub test_duration_minutes: f64,
    pub driver: Driver,
}

fn default_warmup_minutes() -> f64 {
    1.0
}

/// Client settings (OMB's driver file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Driver {
    /// `0`, `1` or `all` (`-1`).
    pub acks: Acks,
    /// How long a batch may wait for more records before it is sent.
    pub linger_ms: u64,
    /// A batch is sent once it holds this many bytes.
    pub batch_size_bytes: u64,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`: how each batch's records are compressed.
    #[serde(default = "default_compression")]
    pub compression: String,
    #[serde(default = "default_replication_factor")]
    pub replication_factor: u16,
    /// Pipelined Produce requests per connection (Kafka clients: 5).
    #[serde(default = "default_in_flight")]
    pub max_in_flight_requests: u32,
    /// How long the broker may hold a Fetch with nothing new.
    #[serde(default = "default_fetch_wait_ms")]
    pub fetch_max_wait_ms: u32,
    /// Topic configs given to CreateTopics (e.g. `flush.messages`).
    #[serde(default)]
    pub topic_config: BTreeMap<String, String>,
}

/// The codec named `name` (Kafka's `compression.type` names).
fn codec(name: &str) -> Option<Compression> {
    Some(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => return None,
    })
}

impl Driver {
    /// The batches' codec (validation refused unknown names).
    pub fn codec(&self) -> Compression {
        codec(&self.compression).unwrap_or(Compression::None)
    }
}

fn default_compression() -> String {
    "none".to_string()
}
fn default_replication_factor() -> u16 {
    1
}
fn default_in_flight() -> u32 {
    5
}
fn default_fetch_wait_ms() -> u32 {
    500
}

/// The acknowledgement a Produce request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AcksRepr", into = "AcksRepr")]
pub struct Acks(pub i16);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum AcksRepr {
    Num(i64),
    Text(String),
}

impl TryFrom<AcksRepr> for Acks {
    type Error = String;
    fn try_from(r: AcksRepr) -> Result<Acks, String> {
        match r {
            AcksRepr::Num(0) => Ok(Acks(0)),
            AcksRepr::Num(1) => Ok(Acks(1)),
            AcksRepr::Num(-1) => Ok(Acks(-1)),
            AcksRepr::Text(t) if t == "all" || t == "-1" => Ok(Acks(-1)),
            AcksRepr::Text(t) if t == "0" || t == "1" => Ok(Acks(if t == "0" { 0 } else { 1 })),
            other => Err(format!("acks must be 0, 1 or all, not {other:?}")),
        }
    }
}

impl From<Acks> for AcksRepr {
    fn from(a: Acks) -> AcksRepr {
        match a.0 {
            -1 => AcksRepr::Text("all".to_string()),
            n => AcksRepr::Num(i64::from(n)),
        }
    }
}

impl Workload {
    /// Reads and validates a workload file.
    pub fn from_file(path: &Path) -> Result<Workload, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|cause| SpecError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let mut w = Workload::parse(&text, &path.display().to_string())?;
        if let (Some(p), Some(dir)) = (&w.payload_file, path.parent()) {
            if p.is_relative() {
                w.payload_file = Some(dir.join(p));
            }
        }
        Ok(w)
    }

    /// Parses and validates workload text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Workload, SpecError> {
        let w: Workload = serde_yaml::from_str(text).map_err(|cause| SpecError::Parse {
            path: origin.to_string(),
            cause,
        })?;
        w.validate(origin)?;
        Ok(w)
    }

    /// Checks every value's range; the error names the field.
    pub fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = |field: &'static str, reason: String| {
            Err(SpecError::Invalid {
                path: origin.to_string(),
                field,
                reason,
            })
        };
        let d = &self.driver;
        if self.name.trim().is_empty() {
            return bad("name", "must not be empty".into());
        }
        if self.topics == 0 {
            return bad("topics", "must be at least 1".into());
        }
        if self.partitions_per_topic == 0 {
            return bad("partitionsPerTopic", "must be at least 1".into());
        }
        if !(MESSAGE_BYTES_MIN..=MESSAGE_BYTES_MAX).contains(&self.message_size) {
            let (lo, hi) = (MESSAGE_BYTES_MIN, MESSAGE_BYTES_MAX);
            return bad(
                "messageSize",
                format!("must be in {lo}..={hi} bytes (the first 8 carry the send time)"),
            );
        }
        if self.producers_per_topic == 0 {
            return bad("producersPerTopic", "must be at least 1".into());
        }
        if self.subscriptions_per_topic > 0 && self.consumer_per_subscription == 0 {
            return bad(
                "consumerPerSubscription",
                "must be at least 1 when there are subscriptions".into(),
            );
        }
        if !self.producer_rate.is_finite() || self.producer_rate < 0.0 {
            return bad(
                "producerRate",
                "must be 0 (maximum) or a positive rate".into(),
            );
        }
        if !self.consumer_backlog_size_gb.is_finite() || self.consumer_backlog_size_gb < 0.0 {
            return bad("consumerBacklogSizeGB", "must be 0 or positive".into());
        }
        if self.consumer_backlog_size_gb > 0.0 && self.subscriptions_per_topic == 0 {
            return bad(
                "consumerBacklogSizeGB",
                "needs subscriptionsPerTopic >= 1".into(),
            );
        }
        if !self.warmup_duration_minutes.is_finite() || self.warmup_duration_minutes < 0.0 {
            return bad("warmupDurationMinutes", "must be 0 or positive".into());
        }
        if !self.test_duration_minutes.is_finite() || self.test_duration_minutes <= 0.0 {
            return bad("testDurationMinutes", "must be positive".into());
        }
        if codec(&d.compression).is_none() {
            return bad(
                "driver.compression",
                format!(
                    "{:?}: expected none, gzip, snappy, lz4 or zstd",
                    d.compression
                ),
            );
        }
        if d.replication_factor == 0 {
            return bad("driver.replicationFactor", "must be at least 1".into());
        }
        if d.batch_size_bytes < self.message_size {
            return bad(
                "driver.batchSizeBytes",
                format!("must be at least messageSize ({})", self.message_size),
            );
        }
        if d.max_in_flight_requests == 0 || d.max_in_flight_requests > IN_FLIGHT_REQUESTS_MAX {
            return bad(
                "driver.maxInFlightRequests",
                format!("must be in 1..={IN_FLIGHT_REQUESTS_MAX}"),
            );
        }
        Ok(())
    }

    /// The value of every record (before the send time is written into its first 8 bytes).
    pub fn payload(&self) -> Result<Vec<u8>, SpecError> {
        let Some(path) = &self.payload_file else {
            return Ok(random_bytes(self.message_size as usize, 0x7e57_1a7e));
        };
        let bytes = std::fs::read(path).map_err(|cause| SpecError::Read {
            path: path.clone(),
            cause,
        })?;
        if bytes.len() as u64 != self.message_size {
            return Err(SpecError::Invalid {
                path: path.display().to_string(),
                field: "payloadFile",
                reason: format!(
                    "holds {} bytes but messageSize is {}",
                    bytes.len(),
                    self.message_size
                ),
            });
        }
        Ok(bytes)
    }

    /// Producers over all topics.
    pub fn producers_total(&self) -> u32 {
        self.topics * self.producers_per_topic
    }

    /// Consumers over all topics and subscriptions.
    pub fn consumers_total(&self) -> u32 {
        self.topics * self.subscriptions_per_topic * self.consumer_per_subscription
    }
}

/// Pseudo-random bytes (xorshift64*), so that payloads do not compress to nothing.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
name: test
topics: 1
partitionsPerTopic: 8
messageSize: 1024
keyDistributor: KEY_ROUND_ROBIN
subscriptionsPerTopic: 1
producersPerTopic: 1
consumerPerSubscription: 1
producerRate: 20480
consumerBacklogSizeGB: 0
warmupDurationMinutes: 0
testDurationMinutes: 0.1
driver:
  acks: all
  lingerMs: 1
  batchSizeBytes: 131072
  topicConfig:
    flush.messages: '1'
";

    fn err_of(text: &str) -> String {
        match Workload::parse(text, "w.yaml") {
            Ok(w) => panic!("accepted: {w:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Guards that a complete file parses with OMB's meanings and the driver's defaults.
    #[test]
    fn parses_a_good_file() {
        let w = Workload::parse(GOOD, "w.yaml").unwrap();
        assert_eq!(w.partitions_per_topic, 8);
        assert_eq!(w.key_distributor, KeyDistributor::KeyRoundRobin);
        assert_eq!(w.driver.acks, Acks(-1));
        assert_eq!(w.driver.max_in_flight_requests, 5);
        assert_eq!(w.driver.topic_config["flush.messages"], "1");
        assert_eq!(w.payload().unwrap().len(), 1024);
    }

    /// Guards that a missing required field is named.
    #[test]
    fn missing_field_is_named() {
        let text = GOOD.replace("messageSize: 1024\n", "");
        assert!(err_of(&text).contains("messageSize"), "{}", err_of(&text));
        let text = GOOD.replace("  lingerMs: 1\n", "");
        assert!(err_of(&text).contains("lingerMs"), "{}", err_of(&text));
    }

    /// Guards that a misspelt field is refused and named, not silently defaulted.
    #[test]
    fn unknown_field_is_named() {
        let text = GOOD.replace("producerRate:", "producerRat:");
        assert!(err_of(&text).contains("producerRat"), "{}", err_of(&text));
        let text = GOOD.replace("lingerMs:", "lingerMillis:");
        assert!(err_of(&text).contains("lingerMillis"), "{}", err_of(&text));
    }

    /// Guards that a value of the wrong type names its field and path.
    #[test]
    fn wrong_type_is_named() {
        let e = err_of(&GOOD.replace("lingerMs: 1", "lingerMs: soon"));
        assert!(e.contains("driver.lingerMs"), "{e}");
        let e = err_of(&GOOD.replace("acks: all", "acks: two"));
        assert!(e.contains("acks"), "{e}");
        let e = err_of(&GOOD.replace("KEY_ROUND_ROBIN", "ROUND_ROBIN"));
        assert!(e.contains("keyDistributor"), "{e}");
    }

    /// Guards the validation pass: out-of-range values name their field.
    #[test]
    fn bad_values_are_named() {
        let cases = [
            (
                "partitionsPerTopic: 8",
                "partitionsPerTopic: 0",
                "partitionsPerTopic",
            ),
            ("messageSize: 1024", "messageSize: 4", "messageSize"),
            ("producerRate: 20480", "producerRate: -1", "producerRate"),
            (
                "testDurationMinutes: 0.1",
                "testDurationMinutes: 0",
                "testDurationMinutes",
            ),
            (
                "batchSizeBytes: 131072",
                "batchSizeBytes: 100",
                "driver.batchSizeBytes",
            ),
            (
                "acks: all",
                "acks: all\n  compression: brotli",
                "driver.compression",
            ),
            (
                "producersPerTopic: 1",
                "producersPerTopic: 0",
                "producersPerTopic",
            ),
        ];
        for (from, to, field) in cases {
            let e = err_of(&GOOD.replace(from, to));
            assert!(e.contains(&format!("field `{field}`")), "{to}: {e}");
        }
    }

    /// Guards that a payload file must hold messageSize bytes.
    #[test]
    fn payload_file_size_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.data"), [1u8; 100]).unwrap();
        let wl = dir.path().join("w.yaml");
        std::fs::write(
            &wl,
            GOOD.replace("name: test", "name: test\npayloadFile: p.data"),
        )
        .unwrap();
        let w = Workload::from_file(&wl).unwrap();
        let e = w.payload().unwrap_err().to_string();
        assert!(e.contains("payloadFile"), "{e}");
    }
}
