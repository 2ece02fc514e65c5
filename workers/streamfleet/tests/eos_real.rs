//! Exactly-once under crashes, modelled on Apache Kafka's transactions system test: worker
//! processes copying a sequence workload are killed with SIGKILL, frozen with SIGSTOP and
//! aborted at random, and `verify` must find the output exactly the input, once, in order,
//! with aborted records invisible to read_committed and no transaction left hanging.
//!
//! These need a broker whose read_committed consumers skip aborted records: Apache Kafka
//! (nisshi does not, hence `not_on_nisshi`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, TopicPartitionList};
use streamfleet::{reader, verify};
use streamfleet_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_streamfleet");

struct Cluster {
    broker: Broker,
    input: String,
    output: String,
    group: String,
    logs: tempfile::TempDir,
}

impl Cluster {
    async fn new(partitions: i32) -> Self {
        let broker = Broker::real();
        let (input, output) = (unique("crash-in"), unique("crash-out"));
        for t in [&input, &output, &format!("{input}-dlt")] {
            broker.create_topic(t, partitions).await;
        }
        Self {
            broker,
            input,
            output,
            group: unique("crash"),
            logs: tempfile::tempdir().unwrap(),
        }
    }

    async fn seed(&self, count: u64) {
        self.seed_more(0, count).await;
    }

    /// Continues the sequence: records `start..start + count`.
    async fn seed_more(&self, start: u64, count: u64) {
        let p = producer(&self.broker.bootstrap());
        verify::seed(&p, &self.input, start, count, 1000, None, |_| {})
            .await
            .expect("seeded");
    }

    /// Output records of aborted transactions (seen only by read_uncommitted readers)
    /// written at or after `since_ms`.
    async fn aborted_output_since(&self, since_ms: i64) -> usize {
        let b = self.broker.bootstrap();
        let all = read_topic(&b, &self.output, Isolation::ReadUncommitted).await;
        let committed: std::collections::HashSet<(i32, i64)> =
            read_topic(&b, &self.output, Isolation::ReadCommitted)
                .await
                .iter()
                .map(|r| (r.partition, r.offset))
                .collect();
        all.iter()
            .filter(|r| !committed.contains(&(r.partition, r.offset)))
            .filter(|r| r.timestamp.is_some_and(|t| t >= since_ms))
            .count()
    }

    fn worker(&self, instance: &str, extra: &[&str]) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join(format!("{instance}.log")))
            .unwrap();
        Command::new(BIN)
            .args([
                "worker",
                "passthrough",
                "--brokers",
                &self.broker.bootstrap(),
                "--group-id",
                &self.group,
                "--instance-id",
                instance,
                "--input-topic",
                &self.input,
                "--output-topic",
                &self.output,
                "--processing-guarantee",
                "exactly-once",
                "--http-addr",
                "127.0.0.1:0",
                "-X",
                "consumer.session.timeout.ms=6000",
                "-X",
                "consumer.heartbeat.interval.ms=1000",
                "-X",
                "producer.transaction.timeout.ms=10000",
            ])
            .args(extra)
            .env("STREAMFLEET_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Process)
            .expect("worker starts")
    }

    /// Waits until a JSON log line of `instance` satisfies `check`.
    fn wait_log(&self, instance: &str, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
        let path = self.logs.path().join(format!("{instance}.log"));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|v| check(&v));
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{instance}: no log line for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sum of the group's committed offsets on the input.
    fn committed(&self, partitions: i32) -> i64 {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.broker.bootstrap())
            .set("group.id", &self.group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&self.input, p);
        }
        c.committed_offsets(tpl, Duration::from_secs(10))
            .map(|t| {
                t.elements()
                    .iter()
                    .filter_map(|e| e.offset().to_raw())
                    .filter(|o| *o > 0)
                    .sum()
            })
            .unwrap_or(0)
    }

    fn wait_committed(&self, partitions: i32, at_least: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.committed(partitions) < at_least {
            assert!(
                Instant::now() < deadline,
                "only {} of {at_least} committed; logs in {:?}",
                self.committed(partitions),
                self.logs.path()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    async fn verify(&self) -> verify::Verification {
        let (b, i, o) = (
            self.broker.bootstrap(),
            self.input.clone(),
            self.output.clone(),
        );
        tokio::task::spawn_blocking(move || {
            verify::verify(&b, &[], &i, &o, Duration::from_secs(30))
        })
        .await
        .unwrap()
        .expect("verify runs")
    }
}

fn stop(mut child: Process) {
    signal(&child.0, "-TERM");
    let _ = child.0.wait();
}

fn dump_logs(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        eprintln!("---- {}", e.path().display());
        eprintln!("{}", std::fs::read_to_string(e.path()).unwrap_or_default());
    }
}

impl Cluster {
    /// Prints the logs, and where each sampled duplicate or missing record sits: its input
    /// partition and offset, and every copy the output holds (read_committed and not), with
    /// timestamps to set beside the logs' — what an anomaly needs to be traced to a crash,
    /// a rebalance or a commit.
    fn explain(&self, v: &verify::Verification) {
        dump_logs(self.logs.path());
        let read = |topic: &str, isolation| {
            reader::read_all(&self.broker.bootstrap(), &[], topic, isolation).unwrap_or_default()
        };
        let input = read(&self.input, reader::Isolation::ReadCommitted);
        let committed = read(&self.output, reader::Isolation::ReadCommitted);
        let everything = read(&self.output, reader::Isolation::ReadUncommitted);
        let value = |r: &reader::Fetched| {
            String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
        };
        for sample in &v.comparison.samples {
            let Some((_, wanted)) = sample.split_once(" = ") else {
                continue;
            };
            let at = |records: &[reader::Fetched]| -> Vec<String> {
                records
                    .iter()
                    .filter(|r| value(r) == wanted)
                    .map(|r| format!("p{}@{} ts {:?}", r.partition, r.offset, r.timestamp))
                    .collect()
            };
            eprintln!(
                "{sample}: input {:?}; output committed {:?}; output incl. aborted {:?}",
                at(&input),
                at(&committed),
                at(&everything)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS (not nisshi: it delivers records of aborted transactions to read_committed consumers)"]
async fn three_crashes_lose_and_duplicate_nothing_not_on_nisshi() {
    let c = Cluster::new(6).await;
    let mut a = c.worker("a", &[]);
    let b = c.worker("b", &[]);
    // The input arrives over about 10 s, so each crash hits a worker in the middle of a
    // transaction, not one that has finished.
    let seeding = {
        let (bootstrap, input) = (c.broker.bootstrap(), c.input.clone());
        tokio::spawn(async move {
            let p = producer(&bootstrap);
            verify::seed(&p, &input, 0, 100_000, 1000, Some(10_000), |_| {})
                .await
                .expect("seeded");
        })
    };
    for pct in [20, 40, 60] {
        c.wait_committed(6, 100_000 * pct / 100, Duration::from_secs(300));
        a.kill(); // SIGKILL: no shutdown, an open transaction left behind
        a = c.worker("a", &[]); // same instance id: its init aborts what the dead one left open
    }
    seeding.await.expect("seeding");
    c.wait_committed(6, 100_000, Duration::from_secs(300));
    stop(a);
    stop(b);
    let v = c.verify().await;
    if v.anomalies() > 0 {
        c.explain(&v);
    }
    assert_eq!(v.anomalies(), 0, "{v:?}");
    assert_eq!(v.output_records, 100_000);
    assert!(
        v.output_aborted_filtered > 0,
        "the crashes left aborted records behind (read_uncommitted sees them)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS (not nisshi: it delivers records of aborted transactions to read_committed consumers)"]
async fn a_zombie_adds_no_duplicate_not_on_nisshi() {
    let c = Cluster::new(12).await;
    c.seed(40_000).await;
    // The zombie-to-be is slow, so its lanes always hold fetched records it has not
    // processed: when it wakes up it goes on with them, into its open transaction.
    let a = c.worker("a", &["--fault-process-delay", "1ms"]);
    let rebalance = |kind: &'static str| {
        move |v: &serde_json::Value| {
            v["message"] == "rebalance" && v["kind"] == kind && v["count"].as_u64() > Some(0)
        }
    };
    c.wait_log("a", "its assignment", rebalance("assigned"));
    let b = c.worker("b", &[]);
    c.wait_log("b", "its assignment", rebalance("assigned"));
    c.wait_log("a", "handing partitions to b", rebalance("revoked"));
    // a processes its partitions' backlog (under 1,000 records a second each), and its
    // transaction is open most of the time.
    std::thread::sleep(Duration::from_secs(2));
    // Frozen past the session timeout (6 s; heartbeats every second), so its partitions move
    // to b, but not past its records' delivery timeout (10 s, the transaction timeout):
    // librdkafka would fail its transaction locally, and it would write nothing more.
    signal(&a.0, "-STOP");
    std::thread::sleep(Duration::from_secs(8));
    // Input remains when the zombie wakes up with its open transaction and stale generation.
    c.seed_more(40_000, 10_000).await;
    let woke_at = streamfleet_runtime::now_ms();
    signal(&a.0, "-CONT");
    c.wait_committed(12, 50_000, Duration::from_secs(300));
    stop(a);
    stop(b);
    let v = c.verify().await;
    if v.anomalies() > 0 {
        c.explain(&v);
    }
    // b took over from the last committed offsets, so every record the zombie wrote after it
    // woke up is one b wrote too: visible, it would be a duplicate.
    assert_eq!(v.anomalies(), 0, "{v:?}");
    assert_eq!(v.output_records, 50_000);
    // The zombie did write after waking up (the scenario happened), and all of it was aborted:
    // only a read_uncommitted reader sees those records. Nobody else aborts here.
    let late = c.aborted_output_since(woke_at).await;
    if late == 0 {
        dump_logs(c.logs.path());
    }
    assert!(
        late > 0,
        "the zombie wrote nothing after waking up: the fencing was not exercised (logs in {:?})",
        c.logs.path()
    );
    eprintln!("the zombie's late writes, all aborted: {late}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS (not nisshi: it delivers records of aborted transactions to read_committed consumers)"]
async fn random_aborts_leave_no_trace_not_on_nisshi() {
    let c = Cluster::new(3).await;
    c.seed(20_000).await;
    let a = c.worker("a", &["--fault-abort-probability", "0.3"]);
    c.wait_committed(3, 20_000, Duration::from_secs(300));
    stop(a);
    let v = c.verify().await;
    assert_eq!(v.anomalies(), 0, "{v:?}");
    assert!(v.output_aborted_filtered > 0, "aborts happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS (not nisshi: it delivers records of aborted transactions to read_committed consumers)"]
async fn inventory_stock_after_crashes_equals_the_committed_inputs_not_on_nisshi() {
    use streamfleet_inventory::{HotelStock, InventoryProcessor};
    use streamfleet_schemas::{Encoding, InventoryEvent, InventoryEventType};

    let broker = Broker::real();
    let input = unique("inv-crash");
    let output = format!("{input}-out");
    let dir = tempfile::tempdir().unwrap();
    let topics = dir.path().join("topics.yaml");
    std::fs::write(
        &topics,
        format!(
            "topics:\n  - name: {input}\n    partitions: 4\n    replication_factor: 1\n    owner: inventory\n    \
             changelog: true\n  - name: {output}\n    partitions: 4\n    replication_factor: 1\n"
        ),
    )
    .unwrap();
    let topology = streamfleet_runtime::topology::Topology::load(&topics).unwrap();
    broker.create_topology(&topology).await;

    // 20 hotels restocked, then 8,000 reserves and releases.
    let codec = Encoding::default().codec::<InventoryEvent>(&input).unwrap();
    let mut commands = Vec::new();
    for h in 0..20 {
        commands.push(InventoryEvent {
            event_id: format!("restock-{h}"),
            hotel_id: format!("hotel-{h}"),
            kind: InventoryEventType::Restock,
            quantity: 300,
            booking_id: None,
            occurred_at: 0,
        });
    }
    for i in 0..8_000u32 {
        let (kind, booking) = if i % 4 == 3 {
            (InventoryEventType::Release, format!("b{}", i - 3))
        } else {
            (InventoryEventType::Reserve, format!("b{i}"))
        };
        commands.push(InventoryEvent {
            event_id: format!("{kind:?}-{booking}"),
            hotel_id: format!("hotel-{}", (i / 4) % 20),
            kind,
            quantity: 1,
            booking_id: Some(booking),
            occurred_at: 0,
        });
    }
    let batch: Vec<(String, Vec<u8>)> = commands
        .iter()
        .map(|c| (c.hotel_id.clone(), codec.encode(c).unwrap()))
        .collect();
    produce_all(&producer(&broker.bootstrap()), &input, &batch).await;

    // The stock the committed inputs imply: apply every command in order per hotel.
    let mut model: BTreeMap<String, HotelStock> = BTreeMap::new();
    for c in &commands {
        let stock = model.entry(c.hotel_id.clone()).or_default();
        if let streamfleet_inventory::Effect::Apply {
            result, available, ..
        } = InventoryProcessor::effect(&*stock, c).unwrap()
        {
            streamfleet_inventory::apply(stock, c, result, available);
        }
    }

    let group = unique("inv-crash");
    let spawn = || {
        Command::new(BIN)
            .args([
                "worker",
                "inventory",
                "--brokers",
                &broker.bootstrap(),
                "--topics",
                topics.to_str().unwrap(),
                "--output-topic",
                &output,
                "--group-id",
                &group,
                "--instance-id",
                "inv-0",
                "--processing-guarantee",
                "exactly-once",
                "--http-addr",
                "127.0.0.1:0",
                "-X",
                "consumer.session.timeout.ms=6000",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Process)
            .unwrap()
    };
    let outcomes = |isolation| {
        let (b, o) = (broker.bootstrap(), output.clone());
        move || read_all_blocking(&b, &o, isolation).len()
    };
    let mut w = spawn();
    for fraction in [3, 6] {
        let count = outcomes(Isolation::ReadCommitted);
        let deadline = Instant::now() + Duration::from_secs(300);
        while count() < commands.len() * fraction / 10 {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(300));
        }
        w.kill();
        w = spawn();
    }
    let count = outcomes(Isolation::ReadCommitted);
    let deadline = Instant::now() + Duration::from_secs(300);
    while count() < commands.len() {
        assert!(
            Instant::now() < deadline,
            "not every command got its outcome"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    stop(w);

    let records = read_topic(&broker.bootstrap(), &output, Isolation::ReadCommitted).await;
    assert_eq!(
        records.len(),
        commands.len(),
        "one outcome per command, none twice"
    );
    let last = last_stock_by_hotel(records);
    for (hotel, stock) in &model {
        assert_eq!(
            last[hotel], stock.available,
            "{hotel}: the stock after the crashes is what the inputs imply"
        );
    }
}
