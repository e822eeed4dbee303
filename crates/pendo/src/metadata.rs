//! Metadata writes (Salesforce → Pendo): bulk value updates in batches of 500 with an outcome per
//! id, single-value get/set, and custom field creation.
//!
//! The bulk endpoint only answers counts (`total`, `updated`, `failed`, `missing`); it never
//! says *which* records failed. Writes are idempotent upserts, so when a batch reports failures
//! the client re-sends it in halves until every failure is pinned to one id.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Client;
use crate::entities::Kind;
use crate::error::{Error, Result};
use crate::transport::{Body, segment};

/// Records per bulk call: what production writers send (Red Hat's inventory sync uses 500); the
/// server's own maximum is undocumented.
pub const BATCH_SIZE: usize = 500;

#[derive(Clone, Debug, PartialEq)]
pub struct MetadataUpdate {
    pub id: String,
    pub values: Map<String, Value>,
}

/// What happened to one id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Updated,
    /// No such visitor/account (and `create` was off).
    Missing,
    /// Pendo refused the record (unknown field, wrong type).
    Failed,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct BulkReport {
    /// In input order.
    pub outcomes: Vec<(String, Outcome)>,
    /// Calls made, including re-sends to attribute failures.
    pub requests: u32,
}

impl BulkReport {
    pub fn count(&self, o: Outcome) -> usize {
        self.outcomes.iter().filter(|(_, x)| *x == o).count()
    }
}

#[derive(Clone, Debug, Deserialize)]
struct BulkResponse {
    #[serde(default)]
    failed: u64,
    #[serde(default)]
    missing: Option<Vec<Value>>,
}

/// A custom field to create.
#[derive(Clone, Debug, Serialize)]
pub struct FieldSpec {
    pub name: String,
    pub displayname: String,
    /// `string`, `number`, `boolean` or `time`.
    #[serde(rename = "type")]
    pub field_type: String,
}

fn id_key(kind: Kind) -> &'static str {
    match kind {
        Kind::Visitor => "visitorId",
        Kind::Account => "accountId",
    }
}

impl Client {
    async fn bulk_call(&self, kind: Kind, group: &str, batch: &[MetadataUpdate], create: bool) -> Result<BulkResponse> {
        let body: Vec<Value> = batch.iter().map(|u| json!({ id_key(kind): u.id, "values": u.values })).collect();
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::Pipeline(e.to_string()))?;
        let path = format!("/metadata/{}/{}/value", kind.as_str(), segment(group));
        let q: Vec<(&str, String)> = if create { vec![("create", "true".into())] } else { vec![] };
        self.transport.json(Method::POST, &path, &q, Body::Json(bytes)).await
    }

    /// Writes `updates` into `metadata.<group>` (`custom` or `agent`), 500 per call.
    ///
    /// # Errors
    /// Request errors (a 403 means the key lacks write access). Per-record refusals are not
    /// errors: they are [`Outcome::Failed`] in the report.
    pub async fn set_metadata(
        &self,
        kind: Kind,
        group: &str,
        updates: &[MetadataUpdate],
        create: bool,
    ) -> Result<BulkReport> {
        let mut report = BulkReport::default();
        for batch in updates.chunks(BATCH_SIZE) {
            let mut stack: Vec<(usize, usize)> = vec![(0, batch.len())];
            let mut results: Vec<(usize, Outcome)> = Vec::with_capacity(batch.len());
            while let Some((lo, hi)) = stack.pop() {
                let part = &batch[lo..hi];
                let resp = self.bulk_call(kind, group, part, create).await?;
                report.requests += 1;
                let missing: Vec<String> = resp
                    .missing
                    .unwrap_or_default()
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect();
                if resp.failed == 0 {
                    for (i, u) in part.iter().enumerate() {
                        let o = if missing.contains(&u.id) { Outcome::Missing } else { Outcome::Updated };
                        results.push((lo + i, o));
                    }
                } else if part.len() == 1 {
                    results.push((lo, Outcome::Failed));
                } else {
                    let mid = lo + part.len() / 2;
                    stack.push((mid, hi));
                    stack.push((lo, mid));
                }
            }
            results.sort_by_key(|(i, _)| *i);
            report.outcomes.extend(results.into_iter().filter_map(|(i, o)| batch.get(i).map(|u| (u.id.clone(), o))));
        }
        Ok(report)
    }

    /// Sets one value (`PUT /metadata/{kind}/{group}/value/{id}/{field}` with the raw JSON value).
    ///
    /// # Errors
    /// Request errors; 404 for an unknown id.
    pub async fn set_value(&self, kind: Kind, group: &str, id: &str, field: &str, value: &Value) -> Result<()> {
        let path = format!("/metadata/{}/{}/value/{}/{}", kind.as_str(), segment(group), segment(id), segment(field));
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Pipeline(e.to_string()))?;
        self.transport.send(Method::PUT, &path, &[], Body::Json(bytes)).await.map(|_| ())
    }

    /// Reads one value (the raw JSON scalar).
    ///
    /// # Errors
    /// Request errors; 404 for an unknown id.
    pub async fn get_value(&self, kind: Kind, group: &str, id: &str, field: &str) -> Result<Value> {
        let path = format!("/metadata/{}/{}/value/{}/{}", kind.as_str(), segment(group), segment(id), segment(field));
        self.transport.json(Method::GET, &path, &[], Body::None).await
    }

    /// Creates (or undeletes) fields in `group`.
    ///
    /// # Errors
    /// Request errors; 403 without write access.
    pub async fn create_fields(&self, kind: Kind, group: &str, fields: &[FieldSpec]) -> Result<()> {
        let path = format!("/metadata/schema/{}/{}", kind.as_str(), segment(group));
        let bytes = serde_json::to_vec(fields).map_err(|e| Error::Pipeline(e.to_string()))?;
        self.transport.send(Method::POST, &path, &[], Body::Json(bytes)).await.map(|_| ())
    }
}
