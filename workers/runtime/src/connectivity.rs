//! A worker's connections to its brokers, logged as state changes.
//!
//! While a broker is down librdkafka reports every failed reconnection of every client (the
//! consumer, each producer) through the error and log callbacks: dozens of identical ERROR
//! lines a second during an outage, which bury everything else. Every client of a worker
//! shares one [`Connectivity`], which logs the first failure of each broker as a warning
//! ("unreachable since…"), counts the repeats without logging them, and logs once more when
//! the statistics show the broker up again ("back after…, n failures not logged"). Errors
//! that are not about reaching a broker are logged as they come.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// The key under which "every broker is down" is tracked.
const ALL_BROKERS: &str = "all brokers";

struct Outage {
    since: Instant,
    since_wall: SystemTime,
    repeats: u64,
}

/// The reachability of one worker's brokers, shared by its clients.
#[derive(Default)]
pub struct Connectivity {
    worker: String,
    down: Mutex<HashMap<String, Outage>>,
}

/// Whether an error is about reaching a broker (and repeats for as long as it is down).
fn is_transport(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::NetworkException
        )
    )
}

/// The broker a librdkafka message is about: its messages start with the broker's name
/// (`host:port/id: Connect to … failed`), log lines after the thread's
/// (`[thrd:host:port/id]: host:port/id: Connect to …`).
fn broker_of(message: &str) -> &str {
    let message = match message.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ").map_or(rest, |(_, m)| m),
        None => message,
    };
    message
        .split_once(": ")
        .map_or(message, |(name, _)| name)
        .trim()
}

impl Connectivity {
    /// The connectivity of `worker`'s clients; nothing is down yet.
    pub fn new(worker: &str) -> Self {
        Self {
            worker: worker.to_owned(),
            down: Mutex::default(),
        }
    }

    /// Records a failure of `broker`; true when it is the first of an outage (to be logged).
    fn failed(&self, broker: &str) -> bool {
        let mut down = self.down.lock().expect("connectivity lock");
        match down.get_mut(broker) {
            Some(o) => {
                o.repeats += 1;
                false
            }
            None => {
                down.insert(
                    broker.to_owned(),
                    Outage {
                        since: Instant::now(),
                        since_wall: SystemTime::now(),
                        repeats: 0,
                    },
                );
                true
            }
        }
    }

    /// librdkafka's error callback of one of the worker's clients.
    pub fn client_error(&self, error: &KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if !is_transport(code) {
            tracing::error!(worker = %self.worker, %error, reason, "librdkafka error");
            return;
        }
        let broker = if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            ALL_BROKERS
        } else {
            broker_of(reason)
        };
        if self.failed(broker) {
            tracing::warn!(worker = %self.worker, broker, error = reason,
                "broker unreachable; librdkafka keeps reconnecting (logged again when it is back)");
        }
    }

    /// An error the consumer's poll returned: about reaching brokers, it is logged only when
    /// no outage is known yet (the callbacks name the broker; the poll does not).
    pub fn consumer_error(&self, error: &KafkaError) {
        if !is_transport(error.rdkafka_error_code()) {
            tracing::warn!(worker = %self.worker, %error, "consumer error");
            return;
        }
        let mut down = self.down.lock().expect("connectivity lock");
        if let Some(o) = down.values_mut().next() {
            o.repeats += 1;
            return;
        }
        drop(down);
        if self.failed(ALL_BROKERS) {
            tracing::warn!(worker = %self.worker, %error,
                "cannot reach the cluster; librdkafka keeps reconnecting (logged again when it is back)");
        }
    }

    /// librdkafka's log callback of one of the worker's clients: a broker's first connection
    /// failure starts its outage, the later ones are counted, not logged.
    pub fn client_log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let about_connection = matches!(facility, "FAIL" | "ERROR" | "BROKERFAIL");
        let severe = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
                | RDKafkaLogLevel::Warning
        );
        if about_connection && severe {
            let broker = broker_of(message);
            if self.failed(broker) {
                tracing::warn!(worker = %self.worker, broker, error = message,
                    "broker unreachable; librdkafka keeps reconnecting (logged again when it is back)");
            }
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", worker = %self.worker, facility, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", worker = %self.worker, facility, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", worker = %self.worker, facility, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", worker = %self.worker, facility, "{message}")
            }
        }
    }

    /// A client's statistics: the brokers it has up again end their outages.
    pub fn statistics(&self, stats: &rdkafka::Statistics) {
        let mut down = self.down.lock().expect("connectivity lock");
        if down.is_empty() {
            return;
        }
        let up: Vec<&str> = stats
            .brokers
            .values()
            .filter(|b| b.state == "UP")
            .map(|b| b.name.as_str())
            .collect();
        if up.is_empty() {
            return;
        }
        let back: Vec<String> = down
            .keys()
            // A bootstrap connection is not reopened once the brokers are known: it ends with
            // any broker up, as does "all brokers".
            .filter(|k| *k == ALL_BROKERS || k.ends_with("/bootstrap") || up.contains(&k.as_str()))
            .cloned()
            .collect();
        for broker in back {
            let o = down.remove(&broker).expect("listed above");
            let since = humantime::format_rfc3339_seconds(o.since_wall).to_string();
            tracing::info!(worker = %self.worker, broker, down_since = %since,
                down_for_s = o.since.elapsed().as_secs(), failures_not_logged = o.repeats,
                "broker reachable again");
        }
    }

    /// Brokers currently unreachable (for tests and reports).
    pub fn unreachable(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .down
            .lock()
            .expect("connectivity lock")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport() -> KafkaError {
        KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure)
    }

    #[test]
    fn an_outage_is_logged_once_and_ends_when_the_broker_is_up() {
        let c = Connectivity::new("w");
        let reason = "127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: Connection refused";
        assert!(c.failed(broker_of(reason)));
        for _ in 0..40 {
            c.client_error(&transport(), reason);
            c.client_log(RDKafkaLogLevel::Error, "FAIL", reason);
        }
        assert_eq!(c.unreachable(), ["127.0.0.1:9092/1"]);
        assert_eq!(
            c.down.lock().unwrap()["127.0.0.1:9092/1"].repeats,
            80,
            "every repeat counted"
        );
        let mut stats = rdkafka::Statistics::default();
        c.statistics(&stats);
        assert_eq!(c.unreachable().len(), 1, "no broker up yet");
        let broker = rdkafka::statistics::Broker {
            name: "127.0.0.1:9092/1".into(),
            state: "UP".into(),
            ..Default::default()
        };
        stats.brokers.insert(broker.name.clone(), broker);
        c.statistics(&stats);
        assert!(c.unreachable().is_empty());
    }

    #[test]
    fn the_broker_is_read_from_errors_and_log_lines() {
        let m = "127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed";
        assert_eq!(broker_of(m), "127.0.0.1:9092/1");
        let log =
            "[thrd:127.0.0.1:9092/1]: 127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed";
        assert_eq!(broker_of(log), "127.0.0.1:9092/1");
    }

    #[test]
    fn every_broker_down_is_one_outage() {
        let c = Connectivity::new("w");
        let all = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        c.client_error(&all, "3/3 brokers are down");
        c.client_error(&all, "3/3 brokers are down");
        assert_eq!(c.unreachable(), [ALL_BROKERS]);
    }
}
