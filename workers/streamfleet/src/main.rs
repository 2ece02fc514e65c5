//! `streamfleet`: see `streamfleet --help`.

use clap::Parser;
use streamfleet::cli::{Cli, Command, SchemasCommand, TopicsCommand};
use streamfleet::commands;
use streamfleet_runtime::WorkerError;
use streamfleet_runtime::config::ConfigError;
use streamfleet_runtime::telemetry;

fn main() {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
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
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Worker(cmd) => commands::worker::run(cmd).await,
            Command::Produce(args) => commands::produce::run(args).await,
            Command::Schemas(SchemasCommand::Check { dir }) => {
                commands::schemas::check(dir.as_deref())
            }
            Command::Topics(TopicsCommand::List { topics }) => commands::topics::list(&topics),
            Command::Dlq(cmd) => commands::dlq::run(cmd).await,
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let config_error = e.downcast_ref::<ConfigError>().is_some()
                || matches!(
                    e.downcast_ref::<WorkerError>(),
                    Some(WorkerError::Config(_))
                );
            if config_error { 2 } else { 1 }
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
