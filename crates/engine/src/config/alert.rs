//! The engagement-drop-alert template's settings: when an account's engagement score counts as
//! dropped, when it counts as recovered, and what record tells a person about it.
//!
//! The accounts and their score come from the same keys engagement-scores uses (`matching`,
//! `score`, `core_features`); this template's own keys live under `alert:`. Besides the score
//! rules (`below`, `drop_share`), `when:` takes any condition over the account's figures in CEL
//! (see [`crate::signal`]): stalled adoption, idle accounts, a product's own risk signal.

use serde::{Deserialize, Serialize};

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
/// What a subject may name: the Account's name (the Pendo account id when it has none), the
/// score now and in the previous window.
pub const SUBJECT_PLACEHOLDERS: &[&str] = &["account", "score", "previous_score"];

/// engagement-drop-alert: a high-priority Task (and optionally a Case) when an account's score
/// falls below `below` or by `drop_share` against the previous window; one per episode.
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
    /// The Task's (and Case's) subject, with `{account}`, `{score}`, `{previous_score}`.
    pub subject: String,
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
    })
    .filter(|_| ok)
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
    }
}

/// A subject is non-empty, fits a Task's Subject (255 characters with room for the name) and
/// names only [`SUBJECT_PLACEHOLDERS`].
fn check_subject(subject: &str) -> Result<(), String> {
    if subject.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if subject.chars().count() > 200 {
        return Err(format!("must be at most 200 characters (got {})", subject.chars().count()));
    }
    let mut rest = subject;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("has a `{{` without its `}}`: {subject}"));
        };
        let name = &rest[open + 1..open + close];
        if !SUBJECT_PLACEHOLDERS.contains(&name) {
            let hint = crate::preflight::closest(name, SUBJECT_PLACEHOLDERS.iter().copied())
                .map(|c| format!(" (did you mean {{{c}}}?)"))
                .unwrap_or_default();
            return Err(format!(
                "names {{{name}}}, which is not one of {}{hint}",
                SUBJECT_PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

/// `subject` with its placeholders filled in.
pub fn render_subject(subject: &str, account: &str, score: f64, previous: f64) -> String {
    subject
        .replace("{account}", account)
        .replace("{score}", &score.to_string())
        .replace("{previous_score}", &previous.to_string())
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
}
