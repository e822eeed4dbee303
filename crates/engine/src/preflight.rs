//! Preflight: every Salesforce object and field a workflow's config names, checked against the
//! org's describe before anything is written.
//!
//! This module owns three things: what a workflow asks of the org ([`requirements`]: each
//! object and field, how it is used, and what kind of value goes into it), the checks of
//! those requirements against describes ([`check`], pure), and the [`Quarantine`] a run keeps
//! them in: a field with a problem is taken out of every record before sending, so one
//! misspelt field costs that field, not the run. Each object is described once per check, and
//! always afresh (a schema fixed by an admin is seen by the next run); those calls are the
//! whole of preflight's cost, and none when the run's read already brought the describe.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use salesforce::{ErrorCode, FieldDescribe, SObjectDescribe};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{Config, EngagementConfig, MatchRule, Metric, Workflow};

/// How a workflow uses a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Use {
    /// Read (queried or matched on).
    Read,
    /// Set on existing records.
    Update,
    /// Set on records usagesync creates.
    Create,
    /// Set on create and on update (an upsert's fields).
    Upsert,
    /// The external-ID key records are upserted on.
    Key,
}

impl Use {
    pub fn as_str(self) -> &'static str {
        match self {
            Use::Read => "read",
            Use::Update => "update",
            Use::Create => "create",
            Use::Upsert => "upsert",
            Use::Key => "external-ID key",
        }
    }

    fn writes(self) -> bool {
        self != Use::Read
    }
}

/// The kind of value a workflow puts into (or reads from) a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Any,
    Number,
    /// A date or date-time.
    Date,
    Text,
    Boolean,
    /// A lookup to a record (an owner, say).
    Reference,
    /// This exact picklist value, fixed in the config.
    Value(String),
}

/// One object and field a workflow's config names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub object: String,
    /// A field API name, or a relationship path such as `CSM__r.Name` (only its first step is
    /// checked: the target object is not described, to keep preflight's cost to one call per
    /// object the workflow writes or reads).
    pub field: String,
    pub usage: Use,
    pub expect: Expect,
    /// The config key that names it (dotted path, as `config::Config::position` takes).
    pub key: String,
}

/// A requirement the org does not meet, located in the config file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub workflow: String,
    pub object: String,
    /// `None`: the object itself.
    pub field: Option<String>,
    pub usage: Use,
    pub key: String,
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// The closest existing name (or picklist value), when one is close.
    pub did_you_mean: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{}:{line}:{column}: ", self.file)?,
            _ => write!(f, "{}: ", self.file)?,
        }
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(name) = &self.did_you_mean {
            write!(f, "; did you mean {name}?")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("describing Salesforce object {object} failed: {source}")]
    Describe {
        object: String,
        #[source]
        source: salesforce::Error,
    },
}

/// The fields a run must not send, and why.
#[derive(Debug, Clone, Default)]
pub struct Quarantine {
    problems: Vec<Problem>,
    /// (object, field), lower case: Salesforce names are case-insensitive.
    fields: HashSet<(String, String)>,
    /// Objects missing altogether: nothing of theirs is sent.
    objects: HashSet<String>,
    /// (object, field), lower case: external-ID keys the org keeps unique, so a create can
    /// insert and let Salesforce refuse a key that exists, instead of looking every key up.
    unique_keys: HashSet<(String, String)>,
}

impl Quarantine {
    /// Every problem quarantines the field it is about when the workflow writes it; a missing
    /// object quarantines all its fields. Problems with fields only read are kept for the report.
    pub fn new(problems: Vec<Problem>) -> Self {
        let mut fields = HashSet::new();
        let mut objects = HashSet::new();
        for p in problems.iter().filter(|p| p.usage.writes()) {
            match &p.field {
                Some(field) => fields.insert((p.object.to_ascii_lowercase(), field.to_ascii_lowercase())),
                None => objects.insert(p.object.to_ascii_lowercase()),
            };
        }
        Quarantine { problems, fields, objects, unique_keys: HashSet::new() }
    }

    /// Whether `field` of `object` is an external-ID key the org keeps unique.
    pub fn unique_key(&self, object: &str, field: &str) -> bool {
        self.unique_keys.contains(&(object.to_ascii_lowercase(), field.to_ascii_lowercase()))
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Whether `field` of `object` must not be sent.
    pub fn holds(&self, object: &str, field: &str) -> bool {
        let object = object.to_ascii_lowercase();
        self.objects.contains(&object) || self.fields.contains(&(object, field.to_ascii_lowercase()))
    }

    /// Whether any problem (a read one included) is about `field` of `object`: a template that
    /// reads it leaves it out of its query rather than have the whole query refused.
    pub fn concerns(&self, object: &str, field: &str) -> bool {
        self.problems.iter().any(|p| {
            p.object.eq_ignore_ascii_case(object) && p.field.as_deref().is_none_or(|f| f.eq_ignore_ascii_case(field))
        })
    }

    /// Takes the quarantined fields out of a record about to be sent to `object`; returns the
    /// names removed.
    pub fn strip(&self, object: &str, fields: &mut Map<String, Value>) -> Vec<String> {
        let removed: Vec<String> = fields.keys().filter(|f| self.holds(object, f)).cloned().collect();
        for f in &removed {
            fields.remove(f);
        }
        removed
    }

    /// Why `field` of `object` is held back, for a skipped record's message.
    pub fn reason(&self, object: &str, field: &str) -> Option<String> {
        self.problems
            .iter()
            .filter(|p| p.usage.writes() && p.object.eq_ignore_ascii_case(object))
            .find(|p| p.field.as_deref().is_none_or(|f| f.eq_ignore_ascii_case(field)))
            .map(ToString::to_string)
    }
}

/// Every object and field workflow `w` names, in config order.
pub fn requirements(w: &Workflow) -> Vec<Requirement> {
    let mut out = Reqs { base: format!("workflows.{}", w.name), list: Vec::new() };
    w.template.spec().requirements(&mut out);
    out.list
}

/// The requirements a template names, each located at its config key.
pub(crate) struct Reqs {
    base: String,
    list: Vec<Requirement>,
}

impl Reqs {
    pub(crate) fn add(&mut self, object: &str, field: &str, usage: Use, expect: Expect, leaf: &str) {
        self.list.push(Requirement {
            object: object.to_owned(),
            field: field.to_owned(),
            usage,
            expect,
            key: format!("{}.{leaf}", self.base),
        });
    }

    /// The Account side every Pendo → Salesforce template shares: matching, and (for
    /// engagement-scores) the metric fields.
    pub(crate) fn accounts(&mut self, c: &EngagementConfig) {
        self.matching(&c.matching);
        for (metric, field) in c.fields.iter() {
            let expect = match metric {
                Metric::LastActive | Metric::UpdatedAt => Expect::Date,
                _ => Expect::Number,
            };
            self.add("Account", field, Use::Update, expect, &format!("fields.{}", metric.key()));
        }
        for (metric, field) in c.rollup_fields.iter() {
            let expect = if metric == Metric::LastActive { Expect::Date } else { Expect::Number };
            self.add("Account", field, Use::Update, expect, &format!("rollup_fields.{}", metric.key()));
        }
    }

    pub(crate) fn matching(&mut self, rules: &[MatchRule]) {
        for (i, rule) in rules.iter().enumerate() {
            match rule {
                MatchRule::ExternalId { field } => {
                    self.add("Account", field, Use::Read, Expect::Text, &format!("matching[{i}].field"));
                }
                MatchRule::EmailDomain { website_field, .. } => {
                    self.add("Account", website_field, Use::Read, Expect::Any, &format!("matching[{i}].website_field"));
                }
                MatchRule::ChildField { account_field, .. } => {
                    self.add("Account", account_field, Use::Read, Expect::Any, &format!("matching[{i}].account_field"));
                }
                MatchRule::PendoMetadata { .. } | MatchRule::PendoParent { .. } => {}
            }
        }
    }
}

/// Describes as fetched: `None` for an object the org does not have (or hides from the user).
pub type Describes = BTreeMap<String, Option<Arc<SObjectDescribe>>>;

/// The objects `requirements` name, once each (case-insensitively), in first-named order.
pub fn objects(requirements: &[Requirement]) -> Vec<String> {
    let mut seen = HashSet::new();
    requirements.iter().filter(|r| seen.insert(r.object.to_ascii_lowercase())).map(|r| r.object.clone()).collect()
}

/// Checks `requirements` of workflow `workflow` against `describes` (keyed by lower-case object
/// name); each problem located in `config`'s file.
pub fn check(config: &Config, workflow: &str, requirements: &[Requirement], describes: &Describes) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut missing_objects = HashSet::new();
    for r in requirements {
        let problem = |field: Option<&str>, message: String, did_you_mean: Option<String>| {
            let (line, column) = config.position(&r.key).unzip();
            Problem {
                workflow: workflow.to_owned(),
                object: r.object.clone(),
                field: field.map(str::to_owned),
                usage: r.usage,
                key: r.key.clone(),
                file: config.origin().to_owned(),
                line,
                column,
                message,
                did_you_mean,
            }
        };
        let Some(describe) = describes.get(&r.object.to_ascii_lowercase()).and_then(Option::as_deref) else {
            if missing_objects.insert(r.object.to_ascii_lowercase()) {
                let message = format!("Salesforce has no object {} (or it is not visible to this user)", r.object);
                problems.push(problem(None, message, None));
            }
            continue;
        };
        if let Some((message, did_you_mean)) = check_one(r, describe) {
            problems.push(problem(Some(&r.field), message, did_you_mean));
        }
    }
    problems
}

/// The problem with one requirement, if any, and a near name.
fn check_one(r: &Requirement, d: &SObjectDescribe) -> Option<(String, Option<String>)> {
    let name = format!("{}.{}", d.name, r.field);
    if let Some((relationship, _)) = r.field.split_once('.') {
        let known = d.fields.iter().filter_map(|f| f.relationship_name.as_deref());
        if d.fields.iter().any(|f| f.relationship_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(relationship)))
        {
            return None;
        }
        let near =
            closest(relationship, known).map(|n| format!("{n}.{}", r.field.split_once('.').map_or("", |(_, t)| t)));
        return Some((format!("{} has no relationship {relationship}", d.name), near));
    }
    let Some(f) = d.field(&r.field) else {
        let near = closest(&r.field, d.fields.iter().map(|f| f.name.as_str()));
        return Some((format!("{name} does not exist (or is not visible to this user)"), near));
    };
    let name = format!("{}.{}", d.name, f.name);
    let refused = match r.usage {
        Use::Read => None,
        Use::Update => (!f.updateable).then_some("is not updateable by this user, and the workflow updates it"),
        Use::Create => (!f.createable).then_some("is not createable by this user, and the workflow sets it on create"),
        Use::Upsert if !f.createable => Some("is not createable by this user, and the workflow sets it on create"),
        Use::Upsert => (!f.updateable).then_some("is not updateable by this user, and the workflow updates it"),
        Use::Key if !f.external_id => Some("is not an External ID field: records cannot be upserted on it"),
        Use::Key => (!f.createable).then_some("is not createable by this user, and upserts set it"),
    };
    if let Some(why) = refused {
        return Some((format!("{name} {why}"), None));
    }
    type_problem(&name, &r.expect, f)
}

fn type_problem(name: &str, expect: &Expect, f: &FieldDescribe) -> Option<(String, Option<String>)> {
    let t = f.field_type.as_str();
    let fits = |kinds: &[&str]| kinds.contains(&t);
    let (ok, wanted) = match expect {
        Expect::Any => (true, ""),
        Expect::Number => {
            (fits(&["double", "int", "long", "percent", "currency"]), "a number (double, int, percent or currency)")
        }
        Expect::Date => (fits(&["date", "datetime"]), "a date (date or datetime)"),
        Expect::Text => (fits(&["string", "textarea"]), "text (string or textarea)"),
        Expect::Boolean => (fits(&["boolean"]), "a checkbox (boolean)"),
        Expect::Reference => (fits(&["reference"]), "a lookup (reference)"),
        Expect::Value(value) => return picklist_problem(name, value, f),
    };
    (!ok).then(|| (format!("{name} is a {t} field; the workflow needs {wanted}"), None))
}

fn picklist_problem(name: &str, value: &str, f: &FieldDescribe) -> Option<(String, Option<String>)> {
    match f.field_type.as_str() {
        "picklist" | "multipicklist" => {}
        // Free text takes any value.
        "string" | "textarea" => return None,
        t => return Some((format!("{name} is a {t} field; the workflow writes the text `{value}` into it"), None)),
    }
    let active = f.picklist_values.iter().filter(|v| v.active);
    if f.picklist_values.iter().any(|v| v.active && v.value == value) {
        return None;
    }
    let restricted = if f.restricted_picklist { "restricted " } else { "" };
    let near = closest(value, active.map(|v| v.value.as_str()));
    Some((format!("`{value}` is not an active value of the {restricted}picklist {name}"), near))
}

/// The candidate nearest to `name` by edit distance, ignoring case, when it is near enough to be
/// a plausible typo (at most a third of the name's length, and at least 1 or 2 edits).
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let target = name.to_lowercase();
    let limit = (target.chars().count() / 3).max(2);
    candidates
        .map(|c| (edit_distance(&target, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Fetches describes for `objects` not yet in `into`, one call each, always afresh: a describe
/// the running run already fetched (with the first page of its read) is used as it is, any
/// older one is fetched again.
///
/// # Errors
/// A describe that failed for a reason other than the object not existing.
pub async fn describe(
    client: &salesforce::Client,
    objects: &[String],
    into: &mut Describes,
) -> Result<(), PreflightError> {
    let started = crate::workflow::run_started();
    for object in objects {
        let key = object.to_ascii_lowercase();
        if into.contains_key(&key) {
            continue;
        }
        if let Some(fetched) = started.and_then(|t| client.describe_fetched_since(object, t)) {
            into.insert(key, Some(fetched));
            continue;
        }
        let found = match client.describe_fresh(object).await {
            Ok(d) => Some(d),
            Err(e) if e.error_code() == Some(&ErrorCode::NotFound) => None,
            // An object name the client refuses to send is one the org cannot have.
            Err(salesforce::Error::InvalidInput(_)) => None,
            Err(source) => return Err(PreflightError::Describe { object: object.clone(), source }),
        };
        into.insert(key, found);
    }
    Ok(())
}

/// Runs preflight for one workflow: describes what it names and checks it.
///
/// # Errors
/// A describe that failed (the org could not be asked).
pub async fn run(
    client: &salesforce::Client,
    config: &Config,
    workflow: &Workflow,
) -> Result<Quarantine, PreflightError> {
    let reqs = requirements(workflow);
    let mut describes = Describes::new();
    describe(client, &objects(&reqs), &mut describes).await?;
    let mut quarantine = Quarantine::new(check(config, &workflow.name, &reqs, &describes));
    for r in reqs.iter().filter(|r| r.usage == Use::Key) {
        let object = r.object.to_ascii_lowercase();
        let field = describes
            .get(&object)
            .and_then(Option::as_deref)
            .and_then(|d| d.fields.iter().find(|f| f.name.eq_ignore_ascii_case(&r.field)));
        if field.is_some_and(|f| f.unique && f.external_id) {
            quarantine.unique_keys.insert((object, r.field.to_ascii_lowercase()));
        }
    }
    Ok(quarantine)
}

/// Preflight for every enabled workflow, each object described once for all of them.
///
/// # Errors
/// A describe that failed (the org could not be asked).
pub async fn run_all(client: &salesforce::Client, config: &Config) -> Result<Vec<Problem>, PreflightError> {
    let mut describes = Describes::new();
    let mut problems = Vec::new();
    for workflow in config.workflows.values().filter(|w| w.enabled) {
        let reqs = requirements(workflow);
        describe(client, &objects(&reqs), &mut describes).await?;
        problems.extend(check(config, &workflow.name, &reqs, &describes));
    }
    Ok(problems)
}

#[cfg(test)]
#[path = "preflight_tests.rs"]
mod tests;
