//! Backpressure: records go to their partition's lane, or to its stash when the lane is full;
//! a partition is paused when its stash or its share of `--max-buffered-mib` is full, and
//! resumed at half (see the module doc of [`super`]).

use super::*;

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

/// The offsets a partition has handed to its lane since it was assigned (or rewound).
///
/// Offsets only grow within an assignment (transaction markers leave gaps), so a record below
/// `next` is one the client delivered again: librdkafka has had several such bugs around
/// pause, resume and seek (confluentinc/librdkafka#1802, #2593, #4637). Its lane has the first
/// delivery already, so processing it again would duplicate its outputs (twice in one
/// committed transaction, exactly once); it is dropped and counted instead.
pub(crate) struct Position {
    /// The first offset: where an abort rewinds a partition that has no commit yet.
    pub(super) first: i64,
    /// One past the last offset handed over.
    next: i64,
    /// Redelivered records dropped since the last record handed over.
    dropping: u64,
}

/// What [`Position::observe`] made of an offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Observed {
    /// A new record: hand it over.
    Next,
    /// Handed over already: drop it.
    Redelivered { first_of_run: bool },
    /// A new record after `dropped` redelivered ones.
    NextAfterRedelivered { dropped: u64 },
}

impl Position {
    /// The position of a partition whose first record is at `offset`.
    pub(crate) fn new(offset: i64) -> Self {
        Self {
            first: offset,
            next: offset + 1,
            dropping: 0,
        }
    }

    /// Takes the next record's offset.
    pub(crate) fn observe(&mut self, offset: i64) -> Observed {
        if offset < self.next {
            self.dropping += 1;
            return Observed::Redelivered {
                first_of_run: self.dropping == 1,
            };
        }
        self.next = offset + 1;
        match std::mem::take(&mut self.dropping) {
            0 => Observed::Next,
            dropped => Observed::NextAfterRedelivered { dropped },
        }
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
        if self.redelivered(&tp, raw.offset) {
            return;
        }
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

    /// Whether `offset` of `tp` was handed over already (then it is dropped and counted);
    /// otherwise it becomes the partition's position. Records of partitions without a lane
    /// are not tracked: they are not handed over.
    fn redelivered(&self, tp: &TopicPartition, offset: i64) -> bool {
        if !self.lanes.contains_key(tp) {
            return false;
        }
        let Some(mut position) = self.positions.get_mut(tp) else {
            self.positions.insert(tp.clone(), Position::new(offset));
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
                        next: position.next,
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

#[cfg(test)]
mod tests {
    use super::{Observed, Position};

    #[test]
    fn offsets_below_the_position_are_redeliveries_and_gaps_are_not() {
        let mut p = Position::new(10);
        assert_eq!(p.observe(11), Observed::Next);
        // Transaction markers leave gaps.
        assert_eq!(p.observe(14), Observed::Next);
        assert_eq!(p.observe(10), Observed::Redelivered { first_of_run: true });
        assert_eq!(
            p.observe(11),
            Observed::Redelivered {
                first_of_run: false
            }
        );
        assert_eq!(
            p.observe(14),
            Observed::Redelivered {
                first_of_run: false
            }
        );
        assert_eq!(p.observe(15), Observed::NextAfterRedelivered { dropped: 3 });
        assert_eq!(p.observe(16), Observed::Next);
        assert_eq!(p.first, 10);
    }
}
