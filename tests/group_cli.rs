//! End-to-end tests of `tern group` against a real `tern serve` process: listing, describing
//! with lag, resetting offsets (dry run and `--execute`), deleting, the broker's refusals
//! while a librdkafka consumer is an active member, and one-line errors for bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::cmd::tern;
use common::Broker;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Broker settings: a short first-rebalance delay keeps joins fast.
const GROUPS: &str = "group.initial.rebalance.delay.ms = 300";
/// How long a condition may take to come true (a rebalance, a member leaving).
const DEADLINE: Duration = Duration::from_secs(60);

/// A topic of `partitions` partitions holding `counts[p]` records in partition p.
fn topic_with_records(b: &Broker, topic: &str, counts: &[usize]) {
    let n = counts.len().to_string();
    tern(b, &["topic", "create", topic, "--partitions", &n], "").ok();
    for (p, count) in counts.iter().enumerate() {
        let lines: String = (0..*count).map(|i| format!("v{i}\n")).collect();
        tern(b, &["produce", topic, "-p", &p.to_string()], &lines).ok();
    }
}

/// The rows of the per-partition table of `describe`: (topic, partition) → the other cells.
fn lag_rows(describe: &str) -> Vec<Vec<String>> {
    describe
        .lines()
        .skip_while(|l| !l.starts_with("TOPIC"))
        .skip(1)
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

fn row(topic: &str, p: i32, cells: &[&str]) -> Vec<String> {
    let mut r = vec![topic.to_string(), p.to_string()];
    r.extend(cells.iter().map(|c| c.to_string()));
    r
}

/// Runs `describe` until `done` holds for its output (a member joining or leaving).
fn describe_until(b: &Broker, group: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = tern(b, &["group", "describe", group], "");
        let (stdout, stderr) = (out.stdout, out.stderr);
        if out.status.success() && done(&stdout) {
            return stdout;
        }
        assert!(Instant::now() < deadline, "{what}:\n{stdout}{stderr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Guards describe's CURRENT/LOG-END/LAG, dry runs that change nothing, and every reset
/// target with `--execute` (simple commits to a group without members), then `list`.
#[test]
fn describe_lag_and_reset_offsets() {
    let b = Broker::start(GROUPS);
    topic_with_records(&b, "orders", &[10, 4]);

    let err = tern(&b, &["group", "describe", "g1"], "").one_line_error();
    assert!(err.contains("group \"g1\" does not exist"), "{err}");

    // A dry run prints the plan and commits nothing: the group still does not exist.
    let out = tern(
        &b,
        &[
            "group",
            "reset-offsets",
            "g1",
            "--topic",
            "orders",
            "--to-earliest",
        ],
        "",
    );
    let stderr = out.stderr.clone();
    assert!(stderr.contains("dry run"), "{stderr}");
    let plan = out.ok();
    assert_eq!(
        plan.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["TOPIC", "PARTITION", "OLD", "NEW"]
    );
    assert_eq!(
        lag_rows_of_plan(&plan),
        [row("orders", 0, &["-", "0"]), row("orders", 1, &["-", "0"])]
    );
    tern(&b, &["group", "describe", "g1"], "").one_line_error();

    let reset = |args: &[&str]| {
        let mut all = vec!["group", "reset-offsets", "g1"];
        all.extend(args);
        tern(&b, &all, "").ok()
    };
    reset(&["--topic", "orders", "--to-offset", "3", "--execute"]);
    let d = tern(&b, &["group", "describe", "g1"], "").ok();
    assert!(d.starts_with("group: g1  state: Empty"), "{d}");
    assert_eq!(
        lag_rows(&d),
        [
            row("orders", 0, &["3", "10", "7", "-"]),
            row("orders", 1, &["3", "4", "1", "-"])
        ]
    );

    // One partition to its end; an offset past the end is clamped (shown by a dry run).
    reset(&["--topic", "orders:1", "--to-latest", "--execute"]);
    let plan = reset(&["--topic", "orders", "--to-offset", "100"]);
    assert_eq!(
        lag_rows_of_plan(&plan),
        [
            row("orders", 0, &["3", "10"]),
            row("orders", 1, &["4", "4"])
        ]
    );
    let d = tern(&b, &["group", "describe", "g1"], "").ok();
    assert_eq!(
        lag_rows(&d),
        [
            row("orders", 0, &["3", "10", "7", "-"]),
            row("orders", 1, &["4", "4", "0", "-"])
        ]
    );

    // By time: before every record → the first one; after every record → the log end.
    reset(&["--topic", "orders", "--to-timestamp", "0", "--execute"]);
    let d = tern(&b, &["group", "describe", "g1"], "").ok();
    assert_eq!(lag_rows(&d)[0], row("orders", 0, &["0", "10", "10", "-"]));
    reset(&[
        "--all-topics",
        "--to-datetime",
        "2100-01-01T00:00:00Z",
        "--execute",
    ]);
    let d = tern(&b, &["group", "describe", "g1"], "").ok();
    assert_eq!(
        lag_rows(&d),
        [
            row("orders", 0, &["10", "10", "0", "-"]),
            row("orders", 1, &["4", "4", "0", "-"])
        ]
    );

    let list = tern(&b, &["group", "list"], "").ok();
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().eq(["g1", "Empty", "-"])),
        "{list}"
    );
    let stable = tern(&b, &["group", "list", "--state", "stable"], "").ok();
    assert!(!stable.contains("g1"), "{stable}");
}

/// The rows of a reset-offsets table, split into cells.
fn lag_rows_of_plan(plan: &str) -> Vec<Vec<String>> {
    plan.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// Guards the one-line errors (exit code 1) of bad reset-offsets input and of deleting an
/// unknown group.
#[test]
fn bad_input_is_one_error_line() {
    let b = Broker::start(GROUPS);
    topic_with_records(&b, "t", &[2, 2]);
    // Each case: the options after `group reset-offsets g`, then what the error says.
    let cases = [
        "--topic t => say where to reset to",
        "--topic t --to-earliest --to-latest => give only one of",
        "--topic nope --to-earliest => topic \"nope\" does not exist",
        "--topic t:5 --to-earliest => has no partition 5 (it has 2 partitions)",
        "--topic t --to-offset -1 => --to-offset \"-1\": not an offset",
        "--topic t --to-offset abc => --to-offset \"abc\": not an offset",
        "--topic t --to-datetime yesterday => --to-datetime \"yesterday\": expected",
        "--topic t:x --to-earliest => \"x\" is not a partition number",
        "--to-earliest => --topic TOPIC[:PARTITIONS] or --all-topics",
    ];
    for case in cases {
        let (args, want) = case.split_once(" => ").unwrap();
        let all: Vec<&str> = ["group", "reset-offsets", "g"]
            .into_iter()
            .chain(args.split_whitespace())
            .collect();
        let err = tern(&b, &all, "").one_line_error();
        assert!(err.contains(want), "{args}: {err}");
    }
    let err = tern(&b, &["group", "delete", "ghost"], "").one_line_error();
    assert!(
        err.contains("it does not exist (GROUP_ID_NOT_FOUND)"),
        "{err}"
    );
    let err = tern(&b, &["group", "list", "--state", "running"], "").one_line_error();
    assert!(err.contains("not a group state"), "{err}");
}

/// A subscribing librdkafka consumer of `group` (manual commits, short heartbeats).
fn group_consumer(b: &Broker, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", b.addr())
        .set("group.id", group)
        .set("client.id", "lag-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .create()
        .expect("group consumer")
}

/// Guards the active-group path: describe shows the member and its partitions, reset
/// `--execute` and delete are refused with readable errors while it is a member, and once it
/// has left, delete succeeds and the group is gone.
#[test]
fn active_group_refuses_reset_and_delete() {
    let b = Broker::start(GROUPS);
    topic_with_records(&b, "events", &[3, 5]);
    tern(
        &b,
        &[
            "group",
            "reset-offsets",
            "g2",
            "--topic",
            "events",
            "--to-offset",
            "1",
            "--execute",
        ],
        "",
    )
    .ok();

    let c = group_consumer(&b, "g2");
    c.subscribe(&["events"]).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while c.assignment().unwrap().count() < 2 {
        assert!(Instant::now() < deadline, "the consumer got no partitions");
        if let Some(Err(e)) = c.poll(Duration::from_millis(50)) {
            panic!("consumer error: {e}");
        }
    }
    // The member is known to the coordinator once the group is Stable; keep polling the
    // consumer from another thread so it stays a member while the commands run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(50));
            }
            c
        })
    };
    let d = describe_until(&b, "g2", "the group to be Stable", |d| {
        d.contains("state: Stable")
    });
    assert!(d.contains("protocol: consumer ("), "{d}");
    assert!(d.contains("lag-reader"), "{d}");
    assert!(d.contains("events:0,1"), "{d}");
    let rows = lag_rows(&d);
    assert_eq!(rows.len(), 2, "{d}");
    assert_eq!(rows[0][..5], row("events", 0, &["1", "3", "2"])[..]);
    assert_eq!(rows[1][..5], row("events", 1, &["1", "5", "4"])[..]);
    assert!(rows.iter().all(|r| r[5] != "-"), "{d}");
    let list = tern(&b, &["group", "list", "--state", "Stable"], "").ok();
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().eq(["g2", "Stable", "consumer"])),
        "{list}"
    );

    let reset = [
        "group",
        "reset-offsets",
        "g2",
        "--topic",
        "events",
        "--to-earliest",
    ];
    let dry = tern(&b, &reset, "");
    let stderr = dry.stderr.clone();
    assert!(stderr.contains("--execute will be refused"), "{stderr}");
    dry.ok();
    let err = tern(&b, &[&reset[..], &["--execute"]].concat(), "").one_line_error();
    assert!(err.contains("only while the group is inactive"), "{err}");
    assert!(err.contains("UNKNOWN_MEMBER_ID"), "{err}");
    let err = tern(&b, &["group", "delete", "g2"], "").one_line_error();
    assert!(
        err.contains("it still has members (NON_EMPTY_GROUP)"),
        "{err}"
    );
    let d = tern(&b, &["group", "describe", "g2"], "").ok();
    assert_eq!(lag_rows(&d)[0][..3], row("events", 0, &["1"])[..]);

    // The consumer leaves (LeaveGroup on close): then the group can be deleted.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(poller.join().unwrap());
    describe_until(&b, "g2", "the group to be Empty", |d| {
        d.contains("state: Empty")
    });
    let out = tern(&b, &["group", "delete", "g2"], "").ok();
    assert_eq!(out, "deleted group \"g2\"\n");
    let err = tern(&b, &["group", "describe", "g2"], "").one_line_error();
    assert!(err.contains("does not exist"), "{err}");
}
