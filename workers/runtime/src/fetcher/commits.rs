//! At least once: the offsets each lane may commit (every record before them acknowledged).
//! The commits themselves are [`crate::committer`]'s.

use super::*;

impl<P: Processor> FetchContext<P> {
    /// Every lane's committable offset that is ahead of the committed one.
    pub(super) fn due_offsets(&self) -> Offsets {
        self.lanes
            .iter()
            .map(|l| {
                (
                    l.key().clone(),
                    l.shared.committable.load(Ordering::Acquire),
                )
            })
            .filter(|(tp, offset)| self.progress.is_ahead(tp, *offset))
            .collect()
    }
}
