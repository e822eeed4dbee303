//! The contact-engagement template's settings: how a Pendo visitor finds its Contact (the
//! Contact field holding the visitor id, or the e-mail address), which Contact fields take
//! each person's usage, and the per-person signal (`alert:`) that makes a Task on the Contact
//! once per episode. Its keys live under `contacts:`.

use serde::{Deserialize, Serialize};

use super::alert::{DEFAULT_DUE_IN_DAYS, DEFAULT_KEY_FIELD, Owner, OwnerWire};
use super::validate::{Errors, salesforce_field};
use super::wire;
use crate::signal::{Condition, PERSON_VARIABLES};

/// contact-engagement: each person's usage onto their Contact, and as configured a Task when a
/// signal over their figures holds.
#[derive(Debug, Clone)]
pub struct ContactEngagementConfig {
    pub match_by: PersonMatch,
    /// May be empty when `alert` is set.
    pub fields: PersonFields,
    pub alert: Option<PersonAlert>,
}

/// Default for [`PersonAlert::subject`].
pub const DEFAULT_PERSON_SUBJECT: &str = "Usage signal: {person}";
/// What a person's alert text may name besides their figures (each by name, and as
/// `previous.<figure>`): the Contact's name (`person`, the visitor id when it has none), the
/// Pendo visitor id, the figure the condition names first (`metric`, `from` → `to`), why it
/// alerted (`reason`) and when the episode opened (`opened_at`).
pub const PERSON_PLACEHOLDERS: &[&str] = &["person", "visitor", "metric", "from", "to", "reason", "opened_at"];

/// A signal over one person's figures: while `when` holds, the matched Contact gets one Task
/// per episode (on the Contact and its Account, for the Account's owner or the owner rule).
#[derive(Debug, Clone)]
pub struct PersonAlert {
    pub when: Condition,
    /// The open episode closes once this holds; without it, once `when` no longer holds.
    pub rearm_when: Option<Condition>,
    pub subject: String,
    /// Without one, the reason and the figures.
    pub description: Option<String>,
    /// Who owns the Task: the Contact's Account's owner by default.
    pub owner: Owner,
    pub due_in_days: u32,
    pub key_field: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersonAlertWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rearm_when: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_field: Option<String>,
}

/// How a visitor finds its Contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersonMatch {
    /// The Contact field holding the Pendo visitor id (what new-users-to-contacts fills).
    VisitorId(String),
    /// The visitor's e-mail (Pendo's `agent.email`) equal to the Contact's `Email`, both trimmed
    /// and lower-cased; an address held by two Contacts or two visitors matches nobody.
    Email,
}

/// Contact field per figure; at least one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonFields {
    pub active_days: Option<String>,
    pub events: Option<String>,
    pub minutes: Option<String>,
    /// Distinct features the person used in the window.
    pub features_used: Option<String>,
    /// Distinct guides the person reached the last step of in the window.
    pub guides_completed: Option<String>,
    pub last_active: Option<String>,
}

impl PersonFields {
    /// (figure, field) for every configured field, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("active_days", &self.active_days),
            ("events", &self.events),
            ("minutes", &self.minutes),
            ("features_used", &self.features_used),
            ("guides_completed", &self.guides_completed),
            ("last_active", &self.last_active),
        ]
        .into_iter()
        .filter_map(|(figure, field)| field.as_deref().map(|f| (figure, f)))
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContactsWire {
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visitor_id_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<PersonFieldsWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<PersonAlertWire>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersonFieldsWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_days: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minutes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features_used: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guides_completed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
}

pub(crate) fn build(key: &str, w: &wire::Workflow, errors: &mut Errors) -> Option<ContactEngagementConfig> {
    let ck = format!("{key}.contacts");
    let c = errors.required(&w.contacts, &ck)?;
    let mut ok = true;
    let visitor_key = format!("{ck}.visitor_id_field");
    let match_by = match (c.match_by.as_deref().unwrap_or("visitor_id"), &c.visitor_id_field) {
        ("visitor_id", field) => errors
            .required(field, &visitor_key)
            .and_then(|f| salesforce_field(f, &visitor_key, errors))
            .map(PersonMatch::VisitorId),
        ("email", None) => Some(PersonMatch::Email),
        ("email", Some(_)) => {
            errors.push(&visitor_key, "only with `match: visitor_id` (an e-mail match reads Contact.Email)");
            None
        }
        (other, _) => {
            errors.push(&format!("{ck}.match"), format!("`{other}` is not a match: visitor_id or email"));
            None
        }
    };
    ok &= match_by.is_some();
    let alert = c.alert.as_ref().map(|a| person_alert(&format!("{ck}.alert"), a, errors));
    if alert.as_ref().is_some_and(Option::is_none) {
        ok = false;
    }
    let alert = alert.flatten();
    let fk = format!("{ck}.fields");
    let none = PersonFieldsWire::default();
    let f = if alert.is_some() { c.fields.as_ref().unwrap_or(&none) } else { errors.required(&c.fields, &fk)? };
    let mut field = |v: &Option<String>, leaf: &str| -> Option<String> {
        let name = v.as_ref()?;
        let checked = salesforce_field(name, &format!("{fk}.{leaf}"), errors);
        ok &= checked.is_some();
        checked
    };
    let fields = PersonFields {
        active_days: field(&f.active_days, "active_days"),
        events: field(&f.events, "events"),
        minutes: field(&f.minutes, "minutes"),
        features_used: field(&f.features_used, "features_used"),
        guides_completed: field(&f.guides_completed, "guides_completed"),
        last_active: field(&f.last_active, "last_active"),
    };
    if ok && fields.iter().next().is_none() && alert.is_none() {
        ok = false;
        errors.push(
            &fk,
            "name at least one Contact field (active_days, events, minutes, features_used, guides_completed, last_active), or give an `alert`",
        );
    }
    Some(ContactEngagementConfig { match_by: match_by?, fields, alert }).filter(|_| ok)
}

/// A person's signal, every error located under `key`.
fn person_alert(key: &str, a: &PersonAlertWire, errors: &mut Errors) -> Option<PersonAlert> {
    let k = |leaf: &str| format!("{key}.{leaf}");
    let mut ok = true;
    let mut condition = |leaf: &str, text: Option<&String>, ok: &mut bool| -> Option<Condition> {
        Condition::compile_for_person(text?).map_err(|m| errors.push(&k(leaf), m)).inspect_err(|()| *ok = false).ok()
    };
    let when = condition("when", a.when.as_ref(), &mut ok);
    let rearm_when = condition("rearm_when", a.rearm_when.as_ref(), &mut ok);
    if a.when.is_none() {
        errors.push(&k("when"), "missing: `when` (a condition over the person's figures) is required under `alert`");
        ok = false;
    }
    let subject = a.subject.clone().unwrap_or_else(|| DEFAULT_PERSON_SUBJECT.to_owned());
    let mut text = |leaf: &str, t: &str, with_subject: bool| {
        if let Err(m) = check_text(t, with_subject) {
            ok = false;
            errors.push(&k(leaf), m);
        }
    };
    text("subject", &subject, false);
    if let Some(d) = &a.description {
        text("description", d, true);
    }
    if subject.trim().is_empty() || subject.chars().count() > 200 {
        ok = false;
        errors.push(&k("subject"), "must be 1 to 200 characters");
    }
    let owner = match &a.owner {
        None => Owner::Account,
        Some(o) => super::alert::owner(o, true, false, false).unwrap_or_else(|m| {
            ok = false;
            errors.push(&k("owner"), m);
            Owner::Account
        }),
    };
    let due_in_days = a.due_in_days.unwrap_or(DEFAULT_DUE_IN_DAYS);
    if due_in_days > 365 {
        ok = false;
        errors.push(&k("due_in_days"), format!("must be at most 365 (got {due_in_days})"));
    }
    let key_field = match &a.key_field {
        Some(f) => salesforce_field(f, &k("key_field"), errors)?,
        None => DEFAULT_KEY_FIELD.to_owned(),
    };
    Some(PersonAlert {
        when: when?,
        rearm_when,
        subject,
        description: a.description.clone(),
        owner,
        due_in_days,
        key_field,
    })
    .filter(|_| ok)
}

/// Every name a person's alert text may use: [`PERSON_PLACEHOLDERS`], the figures and
/// `previous.<figure>`, and `{subject}` where the subject is already made.
fn check_text(text: &str, with_subject: bool) -> Result<(), String> {
    let mut listed: Vec<String> = PERSON_PLACEHOLDERS.iter().map(|p| (*p).to_owned()).collect();
    listed.extend(PERSON_VARIABLES.iter().map(|v| (*v).to_owned()));
    listed.extend(PERSON_VARIABLES.iter().map(|v| format!("previous.{v}")));
    if with_subject {
        listed.push("subject".into());
    }
    crate::text::check(text, &|n| listed.iter().any(|l| l == n), &listed)
}

pub(crate) fn to_wire(c: &ContactEngagementConfig) -> ContactsWire {
    let (match_by, visitor_id_field) = match &c.match_by {
        PersonMatch::VisitorId(f) => ("visitor_id", Some(f.clone())),
        PersonMatch::Email => ("email", None),
    };
    let f = &c.fields;
    ContactsWire {
        match_by: Some(match_by.to_owned()),
        visitor_id_field,
        alert: c.alert.as_ref().map(|a| PersonAlertWire {
            when: Some(a.when.text().to_owned()),
            rearm_when: a.rearm_when.as_ref().map(|r| r.text().to_owned()),
            subject: Some(a.subject.clone()),
            description: a.description.clone(),
            owner: match &a.owner {
                Owner::Account => None,
                Owner::User(id) => Some(OwnerWire { user: Some(id.clone()), ..Default::default() }),
                Owner::Username(u) => Some(OwnerWire { username: Some(u.clone()), ..Default::default() }),
                Owner::Queue(id) => Some(OwnerWire { queue: Some(id.clone()), ..Default::default() }),
            },
            due_in_days: Some(a.due_in_days),
            key_field: Some(a.key_field.clone()),
        }),
        fields: (f.iter().next().is_some() || c.alert.is_none()).then(|| PersonFieldsWire {
            active_days: f.active_days.clone(),
            events: f.events.clone(),
            minutes: f.minutes.clone(),
            features_used: f.features_used.clone(),
            guides_completed: f.guides_completed.clone(),
            last_active: f.last_active.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{STARTER, Template, load_str};

    use crate::config::test_support::{errors, line_of};

    #[test]
    fn the_example_persons_signal_loads_and_shows_back_as_written() {
        let config = load_str(STARTER, "example.yaml").unwrap();
        let Template::ContactEngagement(c) = &config.workflows["people-gone-quiet"].template else { panic!() };
        let a = c.alert.as_ref().unwrap();
        assert!(a.when.text().starts_with("days_since_last_active >= 14.0"), "{}", a.when.text());
        assert_eq!((a.due_in_days, a.owner.clone()), (5, super::Owner::Account));
        assert!(c.fields.iter().next().is_none(), "a signal alone needs no Contact fields");
        let again = load_str(&config.redacted_yaml(), "shown.yaml").unwrap();
        let Template::ContactEngagement(b) = &again.workflows["people-gone-quiet"].template else { panic!() };
        let b = b.alert.as_ref().unwrap();
        assert_eq!(
            (b.when.text(), b.rearm_when.as_ref().map(|r| r.text()), &b.subject, &b.description),
            (a.when.text(), a.rearm_when.as_ref().map(|r| r.text()), &a.subject, &a.description)
        );
    }

    #[test]
    fn a_persons_signal_is_checked_at_its_line() {
        let when = "when: \"days_since_last_active >= 14.0 && previous.active_days > 0.0\"";
        let text = STARTER.replace(when, "when: \"score < 30.0\"");
        let errs = errors(&text);
        let e = errs.iter().find(|e| e.key == "workflows.people-gone-quiet.contacts.alert.when").unwrap();
        assert!(e.message.contains("`score`") && e.message.contains("days_since_last_active"), "{e}");
        assert_eq!(e.line, Some(line_of(when)), "{e}");

        let subject = "subject: \"{person} has not used";
        let text = STARTER.replace(subject, "subject: \"{persn} has not used");
        let errs = errors(&text);
        let e = errs.iter().find(|e| e.key == "workflows.people-gone-quiet.contacts.alert.subject").unwrap();
        assert!(e.message.contains("did you mean {person}?"), "{e}");
        assert_eq!(e.line, Some(line_of(subject)), "{e}");

        let text = STARTER.replace("        due_in_days: 5\n", "        owner: { queue: 00G000000000001AAA }\n");
        let errs = errors(&text);
        let e = errs.iter().find(|e| e.key == "workflows.people-gone-quiet.contacts.alert.owner").unwrap();
        assert!(e.message.contains("no queue own a Task"), "{e}");

        let text = STARTER.replace(when, "rearm_when_typo: \"x\"");
        assert!(!errors(&text).is_empty(), "unknown keys and a missing `when` are refused");
    }
}
