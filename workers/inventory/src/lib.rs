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
//! Under exactly-once the stock is durable: each changed hotel is written (as JSON, keyed by
//! hotel id) to the compacted `inventory-events-changelog` in the same transaction as the
//! outcome and the consumed offset, and restored from it when a partition is assigned.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use streamfleet_runtime::state::StateChangelog;

use streamfleet_runtime::codec::AvroCodec;
use streamfleet_runtime::{Outcome, OutputRecord, ProcessError, Processor, RawRecord, Record};
use streamfleet_schemas::{
    Encoding, InventoryEvent, InventoryEventType, InventoryOutcome, InventoryResult,
};

/// Default output topic.
pub const DEFAULT_OUTPUT_TOPIC: &str = "inventory-outcomes";

/// Stock and holds of one hotel.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotelStock {
    /// Rooms free.
    pub available: i64,
    /// Rooms held per booking.
    pub held: HashMap<String, i32>,
    /// Bookings whose RESERVE was applied (held or rejected): a second one is a replay.
    pub reserves: HashSet<String>,
    /// Bookings whose RELEASE was applied (released or rejected): a second one is a replay.
    pub releases: HashSet<String>,
    /// Restock event ids applied.
    pub restocks: HashSet<String>,
}

/// Stock of every hotel of a partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InventoryState {
    hotels: HashMap<String, HotelStock>,
    /// Hotels changed since the changelog last drained them.
    dirty: HashSet<String>,
}

impl InventoryState {
    /// One hotel's stock.
    pub fn hotel(&self, hotel_id: &str) -> Option<&HotelStock> {
        self.hotels.get(hotel_id)
    }
}

/// The inventory processor.
pub struct InventoryProcessor {
    input: AvroCodec<InventoryEvent>,
    output: AvroCodec<InventoryOutcome>,
    output_topic: String,
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

/// Applies a decided command to a hotel's stock.
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
    /// A processor writing outcomes to `output_topic`.
    pub fn new(encoding: &Encoding, input_topic: &str, output_topic: &str) -> Result<Self, String> {
        Ok(Self {
            input: encoding.codec(input_topic).map_err(|e| e.to_string())?,
            output: encoding.codec(output_topic).map_err(|e| e.to_string())?,
            output_topic: output_topic.to_owned(),
        })
    }

    /// The effect of `event` on a hotel's current stock. Pure: nothing changes until
    /// [`apply`].
    pub fn effect(
        current: Option<&HotelStock>,
        event: &InventoryEvent,
    ) -> Result<Effect, ProcessError> {
        if event.quantity <= 0 {
            return Err(ProcessError::Permanent(format!(
                "quantity must be positive, got {}",
                event.quantity
            )));
        }
        let empty = HotelStock::default();
        let stock = current.unwrap_or(&empty);
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
            InventoryEventType::Restock if stock.restocks.contains(&event.event_id) => {
                Ok(Effect::Replay)
            }
            InventoryEventType::Restock => {
                apply(InventoryResult::Restocked, None, stock.available + quantity)
            }
            InventoryEventType::Reserve => {
                let booking = booking()?;
                if stock.reserves.contains(booking) {
                    Ok(Effect::Replay)
                } else if stock.available >= quantity {
                    apply(InventoryResult::Reserved, None, stock.available - quantity)
                } else {
                    let reason = format!(
                        "insufficient stock: {} requested, {} available",
                        event.quantity, stock.available
                    );
                    apply(InventoryResult::Rejected, Some(reason), stock.available)
                }
            }
            InventoryEventType::Release => {
                let booking = booking()?;
                if stock.releases.contains(booking) {
                    return Ok(Effect::Replay);
                }
                match stock.held.get(booking) {
                    Some(held) => apply(
                        InventoryResult::Released,
                        None,
                        stock.available + i64::from(*held),
                    ),
                    None => apply(
                        InventoryResult::Rejected,
                        Some(format!("no rooms held for booking {booking}")),
                        stock.available,
                    ),
                }
            }
        }
    }
}

/// The stock's changelog: one entry per hotel, the hotel's [`HotelStock`] as JSON.
pub struct InventoryChangelog;

impl StateChangelog<InventoryState> for InventoryChangelog {
    fn drain(&self, state: &mut InventoryState) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let dirty: Vec<String> = state.dirty.drain().collect();
        dirty
            .into_iter()
            .map(|hotel| {
                let value = state
                    .hotels
                    .get(&hotel)
                    .map(|stock| serde_json::to_vec(stock).expect("stock serialises"));
                (hotel.into_bytes(), value)
            })
            .collect()
    }

    fn restore(
        &self,
        state: &mut InventoryState,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), String> {
        let hotel =
            String::from_utf8(key.to_vec()).map_err(|e| format!("hotel id is not UTF-8: {e}"))?;
        match value {
            Some(bytes) => {
                let stock: HotelStock =
                    serde_json::from_slice(bytes).map_err(|e| format!("stock of {hotel}: {e}"))?;
                state.hotels.insert(hotel, stock);
            }
            None => {
                state.hotels.remove(&hotel);
            }
        }
        Ok(())
    }
}

impl Processor for InventoryProcessor {
    type Input = InventoryEvent;
    type State = InventoryState;

    fn changelog(&self) -> Option<&dyn StateChangelog<InventoryState>> {
        Some(&InventoryChangelog)
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
        let hotel = state.hotels.get(&event.hotel_id);
        let (result, reason, available) = match Self::effect(hotel, event)? {
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
        apply(
            state.hotels.entry(event.hotel_id.clone()).or_default(),
            event,
            result,
            available,
        );
        state.dirty.insert(event.hotel_id.clone());
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
        assert_eq!(s.hotel("h1").unwrap().available, 1);
        assert_eq!(s.hotel("h1").unwrap().held.len(), 1);
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
        assert_eq!(s.hotel("h1").unwrap().available, 5);
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

    #[tokio::test]
    async fn the_changelog_carries_changed_hotels_and_restores_them() {
        use InventoryEventType::*;
        let p = processor();
        let mut s = InventoryState::default();
        run(&p, &mut s, &cmd("r1", Restock, 5, None)).await.unwrap();
        run(&p, &mut s, &cmd("reserve-a", Reserve, 2, Some("a")))
            .await
            .unwrap();
        let entries = InventoryChangelog.drain(&mut s);
        assert_eq!(entries.len(), 1, "one hotel changed (twice)");
        assert!(InventoryChangelog.drain(&mut s).is_empty(), "drained");
        let mut restored = InventoryState::default();
        for (k, v) in &entries {
            InventoryChangelog
                .restore(&mut restored, k, v.as_deref())
                .unwrap();
        }
        assert_eq!(restored.hotel("h1"), s.hotel("h1"));
        assert_eq!(restored.hotel("h1").unwrap().available, 3);
        // A replayed reserve is recognised after a restore: the dedup sets are state too.
        assert_eq!(
            run(&p, &mut restored, &cmd("reserve-a", Reserve, 2, Some("a")))
                .await
                .unwrap(),
            None
        );
        assert!(
            InventoryChangelog
                .restore(&mut restored, b"h1", Some(b"not json"))
                .is_err()
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
        assert!(s.hotels.is_empty());
    }
}
