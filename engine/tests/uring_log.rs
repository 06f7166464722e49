//! Integration tests of the partition log on the real disk: tokio-uring, O_DIRECT segment
//! writes, RWF_DSYNC under `flush = always`, and a crash test that SIGKILLs a child process
//! appending to a log and checks that recovery kept every acknowledged append.
//!
//! Every log lives in a temporary directory under `CARGO_TARGET_TMPDIR` (on the target
//! directory's filesystem: `/tmp` may be tmpfs, which refuses O_DIRECT). The storage is opened
//! with `DirectIo::On`, so a filesystem without O_DIRECT fails the test instead of silently
//! testing buffered writes.
//!
//! Outcomes never depend on timing: waits are for conditions, with deadlines only as a guard
//! against hanging forever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tern_engine::batch::build::{batch, filled, Record};
use tern_engine::batch::{BatchError, BatchHeader};
use tern_engine::{
    AppendError, AppendInfo, DirectIo, FlushPolicy, Log, LogConfig, LogError, Offset, Slice,
    UringStorage,
};

/// A client timestamp base (2023-11-14); records carry `T0 + small deltas`.
const T0: i64 = 1_700_000_000_000;
const KIB: usize = 1024;

type ULog = Log<UringStorage>;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A scratch directory on the target directory's (O_DIRECT-capable) filesystem.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Test settings: no time-based roll or retention, so nothing depends on the wall clock.
fn config(segment_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: i64::MAX,
        retention_ms: -1,
        retention_bytes: -1,
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    }
}

async fn open(dir: &Path, config: LogConfig) -> ULog {
    Log::open(UringStorage::new(DirectIo::On), dir, config)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

/// One batch as the test sent it, and the offsets the log gave it.
#[derive(Debug, Clone)]
struct Sent {
    base: i64,
    last: i64,
    bytes: Vec<u8>,
}

impl Sent {
    fn count(&self) -> i64 {
        self.last - self.base + 1
    }

    fn max_timestamp(&self) -> i64 {
        BatchHeader::parse(&self.bytes).unwrap().max_timestamp
    }
}

/// A batch read back, and whether it came from a file slice (cold) or memory (hot).
#[derive(Debug)]
struct Got {
    bytes: Bytes,
    cold: bool,
}

fn records_of(b: &[u8]) -> i64 {
    BatchHeader::parse(b).unwrap().record_count as i64
}

/// A valid batch of random shape and at most `max_batch_bytes`: mostly small, some spanning
/// several 4 KiB blocks, a few large. The base offset field (not covered by the CRC) holds
/// garbage, which the log must overwrite.
fn random_batch(rng: &mut StdRng, ts: i64, max_batch_bytes: usize) -> Vec<u8> {
    let count = rng.gen_range(1..=6);
    // filled(): a 61-byte header, then per record at most 12 bytes besides the value.
    let cap = (max_batch_bytes - 61) / count - 12;
    let value = match rng.gen_range(0..100) {
        0..=59 => rng.gen_range(0..200),
        60..=94 => rng.gen_range(200..3000),
        _ => rng.gen_range(3000..40_000),
    };
    let mut b = filled(ts, count, value.min(cap), rng.gen());
    assert!(b.len() <= max_batch_bytes);
    rng.fill(&mut b[0..8]);
    b
}

/// Splits the bytes of one slice into whole batches; a partial batch fails the test.
fn split_batches(b: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let h = BatchHeader::parse(&b[at..])
            .unwrap_or_else(|| panic!("partial batch header at {at} of a {}-byte slice", b.len()));
        let end = at + h.total_bytes as usize;
        assert!(end <= b.len(), "batch at {at} runs past its slice");
        out.push(b.slice(at..end));
        at = end;
    }
    out
}

/// Reads every batch from `from` up to `to` (a batch boundary), `max_bytes` per read.
async fn read_range(log: &ULog, from: i64, to: i64, max_bytes: u32) -> Vec<Got> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let r = log
            .read(Offset(at), max_bytes, Offset(to))
            .await
            .unwrap_or_else(|e| panic!("read at {at}: {e}"));
        if r.slices.is_empty() {
            assert_eq!(r.next_offset, Offset(at), "an empty read must not advance");
            break;
        }
        let mut total = 0u64;
        for s in &r.slices {
            let cold = match s {
                Slice::Memory(_) => false,
                Slice::File { handle, .. } => {
                    assert!(handle.raw_fd().is_some(), "uring slices carry a descriptor");
                    true
                }
            };
            let bytes = s.to_bytes().unwrap();
            assert_eq!(bytes.len(), s.len());
            total += bytes.len() as u64;
            out.extend(
                split_batches(&bytes)
                    .into_iter()
                    .map(|bytes| Got { bytes, cold }),
            );
        }
        assert_eq!(total, r.bytes, "ReadResult::bytes is the sum of its slices");
        assert!(
            r.next_offset.0 > at,
            "read at {at} returned data but did not advance"
        );
        at = r.next_offset.0;
    }
    out
}

/// The stored batch has the log's base offset and, after it, exactly the bytes sent.
fn check_batch(stored: &[u8], want: &Sent, what: &str) {
    let h = BatchHeader::parse(stored).unwrap();
    assert_eq!(h.base_offset, want.base, "{what}: base offset");
    assert_eq!(h.last_offset(), want.last, "{what}: last offset");
    assert_eq!(stored.len(), want.bytes.len(), "{what}: length");
    assert!(
        stored[8..] == want.bytes[8..],
        "{what}: bytes after the base offset differ from what was sent"
    );
}

fn check_same(got: &[Got], want: &[Sent], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        check_batch(
            &g.bytes,
            w,
            &format!("{what}, batch {i} (offset {})", w.base),
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: number of batches");
}

/// Reads the whole log with several read sizes and compares it with `model`.
async fn verify(log: &ULog, model: &[Sent], what: &str) {
    let start = log.log_start_offset().0;
    let end = log.readable_end().0;
    assert_eq!(
        end,
        model.last().map_or(start, |s| s.last + 1),
        "{what}: readable_end"
    );
    let want: Vec<Sent> = model.iter().filter(|s| s.last >= start).cloned().collect();
    for max_bytes in [1, 8 * KIB as u32, 1 << 20] {
        let got = read_range(log, start, end, max_bytes).await;
        check_same(&got, &want, &format!("{what} (max_bytes {max_bytes})"));
    }
}

/// Appends `batches`, all issued before any is awaited (so they may share writes), and
/// records them in `model`, checking the offsets the log gave.
async fn append_all(log: &ULog, model: &mut Vec<Sent>, batches: Vec<Vec<u8>>) {
    let futs: Vec<_> = batches.iter().map(|b| log.append(&[b])).collect();
    for (f, bytes) in futs.into_iter().zip(batches) {
        let info = f.await.unwrap();
        let base = model.last().map_or(info.first_offset.0, |s| s.last + 1);
        assert_eq!(info.first_offset, Offset(base), "offsets follow call order");
        assert_eq!(info.last_offset, Offset(base + records_of(&bytes) - 1));
        assert_eq!(info.log_append_time_ms, -1, "CreateTime");
        model.push(Sent {
            base,
            last: info.last_offset.0,
            bytes,
        });
    }
}

/// Appends one batch and waits for it.
async fn append_one(log: &ULog, model: &mut Vec<Sent>, bytes: Vec<u8>) -> AppendInfo {
    append_all(log, model, vec![bytes]).await;
    let s = model.last().unwrap();
    AppendInfo {
        first_offset: Offset(s.base),
        last_offset: Offset(s.last),
        log_append_time_ms: -1,
        duplicate: false,
    }
}

fn segment_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

fn segment_files_exist(dir: &Path, base: i64) -> [bool; 3] {
    ["log", "index", "timeindex"].map(|e| segment_path(dir, base, e).exists())
}

fn bases(log: &ULog) -> Vec<i64> {
    log.segment_bases().into_iter().map(|o| o.0).collect()
}

/// The model's batches grouped by the segment (of `bases`) they lie in.
fn by_segment<'a>(model: &'a [Sent], bases: &[i64]) -> BTreeMap<i64, Vec<&'a Sent>> {
    let mut out: BTreeMap<i64, Vec<&Sent>> = bases.iter().map(|b| (*b, Vec::new())).collect();
    for s in model {
        let Some(b) = bases.iter().rev().find(|b| **b <= s.base) else {
            continue;
        };
        out.entry(*b).or_default().push(s);
    }
    out
}

fn seg_bytes(batches: &[&Sent]) -> u64 {
    batches.iter().map(|s| s.bytes.len() as u64).sum()
}

fn expect_out_of_range(r: Result<impl std::fmt::Debug, LogError>, offset: i64, log_start: i64) {
    match r {
        Err(LogError::OffsetOutOfRange {
            offset: o,
            log_start: s,
            ..
        }) => {
            assert_eq!(o, offset);
            assert_eq!(s, log_start);
        }
        other => panic!("offset {offset}: expected OffsetOutOfRange, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Round trip, reopen, close
// ---------------------------------------------------------------------------------------------

// Guards the data path end to end: thousands of mixed-size batches, appended one at a time
// and in groups under flush=always, read back (hot and cold) with the offsets the log gave
// and the bytes that were sent, before and after close + reopen.
#[test]
fn round_trip_mixed_sizes_survives_close_and_reopen() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("orders-0");
        let mut rng = StdRng::seed_from_u64(0x7e51);
        let mut model = Vec::new();
        let log = open(&dir, config(1 << 30)).await;
        assert_eq!(log.readable_end(), Offset(0));
        let mut n = 0;
        while n < 3000 {
            // Windows of 1 (one write per append) up to 40 (group commit) batches.
            let window = if rng.gen_bool(0.3) {
                1
            } else {
                rng.gen_range(2..=40)
            };
            let batches = (0..window)
                .map(|i| random_batch(&mut rng, T0 + (n + i) as i64, 40 * KIB))
                .collect();
            append_all(&log, &mut model, batches).await;
            n += window;
        }
        let stats = log.stats();
        assert_eq!(stats.appends, n as u64);
        assert!(stats.writes >= 1 && stats.writes <= n as u64);
        assert_eq!(
            stats.syncs, stats.writes,
            "flush=always: every write is a dsync write"
        );
        let total: u64 = model.iter().map(|s| s.bytes.len() as u64).sum();
        assert_eq!(log.size_bytes(), total);
        assert_eq!(log.next_offset(), log.readable_end());
        verify(&log, &model, "live").await;

        // The default hot cache (4 MiB) holds only the newest writes: old data is cold.
        let got = read_range(&log, 0, log.readable_end().0, 1 << 20).await;
        assert!(
            got.first().unwrap().cold,
            "the oldest data is read from the file"
        );
        assert!(
            !got.last().unwrap().cold,
            "the newest data is read from memory"
        );

        // `upper` (a high watermark) bounds reads: no batch ending at or above it.
        let mid = &model[model.len() / 2];
        let got = read_range(&log, 0, mid.base + 1, 1 << 20).await;
        assert_eq!(got.len(), model.len() / 2 + usize::from(mid.count() == 1));

        log.close().await.unwrap();
        drop(log);

        let log = open(&dir, config(1 << 30)).await;
        assert_eq!(log.log_start_offset(), Offset(0));
        assert_eq!(log.next_offset(), log.readable_end());
        assert_eq!(log.size_bytes(), total);
        verify(&log, &model, "reopened").await;
        let got = read_range(&log, 0, log.readable_end().0, 1 << 20).await;
        assert!(
            got.iter().all(|g| g.cold),
            "nothing is hot right after open"
        );

        // Appending after reopen continues the offsets and the partial last block.
        for i in 0..50 {
            let b = random_batch(&mut rng, T0 + 10_000 + i, 10 * KIB);
            append_one(&log, &mut model, b).await;
        }
        verify(&log, &model, "appended after reopen").await;
        log.close().await.unwrap();
        drop(log);
        let log = open(&dir, config(1 << 30)).await;
        verify(&log, &model, "reopened twice").await;
    });
}

// Guards close(): appends queued before it complete and are durable, appends after it are
// refused with Closed, and a log dropped without close() reopens with its acknowledged data.
#[test]
fn close_finishes_queued_appends_and_refuses_new_ones() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("t-0");
        let mut rng = StdRng::seed_from_u64(11);
        let log = open(&dir, config(1 << 20)).await;
        let batches: Vec<Vec<u8>> = (0..30)
            .map(|i| random_batch(&mut rng, T0 + i, 8 * KIB))
            .collect();
        let futs: Vec<_> = batches.iter().map(|b| log.append(&[b])).collect();
        log.close().await.unwrap();
        let mut model = Vec::new();
        let mut next = 0;
        for (f, bytes) in futs.into_iter().zip(batches) {
            let info = f.await.unwrap();
            assert_eq!(info.first_offset, Offset(next));
            next = info.last_offset.0 + 1;
            model.push(Sent {
                base: info.first_offset.0,
                last: info.last_offset.0,
                bytes,
            });
        }
        assert_eq!(log.readable_end(), Offset(next));
        let refused = log.append(&[filled(T0, 1, 10, 0)]).await;
        assert!(matches!(refused, Err(AppendError::Closed)), "{refused:?}");
        log.close().await.unwrap(); // a second close is a no-op
        drop(log);

        // Dropped without close(): what was acknowledged is there after reopen.
        let log = open(&dir, config(1 << 20)).await;
        verify(&log, &model, "after close").await;
        for i in 0..7 {
            let b = random_batch(&mut rng, T0 + 100 + i, 8 * KIB);
            append_one(&log, &mut model, b).await;
        }
        drop(log);
        let log = open(&dir, config(1 << 20)).await;
        verify(&log, &model, "after drop without close").await;
    });
}

// ---------------------------------------------------------------------------------------------
// Segments: roll, cold reads, retention
// ---------------------------------------------------------------------------------------------

// Guards roll by segment_bytes: several segments with their three files, each segment as
// full as the rule allows, cold reads as file slices that stop at their segment's end, and
// the same segments and data after reopen.
#[test]
fn roll_by_segment_bytes_and_cold_reads_across_segments() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("roll-0");
        let seg = 64 * KIB as u32;
        let cfg = LogConfig {
            hot_bytes_max: 4096, // only the newest write stays in memory
            ..config(seg)
        };
        let mut rng = StdRng::seed_from_u64(0x5e9);
        let mut model = Vec::new();
        let log = open(&dir, cfg.clone()).await;
        let mut total = 0usize;
        let mut i = 0;
        while total < 1 << 20 {
            let window = rng.gen_range(1..=8);
            let batches: Vec<Vec<u8>> = (0..window)
                .map(|k| random_batch(&mut rng, T0 + i + k, 20 * KIB))
                .collect();
            total += batches.iter().map(Vec::len).sum::<usize>();
            i += window;
            append_all(&log, &mut model, batches).await;
        }
        let segs = bases(&log);
        assert!(segs.len() >= 10, "1 MiB in 64 KiB segments: {segs:?}");
        assert_eq!(segs[0], 0);
        check_segments(&dir, &model, &segs, seg, true);
        check_cold_reads(&log, &model, &segs).await;
        verify(&log, &model, "live").await;

        log.close().await.unwrap();
        drop(log);
        let log = open(&dir, cfg).await;
        assert_eq!(bases(&log), segs, "the same segments after reopen");
        check_cold_reads(&log, &model, &segs).await;
        verify(&log, &model, "reopened").await;
    });
}

/// Each segment starts at a batch, holds at most `segment_bytes`, and was rolled only when
/// the next batch would not fit; its files exist.
/// (`strict`: the segments were filled by appends only, no truncation in between.)
fn check_segments(dir: &Path, model: &[Sent], segs: &[i64], segment_bytes: u32, strict: bool) {
    let groups = by_segment(model, segs);
    let list: Vec<_> = groups.iter().collect();
    for (k, (base, batches)) in list.iter().enumerate() {
        assert_eq!(
            segment_files_exist(dir, **base),
            [true; 3],
            "segment {base}"
        );
        assert_eq!(
            batches.first().map(|s| s.base),
            Some(**base),
            "segment {base} start"
        );
        let size = seg_bytes(batches);
        assert!(size <= segment_bytes as u64, "segment {base}: {size} bytes");
        let on_disk = std::fs::metadata(segment_path(dir, **base, "log"))
            .unwrap()
            .len();
        // The active segment may carry zeros prepared ahead of its data (flush = always).
        let prepared = if k + 1 == list.len() {
            LogConfig::default().prepare_bytes
        } else {
            0
        };
        assert!(
            on_disk >= size && on_disk <= size.next_multiple_of(4096) + prepared,
            "segment {base}: {on_disk} bytes on disk for {size} bytes of data"
        );
        if let Some((_, next)) = list.get(k + 1).filter(|_| strict) {
            let first = next[0].bytes.len() as u64;
            assert!(
                size + first > segment_bytes as u64,
                "segment {base} rolled early: {size} + {first} bytes would have fit"
            );
        }
    }
}

/// A read at each segment's base is served from the file and stops at the segment's end.
async fn check_cold_reads(log: &ULog, model: &[Sent], segs: &[i64]) {
    let groups = by_segment(model, segs);
    let end = log.readable_end().0;
    for (k, base) in segs.iter().enumerate() {
        let r = log
            .read(Offset(*base), u32::MAX, Offset(end))
            .await
            .unwrap();
        let want = &groups[base];
        let seg_end = segs.get(k + 1).copied().unwrap_or(end);
        if k + 1 < segs.len() {
            assert_eq!(r.slices.len(), 1, "segment {base}: one file range");
            assert!(
                matches!(r.slices[0], Slice::File { .. }),
                "segment {base} is cold"
            );
            assert_eq!(
                r.next_offset,
                Offset(seg_end),
                "a cold read stops at its segment"
            );
        }
        let mut got = Vec::new();
        for s in &r.slices {
            if let Slice::File { handle, .. } = s {
                assert!(handle.raw_fd().is_some());
            }
            got.extend(split_batches(&s.to_bytes().unwrap()));
        }
        let got: Vec<Got> = got
            .into_iter()
            .map(|bytes| Got { bytes, cold: true })
            .collect();
        let want: Vec<Sent> = want.iter().map(|s| (*s).clone()).collect();
        let n = got.len();
        check_same(&got, &want[..n.min(want.len())], &format!("segment {base}"));
        assert_eq!(r.next_offset.0, want[n - 1].last + 1);
    }
}

// Guards retention by bytes: the oldest closed segments go (files unlinked, log start moved,
// reads below it refused) while a slice taken before the deletion still reads its bytes.
#[test]
fn retention_by_bytes_deletes_old_segments_but_open_slices_still_read() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("ret-0");
        let retention = 256 * KIB as i64;
        let cfg = LogConfig {
            retention_bytes: retention,
            hot_bytes_max: 4096,
            ..config(64 * KIB as u32)
        };
        let mut rng = StdRng::seed_from_u64(0x4e7);
        let mut model = Vec::new();
        let log = open(&dir, cfg.clone()).await;
        for i in 0..60 {
            let batches = (0..8)
                .map(|k| random_batch(&mut rng, T0 + i * 8 + k, 16 * KIB))
                .collect();
            append_all(&log, &mut model, batches).await;
        }
        let segs = bases(&log);
        assert!(
            log.size_bytes() > 2 * retention as u64,
            "{}",
            log.size_bytes()
        );

        // Slices of the two oldest segments, taken before retention runs.
        let end = log.readable_end().0;
        let early = log.read(Offset(0), u32::MAX, Offset(end)).await.unwrap();
        let second = log
            .read(Offset(segs[1]), u32::MAX, Offset(end))
            .await
            .unwrap();
        assert!(matches!(early.slices[0], Slice::File { .. }));

        let deleted = log.enforce_retention().await.unwrap();
        assert!(deleted >= 2, "deleted {deleted} of {} segments", segs.len());
        let kept = bases(&log);
        assert_eq!(kept[..], segs[deleted..], "the oldest segments go first");
        for b in &segs[..deleted] {
            assert_eq!(
                segment_files_exist(&dir, *b),
                [false; 3],
                "segment {b} unlinked"
            );
        }
        let groups = by_segment(&model, &segs);
        let kept_bytes: u64 = kept.iter().map(|b| seg_bytes(&groups[b])).sum();
        assert_eq!(log.size_bytes(), kept_bytes);
        assert!(
            kept_bytes >= retention as u64,
            "retention keeps at least retention_bytes"
        );
        assert!(
            kept_bytes - seg_bytes(&groups[&kept[0]]) < retention as u64,
            "retention deleted every segment it could"
        );
        assert_eq!(log.log_start_offset(), Offset(kept[0]));
        expect_out_of_range(log.read(Offset(0), 1, Offset(end)).await, 0, kept[0]);
        expect_out_of_range(
            log.read(Offset(kept[0] - 1), 1, Offset(end)).await,
            kept[0] - 1,
            kept[0],
        );

        // The slices taken before deletion still read the right bytes from unlinked files.
        for (r, base) in [(&early, 0), (&second, segs[1])] {
            let mut got = Vec::new();
            for s in &r.slices {
                got.extend(split_batches(&s.to_bytes().unwrap()));
            }
            let want: Vec<Sent> = groups[&base].iter().map(|s| (*s).clone()).collect();
            let got: Vec<Got> = got
                .into_iter()
                .map(|bytes| Got { bytes, cold: true })
                .collect();
            check_same(&got, &want, &format!("slice of deleted segment {base}"));
        }

        let remaining: Vec<Sent> = model
            .iter()
            .filter(|s| s.base >= kept[0])
            .cloned()
            .collect();
        verify(&log, &remaining, "after retention").await;
        assert_eq!(
            log.enforce_retention().await.unwrap(),
            0,
            "nothing more to delete"
        );

        // Appends continue; after reopen the log starts at the first kept segment.
        for i in 0..5 {
            let b = random_batch(&mut rng, T0 + 1000 + i, 4 * KIB);
            append_one(&log, &mut model, b).await;
        }
        log.close().await.unwrap();
        drop(log);
        let log = open(&dir, cfg).await;
        assert_eq!(log.log_start_offset(), Offset(kept[0]));
        let remaining: Vec<Sent> = model
            .iter()
            .filter(|s| s.base >= kept[0])
            .cloned()
            .collect();
        verify(&log, &remaining, "reopened after retention").await;
    });
}

// Guards retention by time: closed segments whose newest record is older than retention_ms
// go, newer ones and the active segment stay. (Record timestamps are far in the past or far
// in the future, so the wall clock cannot change the outcome.)
#[test]
fn retention_by_time_deletes_only_expired_closed_segments() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("rettime-0");
        let cfg = LogConfig {
            retention_ms: 24 * 3600 * 1000,
            ..config(16 * KIB as u32)
        };
        let old_ts = 1_000_000; // 1970
        let future_ts = 4_000_000_000_000; // 2096
        let mut model = Vec::new();
        let log = open(&dir, cfg).await;
        // ~3 segments of old records, then ~3 of future ones, then a few old ones again in
        // the same segments as future ones (a segment's newest record decides).
        let old: Vec<Vec<u8>> = (0..12).map(|i| filled(old_ts + i, 2, 2000, 1)).collect();
        append_all(&log, &mut model, old).await;
        let first_future = log.next_offset().0;
        let mut future: Vec<Vec<u8>> = (0..12).map(|i| filled(future_ts + i, 2, 2000, 2)).collect();
        future.insert(3, filled(old_ts, 1, 100, 3));
        append_all(&log, &mut model, future).await;
        let segs = bases(&log);
        let groups = by_segment(&model, &segs);
        let expired: Vec<i64> = segs[..segs.len() - 1]
            .iter()
            .copied()
            .filter(|b| groups[b].iter().all(|s| s.max_timestamp() < future_ts))
            .collect();
        assert!(expired.len() >= 2, "{segs:?}");
        assert!(expired.iter().all(|b| *b < first_future));
        let deleted = log.enforce_retention().await.unwrap();
        assert_eq!(deleted, expired.len());
        assert_eq!(bases(&log)[..], segs[deleted..]);
        for b in &expired {
            assert_eq!(segment_files_exist(&dir, *b), [false; 3]);
        }
        let start = segs[deleted];
        assert_eq!(log.log_start_offset(), Offset(start));
        let remaining: Vec<Sent> = model.iter().filter(|s| s.base >= start).cloned().collect();
        verify(&log, &remaining, "after time retention").await;
        // tick() runs retention too; nothing more is due.
        log.tick().await.unwrap();
        assert_eq!(bases(&log)[..], segs[deleted..]);
    });
}

// ---------------------------------------------------------------------------------------------
// delete_records, truncate, offset_for_timestamp
// ---------------------------------------------------------------------------------------------

// Guards DeleteRecords: the log start moves (durably), segments wholly below it go, reads
// below it fail with OffsetOutOfRange, it never moves back, and appends continue.
#[test]
fn delete_records_moves_log_start_and_refuses_reads_below_it() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("del-0");
        let cfg = config(64 * KIB as u32);
        let mut rng = StdRng::seed_from_u64(0xde1);
        let mut model = Vec::new();
        let log = open(&dir, cfg.clone()).await;
        for i in 0..100 {
            let b = filled(T0 + i * 10, 4, rng.gen_range(500..3000), i as u8);
            append_one(&log, &mut model, b).await;
        }
        let segs = bases(&log);
        assert!(segs.len() >= 4, "{segs:?}");
        let end = log.readable_end().0;

        // Out of range requests are refused and change nothing.
        expect_out_of_range(log.delete_records(Offset(end + 1)).await, end + 1, 0);
        expect_out_of_range(log.delete_records(Offset(-1)).await, -1, 0);
        assert_eq!(log.log_start_offset(), Offset(0));

        // A mid-batch offset in segment 3: segments 0..=2 are wholly below it.
        let target = model.iter().find(|s| s.base > segs[3]).unwrap();
        let x = target.base + 2;
        assert_eq!(log.delete_records(Offset(x)).await.unwrap(), Offset(x));
        assert_eq!(log.log_start_offset(), Offset(x));
        assert_eq!(bases(&log)[..], segs[3..]);
        for b in &segs[..3] {
            assert_eq!(
                segment_files_exist(&dir, *b),
                [false; 3],
                "segment {b} deleted"
            );
        }
        for below in [0, segs[3], x - 1] {
            expect_out_of_range(log.read(Offset(below), 1, Offset(end)).await, below, x);
        }
        // A read at the log start returns the batch holding it, whole.
        let r = log.read(Offset(x), 1, Offset(end)).await.unwrap();
        assert_eq!(r.log_start, Offset(x));
        let got = split_batches(&r.slices[0].to_bytes().unwrap());
        check_batch(&got[0], target, "batch holding the log start");
        let remaining: Vec<Sent> = model.iter().filter(|s| s.last >= x).cloned().collect();
        verify(&log, &remaining, "after delete_records").await;

        // It never moves back, and truncation below it is refused.
        assert_eq!(log.delete_records(Offset(x - 5)).await.unwrap(), Offset(x));
        expect_out_of_range(log.truncate(Offset(x - 1)).await, x - 1, x);
        assert_eq!(log.log_start_offset(), Offset(x));

        // The log start survives a reopen.
        log.close().await.unwrap();
        drop(log);
        let log = open(&dir, cfg.clone()).await;
        assert_eq!(log.log_start_offset(), Offset(x));
        expect_out_of_range(log.read(Offset(x - 1), 1, Offset(end)).await, x - 1, x);
        verify(&log, &remaining, "reopened after delete_records").await;

        // Deleting up to the end leaves only the active segment; appends continue there.
        let end = log.readable_end().0;
        assert_eq!(log.delete_records(Offset(end)).await.unwrap(), Offset(end));
        assert_eq!(bases(&log).len(), 1);
        let r = log
            .read(Offset(end), u32::MAX, Offset(i64::MAX))
            .await
            .unwrap();
        assert!(r.slices.is_empty());
        assert_eq!(r.next_offset, Offset(end));
        let info = append_one(&log, &mut model, filled(T0 + 5000, 3, 100, 9)).await;
        assert_eq!(info.first_offset, Offset(end));
        drop(log);
        let log = open(&dir, cfg).await;
        assert_eq!(log.log_start_offset(), Offset(end));
        let remaining: Vec<Sent> = model.iter().filter(|s| s.last >= end).cloned().collect();
        verify(&log, &remaining, "reopened after deleting everything").await;
    });
}

// Guards truncate: a batch holding the offset is removed whole, later segments go, the next
// append gets the first removed offset (also into a partial block and into an emptied
// segment), and the result survives reopen.
#[test]
fn truncate_then_append_continues_from_the_truncated_offset() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("trunc-0");
        let cfg = config(64 * KIB as u32);
        let mut rng = StdRng::seed_from_u64(0x7c);
        let mut model = Vec::new();
        let log = open(&dir, cfg.clone()).await;
        for i in 0..25 {
            let batches = (0..6)
                .map(|k| random_batch(&mut rng, T0 + i * 6 + k, 12 * KIB))
                .collect();
            append_all(&log, &mut model, batches).await;
        }
        let segs = bases(&log);
        assert!(segs.len() >= 5, "{segs:?}");

        // At or past the end: nothing changes.
        let end = log.next_offset().0;
        log.truncate(Offset(end)).await.unwrap();
        log.truncate(Offset(end + 100)).await.unwrap();
        assert_eq!(log.readable_end(), Offset(end));
        verify(&log, &model, "no-op truncate").await;

        // Inside the active segment, mid-batch: the last two batches go.
        while model
            .iter()
            .filter(|s| s.base >= *bases(&log).last().unwrap())
            .count()
            < 3
        {
            let b = filled(T0 + 800, 3, 50, 5);
            append_one(&log, &mut model, b).await;
        }
        let segs = bases(&log);
        let k = model.len() - 2;
        let cut = model[k].base + (model[k].count() - 1).min(1);
        log.truncate(Offset(cut)).await.unwrap();
        model.truncate(k);
        assert_eq!(log.next_offset(), Offset(model[k - 1].last + 1));
        assert_eq!(log.readable_end(), log.next_offset());
        assert_eq!(bases(&log), segs);
        verify(&log, &model, "truncated in the active segment").await;
        let b = random_batch(&mut rng, T0 + 900, 4 * KIB);
        let info = append_one(&log, &mut model, b).await;
        assert_eq!(info.first_offset.0, model[k - 1].last + 1);
        verify(&log, &model, "appended after truncate").await;

        // Into an older segment, mid-batch in its last batch: the later segments go.
        let k = model.iter().position(|s| s.base >= segs[3]).unwrap() - 1;
        assert!(
            model[k].base > segs[2],
            "segment 2 holds more than one batch"
        );
        let cut = model[k].base + model[k].count() / 2;
        log.truncate(Offset(cut)).await.unwrap();
        model.truncate(k);
        assert_eq!(bases(&log)[..], segs[..3]);
        for b in &segs[3..] {
            assert_eq!(
                segment_files_exist(&dir, *b),
                [false; 3],
                "segment {b} removed"
            );
        }
        verify(&log, &model, "truncated into segment 2").await;
        let old_end = end;
        expect_out_of_range(
            log.read(Offset(old_end - 1), 1, Offset(old_end)).await,
            old_end - 1,
            0,
        );
        for i in 0..40 {
            let b = random_batch(&mut rng, T0 + 1000 + i, 12 * KIB);
            let info = append_one(&log, &mut model, b).await;
            if i == 0 {
                assert_eq!(info.first_offset.0, model[k - 1].last + 1);
            }
        }
        assert!(bases(&log).len() > 3, "appends roll again");
        verify(&log, &model, "appended after truncating into segment 2").await;

        // Exactly at a segment's base: that segment is emptied and the next append lands there.
        let segs = bases(&log);
        let b1 = segs[1];
        log.truncate(Offset(b1)).await.unwrap();
        let k = model.iter().position(|s| s.base == b1).unwrap();
        model.truncate(k);
        assert_eq!(log.next_offset(), Offset(b1));
        verify(&log, &model, "truncated at a segment base").await;
        let info = append_one(&log, &mut model, filled(T0 + 2000, 2, 300, 4)).await;
        assert_eq!(info.first_offset, Offset(b1));
        for i in 0..10 {
            let b = random_batch(&mut rng, T0 + 2001 + i, 8 * KIB);
            append_one(&log, &mut model, b).await;
        }
        verify(&log, &model, "appended at a segment base").await;

        log.close().await.unwrap();
        drop(log);
        let log = open(&dir, cfg).await;
        verify(&log, &model, "reopened after truncations").await;
        check_segments(&dir, &model, &bases(&log), 64 * KIB as u32, false);
    });
}

// Guards truncate's exclusion: an append issued while a truncation runs is refused with
// Truncating and writes nothing; once it is done, appends continue at the cut.
#[test]
fn appends_during_truncate_are_refused() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("trunc-busy-0");
        let log = open(&dir, config(64 * KIB as u32)).await;
        let mut rng = StdRng::seed_from_u64(0xb5);
        let mut model = Vec::new();
        for i in 0..40 {
            append_one(&log, &mut model, random_batch(&mut rng, T0 + i, 8 * KIB)).await;
        }
        let k = 25;
        let cut = model[k].base;
        // join! polls the truncation first: it marks the log and waits for its IO, then the
        // append is issued.
        let (truncated, refused) = tokio::join!(log.truncate(Offset(cut)), async {
            log.append(&[filled(T0, 1, 10, 0)]).await
        });
        truncated.unwrap();
        assert!(
            matches!(refused, Err(AppendError::Truncating)),
            "{refused:?}"
        );
        model.truncate(k);
        assert_eq!(log.next_offset(), Offset(cut));
        verify(&log, &model, "after truncate").await;
        let info = append_one(&log, &mut model, filled(T0 + 99, 2, 10, 1)).await;
        assert_eq!(info.first_offset, Offset(cut));
        verify(&log, &model, "appended after truncate").await;
    });
}

/// Record `i` of batch `k` in the timestamp tests has timestamp `T0 + 10k + i`; batches hold
/// five records, so offset `5k + i` has that timestamp.
fn ts_batch(k: i64, value_bytes: usize) -> Vec<u8> {
    filled(T0 + 10 * k, 5, value_bytes, k as u8)
}

async fn check_timestamps(log: &ULog, batches: i64, what: &str) {
    let at = |ts| async move { log.offset_for_timestamp(ts).await.unwrap() };
    assert_eq!(
        at(0).await,
        Some((Offset(0), T0)),
        "{what}: before everything"
    );
    assert_eq!(at(T0).await, Some((Offset(0), T0)), "{what}");
    for k in (0..batches).step_by(7).chain([batches - 1]) {
        for i in 0..5 {
            let ts = T0 + 10 * k + i;
            assert_eq!(
                at(ts).await,
                Some((Offset(5 * k + i), ts)),
                "{what}: ts {ts}"
            );
        }
        // Between batch k's newest record and batch k + 1.
        let ts = T0 + 10 * k + 7;
        let want = (k + 1 < batches).then_some((Offset(5 * (k + 1)), T0 + 10 * (k + 1)));
        assert_eq!(at(ts).await, want, "{what}: ts {ts}");
    }
    assert_eq!(
        at(T0 + 10 * batches).await,
        None,
        "{what}: after everything"
    );
}

// Guards ListOffsets by timestamp: per-record answers within batches, across segments, from
// the hot tail and from disk, and after reopen (time indexes read back).
#[test]
fn offset_for_timestamp_across_segments_and_reopen() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("ts-0");
        let cfg = LogConfig {
            index_interval_bytes: 1024,
            ..config(32 * KIB as u32)
        };
        let mut model = Vec::new();
        let log = open(&dir, cfg.clone()).await;
        let n = 300;
        for k in 0..n {
            append_one(&log, &mut model, ts_batch(k, 100 + (k as usize * 37) % 500)).await;
        }
        assert!(bases(&log).len() >= 5);
        check_timestamps(&log, n, "live").await;
        log.close().await.unwrap();
        drop(log);
        let log = open(&dir, cfg.clone()).await;
        check_timestamps(&log, n, "reopened after close").await;
        // Dropped without close: the time index of the active segment is rebuilt by recovery.
        for k in n..n + 40 {
            append_one(&log, &mut model, ts_batch(k, 200)).await;
        }
        drop(log);
        let log = open(&dir, cfg).await;
        check_timestamps(&log, n + 40, "reopened after drop").await;
        verify(&log, &model, "data").await;
    });
}

// Guards offset_for_timestamp once DeleteRecords moved the log start into a batch: the answer
// is the first record at or after the log start whose timestamp is at least the target, with
// that record's timestamp (Kafka's ListOffsets skips records below the log start).
#[test]
fn offset_for_timestamp_after_delete_records_names_the_record_at_log_start() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("tsdel-0");
        let log = open(&dir, config(32 * KIB as u32)).await;
        let mut model = Vec::new();
        for k in 0..100 {
            append_one(&log, &mut model, ts_batch(k, 400)).await;
        }
        let mut wrong = Vec::new();
        let mut check = |what: &str, got: Option<(Offset, i64)>, want: (i64, i64)| {
            if got != Some((Offset(want.0), want.1)) {
                wrong.push(format!(
                    "{what}: got {got:?}, want offset {} ts {}",
                    want.0, want.1
                ));
            }
        };
        // Log start at record 3 of batch 40: offset 203, timestamp T0 + 403.
        let x = 5 * 40 + 3;
        log.delete_records(Offset(x)).await.unwrap();
        let r = log.offset_for_timestamp(T0).await.unwrap();
        check("target before the log start", r, (x, T0 + 403));
        let r = log.offset_for_timestamp(T0 + 401).await.unwrap();
        check("target at a record below the log start", r, (x, T0 + 403));
        let r = log.offset_for_timestamp(T0 + 404).await.unwrap();
        check("target after the log start", r, (x + 1, T0 + 404));

        // Timestamps out of order inside a batch: b + 500, b, b, b + 600 at e..=e + 3. With the
        // log start at e + 1, the first record at or after b + 200 is e + 3.
        let b = T0 + 100_000;
        let rec = |delta| Record {
            key: None,
            value: Some(b"v"),
            timestamp_delta_ms: delta,
        };
        let info = append_one(
            &log,
            &mut model,
            batch(b, &[rec(500), rec(0), rec(0), rec(600)]),
        )
        .await;
        let e = info.first_offset.0;
        log.delete_records(Offset(e + 1)).await.unwrap();
        let r = log.offset_for_timestamp(b + 200).await.unwrap();
        check("out-of-order timestamps", r, (e + 3, b + 600));
        assert!(wrong.is_empty(), "{wrong:#?}");
    });
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

fn recrc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// What must not change when an append is refused.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    readable_end: Offset,
    next_offset: Offset,
    size_bytes: u64,
    appends: u64,
    writes: u64,
    file_len: u64,
}

fn snapshot(log: &ULog) -> Snapshot {
    let active = *log.segment_bases().last().unwrap();
    let stats = log.stats();
    Snapshot {
        readable_end: log.readable_end(),
        next_offset: log.next_offset(),
        size_bytes: log.size_bytes(),
        appends: stats.appends,
        writes: stats.writes,
        file_len: std::fs::metadata(log.segment_file(active)).unwrap().len(),
    }
}

// Guards validation: corrupt, old-format, truncated, empty, record-less and oversized
// batches are refused with their typed error, nothing of the append is written, and the next
// good append gets the next offset.
#[test]
fn bad_batches_are_refused_and_nothing_is_written() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("bad-0");
        let seg = 64 * KIB as u32;
        let log = open(&dir, config(seg)).await;
        let mut model = Vec::new();
        // A partial last block to protect.
        append_one(&log, &mut model, filled(T0, 3, 1000, 1)).await;
        append_one(&log, &mut model, filled(T0 + 1, 2, 77, 2)).await;

        let good = filled(T0 + 2, 3, 100, 3);
        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0x55;
        let mut magic1 = good.clone();
        magic1[16] = 1;
        let mut magic7 = good.clone();
        magic7[16] = 7;
        let mut bad_delta = good.clone();
        bad_delta[23..27].copy_from_slice(&5i32.to_be_bytes());
        recrc(&mut bad_delta);
        let mut bad_codec = good.clone();
        bad_codec[22] |= 0x07;
        recrc(&mut bad_codec);
        let truncated = good[..good.len() - 7].to_vec();
        let short = good[..40].to_vec();
        let no_records = batch(T0, &[]);
        let huge = filled(T0, 1, seg as usize + 100, 4);

        type Check = fn(&AppendError) -> bool;
        let cases: Vec<(&str, Vec<Vec<u8>>, Check)> = vec![
            ("wrong CRC", vec![bad_crc.clone()], |e| {
                matches!(e, AppendError::Batch(BatchError::BadCrc { index: 0, .. }))
            }),
            ("magic 1", vec![magic1], |e| {
                matches!(
                    e,
                    AppendError::Batch(BatchError::OldMagic { index: 0, magic: 1 })
                )
            }),
            ("magic 7", vec![magic7], |e| {
                matches!(
                    e,
                    AppendError::Batch(BatchError::BadMagic { index: 0, magic: 7 })
                )
            }),
            ("lastOffsetDelta", vec![bad_delta], |e| {
                matches!(
                    e,
                    AppendError::Batch(BatchError::BadOffsetDelta { index: 0, .. })
                )
            }),
            ("codec 7", vec![bad_codec], |e| {
                matches!(
                    e,
                    AppendError::Batch(BatchError::BadCompression { index: 0, codec: 7 })
                )
            }),
            ("truncated batch", vec![truncated], |e| {
                matches!(
                    e,
                    AppendError::Batch(BatchError::LengthMismatch { index: 0, .. })
                )
            }),
            ("shorter than a header", vec![short], |e| {
                matches!(
                    e,
                    AppendError::Batch(BatchError::TooShort { index: 0, len: 40 })
                )
            }),
            ("zero records", vec![no_records], |e| {
                matches!(
                    e,
                    AppendError::Batch(BatchError::NoRecords { index: 0, count: 0 })
                )
            }),
            ("larger than segment_bytes", vec![huge.clone()], |e| {
                matches!(e, AppendError::BatchTooLarge { len, segment_bytes: 65536 }
                    if *len == huge_len())
            }),
            (
                "bad second batch",
                vec![good.clone(), bad_crc.clone()],
                |e| matches!(e, AppendError::Batch(BatchError::BadCrc { index: 1, .. })),
            ),
            ("no batches", vec![], |e| {
                matches!(e, AppendError::Batch(BatchError::Empty))
            }),
        ];
        assert_eq!(huge.len(), huge_len());
        for (what, batches, check) in cases {
            let before = snapshot(&log);
            let r = log.append(&batches).await;
            match &r {
                Err(e) if check(e) => {}
                other => panic!("{what}: unexpected {other:?}"),
            }
            assert_eq!(snapshot(&log), before, "{what}: nothing written");
            // The next good append gets the next offset.
            let info = append_one(&log, &mut model, good.clone()).await;
            assert_eq!(info.first_offset, before.next_offset, "{what}");
        }
        verify(&log, &model, "after refusals").await;
        log.close().await.unwrap();
        drop(log);
        let log = open(&dir, config(seg)).await;
        verify(&log, &model, "reopened after refusals").await;
    });
}

fn huge_len() -> usize {
    filled(T0, 1, 64 * KIB + 100, 4).len()
}

// ---------------------------------------------------------------------------------------------
// Group commit
// ---------------------------------------------------------------------------------------------

// Guards group commit: 200 appends issued before any is awaited complete with consecutive
// offsets in call order, sharing writes (fewer writes than appends); until their write
// completes, readers see none of them.
#[test]
fn concurrent_appends_get_consecutive_offsets_and_share_writes() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("gc-0");
        let log = open(&dir, config(1 << 30)).await;
        let mut rng = StdRng::seed_from_u64(200);
        let mut model = Vec::new();
        append_one(&log, &mut model, filled(T0, 2, 100, 0)).await;
        let before = log.readable_end();
        let stats_before = log.stats();
        let batches: Vec<Vec<u8>> = (0..200)
            .map(|i| random_batch(&mut rng, T0 + i, 8 * KIB))
            .collect();
        let futs: Vec<_> = batches.iter().map(|b| log.append(&[b])).collect();
        // Offsets are assigned, nothing is readable yet (this task has not yielded, so the
        // writer has not run).
        let queued: i64 = batches.iter().map(|b| records_of(b)).sum();
        assert_eq!(log.next_offset(), Offset(before.0 + queued));
        assert_eq!(log.readable_end(), before);
        let r = log.read(before, u32::MAX, Offset(i64::MAX)).await.unwrap();
        assert!(r.slices.is_empty(), "{r:?}");
        let mut next = before.0;
        for (f, bytes) in futs.into_iter().zip(batches) {
            let info = f.await.unwrap();
            assert_eq!(
                info.first_offset,
                Offset(next),
                "consecutive, in call order"
            );
            assert!(
                log.readable_end().0 > info.last_offset.0,
                "complete means readable"
            );
            next = info.last_offset.0 + 1;
            model.push(Sent {
                base: info.first_offset.0,
                last: info.last_offset.0,
                bytes,
            });
        }
        let stats = log.stats();
        assert_eq!(stats.appends - stats_before.appends, 200);
        let writes = stats.writes - stats_before.writes;
        assert!(writes >= 1, "{stats:?}");
        assert!(
            writes < 200,
            "group commit coalesced the appends: {stats:?}"
        );
        verify(&log, &model, "group commit").await;
        drop(log);
        let log = open(&dir, config(1 << 30)).await;
        verify(&log, &model, "reopened").await;
    });
}

// Guards group commit across rolls and the write size bound: many queued appends spread over
// several units (write_bytes_max) and segments, each unit carrying the partial last block,
// all complete in order with the right bytes.
#[test]
fn concurrent_appends_across_rolls_and_write_units() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("gc-roll-0");
        let cfg = LogConfig {
            write_bytes_max: 16 * KIB,
            hot_bytes_max: 64 * KIB,
            ..config(64 * KIB as u32)
        };
        let log = open(&dir, cfg.clone()).await;
        let mut rng = StdRng::seed_from_u64(0x6c);
        let mut model = Vec::new();
        for round in 0..4 {
            let batches: Vec<Vec<u8>> = (0..300)
                .map(|i| random_batch(&mut rng, T0 + round * 1000 + i, 12 * KIB))
                .collect();
            append_all(&log, &mut model, batches).await;
        }
        let stats = log.stats();
        assert_eq!(stats.appends, 1200);
        assert!(stats.writes < 1200, "{stats:?}");
        let segs = bases(&log);
        assert!(segs.len() > 5, "{segs:?}");
        check_segments(&dir, &model, &segs, 64 * KIB as u32, true);
        verify(&log, &model, "live").await;
        drop(log);
        let log = open(&dir, cfg).await;
        verify(&log, &model, "reopened").await;
    });
}

// ---------------------------------------------------------------------------------------------
// Recovery of damaged files, timestamps stamped by the log, flush policies
// ---------------------------------------------------------------------------------------------

fn write_tail(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(at).unwrap();
    f.write_all_at(bytes, at).unwrap();
    f.sync_all().unwrap();
}

/// `sent` as the log would store it at `base`.
fn stored_at(base: i64, sent: &[u8]) -> Vec<u8> {
    let mut b = sent.to_vec();
    b[0..8].copy_from_slice(&base.to_be_bytes());
    b
}

// Guards recovery on the real disk: zeros, a torn batch, a corrupt batch or an out-of-sequence
// batch after the last good one are cut off the file; an intact next batch is kept; a bogus
// last index entry, garbage index files and missing index files are rebuilt from the data.
#[test]
fn recovery_cuts_bad_tails_and_rebuilds_bad_indexes() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("rec-0");
        let cfg = LogConfig {
            index_interval_bytes: 512,
            ..config(1 << 20)
        };
        let mut rng = StdRng::seed_from_u64(0xec);
        let mut model = Vec::new();
        let log = open(&dir, cfg.clone()).await;
        for i in 0..60 {
            append_one(&log, &mut model, random_batch(&mut rng, T0 + i, 8 * KIB)).await;
        }
        log.close().await.unwrap();
        drop(log);
        let seg = segment_path(&dir, 0, "log");
        let size: u64 = model.iter().map(|s| s.bytes.len() as u64).sum();
        let end = model.last().unwrap().last + 1;

        let next = filled(T0 + 100, 3, 700, 9);
        let mut bad_crc = stored_at(end, &next);
        *bad_crc.last_mut().unwrap() ^= 1;
        let torn = stored_at(end, &next)[..next.len() / 2].to_vec();
        let tails = [
            ("zeros", vec![0u8; 5000]),
            ("torn batch", torn),
            ("bad CRC", bad_crc),
            ("out of sequence", stored_at(end + 5, &next)),
            ("garbage", (0..3000).map(|i| (i * 7 + 3) as u8).collect()),
        ];
        for (what, tail) in tails {
            write_tail(&seg, size, &tail);
            let log = open(&dir, cfg.clone()).await;
            assert_eq!(log.readable_end(), Offset(end), "{what}");
            assert_eq!(
                std::fs::metadata(&seg).unwrap().len(),
                size,
                "{what}: tail cut"
            );
            verify(&log, &model, what).await;
            drop(log);
        }

        // An intact batch after the end (written, never acknowledged) is kept.
        write_tail(&seg, size, &stored_at(end, &next));
        let log = open(&dir, cfg.clone()).await;
        model.push(Sent {
            base: end,
            last: end + 2,
            bytes: next,
        });
        verify(&log, &model, "intact next batch").await;
        // A timestamp lookup answered with good indexes, to compare with rebuilt ones.
        let target = model[30].max_timestamp();
        let by_time = log.offset_for_timestamp(target).await.unwrap();
        assert!(by_time.is_some_and(|(o, t)| o.0 <= model[30].last && t >= target));
        let info = append_one(&log, &mut model, filled(T0 + 101, 1, 10, 1)).await;
        assert_eq!(info.first_offset, Offset(end + 3));
        log.close().await.unwrap();
        drop(log);

        // A CRC-valid last index entry that points into the middle of a batch.
        let idx_path = segment_path(&dir, 0, "index");
        let mut idx = std::fs::read(&idx_path).unwrap();
        assert!(idx.len() >= 16 + 2 * 12, "the test needs index entries");
        let last = &idx[idx.len() - 12..];
        let rel = u32::from_le_bytes(last[0..4].try_into().unwrap());
        let pos = u32::from_le_bytes(last[4..8].try_into().unwrap());
        let mut bogus = Vec::new();
        bogus.extend_from_slice(&(rel + 1).to_le_bytes());
        bogus.extend_from_slice(&(pos + 1).to_le_bytes());
        let crc = crc32c::crc32c(&bogus);
        bogus.extend_from_slice(&crc.to_le_bytes());
        idx.extend_from_slice(&bogus);
        std::fs::write(&idx_path, &idx).unwrap();
        let log = open(&dir, cfg.clone()).await;
        verify(&log, &model, "bogus index entry").await;
        assert!(
            !std::fs::read(&idx_path).unwrap().ends_with(&bogus),
            "index rewritten"
        );
        drop(log);

        // Garbage index files, then no index files at all.
        let time_path = segment_path(&dir, 0, "timeindex");
        for what in ["garbage indexes", "missing indexes"] {
            if what == "garbage indexes" {
                std::fs::write(&idx_path, vec![0xa5; 100]).unwrap();
                std::fs::write(&time_path, vec![0x5a; 100]).unwrap();
            } else {
                std::fs::remove_file(&idx_path).unwrap();
                std::fs::remove_file(&time_path).unwrap();
            }
            let log = open(&dir, cfg.clone()).await;
            verify(&log, &model, what).await;
            assert_eq!(
                log.offset_for_timestamp(target).await.unwrap(),
                by_time,
                "{what}"
            );
            let info = append_one(&log, &mut model, filled(T0 + 200, 1, 10, 1)).await;
            assert_eq!(info.first_offset, Offset(model[model.len() - 2].last + 1));
            log.close().await.unwrap();
        }
        let log = open(&dir, cfg).await;
        verify(&log, &model, "final").await;
    });
}

// Guards LogAppendTime on the real disk: the log stamps each batch (timestamp type bit, max
// timestamp, CRC recomputed), every other byte stays as sent, and stamped batches read back
// valid, also after reopen.
#[test]
fn log_append_time_stamps_batches_and_keeps_them_valid() {
    tokio_uring::start(async {
        let tmp = scratch();
        let dir = tmp.path().join("lat-0");
        let cfg = LogConfig {
            timestamp_type: tern_engine::TimestampType::LogAppendTime,
            ..config(1 << 20)
        };
        let mut rng = StdRng::seed_from_u64(0x1a7);
        let log = open(&dir, cfg.clone()).await;
        let batches: Vec<Vec<u8>> = (0..40)
            .map(|i| random_batch(&mut rng, T0 + i, 8 * KIB))
            .collect();
        let futs: Vec<_> = batches.iter().map(|b| log.append(&[b])).collect();
        let mut stamped = Vec::new();
        for (f, sent) in futs.into_iter().zip(&batches) {
            let info = f.await.unwrap();
            assert!(info.log_append_time_ms > 0, "{info:?}");
            stamped.push((info, sent));
        }
        let check = |got: &[Got], what: &str| {
            assert_eq!(got.len(), stamped.len(), "{what}");
            for (g, (info, sent)) in got.iter().zip(&stamped) {
                let b = &g.bytes[..];
                let h = tern_engine::batch::check_stored(b).expect("stamped batch is valid");
                assert_eq!(h.base_offset, info.first_offset.0, "{what}");
                assert!(h.is_log_append_time(), "{what}");
                assert_eq!(h.max_timestamp, info.log_append_time_ms, "{what}");
                assert_eq!(b.len(), sent.len());
                assert_eq!(b[8..17], sent[8..17], "{what}: length, epoch, magic");
                // attributes (big-endian i16 at 21): only the timestamp type bit (0x08) changes.
                assert_eq!(b[21], sent[21], "{what}: attributes");
                assert_eq!(b[22] & !0x08, sent[22] & !0x08, "{what}: attributes");
                assert_eq!(
                    b[23..35],
                    sent[23..35],
                    "{what}: offset delta, base timestamp"
                );
                assert_eq!(b[43..], sent[43..], "{what}: producer fields and records");
            }
        };
        let end = log.readable_end().0;
        check(&read_range(&log, 0, end, 1 << 20).await, "live");
        log.close().await.unwrap();
        drop(log);
        let log = open(&dir, cfg).await;
        check(&read_range(&log, 0, end, 1 << 20).await, "reopened");
    });
}

// Guards flush = never and interval on the real disk: appends complete after a plain write
// (no sync), flush() syncs on demand, and close + reopen returns everything.
#[test]
fn flush_never_and_interval_write_without_sync_until_flushed() {
    tokio_uring::start(async {
        for policy in [FlushPolicy::Never, FlushPolicy::Interval] {
            let tmp = scratch();
            let dir = tmp.path().join("flush-0");
            let cfg = LogConfig {
                flush: policy,
                flush_interval_ms: i64::MAX, // tick() never finds a flush due
                ..config(1 << 30)
            };
            let mut rng = StdRng::seed_from_u64(0xf1);
            let mut model = Vec::new();
            let log = open(&dir, cfg.clone()).await;
            for i in 0..20 {
                let batches = (0..5)
                    .map(|k| random_batch(&mut rng, T0 + i * 5 + k, 8 * KIB))
                    .collect();
                append_all(&log, &mut model, batches).await;
            }
            let stats = log.stats();
            assert!(stats.writes >= 1, "{policy:?}: {stats:?}");
            assert_eq!(stats.syncs, 0, "{policy:?}: no sync on the append path");
            log.tick().await.unwrap();
            assert_eq!(log.stats().syncs, 0, "{policy:?}: no flush due");
            log.flush().await.unwrap();
            assert_eq!(log.stats().syncs, 1, "{policy:?}");
            verify(&log, &model, "live").await;
            log.close().await.unwrap();
            drop(log);
            let log = open(&dir, cfg).await;
            verify(&log, &model, &format!("{policy:?}, reopened")).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Crash: SIGKILL a child process during appends
// ---------------------------------------------------------------------------------------------

const CRASH_TEST: &str = "sigkill_during_appends_loses_no_acknowledged_append";
const CHILD_DIR_ENV: &str = "TERN_CRASH_CHILD";
const CHILD_CYCLE_ENV: &str = "TERN_CRASH_CYCLE";
/// Appends the child keeps outstanding.
const CHILD_APPENDERS: usize = 8;
/// The child stops by itself after this many appends (the parent kills it long before).
const CHILD_MAX_APPENDS: u64 = 200_000;
const KILL_CYCLES: u64 = 3;

fn crash_config() -> LogConfig {
    LogConfig {
        index_interval_bytes: 2048,
        ..config(128 * KIB as u32)
    }
}

/// The batches of the child's append `k` in `cycle`: one or (every fifth append) two, of
/// varied sizes so that most writes end inside a block and the next rewrites it.
fn crash_append(cycle: u64, k: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64((cycle << 40) ^ k ^ 0xc4a5);
    let n = if k % 5 == 4 { 2 } else { 1 };
    (0..n)
        .map(|j| {
            let ts = T0 + (cycle * 1_000_000 + k * 2 + j) as i64;
            let count = rng.gen_range(1..=4);
            let value = match rng.gen_range(0..10) {
                0..=5 => rng.gen_range(0..300),
                6..=8 => rng.gen_range(300..4000),
                _ => rng.gen_range(4000..20_000),
            };
            filled(ts, count, value, rng.gen())
        })
        .collect()
}

/// The batch the parent appends after recovering from kill `cycle`.
fn parent_batch(cycle: u64) -> Vec<u8> {
    let rec = [Record {
        key: Some(b"parent"),
        value: Some(&cycle.to_be_bytes()),
        timestamp_delta_ms: 0,
    }];
    batch(T0 + 999_000 + cycle as i64, &rec)
}

/// The child: opens the log, prints `START <readable_end>`, then appends with
/// [`CHILD_APPENDERS`] appends outstanding, printing `ACK <first> <last> <k>` (and flushing)
/// once append `k` completed, i.e. is durable.
fn crash_child(dir: &str, cycle: u64) {
    fn emit(line: &str) {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // The parent is gone.
            std::process::exit(0);
        }
    }
    tokio_uring::start(async move {
        let log = open(Path::new(dir), crash_config()).await;
        emit(&format!("START {}", log.readable_end().0));
        let next = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let tasks: Vec<_> = (0..CHILD_APPENDERS)
            .map(|_| {
                let (log, next) = (log.clone(), next.clone());
                tokio_uring::spawn(async move {
                    loop {
                        // Taking the index and calling append happen without an await in
                        // between, so offsets follow `k`.
                        let k = next.get();
                        if k >= CHILD_MAX_APPENDS {
                            return;
                        }
                        next.set(k + 1);
                        let info = log.append(&crash_append(cycle, k)).await.unwrap();
                        emit(&format!(
                            "ACK {} {} {k}",
                            info.first_offset.0, info.last_offset.0
                        ));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// One acknowledged append, as the child reported it.
#[derive(Debug, Clone, Copy)]
struct Ack {
    first: i64,
    last: i64,
    k: u64,
}

/// Runs one child on `dir` until it has acknowledged `target` appends, SIGKILLs it, and
/// returns its start offset and every acknowledgement it printed.
fn run_child_until_killed(dir: &Path, cycle: u64, target: usize) -> (i64, Vec<Ack>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CRASH_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_CYCLE_ENV, cycle.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });

    let mut start = None;
    let mut acks = Vec::new();
    let parse = |line: &str, start: &mut Option<i64>, acks: &mut Vec<Ack>| {
        // libtest prints "test <name> ... " without a newline before the test runs, so the
        // child's first line may follow it.
        let at = ["START ", "ACK "]
            .iter()
            .filter_map(|tag| line.find(tag))
            .min()
            .unwrap_or(line.len());
        let f: Vec<&str> = line[at..].split_whitespace().collect();
        match f.as_slice() {
            ["START", s] => *start = Some(s.parse().unwrap()),
            ["ACK", a, b, k] => acks.push(Ack {
                first: a.parse().unwrap(),
                last: b.parse().unwrap(),
                k: k.parse().unwrap(),
            }),
            _ => {} // the test harness's own lines
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.len() < target {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => parse(&line, &mut start, &mut acks),
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "cycle {cycle}: child gave {} of {target} acks ({e:?}); status {status:?}",
                    acks.len()
                );
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "cycle {cycle}: {status:?}"
    );
    // Acks printed before the kill are still in the pipe: each is a durable append.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => parse(&line, &mut start, &mut acks),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("cycle {cycle}: stdout not closed"),
        }
    }
    reader.join().unwrap();
    (start.expect("the child printed START"), acks)
}

/// Reopens the log after kill `cycle`, checks it against `model` (everything before the
/// cycle) and the child's acknowledgements, adds what the child got durable to `model`, and
/// appends once more at the recovered end.
async fn check_recovered(
    dir: &Path,
    cycle: u64,
    start: i64,
    acks: &[Ack],
    model: &mut Vec<Sent>,
) -> usize {
    let log = open(dir, crash_config()).await;
    let end = log.readable_end().0;
    assert_eq!(log.log_start_offset(), Offset(0));
    assert_eq!(log.next_offset(), Offset(end));
    let known_end = model.last().map_or(0, |s| s.last + 1);
    assert_eq!(
        start, known_end,
        "cycle {cycle}: the child started at the known end"
    );

    // Everything readable, contiguous from 0: the known prefix, then a prefix of the child's
    // batches in the order it appended them.
    let got = read_range(&log, 0, end, 1 << 20).await;
    let mut next = 0;
    for g in &got {
        let h = BatchHeader::parse(&g.bytes).unwrap();
        assert_eq!(h.base_offset, next, "cycle {cycle}: offsets are contiguous");
        next = h.last_offset() + 1;
    }
    assert_eq!(next, end, "cycle {cycle}: the batches reach readable_end");
    assert!(got.len() >= model.len(), "cycle {cycle}: earlier data lost");
    check_same(
        &got[..model.len()],
        model,
        &format!("cycle {cycle}: earlier data"),
    );

    // Child appends in order; an append is recovered when all its batches are.
    let mut recovered: Vec<(i64, i64)> = Vec::new(); // per k: first and last offset
    let mut rest = got[model.len()..].iter();
    let mut offset = start;
    'appends: for k in 0.. {
        let batches = crash_append(cycle, k);
        let first = offset;
        for bytes in batches {
            let Some(g) = rest.next() else {
                break 'appends;
            };
            let sent = Sent {
                base: offset,
                last: offset + records_of(&bytes) - 1,
                bytes,
            };
            check_batch(&g.bytes, &sent, &format!("cycle {cycle}: append {k}"));
            offset = sent.last + 1;
            model.push(sent);
        }
        recovered.push((first, offset - 1));
    }
    assert_eq!(
        offset, end,
        "cycle {cycle}: only the child's batches follow"
    );
    for a in acks {
        let Some(&(first, last)) = recovered.get(a.k as usize) else {
            panic!(
                "cycle {cycle}: acknowledged append {} ({}..={}) lost; {} appends recovered",
                a.k,
                a.first,
                a.last,
                recovered.len()
            );
        };
        assert_eq!(
            (a.first, a.last),
            (first, last),
            "cycle {cycle}: append {}",
            a.k
        );
        // And a read at its offset returns it.
        let r = log.read(Offset(a.first), 1, Offset(end)).await.unwrap();
        let b = split_batches(&r.slices[0].to_bytes().unwrap());
        assert_eq!(BatchHeader::parse(&b[0]).unwrap().base_offset, a.first);
    }

    // Appending after recovery continues at readable_end.
    let info = append_one(&log, model, parent_batch(cycle)).await;
    assert_eq!(info.first_offset, Offset(end), "cycle {cycle}");
    assert_eq!(log.readable_end(), Offset(end + 1));
    // Leave the log for the next child closed cleanly or, every other cycle, just dropped.
    if cycle.is_multiple_of(2) {
        log.close().await.unwrap();
    }
    drop(log);
    recovered.len()
}

// Guards the durability promise of flush=always against a real process crash: a child
// appending with 8 appends outstanding is SIGKILLed after a random number of acks, three
// times on the same log; every acknowledged append survives with its offsets and bytes, the
// log is contiguous, and appends continue at the recovered end.
#[test]
fn sigkill_during_appends_loses_no_acknowledged_append() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let cycle = std::env::var(CHILD_CYCLE_ENV).unwrap().parse().unwrap();
        crash_child(&dir, cycle);
        return;
    }
    let tmp = scratch();
    let dir = tmp.path().join("crash-0");
    let mut rng = StdRng::seed_from_u64(0x5161_c111);
    let mut model: Vec<Sent> = Vec::new();
    // TERN_KILL_CYCLES=<n> runs more cycles (a soak); the default keeps the test quick.
    let cycles = std::env::var("TERN_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KILL_CYCLES);
    for cycle in 0..cycles {
        let target = rng.gen_range(50..500);
        let (start, acks) = run_child_until_killed(&dir, cycle, target);
        assert!(acks.len() >= target);
        let recovered = tokio_uring::start(check_recovered(&dir, cycle, start, &acks, &mut model));
        let acked = acks.iter().map(|a| a.k + 1).max().unwrap_or(0) as usize;
        eprintln!(
            "cycle {cycle}: killed after {} acks (target {target}); {recovered} appends recovered, \
             the last acked was #{}",
            acks.len(),
            acked.saturating_sub(1)
        );
        assert!(
            recovered >= acked,
            "cycle {cycle}: {recovered} recovered < {acked} acked"
        );
    }
    // A final clean reopen sees exactly the model.
    tokio_uring::start(async {
        let log = open(&dir, crash_config()).await;
        verify(&log, &model, "after all kill cycles").await;
    });
}
