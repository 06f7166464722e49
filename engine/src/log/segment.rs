//! One segment (data file plus its two indexes), the batch scanner over a segment file, and
//! the hot cache of recently written bytes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{BatchHeader, HEADER_BYTES};
use crate::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::storage::{SegmentHandle, StorageFile};

/// Bytes read per scanner refill.
const SCAN_CHUNK_BYTES: usize = 256 * 1024;

/// File name of a segment's file with extension `ext` (`log`, `index`, `timeindex`).
pub(crate) fn segment_path(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// One segment of the log.
#[derive(Debug)]
pub(crate) struct Segment<F> {
    pub base: i64,
    pub file: Rc<F>,
    pub handle: Arc<dyn SegmentHandle>,
    pub index_file: Rc<F>,
    pub time_file: Rc<F>,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Bytes of complete, valid batches.
    pub size: u64,
    /// Offset after the last batch (== base when empty).
    pub next_offset: i64,
    /// Greatest batch max timestamp (-1 when empty) and the base offset of that batch.
    pub max_timestamp: i64,
    pub max_timestamp_batch: i64,
    /// Bytes appended since the last offset index entry.
    pub bytes_since_index: u64,
    /// When the segment's first append happened (for `segment_ms`).
    pub roll_base_ms: Option<i64>,
}

impl<F: StorageFile> Segment<F> {
    /// Records a batch of `len` bytes at `position` that has been written, adding index
    /// entries every `index_interval_bytes`.
    pub fn on_batch(&mut self, h: &BatchMeta, index_interval_bytes: u32) {
        debug_assert_eq!(h.position, self.size);
        debug_assert!(h.base >= self.next_offset);
        if self.bytes_since_index >= index_interval_bytes as u64 {
            self.add_index_entries(h.base, h.position);
        }
        self.bytes_since_index += h.len as u64;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.max_timestamp_batch = h.base;
        }
        self.size = h.position + h.len as u64;
        self.next_offset = h.last + 1;
    }

    fn add_index_entries(&mut self, base: i64, position: u64) {
        let rel = (base - self.base) as u32;
        if self.index.entries.last().is_none_or(|l| l.rel_offset < rel) && position > 0 {
            self.index.push(OffsetEntry {
                rel_offset: rel,
                position: position as u32,
            });
        }
        self.bytes_since_index = 0;
        self.push_time_entry();
    }

    /// Adds a time index entry for the current max timestamp if it rose.
    pub fn push_time_entry(&mut self) {
        if self.max_timestamp >= 0 {
            self.time_index.maybe_push(TimeEntry {
                timestamp_ms: self.max_timestamp,
                rel_offset: (self.max_timestamp_batch - self.base) as u32,
            });
        }
    }
}

/// Where a batch sits and what the log needs to know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    pub base: i64,
    pub last: i64,
    pub max_timestamp: i64,
    /// Byte position in its segment file.
    pub position: u64,
    pub len: u32,
}

impl BatchMeta {
    pub fn new(h: &BatchHeader, position: u64) -> Self {
        BatchMeta {
            base: h.base_offset,
            last: h.last_offset(),
            max_timestamp: h.max_timestamp,
            position,
            len: h.total_bytes,
        }
    }
}

/// Walks the batches of a segment file from a position, reading in large chunks.
#[derive(Debug)]
pub(crate) struct Scanner<'a, F> {
    file: &'a F,
    pos: u64,
    end: u64,
    buf: Bytes,
    buf_pos: u64,
}

impl<'a, F: StorageFile> Scanner<'a, F> {
    /// A scanner over `start..end` of `file`.
    pub fn new(file: &'a F, start: u64, end: u64) -> Self {
        Scanner {
            file,
            pos: start,
            end,
            buf: Bytes::new(),
            buf_pos: start,
        }
    }

    async fn ensure(&mut self, len: usize) -> std::io::Result<bool> {
        if self.pos + len as u64 > self.end {
            return Ok(false);
        }
        let have = (self.buf_pos + self.buf.len() as u64).saturating_sub(self.pos);
        if self.pos >= self.buf_pos && have >= len as u64 {
            return Ok(true);
        }
        let want = len
            .max(SCAN_CHUNK_BYTES)
            .min((self.end - self.pos) as usize);
        self.buf = self.file.read_at(self.pos, want).await?;
        self.buf_pos = self.pos;
        Ok(self.buf.len() >= len)
    }

    /// The next batch's header (and, with `full`, its bytes), or `None` at the end of the
    /// range or at bytes that cannot be a batch header (zeros, a torn tail).
    pub async fn next(
        &mut self,
        full: bool,
    ) -> std::io::Result<Option<(BatchMeta, Option<Bytes>)>> {
        if !self.ensure(HEADER_BYTES).await? {
            return Ok(None);
        }
        let at = (self.pos - self.buf_pos) as usize;
        let Some(h) = BatchHeader::parse(&self.buf[at..]) else {
            return Ok(None);
        };
        if h.magic != crate::batch::MAGIC_V2
            || (h.total_bytes as usize) < HEADER_BYTES
            || h.last_offset_delta < 0
            || self.pos + h.total_bytes as u64 > self.end
        {
            return Ok(None);
        }
        let meta = BatchMeta::new(&h, self.pos);
        let bytes = if full {
            if !self.ensure(h.total_bytes as usize).await? {
                return Ok(None);
            }
            let at = (self.pos - self.buf_pos) as usize;
            Some(self.buf.slice(at..at + h.total_bytes as usize))
        } else {
            None
        };
        self.pos += h.total_bytes as u64;
        Ok(Some((meta, bytes)))
    }
}

/// Recently written bytes, kept for reads that need no disk IO.
#[derive(Debug, Default)]
pub(crate) struct HotCache {
    chunks: VecDeque<HotChunk>,
    bytes: usize,
}

/// The bytes of one completed write and the batches it carried.
#[derive(Debug)]
struct HotChunk {
    file_pos: u64,
    data: Bytes,
    /// Memory this chunk holds (its buffer's capacity when shared).
    charge: usize,
    batches: Vec<BatchMeta>,
}

/// A read's result pieces.
pub(crate) struct HotRead {
    pub slices: Vec<Bytes>,
    pub bytes: u64,
    pub next_offset: i64,
}

impl HotCache {
    /// Adds a completed write, evicting the oldest chunks beyond `bytes_max` (the newest
    /// chunk always stays).
    pub fn push(
        &mut self,
        file_pos: u64,
        data: Bytes,
        charge: usize,
        batches: Vec<BatchMeta>,
        bytes_max: usize,
    ) {
        if batches.is_empty() {
            return;
        }
        self.bytes += charge;
        self.chunks.push_back(HotChunk {
            file_pos,
            data,
            charge,
            batches,
        });
        while self.bytes > bytes_max && self.chunks.len() > 1 {
            if let Some(c) = self.chunks.pop_front() {
                self.bytes -= c.charge;
            }
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
    }

    /// The first offset served from memory.
    pub fn first_offset(&self) -> Option<i64> {
        self.chunks
            .front()
            .and_then(|c| c.batches.first())
            .map(|b| b.base)
    }

    /// Whole batches from the one holding `offset`, ending below `upper`, at most `max_bytes`
    /// (but at least one batch). `None` if `offset` is not in memory.
    pub fn read(&self, offset: i64, max_bytes: u64, upper: i64) -> Option<HotRead> {
        if self.first_offset()? > offset {
            return None;
        }
        let ci = self
            .chunks
            .partition_point(|c| c.batches.last().is_some_and(|b| b.last < offset));
        let mut out = HotRead {
            slices: Vec::new(),
            bytes: 0,
            next_offset: offset,
        };
        let mut first = true;
        for c in self.chunks.iter().skip(ci) {
            let bi = if first {
                c.batches.partition_point(|b| b.last < offset)
            } else {
                0
            };
            first = false;
            let mut run: Option<(u64, u64)> = None;
            let mut stop = false;
            for b in &c.batches[bi..] {
                if b.last >= upper || (out.bytes > 0 && out.bytes + b.len as u64 > max_bytes) {
                    stop = true;
                    break;
                }
                run = match run {
                    Some((s, e)) if e == b.position => Some((s, e + b.len as u64)),
                    Some((s, e)) => {
                        out.slices.push(c.slice(s, e));
                        Some((b.position, b.position + b.len as u64))
                    }
                    None => Some((b.position, b.position + b.len as u64)),
                };
                out.bytes += b.len as u64;
                out.next_offset = b.last + 1;
            }
            if let Some((s, e)) = run {
                out.slices.push(c.slice(s, e));
            }
            if stop {
                break;
            }
        }
        Some(out)
    }
}

impl HotChunk {
    fn slice(&self, start: u64, end: u64) -> Bytes {
        self.data
            .slice((start - self.file_pos) as usize..(end - self.file_pos) as usize)
    }
}
