//! One run: what it was, where its time and API calls went, and every record it touched with
//! each field's value before → after, searchable by Pendo account (or e-mail), or Salesforce Id.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use engine::store::{Action, OutcomeFilter, RunId};
use serde::Deserialize;

use super::{ConsoleState, html};

/// Records per page.
const PAGE: u32 = 200;

#[derive(Deserialize, Default)]
pub(crate) struct Params {
    #[serde(default)]
    q: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    offset: u32,
}

pub(crate) async fn page(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    let access = match st.auth.check(&headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let Ok(id) = id.parse::<RunId>() else {
        let body = html::layout("No such run", "overview", access.csrf.as_deref(), "<p>That is not a run id.</p>");
        return (StatusCode::NOT_FOUND, Html(body)).into_response();
    };
    match render(&st, id, &params).await {
        Ok(Some(body)) => {
            Html(html::layout(&format!("Run {id}"), "overview", access.csrf.as_deref(), &body)).into_response()
        }
        Ok(None) => {
            let body =
                html::layout("No such run", "overview", access.csrf.as_deref(), "<p>The store has no such run.</p>");
            (StatusCode::NOT_FOUND, Html(body)).into_response()
        }
        Err(e) => super::unavailable("Reading the run", &e),
    }
}

async fn render(st: &ConsoleState, id: RunId, params: &Params) -> Result<Option<String>, engine::store::StoreError> {
    let store = &st.ctx.store;
    let Some(run) = store.get_run(id).await? else { return Ok(None) };
    let mut body = String::new();
    let finished =
        run.finished_at.map(|f| html::seconds((f - run.started_at).num_milliseconds().max(0) as f64 / 1000.0));
    let mut facts = vec![
        vec!["workflow".into(), html::esc(&run.workflow)],
        vec!["template".into(), html::esc(&run.template)],
        vec!["trigger".into(), html::esc(&run.trigger) + if run.dry_run { " (dry run)" } else { "" }],
        vec!["state".into(), html::state(run.state.as_str())],
        vec!["started".into(), html::time(&run.started_at)],
        vec!["finished".into(), html::opt_time(run.finished_at.as_ref())],
        vec!["took".into(), finished.unwrap_or_else(|| "—".into())],
    ];
    // Who held the run's lease tells a person which worker ran it, and for a running run how
    // fresh its heartbeat is; runs without a lease (dry runs, older replays) have none to show.
    if let Some(holder) = &run.holder {
        facts.push(vec!["worker".into(), html::esc(holder)]);
        facts.push(vec!["last heartbeat".into(), html::opt_time(run.heartbeat_at.as_ref())]);
        facts.push(vec!["lease until".into(), html::opt_time(run.lease_until.as_ref())]);
    }
    if let Some(e) = &run.error {
        facts.push(vec!["error".into(), format!("<span class=\"error\">{}</span>", html::esc(e))]);
    }
    body.push_str("<div class=\"cards\">");
    for (label, n) in [
        ("written", super::overview::written(&run)),
        ("failed", super::overview::failed(&run)),
        ("API calls", Some(super::overview::api_calls(&run))),
    ] {
        let _ = write!(
            body,
            "<div class=\"card\" data-test=\"card-{}\"><b>{}</b>{label}</div>",
            label.replace(' ', "-"),
            n.map_or_else(|| "—".to_owned(), html::num)
        );
    }
    // Facts, steps and calls side by side, so the records start on the first screen.
    body.push_str("</div><div class=\"cols\"><div><h2>Run</h2>");
    // Every other number the run recorded (accounts read, matched, …), whatever the template.
    if let Some(stats) = run.stats.as_object() {
        for (k, v) in stats {
            if let Some(n) = v.as_u64().filter(|_| !matches!(k.as_str(), "written" | "failed" | "resolved")) {
                facts.push(vec![html::esc(&k.replace('_', " ")), html::num(n)]);
            }
        }
    }
    body.push_str(&html::table(&["", ""], &facts, "facts"));
    body.push_str("</div><div>");

    let timings: Vec<(String, f64)> = run
        .stats
        .get("timings")
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().filter_map(|t| Some((t.get(0)?.as_str()?.to_owned(), t.get(1)?.as_f64()?))).collect())
        .unwrap_or_default();
    if !timings.is_empty() {
        let longest = timings.iter().map(|(_, s)| *s).fold(0.0_f64, f64::max).max(0.001);
        let rows: Vec<Vec<String>> = timings
            .iter()
            .map(|(step, s)| {
                let width = (s / longest * 300.0).round();
                vec![
                    html::esc(step),
                    format!("<span class=\"n\">{}</span>", html::seconds(*s)),
                    format!("<span class=\"bar\" style=\"width:{width}px\"></span>"),
                ]
            })
            .collect();
        body.push_str("<h2>Steps</h2>");
        body.push_str(&html::table(&["step", "time", ""], &rows, "steps"));
    }
    if let Some(calls) = run.stats.get("api_calls").and_then(serde_json::Value::as_object).filter(|m| !m.is_empty()) {
        let rows: Vec<Vec<String>> =
            calls.iter().map(|(kind, n)| vec![html::esc(kind), html::num(n.as_u64().unwrap_or(0))]).collect();
        body.push_str("<h2>Salesforce API calls by kind</h2>");
        body.push_str(&html::table(&["kind", "calls"], &rows, "api-calls"));
    }
    let counts = store.outcome_counts(id).await?;
    let rows: Vec<Vec<String>> = counts.iter().map(|(a, n)| vec![html::esc(a.as_str()), html::num(*n)]).collect();
    body.push_str("</div><div>");
    if !rows.is_empty() {
        body.push_str("<h2>Records by action</h2>");
        body.push_str(&html::table(&["action", "records"], &rows, "counts"));
    }
    body.push_str("</div></div><h2>Records</h2>");

    let action = Action::ALL.iter().copied().find(|a| a.as_str() == params.action);
    let mut options = String::from("<option value=\"\">any action</option>");
    for a in Action::ALL {
        let sel = if Some(*a) == action { " selected" } else { "" };
        let _ = write!(options, "<option value=\"{0}\"{sel}>{0}</option>", a.as_str());
    }
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/console/runs/{id}\" data-test=\"search\">\
         <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"Pendo account, e-mail or Salesforce Id\" size=\"40\"> \
         <select name=\"action\">{options}</select> <button type=\"submit\">Search</button></form>",
        html::esc(&params.q)
    );
    let search = Some(params.q.trim().to_owned()).filter(|q| !q.is_empty());
    let filter = OutcomeFilter { search, action, limit: PAGE + 1, offset: params.offset };
    let mut outcomes = store.run_outcomes(id, &filter).await?;
    let more = outcomes.len() > PAGE as usize;
    outcomes.truncate(PAGE as usize);
    let base = record_base(&st.ctx.salesforce).await;
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            let mut detail = String::new();
            for c in &o.changes {
                let before = c.before.as_ref().map_or_else(
                    || "<span class=\"muted\">(not known)</span>".to_owned(),
                    |b| format!("<span class=\"old\">{}</span>", html::esc(&html::value(b))),
                );
                let _ = write!(
                    detail,
                    "<div><code>{}</code>: {before} → <span class=\"new\">{}</span></div>",
                    html::esc(&c.field),
                    html::esc(&html::value(&c.after))
                );
            }
            match (&o.error_code, &o.message) {
                (Some(code), m) => {
                    let _ = write!(
                        detail,
                        "<div class=\"error\"><code>{}</code> {}</div>",
                        html::esc(code),
                        html::esc(m.as_deref().unwrap_or(""))
                    );
                }
                (None, Some(m)) => {
                    let _ = write!(detail, "<div class=\"muted\">{}</div>", html::esc(m));
                }
                (None, None) => {}
            }
            vec![
                html::esc(&o.object),
                html::esc(&o.key),
                o.salesforce_id.as_deref().map(|id| record_link(base.as_deref(), id)).unwrap_or_default(),
                html::esc(o.action.as_str()),
                detail,
            ]
        })
        .collect();
    if rows.is_empty() {
        body.push_str("<p class=\"muted\" data-test=\"no-records\">No records match.</p>");
    } else {
        body.push_str(&html::table(
            &["object", "source key", "Salesforce Id", "action", "fields (before → after) / reason"],
            &rows,
            "records",
        ));
    }
    let link = |offset: u32, label: &str| {
        format!(
            "<a href=\"/console/runs/{id}?q={}&amp;action={}&amp;offset={offset}\">{label}</a> ",
            html::esc(&html::url(&params.q)),
            html::esc(&html::url(&params.action))
        )
    };
    if params.offset > 0 {
        body.push_str(&link(params.offset.saturating_sub(PAGE), "← previous"));
    }
    if more {
        body.push_str(&link(params.offset + PAGE, "next →"));
    }
    Ok(Some(body))
}

/// Where records open in Salesforce: `{instance}/{Id}` takes a person to the record's page in
/// Lightning and Classic alike. `None` while the daemon has no session and cannot get one within
/// two seconds, so a page never waits on Salesforce.
async fn record_base(client: &salesforce::Client) -> Option<String> {
    let url = match client.current_token() {
        Some(token) => token.instance_url.clone(),
        None => tokio::time::timeout(std::time::Duration::from_secs(2), client.instance_url()).await.ok()?.ok()?,
    };
    Some(url.as_str().trim_end_matches('/').to_owned())
}

/// A record's Id as a link to it in Salesforce; plain text for anything that is not an Id.
fn record_link(base: Option<&str>, id: &str) -> String {
    match base {
        Some(base) if salesforce::SalesforceId::parse(id).is_ok() => format!(
            "<a href=\"{}/{}\" target=\"_blank\" rel=\"noopener\" data-test=\"record-link\">{}</a>",
            html::esc(base),
            html::esc(id),
            html::esc(id)
        ),
        _ => html::esc(id),
    }
}

#[cfg(test)]
mod tests {
    use super::record_link;

    #[test]
    fn an_id_links_to_its_record_and_anything_else_stays_text() {
        let base = Some("https://acme.my.salesforce.com");
        let link = record_link(base, "001Dn0000000001IAA");
        assert!(link.contains("href=\"https://acme.my.salesforce.com/001Dn0000000001IAA\""), "{link}");
        assert_eq!(record_link(base, "<script>"), "&lt;script&gt;");
        assert_eq!(record_link(None, "001Dn0000000001IAA"), "001Dn0000000001IAA");
    }
}
