//! The test harness.
//!
//! Every test gets its own topics and consumer groups (random suffixes) and never depends on
//! another test or on test order. [`Broker::mock`] is librdkafka's embedded cluster (topics
//! through `MockCluster::create_topic`); [`Broker::real`] is the cluster named by
//! `KAFKA_BOOTSTRAP_SERVERS` (topics through the AdminClient). Real-broker tests are
//! `#[ignore]`d; run them with `--include-ignored` and the variable set: a missing variable
//! fails them loudly, it never skips them.

pub mod cluster;
pub mod echo;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use streamfleet_runtime::RawRecord;
use streamfleet_runtime::clients::{self, PRODUCER_DEFAULTS};
use streamfleet_runtime::embedded::EmbeddedCluster;
use streamfleet_runtime::properties::ClientScope;
use streamfleet_runtime::topology::Topology;

/// The variable naming a real cluster.
pub const BOOTSTRAP_VAR: &str = "KAFKA_BOOTSTRAP_SERVERS";

/// The cluster a test runs against.
pub enum Broker {
    /// librdkafka's mock cluster, in process.
    Mock(EmbeddedCluster),
    /// A real cluster.
    Real(String),
}

impl Broker {
    /// A fresh embedded cluster.
    pub fn mock() -> Self {
        Broker::Mock(EmbeddedCluster::start(3).expect("mock cluster starts"))
    }

    /// The cluster of `KAFKA_BOOTSTRAP_SERVERS`; panics when it is not set, so a real-broker
    /// test run without a broker fails instead of passing vacuously.
    pub fn real() -> Self {
        let servers = std::env::var(BOOTSTRAP_VAR).unwrap_or_default();
        assert!(
            !servers.trim().is_empty(),
            "this real-broker test needs {BOOTSTRAP_VAR}=host:port (tests/run starts nisshi and sets it)"
        );
        Broker::Real(servers)
    }

    /// `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        match self {
            Broker::Mock(c) => c.bootstrap_servers().to_owned(),
            Broker::Real(s) => s.clone(),
        }
    }

    /// The embedded cluster, for fault injection.
    pub fn as_mock(&self) -> Option<&EmbeddedCluster> {
        match self {
            Broker::Mock(c) => Some(c),
            Broker::Real(_) => None,
        }
    }

    /// Creates a topic and waits until every partition has a leader.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        match self {
            Broker::Mock(c) => c.create_topic(name, partitions, 1).expect("mock topic"),
            Broker::Real(servers) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", servers)
                    .create()
                    .expect("admin client");
                let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                let results = admin
                    .create_topics([&topic], &opts)
                    .await
                    .expect("create_topics");
                for r in results {
                    if let Err((t, e)) = r {
                        panic!("creating topic {t}: {e}");
                    }
                }
                let servers = servers.clone();
                let name = name.to_owned();
                tokio::task::spawn_blocking(move || {
                    wait_for_partitions(&servers, &name, partitions)
                })
                .await
                .expect("join");
            }
        }
    }

    /// Creates a fresh input topic, its dead-letter topic and an output topic, all with
    /// `partitions` partitions, named `<prefix>-in-…` and `<prefix>-out-…`: what a worker
    /// copying one topic to another needs. Returns (input, output).
    pub async fn pipeline_topics(&self, prefix: &str, partitions: i32) -> (String, String) {
        let (input, output) = (
            unique(&format!("{prefix}-in")),
            unique(&format!("{prefix}-out")),
        );
        self.create_topic(&input, partitions).await;
        self.create_topic(&output, partitions).await;
        self.create_topic(&format!("{input}-dlt"), partitions).await;
        (input, output)
    }

    /// Creates every topic of a topology (replication 1: tests run on one broker).
    pub async fn create_topology(&self, topology: &Topology) {
        for t in &topology.topics {
            self.create_topic(&t.name, t.partitions).await;
        }
    }
}

fn wait_for_partitions(servers: &str, topic: &str, partitions: i32) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .expect("metadata client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            let ready = md.topics().iter().any(|t| {
                t.name() == topic
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} has no leaders after 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The repository's root directory.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The path of an external tool on `PATH`; a missing tool fails the test and names the
/// Debian package that provides it (tests/run installs them all).
pub fn tool(name: &str, debian_package: &str) -> std::path::PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} not found: install Debian's {debian_package} package (tests/run does)")
    })
}

/// A child process (a worker binary), killed when dropped, so a failed assertion leaves
/// nothing running behind.
pub struct Process(pub std::process::Child);

impl Process {
    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then waits up to `timeout` for it to exit; returns its exit code (`None`:
    /// killed by a signal, or still running at the deadline and then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        signal(&self.0, "-TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `sig` (as `kill` spells it: `-TERM`, `-STOP`, ...) to a child process.
pub fn signal(child: &std::process::Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {}: {status}", child.id());
}

/// Of `positions` (partition → offset), the partitions of `topic` that still hold a record a
/// `read_committed` reader sees at or after that offset. A group that committed everything of
/// a transactionally written topic sits one or two offsets below the end, the commit markers;
/// comparing with the end offset would call it behind forever.
pub fn unread_committed(
    bootstrap: &str,
    topic: &str,
    positions: &BTreeMap<i32, i64>,
) -> Vec<(i32, i64)> {
    if positions.is_empty() {
        return Vec::new();
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("unread"))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for (p, o) in positions {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut open: BTreeMap<i32, i64> = positions.clone();
    let mut unread = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !open.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if let Some(o) = open.remove(&m.partition()) {
                    unread.push((m.partition(), o));
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            _ => {}
        }
    }
    // Partitions neither read nor at their end in time count as unread: a caller waits.
    unread.extend(open);
    unread
}

/// Each hotel's stock after the last of `outcomes` (Avro `InventoryOutcome` records, read in
/// any order): what the inventory worker says the committed commands left.
pub fn last_stock_by_hotel(mut outcomes: Vec<RawRecord>) -> BTreeMap<String, i64> {
    let codec = streamfleet_schemas::Encoding::default()
        .codec::<streamfleet_schemas::InventoryOutcome>("inventory-outcomes")
        .expect("codec");
    outcomes.sort_by_key(|r| (r.partition, r.offset));
    outcomes
        .iter()
        .map(|r| {
            codec
                .decode(r.value.as_deref().expect("a value"))
                .expect("an outcome")
        })
        .map(|o| (o.hotel_id, o.available))
        .collect()
}

/// A unique name: `<prefix>-<random>`.
pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}-{n:016x}")
}

/// A producer with streamfleet's producer defaults.
pub fn producer(bootstrap: &str) -> FutureProducer {
    clients::build(
        bootstrap,
        PRODUCER_DEFAULTS,
        &[],
        ClientScope::Producer,
        &[],
    )
    .create()
    .expect("producer")
}

/// Produces `records` (key, value) to `topic` and waits for every acknowledgement.
pub async fn produce_all(producer: &FutureProducer, topic: &str, records: &[(String, Vec<u8>)]) {
    let mut pending = Vec::new();
    for (key, value) in records {
        let record = FutureRecord::to(topic).key(key).payload(value);
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for p in pending {
        p.await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("acknowledged");
    }
}

/// How to read a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Every record.
    ReadUncommitted,
    /// Only committed transactions' records.
    ReadCommitted,
}

/// Reads every record currently in `topic`, from the beginning to the high watermark of each
/// partition (blocking: call from `spawn_blocking` or use [`read_topic`]).
pub fn read_all_blocking(bootstrap: &str, topic: &str, isolation: Isolation) -> Vec<RawRecord> {
    let level = match isolation {
        Isolation::ReadUncommitted => "read_uncommitted",
        Isolation::ReadCommitted => "read_committed",
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", level)
        .create()
        .expect("reader");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("tpl");
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Done when every partition's position reached its end; under read_committed a position
    // also moves past transaction markers and aborted records, which are never delivered.
    let done = |consumer: &BaseConsumer| {
        let pos = consumer.position().expect("position");
        ends.iter().all(|(p, end)| {
            pos.find_partition(topic, *p)
                .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= *end))
        })
    };
    while !done(&consumer) {
        assert!(
            Instant::now() < deadline,
            "reading {topic} timed out before {ends:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(RawRecord::from_message(&m, m.topic().into())),
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Async wrapper of [`read_all_blocking`].
pub async fn read_topic(bootstrap: &str, topic: &str, isolation: Isolation) -> Vec<RawRecord> {
    let (b, t) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_all_blocking(&b, &t, isolation))
        .await
        .expect("reader thread")
}

/// The offsets `group` has committed for partitions `0..partitions` of `topic` (`None`: none
/// committed). Reads them with OffsetFetch; the reader never joins the group.
pub fn group_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Option<i64>> {
    try_group_offsets(bootstrap, group, topic, partitions).expect("committed offsets")
}

/// [`group_offsets`], or the error (a coordinator moving during a failure drill).
pub fn try_group_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, Option<i64>>, rdkafka::error::KafkaError> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    Ok(c.committed_offsets(tpl, Duration::from_secs(10))?
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset().to_raw().filter(|o| *o >= 0)))
        .collect())
}

/// Waits until `group`'s committed offsets on `topic` add up to `records` (on a topic written
/// without transactions, every partition's committed offset is the count of its records the
/// group is done with); panics after `timeout`.
pub async fn wait_committed(
    timeout: Duration,
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    records: i64,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let (b, g, t) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
        let committed: i64 =
            tokio::task::spawn_blocking(move || group_offsets(&b, &g, &t, partitions))
                .await
                .expect("offset reader thread")
                .values()
                .map(|o| o.unwrap_or(0))
                .sum();
        if committed == records {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {group} to commit {records} records of \
             {topic} ({committed} committed)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `check` holds, polling every 50 ms; panics with `what` after `timeout`.
pub async fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker started by a test.
pub struct TestWorker {
    /// Live totals.
    pub stats: std::sync::Arc<streamfleet_runtime::metrics::WorkerStats>,
    /// Its health.
    pub health: streamfleet_runtime::health::Health,
    /// Its metrics.
    pub metrics: streamfleet_runtime::metrics::Metrics,
    stop: streamfleet_runtime::CancellationToken,
    task: tokio::task::JoinHandle<
        Result<streamfleet_runtime::WorkerReport, streamfleet_runtime::WorkerError>,
    >,
}

impl TestWorker {
    /// Starts `processor` with `config`.
    pub fn start<P: streamfleet_runtime::Processor>(
        config: streamfleet_runtime::config::WorkerConfig,
        processor: P,
    ) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            logs();
        }
        let health = streamfleet_runtime::health::Health::default();
        let metrics = streamfleet_runtime::metrics::Metrics::default();
        let worker = streamfleet_runtime::Worker::new(config, processor, metrics.clone(), &health);
        let stop = streamfleet_runtime::CancellationToken::new();
        Self {
            stats: worker.stats(),
            health,
            metrics,
            task: tokio::spawn(worker.run(stop.clone())),
            stop,
        }
    }

    /// Totals now.
    pub fn snapshot(&self) -> streamfleet_runtime::metrics::StatsSnapshot {
        self.stats.snapshot()
    }

    /// Whether the worker task is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Shuts down gracefully and returns the report.
    pub async fn stop(
        self,
    ) -> Result<streamfleet_runtime::WorkerReport, streamfleet_runtime::WorkerError> {
        self.stop.cancel();
        self.task.await.expect("worker task")
    }
}

/// A worker config for tests: fast commits, the given group and sources.
pub fn test_config(
    bootstrap: &str,
    group: &str,
    sources: Vec<(String, streamfleet_runtime::retry::RetryPolicy)>,
) -> streamfleet_runtime::config::WorkerConfig {
    let mut c = streamfleet_runtime::config::WorkerConfig::new("test", bootstrap, sources);
    c.group_id = group.to_owned();
    c.commit_interval = Duration::from_millis(200);
    // The mock coordinator finishes a rebalance of an established group only after
    // session.timeout.ms - 1 s; 6 s is the smallest session timeout Apache Kafka accepts.
    for p in [
        "consumer.session.timeout.ms=6000",
        "consumer.heartbeat.interval.ms=500",
    ] {
        c.kafka
            .push(streamfleet_runtime::properties::KafkaProperty::parse(p).expect("property"));
    }
    // SF_DEBUG=cgrp,fetch turns on librdkafka's debug contexts for the tests' workers.
    if let Ok(d) = std::env::var("SF_DEBUG") {
        c.kafka.push(
            streamfleet_runtime::properties::KafkaProperty::parse(&format!("debug={d}"))
                .expect("debug property"),
        );
    }
    c
}

/// A retry policy without retries.
pub fn no_retries() -> streamfleet_runtime::retry::RetryPolicy {
    streamfleet_runtime::retry::RetryPolicy {
        attempts: 1,
        ..Default::default()
    }
}

/// The sum of the values of the metric lines of `metrics` that start with `line_start`
/// (a family name, or a name with the first labels).
pub fn metric(metrics: &streamfleet_runtime::metrics::Metrics, line_start: &str) -> f64 {
    use prometheus::Encoder as _;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&metrics.registry().gather(), &mut buf)
        .expect("metrics encode");
    String::from_utf8(buf)
        .expect("metrics are UTF-8")
        .lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends logs to stderr (see them with `--nocapture`; filter with RUST_LOG).
pub fn logs() {
    streamfleet_runtime::telemetry::init(
        streamfleet_runtime::config::LogFormat::Human,
        streamfleet_runtime::telemetry::DEFAULT_FILTER,
    );
}
