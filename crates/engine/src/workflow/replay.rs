//! Replay: re-sends kept failures (all, a group by error code, or chosen ones) after a person
//! fixed the cause. Claimed rows are leased, so two operators replaying at once never send a
//! record twice; a replay is a run of its own in the history.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use serde_json::Value;

use super::{Context, Meter, RunError, engagement};
use crate::change::{Change, fingerprint};
use crate::deliver::{self, RecordRetry};
use crate::plan::WritePath;
use crate::store::{Action, FailureSelector, FieldChange, FingerprintPut, NewRun, RecordOutcome, RunFinish, RunState};

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    pub claimed: usize,
    pub resolved: usize,
    pub failed_again: usize,
    pub api_calls: u64,
    /// Workflow → run id of the replay run.
    pub runs: BTreeMap<String, String>,
}

/// How long a claim holds before another replayer may take the row.
const LEASE: Duration = Duration::from_secs(600);

pub async fn replay(ctx: &Context, selector: &FailureSelector, limit: u32) -> Result<ReplayReport, RunError> {
    // Unique per replay, so a lease names who holds it.
    let worker = format!("replay:{}", crate::store::RunId::new());
    let claimed = ctx.store.claim_failures(selector, &worker, LEASE, Utc::now(), limit).await?;
    let mut report = ReplayReport { claimed: claimed.len(), ..Default::default() };
    let mut by_workflow: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for f in claimed {
        by_workflow.entry(f.workflow.clone()).or_default().push(f);
    }
    for (workflow, failures) in by_workflow {
        let now = Utc::now();
        let run = ctx
            .store
            .start_run(&NewRun {
                workflow: workflow.clone(),
                template: "replay".into(),
                dry_run: false,
                started_at: now,
                trigger: "replay".into(),
            })
            .await?;
        let mut meter = Meter::new(&ctx.salesforce);
        let mut ids = BTreeMap::new();
        let changes: Vec<Change> = failures
            .iter()
            .filter_map(|f| {
                let sf = f.salesforce_id.clone()?;
                let fields: Vec<(String, Value)> = f.payload.as_object()?.clone().into_iter().collect();
                let prints = fields.iter().map(|(k, v)| (k.clone(), fingerprint(v))).collect();
                ids.insert(sf.clone(), f.id);
                Some(Change { key: f.key.clone(), salesforce_id: sf, fields, prints })
            })
            .collect();
        let path = if changes.len() == 1 { WritePath::Single } else { WritePath::Collections };
        let d = deliver::deliver(&ctx.salesforce, "Account", path, changes, &RecordRetry::default(), &|_| {}).await;
        meter.step("deliver", Some(path.as_str()));
        let now = Utc::now();
        let scope = engagement::scope(&workflow);
        let mut outcomes = Vec::new();
        let (deferred_code, deferred_message) = (
            "REQUEST_LIMIT_EXCEEDED".to_owned(),
            "the org's daily API allocation is spent; replay again later".to_owned(),
        );
        let mut prints = Vec::new();
        for c in &d.written {
            if let Some(&id) = ids.get(&c.salesforce_id) {
                ctx.store.resolve_failure(id, now).await?;
            }
            report.resolved += 1;
            outcomes.push(RecordOutcome {
                object: "Account".into(),
                key: c.key.clone(),
                salesforce_id: Some(c.salesforce_id.clone()),
                action: Action::Updated,
                changes: c
                    .fields
                    .iter()
                    .map(|(f, v)| FieldChange { field: f.clone(), before: None, after: v.clone() })
                    .collect(),
                error_code: None,
                message: Some("replayed".into()),
            });
            prints.extend(c.prints.iter().map(|(field, p)| FingerprintPut {
                scope: scope.clone(),
                key: c.salesforce_id.clone(),
                field: field.clone(),
                fingerprint: *p,
                written_at: now,
                value: c.fields.iter().find(|(f, _)| f == field).map(|(_, v)| v.clone()),
            }));
        }
        for f in d
            .failed
            .iter()
            .map(|f| (&f.change, &f.code, &f.message))
            .chain(d.deferred.iter().map(|c| (c, &deferred_code, &deferred_message)))
        {
            let (change, code, message) = f;
            if let Some(&id) = ids.get(&change.salesforce_id) {
                ctx.store.fail_again(id, code, message, now).await?;
            }
            report.failed_again += 1;
            outcomes.push(RecordOutcome {
                object: "Account".into(),
                key: change.key.clone(),
                salesforce_id: Some(change.salesforce_id.clone()),
                action: Action::Failed,
                changes: vec![],
                error_code: Some(code.clone()),
                message: Some(message.clone()),
            });
        }
        ctx.store.record_outcomes(run, &outcomes, &prints).await?;
        let calls: u64 = meter.calls.values().sum();
        report.api_calls += calls;
        if calls > 0 {
            ctx.store.settle_budget(now.date_naive(), &workflow, 0, calls, now).await?;
        }
        let state = if d.failed.is_empty() && d.deferred.is_empty() { RunState::Succeeded } else { RunState::Partial };
        let stats = serde_json::json!({"resolved": d.written.len(), "failed_again": d.failed.len() + d.deferred.len(), "api_calls": meter.calls});
        ctx.store.finish_run(run, &RunFinish { state, finished_at: now, stats, error: None }).await?;
        report.runs.insert(workflow, run.to_string());
    }
    Ok(report)
}
