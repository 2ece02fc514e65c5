//! Exactly-once processing. The embedded cluster runs transactions but does not honour them
//! (DEVELOPERS.md): on it these tests check the commit path, the abort-and-rewind path, the
//! fatal path, state restore, and that no offset is ever committed outside a transaction. What
//! only a real broker can show runs there (`#[ignore]`d unless KAFKA_BOOTSTRAP_SERVERS is set).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use streamfleet::fleet::Passthrough;
use streamfleet::verify;
use streamfleet_inventory::InventoryProcessor;
use streamfleet_runtime::config::{ProcessingGuarantee, WorkerConfig};
use streamfleet_runtime::metrics::Metrics;
use streamfleet_runtime::{WorkerError, now_ms};
use streamfleet_schemas::{
    Encoding, InventoryEvent, InventoryEventType, InventoryOutcome, InventoryResult,
};
use streamfleet_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// An exactly-once worker of `group` over `input` with the static instance id `instance`.
fn eos_config(broker: &Broker, group: &str, input: &str, instance: &str) -> WorkerConfig {
    let mut config = test_config(
        &broker.bootstrap(),
        group,
        vec![(input.to_owned(), no_retries())],
    );
    config.guarantee = ProcessingGuarantee::ExactlyOnce;
    config.commit_interval = ProcessingGuarantee::ExactlyOnce.default_commit_interval();
    config.instance_id = Some(instance.to_owned());
    config
}

fn committed(metrics: &Metrics) -> f64 {
    metric(
        metrics,
        "streamfleet_transactions_total{result=\"committed\"",
    )
}

fn aborted(metrics: &Metrics) -> f64 {
    metric(metrics, "streamfleet_transactions_total{result=\"aborted\"")
}

async fn seed_sequence(broker: &Broker, topic: &str, start: u64, count: u64, keys: u64) {
    let p = producer(&broker.bootstrap());
    verify::seed(&p, topic, start, count, keys, None, |_| {})
        .await
        .expect("seeded");
}

async fn verify_copy(broker: &Broker, input: &str, output: &str) -> verify::Verification {
    let (b, i, o) = (broker.bootstrap(), input.to_owned(), output.to_owned());
    tokio::task::spawn_blocking(move || verify::verify(&b, &[], &i, &o, Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("verify runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_commit_path_copies_every_record_once_and_never_commits_outside_a_transaction_mock() {
    let broker = Broker::mock();
    // One transaction for the worker, two groups over three partitions (the default), and a
    // group per partition.
    for producers in 1..=3 {
        let (input, output) = broker.pipeline_topics("seq", 3).await;
        seed_sequence(&broker, &input, 0, 3000, 30).await;
        let group = unique("eos");
        let mut config = eos_config(&broker, &group, &input, "i-1");
        config.transactional_producers = producers;
        let w = TestWorker::start(config, Passthrough::to(output.clone()));
        wait_until(WAIT, "3000 copied", || w.snapshot().succeeded == 3000).await;
        let metrics = w.metrics.clone();
        wait_until(WAIT, "every offset committed by a transaction", || {
            metric(&metrics, "streamfleet_partition_committed_offset") == 3000.0
        })
        .await;
        assert!(committed(&metrics) >= 1.0);
        w.stop().await.expect("clean stop");
        assert_eq!(aborted(&metrics), 0.0, "{producers} producers");

        // Nothing aborted, so even the mock shows an exact copy.
        let v = verify_copy(&broker, &input, &output).await;
        assert_eq!(v.anomalies(), 0, "{producers} producers: {v:?}");
        assert_eq!(v.output_records, 3000, "{producers} producers");
        // The mock stores no transactional offsets: any committed offset would be a commit
        // made outside a transaction.
        let offsets = group_offsets(&broker.bootstrap(), &group, &input, 3);
        assert!(
            offsets.values().all(Option::is_none),
            "{producers} producers: an offset was committed outside a transaction: {offsets:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abortable_error_aborts_rewinds_and_carries_on_mock() {
    let broker = Broker::mock();
    let (input, output) = broker.pipeline_topics("seq", 2).await;
    // The injection below hits every transactional producer of the cluster, so nothing else
    // may produce in transactions then.
    seed_sequence(&broker, &input, 0, 30_000, 10).await;
    let config = eos_config(&broker, &unique("eos"), &input, "i-1");
    let w = TestWorker::start(config, Passthrough::to(output.clone()));
    let metrics = w.metrics.clone();
    wait_until(WAIT, "a commit", || committed(&metrics) >= 1.0).await;

    // The coordinator refuses to add the next partitions to the transaction: librdkafka makes
    // the open transaction abortable. (Not Produce errors: a refused produce also marks the
    // topic, so the replayed records are then rejected at enqueue and dead-lettered, which is
    // the right answer for a topic one may not write, but not what this test is about.)
    broker.as_mock().unwrap().request_errors(
        RDKafkaApiKey::AddPartitionsToTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 3],
    );
    // More input after the injection, so transactions start after it however fast the first
    // 30,000 records were copied.
    seed_sequence(&broker, &input, 30_000, 10_000, 10).await;
    wait_until(WAIT, "an abort", || aborted(&metrics) >= 1.0).await;
    let before = committed(&metrics);
    wait_until(WAIT, "commits after the abort", || {
        committed(&metrics) > before
    })
    .await;
    wait_until(WAIT, "every record copied", || {
        metric(&metrics, "streamfleet_partition_committed_offset") == 40_000.0
    })
    .await;
    assert!(
        w.is_running() && w.health.is_live(),
        "an abort is not fatal"
    );
    let stats = w.stop().await.expect("clean stop").stats;
    assert!(
        stats.consumed > 40_000,
        "the aborted transaction's records were processed again: {stats:?}"
    );

    // The mock keeps aborted records visible, so only completeness is checked here.
    let v = verify_copy(&broker, &input, &output).await;
    assert_eq!(
        (v.comparison.missing, v.comparison.unexpected),
        (0, 0),
        "{v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_producer_stops_the_worker_with_a_clear_reason_mock() {
    let broker = Broker::mock();
    let (input, output) = broker.pipeline_topics("seq", 2).await;
    let config = eos_config(&broker, &unique("eos"), &input, "i-1");
    let w = TestWorker::start(config, Passthrough::to(output));
    wait_until(WAIT, "assignment", || w.snapshot().assigned_partitions == 2).await;
    broker.as_mock().unwrap().request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED; 5],
    );
    seed_sequence(&broker, &input, 0, 50, 5).await;
    wait_until(WAIT, "the worker stops by itself", || !w.is_running()).await;
    let metrics = w.metrics.clone();
    let health = w.health.clone();
    match w.stop().await {
        Err(WorkerError::Fatal(reason)) => assert!(reason.contains("fenced"), "{reason}"),
        other => panic!("expected a fatal error, got {other:?}"),
    }
    assert!(
        !health.is_live(),
        "the liveness probe fails so the orchestrator restarts it"
    );
    assert_eq!(metric(&metrics, "streamfleet_producer_fenced_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_transactional_id_is_named_when_the_worker_stops_mock() {
    let broker = Broker::mock();
    let (input, output) = broker.pipeline_topics("seq", 2).await;
    let group = unique("eos");
    let config = eos_config(&broker, &group, &input, "i-1");
    // The first producer registers; the broker refuses the second one's id (as a missing ACL
    // would).
    broker.as_mock().unwrap().request_errors(
        RDKafkaApiKey::InitProducerId,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        ],
    );
    let w = TestWorker::start(config, Passthrough::to(output));
    wait_until(WAIT, "the worker stops by itself", || !w.is_running()).await;
    match w.stop().await {
        Err(WorkerError::Fatal(reason)) => assert!(
            reason.contains(&format!("transactional id {group}.i-1#1:")),
            "{reason}"
        ),
        other => panic!("expected a fatal error, got {other:?}"),
    }
}

fn inventory_config(broker: &Broker, group: &str, input: &str, instance: &str) -> WorkerConfig {
    let mut config = eos_config(broker, group, input, instance);
    config.changelogs = [(input.to_owned(), format!("{input}-changelog"))].into();
    config
}

async fn inventory_topics(broker: &Broker) -> (String, String) {
    let (input, output) = (unique("inv-in"), unique("inv-out"));
    for t in [
        input.clone(),
        output.clone(),
        format!("{input}-dlt"),
        format!("{input}-changelog"),
    ] {
        broker.create_topic(&t, 2).await;
    }
    (input, output)
}

async fn send_commands(broker: &Broker, topic: &str, commands: &[InventoryEvent]) {
    let codec = Encoding::default().codec::<InventoryEvent>(topic).unwrap();
    let batch: Vec<(String, Vec<u8>)> = commands
        .iter()
        .map(|c| (c.hotel_id.clone(), codec.encode(c).unwrap()))
        .collect();
    produce_all(&producer(&broker.bootstrap()), topic, &batch).await;
}

fn command(
    id: &str,
    hotel: &str,
    kind: InventoryEventType,
    qty: i32,
    booking: Option<&str>,
) -> InventoryEvent {
    InventoryEvent {
        event_id: id.into(),
        hotel_id: hotel.into(),
        kind,
        quantity: qty,
        booking_id: booking.map(str::to_owned),
        occurred_at: now_ms(),
    }
}

fn processor(input: &str, output: &str) -> InventoryProcessor {
    InventoryProcessor::new(
        &Encoding::default(),
        input,
        output,
        streamfleet_inventory::DEFAULT_RETENTION,
    )
    .unwrap()
}

async fn last_available(broker: &Broker, output: &str) -> BTreeMap<String, i64> {
    let codec = Encoding::default().codec::<InventoryOutcome>("x").unwrap();
    let mut out = BTreeMap::new();
    let mut records = read_topic(&broker.bootstrap(), output, Isolation::ReadCommitted).await;
    records.sort_by_key(|r| (r.partition, r.offset));
    for r in records {
        let o = codec.decode(r.value.as_deref().unwrap()).unwrap();
        out.insert(o.hotel_id, o.available);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_is_restored_from_the_changelog_before_any_record_mock() {
    use InventoryEventType::*;
    let broker = Broker::mock();
    let (input, output) = inventory_topics(&broker).await;
    let first: Vec<InventoryEvent> = (0..4)
        .flat_map(|h| {
            let hotel = format!("h{h}");
            vec![
                command(&format!("restock-{h}"), &hotel, Restock, 10, None),
                command(
                    &format!("reserve-{h}-a"),
                    &hotel,
                    Reserve,
                    3,
                    Some(&format!("{h}-a")),
                ),
            ]
        })
        .collect();
    send_commands(&broker, &input, &first).await;
    let w = TestWorker::start(
        inventory_config(&broker, &unique("inv"), &input, "a"),
        processor(&input, &output),
    );
    wait_until(WAIT, "8 outcomes", || w.snapshot().succeeded == 8).await;
    let metrics = w.metrics.clone();
    wait_until(WAIT, "committed", || committed(&metrics) >= 1.0).await;
    w.stop().await.expect("clean");
    let changelog = read_topic(
        &broker.bootstrap(),
        &format!("{input}-changelog"),
        Isolation::ReadCommitted,
    )
    .await;
    assert!(
        changelog.len() >= 4,
        "every hotel's stock went to the changelog"
    );
    assert!(changelog.iter().all(|r| r.key.is_some()));

    // A new member (another group, so it reads the inputs again from the start) restores the
    // stock first: every command is then recognised as already applied.
    let second = TestWorker::start(
        inventory_config(&broker, &unique("inv"), &input, "b"),
        processor(&input, &output),
    );
    wait_until(WAIT, "the 8 commands seen again", || {
        second.snapshot().replay_dropped == 8
    })
    .await;
    send_commands(
        &broker,
        &input,
        &[command("reserve-0-b", "h0", Reserve, 2, Some("0-b"))],
    )
    .await;
    wait_until(WAIT, "the new command processed", || {
        second.snapshot().succeeded == 1
    })
    .await;
    let metrics = second.metrics.clone();
    wait_until(WAIT, "committed", || committed(&metrics) >= 1.0).await;
    assert!(metric(&metrics, "streamfleet_state_restored_records_total") >= 4.0);
    second.stop().await.expect("clean");
    assert_eq!(
        last_available(&broker, &output).await["h0"],
        10 - 3 - 2,
        "the stock continued from the restored state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn offsets_commit_inside_transactions_and_a_restart_resumes_exactly_real_broker() {
    let broker = Broker::real();
    let (input, output) = broker.pipeline_topics("seq", 3).await;
    seed_sequence(&broker, &input, 0, 3000, 30).await;
    let group = unique("eos");
    let config = || eos_config(&broker, &group, &input, "i-1");
    let w = TestWorker::start(config(), Passthrough::to(output.clone()));
    wait_until(WAIT, "3000 copied", || w.snapshot().succeeded == 3000).await;
    w.stop().await.expect("clean stop");
    let offsets = group_offsets(&broker.bootstrap(), &group, &input, 3);
    let total: i64 = offsets
        .values()
        .map(|o| o.expect("committed in the transaction"))
        .sum();
    assert_eq!(
        total, 3000,
        "the transactions committed every offset: {offsets:?}"
    );

    seed_sequence(&broker, &input, 3000, 600, 30).await;
    let again = TestWorker::start(config(), Passthrough::to(output.clone()));
    wait_until(WAIT, "the new 600 copied", || {
        again.snapshot().succeeded >= 600
    })
    .await;
    let stats = again.stop().await.expect("clean").stats;
    assert_eq!(
        stats.consumed, 600,
        "the restart resumed at the committed offsets"
    );
    let v = verify_copy(&broker, &input, &output).await;
    assert_eq!(v.anomalies(), 0, "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn a_second_instance_with_the_same_id_fences_the_first_real_broker() {
    let broker = Broker::real();
    let (input, output) = broker.pipeline_topics("seq", 2).await;
    let group = unique("eos");
    let config = || eos_config(&broker, &group, &input, "same-id");
    let first = TestWorker::start(config(), Passthrough::to(output.clone()));
    wait_until(WAIT, "first assigned", || {
        first.snapshot().assigned_partitions == 2
    })
    .await;
    seed_sequence(&broker, &input, 0, 100, 10).await;
    wait_until(WAIT, "first copied", || first.snapshot().succeeded >= 100).await;
    let second = TestWorker::start(config(), Passthrough::to(output.clone()));
    seed_sequence(&broker, &input, 100, 100, 10).await;
    wait_until(WAIT, "the first instance stops", || !first.is_running()).await;
    match first.stop().await {
        Err(WorkerError::Fatal(reason)) => assert!(reason.contains("fenced"), "{reason}"),
        other => panic!("expected the first instance fenced, got {other:?}"),
    }
    wait_until(WAIT, "the second copies", || {
        second.snapshot().succeeded > 0
    })
    .await;
    second
        .stop()
        .await
        .expect("the surviving instance stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn verify_reports_a_transaction_left_open_real_broker() {
    let broker = Broker::real();
    let (input, output) = broker.pipeline_topics("seq", 1).await;
    seed_sequence(&broker, &input, 0, 10, 2).await;
    let txn: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("transactional.id", unique("dangling"))
        .create()
        .unwrap();
    let t = txn.clone();
    tokio::task::spawn_blocking(move || {
        t.init_transactions(Duration::from_secs(30)).unwrap();
        t.begin_transaction().unwrap();
    })
    .await
    .unwrap();
    let inputs = read_topic(&broker.bootstrap(), &input, Isolation::ReadCommitted).await;
    for r in &inputs {
        let record = FutureRecord::to(&output)
            .key(r.key.as_deref().unwrap())
            .payload(r.value.as_deref().unwrap());
        txn.send(record, Duration::from_secs(10)).await.unwrap();
    }
    let (b, i, o) = (broker.bootstrap(), input.clone(), output.clone());
    let open = tokio::task::spawn_blocking(move || {
        verify::verify(&b, &[], &i, &o, Duration::from_secs(1))
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        !open.hanging.is_empty(),
        "the open transaction holds the last stable offset: {open:?}"
    );
    assert!(open.anomalies() > 0);
    let t = txn.clone();
    tokio::task::spawn_blocking(move || t.commit_transaction(Duration::from_secs(30)).unwrap())
        .await
        .unwrap();
    let v = verify_copy(&broker, &input, &output).await;
    assert_eq!(v.anomalies(), 0, "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn a_restarted_inventory_worker_continues_from_its_restored_stock_real_broker() {
    use InventoryEventType::*;
    let broker = Broker::real();
    let (input, output) = inventory_topics(&broker).await;
    let group = unique("inv");
    send_commands(
        &broker,
        &input,
        &[
            command("restock", "h1", Restock, 10, None),
            command("reserve-a", "h1", Reserve, 4, Some("a")),
        ],
    )
    .await;
    let w = TestWorker::start(
        inventory_config(&broker, &group, &input, "a"),
        processor(&input, &output),
    );
    wait_until(WAIT, "2 outcomes", || w.snapshot().succeeded == 2).await;
    w.stop().await.expect("clean");
    send_commands(
        &broker,
        &input,
        &[
            command("reserve-b", "h1", Reserve, 5, Some("b")),
            command("reserve-c", "h1", Reserve, 5, Some("c")),
        ],
    )
    .await;
    let again = TestWorker::start(
        inventory_config(&broker, &group, &input, "a"),
        processor(&input, &output),
    );
    wait_until(WAIT, "2 more outcomes", || again.snapshot().succeeded == 2).await;
    let stats = again.stop().await.expect("clean").stats;
    assert_eq!(stats.consumed, 2, "resumed after the committed commands");
    let codec = Encoding::default().codec::<InventoryOutcome>("x").unwrap();
    let mut outcomes: Vec<InventoryOutcome> =
        read_topic(&broker.bootstrap(), &output, Isolation::ReadCommitted)
            .await
            .iter()
            .map(|r| codec.decode(r.value.as_deref().unwrap()).unwrap())
            .collect();
    outcomes.sort_by_key(|o| o.event_id.clone());
    let by_id: BTreeMap<&str, (&InventoryResult, i64)> = outcomes
        .iter()
        .map(|o| (o.event_id.as_str(), (&o.result, o.available)))
        .collect();
    assert_eq!(
        by_id["reserve-b"],
        (&InventoryResult::Reserved, 1),
        "10 - 4 - 5, from the restored stock"
    );
    assert_eq!(
        by_id["reserve-c"].0,
        &InventoryResult::Rejected,
        "only 1 room left"
    );
}
