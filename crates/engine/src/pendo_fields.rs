//! The Pendo metadata fields a config writes: which they are, whether Pendo has each with a type
//! that takes what is sent (the Pendo half of preflight, one schema read per kind), and the
//! specs for creating those it lacks (`usagesync setup pendo`).
//!
//! Pendo answers a bulk write naming a field it does not have by refusing the whole account's
//! update, so a missing field would cost every value of every account; checked first, only the
//! missing field is held back and the run says so.

use pendo::entities::{FieldDescriptor, Kind, MetadataSchema};
use pendo::metadata::FieldSpec;

use crate::config::{AttributeType, Config, Template, Workflow};
use crate::preflight::{Problem, Use};

/// One metadata field a workflow writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub workflow: String,
    pub kind: Kind,
    pub group: String,
    pub field: String,
    pub value: AttributeType,
    /// The config key naming it, for locating problems.
    pub key: String,
}

impl Wanted {
    /// `custom.plan`: how Pendo and people name the field.
    pub fn path(&self) -> String {
        format!("{}.{}", self.group, self.field)
    }
}

/// The Pendo fields `workflow` writes (none for a template that writes no Pendo metadata).
pub fn wanted(workflow: &Workflow) -> Vec<Wanted> {
    if let Template::EngagementDropAlert(a) = &workflow.template {
        return alert_fields(workflow, a);
    }
    let Template::AccountAttributesToPendo(c) = &workflow.template else { return Vec::new() };
    c.attributes
        .iter()
        .enumerate()
        .map(|(i, a)| Wanted {
            workflow: workflow.name.clone(),
            kind: Kind::Account,
            group: c.group.name().to_owned(),
            field: a.pendo.clone(),
            value: a.kind,
            key: format!("workflows.{}.attributes[{i}].pendo", workflow.name),
        })
        .collect()
}

/// An alert's `set_pendo_fields`, each typed by the value configured: text (templated or not),
/// a number, true/false; a null alone says nothing of the type.
fn alert_fields(workflow: &Workflow, a: &crate::config::DropAlertConfig) -> Vec<Wanted> {
    a.set_pendo_fields
        .iter()
        .map(|(field, v)| Wanted {
            workflow: workflow.name.clone(),
            kind: Kind::Account,
            group: crate::config::alert::PENDO_GROUP.to_owned(),
            field: field.clone(),
            value: match v {
                serde_json::Value::String(_) => AttributeType::Text,
                serde_json::Value::Number(_) => AttributeType::Number,
                serde_json::Value::Bool(_) => AttributeType::Boolean,
                _ => AttributeType::Auto,
            },
            key: format!("workflows.{}.alert.set_pendo_fields.{field}", workflow.name),
        })
        .collect()
}

/// Whether a stored `Type` takes values of `value`. An untyped field (`""`) takes anything, as
/// Pendo types a field by the first value it receives.
fn takes(stored: &str, value: AttributeType) -> bool {
    let stored = stored.to_ascii_lowercase();
    stored.is_empty()
        || match value {
            AttributeType::Auto => true,
            AttributeType::Text => stored == "string",
            AttributeType::Number => matches!(stored.as_str(), "float" | "integer" | "number"),
            AttributeType::Boolean => stored == "boolean",
            AttributeType::Time => stored == "time",
        }
}

fn live<'s>(schema: &'s MetadataSchema, w: &Wanted) -> Option<&'s FieldDescriptor> {
    let deleted = |d: &FieldDescriptor| d.extra.get("isDeleted").and_then(serde_json::Value::as_bool) == Some(true);
    schema.get(&w.group)?.get(&w.field).filter(|d| !deleted(d))
}

/// Why Pendo cannot take a wanted field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    Missing,
    /// Pendo holds the field with this other type.
    OtherType(String),
}

/// The fields of `wanted` that `schema` (Pendo's schema of their kind) cannot take, and why.
pub fn gaps<'w>(wanted: &'w [Wanted], schema: &MetadataSchema) -> Vec<(&'w Wanted, Gap)> {
    wanted
        .iter()
        .filter_map(|w| match live(schema, w) {
            None => Some((w, Gap::Missing)),
            Some(d) if !takes(&d.field_type, w.value) => Some((w, Gap::OtherType(d.field_type.clone()))),
            Some(_) => None,
        })
        .collect()
}

/// The problems of `wanted` against `schema` (Pendo's schema of their kind), located in the config.
pub fn check(config: &Config, wanted: &[Wanted], schema: &MetadataSchema) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (w, gap) in gaps(wanted, schema) {
        let message = match gap {
            Gap::Missing => format!(
                "Pendo {} metadata has no field {} (`usagesync setup pendo --apply` creates it)",
                w.kind.as_str(),
                w.path()
            ),
            Gap::OtherType(stored) => format!(
                "Pendo {} metadata field {} holds {stored}; the workflow sends {} values",
                w.kind.as_str(),
                w.path(),
                w.value.name()
            ),
        };
        let (line, column) = config.position(&w.key).unzip();
        let near = schema
            .get(&w.group)
            .and_then(|fields| crate::preflight::closest(&w.field, fields.keys().map(String::as_str)));
        problems.push(Problem {
            workflow: w.workflow.clone(),
            object: format!("Pendo {}", w.kind.as_str()),
            field: Some(w.path()),
            usage: Use::Update,
            key: w.key.clone(),
            file: config.origin().to_owned(),
            line,
            column,
            message,
            did_you_mean: near.filter(|n| n != &w.field),
        });
    }
    problems
}

/// What creating the missing ones of `wanted` takes: (kind, group, fields) per group. Fields
/// that exist with another type are not here: changing a field's type is a person's decision.
pub fn missing(
    wanted: &[Wanted],
    schema_of: impl Fn(Kind) -> Option<MetadataSchema>,
) -> Vec<(Kind, String, Vec<FieldSpec>)> {
    let mut out: Vec<(Kind, String, Vec<FieldSpec>)> = Vec::new();
    for w in wanted {
        let schema = schema_of(w.kind).unwrap_or_default();
        if live(&schema, w).is_some() {
            continue;
        }
        let spec = FieldSpec {
            name: w.field.clone(),
            displayname: w.field.clone(),
            field_type: match w.value {
                AttributeType::Auto | AttributeType::Text => "string",
                AttributeType::Number => "number",
                AttributeType::Boolean => "boolean",
                AttributeType::Time => "time",
            }
            .to_owned(),
        };
        match out.iter_mut().find(|(k, g, _)| *k == w.kind && *g == w.group) {
            Some((_, _, specs)) if specs.iter().any(|s| s.name == spec.name) => {}
            Some((_, _, specs)) => specs.push(spec),
            None => out.push((w.kind, w.group.clone(), vec![spec])),
        }
    }
    out
}

/// Every enabled workflow's Pendo fields.
pub fn wanted_all(config: &Config) -> Vec<Wanted> {
    config.workflows.values().filter(|w| w.enabled).flat_map(wanted).collect()
}

/// Pendo's schema of each kind `wanted` names, one call per kind.
///
/// # Errors
/// The schema read failed.
pub async fn schemas(pendo: &pendo::Client, wanted: &[Wanted]) -> Result<Vec<(Kind, MetadataSchema)>, pendo::Error> {
    let mut out: Vec<(Kind, MetadataSchema)> = Vec::new();
    for kind in [Kind::Account, Kind::Visitor] {
        if wanted.iter().any(|w| w.kind == kind) {
            out.push((kind, pendo.metadata_schema(kind).await?));
        }
    }
    Ok(out)
}

/// The Pendo half of `validate --remote`: every enabled workflow's fields checked.
///
/// # Errors
/// The schema read failed.
pub async fn run_all(pendo: &pendo::Client, config: &Config) -> Result<Vec<Problem>, pendo::Error> {
    let wanted = wanted_all(config);
    let schemas = schemas(pendo, &wanted).await?;
    let mut problems = Vec::new();
    for (kind, schema) in &schemas {
        let of_kind: Vec<Wanted> = wanted.iter().filter(|w| w.kind == *kind).cloned().collect();
        problems.extend(check(config, &of_kind, schema));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untyped_fields_take_anything_and_typed_ones_their_own_kind() {
        assert!(takes("", AttributeType::Number));
        assert!(takes("float", AttributeType::Number) && takes("integer", AttributeType::Number));
        assert!(takes("TIME", AttributeType::Time));
        assert!(!takes("string", AttributeType::Number));
        assert!(!takes("boolean", AttributeType::Time));
        assert!(takes("boolean", AttributeType::Auto));
    }

    #[test]
    fn an_alerts_pendo_fields_are_wanted_typed_by_their_values() {
        let text = crate::config::STARTER.replace(
            "    enabled: false                  # create At_Risk__c",
            "    enabled: true                  # create At_Risk__c",
        );
        let config = crate::config::load_str(&text, "t.yaml").unwrap();
        let wanted: Vec<Wanted> = wanted_all(&config).into_iter().filter(|w| w.workflow == "renewal-risk").collect();
        let got: Vec<(String, AttributeType)> = wanted.iter().map(|w| (w.path(), w.value)).collect();
        assert_eq!(
            got,
            [
                ("custom.risk_flag".to_owned(), AttributeType::Text),
                ("custom.risk_since".to_owned(), AttributeType::Text)
            ]
        );
        assert_eq!(wanted[0].key, "workflows.renewal-risk.alert.set_pendo_fields.risk_flag");
        assert!(config.position(&wanted[0].key).is_some(), "located in the file");
    }
}
