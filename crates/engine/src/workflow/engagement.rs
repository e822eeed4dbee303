//! The engagement-scores template: per Pendo account, engagement over a window, written onto the
//! matching Salesforce Account, only the fields that changed, by the cheapest path the budget
//! allows.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{
    AmbiguousSample, Context, FailureSample, Meter, RunError, RunOptions, RunReport, Sample, accounts, budget,
};
use crate::change::{self, Change, Desired};
use crate::config::{EngagementConfig, MatchRule, Metric, Workflow};
use crate::deliver;
use crate::extract::{AccountFacts, AccountUsage, CoreFeatures, Extractor, Window};
use crate::matching::{self, Accounts, FreeMail, Outcome, PendoSide, Rule};
use crate::metrics;
use crate::plan::{self, Allowance, CostModel};
use crate::preflight::Quarantine;
use crate::store::{Action, FieldChange, FingerprintPut, IdMapEntry, MatchStatus, RecordOutcome, RunId};

const OBJECT: &str = "Account";

impl PendoSide for AccountFacts {
    fn pendo_id(&self) -> &str {
        &self.account_id
    }

    fn metadata(&self, group: &str, field: &str) -> Option<&str> {
        self.metadata.get(&format!("{group}.{field}")).map(String::as_str)
    }

    fn email_domains(&self) -> (&[(String, u32)], u32) {
        (&self.email_domains, self.visitors_with_email)
    }
}

pub(crate) fn rules(config: &EngagementConfig) -> Vec<Rule> {
    config
        .matching
        .iter()
        .map(|r| match r {
            MatchRule::PendoMetadata { group, field } => {
                Rule::PendoMetadata { group: group.name().to_owned(), field: field.clone() }
            }
            MatchRule::ExternalId { field } => Rule::ExternalId { field: field.clone() },
            MatchRule::EmailDomain { min_share, extra_free_mail, .. } => {
                Rule::EmailDomain { min_share: *min_share, free_mail: FreeMail::with_extra(extra_free_mail) }
            }
        })
        .collect()
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

    step("Reading the API budget", None);
    let budget = budget::today(ctx, now).await?;
    meter.step("budget", Some("read_limits"));
    let limits_calls: u64 = meter.calls.values().sum();

    step("Reading usage from Pendo", None);
    let extractor = Extractor::new(&ctx.pendo);
    let window = Window { end: now, days: workflow.window_days };
    let core = if config.core_features.is_empty() {
        CoreFeatures::MarkedCore
    } else {
        CoreFeatures::Ids(config.core_features.clone())
    };
    let usage = extractor.engagement(&window, &core).await?;
    let metadata_fields: Vec<(String, String)> = config
        .matching
        .iter()
        .filter_map(|r| match r {
            MatchRule::PendoMetadata { group, field } => Some((group.name().to_owned(), field.clone())),
            _ => None,
        })
        .collect();
    let facts = extractor.account_facts(&metadata_fields).await?;
    let pendo_calls = u64::from(extractor.stats().pendo_calls);
    meter.step("extract", None);

    step("Matching accounts", None);
    let outcomes = match_accounts(ctx, workflow, config, &facts, &usage, now, options.dry_run, &budget).await?;
    meter.step("match", Some("read_accounts"));

    step("Detecting changes", None);
    let written = ctx.store.fingerprints(&scope(&workflow.name)).await?;
    let usage_by_id: HashMap<&str, &AccountUsage> = usage.iter().map(|u| (u.account_id.as_str(), u)).collect();
    let stamp: Vec<(String, Value)> =
        config.fields.get(Metric::UpdatedAt).map(|f| vec![(f.to_owned(), metrics::timestamp(now))]).unwrap_or_default();
    let mut changes: Vec<Change> = Vec::new();
    let (mut matched, mut unmatched, mut ambiguous, mut unchanged) = (0, 0, 0, 0);
    let mut skipped_outcomes = Vec::new();
    let mut ambiguous_samples = Vec::new();
    for (pendo_id, outcome) in &outcomes {
        match outcome {
            Outcome::Matched { salesforce_id, .. } => {
                matched += 1;
                // An account matched but silent in the window has zero engagement, and
                // Salesforce should say so rather than keep last month's figures.
                let zero = AccountUsage { account_id: pendo_id.clone(), ..Default::default() };
                let u = usage_by_id.get(pendo_id.as_str()).copied().unwrap_or(&zero);
                let desired = Desired {
                    key: pendo_id.clone(),
                    salesforce_id: salesforce_id.clone(),
                    fields: metrics::field_values(&config.fields, &config.score, u),
                };
                match change::diff(&written, &desired, &stamp) {
                    Some(c) => changes.push(c),
                    None => unchanged += 1,
                }
            }
            Outcome::Ambiguous { candidates, reason, .. } => {
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
                    key: pendo_id.clone(),
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
    drop(written);
    meter.step("diff", None);

    step("Checking the config against Salesforce", None);
    let quarantine = preflight(ctx, workflow, &changes, options.dry_run).await?;
    meter.step("preflight", Some("preflight"));
    let riders: Vec<&str> = stamp.iter().map(|(f, _)| f.as_str()).collect();
    let (changes, held) = deliver::hold_back(&quarantine, OBJECT, &riders, changes);
    skipped_outcomes.extend(held.iter().map(|h| RecordOutcome {
        object: OBJECT.into(),
        key: h.change.key.clone(),
        salesforce_id: Some(h.change.salesforce_id.clone()),
        action: Action::Skipped,
        changes: vec![],
        error_code: Some("QUARANTINED".into()),
        message: Some(h.reason.clone()),
    }));
    let mut fields_changed: BTreeMap<String, usize> = BTreeMap::new();
    for c in &changes {
        for (f, _) in &c.fields {
            *fields_changed.entry(f.clone()).or_default() += 1;
        }
    }
    crate::testhook::crash_point("gather");

    let reads_spent: u64 = meter.calls.values().sum();
    // `available` was measured after the /limits read, so only later reads come off it.
    let allowance = Allowance { calls: budget.available.saturating_sub(reads_spent.saturating_sub(limits_calls)) };
    let plan = plan::plan(changes.len(), workflow.max_latency, allowance, &CostModel::default());
    let samples = changes
        .iter()
        .take(10)
        .map(|c| Sample {
            pendo_account: c.key.clone(),
            salesforce_id: c.salesforce_id.clone(),
            fields: c.fields.clone(),
        })
        .collect();
    let mut report = RunReport {
        run_id,
        workflow: workflow.name.clone(),
        dry_run: options.dry_run,
        state: "planned".into(),
        pendo_accounts: outcomes.len(),
        matched,
        unmatched,
        ambiguous,
        unchanged,
        changed: changes.len(),
        fields_changed,
        written: 0,
        failed: 0,
        deferred: plan.deferred,
        plan: plan.clone(),
        api_calls: BTreeMap::new(),
        pendo_calls,
        budget: budget.clone(),
        timings: Vec::new(),
        samples,
        failures: Vec::new(),
        ambiguous_samples,
        preflight: super::PreflightReport { problems: quarantine.problems().to_vec(), records_held_back: held.len() },
    };
    if options.dry_run {
        report.budget.this_run = meter.calls.values().sum();
        report.api_calls = meter.calls;
        report.timings = meter.timings;
        return Ok(report);
    }
    let Some(run_id) = run_id else { return Ok(report) };

    step("Writing to Salesforce", Some(changes.len().min(plan.send) as u64));
    let advance = |n: usize| {
        if let Some(p) = progress {
            p.advance_to(n as u64);
        }
    };
    let super::update::Updated { delivery, deferred } =
        super::update::deliver(ctx, &workflow.name, OBJECT, &plan, changes, &budget, &mut meter, now, &advance).await?;

    report.written = delivery.written.len();
    report.failed = delivery.failed.len();
    report.deferred = deferred.len();
    report.failures = delivery
        .failed
        .iter()
        .take(10)
        .map(|f| FailureSample {
            salesforce_id: f.change.salesforce_id.clone(),
            code: f.code.clone(),
            message: f.message.clone(),
        })
        .collect();
    step("Recording the run", None);
    record(ctx, &workflow.name, run_id, delivery, &deferred, skipped_outcomes, now).await?;
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

/// Matches every Pendo account, reading Salesforce only when the cached matches are not enough.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn match_accounts(
    ctx: &Context,
    workflow: &Workflow,
    config: &EngagementConfig,
    facts: &[AccountFacts],
    usage: &[AccountUsage],
    now: DateTime<Utc>,
    dry_run: bool,
    budget: &budget::BudgetReport,
) -> Result<BTreeMap<String, Outcome>, RunError> {
    let cached = ctx.store.id_map(&workflow.name).await?;
    let recheck = chrono::Duration::from_std(config.recheck_matches_after).unwrap_or(chrono::Duration::days(7));
    let cached: HashMap<&str, &IdMapEntry> = cached.iter().map(|e| (e.pendo_id.as_str(), e)).collect();
    let mut ids: HashSet<&str> = facts.iter().map(|f| f.account_id.as_str()).collect();
    ids.extend(usage.iter().map(|u| u.account_id.as_str()));
    let fresh = |id: &str| cached.get(id).is_some_and(|e| e.pinned || now - e.checked_at < recheck);
    // Two cached matches onto one Account (a person pinned one of them since the last read)
    // need the full settlement, which only a fresh read applies.
    let mut claimed = HashSet::new();
    let shared = cached
        .values()
        .filter(|e| e.status == MatchStatus::Matched)
        .filter_map(|e| e.salesforce_id.as_deref())
        .any(|sf| !claimed.insert(sf));
    if !shared && ids.iter().all(|id| fresh(id)) {
        return Ok(ids.into_iter().filter_map(|id| cached.get(id).map(|e| (id.to_owned(), outcome_of(e)))).collect());
    }
    let external = config.matching.iter().find_map(|r| match r {
        MatchRule::ExternalId { field } => Some(field.as_str()),
        _ => None,
    });
    let website = config.matching.iter().find_map(|r| match r {
        MatchRule::EmailDomain { website_field, .. } => Some(website_field.as_str()),
        _ => None,
    });
    let rows = accounts::read(&ctx.salesforce, external, website, budget.available).await?;
    let accounts = Accounts::new(rows);
    let pins: HashMap<String, String> = cached
        .values()
        .filter(|e| e.pinned)
        .filter_map(|e| Some((e.pendo_id.clone(), e.salesforce_id.clone()?)))
        .collect();
    // Accounts with usage but no facts (no visitors with metadata) still get the id rules.
    let mut all_facts: Vec<AccountFacts> = facts.to_vec();
    let known: HashSet<&str> = facts.iter().map(|f| f.account_id.as_str()).collect();
    all_facts.extend(
        usage
            .iter()
            .filter(|u| !known.contains(u.account_id.as_str()))
            .map(|u| AccountFacts { account_id: u.account_id.clone(), ..Default::default() }),
    );
    let outcomes = matching::match_all(&rules(config), &all_facts, &accounts, &pins);
    if !dry_run {
        let entries: Vec<IdMapEntry> =
            outcomes.iter().map(|(id, o)| entry_of(&workflow.name, id, o, pins.contains_key(id), now)).collect();
        ctx.store.put_id_map(&entries).await?;
    }
    Ok(outcomes)
}

fn outcome_of(e: &IdMapEntry) -> Outcome {
    let rule = e.rule.clone().unwrap_or_default();
    match (&e.status, &e.salesforce_id) {
        (MatchStatus::Matched, Some(id)) => Outcome::Matched { salesforce_id: id.clone(), rule },
        (MatchStatus::Ambiguous, _) => {
            Outcome::Ambiguous { rule, candidates: e.candidates.clone(), reason: "cached: ambiguous".into() }
        }
        _ => Outcome::Unmatched { reason: "cached: unmatched".into() },
    }
}

fn entry_of(workflow: &str, pendo_id: &str, o: &Outcome, pinned: bool, now: DateTime<Utc>) -> IdMapEntry {
    let (status, salesforce_id, rule, candidates) = match o {
        Outcome::Matched { salesforce_id, rule } => {
            (MatchStatus::Matched, Some(salesforce_id.clone()), Some(rule.clone()), vec![])
        }
        Outcome::Ambiguous { rule, candidates, reason } => {
            (MatchStatus::Ambiguous, None, Some(format!("{rule}: {reason}")), candidates.clone())
        }
        Outcome::Unmatched { reason } => (MatchStatus::Unmatched, None, Some(reason.clone()), vec![]),
    };
    IdMapEntry {
        workflow: workflow.to_owned(),
        pendo_id: pendo_id.to_owned(),
        status,
        salesforce_id,
        rule,
        candidates,
        pinned,
        checked_at: now,
    }
}

/// Records written per store transaction: each chunk's outcomes and fingerprints commit
/// together, and memory holds one chunk's rows at a time rather than the whole run's.
const RECORD_CHUNK: usize = 5_000;

/// Keeps what happened: outcomes and fingerprints in transactions of [`RECORD_CHUNK`] records
/// (a record counts as written only once its fingerprints are stored), then the failure ledger.
async fn record(
    ctx: &Context,
    workflow: &str,
    run_id: RunId,
    delivery: deliver::Delivery,
    deferred: &[Change],
    mut outcomes: Vec<RecordOutcome>,
    now: DateTime<Utc>,
) -> Result<(), RunError> {
    let scope = scope(workflow);
    let changes_of = |c: &Change| -> Vec<FieldChange> {
        c.fields.iter().map(|(f, v)| FieldChange { field: f.clone(), before: None, after: v.clone() }).collect()
    };
    let mut ledger = super::ledger::Ledger::default();
    ledger.delivery(OBJECT, &delivery, |c| &c.key);
    let deliver::Delivery { written, failed, .. } = delivery;
    let mut written = written.into_iter().peekable();
    while written.peek().is_some() {
        let mut chunk_outcomes = Vec::with_capacity(RECORD_CHUNK);
        let mut prints = Vec::new();
        let chunk: Vec<Change> = written.by_ref().take(RECORD_CHUNK).collect();
        let keys: Vec<String> = chunk.iter().map(|c| c.salesforce_id.clone()).collect();
        let mut before = ctx.store.written_values(&scope, &keys).await?;
        for c in chunk {
            let old = before.remove(&c.salesforce_id).unwrap_or_default();
            let changes = c
                .fields
                .iter()
                .map(|(f, v)| FieldChange {
                    field: f.clone(),
                    before: old.iter().find(|(of, _)| of == f).map(|(_, ov)| ov.clone()),
                    after: v.clone(),
                })
                .collect();
            prints.extend(c.prints.iter().map(|(field, p)| FingerprintPut {
                scope: scope.clone(),
                key: c.salesforce_id.clone(),
                field: field.clone(),
                fingerprint: *p,
                written_at: now,
                value: c.fields.iter().find(|(f, _)| f == field).map(|(_, v)| v.clone()),
            }));
            chunk_outcomes.push(RecordOutcome {
                object: OBJECT.into(),
                changes,
                key: c.key,
                salesforce_id: Some(c.salesforce_id),
                action: Action::Updated,
                error_code: None,
                message: None,
            });
        }
        ctx.store.record_outcomes(run_id, &chunk_outcomes, &prints).await?;
    }
    for f in &failed {
        outcomes.push(RecordOutcome {
            object: OBJECT.into(),
            key: f.change.key.clone(),
            salesforce_id: Some(f.change.salesforce_id.clone()),
            action: Action::Failed,
            changes: changes_of(&f.change),
            error_code: Some(f.code.clone()),
            message: Some(f.message.clone()),
        });
    }
    for c in deferred {
        outcomes.push(RecordOutcome {
            object: OBJECT.into(),
            key: c.key.clone(),
            salesforce_id: Some(c.salesforce_id.clone()),
            action: Action::Deferred,
            changes: changes_of(c),
            error_code: None,
            message: Some("over the API budget: sent in a later run".into()),
        });
    }
    for chunk in outcomes.chunks(RECORD_CHUNK) {
        ctx.store.record_outcomes(run_id, chunk, &[]).await?;
    }
    ledger.settle(ctx, workflow, run_id, now).await?;
    Ok(())
}
