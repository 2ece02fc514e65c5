//! `streamfleet worker <booking|inventory|payment>`: one consumer-group member against a
//! real cluster, with its HTTP endpoint, until SIGTERM/SIGINT.

use streamfleet_payment::GatewayConfig;
use streamfleet_runtime::config::{ConfigError, WorkerConfig};
use streamfleet_runtime::health::Health;
use streamfleet_runtime::metrics::Metrics;
use streamfleet_runtime::retry::RetryPolicy;
use streamfleet_runtime::{CancellationToken, http};
use streamfleet_schemas::Encoding;

use crate::cli::WorkerCommand;
use crate::{fleet, signals};

/// A worker command's validated settings: everything checked before anything starts.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The worker's configuration.
    pub config: WorkerConfig,
    /// The output topic.
    pub output: String,
    /// The simulated payment gateway.
    pub gateway: GatewayConfig,
}

/// Reads the topics file and validates every setting of `cmd`; the error names the field.
pub fn resolve(cmd: &WorkerCommand) -> anyhow::Result<Resolved> {
    let topology = fleet::topology(cmd.topics.topics_file.as_deref())?;
    let name = cmd.kind.name();
    let sources = if cmd.worker.input_topics.is_empty() {
        topology.sources_of(name)
    } else {
        cmd.worker
            .input_topics
            .iter()
            .map(|t| {
                // A topic the file does not declare has no retry rungs: its failures go
                // straight to <topic>-dlt.
                let policy = topology.get(t).and_then(|s| s.retry.clone()).unwrap_or_else(|| {
                    tracing::info!(topic = %t, "not in the topics file: no retry rungs, failures go to {t}-dlt");
                    RetryPolicy { attempts: 1, ..RetryPolicy::default() }
                });
                (t.clone(), policy)
            })
            .collect()
    };
    let mut config = WorkerConfig::from_args(name, &cmd.kafka, &cmd.worker, sources)?;
    config.apply_topology(&topology);
    let gateway = cmd.gateway.config()?;
    let output = cmd
        .output_topic
        .clone()
        .or_else(|| cmd.kind.default_output().map(str::to_owned))
        .ok_or_else(|| ConfigError::Invalid {
            field: "--output-topic".into(),
            message: format!("required for the {} worker", cmd.kind.name()),
        })?;
    Ok(Resolved {
        config,
        output,
        gateway,
    })
}

/// Runs the worker; returns the process exit code.
pub async fn run(cmd: WorkerCommand) -> anyhow::Result<i32> {
    let Resolved {
        config,
        output,
        gateway,
    } = resolve(&cmd)?;
    let encoding = Encoding::new(cmd.registry.schema_registry_url.as_deref());
    let metrics = Metrics::default();
    let health = Health::default();
    let shutdown = signals::shutdown_on_signals()?;
    let http_stop = CancellationToken::new();
    let (_, server) = http::serve(
        cmd.worker.http_addr,
        metrics.registry().clone(),
        health.clone(),
        http_stop.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen on --http-addr {}: {e}", cmd.worker.http_addr))?;
    let fleet = fleet::Fleet {
        encoding: &encoding,
        metrics: &metrics,
        health: &health,
        gateway,
        fault_process_delay: cmd.fault_process_delay,
    };
    let running = fleet.start(cmd.kind, config, &output, shutdown)?;
    let result = running.task.await?;
    http_stop.cancel();
    let _ = server.await;
    match result {
        Ok(report) => {
            tracing::info!(worker = %report.worker, group = %report.group, stats = ?report.stats, "exiting");
            Ok(0)
        }
        Err(e) => {
            tracing::error!(error = %e, "worker stopped");
            Ok(e.exit_code())
        }
    }
}
