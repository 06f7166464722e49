//! Flush, close, truncate, reset, delete-records and retention.

use std::path::PathBuf;

use super::recovery::{encode_log_start, recover_segment, LOG_START_FILE};
use super::segment::{segment_path, Scanner};
use super::{Log, Offset, Shared};
use crate::buf::align_down;
use crate::config::FlushPolicy;
use crate::error::{AppendError, LogError, OpenError};
use crate::storage::{FileMode, Storage, StorageFile};

impl<S: Storage> Shared<S> {
    /// Waits until no write is queued or in flight.
    async fn writer_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let i = self.inner.borrow();
                if (i.queue.is_empty() && i.in_flight.is_none()) || !i.writer_running {
                    return;
                }
            }
            self.wake.notify_one();
            notified.await;
        }
    }

    fn poisoned(&self) -> Result<(), LogError> {
        let i = self.inner.borrow();
        match &i.poisoned {
            Some(e) => Err(LogError::Poisoned {
                dir: i.dir.clone(),
                source: e.clone(),
            }),
            None => Ok(()),
        }
    }
}

fn open_err(e: OpenError) -> LogError {
    match e {
        OpenError::Io { path, source } => LogError::io(path, source),
        OpenError::Config(c) => LogError::io(PathBuf::new(), std::io::Error::other(c)),
    }
}

impl<S: Storage> super::Inner<S> {
    /// Moves the log start; epochs wholly before it leave the cache (on disk at its next
    /// write: an entry below the log start is dropped again at open).
    fn set_log_start(&mut self, log_start: i64) {
        self.log_start = log_start;
        let before = self.epochs.clone();
        self.epochs.truncate_from_start(log_start);
        if self.epochs != before {
            self.epochs_version += 1;
        }
    }
}

impl<S: Storage> Log<S> {
    /// Makes everything written so far durable (fdatasync of the active segment).
    pub async fn flush(&self) -> Result<(), LogError> {
        self.shared.drain_behind().await;
        self.shared.poisoned()?;
        let (file, path, now, base, size, writes) = {
            let i = self.shared.inner.borrow();
            let seg = i.active();
            let path = segment_path(&i.dir, seg.base, "log");
            (
                seg.file.clone(),
                path,
                i.storage.now_ms(),
                seg.base,
                seg.size,
                i.stats.writes,
            )
        };
        if let Err(e) = file.sync_data().await {
            let mut i = self.shared.inner.borrow_mut();
            i.on_write_error(std::io::Error::new(e.kind(), e.to_string()), &path);
            return Err(LogError::io(path, e));
        }
        let mut i = self.shared.inner.borrow_mut();
        if i.active().base == base {
            i.synced_size = i.synced_size.max(size);
        }
        // A write that completed during the sync may not be covered by it.
        if i.stats.writes == writes {
            i.dirty = false;
        }
        i.last_flush_ms = now;
        i.stats.syncs += 1;
        Ok(())
    }

    /// Stops accepting appends, waits for queued ones, and leaves the files complete
    /// (indexes persisted and synced, data synced).
    pub async fn close(&self) -> Result<(), LogError> {
        {
            let mut i = self.shared.inner.borrow_mut();
            if i.closing {
                return Ok(());
            }
            i.closing = true;
        }
        self.shared.wake.notify_one();
        self.shared.writer_idle().await;
        self.shared.drain_behind().await;
        self.shared.wait_for_preparation(0, u64::MAX).await;
        self.shared.poisoned()?;
        let (base, file, dirty, path) = {
            let mut i = self.shared.inner.borrow_mut();
            let dirty = i.dirty || i.config.flush != FlushPolicy::Always;
            let seg = i.active_mut();
            seg.push_time_entry();
            let base = seg.base;
            (
                base,
                seg.file.clone(),
                dirty,
                segment_path(&i.dir, base, "log"),
            )
        };
        if dirty {
            file.sync_data().await.map_err(|e| LogError::io(&path, e))?;
            let mut i = self.shared.inner.borrow_mut();
            i.synced_size = i.active().size;
        }
        self.shared
            .persist_indexes(base, true)
            .await
            .map_err(|e| LogError::io(&path, e))?;
        let end = self.shared.inner.borrow().readable_end;
        self.snapshot_producers(end).await?;
        self.shared.persist_epochs().await?;
        let mut i = self.shared.inner.borrow_mut();
        i.fail_waiters(&AppendError::Closed);
        Ok(())
    }

    /// The prologue of a cut (truncate, reset): appends are refused from now on
    /// (`truncating`, cleared by the caller), then nothing may be queued, in flight, written
    /// behind or being prepared.
    async fn idle_for_cut(&self) -> Result<(), LogError> {
        {
            let mut i = self.shared.inner.borrow_mut();
            if i.closing {
                return Err(LogError::Closed);
            }
            i.truncating = true;
        }
        self.shared.writer_idle().await;
        self.shared.drain_behind().await;
        self.shared.wait_for_preparation(0, u64::MAX).await;
        Ok(())
    }

    /// Removes every batch at or after `offset` (a batch containing `offset` is removed
    /// whole); the next append gets the first removed offset. Appends are refused while
    /// it runs. Used by replication to cut a diverged tail; the epoch cache is cut with it.
    ///
    /// Under the shard journal a truncation record goes to the journal (durably) before the
    /// segment is cut, so a replay never brings the removed batches back; the log keeps
    /// that record needed until the cut segment is synced.
    pub async fn truncate(&self, offset: Offset) -> Result<(), LogError> {
        self.shared.poisoned()?;
        self.idle_for_cut().await?;
        let mut r = self.journal_truncation(offset.0).await;
        if r.is_ok() {
            r = self.truncate_idle(offset.0).await;
        }
        if r.is_ok() {
            // Snapshots past the new end describe batches that are gone.
            let end = {
                let mut i = self.shared.inner.borrow_mut();
                i.producer_snapshot = i.producer_snapshot.min(i.next_offset);
                let end = i.next_offset;
                let before = i.epochs.clone();
                i.epochs.truncate_from_end(end);
                if i.epochs != before {
                    i.epochs_version += 1;
                }
                if i.leader_epoch
                    .is_some_and(|e| i.epochs.latest_epoch() != Some(e))
                {
                    // A leader never truncates; one that did must take its epoch again.
                    i.leader_epoch = None;
                }
                end
            };
            r = self.remove_producer_snapshots(|o| o > end).await;
            if r.is_ok() {
                r = self.shared.persist_epochs().await;
            }
        }
        {
            // The cut segment is synced: the journal may forget the truncation record (and
            // the records of removed batches) once older records are no longer needed.
            let mut i = self.shared.inner.borrow_mut();
            let end = i.next_offset;
            i.journal_pending.retain(|(e, _)| *e <= end);
            // Offsets handed out past the cut were settled by the epochs that cut them.
            i.tail_served_end = i.tail_served_end.min(end);
            i.truncating = false;
        }
        r
    }

    /// Writes a journaled log's truncation record and waits until it is durable; the record
    /// stays needed (an entry past any end in `journal_pending`) until the truncation ends.
    async fn journal_truncation(&self, offset: i64) -> Result<(), LogError> {
        let ticket = {
            let mut i = self.shared.inner.borrow_mut();
            let Some(journal) = i.journaled() else {
                return Ok(());
            };
            if offset >= i.next_offset {
                return Ok(());
            }
            let t = journal
                .submit(
                    crate::journal::format::RecordKind::Truncate,
                    &i.journal_name,
                    offset,
                    &[],
                )
                .map_err(|e| {
                    LogError::io(
                        journal.dir(),
                        std::io::Error::other(format!("shard journal: {e}")),
                    )
                })?;
            i.journal_pending.push_back((i64::MAX, t.lsn));
            (t, journal.dir())
        };
        let (ticket, dir) = ticket;
        ticket
            .durable()
            .await
            .map_err(|e| LogError::io(dir, std::io::Error::new(e.kind(), e.to_string())))
    }

    async fn truncate_idle(&self, offset: i64) -> Result<(), LogError> {
        let (storage, dir, log_start, end, interval) = {
            let i = self.shared.inner.borrow();
            (
                i.storage.clone(),
                i.dir.clone(),
                i.log_start,
                i.next_offset,
                i.config.index_interval_bytes,
            )
        };
        if offset >= end {
            return Ok(());
        }
        if offset < log_start {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end: end,
            });
        }
        // Newest segments first, so a crash leaves a prefix of the log.
        let doomed: Vec<i64> = {
            let i = self.shared.inner.borrow();
            let keep = i
                .segments
                .range(..=offset)
                .next_back()
                .map_or(offset, |(b, _)| *b);
            i.segments
                .range(keep + 1..)
                .map(|(b, _)| *b)
                .rev()
                .collect()
        };
        for base in &doomed {
            self.shared.inner.borrow_mut().segments.remove(base);
            remove_segment_files(&storage, &dir, *base)
                .await
                .map_err(|(p, e)| LogError::io(p, e))?;
        }
        if !doomed.is_empty() {
            storage
                .sync_dir(&dir)
                .await
                .map_err(|e| LogError::io(&dir, e))?;
        }
        let (file, base, start, size) = {
            let i = self.shared.inner.borrow();
            let seg = i.active();
            let rel = (offset - seg.base).max(0) as u32;
            (
                seg.file.clone(),
                seg.base,
                seg.index.lookup(rel).position as u64,
                seg.size,
            )
        };
        let path = segment_path(&dir, base, "log");
        let mut cut = size;
        let mut scan = Scanner::new(&*file, start, size);
        while let Some((b, _)) = scan.next(false).await.map_err(|e| LogError::io(&path, e))? {
            if b.last >= offset {
                cut = b.position;
                break;
            }
        }
        file.set_len(cut)
            .await
            .map_err(|e| LogError::io(&path, e))?;
        file.sync_data().await.map_err(|e| LogError::io(&path, e))?;
        let seg = recover_segment(&storage, &dir, base, true, interval)
            .await
            .map_err(open_err)?;
        let partial_at = align_down(seg.size);
        let partial = seg
            .file
            .read_at(partial_at, (seg.size - partial_at) as usize)
            .await
            .map_err(|e| LogError::io(&path, e))?;
        let mut i = self.shared.inner.borrow_mut();
        i.next_offset = seg.next_offset;
        i.readable_end = seg.next_offset;
        i.producers.truncate_from(seg.next_offset);
        i.synced_size = seg.size;
        i.prepared_end = 0;
        i.allocated_end = 0;
        // A batch straddling the log start went whole: the log is empty from its base.
        i.log_start = i.log_start.min(seg.next_offset);
        i.written_partial = partial.to_vec();
        i.segments.insert(base, seg);
        i.hot.clear();
        Ok(())
    }

    /// Removes every batch and starts the log empty at `offset` (Kafka's
    /// truncateFullyAndStartAt): a follower whose log ends below its leader's log start
    /// (retention ran there while it was away) continues from the leader's start. Producer
    /// state and the epoch cache go with the batches. Appends are refused while it runs.
    ///
    /// Crash-safe in this order: the log start checkpoint names `offset` (durably) before
    /// any segment goes, newest segments go first, then the new empty segment is made: an
    /// open after a crash finds the old log (or a prefix of it, its start clamped to its
    /// end) or the new one, never a mix that serves records below `offset`. Records of
    /// this log still in the shard journal lie below `offset` and are skipped by a replay.
    pub async fn reset_to(&self, offset: Offset) -> Result<(), LogError> {
        self.shared.poisoned()?;
        if offset.0 < 0 {
            let i = self.shared.inner.borrow();
            return Err(LogError::OffsetOutOfRange {
                offset: offset.0,
                log_start: i.log_start,
                log_end: i.next_offset,
            });
        }
        self.idle_for_cut().await?;
        let r = self.reset_idle(offset.0).await;
        self.shared.inner.borrow_mut().truncating = false;
        if let Err(e) = &r {
            // Half done: nothing more may be appended to what is left (an open finds a
            // consistent log again).
            let source = std::sync::Arc::new(std::io::Error::other(e.to_string()));
            self.shared.inner.borrow_mut().poisoned = Some(source);
        }
        r
    }

    async fn reset_idle(&self, offset: i64) -> Result<(), LogError> {
        let (storage, dir) = {
            let i = self.shared.inner.borrow();
            (i.storage.clone(), i.dir.clone())
        };
        self.write_log_start(offset).await?;
        let doomed: Vec<i64> = {
            let mut i = self.shared.inner.borrow_mut();
            let bases: Vec<i64> = i.segments.keys().rev().copied().collect();
            i.segments.clear();
            i.hot.clear();
            bases
        };
        for base in &doomed {
            remove_segment_files(&storage, &dir, *base)
                .await
                .map_err(|(p, e)| LogError::io(p, e))?;
        }
        self.remove_producer_snapshots(|_| true).await?;
        let seg = super::writer::create_segment(&storage, &dir, offset)
            .await
            .map_err(|e| LogError::io(segment_path(&dir, offset, "log"), e))?;
        storage
            .sync_dir(&dir)
            .await
            .map_err(|e| LogError::io(&dir, e))?;
        {
            let mut i = self.shared.inner.borrow_mut();
            i.segments.insert(offset, seg);
            i.log_start = offset;
            i.next_offset = offset;
            i.readable_end = offset;
            i.producers = Default::default();
            i.producer_snapshot = offset;
            i.stale_snapshots.clear();
            i.synced_size = 0;
            i.prepared_end = 0;
            i.allocated_end = 0;
            i.written_partial.clear();
            // Nothing of the old log needs the journal any more (a replay skips it).
            i.journal_pending.clear();
            i.tail_served_end = i.tail_served_end.min(offset);
            i.leader_epoch = None;
            i.epochs = crate::epoch::EpochCache::default();
            i.epochs_version += 1;
        }
        self.shared.persist_epochs().await
    }

    /// Writes the log start checkpoint durably (a new file renamed over the old one).
    async fn write_log_start(&self, offset: i64) -> Result<(), LogError> {
        let (storage, dir) = {
            let i = self.shared.inner.borrow();
            (i.storage.clone(), i.dir.clone())
        };
        let tmp = dir.join(format!("{LOG_START_FILE}.tmp"));
        let dst = dir.join(LOG_START_FILE);
        let io = |e| LogError::io(&dst, e);
        let f = storage.open(&tmp, FileMode::Buffered).await.map_err(io)?;
        f.set_len(0).await.map_err(io)?;
        f.write_bytes_at(encode_log_start(offset), 0)
            .await
            .map_err(io)?;
        f.sync_data().await.map_err(io)?;
        storage.rename(&tmp, &dst).await.map_err(io)?;
        storage.sync_dir(&dir).await.map_err(io)
    }

    /// Kafka DeleteRecords: moves the log start offset up to `offset` (at most the readable
    /// end) and deletes the segments wholly below it. Returns the new log start offset.
    pub async fn delete_records(&self, offset: Offset) -> Result<Offset, LogError> {
        self.shared.poisoned()?;
        let (log_start, end) = {
            let i = self.shared.inner.borrow();
            (i.log_start, i.readable_end)
        };
        if offset.0 > end || offset.0 < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset: offset.0,
                log_start,
                log_end: end,
            });
        }
        if offset.0 <= log_start {
            return Ok(Offset(log_start));
        }
        self.write_log_start(offset.0).await?;
        self.shared.inner.borrow_mut().set_log_start(offset.0);
        self.delete_segments_below(offset.0).await?;
        Ok(Offset(self.shared.inner.borrow().log_start))
    }

    /// Deletes closed segments whose records all lie below `offset`.
    async fn delete_segments_below(&self, offset: i64) -> Result<usize, LogError> {
        let doomed: Vec<i64> = {
            let i = self.shared.inner.borrow();
            let active = i.active().base;
            i.segments
                .values()
                .filter(|s| s.base != active && s.next_offset <= offset)
                .map(|s| s.base)
                .collect()
        };
        self.delete_segments(&doomed).await?;
        Ok(doomed.len())
    }

    async fn delete_segments(&self, bases: &[i64]) -> Result<(), LogError> {
        if bases.is_empty() {
            return Ok(());
        }
        let (storage, dir) = {
            let mut i = self.shared.inner.borrow_mut();
            for b in bases {
                i.segments.remove(b);
            }
            let first = i.segments.keys().next().copied().unwrap_or(i.log_start);
            let start = i.log_start.max(first);
            i.set_log_start(start);
            (i.storage.clone(), i.dir.clone())
        };
        for b in bases {
            remove_segment_files(&storage, &dir, *b)
                .await
                .map_err(|(p, e)| LogError::io(p, e))?;
        }
        storage
            .sync_dir(&dir)
            .await
            .map_err(|e| LogError::io(&dir, e))
    }

    /// Deletes the oldest closed segments that are past `retention_ms` (by their newest
    /// record) or that keep the log above `retention_bytes`. The active segment is never
    /// deleted. Returns how many segments went.
    pub async fn enforce_retention(&self) -> Result<usize, LogError> {
        let doomed: Vec<i64> = {
            let i = self.shared.inner.borrow();
            let now = i.storage.now_ms();
            let (retention_ms, retention_bytes) = (i.config.retention_ms, i.config.retention_bytes);
            let mut total: u64 = i.segments.values().map(|s| s.size).sum();
            let closed = i.segments.len().saturating_sub(1);
            let mut out = Vec::new();
            for s in i.segments.values().take(closed) {
                let expired = retention_ms >= 0
                    && s.max_timestamp >= 0
                    && s.max_timestamp < now - retention_ms;
                let oversize = retention_bytes >= 0 && total - s.size >= retention_bytes as u64;
                if !(expired || oversize) {
                    break;
                }
                total -= s.size;
                out.push(s.base);
            }
            out
        };
        self.delete_segments(&doomed).await?;
        Ok(doomed.len())
    }
}

/// Removes a segment's three files (a missing one is fine); the error names the file.
pub(super) async fn remove_segment_files<S: Storage>(
    storage: &S,
    dir: &std::path::Path,
    base: i64,
) -> Result<(), (PathBuf, std::io::Error)> {
    for ext in ["log", "index", "timeindex"] {
        let p = segment_path(dir, base, ext);
        match storage.remove_file(&p).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err((p, e)),
        }
    }
    Ok(())
}
