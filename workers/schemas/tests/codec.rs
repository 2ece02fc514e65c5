//! Codec behaviour on the real schemas: round trips, evolution in both directions, and
//! malformed bytes of every kind.

use proptest::prelude::*;
use streamfleet_runtime::codec::{CodecError, single_object_header};
use streamfleet_schemas::*;

fn booking() -> BookingEvent {
    BookingEvent {
        booking_id: "b-1".into(),
        customer_id: "c-9".into(),
        hotel_id: "h-3".into(),
        check_in: 1_767_225_600_000,
        check_out: 1_767_398_400_000,
        total_amount: 420.5,
        currency: "EUR".into(),
        status: BookingStatus::Pending,
        metadata: Some("{\"source\":\"test\"}".into()),
    }
}

fn codec<T: AvroType>() -> streamfleet_runtime::codec::AvroCodec<T> {
    Encoding::default().codec::<T>("t").unwrap()
}

#[test]
fn every_type_round_trips() {
    let b = booking();
    let c = codec::<BookingEvent>();
    assert_eq!(c.decode(&c.encode(&b).unwrap()).unwrap(), b);
    let mut cancelled = b.clone();
    cancelled.status = BookingStatus::Cancelled;
    cancelled.metadata = None;
    assert_eq!(c.decode(&c.encode(&cancelled).unwrap()).unwrap(), cancelled);

    let i = InventoryEvent {
        event_id: "reserve-b-1".into(),
        hotel_id: "h-3".into(),
        kind: InventoryEventType::Reserve,
        quantity: 1,
        booking_id: Some("b-1".into()),
        occurred_at: 5,
    };
    let c = codec::<InventoryEvent>();
    assert_eq!(c.decode(&c.encode(&i).unwrap()).unwrap(), i);

    let o = InventoryOutcome {
        event_id: "e".into(),
        hotel_id: "h".into(),
        booking_id: None,
        result: InventoryResult::Rejected,
        quantity: 2,
        available: 0,
        reason: Some("insufficient stock".into()),
        processed_at: 7,
    };
    let c = codec::<InventoryOutcome>();
    assert_eq!(c.decode(&c.encode(&o).unwrap()).unwrap(), o);

    let p = PaymentEvent {
        payment_id: "p".into(),
        booking_id: "b".into(),
        customer_id: "c".into(),
        amount: 12.5,
        currency: "USD".into(),
        method: PaymentMethod::BankTransfer,
        requested_at: 9,
    };
    let c = codec::<PaymentEvent>();
    assert_eq!(c.decode(&c.encode(&p).unwrap()).unwrap(), p);

    let pc = PaymentCompleted {
        payment_id: "p".into(),
        booking_id: "b".into(),
        customer_id: "c".into(),
        amount: 12.5,
        currency: "USD".into(),
        gateway_reference: "gw-1".into(),
        completed_at: 10,
    };
    let c = codec::<PaymentCompleted>();
    assert_eq!(c.decode(&c.encode(&pc).unwrap()).unwrap(), pc);
}

#[test]
fn the_header_is_the_avro_single_object_header() {
    let c = codec::<BookingEvent>();
    let bytes = c.encode(&booking()).unwrap();
    let expected = apache_avro_header(c.schema().schema);
    assert_eq!(&bytes[..10], &expected[..]);
    assert_eq!(
        single_object_header(c.schema().fingerprint).to_vec(),
        expected
    );
}

fn apache_avro_header(schema: &streamfleet_runtime::codec::Schema) -> Vec<u8> {
    use streamfleet_runtime::codec::HeaderBuilder;
    streamfleet_runtime::codec::RabinFingerprintHeader::from_schema(schema).build_header()
}

#[test]
fn v1_readers_read_v2_records() {
    let v2 = BookingEventV2 {
        v1: BookingEvent {
            booking_id: "b-2".into(),
            status: BookingStatus::Confirmed,
            ..booking()
        },
        channel: "mobile".into(),
    };
    let bytes = codec::<BookingEventV2>().encode(&v2).unwrap();
    let read = codec::<BookingEvent>().decode(&bytes).unwrap();
    assert_eq!(read, v2.v1, "every v1 field of a v2 record");
}

#[test]
fn v2_records_round_trip() {
    let v2 = BookingEventV2 {
        v1: booking(),
        channel: "partner".into(),
    };
    let c = codec::<BookingEventV2>();
    assert_eq!(c.decode(&c.encode(&v2).unwrap()).unwrap(), v2);
}

#[test]
fn v2_readers_read_v1_records_with_the_default() {
    let bytes = codec::<BookingEvent>().encode(&booking()).unwrap();
    let read = codec::<BookingEventV2>().decode(&bytes).unwrap();
    assert_eq!(read.v1.booking_id, "b-1");
    assert_eq!(read.v1.metadata.as_deref(), Some("{\"source\":\"test\"}"));
    assert_eq!(read.channel, "unknown");
}

#[test]
fn every_version_pair_is_compatible() {
    let checks = store().check_compatibility();
    assert!(checks.iter().any(|c| c.name == BookingEvent::NAME));
    let problems: Vec<_> = checks.iter().filter(|c| c.problem.is_some()).collect();
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn the_built_in_list_matches_the_schema_directory() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let mut on_disk = Vec::new();
    for domain in std::fs::read_dir(&dir).unwrap() {
        let domain = domain.unwrap();
        for f in std::fs::read_dir(domain.path()).unwrap() {
            let f = f.unwrap();
            on_disk.push(format!(
                "{}/{}",
                domain.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            ));
        }
    }
    on_disk.sort();
    let mut built_in: Vec<String> = SCHEMA_FILES.iter().map(|(p, _, _)| p.to_string()).collect();
    built_in.sort();
    assert_eq!(on_disk, built_in);
}

#[test]
fn malformed_bytes_are_named_errors() {
    let c = codec::<BookingEvent>();
    let good = c.encode(&booking()).unwrap();

    assert_eq!(c.decode(b""), Err(CodecError::TooShort(0)));
    assert!(matches!(
        c.decode(b"{\"json\":1}"),
        Err(CodecError::UnknownFraming(_))
    ));
    assert_eq!(c.decode(&good[..6]), Err(CodecError::TooShort(6)));

    let mut unknown = good.clone();
    unknown[2..10].copy_from_slice(&0xdead_beef_u64.to_le_bytes());
    assert_eq!(
        c.decode(&unknown),
        Err(CodecError::UnknownFingerprint(0xdead_beef))
    );

    let truncated = &good[..good.len() - 3];
    assert!(matches!(
        c.decode(truncated),
        Err(CodecError::InvalidData(_))
    ));

    let mut trailing = good.clone();
    trailing.extend_from_slice(b"xx");
    assert_eq!(c.decode(&trailing), Err(CodecError::TrailingBytes(2)));

    let payment = codec::<PaymentEvent>()
        .encode(&PaymentEvent {
            payment_id: "p".into(),
            booking_id: "b".into(),
            customer_id: "c".into(),
            amount: 1.0,
            currency: "EUR".into(),
            method: PaymentMethod::Card,
            requested_at: 0,
        })
        .unwrap();
    assert!(matches!(
        c.decode(&payment),
        Err(CodecError::Incompatible { .. })
    ));

    let confluent = [0u8, 0, 0, 0, 7, 1, 2, 3];
    assert_eq!(c.decode(&confluent), Err(CodecError::NoRegistry(7)));
}

#[test]
fn an_enum_symbol_outside_the_schema_is_malformed() {
    let c = codec::<BookingEvent>();
    let mut bytes = c.encode(&booking()).unwrap();
    // The status enum index is the last byte but the metadata union; rewrite a PENDING record's
    // index (0) to 9, a symbol the schema does not have.
    let meta_len = "{\"source\":\"test\"}".len() + 2; // union branch + length + bytes
    let idx = bytes.len() - meta_len - 1;
    assert_eq!(bytes[idx], 0);
    bytes[idx] = 18; // zig-zag 9
    assert!(c.decode(&bytes).is_err());
}

#[test]
fn a_varint_running_past_64_bits_is_malformed() {
    let b = BookingEvent {
        booking_id: String::new(),
        customer_id: String::new(),
        hotel_id: String::new(),
        check_in: 1 << 62,
        ..booking()
    };
    let c = codec::<BookingEvent>();
    let mut bytes = c.encode(&b).unwrap();
    // Header, three empty strings, then check_in: zig-zag 2^63 is nine 0x80 bytes and 0x01.
    let last = 10 + 3 + 9;
    assert_eq!(
        &bytes[13..=last],
        &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]
    );
    bytes[last] = 0x02;
    assert!(matches!(c.decode(&bytes), Err(CodecError::InvalidData(_))));
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = codec::<BookingEvent>().decode(&bytes);
    }

    #[test]
    fn decoding_corrupted_records_never_panics(flip in 10usize..80, value in any::<u8>()) {
        let c = codec::<BookingEvent>();
        let mut bytes = c.encode(&booking()).unwrap();
        let i = flip % bytes.len();
        bytes[i] = value;
        let _ = c.decode(&bytes);
    }

    #[test]
    fn any_booking_round_trips(
        id in "[a-z0-9-]{1,40}",
        amount in 0.01f64..1e9,
        check_in in 0i64..4_000_000_000_000,
        nights in 1i64..60,
        meta in proptest::option::of(".{0,50}"),
    ) {
        let b = BookingEvent {
            booking_id: id,
            check_in,
            check_out: check_in + nights * 86_400_000,
            total_amount: amount,
            metadata: meta,
            ..booking()
        };
        let c = codec::<BookingEvent>();
        prop_assert_eq!(c.decode(&c.encode(&b).unwrap()).unwrap(), b);
    }
}

/// apache-avro's encoding of `value` with the codec's schema, framed like the codec's: the
/// reference the codec's own (serde_avro_fast) path must match byte for byte.
fn reference_encode<T: AvroType>(value: &T) -> Vec<u8> {
    let c = codec::<T>();
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(c.schema().schema)
        .human_readable(false)
        .build()
        .unwrap();
    let mut out = single_object_header(c.schema().fingerprint).to_vec();
    writer.write_ser(&mut out, value).unwrap();
    out
}

/// apache-avro's decoding of a framed record written with the codec's own schema.
fn reference_decode<T: AvroType>(bytes: &[u8]) -> Option<T> {
    let c = codec::<T>();
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(c.schema().schema)
        .human_readable(false)
        .build()
        .unwrap();
    let mut body = bytes.get(10..)?;
    let value = reader.read_deser::<T>(&mut body).ok()?;
    body.is_empty().then_some(value)
}

fn any_booking() -> impl Strategy<Value = BookingEvent> {
    (
        ".{0,40}",
        ".{0,20}",
        ".{0,20}",
        any::<i64>(),
        any::<i64>(),
        any::<f64>(),
        "[A-Z]{3}",
        prop_oneof![
            Just(BookingStatus::Pending),
            Just(BookingStatus::Confirmed),
            Just(BookingStatus::Cancelled)
        ],
        proptest::option::of(".{0,50}"),
    )
        .prop_map(|t| BookingEvent {
            booking_id: t.0,
            customer_id: t.1,
            hotel_id: t.2,
            check_in: t.3,
            check_out: t.4,
            total_amount: t.5,
            currency: t.6,
            status: t.7,
            metadata: t.8,
        })
}

proptest! {
    #[test]
    fn bookings_encode_to_the_reference_bytes(b in any_booking()) {
        let bytes = codec::<BookingEvent>().encode(&b).unwrap();
        prop_assert_eq!(&bytes, &reference_encode(&b));
        let back = reference_decode::<BookingEvent>(&bytes).unwrap();
        prop_assert_eq!(format!("{back:?}"), format!("{b:?}"), "NaN-safe equality");
    }

    #[test]
    fn inventory_events_encode_to_the_reference_bytes(
        event_id in ".{0,30}",
        hotel_id in ".{0,20}",
        kind in prop_oneof![
            Just(InventoryEventType::Restock),
            Just(InventoryEventType::Reserve),
            Just(InventoryEventType::Release)
        ],
        quantity in any::<i32>(),
        booking_id in proptest::option::of(".{0,30}"),
        occurred_at in any::<i64>(),
    ) {
        let i = InventoryEvent { event_id, hotel_id, kind, quantity, booking_id, occurred_at };
        let bytes = codec::<InventoryEvent>().encode(&i).unwrap();
        prop_assert_eq!(&bytes, &reference_encode(&i));
        prop_assert_eq!(reference_decode::<InventoryEvent>(&bytes), Some(i));
    }

    /// Any body behind our own header decodes as apache-avro decodes it: the same value, or an
    /// error. The codec may be stricter only on bytes that are not how Avro writes the value:
    /// apache-avro 0.22 reads a varint running past 64 bits by dropping the high bits (Java's
    /// Avro refuses it as an invalid encoding), the codec refuses it (found by this test).
    #[test]
    fn own_schema_decodes_as_the_reference_does(
        b in any_booking(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let c = codec::<BookingEvent>();
        let mut bytes = c.encode(&b).unwrap();
        for (at, value) in edits {
            let i = 10 + at % (bytes.len() - 10);
            bytes[i] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(10 + cut % (bytes.len() - 9));
        }
        let ours = c.decode(&bytes).ok();
        match (ours, reference_decode::<BookingEvent>(&bytes)) {
            (None, Some(lenient)) => prop_assert_ne!(
                c.encode(&lenient).unwrap(),
                bytes,
                "the codec refused a record as Avro writes it"
            ),
            (ours, reference) => prop_assert_eq!(format!("{ours:?}"), format!("{reference:?}")),
        }
    }
}
