//! A lane's ack task: when a record is done, and so when its offset may be committed.
//!
//! ```text
//!   at least once, per record in offset order:
//!     await every output ──► send the state's changelog records ──► [settling queue]
//!     front of the queue: await its changelog records ──► count the outcome,
//!                                                         committable = offset + 1
//!   exactly once: await the deliveries only to count them (the transaction's commit
//!   delivers them or aborts)
//! ```
//!
//! At least once a changelog record is sent only once the outputs of its record are
//! acknowledged: were it sent with them, a crash could leave the state change durable and an
//! output lost, and the restored state would drop the reprocessed input as a replay. The
//! changelog acknowledgements are awaited from a queue, not one by one, so a stateful lane
//! keeps several records' changes in flight.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::{Kind, LaneContext, LaneShared, Pending, count_outcome, now_ms};
use crate::events;
use crate::metrics::TopicMetrics;
use crate::processor::{ProcessError, Processor};
use crate::producer::{Delivery, OutputProducer, ProduceError};
use crate::record::OutputRecord;

/// Records whose changelog records may be in flight at once, per lane.
const MAX_SETTLING: usize = 1024;

/// A record whose outputs are acknowledged, waiting for its changelog records.
struct Settling {
    offset: i64,
    held: usize,
    kinds: Vec<Kind>,
    changes: Vec<(OutputRecord, Delivery)>,
}

/// Awaits deliveries in offset order and advances the committable offset; each record comes
/// with the bytes `held_bytes` counts for it, released once it is done.
pub(super) async fn ack_loop<P: Processor>(
    mut rx: mpsc::Receiver<(usize, Pending)>,
    ctx: Arc<LaneContext<P>>,
    producer: Arc<OutputProducer>,
    shared: Arc<LaneShared>,
    metrics: TopicMetrics,
) {
    if ctx.exactly_once() {
        while let Some((held, pending)) = rx.recv().await {
            for (out, delivery) in pending.sent {
                producer.delivered(&out, delivery).await;
            }
            count_outcome(&metrics, pending.kind);
            for kind in pending.also {
                count_outcome(&metrics, kind);
            }
            shared.held_bytes.fetch_sub(held, Ordering::Relaxed);
        }
        return;
    }
    let acks = Acks {
        ctx,
        producer,
        shared,
        metrics,
    };
    let mut settling: VecDeque<Settling> = VecDeque::new();
    loop {
        let next = if settling.is_empty() {
            rx.recv().await
        } else {
            match rx.try_recv() {
                Ok(next) => Some(next),
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Nothing new: the oldest record's changelog writes are what is left.
                    if !acks.settle(&mut settling).await {
                        return;
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        };
        let Some((held, pending)) = next else { break };
        let Some(settled) = acks.outputs_acknowledged(held, pending).await else {
            return;
        };
        settling.push_back(settled);
        // Records without changelog writes are done as soon as the ones before them are.
        while settling.len() > MAX_SETTLING
            || settling.front().is_some_and(|s| s.changes.is_empty())
        {
            if !acks.settle(&mut settling).await {
                return;
            }
        }
    }
    // The lane stopped: what was sent is still settled, so the final commit covers it.
    while !settling.is_empty() {
        if !acks.settle(&mut settling).await {
            return;
        }
    }
}

struct Acks<P: Processor> {
    ctx: Arc<LaneContext<P>>,
    producer: Arc<OutputProducer>,
    shared: Arc<LaneShared>,
    metrics: TopicMetrics,
}

impl<P: Processor> Acks<P> {
    /// Awaits a record's outputs (re-routing its input when Kafka rejects one), then sends its
    /// changelog records. `None` when the lane must end.
    async fn outputs_acknowledged(&self, held: usize, pending: Pending) -> Option<Settling> {
        let mut kind = pending.kind;
        for (out, delivery) in pending.sent {
            match self
                .producer
                .acknowledged(&out, delivery, &self.shared.stop)
                .await
            {
                Ok(()) => {}
                Err(ProduceError::Stopped) => return None,
                Err(ProduceError::Fatal(reason) | ProduceError::TransactionFailed(reason)) => {
                    self.ctx.fatal.raise(reason);
                    return None;
                }
                Err(ProduceError::Rejected(e)) => {
                    let error =
                        ProcessError::Permanent(format!("output to {} rejected: {e}", out.topic));
                    let routed = self.ctx.router.route(&pending.raw, &error, now_ms());
                    events::RecordFailed {
                        raw: &pending.raw,
                        error: &error,
                        routed: &routed,
                    }
                    .emit();
                    if let Err(e) = self
                        .producer
                        .produce(&routed.record, &self.shared.stop)
                        .await
                    {
                        if !matches!(e, ProduceError::Stopped) {
                            self.ctx.fatal.raise(format!(
                                "cannot dead-letter {}: {e}",
                                pending.raw.topic_partition()
                            ));
                        }
                        return None;
                    }
                    kind = Kind::routed(&routed);
                    break;
                }
            }
        }
        let mut changes = Vec::with_capacity(pending.changes.len());
        for change in pending.changes {
            match self.producer.send(&change).await {
                Ok(delivery) => changes.push((change, delivery)),
                Err(e) => {
                    self.changelog_failed(pending.raw.offset, e);
                    return None;
                }
            }
        }
        let mut kinds = vec![kind];
        kinds.extend(pending.also);
        Some(Settling {
            offset: pending.raw.offset,
            held,
            kinds,
            changes,
        })
    }

    /// Awaits the oldest record's changelog writes and makes its offset committable. False
    /// when the lane must end.
    async fn settle(&self, settling: &mut VecDeque<Settling>) -> bool {
        let Some(front) = settling.pop_front() else {
            return true;
        };
        for (change, delivery) in front.changes {
            if let Err(e) = self
                .producer
                .acknowledged(&change, delivery, &self.shared.stop)
                .await
            {
                self.changelog_failed(front.offset, e);
                return false;
            }
        }
        for kind in front.kinds {
            count_outcome(&self.metrics, kind);
        }
        self.shared
            .committable
            .store(front.offset + 1, Ordering::Release);
        self.shared
            .held_bytes
            .fetch_sub(front.held, Ordering::Relaxed);
        true
    }

    /// The state cannot be made durable: without it nothing after this offset may be
    /// committed, so the worker stops (it is reprocessed from the last commit).
    fn changelog_failed(&self, offset: i64, error: ProduceError) {
        match error {
            ProduceError::Stopped => {}
            e => self.ctx.fatal.raise(format!(
                "cannot write the state change of offset {offset} to its changelog: {e}"
            )),
        }
    }
}
