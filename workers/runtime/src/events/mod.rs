//! Internal events: one struct per thing that happens to a worker, each of which logs itself
//! (with topic, partition and offset for record-level events) and counts itself where a
//! metric exists, so a log line and its metric can never disagree. Record and partition events
//! are here; those of transactions, of producing a record and of the worker's life have a
//! file each. Debug-level diagnostics (a client's settings, a pause) stay where they arise.

mod lifecycle;
mod produce;
mod transaction;

pub(crate) use lifecycle::*;
pub(crate) use produce::*;
pub(crate) use transaction::*;

use crate::metrics::Metrics;
use crate::processor::ProcessError;
use crate::record::{RawRecord, TopicPartition};
use crate::routing::{Route, Routed};

/// The `tracing` target of the events about single records (one line per record: a worker
/// under a burst of bad input writes thousands). Filter them with
/// `RUST_LOG=info,streamfleet::record=off`; their counts are in the metrics either way.
pub const RECORD_EVENTS: &str = "streamfleet::record";

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
                target: RECORD_EVENTS,
                topic, partition, offset, class, attempt, destination,
                error = %self.error, "record failed, scheduled for retry"
            ),
            Route::DeadLetter => tracing::warn!(
                target: RECORD_EVENTS,
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
        let list = summarize(self.partitions);
        let count = self.partitions.len();
        if self.kind == "lost" {
            tracing::warn!(worker = self.worker, count, partitions = %list, "partitions lost, nothing committed for them");
        } else {
            tracing::info!(worker = self.worker, kind = self.kind, count, partitions = %list, "rebalance");
        }
    }
}

/// The client delivered a record at an offset already handed to the partition's lane
/// (logged at the first of a run of them; every one is counted).
pub(crate) struct RecordsRedelivered<'a> {
    pub worker: &'a str,
    pub partition: &'a TopicPartition,
    pub offset: i64,
    pub next: i64,
}

impl RecordsRedelivered<'_> {
    pub fn emit(self) {
        tracing::warn!(worker = self.worker, partition = %self.partition, offset = self.offset,
            next = self.next,
            "the Kafka client delivered records again that were handed over already; \
             dropping them so their outputs are not produced twice");
    }
}

/// A run of redelivered records ended: the client is past them again.
pub(crate) struct RedeliveryOver<'a> {
    pub worker: &'a str,
    pub partition: &'a TopicPartition,
    pub dropped: u64,
}

impl RedeliveryOver<'_> {
    pub fn emit(self) {
        tracing::info!(worker = self.worker, partition = %self.partition,
            dropped = self.dropped, "redelivered records dropped; consuming new records again");
    }
}

/// A commit failed (it is retried with the next commit; nothing is lost, at worst
/// reprocessed).
pub(crate) struct CommitFailed<'a> {
    pub worker: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl CommitFailed<'_> {
    pub fn emit(self, metrics: &Metrics) {
        metrics.commit_failed(self.worker);
        tracing::warn!(worker = self.worker, error = %self.error, "offset commit failed");
    }
}

/// A partition's state was restored from its changelog.
pub(crate) struct StateRestored<'a> {
    pub worker: &'a str,
    pub changelog: &'a TopicPartition,
    pub restored: crate::restore::Restored,
    pub took: std::time::Duration,
}

impl StateRestored<'_> {
    pub fn emit(self, metrics: &Metrics) {
        let p = self.changelog.partition.to_string();
        let labels = [self.worker, &*self.changelog.topic, p.as_str()];
        let s = &metrics.state;
        s.restore_records
            .with_label_values(&labels)
            .set(self.restored.entries as i64);
        s.restore_seconds
            .with_label_values(&labels)
            .set(self.took.as_secs_f64());
        tracing::info!(worker = self.worker, changelog = %self.changelog,
            entries = self.restored.entries, up_to = self.restored.end,
            millis = self.took.as_millis() as u64, "state restored");
    }
}

/// A partition's state could not be restored: the partition is not processed.
pub(crate) struct StateRestoreFailed<'a> {
    pub worker: &'a str,
    pub changelog: &'a TopicPartition,
    pub reason: &'a str,
}

impl StateRestoreFailed<'_> {
    pub fn emit(self, metrics: &Metrics) {
        metrics
            .state
            .restore_failures
            .with_label_values(&[self.worker, &self.changelog.topic])
            .inc();
        tracing::error!(worker = self.worker, changelog = %self.changelog, reason = self.reason,
            "cannot restore the partition's state: it is not processed until the changelog is \
             repaired or reset (see README, Operating: state stores)");
    }
}

/// `t[0-3,7] u[1]`: partitions grouped by topic, consecutive numbers as ranges.
pub(crate) fn summarize(partitions: &[TopicPartition]) -> String {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let mut out = Vec::new();
    for (topic, mut ps) in by_topic {
        ps.sort_unstable();
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < ps.len() {
            let start = ps[i];
            while i + 1 < ps.len() && ps[i + 1] == ps[i] + 1 {
                i += 1;
            }
            ranges.push(if ps[i] == start {
                start.to_string()
            } else {
                format!("{start}-{}", ps[i])
            });
            i += 1;
        }
        out.push(format!("{topic}[{}]", ranges.join(",")));
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_summarized_as_ranges() {
        let tps: Vec<TopicPartition> = [("b", 3), ("a", 0), ("a", 1), ("a", 2), ("a", 5), ("b", 4)]
            .into_iter()
            .map(|(t, p)| TopicPartition::new(t, p))
            .collect();
        assert_eq!(summarize(&tps), "a[0-2,5] b[3-4]");
        assert_eq!(summarize(&[]), "");
    }

    #[test]
    fn a_failed_commit_is_counted_per_worker() {
        let m = Metrics::default();
        m.init_worker("a");
        m.init_worker("b");
        let e = "RebalanceInProgress";
        CommitFailed {
            worker: "a",
            error: &e,
        }
        .emit(&m);
        CommitFailed {
            worker: "a",
            error: &e,
        }
        .emit(&m);
        let count = |w: &str| m.commit_failures_total(w);
        assert_eq!((count("a"), count("b")), (2, 0));
    }
}
