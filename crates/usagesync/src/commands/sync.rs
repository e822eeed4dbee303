//! `usagesync sync NAME [--dry-run]`: one run of one workflow, with a summary table (or the
//! report as JSON) and an exit code a scheduler can act on.

use anyhow::Result;
use engine::workflow::{RunOptions, RunReport};

use super::table::{self, thousands};
use super::{context, progress};

/// Exit codes: 0 everything written (or nothing to write), 3 some records failed (kept for
/// replay) or preflight quarantined configured fields, 4 some work deferred by the budget. A
/// run refused because another run of the workflow holds its lease
/// ([`engine::workflow::RunError::Busy`]) is an error: exit 1.
pub const EXIT_FAILURES: u8 = 3;
pub const EXIT_DEFERRED: u8 = 4;

pub async fn run(config_path: &std::path::Path, workflow: &str, dry_run: bool, json: bool) -> Result<u8> {
    let config = context::load_config(config_path)?;
    context::known_workflow(&config, workflow)?;
    let ctx = context::build(config, &context::env_var).await?;
    let options = RunOptions {
        dry_run,
        trigger: "cli".into(),
        progress: progress::Bars::for_terminal(json),
        lease: context::run_lease(),
    };
    let report = match engine::workflow::run(&ctx, workflow, &options).await {
        Ok(report) => report,
        // A spent allocation defers the whole run: nothing lost, the next run does it.
        Err(e) if e.is_deferral() => {
            if json {
                outln!("{}", serde_json::json!({"workflow": workflow, "state": "deferred", "error": e.to_string()}));
            } else {
                eprintln!("deferred: {e}");
            }
            return Ok(EXIT_DEFERRED);
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
        print_next(&report);
    }
    Ok(exit_code(&report))
}

pub fn exit_code(report: &RunReport) -> u8 {
    if report.dry_run {
        0
    } else if report.failed > 0 || !report.preflight.is_clean() {
        EXIT_FAILURES
    } else if report.deferred > 0 {
        EXIT_DEFERRED
    } else {
        0
    }
}

pub fn print_report(r: &RunReport) {
    let n = |x: usize| thousands(x as u64);
    if r.dry_run {
        say!("Plan for workflow {} (dry run: nothing written)", r.workflow);
    } else {
        let id = r.run_id.map(|id| id.to_string()).unwrap_or_default();
        say!("Run {id} of workflow {}: {}", r.workflow, r.state);
    }
    outln!();
    let mut rows = vec![
        vec!["Pendo accounts".into(), n(r.pendo_accounts)],
        vec!["matched".into(), n(r.matched)],
        vec!["unmatched (not written)".into(), n(r.unmatched)],
        vec!["ambiguous (not written)".into(), n(r.ambiguous)],
        vec!["unchanged".into(), n(r.unchanged)],
        vec![if r.dry_run { "to update" } else { "changed" }.into(), n(r.changed)],
    ];
    if !r.dry_run {
        rows.push(vec!["written".into(), n(r.written)]);
        rows.push(vec!["failed".into(), n(r.failed)]);
    }
    rows.push(vec!["deferred (over budget)".into(), n(r.deferred)]);
    table::print(&["records", "count"], &rows);
    if !r.fields_changed.is_empty() {
        outln!();
        let rows: Vec<Vec<String>> = r.fields_changed.iter().map(|(f, c)| vec![f.clone(), n(*c)]).collect();
        table::print(&["field", "records changed"], &rows);
    }
    outln!();
    let mut rows: Vec<Vec<String>> =
        r.api_calls.iter().map(|(kind, calls)| vec![kind.clone(), thousands(*calls)]).collect();
    if r.dry_run {
        rows.push(vec![format!("write ({}, planned)", r.plan.path.as_str()), thousands(r.plan.write_calls)]);
    }
    if r.plan.calls_one_by_one > 0 {
        rows.push(vec!["(one call per changed record would be)".into(), thousands(r.plan.calls_one_by_one)]);
    }
    table::print(&["Salesforce API calls", "calls"], &rows);
    outln!();
    let b = &r.budget;
    let this_run = if r.dry_run { b.this_run + r.plan.write_calls } else { b.this_run };
    let left = b.cap.saturating_sub(b.spent_before + this_run);
    if b.org_max == 0 {
        // Nothing to read or write: the run did not spend a call on the org's limits.
        say!(
            "Budget: not read (no Salesforce call was needed); spent today before this run {}, this run {}.",
            thousands(b.spent_before),
            thousands(this_run),
        );
    } else {
        say!(
            "Budget: {} of {} daily calls ({:.0}% share of {}); spent today before this run {}, this run {}, left {}.",
            thousands(b.cap),
            thousands(b.org_max),
            b.daily_share * 100.0,
            thousands(b.org_max),
            thousands(b.spent_before),
            thousands(this_run),
            thousands(left),
        );
    }
    say!("Pendo calls: {}. Time: {}.", r.pendo_calls, timings(r));
    if !r.ambiguous_samples.is_empty() {
        outln!();
        let rows: Vec<Vec<String>> = r
            .ambiguous_samples
            .iter()
            .map(|a| vec![a.pendo_account.clone(), a.candidates.join(", "), a.reason.clone()])
            .collect();
        table::print(&["ambiguous Pendo account", "candidate Accounts", "why"], &rows);
        if r.ambiguous > r.ambiguous_samples.len() {
            say!(
                "Showing {} of {} ambiguous accounts; the console's Matching page lists every one.",
                n(r.ambiguous_samples.len()),
                n(r.ambiguous)
            );
        }
        say!(
            "Ambiguous accounts are never written; pin the right Account to settle one: \
             `usagesync pin {} PENDO-ACCOUNT 001…`.",
            r.workflow
        );
    }
    if !r.failures.is_empty() {
        outln!();
        let rows: Vec<Vec<String>> =
            r.failures.iter().map(|f| vec![f.salesforce_id.clone(), f.code.clone(), f.message.clone()]).collect();
        table::print(&["record", "error", "message"], &rows);
        say!(
            "See them all with `usagesync failures`; once the cause is fixed, `usagesync replay --all` runs \
             the workflow again; `usagesync failures dismiss ID --reason TEXT` closes one that needs nothing."
        );
    }
    print_preflight(r);
    print_verify(r);
}

/// What to do next, after the summary (not in the demo, whose store is gone when it ends).
fn print_next(r: &RunReport) {
    let next = if r.dry_run {
        format!("Next: `usagesync sync {}` writes this plan.", r.workflow)
    } else if r.failed > 0 {
        "Next: `usagesync failures` shows why records were refused; fix the cause, then `usagesync replay --all`."
            .to_owned()
    } else if r.deferred > 0 {
        "Next: nothing to do; the next run sends what was deferred when the budget allows.".to_owned()
    } else if let Some(id) = r.run_id {
        format!("Next: `usagesync runs {id}` lists every record written, with the values.")
    } else {
        return;
    };
    outln!();
    say!("{next}");
}

/// Drifted values shown in the summary; all are in the run's history.
const DRIFT_SHOWN: usize = 5;

/// The read-back after writing: how much was checked and what someone else changed since.
fn print_verify(r: &RunReport) {
    let v = &r.verify;
    if r.dry_run || v.sampled_from == 0 {
        return;
    }
    outln!();
    if v.checked == 0 {
        match &v.note {
            Some(note) => say!("Verify: {note}."),
            None => say!("Verify: off (verify: sample: 0); nothing read back."),
        }
        return;
    }
    let head = format!("Verified {} of {} written", thousands(v.checked as u64), thousands(v.sampled_from as u64));
    if v.values_changed == 0 {
        say!("{head}: every value is as usagesync wrote it.");
    } else {
        let who: Vec<String> = v
            .changed_by
            .iter()
            .map(|(user, n)| {
                let own = if v.own_user.as_deref() == Some(user.as_str()) {
                    ", usagesync's own user: automation on its save or an integration sharing the user"
                } else {
                    ""
                };
                format!("{user} ({}{own})", thousands(*n as u64))
            })
            .collect();
        let users = if v.changed_by.len() == 1 { "1 user".to_owned() } else { format!("{} users", v.changed_by.len()) };
        let gone = if v.records_gone > 0 {
            format!(" ({} records deleted)", thousands(v.records_gone as u64))
        } else {
            String::new()
        };
        say!(
            "{head}: {} values changed since{gone}, by {users}: {}.",
            thousands(v.values_changed as u64),
            who.join(", ")
        );
        let rows: Vec<Vec<String>> = v
            .drift
            .iter()
            .take(DRIFT_SHOWN)
            .map(|d| {
                vec![
                    d.object.clone(),
                    d.salesforce_id.clone(),
                    d.field.clone(),
                    d.sent.to_string(),
                    d.now.to_string(),
                    d.last_modified_by.clone().unwrap_or_else(|| "-".into()),
                    d.last_modified_at.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table::print(&["object", "record", "field", "sent", "now", "changed by", "at"], &rows);
        let id = r.run_id.map(|id| id.to_string()).unwrap_or_default();
        say!("Every one is in the run's history as `drifted`: `usagesync runs {id}`. Nothing was written back.");
    }
    if let Some(note) = &v.note {
        say!("Verify: {note}.");
    }
}

fn print_preflight(r: &RunReport) {
    let p = &r.preflight;
    if p.is_clean() {
        return;
    }
    outln!();
    say!("Preflight: {} problem(s) with the config against the org:", p.problems.len());
    for problem in &p.problems {
        // Not wrapped: `file:line:column: key: message`, one per line, as editors and grep read them.
        outln!("  {problem}");
    }
    let what = if r.dry_run { "would be" } else { "were" };
    say!(
        "Fields with a problem {what} quarantined: never sent, while the rest of each record is; {} record(s) {what} left with nothing to send.",
        thousands(p.records_held_back as u64)
    );
    say!("Fix the config (or the org), then check with `usagesync validate --remote`.");
}

fn timings(r: &RunReport) -> String {
    let total: f64 = r.timings.iter().map(|(_, s)| s).sum();
    let steps: Vec<String> = r.timings.iter().map(|(n, s)| format!("{n} {s:.2}s")).collect();
    format!("{total:.2}s ({})", steps.join(", "))
}
