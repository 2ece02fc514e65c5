//! At least once: the offsets each lane may commit (every record before them acknowledged),
//! committed synchronously on the committer thread ([`crate::committer`]), or here when it
//! cannot run and for the final commits of a revoke and a shutdown.

use super::*;

impl<P: Processor> FetchContext<P> {
    /// Commits (synchronously, on the calling thread) the given offsets that are ahead of what
    /// is committed, and drops what the committer has not taken: the revoke's and the
    /// shutdown's final commit, made after the lanes stopped, is the newest there can be.
    pub(super) fn commit_offsets(
        &self,
        consumer: &BaseConsumer<Self>,
        offsets: &[(TopicPartition, i64)],
    ) {
        let _lock = self.commits.lock_dropping_pending();
        self.commit_locked(consumer, offsets);
    }

    /// The committer thread's loop: commits what the consumer thread hands over, until the
    /// queue is stopped.
    pub(super) fn run_committer(&self, consumer: &BaseConsumer<Self>) {
        while self.commits.wait() {
            let _lock = self.commits.lock();
            // A revoke may have dropped them while this thread waited for the lock.
            if let Some(offsets) = self.commits.take() {
                self.commit_locked(consumer, &offsets);
            }
        }
    }

    /// Commits the offsets ahead of what is committed; call holding the commit lock.
    pub(super) fn commit_locked(
        &self,
        consumer: &BaseConsumer<Self>,
        offsets: &[(TopicPartition, i64)],
    ) {
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
    pub(super) fn due_offsets(&self) -> Offsets {
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
    pub(super) fn is_ahead(&self, tp: &TopicPartition, offset: i64) -> bool {
        offset >= 0 && self.committed.get(tp).is_none_or(|c| *c < offset)
    }
}
