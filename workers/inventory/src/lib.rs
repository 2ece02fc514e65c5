//! The inventory worker (`inventory-events`).
//!
//! Keeps the stock of every hotel of a partition (records are keyed by hotel id) and applies
//! stock commands:
//!
//! | command   | effect                                                    | outcome               |
//! |-----------|-----------------------------------------------------------|-----------------------|
//! | `RESTOCK` | adds `quantity` rooms                                     | `RESTOCKED`           |
//! | `RESERVE` | holds `quantity` rooms for the booking if enough are free | `RESERVED`/`REJECTED` |
//! | `RELEASE` | returns the rooms held for the booking                    | `RELEASED`/`REJECTED` |
//!
//! Every command gets exactly one `InventoryOutcome` on `inventory-outcomes`, keyed by hotel
//! id, with the stock after it. A command seen before (same restock event id, a second
//! reserve or release for one booking) is an exact replay and is dropped. A command without a
//! positive quantity, or a reserve/release without a booking id, is a permanent error.
//!
//! The stock is durable under both guarantees: every change goes to the compacted
//! `inventory-events-changelog` (see [`state`] for its entries and how the old format is
//! upgraded) and is restored from it when a partition is assigned.

mod state;

use std::time::Duration;

use streamfleet_runtime::codec::AvroCodec;
use streamfleet_runtime::{Outcome, OutputRecord, ProcessError, Processor, RawRecord, Record};
use streamfleet_schemas::{
    Encoding, InventoryEvent, InventoryEventType, InventoryOutcome, InventoryResult,
};

pub use state::{DEFAULT_RETENTION, Entry, HotelStock, InventoryState, StockView};

/// Default output topic.
pub const DEFAULT_OUTPUT_TOPIC: &str = "inventory-outcomes";

/// The inventory processor.
pub struct InventoryProcessor {
    input: AvroCodec<InventoryEvent>,
    output: AvroCodec<InventoryOutcome>,
    output_topic: String,
    retention: Duration,
}

/// What a command does, decided before anything changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Seen before: drop.
    Replay,
    /// Apply it with [`apply`]: the outcome, its reason, and the stock afterwards.
    Apply {
        /// Outcome.
        result: InventoryResult,
        /// Why it was rejected.
        reason: Option<String>,
        /// Stock after the command.
        available: i64,
    },
}

/// Applies a decided command to a [`HotelStock`]: the in-memory model of one hotel that tests
/// compare the worker's outcomes with.
pub fn apply(
    stock: &mut HotelStock,
    event: &InventoryEvent,
    result: InventoryResult,
    available: i64,
) {
    let booking = event.booking_id.clone().unwrap_or_default();
    match (event.kind, result) {
        (InventoryEventType::Restock, _) => {
            stock.restocks.insert(event.event_id.clone());
        }
        (InventoryEventType::Reserve, InventoryResult::Reserved) => {
            stock.held.insert(booking.clone(), event.quantity);
            stock.reserves.insert(booking);
        }
        (InventoryEventType::Reserve, _) => {
            stock.reserves.insert(booking);
        }
        (InventoryEventType::Release, _) => {
            stock.held.remove(&booking);
            stock.releases.insert(booking);
        }
    }
    stock.available = available;
}

impl InventoryProcessor {
    /// A processor writing outcomes to `output_topic`, remembering an applied command (to
    /// drop its replays) for `retention`.
    pub fn new(
        encoding: &Encoding,
        input_topic: &str,
        output_topic: &str,
        retention: Duration,
    ) -> Result<Self, String> {
        Ok(Self {
            input: encoding.codec(input_topic).map_err(|e| e.to_string())?,
            output: encoding.codec(output_topic).map_err(|e| e.to_string())?,
            output_topic: output_topic.to_owned(),
            retention,
        })
    }

    /// The effect of `event` on a hotel's current stock. Pure: nothing changes until it is
    /// applied.
    pub fn effect(stock: &impl StockView, event: &InventoryEvent) -> Result<Effect, ProcessError> {
        if event.quantity <= 0 {
            return Err(ProcessError::Permanent(format!(
                "quantity must be positive, got {}",
                event.quantity
            )));
        }
        let quantity = i64::from(event.quantity);
        let booking = || {
            event
                .booking_id
                .as_deref()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| {
                    ProcessError::Permanent(format!("{:?} without a bookingId", event.kind))
                })
        };
        let apply = |result, reason, available| {
            Ok(Effect::Apply {
                result,
                reason,
                available,
            })
        };
        match event.kind {
            InventoryEventType::Restock if stock.seen(event.kind, &event.event_id) => {
                Ok(Effect::Replay)
            }
            InventoryEventType::Restock => apply(
                InventoryResult::Restocked,
                None,
                stock.available() + quantity,
            ),
            InventoryEventType::Reserve => {
                let booking = booking()?;
                let available = stock.available();
                if stock.seen(event.kind, booking) {
                    Ok(Effect::Replay)
                } else if available >= quantity {
                    apply(InventoryResult::Reserved, None, available - quantity)
                } else {
                    let reason = format!(
                        "insufficient stock: {} requested, {available} available",
                        event.quantity
                    );
                    apply(InventoryResult::Rejected, Some(reason), available)
                }
            }
            InventoryEventType::Release => {
                let booking = booking()?;
                if stock.seen(event.kind, booking) {
                    return Ok(Effect::Replay);
                }
                match stock.held(booking) {
                    Some(held) => apply(
                        InventoryResult::Released,
                        None,
                        stock.available() + i64::from(held),
                    ),
                    None => apply(
                        InventoryResult::Rejected,
                        Some(format!("no rooms held for booking {booking}")),
                        stock.available(),
                    ),
                }
            }
        }
    }
}

impl Processor for InventoryProcessor {
    type Input = InventoryEvent;
    type State = InventoryState;

    fn new_state(&self) -> InventoryState {
        InventoryState::with_retention(self.retention)
    }

    fn decode(&self, record: &RawRecord) -> Result<InventoryEvent, ProcessError> {
        let bytes = record.value.as_deref().ok_or_else(|| {
            ProcessError::Malformed("null value (tombstone) on inventory-events".into())
        })?;
        Ok(self.input.decode(bytes)?)
    }

    async fn process(
        &self,
        state: &mut InventoryState,
        record: &Record<'_, InventoryEvent>,
    ) -> Result<Outcome, ProcessError> {
        let event = &record.value;
        let (result, reason, available) = match Self::effect(&state.hotel(&event.hotel_id), event)?
        {
            Effect::Replay => return Ok(Outcome::ReplayDropped),
            Effect::Apply {
                result,
                reason,
                available,
            } => (result, reason, available),
        };
        let outcome = InventoryOutcome {
            event_id: event.event_id.clone(),
            hotel_id: event.hotel_id.clone(),
            booking_id: event.booking_id.clone(),
            result,
            quantity: event.quantity,
            available,
            reason,
            processed_at: streamfleet_runtime::now_ms(),
        };
        let value = self.output.encode(&outcome)?;
        let at = record
            .timestamp()
            .unwrap_or_else(streamfleet_runtime::now_ms);
        let (id, hold) = match event.kind {
            InventoryEventType::Restock => (event.event_id.as_str(), None),
            _ => (
                event.booking_id.as_deref().unwrap_or_default(),
                (result == InventoryResult::Reserved).then_some(event.quantity),
            ),
        };
        state.apply(&event.hotel_id, event.kind, id, at, available, hold);
        Ok(Outcome::Emit(vec![OutputRecord::keyed(
            &self.output_topic,
            event.hotel_id.as_bytes(),
            value,
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(id: &str, kind: InventoryEventType, qty: i32, booking: Option<&str>) -> InventoryEvent {
        InventoryEvent {
            event_id: id.into(),
            hotel_id: "h1".into(),
            kind,
            quantity: qty,
            booking_id: booking.map(str::to_owned),
            occurred_at: 0,
        }
    }

    async fn run(
        p: &InventoryProcessor,
        s: &mut InventoryState,
        e: &InventoryEvent,
    ) -> Result<Option<InventoryOutcome>, ProcessError> {
        let raw = RawRecord {
            topic: "inventory-events".into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: Some(b"h1".to_vec()),
            value: Some(p.input.encode(e).unwrap()),
            headers: vec![],
        };
        let value = p.decode(&raw)?;
        match p.process(s, &Record { value, raw: &raw }).await? {
            Outcome::ReplayDropped => Ok(None),
            Outcome::Emit(out) => {
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].key.as_deref(), Some(&b"h1"[..]));
                Ok(Some(
                    p.output.decode(out[0].value.as_deref().unwrap()).unwrap(),
                ))
            }
        }
    }

    fn processor() -> InventoryProcessor {
        InventoryProcessor::new(
            &Encoding::default(),
            "inventory-events",
            "inventory-outcomes",
            DEFAULT_RETENTION,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn restock_reserve_release_keep_the_stock_right() {
        use InventoryEventType::*;
        let p = processor();
        let mut s = InventoryState::default();
        let o = run(&p, &mut s, &cmd("r1", Restock, 2, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((o.result, o.available), (InventoryResult::Restocked, 2));
        let o = run(&p, &mut s, &cmd("reserve-a", Reserve, 1, Some("a")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((o.result, o.available), (InventoryResult::Reserved, 1));
        let o = run(&p, &mut s, &cmd("reserve-b", Reserve, 1, Some("b")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((o.result, o.available), (InventoryResult::Reserved, 0));
        let o = run(&p, &mut s, &cmd("reserve-c", Reserve, 1, Some("c")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.result, InventoryResult::Rejected);
        assert_eq!(
            o.reason.as_deref(),
            Some("insufficient stock: 1 requested, 0 available")
        );
        let o = run(&p, &mut s, &cmd("release-a", Release, 1, Some("a")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((o.result, o.available), (InventoryResult::Released, 1));
        assert_eq!(s.available("h1"), 1);
        assert_eq!(s.hotel("h1").held("b"), Some(1));
        assert_eq!(s.hotel("h1").held("a"), None);
    }

    #[tokio::test]
    async fn replays_are_dropped_without_changing_stock() {
        use InventoryEventType::*;
        let p = processor();
        let mut s = InventoryState::default();
        run(&p, &mut s, &cmd("r1", Restock, 5, None)).await.unwrap();
        assert_eq!(
            run(&p, &mut s, &cmd("r1", Restock, 5, None)).await.unwrap(),
            None
        );
        run(&p, &mut s, &cmd("reserve-a", Reserve, 2, Some("a")))
            .await
            .unwrap();
        assert_eq!(
            run(&p, &mut s, &cmd("reserve-a", Reserve, 2, Some("a")))
                .await
                .unwrap(),
            None
        );
        run(&p, &mut s, &cmd("release-a", Release, 2, Some("a")))
            .await
            .unwrap();
        assert_eq!(
            run(&p, &mut s, &cmd("release-a", Release, 2, Some("a")))
                .await
                .unwrap(),
            None
        );
        assert_eq!(s.available("h1"), 5);
    }

    #[tokio::test]
    async fn cancelling_after_a_rejected_reserve_is_rejected_not_dropped() {
        use InventoryEventType::*;
        let p = processor();
        let mut s = InventoryState::default();
        let o = run(&p, &mut s, &cmd("reserve-a", Reserve, 1, Some("a")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.result, InventoryResult::Rejected);
        let o = run(&p, &mut s, &cmd("release-a", Release, 1, Some("a")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.result, InventoryResult::Rejected);
        assert_eq!(o.reason.as_deref(), Some("no rooms held for booking a"));
        assert_eq!(o.available, 0);
        assert_eq!(
            run(&p, &mut s, &cmd("reserve-a", Reserve, 1, Some("a")))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            run(&p, &mut s, &cmd("release-a", Release, 1, Some("a")))
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn releasing_what_was_never_held_is_rejected_once() {
        use InventoryEventType::*;
        let p = processor();
        let mut s = InventoryState::default();
        let o = run(&p, &mut s, &cmd("release-z", Release, 1, Some("z")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.result, InventoryResult::Rejected);
        assert_eq!(o.available, 0);
        assert_eq!(
            run(&p, &mut s, &cmd("release-z", Release, 1, Some("z")))
                .await
                .unwrap(),
            None
        );
    }

    fn log(s: &mut InventoryState) -> Vec<streamfleet_runtime::store::Change> {
        use streamfleet_runtime::store::StateStore;
        let mut out = Vec::new();
        s.drain_changes(&mut out);
        out
    }

    fn restored(log: &[streamfleet_runtime::store::Change]) -> InventoryState {
        use streamfleet_runtime::store::StateStore;
        let mut r = InventoryState::default();
        for c in log {
            r.restore(&c.key, c.value.as_deref()).unwrap();
        }
        r
    }

    #[tokio::test]
    async fn the_changelog_carries_small_entries_and_restores_them() {
        use InventoryEventType::*;
        let p = processor();
        let mut s = InventoryState::default();
        run(&p, &mut s, &cmd("r1", Restock, 5, None)).await.unwrap();
        run(&p, &mut s, &cmd("reserve-a", Reserve, 2, Some("a")))
            .await
            .unwrap();
        let entries = log(&mut s);
        // The hotel (once: changed twice), the restock marker, the hold, the reserve marker.
        assert_eq!(entries.len(), 4, "{entries:?}");
        assert!(log(&mut s).is_empty(), "drained");
        let mut r = restored(&entries);
        assert_eq!(r.available("h1"), 3);
        assert_eq!(r.hotel("h1").held("a"), Some(2));
        // A replayed reserve is recognised after a restore: the markers are state too.
        assert_eq!(
            run(&p, &mut r, &cmd("reserve-a", Reserve, 2, Some("a")))
                .await
                .unwrap(),
            None
        );
        use streamfleet_runtime::store::StateStore;
        assert!(r.restore(b"h\0h1", Some(b"not json")).is_err());
    }

    #[tokio::test]
    async fn markers_expire_but_stock_and_holds_stay() {
        use InventoryEventType::*;
        use streamfleet_runtime::store::StateStore;
        let p = processor();
        let mut s = InventoryState::with_retention(std::time::Duration::from_millis(1000));
        run(&p, &mut s, &cmd("r1", Restock, 5, None)).await.unwrap();
        run(&p, &mut s, &cmd("reserve-a", Reserve, 2, Some("a")))
            .await
            .unwrap();
        log(&mut s);
        // The test records carry no timestamp: their markers are stamped with now.
        s.expire(streamfleet_runtime::now_ms() + 60_000);
        let tombstones = log(&mut s);
        assert_eq!(tombstones.len(), 2, "the two markers: {tombstones:?}");
        assert!(tombstones.iter().all(|c| c.value.is_none()));
        assert_eq!(s.available("h1"), 3);
        assert_eq!(s.hotel("h1").held("a"), Some(2));
    }

    #[tokio::test]
    async fn an_old_whole_hotel_entry_restores_and_is_rewritten_on_its_next_change() {
        use InventoryEventType::*;
        use streamfleet_runtime::store::StateStore;
        let mut old = HotelStock {
            available: 4,
            ..HotelStock::default()
        };
        old.held.insert("a".into(), 1);
        old.reserves.insert("a".into());
        old.restocks.insert("r1".into());
        let mut s = InventoryState::default();
        s.restore(b"h1", Some(&serde_json::to_vec(&old).unwrap()))
            .unwrap();
        assert_eq!(s.available("h1"), 4);
        assert!(
            log(&mut s).is_empty(),
            "nothing is written until the hotel changes"
        );
        let p = processor();
        assert_eq!(
            run(&p, &mut s, &cmd("reserve-a", Reserve, 1, Some("a")))
                .await
                .unwrap(),
            None,
            "the old markers still drop replays"
        );
        run(&p, &mut s, &cmd("release-a", Release, 1, Some("a")))
            .await
            .unwrap();
        let entries = log(&mut s);
        assert!(
            entries.iter().any(|c| c.key == b"h1" && c.value.is_none()),
            "the old entry is deleted: {entries:?}"
        );
        let r = restored(&entries);
        assert_eq!(r.available("h1"), 5);
        assert!(
            r.hotel("h1").seen(Restock, "r1"),
            "the old markers are rewritten"
        );
    }

    #[tokio::test]
    async fn invalid_commands_are_permanent_errors() {
        use InventoryEventType::*;
        let p = processor();
        let mut s = InventoryState::default();
        assert!(matches!(
            run(&p, &mut s, &cmd("x", Restock, 0, None)).await,
            Err(ProcessError::Permanent(_))
        ));
        assert!(
            matches!(run(&p, &mut s, &cmd("x", Reserve, 1, None)).await, Err(ProcessError::Permanent(m)) if m.contains("bookingId"))
        );
        use streamfleet_runtime::store::StateStore;
        assert_eq!(s.entries(), 0);
    }
}
