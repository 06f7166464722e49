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
/// Invariant: `len <= capacity`, `capacity % BLOCK_BYTES == 0`, `capacity > 0`, and bytes
/// `len..capacity` are zero (so [`AlignedBuf::padded_len`] bytes can be written as they are).
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

    /// Shortens to `len` bytes, zeroing what is cut so the padding invariant holds.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            let old = self.len;
            self.as_mut_full()[len..old].fill(0);
            self.len = len;
        }
    }

    /// Clears the buffer (zeroing its contents) for reuse.
    pub fn clear(&mut self) {
        self.truncate(0);
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

    /// The written bytes followed by zero padding up to a whole block.
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
        assert!(b.padded()[100..].iter().all(|&x| x == 0));
        let frozen = b.freeze();
        assert_eq!(&frozen[..], &[7; 100][..]);
    }
}
