//! The engagement-drop-alert template: an account whose engagement score falls below a threshold,
//! or by a configured share against the previous window, or for which a configured signal holds,
//! gets one alert per episode: a high-priority Task, and as configured an Opportunity, a Case and
//! Account field values (reset when the episode closes), with templated text, for the owner the
//! Account's lookup or the owner rule names.
//!
//! # Episodes
//! An account's episode state is kept as [`super::episode`] keeps every template's (key: the
//! Pendo account). An episode opens when the score drops and the
//! alert exists in Salesforce; while it is open nothing new is created; it closes (re-arms) only
//! when the score is back at or above the level fixed when it opened: the alert level plus the
//! hysteresis band.
//!
//! The alert's key is `usagesync:{workflow}:drop:{account}:{episode number}`. The episode is
//! stored only after its records exist, and the number comes from the stored count, so a crash
//! anywhere re-runs with the same key and [`super::create`] finds what was already made.

use crate::config::template;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

use super::create::{self, Group, Link, NewRecord};
use super::episode::{self, capitalised};
pub use super::episode::{Decision, Episode, decide_signal, scope as episode_scope};
use super::{Context, Meter, RunError, RunOptions, RunReport, Sample};
use crate::change::{Change, Desired};
use crate::config::alert::AlertOpportunity;
use crate::config::{DropAlertConfig, Workflow};
use crate::extract::{AccountUsage, CoreFeatures, Window, WindowLength};
use crate::figures;
use crate::matching::Outcome;
use crate::preflight::Quarantine;
use crate::signal;
use crate::store::{Action, FingerprintPut, RecordOutcome, RunId};

/// The pure decision: `score` and `previous` (0–100) against the config and the stored episode.
pub fn decide(config: &DropAlertConfig, episode: &Episode, score: f64, previous: f64) -> Decision {
    if episode.open {
        return if score >= episode.rearm_at {
            Decision::Recovered { number: episode.count }
        } else {
            Decision::StillOpen { number: episode.count }
        };
    }
    let below = config.below.filter(|b| score < *b);
    let fell = config.drop_share.filter(|d| previous > 0.0 && (previous - score) / previous >= *d);
    if below.is_none() && fell.is_none() {
        return Decision::Quiet;
    }
    let mut reasons = Vec::new();
    if let Some(b) = below {
        reasons.push(format!("score {score} is below the alert threshold {b}"));
    }
    if let Some(d) = fell {
        reasons.push(format!(
            "score fell {:.0}% from {previous} to {score} (alert at a {:.0}% drop)",
            100.0 * (previous - score) / previous,
            100.0 * d
        ));
    }
    // Recovery means clearing both alert conditions with room to spare.
    let level = config.below.unwrap_or(0.0).max(config.drop_share.map_or(0.0, |d| previous * (1.0 - d)));
    Decision::Alert {
        number: episode.count + 1,
        reason: reasons.join("; "),
        rearm_at: ((level + config.hysteresis) * 10.0).round().min(1000.0) / 10.0,
    }
}

/// Evaluates the config's `when` (and `rearm_when`) for one account: whether it holds and
/// whether the account re-arms. An expression that fails for this account's figures alerts
/// nothing and closes nothing (the reason goes to its history row).
fn signal(
    config: &DropAlertConfig,
    current: &signal::Figures,
    previous: &signal::Figures,
    now: DateTime<Utc>,
) -> Option<Result<(bool, bool), signal::SignalError>> {
    let when = config.when.as_ref()?;
    Some(episode::signal(when, config.rearm_when.as_ref(), &current.values(now), &previous.values(now)))
}

/// How the open episode of `config` re-arms, for history rows.
fn rearm_rule(config: &DropAlertConfig, episode: &Episode) -> String {
    match &config.when {
        Some(w) => episode::rearm_rule(w, config.rearm_when.as_ref()),
        None => format!("re-arms at {}", episode.rearm_at),
    }
}

pub(crate) async fn run(
    ctx: &Context,
    workflow: &Workflow,
    config: &DropAlertConfig,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    super::recorded(ctx, workflow, options, |now, run_id| body(ctx, workflow, config, options, now, run_id)).await
}

/// An alert this run decided on, before it is sent.
struct Pending {
    pendo_id: String,
    account_id: String,
    number: u64,
    reason: String,
    rearm_at: f64,
    evidence: String,
    current: signal::Figures,
    previous: signal::Figures,
}

/// What alert text is filled from for one account.
struct Filling<'a> {
    config: &'a DropAlertConfig,
    pendo_id: &'a str,
    /// The Account's name, empty when not read.
    name: &'a str,
    reason: &'a str,
    evidence: &'a str,
    figures: HashMap<String, f64>,
    core_features: &'a str,
    subject: Option<String>,
    opened_at: Option<DateTime<Utc>>,
}

impl Filling<'_> {
    fn value(&self, name: &str) -> Option<String> {
        let metric = self.config.when.as_ref().map_or("score", |w| w.metric());
        let figure = |n: &str| self.figures.get(n).map(|v| crate::text::number(*v));
        match name {
            "account" => Some(if self.name.is_empty() { self.pendo_id } else { self.name }.to_owned()),
            "previous_score" => figure("previous.score"),
            "metric" => Some(metric.to_owned()),
            "from" => figure(&format!("previous.{metric}")),
            "to" => figure(metric),
            "reason" => Some(capitalised(self.reason)),
            "evidence" => Some(self.evidence.to_owned()),
            "core_features" => Some(self.core_features.to_owned()),
            "subject" => self.subject.clone(),
            "opened_at" => self.opened_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            other => figure(other),
        }
    }

    fn fill(&self, text: &str) -> String {
        crate::text::render(text, &|n| self.value(n))
    }

    /// Field values with their text filled in.
    fn fields(&self, fields: &[(String, Value)]) -> Vec<(String, Value)> {
        fields
            .iter()
            .map(|(f, v)| match v {
                Value::String(t) => (f.clone(), json!(self.fill(t))),
                other => (f.clone(), other.clone()),
            })
            .collect()
    }
}

async fn body(
    ctx: &Context,
    workflow: &Workflow,
    config: &DropAlertConfig,
    options: &RunOptions,
    now: DateTime<Utc>,
    run_id: Option<RunId>,
) -> Result<RunReport, RunError> {
    let mut meter = Meter::new(&ctx.salesforce);
    // Read when a stage first needs it: a run with no alert to make and cached matches makes
    // no Salesforce call at all.
    let lazy = crate::budget::Budget::new(now);

    let extractor = ctx.extractor();
    let core = CoreFeatures::configured(&config.accounts.core_features);
    let window = workflow.window(now);
    let current =
        super::usage::gather(ctx, &workflow.name, &extractor, &window, &core, options.dry_run, false).await?.0;
    let previous = extractor.engagement(&window.before(), &core).await?;
    meter.step("extract", None);

    let outcomes = crate::matching::match_accounts(
        ctx,
        workflow,
        &config.accounts,
        crate::matching::Facts::Lazy(&extractor),
        &current,
        now,
        options.dry_run,
        &lazy,
    )
    .await?;
    meter.step("match", Some("read_accounts"));

    let matched: Vec<(String, String)> = outcomes
        .iter()
        .filter_map(|(p, o)| match o {
            Outcome::Matched { salesforce_id, .. } => Some((p.clone(), salesforce_id.clone())),
            _ => None,
        })
        .collect();
    let keys: Vec<String> = matched.iter().map(|(p, _)| p.clone()).collect();
    let episodes = episode::load(ctx, &workflow.name, &keys).await?;
    let by_id = |list: &[AccountUsage]| -> HashMap<String, AccountUsage> {
        list.iter().map(|u| (u.account_id.clone(), u.clone())).collect()
    };
    let (current, previous) = (by_id(&current), by_id(&previous));
    let mut alerts = Vec::new();
    let mut decisions = Vec::new();
    let mut episode_puts = Vec::new();
    // Account fields the episodes want, whatever this run creates.
    let mut field_values: Vec<Desired> = Vec::new();
    // And the Pendo account's metadata, keyed by the Pendo account on both sides.
    let mut pendo_values: Vec<Desired> = Vec::new();
    let want = |account_id: &str, pendo_id: &str, fields: &[(String, Value)], out: &mut Vec<Desired>| {
        if !fields.is_empty() {
            out.push(Desired {
                key: pendo_id.to_owned(),
                salesforce_id: account_id.to_owned(),
                fields: crate::change::named(fields.iter().cloned()),
            });
        }
    };
    for (pendo_id, account_id) in &matched {
        let zero = AccountUsage { account_id: pendo_id.clone(), ..Default::default() };
        let now_u = current.get(pendo_id).unwrap_or(&zero);
        let prev_u = previous.get(pendo_id).unwrap_or(&zero);
        let score = figures::score(&config.accounts.score, now_u);
        let prev_score = figures::score(&config.accounts.score, prev_u);
        let episode = episodes.get(pendo_id).cloned().unwrap_or_default();
        let evidence = evidence(pendo_id, prev_u, now_u, prev_score, score, &window);
        let figures = |score: f64, usage: &AccountUsage| signal::Figures { score, usage: usage.clone() };
        let decided = match signal(config, &figures(score, now_u), &figures(prev_score, prev_u), now) {
            None => decide(config, &episode, score, prev_score),
            Some(Ok((holds, rearms))) => {
                decide_signal(&episode, holds, rearms, config.when.as_ref().map_or("", |w| w.text()))
            }
            Some(Err(e)) => {
                decisions.push(decision(pendo_id, account_id, Action::Skipped, format!("{e}; {evidence}")));
                continue;
            }
        };
        match decided {
            // A closed episode's reset values stay wanted: one Salesforce refused is sent again.
            Decision::Quiet => {
                want(account_id, pendo_id, &episode.fields, &mut field_values);
                want(pendo_id, pendo_id, &episode.pendo_fields, &mut pendo_values);
            }
            Decision::Alert { number, reason, rearm_at } => alerts.push(Pending {
                pendo_id: pendo_id.clone(),
                account_id: account_id.clone(),
                number,
                reason,
                rearm_at,
                evidence,
                current: figures(score, now_u),
                previous: figures(prev_score, prev_u),
            }),
            Decision::StillOpen { number } => {
                want(account_id, pendo_id, &episode.fields, &mut field_values);
                want(pendo_id, pendo_id, &episode.pendo_fields, &mut pendo_values);
                decisions.push(decision(
                    pendo_id,
                    account_id,
                    Action::Unchanged,
                    format!(
                        "episode {number} still open (score {score}, {}): no new alert; {evidence}",
                        rearm_rule(config, &episode)
                    ),
                ));
            }
            Decision::Recovered { number } => {
                decisions.push(decision(
                    pendo_id,
                    account_id,
                    Action::Skipped,
                    match &config.when {
                        Some(_) => format!(
                            "recovered ({}): episode {number} closed, alerts re-armed; {evidence}",
                            rearm_rule(config, &episode)
                        ),
                        None => format!(
                            "recovered: score {score} is at or above {}; episode {number} closed, alerts re-armed; {evidence}",
                            episode.rearm_at
                        ),
                    },
                ));
                // Reset values are rendered once, at closing (the Account's name is not read
                // for it: `{account}` is the Pendo account there).
                let filling = Filling {
                    config,
                    pendo_id,
                    name: "",
                    reason: "recovered",
                    evidence: &evidence,
                    figures: signal::placeholder_values(&figures(score, now_u), &figures(prev_score, prev_u), now),
                    core_features: "",
                    subject: None,
                    opened_at: episode.opened_at,
                };
                let reset = filling.fields(&config.reset_fields);
                want(account_id, pendo_id, &reset, &mut field_values);
                let pendo_reset = filling.fields(&config.reset_pendo_fields);
                want(pendo_id, pendo_id, &pendo_reset, &mut pendo_values);
                let closed =
                    Episode { open: false, records: Vec::new(), fields: reset, pendo_fields: pendo_reset, ..episode };
                episode_puts.push(episode::put(&workflow.name, pendo_id, &closed, now));
            }
        }
    }
    meter.step("decide", None);

    // Owners and names, only for the accounts that alert.
    let mut owners: HashMap<String, (String, String, String)> = HashMap::new();
    let mut rule_owner = None;
    let mut core_features = String::new();
    if !alerts.is_empty() {
        let ids: Vec<&str> = alerts.iter().map(|a| a.account_id.as_str()).collect();
        owners = read_owners(ctx, config, &ids).await?;
        rule_owner = episode::owner_by_rule(ctx, &workflow.name, &config.owner, now, &mut episode_puts).await?;
        if config.names_core_features() {
            core_features = extractor.core_feature_names(&core).await?.join(", ");
        }
    }
    let pendo_calls = u64::from(extractor.stats().pendo_calls);
    meter.step("read_owners", Some("read_accounts"));
    crate::testhook::crash_point("gather");

    // One group per alert: the Opportunity, the Case and the Task as configured, made together
    // or completed by the next run under the same keys. An alert that only sets fields has none.
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of: Vec<Option<usize>> = Vec::new();
    let mut set_values: Vec<Vec<(String, Value)>> = Vec::new();
    let mut set_pendo_values: Vec<Vec<(String, Value)>> = Vec::new();
    for a in &alerts {
        let (lookup, account_owner, name) = owners.get(&a.account_id).cloned().unwrap_or_default();
        // The Account's own lookup first, then the configured rule, then the Account owner.
        let owner = if lookup.is_empty() { rule_owner.clone().unwrap_or(account_owner) } else { lookup };
        let mut filling = Filling {
            config,
            pendo_id: &a.pendo_id,
            name: &name,
            reason: &a.reason,
            evidence: &a.evidence,
            figures: signal::placeholder_values(&a.current, &a.previous, now),
            core_features: &core_features,
            subject: None,
            opened_at: Some(now),
        };
        let subject = filling.fill(&config.subject);
        filling.subject = Some(subject.clone());
        let description = match &config.description {
            Some(d) => filling.fill(d),
            None => format!("{}.\n\nEvidence: {}.", capitalised(&a.reason), a.evidence),
        };
        set_values.push(filling.fields(&config.set_fields));
        set_pendo_values.push(filling.fields(&config.set_pendo_fields));
        let text = Text { subject, description, owner };
        let record = |object: &str, fields, link| NewRecord {
            object: object.to_owned(),
            key: alert_key(&workflow.name, &a.pendo_id, a.number, object),
            key_field: config.key_field.clone(),
            fields,
            link,
        };
        let mut records = Vec::new();
        if let Some(o) = &config.opportunity {
            records.push(record("Opportunity", opportunity_fields(o, &filling, a, &text, now), None));
        }
        if config.create_case {
            records.push(record("Case", case_fields(a, &text), None));
        }
        if config.task {
            // The Task points at the Opportunity it is about, as expansion's does.
            let link = config.opportunity.as_ref().map(|_| Link { field: "WhatId".into(), to: 0 });
            records.push(record("Task", task_fields(config, a, &text, now), link));
        }
        if records.is_empty() {
            group_of.push(None);
            continue;
        }
        group_of.push(Some(groups.len()));
        groups.push(Group {
            subject: a.pendo_id.clone(),
            account_id: a.account_id.clone(),
            note: format!("episode {}: {}", a.number, a.reason),
            records,
        });
    }

    // Account fields: what the alerts set and the episodes want, changed fields only.
    let mut desired = field_values;
    for (a, values) in alerts.iter().zip(&set_values) {
        desired.push(Desired {
            key: a.pendo_id.clone(),
            salesforce_id: a.account_id.clone(),
            fields: crate::change::named(values.iter().cloned()),
        });
    }
    desired.retain(|d| !d.fields.is_empty());
    let account_scope = account_scope(&workflow.name);
    let mut changes = changed_since_written(ctx, &account_scope, &desired).await?;
    let mut pendo_desired = pendo_values;
    for (a, values) in alerts.iter().zip(&set_pendo_values) {
        pendo_desired.push(Desired {
            key: a.pendo_id.clone(),
            salesforce_id: a.pendo_id.clone(),
            fields: crate::change::named(values.iter().cloned()),
        });
    }
    pendo_desired.retain(|d| !d.fields.is_empty());
    let pendo_scope = pendo_scope(&workflow.name);
    let mut pendo_changes = changed_since_written(ctx, &pendo_scope, &pendo_desired).await?;

    let writing = !groups.is_empty() || !changes.is_empty() || options.dry_run;
    let (budget, allowance) = super::weigh(ctx, &lazy, &mut meter, writing, None).await?;
    let send = create::fitting(&groups, allowance, &create::not_unique);
    let samples: Vec<Sample> = groups
        .iter()
        .take(10)
        .filter_map(|g| {
            Some(Sample {
                pendo_account: g.subject.clone(),
                salesforce_id: g.account_id.clone(),
                fields: g.records.last()?.fields.clone().into_iter().collect(),
            })
        })
        .collect();
    let mut report = RunReport::new(&workflow.name, options.dry_run, run_id, budget.clone());
    report.count_matches(&outcomes);
    report.unchanged = matched.len() - alerts.len();
    report.changed = alerts.len();
    report.fields_changed = BTreeMap::new();
    for object in groups.iter().flat_map(|g| g.records.iter().map(|r| r.object.clone())) {
        *report.fields_changed.entry(object).or_default() += 1;
    }
    if !changes.is_empty() {
        report.fields_changed.insert("Account".to_owned(), changes.len());
    }
    if !pendo_changes.is_empty() {
        report.fields_changed.insert(PENDO_OBJECT.to_owned(), pendo_changes.len());
    }
    report.deferred = groups.len() - send;
    report.plan =
        crate::plan::plan(0, workflow.max_latency, crate::plan::Allowance { calls: allowance }, &Default::default());
    report.pendo_calls = pendo_calls;
    report.samples = samples;
    let Some(run_id) = run_id else { return Ok(report.planned(meter)) };
    ctx.store.record_outcomes(run_id, &decisions, &episode_puts).await?;

    // One preflight for both stages, and only when there is something to send.
    let quarantine = if groups.is_empty() && changes.is_empty() {
        Quarantine::default()
    } else {
        let q = crate::preflight::run(&ctx.salesforce, &ctx.config, workflow).await?;
        meter.step("preflight", Some("preflight"));
        report.preflight.problems = q.problems().to_vec();
        q
    };
    let allowance = allowance.saturating_sub(meter.calls.get("preflight").copied().unwrap_or(0));
    let results =
        create::deliver_checked(ctx, workflow, &groups, &quarantine, allowance, &budget, &mut meter, &mut report, now)
            .await?;
    report.deferred = 0;
    let outcomes_out = create::history(&groups, &results, &mut report);
    // An episode opens only once all its records exist; until then the next run decides again
    // and completes the group under the same keys (and sets the fields then).
    let mut puts: Vec<FingerprintPut> = Vec::new();
    for (i, a) in alerts.iter().enumerate() {
        if !group_of[i].is_none_or(|g| results[g].complete()) {
            changes.retain(|c| {
                c.key != a.pendo_id || !set_values[i].iter().any(|(f, _)| c.fields.iter().any(|(x, _)| **x == **f))
            });
            pendo_changes.retain(|c| {
                c.key != a.pendo_id
                    || !set_pendo_values[i].iter().any(|(f, _)| c.fields.iter().any(|(x, _)| **x == **f))
            });
            continue;
        }
        let records = group_of[i].map(|g| results[g].ids()).unwrap_or_default();
        let open = Episode {
            count: a.number,
            open: true,
            rearm_at: a.rearm_at,
            opened_at: Some(now),
            records,
            fields: set_values[i].clone(),
            pendo_fields: set_pendo_values[i].clone(),
        };
        puts.push(episode::put(&workflow.name, &a.pendo_id, &open, now));
    }
    crate::testhook::crash_point("record");
    ctx.store.record_outcomes(run_id, &outcomes_out, &puts).await?;
    create::ledger(&groups, &results).settle(ctx, &workflow.name, run_id, now).await?;

    if !changes.is_empty() {
        let (changes, held) = crate::deliver::hold_back(&quarantine, "Account", &[], changes);
        let held: Vec<RecordOutcome> = held.iter().map(|h| h.outcome("Account")).collect();
        ctx.store.record_outcomes(run_id, &held, &[]).await?;
        let spent: u64 = meter.calls.values().sum::<u64>().saturating_sub(lazy.own_calls());
        let left = crate::plan::Allowance { calls: budget.available.saturating_sub(spent) };
        let plan = crate::plan::plan(changes.len(), workflow.max_latency, left, &Default::default());
        let updated = super::update::deliver(
            ctx,
            &workflow.name,
            "Account",
            &plan,
            changes,
            &budget,
            &mut meter,
            now,
            &|_| {},
            run_id,
        )
        .await?;
        let how = super::update::Recording {
            object: "Account",
            scope: &account_scope,
            ledger_key: |c| &c.key,
            note: &|_| Some("alert fields".to_owned()),
        };
        super::update::record(ctx, &workflow.name, run_id, &how, updated, &mut report, now).await?;
    }
    if !pendo_changes.is_empty() {
        pendo_write(ctx, workflow, run_id, &pendo_scope, pendo_changes, &matched, &mut report, now).await?;
        meter.step("deliver_pendo", Some("pendo_metadata"));
    }
    meter.step("record", None);
    super::settle(ctx, &workflow.name, now, meter, &mut report).await?;
    Ok(report)
}

/// The object history rows and the failure ledger name for the alerts' Pendo metadata writes,
/// apart from `Account` so a Salesforce write never settles a Pendo refusal.
pub const PENDO_OBJECT: &str = "Pendo account";

/// The fingerprint scope of the Pendo account metadata a workflow's alerts set.
pub fn pendo_scope(workflow: &str) -> String {
    format!("{workflow}:pendo-account")
}

/// The Pendo half of preflight, then the Pendo write stage: a field Pendo lacks, or types
/// otherwise, would make Pendo refuse the account's whole update, so only that field is held
/// back (and reported, the run partial); the rest is written and recorded.
#[allow(clippy::too_many_arguments)]
async fn pendo_write(
    ctx: &Context,
    workflow: &Workflow,
    run_id: RunId,
    scope: &str,
    mut changes: Vec<Change>,
    matched: &[(String, String)],
    report: &mut RunReport,
    now: DateTime<Utc>,
) -> Result<(), RunError> {
    let wanted = crate::pendo_fields::wanted(workflow);
    let schema = ctx.pendo.metadata_schema(pendo::Kind::Account).await.map_err(|source| {
        RunError::Pendo(crate::extract::ExtractError::Pendo { query: "account metadata schema", source })
    })?;
    report.pendo_calls += 1;
    let gaps = crate::pendo_fields::gaps(&wanted, &schema);
    if !gaps.is_empty() {
        report.preflight.problems.extend(crate::pendo_fields::check(&ctx.config, &wanted, &schema));
        for c in &mut changes {
            let keep = |f: &str| !gaps.iter().any(|(w, _)| w.field.eq_ignore_ascii_case(f));
            c.retain_fields(keep);
        }
        changes.retain(|c| !c.fields.is_empty());
    }
    let accounts: HashMap<&str, &str> = matched.iter().map(|(p, a)| (p.as_str(), a.as_str())).collect();
    let sent: Vec<(Change, String)> = changes
        .into_iter()
        .map(|c| {
            let account = accounts.get(c.key.as_str()).map(|a| (*a).to_owned()).unwrap_or_default();
            (c, account)
        })
        .collect();
    let target = super::pendo_write::Target {
        kind: pendo::Kind::Account,
        group: crate::config::alert::PENDO_GROUP,
        scope,
        object: PENDO_OBJECT,
    };
    super::pendo_write::write(ctx, &workflow.name, run_id, &target, &sent, report, now).await?;
    Ok(())
}

/// The changes of `desired` against the values last written in `scope`, which keys a record
/// by `Desired::salesforce_id` (for Pendo accounts, their Pendo id).
async fn changed_since_written(ctx: &Context, scope: &str, desired: &[Desired]) -> Result<Vec<Change>, RunError> {
    if desired.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = desired.iter().map(|d| d.salesforce_id.clone()).collect();
    let mut written = crate::change::Written::default();
    for (id, fields) in ctx.store.written_values(scope, &ids).await? {
        for (f, v) in fields {
            written.insert(&id, &f, crate::change::fingerprint(&v));
        }
    }
    Ok(desired.iter().filter_map(|d| crate::change::diff(&written, d, &[])).collect())
}

/// The fingerprint scope of the Account fields a workflow's alerts set.
pub fn account_scope(workflow: &str) -> String {
    format!("{workflow}:Account")
}

/// An alert's filled-in text and owner, shared by its records.
struct Text {
    subject: String,
    description: String,
    owner: String,
}

/// The key of one alert record: stable for the account's episode, distinct per object.
pub fn alert_key(workflow: &str, pendo_id: &str, episode: u64, object: &str) -> String {
    let kind = match object {
        "Case" => "drop-case",
        "Opportunity" => "drop-opportunity",
        _ => "drop",
    };
    create::key(&["usagesync", workflow, kind, pendo_id, &episode.to_string()])
}

fn decision(pendo_id: &str, account_id: &str, action: Action, message: String) -> RecordOutcome {
    RecordOutcome {
        object: "Account".into(),
        key: pendo_id.to_owned(),
        salesforce_id: Some(account_id.to_owned()),
        action,
        changes: vec![],
        error_code: None,
        message: Some(message),
    }
}

fn evidence(
    pendo_id: &str,
    prev: &AccountUsage,
    cur: &AccountUsage,
    prev_score: f64,
    score: f64,
    window: &Window,
) -> String {
    let at = |t: DateTime<Utc>| match window.length {
        WindowLength::Days(_) => t.date_naive().to_string(),
        WindowLength::Hours(_) => t.format("%Y-%m-%d %H:%M UTC").to_string(),
    };
    format!(
        "Pendo account {pendo_id}: engagement score {prev_score} → {score} ({} windows ending {} and {}); \
         active visitors {} → {}, active days {} → {}, events {} → {}, minutes {} → {}, \
         core features used {} → {} of {}",
        window.length,
        at(window.before().end),
        at(window.end),
        prev.active_visitors,
        cur.active_visitors,
        prev.active_days,
        cur.active_days,
        prev.events,
        cur.events,
        prev.minutes,
        cur.minutes,
        prev.core_features_used,
        cur.core_features_used,
        cur.core_features_total,
    )
}

fn task_fields(config: &DropAlertConfig, a: &Pending, t: &Text, now: DateTime<Utc>) -> Map<String, Value> {
    let due = (now + Duration::days(i64::from(config.due_in_days))).date_naive();
    let mut m = Map::new();
    m.insert("Subject".into(), json!(t.subject));
    m.insert("Priority".into(), json!("High"));
    m.insert("Status".into(), json!("Not Started"));
    m.insert("WhatId".into(), json!(a.account_id));
    m.insert("ActivityDate".into(), json!(due.to_string()));
    m.insert("Description".into(), json!(t.description));
    if !t.owner.is_empty() {
        m.insert("OwnerId".into(), json!(t.owner));
    }
    m
}

fn case_fields(a: &Pending, t: &Text) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Subject".into(), json!(t.subject));
    m.insert("Priority".into(), json!("High"));
    m.insert("AccountId".into(), json!(a.account_id));
    m.insert("Description".into(), json!(t.description));
    if !t.owner.is_empty() {
        m.insert("OwnerId".into(), json!(t.owner));
    }
    m
}

fn opportunity_fields(
    o: &AlertOpportunity,
    filling: &Filling<'_>,
    a: &Pending,
    t: &Text,
    now: DateTime<Utc>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Name".into(), json!(filling.fill(&o.name).chars().take(120).collect::<String>()));
    m.insert("StageName".into(), json!(o.stage));
    m.insert("CloseDate".into(), json!((now + Duration::days(i64::from(o.close_in_days))).date_naive().to_string()));
    if let Some(kind) = &o.opportunity_type {
        m.insert("Type".into(), json!(kind));
    }
    if let Some(amount) = o.amount {
        m.insert("Amount".into(), json!(amount));
    }
    m.insert("AccountId".into(), json!(a.account_id));
    m.insert("Description".into(), json!(t.description));
    if !t.owner.is_empty() {
        m.insert("OwnerId".into(), json!(t.owner));
    }
    m
}

/// Account id → (the configured lookup's User, empty when unset; the Account owner; the
/// Account's name).
async fn read_owners(
    ctx: &Context,
    config: &DropAlertConfig,
    ids: &[&str],
) -> Result<HashMap<String, (String, String, String)>, RunError> {
    let mut out = HashMap::new();
    let extra = config.owner_field.as_deref().map(|f| format!(", {f}")).unwrap_or_default();
    for chunk in ids.chunks(300) {
        let list = chunk.iter().map(|id| salesforce::soql::quote(id)).collect::<Vec<_>>().join(", ");
        let soql = format!("SELECT Id, Name, OwnerId{extra} FROM Account WHERE Id IN ({list})");
        let rows: Vec<Value> = ctx
            .salesforce
            .query_collect(soql)
            .await
            .map_err(|source| RunError::Salesforce { what: "alert owners", source })?;
        for r in rows {
            let text = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
            let lookup = config.owner_field.as_deref().map(text).unwrap_or_default();
            out.insert(text("Id"), (lookup, text("OwnerId"), text("Name")));
        }
    }
    Ok(out)
}

/// The engagement-drop-alert template, for the registry ([`crate::config::template`]).
impl template::Spec for DropAlertConfig {
    fn keys() -> &'static [&'static str] {
        &["matching", "recheck_matches_after", "core_features", "score", "fields", "alert"]
    }

    fn build(key: &str, w: &template::Wire, errors: &mut template::Errors) -> Option<Self> {
        crate::config::alert::build(key, w, errors)
    }

    fn to_wire(&self, out: &mut template::Wire) {
        out.alert = Some(crate::config::alert::to_wire(self));
        crate::config::validate::accounts_to_wire(&self.accounts, out);
    }

    fn flows(&self, key: &dyn Fn(&str) -> String) -> template::Flows {
        // Its Tasks, Cases and Opportunities are records it creates, each under its own key;
        // of existing records, only the Account fields its alerts set are its.
        let pendo = self.set_pendo_fields.iter().map(|(f, _)| {
            let field = template::FieldRef::pendo("account", crate::config::alert::PENDO_GROUP, f);
            (field, key(&format!("alert.set_pendo_fields.{f}")))
        });
        let writes = self
            .set_fields
            .iter()
            .map(|(f, _)| (template::FieldRef::salesforce("Account", f), key(&format!("alert.set_fields.{f}"))))
            .chain(pendo)
            .collect();
        template::Flows::to_salesforce(vec![], writes)
    }

    fn requirements(&self, reqs: &mut template::Reqs) {
        use template::{Expect, Use};
        reqs.accounts(&self.accounts);
        for (f, v) in &self.set_fields {
            let expect = match v {
                Value::Bool(_) => Expect::Boolean,
                Value::Number(_) => Expect::Number,
                Value::String(_) => Expect::Text,
                _ => Expect::Any,
            };
            reqs.add("Account", f, Use::Update, expect, &format!("alert.set_fields.{f}"));
        }
        if let Some(o) = &self.opportunity {
            reqs.add("Opportunity", &self.key_field, Use::Key, Expect::Text, "alert.key_field");
            reqs.add(
                "Opportunity",
                "StageName",
                Use::Create,
                Expect::Value(o.stage.clone()),
                "alert.opportunity.stage",
            );
            if let Some(kind) = &o.opportunity_type {
                reqs.add("Opportunity", "Type", Use::Create, Expect::Value(kind.clone()), "alert.opportunity.type");
            }
            if o.amount.is_some() {
                reqs.add("Opportunity", "Amount", Use::Create, Expect::Number, "alert.opportunity.amount");
            }
        }
        if let Some(owner) = &self.owner_field {
            reqs.add("Account", owner, Use::Read, Expect::Reference, "alert.owner_field");
        }
        if self.task {
            reqs.add("Task", &self.key_field, Use::Key, Expect::Text, "alert.key_field");
        }
        if self.create_case {
            reqs.add("Case", &self.key_field, Use::Key, Expect::Text, "alert.key_field");
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context, w: &'a Workflow, options: &'a RunOptions) -> template::RunFuture<'a> {
        Box::pin(run(ctx, w, self, options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(below: Option<f64>, drop_share: Option<f64>) -> DropAlertConfig {
        DropAlertConfig {
            accounts: crate::config::EngagementConfig {
                matching: vec![],
                recheck_matches_after: std::time::Duration::from_secs(3600),
                core_features: vec![],
                score: Default::default(),
                fields: Default::default(),
                rollup_fields: Default::default(),
            },
            below,
            drop_share,
            when: None,
            rearm_when: None,
            subject: crate::config::alert::DEFAULT_SUBJECT.into(),
            hysteresis: 10.0,
            owner_field: None,
            key_field: "Usagesync_Key__c".into(),
            create_case: false,
            due_in_days: 3,
            description: None,
            task: true,
            opportunity: None,
            owner: Default::default(),
            set_fields: vec![],
            reset_fields: vec![],
            set_pendo_fields: vec![],
            reset_pendo_fields: vec![],
        }
    }

    fn figures(score: f64, used: u32) -> signal::Figures {
        let usage = AccountUsage { core_features_used: used, core_features_total: 10, ..Default::default() };
        signal::Figures { score, usage }
    }

    #[test]
    fn a_signal_alerts_once_per_episode_and_rearms_by_its_rule() {
        let mut c = config(None, None);
        c.when = Some(signal::Condition::compile("feature_adoption <= previous.feature_adoption").unwrap());
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let decided = |c: &DropAlertConfig, e: &Episode, cur: u32, prev: u32| {
            let (holds, rearms) = signal(c, &figures(50.0, cur), &figures(50.0, prev), now).unwrap().unwrap();
            decide_signal(e, holds, rearms, c.when.as_ref().unwrap().text())
        };
        let mut e = Episode::default();
        assert_eq!(decided(&c, &e, 3, 2), Decision::Quiet, "adoption rose");
        let Decision::Alert { number, reason, .. } = decided(&c, &e, 2, 2) else { panic!() };
        assert_eq!(number, 1);
        assert!(reason.contains("feature_adoption <= previous.feature_adoption"), "{reason}");
        e = Episode { count: 1, open: true, ..Episode::default() };
        assert_eq!(decided(&c, &e, 2, 3), Decision::StillOpen { number: 1 });
        assert_eq!(decided(&c, &e, 4, 3), Decision::Recovered { number: 1 }, "the condition no longer holds");
        // With a re-arm rule of its own, leaving the condition is not enough.
        c.rearm_when = Some(signal::Condition::compile("feature_adoption >= 0.5").unwrap());
        assert_eq!(decided(&c, &e, 4, 3), Decision::StillOpen { number: 1 });
        assert_eq!(decided(&c, &e, 5, 3), Decision::Recovered { number: 1 });
        e.open = false;
        let Decision::Alert { number, .. } = decided(&c, &e, 1, 5) else { panic!() };
        assert_eq!(number, 2);
    }

    #[test]
    fn an_episode_alerts_once_and_rearms_only_above_the_band() {
        let c = config(Some(30.0), Some(0.5));
        let mut e = Episode::default();
        assert_eq!(decide(&c, &e, 60.0, 65.0), Decision::Quiet);
        let Decision::Alert { number, rearm_at, reason } = decide(&c, &e, 20.0, 70.0) else { panic!() };
        assert_eq!(number, 1);
        assert!(reason.contains("below") && reason.contains("fell"), "{reason}");
        // max(30, 70 × 0.5) + 10
        assert_eq!(rearm_at, 45.0);
        e = Episode { count: 1, open: true, rearm_at, ..Episode::default() };
        assert_eq!(decide(&c, &e, 25.0, 20.0), Decision::StillOpen { number: 1 });
        // Above the threshold but inside the band: still open.
        assert_eq!(decide(&c, &e, 40.0, 25.0), Decision::StillOpen { number: 1 });
        assert_eq!(decide(&c, &e, 45.0, 40.0), Decision::Recovered { number: 1 });
        e.open = false;
        let Decision::Alert { number, .. } = decide(&c, &e, 10.0, 45.0) else { panic!() };
        assert_eq!(number, 2);
    }

    #[test]
    fn relative_drop_alone_alerts_and_no_previous_usage_does_not() {
        let c = config(None, Some(0.4));
        let e = Episode::default();
        assert!(matches!(decide(&c, &e, 50.0, 90.0), Decision::Alert { .. }));
        assert_eq!(decide(&c, &e, 60.0, 90.0), Decision::Quiet);
        assert_eq!(decide(&c, &e, 0.0, 0.0), Decision::Quiet);
    }
}
