//! `tern bench suite`: the standard workloads against local `tern serve` processes started
//! here, with the disk baseline before and after, written to a report directory (one JSON
//! and one SVG per workload, `baseline.json`, and `summary.md`). An acks=all workload at a
//! fixed rate also gets its group-commit floor ([`crate::floor`]) just before and just after
//! its own run. With `null_baseline`, each fixed-rate workload is first run against an
//! in-process null broker ([`crate::null_broker`]), the client + harness floor of its
//! publish latency.
//!
//! With [`SuiteOptions::broker`] every workload runs against that broker instead (a
//! cluster from `tern cluster dev`, with `replication_factor` and each node's pid).
//!
//! Each workload gets a fresh broker on a fresh data directory, so one workload's segments
//! (and their deletion) do not weigh on the next. The broker is this same executable
//! (`tern serve`), on 127.0.0.1 with a port it picks itself: the harness reads the port
//! from the `listening on` line, waiting for it with a deadline. The standard workloads are
//! compiled in, so the suite runs from any directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::broker_report::BrokerReport;
use crate::disk::{self, DiskPlan};
use crate::run::RunOptions;
use crate::scratch::Scratch;
use crate::spec::Workload;

/// How long a broker may take to listen, or to stop after SIGTERM.
const BROKER_START_S_MAX: u64 = 60;
const BROKER_STOP_S_MAX: u64 = 60;

/// The standard workloads (`bench/workloads/`), by file name.
pub const STANDARD: [(&str, &str); 11] = [
    (
        "max-throughput-100b.yaml",
        include_str!("../workloads/max-throughput-100b.yaml"),
    ),
    (
        "max-throughput-1kb.yaml",
        include_str!("../workloads/max-throughput-1kb.yaml"),
    ),
    (
        "max-throughput-64kb.yaml",
        include_str!("../workloads/max-throughput-64kb.yaml"),
    ),
    (
        "latency-20mb-1kb-8p.yaml",
        include_str!("../workloads/latency-20mb-1kb-8p.yaml"),
    ),
    (
        "latency-50mb-1kb-8p.yaml",
        include_str!("../workloads/latency-50mb-1kb-8p.yaml"),
    ),
    (
        "latency-100mb-1kb-8p.yaml",
        include_str!("../workloads/latency-100mb-1kb-8p.yaml"),
    ),
    (
        "latency-20mb-1kb-100p.yaml",
        include_str!("../workloads/latency-20mb-1kb-100p.yaml"),
    ),
    (
        "latency-50mb-1kb-100p.yaml",
        include_str!("../workloads/latency-50mb-1kb-100p.yaml"),
    ),
    (
        "latency-100mb-1kb-100p.yaml",
        include_str!("../workloads/latency-100mb-1kb-100p.yaml"),
    ),
    (
        "backlog-1kb-8p.yaml",
        include_str!("../workloads/backlog-1kb-8p.yaml"),
    ),
    (
        "many-partitions-1000p.yaml",
        include_str!("../workloads/many-partitions-1000p.yaml"),
    ),
];

/// What `tern bench suite` was asked to do.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// The report directory (created).
    pub out: PathBuf,
    /// Where the brokers' data and the disk baseline go (on the disk to measure).
    pub dir: PathBuf,
    /// The `tern` executable.
    pub tern_exe: PathBuf,
    /// Short runs: `duration_s` each, 2 s warm-up, a smaller backlog and disk baseline.
    pub quick: bool,
    /// Replaces every workload's test duration.
    pub duration_s: Option<f64>,
    /// Only the workloads whose file name contains one of these.
    pub only: Vec<String>,
    /// Extra TOML lines for the brokers' config.
    pub broker_config: String,
    /// Run each workload against an in-process null broker first ([`crate::null_broker`]).
    pub null_baseline: bool,
    /// A running broker (or cluster) to run every workload against instead of starting a
    /// `tern serve` per workload, e.g. one node of `tern cluster dev`.
    pub broker: Option<String>,
    /// Its process ids (each node's, for a local cluster): their CPU is reported.
    pub broker_pids: Vec<u32>,
    /// Replaces every workload's replication factor.
    pub replication_factor: Option<u16>,
}

/// Quick runs: this long each, unless `duration_s` says otherwise.
const QUICK_TEST_S: f64 = 15.0;
const QUICK_WARMUP_S: f64 = 3.0;
const QUICK_WINDOW_S: f64 = 1.0;
const QUICK_BACKLOG_GB: f64 = 0.25;

/// Runs the suite; returns the reports in workload order.
pub fn run(opts: &SuiteOptions) -> anyhow::Result<Vec<BrokerReport>> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("{}: creating", opts.out.display()))?;
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("{}: creating", opts.dir.display()))?;
    let chosen: Vec<(&str, Workload)> = STANDARD
        .iter()
        .filter(|(name, _)| {
            opts.only.is_empty() || opts.only.iter().any(|o| name.contains(o.as_str()))
        })
        .map(|(name, text)| {
            let mut w = Workload::parse(text, name)?;
            if let Some(rf) = opts.replication_factor {
                w.driver.replication_factor = rf;
            }
            Ok((*name, w))
        })
        .collect::<Result<_, crate::spec::SpecError>>()?;
    if chosen.is_empty() {
        bail!("no standard workload matches {:?}", opts.only);
    }
    let plan = DiskPlan::of(opts.quick);
    // The 1 KiB messages of most workloads: the baseline's durable write is one 4 KiB block.
    let write_bytes = disk::write_bytes_for(1024);
    eprintln!("disk baseline (before) in {}", opts.dir.display());
    let before = disk::measure(&opts.dir, write_bytes, plan)?;
    let mut reports = Vec::new();
    let mut floors = Vec::new();
    for (file, w) in &chosen {
        eprintln!("== {file}: {}", w.name);
        // The workload's group-commit floor, before and after its run (acks=all, fixed rate).
        let floor_plan = disk::floor_plan(w, opts.quick);
        let measure_floor = || {
            floor_plan
                .as_ref()
                .map(|f| disk::measure_floor(&opts.dir, f))
                .transpose()
        };
        let mut run_opts = RunOptions {
            broker: String::new(),
            duration_s: opts.duration_s.or(opts.quick.then_some(QUICK_TEST_S)),
            warmup_s: opts.quick.then_some(QUICK_WARMUP_S),
            backlog_gb: opts
                .quick
                .then_some(QUICK_BACKLOG_GB.min(w.consumer_backlog_size_gb)),
            window_s: if opts.quick { QUICK_WINDOW_S } else { 10.0 },
            keep_topics: false,
            progress: true,
            broker_software: Some(match &opts.broker {
                None => format!("tern {} (started by the suite)", env!("CARGO_PKG_VERSION")),
                Some(addr) => format!("the broker at {addr} (given to the suite)"),
            }),
            broker_pids: Vec::new(),
        };
        let null = match crate::null_broker::baseline_refusal(w) {
            _ if !opts.null_baseline => None,
            Some(why) => {
                eprintln!("null broker baseline: skipped: {why}");
                None
            }
            None => {
                eprintln!("null broker baseline (the same workload, in-process, stores nothing)");
                let b = crate::null_broker::baseline(w, &run_opts)
                    .with_context(|| format!("workload {file}: null baseline"))?;
                Some(b)
            }
        };
        let floor_before = measure_floor()?;
        let (result, floor_after, data_dir) = match &opts.broker {
            Some(addr) => {
                run_opts.broker = addr.clone();
                run_opts.broker_pids = opts.broker_pids.clone();
                let result = crate::run::run(w, &run_opts);
                (result, measure_floor()?, None)
            }
            None => {
                let broker = LocalBroker::start(&opts.tern_exe, &opts.dir, &opts.broker_config)?;
                run_opts.broker = broker.addr.clone();
                run_opts.broker_pids = vec![broker.pid()];
                let result = crate::run::run(w, &run_opts);
                // The floor after the run, before the broker's data is deleted with it.
                let floor_after = measure_floor()?;
                let data_dir = broker.data_dir.clone();
                broker.stop()?;
                (result, floor_after, Some(data_dir))
            }
        };
        let mut report = result.with_context(|| format!("workload {file}"))?;
        report.machine = crate::machine::MachineInfo::probe(&opts.dir);
        if let Some(d) = data_dir {
            report.machine.dir = d.display().to_string();
        }
        if let Some(n) = null {
            report.set_null_baseline(n);
        }
        let floor = match (&floor_plan, floor_before, floor_after) {
            (Some(f), Some(before), Some(after)) => Some(disk::floor_baseline(f, before, after)),
            _ => None,
        };
        println!("{report}");
        reports.push((file.to_string(), report));
        floors.push(floor);
    }
    eprintln!("disk baseline (after)");
    let after = disk::measure(&opts.dir, write_bytes, plan)?;
    let baseline = disk::baseline(&opts.dir, write_bytes, plan, before, after);
    write_json(&opts.out.join("baseline.json"), &baseline)?;
    for ((file, report), floor) in reports.iter_mut().zip(floors) {
        let mut b = baseline.clone();
        b.floor = floor;
        report.set_baseline(b);
        let stem = file.trim_end_matches(".yaml");
        report.write_json(&opts.out.join(format!("{stem}.json")))?;
        let svg = opts.out.join(format!("{stem}.svg"));
        std::fs::write(&svg, crate::plot::svg(report))
            .with_context(|| format!("{}: writing", svg.display()))?;
    }
    let summary = summary(&reports, &baseline, opts);
    let md = opts.out.join("summary.md");
    std::fs::write(&md, summary).with_context(|| format!("{}: writing", md.display()))?;
    eprintln!("reports written to {}", opts.out.display());
    Ok(reports.into_iter().map(|(_, r)| r).collect())
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(path, text + "\n").with_context(|| format!("{}: writing", path.display()))
}

/// The markdown summary: one row per workload, and the disk baseline.
pub fn summary(
    reports: &[(String, BrokerReport)],
    b: &crate::broker_report::DiskBaseline,
    opts: &SuiteOptions,
) -> String {
    let mut s = String::from("# tern bench suite\n\n");
    if let Some((_, r)) = reports.first() {
        let m = &r.machine;
        s += &format!(
            "Machine: {} CPUs ({}), kernel {}, {} on {} ({}). Broker: {}. Quick: {}.\n\n",
            m.nproc,
            m.cpu_model,
            m.kernel,
            m.filesystem,
            m.device,
            m.mount_point,
            r.broker_software.as_deref().unwrap_or("?"),
            opts.quick
        );
    }
    s += &format!(
        "Disk baseline ({} B O_DIRECT write + fdatasync, {} writes; \
         1 MiB O_DIRECT writes, 4 in flight): fdatasync p50/p99 {:.3}/{:.3} ms before, \
         {:.3}/{:.3} ms after; write {:.0} / {:.0} MB/s.\n\n",
        b.write_bytes,
        b.fdatasync_writes,
        b.before_fdatasync_p50_ms,
        b.before_fdatasync_p99_ms,
        b.after_fdatasync_p50_ms,
        b.after_fdatasync_p99_ms,
        b.before_write_mb_per_s,
        b.after_write_mb_per_s
    );
    s += "| workload | target rec/s | rec/s | MB/s | publish p50 ms | p99 | p99.9 | max \
          | e2e p50 ms | e2e p99 | consumed / expected | unsent | p99 / raw fdatasync p99 \
          | floor p99 ms | p99 / floor p99 | MB/s / raw write MB/s | null p50 ms | null p99 ms \
          | p99 / null p99 |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (file, r) in reports {
        let l = |k: &str| r.latency_ms(k);
        let target = if r.target_publish_rate_records_per_s == 0.0 {
            "max".to_string()
        } else {
            format!("{:.0}", r.target_publish_rate_records_per_s)
        };
        let opt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
        let null = r.null_baseline.as_ref();
        s += &format!(
            "| {file} | {target} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} \
             | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.publish_rate_records_per_s,
            r.publish_rate_mb_per_s,
            l("publish_latency_p50_ms"),
            l("publish_latency_p99_ms"),
            l("publish_latency_p99_9_ms"),
            l("publish_latency_max_ms"),
            l("end_to_end_latency_p50_ms"),
            l("end_to_end_latency_p99_ms"),
            r.records_consumed,
            r.records_consumed_expected,
            r.records_unsent,
            opt(r.ratio_publish_p99_to_fdatasync_p99, 1),
            opt(
                r.disk_baseline
                    .as_ref()
                    .and_then(|b| b.floor.as_ref())
                    .map(|f| f.p99_ms()),
                3
            ),
            opt(r.ratio_publish_p99_to_floor_p99, 2),
            opt(r.ratio_publish_mb_per_s_to_disk_write_mb_per_s, 3),
            opt(null.map(|n| n.publish_latency_p50_ms), 3),
            opt(null.map(|n| n.publish_latency_p99_ms), 3),
            opt(r.ratio_publish_p99_to_null_p99, 2),
        );
    }
    s
}

/// A `tern serve` process started by the suite.
#[derive(Debug)]
pub struct LocalBroker {
    child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    _scratch: Scratch,
}

impl LocalBroker {
    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `tern serve` on 127.0.0.1 (a free port) with its data under `dir`, and waits
    /// until it listens.
    pub fn start(tern_exe: &Path, dir: &Path, extra_config: &str) -> anyhow::Result<LocalBroker> {
        let scratch = Scratch::create(&dir.join("tern-bench-broker"))?;
        let data_dir = scratch.path().join("data");
        let config = scratch.path().join("tern.toml");
        let toml = format!(
            "listeners = \"127.0.0.1:0\"\nlog.dirs = \"{}\"\n{extra_config}\n",
            data_dir.display()
        );
        std::fs::write(&config, toml).with_context(|| format!("{}: writing", config.display()))?;
        let log = std::fs::File::create(scratch.path().join("broker.log"))?;
        let mut child = Command::new(tern_exe)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {} serve", tern_exe.display()))?;
        let Some(stdout) = child.stdout.take() else {
            bail!("tern serve: no stdout");
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining stdout so the broker never blocks on it.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(BROKER_START_S_MAX);
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => break addr,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = child.try_wait()? {
                        bail!(
                            "tern serve exited with {status} before listening (log in {})",
                            scratch.path().display()
                        );
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("tern serve did not listen within {BROKER_START_S_MAX} s");
                }
            }
        };
        Ok(LocalBroker {
            child,
            addr,
            data_dir,
            _scratch: scratch,
        })
    }

    /// SIGTERM, then waits (SIGKILL after the deadline).
    pub fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(BROKER_STOP_S_MAX);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    eprintln!("warning: tern serve exited with {status}");
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("tern serve did not stop within {BROKER_STOP_S_MAX} s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalBroker {
    /// A broker left running by an error on the way is killed, not orphaned.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the shipped workload files: every one parses and validates.
    #[test]
    fn standard_workloads_are_valid() {
        for (name, text) in STANDARD {
            if let Err(e) = Workload::parse(text, name) {
                panic!("{e}");
            }
        }
    }
}
