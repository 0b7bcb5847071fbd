//! Allocator settings for a process that builds new Arrow buffers for every micro-batch.
//!
//! glibc malloc serves a request above its mmap threshold (128 KiB at start, raised as large
//! blocks are freed, to at most 32 MiB) with a fresh `mmap` and unmaps it on free, and returns
//! the free top of its heaps to the kernel above the trim threshold. The multi-megabyte column
//! buffers of each batch were then faulted in page by page, batch after batch: decoding the
//! SpamAssassin corpus into batches took 40,000 page faults and a third of its time
//! (`bench_data_path decode`: 5.2 µs per record, 3.6 µs with these settings).

/// Requests below this come from malloc's heaps, whose freed blocks are reused.
pub const MMAP_THRESHOLD: i32 = 64 << 20;
/// Free memory a heap keeps for reuse before returning it to the kernel.
pub const TRIM_THRESHOLD: i32 = 256 << 20;

/// Applies [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`]. Call once at process start, before any
/// other thread exists. A no-op where the C library is not glibc.
#[allow(unsafe_code)]
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters, and glibc allows it to be called at any
    // time; callers run it before other threads start, as glibc recommends (MT-unsafe init).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
