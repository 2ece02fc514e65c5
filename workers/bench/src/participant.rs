//! `streamfleet-bench participant` (hidden): one measured participant of `streamfleet-bench`.
//!
//! It runs one worker in this process — passthrough, or the booking processor at-least-once
//! or exactly-once — on the `BENCH_*` settings, and measures it as [`crate::measure`] describes:
//! the end-to-end latency of every committed record comes from the runtime's end-to-end tap,
//! progress from the worker's live totals (atomics, read every [`TICK`] by a thread that does
//! nothing else: the clock's resolution, a few thousandths of a benchmark window, for a
//! fraction of a percent of one core). It prints `ready`, `progress <n>` and `result <json>`
//! on stdout.

use std::io::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use streamfleet_payment::GatewayConfig;
use streamfleet_runtime::config::{ProcessingGuarantee, WorkerConfig};
use streamfleet_runtime::health::Health;
use streamfleet_runtime::metrics::{Metrics, WorkerStats};
use streamfleet_runtime::properties::{KafkaProperty, kafka_properties_from_env};
use streamfleet_runtime::retry::RetryPolicy;
use streamfleet_runtime::{CancellationToken, now_ms};
use streamfleet_schemas::Encoding;

use crate::cli::BenchMode;
use crate::measure::{self, Env, Latency, RunResult};
use streamfleet::fleet::{Fleet, WorkerKind};

/// How often the clock thread looks at the totals.
const TICK: Duration = Duration::from_millis(5);

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Records whose processing finished, whatever the outcome.
fn finished(stats: &WorkerStats) -> u64 {
    stats.succeeded.load(Ordering::Relaxed)
        + stats.retried.load(Ordering::Relaxed)
        + stats.dead_lettered.load(Ordering::Relaxed)
        + stats.replay_dropped.load(Ordering::Relaxed)
}

/// Runs the participant; exit 0 once the result is printed.
pub async fn run() -> anyhow::Result<i32> {
    let env = Env::from_process()?;
    let (kind, guarantee) = match env.mode {
        BenchMode::Passthrough => (WorkerKind::Passthrough, ProcessingGuarantee::AtLeastOnce),
        BenchMode::AtLeastOnce => (WorkerKind::Booking, ProcessingGuarantee::AtLeastOnce),
        BenchMode::ExactlyOnce => (WorkerKind::Booking, ProcessingGuarantee::ExactlyOnce),
    };
    let no_retries = RetryPolicy {
        attempts: 1,
        ..RetryPolicy::default()
    };
    let mut config = WorkerConfig::new(
        kind.name(),
        &env.bootstrap,
        vec![(env.input.clone(), no_retries)],
    );
    config.group_id = env.group.clone();
    config.instance_id = Some(format!("bench-{}", std::process::id()));
    config.guarantee = guarantee;
    config.commit_interval = env.commit_interval;
    config.transactional_producers = env.transactional_producers;
    config.commit_records = env.commit_records;
    config.kafka = kafka_properties_from_env(std::env::vars())?;
    if let Some(ms) = env.fetch_wait_max_ms {
        config.kafka.push(KafkaProperty::parse(&format!(
            "consumer.fetch.wait.max.ms={ms}"
        ))?);
    }
    config.validate()?;
    let worker = config.worker.clone();

    let metrics = Metrics::default();
    let committed = Arc::new(AtomicU64::new(0));
    // 1 ms to 24 h, 3 significant digits (a fixed range: saturating_record never resizes).
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 86_400_000, 3,
    )?));
    // Latencies count from the end of the warm-up (BENCH_WARMUP_MS after the first record).
    let measure_from = Arc::new(AtomicI64::new(i64::MAX));
    {
        let (committed, latencies) = (committed.clone(), latencies.clone());
        let measure_from = measure_from.clone();
        metrics.tap_end_to_end(move |ms| {
            if now_ms() >= measure_from.load(Ordering::Relaxed) {
                let mut h = latencies.lock().expect("latency lock");
                for v in ms {
                    h.saturating_record(*v);
                }
            }
            committed.fetch_add(ms.len() as u64, Ordering::Relaxed);
        });
    }
    let warmup_ms = env.warmup.as_millis() as i64;
    let health = Health::default();
    let encoding = Encoding::default();
    let shutdown = CancellationToken::new();
    let fleet = Fleet {
        encoding: &encoding,
        metrics: &metrics,
        health: &health,
        gateway: GatewayConfig::default(),
        fault_process_delay: std::time::Duration::ZERO,
    };
    let running = fleet.start(kind, config, &env.output, shutdown.clone())?;
    let stats = running.stats.clone();

    // The clock: a thread that only watches atomics.
    let records = env.records;
    let exactly_once = env.mode == BenchMode::ExactlyOnce;
    let watcher = {
        let (health, committed) = (health.clone(), committed.clone());
        let end_of_input = shutdown.clone();
        std::thread::Builder::new()
            .name("bench-clock".into())
            .spawn(move || -> Option<(Duration, Duration)> {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !health.is_ready() {
                    if Instant::now() > deadline {
                        return None;
                    }
                    std::thread::sleep(TICK);
                }
                say("ready");
                while stats.consumed.load(Ordering::Relaxed) == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                let (start, cpu_start) = (Instant::now(), measure::process_cpu());
                measure_from.store(now_ms() + warmup_ms, Ordering::Relaxed);
                // BENCH_TRACE=1: the totals on stderr at every progress line, to see where
                // records wait (consumed but not finished: in the lanes; finished but not
                // committed: waiting for a commit).
                let trace = std::env::var_os("BENCH_TRACE").is_some();
                let mut last_report = Instant::now();
                let mut last_progress = (Instant::now(), 0u64);
                loop {
                    let done = if exactly_once {
                        // The input ends at the N-th record, as a bounded source does: once
                        // all N are processed, a clean stop commits the open transactions
                        // now instead of when their interval is up (the Python peer commits
                        // as soon as it has copied N, too).
                        if finished(&stats) >= records && !end_of_input.is_cancelled() {
                            end_of_input.cancel();
                        }
                        committed.load(Ordering::Relaxed)
                    } else {
                        finished(&stats)
                    };
                    if done >= records {
                        return Some((start.elapsed(), measure::process_cpu() - cpu_start));
                    }
                    if last_report.elapsed() >= Duration::from_millis(250) {
                        last_report = Instant::now();
                        say(&format!("progress {done}"));
                        if trace {
                            eprintln!(
                                "participant: t={}ms consumed={} finished={} committed={} produced={} pauses={}",
                                start.elapsed().as_millis(),
                                stats.consumed.load(Ordering::Relaxed),
                                finished(&stats),
                                committed.load(Ordering::Relaxed),
                                stats.produced.load(Ordering::Relaxed),
                                stats.pauses.load(Ordering::Relaxed),
                            );
                        }
                    }
                    if done > last_progress.1 {
                        last_progress = (Instant::now(), done);
                    } else if last_progress.0.elapsed() > Duration::from_secs(60) {
                        return None;
                    }
                    std::thread::sleep(TICK);
                }
            })?
    };
    let measured = tokio::task::spawn_blocking(move || watcher.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the benchmark clock panicked"))?;
    let Some((elapsed, cpu)) = measured else {
        shutdown.cancel();
        let _ = running.task.await;
        anyhow::bail!("no progress for 60 s (or not ready within 120 s): is the input seeded?");
    };
    // Every record's latency is observed at its commit: wait for the last commit.
    let until = Instant::now() + Duration::from_secs(30);
    while committed.load(Ordering::Relaxed) < records && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    running.task.await??;
    let latency = Latency::of(&latencies.lock().expect("latency lock"));
    let result = RunResult {
        records,
        seconds: elapsed.as_secs_f64(),
        records_per_sec: records as f64 / elapsed.as_secs_f64(),
        latency_ms: latency,
        cpu_seconds: cpu.as_secs_f64(),
        peak_rss_bytes: measure::peak_rss(),
        transactions: exactly_once.then(|| metrics.transactions_total(&worker, true)),
    };
    say(&format!("result {}", serde_json::to_string(&result)?));
    Ok(0)
}
