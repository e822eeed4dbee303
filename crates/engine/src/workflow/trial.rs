//! The trial-usage template: trial usage from Pendo onto open trial Opportunities (selected by a
//! configurable SOQL condition), only the fields that changed, and StageName advanced along a
//! milestone → stage map.
//!
//! # Stages
//! StageName only moves forward along `stage_order`, and only from a stage in it. When a person
//! changed StageName after usagesync last set it, the person has taken over: usagesync no longer
//! moves it (the decision is recorded with the stages). The value usagesync last wrote is kept
//! with its fingerprint (scope `{workflow}:Opportunity`), as engagement-scores keeps Account values.

use crate::config::template;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::mirror::{self, Membership, Spec};
use super::{Context, Meter, RunError, RunOptions, RunReport, engagement};
use crate::change::{self, Desired};
use crate::config::{TrialConfig, TrialMetric, Workflow};
use crate::deliver;
use crate::extract::{AccountUsage, CoreFeatures};
use crate::matching::Outcome;
use crate::plan::WritePath;
use crate::store::{Action, RecordOutcome, RunId};

const OBJECT: &str = "Opportunity";
const STAGE: &str = "StageName";
/// The cursor the open trial Opportunities are mirrored under.
pub const CURSOR: &str = "trial_opportunities";

/// The fingerprint scope of a workflow's Opportunity fields.
pub fn scope(workflow: &str) -> String {
    format!("{workflow}:{OBJECT}")
}

pub(crate) async fn run(
    ctx: &Context,
    workflow: &Workflow,
    config: &TrialConfig,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    super::recorded(ctx, workflow, options, |now, run_id| body(ctx, workflow, config, options, now, run_id)).await
}

/// What StageName should become, if anything, and why not otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageMove {
    Advance { from: String, to: String, because: String },
    Stay { why: String },
}

/// The stage decision for one Opportunity (pure, so the rules are testable on their own).
pub fn stage_move(
    config: &TrialConfig,
    current: &str,
    last_written: Option<&str>,
    figures: &[(TrialMetric, u64)],
) -> StageMove {
    let pos = |s: &str| config.stage_order.iter().position(|x| x == s);
    let Some(at) = pos(current) else {
        return StageMove::Stay { why: format!("stage `{current}` is not in stage_order: left to people") };
    };
    if let Some(written) = last_written
        && written != current
    {
        return StageMove::Stay {
            why: format!("a person moved the stage from `{written}` (set by usagesync) to `{current}`: left to them"),
        };
    }
    let value = |m: TrialMetric| figures.iter().find(|(x, _)| *x == m).map_or(0, |(_, v)| *v);
    let best = config
        .stages
        .iter()
        .filter(|r| value(r.metric) >= r.at_least)
        .filter_map(|r| Some((pos(&r.stage)?, r)))
        .max_by_key(|(p, _)| *p);
    match best {
        Some((p, r)) if p > at => StageMove::Advance {
            from: current.to_owned(),
            to: r.stage.clone(),
            because: format!("{} reached {} (rule: at least {})", r.metric.key(), value(r.metric), r.at_least),
        },
        Some((_, r)) => StageMove::Stay { why: format!("already at or past `{}`: never moved backwards", r.stage) },
        None => StageMove::Stay { why: "no stage milestone reached".into() },
    }
}

async fn body(
    ctx: &Context,
    workflow: &Workflow,
    config: &TrialConfig,
    options: &RunOptions,
    now: DateTime<Utc>,
    run_id: Option<RunId>,
) -> Result<RunReport, RunError> {
    let mut meter = Meter::new(&ctx.salesforce);
    // Read when a stage first needs it: a run with nothing to write reads no /limits.
    let lazy = crate::budget::Budget::new(now);

    let extractor = ctx.extractor();
    let core = CoreFeatures::configured(&config.accounts.core_features);
    let window = workflow.window(now);
    let usage = super::usage::gather(ctx, &workflow.name, &extractor, &window, &core, options.dry_run, false).await?.0;
    let drop_offs = match (&config.fields.drop_off_step, &config.onboarding_guide) {
        (Some(_), Some(guide)) => extractor.drop_off_steps(&window, guide).await?,
        _ => BTreeMap::new(),
    };
    meter.step("extract", None);

    let outcomes = crate::matching::match_accounts(
        ctx,
        workflow,
        &config.accounts,
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
    let pendo_of: HashMap<String, String> = outcomes
        .iter()
        .filter_map(|(p, o)| match o {
            Outcome::Matched { salesforce_id, .. } => Some((salesforce_id.clone(), p.clone())),
            _ => None,
        })
        .collect();
    let usage: HashMap<&str, &AccountUsage> = usage.iter().map(|u| (u.account_id.as_str(), u)).collect();

    // The open trial Opportunities: from the mirror, and from Salesforce only what changed since.
    let spec = Spec {
        cursor: CURSOR,
        object: OBJECT,
        what: "trial Opportunities",
        fields: vec!["AccountId".into(), STAGE.into()],
        membership: Membership::Rules(vec![(String::new(), format!("IsClosed = false AND ({})", config.select))]),
        out_when: Some("IsClosed"),
        follows_own: true,
    };
    let mut mirrored = mirror::gather(ctx, &workflow.name, spec, now).await?;
    let opps: Vec<(&str, &str, &str)> = mirrored
        .mirror
        .members
        .iter()
        .filter_map(|(id, m)| Some((id.as_str(), m.values.first()?.as_str(), m.values.get(1)?.as_str())))
        .collect();
    meter.step("read_opportunities", Some("read_opportunities"));

    let scope = scope(&workflow.name);
    let written = ctx.store.fingerprints(&scope).await?;
    let ids: Vec<String> = opps.iter().map(|(id, _, _)| (*id).to_owned()).collect();
    let last_values = ctx.store.written_values(&scope, &ids).await?;
    let mut changes = Vec::new();
    let mut decisions = Vec::new();
    let (mut matched, mut unmatched, mut unchanged) = (0, 0, 0);
    let mut stage_from: HashMap<String, String> = HashMap::new();
    for &(id, account, current) in &opps {
        let Some(pendo_id) = pendo_of.get(account) else {
            unmatched += 1;
            continue;
        };
        matched += 1;
        let zero = AccountUsage { account_id: pendo_id.clone(), ..Default::default() };
        let u = usage.get(pendo_id.as_str()).copied().unwrap_or(&zero);
        let figures = [
            (TrialMetric::ActiveUsers, u.active_visitors),
            (TrialMetric::FeaturesExplored, u64::from(u.core_features_used)),
            (TrialMetric::GuidesCompleted, u.guides_completed),
        ];
        let mut fields: Vec<(String, Value)> = Vec::new();
        let f = &config.fields;
        for (field, value) in [
            (&f.active_users, json!(u.active_visitors)),
            (&f.features_explored, json!(u.core_features_used)),
            (&f.guides_completed, json!(u.guides_completed)),
            (&f.last_active, u.last_active.map_or(Value::Null, crate::figures::timestamp)),
            (&f.drop_off_step, drop_offs.get(pendo_id).map_or(Value::Null, |s| json!(s))),
        ] {
            if let Some(field) = field {
                fields.push((field.clone(), value));
            }
        }
        let last_stage =
            last_values.get(id).and_then(|v| v.iter().find(|(f, _)| f == STAGE)).and_then(|(_, v)| v.as_str());
        if !config.stages.is_empty() {
            match stage_move(config, current, last_stage, &figures) {
                StageMove::Advance { from, to, because } => {
                    fields.push((STAGE.to_owned(), json!(to)));
                    stage_from.insert(id.to_owned(), format!("{from} → {to}: {because}"));
                }
                StageMove::Stay { why } if why.starts_with("a person") => decisions.push(RecordOutcome {
                    object: OBJECT.into(),
                    key: pendo_id.clone(),
                    salesforce_id: Some(id.to_owned()),
                    action: Action::Skipped,
                    changes: vec![],
                    error_code: None,
                    message: Some(format!("StageName not changed: {why}")),
                }),
                StageMove::Stay { .. } => {}
            }
        }
        let desired = Desired { key: pendo_id.clone(), salesforce_id: id.to_owned(), fields: change::named(fields) };
        match change::diff(&written, &desired, &[]) {
            Some(c) => changes.push(c),
            None => unchanged += 1,
        }
    }
    drop(written);
    meter.step("diff", None);
    let quarantine = engagement::preflight(ctx, workflow, &changes, options.dry_run).await?;
    meter.step("preflight", Some("preflight"));
    let (changes, held) = deliver::hold_back(&quarantine, OBJECT, &[], changes);
    decisions.extend(held.iter().map(|h| h.outcome(OBJECT)));
    crate::testhook::crash_point("gather");

    let writing = !changes.is_empty() || options.dry_run;
    let (budget, calls) = super::weigh(ctx, &lazy, &mut meter, writing, None).await?;
    let allowance = crate::plan::Allowance { calls };
    let plan = crate::plan::plan(changes.len(), workflow.max_latency, allowance, &Default::default());
    let mut report = RunReport {
        pendo_accounts: outcomes.len(),
        matched,
        unmatched,
        unchanged,

        deferred: plan.deferred,
        plan: plan.clone(),
        pendo_calls,
        preflight: super::PreflightReport { problems: quarantine.problems().to_vec(), records_held_back: held.len() },
        ..RunReport::new(&workflow.name, options.dry_run, run_id, budget.clone())
    };
    report.describe_changes(&changes);
    let Some(run_id) = run_id else { return Ok(report.planned(meter)) };
    ctx.store.record_outcomes(run_id, &decisions, &[]).await?;

    // Few trial Opportunities: Bulk is never worth its fixed cost here.
    let path = if plan.send.min(changes.len()) == 1 { WritePath::Single } else { WritePath::Collections };
    let plan = crate::plan::Plan { path, ..plan };
    let updated =
        super::update::deliver(ctx, &workflow.name, OBJECT, &plan, changes, &budget, &mut meter, now, &|_| {}, run_id)
            .await?;
    // The plan's deferrals were a forecast; the record stage counts what really waits.
    report.deferred = 0;
    let note = |c: &crate::change::Change| stage_from.get(&c.salesforce_id).map(|m| format!("stage {m}"));
    // An account may have several trial Opportunities: each is its own record in the ledger.
    let how = super::update::Recording { object: OBJECT, scope: &scope, ledger_key: |c| &c.salesforce_id, note: &note };
    super::update::record(ctx, &workflow.name, run_id, &how, updated, &mut report, now).await?;
    drop(opps);
    // What the run wrote is read once now, so the next run's change query starts past it.
    if report.written > 0 {
        mirrored.follow().await?;
        meter.step("follow", Some("read_opportunities"));
    }
    mirrored.store(&workflow.name, options.dry_run).await?;
    super::settle(ctx, &workflow.name, now, meter, &mut report).await?;
    Ok(report)
}

/// The trial-usage template, for the registry ([`crate::config::template`]).
impl template::Spec for TrialConfig {
    fn keys() -> &'static [&'static str] {
        &["matching", "recheck_matches_after", "core_features", "score", "fields", "trial"]
    }

    fn build(key: &str, w: &template::Wire, errors: &mut template::Errors) -> Option<Self> {
        crate::config::trial::build(key, w, errors)
    }

    fn to_wire(&self, out: &mut template::Wire) {
        out.trial = Some(crate::config::trial::to_wire(self));
        crate::config::validate::accounts_to_wire(&self.accounts, out);
    }

    fn flows(&self, key: &dyn Fn(&str) -> String) -> template::Flows {
        use template::{FieldRef, Flows};
        let f = &self.fields;
        let writes = [
            (&f.active_users, "active_users"),
            (&f.features_explored, "features_explored"),
            (&f.guides_completed, "guides_completed"),
            (&f.last_active, "last_active"),
            (&f.drop_off_step, "drop_off_step"),
        ]
        .into_iter()
        .filter_map(|(field, leaf)| {
            field.as_ref().map(|f| (FieldRef::salesforce("Opportunity", f), key(&format!("trial.fields.{leaf}"))))
        })
        .collect();
        Flows::to_salesforce(vec![], writes)
    }

    fn requirements(&self, reqs: &mut template::Reqs) {
        use template::{Expect, Use};
        reqs.accounts(&self.accounts);
        let f = &self.fields;
        for (field, leaf, expect) in [
            (&f.active_users, "active_users", Expect::Number),
            (&f.features_explored, "features_explored", Expect::Number),
            (&f.guides_completed, "guides_completed", Expect::Number),
            (&f.last_active, "last_active", Expect::Date),
            (&f.drop_off_step, "drop_off_step", Expect::Text),
        ] {
            if let Some(field) = field {
                reqs.add("Opportunity", field, Use::Update, expect, &format!("trial.fields.{leaf}"));
            }
        }
        for (i, rule) in self.stages.iter().enumerate() {
            let expect = Expect::Value(rule.stage.clone());
            reqs.add("Opportunity", "StageName", Use::Update, expect, &format!("trial.stages[{i}].stage"));
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context, w: &'a Workflow, options: &'a RunOptions) -> template::RunFuture<'a> {
        Box::pin(run(ctx, w, self, options))
    }

    fn checks_itself(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StageRule, TrialFields};

    fn config() -> TrialConfig {
        TrialConfig {
            accounts: crate::config::EngagementConfig {
                matching: vec![],
                recheck_matches_after: std::time::Duration::from_secs(3600),
                core_features: vec![],
                score: Default::default(),
                fields: Default::default(),
                rollup_fields: Default::default(),
            },
            select: "Type = 'Trial'".into(),
            fields: TrialFields::default(),
            onboarding_guide: None,
            stages: vec![
                StageRule { metric: TrialMetric::ActiveUsers, at_least: 2, stage: "Qualification".into() },
                StageRule { metric: TrialMetric::FeaturesExplored, at_least: 3, stage: "Needs Analysis".into() },
            ],
            stage_order: ["Prospecting", "Qualification", "Needs Analysis", "Value Proposition"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }

    #[test]
    fn stages_only_move_forward_and_never_over_a_person() {
        let c = config();
        let fig = |users, features| [(TrialMetric::ActiveUsers, users), (TrialMetric::FeaturesExplored, features)];
        assert!(matches!(
            stage_move(&c, "Prospecting", None, &fig(5, 4)),
            StageMove::Advance { ref to, .. } if to == "Needs Analysis"
        ));
        assert!(matches!(
            stage_move(&c, "Prospecting", None, &fig(5, 0)),
            StageMove::Advance { ref to, .. } if to == "Qualification"
        ));
        // Never backwards.
        assert!(matches!(stage_move(&c, "Value Proposition", None, &fig(5, 4)), StageMove::Stay { .. }));
        assert!(matches!(stage_move(&c, "Prospecting", None, &fig(1, 0)), StageMove::Stay { .. }));
        // A person moved it back after usagesync set it: left alone.
        let StageMove::Stay { why } = stage_move(&c, "Prospecting", Some("Qualification"), &fig(5, 4)) else {
            panic!()
        };
        assert!(why.starts_with("a person"), "{why}");
        // Stages outside the order (closed ones, custom ones) are never touched.
        assert!(matches!(stage_move(&c, "Closed Won", None, &fig(9, 9)), StageMove::Stay { .. }));
        // Still where usagesync left it: it may move on.
        assert!(matches!(
            stage_move(&c, "Qualification", Some("Qualification"), &fig(5, 4)),
            StageMove::Advance { ref to, .. } if to == "Needs Analysis"
        ));
    }
}
