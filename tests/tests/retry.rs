//! The retry ladder, the dead-letter contract, and redrive. Each scenario runs on the
//! embedded cluster and, `#[ignore]`d unless KAFKA_BOOTSTRAP_SERVERS is set, on a real broker.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use streamfleet::dlq::{self, Filter, ReplayOptions};
use streamfleet_runtime::headers::{self, PREFIX};
use streamfleet_runtime::retry::RetryPolicy;
use streamfleet_runtime::{CancellationToken, ErrorClass, RawRecord, now_ms};
use streamfleet_tests::echo::Echo;
use streamfleet_tests::*;

const WAIT: Duration = Duration::from_secs(60);

fn policy(initial_ms: u64) -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(initial_ms),
        multiplier: 2.0,
        max_backoff: Duration::from_secs(10),
    }
}

struct Ladder {
    input: String,
    output: String,
    dlt: String,
    rungs: Vec<String>,
    policy: RetryPolicy,
}

async fn ladder(broker: &Broker, partitions: i32, policy: RetryPolicy) -> Ladder {
    let input = unique("orders");
    let output = unique("orders-out");
    broker.create_topic(&input, partitions).await;
    broker.create_topic(&output, partitions).await;
    let rungs: Vec<String> = policy
        .rung_topics(&input)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    for r in &rungs {
        broker.create_topic(r, partitions).await;
    }
    let dlt = format!("{input}-dlt");
    broker.create_topic(&dlt, partitions).await;
    Ladder {
        input,
        output,
        dlt,
        rungs,
        policy,
    }
}

impl Ladder {
    fn config(&self, broker: &Broker) -> streamfleet_runtime::config::WorkerConfig {
        let mut c = test_config(
            &broker.bootstrap(),
            &unique("group"),
            vec![(self.input.clone(), self.policy.clone())],
        );
        c.instance_id = Some("pod-7".into());
        c
    }
}

fn value(r: &RawRecord) -> String {
    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
}

async fn read(broker: &Broker, topic: &str) -> Vec<RawRecord> {
    read_topic(&broker.bootstrap(), topic, Isolation::ReadUncommitted).await
}

async fn transient_failure_succeeds_on_the_second_attempt(broker: Broker) {
    let l = ladder(&broker, 2, policy(300)).await;
    produce_all(
        &producer(&broker.bootstrap()),
        &l.input,
        &[("k".into(), b"k:1:transient-until:2".to_vec())],
    )
    .await;
    let echo = Echo::new(&l.output);
    let w = TestWorker::start(l.config(&broker), echo.clone());
    wait_until(WAIT, "the retry succeeded", || w.snapshot().succeeded == 1).await;
    let stats = w.stop().await.expect("clean").stats;
    assert_eq!(
        (stats.retried, stats.succeeded, stats.dead_lettered),
        (1, 1, 0)
    );

    let attempts = echo.attempts_of("k:1");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(
        (attempts[0].topic.as_str(), attempts[0].attempt),
        (l.input.as_str(), 1)
    );
    assert_eq!(
        (attempts[1].topic.as_str(), attempts[1].attempt),
        (l.rungs[0].as_str(), 2)
    );
    let due = attempts[1].due_ms.expect("the retry record has a due time");
    assert!(
        due >= attempts[0].at_ms + 300,
        "due {due} is the backoff after the failure at {}",
        attempts[0].at_ms
    );
    assert!(
        attempts[1].at_ms >= due,
        "processed at {} before it was due at {due}",
        attempts[1].at_ms
    );

    let source = read(&broker, &l.input).await;
    let rung = read(&broker, &l.rungs[0]).await;
    assert_eq!(rung.len(), 1);
    assert_eq!(
        rung[0].partition, source[0].partition,
        "a retry keeps its partition number"
    );
    let info = headers::parse_failure(&rung[0].headers).unwrap();
    assert_eq!(
        (info.attempt, info.error_class, info.due_at),
        (1, ErrorClass::Transient, Some(due))
    );
    assert_eq!(
        (info.original_topic.as_str(), info.original_offset),
        (l.input.as_str(), source[0].offset)
    );
    let outputs = read(&broker, &l.output).await;
    assert_eq!(outputs.iter().map(value).collect::<Vec<_>>(), vec!["k:1"]);
    assert!(read(&broker, &l.dlt).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_failure_succeeds_on_the_second_attempt_mock() {
    transient_failure_succeeds_on_the_second_attempt(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn transient_failure_succeeds_on_the_second_attempt_real_broker() {
    transient_failure_succeeds_on_the_second_attempt(Broker::real()).await;
}

async fn exhausted_retries_are_dead_lettered_after_exactly_attempts_tries(broker: Broker) {
    let l = ladder(&broker, 2, policy(200)).await;
    produce_all(
        &producer(&broker.bootstrap()),
        &l.input,
        &[("x".into(), b"x:1:transient".to_vec())],
    )
    .await;
    let echo = Echo::new(&l.output);
    let w = TestWorker::start(l.config(&broker), echo.clone());
    wait_until(WAIT, "the record was dead-lettered", || {
        w.snapshot().dead_lettered == 1
    })
    .await;
    let stats = w.stop().await.expect("clean").stats;
    assert_eq!(
        (stats.retried, stats.dead_lettered, stats.succeeded),
        (2, 1, 0)
    );

    let attempts = echo.attempts_of("x:1");
    let topics: Vec<&str> = attempts.iter().map(|a| a.topic.as_str()).collect();
    assert_eq!(
        topics,
        vec![l.input.as_str(), l.rungs[0].as_str(), l.rungs[1].as_str()],
        "exactly 3 attempts"
    );
    for a in &attempts[1..] {
        assert!(
            a.at_ms >= a.due_ms.unwrap(),
            "attempt {} ran early",
            a.attempt
        );
    }
    assert!(
        attempts[2].due_ms.unwrap() - attempts[1].at_ms >= 400,
        "the second retry waits 2 × 200 ms"
    );

    let source = read(&broker, &l.input).await;
    let dlt = read(&broker, &l.dlt).await;
    assert_eq!(dlt.len(), 1);
    let info = headers::parse_failure(&dlt[0].headers).unwrap();
    assert_eq!(
        (info.error_class, info.attempt),
        (ErrorClass::RetriesExhausted, 3)
    );
    assert_eq!(
        (info.original_partition, info.original_offset),
        (source[0].partition, source[0].offset)
    );
    assert_eq!(info.due_at, None);
    assert!(
        info.first_failure_at >= attempts[0].at_ms && info.first_failure_at <= attempts[1].at_ms
    );
    assert_eq!(info.error_message, "told to fail");
    assert_eq!(value(&dlt[0]), "x:1:transient", "original value kept");
    assert!(read(&broker, &l.output).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhausted_retries_are_dead_lettered_after_exactly_attempts_tries_mock() {
    exhausted_retries_are_dead_lettered_after_exactly_attempts_tries(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn exhausted_retries_are_dead_lettered_after_exactly_attempts_tries_real_broker() {
    exhausted_retries_are_dead_lettered_after_exactly_attempts_tries(Broker::real()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permanent_failure_is_dead_lettered_with_every_header() {
    let broker = Broker::mock();
    let l = ladder(&broker, 3, policy(300)).await;
    let producer = producer(&broker.bootstrap());
    let record = FutureRecord::to(&l.input)
        .key("p")
        .payload("p:1:permanent")
        .timestamp(1_700_000_000_123)
        .headers(OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some("00-abc-01"),
        }));
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("produced");
    let config = l.config(&broker);
    let group = config.group_id.clone();
    let before = now_ms();
    let w = TestWorker::start(config, Echo::new(&l.output));
    wait_until(WAIT, "dead-lettered", || w.snapshot().dead_lettered == 1).await;
    w.stop().await.expect("clean");
    let after = now_ms();

    let source = read(&broker, &l.input).await;
    let dlt = read(&broker, &l.dlt).await;
    assert_eq!(dlt.len(), 1);
    let d = &dlt[0];
    assert_eq!(
        (d.key.as_deref(), value(d).as_str()),
        (Some(&b"p"[..]), "p:1:permanent")
    );
    assert_eq!(d.partition, source[0].partition);
    assert_eq!(
        d.headers[0],
        ("traceparent".to_owned(), b"00-abc-01".to_vec()),
        "the record's own headers come first"
    );
    let keys: BTreeSet<&str> = d
        .headers
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with(PREFIX))
        .collect();
    let expected: BTreeSet<&str> = [
        headers::ORIGINAL_TOPIC,
        headers::ORIGINAL_PARTITION,
        headers::ORIGINAL_OFFSET,
        headers::ORIGINAL_TIMESTAMP,
        headers::ATTEMPT,
        headers::ERROR_CLASS,
        headers::ERROR_MESSAGE,
        headers::GROUP,
        headers::INSTANCE,
        headers::FIRST_FAILURE_AT,
    ]
    .into();
    assert_eq!(
        keys, expected,
        "every contract header, and no due time on a dead letter"
    );
    let h = |k: &str| d.header_str(k).unwrap().to_owned();
    assert_eq!(h(headers::ORIGINAL_TOPIC), l.input);
    assert_eq!(
        h(headers::ORIGINAL_PARTITION),
        source[0].partition.to_string()
    );
    assert_eq!(h(headers::ORIGINAL_OFFSET), source[0].offset.to_string());
    assert_eq!(h(headers::ORIGINAL_TIMESTAMP), "1700000000123");
    assert_eq!(h(headers::ATTEMPT), "1");
    assert_eq!(h(headers::ERROR_CLASS), "permanent");
    assert_eq!(h(headers::ERROR_MESSAGE), "told to fail");
    assert_eq!(h(headers::GROUP), group);
    assert_eq!(h(headers::INSTANCE), "pod-7");
    let first: i64 = h(headers::FIRST_FAILURE_AT).parse().unwrap();
    assert!((before..=after).contains(&first));
}

async fn the_partition_keeps_flowing_while_a_record_waits(broker: Broker) {
    let l = ladder(&broker, 1, policy(1500)).await;
    let mut batch = vec![("a".to_owned(), b"a:0:transient-until:2".to_vec())];
    batch.extend((0..100).map(|i| ("b".to_owned(), format!("b:{i}").into_bytes())));
    produce_all(&producer(&broker.bootstrap()), &l.input, &batch).await;
    let echo = Echo::new(&l.output);
    let w = TestWorker::start(l.config(&broker), echo.clone());
    wait_until(WAIT, "all 101 processed", || w.snapshot().succeeded == 101).await;
    w.stop().await.expect("clean");

    let a = echo.attempts_of("a:0");
    let due = a[1].due_ms.unwrap();
    let b_done = echo
        .attempts_of("b:")
        .iter()
        .map(|x| x.at_ms)
        .max()
        .unwrap();
    assert!(
        b_done < due,
        "the 100 later records finished ({b_done}) before the retry was due ({due})"
    );
    let outputs: Vec<String> = read(&broker, &l.output).await.iter().map(value).collect();
    assert_eq!(outputs.len(), 101);
    assert_eq!(
        outputs.last().map(String::as_str),
        Some("a:0"),
        "the retried record came last"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_partition_keeps_flowing_while_a_record_waits_mock() {
    the_partition_keeps_flowing_while_a_record_waits(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn the_partition_keeps_flowing_while_a_record_waits_real_broker() {
    the_partition_keeps_flowing_while_a_record_waits(Broker::real()).await;
}

/// `ordering: key` (the default): while `k:0` waits in the retry path, `k:1` and `k:2` wait
/// behind it and come out after it, in order; another key flows meanwhile.
async fn later_records_of_a_key_wait_behind_its_retry(broker: Broker) {
    let l = ladder(&broker, 1, policy(500)).await;
    let batch = vec![
        ("k".to_owned(), b"k:0:transient-until:2".to_vec()),
        ("k".to_owned(), b"k:1".to_vec()),
        ("o".to_owned(), b"o:0".to_vec()),
        ("k".to_owned(), b"k:2:transient-until:2".to_vec()),
        ("o".to_owned(), b"o:1".to_vec()),
    ];
    produce_all(&producer(&broker.bootstrap()), &l.input, &batch).await;
    let echo = Echo::new(&l.output);
    let w = TestWorker::start(l.config(&broker), echo.clone());
    wait_until(WAIT, "all five processed", || w.snapshot().succeeded == 5).await;
    let stats = w.stop().await.expect("clean").stats;
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(stats.parked, 2, "k:1 and k:2 waited behind k:0");
    assert_eq!(
        stats.retried, 2,
        "k:0 once, and k:2 once when its turn came"
    );
    let outputs: Vec<String> = read(&broker, &l.output).await.iter().map(value).collect();
    let of = |k: &str| -> Vec<String> {
        outputs
            .iter()
            .filter(|v| v.starts_with(k))
            .cloned()
            .collect()
    };
    assert_eq!(of("k:"), vec!["k:0", "k:1", "k:2"], "{outputs:?}");
    assert_eq!(of("o:"), vec!["o:0", "o:1"]);
    let k0 = outputs.iter().position(|v| v == "k:0").unwrap();
    let o1 = outputs.iter().position(|v| v == "o:1").unwrap();
    assert!(o1 < k0, "the other key did not wait: {outputs:?}");
    assert!(read(&broker, &l.dlt).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn later_records_of_a_key_wait_behind_its_retry_mock() {
    later_records_of_a_key_wait_behind_its_retry(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn later_records_of_a_key_wait_behind_its_retry_real_broker() {
    later_records_of_a_key_wait_behind_its_retry(Broker::real()).await;
}

/// `ordering: partition` keeps the old behaviour: a later record of the key overtakes the one
/// in the retry path.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_partition_ordering_a_retried_record_is_overtaken_mock() {
    let broker = Broker::mock();
    let l = ladder(&broker, 1, policy(300)).await;
    let batch = vec![
        ("k".to_owned(), b"k:0:transient-until:2".to_vec()),
        ("k".to_owned(), b"k:1".to_vec()),
    ];
    produce_all(&producer(&broker.bootstrap()), &l.input, &batch).await;
    let mut config = l.config(&broker);
    config.ordering.insert(
        l.input.clone(),
        streamfleet_runtime::ordering::Ordering::Partition,
    );
    let w = TestWorker::start(config, Echo::new(&l.output));
    wait_until(WAIT, "both processed", || w.snapshot().succeeded == 2).await;
    assert_eq!(w.stop().await.expect("clean").stats.parked, 0);
    let outputs: Vec<String> = read(&broker, &l.output).await.iter().map(value).collect();
    assert_eq!(outputs, vec!["k:1", "k:0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_input_ends_in_exactly_one_of_output_or_dead_letter() {
    let broker = Broker::mock();
    let l = ladder(&broker, 3, policy(200)).await;
    let directives = [
        "",
        ":transient-until:2",
        ":transient-until:3",
        ":transient",
        ":permanent",
        "!",
    ];
    let batch: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| {
            let d = directives[i % directives.len()];
            let v = if d == "!" {
                format!("k{i}:malformed")
            } else {
                format!("k{i}:{i}{d}")
            };
            (format!("k{i}"), v.into_bytes())
        })
        .collect();
    produce_all(&producer(&broker.bootstrap()), &l.input, &batch).await;
    let w = TestWorker::start(l.config(&broker), Echo::new(&l.output));
    wait_until(WAIT, "300 records finished", || {
        let s = w.snapshot();
        s.succeeded + s.dead_lettered == 300
    })
    .await;
    let stats = w.stop().await.expect("clean").stats;
    assert_eq!(
        stats.consumed,
        300 + stats.retried,
        "every retry was consumed once"
    );
    assert_eq!(
        stats.retried,
        50 + 100 + 100,
        "until:2 retries once, until:3 twice, transient twice"
    );

    let key = |v: &str| v.split(':').next().unwrap().to_owned();
    let outputs: Vec<String> = read(&broker, &l.output)
        .await
        .iter()
        .map(|r| key(&value(r)))
        .collect();
    let dead: Vec<String> = read(&broker, &l.dlt)
        .await
        .iter()
        .map(|r| key(&value(r)))
        .collect();
    assert_eq!((outputs.len(), dead.len()), (150, 150));
    let out_set: BTreeSet<&String> = outputs.iter().collect();
    let dead_set: BTreeSet<&String> = dead.iter().collect();
    assert_eq!(out_set.len(), 150, "no input produced twice");
    assert_eq!(dead_set.len(), 150, "no input dead-lettered twice");
    assert!(out_set.is_disjoint(&dead_set));
    assert_eq!(out_set.len() + dead_set.len(), 300);
}

/// Dead-letters `n` records with a worker whose dependency is broken; returns the processor
/// and the worker's config (the same group continues after a replay).
async fn dead_letters(
    broker: &Broker,
    l: &Ladder,
    n: usize,
) -> (Echo, streamfleet_runtime::config::WorkerConfig) {
    let batch: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| (format!("r{i}"), format!("r{i}:0:while-broken").into_bytes()))
        .collect();
    produce_all(&producer(&broker.bootstrap()), &l.input, &batch).await;
    let echo = Echo::new(&l.output);
    echo.broken.store(true, Ordering::SeqCst);
    let config = l.config(broker);
    let w = TestWorker::start(config.clone(), echo.clone());
    wait_until(WAIT, "every record dead-lettered", || {
        w.snapshot().dead_lettered == n as u64
    })
    .await;
    w.stop().await.expect("clean");
    (echo, config)
}

fn replay_options(broker: &Broker, l: &Ladder, limit: Option<u64>) -> ReplayOptions {
    ReplayOptions {
        brokers: broker.bootstrap(),
        props: vec![],
        topic: l.dlt.clone(),
        filter: Filter {
            classes: vec![ErrorClass::Permanent],
            ..Filter::default()
        },
        limit,
        rate: None,
        dry_run: false,
        group: None,
        // The mock accepts transactions but does not store their offsets.
        transactional: broker.as_mock().is_none(),
    }
}

async fn run_replay(opts: ReplayOptions) -> dlq::ReplayReport {
    tokio::task::spawn_blocking(move || dlq::replay(&opts, &CancellationToken::new(), |_, _| {}))
        .await
        .unwrap()
        .expect("replay")
}

async fn redrive_processes_dead_letters_once_fixed(broker: Broker) {
    let l = ladder(&broker, 3, policy(200)).await;
    let (echo, config) = dead_letters(&broker, &l, 20).await;
    echo.broken.store(false, Ordering::SeqCst);

    let mut dry = replay_options(&broker, &l, None);
    dry.dry_run = true;
    let report = run_replay(dry).await;
    assert_eq!((report.matched, report.republished), (20, 0));
    assert_eq!(
        read(&broker, &l.input).await.len(),
        20,
        "a dry run publishes nothing"
    );

    let report = run_replay(replay_options(&broker, &l, None)).await;
    assert_eq!(
        (report.scanned, report.matched, report.republished),
        (20, 20, 20)
    );
    assert!(!report.remaining);
    assert_eq!(report.by_topic[&l.input], 20);
    let again = run_replay(replay_options(&broker, &l, None)).await;
    assert_eq!(again.republished, 0, "a second run republishes nothing");

    let replayed: Vec<RawRecord> = read(&broker, &l.input)
        .await
        .into_iter()
        .filter(|r| r.header(headers::REPLAY_SOURCE).is_some())
        .collect();
    assert_eq!(replayed.len(), 20);
    for r in &replayed {
        assert!(
            r.header(headers::ATTEMPT).is_none(),
            "the attempt counter starts again"
        );
        assert!(headers::parse_failure(&r.headers).is_none());
    }

    let w = TestWorker::start(config, echo.clone());
    wait_until(WAIT, "the replayed records processed", || {
        w.snapshot().succeeded >= 20
    })
    .await;
    let stats = w.stop().await.expect("clean").stats;
    assert_eq!(
        stats.consumed, 20,
        "the group resumed after the dead letters: only the replays"
    );
    let mut outputs: Vec<String> = read(&broker, &l.output).await.iter().map(value).collect();
    outputs.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("r{i}:0")).collect();
    expected.sort();
    assert_eq!(outputs, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redrive_processes_dead_letters_once_fixed_mock() {
    redrive_processes_dead_letters_once_fixed(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn redrive_processes_dead_letters_once_fixed_real_broker() {
    redrive_processes_dead_letters_once_fixed(Broker::real()).await;
}

async fn an_interrupted_replay_resumes_without_duplicates(broker: Broker) {
    let l = ladder(&broker, 3, policy(200)).await;
    dead_letters(&broker, &l, 30).await;
    let first = run_replay(replay_options(&broker, &l, Some(10))).await;
    assert_eq!(first.republished, 10);
    assert!(first.remaining);
    let second = run_replay(replay_options(&broker, &l, Some(12))).await;
    assert_eq!(second.republished, 12);
    let third = run_replay(replay_options(&broker, &l, None)).await;
    assert_eq!(third.republished, 8);
    assert!(!third.remaining);
    assert_eq!(
        run_replay(replay_options(&broker, &l, None))
            .await
            .republished,
        0
    );

    let sources: Vec<String> = read(&broker, &l.input)
        .await
        .iter()
        .filter_map(|r| r.header_str(headers::REPLAY_SOURCE).map(str::to_owned))
        .collect();
    let unique: BTreeSet<&String> = sources.iter().collect();
    assert_eq!(
        (sources.len(), unique.len()),
        (30, 30),
        "every dead letter republished exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_replay_resumes_without_duplicates_mock() {
    an_interrupted_replay_resumes_without_duplicates(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn an_interrupted_replay_resumes_without_duplicates_real_broker() {
    an_interrupted_replay_resumes_without_duplicates(Broker::real()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inspect_groups_dead_letters_by_class_and_message() {
    let broker = Broker::mock();
    let l = ladder(&broker, 2, policy(100)).await;
    let mut batch: Vec<(String, Vec<u8>)> = (0..7)
        .map(|i| (format!("p{i}"), format!("p{i}:0:permanent").into_bytes()))
        .collect();
    batch.extend((0..3).map(|i| (format!("m{i}"), vec![0xff, i as u8])));
    batch.push(("ok".into(), b"ok:0".to_vec()));
    produce_all(&producer(&broker.bootstrap()), &l.input, &batch).await;
    let w = TestWorker::start(l.config(&broker), Echo::new(&l.output));
    wait_until(WAIT, "10 dead letters", || w.snapshot().dead_lettered == 10).await;
    w.stop().await.expect("clean");

    let (b, t) = (broker.bootstrap(), l.dlt.clone());
    let report = tokio::task::spawn_blocking(move || dlq::inspect(&b, &[], &t, 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.records, 10);
    assert_eq!(
        (report.by_class["permanent"], report.by_class["malformed"]),
        (7, 3)
    );
    assert_eq!(report.without_headers, 0);
    let top = &report.groups[0];
    assert_eq!(
        (
            top.count,
            top.error_class.as_str(),
            top.error_message.as_str()
        ),
        (7, "permanent", "told to fail")
    );
    assert_eq!(top.samples.len(), 2, "at most --samples per group");
    assert_eq!(top.original_topics[&l.input], 7);
    assert!(top.oldest.unwrap() <= top.newest.unwrap());
    assert_eq!(top.samples[0].headers[headers::ERROR_CLASS], "permanent");
}
