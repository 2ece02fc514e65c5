//! Confluent framing (magic byte 0 + schema id) against a schema registry: ids are
//! registered per subject (`<topic>-value`), looked up by id when reading, and a registry
//! outage is a transient error (the record is retried, not dead-lettered).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use streamfleet_runtime::ProcessError;
use streamfleet_runtime::codec::CodecError;
use streamfleet_schemas::{BookingEvent, BookingEventV2, BookingStatus, Encoding};

#[derive(Default)]
struct Registry {
    schemas: Vec<String>,
    subjects: BTreeMap<String, Vec<u32>>,
}

type Shared = Arc<Mutex<Registry>>;

async fn register(
    State(r): State<Shared>,
    Path(subject): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let schema = body["schema"].as_str().expect("schema string").to_owned();
    let mut r = r.lock().unwrap();
    let id = match r.schemas.iter().position(|s| *s == schema) {
        Some(i) => i as u32 + 1,
        None => {
            r.schemas.push(schema);
            r.schemas.len() as u32
        }
    };
    let versions = r.subjects.entry(subject).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    Json(json!({ "id": id }))
}

async fn by_id(State(r): State<Shared>, Path(id): Path<u32>) -> Result<Json<Value>, StatusCode> {
    let r = r.lock().unwrap();
    let schema = r
        .schemas
        .get(id as usize - 1)
        .ok_or(StatusCode::NOT_FOUND)?;
    Ok(Json(json!({ "schema": schema })))
}

async fn fake_registry() -> (String, Shared) {
    let shared = Shared::default();
    let app = Router::new()
        .route("/subjects/{subject}/versions", post(register))
        .route("/schemas/ids/{id}", get(by_id))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}

fn booking() -> BookingEvent {
    BookingEvent {
        booking_id: "b-1".into(),
        customer_id: "c".into(),
        hotel_id: "h".into(),
        check_in: 1,
        check_out: 2,
        total_amount: 10.0,
        currency: "EUR".into(),
        status: BookingStatus::Pending,
        metadata: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_framing_registers_per_subject_and_resolves_by_id() {
    let (url, registry) = fake_registry().await;
    tokio::task::spawn_blocking(move || {
        let encoding = Encoding::new(Some(&url));
        let codec = encoding.codec::<BookingEvent>("booking-events").unwrap();
        let bytes = codec.encode(&booking()).unwrap();
        assert_eq!(bytes[0], 0, "Confluent magic byte");
        let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
        assert_eq!(codec.decode(&bytes).unwrap(), booking());

        // A v2 writer registers a second id under the same subject; v1 readers resolve it.
        let v2 = BookingEventV2 {
            v1: BookingEvent {
                booking_id: "b-2".into(),
                status: BookingStatus::Cancelled,
                ..booking()
            },
            channel: "partner".into(),
        };
        let v2_bytes = encoding
            .codec::<BookingEventV2>("booking-events")
            .unwrap()
            .encode(&v2)
            .unwrap();
        let v2_id = u32::from_be_bytes(v2_bytes[1..5].try_into().unwrap());
        assert_ne!(id, v2_id);
        assert_eq!(codec.decode(&v2_bytes).unwrap(), v2.v1);

        // Single-object records still decode where a registry is configured (migrations).
        let single = Encoding::default()
            .codec::<BookingEvent>("x")
            .unwrap()
            .encode(&booking())
            .unwrap();
        assert_eq!(single[..2], [0xC3, 0x01]);
        assert_eq!(codec.decode(&single).unwrap(), booking());

        // An id the registry does not have is malformed, not transient.
        let mut unknown = bytes.clone();
        unknown[1..5].copy_from_slice(&999u32.to_be_bytes());
        let err = codec.decode(&unknown).unwrap_err();
        assert_eq!(err, CodecError::UnknownSchemaId(999));
        assert!(matches!(
            ProcessError::from(err),
            ProcessError::Malformed(_)
        ));
        let r = registry.lock().unwrap();
        assert_eq!(r.subjects["booking-events-value"], vec![id, v2_id]);
    })
    .await
    .unwrap();
}

#[test]
fn a_registry_outage_is_a_transient_error() {
    let codec = Encoding::new(Some("http://127.0.0.1:9"))
        .codec::<BookingEvent>("booking-events")
        .unwrap();
    let err = codec.encode(&booking()).unwrap_err();
    assert!(err.is_transient(), "{err}");
    let err = codec.decode(&[0, 0, 0, 0, 1, 2, 3]).unwrap_err();
    assert!(matches!(
        ProcessError::from(err),
        ProcessError::Transient(_)
    ));
}
