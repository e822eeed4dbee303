//! The contact-engagement template's settings: how a Pendo visitor finds its Contact (the
//! Contact field holding the visitor id, or the e-mail address) and which Contact fields take
//! each person's usage. Its keys live under `contacts:`.

use serde::{Deserialize, Serialize};

use super::validate::{Errors, salesforce_field};
use super::wire;

/// contact-engagement: each person's usage onto their Contact.
#[derive(Debug, Clone)]
pub struct ContactEngagementConfig {
    pub match_by: PersonMatch,
    pub fields: PersonFields,
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
    let fk = format!("{ck}.fields");
    let f = errors.required(&c.fields, &fk)?;
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
    if ok && fields.iter().next().is_none() {
        ok = false;
        errors.push(
            &fk,
            "name at least one Contact field (active_days, events, minutes, features_used, guides_completed, last_active)",
        );
    }
    Some(ContactEngagementConfig { match_by: match_by?, fields }).filter(|_| ok)
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
        fields: Some(PersonFieldsWire {
            active_days: f.active_days.clone(),
            events: f.events.clone(),
            minutes: f.minutes.clone(),
            features_used: f.features_used.clone(),
            guides_completed: f.guides_completed.clone(),
            last_active: f.last_active.clone(),
        }),
    }
}
