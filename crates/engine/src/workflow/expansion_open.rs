//! Which open Opportunities meet an expansion workflow's `existing` rule, per milestone: kept in
//! the store as a [`super::mirror`] (cursor [`CURSOR`]), so that a re-run learns what exists from
//! state plus one query for the Opportunities changed since the last run. An Opportunity a person
//! opened, closed, moved to another Account or deleted since is followed; each rule is asked
//! again only about the Opportunities someone other than the integration user changed. The
//! Opportunities a run makes are added to the mirror, and their stamps followed after the run.
//!
//! Not seen as a change: a rule that reads other records (`Account.Type = ...`) whose fields
//! changed while the Opportunity did not (caught by the weekly whole read).

use std::collections::HashMap;

use super::mirror::{Membership, Mirror, Spec};
use crate::config::ExpansionConfig;

/// The cursor's name.
pub const CURSOR: &str = "expansion_opportunities";

/// The mirror's spec: per milestone (its tag), the open Opportunities meeting the rule; kept,
/// their Account and key.
pub(crate) fn spec(config: &ExpansionConfig) -> Spec {
    let rules = config
        .milestones
        .iter()
        .map(|m| (m.name.clone(), format!("IsClosed = false AND ({})", milestone_rule(config, &m.name))))
        .collect();
    Spec {
        cursor: CURSOR,
        object: "Opportunity",
        what: "open expansion Opportunities",
        fields: vec!["AccountId".into(), config.key_field.clone()],
        membership: Membership::Rules(rules),
        out_when: Some("IsClosed"),
        follows_own: true,
    }
}

/// What the mirror keeps for an Opportunity the run made (or adopted).
pub(crate) fn values(account: &str, key: &str) -> Vec<String> {
    vec![account.to_owned(), key.to_owned()]
}

/// By (Account id, milestone): (Opportunity id, its key) of every open one meeting the rule.
pub(crate) fn open(mirror: &Mirror) -> HashMap<(String, String), Vec<(String, String)>> {
    let mut out: HashMap<(String, String), Vec<(String, String)>> = HashMap::new();
    for (id, m) in &mirror.members {
        let (Some(account), key) = (m.values.first(), m.values.get(1).cloned().unwrap_or_default()) else { continue };
        for tag in &m.tags {
            out.entry((account.clone(), tag.clone())).or_default().push((id.clone(), key.clone()));
        }
    }
    out
}

fn milestone_rule(config: &ExpansionConfig, milestone: &str) -> String {
    config.existing.replace("{milestone}", &salesforce::soql::escape_str(milestone))
}
