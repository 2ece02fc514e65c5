//! Partition state: where it lives, and how a processor makes it durable.
//!
//! Each source partition has one [`StateSlot`] on an instance, shared by the lane of the
//! source partition and the lanes of the same partition number of its retry rungs. It is
//! dropped when the last of them is revoked (or, exactly-once, when a transaction aborts).
//!
//! A processor whose state must survive restarts and rebalances implements
//! [`StateChangelog`]. Under exactly-once, after each record the lane drains the entries the
//! record changed and writes them to the source's compacted changelog topic (same partition
//! number) inside the transaction, beside the record's outputs and offset. When a partition is
//! assigned, the first lane that needs its state restores it from the changelog (read
//! committed, up to its end) before processing anything, so the state always equals what the
//! committed inputs imply.
//!
//! Under at-least-once, state stays in memory: writing it to a changelog ahead of the outputs
//! it explains could let a crash hide an output forever (the restored state would drop the
//! reprocessed input as a replay).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Mutex, OnceCell};

use crate::clients;
use crate::config::{ClientScope, KafkaProperty};

/// How a processor writes its state to a changelog and reads it back.
pub trait StateChangelog<S>: Send + Sync {
    /// The entries changed since the last call, as (key, value); `None` deletes the key.
    fn drain(&self, state: &mut S) -> Vec<(Vec<u8>, Option<Vec<u8>>)>;
    /// Applies one changelog entry while restoring.
    fn restore(&self, state: &mut S, key: &[u8], value: Option<&[u8]>) -> Result<(), String>;
}

/// One source partition's state.
pub(crate) struct StateSlot<S> {
    pub state: Arc<Mutex<S>>,
    /// Set once the state is restored (or there is nothing to restore).
    pub restored: OnceCell<()>,
}

impl<S: Default> Default for StateSlot<S> {
    fn default() -> Self {
        Self {
            state: Arc::new(Mutex::new(S::default())),
            restored: OnceCell::new(),
        }
    }
}

/// Where a changelog partition is read from.
#[derive(Debug, Clone)]
pub(crate) struct RestoreSource {
    pub brokers: String,
    pub props: Vec<KafkaProperty>,
    pub topic: String,
    pub partition: i32,
}

const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a changelog partition from the beginning to its end (committed records only) and
/// hands each entry to `apply`. Blocking. Returns the number of entries.
pub(crate) fn read_changelog(
    source: &RestoreSource,
    mut apply: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), String>,
) -> Result<u64, String> {
    let consumer: BaseConsumer = clients::build(
        &source.brokers,
        &[("enable.partition.eof", "false")],
        &source.props,
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
    .map_err(|e| e.to_string())?;
    let (low, end) = consumer
        .fetch_watermarks(&source.topic, source.partition, RESTORE_TIMEOUT)
        .map_err(|e| format!("watermarks of {}[{}]: {e}", source.topic, source.partition))?;
    if end <= low {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&source.topic, source.partition, Offset::Beginning)
        .map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut entries = 0u64;
    let mut idle_since = Instant::now();
    loop {
        let position = consumer
            .position()
            .ok()
            .and_then(|p| {
                p.find_partition(&source.topic, source.partition)
                    .and_then(|e| e.offset().to_raw())
            })
            .unwrap_or(-1);
        if position >= end {
            return Ok(entries);
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                if m.offset() >= end {
                    return Ok(entries);
                }
                let key = m.key().ok_or_else(|| {
                    format!("changelog record at offset {} has no key", m.offset())
                })?;
                apply(key, m.payload())?;
                entries += 1;
            }
            Some(Err(e)) => {
                return Err(format!(
                    "reading {}[{}]: {e}",
                    source.topic, source.partition
                ));
            }
            None if idle_since.elapsed() > RESTORE_TIMEOUT => {
                return Err(format!(
                    "no progress restoring {}[{}] for {RESTORE_TIMEOUT:?} (at {position} of {end})",
                    source.topic, source.partition
                ));
            }
            None => {}
        }
    }
}
