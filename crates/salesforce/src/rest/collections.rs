//! sObject Collections (`/composite/sobjects`): create, update, upsert, delete and retrieve
//! many records, split automatically into documented-size chunks, one API call per chunk.
//!
//! Results come back in input order. `allOrNone` is honoured per chunk only: Salesforce cannot
//! roll back a chunk that already committed, so atomicity never spans more than 200 records.
//!
//! Per-record failures, lock contention included, are returned in the results and not retried
//! here: only the caller knows which records to re-send (just the failed ones), and re-sending a
//! whole chunk would repeat the creates that succeeded.

use std::future::Future;
use std::ops::Range;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{check_field, check_object, to_object};
use crate::Client;
use crate::error::{Error, RecordError, RecordRef, RequestContext, Result};
use crate::ids::SalesforceId;
use crate::transport::{ApiRequest, Target};

/// Records per Collections create/update/upsert/delete call (documented maximum).
pub const COLLECTIONS_MAX_RECORDS: usize = 200;

/// IDs per Collections retrieve call using the POST body form (documented maximum).
pub const RETRIEVE_MAX_IDS: usize = 2000;

/// Collections upsert exists from this API version on.
const COLLECTIONS_UPSERT_MIN_VERSION: u16 = 46;

/// One record's outcome in a Collections call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaveResult {
    /// The record ID; absent for failed creates.
    #[serde(default)]
    pub id: Option<SalesforceId>,
    /// Whether this record was saved.
    pub success: bool,
    /// Why not, with `statusCode`s.
    #[serde(default)]
    pub errors: Vec<RecordError>,
    /// Upserts only: true when inserted. Real orgs report `true` even for inserts rolled back by
    /// `allOrNone`, so check `success` first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

impl SaveResult {
    /// The first error, if the record failed.
    #[must_use]
    pub fn first_error(&self) -> Option<&RecordError> {
        self.errors.first()
    }
}

impl Client {
    /// Runs `call` once per chunk of `chunk` records and concatenates the results.
    async fn in_chunks<F, Fut>(&self, total: usize, chunk: usize, mut call: F) -> Result<Vec<SaveResult>>
    where
        F: FnMut(Range<usize>) -> Fut,
        Fut: Future<Output = Result<Vec<SaveResult>>>,
    {
        let mut out = Vec::with_capacity(total);
        let mut offset = 0;
        while offset < total {
            let end = (offset + chunk).min(total);
            match call(offset..end).await {
                Ok(results) => out.extend(results),
                Err(source) if out.is_empty() => return Err(source),
                Err(source) => {
                    return Err(Error::Partial { completed: out, failed_offset: offset, source: Box::new(source) });
                }
            }
            offset = end;
        }
        Ok(out)
    }

    /// Sends one chunk and checks that there is exactly one result per record.
    async fn collection_call(&self, request: ApiRequest, expected: usize) -> Result<Vec<SaveResult>> {
        let context = request.context().clone();
        let results: Vec<SaveResult> = self.transport().send_json(request).await?;
        if results.len() != expected {
            return Err(Error::Protocol {
                context,
                reason: format!("sent {expected} records, got {} results", results.len()),
            });
        }
        Ok(results)
    }

    /// `POST /composite/sobjects`: creates `records` of type `object`, 200 per call.
    ///
    /// Chunks are not retried once they may have reached Salesforce (see [`Client::create`]).
    ///
    /// # Errors
    /// Request-level failures. When a later chunk fails, [`Error::Partial`] carries the
    /// results of the chunks that completed. Per-record failures are in the results.
    pub async fn create_many<T: Serialize>(
        &self,
        object: &str,
        records: &[T],
        all_or_none: bool,
    ) -> Result<Vec<SaveResult>> {
        check_object(object)?;
        let records = records.iter().map(|r| with_type(to_object(r)?, object)).collect::<Result<Vec<_>>>()?;
        self.write_in_chunks(Method::POST, "composite/sobjects", object, &records, all_or_none).await
    }

    /// `PATCH /composite/sobjects`: updates `(id, fields)` pairs of type `object`, 200 per call.
    ///
    /// # Errors
    /// As [`Client::create_many`].
    pub async fn update_many<T: Serialize>(
        &self,
        object: &str,
        records: &[(SalesforceId, T)],
        all_or_none: bool,
    ) -> Result<Vec<SaveResult>> {
        check_object(object)?;
        let records = records
            .iter()
            .map(|(id, r)| {
                let mut map = to_object(r)?;
                map.retain(|k, _| !k.eq_ignore_ascii_case("id"));
                map.insert("id".into(), Value::String(id.to_string()));
                with_type(map, object)
            })
            .collect::<Result<Vec<_>>>()?;
        self.write_in_chunks(Method::PATCH, "composite/sobjects", object, &records, all_or_none).await
    }

    /// `PATCH /composite/sobjects/{object}/{field}`: upserts `records` on external ID `field`
    /// (which each record must contain), 200 per call. Needs API v46+.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a record lacks `field` or the version is too old; otherwise
    /// as [`Client::create_many`].
    pub async fn upsert_many<T: Serialize>(
        &self,
        object: &str,
        field: &str,
        records: &[T],
        all_or_none: bool,
    ) -> Result<Vec<SaveResult>> {
        check_object(object)?;
        check_field(field)?;
        if self.api_version().major() < COLLECTIONS_UPSERT_MIN_VERSION {
            return Err(Error::InvalidInput(format!(
                "Collections upsert needs API v{COLLECTIONS_UPSERT_MIN_VERSION}.0 or newer, not {}",
                self.api_version()
            )));
        }
        let records = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let map = to_object(r)?;
                let has_value = map.iter().any(|(k, v)| k.eq_ignore_ascii_case(field) && !v.is_null());
                if !has_value {
                    return Err(Error::InvalidInput(format!("record {i} has no value for external ID field {field}")));
                }
                with_type(map, object)
            })
            .collect::<Result<Vec<_>>>()?;
        self.write_in_chunks(
            Method::PATCH,
            &format!("composite/sobjects/{object}/{field}"),
            object,
            &records,
            all_or_none,
        )
        .await
    }

    /// Sends prepared records to a Collections write resource, 200 per call, results in order.
    async fn write_in_chunks(
        &self,
        method: Method,
        resource: &str,
        object: &str,
        records: &[serde_json::Map<String, Value>],
        all_or_none: bool,
    ) -> Result<Vec<SaveResult>> {
        let path = self.data_path(resource);
        self.in_chunks(records.len(), COLLECTIONS_MAX_RECORDS, |range| {
            let ctx = batch_context(method.clone(), &path, Some(object), &range);
            let body = json!({"allOrNone": all_or_none, "records": &records[range.clone()]});
            let len = range.len();
            let request = ApiRequest::new(method.clone(), Target::Path(path.clone()), ctx).json(&body);
            async move { self.collection_call(request?, len).await }
        })
        .await
    }

    /// `DELETE /composite/sobjects?ids=…&allOrNone=…`: deletes records of any type, 200 per call.
    ///
    /// # Errors
    /// As [`Client::create_many`].
    pub async fn delete_many(&self, ids: &[SalesforceId], all_or_none: bool) -> Result<Vec<SaveResult>> {
        let path = self.data_path("composite/sobjects");
        self.in_chunks(ids.len(), COLLECTIONS_MAX_RECORDS, |range| {
            let ctx = batch_context(Method::DELETE, &path, None, &range);
            let joined = ids[range.clone()].iter().map(SalesforceId::as_str).collect::<Vec<_>>().join(",");
            let request = ApiRequest::new(Method::DELETE, Target::Path(path.clone()), ctx)
                .query("ids", joined)
                .query("allOrNone", all_or_none.to_string());
            let len = range.len();
            async move { self.collection_call(request, len).await }
        })
        .await
    }

    /// `POST /composite/sobjects/{object}` with `{"ids","fields"}`: reads up to 2,000 records
    /// per call. The result has one entry per ID, in order; `None` where the record does not
    /// exist or is not visible.
    ///
    /// # Errors
    /// Request-level failures (e.g. `INVALID_FIELD`); the first failing chunk's error is
    /// returned, as nothing is written.
    pub async fn retrieve_many<T: DeserializeOwned>(
        &self,
        object: &str,
        ids: &[SalesforceId],
        fields: &[&str],
    ) -> Result<Vec<Option<T>>> {
        check_object(object)?;
        if fields.is_empty() {
            return Err(Error::InvalidInput("retrieve_many needs at least one field".into()));
        }
        for f in fields {
            check_field(f)?;
        }
        let path = self.data_path(&format!("composite/sobjects/{object}"));
        let mut out = Vec::with_capacity(ids.len());
        for (n, chunk) in ids.chunks(RETRIEVE_MAX_IDS).enumerate() {
            let range = n * RETRIEVE_MAX_IDS..n * RETRIEVE_MAX_IDS + chunk.len();
            let ctx = batch_context(Method::POST, &path, Some(object), &range);
            let request = ApiRequest::new(Method::POST, Target::Path(path.clone()), ctx.clone())
                .idempotent(true)
                .json(&json!({"ids": chunk, "fields": fields}))?;
            let records: Vec<Option<T>> = self.transport().send_json(request).await?;
            if records.len() != chunk.len() {
                return Err(Error::Protocol {
                    context: ctx,
                    reason: format!("asked for {} IDs, got {} entries", chunk.len(), records.len()),
                });
            }
            out.extend(records);
        }
        Ok(out)
    }
}

/// Adds `attributes.type`, which every Collections record needs.
fn with_type(mut map: Map<String, Value>, object: &str) -> Result<Map<String, Value>> {
    map.insert("attributes".into(), json!({"type": object}));
    Ok(map)
}

fn batch_context(method: Method, path: &str, object: Option<&str>, range: &Range<usize>) -> RequestContext {
    let ctx = RequestContext::new(method, path).record(RecordRef::Batch { offset: range.start, len: range.len() });
    match object {
        Some(o) => ctx.object(o),
        None => ctx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_documented_results() {
        let body = r#"[{"id":"001RM000003oCprYAE","success":true,"errors":[]},
            {"success":false,"errors":[{"statusCode":"REQUIRED_FIELD_MISSING","message":"Required fields are missing: [Name]","fields":["Name"]}]},
            {"id":"001RM000003oCprYAE","success":false,"errors":[{"statusCode":"ALL_OR_NONE_OPERATION_ROLLED_BACK","message":"Record rolled back because not all records were valid and the request was using AllOrNone header","fields":[]}],"created":true}]"#;
        let r: Vec<SaveResult> = serde_json::from_str(body).unwrap();
        assert!(r[0].success && r[0].id.is_some());
        assert!(r[1].id.is_none());
        assert_eq!(r[1].first_error().unwrap().status_code, crate::ErrorCode::RequiredFieldMissing);
        assert_eq!(r[2].created, Some(true));
        assert!(r[2].first_error().unwrap().retry_class().is_retryable());
    }
}
