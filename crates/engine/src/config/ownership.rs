//! Field ownership across workflows, checked when the config loads: the first guard against
//! sync loops. Every field usagesync writes has exactly one owner (one workflow, so one
//! direction), and a field written in one direction is never read as a value by the other: a
//! Salesforce field filled from Pendo is not sent back to Pendo, and a Pendo field filled from
//! Salesforce is not read back into Salesforce. Also here: which template uses which keys.

use std::collections::HashMap;

use indexmap::IndexMap;

use super::validate::Errors;
use super::{Template, TemplateKind, UnmatchedAccount, Workflow, wire};

/// Which way a workflow moves values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToSalesforce,
    ToPendo,
}

impl Direction {
    fn words(self) -> &'static str {
        match self {
            Direction::ToSalesforce => "Pendo → Salesforce",
            Direction::ToPendo => "Salesforce → Pendo",
        }
    }
}

/// A field on either side, compared case-insensitively as both systems do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FieldRef {
    Salesforce { object: &'static str, field: String },
    Pendo { kind: &'static str, group: String, field: String },
}

impl FieldRef {
    fn salesforce(object: &'static str, field: &str) -> Self {
        FieldRef::Salesforce { object, field: field.to_ascii_lowercase() }
    }

    fn pendo(kind: &'static str, group: &str, field: &str) -> Self {
        FieldRef::Pendo { kind, group: group.to_ascii_lowercase(), field: field.to_ascii_lowercase() }
    }

    fn describe(&self) -> String {
        match self {
            FieldRef::Salesforce { object, field } => format!("Salesforce {object}.{field}"),
            FieldRef::Pendo { kind, group, field } => format!("Pendo {kind} metadata {group}.{field}"),
        }
    }
}

/// What one workflow reads as values and writes, each with the config key that says so.
struct Flows {
    direction: Direction,
    reads: Vec<(FieldRef, String)>,
    writes: Vec<(FieldRef, String)>,
}

fn flows(name: &str, template: &Template) -> Flows {
    let key = |leaf: &str| format!("workflows.{name}.{leaf}");
    match template {
        Template::EngagementScores(e) => Flows {
            direction: Direction::ToSalesforce,
            reads: vec![],
            writes: e
                .fields
                .iter()
                .map(|(metric, field)| {
                    (FieldRef::salesforce("Account", field), key(&format!("fields.{}", metric.key())))
                })
                .collect(),
        },
        Template::NewUsersToContacts(n) => {
            let c = &n.contact_fields;
            let mut writes = vec![(FieldRef::salesforce("Contact", &c.visitor_id), key("contact_fields.visitor_id"))];
            if let Some(f) = &c.last_visit {
                writes.push((FieldRef::salesforce("Contact", f), key("contact_fields.last_visit")));
            }
            if let Some(f) = &c.first_visit {
                writes.push((FieldRef::salesforce("Contact", f), key("contact_fields.first_visit")));
            }
            if n.unmatched_account == UnmatchedAccount::Lead {
                writes.push((FieldRef::salesforce("Lead", &c.visitor_id), key("contact_fields.visitor_id")));
            }
            let reads = ["lastvisit", "firstvisit"]
                .into_iter()
                .map(|f| (FieldRef::pendo("visitor", "auto", f), key("contact_fields")))
                .chain(std::iter::once((FieldRef::pendo("visitor", "agent", "email"), key("contact_fields"))))
                .collect();
            Flows { direction: Direction::ToSalesforce, reads, writes }
        }
        // Their Tasks, Cases and Opportunities are records they create, each under its own key;
        // no field of an existing record is theirs.
        Template::EngagementDropAlert(_) | Template::ExpansionOpportunity(_) => {
            Flows { direction: Direction::ToSalesforce, reads: vec![], writes: vec![] }
        }
        Template::TrialUsage(t) => {
            let f = &t.fields;
            let writes = [
                (&f.active_users, "active_users"),
                (&f.features_explored, "features_explored"),
                (&f.guides_completed, "guides_completed"),
                (&f.last_active, "last_active"),
                (&f.drop_off_step, "drop_off_step"),
            ]
            .into_iter()
            .filter_map(|(field, leaf)| {
                field.as_ref().map(|f| (FieldRef::salesforce("Opportunity", f), key(&format!("trial.fields.{leaf}"))))
            })
            .collect();
            Flows { direction: Direction::ToSalesforce, reads: vec![], writes }
        }
        Template::NpsRealtime(n) => {
            let c = &n.contact;
            let mut writes = vec![
                (FieldRef::salesforce("Contact", &c.score_field), key("contact.score_field")),
                (FieldRef::salesforce("Contact", &c.comment_field), key("contact.comment_field")),
                (FieldRef::salesforce("Contact", &c.date_field), key("contact.date_field")),
            ];
            let mut reads = Vec::new();
            if let Some(h) = &n.health_score {
                writes.push((FieldRef::salesforce("Account", &h.field), key("health_score.field")));
                reads
                    .push((FieldRef::salesforce("Account", &h.engagement_field), key("health_score.engagement_field")));
            }
            Flows { direction: Direction::ToSalesforce, reads, writes }
        }
        Template::AccountAttributesToPendo(a) => Flows {
            direction: Direction::ToPendo,
            reads: a
                .attributes
                .iter()
                .enumerate()
                .map(|(i, at)| {
                    (FieldRef::salesforce("Account", &at.salesforce), key(&format!("attributes[{i}].salesforce")))
                })
                .collect(),
            writes: a
                .attributes
                .iter()
                .enumerate()
                .map(|(i, at)| {
                    (FieldRef::pendo("account", a.group.name(), &at.pendo), key(&format!("attributes[{i}].pendo")))
                })
                .collect(),
        },
    }
}

/// Checks ownership over every workflow (disabled ones too: enabling one must not create a loop).
/// `names`: every workflow in the file, built or not (one with its own errors is not missing).
pub(super) fn check(workflows: &IndexMap<String, Workflow>, names: &[&str], errors: &mut Errors) {
    let all: Vec<(&str, Flows)> = workflows.iter().map(|(name, w)| (name.as_str(), flows(name, &w.template))).collect();
    let mut owner: HashMap<&FieldRef, (&str, Direction)> = HashMap::new();
    for (name, f) in &all {
        for (field, key) in &f.writes {
            match owner.get(field) {
                // One workflow may name a field twice on purpose (a Contact's and a Lead's key).
                Some((first, _)) if first == name => {}
                Some((first, _)) => errors.push(
                    key,
                    format!(
                        "{} is already written by workflow `{first}`: each field has exactly one owner, or two workflows would overwrite each other on every run",
                        field.describe()
                    ),
                ),
                None => {
                    owner.insert(field, (name, f.direction));
                }
            }
        }
    }
    for (name, f) in &all {
        for (field, key) in &f.reads {
            if let Some((writer, direction)) = owner.get(field)
                && *direction != f.direction
            {
                errors.push(
                    key,
                    format!(
                        "{} is written by workflow `{writer}` ({}); workflow `{name}` would send it back ({}), a loop: each field has one owning direction",
                        field.describe(),
                        direction.words(),
                        f.direction.words()
                    ),
                );
            }
        }
    }
    for (name, w) in workflows {
        if let Template::AccountAttributesToPendo(a) = &w.template
            && let Some(other) = &a.pendo_account.id_map_of
        {
            let key = format!("workflows.{name}.pendo_account.id_map_of");
            match workflows.get(other).map(|o| o.template.kind()) {
                Some(TemplateKind::EngagementScores | TemplateKind::NewUsersToContacts) => {}
                Some(kind) => errors
                    .push(&key, format!("workflow `{other}` uses template {}, which keeps no matches", kind.name())),
                None if names.contains(&other.as_str()) => {}
                None => errors.push(&key, format!("no workflow `{other}` in this config")),
            }
        }
    }
}

/// The template-specific keys and the templates that use each.
fn template_keys(w: &wire::Workflow) -> [(&'static str, bool, &'static [TemplateKind]); 23] {
    use TemplateKind::{
        AccountAttributesToPendo as Attr, EngagementDropAlert as Alert, EngagementScores as Eng,
        ExpansionOpportunity as Exp, NewUsersToContacts as New, NpsRealtime as Nps, TrialUsage as Trial,
    };
    [
        ("matching", w.matching.is_some(), &[Eng, New, Alert, Exp, Trial]),
        ("recheck_matches_after", w.recheck_matches_after.is_some(), &[Eng, New, Alert, Exp, Trial]),
        ("core_features", w.core_features.is_some(), &[Eng, Alert, Exp, Trial]),
        ("score", w.score.is_some(), &[Eng, Alert, Exp, Trial]),
        ("fields", w.fields.is_some(), &[Eng, Alert, Exp, Trial]),
        ("overlap", w.overlap.is_some(), &[New, Attr]),
        ("contact_fields", w.contact_fields.is_some(), &[New]),
        ("strip_plus_addressing", w.strip_plus_addressing.is_some(), &[New]),
        ("unmatched_account", w.unmatched_account.is_some(), &[New]),
        ("lead_source", w.lead_source.is_some(), &[New]),
        ("pendo_account", w.pendo_account.is_some(), &[Attr]),
        ("pendo_group", w.pendo_group.is_some(), &[Attr]),
        ("integration_user", w.integration_user.is_some(), &[Attr]),
        ("attributes", w.attributes.is_some(), &[Attr]),
        ("batch_window_ms", w.batch_window_ms.is_some(), &[Nps]),
        ("detractors", w.detractors.is_some(), &[Nps]),
        ("contact", w.contact.is_some(), &[Nps]),
        ("health_score", w.health_score.is_some(), &[Nps]),
        ("follow_up", w.follow_up.is_some(), &[Nps]),
        ("nps_guide_id", w.nps_guide_id.is_some(), &[Nps]),
        ("alert", w.alert.is_some(), &[Alert]),
        ("expansion", w.expansion.is_some(), &[Exp]),
        ("trial", w.trial.is_some(), &[Trial]),
    ]
}

/// Reports keys that belong to other templates: set by mistake, they would be silently ignored.
pub(super) fn foreign_keys(key: &str, kind: TemplateKind, w: &wire::Workflow, errors: &mut Errors) {
    for (leaf, present, users) in template_keys(w) {
        if present && !users.contains(&kind) {
            let names: Vec<&str> = users.iter().map(|k| k.name()).collect();
            errors.push(
                &format!("{key}.{leaf}"),
                format!("not used by template {} (it belongs to: {})", kind.name(), names.join(", ")),
            );
        }
    }
}
