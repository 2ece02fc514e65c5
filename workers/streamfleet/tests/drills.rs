//! Failure drills on a three-node Apache Kafka cluster (each drill starts its own, from the
//! Kafka distribution; see `streamfleet_tests::cluster`), with topics replicated three ways
//! and `min.insync.replicas` 2, so one node can be lost at any time.
//!
//! A passthrough worker copies 100,000 sequence records (seeded while it runs) and a broker
//! fails under it:
//!
//! 1. the leader of input partitions is SIGKILLed mid-run and restarted;
//! 2. the node coordinating the worker's transactions is SIGKILLed mid-transaction and
//!    restarted;
//! 3. all three nodes are restarted cleanly, one after the other;
//! 4. at least once: the group coordinator is SIGKILLed mid-run and restarted.
//!
//! The worker must ride through each without a restart of its own: any exit fails the drill,
//! `EXIT_WEDGED` included (a transactional call librdkafka never completed after its
//! coordinator died, confluentinc/librdkafka#5456; see `Transactions::watch` for how the
//! worker gets librdkafka to look for the coordinator again). Each drill prints how long its
//! transactional calls waited for a coordinator. Then `verify` must find the
//! output exactly the input (exactly once: nothing lost, nothing twice, per-key order, no
//! transaction left open; at least once: nothing lost, order kept, and duplicates no more
//! than one commit interval's records). Each drill is bounded in time, and prints how long it
//! took. They run one at a time: a drill is three JVMs and a worker on the machine.
//!
//! The worker runs with production settings: in particular the consumer's session timeout
//! stays at librdkafka's 45 s. A static member (`--instance-id`) whose session times out on
//! the client side (a coordinator unreachable for longer than that) rejoins with a new member
//! id and is then fenced by its own instance id, which librdkafka treats as fatal
//! (confluentinc/librdkafka#3437): with a 10 s session the group-coordinator drill ended that
//! way. A failover takes 5 to 15 s here.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use streamfleet::verify;
use streamfleet_tests::cluster::KafkaCluster;
use streamfleet_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_streamfleet");
const RECORDS: u64 = 100_000;
const PARTITIONS: i32 = 6;
/// Seeding rate: the input arrives over about 20 s, so the failure hits a running worker.
const RATE: u64 = 5_000;
/// The longest a drill may take from the first record to the last commit.
const BOUND: Duration = Duration::from_secs(240);

/// One drill at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Guarantee {
    ExactlyOnce,
    AtLeastOnce,
}

struct Drill {
    cluster: KafkaCluster,
    input: String,
    output: String,
    group: String,
    logs: tempfile::TempDir,
    started: Instant,
}

impl Drill {
    async fn new(name: &str) -> Self {
        let cluster = KafkaCluster::start(3);
        let (input, output) = (
            unique(&format!("{name}-in")),
            unique(&format!("{name}-out")),
        );
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .create()
            .expect("admin");
        let dlt = format!("{input}-dlt");
        let topics: Vec<NewTopic> = [&input, &output, &dlt]
            .into_iter()
            .map(|t| {
                NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(3))
                    .set("min.insync.replicas", "2")
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        // Right after the nodes start, librdkafka may still swap its bootstrap connections for
        // the brokers it learns (the request then fails with DestroyBroker): try again.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut retried = false;
        let results = loop {
            match admin.create_topics(&topics, &opts).await {
                Ok(r) => break r,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("create_topics: {e}; trying again");
                    retried = true;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("create_topics: {e}"),
            }
        };
        for r in results {
            match r {
                Ok(_) => {}
                // The failed attempt's request may have reached the controller.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if retried => {}
                Err((t, e)) => panic!("creating {t}: {e}"),
            }
        }
        cluster.wait_fully_replicated(&[&input, &output], Duration::from_secs(60));
        Self {
            cluster,
            input,
            output,
            group: unique(name),
            logs: tempfile::tempdir().expect("log dir"),
            started: Instant::now(),
        }
    }

    fn worker(&self, guarantee: Guarantee) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join("worker.log"))
            .expect("log");
        let mode = match guarantee {
            Guarantee::ExactlyOnce => "exactly-once",
            Guarantee::AtLeastOnce => "at-least-once",
        };
        // STREAMFLEET_TEST_BIN runs another build of the worker (a copy, while this one is
        // rebuilt).
        let bin = std::env::var("STREAMFLEET_TEST_BIN").unwrap_or_else(|_| BIN.to_owned());
        std::process::Command::new(bin)
            .args([
                "worker",
                "passthrough",
                "--brokers",
                self.cluster.bootstrap(),
                "--group-id",
                &self.group,
                "--instance-id",
                "drill-0",
                "--input-topic",
                &self.input,
                "--output-topic",
                &self.output,
                "--processing-guarantee",
                mode,
                "--http-addr",
                "127.0.0.1:0",
            ])
            .env("STREAMFLEET_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map(Process)
            .expect("worker starts")
    }

    /// Seeds the whole input at [`RATE`] in the background.
    fn seed(&mut self) -> tokio::task::JoinHandle<()> {
        self.started = Instant::now();
        let (bootstrap, input) = (self.cluster.bootstrap().to_owned(), self.input.clone());
        tokio::spawn(async move {
            let p = producer(&bootstrap);
            verify::seed(&p, &input, 0, RECORDS, 1000, Some(RATE), |_| {})
                .await
                .expect("seeded through the failure");
        })
    }

    /// The group's committed input records; `None` while the coordinator cannot answer (it
    /// may be the node that is down).
    fn committed(&self) -> Option<i64> {
        committed_sum(self.cluster.bootstrap(), &self.group, &self.input)
    }

    /// Waits until `at_least` input records are committed, within the drill's bound.
    async fn wait_committed(&self, at_least: i64, worker: &mut Process) {
        loop {
            let (b, g, t) = (
                self.cluster.bootstrap().to_owned(),
                self.group.clone(),
                self.input.clone(),
            );
            let committed = tokio::task::spawn_blocking(move || committed_sum(&b, &g, &t))
                .await
                .expect("offset reader")
                .unwrap_or(-1);
            if committed >= at_least {
                return;
            }
            if !worker.is_running() || self.started.elapsed() > BOUND {
                self.dump();
                stacks(worker);
                panic!(
                    "{} of {at_least} committed after {:?}; worker running: {}",
                    committed,
                    self.started.elapsed(),
                    worker.is_running()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn verify(&self) -> verify::Verification {
        let (b, i, o) = (
            self.cluster.bootstrap().to_owned(),
            self.input.clone(),
            self.output.clone(),
        );
        tokio::task::spawn_blocking(move || {
            verify::verify(&b, &[], &i, &o, Duration::from_secs(60))
        })
        .await
        .expect("verify thread")
        .expect("verify runs")
    }

    /// Ends the drill: the worker must still be running, and stop cleanly.
    async fn finish(&self, mut worker: Process, seeding: tokio::task::JoinHandle<()>) {
        seeding.await.expect("seeding");
        self.wait_committed(RECORDS as i64, &mut worker).await;
        let took = self.started.elapsed();
        assert!(worker.is_running(), "the worker is still running");
        let code = worker.terminate(Duration::from_secs(60));
        if code != Some(0) {
            self.dump();
        }
        assert_eq!(code, Some(0), "the worker stops cleanly after the drill");
        let log = std::fs::read_to_string(self.logs.path().join("worker.log")).unwrap_or_default();
        let waits: Vec<i64> = log
            .lines()
            .filter(|l| l.contains("waited for its coordinator returned"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["waited_ms"].as_i64())
            .collect();
        eprintln!(
            "drill done: {RECORDS} records committed {took:?} after the first was seeded; \
             transaction calls that waited over 3 s for a coordinator: {} (returned after {:?} ms)",
            log.matches("nudging librdkafka").count(),
            waits,
        );
    }

    /// Ends an exactly-once drill: the worker finishes and stops cleanly, the brokers' log is
    /// summarised, and `verify` must find the output exactly the input.
    async fn finish_exactly_once(&self, worker: Process, seeding: tokio::task::JoinHandle<()>) {
        self.finish(worker, seeding).await;
        let v = self.verify().await;
        self.broker_summary();
        self.assert_exactly_once(&v);
    }

    /// What the brokers said about the failure: lines worth reading in the note.
    fn broker_summary(&self) {
        let lines = self.cluster.log_lines(&[" ERROR ", " WARN "]);
        eprintln!("broker log lines at WARN or ERROR: {}", lines.len());
        for l in lines.iter().take(15) {
            eprintln!("  {}", &l[..l.len().min(300)]);
        }
    }

    fn dump(&self) {
        let log = std::fs::read_to_string(self.logs.path().join("worker.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!("---- worker log (last 60 lines)");
        for l in &lines[lines.len().saturating_sub(60)..] {
            eprintln!("{}", &l[..l.len().min(400)]);
        }
        for n in 1..=3 {
            eprintln!(
                "---- node {n} (last 20 lines)\n{}",
                self.cluster.log_tail(n, 20)
            );
        }
    }

    fn assert_exactly_once(&self, v: &verify::Verification) {
        if v.anomalies() > 0 {
            self.dump();
        }
        assert_eq!(v.anomalies(), 0, "{v:?}");
        assert_eq!(v.output_records, RECORDS as usize, "{v:?}");
    }
}

/// Where a stuck worker's threads are, when gdb is installed.
fn stacks(worker: &Process) {
    let out = std::process::Command::new("gdb")
        .args([
            "-p",
            &worker.0.id().to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 30",
        ])
        .output();
    if let Ok(out) = out {
        eprintln!(
            "---- worker threads\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

fn committed_sum(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    try_group_offsets(bootstrap, group, topic, PARTITIONS)
        .ok()
        .map(|o| o.values().map(|o| o.unwrap_or(0)).sum())
}

/// Waits until the worker has committed `fraction` of the input, then returns the time.
/// SIGKILLs `node` (the drill's `role` for it), and restarts it 5 s later.
async fn kill_and_restart(d: &Drill, node: u16, role: &str) {
    let killed = Instant::now();
    d.cluster.kill(node);
    eprintln!(
        "killed node {node} ({role}) at {:?} committed",
        d.committed()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    d.cluster.restart(node);
    eprintln!("node {node} back after {:?}", killed.elapsed());
}

async fn mid_run(d: &Drill, worker: &mut Process, percent: i64) -> Instant {
    d.wait_committed(RECORDS as i64 * percent / 100, worker)
        .await;
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka distribution: set STREAMFLEET_KAFKA_DIST"]
async fn leader_of_input_partitions_killed_and_restarted_three_nodes() {
    let _serial = SERIAL.lock().await;
    let mut d = Drill::new("drill-leader").await;
    let mut w = d.worker(Guarantee::ExactlyOnce);
    let seeding = d.seed();
    mid_run(&d, &mut w, 30).await;
    let leader = d
        .cluster
        .leader_of(&d.input, 0)
        .expect("partition 0 has a leader");
    let role = format!("leader of {}[0]", d.input);
    kill_and_restart(&d, leader, &role).await;
    d.finish_exactly_once(w, seeding).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka distribution: set STREAMFLEET_KAFKA_DIST"]
async fn transaction_coordinator_killed_mid_transaction_three_nodes() {
    let _serial = SERIAL.lock().await;
    let mut d = Drill::new("drill-txn").await;
    let mut w = d.worker(Guarantee::ExactlyOnce);
    let seeding = d.seed();
    mid_run(&d, &mut w, 30).await;
    // The worker's first transactional producer (`<group>.<instance>`); its transaction is
    // open whenever records flow (commits every 100 ms).
    let id = format!("{}.drill-0", d.group);
    let coordinator = d
        .cluster
        .coordinator_of("__transaction_state", &id)
        .expect("the transaction coordinator is known");
    kill_and_restart(&d, coordinator, &format!("transaction coordinator of {id}")).await;
    d.finish_exactly_once(w, seeding).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka distribution: set STREAMFLEET_KAFKA_DIST"]
async fn rolling_restart_of_every_node_three_nodes() {
    let _serial = SERIAL.lock().await;
    let mut d = Drill::new("drill-rolling").await;
    let mut w = d.worker(Guarantee::ExactlyOnce);
    let seeding = d.seed();
    mid_run(&d, &mut w, 10).await;
    let internal = ["__consumer_offsets", "__transaction_state"];
    for node in 1..=3 {
        let t = Instant::now();
        d.cluster.stop_node(node);
        d.cluster.restart(node);
        // The next node goes down only once this one has caught up, as in a real rolling
        // restart: otherwise two of three replicas could be out of sync at once.
        let topics = [
            d.input.as_str(),
            d.output.as_str(),
            internal[0],
            internal[1],
        ];
        d.cluster
            .wait_fully_replicated(&topics, Duration::from_secs(120));
        eprintln!(
            "node {node} restarted and in sync after {:?}, {:?} committed",
            t.elapsed(),
            d.committed()
        );
    }
    d.finish_exactly_once(w, seeding).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka distribution: set STREAMFLEET_KAFKA_DIST"]
async fn at_least_once_group_coordinator_killed_three_nodes() {
    let _serial = SERIAL.lock().await;
    let mut d = Drill::new("drill-alo").await;
    let mut w = d.worker(Guarantee::AtLeastOnce);
    let seeding = d.seed();
    mid_run(&d, &mut w, 30).await;
    let coordinator = d
        .cluster
        .coordinator_of("__consumer_offsets", &d.group)
        .expect("the group coordinator is known");
    kill_and_restart(&d, coordinator, "group coordinator").await;
    d.finish(w, seeding).await;
    let v = d.verify().await;
    d.broker_summary();
    let c = &v.comparison;
    eprintln!(
        "at least once through the failure: {} duplicates",
        c.duplicated
    );
    if c.missing + c.out_of_order + c.unexpected + c.input_duplicates > 0 || !v.hanging.is_empty() {
        d.dump();
    }
    assert_eq!(c.missing, 0, "nothing lost: {v:?}");
    assert_eq!(c.out_of_order, 0, "per-key order kept: {v:?}");
    assert_eq!(c.unexpected + c.input_duplicates, 0, "{v:?}");
    assert!(v.hanging.is_empty(), "{v:?}");
    // A record is repeated only if it was processed after the last commit that landed before
    // the failure: at most one commit interval (1 s) of input, which arrives at RATE a second.
    assert!(
        c.duplicated <= RATE,
        "{} duplicates: more than one commit interval's records ({RATE})",
        c.duplicated
    );
}
