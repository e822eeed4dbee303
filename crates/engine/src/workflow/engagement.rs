//! The engagement-scores template: per Pendo account, engagement over a window, written onto the
//! matching Salesforce Account, only the fields that changed, by the cheapest path the budget
//! allows.

use crate::config::template;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{AmbiguousSample, Context, Meter, RunError, RunOptions, RunReport};
use crate::change::{self, Change, Desired};
use crate::config::{EngagementConfig, Metric, Workflow};
use crate::deliver;
use crate::extract::{AccountFacts, AccountUsage, CoreFeatures};
use crate::figures;
use crate::matching::{Ambiguity, Outcome, PendoSide};
use crate::plan::{self, Allowance, CostModel};
use crate::preflight::Quarantine;
use crate::store::{Action, RecordOutcome, RunId};

const OBJECT: &str = "Account";

impl PendoSide for AccountFacts {
    fn pendo_id(&self) -> &str {
        &self.account_id
    }

    fn metadata(&self, group: &str, field: &str) -> Option<&str> {
        self.metadata_value(&format!("{group}.{field}"))
    }

    fn email_domains(&self) -> (&[(String, u32)], u32) {
        (&self.email_domains, self.visitors_with_email)
    }
}

/// The fingerprint scope of a workflow's Account fields.
pub fn scope(workflow: &str) -> String {
    format!("{workflow}:{OBJECT}")
}

pub(crate) async fn run(
    ctx: &Context,
    workflow: &Workflow,
    config: &EngagementConfig,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    super::recorded(ctx, workflow, options, |now, run_id| body(ctx, workflow, config, options, now, run_id)).await
}

async fn body(
    ctx: &Context,
    workflow: &Workflow,
    config: &EngagementConfig,
    options: &RunOptions,
    now: DateTime<Utc>,
    run_id: Option<RunId>,
) -> Result<RunReport, RunError> {
    let progress = options.progress.as_deref();
    let step = |name: &str, total: Option<u64>| {
        if let Some(p) = progress {
            p.step(name, total);
        }
    };
    let mut meter = Meter::new(&ctx.salesforce);

    // Read when a stage first needs it: a run with nothing to read from or write to Salesforce
    // (a warm match cache, no change) makes no call at all.
    let lazy = crate::budget::Budget::new(now);

    step("Reading usage from Pendo", None);
    let extractor = ctx.extractor();
    let window = workflow.window(now);
    let core = CoreFeatures::configured(&config.core_features);
    let mut usage =
        super::usage::gather(ctx, &workflow.name, &extractor, &window, &core, options.dry_run, false).await?.0;
    meter.step("extract", None);

    step("Matching accounts", None);
    let outcomes = crate::matching::match_accounts(
        ctx,
        workflow,
        config,
        crate::matching::Facts::Lazy(&extractor),
        &usage,
        now,
        options.dry_run,
        &lazy,
    )
    .await?;
    meter.step("match", Some("read_accounts"));
    // After matching, which reads the matching facts from Pendo only when it must.
    let pendo_calls = u64::from(extractor.stats().pendo_calls);

    step("Detecting changes", None);
    let written = ctx.store.fingerprints(&scope(&workflow.name)).await?;
    let usage_by_id = super::usage::ById::new(&mut usage);
    let stamp: Vec<(change::FieldName, Value)> =
        config.fields.get(Metric::UpdatedAt).map(|f| vec![(f.into(), figures::timestamp(now))]).unwrap_or_default();
    let (mut matched, mut unmatched, mut ambiguous, mut unchanged) = (0, 0, 0, 0);
    let mut skipped_outcomes = Vec::new();
    let mut ambiguous_samples = Vec::new();
    let mut families = if config.rollup_fields.is_empty() {
        Default::default()
    } else {
        let parents = crate::matching::account_parents(ctx, &workflow.name).await?.unwrap_or_default();
        super::rollup::families(&outcomes, &usage_by_id, &parents)
    };
    // Sized once for the most the loop can push (grown by doubling, a first run's list took up to
    // twice its room), and the outcomes consumed as it goes: each verdict is freed once decided.
    let pendo_accounts = outcomes.len();
    let mut changes: Vec<Change> = Vec::with_capacity(pendo_accounts);
    for (pendo_id, outcome) in outcomes {
        let via_parent = outcome.via_parent();
        match outcome {
            // Its parent's Account holds the parent's figures; this account's usage reaches it
            // through the family figures.
            Outcome::Matched { .. } if via_parent => matched += 1,
            Outcome::Matched { salesforce_id, .. } => {
                matched += 1;
                // An account matched but silent in the window has zero engagement, and
                // Salesforce should say so rather than keep last month's figures.
                let zero = AccountUsage { account_id: pendo_id.clone(), ..Default::default() };
                let u = usage_by_id.get(&pendo_id).unwrap_or(&zero);
                let mut fields = figures::field_values(&config.fields, &config.score, u);
                if let Some(family) = families.remove(&salesforce_id) {
                    fields.extend(figures::field_values(&config.rollup_fields, &config.score, &family));
                }
                let desired = Desired { key: pendo_id, salesforce_id, fields };
                match change::diff(&written, &desired, &stamp) {
                    Some(c) => changes.push(c),
                    None => unchanged += 1,
                }
            }
            Outcome::Ambiguous(a) => {
                let Ambiguity { candidates, reason, .. } = *a;
                ambiguous += 1;
                if ambiguous_samples.len() < 10 {
                    ambiguous_samples.push(AmbiguousSample {
                        pendo_account: pendo_id.clone(),
                        candidates: candidates.clone(),
                        reason: reason.clone(),
                    });
                }
                skipped_outcomes.push(RecordOutcome {
                    object: OBJECT.into(),
                    key: pendo_id,
                    salesforce_id: None,
                    action: Action::Skipped,
                    changes: vec![],
                    error_code: Some("AMBIGUOUS_MATCH".into()),
                    message: Some(format!("{reason}; candidates: {}", candidates.join(", "))),
                });
            }
            Outcome::Unmatched { .. } => unmatched += 1,
        }
    }
    // Parents no Pendo account of their own matched: the family figures alone, keyed by Account.
    for (salesforce_id, family) in families {
        let desired = Desired {
            key: format!("family:{salesforce_id}"),
            fields: figures::field_values(&config.rollup_fields, &config.score, &family),
            salesforce_id,
        };
        match change::diff(&written, &desired, &stamp) {
            Some(c) => changes.push(c),
            None => unchanged += 1,
        }
    }
    // What the diff read from is not needed again: the later stages hold only the changes.
    drop((written, usage_by_id));
    drop(usage);
    meter.step("diff", None);

    step("Checking the config against Salesforce", None);
    let quarantine = preflight(ctx, workflow, &changes, options.dry_run).await?;
    meter.step("preflight", Some("preflight"));
    let riders: Vec<&str> = stamp.iter().map(|(f, _)| &**f).collect();
    let (changes, held) = deliver::hold_back(&quarantine, OBJECT, &riders, changes);
    skipped_outcomes.extend(held.iter().map(|h| h.outcome(OBJECT)));
    crate::testhook::crash_point("gather");

    let writing = !changes.is_empty() || options.dry_run;
    if writing {
        step("Reading the API budget", None);
    }
    let (budget, calls) = super::weigh(ctx, &lazy, &mut meter, writing, None).await?;
    let allowance = Allowance { calls };
    let plan = plan::plan(changes.len(), workflow.max_latency, allowance, &CostModel::default());
    let mut report = RunReport {
        pendo_accounts,
        matched,
        unmatched,
        ambiguous,
        unchanged,
        deferred: plan.deferred,
        plan: plan.clone(),
        pendo_calls,
        ambiguous_samples,
        preflight: super::PreflightReport { problems: quarantine.problems().to_vec(), records_held_back: held.len() },
        ..RunReport::new(&workflow.name, options.dry_run, run_id, budget.clone())
    };
    report.describe_changes(&changes);
    if options.dry_run {
        return Ok(report.planned(meter));
    }
    let Some(run_id) = run_id else { return Ok(report) };

    step("Writing to Salesforce", Some(changes.len().min(plan.send) as u64));
    let advance = |n: usize| {
        if let Some(p) = progress {
            p.advance_to(n as u64);
        }
    };
    let updated =
        super::update::deliver(ctx, &workflow.name, OBJECT, &plan, changes, &budget, &mut meter, now, &advance, run_id)
            .await?;
    step("Recording the run", None);
    for chunk in skipped_outcomes.chunks(5_000) {
        ctx.store.record_outcomes(run_id, chunk, &[]).await?;
    }
    // The plan's deferrals were a forecast; the record stage counts what really waits.
    report.deferred = 0;
    let scope = scope(&workflow.name);
    let how = super::update::Recording { object: OBJECT, scope: &scope, ledger_key: |c| &c.key, note: &|_| None };
    super::update::record(ctx, &workflow.name, run_id, &how, updated, &mut report, now).await?;
    meter.step("record", None);
    if let Some(p) = progress {
        p.done();
    }
    super::settle(ctx, &workflow.name, now, meter, &mut report).await?;
    Ok(report)
}

/// Preflight for a run that has something to send (or a plan, which shows its problems): a
/// run with nothing to write spends no describe on it.
pub(crate) async fn preflight(
    ctx: &Context,
    workflow: &Workflow,
    changes: &[Change],
    dry_run: bool,
) -> Result<Quarantine, RunError> {
    if changes.is_empty() && !dry_run {
        return Ok(Quarantine::default());
    }
    Ok(crate::preflight::run(&ctx.salesforce, &ctx.config, workflow).await?)
}

/// The engagement-scores template, for the registry ([`crate::config::template`]).
impl template::Spec for EngagementConfig {
    fn keys() -> &'static [&'static str] {
        &["matching", "recheck_matches_after", "core_features", "score", "fields", "rollup_fields"]
    }

    fn build(key: &str, w: &template::Wire, errors: &mut template::Errors) -> Option<Self> {
        crate::config::validate::engagement(key, w, errors)
    }

    fn to_wire(&self, out: &mut template::Wire) {
        crate::config::validate::accounts_to_wire(self, out);
    }

    fn flows(&self, key: &dyn Fn(&str) -> String) -> template::Flows {
        use template::{FieldRef, Flows};
        let own = self.fields.iter().map(|(metric, field)| (field, format!("fields.{}", metric.key())));
        let family =
            self.rollup_fields.iter().map(|(metric, field)| (field, format!("rollup_fields.{}", metric.key())));
        let writes = own.chain(family).map(|(field, k)| (FieldRef::salesforce("Account", field), key(&k))).collect();
        Flows::to_salesforce(vec![], writes)
    }

    fn requirements(&self, reqs: &mut template::Reqs) {
        reqs.accounts(self);
    }

    fn run<'a>(&'a self, ctx: &'a Context, w: &'a Workflow, options: &'a RunOptions) -> template::RunFuture<'a> {
        Box::pin(run(ctx, w, self, options))
    }

    fn checks_itself(&self) -> bool {
        true
    }
}
