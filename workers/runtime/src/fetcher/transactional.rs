//! Exactly once: committing each transaction group's transaction (its cut: no record of the
//! group in flight), and on an abort rewinding the group's partitions to their last committed
//! offsets and dropping their uncommitted state (see [`crate::transactions`]).

use super::*;

impl<P: Processor> FetchContext<P> {
    /// The transaction group of a partition (see [`LaneContext::group_of`]).
    pub(super) fn group_of(&self, tp: &TopicPartition) -> usize {
        self.lane_ctx.group_of(tp.partition)
    }

    /// Exactly once: `group`'s transaction.
    pub(super) fn transactions(&self, group: usize) -> Arc<Transactions> {
        self.lane_ctx.outputs[group]
            .guarantee
            .transactions()
            .expect("called on exactly-once paths only")
            .clone()
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
            .filter(|(tp, o)| self.progress.is_ahead(tp, *o))
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
                }
            }
            Ok(Finished::Empty) => {}
            Ok(Finished::Aborted(reason)) => self.rewind(consumer, group, &reason),
            Err(fatal) => self.lane_ctx.fatal.raise(fatal.0),
        }
        drop(gate);
    }

    pub(super) fn abort_transaction(
        &self,
        consumer: &BaseConsumer<Self>,
        group: usize,
        reason: &str,
    ) {
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
    pub(super) fn rewind(&self, consumer: &BaseConsumer<Self>, group: usize, reason: &str) {
        let tps: Vec<TopicPartition> = self
            .lanes
            .iter()
            .map(|l| l.key().clone())
            .filter(|tp| self.group_of(tp) == group)
            .collect();
        let targets: Vec<(TopicPartition, Option<i64>)> = tps
            .iter()
            .map(|tp| {
                let target = self.progress.committed_offset(tp).or_else(|| {
                    self.lanes
                        .get(tp)
                        .and_then(|l| l.position.as_ref().map(|p| p.first))
                });
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
        events::PartitionsRewound {
            worker: &self.worker,
            partitions: &tps,
            reason,
        }
        .emit();
    }
}
