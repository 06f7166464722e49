//! `--baseline disk`: the raw disk measured in the same run as the broker, before and after
//! it, so the broker's figures can be stated as ratios (PERF.md: absolute numbers drift on
//! shared machines; ratios taken in one run hold).
//!
//! Two figures, both with the raw io_uring O_DIRECT writers of [`crate::raw`] (the baseline
//! of the engine benchmarks): the latency of one durable write of the workload's message
//! size (rounded up to whole 4 KiB blocks, as O_DIRECT needs), written then fdatasync'd,
//! one at a time, which is the floor of an `acks=all` publish on a broker that fsyncs; and
//! the bandwidth of sequential 1 MiB O_DIRECT writes, 4 in flight, the ceiling of any
//! broker's write throughput on this disk.

use std::path::Path;

use anyhow::Context;

use crate::broker_report::DiskBaseline;
use crate::raw::{Durability, DurableWriter, SequentialWriter};
use crate::report::{mb_per_s, new_histogram};
use crate::scratch::Scratch;

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
