//! The engagement-drop-alert template's settings: when an account's engagement score counts as
//! dropped, when it counts as recovered, and what record tells a person about it.
//!
//! The accounts and their score come from the same keys engagement-scores uses (`matching`,
//! `score`, `core_features`); this template's own keys live under `alert:`. Besides the score
//! rules (`below`, `drop_share`), `when:` takes any condition over the account's figures in CEL
//! (see [`crate::signal`]): stalled adoption, idle accounts, a product's own risk signal.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::validate::{Errors, account_side, salesforce_field};
use super::{EngagementConfig, wire};
use crate::signal::Condition;

/// Default for [`DropAlertConfig::key_field`]: the org's external-ID field for usagesync keys.
pub const DEFAULT_KEY_FIELD: &str = "Usagesync_Key__c";
/// Default for [`DropAlertConfig::hysteresis`], in score points.
pub const DEFAULT_HYSTERESIS: f64 = 10.0;
/// Default for [`DropAlertConfig::due_in_days`].
pub const DEFAULT_DUE_IN_DAYS: u32 = 3;
/// Default for [`DropAlertConfig::subject`].
pub const DEFAULT_SUBJECT: &str = "Engagement drop: {account}";
/// Default for [`AlertOpportunity::name`].
pub const DEFAULT_OPPORTUNITY_NAME: &str = "Renewal risk: {account}";
/// Default for [`AlertOpportunity::stage`].
pub const DEFAULT_OPPORTUNITY_STAGE: &str = "Prospecting";
/// Default for [`AlertOpportunity::close_in_days`] (`close_date: "+30d"`).
pub const DEFAULT_CLOSE_IN_DAYS: u32 = 30;
/// What alert text may name besides the figures (each figure by name, and as
/// `previous.<figure>`): the Account's name (the Pendo account id when it has none), the score
/// in the previous window, the figure the rule is about (`metric`, `from` → `to`), why it
/// alerted (`reason`), the figures side by side (`evidence`), the core features' names and when
/// the episode opened (`opened_at`, UTC, RFC 3339 to the second).
pub const PLACEHOLDERS: &[&str] =
    &["account", "previous_score", "metric", "from", "to", "reason", "evidence", "core_features", "opened_at"];
/// The Pendo metadata group alert values are written to.
pub const PENDO_GROUP: &str = "custom";

/// Who owns the records an alert makes, when the Account's `owner_field` names nobody.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Owner {
    /// The Account's owner.
    #[default]
    Account,
    /// A User by Id.
    User(String),
    /// A User by username, looked up once and remembered in the store.
    Username(String),
    /// A queue (a Group Id): Cases only, since Salesforce lets no queue own a Task or an
    /// Opportunity.
    Queue(String),
}

/// The Opportunity an alert opens (a renewal-risk Opportunity, say), before the Task, which
/// then points at it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertOpportunity {
    /// Templated like the subject.
    pub name: String,
    pub stage: String,
    pub close_in_days: u32,
    pub opportunity_type: Option<String>,
    pub amount: Option<f64>,
}

/// engagement-drop-alert: a high-priority Task (and as configured an Opportunity, a Case and
/// Account field values) when an account's score falls below `below` or by `drop_share` against
/// the previous window, or `when` holds; one per episode.
#[derive(Debug, Clone)]
pub struct DropAlertConfig {
    /// Matching and the score (its `fields` map is empty: this template writes no Account).
    pub accounts: EngagementConfig,
    /// Alert when the score (0–100) is below this.
    pub below: Option<f64>,
    /// Alert when the score fell by at least this share of the previous window's, in (0, 1].
    pub drop_share: Option<f64>,
    /// Alert when this condition holds (instead of `below`/`drop_share`).
    pub when: Option<Condition>,
    /// With `when`: the open episode closes once this holds; without it, once `when` no longer
    /// holds.
    pub rearm_when: Option<Condition>,
    /// The records' subject, with the placeholders of [`PLACEHOLDERS`] and the figures.
    pub subject: String,
    /// The records' description, templated as the subject (and `{subject}`); without one, the
    /// reason and the evidence.
    pub description: Option<String>,
    /// Make the Task (on by default; off for a Case, an Opportunity or field updates alone).
    pub task: bool,
    pub opportunity: Option<AlertOpportunity>,
    pub owner: Owner,
    /// Account fields set when an episode opens, values templated as the description.
    pub set_fields: Vec<(String, Value)>,
    /// Account fields set when the episode closes (a subset of `set_fields`).
    pub reset_fields: Vec<(String, Value)>,
    /// Pendo account metadata (group [`PENDO_GROUP`]) set when an episode opens, values
    /// templated as `set_fields`.
    pub set_pendo_fields: Vec<(String, Value)>,
    /// Pendo account metadata set when the episode closes (a subset of `set_pendo_fields`).
    pub reset_pendo_fields: Vec<(String, Value)>,
    /// Points above the alert level the score must climb back to before the account re-arms.
    pub hysteresis: f64,
    /// A User lookup on the Account (e.g. `CSM__c`) naming who gets the alert; the Account
    /// owner when empty or unset.
    pub owner_field: Option<String>,
    /// The external-ID field holding each alert's deterministic key.
    pub key_field: String,
    /// Also open a Case.
    pub create_case: bool,
    /// The Task's due date, days after the run.
    pub due_in_days: u32,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_share: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rearm_when: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hysteresis: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_case: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opportunity: Option<OpportunityWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_fields: Option<IndexMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_fields: Option<IndexMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_pendo_fields: Option<IndexMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_pendo_fields: Option<IndexMap<String, Value>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpportunityWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Relative to the run: `+30d`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_date: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub opportunity_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
}

/// One of `user`, `username`, `queue`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OwnerWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

pub(crate) fn build(key: &str, w: &wire::Workflow, errors: &mut Errors) -> Option<DropAlertConfig> {
    let accounts = account_side(key, w, errors, false);
    let ak = format!("{key}.alert");
    let a = errors.required(&w.alert, &ak)?;
    let k = |leaf: &str| format!("{ak}.{leaf}");
    let mut ok = true;
    if let Some(b) = a.below
        && !(b.is_finite() && (0.0..=100.0).contains(&b))
    {
        ok = false;
        errors.push(&k("below"), format!("is a score from 0 to 100 (got {b})"));
    }
    if let Some(d) = a.drop_share
        && !(d > 0.0 && d <= 1.0)
    {
        ok = false;
        errors.push(&k("drop_share"), format!("must be more than 0 and at most 1 (got {d})"));
    }
    let mut condition = |key: &str, text: &Option<String>, ok: &mut bool| -> Option<Condition> {
        let text = text.as_deref()?;
        Condition::compile(text).map_err(|m| errors.push(&k(key), m)).inspect_err(|()| *ok = false).ok()
    };
    let when = condition("when", &a.when, &mut ok);
    let rearm_when = condition("rearm_when", &a.rearm_when, &mut ok);
    if a.when.is_some() {
        for (given, leaf) in [(a.below.is_some(), "below"), (a.drop_share.is_some(), "drop_share")] {
            if given {
                ok = false;
                errors.push(
                    &k(leaf),
                    "give either `when` (a condition) or the score rules (`below`, `drop_share`), not both",
                );
            }
        }
        if a.hysteresis.is_some() {
            ok = false;
            errors.push(
                &k("hysteresis"),
                "applies to `below` and `drop_share`; with `when`, say when the account re-arms in `rearm_when`",
            );
        }
    } else if a.rearm_when.is_some() {
        ok = false;
        errors.push(&k("rearm_when"), "goes with `when`; `below` and `drop_share` re-arm by `hysteresis`");
    } else if a.below.is_none() && a.drop_share.is_none() {
        ok = false;
        errors.push(&ak, "give `below` (a score), `drop_share` (a relative drop), both, or `when` (a condition): nothing would alert");
    }
    let subject = a.subject.clone().unwrap_or_else(|| DEFAULT_SUBJECT.to_owned());
    if let Err(m) = check_subject(&subject) {
        ok = false;
        errors.push(&k("subject"), m);
    }
    let placeholders = |errors: &mut Errors, key: &str, text: &str, with_subject: bool, ok: &mut bool| {
        if let Err(m) = check_text(text, with_subject) {
            *ok = false;
            errors.push(key, m);
        }
    };
    if let Some(d) = &a.description {
        placeholders(errors, &k("description"), d, true, &mut ok);
    }
    let opportunity = a.opportunity.as_ref().map(|o| {
        let ok_ = |leaf: &str| format!("{ak}.opportunity.{leaf}");
        let name = o.name.clone().unwrap_or_else(|| DEFAULT_OPPORTUNITY_NAME.to_owned());
        placeholders(errors, &ok_("name"), &name, false, &mut ok);
        let close_in_days = match o.close_date.as_deref().map(relative_days) {
            None => DEFAULT_CLOSE_IN_DAYS,
            Some(Ok(d)) => d,
            Some(Err(m)) => {
                ok = false;
                errors.push(&ok_("close_date"), m);
                DEFAULT_CLOSE_IN_DAYS
            }
        };
        if let Some(v) = o.amount
            && !(v.is_finite() && v >= 0.0)
        {
            ok = false;
            errors.push(&ok_("amount"), format!("must be 0 or more (got {v})"));
        }
        for (leaf, v) in [("stage", &o.stage), ("type", &o.opportunity_type)] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                ok = false;
                errors.push(&ok_(leaf), "must not be empty");
            }
        }
        AlertOpportunity {
            name,
            stage: o.stage.clone().unwrap_or_else(|| DEFAULT_OPPORTUNITY_STAGE.to_owned()),
            close_in_days,
            opportunity_type: o.opportunity_type.clone(),
            amount: o.amount,
        }
    });
    let mut field_values = |leaf: &str, map: &Option<IndexMap<String, Value>>, ok: &mut bool| {
        let mut out = Vec::new();
        for (field, value) in map.iter().flatten() {
            let key = format!("{ak}.{leaf}.{field}");
            let name = if leaf.contains("pendo") {
                pendo_field(field).map_err(|m| errors.push(&key, m)).ok()
            } else {
                salesforce_field(field, &key, errors)
            };
            let Some(f) = name else {
                *ok = false;
                continue;
            };
            match value {
                Value::String(t) => {
                    if let Err(m) = check_text(t, true) {
                        *ok = false;
                        errors.push(&key, m);
                    }
                }
                Value::Bool(_) | Value::Number(_) | Value::Null => {}
                other => {
                    *ok = false;
                    errors.push(
                        &key,
                        format!("is a value for a field: text, a number, true/false or null (got {other})"),
                    );
                }
            }
            out.push((f, value.clone()));
        }
        out
    };
    let set_fields = field_values("set_fields", &a.set_fields, &mut ok);
    let reset_fields = field_values("reset_fields", &a.reset_fields, &mut ok);
    let set_pendo_fields = field_values("set_pendo_fields", &a.set_pendo_fields, &mut ok);
    let reset_pendo_fields = field_values("reset_pendo_fields", &a.reset_pendo_fields, &mut ok);
    for (set, reset, leaf) in
        [(&set_fields, &reset_fields, "set_fields"), (&set_pendo_fields, &reset_pendo_fields, "set_pendo_fields")]
    {
        for (f, v) in reset {
            let reset_key = format!("{ak}.re{leaf}.{f}");
            match set.iter().find(|(s, _)| s.eq_ignore_ascii_case(f)) {
                None => {
                    ok = false;
                    errors.push(
                        &reset_key,
                        format!("resets `{f}`, which `{leaf}` does not set: an alert resets only what it set"),
                    );
                }
                Some((_, set_to)) if !same_kind(set_to, v) => {
                    ok = false;
                    errors.push(
                        &reset_key,
                        format!("resets `{f}` to {v}, which is not the kind of value `{leaf}` sets ({set_to}): give the same kind, or null"),
                    );
                }
                Some(_) => {}
            }
        }
    }
    let task = a.task.unwrap_or(true);
    if !task
        && !a.create_case.unwrap_or(false)
        && opportunity.is_none()
        && set_fields.is_empty()
        && set_pendo_fields.is_empty()
    {
        ok = false;
        errors.push(&k("task"), "with `task: false`, give `create_case: true`, an `opportunity`, `set_fields` or `set_pendo_fields`: the alert would do nothing");
    }
    let owner = match &a.owner {
        None => Owner::Account,
        Some(o) => match owner(o, task, opportunity.is_some(), a.create_case.unwrap_or(false)) {
            Ok(owner) => owner,
            Err(m) => {
                ok = false;
                errors.push(&k("owner"), m);
                Owner::Account
            }
        },
    };
    let hysteresis = a.hysteresis.unwrap_or(DEFAULT_HYSTERESIS);
    if !(hysteresis.is_finite() && (0.0..=100.0).contains(&hysteresis)) {
        ok = false;
        errors.push(&k("hysteresis"), format!("is in score points, 0 to 100 (got {hysteresis})"));
    }
    let owner_field = match &a.owner_field {
        Some(f) => Some(salesforce_field(f, &k("owner_field"), errors)?),
        None => None,
    };
    let key_field = match &a.key_field {
        Some(f) => salesforce_field(f, &k("key_field"), errors)?,
        None => DEFAULT_KEY_FIELD.to_owned(),
    };
    let due_in_days = a.due_in_days.unwrap_or(DEFAULT_DUE_IN_DAYS);
    if due_in_days > 365 {
        ok = false;
        errors.push(&k("due_in_days"), format!("must be at most 365 (got {due_in_days})"));
    }
    Some(DropAlertConfig {
        accounts: accounts?,
        below: a.below,
        drop_share: a.drop_share,
        when,
        rearm_when,
        subject,
        hysteresis,
        owner_field,
        key_field,
        create_case: a.create_case.unwrap_or(false),
        due_in_days,
        description: a.description.clone(),
        task,
        opportunity,
        owner,
        set_fields,
        reset_fields,
        set_pendo_fields,
        reset_pendo_fields,
    })
    .filter(|_| ok)
}

impl DropAlertConfig {
    /// Whether some text names `{core_features}`: only then does a run read the feature names.
    pub fn names_core_features(&self) -> bool {
        let texts = [Some(&self.subject), self.description.as_ref(), self.opportunity.as_ref().map(|o| &o.name)];
        let values = [&self.set_fields, &self.reset_fields, &self.set_pendo_fields, &self.reset_pendo_fields]
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.as_str());
        texts.into_iter().flatten().map(String::as_str).chain(values).any(|t| t.contains("{core_features}"))
    }
}

pub(crate) fn to_wire(c: &DropAlertConfig) -> AlertWire {
    AlertWire {
        below: c.below,
        drop_share: c.drop_share,
        when: c.when.as_ref().map(|w| w.text().to_owned()),
        rearm_when: c.rearm_when.as_ref().map(|w| w.text().to_owned()),
        subject: Some(c.subject.clone()),
        hysteresis: c.when.is_none().then_some(c.hysteresis),
        owner_field: c.owner_field.clone(),
        key_field: Some(c.key_field.clone()),
        create_case: Some(c.create_case),
        due_in_days: Some(c.due_in_days),
        description: c.description.clone(),
        task: (!c.task).then_some(false),
        opportunity: c.opportunity.as_ref().map(|o| OpportunityWire {
            name: Some(o.name.clone()),
            stage: Some(o.stage.clone()),
            close_date: Some(format!("+{}d", o.close_in_days)),
            opportunity_type: o.opportunity_type.clone(),
            amount: o.amount,
        }),
        owner: match &c.owner {
            Owner::Account => None,
            Owner::User(id) => Some(OwnerWire { user: Some(id.clone()), ..Default::default() }),
            Owner::Username(u) => Some(OwnerWire { username: Some(u.clone()), ..Default::default() }),
            Owner::Queue(id) => Some(OwnerWire { queue: Some(id.clone()), ..Default::default() }),
        },
        set_fields: (!c.set_fields.is_empty()).then(|| c.set_fields.iter().cloned().collect()),
        reset_fields: (!c.reset_fields.is_empty()).then(|| c.reset_fields.iter().cloned().collect()),
        set_pendo_fields: (!c.set_pendo_fields.is_empty()).then(|| c.set_pendo_fields.iter().cloned().collect()),
        reset_pendo_fields: (!c.reset_pendo_fields.is_empty()).then(|| c.reset_pendo_fields.iter().cloned().collect()),
    }
}

/// Whether a reset value is of the kind the set value is (null clears any field).
fn same_kind(set: &Value, reset: &Value) -> bool {
    matches!(
        (set, reset),
        (_, Value::Null)
            | (Value::Null, _)
            | (Value::Bool(_), Value::Bool(_))
            | (Value::Number(_), Value::Number(_))
            | (Value::String(_), Value::String(_))
    )
}

/// A Pendo metadata field name as Pendo takes one: letters, digits and underscores, starting
/// with a letter or an underscore, in lower case as Pendo keeps it.
fn pendo_field(name: &str) -> Result<String, String> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "`{name}` is not a Pendo metadata field name: letters, digits and underscores, not starting with a digit"
        ));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("Pendo keeps metadata field names in lower case: write `{}`", name.to_ascii_lowercase()));
    }
    Ok(name.to_owned())
}

/// `+30d`: days after the run, 1 to 730.
pub(crate) fn relative_days(text: &str) -> Result<u32, String> {
    let days = text
        .trim()
        .strip_prefix('+')
        .and_then(|t| t.strip_suffix('d'))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| format!("is days after the run, written like \"+30d\" (got {text:?})"))?;
    if !(1..=730).contains(&days) {
        return Err(format!("must be between +1d and +730d (got {text})"));
    }
    Ok(days)
}

/// The owner rule, refused where Salesforce would refuse the owner: a queue owns Cases only.
pub(crate) fn owner(o: &OwnerWire, task: bool, opportunity: bool, case: bool) -> Result<Owner, String> {
    let id_like = |id: &str, prefix: &str| {
        id.len() >= 15 && id.len() <= 18 && id.starts_with(prefix) && id.chars().all(|c| c.is_ascii_alphanumeric())
    };
    match (&o.user, &o.username, &o.queue) {
        (Some(id), None, None) if id_like(id, "005") => Ok(Owner::User(id.clone())),
        (Some(id), None, None) => Err(format!("`user` is a User Id (15 or 18 characters starting 005), got {id:?}; give `username` to look one up")),
        (None, Some(u), None) if u.contains('@') && !u.trim().is_empty() => Ok(Owner::Username(u.trim().to_owned())),
        (None, Some(u), None) => Err(format!("`username` is a Salesforce username, shaped like an e-mail address (got {u:?})")),
        (None, None, Some(q)) if !id_like(q, "00G") => {
            Err(format!("`queue` is a queue's Group Id (15 or 18 characters starting 00G), got {q:?}"))
        }
        (None, None, Some(q)) => {
            if task || opportunity {
                return Err("a queue can own only the Case: Salesforce lets no queue own a Task or an Opportunity; set `task: false` and leave out `opportunity`, or name a `user`".into());
            }
            if !case {
                return Err("a queue owns Cases: set `create_case: true`".into());
            }
            Ok(Owner::Queue(q.clone()))
        }
        _ => Err("give exactly one of `user` (a User Id), `username` or `queue` (Cases only); leave `owner` out for the Account owner".into()),
    }
}

/// Every name alert text may use: [`PLACEHOLDERS`], the figures and `previous.<figure>`, the
/// old `{score}`, and `{subject}` where the subject is already made.
fn alert_placeholders(with_subject: bool) -> Vec<String> {
    let mut all: Vec<String> = PLACEHOLDERS.iter().map(|p| (*p).to_owned()).collect();
    all.extend(crate::signal::VARIABLES.iter().map(|v| (*v).to_owned()));
    all.extend(crate::signal::VARIABLES.iter().map(|v| format!("previous.{v}")));
    if with_subject {
        all.push("subject".into());
    }
    all
}

fn check_text(text: &str, with_subject: bool) -> Result<(), String> {
    let listed = alert_placeholders(with_subject);
    crate::text::check(text, &|n| listed.iter().any(|l| l == n), &listed)
}

/// A subject is non-empty, fits a Task's Subject (255 characters with room for the name) and
/// names only what alert text may name.
fn check_subject(subject: &str) -> Result<(), String> {
    if subject.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if subject.chars().count() > 200 {
        return Err(format!("must be at most 200 characters (got {})", subject.chars().count()));
    }
    check_text(subject, false)
}

#[cfg(test)]
mod tests {
    use super::super::{STARTER, Template, load_str};

    #[test]
    fn the_example_signal_loads_and_shows_back_as_written() {
        let config = load_str(STARTER, "example.yaml").unwrap();
        let Template::EngagementDropAlert(a) = &config.workflows["stalled-adoption"].template else { panic!() };
        let when = a.when.as_ref().unwrap().text();
        assert!(when.starts_with("feature_adoption <= previous.feature_adoption"), "{when}");
        assert_eq!(a.subject, "Adoption stalled: {account}");
        let again = load_str(&config.redacted_yaml(), "shown.yaml").unwrap();
        let Template::EngagementDropAlert(b) = &again.workflows["stalled-adoption"].template else { panic!() };
        assert_eq!(b.when.as_ref().unwrap().text(), when);
        assert_eq!(b.rearm_when.as_ref().unwrap().text(), "feature_adoption >= 0.5");
    }

    #[test]
    fn a_bad_condition_or_subject_is_reported_at_its_line() {
        let text = STARTER
            .replace("feature_adoption < 0.5 && active_days > 0.0", "feature_adoptoin < 0.5")
            .replace("Adoption stalled: {account}", "Adoption stalled: {acount}");
        let errors = match load_str(&text, "t.yaml") {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.errors,
        };
        let when = errors.iter().find(|e| e.key == "workflows.stalled-adoption.alert.when").unwrap();
        assert!(when.message.contains("did you mean `feature_adoption`"), "{when}");
        let line = STARTER.lines().position(|l| l.contains("when: \"feature_adoption <=")).unwrap() + 1;
        assert_eq!(when.line, Some(line), "{when}");
        let subject = errors.iter().find(|e| e.key == "workflows.stalled-adoption.alert.subject").unwrap();
        assert!(subject.message.contains("did you mean {account}"), "{subject}");
    }

    #[test]
    fn a_condition_and_the_score_rules_do_not_mix() {
        let text = STARTER.replace("      rearm_when: \"feature_adoption >= 0.5\"", "      below: 20");
        let errors = match load_str(&text, "t.yaml") {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.errors,
        };
        assert!(
            errors
                .iter()
                .any(|e| e.key == "workflows.stalled-adoption.alert.below" && e.message.contains("either `when`")),
            "{errors:?}"
        );
    }

    use crate::config::test_support::{errors, line_of};

    #[test]
    fn the_example_actions_load_and_show_back_as_written() {
        use super::{Owner, check_text};
        let config = load_str(STARTER, "example.yaml").unwrap();
        let Template::EngagementDropAlert(a) = &config.workflows["renewal-risk"].template else { panic!() };
        let o = a.opportunity.as_ref().unwrap();
        assert_eq!(
            (o.stage.as_str(), o.close_in_days, o.name.as_str()),
            ("Qualification", 30, "Renewal risk: {account}")
        );
        assert_eq!(a.owner, Owner::Username("renewals@example.com".into()));
        assert_eq!(a.set_fields.len(), 2);
        assert_eq!(a.reset_fields[1], ("Risk_Reason__c".to_owned(), serde_json::Value::Null));
        assert!(a.task && a.names_core_features());
        let again = load_str(&config.redacted_yaml(), "shown.yaml").unwrap();
        let Template::EngagementDropAlert(b) = &again.workflows["renewal-risk"].template else { panic!() };
        assert_eq!(
            (&b.opportunity, &b.owner, &b.set_fields, &b.description),
            (&a.opportunity, &a.owner, &a.set_fields, &a.description)
        );
        assert!(check_text("{previous.feature_adoption} {events} {from}", false).is_ok());
        assert!(check_text("{subject}", false).is_err(), "a subject cannot name itself");
    }

    #[test]
    fn an_unknown_placeholder_is_refused_at_its_line() {
        let text = STARTER.replace("Core features: {core_features}", "Core features: {core_feature}");
        let errors = errors(&text);
        let e = errors.iter().find(|e| e.key == "workflows.renewal-risk.alert.description").unwrap();
        assert!(e.message.contains("{core_feature}") && e.message.contains("did you mean {core_features}?"), "{e}");
        assert_eq!(e.line, Some(line_of("description: \"{account}: engagement score")));
        let text = STARTER.replace("Risk_Reason__c: \"{subject}\"", "Risk_Reason__c: \"{subjct}\"");
        let errors = super::tests::errors(&text);
        assert!(errors.iter().any(|e| e.key == "workflows.renewal-risk.alert.set_fields.Risk_Reason__c"), "{errors:?}");
    }

    #[test]
    fn a_queue_owns_only_cases() {
        let text =
            STARTER.replace("owner: { username: \"renewals@example.com\" }", "owner: { queue: 00G000000000001AAA }");
        let errs = errors(&text);
        let e = errs.iter().find(|e| e.key == "workflows.renewal-risk.alert.owner").unwrap();
        assert!(e.message.contains("no queue own a Task or an Opportunity"), "{e}");
        assert_eq!(e.line, Some(line_of("owner: { username:")));
        let case_only = text.replace(
            "opportunity: { stage: Qualification, close_date: \"+30d\", type: \"Existing Customer - Downgrade\" }",
            "task: false\n      create_case: true",
        );
        let config = load_str(&case_only, "t.yaml").unwrap();
        let Template::EngagementDropAlert(a) = &config.workflows["renewal-risk"].template else { panic!() };
        assert_eq!(a.owner, super::Owner::Queue("00G000000000001AAA".into()));
        let bad_user = STARTER.replace("{ username: \"renewals@example.com\" }", "{ user: jane }");
        assert!(errors(&bad_user).iter().any(|e| e.message.contains("User Id")));
    }

    #[test]
    fn reset_fields_close_dates_and_an_empty_action_are_checked() {
        let text = STARTER
            .replace("reset_fields: { At_Risk__c: false,", "reset_fields: { At_Risk_Flag__c: false,")
            .replace("close_date: \"+30d\"", "close_date: \"30 days\"");
        let errors = errors(&text);
        let reset =
            errors.iter().find(|e| e.key == "workflows.renewal-risk.alert.reset_fields.At_Risk_Flag__c").unwrap();
        assert!(reset.message.contains("does not set"), "{reset}");
        let close = errors.iter().find(|e| e.key == "workflows.renewal-risk.alert.opportunity.close_date").unwrap();
        assert!(close.message.contains("+30d"), "{close}");
        assert_eq!(close.line, Some(line_of("close_date: \"+30d\"")));
        let nothing = STARTER.replace(
            "      subject: \"Adoption stalled: {account}\"\n",
            "      subject: \"Adoption stalled: {account}\"\n      task: false\n",
        );
        let errors = super::tests::errors(&nothing);
        assert!(
            errors
                .iter()
                .any(|e| e.key == "workflows.stalled-adoption.alert.task" && e.message.contains("would do nothing")),
            "{errors:?}"
        );
    }

    #[test]
    fn pendo_metadata_actions_load_show_back_and_are_checked_like_field_updates() {
        let config = load_str(STARTER, "example.yaml").unwrap();
        let Template::EngagementDropAlert(a) = &config.workflows["renewal-risk"].template else { panic!() };
        assert_eq!(a.set_pendo_fields[1], ("risk_since".to_owned(), serde_json::json!("{opened_at}")));
        assert_eq!(a.reset_pendo_fields.len(), 2);
        let again = load_str(&config.redacted_yaml(), "shown.yaml").unwrap();
        let Template::EngagementDropAlert(b) = &again.workflows["renewal-risk"].template else { panic!() };
        assert_eq!((&b.set_pendo_fields, &b.reset_pendo_fields), (&a.set_pendo_fields, &a.reset_pendo_fields));

        let line = line_of("set_pendo_fields:");
        let text = STARTER.replace("risk_since: \"{opened_at}\" }", "risk_since: \"{opend_at}\" }");
        let errs = errors(&text);
        let e = errs.iter().find(|e| e.key == "workflows.renewal-risk.alert.set_pendo_fields.risk_since").unwrap();
        assert!(e.message.contains("did you mean {opened_at}?"), "{e}");
        assert_eq!(e.line, Some(line), "{e}");

        let text = STARTER.replace("{ risk_flag: \"at risk\",", "{ Risk_Flag: \"at risk\",");
        let errs = errors(&text);
        let e = errs.iter().find(|e| e.key == "workflows.renewal-risk.alert.set_pendo_fields.Risk_Flag").unwrap();
        assert!(e.message.contains("write `risk_flag`"), "{e}");
        // risk_flag is no longer set, so its reset is refused too.
        assert!(errs.iter().any(|e| e.key == "workflows.renewal-risk.alert.reset_pendo_fields.risk_flag"), "{errs:?}");

        let text = STARTER.replace("reset_pendo_fields: { risk_flag: null", "reset_pendo_fields: { risk_flag: false");
        let errs = errors(&text);
        let e = errs.iter().find(|e| e.key == "workflows.renewal-risk.alert.reset_pendo_fields.risk_flag").unwrap();
        assert!(e.message.contains("not the kind of value"), "{e}");
    }
}
