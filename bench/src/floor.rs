//! The group-commit floor: the best `acks=all` publish latency that a broker writing each
//! partition to its own file with durable O_DIRECT writes can reach on this disk, at a given
//! rate, with no network, no client and no broker code in the way.
//!
//! Records "arrive" on a fixed timeline (`records_per_s`, round robin over the partitions).
//! Each partition's file has at most one durable write in flight (`RWF_DSYNC`, what the
//! engine does under `flush = always`); when it completes, every record of that partition
//! that arrived meanwhile goes out in the next write. A write starts at the block holding the
//! file's unaligned tail, as O_DIRECT needs and as the engine does. A record's latency runs
//! from its intended arrival to the completion of the write holding it.
//!
//! The files are filled with zeros and synced first (as the engine prepares its segments
//! under `flush = always`), so the timed writes are overwrites with no block allocation;
//! then the whole system is synced, so that earlier writes and deletions on the disk are not
//! paid for here.
//! Everything runs on the calling thread with its own ring; between completions it waits
//! with a nanosecond timeout for the next arrival, so no timer granularity is added.
//!
//! Invariants: every record of the timeline is written exactly once, in order per file; a
//! short or failed write ends the measurement with an error naming the file.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use io_uring::{opcode, types, IoUring};

use crate::raw::pattern_buf;
use crate::report::new_histogram;
use crate::scratch::Scratch;

/// O_DIRECT's unit.
const BLOCK_BYTES: u64 = 4096;
/// Zeros written per call while preparing the files.
const PREPARE_CHUNK_BYTES: usize = 1 << 20;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct FloorPlan {
    pub partitions: usize,
    pub record_bytes: usize,
    pub records_per_s: f64,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What was measured.
#[derive(Debug)]
pub struct FloorResult {
    /// Arrival to durable, nanoseconds, records arriving after the warm-up.
    pub latency_ns: Histogram<u64>,
    /// Durable writes made (whole run).
    pub writes: u64,
    /// Records written (whole run).
    pub records: u64,
    /// CPU time of the writing thread over the whole run, user and system: the kernel's
    /// cost of a durable write on this machine (submission, device notification, the wait's
    /// sleep and wakeup) is `system / writes`.
    pub cpu_user: Duration,
    pub cpu_system: Duration,
}

impl FloorResult {
    /// Latency at quantile `q`, in milliseconds.
    pub fn ms_at(&self, q: f64) -> f64 {
        self.latency_ns.value_at_quantile(q) as f64 / 1e6
    }
}

/// One partition's file and its write in flight.
struct PartitionFile {
    file: std::fs::File,
    /// Bytes of records written so far (the file's logical end).
    end: u64,
    /// Index of the partition's next record not yet submitted.
    next: u64,
    /// The write in flight: its first record, one past its last, and the end after it.
    in_flight: Option<(u64, u64, u64, u32)>,
}

/// Runs the floor in a scratch directory under `dir` (removed afterwards).
pub fn measure(dir: &Path, plan: &FloorPlan) -> anyhow::Result<FloorResult> {
    if plan.partitions == 0 || plan.record_bytes == 0 || plan.records_per_s <= 0.0 {
        bail!("the floor needs at least one partition, a record size and a rate");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: creating", dir.display()))?;
    let scratch = Scratch::create(&dir.join("tern-bench-floor"))?;
    let total_s = (plan.warmup + plan.duration).as_secs_f64();
    // Records i with i / rate < total (the small bias keeps 500/s × 0.7 s at 350).
    let records_total = (plan.records_per_s * total_s - 1e-6).ceil().max(0.0) as u64;
    let parts = plan.partitions as u64;
    let per_file_bytes = (records_total / parts + 1) * plan.record_bytes as u64 + 2 * BLOCK_BYTES;
    let mut files = Vec::with_capacity(plan.partitions);
    for p in 0..plan.partitions {
        let path = scratch.path().join(format!("{p}.log"));
        prepare(&path, per_file_bytes)?;
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .with_context(|| format!("{}: opening O_DIRECT", path.display()))?;
        files.push(PartitionFile {
            file,
            end: 0,
            next: p as u64,
            in_flight: None,
        });
    }
    // Write back everything before the timed part (the zeros just written, and whatever
    // else is pending on this disk, such as the discards of files deleted just before).
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    // The largest write: everything one partition receives in a second, plus the tail
    // block; a stall longer than that ends the run with an error rather than overflowing.
    let max_write = ((plan.records_per_s / plan.partitions as f64).ceil() as u64 + 1)
        * plan.record_bytes as u64
        + 2 * BLOCK_BYTES;
    let max_write = max_write.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    let buf = pattern_buf(max_write as usize, 5);
    let mut ring = IoUring::new(plan.partitions.next_power_of_two().max(8) as u32)
        .context("creating an io_uring (is io_uring disabled on this kernel?)")?;

    let mut hist = new_histogram()?;
    let mut writes = 0u64;
    let mut records = 0u64;
    let (user0, system0) = crate::cpu::thread_cpu_split();
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let intended = |i: u64| start + Duration::from_secs_f64(i as f64 / plan.records_per_s);
    loop {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(start).as_secs_f64();
        // Records 0..arrived have arrived.
        let arrived = ((elapsed * plan.records_per_s).floor() as u64 + 1).min(records_total);
        let mut submitted = false;
        for (p, f) in files.iter_mut().enumerate() {
            if f.in_flight.is_some() || f.next >= arrived {
                continue;
            }
            let n = (arrived - 1 - f.next) / parts + 1;
            let new_end = f.end + n * plan.record_bytes as u64;
            let from = f.end / BLOCK_BYTES * BLOCK_BYTES;
            let len = new_end.div_ceil(BLOCK_BYTES) * BLOCK_BYTES - from;
            if len > max_write {
                bail!(
                    "partition {p}: {len} bytes waiting, over the floor's buffer; the disk stalled"
                );
            }
            let sqe = opcode::Write::new(types::Fd(f.file.as_raw_fd()), buf.as_ptr(), len as u32)
                .offset(from)
                .rw_flags(libc::RWF_DSYNC)
                .build()
                .user_data(p as u64);
            // SAFETY: the buffer outlives the ring's use of it (it lives until this function
            // returns, after every write completed), and the queue has room: at most one
            // write per partition is in flight and the ring has an entry per partition.
            unsafe { ring.submission().push(&sqe) }.context("floor: submission queue full")?;
            f.in_flight = Some((f.next, f.next + n * parts, new_end, len as u32));
            f.next += n * parts;
            submitted = true;
        }
        let busy = files.iter().any(|f| f.in_flight.is_some());
        if !busy && arrived >= records_total && files.iter().all(|f| f.next >= records_total) {
            break;
        }
        // Wake at the next arrival for an idle partition, or at a completion.
        let next_idle = (arrived..arrived + parts)
            .find(|i| files[(i % parts) as usize].in_flight.is_none() && *i < records_total);
        let wait = next_idle
            .map(|i| intended(i).saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1));
        let ts = types::Timespec::new()
            .sec(wait.as_secs())
            .nsec(wait.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        // Always wait for one completion or the timeout: with nothing in flight the timeout
        // is the next arrival, so an idle floor sleeps as a broker waiting for the network
        // would, instead of spinning (which would inflate its CPU figures).
        let want = 1;
        match ring.submitter().submit_with_args(want, &args) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && !submitted => {}
            Err(e) => return Err(e).context("floor: io_uring_enter"),
        }
        let done = Instant::now();
        for cqe in ring.completion() {
            let p = cqe.user_data() as usize;
            let f = &mut files[p];
            let Some((first, past, new_end, len)) = f.in_flight.take() else {
                bail!("floor: completion for partition {p} with no write in flight");
            };
            if cqe.result() < 0 {
                let e = std::io::Error::from_raw_os_error(-cqe.result());
                bail!("floor: partition {p}: durable write failed: {e}");
            }
            if cqe.result() as u32 != len {
                bail!(
                    "floor: partition {p}: short write of {} of {len} bytes",
                    cqe.result()
                );
            }
            f.end = new_end;
            writes += 1;
            let mut i = first;
            while i < past {
                let at = intended(i);
                if at >= measure_from {
                    hist.saturating_record(done.saturating_duration_since(at).as_nanos() as u64);
                }
                records += 1;
                i += parts;
            }
        }
    }
    let (user1, system1) = crate::cpu::thread_cpu_split();
    drop(ring);
    drop(files);
    drop(scratch);
    Ok(FloorResult {
        latency_ns: hist,
        writes,
        records,
        cpu_user: user1.saturating_sub(user0),
        cpu_system: system1.saturating_sub(system0),
    })
}

/// Writes `bytes` of zeros to a new file at `path` and syncs it, so that later writes are
/// overwrites of allocated, written blocks.
fn prepare(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("{}: creating", path.display()))?;
    let zeros = vec![0u8; PREPARE_CHUNK_BYTES];
    let mut left = bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    while left > 0 {
        let n = left.min(PREPARE_CHUNK_BYTES as u64) as usize;
        file.write_all(&zeros[..n])
            .with_context(|| format!("{}: preparing", path.display()))?;
        left -= n as u64;
    }
    file.sync_all()
        .with_context(|| format!("{}: syncing", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the bookkeeping: every record of a short timeline is written exactly once, and
    /// only records after the warm-up are measured.
    #[test]
    fn every_record_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let plan = FloorPlan {
            partitions: 3,
            record_bytes: 1000,
            records_per_s: 2000.0,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(200),
        };
        let r = measure(dir.path(), &plan).unwrap();
        assert_eq!(r.records, 500);
        assert!(r.writes >= 3 && r.writes <= r.records);
        assert!(!r.latency_ns.is_empty() && r.latency_ns.len() <= r.records);
    }

    /// Guards the refusals of a plan that cannot run.
    #[test]
    fn empty_plans_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = FloorPlan {
            partitions: 0,
            record_bytes: 1000,
            records_per_s: 10.0,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(10),
        };
        assert!(measure(dir.path(), &plan).is_err());
        plan.partitions = 1;
        plan.records_per_s = 0.0;
        assert!(measure(dir.path(), &plan).is_err());
    }
}
