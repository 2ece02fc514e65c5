//! The cluster side of provisioning: describe what a cluster holds, apply a plan, and find
//! the consumer groups reading a set of topics with their lag.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use streamfleet_runtime::clients;
use streamfleet_runtime::properties::{ClientScope, KafkaProperty};
use streamfleet_runtime::topology::Topology;

use super::plan::{Action, ClusterConfig, ClusterState, ClusterTopic};

const TIMEOUT: Duration = Duration::from_secs(30);

/// How long a read-only admin request (describing topic configs) may take: a cluster answers
/// in milliseconds, or never (see [`admin_failed`]).
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// An admin request's error, explained when it timed out: the usual cause is a cluster that
/// does not implement the admin requests, such as librdkafka's mock cluster.
fn admin_failed(what: &str, e: KafkaError) -> anyhow::Error {
    let timed_out = matches!(e, KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut))
        || e.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut);
    if timed_out {
        anyhow::anyhow!(
            "{what}: the cluster did not answer. librdkafka's mock cluster (`streamfleet \
             dev-cluster`, the demo) does not implement the admin requests that describe, create \
             or change topics: it creates the topics of topics.yaml itself when it starts \
             (`dev-cluster --topic NAME:PARTITIONS` adds more). Use `topics plan/apply` against \
             Apache Kafka."
        )
    } else {
        anyhow::anyhow!("{what}: {e}")
    }
}

/// Admin access to one cluster.
pub struct Cluster {
    brokers: String,
    props: Vec<KafkaProperty>,
    admin: AdminClient<DefaultClientContext>,
    metadata: BaseConsumer,
}

fn config(brokers: &str, props: &[KafkaProperty]) -> ClientConfig {
    clients::build(
        brokers,
        &[],
        props,
        ClientScope::Both,
        &[("client.id", "streamfleet-topics".to_owned())],
    )
}

/// A consumer group reading fleet topics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupLag {
    /// Group id.
    pub group: String,
    /// Group state as the coordinator reports it.
    pub state: String,
    /// Offset lag per topic (high watermark − committed, over partitions with a commit).
    pub lag: BTreeMap<String, i64>,
}

impl Cluster {
    /// Connects (lazily; errors surface on the first call).
    pub fn connect(brokers: &str, props: &[KafkaProperty]) -> anyhow::Result<Self> {
        let c = config(brokers, props);
        Ok(Self {
            brokers: brokers.to_owned(),
            props: props.to_vec(),
            admin: c.create()?,
            metadata: c.create()?,
        })
    }

    /// The topics in `topology` or in its scope, as the cluster has them.
    pub async fn describe(&self, topology: &Topology) -> anyhow::Result<ClusterState> {
        let md = self.metadata.fetch_metadata(None, TIMEOUT).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the cluster's metadata from {}: {e}",
                self.brokers
            )
        })?;
        let mut state = ClusterState {
            brokers: md.brokers().len() as i32,
            topics: BTreeMap::new(),
        };
        let names: Vec<String> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| t.name().to_owned())
            .filter(|n| topology.get(n).is_some() || topology.in_scope(n))
            .collect();
        for t in md
            .topics()
            .iter()
            .filter(|t| names.iter().any(|n| n == t.name()))
        {
            state.topics.insert(
                t.name().to_owned(),
                ClusterTopic {
                    partitions: t.partitions().len() as i32,
                    replication_factor: t
                        .partitions()
                        .first()
                        .map_or(0, |p| p.replicas().len() as i32),
                    configs: BTreeMap::new(),
                },
            );
        }
        if names.is_empty() {
            return Ok(state);
        }
        let specifiers: Vec<ResourceSpecifier<'_>> =
            names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
        let opts = AdminOptions::new().request_timeout(Some(DESCRIBE_TIMEOUT));
        let described = self
            .admin
            .describe_configs(specifiers.iter(), &opts)
            .await
            .map_err(|e| admin_failed("describing the topics' configs", e))?;
        for (name, result) in names.iter().zip(described) {
            let resource =
                result.map_err(|e| anyhow::anyhow!("describing the configs of {name}: {e:?}"))?;
            let topic = state.topics.get_mut(name).expect("listed above");
            for entry in resource.entries {
                if let Some(value) = entry.value {
                    let dynamic = entry.source == ConfigSource::DynamicTopic;
                    topic
                        .configs
                        .insert(entry.name, ClusterConfig { value, dynamic });
                }
            }
        }
        Ok(state)
    }

    /// Applies the actions in order; returns one line per action, `Err` for the first failure
    /// (the actions before it are applied).
    pub async fn apply(&self, actions: &[Action]) -> anyhow::Result<Vec<String>> {
        let opts = AdminOptions::new()
            .operation_timeout(Some(TIMEOUT))
            .request_timeout(Some(TIMEOUT));
        let mut done = Vec::new();
        for action in actions {
            match action {
                Action::Create {
                    topic,
                    partitions,
                    replication_factor,
                    configs,
                } => {
                    let mut t = NewTopic::new(
                        topic,
                        *partitions,
                        TopicReplication::Fixed(*replication_factor),
                    );
                    for (k, v) in configs {
                        t = t.set(k, v);
                    }
                    let created = self.admin.create_topics([&t], &opts).await;
                    for r in created.map_err(|e| admin_failed(&format!("creating {topic}"), e))? {
                        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
                    }
                    done.push(format!("created {topic}"));
                }
                Action::IncreasePartitions { topic, to, .. } => {
                    let p = NewPartitions::new(topic, *to as usize);
                    let added = self.admin.create_partitions([&p], &opts).await;
                    let what = format!("adding partitions to {topic}");
                    for r in added.map_err(|e| admin_failed(&what, e))? {
                        r.map_err(|(t, e)| anyhow::anyhow!("adding partitions to {t}: {e}"))?;
                    }
                    done.push(format!("{topic} now has {to} partitions"));
                }
                Action::AlterConfigs { topic, desired, .. } => {
                    let mut c = AlterConfig::new(ResourceSpecifier::Topic(topic));
                    for (k, v) in desired {
                        c = c.set(k, v);
                    }
                    let altered = self.admin.alter_configs([&c], &opts).await;
                    let what = format!("changing the configs of {topic}");
                    for r in altered.map_err(|e| admin_failed(&what, e))? {
                        r.map_err(|(_, e)| {
                            anyhow::anyhow!("changing the configs of {topic}: {e}")
                        })?;
                    }
                    done.push(format!("changed the configs of {topic}"));
                }
                Action::Delete { topic } => {
                    let deleted = self.admin.delete_topics(&[topic.as_str()], &opts).await;
                    for r in deleted.map_err(|e| admin_failed(&format!("deleting {topic}"), e))? {
                        r.map_err(|(t, e)| anyhow::anyhow!("deleting {t}: {e}"))?;
                    }
                    done.push(format!("deleted {topic}"));
                }
            }
        }
        Ok(done)
    }

    /// Waits until metadata reflects the actions (new topics and partitions visible, deleted
    /// topics gone), so a re-read shows the result.
    pub fn settle(&self, actions: &[Action]) -> anyhow::Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let md = self.metadata.fetch_metadata(None, TIMEOUT)?;
            let partitions = |name: &str| {
                md.topics()
                    .iter()
                    .find(|t| t.name() == name && t.error().is_none())
                    .map(|t| t.partitions().len() as i32)
            };
            let settled = actions.iter().all(|a| match a {
                Action::Create {
                    topic,
                    partitions: n,
                    ..
                }
                | Action::IncreasePartitions { topic, to: n, .. } => partitions(topic) == Some(*n),
                Action::Delete { topic } => partitions(topic).is_none(),
                Action::AlterConfigs { .. } => true,
            });
            if settled {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the cluster's metadata did not show the changes within {TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Consumer groups with committed offsets on `topics`, with their lag.
    pub fn groups_reading(
        &self,
        topics: &BTreeMap<String, ClusterTopic>,
    ) -> anyhow::Result<Vec<GroupLag>> {
        let list = self.metadata.fetch_group_list(None, TIMEOUT)?;
        let mut tpl = TopicPartitionList::new();
        let mut highs = BTreeMap::new();
        for (name, t) in topics {
            for p in 0..t.partitions {
                tpl.add_partition(name, p);
                let (_, high) = self.metadata.fetch_watermarks(name, p, TIMEOUT)?;
                highs.insert((name.clone(), p), high);
            }
        }
        let mut out = Vec::new();
        for g in list.groups() {
            if g.name().is_empty() || g.name().starts_with("streamfleet-dlq-inspect-") {
                continue;
            }
            let consumer: BaseConsumer = clients::build(
                &self.brokers,
                &[],
                &self.props,
                ClientScope::Consumer,
                &[
                    ("group.id", g.name().to_owned()),
                    ("enable.auto.commit", "false".to_owned()),
                ],
            )
            .create()?;
            let committed = consumer.committed_offsets(tpl.clone(), TIMEOUT)?;
            let mut lag: BTreeMap<String, i64> = BTreeMap::new();
            for e in committed.elements() {
                if let Offset::Offset(o) = e.offset() {
                    let high = highs[&(e.topic().to_owned(), e.partition())];
                    *lag.entry(e.topic().to_owned()).or_default() += (high - o).max(0);
                }
            }
            if !lag.is_empty() {
                out.push(GroupLag {
                    group: g.name().to_owned(),
                    state: g.state().to_owned(),
                    lag,
                });
            }
        }
        Ok(out)
    }
}
