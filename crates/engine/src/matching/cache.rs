//! The matching stage: which Salesforce Account each Pendo account is, for every template that
//! writes onto Accounts. Cached matches (the ID map in the store) are used while fresh and
//! pinned ones always; otherwise the Accounts are read (REST pages or a Bulk query, see
//! [`super::accounts`]) and the rule chain runs, and the results go back into the ID map
//! (except on a dry run).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{FreeMail, Outcome, Rule, Verdicts, accounts};
use crate::budget::Budget;
use crate::config::{EngagementConfig, MatchRule, Workflow};
use crate::extract::{AccountFacts, AccountUsage, Extractor};
use crate::store::{IdMapEntry, MatchStatus};
use crate::workflow::{Context, RunError};

/// The rule chain a workflow's `matching:` section describes.
pub fn rules(config: &EngagementConfig) -> Vec<Rule> {
    config
        .matching
        .iter()
        .map(|r| match r {
            MatchRule::PendoMetadata { group, field } => {
                Rule::PendoMetadata { group: group.name().to_owned(), field: field.clone() }
            }
            MatchRule::ExternalId { field } => Rule::ExternalId { field: field.clone() },
            MatchRule::EmailDomain { min_share, extra_free_mail, .. } => {
                Rule::EmailDomain { min_share: *min_share, free_mail: FreeMail::with_extra(extra_free_mail) }
            }
            MatchRule::PendoParent { group, field } => {
                Rule::PendoParent { group: group.name().to_owned(), field: field.clone() }
            }
            MatchRule::ChildField { group, field, .. } => {
                Rule::ChildField { group: group.name().to_owned(), field: field.clone() }
            }
        })
        .collect()
}

/// The Pendo account metadata fields (`group`, `field`) the rule chain reads.
pub fn metadata_fields(rules: &[MatchRule]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in rules {
        let (MatchRule::PendoMetadata { group, field }
        | MatchRule::PendoParent { group, field }
        | MatchRule::ChildField { group, field, .. }) = r
        else {
            continue;
        };
        let pair = (group.name().to_owned(), field.clone());
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    out
}

/// Where matching gets the Pendo facts its rules read.
#[derive(Clone, Copy)]
pub(crate) enum Facts<'a> {
    /// Read already, by a template that needs them for more than matching.
    Read(&'a [AccountFacts]),
    /// Read only when a match must be made again: with every account's cached match fresh, a
    /// run spends no Pendo query on them (the visitor e-mail scan is the largest of a run).
    /// The accounts to match are then the ones `usage` lists, which is every Pendo account.
    Lazy(&'a Extractor<'a>),
}

/// Matches every Pendo account, reading Salesforce only when the cached matches are not enough.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn match_accounts(
    ctx: &Context,
    workflow: &Workflow,
    config: &EngagementConfig,
    facts: Facts<'_>,
    usage: &[AccountUsage],
    now: DateTime<Utc>,
    dry_run: bool,
    budget: &Budget,
) -> Result<Verdicts, RunError> {
    let cached = ctx.store.id_map(&workflow.name).await?;
    let recheck = chrono::Duration::from_std(config.recheck_matches_after).unwrap_or(chrono::Duration::days(7));
    let cached: HashMap<&str, &IdMapEntry> = cached.iter().map(|e| (e.pendo_id.as_str(), e)).collect();
    let mut ids: HashSet<&str> = usage.iter().map(|u| u.account_id.as_str()).collect();
    if let Facts::Read(facts) = facts {
        ids.extend(facts.iter().map(|f| f.account_id.as_str()));
    }
    let fresh = |id: &str| cached.get(id).is_some_and(|e| e.pinned || now - e.checked_at < recheck);
    // Two cached matches onto one Account (a person pinned one of them since the last read)
    // need the full settlement, which only a fresh read applies.
    let mut claimed = HashSet::new();
    let shared = cached
        .values()
        .filter(|e| e.status == MatchStatus::Matched)
        // A child matched through its Pendo parent shares the parent's Account by design.
        .filter(|e| !e.rule.as_deref().is_some_and(super::hierarchy::is_via_parent))
        .filter_map(|e| e.salesforce_id.as_deref())
        .any(|sf| !claimed.insert(sf));
    let rollup = !config.rollup_fields.is_empty();
    // Roll-up needs the Salesforce family links, kept from the last read.
    let links_missing = rollup && account_parents(ctx, &workflow.name).await?.is_none();
    if !shared && !links_missing && ids.iter().all(|id| fresh(id)) {
        // In id order, so the verdicts are made sorted and sized once (collected from the set's
        // order they were grown by doubling and sorted: ~10 MiB more at 100,000 accounts).
        let mut ids: Vec<&str> = ids.into_iter().collect();
        ids.sort_unstable();
        let mut list = Vec::with_capacity(ids.len());
        list.extend(ids.into_iter().filter_map(|id| cached.get(id).map(|e| (id.to_owned(), outcome_of(e)))));
        return Ok(Verdicts::sorted(list));
    }
    let external = config.matching.iter().find_map(|r| match r {
        MatchRule::ExternalId { field } => Some(field.as_str()),
        _ => None,
    });
    let website = config.matching.iter().find_map(|r| match r {
        MatchRule::EmailDomain { website_field, .. } => Some(website_field.as_str()),
        _ => None,
    });
    let child = config.matching.iter().find_map(|r| match r {
        MatchRule::ChildField { account_field, .. } => Some(account_field.as_str()),
        _ => None,
    });
    let fields = accounts::Fields { external, website, child };
    // The facts as one owned list, extended below: read lazily they are this run's own, and
    // only facts another stage read are copied.
    let mut all_facts: Vec<AccountFacts> = match facts {
        Facts::Read(facts) => facts.to_vec(),
        Facts::Lazy(extractor) => extractor.account_facts(&metadata_fields(&config.matching)).await?,
    };
    let accounts = accounts::read(ctx, fields, budget).await?;
    let pins: HashMap<String, String> = cached
        .values()
        .filter(|e| e.pinned)
        .filter_map(|e| Some((e.pendo_id.clone(), e.salesforce_id.clone()?)))
        .collect();
    // Accounts with usage but no facts (no visitors with metadata) still get the id rules.
    let known: HashSet<&str> = all_facts.iter().map(|f| f.account_id.as_str()).collect();
    let silent: Vec<AccountFacts> = usage
        .iter()
        .filter(|u| !known.contains(u.account_id.as_str()))
        .map(|u| AccountFacts { account_id: u.account_id.clone(), ..Default::default() })
        .collect();
    drop(known);
    all_facts.extend(silent);
    let outcomes = super::match_all(&rules(config), &all_facts, &accounts, &pins);
    // Parents as 18-character Ids, so that they compare with matched Ids. A map of strings
    // always serialises; were it ever empty text, the next run reads again.
    let links = (rollup && !dry_run).then(|| {
        let links: BTreeMap<&str, &str> = accounts.parent_links().collect();
        serde_json::to_string(&links).unwrap_or_default()
    });
    // What the verdicts were made from goes before the id map's write copies every verdict: at
    // 300,000 accounts this took the first run's peak (in this stage) from 525 to 468 MiB.
    drop((all_facts, accounts));
    if !dry_run {
        let mut entries = outcomes.iter().map(|(id, o)| entry_of(&workflow.name, id, o, pins.contains_key(id), now));
        ctx.store.put_id_map(&mut entries).await?;
        if let Some(text) = links {
            let stored = ctx.store.cursor(&workflow.name, PARENTS).await?;
            if stored.as_deref() != Some(text.as_str()) {
                ctx.store.advance_cursor(&workflow.name, PARENTS, stored, text).await?;
            }
        }
    }
    Ok(outcomes)
}

/// The cursor holding the Salesforce family links (child Account Id → parent Account Id) of
/// the last Account read, for roll-up on runs that read no Account.
const PARENTS: &str = "account_parents";

/// The family links kept by the last Account read of `workflow`; `None` before the first read
/// (or if what is kept cannot be read: the next run then reads the Accounts again).
pub(crate) async fn account_parents(
    ctx: &Context,
    workflow: &str,
) -> Result<Option<HashMap<String, String>>, RunError> {
    let text = ctx.store.cursor(workflow, PARENTS).await?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn outcome_of(e: &IdMapEntry) -> Outcome {
    let rule = e.rule.clone().unwrap_or_default();
    match (&e.status, &e.salesforce_id) {
        (MatchStatus::Matched, Some(id)) => Outcome::Matched { salesforce_id: id.clone(), rule },
        (MatchStatus::Ambiguous, _) => Outcome::ambiguous(rule, e.candidates.clone(), "cached: ambiguous".into()),
        _ => Outcome::Unmatched { reason: "cached: unmatched".into() },
    }
}

fn entry_of(workflow: &str, pendo_id: &str, o: &Outcome, pinned: bool, now: DateTime<Utc>) -> IdMapEntry {
    let (status, salesforce_id, rule, candidates) = match o {
        Outcome::Matched { salesforce_id, rule } => {
            (MatchStatus::Matched, Some(salesforce_id.clone()), Some(rule.clone()), vec![])
        }
        Outcome::Ambiguous(a) => {
            (MatchStatus::Ambiguous, None, Some(format!("{}: {}", a.rule, a.reason)), a.candidates.clone())
        }
        Outcome::Unmatched { reason } => (MatchStatus::Unmatched, None, Some(reason.clone()), vec![]),
    };
    IdMapEntry {
        workflow: workflow.to_owned(),
        pendo_id: pendo_id.to_owned(),
        status,
        salesforce_id,
        rule,
        candidates,
        pinned,
        checked_at: now,
    }
}
