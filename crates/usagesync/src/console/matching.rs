//! Matching review: Pendo accounts that matched no Salesforce Account or more than one, with
//! their candidates, and the matches people pinned. Pinning stores the choice through
//! `IdMapStore::pin_match`; automatic matching never overwrites it, so the next run writes it.

use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use engine::store::MatchStatus;
use serde::Deserialize;

use super::{ConsoleState, html};

#[derive(Deserialize, Default)]
pub(crate) struct Params {
    #[serde(default)]
    note: Option<String>,
}

pub(crate) async fn page(State(st): State<ConsoleState>, headers: HeaderMap, Query(p): Query<Params>) -> Response {
    let access = match st.auth.check(&headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let csrf = access.csrf.as_deref();
    let store = &st.ctx.store;
    let review = match store.id_map_review(None).await {
        Ok(r) => r,
        Err(e) => return super::unavailable("Reading the id map", &e),
    };
    let mut pinned = Vec::new();
    for name in st.ctx.config.workflows.keys() {
        match store.id_map(name).await {
            Ok(all) => pinned.extend(all.into_iter().filter(|e| e.pinned)),
            Err(e) => return super::unavailable("Reading the id map", &e),
        }
    }
    let mut body = String::new();
    if let Some(note) = p.note {
        let _ = write!(body, "<p class=\"notice\" data-test=\"notice\">{}</p>", html::esc(&note));
    }
    let (ambiguous, unmatched): (Vec<_>, Vec<_>) = review.iter().partition(|e| e.status == MatchStatus::Ambiguous);
    let _ = write!(body, "<h2>Ambiguous ({})</h2>", ambiguous.len());
    if ambiguous.is_empty() {
        body.push_str("<p class=\"muted\">None.</p>");
    } else {
        let rows: Vec<Vec<String>> = ambiguous
            .iter()
            .map(|e| {
                let candidates: String = e
                    .candidates
                    .iter()
                    .map(|c| {
                        format!(
                            "<div><code>{}</code> {}</div>",
                            html::esc(c),
                            html::action_button(
                                "/console/matching/pin",
                                csrf,
                                &[("workflow", &e.workflow), ("pendo_id", &e.pendo_id), ("salesforce_id", c)],
                                "Pin this one",
                                &format!("pin-{}-{c}", e.pendo_id),
                            )
                        )
                    })
                    .collect();
                vec![
                    html::esc(&e.workflow),
                    html::esc(&e.pendo_id),
                    html::esc(e.rule.as_deref().unwrap_or("")),
                    candidates,
                    html::time(&e.checked_at),
                ]
            })
            .collect();
        body.push_str(&html::table(
            &["workflow", "Pendo account", "rule", "candidate Accounts", "checked"],
            &rows,
            "ambiguous",
        ));
    }
    let _ = write!(body, "<h2>Unmatched ({})</h2>", unmatched.len());
    if unmatched.is_empty() {
        body.push_str("<p class=\"muted\">None.</p>");
    } else {
        let rows: Vec<Vec<String>> = unmatched
            .iter()
            .map(|e| {
                let form = format!(
                    "<form class=\"inline\" method=\"post\" action=\"/console/matching/pin\">{}\
                     <input type=\"hidden\" name=\"workflow\" value=\"{}\"><input type=\"hidden\" name=\"pendo_id\" value=\"{}\">\
                     <input name=\"salesforce_id\" placeholder=\"Account Id\" size=\"20\" required> <button type=\"submit\">Pin</button></form>",
                    csrf.map(html::csrf_field).unwrap_or_default(),
                    html::esc(&e.workflow),
                    html::esc(&e.pendo_id)
                );
                vec![html::esc(&e.workflow), html::esc(&e.pendo_id), html::time(&e.checked_at), form]
            })
            .collect();
        body.push_str(&html::table(&["workflow", "Pendo account", "checked", "pin to"], &rows, "unmatched"));
    }
    let _ = write!(body, "<h2>Pinned by a person ({})</h2>", pinned.len());
    if pinned.is_empty() {
        body.push_str("<p class=\"muted\">None.</p>");
    } else {
        let rows: Vec<Vec<String>> = pinned
            .iter()
            .map(|e| {
                vec![
                    html::esc(&e.workflow),
                    html::esc(&e.pendo_id),
                    format!("<code>{}</code>", html::esc(e.salesforce_id.as_deref().unwrap_or(""))),
                    html::time(&e.checked_at),
                    html::action_button(
                        "/console/matching/pin",
                        csrf,
                        &[("workflow", &e.workflow), ("pendo_id", &e.pendo_id), ("unpin", "1")],
                        "Unpin",
                        &format!("unpin-{}", e.pendo_id),
                    ),
                ]
            })
            .collect();
        body.push_str(&html::table(&["workflow", "Pendo account", "Account", "pinned", ""], &rows, "pinned"));
    }
    Html(html::layout("Matching review", "matching", csrf, &body)).into_response()
}

#[derive(Deserialize)]
pub(crate) struct PinForm {
    #[serde(default)]
    csrf: String,
    workflow: String,
    pendo_id: String,
    #[serde(default)]
    salesforce_id: String,
    #[serde(default)]
    unpin: String,
}

pub(crate) async fn pin(State(st): State<ConsoleState>, headers: HeaderMap, Form(form): Form<PinForm>) -> Response {
    if let Err(r) = st.auth.check_action(&headers, &form.csrf) {
        return r.into_response();
    }
    if !st.ctx.config.workflows.contains_key(&form.workflow) {
        return back(&format!("There is no workflow {:?} in the config.", form.workflow));
    }
    let store = &st.ctx.store;
    if !form.unpin.is_empty() {
        return match store.unpin_match(&form.workflow, &form.pendo_id).await {
            Ok(()) => {
                tracing::info!(workflow = %form.workflow, pendo_account = %form.pendo_id, "Console: match unpinned");
                back(&format!("Unpinned {}; the next run matches it by the rules again.", form.pendo_id))
            }
            Err(e) => super::unavailable("Unpinning", &e),
        };
    }
    let id = match salesforce::ids::SalesforceId::parse(form.salesforce_id.trim()) {
        Ok(id) => id,
        Err(e) => return back(&format!("{:?} is not a Salesforce Id: {e}", form.salesforce_id)),
    };
    match store.pin_match(&form.workflow, &form.pendo_id, id.as_str()).await {
        Ok(()) => {
            tracing::info!(workflow = %form.workflow, pendo_account = %form.pendo_id, salesforce_id = %id.as_str(),
                "Console: match pinned");
            back(&format!("Pinned {} to {}; the next run writes it.", form.pendo_id, id.as_str()))
        }
        Err(e) => super::unavailable("Pinning", &e),
    }
}

fn back(note: &str) -> Response {
    Redirect::to(&format!("/console/matching?note={}", html::url(note))).into_response()
}
