//! Figure 2: latency of one durable append (`flush = always`), one writer, against raw
//! durable writes of the same size on the same disk.
//!
//! Each append carries one 16 KiB batch and is awaited before the next one is made, so
//! every append pays a full durable write: this is the floor a `acks=all` producer sees from
//! the disk path. The engine writes each append with one `RWF_DSYNC` write that also
//! rewrites the partial last block (its appends are not block-aligned: 16 KiB + the carry).
//! The baselines write aligned 16 KiB blocks into a fresh file: once with write + fdatasync
//! (the "raw disk" of the goal: engine p50 and p99 at most 1.3x of it), and once with a
//! single `RWF_DSYNC` write (the same kind of operation the engine submits). The three run
//! in [`ROUNDS`] interleaved rounds, rotating their order, so that disturbances on the shared
//! disk (journal commits, other tenants) fall on all three alike.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;
use tern_engine::{FlushPolicy, Log, LogConfig, UringStorage};

use crate::raw::{Durability, DurableWriter};
use crate::report::{new_histogram, ratio, DurableLatencyReport, LatencySummary};
use crate::workload::{batch_of_size, now_ms};

/// Bytes of the batch each append carries.
pub const BATCH_BYTES: usize = 16 * 1024;
/// Records per batch.
pub const RECORDS_PER_BATCH: usize = 16;
/// Rounds the work is split into, alternating engine and raw (absolute speed drifts).
pub const ROUNDS: usize = 5;
/// The goal: engine p50 and p99 at most this multiple of raw write + fdatasync.
pub const GOAL_RATIO_MAX: f64 = 1.3;

/// The raw histograms, also used by figure 3 for the single-writer sync rate.
#[derive(Debug)]
pub struct RawLatency {
    pub fdatasync: Histogram<u64>,
    pub rwf_dsync: Histogram<u64>,
}

/// Measures the engine and both raw baselines, `count` timed operations each after
/// `warmup` untimed ones, in [`ROUNDS`] interleaved rounds.
pub async fn run(
    storage: &UringStorage,
    dir: &Path,
    count: usize,
    warmup: usize,
) -> anyhow::Result<(DurableLatencyReport, RawLatency)> {
    let per_round = count.div_ceil(ROUNDS);
    let count = per_round * ROUNDS;
    eprintln!(
        "  {ROUNDS} rounds of {per_round} x 16 KiB each: raw write + fdatasync, raw \
         RWF_DSYNC write, engine durable append"
    );
    let mut raw_f = DurableWriter::create(
        &dir.join("raw-fdatasync.dat"),
        BATCH_BYTES,
        Durability::WriteThenFdatasync,
    )
    .await?;
    let mut raw_d = DurableWriter::create(
        &dir.join("raw-dsync.dat"),
        BATCH_BYTES,
        Durability::RwfDsync,
    )
    .await?;
    let config = LogConfig {
        flush: FlushPolicy::Always,
        segment_bytes: i32::MAX as u32,
        retention_ms: -1,
        ..LogConfig::default()
    };
    let log = Log::open(storage.clone(), dir.join("latency-log"), config)
        .await
        .context("opening the latency log")?;
    let batch = batch_of_size(BATCH_BYTES, RECORDS_PER_BATCH, 2, now_ms());

    raw_f.write(warmup, None).await?;
    raw_d.write(warmup, None).await?;
    append_each(&log, &batch, warmup, None).await?;
    let (mut fdatasync, mut rwf_dsync, mut hist) =
        (new_histogram()?, new_histogram()?, new_histogram()?);
    for round in 0..ROUNDS {
        for k in 0..3 {
            match (round + k) % 3 {
                0 => raw_f.write(per_round, Some(&mut fdatasync)).await?,
                1 => raw_d.write(per_round, Some(&mut rwf_dsync)).await?,
                _ => append_each(&log, &batch, per_round, Some(&mut hist)).await?,
            }
        }
    }
    let stats = log.stats();
    log.close().await.context("closing the latency log")?;

    let e = LatencySummary::of(&hist);
    let f = LatencySummary::of(&fdatasync);
    let d = LatencySummary::of(&rwf_dsync);
    let p50 = ratio(e.p50_us, f.p50_us);
    let p99 = ratio(e.p99_us, f.p99_us);
    let report = DurableLatencyReport {
        appends: count as u64,
        warmup_appends: warmup as u64,
        batch_bytes: batch.len() as u64,
        engine_append_latency: e,
        engine_writes: stats.writes,
        engine_syncs: stats.syncs,
        engine_write_bytes_mean: ratio(stats.bytes_written as f64, stats.writes as f64),
        raw_write_fdatasync_latency: f,
        raw_write_rwf_dsync_latency: d,
        ratio_p50_engine_to_raw_fdatasync: p50,
        ratio_p99_engine_to_raw_fdatasync: p99,
        ratio_p50_engine_to_raw_rwf_dsync: ratio(e.p50_us, d.p50_us),
        ratio_p99_engine_to_raw_rwf_dsync: ratio(e.p99_us, d.p99_us),
        goal_ratio_max: GOAL_RATIO_MAX,
        meets_goal: p50 <= GOAL_RATIO_MAX && p99 <= GOAL_RATIO_MAX,
    };
    Ok((
        report,
        RawLatency {
            fdatasync,
            rwf_dsync,
        },
    ))
}

/// `count` appends of `batch`, each awaited before the next; records each latency (ns).
async fn append_each(
    log: &Log<UringStorage>,
    batch: &[u8],
    count: usize,
    mut hist: Option<&mut Histogram<u64>>,
) -> anyhow::Result<()> {
    for _ in 0..count {
        let start = Instant::now();
        log.append(&[batch]).await.context("durable append")?;
        if let Some(h) = hist.as_deref_mut() {
            h.saturating_record(start.elapsed().as_nanos() as u64);
        }
    }
    Ok(())
}
