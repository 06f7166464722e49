//! Persistence of the idempotent producers' table: snapshot files and replay of the log
//! from the newest snapshot on open (see [`crate::producer`]).
//!
//! A snapshot `<offset>.producers` holds the ranges of batches below `offset`. It is
//! written after the batches below `offset` are in the log (at close: the log end; after a
//! roll: the new active segment's base), through a temporary file, fsync, rename and a
//! directory fsync. A snapshot past the recovered log end (data lost with a crash under
//! `flush = never`, or a truncation) is never used.

use std::path::Path;

use super::segment::{segment_path, Scanner, Segment};
use super::Log;
use crate::batch::BatchHeader;
use crate::error::{LogError, OpenError};
use crate::producer::{self, ProducerTable};
use crate::storage::{FileMode, Storage, StorageFile};

const EXT: &str = "producers";

fn parse_offset(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(EXT)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|c| c.is_ascii_digit())).then(|| stem.parse().ok())?
}

/// Loads the newest usable snapshot and replays the batches after it: the table and the
/// snapshot's offset (-1 without one).
pub(super) async fn load<S: Storage>(
    storage: &S,
    dir: &Path,
    names: &[String],
    segments: &std::collections::BTreeMap<i64, Segment<S::File>>,
    end: i64,
) -> Result<(ProducerTable, i64), OpenError> {
    let mut offsets: Vec<i64> = names.iter().filter_map(|n| parse_offset(n)).collect();
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    let mut table = ProducerTable::default();
    let mut from = -1;
    for o in offsets.into_iter().filter(|o| *o <= end) {
        let path = segment_path(dir, o, EXT);
        let f = storage
            .open(&path, FileMode::Buffered)
            .await
            .map_err(|e| OpenError::io(&path, e))?;
        let len = f.len().await.map_err(|e| OpenError::io(&path, e))?;
        let b = f
            .read_at(0, len as usize)
            .await
            .map_err(|e| OpenError::io(&path, e))?;
        if let Some((offset, t)) = ProducerTable::decode_snapshot(&b) {
            if offset == o {
                table = t;
                from = o;
                break;
            }
        }
        tracing::warn!(path = %path.display(), "producer snapshot unreadable: ignored");
    }
    let first = segments
        .range(..=from.max(0))
        .next_back()
        .map_or(i64::MIN, |(b, _)| *b);
    for seg in segments.range(first..).map(|(_, s)| s) {
        let path = segment_path(dir, seg.base, "log");
        // Start at the index entry at or before `from` (batches before it are skipped).
        let start = match u32::try_from(from - seg.base) {
            Ok(rel) if from > seg.base => u64::from(seg.index.lookup(rel).position),
            _ => 0,
        };
        let mut scan = Scanner::new(&*seg.file, start, seg.size);
        // With the batch bytes: a slice of the scanner's read-ahead, no extra IO.
        while let Some((meta, bytes)) =
            scan.next(true).await.map_err(|e| OpenError::io(&path, e))?
        {
            if meta.last < from {
                continue;
            }
            let header = bytes.as_deref().and_then(BatchHeader::parse);
            if let Some(h) = header.filter(producer::is_idempotent) {
                table.record_stored(&h, meta.base, h.max_timestamp);
            }
        }
    }
    Ok((table, from))
}

impl<S: Storage> Log<S> {
    /// Writes a producer snapshot at `offset` if it is newer than the last one, then removes
    /// older snapshots.
    pub(super) async fn snapshot_producers(&self, offset: i64) -> Result<(), LogError> {
        let bytes = {
            let i = self.shared.inner.borrow();
            // Written even when no producer is known: the next open then replays nothing
            // before `offset` instead of scanning the whole log for producers.
            if offset <= i.producer_snapshot {
                return Ok(());
            }
            i.producers.encode_snapshot(offset)
        };
        self.write_producer_snapshot(offset, bytes, true).await?;
        self.shared.inner.borrow_mut().producer_snapshot = offset;
        self.remove_producer_snapshots(|o| o < offset).await
    }

    /// Writes `bytes` as the snapshot at `offset` through a temporary file and a rename;
    /// with `sync`, the file and the directory are synced (without, a later sync of the
    /// filesystem must make them durable before the snapshot is relied on).
    pub(super) async fn write_producer_snapshot(
        &self,
        offset: i64,
        bytes: Vec<u8>,
        sync: bool,
    ) -> Result<(), LogError> {
        let (storage, dir) = {
            let i = self.shared.inner.borrow();
            (i.storage.clone(), i.dir.clone())
        };
        let dst = segment_path(&dir, offset, EXT);
        let tmp = dst.with_extension("producers.tmp");
        let io = |e| LogError::io(&dst, e);
        let f = storage.open(&tmp, FileMode::Buffered).await.map_err(io)?;
        f.set_len(0).await.map_err(io)?;
        f.write_bytes_at(bytes, 0).await.map_err(io)?;
        if sync {
            f.sync_data().await.map_err(io)?;
        }
        storage.rename(&tmp, &dst).await.map_err(io)?;
        if sync {
            storage.sync_dir(&dir).await.map_err(io)?;
        }
        Ok(())
    }

    /// Removes the snapshot at `offset`, if it is there.
    pub(super) async fn remove_producer_snapshot(&self, offset: i64) -> Result<(), LogError> {
        let (storage, path) = {
            let i = self.shared.inner.borrow();
            (i.storage.clone(), segment_path(&i.dir, offset, EXT))
        };
        match storage.remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LogError::io(&path, e)),
            _ => Ok(()),
        }
    }

    /// Removes the snapshot files whose offset matches `doomed`.
    pub(super) async fn remove_producer_snapshots(
        &self,
        doomed: impl Fn(i64) -> bool,
    ) -> Result<(), LogError> {
        let (storage, dir) = {
            let i = self.shared.inner.borrow();
            (i.storage.clone(), i.dir.clone())
        };
        let names = storage
            .list_dir(&dir)
            .await
            .map_err(|e| LogError::io(&dir, e))?;
        for o in names
            .iter()
            .filter_map(|n| parse_offset(n))
            .filter(|o| doomed(*o))
        {
            let path = segment_path(&dir, o, EXT);
            storage
                .remove_file(&path)
                .await
                .map_err(|e| LogError::io(&path, e))?;
        }
        Ok(())
    }

    /// Periodic producer-state upkeep: expiry, and a snapshot after a roll.
    pub(super) async fn producers_tick(&self) -> Result<(), LogError> {
        let active_base = {
            let mut i = self.shared.inner.borrow_mut();
            let now_ms = i.storage.now_ms();
            let (idle_ms, log_start) = (i.config.producer_id_expiration_ms, i.log_start);
            i.producers.expire(now_ms, idle_ms, log_start);
            i.active().base
        };
        self.snapshot_producers(active_base).await
    }

    /// Idempotent producers whose sequence state the log keeps.
    pub fn producer_count(&self) -> usize {
        self.shared.inner.borrow().producers.len()
    }
}
