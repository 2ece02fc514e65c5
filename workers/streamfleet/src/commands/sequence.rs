//! `streamfleet seed` and `streamfleet verify`.

use rdkafka::producer::FutureProducer;
use streamfleet_runtime::clients;

use crate::cli::{SeedArgs, VerifyArgs};
use crate::verify;

/// Runs `seed`.
pub async fn seed(args: SeedArgs) -> anyhow::Result<i32> {
    let (brokers, props) = super::connect(&args.kafka)?;
    let producer: FutureProducer =
        clients::tool_producer(&brokers, &props, "streamfleet-seed").create()?;
    let n = verify::seed(
        &producer,
        &args.topic,
        args.start,
        args.count,
        args.keys,
        args.rate,
        |n| {
            if n % 100_000 == 0 {
                eprintln!("seeded {n} records");
            }
        },
    )
    .await?;
    eprintln!(
        "seeded {n} records over {} keys into {}",
        args.keys, args.topic
    );
    Ok(0)
}

/// Runs `verify`; exit 1 on any anomaly.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<i32> {
    let (brokers, props) = super::connect(&args.kafka)?;
    let (input, output, wait) = (args.input.clone(), args.output.clone(), args.wait_stable);
    let report = tokio::task::spawn_blocking(move || {
        verify::verify(&brokers, &props, &input, &output, wait)
    })
    .await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let c = &report.comparison;
        println!(
            "input {} records over {} keys; output {} records (read_committed), {} more seen read_uncommitted (aborted)",
            report.input_records, c.keys, report.output_records, report.output_aborted_filtered
        );
        println!(
            "missing {}, duplicated {}, out of order {}, unexpected {}, hanging transactions {}, repeated input {}",
            c.missing,
            c.duplicated,
            c.out_of_order,
            c.unexpected,
            report.hanging.len(),
            c.input_duplicates
        );
        for s in c.samples.iter().chain(report.hanging.iter()) {
            println!("  {s}");
        }
    }
    if report.anomalies() > 0 {
        println!("FAILED: {} anomalies", report.anomalies());
        return Ok(1);
    }
    println!("OK: every input record is in the output exactly once, in per-key order");
    Ok(0)
}
