//! One module per subcommand.

pub mod bench;
pub mod bench_worker;
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
