//! `streamfleet dev-cluster` as users run it: the cluster serves an ordinary client and stops
//! cleanly, creates the topics file's topics, delays its responses when told
//! (`--embedded-rtt`: a lower bound, never a speed), and says plainly that it has no admin
//! API; every streamfleet process runs without transparent huge pages unless told otherwise.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const BIN: &str = env!("CARGO_BIN_EXE_streamfleet");

/// A running `streamfleet dev-cluster` and the bootstrap servers it printed.
struct DevCluster {
    child: Child,
    bootstrap: String,
}

impl DevCluster {
    fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[])
    }

    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .arg("dev-cluster")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("streamfleet runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("reads stdout");
        let bootstrap = line.trim().to_owned();
        assert!(
            !bootstrap.is_empty() && bootstrap.split(',').all(|b| b.contains("127.0.0.1:")),
            "the first stdout line is the bootstrap list, got {line:?}"
        );
        Self { child, bootstrap }
    }

    /// SIGTERM, then the exit status and stderr.
    fn stop(self) -> (Option<i32>, String) {
        streamfleet_tests::signal(&self.child, "-TERM");
        let out = self.child.wait_with_output().expect("exits");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn partitions_of(consumer: &BaseConsumer, topic: &str) -> Option<usize> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}

#[test]
fn dev_cluster_serves_an_ordinary_client_and_stops_on_sigterm() {
    let cluster = DevCluster::start(&[
        "--embedded-brokers",
        "2",
        "--no-topics",
        "--topic",
        "smoke:3",
    ]);
    let config = |extra: &[(&str, &str)]| {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &cluster.bootstrap);
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c
    };
    let producer: ThreadedProducer<DefaultProducerContext> =
        config(&[]).create().expect("producer");
    for i in 0..30 {
        let key = format!("k{i}");
        let value = format!("v{i}");
        producer
            .send(BaseRecord::to("smoke").key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .expect("enqueued");
    }
    producer
        .flush(Duration::from_secs(10))
        .expect("acknowledged");

    let consumer: BaseConsumer = config(&[("group.id", "smoke-reader")])
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    assert_eq!(md.brokers().len(), 2, "--brokers 2");
    assert_eq!(
        partitions_of(&consumer, "smoke"),
        Some(3),
        "--topic smoke:3"
    );
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("smoke", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut values = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while values.len() < 30 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            values
                .push(String::from_utf8(rdkafka::Message::payload(&m).unwrap().to_vec()).unwrap());
        }
    }
    values.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
    expected.sort();
    assert_eq!(values, expected, "every record produced is read back once");
    drop((consumer, producer));

    let (code, stderr) = cluster.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("dev-cluster: stopped"), "{stderr}");
}

/// The `THP_enabled` line of a process's status: whether transparent huge pages may back its
/// memory. None on a kernel without transparent huge pages.
fn thp_enabled(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_owned())
}

#[test]
fn streamfleet_turns_transparent_huge_pages_off_unless_mimalloc_allow_thp_is_set() {
    let Some(ours) = thp_enabled(std::process::id()) else {
        eprintln!("this kernel has no transparent huge pages: nothing to turn off");
        return;
    };
    let cluster = DevCluster::start(&["--no-topics"]);
    assert_eq!(
        thp_enabled(cluster.child.id()).as_deref(),
        Some("0"),
        "off by default"
    );
    cluster.stop();
    // A process whose parent turned them off cannot turn them on (the flag is inherited).
    if ours == "1" {
        let cluster = DevCluster::start_with(&["--no-topics"], &[("MIMALLOC_ALLOW_THP", "1")]);
        assert_eq!(
            thp_enabled(cluster.child.id()).as_deref(),
            Some("1"),
            "MIMALLOC_ALLOW_THP leaves them to mimalloc"
        );
        cluster.stop();
    }
}

#[test]
fn dev_cluster_creates_the_topics_of_the_topics_file() {
    let topics = streamfleet_tests::repo().join("topics.yaml");
    let cluster = DevCluster::start(&[
        "--embedded-brokers",
        "1",
        "--topics",
        topics.to_str().unwrap(),
    ]);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .create()
        .expect("consumer");
    for (topic, partitions) in [
        ("booking-events", 12),
        ("inventory-events", 24),
        ("payment-events", 6),
        ("booking-events-retry-1000", 12),
        ("booking-events-dlt", 12),
    ] {
        assert_eq!(
            partitions_of(&consumer, topic),
            Some(partitions),
            "{topic} from topics.yaml"
        );
    }
    drop(consumer);
    let (code, stderr) = cluster.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn dev_cluster_rtt_delays_the_responses_of_every_broker() {
    let rtt = Duration::from_millis(300);
    // The mock picks each partition's leader at random among its replicas: with 24
    // partitions both brokers lead some (all on one: a chance of 2 in 2^24).
    let cluster = DevCluster::start(&[
        "--embedded-brokers",
        "2",
        "--no-topics",
        "--topic",
        "slow:24",
        "--embedded-rtt",
        "300ms",
    ]);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let md = producer
        .client()
        .fetch_metadata(Some("slow"), Duration::from_secs(30))
        .expect("metadata");
    // One partition led by each broker.
    let mut led_by = std::collections::BTreeMap::new();
    for p in md.topics()[0].partitions() {
        led_by.entry(p.leader()).or_insert(p.id());
    }
    assert_eq!(led_by.len(), 2, "both brokers lead a partition: {led_by:?}");
    let deliver = |partition: i32| {
        let started = std::time::Instant::now();
        producer
            .send(
                BaseRecord::to("slow")
                    .partition(partition)
                    .key("k")
                    .payload("v"),
            )
            .map_err(|(e, _)| e)
            .expect("enqueued");
        producer
            .flush(Duration::from_secs(30))
            .expect("acknowledged");
        started.elapsed()
    };
    for (broker, partition) in led_by {
        deliver(partition); // connects to the leader: several round trips
        let took = deliver(partition);
        assert!(
            took >= rtt - Duration::from_millis(10),
            "a produce acknowledged by broker {broker} after {took:?}, under the {rtt:?} delay"
        );
    }
    drop(producer);
    let (code, stderr) = cluster.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("every response delayed 300 ms"), "{stderr}");
}

#[test]
fn topics_against_the_dev_cluster_say_it_has_no_admin_api() {
    let cluster = DevCluster::start(&["--embedded-brokers", "1"]);
    let out = Command::new(BIN)
        .args(["topics", "plan", "--brokers", &cluster.bootstrap])
        .output()
        .expect("streamfleet runs");
    cluster.stop();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not implement the admin requests")
            && err.contains("against Apache Kafka"),
        "{err}"
    );
}
