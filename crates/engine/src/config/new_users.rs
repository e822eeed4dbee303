//! The new-users-to-contacts template's settings: its typed form, its wire keys and their
//! validation (called from `validate.rs`), and its wire form for display.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::{Errors, bounded_duration, match_rules, salesforce_field};
use super::{DEFAULT_RECHECK_MATCHES_AFTER, MatchRule, duration, wire};

/// Default for [`NewUsersConfig::overlap`]: visitors whose first visit Pendo records a little
/// late (its `firstvisit` is stamped when the event is processed) are still seen.
pub const DEFAULT_NEW_USERS_OVERLAP: Duration = Duration::from_secs(600);

/// new-users-to-contacts: newly identified Pendo visitors onto Salesforce Contacts, found by
/// e-mail, created under the matched Account when missing; never a duplicate.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUsersConfig {
    /// The visitor's Pendo account → Salesforce Account, as engagement-scores matches.
    pub matching: Vec<MatchRule>,
    pub recheck_matches_after: Duration,
    /// How far before the cursor each run reads again.
    pub overlap: Duration,
    /// Whether `jane+news@acme.com` is the same person as `jane@acme.com` (off by default:
    /// some companies give distinct people plus-addresses on a shared mailbox).
    pub strip_plus_addressing: bool,
    pub contact_fields: ContactFields,
    pub unmatched_account: UnmatchedAccount,
    /// `LeadSource` on created Leads.
    pub lead_source: Option<String>,
}

/// Contact (and Lead) fields the workflow writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactFields {
    /// The external-ID field holding the Pendo visitor id: the key creates are upserted on, so a
    /// create repeated by a retry or a second worker updates the same record.
    pub visitor_id: String,
    /// The visitor's last visit (a DateTime field).
    pub last_visit: Option<String>,
    /// The visitor's first visit (a DateTime field).
    pub first_visit: Option<String>,
}

impl ContactFields {
    /// Every field named, for ownership checks.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.visitor_id.as_str()).chain(self.last_visit.as_deref()).chain(self.first_visit.as_deref())
    }
}

/// What to do with a visitor whose Pendo account matches no Salesforce Account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmatchedAccount {
    Skip,
    Lead,
}

impl UnmatchedAccount {
    pub fn name(self) -> &'static str {
        match self {
            UnmatchedAccount::Skip => "skip",
            UnmatchedAccount::Lead => "lead",
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireContactFields {
    pub visitor_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_visit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_visit: Option<String>,
}

pub(crate) fn build(key: &str, w: &wire::Workflow, errors: &mut Errors) -> Option<NewUsersConfig> {
    let k = |leaf: &str| format!("{key}.{leaf}");
    let matching = match_rules(key, w, errors);
    let recheck_matches_after = match &w.recheck_matches_after {
        None => Some(DEFAULT_RECHECK_MATCHES_AFTER),
        Some(text) => bounded_duration(
            text,
            &k("recheck_matches_after"),
            Duration::from_secs(3_600),
            Duration::from_secs(365 * 86_400),
            errors,
        ),
    };
    let overlap = match &w.overlap {
        None => Some(DEFAULT_NEW_USERS_OVERLAP),
        Some(text) => {
            bounded_duration(text, &k("overlap"), Duration::from_secs(1), Duration::from_secs(86_400), errors)
        }
    };
    let contact_fields = errors.required(&w.contact_fields, &k("contact_fields")).and_then(|c| {
        let ck = |leaf: &str| format!("{key}.contact_fields.{leaf}");
        let visitor_id = errors.required(&c.visitor_id, &ck("visitor_id")).and_then(|f| {
            let field = salesforce_field(f, &ck("visitor_id"), errors)?;
            if !field.ends_with("__c") {
                errors.push(
                    &ck("visitor_id"),
                    format!("`{f}`: the visitor id is an external-ID custom field, ending in __c"),
                );
                return None;
            }
            Some(field)
        });
        let optional = |value: &Option<String>, leaf: &str, errors: &mut Errors| match value {
            None => Some(None),
            Some(f) => salesforce_field(f, &ck(leaf), errors).map(Some),
        };
        let last_visit = optional(&c.last_visit, "last_visit", errors);
        let first_visit = optional(&c.first_visit, "first_visit", errors);
        let fields = ContactFields { visitor_id: visitor_id?, last_visit: last_visit?, first_visit: first_visit? };
        let mut seen = std::collections::HashSet::new();
        for f in fields.all() {
            if !seen.insert(f.to_ascii_lowercase()) {
                errors
                    .push(&k("contact_fields"), format!("field `{f}` is named twice: each value needs its own field"));
                return None;
            }
        }
        Some(fields)
    });
    let unmatched_account = match w.unmatched_account.as_deref() {
        None | Some("skip") => Some(UnmatchedAccount::Skip),
        Some("lead") => Some(UnmatchedAccount::Lead),
        Some(other) => {
            errors.push(&k("unmatched_account"), format!("unknown choice `{other}`; expected one of: skip, lead"));
            None
        }
    };
    let lead_source = match &w.lead_source {
        Some(s) if s.trim().is_empty() || s.len() > 40 => {
            errors.push(&k("lead_source"), "must be a LeadSource picklist value of 1 to 40 characters");
            None
        }
        Some(s) if unmatched_account == Some(UnmatchedAccount::Skip) => {
            errors.push(
                &k("lead_source"),
                format!("`{s}` is unused: Leads are only created with `unmatched_account: lead`"),
            );
            None
        }
        other => Some(other.clone()),
    };
    Some(NewUsersConfig {
        matching: matching?,
        recheck_matches_after: recheck_matches_after?,
        overlap: overlap?,
        strip_plus_addressing: w.strip_plus_addressing.unwrap_or(false),
        contact_fields: contact_fields?,
        unmatched_account: unmatched_account?,
        lead_source: lead_source?,
    })
}

pub(crate) fn to_wire(c: &NewUsersConfig, out: &mut wire::Workflow) {
    out.matching = Some(c.matching.iter().map(super::validate::rule_to_wire).collect());
    out.recheck_matches_after = Some(duration::format(c.recheck_matches_after));
    out.overlap = Some(duration::format(c.overlap));
    out.strip_plus_addressing = Some(c.strip_plus_addressing);
    out.contact_fields = Some(WireContactFields {
        visitor_id: Some(c.contact_fields.visitor_id.clone()),
        last_visit: c.contact_fields.last_visit.clone(),
        first_visit: c.contact_fields.first_visit.clone(),
    });
    out.unmatched_account = Some(c.unmatched_account.name().to_owned());
    out.lead_source = c.lead_source.clone();
}
