//! Aggregations: the typed pipeline builder ([`pipeline`]), safe expressions ([`expr`]),
//! keyset paging ([`paging`]) and the call itself.

pub mod expr;
pub mod paging;
pub mod pipeline;

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Client;
use crate::error::{Error, Result};
use crate::transport::Body;

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

    /// Pages through `base` in order of `keys` (unique together), `page_size` rows at a time.
    pub fn pager(&self, base: pipeline::Pipeline, keys: &[&str], page_size: u64) -> paging::Pager<'_> {
        paging::Pager::new(self, base, keys, page_size)
    }
}
