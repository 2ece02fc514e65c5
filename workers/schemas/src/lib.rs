//! The fleet's record types: the Avro schemas under `schemas/` (compiled into the binary),
//! the Rust types that read and write them, and checks shared by several domains.
//!
//! Every `.avsc` version is registered in [`store`], so a reader can decode any version it
//! was built with. A Rust type reads and writes the version named by [`AvroType::VERSION`];
//! older and newer versions are resolved against it.

mod currency;
mod types;

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use streamfleet_runtime::codec::{AvroCodec, CodecError, RegistryClient, SchemaStore, WireFormat};

pub use currency::is_iso4217;
pub use types::*;

/// Every schema file: (path under `schemas/`, version, JSON).
pub const SCHEMA_FILES: &[(&str, u32, &str)] = &[
    (
        "booking/BookingEvent.v1.avsc",
        1,
        include_str!("../../../schemas/booking/BookingEvent.v1.avsc"),
    ),
    (
        "booking/BookingEvent.v2.avsc",
        2,
        include_str!("../../../schemas/booking/BookingEvent.v2.avsc"),
    ),
    (
        "inventory/InventoryEvent.v1.avsc",
        1,
        include_str!("../../../schemas/inventory/InventoryEvent.v1.avsc"),
    ),
    (
        "inventory/InventoryOutcome.v1.avsc",
        1,
        include_str!("../../../schemas/inventory/InventoryOutcome.v1.avsc"),
    ),
    (
        "payment/PaymentEvent.v1.avsc",
        1,
        include_str!("../../../schemas/payment/PaymentEvent.v1.avsc"),
    ),
    (
        "payment/PaymentCompleted.v1.avsc",
        1,
        include_str!("../../../schemas/payment/PaymentCompleted.v1.avsc"),
    ),
];

/// The schemas this binary knows.
pub fn store() -> Arc<SchemaStore> {
    static STORE: OnceLock<Arc<SchemaStore>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let mut store = SchemaStore::new();
            for (path, version, json) in SCHEMA_FILES {
                store
                    .register(path, *version, json)
                    .unwrap_or_else(|e| panic!("built-in schema {path}: {e}"));
            }
            Arc::new(store)
        })
        .clone()
}

/// A Rust type with an Avro schema in [`store`].
pub trait AvroType: Serialize + DeserializeOwned {
    /// Full schema name.
    const NAME: &'static str;
    /// The schema version this type reads and writes.
    const VERSION: u32;
}

/// How a process frames the Avro records it writes.
#[derive(Debug, Clone, Default)]
pub struct Encoding {
    registry: Option<Arc<RegistryClient>>,
}

impl Encoding {
    /// Single-object encoding, or Confluent framing when a registry URL is given.
    pub fn new(schema_registry_url: Option<&str>) -> Self {
        Self {
            registry: schema_registry_url.map(|u| Arc::new(RegistryClient::new(u))),
        }
    }

    /// A codec for `T`, writing records for `topic` (the registry subject is `<topic>-value`).
    pub fn codec<T: AvroType>(&self, topic: &str) -> Result<AvroCodec<T>, CodecError> {
        let format = match &self.registry {
            Some(registry) => WireFormat::Confluent {
                registry: registry.clone(),
                subject: format!("{topic}-value"),
            },
            None => WireFormat::SingleObject,
        };
        AvroCodec::new(store(), T::NAME, T::VERSION, format, self.registry.clone())
    }
}
