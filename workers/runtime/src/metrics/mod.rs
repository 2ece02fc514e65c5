//! Metric families a worker exports on `/metrics`, and the exact counters behind its reports.
//!
//! Families are registered once per process in a [`Metrics`]; several workers (the demo runs
//! three) share it and are told apart by the `worker` label. A lane resolves its label values
//! once into a [`TopicMetrics`], so the per-record cost is an atomic add. Labels are bounded:
//! worker, group, topic and partition at the finest; never keys or offsets. Partition series
//! are removed when the partition is revoked, so a scrape shows what this instance owns.
//!
//! Where librdkafka already measures something (records sent and received, batch sizes,
//! high watermarks), the statistics callback bridges it; everything a record does inside the
//! worker is counted where it happens.
//!
//! [`WorkerStats`] holds plain atomic totals for one worker. The demo's live summary, the
//! final report and the tests read them; they never reset and never depend on scraping.

mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus::local::LocalHistogram;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::processor::ErrorClass;

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
    /// Parked behind its key's record in the retry path (processed again later).
    pub const PARKED: &str = "parked";
    /// Every outcome.
    pub const ALL: [&str; 5] = [SUCCESS, RETRIED, DEAD_LETTERED, REPLAY_DROPPED, PARKED];
}

/// Latency buckets (seconds): 1 ms to 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

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
    commit_failures: IntCounterVec,
    consumer_lag_max: IntGaugeVec,
    pauses: IntCounterVec,
    redelivered: IntCounterVec,
    buffered_bytes: IntGaugeVec,
    retry_lateness: HistogramVec,
    partition_lag: IntGaugeVec,
    partition_lag_seconds: GaugeVec,
    partition_committed: IntGaugeVec,
    processing: HistogramVec,
    end_to_end: HistogramVec,
    retry_backlog: IntGaugeVec,
    transactions: IntCounterVec,
    transaction_duration: HistogramVec,
    fenced: IntCounterVec,
    producer_sent: IntCounterVec,
    producer_batch_size: GaugeVec,
    consumer_received: IntCounterVec,
    /// State stores: restores, expiry, keys waiting in order.
    pub(crate) state: state::StateMetrics,
    transaction_errors: IntCounterVec,
    end_to_end_tap: Arc<TapSlot>,
}

#[derive(Default)]
struct TapSlot(std::sync::OnceLock<EndToEndTap>);

impl std::fmt::Debug for TapSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "TapSlot(set)"
        } else {
            "TapSlot(unset)"
        })
    }
}

/// Receives the end-to-end latencies (milliseconds, record timestamp → offset commit) of the
/// records of one commit of one partition; see [`Metrics::tap_end_to_end`].
pub type EndToEndTap = Arc<dyn Fn(&[u64]) + Send + Sync>;

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

fn float_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Registry::new())
    }
}

impl Metrics {
    /// Also hands every end-to-end latency the histogram observes, exactly, to `tap` (the
    /// benchmark's percentiles come from here, not from histogram buckets). Set once; a second
    /// call is ignored.
    pub fn tap_end_to_end(&self, tap: impl Fn(&[u64]) + Send + Sync + 'static) {
        let _ = self.end_to_end_tap.0.set(Arc::new(tap));
    }

    pub(crate) fn end_to_end_tap(&self) -> Option<&EndToEndTap> {
        self.end_to_end_tap.0.get()
    }

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
            commit_failures: counter(
                r,
                "streamfleet_offset_commit_failures_total",
                "Offset commits the group coordinator refused or that failed (at-least-once; the \
                 next commit retries them, a new owner reprocesses what was never committed).",
                &["worker"],
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
                "Times a partition was paused because its lane's buffer was full (backpressure).",
                &["worker", "topic"],
            ),
            redelivered: counter(
                r,
                "streamfleet_redelivered_records_total",
                "Records the Kafka client delivered again at an offset already handed to a lane \
                 in this assignment; dropped, since processing them again would duplicate \
                 their outputs.",
                &["worker", "topic"],
            ),
            buffered_bytes: gauge(
                r,
                "streamfleet_buffered_bytes",
                "Bytes of fetched records (and their outputs) the worker holds until they are \
                 acknowledged; bounded by --max-buffered-mib.",
                &["worker"],
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
            partition_lag: gauge(
                r,
                "streamfleet_partition_lag_offsets",
                "Offset lag of a partition: high watermark (last stable offset under \
                 read_committed) minus the committed offset.",
                &["worker", "group", "topic", "partition"],
            ),
            partition_lag_seconds: float_gauge(
                r,
                "streamfleet_partition_lag_seconds",
                "Age of the oldest record of the partition not yet processed; 0 when caught up.",
                &["worker", "group", "topic", "partition"],
            ),
            partition_committed: gauge(
                r,
                "streamfleet_partition_committed_offset",
                "Last offset committed for the partition (progress).",
                &["worker", "group", "topic", "partition"],
            ),
            processing: histogram(
                r,
                "streamfleet_processing_duration_seconds",
                "Time to decode and process one record (outputs not yet acknowledged).",
                &["worker", "topic"],
                LATENCY_BUCKETS,
            ),
            end_to_end: histogram(
                r,
                "streamfleet_end_to_end_latency_seconds",
                "From a record's timestamp to the commit of its offset.",
                &["worker", "topic"],
                LATENCY_BUCKETS,
            ),
            retry_backlog: gauge(
                r,
                "streamfleet_retry_backlog",
                "Records waiting in a retry rung (its offset lag on this instance).",
                &["worker", "topic"],
            ),
            transactions: counter(
                r,
                "streamfleet_transactions_total",
                "Transactions by result (committed, aborted); exactly-once mode only.",
                &["worker", "result"],
            ),
            transaction_duration: histogram(
                r,
                "streamfleet_transaction_duration_seconds",
                "From the start of a transaction to the end of its commit or abort.",
                &["worker"],
                LATENCY_BUCKETS,
            ),
            fenced: counter(
                r,
                "streamfleet_producer_fenced_total",
                "Times this worker's transactional producers were fenced by another instance.",
                &["worker"],
            ),
            producer_sent: counter(
                r,
                "kafka_producer_record_send_total",
                "Records the producer sent to brokers (librdkafka txmsgs); rate() is the send rate.",
                &["worker"],
            ),
            producer_batch_size: float_gauge(
                r,
                "kafka_producer_batch_size_avg",
                "Average produced batch size in bytes over the last statistics window, by topic \
                 and producer (a worker's index of it: exactly-once workers have several).",
                &["worker", "topic", "producer"],
            ),
            consumer_received: counter(
                r,
                "kafka_consumer_records_consumed_total",
                "Records the consumer received from brokers (librdkafka rxmsgs); rate() is the \
                 consume rate.",
                &["worker"],
            ),
            transaction_errors: counter(
                r,
                "streamfleet_transaction_errors_total",
                "Transaction call errors by librdkafka class: retriable (the call is retried), abortable \
                 (the transaction is aborted and the partitions rewound), fatal (the worker stops).",
                &["worker", "class"],
            ),
            end_to_end_tap: Arc::default(),
            state: state::StateMetrics::new(r),
            registry,
        }
    }

    /// Counter of restored changelog entries of `topic`.
    pub fn restored(&self, worker: &str, topic: &str) -> IntCounter {
        self.state.restored.with_label_values(&[worker, topic])
    }

    /// Gauge of partitions restoring.
    pub fn restoring(&self, worker: &str) -> IntGauge {
        self.state.restoring.with_label_values(&[worker])
    }

    /// The registry to expose.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Creates every series of a worker that has a fixed label set, at zero, so rules and
    /// dashboards find them before the first event.
    pub fn init_worker(&self, worker: &str) {
        for kind in ["assigned", "revoked", "lost"] {
            self.rebalances.with_label_values(&[worker, kind]);
        }
        self.commit_failures.with_label_values(&[worker]);
        for result in ["committed", "aborted"] {
            self.transactions.with_label_values(&[worker, result]);
        }
        self.transaction_duration.with_label_values(&[worker]);
        self.state.init_worker(worker);
        for class in ["retriable", "abortable", "fatal"] {
            self.transaction_errors.with_label_values(&[worker, class]);
        }
        self.fenced.with_label_values(&[worker]);
        self.producer_sent.with_label_values(&[worker]);
        self.consumer_received.with_label_values(&[worker]);
    }

    /// Label-resolved metrics for one worker and input topic (created at zero).
    pub fn topic(&self, worker: &str, topic: &str, stats: Arc<WorkerStats>) -> TopicMetrics {
        let l = [worker, topic];
        let outcome = |o: &str| self.processed.with_label_values(&[worker, topic, o]);
        self.producer_errors.with_label_values(&l);
        TopicMetrics {
            consumed: self.consumed.with_label_values(&l),
            pauses: self.pauses.with_label_values(&l),
            redelivered: self.redelivered.with_label_values(&l),
            retry_lateness: self.retry_lateness.with_label_values(&l),
            processing: self.processing.with_label_values(&l),
            end_to_end: self.end_to_end.with_label_values(&l),
            success: outcome(outcome::SUCCESS),
            retried: outcome(outcome::RETRIED),
            dead_lettered: outcome(outcome::DEAD_LETTERED),
            replay_dropped: outcome(outcome::REPLAY_DROPPED),
            parked: outcome(outcome::PARKED),
            assigned: self.assigned.with_label_values(&l),
            stats,
        }
    }

    /// Per-partition gauges of one partition.
    pub fn partition(
        &self,
        worker: &str,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> PartitionMetrics {
        let p = partition.to_string();
        let l = [worker, group, topic, p.as_str()];
        PartitionMetrics {
            lag: self.partition_lag.with_label_values(&l),
            lag_seconds: self.partition_lag_seconds.with_label_values(&l),
            committed: self.partition_committed.with_label_values(&l),
        }
    }

    /// Sets every gauge of one partition (for exporters reading lag from outside a group).
    #[allow(clippy::too_many_arguments)]
    pub fn set_partition(
        &self,
        worker: &str,
        group: &str,
        topic: &str,
        partition: i32,
        lag: i64,
        lag_seconds: f64,
        committed: i64,
    ) {
        let m = self.partition(worker, group, topic, partition);
        m.lag.set(lag);
        m.lag_seconds.set(lag_seconds);
        m.committed.set(committed);
    }

    /// Removes a partition's series (revoked or lost).
    pub fn forget_partition(&self, worker: &str, group: &str, topic: &str, partition: i32) {
        let p = partition.to_string();
        let l = [worker, group, topic, p.as_str()];
        let _ = self.partition_lag.remove_label_values(&l);
        let _ = self.partition_lag_seconds.remove_label_values(&l);
        let _ = self.partition_committed.remove_label_values(&l);
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

    /// Counts one failed offset commit.
    pub fn commit_failed(&self, worker: &str) {
        self.commit_failures.with_label_values(&[worker]).inc();
    }

    /// Failed offset commits of a worker so far.
    pub fn commit_failures_total(&self, worker: &str) -> u64 {
        self.commit_failures.with_label_values(&[worker]).get()
    }

    /// Transactions of a worker so far that ended committed (or, with `committed` false,
    /// aborted).
    pub fn transactions_total(&self, worker: &str, committed: bool) -> u64 {
        let result = if committed { "committed" } else { "aborted" };
        self.transactions.with_label_values(&[worker, result]).get()
    }

    /// Sets the max lag of one topic for one group.
    pub fn set_lag_max(&self, worker: &str, group: &str, topic: &str, lag: i64) {
        self.consumer_lag_max
            .with_label_values(&[worker, group, topic])
            .set(lag);
    }

    /// Sets the bytes the worker's buffers hold.
    pub fn set_buffered_bytes(&self, worker: &str, bytes: i64) {
        self.buffered_bytes.with_label_values(&[worker]).set(bytes);
    }

    /// Sets the backlog of a retry rung.
    pub fn set_retry_backlog(&self, worker: &str, rung: &str, backlog: i64) {
        self.retry_backlog
            .with_label_values(&[worker, rung])
            .set(backlog);
    }

    /// Counts a finished transaction and its duration.
    pub fn transaction(&self, worker: &str, committed: bool, seconds: f64) {
        let result = if committed { "committed" } else { "aborted" };
        self.transactions.with_label_values(&[worker, result]).inc();
        self.transaction_duration
            .with_label_values(&[worker])
            .observe(seconds);
    }

    /// Counts a transaction error of `class` (retriable, abortable, fatal).
    pub fn transaction_error(&self, worker: &str, class: &str) {
        self.transaction_errors
            .with_label_values(&[worker, class])
            .inc();
    }

    /// Counts a fenced producer.
    pub fn fenced(&self, worker: &str) {
        self.fenced.with_label_values(&[worker]).inc();
    }

    /// Bridges librdkafka's statistics of `worker`'s producer number `producer`: records sent
    /// since its last statistics (each producer has its own running total) and its per-topic
    /// average batch sizes (one series per producer, so several do not overwrite each other).
    pub fn producer_statistics(
        &self,
        worker: &str,
        producer: usize,
        sent: u64,
        batch_avg: &[(String, f64)],
    ) {
        self.producer_sent.with_label_values(&[worker]).inc_by(sent);
        let producer = producer.to_string();
        for (topic, avg) in batch_avg {
            self.producer_batch_size
                .with_label_values(&[worker, topic, &producer])
                .set(*avg);
        }
    }

    /// Bridges librdkafka's consumer statistics: total records received.
    pub fn consumer_statistics(&self, worker: &str, received_total: i64) {
        advance(
            &self.consumer_received.with_label_values(&[worker]),
            received_total,
        );
    }
}

/// Moves a counter up to a running total reported elsewhere (never down).
fn advance(counter: &IntCounter, total: i64) {
    let total = total.max(0) as u64;
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// Metrics for one (worker, input topic), resolved once per lane.
#[derive(Clone, Debug)]
pub struct TopicMetrics {
    pub(crate) consumed: IntCounter,
    pub(crate) pauses: IntCounter,
    pub(crate) redelivered: IntCounter,
    pub(crate) retry_lateness: Histogram,
    pub(crate) processing: Histogram,
    pub(crate) end_to_end: Histogram,
    pub(crate) success: IntCounter,
    pub(crate) retried: IntCounter,
    pub(crate) dead_lettered: IntCounter,
    pub(crate) replay_dropped: IntCounter,
    pub(crate) parked: IntCounter,
    pub(crate) assigned: IntGauge,
    pub(crate) stats: Arc<WorkerStats>,
}

/// How a record left its lane: the `outcome` label of `streamfleet_records_processed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Processed; its outputs (if any) were acknowledged.
    Success,
    /// Dropped as an exact replay.
    ReplayDropped,
    /// Sent to a retry topic.
    Retried,
    /// Sent to the dead-letter topic, for this reason.
    DeadLettered(ErrorClass),
    /// Parked behind its key's record in the retry path (`ordering: key`); processed when
    /// that record is done.
    Parked,
}

/// The per-record updates, in the order a lane makes them. Public so that the hot-path
/// micro-benchmark measures exactly what a lane does.
impl TopicMetrics {
    /// A lane took the record.
    pub fn record_consumed(&self) {
        self.consumed.inc();
        bump(&self.stats.consumed);
    }

    /// The processing-time histogram as a lane keeps it: decode and process times observed
    /// locally, published by `flush` (or on drop) with one update of the shared histogram.
    pub fn local_processing(&self) -> LocalHistogram {
        self.processing.local()
    }

    /// Its outputs were acknowledged (or it was routed): count the outcome.
    pub fn record_outcome(&self, outcome: RecordOutcome) {
        let (counter, total) = match outcome {
            RecordOutcome::Success => (&self.success, &self.stats.succeeded),
            RecordOutcome::ReplayDropped => (&self.replay_dropped, &self.stats.replay_dropped),
            RecordOutcome::Retried => (&self.retried, &self.stats.retried),
            RecordOutcome::DeadLettered(class) => {
                bump(&self.stats.dead_lettered_by_class[class.index()]);
                (&self.dead_lettered, &self.stats.dead_lettered)
            }
            RecordOutcome::Parked => (&self.parked, &self.stats.parked),
        };
        counter.inc();
        bump(total);
    }

    /// Its offset was committed `seconds` after the record's timestamp.
    pub fn record_end_to_end(&self, seconds: f64) {
        self.end_to_end.observe(seconds);
    }
}

/// Gauges of one partition.
#[derive(Clone, Debug)]
pub struct PartitionMetrics {
    pub(crate) lag: IntGauge,
    pub(crate) lag_seconds: Gauge,
    pub(crate) committed: IntGauge,
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
    /// Of those, by class, in [`ErrorClass::ALL`]'s order.
    pub dead_lettered_by_class: [AtomicU64; 4],
    /// Records dropped as exact replays.
    pub replay_dropped: AtomicU64,
    /// Records parked behind their key's record in the retry path (each is consumed, and
    /// counted, again when it is processed).
    pub parked: AtomicU64,
    /// Output records acknowledged (outputs, retry and dead-letter records).
    pub produced: AtomicU64,
    /// Failed produce attempts.
    pub produce_errors: AtomicU64,
    /// Sum of offset lag over assigned partitions.
    pub lag: AtomicI64,
    /// Partitions currently assigned.
    pub assigned_partitions: AtomicI64,
    /// Times a partition was paused for backpressure.
    pub pauses: AtomicU64,
    /// Bytes of records (and their outputs) held from fetch to acknowledgement, as the
    /// fetcher last counted them (once per fetch loop, at least every 100 ms).
    pub buffered_bytes: AtomicI64,
}

/// Dead-lettered records by the class of their failure.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeadLettered {
    /// Rejected by a business rule.
    pub permanent: u64,
    /// Not decodable.
    pub malformed: u64,
    /// Failed on every attempt.
    pub retries_exhausted: u64,
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
    /// Of those, by the class of their failure.
    pub dead_lettered_by_class: DeadLettered,
    /// Records dropped as exact replays.
    pub replay_dropped: u64,
    /// Records parked behind their key's record in the retry path.
    pub parked: u64,
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
    /// Bytes held from fetch to acknowledgement (last published).
    pub buffered_bytes: i64,
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
            dead_lettered_by_class: DeadLettered {
                permanent: r(&self.dead_lettered_by_class[ErrorClass::Permanent.index()]),
                malformed: r(&self.dead_lettered_by_class[ErrorClass::Malformed.index()]),
                retries_exhausted: r(
                    &self.dead_lettered_by_class[ErrorClass::RetriesExhausted.index()]
                ),
            },
            replay_dropped: r(&self.replay_dropped),
            parked: r(&self.parked),
            produced: r(&self.produced),
            produce_errors: r(&self.produce_errors),
            lag: self.lag.load(Ordering::Relaxed),
            assigned_partitions: self.assigned_partitions.load(Ordering::Relaxed),
            pauses: r(&self.pauses),
            buffered_bytes: self.buffered_bytes.load(Ordering::Relaxed),
        }
    }
}

pub(crate) fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder as _;

    #[test]
    fn running_totals_advance_counters_and_never_move_them_back() {
        let m = Metrics::default();
        m.consumer_statistics("w", 10);
        m.consumer_statistics("w", 25);
        m.consumer_statistics("w", 5); // a restarted client reports a smaller total
        assert_eq!(m.consumer_received.with_label_values(&["w"]).get(), 25);
    }

    #[test]
    fn each_producer_of_a_worker_keeps_its_own_batch_size() {
        let m = Metrics::default();
        m.producer_statistics("w", 0, 10, &[("out".into(), 2000.0)]);
        m.producer_statistics("w", 1, 5, &[("out".into(), 3000.0)]);
        let size = |p: &str| {
            m.producer_batch_size
                .with_label_values(&["w", "out", p])
                .get()
        };
        assert_eq!((size("0"), size("1")), (2000.0, 3000.0));
        assert_eq!(m.producer_sent.with_label_values(&["w"]).get(), 15);
    }

    #[test]
    fn revoked_partitions_disappear_from_the_scrape() {
        let m = Metrics::default();
        m.partition("w", "g", "t", 3).lag.set(7);
        let text = |m: &Metrics| {
            let mut buf = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&m.registry().gather(), &mut buf)
                .unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert!(text(&m).contains("streamfleet_partition_lag_offsets{group=\"g\",partition=\"3\",topic=\"t\",worker=\"w\"} 7"));
        m.forget_partition("w", "g", "t", 3);
        assert!(!text(&m).contains("partition=\"3\""));
    }

    #[test]
    fn a_worker_exports_its_fixed_series_before_any_event() {
        let m = Metrics::default();
        m.init_worker("w");
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&m.registry().gather(), &mut buf)
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        for s in [
            "streamfleet_transactions_total{result=\"aborted\",worker=\"w\"} 0",
            "streamfleet_producer_fenced_total{worker=\"w\"} 0",
            "streamfleet_rebalances_total{kind=\"lost\",worker=\"w\"} 0",
            "streamfleet_offset_commit_failures_total{worker=\"w\"} 0",
        ] {
            assert!(text.contains(s), "{s} missing");
        }
    }
}
