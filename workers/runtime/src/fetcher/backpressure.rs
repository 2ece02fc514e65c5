//! Backpressure: records go to their partition's lane, or to its stash when the lane is full;
//! a partition is paused when its stash or its share of `--max-buffered-mib` is full, and
//! resumed at half (see the module doc of [`super`]).

use super::*;
use crate::lane::{Observed, Position};

pub(super) fn pause<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tp: &TopicPartition,
    pause: bool,
) {
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

/// Records of one partition fetched but not yet taken by its lane.
#[derive(Default)]
pub(super) struct Stash {
    pub(super) queue: VecDeque<RawRecord>,
    /// [`RawRecord::footprint`] of `queue`.
    pub(super) bytes: usize,
    pub(super) paused: bool,
}

impl<P: Processor> FetchContext<P> {
    pub(super) fn dispatch(&self, consumer: &BaseConsumer<Self>, raw: RawRecord) {
        let tp = raw.topic_partition();
        // The stash lock first, then the lane: the order `take_lanes` takes them in.
        let mut stashes = self.stash.lock().expect("stash lock");
        let Some(mut lane) = self.lanes.get_mut(&tp) else {
            tracing::debug!(partition = %tp, offset = raw.offset,
                "record of a partition no longer assigned; left uncommitted for its owner");
            return;
        };
        if self.redelivered(&mut lane.position, &tp, raw.offset) {
            return;
        }
        let bytes = raw.footprint();
        self.progress.fetched(&tp, raw.offset, raw.timestamp);
        let held = lane.shared.held_bytes.load(Ordering::Relaxed);
        if let Some(stash) = stashes.get_mut(&tp) {
            stash.bytes += bytes;
            stash.queue.push_back(raw);
            if !stash.paused
                && (stash.queue.len() >= self.bound.records
                    || stash.bytes + held >= self.partition_bytes())
            {
                stash.paused = true;
                self.paused(consumer, &tp);
            }
            return;
        }
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

    /// Whether `offset` of `tp` was handed to its lane already (then it is dropped and
    /// counted); otherwise it becomes the lane's `position`.
    fn redelivered(
        &self,
        position: &mut Option<Position>,
        tp: &TopicPartition,
        offset: i64,
    ) -> bool {
        let Some(position) = position else {
            *position = Some(Position::new(offset));
            return false;
        };
        match position.observe(offset) {
            Observed::Next => false,
            Observed::Redelivered { first_of_run } => {
                if first_of_run {
                    events::RecordsRedelivered {
                        worker: &self.worker,
                        partition: tp,
                        offset,
                        next: position.next(),
                    }
                    .emit();
                }
                self.topic_metrics(&tp.topic).redelivered.inc();
                true
            }
            Observed::NextAfterRedelivered { dropped } => {
                events::RedeliveryOver {
                    worker: &self.worker,
                    partition: tp,
                    dropped,
                }
                .emit();
                false
            }
        }
    }

    /// Pauses `tp` (its stash is already marked) and counts it.
    pub(super) fn paused(&self, consumer: &BaseConsumer<Self>, tp: &TopicPartition) {
        let metrics = self.topic_metrics(&tp.topic);
        metrics.pauses.inc();
        bump(&metrics.stats.pauses);
        pause(consumer, tp, true);
    }

    /// A partition's share of the buffer memory: the budget over the assigned partitions.
    pub(super) fn partition_bytes(&self) -> usize {
        let assigned = self
            .stats
            .assigned_partitions
            .load(Ordering::Relaxed)
            .max(1);
        self.bound.bytes / assigned as usize
    }

    /// Resumes a paused partition and wakes its leader's connection thread.
    pub(super) fn resume(&self, consumer: &BaseConsumer<Self>, tp: &TopicPartition) {
        pause(consumer, tp, false);
        self.wakeup.wake(tp);
    }

    /// Moves stashed records into lanes that have room; resumes partitions whose stash is
    /// down to half of both bounds. Returns whether anything is still stashed.
    pub(super) fn drain_stashes(&self, consumer: &BaseConsumer<Self>) -> bool {
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
