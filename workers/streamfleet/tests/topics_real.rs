//! `streamfleet topics` against a live cluster. Each test writes its own topics file whose
//! names (and scope) carry a random prefix, so tests never see each other's topics.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use streamfleet_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_streamfleet");

struct Setup {
    broker: Broker,
    prefix: String,
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl Setup {
    fn new(partitions: i32) -> Self {
        let broker = Broker::real();
        let prefix = unique("prov");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("topics.yaml");
        let s = Setup {
            broker,
            prefix,
            _dir: dir,
            file,
        };
        s.write(partitions);
        s
    }

    /// The file: an owned topic (so rungs and a dead-letter topic are derived) and an output.
    fn write(&self, partitions: i32) {
        let p = &self.prefix;
        std::fs::write(
            &self.file,
            format!(
                "scope: [\"{p}*\"]\nprotected: [\"{p}-keep*\"]\ndefaults:\n  replication_factor: 3\n  configs:\n    \
                 min.insync.replicas: 2\ntopics:\n  - name: {p}-in\n    partitions: {partitions}\n    retention: 1d\n    \
                 owner: w\n    retry: {{ attempts: 2, initial_backoff: 500ms }}\n  - name: {p}-out\n    partitions: 3\n    \
                 retention: 2d\n"
            ),
        )
        .unwrap();
    }

    fn topics(&self, args: &[&str]) -> Output {
        let mut all = vec![args[0], "--brokers"];
        let bootstrap = self.broker.bootstrap();
        all.push(&bootstrap);
        all.extend(["--topics", self.file.to_str().unwrap(), "--cap-replication"]);
        all.extend(&args[1..]);
        Command::new(BIN)
            .arg("topics")
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// A setup whose topics file is applied.
    fn applied(partitions: i32) -> Self {
        let s = Self::new(partitions);
        let apply = s.topics(&["apply", "--yes"]);
        assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
        s
    }

    /// `streamfleet ARGS --brokers <the broker>`.
    fn streamfleet(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--brokers", &self.broker.bootstrap()])
            .output()
            .expect("streamfleet runs")
    }

    fn partitions(&self, topic: &str) -> Option<usize> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.broker.bootstrap())
            .create()
            .unwrap();
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        md.topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len())
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn apply_creates_everything_and_a_second_plan_is_empty_real_broker() {
    let s = Setup::new(4);
    let plan = s.topics(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "changes pending: {}",
        text(&plan)
    );
    assert!(text(&plan).contains("4 to create"), "{}", text(&plan));

    let refused = s.topics(&["apply"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).contains("--yes"), "{}", text(&refused));
    assert_eq!(
        s.partitions(&format!("{}-in", s.prefix)),
        None,
        "nothing applied without confirmation"
    );

    let apply = s.topics(&["apply", "--yes"]);
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    assert!(
        text(&apply).contains("the cluster now matches the file"),
        "{}",
        text(&apply)
    );
    for (t, n) in [("in", 4), ("in-retry-500", 4), ("in-dlt", 4), ("out", 3)] {
        assert_eq!(s.partitions(&format!("{}-{t}", s.prefix)), Some(n), "{t}");
    }

    let again = s.topics(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "no changes the second time: {}",
        text(&again)
    );
    let second = s.topics(&["apply", "--yes"]);
    assert!(text(&second).contains("No changes"), "{}", text(&second));

    let describe = Command::new(BIN)
        .args([
            "topics",
            "describe",
            "--brokers",
            &s.broker.bootstrap(),
            "--topics",
            s.file.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&describe.stdout).expect("describe --json");
    assert_eq!(json["topics"][format!("{}-in", s.prefix)]["partitions"], 4);
    assert_eq!(json["missing"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn deletes_only_with_allow_delete_and_never_protected_topics_real_broker() {
    let s = Setup::new(2);
    assert_eq!(s.topics(&["apply", "--yes"]).status.code(), Some(0));
    let (old, keep) = (format!("{}-old", s.prefix), format!("{}-keep-me", s.prefix));
    s.broker.create_topic(&old, 1).await;
    s.broker.create_topic(&keep, 1).await;

    let plan = s.topics(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "topics not in the file are a note, not a change"
    );
    let t = text(&plan);
    assert!(
        t.contains(&format!(
            "{old} is on the cluster but not in the file; kept"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{keep} is on the cluster but not in the file; protected"
        )),
        "{t}"
    );

    assert_eq!(s.topics(&["apply", "--yes"]).status.code(), Some(0));
    assert!(s.partitions(&old).is_some(), "kept without --allow-delete");

    let apply = s.topics(&["apply", "--yes", "--allow-delete"]);
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    assert!(text(&apply).contains(&format!("deleted {old}")));
    assert_eq!(s.partitions(&old), None);
    assert!(
        s.partitions(&keep).is_some(),
        "a protected topic is never deleted"
    );
    assert!(s.partitions(&format!("{}-in", s.prefix)).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn a_partition_decrease_is_refused_and_nothing_changes_real_broker() {
    let s = Setup::new(6);
    assert_eq!(s.topics(&["apply", "--yes"]).status.code(), Some(0));
    s.write(3);
    let plan = s.topics(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
    assert!(
        text(&plan).contains("partitions can never be removed"),
        "{}",
        text(&plan)
    );
    let apply = s.topics(&["apply", "--yes"]);
    assert_eq!(apply.status.code(), Some(1));
    assert_eq!(s.partitions(&format!("{}-in", s.prefix)), Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn replication_beyond_the_broker_count_needs_cap_replication_real_broker() {
    let s = Setup::new(2);
    let out = Command::new(BIN)
        .args([
            "topics",
            "plan",
            "--brokers",
            &s.broker.bootstrap(),
            "--topics",
            s.file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    // The test clusters (nisshi, the compose file) have fewer than 3 brokers.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("replication factor 3 is larger than the cluster's"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS (not nisshi: it does not support AlterConfigs)"]
async fn config_drift_is_reported_and_reverted_not_on_nisshi() {
    let s = Setup::new(2);
    assert_eq!(s.topics(&["apply", "--yes"]).status.code(), Some(0));
    let out = format!("{}-out", s.prefix);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", s.broker.bootstrap())
        .create()
        .unwrap();
    let change = AlterConfig::new(ResourceSpecifier::Topic(&out))
        .set("retention.ms", "60000")
        .set("min.insync.replicas", "1");
    for r in admin
        .alter_configs([&change], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let plan = s.topics(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    assert!(
        text(&plan).contains(&format!("{out} config retention.ms: 60000 → 172800000")),
        "{}",
        text(&plan)
    );
    assert_eq!(s.topics(&["apply", "--yes"]).status.code(), Some(0));
    assert_eq!(
        s.topics(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0),
        "drift reverted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS (not nisshi: it does not support CreatePartitions)"]
async fn more_partitions_in_the_file_are_added_not_on_nisshi() {
    let s = Setup::applied(3);
    s.write(6);
    let plan = s.topics(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2));
    assert!(
        text(&plan).contains(&format!("{}-in partitions 3 → 6", s.prefix)),
        "{}",
        text(&plan)
    );
    assert_eq!(s.topics(&["apply", "--yes"]).status.code(), Some(0));
    for t in ["in", "in-retry-500", "in-dlt"] {
        assert_eq!(
            s.partitions(&format!("{}-{t}", s.prefix)),
            Some(6),
            "{t} follows its source"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn lag_once_for_a_group_without_commits_says_so_real_broker() {
    let s = Setup::applied(3);
    let topic = format!("{}-in", s.prefix);
    let out = s.streamfleet(&[
        "lag",
        "--once",
        "--group",
        "no-such-group",
        "--topic",
        &topic,
    ]);
    let err = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("group `no-such-group` has committed no offset on") && err.contains(&topic),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: set KAFKA_BOOTSTRAP_SERVERS"]
async fn produce_count_writes_that_many_records_restocks_included_real_broker() {
    let s = Setup::applied(3);
    let topic = format!("{}-in", s.prefix);
    let out = s.streamfleet(&[
        "produce",
        "--count",
        "5",
        "--booking-topic",
        &topic,
        "--inventory-topic",
        &topic,
        "--payment-topic",
        &topic,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("a JSON summary on stdout");
    assert_eq!(report["records"], 5, "{report}");
    assert_eq!(report["kinds"]["Restock"], 5, "{report}");
    assert!(report.get("payments").is_none(), "no list of payment ids");
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", s.broker.bootstrap())
        .create()
        .unwrap();
    let total: i64 = (0..3)
        .map(|p| {
            c.fetch_watermarks(&topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum();
    assert_eq!(total, 5, "five records on the topic");
}
