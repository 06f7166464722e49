//! Reads as slices, and offset lookup by timestamp.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::segment::Scanner;
use super::{Log, Offset};
use crate::batch;
use crate::error::LogError;
use crate::storage::{SegmentHandle, Storage};

/// A piece of a read: bytes in memory, or a range of a segment file.
#[derive(Clone)]
pub enum Slice {
    /// Bytes still in the write buffers (hot): send them as they are.
    Memory(Bytes),
    /// A byte range of a segment file (cold): splice it from `handle`. The handle keeps the
    /// file readable even if retention deletes it meanwhile.
    File {
        handle: Arc<dyn SegmentHandle>,
        position: u64,
        len: u32,
    },
}

impl Slice {
    /// Bytes in this slice.
    pub fn len(&self) -> usize {
        match self {
            Slice::Memory(b) => b.len(),
            Slice::File { len, .. } => *len as usize,
        }
    }

    /// True for an empty slice.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the slice's bytes into memory (tools and tests; blocking for file slices).
    pub fn to_bytes(&self) -> std::io::Result<Bytes> {
        match self {
            Slice::Memory(b) => Ok(b.clone()),
            Slice::File {
                handle,
                position,
                len,
            } => {
                let mut v = vec![0u8; *len as usize];
                let mut filled = 0;
                while filled < v.len() {
                    let n = handle.read_at(position + filled as u64, &mut v[filled..])?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    filled += n;
                }
                Ok(Bytes::from(v))
            }
        }
    }
}

impl fmt::Debug for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slice::Memory(b) => write!(f, "Memory({} bytes)", b.len()),
            Slice::File { position, len, .. } => write!(f, "File({position}+{len})"),
        }
    }
}

/// What a read returns: whole batches, in order.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub slices: Vec<Slice>,
    /// Sum of the slices' lengths.
    pub bytes: u64,
    /// Offset after the last returned batch (the next offset to read); equal to the
    /// requested offset when nothing was returned.
    pub next_offset: Offset,
    pub log_start: Offset,
    pub readable_end: Offset,
}

impl<S: Storage> Log<S> {
    /// Whole batches from the one containing `offset`, up to `max_bytes` (but at least one
    /// batch if any is there), none ending at or above `upper` (exclusive; e.g. the high
    /// watermark) or above the readable end. Hot data comes as memory slices, cold data as
    /// file ranges; a read of cold data stops at the end of its segment, or where bytes
    /// still written behind the journal begin (they are all in the hot cache).
    pub async fn read(
        &self,
        offset: Offset,
        max_bytes: u32,
        upper: Offset,
    ) -> Result<ReadResult, LogError> {
        let (log_start, end) = {
            let i = self.shared.inner.borrow();
            (i.log_start, i.readable_end)
        };
        let offset = offset.0;
        let mut out = ReadResult {
            slices: Vec::new(),
            bytes: 0,
            next_offset: Offset(offset),
            log_start: Offset(log_start),
            readable_end: Offset(end),
        };
        if offset < log_start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end: end,
            });
        }
        let upper = upper.0.min(end);
        if offset >= upper {
            return Ok(out);
        }
        if let Some(hot) = self
            .shared
            .inner
            .borrow()
            .hot
            .read(offset, max_bytes as u64, upper)
        {
            out.slices = hot.slices.into_iter().map(Slice::Memory).collect();
            out.bytes = hot.bytes;
            out.next_offset = Offset(hot.next_offset);
            return Ok(out);
        }
        self.read_cold(offset, max_bytes as u64, upper, &mut out)
            .await?;
        Ok(out)
    }

    async fn read_cold(
        &self,
        offset: i64,
        max_bytes: u64,
        upper: i64,
        out: &mut ReadResult,
    ) -> Result<(), LogError> {
        let mut seg_key = offset;
        loop {
            let (file, handle, start, size, base, path) = {
                let i = self.shared.inner.borrow();
                let Some((_, seg)) = i.segments.range(..=seg_key).next_back() else {
                    return Ok(());
                };
                if offset >= seg.next_offset {
                    // The offset lies past this segment's end (a gap): try the next one.
                    match i.segments.range(seg.base + 1..).next() {
                        Some((b, _)) if *b < upper => {
                            seg_key = *b;
                            continue;
                        }
                        _ => return Ok(()),
                    }
                }
                let rel = (offset - seg.base) as u32;
                let start = seg.index.lookup(rel).position as u64;
                (
                    seg.file.clone(),
                    seg.handle.clone(),
                    start,
                    seg.size,
                    seg.base,
                    super::data_path(&i.dir, seg.base),
                )
            };
            let _ = base;
            let mut scan = Scanner::new(&*file, start, size);
            let mut range: Option<(u64, u64)> = None;
            let mut bytes = 0u64;
            while let Some((b, _)) = scan.next(false).await.map_err(|e| LogError::io(&path, e))? {
                if b.last < offset {
                    continue;
                }
                if b.last >= upper || (bytes > 0 && bytes + b.len as u64 > max_bytes) {
                    break;
                }
                range = Some(match range {
                    Some((s, _)) => (s, b.position + b.len as u64),
                    None => (b.position, b.position + b.len as u64),
                });
                bytes += b.len as u64;
                out.next_offset = Offset(b.last + 1);
            }
            if let Some((s, e)) = range {
                out.slices.push(Slice::File {
                    handle,
                    position: s,
                    len: (e - s) as u32,
                });
                out.bytes = bytes;
            }
            return Ok(());
        }
    }

    /// The greatest record timestamp of the batches below `below` (ListOffsets' max
    /// timestamp), `None` when none has one. Each segment knows its greatest batch timestamp
    /// and where that batch starts; a segment whose greatest batch is at or past `below` (the
    /// high watermark: the last few batches) is skipped, so a record not yet committed never
    /// decides the answer.
    pub fn max_timestamp(&self, below: Offset) -> Option<i64> {
        let i = self.shared.inner.borrow();
        i.segments
            .values()
            .filter(|s| s.max_timestamp >= 0 && s.max_timestamp_batch < below.0)
            .map(|s| s.max_timestamp)
            .max()
    }

    /// Kafka ListOffsets by timestamp: the first offset whose record timestamp is at least
    /// `timestamp_ms`, with that timestamp; `None` if every record is older. Uncompressed
    /// batches are answered per record; compressed ones at batch granularity (the batch's
    /// base offset and max timestamp).
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(Offset, i64)>, LogError> {
        // The scan reads the segment files: bytes still behind the journal go there first.
        self.shared.drain_behind().await;
        let candidates: Vec<i64> = {
            let i = self.shared.inner.borrow();
            i.segments
                .values()
                .filter(|s| s.max_timestamp >= timestamp_ms)
                .map(|s| s.base)
                .collect()
        };
        let log_start = self.shared.inner.borrow().log_start;
        for base in candidates {
            let (file, start, size, path) = {
                let i = self.shared.inner.borrow();
                let Some(seg) = i.segments.get(&base) else {
                    continue;
                };
                let rel = seg.time_index.scan_start(timestamp_ms);
                (
                    seg.file.clone(),
                    seg.index.lookup(rel).position as u64,
                    seg.size,
                    super::data_path(&i.dir, base),
                )
            };
            let mut scan = Scanner::new(&*file, start, size);
            while let Some((b, bytes)) =
                scan.next(true).await.map_err(|e| LogError::io(&path, e))?
            {
                if b.max_timestamp < timestamp_ms || b.last < log_start {
                    continue;
                }
                let bytes = bytes.unwrap_or_default();
                let compressed = batch::BatchHeader::parse(&bytes)
                    .is_some_and(|h| h.compression() != 0 || h.is_log_append_time());
                match batch::first_record_at_or_after(&bytes, timestamp_ms, log_start) {
                    Some((offset, ts)) => return Ok(Some((Offset(offset), ts))),
                    // Batch granularity: the batch's first offset still in the log.
                    None if compressed => {
                        return Ok(Some((Offset(b.base.max(log_start)), b.max_timestamp)))
                    }
                    // Only records below the log start matched: keep looking.
                    None => continue,
                }
            }
        }
        Ok(None)
    }
}
