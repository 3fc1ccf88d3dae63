//! The global allocator of `atom` (and `atom-bench`): mimalloc, called the way its own API
//! is meant to be called.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every allocation to `mi_malloc_aligned`, with
//! the alignment of the type. mimalloc v3 serves that from a page of the requested size only
//! while such a page has a free block at hand; otherwise it over-allocates (size plus
//! alignment, from the next larger size class), and only power-of-two sizes count as
//! "naturally aligned". So for a size like 56 or 320, a page of that size is never made, and
//! every such allocation takes the slow path for good (microsoft/mimalloc#889;
//! purpleprotocol/mimalloc_rust#170): four allocations of every request to `/health`, which
//! cost 706 of its 22 811 instructions more than plain `mi_malloc` does.
//!
//! Here an alignment that plain `mi_malloc` already guarantees goes to `mi_malloc`: every
//! mimalloc block is aligned to 16 bytes when it is 16 bytes or larger, and to 8 when
//! smaller (all sizes are multiples of 8). A Rust layout's size is a multiple of its
//! alignment, so `align <= 16 && align <= size` is enough, the same test that the standard
//! library's `System` allocator applies to `malloc`. Anything else still goes to the
//! `_aligned` functions.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};

/// The alignment of every mimalloc block of at least this size (`MI_MAX_ALIGN_SIZE`).
const MIN_ALIGN: usize = 16;

/// mimalloc as the global allocator: `#[global_allocator] static A: MiMalloc = MiMalloc;`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MiMalloc;

/// Whether a plain (unaligned) allocation of `size` bytes is aligned to `align`.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: every method returns either null or a block of mimalloc's of at least the layout's
// size, aligned to the layout's alignment (by `plain`'s guarantee, or by the `_aligned`
// function); `dealloc` and `realloc` get only blocks that these methods returned, which
// `mi_free` and `mi_realloc*` accept whichever function allocated them.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions take any size and alignment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's contract); the
        // new block keeps the alignment, by `plain`'s guarantee or by `mi_realloc_aligned`.
        unsafe {
            if plain(new_size, layout.align()) {
                mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aligned(p: *mut u8, align: usize) -> bool {
        !p.is_null() && p.addr().is_multiple_of(align)
    }

    /// Every size class up to 4 KiB and beyond, at every alignment a layout of that size
    /// can have (and a few larger ones): the block is aligned, writable to its end, and
    /// keeps its bytes through growing and shrinking.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let mut sizes: Vec<usize> = (1..=512).collect();
        sizes.extend((520..=4096).step_by(8));
        sizes.extend([8191, 65_536, 1 << 20, 4 << 20]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                if !size.is_multiple_of(align) {
                    continue; // no Rust type has this layout
                }
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: a non-zero size; every block is freed with its layout.
                unsafe {
                    let zeroed = MiMalloc.alloc_zeroed(layout);
                    assert!(aligned(zeroed, align), "zeroed {size}/{align}");
                    assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|&b| b == 0));
                    MiMalloc.dealloc(zeroed, layout);

                    let p = MiMalloc.alloc(layout);
                    assert!(aligned(p, align), "alloc {size}/{align}");
                    p.write_bytes(0xA5, size);
                    let grown = MiMalloc.realloc(p, layout, size * 3);
                    assert!(aligned(grown, align), "grown {size}/{align}");
                    assert!(std::slice::from_raw_parts(grown, size).iter().all(|&b| b == 0xA5));
                    let layout = Layout::from_size_align(size * 3, align).expect("layout");
                    let shrunk = MiMalloc.realloc(grown, layout, size);
                    assert!(aligned(shrunk, align), "shrunk {size}/{align}");
                    assert!(std::slice::from_raw_parts(shrunk, size).iter().all(|&b| b == 0xA5));
                    MiMalloc.dealloc(shrunk, Layout::from_size_align(size, align).expect("layout"));
                }
            }
        }
    }
}
