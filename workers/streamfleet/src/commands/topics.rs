//! `streamfleet topics plan | apply | describe | list`.

use std::io::{BufRead, IsTerminal, Write};

use streamfleet_runtime::config::{KafkaArgs, TopicsArgs};
use streamfleet_runtime::topology::Topology;

use crate::cli::{ProvisionArgs, TopicsCommand};
use crate::fleet;
use crate::provision::cluster::Cluster;
use crate::provision::plan::{self, Plan, PlanOptions};
use crate::provision::render;

/// Prints `name:partitions` for every topic, declared and derived.
pub fn list(args: &TopicsArgs) -> anyhow::Result<i32> {
    let topology = fleet::topology(args.topics_file.as_deref())?;
    for t in &topology.topics {
        println!("{}:{}", t.name, t.partitions);
    }
    Ok(0)
}

fn connect(kafka: &KafkaArgs) -> anyhow::Result<(String, Cluster)> {
    let (brokers, props) = super::connect(kafka)?;
    let cluster = Cluster::connect(&brokers, &props)?;
    Ok((brokers, cluster))
}

fn file_name(args: &TopicsArgs) -> String {
    args.topics_file.as_ref().map_or_else(
        || "topics.yaml (built in)".to_owned(),
        |p| p.display().to_string(),
    )
}

async fn make_plan(args: &ProvisionArgs) -> anyhow::Result<(Topology, Cluster, String, Plan)> {
    let topology = fleet::topology(args.topics.topics_file.as_deref())?;
    let (brokers, cluster) = connect(&args.kafka)?;
    let state = cluster.describe(&topology).await?;
    let options = PlanOptions {
        allow_delete: args.allow_delete,
        cap_replication: args.cap_replication,
    };
    let p = plan::plan(&topology, &state, options);
    let header = format!(
        "{} against {brokers} ({} brokers)",
        file_name(&args.topics),
        state.brokers
    );
    Ok((topology, cluster, header, p))
}

fn show(header: &str, p: &Plan, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(p)?);
    } else {
        println!("{header}:");
        print!("{}", render::plan(p));
    }
    Ok(())
}

/// Runs `plan`, `apply` or `describe`; returns the exit code.
pub async fn run(cmd: TopicsCommand) -> anyhow::Result<i32> {
    match cmd {
        TopicsCommand::Plan {
            args,
            detailed_exitcode,
        } => {
            // With --detailed-exitcode, 2 means "changes pending": every error must be 1.
            let (_, _, header, p) = match make_plan(&args).await {
                Ok(planned) => planned,
                Err(e) if detailed_exitcode => {
                    eprintln!("error: {e:#}");
                    return Ok(1);
                }
                Err(e) => return Err(e),
            };
            show(&header, &p, args.json)?;
            Ok(
                match (p.errors.is_empty(), p.has_changes(), detailed_exitcode) {
                    (false, _, _) => 1,
                    (true, true, true) => 2,
                    _ => 0,
                },
            )
        }
        TopicsCommand::Apply { args, yes } => apply(args, yes).await,
        TopicsCommand::Describe {
            kafka,
            topics,
            json,
        } => describe(&kafka, &topics, json).await,
        TopicsCommand::List { topics } => list(&topics),
    }
}

async fn apply(args: ProvisionArgs, yes: bool) -> anyhow::Result<i32> {
    let (topology, cluster, header, p) = make_plan(&args).await?;
    show(&header, &p, args.json)?;
    if !p.errors.is_empty() {
        eprintln!("nothing applied: fix the errors above first");
        return Ok(1);
    }
    if !p.has_changes() {
        println!("No changes: the cluster matches the file.");
        return Ok(0);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("refusing to apply without confirmation: pass --yes");
            return Ok(1);
        }
        print!(
            "Apply these {} changes? Type yes to continue: ",
            p.actions.len()
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            println!("Not applied.");
            return Ok(1);
        }
    }
    let result = cluster.apply(&p.actions).await;
    let applied = match result {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(1);
        }
    };
    for line in &applied {
        println!("  {line}");
    }
    cluster.settle(&p.actions)?;
    let state = cluster.describe(&topology).await?;
    let options = PlanOptions {
        allow_delete: args.allow_delete,
        cap_replication: args.cap_replication,
    };
    let after = plan::plan(&topology, &state, options);
    if after.has_changes() || !after.errors.is_empty() {
        println!("The cluster still differs from the file:");
        print!("{}", render::plan(&after));
        return Ok(1);
    }
    println!(
        "Applied {} changes; the cluster now matches the file ({} topics).",
        applied.len(),
        topology.topics.len()
    );
    Ok(0)
}

async fn describe(kafka: &KafkaArgs, topics: &TopicsArgs, json: bool) -> anyhow::Result<i32> {
    let topology = fleet::topology(topics.topics_file.as_deref())?;
    let (brokers, cluster) = connect(kafka)?;
    let state = cluster.describe(&topology).await?;
    let fleet_topics: std::collections::BTreeMap<_, _> = state
        .topics
        .iter()
        .filter(|(name, _)| topology.get(name).is_some())
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    let groups = tokio::task::block_in_place(|| cluster.groups_reading(&fleet_topics))?;
    if json {
        let missing: Vec<&str> = topology
            .topics
            .iter()
            .map(|t| t.name.as_str())
            .filter(|n| !fleet_topics.contains_key(*n))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "brokers": state.brokers, "topics": fleet_topics, "missing": missing, "groups": groups,
            }))?
        );
        return Ok(0);
    }
    println!("{brokers}: {} brokers", state.brokers);
    for spec in &topology.topics {
        match fleet_topics.get(&spec.name) {
            None => println!("  {:<36} missing (topics apply creates it)", spec.name),
            Some(t) => {
                let managed: Vec<String> = spec
                    .configs
                    .keys()
                    .filter_map(|k| t.configs.get(k).map(|c| format!("{k}={}", c.value)))
                    .collect();
                println!(
                    "  {:<36} {:>3} partitions, replication {}  {}",
                    spec.name,
                    t.partitions,
                    t.replication_factor,
                    managed.join(" ")
                );
            }
        }
    }
    if groups.is_empty() {
        println!("no consumer group has committed offsets on these topics");
    }
    for g in &groups {
        let lags: Vec<String> = g.lag.iter().map(|(t, l)| format!("{t} lag {l}")).collect();
        println!("  group {} ({}): {}", g.group, g.state, lags.join(", "));
    }
    Ok(0)
}
