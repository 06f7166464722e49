//! Topic-level configuration as Kafka requests drive it: CreateTopics configs, AlterConfigs,
//! DescribeConfigs, and what is persisted.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use tern_tuning::{
    BrokerConfig, CleanupPolicy, ConfigErrorKind, FlushMode, TimestampType, TopicConfig, TOPIC_KEYS,
};

fn broker() -> BrokerConfig {
    let text = "log.retention.ms = 86400000\nflush = \"interval\"\nmessage.max.bytes = 2000000";
    BrokerConfig::from_toml_str_with_cores(text, &[0]).unwrap()
}

/// Guards that a topic without overrides takes the broker's `log.*` defaults.
#[test]
fn defaults_come_from_the_broker() {
    let b = broker();
    let t = TopicConfig::defaults_from(&b);
    assert_eq!(t.retention_ms, 86_400_000);
    assert_eq!(t.retention_bytes, -1);
    assert_eq!(t.segment_bytes, b.log_segment_bytes);
    assert_eq!(t.segment_ms, b.log_roll_ms);
    assert_eq!(t.index_interval_bytes, 4096);
    assert_eq!(t.flush, FlushMode::Interval);
    assert_eq!(t.flush_interval_ms, 1000);
    assert_eq!(t.timestamp_type, TimestampType::CreateTime);
    assert_eq!(t.max_message_bytes, 2_000_000);
    assert_eq!(t.cleanup_policy, CleanupPolicy::Delete);
    assert!(t.overrides().is_empty());
    assert!(t.entries().iter().all(|e| e.is_default && !e.read_only));
}

/// Guards applying string values and the DescribeConfigs rows that follow.
#[test]
fn apply_and_entries() {
    let defaults = TopicConfig::defaults_from(&broker());
    let mut t = defaults.clone();
    t.apply("retention.ms", "-1").unwrap();
    t.apply("flush", "always").unwrap();
    t.apply("message.timestamp.type", "LogAppendTime").unwrap();
    t.apply("segment.bytes", "1048576").unwrap();
    t.apply("cleanup.policy", "delete").unwrap();
    assert_eq!(t.retention_ms, -1);
    assert_eq!(t.flush, FlushMode::Always);
    assert_eq!(t.timestamp_type, TimestampType::LogAppendTime);
    assert_eq!(t.segment_bytes, 1 << 20);

    let entries = t.entries();
    assert_eq!(
        entries.iter().map(|e| e.name).collect::<Vec<_>>(),
        TOPIC_KEYS
    );
    let get = |name: &str| entries.iter().find(|e| e.name == name).unwrap();
    assert_eq!(
        (
            get("retention.ms").value.as_str(),
            get("retention.ms").is_default
        ),
        ("-1", false)
    );
    assert_eq!(get("message.timestamp.type").value, "LogAppendTime");
    assert_eq!(
        (get("flush.ms").value.as_str(), get("flush.ms").is_default),
        ("1000", true)
    );
    assert_eq!(get("max.message.bytes").value, "2000000");
    // The broker's default was interval; the topic chose always.
    assert!(!get("flush").is_default);
    // Setting a key to its default value is still an override, as in Kafka.
    assert!(!get("cleanup.policy").is_default);
}

/// Guards that only overrides are persisted, and that they load back over new defaults.
#[test]
fn overrides_persist_and_reload() {
    let defaults = TopicConfig::defaults_from(&broker());
    let t =
        TopicConfig::with_overrides(&defaults, [("retention.bytes", "1000"), ("flush.ms", "5")])
            .unwrap();
    let saved = t.overrides();
    let expected: BTreeMap<String, String> = [("flush.ms", "5"), ("retention.bytes", "1000")]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
    assert_eq!(saved, expected);

    // The broker's default retention changes; the topic follows it, but keeps its overrides.
    let mut b = broker();
    b.log_retention_ms = 1000;
    b.log_flush_interval_ms = 99;
    let new_defaults = TopicConfig::defaults_from(&b);
    let reloaded = TopicConfig::with_overrides(&new_defaults, &saved).unwrap();
    assert_eq!(reloaded.retention_ms, 1000);
    assert_eq!(reloaded.flush_interval_ms, 5);
    assert_eq!(reloaded.retention_bytes, 1000);
    assert_eq!(reloaded.overrides(), saved);
}

/// Guards removing an override (IncrementalAlterConfigs DELETE).
#[test]
fn reset_restores_the_default() {
    let defaults = TopicConfig::defaults_from(&broker());
    let mut t = TopicConfig::with_overrides(&defaults, [("segment.ms", "60000")]).unwrap();
    assert!(t.is_overridden("segment.ms"));
    t.reset("segment.ms", &defaults).unwrap();
    assert!(!t.is_overridden("segment.ms"));
    assert_eq!(t, defaults);
    assert!(t.reset("segment.millis", &defaults).is_err());
}

/// Guards the one-line errors a Kafka client gets back, and that a refused value changes
/// nothing.
#[test]
fn errors() {
    let defaults = TopicConfig::defaults_from(&broker());
    let mut t = defaults.clone();
    let err = |t: &mut TopicConfig, k: &str, v: &str| {
        let e = t.apply(k, v).unwrap_err();
        assert_eq!(e.key(), Some(k));
        e.to_string()
    };
    assert_eq!(
        err(&mut t, "retention.msec", "1"),
        r#"unknown key "retention.msec" (did you mean "retention.ms"?)"#
    );
    assert_eq!(
        err(&mut t, "log.retention.ms", "1"),
        r#"unknown key "log.retention.ms" (did you mean "retention.ms"?)"#
    );
    assert_eq!(
        err(&mut t, "retention.ms", "a week"),
        r#"key "retention.ms": expected -1 (unlimited) or an integer ≥ 1, found "a week""#
    );
    assert_eq!(
        err(&mut t, "segment.bytes", "100"),
        r#"key "segment.bytes": expected an integer ≥ 4096, found "100""#
    );
    assert_eq!(
        err(&mut t, "flush", "sometimes"),
        r#"key "flush": "sometimes" is not allowed; use one of always, interval, never"#
    );
    assert_eq!(
        err(&mut t, "cleanup.policy", "compact"),
        r#"key "cleanup.policy": "compact" is not supported yet; use delete"#
    );
    let e = t.apply("cleanup.policy", "compact,delete").unwrap_err();
    assert!(
        matches!(e.kind(), ConfigErrorKind::Unsupported { .. }),
        "{e}"
    );
    assert!(TopicConfig::with_overrides(&defaults, [("flush.ms", "0")]).is_err());
    assert_eq!(t, defaults);
}

/// Guards the dynamic broker defaults: each broker key stands for its topic key's default
/// (nothing counts as a topic's own key), a key that may not change is refused, and a bad
/// value is named by its broker key.
#[test]
fn dynamic_defaults_replace_the_file_defaults() {
    let broker = BrokerConfig::default();
    let dynamic = [
        ("log.retention.ms", "3600000"),
        ("message.max.bytes", "2048"),
    ];
    let t = TopicConfig::defaults_with(&broker, dynamic).unwrap();
    assert_eq!(t.retention_ms, 3_600_000);
    assert_eq!(t.max_message_bytes, 2048);
    assert!(t.overrides().is_empty());
    for (broker_key, topic_key) in tern_tuning::DYNAMIC_BROKER_KEYS {
        assert!(tern_tuning::TOPIC_KEYS.contains(topic_key), "{broker_key}");
        assert!(
            tern_tuning::BROKER_KEYS.contains(broker_key),
            "{broker_key}"
        );
    }
    let err = TopicConfig::defaults_with(&broker, [("log.dirs", "/x")]).unwrap_err();
    assert!(err.to_string().contains("log.dirs"), "{err}");
    let err = TopicConfig::defaults_with(&broker, [("log.roll.ms", "soon")]).unwrap_err();
    assert!(err.to_string().contains("\"log.roll.ms\""), "{err}");
}
