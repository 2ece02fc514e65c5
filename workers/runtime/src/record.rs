//! The record types that cross the runtime's boundary.
//!
//! A record enters as a [`RawRecord`] (bytes exactly as fetched, plus where it came from),
//! is decoded by the domain's [`Processor`](crate::Processor) into a [`Record`], and leaves as
//! zero or more [`OutputRecord`]s. The raw record is kept until its outputs are acknowledged so
//! that a failure can always dead-letter the original bytes, never a re-encoding of them.

use std::fmt;
use std::sync::Arc;

/// Kafka record headers, in the order they were written. Keys may repeat, as in Kafka.
pub type Headers = Vec<(String, Vec<u8>)>;

/// The hasher of the maps on the per-record path (keyed by topic-partition or topic name):
/// foldhash instead of SipHash, which was a tenth of the fetcher's CPU profile (README,
/// Benchmarks). Seeded per process like std's; the keys are names of this worker's own
/// topics, not input data.
pub(crate) type FastHash = foldhash::fast::RandomState;

/// One partition of one topic: the unit of ordering, assignment and commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// Builds a topic-partition from a topic name and a partition number.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// A record as fetched from Kafka, before decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    /// Topic the record was read from.
    pub topic: Arc<str>,
    /// Partition the record was read from.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
    /// Record timestamp in milliseconds since the Unix epoch, when the record has one.
    pub timestamp: Option<i64>,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Record headers.
    pub headers: Headers,
}

/// The headers of a consumed Kafka message, in order (a null header value becomes empty).
pub fn message_headers<M: rdkafka::Message>(m: &M) -> Headers {
    use rdkafka::message::Headers as _;
    m.headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl RawRecord {
    /// A copy of a consumed message; `topic` is passed in so that a caller reading many
    /// records can share one allocation per topic name.
    pub fn from_message<M: rdkafka::Message>(m: &M, topic: Arc<str>) -> Self {
        Self {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: message_headers(m),
        }
    }

    /// Bytes this record holds in memory, approximately: the struct and its buffers.
    pub fn footprint(&self) -> usize {
        std::mem::size_of::<Self>() + buffers(&self.key, &self.value, &self.headers)
    }

    /// The first header with this key, if any.
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        header(&self.headers, key)
    }

    /// The first header with this key decoded as UTF-8, if present and valid.
    pub fn header_str(&self, key: &str) -> Option<&str> {
        self.header(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The topic-partition this record came from.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }
}

/// Bytes of a record's key, value and headers (with the headers' own structs).
fn buffers(key: &Option<Vec<u8>>, value: &Option<Vec<u8>>, headers: &Headers) -> usize {
    key.as_ref().map_or(0, Vec::len)
        + value.as_ref().map_or(0, Vec::len)
        + headers
            .iter()
            .map(|(k, v)| std::mem::size_of::<(String, Vec<u8>)>() + k.len() + v.len())
            .sum::<usize>()
}

/// The first header with this key in a header list.
pub fn header<'h>(headers: &'h Headers, key: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

/// A decoded record handed to a [`Processor`](crate::Processor): the decoded value plus the raw
/// record it came from (key, headers, topic, partition, offset, timestamp).
#[derive(Debug)]
pub struct Record<'a, T> {
    /// The decoded value.
    pub value: T,
    /// The record as fetched.
    pub raw: &'a RawRecord,
}

impl<T> Record<'_, T> {
    /// Record key.
    pub fn key(&self) -> Option<&[u8]> {
        self.raw.key.as_deref()
    }
    /// Record headers.
    pub fn headers(&self) -> &Headers {
        &self.raw.headers
    }
    /// Topic the record was read from.
    pub fn topic(&self) -> &str {
        &self.raw.topic
    }
    /// Partition the record was read from.
    pub fn partition(&self) -> i32 {
        self.raw.partition
    }
    /// Offset of the record.
    pub fn offset(&self) -> i64 {
        self.raw.offset
    }
    /// Record timestamp in epoch milliseconds.
    pub fn timestamp(&self) -> Option<i64> {
        self.raw.timestamp
    }
}

/// A record a processor asks the runtime to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRecord {
    /// Destination topic.
    pub topic: String,
    /// Key; the partitioner (murmur2, as the Java client) picks the partition from it.
    pub key: Option<Vec<u8>>,
    /// Value; `None` produces a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers to attach.
    pub headers: Headers,
    /// Explicit partition, overriding the key's. Retry and dead-letter records use it to land
    /// on the partition number they came from.
    pub partition: Option<i32>,
}

impl OutputRecord {
    /// Bytes this record holds in memory, approximately: the struct and its buffers.
    pub fn footprint(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.topic.len()
            + buffers(&self.key, &self.value, &self.headers)
    }

    /// A keyed record for `topic`, partitioned by its key.
    pub fn keyed(topic: impl Into<String>, key: impl Into<Vec<u8>>, value: Vec<u8>) -> Self {
        Self {
            topic: topic.into(),
            key: Some(key.into()),
            value: Some(value),
            headers: Vec::new(),
            partition: None,
        }
    }
}
