//! Figure 4: recovery time. The log figure 1 wrote (one active segment of the whole run,
//! closed cleanly) is reopened twice, each time with the page cache dropped first when the
//! kernel lets us (`sync; echo 3 > /proc/sys/vm/drop_caches`, root only):
//!
//! * with its indexes intact: open reads the indexes and scans only the tail after the last
//!   index entry: the normal restart after a clean shutdown;
//! * with `.index` and `.timeindex` deleted: open must read and CRC-check every batch of the
//!   segment to rebuild them: the worst case after a crash.
//!
//! The baseline is a cold sequential buffered read of the same file in 256 KiB reads (the
//! engine scanner's refill size), so the ratio shows how much of the full scan is the disk
//! and how much is the engine's checking. "Cold" means this kernel's page cache was dropped;
//! on a virtual disk the host may still cache the file, so an untimed read first puts every
//! timed read in the same state.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use tern_engine::{Log, Offset, UringStorage};

use crate::cpu::thread_cpu;
use crate::raw::RawFile;
use crate::report::{mb_per_s, ratio, RecoveryReport};
use crate::throughput::{config, WrittenLog};

/// Bytes per read of the raw cold-read baseline (the engine's `SCAN_CHUNK_BYTES`).
pub const RAW_READ_CHUNK_BYTES: usize = 256 * 1024;

/// Flushes dirty pages and drops the page cache; false when not permitted.
pub fn drop_page_cache() -> bool {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Reopens the log in `log_dir` (written and closed by figure 1) and times it.
pub async fn run(
    storage: &UringStorage,
    log_dir: &Path,
    written: WrittenLog,
) -> anyhow::Result<RecoveryReport> {
    let segment = log_dir.join(format!("{:020}.log", 0));
    // The page cache of this kernel can be dropped, the host's cache of a virtual disk
    // cannot: a first, untimed read puts the host in the same state for every timed read
    // below (right after being written, a first read was measured 3-4x slower than later
    // ones here).
    drop_page_cache();
    eprintln!("  raw: warm-up read of the segment (untimed)");
    RawFile::open_buffered(&segment)
        .await?
        .read_all(RAW_READ_CHUNK_BYTES)
        .await?;
    let mut dropped = drop_page_cache();
    eprintln!("  raw: cold sequential read of the segment");
    let (start, cpu) = (Instant::now(), thread_cpu());
    let read_bytes = RawFile::open_buffered(&segment)
        .await?
        .read_all(RAW_READ_CHUNK_BYTES)
        .await?;
    let raw = start.elapsed().as_secs_f64();
    let raw_cpu = (thread_cpu() - cpu).as_secs_f64();

    dropped &= drop_page_cache();
    eprintln!("  engine: open with intact indexes");
    let (intact, intact_end) = timed_open(storage, log_dir).await?;

    for ext in ["index", "timeindex"] {
        let path = log_dir.join(format!("{:020}.{ext}", 0));
        std::fs::remove_file(&path).with_context(|| format!("{}: remove", path.display()))?;
    }
    dropped &= drop_page_cache();
    eprintln!("  engine: open with both indexes deleted (full scan)");
    let cpu = thread_cpu();
    let (scan, scan_end) = timed_open(storage, log_dir).await?;
    let scan_cpu = (thread_cpu() - cpu).as_secs_f64();

    let ok = intact_end == written.end_offset && scan_end == written.end_offset;
    if !ok {
        eprintln!(
            "  WARNING: the log was written up to offset {}, reopened it ends at {} (intact \
             indexes) and {} (full scan)",
            written.end_offset.0, intact_end.0, scan_end.0
        );
    }
    let scan_mb = mb_per_s(written.segment_bytes, scan);
    let mib = (written.segment_bytes as f64 / (1u64 << 20) as f64).max(1e-9);
    let raw_mb = mb_per_s(read_bytes, raw);
    Ok(RecoveryReport {
        segment_bytes: written.segment_bytes,
        batches: written.batches,
        page_cache_dropped: dropped,
        open_with_indexes_seconds: intact,
        open_full_scan_seconds: scan,
        full_scan_mb_per_s: scan_mb,
        full_scan_cpu_ms_per_mib: scan_cpu * 1e3 / mib,
        raw_cold_read_mb_per_s: raw_mb,
        raw_read_cpu_ms_per_mib: raw_cpu * 1e3 / mib,
        raw_read_chunk_bytes: RAW_READ_CHUNK_BYTES as u64,
        full_scan_to_raw_read_ratio: ratio(scan_mb, raw_mb),
        recovered_end_offset_ok: ok,
    })
}

/// Times `Log::open` of `dir`, then closes the log; returns seconds and the log's end.
async fn timed_open(storage: &UringStorage, dir: &Path) -> anyhow::Result<(f64, Offset)> {
    let start = Instant::now();
    let log = Log::open(storage.clone(), dir, config())
        .await
        .with_context(|| format!("reopening {}", dir.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    let end = log.next_offset();
    log.close()
        .await
        .with_context(|| format!("closing {}", dir.display()))?;
    Ok((seconds, end))
}
