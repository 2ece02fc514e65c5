//! What the fetcher has handed to one lane since its partition was assigned (or rewound),
//! and what it makes of the next record's offset.

/// The offsets a partition has handed to its lane since it was assigned (or rewound).
///
/// Offsets only grow within an assignment (transaction markers leave gaps), so a record below
/// `next` is one the client delivered again: librdkafka has had several such bugs around
/// pause, resume and seek (confluentinc/librdkafka#1802, #2593, #4637). Its lane has the first
/// delivery already, so processing it again would duplicate its outputs (twice in one
/// committed transaction, exactly once); it is dropped and counted instead.
pub(crate) struct Position {
    /// The first offset: where an abort rewinds a partition that has no commit yet.
    pub first: i64,
    /// One past the last offset handed over.
    next: i64,
    /// Redelivered records dropped since the last record handed over.
    dropping: u64,
}

/// What [`Position::observe`] made of an offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Observed {
    /// A new record: hand it over.
    Next,
    /// Handed over already: drop it.
    Redelivered { first_of_run: bool },
    /// A new record after `dropped` redelivered ones.
    NextAfterRedelivered { dropped: u64 },
}

impl Position {
    /// The position of a partition whose first record is at `offset`.
    pub fn new(offset: i64) -> Self {
        Self {
            first: offset,
            next: offset + 1,
            dropping: 0,
        }
    }

    /// One past the last offset handed over.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// Takes the next record's offset.
    pub fn observe(&mut self, offset: i64) -> Observed {
        if offset < self.next {
            self.dropping += 1;
            return Observed::Redelivered {
                first_of_run: self.dropping == 1,
            };
        }
        self.next = offset + 1;
        match std::mem::take(&mut self.dropping) {
            0 => Observed::Next,
            dropped => Observed::NextAfterRedelivered { dropped },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Observed, Position};

    #[test]
    fn offsets_below_the_position_are_redeliveries_and_gaps_are_not() {
        let mut p = Position::new(10);
        assert_eq!(p.observe(11), Observed::Next);
        // Transaction markers leave gaps.
        assert_eq!(p.observe(14), Observed::Next);
        assert_eq!(p.observe(10), Observed::Redelivered { first_of_run: true });
        assert_eq!(
            p.observe(11),
            Observed::Redelivered {
                first_of_run: false
            }
        );
        assert_eq!(
            p.observe(14),
            Observed::Redelivered {
                first_of_run: false
            }
        );
        assert_eq!(p.observe(15), Observed::NextAfterRedelivered { dropped: 3 });
        assert_eq!(p.observe(16), Observed::Next);
        assert_eq!(p.first, 10);
    }
}
