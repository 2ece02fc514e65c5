//! Delivery tracking for the command's own producers (dead-letter replay, benchmark
//! seeding): a [`ThreadedProducer`](rdkafka::producer::ThreadedProducer) context that
//! remembers the first failed delivery, so a caller that flushes and then checks never
//! counts a record as written that was not.
//!
//! A record passes through it once: librdkafka's delivery report reaches
//! [`DeliveryTracker::delivery`] on the producer's polling thread; success is forgotten (the
//! caller knows what it sent, and `flush` waits for every report), a failure is kept.
//! Cheaper than a delivery future per record: no channel, no allocation, no wake-up.

use std::sync::Mutex;

use rdkafka::ClientContext;
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryResult, ProducerContext};

/// Remembers the first failed delivery.
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    failure: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let mut slot = self.failure.lock().expect("delivery lock");
            slot.get_or_insert_with(|| format!("delivery to {} failed: {e}", m.topic()));
        }
    }
}

impl DeliveryTracker {
    /// The first failed delivery so far, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("delivery lock").clone()
    }
}
