//! Where each assigned partition stands, and the lag gauges derived from it. The book is the
//! one record of each partition's committed offset: both commit paths (at least once through
//! [`crate::committer`], exactly once through the transactions) write it here and ask it
//! whether an offset is ahead; a rewind reads it.
//!
//! The fetcher notes every record it hands to a lane as (offset, timestamp). A record leaves
//! this book when its offset is committed, which is when its end-to-end latency (timestamp →
//! commit) is observed. Once a second the book is read to publish, per partition:
//!
//! - lag in offsets: high watermark (from librdkafka statistics; the last stable offset under
//!   read_committed) minus the committed offset;
//! - lag in seconds: the age of the oldest fetched record not yet processed (at or after the
//!   lane's committable offset), 0 when the partition is caught up. Records the worker has not
//!   fetched yet have no timestamp it could know; while a partition has lag but nothing
//!   fetched, the last value stands.
//!
//! The book of one partition is bounded ([`MAX_PENDING`]): if commits stall for long, the
//! oldest entries are dropped (their latency is not observed; lag in seconds can only then
//! under-report).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use prometheus::Histogram;

use crate::metrics::{Metrics, PartitionMetrics};
use crate::record::{FastHash, TopicPartition};

/// Entries kept per partition.
pub(crate) const MAX_PENDING: usize = 1_000_000;

struct Book {
    pending: VecDeque<(i64, i64)>,
    high: Option<i64>,
    committed: Option<i64>,
    gauges: PartitionMetrics,
    end_to_end: Histogram,
}

/// What a publish found, for the worker's totals and its retry gauges.
#[derive(Debug, Default)]
pub(crate) struct Published {
    /// Lag summed over every partition.
    pub total_lag: i64,
    /// Max lag per topic.
    pub max_lag: HashMap<std::sync::Arc<str>, i64>,
    /// Lag summed per topic.
    pub topic_lag: HashMap<std::sync::Arc<str>, i64>,
}

/// Every assigned partition's book.
pub(crate) struct Progress {
    worker: String,
    group: String,
    metrics: Metrics,
    books: Mutex<HashMap<TopicPartition, Book, FastHash>>,
}

impl Progress {
    pub fn new(worker: &str, group: &str, metrics: Metrics) -> Self {
        Self {
            worker: worker.to_owned(),
            group: group.to_owned(),
            metrics,
            books: Mutex::new(HashMap::default()),
        }
    }

    pub fn assigned(&self, tp: &TopicPartition, end_to_end: Histogram) {
        let gauges = self
            .metrics
            .partition(&self.worker, &self.group, &tp.topic, tp.partition);
        self.books.lock().expect("progress lock").insert(
            tp.clone(),
            Book {
                pending: VecDeque::new(),
                high: None,
                committed: None,
                gauges,
                end_to_end,
            },
        );
    }

    pub fn released(&self, tp: &TopicPartition) {
        self.books.lock().expect("progress lock").remove(tp);
        self.metrics
            .forget_partition(&self.worker, &self.group, &tp.topic, tp.partition);
    }

    /// A record was handed to its lane.
    pub fn fetched(&self, tp: &TopicPartition, offset: i64, timestamp: Option<i64>) {
        let Some(ts) = timestamp else { return };
        if let Some(book) = self.books.lock().expect("progress lock").get_mut(tp) {
            if book.pending.len() == MAX_PENDING {
                book.pending.pop_front();
            }
            book.pending.push_back((offset, ts));
        }
    }

    /// Offsets below `offset` are committed: observe their end-to-end latency.
    pub fn committed(&self, tp: &TopicPartition, offset: i64, now_ms: i64) {
        let tap = self.metrics.end_to_end_tap();
        let mut tapped = Vec::new();
        if let Some(book) = self.books.lock().expect("progress lock").get_mut(tp) {
            while book.pending.front().is_some_and(|(o, _)| *o < offset) {
                let (_, ts) = book.pending.pop_front().expect("checked");
                let ms = (now_ms - ts).max(0);
                book.end_to_end.observe(ms as f64 / 1000.0);
                if tap.is_some() {
                    tapped.push(ms as u64);
                }
            }
            book.committed = Some(offset);
            book.gauges.committed.set(offset);
        }
        if let Some(tap) = tap.filter(|_| !tapped.is_empty()) {
            tap(&tapped);
        }
    }

    /// The last offset committed for `tp` since it was assigned, if any.
    pub fn committed_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.books
            .lock()
            .expect("progress lock")
            .get(tp)
            .and_then(|b| b.committed)
    }

    /// Whether committing `offset` would move `tp` forward (`-1`: nothing to commit yet).
    pub fn is_ahead(&self, tp: &TopicPartition, offset: i64) -> bool {
        offset >= 0 && self.committed_offset(tp).is_none_or(|c| c < offset)
    }

    /// The partition's high watermark, from statistics.
    pub fn watermark(&self, tp: &TopicPartition, high: i64) {
        if let Some(book) = self.books.lock().expect("progress lock").get_mut(tp) {
            book.high = Some(high);
        }
    }

    /// Publishes the gauges; `committable(tp)` is the lane's next offset to commit.
    pub fn publish(
        &self,
        now_ms: i64,
        committable: impl Fn(&TopicPartition) -> Option<i64>,
    ) -> Published {
        let mut out = Published::default();
        for (tp, book) in self.books.lock().expect("progress lock").iter() {
            let done = committable(tp).unwrap_or(-1);
            let from = book.committed.unwrap_or(-1).max(done);
            let lag = match (book.high, book.committed) {
                (Some(high), Some(c)) => (high - c).max(0),
                // Nothing committed yet: measure from the oldest record seen.
                (Some(high), None) => book.pending.front().map_or(0, |(o, _)| (high - o).max(0)),
                (None, _) => 0,
            };
            book.gauges.lag.set(lag);
            let i = book.pending.partition_point(|(o, _)| *o < from);
            match book.pending.get(i) {
                Some((_, ts)) => book
                    .gauges
                    .lag_seconds
                    .set((now_ms - ts).max(0) as f64 / 1000.0),
                None if lag == 0 => book.gauges.lag_seconds.set(0.0),
                None => {}
            }
            out.total_lag += lag;
            let max = out.max_lag.entry(tp.topic.clone()).or_default();
            *max = (*max).max(lag);
            *out.topic_lag.entry(tp.topic.clone()).or_default() += lag;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder as _;
    use std::sync::Arc;

    fn text(m: &Metrics) -> String {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&m.registry().gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn setup() -> (Metrics, Progress, TopicPartition) {
        let m = Metrics::default();
        let p = Progress::new("w", "g", m.clone());
        let tp = TopicPartition::new("t", 0);
        let e2e =
            prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("e2e", "h")).unwrap();
        p.assigned(&tp, e2e);
        (m, p, tp)
    }

    #[test]
    fn lag_seconds_is_the_age_of_the_oldest_unprocessed_record() {
        let (m, p, tp) = setup();
        for (offset, ts) in [(10, 1_000), (11, 2_000), (12, 3_000)] {
            p.fetched(&tp, offset, Some(ts));
        }
        p.watermark(&tp, 13);
        // Nothing processed yet: the oldest is offset 10, 9 s old at t=10 s.
        let out = p.publish(10_000, |_| None);
        assert_eq!(out.total_lag, 3);
        assert!(text(&m).contains("streamfleet_partition_lag_seconds{group=\"g\",partition=\"0\",topic=\"t\",worker=\"w\"} 9"));
        // 10 and 11 processed (not committed): the oldest unprocessed is 12.
        p.publish(10_000, |_| Some(12));
        assert!(text(&m).contains("streamfleet_partition_lag_seconds{group=\"g\",partition=\"0\",topic=\"t\",worker=\"w\"} 7"));
        // Committed to the end: caught up.
        p.committed(&tp, 13, 10_000);
        let out = p.publish(10_000, |_| Some(13));
        assert_eq!(out.total_lag, 0);
        assert!(text(&m).contains("streamfleet_partition_lag_seconds{group=\"g\",partition=\"0\",topic=\"t\",worker=\"w\"} 0"));
        assert!(text(&m).contains("streamfleet_partition_committed_offset{group=\"g\",partition=\"0\",topic=\"t\",worker=\"w\"} 13"));
    }

    #[test]
    fn committing_observes_end_to_end_latency_once_per_record() {
        let m = Metrics::default();
        let p = Progress::new("w", "g", m.clone());
        let tp = TopicPartition::new("t", 0);
        let e2e =
            prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("e2e", "h")).unwrap();
        p.assigned(&tp, e2e.clone());
        p.fetched(&tp, 0, Some(1_000));
        p.fetched(&tp, 1, Some(1_500));
        p.committed(&tp, 1, 2_000);
        p.committed(&tp, 1, 2_000);
        assert_eq!(e2e.get_sample_count(), 1);
        assert!((e2e.get_sample_sum() - 1.0).abs() < 1e-9);
        p.committed(&tp, 2, 2_000);
        assert_eq!(e2e.get_sample_count(), 2);
    }

    #[test]
    fn the_end_to_end_tap_sees_each_committed_record_once_in_milliseconds() {
        let (m, p, tp) = setup();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        m.tap_end_to_end(move |ms| s.lock().unwrap().push(ms.to_vec()));
        p.fetched(&tp, 0, Some(1_000));
        p.fetched(&tp, 1, Some(1_200));
        p.fetched(&tp, 2, Some(1_900));
        p.committed(&tp, 2, 2_000);
        p.committed(&tp, 2, 2_500);
        p.committed(&tp, 3, 2_050);
        assert_eq!(*seen.lock().unwrap(), vec![vec![1_000, 800], vec![150]]);
    }
}
