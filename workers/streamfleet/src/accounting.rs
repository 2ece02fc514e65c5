//! What the workers should have consumed for a generated load, and whether every record
//! they consumed has an outcome.

use streamfleet_runtime::metrics::StatsSnapshot;

use crate::fleet::WorkerKind;
use crate::loadgen::{Kind, Stream, Tally};

/// Records a worker must consume: the generated records of its input topic, the records
/// other workers produce into it, every retry it scheduled itself, and every record it
/// parked behind its key.
pub fn expected_consumed(kind: WorkerKind, tally: &Tally, own: &StatsSnapshot) -> u64 {
    let generated = match kind {
        WorkerKind::Booking => tally.stream(Stream::Booking),
        // The booking worker reserves for every new booking and releases for every cancellation.
        WorkerKind::Inventory => {
            tally.stream(Stream::Inventory)
                + tally.count(Kind::BookingPending)
                + tally.count(Kind::BookingCancelled)
        }
        WorkerKind::Payment => tally.stream(Stream::Payment),
        WorkerKind::Passthrough => 0,
    };
    // A retried record is consumed again from its rung, a parked one again when its key's
    // turn comes.
    generated + own.retried + own.parked
}

/// Every consumed record has exactly one outcome.
pub fn outcomes_complete(s: &StatsSnapshot) -> bool {
    s.consumed == s.succeeded + s.retried + s.dead_lettered + s.replay_dropped + s.parked
}
