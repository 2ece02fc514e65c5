//! The benchmark's command line.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use streamfleet::cli::{DevClusterArgs, parse_rtt};
use streamfleet_runtime::config::{KafkaArgs, LogFormat};

fn parse_duration(s: &str) -> Result<Duration, String> {
    streamfleet_runtime::durations::parse(s)
}

/// Measure throughput, end-to-end latency, CPU and memory of one streamfleet worker over a
/// seeded backlog (or a fixed input rate), per processing mode, optionally beside independent
/// peers on the same cluster.
#[derive(Debug, Parser)]
#[command(
    name = "streamfleet-bench",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  streamfleet-bench\n  streamfleet-bench --brokers localhost:9092 --records 500000\n  scripts/bench-peers --records 500000        (beside Python and Java copiers, on Apache Kafka)"
)]
pub struct Cli {
    /// What to measure.
    #[command(flatten)]
    pub args: BenchArgs,
    /// Log format (stderr).
    #[arg(long, env = "STREAMFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// The benchmark's own child processes.
    #[command(subcommand)]
    pub internal: Option<Internal>,
}

/// Child processes the benchmark starts from its own binary.
#[derive(Debug, Subcommand)]
pub enum Internal {
    /// One measured worker (settings from the BENCH_* environment).
    #[command(hide = true)]
    Participant,
    /// The embedded cluster, in a process of its own so that its CPU is not the worker's.
    #[command(hide = true)]
    DevCluster(DevClusterArgs),
}

/// `streamfleet-bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Mode to measure (repeatable, in this order) [default: passthrough, at-least-once,
    /// exactly-once].
    #[arg(long = "mode", value_enum)]
    pub modes: Vec<BenchMode>,
    /// Booking events to seed (keyed, Avro).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Runs per mode; the report shows the median of each figure.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Produce the input at this many records/s while the worker runs, instead of seeding a
    /// backlog first (latency at a known load).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Skip the latency run (at-least-once at half of its measured throughput) that follows
    /// the backlog runs.
    #[arg(long)]
    pub no_latency_run: bool,
    /// Commit interval of the latency runs, and of every at-least-once run under --rate:
    /// end-to-end latency is measured to the offset commit, so it cannot be below it.
    #[arg(long, value_parser = parse_duration, default_value = "10ms")]
    pub latency_commit_interval: Duration,
    /// Exactly-once commit interval.
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub commit_interval: Duration,
    /// Exactly-once: transactional producers (transaction groups) of the worker, as the
    /// worker's `--transactional-producers`.
    #[arg(long, default_value_t = streamfleet_runtime::config::WorkerConfig::DEFAULT_TRANSACTIONAL_PRODUCERS)]
    pub transactional_producers: usize,
    /// Exactly-once: a transaction commits once it holds this many records, before its
    /// interval is up, as the worker's `--commit-records`; `--json` reports how many
    /// transactions each run committed.
    #[arg(
        long,
        default_value_t = streamfleet_runtime::config::WorkerConfig::DEFAULT_COMMIT_RECORDS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub commit_records: u64,
    /// Also run a peer over the same input on the same cluster and report our figures as
    /// ratios of its: `[NAME:]MODE=COMMAND`, e.g. `python:at-least-once=...` (repeatable; the
    /// name defaults to `peer`; see scripts/bench-peers).
    #[arg(long = "peer", value_name = "[NAME:]MODE=COMMAND", value_parser = parse_peer)]
    pub peers: Vec<Peer>,
    /// A broker process of the cluster at --brokers that runs on this machine (repeatable):
    /// its CPU is sampled over each run and reported beside the participant's, so the report
    /// shows which side bounds a run.
    #[arg(long = "broker-pid", value_name = "PID")]
    pub broker_pids: Vec<u32>,
    /// Measure on the embedded cluster (the default without --brokers), even when
    /// STREAMFLEET_BROKERS is set.
    #[arg(long)]
    pub embedded: bool,
    /// Brokers of the embedded cluster.
    #[arg(long, default_value_t = 3)]
    pub embedded_brokers: i32,
    /// Delay every response of the embedded cluster's brokers by this long, as
    /// `dev-cluster --embedded-rtt` (a network and a replicating cluster, roughly: commits and
    /// acknowledgements take longer).
    #[arg(long, value_parser = parse_rtt, default_value = "0ms")]
    pub embedded_rtt: Duration,
    /// Keep the benchmark topics on an external cluster (they are deleted by default).
    #[arg(long)]
    pub keep_topics: bool,
    /// Cluster: --brokers measures against an existing cluster instead of an embedded one.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a benchmark run measures.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum BenchMode {
    /// Consume → produce the bytes unchanged, at-least-once: the client and broker alone.
    Passthrough,
    /// The booking processor (Avro decode, validation, encode), at-least-once.
    AtLeastOnce,
    /// The booking processor, exactly-once (transactions).
    ExactlyOnce,
}

impl BenchMode {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Passthrough => "passthrough",
            BenchMode::AtLeastOnce => "at-least-once",
            BenchMode::ExactlyOnce => "exactly-once",
        }
    }
}

/// A peer of `bench --peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// What it is (`python`, `java`); labels its rows.
    pub name: String,
    /// The guarantee it runs with.
    pub mode: BenchMode,
    /// The shell command that starts it.
    pub command: String,
}

fn parse_peer(s: &str) -> Result<Peer, String> {
    use clap::ValueEnum as _;
    let (head, command) = s
        .split_once('=')
        .ok_or_else(|| format!("expected [NAME:]MODE=COMMAND, got {s:?}"))?;
    let (name, mode) = head.split_once(':').unwrap_or(("peer", head));
    let mode = BenchMode::from_str(mode, false).map_err(|e| format!("{mode:?}: {e}"))?;
    if command.trim().is_empty() {
        return Err("the peer command is empty".into());
    }
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("the peer name {name:?} must be one word"));
    }
    Ok(Peer {
        name: name.to_owned(),
        mode,
        command: command.to_owned(),
    })
}
