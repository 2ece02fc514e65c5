//! The sequence workload and its verifier, modelled on Apache Kafka's transactions system
//! test.
//!
//! [`seed`] writes records keyed `key-NNNNN` whose values are `<key>:<seq>`, the sequence
//! numbers of each key counting up from 0. A copying worker (the `passthrough` worker, in any
//! mode) copies them to an output topic. [`verify`] then reads input and output as a
//! `read_committed` consumer and reports, per key:
//!
//! - **missing**: input values never seen in the output (loss);
//! - **duplicated**: output values seen more than once;
//! - **out of order**: output values whose input position is below one already seen;
//! - **unexpected**: output values that are not in the input;
//!
//! plus **hanging transactions**: partitions of either topic whose last stable offset stays
//! below the high watermark (a transaction left open), and, for information, how many output
//! records a `read_uncommitted` reader sees beyond the committed ones (aborted transactions).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use streamfleet_runtime::properties::KafkaProperty;

use crate::reader::{self, Isolation};

/// The key of sequence `i` of `keys` keys.
pub fn key(i: u64) -> String {
    format!("key-{i:05}")
}

/// Produces records `start..start + count` of the sequence over `keys` keys (record n: key
/// n mod keys, sequence n / keys), at most `rate` per second. Returns when all are
/// acknowledged. A later seed continues the sequence with `start` = the records so far.
pub async fn seed(
    producer: &FutureProducer,
    topic: &str,
    start: u64,
    count: u64,
    keys: u64,
    rate: Option<u64>,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<u64> {
    anyhow::ensure!(keys > 0, "--keys must be at least 1");
    let started = Instant::now();
    let mut pending: Vec<DeliveryFuture> = Vec::new();
    for n in start..start + count {
        let k = key(n % keys);
        let value = format!("{k}:{}", n / keys);
        loop {
            let record = FutureRecord::to(topic).key(&k).payload(&value);
            match producer.send_result(record) {
                Ok(d) => break pending.push(d),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Err((e, _)) => anyhow::bail!("producing to {topic}: {e}"),
            }
        }
        if pending.len() >= 10_000 || n + 1 == start + count {
            for d in pending.drain(..) {
                match d.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => anyhow::bail!("producing to {topic}: {e}"),
                    Err(_) => anyhow::bail!("producer closed"),
                }
            }
            progress(n + 1 - start);
        }
        if let Some(rate) = rate.filter(|r| *r > 0) {
            let due = started + Duration::from_secs_f64((n + 1 - start) as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    Ok(count)
}

/// What the comparison found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Comparison {
    /// Keys in the input.
    pub keys: usize,
    /// Input values absent from the output.
    pub missing: u64,
    /// Output values seen more than once.
    pub duplicated: u64,
    /// Output values behind one already seen for their key.
    pub out_of_order: u64,
    /// Output values not in the input.
    pub unexpected: u64,
    /// Input values repeated in the input itself: not a sequence workload, so the
    /// comparison means nothing (seed a sequence once, continue it with `--start`).
    pub input_duplicates: u64,
    /// Examples of each anomaly.
    pub samples: Vec<String>,
}

/// Compares output with input, per key (records as (key, value), in partition order).
pub fn compare(input: &[(String, String)], output: &[(String, String)]) -> Comparison {
    let mut position: HashMap<(&str, &str), usize> = HashMap::new();
    let mut per_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut input_duplicates = 0;
    for (k, v) in input {
        let list = per_key.entry(k).or_default();
        if position.contains_key(&(k.as_str(), v.as_str())) {
            input_duplicates += 1;
            continue;
        }
        position.insert((k, v), list.len());
        list.push(v);
    }
    let mut c = Comparison {
        keys: per_key.len(),
        input_duplicates,
        ..Comparison::default()
    };
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let mut last: HashMap<&str, usize> = HashMap::new();
    let sample = |c: &mut Comparison, what: String| {
        if c.samples.len() < 20 {
            c.samples.push(what);
        }
    };
    for (k, v) in output {
        let Some(&pos) = position.get(&(k.as_str(), v.as_str())) else {
            c.unexpected += 1;
            sample(&mut c, format!("unexpected {k} = {v}"));
            continue;
        };
        if !seen.insert((k, v)) {
            c.duplicated += 1;
            sample(&mut c, format!("duplicated {k} = {v}"));
            continue;
        }
        match last.get(k.as_str()) {
            Some(&prev) if pos < prev => {
                c.out_of_order += 1;
                sample(
                    &mut c,
                    format!("out of order {k} = {v} (input position {pos} after {prev})"),
                );
            }
            _ => {
                last.insert(k, pos);
            }
        }
    }
    for (k, values) in &per_key {
        for v in values {
            if !seen.contains(&(*k, *v)) {
                c.missing += 1;
                sample(&mut c, format!("missing {k} = {v}"));
            }
        }
    }
    c
}

/// The verifier's report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verification {
    /// Input records (read_committed).
    pub input_records: usize,
    /// Output records (read_committed).
    pub output_records: usize,
    /// Output records a read_uncommitted reader sees beyond those (aborted transactions).
    pub output_aborted_filtered: i64,
    /// The comparison.
    pub comparison: Comparison,
    /// Partitions whose last stable offset stayed below the high watermark.
    pub hanging: Vec<String>,
}

impl Verification {
    /// Anomalies found (0: the output is exactly the input, in order, once).
    pub fn anomalies(&self) -> u64 {
        let c = &self.comparison;
        c.missing
            + c.duplicated
            + c.out_of_order
            + c.unexpected
            + c.input_duplicates
            + self.hanging.len() as u64
    }
}

fn pairs(records: &[reader::Fetched]) -> Vec<(String, String)> {
    let mut sorted: Vec<&reader::Fetched> = records.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    sorted
        .into_iter()
        .map(|r| {
            let text = |b: &Option<Vec<u8>>| {
                String::from_utf8_lossy(b.as_deref().unwrap_or_default()).into_owned()
            };
            (text(&r.key), text(&r.value))
        })
        .collect()
}

/// Partitions of `topic` whose last stable offset is below the high watermark.
fn open_transactions(
    brokers: &str,
    props: &[KafkaProperty],
    topic: &str,
) -> anyhow::Result<Vec<String>> {
    let group = format!("streamfleet-verify-{}", streamfleet_runtime::now_ms());
    let uncommitted = reader::consumer(brokers, props, &group, Isolation::ReadUncommitted)?;
    let committed = reader::consumer(brokers, props, &group, Isolation::ReadCommitted)?;
    let high = reader::watermarks(&uncommitted, topic)?;
    let stable = reader::watermarks(&committed, topic)?;
    Ok(high
        .iter()
        .filter(|(p, (_, hw))| stable.get(p).is_some_and(|(_, lso)| lso < hw))
        .map(|(p, (_, hw))| {
            format!(
                "{topic}[{p}]: last stable offset {} < high watermark {hw}",
                stable[p].1
            )
        })
        .collect())
}

/// Reads both topics and compares them. Waits up to `wait_stable` for open transactions to
/// resolve before calling them hanging. Blocking.
pub fn verify(
    brokers: &str,
    props: &[KafkaProperty],
    input: &str,
    output: &str,
    wait_stable: Duration,
) -> anyhow::Result<Verification> {
    let deadline = Instant::now() + wait_stable;
    let mut hanging;
    loop {
        hanging = open_transactions(brokers, props, input)?;
        hanging.extend(open_transactions(brokers, props, output)?);
        if hanging.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let input_records = reader::read_all(brokers, props, input, Isolation::ReadCommitted)?;
    let output_records = reader::read_all(brokers, props, output, Isolation::ReadCommitted)?;
    let everything = reader::read_all(brokers, props, output, Isolation::ReadUncommitted)?;
    Ok(Verification {
        input_records: input_records.len(),
        output_records: output_records.len(),
        output_aborted_filtered: everything.len() as i64 - output_records.len() as i64,
        comparison: compare(&pairs(&input_records), &pairs(&output_records)),
        hanging,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_exact_copy_has_no_anomaly() {
        let input = recs(&[("a", "a:0"), ("b", "b:0"), ("a", "a:1")]);
        let c = compare(&input, &recs(&[("b", "b:0"), ("a", "a:0"), ("a", "a:1")]));
        assert_eq!(
            c,
            Comparison {
                keys: 2,
                ..Comparison::default()
            }
        );
    }

    #[test]
    fn each_anomaly_is_counted() {
        let input = recs(&[("a", "a:0"), ("a", "a:1"), ("a", "a:2"), ("b", "b:0")]);
        let output = recs(&[
            ("a", "a:0"),
            ("a", "a:2"),
            ("a", "a:1"),
            ("a", "a:2"),
            ("c", "c:0"),
        ]);
        let c = compare(&input, &output);
        assert_eq!(
            (c.missing, c.duplicated, c.out_of_order, c.unexpected),
            (1, 1, 1, 1)
        );
        assert!(c.samples.iter().any(|s| s == "missing b = b:0"));
        assert!(
            c.samples
                .iter()
                .any(|s| s.starts_with("out of order a = a:1"))
        );
    }

    #[test]
    fn a_repeated_input_is_an_anomaly_of_its_own() {
        let input = recs(&[("a", "a:0"), ("a", "a:0")]);
        let c = compare(&input, &recs(&[("a", "a:0")]));
        assert_eq!((c.input_duplicates, c.duplicated, c.missing), (1, 0, 0));
    }

    #[test]
    fn keys_spread_values_count_up() {
        assert_eq!(key(7), "key-00007");
    }
}
