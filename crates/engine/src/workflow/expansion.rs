//! The expansion-opportunity template: when a matched account crosses an adoption milestone,
//! an expansion Opportunity for the account owner and a Task telling them why; at most one open
//! per account and milestone, counting Opportunities people created (found by the configured
//! `existing` rule before anything is created).
//!
//! Per (account, milestone) the store keeps how many Opportunities usagesync has created
//! (fingerprint scope `{workflow}:expansions`), which numbers the next key:
//! `usagesync:{workflow}:expansion:{account}:{milestone}:{n}`. When the open one closes and the
//! milestone still holds, the next number makes a new one; a crash before the count is stored
//! re-runs with the same key, which [`super::create`] settles without a duplicate.

use crate::config::template;
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

use super::create::{self, Group, Link, NewRecord};
use super::{Context, Meter, RunError, RunOptions, RunReport, Sample};
use super::{expansion_open, mirror};
use crate::config::{ExpansionConfig, Milestone, MilestoneKind, Workflow};
use crate::extract::expansion::longest_run;
use crate::extract::{AccountUsage, CoreFeatures};
use crate::matching::Outcome;
use crate::store::{Action, FingerprintPut, RecordOutcome, RunId};

pub(crate) async fn run(
    ctx: &Context,
    workflow: &Workflow,
    config: &ExpansionConfig,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    super::recorded(ctx, workflow, options, |now, run_id| body(ctx, workflow, config, options, now, run_id)).await
}

/// The fingerprint scope holding the per-(account, milestone) creation counts.
pub fn count_scope(workflow: &str) -> String {
    format!("{workflow}:expansions")
}

/// The key of the `number`th expansion Opportunity (or its Task) for an account and milestone.
pub fn opportunity_key(workflow: &str, pendo_id: &str, milestone: &str, number: u64, object: &str) -> String {
    let kind = if object == "Task" { "expansion-task" } else { "expansion" };
    create::key(&["usagesync", workflow, kind, pendo_id, milestone, &number.to_string()])
}

/// A crossed milestone, before anything is created.
struct Crossing {
    pendo_id: String,
    account_id: String,
    milestone: String,
    evidence: String,
    active_visitors: u64,
}

struct AccountRow {
    name: String,
    owner: String,
    fields: Map<String, Value>,
}

async fn body(
    ctx: &Context,
    workflow: &Workflow,
    config: &ExpansionConfig,
    options: &RunOptions,
    now: DateTime<Utc>,
    run_id: Option<RunId>,
) -> Result<RunReport, RunError> {
    let mut meter = Meter::new(&ctx.salesforce);
    // Read when a stage first needs it: a run that makes nothing reads no /limits.
    let lazy = crate::budget::Budget::new(now);

    let extractor = ctx.extractor();
    let window = workflow.window(now);
    let core = CoreFeatures::configured(&config.accounts.core_features);
    let (usage, kept) =
        super::usage::gather(ctx, &workflow.name, &extractor, &window, &core, options.dry_run, true).await?;
    let mut feature_visitors: HashMap<&str, BTreeMap<String, u64>> = HashMap::new();
    // The features' names, so the text people read names them rather than showing Pendo ids.
    let mut feature_names = HashMap::new();
    let mut daily = None;
    for m in &config.milestones {
        match &m.kind {
            MilestoneKind::FeatureVisitors { features, .. } => {
                if feature_names.is_empty() {
                    feature_names = extractor.feature_names().await?;
                }
                feature_visitors.insert(m.name.as_str(), extractor.feature_visitors(&window, features).await?);
            }
            MilestoneKind::SustainedUsage { .. } if daily.is_none() => {
                daily = Some(match &kept {
                    Some(state) => state.daily_events(),
                    None => extractor.daily_events(&window).await?,
                });
            }
            _ => {}
        }
    }
    drop(kept);
    let daily = daily.unwrap_or_default();
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
    let matched: Vec<(String, String)> = outcomes
        .iter()
        .filter_map(|(p, o)| match o {
            Outcome::Matched { salesforce_id, .. } => Some((p.clone(), salesforce_id.clone())),
            _ => None,
        })
        .collect();
    let usage: HashMap<&str, &AccountUsage> = usage.iter().map(|u| (u.account_id.as_str(), u)).collect();

    // Salesforce Account fields: names and owners for crossings, seats for the seat milestones
    // (only accounts with someone active can cross those).
    let seat_fields: Vec<&str> = config
        .milestones
        .iter()
        .filter_map(|m| match &m.kind {
            MilestoneKind::SeatShare { seats_field, .. } => Some(seats_field.as_str()),
            _ => None,
        })
        .collect();
    let mut crossings = Vec::new();
    let mut seat_rows: HashSet<&str> = HashSet::new();
    for (pendo_id, account_id) in &matched {
        let active = usage.get(pendo_id.as_str()).map_or(0, |u| u.active_visitors);
        if !seat_fields.is_empty() && active > 0 {
            seat_rows.insert(account_id);
        }
        for m in &config.milestones {
            let names = &feature_names;
            if let Some(evidence) =
                crossed_in_pendo(m, pendo_id, &feature_visitors, names, &daily, workflow.window_days())
            {
                crossings.push(Crossing {
                    pendo_id: pendo_id.clone(),
                    account_id: account_id.clone(),
                    milestone: m.name.clone(),
                    evidence,
                    active_visitors: active,
                });
            }
        }
    }
    let mut ids: Vec<&str> = seat_rows.into_iter().collect();
    ids.sort_unstable();
    let mut rows = read_accounts(ctx, &seat_fields, &ids).await?;
    for (pendo_id, account_id) in &matched {
        let active = usage.get(pendo_id.as_str()).map_or(0, |u| u.active_visitors);
        let Some(row) = rows.get(account_id) else { continue };
        for m in &config.milestones {
            let MilestoneKind::SeatShare { seats_field, min_share } = &m.kind else { continue };
            let seats = row.fields.get(seats_field).and_then(Value::as_f64).unwrap_or(0.0);
            if seats > 0.0 && active as f64 >= seats * min_share {
                crossings.push(Crossing {
                    pendo_id: pendo_id.clone(),
                    account_id: account_id.clone(),
                    milestone: m.name.clone(),
                    evidence: format!(
                        "{active} active visitors in the last {} days against {seats} contracted seats ({seats_field}): {:.0}% used, milestone at {:.0}%",
                        workflow.window_days(),
                        100.0 * active as f64 / seats,
                        100.0 * min_share
                    ),
                    active_visitors: active,
                });
            }
        }
    }
    meter.step("milestones", Some("read_accounts"));

    let scope = count_scope(&workflow.name);
    let count_key = |c: &Crossing| format!("{}:{}", c.pendo_id, c.milestone);
    let count_keys: Vec<String> = crossings.iter().map(count_key).collect();
    let stored = ctx.store.written_values(&scope, &count_keys).await?;
    let counts: HashMap<String, u64> = stored
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.iter().find(|(f, _)| f == "count")?.1.as_u64()?)))
        .collect();
    // Open expansion Opportunities already there, whoever made them (with their keys, so that
    // one this workflow made for the next number, whose group is not complete, is recognised):
    // from the mirror, and from Salesforce only what changed since.
    let mut held = mirror::gather(ctx, &workflow.name, expansion_open::spec(config), now).await?;
    let open = expansion_open::open(&held.mirror);
    meter.step("existing", Some("read_opportunities"));
    crate::testhook::crash_point("gather");

    let mut decisions = Vec::new();
    let mut to_create = Vec::new();
    for c in crossings {
        let number = counts.get(&count_key(&c)).copied().unwrap_or(0) + 1;
        let ours = opportunity_key(&workflow.name, &c.pendo_id, &c.milestone, number, "Opportunity");
        let found = open.get(&(c.account_id.clone(), c.milestone.clone())).map(Vec::as_slice).unwrap_or_default();
        match found.iter().find(|(_, key)| !key.eq_ignore_ascii_case(&ours)) {
            // Someone's open Opportunity (or one of ours already counted): never a second one.
            Some((opp, _)) => decisions.push(RecordOutcome {
                object: "Opportunity".into(),
                key: c.pendo_id.clone(),
                salesforce_id: Some(opp.clone()),
                action: Action::Skipped,
                changes: vec![],
                error_code: None,
                message: Some(format!(
                    "milestone {} crossed, but open expansion Opportunity {opp} already exists; {}",
                    c.milestone, c.evidence
                )),
            }),
            // None open, or only the one this number made before its group was complete: the
            // group is made (or completed: the Opportunity adopted, the Task made).
            None => to_create.push((c, number)),
        }
    }
    // Names and owners only of the accounts that get a group.
    let mut missing: Vec<&str> =
        to_create.iter().map(|(c, _)| c.account_id.as_str()).filter(|a| !rows.contains_key(*a)).collect();
    missing.sort_unstable();
    missing.dedup();
    let names = read_accounts(ctx, &[], &missing).await?;
    rows.extend(names);
    meter.step("accounts", Some("read_accounts"));
    let groups: Vec<Group> = to_create
        .iter()
        .map(|(c, number)| {
            let row = rows.get(&c.account_id);
            let name = row.map_or(c.pendo_id.as_str(), |r| r.name.as_str());
            let owner = row.map(|r| r.owner.clone()).unwrap_or_default();
            let record = |object: &str, fields, link| NewRecord {
                object: object.to_owned(),
                key: opportunity_key(&workflow.name, &c.pendo_id, &c.milestone, *number, object),
                key_field: config.key_field.clone(),
                fields,
                link,
            };
            let mut records = vec![record("Opportunity", opportunity_fields(config, c, name, &owner, now), None)];
            if config.task {
                let link = Link { field: "WhatId".into(), to: 0 };
                records.push(record("Task", task_fields(c, name, &owner, now), Some(link)));
            }
            Group {
                subject: c.pendo_id.clone(),
                account_id: c.account_id.clone(),
                note: format!("milestone {} crossed: {}", c.milestone, c.evidence),
                records,
            }
        })
        .collect();
    let writing = !groups.is_empty() || options.dry_run;
    let (budget, allowance) = super::weigh(ctx, &lazy, &mut meter, writing, None).await?;
    let send = create::fitting(&groups, allowance, &create::not_unique);
    let samples: Vec<Sample> = groups
        .iter()
        .take(10)
        .map(|g| Sample {
            pendo_account: g.subject.clone(),
            salesforce_id: g.account_id.clone(),
            fields: g.records[0].fields.clone().into_iter().collect(),
        })
        .collect();
    let mut report = RunReport::new(&workflow.name, options.dry_run, run_id, budget.clone());
    report.count_matches(&outcomes);
    report.unchanged = decisions.len();
    report.changed = groups.len();
    report.fields_changed = BTreeMap::from([("Opportunity".to_owned(), groups.len())]);
    report.deferred = groups.len() - send;
    report.plan =
        crate::plan::plan(0, workflow.max_latency, crate::plan::Allowance { calls: allowance }, &Default::default());
    report.pendo_calls = pendo_calls;
    report.samples = samples;
    let Some(run_id) = run_id else { return Ok(report.planned(meter)) };
    ctx.store.record_outcomes(run_id, &decisions, &[]).await?;

    let results = create::deliver(ctx, workflow, &groups, allowance, &budget, &mut meter, &mut report, now).await?;
    report.deferred = 0;
    let outs = create::history(&groups, &results, &mut report);
    // The count moves on only once the whole group exists, so an interrupted group is completed
    // under the same keys by the next run.
    let puts: Vec<FingerprintPut> = to_create
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.complete())
        .map(|((c, number), _)| FingerprintPut {
            scope: scope.clone(),
            key: format!("{}:{}", c.pendo_id, c.milestone),
            field: "count".into(),
            fingerprint: *number,
            written_at: now,
            value: Some(json!(number)),
        })
        .collect();
    for ((c, _), (g, r)) in to_create.iter().zip(groups.iter().zip(&results)) {
        if let Some(id) = r.made.first().and_then(|m| m.id()) {
            held.add(id, expansion_open::values(&c.account_id, &g.records[0].key), Some(&c.milestone));
        }
    }
    crate::testhook::crash_point("record");
    ctx.store.record_outcomes(run_id, &outs, &puts).await?;
    // What the run made is read once now, so the next run's change query starts past it.
    if results.iter().any(|r| !r.made.is_empty()) {
        held.follow().await?;
        meter.step("follow", Some("read_opportunities"));
    }
    held.store(&workflow.name, options.dry_run).await?;
    create::ledger(&groups, &results).settle(ctx, &workflow.name, run_id, now).await?;
    meter.step("record", None);
    super::settle(ctx, &workflow.name, now, meter, &mut report).await?;
    Ok(report)
}

/// Whether a Pendo-side milestone holds for the account, with the evidence; seat milestones
/// need the Account and are judged later.
fn crossed_in_pendo(
    m: &Milestone,
    pendo_id: &str,
    feature_visitors: &HashMap<&str, BTreeMap<String, u64>>,
    names: &HashMap<String, String>,
    daily: &BTreeMap<String, BTreeMap<i64, u64>>,
    window_days: u32,
) -> Option<String> {
    match &m.kind {
        MilestoneKind::FeatureVisitors { features, min_visitors } => {
            let n = feature_visitors.get(m.name.as_str()).and_then(|v| v.get(pendo_id)).copied().unwrap_or(0);
            (n >= *min_visitors).then(|| {
                format!(
                    "{n} visitors used {} in the last {window_days} days (milestone: {min_visitors})",
                    crate::text::feature_list(features, names)
                )
            })
        }
        MilestoneKind::SustainedUsage { min_daily_events, days } => {
            let run = daily.get(pendo_id).map_or(0, |d| longest_run(d, *min_daily_events));
            (run >= *days).then(|| {
                format!(
                    "{run} consecutive days with at least {min_daily_events} events in the last {window_days} days (milestone: {days} days)"
                )
            })
        }
        MilestoneKind::SeatShare { .. } => None,
    }
}

fn opportunity_fields(
    config: &ExpansionConfig,
    c: &Crossing,
    account_name: &str,
    owner: &str,
    now: DateTime<Utc>,
) -> Map<String, Value> {
    let o = &config.opportunity;
    let mut m = Map::new();
    let name = o.name.replace("{account}", account_name).replace("{milestone}", &c.milestone);
    m.insert("Name".into(), json!(name.chars().take(120).collect::<String>()));
    m.insert("Type".into(), json!(o.opportunity_type));
    m.insert("StageName".into(), json!(o.stage));
    m.insert("CloseDate".into(), json!((now + Duration::days(i64::from(o.close_in_days))).date_naive().to_string()));
    if o.amount_base.is_some() || o.amount_per_active_visitor.is_some() {
        let amount =
            o.amount_base.unwrap_or(0.0) + o.amount_per_active_visitor.unwrap_or(0.0) * c.active_visitors as f64;
        m.insert("Amount".into(), json!((amount * 100.0).round() / 100.0));
    }
    m.insert("AccountId".into(), json!(c.account_id));
    if !owner.is_empty() {
        m.insert("OwnerId".into(), json!(owner));
    }
    if let Some(f) = &o.milestone_field {
        m.insert(f.clone(), json!(c.milestone));
    }
    m.insert("Description".into(), json!(format!("Milestone {} crossed: {}.", c.milestone, c.evidence)));
    m
}

fn task_fields(c: &Crossing, account_name: &str, owner: &str, now: DateTime<Utc>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Subject".into(), json!(format!("Expansion opportunity: {account_name} ({})", c.milestone)));
    m.insert("Priority".into(), json!("Normal"));
    m.insert("Status".into(), json!("Not Started"));
    m.insert("ActivityDate".into(), json!((now + Duration::days(7)).date_naive().to_string()));
    m.insert(
        "Description".into(),
        json!(format!(
            "{account_name} crossed the {} adoption milestone: {}. An expansion Opportunity was opened for you.",
            c.milestone, c.evidence
        )),
    );
    if !owner.is_empty() {
        m.insert("OwnerId".into(), json!(owner));
    }
    m
}

/// Account id → name, owner and the asked-for fields.
async fn read_accounts(ctx: &Context, extra: &[&str], ids: &[&str]) -> Result<HashMap<String, AccountRow>, RunError> {
    let mut out = HashMap::new();
    let mut fields: Vec<&str> = vec!["Id", "Name", "OwnerId"];
    fields.extend(extra.iter().filter(|f| !["Id", "Name", "OwnerId"].contains(f)));
    fields.dedup();
    for chunk in ids.chunks(300) {
        let list = chunk.iter().map(|id| salesforce::soql::quote(id)).collect::<Vec<_>>().join(", ");
        let soql = format!("SELECT {} FROM Account WHERE Id IN ({list})", fields.join(", "));
        let rows: Vec<Value> = ctx
            .salesforce
            .query_collect(soql)
            .await
            .map_err(|source| RunError::Salesforce { what: "Accounts for expansion milestones", source })?;
        for r in rows {
            let Value::Object(map) = r else { continue };
            let text = |f: &str| map.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
            out.insert(text("Id"), AccountRow { name: text("Name"), owner: text("OwnerId"), fields: map.clone() });
        }
    }
    Ok(out)
}

/// The expansion-opportunity template, for the registry ([`crate::config::template`]).
impl template::Spec for ExpansionConfig {
    fn keys() -> &'static [&'static str] {
        &["matching", "recheck_matches_after", "core_features", "score", "fields", "expansion"]
    }

    fn build(key: &str, w: &template::Wire, errors: &mut template::Errors) -> Option<Self> {
        crate::config::expansion::build(key, w, errors)
    }

    fn to_wire(&self, out: &mut template::Wire) {
        out.expansion = Some(crate::config::expansion::to_wire(self));
        crate::config::validate::accounts_to_wire(&self.accounts, out);
    }

    fn flows(&self, _key: &dyn Fn(&str) -> String) -> template::Flows {
        // Its Tasks, Cases and Opportunities are records it creates, each under its own key;
        // no field of an existing record is its.
        template::Flows::to_salesforce(vec![], vec![])
    }

    fn requirements(&self, reqs: &mut template::Reqs) {
        use crate::config::MilestoneKind;
        use template::{Expect, Use};
        reqs.accounts(&self.accounts);
        for (i, m) in self.milestones.iter().enumerate() {
            if let MilestoneKind::SeatShare { seats_field, .. } = &m.kind {
                let key = format!("expansion.milestones[{i}].seat_share.seats_field");
                reqs.add("Account", seats_field, Use::Read, Expect::Number, &key);
            }
        }
        let o = &self.opportunity;
        reqs.add("Opportunity", &self.key_field, Use::Key, Expect::Text, "expansion.key_field");
        let kind = Expect::Value(o.opportunity_type.clone());
        reqs.add("Opportunity", "Type", Use::Create, kind, "expansion.opportunity.type");
        let stage = Expect::Value(o.stage.clone());
        reqs.add("Opportunity", "StageName", Use::Create, stage, "expansion.opportunity.stage");
        if o.amount_base.is_some() || o.amount_per_active_visitor.is_some() {
            let leaf = if o.amount_base.is_some() { "amount_base" } else { "amount_per_active_visitor" };
            reqs.add("Opportunity", "Amount", Use::Create, Expect::Number, &format!("expansion.opportunity.{leaf}"));
        }
        if let Some(field) = &o.milestone_field {
            reqs.add("Opportunity", field, Use::Create, Expect::Text, "expansion.opportunity.milestone_field");
        }
        if self.task {
            reqs.add("Task", &self.key_field, Use::Key, Expect::Text, "expansion.key_field");
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context, w: &'a Workflow, options: &'a RunOptions) -> template::RunFuture<'a> {
        Box::pin(run(ctx, w, self, options))
    }
}
