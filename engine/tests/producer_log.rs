//! Idempotent producers on the in-memory disk: retries are answered from the log, gaps and
//! fenced epochs are refused, and the sequence state survives clean restarts, crashes and
//! refused writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tern_engine::batch::build;
use tern_engine::producer::SequenceError;
use tern_engine::{AppendError, Log, MemStorage};

mod mem;
use mem::{dir, run, small_config};

/// A batch of `records` records from producer `pid` starting at sequence `seq`.
fn batch(pid: i64, epoch: i16, seq: i32, records: usize) -> Vec<u8> {
    build::with_producer(
        build::filled(1_000, records, 200, seq as u8),
        pid,
        epoch,
        seq,
    )
}

async fn open(storage: &MemStorage) -> Log<MemStorage> {
    Log::open(storage.clone(), dir(), small_config())
        .await
        .unwrap()
}

/// Appends `n` batches of 3 records for `pid`, sequences 0, 3, 6, …
async fn append_run(log: &Log<MemStorage>, pid: i64, n: i32) {
    for k in 0..n {
        let info = log.append(&[batch(pid, 0, k * 3, 3)]).await.unwrap();
        assert!(!info.duplicate);
    }
}

/// Guards the answer to a retry: the original offsets, nothing written.
#[test]
fn retry_is_answered_with_the_original_offsets() {
    run(async {
        let storage = MemStorage::new(0);
        let log = open(&storage).await;
        log.append(&[build::filled(0, 2, 10, 1)]).await.unwrap();
        let first = log.append(&[batch(9, 0, 0, 3)]).await.unwrap();
        assert_eq!((first.first_offset.0, first.last_offset.0), (2, 4));
        let end = log.next_offset();
        let writes = storage.write_count();
        let again = log.append(&[batch(9, 0, 0, 3)]).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(
            (again.first_offset, again.last_offset),
            (first.first_offset, first.last_offset)
        );
        assert_eq!(log.next_offset(), end);
        assert_eq!(storage.write_count(), writes);
        // A pipelined retry while the original is still queued waits for it.
        let a = log.append(&[batch(9, 0, 3, 3)]);
        let b = log.append(&[batch(9, 0, 3, 3)]);
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert!(!a.duplicate && b.duplicate);
        assert_eq!(a.first_offset, b.first_offset);
    });
}

/// Guards the refusals: a gap, a fenced epoch, a new epoch not starting at 0, a mixed retry.
#[test]
fn gaps_and_stale_epochs_are_refused_and_write_nothing() {
    run(async {
        let storage = MemStorage::new(0);
        let log = open(&storage).await;
        append_run(&log, 5, 2).await;
        let end = log.next_offset();
        let cases = [
            (vec![batch(5, 0, 9, 1)], "gap"),
            (vec![batch(5, 1, 4, 1)], "new epoch not at 0"),
            (
                vec![batch(5, 0, 3, 3), batch(5, 0, 6, 3)],
                "retry mixed with new",
            ),
        ];
        for (batches, what) in cases {
            let err = log.append(&batches).await.unwrap_err();
            assert!(matches!(err, AppendError::Sequence(_)), "{what}: {err}");
            assert_eq!(log.next_offset(), end, "{what}");
        }
        log.append(&[batch(5, 1, 0, 1)]).await.unwrap();
        let err = log.append(&[batch(5, 0, 6, 1)]).await.unwrap_err();
        assert!(
            matches!(
                err,
                AppendError::Sequence(SequenceError::StaleEpoch {
                    current: 1,
                    got: 0,
                    ..
                })
            ),
            "{err}"
        );
        // Two new batches in one append are checked in order.
        let two = [batch(5, 1, 1, 2), batch(5, 1, 3, 2)];
        assert!(!log.append(&two).await.unwrap().duplicate);
        assert!(log.append(&two).await.unwrap().duplicate);
    });
}

/// Guards persistence: after a clean close (snapshot) and after a crash (replay), and with
/// a snapshot written after a roll plus replay of the newer segment.
#[test]
fn sequence_state_survives_restart_and_crash() {
    run(async {
        let storage = MemStorage::new(0);
        let log = open(&storage).await;
        append_run(&log, 1, 3).await;
        log.close().await.unwrap();
        let log = open(&storage).await;
        assert_eq!(log.producer_count(), 1);
        assert!(log.append(&[batch(1, 0, 6, 3)]).await.unwrap().duplicate);
        assert!(!log.append(&[batch(1, 0, 9, 3)]).await.unwrap().duplicate);

        // Crash without a close: the state comes from the snapshot plus the log after it.
        let crashed = storage.crash_image(7);
        let log = open(&crashed).await;
        assert!(log.append(&[batch(1, 0, 9, 3)]).await.unwrap().duplicate);
        // Fill past several rolls; the tick snapshots at the active segment's base.
        append_run(&log, 2, 80).await;
        assert!(log.segment_bases().len() > 2);
        log.tick().await.unwrap();
        append_run_from(&log, 2, 80, 3).await;
        let crashed = crashed.crash_image(8);
        let log = open(&crashed).await;
        assert!(
            log.append(&[batch(2, 0, 82 * 3, 3)])
                .await
                .unwrap()
                .duplicate
        );
        assert!(
            log.append(&[batch(2, 0, 70 * 3, 3)]).await.is_err(),
            "evicted: a gap"
        );
        assert!(log.append(&[batch(1, 0, 9, 3)]).await.unwrap().duplicate);
    });
}

async fn append_run_from(log: &Log<MemStorage>, pid: i64, from: i32, n: i32) {
    for k in from..from + n {
        log.append(&[batch(pid, 0, k * 3, 3)]).await.unwrap();
    }
}

/// Guards that a batch refused by a full disk is not remembered: its retry is written.
#[test]
fn refused_write_can_be_retried() {
    run(async {
        let storage = MemStorage::new(0);
        let log = open(&storage).await;
        append_run(&log, 3, 1).await;
        storage.set_disk_full(true);
        let err = log.append(&[batch(3, 0, 3, 3)]).await.unwrap_err();
        assert!(matches!(err, AppendError::DiskFull { .. }), "{err}");
        storage.set_disk_full(false);
        let info = log.append(&[batch(3, 0, 3, 3)]).await.unwrap();
        assert!(!info.duplicate);
        assert_eq!(info.first_offset.0, 3);
    });
}

/// Guards truncation: batches cut from the log are no longer duplicates.
#[test]
fn truncation_forgets_cut_batches() {
    run(async {
        let storage = MemStorage::new(0);
        let log = open(&storage).await;
        append_run(&log, 4, 4).await;
        log.close().await.unwrap();
        let log = open(&storage).await;
        log.truncate(tern_engine::Offset(6)).await.unwrap();
        let info = log.append(&[batch(4, 0, 6, 3)]).await.unwrap();
        assert!(!info.duplicate);
        log.close().await.unwrap();
        let log = open(&storage).await;
        assert!(log.append(&[batch(4, 0, 6, 3)]).await.unwrap().duplicate);
        assert!(log.append(&[batch(4, 0, 9, 3)]).await.is_ok());
    });
}
