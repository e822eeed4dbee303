//! Aggregations: the typed pipeline builder ([`pipeline`]), safe expressions ([`expr`]),
//! keyset paging ([`paging`]) and the call itself.

pub mod expr;
pub mod paging;
pub mod pipeline;
mod rows;

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Client;
use crate::error::{Error, Result};
use crate::transport::{Body, snippet};

/// An aggregation response.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregationResponse {
    #[serde(default)]
    pub start_time: Option<i64>,
    #[serde(default)]
    pub results: Vec<Value>,
}

impl AggregationResponse {
    /// The rows as typed records.
    ///
    /// # Errors
    /// [`Error::Decode`] if a row does not fit `T`.
    pub fn rows<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        self.results
            .iter()
            .map(|r| {
                serde_json::from_value(r.clone()).map_err(|source| Error::Decode {
                    endpoint: "POST /aggregation".into(),
                    snippet: r.to_string().chars().take(200).collect(),
                    source,
                })
            })
            .collect()
    }
}

impl Client {
    /// Runs an aggregation pipeline.
    ///
    /// # Errors
    /// [`Error::Pipeline`] for an invalid builder, [`Error::Rejected`] (400/422) when Pendo
    /// refuses the pipeline, and the usual transport/throttle/server errors.
    pub async fn aggregate(&self, pipeline: &pipeline::Pipeline) -> Result<AggregationResponse> {
        self.aggregate_raw(&pipeline.body("usagesync")?).await
    }

    /// Runs a hand-written aggregation body.
    ///
    /// # Errors
    /// As [`Client::aggregate`].
    pub async fn aggregate_raw(&self, body: &Value) -> Result<AggregationResponse> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Pipeline(e.to_string()))?;
        self.transport.json(Method::POST, "/aggregation", &[], Body::Json(bytes)).await
    }

    /// Runs an aggregation pipeline and hands each result row to `each` as it arrives, so a large
    /// page costs one row's bytes at a time, not its body's. Returns the number of rows. Rows
    /// handed over before an error (a body that breaks off, or `each` refusing a row) stay
    /// handed over: the caller either drops what it built from them or, for a body that broke
    /// off ([`Error::Interrupted`]), asks for the rows after the last one it got.
    ///
    /// # Errors
    /// As [`Client::aggregate`], converted into `E`, plus [`Error::Decode`] for a body that is
    /// not an aggregation response and [`Error::Interrupted`] for one that broke off; `each`'s
    /// own error is returned unchanged.
    pub async fn aggregate_each<E: From<Error>>(
        &self,
        pipeline: &pipeline::Pipeline,
        mut each: impl FnMut(Value) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        const ENDPOINT: &str = "POST /aggregation";
        let request = serde_json::to_vec(&pipeline.body("usagesync")?).map_err(|e| Error::Pipeline(e.to_string()))?;
        let mut resp = self.transport.open(Method::POST, "/aggregation", &[], Body::Json(request)).await?;
        let mut splitter = rows::RowSplitter::new(self.transport.config.max_response_bytes);
        let decode = |splitter: &rows::RowSplitter, stop: rows::Stop<E>| match stop {
            rows::Stop::Caller(e) => e,
            rows::Stop::Parse(source) => {
                Error::Decode { endpoint: ENDPOINT.into(), snippet: snippet(splitter.context()), source }.into()
            }
        };
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if let Err(stop) = splitter.feed(&chunk, &mut each) {
                        return Err(decode(&splitter, stop));
                    }
                }
                Ok(None) => break,
                Err(source) => {
                    return Err(Error::Interrupted { endpoint: ENDPOINT.into(), rows: splitter.rows(), source }.into());
                }
            }
        }
        splitter.finish(&mut each).map_err(|stop| decode(&splitter, stop))
    }

    /// Pages through `base` in order of `keys` (unique together), `page_size` rows at a time.
    pub fn pager(&self, base: pipeline::Pipeline, keys: &[&str], page_size: u64) -> paging::Pager<'_> {
        paging::Pager::new(self, base, keys, page_size)
    }
}
