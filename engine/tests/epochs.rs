//! Leader epochs in the log, on the in-memory fault-injecting disk: stamping by a leader,
//! replicated appends that keep the leader's offsets and epochs, the durable epoch cache
//! (its rule: the file names the epoch of every durable batch, at any crash point),
//! truncation, and the shard journal's truncation records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use tern_engine::batch::{build, BatchHeader};
use tern_engine::epoch::{EpochCache, EpochError};
use tern_engine::journal;
use tern_engine::storage::memory::{Faults, Rng};
use tern_engine::{
    AppendError, Journal, JournalConfig, Log, LogConfig, LogError, MemStorage, Offset,
    TimestampType,
};

mod mem;
use mem::{read_all, run, small_config};

const JOURNAL_DIR: &str = "/data/journal/0";

fn part_dir(name: &str) -> PathBuf {
    Path::new("/data").join(name)
}

async fn open(storage: &MemStorage, name: &str, config: &LogConfig) -> Log<MemStorage> {
    Log::open(storage.clone(), part_dir(name), config.clone())
        .await
        .unwrap()
}

/// A small shard journal and partition `t-0` attached to it.
async fn journaled(
    storage: &MemStorage,
    config: &LogConfig,
) -> (Journal<MemStorage>, Log<MemStorage>) {
    let jconfig = JournalConfig {
        file_bytes: 64 << 10,
        files: 3,
        inplace_bytes: 0,
    };
    let journal = Journal::open(storage.clone(), JOURNAL_DIR, jconfig)
        .await
        .unwrap();
    let log = open(storage, "t-0", config).await;
    log.attach_journal(&journal);
    (journal, log)
}

fn cache(pairs: &[(i32, i64)]) -> EpochCache {
    EpochCache::from_pairs(pairs).unwrap()
}

/// Every stored batch of the log, whole (base offset field included).
async fn stored_batches(log: &Log<MemStorage>) -> Vec<Vec<u8>> {
    read_all(log, log.log_start_offset().0)
        .await
        .into_iter()
        .map(|(base, rest)| {
            let mut b = base.to_be_bytes().to_vec();
            b.extend_from_slice(&rest);
            b
        })
        .collect()
}

fn header(b: &[u8]) -> BatchHeader {
    BatchHeader::parse(b).unwrap()
}

/// The epoch the cache gives the batch at `base`.
fn epoch_at(c: &EpochCache, base: i64) -> Option<i32> {
    c.entries()
        .iter()
        .rev()
        .find(|e| e.start_offset <= base)
        .map(|e| e.epoch)
}

/// A leader's batch: `records` records at `base` stamped with `epoch`.
fn leader_batch(base: i64, epoch: i32, records: usize, seed: u8) -> Vec<u8> {
    stamped(build::filled(1_000, records, 100, seed), base, epoch)
}

/// `b` placed at `base` and stamped with leader epoch `epoch`, as a leader sends it.
fn stamped(mut b: Vec<u8>, base: i64, epoch: i32) -> Vec<u8> {
    tern_engine::batch::set_base_offset(&mut b, base);
    tern_engine::batch::set_leader_epoch(&mut b, epoch);
    b
}

/// Guards stamping: a leader's appends carry its epoch in `partitionLeaderEpoch`, each epoch
/// starts at the log end when taken, and the cache answers OffsetForLeaderEpoch and
/// survives a reopen; an older epoch is refused.
#[test]
fn a_leader_stamps_its_epoch_and_keeps_the_cache() {
    run(async {
        let storage = MemStorage::new(0);
        let config = small_config();
        let log = open(&storage, "t-0", &config).await;
        // Not leading: batches keep what the client sent (-1).
        log.append(&[build::filled(1_000, 2, 10, 1)]).await.unwrap();
        assert_eq!(log.latest_epoch(), None);
        assert_eq!(log.end_offset_for_epoch(0), None);
        log.become_leader(3).await.unwrap();
        for k in 0..3 {
            log.append(&[build::filled(1_000, 2, 10, k)]).await.unwrap();
        }
        log.become_leader(3).await.unwrap();
        log.become_leader(5).await.unwrap();
        log.append(&[build::filled(1_000, 1, 10, 9)]).await.unwrap();
        assert!(matches!(
            log.become_leader(4).await,
            Err(LogError::Epoch(EpochError::EpochNotAfter {
                epoch: 4,
                latest: 5
            }))
        ));
        let epochs: Vec<i32> = stored_batches(&log)
            .await
            .iter()
            .map(|b| header(b).partition_leader_epoch)
            .collect();
        assert_eq!(epochs, vec![-1, 3, 3, 3, 5]);
        assert_eq!(log.epochs(), cache(&[(3, 2), (5, 8)]));
        assert_eq!(log.end_offset_for_epoch(3), Some((3, 8)));
        assert_eq!(log.end_offset_for_epoch(4), Some((3, 8)));
        assert_eq!(log.end_offset_for_epoch(7), Some((5, 9)));
        assert_eq!(log.end_offset_for_epoch(1), Some((1, 2)));
        log.close().await.unwrap();
        let log = open(&storage, "t-0", &config).await;
        assert_eq!(log.epochs(), cache(&[(3, 2), (5, 8)]));
        // Reopened, it leads nobody until told.
        assert_eq!(log.leader_epoch(), None);
    });
}

/// Guards replicated appends: the follower's log is the leader's byte for byte (offsets,
/// epochs, LogAppendTime), producer state follows without refusal, and wrong input (a gap,
/// an overlap, an epoch going back, a batch with no epoch) is refused, writing nothing.
#[test]
fn a_follower_keeps_the_leaders_batches_and_refuses_bad_ones() {
    run(async {
        let storage = MemStorage::new(0);
        let config = LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..small_config()
        };
        let leader = open(&storage, "leader-0", &config).await;
        leader.become_leader(1).await.unwrap();
        let producer =
            |seq| build::with_producer(build::filled(1_000, 2, 20, seq as u8), 7, 0, seq);
        leader.append(&[producer(0)]).await.unwrap();
        storage.advance_ms(500);
        leader.become_leader(2).await.unwrap();
        leader.append(&[producer(2)]).await.unwrap();
        leader
            .append(&[build::filled(1_000, 3, 20, 5)])
            .await
            .unwrap();
        let from_leader = stored_batches(&leader).await;

        let follower = open(&storage, "follower-0", &config).await;
        storage.advance_ms(10_000);
        for b in &from_leader {
            follower.append_replicated(&[b]).await.unwrap();
        }
        assert_eq!(stored_batches(&follower).await, from_leader);
        assert_eq!(follower.epochs(), leader.epochs());
        assert_eq!(follower.epochs(), cache(&[(1, 0), (2, 2)]));

        let end = follower.next_offset().0;
        let gap = leader_batch(end + 1, 2, 1, 1);
        assert!(matches!(
            follower.append_replicated(&[&gap]).await,
            Err(AppendError::NotContiguous { expected, got }) if expected == end && got == end + 1
        ));
        let overlap = leader_batch(end - 1, 2, 1, 1);
        assert!(matches!(
            follower.append_replicated(&[&overlap]).await,
            Err(AppendError::NotContiguous { .. })
        ));
        let backwards = leader_batch(end, 1, 1, 1);
        assert!(matches!(
            follower.append_replicated(&[&backwards]).await,
            Err(AppendError::Epoch { offset, source: EpochError::EpochNotAfter { epoch: 1, latest: 2 } }) if offset == end
        ));
        let unstamped = leader_batch(end, -1, 1, 1);
        assert!(matches!(
            follower.append_replicated(&[&unstamped]).await,
            Err(AppendError::Epoch {
                source: EpochError::Negative { .. },
                ..
            })
        ));
        // Two batches where the second leaves a gap: neither is written.
        let ok = leader_batch(end, 3, 1, 1);
        let gap2 = leader_batch(end + 2, 3, 1, 1);
        assert!(follower.append_replicated(&[&ok, &gap2]).await.is_err());
        let mut corrupt = leader_batch(end, 3, 1, 1);
        corrupt[70] ^= 1;
        assert!(matches!(
            follower.append_replicated(&[&corrupt]).await,
            Err(AppendError::Batch(_))
        ));
        assert_eq!(follower.next_offset().0, end);
        assert_eq!(follower.epochs(), cache(&[(1, 0), (2, 2)]));

        // The follower becomes leader: the producer's retry of its last batch is answered
        // with the original offsets, and its next sequence is accepted.
        follower.become_leader(4).await.unwrap();
        let retry = follower.append(&[producer(2)]).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.first_offset, Offset(2));
        let next = follower.append(&[producer(4)]).await.unwrap();
        assert!(!next.duplicate);
        assert_eq!(next.first_offset, Offset(end));
        assert_eq!(follower.epochs(), cache(&[(1, 0), (2, 2), (4, end)]));
    });
}

/// Guards truncation: the cut tail's epochs leave the cache (on disk too), a former leader
/// stops stamping, and a truncation past the end changes nothing.
#[test]
fn truncation_cuts_the_epoch_cache() {
    run(async {
        let storage = MemStorage::new(0);
        let config = small_config();
        let log = open(&storage, "t-0", &config).await;
        log.become_leader(1).await.unwrap();
        for k in 0..4 {
            log.append(&[build::filled(1_000, 2, 10, k)]).await.unwrap();
        }
        log.become_leader(2).await.unwrap();
        for k in 0..4 {
            log.append(&[build::filled(1_000, 2, 10, k)]).await.unwrap();
        }
        assert_eq!(log.epochs(), cache(&[(1, 0), (2, 8)]));
        log.truncate(Offset(100)).await.unwrap();
        assert_eq!(log.epochs(), cache(&[(1, 0), (2, 8)]));
        log.truncate(Offset(9)).await.unwrap();
        assert_eq!(log.next_offset(), Offset(8));
        assert_eq!(log.epochs(), cache(&[(1, 0)]));
        assert_eq!(log.leader_epoch(), None);
        // Crash right away: the file was rewritten with the cut cache.
        let image = storage.crash_image(1);
        drop(log);
        let log = open(&image, "t-0", &config).await;
        assert_eq!(log.epochs(), cache(&[(1, 0)]));
        assert_eq!(log.end_offset_for_epoch(2), Some((1, 8)));
    });
}

/// Guards a damaged epoch file: the open is refused with a message that names it.
#[test]
fn a_damaged_epoch_file_refuses_the_open() {
    run(async {
        let storage = MemStorage::new(0);
        let config = small_config();
        let log = open(&storage, "t-0", &config).await;
        log.become_leader(1).await.unwrap();
        log.close().await.unwrap();
        let path = part_dir("t-0").join(tern_engine::epoch::FILE);
        use tern_engine::storage::{FileMode, Storage, StorageFile};
        let f = storage.open(&path, FileMode::Buffered).await.unwrap();
        f.write_bytes_at(vec![0xAB], 13).await.unwrap();
        let err = Log::open(storage.clone(), part_dir("t-0"), config.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("leader-epoch.checkpoint"), "{err}");
        assert!(err.contains("damaged"), "{err}");
    });
}

/// One follower's life with crashes at random points: replicated appends across epochs,
/// truncations, with or without the shard journal. After the crash (and replay) the log
/// holds a prefix of what it was told, every batch's epoch is the one the cache gives its
/// offset, and everything acknowledged is there.
async fn follower_crash_scenario(seed: u64) {
    let mut rng = Rng::new(seed);
    let storage = MemStorage::new(500_000);
    let config = small_config();
    let journaled = rng.chance(2);
    let jconfig = JournalConfig {
        file_bytes: 64 << 10,
        files: 3,
        inplace_bytes: 0,
    };
    let journal = if journaled {
        Some(
            Journal::open(storage.clone(), JOURNAL_DIR, jconfig.clone())
                .await
                .unwrap(),
        )
    } else {
        None
    };
    storage.set_faults(Faults {
        freeze_after_syncs: Some(storage.sync_count() + 1 + rng.below(60)),
        ..Faults::default()
    });
    let log = open(&storage, "t-0", &config).await;
    if let Some(j) = &journal {
        log.attach_journal(j);
    }
    let mut epoch = 1;
    // What the log acknowledged durably: offset -> (epoch, end).
    let mut acked: Vec<(i64, i32, i64)> = Vec::new();
    for _ in 0..5 + rng.below(30) {
        if rng.chance(4) {
            epoch += 1 + rng.below(2) as i32;
        }
        if rng.chance(6) && log.next_offset().0 > 0 {
            if storage.is_frozen() {
                // The crash happened: syncs from here on lie, and a truncation relies on the
                // journal's sync of its record before the segment is cut (appends after the
                // crash point may still land at random, as in the journal's crash test).
                break;
            }
            let at = rng.below(log.next_offset().0 as u64) as i64;
            let r = log.truncate(Offset(at)).await;
            trace(
                seed,
                &format!(
                    "truncate {at}: {r:?} end {} frozen {}",
                    log.next_offset().0,
                    storage.is_frozen()
                ),
            );
            if r.is_err() {
                break;
            }
            let end = log.next_offset().0;
            acked.retain(|(b, _, e)| *b < end && *e <= end);
            continue;
        }
        let base = log.next_offset().0;
        let records = 1 + rng.below(5) as usize;
        let b = leader_batch(base, epoch, records, rng.below(200) as u8);
        let r = log.append_replicated(&[&b]).await;
        trace(
            seed,
            &format!(
                "append {base}+{records} e{epoch}: {:?} frozen {}",
                r.as_ref().map(|_| ()),
                storage.is_frozen()
            ),
        );
        match r {
            Ok(_) if !storage.is_frozen() => acked.push((base, epoch, base + records as i64)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let image = storage.crash_image(seed ^ 0xE90C);
    drop((log, journal));
    if std::env::var("TERN_TRACE").is_ok() {
        let c = journal::CHECKPOINT_FILES
            .iter()
            .filter_map(|n| image.read_file(&Path::new(JOURNAL_DIR).join(n)))
            .filter_map(|b| journal::format::decode_checkpoint(&b))
            .max_by_key(|c| c.sequence);
        trace(seed, &format!("checkpoint {c:?}"));
        let seg = image.read_file(&part_dir("t-0").join("00000000000000000000.log"));
        trace(
            seed,
            &format!(
                "segment bytes {:?}",
                seg.map(|s| s.iter().rposition(|b| *b != 0))
            ),
        );
    }
    if journaled {
        journal::recover(&image, Path::new(JOURNAL_DIR), |n| {
            (n == "t-0").then(|| (part_dir(n), config.clone()))
        })
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    let log = open(&image, "t-0", &config).await;
    let epochs = log.epochs();
    let batches = stored_batches(&log).await;
    let mut next = log.log_start_offset().0;
    for b in &batches {
        let h = header(b);
        assert_eq!(h.base_offset, next, "seed {seed}: gap");
        assert_eq!(
            epoch_at(&epochs, h.base_offset),
            Some(h.partition_leader_epoch),
            "seed {seed}: batch at {} has epoch {} but the cache {epochs:?} says otherwise",
            h.base_offset,
            h.partition_leader_epoch
        );
        next = h.last_offset() + 1;
    }
    for (base, e, end) in &acked {
        let b = batches
            .iter()
            .find(|b| header(b).base_offset == *base)
            .unwrap_or_else(|| panic!("seed {seed}: acknowledged batch at {base} lost"));
        assert_eq!(header(b).partition_leader_epoch, *e, "seed {seed}");
        assert_eq!(header(b).last_offset() + 1, *end, "seed {seed}");
    }
    assert!(
        epochs.entries().iter().all(|e| e.start_offset < next),
        "seed {seed}: {epochs:?} names epochs past the end {next}"
    );
}

fn trace(seed: u64, what: &str) {
    if std::env::var("TERN_TRACE").is_ok() {
        eprintln!("seed {seed}: {what}");
    }
}

/// Guards the epoch cache's durability rule and journaled truncation at random crash points
/// (300 seeds; TERN_EPOCH_CRASH_SEEDS for more).
#[test]
fn epochs_and_truncations_survive_crashes() {
    run(async {
        let seeds: u64 = std::env::var("TERN_EPOCH_CRASH_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let from: u64 = std::env::var("TERN_EPOCH_CRASH_SEED_FROM")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        for seed in from..from + seeds {
            follower_crash_scenario(seed).await;
        }
    });
}

/// Guards the journal's truncation record: batches cut from a journaled log (not yet in its
/// segment) never come back in a replay, and what was appended after the cut does.
#[test]
fn a_replay_honours_truncation_records() {
    run(async {
        for append_after in [false, true] {
            let storage = MemStorage::new(0);
            let config = small_config();
            let (journal, log) = journaled(&storage, &config).await;
            for k in 0..6 {
                let b = leader_batch(k * 2, 1, 2, k as u8);
                log.append_replicated(&[&b]).await.unwrap();
            }
            log.truncate(Offset(6)).await.unwrap();
            if append_after {
                for k in 3..5 {
                    let b = leader_batch(k * 2, 2, 2, 100 + k as u8);
                    log.append_replicated(&[&b]).await.unwrap();
                }
            }
            let expect = stored_batches(&log).await;
            // Segment writes not synced are lost: only the journal brings the tail back.
            let image = storage.crash_image(3);
            drop((log, journal));
            let stats = journal::recover(&image, Path::new(JOURNAL_DIR), |n| {
                (n == "t-0").then(|| (part_dir(n), config.clone()))
            })
            .await
            .unwrap();
            assert_eq!(stats.truncations, 1, "{stats:?}");
            let log = open(&image, "t-0", &config).await;
            assert_eq!(
                stored_batches(&log).await,
                expect,
                "append after: {append_after}"
            );
            let want = if append_after {
                cache(&[(1, 0), (2, 6)])
            } else {
                cache(&[(1, 0)])
            };
            assert_eq!(log.epochs(), want);
        }
    });
}

/// Guards a follower's append of one answer whose batches span a leader change (the last
/// batches of an older epoch, then the first of a newer one): taken whole, the epochs as
/// the leader has them. Found by the leader-kill process test: the newer epoch was noted
/// before the append, and the older batch then looked like going back; the partition's
/// follower refused its leader's batches for good.
#[test]
fn a_follower_takes_batches_that_span_epochs_in_one_append() {
    run(async {
        let storage = MemStorage::new(0);
        let config = small_config();
        let leader = open(&storage, "leader-0", &config).await;
        leader.become_leader(6).await.unwrap();
        leader
            .append(&[build::filled(1_000, 2, 20, 1)])
            .await
            .unwrap();
        leader
            .append(&[build::filled(1_000, 2, 20, 2)])
            .await
            .unwrap();
        leader.become_leader(7).await.unwrap();
        leader
            .append(&[build::filled(1_000, 3, 20, 3)])
            .await
            .unwrap();
        let from_leader = stored_batches(&leader).await;
        assert_eq!(from_leader.len(), 3);

        let follower = open(&storage, "follower-0", &config).await;
        follower
            .append_replicated(&[&from_leader[0]])
            .await
            .unwrap();
        let rest: Vec<&Vec<u8>> = from_leader[1..].iter().collect();
        follower.append_replicated(&rest).await.unwrap();
        assert_eq!(stored_batches(&follower).await, from_leader);
        assert_eq!(follower.epochs(), cache(&[(6, 0), (7, 4)]));
        assert_eq!(follower.latest_epoch(), Some(7));
        // Still refused: a batch of an older epoch after the newer one.
        let back = leader_batch(follower.next_offset().0, 6, 1, 9);
        assert!(matches!(
            follower.append_replicated(&[&back]).await,
            Err(AppendError::Epoch { .. })
        ));
        // And across a restart.
        follower.close().await.unwrap();
        drop(follower);
        let again = open(&storage, "follower-0", &config).await;
        assert_eq!(again.epochs(), cache(&[(6, 0), (7, 4)]));
    });
}

/// A leader's batch of producer `pid` (epoch `producer_epoch`, first sequence `seq`): two
/// records at `base`, stamped with leader epoch `epoch`.
fn producer_batch(base: i64, epoch: i32, pid: i64, producer_epoch: i16, seq: i32) -> Vec<u8> {
    let b = build::with_producer(
        build::filled(1_000, 2, 100, seq as u8),
        pid,
        producer_epoch,
        seq,
    );
    stamped(b, base, epoch)
}

/// Guards what the chaos run found (a node could not start: "producer 1000: epoch 0 is
/// older than the current epoch 2"): a leader's log may hold an idempotent producer's older
/// epoch after a newer one (a leader whose producer state had forgotten the producer took a
/// late batch of the older epoch). A follower took those batches, a checkpoint snapshot kept
/// its producer state at the newer epoch, then a crash: the journal replay refused the
/// older-epoch batches and the node stayed down. The producer state now follows the log,
/// and a replay takes what the log took once.
#[test]
fn a_follower_replays_a_producers_older_epoch_after_a_newer_one() {
    run(async {
        let storage = MemStorage::new(0);
        let config = small_config();
        let (journal, log) = journaled(&storage, &config).await;
        let batches = [
            producer_batch(0, 1, 7, 0, 0),
            producer_batch(2, 1, 7, 0, 2),
            producer_batch(4, 1, 7, 2, 0),
            producer_batch(6, 2, 7, 0, 4),
        ];
        for b in &batches {
            log.append_replicated(&[b]).await.unwrap();
        }
        journal.checkpoint().await.unwrap();
        for k in 4..6 {
            let b = producer_batch(k * 2, 2, 7, 0, k as i32 + 2);
            log.append_replicated(&[&b]).await.unwrap();
        }
        let expect = stored_batches(&log).await;
        let image = storage.crash_image(3);
        drop((log, journal));
        journal::recover(&image, Path::new(JOURNAL_DIR), |n| {
            (n == "t-0").then(|| (part_dir(n), config.clone()))
        })
        .await
        .unwrap();
        let log = open(&image, "t-0", &config).await;
        assert_eq!(stored_batches(&log).await, expect);
        // As a new leader it continues where the log's last batch of the producer ends,
        // and knows that batch as a retry.
        log.become_leader(3).await.unwrap();
        let last = build::with_producer(build::filled(1_000, 2, 100, 7), 7, 0, 7);
        assert!(log.append(&[&last]).await.unwrap().duplicate);
        let next = build::with_producer(build::filled(1_000, 2, 100, 9), 7, 0, 9);
        assert!(!log.append(&[&next]).await.unwrap().duplicate);
    });
}
