//! The loaded config as YAML, defaults filled in; each secret appears only as its
//! `{env: …}` / `{file: …}` reference, never its value.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};

use super::{ConsoleState, html};

pub(crate) async fn page(State(st): State<ConsoleState>, headers: HeaderMap) -> Response {
    let access = match st.auth.check(&headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let yaml = st.ctx.config.redacted_yaml();
    let secrets: Vec<Vec<String>> = st
        .ctx
        .config
        .secrets()
        .into_iter()
        .map(|(key, s)| vec![format!("<code>{}</code>", html::esc(&key)), html::esc(&s.reference())])
        .collect();
    let body = format!(
        "<p class=\"muted\">As loaded, defaults filled in. Secrets show where they are read from, never their values.</p>\
         <pre data-test=\"config\">{}</pre><h2>Secrets</h2>{}",
        html::esc(&yaml),
        html::table(&["key", "read from"], &secrets, "secrets")
    );
    Html(html::layout("Config", "config", access.csrf.as_deref(), &body)).into_response()
}
