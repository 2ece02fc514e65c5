//! Producing output, retry and dead-letter records, and knowing when each one is safe.
//!
//! [`OutputProducer::send`] hands a record to librdkafka (waiting while its queue is full) and
//! returns a [`Delivery`] to await; [`Delivery::wait`] resolves once the broker acknowledged
//! the record (acks=all, idempotent). A delivery that fails with a retriable error is
//! re-sent with a backoff until it succeeds or the lane stops; only a non-retriable error
//! (record too large, topic authorisation, ...) is returned, so the caller can re-route the
//! input. Every failed attempt is counted in `kafka_producer_record_error_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use prometheus::IntCounter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

use crate::connectivity::Connectivity;
use crate::events::{self, ProduceNext};
use crate::metrics::{Metrics, WorkerStats, bump};
use crate::record::OutputRecord;

/// Why a record could not be produced.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    /// The broker or client will never accept this record: re-route its input.
    #[error("record rejected by Kafka: {0}")]
    Rejected(KafkaError),
    /// The lane stopped (revoke or shutdown) before the record was acknowledged; its offset
    /// is not committed, so the next owner reprocesses it.
    #[error("stopped before the record was acknowledged")]
    Stopped,
    /// The producer is gone or in a fatal state: the worker must stop.
    #[error("producer failed: {0}")]
    Fatal(String),
    /// Exactly once: the open transaction failed and takes no more records until it is
    /// aborted; the record will be processed again after the rewind.
    #[error("the transaction must be aborted: {0}")]
    TransactionFailed(String),
}

/// A record handed to the producer, awaiting acknowledgement.
pub struct Delivery {
    future: DeliveryFuture,
}

/// Bridges the producer's librdkafka statistics into the metrics.
pub struct ProducerStats {
    worker: String,
    /// The producer's index in its worker (the `producer` label).
    index: usize,
    metrics: Metrics,
    /// librdkafka's running total of records sent, as of its last statistics.
    sent: AtomicI64,
    /// Broker outages, logged once for all of the worker's clients.
    connectivity: Arc<Connectivity>,
}

impl ProducerStats {
    /// Statistics for `worker`'s producer number `index`.
    pub fn new(
        worker: &str,
        index: usize,
        metrics: Metrics,
        connectivity: Arc<Connectivity>,
    ) -> Self {
        Self {
            worker: worker.to_owned(),
            index,
            metrics,
            sent: AtomicI64::new(0),
            connectivity,
        }
    }
}

impl rdkafka::ClientContext for ProducerStats {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.connectivity.client_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.connectivity.client_error(&error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.connectivity.statistics(&statistics);
        let batches: Vec<(String, f64)> = statistics
            .topics
            .iter()
            .filter(|(_, t)| t.batchsize.cnt > 0)
            .map(|(name, t)| (name.clone(), t.batchsize.avg as f64))
            .collect();
        let before = self.sent.fetch_max(statistics.txmsgs, Ordering::Relaxed);
        let sent = (statistics.txmsgs - before).max(0) as u64;
        self.metrics
            .producer_statistics(&self.worker, self.index, sent, &batches);
    }
}

/// The shared producer of one worker.
pub struct OutputProducer {
    producer: FutureProducer<ProducerStats>,
    worker: String,
    metrics: Metrics,
    stats: Arc<WorkerStats>,
    counters: DashMap<String, (IntCounter, IntCounter), crate::record::FastHash>,
}

const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);
const MIN_RESEND_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RESEND_BACKOFF: Duration = Duration::from_secs(5);

fn is_rejection(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(
            MessageSizeTooLarge
                | InvalidMessageSize
                | InvalidMessage
                | InvalidRecord
                | InvalidTopic
                | TopicAuthorizationFailed
                | ClusterAuthorizationFailed
                | PolicyViolation
                | UnknownPartition
                | InvalidArgument
        )
    )
}

impl OutputProducer {
    /// Wraps a producer built by [`crate::clients`].
    pub fn new(
        producer: FutureProducer<ProducerStats>,
        worker: &str,
        metrics: Metrics,
        stats: Arc<WorkerStats>,
    ) -> Self {
        Self {
            producer,
            worker: worker.to_owned(),
            metrics,
            stats,
            counters: DashMap::default(),
        }
    }

    /// The underlying producer (flush, fatal-error checks).
    pub fn inner(&self) -> &FutureProducer<ProducerStats> {
        &self.producer
    }

    fn counters(&self, topic: &str) -> (IntCounter, IntCounter) {
        if let Some(c) = self.counters.get(topic) {
            return c.clone();
        }
        let c = (
            self.metrics.produced(&self.worker, topic),
            self.metrics.producer_errors(&self.worker, topic),
        );
        self.counters.insert(topic.to_owned(), c.clone());
        c
    }

    fn count_error(&self, topic: &str) {
        self.counters(topic).1.inc();
        bump(&self.stats.produce_errors);
    }

    /// Enqueues one record, waiting while librdkafka's queue is full.
    pub async fn send(&self, out: &OutputRecord) -> Result<Delivery, ProduceError> {
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&out.topic);
            if let Some(key) = &out.key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = &out.value {
                record = record.payload(value.as_slice());
            }
            if let Some(partition) = out.partition {
                record = record.partition(partition);
            }
            if !out.headers.is_empty() {
                let mut headers = OwnedHeaders::new_with_capacity(out.headers.len());
                for (k, v) in &out.headers {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(v.as_slice()),
                    });
                }
                record = record.headers(headers);
            }
            match self.producer.send_result(record) {
                Ok(future) => return Ok(Delivery { future }),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((e, _)) => {
                    self.count_error(&out.topic);
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
                        return Err(ProduceError::Fatal(e.to_string()));
                    }
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::State) {
                        return Err(ProduceError::TransactionFailed(e.to_string()));
                    }
                    if is_rejection(&e) {
                        return Err(ProduceError::Rejected(e));
                    }
                    // Anything else at enqueue time (an unknown topic while metadata is being
                    // refreshed, ...) is worth another try.
                    events::ProduceFailed {
                        topic: &out.topic,
                        error: &e,
                        next: ProduceNext::Enqueue,
                    }
                    .emit();
                    tokio::time::sleep(MIN_RESEND_BACKOFF).await;
                }
            }
        }
    }

    /// Waits until `out` (already sent as `delivery`) is acknowledged, re-sending it after
    /// retriable failures, until `stop` fires.
    pub async fn acknowledged(
        &self,
        out: &OutputRecord,
        mut delivery: Delivery,
        stop: &CancellationToken,
    ) -> Result<(), ProduceError> {
        let mut backoff = MIN_RESEND_BACKOFF;
        loop {
            let error = match delivery.future.await {
                Ok(Ok(_)) => {
                    self.counters(&out.topic).0.inc();
                    bump(&self.stats.produced);
                    return Ok(());
                }
                Ok(Err((e, _))) => e,
                Err(_canceled) => return Err(ProduceError::Fatal("producer closed".into())),
            };
            self.count_error(&out.topic);
            if let Some((code, reason)) = self.producer.client().fatal_error() {
                return Err(ProduceError::Fatal(format!("{code:?}: {reason}")));
            }
            if is_rejection(&error) {
                return Err(ProduceError::Rejected(error));
            }
            events::ProduceFailed {
                topic: &out.topic,
                error: &error,
                next: ProduceNext::Resend {
                    backoff_ms: backoff.as_millis() as u64,
                },
            }
            .emit();
            tokio::select! {
                _ = stop.cancelled() => return Err(ProduceError::Stopped),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_RESEND_BACKOFF);
            delivery = self.send(out).await?;
        }
    }

    /// Waits for one delivery without re-sending (exactly once: a failure fails the
    /// transaction); counts it. Returns whether it was acknowledged.
    pub async fn delivered(&self, out: &OutputRecord, delivery: Delivery) -> bool {
        match delivery.future.await {
            Ok(Ok(_)) => {
                self.counters(&out.topic).0.inc();
                bump(&self.stats.produced);
                true
            }
            Ok(Err((e, _))) => {
                self.count_error(&out.topic);
                events::ProduceFailed {
                    topic: &out.topic,
                    error: &e,
                    next: ProduceNext::AbortTransaction,
                }
                .emit();
                false
            }
            Err(_) => false,
        }
    }

    /// Sends and waits for acknowledgement.
    pub async fn produce(
        &self,
        out: &OutputRecord,
        stop: &CancellationToken,
    ) -> Result<(), ProduceError> {
        let delivery = self.send(out).await?;
        self.acknowledged(out, delivery, stop).await
    }

    /// Waits for every queued record, up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
