//! Criterion micro-benchmarks of the per-record hot path, each measuring the code the worker
//! runs (not a copy of it):
//!
//! - `avro/*`: single-object Avro decode and encode of a `BookingEvent` through the runtime
//!   codec, as the booking worker does for every record;
//! - `headers/*`: building the failure headers of a retry or dead-letter record, directly and
//!   through the failure router that picks the rung;
//! - `metrics/*`: the Prometheus updates a lane makes per record;
//! - `validate/*`: the booking processor's business checks of one event (the currency look-up
//!   among them).
//!
//!     cargo bench -p streamfleet-tests --bench hot_path
//!
//! Results in the README (Benchmarks). Measurements, not tests: nothing here asserts time.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prometheus::Registry;
use streamfleet_booking::BookingProcessor;
use streamfleet_runtime::LANE_BATCH;
use streamfleet_runtime::headers::{FailureInfo, with_failure};
use streamfleet_runtime::metrics::{Metrics, RecordOutcome, WorkerStats};
use streamfleet_runtime::processor::{ErrorClass, ProcessError};
use streamfleet_runtime::record::RawRecord;
use streamfleet_runtime::retry::RetryPolicy;
use streamfleet_runtime::routing::FailureRouter;
use streamfleet_schemas::{BookingEvent, BookingStatus, Encoding, is_iso4217};

fn booking() -> BookingEvent {
    BookingEvent {
        booking_id: "b-000000000042".into(),
        customer_id: "c-001337".into(),
        hotel_id: "h-0042".into(),
        check_in: 1_767_225_600_000,
        check_out: 1_767_398_400_000,
        total_amount: 420.5,
        currency: "EUR".into(),
        status: BookingStatus::Pending,
        metadata: None,
    }
}

fn avro(c: &mut Criterion) {
    let codec = Encoding::new(None)
        .codec::<BookingEvent>("booking-events")
        .expect("codec");
    let event = booking();
    let bytes = codec.encode(&event).expect("encode");
    let mut g = c.benchmark_group("avro");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_booking_event", |b| {
        b.iter(|| codec.decode(black_box(&bytes)).expect("decode"))
    });
    g.bench_function("encode_booking_event", |b| {
        b.iter(|| codec.encode(black_box(&event)).expect("encode"))
    });
    g.bench_function("decode_then_encode_booking_event", |b| {
        b.iter(|| {
            let e = codec.decode(black_box(&bytes)).expect("decode");
            codec.encode(&e).expect("encode")
        })
    });
    g.finish();
}

fn failed_record() -> RawRecord {
    RawRecord {
        topic: Arc::from("booking-events"),
        partition: 7,
        offset: 123_456_789,
        timestamp: Some(1_767_225_600_000),
        key: Some(b"c-001337:eu-west".to_vec()),
        value: Some(vec![0u8; 120]),
        headers: vec![(
            "traceparent".into(),
            b"00-4bf92f3577b34da6-00f067aa0ba902b7-01".to_vec(),
        )],
    }
}

fn headers(c: &mut Criterion) {
    let raw = failed_record();
    let info = FailureInfo {
        original_topic: raw.topic.to_string(),
        original_partition: raw.partition,
        original_offset: raw.offset,
        original_timestamp: raw.timestamp,
        attempt: 1,
        due_at: Some(1_767_225_601_000),
        error_class: ErrorClass::Transient,
        error_message: "payment gateway timed out after 2000 ms".into(),
        group: "booking-workers".into(),
        instance: "booking-0".into(),
        first_failure_at: 1_767_225_600_000,
    };
    let router = FailureRouter::new(
        "booking-workers",
        "booking-0",
        [("booking-events".to_owned(), RetryPolicy::default())],
    );
    let transient = ProcessError::Transient(info.error_message.clone());
    let permanent = ProcessError::Permanent("hotel h-0042 is closed".into());
    let mut g = c.benchmark_group("headers");
    g.throughput(Throughput::Elements(1));
    g.bench_function("with_failure", |b| {
        b.iter(|| with_failure(black_box(&raw.headers), black_box(&info)))
    });
    g.bench_function("route_to_retry", |b| {
        b.iter(|| router.route(black_box(&raw), &transient, 1_767_225_600_000))
    });
    g.bench_function("route_to_dead_letter", |b| {
        b.iter(|| router.route(black_box(&raw), &permanent, 1_767_225_600_000))
    });
    g.finish();
}

fn metrics(c: &mut Criterion) {
    let metrics = Metrics::new(Registry::new());
    let topic = metrics.topic(
        "booking",
        "booking-events",
        Arc::new(WorkerStats::default()),
    );
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Elements(1));
    // As a lane does it: the processing time observed locally, published once per batch.
    let processing = topic.local_processing();
    let mut in_batch = 0;
    g.bench_function("per_record_updates", |b| {
        b.iter(|| {
            topic.record_consumed();
            processing.observe(black_box(0.000_012));
            in_batch += 1;
            if in_batch == LANE_BATCH {
                processing.flush();
                in_batch = 0;
            }
            topic.record_outcome(RecordOutcome::Success);
            topic.record_end_to_end(black_box(0.021));
        })
    });
    g.finish();
}

fn validate(c: &mut Criterion) {
    let event = booking();
    // Codes from both ends and the middle of the list, and two that are refused.
    let codes = ["AED", "EUR", "GBP", "JPY", "USD", "ZWG", "XXX", "eur"];
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(1));
    g.bench_function("booking_event", |b| {
        b.iter(|| BookingProcessor::validate(black_box(&event)).expect("valid"))
    });
    g.throughput(Throughput::Elements(codes.len() as u64));
    g.bench_function("is_iso4217", |b| {
        b.iter(|| {
            codes
                .iter()
                .filter(|code| is_iso4217(black_box(code)))
                .count()
        })
    });
    g.finish();
}

criterion_group!(hot_path, avro, headers, metrics, validate);
criterion_main!(hot_path);
