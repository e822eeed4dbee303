//! Typed async Salesforce client for usagesync: OAuth token flows, sObject CRUD and upsert,
//! sObject Collections with automatic 200-record chunking, Composite, SOQL queries as streams,
//! Bulk API 2.0 ingest and query jobs, describe, getUpdated/getDeleted, limits and live
//! API-usage tracking.
//!
//! Written from Salesforce's documented behaviour; it shares no code with the emulator it is
//! tested against, so that the two can disagree and the disagreement shows.
//!
//! ```no_run
//! # async fn run() -> salesforce::Result<()> {
//! use salesforce::{Client, ClientConfig, OAuth, ClientAuth};
//! let auth = OAuth::client_credentials(
//!     "https://acme.my.salesforce.com", "client-id", "secret", ClientAuth::Form)?;
//! let client = Client::new(ClientConfig::default(), auth)?;
//! let created = client.create("Account", &serde_json::json!({"Name": "Acme"})).await?;
//! println!("{}", created.id);
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `config` — [`ApiVersion`], [`RetryPolicy`], [`ClientConfig`].
//! - `error` — [`Error`], [`ApiError`], [`ErrorCode`], [`RecordError`], [`RetryClass`].
//! - `ids` — [`SalesforceId`]: 15/18-character IDs and their checksum.
//! - `auth` — [`TokenSource`], [`OAuth`] flows, [`StaticToken`], the token cache.
//! - `transport` — the single send path (auth → call options → send → usage → classify →
//!   refresh/retry).
//! - `limits` — `Sforce-Limit-Info` parsing, [`UsageTracker`], `/limits` as [`OrgLimits`].
//! - `rest::sobjects` — create, get, get by external ID, update, delete, upsert.
//! - `rest::collections` — `/composite/sobjects` create/update/upsert/delete/retrieve.
//! - `rest::composite` — `/composite` with up to 25 subrequests.
//! - `rest::query` — SOQL query/queryAll as a `Stream`, following `nextRecordsUrl`.
//! - `rest::describe` — versions, global and per-object describe (cached), getUpdated/getDeleted.
//! - `bulk` — Bulk API 2.0: records streamed as CSV into ingest jobs with per-row outcomes,
//!   query jobs as streams of typed rows.
//! - `soql` — injection-proof SOQL builder and literal escaping.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod bulk;
pub mod config;
pub mod error;
pub mod ids;
pub mod limits;
pub mod rest;
pub mod soql;
mod transport;

use std::sync::Arc;

pub use auth::{AccessToken, ClientAuth, Identity, OAuth, Secret, StaticToken, TokenSource};
pub use bulk::{
    BulkQueryOptions, ColumnDelimiter, IngestOptions, IngestReport, IngestSummary, JobInfo, JobState, LineEnding,
    Operation as BulkOperation, PollPolicy, RowOutcome, RowStatus,
};
pub use config::{ApiVersion, ClientConfig, RetryPolicy};
pub use error::{
    ApiError, AuthError, DuplicateResult, Error, ErrorCode, ErrorDetail, RecordError, RecordRef, RequestContext,
    Result, RetryClass,
};
pub use ids::{IdError, SalesforceId};
pub use limits::{ApiUsage, Limit, LimitInfo, OrgLimits, PerAppUsage, UsageSnapshot, UsageTracker};
pub use rest::collections::{COLLECTIONS_MAX_RECORDS, RETRIEVE_MAX_IDS, SaveResult};
pub use rest::composite::{COMPOSITE_MAX_SUBREQUESTS, CompositeRequest, CompositeSubrequest, CompositeSubresponse};
pub use rest::describe::{
    DeletedRecord, DeletedRecords, FieldDescribe, GlobalDescribe, PicklistValue, SObjectDescribe, SObjectSummary,
    UpdatedRecords, VersionInfo,
};
pub use rest::query::{Children, QueryOptions, QueryPage};
pub use rest::sobjects::{CreateResult, UpsertOutcome};
pub use soql::{Condition, Literal, Order, SoqlError, SoqlQuery};
pub use transport::CALL_OPTIONS_HEADER;

use rest::describe::DescribeCache;
use transport::Transport;

/// A Salesforce REST client. Cheap to clone; clones share the connection pool, the token, the
/// describe cache and the API-usage reading.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    describe: DescribeCache,
}

impl Client {
    /// Builds a client that gets tokens from `tokens`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `config` is invalid or the HTTP client cannot be built.
    pub fn new(config: ClientConfig, tokens: impl TokenSource + 'static) -> Result<Self> {
        Self::from_parts(config, Arc::new(tokens), None)
    }

    /// As [`Client::new`], with a shared token source and/or a caller-built `reqwest::Client`
    /// (its timeouts then apply instead of the config's).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `config` is invalid or the HTTP client cannot be built.
    pub fn from_parts(
        config: ClientConfig,
        tokens: Arc<dyn TokenSource>,
        http: Option<reqwest::Client>,
    ) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                transport: Transport::new(config, tokens, http)?,
                describe: DescribeCache::default(),
            }),
        })
    }

    /// The settings this client was built with.
    #[must_use]
    pub fn config(&self) -> &ClientConfig {
        self.inner.transport.config()
    }

    /// The API version in every data URL.
    #[must_use]
    pub fn api_version(&self) -> ApiVersion {
        self.config().api_version
    }

    /// Logs in if needed and returns the org and integration user behind the token.
    ///
    /// # Errors
    /// [`Error::Auth`] when no token can be obtained.
    pub async fn identity(&self) -> Result<Identity> {
        Ok(self.inner.transport.token().await?.identity.clone())
    }

    /// Logs in if needed and returns the instance URL data calls go to.
    ///
    /// # Errors
    /// [`Error::Auth`] when no token can be obtained.
    pub async fn instance_url(&self) -> Result<url::Url> {
        Ok(self.inner.transport.token().await?.instance_url.clone())
    }

    /// The current token, if one has been obtained.
    #[must_use]
    pub fn current_token(&self) -> Option<Arc<AccessToken>> {
        self.inner.transport.cached_token()
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    pub(crate) fn describe_cache(&self) -> &DescribeCache {
        &self.inner.describe
    }

    /// `/services/data/vNN.0/<rest>`.
    pub(crate) fn data_path(&self, rest: &str) -> String {
        format!("{}/{}", self.api_version().data_root(), rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn shared_types_cross_threads() {
        // Clients are cloned into worker tasks and errors are sent back across them.
        assert_send_sync::<Client>();
        assert_send_sync::<Error>();
        assert_send_sync::<SalesforceId>();
    }
}
