//! What a lane does with one record, the partition's state locked:
//!
//! ```text
//!   ordering: key, and the record's key waits behind a record in the retry path?
//!     ├─ it is that record, or one already parked, seen again ─► dropped as a replay
//!     ├─ it is a later record of the key ─────────────────────► parked in the state
//!     └─ no (or it is the key's record back from its rung) ──► decode → process → route
//!            ├─ routed to a retry rung ─► its key waits behind it
//!            └─ it was its key's head and is done (succeeded, dead-lettered) ─► the key's
//!               parked records are processed now, in order, until one is routed to a rung
//!   stream time moves to the record's event time (expiring what is due)
//!   the state's changes become changelog records: exactly once enqueued now, in the
//!   transaction; at least once handed to the ack task, written after the outputs
//! ```

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use prometheus::local::LocalHistogram;

use super::{Kind, Lane, Pending, now_ms};
use crate::events;
use crate::headers;
use crate::ordering::Verdict;
use crate::processor::{Outcome, ProcessError, Processor};
use crate::producer::{Delivery, ProduceError};
use crate::record::{OutputRecord, RawRecord, Record};
use crate::routing::Routed;
use crate::state::PartitionState;

/// Outputs enqueued so far for one record (and the parked records processed with it).
type Sent = Vec<(OutputRecord, Delivery)>;

impl<P: Processor> Lane<P> {
    /// Processes one record and enqueues what it produces; decode and process times go into
    /// `processing`. `None` when the worker must stop (a fatal produce error) or the lane was
    /// stopped mid-send.
    pub(super) async fn handle(
        &self,
        state: &mut PartitionState<P::State>,
        raw: RawRecord,
        processing: &mut LocalHistogram,
    ) -> Option<Pending> {
        self.metrics.record_consumed();
        let mut sent = Vec::new();
        let mut also = Vec::new();
        let key = raw.key.as_deref().filter(|_| self.key_ordered);
        let verdict = match key {
            None => Verdict::Process,
            Some(_) if state.order.is_idle() => Verdict::Process,
            Some(key) => {
                if state.order.is_headless(key) {
                    // A restore found parked records without their head: they are due.
                    self.drain_parked(state, key, processing, &mut sent, &mut also)
                        .await?;
                }
                if self.is_rung {
                    state.order.on_rung(key, self.origin_offset(&raw))
                } else {
                    state.order.on_source(key, raw.offset)
                }
            }
        };
        let kind = match verdict {
            Verdict::Replay => Kind::ReplayDropped,
            Verdict::Park => {
                state
                    .order
                    .park(key.expect("only keyed records park"), raw.clone(), now_ms());
                Kind::Parked
            }
            Verdict::Process => {
                let kind = self.process_one(state, &raw, processing, &mut sent).await?;
                if let Some(key) = key {
                    self.after(state, key, &raw, kind, processing, &mut sent, &mut also)
                        .await?;
                }
                kind
            }
        };
        state.observe(self.event_time(&raw));
        let changes = match &self.changelog {
            Some(topic) => state.changelog(topic, self.source.partition),
            None => {
                state.discard_changes();
                Vec::new()
            }
        };
        let changes = if self.guarantee.is_exactly_once() {
            // Exactly once: the changes join the record's transaction now.
            for change in changes {
                let delivery = self.send(&raw, &change).await?;
                sent.push((change, delivery));
            }
            Vec::new()
        } else {
            changes
        };
        Some(Pending {
            raw,
            kind,
            sent,
            also,
            changes,
        })
    }

    /// Key order after a keyed record was processed: a record routed to a rung makes its key
    /// wait; the key's head done lets its parked records go.
    #[allow(clippy::too_many_arguments)]
    async fn after(
        &self,
        state: &mut PartitionState<P::State>,
        key: &[u8],
        raw: &RawRecord,
        kind: Kind,
        processing: &mut LocalHistogram,
        sent: &mut Sent,
        also: &mut Vec<Kind>,
    ) -> Option<()> {
        if kind == Kind::Retried {
            state.order.block(key, self.origin_offset(raw), now_ms());
        } else if self.is_rung {
            state.order.head_resolved(key);
            self.drain_parked(state, key, processing, sent, also)
                .await?;
        }
        Some(())
    }

    /// Processes the parked records of `key` in order, until one is routed to a rung (it
    /// becomes the key's head) or none is left.
    async fn drain_parked(
        &self,
        state: &mut PartitionState<P::State>,
        key: &[u8],
        processing: &mut LocalHistogram,
        sent: &mut Sent,
        also: &mut Vec<Kind>,
    ) -> Option<()> {
        while let Some(parked) = state.order.next_parked(key) {
            self.metrics.record_consumed();
            let kind = self.process_one(state, &parked, processing, sent).await?;
            state.observe(self.event_time(&parked));
            also.push(kind);
            if kind == Kind::Retried {
                state
                    .order
                    .block(key, self.origin_offset(&parked), now_ms());
                break;
            }
        }
        Some(())
    }

    /// The offset in the source partition a record stands for: its own, or for a record read
    /// from a rung, the original's.
    fn origin_offset(&self, raw: &RawRecord) -> i64 {
        if self.ctx.router.is_rung(&raw.topic) {
            headers::parse_failure(&raw.headers).map_or(raw.offset, |f| f.original_offset)
        } else {
            raw.offset
        }
    }

    /// When the record's event happened: its timestamp, or for a record read from a rung, the
    /// original's (a rung record is stamped when it was routed).
    fn event_time(&self, raw: &RawRecord) -> Option<i64> {
        if self.ctx.router.is_rung(&raw.topic) {
            headers::parse_failure(&raw.headers)
                .and_then(|f| f.original_timestamp)
                .or(raw.timestamp)
        } else {
            raw.timestamp
        }
    }

    /// Decodes, processes and routes one record, and enqueues its outputs into `sent`.
    async fn process_one(
        &self,
        state: &mut PartitionState<P::State>,
        raw: &RawRecord,
        processing: &mut LocalHistogram,
        sent: &mut Sent,
    ) -> Option<Kind> {
        let started = std::time::Instant::now();
        let result = match self.ctx.processor.decode(raw) {
            Err(e) => Err(e),
            Ok(value) => {
                let record = Record { value, raw };
                AssertUnwindSafe(self.ctx.processor.process(&mut state.store, &record))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        Err(ProcessError::Permanent(format!(
                            "processor panicked: {}",
                            panic_message(panic.as_ref())
                        )))
                    })
            }
        };
        processing.observe(started.elapsed().as_secs_f64());
        let (kind, outputs) = match result {
            Ok(Outcome::Emit(outputs)) => (Kind::Success, outputs),
            Ok(Outcome::ReplayDropped) => (Kind::ReplayDropped, Vec::new()),
            Err(error) => {
                let routed = self.route(raw, &error);
                (Kind::routed(&routed), vec![routed.record])
            }
        };
        for out in outputs {
            match self.producer.send(&out).await {
                Ok(delivery) => sent.push((out, delivery)),
                Err(ProduceError::Rejected(e)) => {
                    // An output Kafka will never take: dead-letter the input instead. Outputs
                    // already enqueued for it are still delivered (at-least-once).
                    let error =
                        ProcessError::Permanent(format!("output to {} rejected: {e}", out.topic));
                    let routed = self.route(raw, &error);
                    let delivery = self.send(raw, &routed.record).await?;
                    let kind = Kind::routed(&routed);
                    sent.push((routed.record, delivery));
                    return Some(kind);
                }
                Err(e) => {
                    self.produce_failed(raw, e);
                    return None;
                }
            }
        }
        Some(kind)
    }

    /// Enqueues a record the input cannot do without (a dead letter, a changelog entry).
    /// Routes a failed record to its retry rung or the dead-letter topic, and says so.
    fn route(&self, raw: &RawRecord, error: &ProcessError) -> Routed {
        let routed = self.ctx.router.route(raw, error, now_ms());
        events::RecordFailed {
            raw,
            error,
            routed: &routed,
        }
        .emit();
        routed
    }

    async fn send(&self, raw: &RawRecord, out: &OutputRecord) -> Option<Delivery> {
        match self.producer.send(out).await {
            Ok(delivery) => Some(delivery),
            Err(e) => {
                self.produce_failed(raw, e);
                None
            }
        }
    }

    /// A send failed in a way the lane cannot get past: stop it (and maybe the worker).
    fn produce_failed(&self, raw: &RawRecord, error: ProduceError) {
        match error {
            ProduceError::Stopped => {}
            ProduceError::TransactionFailed(reason) => self.transaction_failed(&reason),
            ProduceError::Fatal(reason) => self.ctx.fatal.raise(reason),
            ProduceError::Rejected(e) => self
                .ctx
                .fatal
                .raise(format!("cannot write for {}: {e}", raw.topic_partition())),
        }
    }

    /// Exactly once: the open transaction failed under this lane. The lane ends (its
    /// partition is rewound and restarted by the abort); the record is processed again.
    fn transaction_failed(&self, reason: &str) {
        events::TransactionFailedUnderLane {
            partition: &self.source,
            reason,
        }
        .emit();
        self.guarantee.request_abort();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
