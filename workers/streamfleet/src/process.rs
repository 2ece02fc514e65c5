//! What every streamfleet binary (the worker's and the benchmark's, so that the benchmark
//! measures the worker as it runs in production) does around its command: process settings
//! first thing in `main`, then the async runtime, and the error, hint and exit code at the end.

use std::future::Future;
use std::time::Duration;

use streamfleet_runtime::WorkerError;
use streamfleet_runtime::config::ConfigError;

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

/// Runs `command` on a multi-threaded runtime and exits with its code. An error is printed
/// with a hint in plain words when there is one; it exits 2 for invalid configuration, 1
/// otherwise.
pub fn run(command: impl Future<Output = anyhow::Result<i32>>) -> ! {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = crate::hints::for_error(&e) {
                eprintln!("hint: {hint}");
            }
            let config_error = e.downcast_ref::<ConfigError>().is_some()
                || matches!(
                    e.downcast_ref::<WorkerError>(),
                    Some(WorkerError::Config(_))
                );
            if config_error { 2 } else { 1 }
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}
