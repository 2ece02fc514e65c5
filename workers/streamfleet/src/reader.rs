//! Reading whole topics (or offset ranges of them) with a plain consumer that never commits:
//! what the dead-letter tools and the verifier read with.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use streamfleet_runtime::clients;
use streamfleet_runtime::properties::{ClientScope, KafkaProperty};
use streamfleet_runtime::{CancellationToken, Headers};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Which records a reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Every record, aborted and open transactions included.
    ReadUncommitted,
    /// Records of committed transactions only (and non-transactional ones).
    ReadCommitted,
}

impl Isolation {
    fn as_str(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "read_uncommitted",
            Isolation::ReadCommitted => "read_committed",
        }
    }
}

/// A consumer that never commits, reading with `isolation`.
pub fn consumer(
    brokers: &str,
    props: &[KafkaProperty],
    group: &str,
    isolation: Isolation,
) -> anyhow::Result<BaseConsumer> {
    Ok(clients::build(
        brokers,
        &[
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
        ],
        props,
        ClientScope::Consumer,
        &[
            ("group.id", group.to_owned()),
            ("enable.auto.commit", "false".to_owned()),
            ("enable.auto.offset.store", "false".to_owned()),
            ("isolation.level", isolation.as_str().to_owned()),
        ],
    )
    .create()?)
}

/// Partitions of `topic` with their (low, high) watermarks; under read_committed, high is the
/// last stable offset.
pub fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let md = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow::anyhow!("topic {topic} not found"))?;
    if let Some(e) = t.error() {
        anyhow::bail!("topic {topic}: {e:?}");
    }
    let mut out = BTreeMap::new();
    for p in t.partitions() {
        out.insert(p.id(), consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?);
    }
    Ok(out)
}

/// A record as read.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp (epoch ms).
    pub timestamp: Option<i64>,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Headers,
}

fn fetched(m: &rdkafka::message::BorrowedMessage<'_>) -> Fetched {
    Fetched {
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers: streamfleet_runtime::record::message_headers(m),
    }
}

/// Reads `topic` from `start` offsets up to `end` offsets, calling `f` for each record;
/// `f` returns false to stop early. Returns the next offset per partition.
pub fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    start: &BTreeMap<i32, i64>,
    end: &BTreeMap<i32, i64>,
    stop: &CancellationToken,
    mut f: impl FnMut(Fetched) -> anyhow::Result<bool>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut next = start.clone();
    let mut tpl = TopicPartitionList::new();
    for (p, s) in start {
        if s < &end[p] {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*s))?;
        }
    }
    if tpl.count() == 0 {
        return Ok(next);
    }
    consumer.assign(&tpl)?;
    let mut idle_since = Instant::now();
    while !stop.is_cancelled() && next.iter().any(|(p, n)| n < &end[p]) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                let (p, o) = (m.partition(), m.offset());
                if o >= end[&p] {
                    continue;
                }
                let record = fetched(&m);
                next.insert(p, o + 1);
                if !f(record)? {
                    break;
                }
            }
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            None => {
                // Transaction markers and aborted records occupy offsets no record is
                // delivered for: trust the consumer's position then.
                for e in consumer.position()?.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        let n = next.entry(e.partition()).or_insert(o);
                        *n = (*n).max(o);
                    }
                }
                anyhow::ensure!(
                    idle_since.elapsed() < TIMEOUT,
                    "no progress reading {topic} for {TIMEOUT:?} (at {next:?} of {end:?})"
                );
            }
        }
    }
    Ok(next)
}

/// Every record of `topic` up to its end (the last stable offset under read_committed).
pub fn read_all(
    brokers: &str,
    props: &[KafkaProperty],
    topic: &str,
    isolation: Isolation,
) -> anyhow::Result<Vec<Fetched>> {
    let consumer = consumer(
        brokers,
        props,
        &format!("streamfleet-reader-{}", streamfleet_runtime::now_ms()),
        isolation,
    )?;
    let marks = watermarks(&consumer, topic)?;
    let start = marks.iter().map(|(p, (low, _))| (*p, *low)).collect();
    let end = marks.iter().map(|(p, (_, high))| (*p, *high)).collect();
    let mut out = Vec::new();
    read_range(
        &consumer,
        topic,
        &start,
        &end,
        &CancellationToken::new(),
        |r| {
            out.push(r);
            Ok(true)
        },
    )?;
    Ok(out)
}
