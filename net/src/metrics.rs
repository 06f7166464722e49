//! Broker metrics in Prometheus' text format, served at `/metrics` on `metrics.listener`.
//!
//! Invariants: nothing on the request path takes a lock. Each shard owns a [`ShardMetrics`]
//! that only its own thread writes (relaxed atomic adds: requests and their latency
//! histogram per API, bytes in and out); each shard republishes its partitions' figures
//! ([`PartitionStats`]) as one immutable list every [`PUBLISH_EVERY_TICKS`] ticks. A scrape
//! (on the metrics thread) reads all of them and renders the text; what it reads may be a
//! tick old, never torn.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use kafka_protocol::messages::ApiKey;

/// Partition figures are republished every this many shard ticks (`shard::TICK_MS` each).
pub const PUBLISH_EVERY_TICKS: u64 = 10;

/// Upper bounds of the request latency buckets, in microseconds (the last bucket, +Inf, is
/// the count).
const LATENCY_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// API keys below this are counted per API; Kafka's keys are all below it.
const API_KEYS_MAX: usize = 100;

/// Requests of one API on one shard.
#[derive(Debug, Default)]
struct ApiStats {
    count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// Non-cumulative: `buckets[i]` counts latencies in `(bound[i-1], bound[i]]`.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
}

/// A shard journal's counters since the broker started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalCounters {
    pub records: u64,
    /// Durable writes (each one group commit).
    pub writes: u64,
    pub bytes_written: u64,
    pub checkpoints: u64,
}

/// One consumer group as its coordinator shard last published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStats {
    pub group: String,
    pub state: &'static str,
    pub members: usize,
    /// Committed offsets by (topic, partition).
    pub committed: Vec<((String, i32), i64)>,
}

/// One partition as its shard last published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    /// Bytes of batches appended since the partition was opened here.
    pub appended_bytes: u64,
    /// Batches appended since the partition was opened here.
    pub appended_batches: u64,
    /// Whether this broker leads it (a single node leads all).
    pub leader: bool,
    /// In-sync replicas and replicas (1 and 1 on a single node).
    pub isr: usize,
    pub replicas: usize,
}

/// What one shard counts. Written by its own thread only.
#[derive(Debug)]
pub struct ShardMetrics {
    apis: Vec<ApiStats>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Messages this shard sent to another shard's queue.
    cross_shard: AtomicU64,
    /// The shard journal's counters as last published (records, writes, bytes, checkpoints).
    journal: ArcSwap<Option<JournalCounters>>,
    /// The shard thread's Linux thread id (for its CPU time), 0 until it runs.
    tid: AtomicI32,
    partitions: ArcSwap<Vec<PartitionStats>>,
    groups: ArcSwap<Vec<GroupStats>>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            apis: (0..API_KEYS_MAX).map(|_| ApiStats::default()).collect(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            cross_shard: AtomicU64::new(0),
            journal: ArcSwap::from_pointee(None),
            tid: AtomicI32::new(0),
            partitions: ArcSwap::from_pointee(Vec::new()),
            groups: ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl ShardMetrics {
    /// One request handled: its API, its frame's bytes and how long it took.
    pub fn request(&self, api: ApiKey, frame_bytes: usize, latency: Duration) {
        let Some(a) = self.apis.get(api as usize) else {
            return;
        };
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        a.count.fetch_add(1, Ordering::Relaxed);
        a.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            a.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_in
            .fetch_add(frame_bytes as u64, Ordering::Relaxed);
    }

    /// One message sent to another shard's queue.
    pub fn cross_shard_message(&self) {
        self.cross_shard.fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces the published groups (those this shard coordinates).
    pub fn publish_groups(&self, mut groups: Vec<GroupStats>) {
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        self.groups.store(Arc::new(groups));
    }

    /// Replaces the published journal counters.
    pub fn publish_journal(&self, counters: Option<JournalCounters>) {
        self.journal.store(Arc::new(counters));
    }

    /// Response bytes written to clients.
    pub fn bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Called once on the shard's own thread.
    pub fn set_thread(&self) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        self.tid.store(tid, Ordering::Relaxed);
    }

    /// Replaces the published partition figures.
    pub fn publish_partitions(&self, mut stats: Vec<PartitionStats>) {
        stats.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        self.partitions.store(Arc::new(stats));
    }
}

/// Every shard's metrics.
#[derive(Debug)]
pub struct Metrics {
    pub shards: Vec<ShardMetrics>,
}

impl Metrics {
    pub fn new(shards: usize) -> Self {
        Metrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of everything, merged now.
    pub fn render(&self, queue_depths: &[usize]) -> String {
        let mut out = String::with_capacity(16 << 10);
        let clock_ticks = clock_ticks_per_second();
        header(
            &mut out,
            "tern_requests_total",
            "counter",
            "Requests handled, by shard and API.",
        );
        for (s, m) in self.shards.iter().enumerate() {
            for (k, a) in m.apis.iter().enumerate() {
                let n = a.count.load(Ordering::Relaxed);
                if let (true, Ok(api)) = (n > 0, ApiKey::try_from(k as i16)) {
                    let _ = writeln!(
                        out,
                        "tern_requests_total{{shard=\"{s}\",api=\"{api:?}\"}} {n}"
                    );
                }
            }
        }
        header(
            &mut out,
            "tern_request_latency_seconds",
            "histogram",
            "From a request's whole frame to its response, by shard and API.",
        );
        for (s, m) in self.shards.iter().enumerate() {
            for (k, a) in m.apis.iter().enumerate() {
                let n = a.count.load(Ordering::Relaxed);
                let (true, Ok(api)) = (n > 0, ApiKey::try_from(k as i16)) else {
                    continue;
                };
                let labels = format!("shard=\"{s}\",api=\"{api:?}\"");
                let mut cumulative = 0;
                for (b, bound) in a.buckets.iter().zip(LATENCY_BUCKETS_US) {
                    cumulative += b.load(Ordering::Relaxed);
                    let le = bound as f64 / 1e6;
                    let _ = writeln!(
                        out,
                        "tern_request_latency_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "tern_request_latency_seconds_bucket{{{labels},le=\"+Inf\"}} {n}"
                );
                let sum = a.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
                let _ = writeln!(out, "tern_request_latency_seconds_sum{{{labels}}} {sum}");
                let _ = writeln!(out, "tern_request_latency_seconds_count{{{labels}}} {n}");
            }
        }
        let per_shard =
            |out: &mut String,
             name: &str,
             kind: &str,
             help: &str,
             v: &dyn Fn(usize, &ShardMetrics) -> Option<String>| {
                header(out, name, kind, help);
                for (s, m) in self.shards.iter().enumerate() {
                    if let Some(v) = v(s, m) {
                        let _ = writeln!(out, "{name}{{shard=\"{s}\"}} {v}");
                    }
                }
            };
        per_shard(
            &mut out,
            "tern_bytes_in_total",
            "counter",
            "Request frame bytes received, by shard.",
            &|_, m| Some(m.bytes_in.load(Ordering::Relaxed).to_string()),
        );
        per_shard(
            &mut out,
            "tern_bytes_out_total",
            "counter",
            "Response bytes written, by shard.",
            &|_, m| Some(m.bytes_out.load(Ordering::Relaxed).to_string()),
        );
        per_shard(
            &mut out,
            "tern_shard_cpu_seconds_total",
            "counter",
            "CPU time of each shard thread (user and system).",
            &|_, m| {
                let tid = m.tid.load(Ordering::Relaxed);
                thread_cpu_ticks(tid).map(|t| (t as f64 / clock_ticks).to_string())
            },
        );
        per_shard(
            &mut out,
            "tern_cross_shard_messages_total",
            "counter",
            "Messages sent to another shard's queue, by sending shard.",
            &|_, m| Some(m.cross_shard.load(Ordering::Relaxed).to_string()),
        );
        type JournalField = fn(&JournalCounters) -> u64;
        let journal: [(&str, &str, JournalField); 4] = [
            (
                "tern_journal_records_total",
                "Records written to the shard journal.",
                |j| j.records,
            ),
            (
                "tern_journal_writes_total",
                "Durable writes of the shard journal (group commits).",
                |j| j.writes,
            ),
            (
                "tern_journal_written_bytes_total",
                "Bytes written to the shard journal.",
                |j| j.bytes_written,
            ),
            (
                "tern_journal_checkpoints_total",
                "Checkpoints of the shard journal.",
                |j| j.checkpoints,
            ),
        ];
        for (name, help, field) in journal {
            per_shard(&mut out, name, "counter", help, &|_, m| {
                m.journal
                    .load()
                    .as_ref()
                    .as_ref()
                    .map(|j| field(j).to_string())
            });
        }
        per_shard(
            &mut out,
            "tern_shard_queue_depth",
            "gauge",
            "Messages waiting in each shard's queue.",
            &|s, _| queue_depths.get(s).map(|d| d.to_string()),
        );
        let partitions: Vec<(usize, Arc<Vec<PartitionStats>>)> = self
            .shards
            .iter()
            .enumerate()
            .map(|(s, m)| (s, m.partitions.load_full()))
            .collect();
        type Field = fn(&PartitionStats) -> String;
        let fields: [(&str, &str, &str, Field); 8] = [
            (
                "tern_partition_log_start_offset",
                "gauge",
                "The first offset in the log.",
                |p| p.log_start_offset.to_string(),
            ),
            (
                "tern_partition_log_end_offset",
                "gauge",
                "The offset after the last record.",
                |p| p.log_end_offset.to_string(),
            ),
            (
                "tern_partition_high_watermark",
                "gauge",
                "The offset consumers read below.",
                |p| p.high_watermark.to_string(),
            ),
            (
                "tern_partition_size_bytes",
                "gauge",
                "Bytes of the partition's segments.",
                |p| p.size_bytes.to_string(),
            ),
            (
                "tern_partition_appended_bytes_total",
                "counter",
                "Batch bytes appended since the partition opened here.",
                |p| p.appended_bytes.to_string(),
            ),
            (
                "tern_partition_appended_batches_total",
                "counter",
                "Batches appended since the partition opened here.",
                |p| p.appended_batches.to_string(),
            ),
            (
                "tern_partition_isr_size",
                "gauge",
                "In-sync replicas (led partitions).",
                |p| p.isr.to_string(),
            ),
            (
                "tern_partition_under_replicated",
                "gauge",
                "1 when a led partition's ISR is smaller than its replicas.",
                |p| u8::from(p.isr < p.replicas).to_string(),
            ),
        ];
        self.render_groups(&mut out, &partitions);
        for (name, kind, help, value) in fields {
            header(&mut out, name, kind, help);
            for (s, list) in &partitions {
                for p in list.iter() {
                    let isr_only = name.contains("isr") || name.contains("under_replicated");
                    if isr_only && !p.leader {
                        continue;
                    }
                    let _ = writeln!(
                        out,
                        "{name}{{topic=\"{}\",partition=\"{}\",shard=\"{s}\"}} {}",
                        escape(&p.topic),
                        p.partition,
                        value(p)
                    );
                }
            }
        }
        out
    }
}

impl Metrics {
    /// Groups: members and state; lag per partition, from the committed offset and the high
    /// watermark the partition's leader published (where this broker leads it).
    fn render_groups(&self, out: &mut String, partitions: &[(usize, Arc<Vec<PartitionStats>>)]) {
        let groups: Vec<Arc<Vec<GroupStats>>> =
            self.shards.iter().map(|m| m.groups.load_full()).collect();
        let hw = |topic: &str, partition: i32| {
            partitions
                .iter()
                .flat_map(|(_, list)| list.iter())
                .find(|p| p.leader && p.topic == topic && p.partition == partition)
                .map(|p| p.high_watermark)
        };
        header(
            out,
            "tern_group_members",
            "gauge",
            "Members of each consumer group.",
        );
        for g in groups.iter().flat_map(|l| l.iter()) {
            let _ = writeln!(
                out,
                "tern_group_members{{group=\"{}\",state=\"{}\"}} {}",
                escape(&g.group),
                g.state,
                g.members
            );
        }
        header(
            out,
            "tern_group_lag",
            "gauge",
            "Records between a group's committed offset and the high watermark, per partition.",
        );
        for g in groups.iter().flat_map(|l| l.iter()) {
            for ((topic, partition), offset) in &g.committed {
                let Some(hw) = hw(topic, *partition) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "tern_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {}",
                    escape(&g.group),
                    escape(topic),
                    (hw - offset).max(0)
                );
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a thread of this process, in clock ticks (`/proc/self/task/<tid>/stat`).
fn thread_cpu_ticks(tid: i32) -> Option<u64> {
    if tid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The metrics listener: a thread answering `GET /metrics` (and 404 otherwise).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How often the metrics thread looks for a connection or the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

impl MetricsServer {
    /// Binds `addr` and serves `render()` at `/metrics` until [`MetricsServer::stop`].
    pub fn start(
        addr: SocketAddr,
        render: impl Fn() -> String + Send + 'static,
    ) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tern-metrics".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Err(e) = answer(stream, &render) {
                                tracing::debug!(error = %e, "metrics request");
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(ACCEPT_POLL)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics listener");
                            std::thread::sleep(ACCEPT_POLL);
                        }
                    }
                }
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when port 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Longest request head read.
const REQUEST_HEAD_MAX: usize = 8 << 10;

/// Reads one HTTP request head and answers it, then closes.
fn answer(mut stream: TcpStream, render: &impl Fn() -> String) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_HEAD_MAX {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, kind, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "only /metrics is served\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the exposition: counters and a cumulative histogram per API, partition figures
    /// with escaped labels, only led partitions' ISR.
    #[test]
    fn renders_counters_histograms_and_partitions() {
        let m = Metrics::new(2);
        m.shards[0].request(ApiKey::Produce, 100, Duration::from_micros(300));
        m.shards[0].request(ApiKey::Produce, 50, Duration::from_millis(3));
        m.shards[1].request(ApiKey::Fetch, 10, Duration::from_secs(30));
        m.shards[1].bytes_out(7);
        m.shards[1].cross_shard_message();
        m.shards[0].publish_groups(vec![GroupStats {
            group: "g".into(),
            state: "Stable",
            members: 2,
            committed: vec![(("a\"b".into(), 3), 5), (("elsewhere".into(), 0), 1)],
        }]);
        m.shards[0].publish_journal(Some(JournalCounters {
            records: 5,
            writes: 2,
            bytes_written: 8192,
            checkpoints: 1,
        }));
        m.shards[1].publish_partitions(vec![PartitionStats {
            topic: "a\"b".into(),
            partition: 3,
            log_start_offset: 1,
            log_end_offset: 9,
            high_watermark: 8,
            size_bytes: 4096,
            appended_bytes: 700,
            appended_batches: 2,
            leader: true,
            isr: 1,
            replicas: 3,
        }]);
        let text = m.render(&[0, 4]);
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        has(r#"tern_requests_total{shard="0",api="Produce"} 2"#);
        has(r#"tern_request_latency_seconds_bucket{shard="0",api="Produce",le="0.00025"} 0"#);
        has(r#"tern_request_latency_seconds_bucket{shard="0",api="Produce",le="0.0005"} 1"#);
        has(r#"tern_request_latency_seconds_bucket{shard="0",api="Produce",le="0.005"} 2"#);
        has(r#"tern_request_latency_seconds_bucket{shard="1",api="Fetch",le="10"} 0"#);
        has(r#"tern_request_latency_seconds_bucket{shard="1",api="Fetch",le="+Inf"} 1"#);
        has(r#"tern_bytes_in_total{shard="0"} 150"#);
        has(r#"tern_bytes_out_total{shard="1"} 7"#);
        has(r#"tern_shard_queue_depth{shard="1"} 4"#);
        has(r#"tern_cross_shard_messages_total{shard="1"} 1"#);
        has(r#"tern_group_members{group="g",state="Stable"} 2"#);
        has(r#"tern_group_lag{group="g",topic="a\"b",partition="3"} 3"#);
        assert!(
            !text.contains("elsewhere"),
            "no lag for a partition led elsewhere"
        );
        has(r#"tern_journal_writes_total{shard="0"} 2"#);
        assert!(
            !text.contains(r#"tern_journal_writes_total{shard="1"}"#),
            "no journal"
        );
        has(r#"tern_partition_log_end_offset{topic="a\"b",partition="3",shard="1"} 9"#);
        has(r#"tern_partition_under_replicated{topic="a\"b",partition="3",shard="1"} 1"#);
        assert!(
            !text.contains("api=\"Metadata\""),
            "APIs never asked are left out"
        );
    }

    /// Guards `deploy/grafana-tern.json` against the exposition: every metric its queries
    /// name is one `/metrics` has.
    #[test]
    fn the_dashboard_names_metrics_that_exist() {
        let dashboard = include_str!("../../deploy/grafana-tern.json");
        let m = Metrics::new(1);
        m.shards[0].request(ApiKey::Produce, 1, Duration::ZERO);
        let text = m.render(&[0]);
        let mut rest = dashboard;
        let mut names = 0;
        while let Some(at) = rest.find("tern_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let base = name.trim_end_matches("_bucket");
            names += 1;
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "the dashboard names {name}, which /metrics does not have"
            );
        }
        assert!(names >= 8, "{names}");
    }

    #[test]
    fn reads_this_threads_cpu_time() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        assert!(thread_cpu_ticks(tid).is_some());
        assert_eq!(thread_cpu_ticks(0), None);
    }
}
