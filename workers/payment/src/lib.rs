//! The payment worker (`payment-events`).
//!
//! For each [`PaymentEvent`] it validates the request (positive amount, ISO-4217 currency,
//! ids present), charges it through the payment gateway and, on success, emits
//! [`PaymentCompleted`] to `payment-completed`, keyed by payment id. Charging is idempotent
//! per payment id: the partition's state remembers every completed payment (durably, in the
//! `payment-events-changelog`), and a payment already completed is dropped as a replay, so a
//! restart, a rebalance or a replayed record never charges a customer twice. The payment id is
//! also the charge's idempotency key at the gateway, as real gateways take one: the one window
//! the state cannot close (at least once, a crash after the charge and before its completion
//! is durable) repeats the call with the same key, which a gateway answers with the first
//! charge. A completed payment is remembered for `retention` after it completed (90 days, the
//! topic's retention, by default): a replay older than that would be charged again.
//!
//! The gateway here is simulated ([`SimulatedGateway`]): a configurable latency and share of
//! transient failures ("gateway unavailable"), decided by a hash of the seed, the payment id
//! and the attempt number, so a run is reproducible and a retried payment can succeed.

use std::time::Duration;

use streamfleet_runtime::codec::AvroCodec;
use streamfleet_runtime::headers;
use streamfleet_runtime::store::{KeyValueStore, RestoreError, StoredValue};
use streamfleet_runtime::{Outcome, OutputRecord, ProcessError, Processor, RawRecord, Record};
use streamfleet_schemas::{Encoding, PaymentCompleted, PaymentEvent, is_iso4217};

/// Default output topic.
pub const DEFAULT_OUTPUT_TOPIC: &str = "payment-completed";

/// Settings of the simulated gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatewayConfig {
    /// Time each charge takes.
    pub latency: Duration,
    /// Share of attempts that fail transiently, 0.0 to 1.0.
    pub failure_rate: f64,
    /// Seed of the failure decisions.
    pub seed: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(2),
            failure_rate: 0.02,
            seed: 42,
        }
    }
}

/// A payment gateway stand-in, deterministic under its seed.
#[derive(Debug, Clone)]
pub struct SimulatedGateway {
    config: GatewayConfig,
}

fn mix(seed: u64, text: &str, salt: u64) -> u64 {
    // FNV-1a over the text, then splitmix64: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SimulatedGateway {
    /// A gateway with `config`.
    pub fn new(config: GatewayConfig) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&config.failure_rate) {
            return Err(format!(
                "the failure rate must be between 0 and 1, got {}",
                config.failure_rate
            ));
        }
        Ok(Self { config })
    }

    /// Whether attempt `attempt` (1-based) of `payment_id` succeeds.
    pub fn succeeds(&self, payment_id: &str, attempt: u32) -> bool {
        let draw = mix(self.config.seed, payment_id, u64::from(attempt)) as f64 / u64::MAX as f64;
        draw >= self.config.failure_rate
    }

    /// Charges a payment; `Err` is a transient failure.
    pub async fn charge(
        &self,
        payment: &PaymentEvent,
        attempt: u32,
    ) -> Result<String, ProcessError> {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        if self.succeeds(&payment.payment_id, attempt) {
            Ok(format!(
                "gw-{:016x}",
                mix(self.config.seed, &payment.payment_id, 0)
            ))
        } else {
            Err(ProcessError::Transient(format!(
                "payment gateway unavailable (simulated) on attempt {attempt}"
            )))
        }
    }
}

/// The default retention of a completed payment: `payment-events`' 90 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);

/// A completed payment, as the state remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    /// When the payment request was made (its record's timestamp, epoch ms).
    pub at: i64,
    /// From when it is forgotten (stream time, epoch ms).
    pub until: i64,
}

impl StoredValue for Completed {
    fn encode(&self) -> Vec<u8> {
        [self.at.to_be_bytes(), self.until.to_be_bytes()].concat()
    }

    fn decode(bytes: &[u8]) -> Result<Self, RestoreError> {
        if bytes.len() != 16 {
            return Err(RestoreError(format!(
                "a completed payment entry of {} bytes (expected 16)",
                bytes.len()
            )));
        }
        let word = |i: usize| i64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Ok(Completed {
            at: word(0),
            until: word(8),
        })
    }

    fn expires_at(&self) -> Option<i64> {
        Some(self.until)
    }
}

/// Payments completed on a partition, by payment id.
pub type PaymentState = KeyValueStore<Completed>;

/// The payment processor.
pub struct PaymentProcessor {
    input: AvroCodec<PaymentEvent>,
    output: AvroCodec<PaymentCompleted>,
    output_topic: String,
    gateway: SimulatedGateway,
    retention: Duration,
}

impl PaymentProcessor {
    /// A processor charging through `gateway`, writing to `output_topic`, remembering a
    /// completed payment for `retention`.
    pub fn new(
        encoding: &Encoding,
        input_topic: &str,
        output_topic: &str,
        gateway: SimulatedGateway,
        retention: Duration,
    ) -> Result<Self, String> {
        Ok(Self {
            input: encoding.codec(input_topic).map_err(|e| e.to_string())?,
            output: encoding.codec(output_topic).map_err(|e| e.to_string())?,
            output_topic: output_topic.to_owned(),
            gateway,
            retention,
        })
    }

    /// The business checks on one request.
    pub fn validate(p: &PaymentEvent) -> Result<(), ProcessError> {
        if p.payment_id.is_empty() || p.booking_id.is_empty() || p.customer_id.is_empty() {
            return Err(ProcessError::Permanent(
                "paymentId, bookingId and customerId are required".into(),
            ));
        }
        if !(p.amount.is_finite() && p.amount > 0.0) {
            return Err(ProcessError::Permanent(format!(
                "amount must be positive, got {}",
                p.amount
            )));
        }
        if !is_iso4217(&p.currency) {
            return Err(ProcessError::Permanent(format!(
                "currency {:?} is not an ISO-4217 code",
                p.currency
            )));
        }
        Ok(())
    }
}

impl Processor for PaymentProcessor {
    type Input = PaymentEvent;
    type State = PaymentState;

    fn decode(&self, record: &RawRecord) -> Result<PaymentEvent, ProcessError> {
        let bytes = record.value.as_deref().ok_or_else(|| {
            ProcessError::Malformed("null value (tombstone) on payment-events".into())
        })?;
        Ok(self.input.decode(bytes)?)
    }

    async fn process(
        &self,
        state: &mut PaymentState,
        record: &Record<'_, PaymentEvent>,
    ) -> Result<Outcome, ProcessError> {
        let payment = &record.value;
        Self::validate(payment)?;
        if state.contains(payment.payment_id.as_bytes()) {
            return Ok(Outcome::ReplayDropped);
        }
        let attempt = headers::parse_failure(record.headers()).map_or(0, |f| f.attempt) + 1;
        let reference = self.gateway.charge(payment, attempt).await?;
        let completed = PaymentCompleted {
            payment_id: payment.payment_id.clone(),
            booking_id: payment.booking_id.clone(),
            customer_id: payment.customer_id.clone(),
            amount: payment.amount,
            currency: payment.currency.clone(),
            gateway_reference: reference,
            completed_at: streamfleet_runtime::now_ms(),
        };
        let value = self.output.encode(&completed)?;
        let at = record
            .timestamp()
            .unwrap_or_else(streamfleet_runtime::now_ms);
        let retention = self.retention.as_millis().min(i64::MAX as u128 / 2) as i64;
        state.put(
            payment.payment_id.as_bytes(),
            Completed {
                at,
                until: at.saturating_add(retention),
            },
        );
        Ok(Outcome::Emit(vec![OutputRecord::keyed(
            &self.output_topic,
            payment.payment_id.as_bytes(),
            value,
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamfleet_schemas::PaymentMethod;

    fn payment(id: &str) -> PaymentEvent {
        PaymentEvent {
            payment_id: id.into(),
            booking_id: "b1".into(),
            customer_id: "c1".into(),
            amount: 99.5,
            currency: "CHF".into(),
            method: PaymentMethod::Card,
            requested_at: 0,
        }
    }

    fn processor(failure_rate: f64) -> PaymentProcessor {
        let gw = SimulatedGateway::new(GatewayConfig {
            latency: Duration::ZERO,
            failure_rate,
            seed: 7,
        })
        .unwrap();
        PaymentProcessor::new(
            &Encoding::default(),
            "payment-events",
            "payment-completed",
            gw,
            DEFAULT_RETENTION,
        )
        .unwrap()
    }

    async fn run(
        p: &PaymentProcessor,
        s: &mut PaymentState,
        e: &PaymentEvent,
    ) -> Result<Outcome, ProcessError> {
        let raw = RawRecord {
            topic: "payment-events".into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: Some(e.payment_id.clone().into_bytes()),
            value: Some(p.input.encode(e).unwrap()),
            headers: vec![],
        };
        let value = p.decode(&raw)?;
        p.process(s, &Record { value, raw: &raw }).await
    }

    #[tokio::test]
    async fn a_charge_completes_once() {
        let p = processor(0.0);
        let mut s = PaymentState::default();
        let Outcome::Emit(out) = run(&p, &mut s, &payment("p1")).await.unwrap() else {
            panic!("emit expected")
        };
        let done = p.output.decode(out[0].value.as_deref().unwrap()).unwrap();
        assert_eq!(
            (
                done.payment_id.as_str(),
                done.amount,
                done.currency.as_str()
            ),
            ("p1", 99.5, "CHF")
        );
        assert!(done.gateway_reference.starts_with("gw-"));
        assert_eq!(out[0].topic, "payment-completed");
        assert_eq!(
            run(&p, &mut s, &payment("p1")).await,
            Ok(Outcome::ReplayDropped)
        );
    }

    #[tokio::test]
    async fn gateway_failures_are_transient_and_leave_no_trace() {
        let p = processor(1.0);
        let mut s = PaymentState::default();
        assert!(matches!(
            run(&p, &mut s, &payment("p1")).await,
            Err(ProcessError::Transient(_))
        ));
        assert!(!s.contains(b"p1"));
    }

    #[tokio::test]
    async fn invalid_payments_are_permanent() {
        let p = processor(0.0);
        let mut s = PaymentState::default();
        let mut bad = payment("p1");
        bad.amount = 0.0;
        assert!(matches!(
            run(&p, &mut s, &bad).await,
            Err(ProcessError::Permanent(_))
        ));
        let mut bad = payment("p1");
        bad.currency = "BTC".into();
        assert!(
            matches!(run(&p, &mut s, &bad).await, Err(ProcessError::Permanent(m)) if m.contains("ISO-4217"))
        );
    }

    #[test]
    fn the_gateway_is_deterministic_and_close_to_its_failure_rate() {
        let gw = SimulatedGateway::new(GatewayConfig {
            latency: Duration::ZERO,
            failure_rate: 0.25,
            seed: 1,
        })
        .unwrap();
        let fails = (0..10_000)
            .filter(|i| !gw.succeeds(&format!("p{i}"), 1))
            .count();
        assert!((2_300..2_700).contains(&fails), "{fails}");
        assert_eq!(gw.succeeds("p1", 1), gw.succeeds("p1", 1));
        let differs =
            (0..1000).any(|i| gw.succeeds(&format!("p{i}"), 1) != gw.succeeds(&format!("p{i}"), 2));
        assert!(differs, "the attempt number must change the draw");
        assert!(
            SimulatedGateway::new(GatewayConfig {
                failure_rate: 1.5,
                ..GatewayConfig::default()
            })
            .is_err()
        );
    }
}
