//! The plan: what must change on a cluster so that it matches the topic design. Pure: it
//! compares a [`Topology`] with a described [`ClusterState`] and touches nothing.
//!
//! Rules, in the order an operator cares about them:
//! - a topic in the file and not on the cluster is **created**;
//! - more partitions in the file than on the cluster: **increase** (keys move to other
//!   partitions for new records; tell the consumers' owners);
//! - fewer partitions in the file: **refused** (an error). Kafka cannot remove partitions, and
//!   recreating the topic would delete its data and remap every key to another partition,
//!   breaking per-key order;
//! - configs that differ are **changed** (`old → new`); dynamic configs on the cluster that the
//!   file does not set are reset to the broker default;
//! - a replication factor different from the cluster's is **reported, never changed**
//!   (reassigning replicas moves data: use `kafka-reassign-partitions.sh`);
//! - a replication factor larger than the broker count is an **error**, or with
//!   `cap_replication` is capped to the broker count with a warning (and `min.insync.replicas`
//!   with it, so `acks=all` writes still succeed);
//! - topics on the cluster, in the file's scope, and not in the file are **reported**; with
//!   `allow_delete` they are **deleted**, unless protected.

use std::collections::BTreeMap;

use streamfleet_runtime::topology::Topology;

/// A topic as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ClusterTopic {
    /// Partition count.
    pub partitions: i32,
    /// Replicas of partition 0.
    pub replication_factor: i32,
    /// Configs with their values, and whether the value is set on the topic (not a default).
    pub configs: BTreeMap<String, ClusterConfig>,
}

/// One config value of a cluster topic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterConfig {
    /// Current value.
    pub value: String,
    /// Set on the topic itself (not inherited from the broker or a default).
    pub dynamic: bool,
}

impl ClusterConfig {
    /// A value set on the topic.
    pub fn set(value: &str) -> Self {
        Self {
            value: value.to_owned(),
            dynamic: true,
        }
    }
}

/// What a cluster holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ClusterState {
    /// Brokers.
    pub brokers: i32,
    /// Topics by name.
    pub topics: BTreeMap<String, ClusterTopic>,
}

/// Planning switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Delete topics in scope that the file does not declare (never protected ones).
    pub allow_delete: bool,
    /// Cap replication factors (and `min.insync.replicas`) at the broker count.
    pub cap_replication: bool,
}

/// One config change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigChange {
    /// Config name.
    pub key: String,
    /// Value on the cluster (`None`: the default).
    pub old: Option<String>,
    /// Value wanted (`None`: back to the default).
    pub new: Option<String>,
}

/// A change the plan makes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Create a topic.
    Create {
        /// Topic.
        topic: String,
        /// Partitions.
        partitions: i32,
        /// Replication factor (after any cap).
        replication_factor: i32,
        /// Configs.
        configs: BTreeMap<String, String>,
    },
    /// Add partitions.
    IncreasePartitions {
        /// Topic.
        topic: String,
        /// Partitions now.
        from: i32,
        /// Partitions wanted.
        to: i32,
    },
    /// Change configs (the full desired set is applied; `changes` are the differences).
    AlterConfigs {
        /// Topic.
        topic: String,
        /// The differences.
        changes: Vec<ConfigChange>,
        /// Every config the topic should have.
        desired: BTreeMap<String, String>,
    },
    /// Delete a topic the file does not declare.
    Delete {
        /// Topic.
        topic: String,
    },
}

impl Action {
    /// The topic it acts on.
    pub fn topic(&self) -> &str {
        match self {
            Action::Create { topic, .. }
            | Action::IncreasePartitions { topic, .. }
            | Action::AlterConfigs { topic, .. }
            | Action::Delete { topic } => topic,
        }
    }
}

/// Something the operator should know that changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "note", rename_all = "kebab-case")]
pub enum Note {
    /// On the cluster, in scope, not in the file; kept (no `--allow-delete`, or protected).
    NotInFile {
        /// Topic.
        topic: String,
        /// Protected topics are never deleted.
        protected: bool,
    },
    /// The replication factor differs; streamfleet does not reassign replicas.
    ReplicationFactorDiffers {
        /// Topic.
        topic: String,
        /// On the cluster.
        cluster: i32,
        /// In the file (after any cap).
        desired: i32,
    },
    /// A value was capped to fit the cluster (`--cap-replication`).
    Capped {
        /// Topic.
        topic: String,
        /// `replication_factor` or `min.insync.replicas`.
        setting: String,
        /// In the file.
        from: i32,
        /// Used.
        to: i32,
    },
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Plan {
    /// Changes to make, creations first, deletions last.
    pub actions: Vec<Action>,
    /// Things that change nothing.
    pub notes: Vec<Note>,
    /// Why the file cannot be applied as it is; a plan with errors is never applied.
    pub errors: Vec<String>,
}

impl Plan {
    /// Whether applying would change anything.
    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty()
    }
}

fn parse_int(s: Option<&String>) -> Option<i32> {
    s.and_then(|v| v.parse().ok())
}

/// Compares the design with the cluster.
pub fn plan(topology: &Topology, cluster: &ClusterState, options: PlanOptions) -> Plan {
    let mut p = Plan::default();
    let mut deletes = Vec::new();
    for spec in &topology.topics {
        let mut rf = spec.replication_factor;
        let mut configs = spec.configs.clone();
        if rf > cluster.brokers {
            if options.cap_replication {
                p.notes.push(Note::Capped {
                    topic: spec.name.clone(),
                    setting: "replication_factor".into(),
                    from: rf,
                    to: cluster.brokers,
                });
                rf = cluster.brokers;
            } else {
                p.errors.push(format!(
                    "{}: replication factor {rf} is larger than the cluster's {} broker(s); add brokers, or use \
                     --cap-replication on a development cluster",
                    spec.name, cluster.brokers
                ));
                continue;
            }
        }
        if let Some(isr) = parse_int(configs.get("min.insync.replicas")).filter(|isr| *isr > rf) {
            if options.cap_replication {
                p.notes.push(Note::Capped {
                    topic: spec.name.clone(),
                    setting: "min.insync.replicas".into(),
                    from: isr,
                    to: rf,
                });
                configs.insert("min.insync.replicas".into(), rf.to_string());
            } else {
                p.errors.push(format!(
                    "{}: min.insync.replicas {isr} is larger than the replication factor {rf}: every acks=all write \
                     would fail",
                    spec.name
                ));
                continue;
            }
        }
        let Some(current) = cluster.topics.get(&spec.name) else {
            p.actions.push(Action::Create {
                topic: spec.name.clone(),
                partitions: spec.partitions,
                replication_factor: rf,
                configs,
            });
            continue;
        };
        if spec.partitions < current.partitions {
            p.errors.push(format!(
                "{}: the file asks for {} partitions but the topic has {}; partitions can never be removed: Kafka \
                 cannot do it, and recreating the topic would delete its records and send every key to another \
                 partition (breaking per-key order). Keep {} in the file",
                spec.name, spec.partitions, current.partitions, current.partitions
            ));
        } else if spec.partitions > current.partitions {
            p.actions.push(Action::IncreasePartitions {
                topic: spec.name.clone(),
                from: current.partitions,
                to: spec.partitions,
            });
        }
        if current.replication_factor != rf {
            p.notes.push(Note::ReplicationFactorDiffers {
                topic: spec.name.clone(),
                cluster: current.replication_factor,
                desired: rf,
            });
        }
        let mut changes = Vec::new();
        for (key, want) in &configs {
            let have = current.configs.get(key).map(|c| c.value.clone());
            if have.as_ref() != Some(want) {
                changes.push(ConfigChange {
                    key: key.clone(),
                    old: have,
                    new: Some(want.clone()),
                });
            }
        }
        for (key, have) in &current.configs {
            if have.dynamic && !configs.contains_key(key) {
                changes.push(ConfigChange {
                    key: key.clone(),
                    old: Some(have.value.clone()),
                    new: None,
                });
            }
        }
        if !changes.is_empty() {
            p.actions.push(Action::AlterConfigs {
                topic: spec.name.clone(),
                changes,
                desired: configs,
            });
        }
    }
    for name in cluster.topics.keys() {
        if topology.get(name).is_some() || !topology.in_scope(name) {
            continue;
        }
        let protected = topology.is_protected(name);
        if options.allow_delete && !protected {
            deletes.push(Action::Delete {
                topic: name.clone(),
            });
        } else {
            p.notes.push(Note::NotInFile {
                topic: name.clone(),
                protected,
            });
        }
    }
    p.actions.sort_by_key(|a| match a {
        Action::Create { .. } => 0,
        Action::IncreasePartitions { .. } => 1,
        Action::AlterConfigs { .. } => 2,
        Action::Delete { .. } => 3,
    });
    p.actions.extend(deletes);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
scope: ["orders*", "legacy*"]
protected: ["legacy-keep*"]
defaults:
  replication_factor: 3
  configs:
    min.insync.replicas: 2
topics:
  - name: orders
    partitions: 6
    retention: 1d
    owner: w
    retry: { attempts: 2, initial_backoff: 1s }
  - name: orders-out
    partitions: 3
"#;

    fn topology() -> Topology {
        Topology::parse("t.yaml", FILE).unwrap()
    }

    /// A cluster that matches the file exactly.
    fn matching(brokers: i32) -> ClusterState {
        let mut c = ClusterState {
            brokers,
            topics: BTreeMap::new(),
        };
        for t in &topology().topics {
            let configs = t
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), ClusterConfig::set(v)))
                .collect();
            c.topics.insert(
                t.name.clone(),
                ClusterTopic {
                    partitions: t.partitions,
                    replication_factor: t.replication_factor,
                    configs,
                },
            );
        }
        c
    }

    #[test]
    fn an_empty_cluster_gets_every_topic_created() {
        let p = plan(
            &topology(),
            &ClusterState {
                brokers: 3,
                topics: BTreeMap::new(),
            },
            PlanOptions::default(),
        );
        assert!(p.errors.is_empty() && p.notes.is_empty());
        let created: Vec<&str> = p.actions.iter().map(Action::topic).collect();
        assert_eq!(
            created,
            vec!["orders", "orders-retry-1000", "orders-dlt", "orders-out"]
        );
        assert!(
            matches!(&p.actions[0], Action::Create { partitions: 6, replication_factor: 3, configs, .. }
            if configs["retention.ms"] == "86400000" && configs["min.insync.replicas"] == "2")
        );
    }

    #[test]
    fn a_matching_cluster_needs_nothing() {
        let p = plan(&topology(), &matching(3), PlanOptions::default());
        assert_eq!(p, Plan::default());
        assert!(!p.has_changes());
    }

    #[test]
    fn more_partitions_in_the_file_are_added() {
        let mut c = matching(3);
        c.topics.get_mut("orders-out").unwrap().partitions = 2;
        let p = plan(&topology(), &c, PlanOptions::default());
        assert_eq!(
            p.actions,
            vec![Action::IncreasePartitions {
                topic: "orders-out".into(),
                from: 2,
                to: 3
            }]
        );
    }

    #[test]
    fn fewer_partitions_in_the_file_are_refused_with_the_reason() {
        let mut c = matching(3);
        c.topics.get_mut("orders").unwrap().partitions = 12;
        let p = plan(&topology(), &c, PlanOptions::default());
        assert_eq!(p.errors.len(), 1);
        assert!(
            p.errors[0].contains("orders") && p.errors[0].contains("never be removed"),
            "{}",
            p.errors[0]
        );
        assert!(p.errors[0].contains("per-key order"));
        assert!(p.actions.is_empty());
    }

    #[test]
    fn config_drift_is_changed_back_and_unknown_dynamic_configs_reset() {
        let mut c = matching(3);
        let t = c.topics.get_mut("orders-out").unwrap();
        t.configs
            .insert("min.insync.replicas".into(), ClusterConfig::set("1"));
        t.configs
            .insert("segment.ms".into(), ClusterConfig::set("1000"));
        t.configs.insert(
            "compression.type".into(),
            ClusterConfig {
                value: "producer".into(),
                dynamic: false,
            },
        );
        let p = plan(&topology(), &c, PlanOptions::default());
        let Action::AlterConfigs {
            topic,
            changes,
            desired,
        } = &p.actions[0]
        else {
            panic!("{p:?}")
        };
        assert_eq!(topic, "orders-out");
        assert_eq!(
            changes,
            &vec![
                ConfigChange {
                    key: "min.insync.replicas".into(),
                    old: Some("1".into()),
                    new: Some("2".into())
                },
                ConfigChange {
                    key: "segment.ms".into(),
                    old: Some("1000".into()),
                    new: None
                },
            ]
        );
        assert!(!desired.contains_key("segment.ms"));
        assert_eq!(
            p.actions.len(),
            1,
            "a default value not in the file is not drift"
        );
    }

    #[test]
    fn deletion_needs_allow_delete_and_never_touches_protected_or_out_of_scope_topics() {
        let mut c = matching(3);
        for extra in [
            "legacy-old",
            "legacy-keep-me",
            "payments",
            "__consumer_offsets",
        ] {
            c.topics.insert(
                extra.into(),
                ClusterTopic {
                    partitions: 1,
                    replication_factor: 3,
                    ..Default::default()
                },
            );
        }
        let p = plan(&topology(), &c, PlanOptions::default());
        assert!(p.actions.is_empty());
        assert_eq!(
            p.notes,
            vec![
                Note::NotInFile {
                    topic: "legacy-keep-me".into(),
                    protected: true
                },
                Note::NotInFile {
                    topic: "legacy-old".into(),
                    protected: false
                },
            ],
            "out-of-scope and internal topics are not reported"
        );
        let p = plan(
            &topology(),
            &c,
            PlanOptions {
                allow_delete: true,
                ..Default::default()
            },
        );
        assert_eq!(
            p.actions,
            vec![Action::Delete {
                topic: "legacy-old".into()
            }]
        );
        assert_eq!(
            p.notes,
            vec![Note::NotInFile {
                topic: "legacy-keep-me".into(),
                protected: true
            }]
        );
    }

    #[test]
    fn a_protected_declared_topic_removed_from_the_file_is_kept_by_pattern() {
        let mut c = matching(3);
        c.topics
            .insert("legacy-keep-2".into(), ClusterTopic::default());
        let p = plan(
            &topology(),
            &c,
            PlanOptions {
                allow_delete: true,
                ..Default::default()
            },
        );
        assert!(p.actions.is_empty());
    }

    #[test]
    fn replication_larger_than_the_cluster_is_refused_or_capped() {
        let empty = ClusterState {
            brokers: 1,
            topics: BTreeMap::new(),
        };
        let p = plan(&topology(), &empty, PlanOptions::default());
        assert_eq!(p.errors.len(), 4);
        assert!(
            p.errors[0].contains("larger than the cluster's 1 broker")
                && p.errors[0].contains("--cap-replication")
        );
        assert!(p.actions.is_empty());

        let p = plan(
            &topology(),
            &empty,
            PlanOptions {
                cap_replication: true,
                ..Default::default()
            },
        );
        assert!(p.errors.is_empty());
        assert!(
            matches!(&p.actions[0], Action::Create { replication_factor: 1, configs, .. }
            if configs["min.insync.replicas"] == "1")
        );
        assert!(p.notes.contains(&Note::Capped {
            topic: "orders".into(),
            setting: "replication_factor".into(),
            from: 3,
            to: 1
        }));
        assert!(p.notes.contains(&Note::Capped {
            topic: "orders".into(),
            setting: "min.insync.replicas".into(),
            from: 2,
            to: 1
        }));
    }

    #[test]
    fn a_capped_cluster_that_matches_plans_nothing_but_notes_the_cap() {
        let mut c = matching(1);
        for t in c.topics.values_mut() {
            t.replication_factor = 1;
            t.configs
                .insert("min.insync.replicas".into(), ClusterConfig::set("1"));
        }
        let p = plan(
            &topology(),
            &c,
            PlanOptions {
                cap_replication: true,
                ..Default::default()
            },
        );
        assert!(p.actions.is_empty() && p.errors.is_empty(), "{p:?}");
        assert!(p.notes.iter().all(|n| matches!(n, Note::Capped { .. })));
    }

    #[test]
    fn a_different_replication_factor_is_reported_not_changed() {
        let mut c = matching(5);
        c.topics.get_mut("orders-out").unwrap().replication_factor = 2;
        let p = plan(&topology(), &c, PlanOptions::default());
        assert!(p.actions.is_empty());
        assert_eq!(
            p.notes,
            vec![Note::ReplicationFactorDiffers {
                topic: "orders-out".into(),
                cluster: 2,
                desired: 3
            }]
        );
    }
}
