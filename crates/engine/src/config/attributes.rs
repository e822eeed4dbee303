//! The account-attributes-to-pendo template's settings: its typed form, its wire keys and their
//! validation (called from `validate.rs`), and its wire form for display.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::{Errors, bounded_duration, salesforce_field};
use super::{MetadataGroup, duration, wire};

/// Default for [`AttributesConfig::overlap`]: `SystemModstamp` is stamped when a transaction
/// starts, so a long transaction can commit a stamp older than one already read.
pub const DEFAULT_ATTRIBUTES_OVERLAP: Duration = Duration::from_secs(300);

/// account-attributes-to-pendo: Salesforce Account fields into Pendo account metadata, only the
/// values that changed.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributesConfig {
    pub pendo_account: PendoAccountSource,
    /// `custom` or `agent`: the groups the API writes.
    pub group: MetadataGroup,
    /// How far before the cursor each run reads again.
    pub overlap: Duration,
    /// The integration user's Id; `None`: the user behind the Salesforce token.
    pub integration_user: Option<String>,
    pub attributes: Vec<Attribute>,
}

/// Where an Account's Pendo account id comes from; at least one, the field first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendoAccountSource {
    /// An Account field holding the Pendo account id.
    pub field: Option<String>,
    /// A Pendo → Salesforce workflow whose matches (Pendo account → Account) are used in reverse.
    pub id_map_of: Option<String>,
}

/// One Account field copied into one Pendo metadata field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// A field of Account or a relationship path such as `Owner.Name`.
    pub salesforce: String,
    /// The Pendo field (lower case, as Pendo stores it).
    pub pendo: String,
    pub kind: AttributeType,
}

/// How a Salesforce value is written to Pendo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    /// As Salesforce sends it (text, number or boolean).
    Auto,
    Text,
    Number,
    Boolean,
    /// A date or date-time as Pendo's epoch milliseconds.
    Time,
}

impl AttributeType {
    pub const ALL: &'static [AttributeType] =
        &[AttributeType::Auto, AttributeType::Text, AttributeType::Number, AttributeType::Boolean, AttributeType::Time];

    pub fn name(self) -> &'static str {
        match self {
            AttributeType::Auto => "auto",
            AttributeType::Text => "string",
            AttributeType::Number => "number",
            AttributeType::Boolean => "boolean",
            AttributeType::Time => "time",
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WirePendoAccount {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_map_of: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireAttribute {
    pub salesforce: Option<String>,
    pub pendo: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `Owner.Name`, `CSM__r.Email`: relationship names then a field, at most five levels as SOQL allows.
fn salesforce_path(path: &str, key: &str, errors: &mut Errors) -> Option<String> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.len() > 5 {
        errors.push(key, format!("`{path}` goes deeper than SOQL's five levels"));
        return None;
    }
    let (last, relationships) = parts.split_last()?;
    for r in relationships {
        let ok = r.starts_with(|c: char| c.is_ascii_alphabetic())
            && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && (!r.contains("__") || r.ends_with("__r"));
        if !ok {
            errors.push(
                key,
                format!("`{r}` in `{path}` is not a relationship name (e.g. Owner, or a custom one ending in __r)"),
            );
            return None;
        }
    }
    salesforce_field(last, key, errors)?;
    Some(path.to_owned())
}

pub(crate) fn build(key: &str, w: &wire::Workflow, errors: &mut Errors) -> Option<AttributesConfig> {
    let k = |leaf: &str| format!("{key}.{leaf}");
    let pendo_account = errors.required(&w.pendo_account, &k("pendo_account")).and_then(|p| {
        let field = match &p.field {
            None => Some(None),
            Some(f) => salesforce_field(f, &k("pendo_account.field"), errors).map(Some),
        };
        let id_map_of = p.id_map_of.clone();
        if p.field.is_none() && id_map_of.is_none() {
            errors.push(
                &k("pendo_account"),
                "give `field` (an Account field holding the Pendo account id), `id_map_of` (a workflow whose matches to use), or both",
            );
            return None;
        }
        Some(PendoAccountSource { field: field?, id_map_of })
    });
    let group = match w.pendo_group.as_deref() {
        None | Some("custom") => Some(MetadataGroup::Custom),
        Some("agent") => Some(MetadataGroup::Agent),
        Some(other) => {
            errors.push(
                &k("pendo_group"),
                format!("`{other}` cannot be written through the API; expected one of: custom, agent"),
            );
            None
        }
    };
    let overlap = match &w.overlap {
        None => Some(DEFAULT_ATTRIBUTES_OVERLAP),
        Some(text) => {
            bounded_duration(text, &k("overlap"), Duration::from_secs(1), Duration::from_secs(86_400), errors)
        }
    };
    let integration_user = match &w.integration_user {
        None => Some(None),
        Some(id) => {
            let ok = (id.len() == 15 || id.len() == 18)
                && id.starts_with("005")
                && id.chars().all(|c| c.is_ascii_alphanumeric());
            if ok {
                Some(Some(id.clone()))
            } else {
                errors.push(&k("integration_user"), format!("`{id}` is not a User Id (15 or 18 characters, 005…)"));
                None
            }
        }
    };
    let attributes = errors.required(&w.attributes, &k("attributes")).and_then(|list| {
        if list.is_empty() {
            errors.push(&k("attributes"), "give at least one attribute: the workflow would write nothing");
            return None;
        }
        let mut ok = true;
        let mut out = Vec::new();
        let mut sources = HashSet::new();
        let mut targets = HashSet::new();
        for (i, a) in list.iter().enumerate() {
            let ak = |leaf: &str| format!("{key}.attributes[{i}].{leaf}");
            let salesforce = errors
                .required(&a.salesforce, &ak("salesforce"))
                .and_then(|f| salesforce_path(f, &ak("salesforce"), errors));
            let pendo = errors.required(&a.pendo, &ak("pendo")).and_then(|f| {
                let valid = !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    errors.push(&ak("pendo"), format!("`{f}` is not a Pendo metadata field name (letters, digits, _)"));
                }
                valid.then(|| f.to_ascii_lowercase())
            });
            let kind = match a.kind.as_deref() {
                None => Some(AttributeType::Auto),
                Some(t) => {
                    let found = AttributeType::ALL.iter().copied().find(|x| x.name() == t);
                    if found.is_none() {
                        let names: Vec<_> = AttributeType::ALL.iter().map(|x| x.name()).collect();
                        errors.push(&ak("type"), format!("unknown type `{t}`; expected one of: {}", names.join(", ")));
                    }
                    found
                }
            };
            let (Some(salesforce), Some(pendo), Some(kind)) = (salesforce, pendo, kind) else {
                ok = false;
                continue;
            };
            if !sources.insert(salesforce.to_ascii_lowercase()) {
                ok = false;
                errors.push(&ak("salesforce"), format!("`{salesforce}` is listed twice"));
                continue;
            }
            if !targets.insert(pendo.clone()) {
                ok = false;
                errors.push(&ak("pendo"), format!("Pendo field `{pendo}` is the target of two attributes"));
                continue;
            }
            out.push(Attribute { salesforce, pendo, kind });
        }
        ok.then_some(out)
    });
    Some(AttributesConfig {
        pendo_account: pendo_account?,
        group: group?,
        overlap: overlap?,
        integration_user: integration_user?,
        attributes: attributes?,
    })
}

pub(crate) fn to_wire(c: &AttributesConfig, out: &mut wire::Workflow) {
    out.pendo_account =
        Some(WirePendoAccount { field: c.pendo_account.field.clone(), id_map_of: c.pendo_account.id_map_of.clone() });
    out.pendo_group = Some(c.group.name().to_owned());
    out.overlap = Some(duration::format(c.overlap));
    out.integration_user = c.integration_user.clone();
    out.attributes = Some(
        c.attributes
            .iter()
            .map(|a| WireAttribute {
                salesforce: Some(a.salesforce.clone()),
                pendo: Some(a.pendo.clone()),
                kind: Some(a.kind.name().to_owned()),
            })
            .collect(),
    );
}
