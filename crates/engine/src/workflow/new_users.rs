//! The new-users-to-contacts template: visitors Pendo identified since the cursor become
//! Salesforce Contacts. Each is looked up by normalised e-mail; a Contact found gets the
//! configured fields (only those whose value moved); one not found is created under the Account
//! its Pendo account matches (or, per config, as a Lead, or skipped).
//!
//! The template gathers and decides; the shared stages do the rest. Creates go through the
//! create stage keyed by the visitor id in the visitor-id external-ID field, so they get its
//! guarantees: made once (a retry, a second worker or a lost store finds the record by its key
//! and adopts it unchanged), within the reserved budget, read back, failures in the ledger.
//! Updates go through the update stage. Visitors with the same normalised e-mail in one batch
//! are one person (the earliest first visit wins, the others are reported), and the run lease
//! keeps one run of the workflow live at a time.
//!
//! The cursor is the newest first visit handled; it never passes a visitor that was deferred
//! (budget, a spent allocation, a transient refusal), held back by preflight, or refused (kept in
//! the failure ledger, unless a person dismissed it), so those come back next run.

use crate::config::template;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use salesforce::{Condition, SoqlQuery};
use serde_json::{Map, Value, json};

use super::create::{Group, NewRecord};
use super::{Context, Meter, RunError, RunOptions, RunReport, Sample};
use crate::change::{Change, fingerprint};
use crate::config::{EngagementConfig, NewUsersConfig, UnmatchedAccount, Workflow};
use crate::deliver;
use crate::extract::{AccountFacts, NewVisitor};
use crate::matching::Outcome;
use crate::plan::{Allowance, COLLECTION_SIZE, CostModel, Plan, WritePath};
use crate::store::{Action, FingerprintPut, RecordOutcome, RunId};

/// The cursor's name in the CursorStore: epoch milliseconds of the newest first visit handled.
pub const CURSOR: &str = "first_visit";
/// E-mails per SOQL `IN` list: well within SOQL's 100,000-character statement limit.
const EMAILS_PER_QUERY: usize = 200;

/// `Jane.Doe@Acme.COM ` → `jane.doe@acme.com`; with `strip_plus`, `jane+news@acme.com` →
/// `jane@acme.com`. `None` for text that is not an address.
pub fn normalise_email(raw: &str, strip_plus: bool) -> Option<String> {
    let lower = raw.trim().to_lowercase();
    let (local, domain) = lower.rsplit_once('@')?;
    let local = if strip_plus { local.split('+').next().unwrap_or_default() } else { local };
    let plausible = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !lower.chars().any(|c| c.is_whitespace() || c.is_control());
    plausible.then(|| format!("{local}@{domain}"))
}

/// The fingerprint scope of a workflow's records of `object`.
pub fn scope(workflow: &str, object: &str) -> String {
    format!("{workflow}:{object}")
}

/// One person of the batch, after de-duplication.
struct Person<'v> {
    email: String,
    visitor: &'v NewVisitor,
    account: AccountMatch,
}

#[derive(Debug, Clone)]
enum AccountMatch {
    Matched(String),
    Ambiguous(Vec<String>),
    Unmatched,
}

/// A write to send, with where it came from.
struct Pending<'v> {
    person: Person<'v>,
    object: &'static str,
    /// `Some` for an update of an existing record.
    salesforce_id: Option<String>,
    fields: Vec<(String, Value)>,
}

pub(crate) async fn run(
    ctx: &Context,
    workflow: &Workflow,
    config: &NewUsersConfig,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    super::recorded(ctx, workflow, options, |now, run_id| body(ctx, workflow, config, options, now, run_id)).await
}

fn sf_err(what: &'static str) -> impl Fn(salesforce::Error) -> RunError {
    move |source| RunError::Salesforce { what, source }
}

fn skipped(object: &str, visitor: &str, code: &str, message: String) -> RecordOutcome {
    RecordOutcome {
        object: object.into(),
        key: visitor.to_owned(),
        salesforce_id: None,
        action: Action::Skipped,
        changes: vec![],
        error_code: Some(code.into()),
        message: Some(message),
    }
}

async fn body(
    ctx: &Context,
    workflow: &Workflow,
    config: &NewUsersConfig,
    options: &RunOptions,
    now: DateTime<Utc>,
    run_id: Option<RunId>,
) -> Result<RunReport, RunError> {
    let mut meter = Meter::new(&ctx.salesforce);
    // What the ledger and the last reading say refuses a spent day before the first Salesforce
    // read; the fresh figure is read only when something is to be written, so a run that
    // writes nothing reads no /limits.
    let lazy = crate::budget::Budget::new(now);
    let mut report = RunReport::new(&workflow.name, options.dry_run, run_id, Default::default());

    // The cursor: first visits at or after it are new. A first run looks back the window.
    let stored = ctx.store.cursor(&workflow.name, CURSOR).await?;
    let cursor_ms = stored
        .as_deref()
        .and_then(|c| c.parse::<i64>().ok())
        .unwrap_or_else(|| (now - workflow.window.duration()).timestamp_millis());
    let overlap_ms = i64::try_from(config.overlap.as_millis()).unwrap_or(i64::MAX);
    let extractor = ctx.extractor();
    let visitors = extractor.new_visitors(cursor_ms.saturating_sub(overlap_ms)).await?;
    report.pendo_accounts = visitors.len();
    meter.step("extract", None);
    if visitors.is_empty() {
        report.budget = lazy.report(ctx).await?;
        report.pendo_calls = u64::from(extractor.stats().pendo_calls);
        return finish_report(ctx, workflow, report, meter, Vec::new(), stored.as_deref(), None, options).await;
    }

    // The visitors' accounts → Salesforce Accounts, with the same rule chain (and the same kind
    // of cached id map) as engagement-scores.
    let mut metadata_fields = crate::matching::metadata_fields(&config.matching);
    metadata_fields.push(("agent".into(), "name".into()));
    let facts = extractor.account_facts(&metadata_fields).await?;
    report.pendo_calls = u64::from(extractor.stats().pendo_calls);
    let budget = lazy.known(ctx).await?;
    meter.step("budget", Some("read_limits"));
    report.budget = budget.clone();
    let matcher = EngagementConfig {
        matching: config.matching.clone(),
        recheck_matches_after: config.recheck_matches_after,
        core_features: Vec::new(),
        score: Default::default(),
        fields: Default::default(),
        rollup_fields: Default::default(),
    };
    let outcomes = crate::matching::match_accounts(
        ctx,
        workflow,
        &matcher,
        crate::matching::Facts::Read(&facts),
        &[],
        now,
        options.dry_run,
        &lazy,
    )
    .await?;
    meter.step("match", Some("read_accounts"));
    let account_names: HashMap<&str, &str> = facts
        .iter()
        .filter_map(|f: &AccountFacts| Some((f.account_id.as_str(), f.metadata_value("agent.name")?)))
        .collect();

    // One person per normalised e-mail: the earliest first visit wins.
    let mut outcomes_kept: Vec<RecordOutcome> = Vec::new();
    let mut grouped: BTreeMap<String, Vec<&NewVisitor>> = BTreeMap::new();
    for v in &visitors {
        match v.email.as_deref().and_then(|e| normalise_email(e, config.strip_plus_addressing)) {
            Some(email) => grouped.entry(email).or_default().push(v),
            None => outcomes_kept.push(skipped(
                "Contact",
                &v.visitor_id,
                "NO_EMAIL",
                "the visitor has no usable e-mail address: nothing to match a Contact on".into(),
            )),
        }
    }
    let mut people: Vec<Person> = Vec::with_capacity(grouped.len());
    for (email, mut list) in grouped {
        list.sort_by(|a, b| a.first_visit_ms.cmp(&b.first_visit_ms).then_with(|| a.visitor_id.cmp(&b.visitor_id)));
        let Some((first, rest)) = list.split_first() else { continue };
        for other in rest {
            outcomes_kept.push(skipped(
                "Contact",
                &other.visitor_id,
                "DUPLICATE_IN_BATCH",
                format!("same person ({email}) as visitor {}, which is synced instead", first.visitor_id),
            ));
        }
        let account = match first.account_id.as_deref().and_then(|a| outcomes.get(a)) {
            Some(Outcome::Matched { salesforce_id, .. }) => AccountMatch::Matched(salesforce_id.clone()),
            Some(Outcome::Ambiguous(a)) => AccountMatch::Ambiguous(a.candidates.clone()),
            Some(Outcome::Unmatched { .. }) | None => AccountMatch::Unmatched,
        };
        match &account {
            AccountMatch::Matched(_) => report.matched += 1,
            AccountMatch::Ambiguous(_) => report.ambiguous += 1,
            AccountMatch::Unmatched => report.unmatched += 1,
        }
        people.push(Person { email, visitor: first, account });
    }

    // Reads: every person's e-mail against Contacts, and the would-be Leads' against Leads.
    let reads_needed = people.len().div_ceil(EMAILS_PER_QUERY) as u64 * 2;
    let spent: u64 = meter.calls.values().sum::<u64>().saturating_sub(lazy.own_calls());
    if budget.available.saturating_sub(spent) < reads_needed {
        return Err(RunError::OverBudget { needed: reads_needed, left: budget.available.saturating_sub(spent) });
    }
    let f = &config.contact_fields;
    let mut contact_fields = vec!["Id", "Email", "AccountId", f.visitor_id.as_str()];
    contact_fields.extend(f.last_visit.as_deref());
    contact_fields.extend(f.first_visit.as_deref());
    let emails: Vec<&str> = people.iter().map(|p| p.email.as_str()).collect();
    let contacts = by_email(ctx, "Contact", &contact_fields, &emails, config.strip_plus_addressing).await?;
    let lead_emails: Vec<&str> = if config.unmatched_account == UnmatchedAccount::Lead {
        people
            .iter()
            .filter(|p| matches!(p.account, AccountMatch::Unmatched) && !contacts.contains_key(&p.email))
            .map(|p| p.email.as_str())
            .collect()
    } else {
        Vec::new()
    };
    let leads =
        by_email(ctx, "Lead", &["Id", "Email", f.visitor_id.as_str()], &lead_emails, config.strip_plus_addressing)
            .await?;
    meter.step("lookup", Some("read_contacts"));
    crate::testhook::crash_point("gather");

    // Decide each person's write.
    let mut writes: Vec<Pending> = Vec::new();
    for person in people {
        let vid = person.visitor.visitor_id.clone();
        if let Some(found) = contacts.get(&person.email) {
            match pick(found, &f.visitor_id, &vid) {
                Ok(record) => match update_of(config, "Contact", record, person.visitor) {
                    Some(fields) => {
                        writes.push(Pending { salesforce_id: text(record, "Id"), person, object: "Contact", fields })
                    }
                    None => {
                        report.unchanged += 1;
                        outcomes_kept.push(RecordOutcome {
                            object: "Contact".into(),
                            key: vid,
                            salesforce_id: text(record, "Id"),
                            action: Action::Unchanged,
                            changes: vec![],
                            error_code: None,
                            message: None,
                        });
                    }
                },
                Err(ids) => {
                    outcomes_kept.push(skipped(
                        "Contact",
                        &vid,
                        "AMBIGUOUS_CONTACT",
                        format!("{} Contacts have the e-mail {}: {}", ids.len(), person.email, ids.join(", ")),
                    ));
                    if report.ambiguous_samples.len() < 10 {
                        report.ambiguous_samples.push(super::AmbiguousSample {
                            pendo_account: vid,
                            candidates: ids,
                            reason: format!("several Contacts with the e-mail {}", person.email),
                        });
                    }
                }
            }
            continue;
        }
        match person.account.clone() {
            AccountMatch::Matched(account_id) => {
                let fields = create_of(config, person.visitor, &person.email, "Contact", |m| {
                    m.push(("AccountId".into(), json!(account_id)));
                });
                writes.push(Pending { person, object: "Contact", salesforce_id: None, fields });
            }
            AccountMatch::Ambiguous(candidates) => outcomes_kept.push(skipped(
                "Contact",
                &vid,
                "AMBIGUOUS_MATCH",
                format!("the visitor's account matches several Accounts: {}", candidates.join(", ")),
            )),
            AccountMatch::Unmatched if config.unmatched_account == UnmatchedAccount::Skip => {
                outcomes_kept.push(skipped(
                    "Contact",
                    &vid,
                    "UNMATCHED_ACCOUNT",
                    "the visitor's account matches no Salesforce Account (unmatched_account: skip)".into(),
                ));
            }
            AccountMatch::Unmatched => {
                if let Some(found) = leads.get(&person.email) {
                    match pick(found, &f.visitor_id, &vid) {
                        Ok(record) => match update_of(config, "Lead", record, person.visitor) {
                            Some(fields) => writes.push(Pending {
                                salesforce_id: text(record, "Id"),
                                person,
                                object: "Lead",
                                fields,
                            }),
                            None => report.unchanged += 1,
                        },
                        Err(ids) => outcomes_kept.push(skipped(
                            "Lead",
                            &vid,
                            "AMBIGUOUS_LEAD",
                            format!("{} Leads have the e-mail {}: {}", ids.len(), person.email, ids.join(", ")),
                        )),
                    }
                    continue;
                }
                let company = person
                    .visitor
                    .account_id
                    .as_deref()
                    .and_then(|a| account_names.get(a).copied())
                    .map(str::to_owned)
                    .or_else(|| person.email.rsplit_once('@').map(|(_, d)| d.to_owned()))
                    .unwrap_or_else(|| "[not provided]".into());
                let lead_source = config.lead_source.clone();
                let fields = create_of(config, person.visitor, &person.email, "Lead", |m| {
                    m.push(("Company".into(), json!(truncate(&company, 255))));
                    if let Some(source) = lead_source {
                        m.push(("LeadSource".into(), json!(source)));
                    }
                });
                writes.push(Pending { person, object: "Lead", salesforce_id: None, fields });
            }
        }
    }
    let mut fields_changed: BTreeMap<String, usize> = BTreeMap::new();
    for w in &writes {
        for (field, _) in &w.fields {
            *fields_changed.entry(format!("{}.{field}", w.object)).or_default() += 1;
        }
    }
    report.fields_changed = fields_changed;
    report.changed = writes.len();
    report.samples = writes
        .iter()
        .take(10)
        .map(|w| Sample {
            pendo_account: w.person.visitor.visitor_id.clone(),
            salesforce_id: w.salesforce_id.clone().unwrap_or_else(|| format!("(new {})", w.object)),
            fields: w.fields.clone(),
        })
        .collect();

    // The plan: creates as the create stage prices them (before preflight has said whether
    // the key field is unique: the dearer path), updates one Collections call per 200.
    let max_first_visit = visitors.iter().map(|v| v.first_visit_ms).max();
    let first_visit: HashMap<String, i64> =
        writes.iter().map(|w| (w.person.visitor.visitor_id.clone(), w.person.visitor.first_visit_ms)).collect();
    let (updates, creates): (Vec<Pending>, Vec<Pending>) = writes.into_iter().partition(|w| w.salesforce_id.is_some());
    let groups: Vec<Group> = creates.iter().map(|w| group_of(config, w)).collect();
    let update_calls: u64 = ["Contact", "Lead"]
        .iter()
        .map(|o| updates.iter().filter(|w| w.object == *o).count().div_ceil(COLLECTION_SIZE) as u64)
        .sum();
    let sends = groups.len() + updates.len();
    report.plan = Plan {
        path: if sends == 1 { WritePath::Single } else { WritePath::Collections },
        send: sends,
        deferred: 0,
        write_calls: super::create::calls_for(&groups, groups.len(), &super::create::not_unique) + update_calls,
        calls_one_by_one: sends as u64,
    };
    if options.dry_run {
        return finish_report(ctx, workflow, report, meter, outcomes_kept, stored.as_deref(), None, options).await;
    }
    let Some(run_id) = run_id else { return Ok(report) };
    let spent_since_limits = |m: &Meter<'_>| m.calls.values().sum::<u64>().saturating_sub(lazy.own_calls());

    let budget = if sends > 0 {
        let read = lazy.get(ctx).await?.clone();
        meter.step("budget", Some("read_limits"));
        report.budget = read.clone();
        read
    } else {
        budget
    };
    // Preflight once for both stages: a field with a problem is never sent.
    let quarantine = if sends > 0 {
        crate::preflight::run(&ctx.salesforce, &ctx.config, workflow).await?
    } else {
        crate::preflight::Quarantine::default()
    };
    meter.step("preflight", Some("preflight"));
    report.preflight.problems = quarantine.problems().to_vec();

    // Creates, through the create stage (exactly once, never clobbering, within the budget).
    let allowance = budget.available.saturating_sub(spent_since_limits(&meter));
    let results = super::create::deliver_checked(
        ctx,
        workflow,
        &groups,
        &quarantine,
        allowance,
        &budget,
        &mut meter,
        &mut report,
        now,
    )
    .await?;
    outcomes_kept.extend(super::create::history(&groups, &results, &mut report));
    let ledger = super::create::ledger(&groups, &results);
    let mut prints = Vec::new();
    // Visitors not done: their first visit holds the cursor (unless a person dismissed the refusal).
    let mut unfinished: Vec<(&'static str, String)> = Vec::new();
    for ((group, result), w) in groups.iter().zip(&results).zip(&creates) {
        match result.made.first().and_then(|c| match c {
            super::create::Created::New { id } => Some(id),
            _ => None,
        }) {
            Some(id) => prints.extend(prints_of(&workflow.name, w.object, id, &w.fields, now)),
            None if !result.complete() => unfinished.push((w.object, group.subject.clone())),
            None => {}
        }
    }

    // Updates, through the update and record stages (reserve, deliver, settle, read back, keep).
    let mut dismissed = std::collections::HashSet::new();
    for object in ["Contact", "Lead"] {
        let changes: Vec<Change> = updates
            .iter()
            .filter(|w| w.object == object)
            .map(|w| Change {
                key: w.person.visitor.visitor_id.clone(),
                salesforce_id: w.salesforce_id.clone().unwrap_or_default(),
                fields: crate::change::named(w.fields.iter().cloned()),
                prints: w.fields.iter().map(|(_, v)| fingerprint(v)).collect(),
            })
            .collect();
        if changes.is_empty() {
            continue;
        }
        let (changes, held) = deliver::hold_back(&quarantine, object, &[], changes);
        report.preflight.records_held_back += held.len();
        for h in &held {
            outcomes_kept.push(h.outcome(object));
            unfinished.push((object, h.change.key.clone()));
        }
        let allowance = Allowance { calls: budget.available.saturating_sub(spent_since_limits(&meter)) };
        let plan = crate::plan::plan(changes.len(), workflow.max_latency, allowance, &CostModel::default());
        let updated = super::update::deliver(
            ctx,
            &workflow.name,
            object,
            &plan,
            changes,
            &budget,
            &mut meter,
            now,
            &|_| {},
            run_id,
        )
        .await?;
        let waiting = updated.delivery.failed.iter().map(|f| &f.change).chain(&updated.deferred);
        unfinished.extend(waiting.map(|c| (object, c.key.clone())));
        let scope = scope(&workflow.name, object);
        let how = super::update::Recording { object, scope: &scope, ledger_key: |c| &c.key, note: &|_| None };
        dismissed.extend(super::update::record(ctx, &workflow.name, run_id, &how, updated, &mut report, now).await?);
    }
    report.plan.deferred = report.deferred;
    crate::testhook::crash_point("record");
    ctx.store.record_outcomes(run_id, &[], &prints).await?;
    dismissed.extend(ledger.settle(ctx, &workflow.name, run_id, now).await?);
    // A deferred, held or refused visitor holds the cursor, so the next run (or a replay) reads
    // it again and derives its record afresh; one whose refusal a person dismissed does not.
    let hold = unfinished
        .iter()
        .filter(|(object, key)| !dismissed.contains(&((*object).to_owned(), key.clone())))
        .filter_map(|(_, key)| first_visit.get(key).copied())
        .min();
    let next = cursor_after(hold, max_first_visit);
    finish_report(ctx, workflow, report, meter, outcomes_kept, stored.as_deref(), next, options).await
}

/// Where the cursor goes: just at the oldest deferred or refused visitor (so it is read again),
/// else the newest first visit read.
fn cursor_after(hold: Option<i64>, newest: Option<i64>) -> Option<i64> {
    hold.or(newest)
}

#[allow(clippy::too_many_arguments)]
async fn finish_report(
    ctx: &Context,
    workflow: &Workflow,
    mut report: RunReport,
    meter: Meter<'_>,
    outcomes: Vec<RecordOutcome>,
    stored: Option<&str>,
    next: Option<i64>,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    if let (Some(run_id), false) = (report.run_id, options.dry_run) {
        for chunk in outcomes.chunks(5_000) {
            ctx.store.record_outcomes(run_id, chunk, &[]).await?;
        }
        if let Some(next) = next {
            let next = next.to_string();
            if stored != Some(next.as_str()) {
                // A stale writer (another worker advanced it meanwhile) leaves it: both read the
                // same visitors, and whatever it holds back is read again.
                ctx.store.advance_cursor(&workflow.name, CURSOR, stored.map(str::to_owned), next).await?;
            }
        }
    }
    if options.dry_run {
        return Ok(report.planned(meter));
    }
    super::settle(ctx, &workflow.name, ctx.clock.now(), meter, &mut report).await?;
    Ok(report)
}

/// One group of one record: the person's new Contact or Lead, keyed by the visitor id in the
/// visitor-id external-ID field (so Salesforce itself makes a repeated create find the record).
fn group_of(config: &NewUsersConfig, w: &Pending<'_>) -> Group {
    let key_field = &config.contact_fields.visitor_id;
    let fields: Map<String, Value> = w.fields.iter().filter(|(f, _)| f != key_field).cloned().collect();
    let account_id = fields.get("AccountId").and_then(Value::as_str).unwrap_or_default().to_owned();
    Group {
        subject: w.person.visitor.visitor_id.clone(),
        account_id,
        note: format!("a new {} for a person Pendo saw first", w.object),
        records: vec![NewRecord {
            object: w.object.to_owned(),
            key: w.person.visitor.visitor_id.clone(),
            key_field: key_field.clone(),
            fields,
            link: None,
        }],
    }
}

/// The fingerprints of what was written to record `id`, kept as the values last sent.
fn prints_of(
    workflow: &str,
    object: &str,
    id: &str,
    fields: &[(String, Value)],
    now: DateTime<Utc>,
) -> Vec<FingerprintPut> {
    let scope = scope(workflow, object);
    fields
        .iter()
        .map(|(field, value)| FingerprintPut {
            scope: scope.clone(),
            key: id.to_owned(),
            field: field.clone(),
            fingerprint: fingerprint(value),
            written_at: now,
            value: Some(value.clone()),
        })
        .collect()
}

fn text(record: &Map<String, Value>, field: &str) -> Option<String> {
    record.get(field).and_then(Value::as_str).map(str::to_owned)
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Records of `object` whose e-mail is one of `emails` (normalised), by normalised e-mail.
/// SOQL compares text case-insensitively, so the lower-case forms find any spelling.
async fn by_email(
    ctx: &Context,
    object: &'static str,
    fields: &[&str],
    emails: &[&str],
    strip_plus: bool,
) -> Result<HashMap<String, Vec<Map<String, Value>>>, RunError> {
    let mut out: HashMap<String, Vec<Map<String, Value>>> = HashMap::new();
    for chunk in emails.chunks(EMAILS_PER_QUERY) {
        let soql = SoqlQuery::select(fields.iter().copied(), object)
            .filter(Condition::in_list("Email", chunk.iter().copied()))
            .build()
            .map_err(|e| RunError::Salesforce {
                what: "e-mail lookup",
                source: salesforce::Error::InvalidInput(e.to_string()),
            })?;
        let rows: Vec<Map<String, Value>> =
            ctx.salesforce.query_collect(soql).await.map_err(sf_err("e-mail lookup"))?;
        for row in rows {
            if let Some(email) = row.get("Email").and_then(Value::as_str).and_then(|e| normalise_email(e, strip_plus)) {
                out.entry(email).or_default().push(row);
            }
        }
    }
    Ok(out)
}

/// The one record found for a person: the only one, or the only one already carrying this
/// visitor id; otherwise every candidate's Id.
fn pick<'r>(
    found: &'r [Map<String, Value>],
    id_field: &str,
    visitor: &str,
) -> Result<&'r Map<String, Value>, Vec<String>> {
    if let [only] = found {
        return Ok(only);
    }
    let ours: Vec<&Map<String, Value>> =
        found.iter().filter(|r| r.get(id_field).and_then(Value::as_str) == Some(visitor)).collect();
    match ours.as_slice() {
        [one] => Ok(one),
        _ => Err(found.iter().filter_map(|r| text(r, "Id")).collect()),
    }
}

fn datetime(ms: Option<DateTime<Utc>>) -> Value {
    ms.map_or(Value::Null, |d| json!(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
}

/// Whether `a` (as Salesforce sent it) and `b` (as we would write it) are the same value:
/// date-times compare as instants, whatever their text form.
fn same(a: Option<&Value>, b: &Value) -> bool {
    let a = a.unwrap_or(&Value::Null);
    if a == b {
        return true;
    }
    let instant = |v: &Value| v.as_str().and_then(|s| salesforce::rest::describe::sf_datetime::parse(s).ok());
    matches!((instant(a), instant(b)), (Some(x), Some(y)) if x == y)
}

/// The fields a found record should change: the visitor id when the record has none (never
/// re-pointing one linked to another visitor), and the visit times when they moved.
fn update_of(
    config: &NewUsersConfig,
    object: &str,
    record: &Map<String, Value>,
    visitor: &NewVisitor,
) -> Option<Vec<(String, Value)>> {
    let f = &config.contact_fields;
    let mut fields = Vec::new();
    let current = record.get(&f.visitor_id).and_then(Value::as_str).filter(|s| !s.is_empty());
    if current.is_none() {
        fields.push((f.visitor_id.clone(), json!(visitor.visitor_id)));
    }
    if object == "Contact" {
        let wanted = [
            (f.last_visit.as_ref(), datetime(visitor.last_visit())),
            (f.first_visit.as_ref(), datetime(visitor.first_visit())),
        ];
        for (field, value) in wanted {
            if let Some(field) = field
                && !value.is_null()
                && !same(record.get(field), &value)
            {
                fields.push((field.clone(), value));
            }
        }
    }
    (!fields.is_empty()).then_some(fields)
}

/// A new record's fields: the visitor id (the upsert key), names, e-mail, visit times (Contacts
/// only: a Lead is not assumed to have them), and what `extra` adds.
fn create_of(
    config: &NewUsersConfig,
    visitor: &NewVisitor,
    email: &str,
    object: &str,
    extra: impl FnOnce(&mut Vec<(String, Value)>),
) -> Vec<(String, Value)> {
    let f = &config.contact_fields;
    let (first, last) = split_name(visitor.full_name.as_deref(), email);
    let original = visitor.email.as_deref().map(str::trim).unwrap_or(email);
    let mut fields = vec![(f.visitor_id.clone(), json!(visitor.visitor_id))];
    if let Some(first) = first {
        fields.push(("FirstName".into(), json!(truncate(&first, 40))));
    }
    fields.push(("LastName".into(), json!(truncate(&last, 80))));
    fields.push(("Email".into(), json!(truncate(original, 80))));
    if object == "Contact" {
        for (field, value) in [
            (f.last_visit.as_ref(), datetime(visitor.last_visit())),
            (f.first_visit.as_ref(), datetime(visitor.first_visit())),
        ] {
            if let Some(field) = field
                && !value.is_null()
            {
                fields.push((field.clone(), value));
            }
        }
    }
    extra(&mut fields);
    fields
}

/// `Ada King Lovelace` → (`Ada King`, `Lovelace`); no name → the e-mail's local part as the
/// last name, which Salesforce requires.
fn split_name(full: Option<&str>, email: &str) -> (Option<String>, String) {
    let words: Vec<&str> = full.map(|f| f.split_whitespace().collect()).unwrap_or_default();
    match words.split_last() {
        Some((last, [])) => (None, (*last).to_owned()),
        Some((last, rest)) => (Some(rest.join(" ")), (*last).to_owned()),
        None => (None, email.split('@').next().unwrap_or(email).to_owned()),
    }
}

/// The new-users-to-contacts template, for the registry ([`crate::config::template`]).
impl template::Spec for NewUsersConfig {
    fn keys() -> &'static [&'static str] {
        &[
            "matching",
            "recheck_matches_after",
            "overlap",
            "contact_fields",
            "strip_plus_addressing",
            "unmatched_account",
            "lead_source",
        ]
    }

    fn build(key: &str, w: &template::Wire, errors: &mut template::Errors) -> Option<Self> {
        crate::config::new_users::build(key, w, errors)
    }

    fn to_wire(&self, out: &mut template::Wire) {
        crate::config::new_users::to_wire(self, out);
    }

    fn flows(&self, key: &dyn Fn(&str) -> String) -> template::Flows {
        use template::{FieldRef, Flows};
        let c = &self.contact_fields;
        let mut writes = vec![(FieldRef::salesforce("Contact", &c.visitor_id), key("contact_fields.visitor_id"))];
        if let Some(f) = &c.last_visit {
            writes.push((FieldRef::salesforce("Contact", f), key("contact_fields.last_visit")));
        }
        if let Some(f) = &c.first_visit {
            writes.push((FieldRef::salesforce("Contact", f), key("contact_fields.first_visit")));
        }
        if self.unmatched_account == UnmatchedAccount::Lead {
            writes.push((FieldRef::salesforce("Lead", &c.visitor_id), key("contact_fields.visitor_id")));
        }
        let reads = ["lastvisit", "firstvisit"]
            .into_iter()
            .map(|f| (FieldRef::pendo("visitor", "auto", f), key("contact_fields")))
            .chain(std::iter::once((FieldRef::pendo("visitor", "agent", "email"), key("contact_fields"))))
            .collect();
        Flows::to_salesforce(reads, writes)
    }

    fn requirements(&self, reqs: &mut template::Reqs) {
        use template::{Expect, Use};
        reqs.matching(&self.matching);
        let mut objects = vec!["Contact"];
        if self.unmatched_account == UnmatchedAccount::Lead {
            objects.push("Lead");
        }
        let f = &self.contact_fields;
        for object in objects {
            reqs.add(object, &f.visitor_id, Use::Key, Expect::Text, "contact_fields.visitor_id");
            for (field, leaf) in [(&f.last_visit, "last_visit"), (&f.first_visit, "first_visit")] {
                if let Some(field) = field {
                    reqs.add(object, field, Use::Upsert, Expect::Date, &format!("contact_fields.{leaf}"));
                }
            }
        }
        if let Some(source) = &self.lead_source
            && self.unmatched_account == UnmatchedAccount::Lead
        {
            reqs.add("Lead", "LeadSource", Use::Create, Expect::Value(source.clone()), "lead_source");
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context, w: &'a Workflow, options: &'a RunOptions) -> template::RunFuture<'a> {
        Box::pin(run(ctx, w, self, options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_normalise_case_space_and_optionally_plus_tags() {
        assert_eq!(normalise_email("  Jane.Doe@Acme.COM ", false).as_deref(), Some("jane.doe@acme.com"));
        assert_eq!(normalise_email("jane+news@acme.com", false).as_deref(), Some("jane+news@acme.com"));
        assert_eq!(normalise_email("jane+news@acme.com", true).as_deref(), Some("jane@acme.com"));
        assert_eq!(normalise_email("+news@acme.com", true), None);
        assert_eq!(normalise_email("no-at-sign", false), None);
        assert_eq!(normalise_email("a b@acme.com", false), None);
        assert_eq!(normalise_email("a@localhost", false), None);
    }

    #[test]
    fn names_split_on_the_last_word() {
        assert_eq!(split_name(Some("Ada King Lovelace"), "a@x.io"), (Some("Ada King".into()), "Lovelace".into()));
        assert_eq!(split_name(Some("Cher"), "a@x.io"), (None, "Cher".into()));
        assert_eq!(split_name(None, "ada@x.io"), (None, "ada".into()));
        assert_eq!(split_name(Some("   "), "ada@x.io"), (None, "ada".into()));
    }

    #[test]
    fn the_cursor_holds_at_a_deferred_visitor() {
        assert_eq!(cursor_after(Some(5), Some(9)), Some(5));
        assert_eq!(cursor_after(None, Some(9)), Some(9));
        assert_eq!(cursor_after(None, None), None);
    }
}
