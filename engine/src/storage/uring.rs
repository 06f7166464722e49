//! [`Storage`] on tokio-uring: the implementation the broker runs on.
//!
//! Owns every file descriptor of the engine's on-disk state. Each [`UringFile`] opened with
//! [`FileMode::Direct`] holds two descriptors of the same path:
//!
//! * a **write descriptor** (read+write, `O_DIRECT` unless the filesystem refuses it and
//!   [`DirectIo`] allows the fallback). Segment writes are whole [`AlignedBuf`] blocks at
//!   block-aligned offsets, so they bypass the page cache and never double-buffer.
//! * a **read descriptor** (read-only, buffered). Consumers mostly read what was just
//!   written; through the page cache those reads are cheap, and only a page-cache-backed
//!   descriptor can be spliced/sent to a socket without copying. [`StorageFile::handle`]
//!   duplicates this descriptor, so read slices keep the inode alive after retention removes
//!   the file. A direct write invalidates the page-cache pages it covers, so buffered reads
//!   after a completed direct write see the new bytes.
//!
//! [`FileMode::Buffered`] files (indexes, checkpoints) have one ordinary read+write
//! descriptor that serves both roles.
//!
//! Durability: `write_at(.., dsync = true)` submits a single `IORING_OP_WRITE` with
//! `RWF_DSYNC`, which makes that write's bytes, and the metadata needed to read them back
//! (the file size), durable before it completes: one operation instead of a write followed by
//! an `fdatasync`, which saves a round trip on the latency-critical `flush = always` path.
//! Earlier writes made without `dsync` need [`StorageFile::sync_data`] (fdatasync). Both also
//! hold when the fallback to buffered writes is active (`RWF_DSYNC` works on buffered writes).
//!
//! Invariants: an in-flight write owns its [`AlignedBuf`] and an `Rc` of the descriptor it
//! writes to, so dropping the future (cancellation) can neither free the memory nor close (and
//! let the kernel reuse) the descriptor while the kernel still uses them; the tokio-uring
//! driver keeps both until the completion arrives. Every async method must run inside a
//! tokio-uring runtime (`tokio_uring::start`); calling one elsewhere is a programming error
//! and panics inside tokio-uring.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// tokio-uring pushes operations onto its ring but tells the kernel about them only when the
/// thread is about to sleep (or the submission queue is full): on a busy shard every write
/// would wait for all other ready tasks to run first. So the runtime is created through
/// [`new_runtime`], which finds its ring's descriptor, and a segment write is submitted with
/// `io_uring_enter` as soon as it is pushed.
static RING_START: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    static RING_FD: std::cell::Cell<Option<RawFd>> = const { std::cell::Cell::new(None) };
}

/// The io_uring descriptors of this process.
fn ring_fds() -> std::collections::BTreeSet<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Default::default();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:[io_uring]")
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// A tokio-uring runtime for the calling thread whose segment writes are submitted at once.
/// (Without it, writes still work; they are submitted when the thread goes idle.)
pub fn new_runtime() -> io::Result<tokio_uring::Runtime> {
    let _one_at_a_time = RING_START.lock().unwrap_or_else(|p| p.into_inner());
    let before = ring_fds();
    let rt = tokio_uring::Runtime::new(&tokio_uring::builder())?;
    let new: Vec<RawFd> = ring_fds().difference(&before).copied().collect();
    RING_FD.with(|r| r.set(if new.len() == 1 { Some(new[0]) } else { None }));
    Ok(rt)
}

/// Runs `f` on a runtime from [`new_runtime`]; panics like `tokio_uring::start` if io_uring
/// is unavailable (tests and tools only; the broker reports the error).
pub fn start<F: std::future::Future>(f: F) -> F::Output {
    match new_runtime() {
        Ok(rt) => rt.block_on(f),
        Err(e) => panic!("cannot create an io_uring runtime: {e}"),
    }
}

/// Runs `f`, telling the kernel about the operation it pushes on its first poll at once
/// instead of when the runtime next parks (tokio-uring submits only then).
async fn eager<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut first = true;
    std::future::poll_fn(|cx| {
        let r = f.as_mut().poll(cx);
        if std::mem::take(&mut first) && r.is_pending() {
            submit_now();
        }
        r
    })
    .await
}

/// Tells the kernel about every operation pushed so far on this thread's ring.
pub fn submit_now() {
    if let Some(fd) = RING_FD.with(|r| r.get()) {
        // SAFETY: io_uring_enter on our own ring with no argument pointer; the kernel reads
        // the submission queue tail that tokio-uring published when it pushed the entry.
        unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                fd,
                u32::MAX,
                0u32,
                0u32,
                std::ptr::null::<libc::c_void>(),
                0usize,
            );
        }
    }
}

use bytes::Bytes;
use io_uring::{cqueue, opcode, types};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::fs::{File, OpenOptions};
use tokio_uring::{OneshotOutputTransform, UnsubmittedOneshot};

use super::{FileMode, SegmentHandle, Storage, StorageFile};
use crate::buf::{align_down, AlignedBuf};

/// Permission bits of files the engine creates.
const FILE_MODE: u32 = 0o644;

/// Largest single read or write submitted to the ring: the SQE length field is 32 bits, so
/// longer transfers are split. A whole number of blocks, so direct writes stay aligned.
const MAX_CHUNK: usize = 1 << 30;

/// Reads of a direct file at least this long use its `O_DIRECT` descriptor: the file's
/// data is not in the page cache (it was written around it), and a cold buffered read
/// through io_uring advances one readahead window per retry (~0.3 GB/s here, against
/// ~1.7 GB/s direct), which is what recovery and journal replay read at.
const DIRECT_READ_MIN: usize = 64 << 10;

/// Whether segment files are opened with `O_DIRECT` (the `direct_io` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectIo {
    /// Always; opening fails with a clear error on a filesystem that refuses it (tmpfs).
    On,
    /// Where the filesystem supports it; elsewhere warn once and use buffered writes.
    Auto,
    /// Never: buffered writes, made durable with `RWF_DSYNC` / fdatasync.
    Off,
}

/// The tokio-uring filesystem. Cheap to clone; clones share the "already warned" flag.
#[derive(Debug, Clone)]
pub struct UringStorage {
    direct: DirectIo,
    /// Set once the `DirectIo::Auto` fallback has been logged, so it is logged once.
    warned: Arc<AtomicBool>,
}

impl UringStorage {
    /// A storage opening segment files according to `direct`.
    pub fn new(direct: DirectIo) -> Self {
        Self {
            direct,
            warned: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The `direct_io` setting this storage was built with.
    pub fn direct(&self) -> DirectIo {
        self.direct
    }

    /// Decides what to do after `open(path, O_DIRECT)` failed with EINVAL: `Ok` means fall
    /// back to a buffered descriptor, `Err` is the error to report.
    fn direct_refused(&self, path: &Path) -> io::Result<()> {
        match self.direct {
            DirectIo::On => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: the filesystem refuses O_DIRECT (e.g. tmpfs); put log.dirs on ext4/xfs, \
                     or set direct_io = \"auto\" to fall back to buffered writes + fdatasync",
                    path.display()
                ),
            )),
            DirectIo::Auto | DirectIo::Off => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        path = %path.display(),
                        "the filesystem refuses O_DIRECT (e.g. tmpfs); direct_io = \"auto\": \
                         falling back to buffered writes + fdatasync for segment files"
                    );
                }
                Ok(())
            }
        }
    }
}

/// Opens `path` read+write, creating it if missing, with `flags` added.
async fn open_rw(path: &Path, flags: i32) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(flags)
        .open(path)
        .await
}

impl Storage for UringStorage {
    type File = UringFile;

    fn spawn<F: std::future::Future<Output = ()> + 'static>(&self, fut: F) {
        drop(tokio_uring::spawn(fut));
    }

    async fn sleep_ms(&self, ms: u64) {
        // tokio-uring's runtime is a tokio runtime with its timer enabled.
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }

    fn now_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            // A clock before 1970: report it as negative rather than failing.
            Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        }
    }

    async fn open(&self, path: &Path, mode: FileMode) -> io::Result<UringFile> {
        match mode {
            FileMode::Buffered => {
                let file = Rc::new(open_rw(path, 0).await?);
                Ok(UringFile {
                    write: Rc::clone(&file),
                    read: file,
                    direct: false,
                })
            }
            FileMode::Direct => {
                let (write, direct) = if self.direct == DirectIo::Off {
                    (open_rw(path, 0).await?, false)
                } else {
                    match open_rw(path, libc::O_DIRECT).await {
                        Ok(file) => (file, true),
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                            self.direct_refused(path)?;
                            (open_rw(path, 0).await?, false)
                        }
                        Err(e) => return Err(e),
                    }
                };
                // The file exists now (the write descriptor created it).
                let read = OpenOptions::new().read(true).open(path).await?;
                Ok(UringFile {
                    write: Rc::new(write),
                    read: Rc::new(read),
                    direct,
                })
            }
        }
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        tokio_uring::fs::create_dir_all(path).await
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        // io_uring has no getdents; directories are listed at startup and by retention only.
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            // A name that is not UTF-8 cannot be one of ours: skip it.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        tokio_uring::fs::remove_file(path).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        tokio_uring::fs::rename(from, to).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // Through the ring: a directory fsync waits for a journal commit, which must not
        // block the shard thread.
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)
            .await?;
        dir.sync_all().await
    }

    async fn sync_filesystem(&self, path: &Path) -> io::Result<()> {
        // io_uring has no syncfs, and it waits for a journal commit and a device flush: a
        // short-lived thread keeps the shard's thread serving meanwhile.
        let path = path.to_path_buf();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("tern-syncfs".into())
            .spawn(move || {
                let r = std::fs::File::open(&path).and_then(|dir| {
                    // SAFETY: syncfs on a descriptor we own, open for the call's duration.
                    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
                    match rc {
                        0 => Ok(()),
                        _ => Err(io::Error::last_os_error()),
                    }
                });
                let _ = tx.send(r);
            })?;
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("syncfs thread ended without answering")))
    }
}

/// An open file of [`UringStorage`]. See the module documentation for its descriptors.
#[derive(Debug)]
pub struct UringFile {
    /// Where writes, `sync_data`, `len` and `set_len` go (O_DIRECT when `direct`).
    write: Rc<File>,
    /// Buffered, read-only (for `Direct` files): `read_at` and `handle`. The same descriptor
    /// as `write` for `Buffered` files.
    read: Rc<File>,
    /// Whether `write` really has O_DIRECT (false after the `Auto` fallback).
    direct: bool,
}

impl UringFile {
    /// True when writes bypass the page cache (O_DIRECT is in effect).
    pub fn is_direct(&self) -> bool {
        self.direct
    }
}

/// What an in-flight `IORING_OP_WRITE` owns: the memory the kernel reads from and the
/// descriptor it writes to.
struct WriteData {
    /// Held, never read: keeps the descriptor open while the kernel writes to it.
    _file: Rc<File>,
    buf: Rc<AlignedBuf>,
}

/// Turns the completion of a write into its byte count, handing the owned data back.
struct WriteDone;

impl OneshotOutputTransform for WriteDone {
    type Output = (io::Result<usize>, WriteData);
    type StoredData = WriteData;

    fn transform_oneshot_output(self, data: WriteData, cqe: cqueue::Entry) -> Self::Output {
        let res = cqe.result();
        let res = if res >= 0 {
            Ok(res as usize)
        } else {
            Err(io::Error::from_raw_os_error(-res))
        };
        (res, data)
    }
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// `fstat(fd).st_size`.
fn fstat_size(fd: RawFd) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fd is an open descriptor owned by the caller; st is valid for writes.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it filled st.
    let st = unsafe { st.assume_init() };
    u64::try_from(st.st_size).map_err(|_| invalid_input(format!("negative size {}", st.st_size)))
}

impl UringFile {
    /// `read_at` through the `O_DIRECT` descriptor: the covering block-aligned range is
    /// read into a block-aligned buffer and the asked-for bytes are returned (fewer at the
    /// end of the file).
    async fn read_direct(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let block = crate::buf::BLOCK_BYTES as u64;
        let start = align_down(pos);
        let end = (pos + len as u64).div_ceil(block) * block;
        let total = (end - start) as usize;
        let mut buf: Vec<u8> = Vec::with_capacity(total + block as usize);
        // Zeros before the aligned start keep every byte of the Vec initialised.
        let lead = buf.as_ptr().align_offset(block as usize);
        buf.resize(lead, 0);
        let mut done = 0usize;
        while done < total {
            let n = (total - done).min(MAX_CHUNK);
            let from = lead + done;
            let (res, slice) = self
                .write
                .read_at(buf.slice(from..from + n), start + done as u64)
                .await;
            buf = slice.into_inner();
            match res? {
                0 => break, // end of file
                k => done += k,
            }
            if !done.is_multiple_of(block as usize) {
                break; // a short read ends at the end of the file
            }
        }
        let skip = (pos - start) as usize;
        let have = done.saturating_sub(skip).min(len);
        let data = Bytes::from(buf);
        Ok(Bytes::slice(&data, lead + skip..lead + skip + have))
    }
}

impl StorageFile for UringFile {
    async fn write_at(
        &self,
        buf: AlignedBuf,
        pos: u64,
        dsync: bool,
    ) -> (io::Result<()>, AlignedBuf) {
        let mut buf = buf;
        buf.zero_padding();
        let total = buf.padded_len();
        let shared = Rc::new(buf);
        let r = self
            .write_range_at(shared.clone(), 0..total, pos, dsync)
            .await;
        // Every operation holding a clone has completed (or was never submitted).
        match Rc::try_unwrap(shared) {
            Ok(buf) => (r, buf),
            Err(shared) => {
                let mut copy = AlignedBuf::with_capacity(shared.capacity());
                copy.extend_from_slice(shared.as_slice());
                (r, copy)
            }
        }
    }

    async fn write_range_at(
        &self,
        buf: Rc<AlignedBuf>,
        range: std::ops::Range<usize>,
        pos: u64,
        dsync: bool,
    ) -> io::Result<()> {
        let total = range.len();
        if align_down(pos) != pos || align_down(range.start as u64) != range.start as u64 {
            return Err(invalid_input(format!(
                "write at offset {pos} is not block-aligned"
            )));
        }
        if range.end > buf.capacity() || pos.checked_add(total as u64).is_none() {
            return Err(invalid_input(format!(
                "write of {total} bytes at {pos} is out of range"
            )));
        }
        let flags = if dsync { libc::RWF_DSYNC } else { 0 };
        let fd = types::Fd(self.write.as_raw_fd());
        let mut data = WriteData {
            _file: Rc::clone(&self.write),
            buf,
        };
        let mut done = 0usize;
        while done < total {
            let chunk = (total - done).min(MAX_CHUNK);
            // SAFETY: range.start + done < range.end <= capacity, so the pointer stays inside
            // the allocation, and the kernel reads `chunk` bytes, all before range.end.
            let ptr = unsafe { data.buf.as_ptr().add(range.start + done) };
            let entry = opcode::Write::new(fd, ptr, chunk as u32)
                .offset(pos + done as u64)
                .rw_flags(flags)
                .build();
            // `data` keeps the buffer and the descriptor alive until the completion, even if
            // this future is dropped meanwhile.
            let inflight = UnsubmittedOneshot::new(data, WriteDone, entry).submit();
            submit_now();
            let (res, back) = inflight.await;
            data = back;
            match res? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("wrote 0 of {} bytes at {}", total - done, pos + done as u64),
                    ))
                }
                n => {
                    done += n;
                    if self.direct && done < total && align_down(done as u64) != done as u64 {
                        return Err(io::Error::other(format!(
                            "short O_DIRECT write: {done} of {total} bytes at {pos}, \
                             the remainder is not block-aligned"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    async fn write_bytes_at(&self, data: Vec<u8>, pos: u64) -> io::Result<()> {
        let (res, _) = self.write.write_all_at(data, pos).await;
        res
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        if pos.checked_add(len as u64).is_none() {
            return Err(invalid_input(format!(
                "read_at of {len} bytes at {pos} overflows"
            )));
        }
        if self.direct && len >= DIRECT_READ_MIN {
            return self.read_direct(pos, len).await;
        }
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let filled = buf.len();
            let end = len.min(filled + MAX_CHUNK);
            // tokio-uring reads into the slice and extends the Vec's length by what it read.
            let (res, slice) = self
                .read
                .read_at(buf.slice(filled..end), pos + filled as u64)
                .await;
            buf = slice.into_inner();
            if res? == 0 {
                break; // end of file
            }
        }
        Ok(Bytes::from(buf))
    }

    async fn sync_data(&self) -> io::Result<()> {
        eager(self.write.sync_data()).await
    }

    async fn len(&self) -> io::Result<u64> {
        fstat_size(self.write.as_raw_fd())
    }

    async fn allocate(&self, pos: u64, len: u64) -> io::Result<()> {
        eager(self.write.fallocate(pos, len, 0)).await
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        let len = libc::off_t::try_from(len)
            .map_err(|_| invalid_input(format!("set_len({len}) is beyond the largest offset")))?;
        loop {
            // SAFETY: the descriptor is open for as long as self.
            if unsafe { libc::ftruncate(self.write.as_raw_fd(), len) } == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    fn handle(&self) -> io::Result<Arc<dyn SegmentHandle>> {
        // SAFETY: `self.read` owns the descriptor and outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(self.read.as_raw_fd()) };
        Ok(Arc::new(UringHandle {
            fd: fd.try_clone_to_owned()?,
        }))
    }
}

/// A duplicate of a file's buffered descriptor: keeps the inode readable after removal.
#[derive(Debug)]
pub struct UringHandle {
    fd: OwnedFd,
}

impl SegmentHandle for UringHandle {
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            let off = pos
                .checked_add(filled as u64)
                .and_then(|o| libc::off_t::try_from(o).ok())
                .ok_or_else(|| invalid_input(format!("read_at offset {pos} is out of range")))?;
            let rest = &mut buf[filled..];
            // SAFETY: `rest` is valid for writes of rest.len() bytes; the fd is owned by self.
            let n = unsafe {
                libc::pread(
                    self.fd.as_raw_fd(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    off,
                )
            };
            match n {
                0 => break, // end of file
                n if n > 0 => filled += n as usize,
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        }
        Ok(filled)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::buf::BLOCK_BYTES;
    use std::path::PathBuf;

    /// Whether the filesystem holding `path` is tmpfs.
    #[allow(clippy::unnecessary_cast)] // f_type's integer type differs between architectures
    fn is_tmpfs(path: &Path) -> bool {
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: c is a valid C string, st is valid for writes.
        if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
            return false;
        }
        // SAFETY: statfs succeeded.
        let st = unsafe { st.assume_init() };
        st.f_type as i64 == libc::TMPFS_MAGIC as i64
    }

    /// A scratch directory on a real (O_DIRECT-capable) filesystem: /tmp unless it is tmpfs,
    /// else under the crate directory (the cwd of unit tests).
    fn scratch() -> tempfile::TempDir {
        let tmp = std::env::temp_dir();
        let dir = if is_tmpfs(&tmp) {
            tempfile::tempdir_in(".")
        } else {
            tempfile::tempdir_in(tmp)
        };
        dir.unwrap()
    }

    fn has_o_direct(fd: RawFd) -> bool {
        // SAFETY: F_GETFL only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert!(flags >= 0, "{}", io::Error::last_os_error());
        flags & libc::O_DIRECT != 0
    }

    fn aligned(data: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::with_capacity(data.len());
        b.extend_from_slice(data);
        b
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Direct write of three blocks with RWF_DSYNC, read back through the buffered descriptor;
    /// then the partial last block is rewritten (the way the log appends) and read again.
    #[test]
    fn direct_write_then_rewrite_partial_block() {
        tokio_uring::start(async {
            let dir = scratch();
            let path = dir.path().join("00000000000000000000.log");
            let storage = UringStorage::new(DirectIo::On);
            let file = storage.open(&path, FileMode::Direct).await.unwrap();
            assert!(file.is_direct());
            assert!(
                has_o_direct(file.write.as_raw_fd()),
                "writes bypass the page cache"
            );
            assert!(
                !has_o_direct(file.read.as_raw_fd()),
                "reads go through the page cache"
            );
            let handle = file.handle().unwrap();
            assert!(!has_o_direct(handle.raw_fd().unwrap()));

            let first = pattern(3 * BLOCK_BYTES, 1);
            let (res, buf) = file.write_at(aligned(&first), 0, true).await;
            res.unwrap();
            assert_eq!(buf.as_slice(), &first[..]);
            assert_eq!(file.len().await.unwrap(), 3 * BLOCK_BYTES as u64);
            let got = file.read_at(0, 3 * BLOCK_BYTES).await.unwrap();
            assert_eq!(&got[..], &first[..]);

            // 100 bytes into block 3, then rewrite block 3 with 100 + 200 bytes.
            let partial = pattern(100, 2);
            let (res, _) = file
                .write_at(aligned(&partial), 3 * BLOCK_BYTES as u64, false)
                .await;
            res.unwrap();
            let mut grown = partial.clone();
            grown.extend_from_slice(&pattern(200, 3));
            let (res, _) = file
                .write_at(aligned(&grown), 3 * BLOCK_BYTES as u64, true)
                .await;
            res.unwrap();
            file.sync_data().await.unwrap();

            assert_eq!(file.len().await.unwrap(), 4 * BLOCK_BYTES as u64);
            let got = file
                .read_at(3 * BLOCK_BYTES as u64, BLOCK_BYTES)
                .await
                .unwrap();
            assert_eq!(&got[..300], &grown[..]);
            assert!(got[300..].iter().all(|&b| b == 0), "padding must be zeros");
            // Short only at end of file.
            let got = file
                .read_at(2 * BLOCK_BYTES as u64, 10 * BLOCK_BYTES)
                .await
                .unwrap();
            assert_eq!(got.len(), 2 * BLOCK_BYTES);
            assert_eq!(&got[..BLOCK_BYTES], &first[2 * BLOCK_BYTES..]);
            assert!(file
                .read_at(100 * BLOCK_BYTES as u64, 10)
                .await
                .unwrap()
                .is_empty());

            // A reopened file sees the same bytes.
            drop(file);
            let file = storage.open(&path, FileMode::Direct).await.unwrap();
            let got = file.read_at(0, 3 * BLOCK_BYTES).await.unwrap();
            assert_eq!(&got[..], &first[..]);
        });
    }

    /// Misaligned offsets are refused (and the buffer handed back), not sent to the kernel.
    #[test]
    fn unaligned_offset_is_refused() {
        tokio_uring::start(async {
            let dir = scratch();
            let storage = UringStorage::new(DirectIo::Auto);
            let file = storage
                .open(&dir.path().join("a.log"), FileMode::Direct)
                .await
                .unwrap();
            let (res, buf) = file.write_at(aligned(b"hello"), 512, false).await;
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
            assert_eq!(buf.as_slice(), b"hello");
        });
    }

    /// Buffered files take writes of any size at any offset.
    #[test]
    fn buffered_write_bytes_then_read() {
        tokio_uring::start(async {
            let dir = scratch();
            let storage = UringStorage::new(DirectIo::On);
            let file = storage
                .open(
                    &dir.path().join("00000000000000000000.index"),
                    FileMode::Buffered,
                )
                .await
                .unwrap();
            assert!(!file.is_direct());
            file.write_bytes_at(b"hello world".to_vec(), 0)
                .await
                .unwrap();
            file.write_bytes_at(b"WORLD".to_vec(), 6).await.unwrap();
            file.write_bytes_at(b"!".to_vec(), 11).await.unwrap();
            file.sync_data().await.unwrap();
            assert_eq!(file.len().await.unwrap(), 12);
            assert_eq!(&file.read_at(0, 100).await.unwrap()[..], b"hello WORLD!");
            assert_eq!(&file.read_at(6, 5).await.unwrap()[..], b"WORLD");
            let h = file.handle().unwrap();
            let mut out = [0u8; 5];
            assert_eq!(h.read_at(0, &mut out).unwrap(), 5);
            assert_eq!(&out, b"hello");
        });
    }

    /// A handle keeps reading the data after the file is removed (and the file closed).
    #[test]
    fn handle_survives_remove() {
        tokio_uring::start(async {
            let dir = scratch();
            let path = dir.path().join("00000000000000000000.log");
            let storage = UringStorage::new(DirectIo::Auto);
            let file = storage.open(&path, FileMode::Direct).await.unwrap();
            let data = pattern(BLOCK_BYTES + 10, 7);
            let (res, _) = file.write_at(aligned(&data), 0, true).await;
            res.unwrap();
            let handle = file.handle().unwrap();
            assert!(handle.raw_fd().is_some());
            drop(file);
            storage.remove_file(&path).await.unwrap();
            storage.sync_dir(dir.path()).await.unwrap();
            assert!(!path.exists());

            let mut out = vec![0u8; 2 * BLOCK_BYTES + 100];
            let n = handle.read_at(0, &mut out).unwrap();
            assert_eq!(n, 2 * BLOCK_BYTES, "reads to the (padded) end of file");
            assert_eq!(&out[..data.len()], &data[..]);
            let mut out = [0u8; 10];
            assert_eq!(handle.read_at(BLOCK_BYTES as u64, &mut out).unwrap(), 10);
            assert_eq!(&out[..], &data[BLOCK_BYTES..]);
            // The handle can be moved to and read on another thread.
            let t = std::thread::spawn(move || {
                let mut one = [0u8; 1];
                handle.read_at(1, &mut one).map(|n| (n, one[0]))
            });
            assert_eq!(t.join().unwrap().unwrap(), (1, data[1]));
        });
    }

    #[test]
    fn set_len_and_len() {
        tokio_uring::start(async {
            let dir = scratch();
            let storage = UringStorage::new(DirectIo::On);
            let file = storage
                .open(&dir.path().join("s.log"), FileMode::Direct)
                .await
                .unwrap();
            assert_eq!(file.len().await.unwrap(), 0);
            file.set_len(5 * BLOCK_BYTES as u64).await.unwrap();
            assert_eq!(file.len().await.unwrap(), 5 * BLOCK_BYTES as u64);
            let got = file.read_at(0, 5 * BLOCK_BYTES).await.unwrap();
            assert!(got.len() == 5 * BLOCK_BYTES && got.iter().all(|&b| b == 0));
            let (res, _) = file.write_at(aligned(&[9; 10]), 0, false).await;
            res.unwrap();
            file.set_len(3).await.unwrap();
            file.sync_data().await.unwrap();
            assert_eq!(file.len().await.unwrap(), 3);
            assert_eq!(&file.read_at(0, 100).await.unwrap()[..], &[9, 9, 9]);
        });
    }

    #[test]
    fn directory_operations() {
        tokio_uring::start(async {
            let dir = scratch();
            let storage = UringStorage::new(DirectIo::Auto);
            let topic = dir.path().join("a/b/topic-0");
            storage.create_dir_all(&topic).await.unwrap();
            storage.create_dir_all(&topic).await.unwrap();
            storage.create_dir_all(&topic.join("subdir")).await.unwrap();
            let f = storage
                .open(&topic.join("x.tmp"), FileMode::Buffered)
                .await
                .unwrap();
            f.write_bytes_at(b"ckpt".to_vec(), 0).await.unwrap();
            f.sync_data().await.unwrap();
            drop(f);
            storage
                .open(&topic.join("y.log"), FileMode::Direct)
                .await
                .unwrap();
            storage
                .rename(&topic.join("x.tmp"), &topic.join("x.ckpt"))
                .await
                .unwrap();
            storage.sync_dir(&topic).await.unwrap();
            let mut names = storage.list_dir(&topic).await.unwrap();
            names.sort();
            assert_eq!(names, ["x.ckpt", "y.log"]);
            let f = storage
                .open(&topic.join("x.ckpt"), FileMode::Buffered)
                .await
                .unwrap();
            assert_eq!(&f.read_at(0, 10).await.unwrap()[..], b"ckpt");
            let err = storage.remove_file(&topic.join("nope")).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
            assert!(storage.list_dir(&dir.path().join("missing")).await.is_err());
            let now = storage.now_ms();
            assert!(now > 1_600_000_000_000, "{now}");
        });
    }

    /// The decision taken when O_DIRECT is refused, independent of the kernel: recent kernels
    /// (6.6+) accept O_DIRECT on tmpfs, so the filesystem test below may not reach it.
    #[test]
    fn refused_direct_policy() {
        let path = Path::new("/data/tern/t-0/00000000000000000000.log");
        let err = UringStorage::new(DirectIo::On)
            .direct_refused(path)
            .unwrap_err();
        let msg = err.to_string();
        assert_eq!(
            msg,
            "/data/tern/t-0/00000000000000000000.log: the filesystem refuses O_DIRECT (e.g. \
             tmpfs); put log.dirs on ext4/xfs, or set direct_io = \"auto\" to fall back to \
             buffered writes + fdatasync"
        );
        assert!(!msg.contains('\n'));
        let auto = UringStorage::new(DirectIo::Auto);
        auto.direct_refused(path).unwrap();
        auto.clone().direct_refused(path).unwrap();
        assert!(auto.warned.load(Ordering::Relaxed));
    }

    /// On tmpfs: `On` fails clearly if the kernel refuses O_DIRECT there, `Auto` always works.
    #[test]
    fn tmpfs_direct_on_errors_auto_falls_back() {
        let shm = PathBuf::from("/dev/shm");
        if !shm.is_dir() || !is_tmpfs(&shm) {
            eprintln!("skipped: /dev/shm is not tmpfs");
            return;
        }
        tokio_uring::start(async {
            let dir = tempfile::tempdir_in(&shm).unwrap();
            let probe = dir.path().join("probe");
            let refuses = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .custom_flags(libc::O_DIRECT)
                .open(&probe)
            {
                Ok(_) => false,
                Err(e) => e.raw_os_error() == Some(libc::EINVAL),
            };
            let path = dir.path().join("00000000000000000000.log");

            let on = UringStorage::new(DirectIo::On)
                .open(&path, FileMode::Direct)
                .await;
            if refuses {
                let err = on.unwrap_err();
                let msg = err.to_string();
                assert!(msg.starts_with(&format!("{}: ", path.display())), "{msg}");
                assert!(msg.contains("refuses O_DIRECT"), "{msg}");
                assert!(msg.contains("direct_io = \"auto\""), "{msg}");
            } else {
                eprintln!("this kernel accepts O_DIRECT on tmpfs: On-error path not exercised");
                assert!(on.unwrap().is_direct());
            }

            for direct in [DirectIo::Auto, DirectIo::Off] {
                let file = UringStorage::new(direct)
                    .open(&path, FileMode::Direct)
                    .await
                    .unwrap();
                assert_eq!(file.is_direct(), direct == DirectIo::Auto && !refuses);
                let data = pattern(BLOCK_BYTES + 1, 5);
                let (res, _) = file.write_at(aligned(&data), 0, true).await;
                res.unwrap();
                file.sync_data().await.unwrap();
                assert_eq!(&file.read_at(0, data.len()).await.unwrap()[..], &data[..]);
            }
        });
    }
}
