//! The partition log on the in-memory, fault-injecting disk: model-based property tests,
//! crash tests at random points, and every failure the disk can produce.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use tern_engine::batch::build;
use tern_engine::storage::memory::{Faults, Rng};
use tern_engine::storage::Storage;
use tern_engine::{
    AppendError, FlushPolicy, Log, LogConfig, LogError, MemStorage, Offset, TimestampType,
};

mod mem;
use mem::{dir, i32_at, read_all, run, small_config, split_batches};

/// A batch of `records` records of `value_bytes`, distinguishable by `seed`.
fn make_batch(ts: i64, records: usize, value_bytes: usize, seed: u8) -> Vec<u8> {
    build::filled(ts, records, value_bytes, seed)
}

/// The model: every batch appended, by base offset, as stored (bytes after offset 8).
#[derive(Default, Clone)]
struct Model {
    batches: Vec<(i64, i64, Vec<u8>)>,
}

impl Model {
    fn push(&mut self, base: i64, count: i64, batch: &[u8]) {
        self.batches
            .push((base, base + count - 1, batch[8..].to_vec()));
    }
    fn from(&self, log_start: i64) -> Vec<(i64, Vec<u8>)> {
        self.batches
            .iter()
            .filter(|(_, last, _)| *last >= log_start)
            .map(|(b, _, d)| (*b, d.clone()))
            .collect()
    }
    fn truncate(&mut self, offset: i64) {
        self.batches.retain(|(_, last, _)| *last < offset);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(usize, usize)>),
    Read(u16, u16),
    Truncate(u16),
    DeleteRecords(u16),
    Retention(i64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec((1usize..20, 1usize..400), 1..4).prop_map(Op::Append),
        2 => (any::<u16>(), 100u16..5000).prop_map(|(o, m)| Op::Read(o, m)),
        1 => any::<u16>().prop_map(Op::Truncate),
        1 => any::<u16>().prop_map(Op::DeleteRecords),
        1 => (0i64..3).prop_map(Op::Retention),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    /// Guards that random appends, reads, truncations, rolls, deletions, retention and
    /// reopens agree with a reference model, and that every read is whole batches in order.
    #[test]
    fn log_agrees_with_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(async move {
            let storage = MemStorage::new(1_000_000);
            let mut config = small_config();
            config.retention_bytes = 64 * 1024;
            let mut log = Log::open(storage.clone(), dir(), config.clone()).await.unwrap();
            let mut model = Model::default();
            let mut last_start = 0;
            for (step, op) in ops.into_iter().enumerate() {
                let now = 1_000_000 + step as i64 * 1000;
                storage.set_now_ms(now);
                match op {
                    Op::Append(spec) => {
                        let batches: Vec<Vec<u8>> = spec.iter().enumerate()
                            .map(|(i, (n, v))| make_batch(now, *n, *v, (step + i) as u8))
                            .collect();
                        let info = log.append(&batches).await.unwrap();
                        let mut base = info.first_offset.0;
                        for b in &batches {
                            let count = i32_at(b, 57) as i64;
                            model.push(base, count, b);
                            base += count;
                        }
                        assert_eq!(base - 1, info.last_offset.0);
                    }
                    Op::Read(o, max) => {
                        let (start, end) = (log.log_start_offset().0, log.readable_end().0);
                        let span = (end - start).max(1);
                        let at = start + o as i64 % span;
                        let upper = at + (o as i64 % 7);
                        let r = log.read(Offset(at), max as u32, Offset(upper)).await.unwrap();
                        let mut got = Vec::new();
                        for s in &r.slices {
                            split_batches(&s.to_bytes().unwrap(), &mut got);
                        }
                        let expect: Vec<_> = model.from(at).into_iter()
                            .take_while(|(b, d)| b + i32_at(d, 49) as i64 - 1 < upper.min(end))
                            .take(got.len().max(1)).collect();
                        if at < upper.min(end) && !expect.is_empty() {
                            prop_assert!(!got.is_empty(), "read at {at} returned nothing");
                        }
                        prop_assert_eq!(&got[..], &expect[..got.len().min(expect.len())]);
                        prop_assert_eq!(got.len() <= expect.len(), true);
                        let total: usize = got.iter().map(|(_, d)| d.len() + 8).sum();
                        prop_assert!(got.len() <= 1 || total <= max as usize);
                    }
                    Op::Truncate(o) => {
                        let (start, end) = (log.log_start_offset().0, log.next_offset().0);
                        let at = start + o as i64 % (end - start + 1);
                        log.truncate(Offset(at)).await.unwrap();
                        // A batch holding `at` goes whole: the log ends at a batch boundary.
                        let new_end = model.batches.iter().find(|(_, l, _)| *l >= at)
                            .map_or(end, |(b, _, _)| *b);
                        model.truncate(at);
                        prop_assert!(log.next_offset().0 <= at);
                        prop_assert_eq!(log.next_offset().0, new_end);
                        // Cutting the batch that holds the log start empties the log there.
                        last_start = last_start.min(new_end);
                    }
                    Op::DeleteRecords(o) => {
                        let (start, end) = (log.log_start_offset().0, log.readable_end().0);
                        let at = start + o as i64 % (end - start + 1);
                        let new_start = log.delete_records(Offset(at)).await.unwrap();
                        prop_assert_eq!(new_start.0, at);
                        let below = log.read(Offset(at - 1), 100, Offset(i64::MAX)).await;
                        if at > 0 {
                            let out_of_range = matches!(below, Err(LogError::OffsetOutOfRange { .. }));
                            prop_assert!(out_of_range);
                        }
                    }
                    Op::Retention(days) => {
                        storage.advance_ms(days * 24 * 3600 * 1000);
                        log.enforce_retention().await.unwrap();
                        // What is left is within retention_bytes plus one segment.
                        prop_assert!(log.size_bytes() <= 64 * 1024 + 16 * 1024);
                    }
                    Op::Reopen => {
                        log.close().await.unwrap();
                        log = Log::open(storage.clone(), dir(), config.clone()).await.unwrap();
                    }
                }
                let start = log.log_start_offset().0;
                prop_assert!(start >= last_start, "log start went back");
                last_start = start;
                let got = read_all(&log, start).await;
                let want = model.from(start);
                // Reads from log_start may begin inside the batch holding it.
                prop_assert_eq!(got, want);
            }
            Ok(())
        })?;
    }
}

/// One crash scenario: a workload with concurrent appends, rolls and retention on a disk
/// that stops making anything durable after a random number of syncs; then a crash image
/// with random torn and lost writes is recovered and checked.
async fn crash_scenario(seed: u64) {
    let mut rng = Rng::new(seed);
    let storage = MemStorage::new(1_000_000);
    let policy = match rng.below(4) {
        0 => FlushPolicy::Never,
        _ => FlushPolicy::Always,
    };
    let config = LogConfig {
        flush: policy,
        retention_ms: 60_000,
        timestamp_type: if rng.chance(4) {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        ..small_config()
    };
    storage.set_faults(Faults {
        freeze_after_syncs: Some(1 + rng.below(60)),
        ..Faults::default()
    });
    let log = Log::open(storage.clone(), dir(), config.clone())
        .await
        .unwrap();
    // offset -> (stored batch bytes after the offset field, durably acknowledged)
    let mut sent: std::collections::BTreeMap<i64, (Vec<u8>, bool)> = Default::default();
    let rounds = 5 + rng.below(30);
    for round in 0..rounds {
        storage.advance_ms(1 + rng.below(20_000) as i64);
        let n = 1 + rng.below(6) as usize;
        let mut pending = Vec::new();
        for k in 0..n {
            let b = make_batch(
                storage.now_ms(),
                1 + rng.below(12) as usize,
                1 + rng.below(700) as usize,
                (round * 7 + k as u64) as u8,
            );
            let fut = log.append(std::slice::from_ref(&b));
            pending.push((b, fut));
        }
        for (b, fut) in pending {
            let info = fut.await.unwrap();
            let durable = policy == FlushPolicy::Always && !storage.is_frozen();
            let mut stored = b.clone();
            if config.timestamp_type == TimestampType::LogAppendTime {
                tern_engine::batch::set_log_append_time(&mut stored, info.log_append_time_ms);
            }
            sent.insert(info.first_offset.0, (stored[8..].to_vec(), durable));
        }
        if rng.chance(5) {
            log.enforce_retention().await.unwrap();
        }
    }
    let image = storage.crash_image(seed ^ 0xDEAD_BEEF);
    let log = Log::open(image.clone(), dir(), config.clone())
        .await
        .unwrap();
    let start = log.log_start_offset().0;
    let got = read_all(&log, start).await;
    // Everything readable was sent at exactly that offset, offsets are contiguous.
    let mut expect_next = got.first().map(|(b, _)| *b);
    for (base, bytes) in &got {
        assert_eq!(Some(*base), expect_next, "seed {seed}: gap at {base}");
        let (sent_bytes, _) = sent
            .get(base)
            .unwrap_or_else(|| panic!("seed {seed}: unknown batch at {base}"));
        assert_eq!(bytes, sent_bytes, "seed {seed}: batch at {base} altered");
        expect_next = Some(base + i32_at(bytes, 49) as i64);
    }
    // Every durably acknowledged batch at or after the log start survived.
    let end = log.readable_end().0;
    for (base, (bytes, durable)) in &sent {
        let last = base + i32_at(bytes, 49) as i64 - 1;
        if *durable && last >= start {
            assert!(
                last < end,
                "seed {seed}: acknowledged batch {base} lost (end {end})"
            );
            assert!(
                got.iter().any(|(b, d)| b == base && d == bytes),
                "seed {seed}: batch {base} missing"
            );
        }
    }
    // Appends continue right after what was recovered.
    let info = log
        .append(&[make_batch(image.now_ms(), 1, 10, 1)])
        .await
        .unwrap();
    assert_eq!(info.first_offset.0, end, "seed {seed}");
}

/// Guards durability and recovery at 1,200 random crash points (TERN_CRASH_SEEDS for more).
#[test]
fn crash_at_random_points_loses_nothing_acknowledged() {
    run(async {
        let seeds: u64 = std::env::var("TERN_CRASH_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1200);
        for seed in 0..seeds {
            crash_scenario(seed).await;
        }
    });
}

/// Guards that a failed write poisons the log with the original error until reopened,
/// and that reopening recovers everything acknowledged before.
#[test]
fn write_failure_poisons_until_reopen() {
    run(async {
        let storage = MemStorage::new(0);
        let log = Log::open(storage.clone(), dir(), small_config())
            .await
            .unwrap();
        log.append(&[make_batch(0, 3, 10, 0)]).await.unwrap();
        storage.set_faults(Faults {
            fail_write_nth: Some(storage.write_count() + 1),
            ..Faults::default()
        });
        let err = log.append(&[make_batch(0, 1, 10, 1)]).await.unwrap_err();
        assert!(matches!(err, AppendError::Poisoned { .. }), "{err}");
        let again = log.append(&[make_batch(0, 1, 10, 2)]).await.unwrap_err();
        assert!(again.to_string().contains("injected I/O error"), "{again}");
        assert_eq!(log.readable_end().0, 3);
        drop(log);
        storage.set_faults(Faults::default());
        let log = Log::open(storage.clone(), dir(), small_config())
            .await
            .unwrap();
        assert_eq!(log.readable_end().0, 3);
        assert_eq!(
            log.append(&[make_batch(0, 1, 10, 3)])
                .await
                .unwrap()
                .first_offset
                .0,
            3
        );
    });
}

/// Guards that a failed fdatasync (here: the sync of a dsync write) poisons the log.
#[test]
fn sync_failure_poisons() {
    run(async {
        let storage = MemStorage::new(0);
        let log = Log::open(storage.clone(), dir(), small_config())
            .await
            .unwrap();
        log.append(&[make_batch(0, 1, 10, 0)]).await.unwrap();
        storage.set_faults(Faults {
            fail_sync_nth: Some(storage.sync_count() + 1),
            ..Faults::default()
        });
        let err = log.append(&[make_batch(0, 1, 10, 1)]).await.unwrap_err();
        assert!(matches!(err, AppendError::Poisoned { .. }), "{err}");
        storage.set_faults(Faults::default());
        assert!(matches!(
            log.append(&[make_batch(0, 1, 10, 1)]).await,
            Err(AppendError::Poisoned { .. })
        ));
    });
}

/// Guards ENOSPC: appends are refused, nothing acknowledged changes, and appends work
/// again once space returns, continuing the offsets without a gap.
#[test]
fn disk_full_refuses_then_recovers() {
    run(async {
        let storage = MemStorage::new(0);
        let log = Log::open(storage.clone(), dir(), small_config())
            .await
            .unwrap();
        let first = make_batch(0, 4, 100, 0);
        log.append(std::slice::from_ref(&first)).await.unwrap();
        storage.set_disk_full(true);
        let a = log.append(&[make_batch(0, 2, 100, 1)]);
        let b = log.append(&[make_batch(0, 2, 100, 2)]);
        assert!(matches!(a.await, Err(AppendError::DiskFull { .. })));
        assert!(matches!(b.await, Err(AppendError::DiskFull { .. })));
        assert_eq!(log.readable_end().0, 4);
        assert_eq!(log.next_offset().0, 4);
        storage.set_disk_full(false);
        let info = log.append(&[make_batch(0, 2, 100, 3)]).await.unwrap();
        assert_eq!(info.first_offset.0, 4);
        let got = read_all(&log, 0).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, first[8..].to_vec());
        drop(log);
        let log = Log::open(storage.crash_image(1), dir(), small_config())
            .await
            .unwrap();
        assert_eq!(log.readable_end().0, 6);
    });
}

/// Guards the refusals of bad input: nothing of a refused append is written.
#[test]
fn bad_batches_write_nothing() {
    run(async {
        let storage = MemStorage::new(0);
        let log = Log::open(storage.clone(), dir(), small_config())
            .await
            .unwrap();
        let good = make_batch(0, 2, 10, 0);
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        let mut magic1 = good.clone();
        magic1[16] = 1;
        let short = good[..good.len() - 3].to_vec();
        let empty = build::batch(0, &[]);
        let huge = make_batch(0, 40, 1000, 0);
        for bad in [&bad_crc, &magic1, &short, &empty, &huge] {
            let r = log.append(&[good.clone(), bad.clone()]).await;
            assert!(r.is_err());
        }
        let none: [Vec<u8>; 0] = [];
        assert!(log.append(&none).await.is_err());
        assert_eq!(log.next_offset().0, 0);
        assert!(read_all(&log, 0).await.is_empty());
        assert_eq!(log.append(&[good]).await.unwrap().first_offset.0, 0);
    });
}

/// Guards group commit: appends issued while a write is in flight share later writes.
#[test]
fn concurrent_appends_coalesce() {
    run(async {
        let storage = MemStorage::new(0);
        let log = Log::open(storage.clone(), dir(), LogConfig::default())
            .await
            .unwrap();
        let futs: Vec<_> = (0..100)
            .map(|i| log.append(&[make_batch(0, 1, 100, i as u8)]))
            .collect();
        for (next, f) in futs.into_iter().enumerate() {
            let info = f.await.unwrap();
            assert_eq!(info.first_offset.0, next as i64);
        }
        let stats = log.stats();
        assert_eq!(stats.appends, 100);
        assert!(stats.writes < 100, "{stats:?}");
    });
}

/// Guards lookup by timestamp (Kafka ListOffsets semantics), per record in uncompressed
/// batches, across segments, including after reopening.
#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    run(async {
        let storage = MemStorage::new(0);
        let log = Log::open(storage.clone(), dir(), small_config())
            .await
            .unwrap();
        for i in 0..200i64 {
            // batch i: 5 records with timestamps 1000*i + 0..5
            log.append(&[make_batch(1000 * i, 5, 50, i as u8)])
                .await
                .unwrap();
        }
        assert!(log.segment_bases().len() > 2);
        for log in [log.clone(), {
            log.close().await.unwrap();
            Log::open(storage.clone(), dir(), small_config())
                .await
                .unwrap()
        }] {
            assert_eq!(
                log.offset_for_timestamp(0).await.unwrap(),
                Some((Offset(0), 0))
            );
            assert_eq!(
                log.offset_for_timestamp(73_003).await.unwrap(),
                Some((Offset(368), 73_003))
            );
            assert_eq!(
                log.offset_for_timestamp(73_005).await.unwrap(),
                Some((Offset(370), 74_000))
            );
            assert_eq!(log.offset_for_timestamp(1_000_000).await.unwrap(), None);
        }
    });
}

/// Guards recovery of damaged index files: a corrupt header or entry is rebuilt.
#[test]
fn corrupt_indexes_are_rebuilt() {
    run(async {
        let storage = MemStorage::new(0);
        let log = Log::open(storage.clone(), dir(), small_config())
            .await
            .unwrap();
        for i in 0..100 {
            log.append(&[make_batch(i, 3, 100, i as u8)]).await.unwrap();
        }
        log.close().await.unwrap();
        let before = read_all(&log, 0).await;
        for base in log.segment_bases() {
            let idx = dir().join(format!("{:020}.index", base.0));
            let mut bytes = storage.read_file(&idx).unwrap();
            if base.0 == 0 {
                bytes[0] = b'X';
            } else if bytes.len() > 30 {
                let n = bytes.len();
                bytes[n - 5] ^= 0xff;
            }
            storage.poke_file(&idx, bytes);
        }
        let log = Log::open(storage.clone(), dir(), small_config())
            .await
            .unwrap();
        assert_eq!(read_all(&log, 0).await, before);
        for at in 0..log.readable_end().0 {
            let r = log.read(Offset(at), 1, Offset(i64::MAX)).await.unwrap();
            assert!(r.next_offset.0 > at);
        }
    });
}

/// Guards tail reads (a leader sending followers what is not yet durable): nothing while
/// they are off; whole batches from a batch start while they are on, as stored (offsets
/// assigned), at least one and then up to the byte budget; nothing from below the readable
/// end, from inside a batch or past the end; the copies go once the batches are readable.
#[test]
fn tail_reads_serve_what_is_not_yet_durable() {
    run(async {
        let storage = MemStorage::new(0);
        let log = Log::open(storage.clone(), dir(), small_config())
            .await
            .unwrap();
        log.append(&[make_batch(0, 2, 50, 0)]).await.unwrap();
        let off = log.append(&[make_batch(0, 3, 50, 1)]);
        assert!(
            log.read_tail(Offset(2), 1 << 20).is_none(),
            "tail reads are off"
        );
        off.await.unwrap();
        log.set_tail_reads(true);
        let (b1, b2) = (make_batch(0, 3, 50, 2), make_batch(0, 4, 50, 3));
        let a1 = log.append(std::slice::from_ref(&b1));
        let a2 = log.append(std::slice::from_ref(&b2));
        assert_eq!(log.readable_end().0, 5, "nothing written yet");
        let (both, next) = log.read_tail(Offset(5), 1 << 20).unwrap();
        assert_eq!(next.0, 12);
        assert_eq!(both.len(), b1.len() + b2.len());
        let (one, next) = log.read_tail(Offset(5), 1).unwrap();
        assert_eq!((one.len(), next.0), (b1.len(), 8), "at least one batch");
        assert_eq!(i64::from_be_bytes(one[..8].try_into().unwrap()), 5);
        assert_eq!(one[8..], b1[8..], "as stored, with its offset");
        let (second, next) = log.read_tail(Offset(8), 1 << 20).unwrap();
        assert_eq!((second.len(), next.0), (b2.len(), 12));
        // Wrong offsets: durable already, inside a batch, past the end.
        for bad in [0, 3, 6, 12, 13, -1] {
            assert!(
                log.read_tail(Offset(bad), 1 << 20).is_none(),
                "offset {bad}"
            );
        }
        a1.await.unwrap();
        a2.await.unwrap();
        assert_eq!(log.readable_end().0, 12);
        assert!(log.read_tail(Offset(8), 1 << 20).is_none(), "readable now");
        let got = read_all(&log, 5).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1[..], both[8..b1.len()]);
        log.set_tail_reads(false);
        let a3 = log.append(&[make_batch(0, 1, 50, 4)]);
        assert!(log.read_tail(Offset(12), 1 << 20).is_none(), "off again");
        a3.await.unwrap();
    });
}

/// A log with tail reads on and one durable batch (offsets 0–1).
async fn tail_reading_log(storage: &MemStorage) -> Log<MemStorage> {
    let log = Log::open(storage.clone(), dir(), small_config())
        .await
        .unwrap();
    log.set_tail_reads(true);
    log.append(&[make_batch(0, 2, 50, 0)]).await.unwrap();
    log
}

/// Guards the rule that makes tail reads safe: offsets handed out before they were durable
/// are never given to other batches. Without a tail read, a full disk refuses and rewinds as
/// always. After one, the writer holds the unit (the followers may hold those offsets):
/// new appends are refused with DiskFull meanwhile, and once space returns the held unit is
/// written at the offsets handed out and the log takes appends again, unpoisoned.
#[test]
fn a_full_disk_after_a_tail_read_holds_the_write_until_space_returns() {
    run(async {
        let storage = MemStorage::new(0);
        let log = tail_reading_log(&storage).await;
        storage.set_disk_full(true);
        let a = log.append(&[make_batch(0, 2, 50, 1)]);
        assert!(matches!(a.await, Err(AppendError::DiskFull { .. })));
        assert_eq!(log.next_offset().0, 2, "rewound: nothing was handed out");
        let b = log.append(&[make_batch(0, 2, 50, 2)]);
        let (sent, next) = log.read_tail(Offset(2), 1 << 20).unwrap();
        assert_eq!(next, Offset(4));
        let b = tokio::task::spawn_local(b);
        // Let the writer meet the full disk and hold the unit.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!b.is_finished(), "held, neither written nor refused");
        assert!(matches!(
            log.append(&[make_batch(0, 1, 50, 3)]).await,
            Err(AppendError::DiskFull { .. })
        ));
        assert_eq!(log.next_offset().0, 4, "a refused append takes no offset");
        storage.set_disk_full(false);
        b.await.unwrap().unwrap();
        log.append(&[make_batch(0, 1, 50, 4)]).await.unwrap();
        let all = read_all(&log, 0).await;
        assert_eq!(
            all.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![0, 2, 4],
            "the held batch at the offsets handed out, then the next"
        );
        // read_all keeps a batch without its base offset (the first 8 bytes).
        assert_eq!(
            all[1].1,
            sent[8..].to_vec(),
            "the bytes the followers were sent"
        );
    });
}

/// A write failure other than a full disk after a tail read poisons the log: the offsets
/// handed out can be neither written nor given to other batches.
#[test]
fn an_io_error_after_a_tail_read_poisons() {
    run(async {
        let storage = MemStorage::new(0);
        let log = tail_reading_log(&storage).await;
        storage.set_faults(Faults {
            fail_write_nth: Some(storage.write_count() + 1),
            ..Faults::default()
        });
        let b = log.append(&[make_batch(0, 2, 50, 2)]);
        assert!(log.read_tail(Offset(2), 1 << 20).is_some());
        assert!(matches!(b.await, Err(AppendError::Poisoned { .. })));
        assert!(matches!(
            log.append(&[make_batch(0, 1, 50, 3)]).await,
            Err(AppendError::Poisoned { .. })
        ));
        assert_eq!(
            read_all(&log, 0).await.len(),
            1,
            "the durable batch is still there"
        );
    });
}

/// A log of `batches` batches of 3 records (offsets 0..3 × batches) spanning several
/// segments, led in epoch 2; the batches as read back.
async fn log_with_segments(
    storage: &MemStorage,
    batches: u8,
) -> (Log<MemStorage>, Vec<(i64, Vec<u8>)>) {
    let log = Log::open(storage.clone(), dir(), small_config())
        .await
        .unwrap();
    log.become_leader(2).await.unwrap();
    for k in 0..batches {
        log.append(&[make_batch(0, 3, 600, k)]).await.unwrap();
    }
    let all = read_all(&log, 0).await;
    (log, all)
}

/// Guards `reset_to` (a follower below its leader's log start): every batch goes, the log
/// starts empty at the offset with no epochs or producers, appends continue there, and a
/// reopen (clean or after a crash) finds the same; a negative offset is refused and
/// changes nothing.
#[test]
fn reset_to_starts_the_log_empty_at_an_offset() {
    run(async {
        let storage = MemStorage::new(0);
        let (log, all) = log_with_segments(&storage, 20).await;
        assert!(log.segment_bases().len() > 2, "{:?}", log.segment_bases());
        assert!(matches!(
            log.reset_to(Offset(-1)).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            read_all(&log, 0).await,
            all,
            "a refused reset changes nothing"
        );
        log.reset_to(Offset(1000)).await.unwrap();
        assert_eq!(
            (
                log.log_start_offset().0,
                log.next_offset().0,
                log.readable_end().0
            ),
            (1000, 1000, 1000)
        );
        assert_eq!(log.segment_bases(), vec![Offset(1000)]);
        assert_eq!(log.latest_epoch(), None);
        assert!(matches!(
            log.read(Offset(5), 1 << 20, Offset(i64::MAX)).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(log
            .read(Offset(1000), 1 << 20, Offset(i64::MAX))
            .await
            .unwrap()
            .slices
            .is_empty());
        let info = log.append(&[make_batch(0, 2, 50, 99)]).await.unwrap();
        assert_eq!(info.first_offset.0, 1000);
        log.close().await.unwrap();
        drop(log);
        for image in [storage.clone(), storage.crash_image(7)] {
            let log = Log::open(image, dir(), small_config()).await.unwrap();
            assert_eq!(
                (log.log_start_offset().0, log.readable_end().0),
                (1000, 1002)
            );
            assert_eq!(read_all(&log, 1000).await.len(), 1);
        }
    });
}

/// Guards `reset_to` under a crash at every sync point it passes: the reopened log is the
/// old one (or a prefix of it, every record as it was) or the new empty one at the offset,
/// never records below the offset next to a start at it.
#[test]
fn reset_to_survives_a_crash_at_every_sync() {
    run(async {
        let mut points = 0;
        for n in 0.. {
            let storage = MemStorage::new(0);
            let (log, all) = log_with_segments(&storage, 20).await;
            let before = storage.sync_count();
            storage.set_faults(Faults {
                freeze_after_syncs: Some(before + n),
                ..Faults::default()
            });
            log.reset_to(Offset(1000)).await.unwrap();
            let syncs = storage.sync_count() - before;
            drop(log);
            for seed in 0..4 {
                let image = storage.crash_image(seed);
                let log = match Log::open(image.clone(), dir(), small_config()).await {
                    Ok(l) => l,
                    Err(e) => panic!(
                        "sync {n} of {syncs}, seed {seed}: {e}; epochs file {:?}",
                        image.read_file(&dir().join("leader-epoch.checkpoint"))
                    ),
                };
                let (start, end) = (log.log_start_offset().0, log.readable_end().0);
                if start >= 1000 {
                    assert_eq!((start, end), (1000, 1000), "sync {n}, seed {seed}");
                } else {
                    let got = read_all(&log, start).await;
                    let want: Vec<_> = all
                        .iter()
                        .filter(|(b, _)| *b >= start && *b < end)
                        .cloned()
                        .collect();
                    assert_eq!(got, want, "sync {n}, seed {seed}: the old log, or a prefix");
                }
            }
            points += 1;
            if n > syncs {
                break;
            }
        }
        assert!(points > 3, "{points}");
    });
}
