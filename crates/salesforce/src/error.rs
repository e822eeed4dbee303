//! Every way a call can fail: [`Error`], Salesforce's own [`ApiError`] with its string-backed
//! [`ErrorCode`], per-record [`RecordError`]s, and the [`RetryClass`] that says whether trying
//! again can help.
//!
//! Decoding follows the documented wire shapes exactly: top-level REST errors are JSON arrays of
//! `{"message","errorCode","fields"}`, while per-record errors inside Collections results use
//! `statusCode`. Each decoder accepts only its own key so that a server mixing them up is noticed
//! rather than papered over.

use std::fmt;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::ids::IdError;
use crate::rest::collections::SaveResult;
use crate::soql::SoqlError;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest excerpt of an unexpected body kept in an error, in characters.
const SNIPPET_CHARS: usize = 512;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => $wire:literal ),* $(,)?) => {
        /// A Salesforce `errorCode` / `statusCode`. Unknown codes keep their text in
        /// [`ErrorCode::Other`] so decoding never fails on a code this crate has not heard of.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
            /// Any code not listed above, verbatim.
            Other(String),
        }

        impl ErrorCode {
            /// The code as Salesforce spells it.
            #[must_use]
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )*
                    Self::Other(code) => code,
                }
            }

            /// Maps a wire string to a code; never fails.
            #[must_use]
            pub fn parse(code: &str) -> Self {
                match code {
                    $( $wire => Self::$variant, )*
                    other => Self::Other(other.to_owned()),
                }
            }
        }
    };
}

error_codes! {
    /// Session expired or invalid: refresh the token and retry.
    InvalidSessionId => "INVALID_SESSION_ID",
    /// Malformed `Authorization` header.
    InvalidAuthHeader => "INVALID_AUTH_HEADER",
    /// Daily (`TotalRequests`) or concurrent (`ConcurrentPerOrgLongTxn`) limit hit.
    RequestLimitExceeded => "REQUEST_LIMIT_EXCEEDED",
    /// Maintenance or overload.
    ServerUnavailable => "SERVER_UNAVAILABLE",
    /// Lock contention on a record; transient.
    UnableToLockRow => "UNABLE_TO_LOCK_ROW",
    /// A duplicate rule fired.
    DuplicatesDetected => "DUPLICATES_DETECTED",
    /// A unique field already holds the value.
    DuplicateValue => "DUPLICATE_VALUE",
    /// Required fields are missing.
    RequiredFieldMissing => "REQUIRED_FIELD_MISSING",
    /// No such field, or not accessible.
    InvalidField => "INVALID_FIELD",
    /// An ID in the body or a field value has the wrong shape or type.
    MalformedId => "MALFORMED_ID",
    /// Resource or record does not exist.
    NotFound => "NOT_FOUND",
    /// The record was deleted.
    EntityIsDeleted => "ENTITY_IS_DELETED",
    /// A lookup points at a missing or wrong-type record.
    InvalidCrossReferenceKey => "INVALID_CROSS_REFERENCE_KEY",
    /// A value exceeds the field length.
    StringTooLong => "STRING_TOO_LONG",
    /// A validation rule failed.
    FieldCustomValidationException => "FIELD_CUSTOM_VALIDATION_EXCEPTION",
    /// A field integrity rule failed.
    FieldIntegrityException => "FIELD_INTEGRITY_EXCEPTION",
    /// A field that cannot be set on this operation (e.g. `Id` on create).
    InvalidFieldForInsertUpdate => "INVALID_FIELD_FOR_INSERT_UPDATE",
    /// A value outside a restricted picklist.
    InvalidOrNullForRestrictedPicklist => "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    /// Unknown sObject type.
    InvalidType => "INVALID_TYPE",
    /// Body is not valid JSON or has the wrong shape.
    JsonParserError => "JSON_PARSER_ERROR",
    /// SOQL syntax error.
    MalformedQuery => "MALFORMED_QUERY",
    /// A query locator expired or is unknown.
    InvalidQueryLocator => "INVALID_QUERY_LOCATOR",
    /// A query ran too long.
    QueryTimeout => "QUERY_TIMEOUT",
    /// HTTP method not allowed on the resource.
    MethodNotAllowed => "METHOD_NOT_ALLOWED",
    /// Permissions.
    InsufficientAccessOrReadonly => "INSUFFICIENT_ACCESS_OR_READONLY",
    /// A trigger or flow failed.
    CannotInsertUpdateActivateEntity => "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
    /// Companion error for records rolled back by `allOrNone`.
    AllOrNoneOperationRolledBack => "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    /// Companion error for composite subrequests skipped after a failure.
    ProcessingHalted => "PROCESSING_HALTED",
    /// Companion error for batch subrequests skipped by `haltOnError`.
    BatchProcessingHalted => "BATCH_PROCESSING_HALTED",
    /// getUpdated/getDeleted window returned too many IDs.
    ExceededIdLimit => "EXCEEDED_ID_LIMIT",
    /// The org has no API access.
    ApiDisabledForOrg => "API_DISABLED_FOR_ORG",
    /// A structural limit (e.g. composite graph nodes).
    LimitExceeded => "LIMIT_EXCEEDED",
    /// Unexpected server error.
    UnknownException => "UNKNOWN_EXCEPTION",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ErrorCode {
    fn from(code: &str) -> Self {
        Self::parse(code)
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Self::parse(&raw))
    }
}

/// Whether, and how, retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryClass {
    /// Transient (lock contention, 503, 429/5xx, timeouts, dropped connections): retry the same
    /// request after an exponential, jittered delay.
    Backoff,
    /// The session expired: get a new token, then retry.
    RefreshAuth,
    /// The org's daily API allocation is spent: retrying now only burns goodwill; defer the work
    /// until the rolling 24-hour window frees budget.
    NotNow,
    /// The request itself is wrong (validation, schema, permissions); it will fail again.
    Permanent,
}

impl RetryClass {
    /// True when a prompt retry (after backoff or a token refresh) can succeed.
    #[must_use]
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Backoff | Self::RefreshAuth)
    }
}

/// Classifies an error by HTTP status, `errorCode` and message, per the documented retry table.
pub(crate) fn classify(status: Option<u16>, code: Option<&ErrorCode>, message: &str) -> RetryClass {
    match code {
        Some(ErrorCode::InvalidSessionId) => return RetryClass::RefreshAuth,
        Some(ErrorCode::RequestLimitExceeded) => {
            // "ConcurrentPerOrgLongTxn Limit exceeded." clears as soon as long requests finish;
            // "TotalRequests Limit exceeded." is the rolling daily allocation.
            return if message.contains("Concurrent") { RetryClass::Backoff } else { RetryClass::NotNow };
        }
        Some(ErrorCode::UnableToLockRow | ErrorCode::ServerUnavailable) => {
            return RetryClass::Backoff;
        }
        // Triggers surface lock contention wrapped in this code.
        Some(ErrorCode::CannotInsertUpdateActivateEntity) if message.contains("UNABLE_TO_LOCK_ROW") => {
            return RetryClass::Backoff;
        }
        _ => {}
    }
    match status {
        // An unparseable 401 is most likely an expired session behind a proxy page.
        Some(401) if code.is_none() => RetryClass::RefreshAuth,
        // 420: the edge lost routing for the org; 408/429 and 5xx are transient by definition.
        Some(408 | 420 | 429 | 500..=599) => RetryClass::Backoff,
        _ => RetryClass::Permanent,
    }
}

/// Which request failed: enough for a person to find the record and the call in logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// HTTP method.
    pub method: Method,
    /// URL path (no query string, which may hold long SOQL).
    pub path: String,
    /// sObject type, when the call is about one.
    pub object: Option<String>,
    /// The record(s) concerned, when known (boxed to keep [`Error`] small).
    pub record: Option<Box<RecordRef>>,
}

impl RequestContext {
    pub(crate) fn new(method: Method, path: impl Into<String>) -> Self {
        Self { method, path: path.into(), object: None, record: None }
    }

    pub(crate) fn object(mut self, object: &str) -> Self {
        self.object = Some(object.to_owned());
        self
    }

    pub(crate) fn record(mut self, record: RecordRef) -> Self {
        self.record = Some(Box::new(record));
        self
    }
}

impl fmt::Display for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        match (&self.object, &self.record) {
            (Some(o), Some(r)) => write!(f, " ({o} {r})"),
            (Some(o), None) => write!(f, " ({o})"),
            (None, Some(r)) => write!(f, " ({r})"),
            (None, None) => Ok(()),
        }
    }
}

/// The record(s) a request concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordRef {
    /// A record ID as given by the caller.
    Id(String),
    /// A record addressed by external ID.
    ExternalId {
        /// External ID field API name.
        field: String,
        /// Its value (unencoded).
        value: String,
    },
    /// A slice of a multi-record call: input positions `offset..offset+len`.
    Batch {
        /// Index of the first input record in this call.
        offset: usize,
        /// Number of records in this call.
        len: usize,
    },
}

impl fmt::Display for RecordRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "id {id}"),
            Self::ExternalId { field, value } => write!(f, "{field}={value:?}"),
            Self::Batch { offset, len } => write!(f, "records {}..{}", offset, offset + len),
        }
    }
}

/// The `duplicateResult` object of a `DUPLICATES_DETECTED` error.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DuplicateResult {
    /// Whether the rule would allow the save with `allowSave=true`.
    pub allow_save: bool,
    /// Duplicate rule API name.
    pub duplicate_rule: String,
    /// Object the rule is defined on.
    pub duplicate_rule_entity_type: String,
    /// Message configured on the rule.
    pub error_message: Option<String>,
    /// Matches per matching rule.
    pub match_results: Vec<DuplicateMatchResult>,
}

impl DuplicateResult {
    /// IDs of all matched records, in the order Salesforce listed them.
    #[must_use]
    pub fn matched_ids(&self) -> Vec<String> {
        self.match_results
            .iter()
            .flat_map(|m| &m.match_records)
            .filter_map(|r| r.record.get("Id").and_then(|v| v.as_str()).map(str::to_owned))
            .collect()
    }
}

/// One matching rule's result inside a [`DuplicateResult`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DuplicateMatchResult {
    /// Matched object type.
    pub entity_type: String,
    /// e.g. `FuzzyMatchEngine`.
    pub match_engine: String,
    /// Matching rule API name.
    pub rule: String,
    /// Number of matches.
    pub size: u32,
    /// Whether matching itself ran.
    pub success: bool,
    /// The matched records.
    pub match_records: Vec<DuplicateMatchRecord>,
}

/// One matched record inside a [`DuplicateMatchResult`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DuplicateMatchRecord {
    /// Confidence 0–100.
    pub match_confidence: f64,
    /// The record, with `attributes` and `Id`.
    pub record: serde_json::Value,
}

/// Top-level REST error entry as sent on the wire.
#[derive(Deserialize)]
struct WireApiError {
    #[serde(rename = "errorCode")]
    error_code: ErrorCode,
    #[serde(default)]
    message: String,
    #[serde(default)]
    fields: Option<Vec<String>>,
    #[serde(default, rename = "duplicateResult")]
    duplicate_result: Option<DuplicateResult>,
    /// Real orgs have sent this misspelling (observed on v54).
    #[serde(default, rename = "duplicateResut")]
    duplicate_resut: Option<DuplicateResult>,
}

/// One error as Salesforce reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorDetail {
    /// `errorCode` (top-level) or `statusCode` (per record).
    pub error_code: ErrorCode,
    /// Human-readable text.
    pub message: String,
    /// Fields concerned; empty when Salesforce omitted the list.
    pub fields: Vec<String>,
    /// Present on `DUPLICATES_DETECTED` (either spelling of the key).
    pub duplicate_result: Option<DuplicateResult>,
}

impl From<WireApiError> for ErrorDetail {
    fn from(w: WireApiError) -> Self {
        Self {
            error_code: w.error_code,
            message: w.message,
            fields: w.fields.unwrap_or_default(),
            duplicate_result: w.duplicate_result.or(w.duplicate_resut),
        }
    }
}

/// Decodes a top-level REST error body (a JSON array of error objects).
pub(crate) fn decode_error_array(body: &[u8]) -> Option<Vec<ErrorDetail>> {
    let wire: Vec<WireApiError> = serde_json::from_slice(body).ok()?;
    if wire.is_empty() {
        return None;
    }
    Some(wire.into_iter().map(ErrorDetail::from).collect())
}

/// Salesforce rejected a request with a JSON error array.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The first error's code.
    pub error_code: ErrorCode,
    /// The first error's message.
    pub message: String,
    /// The first error's fields.
    pub fields: Vec<String>,
    /// The first error's duplicate-rule details, if any.
    pub duplicate_result: Option<DuplicateResult>,
    /// Any further errors in the same response.
    pub others: Vec<ErrorDetail>,
    /// Which call failed.
    pub context: RequestContext,
}

impl ApiError {
    pub(crate) fn from_details(status: StatusCode, mut details: Vec<ErrorDetail>, context: RequestContext) -> Self {
        let first = if details.is_empty() {
            ErrorDetail {
                error_code: ErrorCode::Other(String::new()),
                message: String::new(),
                fields: Vec::new(),
                duplicate_result: None,
            }
        } else {
            details.remove(0)
        };
        Self {
            status,
            error_code: first.error_code,
            message: first.message,
            fields: first.fields,
            duplicate_result: first.duplicate_result,
            others: details,
            context,
        }
    }

    /// Whether, and how, retrying can help.
    #[must_use]
    pub fn retry_class(&self) -> RetryClass {
        classify(Some(self.status.as_u16()), Some(&self.error_code), &self.message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Salesforce answered {} {}: {:?}", self.status.as_u16(), self.error_code, self.message)?;
        if !self.fields.is_empty() {
            write!(f, " (fields: {})", self.fields.join(", "))?;
        }
        if !self.others.is_empty() {
            write!(f, " and {} more error(s)", self.others.len())?;
        }
        write!(f, " on {}", self.context)
    }
}

impl std::error::Error for ApiError {}

/// A per-record error inside Collections results (`statusCode`, not `errorCode`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "WireRecordError")]
pub struct RecordError {
    /// The record's `statusCode`.
    #[serde(rename = "statusCode")]
    pub status_code: ErrorCode,
    /// Human-readable text.
    pub message: String,
    /// Fields concerned.
    pub fields: Vec<String>,
    /// Present on `DUPLICATES_DETECTED` (either spelling of the key).
    #[serde(rename = "duplicateResult", skip_serializing_if = "Option::is_none")]
    pub duplicate_result: Option<DuplicateResult>,
}

impl RecordError {
    /// Whether re-sending just this record can help.
    ///
    /// `ALL_OR_NONE_OPERATION_ROLLED_BACK` counts as retryable: the record itself was fine and
    /// only failed because another record in the same call did.
    #[must_use]
    pub fn retry_class(&self) -> RetryClass {
        if self.status_code == ErrorCode::AllOrNoneOperationRolledBack {
            return RetryClass::Backoff;
        }
        classify(None, Some(&self.status_code), &self.message)
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status_code, self.message)?;
        if !self.fields.is_empty() {
            write!(f, " (fields: {})", self.fields.join(", "))?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct WireRecordError {
    #[serde(rename = "statusCode")]
    status_code: ErrorCode,
    #[serde(default)]
    message: String,
    #[serde(default)]
    fields: Option<Vec<String>>,
    #[serde(default, rename = "duplicateResult")]
    duplicate_result: Option<DuplicateResult>,
    #[serde(default, rename = "duplicateResut")]
    duplicate_resut: Option<DuplicateResult>,
}

impl From<WireRecordError> for RecordError {
    fn from(w: WireRecordError) -> Self {
        Self {
            status_code: w.status_code,
            message: w.message,
            fields: w.fields.unwrap_or_default(),
            duplicate_result: w.duplicate_result.or(w.duplicate_resut),
        }
    }
}

/// Failures of the OAuth token endpoint or of building a token request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token endpoint refused the grant (`{"error","error_description"}`).
    #[error("Token request to {url} was refused ({status}): {error}: {description}")]
    Rejected {
        /// Token endpoint.
        url: String,
        /// HTTP status (400 for documented grant errors).
        status: StatusCode,
        /// OAuth `error`, e.g. `invalid_grant`.
        error: String,
        /// OAuth `error_description`, e.g. `authentication failure`.
        description: String,
    },
    /// The token endpoint answered something that is not an OAuth error body.
    #[error("Token endpoint {url} answered {status}: {snippet}")]
    Unexpected {
        /// Token endpoint.
        url: String,
        /// HTTP status.
        status: StatusCode,
        /// Start of the body.
        snippet: String,
    },
    /// The token endpoint could not be reached or the response was cut off.
    #[error("Could not reach token endpoint {url}: {source}")]
    Transport {
        /// Token endpoint.
        url: String,
        /// Underlying client error.
        #[source]
        source: reqwest::Error,
    },
    /// A 200 token response that lacks or garbles a required field.
    #[error("Token response from {url} is unusable: {reason}")]
    InvalidResponse {
        /// Token endpoint.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The JWT private key could not be loaded.
    #[error("JWT signing key is not a usable RSA private key (PEM): {0}")]
    Key(#[source] jsonwebtoken::errors::Error),
    /// Signing the JWT assertion failed.
    #[error("Could not sign the JWT bearer assertion: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// A static token was rejected and there is no way to get another.
    #[error("The access token was rejected and this token source cannot obtain a new one")]
    CannotRefresh,
}

impl AuthError {
    /// Whether, and how, retrying can help.
    #[must_use]
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Self::Transport { .. } => RetryClass::Backoff,
            // A token endpoint that is down is transient; anything else it says is not about
            // an expired session, so never RefreshAuth here.
            Self::Unexpected { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
                RetryClass::Backoff
            }
            _ => RetryClass::Permanent,
        }
    }
}

/// Any failure of a client call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Salesforce answered with an error array.
    #[error(transparent)]
    Api(Box<ApiError>),
    /// An external-ID lookup or upsert matched more than one record (HTTP 300).
    #[error("{context} matched {} records: {}", urls.len(), urls.join(", "))]
    MultipleMatches {
        /// Which call.
        context: RequestContext,
        /// Record URLs as Salesforce listed them.
        urls: Vec<String>,
    },
    /// Getting a token failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request failed at the HTTP layer.
    #[error("{context} failed in transport{}: {source}",
        if *may_have_reached_server { " (the server may have processed it)" } else { " before reaching the server" })]
    Transport {
        /// Which call.
        context: RequestContext,
        /// False only when the failure provably happened before the request left (connect
        /// errors); a create that failed with `true` may have committed.
        may_have_reached_server: bool,
        /// Underlying client error.
        #[source]
        source: reqwest::Error,
    },
    /// A success response whose body does not have the documented shape.
    #[error("Could not decode the response to {context}: {source}; body starts {snippet:?}")]
    Decode {
        /// Which call.
        context: RequestContext,
        /// Decoder error.
        #[source]
        source: serde_json::Error,
        /// Start of the body.
        snippet: String,
    },
    /// The response body exceeded [`crate::ClientConfig::max_response_bytes`].
    #[error("The response to {context} exceeded the {limit}-byte body cap")]
    BodyTooLarge {
        /// Which call.
        context: RequestContext,
        /// The cap in bytes.
        limit: usize,
        /// HTTP status of the oversized response.
        status: StatusCode,
    },
    /// A response that breaks the documented contract (e.g. a Collections call returning a
    /// different number of results than records sent).
    #[error("The response to {context} breaks the documented contract: {reason}")]
    Protocol {
        /// Which call.
        context: RequestContext,
        /// What was wrong.
        reason: String,
    },
    /// An error status without a JSON error array (e.g. an HTML page from the edge).
    #[error("{context} answered {status} with a non-API body: {snippet:?}")]
    UnexpectedResponse {
        /// Which call.
        context: RequestContext,
        /// HTTP status.
        status: StatusCode,
        /// Start of the body.
        snippet: String,
    },
    /// A multi-call operation (chunked Collections) failed part-way; the results of the calls
    /// that completed are kept so that nothing already written is forgotten.
    #[error("Chunk starting at record {failed_offset} failed after {} records completed: {source}", completed.len())]
    Partial {
        /// Results for input records `0..completed.len()`, in input order.
        completed: Vec<SaveResult>,
        /// Input index of the first record of the failed call.
        failed_offset: usize,
        /// Why that call failed.
        #[source]
        source: Box<Error>,
    },
    /// A Bulk API 2.0 job ended `Failed` or `Aborted` as a whole (its `errorMessage`).
    #[error("Bulk job {job_id} ended {state}: {message}")]
    BulkJob {
        /// The job's ID.
        job_id: String,
        /// `Failed` or `Aborted`.
        state: String,
        /// The job's `errorMessage`, e.g. `InvalidBatch : Field name not found : X`.
        message: String,
    },
    /// Reading or writing a local spool file (Bulk CSV) failed.
    #[error("Bulk spool file: {0}")]
    Spool(#[source] std::io::Error),
    /// The caller passed something Salesforce would reject (bad name, too many subrequests…).
    #[error("Invalid input: {0}")]
    InvalidInput(String),
    /// A string is not a Salesforce ID.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A SOQL builder error.
    #[error(transparent)]
    Soql(#[from] SoqlError),
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Self::Api(Box::new(e))
    }
}

impl Error {
    /// Whether, and how, retrying can help.
    #[must_use]
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Self::Api(e) => e.retry_class(),
            Self::Auth(e) => e.retry_class(),
            Self::Transport { .. } => RetryClass::Backoff,
            Self::UnexpectedResponse { status, .. } => classify(Some(status.as_u16()), None, ""),
            Self::Partial { source, .. } => source.retry_class(),
            Self::BulkJob { message, .. } => {
                // Internal failures clear on a new job; a spent daily allocation does not.
                if message.starts_with("InternalServerError") {
                    RetryClass::Backoff
                } else if message.starts_with("ExceededQuota") {
                    RetryClass::NotNow
                } else {
                    RetryClass::Permanent
                }
            }
            Self::MultipleMatches { .. }
            | Self::Decode { .. }
            | Self::Protocol { .. }
            | Self::BodyTooLarge { .. }
            | Self::Spool(_)
            | Self::InvalidInput(_)
            | Self::Id(_)
            | Self::Soql(_) => RetryClass::Permanent,
        }
    }

    /// True when a prompt retry (after backoff or a token refresh) can succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.retry_class().is_retryable()
    }

    /// The Salesforce error code, when Salesforce sent one.
    #[must_use]
    pub fn error_code(&self) -> Option<&ErrorCode> {
        match self {
            Self::Api(e) => Some(&e.error_code),
            Self::Partial { source, .. } => source.error_code(),
            _ => None,
        }
    }

    /// The API error, when Salesforce sent one.
    #[must_use]
    pub fn as_api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(e) => Some(e),
            Self::Partial { source, .. } => source.as_api(),
            _ => None,
        }
    }

    /// Whether the failed request may nevertheless have changed data in Salesforce.
    ///
    /// False for rejections Salesforce answers before doing any work (4xx, 503, lock
    /// contention), for failures before the request was sent, and for local validation. True
    /// for lost responses, other 5xx, and success responses we could not read. A caller that
    /// sees `true` after a create must look the record up before creating it again.
    #[must_use]
    pub fn may_have_committed(&self) -> bool {
        match self {
            Self::Api(e) => !not_committed_status(e.status, Some(&e.error_code)),
            Self::UnexpectedResponse { status, .. } => !not_committed_status(*status, None),
            Self::Transport { may_have_reached_server, .. } => *may_have_reached_server,
            Self::Decode { .. } | Self::Protocol { .. } | Self::BodyTooLarge { .. } => true,
            Self::Partial { .. } | Self::BulkJob { .. } => true,
            Self::Spool(_) => false,
            Self::MultipleMatches { .. } | Self::Auth(_) | Self::InvalidInput(_) | Self::Id(_) | Self::Soql(_) => false,
        }
    }

    /// Whether re-sending a non-idempotent request (a create) cannot duplicate data.
    ///
    /// Deliberately narrower than `!may_have_committed()`: only failures before sending, 503,
    /// `SERVER_UNAVAILABLE` and `UNABLE_TO_LOCK_ROW` (the DML did not run), and a 401 expired
    /// session (rejected before any processing) qualify.
    pub(crate) fn safe_to_resend_create(&self) -> bool {
        match self {
            Self::Transport { may_have_reached_server, .. } => !may_have_reached_server,
            Self::Auth(_) => true,
            Self::Api(e) => {
                e.status == StatusCode::SERVICE_UNAVAILABLE
                    || matches!(
                        e.error_code,
                        ErrorCode::UnableToLockRow | ErrorCode::ServerUnavailable | ErrorCode::InvalidSessionId
                    )
            }
            Self::UnexpectedResponse { status, .. } => *status == StatusCode::SERVICE_UNAVAILABLE,
            _ => false,
        }
    }
}

fn not_committed_status(status: StatusCode, code: Option<&ErrorCode>) -> bool {
    status.is_client_error()
        || status == StatusCode::SERVICE_UNAVAILABLE
        || matches!(code, Some(ErrorCode::UnableToLockRow | ErrorCode::ServerUnavailable))
}

/// The first [`SNIPPET_CHARS`] characters of a body, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(SNIPPET_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RequestContext {
        RequestContext::new(Method::POST, "/services/data/v62.0/sobjects/Contact").object("Contact")
    }

    #[test]
    fn decodes_required_field_missing() {
        let body = br#"[{"message":"Required fields are missing: [Name]","errorCode":"REQUIRED_FIELD_MISSING","fields":["Name"]}]"#;
        let details = decode_error_array(body).unwrap();
        let e = ApiError::from_details(StatusCode::BAD_REQUEST, details, ctx());
        assert_eq!(e.error_code, ErrorCode::RequiredFieldMissing);
        assert_eq!(e.fields, vec!["Name"]);
        assert_eq!(e.retry_class(), RetryClass::Permanent);
        let text = e.to_string();
        assert!(text.contains("REQUIRED_FIELD_MISSING") && text.contains("Contact"), "{text}");
    }

    #[test]
    fn decodes_multiple_errors_and_missing_fields() {
        let body =
            br#"[{"message":"a","errorCode":"INVALID_FIELD"},{"message":"b","errorCode":"SOMETHING_NEW","fields":[]}]"#;
        let e = ApiError::from_details(StatusCode::BAD_REQUEST, decode_error_array(body).unwrap(), ctx());
        assert_eq!(e.error_code, ErrorCode::InvalidField);
        assert!(e.fields.is_empty());
        assert_eq!(e.others[0].error_code, ErrorCode::Other("SOMETHING_NEW".into()));
        assert_eq!(e.others[0].error_code.as_str(), "SOMETHING_NEW");
    }

    #[test]
    fn rejects_statuscode_at_top_level_and_non_arrays() {
        assert!(decode_error_array(br#"[{"message":"x","statusCode":"MALFORMED_ID"}]"#).is_none());
        assert!(decode_error_array(br#"{"message":"x","errorCode":"NOT_FOUND"}"#).is_none());
        assert!(decode_error_array(b"<html>bad gateway</html>").is_none());
        assert!(decode_error_array(b"[]").is_none());
    }

    const DUPLICATE_BODY: &str = r#"[{"duplicateResut":{"allowSave":true,"duplicateRule":"Standard_Contact_Duplicate_Rule","duplicateRuleEntityType":"Contact","errorMessage":"You're creating a duplicate record. We recommend you use an existing record instead.","matchResults":[{"entityType":"Contact","errors":[],"matchEngine":"FuzzyMatchEngine","matchRecords":[{"additionalInformation":[],"fieldDiffs":[],"matchConfidence":100.0,"record":{"attributes":{"type":"Contact","url":"/services/data/v54.0/sobjects/Contact/0038M0000016Wv8QAE"},"Id":"0038M0000016Wv8QAE"}}],"rule":"Standard_Contact_Match_Rule_v1_1","size":1,"success":true}]},"errorCode":"DUPLICATES_DETECTED","message":"You're creating a duplicate record. We recommend you use an existing record instead."}]"#;

    #[test]
    fn decodes_misspelt_duplicate_result() {
        let details = decode_error_array(DUPLICATE_BODY.as_bytes()).unwrap();
        let dup = details[0].duplicate_result.as_ref().unwrap();
        assert!(dup.allow_save);
        assert_eq!(dup.matched_ids(), vec!["0038M0000016Wv8QAE"]);
        let correct = DUPLICATE_BODY.replace("duplicateResut", "duplicateResult");
        let details = decode_error_array(correct.as_bytes()).unwrap();
        assert_eq!(details[0].duplicate_result.as_ref().unwrap().duplicate_rule, "Standard_Contact_Duplicate_Rule");
    }

    #[test]
    fn record_errors_use_status_code() {
        let e: RecordError = serde_json::from_str(
            r#"{"statusCode":"MALFORMED_ID","message":"malformed id 001RM000003oLrB000","fields":[]}"#,
        )
        .unwrap();
        assert_eq!(e.status_code, ErrorCode::MalformedId);
        assert_eq!(e.retry_class(), RetryClass::Permanent);
        let lock: RecordError = serde_json::from_str(
            r#"{"statusCode":"UNABLE_TO_LOCK_ROW","message":"unable to obtain exclusive access to this record or 1 records: 001x"}"#,
        )
        .unwrap();
        assert_eq!(lock.retry_class(), RetryClass::Backoff);
        assert!(serde_json::from_str::<RecordError>(r#"{"errorCode":"X","message":"m"}"#).is_err());
    }

    #[test]
    fn classification_table() {
        use RetryClass::*;
        let cases: &[(Option<u16>, Option<&str>, &str, RetryClass)] = &[
            (Some(401), Some("INVALID_SESSION_ID"), "Session expired or invalid", RefreshAuth),
            (Some(401), None, "", RefreshAuth),
            (Some(401), Some("INVALID_AUTH_HEADER"), "", Permanent),
            (Some(403), Some("REQUEST_LIMIT_EXCEEDED"), "TotalRequests Limit exceeded.", NotNow),
            (Some(403), Some("REQUEST_LIMIT_EXCEEDED"), "ConcurrentPerOrgLongTxn Limit exceeded.", Backoff),
            (Some(400), Some("UNABLE_TO_LOCK_ROW"), "unable to obtain exclusive access", Backoff),
            (Some(503), Some("SERVER_UNAVAILABLE"), "", Backoff),
            (Some(503), None, "", Backoff),
            (Some(500), Some("UNKNOWN_EXCEPTION"), "", Backoff),
            (Some(429), None, "", Backoff),
            (Some(420), None, "", Backoff),
            (Some(400), Some("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"), "trigger: UNABLE_TO_LOCK_ROW, ...", Backoff),
            (Some(400), Some("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"), "Apex CPU time limit exceeded", Permanent),
            (Some(400), Some("DUPLICATE_VALUE"), "", Permanent),
            (Some(404), Some("NOT_FOUND"), "", Permanent),
            (Some(400), Some("STRING_TOO_LONG"), "", Permanent),
        ];
        for (status, code, msg, want) in cases {
            let code = code.map(ErrorCode::parse);
            assert_eq!(classify(*status, code.as_ref(), msg), *want, "{status:?} {code:?} {msg}");
        }
    }

    #[test]
    fn create_resend_safety() {
        let api = |status: StatusCode, code: &str| {
            Error::from(ApiError::from_details(
                status,
                vec![ErrorDetail {
                    error_code: ErrorCode::parse(code),
                    message: String::new(),
                    fields: vec![],
                    duplicate_result: None,
                }],
                ctx(),
            ))
        };
        assert!(api(StatusCode::SERVICE_UNAVAILABLE, "SERVER_UNAVAILABLE").safe_to_resend_create());
        assert!(api(StatusCode::BAD_REQUEST, "UNABLE_TO_LOCK_ROW").safe_to_resend_create());
        assert!(!api(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN_EXCEPTION").safe_to_resend_create());
        assert!(api(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN_EXCEPTION").may_have_committed());
        assert!(!api(StatusCode::BAD_REQUEST, "REQUIRED_FIELD_MISSING").may_have_committed());
    }
}
