//! `/metrics` on `metrics.listener` of a real `tern serve`: scraped under load and parsed
//! with a Prometheus text-format parser, the counters checked against what was sent; and the
//! wrong settings refused at start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cmd::{spawn, tern};
use common::Broker;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const DEADLINE: Duration = Duration::from_secs(60);

/// A port nothing listens on now (bound then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One HTTP request: the status line and the body.
fn http(addr: &str, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// Scrapes `/metrics` and parses it.
fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let (status, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
}

/// The sum of a metric's samples whose labels include `labels`.
fn sum(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Guards the metrics under load: 400 acknowledged 1 KiB records to 4 partitions on two
/// shards show up as Produce requests (with a latency histogram whose count is theirs), as
/// bytes in, as each partition's log end offset and appended bytes; every shard reports its
/// CPU time; other paths and methods are refused.
#[test]
fn metrics_count_what_was_sent() {
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let broker = Broker::start(&format!(
        "cores = [0, 1]\nmetrics.listener = \"{metrics}\"\n"
    ));
    tern(&broker, &["topic", "create", "m", "--partitions", "4"], "").ok();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let value = vec![b'x'; 1024];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let keys: Vec<String> = (0..400).map(|i| format!("k{i}")).collect();
        let sends: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                producer.send(
                    FutureRecord::to("m")
                        .partition(i as i32 % 4)
                        .key(key)
                        .payload(&value),
                    Duration::from_secs(30),
                )
            })
            .collect();
        for s in sends {
            s.await.expect("acknowledged");
        }
    });

    // Partition figures are republished every second: wait for them.
    let start = Instant::now();
    let s = loop {
        let s = scrape(&metrics);
        if sum(&s, "tern_partition_log_end_offset", &[("topic", "m")]) == 400.0 {
            break s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "log end offsets never reached 400"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for p in 0..4 {
        let p = p.to_string();
        let end = sum(
            &s,
            "tern_partition_log_end_offset",
            &[("topic", "m"), ("partition", &p)],
        );
        assert_eq!(end, 100.0, "partition {p}");
        let hw = sum(
            &s,
            "tern_partition_high_watermark",
            &[("topic", "m"), ("partition", &p)],
        );
        assert_eq!(hw, 100.0, "partition {p}");
    }
    let shards: BTreeMap<String, f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == "tern_partition_log_end_offset")
        .filter(|x| x.labels.get("topic") == Some("m"))
        .map(|x| (x.labels.get("shard").unwrap().to_string(), 0.0))
        .collect();
    assert_eq!(shards.len(), 2, "the topic's partitions are on both shards");
    let appended = sum(&s, "tern_partition_appended_bytes_total", &[("topic", "m")]);
    assert!(appended >= 400.0 * 1024.0, "{appended}");
    let produces = sum(&s, "tern_requests_total", &[("api", "Produce")]);
    assert!((1.0..=400.0).contains(&produces), "{produces}");
    let histogram: f64 = s
        .samples
        .iter()
        .filter(|x| x.metric == "tern_request_latency_seconds")
        .filter(|x| x.labels.get("api") == Some("Produce"))
        .map(|x| match &x.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            _ => 0.0,
        })
        .sum();
    assert_eq!(histogram, produces, "the histogram counts every Produce");
    let bytes_in = sum(&s, "tern_bytes_in_total", &[]);
    assert!(bytes_in >= 400.0 * 1024.0, "{bytes_in}");
    assert!(sum(&s, "tern_bytes_out_total", &[]) > 0.0);
    // Requests reach partitions of the other shard through its queue; acks=all appends are
    // made durable by the shard journals (at least one write each per shard with data).
    assert!(sum(&s, "tern_cross_shard_messages_total", &[]) > 0.0);
    let journal_writes = sum(&s, "tern_journal_writes_total", &[]);
    assert!(journal_writes >= 2.0, "{journal_writes}");
    assert!(sum(&s, "tern_journal_records_total", &[]) >= journal_writes);
    for shard in ["0", "1"] {
        assert!(
            s.samples
                .iter()
                .any(|x| x.metric == "tern_shard_cpu_seconds_total"
                    && x.labels.get("shard") == Some(shard)),
            "no CPU time of shard {shard}"
        );
    }
    // Counters only grow: a second scrape after more requests is at least as high.
    tern(&broker, &["topic", "list"], "").ok();
    let again = scrape(&metrics);
    assert!(sum(&again, "tern_requests_total", &[]) > sum(&s, "tern_requests_total", &[]));

    // A consumer group reads everything and commits: one member, no lag on any partition.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "mg")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&["m"]).unwrap();
    let mut read = 0;
    let start = Instant::now();
    while read < 400 {
        assert!(start.elapsed() < DEADLINE, "read {read} of 400");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            m.unwrap();
            read += 1;
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    let start = Instant::now();
    loop {
        let s = scrape(&metrics);
        let lags = s
            .samples
            .iter()
            .filter(|x| x.metric == "tern_group_lag" && x.labels.get("group") == Some("mg"))
            .count();
        let members = sum(&s, "tern_group_members", &[("group", "mg")]);
        if lags == 4 && members == 1.0 {
            assert_eq!(sum(&s, "tern_group_lag", &[("group", "mg")]), 0.0);
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "group mg: {lags} lags, {members} members"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(consumer);

    let (status, _) = http(&metrics, "GET /other HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http(&metrics, "POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
}

/// Guards the refusals at start: a `metrics.listener` that is not an address, and one that
/// is taken, each stop `tern serve` with one line naming the key.
#[test]
fn bad_metrics_listeners_are_refused_at_start() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    for (value, want) in [
        ("nonsense", "metrics.listener"),
        (taken.as_str(), "metrics.listener"),
    ] {
        let config = dir.path().join("tern.toml");
        std::fs::write(
            &config,
            format!(
                "listeners = \"127.0.0.1:0\"\nlog.dirs = \"{}\"\ncores = [0]\nmetrics.listener = \"{value}\"\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let out = spawn(&["serve", "--config", config.to_str().unwrap()], b"").finish();
        let err = out.one_line_error();
        assert!(err.contains(want), "{value}: {err}");
    }
    drop(holder);
}
