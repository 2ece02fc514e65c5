//! `streamfleet topics`: the topic design as the binary sees it.

use streamfleet_runtime::config::TopicsArgs;

use crate::fleet;

/// Prints `name:partitions` for every topic, declared and derived.
pub fn list(args: &TopicsArgs) -> anyhow::Result<i32> {
    let topology = fleet::topology(args.topics_file.as_deref())?;
    for t in &topology.topics {
        println!("{}:{}", t.name, t.partitions);
    }
    Ok(0)
}
