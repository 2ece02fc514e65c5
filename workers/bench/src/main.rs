//! `streamfleet-bench`: the benchmark harness, a binary of its own so that the shipped
//! `streamfleet` carries none of it. It measures the worker's code as the worker runs it: the
//! same allocator and process settings, the runtime and fleet from the `streamfleet` crates.
//!
//! - [`orchestrator`]: the cluster, the seeded input, the rounds of runs, the report;
//! - [`participant`]: one measured worker, a child process of the orchestrator;
//! - [`measure`]: what a participant reports and how runs combine into figures and targets.

mod cli;
mod measure;
mod orchestrator;
mod participant;

use clap::Parser;
use cli::{Cli, Internal};
use streamfleet_runtime::telemetry;

/// The worker's allocator (see the `streamfleet` binary): the benchmark measures it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    streamfleet::process::no_transparent_huge_pages();
    let cli = Cli::parse();
    telemetry::init(cli.log_format, telemetry::DEFAULT_FILTER);
    streamfleet::process::run(async move {
        match cli.internal {
            None => orchestrator::run(cli.args).await,
            Some(Internal::Participant) => participant::run().await,
            Some(Internal::DevCluster(args)) => streamfleet::commands::dev_cluster::run(args).await,
        }
    })
}
