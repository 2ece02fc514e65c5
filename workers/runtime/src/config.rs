//! Worker configuration: the validated settings a worker runs with, and the command-line and
//! environment surface they come from.
//!
//! Every setting is a clap flag with a `STREAMFLEET_*` environment variable. librdkafka
//! properties pass through as `-X key=value` (as kcat does; `consumer.key=value` or
//! `producer.key=value` sets one client only) or as `STREAMFLEET_KAFKA_<KEY>` environment
//! variables with dots written as underscores (`STREAMFLEET_KAFKA_SASL_PASSWORD`), the usual
//! way to hand a secret to a pod. Validation stops with a message naming the offending field;
//! secrets never appear in logs or `Debug` output.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::properties::{KafkaProperty, PropertyError, kafka_properties_from_env};

/// Why a configuration was refused. Every message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A streamfleet setting is invalid.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Flag or environment variable.
        field: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// A librdkafka property is unknown, invalid, or managed by streamfleet.
    #[error("invalid Kafka property {property}: {message}")]
    Kafka {
        /// Property name as given.
        property: String,
        /// librdkafka's or streamfleet's message.
        message: String,
    },
    /// The topics file is invalid.
    #[error("{0}")]
    Topics(String),
}

impl From<PropertyError> for ConfigError {
    fn from(e: PropertyError) -> Self {
        ConfigError::Kafka {
            property: e.property,
            message: e.message,
        }
    }
}

impl ConfigError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Librdkafka `partition.assignment.strategy` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AssignmentStrategy {
    /// Incremental cooperative rebalancing: only moved partitions stop.
    CooperativeSticky,
    /// Eager range assignment.
    Range,
    /// Eager round-robin assignment.
    Roundrobin,
}

impl AssignmentStrategy {
    /// The librdkafka spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::Roundrobin => "roundrobin",
        }
    }
}

/// How a worker turns consumed records into committed progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
pub enum ProcessingGuarantee {
    /// Offsets are committed after every output of a record is acknowledged; a crash can
    /// produce a record's outputs again.
    #[default]
    AtLeastOnce,
    /// Outputs, retry and dead-letter records, state changes and consumed offsets commit in
    /// one Kafka transaction (read_committed consumers see each output exactly once).
    ExactlyOnce,
}

impl ProcessingGuarantee {
    /// The default commit interval: 1 s at least once, 100 ms exactly once (as Kafka Streams).
    pub const fn default_commit_interval(self) -> Duration {
        match self {
            ProcessingGuarantee::AtLeastOnce => Duration::from_secs(1),
            ProcessingGuarantee::ExactlyOnce => Duration::from_millis(100),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::durations::parse(s)
}

fn parse_property(s: &str) -> Result<KafkaProperty, String> {
    KafkaProperty::parse(s).map_err(|e| e.to_string())
}

/// Settings shared by every command that talks to Kafka.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Bootstrap servers, `host:port[,host:port...]`.
    #[arg(
        long,
        short = 'b',
        env = "STREAMFLEET_BROKERS",
        value_name = "HOST:PORT"
    )]
    pub brokers: Option<String>,
    /// librdkafka property (repeatable), as kcat's -X: `key=value`; prefix `consumer.` or
    /// `producer.` to set one client only. `STREAMFLEET_KAFKA_<KEY>` variables add more.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    pub properties: Vec<KafkaProperty>,
    /// How long to wait for the first broker to accept a connection before giving up.
    #[arg(
        long,
        env = "STREAMFLEET_CONNECT_TIMEOUT",
        value_parser = parse_duration,
        default_value = "10s"
    )]
    pub connect_timeout: Duration,
}

impl KafkaArgs {
    /// `-X` properties followed by those of the process environment.
    pub fn all_properties(&self) -> Result<Vec<KafkaProperty>, ConfigError> {
        let mut props = self.properties.clone();
        props.extend(kafka_properties_from_env(std::env::vars())?);
        Ok(props)
    }

    /// The brokers (required) and every property, checked: what a command that talks to a
    /// cluster needs before it connects.
    pub fn cluster(&self) -> Result<(String, Vec<KafkaProperty>), ConfigError> {
        let brokers = self.brokers.clone().ok_or_else(|| ConfigError::Invalid {
            field: "--brokers (STREAMFLEET_BROKERS)".into(),
            message: "required".into(),
        })?;
        let props = self.all_properties()?;
        crate::properties::validate(&props)?;
        Ok((brokers, props))
    }
}

/// Settings of one worker process, as flags and environment variables.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Consumer group id [default: streamfleet-<worker>].
    #[arg(long, env = "STREAMFLEET_GROUP_ID")]
    pub group_id: Option<String>,
    /// Static group membership (`group.instance.id`), e.g. the pod name: a restart within
    /// the session timeout gets its partitions back without a rebalance.
    #[arg(long, env = "STREAMFLEET_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Partition assignment strategy.
    #[arg(long, env = "STREAMFLEET_ASSIGNMENT_STRATEGY", value_enum, default_value_t = AssignmentStrategy::CooperativeSticky)]
    pub assignment_strategy: AssignmentStrategy,
    /// Records buffered per partition before the partition is paused (it resumes once half
    /// of them are processed).
    #[arg(long, env = "STREAMFLEET_LANE_CAPACITY", default_value_t = WorkerConfig::DEFAULT_LANE_CAPACITY)]
    pub lane_capacity: usize,
    /// Memory for fetched records until their outputs are acknowledged (waiting, in
    /// processing, in flight, outputs and librdkafka's copies of them included), in MiB,
    /// shared by every assigned partition:
    /// a partition is also paused once it holds its share (this divided by the assigned
    /// partitions), so the bound holds however many partitions a worker gets.
    #[arg(long, env = "STREAMFLEET_MAX_BUFFERED_MIB", default_value_t = WorkerConfig::DEFAULT_MAX_BUFFERED_MIB)]
    pub max_buffered_mib: usize,
    /// Partitions processed at the same time, at most.
    #[arg(long, env = "STREAMFLEET_MAX_CONCURRENCY", default_value_t = WorkerConfig::DEFAULT_MAX_CONCURRENCY)]
    pub max_concurrency: usize,
    /// Delivery guarantee: at-least-once, or exactly-once (Kafka transactions).
    #[arg(long, env = "STREAMFLEET_PROCESSING_GUARANTEE", value_enum, default_value_t = ProcessingGuarantee::AtLeastOnce)]
    pub processing_guarantee: ProcessingGuarantee,
    /// How often progress is committed [default: 1s; 100ms with exactly-once].
    #[arg(long, env = "STREAMFLEET_COMMIT_INTERVAL", value_parser = parse_duration)]
    pub commit_interval: Option<Duration>,
    /// Exactly-once: also commit once a transaction holds this many records.
    #[arg(long, env = "STREAMFLEET_COMMIT_RECORDS", default_value_t = WorkerConfig::DEFAULT_COMMIT_RECORDS)]
    pub commit_records: u64,
    /// Exactly-once: transactional producers of one worker, each serving the partitions
    /// whose number modulo this is its index, with its own transaction; while one commits,
    /// the partitions of the others go on.
    #[arg(long, env = "STREAMFLEET_TRANSACTIONAL_PRODUCERS", default_value_t = WorkerConfig::DEFAULT_TRANSACTIONAL_PRODUCERS)]
    pub transactional_producers: usize,
    /// Testing only (exactly-once): abort this share of transactions on purpose, 0 to 1.
    #[arg(
        long,
        env = "STREAMFLEET_FAULT_ABORT_PROBABILITY",
        default_value_t = 0.0
    )]
    pub fault_abort_probability: f64,
    /// Longest graceful shutdown (finish in-flight records, flush, commit, leave the group).
    #[arg(long, env = "STREAMFLEET_SHUTDOWN_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub shutdown_timeout: Duration,
    /// Input topic, overriding the topics file's owner entry (repeatable).
    #[arg(
        long = "input-topic",
        env = "STREAMFLEET_INPUT_TOPICS",
        value_delimiter = ','
    )]
    pub input_topics: Vec<String>,
    /// `ordering: key`: records parked behind their key's record in the retry path, per source
    /// partition, before the partition stops taking records.
    #[arg(long, env = "STREAMFLEET_MAX_WAITING_RECORDS", default_value_t = WorkerConfig::DEFAULT_MAX_WAITING_RECORDS)]
    pub max_waiting_records: usize,
    /// `ordering: key`: MiB of parked records per source partition before it stops taking
    /// records.
    #[arg(long, env = "STREAMFLEET_MAX_WAITING_MIB", default_value_t = WorkerConfig::DEFAULT_MAX_WAITING_MIB)]
    pub max_waiting_mib: usize,
    /// Address of the HTTP endpoint serving /metrics, /health/live and /health/ready.
    #[arg(long, env = "STREAMFLEET_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
}

/// The validated settings a worker runs with.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker name (`booking`, ...): the `worker` metric label and the default group suffix.
    pub worker: String,
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Static membership id, if any.
    pub instance_id: Option<String>,
    /// Assignment strategy.
    pub assignment_strategy: AssignmentStrategy,
    /// Per-partition queue bound.
    pub lane_capacity: usize,
    /// Worker-wide bound on the bytes of records held from fetch to acknowledgement, in MiB.
    pub max_buffered_mib: usize,
    /// Concurrently processed partitions.
    pub max_concurrency: usize,
    /// Delivery guarantee.
    pub guarantee: ProcessingGuarantee,
    /// Commit period.
    pub commit_interval: Duration,
    /// Exactly-once: commit once a transaction holds this many records.
    pub commit_records: u64,
    /// Exactly-once: transactional producers (transaction groups) of the worker.
    pub transactional_producers: usize,
    /// Testing: share of transactions aborted on purpose.
    pub fault_abort_probability: f64,
    /// Changelog topic of each source topic with durable state.
    pub changelogs: std::collections::HashMap<String, String>,
    /// How long each source's state remembers an entity (`state.retention`), for the
    /// processor to apply; absent: the processor's default.
    pub state_retention: std::collections::HashMap<String, Duration>,
    /// How each source topic keeps order through retries (absent: `key`).
    pub ordering: std::collections::HashMap<String, crate::ordering::Ordering>,
    /// `ordering: key`: parked records per source partition before it stops taking records.
    pub max_waiting_records: usize,
    /// `ordering: key`: MiB of parked records per source partition.
    pub max_waiting_mib: usize,
    /// Shutdown deadline.
    pub shutdown_timeout: Duration,
    /// Longest wait for revoked partitions to finish their in-flight records.
    pub revoke_timeout: Duration,
    /// User librdkafka properties.
    pub kafka: Vec<KafkaProperty>,
    /// Source topics with their retry policies.
    pub sources: Vec<(String, crate::retry::RetryPolicy)>,
}

impl WorkerConfig {
    /// Default per-partition queue bound.
    pub const DEFAULT_LANE_CAPACITY: usize = 10_000;
    /// Default worker-wide buffer for fetched records, in MiB.
    pub const DEFAULT_MAX_BUFFERED_MIB: usize = 64;
    /// Default concurrency bound.
    pub const DEFAULT_MAX_CONCURRENCY: usize = 64;
    /// Default records per transaction before an early commit: a bound for bursts only. At
    /// 10,000 it ended most transactions before the 100 ms interval at benchmark speed, and
    /// with commits a few round trips long that cost throughput (18 % with every broker response 5 ms late).
    pub const DEFAULT_COMMIT_RECORDS: u64 = 100_000;
    /// Default transactional producers of an exactly-once worker.
    pub const DEFAULT_TRANSACTIONAL_PRODUCERS: usize = 2;
    /// Default bound of parked records per source partition (`ordering: key`).
    pub const DEFAULT_MAX_WAITING_RECORDS: usize = 10_000;
    /// Default bound of parked MiB per source partition (`ordering: key`).
    pub const DEFAULT_MAX_WAITING_MIB: usize = 16;
    /// Most transactional producers of one worker.
    pub const MAX_TRANSACTIONAL_PRODUCERS: usize = 16;

    /// A configuration with defaults for everything but the essentials.
    pub fn new(
        worker: impl Into<String>,
        brokers: impl Into<String>,
        sources: Vec<(String, crate::retry::RetryPolicy)>,
    ) -> Self {
        let worker = worker.into();
        Self {
            group_id: format!("streamfleet-{worker}"),
            worker,
            brokers: brokers.into(),
            instance_id: None,
            assignment_strategy: AssignmentStrategy::CooperativeSticky,
            lane_capacity: Self::DEFAULT_LANE_CAPACITY,
            max_buffered_mib: Self::DEFAULT_MAX_BUFFERED_MIB,
            max_concurrency: Self::DEFAULT_MAX_CONCURRENCY,
            guarantee: ProcessingGuarantee::AtLeastOnce,
            commit_interval: ProcessingGuarantee::AtLeastOnce.default_commit_interval(),
            commit_records: Self::DEFAULT_COMMIT_RECORDS,
            transactional_producers: Self::DEFAULT_TRANSACTIONAL_PRODUCERS,
            fault_abort_probability: 0.0,
            changelogs: std::collections::HashMap::new(),
            ordering: std::collections::HashMap::new(),
            state_retention: std::collections::HashMap::new(),
            max_waiting_records: Self::DEFAULT_MAX_WAITING_RECORDS,
            max_waiting_mib: Self::DEFAULT_MAX_WAITING_MIB,
            shutdown_timeout: Duration::from_secs(30),
            revoke_timeout: Duration::from_secs(10),
            kafka: Vec::new(),
            sources,
        }
    }

    /// Builds and validates from flags. `sources` come from the topics file unless
    /// `--input-topic` overrides them.
    pub fn from_args(
        worker: &str,
        kafka: &KafkaArgs,
        args: &WorkerArgs,
        sources: Vec<(String, crate::retry::RetryPolicy)>,
    ) -> Result<Self, ConfigError> {
        let brokers = kafka
            .brokers
            .clone()
            .ok_or_else(|| ConfigError::invalid("--brokers (STREAMFLEET_BROKERS)", "required"))?;
        let mut config = Self::new(worker, brokers, sources);
        if let Some(group) = &args.group_id {
            config.group_id = group.clone();
        }
        config.instance_id = args.instance_id.clone();
        config.assignment_strategy = args.assignment_strategy;
        config.lane_capacity = args.lane_capacity;
        config.max_buffered_mib = args.max_buffered_mib;
        config.max_concurrency = args.max_concurrency;
        config.guarantee = args.processing_guarantee;
        config.commit_interval = args
            .commit_interval
            .unwrap_or(args.processing_guarantee.default_commit_interval());
        config.commit_records = args.commit_records;
        config.transactional_producers = args.transactional_producers;
        config.fault_abort_probability = args.fault_abort_probability;
        config.shutdown_timeout = args.shutdown_timeout;
        config.max_waiting_records = args.max_waiting_records;
        config.max_waiting_mib = args.max_waiting_mib;
        config.kafka = kafka.all_properties()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::invalid("--brokers", "must not be empty"));
        }
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::invalid("--group-id", "must not be empty"));
        }
        if self
            .instance_id
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            return Err(ConfigError::invalid(
                "--instance-id",
                "must not be empty when given",
            ));
        }
        if self.lane_capacity == 0 {
            return Err(ConfigError::invalid(
                "--lane-capacity",
                "must be at least 1",
            ));
        }
        if self.max_buffered_mib == 0 {
            return Err(ConfigError::invalid(
                "--max-buffered-mib",
                "must be at least 1",
            ));
        }
        if self.max_waiting_records == 0 {
            return Err(ConfigError::invalid(
                "--max-waiting-records",
                "must be at least 1",
            ));
        }
        if self.max_waiting_mib == 0 {
            return Err(ConfigError::invalid(
                "--max-waiting-mib",
                "must be at least 1",
            ));
        }
        if self.max_concurrency == 0 {
            return Err(ConfigError::invalid(
                "--max-concurrency",
                "must be at least 1",
            ));
        }
        if self.commit_interval.is_zero() {
            return Err(ConfigError::invalid(
                "--commit-interval",
                "must be greater than zero",
            ));
        }
        if self.commit_records == 0 {
            return Err(ConfigError::invalid(
                "--commit-records",
                "must be at least 1",
            ));
        }
        if !(1..=Self::MAX_TRANSACTIONAL_PRODUCERS).contains(&self.transactional_producers) {
            return Err(ConfigError::invalid(
                "--transactional-producers",
                format!(
                    "must be between 1 and {}",
                    Self::MAX_TRANSACTIONAL_PRODUCERS
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.fault_abort_probability) {
            return Err(ConfigError::invalid(
                "--fault-abort-probability",
                "must be between 0 and 1",
            ));
        }
        if self.guarantee == ProcessingGuarantee::ExactlyOnce {
            if self.stable_instance().is_none() {
                return Err(ConfigError::invalid(
                    "--instance-id",
                    "exactly-once needs an instance id that survives restarts (--instance-id, or \
                     HOSTNAME as in a StatefulSet): the transactional id is derived from it so a \
                     restarted instance aborts what its predecessor left open",
                ));
            }
            if let Some(p) = self
                .kafka
                .iter()
                .find(|p| p.key == "enable.idempotence" && p.value != "true")
            {
                return Err(ConfigError::Kafka {
                    property: p.key.clone(),
                    message: "exactly-once needs the idempotent producer".into(),
                });
            }
        } else if self.fault_abort_probability > 0.0 {
            return Err(ConfigError::invalid(
                "--fault-abort-probability",
                "only applies to exactly-once",
            ));
        }
        if self.sources.is_empty() {
            return Err(ConfigError::invalid(
                "--input-topic",
                "no input topic: give --input-topic or an owner entry in the topics file",
            ));
        }
        for (topic, policy) in &self.sources {
            policy.validate().map_err(|(field, message)| {
                ConfigError::invalid(&format!("retry.{field} of {topic}"), message)
            })?;
        }
        Ok(crate::properties::validate(&self.kafka)?)
    }

    /// An instance id that survives a restart: `--instance-id`, else `HOSTNAME`.
    pub fn stable_instance(&self) -> Option<String> {
        self.instance_id.clone().or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.trim().is_empty())
        })
    }

    /// Takes each source's changelog, ordering and state retention from the topic design.
    pub fn apply_topology(&mut self, topology: &crate::topology::Topology) {
        for (source, _) in &self.sources {
            if let Some(changelog) = topology.changelog_of(source) {
                self.changelogs.insert(source.clone(), changelog);
            }
            self.ordering
                .insert(source.clone(), topology.ordering_of(source));
            if let Some(r) = topology.state_retention_of(source) {
                self.state_retention.insert(source.clone(), r);
            }
        }
    }

    /// The sources that keep key order through retries.
    pub fn key_ordered(&self) -> std::collections::HashSet<String> {
        self.sources
            .iter()
            .map(|(t, _)| t)
            .filter(|t| {
                self.ordering.get(*t).copied().unwrap_or_default() == crate::ordering::Ordering::Key
            })
            .cloned()
            .collect()
    }

    /// The transactional id of this instance's producer `index` (exactly-once):
    /// `<group>.<instance>` for the first, `<group>.<instance>#<index>` for the others (`#`
    /// is in no host name, so no other instance's first id can be one of them).
    pub fn transactional_id(&self, index: usize) -> Option<String> {
        self.stable_instance().map(|i| match index {
            0 => format!("{}.{i}", self.group_id),
            n => format!("{}.{i}#{n}", self.group_id),
        })
    }

    /// The instance name used in headers and `client.id`: the static id, or host and pid.
    pub fn instance_name(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// Where the process takes its topics file from.
#[derive(Debug, Clone, Args)]
pub struct TopicsArgs {
    /// Topics file [default: the topics.yaml built into the binary].
    #[arg(long = "topics", env = "STREAMFLEET_TOPICS", value_name = "FILE")]
    pub topics_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_once_needs_a_stable_instance_and_defaults_to_fast_commits() {
        let mut c = WorkerConfig::new("w", "b:9092", vec![("t".into(), Default::default())]);
        c.guarantee = ProcessingGuarantee::ExactlyOnce;
        c.instance_id = Some("pod-0".into());
        assert!(c.validate().is_ok());
        assert_eq!(
            c.transactional_id(0).as_deref(),
            Some("streamfleet-w.pod-0")
        );
        assert_eq!(
            c.transactional_id(1).as_deref(),
            Some("streamfleet-w.pod-0#1")
        );
        for bad in [0, WorkerConfig::MAX_TRANSACTIONAL_PRODUCERS + 1] {
            c.transactional_producers = bad;
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("--transactional-producers"), "{e}");
        }
        c.transactional_producers = WorkerConfig::MAX_TRANSACTIONAL_PRODUCERS;
        assert!(c.validate().is_ok());
        c.kafka = vec![KafkaProperty::parse("producer.enable.idempotence=false").unwrap()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("enable.idempotence")
        );
        assert_eq!(
            ProcessingGuarantee::ExactlyOnce.default_commit_interval(),
            Duration::from_millis(100)
        );
        let mut alo = WorkerConfig::new("w", "b:9092", vec![("t".into(), Default::default())]);
        alo.fault_abort_probability = 0.5;
        assert!(
            alo.validate()
                .unwrap_err()
                .to_string()
                .contains("--fault-abort-probability")
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = WorkerConfig::new(
            "w",
            "localhost:9092",
            vec![("t".into(), Default::default())],
        );
        c.lane_capacity = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("--lane-capacity")
        );
        let mut c = WorkerConfig::new("w", "localhost:9092", vec![]);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("--input-topic")
        );
        c.sources = vec![("t".into(), Default::default())];
        c.kafka = vec![KafkaProperty::parse("enable.auto.commit=true").unwrap()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("enable.auto.commit"), "{e}");
        c.kafka = vec![KafkaProperty::parse("linger.ms=banana").unwrap()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("linger.ms"), "{e}");
        c.kafka = vec![KafkaProperty::parse("no.such.thing=1").unwrap()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("no.such.thing")
        );
    }
}
