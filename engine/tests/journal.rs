//! The shard journal on the in-memory, fault-injecting disk: crash points across journal,
//! segment and checkpoint writes, replay, recycling, poisoning, a full disk, and damaged
//! journal files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tern_engine::batch::build;
use tern_engine::journal::{self, ReplayStats};
use tern_engine::storage::memory::{Faults, Rng};
use tern_engine::storage::Storage;
use tern_engine::{
    AppendError, FlushPolicy, Journal, JournalConfig, JournalError, Log, LogConfig, MemStorage,
    Offset,
};

mod mem;
use mem::{i32_at, read_all, run, small_config};

const JOURNAL_DIR: &str = "/data/journal/0";
const DATA_DIR: &str = "/data";

fn tiny_journal(files: u32, inplace_bytes: usize) -> JournalConfig {
    JournalConfig {
        file_bytes: 64 << 10,
        files,
        inplace_bytes,
    }
}

fn part_dir(name: &str) -> PathBuf {
    Path::new(DATA_DIR).join(name)
}

async fn open_attached(
    storage: &MemStorage,
    journal: &Journal<MemStorage>,
    name: &str,
    config: &LogConfig,
) -> Log<MemStorage> {
    let log = Log::open(storage.clone(), part_dir(name), config.clone())
        .await
        .unwrap();
    log.attach_journal(journal);
    log
}

async fn replay(storage: &MemStorage, config: &LogConfig) -> Result<ReplayStats, JournalError> {
    journal::recover(storage, Path::new(JOURNAL_DIR), |name| {
        name.starts_with("t-")
            .then(|| (part_dir(name), config.clone()))
    })
    .await
}

/// What a partition was sent: offset -> (stored bytes after the offset field, durably
/// acknowledged).
type Sent = BTreeMap<i64, (Vec<u8>, bool)>;

/// Checks a recovered partition against what was sent: contiguous, unaltered, nothing
/// unknown, every durable acknowledgement present.
async fn check_partition(seed: u64, log: &Log<MemStorage>, sent: &Sent) {
    let start = log.log_start_offset().0;
    let got = read_all(log, start).await;
    let mut expect_next = got.first().map(|(b, _)| *b);
    for (base, bytes) in &got {
        assert_eq!(Some(*base), expect_next, "seed {seed}: gap at {base}");
        let (sent_bytes, _) = sent
            .get(base)
            .unwrap_or_else(|| panic!("seed {seed}: unknown batch at {base}"));
        assert_eq!(bytes, sent_bytes, "seed {seed}: batch at {base} altered");
        expect_next = Some(base + i32_at(bytes, 49) as i64);
    }
    let end = log.readable_end().0;
    for (base, (bytes, durable)) in sent {
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
}

/// One crash scenario: three partitions share a tiny journal that recycles its files,
/// with idempotent producers, checkpoints and retention, on a disk that stops making
/// anything durable after a random number of syncs; then a crash image is replayed and
/// every partition checked.
async fn journal_crash_scenario(seed: u64) {
    let mut rng = Rng::new(seed);
    let storage = MemStorage::new(1_000_000);
    let jconfig = tiny_journal(
        2 + rng.below(2) as u32,
        if rng.chance(3) { 2048 } else { 0 },
    );
    let config = LogConfig {
        retention_ms: 60_000,
        ..small_config()
    };
    let journal = Journal::open(storage.clone(), JOURNAL_DIR, jconfig.clone())
        .await
        .unwrap();
    storage.set_faults(Faults {
        freeze_after_syncs: Some(storage.sync_count() + 1 + rng.below(120)),
        ..Faults::default()
    });
    let names = ["t-0", "t-1", "t-2"];
    let mut logs = Vec::new();
    for n in names {
        logs.push(open_attached(&storage, &journal, n, &config).await);
    }
    let mut sent: Vec<Sent> = vec![Sent::new(); names.len()];
    let mut sequences = [0i32; 3];
    let mut last_producer_batch: Vec<Option<(Vec<u8>, i64)>> = vec![None; 3];
    let rounds = 5 + rng.below(40);
    for round in 0..rounds {
        storage.advance_ms(1 + rng.below(20_000) as i64);
        let mut pending = Vec::new();
        for k in 0..1 + rng.below(8) {
            let p = rng.below(3) as usize;
            let records = 1 + rng.below(10) as usize;
            let mut b = build::filled(
                storage.now_ms(),
                records,
                1 + rng.below(900) as usize,
                (round * 11 + k) as u8,
            );
            if rng.chance(2) {
                b = build::with_producer(b, 100 + p as i64, 0, sequences[p]);
                sequences[p] += records as i32;
            }
            let fut = logs[p].append(std::slice::from_ref(&b));
            pending.push((p, b, fut));
        }
        for (p, b, fut) in pending {
            let info = fut.await.unwrap();
            let durable = !storage.is_frozen();
            if b[43..51] != [0xff; 8] {
                last_producer_batch[p] = Some((b.clone(), info.first_offset.0));
            }
            sent[p].insert(info.first_offset.0, (b[8..].to_vec(), durable));
        }
        if rng.chance(6) {
            journal.checkpoint().await.unwrap();
        }
        if rng.chance(8) {
            logs[rng.below(3) as usize]
                .enforce_retention()
                .await
                .unwrap();
        }
    }
    let image = storage.crash_image(seed ^ 0x5EED);
    drop((logs, journal));
    replay(&image, &config)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    for (p, n) in names.iter().enumerate() {
        let log = Log::open(image.clone(), part_dir(n), config.clone())
            .await
            .unwrap();
        check_partition(seed, &log, &sent[p]).await;
        // Producer state came back with the data: a retry of the last batch is answered
        // with its original offsets when that batch survived.
        if let Some((b, offset)) = &last_producer_batch[p] {
            let kept = log.log_start_offset().0..log.readable_end().0;
            if kept.contains(offset) {
                let info = log.append(std::slice::from_ref(b)).await.unwrap();
                assert!(
                    info.duplicate,
                    "seed {seed}: retry of {offset} not a duplicate"
                );
                assert_eq!(info.first_offset.0, *offset, "seed {seed}");
            }
        }
        log.close().await.unwrap();
    }
    // Replay is done once: the journal opens, and a second replay finds nothing.
    let again = replay(&image, &config).await.unwrap();
    assert_eq!(again.records, 0, "seed {seed}");
    Journal::open(image, JOURNAL_DIR, jconfig).await.unwrap();
}

/// Guards the journal's durability at random crash points (600 in CI; set
/// TERN_JOURNAL_CRASH_SEEDS=10000 or more for the extended mode).
#[test]
fn crash_at_random_points_loses_nothing_acknowledged() {
    run(async {
        let seeds: u64 = std::env::var("TERN_JOURNAL_CRASH_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600);
        let from: u64 = std::env::var("TERN_JOURNAL_CRASH_SEED_FROM")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        for seed in from..from + seeds {
            journal_crash_scenario(seed).await;
        }
    });
}

/// Appends `n` batches of about 1 KiB to `log`, returning their offsets and bytes.
async fn fill(log: &Log<MemStorage>, n: usize, seed: u8) -> Sent {
    let mut sent = Sent::new();
    for k in 0..n {
        let b = build::filled(1000, 2, 500, seed.wrapping_add(k as u8));
        let info = log.append(std::slice::from_ref(&b)).await.unwrap();
        sent.insert(info.first_offset.0, (b[8..].to_vec(), true));
    }
    sent
}

/// Guards recycling: far more than the journal's size goes through it, its files stay
/// `journal.files`, checkpoints free them, and a clean close leaves nothing to replay.
#[test]
fn files_are_recycled_and_a_clean_close_needs_no_replay() {
    run(async {
        let storage = MemStorage::new(0);
        let config = small_config();
        let journal = Journal::open(storage.clone(), JOURNAL_DIR, tiny_journal(2, 0))
            .await
            .unwrap();
        let a = open_attached(&storage, &journal, "t-0", &config).await;
        let b = open_attached(&storage, &journal, "t-1", &config).await;
        let sa = fill(&a, 400, 1).await;
        let sb = fill(&b, 400, 2).await;
        let stats = journal.stats();
        assert!(stats.bytes_written > 4 * (64 << 10), "{stats:?}");
        assert!(stats.checkpoints >= 2, "{stats:?}");
        let names = storage.list_dir(Path::new(JOURNAL_DIR)).await.unwrap();
        let files = names.iter().filter(|n| n.ends_with(".journal")).count();
        assert_eq!(files, 2, "{names:?}");
        a.close().await.unwrap();
        b.close().await.unwrap();
        journal.close().await.unwrap();
        assert_eq!(replay(&storage, &config).await.unwrap().records, 0);
        for (n, sent) in [("t-0", &sa), ("t-1", &sb)] {
            let log = Log::open(storage.clone(), part_dir(n), config.clone())
                .await
                .unwrap();
            check_partition(0, &log, sent).await;
        }
    });
}

/// Guards replay after a crash without sync of segments: everything comes from the
/// journal, and replaying twice changes nothing.
#[test]
fn replay_restores_unsynced_segments_once() {
    run(async {
        let storage = MemStorage::new(0);
        let config = small_config();
        let journal = Journal::open(storage.clone(), JOURNAL_DIR, tiny_journal(4, 0))
            .await
            .unwrap();
        let a = open_attached(&storage, &journal, "t-0", &config).await;
        let sent = fill(&a, 20, 3).await;
        // A crash image that keeps only what was made durable: the segment writes are lost.
        let image = storage.crash_image(7);
        drop((a, journal));
        let first = replay(&image, &config).await.unwrap();
        assert!(first.records > 0, "{first:?}");
        assert_eq!(first.partitions, 1);
        let second = replay(&image, &config).await.unwrap();
        assert_eq!(second.records, 0, "{second:?}");
        let log = Log::open(image.clone(), part_dir("t-0"), config.clone())
            .await
            .unwrap();
        assert_eq!(log.readable_end().0, 40);
        check_partition(0, &log, &sent).await;
    });
}

/// Guards poisoning: a failed journal write fails the appends it carried and every later
/// append of every partition of the shard, with the original error.
#[test]
fn a_poisoned_journal_poisons_every_partition() {
    run(async {
        let storage = MemStorage::new(0);
        let config = small_config();
        let journal = Journal::open(storage.clone(), JOURNAL_DIR, tiny_journal(2, 0))
            .await
            .unwrap();
        let a = open_attached(&storage, &journal, "t-0", &config).await;
        let b = open_attached(&storage, &journal, "t-1", &config).await;
        fill(&a, 3, 1).await;
        storage.set_faults(Faults {
            fail_sync_nth: Some(storage.sync_count() + 1),
            ..Faults::default()
        });
        let batch = build::filled(1000, 1, 10, 9);
        let err = a.append(std::slice::from_ref(&batch)).await.unwrap_err();
        assert!(matches!(err, AppendError::Poisoned { .. }), "{err}");
        assert!(err.to_string().contains("injected"), "{err}");
        let err = b.append(std::slice::from_ref(&batch)).await.unwrap_err();
        assert!(matches!(err, AppendError::Poisoned { .. }), "{err}");
        assert_eq!(a.readable_end(), Offset(6));
        assert_eq!(b.readable_end(), Offset(0));
        assert!(matches!(
            journal.checkpoint().await,
            Err(JournalError::Poisoned(_))
        ));
    });
}

/// Guards a full disk: when the journal cannot create its next file, appends are refused
/// with DiskFull before anything is written; once space returns they succeed, and after a
/// crash nothing refused comes back.
#[test]
fn a_full_disk_refuses_appends_without_harm() {
    run(async {
        let storage = MemStorage::new(0);
        let config = small_config();
        let journal = Journal::open(storage.clone(), JOURNAL_DIR, tiny_journal(2, 0))
            .await
            .unwrap();
        let a = open_attached(&storage, &journal, "t-0", &config).await;
        storage.set_faults(Faults {
            disk_full_growing: true,
            ..Faults::default()
        });
        let mut sent = Sent::new();
        let mut refused = 0;
        for k in 0..200u32 {
            let b = build::filled(1000, 1, 900, k as u8);
            match a.append(std::slice::from_ref(&b)).await {
                Ok(info) => {
                    sent.insert(info.first_offset.0, (b[8..].to_vec(), true));
                }
                Err(AppendError::DiskFull { .. }) => refused += 1,
                Err(e) => panic!("unexpected refusal: {e}"),
            }
        }
        assert!(refused > 0, "the disk never filled up");
        let end = a.readable_end().0;
        assert_eq!(end, sent.len() as i64);
        storage.set_faults(Faults::default());
        let mut accepted_after = false;
        for k in 0..100u32 {
            let b = build::filled(1000, 1, 900, 200u32.wrapping_add(k) as u8);
            if let Ok(info) = a.append(std::slice::from_ref(&b)).await {
                sent.insert(info.first_offset.0, (b[8..].to_vec(), true));
                accepted_after = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(accepted_after, "appends never resumed after space returned");
        let image = storage.crash_image(3);
        drop((a, journal));
        replay(&image, &config).await.unwrap();
        let log = Log::open(image, part_dir("t-0"), config.clone())
            .await
            .unwrap();
        check_partition(0, &log, &sent).await;
        assert_eq!(log.readable_end().0, sent.len() as i64);
    });
}

/// Guards a full disk under tail reads (a leader whose followers were sent what it had not
/// yet written): nothing handed out is refused or poisons the log; it is held until space
/// returns and then written at its offsets, appends meanwhile being refused with DiskFull;
/// after a crash every acknowledged batch is there.
#[test]
fn a_full_disk_after_tail_reads_holds_and_resumes() {
    run(async {
        let storage = MemStorage::new(0);
        let config = small_config();
        let journal = Journal::open(storage.clone(), JOURNAL_DIR, tiny_journal(2, 0))
            .await
            .unwrap();
        let a = open_attached(&storage, &journal, "t-0", &config).await;
        a.set_tail_reads(true);
        storage.set_faults(Faults {
            disk_full_growing: true,
            ..Faults::default()
        });
        let mut handed_out = Vec::new();
        let mut refused = 0;
        for k in 0..200u32 {
            let b = build::filled(1000, 1, 900, k as u8);
            let at = a.next_offset();
            let appended = a.append(std::slice::from_ref(&b));
            if a.next_offset() > at {
                assert!(a.read_tail(at, 1 << 20).is_some(), "queued at {at:?}");
                handed_out.push((b, tokio::task::spawn_local(appended)));
            } else {
                assert!(matches!(appended.await, Err(AppendError::DiskFull { .. })));
                refused += 1;
            }
            tokio::task::yield_now().await;
        }
        assert!(refused > 0, "the disk never filled up");
        storage.set_faults(Faults::default());
        let mut sent = Sent::new();
        for (b, h) in handed_out {
            let info = h
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("handed out, then {e}"));
            sent.insert(info.first_offset.0, (b[8..].to_vec(), true));
        }
        let b = build::filled(1000, 1, 900, 255);
        let info = a.append(std::slice::from_ref(&b)).await.unwrap();
        sent.insert(info.first_offset.0, (b[8..].to_vec(), true));
        let image = storage.crash_image(5);
        drop((a, journal));
        replay(&image, &config).await.unwrap();
        let log = Log::open(image, part_dir("t-0"), config.clone())
            .await
            .unwrap();
        check_partition(0, &log, &sent).await;
        assert_eq!(log.readable_end().0, sent.len() as i64);
    });
}

/// Writes a journal with some records for two partitions and leaves it unreplayed.
async fn unreplayed_journal(storage: &MemStorage, config: &LogConfig) -> Sent {
    let journal = Journal::open(storage.clone(), JOURNAL_DIR, tiny_journal(2, 0))
        .await
        .unwrap();
    let a = open_attached(storage, &journal, "t-0", config).await;
    let gone = open_attached(storage, &journal, "gone-0", config).await;
    let sent = fill(&a, 12, 5).await;
    fill(&gone, 2, 6).await;
    sent
}

/// Guards damaged journals: a cut file, a bad checksum with valid records after it, a
/// corrupt checkpoint and an unreplayed journal each give a clear error; a record naming
/// an unknown partition is skipped and reported.
#[test]
fn damaged_journals_give_clear_errors() {
    run(async {
        let config = small_config();
        let slot0 = Path::new(JOURNAL_DIR).join("00000000.journal");

        let storage = MemStorage::new(0);
        unreplayed_journal(&storage, &config).await;
        let err = Journal::open(storage.clone(), JOURNAL_DIR, tiny_journal(2, 0))
            .await
            .unwrap_err();
        assert!(matches!(err, JournalError::NotReplayed { .. }), "{err}");
        let stats = replay(&storage, &config).await.unwrap();
        assert_eq!(stats.unknown_partitions, vec!["gone-0".to_string()]);

        let storage = MemStorage::new(0);
        unreplayed_journal(&storage, &config).await;
        let data = storage.read_file(&slot0).unwrap();
        storage.poke_file(&slot0, data[..8192].to_vec());
        let err = replay(&storage, &config).await.unwrap_err();
        assert!(err.to_string().contains("cut to 8192"), "{err}");

        let storage = MemStorage::new(0);
        unreplayed_journal(&storage, &config).await;
        // A bit flipped inside the first record that replay needs, valid ones after it.
        let start = newest_checkpoint(&storage).replay_start as usize;
        let mut data = storage.read_file(&slot0).unwrap();
        data[4096 + start + 40] ^= 0x10;
        storage.poke_file(&slot0, data);
        let err = replay(&storage, &config).await.unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");

        let storage = MemStorage::new(0);
        unreplayed_journal(&storage, &config).await;
        for name in journal::CHECKPOINT_FILES {
            let cp = Path::new(JOURNAL_DIR).join(name);
            let mut data = storage.read_file(&cp).unwrap();
            data[20] ^= 1;
            storage.poke_file(&cp, data);
        }
        let err = replay(&storage, &config).await.unwrap_err();
        assert!(
            matches!(err, JournalError::CorruptCheckpoint { .. }),
            "{err}"
        );
    });
}

/// The newest valid checkpoint of the test journal.
fn newest_checkpoint(storage: &MemStorage) -> journal::format::Checkpoint {
    journal::CHECKPOINT_FILES
        .iter()
        .filter_map(|n| storage.read_file(&Path::new(JOURNAL_DIR).join(n)))
        .filter_map(|b| journal::format::decode_checkpoint(&b))
        .max_by_key(|c| c.sequence)
        .unwrap()
}

/// Guards the bad settings of a journal: each is refused with its key named.
#[test]
fn bad_journal_settings_are_refused() {
    run(async {
        let storage = MemStorage::new(0);
        for (c, key) in [
            (tiny_journal(1, 0), "journal.files"),
            (
                JournalConfig {
                    file_bytes: 100_000,
                    ..tiny_journal(2, 0)
                },
                "journal.file.bytes",
            ),
        ] {
            let err = Journal::open(storage.clone(), JOURNAL_DIR, c)
                .await
                .unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    });
}

/// Guards that `flush = interval` logs keep their own sync and ignore an attached journal.
#[test]
fn interval_logs_do_not_use_the_journal() {
    run(async {
        let storage = MemStorage::new(0);
        let journal = Journal::open(storage.clone(), JOURNAL_DIR, tiny_journal(2, 0))
            .await
            .unwrap();
        let config = LogConfig {
            flush: FlushPolicy::Interval,
            ..small_config()
        };
        let a = open_attached(&storage, &journal, "t-0", &config).await;
        fill(&a, 5, 1).await;
        assert_eq!(journal.stats().records, 0);
    });
}

/// Guards reads while segment bytes wait behind the journal: everything acknowledged is
/// readable at once (from memory), and a lookup by time, which scans the files, finds it.
#[test]
fn acknowledged_appends_are_readable_before_their_segment_write() {
    run(async {
        let storage = MemStorage::new(0);
        let config = LogConfig {
            hot_bytes_max: 1 << 20,
            ..small_config()
        };
        let journal = Journal::open(storage.clone(), JOURNAL_DIR, tiny_journal(4, 0))
            .await
            .unwrap();
        let a = open_attached(&storage, &journal, "t-0", &config).await;
        let sent = fill(&a, 10, 4).await;
        // 10 KiB stays below the write-behind threshold: only memory has the last units.
        let written = a.stats().bytes_written;
        check_partition(0, &a, &sent).await;
        assert_eq!(a.stats().bytes_written, written, "a read wrote the segment");
        let found = a.offset_for_timestamp(1000).await.unwrap();
        assert_eq!(found.map(|(o, _)| o), Some(Offset(0)));
        let found = a.offset_for_timestamp(5000).await.unwrap();
        assert_eq!(found, None);
    });
}

/// A checkpoint leaves a producer snapshot at the end it made durable, so a restart after a
/// crash rebuilds producer state from there instead of scanning the active segment; a
/// checkpoint whose sync failed leaves the previous snapshot in charge. Either way, retries
/// of batches from before and after the checkpoint are answered as duplicates.
#[test]
fn checkpoints_snapshot_producer_state() {
    run(async {
        for sync_fails in [false, true] {
            let storage = MemStorage::new(1_000_000);
            let config = small_config();
            let journal = Journal::open(storage.clone(), JOURNAL_DIR, tiny_journal(4, 0))
                .await
                .unwrap();
            let log = open_attached(&storage, &journal, "t-0", &config).await;
            let mut sequence = 0;
            let mut sent = Vec::new();
            let mut append = |k: u8| {
                let b = build::with_producer(
                    build::filled(storage.now_ms(), 2, 100, k),
                    7,
                    0,
                    sequence,
                );
                sequence += 2;
                b
            };
            for k in 0..4 {
                let b = append(k);
                let info = log.append(std::slice::from_ref(&b)).await.unwrap();
                sent.push((b, info.first_offset.0));
            }
            journal.checkpoint().await.unwrap();
            let first_end = log.readable_end().0;
            let dir = part_dir("t-0");
            let names = storage.list_dir(&dir).await.unwrap();
            assert!(
                names.contains(&format!("{first_end:020}.producers")),
                "{names:?}"
            );
            for k in 4..6 {
                let b = append(k);
                let info = log.append(std::slice::from_ref(&b)).await.unwrap();
                sent.push((b, info.first_offset.0));
            }
            if sync_fails {
                storage.set_faults(Faults {
                    fail_sync_nth: Some(storage.sync_count() + 1),
                    ..Faults::default()
                });
                assert!(journal.checkpoint().await.is_err());
            } else {
                journal.checkpoint().await.unwrap();
                let second_end = log.readable_end().0;
                // The first snapshot goes at the next checkpoint, the second stays.
                journal.checkpoint().await.unwrap();
                let names = storage.list_dir(&dir).await.unwrap();
                let snapshots: Vec<&String> =
                    names.iter().filter(|n| n.ends_with(".producers")).collect();
                assert_eq!(
                    snapshots,
                    [&format!("{second_end:020}.producers")],
                    "{names:?}"
                );
            }
            let image = storage.crash_image(7);
            drop((log, journal));
            let names = image.list_dir(&dir).await.unwrap();
            assert!(
                names.contains(&format!("{first_end:020}.producers")) || !sync_fails,
                "the durable snapshot survives a failed checkpoint: {names:?}"
            );
            replay(&image, &config).await.unwrap();
            let log = Log::open(image.clone(), &dir, config.clone())
                .await
                .unwrap();
            let end = log.readable_end().0;
            for (b, offset) in [&sent[1], &sent[5]] {
                let info = log
                    .append(std::slice::from_ref(b))
                    .await
                    .unwrap_or_else(|e| panic!("sync_fails {sync_fails}, end {end}: {e}"));
                assert!(info.duplicate, "sync_fails {sync_fails}: retry of {offset}");
                assert_eq!(info.first_offset.0, *offset);
            }
            log.close().await.unwrap();
        }
    });
}

/// Guards a reset under the journal: a follower truncated its log (a truncation record),
/// was reset to start at its leader's log start, and appended again; a crash before any
/// checkpoint replays to exactly the reset log with its new batches: the truncation record
/// (below the new start) cuts nothing that came after it, the old batches do not return.
#[test]
fn a_reset_log_replays_to_its_new_start() {
    run(async {
        let storage = MemStorage::new(0);
        let config = small_config();
        let journal = Journal::open(storage.clone(), JOURNAL_DIR, tiny_journal(4, 0))
            .await
            .unwrap();
        let a = open_attached(&storage, &journal, "t-0", &config).await;
        fill(&a, 10, 1).await;
        a.truncate(Offset(6)).await.unwrap();
        a.reset_to(Offset(500)).await.unwrap();
        let mut after = Vec::new();
        for k in 0..5u8 {
            let b = build::filled(0, 2, 40, 100 + k);
            let info = a.append(std::slice::from_ref(&b)).await.unwrap();
            after.push((info.first_offset.0, b[8..].to_vec()));
        }
        let image = storage.crash_image(11);
        drop((a, journal));
        replay(&image, &config).await.unwrap();
        let log = Log::open(image.clone(), part_dir("t-0"), config.clone())
            .await
            .unwrap();
        assert_eq!((log.log_start_offset().0, log.readable_end().0), (500, 510));
        let got = read_all(&log, 500).await;
        let got: Vec<(i64, Vec<u8>)> = got;
        assert_eq!(got, after);
    });
}
