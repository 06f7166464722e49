//! Figure 1: sequential append throughput under `flush = never`, against raw O_DIRECT
//! writes of the same size and depth into the same directory.
//!
//! Each append carries 1 MiB (64 batches of 16 KiB), the shape of a busy producer's
//! ProduceRequest for one partition; up to four appends are outstanding, as a shard would
//! have with several connections producing. The engine coalesces queued appends into one
//! write unit (up to `write_bytes_max`) and keeps one write in flight, so this figure shows
//! whether its copy, CRC check and bookkeeping keep up with the disk. The raw baseline
//! writes the same number of 1 MiB blocks with the same number in flight into a fresh file;
//! the goal is at least 0.9x of it. Neither side's final fdatasync is timed.
//!
//! The log written here is kept for figure 4 (recovery): one active segment holding the
//! whole run (`segment_bytes` at its maximum, so it never rolls).

use std::collections::VecDeque;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use tern_engine::{FlushPolicy, Log, LogConfig, Offset, UringStorage};

use crate::raw;
use crate::report::{mb_per_s, ratio, ThroughputReport};
use crate::workload::{batch_of_size, now_ms};

/// Bytes of one batch.
pub const BATCH_BYTES: usize = 16 * 1024;
/// Batches per append: 64 x 16 KiB = 1 MiB.
pub const BATCHES_PER_APPEND: usize = 64;
/// Records per batch (about 1 KiB each).
pub const RECORDS_PER_BATCH: usize = 16;
/// Appends (and raw writes) outstanding at once.
pub const IN_FLIGHT_MAX: usize = 4;
/// The goal: engine throughput at least this fraction of raw.
pub const GOAL_RATIO_MIN: f64 = 0.9;

/// The configuration of the throughput log (also the log figure 4 reopens).
pub fn config() -> LogConfig {
    LogConfig {
        segment_bytes: i32::MAX as u32,
        flush: FlushPolicy::Never,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// What figure 4 needs to know about the log written here.
#[derive(Debug, Clone, Copy)]
pub struct WrittenLog {
    pub end_offset: Offset,
    pub batches: u64,
    pub segment_bytes: u64,
}

/// Runs the raw baselines, then the engine, writing `total_bytes` each; leaves the engine's
/// log (closed) in `log_dir`.
pub async fn run(
    storage: &UringStorage,
    dir: &Path,
    log_dir: &Path,
    total_bytes: u64,
) -> anyhow::Result<(ThroughputReport, WrittenLog)> {
    let append_bytes = (BATCH_BYTES * BATCHES_PER_APPEND) as u64;
    let appends = total_bytes.div_ceil(append_bytes);
    let total_bytes = appends * append_bytes;

    eprintln!("  raw: {appends} writes of 1 MiB, {IN_FLIGHT_MAX} in flight");
    let raw_path = dir.join("raw-sequential.dat");
    let raw = raw::sequential_write(&raw_path, append_bytes as usize, total_bytes, IN_FLIGHT_MAX)
        .await?
        .as_secs_f64();
    eprintln!("  raw: {appends} writes of 1 MiB, one in flight");
    let raw1 = raw::sequential_write(&raw_path, append_bytes as usize, total_bytes, 1)
        .await?
        .as_secs_f64();

    eprintln!("  engine: {appends} appends of 1 MiB, {IN_FLIGHT_MAX} in flight");
    let batch = batch_of_size(BATCH_BYTES, RECORDS_PER_BATCH, 1, now_ms());
    let per_append: Vec<&[u8]> = vec![&batch[..]; BATCHES_PER_APPEND];
    let log = Log::open(storage.clone(), log_dir, config())
        .await
        .context("opening the throughput log")?;
    let start = Instant::now();
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT_MAX);
    for _ in 0..appends {
        in_flight.push_back(log.append(&per_append));
        if in_flight.len() == IN_FLIGHT_MAX {
            if let Some(a) = in_flight.pop_front() {
                a.await.context("append")?;
            }
        }
    }
    while let Some(a) = in_flight.pop_front() {
        a.await.context("append")?;
    }
    let engine = start.elapsed().as_secs_f64();
    let stats = log.stats();
    let written = WrittenLog {
        end_offset: log.next_offset(),
        batches: appends * BATCHES_PER_APPEND as u64,
        segment_bytes: log.size_bytes(),
    };
    log.close().await.context("closing the throughput log")?;

    let engine_mb = mb_per_s(total_bytes, engine);
    let raw_mb = mb_per_s(total_bytes, raw);
    let r = ratio(engine_mb, raw_mb);
    let report = ThroughputReport {
        total_bytes,
        append_bytes,
        batch_bytes: batch.len() as u64,
        batches_per_append: BATCHES_PER_APPEND as u64,
        appends_in_flight_max: IN_FLIGHT_MAX as u64,
        engine_seconds: engine,
        engine_throughput_mb_per_s: engine_mb,
        engine_writes: stats.writes,
        engine_write_bytes_mean: ratio(stats.bytes_written as f64, stats.writes as f64),
        raw_seconds: raw,
        raw_throughput_mb_per_s: raw_mb,
        raw_depth1_throughput_mb_per_s: mb_per_s(total_bytes, raw1),
        engine_to_raw_ratio: r,
        goal_ratio_min: GOAL_RATIO_MIN,
        meets_goal: r >= GOAL_RATIO_MIN,
    };
    Ok((report, written))
}
