//! A lag exporter for any consumer group: the same lag metrics a worker exports, read from
//! outside the group.
//!
//! For each partition of the watched topics: the group's committed offset (OffsetFetch),
//! the high watermark, lag in offsets (high − committed), and lag in seconds: the age of the
//! record at the committed offset, i.e. the oldest record the group has not processed (0
//! when caught up). Partitions the group never committed are left out.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use streamfleet_runtime::clients;
use streamfleet_runtime::metrics::Metrics;
use streamfleet_runtime::now_ms;
use streamfleet_runtime::properties::{ClientScope, KafkaProperty};

const TIMEOUT: Duration = Duration::from_secs(10);
/// The `worker` label of the exporter's series.
pub const WORKER_LABEL: &str = "lag-exporter";

/// Lag of one partition.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PartitionLag {
    /// Committed offset.
    pub committed: i64,
    /// High watermark (last stable offset under read_committed).
    pub high: i64,
    /// high − committed.
    pub lag: i64,
    /// Age of the record at the committed offset, seconds; 0 when caught up.
    pub lag_seconds: f64,
}

/// Lag of a group, by topic and partition.
pub type GroupLag = BTreeMap<String, BTreeMap<i32, PartitionLag>>;

/// Reads lag of one group on some topics.
pub struct LagReader {
    group: String,
    offsets: BaseConsumer,
    reader: BaseConsumer,
}

impl LagReader {
    /// A reader of `group`'s lag.
    pub fn new(brokers: &str, props: &[KafkaProperty], group: &str) -> anyhow::Result<Self> {
        let build = |group_id: String| -> anyhow::Result<BaseConsumer> {
            Ok(clients::build(
                brokers,
                &[("enable.partition.eof", "false")],
                props,
                ClientScope::Consumer,
                &[
                    ("group.id", group_id),
                    ("enable.auto.commit", "false".to_owned()),
                    ("isolation.level", "read_committed".to_owned()),
                ],
            )
            .create()?)
        };
        Ok(Self {
            group: group.to_owned(),
            // Never subscribes: it only reads the group's committed offsets.
            offsets: build(group.to_owned())?,
            reader: build(format!("streamfleet-lag-reader-{}", now_ms()))?,
        })
    }

    /// The group's lag on `topics` (blocking).
    pub fn read(&self, topics: &[String]) -> anyhow::Result<GroupLag> {
        let md = self.offsets.fetch_metadata(None, TIMEOUT)?;
        let mut tpl = TopicPartitionList::new();
        for t in md
            .topics()
            .iter()
            .filter(|t| topics.iter().any(|w| w == t.name()) && t.error().is_none())
        {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
        let committed = self.offsets.committed_offsets(tpl, TIMEOUT)?;
        let mut out = GroupLag::new();
        let mut behind = TopicPartitionList::new();
        for e in committed.elements() {
            let Offset::Offset(c) = e.offset() else {
                continue;
            };
            let (_, high) = self
                .offsets
                .fetch_watermarks(e.topic(), e.partition(), TIMEOUT)?;
            let lag = (high - c).max(0);
            if lag > 0 {
                behind.add_partition_offset(e.topic(), e.partition(), Offset::Offset(c))?;
            }
            out.entry(e.topic().to_owned()).or_default().insert(
                e.partition(),
                PartitionLag {
                    committed: c,
                    high,
                    lag,
                    lag_seconds: 0.0,
                },
            );
        }
        if behind.count() == 0 {
            return Ok(out);
        }
        // The record at each committed offset is the oldest the group has not processed.
        self.reader.assign(&behind)?;
        let mut pending: HashSet<(String, i32)> = behind
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let deadline = Instant::now() + TIMEOUT;
        let now = now_ms();
        while !pending.is_empty() && Instant::now() < deadline {
            let Some(Ok(m)) = self.reader.poll(Duration::from_millis(200)) else {
                continue;
            };
            if !pending.remove(&(m.topic().to_owned(), m.partition())) {
                continue;
            }
            if let (Some(p), Some(ts)) = (
                out.get_mut(m.topic())
                    .and_then(|t| t.get_mut(&m.partition())),
                m.timestamp().to_millis(),
            ) {
                p.lag_seconds = (now - ts).max(0) as f64 / 1000.0;
            }
            let mut done = TopicPartitionList::new();
            done.add_partition(m.topic(), m.partition());
            let _ = self.reader.incremental_unassign(&done);
        }
        self.reader.unassign()?;
        Ok(out)
    }

    /// Publishes a reading into `metrics` (the worker's lag families), removing partitions
    /// that disappeared since `previous`.
    pub fn publish(&self, metrics: &Metrics, lag: &GroupLag, previous: &GroupLag) {
        for (topic, parts) in previous {
            for p in parts.keys() {
                if !lag.get(topic).is_some_and(|ps| ps.contains_key(p)) {
                    metrics.forget_partition(WORKER_LABEL, &self.group, topic, *p);
                }
            }
        }
        for (topic, parts) in lag {
            let mut max = 0;
            for (p, l) in parts {
                metrics.set_partition(
                    WORKER_LABEL,
                    &self.group,
                    topic,
                    *p,
                    l.lag,
                    l.lag_seconds,
                    l.committed,
                );
                max = max.max(l.lag);
            }
            metrics.set_lag_max(WORKER_LABEL, &self.group, topic, max);
        }
    }
}
