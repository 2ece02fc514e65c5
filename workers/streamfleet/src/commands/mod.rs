//! One module per subcommand.

pub mod demo;
pub mod dlq;
pub mod lag;
pub mod probe;
pub mod produce;
pub mod schemas;
pub mod sequence;
pub mod topics;
pub mod worker;
