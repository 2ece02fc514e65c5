//! librdkafka client settings: streamfleet's defaults, the user's overrides, and the rules
//! between them.
//!
//! Defaults come first, user properties (`-X`, `STREAMFLEET_KAFKA_*`) override them, and the
//! properties that carry streamfleet's guarantees
//! ([`crate::properties::MANAGED_PROPERTIES`]) are set last and cannot be overridden. What a client was built with is logged once, secrets redacted.

use rdkafka::ClientConfig;

use crate::config::WorkerConfig;
use crate::properties::{ClientScope, KafkaProperty, redact};

/// Producer defaults of the seed system: durable (acks=all, idempotent), batched (5 ms linger,
/// 16 KiB batches), snappy-compressed, and partitioned like the Java client so keyed records
/// land on the same partition whichever client wrote them.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("linger.ms", "5"),
    ("batch.size", "16384"),
    ("compression.type", "snappy"),
    ("partitioner", "murmur2_random"),
];

/// Added to the defaults of a worker's own clients, whose contexts turn librdkafka's
/// statistics into metrics (lag, produce errors). Other clients (the tools', the demo's load)
/// leave statistics off: with nothing to consume them, rust-rdkafka logs each as a 36 KB
/// line.
pub const WORKER_CLIENT_DEFAULTS: &[(&str, &str)] = &[("statistics.interval.ms", "5000")];

/// Added to [`PRODUCER_DEFAULTS`] for a transactional producer.
///
/// `connections.max.idle.ms` 5 s (librdkafka: never closes them): librdkafka looks for a
/// lost group coordinator again only when one of the producer's broker connections comes up
/// or goes down, so a `send_offsets_to_transaction` that started while the coordinator's node
/// was dying can wait forever once every connection is settled (confluentinc/librdkafka#5456,
/// #5511). A producer stuck in that call sends nothing, so its connections go idle and close
/// after 5 s, and each close is that trigger (see `Transactions::watch`). A busy producer's
/// connections are never idle this long; a quiet one reconnects when it next sends.
pub const TRANSACTIONAL_PRODUCER_DEFAULTS: &[(&str, &str)] = &[("connections.max.idle.ms", "5000")];

/// Consumer defaults: start from the earliest offset of a new group, no partition-EOF events,
/// and a prefetch sized for a worker that
/// drains it quickly:
///
/// - `fetch.queue.backoff.ms` 10 (librdkafka: 1000): once a partition's prefetch queue is over
///   its threshold, librdkafka waits this long before fetching it again. With 1 s a worker
///   that empties the queue in milliseconds sits idle for the rest of the second; the
///   benchmark drained a backlog 2-3x faster with 10 ms.
/// - `queued.min.messages` 10,000 per partition (100,000) and `queued.max.messages.kbytes`
///   16 MiB in all (64 MiB): the prefetch is a buffer in front of the lanes, which hold up to
///   `--lane-capacity` records per partition themselves; together they bound memory however
///   large the backlog (peak RSS in the benchmark, README).
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    ("enable.partition.eof", "false"),
    ("fetch.queue.backoff.ms", "10"),
    ("queued.min.messages", "10000"),
    ("queued.max.messages.kbytes", "16384"),
];

/// The producer of a command-line tool (`produce`, `seed`, the demo's load): the producer
/// defaults, the user's properties, and `client_id`.
pub fn tool_producer(brokers: &str, user: &[KafkaProperty], client_id: &str) -> ClientConfig {
    build(
        brokers,
        PRODUCER_DEFAULTS,
        user,
        ClientScope::Producer,
        &[("client.id", client_id.to_owned())],
    )
}

/// A client config with `defaults`, then the user's properties of `scope`, then `fixed`.
pub fn build(
    brokers: &str,
    defaults: &[(&str, &str)],
    user: &[KafkaProperty],
    scope: ClientScope,
    fixed: &[(&str, String)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for p in user
        .iter()
        .filter(|p| p.scope == ClientScope::Both || p.scope == scope)
    {
        config.set(&p.key, &p.value);
    }
    for (k, v) in fixed {
        config.set(*k, v);
    }
    config
}

/// The effective properties of a config, secrets redacted, for logging.
pub fn describe(config: &ClientConfig) -> Vec<(String, String)> {
    let mut props: Vec<(String, String)> = config
        .config_map()
        .iter()
        .map(|(k, v)| (k.to_string(), redact(k, v).to_owned()))
        .collect();
    props.sort();
    props
}

/// The consumer config of a worker.
pub fn consumer(config: &WorkerConfig) -> ClientConfig {
    let mut fixed = vec![
        ("group.id", config.group_id.clone()),
        (
            "partition.assignment.strategy",
            config.assignment_strategy.as_str().to_owned(),
        ),
        ("enable.auto.commit", "false".to_owned()),
        ("enable.auto.offset.store", "false".to_owned()),
        // Never read records of aborted or open transactions.
        ("isolation.level", "read_committed".to_owned()),
        (
            "client.id",
            format!("streamfleet-{}-{}", config.worker, config.instance_name()),
        ),
    ];
    if let Some(instance) = &config.instance_id {
        fixed.push(("group.instance.id", instance.clone()));
    }
    let defaults = [CONSUMER_DEFAULTS, WORKER_CLIENT_DEFAULTS].concat();
    let c = build(
        &config.brokers,
        &defaults,
        &config.kafka,
        ClientScope::Consumer,
        &fixed,
    );
    tracing::debug!(worker = %config.worker, properties = ?describe(&c), "consumer config");
    c
}

/// The config of a worker's producer `index` (transactional under exactly-once, see
/// [`WorkerConfig::transactional_id`]; at least once there is one, index 0).
pub fn producer(config: &WorkerConfig, index: usize) -> ClientConfig {
    let mut client_id = format!("streamfleet-{}-{}", config.worker, config.instance_name());
    if index > 0 {
        client_id.push_str(&format!("-{index}"));
    }
    let mut fixed = vec![("client.id", client_id)];
    let mut defaults = [PRODUCER_DEFAULTS, WORKER_CLIENT_DEFAULTS].concat();
    if config.guarantee == crate::config::ProcessingGuarantee::ExactlyOnce
        && let Some(id) = config.transactional_id(index)
    {
        fixed.push(("transactional.id", id));
        defaults.extend_from_slice(TRANSACTIONAL_PRODUCER_DEFAULTS);
    }
    let c = build(
        &config.brokers,
        &defaults,
        &config.kafka,
        ClientScope::Producer,
        &fixed,
    );
    tracing::debug!(worker = %config.worker, properties = ?describe(&c), "producer config");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_properties_override_defaults_but_not_managed_ones() {
        let mut cfg = WorkerConfig::new("w", "b:9092", vec![("t".into(), Default::default())]);
        cfg.kafka = vec![
            KafkaProperty::parse("linger.ms=50").unwrap(),
            KafkaProperty::parse("consumer.fetch.min.bytes=10").unwrap(),
        ];
        let p = producer(&cfg, 0);
        assert_eq!(p.get("linger.ms"), Some("50"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("fetch.min.bytes"), None);
        let c = consumer(&cfg);
        assert_eq!(c.get("fetch.min.bytes"), Some("10"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
    }

    #[test]
    fn each_transactional_producer_has_its_own_id() {
        let mut cfg = WorkerConfig::new("w", "b:9092", vec![("t".into(), Default::default())]);
        cfg.instance_id = Some("pod-0".into());
        assert_eq!(producer(&cfg, 0).get("transactional.id"), None);
        cfg.guarantee = crate::config::ProcessingGuarantee::ExactlyOnce;
        let ids: Vec<_> = (0..2)
            .map(|i| producer(&cfg, i).get("transactional.id").map(str::to_owned))
            .collect();
        assert_eq!(
            ids,
            [
                Some("streamfleet-w.pod-0".to_owned()),
                Some("streamfleet-w.pod-0#1".to_owned())
            ]
        );
        assert_ne!(
            producer(&cfg, 0).get("client.id"),
            producer(&cfg, 1).get("client.id")
        );
        // Idle connections close only on transactional producers, and a user may say otherwise.
        assert_eq!(
            producer(&cfg, 0).get("connections.max.idle.ms"),
            Some("5000")
        );
        cfg.kafka = vec![KafkaProperty::parse("producer.connections.max.idle.ms=60000").unwrap()];
        assert_eq!(
            producer(&cfg, 0).get("connections.max.idle.ms"),
            Some("60000")
        );
        cfg.guarantee = crate::config::ProcessingGuarantee::AtLeastOnce;
        cfg.kafka.clear();
        assert_eq!(producer(&cfg, 0).get("connections.max.idle.ms"), None);
    }

    #[test]
    fn describe_redacts_secrets() {
        let mut cfg = WorkerConfig::new("w", "b:9092", vec![("t".into(), Default::default())]);
        cfg.kafka = vec![KafkaProperty::parse("sasl.password=hunter2").unwrap()];
        let shown = format!("{:?}", describe(&consumer(&cfg)));
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("sasl.password"));
    }
}
