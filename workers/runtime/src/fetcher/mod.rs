//! The consumer thread: fetch, dispatch to lanes, pause and resume, commit, rebalance.
//!
//! This file holds the consumer's context and the fetch loop; each of its jobs has a file:
//! `assignment` (lanes for assigned partitions, revoke, loss), `backpressure` (stashes, pause
//! and resume), `commits` (at least once: the offsets due; [`crate::committer`] commits
//! them), `transactional` (exactly once: commit, abort, rewind) and `reporting` (the gauges).
//! Committed offsets are kept in one place, [`crate::progress`], whichever path commits.
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
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::committer::{Committer, Offsets};
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

mod assignment;
mod backpressure;
mod commits;
mod reporting;
mod transactional;

use backpressure::Stash;

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
    stash: Mutex<HashMap<TopicPartition, Stash, FastHash>>,
    /// At-least-once: the commits ([`crate::committer`]).
    pub committer: Committer,
    topic_metrics: DashMap<Arc<str>, TopicMetrics, FastHash>,
    /// Where each partition stands, its committed offset included.
    progress: Arc<Progress>,
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
        let progress = Arc::new(Progress::new(&worker, &group, metrics.clone()));
        Self {
            connectivity,
            committer: Committer::new(&worker, metrics.clone(), progress.clone()),
            progress,
            worker,
            group,
            lanes: DashMap::default(),
            states: DashMap::default(),
            stash: Mutex::new(HashMap::default()),
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
            Rebalance::Error(e) => events::RebalanceFailed {
                worker: &self.worker,
                error: e,
            }
            .emit(),
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
            events::ThreadNotStarted {
                worker: &ctx.worker,
                thread: "sf-wakeup",
                without: "resumed partitions may wait up to 1 s",
                error: &e,
            }
            .emit();
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
            .spawn(move || for_thread.context().committer.run(&for_thread))
        {
            Ok(handle) => Some(handle),
            Err(e) => {
                events::ThreadNotStarted {
                    worker: &ctx.worker,
                    thread: "sf-commit",
                    without: "the consumer thread commits",
                    error: &e,
                }
                .emit();
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
                    .guarantee
                    .transactions()
                    .is_some_and(|t| t.due(commit_interval, commit_records))
                {
                    ctx.commit_transaction(&consumer, group, &[]);
                }
            }
        } else if last_commit.elapsed() >= commit_interval {
            let offsets = ctx.due_offsets();
            if !offsets.is_empty() {
                match committer {
                    Some(_) => ctx.committer.offer(offsets),
                    None => ctx.committer.commit_final(&consumer, &offsets),
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
    ctx.committer.stop();
    if let Some(handle) = committer {
        // It finishes the commit in flight; the final commit below supersedes what it had not
        // taken.
        let _ = handle.join();
    }
    events::ShutdownStarted {
        worker: &ctx.worker,
    }
    .emit();
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
        ctx.committer.commit_final(&consumer, &finished);
    }
    ctx.forget(&tps);
    if let Some(running) = wakeup {
        ctx.wakeup.stop(running);
    }
    drop(consumer);
    let in_time = Instant::now() <= deadline && flushed;
    events::ConsumerClosed {
        worker: &ctx.worker,
        lanes: lanes_in_flight,
        in_time,
    }
    .emit();
    in_time
}
