//! Events of producing one record: an enqueue or a delivery that failed and is tried again,
//! or that fails the open transaction. One line per record, so under the per-record target
//! ([`super::RECORD_EVENTS`]); every failure is counted in `kafka_producer_record_error_total`
//! by the producer whatever happens next, and a broker outage behind them is logged once as
//! a state change (see [`crate::connectivity`]).

/// A record could not be enqueued or delivered; `next` says what happens to it.
pub(crate) struct ProduceFailed<'a> {
    pub topic: &'a str,
    pub error: &'a dyn std::fmt::Display,
    pub next: ProduceNext,
}

/// What follows a failed produce.
#[derive(Clone, Copy)]
pub(crate) enum ProduceNext {
    /// Enqueued again after a pause (metadata being refreshed, ...).
    Enqueue,
    /// Sent again after a backoff of this many milliseconds.
    Resend { backoff_ms: u64 },
    /// Exactly once: the transaction aborts and the input is processed again.
    AbortTransaction,
}

impl ProduceFailed<'_> {
    pub fn emit(self) {
        let (topic, error) = (self.topic, self.error);
        match self.next {
            ProduceNext::Enqueue => tracing::warn!(target: super::RECORD_EVENTS,
                topic, %error, "enqueue failed, retrying"),
            ProduceNext::Resend { backoff_ms } => tracing::warn!(target: super::RECORD_EVENTS,
                topic, %error, backoff_ms, "delivery failed, re-sending"),
            ProduceNext::AbortTransaction => tracing::warn!(target: super::RECORD_EVENTS,
                topic, %error, "delivery failed; the transaction will abort"),
        }
    }
}
