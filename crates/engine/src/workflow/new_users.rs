//! The new-users-to-contacts template: visitors Pendo identified since the cursor become
//! Salesforce Contacts. Each is looked up by normalised e-mail; a Contact found gets the
//! configured fields (only those whose value moved); one not found is created under the Account
//! its Pendo account matches (or, per config, as a Lead, or skipped).
//!
//! Never a duplicate, at three levels: visitors with the same normalised e-mail in one batch are
//! one person (the first seen wins, the others are reported); a create is claimed in the
//! store's idempotency table under the e-mail before it is sent, so a second worker running at
//! the same moment defers rather than creating the same person again; and the create itself is
//! an upsert on the visitor-id external-ID field, so a retry after a lost response updates the
//! record it already made.
//!
//! The cursor is the newest first visit handled; it never passes a visitor that was deferred
//! (budget, another worker's create in flight, a transient refusal) or refused (kept in the
//! failure ledger, unless a person dismissed it), so those come back next run.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use salesforce::{Condition, SoqlQuery};
use serde_json::{Map, Value, json};

use super::state_of;
use super::{Context, FailureSample, Meter, RunError, RunOptions, RunReport, Sample};
use crate::change::fingerprint;
use crate::config::{EngagementConfig, MatchRule, NewUsersConfig, UnmatchedAccount, Workflow};
use crate::deliver::{self, RecordRetry};
use crate::extract::{AccountFacts, Extractor, NewVisitor};
use crate::matching::Outcome;
use crate::plan::{COLLECTION_SIZE, Plan, WritePath};
use crate::store::{Action, CreateState, FieldChange, FingerprintPut, RecordOutcome, RunId};

/// The cursor's name in the CursorStore: epoch milliseconds of the newest first visit handled.
pub const CURSOR: &str = "first_visit";
/// A create another worker claimed longer ago than this is taken to have died with it.
const PENDING_LEASE: chrono::Duration = chrono::Duration::minutes(10);
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

/// The idempotency key of creating a record for `email`: one per object and person, shared by
/// every worker and every workflow.
fn create_key(object: &str, email: &str) -> String {
    format!("{}-email:{email}", object.to_ascii_lowercase())
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
    /// The idempotency key claimed for a create.
    claim: Option<String>,
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
    let budget = crate::budget::today(ctx, now).await?;
    meter.step("budget", Some("read_limits"));
    let limits_calls: u64 = meter.calls.values().sum();
    let mut report = RunReport::new(&workflow.name, options.dry_run, run_id, budget.clone());

    // The cursor: first visits at or after it are new. A first run looks back `window_days`.
    let stored = ctx.store.cursor(&workflow.name, CURSOR).await?;
    let cursor_ms = stored
        .as_deref()
        .and_then(|c| c.parse::<i64>().ok())
        .unwrap_or_else(|| (now - chrono::Duration::days(i64::from(workflow.window_days))).timestamp_millis());
    let overlap_ms = i64::try_from(config.overlap.as_millis()).unwrap_or(i64::MAX);
    let extractor = Extractor::new(&ctx.pendo);
    let visitors = extractor.new_visitors(cursor_ms.saturating_sub(overlap_ms)).await?;
    report.pendo_accounts = visitors.len();
    meter.step("extract", None);
    if visitors.is_empty() {
        report.pendo_calls = u64::from(extractor.stats().pendo_calls);
        return finish_report(ctx, workflow, report, meter, Vec::new(), stored.as_deref(), None, options).await;
    }

    // The visitors' accounts → Salesforce Accounts, with the same rule chain (and the same kind
    // of cached id map) as engagement-scores.
    let mut metadata_fields: Vec<(String, String)> = config
        .matching
        .iter()
        .filter_map(|r| match r {
            MatchRule::PendoMetadata { group, field } => Some((group.name().to_owned(), field.clone())),
            _ => None,
        })
        .collect();
    metadata_fields.push(("agent".into(), "name".into()));
    let facts = extractor.account_facts(&metadata_fields).await?;
    report.pendo_calls = u64::from(extractor.stats().pendo_calls);
    let matcher = EngagementConfig {
        matching: config.matching.clone(),
        recheck_matches_after: config.recheck_matches_after,
        core_features: Vec::new(),
        score: Default::default(),
        fields: Default::default(),
    };
    let outcomes =
        crate::matching::match_accounts(ctx, workflow, &matcher, &facts, &[], now, options.dry_run, &budget).await?;
    meter.step("match", Some("read_accounts"));
    let account_names: HashMap<&str, &str> = facts
        .iter()
        .filter_map(|f: &AccountFacts| Some((f.account_id.as_str(), f.metadata.get("agent.name")?.as_str())))
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
            Some(Outcome::Ambiguous { candidates, .. }) => AccountMatch::Ambiguous(candidates.clone()),
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
    let spent: u64 = meter.calls.values().sum::<u64>() - limits_calls;
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
                    Some(fields) => writes.push(Pending {
                        salesforce_id: text(record, "Id"),
                        person,
                        object: "Contact",
                        fields,
                        claim: None,
                    }),
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
                writes.push(Pending { person, object: "Contact", salesforce_id: None, fields, claim: None });
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
                                claim: None,
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
                writes.push(Pending { person, object: "Lead", salesforce_id: None, fields, claim: None });
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

    // Plan: Collections calls per object and kind of write.
    let groups = |object: &str, create: bool| {
        writes.iter().filter(|w| w.object == object && w.salesforce_id.is_none() == create).count()
    };
    let write_calls: u64 = [("Contact", true), ("Contact", false), ("Lead", true), ("Lead", false)]
        .iter()
        .map(|(o, c)| groups(o, *c).div_ceil(COLLECTION_SIZE) as u64)
        .sum();
    let reads_spent: u64 = meter.calls.values().sum::<u64>() - limits_calls;
    report.plan = Plan {
        path: if writes.len() == 1 { WritePath::Single } else { WritePath::Collections },
        send: writes.len(),
        deferred: 0,
        write_calls,
        calls_one_by_one: writes.len() as u64,
    };
    let min_first_visit = |ws: &[Pending]| ws.iter().map(|w| w.person.visitor.first_visit_ms).min();
    let max_first_visit = visitors.iter().map(|v| v.first_visit_ms).max();
    if options.dry_run {
        return finish_report(ctx, workflow, report, meter, outcomes_kept, stored.as_deref(), None, options).await;
    }
    let Some(run_id) = run_id else { return Ok(report) };
    let day = now.date_naive();
    let available = budget.available.saturating_sub(reads_spent);
    let reserved_ok = write_calls == 0
        || (write_calls <= available
            && ctx.store.reserve_budget(day, &workflow.name, write_calls, budget.cap, now).await?);
    crate::testhook::crash_point("plan");
    if !reserved_ok {
        let hold = min_first_visit(&writes);
        report.deferred = writes.len();
        report.plan.deferred = writes.len();
        for w in writes {
            outcomes_kept.push(RecordOutcome {
                object: w.object.into(),
                key: w.person.visitor.visitor_id.clone(),
                salesforce_id: w.salesforce_id,
                action: Action::Deferred,
                changes: changes_of(&w.fields),
                error_code: None,
                message: Some("over the API budget: sent in a later run".into()),
            });
        }
        settle(ctx, day, &workflow.name, 0, reads_spent, now).await?;
        let next = cursor_after(hold, max_first_visit);
        return finish_report(ctx, workflow, report, meter, outcomes_kept, stored.as_deref(), next, options).await;
    }

    // Claim every create under its e-mail, so a second worker cannot create the same person.
    // A claim made before this run started, while no other run of the workflow is live (the
    // run lease makes this run the only one), was left by a run that died or stalled: it is
    // taken over at once, after the e-mail look-up below, instead of after PENDING_LEASE.
    // Asked of the store only when a claim older than this run is found.
    let mut others_live: Option<bool> = None;
    let mut deferred: Vec<Pending> = Vec::new();
    let mut stale: Vec<Pending> = Vec::new();
    let mut ready: Vec<Pending> = Vec::new();
    for mut w in writes {
        if w.salesforce_id.is_some() {
            ready.push(w);
            continue;
        }
        let key = create_key(w.object, &w.person.email);
        match ctx.store.begin_create(&key, &workflow.name, now).await? {
            CreateState::New => {
                w.claim = Some(key);
                ready.push(w);
            }
            CreateState::Committed { salesforce_id } => {
                // Created by another worker since our lookup: update that record instead.
                w.fields.retain(|(f, _)| is_update_field(config, f));
                w.salesforce_id = Some(salesforce_id);
                ready.push(w);
            }
            CreateState::Pending { since } => {
                let held = now - since < PENDING_LEASE
                    && (since >= now || another_run_live(ctx, &workflow.name, run_id, &mut others_live).await?);
                if held {
                    deferred.push(w);
                } else {
                    w.claim = Some(key);
                    stale.push(w);
                }
            }
        }
    }
    // A claim left by a worker that died: it may have created the record before dying. Look
    // again before creating (its upsert key may have been another visitor id).
    if !stale.is_empty() {
        let emails: Vec<&str> = stale.iter().map(|w| w.person.email.as_str()).collect();
        let contacts = by_email(ctx, "Contact", &["Id", "Email"], &emails, config.strip_plus_addressing).await?;
        for mut w in stale {
            match contacts.get(&w.person.email).and_then(|found| found.first()).and_then(|r| text(r, "Id")) {
                Some(id) if w.object == "Contact" => {
                    if let Some(key) = w.claim.take() {
                        ctx.store.commit_create(&key, &id, now).await?;
                    }
                    w.fields.retain(|(f, _)| is_update_field(config, f));
                    w.salesforce_id = Some(id);
                    ready.push(w);
                }
                _ => ready.push(w),
            }
        }
    }

    let (updates, creates): (Vec<Pending>, Vec<Pending>) = ready.into_iter().partition(|w| w.salesforce_id.is_some());
    let mut written: Vec<(Pending, String, Action)> = Vec::new();
    let mut failed: Vec<(Pending, String, String)> = Vec::new();
    let (contact_creates, lead_creates): (Vec<Pending>, Vec<Pending>) =
        creates.into_iter().partition(|w| w.object == "Contact");
    for (object, list) in [("Contact", contact_creates), ("Lead", lead_creates)] {
        if list.is_empty() {
            continue;
        }
        send_creates(
            ctx,
            object,
            &config.contact_fields.visitor_id,
            list,
            now,
            &mut written,
            &mut failed,
            &mut deferred,
        )
        .await?;
    }
    let (contact_updates, lead_updates): (Vec<Pending>, Vec<Pending>) =
        updates.into_iter().partition(|w| w.object == "Contact");
    for (object, list) in [("Contact", contact_updates), ("Lead", lead_updates)] {
        if list.is_empty() {
            continue;
        }
        send_updates(ctx, object, list, &mut written, &mut failed, &mut deferred).await;
    }
    meter.step("deliver", Some("collections"));
    crate::testhook::crash_point("record");
    let spent_here: u64 = meter.calls.values().sum::<u64>() - limits_calls;
    settle(ctx, day, &workflow.name, write_calls, spent_here, now).await?;

    // Outcomes and fingerprints, then the cursor.
    report.written = written.len();
    report.failed = failed.len();
    report.deferred = deferred.len();
    report.plan.deferred = deferred.len();
    report.failures = failed
        .iter()
        .take(10)
        .map(|(w, code, message)| FailureSample {
            salesforce_id: w.salesforce_id.clone().unwrap_or_default(),
            code: code.clone(),
            message: message.clone(),
        })
        .collect();
    let mut prints = Vec::new();
    let mut ledger = super::ledger::Ledger::default();
    for (w, id, action) in &written {
        ledger.written(w.object, &w.person.visitor.visitor_id);
        let scope = scope(&workflow.name, w.object);
        prints.extend(w.fields.iter().map(|(field, value)| FingerprintPut {
            scope: scope.clone(),
            key: id.clone(),
            field: field.clone(),
            fingerprint: fingerprint(value),
            written_at: now,
            value: Some(value.clone()),
        }));
        outcomes_kept.push(RecordOutcome {
            object: w.object.into(),
            key: w.person.visitor.visitor_id.clone(),
            salesforce_id: Some(id.clone()),
            action: *action,
            changes: changes_of(&w.fields),
            error_code: None,
            message: None,
        });
    }
    for (w, code, message) in &failed {
        ledger.refused(super::ledger::Refusal {
            object: w.object.into(),
            key: w.person.visitor.visitor_id.clone(),
            salesforce_id: w.salesforce_id.clone(),
            payload: Value::Object(w.fields.iter().cloned().collect()),
            code: code.clone(),
            message: message.clone(),
            fields: w.fields.iter().map(|(f, _)| f.clone()).collect(),
        });
        outcomes_kept.push(RecordOutcome {
            object: w.object.into(),
            key: w.person.visitor.visitor_id.clone(),
            salesforce_id: w.salesforce_id.clone(),
            action: Action::Failed,
            changes: changes_of(&w.fields),
            error_code: Some(code.clone()),
            message: Some(message.clone()),
        });
    }
    for w in &deferred {
        outcomes_kept.push(RecordOutcome {
            object: w.object.into(),
            key: w.person.visitor.visitor_id.clone(),
            salesforce_id: w.salesforce_id.clone(),
            action: Action::Deferred,
            changes: changes_of(&w.fields),
            error_code: None,
            message: Some(
                "sent in a later run (another worker was creating this person, or Salesforce was busy)".into(),
            ),
        });
    }
    ctx.store.record_outcomes(run_id, &[], &prints).await?;
    let dismissed = ledger.settle(ctx, &workflow.name, run_id, now).await?;
    // A refused visitor holds the cursor like a deferred one, so the next run (or a replay)
    // reads it again and derives its record afresh; one whose refusal a person dismissed does not.
    let refused = failed
        .iter()
        .filter(|(w, _, _)| !dismissed.contains(&(w.object.to_owned(), w.person.visitor.visitor_id.clone())))
        .map(|(w, _, _)| w.person.visitor.first_visit_ms)
        .min();
    let hold = [min_first_visit(&deferred), refused].into_iter().flatten().min();
    let next = cursor_after(hold, max_first_visit);
    finish_report(ctx, workflow, report, meter, outcomes_kept, stored.as_deref(), next, options).await
}

/// Whether a run of `workflow` other than `run` is live, asked of the store once per run.
async fn another_run_live(
    ctx: &Context,
    workflow: &str,
    run: RunId,
    known: &mut Option<bool>,
) -> Result<bool, RunError> {
    if let Some(live) = *known {
        return Ok(live);
    }
    let runs = ctx.store.list_runs(Some(workflow), 20).await?;
    let live = runs.iter().any(|r| r.state == crate::store::RunState::Running && r.id != run);
    *known = Some(live);
    Ok(live)
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
                ctx.store.advance_cursor(&workflow.name, CURSOR, stored, &next).await?;
            }
        }
    }
    report.budget.this_run = meter.calls.values().sum();
    report.api_calls = meter.calls;
    report.timings = meter.timings;
    if !options.dry_run {
        report.state = state_of(&report).as_str().into();
    }
    Ok(report)
}

async fn settle(
    ctx: &Context,
    day: chrono::NaiveDate,
    workflow: &str,
    reserved: u64,
    spent: u64,
    now: DateTime<Utc>,
) -> Result<(), RunError> {
    if reserved > 0 || spent > 0 {
        ctx.store.settle_budget(day, workflow, reserved, spent, now).await?;
    }
    Ok(())
}

fn changes_of(fields: &[(String, Value)]) -> Vec<FieldChange> {
    fields.iter().map(|(f, v)| FieldChange { field: f.clone(), before: None, after: v.clone() }).collect()
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

/// Whether `field` is one an update may set (creates also set names, e-mail and the parent).
fn is_update_field(config: &NewUsersConfig, field: &str) -> bool {
    let f = &config.contact_fields;
    field == f.visitor_id || Some(field) == f.last_visit.as_deref() || Some(field) == f.first_visit.as_deref()
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

#[allow(clippy::too_many_arguments)]
async fn send_creates<'v>(
    ctx: &Context,
    object: &'static str,
    key_field: &str,
    list: Vec<Pending<'v>>,
    now: DateTime<Utc>,
    written: &mut Vec<(Pending<'v>, String, Action)>,
    failed: &mut Vec<(Pending<'v>, String, String)>,
    deferred: &mut Vec<Pending<'v>>,
) -> Result<(), RunError> {
    let mut rest = list.into_iter().peekable();
    while rest.peek().is_some() {
        let batch: Vec<Pending> = rest.by_ref().take(COLLECTION_SIZE).collect();
        let records: Vec<Map<String, Value>> = batch.iter().map(|w| w.fields.iter().cloned().collect()).collect();
        let result = ctx.salesforce.upsert_many(object, key_field, &records, false).await;
        crate::testhook::crash_point("create");
        match result {
            Ok(results) if results.len() == batch.len() => {
                for (w, r) in batch.into_iter().zip(results) {
                    match (r.success, r.id.as_ref()) {
                        (true, Some(id)) => {
                            if let Some(key) = &w.claim {
                                ctx.store.commit_create(key, id.as_str(), now).await?;
                            }
                            let action = if r.created == Some(false) { Action::Updated } else { Action::Created };
                            written.push((w, id.as_str().to_owned(), action));
                        }
                        _ => {
                            if let Some(key) = &w.claim {
                                ctx.store.abandon_create(key).await?;
                            }
                            let e = r.first_error();
                            let retry = e.is_some_and(|e| e.retry_class().is_retryable());
                            if retry {
                                deferred.push(w);
                            } else {
                                let code =
                                    e.map_or_else(|| "UNKNOWN".to_owned(), |e| e.status_code.as_str().to_owned());
                                let message =
                                    e.map_or_else(|| "refused without an error".to_owned(), |e| e.message.clone());
                                failed.push((w, code, message));
                            }
                        }
                    }
                }
            }
            other => {
                let (code, message, later) = match other {
                    Ok(results) => (
                        "RESULT_MISMATCH".to_owned(),
                        format!("Salesforce returned {} results for {} records", results.len(), batch.len()),
                        false,
                    ),
                    Err(e) => (
                        e.error_code().map_or_else(|| "REQUEST_FAILED".to_owned(), |c| c.as_str().to_owned()),
                        e.to_string(),
                        e.retry_class() == salesforce::RetryClass::NotNow || e.retry_class().is_retryable(),
                    ),
                };
                for w in batch {
                    // The request may or may not have landed; the claim stays only if it might
                    // have (an upsert repeated later finds the record by its key either way).
                    if let Some(key) = &w.claim {
                        ctx.store.abandon_create(key).await?;
                    }
                    if later { deferred.push(w) } else { failed.push((w, code.clone(), message.clone())) }
                }
            }
        }
    }
    Ok(())
}

async fn send_updates<'v>(
    ctx: &Context,
    object: &'static str,
    list: Vec<Pending<'v>>,
    written: &mut Vec<(Pending<'v>, String, Action)>,
    failed: &mut Vec<(Pending<'v>, String, String)>,
    deferred: &mut Vec<Pending<'v>>,
) {
    let changes: Vec<crate::change::Change> = list
        .iter()
        .enumerate()
        .map(|(i, w)| crate::change::Change {
            key: i.to_string(),
            salesforce_id: w.salesforce_id.clone().unwrap_or_default(),
            fields: w.fields.clone(),
            prints: w.fields.iter().map(|(f, v)| (f.clone(), fingerprint(v))).collect(),
        })
        .collect();
    let path = if changes.len() == 1 { WritePath::Single } else { WritePath::Collections };
    let d = deliver::deliver(&ctx.salesforce, object, path, changes, &RecordRetry::default(), &|_| {}).await;
    let mut slots: Vec<Option<Pending<'v>>> = list.into_iter().map(Some).collect();
    let mut take = |key: &str| key.parse::<usize>().ok().and_then(|i| slots.get_mut(i)).and_then(Option::take);
    for c in d.written {
        if let Some(w) = take(&c.key) {
            written.push((w, c.salesforce_id, Action::Updated));
        }
    }
    for f in d.failed {
        if let Some(w) = take(&f.change.key) {
            failed.push((w, f.code, f.message));
        }
    }
    for c in d.deferred {
        if let Some(w) = take(&c.key) {
            deferred.push(w);
        }
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
