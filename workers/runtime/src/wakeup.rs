//! Waking librdkafka's connection thread when a paused partition is resumed.
//!
//! librdkafka does not wake a broker's connection thread when one of its partitions is
//! resumed (`rd_kafka_toppar_pause_resume` only bumps the partition's version; reported as
//! confluent-kafka-go#630, still open). A thread with nothing else to fetch sleeps on its
//! socket for up to a second (`rd_kafka_max_block_ms`), and the resumed partition waits that
//! long for its next fetch. Under backpressure every partition of a broker can be paused at
//! once, and a backlog then drains in bursts: measured on the embedded cluster, at-least-once
//! stalled for 250–600 ms about once a second and ran at 200–250 k records/s; with the
//! wake-up, 380–490 k/s (docs/benchmarks.md).
//!
//! Any request queued for a broker wakes its thread, which then sees the partition fetchable.
//! The fetcher calls [`LeaderWakeup::wake`] after each resume; a thread of its own asks the
//! partition's leader for its latest offset (a small ListOffsets request) and drops the answer,
//! so the fetcher never waits for the round trip, and the request has a real timeout (a
//! request with a zero timeout expires in librdkafka's queue and is logged as a timeout).
//!
//! ```text
//!  fetcher: resume(tp) ──► wake(tp) ──channel──► sf-wake thread: offsets_for_times(tp) ──► leader
//!                                                                         (its thread wakes,
//!                                                                          fetches tp again)
//! ```

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::record::TopicPartition;

/// How long the wake-up thread waits for a leader's answer. The leader's thread is woken as
/// soon as the request is queued; this bounds the request itself. librdkafka closes a
/// connection on which a request times out (`socket.max.fails`), so it is long enough that
/// only a broker that has stopped answering reaches it, and short enough that a shutdown,
/// which waits for the thread, is held at most this long.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The fetcher's side: where resumed partitions are sent. Inert until [`LeaderWakeup::start`].
#[derive(Default)]
pub(crate) struct LeaderWakeup {
    tx: Mutex<Option<Sender<TopicPartition>>>,
}

/// The running wake-up thread; [`LeaderWakeup::stop`] ends it.
pub(crate) struct Running {
    thread: JoinHandle<()>,
}

impl LeaderWakeup {
    /// Starts the wake-up thread for `consumer` (held weakly: the fetcher owns the consumer).
    pub fn start<C: ConsumerContext + 'static>(
        &self,
        consumer: Weak<BaseConsumer<C>>,
        worker: &str,
    ) -> std::io::Result<Running> {
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name(format!("sf-wake-{worker}"))
            .spawn(move || serve(consumer, rx))?;
        *self.tx.lock().expect("wake-up lock") = Some(tx);
        Ok(Running { thread })
    }

    /// Asks the wake-up thread to wake `tp`'s leader. Never blocks.
    pub fn wake(&self, tp: &TopicPartition) {
        if let Some(tx) = self.tx.lock().expect("wake-up lock").as_ref() {
            let _ = tx.send(tp.clone());
        }
    }

    /// Closes the channel and waits for the thread, so the consumer can be closed by its owner
    /// (at most one request's [`ANSWER_TIMEOUT`] when a leader does not answer).
    pub fn stop(&self, running: Running) {
        self.tx.lock().expect("wake-up lock").take();
        let _ = running.thread.join();
    }
}

fn serve<C: ConsumerContext>(consumer: Weak<BaseConsumer<C>>, rx: Receiver<TopicPartition>) {
    while let Ok(first) = rx.recv() {
        // Partitions resumed together are woken by one call: librdkafka sends one request per
        // leader, in parallel.
        let batch: HashSet<TopicPartition> = std::iter::once(first).chain(rx.try_iter()).collect();
        let mut tpl = TopicPartitionList::new();
        for tp in &batch {
            let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::End);
        }
        let Some(consumer) = consumer.upgrade() else {
            return;
        };
        if let Err(e) = consumer.offsets_for_times(tpl, ANSWER_TIMEOUT) {
            tracing::debug!(partitions = batch.len(), error = %e, "leader wake-up request failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use rdkafka::ClientConfig;
    use rdkafka::consumer::DefaultConsumerContext;

    use super::*;
    use crate::embedded::EmbeddedCluster;

    #[test]
    fn stop_ends_the_thread_releases_the_consumer_and_later_wakes_are_ignored() {
        let cluster = EmbeddedCluster::start(1).expect("embedded cluster");
        cluster.create_topic("t", 2, 1).expect("topic");
        let consumer: Arc<BaseConsumer<DefaultConsumerContext>> = Arc::new(
            ClientConfig::new()
                .set("bootstrap.servers", cluster.bootstrap_servers())
                .set("group.id", "wakeup-test")
                .create()
                .expect("consumer"),
        );
        let wakeup = LeaderWakeup::default();
        let running = wakeup
            .start(Arc::downgrade(&consumer), "test")
            .expect("thread");
        for p in [0, 1, 0] {
            wakeup.wake(&TopicPartition::new("t", p));
        }
        let asked = Instant::now();
        wakeup.stop(running);
        assert!(
            asked.elapsed() < ANSWER_TIMEOUT,
            "the leader answered, so stopping did not wait for the timeout"
        );
        assert_eq!(
            Arc::strong_count(&consumer),
            1,
            "the thread holds no reference once stopped"
        );
        // After stop the channel is closed: a wake is dropped, nothing blocks or panics.
        wakeup.wake(&TopicPartition::new("t", 0));
    }
}
