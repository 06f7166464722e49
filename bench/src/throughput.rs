//! Figure 1: sequential append throughput under `flush = never`, against raw O_DIRECT
//! writes of the same size and depth into the same directory.
//!
//! Each append carries 1 MiB (64 batches of 16 KiB), the shape of a busy producer's
//! ProduceRequest for one partition; up to four appends are outstanding, as a shard would
//! have with several connections producing. The engine coalesces queued appends into one
//! write unit (up to `write_bytes_max`) and keeps one write in flight, so this figure shows
//! whether its copy, CRC check and bookkeeping keep up with the disk. The raw baseline
//! writes the same number of 1 MiB blocks with the same number in flight into a fresh file;
//! the goal is at least 0.9x of it. A second raw file written with one write in flight
//! gives context (the engine keeps one write in flight). Neither side's final fdatasync is
//! timed. The work is split into [`ROUNDS`] rounds whose order rotates (raw, engine, raw
//! depth 1; then engine, raw depth 1, raw; …) so that the disk's drift during the run, which
//! on these virtual disks is large, falls on both sides alike.
//!
//! The log written here is kept for figure 4 (recovery): one active segment holding the
//! whole run (`segment_bytes` at its maximum, so it never rolls).

use std::collections::VecDeque;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use tern_engine::{FlushPolicy, Log, LogConfig, Offset, UringStorage};

use crate::cpu::thread_cpu;
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
/// Rounds the work is split into, alternating engine and raw (absolute speed drifts).
pub const ROUNDS: usize = 4;
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

/// What one round does, in an order that rotates from round to round.
#[derive(Debug, Clone, Copy)]
enum Step {
    Raw = 0,
    Engine = 1,
    RawDepth1 = 2,
}

/// Writes `total_bytes` through the engine and through each raw baseline, in [`ROUNDS`]
/// interleaved rounds; leaves the engine's log (closed) in `log_dir`.
pub async fn run(
    storage: &UringStorage,
    dir: &Path,
    log_dir: &Path,
    total_bytes: u64,
) -> anyhow::Result<(ThroughputReport, WrittenLog)> {
    let append_bytes = (BATCH_BYTES * BATCHES_PER_APPEND) as u64;
    let appends_per_round = total_bytes.div_ceil(append_bytes * ROUNDS as u64);
    let appends = appends_per_round * ROUNDS as u64;
    let total_bytes = appends * append_bytes;
    let round_bytes = appends_per_round * append_bytes;
    eprintln!(
        "  {ROUNDS} rounds of {appends_per_round} x 1 MiB each: raw ({IN_FLIGHT_MAX} in flight), \
         raw (one in flight), engine ({IN_FLIGHT_MAX} appends in flight)"
    );

    let mut raw =
        raw::SequentialWriter::create(&dir.join("raw-seq.dat"), append_bytes as usize).await?;
    let mut raw1 =
        raw::SequentialWriter::create(&dir.join("raw-seq-depth1.dat"), append_bytes as usize)
            .await?;
    let batch = batch_of_size(BATCH_BYTES, RECORDS_PER_BATCH, 1, now_ms());
    let per_append: Vec<&[u8]> = vec![&batch[..]; BATCHES_PER_APPEND];
    let log = Log::open(storage.clone(), log_dir, config())
        .await
        .context("opening the throughput log")?;

    // Wall and thread CPU seconds per step.
    let mut wall = [0.0f64; 3];
    let mut cpu = [0.0f64; 3];
    let steps = [Step::Raw, Step::Engine, Step::RawDepth1];
    for round in 0..ROUNDS {
        for k in 0..steps.len() {
            let step = steps[(round + k) % steps.len()];
            let cpu_before = thread_cpu();
            let seconds = match step {
                Step::Raw => raw.write(round_bytes, IN_FLIGHT_MAX).await?.as_secs_f64(),
                Step::RawDepth1 => raw1.write(round_bytes, 1).await?.as_secs_f64(),
                Step::Engine => append_pipelined(&log, &per_append, appends_per_round).await?,
            };
            wall[step as usize] += seconds;
            cpu[step as usize] += (thread_cpu() - cpu_before).as_secs_f64();
        }
    }
    let [t_raw, t_engine, t_raw1] = wall;
    let mib = (total_bytes >> 20) as f64;
    raw.finish().await?;
    raw1.finish().await?;
    let stats = log.stats();
    let written = WrittenLog {
        end_offset: log.next_offset(),
        batches: appends * BATCHES_PER_APPEND as u64,
        segment_bytes: log.size_bytes(),
    };
    log.close().await.context("closing the throughput log")?;

    let engine_mb = mb_per_s(total_bytes, t_engine);
    let raw_mb = mb_per_s(total_bytes, t_raw);
    let r = ratio(engine_mb, raw_mb);
    let report = ThroughputReport {
        total_bytes,
        append_bytes,
        batch_bytes: batch.len() as u64,
        batches_per_append: BATCHES_PER_APPEND as u64,
        appends_in_flight_max: IN_FLIGHT_MAX as u64,
        rounds: ROUNDS as u64,
        engine_seconds: t_engine,
        engine_throughput_mb_per_s: engine_mb,
        engine_cpu_ms_per_mib: cpu[Step::Engine as usize] * 1e3 / mib,
        engine_cpu_busy_fraction: ratio(cpu[Step::Engine as usize], t_engine),
        engine_writes: stats.writes,
        engine_write_bytes_mean: ratio(stats.bytes_written as f64, stats.writes as f64),
        raw_seconds: t_raw,
        raw_throughput_mb_per_s: raw_mb,
        raw_cpu_ms_per_mib: cpu[Step::Raw as usize] * 1e3 / mib,
        raw_depth1_throughput_mb_per_s: mb_per_s(total_bytes, t_raw1),
        engine_to_raw_ratio: r,
        goal_ratio_min: GOAL_RATIO_MIN,
        meets_goal: r >= GOAL_RATIO_MIN,
    };
    Ok((report, written))
}

/// `appends` appends of `batches`, keeping [`IN_FLIGHT_MAX`] outstanding; returns the
/// seconds until the last one completed.
async fn append_pipelined(
    log: &Log<UringStorage>,
    batches: &[&[u8]],
    appends: u64,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT_MAX);
    for _ in 0..appends {
        in_flight.push_back(log.append(batches));
        if in_flight.len() == IN_FLIGHT_MAX {
            if let Some(a) = in_flight.pop_front() {
                a.await.context("append")?;
            }
        }
    }
    while let Some(a) = in_flight.pop_front() {
        a.await.context("append")?;
    }
    Ok(start.elapsed().as_secs_f64())
}
