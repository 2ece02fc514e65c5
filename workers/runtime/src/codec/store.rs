//! The schemas a binary knows, indexed by CRC-64-AVRO fingerprint and by full name.
//!
//! Every `.avsc` version a binary ships is registered here at start-up. A reader looks the
//! writer schema of an incoming record up by the fingerprint in its single-object header; the
//! compatibility check walks every version pair of every name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

use super::CodecError;

/// One parsed schema version.
#[derive(Debug)]
pub struct KnownSchema {
    /// Full name (`namespace.Name`).
    pub name: String,
    /// Version number within its name (from the file name, or the registry's id order).
    pub version: u32,
    /// CRC-64-AVRO (Rabin) fingerprint of the parsing canonical form.
    pub fingerprint: u64,
    /// The parsed schema. Schemas live for the whole process: a binary knows a handful, and
    /// registry look-ups are cached, so the set is bounded.
    pub schema: &'static Schema,
    /// The schema JSON as written (with defaults and docs), as sent to a schema registry.
    pub json: String,
    /// Where the schema came from (a file name or a registry id), for error messages.
    pub origin: String,
}

impl KnownSchema {
    /// Parses a schema and computes its fingerprint.
    pub fn parse(origin: &str, version: u32, json: &str) -> Result<Self, CodecError> {
        let schema = Schema::parse_str(json).map_err(|e| CodecError::InvalidSchema {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let name = match &schema {
            Schema::Record(r) => r.name.fullname(None),
            Schema::Enum(e) => e.name.fullname(None),
            Schema::Fixed(f) => f.name.fullname(None),
            other => format!("{:?}", std::mem::discriminant(other)),
        };
        Ok(Self {
            name,
            version,
            fingerprint: fingerprint(&schema),
            schema: Box::leak(Box::new(schema)),
            json: json.to_owned(),
            origin: origin.to_owned(),
        })
    }
}

/// The CRC-64-AVRO fingerprint of a schema, as the single-object header carries it
/// (little-endian on the wire).
pub fn fingerprint(schema: &Schema) -> u64 {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(le)
}

/// The result of checking one ordered (writer, reader) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairCheck {
    /// Full schema name.
    pub name: String,
    /// Version that wrote.
    pub writer: u32,
    /// Version that reads.
    pub reader: u32,
    /// `None` when the reader can always read the writer's data, else why not.
    pub problem: Option<String>,
}

/// The set of schemas a binary knows.
#[derive(Debug, Default)]
pub struct SchemaStore {
    by_fingerprint: HashMap<u64, Arc<KnownSchema>>,
    by_name: BTreeMap<String, Vec<Arc<KnownSchema>>>,
}

impl SchemaStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses and adds one schema version. Adding the same schema twice is an error, as is a
    /// second schema with the same name and version.
    pub fn register(
        &mut self,
        origin: &str,
        version: u32,
        json: &str,
    ) -> Result<Arc<KnownSchema>, CodecError> {
        let known = Arc::new(KnownSchema::parse(origin, version, json)?);
        if let Some(existing) = self.by_fingerprint.get(&known.fingerprint) {
            return Err(CodecError::InvalidSchema {
                origin: origin.to_owned(),
                message: format!("identical to {} (same fingerprint)", existing.origin),
            });
        }
        let versions = self.by_name.entry(known.name.clone()).or_default();
        if versions.iter().any(|k| k.version == version) {
            return Err(CodecError::InvalidSchema {
                origin: origin.to_owned(),
                message: format!("{} version {version} is registered twice", known.name),
            });
        }
        versions.push(known.clone());
        versions.sort_by_key(|k| k.version);
        self.by_fingerprint.insert(known.fingerprint, known.clone());
        Ok(known)
    }

    /// The schema with this fingerprint.
    pub fn by_fingerprint(&self, fingerprint: u64) -> Option<&Arc<KnownSchema>> {
        self.by_fingerprint.get(&fingerprint)
    }

    /// Every version of a name, oldest first.
    pub fn versions(&self, name: &str) -> &[Arc<KnownSchema>] {
        self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// One version of a name.
    pub fn version(&self, name: &str, version: u32) -> Option<&Arc<KnownSchema>> {
        self.versions(name).iter().find(|k| k.version == version)
    }

    /// Every known full name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Checks every ordered pair of versions of every name: each version must read the data
    /// of every other (full transitive compatibility), so that producers and consumers can be
    /// upgraded in any order.
    pub fn check_compatibility(&self) -> Vec<PairCheck> {
        let mut checks = Vec::new();
        for (name, versions) in &self.by_name {
            for writer in versions {
                for reader in versions {
                    if writer.version == reader.version {
                        continue;
                    }
                    let problem = match SchemaCompatibility::can_read(writer.schema, reader.schema)
                    {
                        Ok(Compatibility::Full) => None,
                        Ok(Compatibility::Partial) => Some(
                            "only partially compatible: some values (enum symbols or union \
                             branches) cannot be read"
                                .to_owned(),
                        ),
                        Err(e) => Some(e.to_string()),
                    };
                    checks.push(PairCheck {
                        name: name.clone(),
                        writer: writer.version,
                        reader: reader.version,
                        problem,
                    });
                }
            }
        }
        checks
    }
}
