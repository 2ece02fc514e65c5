//! Assignment: a lane per assigned partition, sharing the state of its source partition; on
//! revoke, the lanes stop, their in-flight records finish and their offsets are committed
//! before the partitions are released; on loss, nothing is committed for them.

use super::*;

pub(super) fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl<P: Processor> FetchContext<P> {
    pub(super) fn assign(&self, tpl: &TopicPartitionList) {
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

    pub(super) fn source_partition(&self, tp: &TopicPartition) -> TopicPartition {
        TopicPartition::new(self.lane_ctx.router.source_of(&tp.topic), tp.partition)
    }

    /// Drops the states no remaining lane uses.
    pub(super) fn drop_unused_states(&self, released: &[TopicPartition]) {
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
    pub(super) fn take_lanes(&self, tps: &[TopicPartition]) -> Vec<(TopicPartition, LaneHandle)> {
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
    pub(super) fn forget(&self, tps: &[TopicPartition]) {
        for tp in tps {
            self.progress.released(tp);
        }
    }

    /// Stops the lanes of `tps`, waits (up to `deadline`) for their in-flight records, and
    /// returns their final committable offsets.
    pub(super) fn stop_lanes(
        &self,
        tps: &[TopicPartition],
        deadline: Instant,
    ) -> Vec<(TopicPartition, i64)> {
        let runtime = self.runtime.clone();
        let mut finished = Vec::new();
        for (tp, lane) in self.take_lanes(tps) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut task = lane.task;
            let done = runtime
                .block_on(async { tokio::time::timeout(remaining, &mut task).await.is_ok() });
            if !done {
                events::LaneTimedOut {
                    worker: &self.worker,
                    partition: &tp,
                }
                .emit();
                task.abort();
            }
            finished.push((tp, lane.shared.committable.load(Ordering::Acquire)));
        }
        finished
    }

    /// Stops and drops the lanes of `tps` without committing; returns their tasks.
    pub(super) fn drop_lanes(&self, tps: &[TopicPartition]) -> Vec<tokio::task::JoinHandle<()>> {
        let tasks = self
            .take_lanes(tps)
            .into_iter()
            .map(|(_, lane)| lane.task)
            .collect();
        self.forget(tps);
        tasks
    }

    pub(super) fn release(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let tps = partitions(tpl);
        if consumer.assignment_lost() {
            // Whatever the committer has not taken belongs to partitions another member may
            // own already; waiting for the lock lets a commit in flight finish first.
            self.committer.drop_pending();
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
            self.committer.commit_final(consumer, &finished);
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
}
