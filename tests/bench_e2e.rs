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
