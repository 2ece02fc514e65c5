//! Rust types of the Avro records, field for field.

use serde::{Deserialize, Serialize};

use crate::AvroType;

/// Lifecycle state of a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BookingStatus {
    /// Requested, stock being reserved.
    Pending,
    /// Paid and final.
    Confirmed,
    /// Cancelled; stock released.
    Cancelled,
}

/// `com.streamfleet.booking.BookingEvent` v1, exactly as the seed system defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BookingEvent {
    /// Booking id (the record key).
    pub booking_id: String,
    /// Customer id.
    pub customer_id: String,
    /// Hotel id.
    pub hotel_id: String,
    /// Check-in, epoch ms.
    pub check_in: i64,
    /// Check-out, epoch ms.
    pub check_out: i64,
    /// Total price.
    pub total_amount: f64,
    /// ISO-4217 currency code.
    pub currency: String,
    /// Lifecycle state.
    pub status: BookingStatus,
    /// Free-form metadata.
    pub metadata: Option<String>,
}

impl AvroType for BookingEvent {
    const NAME: &'static str = "com.streamfleet.booking.BookingEvent";
    const VERSION: u32 = 1;
}

/// `com.streamfleet.booking.BookingEvent` v2: v1 plus the sales channel (default `unknown`).
/// The workers read v1; this is what a v2 writer sends, and what the schema-evolution tests
/// write to show that v1 readers resolve it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BookingEventV2 {
    /// The v1 fields.
    #[serde(flatten)]
    pub v1: BookingEvent,
    /// Sales channel: web, mobile, partner, ...
    pub channel: String,
}

impl AvroType for BookingEventV2 {
    const NAME: &'static str = BookingEvent::NAME;
    const VERSION: u32 = 2;
}

/// Kind of stock command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InventoryEventType {
    /// Add rooms.
    Restock,
    /// Hold rooms for a booking.
    Reserve,
    /// Return a booking's rooms.
    Release,
}

/// `com.streamfleet.inventory.InventoryEvent` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEvent {
    /// Unique command id.
    pub event_id: String,
    /// Hotel id (the record key).
    pub hotel_id: String,
    /// Command.
    #[serde(rename = "type")]
    pub kind: InventoryEventType,
    /// Rooms.
    pub quantity: i32,
    /// Booking the command is for (RESERVE, RELEASE).
    pub booking_id: Option<String>,
    /// When it happened, epoch ms.
    pub occurred_at: i64,
}

impl AvroType for InventoryEvent {
    const NAME: &'static str = "com.streamfleet.inventory.InventoryEvent";
    const VERSION: u32 = 1;
}

/// Result of a stock command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InventoryResult {
    /// Stock added.
    Restocked,
    /// Rooms held.
    Reserved,
    /// Rooms returned.
    Released,
    /// Refused; see the reason.
    Rejected,
}

/// `com.streamfleet.inventory.InventoryOutcome` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryOutcome {
    /// Command id.
    pub event_id: String,
    /// Hotel id (the record key).
    pub hotel_id: String,
    /// Booking, if any.
    pub booking_id: Option<String>,
    /// What happened.
    pub result: InventoryResult,
    /// Rooms in the command.
    pub quantity: i32,
    /// Stock after the command.
    pub available: i64,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// When it was processed, epoch ms.
    pub processed_at: i64,
}

impl AvroType for InventoryOutcome {
    const NAME: &'static str = "com.streamfleet.inventory.InventoryOutcome";
    const VERSION: u32 = 1;
}

/// How a customer pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentMethod {
    /// Card.
    Card,
    /// Bank transfer.
    BankTransfer,
    /// Wallet.
    Wallet,
}

/// `com.streamfleet.payment.PaymentEvent` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentEvent {
    /// Payment id (the record key).
    pub payment_id: String,
    /// Booking paid for.
    pub booking_id: String,
    /// Customer.
    pub customer_id: String,
    /// Amount.
    pub amount: f64,
    /// ISO-4217 currency code.
    pub currency: String,
    /// Method.
    pub method: PaymentMethod,
    /// When requested, epoch ms.
    pub requested_at: i64,
}

impl AvroType for PaymentEvent {
    const NAME: &'static str = "com.streamfleet.payment.PaymentEvent";
    const VERSION: u32 = 1;
}

/// `com.streamfleet.payment.PaymentCompleted` v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCompleted {
    /// Payment id (the record key).
    pub payment_id: String,
    /// Booking paid for.
    pub booking_id: String,
    /// Customer.
    pub customer_id: String,
    /// Amount.
    pub amount: f64,
    /// Currency.
    pub currency: String,
    /// Gateway's reference.
    pub gateway_reference: String,
    /// When completed, epoch ms.
    pub completed_at: i64,
}

impl AvroType for PaymentCompleted {
    const NAME: &'static str = "com.streamfleet.payment.PaymentCompleted";
    const VERSION: u32 = 1;
}
