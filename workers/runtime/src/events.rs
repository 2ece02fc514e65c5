//! Internal events: one struct per thing that happens to a worker, each of which logs itself
//! (with topic, partition and offset for record-level events) and counts itself where a
//! metric exists, so a log line and its metric can never disagree.

use crate::metrics::Metrics;
use crate::processor::ProcessError;
use crate::record::{RawRecord, TopicPartition};
use crate::routing::{Route, Routed};

/// A record failed and was routed to a retry rung or the dead-letter topic. Counted when the
/// routed record is acknowledged (see the lane's ack task), so only logged here.
pub(crate) struct RecordFailed<'a> {
    pub raw: &'a RawRecord,
    pub error: &'a ProcessError,
    pub routed: &'a Routed,
}

impl RecordFailed<'_> {
    pub fn emit(self) {
        let (topic, partition, offset) = (&*self.raw.topic, self.raw.partition, self.raw.offset);
        let class = self.routed.class.as_str();
        let destination = &self.routed.record.topic;
        let attempt = self.routed.attempt;
        match self.routed.route {
            Route::Retry => tracing::info!(
                topic, partition, offset, class, attempt, destination,
                error = %self.error, "record failed, scheduled for retry"
            ),
            Route::DeadLetter => tracing::warn!(
                topic, partition, offset, class, attempt, destination,
                error = %self.error, "record dead-lettered"
            ),
        }
    }
}

/// Partitions were assigned, revoked or lost.
pub(crate) struct Rebalanced<'a> {
    pub worker: &'a str,
    pub kind: &'static str,
    pub partitions: &'a [TopicPartition],
}

impl Rebalanced<'_> {
    pub fn emit(self, metrics: &Metrics) {
        metrics.rebalance(self.worker, self.kind);
        let list: Vec<String> = self.partitions.iter().map(ToString::to_string).collect();
        if self.kind == "lost" {
            tracing::warn!(worker = self.worker, partitions = ?list, "partitions lost, nothing committed for them");
        } else {
            tracing::info!(worker = self.worker, kind = self.kind, partitions = ?list, "rebalance");
        }
    }
}

/// A commit failed (it is retried with the next commit; nothing is lost, at worst
/// reprocessed).
pub(crate) struct CommitFailed<'a> {
    pub worker: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl CommitFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(worker = self.worker, error = %self.error, "offset commit failed");
    }
}
