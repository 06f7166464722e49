//! `tern chaos` end to end, on loopback (no root needed): a short run of kills and pauses
//! against three real nodes with real librdkafka clients passes the checker and writes its
//! report; wrong options are refused with one readable line and touch nothing. (CI runs the
//! namespaced `--quick` mode with every fault kind when it runs as root: `.ci/run`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn tern(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .output()
        .expect("run tern")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// Four faults drawn from what loopback allows (kills of a node, a leader, the controller;
/// pauses): nothing acknowledged lost, duplicated or reordered, the skipped kinds named, and
/// the report (history, outcome, summary, timeline) written.
#[test]
fn a_short_loopback_run_passes_and_reports() {
    let dir = run_dir("chaos-run");
    let d = dir.path().join("run");
    let out = tern(&[
        "chaos",
        "--net",
        "loopback",
        "--faults",
        "4",
        "--fault-ms",
        "500..1500",
        "--rate",
        "100",
        "--dir",
        d.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "chaos failed ({}):\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(stdout.contains("verdict: ok"), "{stdout}");
    assert!(stdout.contains("PASS"), "{stdout}");
    for kind in [
        "isolate",
        "split",
        "one-way",
        "bandwidth",
        "disk-full",
        "delay",
    ] {
        assert!(stdout.contains(&format!("skipped {kind}")), "{stdout}");
    }
    let report = d.join("report");
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("history.json")).unwrap()).unwrap();
    let events = history["events"].as_array().unwrap();
    let count = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
    assert!(count("ack") > 100, "acknowledgements recorded");
    assert!(count("read") > 100, "reads recorded");
    assert_eq!(count("fault-start"), 4);
    assert_eq!(count("fault-end"), 4);
    let outcome: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("outcome.json")).unwrap()).unwrap();
    assert_eq!(outcome["verdict"]["ok"], true);
    assert_eq!(outcome["faults"].as_array().unwrap().len(), 4);
    let svg = std::fs::read_to_string(report.join("timeline.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(std::fs::read_to_string(report.join("summary.txt"))
        .unwrap()
        .contains("PASS"));
}

/// Asserts exit status `code` with one `tern: error:` line (or clap's usage error for 2)
/// containing `needle`.
fn refused(out: &Output, code: i32, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    if code == 1 {
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].starts_with("tern: error: "), "{stderr}");
    }
}

#[test]
fn wrong_options_are_refused_and_touch_nothing() {
    let dir = run_dir("chaos-bad");
    let d = dir.path().join("run");
    let d = d.to_str().unwrap();
    let lo = ["chaos", "--net", "loopback", "--dir", d];
    let with = |more: &[&str]| {
        let mut a: Vec<&str> = lo.to_vec();
        a.extend_from_slice(more);
        tern(&a)
    };
    refused(&with(&["--nodes", "2"]), 1, "a run needs 3 to 9 nodes");
    refused(
        &with(&["--kinds", "meteor"]),
        2,
        "expected one of kill-node",
    );
    refused(&with(&["--fault-ms", "5..1"]), 2, "need 0 < MIN ≤ MAX");
    refused(&with(&["--fault-ms", "1000"]), 2, "expected MIN..MAX");
    refused(
        &tern(&["chaos", "--net", "carrier-pigeon", "--dir", d]),
        2,
        "expected namespaces or loopback",
    );
    refused(
        &with(&["--kinds", "isolate"]),
        1,
        "fault kind isolate: needs network namespaces",
    );
    refused(&with(&["--rate", "0"]), 1, "must be positive");
    // A directory that is not a chaos run's is never emptied.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("precious.txt"), "keep me").unwrap();
    let out = tern(&[
        "chaos",
        "--net",
        "loopback",
        "--dir",
        foreign.to_str().unwrap(),
    ]);
    refused(&out, 1, "not a tern chaos directory");
    assert_eq!(
        std::fs::read_to_string(foreign.join("precious.txt")).unwrap(),
        "keep me"
    );
    assert!(!Path::new(d).join("report").exists(), "no run was made");
    // Without root, the namespaced mode says what it needs and exits 2.
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        refused(&tern(&["chaos", "--dir", d]), 2, "need root");
    }
}

/// SIGTERM during a run: the fault in force is healed, every node is stopped, and the run
/// ends with an error saying so (no verdict), leaving no `tern serve` behind.
#[test]
fn a_signal_ends_a_run_and_leaves_nothing_running() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = run_dir("chaos-signal");
    let d = dir.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["chaos", "--net", "loopback", "--faults", "50", "--dir"])
        .arg(&d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !seen.iter().any(|l: &String| l.contains("fault 1/50")) {
        assert!(Instant::now() < deadline, "no fault began: {seen:?}");
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not end after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
        seen.push(l);
    }
    assert_eq!(status.code(), Some(1), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("interrupted")), "{seen:?}");
    let ours = d.to_str().unwrap().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(" serve ") && c.contains(&ours))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}
