//! The nps-realtime template's configuration: its wire shapes, its validation into
//! [`NpsConfig`], and its rendering back to the wire form for display.
//!
//! Every key has a default that works with the fields the usagesync package installs, so a
//! minimal workflow is `template`, `schedule` (when reconciliation polls Pendo) and
//! `window_days`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::{Errors, salesforce_field};
use super::{MetadataGroup, wire};

/// Default for [`NpsConfig::batch_window`].
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(250);
/// Default detractor range, inclusive: NPS's own 0–6.
pub const DEFAULT_DETRACTORS: (u8, u8) = (0, 6);

/// nps-realtime: each NPS response onto its Contact, the Account's health score recomputed,
/// detractors routed to a follow-up for the owner; Pendo `pollEvents` reconciles on the
/// workflow's schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct NpsConfig {
    /// Responses pending within this window after the first one are written together.
    pub batch_window: Duration,
    /// Ratings in this range (inclusive) are detractors.
    pub detractors: (u8, u8),
    pub contact: ContactConfig,
    pub health_score: Option<HealthScoreConfig>,
    pub follow_up: Option<FollowUpConfig>,
    /// The NPS guide polled by reconciliation; `None`: the guide whose first poll is `NPSRating`.
    pub guide_id: Option<String>,
}

impl NpsConfig {
    pub fn is_detractor(&self, rating: i64) -> bool {
        (i64::from(self.detractors.0)..=i64::from(self.detractors.1)).contains(&rating)
    }
}

/// How a response finds its Contact, and where it lands.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactConfig {
    /// Tried in order; the first that finds exactly one Contact wins.
    pub match_by: Vec<ContactMatch>,
    pub score_field: String,
    pub comment_field: String,
    pub date_field: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ContactMatch {
    /// A Contact external-ID field holding the Pendo visitor id.
    VisitorIdField(String),
    /// The visitor's email (from Pendo visitor metadata) against Contact `Email`,
    /// case-insensitively.
    Email { group: MetadataGroup, field: String },
}

/// `health = (nps_weight × nps + engagement_weight × engagement) / (sum of the weights present)`,
/// 0..100, where `nps` is the account's Net Promoter Score over its Contacts' latest answers
/// mapped from -100..100 onto 0..100 and `engagement` the Account field (an engagement score
/// 0..100, e.g. the one engagement-scores writes). A missing engagement value drops its term.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthScoreConfig {
    pub field: String,
    pub engagement_field: String,
    pub nps_weight: f64,
    pub engagement_weight: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUpObject {
    Task,
    Case,
}

impl FollowUpObject {
    pub fn name(self) -> &'static str {
        match self {
            FollowUpObject::Task => "Task",
            FollowUpObject::Case => "Case",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerSource {
    Account,
    Contact,
}

impl OwnerSource {
    pub fn name(self) -> &'static str {
        match self {
            OwnerSource::Account => "account",
            OwnerSource::Contact => "contact",
        }
    }
}

/// The recovery Task or Case for a detractor, upserted on `Usagesync_Key__c` so a response
/// makes one record however often it is processed.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowUpConfig {
    pub object: FollowUpObject,
    pub owner: OwnerSource,
    pub subject: String,
    pub priority: String,
    /// Task `ActivityDate` = response date + this many days.
    pub due_in_days: u32,
    pub key_field: String,
}

// ---------------------------------------------------------------------------------------------
// Wire

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DetractorsWire {
    pub min: Option<u8>,
    pub max: Option<u8>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContactWire {
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_by: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visitor_id_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_metadata: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_field: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthScoreWire {
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engagement_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nps_weight: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engagement_weight: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FollowUpWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_field: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Validation

pub(crate) fn build(key: &str, w: &wire::Workflow, errors: &mut Errors) -> Option<NpsConfig> {
    let k = |leaf: &str| format!("{key}.{leaf}");
    let batch_window = match w.batch_window_ms {
        None => Some(DEFAULT_BATCH_WINDOW),
        Some(ms) if (10..=10_000).contains(&ms) => Some(Duration::from_millis(ms)),
        Some(ms) => {
            errors.push(&k("batch_window_ms"), format!("must be between 10 and 10000 milliseconds (got {ms})"));
            None
        }
    };
    let detractors = match &w.detractors {
        None => Some(DEFAULT_DETRACTORS),
        Some(d) => {
            let min = d.min.unwrap_or(DEFAULT_DETRACTORS.0);
            let max = d.max.unwrap_or(DEFAULT_DETRACTORS.1);
            if max > 10 || min > max {
                errors
                    .push(&k("detractors"), format!("must be a range within 0..10 with min ≤ max (got {min}..{max})"));
                None
            } else {
                Some((min, max))
            }
        }
    };
    let default_contact = ContactWire::default();
    let contact = contact(&k("contact"), w.contact.as_ref().unwrap_or(&default_contact), errors);
    let health_score = match &w.health_score {
        None => Some(None),
        Some(h) => health_score(&k("health_score"), h, errors).map(Some),
    };
    let follow_up = match &w.follow_up {
        None => Some(None),
        Some(f) => follow_up(&k("follow_up"), f, errors).map(Some),
    };
    let guide_id = match &w.nps_guide_id {
        Some(g) if g.trim().is_empty() => {
            errors
                .push(&k("nps_guide_id"), "must not be empty (omit it to use the guide whose first poll is NPSRating)");
            None
        }
        other => Some(other.clone()),
    };
    Some(NpsConfig {
        batch_window: batch_window?,
        detractors: detractors?,
        contact: contact?,
        health_score: health_score?,
        follow_up: follow_up?,
        guide_id: guide_id?,
    })
}

fn field_or(value: &Option<String>, default: &str, key: &str, errors: &mut Errors) -> Option<String> {
    match value {
        Some(f) => salesforce_field(f, key, errors),
        None => Some(default.to_owned()),
    }
}

fn contact(key: &str, c: &ContactWire, errors: &mut Errors) -> Option<ContactConfig> {
    let k = |leaf: &str| format!("{key}.{leaf}");
    let visitor_id_field = field_or(&c.visitor_id_field, "Pendo_Visitor_Id__c", &k("visitor_id_field"), errors);
    let email = match c.email_metadata.as_deref().unwrap_or("agent.email").split_once('.') {
        Some((group, field))
            if !field.is_empty() && field.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') =>
        {
            match MetadataGroup::ALL.iter().copied().find(|m| m.name() == group) {
                Some(group) => Some((group, field.to_owned())),
                None => {
                    errors.push(&k("email_metadata"), format!("unknown metadata group `{group}`"));
                    None
                }
            }
        }
        _ => {
            errors.push(&k("email_metadata"), "write <group>.<field>, e.g. agent.email");
            None
        }
    };
    let names = c.match_by.clone().unwrap_or_else(|| vec!["visitor_id_field".to_owned(), "email".to_owned()]);
    if names.is_empty() {
        errors.push(&k("match"), "give at least one of visitor_id_field, email");
    }
    let mut match_by = Vec::new();
    let mut ok = !names.is_empty();
    for (i, name) in names.iter().enumerate() {
        let rule = match name.as_str() {
            "visitor_id_field" => visitor_id_field.clone().map(ContactMatch::VisitorIdField),
            "email" => email.clone().map(|(group, field)| ContactMatch::Email { group, field }),
            other => {
                errors.push(
                    &format!("{key}.match[{i}]"),
                    format!("unknown contact match `{other}`; expected one of: visitor_id_field, email"),
                );
                None
            }
        };
        match rule {
            Some(r) if match_by.contains(&r) => {
                ok = false;
                errors.push(&format!("{key}.match[{i}]"), format!("`{name}` is listed twice"));
            }
            Some(r) => match_by.push(r),
            None => ok = false,
        }
    }
    let score_field = field_or(&c.score_field, "NPS_Score__c", &k("score_field"), errors);
    let comment_field = field_or(&c.comment_field, "NPS_Comment__c", &k("comment_field"), errors);
    let date_field = field_or(&c.date_field, "NPS_Date__c", &k("date_field"), errors);
    let (score_field, comment_field, date_field) = (score_field?, comment_field?, date_field?);
    let mut lower: Vec<String> =
        [&score_field, &comment_field, &date_field].iter().map(|f| f.to_ascii_lowercase()).collect();
    lower.sort();
    lower.dedup();
    if lower.len() < 3 {
        errors.push(key, "score_field, comment_field and date_field must be three different fields");
        return None;
    }
    ok.then_some(ContactConfig { match_by, score_field, comment_field, date_field })
}

fn weight(value: Option<f64>, key: &str, errors: &mut Errors) -> Option<f64> {
    let w = value.unwrap_or(0.5);
    if w.is_finite() && w >= 0.0 {
        Some(w)
    } else {
        errors.push(key, format!("must be 0 or more (got {w})"));
        None
    }
}

fn health_score(key: &str, h: &HealthScoreWire, errors: &mut Errors) -> Option<HealthScoreConfig> {
    let k = |leaf: &str| format!("{key}.{leaf}");
    let field = errors.required(&h.field, &k("field")).and_then(|f| salesforce_field(f, &k("field"), errors));
    let engagement_field = field_or(&h.engagement_field, "Pendo_Engagement_Score__c", &k("engagement_field"), errors);
    let nps_weight = weight(h.nps_weight, &k("nps_weight"), errors);
    let engagement_weight = weight(h.engagement_weight, &k("engagement_weight"), errors);
    let (nps_weight, engagement_weight) = (nps_weight?, engagement_weight?);
    if nps_weight <= 0.0 {
        errors.push(&k("nps_weight"), "must be more than 0: the health score follows NPS responses");
        return None;
    }
    Some(HealthScoreConfig { field: field?, engagement_field: engagement_field?, nps_weight, engagement_weight })
}

fn follow_up(key: &str, f: &FollowUpWire, errors: &mut Errors) -> Option<FollowUpConfig> {
    let k = |leaf: &str| format!("{key}.{leaf}");
    let object = match f.object.as_deref().unwrap_or("Task") {
        "Task" => Some(FollowUpObject::Task),
        "Case" => Some(FollowUpObject::Case),
        other => {
            errors.push(&k("object"), format!("unknown follow-up object `{other}`; expected Task or Case"));
            None
        }
    };
    let owner = match f.owner.as_deref().unwrap_or("account") {
        "account" => Some(OwnerSource::Account),
        "contact" => Some(OwnerSource::Contact),
        other => {
            errors.push(&k("owner"), format!("unknown owner `{other}`; expected account or contact"));
            None
        }
    };
    let subject = f.subject.clone().unwrap_or_else(|| "NPS detractor: follow up".to_owned());
    if subject.trim().is_empty() || subject.chars().count() > 200 {
        errors.push(&k("subject"), "must be 1 to 200 characters");
        return None;
    }
    let priority = f.priority.clone().unwrap_or_else(|| "High".to_owned());
    let priorities: &[&str] = match object? {
        FollowUpObject::Task => &["High", "Normal", "Low"],
        FollowUpObject::Case => &["High", "Medium", "Low"],
    };
    if !priorities.contains(&priority.as_str()) {
        errors
            .push(&k("priority"), format!("`{priority}` is not a priority of this object ({})", priorities.join(", ")));
        return None;
    }
    let due_in_days = f.due_in_days.unwrap_or(2);
    if due_in_days > 365 {
        errors.push(&k("due_in_days"), format!("must be at most 365 (got {due_in_days})"));
        return None;
    }
    let key_field = field_or(&f.key_field, "Usagesync_Key__c", &k("key_field"), errors)?;
    Some(FollowUpConfig { object: object?, owner: owner?, subject, priority, due_in_days, key_field })
}

/// Fills the nps-realtime keys of `out` from `c`, defaults included.
pub(crate) fn to_wire(c: &NpsConfig, out: &mut wire::Workflow) {
    out.batch_window_ms = Some(u64::try_from(c.batch_window.as_millis()).unwrap_or(u64::MAX));
    out.detractors = Some(DetractorsWire { min: Some(c.detractors.0), max: Some(c.detractors.1) });
    let mut contact = ContactWire {
        score_field: Some(c.contact.score_field.clone()),
        comment_field: Some(c.contact.comment_field.clone()),
        date_field: Some(c.contact.date_field.clone()),
        ..ContactWire::default()
    };
    let mut names = Vec::new();
    for rule in &c.contact.match_by {
        match rule {
            ContactMatch::VisitorIdField(f) => {
                names.push("visitor_id_field".to_owned());
                contact.visitor_id_field = Some(f.clone());
            }
            ContactMatch::Email { group, field } => {
                names.push("email".to_owned());
                contact.email_metadata = Some(format!("{}.{field}", group.name()));
            }
        }
    }
    contact.match_by = Some(names);
    out.contact = Some(contact);
    out.health_score = c.health_score.as_ref().map(|h| HealthScoreWire {
        field: Some(h.field.clone()),
        engagement_field: Some(h.engagement_field.clone()),
        nps_weight: Some(h.nps_weight),
        engagement_weight: Some(h.engagement_weight),
    });
    out.follow_up = c.follow_up.as_ref().map(|f| FollowUpWire {
        object: Some(f.object.name().to_owned()),
        owner: Some(f.owner.name().to_owned()),
        subject: Some(f.subject.clone()),
        priority: Some(f.priority.clone()),
        due_in_days: Some(f.due_in_days),
        key_field: Some(f.key_field.clone()),
    });
    out.nps_guide_id = c.guide_id.clone();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::{STARTER, Template, load_str};
    use super::*;

    fn nps(text: &str) -> NpsConfig {
        let config = match load_str(text, "test.yaml") {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        };
        match &config.workflows["nps"].template {
            Template::NpsRealtime(c) => c.clone(),
            other => panic!("nps is nps-realtime, got {:?}", other.kind()),
        }
    }

    /// The example's nps workflow cut down to its required keys.
    fn minimal() -> String {
        let cut = STARTER.find("  nps:").expect("the example has an nps workflow");
        format!(
            "{}  nps:\n    template: nps-realtime\n    schedule: \"*/15 * * * *\"\n    window_days: 7\n",
            &STARTER[..cut]
        )
    }

    #[test]
    fn the_example_and_the_defaults_agree() {
        let example = nps(STARTER);
        let minimal = nps(&minimal());
        assert_eq!(minimal.batch_window, Duration::from_millis(250));
        assert_eq!(minimal.detractors, (0, 6));
        assert_eq!(
            minimal.contact.match_by,
            vec![
                ContactMatch::VisitorIdField("Pendo_Visitor_Id__c".into()),
                ContactMatch::Email { group: MetadataGroup::Agent, field: "email".into() }
            ]
        );
        assert_eq!(example.contact, minimal.contact);
        assert_eq!(minimal.health_score, None);
        assert_eq!(minimal.follow_up, None);
        let health = example.health_score.as_ref().unwrap();
        assert_eq!(health.field, "Health_Score__c");
        let follow = example.follow_up.as_ref().unwrap();
        assert_eq!(
            (follow.object, follow.owner, follow.key_field.as_str()),
            (FollowUpObject::Task, OwnerSource::Account, "Usagesync_Key__c")
        );
        assert!(example.is_detractor(0) && example.is_detractor(6) && !example.is_detractor(7));
    }

    #[test]
    fn the_redacted_form_loads_back_to_the_same_config() {
        let config = load_str(STARTER, "test.yaml").unwrap();
        let again = nps(&config.redacted_yaml());
        assert_eq!(again, nps(STARTER));
    }

    #[test]
    fn bad_values_and_foreign_keys_are_located() {
        let text = STARTER
            .replace("batch_window_ms: 250", "batch_window_ms: 5")
            .replace("detractors: { min: 0, max: 6 }", "detractors: { min: 7, max: 6 }")
            .replace("match: [visitor_id_field, email]", "match: [visitor_id_field, phone]")
            .replace("object: Task ", "object: Note ")
            .replace("      field: Health_Score__c", "      field: Health Score")
            .replace("    template: nps-realtime\n", "    template: nps-realtime\n    core_features: []\n");
        let errors = load_str(&text, "bad.yaml").unwrap_err().to_string();
        for needle in [
            "workflows.nps.batch_window_ms",
            "workflows.nps.detractors",
            "workflows.nps.contact.match[1]",
            "workflows.nps.follow_up.object",
            "workflows.nps.health_score.field",
            "workflows.nps.core_features",
        ] {
            assert!(errors.contains(needle), "no error for {needle} in:\n{errors}");
        }
        let engagement_with_nps_key = STARTER.replacen(
            "    template: engagement-scores\n",
            "    template: engagement-scores\n    batch_window_ms: 100\n",
            1,
        );
        let errors = load_str(&engagement_with_nps_key, "bad.yaml").unwrap_err().to_string();
        assert!(errors.contains("workflows.engagement.batch_window_ms"), "{errors}");
    }
}
