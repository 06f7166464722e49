//! Reading a journal back: the chain of files from the checkpoint's replay start, and the
//! replay of its records into the partitions' logs.
//!
//! Replay is idempotent by offset: a batch below what its partition's segment recovered is
//! skipped, and a batch at or past it replaces whatever the chain held from its offset on (a
//! later record for an offset wins; no path of this version writes two, but replay does not
//! depend on it). A truncation record cuts the chain (or, when the segment still holds the
//! cut batches, the segment) at its offset, so batches a replica removed never come back. A
//! batch past the chain's end means records are missing: that is an error, never a silent
//! gap.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::format::{self, Checkpoint, FileHeader, RecordError, RecordKind};
use super::{parse_slot, JournalError, CHECKPOINT_FILES};
use crate::batch::BatchHeader;
use crate::config::{FlushPolicy, LogConfig};
use crate::log::Log;
use crate::storage::{FileMode, Storage, StorageFile};

/// A record read back, its payload sharing the file's bytes.
#[derive(Debug, Clone)]
pub(super) struct OwnedRecord {
    pub lsn: u64,
    pub kind: RecordKind,
    pub partition: String,
    pub base_offset: i64,
    pub payload: Bytes,
}

/// What a journal directory holds.
pub(super) struct ReadState<F> {
    pub checkpoint: Option<Checkpoint>,
    /// Open files by slot.
    pub files: Vec<(usize, F)>,
    /// Slot of the file with the highest generation.
    pub newest_slot: Option<usize>,
    pub max_generation: u64,
    /// LSN after the last valid record (the replay start when there is none).
    pub end_lsn: u64,
    /// Records from the replay start on, in LSN order.
    pub records: Vec<OwnedRecord>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records read after the checkpoint.
    pub records: u64,
    /// Journal bytes those records take (what a replay reads).
    pub journal_bytes: u64,
    /// Batches appended to segments.
    pub batches_applied: u64,
    /// Bytes of those batches.
    pub bytes_applied: u64,
    /// Batches skipped because their segment already held them.
    pub batches_skipped: u64,
    /// Truncation records applied.
    pub truncations: u64,
    /// Partitions written to.
    pub partitions: usize,
    /// Partitions named by records that the resolver did not know (deleted topics).
    pub unknown_partitions: Vec<String>,
}

/// Reads the checkpoint, the file headers and every record after the replay start.
pub(super) async fn read<S: Storage>(
    storage: &S,
    dir: &Path,
) -> Result<ReadState<S::File>, JournalError> {
    let io = |e| JournalError::io(dir, e);
    let names = storage.list_dir(dir).await.map_err(io)?;
    let mut headers: Vec<(usize, FileHeader)> = Vec::new();
    let mut files = Vec::new();
    for n in &names {
        let Some(slot) = parse_slot(n) else { continue };
        let path = dir.join(n);
        let f = storage
            .open(&path, FileMode::Direct)
            .await
            .map_err(|e| JournalError::io(&path, e))?;
        let head = f
            .read_at(0, format::FILE_HEADER_BYTES as usize)
            .await
            .map_err(|e| JournalError::io(&path, e))?;
        if let Some(h) = format::decode_file_header(&head) {
            headers.push((slot, h));
        }
        files.push((slot, f));
    }
    let checkpoint = read_checkpoint(storage, dir, &names, !files.is_empty()).await?;
    let newest = headers.iter().max_by_key(|(_, h)| h.generation);
    let mut state = ReadState {
        newest_slot: newest.map(|(s, _)| *s),
        max_generation: newest.map_or(0, |(_, h)| h.generation),
        end_lsn: checkpoint.as_ref().map_or(0, |c| c.replay_start),
        checkpoint,
        files: Vec::new(),
        records: Vec::new(),
    };
    scan_chain(dir, &headers, &files, &mut state).await?;
    state.files = files;
    Ok(state)
}

async fn read_checkpoint<S: Storage>(
    storage: &S,
    dir: &Path,
    names: &[String],
    has_files: bool,
) -> Result<Option<Checkpoint>, JournalError> {
    let mut newest: Option<Checkpoint> = None;
    let mut present = false;
    for name in CHECKPOINT_FILES {
        if !names.iter().any(|n| n == name) {
            continue;
        }
        present = true;
        let path = dir.join(name);
        let f = storage
            .open(&path, FileMode::Buffered)
            .await
            .map_err(|e| JournalError::io(&path, e))?;
        let len = f.len().await.map_err(|e| JournalError::io(&path, e))?;
        let b = f
            .read_at(0, len as usize)
            .await
            .map_err(|e| JournalError::io(&path, e))?;
        // A torn write of one copy leaves the other, older one.
        if let Some(c) = format::decode_checkpoint(&b) {
            if newest.as_ref().is_none_or(|n| n.sequence < c.sequence) {
                newest = Some(c);
            }
        }
    }
    let path = dir.join(CHECKPOINT_FILES[0]);
    match (newest, present, has_files) {
        (Some(c), _, _) => Ok(Some(c)),
        (None, true, _) => Err(JournalError::CorruptCheckpoint { path }),
        (None, false, true) => Err(JournalError::MissingCheckpoint { path }),
        (None, false, false) => Ok(None),
    }
}

/// Follows the files from the replay start: each file's records until the first that is not
/// there, then the file that starts at that LSN (the newest generation if several do).
async fn scan_chain<F: StorageFile>(
    dir: &Path,
    headers: &[(usize, FileHeader)],
    files: &[(usize, F)],
    state: &mut ReadState<F>,
) -> Result<(), JournalError> {
    let mut lsn = state.end_lsn;
    // The file holding the replay start: the newest that starts at or before it.
    let mut current = headers
        .iter()
        .filter(|(_, h)| h.start_lsn <= lsn)
        .max_by_key(|(_, h)| (h.start_lsn, h.generation))
        .copied();
    let mut last_generation = 0;
    while let Some((slot, h)) = current {
        last_generation = h.generation;
        let Some((_, file)) = files.iter().find(|(s, _)| *s == slot) else {
            break;
        };
        let path = super::slot_path(dir, slot);
        let len = file.len().await.map_err(|e| JournalError::io(&path, e))?;
        if len < h.file_bytes {
            return Err(JournalError::Corrupt {
                path,
                pos: len,
                reason: format!("the file was cut to {len} of its {} bytes", h.file_bytes),
            });
        }
        lsn = scan_file(&path, file, h, lsn, SCAN_CHUNK_BYTES, &mut state.records).await?;
        current = headers
            .iter()
            .filter(|(_, n)| n.start_lsn == lsn && n.generation > h.generation)
            .max_by_key(|(_, n)| n.generation)
            .copied();
    }
    if let Some((slot, h)) = headers
        .iter()
        .find(|(_, h)| h.start_lsn > lsn && h.generation > last_generation)
    {
        return Err(JournalError::Corrupt {
            path: super::slot_path(dir, *slot),
            pos: lsn,
            reason: format!(
                "the records end at LSN {lsn} but a newer file starts at LSN {}",
                h.start_lsn
            ),
        });
    }
    state.end_lsn = lsn;
    Ok(())
}

/// Bytes of a journal file read at once while scanning it.
const SCAN_CHUNK_BYTES: u64 = 32 << 20;

/// The bytes of a journal file from some position on, read in chunks as a scan needs them:
/// a replay reads only as far as the records go, not the whole preallocated file.
struct Window<'a, F> {
    file: &'a F,
    file_bytes: u64,
    chunk_bytes: u64,
    /// File position of `data[0]`.
    start: u64,
    data: Bytes,
}

impl<F: StorageFile> Window<'_, F> {
    /// The bytes from `pos` on, at least `want` of them unless the file ends first.
    async fn at(&mut self, pos: u64, want: usize) -> std::io::Result<Bytes> {
        let have = (self.start + self.data.len() as u64).saturating_sub(pos);
        if pos < self.start || have < want as u64 {
            let len = (want as u64)
                .max(self.chunk_bytes)
                .min(self.file_bytes.saturating_sub(pos));
            self.data = self.file.read_at(pos, len as usize).await?;
            self.start = pos;
        }
        let from = ((pos - self.start) as usize).min(self.data.len());
        Ok(self.data.slice(from..))
    }

    /// True if the file has bytes past the `got` bytes read from `pos`.
    fn more_after(&self, pos: u64, got: usize) -> bool {
        pos + (got as u64) < self.file_bytes
    }

    /// True if a valid record for `lsn` starts at `pos`.
    async fn valid_record_at(&mut self, pos: u64, lsn: u64) -> std::io::Result<bool> {
        let b = self.at(pos, format::RECORD_HEADER_BYTES).await?;
        Ok(match format::decode_record(&b, lsn) {
            Ok(_) => true,
            Err(RecordError::BadCrc { len }) if len > b.len() => {
                let whole = self.at(pos, len).await?;
                format::decode_record(&whole, lsn).is_ok()
            }
            Err(_) => false,
        })
    }
}

/// Reads the records of one file from `lsn` on; returns the LSN after the last one.
async fn scan_file<F: StorageFile>(
    path: &Path,
    file: &F,
    h: FileHeader,
    mut lsn: u64,
    chunk_bytes: u64,
    out: &mut Vec<OwnedRecord>,
) -> Result<u64, JournalError> {
    let Some(mut pos) = (lsn - h.start_lsn).checked_add(format::FILE_HEADER_BYTES) else {
        return Ok(lsn);
    };
    let io = |e| JournalError::io(path, e);
    let mut window = Window {
        file,
        file_bytes: h.file_bytes,
        chunk_bytes,
        start: 0,
        data: Bytes::new(),
    };
    let mut want = format::RECORD_HEADER_BYTES;
    while pos < h.file_bytes {
        let b = window.at(pos, want).await.map_err(io)?;
        want = format::RECORD_HEADER_BYTES;
        match format::decode_record(&b, lsn) {
            Ok((r, len)) => {
                out.push(OwnedRecord {
                    lsn,
                    kind: r.kind,
                    partition: r.partition.to_string(),
                    base_offset: r.base_offset,
                    payload: b.slice_ref(r.payload),
                });
                pos += len as u64;
                lsn += len as u64;
            }
            // Too few bytes for a header in this window: read on, if the file goes on.
            Err(RecordError::End)
                if b.len() < format::RECORD_HEADER_BYTES && window.more_after(pos, b.len()) => {}
            Err(RecordError::End) => break,
            // The record runs past the window: read it whole, then decide.
            Err(RecordError::BadCrc { len })
                if len > b.len() && window.more_after(pos, b.len()) =>
            {
                want = len;
            }
            Err(RecordError::BadCrc { len }) => {
                // A torn last write ends the journal; a damaged record that valid ones
                // follow is corruption, and skipping it would lose them.
                let next = pos.saturating_add(len as u64);
                if next < h.file_bytes
                    && window
                        .valid_record_at(next, lsn + len as u64)
                        .await
                        .map_err(io)?
                {
                    return Err(corrupt(path, pos, "a record's checksum does not match"));
                }
                break;
            }
            Err(RecordError::Malformed(why)) => return Err(corrupt(path, pos, why)),
        }
    }
    Ok(lsn)
}

fn corrupt(path: &Path, pos: u64, reason: &str) -> JournalError {
    JournalError::Corrupt {
        path: path.to_path_buf(),
        pos,
        reason: reason.to_string(),
    }
}

/// Replays the journal in `dir` (if any) into the partitions its records name, then moves
/// its checkpoint past them. `resolve` maps a partition's directory name to its directory
/// and settings; `None` (a deleted topic) skips its records with a warning.
///
/// Each partition's log is opened (and recovered) here, written with `flush = never` and
/// closed, which syncs it, before the checkpoint moves: a crash during replay replays again.
pub async fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
    mut resolve: impl FnMut(&str) -> Option<(PathBuf, LogConfig)>,
) -> Result<ReplayStats, JournalError> {
    let mut stats = ReplayStats::default();
    match storage.list_dir(dir).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(stats),
        Err(e) => return Err(JournalError::io(dir, e)),
    }
    let state = read(storage, dir).await?;
    if state.records.is_empty() {
        return Ok(stats);
    }
    stats.records = state.records.len() as u64;
    stats.journal_bytes = state.end_lsn - state.records.first().map_or(state.end_lsn, |r| r.lsn);
    let durable: HashMap<&str, i64> = state
        .checkpoint
        .iter()
        .flat_map(|c| c.durable.iter().map(|(n, o)| (n.as_str(), *o)))
        .collect();
    let mut by_partition: Vec<(String, Vec<&super::replay::OwnedRecord>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for r in &state.records {
        let k = *index.entry(r.partition.as_str()).or_insert_with(|| {
            by_partition.push((r.partition.clone(), Vec::new()));
            by_partition.len() - 1
        });
        by_partition[k].1.push(r);
    }
    for (name, records) in by_partition {
        let Some((log_dir, mut log_config)) = resolve(&name) else {
            tracing::warn!(journal = %dir.display(), partition = %name,
                "journal records name a partition that no longer exists: skipped");
            stats.unknown_partitions.push(name);
            continue;
        };
        log_config.flush = FlushPolicy::Never;
        let fail = |reason: String| JournalError::Replay {
            path: dir.to_path_buf(),
            partition: name.clone(),
            reason,
        };
        let log = Log::open(storage.clone(), log_dir, log_config)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if let Some(d) = durable.get(name.as_str()) {
            if log.next_offset().0 < *d {
                tracing::error!(partition = %name, segment_end = log.next_offset().0,
                    checkpoint = *d, "segment ends before what the journal checkpoint saw durable");
            }
        }
        apply(&log, &records, &mut stats).await.map_err(&fail)?;
        log.close().await.map_err(|e| fail(e.to_string()))?;
        stats.partitions += 1;
    }
    let c = Checkpoint {
        sequence: state.checkpoint.as_ref().map_or(0, |c| c.sequence) + 1,
        replay_start: state.end_lsn,
        durable: Vec::new(),
    };
    super::write_checkpoint(storage, dir, &c).await?;
    Ok(stats)
}

/// Builds the partition's chain of batches from its records and appends it to `log`.
async fn apply<S: Storage>(
    log: &Log<S>,
    records: &[&OwnedRecord],
    stats: &mut ReplayStats,
) -> Result<(), String> {
    // Offsets below this are in the segment; the chain continues from it.
    let mut floor = log.next_offset().0;
    // (base offset, end offset, bytes) of the batches to append, contiguous from `floor`.
    let mut chain: Vec<(i64, i64, Bytes)> = Vec::new();
    // A batch past the chain's end: records are missing, unless a later truncation removes
    // it (the batches before it were durable in the segment when the replay start passed
    // them, and a truncation later cut the segment below it). (LSN, base, chain end).
    let mut gap: Option<(u64, i64, i64)> = None;
    for r in records {
        if r.kind == RecordKind::Truncate {
            let at = r.base_offset;
            // It cuts the batch holding `at` whole, so it removes the batch past the gap (and
            // the missing ones from it) when `at` is at or before that batch; if it left some
            // missing batches, the next record shows a gap again.
            if gap.is_some_and(|(_, base, _)| at <= base) {
                gap = None;
            }
            if at < floor {
                // The segment still holds what was cut (the truncation had not reached it):
                // cut it now; every earlier record's batches are gone with it. A cut below
                // the log's start (the log was reset to start later since) cuts all of it.
                let at = at.max(log.log_start_offset().0);
                log.truncate(crate::Offset(at))
                    .await
                    .map_err(|e| format!("truncation at LSN {} to offset {at}: {e}", r.lsn))?;
                floor = log.next_offset().0;
                chain.clear();
            } else {
                // A batch containing the offset goes whole, as in the segment.
                chain.retain(|c| c.1 <= at);
            }
            stats.truncations += 1;
            continue;
        }
        let batches = split_batches(&r.payload, r.lsn)?;
        if batches.first().is_some_and(|b| b.0 != r.base_offset) {
            return Err(format!(
                "record at LSN {} says offset {} but its first batch is at {}",
                r.lsn,
                r.base_offset,
                batches.first().map_or(-1, |b| b.0)
            ));
        }
        for b in batches {
            let (base, end) = (b.0, b.1);
            if base < floor {
                stats.batches_skipped += 1;
                continue;
            }
            let chain_end = chain.last().map_or(floor, |c| c.1);
            if let Some((_, _, gap_end)) = gap {
                if base < gap_end {
                    return Err(format!(
                        "record at LSN {} rewrites offset {base} behind missing records",
                        r.lsn
                    ));
                }
                continue;
            }
            if base > chain_end {
                gap = Some((r.lsn, base, chain_end));
                continue;
            }
            if base < chain_end {
                let keep = chain.partition_point(|c| c.0 < base);
                if chain.get(keep).is_none_or(|c| c.0 != base) {
                    return Err(format!(
                        "record at LSN {} rewrites offset {base}, inside a batch",
                        r.lsn
                    ));
                }
                chain.truncate(keep);
            }
            chain.push((base, end, b.2));
        }
    }
    if let Some((lsn, base, chain_end)) = gap {
        return Err(format!(
            "record at LSN {lsn} starts at offset {base} but the partition ends at \
             {chain_end}: records are missing"
        ));
    }
    for (base, _, bytes) in chain {
        let info = log
            .append_replayed(&[bytes.as_ref()])
            .await
            .map_err(|e| e.to_string())?;
        if info.first_offset.0 != base {
            return Err(format!(
                "batch at offset {base} was appended at {}",
                info.first_offset.0
            ));
        }
        stats.batches_applied += 1;
        stats.bytes_applied += bytes.len() as u64;
    }
    Ok(())
}

/// Splits a record's payload into its batches: (base offset, end offset, bytes).
fn split_batches(payload: &Bytes, lsn: u64) -> Result<Vec<(i64, i64, Bytes)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let rest = &payload[at..];
        let damaged = || format!("record at LSN {lsn} holds a damaged batch at byte {at}");
        let len = BatchHeader::parse(rest).ok_or_else(damaged)?.total_bytes as usize;
        let h = rest
            .get(..len)
            .and_then(crate::batch::check_stored)
            .ok_or_else(damaged)?;
        out.push((h.base_offset, end_of(&h), payload.slice(at..at + len)));
        at += len;
    }
    Ok(out)
}

fn end_of(h: &BatchHeader) -> i64 {
    h.last_offset() + 1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::storage::memory::MemStorage;

    const FILE_BYTES: u64 = 64 << 10;

    /// A journal file with records of assorted sizes from `start_lsn`; returns the file's
    /// bytes and each record's (LSN, payload length, file position).
    fn journal_file(start_lsn: u64) -> (Vec<u8>, Vec<(u64, usize, usize)>) {
        let h = FileHeader {
            generation: 3,
            start_lsn,
            file_bytes: FILE_BYTES,
        };
        let mut data = format::file_header_block(&h);
        let mut lsn = start_lsn;
        let mut records = Vec::new();
        for (k, payload_len) in [1usize, 700, 9, 5000, 33, 12_000, 64, 3].iter().enumerate() {
            let payload = vec![k as u8 + 1; *payload_len];
            let pos = data.len();
            let len = format::encode_record(
                &format::Record {
                    lsn,
                    kind: RecordKind::Batches,
                    partition: "t-0",
                    base_offset: k as i64,
                    payload: &payload,
                },
                |b| data.extend_from_slice(b),
            );
            records.push((lsn, *payload_len, pos));
            lsn += len as u64;
        }
        data.resize(FILE_BYTES as usize, 0);
        (data, records)
    }

    async fn scan_with(
        data: Vec<u8>,
        start_lsn: u64,
        chunk: u64,
    ) -> Result<(u64, Vec<OwnedRecord>), JournalError> {
        let storage = MemStorage::new(0);
        let path = Path::new("/j/00000000.journal");
        storage.create_dir_all(Path::new("/j")).await.unwrap();
        let f = storage.open(path, FileMode::Buffered).await.unwrap();
        f.write_bytes_at(data, 0).await.unwrap();
        let h = FileHeader {
            generation: 3,
            start_lsn,
            file_bytes: FILE_BYTES,
        };
        let mut out = Vec::new();
        let end = scan_file(path, &f, h, start_lsn, chunk, &mut out).await?;
        Ok((end, out))
    }

    /// Records split across read chunks at every kind of boundary (inside a header, inside a
    /// payload, exactly at a record's end) are read the same as from one read of the file;
    /// a torn last record ends the scan, a damaged record with a valid one after it is an
    /// error, whatever the chunk size.
    #[test]
    fn chunked_scans_read_what_one_read_does() {
        crate::storage::uring::new_runtime()
            .unwrap()
            .block_on(async {
                let start = 1 << 20;
                let (data, records) = journal_file(start);
                let end_lsn = {
                    let (lsn, len, pos) = records[records.len() - 1];
                    let (r, n) = format::decode_record(&data[pos..], lsn).unwrap();
                    assert_eq!(r.payload.len(), len);
                    lsn + n as u64
                };
                for chunk in [8, 32, 40, 100, 777, 4096, 5000, FILE_BYTES] {
                    let (end, out) = scan_with(data.clone(), start, chunk).await.unwrap();
                    assert_eq!(end, end_lsn, "chunk {chunk}");
                    assert_eq!(out.len(), records.len(), "chunk {chunk}");
                    for (r, (lsn, len, _)) in out.iter().zip(&records) {
                        assert_eq!((r.lsn, r.payload.len()), (*lsn, *len), "chunk {chunk}");
                        assert!(r.payload.iter().all(|b| *b == r.base_offset as u8 + 1));
                    }
                    // The last record torn: the scan ends before it.
                    let (last_lsn, _, last_pos) = records[records.len() - 1];
                    let mut torn = data.clone();
                    torn[last_pos + format::RECORD_HEADER_BYTES] ^= 0xff;
                    let (end, out) = scan_with(torn, start, chunk).await.unwrap();
                    assert_eq!(
                        (end, out.len()),
                        (last_lsn, records.len() - 1),
                        "chunk {chunk}"
                    );
                    // A damaged record in the middle (valid ones follow): an error.
                    let (_, _, mid_pos) = records[3];
                    let mut bad = data.clone();
                    bad[mid_pos + format::RECORD_HEADER_BYTES + 100] ^= 0xff;
                    let err = scan_with(bad, start, chunk).await.unwrap_err();
                    assert!(err.to_string().contains("checksum"), "chunk {chunk}: {err}");
                }
            });
    }
}
