//! The broker configuration file as an operator meets it: defaults, the example file, the
//! printed form, and the one-line errors.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;

use proptest::prelude::*;
use tern_tuning::{
    BrokerConfig, ConfigErrorKind, DirectIo, FlushMode, HostPort, PlacementPolicy, TimestampType,
    BROKER_KEYS,
};

/// The CPUs the tests pretend this process may run on.
const CPUS: &[usize] = &[0, 1, 2, 3];

fn parse(text: &str) -> Result<BrokerConfig, String> {
    BrokerConfig::from_toml_str_with_cores(text, CPUS).map_err(|e| e.to_string())
}

fn error(text: &str) -> String {
    let e = parse(text).expect_err("should be refused");
    assert!(!e.contains('\n'), "not one line: {e}");
    e
}

/// Guards the built-in defaults the issue names.
#[test]
fn empty_file_gives_defaults() {
    let cfg = parse("").unwrap();
    assert_eq!(cfg, BrokerConfig::with_cores(CPUS.to_vec()));
    assert_eq!(cfg.node_id, 0);
    assert_eq!(
        cfg.listener,
        "127.0.0.1:9092".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(cfg.advertised_listener, None);
    assert_eq!(cfg.log_dir, PathBuf::from("./tern-data"));
    assert_eq!(cfg.num_partitions, 1);
    assert!(cfg.auto_create_topics);
    assert_eq!(cfg.default_replication_factor, 1);
    assert_eq!(cfg.socket_request_max_bytes, 104_857_600);
    assert_eq!(cfg.message_max_bytes, 1_048_588);
    assert_eq!(cfg.log_segment_bytes, 1_073_741_824);
    assert_eq!(cfg.log_roll_ms, 604_800_000);
    assert_eq!(cfg.log_retention_ms, 604_800_000);
    assert_eq!(cfg.log_retention_bytes, -1);
    assert_eq!(cfg.log_index_interval_bytes, 4096);
    assert_eq!(cfg.log_flush_interval_ms, 1000);
    assert_eq!(cfg.log_message_timestamp_type, TimestampType::CreateTime);
    assert_eq!(cfg.flush, FlushMode::Always);
    assert_eq!(cfg.direct_io, DirectIo::On);
    assert_eq!(cfg.log_hot_bytes, 4_194_304);
    assert_eq!(cfg.cores, CPUS);
    assert_eq!(cfg.placement, PlacementPolicy::Balanced);
    assert!(cfg.pins.is_empty());
    // On the real machine: every CPU the process may run on.
    assert_eq!(
        BrokerConfig::from_toml_str("").unwrap(),
        BrokerConfig::default()
    );
}

/// Guards that the shipped example parses, and that it documents exactly the defaults.
#[test]
fn example_file_is_the_defaults() {
    let text = include_str!("../tern.example.toml");
    assert_eq!(
        parse(text).unwrap(),
        BrokerConfig::with_cores(CPUS.to_vec())
    );
    for key in BROKER_KEYS {
        assert!(
            text.contains(key),
            "tern.example.toml does not mention {key}"
        );
    }
}

/// Every key set to something other than its default.
const FULL: &str = r#"
node.id = 7
listeners = "PLAINTEXT://0.0.0.0:19092,CONTROLLER://0.0.0.0:19093"
advertised.listeners = "PLAINTEXT://broker7.example.com:19092"
log.dirs = ["/var/lib/tern"]
num.partitions = 6
default.replication.factor = 1
auto.create.topics.enable = false
socket.request.max.bytes = 52428800
message.max.bytes = 2097152
log.segment.bytes = 268435456
log.roll.ms = 3600000
log.retention.ms = -1
log.retention.bytes = 10737418240
log.index.interval.bytes = 8192
log.flush.interval.ms = 50
log.message.timestamp.type = "LogAppendTime"
flush = "interval"
io.direct = "auto"
log.hot.bytes = 1048576
cores = [3, 1]
placement = "hash"
shard.nice = 5
metrics.listener = "127.0.0.1:9644"
controller.quorum.voters = "7@broker7.example.com:19093,8@broker8.example.com:19093,9@10.0.0.9:19093"
process.roles = "broker,controller"
broker.session.timeout.ms = 12000
broker.heartbeat.interval.ms = 3000
controller.quorum.election.timeout.ms = 1500
cluster.id = "MkU3OEVBNTcwNTJENDM2Qk"
broker.rack = "rack-b"
auto.leader.rebalance.enable = false
quic.tls.cert = "/etc/tern/node-7.crt"
quic.tls.key = "/etc/tern/node-7.key"
quic.tls.ca = "/etc/tern/ca.crt"

[pins]
"orders/3" = 1
"__consumer_offsets/0" = 0
"#;

/// Guards that every key is read, and that the printed form parses back to the same config.
#[test]
fn full_file_round_trips() {
    let cfg = parse(FULL).unwrap();
    assert_eq!(cfg.node_id, 7);
    assert_eq!(cfg.listener, "0.0.0.0:19092".parse::<SocketAddr>().unwrap());
    let advertised = HostPort {
        host: "broker7.example.com".into(),
        port: 19092,
    };
    assert_eq!(cfg.advertised_listener, Some(advertised));
    assert_eq!(cfg.log_dir, PathBuf::from("/var/lib/tern"));
    assert_eq!(cfg.log_retention_ms, -1);
    assert_eq!(cfg.log_retention_bytes, 10_737_418_240);
    assert_eq!(cfg.flush, FlushMode::Interval);
    assert_eq!(cfg.direct_io, DirectIo::Auto);
    assert_eq!(cfg.cores, [3, 1]);
    assert_eq!(cfg.placement, PlacementPolicy::Hash);
    assert_eq!(cfg.shard_nice, 5);
    assert_eq!(
        cfg.metrics_listener,
        Some("127.0.0.1:9644".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(cfg.pins.get(&("orders".to_owned(), 3)), Some(&1));
    assert_eq!(cfg.place("orders", 3), 1);
    assert_ne!(cfg, BrokerConfig::with_cores(CPUS.to_vec()));
    let c = &cfg.cluster;
    assert_eq!(cfg.controller_listener.map(|l| l.port()), Some(19093));
    assert_eq!(c.voters.len(), 3);
    assert!(c.roles.broker && c.roles.controller);
    assert_eq!(
        (c.broker_session_timeout_ms, c.broker_heartbeat_interval_ms),
        (12000, 3000)
    );
    assert_eq!(c.election_timeout_ms, 1500);
    assert_eq!(c.cluster_id.as_deref(), Some("MkU3OEVBNTcwNTJENDM2Qk"));
    assert_eq!(c.rack.as_deref(), Some("rack-b"));
    assert!(!c.auto_leader_rebalance);
    assert_eq!(
        c.tls.as_ref().map(|t| t.ca.clone()),
        Some(PathBuf::from("/etc/tern/ca.crt"))
    );

    let printed = cfg.to_toml_string();
    assert_eq!(parse(&printed).unwrap(), cfg, "{printed}");
    for key in BROKER_KEYS
        .iter()
        .filter(|k| !k.ends_with(".hours") && !k.starts_with("log.retention.minutes"))
    {
        assert!(
            printed.contains(key),
            "--print-config leaves out {key}:\n{printed}"
        );
    }
    // The defaults (advertised.listeners unset, no pins) round-trip too.
    let defaults = BrokerConfig::with_cores(CPUS.to_vec());
    assert_eq!(parse(&defaults.to_toml_string()).unwrap(), defaults);
}

/// Guards reading the file from disk, and that errors then name the file.
#[test]
fn from_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tern.toml");
    std::fs::write(&path, "node.id = 3\n").unwrap();
    assert_eq!(BrokerConfig::from_file(&path).unwrap().node_id, 3);

    std::fs::write(&path, "log.dir = \"/data\"\n").unwrap();
    let e = BrokerConfig::from_file(&path).unwrap_err();
    assert_eq!(e.key(), Some("log.dir"));
    assert_eq!(
        e.to_string(),
        format!(
            r#"{}: unknown key "log.dir" (did you mean "log.dirs"?)"#,
            path.display()
        )
    );
    let e = BrokerConfig::from_file(&dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(e.kind(), ConfigErrorKind::Read { .. }), "{e}");
    assert!(e.to_string().contains("missing.toml: cannot read: "), "{e}");
}

/// Guards the unknown-key error and its suggestion.
#[test]
fn unknown_keys() {
    assert_eq!(
        error("log.dir = \"x\""),
        r#"unknown key "log.dir" (did you mean "log.dirs"?)"#
    );
    assert_eq!(
        error("[log]\nretention.msec = 5"),
        r#"unknown key "log.retention.msec" (did you mean "log.retention.ms"?)"#
    );
    assert_eq!(
        error("retention.ms = 5"),
        r#"unknown key "retention.ms" (did you mean "log.retention.ms"?)"#
    );
    assert_eq!(
        error("zookeeper.connect = \"zk:2181\""),
        r#"unknown key "zookeeper.connect""#
    );
    // A known key cannot be a table.
    assert!(error("flush.mode = \"always\"").starts_with(r#"unknown key "flush.mode""#));
}

/// Guards the wrong-type errors.
#[test]
fn wrong_types() {
    assert_eq!(
        error(r#"num.partitions = "three""#),
        r#"key "num.partitions": expected an integer ≥ 1, found string "three""#
    );
    assert_eq!(
        error("auto.create.topics.enable = 1"),
        r#"key "auto.create.topics.enable": expected true or false, found 1"#
    );
    assert_eq!(
        error("flush = true"),
        r#"key "flush": expected one of always, interval, never, found boolean true"#
    );
    assert_eq!(
        error("log.segment.bytes = 1.5"),
        r#"key "log.segment.bytes": expected an integer ≥ 4096, found float 1.5"#
    );
    assert_eq!(
        error("listeners = 9092"),
        r#"key "listeners": expected a string like "PLAINTEXT://127.0.0.1:9092", found 9092"#
    );
    assert!(error("log.dirs = 3").starts_with(r#"key "log.dirs": expected a directory"#));
    assert!(error("[pins]\n\"a/1\" = \"1\"").starts_with(r#"key "pins.a/1": expected"#));
    assert!(error("pins = 1").starts_with(r#"key "pins": expected a table"#));
}

/// Guards the out-of-range and not-allowed value errors.
#[test]
fn bad_values() {
    assert_eq!(
        error(r#"flush = "sometimes""#),
        r#"key "flush": "sometimes" is not allowed; use one of always, interval, never"#
    );
    assert_eq!(
        error(r#"log.message.timestamp.type = "createtime""#),
        r#"key "log.message.timestamp.type": "createtime" is not allowed; use one of CreateTime, LogAppendTime"#
    );
    assert_eq!(
        error("node.id = -1"),
        r#"key "node.id": expected an integer ≥ 0, found -1"#
    );
    assert_eq!(
        error("num.partitions = 0"),
        r#"key "num.partitions": expected an integer ≥ 1, found 0"#
    );
    assert_eq!(
        error("log.retention.ms = 0"),
        r#"key "log.retention.ms": expected -1 (unlimited) or an integer ≥ 1, found 0"#
    );
    assert_eq!(
        error("message.max.bytes = 4294967296"),
        r#"key "message.max.bytes": expected an integer from 0 to 2147483647, found 4294967296"#
    );
    assert_eq!(
        error("min.insync.replicas = 0"),
        r#"key "min.insync.replicas": expected an integer ≥ 1, found 0"#
    );
    assert_eq!(
        error(r#"metrics.listener = "localhost""#),
        r#"key "metrics.listener": expected an address like "127.0.0.1:9644", found "localhost""#
    );
    assert_eq!(
        error("replica.lag.time.max.ms = 0"),
        r#"key "replica.lag.time.max.ms": expected an integer ≥ 1, found 0"#
    );
    assert_eq!(
        error("default.replication.factor = 3"),
        r#"key "default.replication.factor": replication factor 3 on a single node is not supported yet; use 1, or set controller.quorum.voters to run a cluster"#
    );
    assert!(error(r#"listeners = "SSL://1.2.3.4:9093""#)
        .starts_with(r#"key "listeners": security protocol SSL is not supported yet"#));
    assert!(error(r#"listeners = "PLAINTEXT://broker1:9092""#)
        .starts_with(r#"key "listeners": expected a listener like"#));
    assert!(error(r#"log.dirs = ["/a", "/b"]"#)
        .starts_with(r#"key "log.dirs": more than one directory"#));
    assert!(
        error(r#"log.dirs = "/a,/b""#).starts_with(r#"key "log.dirs": more than one directory"#)
    );
    assert!(error(r#"advertised.listeners = "PLAINTEXT://host:0""#)
        .starts_with(r#"key "advertised.listeners": expected"#));
    assert!(error("node.id = 1\nnode.id = 2").starts_with("invalid TOML at line 2"));
    for nice in ["-21", "20"] {
        assert_eq!(
            error(&format!("shard.nice = {nice}")),
            format!(r#"key "shard.nice": expected an integer from -20 to 19, found {nice}"#)
        );
    }
    assert!(error(r#"shard.nice = "high""#).starts_with(r#"key "shard.nice": expected"#));
    assert_eq!(parse("shard.nice = -10").unwrap().shard_nice, -10);
    assert_eq!(parse("").unwrap().shard_nice, 0);
}

/// Guards the checks on `cores`: allowed set, duplicates, emptiness, and the notations.
#[test]
fn cores() {
    assert_eq!(
        error("cores = [0, 7]"),
        r#"key "cores": CPU 7 is not allowed; use one of the CPUs this process may run on (0-3)"#
    );
    assert_eq!(
        error("cores = [1, 1]"),
        r#"key "cores": expected each CPU id once, found CPU 1 twice"#
    );
    assert_eq!(
        error("cores = []"),
        r#"key "cores": expected at least one CPU id, found an empty list"#
    );
    assert!(error("cores = [-1]").starts_with(r#"key "cores": expected "all", a list of CPU ids"#));
    assert!(error(r#"cores = "some""#).ends_with(r#"found "some""#));
    assert_eq!(parse(r#"cores = "all""#).unwrap().cores, CPUS);
    assert_eq!(parse(r#"cores = "1-2""#).unwrap().cores, [1, 2]);
    assert_eq!(parse("cores = [2, 0]").unwrap().cores, [2, 0]);
    assert_eq!(parse("cores = [2, 0]").unwrap().shard_count(), 2);
}

/// Guards the checks on `[pins]`: key notation and shard range.
#[test]
fn pins() {
    assert_eq!(
        error("cores = [0, 1]\n[pins]\n\"orders/3\" = 2"),
        r#"key "pins.orders/3": expected a shard index from 0 to 1 (a position in cores), found 2"#
    );
    assert_eq!(
        error("[pins]\norders = 1"),
        r#"key "pins.orders": expected a key like "orders/3" (a valid topic name, '/', a partition ≥ 0), found "orders""#
    );
    assert!(
        error("[pins]\n\"orders/-1\" = 0").starts_with(r#"key "pins.orders/-1": expected a key"#)
    );
    let cfg = parse("cores = [0, 1]\n[pins]\n\"orders/3\" = 1\n\"orders/4\" = 1").unwrap();
    assert_eq!((cfg.place("orders", 3), cfg.place("orders", 4)), (1, 1));
}

/// Guards Kafka's coarser retention and roll keys, and which unit wins.
#[test]
fn time_units() {
    assert_eq!(
        parse("log.retention.hours = 1").unwrap().log_retention_ms,
        3_600_000
    );
    assert_eq!(
        parse("log.retention.minutes = 2").unwrap().log_retention_ms,
        120_000
    );
    assert_eq!(
        parse("log.retention.hours = -1").unwrap().log_retention_ms,
        -1
    );
    let both = "log.retention.hours = 1\nlog.retention.minutes = 2\nlog.retention.ms = 5";
    assert_eq!(parse(both).unwrap().log_retention_ms, 5);
    let both = "log.retention.hours = 1\nlog.retention.minutes = 2";
    assert_eq!(parse(both).unwrap().log_retention_ms, 120_000);
    assert_eq!(
        parse("log.roll.hours = 24").unwrap().log_roll_ms,
        86_400_000
    );
    assert!(
        error("log.retention.hours = 9223372036854775807").starts_with(
            r#"key "log.retention.hours": expected -1 (unlimited) or an integer from 1 to"#
        )
    );
    assert!(error("log.roll.ms = -1").starts_with(r#"key "log.roll.ms": expected an integer ≥ 1"#));
}

/// Guards listener forms and what clients are told.
#[test]
fn listeners() {
    let cfg = parse(r#"listeners = "127.0.0.1:0""#).unwrap();
    assert_eq!(cfg.listener.port(), 0);
    let bound: SocketAddr = "127.0.0.1:41234".parse().unwrap();
    assert_eq!(cfg.advertised(bound).to_string(), "127.0.0.1:41234");
    let any: SocketAddr = "0.0.0.0:9092".parse().unwrap();
    assert_eq!(cfg.advertised(any).to_string(), "127.0.0.1:9092");
    let cfg = parse(r#"advertised.listeners = "kafka.local:9092""#).unwrap();
    assert_eq!(
        cfg.advertised(bound),
        HostPort {
            host: "kafka.local".into(),
            port: 9092
        }
    );
}

/// Guards the broker's DescribeConfigs rows.
#[test]
fn broker_entries() {
    let cfg = parse("num.partitions = 3\n[pins]\n\"t/0\" = 1").unwrap();
    let entries = cfg.entries();
    let get = |name: &str| entries.iter().find(|e| e.name == name).unwrap();
    assert_eq!(get("num.partitions").value, "3");
    assert!(!get("num.partitions").is_default);
    assert!(get("node.id").is_default);
    assert_eq!(get("listeners").value, "PLAINTEXT://127.0.0.1:9092");
    assert_eq!(
        get("advertised.listeners").value,
        "PLAINTEXT://127.0.0.1:9092"
    );
    assert!(get("advertised.listeners").is_default);
    assert_eq!(get("log.retention.ms").value, "604800000");
    assert_eq!(get("flush").value, "always");
    assert_eq!(get("pins").value, "t/0=1");
    assert!(!get("pins").is_default);
    assert_eq!(get("cores").value, "0,1,2,3");
    assert!(entries.iter().all(|e| e.read_only));
    let names: Vec<_> = entries.iter().map(|e| e.name).collect();
    let expected: Vec<_> = BROKER_KEYS
        .iter()
        .copied()
        .filter(|k| !k.ends_with(".hours") && !k.starts_with("log.retention.minutes"))
        // Shown only when set.
        .filter(|k| {
            !["cluster.id", "broker.rack", "metrics.listener"].contains(k)
                && !k.starts_with("quic.tls.")
        })
        .collect();
    assert_eq!(names, expected);
}

fn arb_config() -> impl Strategy<Value = BrokerConfig> {
    let flush = prop_oneof![
        Just(FlushMode::Always),
        Just(FlushMode::Interval),
        Just(FlushMode::Never)
    ];
    let direct = prop_oneof![
        Just(DirectIo::On),
        Just(DirectIo::Auto),
        Just(DirectIo::Off)
    ];
    let placement = prop_oneof![Just(PlacementPolicy::Balanced), Just(PlacementPolicy::Hash)];
    let ts = prop_oneof![
        Just(TimestampType::CreateTime),
        Just(TimestampType::LogAppendTime)
    ];
    let retention = prop_oneof![Just(-1i64), 1i64..i64::MAX];
    let cores = Just(CPUS.to_vec())
        .prop_shuffle()
        .prop_flat_map(|c| (1..=c.len()).prop_map(move |n| c[..n].to_vec()));
    let pins =
        proptest::collection::btree_map(("[a-z_][a-z0-9_.-]{0,11}", 0i32..1000), 0usize..1, 0..4);
    let advertised = proptest::option::of(("[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5})?", 1u16..));
    (
        (
            0i32..,
            any::<u16>(),
            advertised,
            "/[a-z/_ ]{1,20}",
            1i32..,
            any::<bool>(),
        ),
        (
            1u32..=i32::MAX as u32,
            0u32..=i32::MAX as u32,
            4096u32..=i32::MAX as u32,
            1i64..,
        ),
        (
            retention.clone(),
            retention,
            1u32..=i32::MAX as u32,
            1i64..,
            ts,
            flush,
            direct,
        ),
        (0usize..1 << 40, cores, placement, pins),
    )
        .prop_map(|(a, b, c, d)| {
            let mut cfg = BrokerConfig::with_cores(d.1);
            (cfg.node_id, cfg.num_partitions, cfg.auto_create_topics) = (a.0, a.4, a.5);
            cfg.listener = SocketAddr::from(([10, 0, 0, 1], a.1));
            cfg.advertised_listener = a.2.map(|(host, port)| HostPort { host, port });
            cfg.log_dir = PathBuf::from(a.3.trim_end());
            (cfg.socket_request_max_bytes, cfg.message_max_bytes) = (b.0, b.1);
            (cfg.log_segment_bytes, cfg.log_roll_ms) = (b.2, b.3);
            (cfg.log_retention_ms, cfg.log_retention_bytes) = (c.0, c.1);
            (cfg.log_index_interval_bytes, cfg.log_flush_interval_ms) = (c.2, c.3);
            (cfg.log_message_timestamp_type, cfg.flush, cfg.direct_io) = (c.4, c.5, c.6);
            (cfg.log_hot_bytes, cfg.placement) = (d.0, d.2);
            cfg.shard_nice = (d.0 % 40) as i32 - 20;
            cfg.pins = d.3;
            cfg
        })
}

proptest! {
    /// Guards `--print-config` for any valid configuration: it parses back to itself.
    #[test]
    fn printed_config_parses_back(cfg in arb_config()) {
        let printed = cfg.to_toml_string();
        prop_assert_eq!(parse(&printed), Ok(cfg), "{}", printed);
    }
}

/// Guards the cluster keys across each other: a voter's roles, its CONTROLLER listener and
/// its voter entry, the TLS files, and the single node's refusals of cluster keys.
#[test]
fn cluster_keys_are_checked_together() {
    let base = r#"
node.id = 1
listeners = "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
controller.quorum.voters = "1@127.0.0.1:9093,2@127.0.0.2:9093,3@127.0.0.3:9093"
quic.tls.cert = "n1.crt"
quic.tls.key = "n1.key"
quic.tls.ca = "ca.crt"
cluster.id = "c1"
"#;
    let cfg = parse(base).unwrap();
    assert!(cfg.cluster.is_cluster());
    assert!(
        cfg.cluster.roles.controller,
        "a voter defaults to broker,controller"
    );
    let printed = cfg.to_toml_string();
    assert_eq!(parse(&printed).unwrap(), cfg, "{printed}");
    // Node 4 is not a voter: a broker only.
    let broker = parse(&base.replace("node.id = 1", "node.id = 4")).unwrap();
    assert!(!broker.cluster.roles.controller);

    let err = |text: &str| error(text);
    let with = |from: &str, to: &str| {
        let t = base.replace(from, to);
        assert_ne!(t, base, "{from}");
        err(&t)
    };
    assert!(
        with("node.id = 1", "node.id = 1\nprocess.roles = \"broker\"")
            .contains("node 1 is one of controller.quorum.voters")
    );
    assert!(with(
        "node.id = 1",
        "node.id = 4\nprocess.roles = \"broker,controller\""
    )
    .contains("node 4 is not one of controller.quorum.voters"));
    assert!(with(",CONTROLLER://127.0.0.1:9093", "").contains("a CONTROLLER listener"));
    assert!(
        with("CONTROLLER://127.0.0.1:9093", "CONTROLLER://127.0.0.1:9094")
            .contains("this node's entry (1@…) to name its CONTROLLER listener")
    );
    assert!(with("quic.tls.ca = \"ca.crt\"\n", "").contains("together"));
    let no_tls = base
        .lines()
        .filter(|l| !l.starts_with("quic.tls"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(err(&no_tls).contains("tern cert dev"));
    assert!(with(
        "node.id = 1",
        "node.id = 1\nbroker.heartbeat.interval.ms = 9000"
    )
    .contains("less than broker.session.timeout.ms"));
    assert!(with("2@127.0.0.2:9093", "1@127.0.0.2:9093").contains("each node id"));
    assert!(with("cluster.id = \"c1\"", "cluster.id = \"a b\"").contains("cluster.id"));
    assert!(
        with("node.id = 1", "node.id = 1\nprocess.roles = \"controller\"")
            .contains("controller-only")
    );
    // A single node refuses what only a cluster can use.
    assert!(err("process.roles = \"broker,controller\"")
        .contains("when controller.quorum.voters is empty"));
    assert!(
        err("quic.tls.cert = \"a\"\nquic.tls.key = \"b\"\nquic.tls.ca = \"c\"")
            .contains("a single node has no QUIC peers")
    );
}
