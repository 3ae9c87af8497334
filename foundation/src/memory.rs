//! Keeping freed tensor memory inside the process.
//!
//! burn's CPU backend allocates a fresh buffer for nearly every operation's result and frees it
//! when the tensor drops: one training step of the reference configuration allocates and frees
//! hundreds of buffers of up to a few MiB, tens of MiB in all. At start, glibc's allocator
//! serves every block above 128 KiB (its mmap threshold) with a fresh mapping that it unmaps on
//! free, and gives free memory at the top of the heap back to the system beyond 128 KiB (its
//! trim threshold), so every step faults its buffers' pages in again (about a third of a
//! one-thread step, measured; see docs/foundation.md).
//! glibc raises both thresholds when a mapped block is freed (the mmap threshold to that
//! block's size, up to 32 MiB, the trim threshold to twice it), so freeing one large block
//! before training keeps the tensors' buffers in the heap, at the cost of up to twice its size
//! of free heap kept in the process. Other allocators are not affected beyond one allocation.

use std::sync::Once;

/// The block freed once: just below glibc's 32 MiB ceiling for the adjustment, so that up to
/// 62 MiB of free heap stay in the process (24 MiB, keeping 48, was not enough for a one-thread
/// step at batch 64), and above the largest buffer of a prediction chunk of the reference
/// configuration (512 windows: 16 MiB).
const BLOCK_BYTES: usize = 31 << 20;

/// Lets the allocator keep freed tensor buffers for reuse (once per process).
pub fn keep_freed_buffers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Zeroed, so the allocator maps it without touching its pages.
        let block = vec![0u8; BLOCK_BYTES];
        drop(std::hint::black_box(block));
    });
}
