//! Raw io_uring O_DIRECT IO: the "disk without a broker" each engine figure is divided by.
//!
//! The baselines use the same ring the engine uses (tokio-uring's, in the same thread), the
//! same operation (`IORING_OP_WRITE` on an `O_DIRECT` descriptor, optionally with
//! `RWF_DSYNC`), and block-aligned [`AlignedBuf`]s, but none of the engine's work: no
//! validation, no copy, no offsets, no index. Whatever the engine loses against these numbers
//! is its own overhead, not the disk's.
//!
//! The write op is built here rather than borrowed from the engine's storage layer, so that a
//! slow path in the engine's IO code would show up as a ratio instead of being hidden in the
//! baseline.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use io_uring::{cqueue, opcode, types};
use tern_engine::buf::AlignedBuf;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::fs::{File, OpenOptions};
use tokio_uring::{InFlightOneshot, OneshotOutputTransform, UnsubmittedOneshot};

/// How a durable raw write is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `IORING_OP_WRITE`, then `IORING_OP_FSYNC` with `DATASYNC` (fdatasync).
    WriteThenFdatasync,
    /// One `IORING_OP_WRITE` with `RWF_DSYNC` (what the engine does under `flush = always`).
    RwfDsync,
}

/// A file opened `O_DIRECT` for the baselines.
#[derive(Debug)]
pub struct RawFile {
    file: Rc<File>,
    path: PathBuf,
}

/// What an in-flight write owns until its completion: the buffer and the descriptor.
#[derive(Debug)]
pub struct WriteData {
    _file: Rc<File>,
    /// The buffer written, handed back for reuse.
    pub buf: AlignedBuf,
}

/// Turns a write completion into a byte count.
#[derive(Debug)]
pub struct WriteDone;

impl OneshotOutputTransform for WriteDone {
    type Output = (io::Result<usize>, WriteData);
    type StoredData = WriteData;

    fn transform_oneshot_output(self, data: WriteData, cqe: cqueue::Entry) -> Self::Output {
        let res = cqe.result();
        if res >= 0 {
            (Ok(res as usize), data)
        } else {
            (Err(io::Error::from_raw_os_error(-res)), data)
        }
    }
}

/// A submitted write; await it for `(bytes written, buffer)`.
pub type InFlightWrite = InFlightOneshot<WriteData, WriteDone>;

impl RawFile {
    /// Creates (truncating) `path` with `O_DIRECT`.
    pub async fn create(path: &Path) -> anyhow::Result<RawFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .await
            .with_context(|| format!("{}: open with O_DIRECT", path.display()))?;
        Ok(RawFile {
            file: Rc::new(file),
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing file read-only through the page cache (for the cold-read baseline).
    pub async fn open_buffered(path: &Path) -> anyhow::Result<RawFile> {
        let file = OpenOptions::new()
            .read(true)
            .open(path)
            .await
            .with_context(|| format!("{}: open", path.display()))?;
        Ok(RawFile {
            file: Rc::new(file),
            path: path.to_path_buf(),
        })
    }

    /// Submits a write of `buf.padded()` at `pos` now (so several can be in flight).
    /// `pos` must be block-aligned.
    pub fn submit_write(&self, buf: AlignedBuf, pos: u64, dsync: bool) -> InFlightWrite {
        let len = buf.padded_len() as u32;
        let entry = opcode::Write::new(types::Fd(self.file.as_raw_fd()), buf.as_ptr(), len)
            .offset(pos)
            .rw_flags(if dsync { libc::RWF_DSYNC } else { 0 })
            .build();
        let data = WriteData {
            _file: Rc::clone(&self.file),
            buf,
        };
        let inflight = UnsubmittedOneshot::new(data, WriteDone, entry).submit();
        // The same eager submission the engine uses, so the baseline is not handicapped.
        tern_engine::storage::uring::submit_now();
        inflight
    }

    /// Awaits a submitted write and checks it was complete; returns the buffer.
    pub async fn finish(&self, write: InFlightWrite, pos: u64) -> anyhow::Result<AlignedBuf> {
        let (res, data) = write.await;
        let n = res.with_context(|| format!("{}: write at {pos}", self.path.display()))?;
        if n != data.buf.padded_len() {
            bail!(
                "{}: short write at {pos}: {n} of {} bytes",
                self.path.display(),
                data.buf.padded_len()
            );
        }
        Ok(data.buf)
    }

    /// fdatasync.
    pub async fn sync_data(&self) -> anyhow::Result<()> {
        self.file
            .sync_data()
            .await
            .with_context(|| format!("{}: fdatasync", self.path.display()))
    }

    /// Reads the whole file sequentially in `chunk_bytes` reads, one in flight; returns the
    /// bytes read.
    pub async fn read_all(&self, chunk_bytes: usize) -> anyhow::Result<u64> {
        let mut buf = Vec::with_capacity(chunk_bytes);
        let mut pos = 0u64;
        loop {
            buf.clear();
            let (res, slice) = self.file.read_at(buf.slice(0..chunk_bytes), pos).await;
            buf = slice.into_inner();
            let n = res.with_context(|| format!("{}: read at {pos}", self.path.display()))?;
            if n == 0 {
                return Ok(pos);
            }
            pos += n as u64;
        }
    }
}

/// A buffer of `len` bytes (a whole number of blocks) filled with a non-zero pattern.
pub fn pattern_buf(len: usize, seed: u8) -> AlignedBuf {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) | 1)
        .collect();
    let mut buf = AlignedBuf::with_capacity(len);
    buf.extend_from_slice(&data);
    buf
}

/// Sequential `O_DIRECT` writes of whole blocks into a fresh file, continued across calls
/// so that rounds of raw and engine work can alternate (spreading the disk's drift evenly).
#[derive(Debug)]
pub struct SequentialWriter {
    file: RawFile,
    block_bytes: usize,
    pos: u64,
    free: Vec<AlignedBuf>,
}

impl SequentialWriter {
    /// Creates (truncating) `path`; writes will be `block_bytes` long.
    pub async fn create(path: &Path, block_bytes: usize) -> anyhow::Result<SequentialWriter> {
        Ok(SequentialWriter {
            file: RawFile::create(path).await?,
            block_bytes,
            pos: 0,
            free: Vec::new(),
        })
    }

    /// Writes `bytes` more (whole blocks) with up to `depth` writes in flight; returns the
    /// time until the last one completed.
    pub async fn write(&mut self, bytes: u64, depth: usize) -> anyhow::Result<Duration> {
        let depth = depth.max(1);
        while self.free.len() < depth {
            self.free
                .push(pattern_buf(self.block_bytes, self.free.len() as u8));
        }
        let end = self.pos + bytes;
        let mut in_flight: VecDeque<(InFlightWrite, u64)> = VecDeque::with_capacity(depth);
        let start = Instant::now();
        while self.pos < end || !in_flight.is_empty() {
            while in_flight.len() < depth && self.pos < end {
                let Some(buf) = self.free.pop() else { break };
                in_flight.push_back((self.file.submit_write(buf, self.pos, false), self.pos));
                self.pos += self.block_bytes as u64;
            }
            if let Some((w, at)) = in_flight.pop_front() {
                self.free.push(self.file.finish(w, at).await?);
            }
        }
        Ok(start.elapsed())
    }

    /// fdatasync and close the file (not part of any timing). The file stays: deleting
    /// gigabytes on a filesystem mounted with `discard` stalls the disk for a while, so
    /// files are removed only when the whole run is over.
    pub async fn finish(self) -> anyhow::Result<()> {
        self.file.sync_data().await
    }
}

/// Durable `O_DIRECT` writes of one aligned block at a time into a fresh file, continued
/// across calls (for interleaved rounds).
#[derive(Debug)]
pub struct DurableWriter {
    file: RawFile,
    mode: Durability,
    pos: u64,
    buf: Option<AlignedBuf>,
}

impl DurableWriter {
    /// Creates (truncating) `path`; each write will be `block_bytes` long.
    pub async fn create(
        path: &Path,
        block_bytes: usize,
        mode: Durability,
    ) -> anyhow::Result<DurableWriter> {
        Ok(DurableWriter {
            file: RawFile::create(path).await?,
            mode,
            pos: 0,
            buf: Some(pattern_buf(block_bytes, 3)),
        })
    }

    /// `count` durable writes, one at a time, each at the next aligned offset; records the
    /// latency of each (nanoseconds) when `hist` is given.
    pub async fn write(
        &mut self,
        count: usize,
        mut hist: Option<&mut Histogram<u64>>,
    ) -> anyhow::Result<()> {
        let dsync = self.mode == Durability::RwfDsync;
        for _ in 0..count {
            let Some(buf) = self.buf.take() else {
                bail!("{}: a previous write failed", self.file.path.display());
            };
            let len = buf.padded_len() as u64;
            let start = Instant::now();
            let buf = self
                .file
                .finish(self.file.submit_write(buf, self.pos, dsync), self.pos)
                .await?;
            if self.mode == Durability::WriteThenFdatasync {
                self.file.sync_data().await?;
            }
            if let Some(h) = hist.as_deref_mut() {
                h.saturating_record(start.elapsed().as_nanos() as u64);
            }
            self.buf = Some(buf);
            self.pos += len;
        }
        Ok(())
    }
}
