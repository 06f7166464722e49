//! The partition log: group commit, reads, roll, truncate, delete-records and retention.
//!
//! ## Group commit
//!
//! [`Log::append`] validates its batches, assigns offsets and copies them into the open
//! *write unit* at the back of a queue, all synchronously: offsets follow call order. One
//! writer task per log takes the front unit, writes it with a single block-aligned write
//! (RWF_DSYNC under `flush = always`) and completes every append the unit carried. Appends
//! arriving while a write is in flight land in the next unit and share its write: the
//! number of writes per second stays bounded by the disk's latency, not by the append rate.
//!
//! A unit starts at the block holding the log end: the partial last block is copied into the
//! new unit (the *carry*) and rewritten together with the new bytes, so every write is
//! aligned and nothing already acknowledged changes on disk.
//!
//! ## State ownership
//!
//! All state sits in one `RefCell` owned by the shard's thread; borrows never span an
//! `.await`. Only the writer task performs segment IO on the append path; truncation waits
//! until the writer is idle and refuses appends meanwhile.

mod behind;
mod epochs;
mod maintenance;
mod producers;
mod read;
mod recovery;
pub use recovery::Recovery;
mod segment;
mod writer;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::{oneshot, Notify};

use crate::batch::{self, BatchHeader};
use crate::buf::{align_down, AlignedBuf};
use crate::config::{ConfigError, FlushPolicy, LogConfig, TimestampType};
use crate::error::AppendError;
use crate::producer::{self, Check, ProducerTable, SequenceError};
use crate::storage::Storage;

pub use read::{ReadResult, Slice};
use segment::{BatchMeta, HotCache, Segment};
pub(crate) use writer::write_zeros;

/// Smallest write buffer taken for a unit: big enough that a busy log rarely grows one.
const UNIT_BYTES_MIN: usize = 256 * 1024;

/// The same for a log under the shard journal (many quiet partitions each keep one).
const JOURNALED_UNIT_BYTES_MIN: usize = 16 * 1024;

/// A Kafka offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub i64);

/// What an append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record of the first batch.
    pub first_offset: Offset,
    /// Offset of the last record of the last batch.
    pub last_offset: Offset,
    /// The LogAppendTime stamped on the batches, or -1 under CreateTime.
    pub log_append_time_ms: i64,
    /// The batches were a retry of an idempotent producer's batches already in the log:
    /// nothing was written and the offsets are the original ones.
    pub duplicate: bool,
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub appends: u64,
    /// Bytes of the batches appended (not counting retried duplicates).
    pub bytes_appended: u64,
    pub writes: u64,
    pub syncs: u64,
    pub bytes_written: u64,
}

/// The on-disk log of one partition. Cheap to clone (a handle); single-threaded.
pub struct Log<S: Storage> {
    shared: Rc<Shared<S>>,
}

impl<S: Storage> Clone for Log<S> {
    fn clone(&self) -> Self {
        Log {
            shared: self.shared.clone(),
        }
    }
}

impl<S: Storage> fmt::Debug for Log<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.shared.inner.borrow();
        f.debug_struct("Log")
            .field("dir", &i.dir)
            .field("log_start", &i.log_start)
            .field("readable_end", &i.readable_end)
            .field("segments", &i.segments.len())
            .finish()
    }
}

pub(crate) struct Shared<S: Storage> {
    inner: RefCell<Inner<S>>,
    /// Wakes the writer task when a unit is queued or the log closes.
    wake: Rc<Notify>,
    /// Notified whenever the writer becomes idle.
    idle: Rc<Notify>,
    /// Notified when a segment preparation ends.
    prepared: Notify,
    /// Notified when a write-behind write ends (see [`behind`]).
    behind_progress: Notify,
    /// One write of the epoch cache file at a time (see [`epochs`]).
    epochs_lock: tokio::sync::Mutex<()>,
}

impl<S: Storage> Drop for Shared<S> {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// Tail of a segment as far as it has been written or queued: where the next unit starts.
struct Tail {
    segment_base: i64,
    end_pos: u64,
    roll_base_ms: i64,
}

/// The in-flight unit's tail, kept while its buffer belongs to the kernel.
struct InFlight {
    segment_base: i64,
    end_pos: u64,
    partial: Vec<u8>,
    roll_base_ms: i64,
}

/// Bytes queued for one write into one segment.
struct Unit {
    segment_base: i64,
    /// The writer must create segment `segment_base` before writing this unit.
    new_segment: bool,
    /// Aligned file position of `buf[0]`.
    file_pos: u64,
    buf: AlignedBuf,
    batches: Vec<BatchMeta>,
    end_offset: i64,
    roll_base_ms: i64,
}

type Waiter = (i64, oneshot::Sender<Result<(), AppendError>>);

struct Inner<S: Storage> {
    storage: S,
    dir: PathBuf,
    config: LogConfig,
    /// All segments by base offset; the last is the active one.
    segments: BTreeMap<i64, Segment<S::File>>,
    log_start: i64,
    /// Offset of the next batch to be queued.
    next_offset: i64,
    /// Offsets below this are written (durable under the flush policy) and readable.
    readable_end: i64,
    queue: VecDeque<Unit>,
    /// Tail of the unit being written, while one is in flight.
    in_flight: Option<InFlight>,
    /// Tail of the active segment as written: partial last block.
    written_partial: Vec<u8>,
    waiters: VecDeque<Waiter>,
    poisoned: Option<Arc<std::io::Error>>,
    truncating: bool,
    closing: bool,
    writer_running: bool,
    hot: HotCache,
    /// Write buffers for reuse.
    pool: crate::buf::BufPool,
    /// Bytes of the last unit taken by the writer (sizes the next buffers).
    last_unit_bytes: usize,
    /// End of the zero-written, synced region ahead of the active segment's data.
    prepared_end: u64,
    /// The region being prepared, while a preparation runs.
    preparing: Option<(u64, u64)>,
    /// End of the blocks reserved ahead of the active segment's data (flush = interval or
    /// never; see [`LogConfig::allocate_bytes`]).
    allocated_end: u64,
    /// Written but not yet synced data (flush = interval / never).
    dirty: bool,
    /// Bytes of the active segment known durable. Index entries are persisted only up to
    /// here, so recovery never trusts an index entry that lies past lost data.
    synced_size: u64,
    last_flush_ms: i64,
    stats: LogStats,
    /// Idempotent producers' sequence state (see [`crate::producer`]).
    producers: ProducerTable,
    /// Offset of the newest producer snapshot written (or loaded).
    producer_snapshot: i64,
    /// Older snapshots superseded by a checkpoint's, removed at the next checkpoint (see
    /// [`checkpoint_mark`]).
    stale_snapshots: Vec<i64>,
    /// The shard journal that makes appends durable under `flush = always`, once attached.
    journal: Option<crate::journal::Journal<S>>,
    /// This partition's name in journal records (its directory's name).
    journal_name: String,
    /// `(end offset, LSN)` of this log's journal records whose bytes its segment may not
    /// hold durably yet, oldest first (see [`checkpoint_for_journal`]).
    journal_pending: VecDeque<(i64, u64)>,
    /// Segment writes waiting behind their acknowledgement (journaled logs).
    behind: behind::Behind,
    /// Which leader epoch wrote where (see [`epochs`]).
    epochs: crate::epoch::EpochCache,
    /// Bumped at each change of `epochs`; the file holds `epochs_persisted`.
    epochs_version: u64,
    epochs_persisted: u64,
    /// The epoch client appends are stamped with while this replica leads.
    leader_epoch: Option<crate::epoch::Epoch>,
    /// While set ([`Log::set_tail_reads`]): a copy of each batch queued and not yet
    /// readable, `(base offset, next offset, bytes as stored)`, oldest first, so that a
    /// leader can send its followers what is not yet durable here (see [`Log::read_tail`]).
    tail_copies: Option<VecDeque<(i64, i64, bytes::Bytes)>>,
    /// The end of what [`Log::read_tail`] handed out: those offsets may be on other
    /// replicas, so they must never be given to other batches (a refused write poisons).
    tail_served_end: i64,
    /// Set while the writer holds a unit whose offsets were handed out (tail reads) on a
    /// full disk, retrying until space returns: new appends are refused with
    /// [`AppendError::DiskFull`] meanwhile.
    held_full: Option<PathBuf>,
    /// A full disk was logged and no write has succeeded since (one warning per episode).
    full_warned: bool,
}

/// Where appended batches come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A producer: sequences checked, offsets assigned, stamped with the leader epoch.
    Client,
    /// The shard journal's replay: kept as stamped the first time.
    Replayed,
    /// The partition's leader: offsets, epochs and timestamps kept as the leader wrote
    /// them; producer state follows without refusing anything.
    Replicated,
}

impl<S: Storage> Inner<S> {
    fn active(&self) -> &Segment<S::File> {
        // Invariant: a log always has at least one segment (open creates one).
        match self.segments.last_key_value() {
            Some((_, s)) => s,
            None => unreachable!("a log always has an active segment"),
        }
    }

    fn active_mut(&mut self) -> &mut Segment<S::File> {
        match self.segments.last_entry() {
            Some(e) => e.into_mut(),
            None => unreachable!("a log always has an active segment"),
        }
    }

    /// Segment writes are durable one by one (RWF_DSYNC): `flush = always` without a journal.
    fn segment_dsync(&self) -> bool {
        self.config.flush == FlushPolicy::Always && self.journal.is_none()
    }

    /// Appends are made durable by the shard journal.
    fn journaled(&self) -> Option<crate::journal::Journal<S>> {
        match self.config.flush {
            FlushPolicy::Always => self.journal.clone(),
            _ => None,
        }
    }

    fn check_writable(&self) -> Result<(), AppendError> {
        if let Some(e) = &self.poisoned {
            return Err(AppendError::Poisoned {
                dir: self.dir.clone(),
                source: e.clone(),
            });
        }
        if self.closing {
            return Err(AppendError::Closed);
        }
        if self.truncating {
            return Err(AppendError::Truncating);
        }
        if let Some(path) = &self.held_full {
            return Err(AppendError::DiskFull { path: path.clone() });
        }
        Ok(())
    }

    /// Where the next batch would go if appended to the current tail segment.
    fn tail(&mut self, now_ms: i64) -> Tail {
        if let Some(u) = self.queue.back() {
            return Tail {
                segment_base: u.segment_base,
                end_pos: u.file_pos + u.buf.len() as u64,
                roll_base_ms: u.roll_base_ms,
            };
        }
        if let Some(t) = &self.in_flight {
            return Tail {
                segment_base: t.segment_base,
                end_pos: t.end_pos,
                roll_base_ms: t.roll_base_ms,
            };
        }
        let seg = self.active_mut();
        let roll_base_ms = *seg.roll_base_ms.get_or_insert(now_ms);
        Tail {
            segment_base: seg.base,
            end_pos: seg.size,
            roll_base_ms,
        }
    }

    /// Capacity of a new unit's buffer: small for a quiet log, a full unit (so it never
    /// grows) once units have been large.
    fn unit_capacity(&self) -> usize {
        // A journaled log hands its unit buffer back as soon as the journal has copied it,
        // so a quiet one needs little; a busy one a full unit.
        let min = match self.journal {
            Some(_) => JOURNALED_UNIT_BYTES_MIN,
            None => UNIT_BYTES_MIN,
        };
        if self.last_unit_bytes >= min {
            self.config.write_bytes_max + crate::buf::BLOCK_BYTES
        } else {
            min
        }
    }

    /// The bytes of the tail's partial last block: what a new unit must carry.
    fn tail_partial(&self) -> &[u8] {
        if let Some(u) = self.queue.back() {
            let cut = align_down(u.buf.len() as u64) as usize;
            return &u.buf.as_slice()[cut..];
        }
        if let Some(t) = &self.in_flight {
            return &t.partial;
        }
        &self.written_partial
    }

    /// Validates and queues `batches`, returning what they were given and the receiver
    /// that completes when they are durable.
    fn enqueue<B: AsRef<[u8]>>(
        &mut self,
        batches: &[B],
        origin: Origin,
    ) -> Result<(AppendInfo, oneshot::Receiver<Result<(), AppendError>>), AppendError> {
        self.check_writable()?;
        if batches.is_empty() {
            return Err(batch::BatchError::Empty.into());
        }
        let headers = batches
            .iter()
            .enumerate()
            .map(|(i, b)| batch::validate(b.as_ref(), i))
            .collect::<Result<Vec<_>, _>>()?;
        let segment_bytes = self.config.segment_bytes;
        if let Some(b) = batches
            .iter()
            .find(|b| b.as_ref().len() > segment_bytes as usize)
        {
            return Err(AppendError::BatchTooLarge {
                len: b.as_ref().len(),
                segment_bytes,
            });
        }
        let now_ms = self.storage.now_ms();
        match origin {
            Origin::Replicated => self.check_replicated(&headers)?,
            // Checked when first appended (by this log or by the leader it came from): the
            // journal holds no duplicate, and a table rebuilt from an older state must not
            // refuse what the log already took.
            Origin::Replayed => {}
            Origin::Client => {
                if let Some((first, last)) = self.check_sequences(&headers)? {
                    return Ok(self.duplicate(first, last));
                }
            }
        }
        // A replayed or replicated batch keeps the LogAppendTime it was stamped with.
        let append_time =
            self.config.timestamp_type == TimestampType::LogAppendTime && origin == Origin::Client;
        let stamp = match origin {
            Origin::Client => self.leader_epoch,
            Origin::Replayed | Origin::Replicated => None,
        };
        let first = self.next_offset;
        for (b, h) in batches.iter().zip(&headers) {
            let base = self.next_offset;
            self.stats.bytes_appended += b.as_ref().len() as u64;
            self.queue_batch(b.as_ref(), h, now_ms, append_time, stamp);
            match origin {
                Origin::Client => self.producers.record(h, base, now_ms),
                Origin::Replayed | Origin::Replicated => {
                    self.producers.record_stored(h, base, now_ms)
                }
            }
            if origin != Origin::Client && h.partition_leader_epoch >= 0 {
                // Checked above for replicated batches; a replayed one was accepted once.
                if let Err(e) = self.note_epoch(h.partition_leader_epoch, base) {
                    tracing::warn!(dir = %self.dir.display(), offset = base, error = %e,
                        "replayed batch's leader epoch is older than the log's: not recorded");
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back((self.next_offset, tx));
        self.stats.appends += 1;
        let info = AppendInfo {
            first_offset: Offset(first),
            last_offset: Offset(self.next_offset - 1),
            log_append_time_ms: if append_time { now_ms } else { -1 },
            duplicate: false,
        };
        Ok((info, rx))
    }

    /// Checks batches from the leader: they continue the log at its end, contiguous, with
    /// leader epochs that never go back (a batch without an epoch is refused). Each batch
    /// is checked against the epoch that covers its offset in the cache, not the latest
    /// one: [`Log::append_replicated`] records the epochs of the batches it is given
    /// before it appends them, so a later batch's newer epoch is already there.
    fn check_replicated(&self, headers: &[BatchHeader]) -> Result<(), AppendError> {
        let mut expected = self.next_offset;
        let covering = |offset: i64| {
            let entries = self.epochs.entries();
            let k = entries.partition_point(|e| e.start_offset <= offset);
            k.checked_sub(1).map_or(0, |k| entries[k].epoch)
        };
        let mut latest = covering(expected);
        for h in headers {
            latest = latest.max(covering(h.base_offset));
            if h.base_offset != expected {
                return Err(AppendError::NotContiguous {
                    expected,
                    got: h.base_offset,
                });
            }
            let epoch = h.partition_leader_epoch;
            if epoch < latest {
                let source = if epoch < 0 {
                    crate::epoch::EpochError::Negative {
                        epoch,
                        start_offset: h.base_offset,
                    }
                } else {
                    crate::epoch::EpochError::EpochNotAfter { epoch, latest }
                };
                return Err(AppendError::Epoch {
                    offset: h.base_offset,
                    source,
                });
            }
            latest = epoch;
            expected = h.last_offset() + 1;
        }
        Ok(())
    }

    /// Checks idempotent producers' sequences: `Some(first, last offset)` when the batches
    /// are all retries of batches already queued or written.
    fn check_sequences(
        &self,
        headers: &[BatchHeader],
    ) -> Result<Option<(i64, i64)>, SequenceError> {
        if !headers.iter().any(producer::is_idempotent) {
            return Ok(None);
        }
        if let [h] = headers {
            return Ok(match self.producers.check(h)? {
                Check::Append => None,
                Check::Duplicate(r) => Some((r.first_offset, r.last_offset)),
            });
        }
        // Several batches in one append (Kafka clients send one per partition): each is
        // checked against the table as the ones before it would leave it.
        let mut scratch = self.producers.clone();
        let mut offset = self.next_offset;
        let mut dups = Vec::with_capacity(headers.len());
        for h in headers {
            match scratch.check(h)? {
                Check::Append => {
                    scratch.record(h, offset, 0);
                    offset += h.last_offset_delta as i64 + 1;
                    dups.push(None);
                }
                Check::Duplicate(r) => dups.push(Some(r)),
            }
        }
        match (dups.first(), dups.last()) {
            (Some(Some(a)), Some(Some(b))) if dups.iter().all(Option::is_some) => {
                Ok(Some((a.first_offset, b.last_offset)))
            }
            _ if dups.iter().all(Option::is_none) => Ok(None),
            _ => Err(SequenceError::MixedRetry {
                producer_id: headers[0].producer_id,
            }),
        }
    }

    /// The answer to a retry: the original offsets, complete once they are durable.
    fn duplicate(
        &mut self,
        first: i64,
        last: i64,
    ) -> (AppendInfo, oneshot::Receiver<Result<(), AppendError>>) {
        let (tx, rx) = oneshot::channel();
        if last < self.readable_end {
            let _ = tx.send(Ok(()));
        } else {
            // Still queued or in flight: complete with everything queued so far.
            self.waiters.push_back((self.next_offset, tx));
        }
        let info = AppendInfo {
            first_offset: Offset(first),
            last_offset: Offset(last),
            log_append_time_ms: -1,
            duplicate: true,
        };
        (info, rx)
    }

    fn queue_batch(
        &mut self,
        b: &[u8],
        h: &BatchHeader,
        now_ms: i64,
        append_time: bool,
        stamp_epoch: Option<crate::epoch::Epoch>,
    ) {
        let len = b.len() as u64;
        let count = h.last_offset_delta as i64 + 1;
        let tail = self.tail(now_ms);
        let full = tail.end_pos + len > self.config.segment_bytes as u64
            || now_ms - tail.roll_base_ms >= self.config.segment_ms
            || self.next_offset + count - tail.segment_base > i32::MAX as i64;
        let back_fits = self.queue.back().is_some_and(|u| {
            u.buf.len() + b.len() <= self.config.write_bytes_max || u.batches.is_empty()
        });
        if tail.end_pos > 0 && full {
            let buf = self.pool.take(self.unit_capacity().max(b.len()));
            self.queue.push_back(Unit {
                segment_base: self.next_offset,
                new_segment: true,
                file_pos: 0,
                buf,
                batches: Vec::new(),
                end_offset: self.next_offset,
                roll_base_ms: now_ms,
            });
        } else if !back_fits {
            let file_pos = align_down(tail.end_pos);
            let need = self.tail_partial().len() + b.len();
            let mut buf = self.pool.take(self.unit_capacity().max(need));
            buf.extend_from_slice(self.tail_partial());
            self.queue.push_back(Unit {
                segment_base: tail.segment_base,
                new_segment: false,
                file_pos,
                buf,
                batches: Vec::new(),
                end_offset: self.next_offset,
                roll_base_ms: tail.roll_base_ms,
            });
        }
        let base = self.next_offset;
        let Some(unit) = self.queue.back_mut() else {
            unreachable!("a unit was just ensured at the back of the queue")
        };
        let at = unit.buf.len();
        unit.buf.extend_from_slice(b);
        let stored = &mut unit.buf.as_mut_slice()[at..];
        batch::set_base_offset(stored, base);
        if let Some(epoch) = stamp_epoch {
            batch::set_leader_epoch(stored, epoch);
        }
        let max_timestamp = if append_time {
            batch::set_log_append_time(stored, now_ms);
            now_ms
        } else {
            h.max_timestamp
        };
        if let Some(copies) = &mut self.tail_copies {
            copies.push_back((base, base + count, bytes::Bytes::copy_from_slice(stored)));
        }
        unit.batches.push(BatchMeta {
            base,
            last: base + count - 1,
            max_timestamp,
            position: unit.file_pos + at as u64,
            len: b.len() as u32,
        });
        self.next_offset = base + count;
        unit.end_offset = self.next_offset;
    }

    fn complete_waiters(&mut self, end_offset: i64) {
        while self
            .waiters
            .front()
            .is_some_and(|(end, _)| *end <= end_offset)
        {
            if let Some((_, tx)) = self.waiters.pop_front() {
                let _ = tx.send(Ok(()));
            }
        }
    }

    fn fail_waiters(&mut self, err: &AppendError) {
        for (_, tx) in self.waiters.drain(..) {
            let _ = tx.send(Err(err.clone()));
        }
    }
}

impl<S: Storage> Log<S> {
    /// Appends one or more RecordBatch v2 blobs. Validation and offset assignment happen
    /// now (so offsets follow call order); the returned future completes when the batches
    /// are durable under the flush policy. A refused append writes nothing.
    pub fn append<B: AsRef<[u8]>>(
        &self,
        batches: &[B],
    ) -> impl Future<Output = Result<AppendInfo, AppendError>> + 'static {
        self.append_inner(batches, Origin::Client)
    }

    /// Appends batches fetched from the partition's leader, exactly as the leader stored
    /// them: they must start at this log's end, be contiguous and carry leader epochs that
    /// never go back. Offsets, epochs and LogAppendTime are kept; idempotent producers'
    /// state follows them without refusal (the leader checked the sequences). A batch that
    /// brings a new epoch makes the epoch cache durable before the append completes.
    pub async fn append_replicated<B: AsRef<[u8]>>(
        &self,
        batches: &[B],
    ) -> Result<AppendInfo, AppendError> {
        // The epochs first, durably: no batch of an epoch the file does not name can become
        // durable (an entry at the log end with no batch yet is harmless, as a new leader's).
        let changed = {
            let mut i = self.shared.inner.borrow_mut();
            i.check_writable()?;
            let headers = batches
                .iter()
                .enumerate()
                .map(|(k, b)| batch::validate(b.as_ref(), k))
                .collect::<Result<Vec<_>, _>>()?;
            i.check_replicated(&headers)?;
            let mut changed = false;
            for h in &headers {
                changed |= i
                    .note_epoch(h.partition_leader_epoch, h.base_offset)
                    .map_err(|source| AppendError::Epoch {
                        offset: h.base_offset,
                        source,
                    })?;
            }
            changed || i.epochs_dirty()
        };
        if changed {
            self.shared.persist_epochs().await.map_err(|e| match e {
                crate::LogError::Io { source, .. } | crate::LogError::Poisoned { source, .. } => {
                    AppendError::Poisoned {
                        dir: self.dir(),
                        source,
                    }
                }
                _ => AppendError::Closed,
            })?;
        }
        let queued = {
            let mut i = self.shared.inner.borrow_mut();
            let queued = i.enqueue(batches, Origin::Replicated);
            if queued.is_err() {
                // Refused (a truncation began, the log closed, the batches no longer follow
                // its end): the epochs noted for them cover nothing, and would make the
                // next batches of an older epoch look like going back.
                let end = i.next_offset;
                let before = i.epochs.clone();
                i.epochs.truncate_from_end(end);
                if i.epochs != before {
                    i.epochs_version += 1;
                }
            }
            queued
        };
        let (info, rx) = queued?;
        self.shared.wake.notify_one();
        match rx.await {
            Ok(r) => r.map(|()| info),
            Err(_) => Err(AppendError::Closed),
        }
    }

    /// Appends batches read back from the shard journal: like [`Log::append`], but a
    /// LogAppendTime already stamped in them is kept.
    pub(crate) fn append_replayed<B: AsRef<[u8]>>(
        &self,
        batches: &[B],
    ) -> impl Future<Output = Result<AppendInfo, AppendError>> + 'static {
        self.append_inner(batches, Origin::Replayed)
    }

    fn append_inner<B: AsRef<[u8]>>(
        &self,
        batches: &[B],
        origin: Origin,
    ) -> impl Future<Output = Result<AppendInfo, AppendError>> + 'static {
        let queued = self.shared.inner.borrow_mut().enqueue(batches, origin);
        if queued.is_ok() {
            self.shared.wake.notify_one();
        }
        async move {
            let (info, rx) = queued?;
            match rx.await {
                Ok(r) => r.map(|()| info),
                Err(_) => Err(AppendError::Closed),
            }
        }
    }

    /// Keeps (`true`) or stops keeping a copy of every batch appended from now on until it
    /// is readable, for [`Log::read_tail`] (a leader with followers).
    pub fn set_tail_reads(&self, on: bool) {
        let mut i = self.shared.inner.borrow_mut();
        match (on, i.tail_copies.is_some()) {
            (true, false) => i.tail_copies = Some(VecDeque::new()),
            (false, true) => i.tail_copies = None,
            _ => {}
        }
    }

    /// Whole batches from `offset` (at least one, then up to `max_bytes`) that are
    /// appended but not yet readable (not yet durable under `flush = always`); `None` when
    /// `offset` is not the start of such a batch (below the readable end, past the
    /// appended end, or tail reads are off). Returns the bytes and the next offset. A leader
    /// sends these to its followers so that their durable writes overlap its own; the
    /// offsets handed out are never reused: a write failure after this poisons the log
    /// instead of refusing and rewinding.
    pub fn read_tail(&self, offset: Offset, max_bytes: u32) -> Option<(bytes::Bytes, Offset)> {
        let mut i = self.shared.inner.borrow_mut();
        if offset.0 < i.readable_end {
            return None;
        }
        let copies = i.tail_copies.as_ref()?;
        let first = copies.partition_point(|(base, _, _)| *base < offset.0);
        let (base, _, _) = copies.get(first)?;
        if *base != offset.0 {
            return None;
        }
        let mut parts: Vec<bytes::Bytes> = Vec::new();
        let (mut bytes, mut next) = (0usize, offset.0);
        for (_, end, b) in copies.range(first..) {
            if !parts.is_empty() && bytes + b.len() > max_bytes as usize {
                break;
            }
            bytes += b.len();
            next = *end;
            parts.push(b.clone());
        }
        i.tail_served_end = i.tail_served_end.max(next);
        let out = match parts.as_slice() {
            [one] => one.clone(),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(bytes);
                for p in &parts {
                    all.extend_from_slice(p);
                }
                all.freeze()
            }
        };
        Some((out, Offset(next)))
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> Offset {
        Offset(self.shared.inner.borrow().log_start)
    }

    /// The offset after the last readable (written and, under `always`, durable) batch.
    pub fn readable_end(&self) -> Offset {
        Offset(self.shared.inner.borrow().readable_end)
    }

    /// The offset the next appended batch will get.
    pub fn next_offset(&self) -> Offset {
        Offset(self.shared.inner.borrow().next_offset)
    }

    /// The log's directory.
    pub fn dir(&self) -> PathBuf {
        self.shared.inner.borrow().dir.clone()
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        self.shared.inner.borrow().stats
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.shared
            .inner
            .borrow()
            .segments
            .values()
            .map(|s| s.size)
            .sum()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<Offset> {
        self.shared
            .inner
            .borrow()
            .segments
            .keys()
            .map(|b| Offset(*b))
            .collect()
    }

    /// The idempotent producers this log remembers (DescribeProducers).
    pub fn producer_states(&self) -> Vec<crate::producer::ProducerState> {
        self.shared.inner.borrow().producers.states()
    }

    /// The configuration in force.
    pub fn config(&self) -> LogConfig {
        self.shared.inner.borrow().config.clone()
    }

    /// Changes the configuration while the log is open (AlterConfigs): every setting takes
    /// effect from the next unit written (segment size, roll time, flush policy) or the next
    /// tick (retention, `flush.ms`). A bad setting changes nothing. Returns true when the
    /// flush policy became stronger: the caller then [`Log::flush`]es, so that what was
    /// written under the weaker policy is durable too.
    pub fn set_config(&self, config: LogConfig) -> Result<bool, ConfigError> {
        config.validate()?;
        let rank = |f: FlushPolicy| match f {
            FlushPolicy::Never => 0,
            FlushPolicy::Interval => 1,
            FlushPolicy::Always => 2,
        };
        let mut i = self.shared.inner.borrow_mut();
        let stronger = rank(config.flush) > rank(i.config.flush);
        i.config = config;
        drop(i);
        self.shared.wake.notify_one();
        Ok(stronger)
    }

    /// The directory of a segment file, for tools.
    pub fn segment_file(&self, base: Offset) -> PathBuf {
        segment::segment_path(&self.shared.inner.borrow().dir, base.0, "log")
    }

    /// Periodic duties, driven by the owner's timer: fdatasync under
    /// `flush = interval` when due, and retention.
    pub async fn tick(&self) -> Result<(), crate::LogError> {
        let due = {
            let i = self.shared.inner.borrow();
            let now = i.storage.now_ms();
            i.config.flush == FlushPolicy::Interval
                && i.dirty
                && now - i.last_flush_ms >= i.config.flush_interval_ms
        };
        if due {
            self.flush().await?;
        }
        self.shared.behind_tick();
        self.enforce_retention().await?;
        self.producers_tick().await
    }
}

impl<S: Storage> Log<S> {
    /// Makes the shard journal the durability path of this log's appends under
    /// `flush = always`: segments are then written without sync and synced by the journal's
    /// checkpoints. Call before the first append.
    pub fn attach_journal(&self, journal: &crate::journal::Journal<S>) {
        let mut i = self.shared.inner.borrow_mut();
        debug_assert!(i.queue.is_empty() && i.in_flight.is_none());
        i.journal_name = i
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        i.journal = Some(journal.clone());
        drop(i);
        journal.attach(Rc::downgrade(&self.shared));
    }
}

/// A journal's reference to an attached log.
pub(crate) type LogRef<S> = std::rc::Weak<Shared<S>>;

/// What a checkpoint learnt from one log.
pub(crate) struct LogCheckpoint {
    pub name: String,
    /// Offsets below this are durable in the log's segments.
    pub durable_end: i64,
    /// LSN of the oldest journal record the log still needs.
    pub needed_lsn: Option<u64>,
}

/// A log's state captured by a checkpoint before its sync.
pub(crate) struct CheckpointMark<S: Storage> {
    shared: Rc<Shared<S>>,
    end: i64,
    /// Segment writes completed when captured (a later one is not covered by the sync).
    writes: u64,
    base: i64,
    size: u64,
    /// The log has segment writes the sync must cover.
    pub dirty: bool,
    /// A producer snapshot at `end` was written for the sync to make durable.
    pub snapshot: bool,
}

/// First half of a checkpoint: writes out the log's bytes queued behind the journal and
/// captures what the coming sync will cover (no await between the two); then writes the
/// producers' snapshot at the captured end, if the log grew since the last one.
///
/// The snapshot is written without a sync of its own: the checkpoint's sync of the whole
/// filesystem makes it durable together with the segment bytes below its offset, so a
/// restart after a crash rebuilds producer state from the last checkpoint instead of
/// scanning the whole active segment. Until that sync succeeds the previous snapshot stays
/// (a torn or missing new one is ignored at open, and one past the recovered end is never
/// used); the previous one is removed at the next checkpoint.
pub(crate) async fn checkpoint_mark<S: Storage>(shared: Rc<Shared<S>>) -> CheckpointMark<S> {
    shared.drain_behind().await;
    let (end, writes, base, size, dirty, snapshot_bytes) = {
        let i = shared.inner.borrow();
        let seg = i.active();
        let end = i.readable_end;
        let snapshot_bytes = (end > i.producer_snapshot.max(0) && i.poisoned.is_none())
            .then(|| i.producers.encode_snapshot(end));
        (
            end,
            i.stats.writes,
            seg.base,
            seg.size,
            i.dirty,
            snapshot_bytes,
        )
    };
    let log = Log {
        shared: shared.clone(),
    };
    let stale = std::mem::take(&mut shared.inner.borrow_mut().stale_snapshots);
    for o in stale {
        if let Err(e) = log.remove_producer_snapshot(o).await {
            tracing::warn!(error = %e, "removing a superseded producer snapshot");
        }
    }
    let snapshot = match snapshot_bytes {
        Some(b) => match log.write_producer_snapshot(end, b, false).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "producer snapshot at a checkpoint");
                false
            }
        },
        None => false,
    };
    CheckpointMark {
        shared,
        end,
        writes,
        base,
        size,
        dirty,
        snapshot,
    }
}

/// Second half: after a sync of the whole filesystem (`synced`) the log's segment is durable
/// as captured and the journal records it covers are forgotten; a log whose sync failed (or
/// that is poisoned) keeps needing its records.
pub(crate) fn checkpoint_done<S: Storage>(m: CheckpointMark<S>, synced: bool) -> LogCheckpoint {
    let mut i = m.shared.inner.borrow_mut();
    let synced = synced && i.poisoned.is_none();
    if synced {
        if i.stats.writes == m.writes {
            i.dirty = false;
        }
        if i.active().base == m.base {
            i.synced_size = i.synced_size.max(m.size);
        }
        if m.dirty {
            i.stats.syncs += 1;
        }
        while i.journal_pending.front().is_some_and(|(e, _)| *e <= m.end) {
            i.journal_pending.pop_front();
        }
        if m.snapshot && m.end > i.producer_snapshot {
            if i.producer_snapshot >= 0 {
                let old = i.producer_snapshot;
                i.stale_snapshots.push(old);
            }
            i.producer_snapshot = m.end;
        }
    }
    LogCheckpoint {
        name: i.journal_name.clone(),
        durable_end: if synced { m.end } else { -1 },
        needed_lsn: i.journal_pending.front().map(|(_, lsn)| *lsn),
    }
}

/// Path helper shared by the submodules.
pub(crate) fn data_path(dir: &Path, base: i64) -> PathBuf {
    segment::segment_path(dir, base, "log")
}
