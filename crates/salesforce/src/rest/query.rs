//! SOQL `query` and `queryAll` as streams: each page is one API call, and the stream follows
//! `nextRecordsUrl` until Salesforce reports `done`.

use futures_util::stream::{self, Stream, StreamExt, TryStreamExt};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Client;
use crate::error::{Error, RequestContext, Result};
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
        let client = self.clone();
        stream::try_unfold(Cursor::First(soql.into()), move |cursor| {
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
