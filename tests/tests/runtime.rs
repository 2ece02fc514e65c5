//! Runtime semantics with the echo processor: groups and rebalances, restarts, backpressure,
//! poison records. Each scenario runs on the embedded cluster; the group and restart
//! scenarios also run on a real broker (`#[ignore]`d unless KAFKA_BOOTSTRAP_SERVERS is set).

use std::collections::BTreeMap;
use std::time::Duration;

use streamfleet_runtime::headers;
use streamfleet_tests::echo::Echo;
use streamfleet_tests::*;

const WAIT: Duration = Duration::from_secs(60);

fn records(keys: usize, per_key: std::ops::Range<u64>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for seq in per_key {
        for k in 0..keys {
            out.push((format!("key{k}"), format!("key{k}:{seq}").into_bytes()));
        }
    }
    out
}

/// Output values per key, in partition order.
fn per_key(records: &[streamfleet_runtime::RawRecord]) -> BTreeMap<String, Vec<u64>> {
    let mut sorted: Vec<_> = records.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in sorted {
        let v = String::from_utf8(r.value.clone().unwrap()).unwrap();
        let (k, seq) = v.split_once(':').unwrap();
        assert_eq!(
            r.key.as_deref(),
            Some(k.as_bytes()),
            "output keyed by its key"
        );
        out.entry(k.to_owned())
            .or_default()
            .push(seq.parse().unwrap());
    }
    out
}

fn assert_exact_in_order(outputs: &BTreeMap<String, Vec<u64>>, keys: usize, n: u64) {
    assert_eq!(outputs.len(), keys, "every key has outputs");
    for (k, seqs) in outputs {
        let expected: Vec<u64> = (0..n).collect();
        assert_eq!(
            seqs, &expected,
            "key {k}: every record exactly once, in order"
        );
    }
}

/// Two members share a group, then one leaves; every record is processed exactly once, in
/// order per key.
///
/// On a real broker only the revoke and shutdown commits hand partitions over (the periodic
/// commit is set to an hour): Apache Kafka accepts a member's commits while the group prepares
/// a rebalance, so each hand-over must be exact. librdkafka's mock coordinator refuses every
/// OffsetCommit from the moment a member joins or leaves until the group is up again
/// (`REBALANCE_IN_PROGRESS` in state JOINING, rdkafka_mock_cgrp.c
/// `rd_kafka_mock_cgrp_classic_check_state`), for about `session.timeout.ms`; whatever a
/// member processed and had not committed by then is processed again by the next owner, as
/// at-least-once allows. On the mock the test therefore commits periodically and waits for
/// the group to commit everything processed before each membership change (`settle`), so it
/// checks the hand-over from committed offsets and not the mock's refusals.
async fn group_splits_then_one_member_leaves(broker: Broker) {
    let settle = broker.as_mock().is_some();
    let bootstrap = broker.bootstrap();
    let (input, output) = broker.pipeline_topics("echo", 6).await;
    let group = unique("group");
    let producer = producer(&bootstrap);
    let cfg = || {
        let mut c = test_config(&bootstrap, &group, vec![(input.clone(), no_retries())]);
        if !settle {
            c.commit_interval = Duration::from_secs(3600);
        }
        c
    };
    let committed = |records| wait_committed(WAIT, &bootstrap, &group, &input, 6, records);

    let a = TestWorker::start(cfg(), Echo::new(&output));
    wait_until(WAIT, "a owns all 6 partitions", || {
        a.snapshot().assigned_partitions == 6
    })
    .await;
    produce_all(&producer, &input, &records(24, 0..20)).await;
    if settle {
        committed(480).await;
    }

    let b = TestWorker::start(cfg(), Echo::new(&output));
    wait_until(WAIT, "the partitions split between a and b", || {
        let (sa, sb) = (a.snapshot(), b.snapshot());
        sa.assigned_partitions > 0
            && sb.assigned_partitions > 0
            && sa.assigned_partitions + sb.assigned_partitions == 6
    })
    .await;
    produce_all(&producer, &input, &records(24, 20..40)).await;
    wait_until(WAIT, "both members processed the first 960 records", || {
        a.snapshot().succeeded + b.snapshot().succeeded >= 960
    })
    .await;
    assert!(
        b.snapshot().succeeded > 0,
        "b processed records of its partitions"
    );
    if settle {
        committed(960).await;
    }

    let report = a.stop().await.expect("a leaves cleanly");
    wait_until(WAIT, "b owns all 6 partitions after a left", || {
        b.snapshot().assigned_partitions == 6
    })
    .await;
    produce_all(&producer, &input, &records(24, 40..60)).await;
    wait_until(WAIT, "all 1440 records processed", || {
        report.stats.succeeded + b.snapshot().succeeded >= 1440
    })
    .await;
    let b_report = b.stop().await.expect("b stops cleanly");
    assert_eq!(
        report.stats.succeeded + b_report.stats.succeeded,
        1440,
        "no record processed twice"
    );

    let outputs = per_key(&read_topic(&bootstrap, &output, Isolation::ReadUncommitted).await);
    assert_exact_in_order(&outputs, 24, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_splits_then_one_member_leaves_mock() {
    group_splits_then_one_member_leaves(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn group_splits_then_one_member_leaves_real_broker() {
    group_splits_then_one_member_leaves(Broker::real()).await;
}

async fn restart_after_clean_shutdown(broker: Broker) {
    let bootstrap = broker.bootstrap();
    let (input, output) = broker.pipeline_topics("echo", 4).await;
    let group = unique("group");
    let producer = producer(&bootstrap);
    produce_all(&producer, &input, &records(8, 0..250)).await;
    let cfg = || test_config(&bootstrap, &group, vec![(input.clone(), no_retries())]);

    // Stop in the middle: records are queued in lanes and in flight when the signal comes.
    let first = TestWorker::start(cfg(), Echo::slow(&output, Duration::from_millis(1)));
    wait_until(WAIT, "a quarter processed", || {
        first.snapshot().succeeded >= 500
    })
    .await;
    let first = first.stop().await.expect("clean shutdown").stats;
    assert!(
        first.succeeded < 2000,
        "stopped before the end ({})",
        first.succeeded
    );

    let second = TestWorker::start(cfg(), Echo::new(&output));
    wait_until(WAIT, "the rest processed", || {
        first.succeeded + second.snapshot().succeeded >= 2000
    })
    .await;
    let second = second.stop().await.expect("clean shutdown").stats;
    assert_eq!(
        second.consumed,
        2000 - first.succeeded,
        "the restart consumed exactly what was left"
    );

    // A third start with nothing new processes nothing.
    let third = TestWorker::start(cfg(), Echo::new(&output));
    wait_until(WAIT, "third member assigned", || {
        third.snapshot().assigned_partitions == 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(third.stop().await.expect("clean").stats.consumed, 0);

    let outputs = per_key(&read_topic(&bootstrap, &output, Isolation::ReadUncommitted).await);
    assert_exact_in_order(&outputs, 8, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_after_clean_shutdown_processes_nothing_twice_mock() {
    restart_after_clean_shutdown(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn restart_after_clean_shutdown_processes_nothing_twice_real_broker() {
    restart_after_clean_shutdown(Broker::real()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_lane_pauses_its_partition_and_loses_nothing() {
    let broker = Broker::mock();
    let bootstrap = broker.bootstrap();
    let (input, output) = broker.pipeline_topics("echo", 1).await;
    produce_all(&producer(&bootstrap), &input, &records(4, 0..300)).await;
    let mut cfg = test_config(
        &bootstrap,
        &unique("group"),
        vec![(input.clone(), no_retries())],
    );
    cfg.lane_capacity = 16;
    let w = TestWorker::start(cfg, Echo::slow(&output, Duration::from_millis(1)));
    wait_until(WAIT, "all 1200 processed", || {
        w.snapshot().succeeded == 1200
    })
    .await;
    let stats = w.stop().await.expect("clean").stats;
    assert!(stats.pauses > 0, "the partition was paused at least once");
    assert_eq!(
        stats.consumed, 1200,
        "every record handed to the lane exactly once"
    );
    let outputs = per_key(&read_topic(&bootstrap, &output, Isolation::ReadUncommitted).await);
    assert_exact_in_order(&outputs, 4, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_memory_budget_pauses_a_partition_before_its_record_count_does() {
    let broker = Broker::mock();
    let bootstrap = broker.bootstrap();
    let (input, output) = broker.pipeline_topics("echo", 1).await;
    // 1200 records of about 3 KiB (3.5 MiB) on one partition, a 1 MiB budget and a record
    // bound that never binds: only the byte bound can pause the partition.
    let pad = "x".repeat(3 * 1024);
    let batch: Vec<(String, Vec<u8>)> = records(4, 0..300)
        .into_iter()
        .map(|(k, v)| {
            let mut v = v;
            v.extend_from_slice(format!(":pad-{pad}").as_bytes());
            (k, v)
        })
        .collect();
    produce_all(&producer(&bootstrap), &input, &batch).await;
    let mut cfg = test_config(
        &bootstrap,
        &unique("group"),
        vec![(input.clone(), no_retries())],
    );
    cfg.lane_capacity = 1_000_000;
    cfg.max_buffered_mib = 1;
    let w = TestWorker::start(cfg, Echo::slow(&output, Duration::from_millis(1)));
    let mut peak = 0;
    wait_until(WAIT, "all 1200 processed", || {
        let s = w.snapshot();
        peak = peak.max(s.buffered_bytes);
        s.succeeded == 1200
    })
    .await;
    assert!(
        peak > 0,
        "the held bytes were counted while records were processed"
    );
    // The budget counts a record until its outputs are acknowledged: once all are, nothing
    // is held (a leak here would keep the partition paused for good).
    wait_until(WAIT, "the buffers emptied", || {
        w.snapshot().buffered_bytes == 0
    })
    .await;
    let stats = w.stop().await.expect("clean").stats;
    assert!(stats.pauses > 0, "the byte budget paused the partition");
    assert_eq!(stats.consumed, 1200, "every record handed to the lane once");
    let outputs = per_key(&read_topic(&bootstrap, &output, Isolation::ReadUncommitted).await);
    assert_exact_in_order(&outputs, 4, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_are_dead_lettered_and_the_worker_keeps_going() {
    let broker = Broker::mock();
    let bootstrap = broker.bootstrap();
    let (input, output) = broker.pipeline_topics("echo", 3).await;
    let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("p0", vec![0xff, 0xfe, 0x00], "malformed"),
        ("p1", b"p1:not-a-number".to_vec(), "malformed"),
        ("p2", b"p2:1:panic".to_vec(), "permanent"),
        ("p3", b"p3:1:permanent".to_vec(), "permanent"),
    ];
    for i in 0..50u64 {
        batch.push((
            format!("k{}", i % 5),
            format!("k{}:{}", i % 5, i / 5).into_bytes(),
        ));
        if let Some((key, value, _)) = bad.get(i as usize / 10).filter(|_| i % 10 == 9) {
            batch.push(((*key).to_owned(), value.clone()));
        }
    }
    produce_all(&producer(&bootstrap), &input, &batch).await;
    let w = TestWorker::start(
        test_config(
            &bootstrap,
            &unique("group"),
            vec![(input.clone(), no_retries())],
        ),
        Echo::new(&output),
    );
    wait_until(WAIT, "54 records finished", || {
        let s = w.snapshot();
        s.succeeded + s.dead_lettered == 54
    })
    .await;
    assert!(
        w.is_running() && w.health.is_live(),
        "the worker survived every poison record"
    );
    let stats = w.stop().await.expect("clean").stats;
    assert_eq!((stats.succeeded, stats.dead_lettered), (50, 4));

    let dlt = read_topic(
        &bootstrap,
        &format!("{input}-dlt"),
        Isolation::ReadUncommitted,
    )
    .await;
    let source = read_topic(&bootstrap, &input, Isolation::ReadUncommitted).await;
    assert_eq!(dlt.len(), 4);
    for (key, value, class) in &bad {
        let d = dlt
            .iter()
            .find(|d| d.key.as_deref() == Some(key.as_bytes()))
            .expect("dead-lettered");
        assert_eq!(d.value.as_ref(), Some(value), "original bytes kept");
        let info = headers::parse_failure(&d.headers).expect("failure headers");
        let original = source
            .iter()
            .find(|r| r.value.as_ref() == Some(value))
            .expect("source record");
        assert_eq!(info.original_topic, input);
        assert_eq!(
            (info.original_partition, info.original_offset),
            (original.partition, original.offset)
        );
        assert_eq!(
            d.partition, original.partition,
            "dead letter on the source's partition number"
        );
        assert_eq!(info.error_class.as_str(), *class);
        assert!(!info.error_message.is_empty());
        assert_eq!(info.attempt, 1);
    }
    let panicked = dlt
        .iter()
        .find(|d| d.key.as_deref() == Some(&b"p2"[..]))
        .unwrap();
    assert!(
        headers::parse_failure(&panicked.headers)
            .unwrap()
            .error_message
            .contains("panicked")
    );
    let outputs = per_key(&read_topic(&bootstrap, &output, Isolation::ReadUncommitted).await);
    assert_exact_in_order(&outputs, 5, 10);
}
