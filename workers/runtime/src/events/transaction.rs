//! Events of a transaction group's transactions (exactly once): errors that are retried or
//! abort the transaction, the rewind that follows an abort, and calls that wait on a lost
//! transaction coordinator (confluentinc/librdkafka#5456).

use crate::metrics::Metrics;
use crate::record::TopicPartition;

/// A transactional call failed with a retriable error and is retried after a backoff.
pub(crate) struct TransactionCallRetried<'a> {
    pub worker: &'a str,
    pub call: &'a str,
    pub attempt: u32,
    pub error: &'a dyn std::fmt::Display,
}

impl TransactionCallRetried<'_> {
    pub fn emit(self, metrics: &Metrics) {
        metrics.transaction_error(self.worker, "retriable");
        tracing::warn!(worker = self.worker, call = self.call, attempt = self.attempt,
            error = %self.error, "retriable transaction error, retrying");
    }
}

/// The open transaction is being aborted; its partitions are rewound once it is.
pub(crate) struct TransactionAborting<'a> {
    pub worker: &'a str,
    pub reason: &'a str,
}

impl TransactionAborting<'_> {
    pub fn emit(self, metrics: &Metrics) {
        metrics.transaction_error(self.worker, "abortable");
        tracing::warn!(
            worker = self.worker,
            reason = self.reason,
            "aborting the transaction; rewinding to the last commit"
        );
    }
}

/// A transaction group's partitions were rewound to their last committed offsets after an
/// abort (their records are processed again).
pub(crate) struct PartitionsRewound<'a> {
    pub worker: &'a str,
    pub partitions: &'a [TopicPartition],
    pub reason: &'a str,
}

impl PartitionsRewound<'_> {
    pub fn emit(self) {
        tracing::warn!(worker = self.worker, partitions = %super::summarize(self.partitions),
            reason = self.reason,
            "transaction aborted: partitions rewound to their last committed offsets");
    }
}

/// A lane's record could not join the open transaction, which failed under it; the lane
/// ends and the record is processed again after the abort.
pub(crate) struct TransactionFailedUnderLane<'a> {
    pub partition: &'a TopicPartition,
    pub reason: &'a str,
}

impl TransactionFailedUnderLane<'_> {
    pub fn emit(self) {
        tracing::warn!(partition = %self.partition, reason = self.reason,
            "the transaction failed; waiting for the abort");
    }
}

/// A transactional call has waited for its coordinator long enough that librdkafka is
/// nudged to look the coordinator up again.
pub(crate) struct TransactionCallWaiting<'a> {
    pub worker: &'a str,
    pub waited_ms: i64,
}

impl TransactionCallWaiting<'_> {
    pub fn emit(self) {
        tracing::warn!(
            worker = self.worker,
            waited_ms = self.waited_ms,
            "a transaction call is waiting for its coordinator; nudging librdkafka to look it \
             up again (confluentinc/librdkafka#5456)"
        );
    }
}

/// A transactional call that had waited for its coordinator returned.
pub(crate) struct TransactionCallReturned<'a> {
    pub worker: &'a str,
    pub call: &'a str,
    pub waited_ms: i64,
    pub ok: bool,
}

impl TransactionCallReturned<'_> {
    pub fn emit(self) {
        tracing::info!(
            worker = self.worker,
            call = self.call,
            waited_ms = self.waited_ms,
            ok = self.ok,
            "a transaction call that waited for its coordinator returned"
        );
    }
}

/// A transactional call has hung past every timeout: the worker exits with `exit_code` for
/// its orchestrator to restart it.
pub(crate) struct TransactionCallWedged<'a> {
    pub worker: &'a str,
    pub waited_ms: i64,
    pub exit_code: i32,
}

impl TransactionCallWedged<'_> {
    pub fn emit(self) {
        tracing::error!(
            worker = self.worker,
            waited_ms = self.waited_ms,
            exit_code = self.exit_code,
            "a transaction call has hung in librdkafka past its timeout \
             (confluentinc/librdkafka#5456); exiting for a restart: the open transaction is \
             aborted by this instance's successor"
        );
    }
}
