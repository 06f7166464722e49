//! `tern bench run`, `tern bench suite` and `tern bench compare`: the broker benchmarks of
//! `tern-bench`, driven through the Kafka protocol, so they measure any Kafka-compatible
//! broker (`--broker`, `--vs`) as well as Tern itself (`suite` starts its own).
//! `tern bench null-broker` serves the null broker (`tern_bench::null_broker`), the floor of
//! client + harness latency, until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tern_bench::broker_report::{self, BrokerReport};
use tern_bench::disk::{self, DiskPlan};
use tern_bench::null_broker::PARTITIONS_MAX;
use tern_bench::run::RunOptions;
use tern_bench::spec::Workload;

/// A baseline measured in the same run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// Raw io_uring O_DIRECT writes (write + fdatasync latency, sequential bandwidth) in
    /// --dir, before and after the broker run; for acks=all at a fixed rate also the
    /// group-commit floor (`tern bench floor`) at the workload's rate.
    Disk,
    /// The same workload (rate, duration) against a null broker started in this process on
    /// a free 127.0.0.1 port, before the broker run: it stores nothing and answers at once,
    /// so its latency is what the client, the harness and the network cost. Fixed-rate
    /// workloads only.
    Null,
}

/// Options of `tern bench run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Workload file (OpenMessaging Benchmark shape plus a `driver` section).
    #[arg(long, value_name = "FILE")]
    workload: PathBuf,
    /// Broker to benchmark.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    broker: String,
    /// Also measure these baselines and report ratios (`disk`, `null` or `disk,null`).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "BASELINE")]
    baseline: Vec<Baseline>,
    /// Directory for the disk baseline (on the broker's disk); removed afterwards.
    #[arg(long, value_name = "DIR", default_value = "./tern-bench-data")]
    dir: PathBuf,
    /// Run the same workload against this second broker too, interleaved with the first
    /// in --rounds rounds, and print both side by side with ratios (its JSON goes next to
    /// --json with a `-vs` suffix; the rounds' figures with a `-rounds` suffix).
    #[arg(long, value_name = "HOST:PORT")]
    vs: Option<String>,
    /// The process id of the broker under test, when it runs on this machine: its CPU
    /// time over the test phase is reported (cores, and core·s per GB acknowledged).
    /// Several (`--broker-pid 11,12,13`, e.g. the nodes of `tern cluster dev`): their sum
    /// and each one's.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    broker_pid: Vec<u32>,
    /// Create the workload's topics with this replication factor instead of the file's
    /// `driver.replicationFactor` (e.g. `--rf 3` against `tern cluster dev --nodes 3`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    rf: Option<u16>,
    /// The same for the --vs broker.
    #[arg(long, value_name = "PID", requires = "vs")]
    vs_broker_pid: Option<u32>,
    /// With --vs: rounds of one run per broker, in alternating order (a b, b a, a b, …),
    /// so that the machine's drift weighs on both alike. Each broker's report is its
    /// round with the median publish p99.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2,
        value_parser = clap::value_parser!(u32).range(1..=20)
    )]
    rounds: u32,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the plot (SVG) to FILE.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Replace the workload's test duration (seconds), e.g. for a quick run.
    #[arg(long, value_name = "S")]
    duration_s: Option<f64>,
    /// Replace the workload's warm-up (seconds).
    #[arg(long, value_name = "S")]
    warmup_s: Option<f64>,
    /// Replace the workload's consumerBacklogSizeGB.
    #[arg(long, value_name = "GB")]
    backlog_gb: Option<f64>,
    /// Length of the reported windows (seconds).
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    window_s: f64,
    /// Keep the topics instead of deleting them after the run.
    #[arg(long)]
    keep_topics: bool,
    /// A smaller disk baseline (256 MiB, 1000 durable writes, a 3 s group-commit floor).
    #[arg(long)]
    quick: bool,
}

/// Options of `tern bench suite`.
#[derive(Debug, clap::Args)]
pub struct SuiteArgs {
    /// Report directory: one JSON and SVG per workload, baseline.json, summary.md.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Where the brokers' data and the disk baseline go (on the disk to measure).
    #[arg(long, value_name = "DIR", default_value = "./tern-bench-data")]
    dir: PathBuf,
    /// Short runs (15 s each after 3 s of warm-up, 0.25 GB backlog, smaller disk baseline).
    #[arg(long)]
    quick: bool,
    /// Replace every workload's test duration (seconds).
    #[arg(long, value_name = "S")]
    duration_s: Option<f64>,
    /// Only the standard workloads whose file name contains one of these (repeatable).
    #[arg(long, value_name = "TEXT")]
    only: Vec<String>,
    /// A TOML file whose lines are added to every broker's config.
    #[arg(long, value_name = "FILE")]
    broker_config: Option<PathBuf>,
    /// Baselines besides the disk (always measured by the suite): `null` runs each
    /// fixed-rate workload against an in-process null broker first (`disk,null` is accepted
    /// too).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "BASELINE")]
    baseline: Vec<Baseline>,
    /// Run every workload against this running broker (e.g. a node of `tern cluster dev`)
    /// instead of a `tern serve` the suite starts per workload.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "broker_config")]
    broker: Option<String>,
    /// With --broker: its process ids (each node's), whose CPU is reported.
    #[arg(long, value_name = "PID", value_delimiter = ',', requires = "broker")]
    broker_pid: Vec<u32>,
    /// Create every workload's topics with this replication factor (e.g. 3 on a cluster).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    rf: Option<u16>,
}

/// Options of `tern bench null-broker`.
#[derive(Debug, clap::Args)]
pub struct NullBrokerArgs {
    /// Address to listen on (port 0: a free port, printed on start).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    listen: String,
    /// Partitions of a topic created by a Metadata request (CreateTopics says its own).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(i32).range(1..=i64::from(PARTITIONS_MAX))
    )]
    partitions: i32,
}

/// Options of `tern bench compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The first report (JSON from `tern bench run --json` or a suite).
    a: PathBuf,
    /// The second report; ratios are b / a.
    b: PathBuf,
}

/// Options of `tern bench floor`.
#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    /// Take partitions (topics x partitionsPerTopic), record size and rate from this
    /// workload file; the flags below replace single values.
    #[arg(long, value_name = "FILE")]
    workload: Option<PathBuf>,
    /// Partition files written in parallel.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    partitions: Option<u32>,
    /// Record size in bytes.
    #[arg(
        long,
        value_name = "BYTES",
        value_parser = clap::value_parser!(u32).range(1..=16_777_216)
    )]
    record_bytes: Option<u32>,
    /// Records arriving per second (over all partitions).
    #[arg(long, value_name = "N")]
    records_per_s: Option<f64>,
    /// Measured seconds.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    duration_s: f64,
    /// Seconds run before measuring.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    warmup_s: f64,
    /// Directory on the disk to measure; what the floor writes there is removed afterwards.
    #[arg(long, value_name = "DIR", default_value = "./tern-bench-data")]
    dir: PathBuf,
}

/// Runs `tern bench floor`.
pub fn floor(args: FloorArgs) -> anyhow::Result<()> {
    let (mut partitions, mut record_bytes, mut rate) = (8u32, 1024u32, 0.0f64);
    if let Some(path) = &args.workload {
        let w = Workload::from_file(path)?;
        partitions = w.topics * w.partitions_per_topic;
        record_bytes = w.message_size as u32;
        rate = w.producer_rate;
    }
    partitions = args.partitions.unwrap_or(partitions);
    record_bytes = args.record_bytes.unwrap_or(record_bytes);
    rate = args.records_per_s.unwrap_or(rate);
    if !(rate.is_finite() && rate > 0.0) {
        bail!("--records-per-s must be a rate above 0 (a workload with producerRate 0 has none)");
    }
    for (flag, s) in [
        ("--duration-s", args.duration_s),
        ("--warmup-s", args.warmup_s),
    ] {
        if !(s.is_finite() && (0.0..=3600.0).contains(&s)) {
            bail!("{flag} {s}: must be between 0 and 3600 seconds");
        }
    }
    if args.duration_s <= 0.0 {
        bail!("--duration-s must be above 0");
    }
    let plan = tern_bench::floor::FloorPlan {
        partitions: partitions as usize,
        record_bytes: record_bytes as usize,
        records_per_s: rate,
        warmup: std::time::Duration::from_secs_f64(args.warmup_s),
        duration: std::time::Duration::from_secs_f64(args.duration_s),
    };
    eprintln!(
        "floor: partition files: {partitions}, {record_bytes} B records, {rate:.0} records/s, \
         {:.1} s after {:.1} s warm-up, in {}",
        args.duration_s,
        args.warmup_s,
        args.dir.display()
    );
    let r = tern_bench::floor::measure(&args.dir, &plan).context("bench floor")?;
    println!(
        "group-commit floor (arrival to durable), ms: p50 {:.3}  p75 {:.3}  p95 {:.3}  \
         p99 {:.3}  p99.9 {:.3}  max {:.3}",
        r.ms_at(0.5),
        r.ms_at(0.75),
        r.ms_at(0.95),
        r.ms_at(0.99),
        r.ms_at(0.999),
        r.latency_ns.max() as f64 / 1e6
    );
    println!(
        "{} records in {} durable writes ({:.1} records per write)",
        r.records,
        r.writes,
        r.records as f64 / r.writes.max(1) as f64
    );
    let per_write_us = |d: std::time::Duration| d.as_secs_f64() * 1e6 / r.writes.max(1) as f64;
    println!(
        "CPU per durable write: user {:.1} us, system {:.1} us ({:.3} cores over the run)",
        per_write_us(r.cpu_user),
        per_write_us(r.cpu_system),
        (r.cpu_user + r.cpu_system).as_secs_f64() / (args.duration_s + args.warmup_s)
    );
    Ok(())
}

/// Fails before a long run, not after it, when an output file's directory is missing.
pub fn check_output(flag: &str, path: Option<&Path>) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!(
            "{flag} {}: directory {} does not exist",
            path.display(),
            parent.display()
        );
    }
    Ok(())
}

/// Runs `tern bench run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    check_output("--json", args.json.as_deref())?;
    check_output("--plot", args.plot.as_deref())?;
    let mut w = Workload::from_file(&args.workload)?;
    if let Some(rf) = args.rf {
        w.driver.replication_factor = rf;
    }
    let pids = args.broker_pid.iter().map(|p| ("--broker-pid", *p));
    for (flag, pid) in pids.chain(args.vs_broker_pid.map(|p| ("--vs-broker-pid", p))) {
        tern_bench::cpu::process_cpu_split(pid)
            .with_context(|| format!("{flag} {pid}: no such process readable here"))?;
    }
    if args.baseline.contains(&Baseline::Null) {
        if let Some(why) = tern_bench::null_broker::baseline_refusal(&w) {
            bail!("--baseline null: {why}");
        }
    }
    let opts = RunOptions {
        broker: args.broker.clone(),
        duration_s: args.duration_s,
        warmup_s: args.warmup_s,
        backlog_gb: args.backlog_gb,
        window_s: args.window_s,
        keep_topics: args.keep_topics,
        progress: true,
        broker_software: None,
        broker_pids: args.broker_pid.clone(),
    };
    let plan = DiskPlan::of(args.quick);
    let write_bytes = disk::write_bytes_for(w.message_size);
    let floor = disk::floor_plan(&w, args.quick);
    let null = if args.baseline.contains(&Baseline::Null) {
        eprintln!("null broker baseline (the same workload, in-process, stores nothing)");
        Some(tern_bench::null_broker::baseline(&w, &opts).context("null baseline")?)
    } else {
        None
    };
    let disk_before = if args.baseline.contains(&Baseline::Disk) {
        eprintln!("disk baseline (before) in {}", args.dir.display());
        let sample = disk::measure(&args.dir, write_bytes, plan).context("disk baseline")?;
        let floor = floor.as_ref().map(|f| disk::measure_floor(&args.dir, f));
        Some((sample, floor.transpose()?))
    } else {
        None
    };
    let (mut report, mut vs_report, rounds) = match &args.vs {
        None => {
            let r = tern_bench::run::run(&w, &opts)
                .with_context(|| format!("broker {}", args.broker))?;
            (r, None, Vec::new())
        }
        Some(vs) => {
            let (a, b, rounds) = interleaved(&w, &opts, vs, args.vs_broker_pid, args.rounds)?;
            (a, Some(b), rounds)
        }
    };
    if let Some((before, floor_before)) = disk_before {
        eprintln!("disk baseline (after)");
        let after = disk::measure(&args.dir, write_bytes, plan).context("disk baseline")?;
        let mut b = disk::baseline(&args.dir, write_bytes, plan, before, after);
        if let (Some(f), Some(fb)) = (&floor, floor_before) {
            let fa = disk::measure_floor(&args.dir, f)?;
            b.floor = Some(disk::floor_baseline(f, fb, fa));
        }
        report.set_baseline(b.clone());
        if let Some(r) = &mut vs_report {
            r.set_baseline(b);
        }
    }
    if let Some(n) = null {
        report.set_null_baseline(n.clone());
        if let Some(r) = &mut vs_report {
            r.set_null_baseline(n);
        }
    }
    println!("{report}");
    write_outputs(&report, args.json.as_deref(), args.plot.as_deref())?;
    if let Some(vs) = vs_report {
        println!("{vs}");
        let suffix = |p: &Path| with_suffix(p, "-vs");
        write_outputs(
            &vs,
            args.json.as_deref().map(suffix).as_deref(),
            args.plot.as_deref().map(suffix).as_deref(),
        )?;
        let (a, b) = (serde_json::to_value(&report)?, serde_json::to_value(&vs)?);
        print!(
            "{}",
            broker_report::compare(&a, &b, &args.broker, vs.broker_address.as_str())
        );
        print!("{}", rounds_table(&rounds));
        if let Some(path) = args.json.as_deref() {
            let path = with_suffix(path, "-rounds");
            std::fs::write(&path, serde_json::to_string_pretty(&rounds)?)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("rounds written to {}", path.display());
        }
    }
    Ok(())
}

/// One round of an interleaved comparison (b / a ratios).
#[derive(Debug, serde::Serialize)]
struct Round {
    round: u32,
    first: &'static str,
    a_publish_latency_p99_ms: f64,
    b_publish_latency_p99_ms: f64,
    ratio_publish_latency_p99: f64,
    a_publish_rate_mb_per_s: f64,
    b_publish_rate_mb_per_s: f64,
    ratio_publish_rate_mb_per_s: f64,
}

fn p99_ms(r: &BrokerReport) -> f64 {
    r.latency
        .get("publish_latency_p99_ms")
        .copied()
        .unwrap_or(f64::NAN)
}

/// Runs `w` against `opts.broker` (a) and `vs` (b) in `rounds` alternating rounds; returns
/// each broker's median-p99 report and the rounds.
fn interleaved(
    w: &Workload,
    opts: &RunOptions,
    vs: &str,
    vs_pid: Option<u32>,
    rounds: u32,
) -> anyhow::Result<(BrokerReport, BrokerReport, Vec<Round>)> {
    let vs_opts = RunOptions {
        broker: vs.to_string(),
        broker_pids: vs_pid.into_iter().collect(),
        ..opts.clone()
    };
    let (mut a_runs, mut b_runs, mut table) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let a_first = round % 2 == 0;
        let order = if a_first {
            [(opts, true), (&vs_opts, false)]
        } else {
            [(&vs_opts, false), (opts, true)]
        };
        for (o, is_a) in order {
            eprintln!("round {}/{rounds}: {}", round + 1, o.broker);
            let r = tern_bench::run::run(w, o).with_context(|| format!("broker {}", o.broker))?;
            if is_a {
                a_runs.push(r);
            } else {
                b_runs.push(r);
            }
        }
        let (a, b) = (&a_runs[round as usize], &b_runs[round as usize]);
        table.push(Round {
            round: round + 1,
            first: if a_first { "a" } else { "b" },
            a_publish_latency_p99_ms: p99_ms(a),
            b_publish_latency_p99_ms: p99_ms(b),
            ratio_publish_latency_p99: p99_ms(b) / p99_ms(a),
            a_publish_rate_mb_per_s: a.publish_rate_mb_per_s,
            b_publish_rate_mb_per_s: b.publish_rate_mb_per_s,
            ratio_publish_rate_mb_per_s: b.publish_rate_mb_per_s / a.publish_rate_mb_per_s,
        });
    }
    Ok((median(a_runs), median(b_runs), table))
}

/// The run with the median publish p99.
fn median(mut runs: Vec<BrokerReport>) -> BrokerReport {
    runs.sort_by(|x, y| p99_ms(x).total_cmp(&p99_ms(y)));
    // Invariant: at least one round ran (clap bounds --rounds to 1..=20).
    runs.swap_remove((runs.len() - 1) / 2)
}

fn rounds_table(rounds: &[Round]) -> String {
    let mut out = format!(
        "\ninterleaved rounds (b / a)\n{:<7}{:<7}{:>12}{:>12}{:>9}{:>12}{:>12}{:>9}\n",
        "round", "first", "a p99 ms", "b p99 ms", "ratio", "a MB/s", "b MB/s", "ratio"
    );
    for r in rounds {
        out += &format!(
            "{:<7}{:<7}{:>12.3}{:>12.3}{:>9.3}{:>12.1}{:>12.1}{:>9.3}\n",
            r.round,
            r.first,
            r.a_publish_latency_p99_ms,
            r.b_publish_latency_p99_ms,
            r.ratio_publish_latency_p99,
            r.a_publish_rate_mb_per_s,
            r.b_publish_rate_mb_per_s,
            r.ratio_publish_rate_mb_per_s
        );
    }
    let mut p99: Vec<f64> = rounds.iter().map(|r| r.ratio_publish_latency_p99).collect();
    let mut mbs: Vec<f64> = rounds
        .iter()
        .map(|r| r.ratio_publish_rate_mb_per_s)
        .collect();
    p99.sort_by(f64::total_cmp);
    mbs.sort_by(f64::total_cmp);
    if let (Some(p), Some(m)) = (p99.get(p99.len() / 2), mbs.get(mbs.len() / 2)) {
        out += &format!("median ratio: publish p99 {p:.3}, publish MB/s {m:.3}\n");
    }
    out
}

/// `dir/name.ext` → `dir/name<suffix>.ext`.
fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = p
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    p.with_file_name(format!("{stem}{suffix}{ext}"))
}

fn write_outputs(
    report: &BrokerReport,
    json: Option<&Path>,
    plot: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        report.write_json(path)?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = plot {
        std::fs::write(path, tern_bench::plot::svg(report))
            .with_context(|| format!("{}: writing", path.display()))?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}

/// Runs `tern bench suite`.
pub fn suite(args: SuiteArgs) -> anyhow::Result<()> {
    let broker_config = match &args.broker_config {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("--broker-config {}", p.display()))?,
        None => String::new(),
    };
    let opts = tern_bench::suite::SuiteOptions {
        out: args.out,
        dir: args.dir,
        tern_exe: std::env::current_exe().context("finding the tern executable")?,
        quick: args.quick,
        duration_s: args.duration_s,
        only: args.only,
        broker_config,
        null_baseline: args.baseline.contains(&Baseline::Null),
        broker: args.broker,
        broker_pids: args.broker_pid,
        replication_factor: args.rf,
    };
    for pid in &opts.broker_pids {
        tern_bench::cpu::process_cpu_split(*pid)
            .with_context(|| format!("--broker-pid {pid}: no such process readable here"))?;
    }
    tern_bench::suite::run(&opts)?;
    Ok(())
}

/// Runs `tern bench compare`.
pub fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let a = broker_report::read_json(&args.a)?;
    let b = broker_report::read_json(&args.b)?;
    print!(
        "{}",
        broker_report::compare(
            &a,
            &b,
            &args.a.display().to_string(),
            &args.b.display().to_string()
        )
    );
    Ok(())
}

/// Runs `tern bench null-broker` until SIGINT or SIGTERM.
pub fn null_broker(args: NullBrokerArgs) -> anyhow::Result<()> {
    super::serve::init_logging();
    // Before any thread starts, so that every thread inherits the mask.
    let signals = super::serve::block_stop_signals()?;
    let config = tern_bench::null_broker::NullBrokerConfig {
        default_partitions: args.partitions,
        ..Default::default()
    };
    let broker = tern_bench::null_broker::NullBroker::start_on(&args.listen, config)
        .with_context(|| format!("--listen {}", args.listen))?;
    println!("null broker listening on {}", broker.local_addr());
    let sig = super::serve::wait_for_signal(&signals);
    let stats = broker.stop();
    eprintln!(
        "null broker: signal {sig}: stopped after {:.1} s, {:.3} s of CPU",
        stats.wall.as_secs_f64(),
        stats.cpu.as_secs_f64()
    );
    Ok(())
}

/// Options of `tern bench transport`.
#[derive(Debug, clap::Args)]
pub struct TransportArgs {
    /// Bytes sent one way in each leg.
    #[arg(long, value_name = "MIB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    total_mib: u64,
    /// Payload bytes per frame.
    #[arg(long, value_name = "KIB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=16 * 1024))]
    frame_kib: u64,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Runs `tern bench transport`.
pub fn transport(args: TransportArgs) -> anyhow::Result<()> {
    check_output("--json", args.json.as_deref())?;
    let frame = (args.frame_kib * 1024) as usize;
    let r = tern_bench::transport::run(args.total_mib << 20, frame)?;
    print!("{}", r.text());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&r)?;
        std::fs::write(path, text + "\n").with_context(|| format!("{}", path.display()))?;
    }
    Ok(())
}
