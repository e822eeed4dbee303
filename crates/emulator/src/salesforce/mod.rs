//! The Salesforce emulator: an org (schema + records) served over Salesforce's REST wire
//! protocol, with OAuth, API-call accounting, limits, fault injection and admin endpoints.
//!
//! # Layout
//! - [`ids`], [`schema`], [`store`]: the org model and the DML rules every write path shares.
//! - [`oauth`]: the token endpoint, userinfo, revoke, the bearer check.
//! - [`rest`]: the entry for `/services/data/`; it authenticates, counts and dispatches to
//!   [`sobjects`], [`collections`], [`composite`], [`tree`], [`query`] (over [`soql`]),
//!   [`search`] (SOSL) and [`bulk`].
//! - [`accounting`], [`faults`], [`admin`]: what tests control and observe.

pub mod accounting;
pub mod admin;
pub mod bulk;
pub mod collections;
pub mod composite;
pub mod faults;
pub mod ids;
pub mod oauth;
pub mod query;
pub mod record;
pub mod response;
pub mod rest;
pub mod schema;
pub mod search;
pub mod sobjects;
pub mod soql;
pub mod state;
pub mod store;
pub mod tree;
pub mod world;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::{any, get, post, put};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::decompression::RequestDecompressionLayer;

pub use state::{Config, SfState};

use crate::server::{self, Tls};

/// The emulator's routes: OAuth, the data API, admin; a path real clients send in a looser form
/// (`//services/data/...` from an instance URL kept with a trailing slash, or a trailing slash
/// after a resource) is tried again in its canonical form before it is answered 404.
pub fn router(state: SfState) -> Router {
    let strict = routes(state);
    let again = strict.clone();
    strict.fallback(move |req: Request| {
        let again = again.clone();
        async move {
            match canonical_path(req.uri()) {
                Some(uri) => {
                    let (mut parts, body) = req.into_parts();
                    parts.uri = uri;
                    match again.oneshot(Request::from_parts(parts, body)).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    }
                }
                None => response::Resp::not_found().into_response(),
            }
        }
    })
}

/// The URI with runs of slashes collapsed and a trailing slash dropped, or `None` when that
/// changes nothing (so the retry can never loop).
fn canonical_path(uri: &http::Uri) -> Option<http::Uri> {
    let path = uri.path();
    let mut clean = String::with_capacity(path.len());
    for ch in path.chars() {
        if ch == '/' && clean.ends_with('/') {
            continue;
        }
        clean.push(ch);
    }
    if clean.len() > 1 && clean.ends_with('/') {
        clean.pop();
    }
    if clean == path {
        return None;
    }
    let pq = match uri.query() {
        Some(q) => format!("{clean}?{q}"),
        None => clean,
    };
    http::Uri::builder().path_and_query(pq).build().ok()
}

fn routes(state: SfState) -> Router {
    Router::new()
        .route("/services/oauth2/token", post(oauth::token))
        .route("/services/oauth2/userinfo", get(oauth::userinfo).post(oauth::userinfo))
        .route("/services/oauth2/revoke", post(oauth::revoke))
        .route("/id/{org}/{user}", get(oauth::identity).post(oauth::identity))
        .route("/services/data", any(rest::handle))
        .route("/services/data/", any(rest::handle))
        .route("/services/data/{*rest}", any(rest::handle))
        .route("/__emulator/reset", post(admin::reset))
        .route("/__emulator/records/{sobject}", post(admin::seed).get(admin::dump))
        .route("/__emulator/fields/{sobject}", post(admin::fields))
        .route(
            "/__emulator/validation-rules/{sobject}",
            post(admin::validation_rule).delete(admin::clear_validation_rules),
        )
        .route("/__emulator/field-updates/{sobject}", post(admin::field_update).delete(admin::clear_field_updates))
        .route("/__emulator/usage", get(admin::usage))
        .route("/__emulator/limits", put(admin::limits))
        .route("/__emulator/faults", put(admin::faults))
        .route("/__emulator/clock", put(admin::clock))
        .route("/__emulator/sessions/expire", post(admin::expire_sessions))
        .fallback(|| async { response::Resp::not_found() })
        .layer(RequestDecompressionLayer::new())
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(state)
}

/// Serves the emulator on `listener` until `shutdown` resolves. The base URL (scheme, host,
/// port) is recorded in the state so token responses can name it as `instance_url`.
pub async fn serve(listener: TcpListener, state: SfState, tls: Option<Tls>, shutdown: impl Future<Output = ()>) {
    if let Ok(addr) = listener.local_addr() {
        state.set_base_url(base_url(addr, tls.is_some()));
    }
    server::serve(listener, router(state), tls, shutdown).await;
}

pub fn base_url(addr: SocketAddr, tls: bool) -> String {
    format!("{}://{addr}", if tls { "https" } else { "http" })
}

/// A running emulator for tests and benchmarks: dropped, it stops.
#[derive(Debug)]
pub struct Running {
    pub base_url: String,
    pub state: SfState,
    /// The self-signed certificate's PEM when serving TLS.
    pub cert_pem: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts an emulator on 127.0.0.1 with an OS-chosen port, in the current tokio runtime.
///
/// # Errors
/// When the port cannot be bound or the TLS certificate cannot be made.
pub async fn spawn(config: Config, tls: bool) -> std::io::Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let tls = if tls { Some(Tls::self_signed().map_err(std::io::Error::other)?) } else { None };
    let cert_pem = tls.as_ref().map(|t| t.cert_pem.clone());
    let state = SfState::new(config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, state.clone(), tls.clone(), async {
        let _ = stopped.await;
    }));
    Ok(Running { base_url: base_url(addr, tls.is_some()), state, cert_pem, stop: Some(stop) })
}
