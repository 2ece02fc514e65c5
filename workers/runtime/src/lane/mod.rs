//! One partition's lane: strict offset order within the partition, and the committable offset.
//!
//! ```text
//!  fetcher ──try_send──► [queue of 8192] ──► lane task ─────────────────────► ack task
//!   (full: stash; stash                       wait for the state's restore   await every output
//!    at capacity: pause)                      decode, process (state locked) then (at least
//!                                             route failures, key order      once) the state's
//!                                             enqueue outputs                changelog writes;
//!                                                                            committable =
//!                                                                            offset + 1
//! ```
//!
//! At least once, the lane task never waits for the broker: it enqueues a record's outputs and
//! moves on, and the ack task awaits the deliveries in offset order, then writes the record's
//! state changes to the changelog and awaits those, so `committable` only ever covers records
//! whose every output (or retry/dead-letter record) and state change is acknowledged ([`ack`]).
//! A state change is written only after the outputs it stands for: a restore never finds an
//! effect whose outputs could be missing. The fetcher commits `committable`; nothing else does.
//!
//! Exactly once, the lane holds its transaction group's gate (shared) while it processes a
//! record and enqueues what it produces on the group's producer, state changes included, then
//! marks the offset committable at once: the commit of the group's transaction delivers the
//! outputs and commits the offsets together (see [`crate::transactions`]). The ack task only
//! counts deliveries.
//!
//! Before its first record a lane waits until its source partition's state is restored
//! ([`crate::restore`]). What one record does to the state and to key order is in
//! [`process`].
//!
//! A lane on a retry rung holds each record until its due time before processing it; while it
//! waits its queue fills and the fetcher pauses the partition.
//!
//! Stopping (revoke, shutdown) cancels `stop`: the record being processed finishes, queued
//! records are dropped (they are not committed, so the next owner fetches them again), the ack
//! task drains what was already sent, and the task ends.

mod ack;
mod position;
mod process;

pub(crate) use position::{Observed, Position};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events;
use crate::guarantee::Guarantee;
use crate::headers;
use crate::metrics::{RecordOutcome, TopicMetrics};
use crate::processor::{ErrorClass, Processor};
use crate::producer::{Delivery, OutputProducer};
use crate::record::{OutputRecord, RawRecord, TopicPartition};
use crate::routing::{FailureRouter, Route, Routed};
use crate::state::{PartitionState, StateSlot};

/// Records a lane takes from its queue at once (one concurrency permit per batch).
pub const BATCH: usize = 64;
/// The lane's queue; the partition's buffer beyond it is the fetcher's stash. The fetcher
/// refills queues once per loop, and a loop may wait in `poll` for a few milliseconds, or
/// (exactly once) commit transaction groups one after the other, not refilling meanwhile: the
/// queue must hold more work than that. With 64 (one batch) lanes starved between refills and
/// a backlog drained at half the speed; with 1024 an exactly-once worker kept 1.70 cores busy
/// against 1.77 with 8192, which drained it 9 % faster.
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
            events::FatalError { reason: &reason }.emit();
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
    /// The changelog topic of each source topic whose state is durable.
    pub changelogs: HashMap<String, String>,
    /// The source topics whose records keep key order through retries (`ordering: key`).
    pub key_ordered: HashSet<String>,
    /// How much may be parked behind waiting keys, per source partition, before its lane
    /// stops taking records.
    pub waiting: WaitingBound,
}

/// Bounds of the records parked behind waiting keys of one source partition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitingBound {
    pub records: usize,
    pub bytes: usize,
}

/// A transaction group: a producer and the guarantee its records commit under.
#[derive(Clone)]
pub(crate) struct Output {
    pub producer: Arc<OutputProducer>,
    /// Exactly once: the group's open transaction and its gate.
    pub guarantee: Guarantee,
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

    /// Whether the worker runs exactly once (every group has the same guarantee).
    pub fn exactly_once(&self) -> bool {
        self.outputs[0].guarantee.is_exactly_once()
    }
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
    /// The offsets handed over so far; `None` until the first record.
    pub position: Option<Position>,
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

/// How a record left its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Success,
    ReplayDropped,
    /// Sent to a retry rung.
    Retried,
    /// Sent to the dead-letter topic, for this reason.
    DeadLettered(ErrorClass),
    /// Parked behind its key's record in the retry path.
    Parked,
}

impl Kind {
    /// How a record that failed left its lane.
    fn routed(routed: &Routed) -> Self {
        match routed.route {
            Route::Retry => Kind::Retried,
            Route::DeadLetter => Kind::DeadLettered(routed.class),
        }
    }
}

/// A processed record whose outputs are in flight.
struct Pending {
    raw: RawRecord,
    kind: Kind,
    sent: Vec<(OutputRecord, Delivery)>,
    /// Outcomes of the parked records processed with it (it was their key's head).
    also: Vec<Kind>,
    /// At least once: the state's changelog records, written once `sent` is acknowledged.
    changes: Vec<OutputRecord>,
}

/// What librdkafka and rust-rdkafka hold for one produced record until it is acknowledged,
/// beyond librdkafka's copy of its bytes: the message struct (`rd_kafka_msg_t`), its share of
/// the delivery report, and the delivery future's channel. An estimate from their sizes,
/// checked against peak RSS: with only the records' own bytes counted, each budgeted MiB cost
/// about 2.8 MiB of RSS.
const PRODUCED_OVERHEAD: usize = 320;

impl Pending {
    /// What processing added to the record's footprint: this struct in the ack queue, and
    /// each output twice (ours, and librdkafka's copy) with librdkafka's per-message state.
    fn processing_footprint(&self) -> usize {
        let produced = |out: &OutputRecord| 2 * out.footprint() + PRODUCED_OVERHEAD;
        std::mem::size_of::<Self>()
            + self
                .sent
                .iter()
                .map(|(out, _)| produced(out))
                .sum::<usize>()
            + self.changes.iter().map(produced).sum::<usize>()
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
    let source = TopicPartition::new(ctx.router.source_of(&tp.topic), tp.partition);
    let lane = Lane {
        is_rung: ctx.router.is_rung(&tp.topic),
        changelog: ctx.changelogs.get(&*source.topic).cloned(),
        key_ordered: ctx.key_ordered.contains(&*source.topic),
        source,
        producer: output.producer,
        guarantee: output.guarantee,
        ctx,
        shared: shared.clone(),
        state: slot.state.clone(),
        slot,
        metrics,
    };
    let task = runtime.spawn(lane.run(rx));
    LaneHandle {
        tx,
        shared,
        task,
        position: None,
    }
}

struct Lane<P: Processor> {
    ctx: Arc<LaneContext<P>>,
    /// The producer of this lane's transaction group (the worker's one at least once).
    producer: Arc<OutputProducer>,
    /// Exactly once: the transaction of this lane's group.
    guarantee: Guarantee,
    shared: Arc<LaneShared>,
    state: Arc<Mutex<PartitionState<P::State>>>,
    slot: Arc<StateSlot<P::State>>,
    metrics: TopicMetrics,
    is_rung: bool,
    /// The source partition (this partition, or the one whose rung it is).
    source: TopicPartition,
    /// The source's changelog topic, when its state is durable.
    changelog: Option<String>,
    /// The source keeps key order through retries.
    key_ordered: bool,
}

impl<P: Processor> Lane<P> {
    async fn run(self, mut rx: mpsc::Receiver<RawRecord>) {
        let stop = self.shared.stop.clone();
        let restored = tokio::select! {
            biased;
            _ = stop.cancelled() => false,
            ready = self.slot.ready() => ready,
        };
        if !restored {
            return;
        }
        let (ack_tx, ack_rx) = mpsc::channel(MAX_UNACKED);
        let acker = tokio::spawn(ack::ack_loop(
            ack_rx,
            self.ctx.clone(),
            self.producer.clone(),
            self.shared.clone(),
            self.metrics.clone(),
        ));
        let mut batch = Vec::with_capacity(BATCH);
        // Processing times are observed here and published once per batch (and when the lane
        // waits or ends: dropping it publishes too): the topic's histogram is shared by all
        // its lanes, and an observation per record made them contend for its atomics across
        // cores.
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
                loop {
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
                    // Past the bound of parked records the source lane takes no more (its
                    // queue fills and the fetcher pauses it) until the rungs' lanes, which
                    // keep going, have processed some.
                    let full = self.key_ordered
                        && !self.is_rung
                        && state
                            .as_ref()
                            .expect("locked above")
                            .order
                            .is_full(self.ctx.waiting.records, self.ctx.waiting.bytes);
                    if !full {
                        break;
                    }
                    permit = None;
                    state = None;
                    processing.flush();
                    tokio::select! {
                        _ = stop.cancelled() => break 'lane,
                        _ = tokio::time::sleep(WAITING_FULL_BACKOFF) => {}
                    }
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
                let Ok(gate) = self.guarantee.enter(&stop).await else {
                    break 'lane;
                };
                let offset = raw.offset;
                let Some(pending) = self.handle(guard, raw, &mut processing).await else {
                    break 'lane;
                };
                if self.guarantee.is_exactly_once() {
                    self.shared.committable.store(offset + 1, Ordering::Release);
                    self.guarantee.note_record();
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
}

/// How long a source lane waits before it looks again whether its parked records are below
/// their bound.
const WAITING_FULL_BACKOFF: Duration = Duration::from_millis(20);

fn count_outcome(metrics: &TopicMetrics, kind: Kind) {
    metrics.record_outcome(match kind {
        Kind::Success => RecordOutcome::Success,
        Kind::ReplayDropped => RecordOutcome::ReplayDropped,
        Kind::Retried => RecordOutcome::Retried,
        Kind::DeadLettered(class) => RecordOutcome::DeadLettered(class),
        Kind::Parked => RecordOutcome::Parked,
    });
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
