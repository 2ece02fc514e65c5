//! Key order through retries (`ordering: key`): while a key has a record in the retry path,
//! later records of that key wait behind it; other keys flow.
//!
//! ```text
//!   source record of key K ── K waits? ──no──► process ──transient──► retry rung; K waits,
//!                                │                                    headed by this record
//!                               yes
//!                                ▼
//!                         parked behind K's head (in the state, so in the changelog);
//!                         its offset commits
//!   rung record of key K (K's head) ──► process ──transient──► next rung, K still waits
//!                                          │ succeeded or dead-lettered
//!                                          ▼
//!                         K's parked records, in order, processed now; the first that fails
//!                         transiently becomes K's new head and the rest stay parked
//! ```
//!
//! What waits is part of the partition's state: each waiting key and each parked record is an
//! entry of the source's changelog, so it survives a restart, a rebalance and a crash (the
//! head itself is in its retry rung). Parked records are bounded by count and bytes; past
//! the bound the source lane stops taking records, so its queue fills and the fetcher pauses
//! the partition rather than buffer more.
//!
//! Changelog entries (their key starts with [`PREFIX`] and they carry the [`META_HEADER`]
//! header, which is how a restore tells them from the processor's own entries):
//! - `PREFIX w <key>` → the head's source offset and since when the key waits (two i64, big
//!   endian); deleted once nothing of the key waits;
//! - `PREFIX p <seq: u64 big endian> <key>` → a parked record (postcard); deleted once
//!   processed.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::record::{Headers, RawRecord};
use crate::store::{Change, RestoreError};

/// The key prefix of the runtime's own changelog entries.
pub(crate) const PREFIX: &[u8] = b"\0sf\0";
/// The header that marks the runtime's own changelog entries.
pub(crate) const META_HEADER: &str = "streamfleet.state";

const WAIT: u8 = b'w';
const PARK: u8 = b'p';

/// How a source topic keeps order through retries (`ordering` in `topics.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Records of a key are processed in offset order, retries included: while one waits in
    /// the retry path, the later ones of its key wait behind it.
    #[default]
    Key,
    /// Records of a partition are processed in offset order; a record that waits in the retry
    /// path is overtaken by later ones.
    Partition,
    /// No order is promised beyond what `partition` gives (the same behaviour).
    None,
}

impl Ordering {
    /// The `topics.yaml` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::Key => "key",
            Ordering::Partition => "partition",
            Ordering::None => "none",
        }
    }
}

/// A parked record as the changelog holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredRecord {
    topic: String,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Headers,
}

#[derive(Debug, Default)]
struct Chain {
    /// The source offset of the record in the retry path; `None` while the parked records
    /// are being processed (or when a crash lost the head's entry but not its parked ones).
    head: Option<i64>,
    /// When the key started waiting (epoch ms, wall clock).
    since_ms: i64,
    parked: VecDeque<(u64, RawRecord)>,
}

/// What to do with a record of a waiting key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Process it.
    Process,
    /// Park it behind the key's head.
    Park,
    /// It is the head or a parked record seen again (a restart reprocessing records whose
    /// offsets were not committed): drop it.
    Replay,
}

/// The keys of one source partition that wait, and the records parked behind them.
#[derive(Debug, Default)]
pub(crate) struct KeyOrder {
    chains: HashMap<Vec<u8>, Chain, foldhash::fast::RandomState>,
    records: usize,
    bytes: usize,
    next_seq: u64,
    changes: Vec<Change>,
}

fn wait_key(key: &[u8]) -> Vec<u8> {
    [PREFIX, &[WAIT], key].concat()
}

fn park_key(seq: u64, key: &[u8]) -> Vec<u8> {
    [PREFIX, &[PARK], &seq.to_be_bytes(), key].concat()
}

impl KeyOrder {
    /// Whether nothing waits (the common case: one branch per record).
    pub fn is_idle(&self) -> bool {
        self.chains.is_empty()
    }

    /// A record read from the source partition.
    pub fn on_source(&self, key: &[u8], offset: i64) -> Verdict {
        match self.chains.get(key) {
            None => Verdict::Process,
            Some(c)
                if c.head == Some(offset) || c.parked.iter().any(|(_, r)| r.offset == offset) =>
            {
                Verdict::Replay
            }
            Some(_) => Verdict::Park,
        }
    }

    /// A record read from a retry rung, whose source offset is `original_offset`.
    pub fn on_rung(&self, key: &[u8], original_offset: i64) -> Verdict {
        match self.chains.get(key) {
            None => Verdict::Process,
            Some(c) if c.head == Some(original_offset) || c.head.is_none() => Verdict::Process,
            Some(c) if c.parked.iter().any(|(_, r)| r.offset == original_offset) => Verdict::Replay,
            Some(_) => Verdict::Park,
        }
    }

    /// Parks `record` behind its key's head.
    pub fn park(&mut self, key: &[u8], record: RawRecord, now_ms: i64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let stored = StoredRecord {
            topic: record.topic.to_string(),
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
        };
        self.changes.push(Change {
            key: park_key(seq, key),
            value: Some(postcard::to_allocvec(&stored).expect("a record serialises")),
        });
        self.records += 1;
        self.bytes += record.footprint();
        let chain = self.chains.entry(key.to_vec()).or_default();
        if chain.head.is_none() && chain.parked.is_empty() {
            chain.since_ms = now_ms;
        }
        chain.parked.push_back((seq, record));
    }

    /// The record at `offset` of the source went to the retry path: its key waits behind it.
    pub fn block(&mut self, key: &[u8], offset: i64, now_ms: i64) {
        let chain = self.chains.entry(key.to_vec()).or_default();
        if chain.head.is_none() && chain.parked.is_empty() {
            chain.since_ms = now_ms;
        }
        chain.head = Some(offset);
        let since = chain.since_ms;
        self.changes.push(Change {
            key: wait_key(key),
            value: Some([offset.to_be_bytes(), since.to_be_bytes()].concat()),
        });
    }

    /// The key's head left the retry path (succeeded or dead-lettered): the key waits only
    /// for its parked records, which the caller takes with [`Self::next_parked`].
    pub fn head_resolved(&mut self, key: &[u8]) {
        if let Some(chain) = self.chains.get_mut(key) {
            chain.head = None;
            self.forget_if_empty(key);
        }
    }

    /// Takes the key's next parked record, if its key has no head in the retry path.
    pub fn next_parked(&mut self, key: &[u8]) -> Option<RawRecord> {
        let chain = self.chains.get_mut(key)?;
        if chain.head.is_some() {
            return None;
        }
        let (seq, record) = chain.parked.pop_front()?;
        self.records -= 1;
        self.bytes -= record.footprint();
        self.changes.push(Change {
            key: park_key(seq, key),
            value: None,
        });
        self.forget_if_empty(key);
        Some(record)
    }

    fn forget_if_empty(&mut self, key: &[u8]) {
        if self
            .chains
            .get(key)
            .is_some_and(|c| c.head.is_none() && c.parked.is_empty())
        {
            self.chains.remove(key);
            self.changes.push(Change {
                key: wait_key(key),
                value: None,
            });
        }
    }

    /// Whether `key` has parked records and no head: they are due now (a crash lost the
    /// head's entry, or a restore found them so).
    pub fn is_headless(&self, key: &[u8]) -> bool {
        self.chains
            .get(key)
            .is_some_and(|c| c.head.is_none() && !c.parked.is_empty())
    }

    /// Whether parked records reached either bound.
    pub fn is_full(&self, max_records: usize, max_bytes: usize) -> bool {
        self.records >= max_records || self.bytes >= max_bytes
    }

    /// Keys waiting.
    pub fn waiting_keys(&self) -> usize {
        self.chains.len()
    }

    /// Records parked.
    pub fn parked_records(&self) -> usize {
        self.records
    }

    /// Since when the longest-waiting key waits (epoch ms).
    pub fn oldest_since(&self) -> Option<i64> {
        self.chains.values().map(|c| c.since_ms).min()
    }

    /// Moves the changelog entries of what changed into `out`.
    pub fn drain_changes(&mut self, out: &mut Vec<Change>) {
        out.append(&mut self.changes);
    }

    /// Applies one of the runtime's changelog entries (see the module doc) while restoring;
    /// `topic` is the source the parked records were read from when they carry none.
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RestoreError> {
        let bad = |what: &str| RestoreError(format!("{what} (key {key:?})"));
        let rest = key
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("a streamfleet entry without the streamfleet prefix"))?;
        match rest.split_first() {
            Some((&WAIT, k)) => match value {
                Some(v) if v.len() == 16 => {
                    let head = i64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                    let since = i64::from_be_bytes(v[8..].try_into().expect("8 bytes"));
                    let chain = self.chains.entry(k.to_vec()).or_default();
                    chain.head = Some(head);
                    chain.since_ms = since;
                }
                Some(_) => return Err(bad("a waiting key's entry is not 16 bytes")),
                None => {
                    if let Some(c) = self.chains.get_mut(k) {
                        c.head = None;
                    }
                }
            },
            Some((&PARK, r)) if r.len() >= 8 => {
                let seq = u64::from_be_bytes(r[..8].try_into().expect("8 bytes"));
                let k = &r[8..];
                self.next_seq = self.next_seq.max(seq + 1);
                let chain = self.chains.entry(k.to_vec()).or_default();
                chain.parked.retain(|(s, _)| *s != seq);
                if let Some(v) = value {
                    let s: StoredRecord = postcard::from_bytes(v)
                        .map_err(|e| bad(&format!("a parked record does not decode: {e}")))?;
                    let record = RawRecord {
                        topic: s.topic.into(),
                        partition: -1,
                        offset: s.offset,
                        timestamp: s.timestamp,
                        key: s.key,
                        value: s.value,
                        headers: s.headers,
                    };
                    let at = chain.parked.partition_point(|(q, _)| *q < seq);
                    chain.parked.insert(at, (seq, record));
                }
            }
            _ => return Err(bad("an unknown streamfleet entry")),
        }
        Ok(())
    }

    /// After a restore: drops empty chains and recounts the bounds.
    pub fn restored(&mut self, partition: i32) {
        self.chains
            .retain(|_, c| c.head.is_some() || !c.parked.is_empty());
        self.records = 0;
        self.bytes = 0;
        for c in self.chains.values_mut() {
            for (_, r) in c.parked.iter_mut() {
                r.partition = partition;
                self.records += 1;
                self.bytes += r.footprint();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, offset: i64) -> RawRecord {
        RawRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            timestamp: Some(offset * 10),
            key: Some(key.as_bytes().to_vec()),
            value: Some(format!("v{offset}").into_bytes()),
            headers: vec![("h".into(), b"x".to_vec())],
        }
    }

    fn restore_from(log: &[Change]) -> KeyOrder {
        let mut o = KeyOrder::default();
        for c in log {
            o.restore(&c.key, c.value.as_deref()).unwrap();
        }
        o.restored(0);
        o
    }

    #[test]
    fn later_records_of_a_waiting_key_park_and_come_back_in_order() {
        let mut o = KeyOrder::default();
        assert_eq!(o.on_source(b"k", 1), Verdict::Process);
        o.block(b"k", 1, 100);
        assert_eq!(o.on_source(b"other", 2), Verdict::Process);
        assert_eq!(o.on_source(b"k", 3), Verdict::Park);
        o.park(b"k", rec("k", 3), 101);
        o.park(b"k", rec("k", 4), 102);
        assert_eq!(
            o.on_source(b"k", 3),
            Verdict::Replay,
            "a parked record seen again"
        );
        assert_eq!(o.on_source(b"k", 1), Verdict::Replay, "the head seen again");
        assert_eq!(
            o.on_rung(b"k", 1),
            Verdict::Process,
            "the head comes back from its rung"
        );
        assert_eq!(
            o.next_parked(b"k"),
            None,
            "nothing moves while the head waits"
        );
        o.head_resolved(b"k");
        assert_eq!(o.next_parked(b"k").unwrap().offset, 3);
        assert_eq!(o.next_parked(b"k").unwrap().offset, 4);
        assert!(o.is_idle());
        assert_eq!(o.oldest_since(), None);
    }

    #[test]
    fn a_parked_record_that_fails_becomes_the_head() {
        let mut o = KeyOrder::default();
        o.block(b"k", 1, 0);
        o.park(b"k", rec("k", 2), 0);
        o.park(b"k", rec("k", 3), 0);
        o.head_resolved(b"k");
        let two = o.next_parked(b"k").unwrap();
        o.block(b"k", two.offset, 5);
        assert_eq!(o.next_parked(b"k"), None);
        assert_eq!(o.on_source(b"k", 9), Verdict::Park);
        assert_eq!(o.parked_records(), 1);
        assert_eq!(o.waiting_keys(), 1);
    }

    #[test]
    fn the_changelog_restores_what_waits() {
        let mut o = KeyOrder::default();
        let mut log = Vec::new();
        o.block(b"a", 10, 7);
        o.park(b"a", rec("a", 11), 8);
        o.park(b"a", rec("a", 12), 9);
        o.block(b"b", 20, 7);
        o.park(b"b", rec("b", 21), 8);
        o.drain_changes(&mut log);
        // b's head succeeds and its parked record is processed.
        o.head_resolved(b"b");
        assert_eq!(o.next_parked(b"b").unwrap().offset, 21);
        o.drain_changes(&mut log);
        let r = restore_from(&log);
        assert_eq!(r.waiting_keys(), 1);
        assert_eq!(r.parked_records(), 2);
        assert_eq!(r.on_source(b"a", 11), Verdict::Replay);
        assert_eq!(r.on_source(b"a", 13), Verdict::Park);
        assert_eq!(r.on_source(b"b", 22), Verdict::Process);
        assert_eq!(r.oldest_since(), Some(7));
        let mut r = r;
        r.head_resolved(b"a");
        let back = r.next_parked(b"a").unwrap();
        assert_eq!(back.value, rec("a", 11).value);
        assert_eq!(back.headers, rec("a", 11).headers);
        assert_eq!(back.partition, 0);
    }

    #[test]
    fn parked_records_without_their_head_are_due() {
        let mut o = KeyOrder::default();
        let mut log = Vec::new();
        o.block(b"k", 1, 0);
        o.park(b"k", rec("k", 2), 0);
        o.drain_changes(&mut log);
        // A crash lost the wait entry's last write (a tombstone) but not the parked record.
        log.push(Change {
            key: wait_key(b"k"),
            value: None,
        });
        let r = restore_from(&log);
        assert!(r.is_headless(b"k"));
    }

    #[test]
    fn bounds_count_records_and_bytes() {
        let mut o = KeyOrder::default();
        o.block(b"k", 0, 0);
        for i in 1..=3 {
            o.park(b"k", rec("k", i), 0);
        }
        assert!(o.is_full(3, usize::MAX));
        assert!(!o.is_full(4, usize::MAX));
        assert!(o.is_full(100, 1));
    }

    #[test]
    fn corrupt_entries_are_refused() {
        let mut o = KeyOrder::default();
        assert!(o.restore(&wait_key(b"k"), Some(b"short")).is_err());
        assert!(
            o.restore(&park_key(1, b"k"), Some(b"\xff\xff\xff"))
                .is_err()
        );
        assert!(o.restore(b"\0sf\0zzz", Some(b"")).is_err());
    }

    proptest::proptest! {
        /// Whatever fails and whenever, each key's records come out in offset order, each
        /// once: the order a processor sees is the order of the partition, per key.
        #[test]
        fn per_key_order_holds_under_random_transient_failures(
            records in proptest::collection::vec((0u8..4, proptest::bool::ANY), 1..200),
            resolutions in proptest::collection::vec(0u8..4, 0..400),
        ) {
            let mut o = KeyOrder::default();
            let mut processed: Vec<(u8, i64)> = Vec::new();
            // Failures are drawn per (record, attempt); a record fails at most twice.
            let mut attempts: HashMap<i64, u32> = HashMap::new();
            let fails = |offset: i64, attempts: &mut HashMap<i64, u32>, flaky: bool| {
                let n = attempts.entry(offset).or_default();
                *n += 1;
                flaky && *n <= 2
            };
            let flaky: HashMap<i64, bool> =
                records.iter().enumerate().map(|(i, (_, f))| (i as i64, *f)).collect();
            let mut in_retry: Vec<(u8, i64)> = Vec::new();
            let drain = |o: &mut KeyOrder, k: u8, processed: &mut Vec<(u8, i64)>,
                             attempts: &mut HashMap<i64, u32>, in_retry: &mut Vec<(u8, i64)>| {
                while let Some(p) = o.next_parked(&[k]) {
                    if fails(p.offset, attempts, flaky[&p.offset]) {
                        o.block(&[k], p.offset, 0);
                        in_retry.push((k, p.offset));
                        break;
                    }
                    processed.push((k, p.offset));
                }
            };
            let mut step = resolutions.iter();
            for (offset, (k, _)) in records.iter().enumerate() {
                let offset = offset as i64;
                match o.on_source(&[*k], offset) {
                    Verdict::Process => {
                        if fails(offset, &mut attempts, flaky[&offset]) {
                            o.block(&[*k], offset, 0);
                            in_retry.push((*k, offset));
                        } else {
                            processed.push((*k, offset));
                        }
                    }
                    Verdict::Park => o.park(&[*k], rec("k", offset), 0),
                    Verdict::Replay => unreachable!("each offset is read once"),
                }
                // Now and then a record in the retry path comes back, in rung order.
                if let Some(pick) = step.next()
                    && !in_retry.is_empty()
                {
                    let (k, head) = in_retry.remove(*pick as usize % in_retry.len());
                    proptest::prop_assert_eq!(o.on_rung(&[k], head), Verdict::Process);
                    if fails(head, &mut attempts, flaky[&head]) {
                        o.block(&[k], head, 0);
                        in_retry.push((k, head));
                    } else {
                        processed.push((k, head));
                        o.head_resolved(&[k]);
                        drain(&mut o, k, &mut processed, &mut attempts, &mut in_retry);
                    }
                }
            }
            while let Some((k, head)) = in_retry.pop() {
                if fails(head, &mut attempts, flaky[&head]) {
                    o.block(&[k], head, 0);
                    in_retry.insert(0, (k, head));
                    continue;
                }
                processed.push((k, head));
                o.head_resolved(&[k]);
                drain(&mut o, k, &mut processed, &mut attempts, &mut in_retry);
            }
            proptest::prop_assert!(o.is_idle());
            proptest::prop_assert_eq!(processed.len(), records.len());
            for k in 0u8..4 {
                let offsets: Vec<i64> = processed.iter().filter(|(x, _)| *x == k).map(|(_, o)| *o).collect();
                let mut sorted = offsets.clone();
                sorted.sort_unstable();
                proptest::prop_assert_eq!(offsets, sorted, "key {} out of order", k);
            }
        }
    }
}
