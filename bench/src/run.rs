//! `tern bench run`: one workload against one broker, from topic creation to report.
//!
//! Threads, not tasks: each producer is one thread that creates records on its timeline and
//! writes pipelined Produce requests, plus one thread reading its acknowledgements; each
//! consumer is one thread in a Fetch long-poll loop. On a 2-core machine shared with the
//! broker these threads sleep in the kernel almost all the time (sleeping until the next
//! intended send, blocked on a full in-flight window or on a Fetch), which costs less CPU
//! than an async runtime's polling, and needs no runtime at all.
//!
//! The main thread is the collector: every `TICK_MS` (100 ms) it takes what each thread
//! recorded, adds it to the current window (closed every `window_s`, and at every change of phase),
//! prints a progress line, and moves the run through its phases: `backlog` (producing only,
//! until `consumerBacklogSizeGB` is written), `warmup` (not reported), `test` (the figures)
//! and `drain` (producers done; the acknowledgements and consumption of the last records).
//! Latency figures cover `test` and `drain` (a record sent in the test is measured however
//! late its acknowledgement comes); throughput figures cover `test` only.
//!
//! Consumers have no consumer group: the consumers of one subscription split the topic's
//! partitions between them statically and read from offset 0 (the topics are created for
//! the run, so that is the start of the data).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::batcher::Batcher;
use crate::broker_report::{BrokerReport, Window};
use crate::machine::MachineInfo;
use crate::producer::{self, Clock, Partitioner, ProducerOutcome, ProducerPlan};
use crate::spec::Workload;
use crate::stats::{latency_histogram, record_ns, Interval, Recorder};
use crate::wire::{self, FetchConn, RoutedProducer, WireError};

/// How often the collector wakes.
const TICK_MS: u64 = 100;
/// How long after the producers are done the consumers may take to read the rest.
const DRAIN_S_MAX: f64 = 60.0;
/// How long building a backlog may take before the run goes on with what it has.
const BACKLOG_S_MAX: f64 = 600.0;
/// Time between creating the threads and the first intended send.
const START_DELAY_MS: u64 = 100;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
    #[error("a {0} thread panicked")]
    Panic(&'static str),
}

/// The run's monotonic clock: nanoseconds since the run started.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
    /// Unix milliseconds at clock 0 (for record timestamps).
    pub unix_ms_at_zero: i64,
}

impl RunClock {
    pub fn new() -> RunClock {
        RunClock {
            start: Instant::now(),
            unix_ms_at_zero: crate::workload::now_ms(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

impl Default for RunClock {
    fn default() -> RunClock {
        RunClock::new()
    }
}

impl Clock for RunClock {
    fn now_ns(&self) -> u64 {
        RunClock::now_ns(self)
    }
    fn sleep_until_ns(&mut self, t_ns: u64) {
        let now = RunClock::now_ns(self);
        if t_ns > now {
            std::thread::sleep(Duration::from_nanos(t_ns - now));
        }
    }
}

/// How to run a workload (the command line's overrides).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub broker: String,
    /// Replaces `testDurationMinutes` (quick runs).
    pub duration_s: Option<f64>,
    /// Replaces `warmupDurationMinutes`.
    pub warmup_s: Option<f64>,
    /// Replaces `consumerBacklogSizeGB` (quick runs).
    pub backlog_gb: Option<f64>,
    pub window_s: f64,
    pub keep_topics: bool,
    /// Print a progress line on stderr.
    pub progress: bool,
    /// What the broker is, when the caller knows (the suite started it).
    pub broker_software: Option<String>,
    /// The broker's process ids when it runs on this machine (one per node of a local
    /// cluster): their CPU time over the test phase is reported, summed and per process.
    pub broker_pids: Vec<u32>,
}

/// The phase of a run a window belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Backlog,
    Warmup,
    Test,
    Drain,
}

/// Which counters a recorder's numbers belong to.
#[derive(Debug, Clone, Copy)]
enum Tag {
    Producer { topic: usize },
    Consumer { topic: usize, subscription: usize },
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    published: u64,
    errors: u64,
    consumed: u64,
}

/// Runs `w` against `opts.broker` and reports.
pub fn run(w: &Workload, opts: &RunOptions) -> Result<BrokerReport, RunError> {
    let payload = w.payload()?;
    let started_unix_ms = crate::workload::now_ms();
    let mut admin = wire::admin(&opts.broker)?;
    let prefix = format!(
        "tern-bench-{}-{}",
        std::process::id(),
        started_unix_ms % 1_000_000_000
    );
    let mut topics = Vec::new();
    for t in 0..w.topics {
        let name = format!("{prefix}-{t}");
        let layout = wire::create_topic(
            &mut admin,
            &name,
            w.partitions_per_topic,
            w.driver.replication_factor,
            &w.driver.topic_config,
        )?;
        topics.push(layout);
    }
    let result = Runner::new(w, opts, &topics, payload).and_then(Runner::run);
    if !opts.keep_topics {
        for t in &topics {
            if let Err(e) = wire::delete_topic(&mut admin, &t.name) {
                eprintln!("warning: deleting topic {}: {e}", t.name);
            }
        }
    }
    let mut report = result?;
    report.started_unix_ms = started_unix_ms;
    Ok(report)
}

struct Runner<'a> {
    w: &'a Workload,
    opts: &'a RunOptions,
    topics: &'a [wire::TopicLayout],
    payload: Arc<Vec<u8>>,
    clock: RunClock,
    end_ns: Arc<AtomicU64>,
    stop_consumers: Arc<AtomicBool>,
    recorders: Vec<(Tag, Arc<Recorder>)>,
    counts_producers: Vec<Counts>,
    counts_consumers: Vec<Vec<Counts>>,
    producers: Vec<JoinHandle<Result<ProducerOutcome, WireError>>>,
    consumers: Vec<JoinHandle<Result<(), WireError>>>,
    /// Each broker process's (user, system) CPU time as the test phase started and ended.
    cpu_samples: Vec<(CpuSample, CpuSample)>,
}

type CpuSample = Option<(Duration, Duration)>;

/// The window being filled.
struct OpenWindow {
    phase: Phase,
    start_ns: u64,
    data: Interval,
}

impl<'a> Runner<'a> {
    fn new(
        w: &'a Workload,
        opts: &'a RunOptions,
        topics: &'a [wire::TopicLayout],
        payload: Vec<u8>,
    ) -> Result<Runner<'a>, RunError> {
        Ok(Runner {
            w,
            opts,
            topics,
            payload: Arc::new(payload),
            clock: RunClock::new(),
            end_ns: Arc::new(AtomicU64::new(u64::MAX)),
            stop_consumers: Arc::new(AtomicBool::new(false)),
            cpu_samples: vec![(None, None); opts.broker_pids.len()],
            recorders: Vec::new(),
            counts_producers: vec![Counts::default(); topics.len()],
            counts_consumers: vec![
                vec![Counts::default(); w.subscriptions_per_topic as usize];
                topics.len()
            ],
            producers: Vec::new(),
            consumers: Vec::new(),
        })
    }

    fn warmup_ns(&self) -> u64 {
        let s = self
            .opts
            .warmup_s
            .unwrap_or(self.w.warmup_duration_minutes * 60.0);
        (s.max(0.0) * 1e9) as u64
    }

    fn test_ns(&self) -> u64 {
        let s = self
            .opts
            .duration_s
            .unwrap_or(self.w.test_duration_minutes * 60.0);
        (s.max(0.001) * 1e9) as u64
    }

    fn backlog_bytes(&self) -> u64 {
        (self
            .opts
            .backlog_gb
            .unwrap_or(self.w.consumer_backlog_size_gb)
            .max(0.0)
            * 1e9) as u64
    }

    fn start_producers(&mut self, start_ns: u64) -> Result<(), RunError> {
        let d = &self.w.driver;
        let rate = self.w.producer_rate / f64::from(self.w.producers_total());
        let mut conns = Vec::new();
        for (t, topic) in self.topics.iter().enumerate() {
            for _ in 0..self.w.producers_per_topic {
                let rec = Arc::new(Recorder::default());
                self.recorders
                    .push((Tag::Producer { topic: t }, Arc::clone(&rec)));
                let conn = RoutedProducer::connect(
                    &topic.leaders,
                    &topic.name,
                    d.acks.0,
                    d.max_in_flight_requests,
                    &rec,
                    self.clock,
                )?;
                conns.push((conn, rec));
            }
        }
        for (i, (mut conn, rec)) in conns.into_iter().enumerate() {
            let batcher = Batcher::new(
                self.w.partitions_per_topic,
                d.batch_size_bytes as usize,
                d.linger_ms * 1_000_000,
                self.clock.unix_ms_at_zero,
            )
            .with_codec(d.codec());
            let mut partitioner = Partitioner::new(
                self.w.key_distributor,
                self.w.partitions_per_topic,
                i as u32,
            );
            let (payload, end, mut clock) = (
                Arc::clone(&self.payload),
                Arc::clone(&self.end_ns),
                self.clock,
            );
            let handle = std::thread::Builder::new()
                .name(format!("bench-producer-{i}"))
                .spawn(move || {
                    let plan = ProducerPlan {
                        rate_per_s: rate,
                        start_ns,
                        end_ns: &end,
                    };
                    let mut batcher = batcher;
                    let out = producer::run(
                        &mut clock,
                        &mut conn,
                        &plan,
                        &mut batcher,
                        &mut partitioner,
                        &payload,
                        &rec,
                    );
                    let finished = conn.finish();
                    let out = out?;
                    finished?;
                    Ok(out)
                })
                .map_err(RunError::Thread)?;
            self.producers.push(handle);
        }
        Ok(())
    }

    fn start_consumers(&mut self) -> Result<(), RunError> {
        let per_sub = self.w.consumer_per_subscription;
        let mut conns = Vec::new();
        for (t, topic) in self.topics.iter().enumerate() {
            for s in 0..self.w.subscriptions_per_topic as usize {
                for c in 0..per_sub {
                    let parts = (0..self.w.partitions_per_topic)
                        .filter(|p| p % per_sub == c)
                        .map(|p| p as i32);
                    // One fetch connection per leader of this consumer's partitions.
                    for (leader, parts) in crate::wire::by_leader(&topic.leaders, parts) {
                        let conn = FetchConn::connect(
                            leader,
                            &topic.name,
                            parts,
                            self.w.driver.fetch_max_wait_ms,
                            self.w.message_size,
                        )?;
                        let rec = Arc::new(Recorder::default());
                        self.recorders.push((
                            Tag::Consumer {
                                topic: t,
                                subscription: s,
                            },
                            Arc::clone(&rec),
                        ));
                        conns.push((conn, rec));
                    }
                }
            }
        }
        for (i, (mut conn, rec)) in conns.into_iter().enumerate() {
            let (stop, clock) = (Arc::clone(&self.stop_consumers), self.clock);
            let handle = std::thread::Builder::new()
                .name(format!("bench-consumer-{i}"))
                .spawn(move || {
                    let mut e2e = latency_histogram();
                    while !stop.load(Ordering::Acquire) {
                        let mut times = Vec::new();
                        let got = conn.fetch(|t| times.push(t))?;
                        let now = clock.now_ns();
                        for t in times {
                            record_ns(&mut e2e, now.saturating_sub(t));
                        }
                        rec.with(|iv| {
                            let _ = iv.end_to_end_us.add(&e2e);
                            iv.consumed_records += got.records;
                            iv.consumed_bytes += got.bytes;
                        });
                        e2e.reset();
                    }
                    Ok(())
                })
                .map_err(RunError::Thread)?;
            self.consumers.push(handle);
        }
        Ok(())
    }

    /// Moves what the threads recorded into `window` and the cumulative counts.
    fn collect(&mut self, window: &mut Interval) {
        for (tag, rec) in &self.recorders {
            let iv = rec.take();
            match *tag {
                Tag::Producer { topic } => {
                    let c = &mut self.counts_producers[topic];
                    c.published += iv.published_records;
                    c.errors += iv.publish_error_records;
                }
                Tag::Consumer {
                    topic,
                    subscription,
                } => {
                    self.counts_consumers[topic][subscription].consumed += iv.consumed_records;
                }
            }
            window.merge(&iv);
        }
    }

    fn published(&self) -> u64 {
        self.counts_producers.iter().map(|c| c.published).sum()
    }

    fn consumed(&self) -> u64 {
        self.counts_consumers
            .iter()
            .flatten()
            .map(|c| c.consumed)
            .sum()
    }

    /// Every subscription has read every acknowledged record of its topic.
    fn all_consumed(&self) -> bool {
        self.counts_consumers
            .iter()
            .zip(&self.counts_producers)
            .all(|(subs, p)| subs.iter().all(|c| c.consumed >= p.published))
    }

    fn run(mut self) -> Result<BrokerReport, RunError> {
        let w = self.w;
        let backlog_bytes = self.backlog_bytes();
        let has_consumers = w.subscriptions_per_topic > 0;
        if backlog_bytes == 0 && has_consumers {
            self.start_consumers()?;
        }
        let t0 = self.clock.now_ns() + START_DELAY_MS * 1_000_000;
        let (warmup_ns, test_ns) = (self.warmup_ns(), self.test_ns());
        let mut measure_from = u64::MAX;
        let mut phase = if backlog_bytes > 0 {
            Phase::Backlog
        } else {
            measure_from = t0 + warmup_ns;
            self.end_ns.store(measure_from + test_ns, Ordering::Release);
            if warmup_ns > 0 {
                Phase::Warmup
            } else {
                Phase::Test
            }
        };
        self.start_producers(t0)?;
        if phase == Phase::Test {
            self.sample_broker_cpu(Phase::Test);
        }
        let window_ns = (self.opts.window_s.max(0.1) * 1e9) as u64;
        let mut windows: Vec<(Phase, u64, u64, Interval)> = Vec::new();
        let mut open = OpenWindow {
            phase,
            start_ns: t0,
            data: Interval::default(),
        };
        let mut backlog_start: Option<(u64, u64)> = None;
        let mut backlog_drain_s = None;
        let mut drain_deadline = u64::MAX;
        let mut failed_early = false;
        let tty = std::io::stderr().is_terminal();
        let mut last_progress = 0u64;
        loop {
            std::thread::sleep(Duration::from_millis(TICK_MS));
            // Whether the producers are done is read before the clock: a producer that
            // finished at the end of the timeline then never looks early (read the other
            // way round, one that finished between the two reads ended the run without
            // its drain phase and left records unconsumed).
            let producers_done = self.producers.iter().all(JoinHandle::is_finished);
            let now = self.clock.now_ns();
            self.collect(&mut open.data);
            let consumers_failed = self.consumers.iter().any(JoinHandle::is_finished);
            let end = self.end_ns.load(Ordering::Acquire);
            if (producers_done && now < end) || consumers_failed {
                failed_early = true;
            }
            let next = match phase {
                Phase::Backlog => {
                    let written = self.published() * w.message_size;
                    if written >= backlog_bytes || now >= t0 + (BACKLOG_S_MAX * 1e9) as u64 {
                        self.start_consumers()?;
                        backlog_start = Some((now, self.published()));
                        measure_from = now + warmup_ns;
                        self.end_ns.store(measure_from + test_ns, Ordering::Release);
                        Some(if warmup_ns > 0 {
                            Phase::Warmup
                        } else {
                            Phase::Test
                        })
                    } else {
                        None
                    }
                }
                Phase::Warmup => (now >= measure_from).then_some(Phase::Test),
                Phase::Test => (now >= end).then_some(Phase::Drain),
                Phase::Drain => None,
            };
            if let Some((start, backlog_records)) = backlog_start {
                let subs = u64::from(w.subscriptions_per_topic);
                if backlog_drain_s.is_none() && self.consumed() >= backlog_records * subs {
                    backlog_drain_s = Some((now - start) as f64 / 1e9);
                }
            }
            if next.is_some() || now >= open.start_ns + window_ns {
                let done = std::mem::replace(
                    &mut open,
                    OpenWindow {
                        phase: next.unwrap_or(phase),
                        start_ns: now,
                        data: Interval::default(),
                    },
                );
                windows.push((done.phase, done.start_ns, now, done.data));
            }
            if let Some(n) = next {
                self.sample_broker_cpu(n);
                phase = n;
            }
            if self.opts.progress
                && (now - last_progress >= 1_000_000_000
                    || !tty && now - last_progress >= window_ns)
            {
                last_progress = now;
                self.progress(phase, now, t0, end, &windows, tty);
            }
            if failed_early {
                break;
            }
            if phase == Phase::Drain && producers_done {
                if drain_deadline == u64::MAX {
                    drain_deadline = now + (DRAIN_S_MAX * 1e9) as u64;
                }
                if !has_consumers || self.all_consumed() || now >= drain_deadline {
                    break;
                }
            }
        }
        if self.opts.progress && tty {
            eprintln!();
        }
        self.end_ns.store(0, Ordering::Release);
        self.stop_consumers.store(true, Ordering::Release);
        let mut outcomes = Vec::new();
        let mut first_error = None;
        for h in self.producers.drain(..) {
            match h.join() {
                Ok(Ok(o)) => outcomes.push(o),
                Ok(Err(e)) => first_error = first_error.or(Some(RunError::Wire(e))),
                Err(_) => first_error = first_error.or(Some(RunError::Panic("producer"))),
            }
        }
        for h in self.consumers.drain(..) {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => first_error = first_error.or(Some(RunError::Wire(e))),
                Err(_) => first_error = first_error.or(Some(RunError::Panic("consumer"))),
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let now = self.clock.now_ns();
        self.collect(&mut open.data);
        windows.push((open.phase, open.start_ns, now, open.data));
        let unsent = outcomes.iter().map(|o| o.records_unsent).sum();
        let created = outcomes.iter().map(|o| o.records_created).sum();
        Ok(self.report(windows, t0, created, unsent, backlog_drain_s))
    }

    fn progress(
        &self,
        phase: Phase,
        now: u64,
        t0: u64,
        end: u64,
        windows: &[(Phase, u64, u64, Interval)],
        tty: bool,
    ) {
        let elapsed = now.saturating_sub(t0) as f64 / 1e9;
        let total = if end == u64::MAX {
            f64::NAN
        } else {
            end.saturating_sub(t0) as f64 / 1e9
        };
        let last = windows.last().map(|(_, s, e, d)| {
            let secs = (e - s) as f64 / 1e9;
            let rate = d.published_records as f64 / secs;
            let cons = d.consumed_records as f64 / secs;
            let p99 = if d.publish_us.is_empty() {
                0.0
            } else {
                d.publish_us.value_at_quantile(0.99) as f64 / 1000.0
            };
            (rate, cons, p99)
        });
        let (rate, cons, p99) = last.unwrap_or((0.0, 0.0, 0.0));
        let mb = |r: f64| r * self.w.message_size as f64 / 1e6;
        let subs = u64::from(self.w.subscriptions_per_topic.max(1));
        let backlog = self.published().saturating_sub(self.consumed() / subs);
        let line = format!(
            "[{elapsed:>6.1}/{total:.0} s {phase:?}] publish {rate:>9.0} rec/s {:>7.1} MB/s \
             p99 {p99:>8.2} ms | consume {cons:>9.0} rec/s | backlog {backlog} rec",
            mb(rate),
        );
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// Samples the brokers' CPU time as the test phase starts and as it ends.
    fn sample_broker_cpu(&mut self, next: Phase) {
        for (k, &pid) in self.opts.broker_pids.iter().enumerate() {
            let sample = match crate::cpu::process_cpu_split(pid) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("broker CPU: cannot read pid {pid}: {e}");
                    None
                }
            };
            match next {
                Phase::Test => self.cpu_samples[k].0 = sample,
                Phase::Drain => self.cpu_samples[k].1 = sample,
                _ => {}
            }
        }
    }

    /// Each broker process's CPU over the test phase (all of them, or none).
    fn broker_cpu(&self, test_s: f64, bytes: u64) -> Vec<crate::broker_report::BrokerCpu> {
        let mut out = Vec::new();
        for (&pid, samples) in self.opts.broker_pids.iter().zip(&self.cpu_samples) {
            let (Some(start), Some(end)) = *samples else {
                return Vec::new();
            };
            out.push(crate::broker_report::BrokerCpu::between(
                pid, start, end, test_s, bytes,
            ));
        }
        out
    }

    fn report(
        &self,
        windows: Vec<(Phase, u64, u64, Interval)>,
        t0: u64,
        created: u64,
        unsent: u64,
        backlog_drain_s: Option<f64>,
    ) -> BrokerReport {
        let w = self.w;
        let mut measured = Interval::default();
        let mut test_records = (0u64, 0u64, 0.0f64);
        let mut out_windows = Vec::new();
        for (phase, s, e, d) in &windows {
            let secs = (e.saturating_sub(*s)) as f64 / 1e9;
            if matches!(phase, Phase::Test | Phase::Drain) {
                measured.merge(d);
            }
            if *phase == Phase::Test {
                test_records.0 += d.published_records;
                test_records.1 += d.consumed_records;
                test_records.2 += secs;
            }
            out_windows.push(Window::of(
                *phase,
                s.saturating_sub(t0) as f64 / 1e9,
                secs,
                d,
                w.message_size,
            ));
        }
        let published: u64 = self.published();
        let errors: u64 = self.counts_producers.iter().map(|c| c.errors).sum();
        let consumed = self.consumed();
        let expected_consumed = published * u64::from(w.subscriptions_per_topic);
        BrokerReport::new(crate::broker_report::Totals {
            workload: w.clone(),
            broker_address: self.opts.broker.clone(),
            broker_software: self.opts.broker_software.clone(),
            machine: MachineInfo::probe(std::path::Path::new(".")),
            records_created: created,
            records_acked: published,
            records_publish_errors: errors,
            records_unsent: unsent,
            records_consumed: consumed,
            records_consumed_expected: expected_consumed,
            test_s: test_records.2,
            test_published: test_records.0,
            test_consumed: test_records.1,
            measured,
            windows: out_windows,
            backlog_drain_s,
            node_cpu: self.broker_cpu(test_records.2, test_records.0 * w.message_size),
        })
    }
}
