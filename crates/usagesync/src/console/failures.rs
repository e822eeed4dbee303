//! Failures: open failures grouped by Salesforce or Pendo error code with the message given and
//! what to do about it, each record below; the replay action (one, a group or all), which runs
//! their workflows again through `engine::workflow::replay` and shows the replay's run; and the
//! dismiss action (one or a group, with a reason kept in the store) for failures that need nothing.

use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use engine::store::{FailureFilter, FailureSelector, FailureStatus};
use serde::Deserialize;

use super::{ConsoleState, html};

/// Failures listed (and replayed at most by one click).
const LIMIT: u32 = 1_000;
const REPLAY_LIMIT: u32 = 100_000;

#[derive(Deserialize, Default)]
pub(crate) struct Params {
    #[serde(default)]
    replayed: Option<String>,
}

pub(crate) async fn page(State(st): State<ConsoleState>, headers: HeaderMap, Query(p): Query<Params>) -> Response {
    let access = match st.auth.check(&headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let csrf = access.csrf.as_deref();
    let store = &st.ctx.store;
    let groups = match store.failure_groups(None).await {
        Ok(g) => g,
        Err(e) => return super::unavailable("Reading failures", &e),
    };
    let filter = FailureFilter { workflow: None, status: Some(FailureStatus::Open), error_code: None, limit: LIMIT };
    let list = match store.list_failures(&filter).await {
        Ok(l) => l,
        Err(e) => return super::unavailable("Reading failures", &e),
    };
    let mut body = String::new();
    if let Some(note) = p.replayed {
        let _ = write!(body, "<p class=\"notice\" data-test=\"notice\">{}</p>", html::esc(&note));
    }
    if groups.is_empty() {
        body.push_str("<p data-test=\"no-failures\">No open failures.</p>");
    } else {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|(code, message, n)| {
                vec![
                    format!("<code>{}</code>", html::esc(code)),
                    html::num(*n),
                    html::esc(message),
                    html::esc(crate::commands::history::hint(code)),
                    html::action_button(
                        "/console/failures/replay",
                        csrf,
                        &[("scope", "code"), ("code", code)],
                        "Replay group",
                        &format!("replay-code-{code}"),
                    ) + &dismiss_form(csrf, &[("scope", "code"), ("code", code)], &format!("dismiss-code-{code}")),
                ]
            })
            .collect();
        body.push_str("<h2>By error code</h2>");
        body.push_str(&html::table(
            &["error code", "records", "Salesforce or Pendo said", "what to do", ""],
            &rows,
            "groups",
        ));
        body.push_str(&html::action_button(
            "/console/failures/replay",
            csrf,
            &[("scope", "all")],
            "Replay all",
            "replay-all",
        ));
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|f| {
                let id = f.id.to_string();
                vec![
                    html::esc(&id),
                    html::esc(&f.workflow),
                    html::esc(&f.object),
                    html::esc(&f.key),
                    f.salesforce_id.as_deref().map(html::esc).unwrap_or_default(),
                    format!("<code>{}</code> {}", html::esc(&f.error_code), html::esc(&f.message)),
                    html::esc(&f.fields.join(", ")),
                    html::num(u64::from(f.attempts)),
                    format!("<a href=\"/console/runs/{0}\">{1}</a>", f.run, html::time(&f.last_failed_at)),
                    html::action_button(
                        "/console/failures/replay",
                        csrf,
                        &[("scope", "id"), ("id", &id)],
                        "Replay",
                        &format!("replay-{id}"),
                    ) + &dismiss_form(csrf, &[("scope", "id"), ("id", &id)], &format!("dismiss-{id}")),
                ]
            })
            .collect();
        body.push_str("<h2>Records</h2>");
        body.push_str(&html::table(
            &[
                "id",
                "workflow",
                "object",
                "source key",
                "Salesforce Id",
                "error",
                "fields",
                "attempts",
                "last failed",
                "",
            ],
            &rows,
            "failures",
        ));
    }
    Html(html::layout("Failures", "failures", csrf, &body)).into_response()
}

#[derive(Deserialize)]
pub(crate) struct ReplayForm {
    #[serde(default)]
    csrf: String,
    scope: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    id: String,
}

pub(crate) async fn replay(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<ReplayForm>,
) -> Response {
    if let Err(r) = st.auth.check_action(&headers, &form.csrf) {
        return r.into_response();
    }
    let selector = match form.scope.as_str() {
        "all" => FailureSelector::All { workflow: None },
        "code" if !form.code.is_empty() => FailureSelector::Code(form.code.clone()),
        "id" => match form.id.parse::<i64>() {
            Ok(id) => FailureSelector::Ids(vec![id]),
            Err(_) => return back("That is not a failure id."),
        },
        _ => return back("Say what to replay: one failure, an error code, or all."),
    };
    tracing::info!(scope = %form.scope, code = %form.code, id = %form.id, "Console: replay requested");
    match engine::workflow::replay::replay(&st.ctx, &selector, REPLAY_LIMIT).await {
        Ok(report) => {
            tracing::info!(
                claimed = report.claimed,
                resolved = report.resolved,
                failed_again = report.failed_again,
                api_calls = report.api_calls,
                "Console: replay finished"
            );
            if report.claimed == 0 {
                return back("Nothing to replay: those failures are resolved or being replayed by someone else.");
            }
            // One replay run: show it; several (one per workflow): back to the list with a summary.
            match report.runs.values().collect::<Vec<_>>().as_slice() {
                [run] => Redirect::to(&format!("/console/runs/{}", html::url(run))).into_response(),
                _ => back(&format!(
                    "Replayed {}: {} written, {} failed again ({} API calls).",
                    report.claimed, report.resolved, report.failed_again, report.api_calls
                )),
            }
        }
        Err(e) => super::unavailable("The replay", &e),
    }
}

/// A dismissal: one failure or a group by code, with the reason a person gives (required).
fn dismiss_form(csrf: Option<&str>, fields: &[(&str, &str)], test_id: &str) -> String {
    let mut hidden = csrf.map(html::csrf_field).unwrap_or_default();
    for (k, v) in fields {
        let _ = write!(hidden, "<input type=\"hidden\" name=\"{}\" value=\"{}\">", html::esc(k), html::esc(v));
    }
    format!(
        "<form class=\"inline\" method=\"post\" action=\"/console/failures/dismiss\">{hidden}\
         <input name=\"reason\" placeholder=\"why it needs nothing\" size=\"12\" required> \
         <button type=\"submit\" data-test=\"{}\">Dismiss</button></form>",
        html::esc(test_id)
    )
}

#[derive(Deserialize)]
pub(crate) struct DismissForm {
    #[serde(default)]
    csrf: String,
    scope: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    reason: String,
}

pub(crate) async fn dismiss(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<DismissForm>,
) -> Response {
    if let Err(r) = st.auth.check_action(&headers, &form.csrf) {
        return r.into_response();
    }
    let reason = form.reason.trim();
    if reason.is_empty() {
        return back("Say why the failure needs nothing: the reason is kept with it.");
    }
    let selector = match form.scope.as_str() {
        "code" if !form.code.is_empty() => FailureSelector::Code(form.code.clone()),
        "id" => match form.id.parse::<i64>() {
            Ok(id) => FailureSelector::Ids(vec![id]),
            Err(_) => return back("That is not a failure id."),
        },
        _ => return back("Say what to dismiss: one failure or an error code."),
    };
    match st.ctx.store.dismiss_failures(&selector, reason, chrono::Utc::now()).await {
        Ok(ids) => {
            tracing::info!(scope = %form.scope, code = %form.code, id = %form.id, dismissed = ids.len(), reason, "Console: failures dismissed");
            if ids.is_empty() {
                return back("Nothing dismissed: those failures are closed already or being replayed.");
            }
            back(&format!("Dismissed {} failure{}.", ids.len(), if ids.len() == 1 { "" } else { "s" }))
        }
        Err(e) => super::unavailable("The dismissal", &e),
    }
}

fn back(note: &str) -> Response {
    Redirect::to(&format!("/console/failures?replayed={}", html::url(note))).into_response()
}
