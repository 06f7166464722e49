//! The benchmark report: serde structs (units in every field name, so the JSON explains
//! itself) and the table printed for a human.
//!
//! Every engine figure sits next to the raw baseline measured in the same run and the ratio
//! between them; absolute numbers drift between runs and machines, ratios hold.
//! MB means 10^6 bytes; latencies are recorded in nanoseconds and reported in microseconds.

use std::fmt;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::machine::MachineInfo;

/// Highest latency the histograms hold: one minute, in nanoseconds.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// A histogram for latencies in nanoseconds, 3 significant digits.
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).context("creating a latency histogram")
}

/// Bytes per second in MB/s (10^6 bytes).
pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / 1e6 / seconds
    } else {
        0.0
    }
}

/// `a / b`, 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Percentiles of one latency histogram.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    /// Summarises a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// The whole `tern bench engine` report.
#[derive(Debug, Clone, Serialize)]
pub struct EngineReport {
    pub tern_version: String,
    pub started_unix_ms: i64,
    pub quick: bool,
    pub machine: MachineInfo,
    pub throughput: ThroughputReport,
    pub recovery: RecoveryReport,
    pub durable_latency: DurableLatencyReport,
    pub group_commit: GroupCommitReport,
}

/// 1. Sequential append throughput (flush = never) against raw O_DIRECT writes.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    pub total_bytes: u64,
    pub append_bytes: u64,
    pub batch_bytes: u64,
    pub batches_per_append: u64,
    pub appends_in_flight_max: u64,
    /// Interleaved rounds (engine and raw alternate).
    pub rounds: u64,
    pub engine_seconds: f64,
    pub engine_throughput_mb_per_s: f64,
    /// CPU time of the shard thread (user + system) per MiB appended.
    pub engine_cpu_ms_per_mib: f64,
    /// Engine CPU time over engine wall time: near 1 means CPU-bound.
    pub engine_cpu_busy_fraction: f64,
    pub engine_writes: u64,
    pub engine_write_bytes_mean: f64,
    /// Raw writes of `append_bytes` with `appends_in_flight_max` in flight: the baseline.
    pub raw_seconds: f64,
    pub raw_throughput_mb_per_s: f64,
    pub raw_cpu_ms_per_mib: f64,
    /// The same raw writes one at a time (context: the engine has one write in flight).
    pub raw_depth1_throughput_mb_per_s: f64,
    pub engine_to_raw_ratio: f64,
    pub goal_ratio_min: f64,
    pub meets_goal: bool,
}

/// 2. One writer, flush = always: latency per durable append against raw durable writes.
#[derive(Debug, Clone, Serialize)]
pub struct DurableLatencyReport {
    pub appends: u64,
    pub warmup_appends: u64,
    pub batch_bytes: u64,
    pub engine_append_latency: LatencySummary,
    pub engine_writes: u64,
    pub engine_syncs: u64,
    pub engine_write_bytes_mean: f64,
    /// Aligned `batch_bytes` O_DIRECT write, then fdatasync: the baseline of the goal.
    pub raw_write_fdatasync_latency: LatencySummary,
    /// Aligned `batch_bytes` O_DIRECT write with RWF_DSYNC (the engine's kind of write).
    pub raw_write_rwf_dsync_latency: LatencySummary,
    pub ratio_p50_engine_to_raw_fdatasync: f64,
    pub ratio_p99_engine_to_raw_fdatasync: f64,
    pub ratio_p50_engine_to_raw_rwf_dsync: f64,
    pub ratio_p99_engine_to_raw_rwf_dsync: f64,
    pub goal_ratio_max: f64,
    pub meets_goal: bool,
}

/// 3. Many concurrent appenders, flush = always: does group commit share writes?
#[derive(Debug, Clone, Serialize)]
pub struct GroupCommitReport {
    pub appenders: u64,
    pub batch_bytes: u64,
    pub seconds: f64,
    pub appends: u64,
    pub appends_per_s: f64,
    pub writes_per_s: f64,
    pub syncs_per_s: f64,
    pub appends_per_write_mean: f64,
    pub write_bytes_mean: f64,
    pub throughput_mb_per_s: f64,
    pub append_latency: LatencySummary,
    /// Durable writes per second one raw writer achieves (1 / mean latency of figure 2).
    pub raw_write_fdatasync_per_s: f64,
    pub raw_write_rwf_dsync_per_s: f64,
    /// Appends per second over the raw single-writer fdatasync rate.
    pub appends_per_s_to_raw_fdatasync_per_s_ratio: f64,
}

/// 4. Reopening the log of figure 1: with intact indexes, and with both indexes deleted.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    pub segment_bytes: u64,
    pub batches: u64,
    /// Whether `sync; echo 3 > /proc/sys/vm/drop_caches` worked before each timed open.
    pub page_cache_dropped: bool,
    pub open_with_indexes_seconds: f64,
    pub open_full_scan_seconds: f64,
    pub full_scan_mb_per_s: f64,
    /// CPU time of the shard thread (user + system) per MiB during the full-scan open
    /// (it also counts the close that follows it).
    pub full_scan_cpu_ms_per_mib: f64,
    /// Sequential buffered read of the same segment file, cold: the baseline.
    pub raw_cold_read_mb_per_s: f64,
    pub raw_read_cpu_ms_per_mib: f64,
    pub raw_read_chunk_bytes: u64,
    pub full_scan_to_raw_read_ratio: f64,
    /// The reopened log ends where the written one ended (both reopens).
    pub recovered_end_offset_ok: bool,
}

const KIB: u64 = 1024;

fn size(bytes: u64) -> String {
    for (unit, name) in [(KIB * KIB * KIB, "GiB"), (KIB * KIB, "MiB"), (KIB, "KiB")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} B")
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

/// One row of a figure table: name, engine value, baseline value, ratio, note.
fn row(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    engine: String,
    raw: String,
    ratio: String,
    note: &str,
) -> fmt::Result {
    writeln!(f, "  {name:<34} {engine:>12} {raw:>12} {ratio:>8}  {note}")
}

fn header(f: &mut fmt::Formatter<'_>, raw_name: &str) -> fmt::Result {
    row(
        f,
        "figure",
        "engine".into(),
        raw_name.into(),
        "ratio".into(),
        "",
    )
}

impl fmt::Display for EngineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.machine;
        writeln!(
            f,
            "tern bench engine{}: {} CPUs ({}), kernel {}, {} on {} (mount {}), dir {}",
            if self.quick { " --quick" } else { "" },
            m.nproc,
            m.cpu_model,
            m.kernel,
            m.filesystem,
            m.device,
            m.mount_point,
            m.dir
        )?;
        self.throughput.fmt(f)?;
        self.recovery.fmt(f)?;
        self.durable_latency.fmt(f)?;
        self.group_commit.fmt(f)
    }
}

impl fmt::Display for ThroughputReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\n1. Sequential append, flush = never: {} in {} appends of {} batches x {}, \
             <= {} in flight",
            size(self.total_bytes),
            size(self.append_bytes),
            self.batches_per_append,
            size(self.batch_bytes),
            self.appends_in_flight_max
        )?;
        header(f, "raw O_DIRECT")?;
        row(
            f,
            "throughput MB/s",
            format!("{:.0}", self.engine_throughput_mb_per_s),
            format!("{:.0}", self.raw_throughput_mb_per_s),
            format!("{:.2}x", self.engine_to_raw_ratio),
            &format!(
                "goal >= {:.1}x: {}",
                self.goal_ratio_min,
                verdict(self.meets_goal)
            ),
        )?;
        row(
            f,
            "raw, one write in flight MB/s",
            "".into(),
            format!("{:.0}", self.raw_depth1_throughput_mb_per_s),
            format!(
                "{:.2}x",
                ratio(
                    self.engine_throughput_mb_per_s,
                    self.raw_depth1_throughput_mb_per_s
                )
            ),
            "(context)",
        )?;
        row(
            f,
            "thread CPU ms per MiB",
            format!("{:.2}", self.engine_cpu_ms_per_mib),
            format!("{:.2}", self.raw_cpu_ms_per_mib),
            format!(
                "{:.1}x",
                ratio(self.engine_cpu_ms_per_mib, self.raw_cpu_ms_per_mib)
            ),
            &format!(
                "engine CPU busy {:.0}% of its wall time",
                self.engine_cpu_busy_fraction * 100.0
            ),
        )?;
        row(
            f,
            "engine writes / mean write",
            format!("{}", self.engine_writes),
            "".into(),
            "".into(),
            &format!(
                "mean write {:.0} KiB",
                self.engine_write_bytes_mean / 1024.0
            ),
        )
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\n4. Recovery of a {} active segment ({} batches), page cache dropped: {}{}",
            size(self.segment_bytes),
            self.batches,
            if self.page_cache_dropped { "yes" } else { "no" },
            if self.recovered_end_offset_ok {
                ""
            } else {
                "  WARNING: reopened log does not end where it was written"
            }
        )?;
        header(f, "raw read")?;
        row(
            f,
            "open, indexes deleted (full scan) s",
            format!("{:.3}", self.open_full_scan_seconds),
            "".into(),
            "".into(),
            "",
        )?;
        row(
            f,
            "full scan MB/s (cold)",
            format!("{:.0}", self.full_scan_mb_per_s),
            format!("{:.0}", self.raw_cold_read_mb_per_s),
            format!("{:.2}x", self.full_scan_to_raw_read_ratio),
            &format!("raw: buffered reads of {}", size(self.raw_read_chunk_bytes)),
        )?;
        row(
            f,
            "thread CPU ms per MiB",
            format!("{:.2}", self.full_scan_cpu_ms_per_mib),
            format!("{:.2}", self.raw_read_cpu_ms_per_mib),
            format!(
                "{:.1}x",
                ratio(self.full_scan_cpu_ms_per_mib, self.raw_read_cpu_ms_per_mib)
            ),
            "",
        )?;
        row(
            f,
            "open, indexes intact s",
            format!("{:.3}", self.open_with_indexes_seconds),
            "".into(),
            "".into(),
            "",
        )
    }
}

impl fmt::Display for DurableLatencyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\n2. Durable append, flush = always, one writer: {} appends of {} \
             (after {} warm-up)",
            self.appends,
            size(self.batch_bytes),
            self.warmup_appends
        )?;
        header(f, "write+fdsync")?;
        let e = &self.engine_append_latency;
        let r = &self.raw_write_fdatasync_latency;
        let d = &self.raw_write_rwf_dsync_latency;
        let goal = format!(
            "goal <= {:.1}x: {}",
            self.goal_ratio_max,
            verdict(self.meets_goal)
        );
        let lines = [
            ("p50 us", e.p50_us, r.p50_us, goal.as_str()),
            ("p99 us", e.p99_us, r.p99_us, ""),
            ("p99.9 us", e.p999_us, r.p999_us, ""),
            ("mean us", e.mean_us, r.mean_us, ""),
        ];
        for (name, ev, rv, note) in lines {
            row(
                f,
                name,
                format!("{ev:.0}"),
                format!("{rv:.0}"),
                format!("{:.2}x", ratio(ev, rv)),
                note,
            )?;
        }
        header(f, "RWF_DSYNC")?;
        for (name, ev, rv) in [
            ("p50 us", e.p50_us, d.p50_us),
            ("p99 us", e.p99_us, d.p99_us),
            ("p99.9 us", e.p999_us, d.p999_us),
        ] {
            row(
                f,
                name,
                format!("{ev:.0}"),
                format!("{rv:.0}"),
                format!("{:.2}x", ratio(ev, rv)),
                "",
            )?;
        }
        row(
            f,
            "engine writes / syncs",
            format!("{} / {}", self.engine_writes, self.engine_syncs),
            "".into(),
            "".into(),
            &format!(
                "mean write {:.1} KiB",
                self.engine_write_bytes_mean / 1024.0
            ),
        )
    }
}

impl fmt::Display for GroupCommitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\n3. Group commit, flush = always: {} appenders x {} batches, {:.1} s",
            self.appenders,
            size(self.batch_bytes),
            self.seconds
        )?;
        header(f, "raw 1 writer")?;
        row(
            f,
            "durable appends/s vs syncs/s",
            format!("{:.0}", self.appends_per_s),
            format!("{:.0}", self.raw_write_fdatasync_per_s),
            format!("{:.1}x", self.appends_per_s_to_raw_fdatasync_per_s_ratio),
            "raw: write+fdatasync/s",
        )?;
        row(
            f,
            "writes/s (= syncs/s)",
            format!("{:.0}", self.writes_per_s),
            format!("{:.0}", self.raw_write_rwf_dsync_per_s),
            format!(
                "{:.2}x",
                ratio(self.writes_per_s, self.raw_write_rwf_dsync_per_s)
            ),
            &format!("syncs/s {:.0}; raw: RWF_DSYNC writes/s", self.syncs_per_s),
        )?;
        row(
            f,
            "appends per write (mean)",
            format!("{:.1}", self.appends_per_write_mean),
            "".into(),
            "".into(),
            &format!(
                "mean write {:.1} KiB, {:.1} MB/s",
                self.write_bytes_mean / 1024.0,
                self.throughput_mb_per_s
            ),
        )?;
        let l = &self.append_latency;
        row(
            f,
            "append latency p50/p99/p99.9 us",
            format!("{:.0}/{:.0}/{:.0}", l.p50_us, l.p99_us, l.p999_us),
            "".into(),
            "".into(),
            "",
        )
    }
}

impl EngineReport {
    /// Writes the report as pretty JSON to `path`.
    pub fn write_json(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self).context("encoding the report as JSON")?;
        std::fs::write(path, json + "\n").with_context(|| format!("{}: write", path.display()))
    }
}
