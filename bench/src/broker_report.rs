//! The report of a broker run: JSON with units in every field name, a table for the terminal,
//! and `tern bench compare` of two reports.
//!
//! Latency fields are flat (`publish_latency_p99_ms`, `end_to_end_latency_p99_9_ms`,
//! `publish_delay_latency_max_ms`) so that two reports, even of different versions of the
//! harness, compare field by field without knowing the structure. MB means 10^6 bytes, as in
//! the engine report; throughput counts record values (messageSize), as OMB does.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::machine::MachineInfo;
pub use crate::null_broker::NullBaseline;
use crate::report::{mb_per_s, ratio};
use crate::run::Phase;
use crate::spec::Workload;
use crate::stats::{latency_fields, Interval, Quantiles};

/// Why a report could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("{path}: not a JSON report: {cause}")]
    Json {
        path: String,
        cause: serde_json::Error,
    },
}

/// One window of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub phase: Phase,
    /// From the first intended send.
    pub start_s: f64,
    pub duration_s: f64,
    pub publish_records_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_records_per_s: f64,
    pub consume_mb_per_s: f64,
    pub publish_latency_p50_ms: f64,
    pub publish_latency_p99_ms: f64,
    pub publish_latency_p99_9_ms: f64,
    pub publish_latency_max_ms: f64,
    pub publish_delay_latency_p99_ms: f64,
    pub end_to_end_latency_p50_ms: f64,
    pub end_to_end_latency_p99_ms: f64,
    pub end_to_end_latency_max_ms: f64,
}

impl Window {
    pub fn of(
        phase: Phase,
        start_s: f64,
        duration_s: f64,
        d: &Interval,
        message_bytes: u64,
    ) -> Window {
        let per_s = |n: u64| {
            if duration_s > 0.0 {
                n as f64 / duration_s
            } else {
                0.0
            }
        };
        let (p, e, delay) = (
            Quantiles::of(&d.publish_us),
            Quantiles::of(&d.end_to_end_us),
            Quantiles::of(&d.publish_delay_us),
        );
        Window {
            phase,
            start_s,
            duration_s,
            publish_records_per_s: per_s(d.published_records),
            publish_mb_per_s: mb_per_s(d.published_records * message_bytes, duration_s),
            consume_records_per_s: per_s(d.consumed_records),
            consume_mb_per_s: mb_per_s(d.consumed_records * message_bytes, duration_s),
            publish_latency_p50_ms: p.p50_ms,
            publish_latency_p99_ms: p.p99_ms,
            publish_latency_p99_9_ms: p.p99_9_ms,
            publish_latency_max_ms: p.max_ms,
            publish_delay_latency_p99_ms: delay.p99_ms,
            end_to_end_latency_p50_ms: e.p50_ms,
            end_to_end_latency_p99_ms: e.p99_ms,
            end_to_end_latency_max_ms: e.max_ms,
        }
    }
}

/// What the run hands over to build the report.
#[derive(Debug)]
pub struct Totals {
    pub workload: Workload,
    pub broker_address: String,
    pub broker_software: Option<String>,
    pub machine: MachineInfo,
    pub records_created: u64,
    pub records_acked: u64,
    pub records_publish_errors: u64,
    pub records_unsent: u64,
    pub records_consumed: u64,
    pub records_consumed_expected: u64,
    pub test_s: f64,
    pub test_published: u64,
    pub test_consumed: u64,
    /// Test and drain windows merged.
    pub measured: Interval,
    pub windows: Vec<Window>,
    pub backlog_drain_s: Option<f64>,
    /// Each broker process's CPU over the test phase (one per node of a local cluster).
    pub node_cpu: Vec<BrokerCpu>,
}

/// The broker process's CPU time over the test phase (`--broker-pid`).
#[derive(Debug, Clone, Serialize)]
pub struct BrokerCpu {
    pub pid: u32,
    pub user_s: f64,
    pub system_s: f64,
    /// (user + system) / the test phase's length.
    pub cores: f64,
    /// (user + system) per GB acknowledged in the test phase; `None` when nothing was.
    pub core_s_per_gb: Option<f64>,
}

impl BrokerCpu {
    /// The sum of several processes' CPU, under the first one's pid; `None` for none.
    pub fn sum(all: &[BrokerCpu]) -> Option<BrokerCpu> {
        let first = all.first()?;
        let mut out = first.clone();
        for c in &all[1..] {
            out.user_s += c.user_s;
            out.system_s += c.system_s;
            out.cores += c.cores;
            out.core_s_per_gb = out.core_s_per_gb.zip(c.core_s_per_gb).map(|(a, b)| a + b);
        }
        Some(out)
    }

    /// From two samples of the process's (user, system) CPU time taken `test_s` apart,
    /// during which `bytes` were acknowledged.
    pub fn between(
        pid: u32,
        start: (std::time::Duration, std::time::Duration),
        end: (std::time::Duration, std::time::Duration),
        test_s: f64,
        bytes: u64,
    ) -> BrokerCpu {
        let user_s = end.0.saturating_sub(start.0).as_secs_f64();
        let system_s = end.1.saturating_sub(start.1).as_secs_f64();
        let total = user_s + system_s;
        BrokerCpu {
            pid,
            user_s,
            system_s,
            cores: if test_s > 0.0 { total / test_s } else { 0.0 },
            core_s_per_gb: (bytes > 0).then(|| total / (bytes as f64 / 1e9)),
        }
    }
}

/// The disk baseline measured before and after the broker run (`--baseline disk`).
#[derive(Debug, Clone, Serialize)]
pub struct DiskBaseline {
    pub dir: String,
    /// Each durable write: one aligned O_DIRECT write of this size, then fdatasync.
    pub write_bytes: u64,
    pub fdatasync_writes: u64,
    pub before_fdatasync_p50_ms: f64,
    pub before_fdatasync_p99_ms: f64,
    pub after_fdatasync_p50_ms: f64,
    pub after_fdatasync_p99_ms: f64,
    /// Sequential 1 MiB O_DIRECT writes, 4 in flight.
    pub before_write_mb_per_s: f64,
    pub after_write_mb_per_s: f64,
    /// The group-commit floor at the workload's rate (acks=all, fixed-rate runs).
    pub floor: Option<FloorBaseline>,
}

/// The latency of an ideal group-committing broker on this disk ([`crate::floor`]), at the
/// workload's partitions, record size and rate, before and after the broker run.
#[derive(Debug, Clone, Serialize)]
pub struct FloorBaseline {
    pub partitions: u64,
    pub record_bytes: u64,
    pub records_per_s: f64,
    pub measured_s: f64,
    pub before_p50_ms: f64,
    pub before_p99_ms: f64,
    pub before_p99_9_ms: f64,
    pub before_records_per_write: f64,
    pub after_p50_ms: f64,
    pub after_p99_ms: f64,
    pub after_p99_9_ms: f64,
    pub after_records_per_write: f64,
}

impl FloorBaseline {
    /// The lower of the before/after p99: a stall of the disk during one of the two
    /// measurements does not raise the floor the broker is compared with.
    pub fn p99_ms(&self) -> f64 {
        self.before_p99_ms.min(self.after_p99_ms)
    }
}

impl DiskBaseline {
    /// The worse (higher) of the before/after fdatasync p99: the ratio then flatters the
    /// disk, not the broker.
    pub fn fdatasync_p99_ms(&self) -> f64 {
        self.before_fdatasync_p99_ms
            .max(self.after_fdatasync_p99_ms)
    }
    /// The better of the before/after bandwidths.
    pub fn write_mb_per_s(&self) -> f64 {
        self.before_write_mb_per_s.max(self.after_write_mb_per_s)
    }
}

/// The whole report of `tern bench run`.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerReport {
    pub tern_version: String,
    pub started_unix_ms: i64,
    pub workload_name: String,
    pub workload: Workload,
    pub broker_address: String,
    /// What the broker is when the harness knows it (it started it); the Kafka protocol
    /// does not tell a client the broker's version.
    pub broker_software: Option<String>,
    pub machine: MachineInfo,
    pub producers: u32,
    pub consumers: u32,
    pub partitions_total: u32,
    /// 0 = as fast as possible.
    pub target_publish_rate_records_per_s: f64,
    pub records_created: u64,
    pub records_acked: u64,
    pub records_publish_errors: u64,
    /// Due by the timeline before the end but never sent (the producers fell behind).
    pub records_unsent: u64,
    pub records_consumed: u64,
    /// records_acked × subscriptions per topic.
    pub records_consumed_expected: u64,
    pub test_duration_s: f64,
    pub publish_rate_records_per_s: f64,
    pub publish_rate_mb_per_s: f64,
    pub consume_rate_records_per_s: f64,
    pub consume_rate_mb_per_s: f64,
    /// Time for the consumers to read the backlog written before they started.
    pub backlog_drain_s: Option<f64>,
    /// `publish_latency_*`, `publish_delay_latency_*`, `end_to_end_latency_*`.
    #[serde(flatten)]
    pub latency: BTreeMap<String, f64>,
    pub disk_baseline: Option<DiskBaseline>,
    /// publish_latency_p99_ms / the disk's fdatasync p99 (acks=all runs).
    pub ratio_publish_p99_to_fdatasync_p99: Option<f64>,
    /// publish_rate_mb_per_s / the disk's O_DIRECT write bandwidth (max-rate runs).
    pub ratio_publish_mb_per_s_to_disk_write_mb_per_s: Option<f64>,
    /// publish_latency_p99_ms / the group-commit floor's p99 (acks=all, fixed rate).
    pub ratio_publish_p99_to_floor_p99: Option<f64>,
    /// The same workload against the null broker, run just before (`--baseline null`).
    pub null_baseline: Option<NullBaseline>,
    /// publish_latency_p50_ms / the null broker's publish p50.
    pub ratio_publish_p50_to_null_p50: Option<f64>,
    /// publish_latency_p99_ms / the null broker's publish p99.
    pub ratio_publish_p99_to_null_p99: Option<f64>,
    /// The broker's CPU over the test phase, when its pid was given (with several pids,
    /// their sum under the first pid).
    pub broker_cpu: Option<BrokerCpu>,
    /// With several pids (the nodes of a local cluster): each one's CPU.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_cpu: Vec<BrokerCpu>,
    pub windows: Vec<Window>,
}

impl BrokerReport {
    pub fn new(t: Totals) -> BrokerReport {
        let w = &t.workload;
        let mut latency = BTreeMap::new();
        latency_fields("publish_latency", &t.measured.publish_us, &mut latency);
        latency_fields(
            "publish_delay_latency",
            &t.measured.publish_delay_us,
            &mut latency,
        );
        latency_fields(
            "end_to_end_latency",
            &t.measured.end_to_end_us,
            &mut latency,
        );
        let per_s = |n: u64| {
            if t.test_s > 0.0 {
                n as f64 / t.test_s
            } else {
                0.0
            }
        };
        BrokerReport {
            tern_version: env!("CARGO_PKG_VERSION").to_string(),
            started_unix_ms: 0,
            workload_name: w.name.clone(),
            broker_address: t.broker_address,
            broker_software: t.broker_software,
            machine: t.machine,
            producers: w.producers_total(),
            consumers: w.consumers_total(),
            partitions_total: w.topics * w.partitions_per_topic,
            target_publish_rate_records_per_s: w.producer_rate,
            records_created: t.records_created,
            records_acked: t.records_acked,
            records_publish_errors: t.records_publish_errors,
            records_unsent: t.records_unsent,
            records_consumed: t.records_consumed,
            records_consumed_expected: t.records_consumed_expected,
            test_duration_s: t.test_s,
            publish_rate_records_per_s: per_s(t.test_published),
            publish_rate_mb_per_s: mb_per_s(t.test_published * w.message_size, t.test_s),
            consume_rate_records_per_s: per_s(t.test_consumed),
            consume_rate_mb_per_s: mb_per_s(t.test_consumed * w.message_size, t.test_s),
            backlog_drain_s: t.backlog_drain_s,
            latency,
            disk_baseline: None,
            ratio_publish_p99_to_fdatasync_p99: None,
            ratio_publish_mb_per_s_to_disk_write_mb_per_s: None,
            ratio_publish_p99_to_floor_p99: None,
            null_baseline: None,
            ratio_publish_p50_to_null_p50: None,
            ratio_publish_p99_to_null_p99: None,
            broker_cpu: BrokerCpu::sum(&t.node_cpu),
            node_cpu: if t.node_cpu.len() > 1 {
                t.node_cpu
            } else {
                Vec::new()
            },
            windows: t.windows,
            workload: t.workload,
        }
    }

    /// A latency field (`publish_latency_p99_ms`), 0 when absent.
    pub fn latency_ms(&self, field: &str) -> f64 {
        self.latency.get(field).copied().unwrap_or(0.0)
    }

    /// Attaches the disk baseline and the two ratios the issue asks for.
    pub fn set_baseline(&mut self, b: DiskBaseline) {
        if self.workload.driver.acks.0 == -1 {
            self.ratio_publish_p99_to_fdatasync_p99 = Some(ratio(
                self.latency_ms("publish_latency_p99_ms"),
                b.fdatasync_p99_ms(),
            ));
        }
        if self.workload.producer_rate == 0.0 {
            self.ratio_publish_mb_per_s_to_disk_write_mb_per_s =
                Some(ratio(self.publish_rate_mb_per_s, b.write_mb_per_s()));
        }
        if let Some(floor) = &b.floor {
            self.ratio_publish_p99_to_floor_p99 = Some(ratio(
                self.latency_ms("publish_latency_p99_ms"),
                floor.p99_ms(),
            ));
        }
        self.disk_baseline = Some(b);
    }

    /// Attaches the null broker's run and the publish latency ratios to it.
    pub fn set_null_baseline(&mut self, b: NullBaseline) {
        self.ratio_publish_p50_to_null_p50 = Some(ratio(
            self.latency_ms("publish_latency_p50_ms"),
            b.publish_latency_p50_ms,
        ));
        self.ratio_publish_p99_to_null_p99 = Some(ratio(
            self.latency_ms("publish_latency_p99_ms"),
            b.publish_latency_p99_ms,
        ));
        self.null_baseline = Some(b);
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let text = serde_json::to_string_pretty(self).map_err(|cause| ReportError::Json {
            path: path.display().to_string(),
            cause,
        })?;
        std::fs::write(path, text + "\n").map_err(|cause| ReportError::Io {
            path: path.display().to_string(),
            cause,
        })
    }
}

fn f(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl fmt::Display for BrokerReport {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.workload;
        writeln!(
            out,
            "workload {:?}: {} topic(s) × {} partitions, {} B records, {} producer(s), \
             {} consumer(s), acks={}, linger {} ms",
            w.name,
            w.topics,
            w.partitions_per_topic,
            w.message_size,
            self.producers,
            self.consumers,
            if w.driver.acks.0 == -1 {
                "all".to_string()
            } else {
                w.driver.acks.0.to_string()
            },
            w.driver.linger_ms
        )?;
        let target = if w.producer_rate == 0.0 {
            "max".to_string()
        } else {
            format!("{:.0} rec/s", w.producer_rate)
        };
        writeln!(
            out,
            "broker {} ({}), target rate {target}, measured {:.1} s",
            self.broker_address,
            self.broker_software
                .as_deref()
                .unwrap_or("software unknown"),
            self.test_duration_s
        )?;
        writeln!(
            out,
            "throughput: publish {} rec/s = {} MB/s; consume {} rec/s = {} MB/s",
            f(self.publish_rate_records_per_s),
            f(self.publish_rate_mb_per_s),
            f(self.consume_rate_records_per_s),
            f(self.consume_rate_mb_per_s)
        )?;
        writeln!(
            out,
            "records: {} acked, {} errors, {} unsent, {} of {} consumed",
            self.records_acked,
            self.records_publish_errors,
            self.records_unsent,
            self.records_consumed,
            self.records_consumed_expected
        )?;
        if let Some(s) = self.backlog_drain_s {
            writeln!(out, "backlog read in {s:.2} s")?;
        }
        writeln!(
            out,
            "{:<22}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}",
            "latency (ms)", "p50", "p75", "p95", "p99", "p99.9", "p99.99", "max"
        )?;
        for (label, prefix) in [
            ("publish", "publish_latency"),
            ("publish delay", "publish_delay_latency"),
            ("end to end", "end_to_end_latency"),
        ] {
            write!(out, "{label:<22}")?;
            for q in ["p50", "p75", "p95", "p99", "p99_9", "p99_99", "max"] {
                match self.latency.get(&format!("{prefix}_{q}_ms")) {
                    Some(v) => write!(out, "{:>9}", f(*v))?,
                    None => write!(out, "{:>9}", "-")?,
                }
            }
            writeln!(out)?;
        }
        if let Some(b) = &self.disk_baseline {
            writeln!(
                out,
                "disk baseline ({}): {} B write+fdatasync p50/p99 {}/{} ms before, \
                 {}/{} ms after; O_DIRECT write {} / {} MB/s",
                b.dir,
                b.write_bytes,
                f(b.before_fdatasync_p50_ms),
                f(b.before_fdatasync_p99_ms),
                f(b.after_fdatasync_p50_ms),
                f(b.after_fdatasync_p99_ms),
                f(b.before_write_mb_per_s),
                f(b.after_write_mb_per_s)
            )?;
            if let Some(fl) = &b.floor {
                writeln!(
                    out,
                    "group-commit floor (partition files: {}, {} B records, {:.0} rec/s; \
                     no network, no broker): p50/p99/p99.9 {}/{}/{} ms before, \
                     {}/{}/{} ms after",
                    fl.partitions,
                    fl.record_bytes,
                    fl.records_per_s,
                    f(fl.before_p50_ms),
                    f(fl.before_p99_ms),
                    f(fl.before_p99_9_ms),
                    f(fl.after_p50_ms),
                    f(fl.after_p99_ms),
                    f(fl.after_p99_9_ms)
                )?;
            }
        }
        if let Some(n) = &self.null_baseline {
            writeln!(
                out,
                "null broker ({}, stores nothing, answers at once): publish p50/p99/p99.9 \
                 {}/{}/{} ms, end to end p50/p99 {}/{} ms, {} MB/s, {} of {} consumed; \
                 its CPU {} s",
                n.broker_address,
                f(n.publish_latency_p50_ms),
                f(n.publish_latency_p99_ms),
                f(n.publish_latency_p99_9_ms),
                f(n.end_to_end_latency_p50_ms),
                f(n.end_to_end_latency_p99_ms),
                f(n.publish_rate_mb_per_s),
                n.records_consumed,
                n.records_consumed_expected,
                f(n.broker_cpu_s)
            )?;
        }
        if let (Some(p50), Some(p99)) = (
            self.ratio_publish_p50_to_null_p50,
            self.ratio_publish_p99_to_null_p99,
        ) {
            writeln!(
                out,
                "ratio publish / null broker publish: p50 {p50:.2}×, p99 {p99:.2}×"
            )?;
        }
        if let Some(c) = &self.broker_cpu {
            let whose = if self.node_cpu.is_empty() {
                format!("pid {}", c.pid)
            } else {
                format!("{} processes", self.node_cpu.len())
            };
            writeln!(
                out,
                "broker CPU ({whose}, test phase): user {} s + system {} s = {} cores{}",
                f(c.user_s),
                f(c.system_s),
                f(c.cores),
                c.core_s_per_gb
                    .map(|g| format!(", {} core·s per GB acknowledged", f(g)))
                    .unwrap_or_default()
            )?;
        }
        for c in &self.node_cpu {
            writeln!(
                out,
                "  node pid {}: user {} s + system {} s = {} cores",
                c.pid,
                f(c.user_s),
                f(c.system_s),
                f(c.cores)
            )?;
        }
        if let Some(r) = self.ratio_publish_p99_to_fdatasync_p99 {
            writeln!(out, "ratio publish p99 / raw fdatasync p99: {r:.1}×")?;
        }
        if let Some(r) = self.ratio_publish_p99_to_floor_p99 {
            writeln!(out, "ratio publish p99 / group-commit floor p99: {r:.2}×")?;
        }
        if let Some(r) = self.ratio_publish_mb_per_s_to_disk_write_mb_per_s {
            writeln!(out, "ratio publish MB/s / raw O_DIRECT write MB/s: {r:.3}×")?;
        }
        Ok(())
    }
}

/// Reads a JSON report (any version: compared field by field).
pub fn read_json(path: &Path) -> Result<serde_json::Value, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ReportError::Io {
        path: path.display().to_string(),
        cause,
    })?;
    serde_json::from_str(&text).map_err(|cause| ReportError::Json {
        path: path.display().to_string(),
        cause,
    })
}

/// Fields compared first, in this order; the other numeric top-level fields follow.
const COMPARE_FIRST: [&str; 6] = [
    "publish_rate_records_per_s",
    "publish_rate_mb_per_s",
    "consume_rate_mb_per_s",
    "publish_latency_p50_ms",
    "publish_latency_p99_ms",
    "end_to_end_latency_p99_ms",
];

/// Two reports side by side: every numeric top-level field both have, with b / a.
pub fn compare(a: &serde_json::Value, b: &serde_json::Value, a_name: &str, b_name: &str) -> String {
    let num = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    let mut keys: Vec<String> = COMPARE_FIRST.iter().map(|s| s.to_string()).collect();
    if let Some(obj) = a.as_object() {
        for (k, v) in obj {
            if v.is_number() && !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let name = |v: &serde_json::Value| {
        v.get("workload_name")
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_string()
    };
    let mut out = format!(
        "a: {a_name} (workload {:?})\nb: {b_name} (workload {:?})\n",
        name(a),
        name(b)
    );
    out += &format!("{:<40}{:>14}{:>14}{:>10}\n", "field", "a", "b", "b / a");
    for k in keys {
        let (Some(x), Some(y)) = (num(a, &k), num(b, &k)) else {
            continue;
        };
        let r = if x != 0.0 {
            format!("{:.3}", y / x)
        } else {
            "-".into()
        };
        out += &format!("{k:<40}{:>14}{:>14}{r:>10}\n", f(x), f(y));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Guards compare: common numeric fields, ratios b / a, known fields first.
    #[test]
    fn compare_side_by_side() {
        let a = json!({
            "workload_name": "w", "publish_latency_p99_ms": 2.0,
            "publish_rate_mb_per_s": 100.0, "x_count": 5, "only_a": 1
        });
        let b = json!({
            "workload_name": "w", "publish_latency_p99_ms": 1.0,
            "publish_rate_mb_per_s": 150.0, "x_count": 5
        });
        let t = compare(&a, &b, "a.json", "b.json");
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[3].starts_with("publish_rate_mb_per_s") && lines[3].ends_with("1.500"),
            "{t}"
        );
        assert!(
            lines[4].starts_with("publish_latency_p99_ms") && lines[4].ends_with("0.500"),
            "{t}"
        );
        assert!(!t.contains("only_a"));
        assert!(t.contains("x_count"));
    }
}
