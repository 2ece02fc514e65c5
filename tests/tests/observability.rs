//! Metrics, alert rules and dashboards, checked with the real tools: promtool, and a real
//! Prometheus server (Debian's `prometheus` package, installed by tests/run) scraping an
//! embedded run.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::Encoder;
use rdkafka::producer::FutureRecord;
use serde::Deserialize;
use streamfleet::lag::LagReader;
use streamfleet_runtime::metrics::Metrics;
use streamfleet_runtime::properties::KafkaProperty;
use streamfleet_runtime::retry::RetryPolicy;
use streamfleet_runtime::{CancellationToken, http, now_ms};
use streamfleet_tests::echo::Echo;
use streamfleet_tests::*;

fn tool(name: &str) -> PathBuf {
    streamfleet_tests::tool(name, "prometheus")
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = tool("promtool");
    let check = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(repo().join("alerts/streamfleet.rules.yml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let test = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(repo().join("alerts/tests/streamfleet.test.yml"))
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}
#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}
#[derive(Deserialize)]
struct Rule {
    alert: Option<String>,
    expr: String,
}

/// Every PromQL expression of alerts/ and dashboards/, Grafana variables filled in.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let rules: RuleFile = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("alerts/streamfleet.rules.yml")).unwrap(),
    )
    .unwrap();
    for g in rules.groups {
        for r in g.rules {
            out.push((format!("alert {}", r.alert.unwrap_or_default()), r.expr));
        }
    }
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/streamfleet.json")).unwrap(),
    )
    .unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {}", p["title"]),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(<selector>, <label>) is Grafana's; the selector is PromQL.
            let inner = q
                .trim_start_matches("label_values(")
                .rsplit_once(',')
                .unwrap()
                .0;
            out.push((format!("variable {}", v["name"]), inner.to_owned()));
        }
    }
    assert!(out.len() > 30, "found the expressions");
    out.into_iter()
        .map(|(w, e)| {
            let e = e
                .replace("$__rate_interval", "1m")
                .replace("$group", ".*")
                .replace("$topic", ".*")
                .replace("$instance", ".*");
            (w, e)
        })
        .collect()
}

/// Metric names an expression reads (ours: `kafka_*`, `streamfleet_*`; `up` is Prometheus's own).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut current = String::new();
    let mut in_quotes = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        if !in_quotes && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            current.push(c);
            continue;
        }
        if !in_quotes && (current.starts_with("kafka_") || current.starts_with("streamfleet_")) {
            names.insert(std::mem::take(&mut current));
        }
        current.clear();
    }
    names
}

fn scrape(metrics: &Metrics) -> String {
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&metrics.registry().gather(), &mut buf)
        .unwrap();
    String::from_utf8(buf).unwrap()
}

fn fast_statistics(config: &mut streamfleet_runtime::config::WorkerConfig) {
    config
        .kafka
        .push(KafkaProperty::parse("statistics.interval.ms=1000").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_named_in_alerts_and_dashboards_is_exported_by_a_running_worker() {
    let broker = Broker::mock();
    let policy = RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let (input, output) = (unique("obs-in"), unique("obs-out"));
    for t in [
        input.clone(),
        output.clone(),
        format!("{input}-dlt"),
        format!("{input}-retry-200"),
        format!("{input}-changelog"),
    ] {
        broker.create_topic(&t, 2).await;
    }
    let batch: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            (
                format!("k{i}"),
                format!(
                    "k{i}:0{}",
                    if i % 10 == 0 {
                        ":transient-until:2"
                    } else {
                        ""
                    }
                )
                .into_bytes(),
            )
        })
        .collect();
    produce_all(&producer(&broker.bootstrap()), &input, &batch).await;
    let mut config = test_config(
        &broker.bootstrap(),
        &unique("group"),
        vec![(input.clone(), policy)],
    );
    config
        .changelogs
        .insert(input.clone(), format!("{input}-changelog"));
    fast_statistics(&mut config);
    let w = TestWorker::start(config, Echo::new(&output));
    wait_until(Duration::from_secs(60), "every record processed", || {
        w.snapshot().succeeded == 40
    })
    .await;
    let metrics = w.metrics.clone();
    wait_until(
        Duration::from_secs(20),
        "statistics and a lag publish",
        || scrape(&metrics).contains("kafka_producer_batch_size_avg"),
    )
    .await;
    let text = scrape(&metrics);
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut missing = Vec::new();
    for (place, expr) in expressions() {
        for name in metric_names(&expr) {
            if !exported.contains(name.as_str()) {
                missing.push(format!("{name} ({place})"));
            }
        }
    }
    w.stop().await.expect("clean");
    assert!(missing.is_empty(), "named but not exported: {missing:?}");
}

/// The sum of every sample of the metric family `name` in a scrape.
fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_least_once_commits_show_in_the_metrics_while_the_worker_runs() {
    // The committed-offset gauge and the end-to-end histogram are fed by the commits'
    // completion, asynchronous under at-least-once, and the processing-time histogram by the
    // lanes' batches: they must move during the run, not only at a shutdown.
    let broker = Broker::mock();
    let (input, output) = (unique("alo-in"), unique("alo-out"));
    for t in [&input, &output] {
        broker.create_topic(t, 2).await;
    }
    let batch: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (format!("k{i}"), format!("k{i}:0").into_bytes()))
        .collect();
    produce_all(&producer(&broker.bootstrap()), &input, &batch).await;
    let mut config = test_config(
        &broker.bootstrap(),
        &unique("group"),
        vec![(input.clone(), no_retries())],
    );
    config.commit_interval = Duration::from_millis(200);
    let w = TestWorker::start(config, Echo::new(&output));
    wait_until(Duration::from_secs(60), "every record processed", || {
        w.snapshot().succeeded == 100
    })
    .await;
    let metrics = w.metrics.clone();
    wait_until(
        Duration::from_secs(10),
        "the committed offsets, 100 end-to-end and 100 processing-time samples in the metrics",
        || {
            let text = scrape(&metrics);
            sum_of(&text, "streamfleet_partition_committed_offset") == 100.0
                && sum_of(&text, "streamfleet_end_to_end_latency_seconds_count") == 100.0
                && sum_of(&text, "streamfleet_processing_duration_seconds_count") == 100.0
        },
    )
    .await;
    w.stop().await.expect("clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_least_once_records_flow_while_a_slow_commit_is_in_flight() {
    // An at-least-once commit waits for the group coordinator on the committer thread, not on
    // the consumer thread, which goes on fetching and dispatching. The partitions are led by
    // broker 1 and the group is coordinated by broker 2, whose responses are then made 3 s
    // late: records produced while a commit is in flight are processed before it returns,
    // and the committed-offset gauge moves only when it does. (With the commit on the
    // consumer thread they waited for it, and the gauge had moved by the time they were
    // done.)
    let broker = Broker::mock();
    let cluster = broker.as_mock().expect("embedded cluster");
    let bootstrap = broker.bootstrap();
    let (input, output) = (unique("slow-commit-in"), unique("slow-commit-out"));
    for t in [&input, &output] {
        broker.create_topic(t, 1).await;
        cluster.set_partition_leader(t, 0, 1).expect("leader");
    }
    let group = unique("group");
    cluster
        .set_group_coordinator(&group, 2)
        .expect("coordinator");
    let mut config = test_config(&bootstrap, &group, vec![(input.clone(), no_retries())]);
    config.commit_interval = Duration::from_millis(50);
    // Heartbeats wait out the delay too; keep the session well above it.
    config
        .kafka
        .push(KafkaProperty::parse("consumer.session.timeout.ms=30000").expect("property"));
    let w = TestWorker::start(config, Echo::new(&output));
    let metrics = w.metrics.clone();
    let committed = || sum_of(&scrape(&metrics), "streamfleet_partition_committed_offset");
    let producer = producer(&bootstrap);
    let five = |from: usize| -> Vec<(String, Vec<u8>)> {
        (from..from + 5)
            .map(|i| (format!("k{i}"), format!("k{i}:0").into_bytes()))
            .collect()
    };

    produce_all(&producer, &input, &five(0)).await;
    wait_until(
        Duration::from_secs(60),
        "five records processed and committed",
        || w.snapshot().succeeded == 5 && committed() == 5.0,
    )
    .await;

    cluster
        .set_broker_round_trip_time(2, Duration::from_secs(3))
        .expect("delay");
    produce_all(&producer, &input, &five(5)).await;
    wait_until(Duration::from_secs(20), "ten records processed", || {
        w.snapshot().succeeded == 10
    })
    .await;
    // The commit of offset 10 goes out within one 50 ms interval and returns after 3 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    produce_all(&producer, &input, &five(10)).await;
    wait_until(Duration::from_secs(20), "fifteen records processed", || {
        w.snapshot().succeeded == 15
    })
    .await;
    assert_eq!(
        committed(),
        5.0,
        "the last five were processed while the commit of the five before them was in flight"
    );

    cluster
        .set_broker_round_trip_time(2, Duration::ZERO)
        .expect("no delay");
    wait_until(Duration::from_secs(30), "all fifteen committed", || {
        committed() == 15.0
    })
    .await;
    w.stop().await.expect("clean");
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn get(url: &str) -> Option<serde_json::Value> {
    ureq::get(url).call().ok()?.into_body().read_json().ok()
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - \
                 job_name: streamfleet\n    static_configs:\n      - targets: ['{target}']\n",
                repo().join("alerts/streamfleet.rules.yml").display()
            ),
        )
        .unwrap();
        let addr = free_addr();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    fn query(&self, expr: &str) -> serde_json::Value {
        let url = format!(
            "http://{}/api/v1/query?query={}",
            self.addr,
            urlencode(expr)
        );
        let response = ureq::get(&url).call();
        match response {
            Ok(r) => r.into_body().read_json().unwrap(),
            Err(ureq::Error::StatusCode(code)) => {
                serde_json::json!({"status": "error", "code": code})
            }
            Err(e) => panic!("querying prometheus: {e}"),
        }
    }

    /// The value of the single series an expression returns, if any.
    fn value(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        let series = r["data"]["result"].as_array()?;
        series.first()?["value"][1].as_str()?.parse().ok()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_prometheus_sees_lag_seconds_grow_while_a_consumer_is_held_back() {
    let broker = Broker::mock();
    let bootstrap = broker.bootstrap();
    let (input, output) = (unique("held-in"), unique("held-out"));
    for t in [input.clone(), output.clone(), format!("{input}-dlt")] {
        broker.create_topic(&t, 3).await;
    }
    let echo = Echo::new(&output);
    echo.hold_partition.store(0, Ordering::SeqCst);
    let mut config = test_config(
        &bootstrap,
        &unique("group"),
        vec![(input.clone(), no_retries())],
    );
    fast_statistics(&mut config);
    let w = TestWorker::start(config, echo.clone());
    let http_stop = CancellationToken::new();
    let (addr, _server) = http::serve(
        "127.0.0.1:0".parse().unwrap(),
        w.metrics.registry().clone(),
        w.health.clone(),
        http_stop.clone(),
    )
    .await
    .unwrap();

    // Keep every partition fed: partition 0 piles up behind the held record.
    let stop_load = CancellationToken::new();
    let load = {
        let (stop, topic, bootstrap) = (stop_load.clone(), input.clone(), bootstrap.clone());
        tokio::spawn(async move {
            let p = producer(&bootstrap);
            let mut seq = 0u64;
            while !stop.is_cancelled() {
                for partition in 0..3 {
                    let value = format!("k{partition}:{seq}");
                    let record = FutureRecord::to(&topic)
                        .key("k")
                        .payload(&value)
                        .partition(partition);
                    p.send(record, Duration::from_secs(5))
                        .await
                        .expect("produced");
                }
                seq += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let prom = Prometheus::start(addr);
    wait_until(Duration::from_secs(30), "prometheus ready", || {
        ureq::get(&format!("http://{}/-/ready", prom.addr))
            .call()
            .is_ok()
    })
    .await;
    let held = format!("streamfleet_partition_lag_seconds{{topic=\"{input}\",partition=\"0\"}}");
    wait_until(
        Duration::from_secs(60),
        "the held partition's lag in seconds is scraped",
        || prom.value(&held).is_some_and(|v| v > 1.0),
    )
    .await;
    let first = prom.value(&held).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let second = prom.value(&held).unwrap();
    assert!(
        second > first + 2.0,
        "lag seconds grows while held: {first} then {second}"
    );
    let flowing =
        format!("max(streamfleet_partition_lag_seconds{{topic=\"{input}\",partition!=\"0\"}})");
    let flowing = prom
        .value(&flowing)
        .expect("the other partitions are scraped");
    assert!(flowing < 2.0, "the other partitions keep up: {flowing}");
    let lag_max = prom
        .value(&format!("kafka_consumer_lag_max{{topic=\"{input}\"}}"))
        .expect("lag max series");
    assert!(lag_max > 0.0);
    let offsets = prom.value(&format!(
        "streamfleet_partition_lag_offsets{{topic=\"{input}\",partition=\"0\"}}"
    ));
    assert!(offsets.is_some_and(|o| o > 0.0), "{offsets:?}");

    // Every expression of the rules and the dashboard is valid PromQL for this Prometheus.
    for (place, expr) in expressions() {
        let r = prom.query(&expr);
        assert_eq!(r["status"], "success", "{place}: {expr}: {r}");
    }
    assert!(
        get(&format!("http://{}/api/v1/rules", prom.addr))
            .is_some_and(|r| r["status"] == "success")
    );

    stop_load.cancel();
    load.await.unwrap();
    echo.hold_partition.store(-1, Ordering::SeqCst);
    w.stop().await.expect("clean");
    http_stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lag_exporter_reports_any_groups_lag_in_offsets_and_seconds() {
    let broker = Broker::mock();
    let bootstrap = broker.bootstrap();
    let topic = unique("lagged");
    broker.create_topic(&topic, 2).await;
    let p = producer(&bootstrap);
    let t0 = now_ms() - 60_000;
    for i in 0..10i64 {
        let record = FutureRecord::to(&topic)
            .key("k")
            .payload("v")
            .partition(0)
            .timestamp(t0 + i * 1000);
        p.send(record, Duration::from_secs(5)).await.unwrap();
    }
    for _ in 0..3 {
        p.send(
            FutureRecord::to(&topic).key("k").payload("v").partition(1),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    let group = unique("lagging-group");
    {
        use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(4))
            .unwrap();
        tpl.add_partition_offset(&topic, 1, rdkafka::Offset::Offset(3))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    }
    let (b, g, t) = (bootstrap.clone(), group.clone(), topic.clone());
    let (lag, at) = tokio::task::spawn_blocking(move || {
        let reader = LagReader::new(&b, &[], &g).unwrap();
        let lag = reader.read(&[t]).unwrap();
        let metrics = Metrics::default();
        reader.publish(&metrics, &lag, &Default::default());
        (lag, now_ms())
    })
    .await
    .unwrap();
    let p0 = &lag[&topic][&0];
    assert_eq!((p0.committed, p0.high, p0.lag), (4, 10, 6));
    let expected = (at - (t0 + 4000)) as f64 / 1000.0;
    assert!(
        p0.lag_seconds <= expected && p0.lag_seconds > expected - 10.0,
        "{} vs {expected}",
        p0.lag_seconds
    );
    let p1 = &lag[&topic][&1];
    assert_eq!((p1.lag, p1.lag_seconds), (0, 0.0), "caught up");
}
