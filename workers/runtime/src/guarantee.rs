//! The processing guarantee of a transaction group, as a type: at least once carries nothing,
//! exactly once carries the group's [`Transactions`]. Code whose behaviour differs by guarantee
//! asks this type (or matches on it) instead of testing whether a transaction happens to be
//! present, so an exactly-once path can never run without its transaction.

use std::sync::Arc;

use tokio::sync::RwLockReadGuard;
use tokio_util::sync::CancellationToken;

use crate::transactions::Transactions;

/// How a transaction group's records become committed progress.
#[derive(Clone)]
pub(crate) enum Guarantee {
    /// Offsets commit once every output of a record is acknowledged.
    AtLeastOnce,
    /// Outputs, state changes and offsets commit in the group's open transaction.
    ExactlyOnce(Arc<Transactions>),
}

/// The lane was stopped while it waited for a commit to release the transaction's gate.
pub(crate) struct StoppedAtGate;

impl Guarantee {
    /// Whether records commit in transactions.
    pub fn is_exactly_once(&self) -> bool {
        matches!(self, Guarantee::ExactlyOnce(_))
    }

    /// Exactly once: the group's transaction.
    pub fn transactions(&self) -> Option<&Arc<Transactions>> {
        match self {
            Guarantee::AtLeastOnce => None,
            Guarantee::ExactlyOnce(txns) => Some(txns),
        }
    }

    /// Exactly once: holds the transaction's gate (shared) for one record, so no commit cuts
    /// through it. Uncontended this is one atomic; only while a commit holds or awaits the
    /// gate does the lane queue behind it (`try_read` fails then, so a commit is never
    /// starved) and watch `stop`: registering with the token takes a lock, too much to pay
    /// per record. At least once there is nothing to hold.
    pub async fn enter(
        &self,
        stop: &CancellationToken,
    ) -> Result<Option<RwLockReadGuard<'_, ()>>, StoppedAtGate> {
        let Guarantee::ExactlyOnce(txns) = self else {
            return Ok(None);
        };
        if let Ok(gate) = txns.gate.try_read() {
            return Ok(Some(gate));
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => Err(StoppedAtGate),
            gate = txns.gate.read() => Ok(Some(gate)),
        }
    }

    /// Exactly once: a record's outputs joined the open transaction.
    pub fn note_record(&self) {
        if let Guarantee::ExactlyOnce(txns) = self {
            txns.note_record();
        }
    }

    /// Exactly once: the open transaction failed under a lane; abort it now.
    pub fn request_abort(&self) {
        if let Guarantee::ExactlyOnce(txns) = self {
            txns.request_abort();
        }
    }
}
