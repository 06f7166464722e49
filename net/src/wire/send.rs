//! Sending [`Piece`]s to a socket: vectored writes for memory, io_uring SPLICE for files.
//!
//! [`send_pieces`] walks the pieces of a response (see [`super::fetch`]) in order:
//!
//! * Consecutive **memory pieces** go out together in one `writev` (at most `IOV_MAX` of them
//!   a call); a partial write drops what was written and continues with the rest.
//! * A **file piece** whose handle has a descriptor moves through the connection's
//!   [`SplicePipe`] with two io_uring `IORING_OP_SPLICE` operations per round: segment file →
//!   pipe (at the piece's position, at most the pipe's capacity), then pipe → socket until
//!   the pipe is empty again; rounds repeat until the piece's `len` bytes are sent. The record
//!   bytes go from the page cache to the socket without passing through user space.
//! * A file piece whose handle has **no descriptor** (the in-memory storage of tests and
//!   tools) is read with [`SegmentHandle::read_at`] into buffers and written like memory.
//!
//! **Why splice, not `sendfile`.** `sendfile(2)` is a synchronous system call: when the file
//! range is not in the page cache it blocks the calling thread on the disk read, and on a
//! shard thread that stalls every partition and connection of that core. io_uring runs every
//! SPLICE in its own kernel worker (io-wq) threads, so a cold read (or a full socket buffer)
//! blocks a kernel worker while the shard thread keeps serving; the shard only awaits the
//! completion. Plain `splice(2)` from the shard thread would block just like `sendfile`.
//!
//! **The pipe is blocking** (`O_CLOEXEC` only). io_uring executes SPLICE in a worker that may
//! block, and the pipe is used strictly fill-then-drain: file → pipe starts on an empty pipe
//! and asks for at most its capacity, and pipe → socket asks for exactly what the pipe holds,
//! so neither side ever waits on the pipe itself. With `O_NONBLOCK` nothing would be gained
//! and an unexpected `EAGAIN` would have to be polled for. The pipe's capacity is raised to
//! [`PIPE_SIZE`] with `F_SETPIPE_SZ` when allowed (`/proc/sys/fs/pipe-max-size` limits
//! unprivileged users, 1 MiB by default); otherwise the default (64 KiB) stays, which only
//! means more rounds. A round that starts at an offset
//! inside a page moves a little less than the capacity (the first pipe buffer holds only the
//! tail of its page); every round sends exactly what the previous splice put in the pipe.
//!
//! **Blocking or non-blocking socket.** Both work. With a blocking socket, a splice into a
//! full send buffer parks an io-wq kernel worker until the peer reads (the shard thread is
//! still free). With an `O_NONBLOCK` socket the splice fails with `EAGAIN` instead (io_uring
//! does not poll-retry SPLICE by itself), and [`send_pieces`] waits for `POLLOUT` with an
//! io_uring poll and retries, so no kernel worker waits on a slow consumer. tokio-uring's own
//! reads and writes poll-retry internally, so they are fine with `O_NONBLOCK` too.
//!
//! **Cancellation.** An in-flight operation owns clones of everything it names: the segment
//! handle, the pipe's descriptors and a duplicate of the socket's descriptor, so dropping the
//! future can never make the kernel use a closed (and possibly reused) descriptor number. The
//! other side of that coin: an abandoned splice or poll keeps the socket open until it
//! completes, which with a peer that never reads is never. So to abandon a send (timeout,
//! shutdown), call `stream.shutdown(Shutdown::Both)` before dropping the stream: that fails
//! or wakes every in-flight operation on it, and they release their descriptors. A pipe left
//! holding bytes by a dropped future or a failed send is replaced by a fresh one at the next
//! [`send_pieces`]; the connection itself is then broken (a partial frame was sent) and must
//! be closed, as after any error.
//!
//! On loopback the kernel copies spliced pages into the receiving socket anyway, so the gain
//! shows as CPU time per byte served on real network interfaces, not as loopback throughput.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use io_uring::{cqueue, opcode, types};
use tern_engine::storage::SegmentHandle;
use tokio_uring::buf::IoBuf;
use tokio_uring::net::TcpStream;
use tokio_uring::{OneshotOutputTransform, UnsubmittedOneshot};

use super::fetch::Piece;

/// The pipe capacity [`SplicePipe::new`] asks for.
pub const PIPE_SIZE: usize = 1 << 20;

/// Most buffers in one `writev` (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Memory queued before it is written out, when file pieces without a descriptor are read
/// into buffers.
const FLUSH_AT: usize = 1 << 20;

/// Largest buffer read at once from a handle without a descriptor.
const READ_CHUNK: usize = 256 << 10;

/// A pipe pair for splicing file ranges into a socket; one per connection, reused by every
/// [`send_pieces`] on it. Blocking, close-on-exec; see the module documentation.
#[derive(Debug)]
pub struct SplicePipe {
    read: Arc<OwnedFd>,
    write: Arc<OwnedFd>,
    capacity: usize,
    /// True while the pipe may hold bytes that were not sent (a send was interrupted).
    dirty: bool,
}

impl SplicePipe {
    /// Creates a pipe and tries to raise its capacity to [`PIPE_SIZE`] (keeping the default
    /// when that is not allowed).
    pub fn new() -> io::Result<Self> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds is valid for writes of two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Failure (EPERM above pipe-max-size, EBUSY) leaves the default size: ignore it.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
        // SAFETY: as above.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let capacity = usize::try_from(size).map_err(|_| io::Error::last_os_error())?;
        if capacity == 0 {
            return Err(io::Error::other("pipe with zero capacity"));
        }
        Ok(Self {
            read: Arc::new(read),
            write: Arc::new(write),
            capacity,
            dirty: false,
        })
    }

    /// Bytes the pipe holds: the most one splice round moves.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Sends `pieces` to `stream` in order, all of them or an error. File pieces go through
/// `pipe` with io_uring SPLICE; see the module documentation. After an error the stream may
/// have received part of the pieces: close the connection. Must run inside a tokio-uring
/// runtime.
pub async fn send_pieces(
    stream: &TcpStream,
    pieces: Vec<Piece>,
    pipe: &mut SplicePipe,
) -> io::Result<()> {
    if pipe.dirty {
        // An earlier send stopped with bytes in the pipe; in-flight operations keep the old
        // descriptors alive until they complete.
        *pipe = SplicePipe::new()?;
    }
    let total = pieces.len();
    let mut batch: Vec<IoBytes> = Vec::new();
    let mut batched = 0usize;
    // A duplicate of the socket's descriptor, made at the first spliced piece.
    let mut sock: Option<Arc<OwnedFd>> = None;
    for (i, piece) in pieces.into_iter().enumerate() {
        match piece {
            Piece::Memory(b) => {
                if !b.is_empty() {
                    batched += b.len();
                    batch.push(IoBytes(b));
                }
            }
            Piece::File {
                handle,
                position,
                len,
            } => match handle.raw_fd() {
                Some(fd) => {
                    write_all(stream, std::mem::take(&mut batch)).await?;
                    batched = 0;
                    let sock = match &sock {
                        Some(s) => s.clone(),
                        None => {
                            let s = Arc::new(dup(stream.as_raw_fd())?);
                            sock = Some(s.clone());
                            s
                        }
                    };
                    let src = FileRange {
                        handle: &handle,
                        fd,
                        position,
                        len,
                    };
                    splice_range(&sock, src, pipe, i + 1 < total).await?;
                }
                None => {
                    let mut done = 0u64;
                    while done < u64::from(len) {
                        let n = (u64::from(len) - done).min(READ_CHUNK as u64) as usize;
                        let mut buf = vec![0u8; n];
                        read_exact_at(&*handle, offset(position, done)?, &mut buf)?;
                        done += n as u64;
                        batched += n;
                        batch.push(IoBytes(Bytes::from(buf)));
                        if batched >= FLUSH_AT {
                            write_all(stream, std::mem::take(&mut batch)).await?;
                            batched = 0;
                        }
                    }
                }
            },
        }
    }
    write_all(stream, batch).await
}

/// [`Bytes`] as a tokio-uring buffer (tokio-uring's own impl sits behind its `bytes` feature,
/// which this crate does not enable).
struct IoBytes(Bytes);

// SAFETY: a `Bytes` never moves or frees its memory while the value (owned by the runtime
// during an operation) is alive; moving the handle does not move the bytes.
unsafe impl IoBuf for IoBytes {
    fn stable_ptr(&self) -> *const u8 {
        self.0.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.0.len()
    }

    fn bytes_total(&self) -> usize {
        self.0.len()
    }
}

/// Writes every byte of `bufs` with as few `writev` calls as the kernel allows.
async fn write_all(stream: &TcpStream, mut bufs: Vec<IoBytes>) -> io::Result<()> {
    while !bufs.is_empty() {
        let rest = if bufs.len() > IOV_MAX {
            bufs.split_off(IOV_MAX)
        } else {
            Vec::new()
        };
        let (res, mut sent) = stream.writev(bufs).await;
        let mut n = match res {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "writev wrote nothing",
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        // Drop what was written; the first partly written buffer keeps its tail.
        let mut written = 0;
        for b in &mut sent {
            if n < b.0.len() {
                b.0.advance(n);
                break;
            }
            n -= b.0.len();
            written += 1;
        }
        sent.drain(..written);
        sent.extend(rest);
        bufs = sent;
    }
    Ok(())
}

/// `position + done`, or an error when that is past the largest file offset.
fn offset(position: u64, done: u64) -> io::Result<u64> {
    position
        .checked_add(done)
        .ok_or_else(|| out_of_range(position, done))
}

fn out_of_range(position: u64, done: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("file piece at {position} (+{done}) is beyond the largest file offset"),
    )
}

/// Fills `buf` from `handle` at `pos` (blocking: only for handles without a descriptor,
/// which are in memory).
fn read_exact_at(handle: &dyn SegmentHandle, pos: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match handle.read_at(pos.saturating_add(filled as u64), &mut buf[filled..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "segment ends before {} (reading a file piece)",
                        pos.saturating_add(filled as u64)
                    ),
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `fcntl(F_DUPFD_CLOEXEC)`: a descriptor of the same socket that in-flight operations own.
fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: `fd` belongs to a TcpStream the caller borrows, so it is open for this call.
    unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
}

/// A file piece to splice.
struct FileRange<'a> {
    handle: &'a Arc<dyn SegmentHandle>,
    fd: RawFd,
    position: u64,
    len: u32,
}

/// Splices `src` into `sock` through `pipe`, in rounds of at most the pipe's capacity.
/// `more_follows` says whether other pieces come after this one (for `SPLICE_F_MORE`).
async fn splice_range(
    sock: &Arc<OwnedFd>,
    src: FileRange<'_>,
    pipe: &mut SplicePipe,
    more_follows: bool,
) -> io::Result<()> {
    let len = u64::from(src.len);
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(pipe.capacity as u64) as u32;
        let pos = offset(src.position, done)?;
        let off = i64::try_from(pos).map_err(|_| out_of_range(src.position, done))?;
        pipe.dirty = true;
        let keep = Keep {
            _a: Owner::Segment {
                _handle: src.handle.clone(),
            },
            _b: Owner::Fd {
                _fd: pipe.write.clone(),
            },
        };
        let filled = splice(src.fd, off, pipe.write.as_raw_fd(), want, 0, keep).await?;
        if filled == 0 {
            // Nothing entered the pipe: it is still clean.
            pipe.dirty = false;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("segment ends at {pos}, before the end of a {len}-byte piece"),
            ));
        }
        done += u64::from(filled);
        let more = if more_follows || done < len {
            libc::SPLICE_F_MORE
        } else {
            0
        };
        let mut left = filled;
        while left > 0 {
            let keep = Keep {
                _a: Owner::Fd {
                    _fd: pipe.read.clone(),
                },
                _b: Owner::Fd { _fd: sock.clone() },
            };
            let sent = splice(
                pipe.read.as_raw_fd(),
                -1,
                sock.as_raw_fd(),
                left,
                more,
                keep,
            )
            .await?;
            if sent == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "splice to the socket moved nothing",
                ));
            }
            left = left.saturating_sub(sent);
        }
        pipe.dirty = false;
    }
    Ok(())
}

/// Something an in-flight operation keeps open until its completion.
#[derive(Clone)]
enum Owner {
    Segment { _handle: Arc<dyn SegmentHandle> },
    Fd { _fd: Arc<OwnedFd> },
}

/// What an in-flight SPLICE or POLL owns: its descriptors (only held, never read).
#[derive(Clone)]
struct Keep {
    _a: Owner,
    _b: Owner,
}

/// Turns a completion into its result; the owned descriptors are released with it.
struct Done;

impl OneshotOutputTransform for Done {
    type Output = io::Result<u32>;
    type StoredData = Keep;

    fn transform_oneshot_output(self, _keep: Keep, cqe: cqueue::Entry) -> io::Result<u32> {
        let res = cqe.result();
        if res >= 0 {
            Ok(res.unsigned_abs())
        } else {
            Err(io::Error::from_raw_os_error(-res))
        }
    }
}

/// One `IORING_OP_SPLICE` of up to `len` bytes from `fd_in` (at `off_in`, or -1 for a pipe)
/// to `fd_out`, retried on `EINTR`, and after `POLLOUT` on `EAGAIN` (a non-blocking socket).
/// `keep` owns both descriptors; every submitted operation holds a clone of it.
async fn splice(
    fd_in: RawFd,
    off_in: i64,
    fd_out: RawFd,
    len: u32,
    flags: u32,
    keep: Keep,
) -> io::Result<u32> {
    loop {
        let entry = opcode::Splice::new(types::Fd(fd_in), off_in, types::Fd(fd_out), -1, len)
            .flags(flags)
            .build();
        match UnsubmittedOneshot::new(keep.clone(), Done, entry)
            .submit()
            .await
        {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                let poll = opcode::PollAdd::new(types::Fd(fd_out), libc::POLLOUT as u32).build();
                UnsubmittedOneshot::new(keep.clone(), Done, poll)
                    .submit()
                    .await?;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::os::unix::fs::FileExt;

    use kafka_protocol::messages::{FetchResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Decodable, HeaderVersion, StrBytes};
    use tokio_uring::net::TcpListener;

    use super::super::fetch::{
        encode_fetch_response, pieces_len, FetchPartitionParts, FetchResponseParts, FetchTopicParts,
    };
    use super::*;

    /// A segment file with a descriptor, like the tokio-uring storage's handle.
    #[derive(Debug)]
    struct FileHandle(std::fs::File);

    impl SegmentHandle for FileHandle {
        fn raw_fd(&self) -> Option<RawFd> {
            Some(self.0.as_raw_fd())
        }

        fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read_at(buf, pos)
        }
    }

    use tern_engine::storage::memory::VecHandle;

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed).to_le_bytes()[1])
            .collect()
    }

    /// A file under the crate directory (ext4, not tmpfs) holding `content`.
    fn segment_file(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> Arc<dyn SegmentHandle> {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        Arc::new(FileHandle(std::fs::File::open(&path).unwrap()))
    }

    /// A connected pair: (sending side, receiving side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = tokio_uring::spawn(async move { TcpStream::connect(addr).await });
        let (accepted, _) = listener.accept().await.unwrap();
        (connect.await.unwrap().unwrap(), accepted)
    }

    /// Reads exactly `len` bytes from `stream` on a separate task.
    fn receive(stream: TcpStream, len: usize) -> tokio::task::JoinHandle<Vec<u8>> {
        tokio_uring::spawn(async move {
            let mut out = Vec::with_capacity(len);
            while out.len() < len {
                let (res, buf) = stream.read(vec![0u8; 256 << 10]).await;
                let n = res.unwrap();
                assert!(n > 0, "eof after {} of {len} bytes", out.len());
                out.extend_from_slice(&buf[..n]);
            }
            out
        })
    }

    fn expected(pieces: &[Piece]) -> Vec<u8> {
        pieces
            .iter()
            .flat_map(|p| p.to_bytes().unwrap().to_vec())
            .collect()
    }

    #[test]
    fn mixed_pieces_arrive_exactly() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let big = pattern(3 << 20, 1);
        let big_file = segment_file(&dir, "big", &big);
        let small_file = segment_file(&dir, "small", &pattern(200_000, 2));
        let mem_file: Arc<dyn SegmentHandle> = Arc::new(VecHandle(pattern(3_000_000, 3)));
        let pieces = vec![
            Piece::Memory(Bytes::from(pattern(10, 4))),
            Piece::Memory(Bytes::from(pattern(5000, 5))),
            Piece::File {
                handle: big_file.clone(),
                position: 0,
                len: big.len() as u32,
            },
            Piece::Memory(Bytes::from(pattern(3, 6))),
            Piece::File {
                handle: small_file.clone(),
                position: 12_345,
                len: 100_000,
            },
            Piece::File {
                handle: big_file.clone(),
                position: 4097,
                len: (1 << 20) + 17,
            },
            Piece::Memory(Bytes::new()),
            Piece::File {
                handle: mem_file.clone(),
                position: 77,
                len: 2_500_000,
            },
            Piece::Memory(Bytes::from(pattern(1, 7))),
            Piece::File {
                handle: small_file,
                position: 199_999,
                len: 1,
            },
        ];
        let want = expected(&pieces);
        tokio_uring::start(async move {
            let (tx, rx) = pair().await;
            let got = receive(rx, 2 * want.len());
            let mut pipe = SplicePipe::new().unwrap();
            assert!(pipe.capacity() >= 4096);
            send_pieces(&tx, pieces.clone(), &mut pipe).await.unwrap();
            // The same pipe serves the next response.
            send_pieces(&tx, pieces, &mut pipe).await.unwrap();
            let got = got.await.unwrap();
            assert!(got[..want.len()] == want[..], "first send differs");
            assert!(got[want.len()..] == want[..], "second send differs");
        });
    }

    fn set_buffer(stream: &TcpStream, option: libc::c_int, size: libc::c_int) {
        // SAFETY: setsockopt reads one c_int from a live variable.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
    }

    #[test]
    fn a_non_blocking_socket_with_a_slow_reader() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let content = pattern(6 << 20, 11);
        let file = segment_file(&dir, "nb", &content);
        // The file first: the reader sleeps while the splices fill the socket buffer.
        let pieces = vec![
            Piece::File {
                handle: file,
                position: 3,
                len: (6 << 20) - 3,
            },
            Piece::Memory(Bytes::from(pattern(4 << 20, 12))),
        ];
        let want = expected(&pieces);
        tokio_uring::start(async move {
            let (tx, rx) = pair().await;
            // Small socket buffers (no autotuning), so the sender runs into a full buffer.
            set_buffer(&rx, libc::SO_RCVBUF, 64 << 10);
            set_buffer(&tx, libc::SO_SNDBUF, 64 << 10);
            // SAFETY: fcntl on the open socket of `tx`.
            unsafe {
                let fd = tx.as_raw_fd();
                let flags = libc::fcntl(fd, libc::F_GETFL);
                assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
            }
            let len = want.len();
            let got = tokio_uring::spawn(async move {
                // Let the sender fill the socket buffers first.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                receive(rx, len).await.unwrap()
            });
            let mut pipe = SplicePipe::new().unwrap();
            send_pieces(&tx, pieces, &mut pipe).await.unwrap();
            assert!(got.await.unwrap() == want);
        });
    }

    #[test]
    fn many_memory_pieces_exceed_iov_max() {
        let pieces: Vec<Piece> = (0..3000)
            .map(|i| Piece::Memory(Bytes::from(pattern(1 + i % 700, i as u32))))
            .collect();
        let want = expected(&pieces);
        tokio_uring::start(async move {
            let (tx, rx) = pair().await;
            let got = receive(rx, want.len());
            let mut pipe = SplicePipe::new().unwrap();
            send_pieces(&tx, pieces, &mut pipe).await.unwrap();
            assert!(got.await.unwrap() == want);
        });
    }

    #[test]
    fn a_piece_beyond_the_end_of_its_file_fails() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let file = segment_file(&dir, "short", &pattern(10_000, 8));
        tokio_uring::start(async move {
            let (tx, rx) = pair().await;
            let got = receive(rx, 10_000);
            let mut pipe = SplicePipe::new().unwrap();
            let pieces = vec![Piece::File {
                handle: file.clone(),
                position: 0,
                len: 20_000,
            }];
            let err = send_pieces(&tx, pieces, &mut pipe).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
            // What the file had was sent before the error.
            assert_eq!(got.await.unwrap(), pattern(10_000, 8));
            assert!(!pipe.dirty);
        });
    }

    #[test]
    fn a_dirty_pipe_is_replaced() {
        tokio_uring::start(async {
            let mut pipe = SplicePipe::new().unwrap();
            let junk = [1u8; 10];
            // SAFETY: writing 10 bytes from a live buffer to our pipe.
            let n = unsafe { libc::write(pipe.write.as_raw_fd(), junk.as_ptr().cast(), 10) };
            assert_eq!(n, 10);
            pipe.dirty = true;
            let (tx, rx) = pair().await;
            let got = receive(rx, 3);
            send_pieces(
                &tx,
                vec![Piece::Memory(Bytes::from_static(b"abc"))],
                &mut pipe,
            )
            .await
            .unwrap();
            assert_eq!(got.await.unwrap(), b"abc");
            assert!(!pipe.dirty);
            let mut queued: libc::c_int = -1;
            // SAFETY: FIONREAD writes one c_int to a live variable.
            let rc = unsafe { libc::ioctl(pipe.read.as_raw_fd(), libc::FIONREAD, &mut queued) };
            assert_eq!((rc, queued), (0, 0), "the new pipe is empty");
        });
    }

    #[test]
    fn fetch_response_over_a_socket_decodes() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let content = pattern(2 << 20, 9);
        let file = segment_file(&dir, "00000000000000000000.log", &content);
        for version in super::super::fetch::FETCH_VERSIONS {
            let records = vec![
                Piece::Memory(Bytes::from(pattern(300, 10))),
                Piece::File {
                    handle: file.clone(),
                    position: 1000,
                    len: (1 << 20) + 5000,
                },
            ];
            let want_records = expected(&records);
            let parts = FetchResponseParts {
                correlation_id: 42,
                version,
                throttle_time_ms: 0,
                error_code: 0,
                session_id: 0,
                topics: vec![FetchTopicParts {
                    name: TopicName(StrBytes::from_static_str("orders")),
                    topic_id: uuid::Uuid::nil(),
                    partitions: vec![
                        FetchPartitionParts {
                            partition_index: 0,
                            error_code: 0,
                            high_watermark: 100,
                            last_stable_offset: 100,
                            log_start_offset: 0,
                            preferred_read_replica: -1,
                            current_leader: None,
                            records,
                        },
                        FetchPartitionParts {
                            partition_index: 1,
                            error_code: 0,
                            high_watermark: 0,
                            last_stable_offset: 0,
                            log_start_offset: 0,
                            preferred_read_replica: -1,
                            current_leader: None,
                            records: vec![],
                        },
                    ],
                }],
                node_endpoints: Vec::new(),
            };
            let pieces = encode_fetch_response(parts).unwrap();
            let len = pieces_len(&pieces) as usize;
            let wire = tokio_uring::start(async move {
                let (tx, rx) = pair().await;
                let got = receive(rx, len);
                let mut pipe = SplicePipe::new().unwrap();
                send_pieces(&tx, pieces, &mut pipe).await.unwrap();
                got.await.unwrap()
            });
            let mut buf = Bytes::from(wire);
            let frame = buf.get_i32();
            assert_eq!(frame as usize, buf.len());
            let header =
                ResponseHeader::decode(&mut buf, FetchResponse::header_version(version)).unwrap();
            assert_eq!(header.correlation_id, 42);
            let resp = FetchResponse::decode(&mut buf, version).unwrap();
            let parts = &resp.responses[0].partitions;
            assert_eq!(parts[0].records.as_deref(), Some(&want_records[..]));
            assert_eq!(parts[1].records.as_deref(), Some(&[][..]));
        }
    }
}
