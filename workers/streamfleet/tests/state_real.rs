//! Business state through restarts, rebalances and crashes, on a real broker: the booking,
//! inventory and payment workers (the binary, as deployed) process generated traffic while
//! they are restarted gracefully, joined by second instances that take half their partitions
//! and then all of them, or SIGKILLed, under both guarantees. Afterwards:
//!
//! - no valid event was dead-lettered (a booking state machine that forgot its bookings would
//!   dead-letter their CONFIRMED and CANCELLED events as illegal transitions);
//! - every payment was completed, and none twice (exactly once, and at least once after a
//!   graceful restart or a rebalance); at least once after SIGKILL a payment completes twice
//!   only if it was in flight at the crash, with the same gateway reference (the payment id
//!   is the gateway's idempotency key), at most one commit interval's worth;
//! - each hotel's stock is what the committed inventory commands imply.
//!
//! The retry ladder is short and generous (six attempts from 100 ms), and the simulated
//! gateway fails a tenth of its calls, so payments go through the retry path and wait in key
//! order while the disruptions happen.

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use streamfleet::fleet::WorkerKind;
use streamfleet::loadgen::{self, Generator, Limit, LoadConfig, Topics};
use streamfleet::reader;
use streamfleet_inventory::{HotelStock, InventoryProcessor};
use streamfleet_runtime::CancellationToken;
use streamfleet_schemas::{Encoding, InventoryEvent, PaymentCompleted};
use streamfleet_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_streamfleet");
const RECORDS: u64 = 5_000;
const RATE: u64 = 1_250;

/// Two scenarios at a time: each is three (or six) worker processes.
static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disruption {
    /// SIGTERM every worker halfway, wait for it to exit, start it again.
    Restart,
    /// Second instances join halfway (each takes part of the partitions), then the first
    /// ones leave (the second ones take the rest).
    Rebalance,
    /// SIGKILL every worker halfway, start it again.
    Kill,
}

struct Fleet {
    bootstrap: String,
    prefix: String,
    topics_file: tempfile::NamedTempFile,
    logs: tempfile::TempDir,
    guarantee: &'static str,
}

impl Fleet {
    fn topic(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    async fn new(guarantee: &'static str) -> Self {
        let broker = Broker::real();
        let prefix = unique("st");
        let retry =
            "    retry: {attempts: 6, initial_backoff: 100ms, multiplier: 1.5, max_backoff: 1s}\n";
        let source = |name: &str, partitions: u32, owner: &str| {
            format!(
                "  - name: {prefix}-{name}\n    partitions: {partitions}\n    owner: {owner}\n    \
                 changelog: true\n    ordering: key\n{retry}"
            )
        };
        let text = format!(
            "defaults:\n  replication_factor: 1\n  configs: {{}}\ntopics:\n{}{}{}  - name: {prefix}-inventory-outcomes\n    \
             partitions: 4\n  - name: {prefix}-payment-completed\n    partitions: 3\n",
            source("booking-events", 4, "booking"),
            source("inventory-events", 4, "inventory"),
            source("payment-events", 3, "payment"),
        );
        let topics_file = tempfile::NamedTempFile::new().expect("topics file");
        std::fs::write(topics_file.path(), text).expect("written");
        let out = Command::new(BIN)
            .args([
                "topics",
                "apply",
                "--yes",
                "--brokers",
                &broker.bootstrap(),
                "--topics",
            ])
            .arg(topics_file.path())
            .output()
            .expect("topics apply runs");
        assert!(
            out.status.success(),
            "topics apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            bootstrap: broker.bootstrap(),
            prefix,
            topics_file,
            logs: tempfile::tempdir().expect("logs"),
            guarantee,
        }
    }

    fn start(&self, kind: WorkerKind, instance: &str) -> Process {
        let name = kind.name();
        let output = match kind {
            WorkerKind::Booking => self.topic("inventory-events"),
            WorkerKind::Inventory => self.topic("inventory-outcomes"),
            _ => self.topic("payment-completed"),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join(format!("{name}-{instance}.log")))
            .expect("log");
        Command::new(BIN)
            .args(["worker", name, "--brokers", &self.bootstrap, "--topics"])
            .arg(self.topics_file.path())
            .args([
                "--input-topic",
                &self.topic(&format!("{name}-events")),
                "--output-topic",
                &output,
                "--group-id",
                &format!("{}-{name}", self.prefix),
                "--instance-id",
                instance,
                "--processing-guarantee",
                self.guarantee,
                "--http-addr",
                "127.0.0.1:0",
                "--gateway-failure-rate",
                "0.1",
                "--gateway-latency",
                "1ms",
                "-X",
                "consumer.session.timeout.ms=6000",
                "-X",
                "consumer.heartbeat.interval.ms=500",
                "-X",
                "producer.transaction.timeout.ms=10000",
            ])
            .env("STREAMFLEET_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Process)
            .expect("worker starts")
    }

    fn start_all(&self, instance: &str) -> Vec<Process> {
        WorkerKind::ALL
            .iter()
            .map(|k| self.start(*k, instance))
            .collect()
    }

    /// Waits until every worker's group has committed everything of its source and its
    /// retry rungs (nothing in flight, nothing waiting).
    async fn wait_done(&self, workers: &mut [Process]) {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let behind = self.behind().await;
            if behind.is_empty() {
                return;
            }
            let dead = workers.iter_mut().any(|w| !w.is_running());
            if dead || Instant::now() > deadline {
                self.dump();
                panic!("not done (a worker exited: {dead}): {behind:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Partitions of each group with committed records at or after its committed offset.
    async fn behind(&self) -> Vec<String> {
        let (b, prefix) = (self.bootstrap.clone(), self.prefix.clone());
        tokio::task::spawn_blocking(move || {
            let mut behind = Vec::new();
            let reader =
                reader::consumer(&b, &[], &unique("ends"), reader::Isolation::ReadCommitted)
                    .expect("consumer");
            for kind in WorkerKind::ALL {
                let group = format!("{prefix}-{}", kind.name());
                let source = format!("{prefix}-{}-events", kind.name());
                let rungs = (1..6).map(|r| {
                    let ms = (100.0 * 1.5f64.powi(r - 1)).min(1000.0).round() as u64;
                    format!("{source}-retry-{ms}")
                });
                for topic in std::iter::once(source.clone()).chain(rungs) {
                    // Under read_committed the high watermark is the last stable offset.
                    let ends: BTreeMap<i32, i64> = match reader::watermarks(&reader, &topic) {
                        Ok(w) => w.into_iter().map(|(p, (_, high))| (p, high)).collect(),
                        Err(e) => {
                            // Not known yet is not done.
                            behind.push(format!("{topic}: {e}"));
                            continue;
                        }
                    };
                    let committed = try_group_offsets(&b, &group, &topic, ends.len() as i32)
                        .unwrap_or_default();
                    let below_end: BTreeMap<i32, i64> = ends
                        .iter()
                        .map(|(p, end)| {
                            (*p, committed.get(p).copied().flatten().unwrap_or(0), *end)
                        })
                        .filter(|(_, c, end)| c < end)
                        .map(|(p, c, _)| (p, c))
                        .collect();
                    for (p, c) in unread_committed(&b, &topic, &below_end) {
                        behind.push(format!("{group} {topic}[{p}] unread from {c}"));
                    }
                }
            }
            behind
        })
        .await
        .expect("offset reader")
    }

    fn dump(&self) {
        for e in std::fs::read_dir(self.logs.path()).unwrap().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- {} (last 30 lines)", e.path().display());
            for l in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{}", &l[..l.len().min(400)]);
            }
        }
    }
}

async fn scenario(guarantee: &'static str, disruption: Disruption) {
    let _slot = SLOTS.acquire().await.expect("semaphore");
    let fleet = Fleet::new(guarantee).await;
    let mut workers = fleet.start_all("a");
    let topics = Topics {
        booking: fleet.topic("booking-events"),
        inventory: fleet.topic("inventory-events"),
        payment: fleet.topic("payment-events"),
    };
    let config = LoadConfig {
        hotels: 20,
        rooms_per_hotel: 200,
        malformed_ratio: 0.0,
        invalid_ratio: 0.0,
        replay_ratio: 0.01,
        ..LoadConfig::default()
    };
    let mut generator = Generator::new(config, &topics, &Encoding::default()).expect("generator");
    let producer = producer(&fleet.bootstrap);
    let stop = CancellationToken::new();
    let (half_tx, half_rx) = tokio::sync::oneshot::channel();
    let mut half = Some(half_tx);
    let produced = async {
        loadgen::produce(
            &producer,
            &mut generator,
            &topics,
            Limit::Count(RECORDS),
            Some(RATE),
            &stop,
            |n| {
                if n >= RECORDS / 2
                    && let Some(tx) = half.take()
                {
                    let _ = tx.send(());
                }
            },
        )
        .await
        .expect("generated")
    };
    let disrupt = async {
        half_rx.await.expect("halfway");
        match disruption {
            Disruption::Restart => {
                for w in &mut workers {
                    assert_eq!(w.terminate(Duration::from_secs(60)), Some(0), "clean stop");
                }
                workers = fleet.start_all("a");
            }
            Disruption::Kill => {
                for w in &mut workers {
                    w.kill();
                }
                workers = fleet.start_all("a");
            }
            Disruption::Rebalance => {
                let second = fleet.start_all("b");
                tokio::time::sleep(Duration::from_secs(3)).await;
                for w in &mut workers {
                    assert_eq!(w.terminate(Duration::from_secs(60)), Some(0), "clean stop");
                }
                workers = second;
            }
        }
    };
    tokio::join!(produced, disrupt);
    fleet.wait_done(&mut workers).await;
    for w in &mut workers {
        assert_eq!(w.terminate(Duration::from_secs(60)), Some(0), "clean stop");
    }
    let tally = generator.tally().clone();
    check(&fleet, guarantee, disruption, &tally).await;
}

async fn check(fleet: &Fleet, guarantee: &str, disruption: Disruption, tally: &loadgen::Tally) {
    let b = &fleet.bootstrap;
    // No valid event dead-lettered: the traffic has none that is invalid.
    for source in ["booking-events", "inventory-events", "payment-events"] {
        let dlt = read_topic(
            b,
            &fleet.topic(&format!("{source}-dlt")),
            Isolation::ReadCommitted,
        )
        .await;
        if !dlt.is_empty() {
            fleet.dump();
        }
        let reasons: Vec<String> = dlt
            .iter()
            .take(5)
            .map(|r| {
                r.header_str(streamfleet_runtime::headers::ERROR_MESSAGE)
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect();
        assert!(
            dlt.is_empty(),
            "{} valid {source} dead-lettered: {reasons:?}",
            dlt.len()
        );
    }

    // Every payment completed; none twice, but for a crash at least once.
    let codec = Encoding::default().codec::<PaymentCompleted>("x").unwrap();
    let completed = read_topic(
        b,
        &fleet.topic("payment-completed"),
        Isolation::ReadCommitted,
    )
    .await;
    let mut by_payment: HashMap<String, Vec<String>> = HashMap::new();
    for r in &completed {
        let c = codec.decode(r.value.as_deref().unwrap()).unwrap();
        by_payment
            .entry(c.payment_id)
            .or_default()
            .push(c.gateway_reference);
    }
    let expected: Vec<&String> = tally.payments.keys().collect();
    let missing: Vec<&&String> = expected
        .iter()
        .filter(|p| !by_payment.contains_key(**p))
        .collect();
    assert!(
        missing.is_empty(),
        "{} payments never completed: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let twice: Vec<(&String, &Vec<String>)> =
        by_payment.iter().filter(|(_, v)| v.len() > 1).collect();
    eprintln!(
        "{guarantee} {disruption:?}: {} payments, {} completed more than once",
        by_payment.len(),
        twice.len()
    );
    if guarantee == "exactly-once" || disruption != Disruption::Kill {
        assert!(
            twice.is_empty(),
            "payments completed twice: {:?}",
            &twice[..twice.len().min(5)]
        );
    } else {
        for (p, refs) in &twice {
            assert!(
                refs.iter().all(|r| r == &refs[0]),
                "{p} charged with two references: {refs:?}"
            );
        }
        // At most what the crash caught in flight: one commit interval (1 s) of payments.
        assert!(twice.len() as u64 <= RATE, "{} payments twice", twice.len());
    }

    // Each hotel's stock is what the committed commands imply.
    let commands = read_topic(
        b,
        &fleet.topic("inventory-events"),
        Isolation::ReadCommitted,
    )
    .await;
    let command_codec = Encoding::default().codec::<InventoryEvent>("x").unwrap();
    let mut ordered = commands;
    ordered.sort_by_key(|r| (r.partition, r.offset));
    let mut model: BTreeMap<String, HotelStock> = BTreeMap::new();
    for r in &ordered {
        let c = command_codec.decode(r.value.as_deref().unwrap()).unwrap();
        let stock = model.entry(c.hotel_id.clone()).or_default();
        if let Ok(streamfleet_inventory::Effect::Apply {
            result, available, ..
        }) = InventoryProcessor::effect(&*stock, &c)
        {
            streamfleet_inventory::apply(stock, &c, result, available);
        }
    }
    let outcomes = read_topic(
        b,
        &fleet.topic("inventory-outcomes"),
        Isolation::ReadCommitted,
    )
    .await;
    let last = last_stock_by_hotel(outcomes);
    for (hotel, stock) in &model {
        assert_eq!(
            last.get(hotel),
            Some(&stock.available),
            "{hotel}: stock after {disruption:?}"
        );
    }
}

macro_rules! scenarios {
    ($($name:ident: $guarantee:literal, $disruption:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
        async fn $name() {
            scenario($guarantee, Disruption::$disruption).await;
        }
    )*};
}

scenarios! {
    state_survives_a_graceful_restart_at_least_once_real_broker: "at-least-once", Restart;
    state_survives_a_graceful_restart_exactly_once_real_broker: "exactly-once", Restart;
    state_moves_with_a_rebalance_at_least_once_real_broker: "at-least-once", Rebalance;
    state_moves_with_a_rebalance_exactly_once_real_broker: "exactly-once", Rebalance;
    state_survives_sigkill_at_least_once_real_broker: "at-least-once", Kill;
    state_survives_sigkill_exactly_once_not_on_nisshi: "exactly-once", Kill;
}
