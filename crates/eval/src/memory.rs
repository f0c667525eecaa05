//! Peak heap use, measured by counting allocations: install [`PeakAlloc`] as the program's global allocator.
//!
//! ```
//! #[global_allocator]
//! static HEAP: token_shuffle_eval::memory::PeakAlloc = token_shuffle_eval::memory::PeakAlloc::new();
//!
//! fn main() {
//!     let (buffer, peak) = HEAP.peak_during(|| vec![1u8; 1 << 20]);
//!     assert!(peak >= 1 << 20);
//!     drop(buffer);
//! }
//! ```
//!
//! This measures host memory: everything a CPU backend (Flex) allocates, but not the memory of a GPU, which
//! its driver allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// An allocator (`A`, the system's by default), counting the bytes in use and their peak.
#[derive(Debug, Default)]
pub struct PeakAlloc<A = System> {
    inner: A,
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl PeakAlloc {
    /// The system allocator, its counter at zero.
    pub const fn new() -> Self {
        Self::wrapping(System)
    }
}

impl<A> PeakAlloc<A> {
    /// `inner`, its counter at zero.
    pub const fn wrapping(inner: A) -> Self {
        Self {
            inner,
            current: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Bytes allocated now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// The most bytes allocated at once since the last [`Self::reset_peak`].
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new peak from the bytes allocated now.
    pub fn reset_peak(&self) {
        self.peak.store(self.current(), Ordering::Relaxed);
    }

    /// Runs `work` and returns its result with the most bytes it held above what was allocated when it began.
    pub fn peak_during<T>(&self, work: impl FnOnce() -> T) -> (T, usize) {
        self.reset_peak();
        let base = self.current();
        let out = work();
        (out, self.peak().saturating_sub(base))
    }

    fn grew(&self, bytes: usize) {
        let now = self.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn shrank(&self, bytes: usize) {
        self.current.fetch_sub(bytes, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the inner allocator unchanged; only counters are updated around it.
unsafe impl<A: GlobalAlloc> GlobalAlloc for PeakAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { self.inner.alloc(layout) };
        if !ptr.is_null() {
            self.grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { self.inner.alloc_zeroed(layout) };
        if !ptr.is_null() {
            self.grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.inner.dealloc(ptr, layout) };
        self.shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            self.shrank(layout.size());
            self.grew(new_size);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_peak_of_a_known_sequence_of_allocations() {
        let heap = PeakAlloc::new();
        let layout = |n| Layout::from_size_align(n, 8).unwrap();
        unsafe {
            let a = heap.alloc(layout(1000));
            let ((), peak) = heap.peak_during(|| {
                let b = heap.alloc(layout(4000));
                let b = heap.realloc(b, layout(4000), 6000);
                heap.dealloc(b, layout(6000));
                let c = heap.alloc_zeroed(layout(500));
                heap.dealloc(c, layout(500));
            });
            // 1000 held before; the work peaked at 6000 more (the realloc counts the new size once it succeeds).
            assert_eq!(peak, 6000);
            assert_eq!(heap.current(), 1000);
            heap.dealloc(a, layout(1000));
        }
        assert_eq!(heap.current(), 0);
    }
}
