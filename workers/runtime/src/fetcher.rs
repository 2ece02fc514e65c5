//! The consumer thread: fetch, dispatch to lanes, pause and resume, commit, rebalance.
//!
//! One OS thread per worker owns the librdkafka consumer and calls `poll`; rebalance
//! callbacks therefore run on it too and may block it (which is what a rebalance must do:
//! the partitions are released only when the callback returns).
//!
//! ```text
//!           poll ─► record ─► stash non-empty? ──yes──► append to stash
//!                               │ no                   (stash at lane capacity: pause)
//!                               ▼
//!                        lane.try_send ──full──► start a stash
//!   every loop: stashes move into lanes with room; a paused partition resumes when its
//!   stash is down to half the lane capacity and half its share of the buffer memory
//!   every commit interval: hand each lane's committable offset to the committer thread
//!            ([`crate::committer`]), which commits it (sync) while this thread goes on;
//!            exactly once, commit each transaction group whose transaction is due, one after
//!            the other (the lanes of the other groups go on meanwhile)
//!   assign:  create a lane per partition; it shares the state of its source partition
//!            (a source partition and the same partition number of its retry rungs share one
//!            state on this instance; a new source partition starts empty)
//!   revoke:  stop the lanes, wait for their in-flight record and acks, commit (sync), drop
//!            the lanes and their state, release
//!   lost:    stop and drop the lanes; commit nothing (another member may own them already);
//!            exactly once, abort every group's transaction and rewind the remaining lanes
//! ```
//!
//! Commits are synchronous, as Kafka Streams' are: the commit's completion is known where it
//! is issued, which is what moves the committed-offset gauge and observes end-to-end latency.
//! (rust-rdkafka never reports the completion of a manual asynchronous commit to the context:
//! the request carries no reply queue, fede1024/rust-rdkafka#856, so an async commit would
//! leave both frozen.) At-least-once, the round trip is waited for on the committer thread;
//! only the revoke's and the shutdown's final commits, after the lanes stopped, wait here.
//!
//! Two bounds pause a partition, whichever is reached first: `--lane-capacity` records in its
//! stash (its lane's queue holds at most as many again, [`lane::queue_for`]), or its share of
//! `--max-buffered-mib` (the budget divided by the partitions assigned) in bytes of the records
//! it holds from fetch to acknowledgement: stashed, queued, in processing, or awaiting
//! delivery together with their outputs. The first keeps one partition from hoarding; the
//! second keeps the worker's memory bounded however many partitions it is assigned (measured:
//! 64 partitions × 10,000 records held over 400 MiB before it existed). The total is
//! published as `streamfleet_buffered_bytes`.
//!
//! Pausing never loses or reorders records: librdkafka resumes fetching at the position after
//! the last record it handed over, and the stash holds the ones handed over but not yet queued.
//! Pausing is not free (librdkafka drops its prefetched records of the partition and the
//! re-fetch may wait behind a long-poll fetch, up to `fetch.wait.max.ms`), hence the
//! hysteresis: pause at the high-water mark, resume at half, so a paused partition still has
//! half a buffer of work while fetching restarts. A resume also wakes the leader's connection
//! thread, which librdkafka otherwise leaves asleep for up to a second ([`crate::wakeup`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::committer::{CommitQueue, Offsets};
use crate::connectivity::Connectivity;
use crate::events;
use crate::health::Readiness;
use crate::lane::{self, LaneContext, LaneHandle, Offered};
use crate::metrics::{Metrics, TopicMetrics, WorkerStats, bump};
use crate::processor::Processor;
use crate::progress::Progress;
use crate::record::{FastHash, RawRecord, TopicPartition};
use crate::restore::Restorer;
use crate::state::StateSlot;
use crate::store::StateStore;
use crate::transactions::{Finished, Transactions};
use crate::wakeup::LeaderWakeup;

/// How long `poll` blocks when nothing is paused, and when something is. The loop looks at
/// the stop token, the commit clock and the stashes between polls, so a worker told to stop
/// (SIGTERM, the end of a bounded input) first waits out the poll it is in. At 100 ms that
/// was 50 ms on average, which the exactly-once benchmark, whose runs end at the final
/// commit, counted as idle time. The stop cannot cut a
/// poll short instead: rust-rdkafka's `BaseConsumer::poll` polls again until its timeout is up
/// when librdkafka's queue wakes it with no event. The price is an idle worker's wake-ups:
/// 0.3–0.5 % of a core more than at 100 ms.
const POLL_IDLE: Duration = Duration::from_millis(10);
const POLL_PAUSED: Duration = Duration::from_millis(5);
/// Records taken from the consumer (without blocking, after the first) before the loop's
/// housekeeping: stashes drained, commit and publish clocks read once per burst, not per
/// record.
const BURST: usize = 256;
/// How often the lag gauges are published.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Records of one partition fetched but not yet taken by its lane.
#[derive(Default)]
struct Stash {
    queue: VecDeque<RawRecord>,
    /// [`RawRecord::footprint`] of `queue`.
    bytes: usize,
    paused: bool,
}

/// When a partition's stash pauses it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BufferBound {
    /// Records per partition (`--lane-capacity`).
    pub records: usize,
    /// Bytes for all partitions together (`--max-buffered-mib`).
    pub bytes: usize,
}

/// The consumer's context: the partition table and everything a rebalance needs.
pub(crate) struct FetchContext<P: Processor> {
    pub worker: String,
    pub group: String,
    pub lanes: DashMap<TopicPartition, LaneHandle, FastHash>,
    /// Per-partition state, keyed by source partition; dropped when the last lane using it
    /// is revoked or lost.
    states: DashMap<TopicPartition, Arc<StateSlot<P::State>>, FastHash>,
    /// First offset handed to each lane: where to rewind a partition with no commit yet.
    first_offsets: DashMap<TopicPartition, i64, FastHash>,
    stash: Mutex<HashMap<TopicPartition, Stash, FastHash>>,
    committed: DashMap<TopicPartition, i64, FastHash>,
    /// At-least-once: the offsets handed to the committer thread ([`crate::committer`]).
    commits: CommitQueue,
    topic_metrics: DashMap<Arc<str>, TopicMetrics, FastHash>,
    progress: Progress,
    pub lane_ctx: Arc<LaneContext<P>>,
    pub runtime: tokio::runtime::Handle,
    pub bound: BufferBound,
    pub revoke_timeout: Duration,
    pub metrics: Metrics,
    pub stats: Arc<WorkerStats>,
    pub readiness: Arc<Readiness>,
    /// Restores the state of each newly assigned source partition with a changelog.
    restorer: Restorer,
    /// Wakes the leader of each resumed partition (see [`crate::wakeup`]).
    wakeup: LeaderWakeup,
    /// Broker outages, logged once for all of the worker's clients.
    pub connectivity: Arc<Connectivity>,
}

impl<P: Processor> FetchContext<P> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        worker: String,
        group: String,
        lane_ctx: Arc<LaneContext<P>>,
        runtime: tokio::runtime::Handle,
        bound: BufferBound,
        revoke_timeout: Duration,
        metrics: Metrics,
        stats: Arc<WorkerStats>,
        restorer: Restorer,
        connectivity: Arc<Connectivity>,
    ) -> Self {
        Self {
            connectivity,
            progress: Progress::new(&worker, &group, metrics.clone()),
            worker,
            group,
            lanes: DashMap::default(),
            states: DashMap::default(),
            first_offsets: DashMap::default(),
            stash: Mutex::new(HashMap::default()),
            committed: DashMap::default(),
            commits: CommitQueue::default(),
            topic_metrics: DashMap::default(),
            lane_ctx,
            runtime,
            bound,
            revoke_timeout,
            metrics,
            stats,
            readiness: restorer.readiness.clone(),
            restorer,
            wakeup: LeaderWakeup::default(),
        }
    }

    fn topic_metrics(&self, topic: &Arc<str>) -> TopicMetrics {
        self.topic_metrics
            .entry(topic.clone())
            .or_insert_with(|| self.metrics.topic(&self.worker, topic, self.stats.clone()))
            .clone()
    }

    fn assign(&self, tpl: &TopicPartitionList) {
        let tps = partitions(tpl);
        for tp in &tps {
            if self.lanes.contains_key(tp) {
                continue;
            }
            let metrics = self.topic_metrics(&tp.topic);
            self.progress.assigned(tp, metrics.end_to_end.clone());
            metrics.assigned.inc();
            self.stats
                .assigned_partitions
                .fetch_add(1, Ordering::Relaxed);
            let source = self.source_partition(tp);
            let slot = self
                .states
                .entry(source.clone())
                .or_insert_with(|| {
                    let durable = self.restorer.changelog_of(&source.topic).is_some();
                    let store = self.lane_ctx.processor.new_state();
                    let slot = Arc::new(StateSlot::new(store, durable));
                    if durable {
                        self.restorer
                            .spawn(&self.runtime, slot.clone(), source.clone());
                    }
                    slot
                })
                .clone();
            let lane = lane::spawn(
                self.lane_ctx.clone(),
                tp.clone(),
                slot,
                metrics,
                lane::queue_for(self.bound.records),
                &self.runtime,
            );
            self.lanes.insert(tp.clone(), lane);
        }
        events::Rebalanced {
            worker: &self.worker,
            kind: "assigned",
            partitions: &tps,
        }
        .emit(&self.metrics);
    }

    fn source_partition(&self, tp: &TopicPartition) -> TopicPartition {
        TopicPartition::new(self.lane_ctx.router.source_of(&tp.topic), tp.partition)
    }

    /// Drops the states no remaining lane uses.
    fn drop_unused_states(&self, released: &[TopicPartition]) {
        for tp in released {
            let source = self.source_partition(tp);
            let in_use = self
                .lanes
                .iter()
                .any(|l| self.source_partition(l.key()) == source);
            if !in_use {
                self.states.remove(&source);
                if let Some(changelog) = self.restorer.changelog_of(&source.topic) {
                    self.readiness
                        .forget(&TopicPartition::new(changelog, source.partition).to_string());
                }
            }
        }
    }

    /// Removes the lanes of `tps` from the table and tells them to stop; drops their stashes.
    fn take_lanes(&self, tps: &[TopicPartition]) -> Vec<(TopicPartition, LaneHandle)> {
        let mut stash = self.stash.lock().expect("stash lock");
        let mut taken = Vec::new();
        for tp in tps {
            stash.remove(tp);
            if let Some((tp, lane)) = self.lanes.remove(tp) {
                lane.shared.stop.cancel();
                self.topic_metrics(&tp.topic).assigned.dec();
                self.stats
                    .assigned_partitions
                    .fetch_sub(1, Ordering::Relaxed);
                taken.push((tp, lane));
            }
        }
        taken
    }

    /// Forgets everything about partitions no longer owned (after their last commit).
    fn forget(&self, tps: &[TopicPartition]) {
        for tp in tps {
            self.progress.released(tp);
            self.committed.remove(tp);
            self.first_offsets.remove(tp);
        }
    }

    /// Stops the lanes of `tps`, waits (up to `deadline`) for their in-flight records, and
    /// returns their final committable offsets.
    fn stop_lanes(&self, tps: &[TopicPartition], deadline: Instant) -> Vec<(TopicPartition, i64)> {
        let runtime = self.runtime.clone();
        let mut finished = Vec::new();
        for (tp, lane) in self.take_lanes(tps) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut task = lane.task;
            let done = runtime
                .block_on(async { tokio::time::timeout(remaining, &mut task).await.is_ok() });
            if !done {
                tracing::warn!(worker = %self.worker, partition = %tp,
                    "lane did not finish in time; committing what was acknowledged");
                task.abort();
            }
            finished.push((tp, lane.shared.committable.load(Ordering::Acquire)));
        }
        finished
    }

    /// Stops and drops the lanes of `tps` without committing; returns their tasks.
    fn drop_lanes(&self, tps: &[TopicPartition]) -> Vec<tokio::task::JoinHandle<()>> {
        let tasks = self
            .take_lanes(tps)
            .into_iter()
            .map(|(_, lane)| lane.task)
            .collect();
        self.forget(tps);
        tasks
    }

    fn release(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let tps = partitions(tpl);
        if consumer.assignment_lost() {
            // Whatever the committer has not taken belongs to partitions another member may
            // own already; waiting for the lock lets a commit in flight finish first.
            drop(self.commits.lock_dropping_pending());
            for task in self.drop_lanes(&tps) {
                task.abort();
            }
            self.drop_unused_states(&tps);
            events::Rebalanced {
                worker: &self.worker,
                kind: "lost",
                partitions: &tps,
            }
            .emit(&self.metrics);
            if self.lane_ctx.exactly_once() {
                // The open transactions hold work of partitions another member owns now.
                for group in 0..self.lane_ctx.outputs.len() {
                    self.abort_transaction(consumer, group, "partitions lost");
                }
            }
            return;
        }
        let finished = self.stop_lanes(&tps, Instant::now() + self.revoke_timeout);
        if self.lane_ctx.exactly_once() {
            self.commit_transactions(consumer, &finished);
        } else {
            self.commit_offsets(consumer, &finished);
        }
        self.forget(&tps);
        self.drop_unused_states(&tps);
        events::Rebalanced {
            worker: &self.worker,
            kind: "revoked",
            partitions: &tps,
        }
        .emit(&self.metrics);
    }

    /// The transaction group of a partition (see [`LaneContext::group_of`]).
    fn group_of(&self, tp: &TopicPartition) -> usize {
        self.lane_ctx.group_of(tp.partition)
    }

    /// Exactly once: `group`'s transaction.
    fn transactions(&self, group: usize) -> Arc<Transactions> {
        self.lane_ctx.outputs[group]
            .txns
            .clone()
            .expect("exactly-once")
    }

    /// Exactly once: commits every group's open transaction, each with the `extra` offsets of
    /// its lanes just stopped.
    pub fn commit_transactions(
        &self,
        consumer: &BaseConsumer<Self>,
        extra: &[(TopicPartition, i64)],
    ) {
        for group in 0..self.lane_ctx.outputs.len() {
            let extra: Vec<_> = extra
                .iter()
                .filter(|(tp, _)| self.group_of(tp) == group)
                .cloned()
                .collect();
            self.commit_transaction(consumer, group, &extra);
        }
    }

    /// Exactly once: commits `group`'s open transaction with the committable offset of every
    /// lane of the group and the `extra` offsets of its lanes just stopped. An abort rewinds
    /// the group's partitions.
    pub fn commit_transaction(
        &self,
        consumer: &BaseConsumer<Self>,
        group: usize,
        extra: &[(TopicPartition, i64)],
    ) {
        let txns = self.transactions(group);
        let gate = self.runtime.block_on(txns.gate.write());
        let mut offsets: Vec<(TopicPartition, i64)> = self
            .lanes
            .iter()
            .filter(|l| self.group_of(l.key()) == group)
            .map(|l| {
                (
                    l.key().clone(),
                    l.shared.committable.load(Ordering::Acquire),
                )
            })
            .chain(extra.iter().cloned())
            .filter(|(tp, o)| *o >= 0 && self.committed.get(tp).is_none_or(|c| *c < *o))
            .collect();
        offsets.sort();
        offsets.dedup();
        let mut tpl = TopicPartitionList::new();
        for (tp, o) in &offsets {
            let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*o));
        }
        match txns.commit(consumer, &tpl) {
            Ok(Finished::Committed) => {
                let now = crate::lane::now_ms();
                for (tp, o) in offsets {
                    self.progress.committed(&tp, o, now);
                    self.committed.insert(tp, o);
                }
            }
            Ok(Finished::Empty) => {}
            Ok(Finished::Aborted(reason)) => self.rewind(consumer, group, &reason),
            Err(fatal) => self.lane_ctx.fatal.raise(fatal.0),
        }
        drop(gate);
    }

    fn abort_transaction(&self, consumer: &BaseConsumer<Self>, group: usize, reason: &str) {
        let txns = self.transactions(group);
        let gate = self.runtime.block_on(txns.gate.write());
        match txns.abort(reason) {
            Ok(_) => self.rewind(consumer, group, reason),
            Err(fatal) => self.lane_ctx.fatal.raise(fatal.0),
        }
        drop(gate);
    }

    /// After an abort of `group`'s transaction (the caller holds its write gate, so no lane
    /// of the group is inside a record): stops every lane of the group, drops its uncommitted
    /// state, seeks its partition back to the last committed offset, and starts it again
    /// (restoring durable state from its changelog).
    fn rewind(&self, consumer: &BaseConsumer<Self>, group: usize, reason: &str) {
        let tps: Vec<TopicPartition> = self
            .lanes
            .iter()
            .map(|l| l.key().clone())
            .filter(|tp| self.group_of(tp) == group)
            .collect();
        let targets: Vec<(TopicPartition, Option<i64>)> = tps
            .iter()
            .map(|tp| {
                let target = self
                    .committed
                    .get(tp)
                    .map(|c| *c)
                    .or_else(|| self.first_offsets.get(tp).map(|f| *f));
                (tp.clone(), target)
            })
            .collect();
        let paused: Vec<TopicPartition> = {
            let stash = self.stash.lock().expect("stash lock");
            tps.iter()
                .filter(|tp| stash.get(*tp).is_some_and(|s| s.paused))
                .cloned()
                .collect()
        };
        let tasks = self.drop_lanes(&tps);
        let runtime = self.runtime.clone();
        runtime.block_on(async {
            for task in tasks {
                let _ = task.await;
            }
        });
        for tp in &tps {
            self.states.remove(&self.source_partition(tp));
        }
        for (tp, target) in &targets {
            if let Some(offset) = target
                && let Err(e) = consumer.seek(
                    &tp.topic,
                    tp.partition,
                    Offset::Offset(*offset),
                    Duration::from_secs(10),
                )
            {
                self.lane_ctx.fatal.raise(format!(
                    "cannot rewind {tp} to {offset} after an abort: {e}"
                ));
                return;
            }
        }
        for tp in &paused {
            self.resume(consumer, tp);
        }
        let mut tpl = TopicPartitionList::new();
        for tp in &tps {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        self.assign(&tpl);
        tracing::warn!(worker = %self.worker, partitions = %events::summarize(&tps), %reason,
            "transaction aborted: partitions rewound to their last committed offsets");
    }

    /// Commits (synchronously, on the calling thread) the given offsets that are ahead of what
    /// is committed, and drops what the committer has not taken: the revoke's and the
    /// shutdown's final commit, made after the lanes stopped, is the newest there can be.
    fn commit_offsets(&self, consumer: &BaseConsumer<Self>, offsets: &[(TopicPartition, i64)]) {
        let _lock = self.commits.lock_dropping_pending();
        self.commit_locked(consumer, offsets);
    }

    /// The committer thread's loop: commits what the consumer thread hands over, until the
    /// queue is stopped.
    fn run_committer(&self, consumer: &BaseConsumer<Self>) {
        while self.commits.wait() {
            let _lock = self.commits.lock();
            // A revoke may have dropped them while this thread waited for the lock.
            if let Some(offsets) = self.commits.take() {
                self.commit_locked(consumer, &offsets);
            }
        }
    }

    /// Commits the offsets ahead of what is committed; call holding the commit lock.
    fn commit_locked(&self, consumer: &BaseConsumer<Self>, offsets: &[(TopicPartition, i64)]) {
        let ahead: Vec<&(TopicPartition, i64)> = offsets
            .iter()
            .filter(|(tp, offset)| self.is_ahead(tp, *offset))
            .collect();
        if ahead.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (tp, offset) in &ahead {
            let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset));
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                let now = crate::lane::now_ms();
                for (tp, offset) in ahead {
                    self.committed.insert(tp.clone(), *offset);
                    self.progress.committed(tp, *offset, now);
                }
            }
            Err(e) => events::CommitFailed {
                worker: &self.worker,
                error: &e,
            }
            .emit(&self.metrics),
        }
    }

    /// Every lane's committable offset that is ahead of the committed one.
    fn due_offsets(&self) -> Offsets {
        self.lanes
            .iter()
            .map(|l| {
                (
                    l.key().clone(),
                    l.shared.committable.load(Ordering::Acquire),
                )
            })
            .filter(|(tp, offset)| self.is_ahead(tp, *offset))
            .collect()
    }

    /// Whether committing `offset` would move `tp` forward.
    fn is_ahead(&self, tp: &TopicPartition, offset: i64) -> bool {
        offset >= 0 && self.committed.get(tp).is_none_or(|c| *c < offset)
    }

    fn dispatch(&self, consumer: &BaseConsumer<Self>, raw: RawRecord) {
        let tp = raw.topic_partition();
        let mut stashes = self.stash.lock().expect("stash lock");
        let bytes = raw.footprint();
        if let Some(stash) = stashes.get_mut(&tp) {
            self.progress.fetched(&tp, raw.offset, raw.timestamp);
            stash.bytes += bytes;
            stash.queue.push_back(raw);
            if !stash.paused {
                let held = self
                    .lanes
                    .get(&tp)
                    .map_or(0, |l| l.shared.held_bytes.load(Ordering::Relaxed));
                if stash.queue.len() >= self.bound.records
                    || stash.bytes + held >= self.partition_bytes()
                {
                    stash.paused = true;
                    self.paused(consumer, &tp);
                }
            }
            return;
        }
        let Some(lane) = self.lanes.get(&tp) else {
            tracing::debug!(partition = %tp, offset = raw.offset,
                "record of a partition no longer assigned; left uncommitted for its owner");
            return;
        };
        self.progress.fetched(&tp, raw.offset, raw.timestamp);
        if !self.first_offsets.contains_key(&tp) {
            self.first_offsets.insert(tp.clone(), raw.offset);
        }
        let held = lane.shared.held_bytes.load(Ordering::Relaxed);
        if held > 0 && held + bytes > self.partition_bytes() {
            // The lane holds the partition's share of memory already.
            stashes.insert(
                tp.clone(),
                Stash {
                    bytes,
                    queue: VecDeque::from([raw]),
                    paused: true,
                },
            );
            self.paused(consumer, &tp);
            return;
        }
        match lane.offer(raw, bytes) {
            Offered::Queued => {}
            Offered::Full(raw) => {
                stashes.insert(
                    tp,
                    Stash {
                        bytes,
                        queue: VecDeque::from([raw]),
                        paused: false,
                    },
                );
            }
            Offered::Closed(raw) => {
                tracing::debug!(partition = %tp, offset = raw.offset, "lane closed; record left uncommitted");
            }
        }
    }

    /// Pauses `tp` (its stash is already marked) and counts it.
    fn paused(&self, consumer: &BaseConsumer<Self>, tp: &TopicPartition) {
        let metrics = self.topic_metrics(&tp.topic);
        metrics.pauses.inc();
        bump(&metrics.stats.pauses);
        pause(consumer, tp, true);
    }

    /// A partition's share of the buffer memory: the budget over the assigned partitions.
    fn partition_bytes(&self) -> usize {
        let assigned = self
            .stats
            .assigned_partitions
            .load(Ordering::Relaxed)
            .max(1);
        self.bound.bytes / assigned as usize
    }

    /// Resumes a paused partition and wakes its leader's connection thread.
    fn resume(&self, consumer: &BaseConsumer<Self>, tp: &TopicPartition) {
        pause(consumer, tp, false);
        self.wakeup.wake(tp);
    }

    /// Moves stashed records into lanes that have room; resumes partitions whose stash is
    /// down to half of both bounds. Returns whether anything is still stashed.
    fn drain_stashes(&self, consumer: &BaseConsumer<Self>) -> bool {
        let mut stashes = self.stash.lock().expect("stash lock");
        if stashes.is_empty() {
            return false;
        }
        let (low_records, low_bytes) = (self.bound.records / 2, self.partition_bytes() / 2);
        stashes.retain(|tp, stash| {
            let Some(lane) = self.lanes.get(tp) else {
                return false;
            };
            while let Some(raw) = stash.queue.pop_front() {
                let bytes = raw.footprint();
                match lane.offer(raw, bytes) {
                    Offered::Queued => stash.bytes -= bytes,
                    Offered::Full(raw) => {
                        stash.queue.push_front(raw);
                        break;
                    }
                    Offered::Closed(_) => {
                        stash.queue.clear();
                        stash.bytes = 0;
                        break;
                    }
                }
            }
            let held = lane.shared.held_bytes.load(Ordering::Relaxed);
            if stash.paused && stash.queue.len() <= low_records && stash.bytes + held <= low_bytes {
                stash.paused = false;
                self.resume(consumer, tp);
            }
            !stash.queue.is_empty() || stash.paused
        });
        !stashes.is_empty()
    }
}

fn pause<C: ConsumerContext>(consumer: &BaseConsumer<C>, tp: &TopicPartition, pause: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.topic, tp.partition);
    let result = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    match result {
        Ok(()) => tracing::debug!(partition = %tp, pause, "lane backpressure"),
        Err(e) => tracing::warn!(partition = %tp, pause, error = %e, "pause/resume failed"),
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl<P: Processor> FetchContext<P> {
    /// Publishes the lag gauges (called once a second from the fetch loop).
    fn publish_progress(&self) {
        let published = self.progress.publish(crate::lane::now_ms(), |tp| {
            self.lanes
                .get(tp)
                .map(|l| l.shared.committable.load(Ordering::Acquire))
                .filter(|c| *c >= 0)
        });
        for topic in self.lane_ctx.router.subscription() {
            let max = published.max_lag.get(topic.as_str()).copied().unwrap_or(0);
            self.metrics
                .set_lag_max(&self.worker, &self.group, &topic, max);
            if self.lane_ctx.router.is_rung(&topic) {
                let backlog = published
                    .topic_lag
                    .get(topic.as_str())
                    .copied()
                    .unwrap_or(0);
                self.metrics
                    .set_retry_backlog(&self.worker, &topic, backlog);
            }
        }
        self.publish_state();
        self.stats.lag.store(published.total_lag, Ordering::Relaxed);
        self.metrics.set_buffered_bytes(
            &self.worker,
            self.stats.buffered_bytes.load(Ordering::Relaxed),
        );
    }

    /// Publishes the state gauges per source topic: entries held, keys waiting in order,
    /// records parked behind them, and how long the longest-waiting key has waited. A state
    /// locked right now by its lane is read at the next publish.
    fn publish_state(&self) {
        let now = crate::lane::now_ms();
        let mut totals: HashMap<Arc<str>, StateTotals, FastHash> = HashMap::default();
        for entry in self.states.iter() {
            let Ok(state) = entry.value().state.try_lock() else {
                continue;
            };
            let t = totals.entry(entry.key().topic.clone()).or_default();
            t.entries += state.store.entries() as i64;
            t.keys += state.order.waiting_keys() as i64;
            t.records += state.order.parked_records() as i64;
            t.oldest_since = match (t.oldest_since, state.order.oldest_since()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let m = &self.metrics.state;
        for (source, _) in self.lane_ctx.router.sources() {
            let t = totals.get(source.as_str()).copied().unwrap_or_default();
            let labels = [self.worker.as_str(), source.as_str()];
            m.entries.with_label_values(&labels).set(t.entries);
            m.keys_waiting.with_label_values(&labels).set(t.keys);
            m.records_waiting.with_label_values(&labels).set(t.records);
            m.oldest_wait.with_label_values(&labels).set(
                t.oldest_since
                    .map_or(0.0, |since| (now - since).max(0) as f64 / 1000.0),
            );
        }
    }

    /// Bytes held by the stashes and the lanes (queued, in processing, awaiting acks).
    fn buffered_bytes(&self) -> usize {
        let stashed: usize = self
            .stash
            .lock()
            .expect("stash lock")
            .values()
            .map(|s| s.bytes)
            .sum();
        let held: usize = self
            .lanes
            .iter()
            .map(|l| l.shared.held_bytes.load(Ordering::Relaxed))
            .sum();
        stashed + held
    }
}

impl<P: Processor> ClientContext for FetchContext<P> {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.connectivity.client_log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.connectivity.client_error(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.connectivity.statistics(&statistics);
        self.metrics
            .consumer_statistics(&self.worker, statistics.rxmsgs);
        for (name, topic) in &statistics.topics {
            for (id, p) in &topic.partitions {
                if *id < 0 {
                    continue;
                }
                // The last stable offset is what a read_committed consumer can reach (it is
                // the high watermark when no transaction is open).
                let high = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                if high >= 0 {
                    self.progress
                        .watermark(&TopicPartition::new(name.as_str(), *id), high);
                }
            }
        }
    }
}

impl<P: Processor> ConsumerContext for FetchContext<P> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.assign(tpl),
            Rebalance::Revoke(tpl) => self.release(consumer, tpl),
            Rebalance::Error(e) => {
                tracing::warn!(worker = %self.worker, error = %e, "rebalance error")
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.readiness.assigned(self.lanes.len());
        }
    }
}

/// Interns topic names so records share one allocation per topic.
#[derive(Default)]
pub(crate) struct TopicNames(HashMap<String, Arc<str>, FastHash>);

impl TopicNames {
    fn get(&mut self, topic: &str) -> Arc<str> {
        if let Some(t) = self.0.get(topic) {
            return t.clone();
        }
        let t: Arc<str> = topic.into();
        self.0.insert(topic.to_owned(), t.clone());
        t
    }
}

pub(crate) fn raw_record(names: &mut TopicNames, m: &BorrowedMessage<'_>) -> RawRecord {
    RawRecord::from_message(m, names.get(m.topic()))
}

/// Runs the fetch loop until `stop` fires, then shuts down within `shutdown_timeout`:
/// stop the lanes (in-flight records finish), flush, commit synchronously, close (leave the
/// group). Returns whether the shutdown finished in time.
pub(crate) fn run<P: Processor>(
    consumer: BaseConsumer<FetchContext<P>>,
    stop: tokio_util::sync::CancellationToken,
    commit_interval: Duration,
    commit_records: u64,
    shutdown_timeout: Duration,
) -> bool {
    let consumer = Arc::new(consumer);
    let ctx = consumer.context().clone();
    let wakeup = match ctx.wakeup.start(Arc::downgrade(&consumer), &ctx.worker) {
        Ok(running) => Some(running),
        Err(e) => {
            tracing::warn!(worker = %ctx.worker, error = %e,
                "cannot start the wake-up thread; resumed partitions may wait up to 1 s");
            None
        }
    };
    // At-least-once commits run on their own thread (see [`crate::committer`]); if it cannot
    // be started, this thread commits, as it did before.
    let committer = if ctx.lane_ctx.exactly_once() {
        None
    } else {
        let for_thread = consumer.clone();
        match std::thread::Builder::new()
            .name("sf-commit".into())
            .spawn(move || for_thread.context().run_committer(&for_thread))
        {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(worker = %ctx.worker, error = %e,
                    "cannot start the committer thread; the consumer thread commits");
                None
            }
        }
    };
    let mut names = TopicNames::default();
    let mut last_commit = Instant::now();
    let mut last_publish = Instant::now();
    let mut paused = false;
    while !stop.is_cancelled() {
        let idle = if ctx.lane_ctx.exactly_once() {
            POLL_IDLE.min(commit_interval)
        } else {
            POLL_IDLE
        };
        let mut wait = if paused { POLL_PAUSED } else { idle };
        for _ in 0..BURST {
            match consumer.poll(std::mem::take(&mut wait)) {
                Some(Ok(m)) => {
                    let raw = raw_record(&mut names, &m);
                    ctx.dispatch(&consumer, raw);
                }
                Some(Err(e)) => {
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        ctx.lane_ctx
                            .fatal
                            .raise(format!("consumer fatal error {code:?}: {reason}"));
                    } else {
                        ctx.connectivity.consumer_error(&e);
                    }
                    break;
                }
                None => break,
            }
        }
        paused = ctx.drain_stashes(&consumer);
        ctx.stats
            .buffered_bytes
            .store(ctx.buffered_bytes() as i64, Ordering::Relaxed);
        if ctx.lane_ctx.exactly_once() {
            for (group, output) in ctx.lane_ctx.outputs.iter().enumerate() {
                if output
                    .txns
                    .as_ref()
                    .is_some_and(|t| t.due(commit_interval, commit_records))
                {
                    ctx.commit_transaction(&consumer, group, &[]);
                }
            }
        } else if last_commit.elapsed() >= commit_interval {
            let offsets = ctx.due_offsets();
            if !offsets.is_empty() {
                match committer {
                    Some(_) => ctx.commits.offer(offsets),
                    None => ctx.commit_offsets(&consumer, &offsets),
                }
            }
            last_commit = Instant::now();
        }
        if last_publish.elapsed() >= PUBLISH_INTERVAL {
            ctx.publish_progress();
            last_publish = Instant::now();
        }
    }

    let deadline = Instant::now() + shutdown_timeout;
    ctx.commits.stop();
    if let Some(handle) = committer {
        // It finishes the commit in flight; the final commit below supersedes what it had not
        // taken.
        let _ = handle.join();
    }
    tracing::info!(worker = %ctx.worker, "shutting down: finishing in-flight records");
    let tps: Vec<TopicPartition> = ctx.lanes.iter().map(|l| l.key().clone()).collect();
    let lanes_in_flight = tps.len();
    let finished = ctx.stop_lanes(&tps, deadline);
    // Every producer is flushed, even after one failed to.
    let flushed: Vec<bool> = ctx
        .lane_ctx
        .outputs
        .iter()
        .map(|o| {
            o.producer
                .flush(deadline.saturating_duration_since(Instant::now()))
                .is_ok()
        })
        .collect();
    let flushed = flushed.iter().all(|ok| *ok);
    if ctx.lane_ctx.exactly_once() {
        ctx.commit_transactions(&consumer, &finished);
    } else {
        ctx.commit_offsets(&consumer, &finished);
    }
    ctx.forget(&tps);
    if let Some(running) = wakeup {
        ctx.wakeup.stop(running);
    }
    drop(consumer);
    let in_time = Instant::now() <= deadline && flushed;
    tracing::info!(worker = %ctx.worker, lanes = lanes_in_flight, in_time, "consumer closed");
    in_time
}

/// One source topic's state, summed over its assigned partitions (see `publish_state`).
#[derive(Debug, Default, Clone, Copy)]
struct StateTotals {
    entries: i64,
    keys: i64,
    records: i64,
    /// Since when (epoch ms) the longest-waiting key has waited.
    oldest_since: Option<i64>,
}
