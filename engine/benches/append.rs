//! CPU cost of the append path, without disk noise (criterion).
//!
//! * `batch/validate_16KiB`: [`batch::validate`] of a 16 KiB RecordBatch: header checks plus
//!   CRC32C over the whole batch, the per-byte work every append pays before anything is
//!   queued.
//! * `append/mem_1KiB_await_each`: [`Log::append`] of one 1 KiB batch on [`MemStorage`]
//!   (`flush = never`), each append awaited before the next: validation, offset assignment,
//!   copy into a write unit, the writer task's wake-up, the (in-memory) write and the
//!   completion: the engine's fixed cost per append.
//! * `append/mem_1KiB_64_in_flight`: the same with 64 appends outstanding, so that queued
//!   appends share write units as under group commit: the cost per append when writes are
//!   amortised.
//!
//! MemStorage is a test disk: each write copies its buffer into an operation log and a file
//! image, which is included in the figures (about one memcpy of the write). It spawns the
//! writer with `spawn_local`, hence the current-thread runtime and `LocalSet`. Each sample
//! gets a fresh disk and log; the disk's operation log is drained (by a flush) every
//! [`FLUSH_EVERY_APPENDS`] appends outside the timed region, so memory stays bounded.
//!
//! Run: `cargo bench -p tern-engine --bench append` (add `-- --quick` for a short run).

use std::collections::VecDeque;
use std::fmt::Display;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tern_engine::batch::{self, build};
use tern_engine::{FlushPolicy, Log, LogConfig, MemStorage};
use tokio::runtime::Runtime;
use tokio::task::LocalSet;

/// Appends between two (untimed) flushes that drain MemStorage's operation log.
const FLUSH_EVERY_APPENDS: u64 = 4096;
/// Outstanding appends in the pipelined benchmark.
const IN_FLIGHT_MAX: usize = 64;

/// Setup failures are bugs of the benchmark (an in-memory disk does not fail): abort.
fn ok<T, E: Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// A batch of about `bytes` bytes in `records` records.
fn batch_of(bytes: usize, records: usize) -> Vec<u8> {
    let value_bytes = (bytes - batch::HEADER_BYTES) / records - 9;
    build::filled(1_700_000_000_000, records, value_bytes, 1)
}

fn validate(c: &mut Criterion) {
    let b = batch_of(16 * 1024, 16);
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Bytes(b.len() as u64));
    g.bench_function("validate_16KiB", |bench| {
        bench.iter(|| batch::validate(black_box(&b), 0))
    });
    g.finish();
}

/// Opens a fresh log on a fresh in-memory disk.
async fn fresh_log() -> Log<MemStorage> {
    let config = LogConfig {
        flush: FlushPolicy::Never,
        retention_ms: -1,
        ..LogConfig::default()
    };
    ok(
        Log::open(MemStorage::new(1_700_000_000_000), "/bench/p-0", config).await,
        "open",
    )
}

/// `iters` appends of `batch` with up to `in_flight` outstanding; returns the time spent
/// appending (flushes excluded).
async fn appends(batch: &[u8], iters: u64, in_flight: usize) -> Duration {
    let log = fresh_log().await;
    let batches = [batch];
    let mut timed = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(FLUSH_EVERY_APPENDS);
        let start = Instant::now();
        let mut q = VecDeque::with_capacity(in_flight);
        for _ in 0..n {
            q.push_back(log.append(&batches));
            if q.len() >= in_flight {
                if let Some(a) = q.pop_front() {
                    ok(a.await, "append");
                }
            }
        }
        while let Some(a) = q.pop_front() {
            ok(a.await, "append");
        }
        timed += start.elapsed();
        ok(log.flush().await, "flush");
        done += n;
    }
    ok(log.close().await, "close");
    timed
}

fn append(c: &mut Criterion) {
    let rt: Runtime = ok(
        tokio::runtime::Builder::new_current_thread().build(),
        "runtime",
    );
    let local = LocalSet::new();
    let b = batch_of(1024, 8);
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mem_1KiB_await_each", |bench| {
        bench.iter_custom(|iters| local.block_on(&rt, appends(&b, iters, 1)))
    });
    g.bench_function("mem_1KiB_64_in_flight", |bench| {
        bench.iter_custom(|iters| local.block_on(&rt, appends(&b, iters, IN_FLIGHT_MAX)))
    });
    g.finish();
}

criterion_group!(benches, validate, append);
criterion_main!(benches);
