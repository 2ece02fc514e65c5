//! The booking worker (`booking-events`).
//!
//! For each [`BookingEvent`] it:
//! 1. validates it: check-out after check-in, a positive finite amount, an ISO-4217 currency
//!    (a violation is a permanent error: the record is dead-lettered);
//! 2. applies it to the booking's state machine, kept per booking id in the partition state:
//!    `PENDING → CONFIRMED` or `PENDING → CANCELLED`; any other transition is a permanent
//!    error; an event whose status the booking already went through (its current status, or
//!    PENDING) is an exact replay and is dropped;
//! 3. emits an `InventoryEvent` to `inventory-events`, keyed by hotel id: `RESERVE` one room
//!    for a new pending booking, `RELEASE` it for a cancellation. A confirmation emits nothing.
//!
//! Input records are keyed by booking id, so every event of one booking is in one partition,
//! in order.

mod state;

use std::time::Duration;

use streamfleet_runtime::codec::AvroCodec;
use streamfleet_runtime::{Outcome, OutputRecord, ProcessError, Processor, RawRecord, Record};
use streamfleet_schemas::{
    BookingEvent, BookingStatus, Encoding, InventoryEvent, InventoryEventType, is_iso4217,
};

pub use state::{BookingState, DEFAULT_RETENTION};

/// Default output topic.
pub const DEFAULT_OUTPUT_TOPIC: &str = "inventory-events";

/// The booking processor.
pub struct BookingProcessor {
    input: AvroCodec<BookingEvent>,
    output: AvroCodec<InventoryEvent>,
    output_topic: String,
    retention: Duration,
}

impl BookingProcessor {
    /// A processor writing to `output_topic` with `encoding`, remembering a booking for
    /// `retention` after the later of its last event and its check-out.
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

    /// The business checks on one event.
    pub fn validate(event: &BookingEvent) -> Result<(), ProcessError> {
        if event.booking_id.is_empty() {
            return Err(ProcessError::Permanent("bookingId is empty".into()));
        }
        if event.check_out <= event.check_in {
            return Err(ProcessError::Permanent(format!(
                "checkOut ({}) must be after checkIn ({})",
                event.check_out, event.check_in
            )));
        }
        if !(event.total_amount.is_finite() && event.total_amount > 0.0) {
            return Err(ProcessError::Permanent(format!(
                "totalAmount must be positive, got {}",
                event.total_amount
            )));
        }
        if !is_iso4217(&event.currency) {
            return Err(ProcessError::Permanent(format!(
                "currency {:?} is not an ISO-4217 code",
                event.currency
            )));
        }
        Ok(())
    }

    fn inventory(
        &self,
        event: &BookingEvent,
        kind: InventoryEventType,
        at: i64,
    ) -> Result<OutputRecord, ProcessError> {
        let prefix = match kind {
            InventoryEventType::Reserve => "reserve",
            _ => "release",
        };
        let command = InventoryEvent {
            event_id: format!("{prefix}-{}", event.booking_id),
            hotel_id: event.hotel_id.clone(),
            kind,
            quantity: 1,
            booking_id: Some(event.booking_id.clone()),
            occurred_at: at,
        };
        let value = self.output.encode(&command)?;
        Ok(OutputRecord::keyed(
            &self.output_topic,
            event.hotel_id.as_bytes(),
            value,
        ))
    }

    /// What an event does to a booking whose current status is `current`. Pure: the caller
    /// applies the decision only once everything it emits is encoded.
    pub fn decide(
        current: Option<BookingStatus>,
        event: &BookingEvent,
    ) -> Result<Decision, ProcessError> {
        use BookingStatus::*;
        match (current, event.status) {
            // Every booking starts PENDING, so a known booking has applied PENDING and its
            // current status: either again is an exact replay.
            (Some(now), next) if now == next || next == Pending => Ok(Decision::Replay),
            (None, Pending) => Ok(Decision::Apply(Some(InventoryEventType::Reserve))),
            (Some(Pending), Confirmed) => Ok(Decision::Apply(None)),
            (Some(Pending), Cancelled) => Ok(Decision::Apply(Some(InventoryEventType::Release))),
            (from, to) => Err(ProcessError::Permanent(format!(
                "illegal transition for booking {}: {} → {to:?}",
                event.booking_id,
                from.map_or("(unknown booking)".to_owned(), |f| format!("{f:?}"))
            ))),
        }
    }
}

/// The effect of one booking event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The booking already has this status: drop the event.
    Replay,
    /// Move the booking to the event's status and emit this inventory command, if any.
    Apply(Option<InventoryEventType>),
}

impl Processor for BookingProcessor {
    type Input = BookingEvent;
    type State = BookingState;

    fn new_state(&self) -> BookingState {
        BookingState::with_retention(self.retention)
    }

    fn decode(&self, record: &RawRecord) -> Result<BookingEvent, ProcessError> {
        let bytes = record.value.as_deref().ok_or_else(|| {
            ProcessError::Malformed("null value (tombstone) on booking-events".into())
        })?;
        Ok(self.input.decode(bytes)?)
    }

    async fn process(
        &self,
        state: &mut BookingState,
        record: &Record<'_, BookingEvent>,
    ) -> Result<Outcome, ProcessError> {
        let event = &record.value;
        Self::validate(event)?;
        let at = record
            .timestamp()
            .unwrap_or_else(streamfleet_runtime::now_ms);
        let fp = state.fingerprint(&event.booking_id);
        let command = match Self::decide(state.get(&fp), event)? {
            Decision::Replay => return Ok(Outcome::ReplayDropped),
            Decision::Apply(command) => command,
        };
        let outputs = match command {
            Some(kind) => vec![self.inventory(event, kind, at)?],
            None => Vec::new(),
        };
        state.set(fp, event.status, at, event.check_out);
        Ok(Outcome::Emit(outputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, status: BookingStatus) -> BookingEvent {
        BookingEvent {
            booking_id: id.into(),
            customer_id: "c-1".into(),
            hotel_id: "h-7".into(),
            check_in: 1_000_000,
            check_out: 1_000_000 + 86_400_000,
            total_amount: 199.0,
            currency: "EUR".into(),
            status,
            metadata: None,
        }
    }

    fn raw(p: &BookingProcessor, e: &BookingEvent) -> RawRecord {
        RawRecord {
            topic: "booking-events".into(),
            partition: 0,
            offset: 0,
            timestamp: Some(42),
            key: Some(e.booking_id.clone().into_bytes()),
            value: Some(p.input.encode(e).unwrap()),
            headers: vec![],
        }
    }

    async fn run(
        p: &BookingProcessor,
        state: &mut BookingState,
        e: &BookingEvent,
    ) -> Result<Outcome, ProcessError> {
        let raw = raw(p, e);
        let value = p.decode(&raw)?;
        p.process(state, &Record { value, raw: &raw }).await
    }

    fn processor() -> BookingProcessor {
        BookingProcessor::new(
            &Encoding::default(),
            "booking-events",
            "inventory-events",
            DEFAULT_RETENTION,
        )
        .unwrap()
    }

    fn commands(p: &BookingProcessor, outcome: &Outcome) -> Vec<InventoryEvent> {
        let codec = Encoding::default().codec::<InventoryEvent>("x").unwrap();
        match outcome {
            Outcome::Emit(out) => out
                .iter()
                .map(|o| {
                    assert_eq!(o.topic, p.output_topic);
                    let e = codec.decode(o.value.as_deref().unwrap()).unwrap();
                    assert_eq!(o.key.as_deref(), Some(e.hotel_id.as_bytes()));
                    e
                })
                .collect(),
            Outcome::ReplayDropped => vec![],
        }
    }

    #[tokio::test]
    async fn pending_reserves_and_cancel_releases() {
        let p = processor();
        let mut s = BookingState::default();
        let out = run(&p, &mut s, &event("b1", BookingStatus::Pending))
            .await
            .unwrap();
        let c = commands(&p, &out);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].kind, c[0].quantity, c[0].event_id.as_str()),
            (InventoryEventType::Reserve, 1, "reserve-b1")
        );
        assert_eq!(c[0].occurred_at, 42);
        let out = run(&p, &mut s, &event("b1", BookingStatus::Cancelled))
            .await
            .unwrap();
        let c = commands(&p, &out);
        assert_eq!(c[0].kind, InventoryEventType::Release);
        assert_eq!(s.status("b1"), Some(BookingStatus::Cancelled));
    }

    #[tokio::test]
    async fn confirmation_emits_nothing() {
        let p = processor();
        let mut s = BookingState::default();
        run(&p, &mut s, &event("b1", BookingStatus::Pending))
            .await
            .unwrap();
        let out = run(&p, &mut s, &event("b1", BookingStatus::Confirmed))
            .await
            .unwrap();
        assert_eq!(out, Outcome::Emit(vec![]));
        assert_eq!(s.status("b1"), Some(BookingStatus::Confirmed));
    }

    #[tokio::test]
    async fn exact_replays_are_dropped() {
        let p = processor();
        let mut s = BookingState::default();
        run(&p, &mut s, &event("b1", BookingStatus::Pending))
            .await
            .unwrap();
        assert_eq!(
            run(&p, &mut s, &event("b1", BookingStatus::Pending)).await,
            Ok(Outcome::ReplayDropped)
        );
        run(&p, &mut s, &event("b1", BookingStatus::Confirmed))
            .await
            .unwrap();
        assert_eq!(
            run(&p, &mut s, &event("b1", BookingStatus::Confirmed)).await,
            Ok(Outcome::ReplayDropped)
        );
        // A late replay of the PENDING event of a confirmed booking is a replay too.
        assert_eq!(
            run(&p, &mut s, &event("b1", BookingStatus::Pending)).await,
            Ok(Outcome::ReplayDropped)
        );
        assert_eq!(s.status("b1"), Some(BookingStatus::Confirmed));
    }

    #[tokio::test]
    async fn illegal_transitions_are_permanent_and_leave_state_alone() {
        let p = processor();
        let mut s = BookingState::default();
        let e = run(&p, &mut s, &event("b1", BookingStatus::Confirmed))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ProcessError::Permanent(ref m) if m.contains("unknown booking")),
            "{e}"
        );
        assert_eq!(s.status("b1"), None);
        run(&p, &mut s, &event("b1", BookingStatus::Pending))
            .await
            .unwrap();
        run(&p, &mut s, &event("b1", BookingStatus::Cancelled))
            .await
            .unwrap();
        let e = run(&p, &mut s, &event("b1", BookingStatus::Confirmed))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ProcessError::Permanent(ref m) if m.contains("Cancelled → Confirmed")),
            "{e}"
        );
        assert_eq!(s.status("b1"), Some(BookingStatus::Cancelled));
    }

    #[tokio::test]
    async fn validation_rejects_bad_bookings() {
        let p = processor();
        let mut s = BookingState::default();
        let mut bad = event("b2", BookingStatus::Pending);
        bad.check_out = bad.check_in;
        assert!(
            matches!(run(&p, &mut s, &bad).await, Err(ProcessError::Permanent(m)) if m.contains("checkOut"))
        );
        let mut bad = event("b3", BookingStatus::Pending);
        bad.total_amount = -5.0;
        assert!(
            matches!(run(&p, &mut s, &bad).await, Err(ProcessError::Permanent(m)) if m.contains("totalAmount"))
        );
        bad.total_amount = f64::NAN;
        assert!(run(&p, &mut s, &bad).await.is_err());
        let mut bad = event("b4", BookingStatus::Pending);
        bad.currency = "EURO".into();
        assert!(
            matches!(run(&p, &mut s, &bad).await, Err(ProcessError::Permanent(m)) if m.contains("ISO-4217"))
        );
        assert!(s.is_empty());
    }

    #[test]
    fn undecodable_values_are_malformed() {
        let p = processor();
        let mut r = raw(&p, &event("b", BookingStatus::Pending));
        r.value = Some(b"garbage!!!!!".to_vec());
        assert!(matches!(p.decode(&r), Err(ProcessError::Malformed(_))));
        r.value = None;
        assert!(matches!(p.decode(&r), Err(ProcessError::Malformed(m)) if m.contains("tombstone")));
    }
}
