//! How late does a retry run? Produces records that fail once (so each is retried once after
//! the default 1 s backoff) or twice (a second retry after 2 s) on an idle embedded cluster,
//! and reports how long after its due time each retry started.
//!
//!     cargo bench -p streamfleet-tests --bench retry_lateness [-- RECORDS]
//!
//! A measurement, not a test: it asserts nothing about time.

use std::time::Duration;

use streamfleet_runtime::retry::RetryPolicy;
use streamfleet_tests::echo::Echo;
use streamfleet_tests::*;

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let records: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let broker = Broker::mock();
    let policy = RetryPolicy::default();
    let (input, output) = (unique("lateness"), unique("lateness-out"));
    for t in [input.clone(), output.clone(), format!("{input}-dlt")]
        .into_iter()
        .chain(policy.rung_topics(&input).into_iter().map(|(t, _)| t))
    {
        broker.create_topic(&t, 6).await;
    }
    let echo = Echo::new(&output);
    let w = TestWorker::start(
        test_config(
            &broker.bootstrap(),
            &unique("group"),
            vec![(input.clone(), policy)],
        ),
        echo.clone(),
    );
    wait_until(Duration::from_secs(30), "assignment", || {
        w.snapshot().assigned_partitions > 0
    })
    .await;
    // Spread the failures over 5 s so retries come due one by one, as on a live system.
    let p = producer(&broker.bootstrap());
    for chunk in 0..10 {
        let batch: Vec<(String, Vec<u8>)> = (0..records / 10)
            .map(|i| {
                let n = chunk * (records / 10) + i;
                let until = if n.is_multiple_of(2) { 2 } else { 3 };
                (
                    format!("k{n}"),
                    format!("k{n}:{n}:transient-until:{until}").into_bytes(),
                )
            })
            .collect();
        produce_all(&p, &input, &batch).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let expected = (records / 10 * 10) as u64;
    wait_until(Duration::from_secs(120), "every record succeeded", || {
        w.snapshot().succeeded == expected
    })
    .await;
    w.stop().await.expect("clean");

    let mut late: Vec<i64> = echo
        .attempts
        .lock()
        .unwrap()
        .iter()
        .filter_map(|a| a.due_ms.map(|due| a.at_ms - due))
        .collect();
    late.sort_unstable();
    assert!(late.iter().all(|l| *l >= 0), "a retry ran early");
    println!(
        "retry lateness over {} retries (1 s and 2 s rungs, idle embedded cluster): \
         p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        late.len(),
        percentile(&late, 0.5),
        percentile(&late, 0.9),
        percentile(&late, 0.99),
        late.last().unwrap()
    );
}
