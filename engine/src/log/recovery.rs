//! Opening a log: find the segments, check their indexes, scan each segment's tail from
//! its last trustworthy index entry, and cut the active segment at the first batch that is
//! torn, corrupt, zero padding or out of offset sequence.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tokio::sync::Notify;

use super::segment::{segment_path, HotCache, Scanner, Segment};
use super::writer::{self, create_segment};
use super::{Inner, Log, Shared};
use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::buf::align_down;
use crate::config::LogConfig;
use crate::error::OpenError;
use crate::index::{self, encode_header, IndexKind, OffsetIndex, TimeIndex};
use crate::storage::{FileMode, Storage, StorageFile};

/// Name of the log start offset checkpoint file.
pub(super) const LOG_START_FILE: &str = "log-start-offset.checkpoint";
const LOG_START_MAGIC: [u8; 4] = *b"TNLS";
const LOG_START_VERSION: u16 = 1;
const LOG_START_BYTES: usize = 20;

/// Encodes the log start checkpoint: magic, version u16, reserved u16, offset i64, CRC32C.
pub(super) fn encode_log_start(offset: i64) -> Vec<u8> {
    let mut b = Vec::with_capacity(LOG_START_BYTES);
    b.extend_from_slice(&LOG_START_MAGIC);
    b.extend_from_slice(&LOG_START_VERSION.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode_log_start(b: &[u8]) -> Option<i64> {
    if b.len() != LOG_START_BYTES || b[..4] != LOG_START_MAGIC {
        return None;
    }
    if u16::from_le_bytes([b[4], b[5]]) != LOG_START_VERSION {
        return None;
    }
    let crc = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
    if crc32c::crc32c(&b[..16]) != crc {
        return None;
    }
    let mut o = [0u8; 8];
    o.copy_from_slice(&b[8..16]);
    Some(i64::from_le_bytes(o))
}

fn parse_base(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|c| c.is_ascii_digit())).then(|| stem.parse().ok())?
}

/// What [`Log::open_with`] may assume about how the previous process stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Unknown or a crash: the active segment is synced before anything is trusted (a
    /// killed process's writes may still sit in the page cache).
    #[default]
    Full,
    /// Every log was closed without error (data, indexes and producer snapshot synced) and
    /// nothing wrote to it since; the caller knows it from a marker written after the last
    /// close and removed durably before this open (see the broker's start). The sync of the
    /// active segment is skipped; everything else is still checked.
    AfterCleanShutdown,
}

impl<S: Storage> Log<S> {
    /// Opens (creating if needed) the log in `dir` and recovers it, not knowing how the
    /// last process stopped ([`Recovery::Full`]). The writer task is spawned on the
    /// storage's runtime.
    pub async fn open(
        storage: S,
        dir: impl Into<PathBuf>,
        config: LogConfig,
    ) -> Result<Log<S>, OpenError> {
        Self::open_with(storage, dir, config, Recovery::Full).await
    }

    /// [`open`](Self::open), told how the last process stopped.
    pub async fn open_with(
        storage: S,
        dir: impl Into<PathBuf>,
        config: LogConfig,
        recovery: Recovery,
    ) -> Result<Log<S>, OpenError> {
        config.validate()?;
        let dir = dir.into();
        let io = |e| OpenError::io(&dir, e);
        storage.create_dir_all(&dir).await.map_err(io)?;
        let names = storage.list_dir(&dir).await.map_err(io)?;
        let bases: Vec<i64> = {
            let mut b: Vec<i64> = names.iter().filter_map(|n| parse_base(n, "log")).collect();
            b.sort_unstable();
            b
        };
        let mut removed = false;
        for n in &names {
            let orphan = ["index", "timeindex"]
                .iter()
                .filter_map(|ext| parse_base(n, ext))
                .any(|b| bases.binary_search(&b).is_err());
            if orphan || n.ends_with(".tmp") {
                storage.remove_file(&dir.join(n)).await.map_err(io)?;
                removed = true;
            }
        }
        let checkpoint = if names.iter().any(|n| n == LOG_START_FILE) {
            let f = storage
                .open(&dir.join(LOG_START_FILE), FileMode::Buffered)
                .await
                .map_err(io)?;
            decode_log_start(&f.read_at(0, LOG_START_BYTES + 1).await.map_err(io)?)
        } else {
            None
        };
        let mut segments = BTreeMap::new();
        if bases.is_empty() {
            let base = checkpoint.unwrap_or(0).max(0);
            let seg = create_segment(&storage, &dir, base).await.map_err(io)?;
            segments.insert(base, seg);
            removed = true;
        }
        for (k, base) in bases.iter().enumerate() {
            let last = k + 1 == bases.len();
            let seg =
                recover_segment(&storage, &dir, *base, last, config.index_interval_bytes).await?;
            segments.insert(*base, seg);
        }
        removed |= drop_segments_before_gap(&storage, &dir, &mut segments).await?;
        if removed {
            storage.sync_dir(&dir).await.map_err(io)?;
        }
        let Some(active) = segments.values().next_back() else {
            unreachable!("a segment was created or recovered above")
        };
        let end = active.next_offset;
        let cut = align_down(active.size);
        let path = segment_path(&dir, active.base, "log");
        let written_partial = active
            .file
            .read_at(cut, (active.size - cut) as usize)
            .await
            .map_err(|e| OpenError::io(&path, e))?
            .to_vec();
        // What a killed process left in the page cache becomes durable before any index
        // entry can point past it (after a clean shutdown, close already synced it).
        if recovery == Recovery::Full {
            active
                .file
                .sync_data()
                .await
                .map_err(|e| OpenError::io(&path, e))?;
        }
        let synced_size = active.size;
        let (producers, producer_snapshot) =
            super::producers::load(&storage, &dir, &names, &segments, end).await?;
        let first_base = segments.keys().next().copied().unwrap_or(0);
        let log_start = checkpoint.unwrap_or(first_base).max(first_base).min(end);
        let (epochs, epochs_stale) =
            super::epochs::load(&storage, &dir, &names, log_start, end).await?;
        let now_ms = storage.now_ms();
        let inner = Inner {
            storage: storage.clone(),
            dir,
            config,
            segments,
            log_start,
            next_offset: end,
            readable_end: end,
            queue: VecDeque::new(),
            in_flight: None,
            written_partial,
            waiters: VecDeque::new(),
            poisoned: None,
            truncating: false,
            closing: false,
            writer_running: true,
            hot: HotCache::default(),
            pool: Default::default(),
            last_unit_bytes: 0,
            prepared_end: 0,
            preparing: None,
            allocated_end: 0,
            dirty: false,
            synced_size,
            last_flush_ms: now_ms,
            stats: Default::default(),
            producers,
            producer_snapshot,
            stale_snapshots: Vec::new(),
            journal: None,
            journal_name: String::new(),
            journal_pending: VecDeque::new(),
            behind: Default::default(),
            epochs,
            // Entries past the recovered end are dropped on disk at the next write.
            epochs_version: u64::from(epochs_stale),
            epochs_persisted: 0,
            leader_epoch: None,
            tail_copies: None,
            tail_served_end: -1,
            held_full: None,
            full_warned: false,
        };
        let shared = Rc::new(Shared {
            inner: RefCell::new(inner),
            wake: Rc::new(Notify::new()),
            idle: Rc::new(Notify::new()),
            prepared: Notify::new(),
            behind_progress: Notify::new(),
            epochs_lock: tokio::sync::Mutex::new(()),
        });
        storage.spawn(writer::run(Rc::downgrade(&shared), shared.wake.clone()));
        Ok(Log { shared })
    }
}

/// Offsets are contiguous across segments; segments that end before the next one starts
/// were being deleted by retention when the process stopped (their removal was not yet
/// durable while a later one's was). They are removed now, with everything older.
async fn drop_segments_before_gap<S: Storage>(
    storage: &S,
    dir: &Path,
    segments: &mut BTreeMap<i64, Segment<S::File>>,
) -> Result<bool, OpenError> {
    let bases: Vec<(i64, i64)> = segments.values().map(|s| (s.base, s.next_offset)).collect();
    let Some(cut) = bases
        .windows(2)
        .rposition(|w| w[0].1 != w[1].0)
        .map(|k| bases[k + 1].0)
    else {
        return Ok(false);
    };
    let doomed: Vec<i64> = segments.range(..cut).map(|(b, _)| *b).collect();
    tracing::warn!(dir = %dir.display(), first_kept = cut, dropped = doomed.len(),
        "segments before an offset gap removed (an interrupted retention)");
    for b in doomed {
        segments.remove(&b);
        super::maintenance::remove_segment_files(storage, dir, b)
            .await
            .map_err(|(p, e)| OpenError::io(&p, e))?;
    }
    Ok(true)
}

/// Recovers one segment. For the `active` (last) one, bytes after the last valid batch are
/// cut off the file so that stale data can never follow new appends.
pub(super) async fn recover_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    base: i64,
    active: bool,
    index_interval_bytes: u32,
) -> Result<Segment<S::File>, OpenError> {
    let path = segment_path(dir, base, "log");
    let idx_path = segment_path(dir, base, "index");
    let time_path = segment_path(dir, base, "timeindex");
    let file = storage
        .open(&path, FileMode::Direct)
        .await
        .map_err(|e| OpenError::io(&path, e))?;
    let index_file = storage
        .open(&idx_path, FileMode::Buffered)
        .await
        .map_err(|e| OpenError::io(&idx_path, e))?;
    let time_file = storage
        .open(&time_path, FileMode::Buffered)
        .await
        .map_err(|e| OpenError::io(&time_path, e))?;
    let file_len = file.len().await.map_err(|e| OpenError::io(&path, e))?;
    let mut index = read_index(&index_file, &idx_path, |b| {
        OffsetIndex::decode(b, base, file_len)
    })
    .await?;
    let mut time_index = read_index(&time_file, &time_path, |b| {
        TimeIndex::decode(b, base, u32::MAX)
    })
    .await?;
    // The last offset index entry must name the batch that really starts there.
    while let Some(e) = index.entries.last().copied() {
        let at = file
            .read_at(e.position as u64, HEADER_BYTES)
            .await
            .map_err(|err| OpenError::io(&path, err))?;
        if BatchHeader::parse(&at).is_some_and(|h| h.base_offset == base + e.rel_offset as i64) {
            break;
        }
        index.entries.pop();
    }
    index.persisted = index.persisted.min(index.entries.len());
    let start = index
        .entries
        .last()
        .map_or((0, 0), |e| (e.position as u64, e.rel_offset));
    time_index.truncate_to_offset(start.1);
    let handle = file.handle().map_err(|e| OpenError::io(&path, e))?;
    let mut seg = Segment {
        base,
        file: Rc::new(file),
        handle,
        index_file: Rc::new(index_file),
        time_file: Rc::new(time_file),
        max_timestamp: time_index.max_timestamp().unwrap_or(-1),
        max_timestamp_batch: time_index
            .entries
            .last()
            .map_or(base, |e| base + e.rel_offset as i64),
        index,
        time_index,
        size: start.0,
        next_offset: base + start.1 as i64,
        bytes_since_index: 0,
        roll_base_ms: None,
    };
    let data = seg.file.clone();
    let mut scan = Scanner::new(&*data, start.0, file_len);
    let mut scanned = 0usize;
    while let Some((meta, bytes)) = scan.next(true).await.map_err(|e| OpenError::io(&path, e))? {
        let intact = bytes.as_deref().and_then(batch::check_stored).is_some();
        if !intact || meta.base != seg.next_offset {
            break;
        }
        seg.on_batch(&meta, index_interval_bytes);
        scanned += 1;
    }
    if active {
        let first = seg
            .file
            .read_at(0, HEADER_BYTES)
            .await
            .map_err(|e| OpenError::io(&path, e))?;
        seg.roll_base_ms = BatchHeader::parse(&first)
            .filter(|_| seg.size > 0)
            .map(|h| h.max_timestamp)
            .filter(|t| *t >= 0)
            .or(Some(storage.now_ms()));
        if file_len > seg.size {
            seg.file
                .set_len(seg.size)
                .await
                .map_err(|e| OpenError::io(&path, e))?;
            seg.file
                .sync_data()
                .await
                .map_err(|e| OpenError::io(&path, e))?;
        }
    }
    // The entry for the segment's largest timestamp, as a roll or a close writes it: after a
    // clean close the time index on disk then matches and is not rewritten.
    seg.push_time_entry();
    tracing::debug!(path = %path.display(), scanned, size = seg.size, "segment recovered");
    rewrite_index_files(&mut seg)
        .await
        .map_err(|e| OpenError::io(&idx_path, e))?;
    Ok(seg)
}

async fn read_index<F: StorageFile, T: Default>(
    file: &F,
    path: &Path,
    decode: impl Fn(&[u8]) -> Result<T, index::IndexError>,
) -> Result<T, OpenError> {
    let len = file.len().await.map_err(|e| OpenError::io(path, e))?;
    let bytes = file
        .read_at(0, len as usize)
        .await
        .map_err(|e| OpenError::io(path, e))?;
    Ok(match decode(&bytes) {
        Ok(i) => i,
        Err(e) => {
            if len > 0 {
                tracing::warn!(path = %path.display(), error = %e, "index rebuilt");
            }
            T::default()
        }
    })
}

/// Makes both index files hold exactly the in-memory entries (header + entries), dropping
/// stale entries beyond them so they can never be mistaken for valid ones later.
pub(super) async fn rewrite_index_files<F: StorageFile>(seg: &mut Segment<F>) -> io::Result<()> {
    let mut idx = encode_header(IndexKind::Offset, seg.base);
    idx.extend(seg.index.encode_range(0, seg.index.entries.len()));
    let mut time = encode_header(IndexKind::Time, seg.base);
    time.extend(seg.time_index.encode_from(0));
    for (file, bytes) in [(&seg.index_file, idx), (&seg.time_file, time)] {
        let want = bytes.len() as u64;
        if file.len().await? != want || file.read_at(0, bytes.len()).await?[..] != bytes[..] {
            file.set_len(0).await?;
            file.write_bytes_at(bytes, 0).await?;
            // Rare (recovery, truncation): make sure stale entries cannot come back.
            file.sync_data().await?;
        }
    }
    seg.index.persisted = seg.index.entries.len();
    seg.time_index.persisted = seg.time_index.entries.len();
    Ok(())
}
