//! `streamfleet produce`: the load generator on its own, against any cluster.

use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use streamfleet_runtime::clients;
use streamfleet_schemas::Encoding;

use crate::cli::ProduceArgs;
use crate::loadgen::{self, Generator, Limit};
use crate::signals;

/// What `produce` prints on stdout: how many records of each kind it wrote.
#[derive(serde::Serialize)]
struct Produced<'a> {
    records: u64,
    kinds: &'a std::collections::BTreeMap<loadgen::Kind, u64>,
}

/// Produces; prints how many records of each kind it wrote, as JSON on stdout.
pub async fn run(args: ProduceArgs) -> anyhow::Result<i32> {
    let topics = args.topic_names.topics();
    let encoding = Encoding::new(args.registry.schema_registry_url.as_deref());
    let mut generator = Generator::new(args.load.config(), &topics, &encoding)?;
    let (brokers, props) = super::connect(&args.kafka)?;
    let producer: FutureProducer =
        clients::tool_producer(&brokers, &props, "streamfleet-produce").create()?;
    let limit = match (args.count, args.duration) {
        (Some(n), _) => Limit::Count(n),
        (None, Some(d)) => Limit::Duration(d),
        (None, None) => Limit::Duration(Duration::MAX),
    };
    let stop = signals::shutdown_on_signals()?;
    let started = Instant::now();
    let mut last = Instant::now();
    let sent = loadgen::produce(
        &producer,
        &mut generator,
        &topics,
        limit,
        args.rate,
        &stop,
        |n| {
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                eprintln!(
                    "produced {n} records ({:.0}/s)",
                    n as f64 / started.elapsed().as_secs_f64()
                );
            }
        },
    )
    .await?;
    eprintln!(
        "produced {sent} records in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let tally = generator.tally();
    let produced = Produced {
        records: tally.total(),
        kinds: &tally.kinds,
    };
    println!("{}", serde_json::to_string_pretty(&produced)?);
    Ok(0)
}
