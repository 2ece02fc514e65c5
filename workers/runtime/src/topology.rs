//! The topic design (`topics.yaml`): declared topics, and the topics derived from them.
//!
//! A topic with an `owner` is a source topic: the owner worker consumes it, and it gets a
//! retry rung per distinct backoff delay (`<topic>-retry-<ms>`) and a dead-letter topic
//! (`<topic>-dlt`), each with the source's partition count, replication factor and
//! retention. A derived topic may also be declared explicitly (to give the dead-letter topic a
//! longer retention, say) as long as it keeps at least the source's partition count.
//!
//! Errors name the file, line, column and field: `topics.yaml:12:17: topics[2].partitions:
//! must be at least 1`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::ConfigError;
use crate::ordering::Ordering;
use crate::retry::{RetryPolicy, dead_letter_topic};

/// Any YAML scalar, kept as the string Kafka expects.
#[derive(Debug, Clone, PartialEq)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            Bool(bool),
            Int(i64),
            Float(f64),
            Text(String),
        }
        Ok(Scalar(match Any::deserialize(d)? {
            Any::Bool(b) => b.to_string(),
            Any::Int(i) => i.to_string(),
            Any::Float(f) => f.to_string(),
            Any::Text(s) => s,
        }))
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DefaultsRaw {
    replication_factor: Option<Spanned<i64>>,
    #[serde(default)]
    configs: BTreeMap<String, Scalar>,
    retry: Option<Spanned<RetryPolicy>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicRaw {
    name: Spanned<String>,
    partitions: Spanned<i64>,
    replication_factor: Option<Spanned<i64>>,
    retention: Option<Spanned<Scalar>>,
    cleanup_policy: Option<Spanned<String>>,
    #[serde(default)]
    configs: BTreeMap<String, Scalar>,
    owner: Option<String>,
    retry: Option<Spanned<RetryPolicy>>,
    #[serde(default)]
    protected: bool,
    changelog: Option<Spanned<bool>>,
    ordering: Option<Spanned<Ordering>>,
    state: Option<Spanned<StateRaw>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateRaw {
    retention: Spanned<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRaw {
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    protected: Vec<String>,
    #[serde(default)]
    defaults: DefaultsRaw,
    topics: Vec<TopicRaw>,
}

/// Why a topic exists.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicKind {
    /// Declared in the file.
    Declared,
    /// A retry rung of `source`.
    Retry {
        /// Source topic.
        source: String,
        /// Backoff of the rung.
        delay: Duration,
    },
    /// The dead-letter topic of `source`.
    DeadLetter {
        /// Source topic.
        source: String,
    },
    /// The compacted changelog of the owner's state for `source` (exactly-once).
    Changelog {
        /// Source topic.
        source: String,
    },
}

/// One topic as it should exist on the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Topic configs (`retention.ms`, `cleanup.policy`, ...).
    pub configs: BTreeMap<String, String>,
    /// Worker that consumes it (source topics only).
    pub owner: Option<String>,
    /// Retry policy (source topics only).
    pub retry: Option<RetryPolicy>,
    /// The owner keeps durable state in a changelog topic (source topics only).
    pub changelog: bool,
    /// How the owner keeps order through retries (source topics only).
    pub ordering: Ordering,
    /// How long the owner's state remembers an entity after its last event (`state.retention`;
    /// source topics only; what an entry's lifetime starts from is the owner's business rule).
    pub state_retention: Option<Duration>,
    /// Never deleted by the provisioning CLI.
    pub protected: bool,
    /// Why it exists.
    pub kind: TopicKind,
    /// What it is for.
    pub description: Option<String>,
}

/// Every topic of the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Topics in file order, each source followed by its derived topics.
    pub topics: Vec<TopicSpec>,
    /// Name patterns (`*` wildcards) of the cluster topics this file governs: topics outside
    /// them are neither reported as missing from the file nor ever deleted. Empty: all.
    pub scope: Vec<String>,
    /// Name patterns of topics never deleted, in the file or not.
    pub protected: Vec<String>,
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The changelog topic of a source topic.
pub fn changelog_topic(source: &str) -> String {
    format!("{source}-changelog")
}

/// Default replication factor (production).
pub const DEFAULT_REPLICATION_FACTOR: i64 = 3;

fn located(
    file: &str,
    at: &serde_saphyr::Location,
    field: &str,
    message: impl AsRef<str>,
) -> ConfigError {
    ConfigError::Topics(format!(
        "{file}:{}:{}: {field}: {}",
        at.line(),
        at.column(),
        message.as_ref()
    ))
}

fn valid_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err("must be 1 to 249 characters".into());
    }
    if name == "." || name == ".." {
        return Err("`.` and `..` are not topic names".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{c}` is not allowed (use letters, digits, `.`, `_`, `-`)"
        ));
    }
    Ok(())
}

fn retention_ms(s: &str) -> Result<String, String> {
    match s.trim() {
        "-1" | "infinite" | "forever" => Ok("-1".into()),
        other => crate::durations::parse(other).map(|d| d.as_millis().to_string()),
    }
}

impl Topology {
    /// Reads and validates a topics file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Topics(format!("{}: {e}", path.display())))?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates a topics file's text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let raw: FileRaw = serde_saphyr::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("{}:{}: ", l.line(), l.column()))
                .unwrap_or_default();
            ConfigError::Topics(format!("{file}:{at}{e}"))
        })?;
        let default_rf = match &raw.defaults.replication_factor {
            Some(rf) if !(1..=i16::MAX as i64).contains(&rf.value) => {
                return Err(located(
                    file,
                    &rf.referenced,
                    "defaults.replication_factor",
                    "must be at least 1",
                ));
            }
            Some(rf) => rf.value,
            None => DEFAULT_REPLICATION_FACTOR,
        };
        let default_retry = match &raw.defaults.retry {
            Some(r) => {
                r.value.validate().map_err(|(field, m)| {
                    located(file, &r.referenced, &format!("defaults.retry.{field}"), m)
                })?;
                r.value.clone()
            }
            None => RetryPolicy::default(),
        };
        let default_configs: BTreeMap<String, String> = raw
            .defaults
            .configs
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();

        let mut declared = Vec::new();
        for (i, t) in raw.topics.iter().enumerate() {
            let field = |f: &str| format!("topics[{i}].{f}");
            valid_topic_name(&t.name.value)
                .map_err(|m| located(file, &t.name.referenced, &field("name"), m))?;
            if !(1..=i32::MAX as i64).contains(&t.partitions.value) {
                return Err(located(
                    file,
                    &t.partitions.referenced,
                    &field("partitions"),
                    "must be at least 1",
                ));
            }
            let rf = match &t.replication_factor {
                Some(rf) if !(1..=i16::MAX as i64).contains(&rf.value) => {
                    return Err(located(
                        file,
                        &rf.referenced,
                        &field("replication_factor"),
                        "must be at least 1",
                    ));
                }
                Some(rf) => rf.value,
                None => default_rf,
            };
            let mut configs = default_configs.clone();
            for (k, v) in &t.configs {
                configs.insert(k.clone(), v.0.clone());
            }
            if let Some(r) = &t.retention {
                if t.configs.contains_key("retention.ms") {
                    return Err(located(
                        file,
                        &r.referenced,
                        &field("retention"),
                        "given twice (also as configs.retention.ms); keep one",
                    ));
                }
                let ms = retention_ms(&r.value.0)
                    .map_err(|m| located(file, &r.referenced, &field("retention"), m))?;
                configs.insert("retention.ms".into(), ms);
            }
            if let Some(c) = &t.cleanup_policy {
                let ok = matches!(
                    c.value.as_str(),
                    "delete" | "compact" | "compact,delete" | "delete,compact"
                );
                if !ok {
                    return Err(located(
                        file,
                        &c.referenced,
                        &field("cleanup_policy"),
                        "must be delete, compact or compact,delete",
                    ));
                }
                configs.insert("cleanup.policy".into(), c.value.clone());
            }
            let retry = match (&t.retry, &t.owner) {
                (Some(r), _) => {
                    r.value.validate().map_err(|(f, m)| {
                        located(file, &r.referenced, &field(&format!("retry.{f}")), m)
                    })?;
                    Some(r.value.clone())
                }
                (None, Some(_)) => Some(default_retry.clone()),
                (None, None) => None,
            };
            let changelog = t.changelog.as_ref().is_some_and(|c| c.value);
            if let (Some(c), true, None) = (&t.changelog, changelog, &t.owner) {
                return Err(located(
                    file,
                    &c.referenced,
                    &field("owner"),
                    "a topic with a changelog needs an owner (the worker whose state it is)",
                ));
            }
            if let (Some(o), None) = (&t.ordering, &t.owner) {
                return Err(located(
                    file,
                    &o.referenced,
                    &field("owner"),
                    "a topic with an ordering needs an owner (the worker that keeps it)",
                ));
            }
            let state_retention = match &t.state {
                None => None,
                Some(st) if t.owner.is_none() => {
                    return Err(located(
                        file,
                        &st.referenced,
                        &field("owner"),
                        "a topic with a state section needs an owner (the worker whose state it is)",
                    ));
                }
                Some(st) => {
                    let r = &st.value.retention;
                    let d = crate::durations::parse(&r.value.0)
                        .map_err(|m| located(file, &r.referenced, &field("state.retention"), m))?;
                    if d.is_zero() {
                        return Err(located(
                            file,
                            &r.referenced,
                            &field("state.retention"),
                            "must be greater than zero",
                        ));
                    }
                    Some(d)
                }
            };
            if let (Some(r), None) = (&t.retry, &t.owner) {
                return Err(located(
                    file,
                    &r.referenced,
                    &field("owner"),
                    "a topic with a retry policy needs an owner (the worker that retries it)",
                ));
            }
            declared.push((
                t,
                TopicSpec {
                    name: t.name.value.clone(),
                    partitions: t.partitions.value as i32,
                    replication_factor: rf as i32,
                    configs,
                    owner: t.owner.clone(),
                    retry,
                    changelog,
                    ordering: t.ordering.as_ref().map(|o| o.value).unwrap_or_default(),
                    state_retention,
                    protected: t.protected,
                    kind: TopicKind::Declared,
                    description: t.description.clone(),
                },
            ));
        }

        let mut seen = HashSet::new();
        for (t, spec) in &declared {
            if !seen.insert(spec.name.clone()) {
                return Err(located(
                    file,
                    &t.name.referenced,
                    "topics[].name",
                    format!("topic `{}` is declared twice", spec.name),
                ));
            }
        }

        let mut topics = Vec::new();
        for (_, spec) in &declared {
            topics.push(spec.clone());
            let Some(policy) = &spec.retry else { continue };
            let mut derived: Vec<(String, TopicKind)> = policy
                .rung_topics(&spec.name)
                .into_iter()
                .map(|(name, delay)| {
                    (
                        name,
                        TopicKind::Retry {
                            source: spec.name.clone(),
                            delay,
                        },
                    )
                })
                .collect();
            derived.push((
                dead_letter_topic(&spec.name),
                TopicKind::DeadLetter {
                    source: spec.name.clone(),
                },
            ));
            if spec.changelog {
                derived.push((
                    changelog_topic(&spec.name),
                    TopicKind::Changelog {
                        source: spec.name.clone(),
                    },
                ));
            }
            for (name, kind) in derived {
                if let Some((t, explicit)) = declared.iter().find(|(_, d)| d.name == name) {
                    if explicit.partitions < spec.partitions {
                        return Err(located(
                            file,
                            &t.partitions.referenced,
                            &format!("{name}.partitions"),
                            format!(
                                "a derived topic needs at least the {} partitions of {}",
                                spec.partitions, spec.name
                            ),
                        ));
                    }
                    continue;
                }
                let mut configs = spec.configs.clone();
                if matches!(kind, TopicKind::Changelog { .. }) {
                    // Latest value per key, kept forever.
                    configs.remove("retention.ms");
                    configs.insert("cleanup.policy".into(), "compact".into());
                } else {
                    configs.insert("cleanup.policy".into(), "delete".into());
                }
                topics.push(TopicSpec {
                    name,
                    partitions: spec.partitions,
                    replication_factor: spec.replication_factor,
                    configs,
                    owner: spec.owner.clone(),
                    retry: None,
                    changelog: false,
                    ordering: Ordering::default(),
                    state_retention: None,
                    protected: spec.protected,
                    kind,
                    description: None,
                });
            }
        }
        // An explicitly declared derived topic takes the kind of the topic it stands for.
        for i in 0..topics.len() {
            if topics[i].kind != TopicKind::Declared {
                continue;
            }
            let name = topics[i].name.clone();
            for source in topics.iter().filter(|t| t.retry.is_some()) {
                let policy = source.retry.as_ref().expect("filtered");
                if name == dead_letter_topic(&source.name) {
                    let kind = TopicKind::DeadLetter {
                        source: source.name.clone(),
                    };
                    topics[i].kind = kind;
                    break;
                }
                if source.changelog && name == changelog_topic(&source.name) {
                    let kind = TopicKind::Changelog {
                        source: source.name.clone(),
                    };
                    topics[i].kind = kind;
                    break;
                }
                if let Some((_, delay)) = policy
                    .rung_topics(&source.name)
                    .into_iter()
                    .find(|(n, _)| *n == name)
                {
                    topics[i].kind = TopicKind::Retry {
                        source: source.name.clone(),
                        delay,
                    };
                    break;
                }
            }
        }
        Ok(Self {
            topics,
            scope: raw.scope,
            protected: raw.protected,
        })
    }

    /// Whether the file governs a cluster topic of this name. Internal topics (a leading
    /// `_`, like `__consumer_offsets`) never are.
    pub fn in_scope(&self, name: &str) -> bool {
        !name.starts_with('_')
            && (self.scope.is_empty() || self.scope.iter().any(|p| glob_match(p, name)))
    }

    /// Whether a topic must never be deleted: internal, matching a `protected` pattern, or a
    /// topic of the file marked `protected` (its derived topics included).
    pub fn is_protected(&self, name: &str) -> bool {
        name.starts_with('_')
            || self.protected.iter().any(|p| glob_match(p, name))
            || self.get(name).is_some_and(|t| t.protected)
    }

    /// The topic with this name.
    pub fn get(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// The changelog topic of a source topic with durable state.
    pub fn changelog_of(&self, source: &str) -> Option<String> {
        self.get(source)
            .filter(|t| t.changelog)
            .map(|t| changelog_topic(&t.name))
    }

    /// How `source` keeps order through retries: its `ordering`, or `partition` for a topic the
    /// file does not declare (it has no retry rungs).
    pub fn ordering_of(&self, source: &str) -> Ordering {
        self.get(source)
            .filter(|t| t.kind == TopicKind::Declared)
            .map_or(Ordering::Partition, |t| t.ordering)
    }

    /// The owner's state retention for `source` (`state.retention`), if the file sets one.
    pub fn state_retention_of(&self, source: &str) -> Option<Duration> {
        self.get(source).and_then(|t| t.state_retention)
    }

    /// The source topics `owner` consumes, with their retry policies.
    pub fn sources_of(&self, owner: &str) -> Vec<(String, RetryPolicy)> {
        self.topics
            .iter()
            .filter(|t| t.kind == TopicKind::Declared && t.owner.as_deref() == Some(owner))
            .filter_map(|t| t.retry.clone().map(|r| (t.name.clone(), r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
defaults:
  replication_factor: 3
  configs:
    min.insync.replicas: 2
topics:
  - name: orders
    partitions: 12
    retention: 30d
    owner: orders-worker
  - name: orders-out
    partitions: 6
    retention: 7d
"#;

    #[test]
    fn derives_rungs_and_dead_letter_topics() {
        let t = Topology::parse("topics.yaml", FILE).unwrap();
        let names: Vec<&str> = t.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "orders",
                "orders-retry-1000",
                "orders-retry-2000",
                "orders-dlt",
                "orders-out"
            ]
        );
        let dlt = t.get("orders-dlt").unwrap();
        assert_eq!(dlt.partitions, 12);
        assert_eq!(
            dlt.configs["retention.ms"],
            (30u64 * 86_400_000).to_string()
        );
        assert_eq!(dlt.configs["min.insync.replicas"], "2");
        assert_eq!(
            dlt.kind,
            TopicKind::DeadLetter {
                source: "orders".into()
            }
        );
        assert_eq!(t.sources_of("orders-worker").len(), 1);
        assert!(t.sources_of("nobody").is_empty());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = FILE.replace("partitions: 6", "partitions: 0");
        let e = Topology::parse("topics.yaml", &bad)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("topics.yaml:12:17:"), "{e}");
        assert!(e.contains("topics[1].partitions"), "{e}");

        let bad = FILE.replace("retention: 7d", "retention: soon");
        let e = Topology::parse("topics.yaml", &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("topics[1].retention") && e.contains("topics.yaml:13:"),
            "{e}"
        );

        let bad = FILE.replace(
            "owner: orders-worker",
            "owner: orders-worker\n    color: blue",
        );
        let e = Topology::parse("topics.yaml", &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("color") && e.contains("topics.yaml:"), "{e}");
    }

    #[test]
    fn explicit_dead_letter_topics_need_enough_partitions() {
        let extra = format!("{FILE}  - name: orders-dlt\n    partitions: 3\n");
        let e = Topology::parse("t.yaml", &extra).unwrap_err().to_string();
        assert!(e.contains("orders-dlt.partitions"), "{e}");
        let extra = format!("{FILE}  - name: orders-dlt\n    partitions: 12\n    retention: 90d\n");
        let t = Topology::parse("t.yaml", &extra).unwrap();
        let dlt = t.get("orders-dlt").unwrap();
        assert_eq!(
            dlt.configs["retention.ms"],
            (90u64 * 86_400_000).to_string()
        );
        assert_eq!(
            dlt.kind,
            TopicKind::DeadLetter {
                source: "orders".into()
            }
        );
        assert_eq!(
            t.topics.iter().filter(|t| t.name == "orders-dlt").count(),
            1
        );
    }

    #[test]
    fn globs_scope_and_protection() {
        assert!(glob_match("booking-*", "booking-events-dlt"));
        assert!(glob_match("*-dlt", "booking-events-dlt"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxcyyb"));
        assert!(!glob_match("booking-*", "payment-events"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
        assert!(!glob_match("ab*ba", "aba"));
        let text = format!("scope: [\"orders*\"]\nprotected: [\"orders-keep*\"]\n{FILE}");
        let t = Topology::parse("t.yaml", &text).unwrap();
        assert!(
            t.in_scope("orders-legacy")
                && !t.in_scope("payments")
                && !t.in_scope("__consumer_offsets")
        );
        assert!(t.is_protected("orders-keep-1") && !t.is_protected("orders-legacy"));
        assert!(t.is_protected("__transaction_state"));
        let all = Topology::parse("t.yaml", FILE).unwrap();
        assert!(all.in_scope("anything") && !all.in_scope("_schemas"));
    }

    #[test]
    fn a_changelog_is_derived_compacted_with_the_source_partitions() {
        let text = FILE.replace(
            "    owner: orders-worker\n",
            "    owner: orders-worker\n    changelog: true\n",
        );
        let t = Topology::parse("t.yaml", &text).unwrap();
        let c = t.get("orders-changelog").unwrap();
        assert_eq!(c.partitions, 12);
        assert_eq!(c.configs["cleanup.policy"], "compact");
        assert!(!c.configs.contains_key("retention.ms"));
        assert_eq!(
            c.kind,
            TopicKind::Changelog {
                source: "orders".into()
            }
        );
        assert_eq!(
            t.changelog_of("orders").as_deref(),
            Some("orders-changelog")
        );
        assert_eq!(t.changelog_of("orders-out"), None);
        let orphan = FILE.replace(
            "    retention: 7d\n",
            "    retention: 7d\n    changelog: true\n",
        );
        let e = Topology::parse("t.yaml", &orphan).unwrap_err().to_string();
        assert!(
            e.contains("topics[1].owner") && e.contains("changelog"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let dup = format!("{FILE}  - name: orders\n    partitions: 1\n");
        let e = Topology::parse("t.yaml", &dup).unwrap_err().to_string();
        assert!(e.contains("declared twice"), "{e}");
    }
}
