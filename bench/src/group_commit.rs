//! Figure 3: group commit. 64 appenders each keep one 1 KiB durable append in flight
//! (`flush = always`) and make the next as soon as the previous one completes.
//!
//! Without group commit every append would need its own durable write, and the appends per
//! second could not exceed what one writer gets from the disk (1 / the mean latency of a
//! raw write + fdatasync, from figure 2). With it, appends arriving while a write is in
//! flight share the next write: appends per second should be many times the raw sync rate
//! while writes per second stay near it. The counters come from `Log::stats()`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use tern_engine::{FlushPolicy, Log, LogConfig, UringStorage};

use crate::latency::RawLatency;
use crate::report::{mb_per_s, new_histogram, ratio, GroupCommitReport, LatencySummary};
use crate::workload::{batch_of_size, now_ms};

/// Concurrent appenders, each with one append in flight.
pub const APPENDERS: usize = 64;
/// Bytes of each append's batch.
pub const BATCH_BYTES: usize = 1024;
/// Records per batch.
pub const RECORDS_PER_BATCH: usize = 8;

/// Runs the appenders for `duration` (each finishes its in-flight append after it).
pub async fn run(
    storage: &UringStorage,
    dir: &Path,
    duration: Duration,
    raw: &RawLatency,
) -> anyhow::Result<GroupCommitReport> {
    eprintln!(
        "  engine: {APPENDERS} appenders x 1 KiB durable appends for {:.0} s",
        duration.as_secs_f64()
    );
    let config = LogConfig {
        flush: FlushPolicy::Always,
        retention_ms: -1,
        ..LogConfig::default()
    };
    let log = Log::open(storage.clone(), dir.join("group-commit-log"), config)
        .await
        .context("opening the group commit log")?;
    let batch = Bytes::from(batch_of_size(BATCH_BYTES, RECORDS_PER_BATCH, 3, now_ms()));
    let before = log.stats();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(APPENDERS);
    for _ in 0..APPENDERS {
        tasks.push(tokio_uring::spawn(appender(
            log.clone(),
            batch.clone(),
            deadline,
        )));
    }
    let mut hist = new_histogram()?;
    for t in tasks {
        let h = t.await.context("an appender task failed")??;
        hist.add(&h).context("merging latency histograms")?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let stats = log.stats();
    log.close().await.context("closing the group commit log")?;

    let appends = stats.appends - before.appends;
    let writes = stats.writes - before.writes;
    let syncs = stats.syncs - before.syncs;
    let bytes = stats.bytes_written - before.bytes_written;
    let per_s = |n: u64| ratio(n as f64, seconds);
    let raw_fdatasync_per_s = ratio(1e6, LatencySummary::of(&raw.fdatasync).mean_us);
    Ok(GroupCommitReport {
        appenders: APPENDERS as u64,
        batch_bytes: batch.len() as u64,
        seconds,
        appends,
        appends_per_s: per_s(appends),
        writes_per_s: per_s(writes),
        syncs_per_s: per_s(syncs),
        appends_per_write_mean: ratio(appends as f64, writes as f64),
        write_bytes_mean: ratio(bytes as f64, writes as f64),
        throughput_mb_per_s: mb_per_s(appends * batch.len() as u64, seconds),
        append_latency: LatencySummary::of(&hist),
        raw_write_fdatasync_per_s: raw_fdatasync_per_s,
        raw_write_rwf_dsync_per_s: ratio(1e6, LatencySummary::of(&raw.rwf_dsync).mean_us),
        appends_per_s_to_raw_fdatasync_per_s_ratio: ratio(per_s(appends), raw_fdatasync_per_s),
    })
}

/// One appender: append, await, repeat until `deadline`; returns its latencies (ns).
async fn appender(
    log: Log<UringStorage>,
    batch: Bytes,
    deadline: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut hist = new_histogram()?;
    let batches = std::slice::from_ref(&batch);
    loop {
        let start = Instant::now();
        if start >= deadline {
            return Ok(hist);
        }
        log.append(batches).await.context("durable append")?;
        hist.saturating_record(start.elapsed().as_nanos() as u64);
    }
}
