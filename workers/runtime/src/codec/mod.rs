//! Avro encoding on the wire: single-object encoding by default, Confluent framing when a
//! schema registry is configured.
//!
//! ```text
//! single object:  C3 01 | fingerprint (8 bytes, little-endian CRC-64-AVRO) | Avro binary
//! Confluent:      00    | schema id (4 bytes, big-endian)                  | Avro binary
//! ```
//!
//! Decoding detects the framing from the first bytes, finds the writer schema (by fingerprint
//! in the binary's [`SchemaStore`], by id in the registry) and resolves it against the reader
//! schema of the Rust type, so records written by an older or newer compatible schema version
//! decode. Encoding always writes with the type's own schema in the configured framing.
//!
//! Two Avro implementations share the work. The hot path (a record written with the reader's
//! own schema, and every encode) goes through `serde_avro_fast`, straight between the bytes and
//! the Rust type. apache-avro parses the schemas, computes their fingerprints and resolves a
//! record written by another schema version (through an intermediate `Value`, which is slower
//! and rare). Both write the same bytes: Avro's binary encoding of these records is canonical,
//! and property tests hold the two to it, and to the same decoded values. One difference is
//! known and kept: a varint running past 64 bits is refused here (as Java's Avro refuses it),
//! where apache-avro 0.22 drops the high bits.
//!
//! Every failure is a [`CodecError`]; [`CodecError::is_transient`] says whether retrying can
//! help (a registry that is down) or the bytes are simply not decodable (dead-letter them).

mod registry;
mod store;

use std::io::BufRead as _;
use std::marker::PhantomData;
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use dashmap::DashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use apache_avro::Schema;
pub use apache_avro::headers::{HeaderBuilder, RabinFingerprintHeader};
pub use registry::RegistryClient;
pub use store::{KnownSchema, PairCheck, SchemaStore, fingerprint};

use crate::processor::ProcessError;

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Too few bytes for any framing.
    #[error("record too short for Avro framing ({0} bytes)")]
    TooShort(usize),
    /// The first bytes are neither `C3 01` nor a Confluent magic byte.
    #[error(
        "unknown framing: first bytes {0:02x?} are neither single-object (c3 01) nor Confluent (00)"
    )]
    UnknownFraming(Vec<u8>),
    /// A single-object header names a schema this binary does not know.
    #[error(
        "unknown writer schema: fingerprint {0:#018x} is not among the schemas this binary knows"
    )]
    UnknownFingerprint(u64),
    /// The registry has no schema with this id.
    #[error("unknown writer schema: the schema registry has no schema id {0}")]
    UnknownSchemaId(u32),
    /// A Confluent-framed record arrived but no registry is configured.
    #[error("Confluent-framed record (schema id {0}) but no schema registry URL is configured")]
    NoRegistry(u32),
    /// The registry could not be reached or answered badly; retrying may help.
    #[error("schema registry unavailable: {0}")]
    Registry(String),
    /// The writer schema cannot be read as the reader schema.
    #[error("writer schema {writer} cannot be read as {reader}: {message}")]
    Incompatible {
        /// Writer schema name and origin.
        writer: String,
        /// Reader schema name.
        reader: String,
        /// What failed.
        message: String,
    },
    /// The Avro body does not match its writer schema, or the value does not fit the type.
    #[error("invalid Avro data: {0}")]
    InvalidData(String),
    /// Bytes were left over after the record.
    #[error("{0} trailing bytes after the Avro record")]
    TrailingBytes(usize),
    /// A schema file or registry answer is not a valid schema.
    #[error("invalid schema {origin}: {message}")]
    InvalidSchema {
        /// File or registry id.
        origin: String,
        /// Parser message.
        message: String,
    },
    /// The reader type's schema is not in the store.
    #[error("schema {0} is not registered in this binary")]
    UnknownReader(String),
}

impl CodecError {
    /// Whether retrying later can succeed (only registry outages).
    pub fn is_transient(&self) -> bool {
        matches!(self, CodecError::Registry(_))
    }
}

impl From<CodecError> for ProcessError {
    fn from(e: CodecError) -> Self {
        if e.is_transient() {
            ProcessError::Transient(e.to_string())
        } else {
            ProcessError::Malformed(e.to_string())
        }
    }
}

/// How encoded records are framed.
#[derive(Debug, Clone)]
pub enum WireFormat {
    /// Avro single-object encoding (the default): no external service needed.
    SingleObject,
    /// Confluent framing with ids from a schema registry, subject `subject`.
    Confluent {
        /// The registry.
        registry: Arc<RegistryClient>,
        /// Subject to register the writer schema under (topic-name strategy: `<topic>-value`).
        subject: String,
    },
}

enum Frame<'b> {
    SingleObject(u64, &'b [u8]),
    Confluent(u32, &'b [u8]),
}

fn frame(bytes: &[u8]) -> Result<Frame<'_>, CodecError> {
    match bytes {
        [0xC3, 0x01, rest @ ..] if rest.len() >= 8 => {
            let (fp, body) = rest.split_at(8);
            let fp = u64::from_le_bytes(fp.try_into().expect("8 bytes"));
            Ok(Frame::SingleObject(fp, body))
        }
        [0x00, rest @ ..] if rest.len() >= 4 => {
            let (id, body) = rest.split_at(4);
            Ok(Frame::Confluent(
                u32::from_be_bytes(id.try_into().expect("4 bytes")),
                body,
            ))
        }
        [0xC3, 0x01, ..] | [0x00, ..] | [] | [_] => Err(CodecError::TooShort(bytes.len())),
        _ => Err(CodecError::UnknownFraming(bytes[..2].to_vec())),
    }
}

/// The single-object header for a schema fingerprint.
pub fn single_object_header(fingerprint: u64) -> [u8; 10] {
    let mut header = [0u8; 10];
    header[0] = 0xC3;
    header[1] = 0x01;
    header[2..].copy_from_slice(&fingerprint.to_le_bytes());
    header
}

/// A reader that resolves one writer schema against the codec's own.
struct Reader {
    datum: GenericDatumReader<'static>,
    writer: String,
}

/// Encodes and decodes one Rust type as Avro, in one wire format.
pub struct AvroCodec<T> {
    store: Arc<SchemaStore>,
    schema: Arc<KnownSchema>,
    /// The same schema for `serde_avro_fast`: every encode, and decodes of records written
    /// with it.
    fast: serde_avro_fast::Schema,
    format: WireFormat,
    registry: Option<Arc<RegistryClient>>,
    readers: DashMap<u64, Arc<Reader>>,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for AvroCodec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroCodec")
            .field("schema", &self.schema.name)
            .field("version", &self.schema.version)
            .field("format", &self.format)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> AvroCodec<T> {
    /// A codec for the type whose schema is `name` version `version` in `store`.
    ///
    /// `registry` is used to decode Confluent-framed input even when `format` is
    /// single-object (a topic may carry both during a migration).
    pub fn new(
        store: Arc<SchemaStore>,
        name: &str,
        version: u32,
        format: WireFormat,
        registry: Option<Arc<RegistryClient>>,
    ) -> Result<Self, CodecError> {
        let schema = store
            .version(name, version)
            .cloned()
            .ok_or_else(|| CodecError::UnknownReader(format!("{name} v{version}")))?;
        let fast = schema
            .json
            .parse::<serde_avro_fast::Schema>()
            .map_err(|e| CodecError::InvalidSchema {
                origin: schema.origin.clone(),
                message: e.to_string(),
            })?;
        let registry = match &format {
            WireFormat::Confluent { registry, .. } => Some(registry.clone()),
            WireFormat::SingleObject => registry,
        };
        Ok(Self {
            store,
            schema,
            fast,
            format,
            registry,
            readers: DashMap::new(),
            _type: PhantomData,
        })
    }

    /// The schema this codec writes with and reads into.
    pub fn schema(&self) -> &KnownSchema {
        &self.schema
    }

    /// Encodes `value` in the codec's wire format.
    pub fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(128);
        match &self.format {
            WireFormat::SingleObject => {
                out.extend_from_slice(&single_object_header(self.schema.fingerprint))
            }
            WireFormat::Confluent { registry, subject } => {
                let id = registry.register(subject, &self.schema)?;
                out.push(0);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        let mut config = serde_avro_fast::ser::SerializerConfig::new(&self.fast);
        serde_avro_fast::to_datum(value, out, &mut config)
            .map_err(|e| CodecError::InvalidData(e.to_string()))
    }

    /// Decodes a framed record, resolving its writer schema against this codec's schema.
    pub fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let (writer, body) = match frame(bytes)? {
            Frame::SingleObject(fp, body) if fp == self.schema.fingerprint => {
                return self.decode_own(body);
            }
            Frame::SingleObject(fp, body) => {
                let writer = self
                    .store
                    .by_fingerprint(fp)
                    .cloned()
                    .ok_or(CodecError::UnknownFingerprint(fp))?;
                (writer, body)
            }
            Frame::Confluent(id, body) => {
                let registry = self.registry.as_ref().ok_or(CodecError::NoRegistry(id))?;
                (registry.schema(id)?, body)
            }
        };
        // A registry id can name this codec's own schema: the same hot path. (Single-object
        // records with its fingerprint took it above, before the store look-up.)
        if writer.fingerprint == self.schema.fingerprint {
            return self.decode_own(body);
        }
        let reader = self.reader_for(&writer)?;
        let mut cursor = body;
        let value = reader
            .datum
            .read_value(&mut cursor)
            .map_err(|e| self.incompatible(&reader, e))?;
        if !cursor.is_empty() {
            return Err(CodecError::TrailingBytes(cursor.len()));
        }
        apache_avro::from_value::<T>(&value).map_err(|e| CodecError::InvalidData(e.to_string()))
    }

    /// Decodes a body written with this codec's own schema: the hot path.
    fn decode_own(&self, body: &[u8]) -> Result<T, CodecError> {
        let mut state = serde_avro_fast::de::DeserializerState::from_slice(body, &self.fast);
        let value = T::deserialize(state.deserializer())
            .map_err(|e| CodecError::InvalidData(e.to_string()))?;
        let trailing = state.into_reader().fill_buf().map_or(0, |rest| rest.len());
        if trailing > 0 {
            return Err(CodecError::TrailingBytes(trailing));
        }
        Ok(value)
    }

    /// The resolving reader for a writer schema other than this codec's own.
    fn reader_for(&self, writer: &Arc<KnownSchema>) -> Result<Arc<Reader>, CodecError> {
        if let Some(r) = self.readers.get(&writer.fingerprint) {
            return Ok(r.clone());
        }
        let incompatible = |message: String| CodecError::Incompatible {
            writer: format!("{} ({})", writer.name, writer.origin),
            reader: self.schema.name.clone(),
            message,
        };
        if writer.name != self.schema.name {
            return Err(incompatible("different record names".into()));
        }
        let datum = GenericDatumReader::builder(writer.schema)
            .human_readable(false)
            .reader_schema(self.schema.schema)
            .build()
            .map_err(|e| incompatible(e.to_string()))?;
        let reader = Arc::new(Reader {
            datum,
            writer: format!("{} v{} ({})", writer.name, writer.version, writer.origin),
        });
        self.readers.insert(writer.fingerprint, reader.clone());
        Ok(reader)
    }

    fn incompatible(&self, reader: &Reader, e: apache_avro::Error) -> CodecError {
        CodecError::Incompatible {
            writer: reader.writer.clone(),
            reader: format!("{} v{}", self.schema.name, self.schema.version),
            message: e.to_string(),
        }
    }
}
