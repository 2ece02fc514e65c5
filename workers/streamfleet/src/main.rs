//! `streamfleet`: see `streamfleet --help`.

use clap::Parser;
use streamfleet::cli::{Cli, Command, SchemasCommand, TopicsCommand};
use streamfleet::commands;
use streamfleet_runtime::telemetry;

/// mimalloc instead of glibc's allocator: a worker allocates and frees a few small buffers
/// per record on many threads, and glibc's malloc/free were a fifth of the CPU profile
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Restores the default SIGPIPE action, so `streamfleet topics list | head` ends quietly
/// like any Unix tool instead of panicking on a closed stdout (Rust ignores SIGPIPE). Only
/// for the short-lived commands that print: a worker keeps SIGPIPE ignored, so a write to a
/// closed socket (say through OpenSSL) is an error it handles, never a signal that kills it.
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; it only sets the
    // disposition of SIGPIPE back to the default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    streamfleet::process::no_transparent_huge_pages();
    let cli = Cli::parse();
    let long_running = match &cli.command {
        Command::Worker(_) | Command::Demo(_) | Command::DevCluster(_) => true,
        Command::Lag(args) => !args.once,
        _ => false,
    };
    if !long_running {
        default_sigpipe();
    }
    let log_filter = match &cli.command {
        Command::Demo(args) => commands::demo::log_filter(args),
        _ => telemetry::DEFAULT_FILTER,
    };
    telemetry::init(cli.log_format, log_filter);
    streamfleet::process::run(async move {
        match cli.command {
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Worker(cmd) => commands::worker::run(cmd).await,
            Command::Produce(args) => commands::produce::run(args).await,
            Command::Schemas(SchemasCommand::Check { dir }) => {
                commands::schemas::check(dir.as_deref())
            }
            Command::Topics(TopicsCommand::List { topics }) => commands::topics::list(&topics),
            Command::Topics(cmd) => commands::topics::run(cmd).await,
            Command::Dlq(cmd) => commands::dlq::run(cmd).await,
            Command::Lag(args) => commands::lag::run(args).await,
            Command::Seed(args) => commands::sequence::seed(args).await,
            Command::Verify(args) => commands::sequence::verify(args).await,
            Command::Probe(args) => commands::probe::run(args).await,
            Command::DevCluster(args) => commands::dev_cluster::run(args).await,
        }
    })
}
