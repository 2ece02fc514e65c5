//! The one trait a domain implements, and the errors that tell the runtime what to do next.
//!
//! A lane calls [`Processor::decode`] on the raw bytes, then [`Processor::process`] with the
//! partition's state. The result decides the record's route:
//!
//! ```text
//!   decode ──Err(Malformed)──────────────────────────────► <topic>-dlt
//!     │
//!   process ─Ok(Emit(outputs))──► produce outputs ─acked─► offset committable
//!     │      Ok(ReplayDropped)──────────────────────────► offset committable
//!     │      Err(Transient)────► next retry rung, or <topic>-dlt when attempts are exhausted
//!     │      Err(Permanent)────────────────────────────► <topic>-dlt
//!     └──────Err(Malformed)────────────────────────────► <topic>-dlt
//! ```
//!
//! A processor must only change its state when it returns `Ok`: the runtime retries or
//! dead-letters a failed record as if it had never been seen.

use std::future::Future;

use crate::record::{OutputRecord, RawRecord, Record};
use crate::store::StateStore;

/// What a domain worker does with one record of one partition.
///
/// Records of one partition arrive strictly in offset order, one at a time; different
/// partitions are processed concurrently, each with its own `State`.
pub trait Processor: Send + Sync + 'static {
    /// The decoded form of an input record.
    type Input: Send + 'static;
    /// Per-partition state: restored from the source's changelog (or empty) when a partition
    /// is assigned, dropped on revoke; every change it records goes to the changelog (see
    /// [`crate::store`]).
    type State: StateStore;

    /// A new, empty state for a partition (before its changelog is restored into it). The
    /// default is `State::default()`; a processor whose state takes settings (a retention)
    /// builds it here.
    fn new_state(&self) -> Self::State {
        Self::State::default()
    }

    /// Decodes the raw record. Undecodable bytes are [`ProcessError::Malformed`].
    fn decode(&self, record: &RawRecord) -> Result<Self::Input, ProcessError>;

    /// Processes one decoded record against its partition's state.
    fn process(
        &self,
        state: &mut Self::State,
        record: &Record<'_, Self::Input>,
    ) -> impl Future<Output = Result<Outcome, ProcessError>> + Send;
}

/// The result of processing a record successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Produce these records (possibly none); the input's offset is committed once all are
    /// acknowledged by the broker.
    Emit(Vec<OutputRecord>),
    /// The record repeats one already applied (an exact replay); it is dropped and counted.
    ReplayDropped,
}

/// Why a record could not be processed, and so where it goes next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// Might succeed later (a timeout, a dependency that is down): retry after a backoff,
    /// dead-letter once the attempts are exhausted.
    #[error("transient failure: {0}")]
    Transient(String),
    /// Will never succeed for this record (a business rule rejects it): dead-letter it now.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The bytes are not a record this worker understands: dead-letter it now.
    #[error("malformed record: {0}")]
    Malformed(String),
}

impl ProcessError {
    /// The error's class, which decides its route.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProcessError::Transient(_) => ErrorClass::Transient,
            ProcessError::Permanent(_) => ErrorClass::Permanent,
            ProcessError::Malformed(_) => ErrorClass::Malformed,
        }
    }

    /// The human-readable reason, without the class prefix.
    pub fn message(&self) -> &str {
        match self {
            ProcessError::Transient(m)
            | ProcessError::Permanent(m)
            | ProcessError::Malformed(m) => m,
        }
    }
}

/// The class of a failure as written into the `error.class` header of retry and dead-letter
/// records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// Retriable failure.
    Transient,
    /// Business-rule rejection.
    Permanent,
    /// Undecodable input.
    Malformed,
    /// A transient failure that ran out of attempts.
    RetriesExhausted,
}

impl ErrorClass {
    /// Every class, in a stable order.
    pub const ALL: [ErrorClass; 4] = [
        ErrorClass::Transient,
        ErrorClass::Permanent,
        ErrorClass::Malformed,
        ErrorClass::RetriesExhausted,
    ];

    /// The class's position in [`ErrorClass::ALL`].
    pub const fn index(self) -> usize {
        match self {
            ErrorClass::Transient => 0,
            ErrorClass::Permanent => 1,
            ErrorClass::Malformed => 2,
            ErrorClass::RetriesExhausted => 3,
        }
    }

    /// The header and label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Malformed => "malformed",
            ErrorClass::RetriesExhausted => "retries-exhausted",
        }
    }

    /// Parses the header spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
