//! `tern bench run` end to end against a real `tern serve`: a workload of a few seconds,
//! then the JSON report's shape, every acknowledged record consumed, the plot written, and
//! `tern bench compare` of the report with itself.

mod common;

use std::process::Command;

use common::Broker;
use serde_json::Value;

const WORKLOAD: &str = "
name: e2e short fixed rate
topics: 1
partitionsPerTopic: 4
messageSize: 256
keyDistributor: KEY_ROUND_ROBIN
subscriptionsPerTopic: 2
producersPerTopic: 2
consumerPerSubscription: 2
producerRate: 2000
warmupDurationMinutes: 0
testDurationMinutes: 1
driver:
  acks: all
  lingerMs: 2
  batchSizeBytes: 16384
  topicConfig: {}
";

fn tern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tern"))
}

/// Guards the whole harness path: topics created, records produced on a timeline and
/// acknowledged, every one consumed by every subscription, the report complete.
#[test]
fn short_run_reports_and_consumes_everything() {
    let broker = Broker::start("");
    let dir = tempfile::tempdir().unwrap();
    let workload = dir.path().join("w.yaml");
    std::fs::write(&workload, WORKLOAD).unwrap();
    let json = dir.path().join("r.json");
    let plot = dir.path().join("r.svg");
    let out = tern()
        .args(["bench", "run", "--workload"])
        .arg(&workload)
        .args([
            "--broker",
            &broker.addr(),
            "--duration-s",
            "3",
            "--window-s",
            "1",
            "--broker-pid",
            &broker.pid().to_string(),
            "--json",
        ])
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tern bench run failed:\n{stdout}\n{}\nbroker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    assert!(stdout.contains("publish"), "{stdout}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let n = |k: &str| {
        r[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {r:#}"))
    };
    let acked = n("records_acked");
    // 2000 records/s for 3 s; nothing is lost or left behind.
    assert!(acked > 0.0);
    assert_eq!(acked, n("records_created"));
    assert_eq!(n("records_publish_errors"), 0.0);
    assert_eq!(n("records_consumed_expected"), 2.0 * acked);
    assert_eq!(n("records_consumed"), n("records_consumed_expected"));
    for k in [
        "publish_latency_p50_ms",
        "publish_latency_p75_ms",
        "publish_latency_p95_ms",
        "publish_latency_p99_ms",
        "publish_latency_p99_9_ms",
        "publish_latency_p99_99_ms",
        "publish_latency_max_ms",
        "publish_delay_latency_p99_ms",
        "end_to_end_latency_p99_ms",
        "publish_rate_records_per_s",
        "publish_rate_mb_per_s",
        "consume_rate_mb_per_s",
    ] {
        assert!(n(k) >= 0.0, "{k}");
    }
    assert!(n("publish_latency_p50_ms") <= n("publish_latency_p99_ms"));
    assert!(n("publish_latency_p99_ms") <= n("publish_latency_max_ms"));
    assert_eq!(n("producers"), 2.0);
    assert_eq!(n("consumers"), 4.0);
    assert!(r["machine"]["nproc"].as_u64().is_some());
    assert_eq!(r["broker_address"].as_str(), Some(broker.addr().as_str()));
    assert_eq!(r["workload"]["driver"]["acks"].as_str(), Some("all"));
    let windows = r["windows"].as_array().unwrap();
    assert!(windows.iter().any(|w| w["phase"] == "test"));
    assert!(windows.iter().all(|w| w["publish_mb_per_s"].is_number()));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    // --broker-pid: the broker's CPU over the test phase, per GB too.
    let cpu = &r["broker_cpu"];
    assert_eq!(
        cpu["pid"].as_i64(),
        Some(i64::from(broker.pid())),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cores = cpu["cores"].as_f64().unwrap();
    assert!(cores > 0.0 && cores < 64.0, "{cpu}");
    assert!(cpu["core_s_per_gb"].as_f64().unwrap() > 0.0, "{cpu}");
    assert!(stdout.contains("broker CPU (pid"), "{stdout}");

    let cmp = tern()
        .args(["bench", "compare"])
        .arg(&json)
        .arg(&json)
        .output()
        .unwrap();
    assert!(cmp.status.success());
    let text = String::from_utf8_lossy(&cmp.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("publish_latency_p99_ms"))
        .unwrap();
    assert!(line.ends_with("1.000"), "{text}");
    broker.assert_no_refused_frames();
}

/// Guards the error of a bad workload file: it names the field and the run does not start.
#[test]
fn bad_workload_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let workload = dir.path().join("w.yaml");
    std::fs::write(&workload, WORKLOAD.replace("  lingerMs: 2\n", "")).unwrap();
    let out = tern()
        .args(["bench", "run", "--workload"])
        .arg(&workload)
        .args(["--broker", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lingerMs"), "{err}");
    // A --broker-pid that names no process is refused before anything runs.
    std::fs::write(&workload, WORKLOAD).unwrap();
    let out = tern()
        .args(["bench", "run", "--workload"])
        .arg(&workload)
        .args(["--broker", "127.0.0.1:1", "--broker-pid", "4294967295"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--broker-pid 4294967295"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Guards `--vs`: the same workload against two brokers in alternating rounds, the rounds'
/// ratios printed and written, a report per broker; `--rounds 0` is refused. The batches
/// are lz4-compressed, so compressed produce and consume are covered end to end.
#[test]
fn vs_runs_two_brokers_interleaved() {
    let (a, b) = (Broker::start(""), Broker::start(""));
    let dir = tempfile::tempdir().unwrap();
    let workload = dir.path().join("w.yaml");
    let lz4 = WORKLOAD.replace("  acks: all\n", "  acks: all\n  compression: lz4\n");
    assert_ne!(lz4, WORKLOAD);
    std::fs::write(&workload, lz4).unwrap();
    let json = dir.path().join("r.json");
    let run = |rounds: &str| {
        tern()
            .args(["bench", "run", "--workload"])
            .arg(&workload)
            .args(["--broker", &a.addr(), "--vs", &b.addr(), "--rounds", rounds])
            .args(["--duration-s", "2", "--window-s", "1", "--json"])
            .arg(&json)
            .output()
            .unwrap()
    };
    let refused = run("0");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--rounds"));
    let out = run("2");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("interleaved rounds"), "{stdout}");
    let rounds: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r-rounds.json")).unwrap())
            .unwrap();
    let rounds = rounds.as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    assert_eq!(
        (rounds[0]["first"].as_str(), rounds[1]["first"].as_str()),
        (Some("a"), Some("b"))
    );
    for r in rounds {
        assert!(
            r["ratio_publish_rate_mb_per_s"]
                .as_f64()
                .unwrap()
                .is_finite(),
            "{r}"
        );
    }
    for path in ["r.json", "r-vs.json"] {
        let r: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(path)).unwrap()).unwrap();
        let acked = r["records_acked"].as_f64().unwrap();
        assert!(acked > 0.0, "{path}");
        assert_eq!(r["records_publish_errors"].as_f64(), Some(0.0), "{path}");
        assert_eq!(r["records_consumed"].as_f64(), Some(2.0 * acked), "{path}");
    }
}

/// Guards `tern bench floor`: every record of the timeline is written and counted, nothing is
/// left in the directory, and plans that cannot run are refused with the flag named.
#[test]
fn floor_measures_and_refuses_bad_plans() {
    let dir = tempfile::tempdir().unwrap();
    let floor = |args: &[&str]| {
        tern()
            .args(["bench", "floor", "--dir"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = floor(&[
        "--partitions",
        "2",
        "--records-per-s",
        "500",
        "--duration-s",
        "0.5",
        "--warmup-s",
        "0.2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("group-commit floor"), "{stdout}");
    // 500 records/s for 0.7 s, all of them written.
    assert!(stdout.contains("350 records in "), "{stdout}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let err_of = |args: &[&str]| {
        let out = floor(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(err_of(&["--records-per-s", "0"]).contains("--records-per-s"));
    assert!(err_of(&["--records-per-s", "NaN"]).contains("--records-per-s"));
    assert!(err_of(&["--records-per-s", "10", "--partitions", "0"]).contains("--partitions"));
    assert!(err_of(&["--records-per-s", "10", "--duration-s=-1"]).contains("--duration-s"));
    let workload = dir.path().join("w.yaml");
    std::fs::write(
        &workload,
        WORKLOAD.replace("producerRate: 2000", "producerRate: 0"),
    )
    .unwrap();
    let err = err_of(&["--workload", workload.to_str().unwrap()]);
    assert!(err.contains("producerRate 0"), "{err}");
}

// ------------------------------------------------------------------------- null broker

/// A `tern bench null-broker --listen 127.0.0.1:0` process: its address read from the line
/// it prints on start, its stderr (debug logs) in a file, SIGTERM and a bounded wait to stop.
struct NullBrokerProcess {
    child: Option<std::process::Child>,
    addr: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// How long the null broker may take to start, to stop, or a client to get its answer.
const NULL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

#[allow(clippy::unwrap_used, clippy::expect_used)]
impl NullBrokerProcess {
    fn start() -> NullBrokerProcess {
        use std::io::BufRead;
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let log = dir.path().join("null-broker.log");
        let mut child = tern()
            .args(["bench", "null-broker", "--listen", "127.0.0.1:0"])
            .env("TERN_LOG", "debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn tern bench null-broker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("null broker listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let mut p = NullBrokerProcess {
            child: Some(child),
            addr: String::new(),
            log,
            _dir: dir,
        };
        match rx.recv_timeout(NULL_DEADLINE) {
            Ok(addr) => p.addr = addr,
            Err(_) => panic!("the null broker printed no address:\n{}", p.log()),
        }
        assert!(p.addr.starts_with("127.0.0.1:"), "{}", p.addr);
        assert!(!p.addr.ends_with(":0"), "{}", p.addr);
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with its log) if the process has exited.
    fn assert_alive(&mut self) {
        let status = self.child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            status.is_none(),
            "the null broker exited ({status:?}):\n{}",
            self.log()
        );
    }

    /// SIGTERM and a bounded wait for the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + NULL_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the null broker did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for NullBrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A delivery report: the send id, and the partition and offset or the error.
type Delivery = (usize, Result<(i32, i64), String>);

/// Delivery reports of a librdkafka producer.
#[derive(Default)]
struct Deliveries(std::sync::Mutex<Vec<Delivery>>);

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, id: usize) {
        use rdkafka::Message;
        let outcome = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        if let Ok(mut d) = self.0.lock() {
            d.push((id, outcome));
        }
    }
}

/// Guards the null broker as a Kafka broker for librdkafka: 2,000 records produced with
/// acks=all to a topic it creates on Metadata are acknowledged at offsets 0..2000 and read
/// back (from `Offset::Beginning`, through ListOffsets) in order and identical, every frame
/// of both clients understood; SIGTERM stops it with status 0.
#[test]
fn null_broker_round_trips_librdkafka() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    use std::time::{Duration, Instant};

    const N: usize = 2000;
    let mut broker = NullBrokerProcess::start();
    let topic = "null-round-trip";
    let record = |i: usize| {
        let value: Vec<u8> = format!("value-{i}-")
            .bytes()
            .chain((0..i % 300).map(|j| (i + j) as u8))
            .collect();
        (format!("key-{i}").into_bytes(), value)
    };
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create_with_context(Deliveries::default())
        .unwrap();
    let deadline = Instant::now() + NULL_DEADLINE;
    for i in 0..N {
        let (key, value) = record(i);
        loop {
            let r = BaseRecord::with_opaque_to(topic, i)
                .key(&key[..])
                .payload(&value[..]);
            match producer.send(r) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline =>
                {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("send {i}: {e}"),
            }
        }
    }
    producer.flush(NULL_DEADLINE).unwrap();
    let mut delivered = std::mem::take(&mut *producer.context().0.lock().unwrap());
    delivered.sort_by_key(|(id, _)| *id);
    assert_eq!(delivered.len(), N, "records without a delivery report");
    for (id, outcome) in &delivered {
        assert_eq!(outcome, &Ok((0, *id as i64)), "record {id}");
    }
    drop(producer);

    // Manual assignment: librdkafka wants a group.id, but nothing is committed.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "null-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + NULL_DEADLINE;
    let mut got = Vec::with_capacity(N);
    while got.len() < N {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {N} records:\n{}",
            got.len(),
            broker.log()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => panic!("consumer error after {} records: {e}", got.len()),
            Some(Ok(m)) => got.push((
                m.offset(),
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
            )),
        }
    }
    drop(consumer);
    for (i, (offset, key, value)) in got.into_iter().enumerate() {
        let (k, v) = record(i);
        assert_eq!(offset, i as i64);
        assert_eq!(key.as_deref(), Some(&k[..]), "key of record {i}");
        assert_eq!(value.as_deref(), Some(&v[..]), "value of record {i}");
    }
    broker.assert_alive();
    let status = broker.stop();
    let log = broker.log();
    assert!(status.success(), "{status}:\n{log}");
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    assert!(
        refused.is_empty(),
        "frames refused:\n{}",
        refused.join("\n")
    );
}

/// Guards the null broker's wrong inputs: an address that is not one, or not this
/// machine's, is a one-line error with exit code 1; a garbage frame or an oversized length
/// on a raw socket closes that connection (with a debug log) and the next client is
/// served.
#[test]
fn null_broker_refuses_bad_input() {
    use std::io::{Read, Write};
    use std::time::Duration;

    for listen in ["nonsense", "127.0.0.1:99999", "192.0.2.1:0"] {
        let err = common::cmd::spawn(&["bench", "null-broker", "--listen", listen], b"")
            .finish()
            .one_line_error();
        assert!(err.contains("--listen"), "{listen}: {err}");
    }

    let mut broker = NullBrokerProcess::start();
    let garbage: [&[u8]; 3] = [
        // An unknown API key.
        &[0, 0, 0, 12, 0x7f, 0x7f, 0x7f, 0x7f, 1, 2, 3, 4, 5, 6, 7, 8],
        // A length far above the 100 MiB bound.
        &[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0],
        // Metadata v12 whose body does not decode.
        &[0, 0, 0, 12, 0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0x00, 0xff],
    ];
    for frame in garbage {
        let mut s = std::net::TcpStream::connect(&broker.addr).unwrap();
        s.set_read_timeout(Some(NULL_DEADLINE)).unwrap();
        s.write_all(frame).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{frame:?}: the connection was not closed: {other:?}"),
        }
    }
    // The next client is served: ApiVersions, then Metadata naming the broker itself.
    let mut c = tern_net::client::Client::connect(&broker.addr, Duration::from_secs(10)).unwrap();
    let resp: kafka_protocol::messages::MetadataResponse = c
        .request(
            kafka_protocol::messages::ApiKey::Metadata,
            12,
            &kafka_protocol::messages::MetadataRequest::default(),
        )
        .unwrap();
    let port = broker
        .addr
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<i32>()
        .unwrap();
    assert_eq!(resp.brokers.len(), 1);
    assert_eq!(resp.brokers[0].port, port);
    broker.assert_alive();
    let log = broker.log();
    let refused = log.lines().filter(|l| l.contains("refused")).count();
    assert_eq!(refused, garbage.len(), "{log}");
    assert!(broker.stop().success());
}

/// Guards `--baseline null` of `tern bench run`: the workload runs against an in-process
/// null broker first, the report carries its figures (every record acknowledged and
/// consumed there too) and the p50/p99 ratios; a maximum-rate workload is refused before
/// anything runs.
#[test]
fn null_baseline_in_run_report() {
    let broker = Broker::start("");
    let dir = tempfile::tempdir().unwrap();
    let workload = dir.path().join("w.yaml");
    std::fs::write(&workload, WORKLOAD).unwrap();
    let json = dir.path().join("r.json");
    let run = |workload: &std::path::Path| {
        tern()
            .args(["bench", "run", "--workload"])
            .arg(workload)
            .args(["--broker", &broker.addr(), "--baseline", "null"])
            .args(["--duration-s", "2", "--window-s", "1", "--json"])
            .arg(&json)
            .output()
            .unwrap()
    };
    let out = run(&workload);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("null broker"), "{stdout}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let null = &r["null_baseline"];
    let acked = null["records_acked"].as_f64().unwrap();
    assert!(acked > 0.0, "{null}");
    assert_eq!(null["records_publish_errors"].as_f64(), Some(0.0));
    assert_eq!(null["records_consumed"].as_f64(), Some(2.0 * acked));
    assert_ne!(null["broker_address"], r["broker_address"]);
    let p99 = null["publish_latency_p99_ms"].as_f64().unwrap();
    assert!(p99 > 0.0, "{null}");
    let ratio = r["ratio_publish_p99_to_null_p99"].as_f64().unwrap();
    let want = r["publish_latency_p99_ms"].as_f64().unwrap() / p99;
    assert!((ratio - want).abs() < 1e-9, "{ratio} vs {want}");
    assert!(r["ratio_publish_p50_to_null_p50"].as_f64().unwrap() > 0.0);
    assert!(null["broker_cpu_s"].as_f64().unwrap() >= 0.0);

    let max_rate = dir.path().join("max.yaml");
    std::fs::write(
        &max_rate,
        WORKLOAD.replace("producerRate: 2000", "producerRate: 0"),
    )
    .unwrap();
    let err = common::cmd::Output::from(run(&max_rate)).one_line_error();
    assert!(err.contains("--baseline null"), "{err}");
    broker.assert_no_refused_frames();
}
