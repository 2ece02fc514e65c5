//! `streamfleet-bench`: the orchestrator. It is never measured itself; see [`crate::measure`]
//! for what is measured and how.
//!
//! 1. A cluster: a `streamfleet-bench dev-cluster` child, i.e. `streamfleet dev-cluster` (the
//!    default: librdkafka's mock cluster in a process of its own, so its CPU and memory are
//!    not the worker's), or `--brokers`.
//!    Every topic of the invocation is created up front.
//! 2. Backlog runs: N booking events are seeded once; then `--runs` rounds, each running
//!    every mode once and then the peers (`--peer MODE=COMMAND`), on the same input. Each run
//!    is a fresh `streamfleet-bench participant` process with its own group and output topic,
//!    draining the whole backlog. Rounds keep the participants side by side in time, so the
//!    drift of a shared machine's speed moves them alike and their ratios stay comparable.
//! 3. The latency run: at-least-once again, with the input produced live at half of its
//!    median backlog throughput (`--rate` makes every run a live one instead).
//! 4. Every run's output is counted (read_committed): passthrough and peers must copy every
//!    record, at-least-once and exactly-once must agree. A mismatch fails the benchmark.
//! 5. The report: medians per mode, the targets with their measured ratios, the machine.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use serde::Serialize;
use streamfleet_runtime::clients::{self, PRODUCER_DEFAULTS};
use streamfleet_runtime::config::ConfigError;
use streamfleet_runtime::properties::{ClientScope, KafkaProperty};
use streamfleet_runtime::{CancellationToken, now_ms};
use streamfleet_schemas::Encoding;

use crate::cli::{BenchArgs, BenchMode};
use crate::measure::{self, Env, Figures, RunResult, Target};
use streamfleet::delivery::DeliveryTracker;
use streamfleet::loadgen::{Generator, LoadConfig, Stream, Topics};
use streamfleet::reader::{self, Isolation};

/// Who a run measures.
#[derive(Debug, Clone)]
enum Participant {
    Ours(BenchMode),
    /// A peer: its name (`python`, `java`, ...), mode and command.
    Peer(String, BenchMode, String),
}

impl Participant {
    fn label(&self) -> String {
        match self {
            Participant::Ours(m) => m.name().to_owned(),
            Participant::Peer(name, m, _) => format!("{name} {}", m.name()),
        }
    }

    fn mode(&self) -> BenchMode {
        match self {
            Participant::Ours(m) | Participant::Peer(_, m, _) => *m,
        }
    }
}

/// One planned run.
#[derive(Debug, Clone)]
struct Run {
    participant: Participant,
    /// Live input at this rate (the input is then the run's own).
    rate: Option<u64>,
    input: String,
    output: String,
    commit_interval: Duration,
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
struct Measured {
    participant: String,
    mode: BenchMode,
    rate: Option<u64>,
    commit_interval_ms: u128,
    /// Our exactly-once runs: the worker's transactional producers.
    transactional_producers: Option<usize>,
    /// Our exactly-once runs: the worker's transaction cap (`--commit-records`).
    commit_records: Option<u64>,
    output_records: u64,
    /// Whether a peer (not streamfleet) ran.
    peer: bool,
    /// CPU seconds the cluster used from the participant's `ready` to its result (the
    /// embedded cluster, or the `--broker-pid` processes of an external one).
    cluster_cpu_seconds: Option<f64>,
    /// Cores the cluster kept busy over that window.
    cluster_cores: Option<f64>,
    /// Live runs: CPU seconds this process (the load generator, producing the input at the
    /// rate) used during the run; it shares the machine's cores with the participant.
    load_cpu_seconds: Option<f64>,
    #[serde(flatten)]
    result: RunResult,
}

/// The medians of one participant.
#[derive(Debug, Clone, Serialize)]
struct Summary {
    participant: String,
    mode: BenchMode,
    rate: Option<u64>,
    runs: usize,
    #[serde(flatten)]
    median: RunResult,
    cpu_seconds_per_million: f64,
    /// Median over the runs of the cores each kept busy ([`RunResult::cores`]).
    cores: f64,
    /// CPU per record of the slowest run over the fastest ([`measure::cpu_spread`]).
    cpu_spread: f64,
    /// A live run that did not keep up with its rate ([`measure::saturated`]).
    saturated: bool,
    /// Median over the runs of the cores the cluster kept busy meanwhile, when measured.
    cluster_cores: Option<f64>,
}

impl Summary {
    /// The participant, with its rate for a live run.
    fn label(&self) -> String {
        match self.rate {
            Some(rate) => format!("{} @ {rate}/s", self.participant),
            None => self.participant.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    records: u64,
    partitions: i32,
    cluster: String,
    machine: Machine,
    build: &'static str,
    summaries: Vec<Summary>,
    runs: Vec<Measured>,
    targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    kernel: String,
    load_before: String,
    load_after: String,
}

fn machine_facts() -> (usize, String, String) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    (cpus, model, kernel)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The cluster of one invocation.
enum Cluster {
    Embedded {
        child: Child,
        bootstrap: String,
    },
    External {
        bootstrap: String,
        /// Broker processes on this machine whose CPU is sampled (`--broker-pid`).
        pids: Vec<u32>,
    },
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    #[allow(unsafe_code)]
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz.max(1.0))
}

impl Cluster {
    /// CPU seconds of the embedded cluster's process so far.
    fn cpu(&self) -> Option<f64> {
        match self {
            Cluster::Embedded { child, .. } => cpu_of(child.id()),
            Cluster::External { pids, .. } if !pids.is_empty() => {
                pids.iter().map(|p| cpu_of(*p)).sum::<Option<f64>>()
            }
            Cluster::External { .. } => None,
        }
    }

    fn bootstrap(&self) -> &str {
        match self {
            Cluster::Embedded { bootstrap, .. } | Cluster::External { bootstrap, .. } => bootstrap,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Cluster::Embedded { child, .. } = self {
            // SIGTERM first: the dev-cluster stops cleanly.
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_embedded(
    brokers: i32,
    rtt: Duration,
    topics: &[(String, i32)],
) -> anyhow::Result<Cluster> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "dev-cluster",
        "--no-topics",
        "--embedded-brokers",
        &brokers.to_string(),
        "--embedded-rtt",
        &format!("{}ms", rtt.as_millis()),
    ]);
    for (name, partitions) in topics {
        cmd.arg("--topic").arg(format!("{name}:{partitions}"));
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let bootstrap = line.trim().to_owned();
    anyhow::ensure!(
        !bootstrap.is_empty(),
        "the dev-cluster printed no bootstrap servers"
    );
    Ok(Cluster::Embedded { child, bootstrap })
}

fn admin(
    bootstrap: &str,
    props: &[KafkaProperty],
) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(clients::build(bootstrap, &[], props, ClientScope::Both, &[]).create()?)
}

async fn create_external(
    bootstrap: &str,
    props: &[KafkaProperty],
    topics: &[(String, i32)],
) -> anyhow::Result<()> {
    let admin = admin(bootstrap, props)?;
    let brokers = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))?
        .brokers()
        .len() as i32;
    let replication = brokers.clamp(1, 3);
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(replication)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin.create_topics(&new, &opts).await? {
        if let Err((t, e)) = r {
            anyhow::bail!("creating {t}: {e}");
        }
    }
    Ok(())
}

async fn delete_external(bootstrap: &str, props: &[KafkaProperty], topics: &[(String, i32)]) {
    let Ok(admin) = admin(bootstrap, props) else {
        return;
    };
    let names: Vec<&str> = topics.iter().map(|(n, _)| n.as_str()).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    if let Err(e) = admin.delete_topics(&names, &opts).await {
        eprintln!("warning: could not delete the benchmark topics: {e}");
    }
}

/// The benchmark's booking events (key, Avro value): valid ones only, the same every time.
fn bookings(topic: &str) -> anyhow::Result<impl Iterator<Item = (Vec<u8>, Vec<u8>)>> {
    let config = LoadConfig {
        seed: 7,
        malformed_ratio: 0.0,
        invalid_ratio: 0.0,
        replay_ratio: 0.0,
        ..LoadConfig::default()
    };
    let topics = Topics {
        booking: topic.to_owned(),
        ..Topics::default()
    };
    let mut generator = Generator::new(config, &topics, &Encoding::default())?;
    Ok(std::iter::from_fn(move || Some(generator.next_record()))
        .filter(|p| p.stream == Stream::Booking)
        .map(|p| (p.key, p.value)))
}

/// The load generator's producer defaults: the platform's, with batches of up to 1 MB
/// (librdkafka's `message.max.bytes`) instead of 16 KiB. The generator shares the machine
/// with the worker it measures; with 16 KiB batches librdkafka sent a batch whenever one
/// filled, and at 200,000 records/s the generator took 0.5-0.8 of a core, most of what a
/// 2-core machine had spare beside the worker (docs/benchmarks.md). Batches now leave when
/// `linger.ms` (5 ms, as for the platform's producers) expires, so a record still waits at
/// most 5 ms in it.
/// `-X batch.size=...` overrides it.
fn load_producer_defaults() -> Vec<(&'static str, &'static str)> {
    PRODUCER_DEFAULTS
        .iter()
        .map(|&(k, v)| {
            if k == "batch.size" {
                (k, "1000000")
            } else {
                (k, v)
            }
        })
        .collect()
}

/// The load generator's producer: a [`ThreadedProducer`] whose context keeps the first failed
/// delivery. It shares the machine with the worker it measures, so it spends as little as it
/// can per record: no delivery future (a channel, an allocation and a wake-up per record in
/// `FutureProducer`), the clock read once per burst, not per record.
type LoadProducer = Arc<ThreadedProducer<DeliveryTracker>>;

/// Produces `records` into `topic`, at `rate` records/s or as fast as the cluster takes them,
/// every one acknowledged before this returns. Under a rate, each wake-up sends the records
/// due by then (a burst of `rate` × the timer's resolution, about 0.5-1 ms).
async fn seed(
    producer: &LoadProducer,
    topic: &str,
    records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    rate: Option<u64>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut sent = 0u64;
    let mut due = 0u64;
    for (key, value) in records {
        if let Some(rate) = rate {
            // Hold the rate: never ahead of where `rate` puts us now.
            while sent >= due {
                due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                if sent >= due {
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            }
        }
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Err((e, _)) => anyhow::bail!("seeding {topic}: {e}"),
            }
        }
        sent += 1;
        if sent.is_multiple_of(1000) {
            bar.set_position(sent);
            no_failed_delivery(producer)?;
        }
    }
    let flushing = producer.clone();
    tokio::task::spawn_blocking(move || flushing.flush(Duration::from_secs(300))).await??;
    no_failed_delivery(producer)?;
    bar.set_position(sent);
    Ok(())
}

/// Fails the seeding at the first failed delivery.
fn no_failed_delivery(producer: &LoadProducer) -> anyhow::Result<()> {
    match producer.context().failure() {
        Some(failure) => anyhow::bail!("seeding failed: {failure}"),
        None => Ok(()),
    }
}

/// Checks that `topic` holds exactly `n` records from offset 0 on: librdkafka's mock broker
/// keeps at most 5 MiB of record batches per partition and silently deletes the oldest
/// beyond that, which would make a participant skip records.
fn check_seeded(
    bootstrap: &str,
    props: &[KafkaProperty],
    topic: &str,
    n: u64,
) -> anyhow::Result<()> {
    let consumer = reader::consumer(
        bootstrap,
        props,
        &format!("streamfleet-bench-check-{}", now_ms()),
        Isolation::ReadUncommitted,
    )?;
    let marks = reader::watermarks(&consumer, topic)?;
    let kept: i64 = marks.values().map(|(low, high)| high - low).sum();
    let deleted: i64 = marks.values().map(|(low, _)| low).sum();
    anyhow::ensure!(
        deleted == 0 && kept == n as i64,
        "{topic} holds {kept} of the {n} records seeded ({deleted} deleted by the cluster). The \
         embedded cluster keeps at most 5 MiB per partition: use more --partitions (about one \
         per 100,000 records) or a real cluster (--brokers)"
    );
    Ok(())
}

/// Events from a participant's stdout.
enum Event {
    Ready,
    Progress(u64),
    Result(RunResult),
    Other(String),
    Closed,
}

fn spawn_participant(run: &Run, env: &Env, props: &[KafkaProperty]) -> anyhow::Result<Child> {
    let mut cmd = match &run.participant {
        Participant::Ours(_) => {
            let mut c = Command::new(std::env::current_exe()?);
            c.arg("participant");
            c
        }
        Participant::Peer(_, _, command) => {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", command]);
            c
        }
    };
    cmd.envs(env.vars()).env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
    );
    for p in props {
        // -X properties reach our worker as STREAMFLEET_KAFKA_* variables.
        let var = format!(
            "STREAMFLEET_KAFKA_{}",
            p.key
                .replace('_', "__")
                .replace('.', "_")
                .to_ascii_uppercase()
        );
        cmd.env(var, &p.value);
    }
    Ok(cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .spawn()?)
}

fn read_events(child: &mut Child) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let event = if line == "ready" {
                Event::Ready
            } else if let Some(n) = line.strip_prefix("progress ") {
                Event::Progress(n.trim().parse().unwrap_or(0))
            } else if let Some(json) = line.strip_prefix("result ") {
                match serde_json::from_str(json) {
                    Ok(r) => Event::Result(r),
                    Err(e) => Event::Other(format!("unreadable result ({e}): {json}")),
                }
            } else {
                Event::Other(line)
            };
            if tx.send(event).is_err() {
                return;
            }
        }
        let _ = tx.send(Event::Closed);
    });
    rx
}

/// Counts the records of `topic` a read_committed consumer sees.
fn count(bootstrap: &str, props: &[KafkaProperty], topic: &str) -> anyhow::Result<u64> {
    let consumer = reader::consumer(
        bootstrap,
        props,
        &format!("streamfleet-bench-count-{}", now_ms()),
        Isolation::ReadCommitted,
    )?;
    let marks = reader::watermarks(&consumer, topic)?;
    let start = marks.iter().map(|(p, (low, _))| (*p, *low)).collect();
    let end = marks.iter().map(|(p, (_, high))| (*p, *high)).collect();
    let mut n = 0u64;
    reader::read_range(
        &consumer,
        topic,
        &start,
        &end,
        &CancellationToken::new(),
        |_| {
            n += 1;
            Ok(true)
        },
    )?;
    Ok(n)
}

struct Bench<'a> {
    args: &'a BenchArgs,
    cluster: &'a Cluster,
    props: Vec<KafkaProperty>,
    bootstrap: String,
    id: String,
    producer: LoadProducer,
}

impl Bench<'_> {
    async fn execute(&self, run: &Run, index: usize, of: usize) -> anyhow::Result<Measured> {
        let records = self.args.records;
        let env = Env {
            bootstrap: self.bootstrap.clone(),
            input: run.input.clone(),
            output: run.output.clone(),
            group: format!("{}-group-{index}", self.id),
            records: match run.rate {
                Some(_) => live_records(self.args, run.rate),
                None => records,
            },
            commit_interval: run.commit_interval,
            transactional_producers: self.args.transactional_producers,
            commit_records: self.args.commit_records,
            mode: run.participant.mode(),
            fetch_wait_max_ms: matches!(self.cluster, Cluster::Embedded { .. })
                .then_some(measure::MOCK_FETCH_WAIT_MAX_MS),
            warmup: if run.rate.is_some() {
                LIVE_WARMUP
            } else {
                Duration::ZERO
            },
        };
        let total = env.records;
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg:32} [{bar:30}] {pos}/{len} ({per_sec})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        let rate_note = run.rate.map(|r| format!(" @ {r}/s")).unwrap_or_default();
        bar.set_message(format!(
            "{}{rate_note} ({index}/{of})",
            run.participant.label()
        ));
        // A live input is generated before the participant starts, so that generating it
        // (Avro encoding) does not compete for the CPU while the participant is measured.
        let mut live = match run.rate {
            Some(_) => Some(
                bookings(&run.input)?
                    .take(total as usize)
                    .collect::<Vec<_>>(),
            ),
            None => None,
        };
        let mut cluster_at_ready: Option<(f64, Instant)> = None;
        let load_cpu = run.rate.and_then(|_| cpu_of(std::process::id()));
        let mut child = spawn_participant(run, &env, &self.props)?;
        let events = read_events(&mut child);
        let mut seeding = None;
        let mut heard = Instant::now();
        let result = loop {
            let event = events.recv_timeout(Duration::from_millis(100));
            if event.is_ok() {
                heard = Instant::now();
            } else if heard.elapsed() > STALL {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "{} reported nothing for {} s: stopped it (a participant prints `ready` \
                     once assigned, then progress while it works)",
                    run.participant.label(),
                    STALL.as_secs()
                );
            }
            match event {
                Ok(Event::Ready) => {
                    cluster_at_ready = self.cluster.cpu().map(|c| (c, Instant::now()));
                    if let Some(rate) = run.rate {
                        let producer = self.producer.clone();
                        let topic = run.input.clone();
                        let records = live.take().expect("generated before the participant");
                        seeding = Some(tokio::spawn(async move {
                            seed(
                                &producer,
                                &topic,
                                records,
                                Some(rate),
                                &ProgressBar::hidden(),
                            )
                            .await
                        }));
                    }
                }
                Ok(Event::Progress(n)) => bar.set_position(n),
                Ok(Event::Result(r)) => break r,
                Ok(Event::Other(line)) => {
                    bar.println(format!("  {}: {line}", run.participant.label()))
                }
                Ok(Event::Closed) => {
                    let status = child.wait()?;
                    anyhow::bail!(
                        "{} exited ({status}) without a result",
                        run.participant.label()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => tokio::task::yield_now().await,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("{} closed its output", run.participant.label())
                }
            }
        };
        let status = child.wait()?;
        anyhow::ensure!(
            status.success(),
            "{} exited with {status}",
            run.participant.label()
        );
        let cluster_cpu = cluster_at_ready
            .zip(self.cluster.cpu())
            .map(|((a, at), b)| (b - a, at.elapsed().as_secs_f64()));
        let cluster_cpu_seconds = cluster_cpu.map(|(cpu, _)| cpu);
        let cluster_cores = cluster_cpu.map(|(cpu, window)| cpu / window.max(1e-9));
        let load_cpu_seconds = load_cpu.zip(cpu_of(std::process::id())).map(|(a, b)| b - a);
        if let Some(s) = seeding {
            s.await??;
        }
        bar.finish_and_clear();
        let output_records = {
            let (b, p, t) = (
                self.bootstrap.clone(),
                self.props.clone(),
                run.output.clone(),
            );
            tokio::task::spawn_blocking(move || count(&b, &p, &t)).await??
        };
        let ours_exactly_once =
            matches!(run.participant, Participant::Ours(BenchMode::ExactlyOnce));
        Ok(Measured {
            participant: run.participant.label(),
            mode: run.participant.mode(),
            rate: run.rate,
            commit_interval_ms: run.commit_interval.as_millis(),
            transactional_producers: ours_exactly_once.then_some(self.args.transactional_producers),
            commit_records: ours_exactly_once.then_some(self.args.commit_records),
            output_records,
            peer: matches!(run.participant, Participant::Peer(..)),
            cluster_cpu_seconds,
            cluster_cores,
            load_cpu_seconds,
            result,
        })
    }
}

/// A participant silent for this long (no `ready`, `progress` or `result`) is stuck: the
/// benchmark stops it and fails rather than waiting forever. Longer than our own worker's
/// guards (ready within 120 s, then progress within 60 s), so those report first.
const STALL: Duration = Duration::from_secs(180);

/// Latencies of a live run count from this long after its first record: the first records
/// meet cold connections and the first fetches (a start-up spike of ~100 ms measured), which
/// would otherwise be a percent of a 10-second run and decide its p99.
const LIVE_WARMUP: Duration = Duration::from_secs(1);

/// Records of a live run: `--records`, but at most 10 s of input at `rate` for the latency
/// run (the input is generated in memory first).
fn live_records(args: &BenchArgs, rate: Option<u64>) -> u64 {
    match rate {
        Some(r) if args.rate.is_none() => args.records.min(r.saturating_mul(10)).max(1),
        _ => args.records,
    }
}

fn commit_interval(args: &BenchArgs, mode: BenchMode, live: bool) -> Duration {
    match mode {
        BenchMode::ExactlyOnce => args.commit_interval,
        _ if live => args.latency_commit_interval,
        _ => {
            streamfleet_runtime::config::ProcessingGuarantee::AtLeastOnce.default_commit_interval()
        }
    }
}

/// Runs the benchmark; exit 1 if a run lost or duplicated records.
pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let modes = if args.modes.is_empty() {
        vec![
            BenchMode::Passthrough,
            BenchMode::AtLeastOnce,
            BenchMode::ExactlyOnce,
        ]
    } else {
        args.modes.clone()
    };
    anyhow::ensure!(args.records > 0, "--records must be at least 1");
    anyhow::ensure!(args.partitions > 0, "--partitions must be at least 1");
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: a debug build: these figures mean nothing (cargo run --release -p streamfleet-bench --)"
        );
    }
    let id = format!("bench-{:x}", now_ms());
    let live = args.rate.is_some();
    let mut participants: Vec<Participant> = modes.iter().map(|m| Participant::Ours(*m)).collect();
    participants.extend(
        args.peers
            .iter()
            .map(|p| Participant::Peer(p.name.clone(), p.mode, p.command.clone())),
    );

    // Every topic of the invocation, created up front. Runs go in rounds (every participant
    // once per round): a shared machine's speed drifts during an invocation, and the targets
    // are ratios between participants, so each round measures them side by side.
    let mut plan: Vec<Run> = Vec::new();
    let backlog_input = format!("{id}-input");
    for r in 0..args.runs {
        for p in &participants {
            let input = if live {
                format!("{id}-live-{}-{r}", plan.len())
            } else {
                backlog_input.clone()
            };
            plan.push(Run {
                participant: p.clone(),
                rate: args.rate,
                input,
                output: format!("{id}-out-{}", plan.len()),
                commit_interval: commit_interval(&args, p.mode(), live),
            });
        }
    }
    let latency_run = !live && !args.no_latency_run && modes.contains(&BenchMode::AtLeastOnce);
    let latency_topics: Vec<(String, String)> = (0..if latency_run { args.runs } else { 0 })
        .map(|r| {
            (
                format!("{id}-latency-in-{r}"),
                format!("{id}-latency-out-{r}"),
            )
        })
        .collect();
    let mut topics: Vec<(String, i32)> = Vec::new();
    let mut add = |t: &str| {
        if !topics.iter().any(|(n, _)| n == t) {
            topics.push((t.to_owned(), args.partitions));
            topics.push((format!("{t}-dlt"), args.partitions));
        }
    };
    for r in &plan {
        add(&r.input);
        add(&r.output);
    }
    for (i, o) in &latency_topics {
        add(i);
        add(o);
    }

    let props = args.kafka.all_properties()?;
    let external = args.kafka.brokers.as_ref().filter(|_| !args.embedded);
    if external.is_some() && !args.embedded_rtt.is_zero() {
        return Err(ConfigError::Invalid {
            field: "--embedded-rtt".into(),
            message: "it delays the embedded cluster only, not the cluster at --brokers".into(),
        }
        .into());
    }
    let cluster = match external {
        None => start_embedded(args.embedded_brokers, args.embedded_rtt, &topics)?,
        Some(b) => {
            create_external(b, &props, &topics).await?;
            Cluster::External {
                bootstrap: b.clone(),
                pids: args.broker_pids.clone(),
            }
        }
    };
    let bootstrap = cluster.bootstrap().to_owned();
    let cluster_name = match &cluster {
        Cluster::Embedded { .. } => {
            let delay = if args.embedded_rtt.is_zero() {
                String::new()
            } else {
                format!(", responses delayed {} ms", args.embedded_rtt.as_millis())
            };
            format!(
                "embedded (librdkafka mock cluster, {} broker(s), own process{delay})",
                args.embedded_brokers
            )
        }
        Cluster::External { bootstrap, pids } if pids.is_empty() => bootstrap.clone(),
        Cluster::External { bootstrap, pids } => {
            format!("{bootstrap} (broker processes {pids:?} on this machine, CPU sampled)")
        }
    };
    let producer: LoadProducer = Arc::new(
        clients::build(
            &bootstrap,
            &load_producer_defaults(),
            &props,
            ClientScope::Producer,
            &[
                ("client.id", "streamfleet-bench-seed".to_owned()),
                ("statistics.interval.ms", "0".to_owned()),
            ],
        )
        .create_with_context(DeliveryTracker::default())?,
    );
    let (cpus, cpu_model, kernel) = machine_facts();
    let load_before = loadavg();
    let bench = Bench {
        args: &args,
        cluster: &cluster,
        props: props.clone(),
        bootstrap: bootstrap.clone(),
        id: id.clone(),
        producer,
    };

    let outcome = async {
        if !live {
            let bar = ProgressBar::new(args.records);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg:32} [{bar:30}] {pos}/{len} ({per_sec})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message("seeding the backlog");
            let records = bookings(&backlog_input)?.take(args.records as usize);
            seed(&bench.producer, &backlog_input, records, None, &bar).await?;
            bar.finish_and_clear();
            let (b, p, t, n) = (
                bootstrap.clone(),
                props.clone(),
                backlog_input.clone(),
                args.records,
            );
            tokio::task::spawn_blocking(move || check_seeded(&b, &p, &t, n)).await??;
        }
        let mut measured = Vec::new();
        let total_runs = plan.len() + latency_topics.len();
        for (i, run) in plan.iter().enumerate() {
            measured.push(bench.execute(run, i + 1, total_runs).await?);
        }
        if latency_run {
            let alo: Vec<RunResult> = measured
                .iter()
                .filter(|m| m.mode == BenchMode::AtLeastOnce && m.participant == "at-least-once")
                .map(|m| m.result.clone())
                .collect();
            let half = (measure::median_result(&alo).records_per_sec / 2.0).max(1.0) as u64;
            for (k, (input, output)) in latency_topics.iter().enumerate() {
                let run = Run {
                    participant: Participant::Ours(BenchMode::AtLeastOnce),
                    rate: Some(half),
                    input: input.clone(),
                    output: output.clone(),
                    commit_interval: args.latency_commit_interval,
                };
                measured.push(bench.execute(&run, plan.len() + k + 1, total_runs).await?);
            }
        }
        anyhow::Ok(measured)
    }
    .await;
    // The seeding producer goes before the cluster it talks to.
    drop(bench);
    if let (Cluster::External { .. }, false) = (&cluster, args.keep_topics) {
        delete_external(&bootstrap, &props, &topics).await;
    }
    drop(cluster);
    let measured = outcome?;

    // Summaries: medians per (participant, rate).
    let mut groups: BTreeMap<(String, Option<u64>), Vec<&Measured>> = BTreeMap::new();
    let mut order = Vec::new();
    for m in &measured {
        let key = (m.participant.clone(), m.rate);
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(m);
    }
    let summaries: Vec<Summary> = order
        .iter()
        .map(|key| {
            let runs = &groups[key];
            let results: Vec<RunResult> = runs.iter().map(|m| m.result.clone()).collect();
            let median = measure::median_result(&results);
            let mut cores: Vec<f64> = results.iter().map(RunResult::cores).collect();
            let mut cluster_cores: Vec<f64> = runs.iter().filter_map(|m| m.cluster_cores).collect();
            Summary {
                participant: key.0.clone(),
                mode: runs[0].mode,
                rate: key.1,
                runs: runs.len(),
                cpu_seconds_per_million: median.cpu_per_million(),
                cores: measure::median(&mut cores),
                cpu_spread: measure::cpu_spread(&results),
                saturated: key
                    .1
                    .is_some_and(|offered| measure::saturated(&median, offered)),
                cluster_cores: (!cluster_cores.is_empty())
                    .then(|| measure::median(&mut cluster_cores)),
                median,
            }
        })
        .collect();

    // Nothing lost, nothing duplicated.
    let mut anomalies = Vec::new();
    for m in &measured {
        let copies = matches!(m.mode, BenchMode::Passthrough) || m.peer;
        if copies && m.output_records != m.result.records {
            anomalies.push(format!(
                "{}: {} output records for {} input records",
                m.participant, m.output_records, m.result.records
            ));
        }
    }
    let processed: Vec<&Measured> = measured
        .iter()
        .filter(|m| m.participant != "passthrough" && !m.peer && m.rate == args.rate)
        .collect();
    if let Some(first) = processed.first()
        && processed
            .iter()
            .any(|m| m.output_records != first.output_records)
    {
        anomalies.push(format!(
            "the booking processor's runs disagree on their output: {:?}",
            processed
                .iter()
                .map(|m| (m.participant.as_str(), m.output_records))
                .collect::<Vec<_>>()
        ));
    }

    let find = |label: &str, rate: Option<u64>| {
        summaries
            .iter()
            .find(|s| s.participant == label && s.rate == rate)
            .map(|s| &s.median)
    };
    let ours: Vec<(BenchMode, &RunResult)> = modes
        .iter()
        .filter_map(|m| find(m.name(), args.rate).map(|r| (*m, r)))
        .collect();
    let peers: Vec<(&str, BenchMode, &RunResult)> = args
        .peers
        .iter()
        .filter_map(|p| {
            find(&format!("{} {}", p.name, p.mode.name()), args.rate)
                .map(|r| (p.name.as_str(), p.mode, r))
        })
        .collect();
    let latency = if live {
        find(BenchMode::AtLeastOnce.name(), args.rate)
    } else {
        summaries
            .iter()
            .find(|s| s.participant == "at-least-once" && s.rate.is_some())
            .map(|s| &s.median)
    };
    let peak = measured
        .iter()
        .filter(|m| !m.peer)
        .map(|m| m.result.peak_rss_bytes)
        .max()
        .map(|rss| (rss, args.records));
    let targets = measure::targets(&Figures {
        ours,
        peers,
        latency,
        peak_rss: if live { None } else { peak },
    });
    let report = Report {
        records: args.records,
        partitions: args.partitions,
        cluster: cluster_name,
        machine: Machine {
            cpus,
            cpu_model,
            kernel,
            load_before,
            load_after: loadavg(),
        },
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        summaries,
        runs: measured.clone(),
        targets,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, &args);
    }
    for a in &anomalies {
        eprintln!("error: {a}");
    }
    Ok(if anomalies.is_empty() { 0 } else { 1 })
}

fn print_report(r: &Report, args: &BenchArgs) {
    let m = &r.machine;
    println!(
        "streamfleet-bench: {} booking events (Avro), {} partitions, {} run(s) each, medians",
        r.records, r.partitions, args.runs
    );
    println!("cluster: {}", r.cluster);
    println!(
        "machine: {} CPU(s), {}, Linux {}, load {} → {}, {} build",
        m.cpus, m.cpu_model, m.kernel, m.load_before, m.load_after, r.build
    );
    println!();
    println!(
        "{:<34} {:>11} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7} {:>10} {:>10}",
        "participant",
        "records/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "CPU s/M",
        "cores",
        "broker",
        "peak RSS",
        "outputs"
    );
    for s in &r.summaries {
        let label = s.label();
        let lat = |f: fn(&measure::Latency) -> f64| {
            s.median
                .latency_ms
                .map_or("-".to_owned(), |l| format!("{:.0}", f(&l)))
        };
        let outputs = r
            .runs
            .iter()
            .find(|m| m.participant == s.participant && m.rate == s.rate)
            .map_or(0, |m| m.output_records);
        println!(
            "{:<34} {:>11.0} {:>8} {:>8} {:>8} {:>8} {:>9.2} {:>6.2} {:>7} {:>6.0} MiB {:>10}",
            label,
            s.median.records_per_sec,
            lat(|l| l.p50),
            lat(|l| l.p95),
            lat(|l| l.p99),
            lat(|l| l.max),
            s.cpu_seconds_per_million,
            s.cores,
            s.cluster_cores
                .map_or("-".to_owned(), |c| format!("{c:.2}")),
            s.median.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            outputs
        );
    }
    println!(
        "\ncores: CPU seconds per second of the participant's measured window; broker: the same \
         for the\ncluster's processes, from the participant's `ready` to its result (the embedded \
         cluster,\nor --broker-pid; '-' when not sampled)."
    );
    if args.rate.is_none() {
        println!(
            "\nBacklog runs: latency includes the time a record waited in the backlog. Latency runs\n\
             (@ rate) commit every {} and measure record timestamp → offset commit.",
            humantime::format_duration(args.latency_commit_interval)
        );
    }
    for s in r.summaries.iter().filter(|s| s.saturated) {
        println!(
            "\nnote: {} @ {}/s processed {:.0}/s, less than it was offered: its latency is mostly\n\
             time records spent queued (the load generator and the cluster share this machine's cores).",
            s.participant,
            s.rate.unwrap_or_default(),
            s.median.records_per_sec
        );
    }
    let unsteady: Vec<&Summary> = r
        .summaries
        .iter()
        .filter(|s| s.cpu_spread > measure::CPU_SPREAD_NOTED)
        .collect();
    if !unsteady.is_empty() {
        println!(
            "\nnote: the machine's speed moved during this invocation. The runs of these participants\n\
             disagree on CPU per record (slowest run over fastest), so their medians and the ratios\n\
             below carry that noise; compare several invocations:"
        );
        for s in unsteady {
            println!("  {}: ×{:.2}", s.label(), s.cpu_spread);
        }
    }
    if !r.targets.is_empty() {
        println!("\ntargets");
        for t in &r.targets {
            println!(
                "  {} {}: measured {:.2}",
                if t.met { "met   " } else { "MISSED" },
                t.goal,
                t.measured
            );
        }
    }
}
