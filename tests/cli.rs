//! End-to-end tests of the client commands (`tern topic`, `tern produce`, `tern consume`)
//! against a real `tern serve` process: results, round trips, and one-line errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use common::cmd::{spawn, tern, Output};
use common::Broker;

fn start() -> Broker {
    Broker::start("cores = [0, 1]")
}

/// Guards topic create/list/describe/alter/delete and the broker's refusals as one line.
#[test]
fn topic_admin() {
    let b = start();
    let out = tern(
        &b,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=60000",
        ],
        "",
    );
    assert_eq!(
        out.ok(),
        "created topic \"orders\" (3 partitions, replication factor 1)\n"
    );

    let err = tern(&b, &["topic", "create", "orders"], "").one_line_error();
    assert_eq!(err, "tern: error: topic \"orders\" already exists");
    let err = tern(&b, &["topic", "create", "bad name"], "").one_line_error();
    assert!(err.contains("INVALID_TOPIC_EXCEPTION"), "{err}");
    let err = tern(
        &b,
        &["topic", "create", "x", "--config", "retention.ms=abc"],
        "",
    );
    assert!(err.one_line_error().contains("INVALID_CONFIG"));
    let err = tern(
        &b,
        &["topic", "create", "x", "--config", "no.such.key=1"],
        "",
    );
    assert!(err.one_line_error().contains("INVALID_CONFIG"));
    let err = tern(&b, &["topic", "create", "x", "--partitions", "0"], "").one_line_error();
    assert!(err.contains("INVALID_PARTITIONS"), "{err}");
    let err = tern(
        &b,
        &["topic", "create", "x", "--replication-factor", "3"],
        "",
    );
    assert!(err.one_line_error().contains("INVALID_REPLICATION_FACTOR"));
    let out = tern(&b, &["topic", "create", "maybe", "--validate-only"], "").ok();
    assert!(out.contains("nothing was created"), "{out}");

    assert_eq!(tern(&b, &["topic", "list"], "").ok(), "orders\n");

    let out = tern(&b, &["topic", "describe", "orders"], "").ok();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("topic: orders  partitions: 3  replication factor: 1"));
    let head: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(head, ["PARTITION", "LEADER", "REPLICAS", "ISR", "SHARD"]);
    let shards: BTreeSet<&str> = lines[2..5]
        .iter()
        .map(|l| l.split_whitespace().nth(4).unwrap())
        .collect();
    assert_eq!(shards, BTreeSet::from(["0", "1"]), "{out}");
    let config = |key: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(
        config("retention.ms"),
        ["retention.ms", "60000", "override"]
    );
    assert_eq!(
        config("cleanup.policy"),
        ["cleanup.policy", "delete", "default"]
    );
    assert!(!out.contains("tern.partition.shards"), "{out}");

    let out = tern(&b, &["topic", "alter", "orders", "--partitions", "5"], "").ok();
    assert_eq!(out, "topic \"orders\" now has 5 partitions\n");
    let out = tern(&b, &["topic", "describe", "orders"], "").ok();
    assert!(out.starts_with("topic: orders  partitions: 5"), "{out}");
    let err = tern(&b, &["topic", "alter", "orders", "--partitions", "2"], "");
    assert!(err.one_line_error().contains("INVALID_PARTITIONS"));

    // Configs: set, back to the default, and the refusals, each one line that names the key.
    let args = [
        "topic",
        "alter",
        "orders",
        "--config",
        "retention.ms=7200000",
        "--delete-config",
        "cleanup.policy",
    ];
    let out = tern(&b, &args, "").ok();
    assert!(out.contains("retention.ms = 7200000"), "{out}");
    let out = tern(&b, &["topic", "describe", "orders"], "").ok();
    let line = out
        .lines()
        .find(|l| l.starts_with("retention.ms "))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields, ["retention.ms", "7200000", "override"], "{out}");
    let args = [
        "topic",
        "alter",
        "orders",
        "--delete-config",
        "retention.ms",
    ];
    tern(&b, &args, "").ok();
    let out = tern(&b, &["topic", "describe", "orders"], "").ok();
    assert!(
        out.lines()
            .any(|l| l.starts_with("retention.ms ") && l.ends_with("default")),
        "{out}"
    );
    for (kv, want) in [
        ("retention.ms=soon", "retention.ms"),
        ("no.such.key=1", "no.such.key"),
        ("segment.bytes=10", "segment.bytes"),
    ] {
        let err = tern(&b, &["topic", "alter", "orders", "--config", kv], "").one_line_error();
        assert!(
            err.contains("INVALID_CONFIG") && err.contains(want),
            "{kv}: {err}"
        );
    }
    let err = tern(&b, &["topic", "alter", "orders", "--config", "novalue"], "").one_line_error();
    assert!(err.contains("expected KEY=VALUE"), "{err}");
    let err = tern(&b, &["topic", "alter", "orders"], "").one_line_error();
    assert!(err.contains("nothing to change"), "{err}");

    assert_eq!(
        tern(&b, &["topic", "delete", "orders"], "").ok(),
        "deleted topic \"orders\"\n"
    );
    assert_eq!(tern(&b, &["topic", "list"], "").ok(), "");
    let gone = "tern: error: topic \"orders\" does not exist";
    for args in [
        &["topic", "describe", "orders"][..],
        &["topic", "delete", "orders"],
        &["topic", "alter", "orders", "--partitions", "9"],
        &["topic", "alter", "orders", "--config", "retention.ms=1"],
    ] {
        assert_eq!(tern(&b, args, "").one_line_error(), gone, "{args:?}");
    }
}

/// Guards the keyed round trip: 1,000 lines produced, the same 1,000 consumed back, every key
/// in one partition and in its order; and reading from an offset of one partition.
#[test]
fn produce_consume_keyed_round_trip() {
    let b = start();
    tern(&b, &["topic", "create", "events", "--partitions", "3"], "").ok();
    let lines: Vec<String> = (0..1000)
        .map(|i| format!("key{}\tvalue{i}", i % 37))
        .collect();
    let input = lines.join("\n") + "\n";
    let out = tern(&b, &["produce", "events", "--batch-records", "300"], &input);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.starts_with("produced 1000 records in ") && out.stderr.contains("3 partitions"),
        "{}",
        out.stderr
    );

    let args = [
        "consume",
        "events",
        "--from",
        "beginning",
        "--count",
        "1000",
        "--format",
        "kv",
    ];
    let got = tern(&b, &args, "").ok();
    let mut got_sorted: Vec<&str> = got.lines().collect();
    got_sorted.sort_unstable();
    let mut want_sorted: Vec<&str> = lines.iter().map(String::as_str).collect();
    want_sorted.sort_unstable();
    assert_eq!(got_sorted, want_sorted);
    let by_key = |text: &[&str]| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in text {
            let (k, v) = l.split_once('\t').unwrap();
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        m
    };
    let want_lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(
        by_key(&got.lines().collect::<Vec<_>>()),
        by_key(&want_lines)
    );

    let args = [
        "consume",
        "events",
        "--from",
        "beginning",
        "--exit-at-end",
        "--format",
        "json",
    ];
    let json = tern(&b, &args, "").ok();
    let mut partition_of: BTreeMap<String, i64> = BTreeMap::new();
    let mut count = 0;
    for l in json.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        let p = v["partition"].as_i64().unwrap();
        assert_eq!(
            *partition_of.entry(key).or_insert(p),
            p,
            "a key in two partitions"
        );
        count += 1;
    }
    assert_eq!(count, 1000);

    let args = [
        "consume", "events", "-p", "2", "--from", "5", "--count", "2", "--format", "json",
    ];
    let json = tern(&b, &args, "").ok();
    let offsets: Vec<(i64, i64)> = json
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["partition"].as_i64().unwrap(),
                v["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets, [(2, 5), (2, 6)]);
}

/// Guards every codec: records written compressed come back identical, keyed or not (the
/// topic is auto-created with one partition, so order is kept).
#[test]
fn compression_codecs() {
    let b = start();
    let lines: Vec<String> = (0..300)
        .map(|i| match i % 3 {
            0 => format!("value only {i}"),
            _ => format!("k{i}\t{}", "x".repeat(i % 50)),
        })
        .collect();
    let input = lines.join("\n") + "\n";
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        let args = [
            "produce",
            &topic,
            "--compression",
            codec,
            "--batch-records",
            "64",
        ];
        let out = tern(&b, &args, &input);
        assert!(out.status.success(), "{codec}: {}", out.stderr);
        assert!(
            out.stderr.contains("300 records in 5 batches"),
            "{}",
            out.stderr
        );
        let args = [
            "consume",
            &topic,
            "--from",
            "beginning",
            "--exit-at-end",
            "--format",
            "kv",
        ];
        assert_eq!(tern(&b, &args, "").ok(), input, "{codec}");
    }
    // acks=0: nothing confirms, so wait for the records rather than for the end.
    tern(&b, &["produce", "fire", "--acks", "0"], &input).ok();
    let args = [
        "consume",
        "fire",
        "--from",
        "beginning",
        "--count",
        "300",
        "--format",
        "kv",
    ];
    assert_eq!(tern(&b, &args, "").ok(), input);
}

/// Guards `--from end`: a consumer started after old records sees only the new ones.
#[test]
fn consume_from_end_sees_only_new_records() {
    let b = start();
    tern(&b, &["topic", "create", "live", "--partitions", "2"], "").ok();
    let old: String = (0..20).map(|i| format!("old{i}\n")).collect();
    tern(&b, &["produce", "live"], &old).ok();
    let addr = b.addr();
    let args = [
        "consume", "live", "--from", "end", "--count", "5", "-b", &addr,
    ];
    let mut consumer = spawn(&args, b"");
    // Once it says where it starts, the end offsets are fixed.
    consumer.wait_stderr("consuming topic \"live\"");
    let new: String = (0..5).map(|i| format!("new{i}\n")).collect();
    tern(&b, &["produce", "live", "--batch-records", "1"], &new).ok();
    let out = consumer.finish().ok();
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    assert_eq!(got, ["new0", "new1", "new2", "new3", "new4"]);
}

/// Guards that bad arguments and missing things give one `tern: error:` line and exit 1.
#[test]
fn bad_arguments_give_one_line_errors() {
    let b = start();
    let cases: [(&[&str], &str); 8] = [
        (
            &["consume", "t", "--from", "foo"],
            "--from: \"foo\" is not beginning, end or an offset",
        ),
        (
            &["consume", "t", "--format", "xml"],
            "--format: \"xml\" is not value, kv or json",
        ),
        (
            &["produce", "t", "--acks", "2"],
            "--acks: \"2\" is not 0, 1 or all",
        ),
        (
            &["produce", "t", "--compression", "brotli"],
            "--compression: \"brotli\" is not none, gzip, snappy, lz4 or zstd",
        ),
        (
            &["produce", "t", "--batch-records", "0"],
            "--batch-records must be at least 1",
        ),
        (
            &["produce", "t", "--key-separator", ""],
            "--key-separator must not be empty",
        ),
        (
            &["topic", "create", "t", "--config", "retention.ms"],
            "--config \"retention.ms\": expected KEY=VALUE",
        ),
        (
            &["consume", "nope", "--exit-at-end"],
            "topic \"nope\" does not exist",
        ),
    ];
    for (args, want) in cases {
        let err = tern(&b, args, "").one_line_error();
        assert_eq!(err, format!("tern: error: {want}"), "{args:?}");
    }
    tern(&b, &["topic", "create", "one"], "").ok();
    let err = tern(&b, &["produce", "one", "-p", "4"], "x\n").one_line_error();
    assert_eq!(
        err,
        "tern: error: --partition 4: topic \"one\" has 1 partition"
    );
    // Unknown broker: the connection error, once.
    let out = spawn(&["topic", "list", "-b", "127.0.0.1:1"], b"").finish();
    let err = out.one_line_error();
    assert!(
        err.starts_with("tern: error: cannot connect to 127.0.0.1:1: "),
        "{err}"
    );
    assert_eq!(err.matches("refused").count(), 1, "{err}");
    // Past the end of a partition: the broker's OFFSET_OUT_OF_RANGE, named.
    let out = tern(&b, &["consume", "one", "--from", "99", "--exit-at-end"], "");
    assert!(!out.status.success());
    let last = out.stderr.lines().last().unwrap();
    assert!(
        last.contains("offset 99 is out of range (OFFSET_OUT_OF_RANGE)"),
        "{last}"
    );
    // What clap refuses (missing topic) fails too.
    let out = spawn(&["consume"], b"").finish();
    assert!(!out.status.success());
}

/// Guards `shard.nice` at startup: a value out of range names the key, and a negative value
/// without the privilege to set it stops startup with the reason, in one line each. The
/// second case runs the broker as an unprivileged user (through `setpriv` when the test
/// runs as root, as CI does).
#[test]
fn serve_refuses_a_shard_nice_it_cannot_apply() {
    let dir = tempfile::tempdir().unwrap();
    // The unprivileged broker must be able to create its data directory here.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let serve = |nice: &str| -> Output {
        let config = dir.path().join(format!("nice{nice}.toml"));
        std::fs::write(
            &config,
            format!(
                "listeners = \"127.0.0.1:0\"\nlog.dirs = \"{}\"\ncores = [0]\nshard.nice = {nice}\n",
                dir.path().join(format!("data{nice}")).display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let tern = env!("CARGO_BIN_EXE_tern");
        // SAFETY: geteuid has no preconditions.
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                tern,
            ]);
            c
        } else {
            Command::new(tern)
        };
        cmd.args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    };
    let err = serve("-21").one_line_error();
    assert!(
        err.contains(r#"key "shard.nice": expected an integer from -20 to 19, found -21"#),
        "{err}"
    );
    let err = serve("-5").one_line_error();
    assert!(err.contains("shard.nice = -5: setpriority: "), "{err}");
    assert!(err.contains("needs root or CAP_SYS_NICE"), "{err}");
}

/// Guards the data directory's owner (`meta.properties`) and the cluster keys at startup: a
/// directory of another cluster or node refuses to start, and so do cluster keys without
/// their listener, cluster id or readable TLS files, each in one line.
#[test]
fn serve_refuses_another_clusters_data_and_unserved_cluster_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("meta.properties"),
        "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=0\n",
    )
    .unwrap();
    let serve_on = |listeners: &str, extra: &str| -> Output {
        let config = dir.path().join("tern.toml");
        std::fs::write(
            &config,
            format!(
                "listeners = \"{listeners}\"\nlog.dirs = \"{}\"\ncores = [0]\n{extra}\n",
                data.display()
            ),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    };
    let serve = |extra: &str| serve_on("127.0.0.1:0", extra);
    let err = serve("cluster.id = \"BBBBBBBBBBBBBBBBBBBBBB\"").one_line_error();
    assert!(
        err.contains("belongs to cluster AAAAAAAAAAAAAAAAAAAAAA but cluster.id is BBBB"),
        "{err}"
    );
    let err = serve("node.id = 5").one_line_error();
    assert!(
        err.contains("belongs to node.id 0 but node.id is 5"),
        "{err}"
    );
    let err = serve("process.roles = \"broker,controller\"").one_line_error();
    assert!(
        err.contains("when controller.quorum.voters is empty"),
        "{err}"
    );
    let cluster = "controller.quorum.voters = \"0@127.0.0.1:19093\"\n\
                   quic.tls.cert = \"a\"\nquic.tls.key = \"b\"\nquic.tls.ca = \"c\"";
    let err = serve(cluster).one_line_error();
    assert!(err.contains("a CONTROLLER listener"), "{err}");
    let both = "127.0.0.1:0,CONTROLLER://127.0.0.1:19093";
    let err = serve_on(both, cluster).one_line_error();
    assert!(err.contains("the same cluster.id on every node"), "{err}");
    let with_id = format!("cluster.id = \"AAAAAAAAAAAAAAAAAAAAAA\"\n{cluster}");
    let err = serve_on(both, &with_id).one_line_error();
    assert!(err.contains("quic.tls: a: "), "{err}");
    // The directory's owner is untouched by the refused starts.
    let props = std::fs::read_to_string(data.join("meta.properties")).unwrap();
    assert!(
        props.contains("cluster.id=AAAAAAAAAAAAAAAAAAAAAA"),
        "{props}"
    );
}

/// Guards `tern cert dev`: a CA and one certificate per node that load as the QUIC
/// transport's TLS material, private keys readable by the owner only, no silent overwrite,
/// and a bad count refused.
#[test]
fn cert_dev_makes_loadable_node_certificates() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let tern = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .output()
            .unwrap()
            .into()
    };
    let out_s = out.to_str().unwrap();
    let printed = tern(&["cert", "dev", "--nodes", "3", "--out", out_s]).ok();
    assert!(printed.contains("quic.tls.ca"), "{printed}");
    for id in 1..=3 {
        let cert = out.join(format!("node-{id}.crt"));
        let key = out.join(format!("node-{id}.key"));
        let m = tern_replication::tls::TlsMaterial::from_files(&cert, &key, &out.join("ca.crt"))
            .unwrap();
        m.server_config().unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "node-{id}.key is readable by others");
    }
    let err = tern(&["cert", "dev", "--nodes", "3", "--out", out_s]).one_line_error();
    assert!(
        err.contains("already exists (--force replaces it)"),
        "{err}"
    );
    tern(&["cert", "dev", "--nodes", "3", "--out", out_s, "--force"]).ok();
    let out = tern(&["cert", "dev", "--nodes", "0", "--out", out_s]);
    assert!(!out.status.success());
}

/// Guards `tern cluster dev`: a one-node cluster starts from nothing (certificates, cluster
/// id, configuration), serves a client, `tern cluster status` describes it, and SIGTERM
/// stops it.
#[test]
fn cluster_dev_starts_a_local_cluster() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let kafka = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let quic = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (kafka_port, quic_port) = (
        kafka.local_addr().unwrap().port(),
        quic.local_addr().unwrap().port(),
    );
    drop((kafka, quic));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["cluster", "dev", "--nodes", "1", "--dir"])
        .arg(dir.path())
        .args(["--kafka-port", &kafka_port.to_string()])
        .args(["--controller-port", &quic_port.to_string()])
        .args(["--shards-per-node", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ready = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("cluster ") {
            ready = line;
            break;
        }
    }
    assert!(
        ready.contains(&format!("127.0.0.1:{kafka_port}")),
        "{ready}"
    );
    assert!(ready.contains("node pids "), "{ready}");
    // One shard, on the first CPU this process may use.
    let config = std::fs::read_to_string(dir.path().join("node-1/tern.toml")).unwrap();
    let cores: Vec<&str> = config
        .lines()
        .filter(|l| l.starts_with("cores = ["))
        .collect();
    assert_eq!(cores.len(), 1, "{config}");
    assert!(!cores[0].contains(','), "{config}");
    let bootstrap = format!("127.0.0.1:{kafka_port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        let out: Output = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["cluster", "status", "-b", &bootstrap])
            .output()
            .unwrap()
            .into();
        if out.status.success() && out.stdout.contains("brokers      1") {
            break out.stdout;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}{}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.contains("controller   1"), "{status}");
    assert!(status.contains("quorum       leader 1"), "{status}");
    assert!(status.contains("  voter    1  log end "), "{status}");
    assert!(dir.path().join("certs/ca.crt").exists());
    assert!(dir.path().join("cluster.id").exists());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    for bad in ["0", "x", "99999"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["cluster", "dev", "--dir"])
            .arg(dir.path())
            .args(["--shards-per-node", bad])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--shards-per-node"), "{err}");
    }
}

/// Guards tools writing into a pipe that closes early (`tern consume … | head -1`): the
/// tool ends quietly on SIGPIPE, as Unix tools do, not with a panic message.
#[test]
fn consume_into_a_closed_pipe_ends_quietly() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let b = start();
    tern(&b, &["topic", "create", "wide", "--partitions", "1"], "").ok();
    // About 400 KiB of output: more than a pipe holds.
    let input: String = (0..4000).map(|i| format!("{i:0>100}\n")).collect();
    tern(&b, &["produce", "wide"], &input).ok();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["consume", "wide", "--from", "beginning", "--count", "4000"])
        .args(["-b", &b.addr()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim_end().len(), 100, "{first}");
    // The reader is gone: the next writes fail.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        out.status
    );
}
