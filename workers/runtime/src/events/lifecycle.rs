//! Events of a worker's life: start, shutdown, the consumer's close, a fatal error, the
//! helper threads and the HTTP endpoint, and configuration worth a warning at start.

use std::net::SocketAddr;

use crate::record::TopicPartition;

/// The worker joined its group's topics and starts consuming.
pub(crate) struct WorkerStarted<'a> {
    pub worker: &'a str,
    pub group: &'a str,
    pub instance: &'a str,
    pub guarantee: crate::config::ProcessingGuarantee,
    pub topics: &'a [&'a str],
}

impl WorkerStarted<'_> {
    pub fn emit(self) {
        tracing::info!(worker = self.worker, group = self.group, instance = self.instance,
            guarantee = ?self.guarantee, topics = ?self.topics, "worker started");
    }
}

/// The worker stopped after a clean shutdown.
pub(crate) struct WorkerStopped<'a> {
    pub worker: &'a str,
    pub stats: &'a dyn std::fmt::Debug,
}

impl WorkerStopped<'_> {
    pub fn emit(self) {
        tracing::info!(worker = self.worker, stats = ?self.stats, "worker stopped cleanly");
    }
}

/// A source has no changelog: its state lives in memory only.
pub(crate) struct StateNotDurable<'a> {
    pub worker: &'a str,
    pub topic: &'a str,
}

impl StateNotDurable<'_> {
    pub fn emit(self) {
        tracing::warn!(
            worker = self.worker,
            topic = self.topic,
            "no changelog for this source: its state (and what waits in key order) lives in \
             memory only and is lost on a restart or a rebalance"
        );
    }
}

/// Shutdown began: the lanes finish their in-flight records.
pub(crate) struct ShutdownStarted<'a> {
    pub worker: &'a str,
}

impl ShutdownStarted<'_> {
    pub fn emit(self) {
        tracing::info!(
            worker = self.worker,
            "shutting down: finishing in-flight records"
        );
    }
}

/// A lane did not finish its records before the shutdown or revoke deadline; what was
/// acknowledged is committed, the rest is processed again by the partition's next owner.
pub(crate) struct LaneTimedOut<'a> {
    pub worker: &'a str,
    pub partition: &'a TopicPartition,
}

impl LaneTimedOut<'_> {
    pub fn emit(self) {
        tracing::warn!(worker = self.worker, partition = %self.partition,
            "lane did not finish in time; committing what was acknowledged");
    }
}

/// The consumer committed its last offsets and left the group.
pub(crate) struct ConsumerClosed<'a> {
    pub worker: &'a str,
    pub lanes: usize,
    pub in_time: bool,
}

impl ConsumerClosed<'_> {
    pub fn emit(self) {
        tracing::info!(
            worker = self.worker,
            lanes = self.lanes,
            in_time = self.in_time,
            "consumer closed"
        );
    }
}

/// The first fatal error: the worker stops.
pub(crate) struct FatalError<'a> {
    pub reason: &'a str,
}

impl FatalError<'_> {
    pub fn emit(self) {
        tracing::error!(reason = self.reason, "fatal error, stopping the worker");
    }
}

/// A rebalance callback reported an error (librdkafka retries the rebalance).
pub(crate) struct RebalanceFailed<'a> {
    pub worker: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl RebalanceFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(worker = self.worker, error = %self.error, "rebalance error");
    }
}

/// A helper thread could not be started; the worker carries on without it, as `without`
/// says.
pub(crate) struct ThreadNotStarted<'a> {
    pub worker: &'a str,
    pub thread: &'a str,
    pub without: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl ThreadNotStarted<'_> {
    pub fn emit(self) {
        tracing::warn!(worker = self.worker, thread = self.thread, error = %self.error,
            "cannot start a helper thread; {}", self.without);
    }
}

/// The HTTP endpoint (metrics and health) is listening.
pub(crate) struct HttpServing {
    pub bound: SocketAddr,
}

impl HttpServing {
    pub fn emit(self) {
        tracing::info!(bound = %self.bound, "serving /metrics, /health/live, /health/ready");
    }
}

/// The HTTP endpoint stopped with an error.
pub(crate) struct HttpFailed<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl HttpFailed<'_> {
    pub fn emit(self) {
        tracing::error!(error = %self.error, "HTTP endpoint failed");
    }
}
