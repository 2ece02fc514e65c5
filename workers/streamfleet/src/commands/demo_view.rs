//! What `streamfleet demo` shows: the live table while the load runs, the checks that prove
//! the run, and the final report.
//!
//! On a terminal the table is redrawn in place every second; off a terminal (a pipe, a CI
//! log) it is printed as plain lines every [`PLAIN_EVERY`], so a log stays short and free of
//! control codes. Per-record events are not shown: their counts are the table's columns.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use streamfleet_runtime::metrics::StatsSnapshot;

use crate::accounting::{expected_consumed, outcomes_complete};
use crate::fleet::WorkerKind;
use crate::loadgen::{Kind, Stream, Tally};

/// Off a terminal, the table is printed this often.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// `12345` as `12,345`.
fn n(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The per-second table of the workers, redrawn in place on a terminal.
pub struct LiveTable {
    terminal: bool,
    drawn: usize,
    last_plain: Option<Instant>,
}

/// One worker's row: its counters now and its consumption rate over the last interval.
pub struct Row {
    pub kind: WorkerKind,
    pub now: StatsSnapshot,
    pub consumed_per_s: f64,
}

impl LiveTable {
    pub fn new() -> Self {
        Self {
            terminal: std::io::stdout().is_terminal(),
            drawn: 0,
            last_plain: None,
        }
    }

    /// Shows the rows; off a terminal only every [`PLAIN_EVERY`] unless `force`.
    pub fn show(&mut self, elapsed: Duration, of: Duration, rate: u64, rows: &[Row], force: bool) {
        if !self.terminal {
            if !force && self.last_plain.is_some_and(|t| t.elapsed() < PLAIN_EVERY) {
                return;
            }
            self.last_plain = Some(Instant::now());
        }
        let text = render(elapsed, of, rate, rows);
        let mut out = std::io::stdout().lock();
        if self.terminal && self.drawn > 0 {
            // Back to the first line of the last table, and clear from there down.
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        self.drawn = text.lines().count();
    }
}

fn render(elapsed: Duration, of: Duration, rate: u64, rows: &[Row]) -> String {
    let mut t = String::new();
    let load = if elapsed < of {
        format!("generating {} records/s for {}s", n(rate), of.as_secs())
    } else {
        "load finished".to_owned()
    };
    let _ = writeln!(t, "t={:>3}s  {load}", elapsed.as_secs());
    let _ = writeln!(
        t,
        "  {:<10}{:>9}{:>11}{:>9}   {:<26}{:>9}{:>11}",
        "", "records", "records", "sent to", "dead-lettered, by reason", "replays", "lag"
    );
    let _ = writeln!(
        t,
        "  {:<10}{:>9}{:>11}{:>9}   {:>10}{:>6}{:>10}{:>9}{:>11}",
        "worker",
        "in per s",
        "succeeded",
        "a retry",
        "malformed",
        "rule",
        "exhausted",
        "dropped",
        "(records)"
    );
    for r in rows {
        let d = r.now.dead_lettered_by_class;
        let _ = writeln!(
            t,
            "  {:<10}{:>9}{:>11}{:>9}   {:>10}{:>6}{:>10}{:>9}{:>11}",
            r.kind.name(),
            n(r.consumed_per_s.round() as u64),
            n(r.now.succeeded),
            n(r.now.retried),
            n(d.malformed),
            n(d.permanent),
            n(d.retries_exhausted),
            n(r.now.replay_dropped),
            n(r.now.lag.max(0) as u64),
        );
    }
    t
}

/// One thing the run proves.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// Whether it held.
    pub passed: bool,
    /// What it says, with the numbers.
    pub claim: String,
}

fn check(passed: bool, claim: String) -> Check {
    Check { passed, claim }
}

fn stat(workers: &BTreeMap<&'static str, StatsSnapshot>, kind: WorkerKind) -> StatsSnapshot {
    workers.get(kind.name()).copied().unwrap_or_default()
}

/// The checks of a run that generated `tally` and ended with `workers`' totals.
pub fn checks(tally: &Tally, workers: &BTreeMap<&'static str, StatsSnapshot>) -> Vec<Check> {
    let (b, i, p) = (
        stat(workers, WorkerKind::Booking),
        stat(workers, WorkerKind::Inventory),
        stat(workers, WorkerKind::Payment),
    );
    let all_complete = [b, i, p].iter().all(outcomes_complete);
    let c = |k| tally.count(k);
    let inventory_expected = expected_consumed(WorkerKind::Inventory, tally, &i);
    vec![
        check(
            all_complete,
            "every consumed record has exactly one outcome (the rows above add up)".into(),
        ),
        check(
            i.consumed == inventory_expected,
            format!(
                "inventory consumed its {} generated records, {} reservations (one per new \
                 booking), {} releases (one per cancellation) and {} of its own retries and \
                 parked records: {}",
                n(tally.stream(Stream::Inventory)),
                n(c(Kind::BookingPending)),
                n(c(Kind::BookingCancelled)),
                n(i.retried + i.parked),
                n(inventory_expected)
            ),
        ),
        check(
            b.replay_dropped == c(Kind::BookingReplay)
                && p.replay_dropped == c(Kind::PaymentReplay),
            format!(
                "every replayed event was dropped, none processed twice: bookings {} of {}, \
                 payments {} of {} (no double charge)",
                n(b.replay_dropped),
                n(c(Kind::BookingReplay)),
                n(p.replay_dropped),
                n(c(Kind::PaymentReplay))
            ),
        ),
        check(
            b.dead_lettered_by_class.malformed == c(Kind::BookingMalformed)
                && i.dead_lettered_by_class.malformed == c(Kind::InventoryMalformed)
                && p.dead_lettered_by_class.malformed == c(Kind::PaymentMalformed),
            format!(
                "every malformed record, and no other, was dead-lettered as malformed: \
                 booking {}, inventory {}, payment {}",
                n(b.dead_lettered_by_class.malformed),
                n(i.dead_lettered_by_class.malformed),
                n(p.dead_lettered_by_class.malformed)
            ),
        ),
        check(
            b.dead_lettered_by_class.permanent == c(Kind::BookingInvalid) + c(Kind::BookingIllegal)
                && p.dead_lettered_by_class.permanent == c(Kind::PaymentInvalid),
            format!(
                "every record breaking a business rule, and no valid one, was dead-lettered: \
                 booking {} ({} invalid + {} illegal transitions), payment {}",
                n(b.dead_lettered_by_class.permanent),
                n(c(Kind::BookingInvalid)),
                n(c(Kind::BookingIllegal)),
                n(p.dead_lettered_by_class.permanent)
            ),
        ),
    ]
}

/// What the final report shows.
pub struct Report<'a> {
    pub load_seconds: f64,
    pub rate: u64,
    pub generated: &'a Tally,
    pub workers: &'a BTreeMap<&'static str, StatsSnapshot>,
    pub checks: &'a [Check],
    pub drained: bool,
    pub failed_workers: &'a [String],
}

/// The final report, for a person.
pub fn print_report(r: &Report) {
    let c = |k| n(r.generated.count(k));
    let s = |st| n(r.generated.stream(st));
    println!();
    println!(
        "streamfleet demo: {:.1} s of load at {} records/s on the embedded cluster",
        r.load_seconds,
        n(r.rate)
    );
    println!(
        "(librdkafka's mock cluster: it shows how records flow; it has no transactions, and its \
         speed says nothing about Kafka's)"
    );
    println!();
    println!("Generated {} records", n(r.generated.total()));
    println!(
        "  booking-events   {:>8}  {} new, {} confirmed, {} cancelled, {} replays;",
        s(Stream::Booking),
        c(Kind::BookingPending),
        c(Kind::BookingConfirmed),
        c(Kind::BookingCancelled),
        c(Kind::BookingReplay)
    );
    println!(
        "                              broken on purpose: {} malformed, {} invalid, {} illegal transitions",
        c(Kind::BookingMalformed),
        c(Kind::BookingInvalid),
        c(Kind::BookingIllegal)
    );
    println!(
        "  inventory-events {:>8}  {} restocks; broken on purpose: {} malformed",
        s(Stream::Inventory),
        c(Kind::Restock),
        c(Kind::InventoryMalformed)
    );
    println!(
        "  payment-events   {:>8}  {} payment requests, {} replays; broken on purpose: {} malformed, {} invalid",
        s(Stream::Payment),
        c(Kind::Payment),
        c(Kind::PaymentReplay),
        c(Kind::PaymentMalformed),
        c(Kind::PaymentInvalid)
    );
    println!();
    println!(
        "What each worker did with the records it consumed (a retried or parked record is \
         consumed again later)"
    );
    println!(
        "  {:<10}{:>9} = {:>9} + {:>9} + {:>13} + {:>9} + {:>6}",
        "worker", "consumed", "succeeded", "retried", "dead-lettered", "replays", "parked"
    );
    for (name, st) in r.workers {
        println!(
            "  {:<10}{:>9} = {:>9} + {:>9} + {:>13} + {:>9} + {:>6}",
            name,
            n(st.consumed),
            n(st.succeeded),
            n(st.retried),
            n(st.dead_lettered),
            n(st.replay_dropped),
            n(st.parked)
        );
    }
    let p = r
        .workers
        .get(WorkerKind::Payment.name())
        .copied()
        .unwrap_or_default();
    println!(
        "  The payment gateway failed {} charges transiently: each went to a retry topic and was \
         tried again; {} ran out of attempts and were dead-lettered.",
        n(p.retried),
        n(p.dead_lettered_by_class.retries_exhausted)
    );
    println!();
    println!("Checks");
    for check in r.checks {
        println!(
            "  {} {}",
            if check.passed { "ok  " } else { "FAIL" },
            check.claim
        );
    }
    if !r.drained {
        println!("  FAIL not every record had an outcome before --drain-timeout");
    }
    for failure in r.failed_workers {
        println!("  FAIL {failure}");
    }
    println!();
    println!(
        "Dead letters carry their reason in headers; on a real cluster, `streamfleet dlq inspect` \
         shows them and `streamfleet dlq replay` sends them back once fixed."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(n(0), "0");
        assert_eq!(n(999), "999");
        assert_eq!(n(1000), "1,000");
        assert_eq!(n(1234567), "1,234,567");
    }

    fn tally(kinds: &[(Kind, u64)]) -> Tally {
        Tally {
            kinds: kinds.iter().copied().collect(),
            payments: Default::default(),
        }
    }

    #[test]
    fn a_valid_record_dead_lettered_fails_the_rule_check() {
        let t = tally(&[(Kind::BookingPending, 10), (Kind::BookingInvalid, 2)]);
        let mut workers = BTreeMap::new();
        let mut b = StatsSnapshot {
            consumed: 12,
            succeeded: 10,
            dead_lettered: 2,
            ..Default::default()
        };
        b.dead_lettered_by_class.permanent = 2;
        workers.insert("booking", b);
        workers.insert(
            "inventory",
            StatsSnapshot {
                consumed: 10,
                succeeded: 10,
                ..Default::default()
            },
        );
        assert!(checks(&t, &workers).iter().all(|c| c.passed));

        b.succeeded = 9;
        b.dead_lettered = 3;
        b.dead_lettered_by_class.permanent = 3;
        workers.insert("booking", b);
        let failed: Vec<_> = checks(&t, &workers)
            .into_iter()
            .filter(|c| !c.passed)
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].claim.contains("business rule"), "{failed:?}");
    }
}
