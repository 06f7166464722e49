//! The shard journal: the durability path of every partition a shard owns under
//! `flush = always` (BookKeeper's journal, ZFS's intent log).
//!
//! ## Why
//!
//! A durable write per partition file costs the filesystem a journal commit per file, so
//! latency and CPU grew with the number of partitions an instant touched. Here each shard
//! writes one sequential stream instead: a unit of records from *all* its partitions goes
//! out as one `RWF_DSYNC` O_DIRECT write, with at most one such write in flight (group
//! commit: whatever arrives meanwhile shares the next write). The partitions' segments get
//! the same bytes later, merged into large plain O_DIRECT writes (no sync, see
//! `crate::log`'s write-behind), and stay what Fetch reads; until then reads come from
//! memory.
//!
//! ## Files
//!
//! `journal.files` files of `journal.file.bytes` each, named by slot (`00000000.journal`…),
//! zeroed once when the journal is first opened and then recycled in turn: writes never extend a file and
//! never allocate. A file is reused only once every record in it is older than the
//! checkpoint's replay start.
//!
//! ## Checkpoints
//!
//! [`Journal::checkpoint`] writes out every attached partition's queued segment bytes, syncs
//! the filesystem once (`syncfs`), records per partition the offset below which its segment
//! is durable, and moves the replay start to the oldest record some partition still needs. It runs in the background when a
//! new file is started, before a file is reused, when a topic is deleted and at close.
//!
//! ## Invariants
//!
//! * An append under `flush = always` completes only after its journal record is durable.
//! * A record is forgotten (the replay start passes it) only after its partition's segment
//!   write and a sync after it.
//! * LSNs (journal positions) only grow; a record's LSN is written in it, so the bytes of an
//!   earlier use of a recycled file never read as records.
//! * A failed journal write poisons the journal: every later submit fails with the first
//!   error, so nothing after it is acknowledged, and every partition that tries to append
//!   is poisoned in turn.
//! * The journal a shard opens is empty past its checkpoint: the broker replays every
//!   journal ([`recover`]) before any shard starts, so partitions may move between shards
//!   across a restart.
//!
//! The byte layout is in `engine/FORMAT.md` ("Shard journal").

pub mod format;
mod replay;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{oneshot, Notify};

use crate::buf::{align_down, AlignedBuf, BufPool};
use crate::storage::{FileMode, Storage, StorageFile};
use format::{FileHeader, Record, RecordKind, FILE_HEADER_BYTES};

pub use replay::{recover, ReplayStats};

/// The two checkpoint files of a journal directory: checkpoint N goes to file N % 2, in
/// place, so a torn write leaves the other one whole, and a full disk never stops one
/// (both are written with zeros when the journal is created).
pub const CHECKPOINT_FILES: [&str; 2] = ["checkpoint.0", "checkpoint.1"];
/// Bytes each checkpoint file is prepared with (room for about 2,000 partitions; a larger
/// checkpoint grows its file).
const CHECKPOINT_FILE_BYTES: usize = 64 << 10;

/// Largest write unit the journal coalesces (a single larger record gets a unit of its own).
const UNIT_BYTES_MAX: usize = 1 << 20;

/// The journal's settings (broker keys `journal.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Size of each journal file (`journal.file.bytes`).
    pub file_bytes: u64,
    /// Number of files recycled in turn (`journal.files`).
    pub files: u32,
    /// A partition's write unit of at least this many bytes is written durably in place in
    /// its segment (write + fdatasync) instead of through the journal (`journal.inplace.bytes`;
    /// 0: never).
    pub inplace_bytes: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            file_bytes: 64 << 20,
            files: 4,
            inplace_bytes: 512 << 10,
        }
    }
}

impl JournalConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        let err = |key, value: String, allowed| {
            Err(crate::config::ConfigError {
                key,
                value,
                allowed,
            })
        };
        if self.file_bytes < (64 << 10)
            || !self
                .file_bytes
                .is_multiple_of(crate::buf::BLOCK_BYTES as u64)
        {
            return err(
                "journal.file.bytes",
                self.file_bytes.to_string(),
                "at least 65536, a multiple of 4096",
            );
        }
        if self.files < 2 {
            return err("journal.files", self.files.to_string(), "at least 2");
        }
        Ok(())
    }

    /// Bytes of records one file holds.
    fn record_bytes(&self) -> u64 {
        self.file_bytes - FILE_HEADER_BYTES
    }
}

/// Why a journal could not be opened, replayed or checkpointed.
#[derive(Debug, Error)]
pub enum JournalError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("journal {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "journal {}: the checkpoint is corrupt; the journal cannot tell which records are \
         still needed (restore the file or move the journal aside after checking the \
         partitions)", path.display()
    )]
    CorruptCheckpoint { path: PathBuf },
    #[error("journal {}: journal files exist but the checkpoint is missing", path.display())]
    MissingCheckpoint { path: PathBuf },
    #[error(
        "journal {} is corrupt at position {pos}: {reason}; records after it would be lost",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        pos: u64,
        reason: String,
    },
    #[error("journal {} holds records after its checkpoint: replay it first", path.display())]
    NotReplayed { path: PathBuf },
    #[error("replaying journal {} into partition {partition}: {reason}", path.display())]
    Replay {
        path: PathBuf,
        partition: String,
        reason: String,
    },
    #[error("journal stopped accepting writes after an I/O failure: {0}")]
    Poisoned(Arc<io::Error>),
}

impl JournalError {
    fn io(path: &Path, source: io::Error) -> Self {
        JournalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why a record was not accepted (nothing of it was written).
#[derive(Debug, Clone, Error)]
pub(crate) enum SubmitError {
    #[error("journal stopped accepting writes after an I/O failure: {0}")]
    Poisoned(Arc<io::Error>),
    #[error("journal is closed")]
    Closed,
    #[error("record of {0} bytes is larger than a journal file")]
    TooLarge(usize),
    #[error("no space for the next journal file")]
    DiskFull,
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub records: u64,
    pub writes: u64,
    pub bytes_written: u64,
    pub checkpoints: u64,
}

/// A submitted record: its LSN, and the durability of the write that carries it.
pub(crate) struct Ticket {
    pub lsn: u64,
    rx: oneshot::Receiver<Result<(), Arc<io::Error>>>,
}

impl Ticket {
    /// Completes when the record is durable.
    pub async fn durable(self) -> Result<(), Arc<io::Error>> {
        match self.rx.await {
            Ok(r) => r,
            Err(_) => Err(Arc::new(io::Error::other("journal closed"))),
        }
    }
}

/// One shard's journal. Cheap to clone (a handle); single-threaded.
pub struct Journal<S: Storage> {
    shared: Rc<Shared<S>>,
}

impl<S: Storage> Clone for Journal<S> {
    fn clone(&self) -> Self {
        Journal {
            shared: self.shared.clone(),
        }
    }
}

impl<S: Storage> fmt::Debug for Journal<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.shared.inner.borrow();
        f.debug_struct("Journal")
            .field("dir", &i.dir)
            .field("next_lsn", &i.next_lsn)
            .field("durable_lsn", &i.durable_lsn)
            .field("replay_start", &i.replay_start)
            .finish()
    }
}

struct Shared<S: Storage> {
    inner: RefCell<Inner<S>>,
    wake: Rc<Notify>,
    /// Notified when the writer goes idle.
    idle: Notify,
    /// Notified when a checkpoint ends.
    checkpointed: Notify,
    /// Notified when a file preparation ends.
    prepared: Notify,
}

impl<S: Storage> Drop for Shared<S> {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// One file of the ring.
struct Slot<F> {
    file: Option<Rc<F>>,
    /// LSN after the last record written into the file in its current use (0: none).
    end_lsn: u64,
}

/// Bytes queued for one write into one file.
struct Unit {
    slot: usize,
    /// Block-aligned file position of `buf[0]`.
    file_pos: u64,
    buf: AlignedBuf,
    lsn_end: u64,
    /// The unit starts a new use of the file (its first block is the header).
    new_file: bool,
}

type Waiter = (u64, oneshot::Sender<Result<(), Arc<io::Error>>>);

struct Inner<S: Storage> {
    storage: S,
    dir: PathBuf,
    config: JournalConfig,
    slots: Vec<Slot<S::File>>,
    /// Generation of the newest file started.
    generation: u64,
    /// Slot being filled; `None` until the first record after open.
    slot: Option<usize>,
    /// Slot the first file after open goes to.
    first_slot: usize,
    /// LSN at file position [`FILE_HEADER_BYTES`] of the current slot.
    start_lsn: u64,
    next_lsn: u64,
    durable_lsn: u64,
    queue: VecDeque<Unit>,
    /// File position after the in-flight unit, and its partial last block.
    in_flight: Option<(u64, Vec<u8>)>,
    /// Partial last block of the current file as written.
    written_partial: Vec<u8>,
    waiters: VecDeque<Waiter>,
    poisoned: Option<Arc<io::Error>>,
    replay_start: u64,
    /// Sequence number of the newest checkpoint written.
    checkpoint_sequence: u64,
    /// Partition logs attached to this journal (for checkpoints).
    logs: Vec<crate::log::LogRef<S>>,
    checkpointing: bool,
    /// A slot whose file is being created and zeroed.
    preparing: Option<usize>,
    /// The last file preparation failed (a full disk): records that need a new file are
    /// refused until one succeeds.
    prepare_failed: bool,
    closing: bool,
    writer_running: bool,
    pool: BufPool,
    stats: JournalStats,
}

impl<S: Storage> Inner<S> {
    /// File position where the next record goes in the current slot.
    fn tail_pos(&self) -> u64 {
        FILE_HEADER_BYTES + (self.next_lsn - self.start_lsn)
    }

    fn tail_partial(&self) -> &[u8] {
        if let Some(u) = self.queue.back() {
            let cut = align_down(u.buf.len() as u64) as usize;
            return &u.buf.as_slice()[cut..];
        }
        if let Some((_, p)) = &self.in_flight {
            return p;
        }
        &self.written_partial
    }

    fn start_file(&mut self) {
        let slot = match self.slot {
            Some(s) => (s + 1) % self.slots.len(),
            None => self.first_slot,
        };
        self.generation += 1;
        self.slot = Some(slot);
        self.start_lsn = self.next_lsn;
        let header = FileHeader {
            generation: self.generation,
            start_lsn: self.start_lsn,
            file_bytes: self.config.file_bytes,
        };
        let mut buf = self.pool.take(UNIT_BYTES_MAX);
        buf.extend_from_slice(&format::file_header_block(&header));
        self.queue.push_back(Unit {
            slot,
            file_pos: 0,
            buf,
            lsn_end: self.next_lsn,
            new_file: true,
        });
    }

    fn submit(
        &mut self,
        kind: RecordKind,
        partition: &str,
        base_offset: i64,
        payload: &[u8],
    ) -> Result<Ticket, SubmitError> {
        if let Some(e) = &self.poisoned {
            return Err(SubmitError::Poisoned(e.clone()));
        }
        if self.closing {
            return Err(SubmitError::Closed);
        }
        let len = format::record_len(partition, payload.len());
        if len as u64 > self.config.record_bytes() {
            return Err(SubmitError::TooLarge(len));
        }
        if self.slot.is_none() || self.tail_pos() + len as u64 > self.config.file_bytes {
            let next = self
                .slot
                .map_or(self.first_slot, |s| (s + 1) % self.slots.len());
            if self.prepare_failed && self.slots[next].file.is_none() {
                return Err(SubmitError::DiskFull);
            }
            self.start_file();
        } else if self
            .queue
            .back()
            .is_none_or(|u| u.buf.len() + len > UNIT_BYTES_MAX)
        {
            let tail = self.tail_pos();
            let carry = self.tail_partial().to_vec();
            let mut buf = self.pool.take((carry.len() + len).max(UNIT_BYTES_MAX));
            buf.extend_from_slice(&carry);
            let slot = self.slot.unwrap_or(self.first_slot);
            self.queue.push_back(Unit {
                slot,
                file_pos: align_down(tail),
                buf,
                lsn_end: self.next_lsn,
                new_file: false,
            });
        }
        let lsn = self.next_lsn;
        let Some(unit) = self.queue.back_mut() else {
            unreachable!("a unit was just ensured at the back of the queue")
        };
        debug_assert_eq!(
            unit.file_pos + unit.buf.len() as u64,
            FILE_HEADER_BYTES + (lsn - self.start_lsn)
        );
        let r = Record {
            lsn,
            kind,
            partition,
            base_offset,
            payload,
        };
        let written = format::encode_record(&r, |b| unit.buf.extend_from_slice(b));
        debug_assert_eq!(written, len);
        self.next_lsn += len as u64;
        unit.lsn_end = self.next_lsn;
        self.stats.records += 1;
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back((self.next_lsn, tx));
        Ok(Ticket { lsn, rx })
    }

    fn take_unit(&mut self) -> Option<Unit> {
        let u = self.queue.pop_front()?;
        let cut = align_down(u.buf.len() as u64) as usize;
        self.in_flight = Some((
            u.file_pos + u.buf.len() as u64,
            u.buf.as_slice()[cut..].to_vec(),
        ));
        Some(u)
    }

    fn complete(&mut self, u: Unit) {
        self.stats.writes += 1;
        self.stats.bytes_written += u.buf.padded_len() as u64;
        self.durable_lsn = u.lsn_end;
        self.slots[u.slot].end_lsn = u.lsn_end;
        let cut = align_down(u.buf.len() as u64) as usize;
        self.written_partial.clear();
        self.written_partial
            .extend_from_slice(&u.buf.as_slice()[cut..]);
        if self
            .in_flight
            .as_ref()
            .is_some_and(|(end, _)| *end == u.file_pos + u.buf.len() as u64)
        {
            self.in_flight = None;
        }
        self.pool.put(u.buf);
        while self
            .waiters
            .front()
            .is_some_and(|(end, _)| *end <= self.durable_lsn)
        {
            if let Some((_, tx)) = self.waiters.pop_front() {
                let _ = tx.send(Ok(()));
            }
        }
    }

    fn poison(&mut self, e: io::Error) {
        tracing::error!(dir = %self.dir.display(), error = %e, "journal write failed: journal poisoned");
        let e = Arc::new(e);
        self.poisoned = Some(e.clone());
        self.queue.clear();
        self.in_flight = None;
        for (_, tx) in self.waiters.drain(..) {
            let _ = tx.send(Err(e.clone()));
        }
    }
}

impl<S: Storage> Journal<S> {
    /// Opens (creating if needed) the journal in `dir`. It must hold no record past its
    /// checkpoint: run [`recover`] first after a crash.
    pub async fn open(
        storage: S,
        dir: impl Into<PathBuf>,
        config: JournalConfig,
    ) -> Result<Journal<S>, JournalError> {
        config.validate()?;
        let dir = dir.into();
        storage
            .create_dir_all(&dir)
            .await
            .map_err(|e| JournalError::io(&dir, e))?;
        let state = replay::read(&storage, &dir).await?;
        if !state.records.is_empty() {
            return Err(JournalError::NotReplayed { path: dir });
        }
        let checkpoint_sequence = match &state.checkpoint {
            Some(c) => c.sequence,
            None => {
                prepare_checkpoint_files(&storage, &dir).await?;
                let c = format::Checkpoint {
                    sequence: 1,
                    replay_start: state.end_lsn,
                    durable: Vec::new(),
                };
                write_checkpoint(&storage, &dir, &c).await?;
                1
            }
        };
        let mut slots: Vec<Slot<S::File>> = (0..config.files)
            .map(|_| Slot {
                file: None,
                end_lsn: 0,
            })
            .collect();
        for (slot, file) in state.files {
            let path = slot_path(&dir, slot);
            let len = file.len().await.map_err(|e| JournalError::io(&path, e))?;
            match slots.get_mut(slot) {
                // Nothing in it is needed any more: reused as it is.
                Some(s) if len == config.file_bytes => s.file = Some(Rc::new(file)),
                // Made with another journal.files or journal.file.bytes: made again.
                _ => storage
                    .remove_file(&path)
                    .await
                    .map_err(|e| JournalError::io(&path, e))?,
            }
        }
        let first_slot = state
            .newest_slot
            .map_or(0, |s| (s + 1) % config.files as usize);
        let inner = Inner {
            storage: storage.clone(),
            dir,
            config,
            slots,
            generation: state.max_generation,
            slot: None,
            first_slot,
            start_lsn: state.end_lsn,
            next_lsn: state.end_lsn,
            durable_lsn: state.end_lsn,
            queue: VecDeque::new(),
            in_flight: None,
            written_partial: Vec::new(),
            waiters: VecDeque::new(),
            poisoned: None,
            replay_start: state.end_lsn,
            checkpoint_sequence,
            logs: Vec::new(),
            checkpointing: false,
            preparing: None,
            prepare_failed: false,
            closing: false,
            writer_running: true,
            pool: BufPool::default(),
            stats: JournalStats::default(),
        };
        let shared = Rc::new(Shared {
            inner: RefCell::new(inner),
            wake: Rc::new(Notify::new()),
            idle: Notify::new(),
            checkpointed: Notify::new(),
            prepared: Notify::new(),
        });
        let journal = Journal { shared };
        // Every file is made before the first record: zeroing one later would compete with
        // the durable writes (this costs time once, at the first start on a disk).
        let slots = journal.shared.inner.borrow().slots.len();
        for k in 0..slots {
            journal.prepare_slot((first_slot + k) % slots).await?;
        }
        storage.spawn(run(
            Rc::downgrade(&journal.shared),
            journal.shared.wake.clone(),
        ));
        Ok(journal)
    }

    /// The settings in force.
    pub fn config(&self) -> JournalConfig {
        self.shared.inner.borrow().config.clone()
    }

    /// Counters since open.
    pub fn stats(&self) -> JournalStats {
        self.shared.inner.borrow().stats
    }

    /// The journal's directory.
    pub fn dir(&self) -> PathBuf {
        self.shared.inner.borrow().dir.clone()
    }

    pub(crate) fn attach(&self, log: crate::log::LogRef<S>) {
        let mut i = self.shared.inner.borrow_mut();
        i.logs.retain(|l| l.strong_count() > 0);
        i.logs.push(log);
    }

    /// Queues a record; the ticket completes when it is durable.
    pub(crate) fn submit(
        &self,
        kind: RecordKind,
        partition: &str,
        base_offset: i64,
        payload: &[u8],
    ) -> Result<Ticket, SubmitError> {
        let r = self
            .shared
            .inner
            .borrow_mut()
            .submit(kind, partition, base_offset, payload);
        match r {
            Err(SubmitError::DiskFull) => {
                // Try the preparation again in the background; this record is refused now,
                // before anything of its append was written.
                let (storage, slot) = {
                    let i = self.shared.inner.borrow();
                    let next = i.slot.map_or(i.first_slot, |s| (s + 1) % i.slots.len());
                    (i.storage.clone(), next)
                };
                if self.shared.inner.borrow().preparing.is_none() {
                    let me = self.clone();
                    storage.spawn(async move {
                        let _ = me.prepare_slot(slot).await;
                    });
                }
                Err(SubmitError::DiskFull)
            }
            Err(e) => Err(e),
            Ok(t) => {
                self.shared.wake.notify_one();
                Ok(t)
            }
        }
    }

    /// True if a record of `payload_bytes` for `partition` fits in a journal file.
    pub(crate) fn fits(&self, partition: &str, payload_bytes: usize) -> bool {
        let len = format::record_len(partition, payload_bytes) as u64;
        len <= self.shared.inner.borrow().config.record_bytes()
    }

    /// Syncs every attached partition's unsynced segment writes and moves the replay start
    /// to the oldest record still needed. One runs at a time; a caller arriving while one
    /// runs waits for it and then runs its own.
    pub async fn checkpoint(&self) -> Result<(), JournalError> {
        loop {
            let done = self.shared.checkpointed.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if !self.shared.inner.borrow().checkpointing {
                break;
            }
            done.await;
        }
        let (logs, target, storage, dir, sequence) = {
            let mut i = self.shared.inner.borrow_mut();
            if let Some(e) = &i.poisoned {
                return Err(JournalError::Poisoned(e.clone()));
            }
            i.checkpointing = true;
            i.logs.retain(|l| l.strong_count() > 0);
            (
                i.logs.clone(),
                i.next_lsn,
                i.storage.clone(),
                i.dir.clone(),
                i.checkpoint_sequence + 1,
            )
        };
        let r = self
            .checkpoint_logs(logs, target, &storage, &dir, sequence)
            .await;
        let mut i = self.shared.inner.borrow_mut();
        i.checkpointing = false;
        match r {
            Ok(replay_start) => {
                i.replay_start = i.replay_start.max(replay_start);
                i.checkpoint_sequence = sequence;
                i.stats.checkpoints += 1;
            }
            // A full disk only delays recycling (the checkpoint files are prepared, so
            // this takes a checkpoint far larger than they are).
            Err(JournalError::Io { ref source, .. })
                if source.raw_os_error() == Some(libc::ENOSPC) => {}
            Err(JournalError::Io { ref source, .. }) => {
                i.poison(io::Error::new(source.kind(), source.to_string()));
            }
            Err(_) => {}
        }
        drop(i);
        self.shared.checkpointed.notify_waiters();
        r.map(|_| ())
    }

    async fn checkpoint_logs(
        &self,
        logs: Vec<crate::log::LogRef<S>>,
        target: u64,
        storage: &S,
        dir: &Path,
        sequence: u64,
    ) -> Result<u64, JournalError> {
        let mut replay_start = target;
        let mut durable = Vec::with_capacity(logs.len());
        // Every log's write-behind, one log after the other (the journal's own writes keep
        // their place in the device's queue), then one sync of the whole filesystem: one
        // journal commit and one device flush, however many partitions there are.
        let mut ready = Vec::with_capacity(logs.len());
        for l in logs {
            let Some(log) = l.upgrade() else { continue };
            ready.push(crate::log::checkpoint_mark(log).await);
        }
        let synced = match ready.iter().any(|m| m.dirty || m.snapshot) {
            true => storage.sync_filesystem(dir).await,
            false => Ok(()),
        };
        if let Err(e) = &synced {
            tracing::error!(dir = %dir.display(), error = %e, "checkpoint sync failed");
        }
        for m in ready {
            let c = crate::log::checkpoint_done(m, synced.is_ok());
            if let Some(lsn) = c.needed_lsn {
                replay_start = replay_start.min(lsn);
            }
            durable.push((c.name, c.durable_end));
        }
        synced.map_err(|e| JournalError::io(dir, e))?;
        durable.sort();
        let c = format::Checkpoint {
            sequence,
            replay_start,
            durable,
        };
        write_checkpoint(storage, dir, &c).await?;
        Ok(replay_start)
    }

    /// Waits for queued records, checkpoints (attached logs should be closed first, so that
    /// nothing needs replay at the next start) and stops the writer.
    pub async fn close(&self) -> Result<(), JournalError> {
        self.shared.inner.borrow_mut().closing = true;
        self.shared.wake.notify_one();
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            {
                let i = self.shared.inner.borrow();
                if (i.queue.is_empty() && i.in_flight.is_none()) || !i.writer_running {
                    break;
                }
            }
            self.shared.wake.notify_one();
            idle.await;
        }
        if let Some(e) = &self.shared.inner.borrow().poisoned {
            return Err(JournalError::Poisoned(e.clone()));
        }
        self.checkpoint().await
    }

    /// Creates and zeroes the file of `slot` if it does not exist yet.
    async fn prepare_slot(&self, slot: usize) -> Result<(), JournalError> {
        loop {
            let done = self.shared.prepared.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            {
                let mut i = self.shared.inner.borrow_mut();
                if i.slots[slot].file.is_some() {
                    return Ok(());
                }
                if i.preparing.is_none() {
                    i.preparing = Some(slot);
                    break;
                }
            }
            done.await;
        }
        let (storage, dir, bytes) = {
            let i = self.shared.inner.borrow();
            (i.storage.clone(), i.dir.clone(), i.config.file_bytes)
        };
        let path = slot_path(&dir, slot);
        let r = create_zeroed(&storage, &dir, &path, bytes).await;
        let mut i = self.shared.inner.borrow_mut();
        i.preparing = None;
        i.prepare_failed = r.is_err();
        let r = match r {
            Ok(f) => {
                i.slots[slot].file = Some(Rc::new(f));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "creating a journal file failed");
                Err(JournalError::io(&path, e))
            }
        };
        drop(i);
        self.shared.prepared.notify_waiters();
        r
    }
}

/// Path of a slot's file.
pub(crate) fn slot_path(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("{slot:08}.journal"))
}

/// Parses a slot file name.
pub(crate) fn parse_slot(name: &str) -> Option<usize> {
    let stem = name.strip_suffix(".journal")?;
    (stem.len() == 8 && stem.bytes().all(|c| c.is_ascii_digit())).then(|| stem.parse().ok())?
}

async fn create_zeroed<S: Storage>(
    storage: &S,
    dir: &Path,
    path: &Path,
    bytes: u64,
) -> io::Result<S::File> {
    let file = storage.open(path, FileMode::Direct).await?;
    file.set_len(0).await?;
    crate::log::write_zeros(&file, 0, bytes).await?;
    storage.sync_dir(dir).await?;
    Ok(file)
}

/// Writes both checkpoint files with zeros, their directory entries durable.
async fn prepare_checkpoint_files<S: Storage>(storage: &S, dir: &Path) -> Result<(), JournalError> {
    for name in CHECKPOINT_FILES {
        let path = dir.join(name);
        let io = |e| JournalError::io(&path, e);
        let f = storage.open(&path, FileMode::Buffered).await.map_err(io)?;
        f.write_bytes_at(vec![0u8; CHECKPOINT_FILE_BYTES], 0)
            .await
            .map_err(io)?;
        f.sync_data().await.map_err(io)?;
    }
    storage
        .sync_dir(dir)
        .await
        .map_err(|e| JournalError::io(dir, e))
}

/// Writes checkpoint `c` over the older of the two checkpoint files and syncs it.
async fn write_checkpoint<S: Storage>(
    storage: &S,
    dir: &Path,
    c: &format::Checkpoint,
) -> Result<(), JournalError> {
    let path = dir.join(CHECKPOINT_FILES[(c.sequence % 2) as usize]);
    let io = |e| JournalError::io(&path, e);
    let f = storage.open(&path, FileMode::Buffered).await.map_err(io)?;
    f.write_bytes_at(format::encode_checkpoint(c), 0)
        .await
        .map_err(io)?;
    f.sync_data().await.map_err(io)
}

/// The writer task: one durable write in flight; runs until the journal closes or every
/// handle to it is gone.
async fn run<S: Storage>(weak: Weak<Shared<S>>, wake: Rc<Notify>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let unit = shared.inner.borrow_mut().take_unit();
        match unit {
            Some(u) => {
                let journal = Journal { shared };
                journal.write_unit(u).await;
            }
            None => {
                let closing = shared.inner.borrow().closing;
                shared.idle.notify_waiters();
                if closing {
                    shared.inner.borrow_mut().writer_running = false;
                    return;
                }
                drop(shared);
                wake.notified().await;
            }
        }
    }
}

impl<S: Storage> Journal<S> {
    async fn write_unit(&self, u: Unit) {
        if u.new_file {
            if let Err(e) = self.make_room(u.slot).await {
                self.shared
                    .inner
                    .borrow_mut()
                    .poison(io::Error::other(e.to_string()));
                return;
            }
        }
        let file = self.shared.inner.borrow().slots[u.slot].file.clone();
        let Some(file) = file else {
            self.shared
                .inner
                .borrow_mut()
                .poison(io::Error::other("journal file missing after preparation"));
            return;
        };
        let Unit {
            slot,
            file_pos,
            buf,
            lsn_end,
            new_file,
        } = u;
        let (res, buf) = file.write_at(buf, file_pos, true).await;
        let mut i = self.shared.inner.borrow_mut();
        if i.poisoned.is_some() {
            return;
        }
        match res {
            Err(e) => i.poison(e),
            Ok(()) => i.complete(Unit {
                slot,
                file_pos,
                buf,
                lsn_end,
                new_file,
            }),
        }
        drop(i);
        if new_file {
            self.after_new_file(slot);
        }
    }

    /// Before a new use of `slot`: its file exists, and nothing in it is still needed.
    async fn make_room(&self, slot: usize) -> Result<(), JournalError> {
        self.prepare_slot(slot).await?;
        loop {
            let needed = {
                let mut i = self.shared.inner.borrow_mut();
                let still = i.slots[slot].end_lsn > i.replay_start;
                if !still {
                    i.slots[slot].end_lsn = 0;
                }
                still
            };
            if !needed {
                return Ok(());
            }
            let before = self.shared.inner.borrow().replay_start;
            self.checkpoint().await?;
            if self.shared.inner.borrow().replay_start == before {
                // The oldest record is still needed by a partition whose segment could not
                // be synced: waiting cannot help.
                let i = self.shared.inner.borrow();
                return Err(JournalError::Corrupt {
                    path: i.dir.clone(),
                    pos: before,
                    reason: "journal full: a partition's segment cannot be checkpointed".into(),
                });
            }
        }
    }

    /// A new file was started: checkpoint in the background (so that the next file is free
    /// by the time it is needed) and create the next file if it does not exist yet.
    fn after_new_file(&self, slot: usize) {
        let storage = self.shared.inner.borrow().storage.clone();
        let next = (slot + 1) % self.shared.inner.borrow().slots.len();
        let me = self.clone();
        storage.spawn(async move {
            if let Err(e) = me.prepare_slot(next).await {
                tracing::warn!(error = %e, "preparing the next journal file failed");
            }
            if let Err(e) = me.checkpoint().await {
                tracing::warn!(error = %e, "journal checkpoint failed");
            }
        });
    }
}
