//! A faithful local emulator of the Pendo Engage API (v1): integration-key auth, entity reads,
//! the aggregation query engine, metadata writes, outbound webhooks, a seeded data generator that
//! also describes the matching Salesforce org, and `/__emulator/` admin endpoints for tests.
//!
//! Wire facts (paths, shapes, status codes) follow `shared/reference/pendo-api.md`; where that
//! says UNCERTAIN the behaviour is a [`PendoConfig`] knob with the most likely default.
//!
//! # Layout
//! - [`val`], [`store`]: the value type and the subscription's data (columnar event tables).
//! - [`auth`]: key check, fault injection, throttling and usage accounting around `/api/v1`.
//! - [`entities`]: `GET /feature`, `/page`, `/guide`, `/tracktype`, `/report`, visitor/account.
//! - [`aggregation`]: `POST /api/v1/aggregation`: parser, expression language, executor.
//! - [`metadata`]: schema reads and field creation, bulk and single-value writes.
//! - [`webhooks`]: outbound deliveries with HMAC signatures and retries.
//! - [`admin`]: `/__emulator/` reset, seed, dumps, clock, faults, usage, webhooks.
//! - [`generate`]: deterministic data for N accounts and the matching Salesforce records.
//! - [`clock`], [`faults`], [`usage`]: the controllable clock, failures, call accounting.
//! - [`bench`]: generator and query benchmarks for the `bench` command.

pub mod admin;
pub mod aggregation;
pub mod auth;
pub mod bench;
pub mod clock;
pub mod entities;
pub mod faults;
pub mod generate;
pub mod metadata;
pub mod store;
#[cfg(test)]
mod tests;
pub mod usage;
pub mod val;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

pub use generate::{GenConfig, Generated};
pub use store::Store;

/// The integration key the emulator accepts out of the box (documented in the README).
pub const DEFAULT_INTEGRATION_KEY: &str = "emulator-integration-key";
/// A key without "Allow Write Access": reads work, metadata writes answer 403.
pub const DEFAULT_READONLY_KEY: &str = "emulator-readonly-key";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationKey {
    pub key: String,
    /// Whether the key was created with "Allow Write Access".
    pub write: bool,
}

/// How non-404 error bodies look. No real error body was ever captured, so this is a knob.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ErrorFormat {
    /// `text/plain` message, as Go's `http.Error` writes (the observed 404 is this style).
    #[default]
    Text,
    /// `{"error": "<message>", "status": <code>}`.
    Json,
}

/// What a bulk metadata write does with a field that is not in the schema.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum UnknownFieldPolicy {
    /// The record counts as `failed`.
    #[default]
    Fail,
    /// The value is dropped; the record counts as `updated`.
    Ignore,
    /// The field is created (type inferred from the value) and written.
    Create,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PendoConfig {
    pub integration_keys: Vec<IntegrationKey>,
    /// Subscription timezone as a fixed UTC offset (Pendo requires whole hours); `day` buckets
    /// and `dayRange` rounding use it.
    pub timezone_offset_minutes: i32,
    pub error_format: ErrorFormat,
    /// Whether the `count` aggregator counts distinct values (the official MAU examples read
    /// that way) or non-null values.
    pub count_distinct: bool,
    pub unknown_metadata_fields: UnknownFieldPolicy,
    /// Whether bulk-write responses always carry `"missing": []` (else only when non-empty).
    pub always_send_missing: bool,
    /// Initial fault rules and throttle.
    pub faults: faults::FaultConfig,
    /// Rows an aggregation may return before answering 400 ("too many results").
    pub max_result_rows: usize,
}

impl Default for PendoConfig {
    fn default() -> Self {
        PendoConfig {
            integration_keys: vec![
                IntegrationKey { key: DEFAULT_INTEGRATION_KEY.into(), write: true },
                IntegrationKey { key: DEFAULT_READONLY_KEY.into(), write: false },
            ],
            timezone_offset_minutes: 0,
            error_format: ErrorFormat::Text,
            count_distinct: true,
            unknown_metadata_fields: UnknownFieldPolicy::Fail,
            always_send_missing: true,
            faults: faults::FaultConfig::default(),
            max_result_rows: 5_000_000,
        }
    }
}

/// Shared state behind every handler. Cheap to clone.
#[derive(Clone)]
pub struct PendoState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: RwLock<PendoConfig>,
    pub store: RwLock<Store>,
    pub clock: clock::Clock,
    pub usage: usage::Usage,
    pub faults: faults::Faults,
    pub webhooks: webhooks::Webhooks,
    /// The generator settings of the current data, so `reset` can regenerate it.
    pub generated_from: RwLock<Option<GenConfig>>,
}

impl PendoState {
    /// An emulator with an empty subscription (schema groups only).
    pub fn new(config: PendoConfig) -> Self {
        let store = generate::empty_store();
        Self::with_store(config, store)
    }

    pub fn with_store(config: PendoConfig, mut store: Store) -> Self {
        store.set_day_timezone(i64::from(config.timezone_offset_minutes) * 60_000);
        let faults = faults::Faults::new(config.faults.clone());
        PendoState {
            inner: Arc::new(Inner {
                config: RwLock::new(config),
                store: RwLock::new(store),
                clock: clock::Clock::default(),
                usage: usage::Usage::default(),
                faults,
                webhooks: webhooks::Webhooks::default(),
                generated_from: RwLock::new(None),
            }),
        }
    }

    /// An emulator holding data generated from `gc` (deterministic for a seed and anchor day).
    pub fn generated(config: PendoConfig, gc: &GenConfig) -> Self {
        let state = Self::new(config);
        state.regenerate(gc);
        state
    }

    /// Replaces all data with freshly generated data.
    pub fn regenerate(&self, gc: &GenConfig) -> generate::GenStats {
        let mut gc = gc.clone();
        let tz = self.inner.config.read().timezone_offset_minutes;
        if gc.anchor_day_ms.is_none() {
            gc.anchor_day_ms = Some(generate::local_midnight(self.now_ms(), tz));
        }
        gc.timezone_offset_minutes = tz;
        let generated = generate::generate(&gc);
        let stats = generated.stats.clone();
        *self.inner.store.write() = generated.store;
        *self.inner.generated_from.write() = Some(gc);
        stats
    }

    /// The Salesforce records that match the current generated data (empty if none).
    pub fn salesforce_org(&self) -> generate::SalesforceOrg {
        match self.generated_from() {
            Some(gc) => generate::salesforce_org(&gc),
            None => Default::default(),
        }
    }

    /// What the current data was generated from (anchor filled in), if it was generated.
    pub fn generated_from(&self) -> Option<GenConfig> {
        self.inner.generated_from.read().clone()
    }

    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    pub fn config(&self) -> PendoConfig {
        self.inner.config.read().clone()
    }

    /// Read access to the data, e.g. for benchmarks.
    pub fn with_store_read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&self.inner.store.read())
    }

    pub fn usage(&self) -> usage::UsageReport {
        self.inner.usage.report()
    }
}

/// The emulator's HTTP surface: the Pendo API under `/api/v1`, admin under `/__emulator`, and
/// Go's plain-text 404 for everything else.
pub fn router(state: PendoState) -> Router {
    let api = Router::new()
        .merge(entities::routes())
        .merge(aggregation::routes())
        .merge(metadata::routes())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard));
    Router::new()
        .merge(api)
        .nest("/__emulator", admin::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::account_and_format))
        .with_state(state)
}

/// The real service's answer to unknown paths: `404 page not found\n`, text/plain, 19 bytes.
pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], "404 page not found\n")
        .into_response()
}

/// Serves the emulator on `listener` until `shutdown` resolves.
///
/// # Errors
/// Returns the server's I/O error if accepting connections fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: PendoState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

/// A running emulator on loopback, for tests and the CLI. Dropping it stops the server.
pub struct Running {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`: the REST base is `{base_url}/api/v1`.
    pub base_url: String,
    pub state: PendoState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the emulator on `addr` (use `127.0.0.1:0` for an ephemeral port).
///
/// # Errors
/// Fails when the address cannot be bound.
pub async fn start(addr: &str, state: PendoState) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    Ok(Running { addr: local, base_url: format!("http://{local}"), state, stop: Some(tx), task: Some(task) })
}

/// Convenience for tests: an emulator with generated data on `127.0.0.1:0`.
///
/// # Errors
/// Fails when no loopback port can be bound.
pub async fn start_for_tests(config: PendoConfig, gc: &GenConfig) -> std::io::Result<Running> {
    start("127.0.0.1:0", PendoState::generated(config, gc)).await
}

/// An error answer from an API handler. The status is the wire status; the message becomes the
/// body in the configured [`ErrorFormat`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
}

/// Marks a response as an API error so the format layer can re-render it as configured.
#[derive(Clone, Debug)]
pub(crate) struct ErrorMessage(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.message),
        )
            .into_response();
        r.extensions_mut().insert(ErrorMessage(self.message));
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
