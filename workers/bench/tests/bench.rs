//! `streamfleet-bench` as users run it (debug build, small inputs): the benchmark reports
//! every mode, loses nothing, and fails when a participant loses records or when the embedded
//! cluster cannot hold the input; `scripts/bench-peers` runs the independent peers beside
//! ours. Speed is never asserted here: the figures are the benchmark's output, not a test's.

use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_streamfleet-bench");

fn bench(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("streamfleet-bench runs")
}

/// Runs `streamfleet-bench <args> --json`, which must succeed, and returns its report.
fn bench_report(args: &[&str]) -> Value {
    let out = bench(&[args, &["--json"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The first run of `participant` in a report: a backlog run, or a live one (`--rate`, the
/// latency run).
fn run_of<'r>(report: &'r Value, participant: &str, live: bool) -> &'r Value {
    report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["participant"] == participant && r["rate"].is_null() != live)
        .unwrap_or_else(|| panic!("a {participant} run (live: {live}) in {report:#}"))
}

/// The goals of a report's targets.
fn goals(report: &Value) -> Vec<&str> {
    report["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["goal"].as_str().unwrap())
        .collect()
}

#[test]
fn bench_reports_every_mode_and_loses_nothing() {
    let report = bench_report(&["--records", "2000", "--partitions", "3", "--runs", "1"]);
    assert_eq!(report["records"], 2000);
    let run = |mode: &str, live: bool| run_of(&report, mode, live);
    for mode in ["passthrough", "at-least-once", "exactly-once"] {
        let r = run(mode, false);
        assert_eq!(r["records"], 2000, "{mode}");
        assert!(r["records_per_sec"].as_f64().unwrap() > 0.0, "{mode}");
        assert!(r["cpu_seconds"].as_f64().unwrap() > 0.0, "{mode}");
        assert!(r["peak_rss_bytes"].as_u64().unwrap() > 1 << 20, "{mode}");
        // Every record's latency is observed at its commit.
        assert_eq!(r["latency_ms"]["samples"], 2000, "{mode}");
        let l = &r["latency_ms"];
        assert!(l["p50"].as_f64() <= l["p99"].as_f64() && l["p99"].as_f64() <= l["max"].as_f64());
        // The input was seeded before the run: no load generator ran beside it.
        assert!(r["load_cpu_seconds"].is_null(), "{mode}: {r}");
        // Only exactly-once has transactional producers: the worker's default number.
        let producers = (mode == "exactly-once")
            .then_some(streamfleet_runtime::config::WorkerConfig::DEFAULT_TRANSACTIONAL_PRODUCERS);
        assert_eq!(
            r["transactional_producers"].as_u64(),
            producers.map(|n| n as u64),
            "{mode}: {r}"
        );
        // ... and a transaction cap and a count of committed transactions.
        let cap = (mode == "exactly-once")
            .then_some(streamfleet_runtime::config::WorkerConfig::DEFAULT_COMMIT_RECORDS);
        assert_eq!(r["commit_records"].as_u64(), cap, "{mode}: {r}");
        match r["transactions"].as_u64() {
            Some(n) => assert!(mode == "exactly-once" && n >= 1, "{mode}: {r}"),
            None => assert_ne!(mode, "exactly-once", "{r}"),
        }
    }
    // Passthrough copies every record; the booking processor emits one inventory event per
    // new or cancelled booking (not per confirmation), the same in both guarantees.
    assert_eq!(run("passthrough", false)["output_records"], 2000);
    let alo = run("at-least-once", false)["output_records"]
        .as_u64()
        .unwrap();
    assert!(alo > 0 && alo < 2000, "{alo}");
    assert_eq!(run("exactly-once", false)["output_records"], alo);
    // The latency run: at-least-once at a fixed rate, half of the measured maximum.
    let latency = run("at-least-once", true);
    assert!(latency["rate"].as_u64().unwrap() > 0);
    // What the load generator took of the machine while it produced the input.
    assert!(
        latency["load_cpu_seconds"].as_f64().unwrap() >= 0.0,
        "{latency}"
    );
    assert_eq!(latency["output_records"], alo);
    let goals = goals(&report);
    assert!(goals.iter().any(|g| g.contains("passthrough")), "{goals:?}");
    assert!(
        goals
            .iter()
            .any(|g| g.contains("exactly-once / at-least-once")),
        "{goals:?}"
    );
    assert!(goals.iter().any(|g| g.contains("peak RSS")), "{goals:?}");
}

#[test]
fn embedded_rtt_slows_the_benchmark_cluster() {
    // At 500 records/s a record waits for no backlog; with every response 300 ms late it
    // waits for at least its produce, the worker's fetch, the worker's produce and the
    // offset commit, so no record can be committed in under one round trip.
    let report = bench_report(&[
        "--mode",
        "passthrough",
        "--records",
        "1000",
        "--partitions",
        "2",
        "--runs",
        "1",
        "--rate",
        "500",
        "--embedded-rtt",
        "300ms",
    ]);
    let cluster = report["cluster"].as_str().expect("cluster");
    assert!(cluster.contains("responses delayed 300 ms"), "{cluster}");
    let latency = &run_of(&report, "passthrough", true)["latency_ms"];
    // Records of the live run's first second (its warm-up) are not sampled.
    assert!(latency["samples"].as_u64().unwrap() > 0, "{latency}");
    assert!(latency["p50"].as_f64().unwrap() >= 300.0, "{latency}");
}

#[test]
fn runs_go_in_rounds_so_the_modes_are_measured_side_by_side() {
    let report = bench_report(&[
        "--records",
        "500",
        "--partitions",
        "1",
        "--runs",
        "2",
        "--mode",
        "passthrough",
        "--mode",
        "at-least-once",
        "--no-latency-run",
    ]);
    let order: Vec<&str> = report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["participant"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "passthrough",
            "at-least-once",
            "passthrough",
            "at-least-once"
        ]
    );
    // Each summary says how far its runs disagree on CPU per record (slowest over fastest)
    // and how many cores its runs kept busy (CPU seconds per second, the median of the two).
    for summary in report["summaries"].as_array().expect("summaries") {
        // The summary's runs' CPU seconds over their `per` field.
        let cpu_over = |per: &str| -> Vec<f64> {
            report["runs"]
                .as_array()
                .expect("runs")
                .iter()
                .filter(|r| r["participant"] == summary["participant"])
                .map(|r| r["cpu_seconds"].as_f64().unwrap() / r[per].as_f64().unwrap())
                .collect()
        };
        let per_record = cpu_over("records");
        assert_eq!(per_record.len(), 2, "{summary}");
        let expected = per_record[0].max(per_record[1]) / per_record[0].min(per_record[1]);
        let spread = summary["cpu_spread"].as_f64().expect("cpu_spread");
        assert!((spread - expected).abs() < 1e-9, "{spread} != {expected}");
        let cores = cpu_over("seconds");
        let expected = (cores[0] + cores[1]) / 2.0;
        let median = summary["cores"].as_f64().expect("cores");
        assert!(median > 0.0, "{summary}");
        assert!((median - expected).abs() < 1e-9, "{median} != {expected}");
    }
}

#[test]
fn the_transaction_cap_decides_how_often_exactly_once_commits() {
    let transactions = |extra: &[&str]| {
        let args = [
            &[
                "--mode",
                "exactly-once",
                "--records",
                "30000",
                "--partitions",
                "3",
                "--runs",
                "1",
                "--no-latency-run",
                // Only the cap commits before the end of the input (a debug build is slow
                // enough for a 100 ms interval to commit too).
                "--commit-interval",
                "10s",
            ],
            extra,
        ]
        .concat();
        let report = bench_report(&args);
        let run = run_of(&report, "exactly-once", false);
        (run["commit_records"].as_u64(), run["transactions"].as_u64())
    };
    let (cap, capped) = transactions(&["--commit-records", "1000"]);
    assert_eq!(cap, Some(1000));
    // With no cap to speak of, only the end of the input commits.
    let (cap, uncapped) = transactions(&["--commit-records", "1000000"]);
    assert_eq!(cap, Some(1_000_000));
    let (capped, uncapped) = (capped.unwrap(), uncapped.unwrap());
    assert!(capped > uncapped, "capped {capped}, uncapped {uncapped}");
    // The fetcher looks at the cap once per loop, so a transaction may hold more than the
    // cap, but not four times as much on average: 30,000 records need at least 8.
    assert!(capped >= 8, "capped {capped}");
}

/// Passthrough over 1,000 records beside the peer `command`, `runs` rounds, no latency run.
fn passthrough_beside_peer(command: &str, runs: u32) -> Output {
    bench(&[
        "--records",
        "1000",
        "--partitions",
        "2",
        "--runs",
        &runs.to_string(),
        "--mode",
        "passthrough",
        "--no-latency-run",
        "--peer",
        &format!("passthrough={command}"),
    ])
}

#[test]
fn a_peer_that_loses_records_fails_the_benchmark() {
    // Speaks the protocol (ready, result) but copies nothing.
    let fake = r#"echo ready; echo 'result {"records":1000,"seconds":0.5,"records_per_sec":2000.0,"cpu_seconds":0.1,"peak_rss_bytes":1048576}'"#;
    let out = passthrough_beside_peer(fake, 1);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("peer passthrough: 0 output records for 1000 input records"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn runs_that_disagree_on_cpu_per_record_are_noted() {
    // A fake peer whose second run reports twice the CPU of its first, as a run in one of a
    // shared machine's slow spells does. It copies nothing, so the benchmark also fails.
    let dir = tempfile::tempdir().expect("temp dir");
    let counter = dir.path().join("runs");
    let fake = format!(
        r#"n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo ready; echo "result {{\"records\":1000,\"seconds\":0.5,\"records_per_sec\":2000.0,\"cpu_seconds\":0.$n,\"peak_rss_bytes\":1048576}}""#,
        c = counter.display()
    );
    let out = passthrough_beside_peer(&fake, 2);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("note: the machine's speed moved during this invocation"),
        "{stdout}"
    );
    assert!(stdout.contains("  peer passthrough: ×2.00"), "{stdout}");
}

#[test]
fn an_input_the_embedded_cluster_cannot_hold_is_refused() {
    // librdkafka's mock broker keeps 5 MiB of batches per partition (about 120,000 booking
    // events): 300,000 do not fit in one, and the benchmark says so instead of measuring a
    // truncated input.
    let out = bench(&[
        "--records",
        "300000",
        "--partitions",
        "1",
        "--runs",
        "1",
        "--mode",
        "passthrough",
        "--no-latency-run",
    ]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("of the 300000 records seeded"), "{err}");
    assert!(err.contains("more --partitions"), "{err}");
}

#[test]
fn bench_peers_runs_the_peers_beside_ours() {
    // scripts/bench-peers with Debian's python3-confluent-kafka (tests/run installs it), on
    // Apache Kafka with the Java peer when the Kafka distribution is there (tests/run installs
    // a JDK then), else on the embedded cluster with the Python peer only.
    let python = std::path::Path::new("/usr/bin/python3");
    let importable = Command::new(python)
        .args(["-c", "import confluent_kafka"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        importable,
        "/usr/bin/python3 cannot import confluent_kafka: install Debian's \
         python3-confluent-kafka package (tests/run does)"
    );
    let dist = std::env::var_os("STREAMFLEET_KAFKA_DIST")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| streamfleet_tests::repo().join("../shared/kafka"));
    let on_kafka = dist.join("kafka-cluster").exists();
    let out = Command::new(streamfleet_tests::repo().join("scripts/bench-peers"))
        .args(["--records", "2000", "--partitions", "3", "--runs", "1"])
        .args(["--no-latency-run", "--json"])
        .env("STREAMFLEET_BENCH_BIN", BIN)
        .env_remove("STREAMFLEET_BROKERS")
        .output()
        .expect("scripts/bench-peers runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let run = |participant: &str| run_of(&report, participant, false);
    let peers: &[&str] = if on_kafka {
        &["python", "java"]
    } else {
        eprintln!(
            "no Kafka distribution at {}: the Java peer is not run",
            dist.display()
        );
        &["python"]
    };
    // The copiers copy every record, in their own mode; ours process them.
    for name in peers {
        for mode in ["at-least-once", "exactly-once"] {
            let peer = run(&format!("{name} {mode}"));
            assert_eq!(peer["mode"], mode);
            assert_eq!(peer["records"], 2000, "{peer:#}");
            assert_eq!(peer["output_records"], 2000, "{peer:#}");
            assert!(peer["records_per_sec"].as_f64().unwrap() > 0.0);
            assert_eq!(run(mode)["records"], 2000);
            if on_kafka {
                assert!(
                    peer["cluster_cores"].as_f64().is_some_and(|c| c > 0.0),
                    "the broker's CPU is sampled beside {name} {mode}: {peer:#}"
                );
            }
        }
        let goals = goals(&report);
        assert!(
            goals.iter().any(|g| g.contains(&format!(
                "passthrough / {name} at-least-once CPU per record"
            ))),
            "a CPU ratio to the {name} copier in {goals:?}"
        );
    }
    if on_kafka {
        assert!(
            report["cluster"]
                .as_str()
                .unwrap()
                .contains("broker processes"),
            "{}",
            report["cluster"]
        );
    }
}

fn bench_topics(bootstrap: &str) -> std::collections::BTreeSet<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata")
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|t| t.starts_with("bench-"))
        .collect()
}

#[test]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
fn bench_against_a_real_cluster_cleans_up_its_topics_real_broker() {
    let bootstrap = streamfleet_tests::Broker::real().bootstrap();
    let before = bench_topics(&bootstrap);
    let report = bench_report(&[
        "--brokers",
        &bootstrap,
        "--records",
        "1000",
        "--partitions",
        "3",
        "--runs",
        "1",
        "--no-latency-run",
        // A transaction group per partition.
        "--transactional-producers",
        "3",
    ]);
    assert_eq!(report["cluster"], bootstrap.as_str());
    assert_eq!(
        run_of(&report, "exactly-once", false)["transactional_producers"],
        3
    );
    let outputs = |mode: &str| {
        run_of(&report, mode, false)["output_records"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(outputs("passthrough"), 1000);
    assert!(outputs("at-least-once") > 0);
    assert_eq!(outputs("exactly-once"), outputs("at-least-once"));
    let left: Vec<String> = bench_topics(&bootstrap)
        .difference(&before)
        .cloned()
        .collect();
    assert!(left.is_empty(), "topics left behind: {left:?}");
}

#[test]
fn bad_options_name_the_field_and_exit_2() {
    // The mock counts round-trip time in whole milliseconds; --embedded-rtt and --brokers
    // are two clusters.
    for (args, field) in [
        (&["--embedded-rtt", "500us"][..], "--embedded-rtt"),
        (
            &["--brokers", "localhost:1", "--embedded-rtt", "5ms"][..],
            "--embedded-rtt",
        ),
        (&["--peer", "nonsense"][..], "--peer"),
    ] {
        let out = bench(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(field),
            "{args:?}: the error must name {field}: {err}"
        );
    }
}
