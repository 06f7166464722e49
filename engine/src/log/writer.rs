//! The writer task: takes units off the queue, writes them, completes their appends.

use std::io;
use std::rc::{Rc, Weak};

use tokio::sync::Notify;

use super::segment::{segment_path, Segment};
use super::{InFlight, Inner, Shared, Unit};
use crate::buf::{align_down, align_up, AlignedBuf};
use crate::config::FlushPolicy;
use crate::error::AppendError;
use crate::index::{encode_header, IndexKind, HEADER_BYTES, OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES};
use crate::journal::format::RecordKind;
use crate::journal::SubmitError;
use crate::storage::{FileMode, Storage, StorageFile};

/// Index entries pending before they are appended to the index files.
const INDEX_PERSIST_ENTRIES: usize = 1024;
/// Durable segment bytes past the last persisted index entry before the entries that point
/// into them are appended to the index files, whatever their count: recovery scans a
/// segment from its last persisted entry, so with large batches (few entries) this bounds
/// the scan after a crash.
const INDEX_PERSIST_BYTES: u64 = 16 << 20;

/// How often a unit held on a full disk is tried again.
const HOLD_RETRY_MS: u64 = 100;

/// Runs until the log closes or every handle to it is gone.
pub(super) async fn run<S: Storage>(weak: Weak<Shared<S>>, wake: Rc<Notify>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let unit = shared.inner.borrow_mut().take_unit();
        match unit {
            Some(u) => shared.write_unit(u).await,
            None => {
                let closing = shared.inner.borrow().closing;
                if closing {
                    shared.inner.borrow_mut().writer_running = false;
                    shared.idle.notify_waiters();
                    return;
                }
                shared.idle.notify_waiters();
                drop(shared);
                wake.notified().await;
            }
        }
    }
}

/// A unit's parts, for the journaled write path.
struct JournaledWrite {
    file_pos: u64,
    buf: AlignedBuf,
    batches: Vec<super::BatchMeta>,
    end_offset: i64,
}

impl<S: Storage> Inner<S> {
    fn take_unit(&mut self) -> Option<Unit> {
        let u = self.queue.pop_front()?;
        let len = u.buf.len();
        self.last_unit_bytes = len;
        let cut = align_down(len as u64) as usize;
        self.in_flight = Some(InFlight {
            segment_base: u.segment_base,
            end_pos: u.file_pos + len as u64,
            partial: u.buf.as_slice()[cut..].to_vec(),
            roll_base_ms: u.roll_base_ms,
        });
        Some(u)
    }

    /// A unit is done: the segment learns its batches, readers may see them, their appends
    /// complete. `written` is `Some((padded bytes, dsync))` when the unit was written to its
    /// segment now (not behind, see `super::behind`). Returns the segment whose index
    /// entries are due to be persisted.
    fn complete_write(
        &mut self,
        (file_pos, data, charge): (u64, bytes::Bytes, usize),
        partial: &[u8],
        batches: Vec<super::BatchMeta>,
        end_offset: i64,
        written: Option<(usize, bool)>,
    ) -> Option<i64> {
        if let Some((padded, dsync)) = written {
            self.note_segment_write(padded, dsync);
        }
        let interval = self.config.index_interval_bytes;
        let seg = self.active_mut();
        for b in &batches {
            seg.on_batch(b, interval);
        }
        // Only entries pointing into durable bytes may be persisted (see `persist_indexes`).
        let durable = self.synced_size;
        let seg = self.active();
        let persisted = seg.index.persisted;
        let due = seg.index.entries[persisted..].partition_point(|e| e.position as u64 <= durable);
        let persisted_pos = persisted
            .checked_sub(1)
            .map_or(0, |k| seg.index.entries[k].position as u64);
        let persist = due >= INDEX_PERSIST_ENTRIES
            || (due > 0 && durable.saturating_sub(persisted_pos) >= INDEX_PERSIST_BYTES);
        let seg_base = seg.base;
        self.written_partial.clear();
        self.written_partial.extend_from_slice(partial);
        self.readable_end = end_offset;
        if self.full_warned {
            self.full_warned = false;
            tracing::info!(dir = %self.dir.display(), "disk space back: appends taken again");
        }
        if let Some(copies) = &mut self.tail_copies {
            while copies.front().is_some_and(|(_, end, _)| *end <= end_offset) {
                copies.pop_front();
            }
        }
        let unit_end = file_pos + data.len() as u64;
        if self
            .in_flight
            .as_ref()
            .is_some_and(|t| t.end_pos == unit_end)
        {
            // This was the last unit taken; none is in flight any more.
            self.in_flight = None;
        }
        let hot_max = self.config.hot_bytes_max;
        self.hot.push(file_pos, data, charge, batches, hot_max);
        self.complete_waiters(end_offset);
        persist.then_some(seg_base)
    }

    /// Counts a completed segment write.
    pub(super) fn note_segment_write(&mut self, padded: usize, dsync: bool) {
        self.stats.writes += 1;
        self.stats.syncs += dsync as u64;
        self.stats.bytes_written += padded as u64;
        self.dirty |= !dsync;
        if dsync {
            self.synced_size = self.active().size;
        }
    }

    /// The bytes of a written unit buffer for the hot cache, and the memory they hold: a
    /// mostly empty buffer is copied out (small) and reused at once; a full one is shared
    /// with readers and comes back to the pool when they are done.
    fn hot_bytes(&self, buf: AlignedBuf) -> (bytes::Bytes, usize) {
        if buf.len() * 4 < buf.capacity() {
            let data = bytes::Bytes::copy_from_slice(buf.as_slice());
            self.pool.put(buf);
            let len = data.len();
            (data, len)
        } else {
            let charge = buf.capacity();
            (self.pool.freeze(buf), charge)
        }
    }

    /// A write failed: ENOSPC refuses everything not yet written; anything else poisons.
    pub(super) fn on_write_error(&mut self, err: io::Error, path: &std::path::Path) {
        // Offsets past the readable end already sent to followers (tail reads) must not go
        // to other batches: nothing is refused and rewound then, the log is poisoned.
        // A log being truncated is no longer a leader: its followers fetch again what they
        // lack from the new one, so the offsets may go to other batches.
        let served = self.tail_served_end > self.readable_end && !self.truncating;
        self.held_full = None;
        if let Some(copies) = &mut self.tail_copies {
            copies.clear();
        }
        self.queue.clear();
        self.in_flight = None;
        self.next_offset = self.readable_end;
        let end = self.readable_end;
        while self.journal_pending.back().is_some_and(|(e, _)| *e > end) {
            self.journal_pending.pop_back();
        }
        self.producers.truncate_from(end);
        let refusal = if err.raw_os_error() == Some(libc::ENOSPC) && !served {
            if !self.full_warned {
                tracing::warn!(path = %path.display(), "disk full: appends refused until space returns");
                self.full_warned = true;
            }
            AppendError::DiskFull {
                path: path.to_path_buf(),
            }
        } else {
            tracing::error!(path = %path.display(), error = %err, "write failed: log poisoned");
            let source = std::sync::Arc::new(err);
            self.poisoned = Some(source.clone());
            AppendError::Poisoned {
                dir: self.dir.clone(),
                source,
            }
        };
        self.fail_waiters(&refusal);
    }
}

impl<S: Storage> Shared<S> {
    async fn write_unit(self: &Rc<Self>, u: Unit) {
        if u.new_segment {
            let path = segment_path(&self.inner.borrow().dir, u.segment_base, "log");
            loop {
                match self.roll(u.segment_base, u.roll_base_ms).await {
                    Ok(()) => break,
                    Err(e) if self.hold_on_full(&e, &path).await => continue,
                    Err(e) => {
                        self.inner.borrow_mut().on_write_error(e, &path);
                        return;
                    }
                }
            }
        }
        let (file, dsync, path, journal) = {
            let i = self.inner.borrow();
            let seg = i.active();
            debug_assert_eq!(seg.base, u.segment_base);
            (
                seg.file.clone(),
                i.segment_dsync(),
                segment_path(&i.dir, seg.base, "log"),
                i.journaled(),
            )
        };
        let Unit {
            file_pos,
            buf,
            batches,
            end_offset,
            ..
        } = u;
        let unit_end = file_pos + buf.len() as u64;
        self.wait_for_preparation(file_pos, align_up(unit_end))
            .await;
        self.maybe_prepare(unit_end);
        let mut reserved = self.allocate_ahead(&file, file_pos, unit_end).await;
        if journal.is_some() {
            while let Err(e) = &reserved {
                if !self.hold_on_full(e, &path).await {
                    break;
                }
                reserved = self.allocate_ahead(&file, file_pos, unit_end).await;
            }
        }
        self.end_hold();
        if let Some(journal) = journal {
            match reserved {
                // Written behind its acknowledgement, a unit must have its blocks first: a
                // full disk refuses it now, while nothing of it is written anywhere.
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    self.inner.borrow_mut().on_write_error(e, &path);
                    return;
                }
                _ => {}
            }
            let w = JournaledWrite {
                file_pos,
                buf,
                batches,
                end_offset,
            };
            return self.write_journaled(&journal, &file, w, &path).await;
        }
        let (mut res, mut buf) = file.write_at(buf, file_pos, dsync).await;
        // Written again whole at the same place: a retry after a full disk is idempotent.
        while let Err(e) = &res {
            if !self.hold_on_full(e, &path).await {
                break;
            }
            (res, buf) = file.write_at(buf, file_pos, dsync).await;
        }
        self.end_hold();
        self.finish_write(res, file_pos, buf, batches, end_offset, dsync, &path)
            .await;
    }

    /// Under the shard journal: the new bytes go to the journal, and the appends complete
    /// when it has them durably; the unit joins the segment's write-behind queue
    /// (`super::behind`) and is served from memory until it is written. A unit of at least
    /// `journal.inplace.bytes` is instead written in place and synced, with nothing in the
    /// journal (replay finds it in the segment: offsets order everything).
    async fn write_journaled(
        self: &Rc<Self>,
        journal: &crate::journal::Journal<S>,
        file: &S::File,
        w: JournaledWrite,
        path: &std::path::Path,
    ) {
        let JournaledWrite {
            file_pos,
            buf,
            batches,
            end_offset,
        } = w;
        let first = batches.first().map_or(0, |b| b.base);
        let from = batches
            .first()
            .map_or(buf.len(), |b| (b.position - file_pos) as usize);
        let name = self.inner.borrow().journal_name.clone();
        let payload_len = buf.len() - from;
        let inplace = journal.config().inplace_bytes;
        if (inplace > 0 && payload_len >= inplace) || !journal.fits(&name, payload_len) {
            self.drain_behind().await;
            let (mut res, buf) = file.write_at(buf, file_pos, false).await;
            if res.is_ok() {
                res = file.sync_data().await;
            }
            self.finish_write(res, file_pos, buf, batches, end_offset, true, path)
                .await;
            return;
        }
        let mut submitted =
            journal.submit(RecordKind::Batches, &name, first, &buf.as_slice()[from..]);
        while matches!(submitted, Err(SubmitError::DiskFull)) {
            let full = io::Error::from_raw_os_error(libc::ENOSPC);
            if !self.hold_on_full(&full, &journal.dir()).await {
                break;
            }
            submitted = journal.submit(RecordKind::Batches, &name, first, &buf.as_slice()[from..]);
        }
        self.end_hold();
        let ticket = match submitted {
            Ok(t) => t,
            Err(e) => {
                let e = match e {
                    SubmitError::DiskFull => io::Error::from_raw_os_error(libc::ENOSPC),
                    e => io::Error::other(format!("shard journal: {e}")),
                };
                self.inner.borrow_mut().on_write_error(e, &journal.dir());
                return;
            }
        };
        self.inner
            .borrow_mut()
            .journal_pending
            .push_back((end_offset, ticket.lsn));
        // Memory serves the unit until it is written: its batches only, not the carried
        // block (the hot cache addresses bytes by file position).
        let payload = bytes::Bytes::copy_from_slice(&buf.as_slice()[from..]);
        let hot = (file_pos + from as u64, payload, buf.len() - from);
        let cut = align_down(buf.len() as u64) as usize;
        let partial = buf.as_slice()[cut..].to_vec();
        self.wait_behind_room(buf.len()).await;
        self.push_behind(file_pos, buf);
        let res = ticket.durable().await.map_err(|e| match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::other(format!("shard journal: {e}")),
        });
        let persist_base = {
            let mut i = self.inner.borrow_mut();
            if i.poisoned.is_some() {
                return;
            }
            match res {
                Err(e) => {
                    i.on_write_error(e, &journal.dir());
                    return;
                }
                Ok(()) => i.complete_write(hot, &partial, batches, end_offset, None),
            }
        };
        self.after_complete(persist_base).await;
    }

    /// Completes a unit's appends after its write (or fails them); false if it failed.
    #[allow(clippy::too_many_arguments)]
    async fn finish_write(
        self: &Rc<Self>,
        res: io::Result<()>,
        file_pos: u64,
        buf: AlignedBuf,
        batches: Vec<super::segment::BatchMeta>,
        end_offset: i64,
        dsync: bool,
        path: &std::path::Path,
    ) -> bool {
        let persist_base = {
            let mut i = self.inner.borrow_mut();
            if i.poisoned.is_some() {
                // An earlier failure already refused this unit.
                return false;
            }
            match res {
                Err(e) => {
                    i.on_write_error(e, path);
                    return false;
                }
                Ok(()) => {
                    let padded = buf.padded_len();
                    let cut = align_down(buf.len() as u64) as usize;
                    let partial = buf.as_slice()[cut..].to_vec();
                    let (data, charge) = i.hot_bytes(buf);
                    let written = Some((padded, dsync));
                    i.complete_write(
                        (file_pos, data, charge),
                        &partial,
                        batches,
                        end_offset,
                        written,
                    )
                }
            }
        };
        self.after_complete(persist_base).await
    }

    /// Persists the index entries a completed unit made due; false if that failed.
    async fn after_complete(&self, persist_base: Option<i64>) -> bool {
        if let Some(seg_base) = persist_base {
            if let Err(e) = self.persist_indexes(seg_base, false).await {
                // Indexes are rebuilt by recovery; a failure here is still a failing disk.
                let path = segment_path(&self.inner.borrow().dir, seg_base, "index");
                self.inner.borrow_mut().on_write_error(e, &path);
                return false;
            }
        }
        true
    }

    /// Appends a segment's unpersisted index entries to its index files; with `sync`, also
    /// syncs them (at roll and close).
    pub(super) async fn persist_indexes(&self, base: i64, sync: bool) -> io::Result<()> {
        let (index_file, time_file, idx, idx_at, time, time_at, n_idx, n_time) = {
            let i = self.inner.borrow();
            let Some(seg) = i.segments.get(&base) else {
                return Ok(());
            };
            let durable = if base == i.active().base {
                i.synced_size
            } else {
                u64::MAX
            };
            let p = seg.index.persisted;
            let n_idx = seg
                .index
                .entries
                .partition_point(|e| e.position as u64 <= durable)
                .max(p);
            let tp = seg.time_index.persisted;
            (
                seg.index_file.clone(),
                seg.time_file.clone(),
                seg.index.encode_range(p, n_idx),
                (HEADER_BYTES + p * OFFSET_ENTRY_BYTES) as u64,
                seg.time_index.encode_from(tp),
                (HEADER_BYTES + tp * TIME_ENTRY_BYTES) as u64,
                n_idx,
                seg.time_index.entries.len(),
            )
        };
        if !idx.is_empty() {
            index_file.write_bytes_at(idx, idx_at).await?;
        }
        if !time.is_empty() {
            time_file.write_bytes_at(time, time_at).await?;
        }
        if sync {
            index_file.sync_data().await?;
            time_file.sync_data().await?;
        }
        let mut i = self.inner.borrow_mut();
        if let Some(seg) = i.segments.get_mut(&base) {
            seg.index.persisted = seg.index.persisted.max(n_idx.min(seg.index.entries.len()));
            seg.time_index.persisted = seg
                .time_index
                .persisted
                .max(n_time.min(seg.time_index.entries.len()));
        }
        Ok(())
    }

    /// Waits while a preparation writes zeros into `start..end`.
    pub(super) async fn wait_for_preparation(&self, start: u64, end: u64) {
        loop {
            let done = self.prepared.notified();
            let busy = match self.inner.borrow().preparing {
                Some((s, e)) => s < end && start < e,
                None => false,
            };
            if !busy {
                return;
            }
            done.await;
        }
    }

    /// A unit met a full disk before any of it was written. If its offsets were handed out
    /// (tail reads), it cannot be refused and rewound, so the writer holds it: new appends
    /// are refused with `DiskFull` meanwhile, and after a pause the caller tries again
    /// (true). Otherwise — another error, nothing handed out, the log closing or
    /// truncating — the caller fails the unit (false).
    async fn hold_on_full(&self, e: &io::Error, path: &std::path::Path) -> bool {
        let storage = {
            let mut i = self.inner.borrow_mut();
            let served = i.tail_served_end > i.readable_end;
            if e.raw_os_error() != Some(libc::ENOSPC) || !served || i.closing || i.truncating {
                return false;
            }
            if i.held_full.is_none() {
                tracing::warn!(
                    path = %path.display(),
                    "disk full: holding writes already sent to followers until space returns; \
                     new appends are refused"
                );
                i.held_full = Some(path.to_path_buf());
            }
            i.storage.clone()
        };
        storage.sleep_ms(HOLD_RETRY_MS).await;
        true
    }

    /// A held unit went through: appends are taken again.
    fn end_hold(&self) {
        let mut i = self.inner.borrow_mut();
        if let Some(path) = i.held_full.take() {
            tracing::info!(path = %path.display(), "disk space back: writes resumed");
        }
    }

    /// Under flush = interval or never, reserves the active segment's blocks well ahead of
    /// a write of `write_pos..data_end` (the prepared zeros do this under flush = always). A
    /// failure (a full disk, a filesystem without fallocate) only costs speed: the write
    /// then allocates, or fails with the real error.
    async fn allocate_ahead(
        &self,
        file: &S::File,
        write_pos: u64,
        data_end: u64,
    ) -> io::Result<()> {
        let (start, end) = {
            let i = self.inner.borrow();
            // As much again as is reserved already (1 MiB at first, at most allocate_bytes):
            // a quiet partition reserves little, a busy one a lot.
            let chunk = i.allocated_end.max(1 << 20).min(i.config.allocate_bytes);
            let segment_end = align_up(i.config.segment_bytes as u64);
            if i.segment_dsync() || chunk == 0 {
                return Ok(());
            }
            if align_up(data_end) <= i.allocated_end {
                return Ok(());
            }
            let start = i.allocated_end.max(align_down(write_pos));
            (
                start,
                (align_up(data_end) + chunk)
                    .min(segment_end)
                    .max(align_up(data_end)),
            )
        };
        match file.allocate(start, end - start).await {
            Ok(()) => {
                self.inner.borrow_mut().allocated_end = end;
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, "reserving segment blocks failed");
                Err(e)
            }
        }
    }

    /// Starts preparing the next region of the active segment when the data comes within
    /// half a region of the prepared end (flush = always only).
    fn maybe_prepare(self: &Rc<Self>, data_end: u64) {
        let (file, start, end) = {
            let mut i = self.inner.borrow_mut();
            let chunk = i.config.prepare_bytes;
            let segment_end = align_up(i.config.segment_bytes as u64);
            if !i.segment_dsync() || chunk == 0 || i.preparing.is_some() {
                return;
            }
            if i.prepared_end >= data_end + chunk / 2 {
                return;
            }
            let start = i.prepared_end.max(align_up(data_end));
            let end = (start + chunk).min(segment_end);
            if end <= start {
                return;
            }
            i.preparing = Some((start, end));
            (i.active().file.clone(), start, end)
        };
        let weak = Rc::downgrade(self);
        let storage = self.inner.borrow().storage.clone();
        storage.spawn(async move {
            let r = write_zeros(&*file, start, end).await;
            let Some(shared) = weak.upgrade() else { return };
            let mut i = shared.inner.borrow_mut();
            i.preparing = None;
            let same_file = Rc::ptr_eq(&i.active().file, &file);
            match r {
                Ok(()) if same_file => i.prepared_end = i.prepared_end.max(end),
                Ok(()) => {}
                Err(e) => tracing::debug!(error = %e, "segment preparation failed"),
            }
            drop(i);
            shared.prepared.notify_waiters();
        });
    }

    /// Closes the active segment (data synced, indexes complete and synced) and creates
    /// the segment `base` as the new active one, its directory entry durable.
    async fn roll(self: &Rc<Self>, base: i64, roll_base_ms: i64) -> io::Result<()> {
        self.drain_behind().await;
        let (old_base, old_file, sync_old) = {
            let mut i = self.inner.borrow_mut();
            let sync_old = i.config.flush != FlushPolicy::Always || i.dirty;
            let seg = i.active_mut();
            seg.push_time_entry();
            (seg.base, seg.file.clone(), sync_old)
        };
        self.wait_for_preparation(0, u64::MAX).await;
        let old_size = self.inner.borrow().active().size;
        if self.inner.borrow().prepared_end > 0 {
            // The closed segment keeps its data only, not the prepared zeros.
            old_file.set_len(old_size).await?;
        }
        if sync_old || self.inner.borrow().prepared_end > 0 {
            old_file.sync_data().await?;
            let mut i = self.inner.borrow_mut();
            i.stats.syncs += 1;
            i.synced_size = i.active().size;
        }
        self.persist_indexes(old_base, true).await?;
        let (storage, dir) = {
            let i = self.inner.borrow();
            (i.storage.clone(), i.dir.clone())
        };
        let mut seg = create_segment(&storage, &dir, base).await?;
        seg.roll_base_ms = Some(roll_base_ms);
        storage.sync_dir(&dir).await?;
        let mut i = self.inner.borrow_mut();
        i.segments.insert(base, seg);
        i.written_partial.clear();
        i.dirty = false;
        i.synced_size = 0;
        i.prepared_end = 0;
        i.allocated_end = 0;
        Ok(())
    }
}

/// Bytes of each zero write of a preparation.
const PREPARE_WRITE_BYTES: usize = 256 << 10;

/// Writes zeros over `start..end` (block-aligned) and makes them durable.
pub(crate) async fn write_zeros<F: StorageFile>(file: &F, start: u64, end: u64) -> io::Result<()> {
    let mut zeros = AlignedBuf::with_capacity(PREPARE_WRITE_BYTES);
    let mut at = start;
    while at < end {
        let n = ((end - at) as usize).min(PREPARE_WRITE_BYTES);
        zeros.clear();
        zeros.resize_zeroed(n);
        let (r, back) = file.write_at(zeros, at, false).await;
        r?;
        zeros = back;
        at += n as u64;
    }
    file.sync_data().await
}

/// Creates the three files of an empty segment (directory entries not yet synced).
pub(super) async fn create_segment<S: Storage>(
    storage: &S,
    dir: &std::path::Path,
    base: i64,
) -> io::Result<Segment<S::File>> {
    let file = storage
        .open(&segment_path(dir, base, "log"), FileMode::Direct)
        .await?;
    let index_file = storage
        .open(&segment_path(dir, base, "index"), FileMode::Buffered)
        .await?;
    let time_file = storage
        .open(&segment_path(dir, base, "timeindex"), FileMode::Buffered)
        .await?;
    file.set_len(0).await?;
    index_file.set_len(0).await?;
    time_file.set_len(0).await?;
    index_file
        .write_bytes_at(encode_header(IndexKind::Offset, base), 0)
        .await?;
    time_file
        .write_bytes_at(encode_header(IndexKind::Time, base), 0)
        .await?;
    let handle = file.handle()?;
    Ok(Segment {
        base,
        file: Rc::new(file),
        handle,
        index_file: Rc::new(index_file),
        time_file: Rc::new(time_file),
        index: Default::default(),
        time_index: Default::default(),
        size: 0,
        next_offset: base,
        max_timestamp: -1,
        max_timestamp_batch: base,
        bytes_since_index: 0,
        roll_base_ms: None,
    })
}
