//! `tern bench engine`: the partition log's four figures, each against a raw baseline
//! measured in the same run on the same directory.
//!
//! 1. sequential append throughput, `flush = never` ([`crate::throughput`]);
//! 4. recovery time of the log written by 1 ([`crate::recovery`]), run right after it so the
//!    gigabyte is written once;
//! 2. durable append latency, one writer, `flush = always` ([`crate::latency`]);
//! 3. group commit with 64 appenders ([`crate::group_commit`]), compared with the raw sync
//!    rate from 2.
//!
//! Everything runs on one thread inside one tokio-uring runtime, as one shard of the broker
//! would, and every engine log uses [`DirectIo::On`] so a filesystem without O_DIRECT fails
//! the run instead of silently measuring the page cache.
//!
//! One figure must not pay for another's data: nothing is deleted until the run is over
//! (deleting gigabytes on a filesystem mounted with `discard` keeps the disk busy for
//! seconds, which showed up as multi-millisecond fsync tails), and every figure starts after
//! a `sync`, which also makes the host flush its cache of a virtual disk.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tern_engine::{DirectIo, UringStorage};

use crate::machine::MachineInfo;
use crate::report::EngineReport;
use crate::scratch::Scratch;
use crate::workload::now_ms;
use crate::{group_commit, latency, recovery, throughput};

/// What `tern bench engine` was asked to do.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where the logs and raw files go (on the disk to measure).
    pub dir: PathBuf,
    /// Smaller sizes and shorter runs, for a check that everything works.
    pub quick: bool,
}

/// Sizes and durations of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    throughput_bytes: u64,
    latency_appends: usize,
    latency_warmup: usize,
    group_commit: Duration,
}

impl Plan {
    fn of(quick: bool) -> Plan {
        if quick {
            Plan {
                throughput_bytes: 128 << 20,
                latency_appends: 1000,
                latency_warmup: 20,
                group_commit: Duration::from_secs(2),
            }
        } else {
            Plan {
                throughput_bytes: 1 << 30,
                latency_appends: 5000,
                latency_warmup: 100,
                group_commit: Duration::from_secs(5),
            }
        }
    }
}

/// Writes back everything written so far (and, through the device flush, the host's cache
/// of a virtual disk), so that the next figure does not pay for the previous one's data.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Runs the whole benchmark (starting its own tokio-uring runtime) and returns the report.
/// The data directory is removed afterwards, also when a step fails.
pub fn run(opts: &EngineOptions) -> anyhow::Result<EngineReport> {
    let scratch = Scratch::create(&opts.dir)?;
    let machine = MachineInfo::probe(scratch.path());
    if machine.filesystem == "tmpfs" {
        eprintln!(
            "warning: {} is on tmpfs: the figures measure memory, not a disk",
            machine.dir
        );
    }
    let runtime = tern_engine::storage::uring::new_runtime()
        .context("starting the io_uring runtime (is io_uring disabled on this kernel?)")?;
    let started = now_ms();
    let plan = Plan::of(opts.quick);
    let dir = scratch.path().to_path_buf();
    runtime.block_on(async move {
        let storage = UringStorage::new(DirectIo::On);
        let log_dir = dir.join("throughput-log");
        settle();
        eprintln!("1. sequential append throughput");
        let (throughput, written) =
            throughput::run(&storage, &dir, &log_dir, plan.throughput_bytes).await?;
        eprintln!("4. recovery");
        let recovery = recovery::run(&storage, &log_dir, written).await?;
        settle();
        eprintln!("2. durable append latency");
        let (durable_latency, raw) =
            latency::run(&storage, &dir, plan.latency_appends, plan.latency_warmup).await?;
        settle();
        eprintln!("3. group commit");
        let group_commit = group_commit::run(&storage, &dir, plan.group_commit, &raw).await?;
        Ok(EngineReport {
            tern_version: env!("CARGO_PKG_VERSION").to_string(),
            started_unix_ms: started,
            quick: opts.quick,
            machine,
            throughput,
            recovery,
            durable_latency,
            group_commit,
        })
    })
}
