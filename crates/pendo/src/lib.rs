//! A typed async client for the Pendo Engage API (v1), written from the documented API and
//! sharing no code with the emulator.
//!
//! # Layout
//! - [`config`]: base URL (region from the key suffix), key, timeouts, retry policy.
//! - `transport`: the single request path with retries on 429/408/5xx honouring `Retry-After`.
//! - `limiter`: the pace shared by every request of a client and its clones, learnt from 429s.
//! - [`aggregation`]: pipeline builder, safe expressions, keyset paging.
//! - [`entities`]: catalogue lists, visitors, accounts, history, metadata schema.
//! - [`metadata`]: bulk writes in batches of 500 with per-id outcomes, single values, fields.
//! - [`webhook`]: payload types and HMAC-SHA256 verification.
//! - [`error`]: the error type with retry/fault classification.

pub mod aggregation;
pub mod config;
pub mod entities;
pub mod error;
mod limiter;
pub mod metadata;
mod transport;
pub mod webhook;

pub use aggregation::expr::{Expr, Lit};
pub use aggregation::pipeline::{Agg, Apps, Period, Pipeline, SortKey, Source, Span, Time, TimeSeries};
pub use config::{ClientConfig, IntegrationKey, RetryPolicy};
pub use entities::Kind;
pub use error::{Error, Fault, Result};
pub use transport::{CALL_KINDS, KEY_HEADER};

/// The Pendo client. Cheap to clone (the connection pool is shared).
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) transport: transport::Transport,
}

impl Client {
    /// # Errors
    /// [`Error::Config`] if the HTTP client cannot be built.
    pub fn new(config: ClientConfig) -> Result<Self> {
        Ok(Client { transport: transport::Transport::new(config)? })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.transport.config
    }

    /// Requests this client and its clones sent, by kind ([`CALL_KINDS`]), every attempt
    /// counted (retries and throttled tries too): the load this process put on Pendo.
    #[must_use]
    pub fn calls_by_kind(&self) -> Vec<(&'static str, u64)> {
        self.transport.calls_by_kind()
    }
}
