//! The web console the daemon serves: server-rendered pages over the state store (overview,
//! a run, failures, matching review, API budget, config) and the few actions an operator takes
//! (replay or dismiss failures, pin a match). It owns access (login, sessions, CSRF and Origin
//! checks, per-address throttling of wrong tokens) and
//! its own listener when `console.listen` asks for one; pages live one module each.
//!
//! Every page reads the store on request, so it shows every worker sharing the store, and
//! nothing here keeps state of its own beyond the login sessions.

mod auth;
pub(crate) use auth::hash_password;
mod budget;
mod config;
mod failures;
mod html;
mod matching;
mod overview;
mod run;
mod throttle;
mod workflows;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use engine::workflow::Context;
use http::StatusCode;

/// What every console handler gets.
#[derive(Clone)]
pub(crate) struct ConsoleState {
    pub ctx: Context,
    pub auth: Arc<auth::Auth>,
    /// The alerts the daemon sent or tried (shown on the overview).
    pub alerts: crate::commands::SentLog,
}

/// The console, ready to serve: either routes for the daemon's own router, or a server of its
/// own on `console.listen`.
pub struct Mounted {
    shared: Option<Router>,
    own: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>)>,
}

impl Mounted {
    /// Routes to merge into the daemon's router (none when the console listens on its own).
    pub fn router(&mut self) -> Router {
        self.shared.take().unwrap_or_default()
    }

    /// Stops the console's own server, if it has one.
    pub async fn stop(self) {
        if let Some((stop, server)) = self.own {
            let _ = stop.send(());
            let _ = server.await;
        }
    }
}

/// Builds the console from `console:` (nothing without that section); resolves the token once.
pub async fn mount(ctx: &Context, env: engine::connect::Env<'_>, alerts: &crate::commands::SentLog) -> Result<Mounted> {
    let Some(console) = &ctx.config.console else { return Ok(Mounted { shared: None, own: None }) };
    let token = console.token.resolve(env).map_err(|e| anyhow::anyhow!("console.token: {}", e.message))?;
    let mut users = std::collections::HashMap::new();
    for (i, user) in console.users.iter().enumerate() {
        let key = format!("console.users[{i}].password_hash");
        let hash = user.password_hash.resolve(env).map_err(|e| anyhow::anyhow!("{key}: {}", e.message))?;
        let hash = hash.expose().trim().to_owned();
        // Checked at start, so a bad hash stops the daemon rather than every login.
        argon2::password_hash::phc::PasswordHash::new(&hash).map_err(|_| {
            anyhow::anyhow!("{key}: not an Argon2 password hash (make one with `usagesync console-password`)")
        })?;
        users.insert(user.name.clone(), (hash, user.role));
    }
    let state = ConsoleState {
        ctx: ctx.clone(),
        auth: Arc::new(auth::Auth::with_users(token, console.session_hours, users)),
        alerts: Arc::clone(alerts),
    };
    let routes = router(state);
    let Some(listen) = console.listen else { return Ok(Mounted { shared: Some(routes), own: None }) };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("Failed to listen on {listen} (console.listen)"))?;
    let addr: SocketAddr = listener.local_addr().context("Failed to read the console's bound address")?;
    eprintln!("usagesync console on http://{addr}/console/");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, routes.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Mounted { shared: None, own: Some((stop, server)) })
}

fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/console", get(|| async { axum::response::Redirect::to("/console/") }))
        .route("/console/", get(overview::page))
        .route("/console/login", get(auth::login_page).post(auth::login))
        .route("/console/logout", post(auth::logout))
        .route("/console/runs/{id}", get(run::page))
        .route("/console/failures", get(failures::page))
        .route("/console/failures/replay", post(failures::replay))
        .route("/console/failures/dismiss", post(failures::dismiss))
        .route("/console/matching", get(matching::page))
        .route("/console/matching/pin", post(matching::pin))
        .route("/console/budget", get(budget::page))
        .route("/console/workflows/run", post(workflows::run_now))
        .route("/console/workflows/pause", post(workflows::pause))
        .route("/console/config", get(config::page))
        .layer(axum::middleware::from_fn_with_state(Arc::new(throttle::Throttle::default()), throttle::layer))
        .layer(axum::middleware::map_response(auth::security_headers))
        .with_state(state)
}

/// A store (or engine) error as a page: the operator sees what failed, never a secret (store
/// errors carry redacted locations only).
fn unavailable(what: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "Console: {what} failed");
    let body = html::layout(
        "Unavailable",
        "",
        None,
        &format!("<p class=\"error\">{} failed: {}</p>", html::esc(what), html::esc(&e.to_string())),
    );
    (StatusCode::SERVICE_UNAVAILABLE, axum::response::Html(body)).into_response()
}
