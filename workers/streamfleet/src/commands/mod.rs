//! One module per subcommand.

use streamfleet_runtime::config::KafkaArgs;
use streamfleet_runtime::properties::KafkaProperty;

pub mod demo;
mod demo_view;
pub mod dev_cluster;
pub mod dlq;
pub mod lag;
pub mod probe;
pub mod produce;
pub mod schemas;
pub mod sequence;
pub mod topics;
pub mod worker;

/// The brokers and properties of a command that needs a cluster, checked, once one of the
/// brokers has accepted a connection (within `--connect-timeout`; see
/// [`streamfleet_runtime::reach`]).
pub(crate) fn connect(kafka: &KafkaArgs) -> anyhow::Result<(String, Vec<KafkaProperty>)> {
    let (brokers, props) = kafka.cluster()?;
    streamfleet_runtime::reach::check(&brokers, kafka.connect_timeout)?;
    Ok((brokers, props))
}
