//! Memory of the booking state over a long history: does it follow the retention window or
//! the history?
//!
//! Feeds `BOOKINGS` distinct bookings (default 10,000,000), each a PENDING and a CONFIRMED
//! for a three-night stay, through the booking processor and one partition's state, with
//! record timestamps spread evenly over `SPAN_DAYS` (default 365) of stream time, and a
//! retention of `RETENTION_DAYS` (default 30, `booking-events`' default). The runtime's
//! part is played as in a worker: stream time advances with each record and drives expiry,
//! and the changes are drained after every record. Every tenth of the run it prints the
//! bookings fed, the entries held, the tombstones written so far and the process's RSS.
//!
//! ```sh
//! cargo bench -p streamfleet-booking --bench state_memory
//! BOOKINGS=1000000 SPAN_DAYS=10 cargo bench -p streamfleet-booking --bench state_memory
//! ```

use std::time::{Duration, Instant};

use streamfleet_booking::BookingProcessor;
use streamfleet_runtime::store::StateStore;
use streamfleet_runtime::{Outcome, Processor, RawRecord, Record};
use streamfleet_schemas::{BookingEvent, BookingStatus, Encoding};

const DAY_MS: i64 = 86_400_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    let bookings = env("BOOKINGS", 10_000_000);
    let span_ms = env("SPAN_DAYS", 365) as i64 * DAY_MS;
    let retention = Duration::from_secs(env("RETENTION_DAYS", 30) * 86_400);
    let encoding = Encoding::default();
    let codec = encoding.codec::<BookingEvent>("booking-events").unwrap();
    let processor =
        BookingProcessor::new(&encoding, "booking-events", "inventory-events", retention).unwrap();
    let mut state = processor.new_state();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let start_ms: i64 = 1_767_225_600_000; // 2026-01-01
    let (mut tombstones, mut changes) = (0u64, Vec::new());
    let started = Instant::now();
    println!(
        "{bookings} bookings over {} days of stream time, retention {} days; RSS at start {:.0} MiB",
        span_ms / DAY_MS,
        retention.as_secs() / 86_400,
        rss_mib()
    );
    println!(
        "{:>12} {:>12} {:>14} {:>10} {:>9}",
        "bookings", "stream day", "entries held", "tombstones", "RSS MiB"
    );
    for i in 0..bookings {
        let at = start_ms + (i as i128 * span_ms as i128 / bookings as i128) as i64;
        let mut event = BookingEvent {
            booking_id: format!("bk-{i:010}"),
            customer_id: format!("c-{}", i % 100_000),
            hotel_id: format!("h-{}", i % 500),
            check_in: at + 7 * DAY_MS,
            check_out: at + 10 * DAY_MS,
            total_amount: 199.0,
            currency: "EUR".into(),
            status: BookingStatus::Pending,
            metadata: None,
        };
        for status in [BookingStatus::Pending, BookingStatus::Confirmed] {
            event.status = status;
            let raw = RawRecord {
                topic: "booking-events".into(),
                partition: 0,
                offset: i as i64,
                timestamp: Some(at),
                key: Some(event.booking_id.clone().into_bytes()),
                value: Some(codec.encode(&event).unwrap()),
                headers: vec![],
            };
            let value = processor.decode(&raw).unwrap();
            let outcome = runtime
                .block_on(processor.process(&mut state, &Record { value, raw: &raw }))
                .unwrap();
            assert!(
                matches!(outcome, Outcome::Emit(_)),
                "{status:?} of {i} not applied"
            );
            state.expire(at);
            state.drain_changes(&mut changes);
            tombstones += changes.iter().filter(|c| c.value.is_none()).count() as u64;
            changes.clear();
        }
        if (i + 1) % (bookings / 10).max(1) == 0 {
            println!(
                "{:>12} {:>12} {:>14} {:>10} {:>9.0}",
                i + 1,
                (at - start_ms) / DAY_MS,
                state.entries(),
                tombstones,
                rss_mib()
            );
        }
    }
    println!("{:.1} s", started.elapsed().as_secs_f64());
}
