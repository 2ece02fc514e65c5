//! Partition state: where it lives while a partition is assigned, and what of it goes to the
//! changelog.
//!
//! Each source partition has one [`StateSlot`] on an instance, shared by the lane of the
//! source partition and the lanes of the same partition number of its retry rungs. It holds a
//! [`PartitionState`]: the processor's [`StateStore`], the runtime's [`KeyOrder`] (what waits
//! behind a retried record, `ordering: key`) and the partition's stream time. The slot is
//! dropped when the last of its lanes is revoked (or, exactly once, when a transaction aborts)
//! and, for a source with a changelog, restored from it by [`crate::restore`] before any of
//! its lanes processes a record.
//!
//! After each record the lane drains the state's changes ([`PartitionState::changelog`]) as
//! records for `<source>-changelog`, same partition number: exactly once inside the record's
//! transaction, at least once after the record's outputs are acknowledged and before its
//! offset can be committed (see [`crate::lane`]). Either way a restored state never claims an
//! effect whose outputs could be missing.

use std::sync::Arc;

use tokio::sync::{Mutex, watch};

use crate::ordering::{KeyOrder, META_HEADER};
use crate::record::OutputRecord;
use crate::store::{Change, RestoreError, StateStore};

/// The state of one source partition: the processor's, and the runtime's.
#[derive(Default)]
pub(crate) struct PartitionState<S> {
    /// The processor's store.
    pub store: S,
    /// Keys waiting behind a record in the retry path.
    pub order: KeyOrder,
    /// The largest event time processed on the partition since it was assigned (epoch ms).
    stream_time: i64,
}

impl<S: StateStore> PartitionState<S> {
    /// A partition's state around the processor's `store`.
    pub fn new(store: S) -> Self {
        Self {
            store,
            order: KeyOrder::default(),
            stream_time: 0,
        }
    }

    /// A record with event time `at` was processed: stream time moves on, and what expired
    /// by then is forgotten.
    pub fn observe(&mut self, at: Option<i64>) {
        if let Some(at) = at
            && at > self.stream_time
        {
            self.stream_time = at;
            self.store.expire(at);
        }
    }

    /// The changes since the last call, as records for partition `partition` of the changelog
    /// `topic`: the store's own, then the runtime's (marked by a header).
    pub fn changelog(&mut self, topic: &str, partition: i32) -> Vec<OutputRecord> {
        let mut store = Vec::new();
        self.store.drain_changes(&mut store);
        let mut meta = Vec::new();
        self.order.drain_changes(&mut meta);
        let record = |c: Change, headers: Vec<(String, Vec<u8>)>| OutputRecord {
            topic: topic.to_owned(),
            key: Some(c.key),
            value: c.value,
            headers,
            partition: Some(partition),
        };
        let mut out = Vec::with_capacity(store.len() + meta.len());
        out.extend(store.into_iter().map(|c| record(c, Vec::new())));
        out.extend(
            meta.into_iter()
                .map(|c| record(c, vec![(META_HEADER.to_owned(), b"1".to_vec())])),
        );
        out
    }

    /// Drops the changes since the last call: a source without a changelog keeps its state in
    /// memory only.
    pub fn discard_changes(&mut self) {
        let mut sink = Vec::new();
        self.store.drain_changes(&mut sink);
        self.order.drain_changes(&mut sink);
    }

    /// Applies one changelog entry while restoring; `meta` when it carries the runtime's
    /// header.
    pub fn restore(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        meta: bool,
    ) -> Result<(), RestoreError> {
        if meta {
            self.order.restore(key, value)
        } else {
            self.store.restore(key, value)
        }
    }

    /// After the last entry: the restored state must not write back what it read.
    pub fn restored(&mut self, partition: i32) {
        self.order.restored(partition);
        self.discard_changes();
    }
}

/// Where a slot's restore stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RestoreStatus {
    /// Reading the changelog.
    Restoring,
    /// Ready for records.
    Ready,
    /// The changelog could not be read or applied: the partition is not processed.
    Failed(String),
}

/// One source partition's state on this instance.
pub(crate) struct StateSlot<S> {
    pub state: Arc<Mutex<PartitionState<S>>>,
    status: watch::Sender<RestoreStatus>,
}

impl<S: StateStore> StateSlot<S> {
    /// A slot around `store`, whose state must first be restored (`restoring`), or is ready
    /// at once.
    pub fn new(store: S, restoring: bool) -> Self {
        let initial = if restoring {
            RestoreStatus::Restoring
        } else {
            RestoreStatus::Ready
        };
        Self {
            state: Arc::new(Mutex::new(PartitionState::new(store))),
            status: watch::Sender::new(initial),
        }
    }

    /// Sets the restore's outcome.
    pub fn set_status(&self, status: RestoreStatus) {
        self.status.send_replace(status);
    }

    /// Waits until the state is ready: true; false when the restore failed (the partition
    /// waits for an operator, its lanes process nothing).
    pub async fn ready(&self) -> bool {
        let mut rx = self.status.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                RestoreStatus::Ready => return true,
                RestoreStatus::Failed(_) => return false,
                RestoreStatus::Restoring => {}
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KeyValueStore, StoredValue};

    #[derive(Debug, Clone, PartialEq)]
    struct Until(i64);

    impl StoredValue for Until {
        fn encode(&self) -> Vec<u8> {
            self.0.to_be_bytes().to_vec()
        }
        fn decode(b: &[u8]) -> Result<Self, RestoreError> {
            Ok(Until(i64::from_be_bytes(
                b.try_into()
                    .map_err(|_| RestoreError("not 8 bytes".into()))?,
            )))
        }
        fn expires_at(&self) -> Option<i64> {
            Some(self.0)
        }
    }

    #[test]
    fn store_and_runtime_entries_restore_to_their_owner() {
        let mut s = PartitionState::<KeyValueStore<Until>>::default();
        s.store.put(b"a", Until(100));
        s.order.block(b"k", 7, 1);
        let log = s.changelog("t-changelog", 3);
        assert_eq!(log.len(), 2);
        assert!(
            log.iter()
                .all(|r| r.partition == Some(3) && r.topic == "t-changelog")
        );
        assert!(log[0].headers.is_empty());
        assert_eq!(log[1].headers[0].0, META_HEADER);
        let mut r = PartitionState::<KeyValueStore<Until>>::default();
        for rec in &log {
            r.restore(
                rec.key.as_deref().unwrap(),
                rec.value.as_deref(),
                !rec.headers.is_empty(),
            )
            .unwrap();
        }
        r.restored(3);
        assert!(r.store.contains(b"a"));
        assert_eq!(r.order.waiting_keys(), 1);
        assert!(
            r.changelog("t-changelog", 3).is_empty(),
            "nothing to write back"
        );
    }

    #[test]
    fn stream_time_only_moves_forward_and_expires_as_it_does() {
        let mut s = PartitionState::<KeyValueStore<Until>>::default();
        s.store.put(b"a", Until(100));
        s.discard_changes();
        s.observe(Some(150));
        assert!(!s.store.contains(b"a"));
        s.store.put(b"b", Until(120));
        s.observe(Some(110)); // older: stream time stays at 150
        assert!(
            s.store.contains(b"b"),
            "expiry runs only when stream time moves"
        );
        s.observe(None);
        s.observe(Some(151));
        assert!(!s.store.contains(b"b"));
    }

    #[tokio::test]
    async fn lanes_wait_for_the_restore_and_never_run_on_a_failed_one() {
        let slot = Arc::new(StateSlot::new((), true));
        let waiter = {
            let s = slot.clone();
            tokio::spawn(async move { s.ready().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        slot.set_status(RestoreStatus::Ready);
        assert!(waiter.await.unwrap());
        let failed = StateSlot::new((), true);
        failed.set_status(RestoreStatus::Failed("corrupt".into()));
        assert!(!failed.ready().await);
        assert!(StateSlot::new((), false).ready().await);
    }
}
