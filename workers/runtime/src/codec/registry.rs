//! A minimal Confluent Schema Registry client: look a schema up by id, register a schema
//! under a subject. Both answers are cached for the life of the process (ids are immutable).
//!
//! Calls are blocking and happen only on a cache miss (the first record of each writer schema,
//! the first output of each subject), so they do not sit on the per-record path.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::Deserialize;

use super::CodecError;
use super::store::KnownSchema;

/// Client of one schema registry.
#[derive(Debug)]
pub struct RegistryClient {
    base: String,
    agent: ureq::Agent,
    by_id: DashMap<u32, Arc<KnownSchema>>,
    ids: DashMap<(String, u64), u32>,
}

#[derive(Deserialize)]
struct SchemaById {
    schema: String,
}

#[derive(Deserialize)]
struct Registered {
    id: u32,
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl RegistryClient {
    /// A client for the registry at `url` (for example `http://localhost:8081`).
    pub fn new(url: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self {
            base: url.trim_end_matches('/').to_owned(),
            agent,
            by_id: DashMap::new(),
            ids: DashMap::new(),
        }
    }

    /// The schema with this id.
    pub fn schema(&self, id: u32) -> Result<Arc<KnownSchema>, CodecError> {
        if let Some(known) = self.by_id.get(&id) {
            return Ok(known.clone());
        }
        let url = format!("{}/schemas/ids/{id}", self.base);
        let body: SchemaById = match self.agent.get(&url).call() {
            Ok(resp) => resp
                .into_body()
                .read_json()
                .map_err(|e| self.unavailable(&url, e))?,
            Err(ureq::Error::StatusCode(404)) => return Err(CodecError::UnknownSchemaId(id)),
            Err(e) => return Err(self.unavailable(&url, e)),
        };
        let known = Arc::new(KnownSchema::parse(
            &format!("registry id {id}"),
            id,
            &body.schema,
        )?);
        self.by_id.insert(id, known.clone());
        Ok(known)
    }

    /// Registers `schema` under `subject` (idempotent on the registry's side) and returns its id.
    pub fn register(&self, subject: &str, schema: &KnownSchema) -> Result<u32, CodecError> {
        let cache_key = (subject.to_owned(), schema.fingerprint);
        if let Some(id) = self.ids.get(&cache_key) {
            return Ok(*id);
        }
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = serde_json::json!({ "schema": schema.json });
        let registered: Registered = self
            .agent
            .post(&url)
            .header("Content-Type", CONTENT_TYPE)
            .send_json(&body)
            .and_then(|resp| resp.into_body().read_json())
            .map_err(|e| self.unavailable(&url, e))?;
        self.ids.insert(cache_key, registered.id);
        Ok(registered.id)
    }

    fn unavailable(&self, url: &str, error: ureq::Error) -> CodecError {
        CodecError::Registry(format!("{url}: {error}"))
    }
}
