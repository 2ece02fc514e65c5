//! The `streamfleet` binary as users run it: exit codes, configuration errors, secrets in
//! logs, the HTTP endpoint, SIGTERM, `schemas check`, and the demo.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, TopicPartitionList};
use streamfleet_runtime::embedded::EmbeddedCluster;
use streamfleet_schemas::{Encoding, InventoryEvent, InventoryEventType};

const BIN: &str = env!("CARGO_BIN_EXE_streamfleet");

fn streamfleet(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("streamfleet runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn configuration_errors_name_the_field_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        // Every command that talks to a cluster needs --brokers.
        (&["lag", "--group", "g", "--once"], "--brokers"),
        (&["produce", "--count", "1"], "--brokers"),
        (&["dlq", "inspect", "--topic", "t-dlt"], "--brokers"),
        (&["dlq", "replay", "--topic", "t-dlt"], "--brokers"),
        (&["seed", "--topic", "t"], "--brokers"),
        (&["verify", "--input", "a", "--output", "b"], "--brokers"),
        (&["topics", "apply"], "--brokers"),
        (
            &[
                "worker",
                "booking",
                "--brokers",
                "localhost:1",
                "--lane-capacity",
                "0",
            ],
            "--lane-capacity",
        ),
        (
            &[
                "worker",
                "booking",
                "--brokers",
                "localhost:1",
                "--max-buffered-mib",
                "0",
            ],
            "--max-buffered-mib",
        ),
        (
            &[
                "worker",
                "booking",
                "--brokers",
                "localhost:1",
                "-X",
                "linger.ms=banana",
            ],
            "linger.ms",
        ),
        (
            &[
                "worker",
                "booking",
                "--brokers",
                "localhost:1",
                "-X",
                "no.such.property=1",
            ],
            "no.such.property",
        ),
        (
            &[
                "worker",
                "booking",
                "--brokers",
                "localhost:1",
                "-X",
                "enable.auto.commit=true",
            ],
            "managed by streamfleet",
        ),
        (
            &[
                "worker",
                "booking",
                "--brokers",
                "localhost:1",
                "-X",
                "nonsense",
            ],
            "key=value",
        ),
        (&["worker", "booking"], "--brokers"),
        (
            &[
                "worker",
                "payment",
                "--brokers",
                "localhost:1",
                "--gateway-failure-rate",
                "2",
            ],
            "--gateway-failure-rate",
        ),
        (
            &[
                "dlq",
                "replay",
                "--brokers",
                "localhost:1",
                "--topic",
                "t-dlt",
                "--error-class",
                "bogus",
            ],
            "--error-class",
        ),
        (
            &[
                "dlq",
                "replay",
                "--brokers",
                "localhost:1",
                "--topic",
                "t-dlt",
                "--since",
                "yesterday-ish",
            ],
            "--since",
        ),
        (&["dlq", "inspect", "--topic", "t-dlt"], "--brokers"),
        (
            &[
                "worker",
                "booking",
                "--brokers",
                "localhost:1",
                "--processing-guarantee",
                "exactly-once",
            ],
            "--instance-id",
        ),
        (
            &[
                "worker",
                "passthrough",
                "--brokers",
                "localhost:1",
                "--input-topic",
                "a",
            ],
            "--output-topic",
        ),
        (
            &[
                "worker",
                "booking",
                "--brokers",
                "localhost:1",
                "--fault-abort-probability",
                "0.5",
            ],
            "--fault-abort-probability",
        ),
        (
            &[
                "worker",
                "booking",
                "--brokers",
                "localhost:1",
                "--transactional-producers",
                "0",
            ],
            "--transactional-producers",
        ),
        // The mock counts round-trip time in whole milliseconds.
        (
            &["dev-cluster", "--embedded-rtt", "500us"],
            "--embedded-rtt",
        ),
        // Offered only where records are encoded: elsewhere it would do nothing.
        (
            &["lag", "--group", "g", "--schema-registry-url", "http://r"],
            "--schema-registry-url",
        ),
        (
            &[
                "dlq",
                "replay",
                "--topic",
                "t-dlt",
                "--schema-registry-url",
                "http://r",
            ],
            "--schema-registry-url",
        ),
    ];
    for (args, field) in cases {
        let out = Command::new(BIN)
            .args(*args)
            .env_remove("STREAMFLEET_BROKERS")
            .env_remove("HOSTNAME")
            .output()
            .expect("runs");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(field),
            "{args:?}: the error must name {field}: {err}"
        );
    }
}

#[test]
fn an_invalid_topics_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topics.yaml");
    std::fs::write(
        &path,
        "topics:\n  - name: orders\n    partitions: -3\n    owner: booking\n",
    )
    .unwrap();
    let out = streamfleet(&[
        "worker",
        "booking",
        "--brokers",
        "localhost:1",
        "--topics",
        path.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("topics.yaml:3:") && err.contains("topics[0].partitions"),
        "{err}"
    );
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let status = body.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body))
}

fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Running {
    child: Child,
    http: SocketAddr,
}

impl Running {
    fn sigterm_and_wait(self) -> (Option<i32>, String, Duration) {
        let started = Instant::now();
        streamfleet_tests::signal(&self.child, "-TERM");
        let out = self.child.wait_with_output().expect("exits");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            started.elapsed(),
        )
    }
}

fn start_inventory_worker(
    cluster: &EmbeddedCluster,
    group: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Running {
    let http = free_port();
    let http_arg = http.to_string();
    let mut args = vec![
        "worker",
        "inventory",
        "--brokers",
        cluster.bootstrap_servers(),
        "--group-id",
        group,
        "--http-addr",
        &http_arg,
        "-X",
        "consumer.session.timeout.ms=6000",
    ];
    args.extend_from_slice(extra);
    let child = Command::new(BIN)
        .args(&args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    let running = Running { child, http };
    wait_for(Duration::from_secs(30), "/health/ready = 200", || {
        matches!(http_get(running.http, "/health/ready"), Some((200, _)))
    });
    running
}

fn cluster_with_inventory_topics() -> EmbeddedCluster {
    let cluster = EmbeddedCluster::start(1).unwrap();
    for t in [
        "inventory-events",
        "inventory-events-retry-1000",
        "inventory-events-changelog",
        "inventory-events-retry-2000",
        "inventory-events-dlt",
        "inventory-outcomes",
    ] {
        cluster.create_topic(t, 4, 1).unwrap();
    }
    cluster
}

fn produce_restocks(cluster: &EmbeddedCluster, n: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    let codec = Encoding::default()
        .codec::<InventoryEvent>("inventory-events")
        .unwrap();
    for i in 0..n {
        let e = InventoryEvent {
            event_id: format!("restock-{i}"),
            hotel_id: format!("hotel-{}", i % 7),
            kind: InventoryEventType::Restock,
            quantity: 3,
            booking_id: None,
            occurred_at: 0,
        };
        let value = codec.encode(&e).unwrap();
        producer
            .send(
                BaseRecord::to("inventory-events")
                    .key(&e.hotel_id)
                    .payload(&value),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn sigterm_finishes_commits_and_exits_0() {
    let cluster = cluster_with_inventory_topics();
    produce_restocks(&cluster, 200);
    let w = start_inventory_worker(&cluster, "sigterm-test", &[], &[]);
    wait_for(Duration::from_secs(30), "200 records processed", || {
        http_get(w.http, "/metrics")
            .is_some_and(|(_, body)| metric(&body, "streamfleet_records_processed_total{") >= 200.0)
    });
    let (_, body) = http_get(w.http, "/metrics").unwrap();
    assert!(body.contains("streamfleet_records_consumed_total{topic=\"inventory-events\",worker=\"inventory\"} 200"), "{body}");
    assert!(
        body.contains("kafka_producer_record_error_total")
            || body.contains("streamfleet_records_produced_total")
    );
    let (code, err, took) = w.sigterm_and_wait();
    assert_eq!(code, Some(0), "{err}");
    assert!(took < Duration::from_secs(30), "shutdown took {took:?}");
    assert!(
        err.contains("SIGTERM") && err.contains("consumer closed"),
        "{err}"
    );

    // Everything processed was committed: a new member of the group has nothing to do.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "sigterm-test")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition("inventory-events", p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let mut total = 0;
    for e in committed.elements() {
        let (_, high) = consumer
            .fetch_watermarks("inventory-events", e.partition(), Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            e.offset().to_raw(),
            Some(high),
            "partition {} committed to its end",
            e.partition()
        );
        total += high;
    }
    assert_eq!(total, 200);
}

#[test]
fn secrets_never_reach_the_logs() {
    let cluster = cluster_with_inventory_topics();
    let w = start_inventory_worker(
        &cluster,
        "secrets-test",
        &["-X", "sasl.password=hunter2-cli"],
        &[
            ("RUST_LOG", "debug"),
            ("STREAMFLEET_KAFKA_SSL_KEY_PASSWORD", "hunter2-env"),
        ],
    );
    let (code, err, _) = w.sigterm_and_wait();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("sasl.password") && err.contains("[redacted]"),
        "the config is logged, redacted: {err}"
    );
    assert!(!err.contains("hunter2"), "a secret leaked into the logs");
}

#[test]
fn readiness_is_503_until_the_group_is_joined() {
    // No broker at all: the worker runs, is live, and never ready.
    let http = free_port();
    let mut child = Command::new(BIN)
        .args([
            "worker",
            "booking",
            "--brokers",
            "127.0.0.1:9",
            "--http-addr",
            &http.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "the HTTP endpoint", || {
        http_get(http, "/health/live").is_some()
    });
    assert_eq!(http_get(http, "/health/live").unwrap().0, 200);
    let (status, body) = http_get(http, "/health/ready").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("starting"), "{body}");

    // `streamfleet probe`, the container health check, agrees with the endpoints.
    let probe = |path: &str| streamfleet(&["probe", &format!("http://{http}{path}")]);
    let live = probe("/health/live");
    assert_eq!(live.status.code(), Some(0), "{}", stderr(&live));
    let ready = probe("/health/ready");
    assert_eq!(ready.status.code(), Some(1), "{}", stderr(&ready));
    assert!(
        String::from_utf8_lossy(&ready.stdout).starts_with("503 "),
        "the probe prints the status and the report"
    );
    child.kill().unwrap();
    let _ = child.wait();
    let nobody = probe("/health/live");
    assert_eq!(nobody.status.code(), Some(1), "nothing listens any more");
    assert!(
        stderr(&nobody).contains("probe http://"),
        "{}",
        stderr(&nobody)
    );
}

#[test]
fn schemas_check_passes_on_the_repository_and_fails_on_an_incompatible_pair() {
    let out = streamfleet(&["schemas", "check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("com.streamfleet.booking.BookingEvent v1 written, v2 reads"),
        "{text}"
    );

    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    assert_eq!(
        streamfleet(&["schemas", "check", "--dir", repo])
            .status
            .code(),
        Some(0)
    );

    let dir = tempfile::tempdir().unwrap();
    let v1 =
        r#"{"type":"record","name":"R","namespace":"x","fields":[{"name":"a","type":"string"}]}"#;
    let v2 = r#"{"type":"record","name":"R","namespace":"x","fields":[{"name":"a","type":"string"},{"name":"b","type":"int"}]}"#;
    std::fs::write(dir.path().join("R.v1.avsc"), v1).unwrap();
    std::fs::write(dir.path().join("R.v2.avsc"), v2).unwrap();
    let out = streamfleet(&["schemas", "check", "--dir", dir.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  x.R v1 written, v2 reads"), "{text}");
}

#[test]
fn the_demo_runs_every_worker_and_accounts_for_every_record() {
    let out = streamfleet(&[
        "demo",
        "--duration",
        "4s",
        "--rate",
        "400",
        "--http-addr",
        "127.0.0.1:0",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {text}\nstderr: {}",
        stderr(&out)
    );
    let json_start = text.find("\n{").expect("a JSON report");
    let report: serde_json::Value =
        serde_json::from_str(&text[json_start..]).expect("valid JSON report");
    assert_eq!(report["all_accounted"], true);
    for worker in ["booking", "inventory", "payment"] {
        let consumed = report["workers"][worker]["consumed"].as_u64().unwrap();
        assert!(consumed > 0, "{worker} processed records");
    }
    assert!(
        report["workers"]["booking"]["dead_lettered"]
            .as_u64()
            .unwrap()
            > 0,
        "malformed records were dead-lettered"
    );
    assert_eq!(report["passed"], true, "{text}");
    assert!(
        text.contains("t=  1s") && text.contains("in per s"),
        "a live table was printed: {text}"
    );
    let log = stderr(&out);
    assert!(
        !log.contains("dead-lettered") && !log.contains("Client stats"),
        "no line per record and no librdkafka statistics by default: {log}"
    );
}

#[test]
fn topics_list_shows_declared_and_derived_topics() {
    let out = streamfleet(&["topics", "list"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        "booking-events:12",
        "booking-events-retry-1000:12",
        "booking-events-retry-2000:12",
        "booking-events-dlt:12",
        "inventory-events:24",
        "payment-events:6",
        "payment-events-dlt:6",
        "inventory-outcomes:24",
        "payment-completed:6",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected} missing from {lines:?}"
        );
    }
}

#[test]
fn with_detailed_exitcode_every_error_exits_1_never_2() {
    let out = Command::new(BIN)
        .args(["topics", "plan", "--detailed-exitcode"])
        .env_remove("STREAMFLEET_BROKERS")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "2 would mean 'changes pending': {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--brokers"));
    let out = Command::new(BIN)
        .args(["topics", "plan"])
        .env_remove("STREAMFLEET_BROKERS")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "without --detailed-exitcode a configuration error is 2"
    );
}

#[test]
fn a_command_gives_up_quickly_when_no_broker_answers_and_says_why() {
    for args in [
        &["topics", "plan", "--brokers", "127.0.0.1:1"][..],
        &["produce", "--brokers", "127.0.0.1:1", "--count", "10"],
        &["lag", "--brokers", "127.0.0.1:1", "--group", "g", "--once"],
    ] {
        let started = std::time::Instant::now();
        let out = streamfleet(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert!(
            err.contains("no Kafka broker answered")
                && err.contains("127.0.0.1:1: resolves, but 127.0.0.1:1: connection refused"),
            "{args:?}: {err}"
        );
    }
}
