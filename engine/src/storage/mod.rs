//! IO behind a trait.
//!
//! The segment, index and recovery logic is generic over [`Storage`]; it never names a
//! runtime. Two implementations exist:
//!
//! * [`uring::UringStorage`]: tokio-uring, segment data written with O_DIRECT (or, with
//!   `direct_io = auto` on a filesystem that refuses it, buffered writes), `RWF_DSYNC` writes
//!   for `flush = always`, reads through a second, buffered descriptor so that they hit the
//!   page cache and can be spliced to sockets.
//! * [`memory::MemStorage`]: an in-memory disk that can tear writes, forget everything not yet
//!   synced, fail the Nth write or sync, report ENOSPC, and freeze durability after the Nth
//!   sync to build crash images. Used by the crash tests.
//!
//! The durability contract every implementation keeps: after `write_at(.., dsync = true)` or
//! `sync_data` returns `Ok`, the file's written bytes (and its size) survive a crash; after
//! `sync_dir` returns `Ok`, the directory's entries (creations, removals, renames) survive a
//! crash. Nothing else is promised.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::buf::AlignedBuf;

pub mod memory;
pub mod uring;

/// How a file is opened. Both modes create the file if it is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileMode {
    /// Segment data: block-aligned writes of [`AlignedBuf`]s, O_DIRECT where supported.
    Direct,
    /// Small files (indexes, checkpoints): ordinary buffered writes of any size and offset.
    Buffered,
}

/// A filesystem as the engine sees it.
#[allow(async_fn_in_trait)]
pub trait Storage: Clone + 'static {
    /// An open file.
    type File: StorageFile;

    /// Wall-clock milliseconds since the Unix epoch (virtual in the in-memory storage).
    fn now_ms(&self) -> i64;

    /// Runs `fut` on the current thread's runtime (the log's writer task).
    fn spawn<F: std::future::Future<Output = ()> + 'static>(&self, fut: F);

    /// Waits about `ms` milliseconds (a retry's pause; the in-memory storage only yields,
    /// its time being the test's to move).
    async fn sleep_ms(&self, ms: u64);

    /// Opens `path`, creating it (empty) if missing. The directory entry of a new file is
    /// durable only after [`Storage::sync_dir`] on its parent.
    async fn open(&self, path: &Path, mode: FileMode) -> io::Result<Self::File>;

    /// Creates a directory and its parents.
    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Names of the regular files in a directory (not recursive), in no particular order.
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;

    /// Removes a file. Open handles (and slices) to it keep working.
    async fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Atomically renames a file, replacing `to`.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Makes the directory's entries durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Makes every completed write and every directory entry of the filesystem holding
    /// `path` durable (syncfs): one journal commit for any number of files.
    async fn sync_filesystem(&self, path: &Path) -> io::Result<()>;
}

/// An open file.
#[allow(async_fn_in_trait)]
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: 'static {
    /// Zeroes the padding and writes `buf.padded()` (the written bytes plus zero padding to a
    /// whole block) at `pos`,
    /// which must be block-aligned. With `dsync`, the bytes are durable when this returns
    /// `Ok` (RWF_DSYNC). The buffer is handed back in every case.
    async fn write_at(
        &self,
        buf: AlignedBuf,
        pos: u64,
        dsync: bool,
    ) -> (io::Result<()>, AlignedBuf);

    /// Writes `buf`'s bytes `range` (block-aligned start; the caller zeroed any padding in
    /// it) at `pos` (block-aligned). The buffer is shared, so that two writes of one buffer
    /// can be in flight at once; the durability contract is `write_at`'s.
    async fn write_range_at(
        &self,
        buf: std::rc::Rc<AlignedBuf>,
        range: std::ops::Range<usize>,
        pos: u64,
        dsync: bool,
    ) -> io::Result<()>;

    /// Buffered write of `data` at any `pos` (for [`FileMode::Buffered`] files).
    async fn write_bytes_at(&self, data: Vec<u8>, pos: u64) -> io::Result<()>;

    /// Reads up to `len` bytes at `pos`; shorter only at end of file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;

    /// Makes every completed write durable (fdatasync).
    async fn sync_data(&self) -> io::Result<()>;

    /// Current file size in bytes.
    async fn len(&self) -> io::Result<u64>;

    /// Reserves the blocks of `pos..pos + len` and extends the file to cover them (they
    /// read as zeros), so that later writes there neither extend the file nor allocate
    /// (fallocate). Not durable until a sync.
    async fn allocate(&self, pos: u64, len: u64) -> io::Result<()>;

    /// Truncates or extends the file to `len` bytes (not durable until a sync).
    async fn set_len(&self, len: u64) -> io::Result<()>;

    /// A handle that read slices keep: it stays readable after the file is removed, and can
    /// be sent to another thread.
    fn handle(&self) -> io::Result<Arc<dyn SegmentHandle>>;
}

/// What a cold read slice holds on to: a readable view of a segment file that outlives
/// retention deleting the file.
pub trait SegmentHandle: Send + Sync + fmt::Debug {
    /// A descriptor to splice/sendfile from, when the storage has one.
    fn raw_fd(&self) -> Option<RawFd>;

    /// Blocking positional read (tools and tests; the broker splices from `raw_fd`).
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize>;
}
