//! Write-behind of a journaled log's segment: once the shard journal holds a unit durably,
//! its append completes and the segment write can wait.
//!
//! Units are copied here in file order, merged into one buffer while they follow each
//! other, and go out as one O_DIRECT write (no sync),
//! once [`BEHIND_WRITE_BYTES`] have gathered (or half the hot cache), on the tick after
//! they have waited [`BEHIND_AGE_MS_MAX`], and before anything that needs the segment
//! complete (sync, checkpoint, roll, close, truncate, an in-place write, a lookup by time).
//! A busy partition thus costs the disk a few large writes instead of one per unit.
//!
//! Invariants:
//! * Every unit that completed is readable: until its segment write is done, its bytes are in
//!   the hot cache, because the bytes queued here never exceed `hot_bytes_max` (a unit waits
//!   for room before it joins) and the hot cache evicts only its oldest bytes beyond that.
//! * Segment writes keep file order, one at a time, so a unit that rewrites the partial
//!   block of the one before it lands after it.
//! * The journal forgets a unit's record only after a sync that follows its segment write
//!   (a checkpoint drains this queue before it syncs).
//! * A failed segment write poisons the log: its appends were acknowledged, so they are
//!   kept by the journal and written again by the replay after the next start.

use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use super::segment::segment_path;
use super::Shared;
use crate::buf::{align_down, AlignedBuf};
use crate::storage::{Storage, StorageFile};

/// Queued bytes that start a segment write (or half the hot cache, if that is smaller).
pub(super) const BEHIND_WRITE_BYTES: usize = 256 << 10;

/// Queued bytes older than this are written on the next tick, so that the segment writes
/// of many quiet partitions spread over time instead of all waiting for a checkpoint.
pub(super) const BEHIND_AGE_MS_MAX: i64 = 1000;

/// Largest single coalesced segment write.
const BEHIND_COALESCE_BYTES_MAX: usize = 4 << 20;

/// The queue of units waiting for their segment write.
#[derive(Debug, Default)]
pub(super) struct Behind {
    /// `(file position, buffer)` in file order.
    queue: VecDeque<(u64, AlignedBuf)>,
    /// Bytes of the queued buffers.
    queued_bytes: usize,
    /// A write task is running.
    running: bool,
    /// When the oldest queued bytes were queued (ms), while any are.
    oldest_ms: Option<i64>,
}

impl<S: Storage> Shared<S> {
    /// Waits until a unit of `len` bytes may join the queue without pushing queued bytes
    /// out of the hot cache.
    pub(super) async fn wait_behind_room(self: &Rc<Self>, len: usize) {
        loop {
            let progress = self.behind_progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            {
                let i = self.inner.borrow();
                let queued = i.behind.queued_bytes;
                if queued == 0 || queued + len <= i.config.hot_bytes_max || i.poisoned.is_some() {
                    return;
                }
            }
            self.start_behind();
            progress.await;
        }
    }

    /// Queues a copy of a unit's bytes for the segment, merged into the last queued write
    /// when it continues it; starts writing once enough has gathered. The unit's buffer
    /// goes back to the pool.
    pub(super) fn push_behind(self: &Rc<Self>, file_pos: u64, buf: AlignedBuf) {
        let start = {
            let mut i = self.inner.borrow_mut();
            let i = &mut *i;
            if i.behind.queue.is_empty() {
                i.behind.oldest_ms = Some(i.storage.now_ms());
            }
            let merged = match i.behind.queue.back_mut() {
                Some((pos, back))
                    if file_pos == align_down(*pos + back.len() as u64)
                        && back.len() + buf.len() <= BEHIND_COALESCE_BYTES_MAX =>
                {
                    let keep = (file_pos - *pos) as usize;
                    i.behind.queued_bytes -= back.len() - keep;
                    back.truncate(keep);
                    back.extend_from_slice(buf.as_slice());
                    i.behind.queued_bytes += buf.len();
                    true
                }
                _ => false,
            };
            if merged {
                i.pool.put(buf);
            } else {
                let mut staged = i.pool.take(buf.len());
                staged.extend_from_slice(buf.as_slice());
                i.pool.put(buf);
                i.behind.queued_bytes += staged.len();
                i.behind.queue.push_back((file_pos, staged));
            }
            i.behind.queued_bytes >= BEHIND_WRITE_BYTES.min(i.config.hot_bytes_max / 2)
        };
        if start {
            self.start_behind();
        }
    }

    /// Starts the write task if anything is queued and none runs.
    pub(super) fn start_behind(self: &Rc<Self>) {
        let storage = {
            let mut i = self.inner.borrow_mut();
            if i.behind.running || i.behind.queue.is_empty() {
                return;
            }
            i.behind.running = true;
            i.storage.clone()
        };
        let me = self.clone();
        storage.spawn(async move { me.run_behind().await });
    }

    /// Starts writing when the oldest queued bytes are older than [`BEHIND_AGE_MS_MAX`].
    pub(super) fn behind_tick(self: &Rc<Self>) {
        let due = {
            let i = self.inner.borrow();
            let now = i.storage.now_ms();
            i.behind
                .oldest_ms
                .is_some_and(|t| now - t >= BEHIND_AGE_MS_MAX)
        };
        if due {
            self.start_behind();
        }
    }

    /// Writes everything queued and waits until it is written (or failed).
    pub(super) async fn drain_behind(self: &Rc<Self>) {
        loop {
            let progress = self.behind_progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            {
                let i = self.inner.borrow();
                if (i.behind.queue.is_empty() && !i.behind.running) || i.poisoned.is_some() {
                    return;
                }
            }
            self.start_behind();
            progress.await;
        }
    }

    async fn run_behind(self: Rc<Self>) {
        loop {
            let next = {
                let mut i = self.inner.borrow_mut();
                let front = i.behind.queue.pop_front();
                if let Some((_, b)) = &front {
                    i.behind.queued_bytes -= b.len();
                }
                if i.behind.queue.is_empty() {
                    i.behind.oldest_ms = None;
                }
                front
            };
            let Some((pos, buf)) = next else { break };
            let (file, path) = {
                let i = self.inner.borrow();
                let seg = i.active();
                (seg.file.clone(), segment_path(&i.dir, seg.base, "log"))
            };
            let padded = buf.padded_len();
            let (res, buf) = file.write_at(buf, pos, false).await;
            let mut i = self.inner.borrow_mut();
            i.pool.put(buf);
            match res {
                Ok(()) => i.note_segment_write(padded, false),
                Err(e) => {
                    // Acknowledged already: only a reopen (and the journal's replay) can
                    // write it now.
                    let e = io::Error::other(format!("segment write behind the journal: {e}"));
                    i.behind.queue.clear();
                    i.behind.queued_bytes = 0;
                    i.on_write_error(e, &path);
                    break;
                }
            }
            drop(i);
            self.behind_progress.notify_waiters();
        }
        self.inner.borrow_mut().behind.running = false;
        self.behind_progress.notify_waiters();
    }
}
