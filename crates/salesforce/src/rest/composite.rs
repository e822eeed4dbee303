//! The Composite resource (`/composite`): up to 25 dependent subrequests in one API call, with
//! `@{referenceId.field}` references between them and optional all-or-none rollback.

use std::collections::{BTreeMap, HashSet};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{check_field, check_object};
use crate::Client;
use crate::config::ApiVersion;
use crate::error::{ApiError, Error, ErrorDetail, RequestContext, Result, decode_error_array};
use crate::transport::{ApiRequest, Target, decode_json, encode_segment};

/// Subrequests per Composite call (documented maximum).
pub const COMPOSITE_MAX_SUBREQUESTS: usize = 25;

/// Headers Salesforce refuses inside a subrequest (the whole call fails with 400).
const FORBIDDEN_SUBREQUEST_HEADERS: [&str; 3] = ["accept", "authorization", "content-type"];

/// One subrequest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompositeSubrequest {
    /// HTTP method.
    pub method: String,
    /// Must start with `/services/data/vNN.0/`; may contain `@{ref.field}` references.
    pub url: String,
    /// Letters, digits and `_`, starting with a letter or digit; unique in the request.
    #[serde(rename = "referenceId")]
    pub reference_id: String,
    /// JSON body for POST/PATCH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Extra headers (not `Accept`, `Authorization` or `Content-Type`).
    #[serde(rename = "httpHeaders", skip_serializing_if = "Option::is_none")]
    pub http_headers: Option<BTreeMap<String, String>>,
}

/// A Composite request being assembled; subrequest URLs use `version`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompositeRequest {
    /// Roll back everything if any subrequest fails.
    #[serde(rename = "allOrNone")]
    pub all_or_none: bool,
    /// Let Salesforce group subrequests (default true from v49).
    #[serde(rename = "collateSubrequests", skip_serializing_if = "Option::is_none")]
    pub collate_subrequests: Option<bool>,
    /// The subrequests, executed in order.
    #[serde(rename = "compositeRequest")]
    pub subrequests: Vec<CompositeSubrequest>,
    #[serde(skip)]
    version: ApiVersion,
}

/// Whether `s` is a whole `@{ref.path}` reference, which must stay unencoded in URLs.
fn is_reference(s: &str) -> bool {
    s.strip_prefix("@{").and_then(|r| r.strip_suffix('}')).is_some_and(|inner| {
        !inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
    })
}

fn segment(s: &str) -> String {
    if is_reference(s) { s.to_owned() } else { encode_segment(s) }
}

impl CompositeRequest {
    /// An empty request for API `version`.
    #[must_use]
    pub fn new(version: ApiVersion, all_or_none: bool) -> Self {
        Self { all_or_none, collate_subrequests: None, subrequests: Vec::new(), version }
    }

    fn push(&mut self, method: Method, rest: &str, reference_id: &str, body: Option<Value>) {
        self.subrequests.push(CompositeSubrequest {
            method: method.to_string(),
            url: format!("{}/{rest}", self.version.data_root()),
            reference_id: reference_id.to_owned(),
            body,
            http_headers: None,
        });
    }

    /// Adds a create; later subrequests can use `@{reference_id.id}`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad object name.
    pub fn create(&mut self, reference_id: &str, object: &str, body: Value) -> Result<&mut Self> {
        check_object(object)?;
        self.push(Method::POST, &format!("sobjects/{object}"), reference_id, Some(body));
        Ok(self)
    }

    /// Adds an update of record `id` (an ID or a whole `@{ref.id}` reference).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad object name.
    pub fn update(&mut self, reference_id: &str, object: &str, id: &str, body: Value) -> Result<&mut Self> {
        check_object(object)?;
        let rest = format!("sobjects/{object}/{}", segment(id));
        self.push(Method::PATCH, &rest, reference_id, Some(body));
        Ok(self)
    }

    /// Adds an upsert on external ID `field` = `value`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad names.
    pub fn upsert(
        &mut self,
        reference_id: &str,
        object: &str,
        field: &str,
        value: &str,
        body: Value,
    ) -> Result<&mut Self> {
        check_object(object)?;
        check_field(field)?;
        let rest = format!("sobjects/{object}/{field}/{}", segment(value));
        self.push(Method::PATCH, &rest, reference_id, Some(body));
        Ok(self)
    }

    /// Adds a record read; later subrequests can use `@{reference_id.Id}`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad names.
    pub fn get(&mut self, reference_id: &str, object: &str, id: &str, fields: Option<&[&str]>) -> Result<&mut Self> {
        check_object(object)?;
        let mut rest = format!("sobjects/{object}/{}", segment(id));
        if let Some(fields) = fields {
            for f in fields {
                check_field(f)?;
            }
            rest.push_str("?fields=");
            rest.push_str(&fields.join(","));
        }
        self.push(Method::GET, &rest, reference_id, None);
        Ok(self)
    }

    /// Adds a delete.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad object name.
    pub fn delete(&mut self, reference_id: &str, object: &str, id: &str) -> Result<&mut Self> {
        check_object(object)?;
        let rest = format!("sobjects/{object}/{}", segment(id));
        self.push(Method::DELETE, &rest, reference_id, None);
        Ok(self)
    }

    /// Adds a SOQL query (build it with [`crate::soql`]); `@{reference_id.records[0].Id}`.
    pub fn query(&mut self, reference_id: &str, soql: &str) -> &mut Self {
        self.query_with(reference_id, soql, crate::QueryOptions::default())
    }

    /// Adds an sObject Describe of `object` (the body is a [`crate::SObjectDescribe`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad object name.
    pub fn describe(&mut self, reference_id: &str, object: &str) -> Result<&mut Self> {
        check_object(object)?;
        self.push(Method::GET, &format!("sobjects/{object}/describe"), reference_id, None);
        Ok(self)
    }

    /// Adds a SOQL query as [`CompositeRequest::query`] does, through `queryAll` when
    /// `include_deleted`, asking for pages of `batch_size` rows when given.
    pub fn query_with(&mut self, reference_id: &str, soql: &str, options: crate::QueryOptions) -> &mut Self {
        let q = percent_encoding::utf8_percent_encode(soql, percent_encoding::NON_ALPHANUMERIC);
        let resource = if options.include_deleted { "queryAll" } else { "query" };
        self.push(Method::GET, &format!("{resource}?q={q}"), reference_id, None);
        if let (Some(size), Some(last)) = (options.batch_size, self.subrequests.last_mut()) {
            last.http_headers =
                Some(BTreeMap::from([("Sforce-Query-Options".to_owned(), format!("batchSize={size}"))]));
        }
        self
    }

    /// Adds a hand-built subrequest.
    pub fn raw(&mut self, subrequest: CompositeSubrequest) -> &mut Self {
        self.subrequests.push(subrequest);
        self
    }

    /// Whether any subrequest inserts (so re-sending could duplicate records).
    fn has_creates(&self) -> bool {
        self.subrequests.iter().any(|s| s.method.eq_ignore_ascii_case("POST"))
    }

    /// Checks the documented request rules before spending an API call.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] describing the first broken rule.
    pub fn validate(&self) -> Result<()> {
        let n = self.subrequests.len();
        if n == 0 || n > COMPOSITE_MAX_SUBREQUESTS {
            return Err(Error::InvalidInput(format!(
                "a composite request needs 1..={COMPOSITE_MAX_SUBREQUESTS} subrequests, not {n}"
            )));
        }
        let mut seen = HashSet::new();
        for s in &self.subrequests {
            let r = &s.reference_id;
            let valid = r.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(Error::InvalidInput(format!(
                    "referenceId {r:?} must start with a letter or digit and contain only letters, digits and '_'"
                )));
            }
            if !seen.insert(r.as_str()) {
                return Err(Error::InvalidInput(format!("referenceId {r:?} is used twice")));
            }
            if !s.url.starts_with("/services/data/v") {
                return Err(Error::InvalidInput(format!(
                    "subrequest {r:?} URL {:?} must start with /services/data/vNN.0/",
                    s.url
                )));
            }
            if let Some(h) = s.http_headers.as_ref().and_then(|h| {
                h.keys().find(|k| FORBIDDEN_SUBREQUEST_HEADERS.contains(&k.to_ascii_lowercase().as_str()))
            }) {
                return Err(Error::InvalidInput(format!("subrequest {r:?} may not set header {h}")));
            }
        }
        Ok(())
    }
}

/// One subrequest's result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompositeSubresponse {
    /// The subrequest's response body (an error array when it failed).
    #[serde(default)]
    pub body: Value,
    /// Its response headers (e.g. `Location` for creates).
    #[serde(rename = "httpHeaders", default)]
    pub http_headers: BTreeMap<String, String>,
    /// Its HTTP status.
    #[serde(rename = "httpStatusCode")]
    pub http_status_code: u16,
    /// The subrequest it answers.
    #[serde(rename = "referenceId", default)]
    pub reference_id: Option<String>,
}

impl CompositeSubresponse {
    /// Whether the subrequest succeeded (2xx).
    #[must_use]
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.http_status_code)
    }

    /// The errors of a failed subrequest (`PROCESSING_HALTED` for ones skipped or rolled back).
    #[must_use]
    pub fn errors(&self) -> Vec<ErrorDetail> {
        if self.is_success() {
            return Vec::new();
        }
        serde_json::to_vec(&self.body).ok().and_then(|b| decode_error_array(&b)).unwrap_or_default()
    }

    /// The failure as an [`ApiError`], if the subrequest failed with an error array.
    #[must_use]
    pub fn api_error(&self, context: RequestContext) -> Option<ApiError> {
        let errors = self.errors();
        if errors.is_empty() {
            return None;
        }
        let status = reqwest::StatusCode::from_u16(self.http_status_code).ok()?;
        Some(ApiError::from_details(status, errors, context))
    }

    /// Decodes the body into `T`.
    ///
    /// # Errors
    /// [`Error::Decode`] when the body does not fit `T`.
    pub fn body_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.body.clone()).map_err(|source| Error::Decode {
            context: RequestContext::new(Method::POST, "composite subresponse"),
            source,
            snippet: crate::error::snippet(self.body.to_string().as_bytes()),
        })
    }
}

#[derive(Deserialize)]
struct WireCompositeResponse {
    #[serde(rename = "compositeResponse")]
    composite_response: Vec<CompositeSubresponse>,
}

impl Client {
    /// A [`CompositeRequest`] for this client's API version.
    #[must_use]
    pub fn composite_request(&self, all_or_none: bool) -> CompositeRequest {
        CompositeRequest::new(self.api_version(), all_or_none)
    }

    /// `POST /composite`: runs the subrequests as one API call; results are in request order.
    ///
    /// Requests containing a create are not re-sent once they may have reached Salesforce.
    /// Subrequest failures are in the results, not the `Err` side.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the request breaks a documented rule; request-level
    /// failures (auth, transport, a malformed request rejected with 400).
    pub async fn composite(&self, request: &CompositeRequest) -> Result<Vec<CompositeSubresponse>> {
        request.validate()?;
        let path = self.data_path("composite");
        let ctx = RequestContext::new(Method::POST, &path);
        let api = ApiRequest::new(Method::POST, Target::Path(path), ctx.clone())
            .idempotent(!request.has_creates())
            .json(request)?;
        let response = self.transport().send(api).await?;
        let wire: WireCompositeResponse = decode_json(&ctx, &response.body)?;
        if wire.composite_response.len() != request.subrequests.len() {
            return Err(Error::Protocol {
                context: ctx,
                reason: format!(
                    "sent {} subrequests, got {} results",
                    request.subrequests.len(),
                    wire.composite_response.len()
                ),
            });
        }
        Ok(wire.composite_response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_documented_request_shape() {
        let mut r = CompositeRequest::new(ApiVersion::new(60), true);
        r.create("newAcct", "Account", json!({"Name": "Acme"})).unwrap();
        r.create("c1", "Contact", json!({"LastName": "X", "AccountId": "@{newAcct.id}"})).unwrap();
        r.update("u1", "Account", "@{newAcct.id}", json!({"Website": "a.b"})).unwrap();
        r.upsert("u2", "Account", "Ext__c", "a@b.inc", json!({})).unwrap();
        r.query("q", "SELECT Id FROM Account WHERE Name = 'A B'");
        r.validate().unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["allOrNone"], true);
        assert!(v.get("collateSubrequests").is_none());
        let subs = v["compositeRequest"].as_array().unwrap();
        assert_eq!(subs[0]["url"], "/services/data/v60.0/sobjects/Account");
        assert_eq!(subs[0]["referenceId"], "newAcct");
        assert_eq!(subs[2]["url"], "/services/data/v60.0/sobjects/Account/@{newAcct.id}");
        assert_eq!(subs[3]["url"], "/services/data/v60.0/sobjects/Account/Ext__c/a%40b%2Einc");
        assert!(subs[4]["url"].as_str().unwrap().starts_with("/services/data/v60.0/query?q=SELECT%20Id"));
        assert!(subs[4].get("body").is_none());
        assert!(r.has_creates());
    }

    #[test]
    fn validation_rules() {
        let mut r = CompositeRequest::new(ApiVersion::new(60), false);
        assert!(r.validate().is_err());
        for i in 0..26 {
            r.delete(&format!("d{i}"), "Account", "001R00000064wdtIAA").unwrap();
        }
        assert!(r.validate().is_err());
        r.subrequests.truncate(2);
        r.validate().unwrap();
        r.subrequests[1].reference_id = "d0".into();
        assert!(r.validate().is_err());
        r.subrequests[1].reference_id = "_bad".into();
        assert!(r.validate().is_err());
        r.subrequests[1].reference_id = "ok".into();
        r.subrequests[1].http_headers = Some(BTreeMap::from([("Authorization".into(), "x".into())]));
        assert!(r.validate().is_err());
    }

    #[test]
    fn decodes_documented_response() {
        let body = r#"{"compositeResponse":[
            {"body":{"id":"001R00000064wdtIAA","success":true,"errors":[]},"httpHeaders":{"Location":"/services/data/v60.0/sobjects/Account/001R00000064wdtIAA"},"httpStatusCode":201,"referenceId":"newAcct"},
            {"body":[{"errorCode":"PROCESSING_HALTED","message":"The transaction was rolled back since another operation in the same transaction failed."}],"httpHeaders":{},"httpStatusCode":400,"referenceId":"c1"}]}"#;
        let w: WireCompositeResponse = serde_json::from_str(body).unwrap();
        let r = &w.composite_response;
        assert!(r[0].is_success());
        assert_eq!(r[0].http_headers["Location"], "/services/data/v60.0/sobjects/Account/001R00000064wdtIAA");
        assert!(r[0].errors().is_empty());
        assert_eq!(r[1].errors()[0].error_code, crate::ErrorCode::ProcessingHalted);
        let e = r[1].api_error(RequestContext::new(Method::POST, "/composite")).unwrap();
        assert_eq!(e.status.as_u16(), 400);
    }
}
