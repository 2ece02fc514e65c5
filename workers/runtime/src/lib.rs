//! streamfleet's worker runtime: a partition-aware Kafka consumer-group member that runs a
//! domain [`Processor`] with at-least-once delivery, non-blocking retries and dead letters.
//!
//! The runtime knows nothing of bookings, inventory or payments; domain crates implement
//! [`Processor`] and depend on this crate, never the reverse.
//!
//! How a record flows from fetch to commit:
//!
//! ```text
//!  Kafka ─► fetcher thread (poll) ─► partition lane (bounded queue; full ⇒ pause partition)
//!                                       │ decode → process (partition state) → route failures
//!                                       ▼
//!                               producer (acks=all, idempotent) ─► outputs / retry / dead-letter
//!                                       │ ack task awaits every delivery, in offset order
//!                                       ▼
//!                               committable offset ─► fetcher commits (periodic, on revoke,
//!                                                      on shutdown)
//! ```
//!
//! Modules, one concept each: [`record`] and [`processor`] are the domain-facing vocabulary;
//! [`codec`] is Avro on the wire; [`config`] and [`clients`] are settings; [`topology`],
//! [`retry`], [`routing`] and [`headers`] decide where failures go; `fetcher` and `lane` move
//! records; [`producer`] acknowledges them; [`metrics`], [`health`] and [`http`] report;
//! [`worker`] assembles a member; [`embedded`] is the in-process cluster.

pub mod clients;
pub mod codec;
mod committer;
pub mod config;
pub mod connectivity;
pub mod durations;
pub mod embedded;
mod events;
mod fetcher;
mod guarantee;
pub mod headers;
pub mod health;
pub mod http;
mod lane;
pub mod metrics;
pub mod ordering;
pub mod processor;
pub mod producer;
mod progress;
pub mod properties;
pub mod reach;
pub mod record;
mod restore;
pub mod retry;
pub mod routing;
mod state;
pub mod store;
pub mod telemetry;
pub mod topology;
mod transactions;
mod wakeup;
pub mod worker;

pub use events::RECORD_EVENTS;
pub use lane::{BATCH as LANE_BATCH, now_ms};
pub use processor::{ErrorClass, Outcome, ProcessError, Processor};
pub use record::{Headers, OutputRecord, RawRecord, Record, TopicPartition};
pub use transactions::EXIT_WEDGED;
pub use worker::{Worker, WorkerError, WorkerReport};

/// Re-exported so domain crates and tools use the same versions.
pub use rdkafka;
pub use tokio_util::sync::CancellationToken;
