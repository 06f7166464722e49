//! `--baseline disk`: the raw disk measured in the same run as the broker, before and after
//! it, so the broker's figures can be stated as ratios (absolute numbers drift on
//! shared machines; ratios taken in one run hold).
//!
//! Two figures, both with the raw io_uring O_DIRECT writers of [`crate::raw`] (the baseline
//! of the engine benchmarks): the latency of one durable write of the workload's message
//! size (rounded up to whole 4 KiB blocks, as O_DIRECT needs), written then fdatasync'd,
//! one at a time, which is the floor of an `acks=all` publish on a broker that fsyncs; and
//! the bandwidth of sequential 1 MiB O_DIRECT writes, 4 in flight, the ceiling of any
//! broker's write throughput on this disk.
//!
//! For an `acks=all` workload at a fixed rate a third figure, [`crate::floor`]: the publish
//! latency of an ideal broker that group-commits each partition's file, at the workload's
//! rate, partitions and record size. A broker can approach it but not beat it with one file
//! per partition, whatever its code does.

use std::path::Path;

use anyhow::Context;

use crate::broker_report::{DiskBaseline, FloorBaseline};
use crate::floor::FloorPlan;
use crate::raw::{Durability, DurableWriter, SequentialWriter};
use crate::report::{mb_per_s, new_histogram};
use crate::scratch::Scratch;
use crate::spec::{KeyDistributor, Workload};

/// O_DIRECT's unit.
const BLOCK_BYTES: u64 = 4096;
/// Sequential writes for the bandwidth figure.
const SEQUENTIAL_WRITE_BYTES: usize = 1 << 20;
const SEQUENTIAL_DEPTH: usize = 4;

/// How much the baseline writes.
#[derive(Debug, Clone, Copy)]
pub struct DiskPlan {
    pub fdatasync_writes: usize,
    pub sequential_bytes: u64,
}

impl DiskPlan {
    pub fn of(quick: bool) -> DiskPlan {
        if quick {
            DiskPlan {
                fdatasync_writes: 1000,
                sequential_bytes: 256 << 20,
            }
        } else {
            DiskPlan {
                fdatasync_writes: 3000,
                sequential_bytes: 1 << 30,
            }
        }
    }
}

/// One measurement of the disk.
#[derive(Debug, Clone, Copy)]
pub struct DiskSample {
    pub fdatasync_p50_ms: f64,
    pub fdatasync_p99_ms: f64,
    pub write_mb_per_s: f64,
}

/// The durable write size for `message_bytes`: whole blocks.
pub fn write_bytes_for(message_bytes: u64) -> u64 {
    message_bytes.div_ceil(BLOCK_BYTES).max(1) * BLOCK_BYTES
}

/// Measures the disk holding `dir` (in a scratch directory removed afterwards).
pub fn measure(dir: &Path, write_bytes: u64, plan: DiskPlan) -> anyhow::Result<DiskSample> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: creating", dir.display()))?;
    let scratch = Scratch::create(&dir.join("tern-bench-disk"))?;
    let path = scratch.path().to_path_buf();
    let runtime = tern_engine::storage::uring::new_runtime()
        .context("starting the io_uring runtime (is io_uring disabled on this kernel?)")?;
    runtime.block_on(async move {
        let mut hist = new_histogram()?;
        let mut durable = DurableWriter::create(
            &path.join("fdatasync.dat"),
            write_bytes as usize,
            Durability::WriteThenFdatasync,
        )
        .await?;
        // A few untimed writes first: the file's first extents are allocated then.
        durable.write(20, None).await?;
        durable
            .write(plan.fdatasync_writes, Some(&mut hist))
            .await?;
        let mut seq =
            SequentialWriter::create(&path.join("sequential.dat"), SEQUENTIAL_WRITE_BYTES).await?;
        let took = seq.write(plan.sequential_bytes, SEQUENTIAL_DEPTH).await?;
        seq.finish().await?;
        let ms = |ns: u64| ns as f64 / 1e6;
        Ok(DiskSample {
            fdatasync_p50_ms: ms(hist.value_at_quantile(0.5)),
            fdatasync_p99_ms: ms(hist.value_at_quantile(0.99)),
            write_mb_per_s: mb_per_s(plan.sequential_bytes, took.as_secs_f64()),
        })
    })
}

/// How long the group-commit floor runs (after a 1 s warm-up).
const FLOOR_S: f64 = 8.0;
const FLOOR_QUICK_S: f64 = 3.0;

/// The group-commit floor of `w`: its partitions, record size and rate, when it publishes
/// with `acks=all` at a fixed rate (other workloads have no durable-latency floor).
///
/// The floor spreads records round robin over its files. With `NO_KEY` the producers'
/// sticky partitioner sends to one partition at a time, so the floor is then taken with a
/// single file: the lower (stricter) of the two.
pub fn floor_plan(w: &Workload, quick: bool) -> Option<FloorPlan> {
    if w.driver.acks.0 != -1 || w.producer_rate <= 0.0 {
        return None;
    }
    let partitions = match w.key_distributor {
        KeyDistributor::NoKey => 1,
        _ => (w.topics * w.partitions_per_topic) as usize,
    };
    Some(FloorPlan {
        partitions,
        record_bytes: w.message_size as usize,
        records_per_s: w.producer_rate,
        warmup: std::time::Duration::from_secs(1),
        duration: std::time::Duration::from_secs_f64(if quick { FLOOR_QUICK_S } else { FLOOR_S }),
    })
}

/// One run of the floor: p50, p99, p99.9 in ms and records per durable write.
#[derive(Debug, Clone, Copy)]
pub struct FloorSample {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub records_per_write: f64,
}

/// Runs the floor of `plan` on the disk holding `dir`.
pub fn measure_floor(dir: &Path, plan: &FloorPlan) -> anyhow::Result<FloorSample> {
    let r = crate::floor::measure(dir, plan).context("group-commit floor")?;
    Ok(FloorSample {
        p50_ms: r.ms_at(0.5),
        p99_ms: r.ms_at(0.99),
        p99_9_ms: r.ms_at(0.999),
        records_per_write: r.records as f64 / r.writes.max(1) as f64,
    })
}

/// The report's floor from the samples before and after the broker run.
pub fn floor_baseline(plan: &FloorPlan, before: FloorSample, after: FloorSample) -> FloorBaseline {
    FloorBaseline {
        partitions: plan.partitions as u64,
        record_bytes: plan.record_bytes as u64,
        records_per_s: plan.records_per_s,
        measured_s: plan.duration.as_secs_f64(),
        before_p50_ms: before.p50_ms,
        before_p99_ms: before.p99_ms,
        before_p99_9_ms: before.p99_9_ms,
        before_records_per_write: before.records_per_write,
        after_p50_ms: after.p50_ms,
        after_p99_ms: after.p99_ms,
        after_p99_9_ms: after.p99_9_ms,
        after_records_per_write: after.records_per_write,
    }
}

/// The report's baseline from the samples before and after the broker run.
pub fn baseline(
    dir: &Path,
    write_bytes: u64,
    plan: DiskPlan,
    before: DiskSample,
    after: DiskSample,
) -> DiskBaseline {
    DiskBaseline {
        dir: dir.display().to_string(),
        write_bytes,
        fdatasync_writes: plan.fdatasync_writes as u64,
        before_fdatasync_p50_ms: before.fdatasync_p50_ms,
        before_fdatasync_p99_ms: before.fdatasync_p99_ms,
        after_fdatasync_p50_ms: after.fdatasync_p50_ms,
        after_fdatasync_p99_ms: after.fdatasync_p99_ms,
        before_write_mb_per_s: before.write_mb_per_s,
        after_write_mb_per_s: after.write_mb_per_s,
        floor: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the O_DIRECT write size: whole blocks, at least one.
    #[test]
    fn write_sizes_are_whole_blocks() {
        assert_eq!(write_bytes_for(100), 4096);
        assert_eq!(write_bytes_for(4096), 4096);
        assert_eq!(write_bytes_for(65536), 65536);
        assert_eq!(write_bytes_for(1024 + 4096), 8192);
    }
}
