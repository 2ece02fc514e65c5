//! A multi-node Apache Kafka cluster of a test's own, for failure drills.
//!
//! [`KafkaCluster::start`] runs the Kafka distribution's `kafka-cluster` script (from
//! `STREAMFLEET_KAFKA_DIST`, else `../shared/kafka` beside the repository) in a temporary
//! directory on free loopback ports; [`KafkaCluster::kill`], [`KafkaCluster::stop_node`] and
//! [`KafkaCluster::restart`] drive failures; dropping it stops every node and removes the
//! directory. Without a distribution the test fails and says how to get one: a drill never
//! passes vacuously.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The variable naming the Kafka distribution.
pub const DIST_VAR: &str = "STREAMFLEET_KAFKA_DIST";

/// The Kafka distribution: `STREAMFLEET_KAFKA_DIST`, else `../shared/kafka` from the repository
/// root; panics, saying how to get one, when neither exists.
pub fn kafka_dist() -> PathBuf {
    if let Some(d) = std::env::var_os(DIST_VAR).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let shared = crate::repo().join("../shared/kafka");
    assert!(
        shared.join("kafka-cluster").is_file(),
        "this drill starts a Kafka cluster of its own: set {DIST_VAR} to an Apache Kafka \
         distribution with the kafka-cluster script (tests/run does when one is present)"
    );
    shared
}

/// A port `p` such that `p..p+n` and `p+100..p+100+n` are free on loopback.
fn free_ports(n: u16) -> u16 {
    use rand::Rng;
    for _ in 0..500 {
        let p: u16 = rand::rng().random_range(20_000..40_000);
        let free = (0..n)
            .flat_map(|i| [p + i, p + 100 + i])
            .all(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok());
        if free {
            return p;
        }
    }
    panic!("no {n} free loopback port pairs found");
}

/// A running cluster; stopped and removed when dropped.
pub struct KafkaCluster {
    script: PathBuf,
    dir: tempfile::TempDir,
    base_port: u16,
    nodes: u16,
    bootstrap: String,
}

impl KafkaCluster {
    /// Starts `nodes` KRaft nodes (each broker and controller; with 3 or more, internal topics
    /// replicated 3 ways with `min.insync.replicas` 2).
    pub fn start(nodes: u16) -> Self {
        let script = kafka_dist().join("kafka-cluster");
        let dir = tempfile::Builder::new()
            .prefix("streamfleet-drill-")
            .tempdir()
            .expect("cluster dir");
        let base_port = free_ports(nodes);
        let out = Command::new(&script)
            .arg("start")
            .arg(dir.path())
            .args([
                "--nodes",
                &nodes.to_string(),
                "--port",
                &base_port.to_string(),
            ])
            .output()
            .expect("kafka-cluster runs");
        assert!(
            out.status.success(),
            "kafka-cluster start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Self {
            script,
            dir,
            base_port,
            nodes,
            bootstrap,
        }
    }

    /// `bootstrap.servers` of every node.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The node (1-based) listening on `port`.
    fn node_of_port(&self, port: u16) -> u16 {
        port - self.base_port + 1
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new(&self.script)
            .arg(args[0])
            .arg(self.dir.path())
            .args(&args[1..])
            .output()
            .expect("kafka-cluster runs");
        assert!(
            out.status.success(),
            "kafka-cluster {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGKILL one node: a crash.
    pub fn kill(&self, node: u16) {
        self.run(&["kill", &node.to_string()]);
    }

    /// SIGTERM one node and wait until it has stopped: a controlled shutdown.
    pub fn stop_node(&self, node: u16) {
        self.run(&["stop", &node.to_string()]);
    }

    /// Starts a stopped or killed node again; returns once it serves clients.
    pub fn restart(&self, node: u16) {
        self.run(&["restart", &node.to_string()]);
    }

    /// The node leading `topic[partition]` now (from metadata; `None` while it has none).
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<u16> {
        let md = self.metadata(topic)?;
        let t = md.topics().iter().find(|t| t.name() == topic)?;
        let p = t.partitions().iter().find(|p| p.id() == partition)?;
        (p.leader() > 0).then(|| p.leader() as u16)
    }

    /// The node coordinating `key` (a consumer group or a transactional id) in the internal
    /// topic `internal` (`__consumer_offsets`, `__transaction_state`): the leader of its
    /// partition, which Kafka picks as `abs(javaHashCode(key)) % partitions`.
    pub fn coordinator_of(&self, internal: &str, key: &str) -> Option<u16> {
        let md = self.metadata(internal)?;
        let partitions = md
            .topics()
            .iter()
            .find(|t| t.name() == internal)?
            .partitions()
            .len() as i32;
        if partitions == 0 {
            return None;
        }
        self.leader_of(internal, java_abs(java_hash(key)) % partitions)
    }

    /// Waits until every partition of `topics` has a leader and `self.nodes` in-sync replicas
    /// (a restarted node has caught up), up to `timeout`.
    pub fn wait_fully_replicated(&self, topics: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let behind: Vec<String> = topics
                .iter()
                .flat_map(|topic| {
                    let md = self.metadata(topic);
                    let mut out = Vec::new();
                    match md
                        .as_ref()
                        .and_then(|m| m.topics().iter().find(|t| t.name() == *topic))
                    {
                        None => out.push(format!("{topic}: no metadata")),
                        Some(t) => {
                            for p in t.partitions() {
                                if p.leader() < 0 || p.isr().len() < self.nodes as usize {
                                    out.push(format!("{topic}[{}] isr {:?}", p.id(), p.isr()));
                                }
                            }
                        }
                    }
                    out
                })
                .collect();
            if behind.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not fully replicated after {timeout:?}: {behind:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn metadata(&self, topic: &str) -> Option<rdkafka::metadata::Metadata> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .ok()?;
        c.fetch_metadata(Some(topic), Duration::from_secs(10)).ok()
    }

    /// The last `lines` lines of node `node`'s server log.
    pub fn log_tail(&self, node: u16, lines: usize) -> String {
        let path = self.dir.path().join(format!("node-{node}/logs/server.log"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Lines of every node's server log that contain any of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        (1..=self.nodes)
            .flat_map(|n| {
                let path = self.dir.path().join(format!("node-{n}/logs/server.log"));
                std::fs::read_to_string(path)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| needles.iter().any(|w| l.contains(w)))
                    .map(|l| format!("node {n}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Which node a `host:port` belongs to.
    pub fn node_of(&self, address: &str) -> Option<u16> {
        let port: u16 = address.rsplit(':').next()?.parse().ok()?;
        (port >= self.base_port && port < self.base_port + self.nodes)
            .then(|| self.node_of_port(port))
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// Java's `String.hashCode` (UTF-16 code units; ASCII here).
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// Kafka's `Utils.abs`: `Integer.MIN_VALUE` maps to 0.
fn java_abs(n: i32) -> i32 {
    if n == i32::MIN { 0 } else { n.abs() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_string_hash_codes() {
        // Values from Java: "hello".hashCode() == 99162322, "".hashCode() == 0,
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE.
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(java_abs(i32::MIN), 0);
        assert_eq!(java_abs(-5), 5);
    }
}
