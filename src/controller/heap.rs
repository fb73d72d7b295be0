//! The process heap of a long-running controller, on glibc. Its malloc keeps freed memory and,
//! with one arena per thread that ever contended, spreads it thin: after a burst (10,000 new
//! objects pushed and written at once) the resident set stays at the burst's peak, though the
//! controller's own data is a fraction of it. Two arenas, and the freed pages handed back every
//! half minute, keep the resident set near what is in use. Elsewhere (musl, other allocators)
//! this does nothing.

use std::time::Duration;

/// How often freed memory is handed back to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// At most two malloc arenas (glibc's default is eight per core).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands freed heap pages back to the kernel, now and every [`TRIM_EVERY`], for ever.
pub async fn trim_periodically() {
    loop {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim releases free memory only; it takes the allocator's own locks.
        unsafe {
            libc::malloc_trim(0);
        }
        tokio::time::sleep(TRIM_EVERY).await;
    }
}
