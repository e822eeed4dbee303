//! The account-attributes-to-pendo template: Salesforce Accounts changed since the cursor
//! (`SystemModstamp`, re-reading an overlap) have their configured fields written into Pendo
//! account metadata, in batches, only the values that changed since usagesync last wrote them.
//!
//! Loops: the fields read here are never ones usagesync writes into Salesforce (the config
//! loader refuses that), so an Account that only usagesync touched since the last run holds the
//! same values and writes nothing. Such Accounts (last modified by the integration user, every
//! configured value as last written) are recorded as own changes and ignored; an Account last
//! modified by the integration user whose configured values did move is still written, because
//! a person may have changed them before usagesync's own write touched the record.

use crate::config::template;
use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use salesforce::{Condition, Order, SoqlQuery};
use serde_json::{Map, Value, json};

use super::state_of;
use super::{Context, Meter, RunError, RunOptions, RunReport, Sample};
use crate::change::{self, Change, Desired};
use crate::config::{Attribute, AttributeType, AttributesConfig, Workflow};
use crate::store::{Action, MatchStatus, RecordOutcome, RunId};

/// The cursor's name: the newest `SystemModstamp` handled, RFC 3339.
pub const CURSOR: &str = "system_modstamp";
const OBJECT: &str = "Account";

/// The fingerprint scope of the Pendo account values a workflow wrote.
pub fn scope(workflow: &str) -> String {
    format!("{workflow}:pendo-account")
}

pub(crate) async fn run(
    ctx: &Context,
    workflow: &Workflow,
    config: &AttributesConfig,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    super::recorded(ctx, workflow, options, |now, run_id| body(ctx, workflow, config, options, now, run_id)).await
}

/// A value at `path` (`Plan_Tier__c`, `Owner.Name`) of a query row; relationship paths walk the
/// nested records, and a missing parent gives null.
fn at_path<'r>(row: &'r Map<String, Value>, path: &str) -> &'r Value {
    let mut parts = path.split('.');
    let Some(first) = parts.next() else { return &Value::Null };
    let mut value = lookup(row, first);
    for part in parts {
        value = match value {
            Value::Object(m) => lookup(m, part),
            _ => return &Value::Null,
        };
    }
    value
}

/// Salesforce answers fields in their canonical case, which may differ from the config's.
fn lookup<'r>(m: &'r Map<String, Value>, key: &str) -> &'r Value {
    m.get(key).or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)).unwrap_or(&Value::Null)
}

/// The value Pendo gets for a Salesforce value; `None` when it cannot be converted.
pub fn convert(kind: AttributeType, v: &Value) -> Option<Value> {
    if v.is_null() {
        return Some(Value::Null);
    }
    match kind {
        AttributeType::Auto => Some(v.clone()),
        AttributeType::Text => Some(match v {
            Value::String(s) => json!(s),
            other => json!(other.to_string()),
        }),
        AttributeType::Number => match v {
            Value::Number(_) => Some(v.clone()),
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| json!(f)),
            _ => None,
        },
        AttributeType::Boolean => match v {
            Value::Bool(_) => Some(v.clone()),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(json!(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(json!(false)),
            _ => None,
        },
        AttributeType::Time => {
            let s = v.as_str()?;
            let instant = salesforce::rest::describe::sf_datetime::parse(s).ok().or_else(|| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc())
            })?;
            Some(json!(instant.timestamp_millis()))
        }
    }
}

/// Two User Ids name the same user when their 15-character forms agree.
fn same_user(a: &str, b: &str) -> bool {
    a.len() >= 15 && b.len() >= 15 && a[..15] == b[..15]
}

async fn body(
    ctx: &Context,
    workflow: &Workflow,
    config: &AttributesConfig,
    options: &RunOptions,
    now: DateTime<Utc>,
    run_id: Option<RunId>,
) -> Result<RunReport, RunError> {
    let sf = |what: &'static str| move |source| RunError::Salesforce { what, source };
    let mut meter = Meter::new(&ctx.salesforce);
    // It writes Pendo only: what the ledger and the last reading say is enough to refuse a spent
    // day before any read, and no run needs a `/limits` read of its own.
    let budget = crate::budget::Budget::new(now).known(ctx).await?;
    meter.step("budget", Some("read_limits"));
    let mut report = RunReport::new(&workflow.name, options.dry_run, run_id, budget.clone());
    if budget.available == 0 {
        return Err(RunError::OverBudget { needed: 1, left: 0 });
    }
    let quarantine = crate::preflight::run(&ctx.salesforce, &ctx.config, workflow).await?;
    meter.step("preflight", Some("preflight"));
    report.preflight.problems = quarantine.problems().to_vec();
    // A field the org does not have would make Salesforce refuse the whole query: it is left
    // out (and its Pendo field left alone) rather than sent as empty.
    let usable = |field: &str| !quarantine.concerns(OBJECT, field);
    // Pendo's half: a field Pendo lacks (or types otherwise) would make it refuse each account's
    // whole update, so only that field is held back.
    let wanted = crate::pendo_fields::wanted(workflow);
    let schema = ctx.pendo.metadata_schema(pendo::Kind::Account).await.map_err(|source| {
        RunError::Pendo(crate::extract::ExtractError::Pendo { query: "account metadata schema", source })
    })?;
    report.pendo_calls = 1;
    let gaps = crate::pendo_fields::gaps(&wanted, &schema);
    let pendo_usable = |a: &Attribute| !gaps.iter().any(|(w, _)| w.field == a.pendo);
    report.preflight.problems.extend(crate::pendo_fields::check(&ctx.config, &wanted, &schema));
    let attributes: Vec<&Attribute> =
        config.attributes.iter().filter(|a| usable(&a.salesforce) && pendo_usable(a)).collect();
    // Held-back fields keep the cursor where it is, so the Accounts read now are read again (and
    // their values sent) once the field is there, rather than passed over for good.
    let held_back = attributes.len() < config.attributes.len();
    let pendo_account_field = config.pendo_account.field.as_deref().filter(|f| usable(f));
    let integration_user = match &config.integration_user {
        Some(id) => id.clone(),
        None => ctx.salesforce.identity().await.map_err(sf("the token's user"))?.user_id.as_str().to_owned(),
    };

    let stored = ctx.store.cursor(&workflow.name, CURSOR).await?;
    let since = stored
        .as_deref()
        .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
        .map(|c| c.with_timezone(&Utc) - chrono::Duration::from_std(config.overlap).unwrap_or_default());
    let mut fields: Vec<&str> = vec!["Id", "SystemModstamp", "LastModifiedById"];
    fields.extend(pendo_account_field);
    fields.extend(attributes.iter().map(|a| a.salesforce.as_str()));
    // SOQL refuses a field selected twice (say `Id` also sent to Pendo), in any spelling.
    let mut seen = std::collections::HashSet::new();
    fields.retain(|f| seen.insert(f.to_ascii_lowercase()));
    let mut query = SoqlQuery::select(fields.iter().copied(), OBJECT).order_by("SystemModstamp", Order::Asc);
    if let Some(since) = since {
        query = query.filter(Condition::ge("SystemModstamp", since));
    }
    let soql = query.build().map_err(|e| RunError::Salesforce {
        what: "changed Accounts",
        source: salesforce::Error::InvalidInput(e.to_string()),
    })?;
    let rows: Vec<Map<String, Value>> = ctx.salesforce.query_collect(soql).await.map_err(sf("changed Accounts"))?;
    meter.step("read", Some("read_accounts"));
    crate::testhook::crash_point("gather");

    // Which Pendo account(s) each Account is.
    let mut from_map: HashMap<String, Vec<String>> = HashMap::new();
    if let Some(other) = &config.pendo_account.id_map_of {
        for e in ctx.store.id_map(other).await? {
            if let (MatchStatus::Matched, Some(id)) = (e.status, e.salesforce_id.as_deref()) {
                from_map.entry(id.chars().take(15).collect()).or_default().push(e.pendo_id.clone());
            }
        }
    }
    let written = ctx.store.fingerprints(&scope(&workflow.name)).await?;
    let mut changes: Vec<(Change, String, bool)> = Vec::new();
    let mut outcomes: Vec<RecordOutcome> = Vec::new();
    let mut newest: Option<DateTime<Utc>> = None;
    let mut stamps: HashMap<String, DateTime<Utc>> = HashMap::new();
    for row in &rows {
        let id = at_path(row, "Id").as_str().unwrap_or_default().to_owned();
        if let Some(stamp) =
            at_path(row, "SystemModstamp").as_str().and_then(|s| salesforce::rest::describe::sf_datetime::parse(s).ok())
        {
            newest = newest.max(Some(stamp));
            stamps.insert(id.clone(), stamp);
        }
        let mut pendo_ids: Vec<String> = Vec::new();
        if let Some(f) = pendo_account_field
            && let Some(p) = at_path(row, f).as_str().map(str::trim).filter(|p| !p.is_empty())
        {
            pendo_ids.push(p.to_owned());
        }
        if pendo_ids.is_empty() {
            pendo_ids = from_map.get(&id.chars().take(15).collect::<String>()).cloned().unwrap_or_default();
        }
        if pendo_ids.is_empty() {
            report.unmatched += 1;
            continue;
        }
        report.matched += 1;
        let own = at_path(row, "LastModifiedById").as_str().is_some_and(|u| same_user(u, &integration_user));
        let mut values = Vec::new();
        for a in &attributes {
            let raw = at_path(row, &a.salesforce);
            match convert(a.kind, raw) {
                Some(v) => values.push((a.pendo.clone(), v)),
                None => outcomes.push(RecordOutcome {
                    object: OBJECT.into(),
                    key: id.clone(),
                    salesforce_id: Some(id.clone()),
                    action: Action::Skipped,
                    changes: vec![],
                    error_code: Some("UNCONVERTIBLE_VALUE".into()),
                    message: Some(format!("{} = {raw} is not a {} value for Pendo", a.salesforce, a.kind.name())),
                }),
            }
        }
        for pendo_id in pendo_ids {
            // An empty value never written before has nothing to clear in Pendo.
            let fields = change::named(
                values.iter().filter(|(f, v)| !v.is_null() || written.get(&pendo_id, f).is_some()).cloned(),
            );
            let desired = Desired { key: pendo_id.clone(), salesforce_id: pendo_id.clone(), fields };
            match change::diff(&written, &desired, &[]) {
                Some(c) => changes.push((c, id.clone(), own)),
                None if own => {
                    report.unchanged += 1;
                    outcomes.push(RecordOutcome {
                        object: OBJECT.into(),
                        key: pendo_id,
                        salesforce_id: Some(id.clone()),
                        action: Action::Unchanged,
                        changes: vec![],
                        error_code: Some("OWN_CHANGE".into()),
                        message: Some(
                            "last modified by the integration user and no configured field moved: ignored".into(),
                        ),
                    });
                }
                None => report.unchanged += 1,
            }
        }
    }
    drop(written);
    report.pendo_accounts = report.matched;
    report.changed = changes.len();
    for (c, _, _) in &changes {
        for (f, _) in &c.fields {
            *report.fields_changed.entry(format!("{}.{f}", config.group.name())).or_default() += 1;
        }
    }
    report.samples = changes
        .iter()
        .take(10)
        .map(|(c, sf, _)| Sample {
            pendo_account: c.key.clone(),
            salesforce_id: sf.clone(),
            fields: c.object().into_iter().collect(),
        })
        .collect();
    report.plan.send = changes.len();
    let reads: u64 = meter.calls.values().sum();
    if options.dry_run {
        report.budget.this_run = reads;
        report.api_calls = meter.calls;
        report.timings = meter.timings;
        return Ok(report);
    }
    let Some(run_id) = run_id else { return Ok(report) };
    if reads > 0 {
        ctx.store.settle_budget(now.date_naive(), &workflow.name, 0, reads, now).await?;
    }

    crate::testhook::crash_point("plan");
    for chunk in outcomes.chunks(5_000) {
        ctx.store.record_outcomes(run_id, chunk, &[]).await?;
    }
    let sent: Vec<(Change, String)> = changes.into_iter().map(|(c, sf, _)| (c, sf)).collect();
    let target = super::pendo_write::Target {
        kind: pendo::Kind::Account,
        group: config.group.name(),
        scope: &scope(&workflow.name),
        object: OBJECT,
    };
    let written = super::pendo_write::write(ctx, &workflow.name, run_id, &target, &sent, &mut report, now).await?;
    meter.step("deliver", Some("pendo_metadata"));
    let dismissed = written.dismissed;
    let refused: Vec<(&str, &str)> = sent
        .iter()
        .filter(|(c, _)| written.refused.contains(&c.key))
        .map(|(c, sf)| (c.key.as_str(), sf.as_str()))
        .collect();
    // The cursor stays at the oldest Account whose values Pendo refused, so the next run (or a
    // replay) reads it again and sends what it holds then; one a person dismissed lets it pass.
    let hold = refused
        .iter()
        .filter(|(key, _)| !dismissed.contains(&(OBJECT.to_owned(), (*key).to_owned())))
        .filter_map(|(_, sf)| stamps.get(*sf).copied())
        .min();
    if let Some(newest) = hold.or(newest).filter(|_| !held_back) {
        let next = newest.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        if stored.as_deref() != Some(next.as_str()) {
            ctx.store.advance_cursor(&workflow.name, CURSOR, stored, next).await?;
        }
    }
    report.budget.this_run = meter.calls.values().sum();
    report.api_calls = meter.calls;
    report.timings = meter.timings;
    report.state = state_of(&report).as_str().into();
    Ok(report)
}

/// The account-attributes-to-pendo template, for the registry ([`crate::config::template`]).
impl template::Spec for AttributesConfig {
    fn keys() -> &'static [&'static str] {
        &["overlap", "pendo_account", "pendo_group", "integration_user", "attributes"]
    }

    fn build(key: &str, w: &template::Wire, errors: &mut template::Errors) -> Option<Self> {
        crate::config::attributes::build(key, w, errors)
    }

    fn to_wire(&self, out: &mut template::Wire) {
        crate::config::attributes::to_wire(self, out);
    }

    fn flows(&self, key: &dyn Fn(&str) -> String) -> template::Flows {
        use crate::config::ownership::Direction;
        use template::{FieldRef, Flows};
        let each = |side: &dyn Fn(usize, &crate::config::Attribute) -> (FieldRef, String)| {
            self.attributes.iter().enumerate().map(|(i, at)| side(i, at)).collect()
        };
        Flows {
            direction: Direction::ToPendo,
            reads: each(&|i, at| {
                (FieldRef::salesforce("Account", &at.salesforce), key(&format!("attributes[{i}].salesforce")))
            }),
            writes: each(&|i, at| {
                (FieldRef::pendo("account", self.group.name(), &at.pendo), key(&format!("attributes[{i}].pendo")))
            }),
        }
    }

    fn requirements(&self, reqs: &mut template::Reqs) {
        use crate::config::AttributeType;
        use template::{Expect, Use};
        if let Some(field) = &self.pendo_account.field {
            reqs.add("Account", field, Use::Read, Expect::Text, "pendo_account.field");
        }
        for (i, a) in self.attributes.iter().enumerate() {
            let expect = match a.kind {
                AttributeType::Auto | AttributeType::Text => Expect::Any,
                AttributeType::Number => Expect::Number,
                AttributeType::Boolean => Expect::Boolean,
                AttributeType::Time => Expect::Date,
            };
            reqs.add("Account", &a.salesforce, Use::Read, expect, &format!("attributes[{i}].salesforce"));
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

    #[test]
    fn values_convert_to_pendo_types() {
        assert_eq!(convert(AttributeType::Auto, &json!("Growth")), Some(json!("Growth")));
        assert_eq!(convert(AttributeType::Text, &json!(12)), Some(json!("12")));
        assert_eq!(convert(AttributeType::Number, &json!("12.5")), Some(json!(12.5)));
        assert_eq!(convert(AttributeType::Number, &json!("twelve")), None);
        assert_eq!(convert(AttributeType::Boolean, &json!("TRUE")), Some(json!(true)));
        assert_eq!(convert(AttributeType::Time, &json!("2027-03-01")), Some(json!(1_803_859_200_000_i64)));
        assert_eq!(
            convert(AttributeType::Time, &json!("2027-03-01T00:00:00.000+0000")),
            Some(json!(1_803_859_200_000_i64))
        );
        assert_eq!(convert(AttributeType::Time, &Value::Null), Some(Value::Null));
    }

    #[test]
    fn relationship_paths_walk_nested_records() {
        let row = json!({"Id": "001", "Owner": {"attributes": {}, "Name": "Ada"}, "CSM__r": null});
        let row = row.as_object().unwrap();
        assert_eq!(at_path(row, "Owner.Name"), &json!("Ada"));
        assert_eq!(at_path(row, "owner.name"), &json!("Ada"));
        assert_eq!(at_path(row, "CSM__r.Name"), &Value::Null);
    }

    #[test]
    fn user_ids_compare_on_fifteen_characters() {
        assert!(same_user("0058d0000000001AAA", "0058d0000000001"));
        assert!(!same_user("0058d0000000002AAA", "0058d0000000001AAA"));
        assert!(!same_user("005", "005"));
    }
}
