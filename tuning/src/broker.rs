//! The broker's configuration file (`tern serve --config tern.toml`).
//!
//! Keys are Kafka's `server.properties` names where the meaning is the same, plus ours
//! (`cores`, `placement`, `shard.nice`, `flush`, `io.direct`, `log.hot.bytes`, `[pins]`). TOML reads a
//! dotted key `log.dirs = "x"` as a nested table, so the document is flattened back into
//! dotted names (except `[pins]`, whose keys are `"topic/partition"`) and every name must be
//! a known key: a misspelt key is an error, never silently ignored. The printed form
//! ([`BrokerConfig::to_toml_string`]) parses back to an equal configuration.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::choice::{DirectIo, FlushMode, PlacementPolicy, TimestampType};
use crate::cluster::{self, ClusterConfig, QuicTls};
use crate::cores::{available_cores, format_cpu_list, parse_cpu_list, CPU_ID_MAX};
use crate::error::{unknown_key, ConfigError, ConfigErrorKind};
use crate::listener::{
    format_controller_listener, format_listener, parse_advertised_listeners, parse_listeners,
    HostPort,
};
use crate::placement::{parse_pin_key, place, Pins};
use crate::value::{self, describe, Bounds, Raw, INT32_MAX};

/// The table of explicit placements.
const PINS: &str = "pins";

/// Every key the file may hold, in the order the printed form lists them.
pub const BROKER_KEYS: &[&str] = &[
    "node.id",
    "listeners",
    "advertised.listeners",
    "log.dirs",
    "num.partitions",
    "default.replication.factor",
    "auto.create.topics.enable",
    "socket.request.max.bytes",
    "message.max.bytes",
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.hours",
    "log.retention.ms",
    "log.retention.minutes",
    "log.retention.hours",
    "log.retention.bytes",
    "log.index.interval.bytes",
    "log.flush.interval.ms",
    "log.message.timestamp.type",
    "flush",
    "io.direct",
    "log.hot.bytes",
    "journal.enable",
    "journal.file.bytes",
    "journal.files",
    "journal.inplace.bytes",
    "producer.id.expiration.ms",
    "min.insync.replicas",
    "replica.lag.time.max.ms",
    "offsets.topic.num.partitions",
    "offsets.topic.replication.factor",
    "offsets.topic.segment.bytes",
    "offsets.retention.minutes",
    "offsets.retention.check.interval.ms",
    "group.initial.rebalance.delay.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.max.size",
    "cores",
    "placement",
    "shard.nice",
    "metrics.listener",
    "controller.quorum.voters",
    "process.roles",
    "broker.session.timeout.ms",
    "broker.heartbeat.interval.ms",
    "controller.quorum.election.timeout.ms",
    "cluster.id",
    "broker.rack",
    "auto.leader.rebalance.enable",
    "quic.tls.cert",
    "quic.tls.key",
    "quic.tls.ca",
    PINS,
];

const MS_PER_MINUTE: i64 = 60 * 1000;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// The listener when none is configured.
pub const DEFAULT_LISTENER: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 9092);

/// The data directory when none is configured.
pub const DEFAULT_LOG_DIR: &str = "./tern-data";

/// The whole broker configuration, resolved: every field has its effective value.
///
/// Byte sizes and times carry their unit in the name; `-1` means unlimited where the doc says
/// so, as in Kafka. The `log_*` fields are the defaults of every topic's [`TopicConfig`]
/// (`crate::TopicConfig::defaults_from`).
///
/// [`TopicConfig`]: crate::TopicConfig
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// `node.id`: this broker's id, ≥ 0. Default 0.
    pub node_id: i32,
    /// `listeners`: the PLAINTEXT address to bind; port 0 picks a free port. Default
    /// 127.0.0.1:9092.
    pub listener: SocketAddr,
    /// `listeners`' CONTROLLER entry: the node's QUIC (UDP) endpoint in a cluster.
    pub controller_listener: Option<SocketAddr>,
    /// `advertised.listeners`: the address told to clients; `None` tells them the address
    /// actually bound (see [`BrokerConfig::advertised`]).
    pub advertised_listener: Option<HostPort>,
    /// `advertised.listeners`' CONTROLLER entry: the QUIC address told to other nodes.
    pub advertised_controller: Option<HostPort>,
    /// `log.dirs`: the one data directory. Default `./tern-data`.
    pub log_dir: PathBuf,
    /// `num.partitions`: partitions of an auto-created topic (and of CreateTopics asking for
    /// the default), ≥ 1. Default 1.
    pub num_partitions: i32,
    /// `default.replication.factor`: replicas of a new topic; 1 on a single node. Default 1.
    pub default_replication_factor: i16,
    /// `auto.create.topics.enable`: create a topic when a client names an unknown one.
    /// Default true.
    pub auto_create_topics: bool,
    /// `socket.request.max.bytes`: the largest request frame; a larger one closes the
    /// connection. Default 104857600 (100 MiB).
    pub socket_request_max_bytes: u32,
    /// `message.max.bytes`: the largest record batch a topic accepts unless it sets
    /// `max.message.bytes`. Default 1048588.
    pub message_max_bytes: u32,
    /// `log.segment.bytes`: roll a segment before it would exceed this. Default 1 GiB.
    pub log_segment_bytes: u32,
    /// `log.roll.ms` (or `log.roll.hours`): roll a segment whose first append is older.
    /// Default 7 days.
    pub log_roll_ms: i64,
    /// `log.retention.ms` (or `.minutes`, `.hours`; ms wins): delete closed segments whose
    /// newest record is older; -1 keeps them forever. Default 7 days.
    pub log_retention_ms: i64,
    /// `log.retention.bytes`: delete the oldest segments while a partition is larger; -1 is
    /// unlimited. Default -1.
    pub log_retention_bytes: i64,
    /// `log.index.interval.bytes`: bytes between offset index entries. Default 4096.
    pub log_index_interval_bytes: u32,
    /// `log.flush.interval.ms`: the fdatasync period under `flush = "interval"`. Default 1000.
    pub log_flush_interval_ms: i64,
    /// `log.message.timestamp.type`. Default CreateTime.
    pub log_message_timestamp_type: TimestampType,
    /// `flush`: when an append is acknowledged. Default always (durable first).
    pub flush: FlushMode,
    /// `io.direct`: O_DIRECT segment files. Default on.
    pub direct_io: DirectIo,
    /// `log.hot.bytes`: recent bytes per partition kept in memory for fetches. Default 4 MiB.
    pub log_hot_bytes: usize,
    /// `journal.enable` (ours): under `flush = always`, appends are made durable by one
    /// write-ahead journal per shard instead of a durable write per partition file.
    /// Default true.
    pub journal_enable: bool,
    /// `journal.file.bytes` (ours): size of each journal file, at least 65536, a multiple
    /// of 4096. Default 64 MiB.
    pub journal_file_bytes: u64,
    /// `journal.files` (ours): journal files per shard, recycled in turn; at least 2.
    /// Default 4.
    pub journal_files: u32,
    /// `journal.inplace.bytes` (ours): a partition's write of at least this many bytes goes
    /// durably to its segment instead of through the journal; 0: never. Default 512 KiB.
    pub journal_inplace_bytes: usize,
    /// `producer.id.expiration.ms`: an idempotent producer's sequence state is forgotten
    /// after this long without a batch. Default 1 day.
    pub producer_id_expiration_ms: i64,
    /// `min.insync.replicas`: the smallest ISR an acks=all produce is accepted with (the
    /// topics' default), ≥ 1. Default 1.
    pub min_insync_replicas: i32,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves the
    /// ISR. Default 30000.
    pub replica_lag_time_max_ms: i64,
    /// Consumer groups and committed offsets.
    pub groups: GroupSettings,
    /// `cores`: one shard per entry, shard `i` pinned to CPU `cores[i]`. Default every CPU
    /// this process may run on. Never empty, no duplicates.
    pub cores: Vec<usize>,
    /// `placement`: how unpinned partitions are spread over shards. Default balanced.
    pub placement: PlacementPolicy,
    /// `shard.nice`: the scheduling niceness of the shard threads, -20 to 19 (ours). Below
    /// 0 the shards win the CPU from other processes on the same cores (a co-located
    /// client), which needs CAP_SYS_NICE. Default 0: the niceness the broker started with.
    pub shard_nice: i32,
    /// `metrics.listener` (ours): where `/metrics` is served in Prometheus' text format,
    /// e.g. "127.0.0.1:9644"; unset (the default): not served.
    pub metrics_listener: Option<SocketAddr>,
    /// `[pins]`: `"topic/partition" = shard` placements that override `placement`; every
    /// shard index is `< cores.len()`.
    pub pins: Pins,
    /// The cluster keys (`controller.quorum.voters`, `process.roles`, …); without voters
    /// this node is a single broker.
    pub cluster: ClusterConfig,
}

impl Default for BrokerConfig {
    /// The built-in defaults, with every CPU this process may run on.
    fn default() -> Self {
        BrokerConfig::with_cores(available_cores())
    }
}

/// The group coordinator's settings (Kafka's keys and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when it is created.
    pub offsets_topic_partitions: i32,
    /// `offsets.topic.replication.factor`: replicas of `__consumer_offsets` in a cluster (at
    /// most the brokers alive when it is created; 1 on a single node).
    pub offsets_topic_replication_factor: i16,
    /// `offsets.topic.segment.bytes`: segment size of `__consumer_offsets`.
    pub offsets_topic_segment_bytes: u32,
    /// `offsets.retention.minutes`, in ms: committed offsets of an empty group expire.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are removed.
    pub offsets_retention_check_interval_ms: i64,
    /// `group.initial.rebalance.delay.ms`: the first rebalance of an empty group waits this
    /// long for more members.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms` and `group.max.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `group.max.size`: members per group.
    pub max_size: i32,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            offsets_topic_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_topic_segment_bytes: 100 << 20,
            offsets_retention_ms: 7 * MS_PER_DAY,
            offsets_retention_check_interval_ms: 600_000,
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            max_size: i32::MAX,
        }
    }
}

/// One row of DescribeConfigs, for the broker or for a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The Kafka name of the key.
    pub name: &'static str,
    /// The value as Kafka shows it (a string; lists comma-separated).
    pub value: String,
    /// Broker: equal to the built-in default. Topic: not overridden for this topic.
    pub is_default: bool,
    /// Cannot be changed with AlterConfigs (every broker key: they are read at startup).
    pub read_only: bool,
}

impl BrokerConfig {
    /// The built-in defaults, running on `cores`.
    pub fn with_cores(cores: Vec<usize>) -> Self {
        BrokerConfig {
            node_id: 0,
            listener: DEFAULT_LISTENER,
            controller_listener: None,
            advertised_listener: None,
            advertised_controller: None,
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics: true,
            socket_request_max_bytes: 100 << 20,
            message_max_bytes: 1_048_588,
            log_segment_bytes: 1 << 30,
            log_roll_ms: 7 * MS_PER_DAY,
            log_retention_ms: 7 * MS_PER_DAY,
            log_retention_bytes: -1,
            log_index_interval_bytes: 4096,
            log_flush_interval_ms: 1000,
            log_message_timestamp_type: TimestampType::CreateTime,
            flush: FlushMode::Always,
            direct_io: DirectIo::On,
            log_hot_bytes: 4 << 20,
            journal_enable: true,
            journal_file_bytes: 64 << 20,
            journal_files: 4,
            journal_inplace_bytes: 512 << 10,
            producer_id_expiration_ms: MS_PER_DAY,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
            groups: GroupSettings::default(),
            cores,
            placement: PlacementPolicy::Balanced,
            shard_nice: 0,
            metrics_listener: None,
            pins: Pins::new(),
            cluster: ClusterConfig::default(),
        }
    }

    /// Reads a configuration file. Errors name the file: `tern.toml: unknown key …`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::from(ConfigErrorKind::Read {
                message: e.to_string(),
            })
            .with_origin(origin.clone())
        })?;
        Self::from_toml_str(&text).map_err(|e| e.with_origin(origin))
    }

    /// Parses a configuration; `cores` is checked against the CPUs this process may run on.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_str_with_cores(text, &available_cores())
    }

    /// Parses a configuration as on a machine where this process may run on
    /// `allowed_cores` (which `cores = "all"` and the default resolve to).
    pub fn from_toml_str_with_cores(
        text: &str,
        allowed_cores: &[usize],
    ) -> Result<Self, ConfigError> {
        let table: Table = text.parse().map_err(|e| ConfigError::syntax(text, &e))?;
        let mut flat = BTreeMap::new();
        let mut pins = None;
        for (key, value) in table {
            if key == PINS {
                pins = Some(value);
            } else {
                flatten(key, value, &mut flat);
            }
        }
        if let Some(key) = flat.keys().find(|k| !BROKER_KEYS.contains(&k.as_str())) {
            return Err(unknown_key(key, BROKER_KEYS).into());
        }
        let mut cfg = Reader(&flat).read(allowed_cores)?;
        cfg.pins = read_pins(pins.as_ref(), cfg.cores.len())?;
        Ok(cfg)
    }

    /// The effective configuration as TOML, every key under its Kafka name, `cores`
    /// resolved to CPU ids. Parses back to an equal configuration.
    pub fn to_toml_string(&self) -> String {
        let mut out = String::from(
            "# The effective configuration of this broker (`tern serve --print-config`).\n",
        );
        for (name, value) in self.values() {
            out.push_str(&format!("{name} = {value}\n"));
            if name == "listeners" && self.advertised_listener.is_none() {
                out.push_str(
                    "# advertised.listeners: not set; clients are told the bound address\n",
                );
            }
        }
        out.push_str("\n# \"topic/partition\" = shard (a position in cores)\n[pins]\n");
        for ((topic, partition), shard) in &self.pins {
            let key = Value::String(format!("{topic}/{partition}"));
            out.push_str(&format!("{key} = {shard}\n"));
        }
        out
    }

    /// The broker resource's DescribeConfigs rows: every key (aliases such as
    /// `log.retention.hours` folded into their `ms` key), read-only, `is_default` when equal
    /// to the built-in default.
    pub fn entries(&self) -> Vec<ConfigEntry> {
        self.entries_against(&BrokerConfig::default())
    }

    fn entries_against(&self, defaults: &BrokerConfig) -> Vec<ConfigEntry> {
        let default_values = defaults.values();
        let mut entries: Vec<ConfigEntry> = self
            .values()
            .into_iter()
            .map(|(name, value)| ConfigEntry {
                name,
                value: kafka_string(&value),
                is_default: default_values
                    .iter()
                    .any(|(n, v)| *n == name && *v == value),
                read_only: true,
            })
            .collect();
        if self.advertised_listener.is_none() && self.advertised_controller.is_none() {
            let value = format_listener(&HostPort::from(self.listener));
            let entry = ConfigEntry {
                name: "advertised.listeners",
                value,
                is_default: true,
                read_only: true,
            };
            entries.insert(2, entry);
        }
        let pins: Vec<String> = self
            .pins
            .iter()
            .map(|((t, p), shard)| format!("{t}/{p}={shard}"))
            .collect();
        let is_default = pins.is_empty();
        entries.push(ConfigEntry {
            name: PINS,
            value: pins.join(","),
            is_default,
            read_only: true,
        });
        entries
    }

    /// The number of shards: one per configured core.
    pub fn shard_count(&self) -> usize {
        self.cores.len()
    }

    /// The shard that owns `topic`'s `partition` under this configuration's policy and pins.
    pub fn place(&self, topic: &str, partition: i32) -> usize {
        place(
            topic,
            partition,
            self.shard_count(),
            self.placement,
            &self.pins,
        )
    }

    /// The address told to clients, given the address actually bound (which resolves port 0):
    /// `advertised.listeners` if set, else `bound`, with an unspecified IP (0.0.0.0, ::)
    /// replaced by loopback: set `advertised.listeners` when listening on every interface.
    pub fn advertised(&self, bound: SocketAddr) -> HostPort {
        if let Some(a) = &self.advertised_listener {
            return a.clone();
        }
        let ip = match bound.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        HostPort::from(SocketAddr::new(ip, bound.port()))
    }

    /// Every key's effective value in TOML form, in [`BROKER_KEYS`] order; aliases are
    /// folded into their `ms` key, and `advertised.listeners` is left out when unset.
    fn values(&self) -> Vec<(&'static str, Value)> {
        let int = |v: i64| Value::Integer(v);
        let size = |v: usize| Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
        let string = |s: &str| Value::String(s.to_owned());
        let g = &self.groups;
        let mut listeners = format_listener(&self.listener.into());
        if let Some(c) = self.controller_listener {
            listeners = format!("{listeners},{}", format_controller_listener(&c.into()));
        }
        let mut values = vec![
            ("node.id", int(self.node_id.into())),
            ("listeners", Value::String(listeners)),
        ];
        let advertised: Vec<String> = [
            self.advertised_listener.as_ref().map(format_listener),
            self.advertised_controller
                .as_ref()
                .map(format_controller_listener),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !advertised.is_empty() {
            values.push(("advertised.listeners", Value::String(advertised.join(","))));
        }
        values.extend([
            (
                "log.dirs",
                Value::String(self.log_dir.to_string_lossy().into_owned()),
            ),
            ("num.partitions", int(self.num_partitions.into())),
            (
                "default.replication.factor",
                int(self.default_replication_factor.into()),
            ),
            (
                "auto.create.topics.enable",
                Value::Boolean(self.auto_create_topics),
            ),
            (
                "socket.request.max.bytes",
                int(self.socket_request_max_bytes.into()),
            ),
            ("message.max.bytes", int(self.message_max_bytes.into())),
            ("log.segment.bytes", int(self.log_segment_bytes.into())),
            ("log.roll.ms", int(self.log_roll_ms)),
            ("log.retention.ms", int(self.log_retention_ms)),
            ("log.retention.bytes", int(self.log_retention_bytes)),
            (
                "log.index.interval.bytes",
                int(self.log_index_interval_bytes.into()),
            ),
            ("log.flush.interval.ms", int(self.log_flush_interval_ms)),
            (
                "log.message.timestamp.type",
                string(self.log_message_timestamp_type.as_str()),
            ),
            ("flush", string(self.flush.as_str())),
            ("io.direct", string(self.direct_io.as_str())),
            ("log.hot.bytes", size(self.log_hot_bytes)),
            ("journal.enable", Value::Boolean(self.journal_enable)),
            ("journal.file.bytes", size(self.journal_file_bytes as usize)),
            ("journal.files", int(self.journal_files.into())),
            ("journal.inplace.bytes", size(self.journal_inplace_bytes)),
            (
                "producer.id.expiration.ms",
                int(self.producer_id_expiration_ms),
            ),
            ("min.insync.replicas", int(self.min_insync_replicas.into())),
            ("replica.lag.time.max.ms", int(self.replica_lag_time_max_ms)),
            (
                "offsets.topic.num.partitions",
                int(g.offsets_topic_partitions.into()),
            ),
            (
                "offsets.topic.replication.factor",
                int(g.offsets_topic_replication_factor.into()),
            ),
            (
                "offsets.topic.segment.bytes",
                int(g.offsets_topic_segment_bytes.into()),
            ),
            (
                "offsets.retention.minutes",
                int(g.offsets_retention_ms / MS_PER_MINUTE),
            ),
            (
                "offsets.retention.check.interval.ms",
                int(g.offsets_retention_check_interval_ms),
            ),
            (
                "group.initial.rebalance.delay.ms",
                int(g.initial_rebalance_delay_ms),
            ),
            (
                "group.min.session.timeout.ms",
                int(g.min_session_timeout_ms.into()),
            ),
            (
                "group.max.session.timeout.ms",
                int(g.max_session_timeout_ms.into()),
            ),
            ("group.max.size", int(g.max_size.into())),
            (
                "cores",
                Value::Array(self.cores.iter().map(|c| size(*c)).collect()),
            ),
            ("placement", string(self.placement.as_str())),
            ("shard.nice", int(self.shard_nice.into())),
        ]);
        if let Some(m) = self.metrics_listener {
            values.push(("metrics.listener", string(&m.to_string())));
        }
        self.cluster_values(&mut values);
        values
    }

    fn cluster_values(&self, values: &mut Vec<(&'static str, Value)>) {
        let c = &self.cluster;
        let voters: Vec<String> = c.voters.iter().map(ToString::to_string).collect();
        let path = |p: &Path| Value::String(p.to_string_lossy().into_owned());
        values.extend([
            ("controller.quorum.voters", Value::String(voters.join(","))),
            ("process.roles", Value::String(c.roles.as_str().to_owned())),
            (
                "broker.session.timeout.ms",
                Value::Integer(c.broker_session_timeout_ms),
            ),
            (
                "broker.heartbeat.interval.ms",
                Value::Integer(c.broker_heartbeat_interval_ms),
            ),
            (
                "controller.quorum.election.timeout.ms",
                Value::Integer(c.election_timeout_ms),
            ),
        ]);
        if let Some(id) = &c.cluster_id {
            values.push(("cluster.id", Value::String(id.clone())));
        }
        if let Some(rack) = &c.rack {
            values.push(("broker.rack", Value::String(rack.clone())));
        }
        values.push((
            "auto.leader.rebalance.enable",
            Value::Boolean(c.auto_leader_rebalance),
        ));
        if let Some(t) = &c.tls {
            values.push(("quic.tls.cert", path(&t.cert)));
            values.push(("quic.tls.key", path(&t.key)));
            values.push(("quic.tls.ca", path(&t.ca)));
        }
    }
}

/// Adds `value` under `key` to `flat`, descending into tables with dotted names.
fn flatten(key: String, value: Value, flat: &mut BTreeMap<String, Value>) {
    match value {
        Value::Table(table) => {
            for (k, v) in table {
                flatten(format!("{key}.{k}"), v, flat);
            }
        }
        v => {
            flat.insert(key, v);
        }
    }
}

/// A value as Kafka's DescribeConfigs shows it: strings bare, lists comma-separated.
fn kafka_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(kafka_string).collect::<Vec<_>>().join(","),
        v => v.to_string(),
    }
}

/// The flattened file, read key by key with the defaults for absent keys.
struct Reader<'a>(&'a BTreeMap<String, Value>);

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<Raw<'_>> {
        self.0.get(key).map(Raw::Toml)
    }

    fn int<T: TryFrom<i64>>(
        &self,
        key: &str,
        bounds: Bounds,
        default: T,
    ) -> Result<T, ConfigErrorKind> {
        self.opt_int(key, bounds).map(|v| v.unwrap_or(default))
    }

    fn opt_int<T: TryFrom<i64>>(
        &self,
        key: &str,
        bounds: Bounds,
    ) -> Result<Option<T>, ConfigErrorKind> {
        self.get(key)
            .map(|raw| value::int(key, raw, bounds))
            .transpose()
    }

    fn choice<C: crate::choice::Choice>(
        &self,
        key: &str,
        default: C,
    ) -> Result<C, ConfigErrorKind> {
        self.get(key)
            .map_or(Ok(default), |raw| value::choice(key, raw))
    }

    /// A time in ms, also accepted in coarser units (`log.retention.hours`); the finest unit
    /// given wins, as in Kafka. -1 (unlimited) stays -1 when `unlimited` allows it.
    fn millis(
        &self,
        keys: &[(&str, i64)],
        unlimited: bool,
        default: i64,
    ) -> Result<i64, ConfigErrorKind> {
        for (key, unit_ms) in keys {
            let bounds = Bounds {
                min: 1,
                max: i64::MAX / unit_ms,
                unlimited,
            };
            if let Some(v) = self.opt_int::<i64>(key, bounds)? {
                return Ok(if v == -1 { -1 } else { v * unit_ms });
            }
        }
        Ok(default)
    }

    fn read(&self, allowed_cores: &[usize]) -> Result<BrokerConfig, ConfigErrorKind> {
        let d = BrokerConfig::with_cores(allowed_cores.to_vec());
        let int32 = Bounds::between(0, INT32_MAX);
        let positive32 = Bounds::between(1, INT32_MAX);
        let text = |key: &str, expected: &str| -> Result<Option<String>, ConfigErrorKind> {
            let raw = self.get(key);
            raw.map(|r| value::string(key, r, expected).map(str::to_owned))
                .transpose()
        };
        let listener_form = "a string like \"PLAINTEXT://127.0.0.1:9092\"";
        let listeners = match text("listeners", listener_form)? {
            Some(s) => parse_listeners("listeners", &s)?,
            None => crate::listener::Listeners {
                kafka: d.listener,
                controller: None,
            },
        };
        let advertised = text("advertised.listeners", listener_form)?
            .map(|s| parse_advertised_listeners("advertised.listeners", &s))
            .transpose()?
            .unwrap_or_default();
        let node_id = self.int("node.id", int32, d.node_id)?;
        let (cluster, roles_given) = self.cluster(node_id)?;
        cluster::check(&cluster, node_id, roles_given, listeners.controller)?;
        let clustered = !cluster.voters.is_empty();
        Ok(BrokerConfig {
            node_id,
            listener: listeners.kafka,
            controller_listener: listeners.controller,
            advertised_listener: advertised.kafka,
            advertised_controller: advertised.controller,
            cluster,
            log_dir: self.log_dir()?.unwrap_or(d.log_dir),
            num_partitions: self.int("num.partitions", positive32, d.num_partitions)?,
            default_replication_factor: self.replication_factor(clustered)?,
            auto_create_topics: match self.get("auto.create.topics.enable") {
                Some(raw) => value::boolean("auto.create.topics.enable", raw)?,
                None => d.auto_create_topics,
            },
            socket_request_max_bytes: self.int(
                "socket.request.max.bytes",
                positive32,
                d.socket_request_max_bytes,
            )?,
            message_max_bytes: self.int("message.max.bytes", int32, d.message_max_bytes)?,
            log_segment_bytes: self.int(
                "log.segment.bytes",
                Bounds::between(4096, INT32_MAX),
                d.log_segment_bytes,
            )?,
            log_roll_ms: self.millis(
                &[("log.roll.ms", 1), ("log.roll.hours", MS_PER_HOUR)],
                false,
                d.log_roll_ms,
            )?,
            log_retention_ms: self.millis(
                &[
                    ("log.retention.ms", 1),
                    ("log.retention.minutes", MS_PER_MINUTE),
                    ("log.retention.hours", MS_PER_HOUR),
                ],
                true,
                d.log_retention_ms,
            )?,
            log_retention_bytes: self.int(
                "log.retention.bytes",
                Bounds::unlimited_or_at_least(1),
                d.log_retention_bytes,
            )?,
            log_index_interval_bytes: self.int(
                "log.index.interval.bytes",
                positive32,
                d.log_index_interval_bytes,
            )?,
            log_flush_interval_ms: self.int(
                "log.flush.interval.ms",
                Bounds::at_least(1),
                d.log_flush_interval_ms,
            )?,
            log_message_timestamp_type: self
                .choice("log.message.timestamp.type", d.log_message_timestamp_type)?,
            flush: self.choice("flush", d.flush)?,
            direct_io: self.choice("io.direct", d.direct_io)?,
            log_hot_bytes: self.int("log.hot.bytes", Bounds::at_least(0), d.log_hot_bytes)?,
            journal_enable: match self.get("journal.enable") {
                Some(raw) => value::boolean("journal.enable", raw)?,
                None => d.journal_enable,
            },
            journal_file_bytes: self.journal_file_bytes(d.journal_file_bytes)?,
            journal_files: self.int("journal.files", Bounds::between(2, 1024), d.journal_files)?,
            journal_inplace_bytes: self.int(
                "journal.inplace.bytes",
                Bounds::at_least(0),
                d.journal_inplace_bytes,
            )?,
            producer_id_expiration_ms: self.int(
                "producer.id.expiration.ms",
                Bounds::at_least(1),
                d.producer_id_expiration_ms,
            )?,
            min_insync_replicas: self.int(
                "min.insync.replicas",
                Bounds::between(1, INT32_MAX),
                d.min_insync_replicas,
            )?,
            replica_lag_time_max_ms: self.int(
                "replica.lag.time.max.ms",
                Bounds::at_least(1),
                d.replica_lag_time_max_ms,
            )?,
            groups: self.groups(&d.groups)?,
            cores: self.cores(allowed_cores)?,
            placement: self.choice("placement", d.placement)?,
            shard_nice: self.int("shard.nice", Bounds::between(-20, 19), d.shard_nice)?,
            metrics_listener: match text("metrics.listener", "an address like \"127.0.0.1:9644\"")?
            {
                Some(s) => Some(s.trim().parse().map_err(|_| ConfigErrorKind::Invalid {
                    key: "metrics.listener".into(),
                    expected: "an address like \"127.0.0.1:9644\"".into(),
                    found: format!("{s:?}"),
                })?),
                None => None,
            },
            pins: Pins::new(),
        })
    }

    /// The cluster keys, and whether `process.roles` was given.
    fn cluster(&self, node_id: i32) -> Result<(ClusterConfig, bool), ConfigErrorKind> {
        let d = ClusterConfig::default();
        let text = |key: &str, expected: &str| -> Result<Option<String>, ConfigErrorKind> {
            self.get(key)
                .map(|r| value::string(key, r, expected).map(str::to_owned))
                .transpose()
        };
        let voters = match text(
            "controller.quorum.voters",
            "a string like \"1@host:9093,…\"",
        )? {
            Some(t) => cluster::parse_voters(&t)?,
            None => Vec::new(),
        };
        let roles_text = text("process.roles", "a string like \"broker,controller\"")?;
        let roles_given = roles_text.is_some();
        let roles = match roles_text {
            Some(t) => cluster::parse_roles(&t)?,
            None => cluster::ProcessRoles {
                broker: true,
                controller: voters.iter().any(|v| v.id == node_id),
            },
        };
        let cluster_id = text("cluster.id", "a string")?;
        if let Some(id) = &cluster_id {
            cluster::check_cluster_id(id)?;
        }
        let rack = text("broker.rack", "a string")?;
        if rack.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(ConfigErrorKind::Invalid {
                key: "broker.rack".to_owned(),
                expected: "a non-empty rack name".to_owned(),
                found: "\"\"".to_owned(),
            });
        }
        let files = [
            text("quic.tls.cert", "a PEM file path")?,
            text("quic.tls.key", "a PEM file path")?,
            text("quic.tls.ca", "a PEM file path")?,
        ];
        let tls = match files {
            [None, None, None] => None,
            [Some(cert), Some(key), Some(ca)] => Some(QuicTls {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
                ca: PathBuf::from(ca),
            }),
            _ => {
                return Err(ConfigErrorKind::Invalid {
                    key: "quic.tls.cert".to_owned(),
                    expected: "quic.tls.cert, quic.tls.key and quic.tls.ca together".to_owned(),
                    found: "only some of them".to_owned(),
                })
            }
        };
        let ms = Bounds::between(1, INT32_MAX);
        Ok((
            ClusterConfig {
                voters,
                roles,
                broker_session_timeout_ms: self.int(
                    "broker.session.timeout.ms",
                    ms,
                    d.broker_session_timeout_ms,
                )?,
                broker_heartbeat_interval_ms: self.int(
                    "broker.heartbeat.interval.ms",
                    ms,
                    d.broker_heartbeat_interval_ms,
                )?,
                election_timeout_ms: self.int(
                    "controller.quorum.election.timeout.ms",
                    ms,
                    d.election_timeout_ms,
                )?,
                cluster_id,
                rack,
                auto_leader_rebalance: match self.get("auto.leader.rebalance.enable") {
                    Some(raw) => value::boolean("auto.leader.rebalance.enable", raw)?,
                    None => d.auto_leader_rebalance,
                },
                tls,
            },
            roles_given,
        ))
    }

    fn journal_file_bytes(&self, default: u64) -> Result<u64, ConfigErrorKind> {
        let key = "journal.file.bytes";
        let v: u64 = self.int(key, Bounds::between(65536, 1 << 40), default)?;
        if !v.is_multiple_of(4096) {
            return Err(ConfigErrorKind::Invalid {
                key: key.to_string(),
                expected: "a multiple of 4096".to_string(),
                found: v.to_string(),
            });
        }
        Ok(v)
    }

    fn groups(&self, d: &GroupSettings) -> Result<GroupSettings, ConfigErrorKind> {
        let positive32 = Bounds::between(1, INT32_MAX);
        let min_session_timeout_ms = self.int(
            "group.min.session.timeout.ms",
            positive32,
            d.min_session_timeout_ms,
        )?;
        Ok(GroupSettings {
            offsets_topic_partitions: self.int(
                "offsets.topic.num.partitions",
                Bounds::between(1, 10_000),
                d.offsets_topic_partitions,
            )?,
            offsets_topic_replication_factor: self.int(
                "offsets.topic.replication.factor",
                Bounds::between(1, i16::MAX.into()),
                d.offsets_topic_replication_factor,
            )?,
            offsets_topic_segment_bytes: self.int(
                "offsets.topic.segment.bytes",
                Bounds::between(4096, INT32_MAX),
                d.offsets_topic_segment_bytes,
            )?,
            offsets_retention_ms: self.millis(
                &[("offsets.retention.minutes", MS_PER_MINUTE)],
                false,
                d.offsets_retention_ms,
            )?,
            offsets_retention_check_interval_ms: self.int(
                "offsets.retention.check.interval.ms",
                Bounds::at_least(1),
                d.offsets_retention_check_interval_ms,
            )?,
            initial_rebalance_delay_ms: self.int(
                "group.initial.rebalance.delay.ms",
                Bounds::between(0, INT32_MAX),
                d.initial_rebalance_delay_ms,
            )?,
            min_session_timeout_ms,
            max_session_timeout_ms: self.int(
                "group.max.session.timeout.ms",
                Bounds::between(min_session_timeout_ms.into(), INT32_MAX),
                d.max_session_timeout_ms,
            )?,
            max_size: self.int("group.max.size", positive32, d.max_size)?,
        })
    }

    /// `log.dirs`: one directory, as a string or a list of one string.
    fn log_dir(&self) -> Result<Option<PathBuf>, ConfigErrorKind> {
        const KEY: &str = "log.dirs";
        let invalid = |found: String| ConfigErrorKind::Invalid {
            key: KEY.to_owned(),
            expected: "a directory like \"./tern-data\" (or a list of one)".to_owned(),
            found,
        };
        let dir = match self.0.get(KEY) {
            None => return Ok(None),
            Some(Value::String(s)) => s,
            Some(Value::Array(items)) if items.len() > 1 => {
                return Err(more_than_one_dir(&kafka_string(&Value::Array(
                    items.clone(),
                ))));
            }
            Some(Value::Array(items)) => match items.first() {
                Some(Value::String(s)) => s,
                Some(other) => return Err(invalid(format!("{} in the list", describe(other)))),
                None => return Err(invalid("an empty list".to_owned())),
            },
            Some(other) => return Err(invalid(describe(other))),
        };
        if dir.trim().is_empty() {
            return Err(invalid(format!("{dir:?}")));
        }
        if dir.contains(',') {
            return Err(more_than_one_dir(dir));
        }
        Ok(Some(PathBuf::from(dir)))
    }

    /// `default.replication.factor`: Kafka's range, but only 1 until replication exists.
    /// `default.replication.factor`: any in a cluster (the controller checks it against the
    /// live brokers); a single node has one replica of everything.
    fn replication_factor(&self, clustered: bool) -> Result<i16, ConfigErrorKind> {
        const KEY: &str = "default.replication.factor";
        let n: i16 = self.int(KEY, Bounds::between(1, i16::MAX.into()), 1)?;
        if n != 1 && !clustered {
            return Err(ConfigErrorKind::Unsupported {
                key: KEY.to_owned(),
                what: format!("replication factor {n} on a single node"),
                instead: "1, or set controller.quorum.voters to run a cluster".to_owned(),
            });
        }
        Ok(n)
    }

    /// `cores`: `"all"`, a CPU list string (`"0-3,6"`) or a list of CPU ids; non-empty,
    /// without duplicates, each one a CPU this process may run on.
    fn cores(&self, allowed: &[usize]) -> Result<Vec<usize>, ConfigErrorKind> {
        const KEY: &str = "cores";
        let invalid = |found: String| ConfigErrorKind::Invalid {
            key: KEY.to_owned(),
            expected: "\"all\", a list of CPU ids like [0, 1] or a CPU list like \"0-3\""
                .to_owned(),
            found,
        };
        let mut all = allowed.to_vec();
        all.sort_unstable();
        let cores = match self.0.get(KEY) {
            None => all.clone(),
            Some(Value::String(s)) if s.trim() == "all" => all.clone(),
            Some(Value::String(s)) => parse_cpu_list(s).ok_or_else(|| invalid(format!("{s:?}")))?,
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    match item {
                        Value::Integer(i) => usize::try_from(*i).ok().filter(|c| *c <= CPU_ID_MAX),
                        _ => None,
                    }
                    .ok_or_else(|| invalid(format!("{} in the list", describe(item))))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => return Err(invalid(describe(other))),
        };
        check_cores(&cores, &all)?;
        Ok(cores)
    }
}

fn more_than_one_dir(dirs: &str) -> ConfigErrorKind {
    ConfigErrorKind::Unsupported {
        key: "log.dirs".to_owned(),
        what: format!("more than one directory ({dirs:?})"),
        instead: "a single directory".to_owned(),
    }
}

/// Checks a core list: non-empty, each CPU once, each one in `allowed`.
fn check_cores(cores: &[usize], allowed: &[usize]) -> Result<(), ConfigErrorKind> {
    let key = || "cores".to_owned();
    if cores.is_empty() {
        return Err(ConfigErrorKind::Invalid {
            key: key(),
            expected: "at least one CPU id".to_owned(),
            found: "an empty list".to_owned(),
        });
    }
    for (i, core) in cores.iter().enumerate() {
        if cores[..i].contains(core) {
            return Err(ConfigErrorKind::Invalid {
                key: key(),
                expected: "each CPU id once".to_owned(),
                found: format!("CPU {core} twice"),
            });
        }
        if !allowed.contains(core) {
            return Err(ConfigErrorKind::NotAllowed {
                key: key(),
                value: format!("CPU {core}"),
                allowed: format!(
                    "the CPUs this process may run on ({})",
                    format_cpu_list(allowed)
                ),
            });
        }
    }
    Ok(())
}

/// `[pins]`: `"topic/partition" = shard index`, each index `< shard_count`.
fn read_pins(pins: Option<&Value>, shard_count: usize) -> Result<Pins, ConfigErrorKind> {
    let table = match pins {
        None => return Ok(Pins::new()),
        Some(Value::Table(t)) => t,
        Some(other) => {
            return Err(ConfigErrorKind::Invalid {
                key: PINS.to_owned(),
                expected: "a table like [pins] \"orders/3\" = 1".to_owned(),
                found: describe(other),
            })
        }
    };
    let mut out = Pins::new();
    for (k, v) in table {
        let key = format!("{PINS}.{k}");
        let (topic, partition) = parse_pin_key(k).ok_or_else(|| ConfigErrorKind::Invalid {
            key: key.clone(),
            expected: "a key like \"orders/3\" (a valid topic name, '/', a partition ≥ 0)"
                .to_owned(),
            found: format!("{k:?}"),
        })?;
        let shard = match v {
            Value::Integer(i) => usize::try_from(*i).ok().filter(|s| *s < shard_count),
            _ => None,
        }
        .ok_or_else(|| ConfigErrorKind::Invalid {
            key: key.clone(),
            expected: format!(
                "a shard index from 0 to {} (a position in cores)",
                shard_count.saturating_sub(1)
            ),
            found: describe(v),
        })?;
        out.insert((topic.to_owned(), partition), shard);
    }
    Ok(out)
}
