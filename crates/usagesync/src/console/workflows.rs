//! Actions on a workflow from the console: run it now, and pause or resume its schedule. A
//! pause is kept in the store (`engine::scheduler::set_paused`), so every worker sharing the
//! store honours it; a run started here runs in the daemon's process like a scheduled one
//! (trigger `console`), holding the workflow's lease, so it never overlaps another run of it.

use axum::Form;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use engine::workflow::{RunError, RunOptions};
use serde::Deserialize;

use super::{ConsoleState, html};

#[derive(Deserialize)]
pub(crate) struct WorkflowForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    workflow: String,
    /// For pause: "true" pauses, anything else resumes.
    #[serde(default)]
    paused: String,
}

fn back(note: &str) -> Response {
    Redirect::to(&format!("/console/?note={}", html::url(note))).into_response()
}

pub(crate) async fn run_now(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<WorkflowForm>,
) -> Response {
    if let Err(r) = st.auth.check_action(&headers, &form.csrf) {
        return r.into_response();
    }
    if !st.ctx.config.workflows.contains_key(&form.workflow) {
        return back("No such workflow in the config.");
    }
    tracing::info!(workflow = %form.workflow, "Console: run now requested");
    let ctx = st.ctx.clone();
    let name = form.workflow.clone();
    tokio::spawn(async move {
        let options = RunOptions {
            dry_run: false,
            trigger: "console".into(),
            progress: None,
            lease: crate::commands::run_lease(),
        };
        match engine::workflow::run(&ctx, &name, &options).await {
            Ok(report) => tracing::info!(workflow = %name, state = %report.state, written = report.written,
                failed = report.failed, "Console: run finished"),
            Err(e @ RunError::Busy { .. }) => tracing::info!(workflow = %name, "Console: run not started: {e}"),
            Err(e) => tracing::warn!(workflow = %name, error = %e, "Console: run failed"),
        }
    });
    back(&format!(
        "Started a run of {}: it shows under Latest runs (a run already in flight keeps the workflow, and this one does not start).",
        form.workflow
    ))
}

pub(crate) async fn pause(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<WorkflowForm>,
) -> Response {
    if let Err(r) = st.auth.check_action(&headers, &form.csrf) {
        return r.into_response();
    }
    if !st.ctx.config.workflows.contains_key(&form.workflow) {
        return back("No such workflow in the config.");
    }
    let paused = form.paused == "true";
    match engine::scheduler::set_paused(st.ctx.store.as_ref(), &form.workflow, paused).await {
        Ok(()) => {
            tracing::info!(workflow = %form.workflow, paused, "Console: schedule paused or resumed");
            back(&if paused {
                format!("Paused {}: its scheduled runs are skipped by every worker until resumed.", form.workflow)
            } else {
                format!("Resumed {}: it runs at its next scheduled time.", form.workflow)
            })
        }
        Err(e) => super::unavailable("Pausing the workflow", &e),
    }
}
