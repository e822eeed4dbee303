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

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

use super::create::{self, Created, NewRecord};
use super::{Context, FailureSample, Meter, RunError, RunOptions, RunReport, Sample, budget, engagement};
use crate::config::{ExpansionConfig, MatchRule, Milestone, MilestoneKind, Workflow};
use crate::extract::expansion::longest_run;
use crate::extract::{AccountUsage, CoreFeatures, Extractor, Window};
use crate::matching::Outcome;
use crate::store::{Action, FieldChange, FingerprintPut, RecordOutcome, RunId};

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
    let budget = budget::today(ctx, now).await?;
    meter.step("budget", Some("read_limits"));
    let limits_calls: u64 = meter.calls.values().sum();

    let extractor = Extractor::new(&ctx.pendo);
    let window = Window { end: now, days: workflow.window_days };
    let core = if config.accounts.core_features.is_empty() {
        CoreFeatures::MarkedCore
    } else {
        CoreFeatures::Ids(config.accounts.core_features.clone())
    };
    let usage = extractor.engagement(&window, &core).await?;
    let mut feature_visitors: HashMap<&str, BTreeMap<String, u64>> = HashMap::new();
    let mut daily = None;
    for m in &config.milestones {
        match &m.kind {
            MilestoneKind::FeatureVisitors { features, .. } => {
                feature_visitors.insert(m.name.as_str(), extractor.feature_visitors(&window, features).await?);
            }
            MilestoneKind::SustainedUsage { .. } if daily.is_none() => {
                daily = Some(extractor.daily_events(&window).await?);
            }
            _ => {}
        }
    }
    let daily = daily.unwrap_or_default();
    let metadata_fields: Vec<(String, String)> = config
        .accounts
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

    let outcomes =
        engagement::match_accounts(ctx, workflow, &config.accounts, &facts, &usage, now, options.dry_run, &budget)
            .await?;
    meter.step("match", Some("read_accounts"));
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
    let mut need_rows: HashSet<String> = HashSet::new();
    for (pendo_id, account_id) in &matched {
        let active = usage.get(pendo_id.as_str()).map_or(0, |u| u.active_visitors);
        if !seat_fields.is_empty() && active > 0 {
            need_rows.insert(account_id.clone());
        }
        for m in &config.milestones {
            if let Some(evidence) = crossed_in_pendo(m, pendo_id, &feature_visitors, &daily, workflow.window_days) {
                need_rows.insert(account_id.clone());
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
    let mut ids: Vec<&str> = need_rows.iter().map(String::as_str).collect();
    ids.sort_unstable();
    let rows = read_accounts(ctx, &seat_fields, &ids).await?;
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
                        workflow.window_days,
                        100.0 * active as f64 / seats,
                        100.0 * min_share
                    ),
                    active_visitors: active,
                });
            }
        }
    }
    meter.step("milestones", Some("read_accounts"));

    // Open expansion Opportunities already there, whoever made them.
    let mut open: HashMap<(String, String), String> = HashMap::new();
    for m in &config.milestones {
        let accounts: Vec<&str> =
            crossings.iter().filter(|c| c.milestone == m.name).map(|c| c.account_id.as_str()).collect();
        for (account, opp) in open_opportunities(ctx, config, &m.name, &accounts).await? {
            open.insert((account, m.name.clone()), opp);
        }
    }
    meter.step("existing", Some("read_opportunities"));

    let scope = count_scope(&workflow.name);
    let count_keys: Vec<String> = crossings.iter().map(|c| format!("{}:{}", c.pendo_id, c.milestone)).collect();
    let counts: HashMap<String, u64> = ctx
        .store
        .written_values(&scope, &count_keys)
        .await?
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.into_iter().find(|(f, _)| f == "count")?.1.as_u64()?)))
        .collect();

    let mut decisions = Vec::new();
    let mut to_create = Vec::new();
    for c in crossings {
        match open.get(&(c.account_id.clone(), c.milestone.clone())) {
            Some(opp) => decisions.push(RecordOutcome {
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
            None => to_create.push(c),
        }
    }
    // Creates go 200 to a Collections call: one batch of Opportunities, one of Tasks.
    let per: u64 = if config.task { 2 } else { 1 };
    let reads: u64 = meter.calls.values().sum::<u64>().saturating_sub(limits_calls);
    let allowance = budget.available.saturating_sub(reads);
    let send = to_create.len().min(usize::try_from((allowance / per).saturating_mul(200)).unwrap_or(usize::MAX));
    let records_for = |c: &Crossing| -> (Map<String, Value>, Map<String, Value>) {
        let row = rows.get(&c.account_id);
        let name = row.map_or(c.pendo_id.as_str(), |r| r.name.as_str());
        let owner = row.map(|r| r.owner.clone()).unwrap_or_default();
        (opportunity_fields(config, c, name, &owner, now), task_fields(c, name, &owner, now))
    };
    let samples: Vec<Sample> = to_create
        .iter()
        .take(10)
        .map(|c| Sample {
            pendo_account: c.pendo_id.clone(),
            salesforce_id: c.account_id.clone(),
            fields: records_for(c).0.into_iter().collect(),
        })
        .collect();
    let mut report = RunReport {
        run_id,
        workflow: workflow.name.clone(),
        dry_run: options.dry_run,
        state: "planned".into(),
        pendo_accounts: outcomes.len(),
        matched: matched.len(),
        unmatched: outcomes.values().filter(|o| matches!(o, Outcome::Unmatched { .. })).count(),
        ambiguous: outcomes.values().filter(|o| matches!(o, Outcome::Ambiguous { .. })).count(),
        unchanged: decisions.len(),
        changed: to_create.len(),
        fields_changed: BTreeMap::from([("Opportunity".to_owned(), to_create.len())]),
        written: 0,
        failed: 0,
        deferred: to_create.len() - send,
        plan: crate::plan::plan(
            0,
            workflow.max_latency,
            crate::plan::Allowance { calls: allowance },
            &Default::default(),
        ),
        api_calls: BTreeMap::new(),
        pendo_calls,
        budget: budget.clone(),
        timings: Vec::new(),
        samples,
        failures: Vec::new(),
        ambiguous_samples: Vec::new(),
        preflight: Default::default(),
    };
    let Some(run_id) = run_id else {
        report.budget.this_run = meter.calls.values().sum();
        report.api_calls = meter.calls;
        report.timings = meter.timings;
        return Ok(report);
    };
    ctx.store.record_outcomes(run_id, &decisions, &[]).await?;

    let mut outs = Vec::new();
    let mut puts = Vec::new();
    for c in &to_create[send..] {
        outs.push(RecordOutcome {
            object: "Opportunity".into(),
            key: c.pendo_id.clone(),
            salesforce_id: Some(c.account_id.clone()),
            action: Action::Deferred,
            changes: vec![],
            error_code: None,
            message: Some(format!("over the API budget: created in a later run; milestone {}", c.milestone)),
        });
    }
    let sending = &to_create[..send];
    let numbers: Vec<u64> = sending
        .iter()
        .map(|c| counts.get(&format!("{}:{}", c.pendo_id, c.milestone)).copied().unwrap_or(0) + 1)
        .collect();
    let mut tasks: Vec<Map<String, Value>> = Vec::new();
    let opps: Vec<NewRecord> = sending
        .iter()
        .zip(&numbers)
        .map(|(c, n)| {
            let (opp, task) = records_for(c);
            tasks.push(task);
            NewRecord {
                object: "Opportunity".into(),
                key: opportunity_key(&workflow.name, &c.pendo_id, &c.milestone, *n, "Opportunity"),
                key_field: config.key_field.clone(),
                fields: opp,
            }
        })
        .collect();
    let made = create::create_many(&ctx.salesforce, ctx.store.as_ref(), &workflow.name, &opps, now).await?;
    // Tasks only for the Opportunities that exist, each on its Opportunity.
    let mut task_records = Vec::new();
    let mut task_of = HashMap::new();
    if config.task {
        for (i, m) in made.iter().enumerate() {
            if let Some(id) = m.id() {
                let mut fields = std::mem::take(&mut tasks[i]);
                fields.insert("WhatId".into(), json!(id));
                task_of.insert(i, task_records.len());
                task_records.push(NewRecord {
                    object: "Task".into(),
                    key: opportunity_key(
                        &workflow.name,
                        &sending[i].pendo_id,
                        &sending[i].milestone,
                        numbers[i],
                        "Task",
                    ),
                    key_field: config.key_field.clone(),
                    fields,
                });
            }
        }
    }
    let made_tasks =
        create::create_many(&ctx.salesforce, ctx.store.as_ref(), &workflow.name, &task_records, now).await?;
    for (i, c) in sending.iter().enumerate() {
        let mut steps = vec![(&opps[i], &made[i])];
        if let Some(&t) = task_of.get(&i) {
            steps.push((&task_records[t], &made_tasks[t]));
        }
        let mut failed = None;
        for (record, created) in steps {
            match created {
                Created::New { id } | Created::Existing { id } => outs.push(RecordOutcome {
                    object: record.object.clone(),
                    key: c.pendo_id.clone(),
                    salesforce_id: Some(id.clone()),
                    action: Action::Created,
                    changes: record
                        .fields
                        .iter()
                        .map(|(f, v)| FieldChange { field: f.clone(), before: None, after: v.clone() })
                        .collect(),
                    error_code: None,
                    message: Some(format!("milestone {} crossed: {}; key {}", c.milestone, c.evidence, record.key)),
                }),
                Created::Refused { code, message } => {
                    failed = Some((record.object.clone(), code.clone(), message.clone()))
                }
                Created::Unknown { message } => {
                    failed = Some((record.object.clone(), "OUTCOME_UNKNOWN".to_owned(), message.clone()));
                }
            }
        }
        match failed {
            None => {
                report.written += 1;
                puts.push(FingerprintPut {
                    scope: scope.clone(),
                    key: format!("{}:{}", c.pendo_id, c.milestone),
                    field: "count".into(),
                    fingerprint: numbers[i],
                    written_at: now,
                    value: Some(json!(numbers[i])),
                });
            }
            Some((object, code, message)) => {
                report.failed += 1;
                if report.failures.len() < 10 {
                    report.failures.push(FailureSample {
                        salesforce_id: c.account_id.clone(),
                        code: code.clone(),
                        message: message.clone(),
                    });
                }
                outs.push(RecordOutcome {
                    object,
                    key: c.pendo_id.clone(),
                    salesforce_id: Some(c.account_id.clone()),
                    action: Action::Failed,
                    changes: vec![],
                    error_code: Some(code),
                    message: Some(format!("{message}; retried next run; milestone {}", c.milestone)),
                });
            }
        }
    }
    ctx.store.record_outcomes(run_id, &outs, &puts).await?;
    meter.step("create", Some("create"));
    super::settle(ctx, &workflow.name, now, meter, &mut report).await?;
    Ok(report)
}

/// Whether a Pendo-side milestone holds for the account, with the evidence; seat milestones
/// need the Account and are judged later.
fn crossed_in_pendo(
    m: &Milestone,
    pendo_id: &str,
    feature_visitors: &HashMap<&str, BTreeMap<String, u64>>,
    daily: &BTreeMap<String, BTreeMap<i64, u64>>,
    window_days: u32,
) -> Option<String> {
    match &m.kind {
        MilestoneKind::FeatureVisitors { features, min_visitors } => {
            let n = feature_visitors.get(m.name.as_str()).and_then(|v| v.get(pendo_id)).copied().unwrap_or(0);
            (n >= *min_visitors).then(|| {
                format!(
                    "{n} visitors used {} in the last {window_days} days (milestone: {min_visitors})",
                    features.join(", ")
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

/// Account id → an open Opportunity of it meeting the `existing` rule for `milestone`.
async fn open_opportunities(
    ctx: &Context,
    config: &ExpansionConfig,
    milestone: &str,
    accounts: &[&str],
) -> Result<Vec<(String, String)>, RunError> {
    let mut out = Vec::new();
    let rule = config.existing.replace("{milestone}", &salesforce::soql::escape_str(milestone));
    for chunk in accounts.chunks(300) {
        let list = chunk.iter().map(|id| salesforce::soql::quote(id)).collect::<Vec<_>>().join(", ");
        let soql = format!(
            "SELECT Id, AccountId FROM Opportunity WHERE IsClosed = false AND AccountId IN ({list}) AND ({rule})"
        );
        let rows: Vec<Value> = ctx
            .salesforce
            .query_collect(soql)
            .await
            .map_err(|source| RunError::Salesforce { what: "open expansion Opportunities", source })?;
        for r in rows {
            let text = |f: &str| r.get(f).and_then(Value::as_str).map(str::to_owned);
            if let (Some(account), Some(id)) = (text("AccountId"), text("Id")) {
                out.push((account, id));
            }
        }
    }
    Ok(out)
}
