//! State stores: what a processor keeps per partition, and how every change of it reaches a
//! compacted changelog topic and comes back after a restart, a rebalance or a crash.
//!
//! The model is Kafka Streams' state store. A processor's state type implements
//! [`StateStore`]: it records each change it makes (a key and its new value, or a tombstone)
//! and hands them over in [`StateStore::drain_changes`]; the runtime writes them to
//! `<source>-changelog`, partition for partition, and before the first record of a newly
//! assigned partition replays that changelog into a fresh state with
//! [`StateStore::restore`]:
//!
//! ```text
//!   process(state, record) ─► outputs
//!        │ state records its changes
//!        ▼
//!   drain_changes ─► <source>-changelog[p]  (exactly once: in the record's transaction;
//!                                            at least once: once its outputs are acked,
//!                                            and before its offset is committed)
//!   assignment of p ─► restore(key, value) for every changelog entry of p ─► first record
//! ```
//!
//! Entries expire by stream time, not wall-clock time: the runtime calls
//! [`StateStore::expire`] with the largest record timestamp the partition has processed, so a
//! replay of the same records forgets the same entries. A forgotten entry is a tombstone in the
//! changelog, so the topic stays as small as the state.
//!
//! [`KeyValueStore`] is the ready-made store: a map from key bytes to a value that knows how to
//! encode itself and when it expires. A processor with a more compact representation (the
//! booking table) implements [`StateStore`] itself.

use std::collections::{BTreeSet, HashMap, HashSet};

/// One change of a store, as written to its changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The changelog record's key.
    pub key: Vec<u8>,
    /// The new value; `None` deletes the key (a tombstone, removed by compaction).
    pub value: Option<Vec<u8>>,
}

/// Why a changelog entry could not be restored: the partition is not processed on guessed
/// state; an operator must repair or reset the changelog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RestoreError(pub String);

/// The state a processor keeps for one source partition.
pub trait StateStore: Default + Send + 'static {
    /// Applies one changelog entry while restoring (`None`: the key was deleted).
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RestoreError>;

    /// Moves the changes made since the last call into `out`, in the order they must be
    /// applied.
    fn drain_changes(&mut self, out: &mut Vec<Change>);

    /// Stream time reached `now_ms`: forget the entries that expired by then, recording each
    /// as a change (tombstone).
    fn expire(&mut self, now_ms: i64) {
        let _ = now_ms;
    }

    /// Entries held (the `streamfleet_state_entries` gauge).
    fn entries(&self) -> usize {
        0
    }
}

/// A stateless processor's state.
impl StateStore for () {
    fn restore(&mut self, _: &[u8], _: Option<&[u8]>) -> Result<(), RestoreError> {
        Ok(())
    }

    fn drain_changes(&mut self, _: &mut Vec<Change>) {}
}

/// A value of a [`KeyValueStore`].
pub trait StoredValue: Sized + Send + 'static {
    /// The changelog form.
    fn encode(&self) -> Vec<u8>;
    /// Back from the changelog form.
    fn decode(bytes: &[u8]) -> Result<Self, RestoreError>;
    /// The stream time (epoch ms) from which the entry is forgotten; `None`: kept until
    /// deleted.
    fn expires_at(&self) -> Option<i64>;
}

/// A map of key bytes to values, whose every change goes to the changelog.
pub struct KeyValueStore<V> {
    entries: HashMap<Vec<u8>, V, foldhash::fast::RandomState>,
    /// Keys changed since the last drain, in the order they first changed.
    dirty: Vec<Vec<u8>>,
    dirty_set: HashSet<Vec<u8>, foldhash::fast::RandomState>,
    /// (expiry, key) of every entry that expires; may hold stale pairs of entries changed
    /// since, which are checked against the entry when they come due.
    expiry: BTreeSet<(i64, Vec<u8>)>,
}

impl<V> Default for KeyValueStore<V> {
    fn default() -> Self {
        Self {
            entries: HashMap::default(),
            dirty: Vec::new(),
            dirty_set: HashSet::default(),
            expiry: BTreeSet::new(),
        }
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for KeyValueStore<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyValueStore")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl<V: StoredValue> KeyValueStore<V> {
    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.entries.get(key)
    }

    /// Whether `key` has a value.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.entries.contains_key(key)
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: V) {
        if let Some(at) = value.expires_at() {
            self.expiry.insert((at, key.to_vec()));
        }
        self.entries.insert(key.to_vec(), value);
        self.mark(key);
    }

    /// Changes the value of `key` in place (inserting `V::default()` first if absent).
    pub fn update(&mut self, key: &[u8], f: impl FnOnce(&mut V))
    where
        V: Default,
    {
        let value = self.entries.entry(key.to_vec()).or_default();
        f(value);
        if let Some(at) = value.expires_at() {
            self.expiry.insert((at, key.to_vec()));
        }
        self.mark(key);
    }

    /// Deletes `key` (a tombstone goes to the changelog even when the key is not held: it may
    /// be there from an older form of the state).
    pub fn delete(&mut self, key: &[u8]) {
        self.entries.remove(key);
        self.mark(key);
    }

    /// Writes `key`'s value to the changelog again (a format change), if it is held.
    pub fn touch(&mut self, key: &[u8]) {
        if self.entries.contains_key(key) {
            self.mark(key);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.entries.iter().map(|(k, v)| (k.as_slice(), v))
    }

    fn mark(&mut self, key: &[u8]) {
        if self.dirty_set.insert(key.to_vec()) {
            self.dirty.push(key.to_vec());
        }
    }
}

impl<V: StoredValue> StateStore for KeyValueStore<V> {
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RestoreError> {
        match value {
            Some(bytes) => {
                let value = V::decode(bytes)?;
                if let Some(at) = value.expires_at() {
                    self.expiry.insert((at, key.to_vec()));
                }
                self.entries.insert(key.to_vec(), value);
            }
            None => {
                self.entries.remove(key);
            }
        }
        Ok(())
    }

    fn drain_changes(&mut self, out: &mut Vec<Change>) {
        self.dirty_set.clear();
        for key in self.dirty.drain(..) {
            let value = self.entries.get(&key).map(StoredValue::encode);
            out.push(Change { key, value });
        }
    }

    fn expire(&mut self, now_ms: i64) {
        while let Some((at, _)) = self.expiry.first() {
            if *at > now_ms {
                break;
            }
            let (at, key) = self.expiry.pop_first().expect("checked");
            // A stale pair: the entry changed (or went) since; its current expiry, if any,
            // has a pair of its own.
            if self
                .entries
                .get(&key)
                .is_some_and(|v| v.expires_at() == Some(at))
            {
                self.delete(&key);
            }
        }
        if self.entries.capacity() > 64 && self.entries.len() < self.entries.capacity() / 4 {
            // Memory follows the window, not the peak.
            self.entries.shrink_to_fit();
        }
    }

    fn entries(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Default)]
    struct Seen {
        at: i64,
        ttl: Option<i64>,
    }

    impl StoredValue for Seen {
        fn encode(&self) -> Vec<u8> {
            format!("{}:{}", self.at, self.ttl.unwrap_or(-1)).into_bytes()
        }
        fn decode(bytes: &[u8]) -> Result<Self, RestoreError> {
            let text = std::str::from_utf8(bytes).map_err(|e| RestoreError(e.to_string()))?;
            let (at, ttl) = text
                .split_once(':')
                .ok_or_else(|| RestoreError(format!("not at:ttl: {text:?}")))?;
            let parse = |s: &str| s.parse::<i64>().map_err(|e| RestoreError(e.to_string()));
            let ttl = parse(ttl)?;
            Ok(Seen {
                at: parse(at)?,
                ttl: (ttl >= 0).then_some(ttl),
            })
        }
        fn expires_at(&self) -> Option<i64> {
            self.ttl.map(|t| self.at + t)
        }
    }

    fn seen(at: i64, ttl: i64) -> Seen {
        Seen { at, ttl: Some(ttl) }
    }

    fn drained(s: &mut KeyValueStore<Seen>) -> Vec<Change> {
        let mut out = Vec::new();
        s.drain_changes(&mut out);
        out
    }

    #[test]
    fn changes_are_drained_once_in_first_change_order_with_the_latest_value() {
        let mut s = KeyValueStore::default();
        s.put(b"b", seen(1, 10));
        s.put(b"a", seen(2, 10));
        s.put(b"b", seen(3, 10));
        s.delete(b"a");
        let out = drained(&mut s);
        assert_eq!(
            out,
            vec![
                Change {
                    key: b"b".to_vec(),
                    value: Some(b"3:10".to_vec())
                },
                Change {
                    key: b"a".to_vec(),
                    value: None
                },
            ]
        );
        assert!(drained(&mut s).is_empty());
    }

    #[test]
    fn a_restored_store_equals_the_one_that_wrote_the_changelog() {
        let mut s = KeyValueStore::default();
        let mut log = Vec::new();
        for i in 0..50i64 {
            s.put(format!("k{}", i % 7).as_bytes(), seen(i, 100));
            if i % 5 == 0 {
                s.delete(format!("k{}", i % 3).as_bytes());
            }
            s.drain_changes(&mut log);
        }
        let mut r = KeyValueStore::<Seen>::default();
        for c in &log {
            r.restore(&c.key, c.value.as_deref()).unwrap();
        }
        let mut a: Vec<_> = s.iter().map(|(k, v)| (k.to_vec(), v.clone())).collect();
        let mut b: Vec<_> = r.iter().map(|(k, v)| (k.to_vec(), v.clone())).collect();
        a.sort_by(|x, y| x.0.cmp(&y.0));
        b.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(a, b);
        assert!(r.restore(b"k", Some(b"garbage")).is_err());
    }

    #[test]
    fn expiry_tombstones_exactly_the_entries_due_by_stream_time() {
        let mut s = KeyValueStore::default();
        s.put(b"old", seen(0, 10));
        s.put(b"new", seen(5, 10));
        s.put(b"kept", Seen { at: 0, ttl: None });
        s.put(b"moved", seen(0, 10));
        s.put(b"moved", seen(20, 10)); // changed since: its first expiry is stale
        drained(&mut s);
        s.expire(9);
        assert!(drained(&mut s).is_empty(), "nothing is due at 9");
        s.expire(10);
        assert_eq!(
            drained(&mut s),
            vec![Change {
                key: b"old".to_vec(),
                value: None
            }]
        );
        s.expire(29);
        assert_eq!(
            drained(&mut s),
            vec![Change {
                key: b"new".to_vec(),
                value: None
            }]
        );
        assert!(s.contains(b"kept") && s.contains(b"moved"));
        s.expire(30);
        assert!(!s.contains(b"moved"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn restored_entries_expire_too() {
        let mut r = KeyValueStore::<Seen>::default();
        r.restore(b"x", Some(b"0:10")).unwrap();
        r.expire(10);
        assert!(r.is_empty());
        assert_eq!(
            drained(&mut r).len(),
            1,
            "the tombstone goes to the changelog"
        );
    }
}
