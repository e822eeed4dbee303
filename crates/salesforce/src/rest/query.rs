//! SOQL `query` and `queryAll` as streams: each page is one API call, and the stream follows
//! `nextRecordsUrl` until Salesforce reports `done`. Rows of queries with parent-to-child
//! subqueries carry each relationship's children as a nested result ([`Children`]), which
//! [`Client::query_with_children`] completes when Salesforce pages it.

use std::sync::Arc;

use futures_util::stream::{self, Stream, StreamExt, TryStreamExt};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Client;
use crate::error::{Error, RequestContext, Result};
use crate::rest::composite::CompositeSubresponse;
use crate::rest::describe::SObjectDescribe;
use crate::transport::{ApiRequest, Target};

/// Request header that asks for a page size (`Sforce-Query-Options`; header names are
/// case-insensitive and `HeaderName::from_static` wants lower case).
const QUERY_OPTIONS_HEADER: &str = "sforce-query-options";

/// How to run a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryOptions {
    /// `Sforce-Query-Options: batchSize=N` (200–2,000; Salesforce treats it as a hint).
    /// `None` uses the client default, if any.
    pub batch_size: Option<u16>,
    /// Use `queryAll`, which also returns deleted and archived rows (`IsDeleted`).
    pub include_deleted: bool,
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryPage<T> {
    /// Rows matching the whole query, not just this page.
    #[serde(rename = "totalSize")]
    pub total_size: u64,
    /// True on the last page.
    pub done: bool,
    /// Path of the next page, present only when `done` is false.
    #[serde(rename = "nextRecordsUrl", default, skip_serializing_if = "Option::is_none")]
    pub next_records_url: Option<String>,
    /// This page's rows.
    pub records: Vec<T>,
}

/// A parent-to-child subquery's result inside a row (`"Contacts": {"totalSize", "done",
/// "records"}`). Salesforce sends `null` instead when the parent has no children, so a row type
/// declares it as `Option<Children<T>>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Children<T> {
    /// Children matching the subquery.
    #[serde(rename = "totalSize")]
    pub total_size: u64,
    /// False when Salesforce paged the children; [`Client::query_with_children`] fetches the rest.
    pub done: bool,
    /// The children.
    pub records: Vec<T>,
}

impl<T> Children<T> {
    /// The children of an optional (null when none) nested result.
    pub fn of(nested: Option<&Children<T>>) -> &[T] {
        nested.map_or(&[], |c| c.records.as_slice())
    }
}

enum Cursor {
    First(String),
    Next(String),
    Finished,
}

impl Client {
    fn query_request(&self, cursor: &Cursor, options: QueryOptions) -> Result<Option<ApiRequest>> {
        let mut request = match cursor {
            Cursor::Finished => return Ok(None),
            Cursor::First(soql) => {
                let resource = if options.include_deleted { "queryAll" } else { "query" };
                let path = self.data_path(resource);
                let ctx = RequestContext::new(Method::GET, &path);
                ApiRequest::new(Method::GET, Target::Path(path), ctx).query("q", soql.clone())
            }
            Cursor::Next(next) => {
                // The locator must stay on our instance; anything else is not a page URL.
                if !next.starts_with("/services/data/") || next.contains("://") {
                    return Err(Error::Protocol {
                        context: RequestContext::new(Method::GET, next.clone()),
                        reason: format!("nextRecordsUrl {next:?} is not a /services/data/ path"),
                    });
                }
                let ctx = RequestContext::new(Method::GET, next.clone());
                ApiRequest::new(Method::GET, Target::Path(next.clone()), ctx)
            }
        };
        if let Some(size) = options.batch_size.or(self.config().query_batch_size) {
            let value = HeaderValue::from_str(&format!("batchSize={size}"))
                .map_err(|e| Error::InvalidInput(format!("batch size: {e}")))?;
            request = request.header(HeaderName::from_static(QUERY_OPTIONS_HEADER), value);
        }
        Ok(Some(request))
    }

    /// Pages from a `nextRecordsUrl` on, one API call each: the rest of a paged nested result.
    fn pages_from<T>(&self, next: String) -> impl Stream<Item = Result<QueryPage<T>>> + Send + 'static
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.pages_at(Cursor::Next(next), QueryOptions::default())
    }

    /// The first page of a query and the describe of `object` in one Composite call, where
    /// sent apart they cost two: for a read whose object's schema the same run checks next.
    /// The describe is cached as [`Client::describe_fresh`] caches it (see
    /// [`Client::describe_fetched_since`]); the pages after the first come from
    /// [`Client::query_pages_after`].
    ///
    /// # Errors
    /// The query's failure, as its own request would have failed; request-level failures. A
    /// describe that failed is not an error: the cache is left as it was, and the check that
    /// wants it asks again.
    pub async fn query_first_page_describing<T: DeserializeOwned>(
        &self,
        soql: &str,
        options: QueryOptions,
        object: &str,
    ) -> Result<QueryPage<T>> {
        let mut request = self.composite_request(false);
        request.describe("describe", object)?.query_with("page", soql, options);
        let mut results = self.composite(&request).await?;
        let context = RequestContext::new(Method::GET, self.data_path("query"));
        let page = results.pop().ok_or_else(|| Error::Protocol {
            context: context.clone(),
            reason: "the composite answer has no query result".into(),
        })?;
        if !page.is_success() {
            return Err(page.api_error(context.clone()).map_or_else(
                || Error::Protocol {
                    context,
                    reason: format!("the query failed with HTTP {} and no error array", page.http_status_code),
                },
                Error::from,
            ));
        }
        if let Some(describe) = results.pop().filter(CompositeSubresponse::is_success) {
            match describe.body_as::<SObjectDescribe>() {
                Ok(d) => self.describe_cache().insert(object, Arc::new(d)),
                Err(e) => {
                    tracing::debug!(object, error = %e, "A describe sent with a query did not decode; it will be asked for again.")
                }
            }
        }
        page.body_as()
    }

    /// The pages after `first` (none when it was the last), one API call each.
    pub fn query_pages_after<T, U>(
        &self,
        first: &QueryPage<U>,
    ) -> impl Stream<Item = Result<QueryPage<T>>> + Send + 'static
    where
        T: DeserializeOwned + Send + 'static,
    {
        let cursor = match (&first.done, &first.next_records_url) {
            (false, Some(next)) => Cursor::Next(next.clone()),
            _ => Cursor::Finished,
        };
        self.pages_at(cursor, QueryOptions::default())
    }

    /// Pages of a query, one API call each, following `nextRecordsUrl`.
    ///
    /// The stream ends after the page with `done: true`, or after the first error.
    pub fn query_pages<T>(
        &self,
        soql: impl Into<String>,
        options: QueryOptions,
    ) -> impl Stream<Item = Result<QueryPage<T>>> + Send + 'static
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.pages_at(Cursor::First(soql.into()), options)
    }

    fn pages_at<T>(
        &self,
        first: Cursor,
        options: QueryOptions,
    ) -> impl Stream<Item = Result<QueryPage<T>>> + Send + 'static
    where
        T: DeserializeOwned + Send + 'static,
    {
        let client = self.clone();
        stream::try_unfold(first, move |cursor| {
            let client = client.clone();
            async move {
                let Some(request) = client.query_request(&cursor, options)? else {
                    return Ok(None);
                };
                let context = request.context().clone();
                let page: QueryPage<T> = client.transport().send_json(request).await?;
                let next = match (&page.done, &page.next_records_url) {
                    (true, _) => Cursor::Finished,
                    (false, Some(url)) => Cursor::Next(url.clone()),
                    (false, None) => {
                        return Err(Error::Protocol {
                            context,
                            reason: "done is false but nextRecordsUrl is missing".into(),
                        });
                    }
                };
                Ok(Some((page, next)))
            }
        })
    }

    /// Rows of a SOQL query, fetched page by page as the stream is consumed.
    pub fn query<T>(&self, soql: impl Into<String>) -> impl Stream<Item = Result<T>> + Send + 'static
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.query_with(soql, QueryOptions::default())
    }

    /// Rows of a `queryAll` (deleted and archived rows included).
    pub fn query_all<T>(&self, soql: impl Into<String>) -> impl Stream<Item = Result<T>> + Send + 'static
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.query_with(soql, QueryOptions { include_deleted: true, ..QueryOptions::default() })
    }

    /// Rows of a query with explicit [`QueryOptions`].
    pub fn query_with<T>(
        &self,
        soql: impl Into<String>,
        options: QueryOptions,
    ) -> impl Stream<Item = Result<T>> + Send + 'static
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.query_pages(soql, options).map_ok(|page| stream::iter(page.records.into_iter().map(Ok))).try_flatten()
    }

    /// Rows of a query with parent-to-child subqueries (see [`crate::SoqlQuery::with_children`]),
    /// each with its children complete: where Salesforce paged a row's children (`done: false`
    /// with a `nextRecordsUrl` of their own), the rest are fetched, one API call per page, before
    /// the row is decoded into `T`, whose nested fields are `Option<Children<_>>`.
    ///
    /// # Errors
    /// As [`Client::query_collect`], or [`Error::Decode`] when a row does not fit `T`.
    pub async fn query_with_children<T>(&self, soql: impl Into<String>, options: QueryOptions) -> Result<Vec<T>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let soql = soql.into();
        let context = RequestContext::new(
            Method::GET,
            self.data_path(if options.include_deleted { "queryAll" } else { "query" }),
        );
        let rows: Vec<serde_json::Value> = self.query_with(soql, options).try_collect().await?;
        let mut out = Vec::with_capacity(rows.len());
        for mut row in rows {
            if let serde_json::Value::Object(fields) = &mut row {
                for value in fields.values_mut() {
                    self.complete_children(value).await?;
                }
            }
            let decoded = serde_json::from_value(row).map_err(|source| Error::Decode {
                context: context.clone(),
                source,
                snippet: String::new(),
            })?;
            out.push(decoded);
        }
        Ok(out)
    }

    /// Fetches the remaining pages of one nested result, if it is a paged one, then does the
    /// same for its records' own nested results (subqueries nest up to five levels).
    fn complete_children<'a>(
        &'a self,
        value: &'a mut serde_json::Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let Some(nested) = value.as_object_mut() else { return Ok(()) };
            if !nested.contains_key("records") || !nested.contains_key("done") {
                return Ok(());
            }
            let next = nested.get("nextRecordsUrl").and_then(serde_json::Value::as_str).map(str::to_owned);
            if nested.get("done") == Some(&serde_json::Value::Bool(false))
                && let Some(next) = next
            {
                let pages: Vec<QueryPage<serde_json::Value>> = self.pages_from(next).try_collect().await?;
                if let Some(serde_json::Value::Array(records)) = nested.get_mut("records") {
                    for page in pages {
                        records.extend(page.records);
                    }
                }
                nested.insert("done".into(), serde_json::Value::Bool(true));
                nested.remove("nextRecordsUrl");
            }
            if let Some(serde_json::Value::Array(records)) = nested.get_mut("records") {
                for record in records {
                    if let serde_json::Value::Object(fields) = record {
                        for field in fields.values_mut() {
                            self.complete_children(field).await?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Collects every row of a query into memory.
    ///
    /// # Errors
    /// The first failing page's error (`MALFORMED_QUERY`, `INVALID_FIELD`, `INVALID_TYPE`…).
    pub async fn query_collect<T>(&self, soql: impl Into<String>) -> Result<Vec<T>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.query(soql).try_collect().await
    }

    /// The first page only, e.g. to read `totalSize` cheaply with a `LIMIT`.
    ///
    /// # Errors
    /// As [`Client::query_collect`].
    pub async fn query_first_page<T>(&self, soql: impl Into<String>, options: QueryOptions) -> Result<QueryPage<T>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let mut pages = Box::pin(self.query_pages(soql, options));
        match pages.next().await {
            Some(page) => page,
            None => Err(Error::InvalidInput("query produced no page".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_documented_pages() {
        let body = r#"{"totalSize":2014,"done":false,"nextRecordsUrl":"/services/data/v60.0/query/01gD0000002HU6KIAW-2000",
            "records":[{"attributes":{"type":"Account","url":"/services/data/v60.0/sobjects/Account/001D000000IRFmaIAH"},
            "Id":"001D000000IRFmaIAH","Name":"Test 1","Owner":{"attributes":{"type":"User","url":"x"},"Name":"Jo"}}]}"#;
        let p: QueryPage<serde_json::Value> = serde_json::from_str(body).unwrap();
        assert_eq!(p.total_size, 2014);
        assert!(!p.done);
        assert_eq!(p.records[0]["Owner"]["Name"], "Jo");
        let empty: QueryPage<serde_json::Value> =
            serde_json::from_str(r#"{"totalSize":0,"done":true,"records":[]}"#).unwrap();
        assert!(empty.next_records_url.is_none());
    }
}
