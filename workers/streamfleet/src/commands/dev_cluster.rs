//! `streamfleet dev-cluster`: librdkafka's mock cluster as a standalone process, for any
//! Kafka client on this machine (kcat, confluent-kafka, workers, `streamfleet-bench`).
//!
//! The bootstrap servers are the first and only line on stdout, so scripts can read them:
//! `B=$(streamfleet dev-cluster & ...)`; everything else goes to stderr. The topics of the
//! topics file (declared and derived, replication capped to the broker count) and any
//! `--topic NAME:PARTITIONS` are created before that line is printed. Clients can also create
//! topics by producing to them (the mock auto-creates with its default partition count), but
//! not through the AdminClient (see DEVELOPERS.md). `--embedded-rtt` delays every broker response, so
//! clients can be watched over something like a network (the mock otherwise answers in
//! microseconds). Runs until SIGTERM/SIGINT; records live in memory and are gone when it
//! stops.

use std::io::Write as _;

use streamfleet_runtime::embedded::EmbeddedCluster;

use crate::cli::DevClusterArgs;
use crate::{fleet, signals};

/// Runs the cluster until a signal; returns the exit code.
pub async fn run(args: DevClusterArgs) -> anyhow::Result<i32> {
    let cluster = EmbeddedCluster::start(args.embedded_brokers)?;
    if !args.embedded_rtt.is_zero() {
        cluster.set_round_trip_time(args.embedded_rtt)?;
    }
    let mut created = 0usize;
    if !args.no_topics {
        let topology = fleet::topology(args.topics.topics_file.as_deref())?;
        cluster.create_topology(&topology)?;
        created += topology.topics.len();
    }
    for (name, partitions) in &args.extra_topics {
        cluster.create_topic(name, *partitions, args.embedded_brokers.min(3))?;
        created += 1;
    }
    let stop = signals::shutdown_on_signals()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", cluster.bootstrap_servers())?;
    stdout.flush()?;
    drop(stdout);
    let rtt = if args.embedded_rtt.is_zero() {
        String::new()
    } else {
        format!(
            ", every response delayed {} ms",
            args.embedded_rtt.as_millis()
        )
    };
    eprintln!(
        "dev-cluster: {} broker(s) at {}, {created} topic(s) created{rtt}; in memory, until \
         SIGTERM/SIGINT. It has no admin API for topics: `streamfleet topics` needs Apache Kafka, \
         and a client creates a topic here by producing to it.",
        cluster.brokers(),
        cluster.bootstrap_servers()
    );
    stop.cancelled().await;
    drop(cluster);
    eprintln!("dev-cluster: stopped");
    Ok(0)
}
