//! Field ownership across workflows, checked when the config loads: the first guard against
//! sync loops. Every field usagesync writes has exactly one owner (one workflow, so one
//! direction), and a field written in one direction is never read as a value by the other: a
//! Salesforce field filled from Pendo is not sent back to Pendo, and a Pendo field filled from
//! Salesforce is not read back into Salesforce. Also here: which template uses which keys.

use std::collections::HashMap;

use indexmap::IndexMap;

use super::validate::Errors;
use super::{Template, TemplateKind, Workflow, wire};

/// Which way a workflow moves values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
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
pub(crate) enum FieldRef {
    Salesforce { object: &'static str, field: String },
    Pendo { kind: &'static str, group: String, field: String },
}

impl FieldRef {
    pub(crate) fn salesforce(object: &'static str, field: &str) -> Self {
        FieldRef::Salesforce { object, field: field.to_ascii_lowercase() }
    }

    pub(crate) fn pendo(kind: &'static str, group: &str, field: &str) -> Self {
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
pub(crate) struct Flows {
    pub direction: Direction,
    pub reads: Vec<(FieldRef, String)>,
    pub writes: Vec<(FieldRef, String)>,
}

impl Flows {
    /// A Pendo → Salesforce template's flows.
    pub(crate) fn to_salesforce(reads: Vec<(FieldRef, String)>, writes: Vec<(FieldRef, String)>) -> Self {
        Flows { direction: Direction::ToSalesforce, reads, writes }
    }
}

fn flows(name: &str, template: &Template) -> Flows {
    template.spec().flows(&|leaf: &str| format!("workflows.{name}.{leaf}"))
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

/// Reports keys that belong to other templates: set by mistake, they would be silently ignored.
pub(super) fn foreign_keys(key: &str, kind: TemplateKind, w: &wire::Workflow, errors: &mut Errors) {
    for leaf in w.template_keys_set() {
        if !kind.keys().contains(&leaf) {
            let users: Vec<&str> =
                TemplateKind::ALL.iter().filter(|k| k.keys().contains(&leaf)).map(|k| k.name()).collect();
            errors.push(
                &format!("{key}.{leaf}"),
                format!("not used by template {} (it belongs to: {})", kind.name(), users.join(", ")),
            );
        }
    }
}
