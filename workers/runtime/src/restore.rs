//! Restoring a partition's state from its changelog when the partition is assigned.
//!
//! ```text
//!   assignment of source partition p (the fetcher) ─► slot of p, status Restoring
//!        └─► restore task: a read_committed consumer reads <source>-changelog[p] from the
//!            beginning to its last stable offset, applying every entry to a fresh state
//!              ├─ done   ─► Ready: p's lanes start; a log line and the restore gauges
//!              └─ failed ─► Failed: p's lanes process nothing; an error naming the changelog,
//!                           partition and offset; the worker stays up, not ready
//! ```
//!
//! The restore reads up to the last stable offset, as Kafka Streams does: the records of a
//! transaction still open (a crashed predecessor's) are not part of the state; if it aborts
//! they never were, and a committed one cannot exist for partitions this instance now owns.
//! While restores run the worker reports itself not ready (`/health/ready`).
//!
//! An entry the state cannot apply stops that partition's restore. The partition is never
//! processed on guessed state: its records stay uncommitted, its lag grows and the failure is
//! counted (`streamfleet_state_restore_failures_total`) until an operator repairs or resets
//! the changelog and restarts the worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::clients;
use crate::events;
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::ordering::META_HEADER;
use crate::properties::{ClientScope, KafkaProperty};
use crate::record::TopicPartition;
use crate::state::{RestoreStatus, StateSlot};
use crate::store::{RestoreError, StateStore};

/// How long a restore may see no progress before it fails (longer than a transaction timeout,
/// so an open transaction of a crashed predecessor is aborted by the broker first).
const NO_PROGRESS: Duration = Duration::from_secs(120);

/// Restores the states of a worker's source partitions.
#[derive(Clone)]
pub(crate) struct Restorer {
    pub brokers: String,
    pub props: Vec<KafkaProperty>,
    /// The changelog topic of each source topic that has one.
    pub changelogs: HashMap<String, String>,
    pub worker: String,
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
}

/// What one restore read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Restored {
    /// Entries applied.
    pub entries: u64,
    /// The offset the restore read up to (the changelog's last stable offset).
    pub end: i64,
}

impl Restorer {
    /// The changelog of `source`, if its state is durable.
    pub fn changelog_of(&self, source: &str) -> Option<&str> {
        self.changelogs.get(source).map(String::as_str)
    }

    /// Restores `slot` (the state of `source`) on a blocking thread, then marks it ready or
    /// failed.
    pub fn spawn<S: StateStore>(
        &self,
        runtime: &tokio::runtime::Handle,
        slot: Arc<StateSlot<S>>,
        source: TopicPartition,
    ) {
        let Some(changelog) = self.changelog_of(&source.topic).map(str::to_owned) else {
            slot.set_status(RestoreStatus::Ready);
            return;
        };
        let this = self.clone();
        self.readiness.restore_started();
        let restoring = self.metrics.restoring(&self.worker);
        restoring.inc();
        runtime.spawn(async move {
            let started = Instant::now();
            let state = slot.state.clone();
            let job = this.clone();
            let (topic, partition) = (changelog.clone(), source.partition);
            let result = tokio::task::spawn_blocking(move || {
                let counter = job.metrics.restored(&job.worker, &topic);
                let mut state = state.blocking_lock();
                let read = read_changelog(
                    &job.brokers,
                    &job.props,
                    &topic,
                    partition,
                    |key, value, meta| {
                        counter.inc();
                        state.restore(key, value, meta)
                    },
                );
                state.restored(partition);
                read
            })
            .await
            .unwrap_or_else(|e| Err(format!("the restore task failed: {e}")));
            restoring.dec();
            let changelog = TopicPartition::new(changelog, source.partition);
            match result {
                Ok(restored) => {
                    events::StateRestored {
                        worker: &this.worker,
                        changelog: &changelog,
                        restored,
                        took: started.elapsed(),
                    }
                    .emit(&this.metrics);
                    slot.set_status(RestoreStatus::Ready);
                    this.readiness.restore_finished(None);
                }
                Err(reason) => {
                    events::StateRestoreFailed {
                        worker: &this.worker,
                        changelog: &changelog,
                        reason: &reason,
                    }
                    .emit(&this.metrics);
                    slot.set_status(RestoreStatus::Failed(reason.clone()));
                    let reason = reason.clone();
                    this.readiness
                        .restore_finished(Some((changelog.to_string(), reason)));
                }
            }
        });
    }
}

/// Reads `topic[partition]` from the beginning to its last stable offset and hands each entry
/// to `apply` as (key, value, is the runtime's own). Blocking. An entry `apply` refuses ends
/// the read with an error naming its offset.
pub(crate) fn read_changelog(
    brokers: &str,
    props: &[KafkaProperty],
    topic: &str,
    partition: i32,
    mut apply: impl FnMut(&[u8], Option<&[u8]>, bool) -> Result<(), RestoreError>,
) -> Result<Restored, String> {
    let at = |offset: i64| format!("{topic}[{partition}] at offset {offset}");
    let consumer: BaseConsumer = clients::build(
        brokers,
        &[("enable.partition.eof", "false")],
        props,
        ClientScope::Consumer,
        &[
            (
                "group.id",
                format!("streamfleet-restore-{}", crate::now_ms()),
            ),
            ("enable.auto.commit", "false".to_owned()),
            ("isolation.level", "read_committed".to_owned()),
        ],
    )
    .create()
    .map_err(|e| format!("cannot create the restore consumer: {e}"))?;
    // A read_committed consumer's high watermark is the last stable offset.
    let (low, end) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(30))
        .map_err(|e| format!("offsets of {topic}[{partition}]: {e}"))?;
    let mut restored = Restored { entries: 0, end };
    if end <= low {
        return Ok(restored);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut last_progress = Instant::now();
    let mut position = low;
    while position < end {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                position = m.offset() + 1;
                if m.offset() >= end {
                    break;
                }
                let key = m.key().ok_or_else(|| {
                    format!("{}: a changelog record without a key", at(m.offset()))
                })?;
                let meta = m
                    .headers()
                    .is_some_and(|h| h.iter().any(|h| h.key == META_HEADER));
                apply(key, m.payload(), meta).map_err(|e| format!("{}: {e}", at(m.offset())))?;
                restored.entries += 1;
            }
            Some(Err(e)) => return Err(format!("reading {topic}[{partition}]: {e}")),
            None => {
                // Past transaction markers and aborted records nothing is delivered, but the
                // position moves.
                if let Ok(p) = consumer.position()
                    && let Some(o) = p
                        .find_partition(topic, partition)
                        .and_then(|e| e.offset().to_raw())
                    && o > position
                {
                    position = o;
                    last_progress = Instant::now();
                }
                if last_progress.elapsed() > NO_PROGRESS {
                    return Err(format!(
                        "no progress restoring {topic}[{partition}] for {NO_PROGRESS:?} (at {position} of {end})"
                    ));
                }
            }
        }
    }
    Ok(restored)
}
