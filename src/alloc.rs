//! The global allocator: mimalloc, entered through its plain `mi_malloc` family whenever a
//! plain block already has the alignment asked for.
//!
//! The `mimalloc` crate's `GlobalAlloc` sends every allocation to `mi_malloc_aligned`. In
//! mimalloc v3 that entry point takes its fast path only when the next free block of the
//! size class happens to be aligned, and otherwise `mi_malloc_is_naturally_aligned`
//! admits only power-of-two block sizes: a 24-, 48- or 80-byte allocation with alignment
//! 8 falls through to the over-allocating path (the size plus the alignment, one size
//! class up). Pingora allocates ~80 times per proxied request, and about a fifth of them went
//! that way (mimalloc_rust PR #170, still open, proposes the same dispatch as here).
//!
//! When the alignment is at most 16 (`MI_MAX_ALIGN_SIZE`) and the size a multiple of it,
//! a plain block satisfies it: mimalloc's size classes are multiples of 8 bytes, and of
//! 16 from 16 bytes up, and every page's first block is 16-aligned; blocks of large and
//! huge allocations are aligned further. Everything else (alignment above 16, or a size
//! that is not a multiple of the alignment) keeps the aligned entry points. Freeing needs
//! no alignment (`mi_free` finds the block's page from the pointer). The unit tests check
//! the alignment of every size class this dispatch sends to the plain functions.
//!
//! Used by `src/lib.rs` (every Gatehouse binary) and by `examples/bare_proxy.rs` (the
//! benchmarks' baseline is built alike).

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// mimalloc's alignment guarantee for a plain block whose size is a multiple of the
/// alignment (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as a Rust global allocator (see the module documentation).
pub struct MiMalloc;

/// Whether a plain (unaligned-API) block of `size` bytes is aligned to `align`.
#[inline(always)]
fn plain_fits(size: usize, align: usize) -> bool {
    // `align` is a power of two (a `Layout`'s), so `size & (align - 1)` is `size % align`.
    align <= PLAIN_ALIGN && size & (align - 1) == 0
}

// SAFETY: every method forwards to the mimalloc function with the same contract as the
// `GlobalAlloc` method (a null result on failure); the plain functions only where their
// blocks meet the layout's alignment (`plain_fits`, checked by the tests below).
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain_fits(layout.size(), layout.align()) {
            mi_malloc(layout.size()).cast()
        } else {
            mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain_fits(layout.size(), layout.align()) {
            mi_zalloc(layout.size()).cast()
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain_fits(new_size, layout.align()) {
            mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to 4 KiB, every multiple of 16 up to 16 KiB and of 256 up to 256 KiB
    /// (every small and medium size class, both sides of each boundary) and a few large
    /// and huge ones, at every alignment up to 16 that the
    /// plain path takes, many blocks of each (a page's later blocks, not only its first):
    /// each block is aligned, writable over its whole size, and survives a realloc.
    #[test]
    fn plain_blocks_meet_the_alignment_they_are_used_for() {
        let a = MiMalloc;
        let sizes = (1..=4096usize)
            .chain((4096 + 16..=16_384).step_by(16))
            .chain((16_384 + 256..=262_144).step_by(256))
            .chain([(1 << 20) + 16, 3 << 20, (32 << 20) + 48]);
        let mut plain = 0;
        for size in sizes {
            for align in [1usize, 2, 4, 8, 16] {
                if !plain_fits(size, align) {
                    continue;
                }
                plain += 1;
                let layout = Layout::from_size_align(size, align).expect("layout");
                let n = if size <= 1024 { 8 } else { 2 };
                let blocks: Vec<*mut u8> = (0..n)
                    .map(|i| {
                        // SAFETY: a non-zero size; freed below with the same allocator.
                        let p = unsafe {
                            if i % 2 == 0 {
                                a.alloc(layout)
                            } else {
                                a.alloc_zeroed(layout)
                            }
                        };
                        assert!(!p.is_null(), "size {size} align {align}: null");
                        assert_eq!(p as usize % align, 0, "size {size} align {align}: {p:p}");
                        if i % 2 == 1 {
                            // SAFETY: `size` bytes were just allocated at `p`.
                            let s = unsafe { std::slice::from_raw_parts(p, size) };
                            assert!(s.iter().all(|b| *b == 0), "size {size}: not zeroed");
                        }
                        // SAFETY: as above; the whole block is ours.
                        unsafe { std::ptr::write_bytes(p, 0xA5, size) };
                        p
                    })
                    .collect();
                for p in blocks {
                    let grown = size + align;
                    // SAFETY: `p` came from `alloc*` with `layout`; `grown` is non-zero.
                    let q = unsafe { a.realloc(p, layout, grown) };
                    assert!(!q.is_null(), "realloc {size} -> {grown}: null");
                    assert_eq!(q as usize % align, 0, "realloc {size} -> {grown}: {q:p}");
                    // SAFETY: the first `size` bytes are kept by realloc.
                    let kept = unsafe { std::slice::from_raw_parts(q, size) };
                    assert!(
                        kept.iter().all(|b| *b == 0xA5),
                        "realloc {size}: lost bytes"
                    );
                    let grown_layout = Layout::from_size_align(grown, align).expect("layout");
                    // SAFETY: `q` is live, allocated with `grown_layout`'s size and align.
                    unsafe { a.dealloc(q, grown_layout) };
                }
            }
        }
        assert!(plain > 15_000, "only {plain} layouts took the plain path");
    }

    /// Alignments the plain path does not take still get them (the aligned functions).
    #[test]
    fn larger_alignments_and_odd_sizes_go_to_the_aligned_functions() {
        let a = MiMalloc;
        for (size, align) in [
            (8, 16),
            (24, 16),
            (64, 32),
            (100, 64),
            (4096, 4096),
            (1, 128),
        ] {
            assert!(!plain_fits(size, align));
            let layout = Layout::from_size_align(size, align).expect("layout");
            // SAFETY: non-zero size; freed below.
            let p = unsafe { a.alloc(layout) };
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            // SAFETY: `p` came from `alloc` with `layout`.
            let q = unsafe { a.realloc(p, layout, size * 3) };
            assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
            let grown = Layout::from_size_align(size * 3, align).expect("layout");
            // SAFETY: `q` is live with `grown`'s size and align.
            unsafe { a.dealloc(q, grown) };
        }
    }
}
