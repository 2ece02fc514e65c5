//! Metric families a worker exports on `/metrics`, and the exact counters behind its reports.
//!
//! Families are registered once per process in a [`Metrics`]; several workers (the demo runs
//! three) share it and are told apart by the `worker` label. A lane resolves its label values
//! once into a [`TopicMetrics`], so the per-record cost is an atomic add. Labels are bounded:
//! worker, group, topic, partition at the finest; never keys or offsets.
//!
//! [`WorkerStats`] holds plain atomic totals for one worker. The demo's live summary, the
//! final report and the tests read them; they never reset and never depend on scraping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Outcome label values of `streamfleet_records_processed_total`.
pub mod outcome {
    /// Processed; its outputs (if any) were acknowledged.
    pub const SUCCESS: &str = "success";
    /// Sent to a retry topic.
    pub const RETRIED: &str = "retried";
    /// Sent to the dead-letter topic.
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// Dropped as an exact replay of a record already applied.
    pub const REPLAY_DROPPED: &str = "replay_dropped";
}

/// Every metric family of the process.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    consumed: IntCounterVec,
    processed: IntCounterVec,
    produced: IntCounterVec,
    producer_errors: IntCounterVec,
    assigned: IntGaugeVec,
    rebalances: IntCounterVec,
    consumer_lag_max: IntGaugeVec,
    pauses: IntCounterVec,
    retry_lateness: HistogramVec,
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Registry::new())
    }
}

impl Metrics {
    /// Registers every family in `registry`.
    pub fn new(registry: Registry) -> Self {
        let r = &registry;
        Self {
            consumed: counter(
                r,
                "streamfleet_records_consumed_total",
                "Records fetched and handed to a partition lane.",
                &["worker", "topic"],
            ),
            processed: counter(
                r,
                "streamfleet_records_processed_total",
                "Records whose processing finished, by outcome.",
                &["worker", "topic", "outcome"],
            ),
            produced: counter(
                r,
                "streamfleet_records_produced_total",
                "Records produced and acknowledged by the broker, by destination topic.",
                &["worker", "topic"],
            ),
            producer_errors: counter(
                r,
                "kafka_producer_record_error_total",
                "Produce attempts that failed (the record is retried or re-routed, never dropped).",
                &["worker", "topic"],
            ),
            assigned: gauge(
                r,
                "streamfleet_assigned_partitions",
                "Partitions currently assigned to this worker.",
                &["worker", "topic"],
            ),
            rebalances: counter(
                r,
                "streamfleet_rebalances_total",
                "Rebalance events by kind (assigned, revoked, lost).",
                &["worker", "kind"],
            ),
            consumer_lag_max: gauge(
                r,
                "kafka_consumer_lag_max",
                "Largest offset lag over the partitions of a topic assigned to this instance.",
                &["worker", "group", "topic"],
            ),
            pauses: counter(
                r,
                "streamfleet_partition_pauses_total",
                "Times a partition was paused because its lane's queue was full (backpressure).",
                &["worker", "topic"],
            ),
            retry_lateness: histogram(
                r,
                "streamfleet_retry_lateness_seconds",
                "How long after its due time a retry record started processing.",
                &["worker", "topic"],
                &[
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            registry,
        }
    }

    /// The registry to expose.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Label-resolved counters for one worker and input topic.
    pub fn topic(&self, worker: &str, topic: &str, stats: Arc<WorkerStats>) -> TopicMetrics {
        let l = [worker, topic];
        let outcome = |o: &str| self.processed.with_label_values(&[worker, topic, o]);
        TopicMetrics {
            consumed: self.consumed.with_label_values(&l),
            pauses: self.pauses.with_label_values(&l),
            retry_lateness: self.retry_lateness.with_label_values(&l),
            success: outcome(outcome::SUCCESS),
            retried: outcome(outcome::RETRIED),
            dead_lettered: outcome(outcome::DEAD_LETTERED),
            replay_dropped: outcome(outcome::REPLAY_DROPPED),
            assigned: self.assigned.with_label_values(&l),
            stats,
        }
    }

    /// Counter of records produced to `topic`.
    pub fn produced(&self, worker: &str, topic: &str) -> IntCounter {
        self.produced.with_label_values(&[worker, topic])
    }

    /// Counter of failed produce attempts to `topic`.
    pub fn producer_errors(&self, worker: &str, topic: &str) -> IntCounter {
        self.producer_errors.with_label_values(&[worker, topic])
    }

    /// Counts one rebalance event.
    pub fn rebalance(&self, worker: &str, kind: &str) {
        self.rebalances.with_label_values(&[worker, kind]).inc();
    }

    /// Sets the max lag of one topic for one group.
    pub fn set_lag_max(&self, worker: &str, group: &str, topic: &str, lag: i64) {
        self.consumer_lag_max
            .with_label_values(&[worker, group, topic])
            .set(lag);
    }
}

/// Counters for one (worker, input topic), resolved once per lane.
#[derive(Clone, Debug)]
pub struct TopicMetrics {
    pub(crate) consumed: IntCounter,
    pub(crate) pauses: IntCounter,
    pub(crate) retry_lateness: Histogram,
    pub(crate) success: IntCounter,
    pub(crate) retried: IntCounter,
    pub(crate) dead_lettered: IntCounter,
    pub(crate) replay_dropped: IntCounter,
    pub(crate) assigned: IntGauge,
    pub(crate) stats: Arc<WorkerStats>,
}

/// Exact totals for one worker, for reports and tests.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Records handed to lanes.
    pub consumed: AtomicU64,
    /// Records processed successfully (outputs acknowledged).
    pub succeeded: AtomicU64,
    /// Records sent to a retry topic.
    pub retried: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Records dropped as exact replays.
    pub replay_dropped: AtomicU64,
    /// Output records acknowledged (outputs, retry and dead-letter records).
    pub produced: AtomicU64,
    /// Failed produce attempts.
    pub produce_errors: AtomicU64,
    /// Sum of offset lag over assigned partitions (from librdkafka statistics).
    pub lag: AtomicI64,
    /// Partitions currently assigned.
    pub assigned_partitions: AtomicI64,
    /// Times a partition was paused for backpressure.
    pub pauses: AtomicU64,
}

/// A point-in-time copy of [`WorkerStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Records handed to lanes.
    pub consumed: u64,
    /// Records processed successfully.
    pub succeeded: u64,
    /// Records sent to a retry topic.
    pub retried: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Records dropped as exact replays.
    pub replay_dropped: u64,
    /// Output records acknowledged.
    pub produced: u64,
    /// Failed produce attempts.
    pub produce_errors: u64,
    /// Offset lag summed over assigned partitions.
    pub lag: i64,
    /// Partitions currently assigned.
    pub assigned_partitions: i64,
    /// Times a partition was paused for backpressure.
    pub pauses: u64,
}

impl WorkerStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            consumed: r(&self.consumed),
            succeeded: r(&self.succeeded),
            retried: r(&self.retried),
            dead_lettered: r(&self.dead_lettered),
            replay_dropped: r(&self.replay_dropped),
            produced: r(&self.produced),
            produce_errors: r(&self.produce_errors),
            lag: self.lag.load(Ordering::Relaxed),
            assigned_partitions: self.assigned_partitions.load(Ordering::Relaxed),
            pauses: r(&self.pauses),
        }
    }
}

pub(crate) fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}
