//! One partition's lane: strict offset order within the partition, and the committable offset.
//!
//! ```text
//!  fetcher ──try_send──► [queue of 8192] ──► lane task ───────────────► ack task
//!   (full: stash; stash                       decode                   await every delivery
//!    at capacity: pause)                      process (state locked)   count the outcome
//!                                             route failures           committable = offset+1
//!                                             enqueue outputs
//! ```
//!
//! At least once, the lane task never waits for the broker: it enqueues a record's outputs and
//! moves on, and the ack task awaits the deliveries in offset order, so `committable` only ever
//! covers records whose every output (or retry/dead-letter record) is acknowledged. The
//! fetcher commits `committable`; nothing else does.
//!
//! Exactly once, the lane holds its transaction group's gate (shared) while it processes a
//! record and enqueues what it produces on the group's producer, including the state changes
//! of a durable state, then marks the offset committable at once: the commit of the group's
//! transaction delivers the outputs and commits the offsets together (see
//! [`crate::transactions`]). The ack task only counts deliveries.
//! Before its first record the lane waits until its partition's state is restored.
//!
//! A lane on a retry rung holds each record until its due time before processing it; while it
//! waits its queue fills and the fetcher pauses the partition.
//!
//! Stopping (revoke, shutdown) cancels `stop`: the record being processed finishes, queued
//! records are dropped (they are not committed, so the next owner fetches them again), the ack
//! task drains what was already sent, and the task ends.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use prometheus::local::LocalHistogram;
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events;
use crate::headers;
use crate::metrics::{RecordOutcome, TopicMetrics};
use crate::processor::{Outcome, ProcessError, Processor};
use crate::producer::{Delivery, OutputProducer, ProduceError};
use crate::record::{OutputRecord, RawRecord, Record, TopicPartition};
use crate::routing::{FailureRouter, Route};
use crate::state::{RestoreSource, StateSlot};
use crate::transactions::Transactions;

/// Records a lane takes from its queue at once (one concurrency permit per batch).
pub const BATCH: usize = 64;
/// The lane's queue; the partition's buffer beyond it is the fetcher's stash. The fetcher
/// refills queues once per loop, and a loop may wait in `poll` for a few milliseconds, or
/// (exactly once) commit transaction groups one after the other, not refilling meanwhile: the
/// queue must hold more work than that. With 64 (one batch) lanes starved between refills and
/// a backlog drained at half the speed; with 1024 an exactly-once worker kept 1.70 cores busy
/// against 1.77 with 8192, which drained it 9 % faster (README, Benchmarks, profile item 22).
/// The records it holds count against `--max-buffered-mib` like the stash's, and tokio's
/// channel allocates its slots as they fill, so an idle lane costs nothing.
pub(crate) const QUEUE: usize = 8192;

/// The queue of a lane whose partition may stash `lane_capacity` records: [`QUEUE`], or less
/// when `--lane-capacity` is smaller, so a small capacity still bounds what a partition holds
/// (at most twice the capacity: queued and stashed).
pub(crate) fn queue_for(lane_capacity: usize) -> usize {
    QUEUE.min(lane_capacity).max(1)
}

/// Records sent but not yet acknowledged, per lane, before the lane waits for the ack task.
const MAX_UNACKED: usize = 4096;

/// Current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Raised when the worker cannot go on (the producer is fatal, the dead-letter topic refuses
/// records); the worker stops and exits non-zero.
#[derive(Clone, Debug, Default)]
pub struct FatalSignal {
    token: CancellationToken,
    reason: Arc<std::sync::Mutex<Option<String>>>,
}

impl FatalSignal {
    /// Records the first reason and wakes the worker.
    pub fn raise(&self, reason: String) {
        let mut slot = self.reason.lock().expect("fatal reason lock");
        if slot.is_none() {
            tracing::error!(%reason, "fatal error, stopping the worker");
            *slot = Some(reason);
        }
        self.token.cancel();
    }

    /// The reason, once raised.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().expect("fatal reason lock").clone()
    }

    /// Fires when raised.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// What every lane of one worker shares.
pub(crate) struct LaneContext<P: Processor> {
    pub processor: Arc<P>,
    /// The worker's producers: one at least once; exactly once, one per transaction group
    /// (see [`crate::transactions`]). A lane uses the one of its source partition.
    pub outputs: Vec<Output>,
    pub router: FailureRouter,
    pub concurrency: Arc<Semaphore>,
    pub fatal: FatalSignal,
    /// Exactly-once with durable state: where each source topic's changelog is.
    pub changelogs: Option<ChangelogTopics>,
    pub worker: String,
    pub metrics: crate::metrics::Metrics,
}

/// A producer and, exactly once, its transaction.
#[derive(Clone)]
pub(crate) struct Output {
    pub producer: Arc<OutputProducer>,
    /// Exactly once: the open transaction and its gate.
    pub txns: Option<Arc<Transactions>>,
}

impl<P: Processor> LaneContext<P> {
    /// The transaction group of a partition: its number modulo the number of groups, so a
    /// source partition and its retry rungs share a producer, and their outputs and
    /// changelog records keep the order they were produced in.
    pub fn group_of(&self, partition: i32) -> usize {
        partition.rem_euclid(self.outputs.len() as i32) as usize
    }

    /// The output of a partition's transaction group.
    pub fn output_of(&self, partition: i32) -> &Output {
        &self.outputs[self.group_of(partition)]
    }

    /// Whether the worker runs exactly once.
    pub fn exactly_once(&self) -> bool {
        self.outputs.iter().any(|o| o.txns.is_some())
    }
}

/// Changelog topics of the sources, and how to reach them.
#[derive(Debug, Clone)]
pub(crate) struct ChangelogTopics {
    pub brokers: String,
    pub props: Vec<crate::config::KafkaProperty>,
    pub topics: std::collections::HashMap<String, String>,
}

/// The fetcher's view of a lane.
pub(crate) struct LaneShared {
    pub stop: CancellationToken,
    /// Next offset to commit: one past the last record whose outputs are all acknowledged
    /// (exactly once: enqueued in the open transaction), and all before it. `-1` until the
    /// first record completes.
    pub committable: AtomicI64,
    /// Bytes the lane holds for its records, from the queue to the acknowledgement: each
    /// record's [`RawRecord::footprint`], added when the fetcher queues it
    /// ([`LaneHandle::offer`]), and what processing added (the ack-queue entry, the outputs
    /// and librdkafka's copies of them), added by the lane once sent; both subtracted by the
    /// ack task when the record is done (the fetcher's memory bound).
    pub held_bytes: AtomicUsize,
}

/// A running lane, owned by the fetcher's partition table.
pub(crate) struct LaneHandle {
    pub tx: mpsc::Sender<RawRecord>,
    pub shared: Arc<LaneShared>,
    pub task: JoinHandle<()>,
}

/// What became of a record offered to a lane.
pub(crate) enum Offered {
    /// In the lane's queue, and counted in its `held_bytes`.
    Queued,
    /// The queue is full: the record is handed back, not counted.
    Full(RawRecord),
    /// The lane has stopped: the record is handed back, not counted.
    Closed(RawRecord),
}

impl LaneHandle {
    /// Queues a record whose footprint is `bytes`, counting it in `held_bytes` first (the
    /// lane may finish it, and its ack task subtract, at once).
    pub fn offer(&self, raw: RawRecord, bytes: usize) -> Offered {
        self.shared.held_bytes.fetch_add(bytes, Ordering::Relaxed);
        let refused = match self.tx.try_send(raw) {
            Ok(()) => return Offered::Queued,
            Err(mpsc::error::TrySendError::Full(raw)) => Offered::Full(raw),
            Err(mpsc::error::TrySendError::Closed(raw)) => Offered::Closed(raw),
        };
        self.shared.held_bytes.fetch_sub(bytes, Ordering::Relaxed);
        refused
    }
}

enum Kind {
    Success,
    ReplayDropped,
    Routed(Route),
}

/// A processed record whose outputs are in flight.
struct Pending {
    raw: RawRecord,
    kind: Kind,
    sent: Vec<(OutputRecord, Delivery)>,
}

/// What librdkafka and rust-rdkafka hold for one produced record until it is acknowledged,
/// beyond librdkafka's copy of its bytes: the message struct (`rd_kafka_msg_t`), its share of
/// the delivery report, and the delivery future's channel. An estimate from their sizes,
/// checked against peak RSS: with only the records' own bytes counted, each budgeted MiB cost
/// about 2.8 MiB of RSS (README, Benchmarks).
const PRODUCED_OVERHEAD: usize = 320;

impl Pending {
    /// What processing added to the record's footprint: this struct in the ack queue, and
    /// each output twice (ours, and librdkafka's copy) with librdkafka's per-message state.
    fn processing_footprint(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .sent
                .iter()
                .map(|(out, _)| 2 * out.footprint() + PRODUCED_OVERHEAD)
                .sum::<usize>()
    }
}

pub(crate) fn spawn<P: Processor>(
    ctx: Arc<LaneContext<P>>,
    tp: TopicPartition,
    slot: Arc<StateSlot<P::State>>,
    metrics: TopicMetrics,
    queue: usize,
    runtime: &tokio::runtime::Handle,
) -> LaneHandle {
    let (tx, rx) = mpsc::channel(queue);
    let shared = Arc::new(LaneShared {
        stop: CancellationToken::new(),
        committable: AtomicI64::new(-1),
        held_bytes: AtomicUsize::new(0),
    });
    let output = ctx.output_of(tp.partition).clone();
    let lane = Lane {
        is_rung: ctx.router.is_rung(&tp.topic),
        source: TopicPartition::new(ctx.router.source_of(&tp.topic), tp.partition),
        producer: output.producer,
        txns: output.txns,
        ctx,
        shared: shared.clone(),
        state: slot.state.clone(),
        slot,
        metrics,
    };
    let task = runtime.spawn(lane.run(rx));
    LaneHandle { tx, shared, task }
}

struct Lane<P: Processor> {
    ctx: Arc<LaneContext<P>>,
    /// The producer of this lane's transaction group (the worker's one at least once).
    producer: Arc<OutputProducer>,
    /// Exactly once: the transaction of this lane's group.
    txns: Option<Arc<Transactions>>,
    shared: Arc<LaneShared>,
    state: Arc<Mutex<P::State>>,
    slot: Arc<StateSlot<P::State>>,
    metrics: TopicMetrics,
    is_rung: bool,
    /// The source partition (this partition, or the one whose rung it is).
    source: TopicPartition,
}

impl<P: Processor> Lane<P> {
    async fn run(self, mut rx: mpsc::Receiver<RawRecord>) {
        if !self.restore().await {
            return;
        }
        let (ack_tx, ack_rx) = mpsc::channel(MAX_UNACKED);
        let acker = tokio::spawn(ack_loop(
            ack_rx,
            self.ctx.clone(),
            self.producer.clone(),
            self.shared.clone(),
            self.metrics.clone(),
        ));
        let stop = self.shared.stop.clone();
        let mut batch = Vec::with_capacity(BATCH);
        // Processing times are observed here and published once per batch (and when the lane
        // waits or ends: dropping it publishes too): the topic's histogram is shared by all
        // its lanes, and an observation per record made them contend for its atomics across
        // cores (README, Benchmarks, profile items 17 and 18).
        let mut processing = self.metrics.local_processing();
        'lane: loop {
            processing.flush();
            let received = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                n = rx.recv_many(&mut batch, BATCH) => n,
            };
            if received == 0 {
                break;
            }
            // The permit and the state lock are held across a batch, and both are released
            // before a retry record waits for its due time: the state is shared with the
            // source partition's lane, which must keep flowing meanwhile.
            let mut permit = None;
            let mut state = None;
            for raw in batch.drain(..) {
                if stop.is_cancelled() {
                    break 'lane;
                }
                if self.is_rung && !self.due(&raw) {
                    permit = None;
                    state = None;
                    processing.flush();
                    if !self.wait_until_due(&raw).await {
                        break 'lane;
                    }
                }
                if permit.is_none() {
                    permit = Some(
                        self.ctx
                            .concurrency
                            .clone()
                            .acquire_owned()
                            .await
                            .expect("semaphore never closed"),
                    );
                }
                if state.is_none() {
                    state = Some(self.state.clone().lock_owned().await);
                }
                if let Some(due) = self
                    .is_rung
                    .then(|| headers::due_at(&raw.headers))
                    .flatten()
                {
                    let late_ms = (now_ms() - due).max(0);
                    self.metrics.retry_lateness.observe(late_ms as f64 / 1000.0);
                }
                let guard = state.as_mut().expect("locked above");
                // Exactly once: no commit cuts through a record (see crate::transactions).
                // Uncontended, the gate is one atomic. Only while a commit holds or awaits it
                // does the lane queue behind the commit (try_read fails then, so the commit is
                // never starved) and watch `stop`: registering with the token takes a lock,
                // too much to pay per record.
                let gate = match &self.txns {
                    Some(txns) => match txns.gate.try_read() {
                        Ok(g) => Some(g),
                        Err(_) => tokio::select! {
                            biased;
                            _ = stop.cancelled() => break 'lane,
                            g = txns.gate.read() => Some(g),
                        },
                    },
                    None => None,
                };
                let offset = raw.offset;
                let Some(pending) = self.handle(guard, raw, &mut processing).await else {
                    break 'lane;
                };
                if let Some(txns) = &self.txns {
                    self.shared.committable.store(offset + 1, Ordering::Release);
                    txns.note_record();
                }
                drop(gate);
                // What held_bytes counts for the record until its ack task is done with it.
                let added = pending.processing_footprint();
                self.shared.held_bytes.fetch_add(added, Ordering::Relaxed);
                let held = pending.raw.footprint() + added;
                if ack_tx.send((held, pending)).await.is_err() {
                    break 'lane;
                }
            }
        }
        drop(ack_tx);
        let _ = acker.await;
    }

    /// Exactly once with a durable state: restores the partition's state from its changelog
    /// once (the first lane of the source partition does it; the others wait). False when
    /// the restore failed (the worker is stopping) or the lane was stopped meanwhile.
    async fn restore(&self) -> bool {
        let Some(changelogs) = self.ctx.changelogs.as_ref() else {
            return true;
        };
        let Some(topic) = changelogs.topics.get(&*self.source.topic).cloned() else {
            return true;
        };
        let source = RestoreSource {
            brokers: changelogs.brokers.clone(),
            props: changelogs.props.clone(),
            topic,
            partition: self.source.partition,
        };
        let restore = async {
            let (processor, state) = (self.ctx.processor.clone(), self.state.clone());
            let (worker, metrics) = (self.ctx.worker.clone(), self.ctx.metrics.clone());
            let restoring = metrics.restoring(&worker);
            restoring.inc();
            let started = std::time::Instant::now();
            let counter = metrics.restored(&worker, &source.topic);
            let from = source.clone();
            let result = tokio::task::spawn_blocking(move || {
                let changelog = processor
                    .changelog()
                    .ok_or("the processor has no changelog")?;
                let mut state = state.blocking_lock();
                crate::state::read_changelog(&from, |key, value| {
                    counter.inc();
                    changelog.restore(&mut state, key, value)
                })
            })
            .await
            .unwrap_or_else(|e| Err(format!("restore task failed: {e}")));
            restoring.dec();
            match result {
                Ok(entries) => {
                    tracing::info!(worker = %worker, partition = %self.source, changelog = %source.topic,
                        entries, millis = started.elapsed().as_millis() as u64, "state restored");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        tokio::select! {
            _ = self.shared.stop.cancelled() => false,
            r = self.slot.restored.get_or_try_init(|| restore) => match r {
                Ok(()) => true,
                Err(e) => {
                    self.ctx.fatal.raise(format!("cannot restore the state of {}: {e}", self.source));
                    false
                }
            },
        }
    }

    /// Whether a retry record may be processed now.
    fn due(&self, raw: &RawRecord) -> bool {
        headers::due_at(&raw.headers).is_none_or(|due| due <= now_ms())
    }

    /// Holds a retry record until it is due; false when the lane was stopped meanwhile.
    async fn wait_until_due(&self, raw: &RawRecord) -> bool {
        let Some(due) = headers::due_at(&raw.headers) else {
            return true;
        };
        loop {
            let wait = due - now_ms();
            if wait <= 0 {
                return true;
            }
            tokio::select! {
                _ = self.shared.stop.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            }
        }
    }

    /// Exactly once: the open transaction failed under this lane. The lane ends (its
    /// partition is rewound and restarted by the abort); the record is processed again.
    fn transaction_failed(&self, reason: &str) {
        tracing::warn!(partition = %self.source, %reason, "the transaction failed; waiting for the abort");
        if let Some(txns) = &self.txns {
            txns.request_abort();
        }
    }

    /// The state changes of the last record as changelog records (exactly once with a durable
    /// state); drained and dropped otherwise, state being in memory only.
    fn state_changes(&self, state: &mut P::State) -> Vec<OutputRecord> {
        let Some(changelog) = self.ctx.processor.changelog() else {
            return Vec::new();
        };
        let changes = changelog.drain(state);
        let topic = self
            .ctx
            .changelogs
            .as_ref()
            .and_then(|c| c.topics.get(&*self.source.topic));
        let Some(topic) = topic else {
            return Vec::new();
        };
        changes
            .into_iter()
            .map(|(key, value)| OutputRecord {
                topic: topic.clone(),
                key: Some(key),
                value,
                headers: Vec::new(),
                partition: Some(self.source.partition),
            })
            .collect()
    }

    /// Decodes, processes and routes one record, and enqueues what it produces; the decode and
    /// process time goes into `processing`. `None` when the worker must stop (fatal produce
    /// error) or the lane was stopped mid-send.
    async fn handle(
        &self,
        state: &mut P::State,
        raw: RawRecord,
        processing: &mut LocalHistogram,
    ) -> Option<Pending> {
        self.metrics.record_consumed();
        let started = std::time::Instant::now();
        let result = match self.ctx.processor.decode(&raw) {
            Err(e) => Err(e),
            Ok(value) => {
                let record = Record { value, raw: &raw };
                AssertUnwindSafe(self.ctx.processor.process(state, &record))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        Err(ProcessError::Permanent(format!(
                            "processor panicked: {}",
                            panic_message(panic.as_ref())
                        )))
                    })
            }
        };
        processing.observe(started.elapsed().as_secs_f64());
        let changes = self.state_changes(state);
        let (kind, outputs) = match result {
            Ok(Outcome::Emit(mut outputs)) => {
                outputs.extend(changes);
                (Kind::Success, outputs)
            }
            Ok(Outcome::ReplayDropped) => (Kind::ReplayDropped, Vec::new()),
            Err(error) => {
                let routed = self.ctx.router.route(&raw, &error, now_ms());
                events::RecordFailed {
                    raw: &raw,
                    error: &error,
                    routed: &routed,
                }
                .emit();
                (Kind::Routed(routed.route), vec![routed.record])
            }
        };
        let mut sent = Vec::with_capacity(outputs.len());
        for out in outputs {
            match self.producer.send(&out).await {
                Ok(delivery) => sent.push((out, delivery)),
                Err(ProduceError::Rejected(e)) => {
                    // An output Kafka will never take: dead-letter the input instead. Outputs
                    // already enqueued for it are still delivered (at-least-once).
                    let error =
                        ProcessError::Permanent(format!("output to {} rejected: {e}", out.topic));
                    let routed = self.ctx.router.route(&raw, &error, now_ms());
                    events::RecordFailed {
                        raw: &raw,
                        error: &error,
                        routed: &routed,
                    }
                    .emit();
                    return match self.producer.send(&routed.record).await {
                        Ok(d) => {
                            sent.push((routed.record, d));
                            Some(Pending {
                                raw,
                                kind: Kind::Routed(routed.route),
                                sent,
                            })
                        }
                        Err(ProduceError::TransactionFailed(reason)) => {
                            self.transaction_failed(&reason);
                            None
                        }
                        Err(e) => {
                            self.ctx.fatal.raise(format!(
                                "cannot dead-letter {}: {e}",
                                raw.topic_partition()
                            ));
                            None
                        }
                    };
                }
                Err(ProduceError::Stopped) => return None,
                Err(ProduceError::Fatal(reason)) => {
                    self.ctx.fatal.raise(reason);
                    return None;
                }
                Err(ProduceError::TransactionFailed(reason)) => {
                    self.transaction_failed(&reason);
                    return None;
                }
            }
        }
        Some(Pending { raw, kind, sent })
    }
}

/// Awaits deliveries in offset order and advances the committable offset; each record comes
/// with the bytes `held_bytes` counts for it, released once it is done.
async fn ack_loop<P: Processor>(
    mut rx: mpsc::Receiver<(usize, Pending)>,
    ctx: Arc<LaneContext<P>>,
    producer: Arc<OutputProducer>,
    shared: Arc<LaneShared>,
    metrics: TopicMetrics,
) {
    let exactly_once = ctx.exactly_once();
    while let Some((held, pending)) = rx.recv().await {
        let mut kind = pending.kind;
        if exactly_once {
            // Exactly once: the transaction's commit delivers these or aborts; a failed
            // delivery makes the commit fail and everything since the last commit is redone.
            for (out, delivery) in pending.sent {
                producer.delivered(&out, delivery).await;
            }
            count_outcome(&metrics, &kind);
            shared.held_bytes.fetch_sub(held, Ordering::Relaxed);
            continue;
        }
        for (out, delivery) in pending.sent {
            match producer.acknowledged(&out, delivery, &shared.stop).await {
                Ok(()) => {}
                Err(ProduceError::Stopped) => return,
                Err(ProduceError::Fatal(reason) | ProduceError::TransactionFailed(reason)) => {
                    ctx.fatal.raise(reason);
                    return;
                }
                Err(ProduceError::Rejected(e)) => {
                    let error =
                        ProcessError::Permanent(format!("output to {} rejected: {e}", out.topic));
                    let routed = ctx.router.route(&pending.raw, &error, now_ms());
                    events::RecordFailed {
                        raw: &pending.raw,
                        error: &error,
                        routed: &routed,
                    }
                    .emit();
                    if let Err(e) = producer.produce(&routed.record, &shared.stop).await {
                        if !matches!(e, ProduceError::Stopped) {
                            ctx.fatal.raise(format!(
                                "cannot dead-letter {}: {e}",
                                pending.raw.topic_partition()
                            ));
                        }
                        return;
                    }
                    kind = Kind::Routed(routed.route);
                    break;
                }
            }
        }
        count_outcome(&metrics, &kind);
        shared
            .committable
            .store(pending.raw.offset + 1, Ordering::Release);
        shared.held_bytes.fetch_sub(held, Ordering::Relaxed);
    }
}

fn count_outcome(metrics: &TopicMetrics, kind: &Kind) {
    metrics.record_outcome(match kind {
        Kind::Success => RecordOutcome::Success,
        Kind::ReplayDropped => RecordOutcome::ReplayDropped,
        Kind::Routed(Route::Retry) => RecordOutcome::Retried,
        Kind::Routed(Route::DeadLetter) => RecordOutcome::DeadLettered,
    });
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_lane_capacity_also_bounds_the_queue() {
        let default = crate::config::WorkerConfig::DEFAULT_LANE_CAPACITY;
        assert_eq!(queue_for(default), QUEUE);
        assert_eq!(queue_for(16), 16);
        assert_eq!(queue_for(0), 1, "a channel needs room for one record");
    }
}
