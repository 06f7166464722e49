//! [`FileQuorumLog`]: the controller's Raft state (hard state, latest snapshot, entries after
//! it) kept durable in one append-only file, `raft.log`, in a directory of its own (the
//! broker uses `<log.dirs>/__cluster/`). Layout in `replication/FORMAT.md`. Every file
//! operation goes through the engine's [`Storage`] (io_uring in the broker, buffered writes
//! and fdatasync), like the partition logs and the journal.
//!
//! Each [`PersistOp`] becomes one record (a long `Append` may become several); recovery
//! replays the records through [`LogState::apply`], the same function the in-memory log and
//! Raft's own store use, so the file can only describe a state that Raft could have built.
//!
//! # Durability contract
//! [`QuorumLog::write`] hands a batch to the page cache; [`QuorumLog::sync`] returns `Ok` only
//! when every byte written before it is on disk (fdatasync). What was written but not synced
//! may survive a crash in any part (the kernel writes pages back in any order), but it never
//! makes the file unreadable: recovery keeps the longest intact prefix of records.
//!
//! # Torn tails versus corruption
//! Every record header carries the file length that was durable when the record was written.
//! A damaged record followed by no intact record, or only by intact records written while it
//! was not yet durable, is a torn write: it and everything after it is truncated away with a
//! warning. A damaged record that a later intact record vouches for (its durable length goes
//! past the damage) was synced, so it may hold committed entries or a vote: recovery refuses
//! the file with [`RaftLogError::Corrupt`] naming the offset, and never skips it. The limit:
//! damage to records synced but never followed by another write looks like a torn write.
//!
//! # Bounded growth
//! Overwritten tails, superseded hard states and compacted entries stay in the file until a
//! rewrite: after a sync that leaves the file at least [`RaftLogOptions::rewrite_bytes_min`]
//! long and twice the size of the last rewritten image, the state is written to
//! `raft.log.tmp` (snapshot, hard state, entries), synced, renamed over `raft.log`, and the
//! directory synced. A crash at any point leaves either the old or the new file complete;
//! `open` removes a leftover temporary file. The doubling keeps the rewrite cost amortized.
//!
//! # Failures
//! A failed write, sync or rewrite poisons the log: every later call returns
//! [`RaftLogError::Poisoned`] with the first error, until the directory is opened again and
//! recovered (an fsync failure may have dropped pages that a retry would not rewrite).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, Snapshot};
use tern_engine::storage::{FileMode, Storage, StorageFile};

use crate::quorum::{LogState, PersistBatch, PersistOp, QuorumLog};

/// The log file's name in its directory.
pub const LOG_FILE_NAME: &str = "raft.log";
/// The name a rewritten file is built under before it is renamed over the log.
pub const TEMP_FILE_NAME: &str = "raft.log.tmp";
/// Magic of the log file.
pub const FILE_MAGIC: [u8; 4] = *b"TRLG";
/// Version of the file layout written by this code.
pub const FILE_VERSION: u16 = 1;
/// Bytes of the file header: magic, version, reserved, CRC.
pub const FILE_HEADER_BYTES: usize = 12;
/// Bytes before a record's body.
pub const RECORD_HEADER_BYTES: usize = 21;
/// Largest record body written or accepted (a snapshot's image is at most 64 MiB).
pub const RECORD_BODY_BYTES_MAX: usize = 128 << 20;
/// Default of [`RaftLogOptions::rewrite_bytes_min`].
pub const REWRITE_BYTES_MIN_DEFAULT: u64 = 64 << 20;

const KIND_APPEND: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_INSTALL_SNAPSHOT: u8 = 3;
const KIND_COMPACT: u8 = 4;

/// Why the Raft log could not be opened, read or written. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a Tern Raft log of version {}: {reason}", path.display(), FILE_VERSION)]
    BadFileHeader { path: PathBuf, reason: String },
    #[error(
        "{}: damaged record at byte {offset} ({reason}), but the intact record at byte {next} \
         was written after it was durable; refusing to drop synced Raft state",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        next: u64,
        reason: String,
    },
    #[error("{}: the intact record at byte {offset} cannot be used: {reason}", path.display())]
    BadRecord {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{}: cannot encode batch {batch}: {reason}", path.display())]
    Encode {
        path: PathBuf,
        batch: u64,
        reason: String,
    },
    #[error("{}: batch {batch} does not fit the log: {reason}", path.display())]
    BadBatch {
        path: PathBuf,
        batch: u64,
        reason: String,
    },
    #[error(
        "{}: the Raft log failed earlier and takes no more calls until reopened: {first}",
        path.display()
    )]
    Poisoned { path: PathBuf, first: String },
}

/// Tuning of a [`FileQuorumLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftLogOptions {
    /// No rewrite while the file is shorter than this.
    pub rewrite_bytes_min: u64,
}

impl Default for RaftLogOptions {
    fn default() -> Self {
        RaftLogOptions {
            rewrite_bytes_min: REWRITE_BYTES_MIN_DEFAULT,
        }
    }
}

/// The durable [`QuorumLog`]; see the module doc. One process at a time may open a directory
/// (nothing locks it).
/// How often a write that met a full disk is tried again.
const FULL_RETRY_MS: u64 = 100;
/// Linux's "no space left on device" (errno 28 on every architecture Tern runs on).
const ENOSPC: i32 = 28;

pub struct FileQuorumLog<S: Storage> {
    storage: S,
    dir: PathBuf,
    path: PathBuf,
    /// Appended to at `written_bytes`.
    file: S::File,
    options: RaftLogOptions,
    /// The state after every written op (durable after the next sync).
    state: LogState,
    written_bytes: u64,
    /// Every byte before this is on disk.
    durable_bytes: u64,
    /// Size of the image at the last rewrite or open: the base of the next rewrite's trigger.
    image_bytes: u64,
    rewrites: u64,
    poisoned: Option<String>,
}

impl<S: Storage> fmt::Debug for FileQuorumLog<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileQuorumLog")
            .field("path", &self.path)
            .field("written_bytes", &self.written_bytes)
            .field("durable_bytes", &self.durable_bytes)
            .field("snapshot_index", &self.state.snapshot_index())
            .field("last_index", &self.state.last_index())
            .field("rewrites", &self.rewrites)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> FileQuorumLog<S> {
    /// Opens (creating the directory and an empty log if missing) and recovers with the
    /// default options. Returns once the recovered state is durable (a torn tail truncated
    /// and synced, a new file and its directory entry synced).
    pub async fn open(storage: S, dir: &Path) -> Result<Self, RaftLogError> {
        Self::open_with(storage, dir, RaftLogOptions::default()).await
    }

    /// [`FileQuorumLog::open`] with explicit options.
    pub async fn open_with(
        storage: S,
        dir: &Path,
        options: RaftLogOptions,
    ) -> Result<Self, RaftLogError> {
        ensure_dir(&storage, dir).await?;
        let path = dir.join(LOG_FILE_NAME);
        let temp = dir.join(TEMP_FILE_NAME);
        let names = storage.list_dir(dir).await.map_err(io_err("list", dir))?;
        if names.iter().any(|n| n == TEMP_FILE_NAME) {
            // A rewrite that did not reach its rename: the log itself is complete.
            tracing::warn!(path = %temp.display(), "removing an unfinished Raft log rewrite");
            storage
                .remove_file(&temp)
                .await
                .map_err(io_err("remove", &temp))?;
            sync_dir(&storage, dir).await?;
        }
        let mut log = if names.iter().any(|n| n == LOG_FILE_NAME) {
            Self::recover_file(storage, dir, path, options).await?
        } else {
            let (file, bytes) = write_image(&storage, dir, &LogState::default()).await?;
            FileQuorumLog {
                storage,
                dir: dir.to_path_buf(),
                path,
                file,
                options,
                state: LogState::default(),
                written_bytes: bytes,
                durable_bytes: bytes,
                image_bytes: 0,
                rewrites: 0,
                poisoned: None,
            }
        };
        log.image_bytes = image_bytes_estimate(&log.state);
        Ok(log)
    }

    async fn recover_file(
        storage: S,
        dir: &Path,
        path: PathBuf,
        options: RaftLogOptions,
    ) -> Result<Self, RaftLogError> {
        let file = storage
            .open(&path, FileMode::Buffered)
            .await
            .map_err(io_err("open", &path))?;
        let bytes = read_all(&file, &path).await?;
        let replayed = replay(&path, &bytes)?;
        if let Some(reason) = &replayed.torn {
            tracing::warn!(
                path = %path.display(),
                offset = replayed.valid_bytes,
                dropped_bytes = bytes.len() as u64 - replayed.valid_bytes,
                reason = %reason,
                "truncating the torn tail of the Raft log"
            );
            file.set_len(replayed.valid_bytes)
                .await
                .map_err(io_err("truncate", &path))?;
            file.sync_data().await.map_err(io_err("sync", &path))?;
        }
        Ok(FileQuorumLog {
            storage,
            dir: dir.to_path_buf(),
            path,
            file,
            options,
            state: replayed.state,
            written_bytes: replayed.valid_bytes,
            durable_bytes: replayed.valid_bytes,
            image_bytes: 0,
            rewrites: 0,
            poisoned: None,
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the log file, written or durable.
    pub fn file_bytes(&self) -> u64 {
        self.written_bytes
    }

    /// Rewrites done since open.
    pub fn rewrites(&self) -> u64 {
        self.rewrites
    }

    /// Syncs, then rewrites the file to the current state at once.
    pub async fn rewrite(&mut self) -> Result<(), RaftLogError> {
        QuorumLog::sync(self).await?;
        let result = self.rewrite_now().await;
        self.poison_on_err(result)
    }

    fn check_poisoned(&self) -> Result<(), RaftLogError> {
        match &self.poisoned {
            Some(first) => Err(RaftLogError::Poisoned {
                path: self.path.clone(),
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison_on_err<T>(&mut self, result: Result<T, RaftLogError>) -> Result<T, RaftLogError> {
        if let Err(e) = &result {
            self.poisoned.get_or_insert_with(|| e.to_string());
        }
        result
    }

    async fn write_batch(&mut self, batch: &PersistBatch) -> Result<(), RaftLogError> {
        // Handed to the storage by value: the kernel may read it after this task yields.
        let mut data = Vec::new();
        for op in &batch.ops {
            encode_op(&mut data, op, self.durable_bytes).map_err(|reason| {
                RaftLogError::Encode {
                    path: self.path.clone(),
                    batch: batch.id,
                    reason,
                }
            })?;
        }
        // Nothing is on disk yet, but a refused op poisons the log all the same (in `write`):
        // the ops before it have changed the in-memory state.
        for op in &batch.ops {
            self.state.apply(op).map_err(|e| RaftLogError::BadBatch {
                path: self.path.clone(),
                batch: batch.id,
                reason: e.to_string(),
            })?;
        }
        let len = data.len() as u64;
        let mut warned = false;
        loop {
            // Written again whole at the same place: a retry is idempotent.
            let written = self
                .file
                .write_bytes_at(data.clone(), self.written_bytes)
                .await;
            match written {
                Err(e) if e.raw_os_error() == Some(ENOSPC) => {
                    // A full disk is waited out: this voter neither acknowledges nor votes
                    // meanwhile (nothing new is durable), the others go on without it.
                    if !warned {
                        tracing::warn!(path = %self.path.display(),
                            "disk full: the Raft log waits for space");
                        warned = true;
                    }
                    self.storage.sleep_ms(FULL_RETRY_MS).await;
                }
                other => {
                    other.map_err(io_err("write", &self.path))?;
                    break;
                }
            }
        }
        if warned {
            tracing::info!(path = %self.path.display(), "disk space back: the Raft log goes on");
        }
        self.written_bytes += len;
        Ok(())
    }

    async fn sync_file(&mut self) -> Result<(), RaftLogError> {
        if self.durable_bytes == self.written_bytes {
            return Ok(());
        }
        self.file
            .sync_data()
            .await
            .map_err(io_err("sync", &self.path))?;
        self.durable_bytes = self.written_bytes;
        let trigger = self
            .options
            .rewrite_bytes_min
            .max(self.image_bytes.saturating_mul(2));
        if self.written_bytes >= trigger {
            match self.rewrite_now().await {
                // The rewrite only saves space: on a full disk the synced file stays.
                Err(RaftLogError::Io { source, .. }) if source.raw_os_error() == Some(ENOSPC) => {
                    tracing::warn!(path = %self.path.display(),
                        "disk full: the Raft log is not rewritten this time");
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Replaces the file by the image of the state; the caller has synced.
    async fn rewrite_now(&mut self) -> Result<(), RaftLogError> {
        debug_assert_eq!(self.durable_bytes, self.written_bytes);
        let (file, bytes) = write_image(&self.storage, &self.dir, &self.state).await?;
        tracing::info!(
            path = %self.path.display(),
            before_bytes = self.written_bytes,
            after_bytes = bytes,
            "rewrote the Raft log"
        );
        self.file = file;
        self.written_bytes = bytes;
        self.durable_bytes = bytes;
        self.image_bytes = bytes;
        self.rewrites += 1;
        Ok(())
    }
}

impl<S: Storage> QuorumLog for FileQuorumLog<S> {
    type Error = RaftLogError;

    async fn write(&mut self, batch: &PersistBatch) -> Result<(), RaftLogError> {
        self.check_poisoned()?;
        let result = self.write_batch(batch).await;
        self.poison_on_err(result)
    }

    async fn sync(&mut self) -> Result<(), RaftLogError> {
        self.check_poisoned()?;
        let result = self.sync_file().await;
        self.poison_on_err(result)
    }

    /// The synced state. With writes pending a sync, the synced prefix of the file is read
    /// and replayed (the driver recovers once, before writing).
    async fn recover(&self) -> Result<LogState, RaftLogError> {
        self.check_poisoned()?;
        if self.durable_bytes == self.written_bytes {
            return Ok(self.state.clone());
        }
        let bytes = read_all(&self.file, &self.path).await?;
        let durable = usize::try_from(self.durable_bytes)
            .ok()
            .and_then(|n| bytes.get(..n))
            .ok_or_else(|| RaftLogError::BadRecord {
                path: self.path.clone(),
                offset: bytes.len() as u64,
                reason: format!(
                    "the file ends before its {} synced bytes",
                    self.durable_bytes
                ),
            })?;
        Ok(replay(&self.path, durable)?.state)
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RaftLogError + 'a {
    move |source| RaftLogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The whole file.
async fn read_all<F: StorageFile>(file: &F, path: &Path) -> Result<Vec<u8>, RaftLogError> {
    let len = file.len().await.map_err(io_err("size", path))?;
    let len = usize::try_from(len).map_err(|_| RaftLogError::BadRecord {
        path: path.to_path_buf(),
        offset: 0,
        reason: format!("a file of {len} bytes does not fit in memory"),
    })?;
    let bytes = file.read_at(0, len).await.map_err(io_err("read", path))?;
    Ok(bytes.to_vec())
}

async fn sync_dir<S: Storage>(storage: &S, dir: &Path) -> Result<(), RaftLogError> {
    storage
        .sync_dir(dir)
        .await
        .map_err(io_err("sync directory", dir))
}

/// Creates the directory if missing, its entry durable in the parent.
async fn ensure_dir<S: Storage>(storage: &S, dir: &Path) -> Result<(), RaftLogError> {
    storage
        .create_dir_all(dir)
        .await
        .map_err(io_err("create directory", dir))?;
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(storage, p).await,
        _ => sync_dir(storage, Path::new(".")).await,
    }
}

/// Writes the image of `state` under the temporary name, syncs it, renames it over the log
/// and syncs the directory. Returns the new log, and its size.
async fn write_image<S: Storage>(
    storage: &S,
    dir: &Path,
    state: &LogState,
) -> Result<(S::File, u64), RaftLogError> {
    let temp = dir.join(TEMP_FILE_NAME);
    let path = dir.join(LOG_FILE_NAME);
    let mut out = file_header();
    let ops = [
        PersistOp::InstallSnapshot(state.snapshot.clone()),
        PersistOp::HardState(state.hard_state.clone()),
        PersistOp::Append(state.entries.clone()),
    ];
    for op in &ops {
        // Every byte of the image is durable before the file can be read under its name, so
        // each record vouches for all the records before it.
        let mark = out.len() as u64;
        encode_op(&mut out, op, mark).map_err(|reason| RaftLogError::BadRecord {
            path: temp.clone(),
            offset: mark,
            reason,
        })?;
    }
    let len = out.len() as u64;
    let file = storage
        .open(&temp, FileMode::Buffered)
        .await
        .map_err(io_err("create", &temp))?;
    file.set_len(0).await.map_err(io_err("truncate", &temp))?;
    file.write_bytes_at(out, 0)
        .await
        .map_err(io_err("write", &temp))?;
    file.sync_data().await.map_err(io_err("sync", &temp))?;
    storage
        .rename(&temp, &path)
        .await
        .map_err(io_err("rename", &temp))?;
    sync_dir(storage, dir).await?;
    Ok((file, len))
}

/// The size of the image of `state`, near enough to pace rewrites.
fn image_bytes_estimate(state: &LogState) -> u64 {
    let entries: u64 = state
        .entries
        .iter()
        .map(|e| 4 + u64::from(e.compute_size()))
        .sum();
    (FILE_HEADER_BYTES + 3 * RECORD_HEADER_BYTES + 4) as u64
        + u64::from(state.snapshot.compute_size())
        + u64::from(state.hard_state.compute_size())
        + entries
}

fn file_header() -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_HEADER_BYTES);
    out.extend_from_slice(&FILE_MAGIC);
    out.extend_from_slice(&FILE_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), FILE_HEADER_BYTES);
    out
}

fn check_file_header(path: &Path, bytes: &[u8]) -> Result<(), RaftLogError> {
    let bad = |reason: String| RaftLogError::BadFileHeader {
        path: path.to_path_buf(),
        reason,
    };
    // The log appears under its name only once its header is durable, so a short header is
    // not a torn write.
    if bytes.len() < FILE_HEADER_BYTES {
        return Err(bad(format!(
            "{} bytes is shorter than the {FILE_HEADER_BYTES}-byte header",
            bytes.len()
        )));
    }
    if bytes[..4] != FILE_MAGIC {
        return Err(bad(format!("bad magic {:02x?}", &bytes[..4])));
    }
    let stored = le_u32(bytes, 8);
    let computed = crc32c::crc32c(&bytes[..8]);
    if stored != computed {
        return Err(bad(format!(
            "header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FILE_VERSION {
        return Err(bad(format!("unsupported version {version}")));
    }
    Ok(())
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Appends the record(s) of one op to `out`; `durable_bytes` is the file length known
/// durable whenever these records can be read.
fn encode_op(out: &mut Vec<u8>, op: &PersistOp, durable_bytes: u64) -> Result<(), String> {
    match op {
        PersistOp::Append(entries) => encode_append(out, entries, durable_bytes),
        PersistOp::HardState(hs) => encode_message(out, KIND_HARD_STATE, hs, durable_bytes),
        PersistOp::InstallSnapshot(s) => {
            encode_message(out, KIND_INSTALL_SNAPSHOT, s, durable_bytes)
        }
        PersistOp::Compact(s) => encode_message(out, KIND_COMPACT, s, durable_bytes),
    }
}

fn encode_message(
    out: &mut Vec<u8>,
    kind: u8,
    m: &dyn protobuf::Message,
    durable_bytes: u64,
) -> Result<(), String> {
    let at = begin_record(out);
    m.write_to_vec(out).map_err(|e| e.to_string())?;
    end_record(out, at, kind, durable_bytes)
}

/// An `Append` as one record, or several when its entries exceed one body: appending the
/// parts in order is the same op.
fn encode_append(out: &mut Vec<u8>, entries: &[Entry], durable_bytes: u64) -> Result<(), String> {
    let mut rest = entries;
    loop {
        let mut body_bytes = 4usize;
        let mut take = 0;
        for e in rest {
            let n = 4 + e.compute_size() as usize;
            if take > 0 && body_bytes + n > RECORD_BODY_BYTES_MAX {
                break;
            }
            body_bytes += n;
            take += 1;
        }
        let (part, tail) = rest.split_at(take);
        let at = begin_record(out);
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        for e in part {
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            e.write_to_vec(out).map_err(|e| e.to_string())?;
            let n = (out.len() - len_at - 4) as u32;
            out[len_at..len_at + 4].copy_from_slice(&n.to_le_bytes());
        }
        end_record(out, at, KIND_APPEND, durable_bytes)?;
        rest = tail;
        if rest.is_empty() {
            return Ok(());
        }
    }
}

fn begin_record(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    at
}

/// Fills in the header of the record whose header starts at `at` and whose body runs to the
/// end of `out`.
fn end_record(out: &mut [u8], at: usize, kind: u8, durable_bytes: u64) -> Result<(), String> {
    let body = &out[at + RECORD_HEADER_BYTES..];
    if body.len() > RECORD_BODY_BYTES_MAX {
        return Err(format!(
            "a record body of {} bytes exceeds the bound of {RECORD_BODY_BYTES_MAX}",
            body.len()
        ));
    }
    let body_crc = crc32c::crc32c(body);
    let len = body.len() as u32;
    let h = &mut out[at..at + RECORD_HEADER_BYTES];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4] = kind;
    h[5..13].copy_from_slice(&durable_bytes.to_le_bytes());
    h[13..17].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&h[..17]);
    h[17..21].copy_from_slice(&header_crc.to_le_bytes());
    debug_assert!(read_record(out, at).is_ok());
    Ok(())
}

/// An intact record: both CRCs match.
#[derive(Debug)]
struct Record<'a> {
    kind: u8,
    durable_bytes: u64,
    body: &'a [u8],
    /// Offset just after the record.
    next: usize,
}

/// The record at `at`, or why none is intact there.
fn read_record(bytes: &[u8], at: usize) -> Result<Record<'_>, String> {
    let rest = bytes.get(at..).unwrap_or(&[]);
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(format!(
            "{} bytes left, short of a record header",
            rest.len()
        ));
    }
    let stored = le_u32(rest, 17);
    let computed = crc32c::crc32c(&rest[..17]);
    if stored != computed {
        return Err(format!(
            "header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let len = le_u32(rest, 0) as usize;
    if len > RECORD_BODY_BYTES_MAX {
        return Err(format!(
            "body length {len} exceeds the bound of {RECORD_BODY_BYTES_MAX}"
        ));
    }
    let Some(body) = rest.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len) else {
        return Err(format!(
            "body of {len} bytes but {} left",
            rest.len() - RECORD_HEADER_BYTES
        ));
    };
    let stored = le_u32(rest, 13);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(format!(
            "body CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    Ok(Record {
        kind: rest[4],
        durable_bytes: le_u64(rest, 5),
        body,
        next: at + RECORD_HEADER_BYTES + len,
    })
}

fn decode_op(kind: u8, body: &[u8]) -> Result<PersistOp, String> {
    let parse_err = |e: protobuf::ProtobufError| e.to_string();
    match kind {
        KIND_APPEND => decode_append(body).map(PersistOp::Append),
        KIND_HARD_STATE => HardState::parse_from_bytes(body)
            .map(PersistOp::HardState)
            .map_err(parse_err),
        KIND_INSTALL_SNAPSHOT => Snapshot::parse_from_bytes(body)
            .map(PersistOp::InstallSnapshot)
            .map_err(parse_err),
        KIND_COMPACT => Snapshot::parse_from_bytes(body)
            .map(PersistOp::Compact)
            .map_err(parse_err),
        kind => Err(format!("unknown record kind {kind}")),
    }
}

fn decode_append(body: &[u8]) -> Result<Vec<Entry>, String> {
    if body.len() < 4 {
        return Err("an append body shorter than its entry count".into());
    }
    let count = le_u32(body, 0) as usize;
    // Each entry takes at least its 4-byte length: bounds the allocation by the body.
    if count > (body.len() - 4) / 4 {
        return Err(format!("{count} entries cannot fit {} bytes", body.len()));
    }
    let mut entries = Vec::with_capacity(count);
    let mut at = 4;
    for i in 0..count {
        let len = body
            .get(at..at + 4)
            .map(|_| le_u32(body, at) as usize)
            .ok_or_else(|| format!("entry {i} of {count}: body ends in its length"))?;
        let bytes = body
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| format!("entry {i} of {count}: {len} bytes past the body's end"))?;
        let entry = Entry::parse_from_bytes(bytes).map_err(|e| format!("entry {i}: {e}"))?;
        if let Some(prev) = entries.last().map(|p: &Entry| p.index) {
            if entry.index != prev + 1 {
                return Err(format!("entry {} after entry {prev}", entry.index));
            }
        }
        entries.push(entry);
        at += 4 + len;
    }
    if at != body.len() {
        return Err(format!("{} bytes after the last entry", body.len() - at));
    }
    Ok(entries)
}

/// What a file's bytes recover to.
#[derive(Debug)]
struct Replayed {
    state: LogState,
    /// Bytes of the file up to the end of the last intact record.
    valid_bytes: u64,
    /// Why the record at `valid_bytes` is not intact (a torn tail to truncate).
    torn: Option<String>,
}

/// Replays a log file's bytes; see the module doc for torn tails versus corruption.
fn replay(path: &Path, bytes: &[u8]) -> Result<Replayed, RaftLogError> {
    check_file_header(path, bytes)?;
    let mut state = LogState::default();
    let mut at = FILE_HEADER_BYTES;
    while at < bytes.len() {
        let record = match read_record(bytes, at) {
            Ok(r) => r,
            Err(reason) => {
                if let Some(next) = vouching_record(bytes, at) {
                    return Err(RaftLogError::Corrupt {
                        path: path.to_path_buf(),
                        offset: at as u64,
                        next: next as u64,
                        reason,
                    });
                }
                return Ok(Replayed {
                    state,
                    valid_bytes: at as u64,
                    torn: Some(reason),
                });
            }
        };
        let bad = |reason: String| RaftLogError::BadRecord {
            path: path.to_path_buf(),
            offset: at as u64,
            reason,
        };
        let op = decode_op(record.kind, record.body).map_err(bad)?;
        state.apply(&op).map_err(|e| bad(e.to_string()))?;
        at = record.next;
    }
    Ok(Replayed {
        state,
        valid_bytes: at as u64,
        torn: None,
    })
}

/// The offset of the first intact record after the damaged one at `bad` that was written
/// when the damaged one was already durable.
fn vouching_record(bytes: &[u8], bad: usize) -> Option<usize> {
    let mut at = bad + 1;
    while at + RECORD_HEADER_BYTES <= bytes.len() {
        match read_record(bytes, at) {
            Ok(r) if r.durable_bytes > bad as u64 => return Some(at),
            Ok(r) => at = r.next,
            Err(_) => at += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::MemQuorumLog;
    use proptest::prelude::*;
    use raft::eraftpb::{ConfState, SnapshotMetadata};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::fs;
    use tern_engine::{DirectIo, UringStorage};

    /// Builds batches that fit the log they are applied to: appends that extend or overwrite
    /// the tail, hard states, compactions and snapshot installs.
    struct Gen {
        rng: StdRng,
        model: LogState,
        next_id: u64,
    }

    impl Gen {
        fn new(seed: u64) -> Self {
            Gen {
                rng: StdRng::seed_from_u64(seed),
                model: LogState::default(),
                next_id: 1,
            }
        }

        fn bytes(&mut self) -> Vec<u8> {
            let len = if self.rng.gen_ratio(1, 20) {
                self.rng.gen_range(1000..5000)
            } else {
                self.rng.gen_range(0..64)
            };
            (0..len).map(|_| self.rng.gen()).collect()
        }

        fn snapshot(&mut self, index: u64) -> Snapshot {
            let mut meta = SnapshotMetadata {
                index,
                term: self.rng.gen_range(1..9),
                ..Default::default()
            };
            meta.set_conf_state(ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            });
            let mut s = Snapshot {
                data: self.bytes().into(),
                ..Default::default()
            };
            s.set_metadata(meta);
            s
        }

        fn op(&mut self) -> PersistOp {
            let snap = self.model.snapshot_index();
            let last = self.model.last_index();
            match self.rng.gen_range(0..100) {
                0..=24 => PersistOp::HardState(HardState {
                    term: self.rng.gen_range(0..9),
                    vote: self.rng.gen_range(0..4),
                    commit: self.rng.gen_range(0..=last),
                    ..Default::default()
                }),
                25..=37 if last > snap => {
                    let index = self.rng.gen_range(snap + 1..=last);
                    PersistOp::Compact(self.snapshot(index))
                }
                38..=42 => {
                    let index = last + self.rng.gen_range(0..4);
                    PersistOp::InstallSnapshot(self.snapshot(index))
                }
                _ => {
                    let first = if self.rng.gen_ratio(7, 10) {
                        last + 1
                    } else {
                        self.rng.gen_range(snap + 1..=last + 1)
                    };
                    let n = self.rng.gen_range(1..=4);
                    let term = self.rng.gen_range(1..9);
                    let entries = (first..first + n)
                        .map(|index| Entry {
                            index,
                            term,
                            data: self.bytes().into(),
                            ..Default::default()
                        })
                        .collect();
                    PersistOp::Append(entries)
                }
            }
        }

        fn batch(&mut self) -> PersistBatch {
            let n = self.rng.gen_range(1..=3);
            let ops = (0..n)
                .map(|_| {
                    let op = self.op();
                    self.model.apply(&op).unwrap();
                    op
                })
                .collect();
            let id = self.next_id;
            self.next_id += 1;
            PersistBatch { id, ops }
        }
    }

    type Log = FileQuorumLog<UringStorage>;

    fn storage() -> UringStorage {
        UringStorage::new(DirectIo::Off)
    }

    /// Runs `f` on an io_uring runtime of its own.
    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tern_engine::storage::uring::new_runtime()
            .unwrap()
            .block_on(f)
    }

    fn small_rewrites() -> RaftLogOptions {
        RaftLogOptions {
            rewrite_bytes_min: 0,
        }
    }

    /// Writes `batches` batches, syncing after each, into `log` and `mem`.
    async fn feed(gen: &mut Gen, log: &mut Log, mem: &mut MemQuorumLog, batches: usize) {
        for _ in 0..batches {
            let b = gen.batch();
            log.write(&b).await.unwrap();
            mem.write(&b).unwrap();
            if gen.rng.gen_ratio(3, 4) {
                log.sync().await.unwrap();
                mem.sync().unwrap();
            }
        }
        log.sync().await.unwrap();
        mem.sync().unwrap();
    }

    fn file_len(log: &Log) -> usize {
        fs::metadata(log.path()).unwrap().len() as usize
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Synced batches come back after a reopen exactly as the in-memory log keeps them,
        /// across rewrites.
        #[test]
        fn reopen_recovers_what_the_mem_log_holds(seed in any::<u64>(), rewrite in any::<bool>()) {
            run(async {
            let dir = tempfile::tempdir().unwrap();
            let options = if rewrite { small_rewrites() } else { RaftLogOptions::default() };
            let mut log = FileQuorumLog::open_with(storage(), dir.path(), options).await.unwrap();
            let mut mem = MemQuorumLog::default();
            let mut gen = Gen::new(seed);
            let mut rewrites = 0;
            for _ in 0..3 {
                feed(&mut gen, &mut log, &mut mem, 40).await;
                let expected = mem.recover().unwrap();
                prop_assert_eq!(&log.recover().await.unwrap(), &expected);
                rewrites += log.rewrites();
                drop(log);
                log = FileQuorumLog::open_with(storage(), dir.path(), options).await.unwrap();
                prop_assert_eq!(&log.recover().await.unwrap(), &expected);
            }
            prop_assert_eq!(rewrites > 0, rewrite);
            Ok(())
            })?;
        }

        /// Decoding arbitrary bytes after a valid header never panics.
        #[test]
        fn replay_of_garbage_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut bytes = file_header();
            bytes.extend_from_slice(&tail);
            let _ = replay(Path::new("garbage"), &bytes);
        }
    }

    /// A new, even nested, directory recovers the empty state, and so does its reopen.
    #[test]
    fn new_directory_recovers_default() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let nested = dir.path().join("a/__cluster");
            let log = FileQuorumLog::open(storage(), &nested).await.unwrap();
            assert_eq!(log.recover().await.unwrap(), LogState::default());
            assert!(nested.join(LOG_FILE_NAME).is_file());
            drop(log);
            let log = FileQuorumLog::open(storage(), &nested).await.unwrap();
            assert_eq!(log.recover().await.unwrap(), LogState::default());
        })
    }

    /// A file that is not a Raft log is refused with its path and the reason, untouched.
    #[test]
    fn wrong_magic_is_refused() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(LOG_FILE_NAME);
            fs::write(&path, b"NOPE and some more bytes").unwrap();
            let err = FileQuorumLog::open(storage(), dir.path())
                .await
                .unwrap_err();
            assert!(matches!(err, RaftLogError::BadFileHeader { .. }), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("bad magic") && msg.contains(LOG_FILE_NAME),
                "{msg}"
            );
            assert_eq!(fs::read(&path).unwrap(), b"NOPE and some more bytes");

            fs::write(&path, &file_header()[..5]).unwrap();
            let err = FileQuorumLog::open(storage(), dir.path())
                .await
                .unwrap_err();
            assert!(err.to_string().contains("shorter than"), "{err}");
        })
    }

    /// Guards a full disk: a write waits (neither fails nor completes) until space returns,
    /// then completes, and a reopen recovers it; before, the process stopped.
    #[test]
    fn a_full_disk_holds_a_write_until_space_returns() {
        use tern_engine::storage::memory::MemStorage;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async {
            let storage = MemStorage::new(0);
            let dir = Path::new("/raft");
            let mut log = FileQuorumLog::open(storage.clone(), dir).await.unwrap();
            let mut mem = MemQuorumLog::default();
            let mut gen = Gen::new(3);
            let first = gen.batch();
            log.write(&first).await.unwrap();
            log.sync().await.unwrap();
            mem.write(&first).unwrap();
            let held = gen.batch();
            mem.write(&held).unwrap();
            mem.sync().unwrap();
            storage.set_disk_full(true);
            let h = tokio::task::spawn_local(async move {
                let r = log.write(&held).await;
                r.map(|()| log)
            });
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            assert!(!h.is_finished(), "held while the disk is full");
            storage.set_disk_full(false);
            let mut log = h.await.unwrap().unwrap();
            log.sync().await.unwrap();
            drop(log);
            let log = FileQuorumLog::open(storage.clone(), dir).await.unwrap();
            assert_eq!(log.recover().await.unwrap(), mem.recover().unwrap());
        });
    }

    /// Cut anywhere inside the last record, the file recovers the state before it, is
    /// truncated back, and takes new writes.
    #[test]
    fn torn_last_record_recovers_previous_state() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = FileQuorumLog::open(storage(), dir.path()).await.unwrap();
            let mut mem = MemQuorumLog::default();
            let mut gen = Gen::new(7);
            feed(&mut gen, &mut log, &mut mem, 20).await;
            let before = mem.recover().unwrap();
            let before_len = file_len(&log);
            let last = gen.model.last_index();
            let batch = PersistBatch {
                id: 1000,
                ops: vec![PersistOp::Append(
                    (last + 1..last + 4)
                        .map(|index| Entry {
                            index,
                            term: 9,
                            data: vec![index as u8; 30].into(),
                            ..Default::default()
                        })
                        .collect(),
                )],
            };
            log.write(&batch).await.unwrap();
            log.sync().await.unwrap();
            drop(log);
            let full = fs::read(dir.path().join(LOG_FILE_NAME)).unwrap();
            for cut in before_len..full.len() {
                let torn = tempfile::tempdir().unwrap();
                fs::write(torn.path().join(LOG_FILE_NAME), &full[..cut]).unwrap();
                let mut log = FileQuorumLog::open(storage(), torn.path()).await.unwrap();
                assert_eq!(log.recover().await.unwrap(), before, "cut at {cut}");
                assert_eq!(file_len(&log), before_len, "cut at {cut}");
                log.write(&batch).await.unwrap();
                log.sync().await.unwrap();
                drop(log);
                let log = FileQuorumLog::open(storage(), torn.path()).await.unwrap();
                assert_eq!(
                    log.recover().await.unwrap().last_index(),
                    last + 3,
                    "cut at {cut}"
                );
            }
        })
    }

    /// Batch boundaries (file offsets) of `n` batches, each synced.
    async fn synced_batches(dir: &Path, n: usize) -> (Vec<usize>, MemQuorumLog) {
        let mut log = FileQuorumLog::open(storage(), dir).await.unwrap();
        let mut mem = MemQuorumLog::default();
        let mut gen = Gen::new(11);
        let mut ends = vec![file_len(&log)];
        for _ in 0..n {
            let b = gen.batch();
            log.write(&b).await.unwrap();
            log.sync().await.unwrap();
            mem.write(&b).unwrap();
            mem.sync().unwrap();
            ends.push(file_len(&log));
        }
        (ends, mem)
    }

    /// Any damaged byte of a synced record followed by later writes is an error naming the
    /// record's offset, never a silent truncation.
    #[test]
    fn damage_in_a_middle_record_is_an_error() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (ends, _) = synced_batches(dir.path(), 6).await;
            let path = dir.path().join(LOG_FILE_NAME);
            let good = fs::read(&path).unwrap();
            let (start, end) = (ends[3], ends[4]);
            let first_record_end = read_record(&good, start).unwrap().next;
            for at in start..first_record_end {
                for bit in [0, 5] {
                    let mut bad = good.clone();
                    bad[at] ^= 1 << bit;
                    fs::write(&path, &bad).unwrap();
                    let err = FileQuorumLog::open(storage(), dir.path())
                        .await
                        .unwrap_err();
                    match &err {
                        RaftLogError::Corrupt { offset, next, .. } => {
                            assert_eq!(*offset, start as u64, "byte {at}");
                            assert!(*next >= end as u64, "byte {at}");
                        }
                        other => panic!("byte {at}: {other}"),
                    }
                    let msg = err.to_string();
                    assert!(msg.contains(&format!("byte {start}")) && msg.contains(LOG_FILE_NAME));
                    assert_eq!(fs::read(&path).unwrap(), bad, "the file is left as found");
                }
            }
        })
    }

    /// Written but unsynced batches may be lost in any part (cut short, or a hole the kernel
    /// never wrote back): the file recovers to the synced state plus a prefix of ops.
    #[test]
    fn unsynced_damage_never_corrupts() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = FileQuorumLog::open(storage(), dir.path()).await.unwrap();
            let mut mem = MemQuorumLog::default();
            let mut gen = Gen::new(3);
            feed(&mut gen, &mut log, &mut mem, 15).await;
            let synced_len = file_len(&log);
            let mut ops = 0;
            for _ in 0..6 {
                let b = gen.batch();
                ops += b.ops.len();
                log.write(&b).await.unwrap();
                mem.write(&b).unwrap();
            }
            // recover() reports only what is synced.
            assert_eq!(log.recover().await.unwrap(), mem.recover().unwrap());
            let candidates: Vec<LogState> = (0..=ops)
                .map(|keep| {
                    let mut m = mem.clone();
                    m.crash(keep).unwrap();
                    m.recover().unwrap()
                })
                .collect();
            drop(log);
            let full = fs::read(dir.path().join(LOG_FILE_NAME)).unwrap();
            let mut records = vec![synced_len];
            while let Some(&at) = records.last().filter(|&&at| at < full.len()) {
                records.push(read_record(&full, at).unwrap().next);
            }
            assert_eq!(records.len(), ops + 1, "one record per op here");
            let candidates = &candidates;
            let check = |bytes: Vec<u8>, expect_ops: usize, what: String| async move {
                let d = tempfile::tempdir().unwrap();
                fs::write(d.path().join(LOG_FILE_NAME), bytes).unwrap();
                let log = FileQuorumLog::open(storage(), d.path()).await.unwrap();
                assert_eq!(
                    log.recover().await.unwrap(),
                    candidates[expect_ops],
                    "{what}"
                );
            };
            for cut in (synced_len..=full.len()).step_by(3) {
                let whole = records.iter().filter(|&&end| end <= cut).count() - 1;
                check(full[..cut].to_vec(), whole, format!("cut at {cut}")).await;
            }
            for (i, w) in records.windows(2).enumerate() {
                let mut holed = full.clone();
                holed[w[0]..w[1]].fill(0);
                check(holed, i, format!("hole in record {i}")).await;
            }
        })
    }

    /// Rewrites shrink the file and keep the state; a leftover temporary file is ignored.
    #[test]
    fn rewrite_keeps_state() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = FileQuorumLog::open_with(storage(), dir.path(), small_rewrites())
                .await
                .unwrap();
            let mut mem = MemQuorumLog::default();
            let mut gen = Gen::new(5);
            feed(&mut gen, &mut log, &mut mem, 200).await;
            assert!(log.rewrites() > 0);
            let expected = mem.recover().unwrap();
            assert_eq!(log.recover().await.unwrap(), expected);

            let before = log.file_bytes();
            log.rewrite().await.unwrap();
            assert!(log.file_bytes() <= before);
            assert_eq!(log.file_bytes() as usize, file_len(&log));
            drop(log);

            fs::write(dir.path().join(TEMP_FILE_NAME), b"half a rewrite").unwrap();
            let mut log = FileQuorumLog::open(storage(), dir.path()).await.unwrap();
            assert_eq!(log.recover().await.unwrap(), expected);
            assert!(!dir.path().join(TEMP_FILE_NAME).exists());
            feed(&mut gen, &mut log, &mut mem, 10).await;
            drop(log);
            let log = FileQuorumLog::open(storage(), dir.path()).await.unwrap();
            assert_eq!(log.recover().await.unwrap(), mem.recover().unwrap());
        })
    }

    /// A batch that does not fit the log is refused and poisons it; the file keeps only
    /// what came before.
    #[test]
    fn refused_batch_poisons() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = FileQuorumLog::open(storage(), dir.path()).await.unwrap();
            let gap = PersistBatch {
                id: 1,
                ops: vec![PersistOp::Append(vec![Entry {
                    index: 5,
                    ..Default::default()
                }])],
            };
            let err = log.write(&gap).await.unwrap_err();
            assert!(
                matches!(err, RaftLogError::BadBatch { batch: 1, .. }),
                "{err}"
            );
            assert!(matches!(
                log.sync().await,
                Err(RaftLogError::Poisoned { .. })
            ));
            assert!(matches!(
                log.recover().await,
                Err(RaftLogError::Poisoned { .. })
            ));
            drop(log);
            let log = FileQuorumLog::open(storage(), dir.path()).await.unwrap();
            assert_eq!(log.recover().await.unwrap(), LogState::default());
        })
    }

    /// An intact record of an unknown kind (a newer writer) is refused, not skipped.
    #[test]
    fn unknown_record_kind_is_refused() {
        let mut bytes = file_header();
        let at = begin_record(&mut bytes);
        bytes.extend_from_slice(b"future");
        end_record(&mut bytes, at, 99, 0).unwrap();
        let err = replay(Path::new("x/raft.log"), &bytes).unwrap_err();
        assert!(
            matches!(err, RaftLogError::BadRecord { offset: 12, .. }),
            "{err}"
        );
    }
}
