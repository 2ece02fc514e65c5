//! A worker: one consumer-group member running one [`Processor`] at least once.
//!
//! [`Worker::run`] builds the producers (one, or one per transaction group exactly once) and
//! the consumer, subscribes to the source topics and their retry rungs, runs the
//! [fetcher](crate::fetcher) on its own thread and returns when `shutdown` fires (after a
//! graceful shutdown) or when something fatal happens.
//!
//! Errors say what happens next: [`WorkerError::Config`] and [`WorkerError::Kafka`] at start
//! (fix the configuration), [`WorkerError::Fatal`] while running (the process exits non-zero
//! and its orchestrator restarts it; uncommitted records are reprocessed),
//! [`WorkerError::ShutdownTimeout`] (the deadline passed: what was acknowledged is committed,
//! the rest is reprocessed by the next owner).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::clients;
use crate::config::ProcessingGuarantee;
use crate::config::{ConfigError, WorkerConfig};
use crate::connectivity::Connectivity;
use crate::events;
use crate::fetcher::{self, BufferBound, FetchContext};
use crate::guarantee::Guarantee;
use crate::health::Readiness;
use crate::health::{Health, HealthHandle};
use crate::lane::{FatalSignal, LaneContext, Output, WaitingBound};
use crate::metrics::{Metrics, StatsSnapshot, WorkerStats};
use crate::processor::Processor;
use crate::producer::{OutputProducer, ProducerStats};
use crate::restore::Restorer;
use crate::routing::FailureRouter;
use crate::transactions::{SharedFailure, Transactions};

/// Why a worker stopped other than by a clean shutdown.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is invalid: fix it and start again.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A Kafka client could not be created or could not subscribe.
    #[error("cannot start Kafka client: {0}")]
    Kafka(#[from] KafkaError),
    /// The worker cannot go on; restart it (nothing acknowledged is lost).
    #[error("fatal: {0}")]
    Fatal(String),
    /// The graceful shutdown did not finish in time.
    #[error("shutdown did not finish within {0:?}; unacknowledged records will be reprocessed")]
    ShutdownTimeout(Duration),
}

impl WorkerError {
    /// Process exit code: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            WorkerError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// What a worker did, reported when it stops.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerReport {
    /// Worker name.
    pub worker: String,
    /// Consumer group.
    pub group: String,
    /// Final totals.
    pub stats: StatsSnapshot,
}

/// One consumer-group member.
pub struct Worker<P: Processor> {
    config: WorkerConfig,
    processor: Arc<P>,
    metrics: Metrics,
    health: HealthHandle,
    stats: Arc<WorkerStats>,
}

impl<P: Processor> Worker<P> {
    /// A worker with its metrics in `metrics` and its readiness in `health`.
    pub fn new(config: WorkerConfig, processor: P, metrics: Metrics, health: &Health) -> Self {
        let component = format!("{}/{}", config.worker, config.group_id);
        metrics.init_worker(&config.worker);
        Self {
            health: health.component(&component),
            config,
            processor: Arc::new(processor),
            metrics,
            stats: Arc::new(WorkerStats::default()),
        }
    }

    /// Live totals, readable while the worker runs.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` fires or a fatal error.
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerReport, WorkerError> {
        let config = self.config;
        config.validate()?;
        let instance = config.instance_name();
        let router = FailureRouter::new(&config.group_id, &instance, config.sources.clone());
        let fatal = FatalSignal::default();
        let exactly_once = config.guarantee == ProcessingGuarantee::ExactlyOnce;
        let producers = if exactly_once {
            config.transactional_producers
        } else {
            1
        };
        let mut outputs = Vec::with_capacity(producers);
        let failure = SharedFailure::default();
        let connectivity = Arc::new(Connectivity::new(&config.worker));
        for index in 0..producers {
            let producer: FutureProducer<ProducerStats> = clients::producer(&config, index)
                .create_with_context(ProducerStats::new(
                    &config.worker,
                    index,
                    self.metrics.clone(),
                    connectivity.clone(),
                ))?;
            let producer = Arc::new(OutputProducer::new(
                producer,
                &config.worker,
                self.metrics.clone(),
                self.stats.clone(),
            ));
            let guarantee = if exactly_once {
                let txns = Arc::new(Transactions::new(
                    producer.clone(),
                    &config.worker,
                    self.metrics.clone(),
                    config.fault_abort_probability,
                    failure.clone(),
                ));
                txns.watch();
                let starter = txns.clone();
                tokio::task::spawn_blocking(move || starter.start())
                    .await
                    .map_err(|e| WorkerError::Fatal(e.to_string()))?
                    .map_err(|f| {
                        // Say which id: with broker ACLs, every id needs the prefix's grant.
                        let id = config.transactional_id(index).unwrap_or_default();
                        WorkerError::Fatal(format!("transactional id {id}: {}", f.0))
                    })?;
                Guarantee::ExactlyOnce(txns)
            } else {
                Guarantee::AtLeastOnce
            };
            outputs.push(Output {
                producer,
                guarantee,
            });
        }
        for (topic, policy) in &config.sources {
            self.metrics
                .state
                .retry_schedule
                .with_label_values(&[&config.worker, topic])
                .set(policy.schedule().as_secs_f64());
        }
        for changelog in config.changelogs.values() {
            // At 0 from the start: an alert on `increase()` misses a counter whose first
            // sample is already 1.
            self.metrics
                .state
                .restore_failures
                .with_label_values(&[&config.worker, changelog]);
        }
        let key_ordered = config.key_ordered();
        for (topic, _) in &config.sources {
            if !config.changelogs.contains_key(topic) {
                events::StateNotDurable {
                    worker: &config.worker,
                    topic,
                }
                .emit();
            }
        }
        let lane_ctx = Arc::new(LaneContext {
            processor: self.processor,
            outputs,
            router: router.clone(),
            concurrency: Arc::new(Semaphore::new(config.max_concurrency)),
            fatal: fatal.clone(),
            changelogs: config.changelogs.clone(),
            key_ordered,
            waiting: WaitingBound {
                records: config.max_waiting_records,
                bytes: config.max_waiting_mib.saturating_mul(1 << 20),
            },
        });
        let restorer = Restorer {
            brokers: config.brokers.clone(),
            props: config.kafka.clone(),
            changelogs: config.changelogs.clone(),
            worker: config.worker.clone(),
            metrics: self.metrics.clone(),
            readiness: Arc::new(Readiness::new(self.health.clone())),
        };
        let ctx = FetchContext::new(
            config.worker.clone(),
            config.group_id.clone(),
            lane_ctx,
            tokio::runtime::Handle::current(),
            BufferBound {
                records: config.lane_capacity,
                bytes: config.max_buffered_mib.saturating_mul(1 << 20),
            },
            config.revoke_timeout,
            self.metrics.clone(),
            self.stats.clone(),
            restorer,
            connectivity,
        );
        let consumer: BaseConsumer<FetchContext<P>> =
            clients::consumer(&config).create_with_context(ctx)?;
        let topics = router.subscription();
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs)?;
        events::WorkerStarted {
            worker: &config.worker,
            group: &config.group_id,
            instance: &instance,
            guarantee: config.guarantee,
            topics: &topic_refs,
        }
        .emit();

        let stop = CancellationToken::new();
        let watcher = {
            let stop = stop.clone();
            let fatal = fatal.token().clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = fatal.cancelled() => {}
                }
                stop.cancel();
            })
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (commit_interval, commit_records, shutdown_timeout) = (
            config.commit_interval,
            config.commit_records,
            config.shutdown_timeout,
        );
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("sf-fetch-{}", config.worker))
            .spawn(move || {
                let in_time = fetcher::run(
                    consumer,
                    thread_stop,
                    commit_interval,
                    commit_records,
                    shutdown_timeout,
                );
                let _ = done_tx.send(in_time);
            })
            .map_err(|e| WorkerError::Fatal(format!("cannot start the fetch thread: {e}")))?;
        let in_time = done_rx.await.unwrap_or(false);
        watcher.abort();

        let report = WorkerReport {
            worker: config.worker.clone(),
            group: config.group_id.clone(),
            stats: self.stats.snapshot(),
        };
        if let Some(reason) = fatal.reason() {
            self.health.set_failed(reason.clone());
            return Err(WorkerError::Fatal(reason));
        }
        self.health.set_ready(false, "stopped");
        if !in_time {
            return Err(WorkerError::ShutdownTimeout(shutdown_timeout));
        }
        events::WorkerStopped {
            worker: &report.worker,
            stats: &report.stats,
        }
        .emit();
        Ok(report)
    }
}
