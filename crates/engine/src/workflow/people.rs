//! The contact-engagement template: each person's usage over the window (active days, events,
//! minutes, last active day) onto the Contact that carries their Pendo visitor id, changed
//! fields only. It gathers (one paged Pendo query, the Contacts with a visitor id) and decides;
//! preflight, plan, budget, delivery, read-back and record are the shared stages.
//!
//! With `alert:`, a condition over each linked person's figures (this window and the one
//! before) makes a Task on their Contact once per episode, through the create stage, with the
//! episodes every alerting template keeps ([`super::episode`], keyed by the visitor id).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};

use super::create::{self, Group, NewRecord};
use super::episode::{self, Decision, Episode};
use super::{Context, Meter, RunError, RunOptions, RunReport};
use crate::change::{self, Change, Desired};
use crate::config::{ContactEngagementConfig, PersonAlert, PersonMatch, Workflow, template};
use crate::deliver;
use crate::extract::{PersonFigures, VisitorUsage};
use crate::plan::{self, Allowance, CostModel};
use crate::signal;
use crate::store::{Action, FingerprintPut, RecordOutcome, RunId};

const OBJECT: &str = "Contact";

/// The fingerprint scope of a workflow's Contacts.
pub fn scope(workflow: &str) -> String {
    format!("{workflow}:{OBJECT}")
}

pub(crate) async fn run(
    ctx: &Context,
    workflow: &Workflow,
    config: &ContactEngagementConfig,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    super::recorded(ctx, workflow, options, |now, run_id| async move {
        let mut meter = Meter::new(&ctx.salesforce);
        // What the ledger and the last reading say refuses a spent day before any read; the
        // fresh figure is read only when something is to be written.
        let lazy = crate::budget::Budget::new(now);
        let budget = lazy.known(ctx).await?;
        meter.step("budget", Some("read_limits"));
        if budget.available == 0 {
            return Err(RunError::OverBudget { needed: 1, left: 0 });
        }

        // Gather: usage per visitor, and the Contacts each visitor is linked to.
        let extractor = ctx.extractor();
        let figures = PersonFigures {
            features: config.fields.features_used.is_some(),
            guides: config.fields.guides_completed.is_some(),
        };
        let window = workflow.window(now);
        let usage = extractor.visitor_usage(&window, figures).await?;
        // A signal compares with the window before; only an alert reads it.
        let previous = match &config.alert {
            Some(_) => extractor.visitor_usage(&window.before(), figures).await?,
            None => BTreeMap::new(),
        };
        let mut report = RunReport::new(&workflow.name, options.dry_run, run_id, budget.clone());
        let dry_run = options.dry_run;
        let pairs = match &config.match_by {
            PersonMatch::VisitorId(field) => {
                meter.step("extract", None);
                let contacts = super::contact_links::gather(ctx, &workflow.name, field, now, dry_run).await?;
                links(by_visitor_id(&contacts), &mut report)
            }
            PersonMatch::Email => {
                let visitors = extractor.visitor_emails().await?;
                meter.step("extract", None);
                let contacts = super::contact_links::gather(ctx, &workflow.name, "Email", now, dry_run).await?;
                links(by_email(&visitors, &contacts), &mut report)
            }
        };
        report.pendo_calls = u64::from(extractor.stats().pendo_calls);
        meter.step("match", Some("read_contacts"));
        crate::testhook::crash_point("gather");

        // Decide: every linked Contact's figures; a person silent in the window has zero usage
        // (and keeps the last active day already written).
        let decided = match &config.alert {
            Some(alert) => decide(ctx, &workflow.name, alert, &pairs, &usage, &previous, now).await?,
            None => Decided::default(),
        };
        let written = ctx.store.fingerprints(&scope(&workflow.name)).await?;
        let linked: BTreeSet<String> = pairs.iter().map(|(visitor, _)| visitor.clone()).collect();
        let mut changes: Vec<Change> = Vec::new();
        for (visitor, id) in pairs {
            let silent = VisitorUsage { visitor_id: visitor.clone(), ..VisitorUsage::default() };
            let u = usage.get(&visitor).unwrap_or(&silent);
            report.matched += 1;
            let desired = Desired { key: visitor, salesforce_id: id, fields: change::named(values(config, u)) };
            match change::diff(&written, &desired, &[]) {
                Some(c) => changes.push(c),
                None => report.unchanged += 1,
            }
        }
        drop(written);
        report.pendo_accounts = usage.len();
        report.unmatched = usage.keys().filter(|v| !linked.contains(v.as_str())).count();

        let alerting = !decided.alerts.is_empty();
        let quarantine = super::engagement::preflight(ctx, workflow, &changes, options.dry_run || alerting).await?;
        meter.step("preflight", Some("preflight"));
        let (changes, held) = deliver::hold_back(&quarantine, OBJECT, &[], changes);
        report.preflight =
            super::PreflightReport { problems: quarantine.problems().to_vec(), records_held_back: held.len() };
        report.describe_changes(&changes);
        if alerting {
            // A Task to make is a decided change as much as a Contact to update.
            report.changed += decided.alerts.len();
            report.fields_changed.insert("Task".into(), decided.alerts.len());
        }
        // The fresh figure is read when anything is to be written: changed Contacts or Tasks.
        let writing = !changes.is_empty() || alerting || options.dry_run;
        let (budget, calls) = super::weigh(ctx, &lazy, &mut meter, writing, Some(budget)).await?;
        report.budget = budget.clone();
        let allowance = Allowance { calls };
        let plan = plan::plan(changes.len(), workflow.max_latency, allowance, &CostModel::default());
        report.plan = plan.clone();
        report.deferred = plan.deferred;
        let Some(run_id) = run_id else { return Ok(report.planned(meter)) };
        let mut skipped: Vec<_> = held.iter().map(|h| h.outcome(OBJECT)).collect();
        skipped.extend(decided.outcomes);
        ctx.store.record_outcomes(run_id, &skipped, &decided.puts).await?;

        let updated = super::update::deliver(
            ctx,
            &workflow.name,
            OBJECT,
            &plan,
            changes,
            &budget,
            &mut meter,
            now,
            &|_| {},
            run_id,
        )
        .await?;
        // The plan's deferrals were a forecast; the record stage counts what really waits.
        report.deferred = 0;
        let scope = scope(&workflow.name);
        let how = super::update::Recording { object: OBJECT, scope: &scope, ledger_key: |c| &c.key, note: &|_| None };
        super::update::record(ctx, &workflow.name, run_id, &how, updated, &mut report, now).await?;
        if let Some(alert) = config.alert.as_ref().filter(|_| alerting) {
            let spent = meter.calls.values().sum::<u64>().saturating_sub(lazy.own_calls());
            let allowance = budget.available.saturating_sub(spent);
            let mut made = Made { quarantine: &quarantine, allowance, budget: &budget, meter: &mut meter, run_id, now };
            alert_tasks(ctx, workflow, alert, &decided.alerts, &mut made, &mut report).await?;
        }
        meter.step("record", None);
        super::settle(ctx, &workflow.name, now, meter, &mut report).await?;
        Ok(report)
    })
    .await
}

/// A person whose signal holds, before their Task is made.
struct Pending {
    visitor: String,
    contact: String,
    number: u64,
    reason: String,
    current: HashMap<String, f64>,
    previous: HashMap<String, f64>,
}

/// What the signal says about every linked person: the alerts to make, the history rows of the
/// others' decisions and the closed episodes.
#[derive(Default)]
struct Decided {
    alerts: Vec<Pending>,
    outcomes: Vec<RecordOutcome>,
    puts: Vec<FingerprintPut>,
}

/// Decides each linked person's episode by `alert`'s condition over their figures now and in
/// the window before. A last active day outside this window is taken from the one before, so
/// `days_since_last_active` keeps counting for a person who went quiet.
async fn decide(
    ctx: &Context,
    workflow: &str,
    alert: &PersonAlert,
    pairs: &[(String, String)],
    usage: &BTreeMap<String, VisitorUsage>,
    previous: &BTreeMap<String, VisitorUsage>,
    now: DateTime<Utc>,
) -> Result<Decided, RunError> {
    let visitors: Vec<String> = pairs.iter().map(|(v, _)| v.clone()).collect();
    let episodes = episode::load(ctx, workflow, &visitors).await?;
    let mut out = Decided::default();
    let silent = VisitorUsage::default();
    let rule = episode::rearm_rule(&alert.when, alert.rearm_when.as_ref());
    for (visitor, contact) in pairs {
        let (now_u, prev_u) = (usage.get(visitor).unwrap_or(&silent), previous.get(visitor).unwrap_or(&silent));
        let current = signal::person_values(now_u, now_u.last_active_day.or(prev_u.last_active_day), now);
        let before = signal::person_values(prev_u, prev_u.last_active_day, now);
        let e = episodes.get(visitor).cloned().unwrap_or_default();
        let row = |action, message: String| RecordOutcome {
            object: OBJECT.into(),
            key: visitor.clone(),
            salesforce_id: Some(contact.clone()),
            action,
            changes: vec![],
            error_code: None,
            message: Some(message),
        };
        let (holds, rearms) = match episode::signal(&alert.when, alert.rearm_when.as_ref(), &current, &before) {
            Ok(v) => v,
            Err(err) => {
                out.outcomes.push(row(Action::Skipped, err.to_string()));
                continue;
            }
        };
        match episode::decide_signal(&e, holds, rearms, alert.when.text()) {
            Decision::Quiet => {}
            Decision::Alert { number, reason, .. } => out.alerts.push(Pending {
                visitor: visitor.clone(),
                contact: contact.clone(),
                number,
                reason,
                current,
                previous: before,
            }),
            Decision::StillOpen { number } => {
                out.outcomes.push(row(Action::Unchanged, format!("episode {number} still open ({rule}): no new alert")))
            }
            Decision::Recovered { number } => {
                out.outcomes.push(row(
                    Action::Skipped,
                    format!("recovered ({rule}): episode {number} closed, alerts re-armed"),
                ));
                let closed = Episode { open: false, records: Vec::new(), ..e };
                out.puts.push(episode::put(workflow, visitor, &closed, now));
            }
        }
    }
    Ok(out)
}

/// What the create stage needs from the run.
struct Made<'a, 'm> {
    quarantine: &'a crate::preflight::Quarantine,
    allowance: u64,
    budget: &'a crate::budget::BudgetReport,
    meter: &'a mut Meter<'m>,
    run_id: RunId,
    now: DateTime<Utc>,
}

/// The key of a person's alert Task: stable for the person's episode.
pub fn alert_key(workflow: &str, visitor: &str, episode: u64) -> String {
    create::key(&["usagesync", workflow, "person", visitor, &episode.to_string()])
}

/// Makes each alert's Task on its Contact (WhoId) and the Contact's Account (WhatId), for the
/// owner rule's User or the Account's owner, through the create stage; an episode opens once
/// its Task exists, so a refused or deferred one is made by the next run under the same key.
async fn alert_tasks(
    ctx: &Context,
    workflow: &Workflow,
    alert: &PersonAlert,
    alerts: &[Pending],
    made: &mut Made<'_, '_>,
    report: &mut RunReport,
) -> Result<(), RunError> {
    let now = made.now;
    let mut puts = Vec::new();
    let rule_owner = episode::owner_by_rule(ctx, &workflow.name, &alert.owner, now, &mut puts).await?;
    let ids: Vec<&str> = alerts.iter().map(|a| a.contact.as_str()).collect();
    let contacts = read_contacts(ctx, &ids).await?;
    made.meter.step("read_owners", Some("read_contacts"));
    let due = (now + chrono::Duration::days(i64::from(alert.due_in_days))).date_naive().to_string();
    let groups: Vec<Group> = alerts
        .iter()
        .map(|a| {
            let (name, account, account_owner) = contacts.get(&a.contact).cloned().unwrap_or_default();
            let metric = alert.when.metric();
            let value = |n: &str| -> Option<String> {
                let figure = |key: &str, from: &HashMap<String, f64>| from.get(key).map(|v| crate::text::number(*v));
                match n {
                    "person" => Some(if name.is_empty() { a.visitor.clone() } else { name.clone() }),
                    "visitor" => Some(a.visitor.clone()),
                    "metric" => Some(metric.to_owned()),
                    "from" => figure(metric, &a.previous),
                    "to" => figure(metric, &a.current),
                    "reason" => Some(a.reason.clone()),
                    "opened_at" => Some(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    other => match other.strip_prefix("previous.") {
                        Some(p) => figure(p, &a.previous),
                        None => figure(other, &a.current),
                    },
                }
            };
            let subject = crate::text::render(&alert.subject, &value);
            let description = match &alert.description {
                Some(d) => crate::text::render(d, &|n| if n == "subject" { Some(subject.clone()) } else { value(n) }),
                None => format!(
                    "{} for Pendo visitor {}.\n\nFigures: {}.",
                    episode::capitalised(&a.reason),
                    a.visitor,
                    figures(a)
                ),
            };
            let owner = rule_owner.clone().unwrap_or(account_owner);
            let mut fields = Map::new();
            fields.insert("Subject".into(), json!(subject));
            fields.insert("Priority".into(), json!("High"));
            fields.insert("Status".into(), json!("Not Started"));
            fields.insert("WhoId".into(), json!(a.contact));
            if !account.is_empty() {
                fields.insert("WhatId".into(), json!(account));
            }
            fields.insert("ActivityDate".into(), json!(due));
            fields.insert("Description".into(), json!(description));
            if !owner.is_empty() {
                fields.insert("OwnerId".into(), json!(owner));
            }
            Group {
                subject: a.visitor.clone(),
                account_id: if account.is_empty() { a.contact.clone() } else { account },
                note: format!("episode {}: {}", a.number, a.reason),
                records: vec![NewRecord {
                    object: "Task".into(),
                    key: alert_key(&workflow.name, &a.visitor, a.number),
                    key_field: alert.key_field.clone(),
                    fields,
                    link: None,
                }],
            }
        })
        .collect();
    // The create stage's read-back report replaces the run's; the update stage's is kept.
    let verified = std::mem::take(&mut report.verify);
    let results = create::deliver_checked(
        ctx,
        workflow,
        &groups,
        made.quarantine,
        made.allowance,
        made.budget,
        made.meter,
        report,
        now,
    )
    .await?;
    report.verify.merge(verified);
    let history = create::history(&groups, &results, report);
    for (a, r) in alerts.iter().zip(&results) {
        if r.complete() {
            let open =
                Episode { count: a.number, open: true, opened_at: Some(now), records: r.ids(), ..Episode::default() };
            puts.push(episode::put(&workflow.name, &a.visitor, &open, now));
        }
    }
    ctx.store.record_outcomes(made.run_id, &history, &puts).await?;
    create::ledger(&groups, &results).settle(ctx, &workflow.name, made.run_id, now).await?;
    Ok(())
}

/// A person's figures side by side, this window and the one before.
fn figures(a: &Pending) -> String {
    signal::PERSON_VARIABLES
        .iter()
        .map(|v| {
            let at = |m: &HashMap<String, f64>| m.get(*v).map_or_else(String::new, |x| crate::text::number(*x));
            format!("{v} {} → {}", at(&a.previous), at(&a.current))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Contact Id → (its Name, its AccountId, the Account's OwnerId), empty where unset.
async fn read_contacts(ctx: &Context, ids: &[&str]) -> Result<HashMap<String, (String, String, String)>, RunError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(300) {
        let list = chunk.iter().map(|id| salesforce::soql::quote(id)).collect::<Vec<_>>().join(", ");
        let soql = format!("SELECT Id, Name, AccountId, Account.OwnerId FROM {OBJECT} WHERE Id IN ({list})");
        let rows: Vec<Map<String, Value>> = ctx
            .salesforce
            .query_collect(soql)
            .await
            .map_err(|source| RunError::Salesforce { what: "alerted people's Contacts", source })?;
        for r in rows {
            let owner = r.get("Account").and_then(|a| a.get("OwnerId")).and_then(Value::as_str).unwrap_or_default();
            let at = |f: &str| text(&r, f).unwrap_or_default().to_owned();
            out.insert(at("Id"), (at("Name"), at("AccountId"), owner.to_owned()));
        }
    }
    Ok(out)
}

/// People and Contacts grouped by what links them (a visitor id, or a normalised e-mail).
type Groups<'a> = BTreeMap<String, (Vec<&'a str>, Vec<&'a str>)>;

/// Groups by the Contact field holding the visitor id (`contacts`: Contact Id → visitor id).
fn by_visitor_id(contacts: &BTreeMap<String, String>) -> Groups<'_> {
    let mut groups = Groups::new();
    for (id, visitor) in contacts {
        groups.entry(visitor.clone()).or_insert_with(|| (vec![visitor.as_str()], Vec::new())).1.push(id);
    }
    groups
}

/// Groups by e-mail address: Pendo's `agent.email` and the Contact's `Email`, normalised alike.
/// `contacts`: Contact Id → `Email`.
fn by_email<'a>(visitors: &'a BTreeMap<String, String>, contacts: &'a BTreeMap<String, String>) -> Groups<'a> {
    let key = |raw: &str| super::new_users::normalise_email(raw, false);
    let mut groups = Groups::new();
    for (visitor, email) in visitors {
        if let Some(email) = key(email) {
            groups.entry(email).or_default().0.push(visitor);
        }
    }
    for (id, email) in contacts {
        if let Some(email) = key(email) {
            groups.entry(email).or_default().1.push(id);
        }
    }
    groups
}

/// (visitor id, Contact Id) for every group of exactly one visitor and one Contact. A group with
/// more on either side is counted ambiguous (with a sample) and links nobody: one person's usage
/// on another's Contact, or one Contact flipping between two people, is worse than none.
fn links(groups: Groups<'_>, report: &mut RunReport) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (by, (visitors, ids)) in groups {
        match (visitors.as_slice(), ids.as_slice()) {
            ([visitor], [id]) => out.push(((*visitor).to_owned(), (*id).to_owned())),
            (_, []) | ([], _) => {}
            _ => {
                report.ambiguous += visitors.len();
                if report.ambiguous_samples.len() < 10 {
                    report.ambiguous_samples.push(super::AmbiguousSample {
                        pendo_account: visitors.join(", "),
                        candidates: ids.iter().map(|&id| id.to_owned()).collect(),
                        reason: format!("`{by}` is held by {} visitors and {} Contacts", visitors.len(), ids.len()),
                    });
                }
            }
        }
    }
    out
}

fn text<'r>(row: &'r Map<String, Value>, field: &str) -> Option<&'r str> {
    row.get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The configured fields' values for one person. A last active day Pendo does not know (no
/// event in the window) is left out rather than cleared: the day written earlier still holds.
fn values(config: &ContactEngagementConfig, u: &VisitorUsage) -> Vec<(String, Value)> {
    config
        .fields
        .iter()
        .filter_map(|(figure, field)| {
            let value = match figure {
                "active_days" => json!(u.active_days),
                "events" => json!(u.events),
                "minutes" => json!(u.minutes),
                "features_used" => json!(u.features_used),
                "guides_completed" => json!(u.guides_completed),
                _ => {
                    let day = u.last_active_day.and_then(|ms| Utc.timestamp_millis_opt(ms).single())?;
                    crate::figures::timestamp(day)
                }
            };
            Some((field.to_owned(), value))
        })
        .collect()
}

/// The contact-engagement template, for the registry ([`crate::config::template`]).
impl template::Spec for ContactEngagementConfig {
    fn keys() -> &'static [&'static str] {
        &["contacts"]
    }

    fn build(key: &str, w: &template::Wire, errors: &mut template::Errors) -> Option<Self> {
        crate::config::people::build(key, w, errors)
    }

    fn to_wire(&self, out: &mut template::Wire) {
        out.contacts = Some(crate::config::people::to_wire(self));
    }

    fn flows(&self, key: &dyn Fn(&str) -> String) -> template::Flows {
        use template::{FieldRef, Flows};
        let writes = self
            .fields
            .iter()
            .map(|(figure, f)| (FieldRef::salesforce(OBJECT, f), key(&format!("contacts.fields.{figure}"))));
        Flows::to_salesforce(vec![], writes.collect())
    }

    fn requirements(&self, reqs: &mut template::Reqs) {
        use template::{Expect, Use};
        match &self.match_by {
            PersonMatch::VisitorId(field) => {
                reqs.add(OBJECT, field, Use::Read, Expect::Text, "contacts.visitor_id_field");
            }
            PersonMatch::Email => reqs.add(OBJECT, "Email", Use::Read, Expect::Any, "contacts.match"),
        }
        for (figure, field) in self.fields.iter() {
            let expect = if figure == "last_active" { Expect::Date } else { Expect::Number };
            reqs.add(OBJECT, field, Use::Update, expect, &format!("contacts.fields.{figure}"));
        }
        if let Some(alert) = &self.alert {
            reqs.add("Task", &alert.key_field, Use::Key, Expect::Text, "contacts.alert.key_field");
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
    use crate::config::PersonFields;

    #[test]
    fn a_silent_person_gets_zeros_and_keeps_the_last_active_day() {
        let config = ContactEngagementConfig {
            match_by: PersonMatch::Email,
            fields: PersonFields {
                active_days: Some("A__c".into()),
                events: Some("E__c".into()),
                last_active: Some("L__c".into()),
                ..PersonFields::default()
            },
            alert: None,
        };
        let silent = VisitorUsage { visitor_id: "v".into(), ..VisitorUsage::default() };
        assert_eq!(values(&config, &silent), vec![("A__c".into(), json!(0)), ("E__c".into(), json!(0))]);
        let busy = VisitorUsage {
            visitor_id: "v".into(),
            active_days: 3,
            events: 40,
            minutes: 9,
            features_used: 2,
            guides_completed: 1,
            last_active_day: Some(1_764_892_800_000),
        };
        assert_eq!(
            values(&config, &busy),
            vec![
                ("A__c".into(), json!(3)),
                ("E__c".into(), json!(40)),
                ("L__c".into(), json!("2025-12-05T00:00:00.000Z"))
            ]
        );
    }

    #[test]
    fn an_address_or_visitor_id_held_twice_links_nobody() {
        let v = |id: &str, email: &str| (id.to_owned(), email.to_owned());
        let c = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(id, key)| ((*id).to_owned(), (*key).to_owned())).collect()
        };
        let visitors: BTreeMap<_, _> = [
            v("v1", " Ada@X.com"),
            v("v2", "bo@x.com"),
            v("v3", "BO@x.com"),
            v("v4", "cy@x.com"),
            v("v5", "dee@x.com"),
        ]
        .into_iter()
        .collect();
        let contacts = c(&[("003A", "ada@x.com"), ("003B", "bo@x.com"), ("003C", "cy@x.com"), ("003D", "Cy@X.com")]);
        let mut report = RunReport::new("w", false, None, crate::budget::BudgetReport::default());
        let pairs = links(by_email(&visitors, &contacts), &mut report);
        // Ada alone links; Bo's address is two visitors', Cy's two Contacts'; Dee has no Contact.
        assert_eq!(pairs, vec![("v1".to_owned(), "003A".to_owned())]);
        assert_eq!(report.ambiguous, 3);
        assert_eq!(report.ambiguous_samples.len(), 2);

        let by_id = c(&[("003A", "v1"), ("003B", "v2"), ("003C", "v2")]);
        let mut report = RunReport::new("w", false, None, crate::budget::BudgetReport::default());
        let pairs = links(by_visitor_id(&by_id), &mut report);
        assert_eq!(pairs, vec![("v1".to_owned(), "003A".to_owned())]);
        assert_eq!((report.ambiguous, report.ambiguous_samples[0].candidates.len()), (1, 2));
    }
}
