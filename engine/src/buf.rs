//! Block-aligned buffers for O_DIRECT.
//!
//! O_DIRECT needs the address, the file offset and the length of every transfer aligned to the
//! logical block size. A plain `Vec<u8>` is not aligned, so the engine owns its memory through
//! [`AlignedBuf`]: a heap block allocated with a [`BLOCK_BYTES`] alignment, whose capacity is
//! always a whole number of blocks. Once a buffer has been written it can be frozen into
//! [`bytes::Bytes`] (see [`AlignedBuf::freeze`]) so that readers share it without copying.

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;

use bytes::Bytes;

/// The alignment (address, offset and length) of every direct write.
pub const BLOCK_BYTES: usize = 4096;

/// Rounds `n` up to a whole number of blocks.
pub const fn align_up(n: u64) -> u64 {
    n.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}

/// Rounds `n` down to a whole number of blocks.
pub const fn align_down(n: u64) -> u64 {
    n / BLOCK_BYTES as u64 * BLOCK_BYTES as u64
}

/// A growable byte buffer aligned to [`BLOCK_BYTES`], with capacity a multiple of it.
///
/// Invariant: `len <= capacity`, `capacity % BLOCK_BYTES == 0`, `capacity > 0`. Bytes after
/// `len` are unspecified in a reused buffer: [`AlignedBuf::zero_padding`] zeroes the ones a
/// direct write sends ([`AlignedBuf::padded`]), and every storage's `write_at` calls it.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer able to hold at least `capacity` bytes (at least one block).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = (align_up(capacity.max(1) as u64)) as usize;
        let layout = Self::layout(capacity);
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Self {
            ptr,
            len: 0,
            capacity,
        }
    }

    fn layout(capacity: usize) -> Layout {
        // The only failure is an overflowing size, which no caller of ours can produce
        // (capacities are bounded by segment_bytes, at most 2^31).
        match Layout::from_size_align(capacity, BLOCK_BYTES) {
            Ok(l) => l,
            Err(_) => panic!("aligned buffer of {capacity} bytes overflows the address space"),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Allocated bytes (a multiple of [`BLOCK_BYTES`]).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `len` rounded up to a whole block: what a direct write of this buffer transfers.
    pub fn padded_len(&self) -> usize {
        align_up(self.len as u64) as usize
    }

    /// Appends `data`, growing (to the next power-of-two number of blocks) if needed.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.reserve(data.len());
        // SAFETY: reserve made room for data.len() bytes after len; regions don't overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                data.len(),
            );
        }
        self.len += data.len();
    }

    /// Ensures room for `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self.len + additional;
        if needed <= self.capacity {
            return;
        }
        let mut grown = Self::with_capacity(needed.next_power_of_two().max(self.capacity * 2));
        grown.extend_from_slice(self.as_slice());
        *self = grown;
    }

    /// Shortens to `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Sets the length to `len`, the new bytes zero.
    pub fn resize_zeroed(&mut self, len: usize) {
        if len > self.len {
            self.reserve(len - self.len);
            let old = self.len;
            self.as_mut_full()[old..len].fill(0);
        }
        self.len = len;
    }

    /// Empties the buffer for reuse (its memory stays allocated and mapped).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Zeroes the bytes between `len` and the next block boundary: the padding of a direct
    /// write.
    pub fn zero_padding(&mut self) {
        let (len, padded) = (self.len, self.padded_len());
        self.as_mut_full()[len..padded].fill(0);
    }

    /// The written bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for capacity bytes, all initialised (zeroed at allocation).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The written bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.as_mut_full()[..len]
    }

    fn as_mut_full(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for capacity bytes, all initialised, and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }

    /// The written bytes followed by the padding up to a whole block (zero after
    /// [`AlignedBuf::zero_padding`]).
    pub fn padded(&self) -> &[u8] {
        // SAFETY: padded_len <= capacity, all initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.padded_len()) }
    }

    /// Raw pointer to the start (stable for the buffer's lifetime, also across moves).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Raw mutable pointer to the start, for reads into the buffer.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Sets the length after an external write into the buffer (e.g. a read).
    ///
    /// # Safety
    /// `len <= capacity`; the bytes up to `len` are initialised (always true: zeroed at
    /// allocation), and bytes after `len` must be zero for the padding invariant.
    pub unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity);
        self.len = len;
    }

    /// Freezes the written bytes into shared, immutable [`Bytes`] without copying.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

/// Most buffers a [`BufPool`] keeps for reuse.
pub const POOL_BUFS_MAX: usize = 8;

/// Write buffers kept for reuse, so that the append path neither allocates nor page-faults
/// once warm. A buffer frozen with [`BufPool::freeze`] comes back when the last reader of its
/// bytes lets go, from whichever thread that is (the queue is lock-free).
#[derive(Debug, Clone)]
pub struct BufPool {
    free: std::sync::Arc<crossbeam_queue::ArrayQueue<AlignedBuf>>,
}

impl Default for BufPool {
    fn default() -> Self {
        BufPool {
            free: std::sync::Arc::new(crossbeam_queue::ArrayQueue::new(POOL_BUFS_MAX)),
        }
    }
}

impl BufPool {
    /// An empty buffer able to hold `min_bytes` (reused when one is free and big enough).
    pub fn take(&self, min_bytes: usize) -> AlignedBuf {
        while let Some(mut b) = self.free.pop() {
            if b.capacity() >= min_bytes {
                b.clear();
                return b;
            }
        }
        AlignedBuf::with_capacity(min_bytes)
    }

    /// Gives a buffer back.
    pub fn put(&self, buf: AlignedBuf) {
        let _ = self.free.push(buf);
    }

    /// Freezes `buf` into [`Bytes`]; the buffer returns to this pool when they are dropped.
    pub fn freeze(&self, buf: AlignedBuf) -> Bytes {
        Bytes::from_owner(Pooled {
            buf: Some(buf),
            pool: self.clone(),
        })
    }
}

struct Pooled {
    buf: Option<AlignedBuf>,
    pool: BufPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| b.as_slice())
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.put(b);
        }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in with_capacity with exactly this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the alignment and zero-padding invariants that O_DIRECT relies on.
    #[test]
    fn aligned_and_padded_with_zeros() {
        let mut b = AlignedBuf::with_capacity(10);
        assert_eq!(b.capacity(), BLOCK_BYTES);
        assert_eq!(b.as_ptr() as usize % BLOCK_BYTES, 0);
        b.extend_from_slice(&[7; 5000]);
        assert_eq!(b.capacity() % BLOCK_BYTES, 0);
        assert_eq!(b.as_ptr() as usize % BLOCK_BYTES, 0);
        assert_eq!(b.padded_len(), 8192);
        assert!(b.padded()[5000..].iter().all(|&x| x == 0));
        b.truncate(100);
        b.zero_padding();
        assert!(b.padded()[100..].iter().all(|&x| x == 0));
        let frozen = b.freeze();
        assert_eq!(&frozen[..], &[7; 100][..]);
    }

    /// Guards buffer reuse: a frozen buffer returns to the pool when its bytes are dropped.
    #[test]
    fn pool_reuses_frozen_buffers() {
        let pool = BufPool::default();
        let mut b = pool.take(10_000);
        b.extend_from_slice(&[1; 5000]);
        let ptr = b.as_ptr();
        let bytes = pool.freeze(b);
        let view = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(&view[..], &[1; 10][..]);
        drop(view);
        let again = pool.take(100);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
        assert!(pool.take(1 << 20).capacity() >= 1 << 20);
    }
}
