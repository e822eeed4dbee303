//! Matching: which Salesforce Account a Pendo account is. An ordered rule chain per workflow,
//! tried in turn; the first rule that finds exactly one candidate decides, a rule that finds two
//! or more stops the chain with [`Outcome::Ambiguous`] (never written, reported with its
//! candidates for a person to settle), and an account no rule places is [`Outcome::Unmatched`].
//!
//! A second guard runs across accounts: two Pendo accounts must not both write onto one
//! Salesforce Account, or each run would overwrite the other's figures. The stronger rule keeps
//! the Account; equals are all reported as ambiguous. Pins made by a person beat every rule.
//!
//! Hierarchies ([`hierarchy`]) narrow both: candidates of one Salesforce family (`ParentId`) are
//! one choice rather than an ambiguity, and a Pendo child account yields its parent's Account
//! to the parent instead of contesting it.

pub(crate) mod accounts;
mod cache;
pub mod domain;
pub(crate) mod hierarchy;
mod verdicts;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub(crate) use cache::{Facts, account_parents, match_accounts};
pub use cache::{metadata_fields, rules};
pub use domain::FreeMail;
use verdicts::Ranked;
pub use verdicts::Verdicts;

/// One rule of the chain, in the order the workflow lists them.
#[derive(Debug, Clone)]
pub enum Rule {
    /// A Salesforce Account Id held in a Pendo account metadata field.
    PendoMetadata { group: String, field: String },
    /// An Account field (an external ID) holding the Pendo account id.
    ExternalId { field: String },
    /// The account's dominant visitor e-mail domain against the Account's website domain.
    EmailDomain { min_share: f64, free_mail: FreeMail },
    /// A Pendo metadata field holding the parent Pendo account's id: an account its own rules
    /// do not place takes the Account its Pendo parent matched.
    PendoParent { group: String, field: String },
    /// A Pendo metadata value equal to an Account field ([`AccountRow::child_key`]): it picks
    /// among the Accounts of one hierarchy that another rule found together, never on its own
    /// (a region or a name is far from unique across an org).
    ChildField { group: String, field: String },
}

impl Rule {
    pub fn name(&self) -> &'static str {
        match self {
            Rule::PendoMetadata { .. } => "pendo_metadata",
            Rule::ExternalId { .. } => "external_id",
            Rule::EmailDomain { .. } => "email_domain",
            Rule::PendoParent { .. } => hierarchy::PENDO_PARENT,
            Rule::ChildField { .. } => "child_field",
        }
    }
}

/// What matching needs to know of a Pendo account.
pub trait PendoSide {
    fn pendo_id(&self) -> &str;
    /// A metadata value, `group.field`.
    fn metadata(&self, group: &str, field: &str) -> Option<&str>;
    /// E-mail domains of the account's visitors with how many visitors use each, and the number
    /// of visitors that have an e-mail at all.
    fn email_domains(&self) -> (&[(String, u32)], u32);
}

/// The Salesforce side, indexed once per run.
///
/// The indexes are lists of row numbers sorted by their key and searched by bisection, not
/// hash maps: a map holding an owned key and a list per Account was about a third of a first
/// run's matching peak at a million accounts, where a row number is four bytes.
#[derive(Debug, Default)]
pub struct Accounts {
    ids: Vec<String>,
    /// Rows with an Id of 15 or more characters, by its first 15 (case-sensitive).
    by_id15: Vec<u32>,
    /// Lowercased, trimmed external ID → row, sorted by key.
    by_external: Vec<(Box<str>, u32)>,
    /// Website domain → row, sorted by key.
    by_domain: Vec<(Box<str>, u32)>,
    /// Each Account's parent (`ParentId`), when the parent was read too.
    parents: Vec<Option<u32>>,
    /// Lowercased, trimmed value of the `child_field` rule's Account field.
    child_keys: Vec<Option<Box<str>>>,
}

/// One Account as read from Salesforce.
#[derive(Debug, Clone, Default)]
pub struct AccountRow {
    pub id: String,
    pub external_id: Option<String>,
    pub website: Option<String>,
    /// `ParentId`: read with the rest, so hierarchies cost no call of their own.
    pub parent_id: Option<String>,
    /// The Account field a `child_field` rule compares with Pendo.
    pub child_key: Option<String>,
}

/// [`Accounts`] indexed one row at a time, as the rows arrive: a large org's rows are never
/// held as a list beside the index they become.
#[derive(Debug, Default)]
pub struct Building {
    accounts: Accounts,
    /// Each row's `ParentId` as read, resolved once every row is in.
    parent_ids: Vec<Option<String>>,
}

/// A row number in an index. An org has far fewer than 2^32 Accounts; rows past that are
/// left out of the indexes (never matched) rather than numbered wrongly.
fn row_number(i: usize) -> Option<u32> {
    u32::try_from(i).ok()
}

impl Building {
    pub fn push(&mut self, row: AccountRow) {
        let accounts = &mut self.accounts;
        let Some(i) = row_number(accounts.ids.len()) else { return };
        if row.id.len() >= 15 && row.id.is_char_boundary(15) {
            accounts.by_id15.push(i);
        }
        // External IDs are case-insensitive in Salesforce unless marked otherwise; the
        // case-insensitive comparison can only turn a miss into an ambiguity, never a wrong write.
        if let Some(ext) = row.external_id.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            accounts.by_external.push((ext.to_lowercase().into_boxed_str(), i));
        }
        if let Some(d) = row.website.as_deref().and_then(domain::website_domain) {
            accounts.by_domain.push((d.into_boxed_str(), i));
        }
        accounts
            .child_keys
            .push(row.child_key.as_deref().map(hierarchy::key).filter(|k| !k.is_empty()).map(String::into_boxed_str));
        self.parent_ids.push(row.parent_id);
        accounts.ids.push(row.id);
    }

    pub fn finish(self) -> Accounts {
        let mut accounts = self.accounts;
        // Stable sorts: of two rows with one key the later read stays later, and an Id read
        // twice resolves to its last row, as a map's insert would.
        let ids = &accounts.ids;
        accounts.by_id15.sort_by(|&a, &b| id15(ids, a).cmp(id15(ids, b)));
        accounts.by_external.sort_by(|a, b| a.0.cmp(&b.0));
        accounts.by_domain.sort_by(|a, b| a.0.cmp(&b.0));
        accounts.parents = self
            .parent_ids
            .iter()
            .map(|p| p.as_deref().and_then(|p| accounts.index_of(p)).and_then(row_number))
            .collect();
        accounts
    }
}

/// The first 15 characters of row `r`'s Id (every row in `by_id15` has them).
fn id15(ids: &[String], r: u32) -> &str {
    ids.get(r as usize).and_then(|id| id.get(..15)).unwrap_or_default()
}

/// The rows listed under `key` in an index sorted by key.
fn rows_under<'a>(index: &'a [(Box<str>, u32)], key: &str) -> &'a [(Box<str>, u32)] {
    let start = index.partition_point(|(k, _)| &**k < key);
    let len = index[start..].partition_point(|(k, _)| &**k == key);
    &index[start..start + len]
}

impl Accounts {
    pub fn new(rows: impl IntoIterator<Item = AccountRow>) -> Self {
        let mut building = Building::default();
        for row in rows {
            building.push(row);
        }
        building.finish()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Each Account whose parent was read too, with that parent: 18-character Ids both.
    pub fn parent_links(&self) -> impl Iterator<Item = (&str, &str)> {
        self.parents
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((self.ids[i].as_str(), self.ids.get((*p)? as usize)?.as_str())))
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The Account's 18-character Id, whichever form (15 or 18) `id` is in.
    pub fn find(&self, id: &str) -> Option<&str> {
        self.index_of(id).map(|i| self.ids[i].as_str())
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        let id = id.trim();
        if id.len() != 15 && id.len() != 18 {
            return None;
        }
        let key = id.get(..15)?;
        // The last row with this key, as the map this replaced kept the last insert.
        let end = self.by_id15.partition_point(|&r| id15(&self.ids, r) <= key);
        let i = *self.by_id15[..end].last()? as usize;
        if id15(&self.ids, i as u32) != key {
            return None;
        }
        // An 18-character Id must agree with ours in its checksum too.
        (id.len() == 15 || self.ids[i].eq_ignore_ascii_case(id)).then_some(i)
    }

    fn by_external(&self, pendo_id: &str) -> Vec<usize> {
        self.sorted(rows_under(&self.by_external, &pendo_id.trim().to_lowercase()))
    }

    /// Accounts whose website domain `email_domain` belongs to, walking up its parent domains
    /// (`eu.acme.com` → `acme.com`), nearest first.
    fn by_email_domain(&self, email_domain: &str) -> Vec<usize> {
        let mut d = email_domain;
        loop {
            let rows = rows_under(&self.by_domain, d);
            if !rows.is_empty() {
                return self.sorted(rows);
            }
            match d.split_once('.') {
                Some((_, parent)) if parent.contains('.') => d = parent,
                _ => return Vec::new(),
            }
        }
    }

    /// Indexes in Id order, so that what follows never depends on the order Salesforce returned.
    fn sorted(&self, rows: &[(Box<str>, u32)]) -> Vec<usize> {
        let mut v: Vec<usize> = rows.iter().map(|&(_, r)| r as usize).collect();
        v.sort_unstable_by(|&a, &b| self.ids[a].cmp(&self.ids[b]));
        v.dedup();
        v
    }
}

/// The verdict for one Pendo account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Matched {
        salesforce_id: String,
        rule: String,
    },
    /// Boxed: a run holds an outcome for every Pendo account, and unboxed this rarest verdict
    /// made every one of them half as large again (72 bytes, not 48).
    Ambiguous(Box<Ambiguity>),
    Unmatched {
        reason: String,
    },
}

/// Why a Pendo account was left ambiguous: the rule that found several Accounts, which ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ambiguity {
    pub rule: String,
    pub candidates: Vec<String>,
    pub reason: String,
}

impl Outcome {
    pub fn ambiguous(rule: String, candidates: Vec<String>, reason: String) -> Outcome {
        Outcome::Ambiguous(Box::new(Ambiguity { rule, candidates, reason }))
    }

    pub fn salesforce_id(&self) -> Option<&str> {
        match self {
            Outcome::Matched { salesforce_id, .. } => Some(salesforce_id),
            _ => None,
        }
    }

    /// Matched through its Pendo parent: the Account is the parent's, which writes onto it.
    pub fn via_parent(&self) -> bool {
        matches!(self, Outcome::Matched { rule, .. } if hierarchy::is_via_parent(rule))
    }
}

/// Runs the chain for every account, applies pins, then settles Accounts claimed twice.
/// `pins` maps Pendo account id → the Salesforce Account a person chose.
pub fn match_all<P: PendoSide>(
    rules: &[Rule],
    pendo: &[P],
    accounts: &Accounts,
    pins: &HashMap<String, String>,
) -> Verdicts {
    let ids: Vec<&str> = pendo.iter().map(PendoSide::pendo_id).collect();
    let mut out = Ranked::decide(&ids, |i| {
        let p = &pendo[i];
        match pins.get(p.pendo_id()) {
            Some(pinned) => match accounts.find(pinned) {
                Some(id) => (Outcome::Matched { salesforce_id: id.to_owned(), rule: "pinned".into() }, 0),
                None => (
                    Outcome::Unmatched { reason: format!("pinned to {pinned}, which is not an Account in Salesforce") },
                    usize::MAX,
                ),
            },
            // Pins rank 0; rules rank from 1 in chain order.
            None => match_one(rules, p, accounts),
        }
    });
    drop(ids);
    let pendo_parents = hierarchy::pendo_parents(rules, pendo);
    settle_shared_accounts(&mut out, &pendo_parents);
    hierarchy::fall_back_to_parents(&mut out, &pendo_parents, pins);
    out.finish()
}

fn match_one<P: PendoSide>(rules: &[Rule], p: &P, accounts: &Accounts) -> (Outcome, usize) {
    let mut tried = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let candidates: Vec<usize> = match rule {
            // Neither places an account by itself: see `hierarchy`.
            Rule::PendoParent { .. } | Rule::ChildField { .. } => continue,
            Rule::PendoMetadata { group, field } => match p.metadata(group, field).map(str::trim) {
                None | Some("") => {
                    tried.push(format!("no {group}.{field} in Pendo"));
                    continue;
                }
                Some(id) => match accounts.index_of(id) {
                    Some(found) => vec![found],
                    None => {
                        tried.push(format!("{group}.{field} = {id:?} is not an Account in Salesforce"));
                        continue;
                    }
                },
            },
            Rule::ExternalId { field } => {
                let c = accounts.by_external(p.pendo_id());
                if c.is_empty() {
                    tried.push(format!("no Account has {field} = {:?}", p.pendo_id()));
                }
                c
            }
            Rule::EmailDomain { min_share, free_mail } => match dominant_domain(p, *min_share, free_mail) {
                Err(why) => {
                    tried.push(why);
                    continue;
                }
                Ok(d) => {
                    let c = accounts.by_email_domain(d);
                    if c.is_empty() {
                        tried.push(format!("no Account website matches {d}"));
                    }
                    c
                }
            },
        };
        match candidates.len() {
            0 => {}
            1 => {
                let salesforce_id = accounts.ids[candidates[0]].clone();
                return (Outcome::Matched { salesforce_id, rule: rule.name().into() }, i + 1);
            }
            n => {
                if let Some((pick, why)) = hierarchy::resolve(rules, i, p, accounts, &candidates) {
                    let salesforce_id = accounts.ids[pick].clone();
                    return (Outcome::Matched { salesforce_id, rule: format!("{}, {why}", rule.name()) }, i + 1);
                }
                return (
                    Outcome::ambiguous(
                        rule.name().into(),
                        candidates.iter().map(|&c| accounts.ids[c].clone()).collect(),
                        format!("{n} Accounts fit rule {}", rule.name()),
                    ),
                    i + 1,
                );
            }
        }
    }
    let reason = if tried.is_empty() { "no matching rules configured".to_owned() } else { tried.join("; ") };
    (Outcome::Unmatched { reason }, usize::MAX)
}

/// The domain most of the account's visitors use, when it is not free mail and holds at least
/// `min_share` of the visitors that have an e-mail. Free-mail visitors still count in the
/// denominator: an account that is mostly Gmail users has no trustworthy company domain.
fn dominant_domain<'p, P: PendoSide>(p: &'p P, min_share: f64, free_mail: &FreeMail) -> Result<&'p str, String> {
    let (domains, with_email) = p.email_domains();
    let best =
        domains.iter().filter(|(d, _)| !free_mail.contains(d)).max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
    let Some((domain, n)) = best else {
        return Err(if with_email == 0 {
            "no visitor has an e-mail address".to_owned()
        } else {
            "visitors use only free-mail domains".to_owned()
        });
    };
    let share = f64::from(*n) / f64::from(with_email.max(1));
    if share < min_share {
        return Err(format!("{domain} holds {:.0}% of visitors, below {:.0}%", share * 100.0, min_share * 100.0));
    }
    // Two company domains with the same count: neither is dominant.
    if domains.iter().filter(|(d, c)| c == n && d != domain && !free_mail.contains(d)).count() > 0 {
        return Err(format!("no single dominant e-mail domain ({domain} ties with another)"));
    }
    Ok(domain)
}

fn settle_shared_accounts(out: &mut Ranked, pendo_parents: &HashMap<String, String>) {
    // Claims borrowed and sorted by Account, then Pendo id: three words a match. A map of owned
    // claimant lists per Account was the largest part of a first run's peak at 300,000 accounts
    // (68 MB of 390). Only the contested Accounts are copied out.
    let contested: Vec<(String, Vec<(String, usize)>)> = {
        let mut claims: Vec<(&str, &str, usize)> = out
            .iter()
            .filter_map(|(pendo_id, o, rank)| match o {
                Outcome::Matched { salesforce_id, .. } => Some((salesforce_id.as_str(), pendo_id, rank)),
                _ => None,
            })
            .collect();
        claims.sort_unstable();
        claims
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|c| c.len() > 1)
            .map(|c| (c[0].0.to_owned(), c.iter().map(|(_, p, rank)| ((*p).to_owned(), *rank)).collect()))
            .collect()
    };
    for (sf_id, claimants) in contested {
        let mut claimants = hierarchy::yield_to_parents(out, &sf_id, claimants, pendo_parents);
        if claimants.len() < 2 {
            continue;
        }
        claimants.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let best = claimants[0].1;
        let tied = claimants.iter().filter(|c| c.1 == best).count();
        let names: Vec<&str> = claimants.iter().map(|c| c.0.as_str()).collect();
        // The winner keeps the Account only when it alone has the strongest rule.
        let skip = usize::from(tied == 1);
        for (pendo_id, _) in claimants.iter().skip(skip) {
            if let Some(o) = out.get_mut(pendo_id) {
                let rule = match o {
                    Outcome::Matched { rule, .. } => rule.clone(),
                    _ => continue,
                };
                *o = Outcome::ambiguous(
                    rule,
                    vec![sf_id.clone()],
                    format!("Account {sf_id} is claimed by several Pendo accounts: {}", names.join(", ")),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
