//! Single-record sObject resources: create, get, get by external ID, update, delete and upsert
//! by external ID (`/sobjects/{object}[/{id} | /{field}/{value}]`).

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{check_field, check_object, to_object};
use crate::Client;
use crate::error::{Error, RecordError, RecordRef, RequestContext, Result};
use crate::ids::SalesforceId;
use crate::transport::{ApiRequest, RawResponse, Target, decode_json, encode_segment};

/// Body of a successful create (201).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateResult {
    /// The new record's ID.
    pub id: SalesforceId,
    /// Always true on 201.
    pub success: bool,
    /// Normally empty; some orgs report warnings here.
    #[serde(default)]
    pub errors: Vec<RecordError>,
}

/// What an upsert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// The record's ID; `None` only for an update on API v45 and older (204, no body).
    pub id: Option<SalesforceId>,
    /// True when a record was inserted (201), false when an existing one was updated.
    pub created: bool,
}

#[derive(Deserialize)]
struct WireUpsert {
    id: SalesforceId,
    #[serde(default)]
    created: Option<bool>,
}

impl Client {
    fn sobject_path(&self, object: &str, rest: &[&str]) -> String {
        let mut path = self.data_path(&format!("sobjects/{object}"));
        for segment in rest {
            path.push('/');
            path.push_str(&encode_segment(segment));
        }
        path
    }

    /// `POST /sobjects/{object}`: creates one record.
    ///
    /// Not retried once the request may have reached Salesforce (see the transport docs):
    /// a lost response could hide a committed insert. Use [`Client::upsert`] on an external ID
    /// when a create must be safe to repeat.
    ///
    /// # Errors
    /// [`Error::Api`] with e.g. `REQUIRED_FIELD_MISSING`, `INVALID_FIELD`, `MALFORMED_ID`,
    /// `DUPLICATE_VALUE`, `STRING_TOO_LONG`; transport and auth errors.
    pub async fn create<T: Serialize + ?Sized>(&self, object: &str, record: &T) -> Result<CreateResult> {
        check_object(object)?;
        let mut body = to_object(record)?;
        body.remove("attributes");
        let path = self.sobject_path(object, &[]);
        let ctx = RequestContext::new(Method::POST, &path).object(object);
        let request = ApiRequest::new(Method::POST, Target::Path(path), ctx).json(&body)?;
        self.transport().send_json(request).await
    }

    /// `GET /sobjects/{object}/{id}[?fields=…]`: one record, decoded into `T`
    /// (`serde_json::Value` keeps everything, including `attributes`).
    ///
    /// # Errors
    /// [`Error::Api`] `NOT_FOUND` when there is no such record; `INVALID_FIELD` for a bad field.
    pub async fn get<T: DeserializeOwned>(
        &self,
        object: &str,
        id: &SalesforceId,
        fields: Option<&[&str]>,
    ) -> Result<T> {
        check_object(object)?;
        let path = self.sobject_path(object, &[id.as_str()]);
        let ctx = RequestContext::new(Method::GET, &path).object(object).record(RecordRef::Id(id.to_string()));
        let request = with_fields(ApiRequest::new(Method::GET, Target::Path(path), ctx), fields)?;
        self.transport().send_json(request).await
    }

    /// `GET /sobjects/{object}/{field}/{value}`: the record whose external ID `field` equals
    /// `value` (URL-encoded in the path).
    ///
    /// # Errors
    /// [`Error::MultipleMatches`] (HTTP 300) when several records match; [`Error::Api`]
    /// `NOT_FOUND` when none does or the field is not an external ID.
    pub async fn get_by_external_id<T: DeserializeOwned>(
        &self,
        object: &str,
        field: &str,
        value: &str,
        fields: Option<&[&str]>,
    ) -> Result<T> {
        check_object(object)?;
        check_field(field)?;
        let path = self.sobject_path(object, &[field, value]);
        let ctx = RequestContext::new(Method::GET, &path)
            .object(object)
            .record(RecordRef::ExternalId { field: field.to_owned(), value: value.to_owned() });
        let request = with_fields(ApiRequest::new(Method::GET, Target::Path(path), ctx.clone()), fields)?;
        let response = self.transport().send(request).await?;
        if response.status == StatusCode::MULTIPLE_CHOICES {
            return Err(multiple_matches(ctx, &response));
        }
        decode_json(&ctx, &response.body)
    }

    /// `PATCH /sobjects/{object}/{id}`: updates the given fields (204 on success). `Id` and
    /// `attributes` keys in `fields` are dropped, as Salesforce takes the ID from the URL.
    ///
    /// # Errors
    /// [`Error::Api`] e.g. `NOT_FOUND`, `INVALID_FIELD`, `STRING_TOO_LONG`, `UNABLE_TO_LOCK_ROW`.
    pub async fn update<T: Serialize + ?Sized>(&self, object: &str, id: &SalesforceId, fields: &T) -> Result<()> {
        check_object(object)?;
        let mut body = to_object(fields)?;
        strip_keys(&mut body, &["Id", "attributes"]);
        let path = self.sobject_path(object, &[id.as_str()]);
        let ctx = RequestContext::new(Method::PATCH, &path).object(object).record(RecordRef::Id(id.to_string()));
        let request = ApiRequest::new(Method::PATCH, Target::Path(path), ctx).json(&body)?;
        self.transport().send(request).await?;
        Ok(())
    }

    /// `DELETE /sobjects/{object}/{id}` (204 on success).
    ///
    /// A delete retried after a lost response can come back `ENTITY_IS_DELETED`/`NOT_FOUND`
    /// although the first attempt succeeded; callers treating deletes as idempotent may accept
    /// those codes.
    ///
    /// # Errors
    /// [`Error::Api`] e.g. `NOT_FOUND`, `ENTITY_IS_DELETED`.
    pub async fn delete(&self, object: &str, id: &SalesforceId) -> Result<()> {
        check_object(object)?;
        let path = self.sobject_path(object, &[id.as_str()]);
        let ctx = RequestContext::new(Method::DELETE, &path).object(object).record(RecordRef::Id(id.to_string()));
        let request = ApiRequest::new(Method::DELETE, Target::Path(path), ctx);
        self.transport().send(request).await?;
        Ok(())
    }

    /// `PATCH /sobjects/{object}/{field}/{value}`: inserts or updates the record whose external
    /// ID `field` equals `value`. Safe to repeat, so it is retried like any idempotent call.
    ///
    /// The external ID field, `Id` and `attributes` are removed from the body, since Salesforce
    /// rejects them there and takes the value from the URL.
    ///
    /// Status handling: 201 → created; 200 with `created:false` (v46+) or 204 (v45 and older)
    /// → updated.
    ///
    /// # Errors
    /// [`Error::MultipleMatches`] when `value` matches several records (300);
    /// [`Error::Api`] `NOT_FOUND` when `field` is not an external ID field, and validation codes.
    pub async fn upsert<T: Serialize + ?Sized>(
        &self,
        object: &str,
        field: &str,
        value: &str,
        record: &T,
    ) -> Result<UpsertOutcome> {
        check_object(object)?;
        check_field(field)?;
        let mut body = to_object(record)?;
        strip_keys(&mut body, &[field, "Id", "attributes"]);
        let path = self.sobject_path(object, &[field, value]);
        let ctx = RequestContext::new(Method::PATCH, &path)
            .object(object)
            .record(RecordRef::ExternalId { field: field.to_owned(), value: value.to_owned() });
        let request = ApiRequest::new(Method::PATCH, Target::Path(path), ctx.clone()).json(&body)?;
        let response = self.transport().send(request).await?;
        match response.status {
            StatusCode::MULTIPLE_CHOICES => Err(multiple_matches(ctx, &response)),
            StatusCode::NO_CONTENT => Ok(UpsertOutcome { id: None, created: false }),
            status => {
                let wire: WireUpsert = decode_json(&ctx, &response.body)?;
                Ok(UpsertOutcome {
                    id: Some(wire.id),
                    // Before v46 the body has no `created`; the status still tells.
                    created: wire.created.unwrap_or(status == StatusCode::CREATED),
                })
            }
        }
    }
}

fn with_fields(request: ApiRequest, fields: Option<&[&str]>) -> Result<ApiRequest> {
    match fields {
        None => Ok(request),
        Some(list) => {
            for f in list {
                check_field(f)?;
            }
            Ok(request.query("fields", list.join(",")))
        }
    }
}

/// Removes keys case-insensitively (field names are case-insensitive in Salesforce).
fn strip_keys(body: &mut serde_json::Map<String, serde_json::Value>, keys: &[&str]) {
    body.retain(|k, _| !keys.iter().any(|s| s.eq_ignore_ascii_case(k)));
}

/// Turns a 300 response into [`Error::MultipleMatches`]; its body is an array of record URLs.
fn multiple_matches(context: RequestContext, response: &RawResponse) -> Error {
    match serde_json::from_slice::<Vec<String>>(&response.body) {
        Ok(urls) => Error::MultipleMatches { context, urls },
        Err(source) => Error::Decode { context, source, snippet: crate::error::snippet(&response.body) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_external_id_case_insensitively() {
        let mut m = serde_json::json!({"pendo_id__c": "x", "ID": "1", "Name": "A", "attributes": {}})
            .as_object()
            .cloned()
            .unwrap();
        strip_keys(&mut m, &["Pendo_Id__c", "Id", "attributes"]);
        assert_eq!(m.keys().collect::<Vec<_>>(), vec!["Name"]);
    }

    #[test]
    fn decodes_create_and_upsert_bodies() {
        let c: CreateResult =
            serde_json::from_str(r#"{"id":"001D000000Kv3g5IAB","success":true,"errors":[]}"#).unwrap();
        assert_eq!(c.id.as_str(), "001D000000Kv3g5IAB");
        let u: WireUpsert =
            serde_json::from_str(r#"{"id":"001D000000Kv3g5IAB","success":true,"errors":[],"created":false}"#).unwrap();
        assert_eq!(u.created, Some(false));
    }
}
