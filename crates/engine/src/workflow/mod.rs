//! Workflows: what a run does, step by step, and what it leaves behind in the store.
//!
//! A run is trigger → budget → extract (Pendo) → match → map → diff → plan → deliver →
//! record. Each step's time and Salesforce calls are measured and kept with the run, so the
//! console and `usagesync runs` can show where a run spent its time and its API budget.
//!
//! # Layout
//! - [`engagement`]: the engagement-scores template.
//! - [`new_users`]: the new-users-to-contacts template.
//! - [`attributes`]: the account-attributes-to-pendo template (Salesforce → Pendo).
//! - [`nps`]: the nps-realtime template (inbox consumer and pollEvents reconciliation).
//! - [`drop_alert`]: the engagement-drop-alert template.
//! - [`expansion`]: the expansion-opportunity template.
//! - [`trial`]: the trial-usage template.
//! - [`people`]: the contact-engagement template (each person's usage onto their Contact).
//! - [`create`]: the create stage: groups of records made exactly once, never clobbering, within the budget.
//! - `update`: the update stage: changed fields onto existing records within the reserved budget,
//!   then read back ([`crate::verify`]).
//! - `pendo_write`: the Pendo metadata write stage (bulk writes, fingerprints, ledger).
//! - `episode`: one alert per subject per episode, for every template that alerts.
//! - `ledger`: the failure ledger every template settles its refused and written records in.
//! - [`replay`]: running failed records' workflows again, re-deriving what they send.
//! - `usage`: the gather stage of the templates that read per-account engagement, from state kept
//!   between runs.

pub mod attributes;
mod contact_links;
pub mod create;
pub mod drop_alert;
pub mod engagement;
mod episode;
pub mod expansion;
mod expansion_open;
mod lease;
mod ledger;
mod mirror;
pub mod new_users;
pub mod nps;
mod pendo_write;
pub mod people;
pub mod replay;
mod rollup;
pub mod trial;
mod update;
mod usage;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::plan::Plan;
use crate::store::{RunId, Store};

pub use crate::budget::BudgetReport;
pub use crate::preflight::Problem as PreflightProblem;
pub use lease::{RunLease, holder as lease_holder};

/// What every run needs: clients, the store and the loaded config.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub salesforce: salesforce::Client,
    pub pendo: pendo::Client,
    pub store: Arc<dyn Store>,
    /// What time it is for every decision a run makes.
    pub clock: crate::clock::Clock,
}

impl Context {
    /// The extractor every template gathers from Pendo with, as the connection is configured.
    pub fn extractor(&self) -> crate::extract::Extractor<'_> {
        crate::extract::Extractor::new(&self.pendo)
            .with_parallel_queries(self.config.connections.pendo.parallel_queries)
    }
}

/// How to run.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Plan and report, write nothing to Salesforce or the store's sync state.
    pub dry_run: bool,
    /// `cli`, `schedule`, `demo`, `replay`.
    pub trigger: String,
    pub progress: Option<Arc<dyn Progress>>,
    /// The lease a non-dry run holds in the store while it executes; tests shorten it.
    pub lease: RunLease,
}

/// Progress of the long steps, for bars in a terminal (or nothing).
pub trait Progress: Send + Sync {
    fn step(&self, name: &str, total: Option<u64>);
    fn advance_to(&self, done: u64);
    fn done(&self);
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("workflow {0:?} is not in the config")]
    UnknownWorkflow(String),
    #[error("workflow {name:?} uses template {template}, which `sync` cannot run yet")]
    UnsupportedTemplate { name: String, template: &'static str },
    #[error("reading Salesforce {what} failed: {source}")]
    Salesforce {
        what: &'static str,
        #[source]
        source: salesforce::Error,
    },
    #[error("reading Pendo failed: {0}")]
    Pendo(#[from] crate::extract::ExtractError),
    #[error(
        "workflow {workflow:?}: no active Salesforce User has the username {username:?} (alert.owner.username); nothing was created"
    )]
    UnknownOwner { workflow: String, username: String },
    #[error("state store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Preflight(#[from] crate::preflight::PreflightError),
    #[error(
        "the API budget is spent: {needed} calls needed to read, {left} left of today's share; nothing was read or written"
    )]
    OverBudget { needed: u64, left: u64 },
    #[error(
        "workflow {workflow:?} is already running: run {run_id}, started at {since} by {holder}, holds its lease{}; \
         this run did not start (a worker that dies gives the workflow up when its lease lapses)",
        until.map(|u| format!(" until {u} unless renewed")).unwrap_or_default()
    )]
    Busy {
        workflow: String,
        run_id: RunId,
        holder: String,
        since: chrono::DateTime<chrono::Utc>,
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
}

impl RunError {
    /// The run could not start or go on because the API allocation is spent (usagesync's
    /// share, or the org's own 403 `REQUEST_LIMIT_EXCEEDED` met mid-run): nothing is lost,
    /// the next run does the work. Reported as deferred (exit 4), never as failed.
    pub fn is_deferral(&self) -> bool {
        match self {
            RunError::OverBudget { .. } => true,
            RunError::Salesforce { source, .. }
            | RunError::Preflight(crate::preflight::PreflightError::Describe { source, .. }) => {
                source.retry_class() == salesforce::RetryClass::NotNow
            }
            _ => false,
        }
    }
}

/// What a run did, as `usagesync sync` prints it and `--json` emits it.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: Option<RunId>,
    pub workflow: String,
    pub dry_run: bool,
    pub state: String,
    pub pendo_accounts: usize,
    pub matched: usize,
    pub unmatched: usize,
    pub ambiguous: usize,
    /// Matched accounts whose Salesforce values are already current.
    pub unchanged: usize,
    /// Records with at least one changed field.
    pub changed: usize,
    /// Field API name → records where it changed.
    pub fields_changed: BTreeMap<String, usize>,
    pub written: usize,
    pub failed: usize,
    pub deferred: usize,
    pub plan: Plan,
    /// Salesforce API calls by kind, as counted by the client (requests answered).
    pub api_calls: BTreeMap<String, u64>,
    pub pendo_calls: u64,
    pub budget: BudgetReport,
    /// Step → seconds.
    pub timings: Vec<(String, f64)>,
    /// Up to ten records written (or to be written, in a dry run) with their new values.
    pub samples: Vec<Sample>,
    /// Up to ten failures with Salesforce's code and message.
    pub failures: Vec<FailureSample>,
    /// Up to ten ambiguous accounts with their candidates, for a person to settle.
    pub ambiguous_samples: Vec<AmbiguousSample>,
    /// What preflight found wrong with the config against the org, and what it held back.
    pub preflight: PreflightReport,
    /// What the read-back after writing found: values changed since by someone else.
    pub verify: crate::verify::VerifyReport,
}

/// Preflight's part of a run: every problem (a written field with a problem is quarantined:
/// never sent, while the rest of each record is), and the records that had nothing else to send.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PreflightReport {
    pub problems: Vec<PreflightProblem>,
    /// Records not sent at all: every field they would have changed is quarantined.
    pub records_held_back: usize,
}

impl PreflightReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AmbiguousSample {
    pub pendo_account: String,
    pub candidates: Vec<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub pendo_account: String,
    pub salesforce_id: String,
    pub fields: Vec<(String, serde_json::Value)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureSample {
    pub salesforce_id: String,
    pub code: String,
    pub message: String,
}

impl RunReport {
    /// A report with nothing counted yet, for a template to fill.
    /// What the update stage is about to change: the records, the count per field and ten samples.
    pub(crate) fn describe_changes(&mut self, changes: &[crate::change::Change]) {
        self.changed = changes.len();
        self.fields_changed = BTreeMap::new();
        for c in changes {
            for (f, _) in &c.fields {
                *self.fields_changed.entry(f.to_string()).or_default() += 1;
            }
        }
        self.samples = changes
            .iter()
            .take(10)
            .map(|c| Sample {
                pendo_account: c.key.clone(),
                salesforce_id: c.salesforce_id.clone(),
                fields: c.fields.iter().map(|(f, v)| (f.to_string(), v.clone())).collect(),
            })
            .collect();
    }

    pub fn new(workflow: &str, dry_run: bool, run_id: Option<RunId>, budget: BudgetReport) -> Self {
        RunReport {
            run_id,
            workflow: workflow.to_owned(),
            dry_run,
            state: "planned".into(),
            pendo_accounts: 0,
            matched: 0,
            unmatched: 0,
            ambiguous: 0,
            unchanged: 0,
            changed: 0,
            fields_changed: BTreeMap::new(),
            written: 0,
            failed: 0,
            deferred: 0,
            plan: Plan {
                path: crate::plan::WritePath::Collections,
                send: 0,
                deferred: 0,
                write_calls: 0,
                calls_one_by_one: 0,
            },
            api_calls: BTreeMap::new(),
            pendo_calls: 0,
            budget,
            timings: Vec::new(),
            samples: Vec::new(),
            failures: Vec::new(),
            ambiguous_samples: Vec::new(),
            preflight: PreflightReport::default(),
            verify: crate::verify::VerifyReport::default(),
        }
    }

    /// The matching stage's counts: Pendo accounts seen, matched, unmatched and ambiguous.
    pub(crate) fn count_matches(&mut self, outcomes: &crate::matching::Verdicts) {
        use crate::matching::Outcome;
        self.pendo_accounts = outcomes.len();
        self.matched = outcomes.values().filter(|o| matches!(o, Outcome::Matched { .. })).count();
        self.unmatched = outcomes.values().filter(|o| matches!(o, Outcome::Unmatched { .. })).count();
        self.ambiguous = outcomes.values().filter(|o| matches!(o, Outcome::Ambiguous(_))).count();
    }

    /// The report of a run that stops at its plan (a dry run): its reads' calls and timings.
    pub(crate) fn planned(mut self, meter: Meter<'_>) -> RunReport {
        self.budget.this_run = meter.calls.values().sum();
        self.api_calls = meter.calls;
        self.timings = meter.timings;
        self
    }

    pub fn total_api_calls(&self) -> u64 {
        self.api_calls.values().sum()
    }

    /// Salesforce calls that wrote (everything but reads, preflight's describes and the
    /// read-back).
    pub fn write_calls(&self) -> u64 {
        self.api_calls
            .iter()
            .filter(|(k, _)| !k.starts_with("read") && !["preflight", "verify"].contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Runs workflow `name` once.
///
/// # Errors
/// [`RunError`] when the run could not happen at all; per-record failures are in the report.
pub async fn run(ctx: &Context, name: &str, options: &RunOptions) -> Result<RunReport, RunError> {
    let workflow = ctx.config.workflows.get(name).ok_or_else(|| RunError::UnknownWorkflow(name.to_owned()))?;
    let mut report = workflow.template.spec().run(ctx, workflow, options).await?;
    if options.dry_run && !workflow.template.spec().checks_itself() {
        // These templates do not run preflight themselves yet; a plan still shows its problems.
        let before = ctx.salesforce.requests_sent();
        let quarantine = crate::preflight::run(&ctx.salesforce, &ctx.config, workflow).await?;
        let calls = ctx.salesforce.requests_sent().saturating_sub(before);
        if calls > 0 {
            *report.api_calls.entry("preflight".into()).or_default() += calls;
            report.budget.this_run += calls;
        }
        report.preflight.problems = quarantine.problems().to_vec();
    }
    Ok(report)
}

tokio::task_local! {
    /// When the run this task executes began (set around every run's body by [`recorded`]):
    /// what a run fetched since then is this run's own, fresh for its checks.
    static RUN_STARTED: std::time::Instant;
}

/// When the run executing on this task began; `None` outside a run (a test calling a stage
/// directly, a plan's extra preflight), where nothing fetched earlier counts as fresh.
pub(crate) fn run_started() -> Option<std::time::Instant> {
    RUN_STARTED.try_with(|started| *started).ok()
}

/// A run's record in the store around its body: claimed under a lease unless it is a dry run
/// (refused with [`RunError::Busy`] while another run of the workflow holds a live lease), the
/// lease renewed while the body executes, then closed with the report's state and figures, or
/// with the error (a spent budget is `deferred`, anything else `failed`). Every template runs
/// through here, so history reads the same for all.
pub(crate) async fn recorded<F, Fut>(
    ctx: &Context,
    workflow: &crate::config::Workflow,
    options: &RunOptions,
    body: F,
) -> Result<RunReport, RunError>
where
    F: FnOnce(chrono::DateTime<chrono::Utc>, Option<RunId>) -> Fut,
    Fut: std::future::Future<Output = Result<RunReport, RunError>>,
{
    let now = ctx.clock.now();
    let mut heartbeat = None;
    let run_id = if options.dry_run {
        None
    } else {
        let new = crate::store::NewRun {
            workflow: workflow.name.clone(),
            template: workflow.template.kind().name().to_owned(),
            dry_run: false,
            started_at: now,
            trigger: options.trigger.clone(),
        };
        let (id, beat) = claim(ctx, &new, options.lease).await?;
        heartbeat = Some(beat);
        Some(id)
    };
    let result = RUN_STARTED.scope(std::time::Instant::now(), body(now, run_id)).await;
    let lost = heartbeat.map(lease::Heartbeat::stop).unwrap_or(false);
    if let Some(id) = run_id {
        if lost {
            // The store keeps both facts (abandoned, then finished): see `finish_run`.
            tracing::warn!(workflow = %workflow.name, run = %id, "The run finished after losing its lease");
        }
        ctx.store.finish_run(id, &finish_of(&result, ctx.clock.now())).await?;
    }
    result
}

/// Claims a run of `new.workflow` under a lease renewed in the background: the only live run
/// of the workflow across every process sharing the store. A holder that is a vanished process
/// of this host is taken over at once.
///
/// # Errors
/// [`RunError::Busy`] while another run holds a live lease; store failures.
pub(crate) async fn claim(
    ctx: &Context,
    new: &crate::store::NewRun,
    run_lease: lease::RunLease,
) -> Result<(RunId, lease::Heartbeat), RunError> {
    use crate::store::RunClaim;
    let now = new.started_at;
    let holder = lease::holder();
    let clock = ctx.clock;
    let started = move || clock.now();
    let mut claim = ctx.store.claim_run(new, &holder, run_lease.duration, now, &started).await?;
    if let RunClaim::Busy { holder: busy, .. } = &claim
        && lease::expire_if_dead(ctx.store.as_ref(), busy, now).await?
    {
        tracing::info!(workflow = %new.workflow, run = %busy.id, "The run holding the workflow belonged to a process that is gone; taking over");
        claim = ctx.store.claim_run(new, &holder, run_lease.duration, now, &started).await?;
    }
    match claim {
        RunClaim::Started { id, abandoned } => {
            log_abandoned(&abandoned);
            // This run is the workflow's only live one, so calls still reserved for it today
            // were left by runs that died before settling: give them back to the day's share.
            let released = ctx.store.release_reservations(now.date_naive(), &new.workflow).await?;
            if released > 0 {
                tracing::info!(workflow = %new.workflow, calls = released,
                    "Released API calls reserved by a run that ended without settling");
            }
            Ok((id, lease::Heartbeat::start(Arc::clone(&ctx.store), ctx.clock, id, holder, run_lease)))
        }
        RunClaim::Busy { holder, abandoned } => {
            log_abandoned(&abandoned);
            Err(RunError::Busy {
                workflow: new.workflow.clone(),
                run_id: holder.id,
                holder: holder.holder.unwrap_or_default(),
                since: holder.started_at,
                until: holder.lease_until,
            })
        }
    }
}

/// Says which runs a claim found dead and marked abandoned.
fn log_abandoned(runs: &[crate::store::Run]) {
    for run in runs {
        tracing::warn!(workflow = %run.workflow, run = %run.id, holder = run.holder.as_deref().unwrap_or("-"),
            lease_until = ?run.lease_until, "Marked a run abandoned: its lease expired");
    }
}

pub(crate) fn finish_of(
    result: &Result<RunReport, RunError>,
    finished_at: chrono::DateTime<chrono::Utc>,
) -> crate::store::RunFinish {
    use crate::store::{RunFinish, RunState};
    match result {
        Ok(report) => RunFinish {
            state: state_of(report),
            finished_at,
            stats: serde_json::to_value(report).unwrap_or(serde_json::Value::Null),
            error: None,
        },
        Err(e) => RunFinish {
            state: if e.is_deferral() { RunState::Deferred } else { RunState::Failed },
            finished_at,
            stats: serde_json::Value::Null,
            error: Some(e.to_string()),
        },
    }
}

/// Closes a run's figures: its Salesforce calls settled against today's budget, the calls by
/// kind and step timings onto the report, and the state its counts give.
pub(crate) async fn settle(
    ctx: &Context,
    workflow: &str,
    now: chrono::DateTime<chrono::Utc>,
    meter: Meter<'_>,
    report: &mut RunReport,
) -> Result<(), RunError> {
    let spent: u64 = meter.calls.values().sum();
    // Calls a stage reserved and settled itself are on the ledger already.
    let unsettled = spent.saturating_sub(meter.settled);
    if unsettled > 0 {
        ctx.store.settle_budget(now.date_naive(), workflow, 0, unsettled, now).await?;
    }
    report.budget.this_run = spent;
    report.api_calls = meter.calls;
    report.timings = meter.timings;
    report.state = state_of(report).as_str().into();
    Ok(())
}

/// Partial when Salesforce refused records or preflight quarantined configured fields (so a
/// field that is never written is never reported as success), deferred when the budget held
/// some back.
pub(crate) fn state_of(report: &RunReport) -> crate::store::RunState {
    use crate::store::RunState;
    if report.failed > 0 || !report.preflight.is_clean() {
        RunState::Partial
    } else if report.deferred > 0 {
        RunState::Deferred
    } else {
        RunState::Succeeded
    }
}

/// The budget a run's writes are weighed against, and the calls it still allows. The budget is
/// read (a fresh `Sforce-Limit-Info`, else `/limits`) only when the run has something to write
/// or plans in a dry run; otherwise `unread` stands, or the ledger's figures, at no call. The
/// ledger holds none of this run's calls yet, so every call but the budget's own comes off.
pub(crate) async fn weigh(
    ctx: &Context,
    lazy: &crate::budget::Budget,
    meter: &mut Meter<'_>,
    writing: bool,
    unread: Option<crate::budget::BudgetReport>,
) -> Result<(crate::budget::BudgetReport, u64), RunError> {
    let budget = if writing {
        let read = lazy.get(ctx).await?.clone();
        meter.step("budget", Some("read_limits"));
        read
    } else {
        match unread {
            Some(known) => known,
            None => lazy.report(ctx).await?,
        }
    };
    let spent = meter.calls.values().sum::<u64>().saturating_sub(lazy.own_calls());
    let allowance = budget.available.saturating_sub(spent);
    Ok((budget, allowance))
}

/// Times steps and prices them in Salesforce calls.
pub(crate) struct Meter<'a> {
    client: &'a salesforce::Client,
    started: std::time::Instant,
    calls_at_start: u64,
    pub timings: Vec<(String, f64)>,
    pub calls: BTreeMap<String, u64>,
    /// Calls already settled on the budget ledger by the stage that made them.
    pub settled: u64,
}

impl<'a> Meter<'a> {
    pub fn new(client: &'a salesforce::Client) -> Self {
        Meter {
            client,
            started: std::time::Instant::now(),
            calls_at_start: client.requests_sent(),
            timings: Vec::new(),
            calls: BTreeMap::new(),
            settled: 0,
        }
    }

    /// Closes the current step: its time, and the calls it made under `kind`.
    pub fn step(&mut self, name: &str, kind: Option<&str>) {
        let now = std::time::Instant::now();
        self.timings.push((name.to_owned(), round3(now.duration_since(self.started))));
        self.started = now;
        let sent = self.client.requests_sent();
        let calls = sent.saturating_sub(self.calls_at_start);
        self.calls_at_start = sent;
        if calls > 0 {
            *self.calls.entry(kind.unwrap_or(name).to_owned()).or_default() += calls;
        }
        if tracing::enabled!(target: "engine::memory", tracing::Level::DEBUG) {
            let (rss, peak) = memory_mib();
            tracing::debug!(target: "engine::memory", step = name, rss_mib = rss, peak_mib = peak, "Step ended.");
        }
    }
}

/// The process's resident and peak resident memory in MiB (Linux; zeros elsewhere): which
/// step a run's peak memory comes from, for whoever profiles it.
fn memory_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn round3(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
pub(crate) mod tests {
    pub(crate) fn empty_report() -> super::RunReport {
        super::RunReport::new("test", false, None, super::BudgetReport::default())
    }
}
