//! State stores in the runtime: the booking state machine with a transient failure in the
//! middle, expiry by stream time, and a changelog that cannot be restored. The mock covers the
//! logic; only the real broker's runs speak for the changelog.

use std::collections::BTreeMap;
use std::time::Duration;

use streamfleet_booking::BookingProcessor;
use streamfleet_runtime::config::WorkerConfig;
use streamfleet_runtime::headers;
use streamfleet_runtime::retry::RetryPolicy;
use streamfleet_runtime::{Outcome, ProcessError, Processor, RawRecord, Record, now_ms};
use streamfleet_schemas::{BookingEvent, BookingStatus, Encoding, InventoryEvent};
use streamfleet_tests::*;

const WAIT: Duration = Duration::from_secs(60);
const DAY: i64 = 86_400_000;

/// The booking processor, with a dependency that fails the first attempt of the events the
/// test names (a transient failure, as a timeout would be).
struct Flaky {
    inner: BookingProcessor,
    fail_first: Vec<(String, BookingStatus)>,
}

impl Processor for Flaky {
    type Input = BookingEvent;
    type State = streamfleet_booking::BookingState;

    fn new_state(&self) -> Self::State {
        self.inner.new_state()
    }

    fn decode(&self, record: &RawRecord) -> Result<BookingEvent, ProcessError> {
        self.inner.decode(record)
    }

    async fn process(
        &self,
        state: &mut Self::State,
        record: &Record<'_, BookingEvent>,
    ) -> Result<Outcome, ProcessError> {
        let e = &record.value;
        let first = headers::parse_failure(record.headers()).is_none();
        if first && self.fail_first.contains(&(e.booking_id.clone(), e.status)) {
            return Err(ProcessError::Transient("payment service timed out".into()));
        }
        self.inner.process(state, record).await
    }
}

fn booking(id: &str, status: BookingStatus, check_out: i64) -> BookingEvent {
    BookingEvent {
        booking_id: id.into(),
        customer_id: "c-1".into(),
        hotel_id: "h-1".into(),
        check_in: check_out - DAY,
        check_out,
        total_amount: 120.0,
        currency: "EUR".into(),
        status,
        metadata: None,
    }
}

struct Bookings {
    input: String,
    output: String,
    changelog: String,
    policy: RetryPolicy,
}

async fn bookings(broker: &Broker, partitions: i32) -> Bookings {
    let input = unique("bk");
    let policy = RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(300),
        multiplier: 2.0,
        max_backoff: Duration::from_secs(5),
    };
    let mut topics = vec![
        input.clone(),
        format!("{input}-out"),
        format!("{input}-dlt"),
        format!("{input}-changelog"),
    ];
    topics.extend(policy.rung_topics(&input).into_iter().map(|(t, _)| t));
    for t in &topics {
        broker.create_topic(t, partitions).await;
    }
    Bookings {
        output: format!("{input}-out"),
        changelog: format!("{input}-changelog"),
        input,
        policy,
    }
}

impl Bookings {
    fn config(&self, broker: &Broker) -> WorkerConfig {
        let mut c = test_config(
            &broker.bootstrap(),
            &unique("bk"),
            vec![(self.input.clone(), self.policy.clone())],
        );
        c.changelogs = [(self.input.clone(), self.changelog.clone())].into();
        c
    }

    fn processor(&self, retention: Duration, fail_first: &[(&str, BookingStatus)]) -> Flaky {
        Flaky {
            inner: BookingProcessor::new(
                &Encoding::default(),
                &self.input,
                &self.output,
                retention,
            )
            .unwrap(),
            fail_first: fail_first
                .iter()
                .map(|(id, s)| ((*id).to_owned(), *s))
                .collect(),
        }
    }

    /// Produces events with the given record timestamps.
    async fn send(&self, broker: &Broker, events: &[(BookingEvent, i64)]) {
        use rdkafka::producer::FutureRecord;
        let codec = Encoding::default()
            .codec::<BookingEvent>(&self.input)
            .unwrap();
        let p = producer(&broker.bootstrap());
        for (e, ts) in events {
            let value = codec.encode(e).unwrap();
            p.send(
                FutureRecord::to(&self.input)
                    .key(&e.booking_id)
                    .payload(&value)
                    .timestamp(*ts),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("sent");
        }
    }
}

/// A PENDING that waits in the retry path is not overtaken by its CONFIRMED: both are applied,
/// in order, and nothing is dead-lettered (before key order, the CONFIRMED was an illegal
/// transition).
async fn a_retried_pending_is_confirmed_after_it(broker: Broker) {
    let b = bookings(&broker, 2).await;
    let now = now_ms();
    b.send(
        &broker,
        &[
            (booking("b1", BookingStatus::Pending, now + DAY), now),
            (booking("b1", BookingStatus::Confirmed, now + DAY), now),
            (booking("b2", BookingStatus::Pending, now + DAY), now),
        ],
    )
    .await;
    let w = TestWorker::start(
        b.config(&broker),
        b.processor(
            streamfleet_booking::DEFAULT_RETENTION,
            &[("b1", BookingStatus::Pending)],
        ),
    );
    wait_until(WAIT, "the three applied", || w.snapshot().succeeded == 3).await;
    let stats = w.stop().await.expect("clean").stats;
    assert_eq!(
        (stats.dead_lettered, stats.retried, stats.parked),
        (0, 1, 1),
        "{stats:?}"
    );
    let commands = read_topic(&broker.bootstrap(), &b.output, Isolation::ReadCommitted).await;
    let codec = Encoding::default().codec::<InventoryEvent>("x").unwrap();
    let ids: Vec<String> = commands
        .iter()
        .map(|r| codec.decode(r.value.as_deref().unwrap()).unwrap().event_id)
        .collect();
    assert_eq!(ids.len(), 2, "one RESERVE per booking: {ids:?}");
    assert!(
        read_topic(
            &broker.bootstrap(),
            &format!("{}-dlt", b.input),
            Isolation::ReadCommitted
        )
        .await
        .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_pending_is_confirmed_after_it_mock() {
    a_retried_pending_is_confirmed_after_it(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn a_retried_pending_is_confirmed_after_it_real_broker() {
    a_retried_pending_is_confirmed_after_it(Broker::real()).await;
}

/// A booking is forgotten (tombstoned in the changelog) once stream time, the largest record
/// timestamp processed, passes the retention after the later of its last event and its
/// check-out; a booking still within it is kept, and a restart restores exactly those.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn expiry_tombstones_the_bookings_past_their_retention_real_broker() {
    let broker = Broker::real();
    let b = bookings(&broker, 1).await;
    let t0 = 1_700_000_000_000; // record time, not wall-clock time
    let retention = Duration::from_millis(10 * DAY as u64);
    b.send(
        &broker,
        &[
            // Forgotten from t0 + 1 day + 10 days.
            (booking("old", BookingStatus::Pending, t0 + DAY), t0),
            (booking("old", BookingStatus::Confirmed, t0 + DAY), t0),
            // Its stay ends later: kept until t0 + 30 days + 10 days.
            (booking("kept", BookingStatus::Pending, t0 + 30 * DAY), t0),
        ],
    )
    .await;
    let config = b.config(&broker);
    let w = TestWorker::start(config.clone(), b.processor(retention, &[]));
    wait_until(WAIT, "three applied", || w.snapshot().succeeded == 3).await;
    // Stream time moves to t0 + 12 days: "old" expires, "kept" does not.
    b.send(
        &broker,
        &[(
            booking("later", BookingStatus::Pending, t0 + 13 * DAY),
            t0 + 12 * DAY,
        )],
    )
    .await;
    wait_until(WAIT, "the fourth applied", || w.snapshot().succeeded == 4).await;
    w.stop().await.expect("clean");

    let log = read_topic(&broker.bootstrap(), &b.changelog, Isolation::ReadCommitted).await;
    let mut last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let mut order = Vec::new();
    for r in &log {
        let k = r.key.clone().unwrap();
        if !last.contains_key(&k) {
            order.push(k.clone());
        }
        last.insert(k, r.value.clone());
    }
    assert!(order[0].is_empty(), "the fingerprint key comes first");
    let bookings: Vec<&Vec<u8>> = order.iter().filter(|k| !k.is_empty()).collect();
    assert_eq!(bookings.len(), 3, "old, kept, later");
    assert_eq!(last[bookings[0]], None, "old was tombstoned");
    assert!(last[bookings[1]].is_some() && last[bookings[2]].is_some());
    let tombstones = log.iter().filter(|r| r.value.is_none()).count();
    assert_eq!(tombstones, 1, "only old expired");

    // A restart restores the two bookings kept: a CONFIRMED of "kept" is legal, a CONFIRMED of
    // "old" is an unknown booking now.
    let w = TestWorker::start(config, b.processor(retention, &[]));
    b.send(
        &broker,
        &[
            (
                booking("kept", BookingStatus::Confirmed, t0 + 30 * DAY),
                t0 + 12 * DAY,
            ),
            (
                booking("old", BookingStatus::Cancelled, t0 + DAY),
                t0 + 12 * DAY,
            ),
        ],
    )
    .await;
    wait_until(WAIT, "both seen", || {
        let s = w.snapshot();
        s.succeeded + s.dead_lettered == 2
    })
    .await;
    let stats = w.stop().await.expect("clean").stats;
    assert_eq!((stats.succeeded, stats.dead_lettered), (1, 1), "{stats:?}");
}

/// A changelog entry the state cannot apply stops that partition's restore: the partition is
/// not processed (its offsets stay where they are), the worker stays up but not ready, the
/// failure names the changelog partition and offset, and the other partitions flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn a_corrupt_changelog_stops_only_its_partition_real_broker() {
    use rdkafka::producer::FutureRecord;
    let broker = Broker::real();
    let b = bookings(&broker, 2).await;
    let p = producer(&broker.bootstrap());
    // Partition 1 of the changelog: a booking entry without the partition's fingerprint key.
    p.send(
        FutureRecord::to(&b.changelog)
            .partition(1)
            .key(&[7u8; 12][..])
            .payload(&[1u8, 0, 0, 0, 1][..]),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .expect("sent");
    let now = now_ms();
    let events: Vec<(BookingEvent, i64)> = (0..20)
        .map(|i| {
            (
                booking(&format!("b{i}"), BookingStatus::Pending, now + DAY),
                now,
            )
        })
        .collect();
    b.send(&broker, &events).await;
    let w = TestWorker::start(
        b.config(&broker),
        b.processor(streamfleet_booking::DEFAULT_RETENTION, &[]),
    );
    wait_until(WAIT, "a restore failure", || {
        metric(&w.metrics, "streamfleet_state_restore_failures_total") >= 1.0
    })
    .await;
    let partition0 = read_topic(&broker.bootstrap(), &b.input, Isolation::ReadCommitted)
        .await
        .iter()
        .filter(|r| r.partition == 0)
        .count() as u64;
    wait_until(WAIT, "partition 0 processed", || {
        w.snapshot().succeeded == partition0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.snapshot().succeeded,
        partition0,
        "partition 1 is never processed"
    );
    assert!(w.is_running() && w.health.is_live(), "no restart loop");
    assert!(!w.health.is_ready());
    let detail = w
        .health
        .report()
        .values()
        .map(|c| c.detail.clone())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        detail.contains(&format!("{}[1]", b.changelog)) && detail.contains("at offset 0"),
        "{detail}"
    );
    w.stop().await.expect("clean");
}
