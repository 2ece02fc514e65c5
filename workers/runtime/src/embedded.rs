//! The embedded cluster: librdkafka's in-process mock cluster, on loopback TCP.
//!
//! It speaks the real protocol (produce, fetch, consumer groups, offset commits), so workers
//! and tools connect to it like to any cluster. It lives on a thread of its own (the mock
//! handle cannot move between threads), driven through an [`EmbeddedCluster`] handle. It
//! answers in microseconds unless given a round-trip time
//! ([`EmbeddedCluster::set_round_trip_time`], or one broker's,
//! [`EmbeddedCluster::set_broker_round_trip_time`]); tests place partition leaders and group
//! coordinators on chosen brokers to slow one path and not the other.
//!
//! Known gaps (see DEVELOPERS.md): topics are created with [`EmbeddedCluster::create_topic`]
//! (its AdminClient `CreateTopics` times out), and transactions are accepted but not honoured,
//! so nothing about exactly-once may be concluded from it.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::topology::Topology;

enum Command {
    CreateTopic(String, i32, i32, mpsc::Sender<KafkaResult<()>>),
    RequestErrors(RDKafkaApiKey, Vec<RDKafkaRespErr>, mpsc::Sender<()>),
    /// Broker id (-1: every broker), delay.
    RoundTripTime(i32, Duration, mpsc::Sender<KafkaResult<()>>),
    GroupCoordinator(String, i32, mpsc::Sender<KafkaResult<()>>),
    PartitionLeader(String, i32, i32, mpsc::Sender<KafkaResult<()>>),
}

/// `fetch.wait.max.ms` for a long-running consumer of the embedded cluster (the demo's
/// workers). The mock answers a fetch that finds no data only after the whole wait, and its
/// answer stays empty even if records arrived meanwhile, where a real broker answers as soon
/// as data arrives. With librdkafka's default of 500 ms a caught-up consumer saw new records
/// up to half a second late: the demo's end-to-end latency (to the commit, every 1 s)
/// averaged 0.92-0.96 s. Measured on 20 s demos, mean and the demo's CPU: 500 ms 0.93 s,
/// 4.7-5.2 s; 50 ms 0.55 s, 7.2-7.9 s; 20 ms 0.52 s, 9.9-10.8 s; 10 ms 0.52 s, 12.7-13.4 s
/// (the empty fetches cost both the consumers and the mock). 50 ms takes most of the gain
/// for about an eighth of a core. The benchmark sets 1 ms: it measures latency.
pub const CONSUMER_FETCH_WAIT_MAX_MS: u64 = 50;

/// Handle on a running mock cluster; dropping it stops the cluster.
pub struct EmbeddedCluster {
    bootstrap: String,
    brokers: i32,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("bootstrap", &self.bootstrap)
            .field("brokers", &self.brokers)
            .finish()
    }
}

impl EmbeddedCluster {
    /// Starts a cluster of `brokers` brokers.
    pub fn start(brokers: i32) -> KafkaResult<Self> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("sf-mock-cluster".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                for command in rx {
                    match command {
                        Command::CreateTopic(name, partitions, rf, reply) => {
                            let _ = reply.send(cluster.create_topic(&name, partitions, rf));
                        }
                        Command::RequestErrors(api, errors, reply) => {
                            cluster.request_errors(api, &errors);
                            let _ = reply.send(());
                        }
                        Command::RoundTripTime(broker, rtt, reply) => {
                            let _ = reply.send(cluster.broker_round_trip_time(broker, rtt));
                        }
                        Command::GroupCoordinator(group, broker, reply) => {
                            let coordinator = MockCoordinator::Group(group);
                            let _ = reply.send(cluster.coordinator(coordinator, broker));
                        }
                        Command::PartitionLeader(topic, partition, broker, reply) => {
                            let leader = cluster.partition_leader(&topic, partition, Some(broker));
                            let _ = reply.send(leader);
                        }
                    }
                }
            })
            .map_err(|_| KafkaError::MockCluster(rdkafka::types::RDKafkaErrorCode::Fail))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| KafkaError::MockCluster(rdkafka::types::RDKafkaErrorCode::Fail))??;
        Ok(Self {
            bootstrap,
            brokers,
            commands: Some(tx),
            thread: Some(thread),
        })
    }

    /// `bootstrap.servers` of the cluster.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Number of brokers.
    pub fn brokers(&self) -> i32 {
        self.brokers
    }

    fn send(&self, command: Command) {
        self.commands
            .as_ref()
            .expect("running")
            .send(command)
            .expect("mock cluster thread alive");
    }

    /// Creates a topic.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
    ) -> KafkaResult<()> {
        self.ask(|tx| Command::CreateTopic(name.to_owned(), partitions, replication_factor, tx))
    }

    /// Creates every topic of a topology, capping replication at the broker count.
    pub fn create_topology(&self, topology: &Topology) -> KafkaResult<()> {
        for t in &topology.topics {
            self.create_topic(
                &t.name,
                t.partitions,
                t.replication_factor.min(self.brokers),
            )?;
        }
        Ok(())
    }

    /// Delays every response of every broker by `rtt` (whole milliseconds; zero: none) from
    /// now on, as a network and a replicating cluster would: a produce acknowledgement, a
    /// fetch, each step of a transaction's commit. Responses stay in order on a connection,
    /// so a slow one holds back those behind it, as on a Kafka broker.
    pub fn set_round_trip_time(&self, rtt: Duration) -> KafkaResult<()> {
        // Broker -1: every broker.
        self.ask(|tx| Command::RoundTripTime(-1, rtt, tx))
    }

    /// Delays every response of broker `broker` (ids run from 1 to [`Self::brokers`]) by
    /// `rtt`, as [`Self::set_round_trip_time`] does for all of them.
    pub fn set_broker_round_trip_time(&self, broker: i32, rtt: Duration) -> KafkaResult<()> {
        self.ask(|tx| Command::RoundTripTime(broker, rtt, tx))
    }

    /// Makes broker `broker` the coordinator of consumer group `group` (its joins, heartbeats
    /// and offset commits), instead of the broker the group id hashes to.
    pub fn set_group_coordinator(&self, group: &str, broker: i32) -> KafkaResult<()> {
        self.ask(|tx| Command::GroupCoordinator(group.to_owned(), broker, tx))
    }

    /// Makes broker `broker` the leader of partition `partition` of `topic`.
    pub fn set_partition_leader(
        &self,
        topic: &str,
        partition: i32,
        broker: i32,
    ) -> KafkaResult<()> {
        self.ask(|tx| Command::PartitionLeader(topic.to_owned(), partition, broker, tx))
    }

    /// Sends a command to the cluster's thread and waits for its answer.
    fn ask(
        &self,
        command: impl FnOnce(mpsc::Sender<KafkaResult<()>>) -> Command,
    ) -> KafkaResult<()> {
        let (tx, rx) = mpsc::channel();
        self.send(command(tx));
        rx.recv().expect("mock cluster thread alive")
    }

    /// Makes the next requests of `api` fail with `errors`, in order (fault injection).
    pub fn request_errors(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) {
        let (tx, rx) = mpsc::channel();
        self.send(Command::RequestErrors(api, errors.to_vec(), tx));
        rx.recv().expect("mock cluster thread alive");
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
