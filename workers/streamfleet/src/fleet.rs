//! The three domain workers as the binary runs them: which processor, which topics.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use streamfleet_booking::BookingProcessor;
use streamfleet_inventory::InventoryProcessor;
use streamfleet_payment::{GatewayConfig, PaymentProcessor, SimulatedGateway};
use streamfleet_runtime::config::{ConfigError, WorkerConfig};
use streamfleet_runtime::headers;
use streamfleet_runtime::health::Health;
use streamfleet_runtime::metrics::{Metrics, WorkerStats};
use streamfleet_runtime::topology::Topology;
use streamfleet_runtime::{
    CancellationToken, Outcome, OutputRecord, ProcessError, Processor, RawRecord, Record, Worker,
    WorkerError, WorkerReport,
};
use streamfleet_schemas::Encoding;
use tokio::task::JoinHandle;

/// The topics file compiled into the binary (the repository's `topics.yaml`).
pub const BUILTIN_TOPICS: &str = include_str!("../../../topics.yaml");

/// The built-in topology.
pub fn builtin_topology() -> Topology {
    Topology::parse("topics.yaml (built in)", BUILTIN_TOPICS)
        .expect("the built-in topics.yaml is valid")
}

/// Loads `path`, or the built-in file.
pub fn topology(path: Option<&std::path::Path>) -> Result<Topology, ConfigError> {
    match path {
        Some(p) => Topology::load(p),
        None => Ok(builtin_topology()),
    }
}

/// A domain worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum WorkerKind {
    /// `booking-events` → `inventory-events`.
    Booking,
    /// `inventory-events` → `inventory-outcomes`.
    Inventory,
    /// `payment-events` → `payment-completed`.
    Payment,
    /// Copies `--input-topic` to `--output-topic` unchanged (key, value, headers): the
    /// workload of the exactly-once tests and the floor of the benchmarks.
    Passthrough,
}

impl WorkerKind {
    /// All three, in pipeline order.
    pub const ALL: [WorkerKind; 3] = [
        WorkerKind::Booking,
        WorkerKind::Inventory,
        WorkerKind::Payment,
    ];

    /// The worker's name: metric label, topics-file owner, default group suffix.
    pub fn name(self) -> &'static str {
        match self {
            WorkerKind::Booking => "booking",
            WorkerKind::Inventory => "inventory",
            WorkerKind::Payment => "payment",
            WorkerKind::Passthrough => "passthrough",
        }
    }

    /// Where its outputs go by default (passthrough has none: --output-topic is required).
    pub fn default_output(self) -> Option<&'static str> {
        match self {
            WorkerKind::Booking => Some(streamfleet_booking::DEFAULT_OUTPUT_TOPIC),
            WorkerKind::Inventory => Some(streamfleet_inventory::DEFAULT_OUTPUT_TOPIC),
            WorkerKind::Payment => Some(streamfleet_payment::DEFAULT_OUTPUT_TOPIC),
            WorkerKind::Passthrough => None,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    streamfleet_runtime::durations::parse(s)
}

/// The simulated payment gateway's settings.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Time each simulated charge takes.
    #[arg(long, env = "STREAMFLEET_GATEWAY_LATENCY", value_parser = parse_duration, default_value = "2ms")]
    pub gateway_latency: Duration,
    /// Share of simulated charges that fail transiently (0 to 1).
    #[arg(long, env = "STREAMFLEET_GATEWAY_FAILURE_RATE", default_value_t = 0.02)]
    pub gateway_failure_rate: f64,
    /// Seed of the simulated failures.
    #[arg(long, env = "STREAMFLEET_GATEWAY_SEED", default_value_t = 42)]
    pub gateway_seed: u64,
}

impl GatewayArgs {
    /// As a validated gateway config.
    pub fn config(&self) -> Result<GatewayConfig, ConfigError> {
        let config = GatewayConfig {
            latency: self.gateway_latency,
            failure_rate: self.gateway_failure_rate,
            seed: self.gateway_seed,
        };
        SimulatedGateway::new(config).map_err(|message| ConfigError::Invalid {
            field: "--gateway-failure-rate".into(),
            message,
        })?;
        Ok(config)
    }
}

/// Copies each record to the output topic unchanged: key, value and its own headers.
pub struct Passthrough {
    /// Output topic.
    pub output: String,
    /// Testing only: how long each record takes (`--fault-process-delay`), so a test can
    /// freeze a worker that still holds unprocessed records.
    pub delay: Duration,
}

impl Passthrough {
    /// A copier to `output`, as fast as it goes.
    pub fn to(output: impl Into<String>) -> Self {
        Self {
            output: output.into(),
            delay: Duration::ZERO,
        }
    }
}

impl Processor for Passthrough {
    type Input = ();
    type State = ();

    fn decode(&self, _: &RawRecord) -> Result<(), ProcessError> {
        Ok(())
    }

    async fn process(&self, _: &mut (), record: &Record<'_, ()>) -> Result<Outcome, ProcessError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Ok(Outcome::Emit(vec![OutputRecord {
            topic: self.output.clone(),
            key: record.raw.key.clone(),
            value: record.raw.value.clone(),
            headers: headers::user_headers(&record.raw.headers),
            partition: None,
        }]))
    }
}

/// A started worker.
pub struct RunningWorker {
    /// Which one.
    pub kind: WorkerKind,
    /// Its live totals.
    pub stats: Arc<WorkerStats>,
    /// Resolves when it stops.
    pub task: JoinHandle<Result<WorkerReport, WorkerError>>,
}

fn spawn<P: Processor>(
    kind: WorkerKind,
    worker: Worker<P>,
    shutdown: CancellationToken,
) -> RunningWorker {
    RunningWorker {
        kind,
        stats: worker.stats(),
        task: tokio::spawn(worker.run(shutdown)),
    }
}

/// What the workers of one process share: the wire format, the metrics and health
/// registries, and the payment gateway's settings.
pub struct Fleet<'a> {
    /// Wire format of the records the workers write.
    pub encoding: &'a Encoding,
    /// Metric families.
    pub metrics: &'a Metrics,
    /// Health registry.
    pub health: &'a Health,
    /// Payment gateway settings.
    pub gateway: GatewayConfig,
    /// Testing only: the passthrough worker's time per record.
    pub fault_process_delay: Duration,
}

impl Fleet<'_> {
    /// Builds the processor of `kind` and starts it as a worker.
    pub fn start(
        &self,
        kind: WorkerKind,
        config: WorkerConfig,
        output_topic: &str,
        shutdown: CancellationToken,
    ) -> Result<RunningWorker, WorkerError> {
        let input = config
            .sources
            .first()
            .map(|(t, _)| t.clone())
            .unwrap_or_default();
        let invalid = |field: &str, message: String| {
            WorkerError::Config(ConfigError::Invalid {
                field: field.into(),
                message,
            })
        };
        let (encoding, metrics, health) = (self.encoding, self.metrics.clone(), self.health);
        let retention = config.state_retention.get(&input).copied();
        Ok(match kind {
            WorkerKind::Booking => {
                let p = BookingProcessor::new(
                    encoding,
                    &input,
                    output_topic,
                    retention.unwrap_or(streamfleet_booking::DEFAULT_RETENTION),
                )
                .map_err(|m| invalid("schemas", m))?;
                spawn(kind, Worker::new(config, p, metrics, health), shutdown)
            }
            WorkerKind::Inventory => {
                let p = InventoryProcessor::new(
                    encoding,
                    &input,
                    output_topic,
                    retention.unwrap_or(streamfleet_inventory::DEFAULT_RETENTION),
                )
                .map_err(|m| invalid("schemas", m))?;
                spawn(kind, Worker::new(config, p, metrics, health), shutdown)
            }
            WorkerKind::Passthrough => {
                let p = Passthrough {
                    delay: self.fault_process_delay,
                    ..Passthrough::to(output_topic)
                };
                spawn(kind, Worker::new(config, p, metrics, health), shutdown)
            }
            WorkerKind::Payment => {
                let gateway = SimulatedGateway::new(self.gateway)
                    .map_err(|m| invalid("--gateway-failure-rate", m))?;
                let p = PaymentProcessor::new(
                    encoding,
                    &input,
                    output_topic,
                    gateway,
                    retention.unwrap_or(streamfleet_payment::DEFAULT_RETENTION),
                )
                .map_err(|m| invalid("schemas", m))?;
                spawn(kind, Worker::new(config, p, metrics, health), shutdown)
            }
        })
    }
}
