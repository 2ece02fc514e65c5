//! `streamfleet lag`: a standalone lag exporter.

use std::sync::Arc;

use prometheus::Encoder;
use streamfleet_runtime::health::Health;
use streamfleet_runtime::metrics::Metrics;
use streamfleet_runtime::{CancellationToken, http};

use crate::cli::LagArgs;
use crate::lag::{GroupLag, LagReader};
use crate::{fleet, signals};

/// Runs the exporter; returns the exit code.
pub async fn run(args: LagArgs) -> anyhow::Result<i32> {
    let topics: Vec<String> = if args.topics.is_empty() {
        let topology = fleet::topology(args.topics_file.topics_file.as_deref())?;
        topology.topics.iter().map(|t| t.name.clone()).collect()
    } else {
        args.topics.clone()
    };
    let (brokers, props) = super::connect(&args.kafka)?;
    let reader = Arc::new(LagReader::new(&brokers, &props, &args.group)?);
    let metrics = Metrics::default();
    let read = |reader: Arc<LagReader>, topics: Vec<String>| async move {
        tokio::task::spawn_blocking(move || reader.read(&topics)).await?
    };
    if args.once {
        let lag = read(reader.clone(), topics.clone()).await?;
        if lag.is_empty() {
            anyhow::bail!(
                "group `{}` has committed no offset on {}: check the group id \
                 (`streamfleet topics describe` lists the groups reading the fleet's topics) \
                 and --topic",
                args.group,
                topics.join(", ")
            );
        }
        reader.publish(&metrics, &lag, &GroupLag::new());
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&metrics.registry().gather(), &mut out)?;
        print!("{}", String::from_utf8_lossy(&out));
        return Ok(0);
    }
    let health = Health::default();
    let component = health.component(&format!("lag/{}", args.group));
    let stop = signals::shutdown_on_signals()?;
    let http_stop = CancellationToken::new();
    let (addr, server) = http::serve(
        args.http_addr,
        metrics.registry().clone(),
        health.clone(),
        http_stop.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen on --http-addr {}: {e}", args.http_addr))?;
    tracing::info!(group = %args.group, %addr, topics = topics.len(), "exporting lag");
    let mut previous = GroupLag::new();
    let mut tick = tokio::time::interval(args.interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match read(reader.clone(), topics.clone()).await {
            Ok(lag) => {
                reader.publish(&metrics, &lag, &previous);
                component.set_ready(true, format!("{} topics with committed offsets", lag.len()));
                previous = lag;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the lag failed; keeping the last values");
                component.set_ready(false, e.to_string());
            }
        }
    }
    http_stop.cancel();
    let _ = server.await;
    Ok(0)
}
