//! Latency histograms and counters, recorded by many threads and collected per window.
//!
//! Each producer, acknowledgement reader and consumer thread owns a [`Recorder`] and records
//! into it under a mutex nobody else holds except the collector, which swaps the interval
//! out once per window (HdrHistogram's interval-recorder pattern). Histograms count
//! microseconds with 3 significant digits; merging them is exact (same bucket layout), so a
//! merged p99 is the p99 of all samples, not an average of per-thread p99s.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram holds without saturating: one hour, in microseconds.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

/// An empty latency histogram (microseconds).
pub fn latency_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, LATENCY_US_MAX, 3) {
        Ok(h) => h,
        // Constant bounds that satisfy `new_with_bounds` (low >= 1, high >= 2 * low,
        // sigfig <= 5): a failure here is a bug in this line, not an input.
        Err(e) => unreachable!("latency histogram bounds: {e}"),
    }
}

/// What a thread recorded since the last collection.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Send (intended time) → acknowledgement.
    pub publish_us: Histogram<u64>,
    /// Intended send time → the record was handed to the batcher (OMB's publishDelayLatency).
    pub publish_delay_us: Histogram<u64>,
    /// Intended send time → consumed.
    pub end_to_end_us: Histogram<u64>,
    pub published_records: u64,
    pub published_bytes: u64,
    pub publish_error_records: u64,
    pub consumed_records: u64,
    pub consumed_bytes: u64,
}

impl Default for Interval {
    fn default() -> Interval {
        Interval {
            publish_us: latency_histogram(),
            publish_delay_us: latency_histogram(),
            end_to_end_us: latency_histogram(),
            published_records: 0,
            published_bytes: 0,
            publish_error_records: 0,
            consumed_records: 0,
            consumed_bytes: 0,
        }
    }
}

impl Interval {
    /// Adds `other`'s samples and counts to this one.
    pub fn merge(&mut self, other: &Interval) {
        // Same bounds on both sides: `add` only fails if other holds values beyond ours,
        // which `saturating_record` never produces.
        let _ = self.publish_us.add(&other.publish_us);
        let _ = self.publish_delay_us.add(&other.publish_delay_us);
        let _ = self.end_to_end_us.add(&other.end_to_end_us);
        self.published_records += other.published_records;
        self.published_bytes += other.published_bytes;
        self.publish_error_records += other.publish_error_records;
        self.consumed_records += other.consumed_records;
        self.consumed_bytes += other.consumed_bytes;
    }
}

/// One thread's interval, shared with the collector.
#[derive(Debug, Default)]
pub struct Recorder {
    inner: Mutex<Interval>,
}

impl Recorder {
    /// Runs `f` on the current interval.
    pub fn with<R>(&self, f: impl FnOnce(&mut Interval) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Takes the interval recorded so far and starts a new one.
    pub fn take(&self) -> Interval {
        self.with(std::mem::take)
    }
}

/// Records nanoseconds into a microsecond histogram (rounding up, saturating).
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.div_ceil(1000).max(1));
}

/// The percentiles reported for every latency, in field-name order.
pub const PERCENTILES: [(&str, f64); 6] = [
    ("p50", 50.0),
    ("p75", 75.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
    ("p99_99", 99.99),
];

/// `{prefix}_p50_ms`, …, `{prefix}_max_ms`, `{prefix}_mean_ms`, `{prefix}_count` of `h`
/// (nothing but the count when it is empty).
pub fn latency_fields(prefix: &str, h: &Histogram<u64>, out: &mut BTreeMap<String, f64>) {
    out.insert(format!("{prefix}_count"), h.len() as f64);
    if h.is_empty() {
        return;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    for (name, q) in PERCENTILES {
        out.insert(
            format!("{prefix}_{name}_ms"),
            ms(h.value_at_quantile(q / 100.0)),
        );
    }
    out.insert(format!("{prefix}_max_ms"), ms(h.max()));
    out.insert(format!("{prefix}_mean_ms"), h.mean() / 1000.0);
}

/// A latency summary in milliseconds (for windows and tables).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Quantiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
}

impl Quantiles {
    /// Of `h`; all zero when it is empty.
    pub fn of(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Quantiles {
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p99_9_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Guards merging across threads: the merged histogram is the histogram of all samples.
    #[test]
    fn merge_across_threads_is_exact() {
        let recorders: Vec<Arc<Recorder>> = (0..4).map(|_| Arc::new(Recorder::default())).collect();
        let threads: Vec<_> = recorders
            .iter()
            .enumerate()
            .map(|(t, r)| {
                let r = Arc::clone(r);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        // Thread t records t*10_000 + i microseconds: disjoint ranges.
                        let us = t as u64 * 10_000 + i + 1;
                        r.with(|iv| {
                            record_ns(&mut iv.publish_us, us * 1000);
                            iv.published_records += 1;
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut merged = Interval::default();
        for r in &recorders {
            merged.merge(&r.take());
        }
        let mut all = latency_histogram();
        for us in 1..=40_000u64 {
            all.record(us).unwrap();
        }
        assert_eq!(merged.published_records, 40_000);
        assert_eq!(merged.publish_us.len(), 40_000);
        for q in [0.5, 0.75, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.publish_us.value_at_quantile(q),
                all.value_at_quantile(q),
                "q {q}"
            );
        }
        // Thread 3 alone holds everything above 30 ms: the merged p99 comes from it.
        assert!(merged.publish_us.value_at_quantile(0.99) > 39_000);
        // Taking resets the recorders.
        assert!(recorders.iter().all(|r| r.take().publish_us.is_empty()));
    }

    /// Guards the report's field names and units.
    #[test]
    fn latency_field_names() {
        let mut h = latency_histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let mut out = BTreeMap::new();
        latency_fields("publish_latency", &h, &mut out);
        assert!((out["publish_latency_p50_ms"] - 0.5).abs() < 0.01);
        assert!((out["publish_latency_p99_ms"] - 0.99).abs() < 0.01);
        assert!((out["publish_latency_max_ms"] - 1.0).abs() < 0.01);
        assert!(out.contains_key("publish_latency_p99_99_ms"));
        assert_eq!(out["publish_latency_count"], 1000.0);
    }
}
