//! The families of state stores and key order: restores, entries held, and keys waiting
//! behind a record in the retry path.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Registry};

use super::{counter, float_gauge, gauge};

/// State families (see the README's metric list).
#[derive(Clone, Debug)]
pub(crate) struct StateMetrics {
    pub restored: IntCounterVec,
    pub restoring: IntGaugeVec,
    pub restore_records: IntGaugeVec,
    pub restore_seconds: GaugeVec,
    pub restore_failures: IntCounterVec,
    pub entries: IntGaugeVec,
    pub keys_waiting: IntGaugeVec,
    pub records_waiting: IntGaugeVec,
    pub oldest_wait: GaugeVec,
    pub retry_schedule: GaugeVec,
}

impl StateMetrics {
    pub fn new(r: &Registry) -> Self {
        Self {
            restored: counter(
                r,
                "streamfleet_state_restored_records_total",
                "Changelog entries read to restore partition state, by changelog topic.",
                &["worker", "topic"],
            ),
            restoring: gauge(
                r,
                "streamfleet_state_restoring_partitions",
                "Partitions whose state is being restored from its changelog right now.",
                &["worker"],
            ),
            restore_records: gauge(
                r,
                "streamfleet_state_restore_records",
                "Changelog entries the last restore of a partition read.",
                &["worker", "topic", "partition"],
            ),
            restore_seconds: float_gauge(
                r,
                "streamfleet_state_restore_seconds",
                "How long the last restore of a partition took.",
                &["worker", "topic", "partition"],
            ),
            restore_failures: counter(
                r,
                "streamfleet_state_restore_failures_total",
                "Restores that failed (a corrupt or unreadable changelog): the partition is not \
                 processed until the changelog is repaired.",
                &["worker", "topic"],
            ),
            entries: gauge(
                r,
                "streamfleet_state_entries",
                "Entries held in the state stores of the assigned partitions, by source topic.",
                &["worker", "topic"],
            ),
            keys_waiting: gauge(
                r,
                "streamfleet_ordering_keys_waiting",
                "Keys whose later records wait behind a record in the retry path (ordering: key).",
                &["worker", "topic"],
            ),
            records_waiting: gauge(
                r,
                "streamfleet_ordering_records_waiting",
                "Records parked behind their key's record in the retry path (ordering: key).",
                &["worker", "topic"],
            ),
            oldest_wait: float_gauge(
                r,
                "streamfleet_ordering_oldest_wait_seconds",
                "How long the longest-waiting key has waited for its record in the retry path.",
                &["worker", "topic"],
            ),
            retry_schedule: float_gauge(
                r,
                "streamfleet_retry_schedule_seconds",
                "The sum of a source topic's retry delays: how long a record can be in the retry \
                 path when every attempt fails.",
                &["worker", "topic"],
            ),
        }
    }

    pub fn init_worker(&self, worker: &str) {
        self.restoring.with_label_values(&[worker]);
    }
}
