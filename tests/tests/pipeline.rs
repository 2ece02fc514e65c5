//! End to end through all three domain workers: every generated record must be accounted
//! for exactly, as an output, a replay drop or a dead letter.

use std::collections::BTreeMap;
use std::time::Duration;

use streamfleet::accounting::{expected_consumed, outcomes_complete};
use streamfleet::fleet::{BUILTIN_TOPICS, Fleet, WorkerKind};
use streamfleet::loadgen::{self, Generator, Kind, Limit, LoadConfig, Topics};
use streamfleet_payment::{GatewayConfig, SimulatedGateway};
use streamfleet_runtime::headers;
use streamfleet_runtime::health::Health;
use streamfleet_runtime::metrics::Metrics;
use streamfleet_runtime::topology::Topology;
use streamfleet_runtime::{CancellationToken, ErrorClass, RawRecord};
use streamfleet_schemas::{Encoding, InventoryOutcome, PaymentCompleted};
use streamfleet_tests::*;

/// The repository's topics.yaml with every topic renamed for this test, and faster retries.
fn topology(suffix: &str) -> (Topology, BTreeMap<&'static str, String>) {
    let names = [
        "booking-events",
        "inventory-events",
        "payment-events",
        "inventory-outcomes",
        "payment-completed",
    ];
    let mut text = BUILTIN_TOPICS.replace("initial_backoff: 1s", "initial_backoff: 200ms");
    let mut renamed = BTreeMap::new();
    for n in names {
        let new = format!("{n}-{suffix}");
        text = text.replace(&format!("name: {n}\n"), &format!("name: {new}\n"));
        renamed.insert(n, new);
    }
    (
        Topology::parse("topics.yaml", &text).expect("renamed topics.yaml"),
        renamed,
    )
}

fn class_counts(records: &[RawRecord]) -> BTreeMap<ErrorClass, usize> {
    let mut out = BTreeMap::new();
    for r in records {
        let info =
            headers::parse_failure(&r.headers).expect("every dead letter has failure headers");
        assert!(!info.error_message.is_empty());
        assert!(
            info.group.starts_with("e2e-"),
            "group header {}",
            info.group
        );
        *out.entry(info.error_class).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_input_is_accounted_for_through_all_three_workers() {
    let broker = Broker::mock();
    let bootstrap = broker.bootstrap();
    let suffix = unique("t");
    let (topology, names) = topology(&suffix);
    broker.create_topology(&topology).await;
    let topics = Topics {
        booking: names["booking-events"].clone(),
        inventory: names["inventory-events"].clone(),
        payment: names["payment-events"].clone(),
    };

    let encoding = Encoding::default();
    let (metrics, health) = (Metrics::default(), Health::default());
    let gateway = GatewayConfig {
        latency: Duration::ZERO,
        failure_rate: 0.3,
        seed: 11,
    };
    let fleet = Fleet {
        encoding: &encoding,
        metrics: &metrics,
        health: &health,
        gateway,
        fault_process_delay: std::time::Duration::ZERO,
    };
    let stop = CancellationToken::new();
    let outputs = [
        (WorkerKind::Booking, names["inventory-events"].clone()),
        (WorkerKind::Inventory, names["inventory-outcomes"].clone()),
        (WorkerKind::Payment, names["payment-completed"].clone()),
    ];
    let mut workers = Vec::new();
    for (kind, output) in &outputs {
        let sources = topology.sources_of(kind.name());
        let source = sources[0].0.clone();
        let renamed: Vec<_> = sources.into_iter().collect();
        assert!(source.ends_with(&suffix));
        let mut config = test_config(
            &bootstrap,
            &unique(&format!("e2e-{}", kind.name())),
            renamed,
        );
        config.worker = kind.name().to_owned();
        workers.push(
            fleet
                .start(*kind, config, output, stop.clone())
                .expect("worker starts"),
        );
    }

    let load = LoadConfig {
        seed: 7,
        hotels: 20,
        rooms_per_hotel: 50,
        malformed_ratio: 0.02,
        invalid_ratio: 0.01,
        replay_ratio: 0.03,
    };
    let mut generator = Generator::new(load, &topics, &encoding).unwrap();
    let sent = loadgen::produce(
        &producer(&bootstrap),
        &mut generator,
        &topics,
        Limit::Count(4000),
        None,
        &CancellationToken::new(),
        |_| {},
    )
    .await
    .expect("load produced");
    assert_eq!(sent, 4000);
    let tally = generator.tally().clone();

    wait_until(
        Duration::from_secs(90),
        "every record and retry has an outcome",
        || {
            workers.iter().all(|w| {
                let s = w.stats.snapshot();
                outcomes_complete(&s) && s.consumed == expected_consumed(w.kind, &tally, &s)
            })
        },
    )
    .await;
    stop.cancel();
    let mut stats = BTreeMap::new();
    for w in workers {
        let report = w.task.await.unwrap().expect("clean stop");
        stats.insert(w.kind, report.stats);
    }

    // The payment gateway is deterministic: a payment completes if one of its 3 attempts
    // succeeds; then every other copy is a replay. Otherwise every copy is exhausted.
    let gw = SimulatedGateway::new(gateway).unwrap();
    let (mut completing, mut dropped_copies, mut exhausted_copies) = (0u64, 0u64, 0u64);
    for (id, copies) in &tally.payments {
        if (1..=3).any(|attempt| gw.succeeds(id, attempt)) {
            completing += 1;
            dropped_copies += u64::from(*copies) - 1;
        } else {
            exhausted_copies += u64::from(*copies);
        }
    }
    assert!(
        completing > 0 && exhausted_copies > 0 && dropped_copies > 0,
        "the load exercises every payment path"
    );

    let read = |topic: String| {
        let b = bootstrap.clone();
        async move { read_topic(&b, &topic, Isolation::ReadUncommitted).await }
    };
    let count = |k: Kind| tally.count(k) as usize;

    // Booking: commands for new and cancelled bookings, replays dropped, the rest dead-lettered.
    let b = &stats[&WorkerKind::Booking];
    assert_eq!(b.replay_dropped, tally.count(Kind::BookingReplay));
    assert_eq!(b.retried, 0);
    let booking_dlt = read(format!("{}-dlt", topics.booking)).await;
    assert_eq!(
        booking_dlt.len(),
        count(Kind::BookingInvalid) + count(Kind::BookingIllegal) + count(Kind::BookingMalformed)
    );
    let classes = class_counts(&booking_dlt);
    assert_eq!(
        classes.get(&ErrorClass::Malformed).copied().unwrap_or(0),
        count(Kind::BookingMalformed)
    );
    assert_eq!(
        classes.get(&ErrorClass::Permanent).copied().unwrap_or(0),
        count(Kind::BookingInvalid) + count(Kind::BookingIllegal)
    );

    // Inventory: the generator's records plus one command per new or cancelled booking, and
    // exactly one outcome per valid command.
    let inventory_in = read(topics.inventory.clone()).await;
    let commands = count(Kind::BookingPending) + count(Kind::BookingCancelled);
    assert_eq!(
        inventory_in.len(),
        count(Kind::Restock) + count(Kind::InventoryMalformed) + commands
    );
    let outcomes = read(names["inventory-outcomes"].clone()).await;
    assert_eq!(outcomes.len(), count(Kind::Restock) + commands);
    let codec = encoding.codec::<InventoryOutcome>("x").unwrap();
    for o in &outcomes {
        let decoded = codec
            .decode(o.value.as_deref().unwrap())
            .expect("outcomes decode");
        assert_eq!(
            o.key.as_deref(),
            Some(decoded.hotel_id.as_bytes()),
            "keyed by hotel"
        );
        assert!(decoded.available >= 0);
    }
    let inventory_dlt = read(format!("{}-dlt", topics.inventory)).await;
    assert_eq!(inventory_dlt.len(), count(Kind::InventoryMalformed));
    assert_eq!(stats[&WorkerKind::Inventory].replay_dropped, 0);

    // Payment: completions, replays, exhausted retries.
    let completed = read(names["payment-completed"].clone()).await;
    assert_eq!(completed.len() as u64, completing);
    let codec = encoding.codec::<PaymentCompleted>("x").unwrap();
    let mut ids: Vec<String> = completed
        .iter()
        .map(|r| {
            codec
                .decode(r.value.as_deref().unwrap())
                .unwrap()
                .payment_id
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, completing, "no payment completed twice");
    let p = &stats[&WorkerKind::Payment];
    assert_eq!(p.replay_dropped, dropped_copies);
    let payment_dlt = read(format!("{}-dlt", topics.payment)).await;
    assert_eq!(
        payment_dlt.len() as u64,
        exhausted_copies + tally.count(Kind::PaymentInvalid) + tally.count(Kind::PaymentMalformed)
    );
    let classes = class_counts(&payment_dlt);
    assert_eq!(
        classes
            .get(&ErrorClass::RetriesExhausted)
            .copied()
            .unwrap_or(0) as u64,
        exhausted_copies
    );
    for d in &payment_dlt {
        let info = headers::parse_failure(&d.headers).unwrap();
        assert_eq!(
            info.original_topic, topics.payment,
            "dead letters name the source topic, not a rung"
        );
        if info.error_class == ErrorClass::RetriesExhausted {
            assert_eq!(info.attempt, 3);
            assert!(info.first_failure_at <= streamfleet_runtime::now_ms());
        }
    }
    assert!(p.retried > 0);
}
