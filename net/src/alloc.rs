//! A global allocator that reserves huge allocations lazily, so that a request declaring an
//! absurd array length cannot abort the broker.
//!
//! The `kafka-protocol` 0.18 decoders call `Vec::with_capacity(n)` with `n` read from the
//! request before checking it against the bytes that follow (upstream kafka-protocol-rs pull
//! requests #152/#161/#200 fix this; none is released). A frame of a few bytes declaring
//! 2^31 topics asks for ~150 GB up front; the system allocator refuses, and Rust aborts the
//! whole process. Allocations of [`HUGE_BYTES`] or more are therefore served by an anonymous
//! `mmap` with `MAP_NORESERVE`: only address space is taken, no memory is committed until
//! pages are touched, and the decoder fails on the short input after touching a few of them.
//! Everything smaller goes to the system allocator unchanged. (Under
//! `vm.overcommit_memory = 2` the kernel still refuses such mappings; the abort then remains
//! possible.)

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc as System;

/// Allocations at least this large are reserved lazily.
pub const HUGE_BYTES: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

/// The allocator; install it with `#[global_allocator]` in the binary.
#[derive(Debug, Clone, Copy, Default)]
pub struct LazyHugeAlloc;

fn is_huge(l: Layout) -> bool {
    l.size() >= HUGE_BYTES && l.align() <= PAGE_BYTES
}

// SAFETY: huge blocks come from mmap (page-aligned, zeroed, `size` bytes) and go back to
// munmap with the same size; every other block is the system allocator's.
unsafe impl GlobalAlloc for LazyHugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_huge(layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout) {
            // SAFETY: anonymous mappings are zero-filled.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(layout) {
            // SAFETY: ptr/size describe a mapping made by `alloc` above.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees new_size and layout.align() form a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_huge(layout) && !is_huge(new_layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: alloc/copy/dealloc with the layouts of both blocks.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
