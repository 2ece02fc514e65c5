//! Process settings every streamfleet binary makes first thing in `main` (the worker's and
//! the benchmark's, so that the benchmark measures the worker as it runs in production).

/// Transparent huge pages off for this process and the ones it starts, unless
/// `MIMALLOC_ALLOW_THP` is set (then mimalloc's own setting applies). mimalloc asks the
/// kernel to back its memory with 2 MiB pages, and a worker touches that memory sparsely:
/// the kernel zeroed a whole 2 MiB page for the first touch of each, which was 5 % of the
/// worker's CPU samples, and peak RSS was a fifth higher.
#[allow(unsafe_code)]
pub fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE passes no pointers; it sets one flag of this process, which
    // its children inherit. It fails only on kernels without it, where there is nothing to do.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
