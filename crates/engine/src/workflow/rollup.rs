//! Roll-up for engagement-scores (`rollup_fields`): each parent Account's family, meaning
//! itself, its Salesforce descendants (`ParentId`) and the Pendo children matched through it,
//! is scored as one customer. Counts (visitors, events, minutes, guides) add up; active days,
//! core features used and last active take the family's highest, a lower bound of the union
//! that one account's figures cannot exceed; the score and the adoption shares then come from
//! those merged figures by the workflow's own formula.

use std::collections::{BTreeMap, HashMap};

use super::usage::ById;
use crate::extract::AccountUsage;
use crate::matching::{Outcome, Verdicts};

/// Deeper than any real hierarchy; a longer walk means a cycle in the data.
const MAX_DEPTH: usize = 64;

/// Salesforce Account id → its family's merged usage, for every Account whose family holds
/// more than its own Pendo account (a leaf's family figures would only repeat its own).
pub(crate) fn families(
    outcomes: &Verdicts,
    usage: &ById<'_>,
    parents: &HashMap<String, String>,
) -> BTreeMap<String, AccountUsage> {
    let mut merged: BTreeMap<String, (AccountUsage, bool)> = BTreeMap::new();
    for (pendo_id, outcome) in outcomes {
        let Outcome::Matched { salesforce_id, .. } = outcome else { continue };
        let zero = AccountUsage::default();
        let u = usage.get(pendo_id).unwrap_or(&zero);
        let mut target = salesforce_id.as_str();
        let mut other = outcome.via_parent();
        let mut seen = vec![target];
        loop {
            let entry = merged
                .entry(target.to_owned())
                .or_insert_with(|| (AccountUsage { account_id: target.to_owned(), ..Default::default() }, false));
            add(&mut entry.0, u);
            entry.1 |= other;
            match parents.get(target) {
                Some(parent) if !seen.contains(&parent.as_str()) && seen.len() <= MAX_DEPTH => {
                    target = parent;
                    seen.push(target);
                    other = true;
                }
                _ => break,
            }
        }
    }
    merged.into_iter().filter(|(_, (_, other))| *other).map(|(id, (u, _))| (id, u)).collect()
}

fn add(total: &mut AccountUsage, u: &AccountUsage) {
    total.active_visitors += u.active_visitors;
    total.events += u.events;
    total.minutes += u.minutes;
    total.guides_seen += u.guides_seen;
    total.guides_completed += u.guides_completed;
    total.active_days = total.active_days.max(u.active_days);
    total.core_features_used = total.core_features_used.max(u.core_features_used);
    total.core_features_total = total.core_features_total.max(u.core_features_total);
    total.last_active = total.last_active.max(u.last_active);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(visitors: u64, days: u64) -> AccountUsage {
        AccountUsage { active_visitors: visitors, active_days: days, events: visitors * 10, ..Default::default() }
    }

    fn matched(sf: &str, rule: &str) -> Outcome {
        Outcome::Matched { salesforce_id: sf.into(), rule: rule.into() }
    }

    #[test]
    fn parents_get_their_whole_family_and_leaves_nothing() {
        let outcomes: Verdicts = [
            ("acme".to_owned(), matched("P", "email_domain")),
            ("acme-eu".to_owned(), matched("EU", "email_domain, hierarchy: …")),
            ("acme-lab".to_owned(), matched("P", "pendo_parent: under acme")),
            ("solo".to_owned(), matched("S", "external_id")),
        ]
        .into_iter()
        .collect();
        let of = |id: &str, u: AccountUsage| AccountUsage { account_id: id.into(), ..u };
        let mut list = vec![
            of("solo", usage(7, 7)),
            of("acme-eu", usage(4, 9)),
            of("acme", usage(3, 5)),
            of("acme-lab", usage(1, 2)),
        ];
        let by_id = ById::new(&mut list);
        // A grandparent with no Pendo account of its own, and a cycle that must not hang.
        let parents = HashMap::from([
            ("EU".to_owned(), "P".to_owned()),
            ("P".to_owned(), "G".to_owned()),
            ("X".to_owned(), "Y".to_owned()),
            ("Y".to_owned(), "X".to_owned()),
        ]);
        let fam = families(&outcomes, &by_id, &parents);
        assert_eq!(fam.keys().collect::<Vec<_>>(), ["G", "P"]);
        assert_eq!(fam["P"].active_visitors, 8);
        assert_eq!(fam["P"].events, 80);
        assert_eq!(fam["P"].active_days, 9, "the busiest member's days");
        assert_eq!(fam["G"].active_visitors, 8);
        let cyclic: Verdicts = [("x".to_owned(), matched("X", "external_id"))].into_iter().collect();
        assert_eq!(families(&cyclic, &ById::new(&mut []), &parents).len(), 1, "Y once, and the walk ends");
    }
}
