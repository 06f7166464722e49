//! The producer loop: a timeline of intended send times, batching, and a sink that sends.
//!
//! **No coordinated omission.** At a fixed rate, record *i* is due at `start + i / rate`
//! whatever happened before; a producer that falls behind (the broker is slow and the
//! in-flight window is full, or the thread was descheduled) makes up the records it owes as
//! soon as it can, and every latency is measured from the record's *intended* time. The lag
//! between intended time and the moment the record was actually handed over is reported on
//! its own as the publish delay (OMB's publishDelayLatency). Records that were due before the
//! end but never sent are counted (`unsent`), never silently dropped.
//!
//! With `producerRate: 0` there is no timeline: each record's intended time is the moment it
//! is created, records are created as fast as the sink takes them, and the sink's bounded
//! in-flight window is what holds the producer back (the latency then includes queueing).
//!
//! The loop owns no IO: time comes from a [`Clock`] and batches go to a [`Sink`], so tests
//! drive it with a virtual clock and a deliberately slow sink.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::batcher::{Batcher, SealedBatch};
use crate::spec::KeyDistributor;
use crate::stats::{latency_histogram, record_ns, Recorder};

/// Most records created in one turn of the loop before what is ready is sent.
const RECORDS_PER_TURN_MAX: u32 = 1024;
/// Most value bytes created in one turn (Kafka's default `max.request.size`).
const TURN_BYTES_MAX: usize = 1 << 20;

/// Time on the run's monotonic clock, in nanoseconds.
pub trait Clock {
    fn now_ns(&self) -> u64;
    fn sleep_until_ns(&mut self, t_ns: u64);
}

/// Where sealed batches go. `send` may block (a full in-flight window): that is the
/// back-pressure the loop measures.
pub trait Sink {
    type Error;
    fn send(&mut self, batches: Vec<SealedBatch>) -> Result<(), Self::Error>;
}

/// The intended send times of one producer.
#[derive(Debug, Clone)]
pub struct Schedule {
    start_ns: u64,
    /// 0: no timeline (as fast as possible).
    interval_ns: f64,
    issued: u64,
}

impl Schedule {
    /// `rate_per_s` records per second from `start_ns`; 0 = no timeline.
    pub fn new(start_ns: u64, rate_per_s: f64) -> Schedule {
        let interval_ns = if rate_per_s > 0.0 {
            1e9 / rate_per_s
        } else {
            0.0
        };
        Schedule {
            start_ns,
            interval_ns,
            issued: 0,
        }
    }

    fn at(&self, i: u64) -> u64 {
        self.start_ns + (i as f64 * self.interval_ns) as u64
    }

    /// The intended time of the next record if it is due at `now_ns` and falls before
    /// `end_ns` (without a timeline: `now_ns`, until `end_ns`).
    pub fn next_due(&self, now_ns: u64, end_ns: u64) -> Option<u64> {
        if self.interval_ns == 0.0 {
            return (now_ns < end_ns).then_some(now_ns);
        }
        let t = self.at(self.issued);
        (t <= now_ns && t < end_ns).then_some(t)
    }

    /// When the next record is due (`now_ns` without a timeline).
    pub fn next_at(&self, now_ns: u64) -> u64 {
        if self.interval_ns == 0.0 {
            now_ns
        } else {
            self.at(self.issued)
        }
    }

    pub fn advance(&mut self) {
        self.issued += 1;
    }

    /// Records created so far.
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// Records the timeline had due before `end_ns` but that were never created.
    pub fn owed_before(&self, end_ns: u64) -> u64 {
        if self.interval_ns == 0.0 || end_ns <= self.start_ns {
            return 0;
        }
        let due = ((end_ns - self.start_ns) as f64 / self.interval_ns).ceil() as u64;
        due.saturating_sub(self.issued)
    }
}

/// Picks each record's partition and key.
#[derive(Debug)]
pub struct Partitioner {
    kind: KeyDistributor,
    partitions: u32,
    sticky: u32,
    key: Vec<u8>,
}

impl Partitioner {
    pub fn new(kind: KeyDistributor, partitions: u32, first: u32) -> Partitioner {
        Partitioner {
            kind,
            partitions: partitions.max(1),
            sticky: first % partitions.max(1),
            key: Vec::with_capacity(24),
        }
    }

    /// The partition and key of record number `seq`, intended at `intended_ns`.
    pub fn pick(&mut self, seq: u64, intended_ns: u64) -> (u32, Option<&[u8]>) {
        use std::io::Write;
        self.key.clear();
        match self.kind {
            KeyDistributor::NoKey => (self.sticky, None),
            KeyDistributor::KeyRoundRobin => {
                let _ = write!(self.key, "{seq}");
                ((seq % u64::from(self.partitions)) as u32, Some(&self.key))
            }
            KeyDistributor::RandomNano => {
                let _ = write!(self.key, "{intended_ns}");
                let h = intended_ns.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
                ((h % u64::from(self.partitions)) as u32, Some(&self.key))
            }
        }
    }

    /// A batch of `partition` was sealed or sent: the sticky partitioner moves on.
    pub fn batch_done(&mut self, partition: u32) {
        if partition == self.sticky {
            self.sticky = (self.sticky + 1) % self.partitions;
        }
    }
}

/// What one producer is asked to do.
#[derive(Debug)]
pub struct ProducerPlan<'a> {
    pub rate_per_s: f64,
    pub start_ns: u64,
    /// When to stop creating records; `u64::MAX` until the run knows (a backlog phase).
    pub end_ns: &'a AtomicU64,
}

/// How a producer's timeline ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerOutcome {
    pub records_created: u64,
    /// Due before the end by the timeline but never created (the producer fell behind).
    pub records_unsent: u64,
}

/// Runs one producer until its end, then flushes what is open.
pub fn run<C: Clock, S: Sink>(
    clock: &mut C,
    sink: &mut S,
    plan: &ProducerPlan<'_>,
    batcher: &mut Batcher,
    partitioner: &mut Partitioner,
    payload: &[u8],
    recorder: &Recorder,
) -> Result<ProducerOutcome, S::Error> {
    let mut schedule = Schedule::new(plan.start_ns, plan.rate_per_s);
    let mut delay = latency_histogram();
    // Once the end has passed, one more turn creates what was due before it (a bounded
    // amount); what a producer that fell far behind still owes after that is `unsent`.
    let mut final_turn_done = false;
    loop {
        let now = clock.now_ns();
        let end = plan.end_ns.load(Ordering::Acquire);
        let over = now >= end;
        let (mut made, mut made_bytes) = (0, 0);
        while !final_turn_done && made < RECORDS_PER_TURN_MAX && made_bytes < TURN_BYTES_MAX {
            let Some(t) = schedule.next_due(now, end) else {
                break;
            };
            let (p, key) = partitioner.pick(schedule.issued(), t);
            let sealed = batcher.append(p, t, now, key, payload);
            schedule.advance();
            record_ns(&mut delay, now - t);
            made += 1;
            made_bytes += payload.len();
            if sealed {
                partitioner.batch_done(p);
            }
        }
        batcher.seal_expired(now);
        if over {
            final_turn_done = true;
            batcher.seal_all();
        }
        let ready = batcher.take_ready();
        if !ready.is_empty() {
            for b in &ready {
                partitioner.batch_done(b.partition);
            }
            flush_delay(&mut delay, recorder);
            sink.send(ready)?;
            continue;
        }
        if over {
            break;
        }
        let mut wake = schedule.next_at(now).min(end);
        if let Some(d) = batcher.next_linger_deadline_ns() {
            wake = wake.min(d);
        }
        if wake > now {
            clock.sleep_until_ns(wake);
        }
    }
    flush_delay(&mut delay, recorder);
    let end = plan.end_ns.load(Ordering::Acquire);
    Ok(ProducerOutcome {
        records_created: schedule.issued(),
        records_unsent: schedule.owed_before(end),
    })
}

fn flush_delay(delay: &mut Histogram<u64>, recorder: &Recorder) {
    if !delay.is_empty() {
        recorder.with(|i| {
            let _ = i.publish_delay_us.add(&*delay);
        });
        delay.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// Virtual time: sleeping jumps the clock.
    #[derive(Debug, Clone, Default)]
    struct VirtualClock(Rc<Cell<u64>>);

    impl Clock for VirtualClock {
        fn now_ns(&self) -> u64 {
            self.0.get()
        }
        fn sleep_until_ns(&mut self, t: u64) {
            self.0.set(self.0.get().max(t));
        }
    }

    /// A broker that takes `cost_ns` per request and acknowledges synchronously.
    #[derive(Debug)]
    struct SlowSink {
        clock: VirtualClock,
        cost_ns: u64,
        recorder: Rc<Recorder>,
        requests: u64,
    }

    impl Sink for SlowSink {
        type Error = std::convert::Infallible;
        fn send(&mut self, batches: Vec<SealedBatch>) -> Result<(), Self::Error> {
            let now = self.clock.0.get() + self.cost_ns;
            self.clock.0.set(now);
            self.requests += 1;
            self.recorder.with(|i| {
                for b in &batches {
                    for t in &b.intended_ns {
                        record_ns(&mut i.publish_us, now - t);
                        i.published_records += 1;
                    }
                }
            });
            Ok(())
        }
    }

    fn drive(rate: f64, cost_ns: u64, seconds: u64) -> (ProducerOutcome, Rc<Recorder>, u64) {
        let clock = VirtualClock::default();
        let recorder = Rc::new(Recorder::default());
        let mut sink = SlowSink {
            clock: clock.clone(),
            cost_ns,
            recorder: Rc::clone(&recorder),
            requests: 0,
        };
        let end = AtomicU64::new(seconds * 1_000_000_000);
        let plan = ProducerPlan {
            rate_per_s: rate,
            start_ns: 0,
            end_ns: &end,
        };
        // 1 ms linger, batches of up to 64 KiB of 1 KiB records.
        let mut batcher = Batcher::new(4, 64 << 10, 1_000_000, 0);
        let mut part = Partitioner::new(KeyDistributor::NoKey, 4, 0);
        let out = run(
            &mut clock.clone(),
            &mut sink,
            &plan,
            &mut batcher,
            &mut part,
            &[0; 1024],
            &recorder,
        )
        .unwrap_or_else(|e| match e {});
        (out, recorder, sink.requests)
    }

    /// Guards the timeline under a fast broker: every scheduled record is sent, latency is
    /// the linger plus the request cost.
    #[test]
    fn fast_sink_keeps_rate_and_latency_low() {
        let (out, rec, _) = drive(10_000.0, 10_000, 2);
        assert_eq!(out.records_created, 20_000);
        assert_eq!(out.records_unsent, 0);
        let i = rec.take();
        assert_eq!(i.published_records, 20_000);
        assert!(
            i.publish_us.value_at_quantile(0.99) <= 1_100,
            "{}",
            i.publish_us.value_at_quantile(0.99)
        );
        assert!(i.publish_delay_us.value_at_quantile(0.99) <= 1);
    }

    /// Guards coordinated omission: a broker slower than the rate makes latency (from the
    /// intended time) and schedule delay grow, while the records owed are still sent (in
    /// larger batches) and none disappears from the count.
    #[test]
    fn slow_sink_grows_latency_without_dropping_sends() {
        // 10 000 records/s, 1 KiB each; each request costs 20 ms, so at most 50 requests/s,
        // and each catches up on the 20 ms (200 records) owed.
        let (out, rec, requests) = drive(10_000.0, 20_000_000, 2);
        let i = rec.take();
        assert_eq!(out.records_created + out.records_unsent, 20_000);
        assert_eq!(i.published_records, out.records_created);
        assert!(out.records_unsent <= 200, "{out:?}");
        assert!(requests <= 101, "{requests}");
        // Latency measured from intended time includes the wait behind slow requests.
        assert!(i.publish_us.value_at_quantile(0.5) >= 20_000);
        assert!(i.publish_delay_us.value_at_quantile(0.9) >= 5_000);
    }

    /// Guards the growth of latency under overload: when the broker is slower than the
    /// rate for good, latency climbs over the run instead of staying flat.
    #[test]
    fn overload_latency_climbs() {
        // A turn creates at most 1 MiB (1024 records of 1 KiB), sent in one request of
        // 250 ms: 4096 records/s < 10 000 records/s scheduled.
        let (out, rec, _) = drive(10_000.0, 250_000_000, 3);
        let i = rec.take();
        assert!(out.records_unsent > 0, "{out:?}");
        assert_eq!(out.records_created + out.records_unsent, 30_000);
        assert_eq!(i.published_records, out.records_created);
        assert!(i.publish_us.max() > 2 * i.publish_us.value_at_quantile(0.1));
    }

    /// Guards the unthrottled mode: records are created as fast as the sink takes them.
    #[test]
    fn unthrottled_is_bounded_by_the_sink() {
        let (out, rec, requests) = drive(0.0, 1_000_000, 1);
        let i = rec.take();
        assert_eq!(out.records_unsent, 0);
        assert_eq!(i.published_records, out.records_created);
        // 1 MiB per 1 ms request.
        assert!((900..=1001).contains(&requests), "{requests}");
        assert!(out.records_created >= 900 * 1024, "{out:?}");
    }
}
