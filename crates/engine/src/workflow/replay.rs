//! Replay: kept failures (all, a group by error code, or chosen ones) tried again after a person
//! fixed the cause, by running their workflows now, so what is sent is derived afresh from the
//! current config and the current data, never the stale body kept with the failure.
//!
//! A refused record was not remembered as written (no fingerprints, no closed episode or
//! count, the cursor held at it), so its workflow's next run derives and sends it by itself;
//! nps-realtime's answers, read from inbox events already marked processed, are queued again
//! first. No template targets single records, so the run is the whole workflow (it writes only
//! what changed), and the report says so.
//! A replay is that run (trigger `replay`, with the run lease and everything a scheduled run
//! does), then settles the claimed failures: resolved where the run wrote the record, open again
//! with the run's error where it was refused again or not written. Claims are leased, so two
//! operators replaying at once never take the same failure.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{Context, RunError, RunOptions};
use crate::config::Template;
use crate::store::{Failure, FailureFilter, FailureSelector, FailureStatus};

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    pub claimed: usize,
    pub resolved: usize,
    pub failed_again: usize,
    pub api_calls: u64,
    /// Workflow → run id of the replay run.
    pub runs: BTreeMap<String, String>,
    /// Workflow → what its replay run did beyond the failed records: a run re-derives the whole
    /// workflow (it writes only what changed), since no template targets single records.
    pub notes: BTreeMap<String, String>,
}

/// Said of a claimed failure whose record the replay run neither wrote nor refused.
const NOT_WRITTEN: &str = "the replay run did not write this record (deferred, held back, or the current config and \
     data no longer call for it): dismiss it if that is expected";

/// How long a claim holds before another replayer may take the row.
const LEASE: Duration = Duration::from_secs(600);

pub async fn replay(ctx: &Context, selector: &FailureSelector, limit: u32) -> Result<ReplayReport, RunError> {
    // Unique per replay, so a lease names who holds it.
    let worker = format!("replay:{}", crate::store::RunId::new());
    let claimed = ctx.store.claim_failures(selector, &worker, LEASE, ctx.clock.now(), limit).await?;
    let mut report = ReplayReport { claimed: claimed.len(), ..Default::default() };
    let mut by_workflow: BTreeMap<String, Vec<Failure>> = BTreeMap::new();
    for f in claimed {
        by_workflow.entry(f.workflow.clone()).or_default().push(f);
    }
    for (workflow, failures) in by_workflow {
        // nps-realtime derives its writes from inbox events, marked processed once handled:
        // its answers are queued again for the run to drain.
        let nps = ctx.config.workflows.get(&workflow).is_some_and(|w| matches!(w.template, Template::NpsRealtime(_)));
        let requeued = if nps { super::nps::requeue(ctx, &failures).await? } else { 0 };
        let options = RunOptions { trigger: "replay".into(), ..Default::default() };
        let run = match super::run(ctx, &workflow, &options).await {
            Ok(run) => run,
            Err(e) => {
                // Nothing was re-derived: the failures go back to open as they were, with why.
                let why = format!("replay could not run the workflow: {e}");
                for f in &failures {
                    // Salesforce's or Pendo's own words stay first; only the latest reason follows.
                    let own = f.message.split("; replay could not run the workflow").next().unwrap_or(&f.message);
                    ctx.store.fail_again(f.id, &f.error_code, &format!("{own}; {why}"), ctx.clock.now()).await?;
                }
                report.failed_again += failures.len();
                report.notes.insert(workflow, why);
                continue;
            }
        };
        report.api_calls += run.total_api_calls();
        if let Some(id) = run.run_id {
            report.runs.insert(workflow.clone(), id.to_string());
        }
        let requeued = if nps { format!("{requeued} answers queued again; ") } else { String::new() };
        report.notes.insert(
            workflow.clone(),
            format!(
                "{requeued}ran the whole workflow from the current config and data: {} written, {} failed, {} deferred",
                run.written, run.failed, run.deferred
            ),
        );
        // The run settled the ledger itself: a record it wrote resolved its failure, one
        // refused again updated it (or opened a new one beside the claimed row).
        let now = ctx.clock.now();
        let of =
            |status| FailureFilter { workflow: Some(workflow.clone()), status: Some(status), ..Default::default() };
        let replaying: BTreeMap<i64, Failure> =
            ctx.store.list_failures(&of(FailureStatus::Replaying)).await?.into_iter().map(|f| (f.id, f)).collect();
        let open = ctx.store.list_failures(&of(FailureStatus::Open)).await?;
        let open: BTreeMap<(&str, &str), &Failure> =
            open.iter().map(|f| ((f.object.as_str(), f.key.as_str()), f)).collect();
        for f in &failures {
            if !replaying.contains_key(&f.id) {
                // Only a record written settles a claimed failure while it is claimed.
                report.resolved += 1;
                continue;
            }
            let (code, message) = match open.get(&(f.object.as_str(), f.key.as_str())) {
                Some(newer) => (newer.error_code.clone(), newer.message.clone()),
                None if f.message.ends_with(NOT_WRITTEN) => (f.error_code.clone(), f.message.clone()),
                None => (f.error_code.clone(), format!("{}; {NOT_WRITTEN}", f.message)),
            };
            // Folds into the run's newer failure of the record, if there is one.
            ctx.store.fail_again(f.id, &code, &message, now).await?;
            report.failed_again += 1;
        }
    }
    Ok(report)
}
