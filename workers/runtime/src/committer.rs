//! At-least-once offset commits, off the consumer thread.
//!
//! ```text
//!   consumer thread, every commit interval:
//!     committable offsets ahead of the committed ones ─► pending (replaces what the committer
//!                                                          has not taken: the newest win)
//!   committer thread:
//!     wait for pending ─► [commit lock] take it ─► commit (sync, one round trip) ─►
//!       committed-offset gauge, end-to-end latency ─► [release]
//!   consumer thread, on revoke, loss and shutdown:
//!     [commit lock] drop pending ─► commit the final offsets (sync; nothing, when lost) ─► [release]
//! ```
//!
//! A synchronous commit waits for the group coordinator, one round trip (more on a busy
//! machine or a far broker). On the consumer thread every such wait stopped fetching and
//! dispatching, so records that arrived meanwhile waited for the commit before any lane saw
//! them. In the benchmark's latency run (commits every 10 ms on the embedded cluster) the
//! consumer thread spent 11 % of its time in commits, at 1.0 ms median, 2.5 ms at the 90th
//! percentile and 11.6 ms at the 99th. Here the consumer thread only hands the offsets over.
//!
//! Commits stay synchronous (rust-rdkafka never reports an asynchronous commit's completion,
//! fede1024/rust-rdkafka#856; see [`crate::fetcher`]), and at most one is in flight. The commit
//! lock orders them: an older commit never lands after a newer one, because the committer takes
//! the pending offsets only under the lock, and a revoke or loss, also under the lock, drops
//! them before the partitions can be assigned again (their committed offsets forgotten). Only
//! at-least-once uses this; an exactly-once worker commits offsets inside its transactions.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::events;
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::record::TopicPartition;

/// Offsets to commit, as (partition, next offset to consume).
pub(crate) type Offsets = Vec<(TopicPartition, i64)>;

#[derive(Default)]
struct Pending {
    offsets: Option<Offsets>,
    stopped: bool,
}

/// The hand-over between the consumer thread and the committer thread.
#[derive(Default)]
pub(crate) struct CommitQueue {
    pending: Mutex<Pending>,
    ready: Condvar,
    /// Held around every at-least-once commit, by either thread.
    commit: Mutex<()>,
}

impl CommitQueue {
    /// Hands `offsets` to the committer, replacing any it has not taken yet.
    pub fn offer(&self, offsets: Offsets) {
        self.pending.lock().expect("commit queue").offsets = Some(offsets);
        self.ready.notify_one();
    }

    /// Blocks until offsets are pending (true) or the queue is stopped (false).
    pub fn wait(&self) -> bool {
        let mut pending = self.pending.lock().expect("commit queue");
        loop {
            if pending.stopped {
                return false;
            }
            if pending.offsets.is_some() {
                return true;
            }
            pending = self.ready.wait(pending).expect("commit queue");
        }
    }

    /// Takes the commit lock; every at-least-once commit is made holding it.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.commit.lock().expect("commit lock")
    }

    /// Takes the commit lock and drops the offsets the committer has not taken: what a revoke,
    /// a loss and the shutdown do before their own final commit (or none, when lost), so that
    /// nothing older lands after it.
    pub fn lock_dropping_pending(&self) -> MutexGuard<'_, ()> {
        let lock = self.lock();
        let _ = self.take();
        lock
    }

    /// The pending offsets, if any; call holding [`Self::lock`].
    pub fn take(&self) -> Option<Offsets> {
        self.pending.lock().expect("commit queue").offsets.take()
    }

    /// Ends [`Self::wait`] for good.
    pub fn stop(&self) {
        self.pending.lock().expect("commit queue").stopped = true;
        self.ready.notify_all();
    }
}

/// A worker's at-least-once commits: the fetcher hands offsets over ([`Self::offer`]) or,
/// for the final commit of a revoke or a shutdown, commits them itself through
/// [`Self::commit_final`]; the committer thread runs [`Self::run`]. Either way the commit is
/// made here and what it committed is written to [`Progress`], the one record of committed
/// offsets. Nothing calls back into the fetcher.
pub(crate) struct Committer {
    queue: CommitQueue,
    progress: Arc<Progress>,
    worker: String,
    metrics: Metrics,
}

impl Committer {
    pub fn new(worker: &str, metrics: Metrics, progress: Arc<Progress>) -> Self {
        Self {
            queue: CommitQueue::default(),
            progress,
            worker: worker.to_owned(),
            metrics,
        }
    }

    /// Hands `offsets` to the committer thread, replacing any it has not taken yet.
    pub fn offer(&self, offsets: Offsets) {
        self.queue.offer(offsets);
    }

    /// The committer thread's loop: commits what is offered, until [`Self::stop`].
    pub fn run<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        while self.queue.wait() {
            let _lock = self.queue.lock();
            // A revoke may have dropped them while this thread waited for the lock.
            if let Some(offsets) = self.queue.take() {
                self.commit_locked(consumer, &offsets);
            }
        }
    }

    /// Ends [`Self::run`] once the commit in flight is done.
    pub fn stop(&self) {
        self.queue.stop();
    }

    /// Commits `offsets` on the calling thread and drops what the committer thread has not
    /// taken: the revoke's and the shutdown's final commit, made after the lanes stopped, is
    /// the newest there can be. Also the commit of a worker whose committer thread could not
    /// start.
    pub fn commit_final<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        offsets: &[(TopicPartition, i64)],
    ) {
        let _lock = self.queue.lock_dropping_pending();
        self.commit_locked(consumer, offsets);
    }

    /// Partitions were lost: what the committer has not taken belongs to partitions another
    /// member may own already. Waits for a commit in flight, then drops the rest.
    pub fn drop_pending(&self) {
        drop(self.queue.lock_dropping_pending());
    }

    /// Commits (synchronously) the offsets ahead of what is committed; call holding the
    /// commit lock.
    fn commit_locked<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        offsets: &[(TopicPartition, i64)],
    ) {
        let ahead: Vec<&(TopicPartition, i64)> = offsets
            .iter()
            .filter(|(tp, offset)| self.progress.is_ahead(tp, *offset))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn the_newest_offsets_replace_those_not_taken() {
        let q = CommitQueue::default();
        q.offer(vec![(tp(0), 5)]);
        q.offer(vec![(tp(0), 9), (tp(1), 3)]);
        assert!(q.wait());
        let _guard = q.lock();
        assert_eq!(q.take(), Some(vec![(tp(0), 9), (tp(1), 3)]));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn a_final_commit_drops_the_offsets_not_taken() {
        let q = CommitQueue::default();
        q.offer(vec![(tp(0), 5)]);
        let _guard = q.lock_dropping_pending();
        assert_eq!(q.take(), None);
    }

    #[test]
    fn wait_returns_once_offsets_are_offered_and_false_once_stopped() {
        let q = Arc::new(CommitQueue::default());
        let waiter = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut taken = Vec::new();
                while q.wait() {
                    let _guard = q.lock();
                    taken.extend(q.take().into_iter().flatten());
                }
                taken
            })
        };
        q.offer(vec![(tp(2), 7)]);
        while q.pending.lock().unwrap().offsets.is_some() {
            std::thread::yield_now();
        }
        q.stop();
        assert_eq!(waiter.join().unwrap(), vec![(tp(2), 7)]);
    }
}
