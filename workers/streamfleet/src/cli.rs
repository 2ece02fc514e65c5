//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use streamfleet_runtime::config::{KafkaArgs, LogFormat, TopicsArgs, WorkerArgs};

use crate::fleet::{GatewayArgs, WorkerKind};
use crate::loadgen::{LoadConfig, Topics};

fn parse_duration(s: &str) -> Result<Duration, String> {
    streamfleet_runtime::durations::parse(s)
}

/// A round-trip time for the embedded cluster: the mock counts it in whole milliseconds.
pub fn parse_rtt(s: &str) -> Result<Duration, String> {
    let rtt = parse_duration(s)?;
    if rtt.subsec_nanos() % 1_000_000 != 0 || rtt > Duration::from_secs(60) {
        return Err(format!(
            "{s:?}: the round-trip time is whole milliseconds, at most 60s"
        ));
    }
    Ok(rtt)
}

/// Partition-aware Kafka stream-processing workers for bookings, inventory and payments.
#[derive(Debug, Parser)]
#[command(name = "streamfleet", version, propagate_version = true)]
pub struct Cli {
    /// Log format (logs go to stderr; filter with RUST_LOG).
    #[arg(
        long,
        global = true,
        env = "STREAMFLEET_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole fleet on the embedded cluster with generated load, print a live summary
    /// and a final report, and exit after --duration.
    #[command(
        after_help = "Examples:\n  streamfleet demo\n  streamfleet demo --duration 2m --rate 5000\n  streamfleet demo --json > report.json"
    )]
    Demo(DemoArgs),
    /// Run one worker (one consumer-group member) against a Kafka cluster.
    #[command(
        after_help = "Examples:\n  streamfleet worker booking --brokers localhost:9092\n  streamfleet worker payment --brokers localhost:9092 --processing-guarantee exactly-once --instance-id payment-0\n  STREAMFLEET_BROKERS=kafka:9092 streamfleet worker inventory --http-addr 0.0.0.0:8080"
    )]
    Worker(WorkerCommand),
    /// Produce generated booking, inventory and payment traffic into a cluster.
    #[command(
        after_help = "Examples:\n  streamfleet produce --brokers localhost:9092 --rate 1000 --duration 60s\n  streamfleet produce --brokers localhost:9092 --count 10000"
    )]
    Produce(ProduceArgs),
    /// Schema tools.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// The topics of the topic design (declared and derived).
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Dead-letter topics: inspect them, replay their records.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Export the lag (offsets and seconds) of any consumer group as Prometheus metrics.
    #[command(
        after_help = "Examples:\n  streamfleet lag --brokers localhost:9092 --group booking --once\n  streamfleet lag --brokers localhost:9092 --group booking --http-addr 0.0.0.0:9308"
    )]
    Lag(LagArgs),
    /// Produce keyed records with per-key sequence numbers (`key-NNNNN` → `<key>:<seq>`),
    /// the workload `verify` checks.
    #[command(
        after_help = "Example:\n  streamfleet seed --brokers localhost:9092 --topic drill-in --count 100000"
    )]
    Seed(SeedArgs),
    /// Check that an output topic holds exactly the input's records, once each, in per-key
    /// order, with nothing left in an open transaction; exits 1 on any anomaly.
    #[command(
        after_help = "Example:\n  streamfleet verify --brokers localhost:9092 --input drill-in --output drill-out"
    )]
    Verify(VerifyArgs),
    /// HTTP health check for container runtimes without curl: GET the URL, exit 0 on a 2xx
    /// answer and 1 otherwise (`streamfleet probe http://127.0.0.1:8080/health/ready`).
    #[command(after_help = "Example:\n  streamfleet probe http://127.0.0.1:8080/health/ready")]
    Probe(ProbeArgs),
    /// Run librdkafka's mock cluster as a standalone process on loopback, print its bootstrap
    /// servers on stdout, and serve until interrupted: any Kafka client can use it.
    #[command(
        after_help = "Examples:\n  streamfleet dev-cluster\n  streamfleet dev-cluster --embedded-brokers 1 --no-topics --topic test:3"
    )]
    DevCluster(DevClusterArgs),
}

/// `streamfleet dev-cluster`.
#[derive(Debug, Clone, Args)]
pub struct DevClusterArgs {
    /// Brokers in the cluster (as `demo --embedded-brokers`; `--brokers` is always a cluster's
    /// bootstrap servers).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=16))]
    pub embedded_brokers: i32,
    /// Topics file whose topics (declared and derived) are created.
    #[command(flatten)]
    pub topics: TopicsArgs,
    /// Create none of the topics file's topics.
    #[arg(long)]
    pub no_topics: bool,
    /// Also create this topic, `NAME:PARTITIONS` (repeatable).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS", value_parser = parse_topic_partitions)]
    pub extra_topics: Vec<(String, i32)>,
    /// Delay every broker's responses by this long (whole milliseconds), to see clients as
    /// they behave over a network and against a replicating cluster: each produce
    /// acknowledgement, fetch and step of a transaction's commit waits for it.
    #[arg(long, value_parser = parse_rtt, default_value = "0ms")]
    pub embedded_rtt: Duration,
}

fn parse_topic_partitions(s: &str) -> Result<(String, i32), String> {
    let (name, partitions) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("expected NAME:PARTITIONS, got {s:?}"))?;
    let partitions: i32 = partitions
        .parse()
        .map_err(|_| format!("{partitions:?} is not a partition count"))?;
    if name.is_empty() || partitions < 1 {
        return Err(format!(
            "expected NAME:PARTITIONS with PARTITIONS >= 1, got {s:?}"
        ));
    }
    Ok((name.to_owned(), partitions))
}

/// `streamfleet probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The URL to GET (plain HTTP).
    pub url: String,
    /// Give up after this long.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub timeout: Duration,
}

/// `streamfleet seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic to write.
    #[arg(long)]
    pub topic: String,
    /// Records.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Continue a sequence already seeded with this many records.
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Records per second (default: as fast as the cluster takes them).
    #[arg(long)]
    pub rate: Option<u64>,
}

/// `streamfleet verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Input topic (written by `streamfleet seed`).
    #[arg(long)]
    pub input: String,
    /// Output topic (a copy of the input by a worker).
    #[arg(long)]
    pub output: String,
    /// How long an open transaction may take to finish before it counts as hanging.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub wait_stable: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `streamfleet lag`.
#[derive(Debug, Clone, Args)]
pub struct LagArgs {
    /// Cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The consumer group.
    #[arg(long)]
    pub group: String,
    /// Topic to watch (repeatable) [default: every topic of the topics file].
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Topics file.
    #[command(flatten)]
    pub topics_file: TopicsArgs,
    /// Address serving /metrics.
    #[arg(long, default_value = "0.0.0.0:9308")]
    pub http_addr: SocketAddr,
    /// How often to read the lag.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub interval: Duration,
    /// Read once, print the metrics on stdout, and exit.
    #[arg(long)]
    pub once: bool,
}

/// `streamfleet dlq`.
#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// Summarise a dead-letter topic: counts by error class and message, oldest and newest,
    /// sample records with their headers.
    #[command(
        after_help = "Example:\n  streamfleet dlq inspect --brokers localhost:9092 --topic booking-events-dlt"
    )]
    Inspect {
        /// Cluster.
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The dead-letter topic, e.g. booking-events-dlt.
        #[arg(long)]
        topic: String,
        /// Sample records shown per group.
        #[arg(long, default_value_t = 3)]
        samples: usize,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Republish dead letters to their original topics (attempts start again at 1).
    /// Progress is kept in a consumer group of its own, so an interrupted replay resumes
    /// without republishing anything twice.
    #[command(
        after_help = "Examples:\n  streamfleet dlq replay --brokers localhost:9092 --topic payment-events-dlt --error-class retries-exhausted --dry-run\n  streamfleet dlq replay --brokers localhost:9092 --topic payment-events-dlt --since 2026-12-01T00:00:00Z"
    )]
    Replay(ReplayArgs),
}

/// `streamfleet dlq replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The dead-letter topic, e.g. payment-events-dlt.
    #[arg(long)]
    pub topic: String,
    /// Only this error class (repeatable): transient, permanent, malformed, retries-exhausted.
    #[arg(long = "error-class")]
    pub error_classes: Vec<String>,
    /// Only records dead-lettered at or after this time: RFC 3339 (2026-11-21T10:00:00Z) or a
    /// duration ago (2h).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records dead-lettered before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// Only records with this key.
    #[arg(long)]
    pub key: Option<String>,
    /// Republish at most this many records (the rest stays for a later run).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Republish at most this many records per second.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Show what would be replayed; publish and commit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Consumer group recording the progress [default: derived from the topic and filters].
    #[arg(long)]
    pub group: Option<String>,
    /// Do not use transactions (for brokers without them): each batch is acknowledged, then
    /// its progress committed; a crash may repeat the batch in flight.
    #[arg(long)]
    pub no_transactions: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `streamfleet topics`.
#[derive(Debug, Clone, Subcommand)]
pub enum TopicsCommand {
    /// Show what would change on the cluster to match the topics file: creations, partition
    /// increases, config changes (old → new), topics not in the file.
    #[command(
        after_help = "Example:\n  streamfleet topics plan --brokers localhost:9092 --topics topics.yaml --detailed-exitcode"
    )]
    Plan {
        /// Planning settings.
        #[command(flatten)]
        args: ProvisionArgs,
        /// Exit 0 when nothing would change, 2 when changes are pending, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Apply the plan (asks for confirmation unless --yes), then re-read the cluster and
    /// show the result. Applying twice changes nothing the second time.
    #[command(
        after_help = "Example:\n  streamfleet topics apply --brokers localhost:9092 --topics topics.yaml --yes"
    )]
    Apply {
        /// Planning settings.
        #[command(flatten)]
        args: ProvisionArgs,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// The cluster's view of the fleet's topics: partitions, replication, configs, and the
    /// consumer groups reading them with their lag.
    #[command(after_help = "Example:\n  streamfleet topics describe --brokers localhost:9092")]
    Describe {
        /// Cluster.
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Topics file.
        #[command(flatten)]
        topics: TopicsArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print every topic as `name:partitions`, declared and derived, one per line.
    #[command(after_help = "Example:\n  streamfleet topics list --topics topics.yaml")]
    List {
        /// Topics file.
        #[command(flatten)]
        topics: TopicsArgs,
    },
}

/// Settings of `topics plan` and `topics apply`.
#[derive(Debug, Clone, Args)]
pub struct ProvisionArgs {
    /// Cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topics file.
    #[command(flatten)]
    pub topics: TopicsArgs,
    /// Delete topics in the file's scope that it does not declare (never protected ones).
    #[arg(long)]
    pub allow_delete: bool,
    /// Cap replication factors and min.insync.replicas at the broker count, with a warning,
    /// so the production file works on a one-broker development cluster.
    #[arg(long)]
    pub cap_replication: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Load generator settings.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Seed of the generated traffic (the same seed gives the same records).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Hotels to spread bookings over.
    #[arg(long, default_value_t = 200)]
    pub hotels: u32,
    /// Rooms each hotel starts with.
    #[arg(long, default_value_t = 1000)]
    pub rooms_per_hotel: i32,
    /// Share of records that are undecodable bytes (they must end in the dead-letter topics).
    #[arg(long, default_value_t = 0.005)]
    pub malformed_ratio: f64,
    /// Share of records that break a business rule (and as many illegal transitions).
    #[arg(long, default_value_t = 0.002)]
    pub invalid_ratio: f64,
    /// Share of records that are exact replays of earlier ones.
    #[arg(long, default_value_t = 0.01)]
    pub replay_ratio: f64,
}

impl LoadArgs {
    /// As a generator config.
    pub fn config(&self) -> LoadConfig {
        LoadConfig {
            seed: self.seed,
            hotels: self.hotels,
            rooms_per_hotel: self.rooms_per_hotel,
            malformed_ratio: self.malformed_ratio,
            invalid_ratio: self.invalid_ratio,
            replay_ratio: self.replay_ratio,
        }
    }
}

/// Input topic names of the generated traffic.
#[derive(Debug, Clone, Args)]
pub struct TopicNames {
    /// Booking events topic.
    #[arg(long, default_value = "booking-events")]
    pub booking_topic: String,
    /// Inventory events topic.
    #[arg(long, default_value = "inventory-events")]
    pub inventory_topic: String,
    /// Payment events topic.
    #[arg(long, default_value = "payment-events")]
    pub payment_topic: String,
}

impl TopicNames {
    /// As generator topics.
    pub fn topics(&self) -> Topics {
        Topics {
            booking: self.booking_topic.clone(),
            inventory: self.inventory_topic.clone(),
            payment: self.payment_topic.clone(),
        }
    }
}

/// `streamfleet demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long to generate load.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub duration: Duration,
    /// Generated records per second.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Brokers of the embedded cluster.
    #[arg(long, default_value_t = 3)]
    pub embedded_brokers: i32,
    /// Address of /metrics and /health (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// After the load stops, how long to wait for the workers to finish every record.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,
    /// Print the final report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Log what a worker logs (`info`), with a line per retried or dead-lettered record;
    /// by default the demo logs only warnings and errors. `RUST_LOG` overrides both.
    #[arg(long)]
    pub verbose: bool,
    /// Load settings.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Payment gateway settings.
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// `streamfleet worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerCommand {
    /// Which worker.
    #[arg(value_enum)]
    pub kind: WorkerKind,
    /// Output topic [default: inventory-events, inventory-outcomes or payment-completed].
    #[arg(long, env = "STREAMFLEET_OUTPUT_TOPIC")]
    pub output_topic: Option<String>,
    /// Cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Schema registry.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Worker settings.
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Topics file.
    #[command(flatten)]
    pub topics: TopicsArgs,
    /// Payment gateway (payment worker only).
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Testing only (passthrough): how long each record takes, so a frozen worker still holds
    /// records it has not processed.
    #[arg(long, env = "STREAMFLEET_FAULT_PROCESS_DELAY", value_parser = parse_duration, default_value = "0ms", hide = true)]
    pub fault_process_delay: Duration,
}

/// The schema registry, offered only by the commands that encode records (`worker`,
/// `produce`): elsewhere records are copied or read as bytes and it would do nothing.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Confluent schema registry URL; when set, records are written with Confluent framing.
    #[arg(long, env = "STREAMFLEET_SCHEMA_REGISTRY_URL", value_name = "URL")]
    pub schema_registry_url: Option<String>,
}

/// `streamfleet produce`.
#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    /// Cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Schema registry.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Records to produce, the opening restocks (one per hotel) included (default: until
    /// --duration, or until interrupted).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// How long to produce.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Records per second (default: as fast as the cluster takes them).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Load settings.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Topic names.
    #[command(flatten)]
    pub topic_names: TopicNames,
}

/// `streamfleet schemas`.
#[derive(Debug, Clone, Subcommand)]
pub enum SchemasCommand {
    /// Check that every version of every schema can read every other version's records
    /// (full transitive compatibility); exits 1 otherwise.
    #[command(
        after_help = "Examples:\n  streamfleet schemas check\n  streamfleet schemas check --dir schemas/"
    )]
    Check {
        /// Check the `*.vN.avsc` files under this directory instead of the built-in set.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}
