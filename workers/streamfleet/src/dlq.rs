//! Dead-letter tooling: inspect a dead-letter topic, and replay (redrive) its records to the
//! topics they came from.
//!
//! Both read the failure headers the runtime writes (see `streamfleet_runtime::headers`).
//!
//! Replay reads the dead-letter topic with a consumer group of its own (derived from the
//! topic and the filters, so the same command resumes where it stopped and a replay with
//! other filters starts afresh), up to the end offsets it saw when it started (records
//! dead-lettered again meanwhile are not replayed in a loop). A matching record goes back to
//! its original topic with its key, value and own headers, the failure headers replaced by
//! `streamfleet.replay.source` and `streamfleet.replayed.at`, so it starts again at attempt 1.
//!
//! Progress is committed so an interrupted replay resumes without republishing anything
//! twice: by default republished records and the group's offsets commit in one Kafka
//! transaction per batch (a crash aborts the open batch); with `transactional: false`
//! (brokers without transactions) each batch is flushed and acknowledged before its offsets
//! are committed, so a graceful stop loses and duplicates nothing and a crash can repeat at
//! most the batch in flight.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use streamfleet_runtime::clients::{self, PRODUCER_DEFAULTS};
use streamfleet_runtime::headers::{self, FailureInfo};
use streamfleet_runtime::properties::{ClientScope, KafkaProperty};
use streamfleet_runtime::{CancellationToken, ErrorClass, Headers, now_ms};

use crate::delivery::DeliveryTracker;
use crate::reader::{Isolation, consumer, read_range, watermarks};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A dead-letter record as the tools see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Dead-letter partition.
    pub partition: i32,
    /// Dead-letter offset.
    pub offset: i64,
    /// When it was dead-lettered (epoch ms).
    pub timestamp: Option<i64>,
    /// Key, as UTF-8 (lossy).
    pub key: Option<String>,
    /// Value size in bytes.
    pub value_bytes: usize,
    /// Every header, values as UTF-8 (lossy).
    pub headers: BTreeMap<String, String>,
}

/// Dead letters with the same class and message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Group {
    /// Error class.
    pub error_class: String,
    /// Error message.
    pub error_message: String,
    /// Records.
    pub count: u64,
    /// Oldest dead-letter timestamp (epoch ms).
    pub oldest: Option<i64>,
    /// Newest dead-letter timestamp (epoch ms).
    pub newest: Option<i64>,
    /// Records per original topic.
    pub original_topics: BTreeMap<String, u64>,
    /// The first few records.
    pub samples: Vec<Sample>,
}

/// What a dead-letter topic holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    /// The topic.
    pub topic: String,
    /// Records read.
    pub records: u64,
    /// Records per error class.
    pub by_class: BTreeMap<String, u64>,
    /// Records without failure headers (not written by streamfleet).
    pub without_headers: u64,
    /// Groups, largest first.
    pub groups: Vec<Group>,
}

fn header_map(headers: &Headers) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// Reads a whole dead-letter topic and summarises it.
pub fn inspect(
    brokers: &str,
    props: &[KafkaProperty],
    topic: &str,
    samples: usize,
) -> anyhow::Result<Inspection> {
    let consumer = consumer(
        brokers,
        props,
        &format!("streamfleet-dlq-inspect-{}", now_ms()),
        Isolation::ReadCommitted,
    )?;
    let marks = watermarks(&consumer, topic)?;
    let start = marks.iter().map(|(p, (low, _))| (*p, *low)).collect();
    let end = marks.iter().map(|(p, (_, high))| (*p, *high)).collect();
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut inspection = Inspection {
        topic: topic.to_owned(),
        records: 0,
        by_class: BTreeMap::new(),
        without_headers: 0,
        groups: Vec::new(),
    };
    read_range(
        &consumer,
        topic,
        &start,
        &end,
        &CancellationToken::new(),
        |r| {
            inspection.records += 1;
            let Some(info) = headers::parse_failure(&r.headers) else {
                inspection.without_headers += 1;
                return Ok(true);
            };
            let class = info.error_class.as_str().to_owned();
            *inspection.by_class.entry(class.clone()).or_default() += 1;
            let g = groups
                .entry((class.clone(), info.error_message.clone()))
                .or_insert_with(|| Group {
                    error_class: class,
                    error_message: info.error_message.clone(),
                    count: 0,
                    oldest: None,
                    newest: None,
                    original_topics: BTreeMap::new(),
                    samples: Vec::new(),
                });
            g.count += 1;
            if let Some(ts) = r.timestamp {
                g.oldest = Some(g.oldest.map_or(ts, |o| o.min(ts)));
                g.newest = Some(g.newest.map_or(ts, |n| n.max(ts)));
            }
            *g.original_topics
                .entry(info.original_topic.clone())
                .or_default() += 1;
            if g.samples.len() < samples {
                g.samples.push(Sample {
                    partition: r.partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r
                        .key
                        .as_ref()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    value_bytes: r.value.as_ref().map_or(0, Vec::len),
                    headers: header_map(&r.headers),
                });
            }
            Ok(true)
        },
    )?;
    inspection.groups = groups.into_values().collect();
    inspection.groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.error_message.cmp(&b.error_message))
    });
    Ok(inspection)
}

/// Fails when a delivery failed: progress is never committed past a record that did not
/// arrive.
fn check(producer: &ThreadedProducer<DeliveryTracker>) -> anyhow::Result<()> {
    match producer.context().failure() {
        Some(failure) => anyhow::bail!("{failure}; progress not committed"),
        None => Ok(()),
    }
}

/// Which dead letters to replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these classes (all when empty).
    pub classes: Vec<ErrorClass>,
    /// Only records dead-lettered at or after this time (epoch ms).
    pub since_ms: Option<i64>,
    /// Only records dead-lettered before this time (epoch ms).
    pub until_ms: Option<i64>,
    /// Only records with this key.
    pub key: Option<Vec<u8>>,
}

impl Filter {
    /// A stable text form (the progress group is derived from it, so it must not change
    /// across builds).
    fn canonical(&self) -> String {
        let mut classes: Vec<&str> = self.classes.iter().map(|c| c.as_str()).collect();
        classes.sort_unstable();
        let key: String = self
            .key
            .iter()
            .flatten()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "classes={};since={:?};until={:?};key={key}",
            classes.join(","),
            self.since_ms,
            self.until_ms
        )
    }

    fn matches(&self, info: &FailureInfo, timestamp: Option<i64>, key: Option<&[u8]>) -> bool {
        (self.classes.is_empty() || self.classes.contains(&info.error_class))
            && self
                .since_ms
                .is_none_or(|s| timestamp.is_some_and(|t| t >= s))
            && self
                .until_ms
                .is_none_or(|u| timestamp.is_some_and(|t| t < u))
            && self.key.as_deref().is_none_or(|k| key == Some(k))
    }
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Bootstrap servers.
    pub brokers: String,
    /// librdkafka properties.
    pub props: Vec<KafkaProperty>,
    /// The dead-letter topic.
    pub topic: String,
    /// Which records.
    pub filter: Filter,
    /// At most this many records republished.
    pub limit: Option<u64>,
    /// At most this many records per second.
    pub rate: Option<u64>,
    /// Count and report, publish and commit nothing.
    pub dry_run: bool,
    /// Progress group [default: derived from the topic and the filter].
    pub group: Option<String>,
    /// Commit records and progress in one transaction per batch.
    pub transactional: bool,
}

impl ReplayOptions {
    /// The consumer group that records this replay's progress.
    pub fn group(&self) -> String {
        self.group.clone().unwrap_or_else(|| {
            // FNV-1a: stable across builds and platforms.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in self.filter.canonical().bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            format!("streamfleet-dlq-replay.{}.{:08x}", self.topic, h as u32)
        })
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayReport {
    /// Progress group.
    pub group: String,
    /// Dead letters read.
    pub scanned: u64,
    /// Dead letters that matched the filter.
    pub matched: u64,
    /// Records republished (0 in a dry run).
    pub republished: u64,
    /// Records without failure headers (not replayable; left alone).
    pub without_headers: u64,
    /// Republished (or, in a dry run, to be republished) per destination topic.
    pub by_topic: BTreeMap<String, u64>,
    /// Matching records left for a later run (`--limit` reached or interrupted).
    pub remaining: bool,
}

/// Records republished per transaction (or per flush-and-commit without transactions).
const BATCH: u64 = 100;

/// Replays dead letters to their original topics. Blocking: run it on a blocking thread.
/// `progress(done, total)` is called as records are read.
pub fn replay(
    opts: &ReplayOptions,
    stop: &CancellationToken,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<ReplayReport> {
    let group = opts.group();
    let consumer = consumer(&opts.brokers, &opts.props, &group, Isolation::ReadCommitted)?;
    let marks = watermarks(&consumer, &opts.topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in marks.keys() {
        tpl.add_partition(&opts.topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT)?;
    let mut start = BTreeMap::new();
    for (p, (low, _)) in &marks {
        let c = committed
            .find_partition(&opts.topic, *p)
            .and_then(|e| e.offset().to_raw())
            .filter(|o| *o >= 0);
        start.insert(*p, c.unwrap_or(*low).max(*low));
    }
    let end: BTreeMap<i32, i64> = marks.iter().map(|(p, (_, high))| (*p, *high)).collect();
    let total: u64 = end.iter().map(|(p, e)| (e - start[p]).max(0) as u64).sum();

    let producer: Option<ThreadedProducer<DeliveryTracker>> = if opts.dry_run {
        None
    } else {
        let mut fixed = vec![("client.id", format!("{group}-producer"))];
        if opts.transactional {
            fixed.push(("transactional.id", group.clone()));
        }
        let p: ThreadedProducer<DeliveryTracker> = clients::build(
            &opts.brokers,
            PRODUCER_DEFAULTS,
            &opts.props,
            ClientScope::Producer,
            &fixed,
        )
        .create_with_context(DeliveryTracker::default())?;
        if opts.transactional {
            p.init_transactions(TIMEOUT)?;
            p.begin_transaction()?;
        }
        Some(p)
    };

    let mut report = ReplayReport {
        group: group.clone(),
        ..ReplayReport::default()
    };
    let mut uncommitted = 0u64;
    let mut done_offsets = start.clone();
    let started = Instant::now();
    let limit_reached = |r: &ReplayReport| opts.limit.is_some_and(|l| r.matched >= l);
    let commit = |producer: &ThreadedProducer<DeliveryTracker>,
                  offsets: &BTreeMap<i32, i64>|
     -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(&opts.topic, *p, Offset::Offset(*o))?;
        }
        if opts.transactional {
            let cgm = consumer
                .group_metadata()
                .ok_or_else(|| anyhow::anyhow!("no group metadata"))?;
            producer.send_offsets_to_transaction(&tpl, &cgm, TIMEOUT)?;
            producer.commit_transaction(TIMEOUT)?;
            check(producer)?;
            producer.begin_transaction()?;
        } else {
            producer.flush(TIMEOUT)?;
            check(producer)?;
            consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;
        }
        Ok(())
    };

    let read = read_range(&consumer, &opts.topic, &start, &end, stop, |r| {
        if limit_reached(&report) {
            return Ok(false);
        }
        report.scanned += 1;
        let matched = match headers::parse_failure(&r.headers) {
            None => {
                report.without_headers += 1;
                None
            }
            Some(info) => opts
                .filter
                .matches(&info, r.timestamp, r.key.as_deref())
                .then_some(info),
        };
        if let Some(info) = matched {
            report.matched += 1;
            *report
                .by_topic
                .entry(info.original_topic.clone())
                .or_default() += 1;
            if let Some(producer) = &producer {
                let mut hs = OwnedHeaders::new();
                for (k, v) in headers::user_headers(&r.headers) {
                    hs = hs.insert(Header {
                        key: &k,
                        value: Some(v.as_slice()),
                    });
                }
                let source = format!("{}/{}/{}", opts.topic, r.partition, r.offset);
                let at = now_ms().to_string();
                hs = hs.insert(Header {
                    key: headers::REPLAY_SOURCE,
                    value: Some(source.as_bytes()),
                });
                hs = hs.insert(Header {
                    key: headers::REPLAYED_AT,
                    value: Some(at.as_bytes()),
                });
                let mut record: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(&info.original_topic).headers(hs);
                if let Some(k) = &r.key {
                    record = record.key(k.as_slice());
                } else {
                    record = record.partition(info.original_partition);
                }
                if let Some(v) = &r.value {
                    record = record.payload(v.as_slice());
                }
                let mut record = record;
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((e, back))
                            if e.rdkafka_error_code()
                                == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                        {
                            std::thread::sleep(Duration::from_millis(5));
                            record = back;
                        }
                        Err((e, _)) => {
                            anyhow::bail!("republishing {source} to {}: {e}", info.original_topic)
                        }
                    }
                }
                report.republished += 1;
                uncommitted += 1;
            }
            if let Some(rate) = opts.rate.filter(|r| *r > 0) {
                let due = started + Duration::from_secs_f64(report.matched as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }
        done_offsets.insert(r.partition, r.offset + 1);
        if let Some(producer) = &producer
            && uncommitted >= BATCH
        {
            commit(producer, &done_offsets)?;
            uncommitted = 0;
        }
        progress(report.scanned, total);
        Ok(!stop.is_cancelled())
    });
    match (read, &producer) {
        (Ok(next), Some(producer)) => {
            // Records with no record delivered (markers) count as done too.
            for (p, n) in next {
                let d = done_offsets.entry(p).or_insert(n);
                if report.matched < opts.limit.unwrap_or(u64::MAX) {
                    *d = (*d).max(n);
                }
            }
            commit(producer, &done_offsets)?;
        }
        (Ok(_), None) => {}
        (Err(e), Some(producer)) => {
            if opts.transactional {
                let _ = producer.abort_transaction(TIMEOUT);
            }
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    }
    report.remaining = done_offsets.iter().any(|(p, d)| *d < end[p]);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(class: ErrorClass) -> FailureInfo {
        FailureInfo {
            original_topic: "t".into(),
            original_partition: 0,
            original_offset: 0,
            original_timestamp: None,
            attempt: 1,
            due_at: None,
            error_class: class,
            error_message: "m".into(),
            group: "g".into(),
            instance: "i".into(),
            first_failure_at: 0,
        }
    }

    #[test]
    fn filters_combine() {
        let f = Filter {
            classes: vec![ErrorClass::Malformed],
            since_ms: Some(100),
            until_ms: Some(200),
            key: Some(b"k".to_vec()),
        };
        assert!(f.matches(&info(ErrorClass::Malformed), Some(150), Some(b"k")));
        assert!(!f.matches(&info(ErrorClass::Permanent), Some(150), Some(b"k")));
        assert!(!f.matches(&info(ErrorClass::Malformed), Some(200), Some(b"k")));
        assert!(!f.matches(&info(ErrorClass::Malformed), Some(99), Some(b"k")));
        assert!(!f.matches(&info(ErrorClass::Malformed), Some(150), Some(b"x")));
        assert!(!f.matches(&info(ErrorClass::Malformed), None, Some(b"k")));
        assert!(Filter::default().matches(&info(ErrorClass::Transient), None, None));
    }

    #[test]
    fn the_progress_group_depends_on_topic_and_filter() {
        let opts = |filter: Filter| ReplayOptions {
            brokers: String::new(),
            props: vec![],
            topic: "t-dlt".into(),
            filter,
            limit: None,
            rate: None,
            dry_run: false,
            group: None,
            transactional: true,
        };
        let all = opts(Filter::default());
        assert_eq!(
            all.group(),
            opts(Filter::default()).group(),
            "stable across runs"
        );
        let some = opts(Filter {
            classes: vec![ErrorClass::Malformed],
            ..Filter::default()
        });
        assert_ne!(all.group(), some.group());
        assert!(all.group().starts_with("streamfleet-dlq-replay.t-dlt."));
    }
}
