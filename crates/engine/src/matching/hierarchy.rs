//! Account hierarchies in matching. On the Salesforce side, candidates that form one family
//! (`ParentId`, read with the Accounts at no extra call) are one choice rather than an
//! ambiguity: the child that a more specific rule picks, otherwise the family's top Account. On
//! the Pendo side, a `pendo_parent` field names each account's parent: a child its own rules do
//! not place takes its parent's Account, and a child that lands on its parent's Account yields
//! it to the parent instead of making both ambiguous.

use std::collections::{HashMap, HashSet};

use super::{Accounts, Outcome, PendoSide, Ranked, Rule};

/// The rule name, and the prefix of the recorded rule of an account matched through its parent.
pub const PENDO_PARENT: &str = "pendo_parent";

/// Deeper than any real org's hierarchy (Salesforce itself allows a handful of levels in
/// reports); a longer walk means a cycle in the data.
const MAX_DEPTH: usize = 64;

/// True for the recorded rule of an account matched through its Pendo parent.
pub fn is_via_parent(rule: &str) -> bool {
    rule.starts_with(PENDO_PARENT)
}

/// How a `child_field` value compares: people type regions and names in any case.
pub(super) fn key(value: &str) -> String {
    value.trim().to_lowercase()
}

/// The one Account of `candidates` (found together by rule `deciding`) to match, when they form
/// one family, and why; `None` leaves them ambiguous. Depends on the set of candidates only,
/// never on their order.
pub(super) fn resolve<P: PendoSide>(
    rules: &[Rule],
    deciding: usize,
    p: &P,
    accounts: &Accounts,
    candidates: &[usize],
) -> Option<(usize, String)> {
    let top = top_of(accounts, candidates)?;
    let n = candidates.len();
    for (_, rule) in rules.iter().enumerate().filter(|(j, _)| *j != deciding) {
        let hits: Vec<usize> = match rule {
            Rule::ExternalId { .. } => accounts.by_external(p.pendo_id()),
            Rule::PendoMetadata { group, field } => {
                p.metadata(group, field).and_then(|id| accounts.index_of(id)).into_iter().collect()
            }
            Rule::ChildField { group, field } => match p.metadata(group, field).map(key) {
                Some(v) if !v.is_empty() => candidates
                    .iter()
                    .copied()
                    .filter(|&c| accounts.child_keys[c].as_deref() == Some(v.as_str()))
                    .collect(),
                _ => continue,
            },
            Rule::EmailDomain { .. } | Rule::PendoParent { .. } => continue,
        };
        let inside: Vec<usize> = hits.into_iter().filter(|h| candidates.contains(h)).collect();
        if let [one] = inside[..] {
            let what = if one == top { "the top Account" } else { "a child" };
            return Some((one, format!("hierarchy: {n} Accounts of one family, {} picks {what}", rule.name())));
        }
    }
    Some((top, format!("hierarchy: {n} Accounts of one family, no rule picks a child: the top Account")))
}

/// The candidate that is an ancestor (or itself) of every candidate; `None` when they are not
/// one family under one of them, or the data holds a cycle.
fn top_of(accounts: &Accounts, candidates: &[usize]) -> Option<usize> {
    let lineages: Vec<Vec<usize>> = candidates.iter().map(|&c| lineage(accounts, c)).collect::<Option<_>>()?;
    let sets: Vec<HashSet<usize>> = lineages.iter().map(|l| l.iter().copied().collect()).collect();
    // In a tree the highest candidate is the only one on every lineage.
    let mut tops = candidates.iter().copied().filter(|c| sets.iter().all(|s| s.contains(c)));
    let top = tops.next()?;
    tops.next().is_none().then_some(top)
}

/// `c` and its ancestors, nearest first; `None` on a cycle or an absurd depth.
fn lineage(accounts: &Accounts, c: usize) -> Option<Vec<usize>> {
    let mut out = vec![c];
    let mut cur = c;
    while let Some(parent) = accounts.parents.get(cur).copied().flatten().map(|p| p as usize) {
        if out.contains(&parent) || out.len() > MAX_DEPTH {
            return None;
        }
        out.push(parent);
        cur = parent;
    }
    Some(out)
}

/// Pendo account id → its parent's, from the `pendo_parent` rule's field.
pub(super) fn pendo_parents<P: PendoSide>(rules: &[Rule], pendo: &[P]) -> HashMap<String, String> {
    let Some((group, field)) = rules.iter().find_map(|r| match r {
        Rule::PendoParent { group, field } => Some((group, field)),
        _ => None,
    }) else {
        return HashMap::new();
    };
    pendo
        .iter()
        .filter_map(|p| {
            let parent = p.metadata(group, field)?.trim();
            (!parent.is_empty() && parent != p.pendo_id()).then(|| (p.pendo_id().to_owned(), parent.to_owned()))
        })
        .collect()
}

/// `id`'s Pendo ancestors, nearest first, stopping at a cycle.
fn pendo_ancestors<'a>(id: &'a str, parents: &'a HashMap<String, String>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    let mut cur = id;
    while let Some(parent) = parents.get(cur) {
        if parent == id || out.contains(&parent.as_str()) || out.len() > MAX_DEPTH {
            break;
        }
        out.push(parent);
        cur = parent;
    }
    out
}

fn via(ancestor: &str) -> String {
    format!("{PENDO_PARENT}: under {ancestor}")
}

/// Of the Pendo accounts claiming Salesforce Account `sf_id`, those whose Pendo ancestor claims
/// it too with a rule at least as strong are recorded as matched through that parent (they
/// leave the Account's figures to it); the rest are returned to be settled as before.
pub(super) fn yield_to_parents(
    out: &mut Ranked,
    sf_id: &str,
    claimants: Vec<(String, usize)>,
    parents: &HashMap<String, String>,
) -> Vec<(String, usize)> {
    if parents.is_empty() {
        return claimants;
    }
    let rank: HashMap<&str, usize> = claimants.iter().map(|(id, r)| (id.as_str(), *r)).collect();
    let mut yielded = Vec::new();
    for (id, r) in &claimants {
        // A pin is a person's word: it never yields.
        if *r == 0 {
            continue;
        }
        let parent = pendo_ancestors(id, parents).into_iter().find(|a| rank.get(a).is_some_and(|ar| ar <= r));
        if let Some(parent) = parent {
            yielded.push((id.clone(), parent.to_owned()));
        }
    }
    for (id, parent) in &yielded {
        if let Some(o) = out.get_mut(id) {
            *o = Outcome::Matched { salesforce_id: sf_id.to_owned(), rule: via(parent) };
        }
    }
    claimants.into_iter().filter(|(id, _)| !yielded.iter().any(|(y, _)| y == id)).collect()
}

/// Unmatched, unpinned accounts with a Pendo ancestor that matched take that ancestor's Account.
pub(super) fn fall_back_to_parents(
    out: &mut Ranked,
    parents: &HashMap<String, String>,
    pins: &HashMap<String, String>,
) {
    let mut decided = Vec::new();
    for (id, outcome, _) in out.iter() {
        if !matches!(outcome, Outcome::Unmatched { .. }) || pins.contains_key(id) {
            continue;
        }
        let found = pendo_ancestors(id, parents)
            .into_iter()
            .find_map(|a| Some((a, out.get(a)?.salesforce_id()?)))
            .map(|(a, sf)| (id.to_owned(), a.to_owned(), sf.to_owned()));
        decided.extend(found);
    }
    for (id, ancestor, salesforce_id) in decided {
        if let Some(o) = out.get_mut(&id) {
            *o = Outcome::Matched { salesforce_id, rule: via(&ancestor) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AccountRow, FreeMail, match_all};
    use super::*;
    use proptest::prelude::*;

    struct P {
        id: String,
        meta: HashMap<String, String>,
        domains: Vec<(String, u32)>,
    }

    impl PendoSide for P {
        fn pendo_id(&self) -> &str {
            &self.id
        }
        fn metadata(&self, group: &str, field: &str) -> Option<&str> {
            self.meta.get(&format!("{group}.{field}")).map(String::as_str)
        }
        fn email_domains(&self) -> (&[(String, u32)], u32) {
            (&self.domains, self.domains.iter().map(|d| d.1).sum())
        }
    }

    fn p(id: &str, meta: &[(&str, &str)], domain: &str) -> P {
        P {
            id: id.into(),
            meta: meta.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            domains: vec![(domain.to_owned(), 3)],
        }
    }

    const PARENT: &str = "001000000000001AAA";
    const EU: &str = "001000000000002AAA";
    const US: &str = "001000000000003AAA";
    const OLD: &str = "001000000000004AAA";

    fn row(id: &str, parent: Option<&str>, name: &str, site: &str) -> AccountRow {
        AccountRow {
            id: id.into(),
            website: Some(site.into()),
            parent_id: parent.map(str::to_owned),
            child_key: Some(name.into()),
            ..Default::default()
        }
    }

    /// Acme and its two regional subsidiaries share acme.com; Globex has an unrelated duplicate.
    fn org() -> Vec<AccountRow> {
        vec![
            row(PARENT, None, "Acme", "acme.com"),
            row(EU, Some(PARENT), "Acme EMEA", "https://www.acme.com"),
            row(US, Some(&PARENT[..15]), "Acme US", "acme.com/us"),
            row("001000000000005AAA", None, "Globex", "globex.com"),
            row(OLD, None, "Globex (old)", "globex.com"),
        ]
    }

    fn chain(child_field: bool, pendo_parent: bool) -> Vec<Rule> {
        let mut rules = vec![Rule::EmailDomain { min_share: 0.5, free_mail: FreeMail::default() }];
        if child_field {
            rules.push(Rule::ChildField { group: "agent".into(), field: "name".into() });
        }
        if pendo_parent {
            rules.push(Rule::PendoParent { group: "agent".into(), field: "parentaccountid".into() });
        }
        rules
    }

    fn pendo() -> Vec<P> {
        vec![
            p("acme", &[("agent.name", "Acme")], "acme.com"),
            p("acme-eu", &[("agent.name", " acme emea "), ("agent.parentaccountid", "acme")], "acme.com"),
            p("acme-lab", &[("agent.name", "Acme Labs"), ("agent.parentaccountid", "acme")], "gmail.com"),
            p("globex", &[], "globex.com"),
        ]
    }

    fn sf(o: &Outcome) -> Option<&str> {
        o.salesforce_id()
    }

    #[test]
    fn one_family_is_one_choice_and_strangers_stay_ambiguous() {
        let out = match_all(&chain(true, false), &pendo(), &Accounts::new(org()), &HashMap::new());
        assert_eq!(sf(&out["acme"]), Some(PARENT), "{:?}", out["acme"]);
        assert_eq!(sf(&out["acme-eu"]), Some(EU), "child_field picks the child: {:?}", out["acme-eu"]);
        let Outcome::Matched { rule, .. } = &out["acme-eu"] else { unreachable!() };
        assert!(rule.starts_with("email_domain, hierarchy:") && rule.contains("child_field"), "{rule}");
        assert!(matches!(out["acme-lab"], Outcome::Unmatched { .. }), "no parent rule: {:?}", out["acme-lab"]);
        assert!(matches!(out["globex"], Outcome::Ambiguous(_)), "unrelated duplicates: {:?}", out["globex"]);
    }

    #[test]
    fn without_a_child_rule_children_yield_the_top_account_to_their_pendo_parent() {
        // No child_field: acme-eu also lands on the top Account, which its Pendo parent holds.
        let out = match_all(&chain(false, true), &pendo(), &Accounts::new(org()), &HashMap::new());
        assert_eq!(out["acme"], Outcome::Matched { salesforce_id: PARENT.into(), rule: out_rule(&out["acme"]) });
        assert!(!out["acme"].via_parent());
        assert_eq!(sf(&out["acme-eu"]), Some(PARENT));
        assert!(out["acme-eu"].via_parent(), "{:?}", out["acme-eu"]);
        // Unmatched by its own rules (free mail): falls back to the parent's Account.
        assert_eq!(sf(&out["acme-lab"]), Some(PARENT));
        assert!(out["acme-lab"].via_parent());
        // Without either hierarchy rule the family is claimed twice: ambiguous as before.
        let out = match_all(&chain(false, false), &pendo(), &Accounts::new(org()), &HashMap::new());
        assert!(matches!(out["acme"], Outcome::Ambiguous(_)) && matches!(out["acme-eu"], Outcome::Ambiguous(_)));
    }

    fn out_rule(o: &Outcome) -> String {
        match o {
            Outcome::Matched { rule, .. } => rule.clone(),
            _ => String::new(),
        }
    }

    #[test]
    fn a_stronger_own_rule_and_a_pin_never_yield() {
        let mut rows = org();
        rows[1].external_id = Some("acme-eu".into());
        let mut rules = vec![Rule::ExternalId { field: "Pendo_Account_Id__c".into() }];
        rules.extend(chain(false, true));
        let out = match_all(&rules, &pendo(), &Accounts::new(rows), &HashMap::new());
        assert_eq!(out["acme-eu"], Outcome::Matched { salesforce_id: EU.into(), rule: "external_id".into() });
        let pins = HashMap::from([("acme-eu".to_owned(), PARENT.to_owned())]);
        let out = match_all(&chain(false, true), &pendo(), &Accounts::new(org()), &pins);
        assert_eq!(out["acme-eu"], Outcome::Matched { salesforce_id: PARENT.into(), rule: "pinned".into() });
    }

    #[test]
    fn cycles_in_either_system_end_the_walk() {
        let mut rows = org();
        rows[0].parent_id = Some(US.into());
        let out = match_all(&chain(true, false), &pendo(), &Accounts::new(rows), &HashMap::new());
        assert!(matches!(out["acme"], Outcome::Ambiguous(_)), "a cycle is no family: {:?}", out["acme"]);
        let looped = vec![
            p("a", &[("agent.parentaccountid", "b")], "gmail.com"),
            p("b", &[("agent.parentaccountid", "a")], "gmail.com"),
        ];
        let out = match_all(&chain(false, true), &looped, &Accounts::new(org()), &HashMap::new());
        assert!(out.values().all(|o| matches!(o, Outcome::Unmatched { .. })), "{out:?}");
    }

    proptest! {
        /// The verdicts depend on what Salesforce and Pendo hold, never on the order they list it.
        #[test]
        fn order_never_changes_the_outcome(
            rows in Just(org()).prop_shuffle(),
            order in Just((0..4usize).collect::<Vec<_>>()).prop_shuffle(),
            child_field: bool,
            pendo_parent: bool,
        ) {
            let rules = chain(child_field, pendo_parent);
            let want = match_all(&rules, &pendo(), &Accounts::new(org()), &HashMap::new());
            let all = pendo();
            let mut shuffled: Vec<P> = Vec::new();
            for i in order {
                let q = &all[i];
                shuffled.push(P { id: q.id.clone(), meta: q.meta.clone(), domains: q.domains.clone() });
            }
            let got = match_all(&rules, &shuffled, &Accounts::new(rows), &HashMap::new());
            prop_assert_eq!(got, want);
        }
    }
}
