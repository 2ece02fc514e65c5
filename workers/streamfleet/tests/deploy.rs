//! The deployment files checked against the code they deploy.
//!
//! `docker-compose.kafka.yml` is parsed by Debian's `docker-compose` (no engine needed), the
//! Kubernetes manifests under `deploy/` by a YAML parser; then every command line a container
//! runs is parsed by the real `streamfleet` command line together with the `STREAMFLEET_*`
//! variables of its environment (an unknown variable or a rejected value fails), worker
//! settings are validated as the worker validates them at start, probes must hit paths the
//! worker's HTTP router answers on the port it listens on, and grace periods must exceed the
//! shutdown deadline. Nothing here needs Docker or a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use serde_json::Value;
use streamfleet::cli::{Cli, Command as Sub, TopicsCommand};
use streamfleet::commands::worker::resolve;
use streamfleet::fleet::builtin_topology;
use streamfleet_runtime::health::Health;
use streamfleet_runtime::properties::kafka_properties_from_env;
use streamfleet_runtime::topology::{TopicKind, Topology};
use streamfleet_runtime::{CancellationToken, http};
use streamfleet_tests::{repo, tool};

const COMPOSE_FILE: &str = "docker-compose.kafka.yml";
const WORKERS: [&str; 3] = ["booking", "inventory", "payment"];

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// A scalar as text (YAML numbers and booleans included), or a panic naming `what`.
fn text(v: &Value, what: &str) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("{what}: expected a scalar, found {other}"),
    }
}

fn strings(v: &Value, what: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list, found {v}"))
        .iter()
        .map(|x| text(x, what))
        .collect()
}

fn duration(s: &str) -> Duration {
    humantime::parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Parses `args` as `streamfleet` does inside a container whose environment is `env`: every
/// `STREAMFLEET_*` variable must be one the invoked subcommand reads (it becomes that flag, so
/// its value is checked by the flag's parser), `STREAMFLEET_KAFKA_*` become `-X` properties.
fn parse_as_container(args: &[String], env: &BTreeMap<String, String>, what: &str) -> Cli {
    let mut argv = vec!["streamfleet".to_owned()];
    argv.extend(args.iter().cloned());
    let root = Cli::command();
    let mut reads: BTreeMap<String, String> = BTreeMap::new();
    let mut level = &root;
    let mut note = |cmd: &clap::Command| {
        for arg in cmd.get_arguments() {
            if let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) {
                reads.insert(var.to_string_lossy().into_owned(), long.to_owned());
            }
        }
    };
    note(level);
    for a in args {
        if let Some(sub) = level.find_subcommand(a) {
            level = sub;
            note(level);
        }
    }
    let kafka: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("STREAMFLEET_KAFKA_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for p in kafka_properties_from_env(kafka).unwrap_or_else(|e| panic!("{what}: {e}")) {
        argv.push("-X".into());
        argv.push(format!("{}={}", p.key, p.value));
    }
    for (var, value) in env {
        if var.starts_with("STREAMFLEET_KAFKA_") || !var.starts_with("STREAMFLEET_") {
            continue;
        }
        let long = reads.get(var).unwrap_or_else(|| {
            panic!(
                "{what}: `streamfleet {}` reads no variable {var}",
                args.join(" ")
            )
        });
        argv.push(format!("--{long}={value}"));
    }
    Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{what}: {argv:?}:\n{e}"))
}

/// Validates a worker command line as `streamfleet worker` does before it starts, with the
/// repository's topics.yaml where the container mounts it; returns the worker's settings.
fn resolve_worker(cli: Cli, what: &str) -> streamfleet::commands::worker::Resolved {
    let Sub::Worker(mut cmd) = cli.command else {
        panic!("{what}: not a worker command")
    };
    cmd.topics.topics_file = Some(repo().join("topics.yaml"));
    resolve(&cmd).unwrap_or_else(|e| panic!("{what}: the worker would refuse to start: {e:#}"))
}

/// Whether the worker's HTTP router answers `path` with something other than 404.
fn served_paths() -> BTreeSet<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let stop = CancellationToken::new();
        let (addr, server) = http::serve(
            "127.0.0.1:0".parse().unwrap(),
            prometheus::Registry::new(),
            Health::default(),
            stop.clone(),
        )
        .await
        .unwrap();
        let found = tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            [
                "/metrics",
                "/health/live",
                "/health/ready",
                "/health",
                "/ready",
            ]
            .into_iter()
            .filter(|p| {
                let status = agent
                    .get(format!("http://{addr}{p}"))
                    .call()
                    .unwrap()
                    .status();
                status != 404
            })
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
        })
        .await
        .unwrap();
        stop.cancel();
        let _ = server.await;
        found
    })
}

fn owned_sources(topology: &Topology, worker: &str) -> Vec<(String, i32)> {
    topology
        .topics
        .iter()
        .filter(|t| t.kind == TopicKind::Declared && t.owner.as_deref() == Some(worker))
        .map(|t| (t.name.clone(), t.partitions))
        .collect()
}

// ---------------------------------------------------------------------------------------
// docker-compose.kafka.yml

fn compose_config(profiles: &[&str]) -> Value {
    let mut cmd = Command::new(tool("docker-compose", "docker-compose"));
    cmd.current_dir(repo()).args(["-f", COMPOSE_FILE]);
    for p in profiles {
        cmd.args(["--profile", p]);
    }
    let out = cmd.arg("config").output().unwrap();
    assert!(
        out.status.success(),
        "docker-compose rejects {COMPOSE_FILE}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

fn env_of(service: &Value, name: &str) -> BTreeMap<String, String> {
    service["environment"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), text(v, &format!("{name}.environment.{k}"))))
                .collect()
        })
        .unwrap_or_default()
}

fn depends(service: &Value, on: &str) -> String {
    text(
        &service["depends_on"][on]["condition"],
        &format!("depends_on.{on}"),
    )
}

/// `host_path → container_path` of a service's bind mounts.
fn mounts(service: &Value) -> BTreeMap<String, String> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| match v {
            Value::String(s) => {
                let mut parts = s.split(':');
                (
                    parts.next().unwrap().to_owned(),
                    parts.next().unwrap().to_owned(),
                )
            }
            other => (
                text(&other["source"], "source"),
                text(&other["target"], "target"),
            ),
        })
        .collect()
}

fn published(service: &Value) -> Vec<(u16, u16)> {
    service["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p {
            Value::String(s) => {
                let (h, c) = s.rsplit_once(':').unwrap();
                (h.parse().unwrap(), c.parse().unwrap())
            }
            other => (
                text(&other["published"], "published").parse().unwrap(),
                text(&other["target"], "target").parse().unwrap(),
            ),
        })
        .collect()
}

#[test]
fn compose_wires_broker_topics_workers_prometheus_and_grafana() {
    let root = repo().canonicalize().unwrap();
    let abs = |p: &str| root.join(p).to_string_lossy().into_owned();
    let config = compose_config(&[]);
    let services = config["services"].as_object().unwrap();
    let served = served_paths();

    // The broker: KRaft, one node, internal topics that fit on it, no rebalance delay.
    let kafka = &services["kafka"];
    // The release CI proves the suite on (../shared/kafka): a user's Docker broker and the
    // three-node profile run the same Kafka as the tests.
    let cluster3 = compose_config(&["cluster3"]);
    for name in ["kafka", "kafka-1", "kafka-2", "kafka-3"] {
        assert_eq!(
            text(&cluster3["services"][name]["image"], "image"),
            "apache/kafka:3.8.0",
            "{name}: the Kafka release the tests run on"
        );
    }
    let k = env_of(kafka, "kafka");
    assert!(
        k["KAFKA_PROCESS_ROLES"].contains("controller"),
        "KRaft mode"
    );
    assert_eq!(k["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"], "1");
    assert_eq!(k["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"], "1");
    assert_eq!(k["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"], "1");
    assert_eq!(k["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"], "0");
    assert!(k["KAFKA_ADVERTISED_LISTENERS"].contains("kafka:19092"));
    assert!(
        kafka["healthcheck"].is_object(),
        "kafka needs a health check"
    );

    // The one-shot topics service applies the mounted topics.yaml, capped to the one broker.
    let topics = &services["topics"];
    assert_eq!(depends(topics, "kafka"), "service_healthy");
    assert_eq!(
        mounts(topics)[&abs("topics.yaml")],
        "/etc/streamfleet/topics.yaml"
    );
    let args = strings(&topics["command"], "topics.command");
    let cli = parse_as_container(&args, &env_of(topics, "topics"), "topics");
    let Sub::Topics(TopicsCommand::Apply { args: apply, yes }) = &cli.command else {
        panic!("the topics service must run `topics apply`: {args:?}")
    };
    assert!(
        *yes && apply.cap_replication && !apply.allow_delete,
        "{args:?}"
    );
    assert!(args.contains(&"/etc/streamfleet/topics.yaml".to_owned()));

    let mut instance_ids = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    for w in WORKERS {
        let s = &services[w];
        let what = format!("compose service {w}");
        let env = env_of(s, w);
        let args = strings(&s["command"], &what);
        assert_eq!(args, ["worker", w], "{what}");
        let resolved = resolve_worker(parse_as_container(&args, &env, &what), &what);
        assert_eq!(resolved.config.brokers, "kafka:19092", "{what}");
        instance_ids.insert(
            resolved
                .config
                .instance_id
                .clone()
                .expect("static membership"),
        );
        // Waits for the topics, and `up --wait` waits for it: a one-shot dependency with a
        // long-running dependent makes `up --wait` return 0 (docker/compose#10596).
        assert_eq!(depends(s, "topics"), "service_completed_successfully");
        // topics.yaml mounted where STREAMFLEET_TOPICS says.
        assert_eq!(
            mounts(s)[&abs("topics.yaml")],
            env["STREAMFLEET_TOPICS"],
            "{what}"
        );
        // The health check: `streamfleet probe` on the readiness path of the worker's port.
        let http_addr: SocketAddr = env["STREAMFLEET_HTTP_ADDR"].parse().unwrap();
        let test = strings(&s["healthcheck"]["test"], &what);
        assert_eq!(test[..3], ["CMD", "streamfleet", "probe"], "{what}");
        let probe = parse_as_container(&test[2..], &BTreeMap::new(), &what);
        let Sub::Probe(probe) = probe.command else {
            unreachable!()
        };
        let url = probe.url.strip_prefix("http://127.0.0.1:").unwrap();
        let (port, path) = url.split_once('/').unwrap();
        assert_eq!(port.parse::<u16>().unwrap(), http_addr.port(), "{what}");
        assert_eq!(format!("/{path}"), "/health/ready", "{what}");
        assert!(served.contains("/health/ready"));
        for (_, container) in published(s) {
            assert_eq!(container, http_addr.port(), "{what}: published port");
        }
        host_ports.extend(published(s).into_iter().map(|(h, _)| h));
        // Docker's SIGKILL must come after the worker's own shutdown deadline.
        let grace = duration(&text(&s["stop_grace_period"], &what));
        assert!(
            grace > resolved.config.shutdown_timeout,
            "{what}: stop_grace_period {grace:?} must exceed the shutdown deadline {:?}",
            resolved.config.shutdown_timeout
        );
    }
    assert_eq!(
        instance_ids.len(),
        3,
        "every worker has its own instance id"
    );
    assert_eq!(host_ports.len(), 3, "every worker has its own host port");

    // Prometheus: the alert rules mounted where the config loads them, every worker scraped
    // under the job name the rules expect.
    let prom = &services["prometheus"];
    let prom_mounts = mounts(prom);
    let config_in = &prom_mounts[&abs("deploy/prometheus/prometheus.yml")];
    assert!(
        strings(&prom["command"], "prometheus.command")
            .contains(&format!("--config.file={config_in}"))
    );
    let alerts_in = &prom_mounts[&abs("alerts")];
    let prom_config: Value =
        serde_saphyr::from_str(&read("deploy/prometheus/prometheus.yml")).unwrap();
    let rule_files = strings(&prom_config["rule_files"], "rule_files");
    assert_eq!(rule_files, [format!("{alerts_in}/*.rules.yml")]);
    let job = &prom_config["scrape_configs"][0];
    assert_eq!(
        job["job_name"], "streamfleet",
        "the alert rules use job=\"streamfleet\""
    );
    let targets: BTreeSet<String> = strings(&job["static_configs"][0]["targets"], "targets")
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = WORKERS
        .iter()
        .map(|w| {
            let port: SocketAddr = env_of(&services[*w], w)["STREAMFLEET_HTTP_ADDR"]
                .parse()
                .unwrap();
            format!("{w}:{}", port.port())
        })
        .collect();
    assert_eq!(targets, expected);
    let metrics_path = text(&job["metrics_path"], "metrics_path");
    assert!(
        served.contains(&metrics_path),
        "{metrics_path} is not served"
    );
    assert!(prom["healthcheck"].is_object());
    promtool_accepts(&read("deploy/prometheus/prometheus.yml"), alerts_in);

    // Grafana: provisioning mounted, the dashboard where the provider looks, the data source
    // pointing at the prometheus service.
    let grafana = &services["grafana"];
    let g = mounts(grafana);
    assert_eq!(
        g[&abs("dashboards/provisioning")],
        "/etc/grafana/provisioning"
    );
    let provider: Value =
        serde_saphyr::from_str(&read("dashboards/provisioning/dashboards/streamfleet.yml"))
            .unwrap();
    let dash_dir = text(
        &provider["providers"][0]["options"]["path"],
        "provider path",
    );
    assert_eq!(
        g[&abs("dashboards/streamfleet.json")],
        format!("{dash_dir}/streamfleet.json")
    );
    let datasource: Value =
        serde_saphyr::from_str(&read("dashboards/provisioning/datasources/prometheus.yml"))
            .unwrap();
    assert_eq!(
        datasource["datasources"][0]["url"], "http://prometheus:9090",
        "the data source must name the compose service"
    );
    assert!(published(prom).contains(&(9090, 9090)));
    assert_eq!(depends(grafana, "prometheus"), "service_healthy");

    // `up --wait` returns when everything is ready: every long-running service of the default
    // set has a health check; the one-shot `topics` is awaited by its dependents.
    for (name, s) in services {
        if s.get("profiles").is_some() || name == "topics" {
            continue;
        }
        assert!(s["healthcheck"].is_object(), "{name} has no health check");
    }
}

/// `promtool check config` on the compose Prometheus config, with the rule glob pointed at
/// the repository's alerts/ (where the container mounts it): the config is valid and loads
/// every rule file.
fn promtool_accepts(config: &str, alerts_in: &str) {
    let dir = tempfile::tempdir().unwrap();
    let local = config.replace(alerts_in, &repo().join("alerts").to_string_lossy());
    assert_ne!(local, config, "the rule glob must use {alerts_in}");
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, local).unwrap();
    let out = Command::new(tool("promtool", "prometheus"))
        .args(["check", "config"])
        .arg(&path)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check config:\n{all}");
    assert!(
        all.contains("streamfleet.rules.yml") && all.contains("SUCCESS"),
        "the rules were not loaded:\n{all}"
    );
}

#[test]
fn compose_profiles_add_load_and_a_three_broker_cluster() {
    let base = compose_config(&[]);
    let all = compose_config(&["load", "cluster3"]);
    let services = all["services"].as_object().unwrap();

    // Load: a profile service, so `up --wait` never waits for a generator that never ends.
    let load = &services["load"];
    assert_eq!(strings(&load["profiles"], "load.profiles"), ["load"]);
    let args = strings(&load["command"], "load.command");
    let cli = parse_as_container(&args, &env_of(load, "load"), "load");
    assert!(matches!(cli.command, Sub::Produce(_)), "{args:?}");
    assert_eq!(depends(load, "topics"), "service_completed_successfully");

    // The drill cluster: three KRaft nodes of one cluster, production replication.
    let nodes = ["kafka-1", "kafka-2", "kafka-3"];
    let mut ids = BTreeSet::new();
    let mut cluster_ids = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    for n in nodes {
        let s = &services[n];
        assert_eq!(strings(&s["profiles"], n), ["cluster3"], "{n}");
        assert!(s["healthcheck"].is_object(), "{n}");
        let e = env_of(s, n);
        ids.insert(e["KAFKA_NODE_ID"].clone());
        cluster_ids.insert(e["CLUSTER_ID"].clone());
        let voters: BTreeSet<&str> = e["KAFKA_CONTROLLER_QUORUM_VOTERS"]
            .split(',')
            .map(|v| v.split_once('@').unwrap().1.split(':').next().unwrap())
            .collect();
        assert_eq!(voters, nodes.into_iter().collect(), "{n}: quorum voters");
        for key in [
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "KAFKA_DEFAULT_REPLICATION_FACTOR",
        ] {
            assert_eq!(e[key], "3", "{n}: {key}");
        }
        assert_eq!(e["KAFKA_MIN_INSYNC_REPLICAS"], "2", "{n}");
        let (host, _) = published(s)[0];
        assert!(
            e["KAFKA_ADVERTISED_LISTENERS"].contains(&format!("localhost:{host}")),
            "{n}: the external listener must advertise the published port"
        );
        host_ports.insert(host);
    }
    assert_eq!(ids.len(), 3, "distinct node ids");
    assert_eq!(host_ports.len(), 3, "distinct host ports");
    assert_eq!(cluster_ids.len(), 1, "one cluster id for all three");
    // Kafka's cluster id is a base64url-encoded 16-byte UUID: 22 characters, no padding.
    let id = cluster_ids.into_iter().next().unwrap();
    assert_eq!(id.len(), 22, "{id}");
    assert!(
        id.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{id}"
    );

    // Without the profiles none of it starts.
    let default: BTreeSet<&String> = base["services"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| s.get("profiles").is_none())
        .map(|(n, _)| n)
        .collect();
    assert!(
        !default
            .iter()
            .any(|n| n.starts_with("kafka-") || *n == "load")
    );
}

// ---------------------------------------------------------------------------------------
// Dockerfile

const IMAGE: &str = concat!("streamfleet:", env!("CARGO_PKG_VERSION"));

fn build_command(text: &str, file: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter(|l| l.starts_with("docker build "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{file} must give exactly one `docker build` command: {lines:?}"
    );
    lines[0].to_owned()
}

/// The Dockerfile's stages: (FROM line, instructions).
fn stages(dockerfile: &str) -> Vec<(String, Vec<String>)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let l = line.trim();
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        match l.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(l);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for instr in joined {
        if instr.starts_with("FROM ") {
            stages.push((instr, Vec::new()));
        } else if let Some(last) = stages.last_mut() {
            last.1.push(instr);
        }
    }
    stages
}

#[test]
fn the_dockerfile_builds_what_the_readme_and_the_manifests_run() {
    let dockerfile = read("Dockerfile");
    // The image's user documentation.
    let readme = read("docs/operations.md");
    let command = build_command(&dockerfile, "Dockerfile");
    assert_eq!(command, format!("docker build -t {IMAGE} ."));
    assert_eq!(
        build_command(&readme, "docs/operations.md"),
        command,
        "docs/operations.md and Dockerfile differ"
    );

    let stages = stages(&dockerfile);
    assert_eq!(stages.len(), 2, "multi-stage: build, then runtime");
    let (build_from, build) = &stages[0];
    let rust = build_from
        .strip_prefix("FROM rust:")
        .and_then(|r| r.split_once('-'))
        .map(|(v, _)| v.to_owned())
        .unwrap_or_else(|| panic!("the build stage must use the rust image: {build_from}"));
    let msrv = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let version = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        version(&rust) >= version(&msrv),
        "rust {rust} < rust-version {msrv}"
    );
    assert!(
        build
            .iter()
            .any(|i| i.contains("cargo build --release --locked -p streamfleet")),
        "the build stage builds the locked release binary"
    );
    let (runtime_from, runtime) = &stages[1];
    assert!(
        runtime_from.ends_with("-slim"),
        "a small runtime base: {runtime_from}"
    );
    assert!(runtime.iter().any(|i| i.starts_with("COPY --from=")));
    let user = runtime
        .iter()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric uid");
    assert_ne!(uid, 0, "never root");
    assert!(runtime.contains(&r#"ENTRYPOINT ["streamfleet"]"#.to_owned()));

    // The image every deployment runs is the one the build command tags.
    let compose = compose_config(&["load"]);
    for (name, s) in compose["services"].as_object().unwrap() {
        if s.get("build").is_some() {
            assert_eq!(text(&s["image"], name), IMAGE, "compose service {name}");
        }
    }
    for (_, doc) in k8s_docs() {
        for c in containers(&doc) {
            assert_eq!(text(&c["image"], "image"), IMAGE);
        }
        if let Some(sc) = doc["spec"]["template"]["spec"].get("securityContext") {
            assert_eq!(sc["runAsUser"], uid, "pods run as the image's user");
        }
    }
}

/// The runtime stage's packages provide every shared library the binary needs.
#[test]
fn the_runtime_image_has_every_library_the_binary_links() {
    let out = Command::new(tool("readelf", "binutils"))
        .args(["-d", env!("CARGO_BIN_EXE_streamfleet")])
        .output()
        .unwrap();
    let needed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(str::to_owned))
        .collect();
    assert!(needed.contains("libc.so.6"), "{needed:?}");
    // The Debian package of each library the binary may link, as in bookworm. libc6 and
    // libgcc-s1 are in every Debian base image.
    let provider = |lib: &str| match lib {
        "libssl.so.3" | "libcrypto.so.3" => Some("libssl3"),
        "libz.so.1" => Some("zlib1g"),
        "libgcc_s.so.1" => Some("libgcc-s1"),
        "libc.so.6"
        | "libm.so.6"
        | "libdl.so.2"
        | "libpthread.so.0"
        | "librt.so.1"
        | "ld-linux-x86-64.so.2"
        | "ld-linux-aarch64.so.1" => Some("libc6"),
        _ => None,
    };
    let dockerfile = read("Dockerfile");
    let stages = stages(&dockerfile);
    let install = stages[1]
        .1
        .iter()
        .find(|i| i.contains("apt-get install"))
        .expect("the runtime stage installs packages")
        .clone();
    let installed: BTreeSet<&str> = install
        .split("&&")
        .find(|c| c.contains("apt-get install"))
        .unwrap()
        .split_whitespace()
        .filter(|w| !w.starts_with('-') && !["RUN", "apt-get", "install"].contains(w))
        .collect();
    for lib in &needed {
        let package = provider(lib).unwrap_or_else(|| {
            panic!("the binary links {lib}: add its package to the Dockerfile and this table")
        });
        assert!(
            ["libc6", "libgcc-s1"].contains(&package) || installed.contains(package),
            "the binary links {lib} from {package}, which the runtime stage does not install ({installed:?})"
        );
    }
    // On a machine of the image's release (CI: bookworm), dpkg confirms the table.
    let codename = stages[1]
        .0
        .split(':')
        .nth(1)
        .and_then(|t| t.split('-').next())
        .unwrap()
        .to_owned();
    let here = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if here.contains(&format!("VERSION_CODENAME={codename}")) {
        let ldd = Command::new("ldd")
            .arg(env!("CARGO_BIN_EXE_streamfleet"))
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let Some((lib, path)) = line.trim().split_once(" => ") else {
                continue;
            };
            let path = path.split(" (").next().unwrap();
            // dpkg knows a file by the path its package ships it at (/lib or /usr/lib,
            // before or after a symlink).
            let real = std::fs::canonicalize(path).unwrap().display().to_string();
            let candidates = [
                path.to_owned(),
                real.clone(),
                real.replacen("/usr/lib/", "/lib/", 1),
                path.replacen("/lib/", "/usr/lib/", 1),
            ];
            let package = candidates
                .iter()
                .find_map(|c| {
                    let out = Command::new("dpkg").arg("-S").arg(c).output().unwrap();
                    out.status.success().then(|| {
                        let owner = String::from_utf8_lossy(&out.stdout).into_owned();
                        owner.split(':').next().unwrap().to_owned()
                    })
                })
                .unwrap_or_else(|| panic!("dpkg knows no package of {lib} ({candidates:?})"));
            assert_eq!(Some(package.as_str()), provider(lib), "{lib} at {path}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// deploy/kubernetes

fn k8s_docs() -> Vec<(String, Value)> {
    let dir = repo().join("deploy/kubernetes");
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(".yaml"), "{name}: manifests are .yaml files");
        for doc in yaml_docs(&path) {
            docs.push((name.clone(), doc));
        }
    }
    docs
}

fn containers(doc: &Value) -> Vec<Value> {
    doc["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn of_kind<'a>(docs: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| d)
        .collect()
}

fn config_map<'a>(docs: &'a [(String, Value)], name: &str) -> &'a Value {
    of_kind(docs, "ConfigMap")
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no ConfigMap {name}"))
}

/// A container's environment as the pod gets it: ConfigMaps of `envFrom`, then `env`
/// (field references resolved to a pod name).
fn container_env(docs: &[(String, Value)], c: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let name = text(&from["configMapRef"]["name"], "configMapRef");
        for (k, v) in config_map(docs, &name)["data"].as_object().unwrap() {
            env.insert(k.clone(), text(v, k));
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = text(&e["name"], "env.name");
        let value = match (e.get("value"), e.pointer("/valueFrom/fieldRef/fieldPath")) {
            (Some(v), _) => text(v, &name),
            (None, Some(f)) if f == "metadata.name" => "booking-7d9f6c5b8-x2x7q".to_owned(),
            other => panic!("{name}: unsupported env source {other:?}"),
        };
        env.insert(name, value);
    }
    env
}

fn matches_labels(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn kubernetes_deployments_run_each_worker_as_a_well_behaved_group_member() {
    let docs = k8s_docs();
    let topology = builtin_topology();
    let served = served_paths();
    let deployments = of_kind(&docs, "Deployment");
    let names: BTreeSet<String> = deployments
        .iter()
        .map(|d| text(&d["metadata"]["name"], "name"))
        .collect();
    assert_eq!(names, WORKERS.iter().map(|w| w.to_string()).collect());

    for d in deployments {
        let w = text(&d["metadata"]["name"], "name");
        let what = format!("Deployment {w}");
        let spec = &d["spec"];
        let pod = &spec["template"];
        let labels = &pod["metadata"]["labels"];
        assert!(
            matches_labels(&spec["selector"]["matchLabels"], labels),
            "{what}: selector"
        );

        // Replicas: at least one, at most one per partition (more sit idle).
        let partitions = owned_sources(&topology, &w)
            .into_iter()
            .map(|(_, p)| p)
            .max()
            .expect("the worker owns a topic");
        let replicas = spec["replicas"].as_i64().expect("replicas");
        assert!(
            (1..=partitions as i64).contains(&replicas),
            "{what}: {replicas} replicas"
        );
        assert_eq!(spec["strategy"]["type"], "RollingUpdate", "{what}");
        assert_eq!(
            spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
            "{what}"
        );

        let c = &containers(d)[0];
        let env = container_env(&docs, c);
        let args = strings(&c["args"], &what);
        assert_eq!(args, ["worker", w.as_str()], "{what}");
        let resolved = resolve_worker(parse_as_container(&args, &env, &what), &what);
        // Static membership (and the transactional id) from the pod name.
        let instance = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "STREAMFLEET_INSTANCE_ID")
            .unwrap_or_else(|| panic!("{what}: no STREAMFLEET_INSTANCE_ID"));
        assert_eq!(
            instance.pointer("/valueFrom/fieldRef/fieldPath"),
            Some(&Value::from("metadata.name")),
            "{what}"
        );
        assert!(resolved.config.instance_id.is_some());

        // Probes: the worker's paths, on the port it listens on.
        let http_port = env
            .get("STREAMFLEET_HTTP_ADDR")
            .map(|a| a.parse::<SocketAddr>().unwrap().port())
            .unwrap_or(8080);
        let ports = c["ports"].as_array().unwrap();
        let port_of = |p: &Value| -> u16 {
            match p {
                Value::Number(n) => n.as_u64().unwrap() as u16,
                Value::String(name) => ports
                    .iter()
                    .find(|x| x["name"] == name.as_str())
                    .and_then(|x| x["containerPort"].as_u64())
                    .unwrap_or_else(|| panic!("{what}: no container port named {name}"))
                    as u16,
                other => panic!("{what}: port {other}"),
            }
        };
        for (probe, path) in [
            ("livenessProbe", "/health/live"),
            ("readinessProbe", "/health/ready"),
        ] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"], path, "{what}: {probe}");
            assert!(served.contains(path), "the worker does not serve {path}");
            assert_eq!(port_of(&get["port"]), http_port, "{what}: {probe} port");
        }
        // Scraped where the metrics are.
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{what}");
        assert_eq!(
            text(&annotations["prometheus.io/port"], "port"),
            http_port.to_string()
        );
        let metrics_path = text(&annotations["prometheus.io/path"], "path");
        assert!(served.contains(&metrics_path), "{what}: {metrics_path}");

        // Resources: requests for scheduling, a memory limit.
        let res = &c["resources"];
        assert!(
            res["requests"]["cpu"].is_string() && res["requests"]["memory"].is_string(),
            "{what}"
        );
        assert!(res["limits"]["memory"].is_string(), "{what}");

        // The kubelet's SIGKILL comes after the worker's shutdown deadline.
        let grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        assert!(
            Duration::from_secs(grace) > resolved.config.shutdown_timeout,
            "{what}: grace {grace}s, shutdown deadline {:?}",
            resolved.config.shutdown_timeout
        );

        // topics.yaml mounted where STREAMFLEET_TOPICS points, from the ConfigMap.
        let topics_file = &env["STREAMFLEET_TOPICS"];
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| topics_file.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("{what}: nothing mounted at {topics_file}"));
        let volume = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let cm = config_map(&docs, volume["configMap"]["name"].as_str().unwrap());
        let key = Path::new(topics_file)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            cm["data"].get(key).is_some(),
            "{what}: the ConfigMap has no {key}"
        );

        // One PodDisruptionBudget and one Service per worker, selecting its pods.
        let pdb = of_kind(&docs, "PodDisruptionBudget")
            .into_iter()
            .find(|p| matches_labels(&p["spec"]["selector"]["matchLabels"], labels))
            .unwrap_or_else(|| panic!("{what}: no PodDisruptionBudget"));
        assert!(
            pdb["spec"].get("maxUnavailable").is_some()
                || pdb["spec"].get("minAvailable").is_some()
        );
        let service = of_kind(&docs, "Service")
            .into_iter()
            .find(|s| matches_labels(&s["spec"]["selector"], labels))
            .unwrap_or_else(|| panic!("{what}: no Service"));
        let sp = &service["spec"]["ports"][0];
        assert_eq!(
            port_of(&sp["targetPort"]),
            http_port,
            "{what}: Service targetPort"
        );
    }
}

#[test]
fn kubernetes_config_topics_job_and_autoscaling_agree_with_the_repository() {
    let docs = k8s_docs();
    let topology = builtin_topology();

    // The ConfigMap carries topics.yaml byte for byte.
    let topics = config_map(&docs, "streamfleet-topics");
    assert_eq!(
        text(&topics["data"]["topics.yaml"], "topics.yaml"),
        read("topics.yaml"),
        "deploy/kubernetes/topics-configmap.yaml differs from topics.yaml: run scripts/sync-topics-configmap"
    );
    let brokers = text(
        &config_map(&docs, "streamfleet-config")["data"]["STREAMFLEET_BROKERS"],
        "brokers",
    );

    // kustomization.yaml lists files that exist; what it leaves out is documented there.
    let kustomization = &docs
        .iter()
        .find(|(f, _)| f == "kustomization.yaml")
        .unwrap()
        .1;
    let listed: BTreeSet<String> = strings(&kustomization["resources"], "resources")
        .into_iter()
        .collect();
    let comment = read("deploy/kubernetes/kustomization.yaml");
    for (file, _) in &docs {
        if file == "kustomization.yaml" {
            continue;
        }
        assert!(
            listed.contains(file) || comment.contains(file.as_str()),
            "{file} is neither in kustomization.yaml nor mentioned there"
        );
    }
    for f in &listed {
        assert!(
            repo().join("deploy/kubernetes").join(f).is_file(),
            "{f} is missing"
        );
    }

    // The provisioning Job applies the mounted file to the production cluster (no capping).
    let job = of_kind(&docs, "Job")[0];
    let c = &containers(job)[0];
    let args = strings(&c["args"], "job args");
    let cli = parse_as_container(&args, &container_env(&docs, c), "topics Job");
    let Sub::Topics(TopicsCommand::Apply { args: apply, yes }) = cli.command else {
        panic!("the Job must run `topics apply`")
    };
    assert!(
        yes && !apply.cap_replication && !apply.allow_delete,
        "{args:?}"
    );
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");

    // Autoscaling on lag: the booking Deployment, its group, its source topic, never more
    // replicas than partitions.
    let scaled = of_kind(&docs, "ScaledObject")[0];
    let target = text(&scaled["spec"]["scaleTargetRef"]["name"], "target");
    assert!(
        of_kind(&docs, "Deployment")
            .iter()
            .any(|d| d["metadata"]["name"] == target.as_str())
    );
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "kafka");
    let meta = &trigger["metadata"];
    assert_eq!(text(&meta["bootstrapServers"], "bootstrapServers"), brokers);
    assert_eq!(
        text(&meta["consumerGroup"], "group"),
        format!("streamfleet-{target}")
    );
    let topic = text(&meta["topic"], "topic");
    let (_, partitions) = owned_sources(&topology, &target)
        .into_iter()
        .find(|(t, _)| *t == topic)
        .unwrap_or_else(|| panic!("{target} does not own {topic}"));
    let max = scaled["spec"]["maxReplicaCount"].as_i64().unwrap();
    assert!(
        max <= partitions as i64,
        "maxReplicaCount {max} > {partitions} partitions"
    );
    assert!(scaled["spec"]["minReplicaCount"].as_i64().unwrap() >= 1);

    // The ServiceMonitor scrapes the Services' metrics port under the alert rules' job name.
    let monitor = of_kind(&docs, "ServiceMonitor")[0];
    let selector = &monitor["spec"]["selector"]["matchLabels"];
    let job_label = text(&monitor["spec"]["jobLabel"], "jobLabel");
    let endpoint = &monitor["spec"]["endpoints"][0];
    let services = of_kind(&docs, "Service");
    let selected: Vec<_> = services
        .iter()
        .filter(|s| matches_labels(selector, &s["metadata"]["labels"]))
        .collect();
    assert_eq!(
        selected.len(),
        WORKERS.len(),
        "the ServiceMonitor selects every worker"
    );
    for s in selected {
        assert_eq!(
            s["metadata"]["labels"][&job_label], "streamfleet",
            "job label"
        );
        assert!(
            s["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == endpoint["port"])
        );
    }
    assert!(served_paths().contains(endpoint["path"].as_str().unwrap()));
}
