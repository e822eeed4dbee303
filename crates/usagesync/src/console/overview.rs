//! The overview: each workflow's schedule, last and next run, state, records written, open
//! failures and API calls, then the latest runs of every workflow.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use engine::store::{Run, RunState};

use super::{ConsoleState, html};

/// Runs listed under the workflows.
const RECENT: u32 = 30;

#[derive(serde::Deserialize)]
pub(crate) struct Note {
    /// What the last action did (run now, pause, resume), shown above the table.
    #[serde(default)]
    note: String,
}

pub(crate) async fn page(State(st): State<ConsoleState>, Query(q): Query<Note>, headers: HeaderMap) -> Response {
    let access = match st.auth.check(&headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match render(&st, access.csrf.as_deref()).await {
        Ok(body) if !q.note.is_empty() => {
            let body = format!("<p class=\"notice\" data-test=\"notice\">{}</p>{body}", html::esc(&q.note));
            Html(html::layout("Overview", "overview", access.csrf.as_deref(), &body)).into_response()
        }
        Ok(body) => Html(html::layout("Overview", "overview", access.csrf.as_deref(), &body)).into_response(),
        Err(e) => super::unavailable("Reading the state store", &e),
    }
}

/// Records a run wrote, from the stats every run records (`resolved` for a replay).
pub(super) fn written(r: &Run) -> Option<u64> {
    let stat = |k: &str| r.stats.get(k).and_then(serde_json::Value::as_u64);
    stat("written").or_else(|| stat("resolved"))
}

pub(super) fn failed(r: &Run) -> Option<u64> {
    let stat = |k: &str| r.stats.get(k).and_then(serde_json::Value::as_u64);
    stat("failed").or_else(|| stat("failed_again"))
}

pub(super) fn api_calls(r: &Run) -> u64 {
    r.stats
        .get("api_calls")
        .and_then(serde_json::Value::as_object)
        .map_or(0, |m| m.values().filter_map(serde_json::Value::as_u64).sum())
}

fn duration(r: &Run) -> String {
    r.finished_at
        .map_or_else(|| "—".to_owned(), |f| html::seconds((f - r.started_at).num_milliseconds().max(0) as f64 / 1000.0))
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "—".to_owned(), html::num)
}

async fn render(st: &ConsoleState, csrf: Option<&str>) -> Result<String, engine::store::StoreError> {
    let ctx = &st.ctx;
    let now = Utc::now();
    let today = ctx.store.budget_day(now.date_naive()).await?;
    let mut rows = Vec::new();
    for (name, w) in &ctx.config.workflows {
        // A replay or a dry run is not the schedule's last run: it shows on the Run pages.
        let recent = ctx.store.list_runs(Some(name), 50).await?;
        let last = recent.iter().find(|r| r.trigger != "replay" && !r.dry_run).cloned();
        let last_success = recent.iter().find(|r| r.state == RunState::Succeeded && !r.dry_run).cloned();
        let open: u64 = ctx.store.failure_groups(Some(name)).await?.iter().map(|(_, _, n)| n).sum();
        // The daemon keeps the next fire time in the store; before its first sight, the cron's.
        // A cursor made for another schedule (the config changed) is recomputed by the daemon.
        let next = ctx
            .store
            .cursor(name, engine::scheduler::CURSOR)
            .await?
            .and_then(|text| engine::scheduler::stored_next(&text, &w.schedule, w.timezone, now))
            .or_else(|| engine::scheduler::next_after(&w.schedule, w.timezone, now));
        let paused = engine::scheduler::is_paused(ctx.store.as_ref(), name).await?;
        let state = if !w.enabled {
            "disabled".to_owned()
        } else if paused && last.as_ref().is_none_or(|r| r.state != RunState::Running) {
            "<b>paused</b>".to_owned()
        } else if last.as_ref().is_some_and(|r| r.state == RunState::Running) {
            html::state("running")
        } else {
            "idle".to_owned()
        };
        let last_cell = last.as_ref().map_or_else(
            || "never".to_owned(),
            |r| {
                format!(
                    "<a href=\"/console/runs/{id}\">{t}</a> {s}",
                    id = r.id,
                    t = html::time(&r.started_at),
                    s = html::state(r.state.as_str())
                )
            },
        );
        let last_cell = match &last_success {
            Some(ok) if last.as_ref().is_none_or(|l| l.id != ok.id) => format!(
                "{last_cell}<br><span class=\"muted\">last success <a href=\"/console/runs/{}\">{}</a></span>",
                ok.id,
                html::time(&ok.started_at)
            ),
            _ => last_cell,
        };
        let failures = if open > 0 {
            format!("<a href=\"/console/failures\" class=\"error\">{}</a>", html::num(open))
        } else {
            "0".to_owned()
        };
        rows.push(vec![
            format!(
                "<b>{}</b><br><span class=\"muted\">{}</span>",
                html::esc(name),
                html::esc(w.template.kind().name())
            ),
            format!(
                "{} ({})<br><code>{}</code>",
                html::esc(w.schedule.describe().trim_end_matches('.')),
                html::esc(w.timezone.name()),
                html::esc(w.schedule.as_str())
            ),
            last_cell,
            if !w.enabled {
                "—".to_owned()
            } else if paused {
                "— (paused)".to_owned()
            } else {
                html::opt_time(next.as_ref())
            },
            state,
            opt(last.as_ref().and_then(written)),
            failures,
            format!(
                "{} last run<br>{} today",
                html::num(last.as_ref().map_or(0, api_calls)),
                html::num(today.by_workflow.get(name).copied().unwrap_or(0))
            ),
            {
                let run = html::action_button(
                    "/console/workflows/run",
                    csrf,
                    &[("workflow", name)],
                    "Run now",
                    &format!("run-{name}"),
                );
                let toggle = if !w.enabled {
                    String::new()
                } else if paused {
                    html::action_button(
                        "/console/workflows/pause",
                        csrf,
                        &[("workflow", name), ("paused", "false")],
                        "Resume",
                        &format!("resume-{name}"),
                    )
                } else {
                    html::action_button(
                        "/console/workflows/pause",
                        csrf,
                        &[("workflow", name), ("paused", "true")],
                        "Pause",
                        &format!("pause-{name}"),
                    )
                };
                format!("{run} {toggle}")
            },
        ]);
    }
    let mut body = html::table(
        &[
            "workflow",
            "schedule",
            "last run",
            "next run",
            "state",
            "records written",
            "open failures",
            "API calls",
            "actions",
        ],
        &rows,
        "workflows",
    );
    let runs = ctx.store.list_runs(None, RECENT).await?;
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                format!("<a href=\"/console/runs/{0}\"><code>{0}</code></a>", r.id),
                html::esc(&r.workflow),
                html::esc(&r.trigger) + if r.dry_run { " (dry run)" } else { "" },
                html::state(r.state.as_str()),
                html::time(&r.started_at),
                duration(r),
                opt(written(r)),
                opt(failed(r)),
                html::num(api_calls(r)),
            ]
        })
        .collect();
    let sent: Vec<crate::commands::alerts::Sent> = st.alerts.lock().iter().rev().take(10).cloned().collect();
    if !sent.is_empty() {
        body.push_str("<h2>Alerts sent</h2>");
        let rows: Vec<Vec<String>> = sent
            .iter()
            .map(|a| {
                let outcome: Vec<String> =
                    a.outcome.iter().map(|(host, what)| format!("{}: {}", html::esc(host), html::esc(what))).collect();
                vec![
                    html::time(&a.at),
                    html::esc(&a.workflow),
                    html::state(&a.state),
                    html::esc(&a.text),
                    outcome.join("<br>"),
                ]
            })
            .collect();
        body.push_str(&html::table(&["at", "workflow", "state", "message", "receivers"], &rows, "alerts"));
    }
    body.push_str("<h2>Latest runs</h2>");
    if rows.is_empty() {
        body.push_str("<p class=\"muted\">No runs yet.</p>");
    } else {
        body.push_str(&html::table(
            &["run", "workflow", "trigger", "state", "started", "took", "written", "failed", "API calls"],
            &rows,
            "runs",
        ));
    }
    Ok(body)
}
