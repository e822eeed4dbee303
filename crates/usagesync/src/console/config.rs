//! The loaded config as YAML, defaults filled in; each secret appears only as its
//! `{env: …}` / `{file: …}` reference, never its value. One foldable section per top-level key
//! and per workflow (plain `<details>`, no script), so the page reads as an outline rather than
//! one long dump.

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
        "<p class=\"muted\">As loaded, defaults filled in. Secrets show where they are read from, never their values. \
         Each workflow opens on a click.</p><div data-test=\"config\">{}</div><h2>Secrets</h2>{}",
        sections(&yaml),
        html::table(&["key", "read from"], &secrets, "secrets")
    );
    Html(html::layout("Config", "config", access.csrf.as_deref(), &body)).into_response()
}

/// Splits the YAML at its top-level keys (and `workflows:` at each workflow) into `<details>`:
/// the settings open, each workflow closed with its name and template in the summary.
fn sections(yaml: &str) -> String {
    let mut blocks: Vec<(String, Vec<&str>)> = Vec::new();
    for line in yaml.lines() {
        let top = !line.starts_with(' ') && !line.is_empty();
        if top || blocks.is_empty() {
            blocks.push((line.trim_end_matches(':').to_owned(), vec![line]));
        } else if let Some((_, lines)) = blocks.last_mut() {
            lines.push(line);
        }
    }
    let mut out = String::new();
    for (key, lines) in &blocks {
        if key != "workflows" {
            out.push_str(&format!(
                "<details open><summary><b>{}</b></summary><pre>{}</pre></details>",
                html::esc(key),
                html::esc(&lines.join("\n"))
            ));
            continue;
        }
        out.push_str("<h2>Workflows</h2>");
        let mut workflows: Vec<(String, Vec<&str>)> = Vec::new();
        for line in lines.iter().skip(1) {
            let name = line.strip_prefix("  ").filter(|l| !l.starts_with(' ') && l.ends_with(':'));
            match name {
                Some(name) => workflows.push((name.trim_end_matches(':').to_owned(), vec![line])),
                None => {
                    if let Some((_, body)) = workflows.last_mut() {
                        body.push(line);
                    }
                }
            }
        }
        for (name, body) in &workflows {
            let template = body
                .iter()
                .find_map(|l| l.trim_start().strip_prefix("template: "))
                .map(|t| format!(" <span class=\"muted\">{}</span>", html::esc(t)))
                .unwrap_or_default();
            let disabled = if body.iter().any(|l| l.trim() == "enabled: false") { " (disabled)" } else { "" };
            out.push_str(&format!(
                "<details><summary><b>{}</b>{template}{disabled}</summary><pre>{}</pre></details>",
                html::esc(name),
                html::esc(&body.join("\n"))
            ));
        }
    }
    out
}
