//! `streamfleet demo`: the whole fleet on the embedded cluster.
//!
//! Starts librdkafka's mock cluster, creates every topic of the built-in `topics.yaml`,
//! starts the three workers as three consumer groups, serves `/metrics` and the health
//! probes, generates load for `--duration` while showing the workers' live table, waits until
//! every generated record (and every retry) has an outcome, stops the workers gracefully and
//! prints the final report with its checks (`demo_view`). Exits 0 when every check holds.
//!
//! Logs: warnings and errors only, and no line per record, unless `--verbose` or `RUST_LOG`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use streamfleet_runtime::clients;
use streamfleet_runtime::config::WorkerConfig;
use streamfleet_runtime::embedded::{self, EmbeddedCluster};
use streamfleet_runtime::health::Health;
use streamfleet_runtime::metrics::{Metrics, StatsSnapshot};
use streamfleet_runtime::properties::KafkaProperty;
use streamfleet_runtime::topology::Topology;
use streamfleet_runtime::{CancellationToken, http};
use streamfleet_schemas::Encoding;

use super::demo_view::{self, Check, LiveTable, Row};
use crate::accounting::{expected_consumed, outcomes_complete};
use crate::cli::DemoArgs;
use crate::fleet::{self, RunningWorker, WorkerKind};
use crate::loadgen::{self, Generator, Limit, Tally, Topics};
use crate::signals;

/// The final report.
#[derive(Debug, serde::Serialize)]
pub struct DemoReport {
    /// Seconds of generated load.
    pub load_seconds: f64,
    /// What was generated.
    pub generated: Tally,
    /// Each worker's totals.
    pub workers: BTreeMap<&'static str, StatsSnapshot>,
    /// Whether every generated record and retry reached an outcome.
    pub all_accounted: bool,
    /// What the run proves, each with whether it held.
    pub checks: Vec<Check>,
    /// Every check held, every record had an outcome, and no worker failed.
    pub passed: bool,
}

/// The demo's log filter when `RUST_LOG` is not set: warnings and errors, without the line
/// per dead-lettered record (the live table counts them), or with `--verbose` everything a
/// worker logs.
pub fn log_filter(args: &DemoArgs) -> &'static str {
    if args.verbose {
        streamfleet_runtime::telemetry::DEFAULT_FILTER
    } else {
        const QUIET: &str = "warn,streamfleet::record=off";
        QUIET
    }
}

fn drained(workers: &[RunningWorker], tally: &Tally) -> bool {
    workers.iter().all(|w| {
        let s = w.stats.snapshot();
        outcomes_complete(&s) && s.consumed >= expected_consumed(w.kind, tally, &s)
    })
}

/// A demo worker's settings: the defaults, on the embedded cluster.
fn worker_config(
    kind: WorkerKind,
    bootstrap: &str,
    topology: &Topology,
) -> anyhow::Result<WorkerConfig> {
    let mut config = WorkerConfig::new(kind.name(), bootstrap, topology.sources_of(kind.name()));
    config.apply_topology(topology);
    // Lag in the live summary comes from librdkafka statistics: refresh them every second.
    config.kafka.push(KafkaProperty::parse(
        "consumer.statistics.interval.ms=1000",
    )?);
    // The mock holds a fetch that finds nothing for the whole wait (see the constant).
    config.kafka.push(KafkaProperty::parse(&format!(
        "consumer.fetch.wait.max.ms={}",
        embedded::CONSUMER_FETCH_WAIT_MAX_MS
    ))?);
    Ok(config)
}

/// Runs the demo; returns the exit code.
pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let gateway = args.gateway.config()?;
    let topology = fleet::builtin_topology();
    let cluster = EmbeddedCluster::start(args.embedded_brokers)?;
    cluster.create_topology(&topology)?;
    let bootstrap = cluster.bootstrap_servers().to_owned();
    println!(
        "embedded cluster: {} brokers at {bootstrap}; {} topics from topics.yaml",
        cluster.brokers(),
        topology.topics.len()
    );

    let metrics = Metrics::default();
    let health = Health::default();
    let http_stop = CancellationToken::new();
    let (addr, server) = http::serve(
        args.http_addr,
        metrics.registry().clone(),
        health.clone(),
        http_stop.clone(),
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on --http-addr {}: {e} (try --http-addr 127.0.0.1:0)",
            args.http_addr
        )
    })?;
    println!("metrics: http://{addr}/metrics   health: http://{addr}/health/ready");

    let encoding = Encoding::default();
    let shutdown = CancellationToken::new();
    let fleet = fleet::Fleet {
        encoding: &encoding,
        metrics: &metrics,
        health: &health,
        gateway,
        fault_process_delay: std::time::Duration::ZERO,
    };
    let mut workers = Vec::new();
    for kind in WorkerKind::ALL {
        let config = worker_config(kind, &bootstrap, &topology)?;
        let output = kind
            .default_output()
            .expect("domain workers have an output");
        workers.push(fleet.start(kind, config, output, shutdown.clone())?);
    }
    let ready_by = Instant::now() + Duration::from_secs(60);
    while !health.is_ready() {
        anyhow::ensure!(
            Instant::now() < ready_by,
            "workers not ready after 60 s: {:?}",
            health.report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "three consumer groups joined; generating {} records/s for {:?}",
        args.rate, args.duration
    );

    let producer: FutureProducer =
        clients::tool_producer(&bootstrap, &[], "streamfleet-demo-load").create()?;
    let topics = Topics::default();
    let mut generator = Generator::new(args.load.config(), &topics, &encoding)?;
    let stop_load = signals::shutdown_on_signals()?;
    let (duration, rate) = (args.duration, args.rate);
    let load_started = Instant::now();
    let load_stop = stop_load.clone();
    let load = tokio::spawn(async move {
        let result = loadgen::produce(
            &producer,
            &mut generator,
            &topics,
            Limit::Duration(duration),
            Some(rate),
            &load_stop,
            |_| {},
        )
        .await;
        result.map(|_| generator.tally().clone())
    });

    let mut table = LiveTable::new();
    let mut before: Vec<StatsSnapshot> = workers.iter().map(|w| w.stats.snapshot()).collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = Instant::now();
    loop {
        tick.tick().await;
        let done = load.is_finished();
        let secs = last.elapsed().as_secs_f64().max(0.001);
        last = Instant::now();
        let rows: Vec<Row> = workers
            .iter()
            .zip(before.iter_mut())
            .map(|(w, prev)| {
                let now = w.stats.snapshot();
                let consumed_per_s = now.consumed.saturating_sub(prev.consumed) as f64 / secs;
                *prev = now;
                Row {
                    kind: w.kind,
                    now,
                    consumed_per_s,
                }
            })
            .collect();
        table.show(load_started.elapsed(), duration, rate, &rows, done);
        if done {
            break;
        }
    }
    let load_seconds = load_started.elapsed().as_secs_f64();
    let tally = load.await??;
    println!(
        "load done: {} records generated; waiting until every record has an outcome",
        tally.total()
    );

    let drain_by = Instant::now() + args.drain_timeout;
    let mut all_accounted = drained(&workers, &tally);
    while !all_accounted && Instant::now() < drain_by {
        tokio::time::sleep(Duration::from_millis(200)).await;
        all_accounted = drained(&workers, &tally);
    }

    shutdown.cancel();
    let mut finals = BTreeMap::new();
    let mut failed_workers = Vec::new();
    for w in workers {
        match w.task.await? {
            Ok(report) => {
                finals.insert(w.kind.name(), report.stats);
            }
            Err(e) => {
                failed_workers.push(format!("the {} worker failed: {e}", w.kind.name()));
                finals.insert(w.kind.name(), w.stats.snapshot());
            }
        }
    }
    http_stop.cancel();
    let _ = server.await;
    drop(cluster);

    let checks = demo_view::checks(&tally, &finals);
    let passed = all_accounted && failed_workers.is_empty() && checks.iter().all(|c| c.passed);
    if args.json {
        let report = DemoReport {
            load_seconds,
            generated: tally,
            workers: finals,
            all_accounted,
            checks,
            passed,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        demo_view::print_report(&demo_view::Report {
            load_seconds,
            rate,
            generated: &tally,
            workers: &finals,
            checks: &checks,
            drained: all_accounted,
            failed_workers: &failed_workers,
        });
        println!(
            "{}",
            if passed {
                "PASS: every check held"
            } else {
                "FAIL: see the checks above"
            }
        );
    }
    Ok(if passed { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use streamfleet_runtime::properties::ClientScope;

    use super::*;

    #[test]
    fn demo_consumers_do_not_wait_out_the_mocks_empty_fetches() {
        let topology = fleet::builtin_topology();
        for kind in WorkerKind::ALL {
            let config = worker_config(kind, "127.0.0.1:9092", &topology).unwrap();
            let fetch_wait: Vec<_> = config
                .kafka
                .iter()
                .filter(|p| p.key == "fetch.wait.max.ms")
                .collect();
            assert_eq!(fetch_wait.len(), 1, "{}: {fetch_wait:?}", kind.name());
            assert_eq!(fetch_wait[0].scope, ClientScope::Consumer);
            assert_eq!(
                fetch_wait[0].value,
                embedded::CONSUMER_FETCH_WAIT_MAX_MS.to_string()
            );
        }
    }
}
