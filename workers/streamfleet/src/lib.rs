//! The `streamfleet` command as a library: the integration tests drive the same code the
//! binary runs.

pub mod accounting;
pub mod cli;
pub mod commands;
pub mod delivery;
pub mod dlq;
pub mod fleet;
pub mod hints;
pub mod lag;
pub mod loadgen;
pub mod process;
pub mod provision;
pub mod reader;
pub mod signals;
pub mod verify;
